"""The ETA of a grid: what is left of each task, at each task's own pace, laid out on the executor's workers.

A step before learning starts costs far less than one after (no gradient
step), evaluations cost seconds each, and cells differ (a wide network, a
lock-step group of 8). So the model keeps, per task, its schedule from the plan
(:class:`TaskPlan`: steps, first learning step, evaluations) and its measured
:class:`~dqnbench.agent.watch.Pace` (from its live file), and prices what is
left. A task not yet measured borrows the pace of its shape (same cell and
members), else the median of the others; a learning pace not yet seen is the
plain pace times the median ratio seen elsewhere, else :data:`LEARN_RATIO`.
An evaluation's episodes lengthen as the agent learns: where the env has a time
limit, the evaluations to come are priced at episodes growing from the latest
ones towards that limit (:func:`eval_episode_steps`).
The tasks' remaining seconds are then laid out on the workers in dispatch order
(each next task on the worker that frees first); the ETA is when the last ends.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dqnbench.agent.watch import Pace
from dqnbench.config.schedule import LearningSchedule

#: a learning env step costs this many plain ones until a run shows its own ratio (CartPole, mlp [64, 64],
#: batch 64, train_every 1: ~4.5× on this project's 2-core machine)
LEARN_RATIO = 4.0


@dataclass(frozen=True)
class TaskPlan:
    """What a task will do: its env steps, first learning step and evaluation cadence (one row's schedule)."""

    key: str
    run_ids: tuple[str, ...]
    #: tasks of one shape train alike (same cell, same members): they share a pace until each has its own
    shape: str
    total_steps: int
    first_learn: int
    eval_every: int
    eval_episodes: int = 0
    #: the env's time limit in steps (None: none known)
    episode_limit: int | None = None

    def evals_after(self, step: int) -> int:
        """Evaluations still to come once ``step`` env steps are done (the final one included)."""
        periodic = 0
        if self.eval_every:
            periodic = max(0, (self.total_steps - 1) // self.eval_every - step // self.eval_every)
        return periodic + 1

    def seconds_left(self, step: int, pace: Pace) -> float:
        """Seconds from ``step`` to the end at ``pace``: plain steps, learning steps, evaluations."""
        plain = max(0, self.first_learn - step)
        learning = self.total_steps - max(step, self.first_learn)
        return plain * pace.plain_s + max(0, learning) * pace.learning_s + self.evals_after(step) * pace.eval_s


def eval_episode_steps(seen: float, limit: int | None) -> float:
    """Mean steps of the evaluation episodes to come: growing linearly from those seen now to halfway to the
    env's time limit by the end of the run (a quarter of the way, on average); those seen when there is no limit."""
    return seen + (limit - seen) / 4 if limit and limit > seen else seen


def time_limit(env_id: str) -> int | None:
    """The registered time limit of a gymnasium id (None: none, or not a registered id)."""
    import gymnasium as gym

    try:
        return gym.spec(env_id).max_episode_steps
    except Exception:  # noqa: BLE001 - an id a plugin env component makes: no limit known
        return None


def task_plan(key: str, specs: Sequence[Any]) -> TaskPlan:
    """The :class:`TaskPlan` of a task (its runs' specs; a lock-step group's members share one schedule)."""
    config = specs[0].config
    exp, agent = config.experiment, config.agent
    first = LearningSchedule.of(agent).first_step
    return TaskPlan(
        key,
        tuple(spec.run_id for spec in specs),
        f"{specs[0].cell}×{len(specs)}",
        exp.total_steps,
        min(first, exp.total_steps),
        exp.eval_every,
        exp.eval_episodes,
        time_limit(exp.env),
    )


class EtaModel:
    """Seconds left of a grid, from each task's steps done and measured pace.

    :param tasks: every task of the session, in dispatch order.
    :param lanes: how many tasks run at once (the executor's workers).
    """

    def __init__(self, tasks: Sequence[TaskPlan], lanes: int) -> None:
        self.tasks = list(tasks)
        self.lanes = max(1, lanes)
        self.steps: dict[str, int] = {}
        self.paces: dict[str, Pace] = {}
        self.seen_at: dict[str, float] = {}  # when each running task's steps were last seen (its pace is older)
        self.finished: set[str] = set()
        self.task_of = {run_id: task.key for task in self.tasks for run_id in task.run_ids}

    def observe(self, key: str, steps: int, now: float, pace: Pace | None = None) -> None:
        """A running task has done ``steps`` env steps (per row) at time ``now``; ``pace`` when measured."""
        if steps > self.steps.get(key, -1):
            self.steps[key], self.seen_at[key] = steps, now
        if pace is not None:
            self.paces[key] = pace

    def expect(self, key: str, pace: Pace) -> None:
        """A task's pace known before it runs (``--estimate``'s timings)."""
        self.paces[key] = pace

    def finish(self, key: str) -> None:
        self.finished.add(key)

    def measured(self) -> bool:
        """Whether any task's pace is known (before that, the ETA is the plain step-rate one)."""
        return any(pace.plain_s == pace.plain_s or pace.learning_s == pace.learning_s for pace in self.paces.values())

    def pace(self, task: TaskPlan) -> Pace:
        """The task's pace, each missing figure borrowed as the module docstring says."""
        own = self.paces.get(task.key, Pace())
        same = [self.paces[t.key] for t in self.tasks if t.shape == task.shape and t.key in self.paces]
        others = list(self.paces.values())

        def pick(field: str, *pools: Iterable[Pace]) -> float:
            value = getattr(own, field)
            for pool in pools:
                if value == value:
                    break
                values = [getattr(p, field) for p in pool if getattr(p, field) == getattr(p, field)]
                value = statistics.median(values) if values else math.nan
            return value

        plain = pick("plain_s", same, others)
        learning = pick("learning_s", same)
        if learning != learning:
            ratios = [p.learning_s / p.plain_s for p in others if p.learning_s > 0 and p.plain_s > 0]
            learning = plain * (statistics.median(ratios) if ratios else LEARN_RATIO)
        if plain != plain:  # learning seen, plain not (a resumed run): the ratio the other way
            plain = learning / LEARN_RATIO
        eval_s, greedy = pick("eval_s", same, others), pick("greedy_s", same, others)
        if task.eval_episodes and eval_s > 0 and greedy > 0:  # episodes to come last longer (module docstring)
            seen = eval_s / (task.eval_episodes * greedy)
            eval_s = task.eval_episodes * greedy * eval_episode_steps(seen, task.episode_limit)
        return Pace(plain, learning, eval_s, greedy)

    def seconds_left(self, now: float) -> float:
        """When the last task ends, the tasks laid out on :attr:`lanes` workers in dispatch order (NaN: no pace)."""
        if not self.measured():
            return math.nan
        running, queued = [], []
        for task in self.tasks:
            if task.key in self.finished:
                continue
            pace = self.pace(task)
            eval_s = pace.eval_s if pace.eval_s == pace.eval_s else 0.0
            pace = Pace(pace.plain_s, pace.learning_s, eval_s, pace.greedy_s)
            if task.key in self.steps:
                left = task.seconds_left(self.steps[task.key], pace) - (now - self.seen_at[task.key])
                running.append(max(0.0, left))
            else:
                queued.append(task.seconds_left(0, pace))
        lanes = sorted(running)[-self.lanes :] if len(running) > self.lanes else sorted(running)
        lanes += [0.0] * (self.lanes - len(lanes))
        for seconds in queued:
            lanes.sort()
            lanes[0] += seconds
        return max(lanes) if lanes else 0.0
