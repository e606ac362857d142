"""THE training loop: one DQN run, readable top to bottom like the tutorial's.

``train()`` seeds, builds the environments and components, then for each env
step: act (eval net + explorer), step the env, store the transition and learn
every ``train_every`` steps once ``learning_starts`` transitions are stored,
copying the eval net into the target net every ``target_update`` learn steps;
every ``eval_every`` steps and at the end it evaluates greedily on a separate
env. Each step's act / env / learn time is recorded with ``time.perf_counter``
(store + learn count as learn). Components arrive as factories with their grid
params already bound; nothing here knows which plugin built them.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from dqnbench.plugin.checks import check_actions, check_batch, check_q_values
from dqnbench.config.schema import AgentConfig, RunConfig
from dqnbench.plugin.contracts import Explorer, ReplayBuffer
from dqnbench.errors import DqnbenchError
from dqnbench.agent.losses import dqn_targets, td_loss
from dqnbench.agent.numerics import flush_denormals
from dqnbench.builtin.optimizers import LeanAdam, TorchAdam, make_adam

#: the evaluation env is seeded apart from the training env
EVAL_SEED_OFFSET = 1_000_003
#: greedy evaluation episodes stop here when the env has no time limit of its own
MAX_EVAL_EPISODE_STEPS = 100_000


@dataclass(frozen=True)
class Components:
    """One run's component factories, grid params bound (see :mod:`dqnbench.run.runner`)."""

    network: Callable[[int, int], nn.Module]
    replay: Callable[[int, int, float], ReplayBuffer]
    exploration: Callable[[int, int], Explorer]


class Diverged(Exception):
    """The loss became NaN or infinite; the run stops and is recorded as diverged."""

    def __init__(self, step: int, loss: float) -> None:
        self.step = step
        super().__init__(f"loss became {loss} at env step {step}")


@dataclass
class TrainLog:
    """What a run produced: per-step arrays (preallocated), episodes, evaluations, weights."""

    total_steps: int
    obs_dim: int = 0
    n_actions: int = 0
    reward: np.ndarray = field(init=False)
    episode: np.ndarray = field(init=False)
    t_act: np.ndarray = field(init=False)
    t_env: np.ndarray = field(init=False)
    t_learn: np.ndarray = field(init=False)
    loss: np.ndarray = field(init=False)
    episodes: dict[str, list[Any]] = field(
        default_factory=lambda: {"episode": [], "step": [], "return": [], "length": []}
    )
    evals: dict[str, list[Any]] = field(
        default_factory=lambda: {"step": [], "mean_return": [], "std_return": [], "returns": []}
    )
    train_s: float = 0.0
    weights: dict[str, torch.Tensor] | None = None
    #: env step at which the loss became non-finite (lock-step members keep a record instead of raising)
    diverged_step: int | None = None

    def __post_init__(self) -> None:
        n = self.total_steps
        self.reward = np.zeros(n, dtype=np.float32)
        self.episode = np.zeros(n, dtype=np.int64)
        self.t_act = np.zeros(n, dtype=np.float64)
        self.t_env = np.zeros(n, dtype=np.float64)
        self.t_learn = np.zeros(n, dtype=np.float64)
        self.loss = np.full(n, np.nan, dtype=np.float32)

    @property
    def final_return(self) -> float:
        return float(self.evals["mean_return"][-1])

    def steps_table(self) -> dict[str, np.ndarray]:
        return {
            "step": np.arange(self.total_steps, dtype=np.int64),
            "episode": self.episode,
            "reward": self.reward,
            "t_act": self.t_act,
            "t_env": self.t_env,
            "t_learn": self.t_learn,
            "loss": self.loss,
        }


