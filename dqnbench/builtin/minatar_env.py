"""The ``minatar`` env component: ``MinAtar/<Game>-v0|v1`` with channels-first observations.

MinAtar (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough
and Reproducible Reinforcement Learning Experiments", arXiv:1903.03176) gives
``(10, 10, C)`` boolean grids; conv networks (``minatar_cnn``, torch's
``Conv2d``) want channels first, so this component transposes each observation
to ``(C, 10, 10)`` and keeps it bool (one byte per cell in the replay). Each
channel is already one object type's position, including trails that encode
motion, so no frame stack is needed.

A checkpoint restores a game exactly (:meth:`ChannelsFirst.state_dict`): a
resumed run goes on with the episode in progress.

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.minatar_env``).
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from dqnbench.agent.envs import SameStepSyncVectorEnv, register_namespace, unknown_id_message
from dqnbench.errors import DqnbenchError


class ChannelsFirst(gym.ObservationWrapper):
    """``(H, W, C)`` observations as contiguous ``(C, H, W)`` arrays of the same dtype."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(
            np.moveaxis(space.low, -1, 0), np.moveaxis(space.high, -1, 0), dtype=space.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(observation, -1, 0))

    def state_dict(self) -> dict[str, Any]:
        """The MinAtar game's whole state, for a checkpoint: its sticky-action state, the game's attributes, its RNG.

        MinAtar keeps a game in plain attributes (positions, timers, lists of
        objects, NumPy maps) and one ``RandomState`` shared by the wrapper and
        the game, so these restore it exactly.
        """
        game = self.unwrapped.game
        return {"game": {k: v for k, v in vars(game).items() if k != "env"}, "env": dict(vars(game.env))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a game of the same id (the shared RNG is set in place, staying shared)."""
        game = self.unwrapped.game
        for obj, attributes in ((game, state["game"]), (game.env, state["env"])):
            for name, value in attributes.items():
                current = getattr(obj, name, None)
                if isinstance(current, np.random.RandomState):
                    current.set_state(value.get_state(legacy=False))
                else:
                    setattr(obj, name, value)


def minatar(env_id: str, sticky_action_prob: float = 0.1, difficulty_ramping: bool = True) -> gym.Env:
    """A MinAtar game with ``(C, 10, 10)`` bool observations.

    :param sticky_action_prob: probability that the previous action is repeated instead of the chosen one.
    :param difficulty_ramping: the game speeds up as the agent progresses (MinAtar's default).
    """
    if not env_id.startswith("MinAtar/"):
        raise DqnbenchError(
            f"the minatar env component makes MinAtar/<Game>-v0|v1 ids, not {env_id!r} "
            '(use [env] name = "auto" or "gymnasium" for other ids)'
        )
    if not isinstance(sticky_action_prob, int | float) or not 0.0 <= sticky_action_prob <= 1.0:
        raise DqnbenchError(f"sticky_action_prob must be a probability in [0, 1], got {sticky_action_prob!r}")
    register_namespace(env_id)
    if env_id not in gym.registry:
        raise DqnbenchError(unknown_id_message(env_id))
    with warnings.catch_warnings():
        # gymnasium calls -v0 "out of date"; in MinAtar it is the full action set, a choice, not an old version.
        warnings.filterwarnings("ignore", message=".*is out of date", category=DeprecationWarning)
        # The env checker costs more per step than MinAtar's own step; MinAtar's env is well formed.
        env = gym.make(
            env_id,
            sticky_action_prob=float(sticky_action_prob),
            difficulty_ramping=bool(difficulty_ramping),
            disable_env_checker=True,
        )
    return ChannelsFirst(env)


def minatar_vector(env_id: str, num_envs: int, **params: Any) -> gym.vector.VectorEnv:
    """``num_envs`` MinAtar games in a ``SyncVectorEnv`` with same-step autoreset (MinAtar has no native vector env)."""
    envs = [minatar(env_id, **params) for _ in range(num_envs)]
    return SameStepSyncVectorEnv([lambda env=env: env for env in envs])


minatar.vector = minatar_vector
#: what the component needs installed (``dqnbench plugins`` says so when it is missing)
minatar.requires = ("minatar", "dqnbench[minatar]")
