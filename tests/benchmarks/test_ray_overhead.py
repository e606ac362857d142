"""What dispatching a run through Ray costs, next to the local process pool.

Trivially short runs (50 env steps, no learning, one evaluation episode: about
10-15 ms of compute), so the time is nearly all dispatch. Each executor is built,
fed ``RUNS`` runs with 2 workers, and closed, and every result's arrival is
timed:

- ``first_result_s``: the fixed cost of an executor (spawning the pool; connecting
  to Ray and starting the job's worker processes) plus one run;
- ``steady_s_per_run``: wall seconds between results once both workers are warm;
- ``overhead_s_per_run`` = 2 × steady − the serial compute of one run: the
  seconds of dispatch each run costs a worker (serialising the task, scheduling,
  shipping the result back);
- ``s_per_run``: the whole thing divided by ``RUNS``, startup included.

Figures go to ``extra_info`` and are printed; nothing is asserted (a shared
2-core machine is too noisy for that). Ray runs on a head started on 127.0.0.1
for this module (2 CPUs), as a cluster would be. With ``--benchmark-disable``
(the default test run) each executor does one round of 4 runs.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterator

import pytest

from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import RunTask, execute_task, make_executor, prepare
from tests.test_ray_executor import free_port, ray_start, short_temp_dir, stop

from ..extras import require
from .helpers import benchmarks_disabled

RUNS = 32
#: runs per round of a smoke run (``--benchmark-disable``): a first arrival and steady ones on both workers
SMOKE_RUNS = 4
WORKERS = 2
SHORT = """
[experiment]
name = "dispatch"
total_steps = 50
seeds = {runs}
eval_every = 0
eval_episodes = 1
[network]
hidden = [16]
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, pytestconfig) -> list[RunTask]:
    """``RUNS`` independent one-seed runs (never grouped in lock-step: we time dispatch per run)."""
    path = tmp_path_factory.mktemp("grid") / "dispatch.toml"
    path.write_text(SHORT.format(runs=SMOKE_RUNS if benchmarks_disabled(pytestconfig) else RUNS))
    plan, _ = prepare(path, load_entrypoints=False)
    return [RunTask((spec,), (), False) for spec in plan.runs]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory) -> Iterator[str]:
    """A 2-CPU Ray head on 127.0.0.1, stopped after the module."""
    require("ray")
    temp_dir = short_temp_dir(tmp_path_factory.getbasetemp())
    port = free_port()
    args = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard=false"]
    args += ["--dashboard-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port())]
    args += ["--object-store-memory", str(200 * 2**20)]
    head = ray_start(args, temp_dir, tmp_path_factory.mktemp("ray-logs") / "head.log", num_cpus=2)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop([head])
        shutil.rmtree(temp_dir, ignore_errors=True)


def dispatcher(name: str, options: dict) -> Callable[[list[RunTask]], dict[str, float]]:
    """Build the executor, run every task through it, close it; time the whole and each arrival."""
    component = load_registry(load_entrypoints=False).get("executor", name)

    def dispatch(batch: list[RunTask]) -> dict[str, float]:
        started = time.perf_counter()
        pool = make_executor(component, WORKERS, options)
        arrivals = []
        try:
            for _, outputs in pool.map_unordered(execute_task, batch):
                arrivals.append(time.perf_counter() - started)
                assert all(output.status == "ok" for output in outputs), outputs
        finally:
            pool.close()
        warm = min(WORKERS, len(batch)) - 1  # by this arrival every worker has started and run once
        return {
            "total_s": time.perf_counter() - started,
            "first_result_s": arrivals[0],
            "steady_s_per_run": (arrivals[-1] - arrivals[warm]) / max(1, len(batch) - 1 - warm),
        }

    return dispatch


@pytest.fixture(scope="module")
def serial_s_per_run(tasks) -> float:
    """Compute per run in this process: what a run costs without any dispatch."""
    dispatch = dispatcher("serial", {})
    return statistics.median(dispatch(tasks)["total_s"] / len(tasks) for _ in range(3))


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["process", "ray"])
def test_dispatch_overhead_per_run(benchmark, request, tasks, serial_s_per_run, executor):
    options = {"address": request.getfixturevalue("ray_address")} if executor == "ray" else {}
    dispatch = dispatcher(executor, options)
    timings: list[dict[str, float]] = []
    benchmark.pedantic(lambda: timings.append(dispatch(tasks)), rounds=1 if benchmark.disabled else 3, iterations=1)
    info: dict[str, float | int] = {"runs": len(tasks), "workers": WORKERS, "serial_s_per_run": serial_s_per_run}
    for key in timings[0]:
        info[key] = statistics.median(t[key] for t in timings)
    info["s_per_run"] = info["total_s"] / len(tasks)
    info["overhead_s_per_run"] = WORKERS * info["steady_s_per_run"] - serial_s_per_run
    benchmark.extra_info.update(info)
    print(
        f"\n{executor}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
    )
