"""dqnbench's pytest plugin, used the way a plugin author's test suite uses it (through ``pytester``).

The inner pytest sessions run in subprocesses: an in-process run restores
``sys.modules`` afterwards, and torch cannot be imported twice in one process.
Until the ``pytest11`` entry point is installed, the inner sessions load the
plugin with ``-p dqnbench.devtools.pytest_plugin``; once it is, they rely on the entry
point (passing ``-p`` as well would register the module twice).
"""

from __future__ import annotations

import inspect
import json
import math
import tomllib
from importlib.metadata import entry_points

import numpy as np
import pytest

from dqnbench.agent.loop import train
from dqnbench.config.grid import plan_grid
from dqnbench.devtools.benchcompare import CALIBRATION_KEY, bench_compare
from dqnbench.devtools.pytest_plugin import StepHarness, _benchmark_fixture, assert_learns, component_tables, to_toml
from dqnbench.errors import DqnbenchError, GridError
from dqnbench.run.runner import bind_components, choose
from tests import plugin_fixtures

pytest_plugins = ["pytester"]

INSTALLED = any(ep.value == "dqnbench.devtools.pytest_plugin" for ep in entry_points(group="pytest11"))
PLUGIN_ARGS = () if INSTALLED else ("-p", "dqnbench.devtools.pytest_plugin")

AUTHOR_SPEED_TESTS = """
import pytest

def test_dueling_step_speed(dqnbench_step_benchmark):
    harness = dqnbench_step_benchmark("network", "dueling", {"stream_hidden": 32}, batch_size=32,
                                      agent={"learning_starts": 200}, load_entrypoints=False)
    assert harness.learn_steps >= 1

def test_calibration(dqnbench_calibration):
    dqnbench_calibration()
"""

AUTHOR_LEARNING_TESTS = """
TINY = dict(seeds=2, total_steps=400, eval_episodes=2, executor="serial", load_entrypoints=False,
            agent={"learning_starts": 100, "batch_size": 16, "target_update": 50})

def test_nstep_learns_a_little(dqnbench_learns):
    outcome = dqnbench_learns("replay", "nstep", {"n": 2}, threshold=5, **TINY)
    assert sorted(outcome.returns) == [0, 1] and outcome.iqm >= 5

def test_impossible_threshold_fails(dqnbench_learns):
    dqnbench_learns("replay", "nstep", {"n": 2}, threshold=600, **TINY)
"""


def test_both_fixtures_in_an_authors_suite(pytester):
    """Speed and learning tests of a suite like a plugin's: outcomes, extra_info, the failure message."""
    pytester.makepyfile(test_author_speed=AUTHOR_SPEED_TESTS, test_author_learning=AUTHOR_LEARNING_TESTS)
    out = pytester.path / "bench.json"
    result = pytester.runpytest_subprocess(
        *PLUGIN_ARGS, "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-max-time=0.02",
        "--benchmark-min-rounds=5", f"--benchmark-json={out}",
    )  # fmt: skip
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*replay 'nstep' on CartPole-v1, 400 steps (grid *learns-replay-nstep.toml, results *) did not learn: "
            "IQM final greedy return * < threshold 600 over 2 seeds (seed 0: *, seed 1: *)*"
        ]
    )
    benchmarks = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    info = benchmarks["test_dueling_step_speed"]["extra_info"]
    assert info["kind"] == "network" and info["component"] == "dueling" and info["batch"] == 32
    assert info["params"]["stream_hidden"] == 32 and info["steps"] == 1 and info["env"] == "CartPole-v1"
    assert info["distribution"] == "dqnbench" and "learn step" in info["measured"]
    assert info["components"] == {
        "network": "dueling",
        "replay": "uniform",
        "exploration": "linear",
        "learner": "dqn",
        "optimizer": "adam",
        "env": "auto",
    }
    assert benchmarks["test_dueling_step_speed"]["stats"]["rounds"] >= 5
    assert CALIBRATION_KEY in benchmarks["test_calibration"]["extra_info"]
    assert not bench_compare(out, out).regressed  # the suite's report is comparable as is


