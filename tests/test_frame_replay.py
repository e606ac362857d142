"""Frame storage: each frame stored once, observations rebuilt exactly, at resets, truncations and ring wraps.

Random episodes of varying lengths (shorter than the stack, length 1, longer
than the ring), with gymnasium's two stack paddings and an arbitrary one, ending
by termination or truncation, are fed to the frame storage and to the plain
row storage; every live slot must read back the same, after every add. The
built-in buffers over frame storage are then checked against the record of
every transition added, single-run (rows of one) and lock-step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import FrameStackObservation

import dqnbench
from dqnbench.builtin import replay_memory
from dqnbench.builtin.frames import FrameStorage
from dqnbench.builtin.nstep import nstep
from dqnbench.builtin.prioritized import prioritized
from dqnbench.builtin.replay_memory import (
    available_memory_bytes,
    initial_reset_slots,
    replay_bytes,
    stores_frames,
)
from dqnbench.builtin.replays import RingStorage, uniform
from dqnbench.errors import DqnbenchError, GridError
from dqnbench.plugin.obs import ObsSpec
from dqnbench.run.runner import prepare

GAMMA = 0.5
MEMBERS = 3

SPECS = {
    "stack4-uint8": ObsSpec((4, 2, 3), np.uint8, frames=4),
    "stack2-uint8": ObsSpec((2, 5), np.uint8, frames=2),
    "planes-bool": ObsSpec((3, 4, 5), np.bool_),
}

ATARI = ObsSpec((4, 84, 84), np.uint8, frames=4)


class Episodes:
    """One member's stream of stacked observations, gymnasium style (newest frame last, autoreset)."""

    def __init__(self, spec: ObsSpec, rng: np.random.Generator, max_length: int, pads: tuple[str, ...]) -> None:
        self.spec, self.rng, self.max_length, self.pads = spec, rng, max_length, pads
        self.frame_shape = spec.frame_shape
        self.obs = self._reset()

    def _frame(self) -> np.ndarray:
        if self.spec.dtype == np.bool_:
            return self.rng.integers(0, 2, size=self.frame_shape).astype(bool)
        return self.rng.integers(1, 256, size=self.frame_shape).astype(self.spec.dtype)  # never all zeros

    def _reset(self) -> np.ndarray:
        self.left = int(self.rng.integers(1, self.max_length + 1))
        frame = self._frame()
        if self.spec.frames == 1:
            return frame
        pad = self.rng.choice(self.pads)
        head = {
            "zero": lambda: [np.zeros_like(frame)] * (self.spec.frames - 1),
            "reset": lambda: [frame] * (self.spec.frames - 1),
            "other": lambda: [self._frame() for _ in range(self.spec.frames - 1)],
        }[pad]()
        return np.stack([*head, frame])

    def step(self) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        """``(obs, next_obs, terminated, truncated)`` of the next step; an ended episode resets the next one."""
        obs = self.obs
        new = self._frame()
        next_obs = new if self.spec.frames == 1 else np.concatenate([obs[1:], new[None]])
        self.left -= 1
        ended = self.left == 0
        terminated = ended and bool(self.rng.integers(0, 2))
        self.obs = self._reset() if ended else next_obs
        return obs, next_obs, terminated, ended and not terminated


def stream(spec: ObsSpec, members: int | None, steps: int, seed: int, max_length: int, pads=("zero", "reset", "other")):
    """``steps`` rows ``(obs, action, reward, next_obs, terminated, truncated)``: K members', or a single run's one."""
    rng = np.random.default_rng(seed)
    runs = [Episodes(spec, rng, max_length, pads) for _ in range(members or 1)]
    for _ in range(steps):
        rows = [run.step() for run in runs]
        obs, next_obs = np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])
        terminated = np.array([r[2] for r in rows])
        truncated = np.array([r[3] for r in rows])
        actions = rng.integers(0, 6, size=len(runs))
        rewards = rng.normal(size=len(runs)).astype(np.float32)
        yield obs, actions, rewards, next_obs, terminated, truncated


def live_slots(storage, members: int | None) -> np.ndarray:
    slots = (storage.oldest + np.arange(storage.size)) % storage.capacity
    return np.broadcast_to(slots, (members or 1, storage.size))


