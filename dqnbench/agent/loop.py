"""THE training loop: one DQN step, defined once, for one run or K lock-step members.

:func:`train_runs` reads like the tutorial's loop: seed, build the environments
and components, then for each env step act (online net + explorer), step the
env, store the transition and learn every ``train_every`` steps once
``learning_starts`` transitions are stored, copying the online net into the
target net every ``target_update`` learn steps; every ``eval_every`` steps and at
the end it evaluates greedily on separate envs. The step itself is
:class:`Agent` (act → store → learn → target copy), which the benchmark harness
(:mod:`dqnbench.devtools.pytest_plugin`) drives too.

Every array has one row per run: a single run (``stacked=False``) is one row
through plain modules, with observations ``(1, …)`` and batches ``(B, …)``;
K lock-step members are K rows through one stacked module
(:mod:`dqnbench.agent.nets`), with batches ``(K, B, …)`` from a members replay.
Only the shapes differ. Each step's act / env / learn time is recorded with
``time.perf_counter`` (store + learn count as learn; lock-step members get
1/K of the batched step each). Components arrive as factories with their grid
params bound; nothing here knows which plugin built them.

Given a :class:`~dqnbench.agent.checkpoint.Checkpoint`, :func:`train_runs`
saves everything the loop holds every ``checkpoint.every`` env steps (one line
in the loop) and, when its directory already holds one, goes on from there:
see :func:`~dqnbench.agent.checkpoint.checkpoint_state` and
:func:`~dqnbench.agent.checkpoint.resume`, and ``docs/checkpoints.md``.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from dqnbench.agent.checkpoint import Checkpoint, checkpoint_state, component_state, resume
from dqnbench.agent.envs import env_spaces, learning_reward, make_envs, terminal_next_obs
from dqnbench.agent.learning import autograd_backward
from dqnbench.agent.nets import QNetworks, probe_observations
from dqnbench.agent.numerics import flush_denormals
from dqnbench.agent.records import StepRecords, TrainLog, steps_window
from dqnbench.config.schema import AgentConfig, RunConfig
from dqnbench.plugin.checks import (
    ContractError,
    check_actions,
    check_batch,
    check_learner,
    check_network_outputs,
)
from dqnbench.plugin.contracts import Explorer, Learner, LearnerLoss, Optimizer
from dqnbench.plugin.obs import ObsSpec

#: the evaluation env is seeded apart from the training env
EVAL_SEED_OFFSET = 1_000_003
#: seconds between progress reports from inside a run
PROGRESS_EVERY_S = 2.0
#: greedy evaluation episodes stop here when the env has no time limit of its own
MAX_EVAL_EPISODE_STEPS = 100_000


@dataclass(frozen=True)
class Components:
    """One run's component factories, grid params bound (see :mod:`dqnbench.run.runner`).

    ``members_replay`` is the replay's lock-step members-factory, needed only to
    train stacked members.
    """

    network: Callable[..., nn.Module]
    replay: Callable[..., Any]
    exploration: Callable[[int, int], Explorer]
    learner: Callable[[int], Learner]
    optimizer: Callable[[list[nn.Parameter], float], Optimizer]
    env: Callable[[str], Any]
    members_replay: Callable[..., Any] | None = None


class Diverged(Exception):
    """The loss became NaN or infinite; the run stops and is recorded as diverged."""

    def __init__(self, step: int, loss: float, resumed_at: int | None = None) -> None:
        self.step, self.resumed_at = step, resumed_at
        super().__init__(f"loss became {loss} at env step {step}")


def _no_clock() -> float:
    return 0.0


class StepOutcome(NamedTuple):
    """What one step of :class:`Agent` gives the loop: the env's answer, the losses if it learned, the timings."""

    next_obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    #: per-row mean losses ``(R,)`` (a 0-d array for a single run), None when the step did not learn
    losses: np.ndarray | None
    t_act: float
    t_env: float
    t_learn: float


