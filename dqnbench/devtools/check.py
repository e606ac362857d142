"""What ``dqnbench plugins --check`` does: build every component and probe its contract.

:func:`check_components` answers "does my component do what dqnbench expects?"
without a training run. It builds every component a grid can name (executors on
request) with its default params on a small environment and probes it with the
contract checks runs use (:mod:`dqnbench.plugin.checks`), plus what a run needs
later: gradients, ``deepcopy`` for the target net, weights that reload with
``weights_only=True``, a learner's loss on a real network pair, lock-step forms
where declared. Every failure becomes a :class:`Problem` naming the component's
distribution, never a traceback.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from dqnbench.agent.envs import env_spaces
from dqnbench.agent.heads import features_problem, learner_network
from dqnbench.agent.learning import autograd_backward
from dqnbench.agent.loop import seed_everything
from dqnbench.agent.nets import QNetworks
from dqnbench.builtin.conv import NATURE_CONVS, minatar_cnn, nature_cnn, smallest_image
from dqnbench.builtin.networks import mlp
from dqnbench.config.schema import RunConfig
from dqnbench.devtools.describe import Problem, registry_problems
from dqnbench.devtools.memberwise import memberwise_problem, set_grads
from dqnbench.errors import DqnbenchError
from dqnbench.nn import UnsupportedObservations
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.checks import check_actions, check_batch, check_learner, check_observations, check_q_values
from dqnbench.plugin.legacy_replay import LegacyReplay, build_replay, takes_members
from dqnbench.plugin.members import declared
from dqnbench.plugin.obs import ObsSpec
from dqnbench.plugin.registry import KINDS, RUN_KINDS, Component, Registry

#: what the probes use: a few hundred env steps, small batches, a short schedule
PROBE_STEPS = 200
PROBE_BATCH = 32
PROBE_CAPACITY = 1_000
PROBE_GAMMA = 0.99
PROBE_TOTAL_STEPS = 1_000
PROBE_SEED = 0
PROBE_LR = 1e-3
#: what the learner check fills ``.grad`` with before ``backward``, which must overwrite it
STALE_GRAD = 7.0
#: env steps an env component's check takes (its own env, and its vector form)
PROBE_ENV_STEPS = 20
#: the env component that makes the probe environment: the one a grid gets without an ``[env]`` section
PROBE_ENV_COMPONENT = RunConfig.env.name
#: what ``check_components`` checks unless told otherwise: the kinds a grid names. Executors are
#: checked on request only, since building one may start a cluster (the ``ray`` executor does).
DEFAULT_KINDS = RUN_KINDS


class _Violation(Exception):
    """Raised inside a probe: ``stage`` says which call broke the contract."""

    def __init__(self, stage: str, cause: BaseException | str) -> None:
        self.stage = stage
        text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{stage}: {text}")


def _stage(stage: str, call: Callable[[], Any]) -> Any:
    """Run one step of a probe, turning any exception into a :class:`_Violation` naming the step."""
    try:
        return call()
    except _Violation:
        raise
    except Exception as exc:
        raise _Violation(stage, exc) from exc


@dataclass(frozen=True)
class _Probe:
    """What every check runs on: the environment's spaces and a few hundred real transitions.

    ``transitions`` are ``(obs, action, reward, next_obs, terminated)``, observations in the
    environment's own shape and dtype; ``truncated`` says where a time limit cut an episode.
    A replay's ``add`` gets them in rows, with ``truncated``, as the loop gives them.
    """

    env_id: str
    obs: ObsSpec
    n_actions: int
    transitions: list[tuple[np.ndarray, int, float, np.ndarray, bool]]
    truncated: list[bool]

    def observations(self, batch: int) -> torch.Tensor:
        """The first ``batch`` observations ``(batch, *obs.shape)``, in their own dtype."""
        return torch.from_numpy(np.stack([t[0] for t in self.transitions[:batch]]))

    def batch(self, size: int, members: int | None = None) -> Batch:
        """A :class:`Batch` of real transitions, ``(size, …)`` or ``(members, size, …)``, with uneven weights."""
        lead = (size,) if members is None else (members, size)
        count = size * (members or 1)
        rows = [self.transitions[i % len(self.transitions)] for i in range(count)]

        def field(i: int, dtype: torch.dtype | None = None) -> torch.Tensor:
            values = torch.from_numpy(np.stack([np.asarray(r[i]) for r in rows]))
            values = values if dtype is None else values.to(dtype)
            return values.reshape(*lead, *values.shape[1:])

        generator = torch.Generator().manual_seed(PROBE_SEED)
        return Batch(
            obs=field(0),
            actions=field(1, torch.int64),
            rewards=field(2, torch.float32),
            next_obs=field(3),
            terminated=field(4, torch.bool),
            weights=torch.rand(lead, generator=generator) + 0.5,  # importance-sampling weights in [0.5, 1.5)
            indices=torch.arange(count).reshape(lead),
            discounts=torch.full(lead, PROBE_GAMMA),
        )


def _probe(registry: Registry, env_id: str, steps: int = PROBE_STEPS, seed: int = PROBE_SEED) -> _Probe:
    """Random-action steps on ``env_id``, made by the default env component, as the loop would store them.

    Raises :class:`DqnbenchError` for an environment that cannot be made or has
    no Discrete actions or no Box observations.
    """
    env_component = registry.get("env", PROBE_ENV_COMPONENT)
    try:
        env = env_component.factory(env_id)
    except DqnbenchError:
        raise
    except Exception as exc:  # an unknown id is the user's to fix, not a traceback
        raise DqnbenchError(
            f"cannot create environment {env_id!r} with {env_component.describe()}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        obs_spec, n_actions = env_spaces(env, env_id)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        transitions, truncations = [], []
        for _ in range(steps):
            action = int(env.action_space.sample())
            next_obs, reward, terminated, truncated, _ = env.step(action)
            transitions.append((obs, action, float(reward), next_obs, bool(terminated)))
            truncations.append(bool(truncated))
            obs = env.reset()[0] if terminated or truncated else next_obs
    finally:
        env.close()
    return _Probe(env_id, obs_spec, n_actions, transitions, truncations)


def check_components(
    registry: Registry,
    env_id: str = "CartPole-v1",
    kinds: Sequence[str] | None = None,
    distributions: Sequence[str] | None = None,
) -> list[Problem]:
    """Build every component (default params) on ``env_id`` and probe it against its contract.

    The probe environment is made by the ``auto`` env component; observations
    keep its shape and dtype (factories get an :class:`dqnbench.ObsSpec`). Per kind:

    - network: ``factory(obs_dim, n_actions)`` is a ``torch.nn.Module`` with
      trainable parameters; forward on ``(B, *obs_dim.shape)`` observations in
      their own dtype gives finite float ``(B, n_actions)`` Q-values in train
      and eval mode; gradients flow; it survives ``copy.deepcopy``; its
      ``state_dict`` reloads into a fresh one through ``torch.load(...,
      weights_only=True)``; a factory taking ``outputs`` gives ``(B, n_actions,
      outputs)`` with ``outputs=3``;
    - replay: ``factory(capacity, obs_dim, gamma)`` takes 200 transitions of
      random play (rows of one, as a single run adds them), then ``len()`` ≥ 32, ``sample(32)`` is a well-formed
      :class:`dqnbench.Batch` (shapes, dtypes; discounts in [0, 1], finite
      non-negative weights), ``update_priorities`` accepts zero priorities; a
      factory with lock-step support (``factory.supports_members``, or a legacy
      ``factory.lockstep``) does the same with rows of 2 members and ``(2, 32)``
      batches;
    - exploration: ``factory(n_actions, total_steps)``; ``select`` on batches of
      2 and 1 at several steps gives int64 ``(B,)`` actions in range;
    - env: ``factory(env_id)`` makes the id with Discrete actions and Box
      observations; ``reset`` and ``step`` give observations of that shape and
      dtype; ``factory.vector(env_id, 2)``, if present, is a vector env of 2
      rows with same-step autoreset. A factory that raises
      :class:`dqnbench.DqnbenchError` declines the id (an ``atari`` component on
      CartPole): it is skipped, not a problem (likewise a network factory that
      declines the probe's observations, a conv net on CartPole's vectors);
    - learner: ``factory(n_actions)`` has an int ``outputs`` ≥ 1; ``q_values``
      maps ``(B, n_actions[, outputs])`` to finite ``(B, n_actions)``; ``loss``
      on the built-in ``mlp`` (online and target, ``outputs=learner.outputs``)
      and a batch of 32 real transitions gives finite per-sample losses ``(32,)``
      differentiable in the online parameters and priorities ``(32,)``;
      ``backward``, if present, overwrites stale ``.grad`` with the gradients
      autograd gives for the weighted mean loss; with ``factory.lockstep =
      True``, the same for 2 stacked members with ``(2, 32)`` batches;
    - optimizer: ``factory(parameters, lr)`` on a small module has ``step()``,
      which changes the parameters along the gradients set in ``.grad`` (no
      ``zero_grad``, as in the loop); with ``factory.lockstep = True``, a
      member of stacked parameters ``(2, …)`` is updated exactly as it would be
      on its own;
    - executor (only when ``kinds`` includes it): ``factory(workers=1)`` maps
      a function over three items, yielding each with its result, and closes.

    Plus, from the registry: plugins that failed to load, plugins implementing
    no hook, names provided twice. Every component is seeded first (as a run
    is) and every exception is caught and reported as a :class:`Problem`
    naming the component's kind, name, distribution and version.

    :param kinds: the component kinds to check (default: :data:`DEFAULT_KINDS`,
        every kind a grid names, i.e. all but executors).
    :param distributions: check only the components (and duplicates) of these
        distributions, e.g. your own plugin's in its tests; plugins that failed
        to load are reported regardless (yours may be one of them).
    """
    return run_checks(registry, env_id, kinds, distributions)[0]


def run_checks(
    registry: Registry,
    env_id: str = "CartPole-v1",
    kinds: Sequence[str] | None = None,
    distributions: Sequence[str] | None = None,
) -> tuple[list[Problem], list[Problem], int]:
    """:func:`check_components`, plus the components skipped (env components declining ``env_id``) and the count."""
    kinds = tuple(DEFAULT_KINDS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown component kinds {unknown} (allowed: {', '.join(KINDS)})")
    wanted = None if distributions is None else {_canonical(d) for d in distributions}

    def selected(distribution: str) -> bool:
        return wanted is None or any(_canonical(d) in wanted for d in distribution.split(" and "))

    components = [c for c in registry.all() if c.kind in kinds and selected(c.distribution)]
    probe = _probe(registry, env_id) if any(c.kind != "executor" for c in components) else None
    problems = [p for p in registry_problems(registry) if not p.distribution or selected(p.distribution)]
    skipped = []
    for component in components:
        seed_everything(PROBE_SEED)
        try:
            CHECKS[component.kind](component, probe)
            problem = None if probe is None else memberwise_problem(component, probe.obs, probe.n_actions)
            if problem is not None:
                raise _Violation(f"memberwise {declared(component.factory)!r}", problem)
        except _Declined as declined:
            skipped.append(
                Problem(component.kind, component.name, component.distribution, component.version, str(declined))
            )
        except _Violation as violation:
            problems.append(
                Problem(component.kind, component.name, component.distribution, component.version, str(violation))
            )
    return problems, skipped, len(components)


class _Declined(Exception):
    """A component that declines the probe (it raised :class:`DqnbenchError`): an env component that does not
    make this id (``atari`` on CartPole), a network that does not take these observations (a conv net on
    vectors). Skipped, not a problem."""


def _canonical(distribution: str) -> str:
    """PEP 503 normalisation: ``My_Plugin`` and ``my-plugin`` name the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _describe_obs(obs: ObsSpec, batch: tuple[int, ...]) -> str:
    return f"{obs.dtype.name} {(*batch, *obs.shape)}"


