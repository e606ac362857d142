"""``--dry-run --estimate``: what a grid will cost on this machine, from a few hundred timed steps per task shape.

Each distinct task shape (a cell's components and sizes, and its lock-step
members; learning rates and other numbers that do not change the work are not
a shape) is built as a worker builds it and stepped by the loop's own
:class:`~dqnbench.agent.loop.Agent`: :data:`PLAIN_STEPS` steps before learning,
then about :data:`LEARN_PHASES` learning phases (learning starts right away,
on the grid's ``train_every`` and ``gradient_steps``). That gives seconds per
plain step, per learning phase and per greedy step; the plan's real schedule
(learning_starts, train_every, evaluations) prices each task, and the tasks are
laid out on the executor's workers as the ETA lays them out (:mod:`dqnbench.run.eta`).
Evaluation episodes are taken to grow from an untrained agent's (seen while
timing) towards the env's time limit (:func:`~dqnbench.run.eta.eval_episode_steps`). Memory per task: this
process's resident size (a worker has the same imports) plus the replay at
full capacity, the networks with gradients and Adam's moments, and the step records.
The wall time adds what ``dqnbench run`` spends around the tasks: this process's
age (start-up, imports and the pre-flight the run repeats) and, for executors
that start workers, the time one takes to import dqnbench (timed here too).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dqnbench.agent.loop import build
from dqnbench.agent.numerics import flushing_denormals
from dqnbench.agent.records import StepRecords, steps_window
from dqnbench.agent.watch import Pace
from dqnbench.config.grid import Plan, RunSpec
from dqnbench.config.schedule import LearningSchedule
from dqnbench.config.schema import RunConfig
from dqnbench.run.eta import EtaModel, eval_episode_steps, task_plan

#: env steps timed before learning, and learning phases timed after (per task shape)
PLAIN_STEPS = 200
LEARN_PHASES = 100
#: flat config keys that change what is learned but not the work per step (not part of a shape)
COST_FREE = (
    "agent.lr",
    "agent.gamma",
    "agent.target_update",
    "experiment.total_steps",
    "experiment.eval_every",
    "experiment.eval_episodes",
)


@dataclass(frozen=True)
class ShapeCost:
    """A task shape's measured costs (all its rows together) and memory."""

    #: seconds per env step without learning (act, env, store, records)
    plain_s: float
    #: seconds one learning phase adds (``gradient_steps`` gradient steps)
    learn_s: float
    #: seconds per greedy evaluation step (act and env)
    greedy_s: float
    #: env steps per evaluation episode (see the module docstring)
    eval_episode_steps: float
    #: bytes of a task at full replay capacity
    peak_bytes: float
    #: the share of a core this process had while timing (CPU time / wall time; < 1 on a loaded machine)
    cpu_share: float = 1.0

    def pace(self, config: RunConfig) -> Pace:
        """The :class:`Pace` of a task of this shape on ``config``'s schedule."""
        exp = config.experiment
        learning = self.plain_s + self.learn_s * LearningSchedule.of(config.agent).phases_per_step
        return Pace(self.plain_s, learning, exp.eval_episodes * self.eval_episode_steps * self.greedy_s)


@dataclass(frozen=True)
class Estimate:
    """A grid's wall time on ``lanes`` workers and the largest task's peak memory."""

    wall_s: float
    peak_bytes: float
    #: of ``wall_s``: the tasks on their workers, and the run's start-up (the parent's, a worker's)
    tasks_s: float
    startup_s: float
    lanes: int
    shapes: int
    timing_s: float

    def line(self) -> str:
        seconds = int(round(self.wall_s))
        clock = f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return f"estimate: {clock} wall, {self.peak_bytes / 2**20:,.0f} MiB peak per task"


def shape_key(specs: tuple[RunSpec, ...], stacked: bool) -> str:
    """Tasks of one key cost the same per step: the config without :data:`COST_FREE` keys, and the members."""
    flat = {
        key: value
        for key, value in specs[0].config.flat().items()
        if key not in COST_FREE and not (key.startswith("exploration.") and key != "exploration.name")
        and not key.startswith("scores.")
    }  # fmt: skip
    return json.dumps([flat, len(specs), stacked], sort_keys=True, default=str)


