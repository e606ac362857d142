"""Mid-run checkpoints: a run killed at 60% and rerun does the last 40% and ends as if never stopped.

The kill is simulated by an exception from ``Agent.step`` once the run reaches
a given env step (after the last checkpoint was written); the rerun's env steps
are counted the same way. Equality is bit for bit: returns, evaluations, the
``steps`` table (rewards, losses, probes) and the weights.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dqnbench.agent import loop
from dqnbench.agent.checkpoint import Checkpoint, decode, encode, read
from dqnbench.agent.envs import OneEnv, env_state
from dqnbench.builtin.nstep import nstep
from dqnbench.builtin.prioritized import prioritized
from dqnbench.builtin.replays import uniform
from dqnbench.config.grid import load_grid
from dqnbench.errors import GridError
from dqnbench.plugin.obs import ObsSpec
from dqnbench.run.runner import RunTask, bind_components, choose, execute_task
from tests.extras import needs

needs_minatar = needs("minatar")


class Killed(Exception):
    """Stands for the process being killed mid-run."""


@pytest.fixture
def step_counter(monkeypatch):
    """Counts the env steps ``Agent.step`` takes and kills the run at ``counter["kill"]`` (None: never)."""
    counter = {"steps": 0, "kill": None}
    original = loop.Agent.step

    def step(self, envs, obs, step, *args):
        if counter["kill"] is not None and step >= counter["kill"]:
            raise Killed
        counter["steps"] += 1
        return original(self, envs, obs, step, *args)

    monkeypatch.setattr(loop.Agent, "step", step)
    return counter


def cell(write_grid, registry, extra="", steps=1000, env="CartPole-v1", network="hidden = [16]"):
    """A two-seed cell of the tiny grid: its config, seeds and bound components."""
    path = write_grid(extra, steps=steps, eval_every=steps // 4)
    path.write_text(path.read_text().replace('env = "CartPole-v1"', f'env = "{env}"').replace("hidden = [16]", network))
    plan = load_grid(path, registry)
    spec = plan.runs[0]
    return spec.config, [s.seed for s in plan.runs], bind_components(spec.config, choose(spec.config, registry))


def assert_same_runs(expected, got):
    for a, b in zip(expected, got, strict=True):
        assert a.episodes == b.episodes
        assert a.evals == b.evals
        for column in ("reward", "loss", "q_max", "epsilon", "episode"):
            np.testing.assert_array_equal(a.steps[column], b.steps[column], err_msg=column)
        for key in a.weights:
            assert torch.equal(a.weights[key], b.weights[key]), key


def kill_and_resume(config, seeds, components, stacked, checkpoint, counter, kill_at):
    counter["kill"] = kill_at
    with pytest.raises(Killed):
        loop.train_runs(config, seeds, components, stacked=stacked, checkpoint=checkpoint)
    counter["steps"], counter["kill"] = 0, None
    return loop.train_runs(config, seeds, components, stacked=stacked, checkpoint=checkpoint)


CARTPOLE_CASES = {
    "single-uniform": ("", False),
    "single-nstep-rmsprop": ('[replay]\nname = "nstep"\nn = 3\n[optimizer]\nname = "rmsprop"', False),
    "lockstep-prioritized": ('[replay]\nname = "prioritized"', True),
    "lockstep-nstep-prioritized": ('[replay]\nname = "nstep"\nn = 3\nprioritized = true', True),
}


@pytest.mark.parametrize("extra, stacked", CARTPOLE_CASES.values(), ids=CARTPOLE_CASES)
def test_a_run_killed_at_60_percent_does_the_last_40_and_equals_an_uninterrupted_run(
    write_grid, registry, tmp_path, step_counter, extra, stacked
):
    config, seeds, components = cell(write_grid, registry, extra)
    seeds = seeds if stacked else seeds[:1]
    expected = loop.train_runs(config, seeds, components, stacked=stacked)
    checkpoint = Checkpoint(tmp_path / "checkpoints" / "task", every=200)

    resumed = kill_and_resume(config, seeds, components, stacked, checkpoint, step_counter, kill_at=650)

    assert step_counter["steps"] == 400  # resumed from the checkpoint at step 600: 40% of the 1000 steps
    assert [log.resumed_at for log in resumed] == [600] * len(seeds)
    assert_same_runs(expected, resumed)
    assert [p.name for p in checkpoint.directory.iterdir()] == ["step-000000000800"]  # only the latest is kept


@needs_minatar
@pytest.mark.parametrize("stacked", [False, True], ids=["single", "lockstep"])
def test_minatar_resumes_with_its_game_state_and_equals_an_uninterrupted_run(
    write_grid, registry, tmp_path, step_counter, stacked
):
    config, seeds, components = cell(
        write_grid, registry, "[replay]\ncapacity = 500", steps=400, env="MinAtar/Breakout-v1",
        network='name = "minatar_cnn"',
    )  # fmt: skip
    seeds = seeds if stacked else seeds[:1]
    expected = loop.train_runs(config, seeds, components, stacked=stacked)
    resumed = kill_and_resume(
        config, seeds, components, stacked, Checkpoint(tmp_path / "ck", 100), step_counter, kill_at=250
    )
    assert step_counter["steps"] == 200 and resumed[0].resumed_at == 200
    assert_same_runs(expected, resumed)


class Walk(gym.Env):
    """A walk whose state is not plain attributes (a Python object), so a checkpoint cannot hold it."""

    observation_space = gym.spaces.Box(-100.0, 100.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    class Position:
        x = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = Walk.Position()
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.position.x += 1 if action else -1
        done = abs(self.position.x) >= 7
        return np.array([self.position.x, 1.0], np.float32), 1.0, done, False, {}


def test_an_env_that_cannot_be_restored_starts_a_new_episode_on_resume(write_grid, registry, tmp_path, step_counter):
    config, seeds, components = cell(write_grid, registry, steps=600)
    components = dataclasses.replace(components, env=lambda env_id: gym.wrappers.TimeLimit(Walk(), 50))
    assert env_state(OneEnv(components.env("walk"))) is None
    resumed = kill_and_resume(
        config, seeds[:1], components, False, Checkpoint(tmp_path / "ck", 200), step_counter, kill_at=450
    )
    (log,) = resumed
    assert log.resumed_at == 400 and step_counter["steps"] == 200
    starts = np.array(log.episodes["step"]) - np.array(log.episodes["length"])
    assert 400 in starts  # the interrupted episode is dropped; a new one starts at the step resumed from
    assert len(log.steps["reward"]) == 600 and log.evals["step"] == [0, 150, 300, 450, 600]


class NoStateReplay:
    """A third-party replay without ``state_dict`` (taking rows: it declares ``supports_members``)."""

    supports_members = True

    def __init__(self, capacity, obs_dim, gamma, members=None):
        self.inner = uniform(capacity, obs_dim, gamma, members)
        self.add, self.sample, self.update_priorities = self.inner.add, self.inner.sample, self.inner.update_priorities

    def __len__(self):
        return len(self.inner)


def test_a_replay_without_state_dict_is_skipped_with_a_warning_and_refilled(
    write_grid, registry, tmp_path, step_counter
):
    config, seeds, components = cell(write_grid, registry, steps=600)
    components = dataclasses.replace(components, replay=NoStateReplay)
    with pytest.warns(RuntimeWarning, match="NoStateReplay has no state_dict"):
        with pytest.raises(Killed):
            step_counter["kill"] = 450
            loop.train_runs(config, seeds[:1], components, stacked=False, checkpoint=Checkpoint(tmp_path, 200))
    step_counter["kill"] = None
    with pytest.warns(RuntimeWarning, match="refills it"):
        (log,) = loop.train_runs(config, seeds[:1], components, stacked=False, checkpoint=Checkpoint(tmp_path, 200))
    assert log.resumed_at == 400
    assert np.isnan(log.loss[400:415]).all() and np.isfinite(log.loss[-1])  # no learning until 16 stored again


def test_a_checkpoint_of_other_seeds_or_lockstep_is_ignored_with_a_warning(
    write_grid, registry, tmp_path, step_counter
):
    config, seeds, components = cell(write_grid, registry, steps=600)
    checkpoint = Checkpoint(tmp_path / "ck", 200)
    step_counter["kill"] = 450
    with pytest.raises(Killed):
        loop.train_runs(config, seeds, components, stacked=True, checkpoint=checkpoint)
    step_counter["steps"], step_counter["kill"] = 0, None
    with pytest.warns(RuntimeWarning, match="the run starts afresh"):
        (log,) = loop.train_runs(config, seeds[:1], components, stacked=False, checkpoint=checkpoint)
    assert log.resumed_at is None and step_counter["steps"] == 600


def test_checkpoint_files_load_without_unpickling_and_a_pickle_is_refused(tmp_path):
    checkpoint = Checkpoint(tmp_path / "ck", 10)
    state = {"weights": torch.arange(3.0), "replay": np.arange(5, dtype=np.uint8), "n": 3}
    path = checkpoint.save(10, state)
    assert sorted(p.name for p in path.iterdir()) == ["arrays", "state.json", "tensors.pt"]
    json.loads((path / "state.json").read_text())  # plain JSON
    step, loaded = read(path)
    assert step == 10 and loaded["n"] == 3 and torch.equal(loaded["weights"], state["weights"])
    np.testing.assert_array_equal(loaded["replay"], state["replay"])

    class Payload:  # what an attacker's checkpoint would unpickle
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"t0": Payload()}, path / "tensors.pt")
    with pytest.warns(RuntimeWarning, match="ignoring checkpoint"):
        assert checkpoint.load() is None


def test_saves_are_atomic_and_keep_only_the_latest(tmp_path, monkeypatch):
    checkpoint = Checkpoint(tmp_path / "ck", 10)
    checkpoint.save(10, {"x": np.zeros(3)})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save(20, {"x": np.ones(3)})
    assert [p.name for p in checkpoint.directory.iterdir()] == ["step-000000000010"]  # the old one, whole
    monkeypatch.undo()
    (checkpoint.directory / ".tmp-leftover").mkdir()  # a save killed mid-write
    checkpoint.save(30, {"x": np.ones(3)})
    assert [p.name for p in checkpoint.directory.iterdir()] == ["step-000000000030"]
    assert read(checkpoint.latest())[0] == 30


def test_the_codec_round_trips_what_components_hold_and_names_what_it_cannot():
    generator = np.random.default_rng(3)
    random_state = np.random.RandomState(4)
    value = {
        "tuple": (1, 2.5, None, "s"),
        "int keys": {0: [np.float32(1.5), np.int64(-2)], (1, 2): True},
        "array": np.arange(6, dtype=np.int16).reshape(2, 3),
        "tensor": torch.ones(2, dtype=torch.bfloat16),
        "rngs": [generator, random_state],
        "nan": float("nan"),
    }
    arrays, tensors = {}, {}
    tree = json.loads(json.dumps(encode(value, arrays, tensors)))
    back = decode(tree, arrays, tensors)
    assert back["tuple"] == (1, 2.5, None, "s")
    assert back["int keys"][0][0].dtype == np.float32 and back["int keys"][(1, 2)] is True
    assert type(back["int keys"][0][1]) is np.int64
    np.testing.assert_array_equal(back["array"], value["array"])
    assert back["tensor"].dtype == torch.bfloat16
    assert back["rngs"][0].random() == generator.random() and back["rngs"][1].rand() == random_state.rand()
    assert np.isnan(back["nan"])
    with pytest.raises(TypeError, match=r"cannot checkpoint state.env.game: a .*Position"):
        encode({"env": {"game": Walk.Position()}}, {}, {}, "state")
    with pytest.raises(TypeError, match="array of Python objects"):
        encode(np.array([object()]), {}, {})


REPLAYS = {
    "uniform": (uniform, {}),
    "prioritized": (prioritized, {"total_steps": 500}),
    "nstep": (nstep, {"n": 3}),
    "nstep-prioritized": (nstep, {"n": 3, "prioritized": True}),
}


@pytest.mark.parametrize("members", [None, 2], ids=["single", "members"])
@pytest.mark.parametrize("obs", [ObsSpec(3), ObsSpec((4, 6, 6), np.uint8, frames=4)], ids=["vector", "frames"])
@pytest.mark.parametrize("factory, params", REPLAYS.values(), ids=REPLAYS)
def test_builtin_replays_restore_from_their_state_dict_and_sample_the_same(factory, params, obs, members):
    def make():
        return factory(64, obs, 0.9, members=members, **params)

    rng = np.random.default_rng(0)
    lead = (members or 1,)
    replay = make()
    stack = np.zeros((*lead, *obs.shape), obs.dtype)
    for t in range(150):  # short episodes: the frame storage's side store grows
        new = rng.integers(0, 255, (*lead, *obs.frame_shape)).astype(obs.dtype)
        next_stack = np.concatenate([stack[..., 1:, :, :], new[..., None, :, :]], axis=-3) if obs.frames > 1 else new
        done = np.full(lead, t % 5 == 4)
        replay.add(stack, np.zeros(lead, np.int64), np.full(lead, float(t)), next_stack, done, done)
        stack = np.zeros_like(stack) if done.all() else next_stack
        if t % 20 == 19 and len(replay) >= 8:
            batch = replay.sample(8)
            replay.update_priorities(batch.indices, torch.rand(batch.indices.shape))

    arrays, tensors = {}, {}
    tree = json.loads(json.dumps(encode(replay.state_dict(), arrays, tensors)))
    restored = make()
    restored.load_state_dict(decode(tree, arrays, tensors))
    assert len(restored) == len(replay)
    for _ in range(3):
        np.random.seed(1)
        a = replay.sample(8)
        np.random.seed(1)
        b = restored.sample(8)
        for field in ("obs", "actions", "rewards", "next_obs", "terminated", "weights", "indices", "discounts"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        td = torch.rand(a.indices.shape)
        replay.update_priorities(a.indices, td)
        restored.update_priorities(b.indices, td)


#: a storage's slot-major arrays ``(capacity, rows, …)``; before single runs stored rows of one they had no row axis
SLOT_ARRAYS = {"obs", "next_obs", "actions", "rewards", "terminated", "done", "offset", "episode", "frame"}


@pytest.mark.parametrize("obs", [ObsSpec(3), ObsSpec((4, 6, 6), np.uint8, frames=4)], ids=["vector", "frames"])
@pytest.mark.parametrize("factory, params", [REPLAYS["uniform"], REPLAYS["prioritized"]], ids=["uniform", "per"])
def test_a_single_runs_replay_saved_without_the_row_axis_still_loads(factory, params, obs):
    """Checkpoints from before single runs added rows of one: their slot arrays load into the rows of one."""
    replay = factory(64, obs, 0.9, **params)
    stack = np.zeros((1, *obs.shape), obs.dtype)
    for t in range(100):
        new = np.full((1, 1, *obs.frame_shape), t + 1, obs.dtype)
        next_stack = np.concatenate([stack[:, 1:], new], axis=1) if obs.frames > 1 else stack + 1
        replay.add(stack, np.zeros(1, np.int64), np.full(1, float(t)), next_stack, np.zeros(1, bool), np.zeros(1, bool))
        stack = next_stack
    state = replay.state_dict()
    arrays = state["storage"]["arrays"]
    old = {**state, "storage": {**state["storage"], "arrays": {
        name: array[:, 0] if name in SLOT_ARRAYS else array for name, array in arrays.items()}}}  # fmt: skip
    restored = factory(64, obs, 0.9, **params)
    restored.load_state_dict(old)
    np.random.seed(1)
    a = replay.sample(8)
    np.random.seed(1)
    b = restored.sample(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_checkpoint_every_is_checked_and_not_part_of_run_ids(write_grid, registry):
    ids = [load_grid(write_grid(), registry).runs[0].run_id]
    path = write_grid()
    path.write_text(path.read_text().replace("eval_episodes = 2", "eval_episodes = 2\ncheckpoint_every = 500"))
    plan = load_grid(path, registry)
    assert plan.runs[0].config.experiment.checkpoint_every == 500 and plan.runs[0].run_id == ids[0]
    for bad in ("-1", "1.5", '"often"'):
        path.write_text(path.read_text().replace("checkpoint_every = 500", f"checkpoint_every = {bad}"))
        with pytest.raises(GridError, match="experiment.checkpoint_every"):
            load_grid(path, registry)
        path.write_text(path.read_text().replace(f"checkpoint_every = {bad}", "checkpoint_every = 500"))


def test_execute_task_resumes_a_killed_run_and_records_resumed_at(write_grid, registry, tmp_path, step_counter):
    path = write_grid(steps=600, seeds=1)
    path.write_text(path.read_text().replace("eval_episodes = 2", "eval_episodes = 2\ncheckpoint_every = 200"))
    spec = load_grid(path, registry).runs[0]
    task = RunTask((spec,), load_entrypoints=False, checkpoint_dir=str(tmp_path / "checkpoints" / spec.run_id))
    step_counter["kill"] = 450
    (killed,) = execute_task(task)
    assert killed.record["status"] == "failed" and Path(task.checkpoint_dir, "step-000000000400").is_dir()
    step_counter["steps"], step_counter["kill"] = 0, None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a built-in run resumes silently
        (output,) = execute_task(task)
    assert output.record["status"] == "ok" and output.record["resumed_at"] == 400 and step_counter["steps"] == 200
    fresh = execute_task(dataclasses.replace(task, checkpoint_dir=None))[0]
    assert fresh.record["resumed_at"] is None
    np.testing.assert_array_equal(fresh.steps["reward"], output.steps["reward"])


def test_a_grid_rerun_after_a_kill_resumes_from_the_checkpoint_and_then_removes_it(write_grid, tmp_path, step_counter):
    """End to end through ``run_grid``: killed at 60%, the run is recorded failed with its checkpoint kept; the
    rerun does the last 40% of the env steps, records ``resumed_at`` in the runs table, and deletes the checkpoint."""
    import io

    import dqnbench

    path = write_grid(steps=1000, seeds=1)
    path.write_text(path.read_text().replace("eval_episodes = 2", "eval_episodes = 2\ncheckpoint_every = 200"))
    out = tmp_path / "out"
    step_counter["kill"] = 650
    first = dqnbench.run_grid(path, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False)
    assert first.runs.status.tolist() == ["failed"]
    checkpoints = out / "tiny" / "checkpoints"
    assert [p.name for p in checkpoints.glob("*/step-*")] == ["step-000000000600"]
    step_counter["steps"], step_counter["kill"] = 0, None
    second = dqnbench.run_grid(path, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False)
    assert second.runs.status.tolist() == ["ok"] and second.runs.resumed_at.tolist() == [600]
    assert str(second.runs.resumed_at.dtype) == "Int64"  # an env step, never 600.0
    assert step_counter["steps"] == 400  # the remaining 40% of the work, no more
    assert len(second.steps) == 1000 and not any(checkpoints.glob("*"))
