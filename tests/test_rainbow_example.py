"""``examples/rainbow-minatar/``: Rainbow, Rainbow with each part removed, and DQN, as one experiment.

A grid is a cartesian product, so each cell is its own file; these tests keep the files in step: every file
holds the same tables as ``rainbow.toml`` and removes its part with the keys of its ``[grid]`` alone.
"""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

import dqnbench
from dqnbench.config.grid import load_grid

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rainbow-minatar"
#: file → the sections whose resolved config differs from the full Rainbow's
REMOVES = {
    "no-distributional": {"learner"},
    "no-double": {"learner"},
    "no-dueling": {"network"},
    "no-noisy": {"network", "exploration"},
    "no-prioritized": {"replay"},
    "no-multistep": {"replay"},
    "dqn": {"learner", "network", "exploration", "replay", "agent"},
}


def config(name: str, registry):
    (cell,) = load_grid(EXAMPLE / f"{name}.toml", registry).cells
    return cell[2]


def test_every_file_is_rainbows_tables_plus_its_own_grid():
    rainbow = tomllib.loads((EXAMPLE / "rainbow.toml").read_text(encoding="utf-8"))
    assert "grid" not in rainbow
    assert {p.stem for p in EXAMPLE.glob("*.toml")} == {"rainbow", *REMOVES}
    for name in REMOVES:
        tables = tomllib.loads((EXAMPLE / f"{name}.toml").read_text(encoding="utf-8"))
        assert tables.pop("grid") and tables == rainbow, name


def test_the_full_rainbow_cell_has_all_six_parts(registry):
    full = config("rainbow", registry)
    assert full.experiment.name == "rainbow-minatar" and full.experiment.env == "MinAtar/Breakout-v1"
    assert full.learner.name == "c51" and full.learner.params["double"] is True  # distributional, double
    assert (full.learner.params["atoms"], full.learner.params["v_max"]) == (51, 100.0)
    assert full.network.name == "noisy" and full.network.params["dueling"] is True  # noisy, dueling
    assert full.exploration.name == "greedy"
    assert full.replay.name == "nstep" and full.replay.params["n"] == 3  # multi-step
    assert full.replay.params["prioritized"] is True and full.replay.params["alpha"] == 0.5  # prioritized


@pytest.mark.parametrize("name", list(REMOVES))
def test_each_cell_differs_from_rainbow_only_in_the_part_it_removes(name, registry):
    full, cell = config("rainbow", registry), config(name, registry)
    for section in ("agent", "network", "replay", "exploration", "env", "learner", "optimizer"):
        same = getattr(cell, section) == getattr(full, section)
        assert same == (section not in REMOVES[name]), section
    assert cell.experiment == full.experiment
    removed = {
        "no-distributional": cell.learner.name == "dqn" and cell.learner.params["double"] is True,
        "no-double": cell.learner.name == "c51" and cell.learner.params["double"] is False,
        "no-dueling": cell.network.name == "noisy" and cell.network.params["dueling"] is False,
        "no-noisy": cell.network.name == "dueling" and cell.exploration.name == "linear",
        "no-prioritized": cell.replay.params["prioritized"] is False and cell.replay.params["n"] == 3,
        "no-multistep": cell.replay.params["n"] == 1 and cell.replay.params["prioritized"] is True,
        "dqn": (cell.learner.name, cell.network.name, cell.replay.params["n"]) == ("dqn", "mlp", 1)
        and cell.learner.params["double"] is False
        and cell.replay.params["prioritized"] is False,
    }
    assert removed[name]


def test_the_cells_are_eight_distinct_runs_of_one_experiment(registry):
    cells = {config(name, registry).cell_id() for name in ("rainbow", *REMOVES)}
    assert len(cells) == 8


def test_the_files_pass_a_dry_run_and_the_rainbow_and_dqn_cells_train_on_minatar(tmp_path):
    pytest.importorskip("minatar")
    from dqnbench.cli import main

    for path in sorted(EXAMPLE.glob("*.toml")):
        assert main(["run", "--grid", str(path), "--dry-run"]) == 0, path.name
    for name in ("rainbow", "dqn"):  # a few hundred steps of the real files, lock-step and single
        text = (EXAMPLE / f"{name}.toml").read_text(encoding="utf-8")
        text = text.replace("total_steps = 1_000_000", "total_steps = 300").replace("seeds = 5", "seeds = 2")
        text = text.replace("learning_starts = 1_000", "learning_starts = 100").replace(
            "hidden = [256, 256]", "hidden = [16]"
        )
        text = text.replace("eval_every = 100_000", "eval_every = 0").replace("eval_episodes = 10", "eval_episodes = 1")
        grid = tmp_path / f"{name}.toml"
        grid.write_text(text, encoding="utf-8")
        for lockstep in (True, False):
            res = dqnbench.run_grid(grid, tmp_path / f"out-{lockstep}", executor="serial", stream=io.StringIO(),
                                    load_entrypoints=False, lockstep=lockstep, plots=False)  # fmt: skip
            assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    everything = dqnbench.load_results(tmp_path / "out-True" / "rainbow-minatar", all_runs=True)
    assert len(everything.runs) == 4  # both files' runs, read together as one experiment
