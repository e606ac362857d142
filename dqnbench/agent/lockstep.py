"""Lock-step training: K seeds of one grid cell as one batched program.

A cell's K members (its seeds) share nothing but the code path: K networks
stacked into one set of parameters and evaluated with ``torch.func.vmap``,
K environments stepped as one vector env, a replay with a leading member
dimension, and one explorer acting on K rows of Q-values. Per env step that
costs little more than one run, because a tiny DQN's time goes to Python and
dispatch overhead, which lock-step pays once instead of K times (PureJaxRL's
idea, in PyTorch).

Each member takes exactly the steps an independent run would: same-step
autoreset (``vector_envs.py``), its own episodes, evaluations and final
weights, recorded in the same tables as an independent run. Members are not
bit-identical to independent runs (they share RNG streams), but they learn the
same way; ``tests/test_lockstep.py`` checks it statistically.

A component takes part when it can:

- networks: any module ``vmap`` can run (probed once: :func:`network_problem`);
- replays: a factory with a ``lockstep`` attribute, a members-factory
  ``(members, capacity, obs_dim, gamma, **params)`` whose buffer stores rows
  of K transitions and samples ``Batch`` fields of shape ``(K, B, …)``;
- explorations: a factory with ``lockstep = True``, promising that its
  explorer treats each row of ``q_values`` on its own and keeps no per-row state.

Otherwise the cell's seeds run independently, with a one-line notice.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dqnbench.plugin.checks import check_actions, check_batch, check_q_values
from dqnbench.config.schema import AgentConfig, RunConfig
from dqnbench.plugin.contracts import Explorer
from dqnbench.agent.losses import dqn_targets, weighted_td_losses
from dqnbench.agent.numerics import flush_denormals
from dqnbench.builtin.optimizers import LeanAdam, TorchAdam, make_adam
from dqnbench.agent.loop import EVAL_SEED_OFFSET, MAX_EVAL_EPISODE_STEPS, TrainLog, make_env, seed_everything
from dqnbench.agent.envs import make_vector_env, terminal_next_obs


@dataclass(frozen=True)
class LockstepComponents:
    """One cell's factories, grid params bound: the network and explorer as usual, the replay for K members."""

    network: Callable[[int, int], nn.Module]
    replay: Callable[[int, int, int, float], Any]
    exploration: Callable[[int, int], Explorer]
    #: the network factory's batched forward ``(module, params, x) -> q``, or None for vmap
    network_forward: Callable | None = None


