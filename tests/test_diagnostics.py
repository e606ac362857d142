"""``dqnbench plugins --verbose`` / ``--check``: who provides what, and which component breaks its contract."""

from __future__ import annotations

import io
import re
import types

import pytest
import torch
from torch import nn

import dqnbench
from dqnbench.plugin import host as plugins_module
from dqnbench.builtin.executors import SerialExecutor
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.replays import uniform
from dqnbench.devtools.diagnostics import (
    DEFAULT_KINDS,
    Problem,
    _check_executor,
    check_components,
    describe_plugins,
    plugins_command,
    to_text,
)
from dqnbench.plugin.host import PluginWarning
from dqnbench.plugin.registry import load_registry

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

    def add(self, *transition) -> None:
        self.inner.add(*transition)

    def sample(self, batch_size: int) -> dqnbench.Batch:
        return self.inner.sample(batch_size)._replace(obs=self.inner.sample(batch_size).obs.double())

    def update_priorities(self, indices, td_errors) -> None:
        pass

    def __len__(self) -> int:
        return len(self.inner)


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


def test_check_reports_each_broken_component_naming_its_distribution(broken_problems):
    broken = {"extra_action", "no_params", "int_q", "float_actions", "float64_obs", "never_ready", "drops_items"}
    assert set(broken_problems) == broken  # fine_net passes
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
    assert check_components(registry, env_id="Acrobot-v1", kinds=("network", "exploration")) == []


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
    assert "6 problem(s)" in out.getvalue() and f'network "extra_action" from {BROKEN_DIST}' in out.getvalue()
    assert plugins_command(stream=io.StringIO(), registry=broken) == 0  # listing alone never fails


def test_problem_reads_as_one_line():
    problem = Problem("replay", "x", "dist", "1.0", "sample(32): boom")
    assert str(problem) == 'replay "x" from dist 1.0: sample(32): boom'