@flush_denormals
def train(config: RunConfig, seed: int, components: Components, timing: bool = True) -> TrainLog:
    """Train one DQN run and return its log (see the module docstring for the loop).

    Runs with CPU denormals flushed to zero (:mod:`dqnbench.agent.numerics` says why).
    """
    exp, agent = config.experiment, config.agent
    clock = time.perf_counter if timing else _no_clock
    device = torch.device(exp.device)
    on_gpu = device.type != "cpu"

    # Seed every RNG a plugin may draw from, then build envs and components.
    seed_everything(seed)
    env, eval_env = make_env(exp.env), make_env(exp.env)
    obs_dim, n_actions = env_dims(env, exp.env)
    q_net = components.network(obs_dim, n_actions).to(device).train()
    target_net = copy.deepcopy(q_net).requires_grad_(False)
    replay = components.replay(config.replay.capacity, obs_dim, agent.gamma)
    explorer = components.exploration(n_actions, exp.total_steps)
    optimizer = make_adam(q_net.parameters(), agent.lr)
    learn = make_learner(q_net, target_net, optimizer, agent)
    log = TrainLog(exp.total_steps, obs_dim, n_actions)

    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    eval_env.reset(seed=seed + EVAL_SEED_OFFSET)
    check_components(q_net, explorer, obs, n_actions, device)

    episode, episode_return, episode_start, learn_steps = 0, 0.0, 0, 0
    eval_s = 0.0
    start = time.perf_counter()
    for step in range(exp.total_steps):
        # Act: ε-greedy (or whatever the explorer does) on the eval net, no autograd.
        t0 = clock()
        with torch.inference_mode():
            q_values = q_net(torch.as_tensor(obs, device=device).unsqueeze(0))
            action = int(explorer.select(q_values, step)[0])
        t1 = clock()

        # Step the environment.
        next_obs, reward, terminated, truncated, _ = env.step(action)
        t2 = clock()

        # Store, then learn every train_every steps once enough is stored.
        replay.add(obs, action, float(reward), next_obs, bool(terminated))
        loss = math.nan
        if step + 1 >= agent.learning_starts and len(replay) >= agent.batch_size and step % agent.train_every == 0:
            total = 0.0
            for _ in range(agent.gradient_steps):
                batch = replay.sample(agent.batch_size)
                if learn_steps == 0:
                    check_batch(batch, agent.batch_size, obs_dim)
                if on_gpu:
                    batch = batch.to(device)
                step_loss, td_errors = learn(batch)
                if not math.isfinite(step_loss):
                    raise Diverged(step, step_loss)
                replay.update_priorities(batch.indices, td_errors.cpu())
                learn_steps += 1
                if learn_steps % agent.target_update == 0:
                    target_net.load_state_dict(q_net.state_dict())
                total += step_loss
            loss = total / agent.gradient_steps
        t3 = clock()
        log.reward[step], log.episode[step], log.loss[step] = reward, episode, loss
        log.t_act[step], log.t_env[step], log.t_learn[step] = t1 - t0, t2 - t1, t3 - t2

        episode_return += float(reward)
        obs = next_obs
        if terminated or truncated:
            for key, value in zip(log.episodes, (episode, step + 1, episode_return, step + 1 - episode_start)):
                log.episodes[key].append(value)
            episode, episode_return, episode_start = episode + 1, 0.0, step + 1
            obs, _ = env.reset()

        done_steps = step + 1
        if done_steps == exp.total_steps or (exp.eval_every and done_steps % exp.eval_every == 0):
            eval_start = time.perf_counter()
            returns = evaluate(q_net, eval_env, exp.eval_episodes, device)
            eval_s += time.perf_counter() - eval_start
            for key, value in zip(log.evals, (done_steps, np.mean(returns), np.std(returns), returns)):
                log.evals[key].append(value)

    log.train_s = time.perf_counter() - start - eval_s
    log.weights = {k: v.detach().cpu().clone() for k, v in q_net.state_dict().items()}
    env.close()
    eval_env.close()
    return log


