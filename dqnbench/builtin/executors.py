"""Built-in executors: ``serial`` (in this process) and ``process`` (a local pool).

Executors only dispatch: each yields ``(item, result-or-exception)`` as runs
finish, and the runner writes results. The process pool uses the ``spawn``
start method (no forked torch thread pools) and one torch thread per worker,
so ``workers`` runs share the cores instead of oversubscribing them.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from dqnbench.hookspecs import hookimpl

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
    import torch

    torch.set_num_threads(1)


class ProcessExecutor:
    """A local pool of ``workers`` processes (default: the CPU count)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        items = list(items)
        if not items:
            return
        self._pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(items)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
        )
        pending: dict[Future[Any], T] = {self._pool.submit(fn, item): item for item in items}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = pending.pop(future)
                try:
                    yield item, future.result()
                except Exception as exc:  # includes BrokenProcessPool: a worker died
                    yield item, exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
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
