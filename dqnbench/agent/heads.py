"""Learners that bring their own head: a network's optional split into features and a head, and the wrapping.

Most learners read the network's outputs as they are (Q-values, atoms,
quantiles). A learner such as ``iqn`` instead combines the network's state
features with something of its own (IQN's τ-embedding) before the network's
head. Such a learner has a method ``wrap_network(network) -> nn.Module``; the
run trains what it returns (online and target, checkpoints, lock-step stacks).
A network that can take part has, besides ``forward``, the *features split*:

- ``feature_dim: int``: the size D of its state features;
- ``features(obs) -> (…, B, D)``: everything of ``forward`` up to the head;
- ``from_features(features (…, R, D)) -> (…, R, n_actions)``: the rest, so that
  ``forward(obs) == from_features(features(obs))``, on any number of rows R.

Every built-in network has it (``docs/plugins.md`` says how a plugin network
gets it). Wrapping a network without it raises :class:`NoFeatures`, which the
runner's pre-flight turns into a grid error naming both components.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from dqnbench.errors import DqnbenchError, GridError


class NoFeatures(DqnbenchError, ValueError):
    """A learner that brings its own head was given a network without the features split."""


def features_problem(network: nn.Module) -> str | None:
    """What the network lacks of the features split (``feature_dim``, ``features``, ``from_features``), or None."""
    missing = [name for name in ("features", "from_features") if not callable(getattr(network, name, None))]
    dim = getattr(network, "feature_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        missing.insert(0, "feature_dim (an int >= 1)")
    if not missing:
        return None
    return f"{type(network).__name__} has no {', '.join(missing)} (the features split, see docs/plugins.md)"


def check_features(network: nn.Module) -> int:
    """The network's ``feature_dim``; :class:`NoFeatures` when it lacks the features split."""
    problem = features_problem(network)
    if problem is not None:
        raise NoFeatures(problem)
    return network.feature_dim


def learner_network(learner: Any, network: nn.Module) -> nn.Module:
    """The module a run trains: ``learner.wrap_network(network)`` where the learner brings its own head."""
    wrap = getattr(learner, "wrap_network", None)
    return network if wrap is None else wrap(network)


def with_learner_head(factory: Callable[..., nn.Module], learner: Any) -> Callable[..., nn.Module]:
    """``factory`` whose networks come wrapped by the learner's head (unchanged for other learners)."""
    if getattr(learner, "wrap_network", None) is None:
        return factory

    def build_network(obs_dim: Any, n_actions: int) -> nn.Module:
        return learner.wrap_network(factory(obs_dim, n_actions))

    return build_network


def check_learner_head(learner: Any, network: nn.Module | None, chosen: dict[str, Any], path: Path) -> nn.Module | None:
    """The runner's pre-flight: a learner's head on the cell's network, or a grid error naming both components."""
    if network is None:
        return None
    try:
        return learner_network(learner, network)
    except NoFeatures as exc:
        raise GridError(
            path,
            "network.name",
            f"{chosen['learner'].describe()} brings its own head and needs the network's state features, "
            f"but {chosen['network'].describe()} cannot give them: {exc}",
        ) from None
