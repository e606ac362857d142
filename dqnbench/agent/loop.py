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
(:mod:`dqnbench.agent.nets`), with batches ``(K, B, …)``. The replay takes the
rows either way (one ``add``). Only the shapes differ. Each step's act / env / learn time is recorded with
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

import dataclasses
import functools
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

from dqnbench.agent.calibration import calibration_s
from dqnbench.agent.checkpoint import Checkpoint, TrainState, checkpoint_state, resume
from dqnbench.agent.envs import env_spaces, learning_reward, make_envs, reset_by_seed, terminal_next_obs
from dqnbench.agent.heads import with_learner_head
from dqnbench.agent.learning import learn_backward, learn_path
from dqnbench.agent.nets import QNetworks, probe_observations
from dqnbench.agent.numerics import flush_denormals
from dqnbench.agent.records import StepRecords, TrainLog, steps_window
from dqnbench.agent.watch import Watch
from dqnbench.config.schedule import LearningSchedule
from dqnbench.config.schema import AgentConfig, RunConfig
from dqnbench.plugin.checks import (
    ContractError,
    check_actions,
    check_batch,
    check_learner,
    check_network_outputs,
)
from dqnbench.plugin.contracts import Explorer, Learner, LearnerLoss, Optimizer
from dqnbench.plugin.legacy_replay import build_replay
from dqnbench.plugin.members import PerMember
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

    ``replay`` is built through :func:`~dqnbench.plugin.legacy_replay.build_replay`,
    for a single run or K members, whatever generation of replay it is.
    """

    network: Callable[..., nn.Module]
    replay: Callable[..., Any]
    exploration: Callable[[int, int], Explorer]
    learner: Callable[[int], Learner]
    optimizer: Callable[[list[nn.Parameter], float], Optimizer]
    env: Callable[[str], Any]


@dataclass(frozen=True)
class MemberAgent:
    """A fused group's member-wise ``[agent]`` values, one per member in member order (``docs/sweeps.md``).

    ``lr`` and ``gamma`` reach the optimizer and the replay as they are (a
    :class:`~dqnbench.plugin.members.PerMember` when that component takes them per
    member, else the group's one value). ``learning_starts`` is None when the
    group shares one (its optimizer cannot hold a member back).
    """

    lr: float | PerMember
    gamma: float | PerMember
    target_update: tuple[int, ...]
    max_grad_norm: tuple[float, ...]
    learning_starts: tuple[int, ...] | None


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
        fused: MemberAgent | None = None,
    ) -> None:
        self.nets, self.learner, self.optimizer, self.replay, self.explorer = nets, learner, optimizer, replay, explorer
        self.config, self.obs_spec, self.n_actions, self.device = agent, obs, n_actions, device
        #: the env component's reward transform (Atari's clipping); returns and evaluations keep the game score
        self.reward_for_learning = reward_for_learning
        self.on_cpu = device.type == "cpu"
        backward = getattr(learner, "backward", None)
        self.backward = backward if backward is not None else (lambda nets, batch: learn_backward(learner, nets, batch))
        self.learn_steps = 0
        self.no_autograd = torch.inference_mode()  # made once: a context object per act costs ~2 µs
        rows = nets.members or 1
        self.rows = rows
        #: the explorer decides before the forward pass, which runs only for a row that acts greedily (see act)
        self.lazy = getattr(explorer, "select_lazily", None) is not None and not forward_has_side_effects(
            self.forward, nets.online, probe_observations(obs, (rows,)).numpy(), device
        )
        #: rows whose learning has started (all, except fused members before their own learning_starts)
        self.learning_rows = np.ones(rows, dtype=bool)
        self.fused = fused
        if fused is not None:  # a fused group: each member's own schedule, clipping and learning start
            self.target_update = np.asarray(fused.target_update, dtype=np.int64)
            # each member's clipping bound, or None when no member clips (a check a learn step saved)
            self.max_grad_norm = (
                torch.tensor(fused.max_grad_norm, dtype=torch.float32) if any(fused.max_grad_norm) else None
            )
            self.learning_starts = (
                None if fused.learning_starts is None else np.asarray(fused.learning_starts, dtype=np.int64)
            )
            self.member_learn_steps = np.zeros(rows, dtype=np.int64)

    def step(
        self, envs: Any, obs: np.ndarray, step: int, clock: Callable[[], float] = _no_clock, probe: bool = False
    ) -> StepOutcome:
        """One DQN step for every row: act, step the env(s), store, learn when due (copying the target on schedule).

        ``clock`` times the three parts (``time.perf_counter`` in a timed run); ``probe``: the loop
        will read :meth:`probe` after this step, so the act computes the Q-values whatever the explorer draws.
        """
        # Act: every row's Q-values in one forward (when a row acts greedily), the explorer over R rows.
        t0 = clock()
        actions = self.act(obs, step, probe)
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
        losses = self.learn(step).numpy() if self.learn_due(step) else None
        return StepOutcome(next_obs, rewards, terminated, truncated, losses, t1 - t0, t2 - t1, clock() - t2)

    def act(self, obs: np.ndarray, step: int, q_values: bool = False) -> np.ndarray:
        """Actions ``(R,)`` for observations ``(R, *shape)``: the explorer on expected Q-values, no autograd.

        With :attr:`lazy`, the explorer draws first and calls for the forward pass only when a row
        acts greedily (``select_lazily``): the same draws and actions as ``select``, without the
        forward on a step where every row explores. ``q_values``: compute them anyway (a probe).
        """
        with self.no_autograd:
            if self.lazy and not q_values:
                actions = self.explorer.select_lazily(lambda: self.forward(obs), self.rows, step, self.device)
            else:
                self.last_q_values = self.forward(obs)  # kept for the loop's occasional probe of max Q
                actions = self.explorer.select(self.last_q_values, step)
        return actions.numpy() if self.on_cpu else actions.cpu().numpy()

    def forward(self, obs: np.ndarray) -> torch.Tensor:
        """Every row's expected Q-values ``(R, n_actions)`` for its observation (the caller turns autograd off)."""
        obs = torch.from_numpy(obs) if self.on_cpu else torch.as_tensor(obs, device=self.device)
        return self.learner.q_values(self.nets.rows(obs))

    def probe(self, step: int) -> tuple[np.ndarray, float]:
        """Each row's max Q-value at the last act that computed them (``q_values``), and the explorer's value (ε)
        at ``step``: what curves plot."""
        q_max = self.last_q_values.detach().max(dim=-1).values.float().cpu().numpy()
        value = getattr(self.explorer.explorer, "value", None)
        if not callable(value):
            return q_max, math.nan
        epsilon = value(step)
        return q_max, epsilon if isinstance(epsilon, np.ndarray) else float(epsilon)

    def store(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """One transition per row into the replay (rewards as the env component says to learn from them)."""
        if self.reward_for_learning is not None:
            rewards = self.reward_for_learning(rewards)
        self.replay.add(obs, actions, rewards, next_obs, terminated, truncated)

    @functools.cached_property
    def schedule(self) -> LearningSchedule:
        """When this agent learns. A fused group whose members start learning at different steps samples from
        the first step it can (its own ``learning_starts`` 0), so its random draws never depend on their values."""
        fused_starts = self.fused is not None and self.learning_starts is not None
        return LearningSchedule.of(dataclasses.replace(self.config, learning_starts=0) if fused_starts else self.config)

    def learn_due(self, step: int) -> bool:
        """Is ``step`` a learning step (:attr:`schedule`, on the replay's length)?"""
        return self.schedule.due(step, len(self.replay))

    def learn(self, step: int | None = None) -> torch.Tensor:
        """``gradient_steps`` × (sample, gradient step, priorities, target copy); the mean loss per row.

        A fused member before its own ``learning_starts`` (at env ``step``) stays
        as it was, and its loss is NaN.
        """
        agent, total, active = self.config, None, None
        if self.fused is not None and self.learning_starts is not None and step is not None:
            self.learning_rows = step + 1 >= self.learning_starts
            if not self.learning_rows.any():  # no member learns yet: the draws are taken all the same
                for _ in range(agent.gradient_steps):
                    self.replay.sample(agent.batch_size)
                return torch.full((len(self.learning_rows),), math.nan)
            if not self.learning_rows.all():
                active = torch.from_numpy(self.learning_rows)
        for _ in range(agent.gradient_steps):
            batch = self.replay.sample(agent.batch_size)
            if self.learn_steps == 0:
                check_batch(batch, self.nets.members, agent.batch_size, self.obs_spec)
            if not self.on_cpu:
                batch = batch.to(self.device)
            losses, priorities = self.gradient_step(batch, active)
            self.replay.update_priorities(batch.indices, priorities.cpu())
            self.learn_steps += 1
            self.copy_targets()
            total = losses if total is None else total + losses
        total = (total if agent.gradient_steps == 1 else total / agent.gradient_steps).cpu()
        return total if active is None else total.masked_fill(~active, math.nan)

    def copy_targets(self) -> None:
        """The hard target copy, every ``target_update`` learn steps (each fused member on its own count)."""
        if self.fused is None:
            if self.learn_steps % self.config.target_update == 0:
                self.nets.sync_target()
            return
        self.member_learn_steps += self.learning_rows
        due = self.learning_rows & (self.member_learn_steps % self.target_update == 0)
        if due.any():
            self.nets.sync_target(rows=None if due.all() else torch.from_numpy(due))

    def gradient_step(self, batch: Any, active: torch.Tensor | None = None) -> LearnerLoss:
        """One optimizer step on the learner's loss; returns per-row mean losses and per-sample priorities.

        The learner's ``backward`` sets the gradients (no ``zero_grad``: a
        network's manual path overwrites them, and zeroing 256×256 weights first
        costs the wide network ~10% of its learn step). ``active``: the fused
        members that step (None: all).
        """
        losses, priorities = self.backward(self.nets, batch)
        if self.fused is not None:
            if self.max_grad_norm is not None:
                self.nets.clip_grad_norm(self.max_grad_norm)
        elif self.config.max_grad_norm > 0:
            self.nets.clip_grad_norm(self.config.max_grad_norm)
        if active is None:
            self.optimizer.step()
        else:
            self.optimizer.step(active)
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
    fused: MemberAgent | None = None,
    watch: Watch | None = None,
    on_eval: Callable[[int, list[tuple[list, list]]], None] | None = None,
) -> list[TrainLog]:
    """Train one DQN per seed, as one run (``stacked=False``, one seed) or K lock-step members; a log each.

    ``fused``: a fused group's member-wise ``[agent]`` values (its components
    come bound to their own member-wise params).

    Runs with CPU denormals flushed to zero (:mod:`dqnbench.agent.numerics` says why).
    A single run raises :class:`Diverged` when its loss turns non-finite; a
    lock-step member records the step instead and the others train on.
    ``progress``, if given, is called with the env steps done (per run) every
    :data:`PROGRESS_EVERY_S` seconds or so, and at the end. ``checkpoint``, if
    given, is saved every ``checkpoint.every`` env steps and resumed from when it
    holds one (a K-member cell checkpoints as one); logs then carry ``resumed_at``.
    ``watch``, if given, is shown the records as they grow (live results, trackers:
    :mod:`dqnbench.agent.watch`). ``on_eval``, if given, is called after each evaluation but the first and last
    with the step and each run's ``(steps, mean returns)`` so far; it stops training by raising.
    """
    exp = config.experiment
    members = len(seeds) if stacked else None
    rows = len(seeds)
    clock = time.perf_counter if timing else _no_clock
    device = torch.device(exp.device)
    watch = watch if watch is not None else Watch(exp.total_steps, exp.eval_every)  # no sinks: never looks

    agent, envs, eval_envs = build(config, seeds, components, stacked, fused)
    obs_spec, n_actions = agent.obs_spec, agent.n_actions
    logs = [TrainLog(exp.total_steps, int(obs_spec), n_actions, obs_shape=obs_spec.shape, obs_dtype=obs_spec.dtype.name)
            for _ in seeds]  # fmt: skip
    # Step records, one row of R values per step or window (split per run at the end).
    records = StepRecords(exp.total_steps, rows, steps_window(exp.total_steps, exp.steps_window))

    obs, _ = reset_by_seed(envs, seeds)
    reset_by_seed(eval_envs, [seed + EVAL_SEED_OFFSET for seed in seeds])
    episode = np.zeros(rows, dtype=np.int64)
    episode_return, episode_start = np.zeros(rows), np.zeros(rows, dtype=np.int64)
    diverged: dict[int, int] = {}
    eval_s = trained_s = 0.0
    first = 0  # the first env step this call takes: 0, or the step of the checkpoint it resumes from
    saved = checkpoint.load() if checkpoint is not None else None
    train_state = TrainState(agent, envs, eval_envs, logs, records, seeds, stacked, episode, episode_return,
                             episode_start, diverged)  # fmt: skip
    if saved is not None:
        try:
            first = resume(saved, train_state, EVAL_SEED_OFFSET)
            obs, trained_s, eval_s = train_state.obs, train_state.trained_s, train_state.eval_s
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:  # another layout: start afresh, cleanly
            warnings.warn(f"ignoring checkpoint of {checkpoint.directory} ({type(exc).__name__}: {exc}); "
                          "the run starts afresh", RuntimeWarning, stacklevel=2)  # fmt: skip
            envs.close()
            eval_envs.close()
            checkpoint.clear()
            return train_runs(config, seeds, components, stacked, timing, progress, checkpoint, fused, watch, on_eval)
        if progress is not None:
            progress(first)

    def save_checkpoint(step: int) -> float:
        """Save the loop's state before env ``step`` (see :func:`checkpoint_state`); the seconds saving took."""
        saved_at = time.perf_counter()
        now = dataclasses.replace(train_state, obs=obs, trained_s=saved_at - start - eval_s, eval_s=eval_s)
        checkpoint.save(step, checkpoint_state(now))
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
            eval_s += _evaluate_into(logs, agent, eval_envs, exp.eval_episodes, device, step, seeds)
            if on_eval is not None and step:  # e.g. a search's pruner: each run's curve so far; raises to stop
                on_eval(step, [(log.evals["step"], log.evals["mean_return"]) for log in logs])
        # Show live results and trackers what was recorded (at each evaluation and every few seconds).
        if step >= watch.next_step:
            watch.update(step, logs, records, eval_s)

        # Act, step the env(s), store, learn when due: one DQN step for every row (Agent.step).
        probe = records.probe_due(step)
        next_obs, rewards, terminated, truncated, step_losses, t_act, t_env, t_learn = agent.step(
            envs, obs, step, clock, probe
        )
        if step_losses is not None and not math.isfinite(step_losses.item() if members is None else step_losses.sum()):
            if members is None:
                raise Diverged(step, float(step_losses), first or None)
            for k in np.flatnonzero(~np.isfinite(step_losses) & agent.learning_rows):
                diverged.setdefault(int(k), step)
        records.record(step, rewards, step_losses, t_act, t_env, t_learn)
        if probe:
            records.probe(step, *agent.probe(step))
        if timing and records.calibration_due(step):  # the machine's pace, for speed verdicts on lock-step groups
            records.calibrate(step, calibration_s(), time.process_time())

        episode_return += rewards
        obs = next_obs
        done = terminated | truncated
        if np.count_nonzero(done):  # ~4× faster than done.any() on a few rows
            for k in np.flatnonzero(done):
                record = (int(episode[k]), step + 1, float(episode_return[k]), step + 1 - int(episode_start[k]))
                for key, value in zip(logs[k].episodes, record):
                    logs[k].episodes[key].append(value)
                episode[k], episode_return[k], episode_start[k] = episode[k] + 1, 0.0, step + 1
        if progress is not None and step % 256 == 0 and time.perf_counter() - last_report > PROGRESS_EVERY_S:
            last_report = time.perf_counter()
            progress(step + 1)

    # One evaluation always ends training.
    eval_s += _evaluate_into(logs, agent, eval_envs, exp.eval_episodes, device, exp.total_steps, seeds)
    if exp.total_steps >= watch.next_step:
        watch.update(exp.total_steps, logs, records, eval_s)
    train_s = time.perf_counter() - start - eval_s
    envs.close()
    eval_envs.close()
    for k, (log, weights) in enumerate(zip(logs, agent.nets.state_dicts())):
        log.steps = records.table(k, np.asarray(log.episodes["step"], dtype=np.int64), rows)
        log.train_s, log.weights, log.diverged_step = train_s / rows, weights, diverged.get(k)
        log.resumed_at = first if saved is not None else None
        log.learn_path = learn_path(agent.learner, agent.nets)
        log.calibration = records.calibration()
        if log.diverged_step is not None:
            log.diverged_loss = records.loss_at(log.diverged_step, k)
    if progress is not None:
        progress(exp.total_steps)
    return logs


def _evaluate_into(
    logs: list[TrainLog], agent: Agent, envs: Any, episodes: int, device: torch.device, step: int,
    seeds: Sequence[int],
) -> float:  # fmt: skip
    """Evaluate every row greedily and append to its log's evals at ``step``; the seconds it took.

    Lock-step members' eval envs start each evaluation from their own seed and ``step``: how long the
    others' episodes run never moves a member's eval stream.
    """
    started = time.perf_counter()
    reseed = [seed + EVAL_SEED_OFFSET + step for seed in seeds] if len(seeds) > 1 else None
    returns = evaluate(agent, envs, episodes, device, reseed)
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


def build(
    config: RunConfig, seeds: Sequence[int], components: Components, stacked: bool, fused: MemberAgent | None = None
) -> tuple[Agent, Any, Any]:
    """Seed, make the envs, build every component and check their contracts once: ``(agent, envs, eval_envs)``."""
    exp, agent_config = config.experiment, config.agent
    rows = len(seeds) if stacked else None
    device = torch.device(exp.device)
    envs = make_envs(components.env, exp.env, rows)
    eval_envs = make_envs(components.env, exp.env, rows)
    obs_spec, n_actions = env_spaces(envs, exp.env)
    learner = components.learner(n_actions)
    check_learner(learner)
    network = components.network if learner.outputs == 1 else _with_outputs(components.network, learner.outputs)
    network = with_learner_head(network, learner)  # a learner that brings its own head (iqn) wraps the network

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
    gamma, lr = (agent_config.gamma, agent_config.lr) if fused is None else (fused.gamma, fused.lr)
    replay = build_replay(components.replay, config.replay.capacity, obs_spec, gamma, rows)
    explorer = components.exploration(n_actions, exp.total_steps)
    optimizer = components.optimizer(nets.params, lr)
    explorer = CheckedExplorer(explorer, n_actions)
    agent = Agent(
        nets, learner, optimizer, replay, explorer, agent_config, obs_spec, n_actions, device, learning_reward(envs),
        fused,
    )  # fmt: skip
    return agent, envs, eval_envs


class CheckedExplorer:
    """The explorer, its first answer checked against the contract (then out of the way)."""

    def __init__(self, explorer: Explorer, n_actions: int) -> None:
        self.explorer, self.n_actions = explorer, n_actions
        self.select = self._first
        if getattr(explorer, "select_lazily", None) is not None:
            self.select_lazily = self._first_lazily

    def _first(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        actions = self.explorer.select(q_values, step)
        check_actions(actions, q_values.shape[0], self.n_actions)
        self.select = self.explorer.select
        return actions

    def _first_lazily(
        self, q_values: Callable[[], torch.Tensor], rows: int, step: int, device: torch.device
    ) -> torch.Tensor:
        actions = self.explorer.select_lazily(q_values, rows, step, device)
        check_actions(actions, rows, self.n_actions)
        self.select_lazily = self.explorer.select_lazily
        return actions


def forward_has_side_effects(
    forward: Callable[[np.ndarray], torch.Tensor], network: nn.Module, probe: np.ndarray, device: torch.device
) -> bool:
    """Does the act forward draw from torch's RNG (noisy layers, IQN's levels) or change a buffer (batch norm)?

    One forward on ``probe``, the RNG and the buffers left as they were. Skipping such a forward
    would change a run, so its explorer keeps selecting on Q-values computed every step.
    """
    saved = [b.detach().clone() for b in network.buffers()]
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        before = [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if cuda else [])]
        with torch.inference_mode():
            forward(probe)
        after = [torch.get_rng_state(), *([torch.cuda.get_rng_state(device)] if cuda else [])]
    changed = any(not torch.equal(a, b) for a, b in zip(before, after))
    with torch.no_grad():
        for buffer, value in zip(network.buffers(), saved):
            changed = changed or not torch.equal(buffer, value)
            buffer.copy_(value)
    return changed


def evaluate(
    agent: Agent, envs: Any, episodes: int, device: torch.device, seeds: Sequence[int] | None = None
) -> list[list[float]]:
    """Each row's greedy returns over its first ``episodes`` episodes, networks in eval mode (noise off).

    ``seeds``: reset each row's env from its own seed first (else the envs go on from where they were).
    """
    rows = agent.nets.members or 1
    limit = episodes * ((envs.spec.max_episode_steps if envs.spec else None) or MAX_EVAL_EPISODE_STEPS)
    returns: list[list[float]] = [[] for _ in range(rows)]
    running = np.zeros(rows)
    obs, _ = envs.reset() if seeds is None else reset_by_seed(envs, seeds)
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
