"""Speed against the hand-written reference, and lock-step scaling with the number of seeds.

- ``test_single_run_vs_reference``: the tutorial port of ``reference_tutorial.py``
  and dqnbench's ``train()`` on the same config (same learn steps, batch,
  network, optimiser), timing instrumentation on, interleaved in one session;
  ``extra_info["ratio"]`` is dqnbench's env steps/s over the reference's.
- ``test_lockstep_scaling``: one cell's K seeds in lock-step for K = 1, 2, 4, …,
  each K in a fresh subprocess (so its peak RSS is its own), aggregate env
  steps/s and peak memory vs K, as a ratio to the reference's single-run rate
  measured in the same session; writes ``lockstep_scaling.png`` (and
  ``.json``) into ``$DQNBENCH_BENCH_OUT`` or ``.benchmarks/``.
  With benchmarks enabled, both assert issue #18's figures for the tutorial
  agent: one run ≥ :data:`TUTORIAL_SINGLE_TARGET` × the port, K = 32 members ≥
  :data:`TUTORIAL_K32_TARGET` × the port's single-run rate.

- ``test_minatar_single_run_vs_reference`` and ``test_minatar_lockstep_vs_reference``:
  MinAtar's own ``examples/dqn.py`` ported in ``reference_minatar.py`` against
  dqnbench on the same config, ``examples/minatar-dqn.toml`` (the paper's DQN:
  ``minatar_cnn``, centered RMSProp, Huber loss, batch 32, one learn step per
  frame), on Breakout; the replay start is lowered equally on both sides so
  most of the budget learns. ``extra_info["ratio"]`` is dqnbench's env steps/s
  over the reference's: one run (target :data:`MINATAR_SINGLE_TARGET`), and K = 8
  seeds as one lock-step cell, aggregate (target :data:`MINATAR_LOCKSTEP_TARGET`).

With ``--benchmark-disable`` (the normal test run) all run on tiny budgets
as smoke tests: the figures are only meaningful from ``tox -e bench``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from dqnbench.agent.loop import train, train_lockstep
from dqnbench.agent.numerics import flush_denormals
from dqnbench.config.grid import plan_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

from ..extras import require
from .reference_tutorial import run_reference

REPO = Path(__file__).resolve().parents[2]

#: targets asserted when benchmarks are enabled (issue #18): the tutorial agent's single run against the port,
#: and K = 32 lock-step members' aggregate against the port's single run
TUTORIAL_SINGLE_TARGET, TUTORIAL_K32_TARGET = 2.5, 30.0

CONFIGS = {
    # the tutorial's agent: 4-10-2, batch 32, lr 0.01, gamma 0.9, target copy every 100 learn steps
    "tutorial": {"hidden": (10,), "batch_size": 32},
    "4-256-256-2": {"hidden": (256, 256), "batch_size": 64},
}


def tutorial_config(total_steps: int, hidden: tuple[int, ...], batch_size: int, name: str = "speed"):
    """The tutorial agent as a dqnbench config; learning starts after the 2000-transition memory fills."""
    raw = {
        "experiment": {"name": name, "total_steps": total_steps, "seeds": 1, "eval_every": 0, "eval_episodes": 1},
        "agent": {"gamma": 0.9, "lr": 0.01, "batch_size": batch_size, "learning_starts": 2001, "target_update": 100},
        "network": {"name": "mlp", "hidden": list(hidden), "init_std": 0.1},
        "replay": {"name": "uniform", "capacity": 2000},
        "exploration": {"name": "constant", "epsilon": 0.1},
    }
    registry = load_registry(load_entrypoints=False)
    spec = plan_grid(raw, Path("speed.toml"), registry).runs[0]
    chosen = choose(spec.config, registry)
    return spec, bind_components(spec.config, chosen)


def best_of_rounds(benchmark, both: Callable[[], tuple], rounds: int) -> tuple[list[tuple], float, float]:
    """``rounds`` calls of ``both`` (the first timed by pytest-benchmark), each giving ``(reference, dqnbench, …)``
    rates; the rounds, and the best rate of each side: the round least disturbed by load."""
    results = [benchmark.pedantic(both, rounds=1, iterations=1)]
    results += [both() for _ in range(rounds - 1)]
    return results, max(r[0] for r in results), max(r[1] for r in results)


def reference_rate(total_steps: int, hidden: tuple[int, ...], batch_size: int) -> float:
    start = time.perf_counter()
    run_reference(total_steps, hidden=hidden, batch_size=batch_size)
    return total_steps / (time.perf_counter() - start)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_single_run_vs_reference(benchmark, config):
    hidden, batch_size = CONFIGS[config]["hidden"], CONFIGS[config]["batch_size"]
    steps = 2_200 if benchmark.disabled else 12_000
    spec, components = tutorial_config(steps, hidden, batch_size)

    def both() -> tuple[float, float, int, float]:
        ref = reference_rate(steps, hidden, batch_size)
        log = train(spec.config, 0, components)
        learn_steps = int((log.loss == log.loss).sum())
        return ref, steps / log.train_s, learn_steps, flush_denormals(reference_rate)(steps, hidden, batch_size)

    rounds, ref, ours = best_of_rounds(benchmark, both, 1 if benchmark.disabled else 3)
    ref_flushed = max(r[3] for r in rounds)
    assert rounds[0][2] == steps - 2000  # the reference's learn steps: one per step once memory is full
    benchmark.extra_info.update(
        measured=f"env steps/s, {config} agent, dqnbench train() vs the tutorial port, best of {len(rounds)}",
        steps=steps,
        batch=batch_size,
        hidden=list(hidden),
        reference_steps_per_s=ref,
        dqnbench_steps_per_s=ours,
        ratio=ours / ref,
        # the reference with dqnbench's denormal flushing added: how much of the ratio that lever is
        reference_flushed_steps_per_s=ref_flushed,
        ratio_to_flushed_reference=ours / ref_flushed,
    )
    print(
        f"\n{config}: reference {ref:,.0f} steps/s, dqnbench {ours:,.0f} steps/s, ratio {ours / ref:.2f} "
        f"(reference with denormals flushed {ref_flushed:,.0f} steps/s, ratio {ours / ref_flushed:.2f})"
    )
    if config == "tutorial" and not benchmark.disabled:
        assert ours / ref >= TUTORIAL_SINGLE_TARGET, f"single run {ours / ref:.2f}× the port"


SCALING_SCRIPT = """
import json, resource, sys, time, torch
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from dqnbench.agent.loop import train_lockstep
from dqnbench.run.runner import bind_components, choose
from dqnbench.plugin.registry import load_registry
from tests.benchmarks.test_speed import tutorial_config
members, steps = int(sys.argv[1]), int(sys.argv[2])
spec, _ = tutorial_config(steps, (10,), 32)
registry = load_registry(load_entrypoints=False)
chosen = choose(spec.config, registry)
logs = train_lockstep(spec.config, list(range(members)), bind_components(spec.config, chosen))
train_s = sum(log.train_s for log in logs)
print(json.dumps({{"members": members, "steps_per_s": members * steps / train_s,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def lockstep_point(members: int, steps: int) -> dict:
    script = SCALING_SCRIPT.format(repo=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", script, str(members), str(steps)], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lockstep_scaling(benchmark):
    quick = benchmark.disabled
    # quick: one point (every K is the same lock-step script in its own process, at another size), 50 learning
    # steps once the 2000-transition memory is full
    ks = [2] if quick else [1, 2, 4, 8, 16, 32, 64]
    steps = 2_050 if quick else 6_000
    ref = max(reference_rate(steps, (10,), 32) for _ in range(1 if quick else 3))
    points = benchmark.pedantic(lambda: [lockstep_point(k, steps) for k in ks], rounds=1, iterations=1)
    for point in points:
        point["speedup_vs_reference"] = point["steps_per_s"] / ref
    benchmark.extra_info.update(
        measured="aggregate env steps/s and peak RSS of one lock-step cell vs members K (tutorial agent)",
        steps=steps,
        reference_steps_per_s=ref,
        points=points,
    )
    out = Path(os.environ.get("DQNBENCH_BENCH_OUT", REPO / ".benchmarks"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "lockstep_scaling.json").write_text(json.dumps({"reference_steps_per_s": ref, "points": points}, indent=1))
    scaling_figure(points, ref).savefig(out / "lockstep_scaling.png", dpi=150)
    for p in points:
        print(
            f"K={p['members']:>3}: {p['steps_per_s']:>9,.0f} steps/s = {p['speedup_vs_reference']:5.1f}× reference, "
            f"peak RSS {p['peak_rss_mb']:.0f} MB"
        )
    assert all(p["steps_per_s"] > 0 for p in points)
    if not quick:
        (k32,) = [p for p in points if p["members"] == 32]
        assert k32["speedup_vs_reference"] >= TUTORIAL_K32_TARGET, f"K = 32: {k32['speedup_vs_reference']:.1f}×"


def scaling_figure(points: list[dict], reference: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [p["members"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(ks, [p["steps_per_s"] for p in points], "o-", color="#0072B2", label="dqnbench lock-step")
    left.axhline(reference, color="#D55E00", linestyle="--", label="reference port, one seed")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="seeds trained together (K)",
        ylabel="aggregate env steps / s",
        title="Throughput vs K (CartPole-v1, tutorial agent)",
    )
    left.set_xticks(ks, [str(k) for k in ks])
    left.legend()
    right.plot(ks, [p["peak_rss_mb"] for p in points], "s-", color="#009E73")
    right.set(xscale="log", xlabel="seeds trained together (K)", ylabel="peak RSS (MB)", title="Peak memory vs K")
    right.set_xticks(ks, [str(k) for k in ks])
    return fig


#: the issue's speed targets against MinAtar's dqn.py: one run, and K = 8 lock-step seeds' aggregate
MINATAR_SINGLE_TARGET, MINATAR_LOCKSTEP_TARGET = 3.0, 10.0
MINATAR_MEMBERS = 8


def minatar_config(total_steps: int, replay_start: int, name: str = "minatar-speed"):
    """``examples/minatar-dqn.toml`` on Breakout, learning like the reference does after ``replay_start`` frames.

    The reference learns from frame ``replay_start + 1`` (``t > REPLAY_START_SIZE``)
    and dqnbench from step ``learning_starts - 1``, so ``learning_starts = replay_start + 2``
    gives both ``total_steps - replay_start - 1`` learn steps; ε stays 1 for the
    same ``replay_start`` steps (the exploration's delay), then falls linearly.
    """
    raw = tomllib.loads((REPO / "examples" / "minatar-dqn.toml").read_text(encoding="utf-8"))
    raw.pop("grid")
    raw["experiment"].update(
        name=name, env="MinAtar/Breakout-v1", total_steps=total_steps, seeds=1, eval_every=0, eval_episodes=1
    )
    raw["agent"]["learning_starts"] = replay_start + 2
    raw["exploration"]["delay"] = replay_start
    registry = load_registry(load_entrypoints=False)
    spec = plan_grid(raw, Path("minatar-speed.toml"), registry).runs[0]
    chosen = choose(spec.config, registry)
    return spec, bind_components(spec.config, chosen)


def minatar_budget(benchmark) -> tuple[int, int, int]:
    """``(env steps, replay start, rounds)``: most steps learn when timed, a smoke test otherwise."""
    return (240, 60, 1) if benchmark.disabled else (6_000, 500, 2)


def minatar_reference_rate(steps: int, replay_start: int) -> tuple[float, int]:
    """The reference's env steps/s (wall clock, like ``train_s``) and its learn steps."""
    from .reference_minatar import run_reference as run_minatar_reference  # needs dqnbench[minatar]

    start = time.perf_counter()
    counts = run_minatar_reference(steps, replay_start_size=replay_start)
    return steps / (time.perf_counter() - start), counts["learn_steps"]


def test_minatar_single_run_vs_reference(benchmark):
    require("minatar")
    steps, replay_start, rounds = minatar_budget(benchmark)
    spec, components = minatar_config(steps, replay_start)

    def both() -> tuple[float, float, int, int]:
        ref, ref_learn = minatar_reference_rate(steps, replay_start)
        log = train(spec.config, 0, components)
        return ref, steps / log.train_s, ref_learn, int((log.loss == log.loss).sum())

    results, ref, ours = best_of_rounds(benchmark, both, rounds)
    assert results[0][2] == results[0][3] == steps - replay_start - 1  # equal work: one learn step per frame
    benchmark.extra_info.update(
        measured=f"env steps/s, MinAtar DQN (examples/minatar-dqn.toml), dqnbench train() vs MinAtar's dqn.py, "
        f"best of {len(results)}",
        env="MinAtar/Breakout-v1",
        steps=steps,
        learn_steps=results[0][2],
        reference_steps_per_s=ref,
        dqnbench_steps_per_s=ours,
        ratio=ours / ref,
        rounds=[{"reference_steps_per_s": r[0], "dqnbench_steps_per_s": r[1]} for r in results],
        target=MINATAR_SINGLE_TARGET,
    )
    print(f"\nMinAtar single run: reference {ref:,.0f} steps/s, dqnbench {ours:,.0f} steps/s, ratio {ours / ref:.2f}")
    if not benchmark.disabled:
        assert ours / ref >= MINATAR_SINGLE_TARGET, f"dqnbench {ours / ref:.2f}× MinAtar's dqn.py"


def test_minatar_lockstep_vs_reference(benchmark):
    require("minatar")
    steps, replay_start, rounds = minatar_budget(benchmark)
    steps = steps // 2  # K members make each lock-step K times the work
    spec, components = minatar_config(steps, replay_start)
    seeds = list(range(MINATAR_MEMBERS))

    def both() -> tuple[float, float, list[int]]:
        ref, _ = minatar_reference_rate(steps, replay_start)
        logs = train_lockstep(spec.config, seeds, components)
        wall = sum(log.train_s for log in logs)  # each log holds its 1/K share of the cell's wall time
        return ref, len(seeds) * steps / wall, [int((log.loss == log.loss).sum()) for log in logs]

    results, ref, ours = best_of_rounds(benchmark, both, rounds)
    assert results[0][2] == [steps - replay_start - 1] * len(seeds)
    benchmark.extra_info.update(
        measured=f"aggregate env steps/s of {len(seeds)} seeds in one lock-step cell (examples/minatar-dqn.toml) "
        f"vs one run of MinAtar's dqn.py, best of {len(results)}",
        env="MinAtar/Breakout-v1",
        members=len(seeds),
        steps=steps,
        reference_steps_per_s=ref,
        dqnbench_steps_per_s=ours,
        ratio=ours / ref,
        rounds=[{"reference_steps_per_s": r[0], "dqnbench_steps_per_s": r[1]} for r in results],
        target=MINATAR_LOCKSTEP_TARGET,
    )
    print(f"\nMinAtar K={len(seeds)}: reference {ref:,.0f} steps/s, dqnbench {ours:,.0f} aggregate, {ours / ref:.2f}×")
    if not benchmark.disabled:
        assert ours / ref >= MINATAR_LOCKSTEP_TARGET, f"dqnbench K={len(seeds)} {ours / ref:.2f}× MinAtar's dqn.py"
