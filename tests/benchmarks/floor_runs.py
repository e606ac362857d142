"""Whole runs written as lean single-file scripts: the floors of the CleanRL and MinAtar configs (issue #27).

Each function trains the config its reference trains (``reference_cleanrl.py``, ``reference_minatar.py``),
step for step the same work (the same env steps, forward passes on the steps that act greedily, stores,
learn steps of the same batch and network, target copies), written with nothing a run does not need:
the bare gymnasium or MinAtar env (no vector env, no wrappers), ε drawn with ``random.random()``
before any forward pass, NumPy ring arrays indexed by ``np.random.randint``, ``torch.from_numpy``
batches, plain ``nn.Sequential`` networks, autograd and torch's multi-tensor optimizers, one thread.

What it leaves out that a benchmarking tool must do: per-step timing and records, probes of max Q,
episode bookkeeping beyond a reset, checks, checkpoints, progress. So the floor over the reference is
what the plain arithmetic gains on that config on this machine (``test_run_floors.py``).
:func:`cleanrl_lockstep_floor` goes further, as dqnbench's ``mlp`` path does: its learn step is derived
by hand (:class:`StackedMLP`), so its floor (K members, or K = 1 for one run) is the tighter one: a
target above it is out of reach without changing the arithmetic.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    from .reference_cleanrl import QNetwork as CleanRLNetwork
    from .reference_cleanrl import Settings, epsilon_at
except ImportError:  # run as a script (``python floor_runs.py …``): its own directory is on sys.path
    from reference_cleanrl import QNetwork as CleanRLNetwork
    from reference_cleanrl import Settings, epsilon_at

#: CleanRL's classic-control settings, as the port reads them
CLEANRL = Settings()


def seed_all(seed: int) -> None:
    """Python's ``random``, NumPy's global RNG and torch, as a script seeds them (dqnbench's ``seed_everything``
    does the same, but importing dqnbench would add its import time to every floor process of the job)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learn_step(
    online: nn.Module,
    target: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    gamma: float,
    *rows: np.ndarray,
) -> None:
    """One DQN gradient step on NumPy rows, as a script writes it: the target net's max on the next observations
    without autograd, the online net's Q-value of each action, ``loss``, backward, the optimizer's step. ``rows``:
    observations, actions ``(B, 1)``, rewards, next observations, dones."""
    obs, actions, rewards, next_obs, dones = rows
    with torch.no_grad():
        target_max = target(torch.from_numpy(next_obs)).max(dim=1).values
        y = torch.from_numpy(rewards) + gamma * target_max * (1 - torch.from_numpy(dones))
    q = online(torch.from_numpy(obs)).gather(1, torch.from_numpy(actions)).squeeze(1)
    optimizer.zero_grad(set_to_none=True)
    loss(q, y).backward()
    optimizer.step()


def cleanrl_floor(env_id: str, total_steps: int, seed: int, learning_starts: int) -> dict:
    """CleanRL's classic-control DQN (120-84, MSE, Adam 2.5e-4, batch 128, buffer 10k, a learn step every 10 env
    steps after ``learning_starts``, a target copy every 500 env steps, ε 1 → 0.05 over half the run)."""
    seed_all(seed)
    env = gym.make(env_id)
    obs_dim, n_actions = int(np.prod(env.observation_space.shape)), int(env.action_space.n)
    capacity, batch, gamma = CLEANRL.buffer_size, CLEANRL.batch_size, CLEANRL.gamma
    online, target = (CleanRLNetwork(obs_dim, n_actions).network for _ in range(2))  # the plain Sequentials
    target.load_state_dict(online.state_dict())
    optimizer = torch.optim.Adam(online.parameters(), lr=CLEANRL.learning_rate, fused=True)
    observations = np.zeros((capacity, obs_dim), np.float32)
    next_observations = np.zeros((capacity, obs_dim), np.float32)
    actions = np.zeros((capacity, 1), np.int64)
    rewards = np.zeros(capacity, np.float32)
    dones = np.zeros(capacity, np.float32)
    decay = CLEANRL.exploration_fraction * total_steps
    learn_steps = forwards = 0

    obs, _ = env.reset(seed=seed)
    for step in range(total_steps):
        if random.random() < epsilon_at(CLEANRL.start_e, CLEANRL.end_e, decay, step):
            action = random.randrange(n_actions)
        else:
            with torch.no_grad():
                action = int(online(torch.from_numpy(obs[None])).argmax())
            forwards += 1
        next_obs, reward, terminated, truncated, _ = env.step(action)
        slot = step % capacity
        observations[slot], next_observations[slot] = obs, next_obs
        actions[slot, 0], rewards[slot], dones[slot] = action, reward, terminated
        obs = env.reset()[0] if terminated or truncated else next_obs

        if step > learning_starts:
            if step % CLEANRL.train_frequency == 0:
                rows = np.random.randint(0, min(step + 1, capacity), size=batch)
                batch_rows = (observations[rows], actions[rows], rewards[rows], next_observations[rows], dones[rows])
                learn_step(online, target, optimizer, F.mse_loss, gamma, *batch_rows)
                learn_steps += 1
            if step % CLEANRL.target_network_frequency == 0:
                target.load_state_dict(online.state_dict())
    env.close()
    return {"steps": total_steps, "learn_steps": learn_steps, "forwards": forwards}


