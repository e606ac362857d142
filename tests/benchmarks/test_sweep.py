"""Fused sweeps (issue #24): a hyper-parameter sweep of the tutorial agent, fused against ``--no-fuse``.

The sweep is 4 ``agent.lr`` × 2 ``agent.gamma`` × 8 seeds of the tutorial agent (64 runs), through
``run_grid`` with the process executor on every core, as a user runs it. ``extra_info`` holds the aggregate
env steps/s of each side as a multiple of the tutorial port's single-run rate measured in the same session,
and the wall-time ratio fused / ``--no-fuse``. With benchmarks enabled it asserts issue #24's targets:
fused ≥ :data:`FUSED_TARGET` × the port, and ≤ :data:`WALL_TARGET` × ``--no-fuse``'s wall time.
``test_fusion_crossover`` times one lock-step group of 8 members against two of 4 (what fusing two cells
of 4 seeds changes) for a small MLP and ``minatar_cnn``: the measurement behind ``FUSE_MAX_MACS``.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dqnbench
from dqnbench.agent.loop import train_runs
from dqnbench.config.grid import plan_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

from .reference_tutorial import run_reference

FUSED_TARGET, WALL_TARGET = 30.0, 0.6

SWEEP = """
[experiment]
name = "sweep"
env = "CartPole-v1"
total_steps = {steps}
seeds = {seeds}
eval_every = 0
eval_episodes = 1
checkpoint_every = 0

[agent]
gamma = 0.9
lr = 0.01
batch_size = 32
learning_starts = 2001
target_update = 100

[network]
name = "mlp"
hidden = [10]
init_std = 0.1

[replay]
name = "uniform"
capacity = 2000

[exploration]
name = "constant"
epsilon = 0.1

[grid]
"agent.lr" = [0.003, 0.01, 0.03, 0.1]
"agent.gamma" = [0.9, 0.99]
"""


def _sweep(tmp: Path, steps: int, seeds: int, fuse: bool) -> float:
    grid = tmp / f"sweep-{fuse}.toml"
    grid.write_text(SWEEP.format(steps=steps, seeds=seeds))
    start = time.perf_counter()
    res = dqnbench.run_grid(
        grid, tmp / f"out-{fuse}", executor="process", workers=os.cpu_count(), quiet=True, stream=io.StringIO(),
        plots=False, fuse=fuse, load_entrypoints=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    assert set(res.runs.status) == {"ok"} and len(res.runs) == 8 * seeds
    return wall


def test_fused_sweep_against_no_fuse(benchmark, tmp_path):
    torch.set_num_threads(1)
    # a smoke run (--benchmark-disable): the same 8 cells, 2 seeds each (16 runs, fused or not), 200 steps
    steps, seeds = (200, 2) if benchmark.disabled else (8_000, 8)
    port_steps = 2_050 if benchmark.disabled else 12_000

    def both() -> tuple[float, float, float]:
        # untimed: a tiny sweep loads what run_grid's parent side imports once per process (the summary's
        # statistics bring SciPy, about 1.5 s), which the side timed first would otherwise pay alone
        if not benchmark.disabled:
            (tmp_path / "warm").mkdir()
            _sweep(tmp_path / "warm", 100, 1, True)
        start = time.perf_counter()
        run_reference(port_steps)
        port = port_steps / (time.perf_counter() - start)
        return port, _sweep(tmp_path, steps, seeds, True), _sweep(tmp_path, steps, seeds, False)

    port, fused, apart = benchmark.pedantic(both, rounds=1, iterations=1)
    total = 8 * seeds * steps
    benchmark.extra_info.update(
        measured="4 lr × 2 gamma × 8 seeds of the tutorial agent through run_grid (process executor, every core)",
        steps=steps,
        seeds=seeds,
        port_steps_per_s=port,
        fused_wall_s=fused,
        no_fuse_wall_s=apart,
        fused_x_port=total / fused / port,
        no_fuse_x_port=total / apart / port,
        wall_ratio=fused / apart,
    )
    print(
        f"\nport {port:,.0f} steps/s; fused {total / fused:,.0f} steps/s ({total / fused / port:.1f}× the port, "
        f"{fused:.1f} s); --no-fuse {total / apart:,.0f} steps/s ({total / apart / port:.1f}×, {apart:.1f} s); "
        f"wall ratio {fused / apart:.2f}"
    )
    if not benchmark.disabled:
        assert total / fused / port >= FUSED_TARGET and fused / apart <= WALL_TARGET


CROSSOVER = {
    "mlp-64": ("CartPole-v1", {"name": "mlp", "hidden": [64, 64]}, 64, "adam"),
    "minatar_cnn": ("MinAtar/Breakout-v1", {"name": "minatar_cnn"}, 32, "rmsprop"),
}


@pytest.mark.parametrize("net", list(CROSSOVER))
def test_fusion_crossover(benchmark, net):
    """One group of 8 members against two groups of 4, one after the other: the fused share of the time."""
    if net == "minatar_cnn":
        pytest.importorskip("minatar", reason="needs dqnbench[minatar]")
    torch.set_num_threads(1)
    env, network, batch, optimizer = CROSSOVER[net]
    steps = 150 if benchmark.disabled else 1_500  # a smoke run: 50 learning steps after the first 100
    registry = load_registry(load_entrypoints=False)

    def rate(members: int) -> float:
        raw = {
            "experiment": {"name": "x", "env": env, "total_steps": steps, "seeds": members, "eval_every": 0,
                           "eval_episodes": 1},
            "agent": {"batch_size": batch, "learning_starts": 100, "target_update": 100},
            "network": network,
            "optimizer": {"name": optimizer},
        }  # fmt: skip
        spec = plan_grid(raw, Path("x.toml"), registry).runs[0]
        components = bind_components(spec.config, choose(spec.config, registry))
        start = time.perf_counter()
        train_runs(spec.config, list(range(members)), components, stacked=True, timing=False)
        return members * steps / (time.perf_counter() - start)

    def both() -> tuple[float, float]:
        return rate(8), rate(4)

    eight, four = benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(net=net, k8_steps_per_s=eight, k4_steps_per_s=four, gain=eight / four)
    print(
        f"\n{net}: K=8 {eight:,.0f} steps/s, K=4 {four:,.0f} steps/s: fusing two groups of 4 gains {eight / four:.2f}×"
    )


CRN_GRID = """
[experiment]
name = "crn"
env = "CartPole-v1"
total_steps = {steps}
seeds = {seeds}
eval_every = {eval_every}
eval_episodes = 5
checkpoint_every = 0

