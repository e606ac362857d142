"""A search end to end on tiny budgets (issue 25): trials are runs, results, test phase, failures, pruning, resume."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

import dqnbench
from dqnbench.analysis.plots import write_plots
from dqnbench.analysis.report import report
from dqnbench.analysis.sensitivity import importances, search_points, sensitivity_figure
from tests import plugin_fixtures

ROOT = Path(__file__).resolve().parents[1]

SEARCH = """
[grid]
"network.name" = ["mlp", "dueling"]

[search]
trials = 2
sampler = "random"
tune_seeds = 1
test_seeds = 2

[search.space]
"agent.lr" = { low = 1e-4, high = 1e-2, log = true }
"agent.target_update" = [20, 50]
"""


def study_trials(experiment: Path, variant: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{experiment / 'search' / 'study.db'}"
    return optuna.load_study(study_name=variant, storage=storage).get_trials(deepcopy=False)


def test_every_variant_gets_the_same_budget_and_its_best_reruns_on_fresh_seeds(write_grid, tmp_path):
    grid = write_grid(SEARCH, steps=150, eval_every=50)
    res = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False)

    trials = res.trials
    assert list(trials.columns) == ["variant", "trial", "agent.lr", "agent.target_update", "objective", "state",
                                    "seeds"]  # fmt: skip
    assert trials.groupby("variant").size().to_dict() == {"network.name=mlp": 2, "network.name=dueling": 2}
    assert set(trials.state) == {"complete"} and trials.objective.notna().all()
    for variant in ("network.name=mlp", "network.name=dueling"):
        assert len(study_trials(res.path, variant)) == 2

    runs = res.runs
    tune, test = runs[runs.phase == "tune"], runs[runs.phase == "test"]
    assert len(tune) == 4 and set(tune.seed) == {0} and set(runs.status) == {"ok"}
    assert set(test.seed) == {1, 2}  # fresh seeds, disjoint from the tuning seed
    assert len(test) == 8  # 2 variants × (tuned, default) × 2 test seeds
    for variant, mine in trials.groupby("variant"):
        best = mine.loc[mine.objective.idxmax()]
        tuned = test[test.label == f"{variant} (tuned)"]
        assert set(tuned.trial) == {best.trial} and set(tuned["agent.lr"]) == {best["agent.lr"]}
        # a trial's objective is the mean auc of its runs' evaluation curves
        (run_id,) = tune[(tune.label == f"{variant} · trial {best.trial}")].run_id
        curve = res.evals[res.evals.run_id == run_id].sort_values("step")
        span = curve.step.iloc[-1] - curve.step.iloc[0]
        auc = ((curve.mean_return.iloc[1:].to_numpy() + curve.mean_return.iloc[:-1].to_numpy()) / 2
               * curve.step.diff().iloc[1:].to_numpy()).sum() / span  # fmt: skip
        assert best.objective == pytest.approx(auc)
    assert set(test[test.label.str.endswith("(default)")]["agent.lr"]) == {1e-3}

    text = report(res, "markdown")
    assert "Tuned comparison" in text and "Configurations:" in text and "winner's curse" in text
    assert "network.name=dueling (tuned)" in text and "P(X > Y)" in text
    written = write_plots(res, tmp_path / "plots", embedding=False)
    assert {p.name for p in written} >= {"sensitivity.png", "importance.png", "learning_curves.png"}
    index = (tmp_path / "plots" / "index.md").read_text()
    assert "## Sensitivity" in index and "## Importance" in index


def test_a_failed_trial_is_recorded_failed_and_the_study_goes_on(write_grid, tmp_path):
    search = """
    [search]
    trials = 2
    sampler = "grid"
    objective = "final"
    tune_seeds = 1
    test_seeds = 1
    test_default = false

    [search.space]
    "replay.name" = ["exploding", "uniform"]
    """
    grid = write_grid(search, steps=200, eval_every=100)
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False, plugins=[plugin_fixtures],
        load_entrypoints=False,
    )  # fmt: skip
    states = dict(zip(res.trials["replay.name"], res.trials.state))
    assert states == {"exploding": "failed", "uniform": "complete"}
    test = res.runs[res.runs.phase == "test"]
    assert list(test["replay.name"]) == ["uniform"] and list(test.status) == ["ok"]


def test_a_pruner_reads_each_evaluation_and_stops_trials_below_the_median(tmp_path):
    from dqnbench.search.prune import PruneReporter

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="v", storage=url, direction="maximize")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for value in (100.0, 120.0):
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, value=value,
                                                  intermediate_values={100: value, 200: value}))  # fmt: skip
    good, bad = study.ask(dist), study.ask(dist)
    PruneReporter(url, "v", good._trial_id, "median", "final")(100, [([0, 100], [10.0, 150.0])])
    with pytest.raises(optuna.TrialPruned):
        PruneReporter(url, "v", bad._trial_id, "median", "final")(100, [([0, 100], [10.0, 20.0])])
    # the run's objective so far is what is reported: the auc of the curve up to this evaluation
    PruneReporter(url, "v", good._trial_id, "median", "auc")(200, [([0, 100, 200], [0.0, 100.0, 100.0])])
    assert study.trials[2].intermediate_values == {100: 150.0, 200: 75.0}


def test_pruning_is_wired_through_the_runs_of_a_search(write_grid, tmp_path):
    search = SEARCH.split("[search]")[1].replace("trials = 2", 'trials = 4\npruner = "median"\ntest_default = false')
    grid = write_grid("[search]" + search.replace("test_seeds = 2", "test_seeds = 1"), steps=300, eval_every=100)
    res = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False)
    assert set(res.trials.state) <= {"complete", "pruned"} and len(res.trials) == 4
    reported = [t.intermediate_values for t in study_trials(res.path, "default")]
    assert all(set(values) <= {100, 200} and values for values in reported)  # every evaluation but the first/last
    pruned = res.trials[res.trials.state == "pruned"]
    runs = res.runs.set_index("run_id")
    for _, row in pruned.iterrows():
        ids = res.runs[(res.runs.phase == "tune") & (res.runs.trial == row.trial)].run_id
        assert any("TrialPruned" in str(runs.at[r, "error"]) for r in ids)


def test_a_search_stopped_by_sigterm_resumes_without_repeating_or_losing_a_trial(write_grid, tmp_path):
    grid = write_grid(SEARCH.replace("trials = 2", "trials = 3"), steps=300, eval_every=100, name="resume")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dqnbench", "run", "--grid", str(grid), "--out", str(out),
               "--executor", "serial", "--workers", "1", "--quiet", "--no-plots"]  # fmt: skip
    index = out / "resume" / "search" / "trials.json"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline:  # stop it once the first batch (a trial per variant) is told
        assert proc.poll() is None, proc.communicate()
        if index.exists() and sum(t["state"] == "complete" for t in json.loads(index.read_text())["trials"]) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    before = json.loads(index.read_text())["trials"]
    finished = {(t["variant"], t["trial"]): t for t in before if t["state"] == "complete"}
    started = {r: json.loads((out / "resume" / "runs" / r / "meta.json").read_text())["started_at"]
               for t in finished.values() for r in t["run_ids"]}  # fmt: skip
    left = {(t["variant"], t["trial"]): t["params"] for t in before if t["state"] == "running"}

    res = dqnbench.run_grid(grid, out, executor="serial", workers=1, stream=io.StringIO(), plots=False)
    assert res.trials.groupby("variant").size().to_dict() == {"network.name=mlp": 3, "network.name=dueling": 3}
    assert set(res.trials.state) == {"complete"}
    for variant in ("network.name=mlp", "network.name=dueling"):
        numbers = sorted(t.number for t in study_trials(res.path, variant))
        assert numbers == [0, 1, 2]  # exactly `trials`, none asked twice
    for run_id, when in started.items():  # finished trials were not rerun
        assert res.record(run_id)["started_at"] == when
    after = {(row["variant"], row["trial"]): row for _, row in res.trials.iterrows()}
    for key, params in left.items():  # a trial left running reran with the params it was asked with (if any yet)
        assert {k: after[key][k] for k in params} == params


def synthetic_trials(n: int = 12) -> pd.DataFrame:
    """Trials where only agent.lr matters (the objective peaks at lr = 1e-3)."""
    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -2, n)
    frame = pd.DataFrame({
        "variant": ["dqn"] * n, "trial": range(n), "agent.lr": lr,
        "agent.target_update": rng.choice([50, 200], n), "objective": 100 - 40 * np.abs(np.log10(lr) + 3),
        "state": ["complete"] * (n - 1) + ["failed"], "seeds": [(0, 1)] * n,
    })  # fmt: skip
    frame.attrs["space"] = {"agent.lr": {"log": True, "categorical": False},
                            "agent.target_update": {"log": False, "categorical": True}}  # fmt: skip
    return frame


def test_sensitivity_draws_a_log_axis_for_log_ranges_and_a_bin_per_choice():
    points, scales = search_points(synthetic_trials())
    assert scales == {"agent.lr": "log", "agent.target_update": "categorical"}
    assert len(points) == 2 * 11  # complete trials only, once per key
    fig = sensitivity_figure(points, scales)
    lr_axis, choice_axis = fig.axes[:2]
    assert lr_axis.get_xscale() == "log" and lr_axis.get_xlabel() == "agent.lr"
    assert [t.get_text() for t in choice_axis.get_xticklabels()] == ["50", "200"]


def test_importance_finds_the_key_that_moves_the_objective():
    table = importances(synthetic_trials(16)).set_index("key")["importance"]
    assert table["agent.lr"] > table["agent.target_update"]


def test_a_plain_grid_over_a_numeric_key_gets_sensitivity_curves_too(write_grid, tmp_path):
    grid = write_grid('[grid]\n"agent.lr" = [1e-4, 1e-3, 1e-2]\n', steps=150, seeds=1, eval_every=0)
    res = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False)
    written = {p.name for p in write_plots(res, tmp_path / "plots", embedding=False)}
    assert "sensitivity.png" in written and "importance.png" not in written
    assert "## Sensitivity" in (tmp_path / "plots" / "index.md").read_text()


def test_a_trial_interrupted_while_being_asked_gets_its_missing_params_on_resume(tmp_path):
    from dqnbench.search.study import leftover_params, leftover_trials

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    dists = {"a": optuna.distributions.FloatDistribution(0, 1), "b": optuna.distributions.IntDistribution(1, 5)}
    asked = study.ask()
    a = asked.suggest_float("a", 0, 1)  # killed here, before "b" was sampled
    (left,) = leftover_trials(study)
    params = leftover_params(study, left, dists)
    assert params["a"] == a and 1 <= params["b"] <= 5
    assert leftover_params(study, leftover_trials(study)[0], dists) == params  # stored: a later resume agrees
