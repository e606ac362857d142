"""The console while a grid trains: live results files, partial report and plot, TensorBoard events."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest

import dqnbench.run.runner as runner
from dqnbench.cli import main
from dqnbench.config.grid import load_grid
from dqnbench.run.live import LIVE_DIR, LiveFileWarning, load_live_results, read_live
from dqnbench.run.progress import RunProgress
from dqnbench.run.runner import RunTask, execute_task, prepare, run_grid

TWO_CELLS = """
[grid]
"agent.lr" = [1e-3, 3e-4]
"""


def _run(grid, out, **kwargs):
    return run_grid(grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False, **kwargs)


@pytest.fixture
def kept_live(monkeypatch):
    """Runs leave their live files behind (as a grid still running has them)."""
    monkeypatch.setattr(runner, "discard_live", lambda *args: None)


def test_each_lockstep_member_writes_a_live_file_that_matches_its_results(write_grid, tmp_path, registry):
    plan, _ = prepare(write_grid(steps=400, seeds=2, eval_every=100), load_entrypoints=False)
    live = tmp_path / LIVE_DIR
    outputs = execute_task(RunTask(tuple(plan.runs), (), False, stacked=True, live_dir=str(live)))
    runs, notes = read_live(tmp_path)
    assert notes == [] and sorted(run.run_id for run in runs) == sorted(o.run_id for o in outputs)
    for output in outputs:
        (run,) = [r for r in runs if r.run_id == output.run_id]
        assert run.data["members"] == 2 and run.step == 400
        assert run.data["evals"]["step"] == [0, 100, 200, 300, 400]
        np.testing.assert_allclose(run.data["evals"]["mean_return"], output.evals["mean_return"])
        assert run.data["episodes"]["return"] == list(output.episodes["return"])
        steps = run.data["steps"]
        assert sum(steps["steps_n"]) == 400 and steps["step"][0] == 0
        assert np.isclose(sum(steps["reward"]), output.steps["reward"].sum())
        assert run.pace.plain_s > 0 and run.pace.learning_s > run.pace.plain_s * 0.5 and run.pace.eval_s > 0
    assert not list(live.glob(".*"))  # no temporary file left behind


def test_report_and_plot_of_a_grid_still_running_show_partial_curves(write_grid, tmp_path, kept_live, capsys):
    grid = write_grid(TWO_CELLS, steps=300, seeds=2, eval_every=100)
    results = _run(grid, tmp_path / "out", lockstep=False)
    experiment = results.path
    assert len(list((experiment / LIVE_DIR).glob("*.jsonl"))) == 4  # kept: finished runs' live files are ignored
    assert load_live_results(experiment).partial is None
    still = results.runs.run_id.tolist()[1:4]  # three runs "still training": their final results not yet written
    for run_id in still:
        shutil.rmtree(experiment / "runs" / run_id)

    partial = load_live_results(experiment)
    assert partial.partial.startswith("partial, 3 of 4 runs live")
    assert sorted(partial.runs.run_id) == sorted(results.runs.run_id)
    assert partial.runs.set_index("run_id").loc[still, "live"].all()
    assert set(partial.evals.run_id) == set(results.runs.run_id)
    assert main(["report", str(experiment)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("(partial, 3 of 4 runs live") and "IQM" in out
    assert main(["plot", str(experiment), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "learning_curves.png").is_file()
    assert "PARTIAL (partial, 3 of 4 runs live" in (tmp_path / "plots" / "index.md").read_text()

    for run_id in results.runs.run_id:  # no run finished yet: there is no runs/ content at all
        shutil.rmtree(experiment / "runs" / run_id, ignore_errors=True)
    assert len(load_live_results(experiment).runs) == 4
    capsys.readouterr()
    assert main(["report", str(experiment), "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("(partial, 4 of 4 runs live") and captured.out.startswith("cell")


def test_a_live_file_cut_short_is_ignored_with_a_note(write_grid, tmp_path, kept_live, capsys):
    results = _run(write_grid(steps=300, seeds=2, eval_every=100), tmp_path / "out", lockstep=False)
    experiment = results.path
    cut, whole = results.runs.run_id
    shutil.rmtree(experiment / "runs" / cut)
    shutil.rmtree(experiment / "runs" / whole)
    path = experiment / LIVE_DIR / f"{cut}.jsonl"
    path.write_bytes(path.read_bytes()[:100])  # a crash cut it short
    with pytest.warns(LiveFileWarning, match=f"live file .*{cut}.jsonl cannot be read"):
        partial = load_live_results(experiment)
    assert partial.runs.run_id.tolist() == [whole]
    assert main(["report", str(experiment)]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 runs live" in captured.out and f"{cut}.jsonl cannot be read" in captured.err


def test_the_bar_shows_the_latest_evaluation_of_the_best_cell(write_grid, tmp_path, kept_live):
    results = _run(write_grid(TWO_CELLS, steps=300, seeds=2, eval_every=100), tmp_path / "out", lockstep=False)
    bar = RunProgress(4, 0, live=False, stream=io.StringIO(), live_dir=results.path / LIVE_DIR)
    bar.poll()
    bar._read_live()
    best = results.evals.merge(results.runs[["run_id", "label"]]).query("step == 300")
    means = best.groupby("label").mean_return.mean()
    assert bar.best_cell() == f"best {means.idxmax()}: {means.max():.1f} @ 300"
    bar.close()


def test_tensorboard_writes_one_event_file_per_run_read_back_by_tensorboard(write_grid, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    grid = write_grid(steps=300, seeds=2, eval_every=100)
    results = _run(grid, tmp_path / "out", tensorboard=tmp_path / "tb")
    assert (results.runs.lockstep_members == 2).all()  # lock-step members each get their own file
    for run_id in results.runs.run_id:
        directory = tmp_path / "tb" / "tiny" / run_id
        assert len(list(directory.glob("events.out.tfevents.*"))) == 1
        events = EventAccumulator(str(directory))
        events.Reload()
        scalars = set(events.Tags()["scalars"])
        assert {"eval/mean_return", "episode/return", "train/loss", "train/q_max", "train/epsilon"} <= scalars
        assert "train/steps_per_s" in scalars
        evals = results.evals[results.evals.run_id == run_id]
        read = events.Scalars("eval/mean_return")
        assert [e.step for e in read] == evals.step.tolist()
        np.testing.assert_allclose([e.value for e in read], evals.mean_return, rtol=1e-6)
        episodes = results.episodes[results.episodes.run_id == run_id]
        np.testing.assert_allclose([e.value for e in events.Scalars("episode/return")], episodes["return"])
        hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
        assert b"agent.lr" in hparams and run_id.encode() in hparams


def test_experiment_tensorboard_writes_under_the_results_and_keeps_run_ids(write_grid, tmp_path, registry):
    plain = load_grid(write_grid(steps=300, seeds=1, eval_every=0, filename="a.toml"), registry)
    grid = write_grid("", steps=300, seeds=1, eval_every=0, filename="b.toml")
    grid.write_text(grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\ntensorboard = true"))
    traced = load_grid(grid, registry)
    assert [s.run_id for s in traced.runs] == [s.run_id for s in plain.runs]
    results = _run(grid, tmp_path / "out")
    (run_id,) = results.runs.run_id
    assert list((results.path / "tensorboard" / run_id).glob("events.out.tfevents.*"))
    assert json.loads((results.path / "runs" / run_id / "meta.json").read_text())["config"]["experiment"]["tensorboard"]


def test_tensorboard_without_the_extra_exits_2_naming_it(write_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if TensorBoard were not installed
    grid = write_grid(steps=300, seeds=1, eval_every=0)
    code = main(["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install "dqnbench[tensorboard]"' in err
    assert "--tensorboard needs TensorBoard" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "tiny" / "runs").exists()  # refused before any run


def test_watching_a_run_does_not_change_what_it_learns(write_grid, tmp_path):
    """Live files and TensorBoard only read the records: the same seeds train to the same numbers."""
    from dqnbench.agent.loop import train_runs
    from dqnbench.run.runner import base_record, bind_components, choose
    from dqnbench.run.tracking import task_watch

    plan, registry = prepare(write_grid(steps=400, seeds=2, eval_every=100), load_entrypoints=False)
    specs, config = tuple(plan.runs), plan.runs[0].config
    chosen = choose(config, registry)
    records = [base_record(spec, chosen, 0.0) for spec in specs]
    with task_watch(specs, records, str(tmp_path / "live"), str(tmp_path / "tb")) as watch:
        watched = train_runs(config, [0, 1], bind_components(config, chosen), stacked=True, watch=watch)
    plain = train_runs(config, [0, 1], bind_components(config, chosen), stacked=True)
    for a, b in zip(watched, plain):
        assert a.evals["mean_return"] == b.evals["mean_return"] and a.episodes == b.episodes
        np.testing.assert_array_equal(a.steps["loss"], b.steps["loss"])
    assert len(list((tmp_path / "tb").glob("*/events.out.tfevents.*"))) == 2


def test_a_windowed_runs_live_file_bins_its_windows(write_grid, tmp_path):
    """``experiment.steps_window`` (long runs): the live rows sum whole windows, and their losses are means."""
    grid = write_grid("", steps=400, seeds=1, eval_every=200)
    grid.write_text(grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\nsteps_window = 7"))
    plan, _ = prepare(grid, load_entrypoints=False)
    (output,) = execute_task(RunTask(tuple(plan.runs), (), False, live_dir=str(tmp_path / LIVE_DIR)))
    ((run,), _) = read_live(tmp_path)
    steps = run.data["steps"]
    assert sum(steps["steps_n"]) == 400 and all(s % 7 == 0 for s in steps["step"])
    assert np.isclose(sum(steps["reward"]), output.steps["reward"].sum())
    learned = [loss for loss in steps["loss"] if loss == loss]
    assert learned and all(0 <= loss < 1e3 for loss in learned)


def test_a_look_that_costs_more_than_its_budget_is_put_off():
    """Looking (live files, TensorBoard) takes at most ``LOOK_BUDGET`` of a task's time: a costly look waits longer."""
    from dqnbench.agent.watch import LOOK_BUDGET, Watch

    watch = Watch(total_steps=10**7, eval_every=0, sinks=[[]], every_s=3.0)
    watch._schedule(0, rate=1_000.0)  # a cheap look: the next one 3 s of training later
    assert watch.next_step == 3_000
    watch._look_s = 0.5  # a fused group's look over 64 files that took half a second
    watch._schedule(0, rate=1_000.0)
    assert watch.next_step == int(1_000.0 * 0.5 / LOOK_BUDGET) == 25_000
