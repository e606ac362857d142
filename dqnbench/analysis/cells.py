"""Per-cell tables and labels: the ``runs`` / ``evals`` / ``steps`` DataFrames grouped into grid cells.

A cell is one configuration with all its seeds. Only runs with ``status ==
"ok"`` carry scores; summaries say how many failed (crashed) or diverged (the
loss became NaN) and were left out. The statistics themselves are array
functions of :mod:`dqnbench.analysis.stats`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dqnbench.analysis.stats import (
    CONFIDENCE,
    N_RESAMPLES,
    SEED,
    SMALL_N,
    Improvement,
    area_under_curve,
    clip,
    estimate,
    iqm,
    mean,
    median,
    probability_of_improvement,
    steps_to_threshold,
    u_fraction,
)

if TYPE_CHECKING:
    from dqnbench.run.results import Results

#: Column of ``runs`` that names the gymnasium environment.
ENV_COLUMN = "experiment.env"


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


def ok_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The successful runs: only they have results."""
    if "status" not in runs.columns:
        return runs
    return runs[runs["status"] == "ok"]


def cell_order(runs: pd.DataFrame) -> list[str]:
    """Cells in the order they first appear in ``runs``: the grid's, once :func:`order_runs` sorted the rows."""
    return list(dict.fromkeys(runs["cell"].tolist()))


#: How reports and plots order cells: the grid's expansion order, or best score first.
SORTS = ("grid", "score")


def order_runs(runs: pd.DataFrame, run_ids: list[str] | None = None, sort: str = "grid") -> pd.DataFrame:
    """``runs`` with its rows reordered so that :func:`cell_order` is the one order of every view.

    ``grid``: the order of ``run_ids`` (the grid's expansion, ``plan.json``), runs
    it does not list after them in their current order. ``score``: environments
    in grid order, within each the cells by IQM final return, best first. Every
    table, legend and panel reads cells in first-appearance order, so sorting
    the rows once gives one order everywhere.
    """
    if sort not in SORTS:
        from dqnbench.errors import DqnbenchError

        raise DqnbenchError(f"unknown sort {sort!r} (allowed: {', '.join(SORTS)})")
    if runs.empty:
        return runs
    if run_ids:
        rank = {rid: i for i, rid in enumerate(run_ids)}
        key = runs["run_id"].map(lambda r: rank.get(r, len(rank))).to_numpy()
        runs = runs.iloc[np.argsort(key, kind="stable")]
    cells = cell_order(runs)
    if sort == "score":
        envs = cell_env(runs)
        env_rank = {e: i for i, e in enumerate(dict.fromkeys(envs.values()))}
        scores = final_scores(runs)
        score = {c: (float(iqm(v)) if v.size else -math.inf) for c, v in scores.items()}
        cells = sorted(cells, key=lambda c: (env_rank[envs[c]], -score[c]))
    rank_cell = {c: i for i, c in enumerate(cells)}
    key = runs["cell"].map(rank_cell).to_numpy()
    return runs.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


def in_order(results: Results, sort: str = "grid") -> Results:
    """``results`` with :func:`order_runs` applied, grid order read from the directory's ``plan.json``."""
    from dqnbench.run.results import current_run_ids

    run_ids = current_run_ids(results.path) if Path(results.path).is_dir() else None
    return dataclasses.replace(results, runs=order_runs(results.runs, run_ids, sort))


def variant_label(label: str) -> str:
    """A label without its environment: the same variant on every environment of a grid gets one colour."""
    parts = [p for p in str(label).split(", ") if not p.startswith(f"{ENV_COLUMN}=")]
    return ", ".join(parts) or "default"


def cell_variants(runs: pd.DataFrame) -> dict[str, str]:
    """cell → its variant (label without the environment), in cell order."""
    return {c: variant_label(lbl) for c, lbl in cell_labels(runs).items()}


def variant_order(runs: pd.DataFrame) -> list[str]:
    """Variants in the order their first cell appears: one colour index per variant."""
    return list(dict.fromkeys(cell_variants(runs)[c] for c in cell_order(runs)))


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


def steps_per_row(steps: pd.DataFrame) -> pd.Series:
    """Env steps each ``steps`` row stands for: its ``steps_n`` column (a window of a long run), else 1."""
    if "steps_n" in steps.columns:
        return steps["steps_n"].fillna(1).astype(float)
    return pd.Series(1.0, index=steps.index)


