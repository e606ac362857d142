"""Built-in ``ray`` executor: each run is a Ray task on a cluster (or on a local Ray started on demand).

Like the local executors it only dispatches: a task (one run, or one lock-step
cell's seeds) returns its output to the driver, and the runner writes it, so
workers need no shared filesystem.
``import ray`` happens inside the factory, so dqnbench imports and lists its
plugins without the optional ``dqnbench[ray]`` extra. Failures are recorded as
with the ``process`` executor: a raising run fails alone, a lost worker is
retried ``max_retries`` times, a lost cluster fails every run left.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.ray_executor``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.hookspecs import hookimpl

T = TypeVar("T")
R = TypeVar("R")

#: how long one ``ray.wait`` blocks, so Ctrl-C is handled promptly in the driver
WAIT_SLICE_S = 0.5
#: Ray's name for each task (worker processes show it as ``ray::dqnbench_run``)
TASK_NAME = "dqnbench_run"
MISSING_RAY = 'the "ray" executor needs Ray: pip install "dqnbench[ray]"'


class ClusterLost(RuntimeError):
    """The driver lost its Ray cluster: every run still queued or running is reported with this."""


def run_in_worker(fn: Callable[[T], R], item: T, threads: int) -> R:
    """The body of every Ray task: cap torch's threads before the run, since a Ray worker starts with all cores."""
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def _import_ray() -> Any:
    """Import Ray lazily so that dqnbench works without the optional extra."""
    try:
        import ray
    except ImportError as exc:
        raise DqnbenchError(MISSING_RAY) from exc
    return ray


