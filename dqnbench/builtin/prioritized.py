"""Built-in replay ``prioritized``: proportional prioritised experience replay.

Schaul, Quan, Antonoglou & Silver (2016), "Prioritized Experience Replay",
ICLR. Transition ``i`` is replayed with probability
``P(i) = p_i / Σ_k p_k`` where ``p_i = (|δ_i| + ε)^α`` from its last TD error
``δ_i``; the bias this introduces is corrected by importance-sampling weights
``w_i = (N · P(i))^(-β) / max_j w_j`` with β annealed linearly to 1 by the end
of training. New transitions get the largest priority seen so far, so each is
replayed at least about once before its TD error is known.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.prioritized``).
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.builtin.replay_memory import prioritized_bytes
from dqnbench.builtin.replays import check_gamma, full_discounts, make_storage, rows_batch
from dqnbench.builtin.sumtree import SumTree, sum_tree_bytes
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.members import PerMember, as_array, each_member


def priorities_from_td(td_errors: np.ndarray, alpha: float | np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """Stored priorities ``(|δ| + ε)^α`` (Schaul et al. 2016, eq. 1 with p = |δ| + ε); ``alpha`` and ``eps`` may be
    ``(K, 1)`` columns of K members' own values."""
    return (np.abs(np.asarray(td_errors, dtype=np.float64)) + eps) ** alpha


def importance_weights(probabilities: np.ndarray, size: int, beta: float | np.ndarray) -> np.ndarray:
    """``(N · P(i))^(-β)`` normalised by the batch's largest weight, so weights only scale down.

    :param probabilities: ``P(i)`` of each sampled transition; for lock-step a
        ``(K, B)`` array, each member's row normalised by its own largest weight.
    :param size: ``N``, how many transitions the buffer holds (per member).
    :param beta: β, or K members' own as a ``(K, 1)`` column.
    """
    weights = (size * np.asarray(probabilities, dtype=np.float64)) ** (-beta)
    return weights / weights.max(axis=-1, keepdims=True)


def annealed_beta(beta0: float | np.ndarray, step: int, total_steps: int | None) -> float | np.ndarray:
    """β linearly from ``beta0`` at step 0 to 1 at ``total_steps`` (constant ``beta0`` if None); elementwise for
    an array of members' own β₀."""
    if total_steps is None:
        return beta0
    return beta0 + (1.0 - beta0) * min(1.0, step / total_steps)


def check_per_params(alpha: float, beta: float, eps: float, total_steps: int | None) -> None:
    """Raise ValueError naming the first out-of-range PER parameter (each member's, for a :class:`PerMember`)."""
    alphas, betas, epsilons = each_member(alpha, beta, eps)
    for value in alphas:
        if not float(value) >= 0.0:
            raise ValueError(f"alpha must be >= 0 (0 = uniform sampling), got {value}")
    for value in betas:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {value}")
    for value in epsilons:
        if not float(value) > 0.0:
            raise ValueError(f"eps must be > 0 so every transition stays sampleable, got {value}")
    if total_steps is not None and (
        isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0
    ):
        raise ValueError(f"total_steps must be a positive integer or None, got {total_steps!r}")


def member_column(value: float | PerMember) -> float | np.ndarray:
    """A number as a float, or a fused group's :class:`PerMember` as a ``(K, 1)`` float64 column over ``(K, B)``."""
    column = as_array(value)
    return float(value) if column is None else column[:, None]


