"""Progress and the end-of-grid summary: a rich bar on a terminal, plain lines elsewhere.

Progress counts env steps, not only finished runs: each task (a run, or a
lock-step cell) writes the env steps it has done to a small file under
``<results>/.progress/`` every couple of seconds (see
:func:`dqnbench.agent.loop.train_runs`'s ``progress``), and a thread here reads
them once a second. That works the same for the serial executor, local worker
processes and Ray workers on this machine (a remote Ray worker's file lives on
its own node: its runs count when they finish). The ETA prices what each task
has left at its own measured pace, read from its runs' live files
(:mod:`dqnbench.run.eta`); until a pace is measured it divides the steps still
to do by the step rate of this session so far. The bar also shows the latest
evaluation of the best cell (:mod:`dqnbench.run.live`).

On a terminal a rich bar shows steps, runs, steps/s and the ETA. When stdout is
not a TTY (CI logs, pipes) or with ``--quiet``, a plain line is printed at most
every :data:`PLAIN_EVERY_S` seconds, plus one for each failed run and one at the end.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dqnbench.run.eta import EtaModel, TaskPlan
from dqnbench.run.live import LIVE_SUFFIX, LiveRun, read_live_file

#: seconds between plain progress lines (logs, ``--quiet``)
PLAIN_EVERY_S = 30.0
#: seconds between reads of the in-run progress files
POLL_S = 1.0
#: the directory, under a grid's results, where running tasks report their env steps
PROGRESS_DIR = ".progress"


def write_progress(path: str | Path, steps: int) -> None:
    """A task's report: ``steps`` env steps done (all its runs together); best effort, never raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(str(int(steps)))
        os.replace(tmp, path)  # atomic: a reader sees the old count or the new one
    except OSError:
        pass


def _read_steps(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):  # gone, or caught mid-write: counts as nothing this time
        return 0


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, seconds)))


