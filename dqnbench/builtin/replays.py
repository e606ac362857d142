"""Built-in replay: ``uniform``, a preallocated ring buffer.

Storage is NumPy arrays allocated once at ``capacity``: ``add`` writes one row
in place (no Python lists per step), ``sample`` draws indices from NumPy's
global RNG (seeded by the runner) and hands torch views of the gathered rows.
Observations keep their own shape and dtype (``obs_dim`` is an
:class:`~dqnbench.plugin.obs.ObsSpec`; uint8 frames stay one byte).
:func:`make_storage` picks the storage every built-in buffer uses: obs and
next_obs rows (:class:`RingStorage`) for vectors, one frame per transition with
stacks rebuilt at sample time (:class:`~dqnbench.builtin.frames.FrameStorage`)
for images; both refuse, when built, a replay larger than the memory available
(:mod:`dqnbench.builtin.replay_memory`).

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.replays``).
"""

from __future__ import annotations

import numpy as np
import torch

from dqnbench.builtin.frames import FrameStorage
from dqnbench.builtin.replay_memory import ACTION_DTYPE, as_obs_spec, storage_bytes, stores_frames, uniform_bytes
from dqnbench.builtin.ring import TransitionRing
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.members import PerMember

__all__ = ["ACTION_DTYPE", "RingStorage", "UniformReplay", "as_obs_spec", "make_storage", "rows_batch", "uniform"]


class RingStorage(TransitionRing):
    """Fixed-capacity transition arrays with obs and next_obs rows, for one run or K members.

    The storage for vector observations (CartPole's few floats), where a row
    copy is cheaper than rebuilding anything. Observations keep their own
    shape and dtype (``obs_dim`` is an :class:`~dqnbench.plugin.obs.ObsSpec`,
    or a plain int for float32 vectors); the layout is
    :class:`~dqnbench.builtin.ring.TransitionRing`'s. With ``done``, it also
    keeps ``terminated | truncated``, which lock-step n-step replay needs to
    cut windows at episode ends.

    Kept separate from the sampling rule so every buffer (uniform,
    prioritised, n-step) shares it.
    """

    fields = ("obs", "next_obs", "actions", "rewards", "terminated")
    state_arrays = ("obs", "next_obs", "actions", "rewards", "terminated")

    def __init__(
        self, capacity: int, obs_dim: int, members: int | None = None, done: bool = False, extra_bytes: int = 0
    ) -> None:
        spec = as_obs_spec(obs_dim)
        super().__init__(capacity, spec, members, done, storage_bytes(capacity, spec, members, done) + extra_bytes)
        slots = (capacity, *self.lead)
        self.obs = np.zeros((*slots, *spec.shape), dtype=spec.dtype)
        self.next_obs = np.zeros((*slots, *spec.shape), dtype=spec.dtype)
        self._make_views()

    def add(self, obs, action, reward, next_obs, terminated, truncated=None) -> int:
        """Write one row of transitions (K members', or a single run's one); return the slot written."""
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
        self.count += 1
        return i

    def obs_at(self, indices: np.ndarray) -> torch.Tensor:
        return self.take("obs", self.flat(indices))

    def next_obs_at(self, indices: np.ndarray) -> torch.Tensor:
        return self.take("next_obs", self.flat(indices))

    def gather(self, indices: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Rows at slots ``indices (R, B)``: obs, actions, rewards, next_obs, terminated."""
        flat = self.flat(indices)
        return tuple(self.take(name, flat) for name in ("obs", "actions", "rewards", "next_obs", "terminated"))

    def nbytes(self) -> int:
        return super().nbytes() + self.obs.nbytes + self.next_obs.nbytes


def make_storage(
    capacity: int, obs_dim: int, members: int | None = None, done: bool = False, extra_bytes: int = 0
) -> RingStorage | FrameStorage:
    """The storage for these observations: one frame per transition for images and stacks, rows for vectors.

    ``extra_bytes`` is what the buffer allocates beside the storage (a sum
    tree, …), counted in the check that the replay fits in memory.
    """
    storage = FrameStorage if stores_frames(obs_dim) else RingStorage
    return storage(capacity, obs_dim, members, done=done, extra_bytes=extra_bytes)


def full_discounts(gamma: float | PerMember, shape: tuple[int, ...]) -> torch.Tensor:
    """γ for every transition of a sample of ``shape``; a fused group's per-member γ down each member's row."""
    if isinstance(gamma, PerMember):
        return torch.tensor([float(g) for g in gamma]).view(-1, *([1] * (len(shape) - 1))).expand(shape).contiguous()
    return torch.full(shape, float(gamma))


def check_gamma(gamma: float | PerMember) -> float | PerMember:
    """γ as a float, or a fused group's per-member γ (each a float)."""
    return PerMember(float(g) for g in gamma) if isinstance(gamma, PerMember) else float(gamma)


def rows_batch(members: int | None, *fields: torch.Tensor) -> Batch:
    """The ``Batch`` of ``(R, B, …)`` fields: as they are for K members, a single run's one row ``(B, …)``."""
    return Batch(*fields) if members is not None else Batch(*(field[0] for field in fields))


class UniformReplay:
    """Experience replay sampling stored transitions uniformly with replacement, for K members or one run.

    ``add`` takes rows (a leading K, or 1 for a single run) and each member
    samples its own indices: the sampled ``Batch`` has fields ``(K, B, …)``,
    or a single run's ``(B, …)``.
    """

    def __init__(self, capacity: int, obs_dim: int, gamma: float, members: int | None = None) -> None:
        self.storage = make_storage(capacity, obs_dim, members)
        self.members = members
        self.gamma = check_gamma(gamma)
        self._constant_shape: tuple[int, ...] | None = None

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        self.storage.add(obs, actions, rewards, next_obs, terminated)

    def sample(self, batch_size: int) -> Batch:
        indices = np.random.randint(0, self.storage.size, size=(self.storage.rows, batch_size))
        obs, actions, rewards, next_obs, terminated = self.storage.gather(indices)
        weights, discounts = self._constants(indices.shape)
        fields = obs, actions, rewards, next_obs, terminated, weights, torch.from_numpy(indices), discounts
        return rows_batch(self.members, *fields)

    def _constants(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit weights and γ discounts, allocated once per batch shape (read-only for the learner)."""
        if self._constant_shape != shape:
            self._constant_shape = shape
            self._weights, self._discounts = torch.ones(shape), full_discounts(self.gamma, shape)
        return self._weights, self._discounts

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Uniform sampling ignores TD errors."""

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint keeps: the storage (sampling draws from NumPy's global RNG, saved with the run's)."""
        return {"storage": self.storage.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.storage.load_state_dict(state["storage"])

    def __len__(self) -> int:
        return self.storage.size

    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays (what :func:`~dqnbench.builtin.replay_memory.replay_bytes` plans)."""
        return self.storage.nbytes()


def uniform(capacity: int, obs_dim: int, gamma: float, members: int | None = None) -> UniformReplay:
    """Uniform replay of the last ``capacity`` transitions (the tutorial's memory), per member for K members."""
    return UniformReplay(capacity, obs_dim, gamma, members)


uniform.supports_members = True  # rows of K members or of one run (see the dqnbench_replays hookspec)
uniform.memberwise = ("gamma",)  # agent.gamma, per member in a fused group (dqnbench.plugin.members)
uniform.memory_bytes = uniform_bytes  # the pre-flight's memory check (see the hookspec)


@hookimpl
def dqnbench_replays() -> dict:
    return {"uniform": uniform}
