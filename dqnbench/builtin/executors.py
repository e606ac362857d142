"""Built-in executors: ``serial`` (in this process) and ``process`` (a local pool).

Executors only dispatch: each yields ``(item, result-or-exception)`` as runs
finish, and the runner writes results. The process pool uses the ``spawn``
start method (no forked torch thread pools) and one torch thread per worker,
so ``workers`` runs share the cores instead of oversubscribing them.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.executors``).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.hookspecs import hookimpl

T = TypeVar("T")
R = TypeVar("R")


#: seconds the serial executor waits for a timed-out run to stop after raising RunTimedOut in it
SERIAL_GRACE_S = 5.0


def item_timeout(item: Any) -> float | None:
    """An item's time limit in seconds (its ``timeout_s`` attribute), or None for no limit."""
    timeout = getattr(item, "timeout_s", None)
    return float(timeout) if timeout else None


def timed_out(timeout: float) -> TimeoutError:
    """What an executor yields for an item that ran past its ``timeout_s``; the runner records its text."""
    return TimeoutError(f"timed out after {timeout:g} s")


class RunTimedOut(BaseException):
    """Raised inside a run the serial executor stops; a BaseException, so the run's own handlers let it through."""


class SerialExecutor:
    """Runs one item after another in the calling process (a timed item in a thread of it, see the module doc)."""

    #: tasks run at once (the runner splits lock-step cells to fill an executor's slots)
    slots = 1

    def __init__(self, workers: int | None = None) -> None:
        self.workers = 1

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        for item in items:
            timeout = item_timeout(item)
            try:
                yield item, (fn(item) if timeout is None else _call_with_timeout(fn, item, timeout))
            except Exception as exc:
                yield item, exc

    def close(self) -> None:
        pass


def _call_with_timeout(fn: Callable[[T], R], item: T, timeout: float) -> R | BaseException:
    """``fn(item)`` in a daemon thread; past ``timeout``, raise :class:`RunTimedOut` in it and give it up."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, RunTimedOut included
            box["error"] = exc

    thread = threading.Thread(target=target, name="dqnbench-run", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(RunTimedOut))
        thread.join(SERIAL_GRACE_S)
        return timed_out(timeout)
    if "error" in box:
        raise box["error"]
    return box["result"]

    def close(self) -> None:
        pass


_STARTED: Any = None  # in a pool worker: the queue it reports each item's start on (see ProcessExecutor)


def _run_reporting(fn: Callable[[T], R], key: int, item: T) -> R:
    """In a pool worker: report that item ``key`` starts (its time limit counts from here, not from start-up)."""
    if _STARTED is not None:
        _STARTED.put(key)
    return fn(item)


def _init_worker(started: Any = None) -> None:
    """One torch thread per worker, and die with the parent (Linux) so a killed run leaves no orphans.

    Ctrl-C reaches the whole process group; the parent answers it (it stops the
    workers in ``close()``), so a worker ignores SIGINT instead of printing a
    ``KeyboardInterrupt`` traceback from wherever it was waiting.
    """
    import torch

    global _STARTED
    _STARTED = started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except OSError:
            pass


def check_spawnable_main() -> None:
    """Spawned workers re-import the parent's main script by its path: one read from stdin has none.

    ``python - <<EOF … run_grid(executor="process")`` has ``__main__.__file__ ==
    "<stdin>"``; every worker would die importing it and each run be recorded as
    lost (``BrokenProcessPool``), the cause only on stderr. Said once, up front.
    An interactive session or notebook has no ``__file__`` and spawns fine.
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not os.path.exists(main_file):
        raise DqnbenchError(
            f"the process executor starts workers with spawn, which re-imports the main script, and "
            f"{main_file!r} is not a file (a script read from stdin?): run it from a file (under "
            f'`if __name__ == "__main__":`), or use executor="serial"'
        )


