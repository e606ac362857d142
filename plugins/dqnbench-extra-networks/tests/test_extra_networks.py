"""dqnbench-extra-networks: the network contract, the plugin's registration, a tiny grid.

Everything goes through dqnbench's public API (``dqnbench.run_grid`` and the
registry dqnbench builds from installed entry points), the way dqnbench uses
the plugin, so these tests only pass once the package is installed.
"""

from __future__ import annotations

import io
import re
import textwrap

import dqnbench
import pytest
import torch
from dqnbench.plugin.registry import load_registry

import dqnbench_extra_networks
from dqnbench_extra_networks import layernorm_mlp, residual_mlp

NAMES = ("layernorm_mlp", "residual_mlp")


def canonical(name: str) -> str:
    """A distribution name normalised as in PEP 503, to compare names from metadata."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.mark.parametrize("name", NAMES)
def test_installed_entry_point_provides_the_network(registry, name):
    component = registry.get("network", name)
    assert canonical(component.distribution) == "dqnbench-extra-networks"
    assert component.version == dqnbench_extra_networks.__version__ == "0.1.0"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("batch", "obs_dim", "n_actions"), [(1, 4, 2), (32, 8, 5)])
def test_forward_maps_float32_observations_to_q_values(registry, name, batch, obs_dim, n_actions):
    net = registry.get("network", name).factory(obs_dim, n_actions)
    q_values = net(torch.randn(batch, obs_dim))
    assert q_values.shape == (batch, n_actions) and q_values.dtype == torch.float32
    assert torch.isfinite(q_values).all()
    q_values.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_weights_round_trip_through_state_dict(registry, name, tmp_path):
    factory = registry.get("network", name).factory
    net, fresh = factory(4, 2), factory(4, 2)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    obs = torch.randn(3, 4)
    assert torch.equal(net(obs), fresh(obs))


def test_body_ends_at_the_representation_the_head_reads():
    for net, width in ((layernorm_mlp(4, 2, hidden=[32, 16]), 16), (residual_mlp(4, 2, width=24), 24)):
        obs = torch.randn(5, 4)
        features = net.body(obs)
        assert features.shape == (5, width)
        assert torch.equal(net.out(features), net(obs))


def test_layernorm_keeps_q_values_bounded_however_large_the_observation():
    torch.manual_seed(0)
    net = layernorm_mlp(4, 2, hidden=[16])
    small, huge = net(torch.randn(8, 4)), net(1e6 * torch.randn(8, 4))
    # After LayerNorm each feature is O(1), so |Q| is bounded by the head's weights.
    bound = net.out.weight.abs().sum(dim=1).max() * 16**0.5 + net.out.bias.abs().max()
    assert huge.abs().max() <= bound and small.abs().max() <= bound


def test_residual_blocks_add_to_an_identity_path():
    net = residual_mlp(4, 2, width=8, blocks=1)
    block = net.body[1]
    for p in block.mlp[-1].parameters():  # zero the block's output layer: it becomes the identity
        torch.nn.init.zeros_(p)
    x = torch.randn(3, 8)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        (layernorm_mlp, {"hidden": [64, 0]}, "hidden widths"),
        (residual_mlp, {"width": 0}, "width"),
        (residual_mlp, {"blocks": -1}, "blocks"),
        (residual_mlp, {"expansion": 1.5}, "expansion"),
    ],
)
def test_bad_params_raise_value_errors_naming_the_param(factory, params, message):
    with pytest.raises(ValueError, match=message):
        factory(4, 2, **params)


def test_a_grid_trains_both_networks_next_to_the_builtin_mlp(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        textwrap.dedent(
            """
            [experiment]
            name = "extra-networks"
            total_steps = 300
            seeds = 1
            eval_every = 0
            eval_episodes = 2

            [agent]
            learning_starts = 100
            batch_size = 16

            [network.mlp]
            hidden = [16]

            [network.layernorm_mlp]
            hidden = [16]

            [network.residual_mlp]
            width = 16
            blocks = 1

            [grid]
            "network.name" = ["mlp", "layernorm_mlp", "residual_mlp"]
            """
        ),
        encoding="utf-8",
    )
    results = dqnbench.run_grid(
        grid, out=tmp_path / "results", executor="serial", quiet=True, stream=io.StringIO(), plots=False
    )
    assert sorted(results.runs["network.name"]) == ["layernorm_mlp", "mlp", "residual_mlp"]
    assert set(results.runs.status) == {"ok"}, results.runs.error.tolist()
