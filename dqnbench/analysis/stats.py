"""Statistics on arrays of per-run scores: "is B better than A, by how much, how sure are we?".

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
  ``n_x · n_y`` (their §4.4), with its bootstrap CI;
- their **paired** forms for two sets of runs of the same seeds (``compare``):
  seeds resampled with both their runs, P = the share of seeds that improved.

Every function here takes arrays of per-run scores (rliable-style); the
tables of cells and their labels, built from the ``runs`` / ``evals`` / ``steps``
DataFrames, are :mod:`dqnbench.analysis.cells`. Bootstraps use a fixed seed so a
report is reproducible. One run gets NaN confidence bounds: one seed gives no
evidence of spread.

**Few runs.** A percentile bootstrap of 2–4 runs collapses: every resample of
three seeds that all beat three others still beats them, so P(X > Y) reads
``1.00 [1.00, 1.00]``, and the bootstrap interval of a mean can never be wider
than the range of the runs. Below :data:`SMALL_N` runs an interval therefore
comes from small-sample theory instead, and the estimate is flagged ``small``
so reports and plots mark it "n too small":

- a statistic of one sample (IQM, mean, median): Student's t interval of the
  mean, ``value ± t(n−1) · s / √n`` (for n ≤ 3 the IQM *is* the mean);
- a difference or ratio of two samples: Welch's t interval (Welch 1947), for a
  ratio on the log scale (delta method);
- P(X > Y): Wilson's score interval (Wilson 1927) for a proportion observed
  over ``min(n_x, n_y)`` independent pairs, which stays wide when no pair
  disagrees (3 vs 3, all better: [0.44, 1.00]).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

#: Two-sided confidence level of every interval dqnbench reports.
CONFIDENCE = 0.95
#: Bootstrap resamples: enough for stable 95 % percentile bounds, few enough for fast reports.
N_RESAMPLES = 2000
#: Seed of the bootstrap resampling, so the same results always give the same report.
SEED = 0
#: Fewer successful runs than this on a side: small-sample intervals and an "n too small" mark.
SMALL_N = 5

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


def u_fraction(x: np.ndarray, y: np.ndarray, axis: int = -1) -> Any:
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
    *,
    paired: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic(*samples, axis=-1)``; NaNs when a sample has < 2 runs.

    Each sample is resampled independently of the others: with one sample per
    cell this is Agarwal et al.'s stratified bootstrap. ``paired``: the samples
    are aligned (element i of each is seed i) and resampled together, seed by
    seed. The percentile method (rliable's default) stays defined for
    degenerate data (all seeds equal), where BCa fails.
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
        paired=paired,
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
    #: fewer than :data:`SMALL_N` runs: the interval is a small-sample fallback, shown as "n too small"
    small: bool = False

    @property
    def has_ci(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def clip(est: Estimate, low: float = -math.inf, high: float = math.inf) -> Estimate:
    """``est`` with its interval clipped to ``[low, high]``, the values the scores can take.

    A t interval of few runs knows no bounds (three Breakout seeds gave
    [−0.37, 2.2] where no return is below 0); the statistic itself is inside them.
    """
    if not est.has_ci:
        return est
    return dataclasses.replace(est, low=min(max(est.low, low), high), high=max(min(est.high, high), low))


def few_seeds_warning(n_seeds: int) -> str | None:
    """The warning ``run`` prints once when a grid asks for statistics of fewer than :data:`SMALL_N` seeds.

    None when there are enough seeds. Agarwal et al. (2021, §3) show that
    with 3–5 runs point estimates of a cell vary as much as the differences
    papers claim; the intervals dqnbench draws then are small-sample fallbacks.
    """
    if n_seeds >= SMALL_N:
        return None
    return (f"{n_seeds} seed{'s' if n_seeds != 1 else ''} per cell: intervals from fewer than {SMALL_N} runs "
            "are rough (marked 'n too small' in reports and plots); use 5 or more seeds for a confident "
            "comparison")  # fmt: skip


def t_interval(scores: Any, statistic: Statistic = mean, confidence: float = CONFIDENCE) -> Estimate:
    """``statistic`` ± Student's t half-width of the mean, ``t(n−1) · s / √n``: the small-n fallback.

    Unlike a bootstrap of 2–4 values it widens as n shrinks (t(1) = 12.7 at
    95 %); with identical scores it is honestly zero-width. Flagged ``small``.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return Estimate(math.nan, math.nan, math.nan, small=True)
    value = float(statistic(scores))
    if scores.size < 2:
        return Estimate(value, math.nan, math.nan, small=True)
    half = float(sps.t.ppf(0.5 + confidence / 2, scores.size - 1) * scores.std(ddof=1) / math.sqrt(scores.size))
    return Estimate(value, value - half, value + half, small=True)


