"""Progress inside runs: env steps reported while runs train, plain lines rate-limited, an ETA that holds."""

from __future__ import annotations

import io
import re
import time

import pytest

import dqnbench.agent.loop as loop
import dqnbench.run.progress as progress_module
from dqnbench.run.progress import RunProgress, write_progress
from dqnbench.run.runner import run_grid

LINE = re.compile(r"\[(\d+)/(\d+) runs\] steps ([\d,]+)/([\d,]+), [\d,]+ steps/s, ETA (\S+), elapsed (\S+)")


def _seconds(clock: str) -> float:
    if clock.startswith("-"):
        return float("nan")
    h, m, s = (int(x) for x in clock.split(":"))
    return 3600 * h + 60 * m + s


def test_running_tasks_report_steps_through_their_files(tmp_path):
    stream = io.StringIO()
    bar = RunProgress(3, 0, live=False, stream=stream, total_steps=3000, directory=tmp_path)
    write_progress(tmp_path / "a", 400)
    write_progress(tmp_path / "b", 250)
    (tmp_path / "c").write_text("")  # caught mid-write: counts as nothing
    bar.poll()
    assert bar.steps_done() == 650
    bar.task_finished("a", 1000)  # its results arrived: the run's planned steps count instead of its file
    bar.update("a-s0", "cell", 0, "ok", 1000, "")
    bar.poll()
    assert bar.steps_done() == 1250 and not (tmp_path / "a").exists()
    bar.close()


def test_plain_lines_come_at_most_every_30_s_and_failures_always(tmp_path):
    stream = io.StringIO()
    bar = RunProgress(4, 0, live=False, stream=stream, total_steps=4000, directory=tmp_path)
    for i in range(3):
        bar.task_finished(f"r{i}", 1000)
        bar.update(f"r{i}", "cell", i, "ok", 1000, "")
    assert stream.getvalue() == ""  # three runs in well under 30 s: no line yet
    bar.task_finished("r3", 1000)
    bar.update("r3", "cell", 3, "failed", 1000, "ValueError: boom")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "failed r3 (cell, seed 3): ValueError: boom"
    assert lines[1].startswith("[4/4 runs] steps 4,000/4,000")  # the last run always prints


def test_a_single_run_reports_steps_while_it_trains(write_grid, tmp_path, monkeypatch):
    """One 3,000-step run: progress lines show steps strictly between 0 and the total before it ends."""
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr(progress_module, "POLL_S", 0.02)
    grid = write_grid(steps=3000, seeds=1, eval_every=0)
    stream = io.StringIO()
    run_grid(grid, tmp_path / "out", executor="serial", load_entrypoints=False, stream=stream, quiet=True, plots=False)
    steps = [int(m.group(3).replace(",", "")) for m in LINE.finditer(stream.getvalue())]
    assert any(0 < s < 3000 for s in steps), stream.getvalue()
    assert steps == sorted(steps) and steps[-1] == 3000
    assert not (tmp_path / "out" / "tiny" / ".progress").exists()


@pytest.mark.slow
# a VM whose pace drifts by 40 % over seconds misled the 10 % ETA once in a full suite, and the 25 % ETA (30.5 %)
# twice in a row in another (2026-12-07, when a 128×120×84 matmul took 37–52 µs from one second to the next);
# alone on the same machine the errors were 0–14 %
@pytest.mark.flaky(reruns=2)
def test_eta_after_a_tenth_of_the_grid_is_within_30_percent(write_grid, tmp_path, monkeypatch, eta_readings):
    """Four equal serial runs: the ETA shown when 10%, 25% and 50% of the steps are done is within 30% of the time left.

    The ETAs are read as the bar computes them (not from the one-second clock text).
    """
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(progress_module, "POLL_S", 0.1)
    seen = eta_readings
    grid = write_grid(steps=4000, seeds=4, eval_every=1000)
    run_grid(
        grid, tmp_path / "out", executor="serial", load_entrypoints=False, stream=io.StringIO(), quiet=True,
        lockstep=False, plots=False,
    )  # fmt: skip
    end = time.perf_counter()
    errors = {}
    for share in (0.1, 0.25, 0.5):
        at, done, planned, eta = next(reading for reading in seen if reading[1] >= share * reading[2])
        errors[share] = abs(eta - (end - at)) / (end - at)
    print("ETA error at 10%, 25%, 50% of the grid:", ", ".join(f"{e:.0%}" for e in errors.values()))
    assert max(errors.values()) <= 0.3, errors
