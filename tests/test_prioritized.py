"""The sum tree and proportional prioritised replay (Schaul et al. 2016)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqnbench.builtin.prioritized import (
    annealed_beta,
    importance_weights,
    priorities_from_td,
    prioritized,
)
from dqnbench.builtin.sumtree import BLOCK, SumTree


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


def assert_tree_consistent(tree: SumTree) -> None:
    """Heap leaves are the block sums, every internal node the sum of its children, padding 0, root = Σ."""
    nodes = tree.nodes
    internal = np.arange(1, tree.first_leaf)
    np.testing.assert_array_equal(nodes[internal], nodes[2 * internal] + nodes[2 * internal + 1])
    block_sums = tree.priorities.reshape(-1, BLOCK).sum(axis=-1, dtype=np.float64)
    np.testing.assert_array_equal(nodes[tree.first_leaf : tree.first_leaf + tree.blocks], block_sums)
    assert np.all(nodes[tree.first_leaf + tree.blocks :] == 0)
    assert np.all(tree.priorities[tree.capacity :] == 0)
    assert tree.total == pytest.approx(tree.leaves.sum(dtype=np.float64), rel=1e-12)


def fill(buffer, count: int, obs_dim: int = 2, start: int = 0) -> None:
    """Add ``count`` transitions whose obs, action and reward encode their add order."""
    for t in range(start, start + count):  # a single run's rows of one
        obs = np.full((1, obs_dim), t, dtype=np.float32)
        buffer.add(obs, np.array([t % 3]), np.array([float(t)]), obs + 1, np.zeros(1, bool), np.zeros(1, bool))


# --- sum tree ----------------------------------------------------------------


def test_find_maps_prefix_sum_intervals_to_leaves() -> None:
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))  # intervals [0,1) [1,3) [3,6) [6,10)
    values = np.array([0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999])
    np.testing.assert_array_equal(tree.find(values), [0, 0, 1, 1, 2, 2, 3, 3])
    assert tree.total == 10.0


def test_find_never_returns_an_empty_or_padding_slot() -> None:
    tree = SumTree(5)  # 8 leaves, 3 of them padding
    tree.update(np.array([0, 2]), np.array([1.0, 0.5]))  # slots 1, 3, 4 empty
    values = np.array([0.0, 1.0, 1.4999999, 1.5, 1.5 + 1e-9, 100.0])  # edges and beyond the total
    assert set(tree.find(values).tolist()) <= {0, 2}


def test_batch_update_last_duplicate_wins_and_parents_follow() -> None:
    tree = SumTree(6)
    tree.update(np.array([1, 4, 1]), np.array([5.0, 2.0, 3.0]))
    np.testing.assert_array_equal(tree.get(np.array([1, 4])), [3.0, 2.0])
    assert tree.total == 5.0
    assert_tree_consistent(tree)


def test_tree_stays_consistent_after_many_random_batch_updates() -> None:
    tree = SumTree(37)  # not a power of two: padding leaves must stay 0
    for _ in range(500):
        indices = np.random.randint(0, 37, size=np.random.randint(1, 40))  # with duplicates
        tree.update(indices, np.random.random(indices.size) * 10)
        tree.set_one(int(np.random.randint(37)), float(np.random.random()))
    assert_tree_consistent(tree)


def test_stratified_sampling_frequencies_match_priorities() -> None:
    """1 000 batches of 50: 50 000 draws. A draw's frequency has standard error ≤ √(.25/50 000) ≈ 0.0022
    (stratification only lowers it), so the 0.01 absolute tolerance is > 4 σ."""
    tree = SumTree(6)
    priorities = np.array([1.0, 0.0, 2.0, 3.0, 0.5, 3.5])
    tree.update(np.arange(6), priorities)
    counts = np.zeros(6)
    for _ in range(1000):
        np.add.at(counts, tree.sample_stratified(50), 1)
    np.testing.assert_allclose(counts / counts.sum(), priorities / priorities.sum(), atol=0.01)
    assert counts[1] == 0


@pytest.mark.parametrize("capacity", [BLOCK, BLOCK + 1, 1000])
def test_find_over_many_blocks_matches_a_prefix_sum_search(capacity: int) -> None:
    """Across blocks (and a partial last block), every slot's interval maps to that slot, zeros never."""
    tree = SumTree(capacity)
    priorities = np.random.random(capacity).astype(np.float32) * 10
    priorities[np.random.random(capacity) < 0.2] = 0.0  # empty slots, also at block edges
    priorities[[0, capacity - 1]] = 0.0
    tree.update(np.arange(capacity), priorities)
    for _ in range(50):
        tree.set_one(int(np.random.randint(capacity)), float(np.random.random()))
    assert_tree_consistent(tree)
    stored = tree.leaves.astype(np.float64)
    prefix = np.cumsum(stored)
    positive = np.flatnonzero(stored > 0)
    midpoints = prefix[positive] - stored[positive] / 2  # strictly inside each positive slot's interval
    np.testing.assert_array_equal(tree.find(midpoints), positive)
    edges = np.concatenate([[0.0], prefix[positive[:-1]], [np.nextafter(tree.total, 0.0)]])
    found = tree.find(edges)  # interval edges and the very end: rounding may pick a neighbour, never a zero
    assert np.all(stored[found] > 0)
    expected = np.searchsorted(prefix, edges, side="right").clip(max=capacity - 1)
    assert np.all(np.abs(np.searchsorted(positive, found) - np.searchsorted(positive, expected)) <= 1)


