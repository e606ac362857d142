"""Built-in environments ``gymnasium`` and ``auto``: how ``experiment.env`` becomes a gymnasium env.

``gymnasium`` makes the id with ``gym.make`` and keeps Box observations in their
own shape and dtype (uint8 frames stay uint8, MinAtar's boolean channels stay
bool); float64 vectors become float32 (torch's default dtype) and non-Box
spaces (Discrete, Tuple, Dict) are flattened to float32 vectors. Ids of
environment packages (``ALE/…`` from ale-py, ``MinAtar/…`` from MinAtar) are
registered here, in whichever process makes the env, so they work in local
worker processes and Ray workers alike; a missing package is a user error
naming the extra to install. ``auto`` picks the component for an id's
namespace (``atari`` for ``ALE/``, ``minatar`` for ``MinAtar/`` once those
exist; ``gymnasium`` otherwise).

For lock-step training, ``gymnasium.vector`` gives CartPole's native NumPy
vector env (about 10× faster than K envs in a Python loop at K = 32) with
same-step autoreset; every other id gets ``SyncVectorEnv`` in that mode.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.hookspecs import hookimpl

CARTPOLE_ENTRY_POINT = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"

#: namespace → (module that registers it, how it registers, dqnbench extra that installs it)
NAMESPACE_PACKAGES: dict[str, tuple[str, str, str]] = {
    "ALE": ("ale_py", "gym.register_envs", "atari"),
    "MinAtar": ("minatar.gym", "register_envs", "minatar"),
}


def register_namespace(env_id: str) -> None:
    """Import the package that registers ``env_id``'s namespace, if gymnasium does not know it yet."""
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


def auto(env_id: str) -> gym.Env:
    """The environment component for the id's namespace (``gymnasium`` for ids without a special one)."""
    return make_gymnasium(env_id)


auto.vector = gymnasium_vector


@hookimpl
def dqnbench_envs() -> dict:
    return {"auto": auto, "gymnasium": gymnasium}
