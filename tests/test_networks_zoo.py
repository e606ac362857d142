"""The dueling and noisy Q-networks: their mathematics, not only their shapes."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from dqnbench.builtin.dueling import DuelingNetwork, dueling
from dqnbench.builtin.noisy import NoisyLinear, NoisyNetwork, noisy

FACTORIES = {"dueling": dueling, "noisy": noisy, "noisy_dueling": lambda *a, **k: noisy(*a, dueling=True, **k)}


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


def _set_linear(layer: nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_is_batch_by_actions(name: str, mode: str) -> None:
    net = FACTORIES[name](4, 3)
    getattr(net, mode)()
    for batch in (1, 7):
        q = net(torch.randn(batch, 4))
        assert q.shape == (batch, 3)
        assert q.dtype == torch.float32


@pytest.mark.parametrize("name", FACTORIES)
def test_body_ends_at_the_last_hidden_activation(name: str) -> None:
    net = FACTORIES[name](4, 2, hidden=[16, 8])
    assert isinstance(net.body[-1], nn.ReLU)
    assert net.body(torch.randn(5, 4)).shape == (5, 8)


@pytest.mark.parametrize("name", FACTORIES)
def test_weights_round_trip_through_state_dict(name: str) -> None:
    net, copy = FACTORIES[name](3, 2), FACTORIES[name](3, 2)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    obs = torch.randn(6, 3)
    torch.testing.assert_close(copy.eval()(obs), net.eval()(obs), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dueling", {"hidden": [0]}),
        ("dueling", {"stream_hidden": -1}),
        ("dueling", {"stream_hidden": 1.5}),
        ("noisy", {"hidden": [8, -2]}),
        ("noisy", {"sigma0": -0.1}),
        ("noisy", {"sigma0": "big"}),
        ("noisy", {"dueling": 1}),
    ],
)
def test_bad_params_raise_value_error(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        FACTORIES[name](4, 2, **params)


# --- dueling -----------------------------------------------------------------


def test_dueling_q_is_value_plus_advantage_minus_mean_on_a_hand_example() -> None:
    net = dueling(2, 3, hidden=[2], stream_hidden=0)
    _set_linear(net.body[0], [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # features = relu(obs)
    _set_linear(net.value[0], [[1.0, 1.0]], [0.5])  # V = f1 + f2 + 0.5
    # A = (f1, f2, f1 + f2)
    _set_linear(net.advantage[0], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, 0.0])
    q = net(torch.tensor([[1.0, 2.0], [-1.0, 4.0]]))
    # row 0: f = (1, 2), V = 3.5, A = (1, 2, 3), mean 2 -> Q = 3.5 + (-1, 0, 1)
    # row 1: f = (0, 4), V = 4.5, A = (0, 4, 4), mean 8/3 -> Q = 4.5 + (-8/3, 4/3, 4/3)
    expected = torch.tensor([[2.5, 3.5, 4.5], [4.5 - 8 / 3, 4.5 + 4 / 3, 4.5 + 4 / 3]])
    torch.testing.assert_close(q, expected)


def test_dueling_mean_q_over_actions_is_the_value_stream() -> None:
    net = DuelingNetwork(5, 4, hidden=(32,), stream_hidden=16)
    obs = torch.randn(10, 5)
    value = net.value(net.body(obs)).squeeze(1)
    torch.testing.assert_close(net(obs).mean(dim=1), value)


def test_dueling_streams_are_hidden_layers_of_stream_hidden_units() -> None:
    net = dueling(4, 6, hidden=[32], stream_hidden=20)
    assert [m.out_features for m in net.value if isinstance(m, nn.Linear)] == [20, 1]
    assert [m.out_features for m in net.advantage if isinstance(m, nn.Linear)] == [20, 6]


# --- noisy -------------------------------------------------------------------


def test_noisy_resamples_in_training_and_is_deterministic_in_evaluation() -> None:
    net = noisy(4, 3)
    obs = torch.randn(5, 4)
    net.train()
    with torch.no_grad():
        first, second = net(obs), net(obs)
    assert not torch.allclose(first, second)
    net.eval()
    torch.testing.assert_close(net(obs), net(obs), rtol=0, atol=0)


def test_noisy_evaluation_uses_the_mean_weights() -> None:
    layer = NoisyLinear(3, 2, sigma0=0.5).eval()
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)


def test_noisy_with_zero_sigma_is_noiseless_in_training() -> None:
    net = noisy(4, 3, sigma0=0.0)
    obs = torch.randn(5, 4)
    torch.testing.assert_close(net.train()(obs), net.eval()(obs))


def test_noisy_initialisation_follows_the_factorised_scheme() -> None:
    layer = NoisyLinear(16, 4, sigma0=0.4)
    bound = 1 / math.sqrt(16)
    assert layer.weight_mu.abs().max() <= bound and layer.bias_mu.abs().max() <= bound
    torch.testing.assert_close(layer.weight_sigma, torch.full((4, 16), 0.4 * bound))
    torch.testing.assert_close(layer.bias_sigma, torch.full((4,), 0.4 * bound))


def test_noisy_weight_noise_is_factorised_rank_one_and_shared_by_the_batch() -> None:
    """Feeding the identity matrix reads the whole sampled weight matrix out of one forward.

    ``(W - μ_W) / σ_W`` must be the outer product ``f(ε_out) f(ε_in)ᵀ`` (rank one),
    and every row of the batch must have seen the same noise (it is one matrix).
    """
    layer = NoisyLinear(5, 3, sigma0=0.5).train()
    with torch.no_grad():
        layer.bias_mu.zero_()
        layer.bias_sigma.zero_()
        sampled_weight = layer(torch.eye(5)).T  # (3, 5): row i = out unit i
    noise = (sampled_weight - layer.weight_mu) / layer.weight_sigma
    singular = torch.linalg.svdvals(noise.double())
    assert singular[0] > 0.1
    assert singular[1:].max() < 1e-5 * singular[0]  # rank one up to float32 rounding


def test_noisy_output_variance_matches_factorised_noise() -> None:
    """With μ = 0 and input e_j, output i is σ f(ε_out,i) f(ε_in,j): variance σ² (E|ε|)² = σ² 2/π.

    20 000 resamples; the sample variance of a product of two independent
    ``f(ε)`` (E f⁴ = E ε² = 1) has relative standard error
    √((1 − (2/π)²)/n)/(2/π) ≈ 0.9 %, so the 5 % tolerance is over 5 σ; the mean's
    standard error is √(σ² 2/π / n) ≈ 0.002, so 0.01 is 5 σ.
    """
    layer = NoisyLinear(2, 3, sigma0=0.5).train()
    with torch.no_grad():
        layer.weight_mu.zero_()
        layer.bias_mu.zero_()
        layer.bias_sigma.zero_()
        x = torch.tensor([[1.0, 0.0]])
        samples = torch.cat([layer(x) for _ in range(20_000)])
    sigma = 0.5 / math.sqrt(2)
    torch.testing.assert_close(samples.var(dim=0), torch.full((3,), sigma**2 * 2 / math.pi), rtol=0.05, atol=0)
    torch.testing.assert_close(samples.mean(dim=0), torch.zeros(3), rtol=0, atol=0.01)


def test_noisy_gradients_reach_mean_and_scale() -> None:
    net = NoisyNetwork(3, 2, hidden=(8,))
    net(torch.randn(4, 3)).sum().backward()
    for layer in (net.body[0], net.out):
        assert layer.weight_mu.grad is not None and layer.weight_mu.grad.abs().sum() > 0
        assert layer.weight_sigma.grad is not None and layer.weight_sigma.grad.abs().sum() > 0


@pytest.mark.parametrize("outputs", [1, 5])
def test_noisy_dueling_combines_value_and_advantage_per_output(outputs: int) -> None:
    """Rainbow's network: noisy value and advantage streams, Q = V + A − mean_a A for each atom."""
    net = noisy(4, 3, hidden=[16], dueling=True, outputs=outputs)
    assert not hasattr(net, "out") and net.advantage.out_features == 3 * outputs
    obs = torch.randn(6, 4)
    q = net.eval()(obs)
    assert q.shape == ((6, 3) if outputs == 1 else (6, 3, outputs))
    value = net.value(net.body(obs))  # (6, outputs)
    mean_over_actions = q.mean(dim=1)
    torch.testing.assert_close(mean_over_actions, value if outputs > 1 else value.squeeze(1))
    net.train()
    assert not torch.equal(net(obs), net(obs))  # noisy streams: fresh noise each forward


def test_noisy_dueling_stacks_natively_for_lockstep() -> None:
    from dqnbench.agent.nets import network_problem
    from dqnbench.plugin.obs import ObsSpec

    problem, native = network_problem(lambda o, a: noisy(o, a, hidden=[8], dueling=True, outputs=4), ObsSpec(4), 2)
    assert problem is None and native
