"""Aggregates across environments, as rliable does (Agarwal et al. 2021, NeurIPS).

Returns of different environments are on different scales (CartPole's 500 vs
Acrobot's −80), so each run's final return is first **normalized** per
environment, ``(return − random) / (reference − random)``, with the anchors of
:mod:`dqnbench.analysis.scores` or the grid's own ``[scores]`` table. Then, per
variant (a cell's configuration minus its environment), over all its runs on
all environments:

- **IQM** of the pooled normalized scores (their §4.3), **median** and **mean**
  of the per-environment mean scores, and the **optimality gap**, the mean of
  ``max(1 − score, 0)``: how far below the reference, not rewarding going past it;
- **stratified bootstrap** CIs (§4.1): each resample draws runs with
  replacement *within* each environment, so every environment keeps its weight;
- **performance profiles** (§4.2): the fraction of runs scoring above τ, for
  every τ, averaged over environments, with the same bootstrap band;
- **probability of improvement** across tasks (§4.4): the mean over the
  environments both variants ran of P(X > Y) on that environment, with a
  stratified-bootstrap CI.

With fewer than :data:`~dqnbench.analysis.stats.SMALL_N` runs on an environment
a bootstrap still collapses when every run agrees; such aggregates are flagged
``small`` and shown as "n too small".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dqnbench.analysis import cells, stats
from dqnbench.analysis.scores import ReferenceScores, builtin_scores

#: Column prefix of a grid's ``[scores."ENV"]`` table in the ``runs`` table (``scores.ENV.random``).
SCORES_PREFIX = "scores."
METRICS = ("iqm", "median", "mean", "optimality_gap")
AGGREGATE_COLUMNS = ["variant", "n_envs", "n_runs", "small", *[f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")]]


def user_scores(runs: pd.DataFrame) -> dict[str, ReferenceScores]:
    """The grid's ``[scores."ENV"]`` tables, read from the stored config columns ``scores.ENV.random|reference``."""
    found: dict[str, dict[str, float]] = {}
    for column in runs.columns:
        if not str(column).startswith(SCORES_PREFIX):
            continue
        env, _, key = str(column)[len(SCORES_PREFIX) :].rpartition(".")
        values = runs[column].dropna()
        if env and key in ("random", "reference") and len(values):
            found.setdefault(env.strip('"'), {})[key] = float(values.iloc[0])
    return {
        env: ReferenceScores(v["random"], v.get("reference"), "the grid's [scores] table")
        for env, v in found.items()
        if "random" in v
    }


def normalizers(
    runs: pd.DataFrame, scores: Mapping[str, ReferenceScores] | None = None
) -> dict[str, ReferenceScores | None]:
    """env id → its anchors: ``scores`` given here, else the grid's ``[scores]``, else the built-ins."""
    given = {**user_scores(runs), **(scores or {})}
    envs = [e for e in dict.fromkeys(cells.cell_env(runs).values()) if e]
    return {env: given.get(env) or builtin_scores(env) for env in envs}


def normalized_scores(
    runs: pd.DataFrame, anchors: Mapping[str, ReferenceScores | None]
) -> dict[str, dict[str, np.ndarray]]:
    """variant → env → normalized final returns of its successful runs (variants in cell order).

    Environments without a usable reference are left out (see :func:`missing_references`).
    """
    finals, envs, variants = cells.final_scores(runs), cells.cell_env(runs), cells.cell_variants(runs)
    out: dict[str, dict[str, np.ndarray]] = {}
    for cell in cells.cell_order(runs):
        anchor = anchors.get(envs[cell] or "")
        if anchor is None or anchor.reference is None or not finals[cell].size:
            continue
        values = np.array([anchor.normalize(v) for v in finals[cell]], dtype=float)
        out.setdefault(variants[cell], {})[envs[cell]] = values
    return out


def missing_references(anchors: Mapping[str, ReferenceScores | None]) -> list[str]:
    """Environments that cannot be normalized (no built-in reference and none in the grid)."""
    return [env for env, a in anchors.items() if a is None or a.reference is None]


