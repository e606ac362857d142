"""LeanRMSprop computes torch.optim.RMSprop's update bit for bit, dead weights (sqrt of 0) included."""

from __future__ import annotations

import copy

import pytest
import torch

from dqnbench.builtin.conv import minatar_cnn
from dqnbench.builtin.optimizers import LeanRMSprop, rmsprop
from dqnbench.plugin.obs import ObsSpec


def minatar_net() -> torch.nn.Module:
    """MinAtar's network on sparse 0/1 inputs: many weights see only zeros, so their variance stays exactly 0."""
    torch.manual_seed(0)
    return minatar_cnn(ObsSpec((4, 10, 10), "bool"), 3)


@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("eps", [0.01, 1e-8])
def test_lean_rmsprop_matches_torch_rmsprop_bit_for_bit(centered, momentum, eps):
    net = minatar_net()
    twin = copy.deepcopy(net)
    lean = rmsprop(list(net.parameters()), 2.5e-4, alpha=0.95, eps=eps, centered=centered, momentum=momentum)
    assert isinstance(lean, LeanRMSprop)
    reference = torch.optim.RMSprop(
        twin.parameters(), lr=2.5e-4, alpha=0.95, eps=eps, centered=centered, momentum=momentum
    )
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(16, 4, 10, 10, generator=generator) < 0.05
    x[:, :, :, :3] = False  # columns no filter ever sees: their hidden weights' gradients are exactly 0
    for _ in range(15):
        for p in net.parameters():  # as learners do: gradients written into the buffers the optimizer holds
            p.grad.zero_()
        net(x).square().mean().backward()
        lean.step()
        reference.zero_grad()
        twin(x).square().mean().backward()
        reference.step()
        x = x.roll(1, 0)
    assert any((p.grad == 0).any() for p in net.parameters())  # the sqrt(0) case was exercised
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(lean.state_dict()["state"][0]["square_avg"], reference.state_dict()["state"][0]["square_avg"])


def test_lean_rmsprop_takes_a_replaced_gradient_and_reads_the_learning_rate_each_step():
    net, twin = minatar_net(), minatar_net()
    lean = rmsprop(list(net.parameters()), 1e-3)
    reference = torch.optim.RMSprop(twin.parameters(), lr=1e-3)
    x = torch.rand(8, 4, 10, 10) < 0.1
    for lr in (1e-3, 5e-4):
        lean.param_groups[0]["lr"] = reference.param_groups[0]["lr"] = lr
        for p in net.parameters():
            p.grad = None  # e.g. zero_grad(set_to_none=True): the new gradient lands in a fresh tensor
        net(x).sum().backward()
        lean.step()
        reference.zero_grad()
        twin(x).sum().backward()
        reference.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_mixed_dtypes_fall_back_to_torch_rmsprop():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double())
    optimizer = rmsprop(list(net.parameters()), 0.01)
    assert type(optimizer) is torch.optim.RMSprop


@pytest.mark.parametrize("in_place", [True, False], ids=["state-copied-in-place", "load_state_dict"])
def test_lean_rmsprop_resumes_from_its_state_dict(in_place):
    """A copy restored from the state after 5 steps takes the same next 5 steps (state tensors in place or replaced)."""
    net = minatar_net()
    lean = rmsprop(list(net.parameters()), 2.5e-4, alpha=0.95, eps=0.01, centered=True, momentum=0.5)
    x = torch.rand(8, 4, 10, 10, generator=torch.Generator().manual_seed(2)) < 0.1

    def steps(model, optimizer, n):
        for _ in range(n):
            for p in model.parameters():
                p.grad.zero_()
            model(x).square().mean().backward()
            optimizer.step()

    steps(net, lean, 5)
    saved = copy.deepcopy(lean.state_dict())
    twin = copy.deepcopy(net)
    restored = rmsprop(list(twin.parameters()), 2.5e-4, alpha=0.95, eps=0.01, centered=True, momentum=0.5)
    if in_place:
        for index, values in saved["state"].items():
            for key, value in values.items():
                restored.state[restored.params[index]][key].copy_(value)
    else:
        restored.load_state_dict(saved)
    steps(net, lean, 5)
    steps(twin, restored, 5)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_stacked_members_update_as_their_own_optimizers():
    """K lock-step members' parameters stacked on a leading dimension take each member's own update."""
    generator = torch.Generator().manual_seed(3)
    members = [torch.nn.Parameter(torch.randn(16, 36, generator=generator)) for _ in range(3)]
    stacked = torch.nn.Parameter(torch.stack([m.detach() for m in members]))
    alone = [rmsprop([m], 1e-3, alpha=0.95, eps=0.01, centered=True) for m in members]
    together = rmsprop([stacked], 1e-3, alpha=0.95, eps=0.01, centered=True)
    for _ in range(5):
        grads = torch.randn(3, 16, 36, generator=generator)
        grads[:, :, :4] = 0.0  # dead weights too
        stacked.grad.copy_(grads)
        together.step()
        for member, optimizer, grad in zip(members, alone, grads):
            member.grad.copy_(grad)
            optimizer.step()
    assert torch.equal(stacked, torch.stack([m.detach() for m in members]))
