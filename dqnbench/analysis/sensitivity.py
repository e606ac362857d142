"""Sensitivity and importance: how much each searched (or swept) value moves the score.

- :func:`sensitivity_figure`: per variant (rows) and key (columns), the score against
  the value: each trial (or run) a point, and the IQM with its 95 % CI per bin of
  values (each value of a list; quantile bins of a range, log-spaced on a log axis).
- :func:`importance_figure`: per variant, Optuna's PED-ANOVA importance of each
  searched key (needs the ``tune`` extra; without it the figure says so).
- :func:`search_view`: a search's test-phase runs only, what the usual plots and
  the report compare.

A search scores trials by their objective; a plain ``[grid]`` with numeric axes
gets the same curves on each run's final return (:func:`grid_points`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from dqnbench.analysis import cells, stats
from dqnbench.analysis.embedding import OKABE_ITO

if TYPE_CHECKING:
    from dqnbench.run.results import Results

#: bins of a numeric range in a sensitivity panel, at most; fewer so that a bin holds about 3 trials
BINS = 5
PER_BIN = 3


def search_view(results: Results) -> Results:
    """A search's test-phase runs (tuned and default configs on the test seeds); a plain grid unchanged."""
    if results.trials is None or "phase" not in results.runs.columns:
        return results
    runs = results.runs[results.runs["phase"] == "test"].reset_index(drop=True)
    keep = set(runs["run_id"])
    tables = {name: getattr(results, name) for name in ("steps", "episodes", "evals")}
    tables = {name: t[t["run_id"].isin(keep)].reset_index(drop=True) for name, t in tables.items()}
    return dataclasses.replace(results, runs=runs, **tables)


