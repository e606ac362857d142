"""The learning schedule is one object: what it says is what the loop does, and what the pre-flight and ETA read."""

from __future__ import annotations

import numpy as np
import pytest

from dqnbench.agent.loop import train
from dqnbench.config.grid import load_grid
from dqnbench.config.schedule import LearningSchedule
from dqnbench.run.eta import task_plan
from dqnbench.run.task import bind_components, choose


@pytest.mark.parametrize(
    "schedule",
    [
        LearningSchedule(100, 16),
        LearningSchedule(10, 64, train_every=4, gradient_steps=2),
        LearningSchedule(1, 1, train_every=3),
        LearningSchedule(50, 32, train_every=5, lag=2),
    ],
    ids=str,
)
def test_first_step_and_counts_agree_with_due_step_by_step(schedule):
    due = [step for step in range(400) if schedule.due(step)]
    assert due[0] == schedule.first_step
    assert schedule.phases(400) == len(due) and schedule.learn_steps(400) == len(due) * schedule.gradient_steps
    assert schedule.phases(schedule.first_step) == 0


def test_the_loop_learns_on_the_schedule_the_eta_reads(write_grid, registry):
    grid = write_grid('[grid]\n"agent.train_every" = [3]\n"agent.gradient_steps" = [2]\n', steps=300, seeds=1)
    spec = load_grid(grid, registry).runs[0]
    schedule = LearningSchedule.of(spec.config.agent)
    log = train(spec.config, spec.seed, bind_components(spec.config, choose(spec.config, registry)))
    learned = np.flatnonzero(np.isfinite(log.loss))
    assert learned.tolist() == [step for step in range(300) if schedule.due(step)]
    assert len(learned) == schedule.phases(300)
    assert task_plan("t", [spec]).first_learn == schedule.first_step == learned[0]


def test_an_nstep_replays_lag_is_the_schedules_and_the_preflight_counts_with_it(write_grid, registry):
    """n = 5 holds back the newest 4 transitions: learning starts 4 steps later than the agent section alone says."""
    from dqnbench.run.preflight import never_learns, replay_lag

    extra = '[replay]\nname = "nstep"\nn = 5\n[grid]\n"agent.learning_starts" = [1]\n"agent.batch_size" = [8]\n'
    extra += '"agent.target_update" = [293]\n'
    grid = write_grid(extra, steps=300, seeds=1)
    spec = load_grid(grid, registry).runs[0]
    lag = replay_lag(spec.config, registry)
    schedule = LearningSchedule.of(spec.config.agent, lag)
    log = train(spec.config, spec.seed, bind_components(spec.config, choose(spec.config, registry)))
    learned = np.flatnonzero(np.isfinite(log.loss))
    assert lag == 4 and learned[0] == schedule.first_step == 11
    assert len(learned) == schedule.learn_steps(300) == 289
    assert [key for key, _ in never_learns(spec.config, lag)] == ["agent.target_update"]  # 293 > 289 learn steps
    assert never_learns(spec.config) == []  # without the lag, 293 learn steps: the target would look updated
