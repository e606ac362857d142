"""Built-in replay ``prioritized``: proportional prioritised experience replay.

Schaul, Quan, Antonoglou & Silver (2016), "Prioritized Experience Replay",
ICLR. Transition ``i`` is replayed with probability
``P(i) = p_i / Σ_k p_k`` where ``p_i = (|δ_i| + ε)^α`` from its last TD error
``δ_i``; the bias this introduces is corrected by importance-sampling weights
``w_i = (N · P(i))^(-β) / max_j w_j`` with β annealed linearly to 1 by the end
of training. New transitions get the largest priority seen so far, so each is
replayed at least about once before its TD error is known.

The sampling rule lives in :class:`ProportionalSampler` (a :class:`SumTree`
plus the α/β/ε bookkeeping), apart from the transition storage, so the n-step
buffer reuses it unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.batch import Batch
from dqnbench.builtin.replays import RingStorage
from dqnbench.builtin.sumtree import SumTree
from dqnbench.hookspecs import hookimpl


def priorities_from_td(td_errors: np.ndarray, alpha: float, eps: float) -> np.ndarray:
    """Stored priorities ``(|δ| + ε)^α`` (Schaul et al. 2016, eq. 1 with p = |δ| + ε)."""
    return (np.abs(np.asarray(td_errors, dtype=np.float64)) + eps) ** alpha


def importance_weights(probabilities: np.ndarray, size: int, beta: float) -> np.ndarray:
    """``(N · P(i))^(-β)`` normalised by the batch's largest weight, so weights only scale down.

    :param probabilities: ``P(i)`` of each sampled transition.
    :param size: ``N``, how many transitions the buffer holds.
    """
    weights = (size * np.asarray(probabilities, dtype=np.float64)) ** (-beta)
    return weights / weights.max()


def annealed_beta(beta0: float, step: int, total_steps: int | None) -> float:
    """β linearly from ``beta0`` at step 0 to 1 at ``total_steps`` (constant ``beta0`` if None)."""
    if total_steps is None:
        return beta0
    return beta0 + (1.0 - beta0) * min(1.0, step / total_steps)


def check_per_params(alpha: float, beta: float, eps: float, total_steps: int | None) -> None:
    """Raise ValueError naming the first out-of-range PER parameter."""
    if not float(alpha) >= 0.0:
        raise ValueError(f"alpha must be >= 0 (0 = uniform sampling), got {alpha}")
    if not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if not float(eps) > 0.0:
        raise ValueError(f"eps must be > 0 so every transition stays sampleable, got {eps}")
    if total_steps is not None and (
        isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0
    ):
        raise ValueError(f"total_steps must be a positive integer or None, got {total_steps!r}")


def _to_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """NumPy view of a tensor wherever it lives (tolerates one still attached to the graph)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class ProportionalSampler:
    """Proportional prioritisation over the slots of a storage of ``capacity`` transitions.

    The storage tells it when a slot is (re)written (:meth:`on_add`); it draws
    slots and their importance weights (:meth:`sample`) and takes TD errors
    back (:meth:`update`).
    """

    def __init__(self, capacity: int, alpha: float, beta: float, eps: float, total_steps: int | None) -> None:
        check_per_params(alpha, beta, eps, total_steps)
        self.tree = SumTree(capacity)
        self.alpha = float(alpha)
        self.beta0 = float(beta)
        self.eps = float(eps)
        self.total_steps = total_steps
        self.max_priority = 1.0

    def beta(self, step: int) -> float:
        """β at env step ``step``."""
        return annealed_beta(self.beta0, step, self.total_steps)

    def on_add(self, index: int) -> None:
        """A new transition in slot ``index`` gets the largest priority seen so far."""
        self.tree.set_one(index, self.max_priority)

    def sample(self, batch_size: int, size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``batch_size`` slots (stratified) and their normalised importance weights."""
        indices = self.tree.sample_stratified(batch_size)
        probabilities = self.tree.get(indices) / self.tree.total
        weights = importance_weights(probabilities, size, self.beta(step))
        return indices, weights.astype(np.float32)

    def update(self, indices: torch.Tensor | np.ndarray, td_errors: torch.Tensor | np.ndarray) -> None:
        """Set the priorities of the slots just learned from to ``(|δ| + ε)^α``."""
        indices = np.asarray(_to_numpy(indices), dtype=np.int64).reshape(-1)
        td = np.asarray(_to_numpy(td_errors), dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(td)):
            raise ValueError("prioritized replay got non-finite TD errors (did the loss diverge?)")
        priorities = priorities_from_td(td, self.alpha, self.eps)
        self.tree.update(indices, priorities)
        if priorities.size:
            self.max_priority = max(self.max_priority, float(priorities.max()))


class PrioritizedReplay:
    """One-step transitions in a ring buffer, replayed by proportional priority."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        gamma: float,
        alpha: float,
        beta: float,
        eps: float,
        total_steps: int | None,
    ) -> None:
        self.storage = RingStorage(capacity, obs_dim)
        self.sampler = ProportionalSampler(capacity, alpha, beta, eps, total_steps)
        self.gamma = float(gamma)
        self.steps = 0  # add calls = env steps, the clock of β's annealing

    @property
    def beta(self) -> float:
        """The importance-sampling exponent the next ``sample`` uses."""
        return self.sampler.beta(self.steps)

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        index = self.storage.add(obs, action, reward, next_obs, terminated)
        self.sampler.on_add(index)
        self.steps += 1

    def sample(self, batch_size: int) -> Batch:
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
            discounts=torch.full((batch_size,), self.gamma),
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        self.sampler.update(indices, td_errors)

    def __len__(self) -> int:
        return self.storage.size


def prioritized(
    capacity: int,
    obs_dim: int,
    gamma: float,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-6,
    total_steps: int | None = None,
) -> PrioritizedReplay:
    """Proportional prioritised replay (Schaul et al. 2016).

    :param alpha: priority exponent α; 0 is uniform sampling, 1 fully proportional.
    :param beta: initial importance-sampling exponent β, annealed linearly to 1.
    :param eps: ε added to ``|δ|`` so no transition's priority is 0.
    :param total_steps: env steps over which β reaches 1; the engine passes the
        experiment's ``total_steps``. None keeps β constant.
    """
    return PrioritizedReplay(capacity, obs_dim, gamma, alpha, beta, eps, total_steps)


@hookimpl
def dqnbench_replays() -> dict:
    return {"prioritized": prioritized}