def _check_network(component: Component, probe: _Probe) -> None:
    obs, n_actions = probe.obs, probe.n_actions
    build = f"factory(obs_dim={obs!r}, n_actions={n_actions})"
    try:
        net = component.factory(obs, n_actions)
    except DqnbenchError as exc:  # the contract's way to say "not these observations" (a conv net on vectors)
        raise _Declined(f"{build} declined the observations: {exc}") from exc
    except Exception as exc:
        raise _Violation(build, exc) from exc
    if not isinstance(net, torch.nn.Module):
        raise _Violation(build, f"returned {type(net).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in net.parameters()):
        raise _Violation(build, "the network has no trainable parameters: the optimiser needs some")
    net.train()
    for batch in (PROBE_BATCH, 1):
        x = probe.observations(batch)
        stage = f"forward on {_describe_obs(obs, (batch,))} observations in train mode"
        q_values = _stage(stage, lambda x=x: net(x))
        _stage("Q-values", lambda q=q_values, b=batch: check_q_values(q, b, n_actions))
        if not bool(torch.isfinite(q_values).all()):
            raise _Violation("Q-values", "forward returned NaN or infinite Q-values")
    _stage("backward from the Q-values", lambda: q_values.sum().backward())
    if all(p.grad is None for p in net.parameters()):
        raise _Violation("backward from the Q-values", "no parameter received a gradient")
    net.eval()
    with torch.no_grad():
        x = probe.observations(PROBE_BATCH)
        stage = f"forward on {_describe_obs(obs, (PROBE_BATCH,))} observations in eval mode"
        q_values = _stage(stage, lambda: net(x))
        _stage("Q-values in eval mode", lambda: check_q_values(q_values, PROBE_BATCH, n_actions))
        _check_features_split(net, x, q_values)
    net.train()
    _stage("copy.deepcopy (the target network is a deep copy)", lambda: copy.deepcopy(net))

    def reload() -> None:
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        fresh = component.factory(obs, n_actions)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))

    _stage("saving and reloading the weights (state_dict, torch.load weights_only=True)", reload)
    if component.accepts("outputs"):  # the loop passes outputs = N > 1 for a distributional learner
        outputs = 3
        stage = f"factory(obs_dim, n_actions, outputs={outputs}) (the factory takes `outputs`)"
        wide = _stage(stage, lambda: component.factory(obs, n_actions, outputs=outputs))
        x = probe.observations(PROBE_BATCH)
        q_values = _stage(f"{stage}: forward", lambda: wide(x))
        _stage(f"{stage}: outputs", lambda: check_q_values(q_values, PROBE_BATCH, n_actions, outputs))