def to_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """NumPy view of a tensor wherever it lives (tolerates one still attached to the graph)."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class ProportionalSampler:
    """Proportional prioritisation over ``capacity`` slots: one sum tree and max priority per run or member.

    The storage tells it when a slot is (re)written (:meth:`on_add`); it draws
    slots and their importance weights (:meth:`sample`) and takes TD errors
    back (:meth:`update`). With ``members=K`` slots, weights and TD errors are
    ``(K, B)``, each member drawing from its own priorities with its own max
    priority; a member whose TD errors are not finite is skipped instead of
    refused. In a fused group ``alpha``, ``beta`` and ``eps`` may be
    :class:`PerMember`: each member then uses its own (``(K, 1)`` columns).
    """

    def __init__(
        self,
        capacity: int,
        alpha: float,
        beta: float,
        eps: float,
        total_steps: int | None,
        members: int | None = None,
    ) -> None:
        check_per_params(alpha, beta, eps, total_steps)
        self.tree = SumTree(capacity, members)
        self.members = members
        if members is not None:  # every member-wise value must have a member's length
            for value in (alpha, beta, eps):
                if isinstance(value, PerMember) and len(value) != members:
                    raise ValueError(f"{len(value)} member-wise values for {members} members")
        self.alpha = member_column(alpha)
        self.beta0 = member_column(beta)
        self.eps = member_column(eps)
        self.total_steps = total_steps
        #: the largest priority seen so far: a float for a single run, each member's ``(K,)`` otherwise
        self.max_priority: float | np.ndarray = 1.0 if members is None else np.ones(members, dtype=np.float64)
        self.rows = None if members is None else np.arange(members, dtype=np.int64)[:, None]

    def state_dict(self) -> dict[str, object]:
        """The sum trees and the max priority so far, for a checkpoint."""
        return {"tree": self.tree.state_dict(), "max_priority": self.max_priority}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.tree.load_state_dict(state["tree"])
        saved = state["max_priority"]
        self.max_priority = float(saved) if self.members is None else np.array(saved, dtype=np.float64)

    def beta(self, step: int) -> float | np.ndarray:
        """β at env step ``step`` (members step together; member-wise β₀: a ``(K, 1)`` column)."""
        return annealed_beta(self.beta0, step, self.total_steps)

    def on_add(self, index: int | None, hidden: int | None = None) -> None:
        """Slot ``index`` becomes sampleable at the max priority seen so far (Schaul et al. 2016).

        ``hidden`` is a slot just written that must not be sampled yet (an
        n-step window still open): its priority becomes 0.
        """
        if index is not None:
            self.tree.set_one(index, self.max_priority)
        if hidden is not None:
            self.tree.set_one(hidden, 0.0)

    def sample(self, batch_size: int, size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(R, batch_size)`` slots (stratified per member; a single run's one row) and their weights,
        normalised per member."""
        indices = self.tree.sample_stratified(batch_size).reshape(-1, batch_size)
        probabilities = self.tree.probabilities(indices)
        weights = importance_weights(probabilities, size, self.beta(step))
        return indices, weights.astype(np.float32)

    def update(
        self,
        indices: torch.Tensor | np.ndarray,
        td_errors: torch.Tensor | np.ndarray,
        keep: np.ndarray | None = None,
    ) -> None:
        """Set the priorities of the slots just learned from to ``(|δ| + ε)^α``.

        A single run refuses non-finite TD errors. For K members, a member's row
        with any non-finite TD error (or priority) is skipped whole: its loss
        diverged, the runner records it, and its other values are no more
        trustworthy. ``keep (K, B)`` optionally drops more entries.
        """
        indices = np.asarray(to_numpy(indices), dtype=np.int64)
        td = np.asarray(to_numpy(td_errors), dtype=np.float64)
        if self.members is None:
            indices, td = indices.reshape(-1), td.reshape(-1)
            if not np.all(np.isfinite(td)):
                raise ValueError("prioritized replay got non-finite TD errors (did the loss diverge?)")
        elif indices.shape != td.shape or indices.ndim != 2 or indices.shape[0] != self.members:
            raise ValueError(f"indices {indices.shape} and td_errors {td.shape} must both be ({self.members}, B)")
        with np.errstate(over="ignore", invalid="ignore"):
            priorities = priorities_from_td(td, self.alpha, self.eps)
        if self.members is None or (keep is None and np.isfinite(priorities).all()):  # the usual case
            self.tree.update(indices, priorities)
        else:
            finite = np.isfinite(priorities).all(axis=-1, keepdims=True)
            priorities = np.where(finite, priorities, 0.0)  # only to keep max() finite below
            mask = np.broadcast_to(finite, indices.shape) if keep is None else finite & keep
            members = np.broadcast_to(self.rows, indices.shape)
            self.tree.update(indices[mask], priorities[mask], members[mask])
            priorities = np.where(mask, priorities, 0.0)
        if priorities.shape[-1]:
            top = priorities.max(axis=-1)
            if self.members is None:
                self.max_priority = max(self.max_priority, float(top))
            else:
                np.maximum(self.max_priority, top, out=self.max_priority)