def _resample(per_env: Mapping[str, np.ndarray], n_resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified bootstrap: per env an ``(n_resamples, n_runs)`` array of runs drawn within that env."""
    return [v[rng.integers(0, v.size, size=(n_resamples, v.size))] for v in per_env.values()]


def _metrics(per_env: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The four aggregates of stacked resamples (each array ``(..., n_runs_of_env)``), vectorised."""
    pooled = np.concatenate(per_env, axis=-1)
    env_means = np.stack([v.mean(axis=-1) for v in per_env], axis=-1)
    return {
        "iqm": stats.iqm(pooled, axis=-1),
        "median": np.median(env_means, axis=-1),
        "mean": env_means.mean(axis=-1),
        "optimality_gap": np.maximum(1.0 - pooled, 0.0).mean(axis=-1),
    }


def aggregate_table(
    normalized: Mapping[str, Mapping[str, np.ndarray]],
    *,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """Per variant: IQM, median, mean and optimality gap of its normalized scores with stratified-bootstrap CIs."""
    rows = []
    tail = (1 - confidence) / 2
    for variant, per_env in normalized.items():
        rng = np.random.default_rng(seed)
        point = _metrics([v[None, :] for v in per_env.values()])
        boot = _metrics(_resample(per_env, n_resamples, rng))
        row: dict[str, object] = {
            "variant": variant,
            "n_envs": len(per_env),
            "n_runs": int(sum(v.size for v in per_env.values())),
            "small": any(v.size < stats.SMALL_N for v in per_env.values()),
        }
        for m in METRICS:
            low, high = np.quantile(boot[m], [tail, 1 - tail])
            row.update({m: float(point[m][0]), f"{m}_lo": float(low), f"{m}_hi": float(high)})
        rows.append(row)
    return pd.DataFrame(rows, columns=AGGREGATE_COLUMNS)


def performance_profile(
    normalized: Mapping[str, Mapping[str, np.ndarray]],
    taus: np.ndarray | None = None,
    *,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = 500,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """Run-score distributions: per variant and τ, the fraction of runs above τ (mean over envs), with a CI.

    Columns ``variant, tau, fraction, lo, hi``. Agarwal et al. (2021, §4.2): a
    profile shows the whole distribution, so a variant that wins on the mean
    only through one environment is seen as such.
    """
    if taus is None:
        values = np.concatenate([v for per_env in normalized.values() for v in per_env.values()] or [np.zeros(1)])
        taus = np.linspace(min(0.0, float(values.min())), max(1.0, float(values.max())) * 1.05, 61)
    tail = (1 - confidence) / 2
    rows = []
    for variant, per_env in normalized.items():
        point = np.mean([(v[:, None] > taus).mean(axis=0) for v in per_env.values()], axis=0)
        boot = np.mean(
            [(r[..., None] > taus).mean(axis=1) for r in _resample(per_env, n_resamples, np.random.default_rng(seed))],
            axis=0,
        )  # (n_resamples, n_taus)
        low, high = np.quantile(boot, [tail, 1 - tail], axis=0)
        rows += [(variant, t, p, lo, hi) for t, p, lo, hi in zip(taus, point, low, high)]
    return pd.DataFrame(rows, columns=["variant", "tau", "fraction", "lo", "hi"])


@dataclass
class Aggregates:
    """Everything the report and the plots show for a grid of several environments."""

    anchors: dict[str, ReferenceScores | None]
    normalized: dict[str, dict[str, np.ndarray]]
    table: pd.DataFrame
    improvement: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def improvement_across_tasks(
    normalized: Mapping[str, Mapping[str, np.ndarray]],
    *,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    seed: int = stats.SEED,
) -> pd.DataFrame:
    """P(X > Y) averaged over the environments both variants ran, with a stratified-bootstrap CI.

    Long format ``x, y, n_envs, p, lo, hi, small`` for every ordered pair of distinct variants.
    """
    tail = (1 - confidence) / 2
    rows = []
    for x, ex in normalized.items():
        for y, ey in normalized.items():
            common = [e for e in ex if e in ey]
            if x == y or not common:
                continue
            rng = np.random.default_rng(seed)
            point = np.mean([stats.u_fraction(ex[e], ey[e]) for e in common])
            boot = np.mean([stats.u_fraction(a, b) for a, b in
                            ((*_resample({e: ex[e]}, n_resamples, rng), *_resample({e: ey[e]}, n_resamples, rng))
                             for e in common)], axis=0)  # fmt: skip
            low, high = np.quantile(boot, [tail, 1 - tail])
            small = any(min(ex[e].size, ey[e].size) < stats.SMALL_N for e in common)
            rows.append((x, y, len(common), float(point), float(low), float(high), small))
    return pd.DataFrame(rows, columns=["x", "y", "n_envs", "p", "lo", "hi", "small"])


def aggregates(
    runs: pd.DataFrame,
    scores: Mapping[str, ReferenceScores] | None = None,
    *,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    seed: int = stats.SEED,
) -> Aggregates | None:
    """The cross-environment aggregates of ``runs``; None when the grid has one environment."""
    envs = [e for e in dict.fromkeys(cells.cell_env(runs).values()) if e]
    if len(envs) < 2:
        return None
    anchors = normalizers(runs, scores)
    normalized = normalized_scores(runs, anchors)
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    notes = []
    missing = missing_references(anchors)
    if missing:
        notes.append(f"not aggregated (no reference score; add [scores.\"ENV\"] random/reference to the grid): "
                     f"{', '.join(missing)}")  # fmt: skip
    return Aggregates(anchors, normalized, aggregate_table(normalized, **kw),
                      improvement_across_tasks(normalized, **kw), notes)  # fmt: skip


def anchors_text(anchors: Mapping[str, ReferenceScores | None]) -> list[str]:
    """One line per environment: how its scores were normalized."""
    lines = []
    for env, a in anchors.items():
        if a is None or a.reference is None:
            continue
        lines.append(f"{env}: random {a.random:g}, reference {a.reference:g} ({a.source})")
    return lines
