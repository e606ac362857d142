"""Acting lazily (the explorer draws first, the forward runs only for a greedy row) changes nothing but speed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dqnbench.agent.loop import build, train_runs
from dqnbench.builtin.explorations import epsilon_greedy, epsilon_greedy_lazily, uniform
from dqnbench.config.grid import plan_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

REGISTRY = load_registry(load_entrypoints=False)


def plan(extra: dict | None = None, steps: int = 600):
    raw = {
        "experiment": {"name": "lazy", "total_steps": steps, "seeds": 1, "eval_every": 300, "eval_episodes": 2},
        "agent": {"learning_starts": 100, "batch_size": 16, "target_update": 20, "train_every": 2},
        "network": {"name": "mlp", "hidden": [16]},
        "exploration": {"name": "linear", "start": 1.0, "end": 0.1, "fraction": 0.5},
        **(extra or {}),
    }
    config = plan_grid(raw, Path("lazy.toml"), REGISTRY).runs[0].config
    return config, bind_components(config, choose(config, REGISTRY))


class SelectOnly:
    """The same explorer without ``select_lazily``: the loop's plain path (a forward every step)."""

    def __init__(self, explorer) -> None:
        self.explorer = explorer

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return self.explorer.select(q_values, step)

    def value(self, step: int):
        return self.explorer.value(step)


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0, np.array([0.2, 1.0, 0.7])])
@pytest.mark.parametrize("rows", [1, 3])
def test_lazy_epsilon_greedy_draws_and_acts_as_the_plain_one(epsilon, rows):
    if isinstance(epsilon, np.ndarray) and rows == 1:
        epsilon = epsilon[:1]
    q = torch.randn(rows, 4)
    torch.manual_seed(0)
    plain = [epsilon_greedy(q, epsilon) for _ in range(50)]
    after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    calls = []
    lazy = [epsilon_greedy_lazily(lambda: calls.append(1) or q, rows, 4, epsilon, q.device) for _ in range(50)]
    assert all(torch.equal(a, b) for a, b in zip(plain, lazy))
    assert torch.equal(torch.get_rng_state(), after_plain)
    if np.all(np.asarray(epsilon) >= 1.0):
        assert not calls  # every row explored: no forward pass


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]], ids=["single", "lockstep-3"])
def test_a_lazy_run_is_the_plain_run(seeds):
    config, components = plan()
    plain = dataclasses.replace(components, exploration=lambda n, t: SelectOnly(components.exploration(n, t)))
    stacked = len(seeds) > 1
    assert build(config, seeds, components, stacked)[0].lazy
    assert not build(config, seeds, plain, stacked)[0].lazy
    runs = [train_runs(config, seeds, c, stacked=stacked, timing=False) for c in (components, plain)]
    for lazy, eager in zip(*runs):
        for key in ("reward", "loss", "q_max", "epsilon", "episode"):
            np.testing.assert_array_equal(lazy.steps[key], eager.steps[key])
        assert lazy.evals["mean_return"] == eager.evals["mean_return"]
        assert all(torch.equal(lazy.weights[k], eager.weights[k]) for k in lazy.weights)


@pytest.mark.parametrize("extra", [{"network": {"name": "noisy"}}, {"learner": {"name": "iqn"}}], ids=["noisy", "iqn"])
def test_a_forward_that_draws_random_numbers_is_never_skipped(extra):
    config, components = plan(extra)
    agent = build(config, [0], components, stacked=False)[0]
    assert not agent.lazy  # skipping it would move the RNG stream: results would change


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_single_run_draw_is_torch_rand(dtype):
    """``uniform()`` (ε-greedy's draw on a single run's every step) writes into a kept tensor: the same numbers and
    the same RNG state as ``torch.rand(())``, in inference mode or not, whatever the default dtype."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(3)
        expected = [float(torch.rand(())) for _ in range(200)]
        after = torch.get_rng_state()
        torch.manual_seed(3)
        with torch.inference_mode():
            drawn = [uniform() for _ in range(100)]
        drawn += [uniform() for _ in range(100)]
        assert drawn == expected
        assert torch.equal(torch.get_rng_state(), after)
    finally:
        torch.set_default_dtype(default)
