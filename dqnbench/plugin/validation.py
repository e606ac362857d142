"""Checks of component params, shared by the built-ins and open to plugins.

A factory that refuses a value raises :class:`ParamError`, which carries the
param's name, so the run's error (or the pre-flight's exit 2) can name the grid
key it came from. It is a ``ValueError``, so code that catches those still does.
"""

from __future__ import annotations

import math
import numbers


class ParamError(ValueError):
    """A component param whose value the factory refuses: ``key`` is the param, the message says why."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key} {message}")


def _number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_probability(key: str, value: object) -> float:
    """``value`` as a float in [0, 1]; bools and non-numbers are refused."""
    if not _number(value) or not 0.0 <= float(value) <= 1.0:
        raise ParamError(key, f"must be in [0, 1], got {value!r}")
    return float(value)


def check_positive(key: str, value: object) -> float:
    """``value`` as a finite float > 0; bools and non-numbers are refused."""
    if not _number(value) or not 0.0 < float(value) < math.inf:
        raise ParamError(key, f"must be a positive number, got {value!r}")
    return float(value)
