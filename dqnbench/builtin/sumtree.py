"""A sum tree: O(log N) proportional sampling over changing priorities.

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
"""

from __future__ import annotations

import numpy as np


class SumTree:
    """Priorities of ``capacity`` slots with vectorised prefix-sum search."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.depth = max(0, int(np.ceil(np.log2(capacity))))
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
        children, level by level up to the root. A parent listed twice is
        written twice with the same sum (its children are final by then), so
        no deduplication is needed.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if indices.shape != priorities.shape:
            raise ValueError(f"{indices.size} indices but {priorities.size} priorities")
        if indices.size == 0:
            return
        self._check_indices(indices)
        if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
            raise ValueError("priorities must be finite and non-negative")
        if indices.size > 1:  # keep each slot's last priority (NumPy leaves repeated writes unordered)
            _, last_from_end = np.unique(indices[::-1], return_index=True)
            keep = indices.size - 1 - last_from_end
            indices, priorities = indices[keep], priorities[keep]
        nodes = self.nodes
        parents = self.first_leaf + indices
        nodes[parents] = priorities
        for _ in range(self.depth):
            parents >>= 1
            left = parents << 1
            nodes[parents] = nodes[left] + nodes[left + 1]

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slot of each ``value`` in ``[0, total)``: the leaf whose prefix-sum interval holds it.

        Leaf ``i`` owns ``[Σ_{j<i} p_j, Σ_{j≤i} p_j)``, so a uniform value picks
        slot ``i`` with probability ``p_i / total``. A walk never enters a
        subtree of zero sum, so rounding at an interval edge cannot select a
        zero-priority slot (an empty slot or a padding leaf).
        """
        if self.total <= 0.0:
            raise ValueError("cannot sample from a sum tree whose total priority is 0")
        values = np.array(values, dtype=np.float64).reshape(-1)
        nodes = np.ones(values.shape, dtype=np.int64)
        tree = self.nodes
        for _ in range(self.depth):
            left = nodes << 1
            left_sum = tree[left]
            go_right = (values >= left_sum) & (tree[left + 1] > 0.0)
            values -= left_sum * go_right
            nodes = left + go_right
        return nodes - self.first_leaf

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
