"""Typed contracts of the objects that plugins build.

These Protocols say what the training loop and the runner call on a component;
``dqnbench/plugin/hookspecs.py`` says how a plugin hands its factories over. A plugin
does not need to inherit from anything here: matching the methods is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.obs import ObsSpec

T = TypeVar("T")
R = TypeVar("R")


class NetworkFactory(Protocol):
    """``factory(obs_dim, n_actions, **params) -> torch.nn.Module``.

    ``obs_dim`` is an :class:`ObsSpec` (an ``int``, the flat size, with ``.shape``
    and ``.dtype``). The module's forward maps observations ``(B, *obs_dim.shape)``
    in their own dtype to Q-values ``(B, n_actions)``, or ``(B, n_actions, outputs)``
    when the factory was called with ``outputs > 1``.
    The loop calls ``module.train()`` while acting and learning and ``module.eval()``
    for greedy evaluation, so stochastic layers (noisy nets) can switch off there.
    """

    def __call__(self, obs_dim: ObsSpec, n_actions: int, **params: Any) -> torch.nn.Module: ...


@runtime_checkable
class ReplayBuffer(Protocol):
    """What the training loop calls on a replay buffer (a legacy one through
    :class:`~dqnbench.plugin.legacy_replay.LegacyReplay`)."""

    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store one row of transitions, ``(K, …)`` for K members or ``(1, …)`` for a single run."""

    def sample(self, batch_size: int) -> Batch:
        """Return ``batch_size`` transitions as a :class:`dqnbench.Batch`."""

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Receive the learner's per-sample priorities of the last sample, maybe signed (may do nothing)."""

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""


class ReplayFactory(Protocol):
    """``factory(capacity, obs_dim, gamma, members=None, **params) -> ReplayBuffer``, ``supports_members = True``."""

    def __call__(
        self, capacity: int, obs_dim: ObsSpec, gamma: float, members: int | None = None, **params: Any
    ) -> ReplayBuffer: ...


@runtime_checkable
class Explorer(Protocol):
    """What the training loop calls to turn Q-values into actions."""

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        """Map ``(B, n_actions)`` Q-values at env step ``step`` to ``(B,)`` int64 actions."""


class ExplorationFactory(Protocol):
    """``factory(n_actions, total_steps, **params) -> Explorer``."""

    def __call__(self, n_actions: int, total_steps: int, **params: Any) -> Explorer: ...


@runtime_checkable
class Executor(Protocol):
    """Dispatches independent runs; the runner alone writes results.

    ``map_unordered(fn, items)`` calls the picklable module-level ``fn`` once per
    item and yields ``(item, outcome)`` pairs in completion order, where
    ``outcome`` is ``fn(item)`` or the exception that prevented it from
    returning (a worker that died, say). It must not stop at the first failure.

    An optional ``slots: int`` attribute says how many items run at once. When
    a grid has fewer tasks than that, the runner splits each lock-step cell's
    seeds into groups to fill them; without it, an executor is taken to run one
    at a time and cells are not split.
    """

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]: ...

    def close(self) -> None:
        """Release workers; called once, also after Ctrl-C."""


class ExecutorFactory(Protocol):
    """``factory(workers=None, **params) -> Executor``; ``workers`` None means "decide".

    An optional attribute ``slots(workers) -> int`` says what the executor's
    ``slots`` will be without starting it, so ``dqnbench run --dry-run`` can show
    how lock-step cells will be grouped (the local executors have it; Ray only
    knows once connected to its cluster).
    """

    def __call__(self, workers: int | None = None, **params: Any) -> Executor: ...


class EnvFactory(Protocol):
    """``factory(env_id, **params) -> gymnasium.Env`` (Discrete actions, Box observations).

    Optional attribute ``vector(env_id, num_envs, **params) -> gymnasium.vector.VectorEnv``
    with same-step autoreset, for lock-step training.

    The env (or vector env) it returns may carry two optional attributes, read
    with ``getattr`` on the returned object itself:

    - ``dqnbench_frames: int``: the observation's leading axis stacks this many
      consecutive frames (see :class:`ObsSpec`), so replays store each frame once;
    - ``dqnbench_learning_reward: Callable[[np.ndarray], np.ndarray]``: what the
      agent stores and learns from, given the env's rewards (e.g. ``np.sign`` for
      Atari's reward clipping). Recorded returns and evaluations stay the env's
      own rewards, the game score.
    """

    def __call__(self, env_id: str, **params: Any) -> Any: ...


class LearnerLoss(NamedTuple):
    """What a learner's ``loss`` (per sample) or ``backward`` (per run) returns.

    :ivar losses: ``loss``: per-sample losses ``(…, B)``, differentiable, not yet
        importance-weighted; ``backward``: the weighted mean per run ``(…,)``, detached.
    :ivar priorities: per-sample priorities ``(…, B)`` handed to the replay's
        ``update_priorities`` (TD errors for DQN, the cross-entropy for C51).
    """

    losses: torch.Tensor
    priorities: torch.Tensor


class Networks(Protocol):
    """The online and target networks a learner reads (single run or K stacked lock-step members)."""

    #: the online network: raw outputs ``(…, B, n_actions[, outputs])``, with gradients
    online: torch.nn.Module
    #: the target network: same outputs, a periodic copy of the online one, no gradients
    target: torch.nn.Module


@runtime_checkable
class Learner(Protocol):
    """The learning rule: what the network's outputs mean, the loss and the replay priorities."""

    #: outputs per action the network must give (1: Q-values; N: atoms or quantiles)
    outputs: int

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected Q-values ``(…, n_actions)`` from the network's raw outputs."""

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        """Per-sample losses ``(…, B)`` (unweighted, differentiable) and priorities ``(…, B)``."""


class LearnerFactory(Protocol):
    """``factory(n_actions, **params) -> Learner``."""

    def __call__(self, n_actions: int, **params: Any) -> Learner: ...


@runtime_checkable
class Optimizer(Protocol):
    """What the loop calls on an optimizer (``torch.optim.Optimizer`` fits): ``step()`` applies ``.grad``."""

    def step(self) -> Any: ...


class OptimizerFactory(Protocol):
    """``factory(parameters, lr, **params) -> Optimizer``."""

    def __call__(self, parameters: list[torch.nn.Parameter], lr: float, **params: Any) -> Optimizer: ...
