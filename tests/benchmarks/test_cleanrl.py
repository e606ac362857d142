"""dqnbench against CleanRL's classic-control DQN (``reference_cleanrl.py``, a port of ``cleanrl/dqn.py``), issue #27.

- ``test_single_run_vs_cleanrl``: one run of ``examples/cleanrl-classic.toml`` on
  CartPole-v1 against the port on the same settings, interleaved rounds, best of
  each; ``extra_info["ratio"]`` is dqnbench's env steps/s over the port's (target
  :data:`SINGLE_TARGET`).
- ``test_job_vs_cleanrl``: the grid's whole job, 3 envs × 3 seeds, with dqnbench's
  default executor on 2 workers (its lock-step groups), against the port's 9 runs
  in 2 processes at a time; ``extra_info["ratio"]`` is the port's wall time over
  dqnbench's (target :data:`JOB_TARGET`).

Both sides run the same reduced budget of env steps; ``learning_starts`` is scaled
with it (2% of the run, as 10,000 of 500,000), so learning and exploration take the
shares of the run they take at full length. Under ``--benchmark-disable`` both are
smoke tests of a few hundred steps, in this process.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

import dqnbench
from dqnbench.agent.loop import train
from dqnbench.config.grid import plan_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

from .reference_cleanrl import run_reference

REPO = Path(__file__).resolve().parents[2]
GRID = REPO / "examples" / "cleanrl-classic.toml"
PORT = Path(__file__).with_name("reference_cleanrl.py")
#: the issue's targets: one run's env steps/s over the port's, and the port's job wall time over dqnbench's
SINGLE_TARGET, JOB_TARGET = 2.0, 3.0
WORKERS = 2


def learning_starts(steps: int) -> int:
    """The port's ``learning_starts`` for a run of ``steps``: 2% of it, CleanRL's 10,000 of 500,000."""
    return max(128, steps // 50)


def grid_tables(steps: int) -> dict:
    """``examples/cleanrl-classic.toml`` at ``steps`` env steps a run (dqnbench learns from the port's first step)."""
    raw = tomllib.loads(GRID.read_text(encoding="utf-8"))
    raw["experiment"]["total_steps"] = steps
    raw["agent"]["learning_starts"] = learning_starts(steps) + 2  # dqn.py learns at steps > learning_starts
    return raw


def single_config(steps: int, env: str = "CartPole-v1", eval_episodes: int | None = None):
    """One run of the grid's config on ``env`` (``eval_episodes``: fewer final evaluation episodes, for smoke runs)."""
    raw = grid_tables(steps)
    raw.pop("grid")
    raw["experiment"].update(env=env, seeds=1)
    if eval_episodes is not None:
        raw["experiment"]["eval_episodes"] = eval_episodes
    registry = load_registry(load_entrypoints=False)
    config = plan_grid(raw, GRID, registry).runs[0].config
    return config, bind_components(config, choose(config, registry))


def test_single_run_vs_cleanrl(benchmark):
    quick = benchmark.disabled
    steps, rounds = (700, 1) if quick else (25_000, 3)
    config, components = single_config(steps)

    def both() -> tuple[float, float, int, int]:
        started = time.perf_counter()
        counts = run_reference("CartPole-v1", steps, seed=1, learning_starts=learning_starts(steps))
        port = steps / (time.perf_counter() - started)
        log = train(config, 1, components)
        return port, steps / log.train_s, counts["learn_steps"], int(np.isfinite(log.loss).sum())

    results = [benchmark.pedantic(both, rounds=1, iterations=1)] + [both() for _ in range(rounds - 1)]
    port, ours = max(r[0] for r in results), max(r[1] for r in results)
    assert results[0][2] == results[0][3]  # the same learn steps on both sides
    benchmark.extra_info.update(
        measured=f"env steps/s, CleanRL's classic-control DQN on CartPole-v1, dqnbench train() vs the port of "
        f"cleanrl/dqn.py, best of {rounds} interleaved rounds",
        steps=steps,
        learn_steps=results[0][2],
        cleanrl_steps_per_s=port,
        dqnbench_steps_per_s=ours,
        ratio=ours / port,
        target=SINGLE_TARGET,
        rounds=[{"cleanrl_steps_per_s": r[0], "dqnbench_steps_per_s": r[1]} for r in results],
    )
    print(f"\nsingle run: CleanRL port {port:,.0f} steps/s, dqnbench {ours:,.0f} steps/s, ratio {ours / port:.2f}")
    if not quick:
        assert ours / port >= SINGLE_TARGET, f"dqnbench {ours / port:.2f}× the CleanRL port"


def port_job_wall(
    envs: list[str], seeds: list[int], steps: int, script: Path = PORT, tasks: list[tuple[str, list[int]]] | None = None
) -> tuple[float, list[dict]]:
    """Wall seconds for the port (or another ``script`` taking its arguments) to train every (env, seed),
    :data:`WORKERS` processes at a time, and each run's JSON line. ``tasks``: instead, one process per
    (env, seeds) for a script that trains several seeds as one program (``floor_runs.py``)."""
    queue = list(tasks) if tasks is not None else [(env, [seed]) for env in envs for seed in seeds]
    running: list[subprocess.Popen] = []
    out: list[dict] = []
    started = time.perf_counter()
    while queue or running:
        while queue and len(running) < WORKERS:
            env, task_seeds = queue.pop(0)
            args = [sys.executable, str(script), env, ",".join(map(str, task_seeds)), str(steps)]
            args.append(str(learning_starts(steps)))
            running.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO))
        time.sleep(0.01)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            stdout, _ = proc.communicate()
            assert proc.returncode == 0, stdout
            out += [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return time.perf_counter() - started, out


def test_job_vs_cleanrl(benchmark, tmp_path):
    quick = benchmark.disabled
    steps = 300 if quick else 30_000
    raw = grid_tables(steps)
    envs, seeds = raw["grid"]["experiment.env"], list(range(raw["experiment"]["seeds"]))
    if quick:
        envs = envs[:1]
        raw["grid"]["experiment.env"] = envs
    grid = tmp_path / "cleanrl-classic.toml"
    grid.write_text(toml_text(raw), encoding="utf-8")

    def measure() -> tuple[float, float, dqnbench.Results, list[dict]]:
        started = time.perf_counter()
        executor = {"executor": "serial"} if quick else {"workers": WORKERS}  # quick: no process start-ups
        results = dqnbench.run_grid(grid, tmp_path / "out", stream=io.StringIO(), plots=False, **executor)
        ours = time.perf_counter() - started
        if quick:
            started = time.perf_counter()
            runs = [run_reference(envs[0], steps, 0, learning_starts=learning_starts(steps))]
            return ours, time.perf_counter() - started, results, runs
        port, runs = port_job_wall(envs, seeds, steps)
        return ours, port, results, runs

    ours, port, results, runs = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert set(results.runs.status) == {"ok"}
    benchmark.extra_info.update(
        measured=f"wall s of {len(envs)} envs × {len(seeds)} seeds × {steps} steps (examples/cleanrl-classic.toml): "
        f"dqnbench run_grid, {WORKERS} workers, vs the CleanRL port {WORKERS} processes at a time",
        steps=steps,
        dqnbench_wall_s=ours,
        cleanrl_wall_s=port,
        ratio=port / ours,
        target=JOB_TARGET,
        lockstep_members=sorted(results.runs.lockstep_members.tolist()),
        cleanrl_runs=len(runs),
    )
    print(f"\njob: dqnbench {ours:.1f} s, CleanRL port {port:.1f} s ({len(runs)} runs), ratio {port / ours:.2f}")
    if not quick:
        assert port / ours >= JOB_TARGET, f"the CleanRL port's job took {port / ours:.2f}× dqnbench's"


def toml_text(tables: dict) -> str:
    """The grid's tables as TOML (flat sections of numbers, strings and lists: all this grid has)."""
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(key) if '.' in key else key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"
