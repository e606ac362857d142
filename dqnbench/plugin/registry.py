"""The component registry: ``(kind, name)`` → factory, with who provides it.

Built once per command or run from the plugin host by calling each plugin's
hook separately, so every component knows its provider distribution and a
name offered twice can be reported with both providers.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dqnbench.errors import DqnbenchError, DuplicateComponentError, UnknownComponentError
from dqnbench.plugin.host import PluginHost, Provider, get_plugin_host

#: kind → the hook that provides it
KINDS: dict[str, str] = {
    "network": "dqnbench_networks",
    "replay": "dqnbench_replays",
    "exploration": "dqnbench_explorations",
    "executor": "dqnbench_executors",
    "env": "dqnbench_envs",
    "learner": "dqnbench_learners",
    "optimizer": "dqnbench_optimizers",
}
#: the kinds a grid names and a run is built from: every kind but the executor, which dispatches runs
RUN_KINDS: tuple[str, ...] = tuple(kind for kind in KINDS if kind != "executor")


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    provider: Provider

    @property
    def distribution(self) -> str:
        return self.provider.distribution

    @property
    def version(self) -> str:
        return self.provider.version

    def describe(self) -> str:
        """``kind "name" from distribution version`` — for error messages."""
        return f'{self.kind} "{self.name}" from {self.provider.distribution} {self.provider.version}'

    def params(self) -> tuple[list[str], bool]:
        """The keyword params the factory accepts beyond the contract's positionals.

        Returns ``(names, accepts_any)``; ``accepts_any`` is true for ``**kwargs``.
        """
        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return [], True
        fixed = _POSITIONAL[self.kind]
        names, accepts_any = [], False
        for i, p in enumerate(signature.parameters.values()):
            if p.kind is p.VAR_KEYWORD:
                accepts_any = True
            elif p.kind is p.VAR_POSITIONAL or i < len(fixed):
                continue
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in RESERVED.get(self.kind, ()):
                names.append(p.name)
        return names, accepts_any

    def accepts(self, keyword: str) -> bool:
        """Does the factory name the keyword ``keyword`` in its signature (reserved ones, e.g. a network's ``outputs``)?

        A catch-all ``**params`` does not count: DESIGN.md's v1 network factory is
        ``factory(obs_dim, n_actions, **params)``, and such a factory ignores an
        ``outputs`` it never heard of, so a distributional learner must not be
        paired with it (that pairing is a grid error before anything runs).
        """
        try:
            parameters = inspect.signature(self.factory).parameters.values()
        except (TypeError, ValueError):
            return False
        return any(p.name == keyword and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in parameters)

    def missing_params(self, params: Mapping[str, Any]) -> list[str]:
        """Factory params without a default that neither the loop nor ``params`` gives (only the grid can).

        The loop passes the contract's positionals (:data:`_POSITIONAL`, as :meth:`params`
        skips them) and the reserved keywords (:data:`RESERVED`).
        """
        try:
            signature = inspect.signature(self.factory)
        except (TypeError, ValueError):
            return []
        given = {*params, *RESERVED.get(self.kind, ())}
        missing = []
        for i, p in enumerate(signature.parameters.values()):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or i < len(_POSITIONAL[self.kind]):
                continue
            if p.default is p.empty and p.name not in given:
                missing.append(p.name)
        return missing

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise :class:`DqnbenchError` for params the factory would not accept."""
        names, accepts_any = self.params()
        unknown = [k for k in params if k not in names]
        if unknown and not accepts_any:
            allowed = ", ".join(names) or "none"
            raise DqnbenchError(
                f"{self.describe()} has no parameter {', '.join(map(repr, unknown))} (allowed: {allowed})"
            )


_POSITIONAL = {
    "network": ("obs_dim", "n_actions"),
    "replay": ("capacity", "obs_dim", "gamma"),
    "exploration": ("n_actions", "total_steps"),
    "executor": ("workers",),
    "env": ("env_id",),
    "learner": ("n_actions",),
    "optimizer": ("parameters", "lr"),
}

#: keyword params the loop passes itself: never grid params
RESERVED: dict[str, tuple[str, ...]] = {"network": ("outputs",), "replay": ("members",)}


@dataclass
class Registry:
    """All components of all plugins, by kind and name."""

    components: dict[str, dict[str, Component]] = field(default_factory=lambda: {k: {} for k in KINDS})
    duplicates: dict[tuple[str, str], list[Component]] = field(default_factory=dict)
    host: PluginHost | None = None

    @classmethod
    def from_host(cls, host: PluginHost) -> Registry:
        """Call every plugin's hooks once and index what they return."""
        registry = cls(host=host)
        for kind, hook_name in KINDS.items():
            hook = getattr(host.pm.hook, hook_name)
            # pluggy lists impls last-registered first; reverse to registration order
            for impl in reversed(hook.get_hookimpls()):
                provider = host.provider(impl.plugin_name)
                try:
                    offered = impl.function()
                    if not isinstance(offered, dict):
                        raise TypeError(f"returned {type(offered).__name__}, not a dict of factories")
                except Exception as exc:
                    host.warn(
                        f'Plugin "{provider.plugin}" from distribution {provider.distribution} '
                        f"{provider.version} failed in {hook_name}(): {type(exc).__name__}: {exc}"
                    )
                    continue
                for name, factory in offered.items():
                    registry._add(Component(kind, str(name), factory, provider))
        return registry

    def _add(self, component: Component) -> None:
        existing = self.components[component.kind].get(component.name)
        if existing is None:
            self.components[component.kind][component.name] = component
            return
        self.duplicates.setdefault((component.kind, component.name), [existing]).append(component)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> Component:
        """Resolve ``(kind, name)``; unknown or doubly-provided names raise a user error."""
        if kind not in KINDS:
            raise UnknownComponentError(f"unknown component kind {kind!r} (allowed: {', '.join(KINDS)})")
        if (kind, name) in self.duplicates:
            providers = " and ".join(
                c.provider.distribution + " " + c.provider.version + f' (plugin "{c.provider.plugin}")'
                for c in self.duplicates[(kind, name)]
            )
            raise DuplicateComponentError(f'{kind} "{name}" is provided by more than one plugin: {providers}')
        try:
            return self.components[kind][name]
        except KeyError:
            raise UnknownComponentError(unknown_message(kind, name, self.names(kind))) from None

    def all(self) -> list[Component]:
        """Every component, duplicates included, sorted by kind then name."""
        found = [c for by_name in self.components.values() for c in by_name.values()]
        found += [c for group in self.duplicates.values() for c in group[1:]]
        order = list(KINDS)
        return sorted(found, key=lambda c: (order.index(c.kind), c.name, c.provider.distribution))


def unknown_message(kind: str, name: object, known: list[str]) -> str:
    """``unknown network "mpl" (allowed: dueling, mlp; did you mean "mlp"?)``."""
    text = f'unknown {kind} "{name}" (allowed: {", ".join(known) or "none installed"}'
    close = difflib.get_close_matches(str(name), known, n=1)
    if close:
        text += f'; did you mean "{close[0]}"?'
    return text + ")"


def load_registry(load_entrypoints: bool = True, extra_plugins: tuple[Any, ...] = ()) -> Registry:
    """Plugin host + registry in one call: what commands and runs start from."""
    return Registry.from_host(get_plugin_host(load_entrypoints, extra_plugins))
