"""The dqnbench plugin module (the entry point in ``pyproject.toml`` names it).

dqnbench calls :func:`dqnbench_networks` once when it builds its registry and
gets a dict of component names (what a grid's ``network.name`` says) to
factories ``factory(obs_dim, n_actions, **params) -> torch.nn.Module``. The
factories' keyword params, each with a default, are the keys a grid may set.
"""

from __future__ import annotations

from collections.abc import Callable

import dqnbench

from dqnbench_extra_networks.networks import layernorm_mlp, residual_mlp


@dqnbench.hookimpl
def dqnbench_networks() -> dict[str, Callable[..., object]]:
    return {"layernorm_mlp": layernorm_mlp, "residual_mlp": residual_mlp}
