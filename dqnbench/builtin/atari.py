"""The ``atari`` env component: ``ALE/<Game>-v5`` with the standard DQN preprocessing.

Defaults follow Machado et al. 2018 ("Revisiting the Arcade Learning
Environment", JAIR 61): sticky actions with probability 0.25, no
terminal-on-life-loss, episodes capped at 108,000 frames (27,000 agent steps
at frame skip 4); plus the preprocessing of Mnih et al. 2015 (Nature 518):
up to 30 no-op starts, an action repeated for 4 frames with the last two
max-pooled, 84×84 grayscale frames, a stack of the last 4 frames (stack axis
first: ``(4, 84, 84)`` uint8) and rewards clipped to their sign for learning.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.atari``).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from dqnbench.agent.envs import register_namespace, unknown_id_message
from dqnbench.errors import DqnbenchError

#: ALE's "no cap" for ``max_frames=0`` (its own 0 truncates at once)
NO_FRAME_CAP = 2**31 - 1


def ale_game(env_id: str) -> tuple[str, gym.envs.registration.EnvSpec]:
    """The ROM name (``"pong"``) and spec of an ``ALE/<Game>-v5`` id; a user error for any other id."""
    if not env_id.startswith("ALE/"):
        raise DqnbenchError(
            f"the atari env component makes ALE/<Game>-v5 ids, not {env_id!r} "
            '(use [env] name = "auto" or "gymnasium" for other ids)'
        )
    register_namespace(env_id)
    if env_id not in gym.registry:
        raise DqnbenchError(unknown_id_message(env_id))
    spec = gym.spec(env_id)
    game = spec.kwargs.get("game")
    if not game or spec.kwargs.get("obs_type", "rgb") == "ram":
        raise DqnbenchError(f"the atari env component needs a screen-based ALE id, not {env_id!r}")
    return game, spec


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DqnbenchError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _screen(screen_size: Any) -> tuple[int, int]:
    """``screen_size`` as ``(height, width)``: an int for square frames or ``[height, width]``."""
    if isinstance(screen_size, list | tuple) and len(screen_size) == 2:
        return _positive("screen_size", screen_size[0]), _positive("screen_size", screen_size[1])
    side = _positive("screen_size", screen_size)
    return side, side


def ale_vector_kwargs(
    noop_max: int,
    frame_skip: int,
    max_pool: bool,
    screen_size: int | list[int],
    grayscale: bool,
    frame_stack: int,
    sticky_actions: float,
    max_frames: int,
    terminal_on_life_loss: bool,
    full_action_space: bool,
    fire_reset: bool,
) -> dict[str, Any]:
    """The ``AtariVectorEnv`` keywords for the component's params, each checked (user errors name the param)."""
    height, width = _screen(screen_size)
    if not isinstance(sticky_actions, int | float) or not 0.0 <= sticky_actions <= 1.0:
        raise DqnbenchError(f"sticky_actions must be a probability in [0, 1], got {sticky_actions!r}")
    max_frames = _positive("max_frames", max_frames, minimum=0)
    return {
        "noop_max": _positive("noop_max", noop_max, minimum=0),
        "frameskip": _positive("frame_skip", frame_skip),
        "maxpool": bool(max_pool),
        "img_height": height,
        "img_width": width,
        "grayscale": bool(grayscale),
        "stack_num": _positive("frame_stack", frame_stack),
        "repeat_action_probability": float(sticky_actions),
        "max_num_frames_per_episode": max_frames or NO_FRAME_CAP,
        "episodic_life": bool(terminal_on_life_loss),
        "full_action_space": bool(full_action_space),
        "use_fire_reset": bool(fire_reset),
        # Learning clips through dqnbench_learning_reward; the env returns the game score.
        "reward_clipping": False,
    }