def search_points(trials: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Complete trials as ``variant, key, value, score`` rows, and each key's scale (log, linear, categorical)."""
    space = trials.attrs.get("space", {})
    done = trials[trials["state"] == "complete"]
    records = done.to_dict("records")  # per row, each column keeps its own type (iterrows makes ints floats)
    rows = [
        (row["variant"], key, row[key], row["objective"]) for key in space for row in records if row[key] is not None
    ]
    log = {key: "categorical" if info.get("categorical") else "log" if info.get("log") else "linear"
           for key, info in space.items()}  # fmt: skip
    return _points(rows), log


def _points(rows: list[tuple[str, str, object, float]]) -> pd.DataFrame:
    """``variant, key, value, score``; values keep their types (a choice of ints stays ints beside float keys)."""
    columns = list(zip(*rows)) if rows else [[], [], [], []]
    return pd.DataFrame({
        "variant": list(columns[0]), "key": list(columns[1]),
        "value": pd.Series(list(columns[2]), dtype=object), "score": np.asarray(columns[3], dtype=float),
    })  # fmt: skip


def grid_points(runs: pd.DataFrame, axes: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """A plain grid's numeric axes as ``variant, key, value, score`` rows (score: final return per ok run).

    The variant of a run is its cell label without that axis, so each line holds the other axes fixed.
    """
    ok = cells.ok_runs(runs)
    rows = []
    for key in axes:
        for _, row in ok.iterrows():
            parts = [p for p in str(row["label"]).split(", ") if not p.startswith(f"{key}=")]
            rows.append((", ".join(parts) or "all", key, row[key], row["final_return"]))
    points = _points(rows)
    log = {}
    for key in axes:
        values = np.asarray(ok[key], dtype=float)
        log[key] = "log" if values.min() > 0 and values.max() / values.min() >= 20 else "linear"
    return points, log


def numeric_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The axes of a grid whose values are numbers (not booleans), at least three of them."""
    found = []
    for key in axes:
        if key not in runs.columns:
            continue
        values = runs[key].dropna().unique()
        numeric = all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) for v in values)
        if numeric and len(values) >= 3:
            found.append(key)
    return found


def _bins(values: np.ndarray, log: bool, categorical: bool) -> list[np.ndarray]:
    """Index groups of ``values``: one per distinct value when few, else quantile bins (in log space if log)."""
    distinct = np.unique(values)
    bins = min(BINS, max(1, len(values) // PER_BIN))
    if categorical or len(distinct) <= bins:
        return [np.flatnonzero(values == v) for v in distinct]
    scaled = np.log(values) if log else values
    edges = np.quantile(scaled, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, scaled, side="right") - 1, 0, bins - 1)
    return [np.flatnonzero(which == b) for b in range(bins) if (which == b).any()]


def _natural(text: str) -> tuple[float, str]:
    """Choices in numeric order where they are numbers (20 before 100), else by text."""
    try:
        return (float(text), "")
    except ValueError:
        return (math.inf, text)


def sensitivity_figure(points: pd.DataFrame, scales: dict[str, str], *, score: str = "objective") -> Figure:
    """Rows: variants; columns: keys. Points per trial, binned IQM with 95 % CI, log x axis for log ranges.

    ``scales``: key → ``"log"``, ``"linear"`` or ``"categorical"`` (a list of choices: one bin per choice).
    """
    variants = list(dict.fromkeys(points["variant"]))
    keys = list(dict.fromkeys(points["key"]))
    if not variants:
        fig = Figure(figsize=(6, 4))
        fig.text(0.5, 0.5, "no complete trials", ha="center", va="center")
        return fig
    fig = Figure(figsize=(4.2 * len(keys), 3.2 * len(variants)), layout="constrained")
    axes = fig.subplots(len(variants), len(keys), squeeze=False)
    for i, variant in enumerate(variants):
        color = OKABE_ITO[i % len(OKABE_ITO)]
        for j, key in enumerate(keys):
            ax = axes[i][j]
            mine = points[(points["variant"] == variant) & (points["key"] == key)]
            raw = mine["value"].tolist()
            categorical = scales.get(key) == "categorical" or any(isinstance(v, str | bool) for v in raw)
            log = scales.get(key) == "log"
            labels = sorted(dict.fromkeys(map(str, raw)), key=_natural) if categorical else []
            x = np.array([labels.index(str(v)) for v in raw] if categorical else raw, dtype=float)
            y = mine["score"].to_numpy(dtype=float)
            ax.scatter(x, y, s=14, alpha=0.45, color=color, edgecolors="none", label="trials")
            centers, est = [], []
            for group in _bins(x, log, categorical):
                e = stats.estimate(y[group])
                center = np.exp(np.log(x[group]).mean()) if log else x[group].mean()
                centers.append(center)
                est.append(e)
            if centers:
                order = np.argsort(centers)
                cx = np.asarray(centers)[order]
                value = np.array([est[k].value for k in order])
                low = np.array([est[k].low for k in order])
                high = np.array([est[k].high for k in order])
                ax.plot(cx, value, "-o", color="black", ms=4, lw=1.2, label="IQM per bin")
                ax.fill_between(cx, low, high, color=color, alpha=0.25, label="95% CI")
            if len(y):  # the trials set the scale; a wide small-n interval is cut at the edge, not the points
                pad = 0.15 * (np.ptp(y) or abs(y.mean()) or 1.0)
                ax.set_ylim(y.min() - pad, y.max() + pad)
            if categorical:
                ax.set_xticks(range(len(labels)), labels, fontsize=8)
            elif log:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(key)
            ax.set_ylabel(score if j == 0 else "")
            ax.set_title(cells.short_label(variant) if j == 0 else "", fontsize=9, loc="left")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    return fig


def importances(trials: pd.DataFrame) -> pd.DataFrame:
    """PED-ANOVA importance of each searched key per variant: ``variant, key, importance`` (needs Optuna).

    The complete trials are replayed into an in-memory study, so this reads
    ``res.trials`` alone; a variant with fewer than 4 complete trials is left out.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = trials.attrs.get("space", {})
    rows = []
    for variant, mine in trials[trials["state"] == "complete"].groupby("variant", sort=False):
        if len(mine) < 4:
            continue
        dists = {}
        for key, info in space.items():
            values = mine[key].tolist()
            if info.get("categorical"):
                dists[key] = CategoricalDistribution(sorted(set(values), key=str))
            else:
                low, high = float(min(values)), float(max(values))
                dists[key] = FloatDistribution(low, high if high > low else low + 1, log=bool(info.get("log")))
        study = optuna.create_study(direction="maximize")
        for _, row in mine.iterrows():
            params = {k: (row[k] if space[k].get("categorical") else float(row[k])) for k in space}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=row["objective"]))
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), normalize=True
        )
        rows += [(variant, key, float(found.get(key, 0.0))) for key in space]
    return pd.DataFrame(rows, columns=["variant", "key", "importance"])


