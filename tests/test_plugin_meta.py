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

import pytest

import dqnbench
from dqnbench.devtools import diagnostics, scaffold
from dqnbench.plugin import hookspecs
from dqnbench.builtin.executors import SerialExecutor
from dqnbench.builtin.explorations import linear
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.replays import uniform
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
        path, tmp_path / "out", executor=executor, plugins=(plugin,), load_entrypoints=False, stream=io.StringIO()
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
    assert calls == [(4, 2, [16])]  # CartPole's dims, the grid's [network] hidden = [16]
    record = results.record(results.runs.run_id[0])
    assert record["versions"]["components"]["network"]["name"] == "tracked_net"


def test_hook_dqnbench_replays_buffers_store_every_step_and_feed_the_learner(write_grid, tmp_path):
    counts = {"add": 0, "sample": 0, "update_priorities": 0}

    class Tracked:
        def __init__(self, capacity, obs_dim, gamma):
            self.inner = uniform(capacity, obs_dim, gamma)

        def add(self, *transition):
            counts["add"] += 1
            self.inner.add(*transition)

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
    assert steps[1:] == list(range(200))  # after the one contract probe, every env step


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
