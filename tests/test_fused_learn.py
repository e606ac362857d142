"""The built-in MLP's hand-derived learn step equals the autograd one."""

from __future__ import annotations

import copy

import pytest
import torch

from dqnbench.plugin.batch import Batch
from dqnbench.builtin.networks import mlp
from dqnbench.config.schema import AgentConfig
from dqnbench.builtin.optimizers import make_adam
from dqnbench.agent.loop import learn_step

#: the shapes and agent settings every hand-derived step is checked against autograd with
HIDDEN = pytest.mark.parametrize("hidden", [[10], [32, 16], []])
AGENTS = pytest.mark.parametrize(
    "agent",
    [
        AgentConfig(lr=0.01, loss="mse"),
        AgentConfig(lr=0.01, loss="huber", double=True),
        AgentConfig(lr=0.01, loss="mse", max_grad_norm=0.5),
    ],
    ids=["mse", "huber-double", "clipped"],
)


def random_batch(size: int, obs_dim: int, n_actions: int, gamma: float = 0.9) -> Batch:
    return Batch(
        obs=torch.randn(size, obs_dim),
        actions=torch.randint(n_actions, (size,)),
        rewards=torch.randn(size),
        next_obs=torch.randn(size, obs_dim),
        terminated=torch.rand(size) < 0.2,
        weights=torch.rand(size) + 0.5,
        indices=torch.arange(size),
        discounts=torch.full((size,), gamma),
    )


@HIDDEN
@AGENTS
def test_fused_learn_step_matches_autograd(hidden, agent):
    torch.manual_seed(0)
    fused_net = mlp(5, 3, hidden=hidden)
    autograd_net = copy.deepcopy(fused_net)
    target = copy.deepcopy(fused_net).requires_grad_(False)
    fused_opt, autograd_opt = (
        make_adam(fused_net.parameters(), agent.lr),
        make_adam(autograd_net.parameters(), agent.lr),
    )
    for _ in range(5):
        batch = random_batch(16, 5, 3)
        batch = batch._replace(rewards=batch.rewards * 10)  # large errors: Huber's linear part too
        fused_loss, fused_td = fused_net.fused_learn_step(target, fused_opt, agent, batch)
        auto_loss, auto_td = learn_step(autograd_net, target, autograd_opt, batch, agent)
        assert fused_loss == pytest.approx(auto_loss, rel=1e-5)
        torch.testing.assert_close(fused_td, auto_td)
    for a, b in zip(fused_net.parameters(), autograd_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_train_uses_the_fused_step_for_mlp():
    from dqnbench.agent.loop import make_learner

    net = mlp(4, 2)
    learn = make_learner(net, copy.deepcopy(net), make_adam(net.parameters(), 0.01), AgentConfig())
    assert learn.func.__name__ == "fused_learn_step"
    other = torch.nn.Sequential(torch.nn.Linear(4, 2))
    assert make_learner(other, other, make_adam(other.parameters(), 0.01), AgentConfig()).func is learn_step


def test_subclass_with_its_own_forward_learns_through_autograd():
    """A plugin subclassing MLP with another forward must not get MLP's hand-derived gradients."""
    from dqnbench.builtin.networks import MLP
    from dqnbench.agent.loop import make_learner

    class Scaled(MLP):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(obs)

    class Renamed(MLP):  # same forward: the fused step stays valid
        pass

    assert Scaled(4, 2, (8,)).fused_learn_step is None
    assert Renamed(4, 2, (8,)).fused_learn_step is not None
    torch.manual_seed(0)
    net = Scaled(4, 2, (8,))
    reference = copy.deepcopy(net)
    target = copy.deepcopy(net).requires_grad_(False)
    agent = AgentConfig(lr=0.01)
    batch = random_batch(16, 4, 2)
    loss, _ = make_learner(net, target, make_adam(net.parameters(), agent.lr), agent)(batch)
    expected, _ = learn_step(reference, target, make_adam(reference.parameters(), agent.lr), batch, agent=agent)
    assert loss == pytest.approx(expected, rel=1e-6)


@HIDDEN
@AGENTS
def test_lockstep_fused_learn_step_matches_autograd(hidden, agent):
    """K stacked MLPs: the hand-derived lock-step step equals ``learn_step_lockstep`` (autograd), member by member."""
    from dqnbench.builtin.networks import mlp_lockstep
    from dqnbench.agent.lockstep import StackedQNetwork, learn_step_lockstep, make_lockstep_learner

    members, size, obs_dim, n_actions = 3, 16, 5, 3
    torch.manual_seed(0)
    nets = [mlp(obs_dim, n_actions, hidden=hidden) for _ in range(members)]
    fused_net = StackedQNetwork(nets, torch.device("cpu"), mlp_lockstep)
    autograd_net = StackedQNetwork(nets, torch.device("cpu"), mlp_lockstep)
    target = fused_net.detached_params()
    for params in (target, fused_net.params, autograd_net.params):  # members differ from their targets
        for value in params.values():
            value.data.add_(0.05 * torch.randn_like(value))
    fused_opt, autograd_opt = (
        make_adam(fused_net.parameters(), agent.lr),
        make_adam(autograd_net.parameters(), agent.lr),
    )
    autograd_net.params = {k: torch.nn.Parameter(v.detach().clone()) for k, v in fused_net.params.items()}
    autograd_opt = make_adam(autograd_net.parameters(), agent.lr)
    learn = make_lockstep_learner(fused_net, mlp_lockstep, fused_opt, agent)
    for _ in range(3):
        flat = random_batch(members * size, obs_dim, n_actions)
        batch = Batch(*(t.reshape(members, size, *t.shape[1:]) for t in flat))
        fused_losses, fused_td = learn(target, batch)
        auto_losses, auto_td = learn_step_lockstep(autograd_net, target, autograd_opt, batch, agent)
        torch.testing.assert_close(fused_losses, auto_losses, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused_td, auto_td)
    for key in fused_net.params:
        torch.testing.assert_close(fused_net.params[key], autograd_net.params[key], rtol=1e-4, atol=1e-6)
