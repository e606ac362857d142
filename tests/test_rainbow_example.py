"""``examples/rainbow-minatar.toml``: Rainbow, Rainbow with each part removed, and DQN, as named variants."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import dqnbench
from dqnbench.config.grid import load_grid
from tests.extras import require

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rainbow-minatar.toml"
#: variant → the sections whose resolved config differs from the full Rainbow's
REMOVES = {
    "no distributional": {"learner"},
    "no double": {"learner"},
    "no dueling": {"network"},
    "no noisy": {"network", "exploration"},
    "no prioritized": {"replay"},
    "no multi-step": {"replay"},
    "dqn": {"learner", "network", "exploration", "replay", "agent"},
}


@pytest.fixture(scope="module")
def cells():
    from dqnbench.plugin.registry import load_registry

    plan = load_grid(EXAMPLE, load_registry(load_entrypoints=False))
    return {label: config for _, label, config in plan.cells}


def test_the_grid_is_the_eight_named_cells_in_order(cells):
    assert list(cells) == ["rainbow", *REMOVES]


def test_the_full_rainbow_cell_has_all_six_parts(cells):
    full = cells["rainbow"]
    assert full.experiment.name == "rainbow-minatar" and full.experiment.env == "MinAtar/Breakout-v1"
    assert full.learner.name == "c51" and full.learner.params["double"] is True  # distributional, double
    assert (full.learner.params["atoms"], full.learner.params["v_max"]) == (51, 100.0)
    assert full.network.name == "minatar_cnn"
    assert full.network.params["dueling"] is True and full.network.params["noisy"] is True  # dueling, noisy
    assert full.exploration.name == "greedy"
    assert full.replay.name == "nstep" and full.replay.params["n"] == 3  # multi-step
    assert full.replay.params["prioritized"] is True and full.replay.params["alpha"] == 0.5  # prioritized


@pytest.mark.parametrize("name", list(REMOVES))
def test_each_cell_differs_from_rainbow_only_in_the_part_it_removes(name, cells):
    full, cell = cells["rainbow"], cells[name]
    for section in ("agent", "network", "replay", "exploration", "env", "learner", "optimizer"):
        same = getattr(cell, section) == getattr(full, section)
        assert same == (section not in REMOVES[name]), section
    assert cell.experiment == full.experiment
    removed = {
        "no distributional": cell.learner.name == "dqn" and cell.learner.params["double"] is True,
        "no double": cell.learner.name == "c51" and cell.learner.params["double"] is False,
        "no dueling": cell.network.params["dueling"] is False and cell.network.params["noisy"] is True,
        "no noisy": cell.network.params["noisy"] is False and cell.exploration.name == "linear",
        "no prioritized": cell.replay.params["prioritized"] is False and cell.replay.params["n"] == 3,
        "no multi-step": cell.replay.params["n"] == 1 and cell.replay.params["prioritized"] is True,
        "dqn": (cell.learner.name, cell.replay.params["n"]) == ("dqn", 1)
        and cell.learner.params["double"] is False
        and not cell.network.params["dueling"]
        and not cell.network.params["noisy"]
        and cell.replay.params["prioritized"] is False,
    }
    assert removed[name]


def test_the_cells_are_eight_distinct_runs_of_one_experiment(cells):
    assert len({config.cell_id() for config in cells.values()}) == 8


def test_the_grid_passes_a_dry_run_and_the_rainbow_and_dqn_cells_train_on_minatar(tmp_path):
    require("minatar")
    from dqnbench.cli import main

    assert main(["run", "--grid", str(EXAMPLE), "--dry-run"]) == 0
    # a few hundred steps of the real file, two of its cells, lock-step and single
    grid = tmp_path / "rainbow.toml"
    lines, keep = [], True
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.startswith("[variants."):
            keep = line.startswith(("[variants.rainbow]", "[variants.dqn]"))
        if keep:
            lines.append(line)
    text = "\n".join(lines)
    for old, new in (
        ("total_steps = 1_000_000", "total_steps = 300"),
        ("seeds = 5", "seeds = 2"),
        ("learning_starts = 1_000", "learning_starts = 100"),
        ("eval_every = 100_000", "eval_every = 0"),
        ("eval_episodes = 10", "eval_episodes = 1"),
    ):
        text = text.replace(old, new)
    grid.write_text(text, encoding="utf-8")
    for lockstep in (True, False):
        res = dqnbench.run_grid(grid, tmp_path / f"out-{lockstep}", executor="serial", stream=io.StringIO(),
                                load_entrypoints=False, lockstep=lockstep, plots=False)  # fmt: skip
        assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
        assert list(res.runs.label.unique()) == ["rainbow", "dqn"]  # the grid's order
