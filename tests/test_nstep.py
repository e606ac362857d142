"""n-step replay: hand-computed returns and discounts around episode boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqnbench.builtin.nstep import nstep
from dqnbench.builtin.replays import uniform
from dqnbench.plugin.legacy_replay import build_replay


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


def o(value: float) -> np.ndarray:
    """A 2-d observation tagged by ``value``."""
    return np.array([value, -value], dtype=np.float32)


def add(buffer, obs, action, reward, next_obs, terminated=False, truncated=False) -> None:
    """One env step of a single run: the row of one the loop adds."""
    buffer.add(obs[None], np.array([action]), np.array([reward], np.float32), next_obs[None],
               np.array([terminated]), np.array([truncated]))  # fmt: skip


def stored(buffer) -> list[tuple[float, float, float, bool, float]]:
    """Sampleable n-step transitions, oldest first: (obs tag, n-step return, next_obs tag, terminated, discount)."""
    s = buffer.storage
    slots = (s.oldest + np.arange(len(buffer))) % s.capacity
    obs, _, returns, next_obs, terminated, discounts = buffer.nstep(slots[None])
    return [
        (float(obs[0, i, 0]), float(returns[0, i]), float(next_obs[0, i, 0]), bool(terminated[0, i]),
         float(discounts[0, i]))
        for i in range(len(slots))
    ]  # fmt: skip


def play(buffer) -> None:
    """Three episodes, γ = 0.5, n = 3.

    Episode 1 (terminates): states 0→1→2→3→4, rewards 1, 2, 4, 8.
    Episode 2 (time-limit truncated): states 100→101→102, rewards 16, 32.
    Episode 3 (still running): states 200→201→202, rewards 1000, 2000 — must not leak backwards.
    The newest n − 1 = 2 steps (episode 3's) are not sampleable yet.
    """
    add(buffer, o(0), 0, 1.0, o(1))
    add(buffer, o(1), 1, 2.0, o(2))
    add(buffer, o(2), 0, 4.0, o(3))
    add(buffer, o(3), 1, 8.0, o(4), terminated=True)
    add(buffer, o(100), 0, 16.0, o(101))
    add(buffer, o(101), 1, 32.0, o(102), truncated=True)
    add(buffer, o(200), 0, 1000.0, o(201))
    add(buffer, o(201), 1, 2000.0, o(202))


def test_returns_and_discounts_around_termination_and_truncation() -> None:
    buffer = nstep(100, 2, 0.5, n=3)
    play(buffer)
    assert stored(buffer) == [
        # episode 1, full window: 1 + .5·2 + .25·4 = 3, bootstrap from s3 with γ³
        (0.0, 3.0, 3.0, False, 0.125),
        # the 4th step terminates: every start's window stops there, with its k ≤ 3 rewards
        (1.0, 2 + 0.5 * 4 + 0.25 * 8, 4.0, True, 0.125),  # = 6, k = 3
        (2.0, 4 + 0.5 * 8, 4.0, True, 0.25),  # = 8, k = 2
        (3.0, 8.0, 4.0, True, 0.5),  # k = 1
        # episode 2, truncated after 2 steps: bootstrap from its last state 102, not terminal
        (100.0, 16 + 0.5 * 32, 102.0, False, 0.25),  # = 32, k = 2
        (101.0, 32.0, 102.0, False, 0.5),  # k = 1
    ]
    assert len(buffer) == 6  # episode 3's windows are still open


def test_window_slides_inside_an_episode() -> None:
    buffer = nstep(100, 2, 0.9, n=2)
    rewards = [1.0, 10.0, 100.0, 1000.0]
    for t, r in enumerate(rewards):
        add(buffer, o(t), 0, r, o(t + 1))
    rows = stored(buffer)
    assert [row[0] for row in rows] == [0.0, 1.0, 2.0]
    np.testing.assert_allclose([row[1] for row in rows], [1 + 0.9 * 10, 10 + 0.9 * 100, 100 + 0.9 * 1000], rtol=1e-6)
    assert [row[2] for row in rows] == [2.0, 3.0, 4.0]
    np.testing.assert_allclose([row[4] for row in rows], [0.81] * 3, rtol=1e-6)


def test_sampled_batches_carry_the_stored_discounts() -> None:
    buffer = nstep(100, 2, 0.5, n=3)
    play(buffer)
    batch = buffer.sample(64)
    expected = {0.0: 0.125, 1.0: 0.125, 2.0: 0.25, 3.0: 0.5, 100.0: 0.25, 101.0: 0.5}
    for tag, discount in zip(batch.obs[:, 0].tolist(), batch.discounts.tolist(), strict=True):
        assert discount == expected[tag]
    torch.testing.assert_close(batch.weights, torch.ones(64))


def test_n_one_matches_one_step_uniform_replay() -> None:
    one, reference = nstep(50, 2, 0.9, n=1), uniform(50, 2, 0.9)
    for t in range(30):
        args = (o(t), t % 2, float(t), o(t + 1), t % 7 == 6)
        add(one, *args)
        add(reference, *args)
    for field in ("obs", "actions", "rewards", "next_obs", "terminated"):
        np.testing.assert_array_equal(getattr(one.storage, field), getattr(reference.storage, field))
    np.random.seed(1)
    a = one.sample(16)
    np.random.seed(1)
    b = reference.sample(16)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)


def test_batch_has_the_contract_dtypes_and_shapes() -> None:
    for prioritized in (False, True):
        buffer = nstep(100, 2, 0.5, n=3, prioritized=prioritized)
        play(buffer)
        batch = buffer.sample(5)
        expected = {
            "obs": (torch.float32, (5, 2)),
            "actions": (torch.int64, (5,)),
            "rewards": (torch.float32, (5,)),
            "next_obs": (torch.float32, (5, 2)),
            "terminated": (torch.bool, (5,)),
            "weights": (torch.float32, (5,)),
            "indices": (torch.int64, (5,)),
            "discounts": (torch.float32, (5,)),
        }
        for field, (dtype, shape) in expected.items():
            tensor = getattr(batch, field)
            assert (tensor.dtype, tuple(tensor.shape)) == (dtype, shape), (prioritized, field)


def test_prioritized_nstep_samples_by_priority_and_weights_by_hand() -> None:
    """α = 1, ε = 0.5: δ = 0.5 on slot 0 and 7.5 on the others gives p = 1 and 8 (total 41 over 6 slots).

    Over 500 batches of 32 (16 000 draws) slot 0's frequency must be 1/41 ± 0.006 (standard error
    √(p(1−p)/n) ≈ 0.0012, so > 4 σ); its weight is the batch max and the others' (1/8)^β.
    """
    buffer = nstep(100, 2, 0.5, n=3, prioritized=True, alpha=1.0, beta=0.5, eps=0.5)
    play(buffer)
    td = torch.full((6,), 7.5)
    td[0] = 0.5
    buffer.update_priorities(torch.arange(6), td)
    counts = np.zeros(6)
    for _ in range(500):
        batch = buffer.sample(32)
        np.add.at(counts, batch.indices.numpy(), 1)
    assert counts[0] / counts.sum() == pytest.approx(1 / 41, abs=0.006)
    batch = buffer.sample(41)  # one segment per unit of priority: slot 0 is drawn exactly once
    expected = torch.where(batch.indices == 0, 1.0, 8**-0.5)
    torch.testing.assert_close(batch.weights, expected)
    assert set(batch.discounts.tolist()) <= {0.125, 0.25, 0.5}


def test_prioritized_nstep_anneals_beta_over_env_steps() -> None:
    buffer = nstep(100, 2, 0.5, n=3, prioritized=True, beta=0.4, total_steps=14)
    play(buffer)  # 8 add calls (6 sampleable transitions): β counts env steps
    assert buffer.beta == pytest.approx(0.4 + 0.6 * 8 / 14)
    assert nstep(10, 2, 0.5).beta is None


def test_back_to_back_episodes_shorter_than_n_do_not_mix_rewards() -> None:
    """Two truncated episodes back to back, each shorter than n, then one terminating at once: no reward crosses."""
    buffer = nstep(100, 2, 0.5, n=5)
    add(buffer, o(0), 0, 1.0, o(1), truncated=True)  # a 1-step truncated episode
    add(buffer, o(10), 0, 2.0, o(11))
    add(buffer, o(11), 0, 4.0, o(12), truncated=True)
    add(buffer, o(20), 0, 8.0, o(21), terminated=True)
    for t in range(4):  # a running episode: the windows above become sampleable
        add(buffer, o(30 + t), 0, 0.0, o(31 + t))
    assert stored(buffer) == [
        (0.0, 1.0, 1.0, False, 0.5),
        (10.0, 2 + 0.5 * 4, 12.0, False, 0.25),
        (11.0, 4.0, 12.0, False, 0.5),
        (20.0, 8.0, 21.0, True, 0.5),
    ]


@pytest.mark.parametrize(
    "params",
    [{"n": 0}, {"n": 2.5}, {"n": True}, {"prioritized": "yes"}, {"alpha": -1.0}, {"beta": 2.0}, {"eps": 0.0}],
)
def test_bad_params_raise_value_error(params: dict) -> None:
    with pytest.raises(ValueError):
        nstep(10, 2, 0.99, **params)


def test_a_truncation_ends_the_window_even_where_the_next_episode_starts_where_it_stopped() -> None:
    """The single run is told where episodes end: a time limit whose reset observation equals the truncated
    episode's last one is not bootstrapped across (the single run's old v1 ``add`` had no ``truncated``, so the
    buffer guessed episode ends from observations, and merged these two episodes)."""
    buffer = build_replay(nstep, 100, 2, 0.5, n=3)  # as the loop builds a single run's replay
    add(buffer, o(0), 0, 1.0, o(1))
    add(buffer, o(1), 0, 2.0, o(2), truncated=True)
    add(buffer, o(2), 0, 4.0, o(3))  # the next episode happens to start at o(2)
    add(buffer, o(3), 0, 8.0, o(4), terminated=True)
    add(buffer, o(50), 0, 0.0, o(51))
    add(buffer, o(51), 0, 0.0, o(52))
    assert stored(buffer)[:4] == [
        (0.0, 1 + 0.5 * 2, 2.0, False, 0.25),  # stops at the truncation, bootstraps from o(2) with γ²
        (1.0, 2.0, 2.0, False, 0.5),
        (2.0, 4 + 0.5 * 8, 4.0, True, 0.25),
        (3.0, 8.0, 4.0, True, 0.5),
    ]


def test_a_single_run_samples_what_a_lockstep_member_samples() -> None:
    """One add for both: a single run fed member 0's stream (random terminations and truncations, a ring that
    wraps) holds and samples exactly what lock-step member 0 does, squeezed to ``(B, …)``."""
    members, n, gamma, steps, capacity = 3, 3, 0.9, 150, 40
    rng = np.random.default_rng(2)
    ends = rng.choice(["", "terminated", "truncated"], size=(steps, members), p=[0.8, 0.1, 0.1])
    rewards = rng.normal(size=(steps, members)).astype(np.float32)
    for prioritized in (False, True):
        lock = nstep(capacity, 2, gamma, n=n, prioritized=prioritized, members=members)
        single = nstep(capacity, 2, gamma, n=n, prioritized=prioritized)
        for t in range(steps):
            obs = np.stack([np.arange(members), np.full(members, t)], axis=1).astype(np.float32)
            next_obs = obs + np.array([0.0, 1.0], np.float32)
            terminated, truncated = ends[t] == "terminated", ends[t] == "truncated"
            lock.add(obs, np.arange(members), rewards[t], next_obs, terminated, truncated)
            single.add(obs[:1], np.zeros(1), rewards[t, :1], next_obs[:1], terminated[:1], truncated[:1])
        assert len(single) == len(lock) == capacity - (n - 1)
        slots = (single.storage.oldest + np.arange(len(single))) % capacity
        for mine, theirs in zip(single.nstep(slots[None]), lock.nstep(np.tile(slots, (members, 1))), strict=True):
            torch.testing.assert_close(mine[0], theirs[0], rtol=0, atol=0)
        batch = single.sample(16)
        assert batch.obs.shape == (16, 2) and batch.discounts.shape == (16,) and batch.weights.shape == (16,)
        single.update_priorities(batch.indices, torch.rand(16))
