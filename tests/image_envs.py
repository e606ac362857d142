"""Tiny gymnasium environments with image observations, for conv-network tests that need no game package.

``Frames``: ``(2, 36, 36)`` uint8 frames (the smallest ``nature_cnn`` takes),
``Grid``: MinAtar-like ``(4, 10, 10)`` boolean channels. In both a bright
square drifts across the image and the reward is 1 for the action matching its
direction of travel, so states differ and a network has something to read.
Episodes end after ``length`` steps.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

FRAMES_ID = "DqnbenchTest/Frames-v0"
GRID_ID = "DqnbenchTest/Grid-v0"


class DriftingSquare(gym.Env):
    """A ``side``-pixel square that moves one pixel a step on a ``(channels, size, size)`` image."""

    def __init__(self, channels: int = 2, size: int = 36, dtype: str = "uint8", length: int = 12) -> None:
        self.channels, self.size, self.length = channels, size, length
        self.dtype = np.dtype(dtype)
        high = 1 if self.dtype == np.bool_ else 255
        self.observation_space = gym.spaces.Box(0, high, (channels, size, size), self.dtype)
        self.action_space = gym.spaces.Discrete(3)

    def _obs(self) -> np.ndarray:
        image = np.zeros((self.channels, self.size, self.size), dtype=self.dtype)
        row, col = self.position
        image[self.t % self.channels, row : row + 3, col : col + 3] = True if self.dtype == np.bool_ else 200
        return image

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.position = self.np_random.integers(0, self.size - 3, 2)
        self.direction = int(self.np_random.integers(3))
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        self.position = (self.position + (self.direction - 1, 1)) % (self.size - 3)
        reward = float(action == self.direction)
        return self._obs(), reward, self.t >= self.length, False, {}


def register_image_envs() -> None:
    """Register :data:`FRAMES_ID` and :data:`GRID_ID` (idempotent)."""
    if FRAMES_ID not in gym.registry:
        gym.register(FRAMES_ID, entry_point=DriftingSquare, kwargs={"channels": 2, "size": 36, "dtype": "uint8"})
    if GRID_ID not in gym.registry:
        gym.register(GRID_ID, entry_point=DriftingSquare, kwargs={"channels": 4, "size": 10, "dtype": "bool"})
