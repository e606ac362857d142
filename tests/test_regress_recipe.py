"""The CI regression recipe, run locally: ``scripts/regress.sh`` in quick mode passes on unchanged code.

The script is what ``docs/ci/github-actions.yml`` does on main (baseline) and on a
pull request (candidate + both comparisons), on the current checkout.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dqnbench
from dqnbench.config.grid import load_grid

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "regress.sh"
WORKFLOW = REPO / "docs" / "ci" / "github-actions.yml"
GRID = REPO / "examples" / "regression.toml"


@functools.cache
def bench_compare_command() -> str:
    """``dqnbench bench-compare`` once the CLI has it; until then the same code as a module."""
    probe = subprocess.run([sys.executable, "-m", "dqnbench", "bench-compare", "--help"], capture_output=True)
    if probe.returncode == 0:
        return f"{sys.executable} -m dqnbench bench-compare"
    return f"{sys.executable} -m dqnbench.devtools.benchcompare"


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = os.environ | {"PYTHON": sys.executable, "DQNBENCH_REGRESS_QUICK": "1"}
    environ |= {"DQNBENCH_BENCH_COMPARE": bench_compare_command(), **env}
    environ.pop("DQNBENCH_PLANTED_SLOWDOWN", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=environ, capture_output=True, text=True)


@pytest.mark.slow
def test_quick_recipe_passes_on_unchanged_code(tmp_path):
    work = tmp_path / "regress"
    done = run_script("all", str(work), DQNBENCH_BENCH_SESSIONS="2")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    for side in ("base", "new"):
        assert all((work / side / "bench" / f"{n}.json").stat().st_size > 0 for n in (1, 2))
        assert (work / side / "learning" / "regression" / "runs").is_dir()
    assert "OK: no benchmark slower" in (work / "bench-compare.md").read_text()
    assert "best of 2 sessions" in (work / "bench-compare.md").read_text()
    assert "OK: no cell worse" in (work / "compare.md").read_text()
    assert "regress: speed exit 0, learning exit 0" in output


def test_candidate_without_a_baseline_is_a_user_error(tmp_path):
    done = run_script(
        "candidate", str(tmp_path / "empty"), DQNBENCH_REGRESS_BENCH="tests/benchmarks/test_calibration.py"
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no base measurements" in done.stderr
    assert run_script("sideways").returncode == 2


def test_regression_grid_is_small_and_valid(registry):
    plan = load_grid(GRID, registry)
    assert plan.name == "regression" and len(plan.runs) == 5
    config = plan.cells[0][2]
    assert config.experiment.env == "CartPole-v1" and config.experiment.total_steps <= 20_000


def test_workflow_saves_baselines_on_main_and_judges_pull_requests():
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    text = WORKFLOW.read_text()
    assert set(workflow["jobs"]) == {"baseline", "candidate"}
    for needle in ("examples/regression.toml", "dqnbench bench-compare", "--fail-above", "dqnbench compare",
                   "--benchmark-json", "upload-artifact", "gh run download"):  # fmt: skip
        assert needle in text, needle
    assert dqnbench.__version__  # the recipe installs this package
