"""Image observations stored one frame per transition, stacks rebuilt at sample time.

A plain ring keeps ``obs`` and ``next_obs`` whole: with Atari's 4-frame
``(4, 84, 84)`` uint8 stacks that is 8 frames (56 KB) per transition for 1 new
frame of information. :class:`FrameStorage` keeps each frame once, as Dopamine
does (``dopamine/replay_memory/circular_replay_buffer.py``), but rebuilds every
observation exactly, at episode ends and time-limit truncations too.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.frames``).
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.builtin.replay_memory import (
    EPISODE_DTYPE,
    START_DTYPE,
    as_obs_spec,
    initial_reset_slots,
    offset_dtype,
    storage_bytes,
)
from dqnbench.builtin.ring import TransitionRing
from dqnbench.errors import DqnbenchError

#: how the reset observation's stack was padded before its frame (gymnasium ``FrameStackObservation(padding_type=…)``)
PAD_ZERO, PAD_REPEAT, PAD_OTHER = 0, 1, 2
#: a side-store start count that no live transition ever needs
NEVER = np.iinfo(START_DTYPE).min // 2


class FrameStorage(TransitionRing):
    """Transitions whose observations are kept one frame each, for one run or K lock-step members.

    The same interface as :class:`~dqnbench.builtin.replays.RingStorage`
    (``add``, ``gather``, ``obs_at``, ``next_obs_at``, the scalar fields);
    members share the cursor and have their own episodes. See the module
    docstring for the layout.
    """

    fields = ("actions", "rewards", "terminated", "offset", "episode")
    state_arrays = (
        "actions", "rewards", "terminated", "offset", "episode", "frame",
        "episodes", "episode_start", "last_next_obs", "last_done",
    )  # fmt: skip

    def __init__(
        self, capacity: int, obs_dim: int, members: int | None = None, done: bool = False, extra_bytes: int = 0
    ) -> None:
        spec = as_obs_spec(obs_dim)
        super().__init__(capacity, spec, members, done, storage_bytes(capacity, spec, members, done) + extra_bytes)
        self.spec, self.frames = spec, spec.frames
        frame_shape = spec.frame_shape
        slots = (capacity, *self.lead)
        self.offset = np.zeros(slots, dtype=offset_dtype(self.frames))
        self.offset_cap = int(np.iinfo(self.offset.dtype).max)
        self.episode = np.zeros(slots, dtype=EPISODE_DTYPE)
        #: frame ring: the newest frame of the next_obs of add count c at row ``c % ring``
        self.ring = capacity + self.frames
        self.frame = np.zeros((self.ring, *self.lead, *frame_shape), dtype=spec.dtype)
        self.frame_view = self._flat_view(self.frame)
        # side store, one entry per episode at row ``episode % reset_slots``: the reset frame, its padding, its start
        self.reset_slots = initial_reset_slots(capacity, self.frames)
        self.reset_frame = np.zeros((self.reset_slots, self.rows, *frame_shape), dtype=spec.dtype)
        self.reset_pad = np.zeros((self.reset_slots, self.rows), dtype=np.uint8)
        self.reset_start = np.full((self.reset_slots, self.rows), NEVER, dtype=START_DTYPE)
        self.reset_whole: dict[tuple[int, int], np.ndarray] = {}  # (member, episode) → R, for PAD_OTHER only
        # each member's episode so far
        self.episodes = np.zeros(self.rows, dtype=np.int64)  # episodes started
        self.episode_start = np.zeros(self.rows, dtype=np.int64)  # add count of the current one's first step
        self.last_next_obs = np.zeros((self.rows, *spec.shape), dtype=spec.dtype)
        self.last_done = np.ones(self.rows, dtype=np.bool_)
        self._back = np.arange(self.frames - 1, -1, -1, dtype=np.int64)  # stack position m ↦ frames - 1 - m
        self._make_views()

    # --- writing ------------------------------------------------------------------------------------------------

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> int:
        """Write one row of transitions (K members', or a single run's one); return the slot written."""
        shape = (*self.lead, *self.spec.shape)
        obs = np.asarray(obs, dtype=self.spec.dtype)
        next_obs = np.asarray(next_obs, dtype=self.spec.dtype)
        if obs.shape != shape or next_obs.shape != shape:
            raise ValueError(f"obs {obs.shape} and next_obs {next_obs.shape} must both be {shape}")
        obs_rows = obs.reshape(self.rows, *self.spec.shape)
        next_rows = next_obs.reshape(self.rows, *self.spec.shape)
        if self.frames > 1 and not np.array_equal(next_rows[:, :-1], obs_rows[:, 1:]):
            raise DqnbenchError(
                f"observations declared as a stack of {self.frames} frames (newest last) must slide by one frame "
                "a step (next_obs[:-1] == obs[1:]); the replay cannot store these"
            )
        c, i = self.count, self.cursor
        same = (obs_rows == self.last_next_obs).reshape(self.rows, -1).all(axis=1)
        starts = np.flatnonzero(self.last_done | ~same)
        for k in starts:
            self._start_episode(int(k), c, obs_rows[k])
        if starts.size and c > 0 and self.done is not None:
            # the previous transition of each member starting afresh ended its episode (a truncation when not flagged)
            self.done.reshape(self.capacity, self.rows)[(i - 1) % self.capacity, starts] = True
        self.offset[i] = np.minimum(c - self.episode_start, self.offset_cap).reshape(self.lead)
        self.episode[i] = (self.episodes - 1).reshape(self.lead)
        newest = next_rows[:, -1] if self.frames > 1 else next_rows
        self.frame[c % self.ring] = newest.reshape(self.frame.shape[1:])
        self._write_scalars(i, action, reward, terminated, truncated)
        np.copyto(self.last_next_obs, next_rows)
        ended = np.asarray(terminated, dtype=np.bool_)
        if truncated is not None:
            ended = ended | np.asarray(truncated, dtype=np.bool_)
        self.last_done[:] = ended.reshape(-1)
        return self._advance()

    def _start_episode(self, k: int, count: int, reset_obs: np.ndarray) -> None:
        """Member k's episode starting at add ``count`` from ``reset_obs``: its side-store entry."""
        episode = int(self.episodes[k])
        row = episode % self.reset_slots
        # the entry's episode is needed while one of its first `frames` transitions is live after this add
        if self.reset_start[row, k] + self.frames - 1 > count - self.capacity:
            self._grow_side_store()
            row = episode % self.reset_slots
        self.reset_whole.pop((k, episode - self.reset_slots), None)
        newest = reset_obs[-1] if self.frames > 1 else reset_obs
        self.reset_frame[row, k] = newest
        self.reset_start[row, k] = count
        pad = PAD_REPEAT
        if self.frames > 1:
            padding = reset_obs[:-1]
            if not (padding == newest).all():
                pad = PAD_ZERO if not padding.any() else PAD_OTHER
        if pad == PAD_OTHER:
            self.reset_whole[(k, episode)] = reset_obs.copy()
        self.reset_pad[row, k] = pad
        self.episodes[k] = episode + 1
        self.episode_start[k] = count

    def _grow_side_store(self) -> None:
        """Double the side store, each member's last ``reset_slots`` entries moved to their new rows."""
        old, slots = self.reset_slots, 2 * self.reset_slots
        frame = np.zeros((slots, *self.reset_frame.shape[1:]), dtype=self.reset_frame.dtype)
        pad = np.zeros((slots, self.rows), dtype=np.uint8)
        start = np.full((slots, self.rows), NEVER, dtype=START_DTYPE)
        for k in range(self.rows):
            held = np.arange(max(0, self.episodes[k] - old), self.episodes[k])
            frame[held % slots, k] = self.reset_frame[held % old, k]
            pad[held % slots, k] = self.reset_pad[held % old, k]
            start[held % slots, k] = self.reset_start[held % old, k]
        self.reset_frame, self.reset_pad, self.reset_start, self.reset_slots = frame, pad, start, slots

    # --- checkpoints --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, object]:
        """The ring's arrays plus the side store, its rare whole reset observations as two arrays."""
        state = super().state_dict()
        keys = sorted(self.reset_whole)
        whole_shape = (0, *self.spec.shape)
        state["side"] = {
            "reset_frame": self.reset_frame,
            "reset_pad": self.reset_pad,
            "reset_start": self.reset_start,
            # (member, episode) → R as a key array (n, 2) and the observations stacked (n, *shape)
            "whole_keys": np.array(keys, dtype=np.int64).reshape(len(keys), 2),
            "whole": np.stack([self.reset_whole[k] for k in keys]) if keys else np.zeros(whole_shape, self.spec.dtype),
        }
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` (the side store may have grown: it is replaced, not copied into)."""
        super().load_state_dict(state)
        side = state["side"]
        if side["reset_frame"].shape[1:] != self.reset_frame.shape[1:]:
            raise ValueError(f"replay checkpoint's reset frames are {side['reset_frame'].shape[1:]}, "
                             f"this storage's {self.reset_frame.shape[1:]}")  # fmt: skip
        self.reset_frame = np.array(side["reset_frame"], dtype=self.reset_frame.dtype)
        self.reset_pad = np.array(side["reset_pad"], dtype=np.uint8)
        self.reset_start = np.array(side["reset_start"], dtype=self.reset_start.dtype)
        self.reset_slots = len(self.reset_frame)
        whole = zip(side["whole_keys"], side["whole"])
        self.reset_whole = {(int(k), int(e)): np.array(obs, dtype=self.spec.dtype) for (k, e), obs in whole}

    # --- reading ------------------------------------------------------------------------------------------------

    def counts(self, indices: np.ndarray) -> np.ndarray:
        """Add count (position in the stream) of the transitions held at slots ``indices``."""
        newest = self.count - 1
        return newest - (newest - indices) % self.capacity

    def obs_at(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._stacks(indices, 0))

    def next_obs_at(self, indices: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._stacks(indices, 1))

    def _stacks(self, indices: np.ndarray, shift: int) -> np.ndarray:
        """Observations (``shift=0``) or next observations (``shift=1``) at slots ``indices (R, B)``.

        Stack position m of transition c (t steps into its episode) is
        ``seq[t + shift - (frames - 1 - m)]``: ring frame ``c + shift - 1 -
        (frames - 1 - m)`` where that index is ≥ 1, the reset observation
        otherwise (see the module docstring).
        """
        indices = np.asarray(indices, dtype=np.int64)
        flat = self.flat(indices)
        seq = self.views["offset"].take(flat).astype(np.int64)[..., None] + (shift - self._back)  # (R, B, F)
        counts = self.counts(indices)[..., None] + (shift - 1 - self._back)
        rows = counts % self.ring * self.rows + self.member[..., None]
        out = self.frame_view.take(rows, axis=0)  # (R, B, F, *frame_shape)
        before = seq <= 0
        if before.any():
            self._fill_from_resets(out, before, seq, flat)
        return out.reshape(*indices.shape, *self.spec.shape)

    def _fill_from_resets(self, out: np.ndarray, before: np.ndarray, seq: np.ndarray, flat: np.ndarray) -> None:
        """Write the stack positions ``before`` the episode's first new frame from its reset observation."""
        where = np.nonzero(before)
        s = seq[where]
        episode = self.views["episode"].take(flat[where[:-1]]).astype(np.int64)
        member = where[0]
        row = episode % self.reset_slots
        pad = self.reset_pad[row, member]
        values = self.reset_frame[row, member]  # (n, *frame_shape): R[-1]
        values[(s < 0) & (pad == PAD_ZERO)] = 0
        for j in np.flatnonzero((s < 0) & (pad == PAD_OTHER)):  # rare: a padding gymnasium does not make
            values[j] = self.reset_whole[(int(member[j]), int(episode[j]))][self.frames - 1 + s[j]]
        out[where] = values

    def nbytes(self) -> int:
        """Bytes held: scalars, offsets, episode numbers, the frame ring and the side store."""
        side = (self.reset_frame, self.reset_pad, self.reset_start, self.last_next_obs)
        whole = sum(a.nbytes for a in self.reset_whole.values())
        return (
            super().nbytes()
            + self.offset.nbytes
            + self.episode.nbytes
            + self.frame.nbytes
            + sum(a.nbytes for a in side)
            + whole
        )
