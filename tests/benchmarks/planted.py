"""Test-only: a network component made slower on purpose, to prove ``bench-compare`` catches a real slowdown.

``planted_mlp`` is the built-in ``mlp`` whose forward, when the environment
variable ``DQNBENCH_PLANTED_SLOWDOWN`` is set (e.g. ``0.3``), busy-waits after
the real work until it has taken ``1 + slowdown`` times as long, on whatever
machine it runs: a component that does 30 % more work. Nothing else reads the
variable. The module is a dqnbench plugin (registered in-process by the
benchmark below) and holds that benchmark; its name does not start with
``test_``, so the suite does not collect it: ``tests/test_benchcompare.py``
runs it explicitly, in pytest subprocesses with and without the variable.
"""

from __future__ import annotations

import os
import sys
import time

import pytest
import torch

import dqnbench
from dqnbench.builtin.networks import MLP
from dqnbench.plugin.registry import load_registry

ENV_VAR = "DQNBENCH_PLANTED_SLOWDOWN"
SLOWDOWN = float(os.environ.get(ENV_VAR, "0") or 0)
BATCH = 32


class PlantedMLP(MLP):
    """``mlp``, ``1 + SLOWDOWN`` times slower per forward."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        q_values = super().forward(obs)
        if SLOWDOWN > 0:
            deadline = start + (time.perf_counter() - start) * (1.0 + SLOWDOWN)
            while time.perf_counter() < deadline:
                pass
        return q_values


def planted_mlp(obs_dim: int, n_actions: int, hidden: list[int] | tuple[int, ...] = (64, 64)) -> PlantedMLP:
    return PlantedMLP(obs_dim, n_actions, tuple(hidden))


@dqnbench.hookimpl
def dqnbench_networks() -> dict:
    return {"planted_mlp": planted_mlp}


@pytest.mark.benchmark(group="planted")
def test_planted_network_forward(benchmark):
    """The planted component's forward on a batch of 32 observations (what the slowdown multiplies)."""
    registry = load_registry(load_entrypoints=False, extra_plugins=(sys.modules[__name__],))
    net = registry.get("network", "planted_mlp").factory(4, 2)
    obs = torch.randn(BATCH, 4, generator=torch.Generator().manual_seed(0))
    benchmark.extra_info.update(
        measured="planted network forward", kind="network", component="planted_mlp", batch=BATCH, steps=1,
        planted_slowdown=SLOWDOWN,
    )  # fmt: skip
    with torch.no_grad():
        q_values = benchmark(net, obs)
    assert q_values.shape == (BATCH, 2)
