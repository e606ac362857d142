"""Sum trees: O(log N) proportional sampling over changing priorities, in ~4 bytes per slot.

The data structure behind proportional prioritised replay (Schaul et al. 2016,
"Prioritized Experience Replay", appendix B.2.1): a value ``u ∈ [0, total)``
picks the slot whose prefix-sum interval contains it, so each slot is drawn
with probability ``p_i / total``.

A textbook sum tree keeps ``2N`` float64 nodes: 16 bytes per slot, a third
again of a CartPole transition (45 bytes). Here the slot priorities are one
float32 array, cut into blocks of :data:`BLOCK` slots, and only the blocks'
sums form the tree: a flat ``float64`` heap (root at 1, node ``i``'s children
at ``2i`` and ``2i + 1``, the ``2^depth ≥ blocks`` block sums as its leaves,
padding 0). That is 4 bytes per slot plus ``16/BLOCK`` (1 byte at 16 slots a
block) instead of 16. A search walks the heap down to a block, then finds the
slot by a prefix sum over the block's priorities.

Every heap leaf sits at the same depth, so a whole batch descends together,
one NumPy step per level, and a batch of updates climbs together the same way:
no Python loop over samples. Block sums are recomputed from the block's
priorities and parents from their children, never adjusted by deltas, so
rounding errors do not accumulate however many updates happen.

:class:`SumTrees` holds K trees (one per lock-step member) as the K subtrees
of one bigger heap, so the same two walks (:func:`find_leaves`, :func:`climb`)
serve every member at once with no per-member offsets; :class:`SumTree` is
the one-member case with a scalar fast path for adding a transition.
"""

from __future__ import annotations

import numpy as np

#: slots per block: the heap costs 16/BLOCK bytes per slot, a search BLOCK additions
BLOCK = 16
#: the largest float32; priorities are stored as float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def descend(pairs: np.ndarray, nodes: np.ndarray, values: np.ndarray, levels: int, guarded: bool) -> np.ndarray:
    """Walk every ``values`` entry ``levels`` levels down from its node; return the nodes reached.

    ``pairs`` is the heap viewed as rows ``(2i, 2i + 1)``: row ``i`` holds node
    ``i``'s two children, so one ``take`` fetches both. At each node a value
    goes right when it lies beyond the left child's sum (and is reduced by it),
    so it ends at the leaf whose prefix-sum interval holds it, with its offset
    into that interval left in ``values``. ``guarded`` also refuses to enter a
    right subtree of zero sum, which rounding at an interval edge could
    otherwise pick. ``nodes`` and ``values`` are consumed (modified in place).
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


def find_leaves(tree: np.ndarray, roots: np.ndarray, values: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Heap leaf of each value walked down from its root, and the value's offset into that leaf's interval.

    A walk never ends on a zero-sum leaf (an empty block or padding): the fast
    unguarded walk can only do so by entering a zero-sum subtree, so the rare
    walks that end on one are redone guarded, which gives exactly the guarded
    walk's answer while skipping two of its eight NumPy operations per level.
    """
    pairs = tree.reshape(-1, 2)
    offsets = values.astype(np.float64)
    nodes = descend(pairs, roots.astype(np.int64), offsets, levels, guarded=False)
    empty = tree.take(nodes) <= 0.0
    if empty.any():
        redo = values[empty].astype(np.float64)
        nodes[empty] = descend(pairs, roots[empty].astype(np.int64), redo, levels, guarded=True)
        offsets[empty] = redo
    return nodes, offsets


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