class RayExecutor:
    """Sends each item to a Ray cluster as one task and yields outcomes as tasks finish.

    At most ``workers`` tasks are in flight when given; otherwise every item is
    submitted at once and Ray queues them by their ``num_cpus`` (which also lets
    an autoscaling cluster see the whole demand).
    """

    def __init__(
        self,
        ray: Any,
        owns_ray: bool,
        workers: int | None,
        num_cpus: float,
        max_retries: int,
        runtime_env: dict[str, Any] | None,
        restore_env: dict[str, str | None] | None = None,
    ) -> None:
        self._ray = ray
        self._owns_ray = owns_ray
        self._restore_env = restore_env or {}
        self.workers = workers
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        options: dict[str, Any] = {
            "num_cpus": num_cpus,
            "max_retries": max_retries,
            "retry_exceptions": False,
            "name": TASK_NAME,
        }
        if runtime_env:
            options["runtime_env"] = runtime_env
        self._task = ray.remote(run_in_worker).options(**options)
        self._threads = max(1, int(num_cpus))
        self._pending: dict[Any, Any] = {}  # ObjectRef -> item, for close() after Ctrl-C
        self._deadlines: dict[Any, tuple[float, float]] = {}  # ObjectRef -> (deadline, timeout_s)

    @property
    def slots(self) -> int:
        """Tasks run at once: ``workers`` when given, else the cluster's CPUs / ``num_cpus`` (see :meth:`_capacity`).

        The runner splits a cell's lock-step seeds into this many groups when the
        grid has fewer cells, so one cell spreads over the cluster's nodes.
        """
        return self.workers or self._capacity()

    def _capacity(self) -> int:
        """Tasks the cluster can run at once: its CPUs / ``num_cpus`` (at least 1)."""
        try:
            cpus = float(self._ray.cluster_resources().get("CPU", 1.0))
        except Exception:  # noqa: BLE001 - a cluster that cannot say: one at a time is always safe
            cpus = 1.0
        return max(1, int(cpus // self.num_cpus))

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        queue = list(items)[::-1]  # pop() from the end keeps the given order
        timed = any(getattr(item, "timeout_s", None) for item in queue)
        limit = self.workers or (self._capacity() if timed else len(queue))
        try:
            while queue or self._pending:
                while queue and len(self._pending) < limit:
                    item = queue.pop()
                    try:
                        ref = self._task.remote(fn, item, self._threads)
                    except Exception as exc:  # this item does not serialise, or the cluster is gone
                        yield item, exc
                        continue
                    self._pending[ref] = item
                    timeout = getattr(item, "timeout_s", None)
                    if timeout:
                        self._deadlines[ref] = (time.monotonic() + float(timeout), float(timeout))
                if not self._pending:
                    continue
                yield from self._expire()
                if not self._pending:
                    continue
                try:
                    ready, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=WAIT_SLICE_S)
                except Exception as exc:  # the cluster itself is gone (head lost): so is every run left
                    yield from self._lose_all(queue, exc)
                    return
                for ref in ready:
                    item = self._pending.pop(ref)
                    self._deadlines.pop(ref, None)
                    yield item, self._outcome(ref)
        finally:
            self._cancel_pending()

    def _expire(self) -> Iterator[tuple[Any, BaseException]]:
        """Cancel (killing its worker) each task past its deadline and yield it as timed out."""
        now = time.monotonic()
        for ref, (deadline, timeout) in list(self._deadlines.items()):
            if deadline > now:
                continue
            item = self._pending.pop(ref)
            del self._deadlines[ref]
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - it finished meanwhile: recorded as timed out all the same
                pass
            yield item, TimeoutError(f"timed out after {timeout:g} s")

    def _lose_all(self, queue: list[T], cause: Exception) -> Iterator[tuple[T, BaseException]]:
        """Report every run in flight or still queued as lost with the cluster, so the runner records them."""
        lost = ClusterLost(f"lost the Ray cluster: {type(cause).__name__}: {cause}")
        left = [*self._pending.values(), *reversed(queue)]
        self._pending = {}
        queue.clear()
        for item in left:
            yield item, lost

    def _outcome(self, ref: Any) -> Any:
        """The task's return value, or the exception that stopped it (a dead worker, a lost node, a raise)."""
        try:
            return self._ray.get(ref)
        except Exception as exc:
            return exc

    def _cancel_pending(self) -> None:
        """Cancel the tasks still queued or running: force kills their workers, so none outlives the grid."""
        pending, self._pending = list(self._pending), {}
        self._deadlines = {}
        for ref in pending:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished, or the cluster is gone: nothing left to stop
                pass

    def close(self) -> None:
        """Cancel what is still outstanding; disconnect only from a Ray this executor started or connected to."""
        self._cancel_pending()
        if self._owns_ray and self._ray.is_initialized():
            try:
                self._ray.shutdown()
            except Exception:  # a cluster already gone cannot be disconnected from more cleanly
                pass
        self._owns_ray = False
        if self._restore_env:
            _set_env(self._restore_env)
            self._restore_env = {}


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on: ``ray.init`` would retry for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": leave them to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise DqnbenchError(
            f"cannot reach the Ray head at {address} ({exc.strerror or exc}): start one with "
            f"`ray start --head --port {port}` or check the address"
        ) from None


AUTH_MODE = "RAY_AUTH_MODE"
AUTH_TOKEN = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH = "RAY_AUTH_TOKEN_PATH"
TOKEN_REMEDY = (
    "if the cluster uses token authentication (Ray turns it on for `ray start --head` where ~/.ray/auth_token "
    "exists), give this machine the head's token: run `ray get-auth-token` on the head and put its output in "
    "~/.ray/auth_token here (or in the RAY_AUTH_TOKEN environment variable), then rerun"
)


def token_available() -> bool:
    """Whether a Ray auth token is where Ray documents it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get(AUTH_TOKEN, "").strip():
        return True
    path = os.environ.get(AUTH_TOKEN_PATH) or str(Path.home() / ".ray" / "auth_token")
    try:
        return bool(Path(path).read_text().strip())
    except (OSError, UnicodeDecodeError):
        return False


def cluster_address(address: str | None) -> str | None:
    """The cluster a driver connects to: ``address``, else Ray's own ``RAY_ADDRESS`` (``local``: none, start one)."""
    target = address or os.environ.get("RAY_ADDRESS") or None
    return None if target == "local" else target


@cache
def local_token() -> str:
    """This process's token for the local Rays it starts: one per process, since Ray keeps the first it reads."""
    return secrets.token_hex(32)