def make_learner(
    q_net: nn.Module, target_net: nn.Module, optimizer: LeanAdam | TorchAdam, agent: AgentConfig
) -> Callable[[Any], tuple[float, torch.Tensor]]:
    """``batch -> (loss, td_errors)``: the network's own ``fused_learn_step`` if it has one, else autograd."""
    fused = getattr(q_net, "fused_learn_step", None)
    if fused is not None:
        return functools.partial(fused, target_net, optimizer, agent)
    return functools.partial(learn_step, q_net, target_net, optimizer, agent=agent)


def learn_step(
    q_net: nn.Module, target_net: nn.Module, optimizer: LeanAdam | TorchAdam, batch: Any, agent: AgentConfig
) -> tuple[float, torch.Tensor]:
    """One gradient step on a batch; returns the loss and the TD errors ``(B,)``."""
    q_taken = q_net(batch.obs).gather(1, batch.actions.unsqueeze(1)).squeeze(1)
    with torch.no_grad():
        next_q_target = target_net(batch.next_obs)
        next_q_online = q_net(batch.next_obs) if agent.double else None
        targets = dqn_targets(batch.rewards, batch.discounts, batch.terminated, next_q_target, next_q_online)
    loss, td_errors = td_loss(q_taken, targets, batch.weights, agent.loss)
    optimizer.zero_grad()
    loss.backward()
    if agent.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(q_net.parameters(), agent.max_grad_norm)
    optimizer.step()
    return loss.item(), td_errors


def evaluate(q_net: nn.Module, env: gym.Env, episodes: int, device: torch.device) -> list[float]:
    """Greedy returns of ``episodes`` episodes, with the net in eval mode (noise off)."""
    limit = (env.spec.max_episode_steps if env.spec else None) or MAX_EVAL_EPISODE_STEPS
    q_net.eval()
    returns = []
    with torch.no_grad():
        for _ in range(episodes):
            obs, _ = env.reset()
            total, done, length = 0.0, False, 0
            while not done and length < limit:
                action = int(q_net(torch.as_tensor(obs, device=device).unsqueeze(0)).argmax(dim=1)[0])
                obs, reward, terminated, truncated, _ = env.step(action)
                total, done, length = total + float(reward), terminated or truncated, length + 1
            returns.append(total)
    q_net.train()
    return returns


def check_components(q_net: nn.Module, explorer: Explorer, obs: np.ndarray, n_actions: int, device) -> None:
    """Probe the network and explorer once before training: shapes and dtypes per contract."""
    probe = torch.as_tensor(np.stack([obs, obs]), device=device)
    with torch.no_grad():
        q_values = q_net(probe)
        check_q_values(q_values, 2, n_actions)
        check_actions(explorer.select(q_values, 0), 2, n_actions)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_env(env_id: str) -> gym.Env:
    """``gym.make`` with observations flattened to float32 vectors of shape ``(obs_dim,)``."""
    env = gym.make(env_id)
    space = env.observation_space
    if space.shape is None or len(space.shape) != 1:
        env = gym.wrappers.FlattenObservation(env)
    if env.observation_space.dtype != np.float32:
        env = gym.wrappers.TransformObservation(
            env,
            lambda o: np.asarray(o, dtype=np.float32),
            gym.spaces.Box(
                env.observation_space.low.astype(np.float32),
                env.observation_space.high.astype(np.float32),
                dtype=np.float32,
            ),
        )
    return env


def env_dims(env: gym.Env, env_id: str) -> tuple[int, int]:
    """``(obs_dim, n_actions)``; a user error for envs DQN cannot drive."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise DqnbenchError(
            f"environment {env_id} has {type(env.action_space).__name__} actions; DQN needs Discrete actions"
        )
    if not isinstance(env.observation_space, gym.spaces.Box):
        raise DqnbenchError(
            f"environment {env_id} has {type(env.observation_space).__name__} observations; dqnbench needs Box"
        )
    return int(np.prod(env.observation_space.shape)), int(env.action_space.n)


def _no_clock() -> float:
    return 0.0