def _check_features_split(net: torch.nn.Module, x: torch.Tensor, q_values: torch.Tensor) -> None:
    """A network that declares any part of the features split (what ``iqn`` reads, :mod:`dqnbench.agent.heads`)
    has all of it, and ``from_features(features(x))`` is its ``forward(x)`` (eval mode, no gradients)."""
    if not any(hasattr(net, name) for name in ("feature_dim", "features", "from_features")):
        return
    stage = "the features split (feature_dim, features, from_features)"
    problem = features_problem(net)
    if problem is not None:
        raise _Violation(stage, problem)
    features = _stage(f"{stage}: features(obs)", lambda: net.features(x))
    if not isinstance(features, torch.Tensor) or tuple(features.shape) != (len(x), net.feature_dim):
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise _Violation(f"{stage}: features(obs)", f"gave {got}, expected ({len(x)}, feature_dim={net.feature_dim})")
    again = _stage(f"{stage}: from_features(features)", lambda: net.from_features(features))
    if not isinstance(again, torch.Tensor) or again.shape != q_values.shape or not torch.allclose(again, q_values):
        raise _Violation(stage, "from_features(features(obs)) differs from forward(obs)")


def _check_replay(component: Component, probe: _Probe) -> None:
    obs = probe.obs
    build = f"factory(capacity={PROBE_CAPACITY}, obs_dim={obs!r}, gamma={PROBE_GAMMA})"
    buffer = _stage(build, lambda: build_replay(component.factory, PROBE_CAPACITY, obs, PROBE_GAMMA))
    _check_buffer(buffer, build, probe, None)
    legacy = getattr(component.factory, "lockstep", None)
    if not takes_members(component.factory) and legacy is None:
        return
    if takes_members(component.factory):
        build = f"factory(capacity={PROBE_CAPACITY}, obs_dim={obs!r}, gamma={PROBE_GAMMA}, members=2)"
    else:
        build = f"factory.lockstep(members=2, capacity={PROBE_CAPACITY}, obs_dim={obs!r}, gamma={PROBE_GAMMA})"
        if not callable(legacy):
            raise _Violation(build, f"factory.lockstep is {legacy!r}, not a members-factory")
    members = _stage(build, lambda: build_replay(component.factory, PROBE_CAPACITY, obs, PROBE_GAMMA, members=2))
    _check_buffer(members, build, probe, 2)


