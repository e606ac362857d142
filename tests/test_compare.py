"""``compare``: planted regressions are caught, noise and self-comparison are not."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from dqnbench.analysis.compare import TABLE_COLUMNS, compare_results, match_cells, speed_text
from dqnbench.cli import main
from dqnbench.errors import DqnbenchError
from tests.test_stats import in_memory_results, make_runs

RNG = np.random.default_rng(0)
BASE_SCORES = [float(v) for v in RNG.normal(400, 20, 6)]
BASE_SPEED = [float(v) for v in RNG.normal(1000, 20, 6)]


def base_cells(override=None):
    """Two cells of 6 seeds; ``override`` replaces or adds cells by label."""
    cells = {
        "network.name=mlp": {"final": BASE_SCORES, "sps": BASE_SPEED},
        "network.name=dueling": {"final": [s + 20 for s in BASE_SCORES], "sps": BASE_SPEED, "network": "dueling"},
    }
    cells.update(override or {})
    return cells


def results(cells, path="mem"):
    return in_memory_results(make_runs(cells), path=path)


def test_a_directory_compared_with_itself_does_not_regress():
    res = results(base_cells())
    comparison = compare_results(res, res)
    assert not comparison.regressed
    assert comparison.table["verdict"].tolist() == ["same", "same"]
    assert (comparison.table["delta"] == 0).all() and (comparison.table["poi"] == 0.5).all()
    # paired by seed: no spread at all, not the ±250 of two independent resamplings
    assert comparison.table["paired"].all()
    assert (comparison.table[["delta_lo", "delta_hi"]] == 0).all().all()
    assert (comparison.table[["poi_lo", "poi_hi"]] == 0.5).all().all()
    assert (comparison.table["speed_ratio"] == 1.0).all()
    assert list(comparison.table.columns) == TABLE_COLUMNS


def test_a_planted_return_regression_is_caught():
    worse = {"final": [s - 150 for s in BASE_SCORES], "sps": BASE_SPEED}
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": worse})))
    assert comparison.regressed
    row = comparison.table.set_index("label").loc["network.name=mlp"]
    assert row["verdict"] == "worse" and row["delta_hi"] < -0.05 * row["iqm_base"]
    assert row["poi"] == 0.0
    assert comparison.table.set_index("label").loc["network.name=dueling", "verdict"] == "same"


def test_a_planted_slowdown_is_caught():
    slower = {"final": BASE_SCORES, "sps": [s * 0.6 for s in BASE_SPEED]}
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": slower})))
    assert comparison.regressed
    row = comparison.table.set_index("label").loc["network.name=mlp"]
    assert row["verdict"] == "same, slower" and row["speed_ratio"] == pytest.approx(0.6)


def test_a_drop_within_tolerance_passes():
    slightly = {"final": [s - 8 for s in BASE_SCORES], "sps": [s * 0.95 for s in BASE_SPEED]}  # 2 %, 5 %
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": slightly})))
    assert not comparison.regressed
    strict = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": slightly})),
                             tolerance=0.0, speed_tolerance=0.0)  # fmt: skip
    assert strict.regressed  # the same drop is beyond zero tolerance, with confidence


def test_seed_noise_alone_does_not_regress():
    other = np.random.default_rng(1)
    noisy = {"final": [float(v) for v in other.normal(400, 20, 6)],
             "sps": [float(v) for v in other.normal(1000, 20, 6)]}  # fmt: skip
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": noisy})))
    assert not comparison.regressed


def test_a_cell_whose_runs_all_failed_regresses():
    failed = {"final": [None, None], "sps": BASE_SPEED}
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": failed})))
    assert comparison.regressed
    assert "all runs failed" in comparison.table["verdict"].tolist()


def test_one_run_per_side_gives_no_confident_verdict():
    one = {"final": [10.0], "sps": [10.0]}
    comparison = compare_results(results({"default": {"final": [400.0]}}), results({"default": one}))
    assert not comparison.regressed and comparison.table["verdict"].tolist() == ["too few runs"]


def test_cells_match_by_config_not_by_order_or_name():
    cells = base_cells()
    reordered = dict(reversed(list(cells.items())))  # different cell ids and order
    comparison = compare_results(results(cells), results(reordered))
    assert not comparison.regressed
    assert comparison.table["cell_base"].tolist() == ["c0", "c1"]
    assert comparison.table["cell_cand"].tolist() == ["c1", "c0"]


def test_unmatched_cells_are_reported_not_failed():
    extra = base_cells({"network.name=noisy": {"final": [1.0, 2.0], "network": "noisy"}})
    comparison = compare_results(results(base_cells()), results(extra))
    assert not comparison.regressed
    assert comparison.table["verdict"].tolist()[-1] == "only in candidate"
    assert "--ignore" not in comparison.render("markdown")  # an extra variant, not a key to leave out
    moved = base_cells({"network.name=dueling": {**base_cells()["network.name=dueling"], "lr": 3e-4}})
    renamed = compare_results(results(base_cells()), results(moved))  # dueling ran at another lr
    assert renamed.table["verdict"].tolist()[1:] == ["only in baseline", "only in candidate"]
    note = "Cells on one side only: the grids differ in agent.lr; --ignore agent.lr matches cells across them."
    assert note in renamed.render("markdown")


def test_no_common_cell_is_a_user_error():
    base = results({"default": {"final": [1.0, 2.0], "env": "CartPole-v1"}})
    other = results({"default": {"final": [1.0, 2.0], "env": "Acrobot-v1"}})
    with pytest.raises(
        DqnbenchError,
        match=r"differ in experiment.env: baseline \"CartPole-v1\", candidate "
        r"\"Acrobot-v1\".*--ignore experiment.env$",
    ):
        compare_results(base, other)
    ignored = compare_results(base, other, ignore=("experiment.env",))
    assert ignored.table["verdict"].tolist() == ["same"]
    assert ignored.table["speed_verdict"].tolist() == ["not judged"]  # identical steps/s: one lock-step sample


def test_ignoring_a_key_that_separates_cells_is_an_error():
    runs = make_runs(base_cells())
    with pytest.raises(DqnbenchError, match="same configuration"):
        match_cells(runs, runs, ignore=("network.name",))


def test_render_formats():
    worse = {"final": [s - 150 for s in BASE_SCORES], "sps": BASE_SPEED}
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": worse})))
    table = comparison.render("table", width=200)
    assert "REGRESSION: 1 of 2 cells worse" in table and "Δ IQM [CI]" in table
    markdown = comparison.render("markdown")
    assert markdown.startswith("| cell | verdict |") and "| worse |" in markdown
    frame = pd.read_csv(io.StringIO(comparison.render("csv")))
    assert frame["return_regressed"].tolist() == [True, False]
    ok = compare_results(results(base_cells()), results(base_cells()))
    assert "OK: no cell worse (return drop > 5% of baseline IQM" in ok.render("markdown")
    with pytest.raises(DqnbenchError):
        comparison.render("html")


def test_bad_tolerances_are_user_errors():
    res = results(base_cells())
    with pytest.raises(DqnbenchError):
        compare_results(res, res, tolerance=-0.1)
    with pytest.raises(DqnbenchError):
        compare_results(res, res, confidence=95)


def test_a_planted_improvement_is_better_with_its_speed_direction_labelled():
    better = {"final": [s * 2.06 for s in BASE_SCORES], "sps": [s * 1.3 for s in BASE_SPEED]}
    comparison = compare_results(results(base_cells()), results(base_cells({"network.name=mlp": better})))
    assert not comparison.regressed
    row = comparison.table.set_index("label").loc["network.name=mlp"]
    assert row["verdict"] == "better, faster" and row["return_verdict"] == "better"
    assert row["poi"] == 1.0 and row["rel_delta"] == pytest.approx(1.06, rel=0.01)
    text = comparison.render("table", width=100)
    assert "×1.30 faster [" in text and "+106%" in text


def test_the_speed_ratio_says_its_direction():
    assert speed_text(1.3, 1.2, 1.4) == "×1.30 faster [1.20, 1.40]"
    assert speed_text(0.5, 0.4, 0.625) == "×2.00 slower [1.60, 2.50]"  # bounds inverted with the ratio
    assert speed_text(0.5, 0.4, 0.6, judged=False) == "×2.00 slower (not judged)"
    assert speed_text(1.0, 0.98, 1.02) == "×1.00 [0.98, 1.02]"


def test_runs_of_different_seeds_are_not_paired():
    cells = base_cells()
    other = make_runs(cells)
    other["seed"] += 100
    comparison = compare_results(results(cells), in_memory_results(other))
    assert not comparison.table["paired"].any()
    assert (comparison.table["delta"] == 0).all() and (comparison.table["delta_hi"] > 0).all()  # independent CIs
    assert "No cell shares its seeds" in comparison.render("markdown")


def test_the_cli_table_fits_100_columns_with_a_legend_for_long_labels(monkeypatch, capsys):
    long = "network.name=dueling, replay.name=prioritized, agent.lr=0.0003, learner.name=qr_dqn"
    runs = make_runs(base_cells({long: {"final": BASE_SCORES, "sps": BASE_SPEED, "lr": 3e-4}}))
    improved = runs.assign(final_return=runs["final_return"].where(runs["label"] != long, runs["final_return"] + 300))
    sides = {"base": in_memory_results(runs, path="base"), "cand": in_memory_results(improved, path="cand")}
    monkeypatch.setattr("dqnbench.run.results.load_results", lambda path, all_runs=False: sides[path])
    monkeypatch.setenv("COLUMNS", "100")  # what rich and the table fitting read as the terminal's width
    assert main(["compare", "base", "cand"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "│ #3   │ better  │" in out and "│ #1   │ same    │" in out
    legend = " ".join(out.split())
    assert "cells: #1 network=mlp; #2 network=dueling; #3 network=dueling, replay=prioritized, lr=0.0003" in legend
    assert "+0.00 [+0.00, +0.00]" in out and "0.50 [0.50, 0.50]" in out


def _timed_side(costs, paces):
    from dqnbench.analysis.compare import Side

    n = len(costs)
    return Side(np.full(n, 100.0), np.full(n, 1000.0), np.asarray(costs, float), n,
                seeds=np.arange(n), paces=np.asarray(paces, float))  # fmt: skip


def _speed(base, cand):
    from dqnbench.analysis.compare import compare_cell

    row = compare_cell(base, cand, tolerance=0.05, speed_tolerance=0.15, confidence=0.95, n_resamples=2000, seed=0)
    return row["speed_verdict"], row["speed_source"]


def test_a_slowdown_must_show_in_seconds_and_against_the_machines_pace():
    rng = np.random.default_rng(0)
    costs = 1e-3 * (1 + 0.02 * rng.standard_normal(10))
    paces = 3e-5 * (1 + 0.02 * rng.standard_normal(10))
    base = _timed_side(costs, paces)
    # a loaded machine: every step 1.4× slower and the calibration with it -> not slower
    assert _speed(base, _timed_side(costs * 1.4, paces * 1.4)) == ("same", "calibrated step time")
    # a noisy calibration alone (steps unchanged) -> not slower either
    assert _speed(base, _timed_side(costs, paces * 0.6)) == ("same", "step time")
    # slower code: the steps 1.4× slower, the machine's pace unchanged -> slower by both measures
    verdict, _ = _speed(base, _timed_side(costs * 1.4, paces))
    assert verdict == "slower"
    # without calibration marks on one side the median step alone judges
    assert _speed(base, _timed_side(costs * 1.4, [np.nan] * 10)) == ("slower", "step time")
