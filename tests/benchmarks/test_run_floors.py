"""How far a whole run can go: the CleanRL and MinAtar configs written as lean scripts (``floor_runs.py``).

Issue #27 asks dqnbench for ≥ 2× the CleanRL port's env steps/s on its config and ≥ 1.55× MinAtar's
``dqn.py``. These benchmarks measure, interleaved in rounds (best of each side), the reference, the
floor script doing the same work with nothing else, and dqnbench's ``train()``:

- ``floor_x_reference``: what the plain arithmetic (autograd, fused optimizers) gains over the reference
  on this machine. On the CleanRL config a second floor derives the MLP's learn step by hand, as
  dqnbench's ``mlp`` path does (``hand_derived_floor_x_reference``): the tighter floor of the two.
- ``dqnbench_x_reference`` and ``dqnbench_x_floor``: where dqnbench stands between the two (below 1 over
  the floor: dqnbench pays for its records and checks; above: its faster paths beat the plain arithmetic).

With ``--benchmark-disable`` they are smoke tests of a few hundred steps that check the three sides do
the same learn steps. Figures: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import dqnbench
from dqnbench.agent.loop import train, train_lockstep
from dqnbench.agent.numerics import flush_denormals
from dqnbench.config.grid import load_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import planned_groups
from tests.extras import require

from .floor_runs import cleanrl_floor, cleanrl_lockstep_floor, minatar_floor, minatar_lockstep_floor
from .reference_cleanrl import run_reference as run_cleanrl
from .test_cleanrl import PORT, WORKERS, grid_tables, learning_starts, port_job_wall, single_config, toml_text
from .test_speed import minatar_config, minatar_reference_rate


def timed(fn, *args, **kwargs) -> tuple[float, dict]:
    started = time.perf_counter()
    counts = fn(*args, **kwargs)
    return time.perf_counter() - started, counts


def report(benchmark, rounds: list[tuple[float, float, float]], steps: int, name: str) -> tuple[float, float, float]:
    """Best rate of each side over the rounds, their ratios into ``extra_info``, and a printed line."""
    reference, floor, ours = (max(r[i] for r in rounds) for i in range(3))
    benchmark.extra_info.update(
        config=name, steps=steps, reference_steps_per_s=reference, floor_steps_per_s=floor,
        dqnbench_steps_per_s=ours, floor_x_reference=floor / reference, dqnbench_x_reference=ours / reference,
        dqnbench_x_floor=ours / floor, rounds=[dict(zip(("reference", "floor", "dqnbench"), r)) for r in rounds],
    )  # fmt: skip
    print(
        f"\n{name}: reference {reference:,.0f} steps/s, floor {floor:,.0f} ({floor / reference:.2f}×), "
        f"dqnbench {ours:,.0f} ({ours / reference:.2f}× the reference, {ours / floor:.2f}× the floor)"
    )
    return reference, floor, ours


@flush_denormals
def test_cleanrl_config_floor(benchmark):
    steps, rounds = (700, 1) if benchmark.disabled else (25_000, 3)
    starts = learning_starts(steps)
    config, components = single_config(steps)

    hand_derived: list[float] = []  # the floor with the learn step derived by hand (StackedMLP, K = 1)

    def one_round() -> tuple[float, float, float]:
        port_s, port = timed(run_cleanrl, "CartPole-v1", steps, seed=1, learning_starts=starts)
        floor_s, floor = timed(cleanrl_floor, "CartPole-v1", steps, 1, starts)
        hand_s, (hand,) = timed(cleanrl_lockstep_floor, "CartPole-v1", steps, [1], starts)
        log = train(config, 1, components)
        assert port["learn_steps"] == floor["learn_steps"] == hand["learn_steps"] == int(np.isfinite(log.loss).sum())
        hand_derived.append(steps / hand_s)
        return steps / port_s, steps / floor_s, steps / log.train_s

    results = [benchmark.pedantic(one_round, rounds=1, iterations=1)] + [one_round() for _ in range(rounds - 1)]
    reference, _, ours = report(benchmark, results, steps, "CleanRL classic-control config, CartPole-v1")
    hand = max(hand_derived)
    benchmark.extra_info.update(
        hand_derived_floor_steps_per_s=hand, hand_derived_floor_x_reference=hand / reference,
        dqnbench_x_hand_derived_floor=ours / hand,
    )  # fmt: skip
    print(f"  floor, learn step derived by hand: {hand:,.0f} ({hand / reference:.2f}×; dqnbench {ours / hand:.2f}× it)")


def learn_steps_of(runs: list[dict]) -> list[tuple]:
    """Each run's learn steps by env and seed (the runs finish in any order)."""
    return sorted((r["env"], r["seed"], r["learn_steps"]) for r in runs)


