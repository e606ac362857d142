"""Where plugins come from: the plugin-manager factory and entry-point loading.

Order, as in pluggy's eggsample: add the hook specs, register the built-ins (the
package is its own first plugin), then load the ``dqnbench`` entry points of
installed distributions. A plugin module that fails to import is reported as a
warning naming the entry point and its distribution; everything else still
works.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from dqnbench.builtin import BUILTIN_MODULES
from dqnbench.plugin import hookspecs
from dqnbench.version import __version__

ENTRY_POINT_GROUP = "dqnbench"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or its hook raised; other plugins still work."""


@dataclass(frozen=True)
class Provider:
    """Who provides a plugin: its registration name and its distribution."""

    plugin: str
    distribution: str
    version: str


@dataclass
class PluginHost:
    """A pluggy manager plus what dqnbench knows about each registered plugin."""

    pm: pluggy.PluginManager
    providers: dict[str, Provider] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def register(self, plugin: Any, name: str, distribution: str, version: str) -> None:
        """Register ``plugin`` (a module or object with hookimpls) under ``name``."""
        self.pm.register(plugin, name=name)
        self.providers[name] = Provider(name, distribution, version)

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.providers.pop(name, None)

    def provider(self, plugin_name: str) -> Provider:
        return self.providers.get(plugin_name, Provider(plugin_name, plugin_name, "unknown"))

    def warn(self, message: str) -> None:
        self.failures.append(message)
        warnings.warn(message, PluginWarning, stacklevel=3)


def get_plugin_host(load_entrypoints: bool = True, extra_plugins: tuple[Any, ...] = ()) -> PluginHost:
    """Build a plugin host: specs, built-ins, then (optionally) installed plugins.

    :param load_entrypoints: load installed distributions' ``dqnbench`` entry
        points; tests pass ``False`` to get a host with the built-ins alone.
    :param extra_plugins: in-process plugins (modules or objects) to register
        too, e.g. from a notebook or a test.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    for module_name in BUILTIN_MODULES:
        host.register(importlib.import_module(module_name), module_name, "dqnbench", __version__)
    if load_entrypoints:
        _load_entrypoints(host)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        host.register(plugin, name, _distribution_of(plugin), _version_of(plugin))
    pm.check_pending()
    return host


def _load_entrypoints(host: PluginHost) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        version = ep.dist.version if ep.dist is not None else "unknown"
        if host.pm.has_plugin(ep.name):
            other = host.providers.get(ep.name)
            host.warn(
                f'Plugin entry point "{ep.name}" of distribution {dist} {version} is not loaded: the name is taken '
                f"by {other.distribution if other else 'another plugin'}; rename one of the entry points"
            )
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take dqnbench down
            host.warn(
                f'Error importing plugin "{ep.name}" ({ep.value}) from distribution '
                f"{dist} {version}: {type(exc).__name__}: {exc}"
            )
            continue
        try:
            unknown = _unknown_hooks(host.pm, plugin)
            if unknown:
                raise ValueError(f"unknown hook(s) {', '.join(unknown)} (known: {', '.join(_hook_names())})")
            host.register(plugin, ep.name, dist, version)
        except Exception as exc:  # e.g. a misspelled hook: that plugin is skipped, the rest still work
            host.warn(f'Error registering plugin "{ep.name}" from distribution {dist} {version}: {exc}')


def _hook_names() -> list[str]:
    return sorted(name for name in vars(hookspecs) if name.startswith("dqnbench_"))


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Names marked ``@hookimpl`` in ``plugin`` that match no spec (a misspelled hook)."""
    known = _hook_names()
    return [name for name in dir(plugin) if name not in known and pm.parse_hookimpl_opts(plugin, name) is not None]


def _distribution_of(plugin: Any) -> str:
    module = plugin if isinstance(plugin, ModuleType) else type(plugin)
    top = (getattr(module, "__module__", None) or getattr(module, "__name__", "") or "").split(".")[0]
    return top or "in-process"


def _version_of(plugin: Any) -> str:
    return str(getattr(plugin, "__version__", "in-process"))