def test_priorities_float32_cannot_hold_are_refused() -> None:
    tree = SumTree(4)
    with pytest.raises(ValueError, match="finite"):
        tree.update(np.array([0]), np.array([1e39]))
    with pytest.raises(ValueError, match="non-negative"):
        tree.set_one(1, -1.0)


def test_capacity_one_tree_is_its_root() -> None:
    tree = SumTree(1)
    tree.set_one(0, 2.5)
    assert tree.total == 2.5
    np.testing.assert_array_equal(tree.sample_stratified(3), [0, 0, 0])


# --- pure PER functions ------------------------------------------------------


def test_priorities_are_abs_td_plus_eps_to_the_alpha() -> None:
    np.testing.assert_allclose(priorities_from_td(np.array([-3.0, 0.0, 1.0]), 0.5, 1.0), [2.0, 1.0, np.sqrt(2)])


def test_importance_weights_by_hand() -> None:
    # P = (0.1, 0.2, 0.4), N = 5, β = 0.5: w = (0.5, 1, 2)^-0.5 = (√2, 1, 1/√2), / max -> (1, 1/√2, 1/2)
    weights = importance_weights(np.array([0.1, 0.2, 0.4]), 5, 0.5)
    np.testing.assert_allclose(weights, [1.0, 1 / np.sqrt(2), 0.5])


def test_beta_anneals_linearly_to_one() -> None:
    assert annealed_beta(0.4, 0, 100) == pytest.approx(0.4)
    assert annealed_beta(0.4, 50, 100) == pytest.approx(0.7)
    assert annealed_beta(0.4, 100, 100) == pytest.approx(1.0)
    assert annealed_beta(0.4, 1000, 100) == pytest.approx(1.0)
    assert annealed_beta(0.4, 1000, None) == pytest.approx(0.4)


# --- the buffer --------------------------------------------------------------


def test_batch_has_the_contract_dtypes_and_shapes() -> None:
    buffer = prioritized(100, 3, 0.9)
    fill(buffer, 20, obs_dim=3)
    batch = buffer.sample(8)
    expected = {
        "obs": (torch.float32, (8, 3)),
        "actions": (torch.int64, (8,)),
        "rewards": (torch.float32, (8,)),
        "next_obs": (torch.float32, (8, 3)),
        "terminated": (torch.bool, (8,)),
        "weights": (torch.float32, (8,)),
        "indices": (torch.int64, (8,)),
        "discounts": (torch.float32, (8,)),
    }
    for field, (dtype, shape) in expected.items():
        tensor = getattr(batch, field)
        assert (tensor.dtype, tuple(tensor.shape)) == (dtype, shape), field
    torch.testing.assert_close(batch.discounts, torch.full((8,), 0.9))
    # rows stay aligned: transition t has obs t, reward t, action t % 3
    torch.testing.assert_close(batch.rewards, batch.obs[:, 0])
    torch.testing.assert_close(batch.actions, batch.obs[:, 0].long() % 3)
    assert len(buffer) == 20


def test_new_transitions_get_the_max_priority_seen_so_far() -> None:
    buffer = prioritized(10, 2, 0.99, alpha=1.0, eps=0.5)
    fill(buffer, 3)
    np.testing.assert_array_equal(buffer.sampler.tree.get(np.arange(3)), [1.0, 1.0, 1.0])  # initially 1
    buffer.update_priorities(torch.tensor([0, 1]), torch.tensor([-4.5, 0.5]))  # priorities 5 and 1
    fill(buffer, 1, start=3)
    assert buffer.sampler.tree.get(np.array([3]))[0] == 5.0
    buffer.update_priorities(torch.tensor([0]), torch.tensor([0.0]))  # the max is "seen so far"
    fill(buffer, 1, start=4)
    assert buffer.sampler.tree.get(np.array([4]))[0] == 5.0


def test_sampling_frequencies_match_priority_to_the_alpha() -> None:
    """P(i) = p_i^α / Σ p^α with p = |δ| + ε. 800 batches of 64 = 51 200 draws: standard error
    ≤ √(.25/51 200) ≈ 0.0022 per frequency, so the 0.01 absolute tolerance is > 4 σ."""
    buffer = prioritized(8, 2, 0.99, alpha=0.6, eps=1e-6)
    fill(buffer, 8)
    td = np.array([0.1, 2.0, -0.5, 4.0, 1.0, -3.0, 0.05, 1.5])
    buffer.update_priorities(torch.arange(8), torch.tensor(td))
    expected = (np.abs(td) + 1e-6) ** 0.6
    expected /= expected.sum()
    counts = np.zeros(8)
    for _ in range(800):
        np.add.at(counts, buffer.sample(64).indices.numpy(), 1)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


