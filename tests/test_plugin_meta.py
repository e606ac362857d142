"""Meta-tests: every hook of ``dqnbench/plugin/hookspecs.py`` is documented, shown and tested.

datasette's rule, for dqnbench: a hook spec added without a section in
docs/plugins.md (stating its spec's factory signature), without an executed
example there, or without a ``test_hook_<name>`` test fails here. The
``test_hook_*`` tests below are those tests: each registers an in-process plugin
implementing one hook and checks that the training loop or the runner really
uses what the hook returned.
"""

from __future__ import annotations

import ast
import functools
import io
import re
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import dqnbench
from dqnbench.builtin.envs import gymnasium as gymnasium_env
from dqnbench.builtin.executors import SerialExecutor
from dqnbench.builtin.explorations import linear
from dqnbench.builtin.learners import dqn
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.replays import uniform
from dqnbench.devtools import diagnostics, scaffold
from dqnbench.plugin import hookspecs
from dqnbench.plugin.registry import KINDS
from tests.test_plugin_guide import GUIDE, guide_blocks

TESTS = Path(__file__).resolve().parent


def hook_specs() -> dict[str, Callable]:
    """Every hook spec: the functions of hookspecs.py marked with ``@hookspec``."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, marker)}


HOOKS = sorted(hook_specs())


def guide_sections() -> dict[str, str]:
    """``### `name``` heading → the text up to the next heading."""
    text = GUIDE.read_text(encoding="utf-8")
    parts = re.split(r"^#{1,3} (.+)$", text, flags=re.MULTILINE)
    return {heading.strip().strip("`"): body for heading, body in zip(parts[1::2], parts[2::2])}


