"""Checks before a run: a grid's cells validated together with their components, before anything trains.

:func:`prepare` loads the registry and the plan, then builds each cell's env,
learner, network, replay, exploration and optimizer once (small, drawing from no
RNG), so a user error (a bad param, an env the network cannot take, a replay too
big for memory) stops the grid as one :class:`~dqnbench.errors.GridError` naming
the key, and a cell that can never learn (:func:`never_learns`) gets a warning.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import gymnasium as gym
import numpy as np
import torch

from dqnbench.agent.envs import env_spaces, register_namespace
from dqnbench.agent.heads import check_learner_head
from dqnbench.agent.nets import probe_observations
from dqnbench.config.grid import Plan, load_grid
from dqnbench.config.schedule import LearningSchedule
from dqnbench.config.schema import RunConfig
from dqnbench.errors import DqnbenchError, GridError
from dqnbench.plugin.checks import ContractError, probe_reset
from dqnbench.plugin.legacy_replay import build_replay
from dqnbench.plugin.registry import RUN_KINDS, Component, Registry, load_registry
from dqnbench.plugin.validation import ParamError
from dqnbench.run.task import bind_network, choose


def prepare(
    grid: str | os.PathLike,
    plugins: Sequence[Any] = (),
    load_entrypoints: bool = True,
    *,
    strict: bool = False,
    stream: TextIO | None = None,
) -> tuple[Plan, Registry]:
    """Load the registry and a validated plan, building each cell's components once before anything runs.

    A cell that can never learn (see :func:`never_learns`) gets a one-line
    warning on ``stream`` (default stderr); ``strict`` makes it a grid error.
    """
    registry = load_registry(load_entrypoints, tuple(plugins))
    plan = load_grid(grid, registry)
    for _, label, config in plan.cells:
        check_cell(config, registry, plan.path)
        problems = never_learns(config, replay_lag(config, registry))
        if problems and strict:
            key, problem = problems[0]
            raise GridError(plan.path, key, f"cell {label!r}: {problem} (an error under --strict)")
        if problems:
            text = "; ".join(problem for _, problem in problems)
            print(f"dqnbench: warning: cell {label!r}: {text}", file=stream or sys.stderr)
    for device in sorted({config.experiment.device for _, _, config in plan.cells}):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GridError(plan.path, "experiment.device", f'"{device}" asked for, but CUDA is not available here')
    return plan, registry


def check_cell(config: RunConfig, registry: Registry, path: Path) -> None:
    """User errors a cell's components make together, found before anything runs."""
    chosen = choose(config, registry)
    for kind in RUN_KINDS:
        check_required_params(kind, chosen[kind], getattr(config, kind).params, path)
    obs, n_actions = cell_spaces(config, chosen, path)
    build_learner = lambda p: chosen["learner"].factory(n_actions, **p).outputs  # noqa: E731
    try:
        learner = chosen["learner"].factory(n_actions, **config.learner.params)
        outputs = learner.outputs
    except Exception as exc:
        key = param_key("learner", exc, config.learner.params, chosen["learner"], build_learner) or "learner"
        raise GridError(
            path, key, f"{chosen['learner'].describe()} could not be built: {type(exc).__name__}: {exc}"
        ) from None
    if outputs != 1 and not chosen["network"].accepts("outputs"):
        raise GridError(
            path,
            "network.name",
            f"{chosen['learner'].describe()} needs {outputs} outputs per action, but {chosen['network'].describe()} "
            "cannot give several (its factory takes no `outputs` param)",
        )
    network = check_network_builds(config, chosen, obs, n_actions, outputs, path)
    network = check_learner_head(learner, network, chosen, path)  # iqn's head needs the network's features
    built = check_components_build(config, chosen, obs, n_actions, network, path)
    check_images_are_read(config, chosen, obs, {"network": network, "replay": built["replay"]}, path)
    check_replay_memory(config, chosen["replay"], obs, path)


