"""Compatibility path: the registry lives in :mod:`dqnbench.plugin.registry` (generated plugins import this one)."""

from dqnbench.plugin.registry import Component, Registry, load_registry, unknown_message

__all__ = ["Component", "Registry", "load_registry", "unknown_message"]
