"""The environments a run steps: one env or K copies behind one vector-env interface.

The loop always steps arrays with one row per run: a single run's env is
wrapped by :class:`OneEnv` (rows of 1, a few µs per step), K lock-step members
step a vector env from the env component. Both autoreset in the same step
(gymnasium 1.x's ``AutoresetMode.SAME_STEP``): when an episode ends, the
transition's ``next_obs`` is the terminal observation (in
``info["final_obs"]``) and the run acts on a fresh reset observation at the very
next step, so every member takes exactly the env steps an independent run
would, with no dummy transitions.

Why it is built this way, with measurements: ``docs/internals.md`` (``agent.envs``).
"""

from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Callable, Sequence
from types import FunctionType, MethodType
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.spaces import MultiDiscrete
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.checks import check_obs_space
from dqnbench.plugin.obs import ObsSpec


class SameStepSyncVectorEnv(SyncVectorEnv):
    """gymnasium's ``SyncVectorEnv`` in same-step autoreset, with a step written for what lock-step runs step.

    The same calls in the same order as ``SyncVectorEnv.step`` (each env's step, a reset when its episode
    ends, the infos merged as it merges them, the observations concatenated into its buffer, the same copies
    returned), so the same results; what it leaves out is generic machinery that costs a few envs a large
    share of their step: ``iterate`` over the action space, the mode dispatch per env, and merging an empty
    info. At K = 3 that is 7 µs of Acrobot's 180 and 17 µs of MountainCar's 85 (``tests/test_vector_envs.py``
    holds it equal to the parent). Actions other than a Discrete space's batch take the parent's step.
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], **kwargs: Any) -> None:
        super().__init__(env_fns, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
        self._lean = isinstance(self.action_space, MultiDiscrete) and self.action_space.nvec.ndim == 1

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._lean:
            return super().step(actions)
        infos: dict[str, Any] = {}
        observations, rewards, terminations, truncations = (
            self._env_obs, self._rewards, self._terminations, self._truncations
        )  # fmt: skip
        for i, env in enumerate(self.envs):
            obs, rewards[i], terminations[i], truncations[i], env_info = env.step(actions[i])
            if terminations[i] or truncations[i]:
                infos = self._add_info(infos, {"final_obs": obs, "final_info": env_info}, i)
                obs, env_info = env.reset()
            observations[i] = obs
            if env_info:
                infos = self._add_info(infos, env_info, i)
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        self._autoreset_envs = np.logical_or(terminations, truncations)
        return (
            copy.deepcopy(self._observations) if self.copy else self._observations,
            np.copy(rewards),
            np.copy(terminations),
            np.copy(truncations),
            infos,
        )


class OneEnv:
    """A single env behind the vector-env calls the loop makes (rows of one), with same-step autoreset."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.spec = env.spec
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self._no_info: dict[str, Any] = {}
        self._done = np.ones(1, dtype=bool)
        # Rows handed out each step, rewritten in place: the loop reads them before the next step.
        self._reward, self._terminated, self._truncated = np.zeros(1), np.zeros(1, bool), np.zeros(1, bool)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        if seed is not None:
            self.env.action_space.seed(seed)
        return obs[None], info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, _ = self.env.step(int(actions[0]))
        info = self._no_info
        if terminated or truncated:
            info = {"final_obs": obs[None], "_final_obs": self._done}
            obs, _ = self.env.reset()
        self._reward[0], self._terminated[0], self._truncated[0] = reward, terminated, truncated
        return obs[None], self._reward, self._terminated, self._truncated, info

    def close(self) -> None:
        self.env.close()

    def state_dict(self) -> dict[str, Any] | None:
        """The env's state for a checkpoint, or None when it cannot be restored exactly (see :func:`env_state`)."""
        state = gym_env_state(self.env)
        return None if state is None else {"env": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_gym_env_state(self.env, state["env"])


#: modules whose envs keep their whole state in plain attributes (restored exactly by :func:`gym_env_state`)
PLAIN_STATE_MODULES = ("gymnasium.envs.classic_control.", "gymnasium.envs.toy_text.")
#: attributes never saved: the wrapped env, constructor arguments (static, and may hold functions)
SKIPPED_ATTRIBUTES = ("env", "_saved_kwargs")


def env_state(envs: Any) -> Any | None:
    """The state of the loop's envs (:class:`OneEnv` or a vector env) if it can be restored exactly, else None."""
    state_dict = getattr(envs, "state_dict", None)
    if callable(state_dict):
        return state_dict()
    if isinstance(envs, SyncVectorEnv):
        states = [gym_env_state(env) for env in envs.envs]
        if any(state is None for state in states):
            return None
        return {"envs": states, "autoreset": envs._autoreset_envs}
    return None


def load_env_state(envs: Any, state: Any) -> None:
    """Restore what :func:`env_state` saved into envs built the same way."""
    load_state_dict = getattr(envs, "load_state_dict", None)
    if callable(load_state_dict):
        load_state_dict(state)
        return
    for env, env_state_ in zip(envs.envs, state["envs"], strict=True):
        load_gym_env_state(env, env_state_)
    np.copyto(envs._autoreset_envs, state["autoreset"])


def gym_env_state(env: gym.Env) -> dict[str, Any] | None:
    """A gymnasium env's state: its own ``state_dict()``, or each wrapper's and the core env's plain attributes.

    None when some layer holds state that plain attributes cannot capture
    (a deque, an emulator) or the core env is not known to keep its whole
    state in attributes.
    """
    if callable(getattr(env, "state_dict", None)):
        return {"own": env.state_dict()}
    wrappers = []
    layer = env
    while isinstance(layer, gym.Wrapper):
        attributes = plain_attributes(layer)
        if attributes is None:
            return None
        wrappers.append(attributes)
        layer = layer.env
    if callable(getattr(layer, "state_dict", None)):
        return {"wrappers": wrappers, "own": layer.state_dict()}
    if not type(layer).__module__.startswith(PLAIN_STATE_MODULES):
        return None
    core = plain_attributes(layer)
    return None if core is None else {"wrappers": wrappers, "core": core}


def load_gym_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Restore what :func:`gym_env_state` saved."""
    if "wrappers" not in state:
        env.load_state_dict(state["own"])
        return
    layer = env
    for attributes in state["wrappers"]:
        restore_attributes(layer, attributes)
        layer = layer.env
    if "own" in state:
        layer.load_state_dict(state["own"])
    else:
        restore_attributes(layer, state["core"])


def plain_attributes(obj: Any) -> dict[str, Any] | None:
    """``obj``'s attributes that are state, or None if one is neither plain data nor known to be static.

    Spaces, specs and functions (a ``TransformObservation``'s) are static and
    skipped; every other attribute must be plain data (numbers, strings,
    arrays, NumPy RNGs, and lists, tuples and dicts of them).
    """
    attributes = {}
    for name, value in vars(obj).items():
        if name in SKIPPED_ATTRIBUTES or isinstance(value, gym.Space | gym.envs.registration.EnvSpec):
            continue
        if isinstance(value, FunctionType | MethodType):
            continue
        if not _plain(value):
            return None
        attributes[name] = value
    return attributes


def restore_attributes(obj: Any, attributes: dict[str, Any]) -> None:
    """Set saved attributes; NumPy RNGs are set in place, so RNGs shared between objects stay shared."""
    for name, value in attributes.items():
        current = getattr(obj, name, None)
        if isinstance(current, np.random.Generator) and isinstance(value, np.random.Generator):
            current.bit_generator.state = value.bit_generator.state
        elif isinstance(current, np.random.RandomState) and isinstance(value, np.random.RandomState):
            current.set_state(value.get_state(legacy=False))
        else:
            setattr(obj, name, value)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str | np.generic):
        return True
    if isinstance(value, np.ndarray):
        return not value.dtype.hasobject
    if isinstance(value, np.random.Generator | np.random.RandomState):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


#: namespace → (module that registers it, how it registers, dqnbench extra that installs it)
NAMESPACE_PACKAGES: dict[str, tuple[str, str, str]] = {
    "ALE": ("ale_py", "gym.register_envs", "atari"),
    "MinAtar": ("minatar.gym", "register_envs", "minatar"),
}


def register_namespace(env_id: str) -> None:
    """Import the package that registers ``env_id``'s namespace, if gymnasium does not know it yet.

    Called before any env component (built-in or plugin) makes an env, in the
    pre-flight and in every worker, so a plugin's plain ``gym.make("MinAtar/…")``
    works as the built-ins do (DESIGN.md: installed packages' ids need no
    registration code).
    """
    namespace = env_id.split("/", 1)[0] if "/" in env_id else None
    if namespace not in NAMESPACE_PACKAGES or any(key.startswith(f"{namespace}/") for key in gym.registry):
        return
    module_name, how, extra = NAMESPACE_PACKAGES[namespace]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise DqnbenchError(
            f'environment {env_id!r} needs the {module_name.split(".")[0]} package: pip install "dqnbench[{extra}]"'
        ) from None
    if how == "gym.register_envs":
        gym.register_envs(module)
    else:
        getattr(module, how)()


def unknown_id_message(env_id: str) -> str:
    """The message for an unregistered id: the closest ids, or its namespace's ids when they are few."""
    namespace = env_id.split("/", 1)[0] + "/" if "/" in env_id else None
    ids = sorted(key for key in gym.registry if namespace is None or key.startswith(namespace))
    # Game names compared without the shared "MinAtar/" and "-v1", which make every id of a namespace look close.
    version = env_id.rsplit("-v", 1)[1] if "-v" in env_id else ""
    games: dict[str, str] = {}
    for key in ids:
        game, _, key_version = key[len(namespace or "") :].rpartition("-v")
        if game not in games or key_version == version:
            games[game] = key
    wanted = env_id[len(namespace or "") :].rpartition("-v")[0] or env_id
    close = [games[game] for game in difflib.get_close_matches(wanted, games, n=3)]
    if close:
        hint = f"; did you mean {', '.join(close)}?"
    elif namespace and 0 < len(ids) <= 12:
        hint = f"; {namespace[:-1]} has {', '.join(ids)}"
    else:
        hint = ""
    return f"unknown environment {env_id!r}{hint}"


def make_envs(factory: Callable[..., gym.Env], env_id: str, members: int | None) -> Any:
    """One run's env (``members=None``) or ``members`` copies with same-step autoreset, from an env component."""
    register_namespace(env_id)
    if members is None:
        return OneEnv(factory(env_id))
    vector = getattr(factory, "vector", None)
    if vector is not None:
        return vector(env_id, members)
    return SameStepSyncVectorEnv([lambda: factory(env_id) for _ in range(members)])


def reset_by_seed(envs: Any, seeds: Sequence[int]) -> tuple[Any, dict[str, Any]]:
    """Reset the envs of these runs, each run's env from its own seed.

    An int when the seeds run consecutively (every vector env seeds member k with
    ``seed + k``), else one seed per member: then members of a fused group that
    share a seed share their env's start states (common random numbers). A
    plugin's vector env that takes only an int gets the first seed.
    """
    first = int(seeds[0])
    if list(seeds) == list(range(first, first + len(seeds))):
        return envs.reset(seed=first)
    try:
        return envs.reset(seed=[int(s) for s in seeds])
    except (TypeError, ValueError, AssertionError):
        return envs.reset(seed=first)


def terminal_next_obs(next_obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """``next_obs`` with each finished run's row replaced by its terminal observation."""
    done = info.get("_final_obs")
    if done is None or not np.any(done):
        return next_obs
    real = next_obs.copy()
    real[done] = np.stack(info["final_obs"][done]) if info["final_obs"].dtype == object else info["final_obs"][done]
    return real


def env_spaces(env: Any, env_id: str) -> tuple[ObsSpec, int]:
    """``(observation spec, number of actions)`` of a single env; a user error for envs DQN cannot drive.

    Float observations other than float32 break the env's contract (:func:`~dqnbench.plugin.checks.check_obs_space`).
    """
    action_space = getattr(env, "single_action_space", None) or env.action_space
    obs_space = getattr(env, "single_observation_space", None) or env.observation_space
    if not isinstance(action_space, gym.spaces.Discrete):
        raise DqnbenchError(
            f"environment {env_id} has {type(action_space).__name__} actions; DQN needs Discrete actions"
        )
    if not isinstance(obs_space, gym.spaces.Box):
        raise DqnbenchError(f"environment {env_id} has {type(obs_space).__name__} observations; dqnbench needs Box")
    check_obs_space(obs_space.dtype, env_id)
    frames = component_attribute(env, "dqnbench_frames") or 1
    try:
        spec = ObsSpec(obs_space.shape, obs_space.dtype, frames)
    except ValueError as exc:
        raise DqnbenchError(f"environment {env_id}: {exc}") from None
    return spec, int(action_space.n)


def learning_reward(env: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The env component's reward transform for learning (``dqnbench_learning_reward``), or None."""
    return component_attribute(env, "dqnbench_learning_reward")


def component_attribute(env: Any, name: str) -> Any:
    """An attribute the env component set on the env it returned, found behind dqnbench's own wrapping.

    The component's env is ``env`` itself (a component's own ``vector`` env),
    ``env.env`` (one run: :class:`OneEnv`) or each of ``env.envs`` (lock-step
    members in a ``SyncVectorEnv``; they come from one factory, so the first speaks
    for all). None when no layer sets it.
    """
    members = getattr(env, "envs", None)
    layers = [env, getattr(env, "env", None), *(members[:1] if isinstance(members, list | tuple) else ())]
    for layer in layers:
        value = getattr(layer, name, None) if layer is not None else None
        if value is not None:
            return value
    return None
