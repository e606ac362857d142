"""A fixed calibration workload, timed inside a run so its step times can be judged against the machine's pace.

``compare`` judges a lock-step group's speed from blocks of its own steps, each
divided by the calibration timed in that block: machine load slows both, a
slower code path only the steps (``docs/sweeps.md``). The workload is a few
small tensor operations, like a small network's step, and costs ~30 µs every
:data:`CALIBRATE_EVERY` env steps.
"""

from __future__ import annotations

import time

import torch

#: env steps between two calibrations (one ``calib`` value in the ``steps`` table)
CALIBRATE_EVERY = 100

_X = torch.linspace(-1.0, 1.0, 32 * 32).reshape(32, 32)


def calibration_s(repeats: int = 3) -> float:
    """The fastest of ``repeats`` timings of the fixed workload, in seconds."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            y = torch.relu(_X @ _X)
            y = torch.tanh(y @ _X).sum(dim=1)
            float(y.sum())
            best = min(best, time.perf_counter() - start)
    return best
