"""Lock-step ``prioritized`` and ``nstep`` replays: K members in one buffer, each like its own single-run buffer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import dqnbench
from dqnbench.builtin.nstep import nstep
from dqnbench.builtin.prioritized import prioritized
from dqnbench.builtin.sumtree import BLOCK, SumTree
from dqnbench.plugin.checks import check_batch
from dqnbench.plugin.obs import ObsSpec

FIELDS = {  # Batch field → (dtype, shape given K, B, obs_dim)
    "obs": (torch.float32, lambda k, b, d: (k, b, d)),
    "actions": (torch.int64, lambda k, b, d: (k, b)),
    "rewards": (torch.float32, lambda k, b, d: (k, b)),
    "next_obs": (torch.float32, lambda k, b, d: (k, b, d)),
    "terminated": (torch.bool, lambda k, b, d: (k, b)),
    "weights": (torch.float32, lambda k, b, d: (k, b)),
    "indices": (torch.int64, lambda k, b, d: (k, b)),
    "discounts": (torch.float32, lambda k, b, d: (k, b)),
}

BUFFERS = {
    "prioritized": lambda k, cap, gamma, **kw: prioritized(cap, 2, gamma, members=k, **kw),
    "nstep": lambda k, cap, gamma, **kw: nstep(cap, 2, gamma, n=3, members=k, **kw),
    "nstep-prioritized": lambda k, cap, gamma, **kw: nstep(cap, 2, gamma, n=3, prioritized=True, members=k, **kw),
}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


def assert_trees_consistent(trees: SumTree) -> None:
    """Heap leaves are the block sums, every member-tree node the sum of its children, padding 0, totals = Σ."""
    nodes = trees.nodes
    internal = np.arange(trees.padded_members, trees.first_leaf)
    np.testing.assert_array_equal(nodes[internal], nodes[2 * internal] + nodes[2 * internal + 1])
    heap_leaves = nodes[trees.first_leaf :].reshape(trees.padded_members, trees.leaves_per_member)
    block_sums = trees.priorities.reshape(trees.members, trees.blocks, BLOCK).sum(axis=-1, dtype=np.float64)
    np.testing.assert_array_equal(heap_leaves[: trees.members, : trees.blocks], block_sums)
    assert np.all(heap_leaves[:, trees.blocks :] == 0) and np.all(heap_leaves[trees.members :] == 0)
    assert np.all(trees.priorities[:, trees.capacity :] == 0)
    np.testing.assert_allclose(trees.total, trees.leaves.sum(axis=1, dtype=np.float64), rtol=1e-12)


def tagged_add(buffer, t: int, members: int, done_at: dict[int, str] | None = None) -> None:
    """Step ``t`` for every member: obs ``(k, t)``, action k, reward ``k + 1``; ``done_at[k]`` ends k's episode."""
    k = np.arange(members, dtype=np.float32)
    obs = np.stack([k, np.full(members, t, dtype=np.float32)], axis=1)
    next_obs = obs + np.array([0.0, 1.0], dtype=np.float32)
    done_at = done_at or {}
    terminated = np.array([done_at.get(m) == "terminated" for m in range(members)])
    truncated = np.array([done_at.get(m) == "truncated" for m in range(members)])
    buffer.add(obs, np.arange(members), k + 1.0, next_obs, terminated, truncated)


def member_rows(batch, k: int) -> dict[str, torch.Tensor]:
    return {field: getattr(batch, field)[k] for field in FIELDS}


# --- every buffer: shapes, own streams, diverged members ----------------------


@pytest.mark.parametrize("name", BUFFERS)
def test_batch_fields_have_the_contract_dtypes_and_shapes(name: str) -> None:
    buffer = BUFFERS[name](3, 50, 0.9)
    for t in range(20):
        tagged_add(buffer, t, 3, {1: "terminated"} if t % 7 == 6 else None)
    batch = buffer.sample(8)
    for field, (dtype, shape) in FIELDS.items():
        tensor = getattr(batch, field)
        assert (tensor.dtype, tuple(tensor.shape)) == (dtype, shape(3, 8, 2)), field
    assert len(buffer) == (20 if name == "prioritized" else 18)  # n-step: the newest n − 1 are not sampleable
    check_batch(batch, 3, 8, ObsSpec(2))  # what train_lockstep checks