class RunProgress:
    """Tracks a grid's env steps (finished runs and running tasks) and its finished runs, and reports them.

    :param total: runs to do in this session; ``total_steps`` their env steps.
    :param directory: where running tasks write their progress files (None: finished runs only).
    :param tasks: the session's tasks in dispatch order, run on ``lanes`` workers (the ETA's model).
    :param live_dir: where the runs' live files are (their pace and evaluations).
    """

    def __init__(
        self,
        total: int,
        skipped: int,
        live: bool,
        stream: TextIO | None = None,
        total_steps: int = 0,
        directory: Path | None = None,
        tasks: Sequence[TaskPlan] = (),
        lanes: int = 1,
        live_dir: Path | None = None,
    ) -> None:
        self.total, self.skipped, self.done, self.failed = total, skipped, 0, 0
        self.total_steps = total_steps
        self.steps = 0  # env steps of runs that finished ok (speed of the summary line)
        self.finished_steps = 0  # env steps of every finished run (progress)
        self._running: dict[str, int] = {}  # env steps reported by each task still running
        self._first: tuple[float, int] | None = None  # (time, steps) when steps were first seen: the rate's origin
        self.directory = directory
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.last_line = self.start
        self._lock = threading.Lock()
        self._finished_files: set[str] = set()
        self.model = EtaModel(tasks, lanes) if tasks else None
        self._rows = {task.key: len(task.run_ids) for task in tasks}
        self.live_dir = live_dir
        self._live: dict[str, tuple[float, LiveRun]] = {}  # live file name → (mtime, contents)
        self._bar: Progress | None = None
        if live:
            self._bar = Progress(
                TextColumn("[bold]steps"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                TextColumn("runs {task.fields[runs]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[best]}"),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task(
                "steps", total=max(total_steps, 1), runs=f"0/{total}", rate="", eta="", best=""
            )
            self._bar.start()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if directory is not None:
            self._thread = threading.Thread(target=self._watch, name="dqnbench-progress", daemon=True)
            self._thread.start()

    # --- figures ------------------------------------------------------------------------------
    def steps_done(self) -> int:
        running = sum(self._running.values())
        return min(self.finished_steps + running, self.total_steps) if self.total_steps else 0

    def steps_per_s(self) -> float:
        """Env steps per second since steps were first seen (start-up — spawning workers, imports — excluded)."""
        if not self.total_steps:
            elapsed = time.perf_counter() - self.start
            return self.steps / elapsed if elapsed > 0 else 0.0
        done = self.steps_done()
        if self._first is None:
            if done:
                self._first = (time.perf_counter(), done)
            return 0.0
        seconds, steps = time.perf_counter() - self._first[0], done - self._first[1]
        return steps / seconds if seconds > 0 and steps > 0 else 0.0

    def eta_s(self) -> float:
        """Seconds left: each task's rest at its pace (:mod:`dqnbench.run.eta`), else the steps still to do at the
        step rate seen so far (by finished runs without step counts)."""
        if self.model is not None and self.model.measured():
            return self.model.seconds_left(time.time())
        if self.total_steps:
            rate = self.steps_per_s()
            return (self.total_steps - self.steps_done()) / rate if rate > 0 else float("nan")
        elapsed = time.perf_counter() - self.start
        return elapsed / self.done * (self.total - self.done) if self.done else float("nan")

    # --- events -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Read the running tasks' progress files and refresh the display."""
        if self.directory is None:
            return
        with self._lock:
            for path in self.directory.glob("[!.]*"):
                if path.name not in self._finished_files:
                    self._running[path.name] = max(self._running.get(path.name, 0), _read_steps(path))
                    if self.model is not None and path.name in self._rows:
                        self.model.observe(path.name, self._running[path.name] // self._rows[path.name], time.time())
            self._read_live()
            self._refresh()

    def _read_live(self) -> None:
        """Read the live files that changed: each task's pace for the ETA, each run's latest evaluation."""
        if self.live_dir is None or not self.live_dir.is_dir():
            return
        for path in self.live_dir.glob(f"[!.]*{LIVE_SUFFIX}"):
            try:
                mtime = path.stat().st_mtime
                if self._live.get(path.name, (None,))[0] == mtime:
                    continue
                run = read_live_file(path)
            except (OSError, ValueError):  # gone meanwhile, or unreadable: the next poll tries again
                continue
            self._live[path.name] = (mtime, run)
            key = self.model.task_of.get(run.run_id) if self.model is not None else None
            if key is not None and key not in self._finished_files:
                self.model.observe(key, run.step, mtime, run.pace)

    def best_cell(self) -> str:
        """The cell whose runs' latest evaluations are best on average: "best LABEL: RETURN @ STEP", or ""."""
        cells: dict[str, list[tuple[int, float]]] = {}
        for _, run in self._live.values():
            latest = run.latest_eval()
            if latest is not None:
                cells.setdefault(str(run.record.get("label", run.run_id)), []).append(latest)
        if not cells:
            return ""
        label, evals = max(cells.items(), key=lambda item: sum(v for _, v in item[1]) / len(item[1]))
        label = label if len(label) <= 40 else label[:39] + "…"
        return f"best {label}: {sum(v for _, v in evals) / len(evals):.1f} @ {max(s for s, _ in evals):,}"

    def task_finished(self, key: str, steps: int) -> None:
        """A task's results arrived: its ``steps`` planned env steps count instead of its progress file."""
        with self._lock:
            self._finished_files.add(key)
            self._running.pop(key, None)
            if self.model is not None:
                self.model.finish(key)
            self.finished_steps += steps
            if self.directory is not None:
                (self.directory / key).unlink(missing_ok=True)

    def update(self, run_id: str, label: str, seed: int, status: str, steps: int, detail: str) -> None:
        """A run finished (``steps`` env steps planned for it; they count in :meth:`task_finished`)."""
        with self._lock:
            self.done += 1
            self.failed += status != "ok"
            self.steps += steps if status == "ok" else 0
            if self._bar is not None and status != "ok":
                self._bar.console.print(f"[red]{status}[/red] {run_id} ({label}, seed {seed}): {detail}")
            elif self._bar is None and status != "ok":
                print(f"{status} {run_id} ({label}, seed {seed}): {detail}", file=self.stream, flush=True)
            self._refresh(force_line=self.done == self.total)

    def _refresh(self, force_line: bool = False) -> None:
        rate, eta = f"{self.steps_per_s():,.0f} steps/s", _clock(self.eta_s())
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self.steps_done(),
                runs=f"{self.done}/{self.total}",
                rate=rate,
                eta=eta,
                best=self.best_cell(),
            )
            return
        now = time.perf_counter()
        if force_line or now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            steps = f"steps {self.steps_done():,}/{self.total_steps:,}, " if self.total_steps else ""
            best = f", {self.best_cell()}" if self._live else ""
            print(
                f"[{self.done}/{self.total} runs] {steps}{rate}, ETA {eta}, elapsed {_clock(now - self.start)}{best}",
                file=self.stream,
                flush=True,
            )

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def summary_table(rows: Iterable[dict[str, Any]], title: str) -> Table:
    """Per cell: runs ok / not ok, final greedy return IQM [95% CI] (``report``'s statistic), env steps per second."""
    from dqnbench.analysis.report import SCORE_HEADER, SMALL_MARK, SMALL_NOTE

    rows = list(rows)
    small = any(SMALL_MARK in row["score"] for row in rows)
    table = Table(title=title, caption=SMALL_NOTE if small else None, caption_justify="left")
    for header, justify in (
        ("cell", "left"),
        ("label", "left"),
        ("ok", "right"),
        ("failed", "right"),
        (f"final return {SCORE_HEADER}", "right"),
        ("steps/s", "right"),
    ):
        table.add_column(header, justify=justify)
    for row in rows:
        table.add_row(
            row["cell"],
            row["label"],
            str(row["ok"]),
            str(row["failed"]),
            row["score"],
            "-" if row["steps_per_s"] != row["steps_per_s"] else f"{row['steps_per_s']:,.0f}",
        )
    return table


def print_summary(rows: list[dict[str, Any]], title: str, stream: TextIO | None = None) -> None:
    console = Console(file=stream or sys.stdout, width=max(120, Console().width))
    console.print(summary_table(rows, title))
