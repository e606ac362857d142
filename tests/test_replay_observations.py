"""Built-in replays keep observations in their own shape and dtype (uint8 frames, bool planes), single and lock-step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dqnbench.builtin.frames import FrameStorage
from dqnbench.builtin.nstep import nstep
from dqnbench.builtin.prioritized import prioritized
from dqnbench.builtin.replay_memory import initial_reset_slots
from dqnbench.builtin.replays import ACTION_DTYPE, as_obs_spec, uniform
from dqnbench.plugin.obs import ObsSpec

GAMMA = 0.5
CAPACITY = 40
STEPS = 100  # > CAPACITY: the ring wraps
MEMBERS = 3

#: buffer → (factory, params): every built-in replay
BUFFERS = {
    "uniform": (uniform, {}),
    "prioritized": (prioritized, {}),
    "nstep": (nstep, {"n": 3}),
    "nstep-prioritized": (nstep, {"n": 3, "prioritized": True}),
}

SPECS = {
    "atari-uint8": ObsSpec((4, 84, 84), np.uint8),
    "minatar-bool": ObsSpec((4, 10, 10), np.bool_),
}

TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.bool_): torch.bool, np.dtype(np.float32): torch.float32}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


def encode(tag: int, spec: ObsSpec) -> np.ndarray:
    """An observation of ``spec`` that identifies step ``tag`` in every entry (pseudo-random, seeded by the tag)."""
    noise = np.random.default_rng(tag).integers(0, 256, size=spec.shape, dtype=np.uint8)
    if spec.dtype == np.bool_:
        obs = noise % 2 == 1
        obs.reshape(-1)[:8] = [(tag >> bit) & 1 for bit in range(8)]  # the tag in the first 8 entries
        return obs
    obs = noise.astype(spec.dtype)
    obs.reshape(-1)[0] = tag
    return obs


def decode(obs: np.ndarray, spec: ObsSpec) -> int:
    flat = obs.reshape(-1)
    if spec.dtype == np.bool_:
        return sum(int(flat[bit]) << bit for bit in range(8))
    return int(flat[0])


def tag(t: int, member: int) -> int:
    """Step t of member k, distinct across members and below 256 (uint8, 8 bits)."""
    return (t + 80 * member) % 256


def build(name: str, spec: int, members: int | None):
    factory, params = BUFFERS[name]
    return factory(CAPACITY, spec, GAMMA, members=members, **params)


def fill(buffer, spec: ObsSpec, members: int | None) -> None:
    """``STEPS`` transitions with no episode end: obs tagged t, next_obs tagged t + 1, action t % 3 (rows of one
    for a single run)."""
    rows = members or 1
    for t in range(STEPS):
        obs = np.stack([encode(tag(t, k), spec) for k in range(rows)])
        next_obs = np.stack([encode(tag(t + 1, k), spec) for k in range(rows)])
        no = np.zeros(rows, dtype=bool)
        buffer.add(obs, np.full(rows, t % 3), np.ones(rows, np.float32), next_obs, no, no)


@pytest.mark.parametrize("members", [None, MEMBERS], ids=["single", "lockstep"])
@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("name", BUFFERS)
def test_observations_are_stored_and_sampled_in_their_own_shape_and_dtype(
    name: str, spec_name: str, members: int | None
) -> None:
    spec = SPECS[spec_name]
    buffer = build(name, spec, members)
    rows = members or 1
    storage = buffer.storage
    # images are kept one frame (here, unstacked, one observation) per transition, in their own dtype: no next_obs
    assert isinstance(storage, FrameStorage) and not hasattr(storage, "next_obs")
    assert storage.frame.dtype == spec.dtype
    assert storage.frame.nbytes == (CAPACITY + spec.frames) * rows * math.prod(spec.shape) * spec.dtype.itemsize
    # beside them: a few bytes a slot, the side store of reset observations and the last next_obs
    side = (initial_reset_slots(CAPACITY, spec.frames) + 1) * rows * spec.nbytes
    assert storage.nbytes() <= storage.frame.nbytes + side + CAPACITY * rows * 32
    factory, params = BUFFERS[name]
    assert buffer.nbytes() == factory.memory_bytes(CAPACITY, spec, members, **params)

    fill(buffer, spec, members)
    batch = buffer.sample(16)
    lead = (16,) if members is None else (members, 16)
    for field in ("obs", "next_obs"):
        tensor = getattr(batch, field)
        assert tensor.dtype == TORCH_DTYPES[spec.dtype] and tuple(tensor.shape) == (*lead, *spec.shape), field
    expected = {
        "actions": torch.int64,
        "rewards": torch.float32,
        "terminated": torch.bool,
        "weights": torch.float32,
        "indices": torch.int64,
        "discounts": torch.float32,
    }
    for field, dtype in expected.items():
        tensor = getattr(batch, field)
        assert (tensor.dtype, tuple(tensor.shape)) == (dtype, lead), field

    # every sampled row is a whole stored observation of its own member, next_obs k steps on (γ^k in discounts)
    obs = batch.obs.numpy().reshape(rows, 16, *spec.shape)
    next_obs = batch.next_obs.numpy().reshape(rows, 16, *spec.shape)
    steps = np.rint(np.log(batch.discounts.numpy().reshape(rows, 16)) / np.log(GAMMA)).astype(int)
    actions = batch.actions.numpy().reshape(rows, 16)
    for k in range(rows):
        for b in range(16):
            t = (decode(obs[k, b], spec) - 80 * k) % 256
            assert t >= STEPS - CAPACITY - 3, "only the ring's newest transitions remain"
            np.testing.assert_array_equal(obs[k, b], encode(tag(t, k), spec))
            np.testing.assert_array_equal(next_obs[k, b], encode(tag(t + steps[k, b], k), spec))
            assert actions[k, b] == t % 3
    assert set(np.unique(steps)) == ({1} if name in ("uniform", "prioritized") else {3})
    buffer.update_priorities(batch.indices, torch.ones(lead))


@pytest.mark.parametrize("members", [None, MEMBERS], ids=["single", "lockstep"])
@pytest.mark.parametrize("name", BUFFERS)
def test_a_plain_int_obs_dim_is_a_float32_vector(name: str, members: int | None) -> None:
    """v1 callers (and tests) pass ``obs_dim`` as an int: it is stored and sampled as float32 ``(…, obs_dim)``."""
    plain, spec = build(name, 3, members), build(name, ObsSpec(3), members)
    rows = members or 1
    for buffer in (plain, spec):
        assert buffer.storage.obs.dtype == np.float32 and buffer.storage.obs.shape[-1] == 3
        assert buffer.storage.obs.nbytes == CAPACITY * rows * 3 * 4
        for t in range(20):
            obs = np.full((rows, 3), t, np.float64)  # float64 in: stored as float32
            no = np.zeros(rows, dtype=bool)
            buffer.add(obs, np.zeros(rows, np.int64), np.ones(rows), obs + 1, no, no)
    np.random.seed(3)
    a = plain.sample(8)
    np.random.seed(3)
    b = spec.sample(8)
    lead = (8,) if members is None else (members, 8)
    assert a.obs.dtype == torch.float32 and tuple(a.obs.shape) == (*lead, 3)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


def test_as_obs_spec() -> None:
    spec = as_obs_spec(5)
    assert isinstance(spec, ObsSpec) and spec == 5 and spec.shape == (5,) and spec.dtype == np.float32
    image = ObsSpec((4, 84, 84), np.uint8)
    assert as_obs_spec(image) is image
    assert as_obs_spec(np.int64(7)).shape == (7,)


def test_stored_actions_stay_narrow_for_images_too() -> None:
    buffer = uniform(CAPACITY, SPECS["atari-uint8"], GAMMA)
    assert buffer.storage.actions.dtype == ACTION_DTYPE


def test_single_run_nstep_cuts_episodes_on_image_observations() -> None:
    """The single-run n-step buffer cuts windows where ``add`` says an episode ended: uint8 frames too.

    Over frame storage it keeps one-step rows (of one) and forms the windows when sampled.
    """
    spec = SPECS["atari-uint8"]
    buffer = nstep(CAPACITY, spec, GAMMA, n=3)
    for obs, reward, next_obs, terminated, truncated in ((0, 1.0, 1, False, False), (1, 2.0, 2, False, True),
                                                         (50, 4.0, 51, True, False)):  # fmt: skip
        buffer.add(encode(obs, spec)[None], np.zeros(1), np.array([reward]), encode(next_obs, spec)[None],
                   np.array([terminated]), np.array([truncated]))  # fmt: skip
    assert len(buffer) == 1  # the newest n − 1 windows are still open
    obs, _, rewards, next_obs, terminated, discounts = buffer.nstep(np.arange(3)[None])
    rows = [
        (decode(obs[0, i].numpy(), spec), float(rewards[0, i]), decode(next_obs[0, i].numpy(), spec),
         bool(terminated[0, i]))
        for i in range(3)
    ]  # fmt: skip
    assert rows == [(0, 1 + 0.5 * 2, 2, False), (1, 2.0, 2, False), (50, 4.0, 51, True)]
    assert discounts[0].tolist() == [0.25, 0.5, 0.5]
