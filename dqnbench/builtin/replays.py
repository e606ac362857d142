"""Built-in replay: ``uniform``, a preallocated ring buffer.

Storage is NumPy arrays allocated once at ``capacity``: ``add`` writes one row
in place (no Python lists per step), ``sample`` draws indices from NumPy's
global RNG (seeded by the runner) and hands torch views of the gathered rows.
Observations keep their own shape and dtype (``obs_dim`` is an
:class:`~dqnbench.plugin.obs.ObsSpec`; uint8 frames stay one byte).

Every built-in buffer is one class for a single run and for K lock-step
members (``members=K``, what ``factory.lockstep`` builds): the same code, with
a leading member dimension on what ``add`` takes and ``sample`` gives.
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.obs import ObsSpec

#: stored actions: a discrete action index never needs 64 bits, and at CartPole's 45-byte transitions the
#: 4 bytes saved pay for prioritised replay's priority; ``Batch.actions`` is widened to int64 when sampled
ACTION_DTYPE = np.int32


def as_obs_spec(obs_dim: int) -> ObsSpec:
    """``obs_dim`` as an :class:`ObsSpec`; a plain int ``n`` (v1 callers, tests) is a float32 vector of n."""
    return obs_dim if isinstance(obs_dim, ObsSpec) else ObsSpec(int(obs_dim), np.float32)


class RingStorage:
    """Fixed-capacity transition arrays with a write cursor that wraps around, for one run or K members.

    Observations keep their own shape and dtype (``obs_dim`` is an
    :class:`~dqnbench.plugin.obs.ObsSpec`, or a plain int for float32
    vectors). Arrays are slot-major: ``(capacity, *lead, …)`` with ``lead =
    ()`` for a single run and ``(K,)`` for K lock-step members, so slot ``i``
    holds the transitions of every member written at the same env step and
    ``add`` is the same single write either way. Rows are gathered through flat
    ``(capacity·K, …)`` views (``np.take`` on ``i·K + k``, the cheapest NumPy
    gather). With ``done``, it also keeps ``terminated | truncated``, which
    lock-step n-step replay needs to cut windows at episode ends.

    Kept separate from the sampling rule so every buffer (uniform,
    prioritised, n-step) shares it.
    """

    def __init__(self, capacity: int, obs_dim: int, members: int | None = None, done: bool = False) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if members is not None and members <= 0:
            raise ValueError(f"members must be positive, got {members}")
        spec = as_obs_spec(obs_dim)
        self.capacity, self.members = capacity, members
        self.lead: tuple[int, ...] = () if members is None else (members,)
        slots = (capacity, *self.lead)
        self.obs = np.zeros((*slots, *spec.shape), dtype=spec.dtype)
        self.next_obs = np.zeros((*slots, *spec.shape), dtype=spec.dtype)
        self.actions = np.zeros(slots, dtype=ACTION_DTYPE)
        self.rewards = np.zeros(slots, dtype=np.float32)
        self.terminated = np.zeros(slots, dtype=np.bool_)
        self.done = np.zeros(slots, dtype=np.bool_) if done else None
        names = ("obs", "next_obs", "actions", "rewards", "terminated") + (("done",) if done else ())
        #: flat views ``(capacity·K, …)`` of the arrays, for gathers: member k's slot i is row ``i·K + k``
        self.views = {name: self._flat_view(getattr(self, name)) for name in names}
        #: ``(K, 1)`` member of each row of a ``(K, B)`` index array (0 for a single run: flat = slot)
        self.member = 0 if members is None else np.arange(members, dtype=np.int64)[:, None]
        self.cursor = 0
        self.size = 0

    def _flat_view(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.capacity * (self.members or 1), *array.shape[1 + len(self.lead) :])

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> int:
        """Write one transition (a row of K, with a leading K dimension, for members); return the slot written."""
        i = self.cursor
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        if self.done is not None:
            self.done[i] = terminated if truncated is None else np.logical_or(terminated, truncated)
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
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

    def gather(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Rows at slots ``indices (*lead, B)``: obs, actions, rewards, next_obs, terminated."""
        flat = self.flat(indices)
        return tuple(self.take(name, flat) for name in ("obs", "actions", "rewards", "next_obs", "terminated"))

    def nbytes(self) -> int:
        arrays = (self.obs, self.next_obs, self.actions, self.rewards, self.terminated, self.done)
        return sum(a.nbytes for a in arrays if a is not None)


class UniformReplay:
    """Experience replay sampling stored transitions uniformly with replacement, for one run or K members.

    With ``members=K`` every field of ``add`` and of the sampled ``Batch``
    has a leading K: members step together, and each samples its own indices.
    """

    def __init__(self, capacity: int, obs_dim: int, gamma: float, members: int | None = None) -> None:
        self.storage = RingStorage(capacity, obs_dim, members)
        self.members = members
        self.gamma = float(gamma)
        self._constant_shape: tuple[int, ...] | None = None

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> None:
        self.storage.add(obs, action, reward, next_obs, terminated)

    def sample(self, batch_size: int) -> Batch:
        indices = np.random.randint(0, self.storage.size, size=(*self.storage.lead, batch_size))
        obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
        weights, discounts = self._constants(indices.shape)
        return Batch(obs, actions, rewards, next_obs, terminated, weights, torch.from_numpy(indices), discounts)

    def _constants(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit weights and γ discounts, allocated once per batch shape (read-only for the learner)."""
        if self._constant_shape != shape:
            self._constant_shape = shape
            self._weights, self._discounts = torch.ones(shape), torch.full(shape, self.gamma)
        return self._weights, self._discounts

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Uniform sampling ignores TD errors."""

    def __len__(self) -> int:
        return self.storage.size


def uniform(capacity: int, obs_dim: int, gamma: float) -> UniformReplay:
    """Uniform replay of the last ``capacity`` transitions (the tutorial's memory)."""
    return UniformReplay(capacity, obs_dim, gamma)


def uniform_members(members: int, capacity: int, obs_dim: int, gamma: float) -> UniformReplay:
    """``uniform`` for K lock-step members: arrays with a leading member dimension, one shared cursor."""
    return UniformReplay(capacity, obs_dim, gamma, members=members)


uniform.lockstep = uniform_members  # lock-step support (see the dqnbench_replays hookspec)


@hookimpl
def dqnbench_replays() -> dict:
    return {"uniform": uniform}
