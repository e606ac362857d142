"""Sum trees: O(log N) proportional sampling over changing priorities.

The data structure behind proportional prioritised replay (Schaul et al. 2016,
"Prioritized Experience Replay", appendix B.2.1). Every internal node holds the
sum of its two children, so the root is the total priority and a value
``u ∈ [0, total)`` finds the leaf whose prefix-sum interval contains it by one
walk from the root.

The tree is a flat ``float64`` array in heap order: the root at index 1, node
``i`` has children ``2i`` and ``2i + 1``, and the ``2^depth ≥ capacity`` leaves
sit at ``[2^depth, 2^depth + capacity)``; padding leaves stay 0. Because every
leaf is at the same depth, a whole batch descends together, one NumPy step per
level, and a batch of priority updates climbs together the same way: no Python
loop over samples. Parents are recomputed from their children, never adjusted
by deltas, so rounding errors do not accumulate however many updates happen.

:class:`SumTree` is one such tree; :class:`SumTrees` holds K of them (one per
lock-step member) as the K subtrees of one bigger heap, so the same two walks
(:func:`find_leaves`, :func:`climb`) serve both with no per-member offsets.
"""

from __future__ import annotations

import numpy as np


def descend(pairs: np.ndarray, nodes: np.ndarray, values: np.ndarray, levels: int, guarded: bool) -> np.ndarray:
    """Walk every ``values`` entry ``levels`` levels down from its node; return the nodes reached.

    ``pairs`` is the heap viewed as rows ``(2i, 2i + 1)``: row ``i`` holds node
    ``i``'s two children, so one ``take`` fetches both. At each node a value
    goes right when it lies beyond the left child's sum (and is reduced by it),
    so it ends at the leaf whose prefix-sum interval holds it. ``guarded`` also
    refuses to enter a right subtree of zero sum, which rounding at an interval
    edge could otherwise pick. ``nodes`` and ``values`` are consumed (modified in place).
    """
    for _ in range(levels):
        kids = pairs.take(nodes, axis=0)
        left_sum = kids[..., 0]
        go_right = values >= left_sum
        if guarded:
            go_right &= kids[..., 1] > 0.0
        values -= left_sum * go_right
        nodes <<= 1
        nodes |= go_right
    return nodes


def find_leaves(tree: np.ndarray, roots: np.ndarray, values: np.ndarray, levels: int) -> np.ndarray:
    """Leaf node of each value walked down from its root: the leaf whose prefix-sum interval holds it.

    A walk never ends on a zero-priority leaf (an empty slot or padding): the
    fast unguarded walk can only do so by entering a zero-sum subtree, so the
    rare walks that end on one are redone guarded, which gives exactly the
    guarded walk's answer while skipping two of its eight NumPy operations per level.
    """
    pairs = tree.reshape(-1, 2)
    nodes = descend(pairs, roots.astype(np.int64), values.astype(np.float64), levels, guarded=False)
    empty = tree.take(nodes) <= 0.0
    if empty.any():
        nodes[empty] = descend(pairs, roots[empty].astype(np.int64), values[empty].astype(np.float64), levels, True)
    return nodes


def climb(tree: np.ndarray, nodes: np.ndarray, levels: int) -> None:
    """Recompute the ``levels`` ancestors of the same-depth ``nodes`` from their children, level by level.

    A parent listed twice is written twice with the same sum (its children are
    final by then), so no deduplication is needed. Once a level has no more
    nodes than there are parents to write, that level and those above it are
    recomputed whole, with one contiguous add each instead of gathers and a
    scatter (for K members × B updates that is the trees' top ``log2 B`` levels).
    """
    pairs = tree.reshape(-1, 2)
    parents = np.array(nodes, dtype=np.int64).reshape(-1)
    if parents.size == 0:
        return
    depth = int(parents[0]).bit_length() - 1  # heap level of the nodes: level d spans [2^d, 2^(d+1))
    for level in range(depth - 1, depth - 1 - levels, -1):
        first = 1 << level
        if first <= parents.size:
            for whole in range(level, depth - 1 - levels, -1):
                lo, hi = 1 << whole, 2 << whole
                np.add(pairs[lo:hi, 0], pairs[lo:hi, 1], out=tree[lo:hi])
            return
        parents >>= 1
        kids = pairs.take(parents, axis=0)
        tree[parents] = kids[:, 0] + kids[:, 1]