@pytest.mark.parametrize("name", BUFFERS)
def test_each_member_samples_only_its_own_transitions(name: str) -> None:
    """Member k's obs, next_obs and actions carry k; its episodes end at other steps than the others'."""
    members = 4
    buffer = BUFFERS[name](members, 40, 0.9)  # capacity 40 < 100 steps: wrap-around too
    for t in range(100):
        ends = {k: ("terminated", "truncated")[t % 2] for k in range(members) if t % (3 + k) == 2 + k}
        tagged_add(buffer, t, members, ends)
        if t >= 20:
            batch = buffer.sample(16)
            buffer.update_priorities(batch.indices, torch.randn(members, 16))
    for _ in range(20):
        batch = buffer.sample(16)
        for k in range(members):
            rows = member_rows(batch, k)
            assert torch.all(rows["obs"][:, 0] == k) and torch.all(rows["next_obs"][:, 0] == k)
            assert torch.all(rows["actions"] == k)
            assert torch.all(rows["obs"][:, 1] >= 60)  # only the ring's last 40 steps remain
        buffer.update_priorities(batch.indices, torch.rand(members, 16) * (torch.arange(members)[:, None] + 1))


@pytest.mark.parametrize("name", ["prioritized", "nstep-prioritized"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_td_errors_of_one_member_leave_the_others_updated(name: str, bad: float) -> None:
    buffer = BUFFERS[name](3, 20, 0.9, alpha=1.0, eps=0.5)
    for t in range(10):
        tagged_add(buffer, t, 3)
    trees = buffer.sampler.tree
    before = trees.leaves.copy()
    batch = buffer.sample(4)
    td = torch.full((3, 4), 2.5)  # priority 3
    td[1, 2] = bad
    buffer.update_priorities(batch.indices, td)  # must not raise
    idx = batch.indices.numpy()
    for k in (0, 2):
        np.testing.assert_array_equal(trees.leaves[k, idx[k]], 3.0)
    np.testing.assert_array_equal(trees.leaves[1], before[1])  # the diverged member's row is skipped whole
    np.testing.assert_array_equal(buffer.sampler.max_priority, [3.0, 1.0, 3.0])
    assert_trees_consistent(trees)
    buffer.update_priorities(batch.indices, torch.full((3, 4), bad))  # every member diverged: still no error
    assert_trees_consistent(trees)


# --- the member sum trees ----------------------------------------------------


@pytest.mark.parametrize("capacity", [37, 1000])
def test_member_trees_find_like_one_sum_tree_each(capacity: int) -> None:
    """3 members (padded to 4), one block or 16 (the last partial): each member's walk equals its own SumTree's."""
    trees, singles = SumTree(capacity, members=3), [SumTree(capacity) for _ in range(3)]
    priorities = np.random.random((3, capacity)) * np.array([[1.0], [10.0], [0.1]])
    priorities[1, ::3] = 0.0  # empty slots must never be found
    for slot in range(capacity):  # the per-add path: one slot of every member at a time
        trees.set_one(slot, priorities[:, slot])
    for k, single in enumerate(singles):
        single.update(np.arange(capacity), priorities[k])
    assert_trees_consistent(trees)
    np.testing.assert_allclose(trees.total, [s.total for s in singles], rtol=1e-12)
    values = np.random.random((3, 500)) * trees.total[:, None]
    values[:, :2] = [0.0, 1e9]  # the edges: first slot, and beyond the total
    found = trees.find(values)
    for k, single in enumerate(singles):
        np.testing.assert_array_equal(found[k], single.find(values[k]))
    assert np.all(priorities[1, found[1]] > 0)


@pytest.mark.parametrize("capacity", [13, 200])
def test_member_trees_stay_consistent_after_many_updates(capacity: int) -> None:
    trees = SumTree(capacity, members=5)
    for _ in range(300):
        members = np.random.randint(0, 5, size=40)
        indices = np.random.randint(0, capacity, size=40)  # with duplicates
        trees.update(indices, np.random.random(40) * 10, members)
        trees.set_one(np.random.randint(capacity), np.random.random(5))
    assert_trees_consistent(trees)


def test_member_tree_update_last_duplicate_wins() -> None:
    trees = SumTree(6, members=2)
    trees.update(np.array([1, 1, 1, 4]), np.array([5.0, 7.0, 3.0, 2.0]), members=np.array([0, 1, 0, 1]))
    np.testing.assert_array_equal(trees.leaves[:, [1, 4]], [[3.0, 0.0], [7.0, 2.0]])
    np.testing.assert_array_equal(trees.total, [3.0, 9.0])


# --- prioritized --------------------------------------------------------------


def test_one_member_draws_exactly_what_the_single_run_buffer_draws() -> None:
    """K = 1 consumes NumPy's RNG as the single-run buffer does: same seed, same indices and weights."""
    single, lock = prioritized(16, 2, 0.9, total_steps=50), prioritized(16, 2, 0.9, total_steps=50, members=1)
    for t in range(30):
        obs, next_obs = np.array([[0.0, t]], np.float32), np.array([[0.0, t + 1]], np.float32)
        for buffer in (single, lock):  # the same row of one: only the sampled shapes differ
            buffer.add(obs, np.array([0]), np.array([1.0]), next_obs, np.array([t % 5 == 4]), np.array([False]))
        if t >= 8:
            np.random.seed(t)
            a = single.sample(8)
            np.random.seed(t)
            b = lock.sample(8)
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(y[0], x)
            td = torch.randn(8)
            single.update_priorities(a.indices, td)
            lock.update_priorities(b.indices, td[None])
    np.testing.assert_array_equal(lock.sampler.tree.leaves[0], single.sampler.tree.leaves)


def test_members_keep_their_own_priorities_like_independent_buffers() -> None:
    """Member k fed the stream and TD errors of single-run buffer k ends with the same tree (wrap-around too)."""
    members, capacity = 3, 10
    lock = prioritized(capacity, 2, 0.9, alpha=0.7, members=members)
    singles = [prioritized(capacity, 2, 0.9, alpha=0.7) for _ in range(members)]
    for t in range(35):
        tagged_add(lock, t, members)
        for k, single in enumerate(singles):
            obs = np.array([[k, t]], np.float32)
            single.add(obs, np.array([k]), np.array([k + 1.0]), obs + [0.0, 1.0], np.zeros(1, bool), np.zeros(1, bool))
        if t >= 4:
            batch = lock.sample(6)
            td = torch.randn(members, 6) * torch.tensor([[0.1], [1.0], [10.0]])
            lock.update_priorities(batch.indices, td)
            for k, single in enumerate(singles):
                single.update_priorities(batch.indices[k], td[k])
    trees = lock.sampler.tree
    for k, single in enumerate(singles):
        np.testing.assert_allclose(trees.leaves[k], single.sampler.tree.leaves, rtol=1e-12)
        assert lock.sampler.max_priority[k] == pytest.approx(single.sampler.max_priority)
        np.testing.assert_array_equal(lock.storage.obs[:, k], single.storage.obs[:, 0])
    assert_trees_consistent(trees)


def test_sampling_frequencies_per_member_match_priority_to_the_alpha() -> None:
    """P_k(i) = p_ki^α / Σ_i p_ki^α. 400 batches of 64 = 25 600 draws per member: standard error
    ≤ √(.25/25 600) ≈ 0.0031 per frequency, so the 0.015 absolute tolerance is > 4.5 σ."""
    members = 3
    buffer = prioritized(8, 2, 0.99, alpha=0.6, eps=1e-6, members=members)
    for t in range(8):
        tagged_add(buffer, t, members)
    td = np.array([[0.1, 2.0, -0.5, 4.0, 1.0, -3.0, 0.05, 1.5], [5.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], [1.0] * 8])
    buffer.update_priorities(torch.arange(8).repeat(members, 1), torch.tensor(td))
    expected = (np.abs(td) + 1e-6) ** 0.6
    expected /= expected.sum(axis=1, keepdims=True)
    counts = np.zeros((members, 8))
    for _ in range(400):
        indices = buffer.sample(64).indices.numpy()
        for k in range(members):
            counts[k] += np.bincount(indices[k], minlength=8)
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), expected, atol=0.015)


