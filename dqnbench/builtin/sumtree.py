"""Sum trees: O(log N) proportional sampling over changing priorities, in ~4 bytes per slot.

The data structure behind proportional prioritised replay (Schaul et al. 2016,
"Prioritized Experience Replay", appendix B.2.1): a value ``u ∈ [0, total)``
picks the slot whose prefix-sum interval contains it, so each slot is drawn
with probability ``p_i / total``.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.sumtree``).
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


def sum_tree_bytes(capacity: int, members: int | None = None) -> int:
    """Bytes a :class:`SumTree` of ``capacity`` slots (per member) allocates: float32 priorities, float64 heap."""
    rows = 1 if members is None else members
    blocks = -(-capacity // BLOCK)
    heap = 2 * (1 << _tree_depth(rows)) * (1 << _tree_depth(blocks))
    return rows * blocks * BLOCK * 4 + heap * 8


class SumTree:
    """Sum trees over ``capacity`` slots, walked together: one for a single run, K for lock-step members.

    ``members=None`` is a single run: slot arrays without a member dimension
    (``priorities (blocks·BLOCK,)``, ``total`` a float, ``find`` and
    ``sample_stratified`` giving ``(B,)`` slots). ``members=K`` gives every
    array a leading K (``priorities (K, blocks·BLOCK)``, ``total (K,)``,
    slots ``(K, B)``). Slots past ``capacity`` stay 0.

    Layout: with ``M = 2^⌈log2 K⌉`` (1 for a single run) and ``L = 2^depth ≥
    blocks`` heap leaves per member, the K block-sum trees are the subtrees
    rooted at heap nodes ``M + k`` of one flat heap of ``2·M·L`` nodes: member
    ``k``'s block ``b`` is heap leaf ``M·L + k·L + b``, and its tree's level
    ``l`` is row ``k`` of the ``(M, 2^l)`` block at ``M·2^l``, so the ordinary
    heap arithmetic walks every member at once. Heap nodes above level
    ``log2 M`` (sums across members) are never used. A single run is the one
    tree rooted at node 1.
    """

    def __init__(self, capacity: int, members: int | None = None) -> None:
        if members is not None and members <= 0:
            raise ValueError(f"members must be positive, got {members}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        rows = 1 if members is None else members
        self.members, self.capacity = members, capacity
        self.lead: tuple[int, ...] = () if members is None else (members,)
        self.blocks = -(-capacity // BLOCK)
        self.width = self.blocks * BLOCK
        self.depth = _tree_depth(self.blocks)
        self.leaves_per_member = 1 << self.depth
        self.padded_members = 1 << _tree_depth(rows)
        self.first_leaf = self.padded_members * self.leaves_per_member
        self.nodes = np.zeros(2 * self.first_leaf, dtype=np.float64)
        self._flat = np.zeros(rows * self.width, dtype=np.float32)  # every member's slots, member-major
        self._blocks = self._flat.reshape(-1, BLOCK)  # row k·blocks + b: member k's block b
        #: slot priorities ``(*lead, blocks·BLOCK)`` (a view of the flat array)
        self.priorities = self._flat.reshape(*self.lead, self.width)
        self.roots = self.padded_members + np.arange(rows, dtype=np.int64)
        #: where the totals are in ``nodes``: the root (a single run), or each member's as a ``(K, 1)`` column
        self._totals = 1 if members is None else (slice(self.padded_members, self.padded_members + rows), None)
        member = np.arange(rows, dtype=np.int64).reshape(*self.lead, 1)  # ``(*lead, 1)``: broadcasts against slots
        self._slot_base = member * self.width  # flat position of each member's slot 0
        self._block_row = member * self.blocks  # row of each member's block 0 in ``_blocks``
        self._block_node = self.first_leaf + member * self.leaves_per_member  # heap node of each member's block 0

    def nbytes(self) -> int:
        """Bytes held: the slot priorities and the heap of block sums (:func:`sum_tree_bytes`)."""
        return self._flat.nbytes + self.nodes.nbytes

    def state_dict(self) -> dict[str, np.ndarray]:
        """The slot priorities and the heap of sums, for a checkpoint (sums saved, not recomputed: bit for bit)."""
        return {"priorities": self._flat, "nodes": self.nodes}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` in place (the views of the flat priorities stay valid)."""
        for name, target in (("priorities", self._flat), ("nodes", self.nodes)):
            if state[name].shape != target.shape:
                raise ValueError(f"sum tree checkpoint's {name} has shape {state[name].shape}, not {target.shape}")
            np.copyto(target, state[name])

    @property
    def total(self) -> float | np.ndarray:
        """Total priority: a float for a single run, each member's ``(K,)`` otherwise (a view: read, don't write)."""
        total = self.nodes[self._totals]
        return float(total) if self.members is None else total[:, 0]

    @property
    def leaves(self) -> np.ndarray:
        """Slot priorities ``(*lead, capacity)`` (a float32 view: read, don't write)."""
        return self.priorities[..., : self.capacity]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities (float64) of slots ``indices (*lead, B)``."""
        indices = np.asarray(indices, dtype=np.int64)
        return self._flat.take(indices if self.members is None else self._slot_base + indices).astype(np.float64)

    def probabilities(self, indices: np.ndarray) -> np.ndarray:
        """``P(i) = p_i / total`` (float64) of slots ``indices (*lead, B)``, each member's by its own total."""
        return self.get(indices) / self.nodes[self._totals]

    def set_one(self, index: int, priority: float | np.ndarray) -> None:
        """Set slot ``index`` of every member to ``priority`` (a float, or ``(K,)``): the per-``add`` path.

        Members step together, so an ``add`` writes the same slot of every
        member. A single run walks to its root with scalars; K members walk
        together through strided views (member ``k``'s node at any level is
        member 0's plus ``k`` times that level's width).
        """
        if not 0 <= index < self.capacity:
            raise IndexError(f"slot index must be in [0, {self.capacity}), got {index}")
        block = int(index) // BLOCK
        nodes = self.nodes
        node = self.first_leaf + block
        if self.members is None:
            if not 0.0 <= priority < FLOAT32_MAX:  # also refuses NaN
                _as_priorities(np.float64(priority))  # raises the usual error
            self._flat[index] = priority
            nodes[node] = self._blocks[block].sum(dtype=np.float64)
            node >>= 1
            while node:
                nodes[node] = nodes[2 * node] + nodes[2 * node + 1]
                node >>= 1
            return
        rows, stride = self.members, self.leaves_per_member
        self.priorities[:, index] = _as_priorities(np.broadcast_to(priority, self.lead))
        block_priorities = self.priorities[:, block * BLOCK : (block + 1) * BLOCK]
        nodes[node : node + rows * stride : stride] = block_priorities.sum(axis=-1, dtype=np.float64)
        for _ in range(self.depth):  # member k's parent at node + k·stride, its children at 2·node + 2k·stride (+ 1)
            node, stride = node >> 1, stride >> 1
            left, end = 2 * node, 2 * (node + rows * stride)
            parents = nodes[node : node + rows * stride : stride]
            np.add(nodes[left : end : 2 * stride], nodes[left + 1 : end + 1 : 2 * stride], out=parents)

    def update(self, indices: np.ndarray, priorities: np.ndarray, members: np.ndarray | None = None) -> None:
        """Set slot priorities (a batch; duplicates within a member: the last one wins).

        Without ``members``, ``indices`` and ``priorities`` are ``(*lead, B)``:
        row ``k`` is member ``k``'s. With ``members``, all three are flat and
        entry ``j`` sets member ``members[j]``'s slot ``indices[j]``, so a
        caller can leave out any entries (a diverged member's row).
        """
        indices = np.asarray(indices, dtype=np.int64)
        priorities = np.asarray(priorities, dtype=np.float64)
        if members is None:
            if (
                indices.shape != priorities.shape
                or indices.shape[:-1] != self.lead
                or indices.ndim != len(self.lead) + 1
            ):
                raise ValueError(
                    f"indices {indices.shape} and priorities {priorities.shape} must be {(*self.lead, 'B')}"
                )
            flat = self._slot_base + indices
        else:
            members = np.asarray(members, dtype=np.int64)
            if not members.shape == indices.shape == priorities.shape or members.ndim != 1:
                raise ValueError(f"{members.shape} members, {indices.shape} indices, {priorities.shape} priorities")
            rows = self.members or 1
            if members.size and (members.min() < 0 or members.max() >= rows):
                raise IndexError(f"members must be in [0, {rows}), got {members.min()}..{members.max()}")
            flat = members * self.width + indices
        if indices.size == 0:
            return
        self._check_indices(indices)
        flat, priorities = flat.reshape(-1), _as_priorities(priorities.reshape(-1))
        if flat.size > 1:
            keep = last_occurrences(flat)
            flat, priorities = flat[keep], priorities[keep]
        self._flat[flat] = priorities
        self._refresh(flat)

    def find(self, values: np.ndarray) -> np.ndarray:
        """Slots ``(*lead, B)``: each member's slot whose prefix-sum interval holds ``values (*lead, B)``.

        Slot ``i`` owns ``[Σ_{j<i} p_j, Σ_{j≤i} p_j)``, so a uniform value in
        ``[0, total)`` picks slot ``i`` with probability ``p_i / total``;
        zero-priority slots (empty, or hidden by the caller) are never returned.
        """
        if np.any(self.total <= 0.0):
            raise ValueError("cannot sample from a sum tree whose total priority is 0")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != len(self.lead) + 1 or values.shape[:-1] != self.lead:
            raise ValueError(f"values must have shape {(*self.lead, 'B')}, got {values.shape}")
        roots = np.repeat(self.roots, values.shape[-1])  # flat: NumPy's gathers are fastest on 1-D arrays
        nodes, offsets = find_leaves(self.nodes, roots, values.reshape(-1), self.depth)
        blocks = nodes.reshape(values.shape) - self._block_node
        return blocks * BLOCK + self._find_in_blocks(blocks, offsets.reshape(values.shape))

    def sample_stratified(self, batch_size: int) -> np.ndarray:
        """``(*lead, batch_size)`` slots, each member's drawn ∝ its priorities, one draw per segment of its total.

        Stratification (Schaul et al. 2016, B.2.1) keeps each batch's slots
        spread over the whole priority mass while each draw's marginal stays
        proportional; all K·B walks descend together. Uses NumPy's global RNG,
        which the runner seeds.
        """
        segments = self.nodes[self._totals] / batch_size
        values = (np.arange(batch_size) + np.random.random((*self.lead, batch_size))) * segments
        return self.find(values)

    def _find_in_blocks(self, blocks: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Position in each member's block ``blocks`` whose prefix-sum interval holds ``offsets``.

        The first position whose inclusive prefix sum exceeds the offset has a
        positive priority by construction; only an offset pushed to the block's
        end by rounding finds none, and takes the block's last positive slot.
        """
        block_priorities = self._blocks.take(blocks + self._block_row, axis=0)
        prefix = np.cumsum(block_priorities, axis=-1, dtype=np.float64)
        position = (prefix <= offsets[..., None]).sum(axis=-1)
        past_end = position == BLOCK
        if past_end.any():
            last_positive = BLOCK - 1 - np.argmax(block_priorities[past_end][:, ::-1] > 0.0, axis=-1)
            position[past_end] = last_positive
        return position

    def _refresh(self, flat: np.ndarray) -> None:
        """Recompute the block sums holding the flat slots ``flat`` from their priorities, then their ancestors."""
        rows = flat // BLOCK  # member k's block b is row k·blocks + b
        sums = self._blocks[rows].sum(axis=-1, dtype=np.float64)
        leaves = self.first_leaf + rows + (rows // self.blocks) * (self.leaves_per_member - self.blocks)
        self.nodes[leaves] = sums
        climb(self.nodes, leaves, self.depth)

    def _check_indices(self, indices: np.ndarray) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            raise IndexError(f"slot indices must be in [0, {self.capacity}), got {indices.min()}..{indices.max()}")


def _as_priorities(priorities: np.ndarray) -> np.ndarray:
    """``priorities`` as float32, refusing negative or non-finite values (also those float32 cannot hold)."""
    with np.errstate(over="ignore"):
        stored = np.asarray(priorities, dtype=np.float64).astype(np.float32)
    if not np.all(np.isfinite(stored)) or np.any(stored < 0):
        raise ValueError("priorities must be finite (below 3.4e38, float32's limit) and non-negative")
    return stored
