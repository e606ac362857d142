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

Lock-step (``prioritized.lockstep``, see :mod:`dqnbench.agent.lockstep`): K members'
transitions in one :class:`MemberRingStorage` and K sum trees in one
:class:`~dqnbench.builtin.sumtree.SumTrees`, sampled by
:class:`MembersProportionalSampler`: each member draws from its own priorities
with its own max priority, all K·B stratified walks descending together, and
its weights are normalised by its own largest weight in the batch. TD-error
rows that are not finite (a member whose loss diverged) are skipped instead of
refused, so the other members keep training.
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.builtin.replays import ACTION_DTYPE, RingStorage
from dqnbench.builtin.sumtree import SumTree, SumTrees
from dqnbench.plugin.hookspecs import hookimpl


def priorities_from_td(td_errors: np.ndarray, alpha: float, eps: float) -> np.ndarray:
    """Stored priorities ``(|δ| + ε)^α`` (Schaul et al. 2016, eq. 1 with p = |δ| + ε)."""
    return (np.abs(np.asarray(td_errors, dtype=np.float64)) + eps) ** alpha


def importance_weights(probabilities: np.ndarray, size: int, beta: float) -> np.ndarray:
    """``(N · P(i))^(-β)`` normalised by the batch's largest weight, so weights only scale down.

    :param probabilities: ``P(i)`` of each sampled transition; for lock-step a
        ``(K, B)`` array, each member's row normalised by its own largest weight.
    :param size: ``N``, how many transitions the buffer holds (per member).
    """
    weights = (size * np.asarray(probabilities, dtype=np.float64)) ** (-beta)
    return weights / weights.max(axis=-1, keepdims=True)


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


def to_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
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
        indices = np.asarray(to_numpy(indices), dtype=np.int64).reshape(-1)
        td = np.asarray(to_numpy(td_errors), dtype=np.float64).reshape(-1)
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


