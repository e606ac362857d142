"""``dqnbench plugins --verbose`` / ``--check``: who provides what, and which component breaks its contract."""

from __future__ import annotations

import importlib.util
import io
import re
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import dqnbench
from dqnbench.builtin.executors import SerialExecutor
from dqnbench.builtin.learners import DQNLearner
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.replays import uniform
from dqnbench.devtools.check import _check_executor
from dqnbench.devtools.diagnostics import (
    DEFAULT_KINDS,
    Problem,
    check_components,
    describe_plugins,
    plugins_command,
    to_text,
)
from dqnbench.plugin import host as plugins_module
from dqnbench.plugin.host import PluginWarning
from dqnbench.plugin.registry import load_registry
from tests.extras import needs

BROKEN_DIST, BROKEN_VERSION = "dqnbench-broken-example", "6.6.6"


class ExtraActionNet(nn.Module):
    """Q-values for one action too many."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.out = nn.Linear(obs_dim, n_actions + 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(obs)


class NoParameters(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.n_actions = n_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.shape[0], self.n_actions)


class FloatActions:
    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return q_values.argmax(dim=1).float()


class Float64Observations:
    """A uniform replay whose batches carry float64 observations (a forgotten ``dtype=np.float32``)."""

    def __init__(self, capacity: int, obs_dim: int, gamma: float) -> None:
        self.inner = uniform(capacity, obs_dim, gamma)

    def add(self, obs, action, reward, next_obs, terminated) -> None:  # the v1 add: one transition
        self.inner.add(obs[None], [action], [reward], next_obs[None], [terminated], [False])

    def sample(self, batch_size: int) -> dqnbench.Batch:
        return self.inner.sample(batch_size)._replace(obs=self.inner.sample(batch_size).obs.double())

    def update_priorities(self, indices, td_errors) -> None:
        pass

    def __len__(self) -> int:
        return len(self.inner)


def box_actions(env_id: str) -> gym.Env:
    return gym.make("Pendulum-v1")  # continuous actions: DQN cannot drive it


def float64_observations(env_id: str) -> gym.Env:
    """Observations that do not match the observation space (float64 under a float32 Box)."""
    env = gym.make(env_id)
    return gym.wrappers.TransformObservation(env, lambda obs: obs.astype(np.float64), env.observation_space)


def atari_only(env_id: str) -> gym.Env:
    raise dqnbench.DqnbenchError(f"atari_only makes ALE/ ids, not {env_id!r}")


def next_step_vector(env_id: str) -> gym.Env:
    return gym.make(env_id)


# gymnasium's default autoreset (NEXT_STEP) would hand the loop a dummy transition after every episode end
next_step_vector.vector = lambda env_id, num_envs: gym.make_vec(env_id, num_envs, vectorization_mode="sync")


class MeanLoss(DQNLearner):
    """Returns the batch's mean loss instead of one per sample."""

    def loss(self, nets, batch):
        losses, priorities = super().loss(nets, batch)
        return dqnbench.LearnerLoss(losses.mean(), priorities)


class DetachedLoss(DQNLearner):
    def loss(self, nets, batch):
        with torch.no_grad():
            return super().loss(nets, batch)


class DoubledBackward(DQNLearner):
    """A speed path whose gradients are twice autograd's."""

    def backward(self, nets, batch):
        result = super().backward(nets, batch)
        for p in nets.online.parameters():
            p.grad.mul_(2.0)
        return result


class AccumulatingBackward(DQNLearner):
    """Its own backward by autograd, adding to the last step's gradients instead of replacing them."""

    def backward(self, nets, batch):
        losses, priorities = self.loss(nets, batch)
        per_run = (batch.weights * losses).mean(dim=-1)
        per_run.sum().backward()
        return dqnbench.LearnerLoss(per_run.detach(), priorities.detach())


class NoOutputs(dqnbench.LearnerBase):
    outputs = 0


class RowsOnly(DQNLearner):
    """Declares lock-step support but takes only a single run's ``(B,)`` batch fields."""

    def loss(self, nets, batch):
        if batch.actions.dim() != 1:
            raise ValueError(f"expected actions (B,), got {tuple(batch.actions.shape)}")
        return super().loss(nets, batch)