class PrioritizedReplay:
    """One-step transitions in a ring buffer, replayed by proportional priority, for K members or one run.

    ``add`` takes rows (a leading K, or 1 for a single run), each member samples
    by its own priorities (see the module docstring), and the sampled ``Batch``
    has fields ``(K, B, …)``, or a single run's ``(B, …)``.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        gamma: float,
        alpha: float,
        beta: float,
        eps: float,
        total_steps: int | None,
        members: int | None = None,
    ) -> None:
        self.storage = make_storage(capacity, obs_dim, members, extra_bytes=sum_tree_bytes(capacity, members))
        self.sampler = ProportionalSampler(capacity, alpha, beta, eps, total_steps, members)
        self.members = members
        self.gamma = check_gamma(gamma)
        self.steps = 0  # add calls = env steps, the clock of β's annealing
        self._discounts = torch.empty(0)

    @property
    def beta(self) -> float:
        """The importance-sampling exponent the next ``sample`` uses."""
        return self.sampler.beta(self.steps)

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """Store one row of transitions; their slot gets each member's max priority seen so far."""
        self.sampler.on_add(self.storage.add(obs, actions, rewards, next_obs, terminated))
        self.steps += 1

    def sample(self, batch_size: int) -> Batch:
        """A ``Batch`` of B draws by priority per member: fields ``(K, B, …)``, or a single run's ``(B, …)``."""
        indices, weights = self.sampler.sample(batch_size, self.storage.size, self.steps)
        obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
        if self._discounts.shape != indices.shape:  # γ everywhere, allocated once (read-only for the learner)
            self._discounts = full_discounts(self.gamma, indices.shape)
        fields = obs, actions, rewards, next_obs, terminated, torch.from_numpy(weights), torch.from_numpy(indices)
        return rows_batch(self.members, *fields, self._discounts)

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Reprioritise the sampled slots (for members: non-finite rows, diverged members, are skipped)."""
        self.sampler.update(indices, td_errors)

    def state_dict(self) -> dict[str, object]:
        """Storage, priorities and β's clock, for a checkpoint."""
        return {"storage": self.storage.state_dict(), "sampler": self.sampler.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.storage.load_state_dict(state["storage"])
        self.sampler.load_state_dict(state["sampler"])
        self.steps = int(state["steps"])

    def __len__(self) -> int:
        return self.storage.size

    def nbytes(self) -> int:
        """Bytes held: storage and sum trees (what :func:`~dqnbench.builtin.replay_memory.replay_bytes` plans)."""
        return self.storage.nbytes() + self.sampler.tree.nbytes()


def prioritized(
    capacity: int,
    obs_dim: int,
    gamma: float,
    alpha: float = 0.6,
    beta: float = 0.4,
    eps: float = 1e-6,
    total_steps: int | None = None,
    members: int | None = None,
) -> PrioritizedReplay:
    """Proportional prioritised replay (Schaul et al. 2016); for K members, one sum tree each.

    :param alpha: priority exponent α; 0 is uniform sampling, 1 fully proportional.
    :param beta: initial importance-sampling exponent β, annealed linearly to 1.
    :param eps: ε added to ``|δ|`` so no transition's priority is 0.
    :param total_steps: env steps over which β reaches 1; the engine passes the
        experiment's ``total_steps``. None keeps β constant.
    """
    return PrioritizedReplay(capacity, obs_dim, gamma, alpha, beta, eps, total_steps, members)


prioritized.supports_members = True  # rows of K members or of one run (see the dqnbench_replays hookspec)
# agent.gamma, and the priority exponent, correction and floor per member in a fused group (dqnbench.plugin.members)
prioritized.memberwise = ("gamma", "alpha", "beta", "eps")
prioritized.memory_bytes = prioritized_bytes  # the pre-flight's memory check (see the hookspec)


@hookimpl
def dqnbench_replays() -> dict:
    return {"prioritized": prioritized}
