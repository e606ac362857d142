"""The dqnbench plugin module (the entry point in ``pyproject.toml`` names it).

dqnbench calls :func:`dqnbench_explorations` once when it builds its registry:
component name (a grid's ``exploration.name``) → factory
``factory(n_actions, total_steps, **params) -> explorer``.
"""

from __future__ import annotations

from collections.abc import Callable

import dqnbench

from dqnbench_extra_exploration.ez_greedy import ez_greedy


@dqnbench.hookimpl
def dqnbench_explorations() -> dict[str, Callable[..., object]]:
    return {"ez_greedy": ez_greedy}
