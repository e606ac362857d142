"""The ``ray`` executor keeps the promises of the local ones, on a real Ray cluster.

A module-scoped fixture starts a Ray head and one worker node on 127.0.0.1 (each
``ray start --block`` in its own session, 1 CPU each, a private temp dir), so the
grid really crosses nodes; teardown terminates exactly those two process groups
(``ray stop --force`` would also stop any other Ray on the machine). Tests that
need Ray skip, with the reason, only where the ``dqnbench[ray]`` extra is not installed.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

import dqnbench
from dqnbench.cli import main
from dqnbench.config.grid import load_grid
from dqnbench.devtools.check import _check_executor
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import plan_failed
from tests import plugin_fixtures
from tests.conftest import TINY_EXPERIMENT
from tests.extras import require
from tests.reliability_helpers import interruptible

NO_RAY = 'the "ray" executor needs the optional extra: pip install "dqnbench[ray]"'
ROOT = Path(__file__).resolve().parent.parent
# the shared tiny grid, plus per-test tables; one lock-step group per cell (no fusing, whose groups follow the
# executor's slots), so serial and the cluster group alike and a killed worker takes exactly one cell's group
GRID = TINY_EXPERIMENT.replace("[experiment]", "[experiment]\nfuse = false", 1) + "{extra}\n"
#: a kill must land while a run is still training: a few seconds per run on a busy 2-core machine
LONG_STEPS = 2500


# --- a real cluster on 127.0.0.1 ---------------------------------------------------------------


@dataclass
class Cluster:
    address: str
    processes: list[subprocess.Popen]

    @property
    def session_ids(self) -> set[int]:
        """Session ids of the ``ray start`` processes: every daemon of this cluster runs in one of them."""
        return {p.pid for p in self.processes}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(base: Path) -> Path:
    """Ray puts Unix sockets under its temp dir; their paths must stay under ~107 bytes."""
    if len(str(base)) > 40:
        base = Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="ray-", dir=base))


def ray_start(args: list[str], temp_dir: Path, log: Path, num_cpus: int = 1, timeout: float = 90) -> subprocess.Popen:
    """``ray start ... --block`` from this venv in a new session; return once the node is up."""
    # no token auth: a private cluster on 127.0.0.1 (Ray >= 2.5x turns it on once ~/.ray/auth_token exists)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--num-cpus", str(num_cpus), "--block"]
    command += ["--temp-dir", str(temp_dir), "--disable-usage-stats"]
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + timeout
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            stop([proc])
            pytest.fail(f"`{' '.join(command)}` did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def worker_processes(session_ids: set[int], title: bytes = b"ray::") -> list[int]:
    """Pids of the Ray worker processes of our nodes whose title starts with ``title``.

    Ray names a worker ``ray::IDLE``, or ``ray::<task name>`` while it executes a
    task; its parent is the raylet of its node, which lives in the session of
    that node's ``ray start``. Workers of any other Ray on the machine are left alone.
    """
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(title):
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.getsid(ppid) in session_ids:
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # the process went away while we looked
    return pids


def stop(processes: list[subprocess.Popen]) -> None:
    """Kill each node's process group (its daemons) and the workers its raylet started.

    SIGTERM would make each node drain for up to 30 s; ``ray stop --force`` would
    also stop every other Ray on the machine.
    """
    workers = worker_processes({p.pid for p in processes})
    for proc in reversed(processes):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A Ray head plus one worker node on 127.0.0.1, 1 CPU each, stopped at the end of the module."""
    require("ray")
    temp_dir = short_temp_dir(tmp_path_factory.getbasetemp())
    logs = tmp_path_factory.mktemp("ray-logs")
    port = free_port()
    processes: list[subprocess.Popen] = []
    try:
        head_args = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard=false"]
        head_args += ["--dashboard-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port())]
        head_args += ["--object-store-memory", str(200 * 2**20)]
        processes.append(ray_start(head_args, temp_dir, logs / "head.log"))
        worker_args = ["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1"]
        worker_args += ["--dashboard-agent-listen-port", str(free_port()), "--object-store-memory", str(100 * 2**20)]
        processes.append(ray_start(worker_args, temp_dir, logs / "worker.log"))
        yield Cluster(f"127.0.0.1:{port}", processes)
    finally:
        import ray

        if ray.is_initialized():  # a test that failed half-way may have left its driver connected
            ray.shutdown()
        stop(processes)
        shutil.rmtree(temp_dir, ignore_errors=True)


def write(path: Path, name: str, steps: int = 300, seeds: int = 2, eval_every: int = 150, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(GRID.format(name=name, steps=steps, seeds=seeds, eval_every=eval_every, extra=extra))
    return path


def run(grid: Path, out: Path, executor: str, **kwargs) -> dqnbench.Results:
    return dqnbench.run_grid(
        grid, out, executor=executor, load_entrypoints=False, stream=io.StringIO(), **kwargs, plots=False
    )


def assert_same_results(got: dqnbench.Results, want: dqnbench.Results) -> None:
    """Same runs, steps (timings aside), evaluations, episodes and final weights."""
    key = ["run_id", "step"]
    assert sorted(got.runs.run_id) == sorted(want.runs.run_id)
    assert set(got.runs.status) == {"ok"}
    tables = {
        "steps": lambda r: r.steps.drop(columns=["t_act", "t_env", "t_learn"]),
        "evals": lambda r: r.evals,
        "episodes": lambda r: r.episodes,
    }
    for table in tables.values():
        pd.testing.assert_frame_equal(
            table(got).sort_values(key).reset_index(drop=True), table(want).sort_values(key).reset_index(drop=True)
        )
    for run_id in want.runs.run_id:
        for name, tensor in want.weights(run_id).items():
            assert torch.equal(got.weights(run_id)[name], tensor), (run_id, name)


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory) -> tuple[Path, dqnbench.Results]:
    """Two seeds × two learning rates, and their results with the serial executor."""
    root = tmp_path_factory.mktemp("tiny")
    grid = write(root / "grid.toml", "tiny", extra='[grid]\n"agent.lr" = [1e-3, 3e-3]\n')
    return grid, run(grid, root / "serial", "serial")


# --- without the extra ---------------------------------------------------------------------------


def test_without_ray_installed_the_executor_is_a_one_line_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    grid = write(tmp_path / "grid.toml", "tiny", steps=150, seeds=1)
    with pytest.raises(dqnbench.DqnbenchError, match=r'needs Ray: pip install "dqnbench\[ray\]"'):
        run(grid, tmp_path / "out", "ray")
    code = main(["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "dqnbench[ray]"' in err and "Traceback" not in err


def test_an_unreachable_address_fails_fast_with_a_clear_message(tmp_path, capsys):
    require("ray")
    grid = write(tmp_path / "grid.toml", "tiny", steps=150, seeds=1)
    argv = ["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray", "--quiet"]
    started = time.time()
    code = main([*argv, "--address", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the Ray head at 127.0.0.1:" in err and "Traceback" not in err
    assert time.time() - started < 30


class FakeRay:
    """Just enough of the ``ray`` module to drive :class:`RayExecutor` through a lost cluster."""

    def __init__(self, waits_before_loss: int) -> None:
        self.waits_left, self.cancelled, self.shut_down = waits_before_loss, [], False

    def remote(self, fn, *args):
        """``ray.remote(fn)`` gives the task handle (the fake itself); ``handle.remote(fn, item, threads)`` a ref."""
        if not args:
            return self
        item, _ = args
        if item == "unpicklable":
            raise TypeError("cannot pickle this item")
        return (fn, item)

    def options(self, **options):
        return self

    def wait(self, refs, num_returns, timeout):
        if self.waits_left == 0:
            raise OSError("Broken pipe")
        self.waits_left -= 1
        return refs[:1], refs[1:]

    def get(self, ref):
        fn, item = ref
        return fn(item)

    def cancel(self, ref, force):
        self.cancelled.append(ref)

    def is_initialized(self):
        return not self.shut_down

    def shutdown(self):
        self.shut_down = True


def test_a_lost_cluster_reports_every_run_left_and_a_bad_item_only_itself():
    from dqnbench.builtin.ray_executor import ClusterLost, RayExecutor

    fake = FakeRay(waits_before_loss=1)
    executor = RayExecutor(fake, owns_ray=True, workers=2, num_cpus=1, max_retries=1, runtime_env=None)
    outcomes = list(executor.map_unordered(abs, [-1, "unpicklable", -2, -3, -4]))
    executor.close()
    lost = [item for item, outcome in outcomes if isinstance(outcome, ClusterLost)]
    assert lost == [-2, -3, -4]  # in flight when the cluster went, then still queued
    assert all(
        "lost the Ray cluster: OSError: Broken pipe" in str(o) for _, o in outcomes if isinstance(o, ClusterLost)
    )
    assert (-1, 1) in outcomes and len(outcomes) == 5
    assert isinstance(dict(outcomes)["unpicklable"], TypeError)  # only that item fails
    assert fake.shut_down  # it connected, so it disconnects


# --- on the cluster ------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_results_equal_serial_results_for_the_same_seeds(cluster, tiny_grid, tmp_path):
    grid, serial = tiny_grid
    got = run(grid, tmp_path / "ray", "ray", executor_options={"address": cluster.address})
    assert_same_results(got, serial)
    assert not [p for p in (tmp_path / "ray" / "tiny" / "runs").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_cell_with_more_seeds_than_a_node_spreads_its_lockstep_groups_over_the_cluster(cluster, tmp_path):
    """One cell of 4 seeds on a cluster of two 1-CPU nodes: two lock-step groups of 2, running at once."""
    grid = write(tmp_path / "grid.toml", "spread", steps=4_000, seeds=4, eval_every=0)
    res = run(grid, tmp_path / "out", "ray", executor_options={"address": cluster.address})
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    groups = {}
    for run_id in res.runs.run_id:
        record = res.record(run_id)
        assert record["lockstep"]["members"] == 2
        start = record["started_at"]
        groups[tuple(record["lockstep"]["seeds"])] = (record["pid"], start, start + 2 * record["wall_s"])
    assert sorted(groups) == [(0, 1), (2, 3)]
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = groups.values()
    assert pid_a != pid_b
    assert start_a < end_b and start_b < end_a, groups  # the two groups trained at the same time


@pytest.mark.slow
def test_minatar_ids_run_on_ray_workers_without_registration_code(cluster, tmp_path):
    """The env component registers MinAtar in each Ray worker: nothing the driver registered travels."""
    require("minatar")
    grid = tmp_path / "minatar.toml"
    grid.write_text(
        '[experiment]\nname = "minatar"\nenv = "MinAtar/Breakout-v1"\ntotal_steps = 200\nseeds = 2\n'
        "eval_every = 0\neval_episodes = 1\n[agent]\nlearning_starts = 64\nbatch_size = 16\n"
        "[network]\nhidden = [16]\n[replay]\ncapacity = 256\n"
    )
    res = run(grid, tmp_path / "out", "ray", executor_options={"address": cluster.address})
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    assert res.record(res.runs.run_id[0])["obs_shape"] == [4, 10, 10]


@pytest.mark.slow
def test_cli_with_address_runs_the_grid_on_the_cluster(cluster, tiny_grid, tmp_path):
    grid, serial = tiny_grid
    argv = ["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray"]
    argv += ["--address", cluster.address, "--quiet", "--no-plots"]
    done = subprocess.run(
        [sys.executable, "-m", "dqnbench", *argv], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "[4/4 runs]" in done.stdout and "tiny: 4 runs" in done.stdout  # progress and summary, as locally
    assert_same_results(dqnbench.load_results(tmp_path / "out" / "tiny"), serial)


@pytest.mark.slow
def test_the_contract_check_passes_on_ray_address_from_the_environment(cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # no address option: Ray's own convention applies
    _check_executor(load_registry(load_entrypoints=False).get("executor", "ray"), None)  # raises if broken


@pytest.mark.slow
def test_a_raising_run_is_recorded_failed_and_the_others_finish(cluster, tmp_path):
    grid = write(
        tmp_path / "grid.toml", "broken", steps=150, seeds=1, extra='[grid]\n"network.name" = ["mlp", "broken"]'
    )
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    res = run(grid, tmp_path / "out", "ray", executor_options={"address": cluster.address}, plugins=[plugin_fixtures])
    status = dict(zip(res.runs["network.name"], res.runs.status))
    assert status == {"mlp": "ok", "broken": "failed"}
    error = res.runs.set_index("network.name").error["broken"]
    assert 'network "broken" from tests' in error and "cannot build this network" in error


def kill_one_running_task(cluster: Cluster, grid_thread: threading.Thread, timeout: float = 60) -> int:
    """SIGKILL one worker in the middle of a run, as the OOM killer or a lost node would."""
    deadline = time.time() + timeout
    while time.time() < deadline and grid_thread.is_alive():
        pids = worker_processes(cluster.session_ids, b"ray::dqnbench_run")
        if pids:
            time.sleep(0.3)  # into the run: past imports and environment setup
            if pids[0] in worker_processes(cluster.session_ids, b"ray::dqnbench_run"):
                os.kill(pids[0], signal.SIGKILL)
                return pids[0]
        time.sleep(0.05)
    pytest.fail("no dqnbench run was seen executing on the cluster")


def run_in_thread(grid: Path, out: Path, options: dict, **kwargs) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["results"] = run(grid, out, "ray", executor_options=options, **kwargs)
        except BaseException as exc:  # reported by the test, not lost in the thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.slow
@pytest.mark.parametrize("max_retries", [1, 0], ids=["default-retry-once", "no-retry"])
def test_a_killed_worker_does_not_stop_the_grid(cluster, tmp_path, max_retries):
    """Default: the killed run is rerun by Ray and succeeds. With max_retries=0 it is recorded
    failed, every other run finishes, and rerunning the command completes just that run.

    Three cells of one seed, not fused, so each run is its own task (a fused pool of a network this small is
    one task: a killed worker would take all three runs with it).
    """
    extra = '[grid]\n"agent.lr" = [1e-3, 2e-3, 3e-3]\n'
    grid = write(tmp_path / "grid.toml", "kill", steps=LONG_STEPS, seeds=1, eval_every=0, extra=extra)
    out = tmp_path / "out"
    thread, outcome = run_in_thread(grid, out, {"address": cluster.address, "max_retries": max_retries}, fuse=False)
    kill_one_running_task(cluster, thread)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the grid did not finish after a worker was killed"
    assert "error" not in outcome, outcome.get("error")
    res = outcome["results"]
    assert len(res.runs) == 3
    assert res.steps.groupby("run_id").size().eq(LONG_STEPS).all()  # only complete runs are written
    if max_retries:
        assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()  # the killed run was rerun by Ray
        return
    assert sorted(res.runs.status) == ["failed", "ok", "ok"], res.runs.error.tolist()
    error = res.runs.set_index("status").error["failed"]
    assert "the executor lost this run" in error and "WorkerCrashedError" in error, error
    assert plan_failed(res, load_grid(grid, load_registry(load_entrypoints=False))) == [
        res.runs.run_id[res.runs.status == "failed"].item()
    ]  # what `dqnbench run` turns into exit status 1
    stream = io.StringIO()
    again = dqnbench.run_grid(
        grid,
        out,
        executor="ray",
        executor_options={"address": cluster.address},
        load_entrypoints=False,
        stream=stream,
        plots=False,
        fuse=False,
    )
    assert "2 of 3 runs already finished" in stream.getvalue()
    assert set(again.runs.status) == {"ok"} and again.steps.groupby("run_id").size().eq(LONG_STEPS).all()


def finished(runs: Path) -> list[Path]:
    """Runs written so far (hidden entries are writes in progress)."""
    return [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.is_dir() else []


@pytest.mark.slow
def test_ctrl_c_exits_130_keeps_finished_runs_and_stops_the_cluster_tasks(cluster, tmp_path):
    extra = '[grid]\n"agent.lr" = [1e-3, 2e-3, 3e-3, 4e-3]\n'
    grid = write(tmp_path / "grid.toml", "interrupt", steps=LONG_STEPS, seeds=1, eval_every=0, extra=extra)
    argv = ["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray"]
    argv += ["--address", cluster.address, "--quiet", "--no-plots"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dqnbench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=interruptible,
    )
    try:
        runs, deadline = tmp_path / "out" / "interrupt" / "runs", time.time() + 90
        while not (finished(runs) and worker_processes(cluster.session_ids, b"ray::dqnbench_run")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "rerun the same command" in stderr and "Traceback" not in stderr
    deadline = time.time() + 20
    while worker_processes(cluster.session_ids, b"ray::dqnbench_run") and time.time() < deadline:
        time.sleep(0.1)
    assert not worker_processes(cluster.session_ids, b"ray::dqnbench_run")  # nothing left running for us
    partial = dqnbench.load_results(tmp_path / "out" / "interrupt")  # never half a run
    assert 1 <= len(partial.runs) < 4 and set(partial.runs.status) == {"ok"}


@pytest.mark.slow
def test_without_an_address_a_local_ray_is_started_for_the_grid_and_stopped(tiny_grid, tmp_path, monkeypatch):
    """Twice in one process (a notebook's second grid): Ray keeps the first auth token it reads, so the second
    local Ray must get the same one (a fresh token per start failed with InvalidAuthToken)."""
    ray = require("ray")
    monkeypatch.setenv("RAY_ADDRESS", "local")  # not a cluster that some `ray start` left on this machine
    grid, serial = tiny_grid
    for attempt in ("first", "second"):
        got = run(grid, tmp_path / attempt, "ray", workers=2)
        assert_same_results(got, serial)
        assert not ray.is_initialized()  # the executor started this Ray, so it shut it down


def test_a_cluster_named_by_ray_address_gets_no_token_mode(monkeypatch):
    """RAY_ADDRESS names a cluster as ``address`` does: connect as it is (token mode, once set, stays for the
    process and broke every later connection to a head without token auth)."""
    from dqnbench.builtin.ray_executor import AUTH_MODE, auth_env, cluster_address, token_available

    monkeypatch.delenv(AUTH_MODE, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cluster_address(None) == "127.0.0.1:6379" and auth_env(None) == {}
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None) is None and cluster_address("10.0.0.1:6379") == "10.0.0.1:6379"
    if not token_available():
        assert auth_env(None)[AUTH_MODE] == "token" and auth_env(None) == auth_env(None)  # one token per process
