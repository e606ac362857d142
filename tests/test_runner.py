"""Running grids: results tables, failure isolation, resume, atomic writes."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import torch

import dqnbench
from dqnbench.run.results import runs_dir
from tests import plugin_fixtures


def run(grid, out, **kwargs):
    kwargs.setdefault("executor", "serial")
    return dqnbench.run_grid(grid, out, load_entrypoints=False, stream=io.StringIO(), **kwargs, plots=False)


def test_results_tables_match_the_contract(write_grid, tmp_path):
    grid = write_grid('[grid]\n"agent.double" = [false, true]\n', steps=300, eval_every=150)
    res = run(grid, tmp_path / "out")
    assert len(res.runs) == 4 and set(res.runs.status) == {"ok"}
    assert sorted(res.runs["learner.double"].unique()) == [False, True]  # agent.double is the dqn learner's param
    for column in (
        "run_id",
        "seed",
        "status",
        "network.name",
        "agent.lr",
        "learner.name",
        "learner.double",
        "learner.loss",
        "optimizer.name",
        "env.name",
        "wall_s",
        "steps_per_s",
        "final_return",
        "lockstep_members",
    ):
        assert column in res.runs.columns
    assert list(res.steps.columns) == [
        "run_id", "step", "episode", "reward", "t_act", "t_env", "t_learn", "loss", "q_max", "epsilon"
    ]  # fmt: skip
    assert list(res.episodes.columns)[:5] == ["run_id", "episode", "step", "return", "length"]
    assert {"run_id", "step", "mean_return", "returns"} <= set(res.evals.columns)
    assert len(res.steps) == 4 * 300
    final = res.evals[res.evals.step == 300].set_index("run_id").mean_return
    pd.testing.assert_series_equal(res.runs.set_index("run_id").final_return, final, check_names=False)
    loaded = dqnbench.load_results(tmp_path / "out" / "tiny")
    pd.testing.assert_frame_equal(loaded.runs, res.runs)
    run_id = res.runs.run_id[0]
    weights = torch.load(runs_dir(res.path) / run_id / "weights.pt", weights_only=True)
    assert "out.weight" in weights
    record = res.record(run_id)
    assert record["versions"]["dqnbench"] == dqnbench.__version__
    assert record["versions"]["components"]["network"] == {
        "name": "mlp",
        "distribution": "dqnbench",
        "version": dqnbench.__version__,
        "plugin": "dqnbench.builtin.networks",
    }
    assert record["config"]["agent"]["lr"] == 1e-3


def test_failing_runs_are_recorded_with_their_component_and_the_rest_finish(write_grid, tmp_path):
    grid = write_grid(
        '[grid]\n"network.name" = ["mlp", "broken", "wrong_shape", "squeeze_q"]\n[network]\nname = "mlp"\n',
        steps=200,
        seeds=1,
    )
    text = grid.read_text().replace("[network]\nhidden = [16]\n", "")
    grid.write_text(text)
    res = run(grid, tmp_path / "out", plugins=[plugin_fixtures])
    status = dict(zip(res.runs["network.name"], res.runs.status))
    assert status == {"mlp": "ok", "broken": "failed", "wrong_shape": "failed", "squeeze_q": "failed"}
    errors = dict(zip(res.runs["network.name"], res.runs.error))
    assert 'network "broken" from tests' in errors["broken"] and "cannot build this network" in errors["broken"]
    assert 'network "wrong_shape"' in errors["wrong_shape"] and "expected (2, 2)" in errors["wrong_shape"]
    # wrong only at the acting batch of 1: named as the network, not as the exploration that met it first
    assert 'network "squeeze_q"' in errors["squeeze_q"] and "expected (1, 2)" in errors["squeeze_q"]
    failed_id = res.runs.run_id[res.runs["network.name"] == "broken"].item()
    assert "Traceback" in res.record(failed_id)["traceback"]


def test_component_raising_mid_run_and_diverging_loss(write_grid, tmp_path):
    grid = write_grid('[grid]\n"replay.name" = ["uniform", "exploding"]\n', steps=200, seeds=1)
    res = run(grid, tmp_path / "out", plugins=[plugin_fixtures])
    row = res.runs.set_index("replay.name").loc["exploding"]
    assert row.status == "failed" and 'replay "exploding"' in row.error and "sampling exploded" in row.error
    grid = write_grid('[network]\nname = "nan_net"\n', steps=200, seeds=1, name="nan")
    text = grid.read_text().replace("[network]\nhidden = [16]\n", "")
    grid.write_text(text)
    res = run(grid, tmp_path / "out", plugins=[plugin_fixtures])
    assert res.runs.status.tolist() == ["diverged"]
    assert res.record(res.runs.run_id[0])["diverged_step"] == 99  # the first learn step (100 stored)


def test_rerun_skips_finished_runs_and_retries_failed_ones(write_grid, tmp_path):
    grid = write_grid(steps=200, seeds=2)
    first = run(grid, tmp_path / "out")
    files = {p: p.stat().st_mtime_ns for p in runs_dir(first.path).rglob("*.parquet")}
    stream = io.StringIO()
    second = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", load_entrypoints=False, stream=stream, plots=False
    )
    assert "2 of 2 runs already finished" in stream.getvalue()
    assert {p: p.stat().st_mtime_ns for p in runs_dir(first.path).rglob("*.parquet")} == files
    pd.testing.assert_frame_equal(first.steps, second.steps)


def test_half_written_runs_are_invisible_and_redone(write_grid, tmp_path):
    grid = write_grid(steps=200, seeds=1)
    res = run(grid, tmp_path / "out")
    run_id = res.runs.run_id[0]
    (runs_dir(res.path) / f".tmp-{run_id}-deadbeef").mkdir()  # what a kill mid-write leaves
    (runs_dir(res.path) / "partial").mkdir()  # a directory without meta.json
    again = dqnbench.load_results(res.path)
    assert again.runs.run_id.tolist() == [run_id]


@pytest.mark.parametrize("cells", [1, 2])
def test_process_executor_matches_serial(write_grid, tmp_path, cells):
    """Two cells of a tiny network form one fused pool of 4 runs that stays one group on 2 workers (a learn
    step under ``SPLIT_MIN_MACS`` is not split): what serial gives. One cell splits its 2 seeds into two
    lock-step groups of one (plain runs, one per worker): what serial gives with ``lockstep_group = 1``."""
    extra = '[grid]\n"agent.lr" = [1e-3, 2e-3]\n' if cells == 2 else ""
    grid = write_grid(steps=200, seeds=2, extra=extra)
    parallel = run(grid, tmp_path / "process", executor="process", workers=2)
    if cells == 1:
        grid.write_text(grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\nlockstep_group = 1"))
    serial = run(grid, tmp_path / "serial")
    cols = ["run_id", "step", "reward", "loss"]
    key = ["run_id", "step"]
    pd.testing.assert_frame_equal(
        serial.steps[cols].sort_values(key).reset_index(drop=True),
        parallel.steps[cols].sort_values(key).reset_index(drop=True),
    )


def test_unknown_executor_is_a_user_error(write_grid, tmp_path):
    with pytest.raises(dqnbench.DqnbenchError, match='unknown executor "slurm"'):
        run(write_grid(), tmp_path / "out", executor="slurm")


def test_the_process_executor_from_a_script_on_stdin_says_why_it_cannot_spawn(write_grid, tmp_path):
    """``python - <<EOF`` with executor="process": spawned workers cannot re-import a main script read from stdin.

    Every run was once recorded as lost ("BrokenProcessPool"), the cause only on
    stderr; now one clear error before any run, and the directory stays usable.
    """
    import subprocess
    import sys

    grid = write_grid(steps=100, seeds=2, eval_every=0)
    script = (
        "import dqnbench\n"
        "try:\n"
        f"    dqnbench.run_grid({str(grid)!r}, {str(tmp_path / 'out')!r}, executor='process', plots=False)\n"
        "except dqnbench.DqnbenchError as exc:\n"
        "    print('ERROR', exc)\n"
    )
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120)
    assert "ERROR the process executor starts workers with spawn" in done.stdout, done.stdout + done.stderr
    assert "'<stdin>' is not a file" in done.stdout and 'executor="serial"' in done.stdout
    assert run(grid, tmp_path / "out").runs.status.eq("ok").all()  # nothing half-done, the lock released