class MemberRingStorage:
    """K lock-step members' transitions as arrays ``(K, capacity, …)`` with one shared write cursor.

    Members step together, so slot ``i`` of every member was written at the
    same env step. Rows are gathered through flat views (``np.take`` on
    ``k · capacity + i``), the cheapest NumPy gather. Besides the one-step
    fields it keeps ``done = terminated | truncated``, which n-step replay needs
    to cut windows at episode ends.
    """

    def __init__(self, members: int, capacity: int, obs_dim: int) -> None:
        if members <= 0:
            raise ValueError(f"members must be positive, got {members}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.members, self.capacity = members, capacity
        self.obs = np.zeros((members, capacity, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((members, capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((members, capacity), dtype=ACTION_DTYPE)
        self.rewards = np.zeros((members, capacity), dtype=np.float32)
        self.terminated = np.zeros((members, capacity), dtype=np.bool_)
        self.done = np.zeros((members, capacity), dtype=np.bool_)
        #: flat position of each member's slot 0, ``(K, 1)`` to broadcast against ``(K, B)`` slots
        self.offsets = (np.arange(members, dtype=np.int64) * capacity)[:, None]
        self.cursor = self.size = 0

    def add(self, obs, actions, rewards, next_obs, terminated, truncated=None) -> int:
        """Write one transition per member (arrays with leading dimension K); return the slot written."""
        i = self.cursor
        self.obs[:, i], self.actions[:, i], self.rewards[:, i] = obs, actions, rewards
        self.next_obs[:, i], self.terminated[:, i] = next_obs, terminated
        self.done[:, i] = self.terminated[:, i] if truncated is None else self.terminated[:, i] | truncated
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def flat(self, indices: np.ndarray) -> np.ndarray:
        """Flat positions ``(K, B)`` of each member's slots ``indices (K, B)``."""
        return self.offsets + indices

    def take_rows(self, array: np.ndarray, flat: np.ndarray) -> torch.Tensor:
        """``array``'s entries at flat positions ``(K, B)`` as a tensor ``(K, B, …)``."""
        rows = array.reshape(self.members * self.capacity, *array.shape[2:])
        return torch.from_numpy(rows.take(flat, axis=0))

    def take_actions(self, flat: np.ndarray) -> torch.Tensor:
        """Actions at flat positions ``(K, B)``, widened to the int64 of ``Batch.actions``."""
        return torch.from_numpy(self.actions.reshape(-1).take(flat).astype(np.int64))

    def gather(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Each member's rows at slots ``indices (K, B)``: obs, actions, rewards, next_obs, terminated."""
        flat = self.flat(indices)
        return (
            self.take_rows(self.obs, flat),
            self.take_actions(flat),
            self.take_rows(self.rewards, flat),
            self.take_rows(self.next_obs, flat),
            self.take_rows(self.terminated, flat),
        )


class MembersProportionalSampler:
    """:class:`ProportionalSampler` for K lock-step members: one sum tree and one max priority per member.

    The storage tells it which slot became sampleable (:meth:`on_add`); it
    draws ``(K, B)`` slots and weights (:meth:`sample`) and takes ``(K, B)`` TD
    errors back (:meth:`update`), skipping members whose errors are not finite.
    """

    def __init__(
        self, members: int, capacity: int, alpha: float, beta: float, eps: float, total_steps: int | None
    ) -> None:
        check_per_params(alpha, beta, eps, total_steps)
        self.trees = SumTrees(members, capacity)
        self.members = members
        self.alpha = float(alpha)
        self.beta0 = float(beta)
        self.eps = float(eps)
        self.total_steps = total_steps
        self.max_priority = np.ones(members, dtype=np.float64)
        self.rows = np.arange(members, dtype=np.int64)[:, None]

    def beta(self, step: int) -> float:
        """β at env step ``step`` (the same for every member: they step together)."""
        return annealed_beta(self.beta0, step, self.total_steps)

    def on_add(self, index: int | None, hidden: int | None = None) -> None:
        """Slot ``index`` becomes sampleable at each member's max priority seen so far (Schaul et al. 2016).

        ``hidden`` is a slot just written that must not be sampled yet (an
        n-step window still open): its priority becomes 0. Both in one climb.
        """
        slots = [s for s in (index, hidden) if s is not None]
        if not slots:
            return
        priorities = np.zeros((self.members, len(slots)))
        if index is not None:
            priorities[:, 0] = self.max_priority
        self.trees.set_slots(np.array(slots), priorities)

    def sample(self, batch_size: int, size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(K, batch_size)`` slots, stratified per member, and their per-member normalised weights."""
        indices = self.trees.sample_stratified(batch_size)
        probabilities = self.trees.get(indices) / self.trees.totals[:, None]
        weights = importance_weights(probabilities, size, self.beta(step))
        return indices, weights.astype(np.float32)

    def update(
        self,
        indices: torch.Tensor | np.ndarray,
        td_errors: torch.Tensor | np.ndarray,
        keep: np.ndarray | None = None,
    ) -> None:
        """Set the priorities of the slots just learned from to ``(|δ| + ε)^α``, member by member.

        A member's row with any non-finite TD error (or priority) is skipped
        whole: its loss diverged, the runner records it, and its other values
        are no more trustworthy. ``keep (K, B)`` optionally drops more entries.
        """
        indices = np.asarray(to_numpy(indices), dtype=np.int64)
        td = np.asarray(to_numpy(td_errors), dtype=np.float64)
        if indices.shape != td.shape or indices.ndim != 2 or indices.shape[0] != self.members:
            raise ValueError(f"indices {indices.shape} and td_errors {td.shape} must both be ({self.members}, B)")
        with np.errstate(over="ignore", invalid="ignore"):
            priorities = priorities_from_td(td, self.alpha, self.eps)
        finite = np.isfinite(priorities).all(axis=1, keepdims=True)
        if keep is None and finite.all():  # the usual case: every member's whole row
            self.trees.update(indices, priorities)
        else:
            priorities = np.where(finite, priorities, 0.0)  # only to keep max() finite below
            mask = np.broadcast_to(finite, indices.shape) if keep is None else finite & keep
            members = np.broadcast_to(self.rows, indices.shape)
            self.trees.update(indices[mask], priorities[mask], members[mask])
            priorities = np.where(mask, priorities, 0.0)
        if priorities.shape[1]:
            np.maximum(self.max_priority, priorities.max(axis=1), out=self.max_priority)


class MembersPrioritizedReplay:
    """Proportional prioritised replay for K lock-step members (see the module docstring)."""

    def __init__(
        self,
        members: int,
        capacity: int,
        obs_dim: int,
        gamma: float,
        alpha: float,
        beta: float,
        eps: float,
        total_steps: int | None,
    ) -> None:
        self.storage = MemberRingStorage(members, capacity, obs_dim)
        self.sampler = MembersProportionalSampler(members, capacity, alpha, beta, eps, total_steps)
        self.gamma = float(gamma)
        self.steps = 0  # add calls = env steps, the clock of β's annealing
        self._discounts = torch.empty(0)

    @property
    def beta(self) -> float:
        """The importance-sampling exponent the next ``sample`` uses."""
        return self.sampler.beta(self.steps)

    def add(self, obs, actions, rewards, next_obs, terminated, truncated=None) -> None:
        """Store one transition per member; the slot gets each member's max priority."""
        self.sampler.on_add(self.storage.add(obs, actions, rewards, next_obs, terminated, truncated))
        self.steps += 1

    def sample(self, batch_size: int) -> Batch:
        """A ``Batch`` of ``(K, B, …)`` fields: each member's B draws by its own priorities."""
        indices, weights = self.sampler.sample(batch_size, self.storage.size, self.steps)
        obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
        if self._discounts.shape != indices.shape:  # γ everywhere, allocated once (read-only for the learner)
            self._discounts = torch.full(indices.shape, self.gamma)
        return Batch(
            obs=obs,
            actions=actions,
            rewards=rewards,
            next_obs=next_obs,
            terminated=terminated,
            weights=torch.from_numpy(weights),
            indices=torch.from_numpy(indices),
            discounts=self._discounts,
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Reprioritise each member's sampled slots; non-finite rows (diverged members) are skipped."""
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


def prioritized_members(
    members: int,
    capacity: int,
    obs_dim: int,
    gamma: float,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-6,
    total_steps: int | None = None,
) -> MembersPrioritizedReplay:
    """``prioritized`` for K lock-step members: the same params, one sum tree per member."""
    return MembersPrioritizedReplay(members, capacity, obs_dim, gamma, alpha, beta, eps, total_steps)


prioritized.lockstep = prioritized_members  # lock-step support (see dqnbench/agent/lockstep.py)


@hookimpl
def dqnbench_replays() -> dict:
    return {"prioritized": prioritized}