def _check_buffer(buffer: Any, build: str, probe: _Probe, members: int | None) -> None:
    """``add`` the probe's transitions in rows (of ``members``, or of one for a single run), then sample and update.

    Member k replays the probe shifted by k · 50 steps: rows of different transitions.
    """
    built = buffer.replay if isinstance(buffer, LegacyReplay) else buffer  # what the factory returned
    missing = [m for m in ("add", "sample", "update_priorities", "__len__") if not callable(getattr(built, m, None))]
    if missing:
        raise _Violation(build, f"returned {type(built).__name__}, which has no {', '.join(missing)}")
    where = "" if members is None else f"lock-step ({members} members) "
    transitions = probe.transitions
    n = len(transitions)
    for i in range(n):
        rows = [(i + 50 * k) % n for k in range(members or 1)]
        fields = [np.stack([np.asarray(transitions[r][f]) for r in rows]) for f in range(5)]
        truncated = np.array([probe.truncated[r] for r in rows])
        _stage(f"{where}add() of row {i}", lambda fields=fields, tr=truncated: buffer.add(*fields, tr))
    size = _stage(f"{where}len()", lambda: len(buffer))
    if size < PROBE_BATCH:
        raise _Violation(f"{where}len()", f"is {size} after {len(transitions)} add() calls: sample() is never reached")
    sample = f"{where}sample({PROBE_BATCH})"
    batch = _stage(sample, lambda: buffer.sample(PROBE_BATCH))
    _stage(sample, lambda: check_batch(batch, members, PROBE_BATCH, probe.obs))
    if not bool(((batch.discounts >= 0) & (batch.discounts <= 1)).all()):
        raise _Violation(sample, "Batch.discounts must lie in [0, 1] (γ or γᵏ)")
    if not bool((torch.isfinite(batch.weights) & (batch.weights >= 0)).all()):
        raise _Violation(sample, "Batch.weights must be finite and non-negative")
    _stage(
        f"{where}update_priorities(indices, priorities=zeros{tuple(batch.indices.shape)})",
        lambda: buffer.update_priorities(batch.indices, torch.zeros(batch.indices.shape)),
    )