class SumTrees:
    """K independent sum trees of ``capacity`` slots each (one per lock-step member), walked together.

    ``priorities`` is ``(K, blocks·BLOCK)`` float32 (slots past ``capacity``
    stay 0). With ``M = 2^⌈log2 K⌉`` and ``L = 2^depth ≥ blocks`` heap leaves
    per member, the K block-sum trees are the subtrees rooted at heap nodes
    ``M + k`` of one flat heap of ``2·M·L`` nodes: member ``k``'s block ``b``
    is heap leaf ``M·L + k·L + b``, and its tree's level ``l`` is row ``k`` of
    the ``(M, 2^l)`` block at ``M·2^l``, so the ordinary heap arithmetic walks
    every member at once. Heap nodes above level ``log2 M`` (sums across
    members) are never used.
    """

    def __init__(self, members: int, capacity: int) -> None:
        if members <= 0:
            raise ValueError(f"members must be positive, got {members}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.members, self.capacity = members, capacity
        self.blocks = -(-capacity // BLOCK)
        self.priorities = np.zeros((members, self.blocks * BLOCK), dtype=np.float32)
        self.depth = _tree_depth(self.blocks)
        self.leaves_per_member = 1 << self.depth
        self.padded_members = 1 << _tree_depth(members)
        self.first_leaf = self.padded_members * self.leaves_per_member
        self.nodes = np.zeros(2 * self.first_leaf, dtype=np.float64)
        self.roots = self.padded_members + np.arange(members, dtype=np.int64)
        self.rows = np.arange(members, dtype=np.int64)[:, None]
        #: heap node of block 0 of each member, shape ``(K, 1)`` to broadcast against ``(K, B)`` blocks
        self.block_base = (self.first_leaf + np.arange(members, dtype=np.int64) * self.leaves_per_member)[:, None]

    @property
    def totals(self) -> np.ndarray:
        """Each member's total priority ``(K,)`` (its root; a view: read, don't write)."""
        return self.nodes[self.padded_members : self.padded_members + self.members]

    @property
    def leaves(self) -> np.ndarray:
        """Slot priorities ``(K, capacity)`` (a float32 view: read, don't write)."""
        return self.priorities[:, : self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities ``(K, B)`` (float64) of each member's slots ``indices (K, B)``."""
        return np.take_along_axis(self.priorities, np.asarray(indices, dtype=np.int64), axis=1).astype(np.float64)

    def set_slots(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set slots ``indices (m,)`` of every member to ``priorities (K, m)``: the per-``add`` path.

        Members step together, so an ``add`` writes the same slot of every member.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._check_indices(indices)
        self.priorities[:, indices] = _as_priorities(np.broadcast_to(priorities, (self.members, indices.size)))
        members = np.repeat(np.arange(self.members, dtype=np.int64), indices.size)
        self._refresh(members, np.tile(indices, self.members))

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
            members = np.broadcast_to(self.rows, indices.shape)
        else:
            members = np.asarray(members, dtype=np.int64)
            if not members.shape == indices.shape == priorities.shape or members.ndim != 1:
                raise ValueError(f"{members.shape} members, {indices.shape} indices, {priorities.shape} priorities")
            if members.size and (members.min() < 0 or members.max() >= self.members):
                raise IndexError(f"members must be in [0, {self.members}), got {members.min()}..{members.max()}")
        if indices.size == 0:
            return
        self._check_indices(indices)
        members, indices, priorities = members.reshape(-1), indices.reshape(-1), _as_priorities(priorities.reshape(-1))
        if indices.size > 1:
            keep = last_occurrences(members * self.priorities.shape[1] + indices)
            members, indices, priorities = members[keep], indices[keep], priorities[keep]
        self.priorities[members, indices] = priorities
        self._refresh(members, indices)

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slots ``(K, B)``: member ``k``'s slot whose prefix-sum interval holds ``values[k, b] ∈ [0, totals[k])``.

        Zero-priority slots (empty, or hidden by the caller) are never returned.
        """
        if np.any(self.totals <= 0.0):
            raise ValueError("cannot sample from a sum tree whose total priority is 0")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != self.members:
            raise ValueError(f"values must have shape ({self.members}, B), got {values.shape}")
        roots = np.repeat(self.roots, values.shape[1])  # flat: NumPy's gathers are fastest on 1-D arrays
        nodes, offsets = find_leaves(self.nodes, roots, values.reshape(-1), self.depth)
        blocks = nodes.reshape(values.shape) - self.block_base
        return blocks * BLOCK + self._find_in_blocks(blocks, offsets.reshape(values.shape))

    def sample_stratified(self, batch_size: int) -> np.ndarray:
        """``(K, batch_size)`` slots, each member's drawn ∝ its priorities, one draw per segment of its total.

        All ``K·B`` walks descend together (Schaul et al. 2016, B.2.1, per member).
        Uses NumPy's global RNG, which the runner seeds.
        """
        segments = self.totals[:, None] / batch_size
        values = (np.arange(batch_size) + np.random.random((self.members, batch_size))) * segments
        return self.find(values)

    def _find_in_blocks(self, blocks: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Position in block ``blocks[k, b]`` of member k whose prefix-sum interval holds ``offsets[k, b]``.

        The first position whose inclusive prefix sum exceeds the offset has a
        positive priority by construction; only an offset pushed to the block's
        end by rounding finds none, and takes the block's last positive slot.
        """
        block_priorities = self.priorities.reshape(-1, BLOCK).take(blocks + self.rows * self.blocks, axis=0)
        prefix = np.cumsum(block_priorities, axis=-1, dtype=np.float64)
        position = (prefix <= offsets[..., None]).sum(axis=-1)
        past_end = position == BLOCK
        if past_end.any():
            last_positive = BLOCK - 1 - np.argmax(block_priorities[past_end][:, ::-1] > 0.0, axis=-1)
            position[past_end] = last_positive
        return position

    def _refresh(self, members: np.ndarray, slots: np.ndarray) -> None:
        """Recompute the block sums holding ``members``' ``slots`` from their priorities, then their ancestors."""
        blocks = slots // BLOCK
        sums = self.priorities.reshape(self.members, self.blocks, BLOCK)[members, blocks].sum(axis=-1, dtype=np.float64)
        leaves = self.block_base[members, 0] + blocks
        self.nodes[leaves] = sums
        climb(self.nodes, leaves, self.depth)

    def _check_indices(self, indices: np.ndarray) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(f"slot indices must be in [0, {self.capacity}), got {indices.min()}..{indices.max()}")


class SumTree:
    """Priorities of ``capacity`` slots with vectorised prefix-sum search: :class:`SumTrees` of one member."""

    def __init__(self, capacity: int) -> None:
        self.trees = SumTrees(1, capacity)
        self.capacity = capacity
        self.priorities = self.trees.priorities[0]
        self._blocks = self.priorities.reshape(-1, BLOCK)
        self._first_block_node = int(self.trees.block_base[0, 0])

    @property
    def total(self) -> float:
        """Sum of all priorities (the root)."""
        return float(self.trees.nodes[self.trees.roots[0]])

    @property
    def leaves(self) -> np.ndarray:
        """The ``capacity`` slot priorities (a float32 view: read, don't write)."""
        return self.priorities[: self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities (float64) of slots ``indices``."""
        return self.priorities[np.asarray(indices, dtype=np.int64)].astype(np.float64)

    def set_one(self, index: int, priority: float) -> None:
        """Set one slot's priority: the per-``add`` fast path (a scalar walk to the root)."""
        if not 0 <= index < self.capacity:
            raise IndexError(f"slot index must be in [0, {self.capacity}), got {index}")
        if not 0.0 <= priority < FLOAT32_MAX:  # also refuses NaN
            _as_priorities(np.float64(priority))  # raises the usual error
        self.priorities[index] = priority
        block = int(index) // BLOCK
        nodes = self.trees.nodes
        node = self._first_block_node + block
        nodes[node] = self._blocks[block].sum(dtype=np.float64)
        node >>= 1
        while node:
            nodes[node] = nodes[2 * node] + nodes[2 * node + 1]
            node >>= 1

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of slots ``indices`` (a batch; duplicates: the last one wins)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if indices.shape != priorities.shape:
            raise ValueError(f"{indices.size} indices but {priorities.size} priorities")
        self.trees.update(indices[None], priorities[None])

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slot of each ``value`` in ``[0, total)``: the one whose prefix-sum interval holds it.

        Slot ``i`` owns ``[Σ_{j<i} p_j, Σ_{j≤i} p_j)``, so a uniform value picks
        slot ``i`` with probability ``p_i / total``; zero-priority slots are
        never returned.
        """
        return self.trees.find(np.asarray(values, dtype=np.float64).reshape(1, -1))[0]

    def sample_stratified(self, batch_size: int) -> np.ndarray:
        """``batch_size`` slots drawn ∝ priority, one uniform draw per equal segment of the total.

        Stratification (Schaul et al. 2016, B.2.1) keeps each batch's slots
        spread over the whole priority mass while each draw's marginal stays
        proportional. Uses NumPy's global RNG, which the runner seeds.
        """
        return self.trees.sample_stratified(batch_size)[0]


def _as_priorities(priorities: np.ndarray) -> np.ndarray:
    """``priorities`` as float32, refusing negative or non-finite values (also those float32 cannot hold)."""
    with np.errstate(over="ignore"):
        stored = np.asarray(priorities, dtype=np.float64).astype(np.float32)
    if not np.all(np.isfinite(stored)) or np.any(stored < 0):
        raise ValueError("priorities must be finite (below 3.4e38, float32's limit) and non-negative")
    return stored
