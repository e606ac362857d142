"""What ``dqnbench plugins`` and ``--verbose`` show: who provides what.

A plugin author's first question is "did dqnbench find my package?".
:func:`describe_plugins` answers it per distribution: its plugins, the hooks each
implements, the components it provides, plugins that failed to load, duplicate
names. :func:`registry_problems` lists those load failures as :class:`Problem` s.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from dqnbench.plugin.registry import KINDS, Component, Registry


@dataclass(frozen=True)
class Problem:
    """One contract violation (or load failure), with who is responsible for it.

    ``kind`` is a component kind (``network``, ``replay``, ``exploration``,
    ``env``, ``learner``, ``optimizer``, ``executor``) or ``plugin`` for a
    plugin that failed to load or provides nothing; ``name`` is the component's (or the plugin's) name.
    """

    kind: str
    name: str
    distribution: str
    version: str
    message: str

    def __str__(self) -> str:
        if self.kind == "plugin" and not self.distribution:
            return self.message  # load failures already name the entry point and distribution
        return f'{self.kind} "{self.name}" from {self.distribution} {self.version}: {self.message}'


def describe_plugins(registry: Registry, verbose: bool = False) -> RenderableType:
    """The ``dqnbench plugins`` listing, a rich renderable.

    Without ``verbose``: one row per component (kind, name, provider
    distribution, version, plugin). With ``verbose``: a tree per distribution
    of its plugins, the hooks each implements and the components each hook
    provides. Both end with the problems: plugins that failed to load or
    implement no hook, and names provided twice.
    """
    parts: list[RenderableType] = [_plugins_tree(registry) if verbose else _components_table(registry)]
    notes = [str(p) for p in registry_problems(registry)]
    if notes:
        parts.append(Text("problems:", style="bold red"))
        parts.extend(Text(f"  {note}", style="red") for note in notes)
    return Group(*parts)


def _components_table(registry: Registry) -> Table:
    table = Table(title="dqnbench components")
    for column in ("kind", "name", "provider", "version"):
        table.add_column(column, no_wrap=True)
    table.add_column("plugin", overflow="fold")
    for c in registry.all():
        name = c.name + (" (DUPLICATE)" if (c.kind, c.name) in registry.duplicates else "")
        missing = missing_requirement(c.factory)
        if missing is not None:
            name += f' (needs pip install "{missing}")'
        table.add_row(c.kind, Text(name), c.distribution, c.version, c.provider.plugin)  # Text: "[ray]" is no markup
    return table


def missing_requirement(factory: Any) -> str | None:
    """The pip requirement of a component whose package is not installed (its ``requires`` attribute), or None.

    ``factory.requires = (module, requirement)``, e.g. ``("ray", "dqnbench[ray]")``:
    the listing shows such a component as present but unusable until installed.
    """
    requires = getattr(factory, "requires", None)
    if not requires:
        return None
    module, requirement = requires
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else requirement


def _plugins_tree(registry: Registry) -> Group:
    """One tree per distribution: its plugins, each plugin's hooks and what each hook provides."""
    host = _host(registry)
    provided: dict[tuple[str, str], list[Component]] = defaultdict(list)
    for c in registry.all():
        provided[(c.provider.plugin, KINDS[c.kind])].append(c)
    by_dist: dict[tuple[str, str], list[str]] = defaultdict(list)
    for plugin_name, _ in host.pm.list_name_plugin():
        provider = host.provider(plugin_name)
        by_dist[(provider.distribution, provider.version)].append(plugin_name)

    trees = []
    # dqnbench's own built-ins first, then the installed and in-process plugins by name
    for dist, version in sorted(by_dist, key=lambda dv: (dv[0] != "dqnbench", dv[0].lower())):
        tree = Tree(Text.assemble((dist, "bold"), f" {version}"))
        for plugin_name in by_dist[(dist, version)]:
            branch = tree.add(_plugin_label(registry, plugin_name))
            hooks = _hooks_of(registry, plugin_name)
            if not hooks:
                branch.add(Text("no hooks: forgot @dqnbench.hookimpl?", style="red"))
            for hook in hooks:
                components = provided.get((plugin_name, hook), [])
                names = ", ".join(
                    c.name + (" (DUPLICATE)" if (c.kind, c.name) in registry.duplicates else "") for c in components
                )
                kind = components[0].kind + " " if components else ""
                branch.add(f"{hook} → {kind}{names or 'nothing'}")
        trees.append(tree)
    return Group(Text("dqnbench plugins, by distribution", style="bold"), *trees)


def _host(registry: Registry):
    if registry.host is None:
        raise ValueError("this registry was not built from a plugin host; use dqnbench.plugin.registry.load_registry()")
    return registry.host


def _hooks_of(registry: Registry, plugin_name: str) -> list[str]:
    pm = _host(registry).pm
    plugin = pm.get_plugin(plugin_name)
    callers = pm.get_hookcallers(plugin) if plugin is not None else None
    return sorted(caller.name for caller in callers or ())


def _plugin_label(registry: Registry, plugin_name: str) -> str:
    """The plugin's registration name, plus its module when that differs (``entry point = module``)."""
    plugin = _host(registry).pm.get_plugin(plugin_name)
    module = getattr(plugin, "__name__", None)
    return plugin_name if not isinstance(module, str) or module == plugin_name else f"{plugin_name} = {module}"


def registry_problems(registry: Registry) -> list[Problem]:
    """Load failures, plugins that implement no hook, and names provided twice."""
    host = _host(registry)
    problems = [Problem("plugin", "", "", "", failure) for failure in host.failures]
    for plugin_name, _ in host.pm.list_name_plugin():
        if not _hooks_of(registry, plugin_name):
            provider = host.provider(plugin_name)
            problems.append(
                Problem(
                    "plugin",
                    plugin_name,
                    provider.distribution,
                    provider.version,
                    "implements no dqnbench hook: mark the hook functions with @dqnbench.hookimpl and name them "
                    f"after the hook specs ({', '.join(KINDS.values())})",
                )
            )
    for (kind, name), group in registry.duplicates.items():
        providers = " and ".join(f"{c.distribution} {c.version} (plugin {c.provider.plugin!r})" for c in group)
        problems.append(
            Problem(
                kind,
                name,
                " and ".join(c.distribution for c in group),
                "",
                f"provided by more than one plugin: {providers}; a grid that names it fails",
            )
        )
    return problems
