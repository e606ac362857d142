"""The ``atari`` and ``minatar`` env components: preprocessing, same-step autoreset, params and bad input."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from dqnbench.agent.envs import env_spaces, learning_reward, make_envs, terminal_next_obs
from dqnbench.builtin import envs as builtin_envs
from dqnbench.builtin.atari import atari
from dqnbench.builtin.minatar_env import minatar
from dqnbench.cli import main
from dqnbench.errors import DqnbenchError
from tests.extras import needs

needs_ale = needs("ale_py")
needs_minatar = needs("minatar")

#: small Atari settings that keep a test to a few hundred milliseconds: a 10-step episode cap
SHORT = {"max_frames": 40, "noop_max": 0}


def rollout(env, steps: int, actions) -> list[tuple]:
    """``(obs, reward, terminated, truncated)`` of each step of a single env, resetting after episode ends."""
    out = []
    for t in range(steps):
        obs, reward, terminated, truncated, _ = env.step(actions(t))
        out.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            out.append((env.reset()[0], None, None, None))
    return out


@needs_ale
def test_atari_gives_stacked_uint8_frames_zero_padded_after_a_reset():
    env = atari("ALE/Pong-v5")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and env.observation_space.shape == (4, 84, 84)
    assert not obs[:3].any() and obs[3].any()  # three black frames, then the first real one
    following, *_ = env.step(0)
    np.testing.assert_array_equal(following[:3], obs[1:])  # the stack shifts by one frame a step
    spec, n_actions = env_spaces(make_envs(lambda env_id: env, "ALE/Pong-v5", None), "ALE/Pong-v5")
    assert (spec.shape, spec.frames, n_actions) == ((4, 84, 84), 4, 6)
    env.close()


@needs_ale
def test_atari_params_shape_the_frames_and_actions():
    env = atari("ALE/Pong-v5", frame_stack=2, screen_size=[42, 64], full_action_space=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 42, 64) and env.dqnbench_frames == 2 and env.action_space.n == 18
    rgb = atari("ALE/Pong-v5", frame_stack=1, grayscale=False)
    assert rgb.reset(seed=0)[0].shape == (1, 84, 84, 3)


@needs_ale
def test_atari_returns_the_game_score_and_clips_only_what_is_learned():
    """Atlantis pays 100 within the first 25 steps: the env returns 100, learning sees sign(100) = 1."""
    env = atari("ALE/Atlantis-v5", noop_max=0, sticky_actions=0.0)
    env.reset(seed=0)
    rewards = [env.step(t % env.action_space.n)[1] for t in range(40)]
    assert max(rewards) == 100.0
    clip = learning_reward(make_envs(lambda env_id: env, "ALE/Atlantis-v5", None))
    assert clip is np.sign and clip(np.array([100.0, -3.0, 0.0])).tolist() == [1.0, -1.0, 0.0]
    assert not hasattr(atari("ALE/Atlantis-v5", clip_rewards=False), "dqnbench_learning_reward")


@needs_ale
def test_atari_truncates_at_max_frames_and_hands_over_the_reset_observation():
    env = atari("ALE/Pong-v5", **SHORT)
    first, _ = env.reset(seed=0)
    steps = rollout(env, 10, lambda t: 0)
    assert [s[3] for s in steps[:10]] == [False] * 9 + [True]  # 40 frames at frame skip 4
    terminal, restart = steps[9][0], steps[10][0]
    assert terminal[:3].any() and not restart[:3].any()  # the terminal stack, then a fresh zero-padded one
    np.testing.assert_array_equal(restart, first)  # noop_max=0: every episode starts on the same frame


@needs_ale
def test_atari_vector_autoresets_in_the_same_step_with_the_terminal_obs():
    envs = atari.vector("ALE/Pong-v5", 2, **SHORT)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and envs.dqnbench_frames == 4 and envs.dqnbench_learning_reward is np.sign
    for _ in range(10):
        next_obs, rewards, terminated, truncated, info = envs.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and rewards.dtype == np.float64
    assert info["_final_obs"].tolist() == [True, True]
    real = terminal_next_obs(next_obs, info)
    assert real[:, :3].any() and not next_obs[:, :3].any()  # terminal stacks stored; fresh ones acted on


@needs_ale
def test_a_lockstep_member_sees_what_an_independent_run_with_its_seed_sees():
    """Member k of a vector reset with seed s is the single env reset with s + k, resets and sticky draws included."""
    actions = lambda t, k: (3 * t + k) % 6  # noqa: E731
    envs = atari.vector("ALE/Pong-v5", 2, max_frames=60)
    members = [envs.reset(seed=5)[0]]
    for t in range(25):
        obs, *_, info = envs.step(np.array([actions(t, 0), actions(t, 1)]))
        members.append(terminal_next_obs(obs, info))
    single = atari("ALE/Pong-v5", max_frames=60)
    alone = [single.reset(seed=6)[0]]
    for t in range(25):
        obs, _, terminated, truncated, _ = single.step(actions(t, 1))
        alone.append(obs)
        if terminated or truncated:
            single.reset()
    np.testing.assert_array_equal(np.stack(members)[:, 1], np.stack(alone))


@needs_ale
@pytest.mark.parametrize(
    "params, message",
    [
        ({"frame_stack": 0}, "frame_stack must be an int >= 1"),
        ({"frame_skip": 1.5}, "frame_skip must be an int >= 1"),
        ({"sticky_actions": 2.0}, "sticky_actions must be a probability"),
        ({"screen_size": [84]}, "screen_size must be an int >= 1"),
    ],
)
def test_bad_atari_params_are_user_errors_naming_the_param(params, message):
    with pytest.raises(DqnbenchError, match=message):
        atari("ALE/Pong-v5", **params)


@needs_ale
@needs_minatar
@pytest.mark.parametrize(
    "factory, env_id, message",
    [
        (atari, "ALE/Pongg-v5", "unknown environment 'ALE/Pongg-v5'; did you mean ALE/Pong-v5"),
        (atari, "CartPole-v1", "the atari env component makes ALE/<Game>-v5 ids"),
        (minatar, "MinAtar/Tetris-v1", "unknown environment 'MinAtar/Tetris-v1'; MinAtar has MinAtar/Asterix-v0"),
        (minatar, "MinAtar/Breakuot-v1", "did you mean MinAtar/Breakout-v1"),
        (minatar, "ALE/Pong-v5", "the minatar env component makes MinAtar/"),
    ],
)
def test_unknown_games_suggest_close_names(factory, env_id, message):
    with pytest.raises(DqnbenchError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        factory(env_id)


@needs_minatar
@pytest.mark.parametrize("game", ["Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders"])
def test_minatar_gives_channels_first_bool_grids_for_every_game(game):
    full, minimal = minatar(f"MinAtar/{game}-v0"), minatar(f"MinAtar/{game}-v1")
    obs, _ = full.reset(seed=0)
    raw = full.unwrapped.game.state()
    assert obs.dtype == np.bool_ and obs.shape == (raw.shape[2], 10, 10) == full.observation_space.shape
    np.testing.assert_array_equal(obs, np.moveaxis(raw, -1, 0))
    assert obs.flags.c_contiguous and full.action_space.n == 6 and minimal.action_space.n <= 6
    minimal.reset(seed=0)
    obs, reward, terminated, truncated, _ = minimal.step(0)
    assert obs.shape == full.observation_space.shape and obs.dtype == np.bool_


@needs_minatar
def test_minatar_params_reach_the_game_with_minatars_defaults():
    game = minatar("MinAtar/Asterix-v1").unwrapped.game  # Asterix ramps (Breakout has no ramping)
    assert (game.sticky_action_prob, game.env.ramping) == (0.1, True)
    game = minatar("MinAtar/Asterix-v1", sticky_action_prob=0.0, difficulty_ramping=False).unwrapped.game
    assert (game.sticky_action_prob, game.env.ramping) == (0.0, False)
    with pytest.raises(DqnbenchError, match="sticky_action_prob must be a probability"):
        minatar("MinAtar/Breakout-v1", sticky_action_prob=-0.1)


@needs_minatar
def test_minatar_vector_autoresets_in_the_same_step():
    envs = minatar.vector("MinAtar/Breakout-v1", 3, sticky_action_prob=0.0)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 4, 10, 10) and obs.dtype == np.bool_
    for _ in range(300):  # Breakout with a still paddle loses its ball within a few dozen steps
        obs, _, terminated, truncated, info = envs.step(np.zeros(3, dtype=np.int64))
        if terminated.any():
            break
    assert terminated.any() and info["_final_obs"].tolist() == terminated.tolist()
    assert terminal_next_obs(obs, info).dtype == np.bool_


@needs_ale
@needs_minatar
def test_auto_picks_the_component_by_namespace_and_hands_it_the_params():
    assert [builtin_envs.auto_component(i) for i in ("ALE/Pong-v5", "MinAtar/Breakout-v1", "CartPole-v1")] == [
        "atari", "minatar", "gymnasium"
    ]  # fmt: skip
    assert builtin_envs.auto("ALE/Pong-v5", frame_stack=2).reset(seed=0)[0].shape == (2, 84, 84)
    assert builtin_envs.auto("MinAtar/Breakout-v1").reset(seed=0)[0].shape == (4, 10, 10)
    assert builtin_envs.auto.vector("ALE/Pong-v5", 2, screen_size=42).reset(seed=0)[0].shape == (2, 4, 42, 42)
    with pytest.raises(DqnbenchError, match="env param 'frame_stack' does not apply to 'CartPole-v1'"):
        builtin_envs.auto("CartPole-v1", frame_stack=4)


GRID = """
[experiment]
name = "bad"
env = "{env}"
total_steps = 100
[env]
{env_params}
"""


@needs_ale
@needs_minatar
@pytest.mark.parametrize(
    "env, env_params, message",
    [
        ("ALE/Pong-v5", 'name = "atari"\nframe_stack = 0', "env.frame_stack: frame_stack must be an int >= 1, got 0"),
        ("ALE/Pongg-v5", 'name = "atari"', "did you mean ALE/Pong-v5"),
        ("MinAtar/Tetris-v1", "", "unknown environment 'MinAtar/Tetris-v1'"),
        ("CartPole-v1", 'name = "atari"', "the atari env component makes ALE/<Game>-v5 ids, not 'CartPole-v1'"),
    ],
)
def test_bad_env_input_exits_2_from_a_dry_run(tmp_path, capsys, env, env_params, message):
    grid = tmp_path / "bad.toml"
    grid.write_text(GRID.format(env=env, env_params=env_params))
    assert main(["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(grid) in err and message in err, err
    assert not (tmp_path / "out").exists()


@needs_ale
def test_a_missing_ale_py_exits_2_naming_the_atari_extra(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.format(env="ALE/Pong-v5", env_params=""))
    hide = "import sys; sys.modules['ale_py'] = None"
    run = f"main(['run', '--grid', {str(grid)!r}, '--dry-run'])"
    code = f"{hide}; from dqnbench.cli import main; raise SystemExit({run})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install "dqnbench[atari]"' in proc.stderr and "Traceback" not in proc.stderr


def test_a_plugin_env_whose_frames_change_shape_fails_its_run_naming_the_env(write_grid, tmp_path):
    """Frames of the declared (2, 12, 12) until step 50, then (2, 12, 11): the run fails and names the env."""
    import io

    import gymnasium as gym
    import numpy as np

    import dqnbench
    from tests.test_plugin_meta import InProcessPlugin

    class Corrupting(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (2, 12, 12), np.uint8)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = getattr(self, "t", 0)
            return np.zeros((2, 12, 12), np.uint8), {}

        def step(self, action):
            self.t += 1
            shape = (2, 12, 12) if self.t < 50 else (2, 12, 11)
            return np.zeros(shape, np.uint8), 0.0, False, self.t % 20 == 0, {}

    def corrupting(env_id: str) -> gym.Env:
        return Corrupting()

    plugin = InProcessPlugin(dqnbench_envs={"corrupting": corrupting})
    grid = write_grid('[env]\nname = "corrupting"\n', steps=100, seeds=1)
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", plugins=[plugin], load_entrypoints=False,
        stream=io.StringIO(), plots=False,
    )  # fmt: skip
    (error,) = res.runs.error.tolist()
    assert res.runs.status.tolist() == ["failed"]
    assert 'env "corrupting"' in error and "(2, 12, 11)" in error and "(2, 12, 12)" in error, error


@needs_ale
@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "independent"])
def test_an_atari_grid_with_the_default_frame_stack_runs_with_every_builtin_replay(tmp_path, lockstep):
    """ALE/Pong-v5, the default 4-frame stack, nature_cnn, uniform / prioritized / n-step replay, end to end.

    The image pre-flight once fed the replay two unrelated random stacks, which a
    frame-storing replay rightly refuses (a stack must slide by one frame), so
    every Atari grid exited 2 before anything ran.
    """
    import dqnbench

    grid = tmp_path / "pong.toml"
    grid.write_text(
        '[experiment]\nname = "pong"\nenv = "ALE/Pong-v5"\ntotal_steps = 80\nseeds = 2\neval_every = 0\n'
        "eval_episodes = 1\n\n[agent]\nlearning_starts = 40\nbatch_size = 4\ntarget_update = 10\n\n"
        '[network]\nname = "nature_cnn"\n\n[replay]\ncapacity = 200\n\n[env.atari]\nmax_frames = 200\n\n'
        '[grid]\n"replay.name" = ["uniform", "prioritized", "nstep"]\n'
    )
    res = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", lockstep=lockstep, plots=False)
    assert set(res.runs.status) == {"ok"} and len(res.runs) == 6
    assert set(res.runs.lockstep_members) == ({2} if lockstep else {1})
    record = res.record(res.runs.run_id[0])
    assert record["obs_shape"] == [4, 84, 84] and record["obs_dtype"] == "uint8"