@pytest.mark.parametrize("members", [None, MEMBERS], ids=["single", "lockstep"])
@pytest.mark.parametrize("capacity", [1, 6, 23])
@pytest.mark.parametrize("spec_name", SPECS)
def test_frame_storage_reads_back_what_the_plain_storage_holds(spec_name: str, capacity: int, members) -> None:
    """After every add, every live slot's obs, next_obs and scalars equal the plain ring's, done flags included."""
    spec = SPECS[spec_name]
    frames = FrameStorage(capacity, spec, members, done=True)
    plain = RingStorage(capacity, spec, members, done=True)
    for obs, action, reward, next_obs, terminated, truncated in stream(spec, members, 150, seed=capacity, max_length=7):
        # without a truncation flag (the single run's v1 add of old), the frame storage infers it
        frames.add(obs, action, reward, next_obs, terminated, None if members is None else truncated)
        plain.add(obs, action, reward, next_obs, terminated, truncated)
        slots = live_slots(plain, members)
        flat = plain.flat(slots)
        np.testing.assert_array_equal(frames.obs_at(slots).numpy(), plain.take("obs", flat).numpy())
        np.testing.assert_array_equal(frames.next_obs_at(slots).numpy(), plain.take("next_obs", flat).numpy())
        for name in ("actions", "rewards", "terminated"):
            np.testing.assert_array_equal(frames.take(name, flat).numpy(), plain.take(name, flat).numpy(), name)
        done, expected = frames.take("done", flat).numpy(), plain.take("done", flat).numpy()
        if members is None:  # an inferred truncation is known when the next episode's first obs arrives
            done, expected = done[..., :-1], expected[..., :-1]
        np.testing.assert_array_equal(done, expected)
    assert frames.count == 150 and frames.size == min(150, capacity)


def test_side_store_grows_when_every_entry_is_live() -> None:
    """Episodes of 1–2 steps need a reset observation per step or two: the side store doubles and stays exact."""
    spec = SPECS["stack4-uint8"]
    capacity = 40
    frames, plain = FrameStorage(capacity, spec, MEMBERS), RingStorage(capacity, spec, MEMBERS)
    assert frames.reset_slots == initial_reset_slots(capacity, 4) == 8
    for row in stream(spec, MEMBERS, 200, seed=1, max_length=2):
        frames.add(*row)
        plain.add(*row)
    assert frames.reset_slots >= 32  # ≥ 20 live episodes per member
    slots = live_slots(plain, MEMBERS)
    np.testing.assert_array_equal(frames.obs_at(slots).numpy(), plain.take("obs", plain.flat(slots)).numpy())
    np.testing.assert_array_equal(frames.next_obs_at(slots).numpy(), plain.take("next_obs", plain.flat(slots)).numpy())


def test_gymnasium_paddings_keep_one_frame_per_episode() -> None:
    """Zero and repeated-reset-frame padding are recognised: no episode keeps its whole reset observation."""
    spec = SPECS["stack4-uint8"]
    frames = FrameStorage(50, spec)
    for row in stream(spec, None, 120, seed=2, max_length=9, pads=("zero", "reset")):
        frames.add(*row[:5])
    assert frames.episodes[0] > 10 and not frames.reset_whole


def test_stacks_that_do_not_slide_are_refused() -> None:
    spec = SPECS["stack4-uint8"]
    frames = FrameStorage(10, spec)
    obs = np.arange(24, dtype=np.uint8).reshape(1, *spec.shape)
    with pytest.raises(DqnbenchError, match="slide by one frame"):
        frames.add(obs, np.zeros(1), np.zeros(1), obs + 1, np.zeros(1, bool))


def test_images_use_frame_storage_and_vectors_rows() -> None:
    assert stores_frames(ATARI) and stores_frames(SPECS["planes-bool"]) and not stores_frames(ObsSpec(4))
    assert isinstance(uniform(10, ATARI, GAMMA).storage, FrameStorage)
    assert isinstance(uniform(10, 4, GAMMA).storage, RingStorage)


# --- the built-in buffers over frame storage, against the record of what was added -------------------------------

