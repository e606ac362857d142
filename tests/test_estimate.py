"""``--dry-run --estimate``: a wall time and a peak memory per task, from timed steps of each task shape.

Its accuracy against real runs is measured in ``tests/benchmarks/test_console_costs.py``
(timings are too noisy for the default suite); here: it is produced, and sane.
"""

from __future__ import annotations

import math
import re

import pytest

from dqnbench.cli import main
from dqnbench.config.schema import AgentConfig
from dqnbench.run.estimate import ShapeCost, crowding, estimate, shape_key
from dqnbench.run.runner import prepare

LINE = re.compile(r"^estimate: (\d+):(\d\d):(\d\d) wall, ([\d,]+) MiB peak per task$", re.M)


def test_dry_run_says_no_estimate_was_made_unless_asked(write_grid, capsys):
    assert main(["run", "--grid", str(write_grid()), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimate: none made (add --estimate" in out and not LINE.search(out)


def test_dry_run_estimate_prints_one_line_of_wall_time_and_memory(write_grid, capsys):
    grid = write_grid('[grid]\n"network.hidden" = [[16], [32, 32]]\n', steps=2000, seeds=2, eval_every=500)
    assert main(["run", "--grid", str(grid), "--dry-run", "--estimate", "--executor", "serial"]) == 0
    out = capsys.readouterr().out
    (match,) = LINE.finditer(out)
    hours, minutes, seconds, mib = match.groups()
    assert 0 < 3600 * int(hours) + 60 * int(minutes) + int(seconds) < 600
    assert 100 < int(mib.replace(",", "")) < 4000  # a Python process with torch, plus a small replay
    assert "2 task shapes timed" in out and "1 worker of the serial executor" in out


def test_the_estimate_grows_with_the_schedule_and_the_replay(write_grid, registry):
    small, _ = prepare(write_grid(steps=1000, seeds=1, eval_every=0, filename="a.toml"), load_entrypoints=False)
    big, _ = prepare(
        write_grid("[replay]\ncapacity = 2_000_000\n", steps=20_000, seeds=1, eval_every=0, filename="b.toml"),
        load_entrypoints=False,
    )
    few, many = estimate(small, registry, 1, workers_start=False), estimate(big, registry, 1, workers_start=False)
    assert 5 < many.tasks_s / few.tasks_s < 60  # 20× the steps, nearly all of them learning in both
    # a CartPole transition takes 45 bytes in the built-in replay: 2M of them ~86 MiB more
    assert 70 < (many.peak_bytes - few.peak_bytes) / 2**20 < 110


def test_lr_does_not_make_a_new_shape_but_members_and_widths_do(write_grid, registry):
    plan, _ = prepare(
        write_grid('[grid]\n"agent.lr" = [1e-3, 3e-4]\n"network.hidden" = [[16], [32]]\n'), load_entrypoints=False
    )
    by_cell = {}
    for spec in plan.runs:
        by_cell.setdefault(spec.cell, []).append(spec)
    keys = {shape_key(tuple(specs), True) for specs in by_cell.values()}
    assert len(by_cell) == 4 and len(keys) == 2
    specs = next(iter(by_cell.values()))
    assert shape_key(tuple(specs), True) != shape_key(tuple(specs[:1]), False)


def test_a_shapes_pace_follows_the_schedule():
    cost = ShapeCost(plain_s=1e-4, learn_s=4e-4, greedy_s=5e-5, eval_episode_steps=200, peak_bytes=0)

    class Config:  # the two sections pace() reads
        class experiment:
            eval_episodes = 10

        agent = AgentConfig(train_every=4)

    pace = cost.pace(Config)
    assert pace.plain_s == 1e-4 and pace.learning_s == pytest.approx(2e-4) and pace.eval_s == pytest.approx(0.1)


def test_crowding_idle_machine_and_a_loaded_session():
    assert crowding(2, 1.0, 2, grouped=True) == 1.0  # as many workers as cores
    assert crowding(4, 0.95, 2, grouped=True) == 2.0  # twice as many
    assert math.isclose(crowding(2, 0.5, 2, grouped=True), 2.0)  # one session's share, split by its two workers
    assert math.isclose(crowding(2, 0.5, 2, grouped=False), 1.0)  # each worker its own share
