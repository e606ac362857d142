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

Image observations are held to a budget per transition instead: Atari's
``(4, 84, 84)`` uint8 stacks are stored one 7 056-byte frame per transition
(see :mod:`dqnbench.builtin.frames`), so a built-in replay holds at most
7.2 KB a transition, all fields included (Dopamine's 7.1 KB; Stable-Baselines3's
28 KB with ``optimize_memory_usage``, 56 KB without), measured at capacity 10⁵
as ``nbytes`` of the arrays allocated (np.zeros maps pages lazily) and as the
traced peak. A buffer that widened frames to float32 anywhere, or kept a
next_obs, would show up here several times over.
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
#: transitions per ``add`` call (three calls) with benchmarks enabled, and in a smoke run (``--benchmark-disable``):
#: the capacity, hence the bytes allocated and the bound, is the same; only the fill is shorter (tracemalloc makes
#: every add slow)
FILL, SMOKE_FILL = 2_000, 200


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
    obs = np.ones((1, OBS_DIM), dtype=np.float32)
    fill = SMOKE_FILL if benchmark.disabled else FILL

    def add(buffer):
        for i in range(fill):
            end = np.array([i % (fill // 4) == fill // 4 - 1])
            buffer.add(obs * i, np.array([i % 2]), np.ones(1, np.float32), obs * (i + 1), end, np.zeros(1, bool))

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
    fill = SMOKE_FILL if benchmark.disabled else FILL

    def add(buffer):
        for i in range(fill):
            buffer.add(
                rows * i,
                np.zeros(members, np.int64),
                np.ones(members, np.float32),
                rows * (i + 1),
                np.zeros(members, bool),
                np.full(members, i % (fill // 4) == fill // 4 - 1),
            )

    build = lambda: factory(capacity, OBS_DIM, 0.99, members=members, **params)  # noqa: E731
    peak = benchmark.pedantic(measure, args=(build, add, lambda b: b.sample(64)), rounds=1, iterations=1)
    record(benchmark, f"{variant} (lock-step, {members} members)", peak)


#: Atari: 4-frame stacks of 84×84 uint8 frames (one frame is 7 056 bytes); 10⁵ transitions (per run, in all for
#: lock-step members): 0.7 GB allocated, pages touched only as far as the fill goes
ATARI = ObsSpec((4, 84, 84), np.uint8, frames=4)
ATARI_CAPACITY = 100_000
#: Stable-Baselines3's ReplayBuffer keeps both stacks (optimize_memory_usage=False: 56 KB; True: 28 KB a
#: transition); Dopamine's circular buffer one frame and its scalars, dropping the terminal frame (about 7.1 KB)
ATARI_BUDGET = 7.2e3
ATARI_FILL = 1_000  # steps, a few episodes: the side store holds one frame per episode
ATARI_EPISODE = 300  # steps: a short Atari episode (they run to 27 000 with the 108k-frame cap)
#: a smoke run's fill (``--benchmark-disable``), the same few episodes shorter: capacity and budget unchanged
SMOKE_ATARI_FILL, SMOKE_ATARI_EPISODE = 200, 60


def atari_rows(members: int | None, steps: int, episode: int):
    """``steps`` rows of sliding 4-frame stacks (K members', or a single run's one), zero-padded resets."""
    rows = members or 1
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(64, rows, 84, 84), dtype=np.uint8)  # recycled: content is not measured
    obs = np.zeros((rows, *ATARI.shape), np.uint8)
    obs[:, -1] = frames[0]
    for t in range(steps):
        next_obs = np.concatenate([obs[:, 1:], frames[(t + 1) % 64][:, None]], axis=1)
        end = (t + 1) % episode == 0
        action, reward = np.full(rows, t % 4), np.ones(rows, np.float32)
        flags = np.full(rows, end)
        yield obs, action, reward, next_obs, flags & (members is None), flags & (members is not None)
        if end:
            obs = np.zeros_like(obs)
            obs[:, -1] = frames[(t + 7) % 64]
        else:
            obs = next_obs


@pytest.mark.parametrize("members", [None, 4], ids=["single", "lockstep-4"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_atari_bytes_per_transition(benchmark, variant, members):
    """≤ 7.2 KB per Atari transition, all fields included, single and lock-step (K × 10⁵/K slots).

    Two measures, both per transition held at capacity: ``nbytes`` of every
    array the buffer allocated (np.zeros maps pages lazily, so RSS would
    undercount an unfilled ring), side store included after filling it with
    episodes; and the peak ``tracemalloc`` figure while built, filled and
    sampled, less the sampled batch (two 64-sample stacks). Measured (2-core
    dev machine, single / 4 members): uniform 7 143 / 7 145 bytes, prioritized
    7 148 / 7 150, n-step 7 144 / 7 146, n-step + prioritized 7 149 / 7 151 —
    the 7 056-byte frame, 14–20 bytes of scalars, offset, episode number and
    priority, and ~72 of side store reserved (one frame per 128 transitions;
    ~58 at capacity 10⁶) — against 28 224 (SB3 with optimize_memory_usage) and
    about 7.1 KB (Dopamine).
    """
    name, params = VARIANTS[variant]
    factory = load_registry(load_entrypoints=False).get("replay", name).factory
    capacity = ATARI_CAPACITY // (members or 1)
    fill, episode = (SMOKE_ATARI_FILL, SMOKE_ATARI_EPISODE) if benchmark.disabled else (ATARI_FILL, ATARI_EPISODE)

    def build():
        return factory(capacity, ATARI, 0.99, members=members, **params)

    def add(buffer):
        for row in atari_rows(members, fill, episode):
            buffer.add(*row)

    held = {}

    def sample(buffer):
        held["nbytes"] = buffer.nbytes()
        buffer.sample(64)

    peak = benchmark.pedantic(measure, args=(build, add, sample), rounds=1, iterations=1)
    batch = 2 * 64 * (members or 1) * ATARI.nbytes
    per_nbytes = held["nbytes"] / ATARI_CAPACITY
    per_peak = (peak - batch) / ATARI_CAPACITY
    benchmark.extra_info.update(
        measured="bytes per Atari transition at capacity 1e5: nbytes of allocated arrays, and traced peak",
        component=variant,
        members=members or 1,
        nbytes_per_transition=per_nbytes,
        peak_per_transition=per_peak,
        sb3_bytes=ATARI.nbytes,
        dopamine_bytes=7.1e3,
    )
    print(
        f"\n{variant} ({members or 1} member{'s' if members else ''}): {per_nbytes:,.0f} bytes a transition "
        f"allocated, {per_peak:,.0f} traced peak (SB3 28 224, Dopamine ~7 100)"
    )
    assert per_nbytes <= ATARI_BUDGET
    assert per_peak <= ATARI_BUDGET + CONSTANT_BYTES / ATARI_CAPACITY
