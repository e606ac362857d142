"""``compare`` on real runs: machine load never fails it, a planted 30 % slowdown in the stored timings does.

On a CI machine two busy processes slowed the median step itself by 10-30 %
(vCPUs that share a core, a drifting pace), so a slowdown must also show in each
run's median step over its own median calibration: load slows both, slower code
the steps alone.

The slowdown is planted in the data ``compare`` reads (the candidate's
``steps.parquet`` timing columns), not in ``compare`` itself: into a copy of
the baseline, so the planted cell's speed ratio is the plant alone (a CI
machine busy with other work can slow the baseline run itself by 20 %).
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from dqnbench.cli import main
from dqnbench.run.results import load_results

GRID = '[grid]\n"network.name" = ["mlp", "dueling"]\n'


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _run(grid: Path, out: Path, lockstep: bool = False) -> Path:
    args = ["run", "--grid", str(grid), "--out", str(out), "--executor", "serial", "--quiet", "--no-plots"]
    assert main(args + ([] if lockstep else ["--no-lockstep"])) == 0
    return out / "tiny"


def run_loaded(grid: Path, out: Path, lockstep: bool = False) -> Path:
    """The grid run beside 2 busy processes (one per core of a 2-core machine)."""
    busy = [multiprocessing.get_context("spawn").Process(target=_spin, args=(60.0,)) for _ in range(2)]
    for p in busy:
        p.start()
    try:
        return _run(grid, out, lockstep)
    finally:
        for p in busy:
            p.terminate()
            p.join()


@pytest.fixture
def baseline(write_grid, tmp_path) -> tuple[Path, Path]:
    """The tiny grid (2 cells × 10 independent seeds, 400 steps) and its results run alone, for each test (and
    each rerun).

    Ten seeds: this VM's pace drifts by up to 40 % over seconds (CartPole's own
    env step, pure Python, slows with it, and so does CPU time), so consecutive
    runs of a cell share a slow stretch; with five seeds of 600 steps the planted
    cell's interval was [0.57, 0.87] in one run in three (ratio 0.70, not judged
    slower). A rerun (``flaky``) measures again: a slow stretch is not a verdict.
    """
    grid = write_grid(GRID, steps=400, seeds=10, eval_every=0)
    return grid, _run(grid, tmp_path / "base")


@pytest.mark.flaky(reruns=1)
def test_machine_load_alone_never_exits_1(baseline, tmp_path, capsys):
    grid, base = baseline
    loaded = run_loaded(grid, tmp_path / "loaded")
    capsys.readouterr()
    assert main(["compare", str(base), str(loaded), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["speed_judged"].all() and table["speed_source"].isin(["step time", "calibrated step time"]).all()


@pytest.mark.flaky(reruns=1)
def test_a_planted_30_percent_slowdown_exits_1(baseline, tmp_path, capsys):
    _, base = baseline
    slow = tmp_path / "slow"
    shutil.copytree(base, slow)
    mlp = load_results(slow).runs.query("`network.name` == 'mlp'")["run_id"]
    for run_id in mlp:
        path = slow / "runs" / run_id / "steps.parquet"
        steps = pd.read_parquet(path)
        for column in ("t_act", "t_env", "t_learn"):
            steps[column] /= 0.7  # every step costs 1/0.7 = 1.43x: 30 % fewer steps per second
        steps.to_parquet(path, index=False)
    capsys.readouterr()
    assert main(["compare", str(base), str(slow), "--format", "csv"]) == 1
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).set_index("label")
    assert table.loc["network.name=mlp", "verdict"] == "same, slower"
    assert table.loc["network.name=dueling", "verdict"] == "same"


def test_a_lock_step_cell_is_one_speed_sample(write_grid, tmp_path, capsys):
    grid = write_grid(GRID.replace(', "dueling"', ""), steps=200, seeds=3, eval_every=0)
    base = _run(grid, tmp_path / "a", lockstep=True)
    capsys.readouterr()
    assert main(["compare", str(base), str(base), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["nspeed_base"].tolist() == [1] and not table["speed_judged"].any()
    assert table["verdict"].tolist() == ["same"] and table["speed_verdict"].tolist() == ["not judged"]
