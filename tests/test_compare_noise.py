"""``compare`` on real runs: machine load never fails it, a planted 30 % slowdown in the stored timings does.

The slowdown is planted in the data ``compare`` reads (the candidate's
``steps.parquet`` timing columns), not in ``compare`` itself.
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


@pytest.fixture(scope="module")
def baseline_and_loaded(tmp_path_factory):
    """The same tiny grid (2 cells × 5 independent seeds, 600 steps) run alone, then beside 2 busy processes.

    Five seeds, as ``compare``'s docs advise for CI jobs: with three, one run whose
    median step fell in a slow stretch widened the planted cell's speed interval to
    [0.61, 0.89] (ratio 0.74) and it was not judged slower; with five seeds of 600
    steps the intervals measured ±0.02 (planted 0.665-0.688, loaded 0.95-1.01).
    """
    root = tmp_path_factory.mktemp("noise")
    grid = root / "grid.toml"
    from tests.conftest import TINY_EXPERIMENT

    grid.write_text(TINY_EXPERIMENT.format(name="tiny", steps=600, seeds=5, eval_every=0) + GRID, encoding="utf-8")
    base = _run(grid, root / "base")
    busy = [multiprocessing.get_context("spawn").Process(target=_spin, args=(60.0,)) for _ in range(2)]
    for p in busy:
        p.start()
    try:
        loaded = _run(grid, root / "loaded")
    finally:
        for p in busy:
            p.terminate()
            p.join()
    return base, loaded


def test_machine_load_alone_never_exits_1(baseline_and_loaded, capsys):
    base, loaded = baseline_and_loaded
    capsys.readouterr()
    assert main(["compare", str(base), str(loaded), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["speed_judged"].all() and table["speed_source"].eq("step time").all()


def test_a_planted_30_percent_slowdown_exits_1(baseline_and_loaded, tmp_path, capsys):
    base, loaded = baseline_and_loaded
    slow = tmp_path / "slow"
    shutil.copytree(loaded, slow)
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
    assert table.loc["network.name=mlp", "verdict"] == "slower"
    assert table.loc["network.name=dueling", "verdict"].startswith("ok")


def test_a_lock_step_cell_is_one_speed_sample(write_grid, tmp_path, capsys):
    grid = write_grid(GRID.replace(', "dueling"', ""), steps=200, seeds=3, eval_every=0)
    base = _run(grid, tmp_path / "a", lockstep=True)
    capsys.readouterr()
    assert main(["compare", str(base), str(base), "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert table["nspeed_base"].tolist() == [1] and not table["speed_judged"].any()
    assert table["verdict"].tolist() == ["ok, speed not judged"]
