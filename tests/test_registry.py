"""The plugin registry: built-ins through hooks, unknown and duplicate names, broken plugins."""

from __future__ import annotations

import types
import warnings

import pytest

import dqnbench
from dqnbench.builtin import BUILTIN_MODULES
from dqnbench.errors import DuplicateComponentError, UnknownComponentError
from dqnbench.plugin import host as plugins_module
from dqnbench.plugin.host import PluginWarning, get_plugin_host
from dqnbench.plugin.registry import Registry, load_registry


def make_plugin(name: str, **hooks):
    """An in-process plugin object: a namespace of hookimpl-marked functions."""
    plugin = types.SimpleNamespace(__name__=name)
    for hook, value in hooks.items():

        def impl(value=value):
            return value

        impl.__name__ = hook
        setattr(plugin, hook, dqnbench.hookimpl(impl))
    return plugin


def test_builtins_are_registered_through_the_hooks(registry):
    host = registry.host
    impl_plugins = {impl.plugin_name for impl in host.pm.hook.dqnbench_networks.get_hookimpls()}
    assert "dqnbench.builtin.networks" in impl_plugins
    assert set(BUILTIN_MODULES) <= set(host.providers)
    assert {"mlp"} <= set(registry.names("network"))
    assert {"uniform"} <= set(registry.names("replay"))
    assert {"constant", "linear"} <= set(registry.names("exploration"))
    assert {"serial", "process"} <= set(registry.names("executor"))
    mlp = registry.get("network", "mlp")
    assert (mlp.distribution, mlp.version) == ("dqnbench", dqnbench.__version__)


def test_unknown_name_lists_known_ones_and_suggests_the_closest(registry):
    with pytest.raises(UnknownComponentError) as err:
        registry.get("network", "mpl")
    message = str(err.value)
    assert 'unknown network "mpl"' in message
    assert "mlp" in message and 'did you mean "mlp"' in message


def test_duplicate_name_is_an_error_naming_both_providers():
    rival = make_plugin("rival_plugin", dqnbench_networks={"mlp": lambda obs_dim, n_actions: None})
    registry = load_registry(load_entrypoints=False, extra_plugins=(rival,))
    with pytest.raises(DuplicateComponentError) as err:
        registry.get("network", "mlp")
    assert "dqnbench" in str(err.value) and "rival_plugin" in str(err.value)
    # other names stay usable
    assert registry.get("replay", "uniform").name == "uniform"


def test_plugin_that_fails_to_import_warns_with_entry_point_and_distribution(monkeypatch):
    class BrokenEntryPoint:
        name = "broken"
        value = "broken_pkg.plugin"
        dist = types.SimpleNamespace(name="broken-pkg", version="9.9")

        def load(self):
            raise ImportError("No module named 'missing_dependency'")

    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [BrokenEntryPoint()])
    with pytest.warns(PluginWarning, match=r'"broken".*broken-pkg 9\.9.*missing_dependency'):
        host = get_plugin_host(load_entrypoints=True)
    registry = Registry.from_host(host)
    assert registry.get("network", "mlp").name == "mlp"
    assert host.failures and "broken-pkg" in host.failures[0]


def test_hook_that_raises_is_skipped_with_a_warning_naming_the_plugin():
    def explode():
        raise RuntimeError("boom")

    bad = types.SimpleNamespace(__name__="exploding_plugin")
    explode.__name__ = "dqnbench_replays"
    bad.dqnbench_replays = dqnbench.hookimpl(explode)
    with pytest.warns(PluginWarning, match="exploding_plugin.*dqnbench_replays.*boom"):
        registry = load_registry(load_entrypoints=False, extra_plugins=(bad,))
    assert "uniform" in registry.names("replay")


def test_hooks_are_called_when_a_registry_is_built_not_later():
    calls = []

    def networks():
        calls.append(1)
        return {"counted": lambda obs_dim, n_actions: None}

    networks.__name__ = "dqnbench_networks"
    plugin = types.SimpleNamespace(__name__="counting", dqnbench_networks=dqnbench.hookimpl(networks))
    registry = load_registry(load_entrypoints=False, extra_plugins=(plugin,))
    for _ in range(3):
        registry.get("network", "counted")
    assert calls == [1]


def test_component_params_come_from_the_factory_signature(registry):
    names, any_kw = registry.get("network", "mlp").params()
    assert names == ["hidden", "init_std"] and not any_kw
    assert registry.get("replay", "uniform").params() == ([], False)


def test_installed_entry_points_load_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        load_registry(load_entrypoints=True)


def test_misspelled_hook_skips_that_plugin_with_a_warning(monkeypatch):
    typo = types.SimpleNamespace(__name__="typo_module")

    def dqnbench_network():
        return {}

    typo.dqnbench_network = dqnbench.hookimpl(dqnbench_network)

    class TypoEntryPoint:
        name, value = "typo", "typo_pkg.plugin"
        dist = types.SimpleNamespace(name="typo-pkg", version="1.0")

        def load(self):
            return typo

    monkeypatch.setattr(plugins_module, "entry_points", lambda group: [TypoEntryPoint()])
    with pytest.warns(PluginWarning, match=r"typo-pkg 1\.0.*unknown hook\(s\) dqnbench_network"):
        registry = Registry.from_host(get_plugin_host(load_entrypoints=True))
    assert "mlp" in registry.names("network")
