"""LeanAdam computes torch.optim.Adam(fused=True)'s update exactly."""

from __future__ import annotations

import copy

import torch

from dqnbench.builtin.networks import mlp
from dqnbench.builtin.optimizers import LeanAdam, TorchAdam, make_adam


def test_lean_adam_matches_torch_fused_adam_bit_for_bit():
    torch.manual_seed(0)
    net = mlp(4, 2, hidden=[10])
    twin = copy.deepcopy(net)
    lean = make_adam(net.parameters(), 0.01)
    assert isinstance(lean, LeanAdam)
    reference = torch.optim.Adam(twin.parameters(), lr=0.01, fused=True)
    for _ in range(20):
        x = torch.randn(32, 4)
        lean.zero_grad()
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
