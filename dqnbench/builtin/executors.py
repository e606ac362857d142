"""Built-in executors: ``serial`` (in this process) and ``process`` (a local pool).

Executors only dispatch: each yields ``(item, result-or-exception)`` as runs
finish, and the runner writes results. The process pool uses the ``spawn``
start method (no forked torch thread pools) and one torch thread per worker,
so ``workers`` runs share the cores instead of oversubscribing them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from dqnbench.plugin.hookspecs import hookimpl

T = TypeVar("T")
R = TypeVar("R")


class SerialExecutor:
    """Runs one item after another in the calling process."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = 1

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        for item in items:
            try:
                yield item, fn(item)
            except Exception as exc:
                yield item, exc

    def close(self) -> None:
        pass


def _init_worker() -> None:
    """One torch thread per worker, and die with the parent (Linux) so a killed run leaves no orphans.

    Ctrl-C reaches the whole process group; the parent answers it (it stops the
    workers in ``close()``), so a worker ignores SIGINT instead of printing a
    ``KeyboardInterrupt`` traceback from wherever it was waiting.
    """
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except OSError:
            pass


class ProcessExecutor:
    """A local pool of ``workers`` processes (default: the CPU count).

    At most ``workers`` items are in flight, so a worker that dies (segfault,
    out-of-memory kill) can only take those with it. The pool is then rebuilt
    and the items that were in flight are retried one at a time: an item that
    kills a worker while alone is reported as lost (``BrokenProcessPool``),
    the others complete, and so does the rest of the grid.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        self.close()
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )
        return self._pool

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        queue = list(items)[::-1]  # pop() from the end keeps the given order
        if not queue:
            return
        self.workers = min(self.workers, len(queue))
        suspects: list[T] = []  # in flight when a worker died: retried alone
        pool = self._new_pool()
        pending: dict[Future[Any], T] = {}
        while queue or suspects or pending:
            solo = bool(suspects)
            if solo and not pending:
                item = suspects.pop()
                pending[pool.submit(fn, item)] = item
            elif not solo:
                while queue and len(pending) < self.workers:
                    item = queue.pop()
                    pending[pool.submit(fn, item)] = item
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
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
                pool = self._new_pool()

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


def serial(workers: int | None = None) -> SerialExecutor:
    """Run every run in this process, one after another (easiest to debug)."""
    return SerialExecutor(workers)


def process(workers: int | None = None) -> ProcessExecutor:
    """Run runs in parallel in a local process pool, one torch thread each."""
    return ProcessExecutor(workers)


@hookimpl
def dqnbench_executors() -> dict:
    return {"serial": serial, "process": process}