def test_speed_fixtures_run_once_under_benchmark_disable(pytester):
    pytester.makepyfile(test_author_speed=AUTHOR_SPEED_TESTS)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", "--benchmark-disable")
    result.assert_outcomes(passed=2)


def test_speed_fixture_without_pytest_benchmark_says_what_to_install(request):
    with pytest.raises(pytest.UsageError, match="dqnbench_step_benchmark needs pytest-benchmark: pip install"):
        _benchmark_fixture(request, "dqnbench_step_benchmark", fixture="benchmark_of_an_uninstalled_plugin")


def test_learning_defaults_are_meaningful():
    """CartPole-v1, 3 seeds, 15k steps, IQM ≥ 100: what the built-in agents reach with margin (see the module)."""
    defaults = {k: p.default for k, p in inspect.signature(assert_learns).parameters.items()}
    assert (defaults["env"], defaults["seeds"], defaults["total_steps"], defaults["threshold"]) == (
        "CartPole-v1", 3, 15_000, 100.0,
    )  # fmt: skip


def test_failed_runs_fail_the_learning_assertion_with_their_errors(tmp_path):
    with pytest.raises(AssertionError, match=r"2 of 2 runs .* did not finish: seed 0: failed: .*sampling exploded"):
        assert_learns(
            tmp_path, "replay", "exploding", seeds=2, total_steps=300, executor="serial", load_entrypoints=False,
            plugins=[plugin_fixtures], agent={"learning_starts": 50, "batch_size": 16},
        )  # fmt: skip


def test_unknown_components_and_bad_params_are_grid_errors_naming_the_fixture():
    with pytest.raises(GridError, match=r"<dqnbench_step_benchmark>: network.name: unknown network \"mpl\""):
        StepHarness.for_component("network", "mpl", load_entrypoints=False)
    with pytest.raises(GridError, match=r"network.widht: .*has no parameter 'widht'"):
        StepHarness.for_component("network", "mlp", {"widht": 3}, load_entrypoints=False)
    with pytest.raises(DqnbenchError, match="unknown component kind 'executor'"):
        StepHarness.for_component("executor", "serial", load_entrypoints=False)


@pytest.mark.parametrize(
    ("kind", "name"), [("network", "mlp"), ("network", "dueling"), ("replay", "nstep"), ("exploration", "boltzmann")]
)
def test_harness_steps_like_train(registry, kind, name):
    """Same seed, same config: the harness's losses are train()'s, step for step.

    Equal up to float rounding: the same kernels on differently aligned memory
    may sum in another order, so allow 1e-4 relative.
    """
    tables = component_tables(kind, name, total_steps=500, seeds=[3], eval_episodes=1,
                              agent={"learning_starts": 100, "batch_size": 16, "target_update": 50})  # fmt: skip
    config = plan_grid(tables, "<test>", registry).cells[0][2]
    chosen = choose(config, registry)
    log = train(config, 3, bind_components(config, chosen))
    harness = StepHarness(config, bind_components(config, chosen), seed=3, chosen=chosen)
    losses = np.array([harness.step() for _ in range(500)])
    assert np.array_equal(np.isnan(losses), np.isnan(log.loss))
    np.testing.assert_allclose(losses, log.loss, rtol=1e-4, atol=1e-6)
    assert harness.learn_steps == int((~np.isnan(log.loss)).sum())


def test_grid_tables_round_trip_through_toml():
    tables = component_tables("network", "my net", {"hidden": [8, 8], "scale": 1e-3, "norm": True, "kind": 'a"b'},
                              grid={"replay": {"name": "prioritized", "prioritized": {"alpha": 0.5}}})  # fmt: skip
    assert tomllib.loads(to_toml(tables)) == tables
    assert not math.isnan(tables["experiment"]["total_steps"])
