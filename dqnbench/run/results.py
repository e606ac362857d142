"""Results on disk and in memory.

Layout of one experiment directory (``<out>/<experiment.name>/``)::

    grid.toml, plan.json      the grid file of the last run and its run ids
    .lock                     held by the one process writing here
    runs/<run_id>/meta.json   the run record: status, resolved config, versions, summary
    runs/<run_id>/steps.parquet, episodes.parquet, evals.parquet
    runs/<run_id>/weights.pt  final eval-net state_dict (torch.load(..., weights_only=True))

Each run directory is written complete under a hidden temporary name and then
renamed into place, so a reader (or a rerun deciding what is finished) never
sees half a run. Only the runner writes here; workers return a
:class:`RunOutput` and stay unaware of the filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dqnbench.errors import ResultsError

RUNS_DIR = "runs"
GRID_COPY = "grid.toml"
PLAN = "plan.json"
META = "meta.json"
WEIGHTS = "weights.pt"
TABLES = ("steps", "episodes", "evals")

#: Column order of each per-run table (every table also starts with run_id).
STEP_COLUMNS = ("step", "episode", "reward", "t_act", "t_env", "t_learn", "loss", "q_max", "epsilon", "steps_n")
EPISODE_COLUMNS = ("episode", "step", "return", "length")
EVAL_COLUMNS = ("step", "mean_return", "std_return", "returns")
#: each table's columns, by table name
TABLE_COLUMNS = {"steps": STEP_COLUMNS, "episodes": EPISODE_COLUMNS, "evals": EVAL_COLUMNS}


@dataclass
class RunOutput:
    """Everything one run produced, as plain data that pickles across processes.

    ``record`` is the JSON-serialisable run record (``meta.json``); the tables
    are column → array mappings; ``weights`` is the eval network's state_dict.
    """

    record: dict[str, Any]
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    episodes: dict[str, np.ndarray] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] | None = None

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def status(self) -> str:
        return self.record["status"]


def runs_dir(experiment_dir: str | os.PathLike) -> Path:
    return Path(experiment_dir) / RUNS_DIR


def write_run(experiment_dir: str | os.PathLike, output: RunOutput) -> Path:
    """Write one run atomically: a hidden temp directory, then a rename into place.

    A previous directory of the same run (a failed attempt being retried) is
    replaced only once the new one is complete.
    """
    root = runs_dir(experiment_dir)
    final = root / output.run_id
    tmp = root / f".tmp-{output.run_id}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        for name in TABLES:
            pq.write_table(_arrow_table(output.run_id, getattr(output, name), name), tmp / f"{name}.parquet")
        if output.weights is not None:
            torch.save(output.weights, tmp / WEIGHTS)
        with open(tmp / META, "w", encoding="utf-8") as f:
            json.dump(output.record, f, indent=1, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if final.exists():
            old = root / f".old-{output.run_id}-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ResultsError(f"cannot write results of run {output.run_id} to {root}: {exc}") from exc
    return final


def clean_partial_writes(experiment_dir: str | os.PathLike) -> None:
    """Remove what an interrupted :func:`write_run` left (hidden ``.tmp-``/``.old-`` dirs).

    Only called while holding the experiment lock, so no live writer owns them.
    """
    root = runs_dir(experiment_dir)
    if root.is_dir():
        for leftover in root.iterdir():
            if leftover.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(leftover, ignore_errors=True)


def write_plan(experiment_dir: str | os.PathLike, grid: Path, run_ids: list[str]) -> None:
    """Record the current grid (a copy of its file, and its run ids in ``plan.json``).

    :func:`load_results` shows only these runs by default, so rerunning a
    changed grid into the same directory never mixes in runs of the old one.
    """
    directory = Path(experiment_dir)
    try:
        _atomic_write(directory / GRID_COPY, grid.read_text(encoding="utf-8"))
        _atomic_write(directory / PLAN, json.dumps({"grid": str(grid), "run_ids": run_ids}, indent=1))
    except OSError as exc:
        raise ResultsError(f"cannot write to results directory {directory}: {exc}") from exc


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def current_run_ids(experiment_dir: str | os.PathLike) -> list[str] | None:
    """Run ids of the last grid run into this directory, or None if unknown."""
    try:
        with open(Path(experiment_dir) / PLAN, encoding="utf-8") as f:
            return list(json.load(f)["run_ids"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_id_type() -> pa.DataType:
    """The Arrow type pandas gives a str column (``large_string`` for pandas 3's string dtype, ``string`` before):
    run ids are stored as pandas stored them, so every run's tables concatenate in Arrow. Inferred from a value,
    not an empty column: pandas 2 keeps str in object columns, whose type Arrow infers from their values."""
    frame = pd.DataFrame({"run_id": pd.Series(["id"], dtype=str)})
    return pa.Schema.from_pandas(frame, preserve_index=False).field("run_id").type


RUN_ID_TYPE = _run_id_type()


def _arrow_table(run_id: str, columns: Mapping[str, Any], name: str) -> pa.Table:
    """One run's table as Arrow, built straight from its arrays.

    The columns convert as ``DataFrame.to_parquet`` converts them (``from_pandas``: a float NaN is stored as
    null, a column of arrays as a list column), so the file reads back as the frame pandas wrote before,
    without a DataFrame's cost per table: the parent writes every run of a sweep, and at 64 runs the
    conversion through pandas cost it about a second.
    """
    data = {c: columns[c] for c in TABLE_COLUMNS[name] if c in columns}
    length = len(next(iter(data.values()))) if data else 0
    arrays = {"run_id": pa.array([run_id] * length, RUN_ID_TYPE)}
    arrays.update({c: pa.array(values, from_pandas=True) for c, values in data.items()})
    return pa.table(arrays)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    with open(Path(run_dir) / META, encoding="utf-8") as f:
        return json.load(f)


class DamagedRunWarning(UserWarning):
    """A run directory with damaged files (truncated, empty, missing): left out; a rerun recomputes it."""


def damage(run_dir: Path, record: Mapping[str, Any] | None = None) -> str | None:
    """What is wrong with a run directory's files, naming the file, or None if they look whole.

    Cheap: the record must parse, every table must be a Parquet file with its
    magic bytes at both ends (a truncated write loses the footer), and an
    ``ok`` run must have its weights. Written runs never look like this (each is
    renamed into place complete); disks, copies and hand edits can.
    """
    if record is None:
        try:
            record = read_record(run_dir)
        except FileNotFoundError:
            return f"{run_dir / META} is missing"
        except (OSError, ValueError) as exc:
            return f"{run_dir / META} cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(record, dict) or not isinstance(record.get("status"), str):
        return f"{run_dir / META} holds no run record"
    for name in TABLES:
        table = run_dir / f"{name}.parquet"
        try:
            with open(table, "rb") as f:
                head = f.read(4)
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4))
                tail = f.read(4)
        except OSError:
            return f"{table} is missing"
        if head != b"PAR1" or tail != b"PAR1":
            return f"{table} is truncated or not a Parquet file"
    if record["status"] == "ok" and not (run_dir / WEIGHTS).is_file():
        return f"{run_dir / WEIGHTS} is missing"
    return None


def scan_runs(experiment_dir: str | os.PathLike) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``(run_id → record of each whole run, run_id → what is damaged in the others)``; hidden temp dirs ignored."""
    root = runs_dir(experiment_dir)
    found: dict[str, dict[str, Any]] = {}
    damaged: dict[str, str] = {}
    if not root.is_dir():
        return found, damaged
    for run_dir in sorted(root.iterdir()):
        if run_dir.name.startswith(".") or not run_dir.is_dir():
            continue
        try:
            record = read_record(run_dir)
        except (OSError, ValueError):
            record = None
        problem = damage(run_dir, record)
        if problem is None:
            found[run_dir.name] = record
        else:
            damaged[run_dir.name] = problem
    return found, damaged


def finished_runs(experiment_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """run_id → record of every completely written run; a damaged one is not finished (a rerun recomputes it)."""
    return scan_runs(experiment_dir)[0]


@dataclass
class Results:
    """The four tables of an experiment (see DESIGN.md, "Results").

    - ``runs``: one row per run: run_id, cell, label, seed, status, error, one
      column per resolved config key ("network.name", "agent.lr", …), wall_s,
      steps_per_s, final_return, lockstep_members (K when the run trained as one
      of a lock-step group's K members, 1 when it trained alone). A member's
      ``wall_s`` and ``steps_per_s`` are its own share: the group's wall time and
      training time divided by K, so ``wall_s`` sums to the machine time the grid
      took and every member of one group shows the same figures (one speed
      sample per group, not K).
    - ``steps``: one row per env step: run_id, step (0-based index), episode,
      reward, t_act, t_env, t_learn (seconds), loss (NaN where nothing was
      learned), q_max (mean greedy Q-value at acting time) and epsilon (the
      explorer's ε), probed every 50 steps (NaN between probes). Runs longer
      than 100,000 steps (or with ``experiment.steps_window``) have one row per
      window of ``steps_n`` env steps instead: step and episode at the window's
      start, reward and times summed, loss, q_max and epsilon averaged.
    - ``episodes``: one row per finished training episode: run_id, episode,
      step (env steps done when it ended), return, length.
    - ``evals``: one row per greedy evaluation: run_id, step (env steps done),
      mean_return, std_return, returns (the per-episode returns).
    - ``trials`` (a ``[search]`` only, else None): one row per trial: variant,
      trial, one column per searched key, objective, state, seeds; ``runs`` then
      also has ``phase`` ("tune" / "test") and ``trial``.
    """

    path: Path
    runs: pd.DataFrame
    steps: pd.DataFrame
    episodes: pd.DataFrame
    evals: pd.DataFrame
    #: None for finished results; a note such as "partial, 3 of 8 runs live: …" when runs still train
    #: (:func:`dqnbench.run.live.load_live_results`)
    partial: str | None = None
    #: a search's trials (:func:`dqnbench.search.trials.trials_frame`); None for a plain grid
    trials: pd.DataFrame | None = None

    def run_dir(self, run_id: str) -> Path:
        return runs_dir(self.path) / run_id

    def weights(self, run_id: str) -> dict[str, torch.Tensor]:
        """The final eval-net state_dict of a run, loaded with ``weights_only=True``."""
        return torch.load(self.run_dir(run_id) / WEIGHTS, weights_only=True, map_location="cpu")

    def record(self, run_id: str) -> dict[str, Any]:
        """The full run record (``meta.json``): resolved config, versions, traceback."""
        return read_record(self.run_dir(run_id))

    def __repr__(self) -> str:
        return (
            f"Results({str(self.path)!r}: {len(self.runs)} runs, {len(self.steps)} steps, "
            f"{len(self.episodes)} episodes, {len(self.evals)} evals)"
        )


RUN_COLUMNS = ("run_id", "cell", "label", "seed", "status", "error")
RUN_SUMMARY = ("wall_s", "steps_per_s", "final_return", "lockstep_members", "resumed_at", "learn_path")


def run_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a run record into its ``runs`` row; list values become tuples."""
    row = {k: record.get(k) for k in RUN_COLUMNS}
    for key, value in record.get("flat_config", {}).items():
        row[key] = tuple(value) if isinstance(value, list) else value
    for key in RUN_SUMMARY:
        row[key] = record.get(key)
    row["lockstep_members"] = (record.get("lockstep") or {}).get("members", 1)
    return row


def load_results(path: str | os.PathLike, all_runs: bool = False) -> Results:
    """Read an experiment directory (``<out>/<name>``) into :class:`Results`.

    By default only the runs of the grid last run into the directory
    (``plan.json``) are read; ``all_runs=True`` also reads runs that earlier,
    different versions of the grid left there. Rows come in the grid's order
    (cells as the grid lists them, then seeds), so every table, report and
    legend shows variants in one order.
    """
    path = Path(path)
    if not runs_dir(path).is_dir():
        raise ResultsError(f"{path} is not a dqnbench results directory (no {RUNS_DIR}/ inside)")
    records, damaged = scan_runs(path)
    current = current_run_ids(path)
    if current is not None:
        keep = set(current)
        order = {run_id: i for i, run_id in enumerate(current)}
        if not all_runs:
            records = {run_id: record for run_id, record in records.items() if run_id in keep}
            damaged = {run_id: problem for run_id, problem in damaged.items() if run_id in keep}
        records = dict(sorted(records.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
    parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
    for run_id in list(records):
        read = _read_tables(runs_dir(path) / run_id)
        if isinstance(read, str):
            damaged[run_id] = read
            del records[run_id]
            continue
        for name, table in read.items():
            if table.num_rows:
                parts[name].append(table)
    for run_id, problem in damaged.items():
        warnings.warn(
            f"run {run_id} is left out: {problem}; `dqnbench run` recomputes it", DamagedRunWarning, stacklevel=2
        )
    if damaged and not records:
        raise ResultsError(
            f"{path}: every run is damaged ({'; '.join(list(damaged.values())[:3])}); rerun `dqnbench run` "
            "with the same grid to recompute them"
        )
    rows = [run_row(r) for r in records.values()]
    runs = pd.DataFrame(rows, columns=_ordered_columns(rows))
    runs["resumed_at"] = runs["resumed_at"].astype("Int64")  # an env step, or <NA>: not a float such as 600.0
    tables = {name: _concat(parts[name]) if parts[name] else _empty_table(name) for name in TABLES}
    from dqnbench.search.trials import read_index, trials_frame, with_phases

    index = read_index(path)
    if index is None:
        return Results(path, runs, tables["steps"], tables["episodes"], tables["evals"])
    return Results(path, with_phases(runs, index), tables["steps"], tables["episodes"], tables["evals"],
                   trials=trials_frame(index))  # fmt: skip


def _ordered_columns(rows: list[dict[str, Any]]) -> list[str]:
    config_keys: list[str] = []
    for row in rows:
        config_keys += [k for k in row if k not in config_keys and k not in RUN_COLUMNS + RUN_SUMMARY]
    return [*RUN_COLUMNS, *config_keys, *RUN_SUMMARY]


def _read_tables(run_dir: Path) -> dict[str, pa.Table] | str:
    """A run's tables, or what is damaged in one, naming the file (its magic bytes were there; the rest of it
    may still be damaged)."""
    tables = {}
    for name in TABLES:
        file = run_dir / f"{name}.parquet"
        try:
            tables[name] = _read_table(file)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            return f"{file} is damaged ({type(exc).__name__}: {exc})"
    return tables


def _read_table(path: Path) -> pa.Table:
    """One Parquet file, read by its own reader (``pq.read_table`` goes through the dataset layer: 4× the
    time on a run's small tables)."""
    with pq.ParquetFile(path) as f:
        return f.read()


def _concat(parts: list[pa.Table]) -> pd.DataFrame:
    """The runs' tables as one frame: concatenated in Arrow and converted once (a conversion per run cost
    a sweep's load about 3 ms a table). Runs whose column types differ (a column that a plugin's runs
    fill with ints in one run and floats in another) are unified by pandas, as a concat of their frames."""
    try:
        return pa.concat_tables(parts).to_pandas()
    except pa.ArrowException:  # schemas that differ (ArrowInvalid), or types Arrow cannot merge
        return pd.concat([part.to_pandas() for part in parts], ignore_index=True)


def _empty_table(name: str) -> pd.DataFrame:
    return pd.DataFrame(columns=["run_id", *TABLE_COLUMNS[name]])