def importance_figure(trials: pd.DataFrame) -> Figure:
    """One bar chart per variant: each searched key's PED-ANOVA importance (normalised to sum 1)."""
    try:
        table = importances(trials)
    except ImportError:
        table, note = None, 'importances need Optuna: pip install "dqnbench[tune]"'
    else:
        note = "fewer than 4 complete trials per variant: no importances"
    if table is None or table.empty:
        fig = Figure(figsize=(6, 3))
        fig.text(0.5, 0.5, note, ha="center", va="center", fontsize=10)
        return fig
    variants = list(dict.fromkeys(table["variant"]))
    fig = Figure(figsize=(4.5 * min(3, len(variants)), 3.0 * math.ceil(len(variants) / 3)), layout="constrained")
    axes = fig.subplots(math.ceil(len(variants) / 3), min(3, len(variants)), squeeze=False).ravel()
    for ax in axes[len(variants) :]:
        ax.set_visible(False)
    for i, (ax, variant) in enumerate(zip(axes, variants)):
        mine = table[table["variant"] == variant]
        ax.barh(mine["key"], mine["importance"], color=OKABE_ITO[i % len(OKABE_ITO)])
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_xlabel("importance (PED-ANOVA)")
        ax.set_title(cells.short_label(variant), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return fig


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """Config keys (dotted columns) whose value differs between runs: a plain grid's axes."""
    return [c for c in runs.columns if "." in c and runs[c].nunique(dropna=True) > 1]


def write_sensitivity(results: Results, out: Path) -> tuple[list[Path], list[str]]:
    """Write ``sensitivity.png`` (and, for a search, ``importance.png``); the paths and the ``index.md`` lines.

    A plain grid gets sensitivity curves where it sweeps a numeric key over 3+ values; else nothing is written.
    """
    written: list[Path] = []
    lines: list[str] = []
    if results.trials is not None:
        points, log = search_points(results.trials)
        score = f"objective ({results.trials.attrs.get('objective')})"
    else:
        keys = numeric_axes(results.runs, varying_keys(cells.ok_runs(results.runs)))
        if not keys:
            return written, lines
        points, log = grid_points(results.runs, keys)
        score = "final return"
    fig = sensitivity_figure(points, log, score=score)
    written.append(out / "sensitivity.png")
    fig.savefig(written[-1], dpi=150)
    lines += ["## Sensitivity", f"Per variant and key: {score} against the value, each point a "
              f"{'trial' if results.trials is not None else 'run'}; black: IQM per bin of values with its 95% CI "
              "(shaded); log axis for log ranges.", "", "![sensitivity](sensitivity.png)", ""]  # fmt: skip
    if results.trials is not None:
        written.append(out / "importance.png")
        importance_figure(results.trials).savefig(written[-1], dpi=150)
        lines += ["## Importance", "Per variant: how much of the objective's variation each searched key "
                  "explains (Optuna's PED-ANOVA, normalised to sum 1).", "",
                  "![importance](importance.png)", ""]  # fmt: skip
    return written, lines
