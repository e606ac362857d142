"""Combined experience replay (CER): every batch holds the newest transitions.

Zhang & Sutton (2017), "A Deeper Look at Experience Replay". With uniform
replay, a transition waits on average ``capacity / batch_size`` learn steps
before it is first sampled, so the larger the buffer, the later the agent
learns from what just happened — which is why DQN is so sensitive to the
buffer size. CER fixes it at O(1) cost: each batch is ``batch_size − latest``
uniform samples plus the ``latest`` newest transitions (their CER is
``latest = 1``). Nothing else changes: importance weights are ones and the
bootstrap discount is γ, as for uniform replay.

Storage is NumPy arrays preallocated at ``capacity`` rows (one row written in
place per ``add``); sampling draws from NumPy's global RNG, which dqnbench seeds
per run.
"""

from __future__ import annotations

import dqnbench
import numpy as np
import torch


class CombinedReplay:
    """A ring buffer whose batches are uniform samples plus the ``latest`` newest transitions."""

    def __init__(self, capacity: int, obs_dim: int, gamma: float, latest: int = 1) -> None:
        self.capacity, self.gamma, self.latest = capacity, float(gamma), latest
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.cursor = 0  # where the next transition goes
        self.size = 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.cursor
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def newest(self, k: int) -> np.ndarray:
        """Indices of the ``k`` most recently added transitions, newest first."""
        return (self.cursor - 1 - np.arange(k)) % self.capacity

    def sample(self, batch_size: int) -> dqnbench.Batch:
        k = min(self.latest, batch_size, self.size)
        indices = np.concatenate([np.random.randint(0, self.size, size=batch_size - k), self.newest(k)])
        return dqnbench.Batch(
            obs=torch.from_numpy(self.obs[indices]),
            actions=torch.from_numpy(self.actions[indices]),
            rewards=torch.from_numpy(self.rewards[indices]),
            next_obs=torch.from_numpy(self.next_obs[indices]),
            terminated=torch.from_numpy(self.terminated[indices]),
            weights=torch.ones(batch_size),
            indices=torch.from_numpy(indices.astype(np.int64)),
            discounts=torch.full((batch_size,), self.gamma),
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """CER samples without priorities: TD errors are not needed."""

    def __len__(self) -> int:
        return self.size


def combined(capacity: int, obs_dim: int, gamma: float, latest: int = 1) -> CombinedReplay:
    """Combined experience replay (Zhang & Sutton 2017).

    :param latest: how many of the newest transitions every batch includes
        (1 in the paper; 0 is uniform replay).
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
    if isinstance(latest, bool) or not isinstance(latest, int) or latest < 0:
        raise ValueError(f"latest must be a non-negative integer, got {latest!r}")
    return CombinedReplay(capacity, obs_dim, gamma, latest)
