"""The floor of one acting step, and dqnbench's act + env + store measured against it (issue #27).

The floor is the least any DQN does per env step outside learning: the env step,
one bare forward pass (a plain ``nn.Sequential``, no explorer) on one observation,
or on the K rows of a vector env, its argmax, and a store of the transition into
NumPy ring arrays. dqnbench's side is ``train()`` itself on the same env and
network (CleanRL's 120-84 MLP on CartPole-v1), learning never due and ε = 0, so
every step pays the forward like the floor: its wall time per step, loop and
records included. Both sides use dqnbench's env component (for K = 8, its native
CartPole vector env), rounds interleaved, best of each; ``extra_info["ratio"]`` is
dqnbench's time per step over the floor's, single and K = 8 lock-step. Target
(asserted with benchmarks enabled): ≤ :data:`FLOOR_TARGET`. Under
``--benchmark-disable`` one short round of each runs as a smoke test.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dqnbench.agent.loop import train_runs
from dqnbench.agent.numerics import flush_denormals
from dqnbench.builtin.envs import gymnasium_vector, make_gymnasium
from dqnbench.config.grid import plan_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

REPO = Path(__file__).resolve().parents[2]
#: the issue's target: dqnbench's act + env + store per step over the floor's
FLOOR_TARGET = 1.5
ENV_ID, HIDDEN, CAPACITY = "CartPole-v1", (120, 84), 10_000


def bare_network(obs_dim: int, n_actions: int) -> nn.Module:
    widths = [obs_dim, *HIDDEN]
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], n_actions))


@flush_denormals
def floor_seconds_per_step(steps: int, members: int | None = None, seed: int = 0) -> float:
    """Wall seconds per env step of the floor loop: env step, bare forward + argmax, ring store."""
    rows = members or 1
    env = make_gymnasium(ENV_ID) if members is None else gymnasium_vector(ENV_ID, members)
    space = env.observation_space if members is None else env.single_observation_space
    actions = env.action_space if members is None else env.single_action_space
    net = bare_network(int(np.prod(space.shape)), int(actions.n))
    obs_ring = np.zeros((CAPACITY, rows, *space.shape), dtype=space.dtype)
    next_ring = np.zeros_like(obs_ring)
    action_ring = np.zeros((CAPACITY, rows), dtype=np.int64)
    reward_ring = np.zeros((CAPACITY, rows), dtype=np.float32)
    terminated_ring = np.zeros((CAPACITY, rows), dtype=bool)
    obs, _ = env.reset(seed=seed)
    started = time.perf_counter()
    for i in range(steps):
        with torch.inference_mode():  # entered per step: a loop that learns between steps leaves it
            q = net(torch.from_numpy(obs if members else obs[None]))
            action = int(q.argmax()) if members is None else q.argmax(dim=1).numpy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        j = i % CAPACITY
        obs_ring[j], next_ring[j], action_ring[j], reward_ring[j], terminated_ring[j] = (
            obs,
            next_obs,
            action,
            reward,
            terminated,
        )
        obs = env.reset()[0] if members is None and (terminated or truncated) else next_obs
    seconds = time.perf_counter() - started
    env.close()
    return seconds / steps


def acting_config(steps: int):
    """CleanRL's classic-control network on CartPole-v1, greedy (ε = 0), learning never due: act + env + store."""
    raw = {
        "experiment": {
            "name": "floor",
            "env": ENV_ID,
            "total_steps": steps,
            "seeds": 1,
            "eval_every": 0,
            "eval_episodes": 1,
        },  # fmt: skip
        "agent": {"learning_starts": 10**9, "batch_size": 128},
        "network": {"name": "mlp", "hidden": list(HIDDEN)},
        "replay": {"name": "uniform", "capacity": CAPACITY},
        "exploration": {"name": "constant", "epsilon": 0.0},
    }
    registry = load_registry(load_entrypoints=False)
    config = plan_grid(raw, Path("floor.toml"), registry).runs[0].config
    return config, bind_components(config, choose(config, registry))


def dqnbench_seconds_per_step(steps: int, members: int | None = None) -> tuple[float, dict[str, float]]:
    """Wall seconds per env step of ``train()`` acting only (its ``train_s``), and its median act/env/store µs."""
    config, components = acting_config(steps)
    seeds = list(range(members or 1))
    logs = train_runs(config, seeds, components, stacked=members is not None)
    wall = sum(log.train_s for log in logs)  # each log holds its 1/K share of a lock-step cell's time
    parts = {f"median_{k}_us": float(np.median(getattr(logs[0], f"t_{k}")) * 1e6 * len(seeds))
             for k in ("act", "env", "learn")}  # fmt: skip
    return wall / steps, parts


@pytest.mark.parametrize("members", [None, 8], ids=["single", "lockstep-8"])
def test_act_env_store_vs_floor(benchmark, members):
    quick = benchmark.disabled
    steps, rounds = (300, 1) if quick else (3_000, 7)

    def both() -> tuple[float, float, dict]:
        floor = floor_seconds_per_step(steps, members)
        ours, parts = dqnbench_seconds_per_step(steps, members)
        return floor, ours, parts

    results = [benchmark.pedantic(both, rounds=1, iterations=1)] + [both() for _ in range(rounds - 1)]
    floor, ours = min(r[0] for r in results), min(r[1] for r in results)
    ratio = ours / floor
    benchmark.extra_info.update(
        measured=f"s per env step, acting only (ε = 0, no learning), {ENV_ID}, mlp {list(HIDDEN)}: dqnbench train() "
        f"vs the floor (env step + bare forward + argmax + ring store), best of {rounds} interleaved rounds",
        members=members or 1,
        steps=steps,
        floor_us=floor * 1e6,
        dqnbench_us=ours * 1e6,
        ratio=ratio,
        target=FLOOR_TARGET,
        rounds=[{"floor_us": r[0] * 1e6, "dqnbench_us": r[1] * 1e6} for r in results],
        **results[-1][2],
    )
    print(f"\n{members or 1} row(s): floor {floor * 1e6:.1f} µs/step, dqnbench {ours * 1e6:.1f} µs/step, {ratio:.2f}×")
    if not quick:
        assert ratio <= FLOOR_TARGET, f"dqnbench's act + env + store {ratio:.2f}× the floor"
