"""Built-in replay ``nstep``: n-step returns, replayed uniformly or by priority.

Multi-step targets (Sutton 1988; used in DQN by Hessel et al. 2018, "Rainbow"):
the buffer stores ``(s_t, a_t, R_t^(k), s_{t+k}, terminated)`` with
``R_t^(k) = Σ_{i<k} γ^i r_{t+i}`` and puts ``γ^k`` in ``Batch.discounts``, so
the learner's target ``R + discount · (1 - terminated) · max_a Q(s', a)`` is the
n-step target without knowing ``n``. ``k = n`` inside an episode and
``k < n`` for the last steps of an episode, which ends where ``add`` is told
so (``terminated`` or ``truncated``), for a single run as for lock-step members.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.nstep``).
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.builtin.prioritized import ProportionalSampler, check_per_params, to_numpy
from dqnbench.builtin.replay_memory import nstep_bytes
from dqnbench.builtin.replays import make_storage, rows_batch
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl


class NStepReplay:
    """n-step transitions, each with its own bootstrap discount ``γ^k``, for K lock-step members or one run.

    ``add`` stores one-step rows (a leading K, or 1 for a single run), which
    keeps it a single write per env step (no per-member pending queues, which
    would need a Python loop over members); n-step returns are formed when
    sampled (:meth:`nstep`), cut exactly by the ``terminated`` and
    ``truncated`` flags. The sampled ``Batch`` has fields ``(K, B, …)``, or a
    single run's ``(B, …)``.
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        gamma: float,
        n: int,
        sampler: ProportionalSampler | None = None,
        members: int | None = None,
    ) -> None:
        if capacity < n:
            raise ValueError(f"capacity must be at least n = {n} to hold one n-step window, got {capacity}")
        extra = 0 if sampler is None else sampler.tree.nbytes()
        self.storage = make_storage(capacity, obs_dim, members, done=True, extra_bytes=extra)
        self.members = members
        self.gamma = float(gamma)
        self.n = n
        self.sampler = sampler
        self.powers = self.gamma ** np.arange(n + 1, dtype=np.float64)  # γ^k for k = 0..n
        self.discount_of = self.powers.astype(np.float32)  # Batch.discounts for k accumulated steps
        self.steps = 0  # add calls = env steps, the clock of β's annealing
        self._weights = torch.empty(0)

    @property
    def beta(self) -> float | None:
        """β the next ``sample`` uses (None without prioritisation)."""
        return None if self.sampler is None else self.sampler.beta(self.steps)

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """Store one row of one-step transitions: the start n − 1 slots back now has a complete window."""
        self.steps += 1
        index = self.storage.add(obs, actions, rewards, next_obs, terminated, truncated)
        if self.sampler is not None:
            complete = (index - (self.n - 1)) % self.storage.capacity if self.storage.size >= self.n else None
            self.sampler.on_add(complete, hidden=index if self.n > 1 else None)

    def sample(self, batch_size: int) -> Batch:
        """A ``Batch`` of n-step transitions, each member's from its own stream: ``(K, B, …)``, a run's ``(B, …)``."""
        if self.sampler is None:
            indices = np.random.randint(0, len(self), size=(self.storage.rows, batch_size))
            # counted from the oldest slot: the newest n − 1 are not sampleable
            indices = (self.storage.oldest + indices) % self.storage.capacity
            if self._weights.shape != indices.shape:  # unit weights, allocated once (read-only for the learner)
                self._weights = torch.ones(indices.shape)
            weights = self._weights
        else:
            indices, raw_weights = self.sampler.sample(batch_size, len(self), self.steps)
            weights = torch.from_numpy(raw_weights)
        obs, actions, rewards, next_obs, terminated, discounts = self.nstep(indices)
        fields = obs, actions, rewards, next_obs, terminated, weights, torch.from_numpy(indices), discounts
        return rows_batch(self.members, *fields)

    def nstep(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """The n-step transitions starting at slots ``indices (R, B)`` (all sampleable), from the one-step rows.

        Walks the window forward one slot at a time for all K·B starts: step j
        adds ``γ^j r_{t+j}`` while the episode is still running, and the last
        step taken gives ``next_obs`` and ``terminated``; a ``done`` step ends
        the window (Sutton & Barto 2018, eq. 7.1, with the return truncated at
        the episode's end). Returns obs, actions, rewards, next_obs,
        terminated, discounts ``γ^k``.
        """
        storage, capacity = self.storage, self.storage.capacity
        rewards, done = storage.views["rewards"], storage.views["done"]
        start = storage.flat(indices)
        returns = rewards.take(start).astype(np.float64)
        last = indices  # slot of the window's last step
        steps = np.ones(indices.shape, dtype=np.int64)
        running = ~done.take(start)
        for j in range(1, self.n):
            if not running.any():
                break
            slot = (indices + j) % capacity
            position = storage.flat(slot)
            returns += np.where(running, self.powers[j] * rewards.take(position), 0.0)
            last = np.where(running, slot, last)
            steps += running
            running &= ~done.take(position)
        return (
            storage.obs_at(indices),
            storage.take("actions", start),
            torch.from_numpy(returns.astype(np.float32)),
            storage.next_obs_at(last),
            storage.take("terminated", storage.flat(last)),
            torch.from_numpy(self.discount_of[steps]),
        )

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Reprioritise when prioritised; uniform n-step replay ignores TD errors.

        Slots that are no longer sampleable (rewritten since they were
        sampled) are skipped, so an open window never gets a priority; for K
        members, so are rows that are not finite.
        """
        if self.sampler is None:
            return
        indices = np.asarray(to_numpy(indices), dtype=np.int64)
        age = (self.storage.cursor - 1 - indices) % self.storage.capacity
        keep = (age >= self.n - 1) & (age < self.storage.size)
        if self.members is None:  # a single run's update takes no mask: drop the entries instead
            self.sampler.update(indices[keep], to_numpy(td_errors).reshape(indices.shape)[keep])
            return
        self.sampler.update(indices, td_errors, None if keep.all() else keep)

    def state_dict(self) -> dict[str, object]:
        """Storage, sampler and β's clock, for a checkpoint."""
        state: dict[str, object] = {"storage": self.storage.state_dict(), "steps": self.steps}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.storage.load_state_dict(state["storage"])
        self.steps = int(state["steps"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])

    def __len__(self) -> int:
        return max(0, self.storage.size - (self.n - 1))

    def nbytes(self) -> int:
        """Bytes held (what :func:`~dqnbench.builtin.replay_memory.replay_bytes` plans)."""
        return self.storage.nbytes() + (0 if self.sampler is None else self.sampler.tree.nbytes())


def check_nstep_params(n: int, prioritized: bool) -> None:
    """Raise ValueError naming the first out-of-range n-step parameter."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(prioritized, bool):
        raise ValueError(f"prioritized must be true or false, got {prioritized!r}")


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
    members: int | None = None,
) -> NStepReplay:
    """n-step return replay (Rainbow's multi-step learning, Hessel et al. 2018), per member for K members.

    :param n: steps accumulated per sampled transition; 1 is ordinary one-step replay.
    :param prioritized: sample by proportional priority (Schaul et al. 2016)
        instead of uniformly; ``alpha``, ``beta``, ``eps`` and ``total_steps``
        are then used as in the ``prioritized`` buffer (and ignored otherwise),
        the first three per member in a fused group.
    """
    check_nstep_params(n, prioritized)
    check_per_params(alpha, beta, eps, total_steps)
    sampler = ProportionalSampler(capacity, alpha, beta, eps, total_steps, members) if prioritized else None
    return NStepReplay(capacity, obs_dim, gamma, n, sampler, members)


nstep.supports_members = True  # rows of K members or of one run (see the dqnbench_replays hookspec)
# the prioritized sampler's exponent, correction and floor per member in a fused group (not γ: one n-step return rule)
nstep.memberwise = ("alpha", "beta", "eps")
nstep.memory_bytes = nstep_bytes  # the pre-flight's memory check (see the hookspec)
nstep.learning_lag = lambda n=3, **_: n - 1  # the newest n - 1 transitions wait for their n-step return


@hookimpl
def dqnbench_replays() -> dict:
    return {"nstep": nstep}