def test_weights_by_hand_normalised_per_member() -> None:
    """α = 1, ε = 0.5. Member 0: δ = (0.5, 1.5, 3.5, 7.5) → p = (1, 2, 4, 8); member 1 the reverse; member 2 all 3.

    P = p / Σp, N = 4. With 64 stratified draws every slot is drawn, so each
    member's batch max is its smallest-p slot: w_i = (p_min / p_i)^β, all 1 for
    member 2 (whose raw weights (4 · 1/4)^-β = 1 are below member 0's largest:
    normalising by the batch's overall max instead would scale them down).
    """
    buffer = prioritized(10, 2, 0.99, alpha=1.0, beta=0.5, eps=0.5, members=3)
    for t in range(4):
        tagged_add(buffer, t, 3)
    td = torch.tensor([[0.5, -1.5, 3.5, 7.5], [7.5, 3.5, -1.5, 0.5], [2.5] * 4])
    buffer.update_priorities(torch.arange(4).repeat(3, 1), td)
    batch = buffer.sample(64)
    p = {0: [1.0, 2.0, 4.0, 8.0], 1: [8.0, 4.0, 2.0, 1.0], 2: [3.0] * 4}
    for k in range(3):
        assert set(batch.indices[k].tolist()) == {0, 1, 2, 3}
        expected = torch.tensor([(min(p[k]) / p[k][i]) ** 0.5 for i in batch.indices[k].tolist()])
        torch.testing.assert_close(batch.weights[k], expected)
    torch.testing.assert_close(batch.discounts, torch.full((3, 64), 0.99))


