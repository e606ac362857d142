"""Statistics of a benchmark: honest answers to "is B better than A, by how much, how sure are we?".

dqnbench follows Agarwal, Schwarzer, Castro, Courville & Bellemare (2021), "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS (the
*rliable* library):

- the **interquartile mean** (IQM) of the scores of the runs of a cell: the mean
  of the middle 50 % of runs, robust to one lucky or crashed seed yet, unlike the
  median, still using half of the data (their §4.3);
- **percentile bootstrap confidence intervals** over runs, resampling each cell's
  runs independently of every other cell's (their stratified bootstrap, §4.1);
- the **probability of improvement** ``P(X > Y)`` of a random run of cell X
  over a random run of cell Y, i.e. the Mann–Whitney U statistic divided by
  ``n_x · n_y`` (their §4.4), with its bootstrap CI.

Everything works per *grid cell* (one configuration, all its seeds) from the
``runs`` / ``evals`` / ``steps`` DataFrames of :class:`dqnbench.run.results.Results`.
Only runs with ``status == "ok"`` carry scores; summaries say how many failed
(crashed) or diverged (the loss became NaN) and were left out.
Bootstraps use a fixed seed so a report is reproducible. A cell with one
successful run gets NaN confidence bounds: one seed gives no evidence of spread.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

if TYPE_CHECKING:
    from dqnbench.run.results import Results

#: Two-sided confidence level of every interval dqnbench reports.
CONFIDENCE = 0.95
#: Bootstrap resamples: enough for stable 95 % percentile bounds, few enough for fast reports.
N_RESAMPLES = 2000
#: Seed of the bootstrap resampling, so the same results always give the same report.
SEED = 0
#: Column of ``runs`` that names the gymnasium environment.
ENV_COLUMN = "experiment.env"

Statistic = Callable[..., Any]


# --------------------------------------------------------------------------- point statistics


def iqm(scores: Any, axis: int = -1) -> Any:
    """Interquartile mean: the mean of the middle 50 % (``scipy.stats.trim_mean(x, 0.25)``).

    Agarwal et al. (2021, §4.3) recommend it over the mean (dominated by outlier
    seeds) and the median (statistically inefficient, ignores half the runs).
    scipy trims ``int(0.25 n)`` scores from each end, as rliable does.
    """
    return sps.trim_mean(np.asarray(scores, dtype=float), 0.25, axis=axis)


def mean(scores: Any, axis: int = -1) -> Any:
    """Arithmetic mean (vectorised along ``axis``, as :func:`scipy.stats.bootstrap` wants)."""
    return np.mean(scores, axis=axis)


def median(scores: Any, axis: int = -1) -> Any:
    """Median (vectorised along ``axis``)."""
    return np.median(scores, axis=axis)


def _u_fraction(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
    """``U / (n_x n_y)`` = P(X > Y) + ½ P(X = Y), counted over all pairs (vectorised).

    This is the Mann–Whitney U statistic of x, normalised; counting pairs
    directly is faster than :func:`scipy.stats.mannwhitneyu` inside a bootstrap,
    and the tests check both agree.
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    greater = x[..., :, None] > y[..., None, :]
    ties = x[..., :, None] == y[..., None, :]
    return (greater + 0.5 * ties).mean(axis=(-2, -1))


# --------------------------------------------------------------------------- bootstrap intervals