def check_required_params(kind: str, component: Component, params: Mapping[str, Any], path: Path) -> None:
    """A factory param without a default that the grid does not set is a grid error naming it, before any run."""
    missing = component.missing_params(params)
    if missing:
        keys = ", ".join(f"{kind}.{name}" for name in missing)
        raise GridError(
            path,
            f"{kind}.{missing[0]}",
            f"{component.describe()} needs {keys} (no default in its factory): set it in [{kind}] or "
            f"[{kind}.{component.name}]",
        )


@functools.cache
def check_env(env_id: str, component: Component, params: tuple[tuple[str, Any], ...], path: Path) -> tuple[Any, int]:
    """Make the env once with its component: unknown ids and non-discrete actions are grid errors; its spaces."""
    try:
        register_namespace(env_id)  # as make_envs does in the workers: plugin envs get MinAtar/ALE ids too
        env = component.factory(env_id, **dict(params))
    except (DqnbenchError, ParamError) as exc:
        build = lambda p: component.factory(env_id, **p).close()  # noqa: E731
        key = param_key("env", exc, dict(params), component, build) or "experiment.env"
        raise GridError(path, key, str(exc)) from None
    except gym.error.Error as exc:
        import difflib

        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise GridError(
            path,
            "experiment.env",
            f"unknown or unavailable gymnasium environment {env_id!r} ({type(exc).__name__}: {exc}){hint}",
        ) from None
    except Exception as exc:
        raise GridError(
            path, "experiment.env", f"{component.describe()} cannot create {env_id!r}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        spaces = env_spaces(env, env_id)
        probe_reset(env, spaces[0], env_id)
        return spaces
    except (DqnbenchError, ContractError) as exc:
        raise GridError(path, "experiment.env", str(exc)) from None
    finally:
        env.close()


def cell_spaces(config: RunConfig, chosen: dict[str, Component], path: Path) -> tuple[Any, int]:
    """A cell's observation spec and action count, from its env made once (see :func:`check_env`)."""
    return check_env(config.experiment.env, chosen["env"], _frozen(config.env.params), path)


def _frozen(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Params as a hashable key (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


def check_network_builds(
    config: RunConfig, chosen: dict[str, Component], obs: Any, n_actions: int, outputs: int, path: Path
) -> Any:
    """A network factory's user error (observations it does not take, a bad param) as a grid error; the network.

    Built once per cell, drawing nothing from the torch RNG. The factory
    contract's user errors (DqnbenchError, ValueError) stop the plan, and so
    does a param of the wrong type (see :func:`_blame_param`); anything else is
    a plugin bug that its runs report (and name): None.
    """
    extra = {"outputs": outputs} if outputs != 1 else {}
    build = lambda p: chosen["network"].factory(obs, n_actions, **p, **extra)  # noqa: E731
    try:
        with torch.random.fork_rng(devices=[]):
            return bind_network(config, chosen, outputs)(obs, n_actions)
    except (DqnbenchError, ValueError) as exc:
        key = param_key("network", exc, config.network.params, chosen["network"], build) or "network.name"
        raise GridError(
            path, key, f"{chosen['network'].describe()} cannot be built for {config.experiment.env}: {exc}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a wrong param type, or a plugin bug: its runs fail and name it
        _blame_param("network", config.network.params, chosen["network"], build, exc, path)
        return None


#: the replay capacity the pre-flight build uses: enough for a factory's own checks, no real memory
CHECK_CAPACITY = 1024


def check_components_build(
    config: RunConfig, chosen: dict[str, Component], obs: Any, n_actions: int, network: Any, path: Path
) -> dict[str, Any]:
    """Build the cell's replay (small), exploration and optimizer once, so a bad param stops the plan; what was built.

    The factory contract's user errors (DqnbenchError, ValueError) are grid errors
    on the key :func:`param_key` finds (else ``<kind>.name``); any other exception
    is one only where a grid param is its cause (see :func:`_blame_param`); else it
    is a plugin bug that the cell's runs report, and that kind maps to None.
    """
    params = [torch.nn.Parameter(torch.zeros(1))] if network is None else list(network.parameters())
    builds = {
        "replay": lambda p: build_replay(
            chosen["replay"].factory, min(config.replay.capacity, CHECK_CAPACITY), obs, config.agent.gamma, **p
        ),
        "exploration": lambda p: chosen["exploration"].factory(n_actions, config.experiment.total_steps, **p),
        "optimizer": lambda p: chosen["optimizer"].factory(params, config.agent.lr, **p),
    }
    built: dict[str, Any] = dict.fromkeys(builds)
    for kind, build in builds.items():
        grid_params = getattr(config, kind).params
        try:
            with torch.random.fork_rng(devices=[]):
                built[kind] = build(grid_params)
        except (DqnbenchError, ValueError) as exc:
            key = param_key(kind, exc, grid_params, chosen[kind], build) or f"{kind}.name"
            raise GridError(path, key, f"{chosen[kind].describe()} could not be built: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a wrong param type, or a plugin bug (its runs name it)
            _blame_param(kind, grid_params, chosen[kind], build, exc, path)
    return built


def param_key(kind: str, exc: BaseException, params: Mapping[str, Any], component: Component, build: Any) -> str | None:
    """The grid key a factory's error is about: the key of the :class:`ParamError` it raised, else the param
    whose factory default makes ``build`` succeed (:func:`_culprit`); None when neither names one."""
    if isinstance(exc, ParamError):
        return f"{kind}.{exc.key}"
    culprit = _culprit(params, component, build)
    return None if culprit is None else f"{kind}.{culprit}"


def _blame_param(
    kind: str, params: Mapping[str, Any], component: Component, build: Any, exc: BaseException, path: Path
) -> None:
    """A factory raised something other than a user error: a grid error if a grid param is the cause (:func:`_culprit`).

    ``hidden = 64`` where a list belongs makes ``mlp`` raise ``TypeError: 'int'
    object is not iterable``: a grid error naming component, key and value.
    Otherwise the factory itself is broken, and its runs fail naming it.
    """
    key = _culprit(params, component, build)
    if key is not None:
        raise GridError(
            path,
            f"{kind}.{key}",
            f"{component.describe()} cannot be built with {key} = {json.dumps(params[key])}: "
            f"{type(exc).__name__}: {exc}",
        ) from None


def _culprit(params: Mapping[str, Any], component: Component, build: Any) -> str | None:
    """The first grid param whose factory default, put back alone, makes ``build`` succeed; None if none does."""
    try:
        signature = inspect.signature(component.factory).parameters
    except (TypeError, ValueError):
        return None
    for key, value in params.items():
        default = signature[key].default if key in signature else inspect.Parameter.empty
        if default is inspect.Parameter.empty or _plain(default) == _plain(value):
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                build({**params, key: default})
        except Exception:  # noqa: BLE001 - not this param
            continue
        return key
    return None


def _plain(value: Any) -> Any:
    """Tuples as lists, as grid params hold them."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_images_are_read(
    config: RunConfig, chosen: dict[str, Component], obs: Any, built: dict[str, Any], path: Path
) -> None:
    """Observations other than float vectors (MinAtar's bools, Atari's uint8 frames) must fit the network and replay.

    DESIGN.md promises v1 plugins (``obs_dim`` a flat size, float32 ``(B, obs_dim)``
    inputs) only on vector observations. On images such a network fails at its
    first forward and such a replay at its first ``add``, in every run of the
    cell: that pairing is found here, on the pre-flight's own network and replay
    (``built``; None where a plugin bug left none), and refused before anything
    runs. On float vectors a failure stays a plugin bug that the cell's runs report.
    """
    if len(obs.shape) == 1 and obs.dtype == np.float32:
        return
    probe = probe_observations(obs, (2,))
    # a transition as an env gives it: with a frame stack, next_obs is obs slid by one new frame
    after = torch.cat([probe[0][1:], probe[1][-1:]]) if obs.frames > 1 else probe[1]
    uses = {
        "network": lambda network: network(probe),
        "replay": lambda replay: replay.add(  # a row of one transition, as a single run adds it
            probe[:1].numpy(),
            np.zeros(1, np.int64),
            np.zeros(1, np.float32),
            after[None].numpy(),
            *np.zeros((2, 1), bool),
        ),
    }
    for kind, use in uses.items():
        if built[kind] is None:
            continue
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                use(built[kind])
        except Exception as exc:  # noqa: BLE001 - whatever the component objects to
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = "a conv network (minatar_cnn, nature_cnn)" if kind == "network" else "a built-in replay"
            raise GridError(
                path,
                f"{kind}.name",
                f"{chosen[kind].describe()} cannot take {config.experiment.env}'s observations "
                f"{tuple(obs.shape)} {obs.dtype.name} ({type(exc).__name__}: {first}); components written "
                f"for float vectors (DESIGN.md's v1 table) need them converted, or choose {hint}",
            ) from None


def check_replay_memory(config: RunConfig, replay_component: Component, obs: Any, path: Path) -> None:
    """A replay (of all a lock-step cell's members) whose factory's ``memory_bytes`` exceeds available memory.

    Checked again when a built-in replay is built, in whichever process trains it.
    """
    from dqnbench.builtin.replay_memory import check_replay_fits

    seeds = len(config.experiment.seeds)
    members = seeds if config.experiment.lockstep and seeds > 1 else None
    replay = config.replay
    memory_bytes = getattr(replay_component.factory, "memory_bytes", None)
    if memory_bytes is None:
        return
    needed = memory_bytes(replay.capacity, obs, members, **replay.params)
    try:
        check_replay_fits(needed, replay.capacity, obs, members)
    except DqnbenchError as exc:
        raise GridError(path, "replay.capacity", str(exc)) from None


def replay_lag(config: RunConfig, registry: Registry) -> int:
    """The stored transitions a cell's replay cannot sample yet (its factory's optional ``learning_lag``)."""
    lag = getattr(registry.get("replay", config.replay.name).factory, "learning_lag", None)
    return int(lag(**config.replay.params)) if callable(lag) else 0


def never_learns(config: RunConfig, lag: int = 0) -> list[tuple[str, str]]:
    """``(key, problem)`` for each reason a cell's runs can never learn (or never evaluate, or never update the target).

    Learn steps are counted on the loop's own schedule (:class:`~dqnbench.config.schedule.LearningSchedule`),
    ``lag`` being the replay's (:func:`replay_lag`); the target net is copied every ``target_update`` learn steps.
    """
    exp, agent = config.experiment, config.agent
    problems = []
    if agent.learning_starts >= exp.total_steps:
        problems.append((
            "agent.learning_starts",
            f"agent.learning_starts = {agent.learning_starts} >= experiment.total_steps = {exp.total_steps} "
            "(it never learns)",
        ))  # fmt: skip
    if agent.batch_size > config.replay.capacity:
        problems.append((
            "agent.batch_size",
            f"agent.batch_size = {agent.batch_size} > replay.capacity = {config.replay.capacity} (it never learns)",
        ))  # fmt: skip
    if exp.eval_every > exp.total_steps:
        problems.append((
            "experiment.eval_every",
            f"experiment.eval_every = {exp.eval_every} > experiment.total_steps = {exp.total_steps} "
            "(it is evaluated only at the end)",
        ))  # fmt: skip
    if not problems:
        learn_steps = LearningSchedule.of(agent, lag).learn_steps(exp.total_steps)
        if agent.target_update > learn_steps:
            problems.append((
                "agent.target_update",
                f"agent.target_update = {agent.target_update} > the {learn_steps} learn steps of a run "
                "(the target net is never updated)",
            ))  # fmt: skip
    return problems
