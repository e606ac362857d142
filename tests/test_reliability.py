"""Nothing is lost under kills, interrupts, concurrent runs, failing disks and bad input."""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dqnbench
import dqnbench.plugin.registry
from dqnbench.builtin.executors import ProcessExecutor
from dqnbench.cli import main
from dqnbench.config.grid import load_grid, plan_grid
from dqnbench.errors import DqnbenchError, ResultsError
from dqnbench.run.results import runs_dir
from tests.reliability_helpers import interruptible, kill_grid, square_or_die

GRID = kill_grid("kill")


def start(grid: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dqnbench",
            "run",
            "--grid",
            str(grid),
            "--out",
            str(out),
            "--workers",
            "2",
            "--quiet",
            "--no-plots",
            "--no-fuse",  # one group per cell, so a kill after the first runs leaves others unfinished
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=interruptible,
    )


def wait_for_runs(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    root = out / "kill" / "runs"
    while time.time() < deadline:
        done = [p for p in root.glob("*") if not p.name.startswith(".")] if root.is_dir() else []
        if len(done) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("runs did not finish in time")


def snapshot(out: Path) -> dict[str, bytes]:
    root = out / "kill" / "runs"
    files = (p for p in root.rglob("*.parquet") if not p.relative_to(root).parts[0].startswith("."))
    return {str(p.relative_to(root)): p.read_bytes() for p in files}  # hidden: a killed write's leftovers


def comparable(res: dqnbench.Results) -> dict[str, pd.DataFrame]:
    key = ["run_id", "step"]
    return {
        "steps": res.steps.drop(columns=["t_act", "t_env", "t_learn"]).sort_values(key).reset_index(drop=True),
        "evals": res.evals.sort_values(key).reset_index(drop=True),
        "episodes": res.episodes.sort_values(key).reset_index(drop=True),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted grid, for comparison."""
    root = tmp_path_factory.mktemp("reference")
    grid = root / "grid.toml"
    grid.write_text(GRID)
    return dqnbench.run_grid(grid, root / "out", workers=2, stream=io.StringIO(), plots=False, fuse=False)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_grid_resumes_to_the_same_results_without_recomputing(tmp_path, reference, sig):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "out"
    proc = start(grid, out)
    wait_for_runs(out, 2, proc)
    if sig == signal.SIGKILL:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: workers must not outlive it
    else:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "rerun the same command" in stderr
        assert "Traceback" not in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    before = snapshot(out)
    partial = dqnbench.load_results(out / "kill")  # never sees half a run
    assert set(partial.runs.status) <= {"ok"} and 2 <= len(partial.runs) < 6
    assert partial.steps.groupby("run_id").size().eq(1500).all()

    rerun = start(grid, out)
    rerun_stdout, rerun_stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, rerun_stderr
    assert f"{len(partial.runs)} of 6 runs already finished" in rerun_stdout
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # finished runs not recomputed
    final = dqnbench.load_results(out / "kill")
    assert sorted(final.runs.run_id) == sorted(reference.runs.run_id)  # each run exactly once
    assert not [p for p in (out / "kill" / "runs").iterdir() if p.name.startswith(".")]
    got, want = comparable(final), comparable(reference)
    for table in want:
        pd.testing.assert_frame_equal(got[table], want[table])
    for run_id in reference.runs.run_id:
        for name, tensor in reference.weights(run_id).items():
            assert torch.equal(final.weights(run_id)[name], tensor)


def test_a_dying_worker_loses_only_its_own_item():
    pool = ProcessExecutor(workers=2)
    try:
        outcomes = dict(pool.map_unordered(square_or_die, range(6)))
    finally:
        pool.close()
    assert {k: v for k, v in outcomes.items() if k != 3} == {0: 0, 1: 1, 2: 4, 4: 16, 5: 25}
    assert isinstance(outcomes[3], Exception) and "died" in str(outcomes[3])


def test_second_run_on_the_same_directory_is_refused_and_a_stale_lock_is_taken_over(tmp_path, write_grid):
    grid = write_grid(steps=150, seeds=1)
    experiment = tmp_path / "out" / "tiny"
    experiment.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from tests.reliability_helpers import hold_lock_forever; hold_lock_forever({str(experiment)!r})",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsError, match=rf"in use by another dqnbench run \(pid {holder.pid}"):
            dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False)
    finally:
        holder.kill()
        holder.wait()
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False
    )  # lock taken over
    assert res.runs.status.tolist() == ["ok"]


def test_write_failure_fails_clearly_and_keeps_earlier_results(tmp_path, write_grid, monkeypatch, capsys):
    grid = write_grid(steps=150, seeds=3)
    out = tmp_path / "out"
    from dqnbench.run import results as results_module

    real_save = results_module.torch.save
    calls = []

    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 2:
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(results_module.torch, "save", full_disk)
    code = main(["run", "--grid", str(grid), "--out", str(out), "--executor", "serial", "--quiet", "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    kept = dqnbench.load_results(out / "tiny")
    assert len(kept.runs) == 1 and kept.runs.status.tolist() == ["ok"]
    assert not [p for p in runs_dir(out / "tiny").iterdir() if p.name.startswith(".")]


def test_saved_weights_are_never_unpickled(tmp_path, write_grid):
    res = dqnbench.run_grid(
        write_grid(steps=150, seeds=1), tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False
    )
    run_id = res.runs.run_id[0]

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(res.run_dir(run_id) / "weights.pt", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(pickle.UnpicklingError):
        res.weights(run_id)
    assert not (tmp_path / "pwned").exists()


def test_a_changed_grid_does_not_mix_old_runs_into_the_current_ones(tmp_path, write_grid):
    out = tmp_path / "out"
    old = dqnbench.run_grid(write_grid(steps=150, seeds=1), out, executor="serial", stream=io.StringIO(), plots=False)
    new = dqnbench.run_grid(
        write_grid('[grid]\n"agent.lr" = [0.01]\n', steps=150, seeds=1),
        out,
        executor="serial",
        stream=io.StringIO(),
        plots=False,
    )
    assert set(new.runs.run_id).isdisjoint(old.runs.run_id)
    assert len(dqnbench.load_results(out / "tiny").runs) == 1
    assert len(dqnbench.load_results(out / "tiny", all_runs=True).runs) == 2


# --- fuzzing the grid loader ---------------------------------------------------------------------

KEYS = [
    "experiment",
    "agent",
    "network",
    "replay",
    "exploration",
    "grid",
    "name",
    "env",
    "total_steps",
    "seeds",
    "lr",
    "gamma",
    "hidden",
    "capacity",
    "alpha",
    "prioritized",
    "agent.lr",
    "network.name",
    "network.hidden",
    "replay.prioritized.alpha",
    "experiment.env",
    "double",
    "loss",
    "ünïcödé",
    "a.b.c",
    "",
]
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["mlp", "uniform", "linear", "CartPole-v1", "../x", "/abs", "a/b"]),
    st.dates(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=12,
)
grids = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def with_name(raw: dict) -> dict:
    experiment = raw.get("experiment")
    if isinstance(experiment, dict):
        experiment.setdefault("name", "fuzz")
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=grids.map(with_name))
def test_loading_any_parsed_grid_raises_only_user_errors(raw, registry, tmp_path):
    try:
        plan_grid(raw, tmp_path / "fuzz.toml", registry)
    except DqnbenchError:
        pass


toml_text = st.one_of(
    st.text(max_size=200),
    st.builds(lambda a, b: f'[experiment]\nname = "{a}"\n{b}', st.text(max_size=20), st.text(max_size=120)),
    st.builds(
        lambda k, v: f'[experiment]\nname = "x"\n[grid]\n"{k}" = {v}\n',
        st.sampled_from(KEYS),
        st.sampled_from(["[]", "[1, 1]", "[[1], [2]]", "{a = 1}", "[1e400]", '["mlp", "x"]', "1", "[-1]"]),
    ),
    st.builds(lambda n: "[experiment]\nname = 'x'\n" + "[a." * n + "]\n", st.integers(1, 50)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=toml_text)
def test_cli_never_prints_a_traceback_for_a_bad_grid_file(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "grid.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else path.write_bytes(
        text.encode("utf-8", "surrogatepass")
    )
    try:
        load_grid(path, dqnbench.plugin.registry.load_registry(load_entrypoints=False))
    except DqnbenchError:
        code = main(["run", "--grid", str(path), "--dry-run"])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1
