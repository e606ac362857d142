"""Built-in replay ``nstep``: n-step returns, replayed uniformly or by priority.

Multi-step targets (Sutton 1988; used in DQN by Hessel et al. 2018, "Rainbow"):
the buffer stores ``(s_t, a_t, R_t^(k), s_{t+k}, terminated)`` with
``R_t^(k) = Σ_{i<k} γ^i r_{t+i}`` and puts ``γ^k`` in ``Batch.discounts``, so
the learner's target ``R + discount · (1 - terminated) · max_a Q(s', a)`` is the
n-step target without knowing ``n``. ``k = n`` inside an episode and
``k < n`` for the last steps of an episode.

Two ways to store. Over plain rows (vector observations, a single run) the
buffer accumulates each start state's return as the episode goes and stores
finished n-step transitions. Over one-step rows (K lock-step members, and image
observations, whose frame storage keeps one frame per consecutive step and so
cannot hold a transition whose ``next_obs`` is n steps on) it forms the n-step
returns at sample time instead (below).

Episode boundaries. A single run's ``add`` receives one transition per env
step, in order, and usually no truncation flag (the v1 ``add``), so the buffer
infers boundaries:

- ``terminated=True``: every pending start state is stored at once with its
  ``k ≤ n`` rewards, the terminal ``next_obs`` and ``terminated=True`` (an
  explicit ``truncated=True`` likewise, bootstrapping from ``next_obs``);
- a call whose ``obs`` differs (``np.array_equal``) from the previous call's
  ``next_obs`` starts a new episode, so the previous one was truncated (a time
  limit): its pending start states are stored bootstrapping from that previous
  ``next_obs``, ``terminated=False``, discount ``γ^k``.

No reward ever crosses into another episode. A reset observation exactly equal
to the previous episode's last observation would go unnoticed (unlikely with
continuous observations; frames and boolean planes are compared whole, in
their own dtype); the partial returns still pending when training stops are
never stored.

With ``prioritized = true`` the stored n-step transitions are sampled by the
same :class:`~dqnbench.builtin.prioritized.ProportionalSampler` as the
``prioritized`` buffer (Rainbow's combination).

Lock-step (``nstep.lockstep``, see
:func:`~dqnbench.plugin.hookspecs.dqnbench_replays`) is the same
:class:`NStepReplay` with ``members=K``: it stores one-step transitions of K
members in a ring (with ``done = terminated | truncated``, given explicitly
there) and forms n-step returns at sample time, looking ahead up to n − 1 slots
for all K·B samples at once (:meth:`NStepReplay.nstep`). A single run with image
observations does the same over its frame storage, whose ``done`` flags are
inferred as above (the flag of a truncated episode's last step is set when the
next episode's first ``obs`` arrives, before that step's window is complete). The result per sampled
start is what the single-run buffer stores for it (the forward view of the
n-step return, Sutton & Barto 2018, §7.1): rewards summed with γ^i up to n
steps or the first episode end, ``terminated`` only for a true termination, a
truncated window bootstrapping from its last ``next_obs``.

Window semantics at the ring's newest slots: a start is sampleable only once
its full n-step window has been written, i.e. it is at least n − 1 slots older
than the newest one; so ``len`` is ``size − (n − 1)`` and the newest n − 1
transitions are never sampled, whether or not their episode has ended (those
that ended become sampleable n − 1 steps later than in the single-run buffer,
with the same contents). No partial window ever bootstraps mid-episode with
k < n, exactly as in the single-run buffer, and the look-ahead of a sampleable
start never reaches slots the ring has overwritten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from dqnbench.builtin.prioritized import ProportionalSampler, check_per_params, to_numpy
from dqnbench.builtin.replay_memory import stores_frames
from dqnbench.builtin.replays import make_storage
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl


def nstep_return(rewards: Sequence[float], gamma: float) -> tuple[float, float]:
    """``(Σ_i γ^i r_i, γ^k)`` of the ``k = len(rewards)`` rewards accumulated."""
    total = 0.0
    for reward in reversed(rewards):
        total = reward + gamma * total
    return total, gamma ** len(rewards)


class NStepReplay:
    """n-step transitions, each with its own bootstrap discount ``γ^k``, for one run or K lock-step members.

    A single run (``members=None``) with vector observations accumulates each
    start state's return as the episode goes and stores finished n-step
    transitions in the ring (see the module docstring on episode boundaries).
    K members (``members=K``) store one-step rows, which keeps ``add`` a single
    write per env step (no per-member pending queues, which would need a Python
    loop over members), and form n-step returns when sampled (:meth:`nstep`),
    cut exactly by the explicit ``truncated`` flags; so does a single run with
    image observations (``windowed``), its ``done`` flags inferred.
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
        #: one-step rows, n-step returns formed at sample time (lock-step, and frame storage)
        self.windowed = members is not None or stores_frames(obs_dim)
        if self.windowed and capacity < n:
            raise ValueError(f"capacity must be at least n = {n} to hold one n-step window, got {capacity}")
        extra = (0 if self.windowed else capacity) + (0 if sampler is None else sampler.tree.nbytes())
        self.storage = make_storage(capacity, obs_dim, members, done=self.windowed, extra_bytes=extra)
        self.members = members
        self.gamma = float(gamma)
        self.n = n
        self.sampler = sampler
        self.powers = self.gamma ** np.arange(n + 1, dtype=np.float64)  # γ^k for k = 0..n
        self.discount_of = self.powers.astype(np.float32)  # Batch.discounts for k accumulated steps
        # A single run stores finished transitions: each slot keeps k, the steps accumulated (1 byte for n < 256),
        # and γ^k is looked up when sampled (storing the float32 discount would add 9% to a CartPole transition).
        self.accumulated = None if self.windowed else np.zeros(capacity, dtype=np.min_scalar_type(n))
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()
        self.last_next_obs: np.ndarray | None = None
        self.steps = 0  # add calls = env steps, the clock of β's annealing
        self._weights = torch.empty(0)

    @property
    def beta(self) -> float | None:
        """β the next ``sample`` uses (None without prioritisation)."""
        return None if self.sampler is None else self.sampler.beta(self.steps)

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> None:
        """Store one transition (per member; a row of K with a leading K dimension for members)."""
        self.steps += 1
        if not self.windowed:
            self._accumulate(obs, action, reward, next_obs, terminated, truncated)
            return
        # one one-step row per member: the start n − 1 slots back now has a complete window
        index = self.storage.add(obs, action, reward, next_obs, terminated, truncated)
        if self.sampler is not None:
            complete = (index - (self.n - 1)) % self.storage.capacity if self.storage.size >= self.n else None
            self.sampler.on_add(complete, hidden=index if self.n > 1 else None)

    def _accumulate(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        """A single run's step: extend the pending returns, storing those whose window closes."""
        dtype = self.storage.obs.dtype
        obs = np.asarray(obs, dtype=dtype)
        next_obs = np.array(next_obs, dtype=dtype)  # a copy: compared with the next call's obs
        if self.pending and not np.array_equal(obs, self.last_next_obs):
            self._flush(self.last_next_obs, terminated=False)  # the previous episode was truncated
        self.pending.append((obs.copy(), int(action), float(reward)))
        self.last_next_obs = next_obs
        if terminated or truncated:
            self._flush(next_obs, terminated=bool(terminated))
        elif len(self.pending) == self.n:
            self._store_oldest(next_obs, terminated=False)

    def _flush(self, next_obs: np.ndarray, terminated: bool) -> None:
        while self.pending:
            self._store_oldest(next_obs, terminated)

    def _store_oldest(self, next_obs: np.ndarray, terminated: bool) -> None:
        ret, _ = nstep_return([r for _, _, r in self.pending], self.gamma)
        accumulated = len(self.pending)
        obs, action, _ = self.pending.popleft()
        index = self.storage.add(obs, action, ret, next_obs, terminated)
        self.accumulated[index] = accumulated
        if self.sampler is not None:
            self.sampler.on_add(index)

    def sample(self, batch_size: int) -> Batch:
        """A ``Batch`` of ``(*lead, B, …)`` n-step transitions, each member's from its own stream."""
        if self.sampler is None:
            indices = np.random.randint(0, len(self), size=(*self.storage.lead, batch_size))
            if self.windowed:  # counted from the oldest slot: the newest n − 1 are not sampleable
                indices = (self.storage.oldest + indices) % self.storage.capacity
            if self._weights.shape != indices.shape:  # unit weights, allocated once (read-only for the learner)
                self._weights = torch.ones(indices.shape)
            weights = self._weights
        else:
            indices, raw_weights = self.sampler.sample(batch_size, len(self), self.steps)
            weights = torch.from_numpy(raw_weights)
        if not self.windowed:
            obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
            discounts = torch.from_numpy(self.discount_of[self.accumulated[indices]])
        else:
            obs, actions, rewards, next_obs, terminated, discounts = self.nstep(indices)
        return Batch(obs, actions, rewards, next_obs, terminated, weights, torch.from_numpy(indices), discounts)

    def nstep(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """One-step rows: the n-step transitions starting at slots ``indices (*lead, B)`` (all sampleable).

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

        Over one-step rows, slots that are no longer sampleable (rewritten
        since they were sampled) are skipped, so an open window never gets a
        priority; for K members, so are rows that are not finite.
        """
        if self.sampler is None:
            return
        if not self.windowed:
            self.sampler.update(indices, td_errors)
            return
        indices = np.asarray(to_numpy(indices), dtype=np.int64)
        age = (self.storage.cursor - 1 - indices) % self.storage.capacity
        keep = (age >= self.n - 1) & (age < self.storage.size)
        if self.members is None:  # a single run's update takes no mask: drop the entries instead
            self.sampler.update(indices[keep], to_numpy(td_errors).reshape(indices.shape)[keep])
            return
        self.sampler.update(indices, td_errors, None if keep.all() else keep)

    def state_dict(self) -> dict[str, object]:
        """Storage, sampler, β's clock and (a single run's) returns still accumulating, for a checkpoint."""
        state: dict[str, object] = {"storage": self.storage.state_dict(), "steps": self.steps}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
        if not self.windowed:
            state["accumulated"] = self.accumulated
            state["pending"] = [list(entry) for entry in self.pending]  # [obs array, action, reward] per start
            state["last_next_obs"] = self.last_next_obs
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.storage.load_state_dict(state["storage"])
        self.steps = int(state["steps"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        if not self.windowed:
            np.copyto(self.accumulated, state["accumulated"])
            dtype = self.storage.obs.dtype
            self.pending = deque(
                (np.array(obs, dtype=dtype), int(action), float(reward)) for obs, action, reward in state["pending"]
            )
            last = state["last_next_obs"]
            self.last_next_obs = None if last is None else np.array(last, dtype=dtype)

    def __len__(self) -> int:
        if not self.windowed:
            return self.storage.size
        return max(0, self.storage.size - (self.n - 1))

    def nbytes(self) -> int:
        """Bytes held (what :func:`~dqnbench.builtin.replay_memory.replay_bytes` plans)."""
        accumulated = 0 if self.accumulated is None else self.accumulated.nbytes
        return self.storage.nbytes() + accumulated + (0 if self.sampler is None else self.sampler.tree.nbytes())


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
) -> NStepReplay:
    """n-step return replay (Rainbow's multi-step learning, Hessel et al. 2018).

    :param n: steps accumulated per stored transition; 1 is ordinary one-step replay.
    :param prioritized: sample by proportional priority (Schaul et al. 2016)
        instead of uniformly; ``alpha``, ``beta``, ``eps`` and ``total_steps``
        are then used as in the ``prioritized`` buffer (and ignored otherwise).
    """
    check_nstep_params(n, prioritized)
    check_per_params(alpha, beta, eps, total_steps)
    sampler = ProportionalSampler(capacity, alpha, beta, eps, total_steps) if prioritized else None
    return NStepReplay(capacity, obs_dim, gamma, n, sampler)


def nstep_members(
    members: int,
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
    """``nstep`` for K lock-step members: the same params; n-step returns formed at sample time."""
    check_nstep_params(n, prioritized)
    check_per_params(alpha, beta, eps, total_steps)
    sampler = ProportionalSampler(capacity, alpha, beta, eps, total_steps, members) if prioritized else None
    return NStepReplay(capacity, obs_dim, gamma, n, sampler, members=members)


nstep.lockstep = nstep_members  # lock-step support (see the dqnbench_replays hookspec)


@hookimpl
def dqnbench_replays() -> dict:
    return {"nstep": nstep}