def test_new_transitions_get_each_members_max_priority() -> None:
    buffer = prioritized(10, 2, 0.99, alpha=1.0, eps=0.5, members=2)
    for t in range(3):
        tagged_add(buffer, t, 2)
    np.testing.assert_array_equal(buffer.sampler.tree.leaves[:, :3], np.ones((2, 3)))
    buffer.update_priorities(torch.tensor([[0, 1], [0, 1]]), torch.tensor([[4.5, 0.5], [1.5, 0.0]]))  # p 5 and 2
    tagged_add(buffer, 3, 2)
    np.testing.assert_array_equal(buffer.sampler.tree.leaves[:, 3], [5.0, 2.0])


def test_beta_anneals_over_add_calls_like_the_single_buffer() -> None:
    lock, single = prioritized(10, 2, 0.99, total_steps=8, members=2), prioritized(10, 2, 0.99, total_steps=8)
    for t in range(10):
        tagged_add(lock, t, 2)
        tagged_add(single, t, 1)
        assert lock.beta == pytest.approx(single.beta)
    assert lock.beta == pytest.approx(1.0)


def test_tree_is_consistent_after_wrap_around() -> None:
    buffer = prioritized(5, 2, 0.99, alpha=1.0, eps=1.0, members=3)
    for t in range(5):
        tagged_add(buffer, t, 3)
    td = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5, [9.0, 0.0, 0.0, 0.0, 0.0]])
    buffer.update_priorities(torch.arange(5).repeat(3, 1), td)  # max priorities 6, 1, 10
    for t in range(5, 12):  # wraps: slots 0..4 then 0, 1 again
        tagged_add(buffer, t, 3)
    trees = buffer.sampler.tree
    assert_trees_consistent(trees)
    np.testing.assert_array_equal(trees.leaves, [[6.0] * 5, [1.0] * 5, [10.0] * 5])
    assert len(buffer) == 5 and sorted(buffer.storage.obs[:, 2, 1].tolist()) == [7, 8, 9, 10, 11]
    for t in range(12, 200):
        batch = buffer.sample(16)
        buffer.update_priorities(batch.indices, torch.randn(3, 16) * 3)
        tagged_add(buffer, t, 3)
    assert_trees_consistent(trees)


# --- nstep ------------------------------------------------------------------

#: Two members, 9 env steps, γ = 0.5, n = 3: (obs tag, reward, next_obs tag, how the step ends)
STREAMS = [
    [  # member 0: terminates at step 3, truncated at step 5, then still running
        (0, 1, 1, None),
        (1, 2, 2, None),
        (2, 4, 3, None),
        (3, 8, 4, "terminated"),
        (100, 16, 101, None),
        (101, 32, 102, "truncated"),
        (200, 1000, 201, None),
        (201, 2000, 202, None),
        (202, 4000, 203, None),
    ],
    [  # member 1: a one-step truncated episode, terminations at steps 2 and 6
        (10, 1, 11, "truncated"),
        (20, 2, 21, None),
        (21, 4, 22, "terminated"),
        (30, 8, 31, None),
        (31, 16, 32, None),
        (32, 32, 33, None),
        (33, 64, 34, "terminated"),
        (40, 128, 41, None),
        (41, 256, 42, None),
    ],
]

