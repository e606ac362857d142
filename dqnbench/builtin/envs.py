"""Built-in environments ``gymnasium``, ``atari``, ``minatar`` and ``auto``: how ``experiment.env`` becomes an env.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.envs``).
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode

from dqnbench.agent.envs import NAMESPACE_PACKAGES, SameStepSyncVectorEnv, register_namespace, unknown_id_message  # noqa: F401 - re-exported
from dqnbench.builtin.atari import atari
from dqnbench.builtin.minatar_env import minatar
from dqnbench.errors import DqnbenchError
from dqnbench.plugin.hookspecs import hookimpl

CARTPOLE_ENTRY_POINT = "gymnasium.envs.classic_control.cartpole:CartPoleEnv"


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
    """CartPole's native vector env, autoresetting finished members within the same step.

    Each member draws its start states from its own generator (member ``k`` of a
    reset with ``seed`` from ``seed + k``, as ``SyncVectorEnv`` seeds its envs),
    so a member's episodes never depend on when the others end: a fused group's
    members stay independent of each other's values (``docs/sweeps.md``).
    """

    metadata = {**CartPoleVectorEnv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Reset every member; ``seed``: member k from ``seed + k``, or a list of one seed per member."""
        super().reset(seed=seed if seed is None or isinstance(seed, int) else int(seed[0]), options=options)
        if seed is not None or not hasattr(self, "member_random"):
            base = int(self.np_random.integers(2**31)) if seed is None else seed
            seeds = [base + k for k in range(self.num_envs)] if isinstance(base, int) else [int(s) for s in base]
            self.member_random = [np.random.default_rng(s) for s in seeds]
        for k in range(self.num_envs):
            self.state[:, k] = self.member_random[k].uniform(low=self.low, high=self.high, size=4)
        return self.state.T.astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """``CartPoleVectorEnv.step``'s physics, the same NumPy operations in the same order (so the same numbers,
        ``tests/test_vector_envs.py``), without what costs a small K most of a step: its MultiDiscrete
        ``contains`` check (21 µs) and its next-step reset, which draws from the shared generator every step
        (8 µs for an empty draw) and which this env's same-step reset replaces. At K = 3 a step takes about
        half the time of the parent's (``docs/internals.md``)."""
        action = np.asarray(action)
        if action.shape != (self.num_envs,) or not ((action == 0) | (action == 1)).all():
            raise ValueError(f"CartPole actions must be {self.num_envs} values in {{0, 1}}, got {action!r}")
        x, x_dot, theta, theta_dot = self.state
        force = np.sign(action - 0.5) * self.force_mag
        costheta = np.cos(theta)
        sintheta = np.sin(theta)
        temp = (force + self.polemass_length * np.square(theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * np.square(costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        if self.kinematics_integrator == "euler":
            x = x + self.tau * x_dot
            x_dot = x_dot + self.tau * xacc
            theta = theta + self.tau * theta_dot
            theta_dot = theta_dot + self.tau * thetaacc
        else:  # semi-implicit euler
            x_dot = x_dot + self.tau * xacc
            x = x + self.tau * x_dot
            theta_dot = theta_dot + self.tau * thetaacc
            theta = theta + self.tau * theta_dot
        self.state = np.stack((x, x_dot, theta, theta_dot))
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        self.steps += 1
        truncated = self.steps >= self.max_episode_steps
        if self._sutton_barto_reward:
            reward = -np.array(terminated, dtype=np.float32)
        else:
            reward = np.ones_like(terminated, dtype=np.float32)
        obs, info = self.state.T.astype(np.float32), {}
        done = terminated | truncated
        if done.any():  # the same-step reset: each finished member from its own generator
            info = {"final_obs": obs, "_final_obs": done}
            for k in np.flatnonzero(done):
                self.state[:, k] = self.member_random[k].uniform(low=self.low, high=self.high, size=4)
            self.steps[done] = 0
            obs = self.state.T.astype(np.float32)
        return obs, reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """Every member's physics state, step counters and random generators, for a checkpoint."""
        names = ("state", "steps", "prev_done", "steps_beyond_terminated")
        return {
            **{name: getattr(self, name) for name in names},
            "member_random": [g.bit_generator.state for g in self.member_random],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the generators in place)."""
        for generator, saved in zip(self.member_random, state["member_random"]):
            generator.bit_generator.state = saved
        for name, value in state.items():
            if name != "member_random":
                setattr(self, name, value)


def gymnasium_vector(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies with same-step autoreset: CartPole's native vector env, else ``SyncVectorEnv``
    (:class:`~dqnbench.agent.envs.SameStepSyncVectorEnv`)."""
    register_namespace(env_id)
    spec = gym.spec(env_id)
    if spec.entry_point == CARTPOLE_ENTRY_POINT and not spec.kwargs:
        env = SameStepCartPoleVectorEnv(num_envs=num_envs, max_episode_steps=spec.max_episode_steps or 500)
        env.spec = spec
        return env
    return SameStepSyncVectorEnv([lambda: make_gymnasium(env_id) for _ in range(num_envs)])


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
