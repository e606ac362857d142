"""What a component's grid param may hold, read from its factory's type hints.

A factory is only built when the plan is checked, and a value of the wrong type
(``hidden = "64"``, ``fraction = "x"``) then fails somewhere inside it, with
Python's words (``'<=' not supported between instances of 'float' and 'str'``)
or, worse, no failure at all (a string is a sequence: ``"64"`` became the
widths ``['6', '4']``). Where the factory annotates the param with plain TOML
types, the value is checked against the annotation first and the grid error
names the key the value came from. Annotations this module cannot judge
(classes of the plugin's own, forward references it cannot resolve, a factory
without hints) are left to the factory.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import types
import typing
from typing import Any

#: what a grid message calls each plain type
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)


def _hints(factory: Any) -> dict[str, Any]:
    """Each param's annotation, resolved one by one: one it cannot resolve is skipped, not all of them."""
    try:
        return _cached_hints(factory)
    except TypeError:  # an unhashable callable object as the factory
        return _cached_hints.__wrapped__(factory)


@functools.cache
def _cached_hints(factory: Any) -> dict[str, Any]:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if isinstance(factory, type):
        function = factory.__init__
    elif inspect.isroutine(factory):
        function = factory
    else:  # a callable object: its class's __call__
        function = type(factory).__call__
    function = inspect.unwrap(function)
    namespace = getattr(function, "__globals__", {})
    hints = {}
    for name, parameter in parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):  # ``from __future__ import annotations``: what typing.get_type_hints does
            try:
                annotation = eval(annotation, namespace)  # noqa: S307 - the plugin's own annotation text
            except Exception:  # noqa: BLE001 - a name only the type checker sees
                continue
        if annotation is not parameter.empty:
            hints[name] = annotation
    return hints


def expected_type(factory: Any, key: str, value: Any) -> str | None:
    """What the factory's ``key`` must be (``"a list of integers"``) when ``value`` does not fit its annotation."""
    hint = _hints(factory).get(key)
    try:
        if hint is None or not _judgeable(hint) or fits(value, hint):
            return None
        return describe(hint)
    except Exception:  # noqa: BLE001 - an annotation no type checker would accept either: the factory judges
        return None


def _args(hint: Any) -> tuple[Any, ...]:
    return tuple(a for a in typing.get_args(hint) if a is not type(None))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _judgeable(hint: Any) -> bool:
    """Only annotations built from TOML's own types (and sequences, unions, literals of them) are checked."""
    origin = typing.get_origin(hint)
    if hint in _NAMES:
        return True
    if origin is typing.Literal:
        return True
    if _is_union(hint):
        return all(_judgeable(a) for a in _args(hint))
    if origin in _SEQUENCES or hint in _SEQUENCES:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return all(_judgeable(a) for a in args)
    return False


def fits(value: Any, hint: Any) -> bool:
    """Can a TOML ``value`` be ``hint`` (an int is a float, a bool is no int, a list is a sequence)?"""
    origin = typing.get_origin(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if _is_union(hint):
        return any(fits(value, a) for a in _args(hint))
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, list):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(hint):
            return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
        return not args or all(fits(v, args[0]) for v in value)
    return True


def describe(hint: Any) -> str:
    """What a grid message calls values of ``hint``: ``"an integer"``, ``"a list of numbers"``."""
    origin = typing.get_origin(hint)
    if hint in _NAMES:
        return _NAMES[hint]
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if _is_union(hint):
        return " or ".join(describe(a) for a in _args(hint))
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(hint):
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if args:
        return f"a list of {_plural(describe(args[0]))}"
    return "a list"


def _plural(name: str) -> str:
    return {"an integer": "integers", "a number": "numbers", "a string": "strings", "true or false": "booleans"}.get(
        name, name
    )