def test_the_hook_specs_are_found():
    assert {"dqnbench_networks", "dqnbench_replays", "dqnbench_explorations", "dqnbench_executors"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_in_the_guide(hook):
    assert hook in guide_sections(), f"docs/plugins.md has no '### `{hook}`' section"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_section_states_the_factory_signature_of_its_spec(hook):
    signature = re.search(r"``(factory\(.*?\) -> [\w.]+)``", hook_specs()[hook].__doc__ or "", re.DOTALL)
    assert signature, f"the docstring of {hook} in hookspecs.py states no ``factory(...) -> ...`` signature"
    expected = " ".join(signature.group(1).split())
    assert f"`{expected}`" in guide_sections().get(hook, ""), f"the guide's {hook} section lacks `{expected}`"


def _hookimpls_in_guide() -> set[str]:
    found = set()
    for block in guide_blocks():
        if block.lang != "python" or block.not_executed:
            continue
        for node in ast.walk(ast.parse(block.code)):
            marked = any(ast.unparse(d).endswith("hookimpl") for d in getattr(node, "decorator_list", ()))
            if isinstance(node, ast.FunctionDef) and marked:
                found.add(node.name)
    return found


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_an_executed_example_in_the_guide(hook):
    assert hook in _hookimpls_in_guide(), f"no executed Python block of docs/plugins.md implements {hook}"


@functools.cache
def _test_functions() -> frozenset[str]:
    names = set()
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return frozenset(names)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert any(name.startswith(f"test_hook_{hook}") for name in _test_functions()), f"write test_hook_{hook}"


def test_the_guide_documents_no_hook_that_does_not_exist():
    documented = {name for name in guide_sections() if name.startswith("dqnbench_")}
    assert documented <= set(HOOKS)


def test_every_hook_is_listed_and_checked_by_dqnbench_plugins():
    assert set(KINDS.values()) == set(HOOKS), "registry.KINDS must map a component kind to every hook"
    assert set(diagnostics.CHECKS) == set(KINDS), "dqnbench.devtools.diagnostics needs a probe for every kind"


def test_new_plugin_has_a_template_for_every_kind_a_grid_names():
    assert set(scaffold.KINDS) == set(diagnostics.DEFAULT_KINDS)


def test_every_batch_field_is_in_the_guides_table():
    text = GUIDE.read_text(encoding="utf-8")
    for field in dqnbench.Batch._fields:
        assert f"| `{field}` |" in text, f"docs/plugins.md does not document Batch.{field}"


# --- one test per hook: what the hook returns is what dqnbench uses --------------------------------


class InProcessPlugin:
    """A plugin object implementing the given hooks, each returning the given components."""

    def __init__(self, **hooks: dict) -> None:
        for hook, components in hooks.items():
            setattr(self, hook, dqnbench.hookimpl(lambda components=components: components))


def run_one(write_grid, tmp_path, plugin, grid="", executor="serial", seeds=1):
    path = write_grid(grid, steps=200, seeds=seeds, eval_every=0)
    results = dqnbench.run_grid(
        path,
        tmp_path / "out",
        executor=executor,
        plugins=(plugin,),
        load_entrypoints=False,
        stream=io.StringIO(),
        plots=False,
    )
    assert set(results.runs.status) == {"ok"}, results.runs.error.tolist()
    return results


def test_hook_dqnbench_networks_factories_build_the_q_network(write_grid, tmp_path):
    calls = []

    def tracked(obs_dim, n_actions, hidden=(8,)):
        calls.append((obs_dim, n_actions, list(hidden)))
        return mlp(obs_dim, n_actions, hidden=hidden)

    plugin = InProcessPlugin(dqnbench_networks={"tracked_net": tracked})
    results = run_one(write_grid, tmp_path, plugin, '[grid]\n"network.name" = ["tracked_net"]\n')
    # CartPole's dims, the grid's [network] hidden = [16]: once by the pre-flight check, once by the run
    assert calls == [(4, 2, [16])] * 2
    record = results.record(results.runs.run_id[0])
    assert record["versions"]["components"]["network"]["name"] == "tracked_net"


def test_hook_dqnbench_replays_buffers_store_every_step_and_feed_the_learner(write_grid, tmp_path):
    counts = {"add": 0, "sample": 0, "update_priorities": 0}

    class Tracked:
        def __init__(self, capacity, obs_dim, gamma):
            self.inner = uniform(capacity, obs_dim, gamma)

        def add(self, obs, action, reward, next_obs, terminated):  # the v1 add: one transition
            counts["add"] += 1
            self.inner.add(obs[None], [action], [reward], next_obs[None], [terminated], [False])

        def sample(self, batch_size):
            counts["sample"] += 1
            return self.inner.sample(batch_size)

        def update_priorities(self, indices, td_errors):
            counts["update_priorities"] += 1
            assert td_errors.shape == indices.shape

        def __len__(self):
            return len(self.inner)

    plugin = InProcessPlugin(dqnbench_replays={"tracked_replay": Tracked})
    run_one(write_grid, tmp_path, plugin, '[grid]\n"replay.name" = ["tracked_replay"]\n')
    assert counts["add"] == 200
    # one learn step per env step from the step that stores the 100th transition (learning_starts) on
    assert counts["sample"] == counts["update_priorities"] == 200 - 100 + 1


def test_hook_dqnbench_explorations_explorers_choose_every_action(write_grid, tmp_path):
    steps = []

    class Tracked:
        def __init__(self, n_actions, total_steps):
            self.inner = linear(n_actions, total_steps)

        def select(self, q_values, step):
            steps.append(step)
            return self.inner.select(q_values, step)

    plugin = InProcessPlugin(dqnbench_explorations={"tracked_exploration": Tracked})
    run_one(write_grid, tmp_path, plugin, '[grid]\n"exploration.name" = ["tracked_exploration"]\n')
    assert steps == list(range(200))  # every env step, once (its first answer is checked against the contract)


def test_hook_dqnbench_executors_executors_dispatch_every_run(write_grid, tmp_path):
    given, yielded = [], []

    class Recording(SerialExecutor):
        def map_unordered(self, fn, items):
            items = list(items)  # opaque to an executor: it only hands each to fn
            given.extend(items)
            for item, outcome in super().map_unordered(fn, items):
                yielded.append(item)
                yield item, outcome

    plugin = InProcessPlugin(dqnbench_executors={"recording": Recording})
    results = run_one(write_grid, tmp_path, plugin, executor="recording", seeds=2)
    assert given and yielded == given  # every task went through the plugin's executor
    assert len(results.runs) == 2


def test_hook_dqnbench_envs_factories_make_the_environments_runs_step(write_grid, tmp_path):
    made, vectors = [], []

    def doubled(env_id, factor=1.0):
        made.append((env_id, factor))
        return gym.wrappers.TransformReward(gymnasium_env(env_id), lambda reward: factor * reward)

    def doubled_vector(env_id, num_envs, factor=1.0):
        vectors.append((env_id, num_envs, factor))
        envs = [lambda: doubled(env_id, factor) for _ in range(num_envs)]
        return gym.vector.SyncVectorEnv(envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    doubled.vector = doubled_vector
    plugin = InProcessPlugin(dqnbench_envs={"doubled": doubled})
    grid = '[env]\nname = "doubled"\nfactor = 2.0\n'
    results = run_one(write_grid, tmp_path, plugin, grid)
    assert made and set(made) == {("CartPole-v1", 2.0)}  # experiment.env and the grid's [env] params
    assert set(results.steps.reward) == {2.0}  # CartPole pays 1 per step: the run stepped the plugin's env
    assert all(r % 2 == 0 for r in results.evals.returns[0])  # evaluation episodes too
    record = results.record(results.runs.run_id[0])
    assert record["versions"]["components"]["env"]["name"] == "doubled"
    assert vectors == []  # a single run steps one env
    lockstep = run_one(write_grid, tmp_path / "lockstep", plugin, grid, seeds=2)
    assert ("CartPole-v1", 2, 2.0) in vectors  # K = 2 lock-step members step the factory's vector env
    assert set(lockstep.steps.reward) == {2.0}


def test_hook_dqnbench_learners_learners_give_the_loss_the_runs_learn_from(write_grid, tmp_path):
    seen = {"q_values": 0, "losses": []}

    class Tracked(dqnbench.LearnerBase):
        def __init__(self, n_actions, double=False):
            self.inner = dqn(n_actions, double=double)
            seen["double"] = double

        def q_values(self, outputs):
            seen["q_values"] += 1
            return outputs

        def loss(self, nets, batch):
            losses, priorities = self.inner.loss(nets, batch)
            seen["losses"].append(float((batch.weights * losses).mean().detach()))
            return dqnbench.LearnerLoss(losses, priorities)

    plugin = InProcessPlugin(dqnbench_learners={"tracked_learner": Tracked})
    results = run_one(write_grid, tmp_path, plugin, '[learner]\nname = "tracked_learner"\ndouble = true\n')
    assert seen["double"] is True
    assert seen["q_values"] >= 200  # every action was chosen from the learner's reading of the outputs
    recorded = results.steps.loss.dropna().tolist()
    assert len(recorded) == 200 - 100 + 1  # one learn step per env step from learning_starts on
    assert recorded == pytest.approx(seen["losses"])  # the loss each step records is the learner's


def test_hook_dqnbench_optimizers_optimizers_step_the_online_network(write_grid, tmp_path):
    given, steps = [], []

    class Tracked:  # step() alone: the learner sets the gradients, the loop never calls zero_grad
        def __init__(self, parameters, lr, momentum=0.0):
            given.append((len(parameters), lr, momentum))
            self.parameters = parameters
            self.inner = torch.optim.SGD(parameters, lr=lr, momentum=momentum)

        def step(self):
            before = [p.detach().clone() for p in self.parameters]
            self.inner.step()
            steps.append(any(not torch.equal(p, b) for p, b in zip(self.parameters, before)))

    plugin = InProcessPlugin(dqnbench_optimizers={"tracked_sgd": Tracked})
    results = run_one(write_grid, tmp_path, plugin, '[optimizer]\nname = "tracked_sgd"\nmomentum = 0.5\n')
    # the hidden = [16] MLP's 4 tensors, agent.lr, the grid's param: built by the pre-flight check, then the run
    assert given == [(4, 1e-3, 0.5)] * 2
    assert len(steps) == 200 - 100 + 1 and all(steps)  # one step per learn step, each moving the online net
    final = results.record(results.runs.run_id[0])
    assert final["versions"]["components"]["optimizer"]["name"] == "tracked_sgd"


def _needs_width(obs_dim, n_actions, width, hidden=(8,)):
    return mlp(obs_dim, n_actions, hidden=[width])


def _needs_momentum(parameters, lr, momentum):
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum)


def _needs_floor(n_actions, total_steps, *, floor, start=1.0):
    return linear(n_actions, total_steps, start=start, end=floor)


@pytest.mark.parametrize(
    ("hook", "kind", "factory", "param", "value"),
    [
        ("dqnbench_networks", "network", _needs_width, "width", 8),
        ("dqnbench_optimizers", "optimizer", _needs_momentum, "momentum", 0.9),
        ("dqnbench_explorations", "exploration", _needs_floor, "floor", 0.05),
    ],
)
def test_a_required_factory_param_the_grid_leaves_out_exits_2_naming_it(
    write_grid, tmp_path, hook, kind, factory, param, value
):
    """Without a default only the grid can give it: a grid error before any run, naming component and key.

    Such a network or optimizer once passed the pre-flight and failed every run
    with a bare ``TypeError: … missing 1 required positional argument`` naming
    no component.
    """
    plugin = InProcessPlugin(**{hook: {"strict_one": factory}})
    chosen = f'[grid]\n"{kind}.name" = ["strict_one"]\n'
    grid = write_grid(chosen, steps=200, eval_every=0)
    with pytest.raises(dqnbench.DqnbenchError, match=rf'{kind}.{param}: {kind} "strict_one" .* needs {kind}.{param}'):
        dqnbench.run_grid(grid, tmp_path / "out", executor="serial", plugins=(plugin,), load_entrypoints=False)
    assert not (tmp_path / "out").exists()
    run_one(write_grid, tmp_path, plugin, chosen + f"\n[{kind}.strict_one]\n{param} = {value}\n")
