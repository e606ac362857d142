"""Built-in environments ``gymnasium``, ``atari``, ``minatar`` and ``auto``: how ``experiment.env`` becomes an env.

``gymnasium`` makes the id with ``gym.make`` and keeps Box observations in their
own shape and dtype (uint8 frames stay uint8, MinAtar's boolean channels stay
bool); float64 vectors become float32 (torch's default dtype) and non-Box
spaces (Discrete, Tuple, Dict) are flattened to float32 vectors. Ids of
environment packages (``ALE/…`` from ale-py, ``MinAtar/…`` from MinAtar) are
registered here, in whichever process makes the env, so they work in local
worker processes and Ray workers alike; a missing package is a user error
naming the extra to install. ``atari`` (:mod:`dqnbench.builtin.atari`) and
``minatar`` (:mod:`dqnbench.builtin.minatar_env`) preprocess those suites;
``auto`` picks the component for an id's namespace (``atari`` for ``ALE/``,
``minatar`` for ``MinAtar/``, ``gymnasium`` otherwise) and hands it the
``[env]`` params, which must be ones that component takes.

For lock-step training, ``gymnasium.vector`` gives CartPole's native NumPy
vector env (about 10× faster than K envs in a Python loop at K = 32) with
same-step autoreset; every other id gets ``SyncVectorEnv`` in that mode.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqnbench.agent.envs import NAMESPACE_PACKAGES, register_namespace  # noqa: F401 - re-exported
from dqnbench.builtin.atari import atari
from dqnbench.builtin.minatar_env import minatar
from dqnbench.errors import DqnbenchError
from dqnbench.plugin.hookspecs import hookimpl

CARTPOLE_ENTRY_POINT = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"


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


def make_gymnasium(env_id: str) -> gym.Env:
    """``gym.make(env_id)`` with observations in a shape and dtype a network can take."""
    register_namespace(env_id)
    env = gym.make(env_id)
    space = env.observation_space
    flattened = not isinstance(space, gym.spaces.Box)
    if flattened:  # Discrete, Tuple, Dict: a one-hot / concatenated vector
        env = gym.wrappers.FlattenObservation(env)
        space = env.observation_space
    if flattened or (space.dtype.kind == "f" and space.dtype != np.float32):
        env = gym.wrappers.TransformObservation(
            env,
            lambda o: np.asarray(o, dtype=np.float32),
            gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32),
        )
    return env


class SameStepCartPoleVectorEnv(CartPoleVectorEnv):
    """CartPole's native vector env, autoresetting finished members within the same step."""

    metadata = {**CartPoleVectorEnv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        done = self.prev_done
        if done.any():
            info = {"final_obs": obs.copy(), "_final_obs": done.copy()}
            self.state[:, done] = self.np_random.uniform(low=self.low, high=self.high, size=(4, int(done.sum())))
            self.steps[done] = 0
            self.prev_done = np.zeros_like(done)
            obs = self.state.T.astype(np.float32)
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """Every member's physics state, step counters and the shared RNG, for a checkpoint."""
        names = ("state", "steps", "prev_done", "steps_beyond_terminated", "np_random")
        return {name: getattr(self, name) for name in names}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the RNG in place)."""
        self.np_random.bit_generator.state = state["np_random"].bit_generator.state
        for name, value in state.items():
            if name != "np_random":
                setattr(self, name, value)


def gymnasium_vector(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies with same-step autoreset: CartPole's native vector env, else ``SyncVectorEnv``."""
    register_namespace(env_id)
    spec = gym.spec(env_id)
    if spec.entry_point == CARTPOLE_ENTRY_POINT and not spec.kwargs:
        env = SameStepCartPoleVectorEnv(num_envs=num_envs, max_episode_steps=spec.max_episode_steps or 500)
        env.spec = spec
        return env
    return SyncVectorEnv(
        [lambda: make_gymnasium(env_id) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )


def gymnasium(env_id: str) -> gym.Env:
    """Any gymnasium id with Discrete actions, observations kept in their shape and dtype."""
    return make_gymnasium(env_id)


gymnasium.vector = gymnasium_vector


#: namespace → the env component ``auto`` chooses for its ids
NAMESPACE_COMPONENTS: dict[str, str] = {"ALE": "atari", "MinAtar": "minatar"}
#: the components ``auto`` delegates to
AUTO_COMPONENTS: dict[str, Any] = {"atari": atari, "minatar": minatar, "gymnasium": gymnasium}


def auto_component(env_id: str) -> str:
    """The name of the env component ``auto`` uses for ``env_id``: by namespace, ``gymnasium`` without one."""
    namespace = env_id.split("/", 1)[0] if "/" in env_id else None
    return NAMESPACE_COMPONENTS.get(namespace, "gymnasium")


def _delegate(env_id: str, params: dict[str, Any]) -> Any:
    """The component for ``env_id``, once the params are known to be its own (a user error naming the param)."""
    name = auto_component(env_id)
    factory = AUTO_COMPONENTS[name]
    takes = list(inspect.signature(factory).parameters)[1:]
    for key in params:
        if key not in takes:
            allowed = ", ".join(takes) or "none"
            raise DqnbenchError(
                f"env param {key!r} does not apply to {env_id!r}: auto chose the {name} env component, "
                f"which takes {allowed}"
            )
    return factory


def auto(env_id: str, **params: Any) -> gym.Env:
    """The environment component for the id's namespace (``gymnasium`` for ids without a special one)."""
    return _delegate(env_id, params)(env_id, **params)


def auto_vector(env_id: str, num_envs: int, **params: Any) -> gym.vector.VectorEnv:
    """The chosen component's vector form (see :func:`auto`)."""
    return _delegate(env_id, params).vector(env_id, num_envs, **params)


auto.vector = auto_vector
#: lets the grid resolve ``auto`` to the component it picks for a cell's env (and that one's ``[env.<name>]`` params)
auto.delegate = auto_component


@hookimpl
def dqnbench_envs() -> dict:
    return {"auto": auto, "gymnasium": gymnasium, "atari": atari, "minatar": minatar}