def lockstep_tasks(grid: Path, workers: int) -> list[tuple[str, list[int]]]:
    """The (env, seeds) of each lock-step group dqnbench's planner makes of ``grid`` for ``workers``, in grid order."""
    registry = load_registry()
    groups = planned_groups(load_grid(grid, registry), registry, workers, io.StringIO())
    return [(g[0].config.experiment.env, [spec.seed for spec in g]) for parts in groups.values() for g in parts]


def test_cleanrl_job_floor(benchmark, tmp_path):
    """The job of ``test_job_vs_cleanrl`` (3 envs × 3 seeds, 2 processes at a time) four ways, one after the other
    in two rounds of alternating order (best of each):
    the port's 9 runs; the floor script's 9 single runs (what single-run scripts gain at most); the floor script's
    lock-step groups (``cleanrl_lockstep_floor``, in the groups dqnbench's planner makes, so the same tasks on
    the same 2 workers: the job's floor); and dqnbench's ``run_grid``. ``extra_info``: each side's wall time and
    the port's over it."""
    quick = benchmark.disabled
    steps = 300 if quick else 30_000
    raw = grid_tables(steps)
    if quick:  # one env, two seeds in one group: every path once, in a few seconds
        raw["grid"]["experiment.env"] = raw["grid"]["experiment.env"][:1]
        raw["experiment"]["seeds"] = 2
    envs, seeds = raw["grid"]["experiment.env"], list(range(raw["experiment"]["seeds"]))
    grid = tmp_path / "cleanrl-classic.toml"
    grid.write_text(toml_text(raw), encoding="utf-8")
    tasks = lockstep_tasks(grid, 1 if quick else WORKERS)
    script = Path(__file__).with_name("floor_runs.py")

    def single_runs(script: Path, run: Callable[..., dict]) -> tuple[float, list[dict]]:
        if not quick:
            return port_job_wall(envs, seeds, steps, script=script)
        started = time.perf_counter()  # quick: in this process, no interpreter start-ups
        starts = learning_starts(steps)
        runs = [{"env": e, "seed": seed, **run(e, steps, seed, learning_starts=starts)} for e in envs for seed in seeds]
        return time.perf_counter() - started, runs

    def dqnbench_job() -> tuple[float, list[dict]]:
        out = tmp_path / f"out-{time.perf_counter_ns()}"  # a fresh directory: another round's would be resumed
        started = time.perf_counter()
        executor = {"executor": "serial"} if quick else {"workers": WORKERS}
        results = dqnbench.run_grid(grid, out, stream=io.StringIO(), plots=False, **executor)
        assert set(results.runs.status) == {"ok"}
        return time.perf_counter() - started, []

    sides: dict[str, Callable[[], tuple[float, list[dict]]]] = {
        "port": lambda: single_runs(PORT, run_cleanrl),
        "floor": lambda: single_runs(script, cleanrl_floor),
        "lockstep_floor": lambda: port_job_wall(envs, seeds, steps, script=script, tasks=tasks),
        "dqnbench": dqnbench_job,
    }

    def one_round(order: list[str]) -> dict[str, float]:
        walls, runs = {}, {}
        for side in order:
            walls[side], runs[side] = sides[side]()
        assert learn_steps_of(runs["port"]) == learn_steps_of(runs["floor"]) == learn_steps_of(runs["lockstep_floor"])
        return walls

    # rounds in alternating order (the machine's drift falls on every side), best wall time of each side
    rounds = [benchmark.pedantic(one_round, args=(list(sides),), rounds=1, iterations=1)]
    rounds += [one_round(list(sides)[:: (-1) ** r]) for r in range(1, 1 if quick else 2)]
    walls = {side: min(r[side] for r in rounds) for side in sides}
    benchmark.extra_info.update(
        steps=steps, tasks=[f"{env} {members}" for env, members in tasks],
        **{f"{side}_wall_s": s for side, s in walls.items()},
        **{f"port_over_{side}": walls["port"] / s for side, s in walls.items() if side != "port"},
        rounds=rounds,
    )  # fmt: skip
    print(
        f"\nCleanRL job: port {walls['port']:.1f} s; floor, single runs {walls['floor']:.1f} s "
        f"({walls['port'] / walls['floor']:.2f}× less); floor, lock-step groups {walls['lockstep_floor']:.1f} s "
        f"({walls['port'] / walls['lockstep_floor']:.2f}×); dqnbench {walls['dqnbench']:.1f} s "
        f"({walls['port'] / walls['dqnbench']:.2f}×) in groups {tasks}; rounds: {rounds}"
    )