def auth_env(address: str | None) -> dict[str, str]:
    """The environment variables a driver starting a *local* Ray sets for token authentication; {} when none.

    An explicit ``RAY_AUTH_MODE`` is always respected. For a cluster at an
    ``address`` (or ``RAY_ADDRESS``) the driver first connects as it is and
    switches to token mode only when the head refuses it (see :func:`_connect`):
    token mode against a head without token auth breaks the workers' calls back
    to the driver (a retried task fails with ``OwnerDiedError``), and the mode,
    once used, stays for the rest of the process.
    """
    if AUTH_MODE in os.environ or cluster_address(address):
        return {}
    if token_available():
        return {}  # Ray's own default: a local cluster uses the token that exists
    return {AUTH_MODE: "token", AUTH_TOKEN: local_token()}  # in memory only: no ~/.ray/auth_token


def _set_env(values: dict[str, str | None]) -> dict[str, str | None]:
    """Set (None: unset) environment variables and refresh Ray's cached config; return the previous values."""
    previous = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        from ray._raylet import Config

        Config.initialize("")  # Ray caches RAY_AUTH_MODE when imported (as its own `ray start` refreshes it)
    except Exception:  # noqa: BLE001 - an older Ray without token auth reads nothing here
        pass
    return previous


def _connect(ray: Any, address: str | None) -> tuple[bool, dict[str, str | None]]:
    """Connect to ``address`` (None: start a local Ray); whether this call initialised Ray, and the env to restore.

    A Ray the caller already initialised (in a notebook, say) is reused and left running.
    """
    if ray.is_initialized():
        return False, {}
    if address:
        _check_reachable(address)
    restore = _set_env(auth_env(address))
    try:
        try:
            _init(ray, address)
        except ConnectionError:
            # A head with token auth refuses a driver that sends no token (Ray >= 2.5x waits ~20 s first):
            # connect again in token mode when a token is where Ray documents it.
            if not (cluster_address(address) and AUTH_MODE not in os.environ and token_available()):
                raise
            restore = {**_set_env({AUTH_MODE: "token"}), **restore}
            _init(ray, address)
    except Exception as exc:
        _set_env(restore)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        text = f"cannot start the ray executor on {where}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if address and isinstance(exc, ConnectionError) and not token_available():
            text += f"; {TOKEN_REMEDY}"
        raise DqnbenchError(text) from exc
    return True, restore


def _init(ray: Any, address: str | None) -> None:
    ray.init(
        address=address,
        log_to_driver=False,
        include_dashboard=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )


def ray_executor(
    workers: int | None = None,
    address: str | None = None,
    num_cpus: float = 1.0,
    max_retries: int = 1,
    runtime_env: dict[str, Any] | None = None,
) -> RayExecutor:
    """Run each run as a Ray task on the cluster at ``address`` (None: a local Ray started on demand).

    :param workers: at most this many runs in flight (None: submit all, Ray queues them).
    :param address: ``HOST:PORT`` of a running head, ``"auto"`` for the local one,
        or None to start a local Ray (``RAY_ADDRESS`` in the environment is honoured).
    :param num_cpus: CPUs Ray reserves per task; also torch's thread count in the worker before
        the task starts (the runner still trains each run on one thread).
    :param max_retries: reruns of a run whose worker died; exceptions are never retried.
    :param runtime_env: a Ray runtime environment for the tasks, e.g.
        ``{"pip": ["dqnbench", "my-plugin"]}`` on a cluster without them installed.
    """
    if workers is not None and workers < 1:
        raise DqnbenchError(f"the ray executor needs workers >= 1, got {workers}")
    if num_cpus <= 0:
        raise DqnbenchError(f"the ray executor needs num_cpus > 0, got {num_cpus}")
    if max_retries < -1:
        raise DqnbenchError(f"the ray executor needs max_retries >= 0 (or -1: retry forever), got {max_retries}")
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    owns_ray, restore_env = _connect(ray, address)
    return RayExecutor(ray, owns_ray, workers, num_cpus, max_retries, runtime_env, restore_env)


#: what the executor needs installed (``dqnbench plugins`` says so when it is missing)
ray_executor.requires = ("ray", "dqnbench[ray]")


@hookimpl
def dqnbench_executors() -> dict:
    return {"ray": ray_executor}