class Agent:
    """The DQN step for R rows (one run, or K stacked members): act, store, learn, target copy."""

    def __init__(
        self,
        nets: QNetworks,
        learner: Learner,
        optimizer: Optimizer,
        replay: Any,
        explorer: Explorer,
        agent: AgentConfig,
        obs: ObsSpec,
        n_actions: int,
        device: torch.device,
        reward_for_learning: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.nets, self.learner, self.optimizer, self.replay, self.explorer = nets, learner, optimizer, replay, explorer
        self.config, self.obs_spec, self.n_actions, self.device = agent, obs, n_actions, device
        #: the env component's reward transform (Atari's clipping); returns and evaluations keep the game score
        self.reward_for_learning = reward_for_learning
        self.on_cpu = device.type == "cpu"
        backward = getattr(learner, "backward", None)
        self.backward = (
            backward if backward is not None else (lambda nets, batch: autograd_backward(learner, nets, batch))
        )
        self.learn_steps = 0
        self.no_autograd = torch.inference_mode()  # made once: a context object per act costs ~2 µs

    def step(self, envs: Any, obs: np.ndarray, step: int, clock: Callable[[], float] = _no_clock) -> StepOutcome:
        """One DQN step for every row: act, step the env(s), store, learn when due (copying the target on schedule).

        ``clock`` times the three parts (``time.perf_counter`` in a timed run).
        """
        # Act: every row's Q-values in one forward, the explorer over R rows.
        t0 = clock()
        actions = self.act(obs, step)
        t1 = clock()

        # Step the environment(s); a finished episode is already reset (same-step autoreset).
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        t2 = clock()
        if next_obs.shape[1:] != self.obs_spec.shape:  # a corrupt frame: name the env, not the replay it breaks
            raise ContractError(
                "env",
                f"step {step} gave observations of shape {next_obs.shape[1:]}, its space says {self.obs_spec.shape}",
            )

        # Store, then learn every train_every steps once enough is stored.
        self.store(obs, actions, rewards, terminal_next_obs(next_obs, info), terminated, truncated)
        losses = self.learn().numpy() if self.learn_due(step) else None
        return StepOutcome(next_obs, rewards, terminated, truncated, losses, t1 - t0, t2 - t1, clock() - t2)

    def act(self, obs: np.ndarray, step: int) -> np.ndarray:
        """Actions ``(R,)`` for observations ``(R, *shape)``: the explorer on expected Q-values, no autograd."""
        with self.no_autograd:
            q_values = self.learner.q_values(self.nets.rows(torch.as_tensor(obs, device=self.device)))
            actions = self.explorer.select(q_values, step)
        self.last_q_values = q_values  # kept for the loop's occasional probe of max Q (no work here)
        return actions.cpu().numpy()

    def probe(self, step: int) -> tuple[np.ndarray, float]:
        """Each row's max Q-value at the last act, and the explorer's value (ε) at ``step``: what curves plot."""
        q_max = self.last_q_values.detach().max(dim=-1).values.float().cpu().numpy()
        value = getattr(self.explorer.explorer, "value", None)
        return q_max, float(value(step)) if callable(value) else math.nan

    def store(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """One transition per row into the replay (rewards as the env component says to learn from them)."""
        if self.reward_for_learning is not None:
            rewards = self.reward_for_learning(rewards)
        self.replay.add(obs, actions, rewards, next_obs, terminated, truncated)

    def learn_due(self, step: int) -> bool:
        agent = self.config
        return (
            step + 1 >= agent.learning_starts and len(self.replay) >= agent.batch_size and step % agent.train_every == 0
        )

    def learn(self) -> torch.Tensor:
        """``gradient_steps`` × (sample, gradient step, priorities, target copy); the mean loss per row."""
        agent, total = self.config, None
        for _ in range(agent.gradient_steps):
            batch = self.replay.sample(agent.batch_size)
            if self.learn_steps == 0:
                check_batch(batch, self.nets.members, agent.batch_size, self.obs_spec)
            if not self.on_cpu:
                batch = batch.to(self.device)
            losses, priorities = self.gradient_step(batch)
            self.replay.update_priorities(batch.indices, priorities.cpu())
            self.learn_steps += 1
            if self.learn_steps % agent.target_update == 0:
                self.nets.sync_target()
            total = losses if total is None else total + losses
        return (total if agent.gradient_steps == 1 else total / agent.gradient_steps).cpu()

    def gradient_step(self, batch: Any) -> LearnerLoss:
        """One optimizer step on the learner's loss; returns per-row mean losses and per-sample priorities.

        The learner's ``backward`` sets the gradients (no ``zero_grad``: the
        hand-derived path overwrites them, and zeroing 256×256 weights first
        costs the wide network ~10% of its learn step).
        """
        losses, priorities = self.backward(self.nets, batch)
        if self.config.max_grad_norm > 0:
            self.nets.clip_grad_norm(self.config.max_grad_norm)
        self.optimizer.step()
        return LearnerLoss(losses, priorities)


@flush_denormals
def train_runs(
    config: RunConfig,
    seeds: Sequence[int],
    components: Components,
    stacked: bool,
    timing: bool = True,
    progress: Callable[[int], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> list[TrainLog]:
    """Train one DQN per seed, as one run (``stacked=False``, one seed) or K lock-step members; a log each.

    Runs with CPU denormals flushed to zero (:mod:`dqnbench.agent.numerics` says why).
    A single run raises :class:`Diverged` when its loss turns non-finite; a
    lock-step member records the step instead and the others train on.
    ``progress``, if given, is called with the env steps done (per run) every
    :data:`PROGRESS_EVERY_S` seconds or so, and at the end. ``checkpoint``, if
    given, is saved every ``checkpoint.every`` env steps and resumed from when it
    holds one (a K-member cell checkpoints as one); logs then carry ``resumed_at``.
    """
    exp = config.experiment
    members = len(seeds) if stacked else None
    rows = len(seeds)
    clock = time.perf_counter if timing else _no_clock
    device = torch.device(exp.device)

    agent, envs, eval_envs = build(config, seeds, components, stacked)
    obs_spec, n_actions = agent.obs_spec, agent.n_actions
    logs = [TrainLog(exp.total_steps, int(obs_spec), n_actions, obs_shape=obs_spec.shape, obs_dtype=obs_spec.dtype.name)
            for _ in seeds]  # fmt: skip
    # Step records, one row of R values per step or window (split per run at the end).
    records = StepRecords(exp.total_steps, rows, steps_window(exp.total_steps, exp.steps_window))

    obs, _ = envs.reset(seed=seeds[0])
    eval_envs.reset(seed=seeds[0] + EVAL_SEED_OFFSET)
    episode = np.zeros(rows, dtype=np.int64)
    episode_return, episode_start = np.zeros(rows), np.zeros(rows, dtype=np.int64)
    diverged: dict[int, int] = {}
    eval_s = trained_s = 0.0
    first = 0  # the first env step this call takes: 0, or the step of the checkpoint it resumes from
    saved = checkpoint.load() if checkpoint is not None else None
    counters = (episode, episode_return, episode_start, diverged)
    if saved is not None:
        try:
            first, obs, trained_s, eval_s = resume(
                saved, agent, envs, eval_envs, logs, records, counters, seeds, stacked, EVAL_SEED_OFFSET
            )
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # another layout: start afresh, cleanly
            warnings.warn(f"ignoring checkpoint of {checkpoint.directory} ({type(exc).__name__}: {exc}); "
                          "the run starts afresh", RuntimeWarning, stacklevel=2)  # fmt: skip
            envs.close()
            eval_envs.close()
            checkpoint.clear()
            return train_runs(config, seeds, components, stacked, timing, progress, checkpoint)
        if progress is not None:
            progress(first)

    def save_checkpoint(step: int) -> float:
        """Save the loop's state before env ``step`` (see :func:`checkpoint_state`); the seconds saving took."""
        saved_at = time.perf_counter()
        state = checkpoint_state(
            agent, envs, eval_envs, obs, logs, records, counters, seeds, stacked, saved_at - start - eval_s, eval_s
        )
        checkpoint.save(step, state)
        return time.perf_counter() - saved_at

    # a checkpoint every `every` steps; without one, a period the loop never reaches (so the test stays one `%`)
    every = checkpoint.every if checkpoint is not None else exp.total_steps + 1
    start = last_report = time.perf_counter() - trained_s - eval_s
    for step in range(first, exp.total_steps):
        # Save a checkpoint every checkpoint_every steps (the state before this step; not the one resumed from).
        if step % every == 0 and step != first:
            start += save_checkpoint(step)  # saving is not training time

        # Evaluate greedily every eval_every steps, from step 0 (the untrained agent) to the end.
        if exp.eval_every and step % exp.eval_every == 0:
            eval_s += _evaluate_into(logs, agent, eval_envs, exp.eval_episodes, device, step)

        # Act, step the env(s), store, learn when due: one DQN step for every row (Agent.step).
        next_obs, rewards, terminated, truncated, step_losses, t_act, t_env, t_learn = agent.step(
            envs, obs, step, clock
        )
        if step_losses is not None and not math.isfinite(step_losses.item() if members is None else step_losses.sum()):
            if members is None:
                raise Diverged(step, float(step_losses), first or None)
            for k in np.flatnonzero(~np.isfinite(step_losses)):
                diverged.setdefault(int(k), step)
        records.record(step, rewards, step_losses, t_act, t_env, t_learn)
        if records.probe_due(step):
            records.probe(step, *agent.probe(step))

        episode_return += rewards
        obs = next_obs
        done = terminated | truncated
        if done.any():
            for k in np.flatnonzero(done):
                record = (int(episode[k]), step + 1, float(episode_return[k]), step + 1 - int(episode_start[k]))
                for key, value in zip(logs[k].episodes, record):
                    logs[k].episodes[key].append(value)
                episode[k], episode_return[k], episode_start[k] = episode[k] + 1, 0.0, step + 1
        if progress is not None and step % 256 == 0 and time.perf_counter() - last_report > PROGRESS_EVERY_S:
            last_report = time.perf_counter()
            progress(step + 1)

    # One evaluation always ends training.
    eval_s += _evaluate_into(logs, agent, eval_envs, exp.eval_episodes, device, exp.total_steps)
    train_s = time.perf_counter() - start - eval_s
    envs.close()
    eval_envs.close()
    for k, (log, weights) in enumerate(zip(logs, agent.nets.state_dicts())):
        log.steps = records.table(k, np.asarray(log.episodes["step"], dtype=np.int64), rows)
        log.train_s, log.weights, log.diverged_step = train_s / rows, weights, diverged.get(k)
        log.resumed_at = first if saved is not None else None
        if log.diverged_step is not None:
            log.diverged_loss = records.loss_at(log.diverged_step, k)
    if progress is not None:
        progress(exp.total_steps)
    return logs


def _evaluate_into(
    logs: list[TrainLog], agent: Agent, envs: Any, episodes: int, device: torch.device, step: int
) -> float:
    """Evaluate every row greedily and append to its log's evals at ``step``; the seconds it took."""
    started = time.perf_counter()
    returns = evaluate(agent, envs, episodes, device)
    for log, run_returns in zip(logs, returns):
        for key, value in zip(log.evals, (step, np.mean(run_returns), np.std(run_returns), run_returns)):
            log.evals[key].append(value)
    return time.perf_counter() - started


def train(config: RunConfig, seed: int, components: Components, timing: bool = True) -> TrainLog:
    """Train one independent DQN run (see :func:`train_runs`)."""
    return train_runs(config, [seed], components, stacked=False, timing=timing)[0]


def train_lockstep(
    config: RunConfig, seeds: Sequence[int], components: Components, timing: bool = True
) -> list[TrainLog]:
    """Train a cell's seeds as K lock-step members (see :func:`train_runs`)."""
    return train_runs(config, seeds, components, stacked=True, timing=timing)


def build(config: RunConfig, seeds: Sequence[int], components: Components, stacked: bool) -> tuple[Agent, Any, Any]:
    """Seed, make the envs, build every component and check their contracts once: ``(agent, envs, eval_envs)``."""
    exp, agent_config = config.experiment, config.agent
    members = len(seeds) if stacked else None
    device = torch.device(exp.device)
    envs = make_envs(components.env, exp.env, members)
    eval_envs = make_envs(components.env, exp.env, members)
    obs_spec, n_actions = env_spaces(envs, exp.env)
    learner = components.learner(n_actions)
    check_learner(learner)
    network = components.network if learner.outputs == 1 else _with_outputs(components.network, learner.outputs)

    # Each member's network starts as its independent run's would, seeded with its own seed.
    modules = []
    for seed in seeds:
        seed_everything(seed)
        modules.append(network(obs_spec, n_actions))
    if stacked:  # the streams lock-step members share start afresh from the first seed
        seed_everything(seeds[0])
    with torch.random.fork_rng(devices=[]):  # a contract probe draws nothing from the run's RNG
        for batch in (2, 1):  # a learn batch, and the acting batch (a squeeze there breaks only acting)
            check_network_outputs(modules[0], probe_observations(obs_spec, (batch,)), n_actions, learner.outputs)
    nets = QNetworks.of(modules, obs_spec, device, stacked)
    if stacked:
        replay = components.members_replay(members, config.replay.capacity, obs_spec, agent_config.gamma)
    else:
        replay = OneReplay(components.replay(config.replay.capacity, obs_spec, agent_config.gamma))
    explorer = components.exploration(n_actions, exp.total_steps)
    optimizer = components.optimizer(nets.params, agent_config.lr)
    explorer = CheckedExplorer(explorer, n_actions)
    agent = Agent(
        nets, learner, optimizer, replay, explorer, agent_config, obs_spec, n_actions, device, learning_reward(envs)
    )
    return agent, envs, eval_envs


class OneReplay:
    """A single run's replay behind the row interface (rows of one): the v1 ``add`` of one transition."""

    def __init__(self, replay: Any) -> None:
        self.replay = replay
        self.sample, self.update_priorities = replay.sample, replay.update_priorities

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        self.replay.add(obs[0], int(actions[0]), float(rewards[0]), next_obs[0], bool(terminated[0]))

    def __len__(self) -> int:
        return len(self.replay)

    def state_dict(self) -> Any:
        """The replay's own ``state_dict()``, or None when it has none (a checkpoint then skips the replay)."""
        return component_state(self.replay)

    def load_state_dict(self, state: Any) -> None:
        self.replay.load_state_dict(state)


class CheckedExplorer:
    """The explorer, its first answer checked against the contract (then out of the way)."""

    def __init__(self, explorer: Explorer, n_actions: int) -> None:
        self.explorer, self.n_actions = explorer, n_actions
        self.select = self._first

    def _first(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        actions = self.explorer.select(q_values, step)
        check_actions(actions, q_values.shape[0], self.n_actions)
        self.select = self.explorer.select
        return actions


def evaluate(agent: Agent, envs: Any, episodes: int, device: torch.device) -> list[list[float]]:
    """Each row's greedy returns over its first ``episodes`` episodes, networks in eval mode (noise off)."""
    rows = agent.nets.members or 1
    limit = episodes * ((envs.spec.max_episode_steps if envs.spec else None) or MAX_EVAL_EPISODE_STEPS)
    returns: list[list[float]] = [[] for _ in range(rows)]
    running = np.zeros(rows)
    obs, _ = envs.reset()
    agent.nets.online.eval()
    with torch.inference_mode():
        for _ in range(limit):
            if all(len(r) >= episodes for r in returns):
                break
            q_values = agent.learner.q_values(agent.nets.rows(torch.as_tensor(obs, device=device)))
            obs, rewards, terminated, truncated, _ = envs.step(q_values.argmax(dim=-1).cpu().numpy())
            running += rewards
            for k in np.flatnonzero(terminated | truncated):
                if len(returns[k]) < episodes:
                    returns[k].append(float(running[k]))
                running[k] = 0.0
    agent.nets.online.train()
    return [r + [float(running[k])] * (episodes - len(r)) for k, r in enumerate(returns)]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _with_outputs(network: Callable[..., nn.Module], outputs: int) -> Callable[..., nn.Module]:
    def build_network(obs_dim: ObsSpec, n_actions: int) -> nn.Module:
        return network(obs_dim, n_actions, outputs=outputs)

    return build_network