class ProcessExecutor:
    """A local pool of ``workers`` processes (default: the CPU count).

    At most ``workers`` items are in flight, so a worker that dies (segfault,
    out-of-memory kill, a scheduler's SIGTERM) can only take those with it. The pool is then rebuilt
    and the items that were in flight are retried one at a time: an item that
    kills a worker while alone is reported as lost (``BrokenProcessPool``),
    the others complete, and so does the rest of the grid.

    An item past its ``timeout_s`` is yielded as timed out; the pool is
    stopped (its worker may be stuck anywhere) and rebuilt, and the other
    items that were in flight are resubmitted: they restart, they are not lost.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = pool_size(workers)
        #: tasks run at once (the runner splits lock-step cells to fill them)
        self.slots = self.workers
        self._pool: ProcessPoolExecutor | None = None
        self._started: Any = None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        self.close()
        check_spawnable_main()
        context = multiprocessing.get_context("spawn")
        self._started = context.SimpleQueue()
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(self._started,)
        )
        return self._pool

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        queue = list(items)[::-1]  # pop() from the end keeps the given order
        if not queue:
            return
        workers = min(self.workers, len(queue))  # this map's pool; the executor keeps its size for the next map
        suspects: list[T] = []  # in flight when a worker died: retried alone
        pool = self._new_pool(workers)
        pending: dict[Future[Any], T] = {}
        deadlines: dict[Future[Any], tuple[float, float]] = {}  # future -> (deadline, timeout), once it started
        keys: dict[int, Future[Any]] = {}  # what workers report as started -> its future
        counter = iter(range(1 << 62))

        def submit(item: T) -> None:
            key = next(counter)
            future = pool.submit(_run_reporting, fn, key, item)
            pending[future] = item
            if item_timeout(item) is not None:
                keys[key] = future

        def note_starts() -> None:
            for key in [k for k, f in keys.items() if f not in pending]:
                del keys[key]  # finished, or resubmitted under a new key
            while not self._started.empty():
                future = keys.pop(self._started.get(), None)
                if future is not None and future in pending:
                    timeout = item_timeout(pending[future])
                    deadlines[future] = (time.monotonic() + timeout, timeout)

        while queue or suspects or pending:
            solo = bool(suspects)
            if solo and not pending:
                submit(suspects.pop())
            elif not solo:
                while queue and len(pending) < workers:
                    submit(queue.pop())
            note_starts()
            nearest = min((deadlines[f][0] for f in pending if f in deadlines), default=None)
            wait_s = None if nearest is None else max(0.0, nearest - time.monotonic())
            if keys:  # a timed item not started yet: look again soon
                wait_s = min(wait_s if wait_s is not None else 0.2, 0.2)
            done, _ = wait(pending, timeout=wait_s, return_when=FIRST_COMPLETED)
            for future in [f for f in deadlines if f in done]:
                deadlines.pop(future)
            now = time.monotonic()
            expired = [f for f in pending if f not in done and f in deadlines and deadlines[f][0] <= now]
            if expired:
                for future in done:
                    item = pending.pop(future)
                    yield item, _result(future)
                for future in expired:
                    item = pending.pop(future)
                    yield item, timed_out(deadlines.pop(future)[1])
                for future, item in list(pending.items()):  # innocent: restart them on the new pool
                    del pending[future]
                    deadlines.pop(future, None)
                    (suspects if solo else queue).append(item)
                pool = self._new_pool(workers)
                continue
            broken = []
            for future in done:
                item = pending.pop(future)
                try:
                    yield item, future.result()
                except BrokenProcessPool as exc:
                    if solo:
                        yield item, BrokenProcessPool(f"a worker process died running this item alone: {exc}")
                    else:
                        broken.append(item)
                except Exception as exc:
                    yield item, exc
            if broken or (solo and not pending and done and self._pool_broken()):
                for future, item in list(pending.items()):  # a broken pool fails all its futures
                    wait([future])
                    del pending[future]
                    try:
                        yield item, future.result()
                    except BrokenProcessPool:
                        broken.append(item)
                    except Exception as exc:
                        yield item, exc
                suspects.extend(broken)
                pool = self._new_pool(workers)

    def _pool_broken(self) -> bool:
        return bool(self._pool is not None and getattr(self._pool, "_broken", False))

    def close(self) -> None:
        """Stop the workers now: by the time this runs every result was consumed, or the user pressed Ctrl-C."""
        if self._pool is None:
            return
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
        self._pool = None


def pool_size(workers: int | None) -> int:
    """The process pool's size for ``--workers`` (None: the CPU count)."""
    return max(1, workers or os.cpu_count() or 1)


def serial(workers: int | None = None) -> SerialExecutor:
    """Run every run in this process, one after another (easiest to debug)."""
    return SerialExecutor(workers)


def process(workers: int | None = None) -> ProcessExecutor:
    """Run runs in parallel in a local process pool, one torch thread each."""
    return ProcessExecutor(workers)


# What each executor's ``slots`` will be for ``--workers``, known without starting it (``--dry-run`` reads it).
serial.slots = lambda workers=None: SerialExecutor.slots
process.slots = pool_size


def _result(future: Future[Any]) -> Any:
    """A finished future's value, or the exception it ended with."""
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - yielded to the runner, which records it
        return exc


@hookimpl
def dqnbench_executors() -> dict:
    return {"serial": serial, "process": process}
