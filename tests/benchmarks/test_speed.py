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

With ``--benchmark-disable`` (the normal test run) both run on tiny budgets
as smoke tests: the figures are only meaningful from ``tox -e bench``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dqnbench.agent.loop import train
from dqnbench.agent.numerics import flush_denormals
from dqnbench.config.grid import plan_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

from .reference_tutorial import run_reference

REPO = Path(__file__).resolve().parents[2]

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


def reference_rate(total_steps: int, hidden: tuple[int, ...], batch_size: int) -> float:
    start = time.perf_counter()
    run_reference(total_steps, hidden=hidden, batch_size=batch_size)
    return total_steps / (time.perf_counter() - start)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_single_run_vs_reference(benchmark, config):
    hidden, batch_size = CONFIGS[config]["hidden"], CONFIGS[config]["batch_size"]
    steps = 2_500 if benchmark.disabled else 12_000
    spec, components = tutorial_config(steps, hidden, batch_size)

    def both() -> tuple[float, float, int, float]:
        ref = reference_rate(steps, hidden, batch_size)
        log = train(spec.config, 0, components)
        learn_steps = int((log.loss == log.loss).sum())
        return ref, steps / log.train_s, learn_steps, flush_denormals(reference_rate)(steps, hidden, batch_size)

    rounds = [benchmark.pedantic(both, rounds=1, iterations=1)]
    rounds += [both() for _ in range(0 if benchmark.disabled else 2)]
    ref, ours = max(r[0] for r in rounds), max(r[1] for r in rounds)  # best of each: least disturbed by load
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
    ks = [1, 8] if quick else [1, 2, 4, 8, 16, 32, 64]
    steps = 2_400 if quick else 6_000
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
