"""Built-in replay: ``uniform``, a preallocated ring buffer.

Storage is NumPy arrays allocated once at ``capacity``: ``add`` writes one row
in place (no Python lists per step), ``sample`` draws indices from NumPy's
global RNG (seeded by the runner) and hands torch views of the gathered rows.
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl

#: stored actions: a discrete action index never needs 64 bits, and at CartPole's 45-byte transitions the
#: 4 bytes saved pay for prioritised replay's priority; ``Batch.actions`` is widened to int64 when sampled
ACTION_DTYPE = np.int32


class RingStorage:
    """Fixed-capacity transition arrays with a write cursor that wraps around.

    Kept separate from the sampling rule so other buffers (prioritised, n-step)
    can reuse it.
    """

    def __init__(self, capacity: int, obs_dim: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=ACTION_DTYPE)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.cursor = 0
        self.size = 0

    def add(self, obs, action, reward, next_obs, terminated) -> int:
        """Write one transition; return the index it went to."""
        i = self.cursor
        self.obs[i] = obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = terminated
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def gather(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Rows at ``indices`` as tensors: obs, actions, rewards, next_obs, terminated."""
        return (
            torch.from_numpy(self.obs[indices]),
            torch.from_numpy(self.actions[indices].astype(np.int64)),
            torch.from_numpy(self.rewards[indices]),
            torch.from_numpy(self.next_obs[indices]),
            torch.from_numpy(self.terminated[indices]),
        )

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.next_obs, self.actions, self.rewards, self.terminated))


class UniformReplay:
    """Experience replay sampling stored transitions uniformly with replacement."""

    def __init__(self, capacity: int, obs_dim: int, gamma: float) -> None:
        self.storage = RingStorage(capacity, obs_dim)
        self.gamma = float(gamma)
        self._constant_size = -1

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        self.storage.add(obs, action, reward, next_obs, terminated)

    def sample(self, batch_size: int) -> Batch:
        indices = np.random.randint(0, self.storage.size, size=batch_size)
        obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
        weights, discounts = self._constants(batch_size)
        return Batch(obs, actions, rewards, next_obs, terminated, weights, torch.from_numpy(indices), discounts)

    def _constants(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit weights and γ discounts, allocated once per batch size (read-only for the learner)."""
        if self._constant_size != batch_size:
            self._constant_size = batch_size
            self._weights, self._discounts = torch.ones(batch_size), torch.full((batch_size,), self.gamma)
        return self._weights, self._discounts

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Uniform sampling ignores TD errors."""

    def __len__(self) -> int:
        return self.storage.size


class MembersUniformReplay:
    """Uniform replay for K lock-step members: arrays ``(K, capacity, …)``, one shared cursor.

    Members step together, so row ``i`` of every member was written at the
    same env step; each member samples its own indices.
    """

    def __init__(self, members: int, capacity: int, obs_dim: int, gamma: float) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.members, self.capacity, self.gamma = members, capacity, float(gamma)
        self.obs = np.zeros((members, capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((members, capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((members, capacity), dtype=ACTION_DTYPE)
        self.rewards = np.zeros((members, capacity), dtype=np.float32)
        self.terminated = np.zeros((members, capacity), dtype=np.bool_)
        self.rows = np.arange(members)[:, None]
        self.cursor = self.size = 0
        self._constant_shape: tuple[int, int] | None = None

    def add(self, obs, actions, rewards, next_obs, terminated, truncated=None) -> None:
        """Store one transition per member: arrays with a leading member dimension K."""
        i = self.cursor
        self.obs[:, i], self.actions[:, i], self.rewards[:, i] = obs, actions, rewards
        self.next_obs[:, i], self.terminated[:, i] = next_obs, terminated
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """A ``Batch`` whose fields are ``(K, B, …)``: B uniform draws per member."""
        idx = np.random.randint(0, self.size, size=(self.members, batch_size))
        rows = self.rows
        if self._constant_shape != idx.shape:
            self._constant_shape = idx.shape
            self._weights, self._discounts = torch.ones(idx.shape), torch.full(idx.shape, self.gamma)
        return Batch(
            torch.from_numpy(self.obs[rows, idx]),
            torch.from_numpy(self.actions[rows, idx].astype(np.int64)),
            torch.from_numpy(self.rewards[rows, idx]),
            torch.from_numpy(self.next_obs[rows, idx]),
            torch.from_numpy(self.terminated[rows, idx]),
            self._weights,
            torch.from_numpy(idx),
            self._discounts,
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Uniform sampling ignores TD errors."""

    def __len__(self) -> int:
        return self.size


def uniform(capacity: int, obs_dim: int, gamma: float) -> UniformReplay:
    """Uniform replay of the last ``capacity`` transitions (the tutorial's memory)."""
    return UniformReplay(capacity, obs_dim, gamma)


def uniform_members(members: int, capacity: int, obs_dim: int, gamma: float) -> MembersUniformReplay:
    return MembersUniformReplay(members, capacity, obs_dim, gamma)


uniform.lockstep = uniform_members  # lock-step support (see dqnbench/agent/lockstep.py)


@hookimpl
def dqnbench_replays() -> dict:
    return {"uniform": uniform}
