"""The dqnbench plugin module (the entry point in ``pyproject.toml`` names it).

dqnbench calls :func:`dqnbench_replays` once when it builds its registry:
component name (a grid's ``replay.name``) → factory
``factory(capacity, obs_dim, gamma, **params) -> buffer``.
"""

from __future__ import annotations

from collections.abc import Callable

import dqnbench

from dqnbench_extra_replay.combined import combined


@dqnbench.hookimpl
def dqnbench_replays() -> dict[str, Callable[..., object]]:
    return {"combined": combined}
