"""The ring of per-transition scalars both observation storages share: actions, rewards, flags, the cursor.

:class:`TransitionRing` holds what every stored transition has whatever its
observations (action, reward, terminated, and optionally ``done = terminated |
truncated``), the write cursor and the member layout; its two subclasses say
how observations are kept: :class:`~dqnbench.builtin.replays.RingStorage`
(obs and next_obs rows, for vectors) and
:class:`~dqnbench.builtin.frames.FrameStorage` (one frame per transition,
stacks rebuilt at sample time, for images). A buffer (uniform, prioritised,
n-step) only calls the interface here, so it works over either.
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.builtin.replay_memory import ACTION_DTYPE, check_replay_fits


class TransitionRing:
    """Fixed-capacity scalar fields with a write cursor that wraps around, for one run or K members.

    Arrays are slot-major: ``(capacity, *lead, …)`` with ``lead = ()`` for a
    single run and ``(K,)`` for K lock-step members, so slot ``i`` holds the
    transitions of every member written at the same env step and ``add`` is
    the same single write either way. Rows are gathered through flat
    ``(capacity·K, …)`` views (``np.take`` on ``i·K + k``, the cheapest NumPy
    gather).

    The constructor first refuses a storage whose ``planned_bytes`` do not fit
    in the memory available (:func:`~dqnbench.builtin.replay_memory.check_replay_fits`),
    before anything is allocated.
    """

    #: arrays (by attribute name) gathered through :attr:`views`; subclasses add theirs
    fields: tuple[str, ...] = ("actions", "rewards", "terminated")

    def __init__(self, capacity: int, obs_dim: int, members: int | None, done: bool, planned_bytes: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if members is not None and members <= 0:
            raise ValueError(f"members must be positive, got {members}")
        check_replay_fits(planned_bytes, capacity, obs_dim, members)
        self.capacity, self.members = capacity, members
        self.rows = members or 1
        self.lead: tuple[int, ...] = () if members is None else (members,)
        slots = (capacity, *self.lead)
        self.actions = np.zeros(slots, dtype=ACTION_DTYPE)
        self.rewards = np.zeros(slots, dtype=np.float32)
        self.terminated = np.zeros(slots, dtype=np.bool_)
        #: ``terminated | truncated``, which n-step replay over one-step rows needs to cut windows at episode ends
        self.done = np.zeros(slots, dtype=np.bool_) if done else None
        #: ``(K, 1)`` member of each row of a ``(K, B)`` index array (0 for a single run: flat = slot)
        self.member = 0 if members is None else np.arange(members, dtype=np.int64)[:, None]
        self.cursor = 0
        self.size = 0
        self.count = 0  # transitions ever added (a slot's absolute position in the stream)

    def _make_views(self) -> None:
        """Flat views ``(capacity·K, …)`` of the gathered arrays: member k's slot i is row ``i·K + k``."""
        names = self.fields + (("done",) if self.done is not None else ())
        self.views = {name: self._flat_view(getattr(self, name)) for name in names}

    def _flat_view(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(array.shape[0] * self.rows, *array.shape[1 + len(self.lead) :])

    def _write_scalars(self, i: int, action, reward, terminated, truncated) -> None:
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = terminated
        if self.done is not None:
            self.done[i] = terminated if truncated is None else np.logical_or(terminated, truncated)

    def _advance(self) -> int:
        i = self.cursor
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.count += 1
        return i

    @property
    def oldest(self) -> int:
        """Slot of the oldest transition held."""
        return (self.cursor - self.size) % self.capacity

    def flat(self, indices: np.ndarray) -> np.ndarray:
        """Positions in the flat views of slots ``indices (*lead, B)``: member k's slot i is ``i·K + k``."""
        return indices if self.members is None else indices * self.members + self.member

    def take(self, name: str, flat: np.ndarray) -> torch.Tensor:
        """Array ``name``'s rows at flat positions ``(*lead, B)`` as a tensor ``(*lead, B, …)`` (actions int64)."""
        rows = self.views[name].take(flat, axis=0)
        return torch.from_numpy(rows.astype(np.int64) if name == "actions" else rows)

    def obs_at(self, indices: np.ndarray) -> torch.Tensor:
        """Observations of the transitions at slots ``indices (*lead, B)``, ``(*lead, B, *shape)`` in their dtype."""
        raise NotImplementedError

    def next_obs_at(self, indices: np.ndarray) -> torch.Tensor:
        """Next observations of the transitions at slots ``indices (*lead, B)``, like :meth:`obs_at`."""
        raise NotImplementedError

    def gather(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Rows at slots ``indices (*lead, B)``: obs, actions, rewards, next_obs, terminated."""
        flat = self.flat(indices)
        return (
            self.obs_at(indices),
            self.take("actions", flat),
            self.take("rewards", flat),
            self.next_obs_at(indices),
            self.take("terminated", flat),
        )

    # --- checkpoints -------------------------------------------------------------------------------------------

    #: fixed-shape arrays a checkpoint saves and restores in place (subclasses add theirs)
    state_arrays: tuple[str, ...] = ("actions", "rewards", "terminated")

    def state_dict(self) -> dict[str, object]:
        """The stored transitions and the cursor: NumPy arrays and plain numbers (see ``dqnbench.agent.checkpoint``)."""
        names = self.state_arrays + (("done",) if self.done is not None else ())
        return {
            "arrays": {name: getattr(self, name) for name in names},
            "cursor": self.cursor,
            "size": self.size,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` into a storage built with the same capacity, observations and members.

        Arrays are copied in place, so the flat views gathers read stay valid.
        """
        arrays = state["arrays"]
        names = self.state_arrays + (("done",) if self.done is not None else ())
        if set(arrays) != set(names):
            raise ValueError(f"replay checkpoint holds {sorted(arrays)}, this storage {sorted(names)}")
        for name in names:
            target = getattr(self, name)
            if arrays[name].shape != target.shape or arrays[name].dtype != target.dtype:
                raise ValueError(
                    f"replay checkpoint's {name} is {arrays[name].dtype}{list(arrays[name].shape)}, "
                    f"this storage's {target.dtype}{list(target.shape)}"
                )
            np.copyto(target, arrays[name])
        self.cursor, self.size, self.count = int(state["cursor"]), int(state["size"]), int(state["count"])

    def nbytes(self) -> int:
        """Bytes held by the scalar arrays (subclasses add their observations)."""
        arrays = (self.actions, self.rewards, self.terminated, self.done)
        return sum(a.nbytes for a in arrays if a is not None)
