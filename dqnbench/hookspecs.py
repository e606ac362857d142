"""Compatibility path: the hook specifications live in :mod:`dqnbench.plugin.hookspecs`."""

from dqnbench.plugin.hookspecs import PROJECT, hookimpl, hookspec

__all__ = ["PROJECT", "hookimpl", "hookspec"]