def rows_only(n_actions: int) -> RowsOnly:
    return RowsOnly()


rows_only.lockstep = True


class Frozen:
    def __init__(self, parameters, lr):
        self.parameters = parameters

    def step(self):
        pass


class GlobalNormSGD(Frozen):
    """Steps along the gradient scaled to unit global norm: members' updates depend on each other."""

    def step(self):
        with torch.no_grad():
            norm = torch.sqrt(sum((p.grad**2).sum() for p in self.parameters))
            for p in self.parameters:
                p -= 1e-3 * p.grad / norm


def global_norm_sgd(parameters, lr):
    return GlobalNormSGD(parameters, lr)


global_norm_sgd.lockstep = True


class DropsItems(SerialExecutor):
    def map_unordered(self, fn, items):
        yield from list(super().map_unordered(fn, items))[:-1]


class BrokenExample:
    """An installed plugin with one good component and one broken per contract."""

    @dqnbench.hookimpl
    def dqnbench_networks(self):
        return {"fine_net": mlp, "extra_action": ExtraActionNet, "no_params": NoParameters, "int_q": IntQ}

    @dqnbench.hookimpl
    def dqnbench_explorations(self):
        return {"float_actions": lambda n_actions, total_steps: FloatActions()}

    @dqnbench.hookimpl
    def dqnbench_replays(self):
        return {"float64_obs": Float64Observations, "never_ready": lambda capacity, obs_dim, gamma: []}

    @dqnbench.hookimpl
    def dqnbench_executors(self):
        return {"drops_items": DropsItems}

    @dqnbench.hookimpl
    def dqnbench_envs(self):
        return {
            "box_actions": box_actions,
            "float64_env": float64_observations,
            "atari_only": atari_only,
            "next_step_vector": next_step_vector,
        }

    @dqnbench.hookimpl
    def dqnbench_learners(self):
        return {
            "mean_loss": lambda n_actions: MeanLoss(),
            "detached_loss": lambda n_actions: DetachedLoss(),
            "doubled_backward": lambda n_actions: DoubledBackward(),
            "accumulating_backward": lambda n_actions: AccumulatingBackward(),
            "no_outputs": lambda n_actions: NoOutputs(),
            "rows_only": rows_only,
        }

    @dqnbench.hookimpl
    def dqnbench_optimizers(self):
        return {
            "frozen": Frozen,
            "global_norm_sgd": global_norm_sgd,
            "no_step": lambda parameters, lr: types.SimpleNamespace(zero_grad=lambda: None),  # zero_grad alone
        }


class IntQ(ExtraActionNet):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(obs)[:, :-1].round().long()


class FakeEntryPoint:
    """What ``importlib.metadata.entry_points(group="dqnbench")`` yields for an installed package."""

    def __init__(self, name: str, plugin: object, dist: str = BROKEN_DIST, version: str = BROKEN_VERSION) -> None:
        self.name, self.value, self._plugin = name, f"{name}.plugin", plugin
        self.dist = types.SimpleNamespace(name=dist, version=version)

    def load(self) -> object:
        if isinstance(self._plugin, Exception):
            raise self._plugin
        return self._plugin


def installed(monkeypatch, *entry_points: FakeEntryPoint):
    """A registry of the built-ins plus these (pretend-)installed entry points, and nothing else."""
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: list(entry_points))
    return load_registry(load_entrypoints=True)


@pytest.fixture(scope="module")
def broken_problems():
    with pytest.MonkeyPatch.context() as monkeypatch:
        registry = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    return {p.name: p for p in check_components(registry, kinds=ALL_KINDS, distributions=[BROKEN_DIST])}


ALL_KINDS = (*DEFAULT_KINDS, "executor")


def test_builtin_components_meet_their_contracts(registry):
    assert check_components(registry) == []


@pytest.mark.parametrize("name", ["serial", "process"])
def test_builtin_local_executors_dispatch_every_item(registry, name):
    _check_executor(registry.get("executor", name), None)  # raises naming the broken step