class StackedMLP:
    """``members`` MLPs as stacked weights ``(K, in, out)`` and biases ``(K, 1, out)``: the forward pass as
    ``torch.baddbmm`` on ``(K, B, in)``, the MSE loss's gradient derived by hand (as dqnbench's ``mlp`` path
    derives it) into the weights' ``.grad``, one fused Adam over the stacked tensors (Adam is element-wise, so
    that is K Adams). The fastest plain form of a small MLP's learn step we know, so a floor built on it is not
    beaten by a faster learn step. Each member starts as ``network()`` (Linear and ReLU layers) starts."""

    def __init__(self, members: int, network: Callable[[], nn.Module], lr: float) -> None:
        nets = [[m for m in network().modules() if isinstance(m, nn.Linear)] for _ in range(members)]
        self.params: list[torch.Tensor] = []
        for layer in range(len(nets[0])):
            self.params.append(torch.stack([net[layer].weight.detach().T for net in nets]).contiguous())
            self.params.append(torch.stack([net[layer].bias.detach()[None] for net in nets]).contiguous())
        self.target = [p.clone() for p in self.params]
        for p in self.params:
            p.grad = torch.zeros_like(p)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, fused=True)

    @staticmethod
    def forward(params: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Q-values ``(K, B, actions)`` and each layer's input (for the backward)."""
        inputs = []
        for layer in range(0, len(params), 2):
            inputs.append(x)
            x = torch.baddbmm(params[layer + 1], x, params[layer])
            if layer + 2 < len(params):
                x = x.relu_()
        return x, inputs

    def act(self, obs: np.ndarray) -> list[int]:
        """Each member's greedy action for its observation, ``obs`` ``(K, obs_dim)``."""
        return self.forward(self.params, torch.from_numpy(obs[:, None]))[0].argmax(dim=-1)[:, 0].tolist()

    def learn(self, gamma: float, obs, actions, rewards, next_obs, dones) -> None:
        """One gradient step of every member on its own batch (arrays ``(K, B, ...)``, actions ``(K, B, 1)``)."""
        target_max = self.forward(self.target, torch.from_numpy(next_obs))[0].max(dim=-1).values
        y = torch.from_numpy(rewards) + gamma * target_max * (1 - torch.from_numpy(dones))
        q_all, inputs = self.forward(self.params, torch.from_numpy(obs))
        index = torch.from_numpy(actions)
        error = q_all.gather(2, index).squeeze(2) - y
        grad = torch.zeros_like(q_all).scatter_(2, index, (2.0 / y.shape[1]) * error[..., None])  # d mean((q-y)²)
        for layer in reversed(range(0, len(self.params), 2)):
            torch.bmm(inputs[layer // 2].transpose(1, 2), grad, out=self.params[layer].grad)
            torch.sum(grad, dim=1, keepdim=True, out=self.params[layer + 1].grad)
            if layer:
                grad = torch.bmm(grad, self.params[layer].transpose(1, 2)).mul_(inputs[layer // 2] > 0)
        self.optimizer.step()

    def copy_target(self) -> None:
        torch._foreach_copy_(self.target, self.params)


def cleanrl_lockstep_floor(env_id: str, total_steps: int, seeds: list[int], learning_starts: int) -> list[dict]:
    """:func:`cleanrl_floor` for ``len(seeds)`` runs of one env trained side by side as one program (dqnbench's
    lock-step group), at its leanest: every member its own bare env stepped in a loop, ε drawn, a forward pass
    on the K observations when any member acts greedily, NumPy rings ``(capacity, K, ...)``, and every learn
    step one :class:`StackedMLP` step of all members on their own batches of 128."""
    members = len(seeds)
    seed_all(seeds[0])
    envs = [gym.make(env_id) for _ in seeds]
    obs_dim, n_actions = int(np.prod(envs[0].observation_space.shape)), int(envs[0].action_space.n)
    capacity, batch, gamma = CLEANRL.buffer_size, CLEANRL.batch_size, CLEANRL.gamma
    nets = StackedMLP(members, lambda: CleanRLNetwork(obs_dim, n_actions), lr=CLEANRL.learning_rate)
    observations = np.zeros((capacity, members, obs_dim), np.float32)
    next_observations = np.zeros_like(observations)
    actions = np.zeros((capacity, members), np.int64)
    rewards, dones = np.zeros((capacity, members), np.float32), np.zeros((capacity, members), np.float32)
    lanes = np.arange(members)[:, None]
    decay = CLEANRL.exploration_fraction * total_steps
    learn_steps = forwards = 0

    obs = np.stack([env.reset(seed=seed)[0] for env, seed in zip(envs, seeds)]).astype(np.float32)
    for step in range(total_steps):
        epsilon = epsilon_at(CLEANRL.start_e, CLEANRL.end_e, decay, step)
        explore = [random.random() < epsilon for _ in seeds]
        chosen = [random.randrange(n_actions) for _ in seeds]
        if not all(explore):
            with torch.no_grad():
                greedy = nets.act(obs)
            chosen = [c if e else g for c, e, g in zip(chosen, explore, greedy)]
            forwards += 1
        slot = step % capacity
        observations[slot], actions[slot] = obs, chosen
        for k, env in enumerate(envs):
            next_obs, reward, terminated, truncated, _ = env.step(chosen[k])
            next_observations[slot, k], rewards[slot, k], dones[slot, k] = next_obs, reward, terminated
            obs[k] = env.reset()[0] if terminated or truncated else next_obs
        if step > learning_starts:
            if step % CLEANRL.train_frequency == 0:
                rows = np.random.randint(0, min(step + 1, capacity), size=(members, batch))
                nets.learn(
                    gamma, observations[rows, lanes], actions[rows, lanes][..., None], rewards[rows, lanes],
                    next_observations[rows, lanes], dones[rows, lanes],
                )  # fmt: skip
                learn_steps += 1
            if step % CLEANRL.target_network_frequency == 0:
                nets.copy_target()
    for env in envs:
        env.close()
    return [{"env": env_id, "seed": seed, "steps": total_steps, "learn_steps": learn_steps, "forwards": forwards}
            for seed in seeds]  # fmt: skip


def minatar_epsilon(t: int, replay_start_size: int) -> float:
    """MinAtar's ε at frame ``t``: 1 until the replay start, then linear to 0.1 over 100,000 frames."""
    return 1.0 if t < replay_start_size else max(1.0 - 0.9 * (t - replay_start_size) / 100_000, 0.1)


def minatar_floor(total_steps: int, seed: int = 0, game: str = "breakout", replay_start_size: int = 5_000) -> dict:
    """MinAtar's DQN (``examples/dqn.py``: conv 16×3×3 → 128, Huber loss, centered RMSProp 2.5e-4, α 0.95,
    ε 0.01, batch 32, one learn step per frame after the replay start, a target copy every 1,000 learn steps,
    ε 1 → 0.1 over 100,000 frames after it) on MinAtar's own ``Environment``."""
    from minatar import Environment

    from .reference_minatar import QNetwork

    seed_all(seed)
    env = Environment(game)
    env.seed(seed)
    channels, n_actions = env.state_shape()[2], env.num_actions()
    online, target = QNetwork(channels, n_actions), QNetwork(channels, n_actions)
    target.load_state_dict(online.state_dict())
    optimizer = torch.optim.RMSprop(online.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, foreach=True)
    capacity = min(100_000, total_steps)
    shape = (channels, 10, 10)
    states, next_states = np.zeros((capacity, *shape), np.float32), np.zeros((capacity, *shape), np.float32)
    actions = np.zeros((capacity, 1), np.int64)
    rewards, dones = np.zeros(capacity, np.float32), np.zeros(capacity, np.float32)
    learn_steps = forwards = 0

    env.reset()
    state = env.state().transpose(2, 0, 1).astype(np.float32)
    for t in range(total_steps):
        epsilon = minatar_epsilon(t, replay_start_size)
        if random.random() < epsilon:
            action = random.randrange(n_actions)
        else:
            with torch.no_grad():
                action = int(online(torch.from_numpy(state[None])).argmax())
            forwards += 1
        reward, terminated = env.act(action)
        next_state = env.state().transpose(2, 0, 1).astype(np.float32)
        slot = t % capacity
        states[slot], next_states[slot] = state, next_state
        actions[slot, 0], rewards[slot], dones[slot] = action, reward, terminated
        if terminated:
            env.reset()
            next_state = env.state().transpose(2, 0, 1).astype(np.float32)
        state = next_state

        if t > replay_start_size:
            rows = np.random.randint(0, min(t + 1, capacity), size=32)
            batch_rows = (states[rows], actions[rows], rewards[rows], next_states[rows], dones[rows])
            learn_step(online, target, optimizer, F.smooth_l1_loss, 0.99, *batch_rows)
            learn_steps += 1
            if learn_steps % 1_000 == 0:
                target.load_state_dict(online.state_dict())
    return {"steps": total_steps, "learn_steps": learn_steps, "forwards": forwards}


def minatar_lockstep_floor(total_steps: int, members: int = 8, seed: int = 0, replay_start_size: int = 5_000) -> dict:
    """:func:`minatar_floor` for ``members`` runs trained side by side as one program, written as a script batches
    an ensemble: the members' networks stacked (``torch.func.stack_module_state``) and run by ``torch.vmap``,
    one loss summed over the members, autograd, one multi-tensor centered RMSProp on the stacked parameters;
    every member its own MinAtar env, ε draw and sample of 32."""
    from minatar import Environment
    from torch.func import functional_call, stack_module_state

    from .reference_minatar import QNetwork

    seed_all(seed)
    envs = [Environment("breakout") for _ in range(members)]
    for k, env in enumerate(envs):
        env.seed(seed + k)
        env.reset()
    channels, n_actions = envs[0].state_shape()[2], envs[0].num_actions()
    online, _ = stack_module_state([QNetwork(channels, n_actions) for _ in range(members)])
    target = {name: value.detach().clone() for name, value in online.items()}
    shell = QNetwork(channels, n_actions).to("meta")

    def q_values(params: dict, obs: torch.Tensor) -> torch.Tensor:  # (K, B, C, 10, 10) → (K, B, actions)
        return torch.vmap(lambda p, x: functional_call(shell, p, (x,)))(params, obs)

    optimizer = torch.optim.RMSprop(online.values(), lr=2.5e-4, alpha=0.95, eps=0.01, centered=True, foreach=True)
    capacity, lanes = min(100_000, total_steps), np.arange(members)[:, None]
    states = np.zeros((capacity, members, channels, 10, 10), np.float32)
    next_states = np.zeros_like(states)
    actions = np.zeros((capacity, members), np.int64)
    rewards, dones = np.zeros((capacity, members), np.float32), np.zeros((capacity, members), np.float32)
    state = np.stack([env.state().transpose(2, 0, 1) for env in envs]).astype(np.float32)
    learn_steps = 0

    for t in range(total_steps):
        epsilon = minatar_epsilon(t, replay_start_size)
        explore = [random.random() < epsilon for _ in range(members)]
        chosen = [random.randrange(n_actions) for _ in range(members)]
        if not all(explore):
            with torch.no_grad():
                greedy = q_values(online, torch.from_numpy(state[:, None])).argmax(dim=-1)[:, 0].tolist()
            chosen = [c if e else g for c, e, g in zip(chosen, explore, greedy)]
        slot = t % capacity
        for k, env in enumerate(envs):
            reward, terminated = env.act(chosen[k])
            next_states[slot, k] = env.state().transpose(2, 0, 1)
            rewards[slot, k], dones[slot, k] = reward, terminated
            if terminated:
                env.reset()
        states[slot], actions[slot] = state, chosen
        state = np.stack([env.state().transpose(2, 0, 1) for env in envs]).astype(np.float32)

        if t > replay_start_size:
            rows = np.random.randint(0, min(t + 1, capacity), size=(members, 32))
            with torch.no_grad():
                target_max = q_values(target, torch.from_numpy(next_states[rows, lanes])).max(dim=-1).values
                not_done = 1 - torch.from_numpy(dones[rows, lanes])
                y = torch.from_numpy(rewards[rows, lanes]) + 0.99 * target_max * not_done
            q = q_values(online, torch.from_numpy(states[rows, lanes]))
            q = q.gather(-1, torch.from_numpy(actions[rows, lanes])[..., None]).squeeze(-1)
            loss = F.smooth_l1_loss(q, y, reduction="none").mean(dim=1).sum()  # each member's mean loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            learn_steps += 1
            if learn_steps % 1_000 == 0:
                torch._foreach_copy_(list(target.values()), [p.detach() for p in online.values()])
    return {"steps": total_steps, "members": members, "learn_steps": learn_steps}


if __name__ == "__main__":  # ``python floor_runs.py ENV SEEDS STEPS LEARNING_STARTS``: CleanRL-config runs
    # SEEDS: one seed (a single run, :func:`cleanrl_floor`) or several, comma-separated (a lock-step group of them)
    torch.set_num_threads(1)
    env_id, seeds = sys.argv[1], [int(seed) for seed in sys.argv[2].split(",")]
    steps, starts = int(sys.argv[3]), int(sys.argv[4])
    started = time.perf_counter()
    if len(seeds) == 1:
        runs = [{"env": env_id, "seed": seeds[0], **cleanrl_floor(env_id, steps, seeds[0], starts)}]
    else:
        runs = cleanrl_lockstep_floor(env_id, steps, seeds, starts)
    for run in runs:  # one line a run, as the port prints
        print(json.dumps({**run, "wall_s": time.perf_counter() - started}))
