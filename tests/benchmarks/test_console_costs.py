"""The console's promises on real runs: ``--estimate`` against the run it prices, the ETA after 10% of a grid.

They take minutes of real runs, so the normal test run (``--benchmark-disable``)
skips them: ``tests/test_estimate.py`` and ``tests/test_eta.py`` check that the
estimate is produced and that the ETA model holds on a simulated grid. With
``--benchmark-enable`` they run the grids of ``docs/console.md`` and assert both
within 30% of the truth; the figures are printed and kept in the JSON's ``extra_info``.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import dqnbench.agent.loop as loop
import dqnbench.run.progress as progress_module
from dqnbench.run.runner import run_grid

#: two small grids: lock-step cells on two workers, and independent runs of a dueling net learning every 2 steps
GRIDS = {
    "lockstep-cells": """
        [experiment]
        name = "lockstep-cells"
        total_steps = {steps}
        seeds = 2
        eval_every = {eval_every}
        eval_episodes = 5
        [agent]
        learning_starts = {starts}
        batch_size = 32
        target_update = 200
        [network]
        hidden = [64, 64]
        [grid]
        "agent.lr" = [1e-3, 3e-4]
    """,
    "independent-dueling": """
        [experiment]
        name = "independent-dueling"
        total_steps = {steps}
        seeds = 3
        eval_every = {eval_every}
        eval_episodes = 3
        lockstep = false
        [agent]
        learning_starts = {starts}
        batch_size = 64
        train_every = 2
        target_update = 100
        [network]
        name = "dueling"
        hidden = [32]
    """,
}
ESTIMATE = re.compile(r"estimate: (\d+):(\d\d):(\d\d) wall")


def _grid(tmp_path: Path, name: str, steps: int) -> Path:
    path = tmp_path / f"{name}.toml"
    text = GRIDS[name].format(steps=steps, eval_every=steps // 5, starts=steps // 5)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _cli(*args: str) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dqnbench", *args], capture_output=True, text=True, check=True)
    return done.stdout, time.perf_counter() - started


@pytest.mark.benchmark(group="console")
@pytest.mark.parametrize("name", list(GRIDS))
def test_estimate_is_within_30_percent_of_the_run(benchmark, tmp_path, name):
    """``dqnbench run --dry-run --estimate``, then that ``dqnbench run`` (2 workers, no plots), as a user runs them."""
    if benchmark.disabled:
        pytest.skip("minutes of real runs: measured with --benchmark-enable")
    grid = _grid(tmp_path, name, 5_000)
    out, _ = _cli("run", "--grid", str(grid), "--workers", "2", "--dry-run", "--estimate")
    h, m, s = (int(x) for x in ESTIMATE.search(out).groups())
    estimated = 3600 * h + 60 * m + s
    walls: list[float] = []
    run = ("run", "--grid", str(grid), "--workers", "2", "--quiet", "--no-plots", "--out", str(tmp_path / "out"))
    benchmark.pedantic(lambda: walls.append(_cli(*run)[1]), rounds=1, iterations=1)
    error = (estimated - walls[0]) / walls[0]
    benchmark.extra_info.update(estimated_s=estimated, real_s=walls[0], error=error)
    print(f"{name}: estimate {estimated} s, real {walls[0]:.1f} s, error {error:+.0%}")
    assert abs(error) <= 0.30, (estimated, walls[0])


@pytest.mark.benchmark(group="console")
def test_eta_after_a_tenth_of_a_real_grid_is_within_30_percent(benchmark, tmp_path, monkeypatch, eta_readings):
    """Six runs on two workers, learning from 20% of their steps, evaluated every 5%: the ETA the bar computes
    when 10% of the grid's steps are done, against the time the grid then took."""
    if benchmark.disabled:
        pytest.skip("minutes of real runs: measured with --benchmark-enable")
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.5)
    monkeypatch.setattr(progress_module, "POLL_S", 0.25)
    seen = eta_readings
    steps = 6_000
    grid = tmp_path / "eta.toml"
    grid.write_text(
        textwrap.dedent(f"""
        [experiment]
        name = "eta"
        total_steps = {steps}
        seeds = 6
        eval_every = {steps // 20}
        eval_episodes = 5
        lockstep = false
        [agent]
        learning_starts = {steps // 5}
        batch_size = 32
        target_update = 200
        [network]
        hidden = [64, 64]
        """),
        encoding="utf-8",
    )
    ends: list[float] = []

    def run() -> None:
        run_grid(grid, tmp_path / "out", executor="process", workers=2, stream=io.StringIO(), quiet=True, plots=False)
        ends.append(time.perf_counter())

    benchmark.pedantic(run, rounds=1, iterations=1)
    errors = {}
    for share in (0.1, 0.25, 0.5):
        reading = next((r for r in seen if r[1] >= share * r[2] and r[3] == r[3]), None)
        if reading is not None:
            at, _, _, eta = reading
            errors[share] = (eta - (ends[0] - at)) / (ends[0] - at)
    benchmark.extra_info.update(errors={str(k): v for k, v in errors.items()})
    print("ETA error at", ", ".join(f"{share:.0%}: {e:+.0%}" for share, e in errors.items()))
    assert abs(errors[0.1]) <= 0.30, errors