def test_executors_are_checked_only_on_request(monkeypatch):
    registry = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    assert "drops_items" not in {p.name for p in check_components(registry, distributions=[BROKEN_DIST])}


BROKEN = {
    "network": {"extra_action", "no_params", "int_q"},
    "exploration": {"float_actions"},
    "replay": {"float64_obs", "never_ready"},
    "env": {"box_actions", "float64_env", "next_step_vector"},
    "learner": {"mean_loss", "detached_loss", "doubled_backward", "accumulating_backward", "no_outputs", "rows_only"},
    "optimizer": {"frozen", "global_norm_sgd", "no_step"},
    "executor": {"drops_items"},
}


def test_check_reports_each_broken_component_naming_its_distribution(broken_problems):
    assert set(broken_problems) == set().union(*BROKEN.values())  # fine_net passes, atari_only is skipped
    for problem in broken_problems.values():
        assert (problem.distribution, problem.version) == (BROKEN_DIST, BROKEN_VERSION)
        assert f"from {BROKEN_DIST} {BROKEN_VERSION}: " in str(problem)


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("extra_action", "network", "expected (32, 2)"),
        ("int_q", "network", "dtype torch.int64, expected a float dtype"),
        ("no_params", "network", "no trainable parameters"),
        ("float_actions", "exploration", "dtype torch.float32, expected torch.int64"),
        ("float64_obs", "replay", "Batch.obs has dtype torch.float64"),
        ("never_ready", "replay", "has no add"),
        ("drops_items", "executor", "expected each of [-1, 2, -3] once"),
        ("box_actions", "env", "DQN needs Discrete actions"),
        ("float64_env", "env", "gave observations float64 (4,), expected a NumPy float32 (4,)"),
        ("next_step_vector", "env", "the loop needs AutoresetMode.SAME_STEP"),
        ("mean_loss", "learner", "losses have shape (), expected (32,)"),
        ("detached_loss", "learner", "not differentiable"),
        ("doubled_backward", "learner", "differs from autograd of the weighted mean loss"),
        ("accumulating_backward", "learner", "backward must overwrite .grad"),
        ("no_outputs", "learner", "outputs must be an int >= 1, got 0"),
        ("rows_only", "learner", "on 2 stacked members, batch fields (2, 32)"),
        ("frozen", "optimizer", "left every parameter unchanged, with gradients set"),
        ("global_norm_sgd", "optimizer", "members are not independent"),
        ("no_step", "optimizer", "has no step()"),
    ],
)
def test_each_problem_says_which_contract_was_broken(broken_problems, name, kind, says):
    problem = broken_problems[name]
    assert problem.kind == kind and says in problem.message


def test_a_plugin_that_fails_to_import_is_a_problem_naming_its_distribution(monkeypatch):
    with pytest.warns(PluginWarning):
        registry = installed(
            monkeypatch, FakeEntryPoint("missing_dep", ImportError("No module named 'jax'"), "dqnbench-jax", "0.3")
        )
    problems = check_components(registry, kinds=("exploration",))
    assert [p.kind for p in problems] == ["plugin"]
    assert "missing_dep" in str(problems[0]) and "dqnbench-jax 0.3" in str(problems[0]) and "jax" in str(problems[0])
    assert "dqnbench-jax 0.3" in to_text(describe_plugins(registry, verbose=True))


def test_a_plugin_without_hookimpl_markers_is_a_problem(monkeypatch):
    def dqnbench_networks():  # no @dqnbench.hookimpl: pluggy ignores it
        return {"invisible": mlp}

    unmarked = types.SimpleNamespace(__name__="unmarked", dqnbench_networks=dqnbench_networks)
    registry = installed(monkeypatch, FakeEntryPoint("unmarked", unmarked, "dqnbench-unmarked", "1.0"))
    problems = check_components(registry, kinds=())
    assert len(problems) == 1 and problems[0].distribution == "dqnbench-unmarked"
    assert "@dqnbench.hookimpl" in problems[0].message
    assert "forgot @dqnbench.hookimpl" in to_text(describe_plugins(registry, verbose=True))


