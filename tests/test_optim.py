"""LeanAdam computes torch.optim.Adam(fused=True)'s update exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from dqnbench.builtin.networks import mlp
from dqnbench.builtin.optimizers import LeanAdam, TorchAdam, adam, make_adam, rmsprop


@pytest.mark.parametrize("eps, betas", [(1e-8, (0.9, 0.999)), (1.5e-4, (0.8, 0.99))])
def test_lean_adam_matches_torch_fused_adam_bit_for_bit(eps, betas):
    torch.manual_seed(0)
    net = mlp(4, 2, hidden=[10])
    twin = copy.deepcopy(net)
    lean = adam(list(net.parameters()), 0.01, eps=eps, betas=list(betas))  # as a grid gives them
    assert isinstance(lean, LeanAdam)
    reference = torch.optim.Adam(twin.parameters(), lr=0.01, betas=betas, eps=eps, fused=True)
    for _ in range(20):
        x = torch.randn(32, 4)
        for p in net.parameters():  # as learners do: gradients written into the buffers the optimizer holds
            p.grad.zero_()
        net(x).square().mean().backward()
        lean.step()
        reference.zero_grad()
        twin(x).square().mean().backward()
        reference.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_mixed_dtypes_fall_back_to_torch_adam():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    assert isinstance(make_adam(net.parameters(), 0.01), TorchAdam)


def test_rmsprop_is_torch_rmsprop_with_the_grid_params():
    net = mlp(4, 2, hidden=[10])
    optimizer = rmsprop(list(net.parameters()), 1e-3, alpha=0.95, eps=0.01, centered=True)
    assert isinstance(optimizer, torch.optim.RMSprop)
    group = optimizer.param_groups[0]
    assert (group["alpha"], group["eps"], group["centered"], group["momentum"]) == (0.95, 0.01, True, 0.0)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda p: adam(p, 0.01, eps=0.0), "eps"),
        (lambda p: adam(p, 0.01, betas=[0.9]), "betas"),
        (lambda p: adam(p, 0.01, betas=[0.9, 1.0]), r"betas\[1\]"),
        (lambda p: rmsprop(p, 0.01, alpha=1.5), "alpha"),
        (lambda p: rmsprop(p, 0.01, centered="yes"), "centered"),
        (lambda p: rmsprop(p, 0.01, momentum=-1), "momentum"),
    ],
)
def test_bad_optimizer_params_raise_value_error_naming_the_param(build, match):
    with pytest.raises(ValueError, match=match):
        build(list(mlp(4, 2).parameters()))