def time_shape(
    config: RunConfig, seeds: list[int], components: Any, stacked: bool, fused: Any = None, memory_bytes: Any = None
) -> ShapeCost:
    """Build a task as a worker does and step it: plain steps, then learning phases (see the module docstring).

    ``fused``: a fused group's member-wise values (:class:`~dqnbench.agent.loop.MemberAgent`);
    ``memory_bytes``: the replay factory's memory need, where it says it.
    """
    agent_config = config.agent
    starts = max(PLAIN_STEPS, agent_config.batch_size)
    steps = starts + LEARN_PHASES * agent_config.train_every
    timed = dataclasses.replace(
        config,
        experiment=dataclasses.replace(config.experiment, total_steps=steps),
        agent=dataclasses.replace(agent_config, learning_starts=starts),
    )
    if fused is not None and fused.learning_starts is not None:
        fused = dataclasses.replace(fused, learning_starts=(starts,) * len(seeds))
    with flushing_denormals():  # the numeric mode train_runs runs in
        return _time_steps(timed, config, seeds, components, stacked, starts, steps, fused, memory_bytes)


def _time_steps(
    timed: RunConfig, config: RunConfig, seeds: list[int], components: Any, stacked: bool, starts: int, steps: int,
    fused: Any = None, memory_bytes: Any = None,
) -> ShapeCost:  # fmt: skip
    """:func:`time_shape`'s loop: ``starts`` plain steps, then learning ones, each step's wall time recorded."""
    agent, envs, eval_envs = build(timed, seeds, components, stacked, fused)
    eval_envs.close()
    rows = len(seeds)
    records = StepRecords(steps, rows, steps_window(steps))
    obs, _ = envs.reset(seed=seeds[0])
    wall, act_env, learned, lengths = np.zeros(steps), np.zeros(steps), np.zeros(steps, bool), []
    running = np.zeros(rows)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps):
        started = time.perf_counter()
        out = agent.step(envs, obs, step, time.perf_counter)
        records.record(step, out.rewards, out.losses, out.t_act, out.t_env, out.t_learn)
        obs = out.next_obs
        wall[step], act_env[step], learned[step] = (
            time.perf_counter() - started,
            out.t_act + out.t_env,
            out.losses is not None,
        )
        running += 1
        for k in np.flatnonzero(out.terminated | out.truncated):
            lengths.append(running[k])
            running[k] = 0
    cpu_share = (time.process_time() - cpu_start) / max(time.perf_counter() - wall_start, 1e-9)
    envs.close()
    plain = wall[10:starts]  # the first steps warm caches up
    limit = getattr(getattr(envs, "spec", None), "max_episode_steps", None)
    episode = eval_episode_steps(float(np.mean(lengths)) if lengths else float(steps), limit)
    # means, not medians: on a loaded machine the time slices lost to other processes are part of the cost
    return ShapeCost(
        plain_s=float(np.mean(plain)),
        learn_s=max(0.0, float(np.mean(wall[learned])) - float(np.mean(plain))) if learned.any() else 0.0,
        greedy_s=float(np.mean(act_env[10:starts])),
        eval_episode_steps=episode,
        peak_bytes=task_bytes(config, agent, rows, memory_bytes),
        cpu_share=min(1.0, cpu_share),
    )


def task_bytes(config: RunConfig, agent: Any, rows: int, memory_bytes: Any = None) -> float:
    """A task's memory at full replay: this process's resident size, the replay, networks and optimizer, records.

    ``memory_bytes``: the replay factory's own figure (``factory.memory_bytes``), where it gives one.
    """
    replay = config.replay
    members = rows if rows > 1 else None
    needed = None if memory_bytes is None else memory_bytes(replay.capacity, agent.obs_spec, members, **replay.params)
    if needed is None:  # a plugin's replay: obs and next_obs rows, as the simplest storage keeps them
        needed = 2 * int(np.prod(agent.obs_spec.shape)) * agent.obs_spec.dtype.itemsize * replay.capacity * rows
    params = sum(p.numel() * p.element_size() for p in agent.nets.params)
    total = config.experiment.total_steps
    record_rows = math.ceil(total / steps_window(total, config.experiment.steps_window))
    records = record_rows * (12 * rows + 40)  # reward, loss, q_max per row; times, epsilon, learn count
    return resident_bytes() + needed + 5 * params + records  # online, target, gradients, two Adam moments