def test_alpha_zero_samples_uniformly() -> None:
    """Stratified draws over equal priorities: each of 4 slots gets exactly 1/4 of every batch of 64."""
    buffer = prioritized(4, 2, 0.99, alpha=0.0)
    fill(buffer, 4)
    buffer.update_priorities(torch.arange(4), torch.tensor([0.1, 10.0, 3.0, 0.0]))
    counts = np.bincount(buffer.sample(64).indices.numpy(), minlength=4)
    np.testing.assert_array_equal(counts, [16, 16, 16, 16])
    torch.testing.assert_close(buffer.sample(64).weights, torch.ones(64))


def test_weights_by_hand() -> None:
    """α = 1, ε = 0.5, δ = (0.5, 1.5, 3.5, 7.5): p = (1, 2, 4, 8), P = p/15, N = 4.

    w_i = (4 p_i / 15)^-β / max. With 64 stratified draws over a total of 15
    every slot is drawn (each interval is wider than a segment of 15/64), so the
    batch max is slot 0's weight and w_i = (p_0 / p_i)^β.
    """
    buffer = prioritized(10, 2, 0.99, alpha=1.0, beta=0.5, eps=0.5)
    fill(buffer, 4)
    buffer.update_priorities(torch.arange(4), torch.tensor([0.5, -1.5, 3.5, 7.5]))
    batch = buffer.sample(64)
    assert set(batch.indices.tolist()) == {0, 1, 2, 3}
    by_slot = {int(i): float(w) for i, w in zip(batch.indices, batch.weights, strict=True)}
    expected = {0: 1.0, 1: 2**-0.5, 2: 0.5, 3: 8**-0.5}
    assert by_slot == pytest.approx(expected, rel=1e-6)


def test_beta_anneals_over_add_calls_and_changes_the_weights() -> None:
    buffer = prioritized(10, 2, 0.99, alpha=1.0, beta=0.4, eps=0.5, total_steps=8)
    fill(buffer, 4)
    assert buffer.beta == pytest.approx(0.4 + 0.6 * 4 / 8)
    fill(buffer, 6, start=4)  # 10 adds ≥ total_steps: β = 1
    assert buffer.beta == pytest.approx(1.0)
    buffer.update_priorities(torch.arange(10), torch.tensor([0.5, 1.5] * 5))  # p = 1 or 2, total 15
    batch = buffer.sample(32)
    expected = torch.where(batch.indices % 2 == 0, 1.0, 0.5)  # (p_min / p_i)^1
    torch.testing.assert_close(batch.weights, expected)


def test_tree_is_consistent_after_wrap_around() -> None:
    buffer = prioritized(5, 2, 0.99, alpha=1.0, eps=1.0)
    fill(buffer, 5)
    buffer.update_priorities(torch.arange(5), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))  # p = 2..6
    fill(buffer, 7, start=5)  # wraps: slots 0..4 then 0, 1 again; newest transitions 7..11
    tree = buffer.sampler.tree
    assert_tree_consistent(tree)
    np.testing.assert_array_equal(tree.leaves, [6.0] * 5)  # every slot rewritten at max priority 6
    assert len(buffer) == 5
    assert sorted(buffer.storage.obs[:, 0, 0].tolist()) == [7, 8, 9, 10, 11]  # slot, row of one, feature
    for _ in range(200):
        batch = buffer.sample(16)
        buffer.update_priorities(batch.indices, torch.randn(16) * 3)
        fill(buffer, 3, start=12)
    assert_tree_consistent(tree)
    assert tree.total == pytest.approx(tree.leaves.sum(), rel=1e-12)


def test_non_finite_td_errors_are_refused() -> None:
    buffer = prioritized(5, 2, 0.99)
    fill(buffer, 5)
    with pytest.raises(ValueError, match="non-finite"):
        buffer.update_priorities(torch.tensor([0]), torch.tensor([float("nan")]))


@pytest.mark.parametrize(
    "params",
    [{"alpha": -0.1}, {"beta": 1.5}, {"beta": -0.1}, {"eps": 0.0}, {"total_steps": 0}, {"total_steps": 2.5}],
)
def test_bad_params_raise_value_error(params: dict) -> None:
    with pytest.raises(ValueError):
        prioritized(10, 2, 0.99, **params)


def test_update_accepts_td_errors_still_attached_to_the_graph() -> None:
    buffer = prioritized(5, 2, 0.99, alpha=1.0, eps=0.5)
    fill(buffer, 5)
    td = torch.tensor([1.5, 0.5], requires_grad=True) * 1.0
    buffer.update_priorities(torch.tensor([0, 1]), td)
    np.testing.assert_array_equal(buffer.sampler.tree.get(np.array([0, 1])), [2.0, 1.0])