def last_occurrences(keys: np.ndarray) -> np.ndarray:
    """Positions of each distinct key's last occurrence: a batch update's duplicates keep their last value.

    NumPy leaves the order of repeated fancy-index writes unspecified, so the
    last write is picked explicitly.
    """
    _, last_from_end = np.unique(keys[::-1], return_index=True)
    return keys.size - 1 - last_from_end


def _tree_depth(capacity: int) -> int:
    return max(0, int(np.ceil(np.log2(capacity))))


class SumTree:
    """Priorities of ``capacity`` slots with vectorised prefix-sum search."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.depth = _tree_depth(capacity)
        self.first_leaf = 1 << self.depth
        self.nodes = np.zeros(2 * self.first_leaf, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all priorities (the root)."""
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        """The ``capacity`` slot priorities (a view: read, don't write)."""
        return self.nodes[self.first_leaf : self.first_leaf + self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities of slots ``indices``."""
        return self.nodes[self.first_leaf + np.asarray(indices, dtype=np.int64)]

    def set_one(self, index: int, priority: float) -> None:
        """Set one slot's priority: the per-``add`` fast path (a scalar walk to the root)."""
        if not 0 <= index < self.capacity:
            raise IndexError(f"slot index must be in [0, {self.capacity}), got {index}")
        node = self.first_leaf + int(index)
        nodes = self.nodes
        nodes[node] = priority
        node >>= 1
        while node:
            nodes[node] = nodes[2 * node] + nodes[2 * node + 1]
            node >>= 1

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of slots ``indices`` (a batch; duplicates: the last one wins).

        Leaves are written at once, then the parents are recomputed from their
        children, level by level up to the root (:func:`climb`).
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if indices.shape != priorities.shape:
            raise ValueError(f"{indices.size} indices but {priorities.size} priorities")
        if indices.size == 0:
            return
        self._check_indices(indices)
        _check_priorities(priorities)
        if indices.size > 1:
            keep = last_occurrences(indices)
            indices, priorities = indices[keep], priorities[keep]
        leaves = self.first_leaf + indices
        self.nodes[leaves] = priorities
        climb(self.nodes, leaves, self.depth)

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slot of each ``value`` in ``[0, total)``: the leaf whose prefix-sum interval holds it.

        Leaf ``i`` owns ``[Σ_{j<i} p_j, Σ_{j≤i} p_j)``, so a uniform value picks
        slot ``i`` with probability ``p_i / total``; zero-priority slots are
        never returned (:func:`find_leaves`).
        """
        if self.total <= 0.0:
            raise ValueError("cannot sample from a sum tree whose total priority is 0")
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        roots = np.ones(values.shape, dtype=np.int64)
        return find_leaves(self.nodes, roots, values, self.depth) - self.first_leaf

    def sample_stratified(self, batch_size: int) -> np.ndarray:
        """``batch_size`` slots drawn ∝ priority, one uniform draw per equal segment of the total.

        Stratification (Schaul et al. 2016, B.2.1) keeps each batch's slots
        spread over the whole priority mass while each draw's marginal stays
        proportional. Uses NumPy's global RNG, which the runner seeds.
        """
        segment = self.total / batch_size
        values = (np.arange(batch_size) + np.random.random(batch_size)) * segment
        return self.find(values)

    def _check_indices(self, indices: np.ndarray) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(f"slot indices must be in [0, {self.capacity}), got {indices.min()}..{indices.max()}")


class SumTrees:
    """K independent sum trees of ``capacity`` slots each (one per lock-step member), walked together.

    Layout: with ``M = 2^⌈log2 K⌉`` and ``L = 2^depth`` leaves per member, the
    K trees are the subtrees rooted at heap nodes ``M + k`` of one flat heap of
    ``2·M·L`` nodes. Member ``k``'s slot ``i`` is leaf ``M·L + k·L + i``; its
    tree's level ``l`` is row ``k`` of the ``(M, 2^l)`` block at ``M·2^l``, so
    level by level it *is* a members × nodes array, and the ordinary heap
    arithmetic (children ``2g``, ``2g + 1``) walks every member at once without
    per-member offsets. Heap nodes above level ``log2 M`` (sums across members)
    are never used. :class:`SumTree` is the ``K = 1`` case of this layout.
    """

    def __init__(self, members: int, capacity: int) -> None:
        if members <= 0:
            raise ValueError(f"members must be positive, got {members}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.members, self.capacity = members, capacity
        self.depth = _tree_depth(capacity)
        self.leaves_per_member = 1 << self.depth
        self.padded_members = 1 << _tree_depth(members)
        self.first_leaf = self.padded_members * self.leaves_per_member
        self.nodes = np.zeros(2 * self.first_leaf, dtype=np.float64)
        self.roots = self.padded_members + np.arange(members, dtype=np.int64)
        #: heap node of slot 0 of each member, shape ``(K, 1)`` to broadcast against ``(K, B)`` slots
        self.leaf_base = (self.first_leaf + np.arange(members, dtype=np.int64) * self.leaves_per_member)[:, None]

    @property
    def totals(self) -> np.ndarray:
        """Each member's total priority ``(K,)`` (its root; a view: read, don't write)."""
        return self.nodes[self.padded_members : self.padded_members + self.members]

    @property
    def leaves(self) -> np.ndarray:
        """Slot priorities ``(K, capacity)`` (a view: read, don't write)."""
        block = self.nodes[self.first_leaf : self.first_leaf + self.members * self.leaves_per_member]
        return block.reshape(self.members, self.leaves_per_member)[:, : self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities ``(K, B)`` of each member's slots ``indices (K, B)``."""
        return self.nodes.take(self.leaf_base + indices)

    def set_slots(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set slots ``indices (m,)`` of every member to ``priorities (K, m)``: the per-``add`` path.

        Members step together, so an ``add`` writes the same slot of every
        member; one climb of ``K·m`` nodes updates all K trees.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(1, -1)
        self._check_indices(indices)
        leaves = (self.leaf_base + indices).reshape(-1)
        self.nodes[leaves] = np.broadcast_to(priorities, (self.members, indices.size)).reshape(-1)
        climb(self.nodes, leaves, self.depth)

    def update(self, indices: np.ndarray, priorities: np.ndarray, members: np.ndarray | None = None) -> None:
        """Set slot priorities, duplicates within a member: the last one wins.

        Without ``members``, ``indices`` and ``priorities`` are ``(K, B)``:
        row ``k`` is member ``k``'s. With ``members``, all three are flat and
        entry ``j`` sets member ``members[j]``'s slot ``indices[j]``, so a
        caller can leave out any entries (a diverged member's row).
        """
        indices = np.asarray(indices, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        if members is None:
            if indices.shape != priorities.shape or indices.ndim != 2 or indices.shape[0] != self.members:
                raise ValueError(
                    f"indices {indices.shape} and priorities {priorities.shape} must be ({self.members}, B)"
                )
            leaf_base = self.leaf_base
        else:
            members = np.asarray(members, dtype=np.int64)
            if not members.shape == indices.shape == priorities.shape or members.ndim != 1:
                raise ValueError(f"{members.shape} members, {indices.shape} indices, {priorities.shape} priorities")
            if members.size and (members.min() < 0 or members.max() >= self.members):
                raise IndexError(f"members must be in [0, {self.members}), got {members.min()}..{members.max()}")
            leaf_base = self.leaf_base[members, 0]
        if indices.size == 0:
            return
        self._check_indices(indices)
        _check_priorities(priorities)
        leaves = (leaf_base + indices).reshape(-1)
        priorities = priorities.reshape(-1)
        if leaves.size > 1:
            keep = last_occurrences(leaves)
            leaves, priorities = leaves[keep], priorities[keep]
        self.nodes[leaves] = priorities
        climb(self.nodes, leaves, self.depth)

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slots ``(K, B)``: member ``k``'s leaf whose prefix-sum interval holds ``values[k, b] ∈ [0, totals[k])``."""
        if np.any(self.totals <= 0.0):
            raise ValueError("cannot sample from a sum tree whose total priority is 0")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != self.members:
            raise ValueError(f"values must have shape ({self.members}, B), got {values.shape}")
        roots = np.repeat(self.roots[:, None], values.shape[1], axis=1)
        return find_leaves(self.nodes, roots, values, self.depth) - self.leaf_base

    def sample_stratified(self, batch_size: int) -> np.ndarray:
        """``(K, batch_size)`` slots, each member's drawn ∝ its priorities, one draw per segment of its total.

        All ``K·B`` walks descend together (Schaul et al. 2016, B.2.1, per member).
        Uses NumPy's global RNG, which the runner seeds.
        """
        segments = self.totals[:, None] / batch_size
        values = (np.arange(batch_size) + np.random.random((self.members, batch_size))) * segments
        return self.find(values)

    def _check_indices(self, indices: np.ndarray) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(f"slot indices must be in [0, {self.capacity}), got {indices.min()}..{indices.max()}")


def _check_priorities(priorities: np.ndarray) -> None:
    if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
        raise ValueError("priorities must be finite and non-negative")
