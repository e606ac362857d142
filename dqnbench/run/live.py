"""Live results: each running run's evaluations, episodes and binned training signals, one file per run.

A worker's :class:`LiveFile` (a :class:`~dqnbench.agent.watch.Watch` sink)
appends what its run recorded since the last look to
``<results>/live/<run_id>.jsonl``: a header line (the run's record), then one
JSON line per look. Appending costs what is new, never the whole history, and
needs no rename (a rename over a file flushes it on ext4: 8 ms a file, 64 files
a look in a fused group). A reader merges the lines and ignores a last line cut
short. The runner removes the file once the run's final results are written;
:func:`load_live_results` reads a grid's finished runs plus the live ones, so
``report`` and ``plot`` show a grid still running, marked partial. A file
whose header cannot be read is skipped with a warning.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dqnbench.agent.watch import Pace, RunDelta
from dqnbench.run.results import (
    DamagedRunWarning,
    Results,
    current_run_ids,
    finished_runs,
    load_results,
    run_row,
    runs_dir,
)

#: the directory, under a grid's results, of running runs' live files
LIVE_DIR = "live"
#: a live file's name is the run id and this suffix (JSON lines)
LIVE_SUFFIX = ".jsonl"
LIVE_VERSION = 2
#: what a look appends to the header; the reader merges them in order
TABLES = ("evals", "episodes", "steps")


class LiveFileWarning(DamagedRunWarning):
    """A live file that cannot be read (a crash cut it short): skipped; the run's final results replace it."""


