"""Replay memory at capacity 10⁶ stays within 10% of the raw transition arrays plus a constant.

"Raw" is what any replay must hold per transition: obs and next_obs
(float32 × obs_dim each), the action (int64), the reward (float32) and the
terminated flag (bool) — 45 bytes for CartPole. Allocations are measured with
``tracemalloc`` (NumPy reports its buffers to it) while the buffer is built,
filled past wrap-around with a few thousand transitions and sampled.
Prioritised replay's sum-tree is reported too (not asserted: the tree is extra
state by design).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dqnbench.registry import load_registry

CAPACITY = 1_000_000
OBS_DIM = 4
RAW_BYTES = CAPACITY * (2 * 4 * OBS_DIM + 8 + 4 + 1)
CONSTANT_BYTES = 2 * 2**20  # bookkeeping, cached batch tensors, …


def measure(build, add, sample) -> int:
    tracemalloc.start()
    try:
        buffer = build()
        for _ in range(3):
            add(buffer)
        for _ in range(5):
            sample(buffer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name", ["uniform", "prioritized", "nstep"])
def test_replay_memory_at_capacity_1e6(benchmark, name):
    factory = load_registry(load_entrypoints=False).get("replay", name).factory
    obs = np.ones(OBS_DIM, dtype=np.float32)

    def add(buffer):
        for i in range(2_000):
            buffer.add(obs * i, i % 2, 1.0, obs * (i + 1), i % 500 == 499)

    peak = benchmark.pedantic(
        measure, args=(lambda: factory(CAPACITY, OBS_DIM, 0.99), add, lambda b: b.sample(64)), rounds=1, iterations=1
    )
    overhead = peak / RAW_BYTES - 1
    benchmark.extra_info.update(
        measured="peak traced bytes of a replay at capacity 1e6 vs raw transition arrays",
        component=name,
        capacity=CAPACITY,
        raw_mb=RAW_BYTES / 2**20,
        peak_mb=peak / 2**20,
        overhead=overhead,
    )
    print(f"\n{name}: raw {RAW_BYTES / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB ({overhead:+.1%})")
    if name == "uniform":
        assert peak <= 1.10 * RAW_BYTES + CONSTANT_BYTES


def test_lockstep_member_replay_memory(benchmark):
    factory = load_registry(load_entrypoints=False).get("replay", "uniform").factory
    members, capacity = 8, CAPACITY // 8
    rows = np.ones((members, OBS_DIM), dtype=np.float32)

    def add(buffer):
        for i in range(2_000):
            buffer.add(
                rows * i,
                np.zeros(members, np.int64),
                np.ones(members, np.float32),
                rows * (i + 1),
                np.zeros(members, bool),
                np.zeros(members, bool),
            )

    peak = benchmark.pedantic(
        measure,
        args=(lambda: factory.lockstep(members, capacity, OBS_DIM, 0.99), add, lambda b: b.sample(64)),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(
        component="uniform (lock-step, 8 members)", peak_mb=peak / 2**20, overhead=peak / RAW_BYTES - 1
    )
    print(f"\nlock-step uniform, 8 × {capacity}: peak {peak / 2**20:.1f} MB ({peak / RAW_BYTES - 1:+.1%})")
    assert peak <= 1.10 * RAW_BYTES + CONSTANT_BYTES