def _check_exploration(component: Component, probe: _Probe) -> None:
    n_actions = probe.n_actions
    build = f"factory(n_actions={n_actions}, total_steps={PROBE_TOTAL_STEPS})"
    explorer = _stage(build, lambda: component.factory(n_actions, PROBE_TOTAL_STEPS))
    if not callable(getattr(explorer, "select", None)):
        raise _Violation(build, f"returned {type(explorer).__name__}, which has no select(q_values, step) method")
    for batch in (2, 1):
        q_values = torch.randn(batch, n_actions)
        for step in (0, PROBE_TOTAL_STEPS // 2, PROBE_TOTAL_STEPS - 1):
            stage = f"select(Q-values ({batch}, {n_actions}), step={step})"
            actions = _stage(stage, lambda q=q_values, s=step: explorer.select(q, s))
            _stage(stage, lambda a=actions, b=batch: check_actions(a, b, n_actions))


def _check_env(component: Component, probe: _Probe) -> None:
    env_id = probe.env_id
    build = f"factory({env_id!r})"
    try:
        env = component.factory(env_id)
    except DqnbenchError as exc:  # the contract's way to say "not this id" or "install this first"
        raise _Declined(f"{build} declined the id: {exc}") from exc
    except Exception as exc:
        raise _Violation(build, exc) from exc
    try:
        obs, n_actions = _stage(build, lambda: env_spaces(env, env_id))
        first = _stage("reset(seed=0)", lambda: env.reset(seed=PROBE_SEED))
        _check_observation(first, "reset(seed=0)", obs, (), returns=2)
        action_space = env.action_space
        action_space.seed(PROBE_SEED)
        for i in range(PROBE_ENV_STEPS):
            action = int(action_space.sample())
            stage = f"step({action}) (step {i})"
            result = _stage(stage, lambda a=action: env.step(a))
            _check_observation(result, stage, obs, (), returns=5)
            _, reward, terminated, truncated, _ = result
            if not isinstance(terminated, bool | np.bool_) or not isinstance(truncated, bool | np.bool_):
                raise _Violation(stage, f"terminated and truncated must be bools, got {terminated!r}, {truncated!r}")
            _stage(stage, lambda r=reward: float(r))
            if terminated or truncated:
                _stage("reset()", lambda: env.reset())
    finally:
        _stage("close()", lambda: env.close())
    vector = getattr(component.factory, "vector", None)
    if vector is None:
        return
    members = 2
    build = f"factory.vector({env_id!r}, num_envs={members})"
    if not callable(vector):
        raise _Violation(build, f"factory.vector is {vector!r}, not a function")
    envs = _stage(build, lambda: vector(env_id, members))
    try:
        if getattr(envs, "num_envs", None) != members:
            raise _Violation(build, f"returned a vector env with num_envs={getattr(envs, 'num_envs', None)!r}")
        vector_obs, vector_actions = _stage(build, lambda: env_spaces(envs, env_id))
        if (vector_obs.shape, vector_obs.dtype, vector_actions) != (obs.shape, obs.dtype, n_actions):
            raise _Violation(
                build,
                f"single spaces {vector_obs!r} with {vector_actions} actions differ from the factory's env "
                f"({obs!r}, {n_actions} actions)",
            )
        mode = getattr(envs, "metadata", {}).get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise _Violation(build, f"autoreset mode is {mode!r}; the loop needs AutoresetMode.SAME_STEP")
        first = _stage("vector reset(seed=0)", lambda: envs.reset(seed=PROBE_SEED))
        _check_observation(first, "vector reset(seed=0)", obs, (members,), returns=2)
        actions = np.zeros(members, dtype=np.int64)
        for i in range(PROBE_ENV_STEPS):
            stage = f"vector step(actions (2,)) (step {i})"
            result = _stage(stage, lambda: envs.step(actions))
            _check_observation(result, stage, obs, (members,), returns=5)
            for name, value in zip(("rewards", "terminated", "truncated"), result[1:4]):
                if np.shape(value) != (members,):
                    raise _Violation(stage, f"{name} have shape {np.shape(value)}, expected ({members},)")
    finally:
        _stage("vector close()", lambda: envs.close())


def _check_observation(result: Any, stage: str, obs: ObsSpec, lead: tuple[int, ...], returns: int) -> None:
    """``result`` is a ``returns``-tuple whose first item passes :func:`check_observations`, as in runs."""
    if not isinstance(result, tuple) or len(result) != returns:
        raise _Violation(stage, f"returned {type(result).__name__}, expected a tuple of {returns}")
    _stage(stage, lambda: check_observations(result[0], obs, lead, stage))


def _check_learner(component: Component, probe: _Probe) -> None:
    n_actions = probe.n_actions
    build = f"factory(n_actions={n_actions})"
    learner = _stage(build, lambda: component.factory(n_actions))
    _stage(build, lambda: check_learner(learner))
    outputs = learner.outputs
    raw_shape = (PROBE_BATCH, n_actions) if outputs == 1 else (PROBE_BATCH, n_actions, outputs)
    raw = torch.randn(raw_shape)
    stage = f"q_values(outputs {raw_shape})"
    q_values = _stage(stage, lambda: learner.q_values(raw))
    if not isinstance(q_values, torch.Tensor) or tuple(q_values.shape) != (PROBE_BATCH, n_actions):
        got = tuple(q_values.shape) if isinstance(q_values, torch.Tensor) else type(q_values).__name__
        raise _Violation(stage, f"returned {got}, expected Q-values ({PROBE_BATCH}, {n_actions})")
    if not q_values.is_floating_point() or not bool(torch.isfinite(q_values).all()):
        raise _Violation(stage, "Q-values must be finite floats")
    stacked = getattr(component.factory, "lockstep", None) is True
    for members in (None, 2) if stacked else (None,):
        nets = _probe_networks(probe, outputs, members, learner)
        batch = probe.batch(PROBE_BATCH, members)
        _check_learn(learner, nets, batch, outputs)


def _probe_networks(probe: _Probe, outputs: int, members: int | None, learner: Any = None) -> QNetworks:
    """Online and target built-in networks for the learner check: one run or stacked members.

    ``mlp`` (hidden ``[16]``) where it takes the observations; on images it refuses
    (Atari frames are too many inputs), so the conv net a user would choose there:
    ``nature_cnn`` on frames of 36 pixels or more, else ``minatar_cnn``; wrapped in
    the learner's head where it brings one (``iqn``).
    """
    extra = {"outputs": outputs} if outputs != 1 else {}
    modules = [learner_network(learner, _probe_network(probe, extra)) for _ in range(members or 1)]
    return QNetworks.of(modules, probe.obs, torch.device("cpu"), stacked=members is not None)


def _probe_network(probe: _Probe, extra: dict[str, int]) -> torch.nn.Module:
    try:
        return mlp(probe.obs, probe.n_actions, hidden=[16], **extra)
    except UnsupportedObservations:
        if len(probe.obs.shape) != 3:
            raise
    conv = nature_cnn if min(probe.obs.shape[1:]) >= smallest_image(NATURE_CONVS) else minatar_cnn
    return conv(probe.obs, probe.n_actions, hidden=[16], **extra)


def _check_learn(learner: Any, nets: QNetworks, batch: Batch, outputs: int) -> None:
    """``loss`` gives per-sample, differentiable losses and priorities; ``backward`` fills autograd's gradients."""
    lead = tuple(batch.weights.shape)
    where = "" if len(lead) == 1 else f" on {lead[0]} stacked members, batch fields {lead}"
    net = getattr(nets.online, "name", None) or type(nets.online).__name__
    stage = f"loss(nets, batch){where} (built-in {net}, outputs={outputs})"
    losses, priorities = _learner_loss(_stage(stage, lambda: learner.loss(nets, batch)), stage, lead, lead)
    if not losses.requires_grad:
        raise _Violation(stage, "the losses are not differentiable: compute them from nets.online(...) with gradients")
    _stage(f"{stage}: backward", lambda: (batch.weights * losses).mean(dim=-1).sum().backward())
    grads = [p.grad for p in nets.params]
    if all(g is None for g in grads):
        raise _Violation(stage, "no online parameter received a gradient")
    if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
        raise _Violation(stage, "the gradients are NaN or infinite")
    if any(p.grad is not None for p in nets.target.parameters()):
        raise _Violation(stage, "the target network received gradients: read it without them")
    backward = getattr(learner, "backward", None)
    if backward is None:
        return
    stage = f"backward(nets, batch){where}"
    for p in nets.params:
        p.grad = None
    _stage(f"{stage}: autograd of loss", lambda: _same_rng(lambda: autograd_backward(learner, nets, batch)))
    expected = [None if p.grad is None else p.grad.clone() for p in nets.params]
    for p in nets.params:
        p.grad = None
    for p in nets.params:  # stale gradients of the last step: the loop does not zero them, backward overwrites
        p.grad = torch.full_like(p, STALE_GRAD)
    result = _stage(stage, lambda: _same_rng(lambda: backward(nets, batch)))
    _learner_loss(result, stage, lead[:-1], lead)
    for (name, p), want in zip(nets.online.named_parameters(), expected):
        if want is not None and not torch.allclose(p.grad, want, rtol=1e-4, atol=1e-6):
            error = float((p.grad - want).abs().max())
            raise _Violation(
                stage,
                f"the gradient of {name} differs from autograd of the weighted mean loss by up to {error:.3g} "
                "(backward must overwrite .grad: the loop does not zero gradients)",
            )


def _same_rng(call: Callable[[], Any]) -> Any:
    """``call()`` with torch's RNG in a fixed state, so a loss that draws noise draws the same twice."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_SEED)
        return call()


def _learner_loss(
    result: Any, stage: str, losses_shape: tuple[int, ...], priorities_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``result`` is a ``LearnerLoss``-like pair of finite float tensors of the given shapes."""
    if not (isinstance(result, tuple) and len(result) == 2):
        raise _Violation(stage, f"returned {type(result).__name__}, not a dqnbench.LearnerLoss(losses, priorities)")
    for name, value, shape in zip(("losses", "priorities"), result, (losses_shape, priorities_shape)):
        if not isinstance(value, torch.Tensor):
            raise _Violation(stage, f"{name} is {type(value).__name__}, not a Tensor")
        if tuple(value.shape) != shape:
            raise _Violation(stage, f"{name} have shape {tuple(value.shape)}, expected {shape}")
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise _Violation(stage, f"{name} must be finite floats")
    return result[0], result[1]


def _check_optimizer(component: Component, probe: _Probe | None) -> None:
    torch.manual_seed(PROBE_SEED)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    params = list(module.parameters())
    build = f"factory(parameters, lr={PROBE_LR}) (a 4-8-2 MLP's parameters)"
    optimizer = _stage(build, lambda: component.factory(params, PROBE_LR))
    if not callable(getattr(optimizer, "step", None)):
        raise _Violation(build, f"returned {type(optimizer).__name__}, which has no step()")
    x = torch.randn(16, 4)
    for i in range(2):
        # as the loop does: the learner sets .grad (in place where the optimizer holds the tensors), no zero_grad
        set_grads(params, torch.autograd.grad(module(x).pow(2).mean(), params))
        before = [p.detach().clone() for p in params]
        _stage(f"step() {i + 1}", optimizer.step)
        if any(not bool(torch.isfinite(p).all()) for p in params):
            raise _Violation(f"step() {i + 1}", "made parameters NaN or infinite")
        if all(torch.equal(p, b) for p, b in zip(params, before)):
            raise _Violation(f"step() {i + 1}", "left every parameter unchanged, with gradients set")
    if getattr(component.factory, "lockstep", None) is True:
        _check_optimizer_members(component)


def _check_optimizer_members(component: Component) -> None:
    """``lockstep = True``: member 0 of parameters stacked ``(2, …)`` moves exactly as the same parameters alone."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    shapes = [(2, 8, 4), (2, 8)]
    values = [torch.randn(s, generator=generator) for s in shapes]
    grads = [[torch.randn(s, generator=generator) for s in shapes] for _ in range(2)]
    stacked = [torch.nn.Parameter(v.clone()) for v in values]
    alone = [torch.nn.Parameter(v[0].clone()) for v in values]
    stage = "factory.lockstep = True: stacked parameters (2, …)"
    optimizers = [_stage(stage, lambda ps=ps: component.factory(ps, PROBE_LR)) for ps in (stacked, alone)]
    for step_grads in grads:
        for optimizer, ps, gs in zip(optimizers, (stacked, alone), (step_grads, [g[0] for g in step_grads])):
            set_grads(ps, gs)
            _stage(stage, optimizer.step)
    for s, a in zip(stacked, alone):
        if not torch.allclose(s[0], a, rtol=1e-5, atol=1e-6):
            raise _Violation(
                stage,
                "member 0 was updated differently than the same parameters on their own: the update is not "
                "elementwise, so members are not independent (drop factory.lockstep)",
            )


def _check_executor(component: Component, probe: _Probe | None) -> None:
    executor = _stage("factory(workers=1)", lambda: component.factory(workers=1))
    items = [-1, 2, -3]
    try:
        outcomes = _stage("map_unordered(abs, [-1, 2, -3])", lambda: list(executor.map_unordered(abs, items)))
    finally:
        _stage("close()", lambda: executor.close())
    got = {}
    for outcome in outcomes:
        if not (isinstance(outcome, tuple) and len(outcome) == 2):
            raise _Violation("map_unordered", f"yielded {outcome!r}, not an (item, result) pair")
        got[outcome[0]] = outcome[1]
    if sorted(got) != sorted(items) or len(outcomes) != len(items):
        raise _Violation("map_unordered", f"yielded items {[o[0] for o in outcomes]}, expected each of {items} once")
    wrong = {item: result for item, result in got.items() if result != abs(item)}
    if wrong:
        raise _Violation("map_unordered", f"yielded wrong results {wrong} (an exception means the call failed)")


#: the probe of each component kind
CHECKS: dict[str, Callable[[Component, _Probe | None], None]] = {
    "network": _check_network,
    "replay": _check_replay,
    "exploration": _check_exploration,
    "executor": _check_executor,
    "env": _check_env,
    "learner": _check_learner,
    "optimizer": _check_optimizer,
}
