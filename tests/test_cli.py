"""The command line through a real subprocess: exit codes, messages, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dqnbench.cli import main


def dqnbench(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "dqnbench", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_run_writes_results_prints_progress_and_summary(write_grid, tmp_path):
    grid = write_grid(steps=200, seeds=2)
    proc = dqnbench("run", "--grid", grid, "--out", tmp_path / "out", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert "[2/2 runs] steps 400/400" in proc.stdout and "steps/s" in proc.stdout and "ETA" in proc.stdout
    assert "final return" in proc.stdout and "tiny: 2 runs" in proc.stdout
    assert len(list((tmp_path / "out" / "tiny" / "runs").iterdir())) == 2
    assert "note: 2 seeds per cell" in proc.stdout
    again = dqnbench("run", "--grid", grid, "--out", tmp_path / "out", "--quiet", "--no-plots")
    assert again.returncode == 0 and "2 of 2 runs already finished" in again.stdout
    assert "note: 2 seeds per cell" in again.stdout  # the summary's statistics, plots or not


def test_dry_run_prints_the_plan(write_grid, tmp_path):
    grid = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-4]\n"agent.double" = [false, true]\n', seeds=3)
    proc = dqnbench("run", "--grid", grid, "--out", tmp_path / "out", "--dry-run")
    assert proc.returncode == 0
    assert "4 cells × 3 seeds = 12 runs" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ("[agent]\nlrr = 0.1\n", "agent.lrr: unknown key"),
        ('[network]\nname = "mpl"\n', 'network.name: unknown network "mpl"'),
        ('[experiment]\nenv = "Pendulum-v1"\n', "Discrete actions"),
        ("[grid\n", "invalid TOML"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, extra, message):
    grid = tmp_path / "bad.toml"
    if extra.startswith("[experiment]"):
        grid.write_text('[experiment]\nname = "bad"\n' + extra.split("\n", 1)[1])
    else:
        grid.write_text('[experiment]\nname = "bad"\n' + extra)
    proc = dqnbench("run", "--grid", grid, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(grid) in lines[0] and message in lines[0], proc.stderr


def test_failing_component_exits_1_and_names_it(write_grid, tmp_path, monkeypatch, capsys):
    import types

    from dqnbench.plugin import host as plugins
    from tests import plugin_fixtures

    class FixtureEntryPoint:  # an installed plugin distribution, as importlib.metadata shows it
        name, value = "fixtures", "tests.plugin_fixtures"
        dist = types.SimpleNamespace(name="dqnbench-test-fixtures", version="0.0.1")

        def load(self):
            return plugin_fixtures

    monkeypatch.setattr(plugins, "entry_points", lambda group: [FixtureEntryPoint()])
    grid = write_grid('[grid]\n"network.name" = ["mlp", "broken"]\n', seeds=1, steps=150)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    argv = ["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "serial", "--quiet"]
    code = main([*argv, "--no-plots"])
    captured = capsys.readouterr()
    assert code == 1
    assert (
        'network "broken" from dqnbench-test-fixtures 0.0.1' in captured.out
        and "1 of 2 runs did not succeed" in captured.err
    )


def test_plugins_lists_kind_name_provider_and_version():
    proc = dqnbench("plugins")
    assert proc.returncode == 0
    for text in ("network", "mlp", "replay", "uniform", "exploration", "linear", "executor", "process", "dqnbench"):
        assert text in proc.stdout