@flush_denormals
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_cleanrl_lockstep_group_floor(benchmark, env_id):
    """One lock-step group of the CleanRL job (3 seeds of one env as one program) in one process: the port's
    single run (the reference), the floor script's group (``cleanrl_lockstep_floor``) and dqnbench's
    ``train_lockstep``, interleaved, best of rounds; the groups' rates are aggregate env steps/s. Closer to the
    arithmetic than the job's wall times, which also hold process start-ups and whatever else the machine runs."""
    steps, rounds = (300, 1) if benchmark.disabled else (15_000, 3)
    starts, seeds = learning_starts(steps), [0, 1, 2]
    config, components = single_config(steps, env_id, eval_episodes=1 if benchmark.disabled else None)

    def one_round() -> tuple[float, float, float]:
        port_s, port = timed(run_cleanrl, env_id, steps, seed=0, learning_starts=starts)
        floor_s, floor = timed(cleanrl_lockstep_floor, env_id, steps, seeds, starts)
        logs = train_lockstep(config, seeds, components)
        assert [port["learn_steps"]] * 3 == [run["learn_steps"] for run in floor]
        assert [port["learn_steps"]] * 3 == [int(np.isfinite(log.loss).sum()) for log in logs]
        wall = sum(log.train_s for log in logs)  # each log holds its 1/K share of the group's wall time
        return steps / port_s, len(seeds) * steps / floor_s, len(seeds) * steps / wall

    results = [benchmark.pedantic(one_round, rounds=1, iterations=1)] + [one_round() for _ in range(rounds - 1)]
    report(benchmark, results, steps, f"CleanRL config, {env_id}, K = 3 lock-step (aggregate)")


@flush_denormals
def test_minatar_config_floor(benchmark):
    require("minatar")
    steps, replay_start, rounds = (240, 60, 1) if benchmark.disabled else (6_000, 500, 2)
    spec, components = minatar_config(steps, replay_start)

    def one_round() -> tuple[float, float, float]:
        reference, reference_learn = minatar_reference_rate(steps, replay_start)
        floor_s, floor = timed(minatar_floor, steps, replay_start_size=replay_start)
        log = train(spec.config, 0, components)
        assert reference_learn == floor["learn_steps"] == int(np.isfinite(log.loss).sum())
        return reference, steps / floor_s, steps / log.train_s

    results = [benchmark.pedantic(one_round, rounds=1, iterations=1)] + [one_round() for _ in range(rounds - 1)]
    report(benchmark, results, steps, "MinAtar DQN, Breakout")


@flush_denormals
def test_minatar_lockstep_floor(benchmark):
    """K = 8 MinAtar runs as one program: aggregate env steps/s of the floor script (``torch.vmap`` over stacked
    networks) and of dqnbench's lock-step group, each over the reference's single run (``test_speed.py``'s
    ``test_minatar_lockstep_vs_reference`` measures the same dqnbench side)."""
    require("minatar")
    steps, replay_start, rounds = (120, 60, 1) if benchmark.disabled else (3_000, 500, 2)
    members = 8
    spec, components = minatar_config(steps, replay_start)

    def one_round() -> tuple[float, float, float]:
        reference, _ = minatar_reference_rate(steps, replay_start)
        floor_s, floor = timed(minatar_lockstep_floor, steps, members, replay_start_size=replay_start)
        logs = train_lockstep(spec.config, list(range(members)), components)
        assert [floor["learn_steps"]] * members == [int(np.isfinite(log.loss).sum()) for log in logs]
        wall = sum(log.train_s for log in logs)  # each log holds its 1/K share of the group's wall time
        return reference, members * steps / floor_s, members * steps / wall

    results = [benchmark.pedantic(one_round, rounds=1, iterations=1)] + [one_round() for _ in range(rounds - 1)]
    report(benchmark, results, steps, f"MinAtar DQN, Breakout, K = {members} lock-step (aggregate)")
