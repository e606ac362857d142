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
