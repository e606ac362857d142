"""``[search]`` parsing (issue 25): every bad input exits 2 naming the key; --dry-run describes the search."""

from __future__ import annotations

import sys

import pytest

from dqnbench.cli import main
from dqnbench.config.grid import load_grid
from dqnbench.errors import GridError

SEARCH = """
[search]
{keys}
[search.space]
"agent.lr" = {{ low = 1e-4, high = 1e-2, log = true }}
{space}
"""


def search_section(extra: str = "", space: str = "") -> str:
    """A ``[search]`` of 4 trials × 2 tuning seeds, 3 test seeds; ``extra`` lines (``key = value``) win."""
    keys = {"trials": "4", "tune_seeds": "2", "test_seeds": "3"}
    keys |= dict(line.split(" = ", 1) for line in extra.splitlines() if line)
    return SEARCH.format(keys="\n".join(f"{k} = {v}" for k, v in keys.items()), space=space)


def grid_with(write_grid, extra: str = "", space: str = "", grid: str = "") -> object:
    return write_grid(grid + search_section(extra, space))


def test_a_search_plan_reads_every_key(write_grid, registry):
    path = grid_with(
        write_grid,
        extra='sampler = "random"\nobjective = "final"\npruner = "median"',
        space='"agent.target_update" = [20, 50]\n"exploration.fraction" = { low = 0.05, high = 0.5 }\n'
        '"agent.batch_size" = { low = 16, high = 64, step = 16 }',
        grid='[grid]\n"network.name" = ["mlp", "dueling"]\n',
    )
    search = load_grid(path, registry).search
    assert (search.trials, search.sampler, search.objective, search.pruner) == (4, "random", "final", "median")
    assert [v.label for v in search.variants] == ["network.name=mlp", "network.name=dueling"]
    batch = {p.key: p for p in search.space}["agent.batch_size"]
    assert batch.is_int and batch.values == [16, 32, 48, 64]
    assert {p.key: p for p in search.space}["agent.target_update"].choices == (20, 50)
    assert set(search.tune_seed_list).isdisjoint(search.test_seed_list) and len(search.test_seed_list) == 3
    config = search.config(search.variants[1], {"agent.lr": 3e-3}, (5,), registry)
    assert config.agent.lr == 3e-3 and config.network.name == "dueling" and config.experiment.seeds == (5,)


@pytest.mark.parametrize(
    ("extra", "space", "grid", "key", "words"),
    [
        ("", '"agent.gamma" = { low = 0.99, high = 0.9 }', "", 'search.space."agent.gamma"', "below high"),
        ("", '"agent.gamma" = { low = 0.0, high = 0.9, log = true }', "", 'search.space."agent.gamma".low', "log"),
        ("", '"agent.nonsense" = [1, 2]', "", 'search.space."agent.nonsense"', "unknown key"),
        ("", '"exploration.x" = [1, 2]', "", 'search.space."exploration.x"', "no parameter"),
        (
            "",
            '"agent.gamma" = [0.9, 0.99]',
            '[grid]\n"agent.gamma" = [0.9, 0.99]\n',
            'search.space."agent.gamma"',
            "axis",
        ),  # fmt: skip
        ("trials = 0", "", "", "search.trials", ">= 1"),
        ("tune_seeds = 0", "", "", "search.tune_seeds", ">= 1"),
        ("test_seeds = -1", "", "", "search.test_seeds", ">= 1"),
        ('sampler = "cmaes"', "", "", "search.sampler", "tpe, random, qmc, grid"),
        ('pruner = "hyperband"', "", "", "search.pruner", "median, successive_halving"),
        ('objective = "max"', "", "", "search.objective", "auc, final"),
        ("budget = 3", "", "", "search.budget", "unknown key"),
        ('sampler = "grid"', "", "", "search.sampler", "step"),
    ],
)
def test_bad_search_input_names_the_key(write_grid, registry, extra, space, grid, key, words):
    path = grid_with(write_grid, extra=extra, space=space, grid=grid)
    with pytest.raises(GridError) as caught:
        load_grid(path, registry)
    assert caught.value.key == key and words in caught.value.problem


def test_auc_needs_evaluations_during_training(write_grid, registry):
    path = write_grid(search_section(), eval_every=0)
    with pytest.raises(GridError) as caught:
        load_grid(path, registry)
    assert caught.value.key == "search.objective" and "eval_every" in caught.value.problem


def test_without_optuna_the_cli_exits_2_naming_the_extra(write_grid, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert main(["run", "--grid", str(grid_with(write_grid)), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "dqnbench[tune]" in err and "search" in err and "Traceback" not in err


def test_dry_run_describes_variants_trials_seeds_and_the_test_phase(write_grid, capsys):
    path = grid_with(write_grid, grid='[grid]\n"network.name" = ["mlp", "dueling"]\n')
    assert main(["run", "--grid", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 variants × 4 trials × 2 tune seeds = 16 tuning runs" in out
    assert "test phase: 2 variants × 3 test seeds × (tuned, default) = 12 runs" in out
    assert "agent.lr in [0.0001, 0.01, log]" in out
