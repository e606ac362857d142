"""A plain port of CleanRL's ``cleanrl/dqn.py`` with its classic-control settings: the DQN a CleanRL user runs.

The same loop as the original, top to bottom: a gymnasium ``SyncVectorEnv`` of one
env wrapped in ``RecordEpisodeStatistics``, the 120-84 ``QNetwork``, ε annealed
linearly from 1 to 0.05 over half the run and drawn with ``random.random()`` *before*
any forward pass (a random step costs no forward), SB3's ``ReplayBuffer`` layout
(NumPy arrays ``(capacity, 1, …)``, ``np.random.randint`` indices, ``torch.tensor``
copies), a learn step every 10 env steps after 10,000 (MSE, Adam 2.5e-4, batch 128)
and a soft target copy with τ = 1 every 500 env steps, one torch thread. Changes, none
in the per-step work: no TensorBoard writer, W&B or ``tyro``; the vector env uses
same-step autoreset (gymnasium 1.x), whose ``final_obs`` is the next observation of a
finished episode; returned counts. ``python reference_cleanrl.py ENV SEED STEPS [LEARNING_STARTS]``
trains one run and prints a JSON line (``test_cleanrl.py`` runs two at a time).
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode
from torch import nn


@dataclass(frozen=True)
class Settings:
    """CleanRL's ``Args`` for ``dqn.py`` on classic control (its defaults)."""

    env_id: str = "CartPole-v1"
    total_timesteps: int = 500_000
    learning_rate: float = 2.5e-4
    buffer_size: int = 10_000
    gamma: float = 0.99
    tau: float = 1.0
    target_network_frequency: int = 500
    batch_size: int = 128
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.5
    learning_starts: int = 10_000
    train_frequency: int = 10


class QNetwork(nn.Module):
    """observations → 120 → ReLU → 84 → ReLU → Q-values, as CleanRL builds it."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.network = nn.Sequential(
            nn.Linear(obs_dim, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, n_actions)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def epsilon_at(start: float, end: float, duration: float, t: int) -> float:
    """ε at env step ``t``: a straight line from ``start`` to ``end`` over ``duration`` steps, then ``end``."""
    return max((end - start) / duration * t + start, end)


class Replay:
    """SB3's ``ReplayBuffer`` (which CleanRL imports) for one env: arrays ``(capacity, 1, …)``, uniform indices."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> None:
        self.capacity, self.pos, self.full = capacity, 0, False
        self.observations = np.zeros((capacity, 1, *obs_shape), dtype=obs_dtype)
        self.next_observations = np.zeros((capacity, 1, *obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((capacity, 1, 1), dtype=np.int64)
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.dones = np.zeros((capacity, 1), dtype=np.float32)
        self.timeouts = np.zeros((capacity, 1), dtype=np.float32)  # CleanRL turns timeout handling off: all zero

    def add(self, obs, next_obs, action, reward, done) -> None:
        self.observations[self.pos] = np.array(obs)
        self.next_observations[self.pos] = np.array(next_obs)
        self.actions[self.pos] = np.array(action.reshape((1, 1)))
        self.rewards[self.pos] = np.array(reward)
        self.dones[self.pos] = np.array(done)
        self.pos += 1
        if self.pos == self.capacity:
            self.full, self.pos = True, 0

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """``(obs, actions, next_obs, dones, rewards)`` as new tensors, like SB3's ``_get_samples``."""
        rows = np.random.randint(0, self.capacity if self.full else self.pos, size=batch_size)
        envs = np.random.randint(0, high=1, size=(batch_size,))
        dones = (self.dones[rows, envs] * (1 - self.timeouts[rows, envs])).reshape(-1, 1)
        arrays = (self.observations[rows, envs, :], self.actions[rows, envs, :], self.next_observations[rows, envs, :],
                  dones, self.rewards[rows, envs].reshape(-1, 1))  # fmt: skip
        return tuple(torch.tensor(a) for a in arrays)


def make_env(env_id: str, seed: int):
    def thunk() -> gym.Env:
        env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))
        env.action_space.seed(seed)
        return env

    return thunk


def run_reference(env_id: str = "CartPole-v1", total_steps: int = 500_000, seed: int = 1, **settings) -> dict:
    """Train one run for ``total_steps`` env steps the way ``dqn.py`` does; counts for checking."""
    args = Settings(env_id=env_id, total_timesteps=total_steps, **settings)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv([make_env(env_id, seed)], autoreset_mode=AutoresetMode.SAME_STEP)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    obs_dim = int(np.prod(obs_space.shape))
    q_network, target_network = QNetwork(obs_dim, action_space.n), QNetwork(obs_dim, action_space.n)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate)
    target_network.load_state_dict(q_network.state_dict())
    rb = Replay(args.buffer_size, obs_space.shape, obs_space.dtype)
    learn_steps, episodes, forwards = 0, 0, 0

    obs, _ = envs.reset(seed=seed)
    for global_step in range(args.total_timesteps):
        epsilon = epsilon_at(args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step)
        if random.random() < epsilon:
            actions = np.array([action_space.sample() for _ in range(envs.num_envs)])
        else:
            q_values = q_network(torch.Tensor(obs))
            actions = torch.argmax(q_values, dim=1).cpu().numpy()
            forwards += 1

        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = next_obs.copy()  # a finished episode's row: its last observation, not the reset's
        if "_final_obs" in infos:
            for idx in np.flatnonzero(infos["_final_obs"]):
                real_next_obs[idx] = infos["final_obs"][idx]
                episodes += 1
        rb.add(obs, real_next_obs, actions, rewards, terminations)
        obs = next_obs

        if global_step > args.learning_starts:
            if global_step % args.train_frequency == 0:
                observations, b_actions, next_observations, dones, b_rewards = rb.sample(args.batch_size)
                with torch.no_grad():
                    target_max, _ = target_network(next_observations).max(dim=1)
                    td_target = b_rewards.flatten() + args.gamma * target_max * (1 - dones.flatten())
                old_val = q_network(observations).gather(1, b_actions).squeeze()
                loss = F.mse_loss(td_target, old_val)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                learn_steps += 1
            if global_step % args.target_network_frequency == 0:
                for target_param, q_param in zip(target_network.parameters(), q_network.parameters()):
                    target_param.data.copy_(args.tau * q_param.data + (1.0 - args.tau) * target_param.data)
    envs.close()
    return {"steps": args.total_timesteps, "learn_steps": learn_steps, "episodes": episodes, "forwards": forwards}


if __name__ == "__main__":
    torch.set_num_threads(1)
    env_id, seed, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    settings = {"learning_starts": int(sys.argv[4])} if len(sys.argv) > 4 else {}
    started = time.perf_counter()
    counts = run_reference(env_id, steps, seed, **settings)
    print(json.dumps({"env": env_id, "seed": seed, **counts, "wall_s": time.perf_counter() - started}))
