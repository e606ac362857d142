"""Statistics against hand-computed values and known distributions (Agarwal et al. 2021 metrics)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from dqnbench.analysis import cells, stats
from dqnbench.errors import DqnbenchError
from dqnbench.run.results import Results


def make_runs(cells: dict[str, dict[str, Any]], env: str = "CartPole-v1") -> pd.DataFrame:
    """A ``runs`` table: ``cells`` maps a label to ``final`` scores (None = failed run) and options.

    Options: ``sps`` (steps/s of every ok run, or a list), ``env``, ``network``, ``status`` (for None scores).
    """
    rows = []
    for c, (label, spec) in enumerate(cells.items()):
        sps_values = spec.get("sps", 1000.0)
        for seed, score in enumerate(spec["final"]):
            ok = score is not None
            speed = sps_values[seed] if isinstance(sps_values, (list, tuple)) else sps_values
            rows.append({
                "run_id": f"c{c}-s{seed}", "cell": f"c{c}", "label": label, "seed": seed,
                "status": "ok" if ok else spec.get("status", "failed"), "error": None if ok else "boom",
                "experiment.env": spec.get("env", env), "network.name": spec.get("network", "mlp"),
                "agent.lr": spec.get("lr", 1e-3),
                "wall_s": 1.0 if ok else None, "steps_per_s": speed if ok else None,
                "final_return": score,
            })  # fmt: skip
    return pd.DataFrame(rows)


def make_evals(runs: pd.DataFrame, curves: dict[str, list[float]], steps: list[int]) -> pd.DataFrame:
    """An ``evals`` table: run_id → mean returns at ``steps``."""
    rows = [
        {"run_id": rid, "step": s, "mean_return": r, "std_return": 0.0, "returns": [r]}
        for rid, curve in curves.items()
        for s, r in zip(steps, curve)
    ]
    return pd.DataFrame(rows)


def in_memory_results(runs: pd.DataFrame, evals: pd.DataFrame | None = None, steps: pd.DataFrame | None = None,
                      path: str = "mem") -> Results:  # fmt: skip
    """A :class:`Results` built directly from DataFrames (nothing on disk)."""
    empty = pd.DataFrame(columns=["run_id", "step"])
    return Results(Path(path), runs, steps if steps is not None else empty, empty.copy(),
                   evals if evals is not None else empty.copy())  # fmt: skip


# --------------------------------------------------------------------------- point statistics


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert stats.iqm([0, 10, 20, 1000]) == pytest.approx(15.0)  # one outlier seed is trimmed away
    assert stats.iqm([1, 2, 3, 4, 1000]) == pytest.approx(3.0)  # int(0.25 * 5) = 1 trimmed at each end
    assert stats.iqm([7.0]) == 7.0


def test_iqm_is_vectorised_along_the_last_axis():
    scores = np.array([[1, 2, 3, 4], [10, 20, 30, 40.0]])
    np.testing.assert_allclose(stats.iqm(scores), [2.5, 25.0])


# --------------------------------------------------------------------------- bootstrap intervals


def test_one_run_has_no_confidence_interval():
    est = stats.estimate([42.0])
    assert est.value == 42.0 and math.isnan(est.low) and math.isnan(est.high) and not est.has_ci


def test_two_runs_get_a_t_interval_wider_than_their_range_flagged_small():
    est = stats.estimate([10.0, 20.0], stats.mean)
    half = sps.t.ppf(0.975, 1) * np.std([10.0, 20.0], ddof=1) / math.sqrt(2)  # 12.71 * 7.07 / 1.41
    assert (est.low, est.high) == pytest.approx((15.0 - half, 15.0 + half))
    assert est.small and est.low < 10.0 and est.high > 20.0


def test_five_runs_use_the_bootstrap_and_are_not_small():
    est = stats.estimate([1.0, 2.0, 3.0, 4.0, 5.0])
    assert not est.small and 1.0 <= est.low <= est.value <= est.high <= 5.0


def test_few_seeds_warning():
    assert stats.few_seeds_warning(5) is None and stats.few_seeds_warning(10) is None
    assert "3 seeds per cell" in stats.few_seeds_warning(3) and "5 or more" in stats.few_seeds_warning(3)


def test_identical_scores_give_a_zero_width_interval():
    est = stats.estimate([3.0, 3.0, 3.0, 3.0])
    assert (est.value, est.low, est.high) == (3.0, 3.0, 3.0)


def test_no_runs_give_nan():
    assert math.isnan(stats.estimate([]).value)


def test_bootstrap_is_reproducible():
    scores = np.random.default_rng(3).normal(size=7)
    assert stats.estimate(scores) == stats.estimate(scores)


def test_mean_interval_matches_the_normal_theory_on_a_known_distribution():
    scores = np.random.default_rng(0).normal(5.0, 1.0, size=100)
    est = stats.estimate(scores, stats.mean)
    assert est.low < 5.0 < est.high
    half_width = 1.96 * scores.std(ddof=1) / math.sqrt(scores.size)
    assert (est.high - est.low) / 2 == pytest.approx(half_width, rel=0.15)


def test_iqm_interval_covers_the_centre_of_a_symmetric_distribution():
    scores = np.random.default_rng(1).standard_t(df=3, size=60) + 10.0
    est = stats.estimate(scores, stats.iqm)
    assert est.low < 10.0 < est.high


def test_difference_and_ratio_hand_computed():
    d = stats.difference([1, 2, 3, 4], [11, 12, 13, 14], stats.mean)
    welch = sps.ttest_ind([11, 12, 13, 14], [1, 2, 3, 4], equal_var=False).confidence_interval(0.95)
    assert d.value == pytest.approx(10.0) and d.small
    assert (d.low, d.high) == pytest.approx((welch.low, welch.high))  # Welch's t interval at n = 4
    big = stats.difference(np.arange(8.0), np.arange(8.0) + 10, stats.mean)
    assert not big.small and big.low <= 10.0 <= big.high and big.high - big.low < 6.0
    r = stats.ratio([100.0, 100.0], [50.0, 50.0])
    assert (r.value, r.low, r.high) == (0.5, 0.5, 0.5)


# --------------------------------------------------------------------------- probability of improvement


def test_probability_of_improvement_hand_computed():
    # x=3: beats 1, ties 3, loses to 5 -> 1.5; x=4: beats 1 and 3 -> 2; (1.5 + 2) / 6
    assert stats.probability_of_improvement([3, 4], [1, 3, 5]).value == pytest.approx(3.5 / 6)
    assert stats.probability_of_improvement([1, 2, 3], [2, 2]).value == pytest.approx(0.5)


def test_probability_of_improvement_extremes():
    better = stats.probability_of_improvement([10, 11, 12], [1, 2, 3])
    # three seeds: the bootstrap would say [1.00, 1.00]; Wilson's interval over 3 pairs does not collapse
    assert better.value == 1.0 and better.small and better.high == 1.0
    assert better.low == pytest.approx(stats.wilson_interval(1.0, 3)[0]) and 0.3 < better.low < 0.6
    many = stats.probability_of_improvement(np.arange(10.0) + 20, np.arange(10.0), n_resamples=300)
    assert (many.value, many.low, many.high, many.small) == (1.0, 1.0, 1.0, False)
    same = stats.probability_of_improvement([5, 5, 5], [5, 5, 5])
    assert same.value == 0.5 and same.pvalue == 1.0


def test_pair_count_equals_mann_whitney_u():
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 5, 9).astype(float), rng.integers(0, 5, 6).astype(float)  # with ties
    u = sps.mannwhitneyu(x, y).statistic / (x.size * y.size)
    assert stats.u_fraction(x, y) == pytest.approx(u)


def test_probability_of_improvement_on_known_normals():
    rng = np.random.default_rng(5)
    x, y = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 200)
    truth = sps.norm.cdf(1.0 / math.sqrt(2.0))  # P(X > Y) for X - Y ~ N(1, 2): 0.760
    est = stats.probability_of_improvement(x, y, n_resamples=500)
    assert est.value == pytest.approx(truth, abs=0.05)
    assert est.low < truth < est.high
    assert est.pvalue < 1e-6


# --------------------------------------------------------------------------- curves


def test_area_under_curve_is_the_step_weighted_mean_return():
    assert stats.area_under_curve([0, 100, 200], [0, 10, 10]) == pytest.approx(7.5)  # (500 + 1000) / 200
    assert stats.area_under_curve([200, 0, 100], [10, 0, 10]) == pytest.approx(7.5)  # order does not matter
    assert stats.area_under_curve([500], [42.0]) == 42.0
    assert math.isnan(stats.area_under_curve([], []))


def test_steps_to_threshold_counts_never_as_infinity():
    assert stats.steps_to_threshold([100, 200, 300], [10, 500, 480], 475) == 200
    assert stats.steps_to_threshold([100, 200], [10, 20], 475) == math.inf
    assert math.isnan(stats.steps_to_threshold([100], [10], None))


def test_env_threshold_comes_from_the_gymnasium_spec():
    assert cells.env_threshold("CartPole-v1") == 475.0
    assert cells.env_threshold("NoSuchEnv-v0") is None
    assert cells.env_threshold(None) is None


def test_short_label():
    assert cells.short_label("network.name=mlp, agent.lr=0.001") == "network=mlp, lr=0.001"
    assert cells.short_label("default") == "default"
    assert cells.short_label("replay.prioritized.alpha=0.6") == "alpha=0.6"


# --------------------------------------------------------------------------- per-cell tables


def test_cell_summary_hand_computed():
    runs = make_runs({"A": {"final": [10, 20, 30, 40]}, "B": {"final": [5, None], "sps": 500.0}})
    summary = cells.cell_summary(runs)
    a, b = summary.iloc[0], summary.iloc[1]
    assert (a["iqm"], a["mean"], a["median"]) == (25.0, 25.0, 25.0)
    assert a["iqm_lo"] < 25 < a["iqm_hi"] and (a["n_runs"], a["n_ok"], a["n_failed"]) == (4, 4, 0)
    assert b["iqm"] == 5.0 and math.isnan(b["iqm_lo"]) and (b["n_ok"], b["n_failed"]) == (1, 1)
    assert b["steps_per_s"] == 500.0
    assert a["threshold"] == 475.0  # CartPole-v1's reward_threshold by default
    assert list(summary.columns) == cells.SUMMARY_COLUMNS


def test_cell_summary_counts_diverged_runs_apart():
    runs = make_runs({"A": {"final": [10, None, None], "status": "diverged"}})
    row = cells.cell_summary(runs).iloc[0]
    assert (row["n_ok"], row["n_failed"], row["n_diverged"]) == (1, 0, 2)


def test_steps_to_threshold_median_over_all_runs():
    runs = make_runs({"most": {"final": [500, 480, 100]}, "few": {"final": [500, 100, 100]}})
    steps = [100, 200, 300]
    evals = make_evals(runs, {
        "c0-s0": [100, 480, 500], "c0-s1": [100, 200, 480], "c0-s2": [10, 20, 100],
        "c1-s0": [480, 490, 500], "c1-s1": [10, 20, 100], "c1-s2": [10, 20, 100],
    }, steps)  # fmt: skip
    summary = cells.cell_summary(runs, evals).set_index("label")
    assert summary.loc["most", "steps_to_threshold"] == 300.0  # median of 200, 300, inf
    assert summary.loc["most", "n_reached"] == 2
    assert summary.loc["few", "steps_to_threshold"] == math.inf  # median of 100, inf, inf: not reached
    assert summary.loc["few", "n_reached"] == 1
    assert cells.cell_summary(runs, evals, threshold=1000.0)["n_reached"].tolist() == [0, 0]


def test_auc_column_is_the_iqm_of_per_run_auc():
    runs = make_runs({"A": {"final": [10, 10]}})
    evals = make_evals(runs, {"c0-s0": [0, 10], "c0-s1": [10, 10]}, [0, 100])
    row = cells.cell_summary(runs, evals).iloc[0]
    assert row["auc"] == pytest.approx(7.5)  # mean of 5 and 10


def test_timing_is_averaged_per_step_then_per_run():
    runs = make_runs({"A": {"final": [1, 2]}})
    steps = pd.DataFrame({
        "run_id": ["c0-s0", "c0-s0", "c0-s1"], "step": [0, 1, 0],
        "t_act": [1.0, 3.0, 4.0], "t_env": [0.5, 0.5, 0.5], "t_learn": [0.0, 0.0, 1.0],
    })  # fmt: skip
    row = cells.timing_summary(runs, steps).iloc[0]
    assert (row["t_act"], row["t_env"], row["t_learn"]) == (3.0, 0.5, 0.5)  # runs: (2, 4), (.5, .5), (0, 1)


def test_eval_curves_give_iqm_per_step():
    runs = make_runs({"A": {"final": [1, 2, 3, 4]}})
    evals = make_evals(runs, {f"c0-s{i}": [i, 10 * i] for i in range(4)}, [50, 100])
    curves = cells.eval_curves(runs, evals)
    assert curves["step"].tolist() == [50, 100]
    assert curves["iqm"].tolist() == pytest.approx([1.5, 15.0])
    assert (curves["n"] == 4).all()


def test_improvement_matrix_compares_cells_of_one_environment_only():
    runs = make_runs({
        "a": {"final": [1, 2, 3]}, "b": {"final": [4, 5, 6]}, "c": {"final": [1, 2], "env": "Acrobot-v1"},
    })  # fmt: skip
    matrix = cells.improvement_matrix(runs, n_resamples=200)
    pairs = {(r.x_label, r.y_label): r.p for r in matrix.itertuples()}
    assert pairs[("b", "a")] == 1.0 and pairs[("a", "b")] == 0.0 and pairs[("a", "a")] == 0.5
    assert ("a", "c") not in pairs and pairs[("c", "c")] == 0.5


def test_wilson_interval_known_value():
    low, high = stats.wilson_interval(0.5, 10)  # textbook: 5/10 -> [0.237, 0.763]
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-3)


def test_order_runs_by_grid_then_by_score():
    runs = make_runs({"a": {"final": [1, 2]}, "b": {"final": [5, 6]}, "c": {"final": [3, 4], "env": "Acrobot-v1"}})
    shuffled = runs.iloc[[5, 2, 0, 4, 1, 3]]
    plan = runs["run_id"].tolist()
    assert cells.cell_order(cells.order_runs(shuffled, plan)) == ["c0", "c1", "c2"]
    assert cells.cell_order(cells.order_runs(runs, plan, sort="score")) == ["c1", "c0", "c2"]
    with pytest.raises(DqnbenchError, match="unknown sort"):
        cells.order_runs(runs, plan, sort="alpha")


def test_variant_drops_the_environment():
    assert cells.variant_label("experiment.env=Acrobot-v1, network.name=mlp") == "network.name=mlp"
    assert cells.variant_label("experiment.env=Acrobot-v1") == "default"


def test_binned_curves_weight_windows_and_skip_nan():
    runs = make_runs({"A": {"final": [1, 2]}})
    per_step = pd.DataFrame({"run_id": ["c0-s0"] * 4 + ["c0-s1"] * 4, "step": [0, 1, 2, 3] * 2,
                             "loss": [np.nan, 2.0, 4.0, 6.0, np.nan, 4.0, 6.0, 8.0]})  # fmt: skip
    curve = cells.binned_curves(runs, per_step, "loss", bins=1)
    assert curve["iqm"].tolist() == pytest.approx([5.0])  # runs: 4 and 6 (NaN ignored)
    windowed = pd.DataFrame({"run_id": ["c0-s0", "c0-s0"], "step": [0, 10], "steps_n": [10, 30],
                             "loss": [1.0, 2.0]})  # fmt: skip
    assert cells.binned_curves(runs, windowed, "loss", bins=1)["iqm"].tolist() == pytest.approx([1.75])
    assert cells.binned_curves(runs, per_step, "q_max").empty  # an older results directory: no column


def test_timing_per_run_divides_windows_by_their_steps():
    steps = pd.DataFrame({"run_id": ["r", "r"], "step": [0, 10], "steps_n": [10, 30],
                          "t_act": [1.0, 3.0], "t_env": [0.0, 0.0], "t_learn": [0.0, 0.0]})  # fmt: skip
    assert cells.timing_per_run(steps)["t_act"].tolist() == pytest.approx([0.1])


def test_summarize_reads_a_results_object():
    runs = make_runs({"A": {"final": [1, 2, 3]}})
    summary = cells.summarize(in_memory_results(runs))
    assert summary["iqm"].iloc[0] == 2.0


def test_builtin_reference_scores():
    from dqnbench.analysis.scores import ATARI_RANDOM_HUMAN, builtin_scores

    assert len(ATARI_RANDOM_HUMAN) == 57
    pong = builtin_scores("ALE/Pong-v5")
    assert (pong.random, pong.reference) == (-20.7, 14.6) and builtin_scores("PongNoFrameskip-v4") == pong
    assert pong.normalize(14.6) == pytest.approx(1.0) and pong.normalize(-20.7) == 0.0
    cart = builtin_scores("CartPole-v1")
    assert cart.reference == 475.0 and 15 < cart.random < 30  # gymnasium's threshold; measured random policy
    assert builtin_scores("MinAtar/Breakout-v1").reference is None and builtin_scores("Unknown-v0") is None


# --------------------------------------------------------------------------- paired by seed


def test_identical_paired_samples_differ_by_exactly_zero():
    scores = np.random.default_rng(3).normal(100, 30, 8)
    for n in (3, 8):  # the t fallback and the paired bootstrap
        est = stats.paired_difference(scores[:n], scores[:n])
        assert (est.value, est.low, est.high) == (0.0, 0.0, 0.0)
        poi = stats.paired_improvement(scores[:n], scores[:n])
        assert poi.value == 0.5
    assert stats.paired_improvement(scores, scores).low == 0.5  # every resample ties on every seed


def test_pairing_removes_what_a_seed_shares():
    rng = np.random.default_rng(4)
    seed_effect = rng.normal(0, 50, 10)  # seeds differ a lot, the candidate adds 5 on every seed (± 1)
    base, cand = 100 + seed_effect, 105 + seed_effect + rng.normal(0, 1, 10)
    paired = stats.paired_difference(base, cand, stats.mean)
    independent = stats.difference(base, cand, stats.mean)
    assert paired.low > 0  # confidently better, which the independent interval cannot see
    assert independent.low < 0 < independent.high
    assert stats.paired_improvement(base, cand).value == 1.0
    t_half = sps.t.ppf(0.975, 2) * np.std(cand[:3] - base[:3], ddof=1) / np.sqrt(3)
    small = stats.paired_difference(base[:3], cand[:3], stats.mean)
    assert small.small and small.high - small.value == pytest.approx(t_half)


def test_paired_samples_must_align():
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired_difference([1.0, 2.0], [1.0])
