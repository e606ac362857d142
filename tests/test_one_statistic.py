"""One statistic, said once: the run summary and ``report`` agree, † means < 5 runs, intervals respect the env."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from dqnbench.analysis import bounds, cells, plots, stats
from dqnbench.analysis.embedding import representative_runs
from dqnbench.analysis.report import SMALL_MARK, final_return_texts, report
from dqnbench.run.progress import summary_table
from tests.test_stats import in_memory_results, make_evals, make_runs


def _render(table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(table)
    return buffer.getvalue()


def test_the_run_summary_prints_reports_interval_and_says_what_the_mark_means():
    runs = make_runs({"network.name=mlp": {"final": [480, 490, 500, 300]},
                      "network.name=dueling": {"final": [100, 200, 150, 120, 180], "network": "dueling"}})  # fmt: skip
    results = in_memory_results(runs)
    texts = final_return_texts(results)
    table = report(results, "markdown")
    for text in texts.values():
        assert f"| {text} |" in table  # the very string report prints
    assert texts["c0"].endswith(SMALL_MARK) and not texts["c1"].endswith(SMALL_MARK)  # 4 runs vs 5
    rows = [{"cell": c, "label": c, "ok": 1, "failed": 0, "score": t, "steps_per_s": 1.0} for c, t in texts.items()]
    printed = _render(summary_table(rows, "study"))
    assert "final return IQM [95% CI]" in printed and texts["c0"] in printed
    assert "† n too small: fewer than 5 runs" in printed and "±" not in printed
    five = _render(summary_table(rows[1:], "study"))
    assert "†" not in five


def test_the_mark_means_fewer_than_five_runs_in_every_legend():
    runs = make_runs({"a": {"final": [1.0, 2, 3, 4, 5]}, "b": {"final": [1.0, 2, 3, 4]}})
    # episodes: one run of cell a has no episode in the later bins, so some bins hold 4 of its 5 runs
    rows = [{"run_id": rid, "episode": e, "step": 10 * (e + 1), "return": float(e), "length": 10}
            for rid in runs["run_id"] for e in range(2 if rid == "c0-s0" else 10)]  # fmt: skip
    fig = plots.training_curves_figure(runs, pd.DataFrame(columns=["run_id", "step"]), pd.DataFrame(rows))
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend == ["a (n=5)", "b (n=4 †)"]


def test_intervals_and_bands_stay_within_the_returns_the_env_allows():
    assert bounds.possible_bounds("MinAtar/Breakout-v1") == (0.0, None)
    assert bounds.possible_bounds("CartPole-v1") == (0.0, 500.0)
    assert bounds.possible_bounds("Acrobot-v1") == (-500.0, 0.0)
    assert bounds.possible_bounds("Plugin/Unknown-v0") == (None, None)
    runs = make_runs({"a": {"final": [0.0, 0.0, 2.7], "env": "MinAtar/Breakout-v1"},
                      "b": {"final": [-3.0, 1.0, 9.0], "env": "Plugin/Unknown-v0"}})  # fmt: skip
    raw = cells.cell_summary(runs)
    assert raw.loc[0, "iqm_lo"] < 0  # the t interval of 3 runs knows no bounds
    found = bounds.return_bounds(runs)
    assert found == {"MinAtar/Breakout-v1": (0.0, 2.7), "Plugin/Unknown-v0": (-3.0, 9.0)}  # possible ∪ observed
    summary = cells.summarize(in_memory_results(runs))
    assert summary.loc[0, "iqm_lo"] == 0.0 and summary.loc[0, "iqm_hi"] <= 2.7
    assert summary.loc[1, "iqm_lo"] >= -3.0 and summary.loc[1, "iqm_hi"] <= 9.0
    assert summary.loc[0, "iqm"] == raw.loc[0, "iqm"]  # the statistic itself is untouched
    evals = make_evals(runs, {rid: [0.0, r] for rid, r in zip(runs["run_id"], runs["final_return"])}, [50, 100])
    curves = cells.eval_curves(runs, evals, bounds=bounds.return_bounds(runs, evals))
    breakout = curves[curves["env"] == "MinAtar/Breakout-v1"]
    assert (breakout["lo"].dropna() >= 0).all() and breakout["lo"].min() == 0.0
    assert "[0.00, " in report(in_memory_results(runs, evals), "markdown")


def test_learners_losses_are_drawn_on_separate_axes():
    runs = make_runs({"learner.name=dqn": {"final": [1.0, 2.0]}, "learner.name=c51": {"final": [1.0, 2.0]}})
    runs["learner.name"] = runs["label"].str.partition("=")[2]
    steps = pd.DataFrame([{"run_id": rid, "step": s, "loss": (0.01 if rid.startswith("c0") else 3.0) * (1 + s % 3)}
                          for rid in runs["run_id"] for s in range(0, 100, 5)])  # fmt: skip
    fig = plots.training_curves_figure(runs, steps, pd.DataFrame(columns=["run_id", "step", "return"]))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["CartPole-v1: TD loss, dqn learner", "CartPole-v1: TD loss, c51 learner"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    single = plots.training_curves_figure(runs[runs["learner.name"] == "dqn"], steps, pd.DataFrame())
    assert [ax.get_title() for ax in single.axes] == ["CartPole-v1: TD loss"]


def test_a_one_cell_grid_has_no_probability_of_improvement_matrix():
    one = make_runs({"default": {"final": [1.0, 2.0, 3.0]}})
    assert not plots.has_comparisons(one)
    assert not plots.improvement_figure(one).axes  # a note, not a 1×1 matrix
    two_envs = make_runs({"a": {"final": [1.0]}, "b": {"final": [2.0], "env": "Acrobot-v1"}})
    assert not plots.has_comparisons(two_envs)  # one cell on each env: nothing to compare
    assert plots.has_comparisons(make_runs({"a": {"final": [1.0]}, "b": {"final": [2.0]}}))


def test_embedding_titles_name_only_the_params_that_tell_variants_apart():
    runs = make_runs({"network.name=mlp": {"final": [1.0, 2.0]},
                      "network.name=minatar_cnn": {"final": [3.0, 4.0], "network": "minatar_cnn"}})  # fmt: skip
    mlp = runs["network.name"] == "mlp"
    runs["network.noisy"] = pd.Series(False, index=runs.index, dtype=object).where(~mlp, None)  # mlp lacks it
    runs["network.sigma0"] = np.where(mlp, np.nan, 0.5)  # unused: noisy = false
    runs["network.hidden"] = [(64, 64)] * len(runs)
    assert [d for _, d in representative_runs(runs)] == ["network=mlp", "network=minatar_cnn"]
    runs.loc[runs["network.name"] == "mlp", "network.hidden"] = pd.Series([(8,)] * 2, index=[0, 1])
    described = [d for _, d in representative_runs(runs)]
    assert described == ["network=mlp, hidden=[8]", "network=minatar_cnn, hidden=[64, 64]"]
    runs.loc[~mlp & (runs["seed"] == 1), "network.noisy"] = True  # a grid that varies noisy: now it tells apart
    described = [d for _, d in representative_runs(runs)]
    assert described[1:] == ["network=minatar_cnn, noisy=False, hidden=[64, 64]",
                             "network=minatar_cnn, noisy=True, hidden=[64, 64]"]  # fmt: skip


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_clip_keeps_the_interval_inside_the_bounds(ratio):
    est = stats.Estimate(1.0, 1.0 - ratio, 1.0 + ratio)
    clipped = stats.clip(est, 0.0, 2.5)
    assert (clipped.low, clipped.high) == (max(0.0, 1.0 - ratio), min(2.5, 1.0 + ratio))
    assert stats.clip(stats.Estimate(1.0, float("nan"), float("nan")), 0.0, 2.0).has_ci is False