def live_path(experiment_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(experiment_dir) / LIVE_DIR / f"{run_id}{LIVE_SUFFIX}"


class LiveFile:
    """One run's live file: a header line, then each look's news appended as one JSON line."""

    def __init__(self, path: str | os.PathLike, record: Mapping[str, Any], members: int = 1) -> None:
        self.path = Path(path)
        self.header = {"version": LIVE_VERSION, "record": dict(record), "members": members}
        self._started = False

    def update(self, delta: RunDelta) -> None:
        line = {"step": delta.step, "pace": asdict(delta.pace), "steps_per_s": delta.steps_per_s}
        for table in TABLES:
            line[table] = {column: _plain(values) for column, values in getattr(delta, table).items()}
        self.write(line)

    def write(self, line: Mapping[str, Any]) -> None:
        """Append one look (the header first); best effort: a full disk must not stop training."""
        text = json.dumps(line, allow_nan=True, separators=(",", ":")) + "\n"
        try:
            if not self._started:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                text = json.dumps(self.header, separators=(",", ":")) + "\n" + text
                self.path.write_text(text, encoding="utf-8")
                self._started = True
            else:
                with self.path.open("a", encoding="utf-8") as sink:
                    sink.write(text)
        except OSError:
            pass

    def close(self) -> None:
        """Nothing to release: the runner removes the file once the run's results are written."""


def _plain(values: Any) -> list[Any]:
    """JSON-able values: NumPy scalars and arrays become Python numbers and lists."""
    return np.asarray(values).tolist() if isinstance(values, np.ndarray) else [_item(v) for v in values]


def _item(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_item(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def discard_live(experiment_dir: str | os.PathLike, run_id: str) -> None:
    """Remove a run's live file (its final results are written)."""
    live_path(experiment_dir, run_id).unlink(missing_ok=True)


@dataclass(frozen=True)
class LiveRun:
    """A live file as read back: the run's record, members, env steps done, pace and tables."""

    run_id: str
    data: dict[str, Any]
    mtime: float

    @property
    def record(self) -> dict[str, Any]:
        return self.data["record"]

    @property
    def step(self) -> int:
        return int(self.data.get("step", 0))

    @property
    def pace(self) -> Pace:
        known = {f.name for f in fields(Pace)}  # a newer file's extra figures are left out
        figures = self.data.get("pace", {}).items()
        return Pace(**{k: math.nan if v is None else float(v) for k, v in figures if k in known})

    def latest_eval(self) -> tuple[int, float] | None:
        """``(step, mean return)`` of the run's latest evaluation, None before the first."""
        evals = self.data.get("evals", {})
        if not evals.get("step"):
            return None
        return int(evals["step"][-1]), float(evals["mean_return"][-1])


def read_live_file(path: Path) -> LiveRun:
    """One live file, its looks merged; ValueError (naming the file) when its header cannot be read."""
    try:
        mtime = path.stat().st_mtime
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else None
    except (OSError, ValueError) as exc:
        raise ValueError(f"live file {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("record"), dict) or "run_id" not in header["record"]:
        raise ValueError(f"live file {path} holds no run record")
    data: dict[str, Any] = {**header, "step": 0, "pace": asdict(Pace()), "steps_per_s": None}
    data.update({table: {} for table in TABLES})
    for number, text in enumerate(lines[1:], start=2):
        try:
            look = json.loads(text)
        except ValueError:
            if number == len(lines):
                break  # the look being written when the file was read (or when a crash cut it)
            raise ValueError(f"live file {path} cannot be read (line {number} is not JSON)") from None
        data["step"], data["pace"] = look["step"], look["pace"]
        if look.get("steps_per_s") is not None and look["steps_per_s"] == look["steps_per_s"]:
            data["steps_per_s"] = look["steps_per_s"]
        for table in TABLES:
            for column, values in look.get(table, {}).items():
                data[table].setdefault(column, []).extend(values)
    return LiveRun(header["record"]["run_id"], data, mtime)


def read_live(experiment_dir: str | os.PathLike) -> tuple[list[LiveRun], list[str]]:
    """The readable live files of a results directory, and a note for each unreadable one."""
    directory = Path(experiment_dir) / LIVE_DIR
    found, notes = [], []
    if not directory.is_dir():
        return found, notes
    for path in sorted(directory.glob(f"[!.]*{LIVE_SUFFIX}")):
        try:
            found.append(read_live_file(path))
        except ValueError as exc:
            notes.append(f"{exc}; it is ignored (a crash can cut one short; the run's final results replace it)")
    return found, notes


def load_live_results(path: str | os.PathLike, all_runs: bool = False) -> Results:
    """:func:`~dqnbench.run.results.load_results` plus the runs still training, marked partial.

    A live run counts as ``ok`` with its latest evaluation as ``final_return`` and
    ``live`` true; ``Results.partial`` then says so, e.g. "partial, 3 of 8 runs
    live: their curves end at their latest evaluation". Live files of runs
    whose final results exist are ignored.
    """
    path = Path(path)
    live, notes = read_live(path)
    for note in notes:
        warnings.warn(note, LiveFileWarning, stacklevel=2)
    current = current_run_ids(path)
    if current is not None and not all_runs:
        live = [run for run in live if run.run_id in set(current)]
    if not live:
        return load_results(path, all_runs=all_runs)
    finished = finished_runs(path) if runs_dir(path).is_dir() else {}
    live = [run for run in live if run.run_id not in finished]
    if not finished:
        results = Results(path, *(pd.DataFrame() for _ in range(4)))
    else:
        results = load_results(path, all_runs=all_runs)
    if not live:
        return results
    return merge_live(results, live, len(current) if current is not None else len(finished) + len(live))


def merge_live(results: Results, live: list[LiveRun], planned: int) -> Results:
    """``results`` with the live runs' rows added (``live`` column true) and ``partial`` set."""
    rows = []
    tables: dict[str, list[pd.DataFrame]] = {"evals": [], "episodes": [], "steps": []}
    for run in live:
        record = {**run.record, "status": "ok", "steps_per_s": run.data.get("steps_per_s")}
        latest = run.latest_eval()
        record["final_return"] = latest[1] if latest else None
        if run.data.get("members", 1) > 1:
            record["lockstep"] = {"members": run.data["members"]}
        row = run_row(record)
        row["live"] = True
        rows.append(row)
        for name in tables:
            columns = run.data.get(name) or {}
            length = len(next(iter(columns.values()))) if columns else 0
            if length:
                tables[name].append(pd.DataFrame({"run_id": [run.run_id] * length, **columns}))
    runs = results.runs.assign(live=False) if len(results.runs) else pd.DataFrame()
    runs = pd.concat([runs, pd.DataFrame(rows)], ignore_index=True)
    if "resumed_at" in runs.columns:
        runs["resumed_at"] = runs["resumed_at"].astype("Int64")
    merged = {
        name: pd.concat([getattr(results, name), *frames], ignore_index=True) if frames else getattr(results, name)
        for name, frames in tables.items()
    }
    latest = max((run.latest_eval() or (0, 0.0))[0] for run in live)
    note = (
        f"partial, {len(live)} of {planned} runs live: their rows and curves end at their latest evaluation "
        f"(the latest at step {latest:,})"
    )
    return Results(
        results.path, runs, merged["steps"], merged["episodes"], merged["evals"], partial=note, trials=results.trials
    )
