"""Replay memory at capacity 10⁶ stays within 10% of the raw transition arrays plus a constant.

"Raw" is what a plain replay holds per transition: obs and next_obs
(float32 × obs_dim each), the action (int64, the dtype of ``Batch.actions``),
the reward (float32) and the terminated flag (bool) — 45 bytes for CartPole. Allocations are measured with
``tracemalloc`` (NumPy reports its buffers to it) while the buffer is built,
filled past wrap-around with a few thousand transitions and sampled.
Every built-in replay is held to it, single-run and lock-step: prioritised
replay's priorities cost 5 bytes per slot (float32, blocked sum tree, see
:mod:`dqnbench.builtin.sumtree`), n-step's per-slot step count 1 byte, and
storing actions as int32 saves 4. Measured (2-core dev machine): uniform −8.9%,
prioritized +2.4%, nstep −6.6%, nstep + prioritized +4.6%; lock-step (8 members)
−8.8%, +2.8%, −6.5%, +5.0%.

Image observations are held to the same bound with their own raw size: Atari's
``(4, 84, 84)`` uint8 frames must stay one byte a pixel (stored, gathered and
sampled as uint8), so a buffer that widened them to float32 anywhere would
show up here four times over.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dqnbench.plugin.obs import ObsSpec
from dqnbench.plugin.registry import load_registry

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


#: every built-in replay, as (name, params) a grid would give
VARIANTS = {
    "uniform": ("uniform", {}),
    "prioritized": ("prioritized", {}),
    "nstep": ("nstep", {}),
    "nstep-prioritized": ("nstep", {"prioritized": True}),
}


def record(benchmark, component: str, peak: int, raw: int = RAW_BYTES, capacity: int = CAPACITY) -> None:
    overhead = peak / raw - 1
    benchmark.extra_info.update(
        measured=f"peak traced bytes of a replay at capacity {capacity:g} vs raw transition arrays",
        component=component,
        capacity=capacity,
        raw_mb=raw / 2**20,
        peak_mb=peak / 2**20,
        overhead=overhead,
    )
    print(f"\n{component}: raw {raw / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB ({overhead:+.1%})")
    assert peak <= 1.10 * raw + CONSTANT_BYTES


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_replay_memory_at_capacity_1e6(benchmark, variant):
    name, params = VARIANTS[variant]
    factory = load_registry(load_entrypoints=False).get("replay", name).factory
    obs = np.ones(OBS_DIM, dtype=np.float32)

    def add(buffer):
        for i in range(2_000):
            buffer.add(obs * i, i % 2, 1.0, obs * (i + 1), i % 500 == 499)

    build = lambda: factory(CAPACITY, OBS_DIM, 0.99, **params)  # noqa: E731
    peak = benchmark.pedantic(measure, args=(build, add, lambda b: b.sample(64)), rounds=1, iterations=1)
    record(benchmark, variant, peak)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lockstep_member_replay_memory(benchmark, variant):
    """K = 8 members × 10⁶/8 slots: the same 10⁶ transitions in all."""
    name, params = VARIANTS[variant]
    factory = load_registry(load_entrypoints=False).get("replay", name).factory
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
                np.full(members, i % 500 == 499),
            )

    build = lambda: factory.lockstep(members, capacity, OBS_DIM, 0.99, **params)  # noqa: E731
    peak = benchmark.pedantic(measure, args=(build, add, lambda b: b.sample(64)), rounds=1, iterations=1)
    record(benchmark, f"{variant} (lock-step, {members} members)", peak)


#: Atari frames: 2 000 transitions of two (4, 84, 84) uint8 observations each, 108 MB raw (a batch of 64 adds 3%)
IMAGE = ObsSpec((4, 84, 84), np.uint8)
IMAGE_CAPACITY = 2_000


@pytest.mark.parametrize("members", [None, 2], ids=["single", "lockstep-2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_image_replay_memory(benchmark, variant, members):
    """uint8 frames cost one byte a pixel: raw is ``capacity × (2 × 28 224 + 13)`` bytes per member."""
    name, params = VARIANTS[variant]
    factory = load_registry(load_entrypoints=False).get("replay", name).factory
    rows = members or 1
    frame = np.ones((*(() if members is None else (members,)), *IMAGE.shape), dtype=np.uint8)

    def add(buffer):
        for i in range(IMAGE_CAPACITY // 2):
            obs, next_obs, end = frame * (i % 256), frame * ((i + 1) % 256), i % 100 == 99
            if members is None:
                buffer.add(obs, i % 2, 1.0, next_obs, end)
            else:
                flags = np.full(members, end)
                buffer.add(obs, np.zeros(members, np.int64), np.ones(members, np.float32), next_obs, flags, ~flags)

    def build():
        if members is None:
            return factory(IMAGE_CAPACITY, IMAGE, 0.99, **params)
        return factory.lockstep(members, IMAGE_CAPACITY, IMAGE, 0.99, **params)

    raw = rows * IMAGE_CAPACITY * (2 * IMAGE.nbytes + 8 + 4 + 1)
    peak = benchmark.pedantic(measure, args=(build, add, lambda b: b.sample(64)), rounds=1, iterations=1)
    record(benchmark, f"{variant} ({IMAGE}, {members or 1} member{'s' if members else ''})", peak, raw, IMAGE_CAPACITY)
