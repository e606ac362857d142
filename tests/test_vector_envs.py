"""Lock-step vector envs: their lean steps give what gymnasium's own steps give, bit for bit.

- ``SameStepCartPoleVectorEnv.step`` writes ``CartPoleVectorEnv``'s physics out again without its per-step
  action-space check and its next-step reset (``dqnbench/builtin/envs.py``);
- ``SameStepSyncVectorEnv.step`` (every other env's lock-step members) is ``SyncVectorEnv``'s same-step
  step without its generic dispatch (``dqnbench/agent/envs.py``).

Each is stepped beside the implementation it replaced on the same actions through many episode ends, and
every output (observations, rewards, flags, infos with their final observations) must be equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from dqnbench.agent.envs import SameStepSyncVectorEnv
from dqnbench.builtin.envs import SameStepCartPoleVectorEnv, make_gymnasium
from dqnbench.builtin.minatar_env import minatar
from tests.extras import require


class ParentStepped(SameStepCartPoleVectorEnv):
    """The env as it stepped before: gymnasium's ``CartPoleVectorEnv.step``, then each finished member reset."""

    def step(self, action: np.ndarray) -> tuple[Any, ...]:
        obs, reward, terminated, truncated, info = CartPoleVectorEnv.step(self, action)
        done = self.prev_done
        if done.any():
            info = {"final_obs": obs.copy(), "_final_obs": done.copy()}
            for k in np.flatnonzero(done):
                self.state[:, k] = self.member_random[k].uniform(low=self.low, high=self.high, size=4)
            self.steps[done] = 0
            self.prev_done = np.zeros_like(done)
            obs = self.state.T.astype(np.float32)
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("members", [1, 3, 8])
@pytest.mark.parametrize("integrator", ["euler", "semi-implicit"])
def test_lean_step_equals_the_parents_step(members, integrator):
    lean = SameStepCartPoleVectorEnv(num_envs=members, max_episode_steps=200)
    parent = ParentStepped(num_envs=members, max_episode_steps=200)
    for env in (lean, parent):
        env.kinematics_integrator = integrator
    assert np.array_equal(lean.reset(seed=11)[0], parent.reset(seed=11)[0])
    rng, episodes = np.random.default_rng(members), 0
    for t in range(2_000):
        # mostly random actions; runs of one action end episodes by termination, the 200-step cap by truncation
        action = rng.integers(0, 2, size=members) if t % 400 < 300 else np.full(members, t % 2)
        got, want = lean.step(action), parent.step(action)
        for a, b in zip(got[:4], want[:4]):
            assert a.dtype == b.dtype and np.array_equal(a, b), t
        assert got[4].keys() == want[4].keys(), t
        for key in got[4]:
            assert np.array_equal(got[4][key], want[4][key]), (t, key)
        episodes += int((got[2] | got[3]).sum())
    assert episodes > 40 * members
    assert np.array_equal(lean.state, parent.state) and np.array_equal(lean.steps, parent.steps)


def test_lean_step_refuses_actions_cartpole_has_not():
    env = SameStepCartPoleVectorEnv(num_envs=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="3 values in"):
        env.step(np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="3 values in"):
        env.step(np.array([0, 1]))


def assert_same_info(got: dict, want: dict, where: object) -> None:
    assert got.keys() == want.keys(), where
    for key, value in got.items():
        if isinstance(value, dict):
            assert_same_info(value, want[key], (where, key))
        elif value.dtype == object:  # final_obs: one array (or None) per member
            assert all(np.array_equal(a, b) if a is not None else b is None for a, b in zip(value, want[key])), where
        else:
            assert value.dtype == want[key].dtype and np.array_equal(value, want[key]), (where, key)


@pytest.mark.parametrize("env_id", ["Acrobot-v1", "MountainCar-v0", "FrozenLake-v1", "MinAtar/Breakout-v1"])
def test_lean_sync_step_equals_sync_vector_env(env_id):
    """FrozenLake's steps carry an info (``prob``) to merge; MinAtar's envs are built once and shared out."""
    members, same_step = 3, AutoresetMode.SAME_STEP
    if env_id.startswith("MinAtar"):
        require("minatar")
        made = [[minatar(env_id) for _ in range(members)] for _ in range(2)]
        lean = SameStepSyncVectorEnv([lambda env=env: env for env in made[0]])
        sync = SyncVectorEnv([lambda env=env: env for env in made[1]], autoreset_mode=same_step)
    else:
        lean = SameStepSyncVectorEnv([lambda: make_gymnasium(env_id) for _ in range(members)])
        sync = SyncVectorEnv([lambda: make_gymnasium(env_id) for _ in range(members)], autoreset_mode=same_step)
    got, want = lean.reset(seed=5), sync.reset(seed=5)
    assert np.array_equal(got[0], want[0])
    rng, episodes = np.random.default_rng(0), 0
    steps = 300 if env_id.startswith("MinAtar") else 1_500
    for t in range(steps):
        action = rng.integers(0, lean.single_action_space.n, size=members)
        got, want = lean.step(action), sync.step(action)
        for a, b in zip(got[:4], want[:4]):
            assert a.dtype == b.dtype and np.array_equal(a, b), t
        assert_same_info(got[4], want[4], t)
        episodes += int((got[2] | got[3]).sum())
    assert episodes >= members
