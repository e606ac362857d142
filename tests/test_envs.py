"""Environment components: observations keep their shape and dtype; package ids work in every executor."""

from __future__ import annotations

import io
import types

import gymnasium as gym
import numpy as np
import pytest

import dqnbench
from dqnbench.agent.envs import env_spaces, learning_reward, make_envs, terminal_next_obs
from dqnbench.builtin import envs as builtin_envs
from dqnbench.errors import GridError
from dqnbench.run.runner import prepare
from tests.extras import needs, require

MINATAR_GRID = """
[experiment]
name = "minatar"
env = "MinAtar/Breakout-v1"
total_steps = 300
seeds = 2
eval_every = 0
eval_episodes = 1

[agent]
learning_starts = 100
batch_size = 16

[network]
hidden = [32]

[replay]
capacity = 500
"""


def test_gymnasium_keeps_box_observations_as_they_are_and_casts_only_float64():
    assert env_spaces(builtin_envs.gymnasium("CartPole-v1"), "CartPole-v1")[0].shape == (4,)
    require("minatar")
    obs, n_actions = env_spaces(builtin_envs.gymnasium("MinAtar/Breakout-v1"), "MinAtar/Breakout-v1")
    assert (obs.shape, obs.dtype, int(obs), n_actions) == ((10, 10, 4), np.dtype(bool), 400, 3)
    env = builtin_envs.gymnasium("FrozenLake-v1")  # Discrete observations: flattened one-hot float32
    first, _ = env.reset(seed=0)
    assert first.dtype == np.float32 and first.shape == (16,) and first.sum() == 1.0


