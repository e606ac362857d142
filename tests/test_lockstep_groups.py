"""Lock-step groups: a cell's seeds split over free workers, deterministically, each group a task of its own."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

import dqnbench
from dqnbench.builtin.executors import ProcessExecutor, SerialExecutor
from dqnbench.config.grid import plan_grid
from dqnbench.errors import GridError
from dqnbench.run.groups import executor_slots, lockstep_groups, split_seeds
from dqnbench.run.runner import make_tasks


def plan(registry, seeds=7, cells=1, group=0):
    raw = {
        "experiment": {"name": "g", "total_steps": 100, "seeds": seeds, "lockstep_group": group},
        "network": {"hidden": [8]},
    }
    if cells > 1:
        raw["grid"] = {"agent.lr": [1e-3 * (i + 1) for i in range(cells)]}
    return plan_grid(raw, Path("g.toml"), registry)


def sizes(groups):
    return {cell: [len(g) for g in gs] for cell, gs in groups.items()}


def test_seeds_split_into_consecutive_groups_as_equal_as_possible(registry):
    runs = plan(registry, seeds=7).runs
    assert [[s.seed for s in g] for g in split_seeds(runs, 2)] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [len(g) for g in split_seeds(runs, 3)] == [3, 2, 2]
    assert [len(g) for g in split_seeds(runs, 99)] == [1] * 7


def test_a_cell_splits_only_to_fill_idle_workers(registry):
    one = plan(registry, seeds=7)
    cell = one.cells[0][0]
    assert sizes(lockstep_groups(one, {cell}, 1)) == {cell: [7]}
    assert sizes(lockstep_groups(one, {cell}, 2)) == {cell: [4, 3]}
    assert sizes(lockstep_groups(one, {cell}, 16)) == {cell: [1] * 7}
    four = plan(registry, seeds=5, cells=4)  # the default grid's shape: 4 cells, at least as many as 2 workers
    cells = {c for c, _, _ in four.cells}
    assert all(s == [5] for s in sizes(lockstep_groups(four, cells, 2)).values())
    split = sizes(lockstep_groups(four, cells, 8))  # 8 workers: each cell in two groups
    assert all(s == [3, 2] for s in split.values())
    # runs that are not in lock-step are tasks too: they fill the workers first
    two = plan(registry, seeds=4, cells=2)
    locked = {two.cells[0][0]}
    assert sizes(lockstep_groups(two, locked, 5)) == {two.cells[0][0]: [4]}
    assert sizes(lockstep_groups(two, locked, 6)) == {two.cells[0][0]: [2, 2]}


def test_the_last_cells_split_to_fill_the_last_wave(registry):
    """3 cells of 3 seeds on 2 workers (the CleanRL job): the third cell would train alone while a worker idles,
    so it splits; 5 cells of 8 on 4 workers: the fifth fills the 3 idle workers of the last wave."""
    three = plan(registry, seeds=3, cells=3)
    cells = [c for c, _, _ in three.cells]
    assert sizes(lockstep_groups(three, set(cells), 2)) == {cells[0]: [3], cells[1]: [3], cells[2]: [2, 1]}
    assert sizes(lockstep_groups(three, set(cells), 3)) == {c: [3] for c in cells}  # whole waves: no split
    five = plan(registry, seeds=8, cells=5)
    cells = [c for c, _, _ in five.cells]
    assert [len(g) for g in lockstep_groups(five, set(cells), 4)[cells[4]]] == [2, 2, 2, 2]
    pinned = plan(registry, seeds=3, cells=3, group=3)  # a pinned split stays as pinned
    assert all(s == [3] for s in sizes(lockstep_groups(pinned, {c for c, _, _ in pinned.cells}, 2)).values())


def test_lockstep_group_pins_the_split_whatever_the_workers(registry):
    pinned = plan(registry, seeds=7, group=3)
    cell = pinned.cells[0][0]
    for slots in (1, 2, 16):
        assert sizes(lockstep_groups(pinned, {cell}, slots)) == {cell: [3, 2, 2]}
    assert pinned.runs[0].run_id == plan(registry, seeds=7).runs[0].run_id  # how runs execute, not in the ids


@pytest.mark.parametrize("value", [-1, 1.5, "2", True])
def test_a_bad_lockstep_group_is_a_grid_error(registry, value):
    with pytest.raises(GridError, match="experiment.lockstep_group"):
        plan(registry, group=value)


def test_executors_say_how_many_tasks_they_run_at_once():
    assert executor_slots(SerialExecutor()) == 1
    assert executor_slots(ProcessExecutor(3)) == 3
    assert executor_slots(object()) == 1  # a third-party executor without `slots`: no split


def test_only_groups_with_an_unfinished_seed_become_tasks(registry):
    p = plan(registry, seeds=7)
    cell = p.cells[0][0]
    todo = [s for s in p.runs if s.seed == 5]
    (task,) = make_tasks(todo, (), False, lockstep_groups(p, {cell}, 2))
    assert [s.seed for s in task.specs] == [4, 5, 6] and task.stacked
    tasks = make_tasks(list(p.runs), (), False, lockstep_groups(p, {cell}, 16))
    assert len(tasks) == 7 and not any(t.stacked for t in tasks)  # a group of one is a plain run


def _tables(results, seeds):
    ids = {r for r in results.runs.run_id if results.record(r)["seed"] in seeds}
    out = {}
    for name in ("steps", "episodes", "evals"):
        table = getattr(results, name)
        table = table[table.run_id.isin(ids)].drop(columns=[c for c in ("t_act", "t_env", "t_learn") if c in table])
        out[name] = table.sort_values([c for c in ("run_id", "step", "episode") if c in table]).reset_index(drop=True)
    return out


def test_a_members_results_depend_only_on_its_groups_seeds(write_grid, tmp_path):
    """Seeds 2 and 3 give the same results bit for bit as the second group of a 4-seed cell split in two,
    in a process pool of 2, and as a 2-seed cell [2, 3] trained serially: a group is a lock-step cell of its own."""
    split = write_grid(steps=300, seeds=4)
    pair = write_grid(steps=300, filename="pair.toml", extra="")
    pair.write_text(pair.read_text().replace("seeds = 2", "seeds = [2, 3]"))
    stream = io.StringIO()
    grouped = dqnbench.run_grid(split, tmp_path / "pool", workers=2, stream=stream, plots=False,
                                load_entrypoints=False)  # fmt: skip
    assert "4 seeds in 2 lock-step groups (2 + 2)" in stream.getvalue()  # the split is announced
    alone = dqnbench.run_grid(pair, tmp_path / "pair", executor="serial", stream=io.StringIO(), plots=False,
                              load_entrypoints=False)  # fmt: skip
    assert set(grouped.runs.status) == {"ok"}
    assert sorted(grouped.runs.lockstep_members) == [2, 2, 2, 2]
    assert (
        sorted(tuple(grouped.record(r)["lockstep"]["seeds"]) for r in grouped.runs.run_id)
        == [(0, 1)] * 2 + [(2, 3)] * 2
    )
    ours, theirs = _tables(grouped, {2, 3}), _tables(alone, {2, 3})
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name])
    for run_id in theirs["steps"].run_id.unique():
        for key, tensor in alone.weights(run_id).items():
            assert tensor.equal(grouped.weights(run_id)[key])


def test_a_rerun_retrains_only_the_group_of_a_missing_member_and_equals_the_first(write_grid, tmp_path):
    grid = write_grid(steps=200, seeds=4, extra="")
    grid.write_text(grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\nlockstep_group = 2"))
    first = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False,
                              load_entrypoints=False)  # fmt: skip
    by_seed = {first.record(r)["seed"]: r for r in first.runs.run_id}
    files = {s: (first.run_dir(r) / "steps.parquet").read_bytes() for s, r in by_seed.items()}
    before = _tables(first, {3})
    shutil.rmtree(first.run_dir(by_seed[3]))
    out = io.StringIO()
    again = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=out, plots=False,
                              load_entrypoints=False)  # fmt: skip
    assert "3 of 4 runs already finished" in out.getvalue()
    for seed in (0, 1, 2):  # seeds 0, 1 were not retrained; seed 2 was, with 3, and not rewritten
        assert (again.run_dir(by_seed[seed]) / "steps.parquet").read_bytes() == files[seed]
    after = _tables(again, {3})  # seed 3 retrained in its group: the same results (timings aside)
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name])


class Killed(Exception):
    """Stands in for a killed worker: raised inside one run's training."""