def bootstrap_ci(
    samples: tuple[Any, ...],
    statistic: Statistic,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(*samples, axis=-1)``; NaNs when a sample has < 2 runs.

    Each sample is resampled independently of the others: with one sample per
    cell this is Agarwal et al.'s stratified bootstrap. The percentile method
    (rliable's default) stays defined for degenerate data (all seeds equal),
    where BCa fails.
    """
    arrays = tuple(np.asarray(s, dtype=float) for s in samples)
    if any(a.size < 2 for a in arrays):
        return math.nan, math.nan
    result = sps.bootstrap(
        arrays,
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        axis=-1,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (NaN bounds when not estimable)."""

    value: float
    low: float
    high: float

    @property
    def has_ci(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def estimate(
    scores: Any,
    statistic: Statistic = iqm,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic`` of one cell's per-run scores with its bootstrap CI (NaN for no runs)."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    low, high = bootstrap_ci((scores,), statistic, confidence, n_resamples, seed)
    return Estimate(float(statistic(scores)), low, high)


def difference(
    baseline: Any,
    candidate: Any,
    statistic: Statistic = iqm,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic(candidate) − statistic(baseline)`` with a CI resampling both sides independently."""

    def diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
        return statistic(b, axis=axis) - statistic(a, axis=axis)

    return _two_sample(baseline, candidate, diff, confidence, n_resamples, seed)


def ratio(
    baseline: Any,
    candidate: Any,
    statistic: Statistic = mean,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic(candidate) / statistic(baseline)`` (e.g. of steps per second) with its CI."""

    def quotient(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):
            return statistic(b, axis=axis) / statistic(a, axis=axis)

    return _two_sample(baseline, candidate, quotient, confidence, n_resamples, seed)


def _two_sample(
    baseline: Any, candidate: Any, compare: Callable[..., Any], confidence: float, n_resamples: int, seed: int
) -> Estimate:
    """``compare(baseline, candidate)`` with a CI resampling both sides independently (NaN if either is empty)."""
    x, y = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if x.size == 0 or y.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    low, high = bootstrap_ci((x, y), compare, confidence, n_resamples, seed)
    return Estimate(float(compare(x, y)), low, high)


@dataclass(frozen=True)
class Improvement(Estimate):
    """P(X > Y) with its CI, and the two-sided Mann–Whitney p-value of "X and Y score alike"."""

    pvalue: float = math.nan


def probability_of_improvement(
    x: Any,
    y: Any,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Improvement:
    """P(X > Y): how likely a random run of X scores above a random run of Y (ties count ½).

    Agarwal et al. (2021, §4.4): unlike a difference of means it says nothing
    about *how much* better, only how often, which is what a practitioner
    choosing between two configurations bets on. 0.5 means no difference. The
    point estimate is :func:`scipy.stats.mannwhitneyu`'s U over ``n_x n_y``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return Improvement(math.nan, math.nan, math.nan)
    test = sps.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    value = float(test.statistic) / (x.size * y.size)
    pvalue = float(test.pvalue) if not np.all(np.concatenate([x, y]) == x[0]) else 1.0
    low, high = bootstrap_ci((x, y), _u_fraction, confidence, n_resamples, seed)
    return Improvement(value, low, high, pvalue)


# --------------------------------------------------------------------------- per-run curve statistics


def area_under_curve(steps: Any, returns: Any) -> float:
    """Normalised area under the evaluation curve: the step-weighted mean evaluation return.

    The trapezoid area under ``returns`` vs ``steps``, divided by the step span,
    so it is in units of return and comparable across training lengths: it
    rewards learning *early*, which the final score alone does not. A single
    evaluation gives that evaluation's return.
    """
    steps = np.asarray(steps, dtype=float)
    returns = np.asarray(returns, dtype=float)
    if steps.size == 0:
        return math.nan
    order = np.argsort(steps, kind="stable")
    steps, returns = steps[order], returns[order]
    span = steps[-1] - steps[0]
    if span <= 0:
        return float(np.mean(returns))
    return float(np.trapezoid(returns, steps) / span)


def steps_to_threshold(steps: Any, returns: Any, threshold: float | None) -> float:
    """Env steps of the first evaluation whose mean return reaches ``threshold``; ``inf`` if none did.

    ``inf`` (not NaN, not "dropped") keeps a run that never solves the task in
    the statistics as the slowest possible run. NaN when there is no threshold.
    """
    if threshold is None or (isinstance(threshold, float) and math.isnan(threshold)):
        return math.nan
    steps = np.asarray(steps, dtype=float)
    returns = np.asarray(returns, dtype=float)
    order = np.argsort(steps, kind="stable")
    reached = steps[order][returns[order] >= threshold]
    return float(reached[0]) if reached.size else math.inf


def env_threshold(env_id: str | None) -> float | None:
    """The environment's ``spec.reward_threshold`` (CartPole-v1: 475), or None if it has none."""
    if not env_id or not isinstance(env_id, str):
        return None
    try:
        import gymnasium

        value = gymnasium.spec(env_id).reward_threshold
    except Exception:  # unregistered id (plugin env not imported), bad spec: no threshold
        return None
    return None if value is None else float(value)


# --------------------------------------------------------------------------- per-cell tables


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The successful runs: only they have results."""
    if "status" not in runs.columns:
        return runs
    return runs[runs["status"] == "ok"]


def cell_order(runs: pd.DataFrame) -> list[str]:
    """Cells in the order they first appear in ``runs`` (the grid's order)."""
    return list(dict.fromkeys(runs["cell"].tolist()))


def cell_env(runs: pd.DataFrame) -> dict[str, str | None]:
    """cell → environment id (None if the runs table has no env column)."""
    if ENV_COLUMN not in runs.columns:
        return {c: None for c in cell_order(runs)}
    first = runs.drop_duplicates("cell").set_index("cell")[ENV_COLUMN]
    return {c: (v if isinstance(v, str) else None) for c, v in first.items()}


def cell_labels(runs: pd.DataFrame) -> dict[str, str]:
    """cell → its human-readable label ("network.name=mlp, agent.lr=0.001", or "default")."""
    if "label" not in runs.columns:
        return {c: str(c) for c in cell_order(runs)}
    first = runs.drop_duplicates("cell").set_index("cell")["label"]
    return {c: str(v) for c, v in first.items()}


def short_label(label: str) -> str:
    """A compact label for plots: "network.name=mlp, agent.lr=0.001" → "network=mlp, lr=0.001"."""
    parts = []
    for part in str(label).split(", "):
        key, sep, value = part.partition("=")
        if not sep:
            parts.append(part)
            continue
        section, _, leaf = key.rpartition(".")
        key = section if leaf == "name" and section else (leaf or key)
        parts.append(f"{key.rpartition('.')[2]}={value}")
    return ", ".join(parts)


def final_scores(runs: pd.DataFrame) -> dict[str, np.ndarray]:
    """cell → the final greedy evaluation returns of its successful runs, in grid order."""
    good = ok_runs(runs)
    return {c: good.loc[good["cell"] == c, "final_return"].to_numpy(dtype=float) for c in cell_order(runs)}


def _run_curve_stats(
    evals: pd.DataFrame, thresholds: Mapping[str, float | None], run_cell: Mapping[str, str]
) -> pd.DataFrame:
    """Per run: AUC of its evaluation curve and its steps to its cell's threshold."""
    rows = []
    for run_id, group in evals.groupby("run_id", sort=False):
        cell = run_cell.get(run_id)
        if cell is None:
            continue
        rows.append(
            {
                "run_id": run_id,
                "cell": cell,
                "auc": area_under_curve(group["step"], group["mean_return"]),
                "to_threshold": steps_to_threshold(group["step"], group["mean_return"], thresholds.get(cell)),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "cell", "auc", "to_threshold"])


def timing_per_run(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean seconds per env step spent acting, stepping the env and learning."""
    columns = ["t_act", "t_env", "t_learn"]
    if steps is None or steps.empty:
        return pd.DataFrame(columns=["run_id", *columns])
    return steps.groupby("run_id", sort=False)[columns].mean().reset_index()


def timing_summary(runs: pd.DataFrame, steps: pd.DataFrame | None) -> pd.DataFrame:
    """Per cell: ``cell, label, env, n_ok, steps_per_s, t_act, t_env, t_learn`` (no bootstrap: fast).

    Per-step times (seconds) are averaged over each run's steps, then over the
    cell's successful runs; ``steps_per_s`` is the mean over runs of the whole
    run's throughput (evaluation included).
    """
    good = ok_runs(runs)
    envs, labels = cell_env(runs), cell_labels(runs)
    timing = timing_per_run(steps) if steps is not None else None
    rows = []
    for cell in cell_order(runs):
        mine = good[good["cell"] == cell]
        row = {"cell": cell, "label": labels[cell], "env": envs[cell], "n_ok": len(mine)}
        row["steps_per_s"] = float(mine["steps_per_s"].mean()) if len(mine) else math.nan
        row.update(_timing_columns(timing, mine["run_id"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell", "label", "env", "n_ok", "steps_per_s", "t_act", "t_env", "t_learn"])


def _thresholds(
    envs: Mapping[str, str | None], threshold: float | Mapping[str, float] | None
) -> dict[str, float | None]:
    """cell → threshold: a number for all, a mapping env id → number, or each env's reward_threshold."""
    if isinstance(threshold, Mapping):
        return {c: threshold.get(e) if e else None for c, e in envs.items()}
    if threshold is not None:
        return {c: float(threshold) for c in envs}
    cache: dict[str | None, float | None] = {}
    for env in set(envs.values()):
        cache[env] = env_threshold(env)
    return {c: cache[e] for c, e in envs.items()}


def cell_summary(
    runs: pd.DataFrame,
    evals: pd.DataFrame | None = None,
    steps: pd.DataFrame | None = None,
    *,
    threshold: float | Mapping[str, float] | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """One row per grid cell: final-return IQM / mean / median with CIs, AUC, speed, timings.

    Columns: ``cell, label, env, n_runs, n_ok, n_failed, n_diverged, iqm, iqm_lo, iqm_hi,
    mean, mean_lo, mean_hi, median, median_lo, median_hi, auc, auc_lo, auc_hi,
    threshold, steps_to_threshold, n_reached, steps_per_s, t_act, t_env,
    t_learn``. Scores are the final greedy evaluation returns (``final_return``)
    of the cell's successful runs. ``auc`` is the IQM over runs of
    :func:`area_under_curve`. ``steps_to_threshold`` is the median over *all*
    successful runs of :func:`steps_to_threshold`, a run that never reached the
    threshold counting as ``inf``: it is finite only when more than half of the
    runs got there, and ``n_reached`` says how many did. ``threshold`` defaults
    to the env's ``spec.reward_threshold``. Timings are seconds per env step,
    averaged over steps then runs; ``steps_per_s`` is the mean over runs.
    """
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    envs, labels = cell_env(runs), cell_labels(runs)
    thresholds = _thresholds(envs, threshold)
    good = ok_runs(runs)
    run_cell = dict(zip(good["run_id"], good["cell"]))
    curve = _run_curve_stats(evals, thresholds, run_cell) if evals is not None and len(evals) else None
    timing = timing_summary(runs, steps).set_index("cell")
    rows = []
    for cell in cell_order(runs):
        mine = good[good["cell"] == cell]
        scores = mine["final_return"].to_numpy(dtype=float)
        row: dict[str, Any] = {
            "cell": cell,
            "label": labels[cell],
            "env": envs[cell],
            "n_runs": int((runs["cell"] == cell).sum()),
            "n_ok": len(mine),
        }
        row["n_diverged"] = int(((runs["cell"] == cell) & (runs.get("status") == "diverged")).sum())
        row["n_failed"] = row["n_runs"] - row["n_ok"] - row["n_diverged"]
        for name, fn in (("iqm", iqm), ("mean", mean), ("median", median)):
            est = estimate(scores, fn, **kw)
            row.update({name: est.value, f"{name}_lo": est.low, f"{name}_hi": est.high})
        row.update(_curve_columns(curve, cell, thresholds[cell], kw))
        row.update(timing.loc[cell, ["steps_per_s", "t_act", "t_env", "t_learn"]].to_dict())
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = [
    "cell", "label", "env", "n_runs", "n_ok", "n_failed", "n_diverged",
    "iqm", "iqm_lo", "iqm_hi", "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi",
    "auc", "auc_lo", "auc_hi", "threshold", "steps_to_threshold", "n_reached",
    "steps_per_s", "t_act", "t_env", "t_learn",
]  # fmt: skip


def _curve_columns(
    curve: pd.DataFrame | None, cell: str, threshold: float | None, kw: dict[str, Any]
) -> dict[str, Any]:
    if curve is None:
        mine = pd.DataFrame(columns=["auc", "to_threshold"])
    else:
        mine = curve[curve["cell"] == cell]
    auc = estimate(mine["auc"].to_numpy(dtype=float), iqm, **kw)
    reached = mine["to_threshold"].to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # median of [x, inf] is inf: intended
        to_threshold = float(np.median(reached)) if reached.size and threshold is not None else math.nan
    return {
        "auc": auc.value,
        "auc_lo": auc.low,
        "auc_hi": auc.high,
        "threshold": math.nan if threshold is None else float(threshold),
        "steps_to_threshold": to_threshold,
        "n_reached": int(np.isfinite(reached).sum()) if threshold is not None else 0,
    }


def _timing_columns(timing: pd.DataFrame | None, run_ids: pd.Series) -> dict[str, float]:
    columns = ("t_act", "t_env", "t_learn")
    if timing is None or timing.empty:
        return {c: math.nan for c in columns}
    mine = timing[timing["run_id"].isin(set(run_ids))]
    return {c: float(mine[c].mean()) if len(mine) else math.nan for c in columns}


def summarize(results: Results, **kwargs: Any) -> pd.DataFrame:
    """:func:`cell_summary` of a :class:`~dqnbench.run.results.Results`."""
    return cell_summary(results.runs, results.evals, results.steps, **kwargs)


def eval_curves(
    runs: pd.DataFrame,
    evals: pd.DataFrame,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """Learning curves: per cell and evaluation step, the IQM over runs of the mean greedy return.

    Columns ``cell, label, env, step, n, iqm, lo, hi``; ``lo``/``hi`` is the
    bootstrap CI over the runs evaluated at that step (NaN with one run).
    """
    good = ok_runs(runs)
    envs, labels = cell_env(runs), cell_labels(runs)
    merged = evals.merge(good[["run_id", "cell"]], on="run_id", how="inner")
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    rows = []
    for cell in cell_order(good):
        mine = merged[merged["cell"] == cell]
        for step, group in mine.groupby("step", sort=True):
            est = estimate(group["mean_return"].to_numpy(dtype=float), iqm, **kw)
            rows.append((cell, labels[cell], envs[cell], float(step), len(group), est.value, est.low, est.high))
    return pd.DataFrame(rows, columns=["cell", "label", "env", "step", "n", "iqm", "lo", "hi"])


def improvement_matrix(
    runs: pd.DataFrame,
    *,
    with_ci: bool = True,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """P(row cell > column cell) for every ordered pair of cells of the same environment.

    Long format: ``env, x, y, x_label, y_label, p, lo, hi, pvalue``. Cells of
    different environments are not compared: their returns are not on one scale.
    """
    scores, envs, labels = final_scores(runs), cell_env(runs), cell_labels(runs)
    rows = []
    for x, sx in scores.items():
        for y, sy in scores.items():
            if envs[x] != envs[y] or not (sx.size and sy.size):
                continue
            if x == y:
                est = Improvement(0.5, math.nan, math.nan, 1.0)
            elif with_ci:
                est = probability_of_improvement(sx, sy, confidence, n_resamples, seed)
            else:
                est = Improvement(float(_u_fraction(sx, sy)), math.nan, math.nan)
            rows.append((envs[x], x, y, labels[x], labels[y], est.value, est.low, est.high, est.pvalue))
    return pd.DataFrame(rows, columns=["env", "x", "y", "x_label", "y_label", "p", "lo", "hi", "pvalue"])