def timing_per_run(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean seconds per env step spent acting, stepping the env and learning.

    A windowed row (``steps_n`` > 1) holds the sum of its steps' times, so the
    mean per step is Σ time / Σ steps_n over the run.
    """
    columns = ["t_act", "t_env", "t_learn"]
    if steps is None or steps.empty or not set(columns) <= set(steps.columns):
        return pd.DataFrame(columns=["run_id", *columns])
    frame = steps[["run_id", *columns]].copy()
    frame["_n"] = steps_per_row(steps)
    sums = frame.groupby("run_id", sort=False)[[*columns, "_n"]].sum()
    return sums[columns].div(sums["_n"], axis=0).reset_index()


def step_cost(steps: pd.DataFrame) -> pd.Series:
    """Per row: seconds per env step spent in act + env + learn (a window's total over its ``steps_n``)."""
    total = steps["t_act"] + steps["t_env"] + steps["t_learn"]
    return total / steps_per_row(steps)


def timing_summary(runs: pd.DataFrame, steps: pd.DataFrame | None) -> pd.DataFrame:
    """Per cell: ``cell, label, env, n_ok, steps_per_s, t_act, t_env, t_learn, learn_path`` (no bootstrap: fast).

    Per-step times (seconds) are averaged over each run's steps, then over the
    cell's successful runs; ``steps_per_s`` is the mean over runs of the whole
    run's throughput (evaluation included). ``learn_path``: how the cell's runs
    computed gradients (``autograd``, or ``hand-derived`` for a network's manual path;
    empty for results recorded before dqnbench said).
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
        paths = mine["learn_path"].dropna().astype(str) if "learn_path" in mine.columns else pd.Series(dtype=str)
        row["learn_path"] = ", ".join(sorted(set(paths)))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*TIMING_COLUMNS, "learn_path"])


TIMING_COLUMNS = ["cell", "label", "env", "n_ok", "steps_per_s", "t_act", "t_env", "t_learn"]


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
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
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
    averaged over steps then runs; ``steps_per_s`` is the mean over runs. ``bounds``: env →
    the return range intervals are clipped to (:mod:`dqnbench.analysis.bounds`).
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
        row["small_n"] = bool(0 < row["n_ok"] < SMALL_N)
        limits = (bounds or {}).get(envs[cell], (-math.inf, math.inf))
        for name, fn in (("iqm", iqm), ("mean", mean), ("median", median)):
            est = clip(estimate(scores, fn, **kw), *limits)
            row.update({name: est.value, f"{name}_lo": est.low, f"{name}_hi": est.high})
        row.update(_curve_columns(curve, cell, thresholds[cell], kw, limits))
        row.update(timing.loc[cell, ["steps_per_s", "t_act", "t_env", "t_learn"]].to_dict())
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = [
    "cell", "label", "env", "n_runs", "n_ok", "n_failed", "n_diverged",
    "iqm", "iqm_lo", "iqm_hi", "mean", "mean_lo", "mean_hi", "median", "median_lo", "median_hi",
    "auc", "auc_lo", "auc_hi", "threshold", "steps_to_threshold", "n_reached",
    "steps_per_s", "t_act", "t_env", "t_learn", "small_n",
]  # fmt: skip


def _curve_columns(
    curve: pd.DataFrame | None, cell: str, threshold: float | None, kw: dict[str, Any], limits: tuple[float, float]
) -> dict[str, Any]:
    if curve is None:
        mine = pd.DataFrame(columns=["auc", "to_threshold"])
    else:
        mine = curve[curve["cell"] == cell]
    auc = clip(estimate(mine["auc"].to_numpy(dtype=float), iqm, **kw), *limits)
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
    """:func:`cell_summary` of a :class:`~dqnbench.run.results.Results`, intervals within the returns it allows."""
    from dqnbench.analysis.bounds import results_bounds

    kwargs.setdefault("bounds", results_bounds(results))
    return cell_summary(results.runs, results.evals, results.steps, **kwargs)


def eval_curves(
    runs: pd.DataFrame,
    evals: pd.DataFrame,
    *,
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> pd.DataFrame:
    """Learning curves: per cell and evaluation step, the IQM over runs of the mean greedy return.

    Columns ``cell, label, env, step, n, iqm, lo, hi, small``; ``lo``/``hi`` is the
    CI over the runs evaluated at that step (NaN with one run; ``small``: fewer
    than :data:`SMALL_N` runs, a t interval), clipped to the env's ``bounds``.
    """
    good = ok_runs(runs)
    envs, labels = cell_env(runs), cell_labels(runs)
    merged = evals.merge(good[["run_id", "cell"]], on="run_id", how="inner")
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    rows = []
    for cell in cell_order(good):
        mine = merged[merged["cell"] == cell]
        limits = (bounds or {}).get(envs[cell], (-math.inf, math.inf))
        for step, group in mine.groupby("step", sort=True):
            est = clip(estimate(group["mean_return"].to_numpy(dtype=float), iqm, **kw), *limits)
            rows.append((cell, labels[cell], envs[cell], float(step), len(group), est.value, est.low, est.high,
                         est.small))  # fmt: skip
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


CURVE_COLUMNS = ["cell", "label", "env", "step", "n", "iqm", "lo", "hi", "small"]
#: Training-signal curves :func:`binned_curves` can draw: (table, column, how a window row aggregates).
TRAINING_SIGNALS = {
    "episode_return": ("episodes", "return"),
    "loss": ("steps", "loss"),
    "q_max": ("steps", "q_max"),
    "epsilon": ("steps", "epsilon"),
}


def binned_curves(
    runs: pd.DataFrame,
    table: pd.DataFrame,
    column: str,
    *,
    bins: int = 30,
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = 500,
    seed: int = SEED,
) -> pd.DataFrame:
    """A training signal over env steps: per cell and step bin, the IQM over runs of each run's bin mean.

    ``table`` is ``steps`` (``loss``, ``q_max``, ``epsilon``: per-step values, or
    per-window means when rows carry ``steps_n``, weighted by it) or
    ``episodes`` (``return``, placed at the step the episode ended). Bins are
    equal spans of ``[0, last step]`` per environment; each run contributes the
    mean of its values in a bin (NaNs, e.g. the loss before learning starts,
    ignored), and the cell's curve is the IQM of those with its CI
    (:func:`estimate`), clipped to the env's ``bounds`` when given (for returns).
    Columns as :func:`eval_curves`; ``step`` is the bin centre.
    Empty when the column is absent (results of an older dqnbench).
    """
    if table is None or table.empty or column not in table.columns:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    good = ok_runs(runs)
    envs, labels = cell_env(runs), cell_labels(runs)
    frame = table[["run_id", "step", column]].copy()
    frame["_w"] = steps_per_row(table) if "steps_n" in table.columns else 1.0
    frame["_x"] = frame["step"].astype(float) + (frame["_w"] - 1) / 2  # a window's centre step
    frame = frame.merge(good[["run_id", "cell"]], on="run_id", how="inner")
    frame = frame[np.isfinite(frame[column].astype(float))]
    if frame.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    frame["_env"] = frame["cell"].map(envs).fillna("")
    frame["_v"] = frame[column].astype(float) * frame["_w"]
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    rows = []
    for _, mine in frame.groupby("_env", sort=False):
        edges = np.linspace(0.0, max(float(mine["_x"].max()), 1.0), bins + 1)
        mine = mine.assign(_bin=np.clip(np.searchsorted(edges, mine["_x"], side="right") - 1, 0, bins - 1))
        per_run = mine.groupby(["cell", "run_id", "_bin"], sort=False)[["_v", "_w"]].sum()
        per_run = (per_run["_v"] / per_run["_w"]).rename("value").reset_index()
        for cell in cell_order(good):
            cell_rows = per_run[per_run["cell"] == cell]
            limits = (bounds or {}).get(envs[cell], (-math.inf, math.inf))
            for b, group in cell_rows.groupby("_bin", sort=True):
                est = clip(estimate(group["value"].to_numpy(dtype=float), iqm, **kw), *limits)
                centre = (edges[b] + edges[b + 1]) / 2
                rows.append((cell, labels[cell], envs[cell], centre, len(group), est.value, est.low, est.high,
                             est.small))  # fmt: skip
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


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
                est = Improvement(0.5, math.nan, math.nan, pvalue=1.0)
            elif with_ci:
                est = probability_of_improvement(sx, sy, confidence, n_resamples, seed)
            else:
                small = min(sx.size, sy.size) < SMALL_N
                est = Improvement(float(u_fraction(sx, sy)), math.nan, math.nan, small=small)
            rows.append((envs[x], x, y, labels[x], labels[y], est.value, est.low, est.high, est.pvalue, est.small))
    return pd.DataFrame(rows, columns=["env", "x", "y", "x_label", "y_label", "p", "lo", "hi", "pvalue", "small"])
