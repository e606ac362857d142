"""A full training step — act, env step, store, learn — of every cell of the default grid (``grid.toml``).

The agent steps exactly as :func:`dqnbench.agent.loop.train` does (``StepHarness``,
checked against ``train()`` in ``tests/test_pytest_plugin.py``), with the
replay first filled to ``learning_starts`` so every timed step learns.
"""

from __future__ import annotations

import math

import pytest

from dqnbench.config.grid import load_grid
from dqnbench.devtools.pytest_plugin import StepHarness
from dqnbench.run.runner import bind_components, choose

from .helpers import BUILTIN, REPO

DEFAULT_GRID = REPO / "grid.toml"
CELLS = load_grid(DEFAULT_GRID, BUILTIN).cells


def cell_id(label: str) -> str:
    """``network.name=mlp, agent.double=false`` → ``mlp,double=false``: short benchmark names."""
    return label.replace("network.name=", "").replace("agent.", "").replace(" ", "")


@pytest.mark.benchmark(group="training-step")
@pytest.mark.parametrize("cell", [pytest.param(cell, id=cell_id(cell[1])) for cell in CELLS])
def test_training_step(benchmark, cell):
    """One env step with a learn step, on one cell of the default grid."""
    cell_hash, label, config = cell
    chosen = choose(config, BUILTIN)
    agent = StepHarness(config, bind_components(config, chosen), seed=0, chosen=chosen).warm_up()
    benchmark.extra_info.update(agent.describe("training step: act (batch 1) + env step + store + learn step"))
    benchmark.extra_info.update(grid=DEFAULT_GRID.name, cell=cell_hash, label=label, component=label)
    loss = benchmark(agent.step)
    assert agent.learn_steps > 0 and (math.isnan(loss) or math.isfinite(loss))