def test_a_name_provided_twice_is_a_problem_naming_both_distributions(monkeypatch):
    rival = types.SimpleNamespace(__name__="rival", dqnbench_networks=dqnbench.hookimpl(lambda: {"mlp": mlp}))
    rival.dqnbench_networks.__name__ = "dqnbench_networks"
    registry = installed(monkeypatch, FakeEntryPoint("rival", rival, "dqnbench-rival", "2.0"))
    duplicates = [p for p in check_components(registry, kinds=("network",)) if "more than one plugin" in p.message]
    assert len(duplicates) == 1 and duplicates[0].name == "mlp"
    assert "dqnbench 0.1" in duplicates[0].message and "dqnbench-rival 2.0" in duplicates[0].message
    assert "mlp (DUPLICATE)" in to_text(describe_plugins(registry))


def test_verbose_listing_shows_each_distributions_hooks_and_components(monkeypatch):
    registry = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    text = to_text(describe_plugins(registry, verbose=True))
    own = text[text.index(f"{BROKEN_DIST} {BROKEN_VERSION}") :]
    assert "broken_example" in own
    assert "dqnbench_networks → network extra_action, fine_net, int_q, no_params" in own
    assert "dqnbench_executors → executor drops_items" in own
    assert "dqnbench_replays → replay float64_obs, never_ready" in own
    builtins = text[: text.index(BROKEN_DIST)]
    assert "dqnbench 0.1" in builtins and "dqnbench.builtin.networks" in builtins
    assert "dqnbench_networks → network mlp" in builtins


def test_plain_listing_has_kind_name_distribution_and_version_per_component(monkeypatch):
    registry = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    rows = [line.split("│") for line in to_text(describe_plugins(registry), width=160).splitlines() if "│" in line]
    cells = {tuple(cell.strip() for cell in row[1:5]) for row in rows}
    assert ("network", "fine_net", BROKEN_DIST, BROKEN_VERSION) in cells
    assert ("network", "mlp", "dqnbench", dqnbench.__version__) in cells


def test_check_uses_the_environments_dimensions(registry):
    assert check_components(registry, env_id="Acrobot-v1") == []


