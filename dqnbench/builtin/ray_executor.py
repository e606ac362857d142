"""Built-in ``ray`` executor: each run is a Ray task on a cluster (or on a local Ray started on demand).

Like the local executors it only dispatches: a task (one run, or one lock-step
cell's seeds) returns its output to the driver, and the runner writes it, so
workers need no shared filesystem.
``import ray`` happens inside the factory, so dqnbench imports and lists its
plugins without the optional ``dqnbench[ray]`` extra.

Failures, as with the ``process`` executor:

- a run that raises is recorded as failed by the runner's task function itself;
- a worker that dies (killed, segfault, out of memory, node lost) is a *system*
  failure: Ray reruns the task up to ``max_retries`` times (default 1, like the
  process pool, which retries once the runs that were in flight when a worker
  died); when retries run out the error (``WorkerCrashedError``, ``NodeDiedError``…)
  is yielded and the runner records the run as failed. Runs are deterministic
  and have no side effects on workers, so a retry gives the same result;
- exceptions raised by ``fn`` are never retried (``retry_exceptions=False``): they
  would fail again;
- on Ctrl-C, ``close()`` cancels every outstanding task (``force=True`` kills the
  worker processes running them) and disconnects.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
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
    ) -> None:
        self._ray = ray
        self._owns_ray = owns_ray
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

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        queue = list(items)[::-1]  # pop() from the end keeps the given order
        limit = self.workers or len(queue)
        try:
            while queue or self._pending:
                while queue and len(self._pending) < limit:
                    item = queue.pop()
                    try:
                        self._pending[self._task.remote(fn, item, self._threads)] = item
                    except Exception as exc:  # this item does not serialise, or the cluster is gone
                        yield item, exc
                if not self._pending:
                    continue
                try:
                    ready, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=WAIT_SLICE_S)
                except Exception as exc:  # the cluster itself is gone (head lost): so is every run left
                    yield from self._lose_all(queue, exc)
                    return
                for ref in ready:
                    item = self._pending.pop(ref)
                    yield item, self._outcome(ref)
        finally:
            self._cancel_pending()

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


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to ``address`` (None: start a local Ray); return whether this call initialised Ray.

    A Ray the caller already initialised (in a notebook, say) is reused and left running.
    """
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            include_dashboard=False,
            logging_level=logging.ERROR,
            configure_logging=True,
        )
    except Exception as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise DqnbenchError(f"cannot start the ray executor on {where}: {type(exc).__name__}: {exc}") from exc
    return True


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
    owns_ray = _connect(ray, address)
    return RayExecutor(ray, owns_ray, workers, num_cpus, max_retries, runtime_env)


@hookimpl
def dqnbench_executors() -> dict:
    return {"ray": ray_executor}
