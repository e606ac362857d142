"""Member-wise params: values that may differ between the members of one fused lock-step group.

A factory declares which of its params it can take per member with a
``memberwise`` attribute (a tuple of param names), beside its ``lockstep`` flag.
In a fused group each declared param arrives as a :class:`PerMember`, a tuple
of K values in member order, even when the values happen to be equal, so a
member never takes another code path because of another member's value.
Outside fused groups params arrive as plain values. ``docs/plugins.md`` and
``docs/sweeps.md`` say what each kind may declare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: kinds whose factories may declare member-wise params (networks and envs shape the program: never)
MEMBERWISE_KINDS = ("exploration", "learner", "optimizer", "replay")


class PerMember(tuple):
    """K values of one param, one per member of a fused group, in member order."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"PerMember{tuple.__repr__(self)}"


def declared(factory: Any) -> tuple[str, ...]:
    """The params ``factory`` declares member-wise (its ``memberwise`` attribute; none by default)."""
    names = getattr(factory, "memberwise", ())
    if isinstance(names, str) or not isinstance(names, Sequence):
        return ()
    return tuple(name for name in names if isinstance(name, str))


def as_array(value: Any, dtype: Any = np.float64) -> np.ndarray | None:
    """A :class:`PerMember` as a 1-D array of K values; None for a plain value."""
    return np.asarray(value, dtype=dtype) if isinstance(value, PerMember) else None


def each_member(*values: Any) -> list[tuple]:
    """Each value as a tuple of its members' values, all of one length K: a :class:`PerMember`'s own values, a
    plain value repeated (K is the :class:`PerMember` values' length; 1 when there are none)."""
    size = max((len(v) for v in values if isinstance(v, PerMember)), default=1)
    return [tuple(v) if isinstance(v, PerMember) else (v,) * size for v in values]
