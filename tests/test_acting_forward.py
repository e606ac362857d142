"""Acting through a network's manual path (``QNetworks.rows``) gives the module's numbers and draws.

Where the network offers the manual path (``mlp``, ``dueling``, ``noisy``), the act's forward runs its
``manual_forward`` (no module calls) instead of ``module(obs)``: a speed path of the acting step. These
tests hold it to the module path it replaces: the same outputs and the same random draws (noisy layers
sample their noise on both), and whole runs, single and lock-step, equal bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dqnbench.agent.nets as nets_module
from dqnbench.agent.loop import build, train_runs
from dqnbench.agent.nets import probe_observations
from tests.test_lazy_acting import plan

NETWORKS = ["mlp", "dueling", "noisy"]


@pytest.mark.parametrize("learner", ["dqn", "c51"])
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]], ids=["single", "lockstep-3"])
def test_rows_by_the_manual_path_equal_the_module(network, learner, seeds):
    config, components = plan({"network": {"name": network}, "learner": {"name": learner}})
    agent = build(config, seeds, components, stacked=len(seeds) > 1)[0]
    nets = agent.nets
    assert nets._manual  # these networks offer the manual path: acting takes it
    obs = probe_observations(agent.obs_spec, (len(seeds),)) + torch.randn(len(seeds), *agent.obs_spec.shape)
    outputs = []
    for manual in (True, False):
        nets._manual = manual
        torch.manual_seed(3)
        with torch.inference_mode():
            outputs.append((nets.rows(obs), torch.get_rng_state()))
    (manual_out, manual_rng), (module_out, module_rng) = outputs
    assert manual_out.shape[0] == len(seeds) and torch.equal(manual_out, module_out)
    assert torch.equal(manual_rng, module_rng)


@pytest.mark.parametrize(
    ("network", "seeds"), [("mlp", [0]), ("mlp", [0, 1, 2]), ("noisy", [0]), ("dueling", [0, 1])],
    ids=["mlp-single", "mlp-lockstep-3", "noisy-single", "dueling-lockstep-2"],
)  # fmt: skip
def test_a_run_acting_by_the_manual_path_is_the_module_run(monkeypatch, network, seeds):
    config, components = plan({"network": {"name": network}})
    stacked = len(seeds) > 1
    manual = train_runs(config, seeds, components, stacked=stacked, timing=False)
    monkeypatch.setattr(nets_module, "offers_manual_path", lambda network: False)
    assert not build(config, seeds, components, stacked)[0].nets._manual
    module = train_runs(config, seeds, components, stacked=stacked, timing=False)
    for a, b in zip(manual, module):
        for key in ("reward", "loss", "q_max", "epsilon", "episode"):
            np.testing.assert_array_equal(a.steps[key], b.steps[key])
        assert a.evals["mean_return"] == b.evals["mean_return"]
        assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
