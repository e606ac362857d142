"""Progress and the end-of-grid summary: a rich bar on a terminal, plain lines elsewhere.

Plain lines (one per finished run, with done/total, ETA and steps/s) are used
when stdout is not a TTY — CI logs, pipes — or with ``--quiet``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RunProgress:
    """Tracks finished runs of a grid and reports them."""

    def __init__(self, total: int, skipped: int, live: bool, stream: TextIO | None = None) -> None:
        self.total, self.skipped, self.done, self.failed = total, skipped, 0, 0
        self.steps = 0
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self._bar: Progress | None = None
        if live:
            self._bar = Progress(
                TextColumn("[bold]runs"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._bar.add_task("runs", total=total, rate="", completed=0)
            self._bar.start()

    def steps_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.steps / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float:
        if not self.done:
            return float("nan")
        return (time.perf_counter() - self.start) / self.done * (self.total - self.done)

    def update(self, run_id: str, label: str, seed: int, status: str, steps: int, detail: str) -> None:
        self.done += 1
        self.failed += status != "ok"
        self.steps += steps if status == "ok" else 0
        if self._bar is not None:
            self._bar.update(self._task, advance=1, rate=f"{self.steps_per_s():,.0f} steps/s")
            if status != "ok":
                self._bar.console.print(f"[red]{status}[/red] {run_id} ({label}, seed {seed}): {detail}")
            return
        eta = self.eta_s()
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "?"
        print(
            f"[{self.done}/{self.total}] {run_id} {label} seed={seed} {status} {detail} "
            f"| {self.steps_per_s():,.0f} steps/s, ETA {eta_text}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def summary_table(rows: Iterable[dict[str, Any]], title: str) -> Table:
    """Per cell: runs ok / not ok, final greedy return mean ± std, env steps per second."""
    table = Table(title=title)
    for header, justify in (
        ("cell", "left"),
        ("label", "left"),
        ("ok", "right"),
        ("failed", "right"),
        ("final return", "right"),
        ("steps/s", "right"),
    ):
        table.add_column(header, justify=justify)
    for row in rows:
        table.add_row(
            row["cell"],
            row["label"],
            str(row["ok"]),
            str(row["failed"]),
            _mean_std(row["mean"], row["std"]),
            "-" if row["steps_per_s"] != row["steps_per_s"] else f"{row['steps_per_s']:,.0f}",
        )
    return table


def _mean_std(mean: float, std: float) -> str:
    if mean != mean:
        return "-"
    return f"{mean:.1f} ± {std:.1f}" if std == std else f"{mean:.1f}"


def print_summary(rows: list[dict[str, Any]], title: str, stream: TextIO | None = None) -> None:
    console = Console(file=stream or sys.stdout, width=max(120, Console().width))
    console.print(summary_table(rows, title))
