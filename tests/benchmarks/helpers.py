"""Helpers of the benchmark suite: the built-in components and builders of agents and replays.

Every benchmark times one short operation per round (one act, one learn step,
one ``add``…), so that the min over rounds is a round no other process
disturbed: what ``dqnbench bench-compare`` relies on (see docs/benchmarks.md).
Components come from a registry of the built-ins only, so installed plugins
never change what this suite measures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dqnbench.config.grid import plan_grid
from dqnbench.devtools.pytest_plugin import HARNESS_TOTAL_STEPS, StepHarness, component_tables
from dqnbench.plugin.legacy_replay import build_replay
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

#: the built-in components (no entry points): what "every built-in component" means
BUILTIN = load_registry(load_entrypoints=False)
NETWORKS, REPLAYS, EXPLORATIONS = (BUILTIN.names(k) for k in ("network", "replay", "exploration"))
#: the repository root, where the default grid lives
REPO = Path(__file__).resolve().parents[2]
#: batch sizes of the learn and sample benchmarks
BATCHES = (32, 64)
#: transitions in a replay before timing ``sample``
FILLED = 10_000

#: a single run's row of one: obs, actions, rewards, next_obs, terminated, truncated
Transition = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


#: built-ins that take image observations only: the CartPole harness cannot drive them
IMAGE_ONLY = {("network", "nature_cnn"), ("network", "minatar_cnn")}


def component_params(kinds: tuple[str, ...]) -> list[Any]:
    """``pytest.param((kind, name), id="kind-name")`` for every built-in component of the given kinds (CartPole's)."""
    return [
        pytest.param((kind, name), id=f"{kind}-{name}")
        for kind in kinds
        for name in BUILTIN.names(kind)
        if (kind, name) not in IMAGE_ONLY
    ]


def harness(kind: str, name: str, batch_size: int = 64) -> StepHarness:
    """A built-in-only agent with ``(kind, name)`` in otherwise default components."""
    return StepHarness.for_component(kind, name, batch_size=batch_size, load_entrypoints=False)


def make_replay(name: str, obs_dim: int = 4, gamma: float = 0.99) -> Any:
    """A built-in replay with the params a run of the default ``[replay]`` section would give it."""
    tables = component_tables("replay", name, total_steps=HARNESS_TOTAL_STEPS, seeds=[0])
    config = plan_grid(tables, "<benchmark replay>", BUILTIN).cells[0][2]
    chosen = choose(config, BUILTIN)
    return build_replay(bind_components(config, chosen).replay, config.replay.capacity, obs_dim, gamma)


def benchmarks_disabled(config: pytest.Config) -> bool:
    """``benchmark.disabled`` for a fixture wider than one test (``--benchmark-disable``: a smoke run)."""
    session = getattr(config, "_benchmarksession", None)  # pytest-benchmark's own decision, where it is loaded
    if session is not None:
        return bool(session.disabled)
    return bool(config.getoption("benchmark_disable") and not config.getoption("benchmark_enable"))


def cycle(transitions: list[Transition]) -> Iterator[Transition]:
    return itertools.cycle(transitions)