#: by hand: obs tag → (n-step return, next_obs tag, terminated, discount γ^k)
EXPECTED = [
    {
        0: (1 + 0.5 * 2 + 0.25 * 4, 3, False, 0.125),  # full window: bootstrap from s3 with γ³
        1: (2 + 0.5 * 4 + 0.25 * 8, 4, True, 0.125),  # the window ends exactly at the termination
        2: (4 + 0.5 * 8, 4, True, 0.25),  # k = 2
        3: (8, 4, True, 0.5),  # k = 1
        100: (16 + 0.5 * 32, 102, False, 0.25),  # truncated: bootstrap from its last next_obs, γ²
        101: (32, 102, False, 0.5),
        200: (1000 + 0.5 * 2000 + 0.25 * 4000, 203, False, 0.125),
    },
    {
        10: (1, 11, False, 0.5),  # a truncated one-step episode
        20: (2 + 0.5 * 4, 22, True, 0.25),
        21: (4, 22, True, 0.5),
        30: (8 + 0.5 * 16 + 0.25 * 32, 33, False, 0.125),
        31: (16 + 0.5 * 32 + 0.25 * 64, 34, True, 0.125),
        32: (32 + 0.5 * 64, 34, True, 0.25),
        33: (64, 34, True, 0.5),
    },
]


def feed(buffer, streams: list[list[tuple]], t: int) -> None:
    """Step ``t`` of every member's stream (obs tagged in both coordinates, action = member)."""
    rows = [stream[t] for stream in streams]
    obs = np.array([[tag, -tag] for tag, _, _, _ in rows], dtype=np.float32)
    next_obs = np.array([[tag, -tag] for _, _, tag, _ in rows], dtype=np.float32)
    rewards = np.array([r for _, r, _, _ in rows], dtype=np.float32)
    terminated = np.array([end == "terminated" for *_, end in rows])
    truncated = np.array([end == "truncated" for *_, end in rows])
    buffer.add(obs, np.arange(len(rows)), rewards, next_obs, terminated, truncated)


def sampleable(buffer) -> np.ndarray:
    """Every sampleable slot, oldest first, for each member ``(K, len)``."""
    storage = buffer.storage
    oldest = (storage.cursor - storage.size) % storage.capacity
    slots = (oldest + np.arange(len(buffer))) % storage.capacity
    return np.tile(slots, (buffer.members, 1))


def nstep_rows(buffer) -> list[dict[float, tuple]]:
    """Each member's sampleable n-step transitions: obs tag → (return, next_obs tag, terminated, discount)."""
    obs, _, rewards, next_obs, terminated, discounts = buffer.nstep(sampleable(buffer))
    return [
        {
            float(obs[k, i, 0]): (
                float(rewards[k, i]),
                float(next_obs[k, i, 0]),
                bool(terminated[k, i]),
                float(discounts[k, i]),
            )
            for i in range(obs.shape[1])
        }
        for k in range(obs.shape[0])
    ]


@pytest.mark.parametrize("prioritized_", [False, True])
def test_nstep_returns_and_discounts_by_hand_around_episode_ends(prioritized_: bool) -> None:
    buffer = nstep(100, 2, 0.5, n=3, prioritized=prioritized_, members=2)
    for t in range(8):
        feed(buffer, STREAMS, t)
    # the newest n − 1 = 2 slots (steps 6, 7) are not sampleable yet, even where member 1's episode ended at 6
    assert len(buffer) == 6
    rows = nstep_rows(buffer)
    for k in range(2):
        expected = {tag: EXPECTED[k][tag] for tag in [s[0] for s in STREAMS[k][:6]]}
        assert rows[k] == expected  # powers of 2: exact in float32
    feed(buffer, STREAMS, 8)  # one more step: step 6 is complete for both members
    rows = nstep_rows(buffer)
    assert rows[0][200] == EXPECTED[0][200] and rows[1][33] == EXPECTED[1][33]