BUFFERS = {
    "uniform": (uniform, {}),
    "prioritized": (prioritized, {}),
    "nstep": (nstep, {"n": 3}),
    "nstep-prioritized": (nstep, {"n": 3, "prioritized": True}),
}


def expected_nstep(record: list, c: int, k: int, n: int) -> tuple[float, int]:
    """The n-step return from add count c for member k, and the steps it spans (cut at the episode's end)."""
    total, steps = 0.0, 0
    for j in range(n):
        if c + j >= len(record):
            break
        _, _, rewards, _, terminated, truncated = record[c + j]
        total += GAMMA**j * float(rewards[k])
        steps += 1
        if terminated[k] or truncated[k]:
            break
    return total, steps


@pytest.mark.parametrize("members", [None, MEMBERS], ids=["single", "lockstep"])
@pytest.mark.parametrize("name", BUFFERS)
def test_buffers_sample_exactly_what_was_added(name: str, members) -> None:
    np.random.seed(0)
    torch.manual_seed(0)
    spec, capacity = SPECS["stack4-uint8"], 30
    factory, params = BUFFERS[name]
    buffer = factory(capacity, spec, GAMMA, members=members, **params)
    rows = members or 1
    record = []
    for row in stream(spec, members, 140, seed=5, max_length=8):
        buffer.add(*row)
        record.append(row)
        if len(record) < 40 or len(record) % 10:
            continue
        batch = buffer.sample(16)
        counts = buffer.storage.counts(batch.indices.numpy()).reshape(rows, 16)
        steps = np.rint(np.log(batch.discounts.numpy()) / np.log(GAMMA)).astype(int).reshape(rows, 16)
        obs_b, next_b = (
            batch.obs.numpy().reshape(rows, 16, *spec.shape),
            batch.next_obs.numpy().reshape(rows, 16, *spec.shape),
        )
        actions = batch.actions.numpy().reshape(rows, 16)
        rewards = batch.rewards.numpy().reshape(rows, 16)
        terminated = batch.terminated.numpy().reshape(rows, 16)
        n = params.get("n", 1)
        for k in range(rows):
            for b in range(16):
                c = int(counts[k, b])
                assert len(record) - capacity <= c <= len(record) - n, "a live, complete transition"
                expected_return, expected_steps = expected_nstep(record, c, k, n)
                last = c + expected_steps - 1
                assert steps[k, b] == expected_steps
                np.testing.assert_array_equal(obs_b[k, b], record[c][0][k])
                np.testing.assert_array_equal(next_b[k, b], record[last][3][k])
                assert actions[k, b] == record[c][1][k]
                assert rewards[k, b] == pytest.approx(expected_return, rel=1e-6, abs=1e-6)
                assert terminated[k, b] == bool(record[last][4][k])
        buffer.update_priorities(batch.indices, torch.rand(batch.indices.shape))
    assert batch.obs.dtype == torch.uint8 and batch.next_obs.dtype == torch.uint8


# --- memory -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("members", [None, 4], ids=["single", "lockstep"])
@pytest.mark.parametrize("spec", [ATARI, SPECS["planes-bool"], ObsSpec(4)], ids=["atari", "bool", "vector"])
@pytest.mark.parametrize("name", BUFFERS)
def test_replay_bytes_are_what_a_built_replay_holds(name: str, spec: ObsSpec, members) -> None:
    factory, params = BUFFERS[name]
    buffer = factory(1000, spec, GAMMA, members=members, **params)
    assert buffer.nbytes() == factory.memory_bytes(1000, spec, members, **params)


@pytest.mark.parametrize("members", [None, 8], ids=["single", "lockstep"])
@pytest.mark.parametrize(
    "flags", [{}, {"prioritized": True}, {"nstep": True}, {"nstep": True, "prioritized": True}], ids=str
)
def test_atari_transitions_fit_in_7_2_kb(flags: dict, members) -> None:
    """All fields included, at capacity 10⁶ (per member): one 7 056-byte frame and a few bytes (Dopamine: 7.1 KB)."""
    per_transition = replay_bytes(10**6, ATARI, members, **flags) / (10**6 * (members or 1))
    assert 7056 < per_transition <= 7200