def stacked_linear(x: torch.Tensor, params: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """K linear layers at once: ``x (K, B, in)`` times the stacked ``<prefix>.weight (K, out, in)``, plus bias."""
    return torch.baddbmm(params[f"{prefix}.bias"].unsqueeze(1), x, params[f"{prefix}.weight"].transpose(1, 2))


class StackedQNetwork:
    """K networks of one architecture as stacked parameters ``(K, …)`` named as in ``state_dict``.

    Evaluated by the network factory's ``lockstep`` function when it has one
    (batched matmuls: ``forward(module, params, x)``), else by ``torch.func.vmap``
    over ``functional_call``, which runs any vmappable module but costs a few
    hundred µs of Python per call. Adam is elementwise, so one optimizer over the
    stacked parameters is K independent optimizers, and the gradient of a sum of
    per-member losses stays per member.
    """

    def __init__(self, nets: list[nn.Module], device: torch.device, forward: Callable | None = None) -> None:
        params, buffers = stack_module_state(nets)
        self.params = {k: nn.Parameter(v.detach().to(device)) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.members = len(nets)
        if forward is not None:
            self.module = nets[0]  # structure and train/eval flag only; its own tensors are not used
            self._forward = lambda p, x: forward(self.module, p, x)
        else:
            self.module = copy.deepcopy(nets[0]).to("meta")

            def call(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
                return functional_call(self.module, (p, b), (x,))

            vmapped = vmap(call, randomness="different")
            self._forward = lambda p, x: vmapped(p, self.buffers, x)

    def __call__(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Q-values ``(K, B, n_actions)`` of observations ``(K, B, obs_dim)``."""
        return self._forward(self.params if params is None else params, x)

    def train(self, mode: bool = True) -> StackedQNetwork:
        self.module.train(mode)
        return self

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def detached_params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.items()}

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """Each member's ``state_dict``, as an independent run would save it."""
        return [
            {k: v[i].detach().cpu().clone() for k, v in {**self.params, **self.buffers}.items()}
            for i in range(self.members)
        ]


def network_problem(
    factory: Callable[[int, int], nn.Module], obs_dim: int, n_actions: int, forward: Callable | None = None
) -> str | None:
    """Why this network cannot be trained in lock-step (``None`` when it can): a probe of forward + backward."""
    try:
        stacked = StackedQNetwork([factory(obs_dim, n_actions) for _ in range(2)], torch.device("cpu"), forward)
        q = stacked(torch.zeros(2, 3, obs_dim))
        check_q_values(q[0], 3, n_actions)
        q.sum().backward()
        stacked.train(False)(torch.zeros(2, 1, obs_dim))
    except Exception as exc:  # whatever vmap or the module objects to
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def vmap_slowdown(
    factory: Callable[[int, int], nn.Module], obs_dim: int, n_actions: int, members: int, batch_size: int
) -> float:
    """How much slower a vmapped learn-like step (forward + backward) is than ``members`` separate ones.

    vmap spends a few hundred µs of Python per call, so for small networks K
    independent runs can beat one vmapped program; lock-step through vmap is
    used only when this ratio is below 1.
    """
    nets = [factory(obs_dim, n_actions) for _ in range(members)]
    stacked = StackedQNetwork(nets, torch.device("cpu"))
    x, xs = torch.zeros(members, batch_size, obs_dim), torch.zeros(batch_size, obs_dim)

    def batched() -> None:
        stacked(x).sum().backward()

    def separate() -> None:
        for net in nets:
            net(xs).sum().backward()

    def best_of(fn: Callable[[], None]) -> float:
        fn()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    return best_of(batched) / best_of(separate)


@flush_denormals
def train_lockstep(
    config: RunConfig, seeds: list[int], components: LockstepComponents, timing: bool = True
) -> list[TrainLog]:
    """Train one DQN per seed of a cell, all in one batched loop; return one log per seed.

    Runs with CPU denormals flushed to zero, like :func:`dqnbench.agent.loop.train`.
    """
    exp, agent = config.experiment, config.agent
    members = len(seeds)
    clock = time.perf_counter if timing else _no_clock
    device = torch.device(exp.device)

    # Each member's network starts as its independent run's would; then one seed for the shared streams.
    envs, eval_envs = make_vector_env(exp.env, members, make_env), make_vector_env(exp.env, members, make_env)
    obs_dim, n_actions = int(np.prod(envs.single_observation_space.shape)), int(envs.single_action_space.n)
    nets = []
    for seed in seeds:
        seed_everything(seed)
        nets.append(components.network(obs_dim, n_actions))
    seed_everything(seeds[0])
    q_net = StackedQNetwork(nets, device, components.network_forward).train()
    target_params = q_net.detached_params()
    replay = components.replay(members, config.replay.capacity, obs_dim, agent.gamma)
    explorer = components.exploration(n_actions, exp.total_steps)
    optimizer = make_adam(q_net.parameters(), agent.lr)
    learn = make_lockstep_learner(q_net, components.network_forward, optimizer, agent)
    log = LockstepLog(members, exp.total_steps)

    obs, _ = envs.reset(seed=seeds[0])
    eval_envs.reset(seed=seeds[0] + EVAL_SEED_OFFSET)
    episode_return = np.zeros(members)
    episode_start = np.zeros(members, dtype=np.int64)
    episode = np.zeros(members, dtype=np.int64)
    learn_steps, eval_s = 0, 0.0
    start = time.perf_counter()
    for step in range(exp.total_steps):
        # Act: every member's Q-values in one vmapped forward, one explorer over K rows.
        t0 = clock()
        with torch.inference_mode():
            q_values = q_net(torch.as_tensor(obs, device=device).unsqueeze(1)).squeeze(1)
            actions = explorer.select(q_values, step)
            if step == 0:
                check_actions(actions, members, n_actions)
            actions = actions.cpu().numpy()
        t1 = clock()

        # Step all K environments; finished members are already reset (same-step autoreset).
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        t2 = clock()

        # Store each member's transition, then learn for all members at once.
        replay.add(obs, actions, rewards, terminal_next_obs(next_obs, info), terminated, truncated)
        if step + 1 >= agent.learning_starts and len(replay) >= agent.batch_size and step % agent.train_every == 0:
            total = torch.zeros(members)
            for _ in range(agent.gradient_steps):
                batch = replay.sample(agent.batch_size)
                if learn_steps == 0:
                    check_batch(_member(batch, 0), agent.batch_size, obs_dim)
                if device.type != "cpu":
                    batch = batch.to(device)
                member_losses, td_errors = learn(target_params, batch)
                replay.update_priorities(batch.indices, td_errors.cpu())
                learn_steps += 1
                if learn_steps % agent.target_update == 0:
                    target_params = q_net.detached_params()
                total += member_losses
            log.record_losses(step, total / agent.gradient_steps)
        t3 = clock()
        log.rewards[:, step], log.episode[:, step] = rewards, episode
        log.t_act[:, step], log.t_env[:, step], log.t_learn[:, step] = (
            (t1 - t0) / members,
            (t2 - t1) / members,
            (t3 - t2) / members,
        )

        episode_return += rewards
        obs = next_obs
        for k in np.flatnonzero(terminated | truncated):
            log.episodes[k].append(
                (int(episode[k]), step + 1, float(episode_return[k]), step + 1 - int(episode_start[k]))
            )
            episode[k], episode_return[k], episode_start[k] = episode[k] + 1, 0.0, step + 1

        done_steps = step + 1
        if done_steps == exp.total_steps or (exp.eval_every and done_steps % exp.eval_every == 0):
            eval_start = time.perf_counter()
            returns = evaluate_lockstep(q_net, eval_envs, exp.eval_episodes, device)
            eval_s += time.perf_counter() - eval_start
            for k in range(members):
                log.evals[k].append((done_steps, returns[k]))

    train_s = time.perf_counter() - start - eval_s
    envs.close()
    eval_envs.close()
    return log.split(obs_dim, n_actions, train_s, q_net.state_dicts())


def make_lockstep_learner(
    q_net: StackedQNetwork, forward: Callable | None, optimizer: LeanAdam | TorchAdam, agent: AgentConfig
) -> Callable[[dict[str, torch.Tensor], Any], tuple[torch.Tensor, torch.Tensor]]:
    """``(target_params, batch) -> (member losses, TD errors)``: the batched forward's own ``learn`` if it has one
    (the built-in MLP's hand-derived step), else :func:`learn_step_lockstep` (autograd)."""
    fused = getattr(forward, "learn", None)
    if fused is not None:
        return lambda target_params, batch: fused(q_net.module, q_net, target_params, optimizer, batch, agent)
    return lambda target_params, batch: learn_step_lockstep(q_net, target_params, optimizer, batch, agent)


def learn_step_lockstep(
    q_net: StackedQNetwork,
    target_params: dict[str, torch.Tensor],
    optimizer: LeanAdam | TorchAdam,
    batch: Any,
    agent: AgentConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One gradient step for every member; returns per-member losses ``(K,)`` and TD errors ``(K, B)``."""
    members, size = batch.actions.shape
    q_taken = q_net(batch.obs).gather(2, batch.actions.unsqueeze(2)).squeeze(2)
    with torch.no_grad():
        next_q_target = q_net(batch.next_obs, target_params)
        next_q_online = q_net(batch.next_obs) if agent.double else None
        targets = dqn_targets(
            batch.rewards.reshape(-1),
            batch.discounts.reshape(-1),
            batch.terminated.reshape(-1),
            next_q_target.reshape(members * size, -1),
            None if next_q_online is None else next_q_online.reshape(members * size, -1),
        ).view(members, size)
    losses = weighted_td_losses(q_taken.reshape(-1), targets.reshape(-1), batch.weights.reshape(-1), agent.loss)
    member_losses = losses.view(members, size).mean(dim=1)
    optimizer.zero_grad()
    member_losses.sum().backward()  # members' parameters are disjoint: each gets its own gradient
    if agent.max_grad_norm > 0:
        clip_member_grad_norms(q_net.parameters(), agent.max_grad_norm)
    optimizer.step()
    return member_losses.detach(), (targets - q_taken).detach()


def clip_member_grad_norms(params: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` applied to each member's slice of the stacked gradients."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def evaluate_lockstep(q_net: StackedQNetwork, envs: Any, episodes: int, device: torch.device) -> list[list[float]]:
    """Each member's greedy returns over its first ``episodes`` episodes, nets in eval mode."""
    members = q_net.members
    limit = episodes * ((envs.spec.max_episode_steps if envs.spec else None) or MAX_EVAL_EPISODE_STEPS)
    returns: list[list[float]] = [[] for _ in range(members)]
    running = np.zeros(members)
    obs, _ = envs.reset()
    q_net.train(False)
    with torch.inference_mode():
        for _ in range(limit):
            if all(len(r) >= episodes for r in returns):
                break
            actions = q_net(torch.as_tensor(obs, device=device).unsqueeze(1)).squeeze(1).argmax(dim=1)
            obs, rewards, terminated, truncated, _ = envs.step(actions.cpu().numpy())
            running += rewards
            for k in np.flatnonzero(terminated | truncated):
                if len(returns[k]) < episodes:
                    returns[k].append(float(running[k]))
                running[k] = 0.0
    q_net.train(True)
    return [r + [float(running[k])] * (episodes - len(r)) for k, r in enumerate(returns)]


class LockstepLog:
    """Per-member arrays ``(K, total_steps)`` and lists, split into one :class:`TrainLog` per member."""

    def __init__(self, members: int, total_steps: int) -> None:
        shape = (members, total_steps)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.episode = np.zeros(shape, dtype=np.int64)
        self.t_act, self.t_env, self.t_learn = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.loss = np.full(shape, np.nan, dtype=np.float32)
        self.episodes: list[list[tuple]] = [[] for _ in range(members)]
        self.evals: list[list[tuple]] = [[] for _ in range(members)]
        self.diverged: dict[int, int] = {}

    def record_losses(self, step: int, losses: torch.Tensor) -> None:
        values = losses.numpy()
        self.loss[:, step] = values
        for k in np.flatnonzero(~np.isfinite(values)):
            self.diverged.setdefault(int(k), step)

    def split(self, obs_dim: int, n_actions: int, train_s: float, weights: list[dict]) -> list[TrainLog]:
        logs = []
        for k in range(len(self.episodes)):
            log = TrainLog(self.rewards.shape[1], obs_dim, n_actions)
            log.reward, log.episode, log.loss = self.rewards[k], self.episode[k], self.loss[k]
            log.t_act, log.t_env, log.t_learn = self.t_act[k], self.t_env[k], self.t_learn[k]
            for key, values in zip(log.episodes, zip(*self.episodes[k])) if self.episodes[k] else ():
                log.episodes[key] = list(values)
            for step, returns in self.evals[k]:
                log.evals["step"].append(step)
                log.evals["mean_return"].append(float(np.mean(returns)))
                log.evals["std_return"].append(float(np.std(returns)))
                log.evals["returns"].append(returns)
            log.train_s = train_s / len(self.episodes)  # each member's share of the wall time
            log.weights = weights[k]
            log.diverged_step = self.diverged.get(k)
            logs.append(log)
        return logs


def _member(batch: Any, k: int) -> Any:
    return type(batch)(*(t[k] for t in batch))


def _no_clock() -> float:
    return 0.0
