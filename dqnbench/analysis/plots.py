"""Comparison plots of a results directory, and the page that shows them.

Every figure function takes DataFrames (``Results.runs`` / ``evals`` /
``steps``) and returns a :class:`matplotlib.figure.Figure`, so it works in a
notebook as well as here; :func:`write_plots` only saves them. Statistics come
from :mod:`dqnbench.analysis.stats` (IQM with stratified bootstrap CIs and the
probability of improvement, after Agarwal et al. 2021). Colours are Okabe &
Ito's colour-blind-safe palette, repeated with different line styles beyond
eight cells. Figures are built with ``matplotlib.figure.Figure`` (no pyplot
state) and saved by the Agg renderer; importing this module selects the Agg
backend unless pyplot is already in use (a notebook keeps its inline backend).

Files written by :func:`write_plots` into ``<results>/plots/``:

- ``learning_curves.png``: greedy evaluation return vs env steps, IQM over
  seeds with a 95 % CI band, one panel per environment;
- ``final_scores.png``: IQM final return with 95 % CI error bars, sorted;
- ``improvement.png``: the probability-of-improvement matrix P(row > column);
- ``timing.png``: stacked per-step act / env / learn time with steps per second;
- ``embedding_<i>.png`` / ``.gif``: the 3D embedding of each network variant
  (see :mod:`dqnbench.analysis.embedding`);
- ``index.md``: the report table and every image.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dqnbench.analysis.embedding import OKABE_ITO, use_agg

use_agg()  # before anything imports pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dqnbench.agent.learning import AUTOGRAD  # noqa: E402
from dqnbench.analysis import cells, stats  # noqa: E402
from dqnbench.analysis.bounds import results_bounds, return_bounds  # noqa: E402
from dqnbench.errors import ResultsError  # noqa: E402

if TYPE_CHECKING:
    from dqnbench.plugin.registry import Registry
    from dqnbench.run.results import Results

#: Resolution of every PNG.
DPI = 150
LINESTYLES = ("-", "--", ":", "-.")
PLOTS_DIR = "plots"


def _style(i: int) -> dict[str, Any]:
    """Colour and line style of the i-th variant: 8 colours, then the next line style."""
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)]}


def variant_styles(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """variant → its style: one colour per variant in every panel and figure, in grid order."""
    return {v: _style(i) for i, v in enumerate(cells.variant_order(runs))}


def cell_styles(runs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """cell → the style of its variant (the same variant on two environments looks the same)."""
    styles, variants = variant_styles(runs), cells.cell_variants(runs)
    return {c: styles[variants[c]] for c in cells.cell_order(runs)}


SMALL_NOTE = f"† n too small (< {stats.SMALL_N} runs): t-interval band"


def _curve_label(label: str, n: int) -> str:
    """``"network=mlp (n=5)"``; † marks fewer than :data:`~dqnbench.analysis.stats.SMALL_N` runs, nothing else."""
    return f"{cells.short_label(cells.variant_label(label))} (n={n}{' †' if n < stats.SMALL_N else ''})"


def _envs(runs: pd.DataFrame) -> list[str | None]:
    return list(dict.fromkeys(cells.cell_env(cells.ok_runs(runs)).values()))


def _env_title(env: str | None) -> str:
    return env or "environment"


def _panels(n: int, width: float = 6.0, height: float = 4.2) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _no_data(fig: Figure, message: str) -> Figure:
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=12)
    return fig


# --------------------------------------------------------------------------- learning curves


def learning_curves_figure(
    runs: pd.DataFrame,
    evals: pd.DataFrame,
    *,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    threshold: bool = True,
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
) -> Figure:
    """Greedy evaluation return vs env steps: IQM over seeds, CI band, one panel per environment.

    A dotted line marks the environment's reward threshold when it has one. Bands are
    clipped to ``bounds`` (default: what the env allows, :mod:`dqnbench.analysis.bounds`).
    """
    if bounds is None:
        bounds = return_bounds(runs, evals)
    curves = cells.eval_curves(runs, evals, bounds=bounds, confidence=confidence, n_resamples=n_resamples)
    envs = list(dict.fromkeys(curves["env"].tolist())) if len(curves) else []
    if not envs:
        return _no_data(Figure(figsize=(6, 4)), "no evaluations of successful runs")
    fig, axes = _panels(len(envs))
    styles = cell_styles(runs)
    small_any = False
    for ax, env in zip(axes, envs):
        mine = curves[curves["env"].fillna("") == (env or "")]
        for cell, group in mine.groupby("cell", sort=False):
            style = styles[cell]
            small = bool(group["small"].any())
            small_any |= int(group["n"].max()) < stats.SMALL_N
            label = _curve_label(group["label"].iloc[0], int(group["n"].max()))
            ax.plot(group["step"], group["iqm"], marker="o", markersize=3, label=label, **style)
            ax.fill_between(group["step"], group["lo"], group["hi"], color=style["color"], alpha=0.2, linewidth=0,
                            hatch="//" if small else None)  # fmt: skip
        goal = cells.env_threshold(env) if threshold else None
        if goal is not None:
            ax.axhline(goal, color="0.3", linestyle=":", linewidth=1, label=f"reward threshold {goal:g}")
        ax.set_title(f"{_env_title(env)}: IQM greedy return, {confidence:.0%} CI")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return (mean over episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if small_any:
        fig.text(0.01, 0.0, SMALL_NOTE, fontsize=7, ha="left", va="bottom")
    return fig


# --------------------------------------------------------------------------- training signals

SIGNAL_TITLES = {
    "episode_return": "training-episode return",
    "loss": "TD loss",
    "q_max": "mean max-Q",
    "epsilon": "ε (exploration)",
}


def training_curves_figure(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    episodes: pd.DataFrame,
    *,
    bins: int = 30,
    confidence: float = stats.CONFIDENCE,
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
) -> Figure:
    """Training signals over env steps, one row per signal and one column per environment.

    Training-episode returns (``episodes``), TD loss, mean max-Q and ε
    (``steps``; per-window means when the table is windowed): per step bin the
    IQM over seeds of each run's bin mean, with a CI band
    (:func:`dqnbench.analysis.cells.binned_curves`). Signals an older results
    directory lacks are left out. Learners' losses are not on one scale (QR-DQN's
    quantile Huber, C51's cross-entropy, DQN's squared TD error), so each learner
    gets its own loss row. Return bands are clipped to ``bounds`` (default: what
    the env allows), loss bands at 0 and ε bands to [0, 1].
    """
    rows = signal_rows(runs, steps, episodes, bins=bins, confidence=confidence, bounds=bounds)
    envs = _envs(runs)
    if not rows or not envs:
        return _no_data(Figure(figsize=(6, 4)), "no training signals recorded")
    styles = cell_styles(runs)
    fig = Figure(figsize=(5.2 * len(envs), 3.0 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(envs), squeeze=False)
    small_any = False
    for i, (name, title, curve) in enumerate(rows):
        for j, env in enumerate(envs):
            ax = axes[i][j]
            mine = curve[curve["env"].fillna("") == (env or "")]
            for cell, group in mine.groupby("cell", sort=False):
                style = styles[cell]
                small_any |= int(group["n"].max()) < stats.SMALL_N
                label = _curve_label(group["label"].iloc[0], int(group["n"].max()))
                ax.plot(group["step"], group["iqm"], label=label, linewidth=1.4, **style)
                ax.fill_between(group["step"], group["lo"], group["hi"], color=style["color"], alpha=0.18,
                                linewidth=0)  # fmt: skip
            if name == "loss" and len(mine) and (mine["iqm"] > 0).all():
                ax.set_yscale("log")
            ax.set_title(f"{_env_title(env)}: {title}", fontsize=9)
            ax.set_xlabel("environment steps", fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Training signals: IQM over seeds per step bin, {confidence:.0%} CI", fontsize=10)
    if small_any:
        fig.text(0.01, 0.0, SMALL_NOTE, fontsize=7, ha="left", va="bottom")
    return fig


LEARNER_COLUMN = "learner.name"


def signal_rows(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    episodes: pd.DataFrame,
    *,
    bins: int = 30,
    confidence: float = stats.CONFIDENCE,
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
) -> list[tuple[str, str, pd.DataFrame]]:
    """``(signal, panel title, binned curves)`` per row of the training figure; the loss split by learner."""
    envs = _envs(runs)
    limits = {
        "episode_return": bounds if bounds is not None else return_bounds(runs, episodes),
        "loss": dict.fromkeys(envs, (0.0, math.inf)),
        "epsilon": dict.fromkeys(envs, (0.0, 1.0)),
    }
    good = cells.ok_runs(runs)
    learners = list(dict.fromkeys(good[LEARNER_COLUMN].dropna())) if LEARNER_COLUMN in good.columns else []
    tables = {"steps": steps, "episodes": episodes}
    rows = []
    for name, (table, column) in cells.TRAINING_SIGNALS.items():
        groups = [(SIGNAL_TITLES[name], runs)]
        if name == "loss" and len(learners) > 1:
            groups = [(f"{SIGNAL_TITLES[name]}, {lr} learner", runs[runs[LEARNER_COLUMN] == lr]) for lr in learners]
        for title, mine in groups:
            curve = cells.binned_curves(mine, tables[table], column, bins=bins, bounds=limits.get(name),
                                        confidence=confidence)  # fmt: skip
            if len(curve):
                rows.append((name, title, curve))
    return rows


# --------------------------------------------------------------------------- across environments


def aggregate_figure(agg: Any, *, confidence: float = stats.CONFIDENCE) -> Figure:
    """Cross-environment aggregates: IQM / median / mean / optimality gap intervals and performance profiles.

    Normalized scores (0 = random, 1 = reference) with stratified-bootstrap CIs,
    after Agarwal et al. (2021, Fig. 9 and §4.2); one colour per variant, as in every other figure.
    """
    from dqnbench.analysis.aggregate import METRICS, performance_profile

    table = agg.table
    if table.empty:
        return _no_data(Figure(figsize=(6, 4)), "no environment has a reference score")
    colours = {v: _style(i)["color"] for i, v in enumerate(table["variant"])}
    fig = Figure(figsize=(15, 2.2 + 0.45 * len(table) + 3.5), layout="constrained")
    grid = fig.add_gridspec(2, len(METRICS), height_ratios=[0.6 + 0.3 * len(table), 3.5])
    names = {"iqm": "IQM", "median": "median", "mean": "mean", "optimality_gap": "optimality gap (lower = better)"}
    y = np.arange(len(table))[::-1]
    for k, metric in enumerate(METRICS):
        ax = fig.add_subplot(grid[0, k])
        for yi, (_, r) in zip(y, table.iterrows()):
            ax.plot([r[f"{metric}_lo"], r[f"{metric}_hi"]], [yi, yi], color=colours[r["variant"]], linewidth=6,
                    alpha=0.6, solid_capstyle="butt")  # fmt: skip
            ax.plot([r[metric]], [yi], "|", color="black", markersize=12)
        ax.set_yticks(y, [cells.short_label(v) + (" †" if s else "") for v, s in zip(table["variant"], table["small"])]
                      if k == 0 else [], fontsize=8)  # fmt: skip
        ax.set_title(names[metric], fontsize=9)
        ax.set_xlabel("normalized score", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    profile = performance_profile(agg.normalized, confidence=confidence)
    ax = fig.add_subplot(grid[1, :])
    for variant, group in profile.groupby("variant", sort=False):
        ax.plot(group["tau"], group["fraction"], color=colours[variant], label=cells.short_label(variant))
        ax.fill_between(group["tau"], group["lo"], group["hi"], color=colours[variant], alpha=0.18, linewidth=0)
    ax.axvline(1.0, color="0.3", linestyle=":", linewidth=1, label="reference score")
    ax.set_xlabel("normalized score τ (0 = random policy, 1 = reference)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title(f"Performance profiles over {len(agg.anchors)} environments ({confidence:.0%} CI bands)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Across environments: normalized final scores, stratified-bootstrap CIs (Agarwal et al. 2021)"
                 + ("; † fewer than 5 runs on an env" if table["small"].any() else ""), fontsize=10)  # fmt: skip
    return fig


# --------------------------------------------------------------------------- final scores and P(improvement)


def final_scores_figure(
    runs: pd.DataFrame,
    *,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    bounds: Mapping[str | None, tuple[float, float]] | None = None,
) -> Figure:
    """IQM of the final greedy return per cell with CI error bars, sorted best on top, per environment.

    Each run's score is drawn as a small dot so the spread behind the interval stays visible.
    Intervals are clipped to ``bounds`` (default: what the env allows).
    """
    if bounds is None:
        bounds = return_bounds(runs)
    summary = cells.cell_summary(runs, bounds=bounds, confidence=confidence, n_resamples=n_resamples)
    summary = summary[summary["n_ok"] > 0]
    if summary.empty:
        return _no_data(Figure(figsize=(6, 4)), "no successful runs")
    envs = list(dict.fromkeys(summary["env"].tolist()))
    height = 1.2 + 0.45 * summary.groupby("env", dropna=False).size().max()
    fig, axes = _panels(len(envs), width=6.5, height=height)
    scores = cells.final_scores(runs)
    styles = cell_styles(runs)
    for ax, env in zip(axes, envs):
        mine = summary[summary["env"].isna()] if env is None else summary[summary["env"] == env]
        y = np.arange(len(mine))[::-1]  # the report's order, top to bottom
        for yi, (_, r) in zip(y, mine.iterrows()):
            colour = styles[r["cell"]]["color"]
            low = max(r["iqm"] - r["iqm_lo"], 0) if not math.isnan(r["iqm_lo"]) else 0
            high = max(r["iqm_hi"] - r["iqm"], 0) if not math.isnan(r["iqm_hi"]) else 0
            ax.errorbar([r["iqm"]], [yi], xerr=[[low], [high]], fmt="o", color=colour, ecolor=colour, capsize=4,
                        markersize=7, zorder=3, label=f"IQM, {confidence:.0%} CI" if yi == y[0] else None)  # fmt: skip
            points = scores[r["cell"]]
            jitter = np.linspace(-0.15, 0.15, len(points)) if len(points) > 1 else np.zeros(1)
            ax.scatter(points, yi + jitter, s=10, color="0.35", alpha=0.8, zorder=2,
                       label="single run" if yi == y[0] else None)  # fmt: skip
        ax.set_yticks(y, [_curve_label(lbl, n) for lbl, n in zip(mine["label"], mine["n_ok"])], fontsize=8)
        ax.set_xlabel("final greedy evaluation return")
        ax.set_title(f"{_env_title(env)}: final return by cell")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def has_comparisons(runs: pd.DataFrame) -> bool:
    """Does some environment have two or more cells with successful runs (a P(X > Y) matrix to draw)?"""
    envs = cells.cell_env(cells.ok_runs(runs))
    return len(envs) > len(set(envs.values()))


def improvement_figure(
    runs: pd.DataFrame, *, confidence: float = stats.CONFIDENCE, n_resamples: int = stats.N_RESAMPLES
) -> Figure:
    """Heat map of P(row cell > column cell) on the final return, per environment.

    0.5 means a coin flip; the bracketed interval is its bootstrap CI (shown up to 6 cells).
    """
    if not has_comparisons(runs):
        return _no_data(Figure(figsize=(6, 4)), "no environment has two cells to compare")
    scores = cells.final_scores(runs)
    few = sum(1 for s in scores.values() if s.size) <= 6
    matrix = cells.improvement_matrix(runs, with_ci=few, confidence=confidence, n_resamples=n_resamples)
    if matrix.empty:
        return _no_data(Figure(figsize=(6, 4)), "no successful runs")
    envs = list(dict.fromkeys(matrix["env"].tolist()))
    size = max(matrix.groupby("env", dropna=False)["x"].nunique())
    side = 2.5 + 0.9 * size
    fig, axes = _panels(len(envs), width=side + 1.8, height=side)
    labels = cells.cell_labels(runs)
    image = None
    for ax, env in zip(axes, envs):
        mine = matrix[matrix["env"].isna()] if env is None else matrix[matrix["env"] == env]
        order = list(dict.fromkeys(mine["x"].tolist()))
        grid = mine.pivot(index="x", columns="y", values="p").reindex(index=order, columns=order)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu", vmin=0, vmax=1)
        for row in mine.itertuples():
            i, j = order.index(row.x), order.index(row.y)
            text = f"{row.p:.2f}"
            if not math.isnan(row.lo):
                text += f"\n[{row.lo:.2f}, {row.hi:.2f}]"
            if row.small and row.x != row.y:
                text += " †"
            shade = "white" if abs(row.p - 0.5) > 0.3 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=shade)
        names = [cells.short_label(cells.variant_label(labels[c])) for c in order]
        ax.set_xticks(range(len(order)), names, rotation=35, ha="right", fontsize=7)
        ax.set_yticks(range(len(order)), names, fontsize=7)
        ax.set_xlabel("cell Y")
        ax.set_ylabel("cell X")
        ax.set_title(f"{_env_title(env)}: P(X > Y), final return", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="probability of improvement P(X > Y)")
    if matrix["small"].any():
        fig.text(0.01, 0.0, f"† n too small (< {stats.SMALL_N} runs): Wilson interval over min(n_x, n_y) pairs",
                 fontsize=7, ha="left", va="bottom")  # fmt: skip
    return fig


# --------------------------------------------------------------------------- timing


def timing_figure(runs: pd.DataFrame, steps: pd.DataFrame) -> Figure:
    """Stacked mean per-step act / env / learn time (ms) per cell, annotated with steps per second.

    Cells whose learner took a speed path (``learn_path`` other than autograd: a
    network's hand-derived gradients, its manual path) say so beside their speed, and a
    note says their speed is not comparable one to one with autograd cells.
    """
    summary = cells.timing_summary(runs, steps)
    summary = summary[summary["n_ok"] > 0]
    if summary.empty:
        return _no_data(Figure(figsize=(6, 4)), "no successful runs")
    fig = Figure(figsize=(8.5, 1.4 + 0.45 * len(summary)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(summary))
    left = np.zeros(len(summary))
    parts = (("t_act", "act (forward + exploration)"), ("t_env", "env.step"), ("t_learn", "learn (update)"))
    for i, (column, name) in enumerate(parts):
        ms = summary[column].fillna(0).to_numpy(dtype=float) * 1e3
        ax.barh(y, ms, left=left, color=OKABE_ITO[i], label=name, height=0.6)
        left += ms
    fast = [bool(p) and p != AUTOGRAD for p in summary["learn_path"]]
    for yi, total, sps, path, quick in zip(y, left, summary["steps_per_s"], summary["learn_path"], fast):
        ax.text(total, yi, f"  {sps:,.0f} steps/s" + (f", {path} gradient" if quick else ""), va="center",
                fontsize=8, fontweight="bold" if quick else "normal")  # fmt: skip
    ax.set_yticks(y, [cells.short_label(lbl) for lbl in summary["label"]], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, left.max() * (1.7 if any(fast) else 1.35) if left.max() > 0 else 1)
    ax.set_xlabel("mean time per environment step (ms)")
    fig.suptitle("Where the time goes: mean time per env step (steps/s: training throughput)", fontsize=10)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    if any(fast):
        ax.annotate("Bold: the learner took the speed path named (the network derives its gradients by hand "
                    "under the learner's loss), not autograd:\nspeed differences to other cells reflect that code "
                    "path as well as the variant.", xy=(0, 0), xycoords="axes fraction", xytext=(0, -30),
                    textcoords="offset points", fontsize=7, ha="left", va="top")  # fmt: skip
    return fig


# --------------------------------------------------------------------------- writing everything


def _save(fig: Figure, path: Path, partial: str | None = None) -> Path:
    if partial:  # a grid still running (dqnbench.run.live): marked on every figure
        fig.text(0.005, 0.995, f"PARTIAL ({partial})", color="tab:red", fontsize=7, va="top", ha="left")
    fig.savefig(path, dpi=DPI)
    return path


def write_plots(
    results: Results,
    out_dir: str | os.PathLike | None = None,
    registry: Registry | None = None,
    *,
    embedding: bool = True,
    gif: bool = True,
    gif_frames: int = 30,
    episodes: int = 5,
    sort: str = "grid",
) -> list[Path]:
    """Write every plot of ``results`` and ``index.md`` into ``out_dir`` (default ``<results>/plots``).

    Returns the paths written. An embedding that cannot be drawn (weights
    missing, a network plugin no longer installed) is skipped with a warning
    and a note in ``index.md``; the other plots are still written. Raises
    :class:`~dqnbench.errors.ResultsError` when no run succeeded.
    """
    from dqnbench.analysis.aggregate import aggregates
    from dqnbench.analysis.sensitivity import search_view, write_sensitivity

    swept, results = results, search_view(cells.in_order(results, sort))  # a search: its test phase
    runs = results.runs
    if runs.empty or cells.ok_runs(runs).empty:
        raise ResultsError(f"no successful runs in {results.path}: nothing to plot")
    out = Path(out_dir) if out_dir is not None else Path(results.path) / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    bounds = results_bounds(results)  # one set of return bounds for the report table and every figure
    save = functools.partial(_save, partial=results.partial)
    written = [
        save(learning_curves_figure(runs, results.evals, bounds=bounds), out / "learning_curves.png"),
        save(training_curves_figure(runs, results.steps, results.episodes, bounds=bounds), out / "training_curves.png"),
        save(final_scores_figure(runs, bounds=bounds), out / "final_scores.png"),
    ]
    (out / "improvement.png").unlink(missing_ok=True)  # a grid rerun with one cell left keeps no stale matrix
    if has_comparisons(runs):
        written.append(save(improvement_figure(runs), out / "improvement.png"))
    written.append(save(timing_figure(runs, results.steps), out / "timing.png"))
    agg = aggregates(runs)
    if agg is not None:
        written.append(save(aggregate_figure(agg), out / "aggregates.png"))
    sensitivity, sections = write_sensitivity(swept, out)
    written += sensitivity
    notes: list[str] = []
    if results.partial:
        notes.append(f"PARTIAL ({results.partial}); embeddings are drawn once the grid has finished")
    embeddings: list[tuple[str, str, Path, Path | None]] = []
    if embedding and not results.partial:
        embeddings, notes = _write_embeddings(results, out, registry, gif=gif, gif_frames=gif_frames, episodes=episodes)
        written += [p for *_, png, anim in embeddings for p in (png, anim) if p is not None]
    written.append(_write_index(results, out, embeddings, notes, agg, sections))
    return written


def _write_embeddings(
    results: Results, out: Path, registry: Registry | None, *, gif: bool, gif_frames: int, episodes: int
) -> tuple[list[tuple[str, str, Path, Path | None]], list[str]]:
    """One PNG (and GIF) per network variant; failures become notes, not crashes."""
    from dqnbench.analysis.embedding import (
        embed_states,
        embedding_figure,
        embedding_frame,
        embedding_gif,
        load_trained_env,
        load_trained_learner,
        load_trained_network,
        representative_runs,
    )

    done: list[tuple[str, str, Path, Path | None]] = []
    notes: list[str] = []
    for i, (run_id, variant) in enumerate(representative_runs(results.runs)):
        try:
            if registry is None:
                from dqnbench.plugin.registry import load_registry

                registry = load_registry()
            net = load_trained_network(results, run_id, registry)
            q_values = load_trained_learner(results, run_id, registry).q_values  # expected Q of a distribution
            env_id = results.record(run_id)["env"]
            make_env = load_trained_env(results, run_id, registry)
            frame = embedding_frame(
                embed_states(net, env_id, episodes=episodes, seed=0, q_values=q_values, make_env=make_env)
            )
        except Exception as exc:  # a missing plugin or file must not cost the other plots
            note = f"embedding of {variant} (run {run_id}) skipped: {type(exc).__name__}: {exc}"
            warnings.warn(note, stacklevel=2)
            notes.append(note)
            continue
        frame.attrs["source"] = f"run {run_id}"
        title = f"Q-network embedding: {variant}"
        png = _save(embedding_figure(frame, title=title), out / f"embedding_{i}.png")
        anim = embedding_gif(frame, out / f"embedding_{i}.gif", title=title, frames=gif_frames) if gif else None
        done.append((variant, run_id, png, anim))
    return done, notes


def embedding_source(runs: pd.DataFrame, run_id: str) -> str:
    """Which run an embedding shows, and why that one: a sentence for ``index.md``."""
    row = runs.set_index("run_id").loc[run_id]
    return (f"Run `{run_id}`: seed {row['seed']} of cell {cells.short_label(row['label'])}, final return "
            f"{row['final_return']:.1f}: the seed nearest the median of the variant's best cell by IQM.")  # fmt: skip


def _write_index(
    results: Results,
    out: Path,
    embeddings: list[tuple[str, str, Path, Path | None]],
    notes: list[str],
    agg: Any = None,
    sections: list[str] = (),
) -> Path:
    """``index.md``: the report table, then every figure with a sentence on how to read it."""
    from dqnbench.analysis.report import render_report

    table = render_report(cells.summarize(results), "markdown", aggregates=agg)
    lines = [
        f"# dqnbench results: {Path(results.path).name}",
        "",
        table,
        "## Learning curves",
        "Greedy evaluation return vs environment steps: IQM over seeds, shaded 95% bootstrap CI.",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Training signals",
        "Training-episode return, TD loss, mean max-Q and ε over environment steps: IQM over seeds per step "
        "bin, shaded 95% CI.",
        "",
        "![training signals](training_curves.png)",
        "",
        "## Final scores",
        "IQM of the final greedy return with 95% CI (dots: single runs), in the report's order.",
        "",
        "![final scores](final_scores.png)",
        "",
    ]
    if has_comparisons(results.runs):
        lines += ["## Probability of improvement", "P(X > Y): how often a run of the row cell beats a run of the "
                  "column cell (0.5 = no difference), per environment.", "",
                  "![probability of improvement](improvement.png)", ""]  # fmt: skip
    lines += [
        "## Timing",
        "Mean time per environment step spent acting, stepping the environment and learning.",
        "",
        "![timing](timing.png)",
        "",
    ]
    if agg is not None:
        lines += ["## Across environments", "Normalized scores (0 = random, 1 = reference): aggregate IQM, median, "
                  "mean and optimality gap with stratified-bootstrap 95% CIs, and performance profiles.", "",
                  "![aggregates](aggregates.png)", ""]  # fmt: skip
    lines += sections  # sensitivity and importance (dqnbench.analysis.sensitivity)
    if embeddings or notes:
        lines += ["## Q-network embeddings", "Penultimate-layer activations of states visited by greedy "
                  "episodes, PCA to 3D; colour = greedy action, shade = max Q.", ""]  # fmt: skip
    for variant, run_id, png, anim in embeddings:
        lines += [f"### {variant} (run {run_id})", "", embedding_source(results.runs, run_id), "",
                  f"![embedding]({png.name})", ""]  # fmt: skip
        if anim is not None:
            lines += [f"![rotating embedding]({anim.name})", ""]
    lines += [f"- {note}" for note in notes]
    path = out / "index.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