def test_a_replay_that_does_not_fit_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_memory, "available_memory_bytes", lambda: 1 << 30)  # 1 GiB
    with pytest.raises(DqnbenchError, match=r"needs 6\.6 GiB .*only 1\.0 GiB.*lower replay\.capacity"):
        uniform(10**6, ATARI, GAMMA)
    with pytest.raises(DqnbenchError, match="lock-step members"):
        nstep(10**6 // 4, ATARI, GAMMA, prioritized=True, members=4)
    assert len(uniform(100_000, ATARI, GAMMA)) == 0  # 0.7 GB fits
    monkeypatch.setattr(replay_memory, "available_memory_bytes", lambda: None)  # unknown: nothing refused
    uniform(10**6, ATARI, GAMMA)


def test_available_memory_is_read(tmp_path) -> None:
    available = available_memory_bytes()
    assert available is None or available > 0
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert replay_memory._meminfo_available(meminfo) == 8_000_000 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert replay_memory._meminfo_available(meminfo) is None


class Frames(gym.Env):
    """A tiny image env: random uint8 frames, episodes of random length that terminate."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (3, 4), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = int(self.np_random.integers(1, 9))
        return self.np_random.integers(0, 256, (3, 4), dtype=np.uint8), {}

    def step(self, action):
        self.left -= 1
        return self.np_random.integers(0, 256, (3, 4), dtype=np.uint8), 1.0, self.left == 0, False, {}


@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_gymnasium_frame_stacks_round_trip(padding: str) -> None:
    """gymnasium's FrameStackObservation (either padding, time limits too) is stored exactly, one frame a step."""
    env = FrameStackObservation(gym.wrappers.TimeLimit(Frames(), 5), 4, padding_type=padding)
    spec = ObsSpec(env.observation_space.shape, np.uint8, frames=4)
    frames, plain = FrameStorage(17, spec, done=True), RingStorage(17, spec, done=True)
    obs, _ = env.reset(seed=0)
    for t in range(60):
        next_obs, reward, terminated, truncated, _ = env.step(t % 2)
        row = obs[None], np.array([t % 2]), np.array([reward]), next_obs[None], np.array([terminated])
        frames.add(*row)  # no truncation flag: inferred
        plain.add(*row, np.array([truncated]))
        obs = env.reset()[0] if terminated or truncated else next_obs
    slots = live_slots(plain, None)
    flat, before_newest = plain.flat(slots), plain.flat(slots[:, :-1])
    np.testing.assert_array_equal(frames.obs_at(slots).numpy(), plain.take("obs", flat).numpy())
    np.testing.assert_array_equal(frames.next_obs_at(slots).numpy(), plain.take("next_obs", flat).numpy())
    np.testing.assert_array_equal(frames.take("done", before_newest).numpy(), plain.take("done", before_newest).numpy())
    assert not frames.reset_whole  # both paddings recognised: one frame per episode


class HugeReplays:
    """A plugin replay that says it needs a terabyte (its ``memory_bytes``), and one that says nothing."""

    @dqnbench.hookimpl
    def dqnbench_replays(self):
        def huge(capacity, obs_dim, gamma):
            return uniform(capacity, obs_dim, gamma)

        def silent(capacity, obs_dim, gamma):
            return uniform(capacity, obs_dim, gamma)

        huge.memory_bytes = lambda capacity, obs_dim, members=None, **params: 1 << 40
        return {"huge": huge, "silent": silent}


@pytest.mark.parametrize(("name", "refused"), [("huge", True), ("silent", False)])
def test_the_pre_flight_asks_a_plugin_replay_for_its_memory_need(tmp_path, name, refused) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text(f'[experiment]\nname = "m"\ntotal_steps = 50\nseeds = 1\n[replay]\nname = "{name}"\n')
    if not refused:
        prepare(grid, plugins=(HugeReplays(),), load_entrypoints=False)
        return
    with pytest.raises(GridError) as caught:
        prepare(grid, plugins=(HugeReplays(),), load_entrypoints=False)
    assert caught.value.key == "replay.capacity" and "needs 1024.0 GiB" in str(caught.value)
