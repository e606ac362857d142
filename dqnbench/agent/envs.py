"""K copies of an environment stepped as one, with same-step autoreset.

Lock-step training needs every member to take exactly the env steps an
independent run would: when a member's episode ends, its terminal observation
is the transition's ``next_obs`` and it acts on a fresh reset observation at
the very next step. That is gymnasium 1.x's ``AutoresetMode.SAME_STEP``
(terminal observations in ``info["final_obs"]``). The default ``NEXT_STEP``
mode would instead spend a step, with a dummy transition, on each reset.

CartPole has a native NumPy vector env that is ~10× faster than stepping K
envs in a Python loop at K = 32, but it only autoresets on the next step;
:class:`SameStepCartPoleVectorEnv` resets finished members in the same step.
Every other env goes through ``SyncVectorEnv`` in ``SAME_STEP`` mode.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv

CARTPOLE_ENTRY_POINT = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"


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


def make_vector_env(env_id: str, members: int, make_env: Any) -> gym.vector.VectorEnv:
    """``members`` copies of ``env_id`` with same-step autoreset.

    ``make_env(env_id)`` builds one single env (with dqnbench's observation
    wrappers) for the generic path.
    """
    spec = gym.spec(env_id)
    if spec.entry_point == CARTPOLE_ENTRY_POINT and not spec.kwargs:
        env = SameStepCartPoleVectorEnv(num_envs=members, max_episode_steps=spec.max_episode_steps or 500)
        env.spec = spec
        return env
    return SyncVectorEnv([lambda: make_env(env_id) for _ in range(members)], autoreset_mode=AutoresetMode.SAME_STEP)


def terminal_next_obs(next_obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    """``next_obs`` with each finished member's row replaced by its terminal observation."""
    done = info.get("_final_obs")
    if done is None or not np.any(done):
        return next_obs
    real = next_obs.copy()
    real[done] = np.stack(info["final_obs"][done]) if info["final_obs"].dtype == object else info["final_obs"][done]
    return real