[agent]
learning_starts = 500
batch_size = 32
target_update = 100

[network]
hidden = [32]

[grid]
"agent.lr" = [0.001, 0.003]
"""


def crn_figures(tmp: Path, steps: int, seeds: int) -> dict[str, float]:
    """Final returns of two lr cells, fused (one group) and as independent runs: paired-difference variances."""
    grid = tmp / "crn.toml"
    grid.write_text(CRN_GRID.format(steps=steps, seeds=seeds, eval_every=steps // 4))
    figures = {}
    for name, kwargs in (("fused", {}), ("independent", {"lockstep": False})):
        res = dqnbench.run_grid(
            grid, tmp / name, executor="process", workers=os.cpu_count(), quiet=True, stream=io.StringIO(),
            plots=False, load_entrypoints=False, **kwargs,
        )  # fmt: skip
        runs = res.runs.pivot(index="seed", columns="agent.lr", values="final_return")
        low, high = runs[0.001].to_numpy(), runs[0.003].to_numpy()
        figures[f"{name}_mean_low"], figures[f"{name}_mean_high"] = float(low.mean()), float(high.mean())
        figures[f"{name}_var_low"], figures[f"{name}_var_high"] = float(low.var(ddof=1)), float(high.var(ddof=1))
        figures[f"{name}_var_paired_difference"] = float((high - low).var(ddof=1))
    return figures


def test_common_random_numbers(benchmark, tmp_path):
    """The variance of paired differences (same seed, lr 1e-3 vs 3e-3): fused members share streams (CRN)."""
    torch.set_num_threads(1)
    # a smoke run: 2 seeds (a paired-difference variance needs two), 100 learning steps, 4 evaluations
    steps, seeds = (600, 2) if benchmark.disabled else (10_000, 16)
    figures = benchmark.pedantic(lambda: crn_figures(tmp_path, steps, seeds), rounds=1, iterations=1)
    benchmark.extra_info.update(steps=steps, seeds=seeds, **figures)
    print("\n" + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


#: the member-wise scalars added last, each timed with K per-member values against one shared value (the
#: code path of cells that do not fuse): (kind, factory name, fixed params, member-wise values of 8 members)
MEMBERWISE_SCALARS = {
    "c51 v_min/v_max": ("learner", "c51", {"atoms": 51}, {"v_min": [-10.0 - k for k in range(8)],
                                                          "v_max": [10.0 + 5 * k for k in range(8)]}),
    "qr_dqn kappa": ("learner", "qr_dqn", {"quantiles": 200}, {"kappa": [0.25 * (k + 1) for k in range(8)]}),
    "prioritized alpha/beta/eps": ("replay", "prioritized", {}, {"alpha": [0.1 * k for k in range(8)],
                                                                  "beta": [0.3 + 0.05 * k for k in range(8)],
                                                                  "eps": [1e-6 * (k + 1) for k in range(8)]}),
}  # fmt: skip


@pytest.mark.parametrize("scalars", list(MEMBERWISE_SCALARS))
def test_memberwise_scalars_cost(benchmark, scalars):
    """What member-wise values cost a fused group of 8: a learner's learn step (loss and backward on the
    stacked ``mlp`` 64-64, batch 32) or a replay's sample and reprioritisation, with 8 different values against
    one shared value, interleaved best of several rounds."""
    from dqnbench.agent.learning import learn_backward
    from dqnbench.agent.nets import QNetworks
    from dqnbench.builtin.networks import mlp
    from dqnbench.devtools.memberwise import probe_batch
    from dqnbench.plugin.legacy_replay import build_replay
    from dqnbench.plugin.members import PerMember
    from dqnbench.plugin.obs import ObsSpec

    torch.set_num_threads(1)
    kind, name, fixed, values = MEMBERWISE_SCALARS[scalars]
    factory = load_registry(load_entrypoints=False).components[kind][name].factory
    obs, members, size, n_actions = ObsSpec((4,), "float32"), 8, 32, 2
    shared = {key: v[0] for key, v in values.items()}
    per_member = {key: PerMember(v) for key, v in values.items()}
    generator = torch.Generator().manual_seed(0)
    repeats = 5 if benchmark.disabled else 200

    if kind == "learner":
        learners = {label: factory(n_actions, **fixed, **params) for label, params in
                    (("shared", shared), ("member-wise", per_member))}  # fmt: skip
        torch.manual_seed(0)
        modules = [mlp(obs, n_actions, hidden=[64, 64], outputs=learners["shared"].outputs) for _ in range(members)]
        nets = QNetworks.of(modules, obs, torch.device("cpu"), stacked=True)
        batch = probe_batch(obs, n_actions, members, size, gamma=0.99)

        def work(label: str) -> None:
            for _ in range(repeats):
                nets.online.zero_grad(set_to_none=True)
                learn_backward(learners[label], nets, batch)
    else:
        replays = {label: build_replay(factory, 10_000, obs, 0.99, members=members, **params) for label, params in
                   (("shared", shared), ("member-wise", per_member))}  # fmt: skip
        rows = np.zeros((members, 4), np.float32)
        for replay in replays.values():
            for step in range(2_000):
                flags = np.zeros(members, bool)
                replay.add(rows + step, np.zeros(members, np.int64), np.ones(members, np.float32), rows, flags, flags)
        td = torch.rand(members, size, generator=generator)

        def work(label: str) -> None:
            for _ in range(repeats):
                replay = replays[label]
                replay.update_priorities(replay.sample(size).indices, td)

    def timed() -> dict[str, float]:
        best = {"shared": float("inf"), "member-wise": float("inf")}
        for label in best:  # warm: first calls allocate and fill caches
            work(label)
        for _ in range(1 if benchmark.disabled else 5):
            for label in best:
                start = time.perf_counter()
                work(label)
                best[label] = min(best[label], (time.perf_counter() - start) / repeats)
        return best

    best = benchmark.pedantic(timed, rounds=1, iterations=1)
    ratio = best["member-wise"] / best["shared"]
    benchmark.extra_info.update(scalars=scalars, shared_us=best["shared"] * 1e6,
                                memberwise_us=best["member-wise"] * 1e6, ratio=ratio)  # fmt: skip
    print(f"\n{scalars}: shared {best['shared'] * 1e6:,.0f} µs, member-wise {best['member-wise'] * 1e6:,.0f} µs "
          f"({ratio:.2f}×)")  # fmt: skip
