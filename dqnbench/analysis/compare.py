"""``dqnbench compare``: did the candidate regress against the baseline, beyond noise?

Cells are matched by configuration (the ``runs`` config columns both sides have,
so a results directory of an older dqnbench that lacks a newer key still
matches; the experiment name and the seeds never take part). For each matched
cell the comparison reports, following Agarwal et al. (2021):

- the change of the IQM final greedy return, candidate − baseline, with a 95 %
  bootstrap CI resampling each side's runs independently;
- the probability of improvement P(candidate run > baseline run) with its CI;
- the speed ratio (baseline cost per env step / candidate cost, > 1 = faster) with its CI.

A cell **regressed** when, with the stated confidence, it is worse beyond a
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
only ever adds time to the steps it interrupts; the median step is an
undisturbed one as long as fewer than half are interrupted, which is what
bench-compare's min over short rounds exploits too (see
:mod:`dqnbench.devtools.benchcompare`). Under the same neighbour the median
step moved by ≤ 5 %. Without per-step timings (old results) the cost is
``1 / steps_per_s``.

The unit of a speed sample is what ran independently: **a lock-step group is
one sample** (its K members share one batched step and one ``steps_per_s``),
identified by the ``lockstep_members`` column, or, in results without it, by
identical ``steps_per_s`` within a cell. Seeds of independent runs are one
sample each. With fewer than two samples on a side there is no visible noise,
and the cell's speed is reported as *cannot judge* (never a regression): run
independent seeds (``--no-lockstep``) or repeat the cell to judge speed.

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

from dqnbench.analysis import stats
from dqnbench.errors import DqnbenchError
from dqnbench.run.results import RUN_COLUMNS, RUN_SUMMARY, Results

#: Default allowed relative drop of the IQM final return (5 % of |baseline IQM|).
TOLERANCE = 0.05
#: Default minimum speed effect: a cell regresses when it is confidently more than 15 % slower per step.
SPEED_TOLERANCE = 0.15

TABLE_COLUMNS = [
    "label", "env", "n_base", "n_cand", "iqm_base", "iqm_cand", "delta", "delta_lo", "delta_hi", "rel_delta",
    "poi", "poi_lo", "poi_hi", "sps_base", "sps_cand", "speed_ratio", "speed_lo", "speed_hi",
    "nspeed_base", "nspeed_cand", "speed_source", "speed_judged", "small_n",
    "return_regressed", "speed_regressed", "verdict", "cell_base", "cell_cand",
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
    common = [c for c in config_columns(baseline) if c in set(config_columns(candidate)) and c not in ignore]
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
        raise DqnbenchError("no cell of the candidate has the configuration of a baseline cell: "
                            "compare results of the same grid")  # fmt: skip
    return pairs


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
        return bool((self.table["verdict"].isin(REGRESSIONS)).any())

    def verdict(self) -> str:
        """One line: how many cells regressed, and under which rule."""
        bad = int(self.table["verdict"].isin(REGRESSIONS).sum())
        rule = (f"return drop > {self.tolerance:.0%} of baseline IQM or > {self.speed_tolerance:.0%} slower per "
                f"env step, whole {self.confidence:.0%} CI past the threshold")  # fmt: skip
        unjudged = int((~self.table["speed_judged"].astype(bool)).sum())
        speed = (f"; speed not judged for {unjudged} of {len(self.table)} cells (fewer than 2 independent speed "
                 "samples a side: a lock-step cell is one)") if unjudged else ""  # fmt: skip
        if bad:
            return f"REGRESSION: {bad} of {len(self.table)} cells worse ({rule}){speed}"
        return f"OK: no cell worse ({rule}){speed}"

    def render(self, fmt: str = "table", *, width: int | None = None) -> str:
        """``table`` (rich text), ``markdown`` or ``csv`` (the raw numeric table)."""
        from dqnbench.analysis.report import FORMATS, markdown_table, rich_text

        if fmt not in FORMATS:
            raise DqnbenchError(f"unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
        if fmt == "csv":
            return self.table.to_csv(index=False)
        frame = display_frame(self.table, self.confidence)
        footer = "\n".join([self.verdict(), *self.notes])
        if fmt == "markdown":
            return markdown_table(frame) + "\n\n" + footer + "\n"
        title = f"dqnbench compare: {self.candidate} vs {self.baseline}".strip()
        return rich_text(frame, title=title, caption=footer, width=width)


REGRESSIONS = ("worse return", "slower", "worse return, slower", "all runs failed")


@dataclass(frozen=True)
class Side:
    """One side of a matched cell: final returns of its ok runs, its speed samples, its run count."""

    returns: np.ndarray
    throughput: np.ndarray
    step_costs: np.ndarray
    n_runs: int
    speed_source: str = "step time"


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
    good = stats.ok_runs(mine)
    groups = speed_groups(good)
    throughput = np.array([float(g["steps_per_s"].iloc[0]) for g in groups], dtype=float)
    steps = results.steps
    timed = steps is not None and not steps.empty and {"t_act", "t_env", "t_learn"} <= set(steps.columns)
    costs, source = [], "step time"
    for g in groups:
        rows = steps[steps["run_id"] == g["run_id"].iloc[0]] if timed else None
        if rows is not None and len(rows):
            costs.append(float(np.median(stats.step_cost(rows))))
        else:
            costs.append(1.0 / float(g["steps_per_s"].iloc[0]))
            source = "throughput"
    return Side(good["final_return"].to_numpy(dtype=float), throughput, np.asarray(costs, dtype=float),
                len(mine), source)  # fmt: skip


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
    delta = stats.difference(rb, rc, stats.iqm, **kw)
    poi = stats.probability_of_improvement(rc, rb, **kw)
    # speed = base cost / cand cost: ratio(baseline=cand, candidate=base) of the mean cost per step
    speed = stats.ratio(cand.step_costs, base.step_costs, stats.mean, **kw)
    judged = min(base.step_costs.size, cand.step_costs.size) >= 2 and speed.has_ci
    iqm_base = float(stats.iqm(rb)) if rb.size else math.nan
    row = {
        "n_base": rb.size, "n_cand": rc.size,
        "iqm_base": iqm_base, "iqm_cand": float(stats.iqm(rc)) if rc.size else math.nan,
        "delta": delta.value, "delta_lo": delta.low, "delta_hi": delta.high,
        "rel_delta": delta.value / abs(iqm_base) if iqm_base else math.nan,
        "poi": poi.value, "poi_lo": poi.low, "poi_hi": poi.high,
        "sps_base": float(base.throughput.mean()) if base.throughput.size else math.nan,
        "sps_cand": float(cand.throughput.mean()) if cand.throughput.size else math.nan,
        "speed_ratio": speed.value, "speed_lo": speed.low, "speed_hi": speed.high,
        "nspeed_base": base.step_costs.size, "nspeed_cand": cand.step_costs.size,
        "speed_source": base.speed_source if base.speed_source == cand.speed_source else "throughput",
        "speed_judged": bool(judged), "small_n": bool(delta.small or poi.small),
    }  # fmt: skip
    row["return_regressed"] = bool(delta.has_ci and delta.high < -tolerance * abs(iqm_base))
    row["speed_regressed"] = bool(judged and speed.high < 1.0 - speed_tolerance)
    row["verdict"] = _verdict(row, base.n_runs, cand.n_runs)
    return row


def _verdict(row: dict[str, Any], n_base_runs: int, n_cand_runs: int) -> str:
    if n_base_runs == 0:
        return "only in candidate"
    if n_cand_runs == 0:
        return "only in baseline"
    if row["n_cand"] == 0 and row["n_base"] > 0:
        return "all runs failed"
    if row["n_base"] == 0:
        return "no baseline runs"
    worse = [w for w, flag in (("worse return", row["return_regressed"]), ("slower", row["speed_regressed"])) if flag]
    if worse:
        return ", ".join(worse)
    if min(row["n_base"], row["n_cand"]) < 2:
        return "too few runs"
    return "ok" if row["speed_judged"] else "ok, speed not judged"


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
    labels = {**stats.cell_labels(baseline.runs), **stats.cell_labels(candidate.runs)}
    envs = {**stats.cell_env(baseline.runs), **stats.cell_env(candidate.runs)}
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
    return Comparison(table, tolerance, speed_tolerance, confidence, str(baseline.path), str(candidate.path), notes)


def _notes(baseline: Results, candidate: Results) -> list[str]:
    notes = []
    for name, res in (("baseline", baseline), ("candidate", candidate)):
        status = res.runs["status"] if "status" in res.runs else pd.Series(dtype=object)
        counts = status[status != "ok"].value_counts()
        if len(counts):
            what = ", ".join(f"{n} {s}" for s, n in counts.items())
            notes.append(f"{name}: runs excluded from the statistics: {what}.")
    return notes


def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def _interval(value: float, low: float, high: float, spec: str) -> str:
    if math.isnan(value):
        return "–"
    if math.isnan(low):
        return f"{format(value, spec)} (no CI)"
    return f"{format(value, spec)} [{format(low, spec)}, {format(high, spec)}]"


def display_frame(table: pd.DataFrame, confidence: float = stats.CONFIDENCE) -> pd.DataFrame:
    """The comparison rounded for people."""
    ci = f"{confidence:.0%} CI"
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "cell": r["label"],
                "runs base/cand": f"{r['n_base']}/{r['n_cand']}",
                "IQM base → cand": f"{_fmt(r['iqm_base'], '.1f')} → {_fmt(r['iqm_cand'], '.1f')}",
                f"Δ IQM [{ci}]": _interval(r["delta"], r["delta_lo"], r["delta_hi"], "+.1f"),
                "Δ %": _fmt(r["rel_delta"], "+.1%"),
                f"P(cand > base) [{ci}]": _interval(r["poi"], r["poi_lo"], r["poi_hi"], ".2f"),
                f"speed ratio [{ci}]": _interval(r["speed_ratio"], r["speed_lo"], r["speed_hi"], ".2f"),
                "verdict": r["verdict"],
            }
        )
    return pd.DataFrame(rows)
