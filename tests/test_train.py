"""The training loop: recording, reproducibility, termination vs truncation, components."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqnbench.agent.loop import train
from dqnbench.builtin.replays import uniform
from dqnbench.config.grid import load_grid
from dqnbench.run.runner import bind_components, choose


def tiny_run(write_grid, registry, extra="", **kwargs):
    plan = load_grid(write_grid(extra, **kwargs), registry)
    spec = plan.runs[0]
    chosen = choose(spec.config, registry)
    return spec, bind_components(spec.config, chosen)


def test_loop_records_every_step_episode_and_evaluation(write_grid, registry):
    spec, components = tiny_run(write_grid, registry, steps=400, eval_every=200)
    log = train(spec.config, spec.seed, components)
    steps = log.steps_table()
    assert len(steps["step"]) == 400
    assert (log.t_act > 0).all() and (log.t_env > 0).all() and (log.t_learn > 0).all()
    learned = ~np.isnan(log.loss)
    assert not learned[:99].any() and learned[100:].all()  # learning_starts = 100 stored transitions
    assert sum(log.episodes["length"]) + (400 - log.episodes["step"][-1]) == 400
    assert log.evals["step"] == [0, 200, 400]  # the untrained agent, every eval_every steps, the end
    assert all(len(r) == 2 for r in log.evals["returns"])
    probed = ~np.isnan(steps["q_max"])
    assert probed[::50].all() and not probed[1::50].any() and np.isfinite(steps["epsilon"][::50]).all()
    assert log.final_return == pytest.approx(np.mean(log.evals["returns"][-1]))
    assert set(log.weights) == {"body.0.weight", "body.0.bias", "out.weight", "out.bias"}


def test_same_seed_gives_identical_returns_and_weights(write_grid, registry):
    spec, components = tiny_run(write_grid, registry, steps=300)
    first = train(spec.config, spec.seed, components)
    second = train(spec.config, spec.seed, components)
    assert first.episodes["return"] == second.episodes["return"]
    assert first.evals["returns"] == second.evals["returns"]
    np.testing.assert_array_equal(first.loss, second.loss)
    for key in first.weights:
        assert torch.equal(first.weights[key], second.weights[key])
    other, _ = tiny_run(write_grid, registry, steps=300)
    third = train(spec.config, spec.seed + 1, components)
    assert not all(torch.equal(first.weights[k], third.weights[k]) for k in first.weights)


class EndlessEnv(gym.Env):
    """Never terminates; only the TimeLimit wrapper truncates it (every 5 steps)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), 1.0, False, False, {}


def test_truncation_is_stored_as_not_terminated(write_grid, registry):
    gym.register("DqnbenchTest/Endless-v0", entry_point=EndlessEnv, max_episode_steps=5)
    stored = []

    class Recording:
        def __init__(self, capacity, obs_dim, gamma):
            self.inner = uniform(capacity, obs_dim, gamma)

        def add(self, obs, action, reward, next_obs, terminated):  # the v1 add: one transition, no truncated
            stored.append(terminated)
            self.inner.add(obs[None], [action], [reward], next_obs[None], [terminated], [False])

        def sample(self, batch_size):
            return self.inner.sample(batch_size)

        def update_priorities(self, indices, td_errors):
            pass

        def __len__(self):
            return len(self.inner)

    spec, components = tiny_run(write_grid, registry, steps=200, eval_every=0)
    spec.config.experiment.__dict__["env"] = "DqnbenchTest/Endless-v0"  # frozen dataclass: test-only override
    log = train(spec.config, spec.seed, dataclasses.replace(components, replay=Recording))
    assert len(stored) == 200 and not any(stored)
    assert log.episodes["length"] == [5] * 40
    assert log.evals["returns"] == [[5.0, 5.0]]


def test_timing_can_be_switched_off_for_overhead_measurements(write_grid, registry):
    spec, components = tiny_run(write_grid, registry, steps=150)
    log = train(spec.config, spec.seed, components, timing=False)
    assert not log.t_act.any() and not log.t_env.any() and not log.t_learn.any()


def test_noise_free_evaluation_uses_eval_mode(write_grid, registry):
    modes = []

    class ModeSpy(torch.nn.Module):
        def __init__(self, obs_dim, n_actions):
            super().__init__()
            self.out = torch.nn.Linear(obs_dim, n_actions)

        def forward(self, x):
            modes.append(self.training)
            return self.out(x)

    spec, components = tiny_run(write_grid, registry, steps=120, eval_every=0)
    train(spec.config, spec.seed, dataclasses.replace(components, network=ModeSpy))
    assert modes[0] is True and modes[-1] is False  # acting in train mode, final evaluation in eval mode