def test_a_killed_group_fails_alone_and_its_rerun_resumes_from_its_own_checkpoint(write_grid, tmp_path, monkeypatch):
    """Two groups of 2: the first is killed at step 650 (checkpoints every 200), the second finishes. The rerun
    trains only the killed group, from its step-600 checkpoint (400 env steps), and every member then equals an
    uninterrupted run bit for bit."""
    from dqnbench.agent import loop

    grid = write_grid(steps=1000, seeds=4)
    grid.write_text(
        grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\nlockstep_group = 2\ncheckpoint_every = 200")
    )
    clean = dqnbench.run_grid(grid, tmp_path / "clean", executor="serial", load_entrypoints=False,
                              stream=io.StringIO(), plots=False)  # fmt: skip
    counter = {"steps": 0, "kill": 650}
    original = loop.Agent.step

    def step(self, envs, obs, step, *args):
        if counter["kill"] is not None and step >= counter["kill"]:
            counter["kill"] = None  # one kill: the first group's
            raise Killed
        counter["steps"] += 1
        return original(self, envs, obs, step, *args)

    monkeypatch.setattr(loop.Agent, "step", step)
    out = tmp_path / "out"
    first = dqnbench.run_grid(grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False)
    status = {first.record(r)["seed"]: s for r, s in zip(first.runs.run_id, first.runs.status)}
    assert status == {0: "failed", 1: "failed", 2: "ok", 3: "ok"}
    assert len(list((out / "tiny" / "checkpoints").glob("*/step-*"))) == 1  # the failed group's, kept
    counter["steps"] = 0
    second = dqnbench.run_grid(grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False)
    assert set(second.runs.status) == {"ok"} and counter["steps"] == 400
    resumed = {second.record(r)["seed"]: second.record(r)["resumed_at"] for r in second.runs.run_id}
    assert resumed == {0: 600, 1: 600, 2: None, 3: None}
    ours, theirs = _tables(second, {0, 1, 2, 3}), _tables(clean, {0, 1, 2, 3})
    for name in ours:
        pd.testing.assert_frame_equal(ours[name], theirs[name])