def reference_nstep(rewards: np.ndarray, ends: np.ndarray, t: int, n: int, gamma: float) -> tuple:
    """Step t's n-step transition by the definition: (return, last step taken, terminated, γ^k)."""
    total, j = 0.0, 0
    while True:
        total += gamma**j * float(rewards[t + j])
        if ends[t + j] or j == n - 1:
            return total, t + j, ends[t + j] == "terminated", gamma ** (j + 1)
        j += 1


def test_nstep_members_and_single_runs_match_the_definition_on_random_streams() -> None:
    """Members fed random episodes (random terminations and truncations, members ending at different
    steps) through a ring that wraps: every sampleable start is the n-step transition by definition, and a
    single-run buffer fed member k's stream (rows of one) holds exactly member k's."""
    members, n, gamma, steps, capacity = 4, 3, 0.9, 200, 64
    rng = np.random.default_rng(1)
    ends = rng.choice(["", "terminated", "truncated"], size=(steps, members), p=[0.8, 0.1, 0.1])
    ends[:, 0] = np.where(np.arange(steps) % 11 == 10, "truncated", "")  # member 0: time limits only
    rewards = rng.normal(size=(steps, members)).astype(np.float32)
    lock = nstep(capacity, 2, gamma, n=n, members=members)
    singles = [nstep(capacity, 2, gamma, n=n) for _ in range(members)]
    for t in range(steps):
        # obs (k, t); a finished episode's terminal obs is (k, t + 0.5), unlike the next reset obs (k, t + 1)
        obs = np.stack([np.arange(members), np.full(members, t)], axis=1).astype(np.float32)
        next_obs = obs + np.array([0.0, 1.0], np.float32)
        done = ends[t] != ""
        next_obs[done, 1] -= 0.5
        terminated, truncated = ends[t] == "terminated", ends[t] == "truncated"
        lock.add(obs, np.arange(members), rewards[t], next_obs, terminated, truncated)
        for k, single in enumerate(singles):
            single.add(obs[k : k + 1], np.array([k]), rewards[t, k : k + 1], next_obs[k : k + 1],
                       terminated[k : k + 1], truncated[k : k + 1])  # fmt: skip
    slots = sampleable(lock)
    fields = lock.nstep(slots)
    obs, actions, returns, boot, terminated, discounts = fields
    assert obs.shape[1] == capacity - (n - 1)
    for k, single in enumerate(singles):
        for i in range(obs.shape[1]):
            ret, last, term, discount = reference_nstep(rewards[:, k], ends[:, k], int(obs[k, i, 1]), n, gamma)
            assert float(returns[k, i]) == pytest.approx(ret, rel=1e-5, abs=1e-6)
            assert float(boot[k, i, 1]) == last + (0.5 if ends[last, k] else 1.0)
            assert (bool(terminated[k, i]), int(actions[k, i])) == (term, k)
            assert float(discounts[k, i]) == pytest.approx(discount, rel=1e-6)
        for mine, theirs in zip(single.nstep(slots[k : k + 1]), fields, strict=True):
            assert torch.equal(mine[0], theirs[k])


def test_nstep_uniform_samples_only_complete_windows() -> None:
    buffer = nstep(10, 2, 0.9, n=4, members=2)
    for t in range(3):
        tagged_add(buffer, t, 2)
    assert len(buffer) == 0  # no window of 4 steps yet
    for t in range(3, 25):  # wraps around a capacity of 10
        tagged_add(buffer, t, 2)
        steps_seen = buffer.sample(64).obs[:, :, 1]
        assert steps_seen.max() <= t - 3 and steps_seen.min() >= t - 9
    assert len(buffer) == 7


