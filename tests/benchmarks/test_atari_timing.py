"""Where an Atari step's time goes on the CPU: act, env and learn for ``nature_cnn`` on ``ALE/Pong-v5``.

A short ``train()`` of the Nature DQN (Mnih et al. 2015: ``nature_cnn`` on the
``atari`` env component's 4×84×84 frames, centered RMSProp, Huber loss, batch
32, a learn step every 4 env steps) with the loop's own per-step timing
(``t_act``: forward + ε-greedy on one observation; ``t_env``: one agent step of
4 emulator frames with the preprocessing; ``t_learn``: store, and on learning
steps replay sample + forward/backward + optimizer step). ``extra_info`` has the
medians of each over the steps after learning starts, the median learn part
of a step that learned, and the mean per env step (what a run pays on average).

With ``--benchmark-disable`` it is a smoke test of a few dozen steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dqnbench.agent.loop import train
from dqnbench.config.grid import plan_grid
from dqnbench.config.schedule import LearningSchedule
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

from ..extras import require


def nature_dqn_config(total_steps: int, learning_starts: int):
    raw = {
        "experiment": {
            "name": "atari-timing",
            "env": "ALE/Pong-v5",
            "total_steps": total_steps,
            "seeds": 1,
            "eval_every": 0,
            "eval_episodes": 1,
        },
        "env": {"name": "atari"},
        "agent": {
            "gamma": 0.99,
            "lr": 2.5e-4,
            "batch_size": 32,
            "learning_starts": learning_starts,
            "train_every": 4,
            "target_update": 2_500,
            "loss": "huber",
        },
        "network": {"name": "nature_cnn"},
        "replay": {"name": "uniform", "capacity": 10_000},
        "exploration": {"name": "linear", "start": 1.0, "end": 0.1, "steps": 100_000},
        "optimizer": {"name": "rmsprop", "alpha": 0.95, "eps": 0.01, "centered": True},
    }
    registry = load_registry(load_entrypoints=False)
    spec = plan_grid(raw, Path("atari-timing.toml"), registry).runs[0]
    return spec, bind_components(spec.config, choose(spec.config, registry))


def test_atari_nature_cnn_step_timing(benchmark):
    require("ale_py")
    steps, learning_starts = (48, 36) if benchmark.disabled else (1_200, 200)
    spec, components = nature_dqn_config(steps, learning_starts)
    log = benchmark.pedantic(lambda: train(spec.config, 0, components), rounds=1, iterations=1)

    after = slice(learning_starts - 1, None)  # steps once learning has started
    t_act, t_env, t_learn = (np.asarray(getattr(log, k))[after] for k in ("t_act", "t_env", "t_learn"))
    learned = np.isfinite(np.asarray(log.loss)[after])
    # a learning phase on every 4th env step once learning has started: the loop's own schedule
    assert learned.sum() == LearningSchedule.of(spec.config.agent).phases(steps)
    ms = 1e3
    figures = {
        "t_act_median_ms": float(np.median(t_act)) * ms,
        "t_env_median_ms": float(np.median(t_env)) * ms,
        "t_learn_median_ms": float(np.median(t_learn)) * ms,  # a step that only stores (3 of every 4)
        "t_learn_median_learning_ms": float(np.median(t_learn[learned])) * ms,  # a step that learns
        "t_act_mean_ms": float(t_act.mean()) * ms,
        "t_env_mean_ms": float(t_env.mean()) * ms,
        "t_learn_mean_ms": float(t_learn.mean()) * ms,
        "env_steps_per_s": steps / log.train_s,
    }
    benchmark.extra_info.update(
        measured="per-step act / env / learn time of a Nature DQN train() on ALE/Pong-v5 (CPU, one torch thread)",
        env="ALE/Pong-v5",
        network="nature_cnn",
        steps=steps,
        learning_starts=learning_starts,
        train_every=4,
        learn_steps=int(learned.sum()),
        **figures,
    )
    print("\nAtari nature_cnn: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    assert all(v > 0 for v in figures.values())