def resident_bytes() -> float:
    """This process's resident memory (Linux: /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def crowding(lanes: int, share: float, cores: int, grouped: bool) -> float:
    """How much slower each of ``lanes`` workers runs than the timing did (with ``share`` of a core).

    An idle machine: lanes beyond the cores share them. A loaded one (``share``
    < 0.9) where the kernel schedules this session as one group (Linux's
    autogroup): the workers split the share the timing had, whatever their
    number. Without such grouping each worker gets about that share.
    """
    if share >= 0.9:
        return max(1.0, lanes / cores)
    capacity = share if grouped else share * lanes
    return share / min(1.0, capacity / lanes)


def autogrouped() -> bool:
    """Whether Linux schedules each session's processes as one group (``sched_autogroup_enabled``)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def worker_start_s() -> float:
    """Seconds a fresh worker process takes to import what a task needs."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dqnbench.run.task"], check=False, capture_output=True)
    return time.perf_counter() - started


def estimate(
    plan: Plan, registry: Any, slots: int, lockstep: bool = True, workers_start: bool = True, fuse: bool = True
) -> Estimate:
    """Time each task shape of ``plan`` and lay its tasks out on ``slots`` workers (``workers_start``: in fresh
    processes, as the process executor does)."""
    from dqnbench.run.runner import make_tasks, planned_groups
    from dqnbench.run.task import bind_components, bind_fused, choose, single_thread

    age = process_age_s()
    started = time.perf_counter()
    groups = planned_groups(plan, registry, slots, io.StringIO(), fuse) if lockstep else {}
    tasks = make_tasks(list(plan.runs), (), True, groups)
    costs: dict[str, ShapeCost] = {}
    model = EtaModel([task_plan(task.key, task.specs) for task in tasks], slots)
    with single_thread(), torch.random.fork_rng(devices=[]):
        for task in tasks:
            key = shape_key(task.specs, task.stacked)
            if key not in costs:
                config = task.specs[0].config
                chosen = choose(config, registry)
                components, fused = (
                    bind_fused([spec.config for spec in task.specs], chosen)
                    if task.fused
                    else (bind_components(config, chosen), None)
                )
                memory_bytes = getattr(chosen["replay"].factory, "memory_bytes", None)
                costs[key] = time_shape(
                    config, [spec.seed for spec in task.specs], components, task.stacked, fused, memory_bytes
                )
            model.expect(task.key, costs[key].pace(task.specs[0].config))
    lanes = min(slots, len(tasks))
    share = min(cost.cpu_share for cost in costs.values())
    tasks_s = model.seconds_left(0.0) * crowding(lanes, share, os.cpu_count() or 1, autogrouped())
    startup_s = age + (worker_start_s() if workers_start else 0.0)
    return Estimate(
        tasks_s + startup_s,
        max(cost.peak_bytes for cost in costs.values()),
        tasks_s,
        startup_s,
        lanes,
        len(costs),
        time.perf_counter() - started,
    )


def dry_run_estimate(
    plan: Plan, registry: Any, executor: str, workers: int | None, asked: bool, lockstep: bool, fuse: bool = True
) -> str:
    """The ``--dry-run`` line on cost: the estimate when asked for, else a note that none was made."""
    if not asked:
        return "estimate: none made (add --estimate to time each task shape here and price the grid)"
    slots_for = getattr(registry.get("executor", executor).factory, "slots", None)
    slots = slots_for(workers) if callable(slots_for) else (workers or 1)
    result = estimate(plan, registry, slots, lockstep, workers_start=executor != "serial", fuse=fuse)
    shapes = "shape" if result.shapes == 1 else "shapes"
    return (
        f"{result.line()}\n  ({result.tasks_s:,.0f} s of tasks on {result.lanes} worker"
        f"{'s' if result.lanes > 1 else ''} of the {executor} executor, {result.startup_s:,.0f} s of start-up; "
        f"{result.shapes} task {shapes} timed in {result.timing_s:.1f} s; plots not included)"
    )
