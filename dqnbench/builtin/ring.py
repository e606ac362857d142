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

    Arrays are slot-major: ``(capacity, R, …)`` with ``R = K`` rows for K
    lock-step members and one for a single run (``lead = (R,)``), so slot
    ``i`` holds the transitions of every member written at the same env step
    and ``add`` is the same single write of a row. Rows are gathered through
    flat ``(capacity·R, …)`` views (``np.take`` on ``i·R + k``, the cheapest
    NumPy gather).

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
        #: rows a slot holds: K members, or a single run's one
        self.rows = members or 1
        self.lead: tuple[int, ...] = (self.rows,)
        slots = (capacity, *self.lead)
        self.actions = np.zeros(slots, dtype=ACTION_DTYPE)
        self.rewards = np.zeros(slots, dtype=np.float32)
        self.terminated = np.zeros(slots, dtype=np.bool_)
        #: ``terminated | truncated``, which n-step replay over one-step rows needs to cut windows at episode ends
        self.done = np.zeros(slots, dtype=np.bool_) if done else None
        #: ``(R, 1)`` member of each row of an ``(R, B)`` index array
        self.member = np.arange(self.rows, dtype=np.int64)[:, None]
        self.cursor = 0
        self.size = 0
        self.count = 0  # transitions ever added (a slot's absolute position in the stream)

    def _make_views(self) -> None:
        """Flat views ``(capacity·K, …)`` of the gathered arrays: member k's slot i is row ``i·K + k``."""
        names = self.fields + (("done",) if self.done is not None else ())
        self.views = {name: self._flat_view(getattr(self, name)) for name in names}

    def _flat_view(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(array.shape[0] * self.rows, *array.shape[2:])

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
        """Positions in the flat views of slots ``indices (R, B)``: member k's slot i is ``i·R + k``."""
        return indices * self.rows + self.member

    def take(self, name: str, flat: np.ndarray) -> torch.Tensor:
        """Array ``name``'s rows at flat positions ``(R, B)`` as a tensor ``(R, B, …)`` (actions int64)."""
        rows = self.views[name].take(flat, axis=0)
        return torch.from_numpy(rows.astype(np.int64) if name == "actions" else rows)

    def obs_at(self, indices: np.ndarray) -> torch.Tensor:
        """Observations of the transitions at slots ``indices (R, B)``, ``(R, B, *shape)`` in their dtype."""
        raise NotImplementedError

    def next_obs_at(self, indices: np.ndarray) -> torch.Tensor:
        """Next observations of the transitions at slots ``indices (R, B)``, like :meth:`obs_at`."""
        raise NotImplementedError

    def gather(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Rows at slots ``indices (R, B)``: obs, actions, rewards, next_obs, terminated."""
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

        Arrays are copied in place, so the flat views gathers read stay valid. A single run's
        checkpoint from before single runs stored rows of one (slot arrays without the row
        dimension) loads too.
        """
        arrays = state["arrays"]
        names = self.state_arrays + (("done",) if self.done is not None else ())
        if set(arrays) != set(names):
            raise ValueError(f"replay checkpoint holds {sorted(arrays)}, this storage {sorted(names)}")
        for name in names:
            target = getattr(self, name)
            if self.rows == 1 and arrays[name].shape == target.shape[:1] + target.shape[2:]:
                arrays = {**arrays, name: arrays[name].reshape(target.shape)}  # a row of one, saved without its row
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
