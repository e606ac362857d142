"""Fixtures of the benchmark suite (one torch thread per test comes from ``tests/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from dqnbench.agent.numerics import flushing_denormals
from dqnbench.builtin.envs import gymnasium as make_env

from .helpers import Transition


@pytest.fixture(autouse=True)
def _denormals_flushed_as_in_training():
    """Time components in the numeric mode ``train()`` runs them in (see :mod:`dqnbench.agent.numerics`).

    Without it a learn-step benchmark slows down by a factor that depends on
    how many rounds it has run, once Adam's moment estimates turn denormal.
    """
    with flushing_denormals():
        yield


@pytest.fixture(scope="session")
def transitions() -> list[Transition]:
    """2,000 consecutive CartPole-v1 transitions of a random policy (episode boundaries included), as the rows of one
    a single run's replay ``add`` takes."""
    env = make_env("CartPole-v1")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    recorded = []
    for _ in range(2_000):
        action = int(rng.integers(2))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        recorded.append((obs[None], np.array([action]), np.array([reward], np.float32), next_obs[None],
                         np.array([terminated]), np.array([truncated])))  # fmt: skip
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return recorded
