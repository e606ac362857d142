"""Long-run reliability (issue 17): time limits, SIGTERM, validation before anything runs, damaged results, memory."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dqnbench
from dqnbench.builtin.executors import ProcessExecutor, SerialExecutor
from dqnbench.cli import main
from dqnbench.config.grid import plan_grid
from dqnbench.errors import DqnbenchError, GridError
from dqnbench.run.results import DamagedRunWarning
from dqnbench.run.runner import RunTask, lost_outputs, never_learns
from tests.extras import require
from tests.reliability_helpers import HangingPlugin, Timed, kill_grid, square_or_hang

ROOT = Path(__file__).resolve().parent.parent


# --- validation before anything runs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "value"),
    [
        ("[network]\nhidden = 64\n", "network.hidden", "got 64"),
        ('[optimizer]\nbetas = "fast"\n', "optimizer.betas", "fast"),
    ],
)
def test_a_param_of_the_wrong_type_exits_2_before_anything_runs(write_grid, tmp_path, capsys, extra, key, value):
    grid = write_grid(extra)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    for args in (["--dry-run"], ["--executor", "serial", "--out", str(tmp_path / "out")]):
        assert main(["run", "--grid", str(grid), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"{key}: " in err and value in err and '"' in err.split(key, 1)[1]  # names the component
    assert not (tmp_path / "out").exists()


def test_configs_that_can_never_learn_warn_once_per_cell_and_strict_refuses_them(write_grid, capsys):
    grid = write_grid(
        '[grid]\n"agent.learning_starts" = [5000, 10]\n"agent.batch_size" = [16, 256]\n[replay]\ncapacity = 100\n',
        steps=800,
        eval_every=400,
    )
    assert main(["run", "--grid", str(grid), "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 3  # learning_starts=10, batch_size=16 can learn
    assert sum("agent.learning_starts = 5000 >= experiment.total_steps = 800" in line for line in lines) == 2
    assert sum("agent.batch_size = 256 > replay.capacity = 100" in line for line in lines) == 2
    assert main(["run", "--grid", str(grid), "--dry-run", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "agent.learning_starts" in err and "--strict" in err
    with pytest.raises(GridError, match="strict"):
        dqnbench.run_grid(grid, "unused", strict=True, stream=io.StringIO())


def test_never_learns_names_eval_every_and_target_update(registry, tmp_path):
    raw = {
        "experiment": {"name": "x", "total_steps": 300, "eval_every": 500},
        "agent": {"learning_starts": 100, "batch_size": 16, "target_update": 1000},
    }
    (config,) = [c for _, _, c in plan_grid(raw, tmp_path / "g.toml", registry).cells]
    assert [key for key, _ in never_learns(config)] == ["experiment.eval_every"]
    raw["experiment"]["eval_every"] = 100
    (config,) = [c for _, _, c in plan_grid(raw, tmp_path / "g.toml", registry).cells]
    ((key, problem),) = never_learns(config)
    assert key == "agent.target_update" and "201 learn steps" in problem  # steps 99..299


# --- time limits ---------------------------------------------------------------------------------


def test_the_process_pool_stops_a_hung_run_and_restarts_the_others():
    pool = ProcessExecutor(workers=2)
    started = time.monotonic()
    try:
        outcomes = dict(pool.map_unordered(square_or_hang, [Timed(n, 1.5) for n in range(5)]))
    finally:
        pool.close()
    assert {k.n: v for k, v in outcomes.items() if k.n != 3} == {0: 0, 1: 1, 2: 4, 4: 16}
    assert isinstance(outcomes[Timed(3, 1.5)], TimeoutError)
    assert str(outcomes[Timed(3, 1.5)]) == "timed out after 1.5 s"
    assert time.monotonic() - started < 60


def test_a_hung_run_is_recorded_timed_out_and_the_grid_finishes(write_grid, tmp_path):
    grid = write_grid('[grid]\n"exploration.name" = ["hangs", "linear"]\n', steps=150, seeds=1, eval_every=150)
    grid.write_text(grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\ntimeout_s = 1"))
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", plugins=[HangingPlugin()], stream=io.StringIO(), plots=False
    )
    status = dict(zip(res.runs["exploration.name"], res.runs.status))
    assert status == {"hangs": "failed", "linear": "ok"}
    error = res.runs.set_index("exploration.name").at["hangs", "error"]
    assert error.startswith("timed out after 1 s")


def test_the_serial_executor_without_a_limit_runs_in_this_thread():
    (outcome,) = SerialExecutor().map_unordered(lambda item: item.n + 1, [Timed(1)])
    assert outcome == (Timed(1), 2)


def test_a_ray_worker_killed_for_memory_is_recorded_with_the_reason(write_grid, registry):
    ray_exceptions = require("ray.exceptions")
    plan = dqnbench.run.runner.prepare(write_grid(steps=150, seeds=1))[0]
    task = RunTask(tuple(plan.runs))
    (output,) = lost_outputs(
        task, ray_exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
    )
    assert output.status == "failed" and output.record["error"].startswith("the executor lost this run: out of memory")
    assert "running low on memory" in output.record["error"]


# --- SIGTERM -------------------------------------------------------------------------------------

GRID = kill_grid("term")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_sigterm_keeps_finished_runs_releases_the_lock_and_exits_143(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dqnbench", "run", "--grid", str(grid), "--out", str(out)]
    # --no-fuse: one group per cell, so both workers train (fused, this tiny grid is one group)
    proc = subprocess.Popen(
        [*command, "--workers", "2", "--quiet", "--no-plots", "--no-fuse"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    root = out / "term" / "runs"
    deadline, worker_killed = time.time() + 180, False
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        workers = [p for p in children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        if not worker_killed and len(workers) == 2 and (out / "term" / ".progress").is_dir():
            time.sleep(1.0)
            os.kill(workers[0], signal.SIGTERM)  # a scheduler preempting one worker: only its run restarts
            worker_killed = True
        if worker_killed and len([p for p in root.glob("*") if not p.name.startswith(".")]) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().count("\n") == 0 and stderr.startswith("dqnbench: terminated (SIGTERM)")
    assert "leaked" not in stderr and "Traceback" not in stderr
    assert not (out / "term" / ".lock").exists()
    partial = dqnbench.load_results(out / "term")
    assert set(partial.runs.status) == {"ok"} and 2 <= len(partial.runs) < 6  # the preempted worker's run reran
    assert not children(proc.pid)


# --- damaged results -----------------------------------------------------------------------------


def test_damaged_runs_are_named_left_out_and_recomputed(write_grid, tmp_path, capsys):
    grid = write_grid(steps=150, seeds=4)
    out = tmp_path / "out"
    res = dqnbench.run_grid(grid, out, executor="serial", stream=io.StringIO(), plots=False)
    ids = list(res.runs.run_id)
    steps = res.run_dir(ids[0]) / "steps.parquet"
    steps.write_bytes(steps.read_bytes()[:-100])  # truncated
    (res.run_dir(ids[1]) / "meta.json").write_text("")  # empty
    (res.run_dir(ids[2]) / "weights.pt").unlink()  # missing
    with pytest.warns(DamagedRunWarning) as caught:
        partial = dqnbench.load_results(out / "tiny")
    assert list(partial.runs.run_id) == [ids[3]] and set(partial.steps.run_id) == {ids[3]}
    named = " ".join(str(w.message) for w in caught)
    assert str(steps) in named and "meta.json" in named and "weights.pt" in named

    for command in (["report", str(out / "tiny")], ["plot", str(out / "tiny"), "--out", str(tmp_path / "p")]):
        assert main(command) == 0
        err = capsys.readouterr().err
        assert err.count("dqnbench: warning: run ") == 3 and "Traceback" not in err
    assert main(["compare", str(out / "tiny"), str(out / "tiny")]) in (0, 1)
    assert "Traceback" not in capsys.readouterr().err

    code = main(["run", "--grid", str(grid), "--out", str(out), "--executor", "serial", "--quiet", "--no-plots"])
    assert code == 0 and "1 of 4 runs already finished" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedRunWarning)
        assert set(dqnbench.load_results(out / "tiny").runs.status) == {"ok"}


def test_asked_for_a_damaged_run_alone_report_exits_2(write_grid, tmp_path, capsys):
    res = dqnbench.run_grid(
        write_grid(steps=150, seeds=1), tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False
    )
    (res.run_dir(res.runs.run_id[0]) / "evals.parquet").write_bytes(b"PAR1")
    assert main(["report", str(res.path)]) == 2
    err = capsys.readouterr().err
    assert (
        "evals.parquet" in err and "Traceback" not in err and err.strip().splitlines()[-1].startswith("dqnbench: error")
    )


# --- fuzzing the new keys ------------------------------------------------------------------------

timeouts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timeout=timeouts)
def test_any_timeout_s_is_accepted_or_a_user_error(timeout, registry, tmp_path):
    raw = {"experiment": {"name": "fuzz", "timeout_s": timeout}}
    try:
        plan = plan_grid(raw, tmp_path / "fuzz.toml", registry)
    except DqnbenchError as exc:
        assert "experiment.timeout_s" in str(exc)
        return
    value = plan.cells[0][2].experiment.timeout_s
    assert isinstance(value, float) and 0 <= value <= 10**9


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    timeout=st.sampled_from(["-1", "0", "1.5", "nan", "inf", '"x"', "[1]", "true", "1e400"]),
    strict=st.booleans(),
    starts=st.sampled_from([0, 100, 5000]),
)
def test_the_cli_answers_timeout_s_and_strict_with_exit_0_or_one_line_exit_2(
    timeout, strict, starts, tmp_path_factory, capsys
):
    path = tmp_path_factory.mktemp("fuzz") / "grid.toml"
    path.write_text(
        f'[experiment]\nname = "f"\ntotal_steps = 300\neval_every = 100\ntimeout_s = {timeout}\n'
        f"[agent]\nlearning_starts = {starts}\nbatch_size = 16\ntarget_update = 10\n"
    )
    code = main(["run", "--grid", str(path), "--dry-run", *(["--strict"] if strict else [])])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2) and err.count("\n") <= 1
    if code == 2:
        assert err.startswith("dqnbench: error:")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(every=timeouts)
def test_any_checkpoint_every_is_accepted_or_a_user_error(every, registry, tmp_path):
    raw = {"experiment": {"name": "fuzz", "checkpoint_every": every}}
    try:
        plan = plan_grid(raw, tmp_path / "fuzz.toml", registry)
    except DqnbenchError as exc:
        assert "experiment.checkpoint_every" in str(exc) and "\n" not in str(exc)
        return
    value = plan.cells[0][2].experiment.checkpoint_every
    assert isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9  # 0: no checkpoints
    assert (
        plan.runs[0].run_id == plan_grid({"experiment": {"name": "fuzz"}}, tmp_path / "f.toml", registry).runs[0].run_id
    )
