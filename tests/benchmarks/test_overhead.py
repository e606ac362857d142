"""dqnbench's own cost per training step: the loop with components and an environment that do nothing.

The network is one bias vector (Q-values that ignore the observation), the
replay hands back one precomputed batch, the explorer always picks action 0,
and the environment returns a constant observation. What remains of a step's
time is dqnbench: the loop, tensor conversions, the TD target and loss,
autograd and Adam on a single parameter, and gymnasium's wrappers around
``step``.

- ``test_framework_overhead_per_step``: one step per round (the loop body as
  ``train()`` runs it, through ``StepHarness``), acting and storing only or
  with a learn step. Short rounds, so ``bench-compare`` judges them robustly.
- ``test_framework_overhead_train_loop``: a whole ``train()`` call of
  ``TRAIN_STEPS`` steps, so its per-step logging, timing instrumentation,
  setup and final evaluation count too; ``extra_info`` has the per-step medians
  from its own act / env / learn timings. Rounds of several milliseconds: under
  sustained load on every core they cannot all escape preemption.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from dqnbench.agent.loop import Components, train
from dqnbench.builtin.envs import gymnasium
from dqnbench.builtin.learners import dqn
from dqnbench.builtin.optimizers import adam
from dqnbench.config.schema import AgentConfig, ComponentConfig, ExperimentConfig, ReplayConfig, RunConfig
from dqnbench.devtools.pytest_plugin import StepHarness
from dqnbench.plugin.batch import Batch

ENV_ID = "DqnbenchBench/Constant-v0"
#: env steps per timed ``train()`` call: setup and the one-episode evaluation are amortised over them
TRAIN_STEPS = 64
EPISODE = 50
BATCH = 32


class ConstantEnv(gym.Env):
    """Observation zeros(4), reward 1, never terminates (the time limit truncates)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.obs = np.zeros(4, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.obs.copy(), {}

    def step(self, action):
        return self.obs.copy(), 1.0, False, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=ConstantEnv, max_episode_steps=EPISODE)


class ConstantQ(nn.Module):
    """Q-values that are one learned bias vector, whatever the observation."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(obs.shape[0], -1)


class FixedReplay:
    """Counts ``add`` calls and samples one precomputed batch."""

    def __init__(self, capacity: int, obs_dim: int, gamma: float) -> None:
        self.size = 0
        zeros = torch.zeros(BATCH)
        self.batch = Batch(torch.zeros(BATCH, obs_dim), torch.zeros(BATCH, dtype=torch.int64), zeros + 1.0,
                           torch.zeros(BATCH, obs_dim), torch.zeros(BATCH, dtype=torch.bool), zeros + 1.0,
                           torch.arange(BATCH), zeros + gamma)  # fmt: skip

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        self.size += 1

    def sample(self, batch_size: int) -> Batch:
        return self.batch

    def update_priorities(self, indices, td_errors) -> None:
        pass

    def __len__(self) -> int:
        return self.size


class FirstAction:
    """Always action 0."""

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return torch.zeros(q_values.shape[0], dtype=torch.int64)


TRIVIAL = Components(
    network=ConstantQ,
    replay=FixedReplay,
    exploration=lambda n_actions, total_steps: FirstAction(),
    learner=dqn,
    optimizer=adam,
    env=gymnasium,
)


def trivial_config(learn: bool, steps: int = TRAIN_STEPS) -> RunConfig:
    """``steps`` steps on the constant env; learning from the first full batch, or never."""
    return RunConfig(
        ExperimentConfig(name="overhead", env=ENV_ID, total_steps=steps, seeds=(0,), eval_every=0, eval_episodes=1),
        AgentConfig(batch_size=BATCH, learning_starts=BATCH if learn else 10**9, target_update=100),
        ComponentConfig("trivial"),
        ReplayConfig("trivial", capacity=steps),
        ComponentConfig("trivial"),
    )


@pytest.mark.benchmark(group="framework-overhead")
@pytest.mark.parametrize("learn", [False, True], ids=["act-env-store", "with-learn-step"])
def test_framework_overhead_per_step(benchmark, learn):
    """One step of the loop body with trivial components: act, env step, store (and learn)."""
    agent = StepHarness(trivial_config(learn, steps=10**6), TRIVIAL)
    if learn:
        agent.warm_up()
    parts = "act + env step + store" + (" + learn step" if learn else "")
    measured = f"training step with trivial components and env: {parts}"
    benchmark.extra_info.update(agent.describe(measured), component="trivial", batch=BATCH if learn else 0, learn=learn)
    loss = benchmark(agent.step)
    assert np.isnan(loss) != learn


@pytest.mark.benchmark(group="framework-overhead")
def test_framework_overhead_train_loop(benchmark):
    """A whole ``train()`` with trivial components: the loop plus its logging, setup and final evaluation."""
    log = benchmark(train, trivial_config(learn=True), 0, TRIVIAL)
    per_step = log.t_act + log.t_env + log.t_learn
    benchmark.extra_info.update(
        measured=f"train() of {TRAIN_STEPS} steps with trivial components and env, setup and evaluation included",
        component="trivial",
        batch=BATCH,
        steps=TRAIN_STEPS,
        median_step_us=float(np.median(per_step) * 1e6),
        median_act_us=float(np.median(log.t_act) * 1e6),
        median_env_us=float(np.median(log.t_env) * 1e6),
        median_learn_us=float(np.median(log.t_learn) * 1e6),
    )
    assert not np.isnan(log.loss).all()