def test_ale_frames_stay_uint8():
    require("ale_py")
    env = builtin_envs.gymnasium("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (210, 160, 3)
    assert env_spaces(env, "ALE/Pong-v5")[0].nbytes == 210 * 160 * 3


def test_a_missing_env_package_is_a_grid_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(
        builtin_envs.NAMESPACE_PACKAGES, "NoSuchSuite", ("dqnbench_no_such_suite", "register_envs", "nosuchsuite")
    )
    grid = tmp_path / "g.toml"
    grid.write_text('[experiment]\nname = "x"\nenv = "NoSuchSuite/Game-v0"\n')
    with pytest.raises(GridError, match=r'experiment\.env: .*pip install "dqnbench\[nosuchsuite\]"'):
        prepare(grid, load_entrypoints=False)


def test_a_missing_env_package_exits_2_from_the_cli(tmp_path):
    """MinAtar's real id, with the package hidden from the process: one line naming the extra, exit 2."""
    import subprocess
    import sys

    grid = tmp_path / "g.toml"
    grid.write_text(MINATAR_GRID)
    hide = "import sys; sys.modules['minatar'] = None; sys.modules['minatar.gym'] = None"
    code = f"{hide}; from dqnbench.cli import main; raise SystemExit(main(['run', '--grid', {str(grid)!r}]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "dqnbench[minatar]"' in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "independent"])
def test_minatar_ids_run_in_local_worker_processes(tmp_path, lockstep):
    """Process workers import nothing the parent registered: the env component registers MinAtar itself.

    One lock-step group of both seeds (pinned: on 2 workers the cell would split into two plain runs).
    """
    require("minatar")
    grid = tmp_path / "g.toml"
    grid.write_text(MINATAR_GRID.replace("eval_episodes = 1", "eval_episodes = 1\nlockstep_group = 2"))
    res = dqnbench.run_grid(
        grid,
        tmp_path / "out",
        workers=2,
        load_entrypoints=False,
        stream=io.StringIO(),
        lockstep=lockstep,
        plots=False,
    )
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    record = res.record(res.runs.run_id[0])
    assert record["obs_shape"] == [4, 10, 10] and record["obs_dtype"] == "bool"  # auto → minatar: channels first
    assert ("lockstep" in record) == lockstep
    assert set(res.runs["env.name"]) == {"auto"}


def test_a_third_party_env_component_is_used_for_single_and_lockstep_runs(write_grid, tmp_path):
    made = []

    def scaled(env_id, scale: float = 2.0):
        """CartPole with scaled rewards: an env component with a param."""
        made.append(env_id)
        return gym.wrappers.TransformReward(gym.make(env_id), lambda r: scale * r)

    plugin = types.SimpleNamespace(__name__="scaled_env", dqnbench_envs=dqnbench.hookimpl(lambda: {"scaled": scaled}))
    grid = write_grid('[env]\nname = "scaled"\nscale = 3.0\n', steps=200)
    for lockstep in (True, False):
        res = dqnbench.run_grid(
            grid,
            tmp_path / f"out-{lockstep}",
            executor="serial",
            load_entrypoints=False,
            plugins=[plugin],
            stream=io.StringIO(),
            lockstep=lockstep,
            plots=False,
        )
        assert set(res.runs.status) == {"ok"} and set(res.runs["env.scale"]) == {3.0}
        assert all(("lockstep" in res.record(r)) == lockstep for r in res.runs.run_id)
        assert set(res.steps.reward) == {3.0}  # every step's reward went through the component
    assert made and set(made) == {"CartPole-v1"}


def test_an_env_components_learning_reward_and_frames_reach_single_and_lockstep_runs(write_grid, tmp_path):
    """``dqnbench_learning_reward`` / ``dqnbench_frames`` set on the returned env count in lock-step too.

    Lock-step members of a component without its own ``vector`` env run in a
    ``SyncVectorEnv``, which hides the members' attributes; they were once ignored
    there, so a reward-clipping plugin env learned from unclipped rewards in lock-step.
    """
    calls = {True: 0, False: 0}
    mode = {"lockstep": False}

    def halved(env_id, frames: int = 1):
        env = gym.make(env_id)
        if frames > 1:  # CartPole's 4 values as 2 stacked frames of 2
            env = gym.wrappers.ReshapeObservation(env, (frames, 4 // frames))

        def learn_from(rewards):
            calls[mode["lockstep"]] += 1
            return np.asarray(rewards) * 0.5

        env.dqnbench_learning_reward = learn_from
        env.dqnbench_frames = frames
        return env

    for members in (None, 2):
        envs = make_envs(lambda env_id: halved(env_id, frames=2), "CartPole-v1", members)
        assert learning_reward(envs)(np.ones(2)).tolist() == [0.5, 0.5]
        assert env_spaces(envs, "CartPole-v1")[0].frames == 2
        envs.close()
    plugin = types.SimpleNamespace(__name__="halved_env", dqnbench_envs=dqnbench.hookimpl(lambda: {"halved": halved}))
    grid = write_grid('[env]\nname = "halved"\n', steps=200, seeds=2)
    for lockstep in (True, False):
        mode["lockstep"] = lockstep
        res = dqnbench.run_grid(
            grid, tmp_path / f"out-{lockstep}", executor="serial", load_entrypoints=False, plugins=[plugin],
            stream=io.StringIO(), lockstep=lockstep, plots=False,
        )  # fmt: skip
        assert set(res.runs.status) == {"ok"}
        assert all(("lockstep" in res.record(r)) == lockstep for r in res.runs.run_id)
        assert set(res.steps.reward) == {1.0}  # recorded returns stay the env's; only learning sees the transform
    assert calls[True] > 0 and calls[False] > 0


def test_vector_envs_of_a_component_without_a_native_one_autoreset_in_the_same_step():
    envs = make_envs(lambda env_id: gym.make(env_id), "Acrobot-v1", 2)
    envs.reset(seed=0)
    finished = 0
    for _ in range(600):
        next_obs, _, terminated, truncated, info = envs.step(envs.action_space.sample())
        done = terminated | truncated
        if done.any():
            finished += int(done.sum())
            assert not np.array_equal(terminal_next_obs(next_obs, info)[done], next_obs[done])
    assert finished >= 2


@needs("minatar")
def test_a_plugin_env_gets_minatar_ids_without_registering_them_itself(tmp_path):
    """DESIGN.md: installed packages' ids need no registration code — for plugin env components too.

    A plugin env doing a plain ``gym.make(env_id)`` passed ``plugins --check``
    (whose probe had registered MinAtar first) but ``run`` refused the id. A fresh
    interpreter, so nothing has registered the namespace before the runner does.
    """
    import subprocess
    import sys

    grid = tmp_path / "grid.toml"
    grid.write_text(
        '[experiment]\nname = "plain"\nenv = "MinAtar/Breakout-v1"\ntotal_steps = 60\nseeds = 2\neval_every = 0\n'
        'eval_episodes = 1\n\n[agent]\nlearning_starts = 30\nbatch_size = 4\n\n[env]\nname = "plain"\n\n'
        '[network]\nname = "minatar_cnn"\n'
    )
    script = (
        "import types, gymnasium as gym, dqnbench\n"
        "assert not any(k.startswith('MinAtar/') for k in gym.registry)\n"
        "plain = lambda env_id: gym.make(env_id)\n"
        "hook = dqnbench.hookimpl(lambda: {'plain': plain})\n"
        "plugin = types.SimpleNamespace(__name__='plain_env', dqnbench_envs=hook)\n"
        f"res = dqnbench.run_grid({str(grid)!r}, {str(tmp_path / 'out')!r}, executor='serial', plugins=[plugin], "
        "plots=False)\n"
        "print('STATUS', sorted(set(res.runs.status)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "STATUS ['ok']" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
