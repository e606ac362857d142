"""``dqnbench compare``: did the candidate regress against the baseline, beyond noise?

Cells are matched by configuration (the ``runs`` config columns both sides have,
so a results directory of an older dqnbench that lacks a newer key still
matches; the experiment name and the seeds never take part). For each matched
cell the comparison reports, following Agarwal et al. (2021):

- the change of the IQM final greedy return, candidate − baseline, with a 95 %
  bootstrap CI;
- the probability of improvement P(candidate run > baseline run) with its CI;
- the speed ratio (baseline cost per env step / candidate cost, > 1 = faster) with its CI.

**Paired by seed.** When both sides of a cell have successful runs of the same
seeds (each seed once), the runs are paired: the CI of the change resamples
seeds, each with both its runs, and P(cand > base) is the fraction of seeds
whose candidate run scores higher (ties ½). What a seed's two runs share then
cancels, so a directory compared with itself gives Δ 0 [0, 0] and P = 0.50.
Otherwise each side's runs are resampled independently and P compares every
candidate run with every baseline run (Mann–Whitney).

**Verdicts.** The return is ``better`` or ``worse`` when the whole CI of the
change lies beyond ± tolerance × |baseline IQM|, else ``same`` (no change
beyond the tolerance shown with confidence); speed is ``faster`` / ``slower``
the same way against 1 ± the minimum speed effect.

A cell **regressed** (exit 1) when, with the stated confidence, it is worse beyond a
tolerance — the *whole* CI lies past the threshold, so noise alone (a CI
straddling it) never fails a build:

- return: ``delta_hi < -tolerance × |baseline IQM|``. ``tolerance`` is a
  *relative* drop (default 0.05: more than 5 % of the baseline's IQM final
  return), scale-free across environments; negative-return environments use
  the magnitude;
- speed: ``ratio_hi < 1 − speed_tolerance``, the stated minimum effect
  (``--min-speed-effect``, default 0.15: more than 15 % slower per step);
- a cell whose candidate runs all failed, while the baseline had successes.

**Speed against noise.** Whole-run throughput (``steps_per_s``) moves with the
machine's load: a CPU-bound neighbour on both cores cut it by 40–75 % in our
measurement while the code was unchanged. The verdict therefore reads the
*cost per env step* from the ``steps`` table: per run the **median** over steps
of act + env + learn seconds (a windowed row counts as its mean step). Load
that time-slices the core only adds time to the steps it interrupts; the
median step is an undisturbed one as long as fewer than half are interrupted,
which is what bench-compare's min over short rounds exploits too (see
:mod:`dqnbench.devtools.benchcompare`). Load can also slow every step (a
virtual machine whose vCPUs share a physical core, or whose pace drifts): on a
CI machine a neighbour on both cores moved the median step by 10–30 %. So when
both sides' runs carry calibration marks (every 100 env steps the run times a
fixed workload, :mod:`dqnbench.agent.calibration`), the ratio is also taken of
each run's median step **over its median calibration**: what slows the whole
core slows both, slower code only the steps. A change must show both in
seconds and against the machine's pace: of the two intervals, the one nearer
to no change (a ratio of 1) gives the verdict and the reported ratio
(``speed_source`` "step time" or "calibrated step time"). Slower code moves
both. Load that slows the whole core moves the step and the calibration alike,
and their ratio cancels it; load that time-slices the core barely moves the
median step but can move the calibration (30 µs, timed once every 100 steps,
is noisier than a median over steps). Without per-step timings (old results)
the cost is ``1 / steps_per_s`` ("throughput").

The unit of a speed sample is what ran independently: **a lock-step group is
one sample** (its K members share one batched step and one ``steps_per_s``),
identified by the ``lockstep_members`` column, or, in results without it, by
identical ``steps_per_s`` within a cell. Seeds of independent runs are one
sample each. With fewer than two samples on a side there is no visible noise
between samples, so both sides are judged on **calibrated blocks** instead:
every 100 env steps each run notes its process's CPU time and times a fixed
calibration workload (:mod:`dqnbench.agent.calibration`, the run record's
``calibration``), and a block (the steps between two marks)
counts its CPU seconds per step over its calibration: other processes'
time-slices do not add CPU time, and what they do slow (a shared core) slows
the calibration too; slower code raises only the first. Without enough blocks (results
recorded before calibrations, or under 5 blocks) the speed is *not judged*.

With fewer than two successful runs on a side there is no CI, so no confident
verdict: such a cell is reported as ``too few runs`` and does not regress. Use
at least 3 seeds in CI jobs; 5 or more give useful intervals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dqnbench.analysis import cells, stats
from dqnbench.analysis.report import (
    FORMATS,
    SMALL_MARK,
    fit_tables,
    markdown_table,
    short_number,
    signed_number,
    terminal_width,
    wrap,
)
from dqnbench.errors import DqnbenchError
from dqnbench.run.results import RUN_COLUMNS, RUN_SUMMARY, Results

#: Default allowed relative drop of the IQM final return (5 % of |baseline IQM|).
TOLERANCE = 0.05
#: Default minimum speed effect: a cell regresses when it is confidently more than 15 % slower per step.
SPEED_TOLERANCE = 0.15

TABLE_COLUMNS = [
    "label", "env", "n_base", "n_cand", "iqm_base", "iqm_cand", "delta", "delta_lo", "delta_hi", "rel_delta",
    "poi", "poi_lo", "poi_hi", "sps_base", "sps_cand", "speed_ratio", "speed_lo", "speed_hi",
    "nspeed_base", "nspeed_cand", "speed_source", "speed_judged", "small_n", "paired",
    "return_verdict", "speed_verdict", "return_regressed", "speed_regressed", "regressed", "verdict",
    "cell_base", "cell_cand",
]  # fmt: skip


def config_columns(runs: pd.DataFrame) -> list[str]:
    """The resolved-config columns of a ``runs`` table (everything but ids, status and summaries)."""
    return [c for c in runs.columns if c not in RUN_COLUMNS and c not in RUN_SUMMARY]


def _normal(value: Any) -> Any:
    """A JSON-able, comparison-stable form of a config value (NaN → None, tuples → lists)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_normal(v) for v in value]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 from a float column matches 1 from an int column
    return value


