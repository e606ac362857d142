"""A float64 env gets the same verdict from ``plugins --check``, the pre-flight and its runs.

Both faults are refused naming the env: a float64 observation space (networks
compute in float32; the built-in ``gymnasium`` component converts such spaces,
a plugin component must), and a float32 space whose env returns float64 arrays.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import dqnbench
from dqnbench.builtin import envs as builtin_envs
from dqnbench.devtools.diagnostics import check_components
from dqnbench.errors import GridError
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import prepare


def float64_space(env_id: str) -> gym.Env:
    """A float64 Box with float64 observations: consistent, but not what networks compute in."""
    env = gym.make(env_id)
    space = env.observation_space
    box = gym.spaces.Box(space.low.astype(np.float64), space.high.astype(np.float64), dtype=np.float64)
    return gym.wrappers.TransformObservation(env, lambda obs: obs.astype(np.float64), box)


def float64_arrays(env_id: str) -> gym.Env:
    """A float32 Box whose env hands back float64 arrays."""
    env = gym.make(env_id)
    return gym.wrappers.TransformObservation(env, lambda obs: obs.astype(np.float64), env.observation_space)


class Float64Envs:
    @dqnbench.hookimpl
    def dqnbench_envs(self):
        return {"float64_space": float64_space, "float64_arrays": float64_arrays}


GRID = """
[experiment]
name = "float64"
env = "CartPole-v1"
total_steps = 50
seeds = 1
eval_every = 0
eval_episodes = 1

[env]
name = "{name}"
"""


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("float64_space", "has float64 observations; dqnbench needs float32"),
        ("float64_arrays", "gave observations float64"),
    ],
)
def test_a_float64_env_is_refused_by_check_and_by_runs_naming_the_env(tmp_path, name, says):
    registry = load_registry(False, (Float64Envs(),))
    problems = [p for p in check_components(registry, kinds=("env",)) if p.name == name]
    assert len(problems) == 1 and says in problems[0].message

    grid = tmp_path / "g.toml"
    grid.write_text(GRID.format(name=name))
    with pytest.raises(GridError) as caught:
        prepare(grid, plugins=(Float64Envs(),), load_entrypoints=False)
    assert caught.value.key == "experiment.env" and says in str(caught.value) and "CartPole-v1" in str(caught.value)


def test_the_builtin_gymnasium_component_converts_float64_spaces():
    gym.register("Float64CartPole-v0", entry_point=lambda: float64_space("CartPole-v1"))
    try:
        env = builtin_envs.gymnasium("Float64CartPole-v0")
        obs, _ = env.reset(seed=0)
        assert env.observation_space.dtype == np.float32 and obs.dtype == np.float32
        registry = load_registry(load_entrypoints=False)
        assert check_components(registry, kinds=("env",), env_id="Float64CartPole-v0") == []
    finally:
        del gym.registry["Float64CartPole-v0"]
