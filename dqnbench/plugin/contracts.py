"""Typed contracts of the objects that plugins build.

These Protocols say what the training loop and the runner call on a component;
``dqnbench/plugin/hookspecs.py`` says how a plugin hands its factories over. A plugin
does not need to inherit from anything here: matching the methods is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from dqnbench.plugin.batch import Batch

T = TypeVar("T")
R = TypeVar("R")


class NetworkFactory(Protocol):
    """``factory(obs_dim, n_actions, **params) -> torch.nn.Module``.

    The module's forward maps float32 ``(B, obs_dim)`` to Q-values ``(B, n_actions)``.
    The loop calls ``module.train()`` while acting and learning and ``module.eval()``
    for greedy evaluation, so stochastic layers (noisy nets) can switch off there.
    """

    def __call__(self, obs_dim: int, n_actions: int, **params: Any) -> torch.nn.Module: ...


@runtime_checkable
class ReplayBuffer(Protocol):
    """What the training loop calls on a replay buffer."""

    def add(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
    ) -> None:
        """Store one transition (``terminated`` is true termination, not truncation)."""

    def sample(self, batch_size: int) -> Batch:
        """Return ``batch_size`` transitions as a :class:`dqnbench.Batch`."""

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Receive the absolute-or-signed TD errors of the last sample (may do nothing)."""

    def __len__(self) -> int:
        """Number of transitions that can be sampled."""


class ReplayFactory(Protocol):
    """``factory(capacity, obs_dim, gamma, **params) -> ReplayBuffer``."""

    def __call__(self, capacity: int, obs_dim: int, gamma: float, **params: Any) -> ReplayBuffer: ...


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
    """

    def map_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]: ...

    def close(self) -> None:
        """Release workers; called once, also after Ctrl-C."""


class ExecutorFactory(Protocol):
    """``factory(workers=None, **params) -> Executor``; ``workers`` None means "decide"."""

    def __call__(self, workers: int | None = None, **params: Any) -> Executor: ...
