"""n-step replay: hand-computed returns and discounts around episode boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqnbench.builtin.nstep import nstep, nstep_return
from dqnbench.builtin.replays import uniform


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


def o(value: float) -> np.ndarray:
    """A 2-d observation tagged by ``value``."""
    return np.array([value, -value], dtype=np.float32)


def stored(buffer) -> list[tuple[float, float, float, bool, float]]:
    """Stored rows in write order: (obs tag, n-step return, next_obs tag, terminated, discount)."""
    s = buffer.storage
    order = [(s.cursor - s.size + i) % s.capacity for i in range(s.size)]
    return [
        (
            float(s.obs[i, 0]),
            float(s.rewards[i]),
            float(s.next_obs[i, 0]),
            bool(s.terminated[i]),
            float(buffer.discount_of[buffer.accumulated[i]]),
        )
        for i in order
    ]


def play(buffer) -> None:
    """Three episodes, γ = 0.5, n = 3.

    Episode 1 (terminates): states 0→1→2→3→4, rewards 1, 2, 4, 8.
    Episode 2 (time-limit truncated): states 100→101→102, rewards 16, 32.
    Episode 3 (still running): state 200→201, reward 1000 — must not leak backwards.
    """
    buffer.add(o(0), 0, 1.0, o(1), False)
    buffer.add(o(1), 1, 2.0, o(2), False)
    buffer.add(o(2), 0, 4.0, o(3), False)
    buffer.add(o(3), 1, 8.0, o(4), True)
    buffer.add(o(100), 0, 16.0, o(101), False)
    buffer.add(o(101), 1, 32.0, o(102), False)  # truncated here: the loop passes terminated=False
    buffer.add(o(200), 0, 1000.0, o(201), False)  # a reset observation: a new episode


def test_nstep_return_by_hand() -> None:
    assert nstep_return([1.0, 2.0, 4.0], 0.5) == (1 + 0.5 * 2 + 0.25 * 4, 0.125)
    assert nstep_return([8.0], 0.9) == (8.0, 0.9)


def test_returns_and_discounts_around_termination_and_truncation() -> None:
    buffer = nstep(100, 2, 0.5, n=3)
    play(buffer)
    assert stored(buffer) == [
        # episode 1, full window: 1 + .5·2 + .25·4 = 3, bootstrap from s3 with γ³
        (0.0, 3.0, 3.0, False, 0.125),
        # the 4th step terminates: every pending start is stored with its k ≤ 3 rewards
        (1.0, 2 + 0.5 * 4 + 0.25 * 8, 4.0, True, 0.125),  # = 6, k = 3
        (2.0, 4 + 0.5 * 8, 4.0, True, 0.25),  # = 8, k = 2
        (3.0, 8.0, 4.0, True, 0.5),  # k = 1
        # episode 2, truncated after 2 steps: bootstrap from its last state 102, not terminal
        (100.0, 16 + 0.5 * 32, 102.0, False, 0.25),  # = 32, k = 2
        (101.0, 32.0, 102.0, False, 0.5),  # k = 1
    ]
    assert len(buffer) == 6  # episode 3's first step is still pending


def test_window_slides_inside_an_episode() -> None:
    buffer = nstep(100, 2, 0.9, n=2)
    rewards = [1.0, 10.0, 100.0, 1000.0]
    for t, r in enumerate(rewards):
        buffer.add(o(t), 0, r, o(t + 1), False)
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
        one.add(*args)
        reference.add(*args)
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
    play(buffer)  # 7 add calls (6 stored transitions): β counts env steps
    assert buffer.beta == pytest.approx(0.4 + 0.6 * 7 / 14)
    assert nstep(10, 2, 0.5).beta is None


def test_new_episode_without_truncation_flush_does_not_mix_pending_rewards() -> None:
    """Two truncated episodes back to back, each shorter than n: no reward crosses over."""
    buffer = nstep(100, 2, 0.5, n=5)
    buffer.add(o(0), 0, 1.0, o(1), False)
    buffer.add(o(10), 0, 2.0, o(11), False)  # new episode after a 1-step truncated one
    buffer.add(o(11), 0, 4.0, o(12), False)
    buffer.add(o(20), 0, 8.0, o(21), True)  # another new episode, terminating at once
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


def test_an_explicit_truncation_flag_ends_the_episode_at_once() -> None:
    """``truncated=True`` stores the pending starts at once, bootstrapping from that step's ``next_obs``."""
    buffer = nstep(100, 2, 0.5, n=3)
    buffer.add(o(0), 0, 1.0, o(1), False)
    buffer.add(o(1), 0, 2.0, o(2), False, truncated=True)
    assert stored(buffer) == [(0.0, 1 + 0.5 * 2, 2.0, False, 0.25), (1.0, 2.0, 2.0, False, 0.5)]
    buffer.add(o(10), 0, 4.0, o(11), True)  # the next episode: nothing pending to flush
    assert stored(buffer)[2:] == [(10.0, 4.0, 11.0, True, 0.5)]
