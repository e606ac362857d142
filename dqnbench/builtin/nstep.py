"""Built-in replay ``nstep``: n-step returns, replayed uniformly or by priority.

Multi-step targets (Sutton 1988; used in DQN by Hessel et al. 2018, "Rainbow"):
the buffer stores ``(s_t, a_t, R_t^(k), s_{t+k}, terminated)`` with
``R_t^(k) = Σ_{i<k} γ^i r_{t+i}`` and puts ``γ^k`` in ``Batch.discounts``, so
the learner's target ``R + discount · (1 - terminated) · max_a Q(s', a)`` is the
n-step target without knowing ``n``. ``k = n`` inside an episode and
``k < n`` for the last steps of an episode.

Episode boundaries. ``add`` receives one transition per env step, in order,
and has no truncation flag, so the buffer infers boundaries:

- ``terminated=True``: every pending start state is stored at once with its
  ``k ≤ n`` rewards, the terminal ``next_obs`` and ``terminated=True``;
- a call whose ``obs`` differs (``np.array_equal``) from the previous call's
  ``next_obs`` starts a new episode, so the previous one was truncated (a time
  limit): its pending start states are stored bootstrapping from that previous
  ``next_obs``, ``terminated=False``, discount ``γ^k``.

No reward ever crosses into another episode. A reset observation exactly equal
to the previous episode's last observation would go unnoticed (unlikely with
continuous observations); the partial returns still pending when training
stops are never stored.

With ``prioritized = true`` the stored n-step transitions are sampled by the
same :class:`~dqnbench.builtin.prioritized.ProportionalSampler` as the
``prioritized`` buffer (Rainbow's combination).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from dqnbench.batch import Batch
from dqnbench.builtin.prioritized import ProportionalSampler, check_per_params
from dqnbench.builtin.replays import RingStorage
from dqnbench.hookspecs import hookimpl


def nstep_return(rewards: Sequence[float], gamma: float) -> tuple[float, float]:
    """``(Σ_i γ^i r_i, γ^k)`` of the ``k = len(rewards)`` rewards accumulated."""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + gamma * total
    return total, gamma ** len(rewards)


class NStepReplay:
    """A ring buffer of n-step transitions, each with its own bootstrap discount."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        gamma: float,
        n: int,
        sampler: ProportionalSampler | None = None,
    ) -> None:
        self.storage = RingStorage(capacity, obs_dim)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.gamma = float(gamma)
        self.n = n
        self.sampler = sampler
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()
        self.last_next_obs: np.ndarray | None = None
        self.steps = 0  # add calls = env steps, the clock of β's annealing

    @property
    def beta(self) -> float | None:
        """β the next ``sample`` uses (None without prioritisation)."""
        return None if self.sampler is None else self.sampler.beta(self.steps)

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        obs = np.asarray(obs, dtype=np.float32)
        next_obs = np.array(next_obs, dtype=np.float32)  # a copy: compared with the next call's obs
        if self.pending and not np.array_equal(obs, self.last_next_obs):
            self._flush(self.last_next_obs, terminated=False)  # the previous episode was truncated
        self.pending.append((obs.copy(), int(action), float(reward)))
        self.last_next_obs = next_obs
        self.steps += 1
        if terminated:
            self._flush(next_obs, terminated=True)
        elif len(self.pending) == self.n:
            self._store_oldest(next_obs, terminated=False)

    def _flush(self, next_obs: np.ndarray, terminated: bool) -> None:
        while self.pending:
            self._store_oldest(next_obs, terminated)

    def _store_oldest(self, next_obs: np.ndarray, terminated: bool) -> None:
        ret, discount = nstep_return([r for _, _, r in self.pending], self.gamma)
        obs, action, _ = self.pending.popleft()
        index = self.storage.add(obs, action, ret, next_obs, terminated)
        self.discounts[index] = discount
        if self.sampler is not None:
            self.sampler.on_add(index)

    def sample(self, batch_size: int) -> Batch:
        if self.sampler is None:
            indices = np.random.randint(0, self.storage.size, size=batch_size)
            weights = np.ones(batch_size, dtype=np.float32)
        else:
            indices, weights = self.sampler.sample(batch_size, self.storage.size, self.steps)
        obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
        return Batch(
            obs=obs,
            actions=actions,
            rewards=rewards,
            next_obs=next_obs,
            terminated=terminated,
            weights=torch.from_numpy(weights),
            indices=torch.from_numpy(indices),
            discounts=torch.from_numpy(self.discounts[indices]),
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Reprioritise when prioritised; uniform n-step replay ignores TD errors."""
        if self.sampler is not None:
            self.sampler.update(indices, td_errors)

    def __len__(self) -> int:
        return self.storage.size


def nstep(
    capacity: int,
    obs_dim: int,
    gamma: float,
    n: int = 3,
    prioritized: bool = False,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-6,
    total_steps: int | None = None,
) -> NStepReplay:
    """n-step return replay (Rainbow's multi-step learning, Hessel et al. 2018).

    :param n: steps accumulated per stored transition; 1 is ordinary one-step replay.
    :param prioritized: sample by proportional priority (Schaul et al. 2016)
        instead of uniformly; ``alpha``, ``beta``, ``eps`` and ``total_steps``
        are then used as in the ``prioritized`` buffer (and ignored otherwise).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(prioritized, bool):
        raise ValueError(f"prioritized must be true or false, got {prioritized!r}")
    check_per_params(alpha, beta, eps, total_steps)
    sampler = ProportionalSampler(capacity, alpha, beta, eps, total_steps) if prioritized else None
    return NStepReplay(capacity, obs_dim, gamma, n, sampler)


@hookimpl
def dqnbench_replays() -> dict:
    return {"nstep": nstep}