class AtariVector(VectorEnv):
    """ale-py's C++ vector env with same-step autoreset, float rewards and the ``_final_obs`` mask the loop reads.

    ale-py gives the terminal observations in ``info["final_obs"]`` but no
    ``info["_final_obs"]`` mask, which gymnasium's own vector envs (and
    :func:`dqnbench.agent.envs.terminal_next_obs`) use to know which rows finished.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, num_envs: int, clip_rewards: bool, ale_kwargs: dict[str, Any]) -> None:
        game, spec = ale_game(env_id)  # registers ALE/ (a user error naming the extra without ale-py)
        from ale_py.vector_env import AtariVectorEnv

        # One emulator thread per member up to the CPUs this process may use (ale-py's 0 takes every core).
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = min(num_envs, cpus)
        self.env = AtariVectorEnv(
            game, num_envs, autoreset_mode=AutoresetMode.SAME_STEP, num_threads=threads, **ale_kwargs
        )
        self.spec = spec
        self.num_envs = num_envs
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space
        self.observation_space = self.env.observation_space
        self.action_space = self.env.action_space
        self.dqnbench_frames = ale_kwargs["stack_num"]
        if clip_rewards:
            self.dqnbench_learning_reward = np.sign

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(seed, list | tuple):  # one seed per member (ale-py takes them as an array)
            self.action_space.seed(int(seed[0]))
            return self.env.reset(seed=np.asarray(seed, dtype=np.int64), options=options)
        if seed is not None:
            self.action_space.seed(seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(np.asarray(actions, dtype=np.int64))
        if "final_obs" in info:
            info["_final_obs"] = terminated | truncated
        return obs, rewards.astype(np.float64), terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.env.close()


class AtariEnv(gym.Env):
    """One Atari game: the one-member :class:`AtariVector`, so a single run sees what a lock-step member sees.

    The vector resets a finished episode within the step; this env returns the
    terminal observation from that step and hands the already-reset observation
    to the next ``reset()`` without a seed, so no extra reset draws no-ops or
    moves the emulator's random state.
    """

    def __init__(self, env_id: str, clip_rewards: bool, ale_kwargs: dict[str, Any]) -> None:
        self.members = AtariVector(env_id, 1, clip_rewards, ale_kwargs)
        self.spec = self.members.spec
        self.observation_space = self.members.single_observation_space
        self.action_space = self.members.single_action_space
        self.dqnbench_frames = self.members.dqnbench_frames
        if clip_rewards:
            self.dqnbench_learning_reward = np.sign
        self._action = np.zeros(1, dtype=np.int64)
        self._next_start: tuple[np.ndarray, dict[str, Any]] | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        start, self._next_start = self._next_start, None
        if start is not None and seed is None and not options:
            return start
        obs, info = self.members.reset(seed=seed)
        if seed is not None:
            self.action_space.seed(seed)
        return obs[0], {key: value[0] for key, value in info.items()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._action[0] = action
        obs, rewards, terminated, truncated, info = self.members.step(self._action)
        info = {key: value[0] for key, value in info.items() if not key.startswith("_")}
        obs = obs[0]
        if terminated[0] or truncated[0]:
            final = info.pop("final_obs")
            self._next_start = (obs, dict(info))
            obs = final
        return obs, float(rewards[0]), bool(terminated[0]), bool(truncated[0]), info

    def close(self) -> None:
        self.members.close()


def atari(
    env_id: str,
    noop_max: int = 30,
    frame_skip: int = 4,
    max_pool: bool = True,
    screen_size: int = 84,
    grayscale: bool = True,
    frame_stack: int = 4,
    clip_rewards: bool = True,
    sticky_actions: float = 0.25,
    max_frames: int = 108_000,
    terminal_on_life_loss: bool = False,
    full_action_space: bool = False,
    fire_reset: bool = False,
) -> gym.Env:
    """An ``ALE/<Game>-v5`` game with DQN preprocessing; observations ``(frame_stack, H, W)`` uint8.

    :param noop_max: a reset takes 0..``noop_max`` no-op actions (Mnih et al. 2015: 30).
    :param frame_skip: emulator frames per agent action.
    :param max_pool: max-pool the last two frames of each skip (removes Atari sprite flicker).
    :param screen_size: frame side after resizing, or ``[height, width]``.
    :param grayscale: luminance frames; ``False`` gives ``(frame_stack, H, W, 3)`` RGB.
    :param frame_stack: frames stacked on the leading axis (zero-padded after a reset).
    :param clip_rewards: learn from ``sign(reward)``; recorded returns stay the game score.
    :param sticky_actions: probability that the emulator repeats the previous action each frame (Machado et al. 2018).
    :param max_frames: emulator frames per episode before truncation (0: no cap).
    :param terminal_on_life_loss: end the episode (and start a new game) when a life is lost.
    :param full_action_space: all 18 actions instead of the game's minimal set.
    :param fire_reset: press FIRE after a reset in games that need it to start.
    """
    kwargs = ale_vector_kwargs(
        noop_max, frame_skip, max_pool, screen_size, grayscale, frame_stack,
        sticky_actions, max_frames, terminal_on_life_loss, full_action_space, fire_reset,
    )  # fmt: skip
    return AtariEnv(env_id, clip_rewards, kwargs)


def atari_vector(env_id: str, num_envs: int, clip_rewards: bool = True, **preprocessing: Any) -> AtariVector:
    """``num_envs`` games stepped together in C++ (threads), same-step autoreset; params as :func:`atari`."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(atari).parameters.items()
        if name not in ("env_id", "clip_rewards")
    }
    unknown = set(preprocessing) - set(defaults)
    if unknown:
        raise DqnbenchError(f"the atari env component has no param {sorted(unknown)[0]!r}")
    kwargs = ale_vector_kwargs(**{**defaults, **preprocessing})
    return AtariVector(env_id, num_envs, clip_rewards, kwargs)


atari.vector = atari_vector
#: what the component needs installed (``dqnbench plugins`` says so when it is missing)
atari.requires = ("ale_py", "dqnbench[atari]")