def test_prioritized_nstep_hides_open_windows_and_admits_them_at_max_priority() -> None:
    n = 3
    buffer = nstep(8, 2, 0.9, n=n, prioritized=True, alpha=1.0, eps=0.5, members=2)
    trees = buffer.sampler.tree
    for t in range(30):  # wraps around a capacity of 8 several times
        tagged_add(buffer, t, 2, {0: "terminated"} if t % 4 == 3 else None)
        newest = [(t - j) % 8 for j in range(n - 1)]
        assert np.all(trees.leaves[:, newest] == 0.0)  # open windows have no priority
        assert np.count_nonzero(trees.leaves[0]) == len(buffer)
        if len(buffer):
            batch = buffer.sample(32)
            assert batch.obs[:, :, 1].max() <= t - (n - 1)
            buffer.update_priorities(batch.indices, torch.full((2, 32), 3.5))  # p = 4, the new max
            assert np.all(trees.leaves[:, newest] == 0.0)
    tagged_add(buffer, 30, 2)
    np.testing.assert_array_equal(trees.leaves[:, (30 - (n - 1)) % 8], [4.0, 4.0])
    stale = torch.tensor([[30 % 8], [29 % 8]])  # slots of open windows: an update must not admit them
    buffer.update_priorities(stale, torch.full((2, 1), 10.0))
    assert np.all(trees.leaves[:, [30 % 8, 29 % 8]] == 0.0)
    assert_trees_consistent(trees)


def test_prioritized_nstep_weights_by_hand_per_member() -> None:
    """α = 1, ε = 0.5, n = 2 over 5 steps → 4 sampleable starts; member 0 p = (1, 2, 4, 8), member 1 all 2:
    member 0's weights are (1 / p)^β, member 1's all 1."""
    buffer = nstep(10, 2, 0.5, n=2, prioritized=True, alpha=1.0, beta=0.5, eps=0.5, members=2)
    for t in range(5):
        tagged_add(buffer, t, 2)
    buffer.update_priorities(torch.arange(4).repeat(2, 1), torch.tensor([[0.5, 1.5, 3.5, 7.5], [1.5] * 4]))
    batch = buffer.sample(64)
    assert set(batch.indices[0].tolist()) == {0, 1, 2, 3}
    torch.testing.assert_close(batch.weights[0], (2.0 ** batch.indices[0].double()) ** -0.5, check_dtype=False)
    torch.testing.assert_close(batch.weights[1], torch.ones(64))
    # rewards k + 1 every step, no episode end: a full 2-step window everywhere
    torch.testing.assert_close(batch.rewards, torch.tensor([[1.5], [3.0]]).expand(2, 64))
    torch.testing.assert_close(batch.discounts, torch.full((2, 64), 0.25))
    torch.testing.assert_close(batch.next_obs[:, :, 1], batch.obs[:, :, 1] + 2)


def test_nstep_one_is_one_step_replay() -> None:
    buffer = nstep(10, 2, 0.9, n=1, members=2)
    for t in range(6):
        tagged_add(buffer, t, 2, {1: "terminated"} if t == 2 else None)
    batch = buffer.sample(32)
    assert len(buffer) == 6
    torch.testing.assert_close(batch.rewards, torch.tensor([[1.0], [2.0]]).expand(2, 32))
    torch.testing.assert_close(batch.discounts, torch.full((2, 32), 0.9))
    torch.testing.assert_close(batch.next_obs[:, :, 1], batch.obs[:, :, 1] + 1)
    np.testing.assert_array_equal(batch.terminated[1].numpy(), batch.obs[1, :, 1].numpy() == 2)


@pytest.mark.parametrize(
    "params", [{"n": 0}, {"n": True}, {"prioritized": "yes"}, {"alpha": -1.0}, {"beta": 2.0}, {"capacity": 2}]
)
def test_nstep_lockstep_rejects_bad_params(params: dict) -> None:
    capacity = params.pop("capacity", 10)
    with pytest.raises(ValueError):
        nstep(capacity, 2, 0.99, **params, members=2)


def test_prioritized_lockstep_rejects_bad_params() -> None:
    with pytest.raises(ValueError):
        prioritized(10, 2, 0.99, eps=0.0, members=2)


# --- end to end ------------------------------------------------------------------


@pytest.mark.parametrize(
    "replay", ['name = "prioritized"', 'name = "nstep"\nprioritized = true', 'name = "nstep"\nn = 2']
)
def test_run_grid_trains_these_replays_in_lockstep(write_grid, tmp_path, replay: str) -> None:
    grid = write_grid(f"\n[replay]\n{replay}\n", steps=300, seeds=2)
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False
    )
    assert len(res.runs) == 2 and set(res.runs.status) == {"ok"}
    for run_id in res.runs.run_id:
        assert res.record(run_id)["lockstep"]["members"] == 2
    assert res.steps.groupby("run_id").loss.count().gt(0).all()  # they learned (past learning_starts)
