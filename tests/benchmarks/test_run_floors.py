"""How far a whole run can go: the CleanRL and MinAtar configs written as lean scripts (``floor_runs.py``).

Issue #27 asks dqnbench for ≥ 2× the CleanRL port's env steps/s on its config and ≥ 1.55× MinAtar's
``dqn.py``. These benchmarks measure, interleaved in rounds (best of each side), the reference, the
floor script doing the same work with nothing else, and dqnbench's ``train()``:

- ``floor_x_reference``: the most any PyTorch implementation of that arithmetic gains over the reference
  on this machine. A target above it cannot be met by removing overhead.
- ``dqnbench_x_reference`` and ``dqnbench_x_floor``: where dqnbench stands between the two (below 1 over
  the floor: dqnbench pays for its records and checks; above: its faster paths beat the plain arithmetic).

With ``--benchmark-disable`` they are smoke tests of a few hundred steps that check the three sides do
the same learn steps. Figures: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import numpy as np

from dqnbench.agent.loop import train, train_lockstep
from dqnbench.agent.numerics import flush_denormals
from tests.extras import require

from .floor_runs import cleanrl_floor, minatar_floor, minatar_lockstep_floor
from .reference_cleanrl import run_reference as run_cleanrl
from .test_cleanrl import GRID, learning_starts, port_job_wall, single_config
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

    def one_round() -> tuple[float, float, float]:
        port_s, port = timed(run_cleanrl, "CartPole-v1", steps, seed=1, learning_starts=starts)
        floor_s, floor = timed(cleanrl_floor, "CartPole-v1", steps, 1, starts)
        log = train(config, 1, components)
        assert port["learn_steps"] == floor["learn_steps"] == int(np.isfinite(log.loss).sum())
        return steps / port_s, steps / floor_s, steps / log.train_s

    results = [benchmark.pedantic(one_round, rounds=1, iterations=1)] + [one_round() for _ in range(rounds - 1)]
    report(benchmark, results, steps, "CleanRL classic-control config, CartPole-v1")


def learn_steps_of(runs: list[dict]) -> list[tuple]:
    """Each run's learn steps by env and seed (the runs finish in any order)."""
    return sorted((r["env"], r["seed"], r["learn_steps"]) for r in runs)


def test_cleanrl_job_floor(benchmark):
    """The job of ``test_job_vs_cleanrl`` (3 envs × 3 seeds, 2 processes at a time) as the port and as the floor
    script: what running single-run scripts gains at most. dqnbench's job goes further only by lock-step."""
    steps = 300 if benchmark.disabled else 30_000
    envs = tomllib.loads(GRID.read_text(encoding="utf-8"))["grid"]["experiment.env"][: 1 if benchmark.disabled else 3]
    seeds = [0] if benchmark.disabled else [0, 1, 2]

    def both() -> tuple[float, float]:
        port, port_runs = port_job_wall(envs, seeds, steps)
        floor, floor_runs = port_job_wall(envs, seeds, steps, script=Path(__file__).with_name("floor_runs.py"))
        assert learn_steps_of(port_runs) == learn_steps_of(floor_runs)
        return port, floor

    port, floor = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(steps=steps, port_wall_s=port, floor_wall_s=floor, floor_x_port=port / floor)
    print(f"\nCleanRL job: port {port:.1f} s, floor script {floor:.1f} s ({port / floor:.2f}× less wall time)")


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
