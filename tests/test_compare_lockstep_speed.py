"""Speed verdicts for lock-step groups (issue #24): calibrated blocks within one run judge its speed.

A lock-step cell is one speed sample, so ``compare`` judges it on blocks of its
own steps, each over the calibration timed in that block. As in
``test_compare_noise.py``: machine load alone never exits 1, and a planted 30 %
slowdown of the stored step times (not of the calibrations: the code got
slower, not the machine) does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dqnbench.cli import main
from dqnbench.run.results import load_results
from tests.test_compare_noise import GRID, _run, run_loaded


@pytest.fixture
def lockstep_base(write_grid, tmp_path) -> tuple[Path, Path]:
    """2 cells × 4 seeds in lock-step (one group each), 2,500 steps: 24 calibrated blocks a run; the grid and its
    results.

    Measured for each test and each rerun (``flaky``): this VM's pace drifts by
    up to 40 % over seconds, and a slow stretch is not a verdict.
    """
    grid = write_grid(GRID, steps=2500, seeds=4, eval_every=0)
    return grid, _run(grid, tmp_path / "base", lockstep=True)


def _table(capsys) -> pd.DataFrame:
    return pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out)).set_index("label")


@pytest.mark.flaky(reruns=1)
def test_load_alone_never_fails_a_lock_step_grid(lockstep_base, tmp_path, capsys):
    grid, base = lockstep_base
    loaded = run_loaded(grid, tmp_path / "loaded", lockstep=True)
    assert load_results(base).runs["lockstep_members"].eq(4).all()
    capsys.readouterr()
    assert main(["compare", str(base), str(loaded), "--format", "csv"]) == 0
    table = _table(capsys)
    assert table["speed_judged"].all() and table["speed_source"].eq("calibrated blocks").all()
    assert (table["nspeed_base"] >= 10).all()


@pytest.mark.flaky(reruns=1)
def test_a_planted_30_percent_slowdown_of_a_lock_step_group_exits_1(lockstep_base, tmp_path, capsys):
    _, base = lockstep_base
    slow = tmp_path / "slow"
    shutil.copytree(base, slow)  # planted into a copy of the baseline: the ratio is the plant alone
    for run_id in load_results(slow).runs.query("`network.name` == 'mlp'")["run_id"]:
        path = slow / "runs" / run_id / "steps.parquet"
        steps = pd.read_parquet(path)
        for column in ("t_act", "t_env", "t_learn"):
            steps[column] /= 0.7  # every step 1.43× slower; the calibrations (the machine) unchanged
        steps.to_parquet(path, index=False)
        meta = slow / "runs" / run_id / "meta.json"
        record = json.loads(meta.read_text())
        record["calibration"]["cpu_s"] = [v / 0.7 for v in record["calibration"]["cpu_s"]]  # more CPU per step
        meta.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["compare", str(base), str(slow), "--format", "csv"]) == 1
    table = _table(capsys)
    assert table.loc["network.name=mlp", "speed_verdict"] == "slower"
    assert table.loc["network.name=dueling", "speed_verdict"] != "slower"