def cell_keys(runs: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """cell → its configuration restricted to ``columns``, as a canonical JSON string."""
    first = runs.drop_duplicates("cell")
    keys = {}
    for _, row in first.iterrows():
        keys[row["cell"]] = json.dumps([_normal(row[c]) for c in columns], default=str)
    return keys


def match_cells(
    baseline: pd.DataFrame, candidate: pd.DataFrame, ignore: tuple[str, ...] = ()
) -> list[tuple[str | None, str | None]]:
    """Pairs ``(baseline cell, candidate cell)``; ``None`` on the side that lacks the configuration.

    Raises :class:`DqnbenchError` when no cell matches, or when ignoring keys
    makes two cells of one side indistinguishable.
    """
    common = matched_keys(baseline, candidate, ignore)
    sides = []
    for name, runs in (("baseline", baseline), ("candidate", candidate)):
        keys = cell_keys(runs, common)
        by_key: dict[str, str] = {}
        for cell, key in keys.items():
            if key in by_key:
                raise DqnbenchError(f"{name}: cells {by_key[key]} and {cell} have the same configuration once "
                                    f"{', '.join(ignore) or 'nothing'} is ignored; cannot match them")  # fmt: skip
            by_key[key] = cell
        sides.append(by_key)
    base, cand = sides
    pairs: list[tuple[str | None, str | None]] = [(b, cand.get(k)) for k, b in base.items()]
    pairs += [(None, c) for k, c in cand.items() if k not in base]
    if not any(b and c for b, c in pairs):
        differ = differing_keys(baseline, candidate, common)
        what = "; ".join(f"{key}: baseline {b}, candidate {c}" for key, b, c in differ) or "no single key"
        keys = " ".join(key for key, _, _ in differ) or "KEY"
        raise DqnbenchError(f"no cell of the candidate has the configuration of a baseline cell. The grids differ in "
                            f"{what}. To compare cells across them, leave those keys out of the matching: "
                            f"--ignore {keys}")  # fmt: skip
    return pairs


def matched_keys(baseline: pd.DataFrame, candidate: pd.DataFrame, ignore: tuple[str, ...] = ()) -> list[str]:
    """The config keys cells are matched by: those both sides have, less ``ignore``."""
    return [c for c in config_columns(baseline) if c in set(config_columns(candidate)) and c not in ignore]


def differing_keys(baseline: pd.DataFrame, candidate: pd.DataFrame, columns: list[str]) -> list[tuple[str, str, str]]:
    """``(key, baseline values, candidate values)`` of each config key whose values differ between the sides."""
    out = []
    for column in columns:
        sides = [sorted({json.dumps(_normal(v), default=str) for v in runs[column]}) for runs in (baseline, candidate)]
        if sides[0] != sides[1]:
            out.append((column, *(", ".join(values) for values in sides)))
    return out


@dataclass
class Comparison:
    """The per-cell comparison of a candidate results directory against a baseline.

    ``table`` has one row per cell (columns :data:`TABLE_COLUMNS`);
    ``regressed`` is true when any cell regressed (exit code 1 of ``dqnbench compare``).
    """

    table: pd.DataFrame
    tolerance: float
    speed_tolerance: float
    confidence: float
    baseline: str = ""
    candidate: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.table["regressed"].any())

    def verdict(self) -> str:
        """One line: how many cells regressed, and under which rule."""
        bad = int(self.table["regressed"].sum())
        rule = (f"return drop > {self.tolerance:.0%} of baseline IQM or > {self.speed_tolerance:.0%} slower per "
                f"env step, whole {self.confidence:.0%} CI past the threshold")  # fmt: skip
        unjudged = int((~self.table["speed_judged"].astype(bool)).sum())
        speed = (f"; speed not judged for {unjudged} of {len(self.table)} cells (fewer than 2 independent speed "
                 "samples a side: a lock-step cell is one)") if unjudged else ""  # fmt: skip
        if bad:
            return f"REGRESSION: {bad} of {len(self.table)} cells worse ({rule}){speed}"
        return f"OK: no cell worse ({rule}){speed}"

    def legend(self) -> str:
        """How to read the table: pairing, verdict rules, and the † mark."""
        paired = int(self.table["paired"].sum())
        text = (f"Runs paired by seed in {paired} of {len(self.table)} cells (paired bootstrap; P = share of seeds "
                "whose candidate run scores higher)" if paired else "No cell shares its seeds: runs resampled "
                "independently, P over all run pairs")  # fmt: skip
        text += (f". CI: {self.confidence:.0%} confidence interval. better / worse: the whole CI of Δ beyond "
                 f"±{self.tolerance:.0%} of the baseline IQM, else same; faster / slower: the speed CI beyond "
                 f"×(1 ± {self.speed_tolerance:.2f}). "
                 "a → b: baseline → candidate; speed: cost per env step, baseline / candidate.")  # fmt: skip
        if self.table["small_n"].any():
            text += f" {SMALL_MARK} fewer than {stats.SMALL_N} runs a side: t / Wilson intervals, rough."
        return text

    def render(self, fmt: str = "table", *, width: int | None = None) -> str:
        """``table`` (rich text, fitted to ``width`` columns), ``markdown`` or ``csv`` (the raw numeric table)."""
        if fmt not in FORMATS:
            raise DqnbenchError(f"unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
        if fmt == "csv":
            return self.table.to_csv(index=False)
        width = width or terminal_width()
        frame, legend = display_frame(self.table, self.confidence, width=width)
        footer = [self.verdict(), self.legend(), *legend, *self.notes]
        if fmt == "markdown":
            return markdown_table(frame) + "\n\n" + "\n\n".join(footer) + "\n"
        title = f"dqnbench compare: {self.candidate} vs {self.baseline}".strip()
        return fit_tables(frame, title, width, keys=2) + wrap("\n".join(footer), width)


@dataclass(frozen=True)
class Side:
    """One side of a matched cell: final returns of its ok runs (and their seeds), its speed samples, its run count."""

    returns: np.ndarray
    throughput: np.ndarray
    step_costs: np.ndarray
    n_runs: int
    speed_source: str = "step time"
    seeds: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: its runs' costs per step in blocks between calibrations, over the calibration (see :func:`calibrated_blocks`)
    blocks: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: per speed sample, its run's median calibration seconds (:func:`run_pace`; NaN without marks)
    paces: np.ndarray = field(default_factory=lambda: np.empty(0))


def speed_groups(runs: pd.DataFrame) -> list[pd.DataFrame]:
    """A cell's successful runs split into independent speed samples (one per lock-step group).

    Members of a lock-step group share one batched step: with ``lockstep_members``
    > 1 they form one group per (``steps_per_s``, ``wall_s``); without the column,
    runs of the cell with identical ``steps_per_s`` are taken to be one group
    (independent runs never time identically to the last bit).
    """
    if runs.empty:
        return []
    if "lockstep_members" in runs.columns:
        members = runs["lockstep_members"].fillna(1).astype(int)
        alone = [runs.loc[[i]] for i in runs.index[members <= 1]]
        shared = runs[members > 1]
        keys = ["steps_per_s", "wall_s"] if "wall_s" in shared.columns else ["steps_per_s"]
        grouped = [g for _, g in shared.groupby(keys, sort=False, dropna=False)] if len(shared) else []
        return alone + grouped
    return [g for _, g in runs.groupby("steps_per_s", sort=False, dropna=False)]


def _side(results: Results, cell: str | None) -> Side:
    """The returns and speed samples of a cell's successful runs, and its total run count."""
    if cell is None:
        return Side(np.empty(0), np.empty(0), np.empty(0), 0)
    runs = results.runs
    mine = runs[runs["cell"] == cell]
    good = cells.ok_runs(mine)
    groups = speed_groups(good)
    throughput = np.array([float(g["steps_per_s"].iloc[0]) for g in groups], dtype=float)
    steps = results.steps
    timed = steps is not None and not steps.empty and {"t_act", "t_env", "t_learn"} <= set(steps.columns)
    costs, paces, source = [], [], "step time"
    marks = [_calibration(results, g["run_id"].iloc[0]) for g in groups]
    blocks = np.concatenate([calibrated_blocks(m) for m in marks] or [[]])
    for g, m in zip(groups, marks):
        rows = steps[steps["run_id"] == g["run_id"].iloc[0]] if timed else None
        if rows is not None and len(rows):
            costs.append(float(np.median(cells.step_cost(rows))))
        else:
            costs.append(1.0 / float(g["steps_per_s"].iloc[0]))
            source = "throughput"
        paces.append(run_pace(m))
    seeds = good["seed"].to_numpy() if "seed" in good.columns else np.empty(0)
    return Side(good["final_return"].to_numpy(dtype=float), throughput, np.asarray(costs, dtype=float),
                len(mine), source, seeds, blocks, np.asarray(paces, dtype=float))  # fmt: skip


def run_pace(calibration: dict[str, list[float]] | None) -> float:
    """A run's median calibration seconds (the machine's pace while it ran), NaN without marks."""
    calib = np.asarray((calibration or {}).get("calib_s", ()), dtype=float)
    calib = calib[np.isfinite(calib) & (calib > 0)]
    return float(np.median(calib)) if calib.size else math.nan


#: fewer independent speed samples than this on a side: judge its calibrated blocks instead
MIN_SPEED_SAMPLES = 2
#: ...when it has at least this many (a block: the steps between two calibrations, ``docs/sweeps.md``)
MIN_BLOCKS = 5
CALIBRATED = "calibrated blocks"
#: each run's median step over its median calibration (both sides' runs have calibration marks)
CALIBRATED_STEPS = "calibrated step time"


def _nearer_one(a: stats.Estimate, b: stats.Estimate) -> bool:
    """Whether ``a``'s interval lies nearer to a ratio of 1 (no change) than ``b``'s (0 when it covers 1)."""

    def gap(e: stats.Estimate) -> float:
        return max(e.low - 1.0, 1.0 - e.high, 0.0) if e.has_ci else math.inf

    return gap(a) < gap(b)


def _paced(side: Side) -> bool:
    """Whether every speed sample of the side has a calibration pace to divide its step cost by."""
    return side.paces.size == side.step_costs.size > 0 and bool(np.isfinite(side.paces).all())


def calibrated_blocks(calibration: dict[str, list[float]] | None) -> np.ndarray:
    """A run's CPU seconds per env step in blocks between calibration marks, each over its block's calibration.

    Marks every 100 steps (the run record's ``calibration``) hold the
    process's CPU time so far and a fixed workload's seconds. A block's cost is
    its CPU time per env step, which other processes' time-slices do not
    inflate, over its calibration, which scales with what they do inflate (a
    shared core's pace). Slower code raises the first alone. A block across a
    resume (the CPU clock restarts) is dropped.
    """
    if not calibration or len(calibration.get("step", ())) < 2:
        return np.empty(0)
    step, cpu, calib = (np.asarray(calibration[k], dtype=float) for k in ("step", "cpu_s", "calib_s"))
    per_step = np.diff(cpu) / np.maximum(np.diff(step), 1)
    blocks = (per_step / calib[:-1])[1:]  # the first block warms up (and is often all acting, before learning)
    return blocks[(per_step[1:] > 0) & np.isfinite(blocks)]


def _calibration(results: Results, run_id: str) -> dict[str, list[float]] | None:
    try:
        return results.record(run_id).get("calibration")
    except (OSError, ValueError, KeyError):  # a record that cannot be read: no blocks
        return None


def paired_order(base: Side, cand: Side) -> tuple[np.ndarray, np.ndarray] | None:
    """Both sides' returns in one seed order when they have the same seeds, each once; else None."""
    sb, sc = [s.tolist() for s in (base.seeds, cand.seeds)]
    if not sb or len(sb) != base.returns.size or len(set(sb)) != len(sb) or sorted(sb) != sorted(sc):
        return None
    ib, ic = np.argsort(base.seeds, kind="stable"), np.argsort(cand.seeds, kind="stable")
    return base.returns[ib], cand.returns[ic]


def compare_cell(
    base: Side,
    cand: Side,
    *,
    tolerance: float,
    speed_tolerance: float,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The statistics and the verdict of one matched cell (see the module docstring for the rule)."""
    rb, rc = base.returns, cand.returns
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    pairs = paired_order(base, cand)
    if pairs is not None:
        delta = stats.paired_difference(*pairs, stats.iqm, **kw)
        poi: stats.Estimate = stats.paired_improvement(*pairs, **kw)
    else:
        delta = stats.difference(rb, rc, stats.iqm, **kw)
        poi = stats.probability_of_improvement(rc, rb, **kw)
    # speed = base cost / cand cost: ratio(baseline=cand, candidate=base) of the mean cost per step; a side with
    # one lock-step group has one sample, so both sides are judged on their calibrated blocks instead
    source = base.speed_source if base.speed_source == cand.speed_source else "throughput"
    base_costs, cand_costs = base.step_costs, cand.step_costs
    if (
        min(base_costs.size, cand_costs.size) < MIN_SPEED_SAMPLES
        and min(base.blocks.size, cand.blocks.size) >= MIN_BLOCKS
    ):
        base_costs, cand_costs, source = base.blocks, cand.blocks, CALIBRATED
    speed = stats.ratio(cand_costs, base_costs, stats.mean, **kw)
    if source == "step time" and all(_paced(side) for side in (base, cand)):
        paced = stats.ratio(cand_costs / cand.paces, base_costs / base.paces, stats.mean, **kw)
        if _nearer_one(paced, speed):  # a change must show in seconds and against the machine's pace
            speed, source = paced, CALIBRATED_STEPS
    judged = min(base_costs.size, cand_costs.size) >= 2 and speed.has_ci
    iqm_base = float(stats.iqm(rb)) if rb.size else math.nan
    margin = tolerance * abs(iqm_base)
    row = {
        "n_base": rb.size, "n_cand": rc.size,
        "iqm_base": iqm_base, "iqm_cand": float(stats.iqm(rc)) if rc.size else math.nan,
        "delta": delta.value, "delta_lo": delta.low, "delta_hi": delta.high,
        "rel_delta": delta.value / abs(iqm_base) if iqm_base else math.nan,
        "poi": poi.value, "poi_lo": poi.low, "poi_hi": poi.high,
        "sps_base": float(base.throughput.mean()) if base.throughput.size else math.nan,
        "sps_cand": float(cand.throughput.mean()) if cand.throughput.size else math.nan,
        "speed_ratio": speed.value, "speed_lo": speed.low, "speed_hi": speed.high,
        "nspeed_base": base_costs.size, "nspeed_cand": cand_costs.size, "speed_source": source,
        "speed_judged": bool(judged), "small_n": bool(delta.small or poi.small), "paired": pairs is not None,
    }  # fmt: skip
    row["return_verdict"] = _direction(delta, -margin, margin, ("worse", "same", "better"))
    row["speed_verdict"] = (_direction(speed, 1.0 - speed_tolerance, 1.0 + speed_tolerance,
                                       ("slower", "same", "faster")) if judged else "not judged")  # fmt: skip
    row["return_regressed"] = row["return_verdict"] == "worse"
    row["speed_regressed"] = row["speed_verdict"] == "slower"
    row["verdict"] = _verdict(row, base.n_runs, cand.n_runs)
    row["regressed"] = bool(row["return_regressed"] or row["speed_regressed"] or row["verdict"] == "all runs failed")
    return row


def _direction(est: stats.Estimate, low: float, high: float, words: tuple[str, str, str]) -> str:
    """``words[0]`` when the whole CI lies below ``low``, ``words[2]`` when above ``high``, else ``words[1]``."""
    if not est.has_ci:
        return "–"
    if est.high < low:
        return words[0]
    if est.low > high:
        return words[2]
    return words[1]


def _verdict(row: dict[str, Any], n_base_runs: int, n_cand_runs: int) -> str:
    """The cell's verdict: its return's, with the speed's when judged and not the same."""
    if n_base_runs == 0:
        return "only in candidate"
    if n_cand_runs == 0:
        return "only in baseline"
    if row["n_cand"] == 0 and row["n_base"] > 0:
        return "all runs failed"
    if row["n_base"] == 0:
        return "no baseline runs"
    if min(row["n_base"], row["n_cand"]) < 2 and not row["speed_regressed"]:
        return "too few runs"
    speed = row["speed_verdict"] if row["speed_verdict"] in ("faster", "slower") else None
    return ", ".join(v for v in (row["return_verdict"], speed) if v and v != "–") or "too few runs"


def compare_results(
    baseline: Results,
    candidate: Results,
    tolerance: float = TOLERANCE,
    speed_tolerance: float = SPEED_TOLERANCE,
    confidence: float = stats.CONFIDENCE,
    *,
    ignore: tuple[str, ...] = (),
    n_resamples: int = stats.N_RESAMPLES,
    seed: int = stats.SEED,
) -> Comparison:
    """Compare ``candidate`` against ``baseline`` cell by cell; see the module docstring for the rule.

    :param tolerance: allowed drop of the IQM final return, as a fraction of |baseline IQM|.
    :param speed_tolerance: the minimum speed effect: allowed slowdown of the cost per env step, as a
        fraction (0.15: a cell must be confidently more than 15 % slower to regress).
    :param confidence: level of the two-sided bootstrap CIs the verdict is read from.
    :param ignore: config keys left out of cell matching, e.g. ``("experiment.device",)`` to
        compare a CPU run against a GPU run of the same grid.
    """
    if tolerance < 0 or speed_tolerance < 0:
        raise DqnbenchError("tolerance and speed_tolerance must be non-negative fractions (0.05 = 5%)")
    if not 0 < confidence < 1:
        raise DqnbenchError(f"confidence must be between 0 and 1, got {confidence}")
    pairs = match_cells(baseline.runs, candidate.runs, ignore)
    labels = {**cells.cell_labels(baseline.runs), **cells.cell_labels(candidate.runs)}
    envs = {**cells.cell_env(baseline.runs), **cells.cell_env(candidate.runs)}
    rows = []
    for b, c in pairs:
        row = compare_cell(
            _side(baseline, b), _side(candidate, c), tolerance=tolerance,
            speed_tolerance=speed_tolerance, confidence=confidence, n_resamples=n_resamples, seed=seed,
        )  # fmt: skip
        row.update(label=labels[c or b], env=envs[c or b], cell_base=b, cell_cand=c)
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    notes = _notes(baseline, candidate)
    hint = _ignore_hint(baseline.runs, candidate.runs, ignore, pairs)
    if hint:
        notes.append(hint)
    return Comparison(table, tolerance, speed_tolerance, confidence, str(baseline.path), str(candidate.path), notes)


def _ignore_hint(
    baseline: pd.DataFrame, candidate: pd.DataFrame, ignore: tuple[str, ...], pairs: list[tuple[str | None, str | None]]
) -> str | None:
    """A note naming the keys to ``--ignore`` when leaving them out would match more cells; None otherwise."""
    matched = sum(1 for b, c in pairs if b and c)
    if matched == len(pairs):
        return None
    keys = tuple(key for key, _, _ in differing_keys(baseline, candidate, matched_keys(baseline, candidate, ignore)))
    try:
        wider = match_cells(baseline, candidate, ignore + keys) if keys else pairs
    except DqnbenchError:  # ignoring them makes cells of one side indistinguishable: extra variants, not a rename
        return None
    if sum(1 for b, c in wider if b and c) <= matched:
        return None
    return (
        f"Cells on one side only: the grids differ in {', '.join(keys)}; --ignore {' '.join(keys)} matches "
        "cells across them."
    )


def _notes(baseline: Results, candidate: Results) -> list[str]:
    notes = []
    for name, res in (("baseline", baseline), ("candidate", candidate)):
        status = res.runs["status"] if "status" in res.runs else pd.Series(dtype=object)
        counts = status[status != "ok"].value_counts()
        if len(counts):
            what = ", ".join(f"{n} {s}" for s, n in counts.items())
            notes.append(f"{name}: runs excluded from the statistics: {what}.")
    return notes


# --------------------------------------------------------------------------- display

#: Longest cell label shown in the table itself; longer labels get a key (#1, #2, …) and a legend line.
LABEL_WIDTH = 24


def _interval(value: float, low: float, high: float, fmt: Any, small: bool = False) -> str:
    if math.isnan(value):
        return "–"
    if math.isnan(low):
        return f"{fmt(value)} (no CI)"
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]{SMALL_MARK if small else ''}"


def _p(value: float) -> str:
    return f"{value:.2f}"


def speed_text(ratio: float, low: float, high: float, judged: bool = True) -> str:
    """The speed ratio with its direction: ``×1.30 faster [1.21, 1.40]``, ``×1.67 slower [1.52, 1.85]``.

    A ratio below 1 is shown as its inverse (how many times slower), its bounds inverted with it;
    ``(not judged)`` replaces the interval of a cell with too few independent speed samples.
    """
    if math.isnan(ratio) or ratio <= 0:
        return "–"
    if f"{ratio:.2f}" == "1.00":  # no direction to say
        bounds, text = (low, high), "×1.00"
    elif ratio > 1:
        bounds = (low, high)
        text = f"×{ratio:.2f} faster"
    else:
        bounds = (1 / high if high > 0 else math.inf, 1 / low if low > 0 else math.inf)
        text = f"×{1 / ratio:.2f} slower"
    if not judged or math.isnan(low) or math.isnan(high):
        return f"{text} (not judged)"
    return f"{text} [{bounds[0]:.2f}, {bounds[1]:.2f}]"


def cell_names(table: pd.DataFrame, width: int = LABEL_WIDTH) -> tuple[list[str], list[str]]:
    """``(the name of each row, legend lines)``: short labels, or keys #1, #2, … when one is longer than ``width``."""
    several_envs = table["env"].nunique(dropna=False) > 1
    labels = []
    for _, r in table.iterrows():
        label = cells.short_label(r["label"] if several_envs else cells.variant_label(r["label"]))
        labels.append(label)
    if max((len(lbl) for lbl in labels), default=0) <= width:
        return labels, []
    keys = [f"#{i + 1}" for i in range(len(labels))]
    return keys, ["cells: " + "; ".join(f"{k} {lbl}" for k, lbl in zip(keys, labels))]


def display_frame(
    table: pd.DataFrame, confidence: float = stats.CONFIDENCE, *, width: int = 100
) -> tuple[pd.DataFrame, list[str]]:
    """The comparison rounded for people, and the legend of its cell names (empty when labels are shown)."""
    names, legend = cell_names(table, LABEL_WIDTH if width < 160 else 60)
    rows = []
    for name, (_, r) in zip(names, table.iterrows()):
        small = bool(r["small_n"])
        rows.append(
            {
                "cell": name,
                "verdict": r["verdict"],
                "runs": f"{r['n_base']}/{r['n_cand']}",
                "IQM base → cand": f"{short_number(r['iqm_base'])} → {short_number(r['iqm_cand'])}",
                "Δ IQM [CI]": _interval(r["delta"], r["delta_lo"], r["delta_hi"], signed_number, small),
                "Δ %": "–" if math.isnan(r["rel_delta"]) else f"{r['rel_delta']:+.0%}",
                "P(cand > base) [CI]": _interval(r["poi"], r["poi_lo"], r["poi_hi"], _p, small),
                "steps/s": f"{short_number(r['sps_base'])} → {short_number(r['sps_cand'])}",
                "speed [CI]": speed_text(r["speed_ratio"], r["speed_lo"], r["speed_hi"], bool(r["speed_judged"])),
            }
        )
    return pd.DataFrame(rows), legend