class Pixels(gym.Env):
    """uint8 frames ``(3, 6, 6)``, three actions, reward 1 per step, episodes of 10 steps."""

    observation_space = gym.spaces.Box(0, 255, (3, 6, 6), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.integers(0, 256, (3, 6, 6), dtype=np.uint8), {}

    def step(self, action):
        self.t += 1
        return self.np_random.integers(0, 256, (3, 6, 6), dtype=np.uint8), 1.0, self.t >= 10, False, {}


@pytest.fixture(scope="module")
def pixels_id():
    env_id = "DqnbenchDiagnostics/Pixels-v0"
    gym.register(env_id, entry_point=Pixels, max_episode_steps=50)
    yield env_id
    del gym.registry[env_id]


def test_components_are_probed_with_the_environments_observation_shape_and_dtype(registry, pixels_id):
    assert check_components(registry, env_id=pixels_id) == []  # uint8 frames through networks, replays, learners


@needs("ale_py")
def test_atari_frames_check_the_learners_on_a_conv_net_not_the_mlp(registry):
    """``--check --env ALE/Pong-v5`` once stopped at the learner check: its probe net was the mlp, which refuses
    28,224 inputs. Learners are now checked on nature_cnn there; every built-in passes."""
    assert check_components(registry, env_id="ALE/Pong-v5") == []


def test_a_v1_network_is_fine_on_vectors_and_a_problem_on_frames(monkeypatch, pixels_id):
    class V1Net(nn.Module):  # written to v1: obs_dim is the int size of a float32 vector
        def __init__(self, obs_dim: int, n_actions: int) -> None:
            super().__init__()
            self.out = nn.Linear(obs_dim, n_actions)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.out(obs)

    v1 = types.SimpleNamespace(__name__="v1", dqnbench_networks=dqnbench.hookimpl(lambda: {"v1_net": V1Net}))
    v1.dqnbench_networks.__name__ = "dqnbench_networks"
    registry = installed(monkeypatch, FakeEntryPoint("v1", v1, "dqnbench-v1", "1.0"))
    assert check_components(registry, kinds=("network",), distributions=["dqnbench-v1"]) == []
    problems = check_components(registry, env_id=pixels_id, kinds=("network",), distributions=["dqnbench-v1"])
    assert [p.name for p in problems] == ["v1_net"] and "uint8 (32, 3, 6, 6) observations" in problems[0].message


def test_an_env_component_that_declines_the_id_is_skipped_not_a_problem(monkeypatch):
    registry = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    assert "atari_only" not in {p.name for p in check_components(registry, kinds=("env",))}
    out = io.StringIO()
    plugins_command(check=True, stream=out, registry=registry, kinds=("env",))
    assert f'skipped env "atari_only" from {BROKEN_DIST} {BROKEN_VERSION}: ' in out.getvalue()
    assert "atari_only makes ALE/ ids" in out.getvalue()


def test_the_default_check_covers_every_kind_a_grid_names():
    assert set(DEFAULT_KINDS) == {"network", "replay", "exploration", "env", "learner", "optimizer"}


def test_a_lockstep_replay_is_checked_with_rows_of_members(monkeypatch):
    def flat(capacity, obs_dim, gamma, members=None):  # ignores members: add() gets rows it cannot store
        return uniform(capacity, obs_dim, gamma)

    flat.supports_members = True
    plugin = types.SimpleNamespace(__name__="flat", dqnbench_replays=dqnbench.hookimpl(lambda: {"flat": flat}))
    plugin.dqnbench_replays.__name__ = "dqnbench_replays"
    registry = installed(monkeypatch, FakeEntryPoint("flat", plugin, "dqnbench-flat", "1.0"))
    (problem,) = check_components(registry, kinds=("replay",), distributions=["dqnbench-flat"])
    assert problem.name == "flat" and "lock-step (2 members)" in problem.message


def test_only_the_given_distributions_are_checked(monkeypatch):
    registry = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    assert check_components(registry, kinds=("network", "replay"), distributions=["dqnbench"]) == []
    names = {p.name for p in check_components(registry, kinds=("network",), distributions=["DQNBench_Broken.Example"])}
    assert names == {"extra_action", "no_params", "int_q"}  # distribution names compare normalised


def test_plugins_command_exits_1_on_a_problem_and_0_when_all_pass(monkeypatch, registry):
    out = io.StringIO()
    assert plugins_command(check=True, stream=out, registry=registry) == 0
    assert re.search(r"checked \d+ components on CartPole-v1: every one meets its contract", out.getvalue())
    broken = installed(monkeypatch, FakeEntryPoint("broken_example", BrokenExample()))
    out = io.StringIO()
    assert plugins_command(verbose=True, check=True, stream=out, registry=broken) == 1
    problems = sum(len(names) for kind, names in BROKEN.items() if kind != "executor")
    assert f"{problems} problem(s)" in out.getvalue() and f'network "extra_action" from {BROKEN_DIST}' in out.getvalue()
    assert plugins_command(stream=io.StringIO(), registry=broken) == 0  # listing alone never fails


def test_problem_reads_as_one_line():
    problem = Problem("replay", "x", "dist", "1.0", "sample(32): boom")
    assert str(problem) == 'replay "x" from dist 1.0: sample(32): boom'


def test_the_listing_says_which_components_need_a_package_that_is_missing(monkeypatch):
    """``plugins`` lists ray, atari and minatar always; where their package is missing, with the pip command."""

    from dqnbench.devtools.diagnostics import describe_plugins, to_text
    from dqnbench.plugin.registry import load_registry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    text = to_text(describe_plugins(load_registry(load_entrypoints=False)), width=200)
    assert 'ray (needs pip install "dqnbench[ray]")' in text
    assert "process" in text and "needs pip install" not in text.replace('ray (needs pip install "dqnbench[ray]")', "")