def estimate(
    scores: Any,
    statistic: Statistic = iqm,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic`` of one cell's per-run scores with its CI (NaN for no runs).

    A percentile bootstrap from :data:`SMALL_N` runs on; below, :func:`t_interval`, flagged ``small``.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    if scores.size < SMALL_N:
        return t_interval(scores, statistic, confidence)
    low, high = bootstrap_ci((scores,), statistic, confidence, n_resamples, seed)
    return Estimate(float(statistic(scores)), low, high)


def _welch(a: np.ndarray, b: np.ndarray, confidence: float) -> float:
    """Welch's t half-width of ``mean(b) − mean(a)`` (Welch 1947); NaN when either has < 2 values."""
    if a.size < 2 or b.size < 2:
        return math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    if se2 == 0:
        return 0.0
    df = se2**2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(sps.t.ppf(0.5 + confidence / 2, df) * math.sqrt(se2))


def difference(
    baseline: Any,
    candidate: Any,
    statistic: Statistic = iqm,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic(candidate) − statistic(baseline)`` with a CI resampling both sides independently.

    Below :data:`SMALL_N` runs on a side: Welch's t interval around the difference, flagged ``small``.
    """

    def diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
        return statistic(b, axis=axis) - statistic(a, axis=axis)

    x, y = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if x.size and y.size and min(x.size, y.size) < SMALL_N:
        value = float(diff(x, y))
        half = _welch(x, y, confidence)
        return Estimate(value, value - half, value + half, small=True)
    return _two_sample(x, y, diff, confidence, n_resamples, seed)


def ratio(
    baseline: Any,
    candidate: Any,
    statistic: Statistic = mean,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic(candidate) / statistic(baseline)`` (e.g. of steps per second) with its CI.

    Below :data:`SMALL_N` values on a side: Welch's t interval of the difference of
    the log values, exponentiated (the ratio of geometric means; positive data only), flagged ``small``.
    """

    def quotient(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):
            return statistic(b, axis=axis) / statistic(a, axis=axis)

    x, y = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if x.size and y.size and min(x.size, y.size) < SMALL_N:
        value = float(quotient(x, y))
        if (x <= 0).any() or (y <= 0).any():
            return Estimate(value, math.nan, math.nan, small=True)
        half = _welch(np.log(x), np.log(y), confidence)
        return Estimate(value, value * math.exp(-half), value * math.exp(half), small=True)
    return _two_sample(x, y, quotient, confidence, n_resamples, seed)


def _two_sample(
    baseline: Any, candidate: Any, compare: Callable[..., Any], confidence: float, n_resamples: int, seed: int
) -> Estimate:
    """``compare(baseline, candidate)`` with a CI resampling both sides independently (NaN if either is empty)."""
    x, y = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if x.size == 0 or y.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    low, high = bootstrap_ci((x, y), compare, confidence, n_resamples, seed)
    return Estimate(float(compare(x, y)), low, high)


def wilson_interval(p: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's (1927) score interval of a proportion ``p`` observed over ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and keeps a width
    when p is 0 or 1: three trials that all succeeded give [0.44, 1.00] at 95 %.
    """
    if n <= 0 or math.isnan(p):
        return math.nan, math.nan
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


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
    Below :data:`SMALL_N` runs on a side the bootstrap collapses (all resamples
    of 3 runs that beat 3 others still beat them), so the CI is
    :func:`wilson_interval` over ``min(n_x, n_y)`` pairs, flagged ``small``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return Improvement(math.nan, math.nan, math.nan)
    test = sps.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    value = float(test.statistic) / (x.size * y.size)
    pvalue = float(test.pvalue) if not np.all(np.concatenate([x, y]) == x[0]) else 1.0
    if min(x.size, y.size) < SMALL_N:
        low, high = wilson_interval(value, min(x.size, y.size), confidence)
        return Improvement(value, low, high, small=True, pvalue=pvalue)
    low, high = bootstrap_ci((x, y), u_fraction, confidence, n_resamples, seed)
    return Improvement(value, low, high, pvalue=pvalue)


def paired_difference(
    baseline: Any,
    candidate: Any,
    statistic: Statistic = iqm,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """``statistic(candidate) − statistic(baseline)`` of runs paired by seed (element i of each is seed i).

    The CI resamples seeds, each with both of its runs (a paired bootstrap), so
    what two runs of one seed share (initial weights, environment seeds) cancels:
    identical sides give 0 with a zero-width interval. Below :data:`SMALL_N`
    pairs: the paired t interval, ``t(n−1) · sd(c − b) / √n`` around the
    difference, flagged ``small``.
    """
    x, y = _pairs(baseline, candidate)
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan)

    def diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> Any:
        return statistic(b, axis=axis) - statistic(a, axis=axis)

    value = float(diff(x, y))
    if x.size < SMALL_N:
        spread = t_interval(y - x, mean, confidence)
        half = (spread.high - spread.value) if spread.has_ci else math.nan
        return Estimate(value, value - half, value + half, small=True)
    low, high = bootstrap_ci((x, y), diff, confidence, n_resamples, seed, paired=True)
    return Estimate(value, low, high)


def paired_improvement(
    baseline: Any,
    candidate: Any,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """P(candidate > baseline) on the same seed: the fraction of seeds whose candidate run scores higher (ties ½).

    The paired counterpart of :func:`probability_of_improvement`: 0.5 exactly when
    every seed ties. Paired bootstrap CI over seeds; below :data:`SMALL_N` pairs
    :func:`wilson_interval` over the pairs, flagged ``small``.
    """
    x, y = _pairs(baseline, candidate)
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan)
    value = float(win_fraction(x, y))
    if x.size < SMALL_N:
        low, high = wilson_interval(value, x.size, confidence)
        return Estimate(value, low, high, small=True)
    low, high = bootstrap_ci((x, y), win_fraction, confidence, n_resamples, seed, paired=True)
    return Estimate(value, low, high)


def win_fraction(baseline: Any, candidate: Any, axis: int = -1) -> Any:
    """Of aligned pairs, the fraction where ``candidate`` is higher, ties counting ½ (vectorised)."""
    x, y = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    return ((y > x) + 0.5 * (y == x)).mean(axis=axis)


def _pairs(baseline: Any, candidate: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need one value per seed on each side, got {x.size} and {y.size}")
    return x, y


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