def test_progress_counts_each_groups_steps_while_it_trains(write_grid, tmp_path, monkeypatch):
    """Two groups of 2 × 3,000 steps, serially: progress moves inside each group's training, up to 12,000."""
    from dqnbench.agent import loop
    from dqnbench.run import progress as progress_module
    from tests.test_progress import LINE

    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    monkeypatch.setattr(progress_module, "POLL_S", 0.02)
    grid = write_grid(steps=3000, seeds=4, eval_every=0)
    grid.write_text(grid.read_text().replace("eval_episodes = 2", "eval_episodes = 2\nlockstep_group = 2"))
    stream = io.StringIO()
    dqnbench.run_grid(grid, tmp_path / "out", executor="serial", load_entrypoints=False, stream=stream, quiet=True,
                      plots=False)  # fmt: skip
    steps = [int(m.group(3).replace(",", "")) for m in LINE.finditer(stream.getvalue())]
    assert any(0 < s < 6000 for s in steps) and any(6000 < s < 12000 for s in steps), stream.getvalue()
    assert steps == sorted(steps) and steps[-1] == 12000


def test_the_dry_run_shows_how_each_cells_seeds_will_be_grouped(write_grid, capsys):
    from dqnbench.cli import main

    grid = write_grid(seeds=7)
    expected = {
        ("--workers", "2"): ["lock-step groups on 2 workers:", "2 groups (4 + 3)"],
        ("--workers", "16"): ["lock-step groups on 16 workers:", "7 single runs"],
        ("--executor", "serial"): ["lock-step groups on 1 worker:", "one group of 7"],
    }
    for args, lines in expected.items():
        assert main(["run", "--grid", str(grid), "--dry-run", *args]) == 0
        out = capsys.readouterr().out
        assert all(line in out for line in lines), (args, out)
    assert main(["run", "--grid", str(grid), "--dry-run", "--no-lockstep"]) == 0
    assert "lock-step" not in capsys.readouterr().out
