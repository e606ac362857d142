"""Module-level functions for reliability tests (process workers import them by name)."""

from __future__ import annotations

import os


def square_or_die(item: int) -> int:
    """Kill the worker process outright for item 3, as a segfault or OOM kill would."""
    if item == 3:
        os._exit(1)
    return item * item


def hold_lock_forever(directory: str) -> None:
    import time
    from pathlib import Path

    from dqnbench.run.lock import experiment_lock

    with experiment_lock(Path(directory)):
        print("locked", flush=True)
        time.sleep(600)


# --- time limits ---------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class Timed:
    """An executor item with a time limit, as the runner's tasks carry ``experiment.timeout_s``."""

    n: int
    timeout_s: float | None = None


def square_or_hang(item: Timed) -> int:
    """Hang (in Python code, as a stuck plugin loop would) for item 3; square the others after a moment."""
    import time

    if item.n == 3:
        while True:
            time.sleep(0.01)
    time.sleep(0.2)
    return item.n * item.n


class HangingExplorer:
    """An exploration that never returns from its first ``select``: a run that hangs."""

    def value(self, step: int) -> float:
        return 0.0

    def select(self, q_values, step):
        import time

        while True:
            time.sleep(0.01)


def hangs(n_actions: int, total_steps: int) -> HangingExplorer:
    return HangingExplorer()


class HangingPlugin:
    """An in-process plugin object providing the ``hangs`` exploration."""

    import dqnbench as _dqnbench

    @_dqnbench.hookimpl
    def dqnbench_explorations(self):
        return {"hangs": hangs}


def interruptible() -> None:
    """``preexec_fn`` for a ``dqnbench run`` a test will Ctrl-C: SIGINT back to its default disposition.

    A shell without job control starts background jobs with SIGINT ignored, and a
    Python started that way never raises ``KeyboardInterrupt`` (so a test run as a
    background job would see the grid finish, exit 0, instead of 130).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_grid(name: str) -> str:
    """A grid of 3 cells × 2 seeds × 1,500 CartPole steps: long enough to interrupt after its first runs."""
    return f"""
[experiment]
name = "{name}"
total_steps = 1500
seeds = 2
eval_every = 500
eval_episodes = 2
[agent]
learning_starts = 200
batch_size = 16
[network]
hidden = [16]
[grid]
"agent.lr" = [1e-3, 5e-4, 2e-3]
"""
