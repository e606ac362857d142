"""The environments a run steps: one env or K copies behind one vector-env interface.

The loop always steps arrays with one row per run: a single run's env is
wrapped by :class:`OneEnv` (rows of 1, a few µs per step), K lock-step members
step a vector env from the env component. Both autoreset in the same step
(gymnasium 1.x's ``AutoresetMode.SAME_STEP``): when an episode ends, the
transition's ``next_obs`` is the terminal observation (in
``info["final_obs"]``) and the run acts on a fresh reset observation at the very
next step, so every member takes exactly the env steps an independent run
would, with no dummy transitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.obs import ObsSpec


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


def make_envs(factory: Callable[..., gym.Env], env_id: str, members: int | None) -> Any:
    """One run's env (``members=None``) or ``members`` copies with same-step autoreset, from an env component."""
    if members is None:
        return OneEnv(factory(env_id))
    vector = getattr(factory, "vector", None)
    if vector is not None:
        return vector(env_id, members)
    return SyncVectorEnv([lambda: factory(env_id) for _ in range(members)], autoreset_mode=AutoresetMode.SAME_STEP)


def terminal_next_obs(next_obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """``next_obs`` with each finished run's row replaced by its terminal observation."""
    done = info.get("_final_obs")
    if done is None or not np.any(done):
        return next_obs
    real = next_obs.copy()
    real[done] = np.stack(info["final_obs"][done]) if info["final_obs"].dtype == object else info["final_obs"][done]
    return real


def env_spaces(env: Any, env_id: str) -> tuple[ObsSpec, int]:
    """``(observation spec, number of actions)`` of a single env; a user error for envs DQN cannot drive."""
    action_space = getattr(env, "single_action_space", None) or env.action_space
    obs_space = getattr(env, "single_observation_space", None) or env.observation_space
    if not isinstance(action_space, gym.spaces.Discrete):
        raise DqnbenchError(
            f"environment {env_id} has {type(action_space).__name__} actions; DQN needs Discrete actions"
        )
    if not isinstance(obs_space, gym.spaces.Box):
        raise DqnbenchError(f"environment {env_id} has {type(obs_space).__name__} observations; dqnbench needs Box")
    frames = getattr(env, "dqnbench_frames", None) or getattr(getattr(env, "env", None), "dqnbench_frames", 1)
    try:
        spec = ObsSpec(obs_space.shape, obs_space.dtype, frames)
    except ValueError as exc:
        raise DqnbenchError(f"environment {env_id}: {exc}") from None
    return spec, int(action_space.n)


def learning_reward(env: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The env component's reward transform for learning (``dqnbench_learning_reward``), or None."""
    return getattr(env, "dqnbench_learning_reward", None) or getattr(
        getattr(env, "env", None), "dqnbench_learning_reward", None
    )
