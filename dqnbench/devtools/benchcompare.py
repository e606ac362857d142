"""``dqnbench bench-compare``: did a benchmark get slower, judged against the machine it ran on?

pytest-benchmark's ``--benchmark-compare-fail`` compares absolute times, so a
baseline saved on one CI runner false-alarms (or errors) on the next runner,
which may be 30 % faster or slower (pytest-benchmark issue 276). dqnbench's
suites therefore time a fixed **calibration workload** — small torch MLP
forward/backward and NumPy indexing, the kind of work a DQN step does, using no
dqnbench code — in the *same session* as the benchmarks. Each benchmark's time is
divided by that session's calibration time, and two sessions are compared on
these normalised times::

    ratio = (new / new_calibration) / (base / base_calibration)

Why it is built this way, with measurements: ``docs/internals.md`` (``devtools.benchcompare``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dqnbench.errors import DqnbenchError

#: ``extra_info`` key marking the calibration benchmark; its value is the workload's version
CALIBRATION_KEY = "dqnbench_calibration"
#: bumped whenever :class:`CalibrationWorkload` changes: sessions of different versions cannot be compared
CALIBRATION_VERSION = 2
#: rounds of one calibration part timed back to back before the next part's turn
CALIBRATION_PART_BLOCK = 20
#: ``extra_info`` key of the calibration's per-part min times (seconds), summed for the min statistic
CALIBRATION_PARTS_KEY = "parts_min_s"
#: default allowed slowdown of a benchmark relative to the calibration (15 %)
FAIL_ABOVE = 0.15
#: statistics of pytest-benchmark's ``stats`` a comparison can use; the first is the default
STATISTICS = ("min", "median", "mean")
#: one line for ``--help``
DESCRIPTION = (
    "Compare two pytest-benchmark JSON reports, each benchmark relative to the calibration benchmark timed in "
    "its own session; exit 1 when one got slower by more than --fail-above."
)
#: a benchmark with fewer rounds than this on a side is reported, not judged: a min of 1-4 rounds is one timing
MIN_ROUNDS = 5

TABLE_COLUMNS = [
    "benchmark", "base_s", "new_s", "base_rounds", "new_rounds", "raw_ratio", "ratio", "change", "verdict",
]  # fmt: skip


# --------------------------------------------------------------------------- the calibration workload


class CalibrationWorkload:
    """A fixed torch + NumPy workload shaped like a DQN learn step, using no dqnbench code.

    One call: gather 64 rows of a 10k-row NumPy table (uniform indices, then
    prioritised ones by cumulative-sum search, as replays do), a 4-64-64-2 MLP
    forward, the gradients of a squared TD-like loss written out as matrix
    products, and an Adam-like update written to scratch buffers. The weights
    are never changed, so every call costs the same (no drift into denormals, no
    data-dependent paths), and it never touches dqnbench code, so a dqnbench
    regression cannot hide by slowing the calibration too. About 0.1-0.3 ms on a
    current CPU core.

    Why the backward pass is written out (version 2): version 1 called
    ``torch.autograd.grad``, and on shared VMs the min time of that call moved
    by ±20 % from one process to the next (measured: 295-448 µs over eight
    fresh processes of one machine, while the same matrix products written out
    moved ±6 % and the NumPy and update parts ±2 %). The calibration divides
    every benchmark, so its own noise is every benchmark's noise.
    """

    batch = 64
    rows = 10_000

    def __init__(self) -> None:
        import numpy as np
        import torch

        gen = torch.Generator().manual_seed(0)
        shapes = [(4, 64), (64,), (64, 64), (64,), (64, 2), (2,)]
        self.weights = [torch.randn(s, generator=gen) * 0.1 for s in shapes]
        self.moments = [torch.zeros(s) for s in shapes]
        self.scratch = [torch.empty(s) for s in shapes]
        rng = np.random.default_rng(0)
        self.table = rng.standard_normal((self.rows, 4)).astype(np.float32)
        self.targets = rng.standard_normal(self.rows).astype(np.float32)
        self.cumulative = np.cumsum(rng.random(self.rows))
        self.draws = rng.random((256, self.batch)) * self.cumulative[-1]
        self.uniform = rng.integers(0, self.rows, size=(256, self.batch))
        self.calls = 0

    def describe(self) -> str:
        return (
            f"calibration v{CALIBRATION_VERSION}: NumPy gather + searchsorted of {self.batch} rows, "
            f"4-64-64-2 MLP forward/backward (matrix products) and an Adam-like update (torch, no dqnbench code)"
        )

    def __call__(self) -> float:
        x, y = self.gather()
        loss, grads = self.gradients(x, y)
        self.update(grads)
        return loss

    def gather(self) -> tuple[Any, Any]:
        """The next batch: 32 uniform rows and 32 by ``searchsorted`` on a cumulative sum (a prioritised draw)."""
        import numpy as np
        import torch

        i = self.calls % len(self.draws)
        self.calls += 1
        indices = np.concatenate([self.uniform[i, : self.batch // 2], np.searchsorted(self.cumulative, self.draws[i])])
        indices = np.minimum(indices[: self.batch], self.rows - 1)
        return torch.from_numpy(self.table[indices]), torch.from_numpy(self.targets[indices])

    def forward(self, x: Any, y: Any) -> tuple[Any, ...]:
        """The MLP's activations, each row's best action and TD-like error: what :meth:`backward` needs."""
        import torch

        w1, b1, w2, b2, w3, b3 = self.weights
        h1 = torch.relu(x @ w1 + b1)
        h2 = torch.relu(h1 @ w2 + b2)
        q = h2 @ w3 + b3
        best, action = q.max(dim=1)
        return x, h1, h2, q, action, best - y

    def backward(self, cache: tuple[Any, ...]) -> tuple[Any, ...]:
        """Gradients of ``mean(error²)`` for the six weights, as autograd would give them."""
        import torch

        x, h1, h2, q, action, error = cache
        _, _, w2, _, w3, _ = self.weights
        # d loss / dq is nonzero only at each row's max; then back through the layers
        dq = torch.zeros_like(q).scatter_(1, action[:, None], (error * (2.0 / len(x)))[:, None])
        dh2 = (dq @ w3.T) * (h2 > 0)
        dh1 = (dh2 @ w2.T) * (h1 > 0)
        return x.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dq, dq.sum(0)

    def gradients(self, x: Any, y: Any) -> tuple[float, tuple[Any, ...]]:
        """The loss ``mean((max_a q(x) - y)²)`` and its gradients."""
        cache = self.forward(x, y)
        return float((cache[-1] ** 2).mean()), self.backward(cache)

    def update(self, grads: Sequence[Any]) -> None:
        """An Adam-like step written to scratch buffers (the weights never change)."""
        import torch

        for weight, moment, scratch, grad in zip(self.weights, self.moments, self.scratch, grads):
            torch.add(moment.mul(0.9), grad, alpha=0.1, out=scratch)
            torch.add(weight, scratch / (scratch.abs().sqrt() + 1e-8), alpha=-1e-3, out=scratch)

    def part_minimums(self, seconds: float = 0.5) -> dict[str, float]:
        """The min time of each of the four parts, for about ``seconds`` in all.

        Their sum is the calibration time ``bench-compare`` uses for the min statistic.
        A round of one part is 10-80 µs, so many rounds run between two preemptions
        and each part's min is reached in every session. The parts take turns in
        blocks of :data:`CALIBRATION_PART_BLOCK` rounds: a disturbed stretch of the
        session hits all of them, while within a block the part runs with warm caches
        (timed one round each in turn, the gather's min doubled and moved ±8 %).
        Measured over twelve fresh sessions of a shared 2-core VM: the sum moved ±2 %
        (167-174 µs), the min of the whole call ±8 %.
        """
        x, y = self.gather()
        cache = self.forward(x, y)
        grads = self.backward(cache)
        parts = {
            "gather": self.gather,
            "forward": lambda: self.forward(x, y),
            "backward": lambda: self.backward(cache),
            "update": lambda: self.update(grads),
        }
        best = dict.fromkeys(parts, math.inf)
        clock = time.perf_counter
        deadline = clock() + seconds
        while clock() < deadline:
            for name, part in parts.items():
                for _ in range(CALIBRATION_PART_BLOCK):
                    start = clock()
                    part()
                    best[name] = min(best[name], clock() - start)
        return best


# --------------------------------------------------------------------------- reading pytest-benchmark JSON


@dataclass(frozen=True)
class BenchSession:
    """One pytest-benchmark JSON report: its benchmarks by full name, and which one is the calibration."""

    path: Path
    benchmarks: dict[str, dict[str, Any]]
    calibration: str
    machine: str

    def seconds(self, name: str, statistic: str) -> float:
        return float(self.benchmarks[name]["stats"][statistic])

    def calibration_seconds(self, statistic: str) -> float:
        """The calibration's time: for ``min``, the sum of its parts' mins when the session recorded them."""
        parts = self.benchmarks[self.calibration].get("extra_info", {}).get(CALIBRATION_PARTS_KEY)
        if statistic == "min" and isinstance(parts, Mapping) and parts:
            try:
                return float(sum(float(v) for v in parts.values()))
            except (TypeError, ValueError):
                raise DqnbenchError(f"{self.path}: the calibration's {CALIBRATION_PARTS_KEY!r} holds "
                                    f"non-numbers: {dict(parts)!r}") from None  # fmt: skip
        return self.seconds(self.calibration, statistic)

    def rounds(self, name: str) -> int:
        return int(self.benchmarks[name]["stats"].get("rounds", 0))

    @property
    def calibration_version(self) -> Any:
        return self.benchmarks[self.calibration].get("extra_info", {}).get(CALIBRATION_KEY)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DqnbenchError(f"{path}: no such benchmark report") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DqnbenchError(f"{path}: cannot read the benchmark report: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DqnbenchError(f"{path}: not a JSON file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise DqnbenchError(f"{path}: not a pytest-benchmark report (no 'benchmarks' list); write one with "
                            "pytest --benchmark-json=FILE or --benchmark-autosave")  # fmt: skip
    return data


def _machine(data: Mapping[str, Any]) -> str:
    info = data.get("machine_info") or {}
    cpu = info.get("cpu") or {}
    brand = cpu.get("brand_raw") or cpu.get("brand") or info.get("processor") or "unknown CPU"
    return f"{info.get('node', 'unknown host')} ({brand})"


def find_calibration(path: Path, benchmarks: Mapping[str, Mapping[str, Any]], name: str | None = None) -> str:
    """The full name of the session's calibration benchmark: ``name`` if given, else the one marked in extra_info."""
    if name is not None:
        found = [k for k, b in benchmarks.items() if name in (k, b.get("name"))]
        if len(found) != 1:
            raise DqnbenchError(f"{path}: {'no' if not found else 'more than one'} benchmark named {name!r} "
                                f"to use as the calibration")  # fmt: skip
        return found[0]
    marked = [k for k, b in benchmarks.items() if CALIBRATION_KEY in (b.get("extra_info") or {})]
    if not marked:
        raise DqnbenchError(
            f"{path}: no calibration benchmark, so its timings cannot be judged against the machine's speed. "
            f"Run a calibration in the same pytest session: dqnbench's tests/benchmarks/test_calibration.py, or a "
            f"test using the dqnbench_calibration fixture (or pass --calibration NAME)"
        )
    if len(marked) > 1:
        raise DqnbenchError(f"{path}: several calibration benchmarks ({', '.join(marked)}); "
                            "pass --calibration NAME to pick one")  # fmt: skip
    return marked[0]


def load_session(path: str | os.PathLike, calibration: str | None = None) -> BenchSession:
    """Read a pytest-benchmark JSON report or a folder of them; a user error if one lacks benchmarks or a calibration.

    A folder's reports (``*.json``) are sessions of the same suite, merged into
    their best: each benchmark's time is its fastest across the sessions, and the
    calibration's too (part by part). On a shared runner a whole session can run
    in a slow stretch; the best of two or three sessions is what the code costs.
    """
    path = Path(path)
    if not path.is_dir():
        return _load_report(path, calibration)
    reports = sorted(path.glob("*.json"))
    if not reports:
        raise DqnbenchError(f"{path}: a folder with no pytest-benchmark reports (*.json) in it")
    return merge_sessions(path, [_load_report(report, calibration) for report in reports])


def _load_report(path: Path, calibration: str | None) -> BenchSession:
    data = _read_json(path)
    benchmarks = {}
    for entry in data["benchmarks"]:
        if isinstance(entry, dict) and isinstance(entry.get("stats"), dict):
            benchmarks[str(entry.get("fullname") or entry.get("name"))] = entry
    if not benchmarks:
        raise DqnbenchError(f"{path}: the report holds no timed benchmarks (was pytest run with "
                            "--benchmark-disable? run the suite with --benchmark-enable)")  # fmt: skip
    return BenchSession(path, benchmarks, find_calibration(path, benchmarks, calibration), _machine(data))


def merge_sessions(path: Path, sessions: Sequence[BenchSession]) -> BenchSession:
    """Several sessions of one suite as one: every statistic the fastest of its sessions, rounds the fewest."""
    versions = {repr(s.calibration_version) for s in sessions}
    if len(versions) > 1:
        raise DqnbenchError(f"{path}: its reports ran different calibration workloads ({', '.join(sorted(versions))})")
    names = {s.calibration for s in sessions}
    if len(names) > 1:
        raise DqnbenchError(f"{path}: its reports name different calibration benchmarks ({', '.join(sorted(names))})")
    merged: dict[str, dict[str, Any]] = {}
    for session in sessions:
        for name, entry in session.benchmarks.items():
            if name not in merged:
                extra = dict(entry.get("extra_info") or {})
                merged[name] = {**entry, "stats": dict(entry["stats"]), "extra_info": extra}
                continue
            stats, other = merged[name]["stats"], entry["stats"]
            for key in STATISTICS:
                if key in stats and key in other:
                    stats[key] = min(float(stats[key]), float(other[key]))
            stats["rounds"] = min(int(stats.get("rounds", 0)), int(other.get("rounds", 0)))
            parts = merged[name]["extra_info"].get(CALIBRATION_PARTS_KEY)
            more = (entry.get("extra_info") or {}).get(CALIBRATION_PARTS_KEY)
            if isinstance(parts, Mapping) and isinstance(more, Mapping) and parts.keys() == more.keys():
                merged[name]["extra_info"][CALIBRATION_PARTS_KEY] = {k: min(parts[k], more[k]) for k in parts}
    machines = list(dict.fromkeys(s.machine for s in sessions))
    machine = f"{machines[0]}, best of {len(sessions)} sessions" if len(machines) == 1 else " / ".join(machines)
    return BenchSession(path, merged, sessions[0].calibration, machine)


# --------------------------------------------------------------------------- the comparison


@dataclass
class BenchComparison:
    """Every benchmark of either report, normalised by its session's calibration.

    ``table`` has one row per benchmark (columns :data:`TABLE_COLUMNS`; times in
    seconds; ``ratio`` is the calibrated new/base ratio); ``failed`` lists the
    benchmarks that regressed; ``regressed`` is the exit code's question.
    """

    table: pd.DataFrame
    fail_above: float
    statistic: str
    base: str
    new: str
    machine_factor: float
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return list(self.table.loc[self.table["verdict"] == "SLOWER", "benchmark"])

    @property
    def regressed(self) -> bool:
        return bool(self.failed)

    def ratios(self) -> dict[str, float]:
        """Benchmark → calibrated ratio, for benchmarks on both sides."""
        both = self.table.dropna(subset=["ratio"])
        return dict(zip(both["benchmark"], both["ratio"].astype(float)))

    def verdict(self) -> str:
        rule = f"calibrated {self.statistic} time more than {self.fail_above:.0%} above the baseline's"
        if self.failed:
            return f"REGRESSION: {len(self.failed)} of {len(self.ratios())} benchmarks slower ({rule}): " + ", ".join(
                self.failed
            )
        return f"OK: no benchmark slower ({rule})"

    def render(self, fmt: str = "table", *, width: int | None = None) -> str:
        """``table`` (plain text), ``markdown`` (for a PR comment) or ``csv`` (the raw numbers)."""
        from dqnbench.analysis.report import FORMATS, markdown_table, rich_text

        if fmt not in FORMATS:
            raise DqnbenchError(f"unknown format {fmt!r} (allowed: {', '.join(FORMATS)})")
        if fmt == "csv":
            return self.table.to_csv(index=False)
        frame = display_frame(self.table, self.statistic)
        footer = "\n".join([self.verdict(), *self.notes])
        if fmt == "markdown":
            return markdown_table(frame) + "\n\n" + footer.replace("\n", "  \n") + "\n"
        from rich.markup import escape

        # rich_table escapes cells (names like test_act[network-mlp] are not rich markup); titles are ours to escape
        title = escape(f"dqnbench bench-compare: {self.new} vs {self.base}")
        return rich_text(frame, title=title, caption=escape(footer), width=width)


def bench_compare(
    base: str | os.PathLike,
    new: str | os.PathLike,
    fail_above: float = FAIL_ABOVE,
    *,
    statistic: str = STATISTICS[0],
    calibration: str | None = None,
    min_rounds: int = MIN_ROUNDS,
) -> BenchComparison:
    """Compare two pytest-benchmark reports, each benchmark relative to its own session's calibration.

    :param fail_above: allowed slowdown as a fraction: 0.15 fails a benchmark whose
        calibrated time grew by more than 15 %.
    :param statistic: ``min`` (default; see the module docstring for why), ``median`` or ``mean``.
    :param calibration: name (or full name) of the calibration benchmark, when it is not
        marked in ``extra_info`` by dqnbench's calibration fixture.
    :param min_rounds: a benchmark with fewer rounds on a side is reported as ``too few rounds``
        and not judged: the min of one or two rounds is no more robust than a single timing.
    """
    if not (isinstance(min_rounds, int) and min_rounds >= 1):
        raise DqnbenchError(f"min_rounds must be a positive integer, got {min_rounds!r}")
    if not (isinstance(fail_above, (int, float)) and 0 <= fail_above < math.inf):
        raise DqnbenchError(f"fail_above must be a non-negative fraction (0.15 = 15%), got {fail_above!r}")
    if statistic not in STATISTICS:
        raise DqnbenchError(f"unknown statistic {statistic!r} (allowed: {', '.join(STATISTICS)})")
    old, cur = load_session(base, calibration), load_session(new, calibration)
    if calibration is None and old.calibration_version != cur.calibration_version:
        raise DqnbenchError(
            f"the calibration workloads differ ({old.path}: v{old.calibration_version}, "
            f"{cur.path}: v{cur.calibration_version}); save a new baseline with this dqnbench"
        )
    old_cal, cur_cal = old.calibration_seconds(statistic), cur.calibration_seconds(statistic)
    if not (old_cal > 0 and cur_cal > 0):
        raise DqnbenchError(f"the calibration's {statistic} time is not positive in {old.path} or {cur.path}")
    rows = [_row(name, old, cur, statistic, old_cal, cur_cal, fail_above, min_rounds) for name in _names(old, cur)]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["benchmark"] = _short_names(list(table["benchmark"]))
    factor = cur_cal / old_cal
    return BenchComparison(
        table,
        float(fail_above),
        statistic,
        str(old.path),
        str(cur.path),
        factor,
        _notes(old, cur, table, factor, min_rounds),
    )


def _names(old: BenchSession, cur: BenchSession) -> list[str]:
    """Every benchmark name, the calibration first, then the baseline's order, then the new ones."""
    names = [old.calibration] + [n for n in old.benchmarks if n != old.calibration]
    return names + [n for n in cur.benchmarks if n not in old.benchmarks and n != cur.calibration]


def _row(
    name: str,
    old: BenchSession,
    cur: BenchSession,
    statistic: str,
    old_cal: float,
    cur_cal: float,
    fail_above: float,
    min_rounds: int,
) -> dict[str, Any]:
    """One benchmark's times, ratios and verdict."""
    if name == old.calibration:  # the reference: compared with the other session's calibration
        rounds = (old.rounds(name), cur.rounds(cur.calibration))
        return _ratios(name, old_cal, cur_cal, *rounds, cur_cal / old_cal, "calibration")
    in_old, in_new = name in old.benchmarks, name in cur.benchmarks
    a = old.seconds(name, statistic) if in_old else math.nan
    b = cur.seconds(name, statistic) if in_new else math.nan
    row = _ratios(name, a, b, old.rounds(name) if in_old else 0, cur.rounds(name) if in_new else 0, cur_cal / old_cal)
    if not in_new:
        row["verdict"] = "only in base"
    elif not in_old:
        row["verdict"] = "only in new"
    elif min(row["base_rounds"], row["new_rounds"]) < min_rounds:
        row["verdict"] = "too few rounds"
    elif row["ratio"] > 1.0 + fail_above:
        row["verdict"] = "SLOWER"
    elif row["ratio"] < 1.0 / (1.0 + fail_above):
        row["verdict"] = "faster"
    else:
        row["verdict"] = "ok"
    return row


def _ratios(name: str, a: float, b: float, rounds_a: int, rounds_b: int, factor: float, verdict: str = "") -> dict:
    raw = b / a if a > 0 else math.nan
    ratio = raw / factor
    return {
        "benchmark": name, "base_s": a, "new_s": b, "base_rounds": rounds_a, "new_rounds": rounds_b,
        "raw_ratio": raw, "ratio": ratio, "change": ratio - 1.0, "verdict": verdict,
    }  # fmt: skip


def _short_names(names: list[str]) -> list[str]:
    """Full names without the directory they all share (``tests/benchmarks/``), for a narrower table."""
    dirs = [n.rsplit("/", 1)[0] + "/" if "/" in n.split("::")[0] else "" for n in names]
    common = os.path.commonprefix(dirs) if all(dirs) else ""
    common = common[: common.rfind("/") + 1]
    return [n[len(common) :] for n in names]


def _notes(old: BenchSession, cur: BenchSession, table: pd.DataFrame, factor: float, min_rounds: int) -> list[str]:
    if round(factor, 2) == 1.0:
        speed = "as fast as the baseline's"
    else:
        speed = f"{max(factor, 1 / factor):.2f}× {'slower' if factor > 1 else 'faster'} than the baseline's"
    notes = [
        f"calibration: the new session ran it {speed} ({old.machine} → {cur.machine}); "
        "'ratio' divides that out, 'raw' does not."
    ]
    missing = table[table["verdict"].isin(["only in base", "only in new"])]
    if len(missing):
        notes.append(f"{len(missing)} benchmarks are on one side only (not judged): {', '.join(missing.benchmark)}.")
    few = table[table["verdict"] == "too few rounds"]
    if len(few):
        notes.append(f"{len(few)} benchmarks ran fewer than {min_rounds} rounds on a side (not judged): "
                     f"{', '.join(few.benchmark)}.")  # fmt: skip
    return notes


def _time(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:,.1f} {unit}"
    return f"{seconds / 1e-9:,.0f} ns"


def display_frame(table: pd.DataFrame, statistic: str = STATISTICS[0]) -> pd.DataFrame:
    """The comparison rounded for people."""
    rows = []
    for r in table.itertuples(index=False):
        rows.append(
            {
                "benchmark": r.benchmark,
                f"base ({statistic})": _time(r.base_s),
                f"new ({statistic})": _time(r.new_s),
                "raw": "–" if math.isnan(r.raw_ratio) else f"{r.raw_ratio:.2f}×",
                "ratio (calibrated)": "–" if math.isnan(r.ratio) else f"{r.ratio:.2f}× ({r.change:+.0%})",
                "verdict": r.verdict,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- command line


def parse_fraction(text: str) -> float:
    """``"15%"`` or ``"0.15"`` → 0.15 (an argparse type: a bad value exits 2 with the reason)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a percentage like 15% or a fraction like 0.15, got {text!r}"
        ) from None
    if not raw.endswith("%") and value > 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} reads as {value:.0%}; write {raw}% for {raw} percent")
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a non-negative percentage, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``bench-compare`` arguments (``dqnbench bench-compare``, ``python -m dqnbench.devtools.benchcompare``)."""
    parser.add_argument(
        "base",
        metavar="BASE",
        help="pytest-benchmark JSON report of the baseline, or a folder of reports of several sessions (best of them)",
    )
    parser.add_argument("new", metavar="NEW", help="pytest-benchmark JSON report to judge, or a folder of them")
    parser.add_argument(
        "--fail-above",
        type=parse_fraction,
        default=FAIL_ABOVE,
        metavar="PCT",
        help="fail when a benchmark's calibrated time grew by more than this (default 15%%; 0.15 also works)",
    )
    parser.add_argument(
        "--statistic", choices=STATISTICS, default=STATISTICS[0], help="per-benchmark time compared (default: min)"
    )
    parser.add_argument("--calibration", metavar="NAME", help="benchmark to use as the calibration (default: marked)")
    parser.add_argument(
        "--min-rounds",
        type=int,
        default=MIN_ROUNDS,
        metavar="N",
        help=f"benchmarks with fewer rounds on a side are reported, not judged (default {MIN_ROUNDS})",
    )
    parser.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    return parser


def cmd_bench_compare(args: argparse.Namespace) -> int:
    """Print the comparison; 1 when a benchmark regressed, else 0 (user errors raise DqnbenchError → 2)."""
    comparison = bench_compare(
        args.base, args.new, args.fail_above, statistic=args.statistic, calibration=args.calibration,
        min_rounds=args.min_rounds,
    )  # fmt: skip
    print(comparison.render(args.format), end="")
    return 1 if comparison.regressed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dqnbench.devtools.benchcompare BASE.json NEW.json``: the same as ``dqnbench bench-compare``."""
    parser = add_arguments(argparse.ArgumentParser(prog="dqnbench bench-compare", description=DESCRIPTION))
    args = parser.parse_args(argv)
    try:
        return cmd_bench_compare(args)
    except DqnbenchError as exc:
        print(f"dqnbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
