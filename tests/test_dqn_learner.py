"""The ``dqn`` learner: its hand-derived MLP gradients equal autograd's, for one run and for stacked members."""

from __future__ import annotations

import copy

import pytest
import torch

from dqnbench.agent.learning import autograd_backward
from dqnbench.agent.nets import QNetworks
from dqnbench.builtin.learners import DQNLearner, dqn, hand_derivable
from dqnbench.builtin.networks import MLP, mlp
from dqnbench.builtin.optimizers import make_adam
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.obs import ObsSpec

#: the shapes and learner settings every hand-derived step is checked against autograd with
HIDDEN = pytest.mark.parametrize("hidden", [[10], [32, 16], []])
SETTINGS = pytest.mark.parametrize(
    "loss, double, max_grad_norm",
    [("mse", False, 0.0), ("huber", True, 0.0), ("mse", False, 0.5)],
    ids=["mse", "huber-double", "clipped"],
)


def random_batch(lead: tuple[int, ...], obs_dim: int, n_actions: int, gamma: float = 0.9) -> Batch:
    return Batch(
        obs=torch.randn(*lead, obs_dim),
        actions=torch.randint(n_actions, lead),
        rewards=torch.randn(lead) * 10,  # large errors: Huber's linear part too
        next_obs=torch.randn(*lead, obs_dim),
        terminated=torch.rand(lead) < 0.2,
        weights=torch.rand(lead) + 0.5,
        indices=torch.arange(lead[-1]).expand(lead),
        discounts=torch.full(lead, gamma),
    )


def gradient_step(backward, nets: QNetworks, optimizer, batch: Batch, max_grad_norm: float):
    """The loop's gradient step (``Agent.gradient_step``) with a chosen backward (which sets the gradients)."""
    losses, priorities = backward(nets, batch)
    if max_grad_norm > 0:
        nets.clip_grad_norm(max_grad_norm)
    optimizer.step()
    return losses, priorities


def twin_nets(
    members: int | None, hidden=(16,), outputs: int = 1, obs_dim: int = 5, n_actions: int = 3
) -> tuple[QNetworks, QNetworks]:
    torch.manual_seed(0)
    modules = [mlp(obs_dim, n_actions, hidden=list(hidden), outputs=outputs) for _ in range(members or 1)]
    nets = QNetworks.of(modules, ObsSpec(obs_dim), torch.device("cpu"), stacked=members is not None)
    for value in nets.target.parameters():  # online and target nets differ
        value.data.add_(0.05 * torch.randn_like(value))
    return nets, copy.deepcopy(nets)


def assert_hand_derived_matches_autograd(learner, members, hidden=(16,), max_grad_norm=0.0, steps=5, atol=1e-6):
    """Steps of the learner's own ``backward`` and of autograd on its ``loss`` give the same losses,
    priorities and parameters (through the loop's gradient step, Adam included)."""
    by_hand, by_autograd = twin_nets(members, hidden, learner.outputs)
    assert hand_derivable(by_hand.online, learner.outputs)
    hand_opt, auto_opt = make_adam(by_hand.params, 0.01), make_adam(by_autograd.params, 0.01)
    lead = (16,) if members is None else (members, 16)
    for _ in range(steps):
        batch = random_batch(lead, 5, 3)
        hand = gradient_step(learner.backward, by_hand, hand_opt, batch, max_grad_norm)
        auto = gradient_step(lambda n, b: autograd_backward(learner, n, b), by_autograd, auto_opt, batch, max_grad_norm)
        assert hand[0].shape == lead[:-1] and hand[1].shape == lead
        torch.testing.assert_close(hand[0], auto[0], rtol=1e-5, atol=atol)
        torch.testing.assert_close(hand[1], auto[1], rtol=1e-5, atol=max(atol, 1e-5))
    for a, b in zip(by_hand.params, by_autograd.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=max(atol, 1e-6))


@HIDDEN
@SETTINGS
@pytest.mark.parametrize("members", [None, 3], ids=["single", "stacked"])
def test_hand_derived_mlp_step_matches_autograd(hidden, loss, double, max_grad_norm, members):
    learner = dqn(3, double=double, loss=loss)
    assert_hand_derived_matches_autograd(learner, members, hidden, max_grad_norm)


def test_train_takes_the_hand_derived_path_for_the_builtin_mlp(write_grid, registry, monkeypatch):
    from dqnbench.agent.loop import train
    from dqnbench.config.grid import load_grid
    from dqnbench.run.runner import bind_components, choose

    calls = []
    original = DQNLearner.mlp_backward
    monkeypatch.setattr(DQNLearner, "mlp_backward", lambda self, *a: calls.append(1) or original(self, *a))
    spec = load_grid(write_grid(steps=150), registry).runs[0]
    log = train(spec.config, spec.seed, bind_components(spec.config, choose(spec.config, registry)))
    learned = int((~torch.isnan(torch.from_numpy(log.loss))).sum())
    assert learned > 0 and len(calls) == learned


def test_only_the_mlps_own_math_is_derived_by_hand():
    """A subclass with another forward, a distributional head or image inputs learn through autograd."""

    class Scaled(MLP):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(obs)

    class Renamed(MLP):  # same forward: the hand-derived step stays valid
        pass

    assert hand_derivable(Renamed(4, 2, (8,)))
    assert not hand_derivable(Scaled(4, 2, (8,)))
    assert not hand_derivable(mlp(4, 2, outputs=51))
    assert not hand_derivable(mlp(ObsSpec((4, 10, 10), "bool"), 2))
    assert not hand_derivable(torch.nn.Sequential(torch.nn.Linear(4, 2)))


def test_a_subclass_with_its_own_forward_gets_autograd_gradients():
    class Scaled(MLP):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(obs)

    torch.manual_seed(0)
    nets = QNetworks(Scaled(4, 2, (8,)))
    reference = copy.deepcopy(nets)
    learner = dqn(2)
    batch = random_batch((16,), 4, 2)
    losses, _ = gradient_step(learner.backward, nets, make_adam(nets.params, 0.01), batch, 0.0)
    expected, _ = gradient_step(
        lambda n, b: autograd_backward(learner, n, b), reference, make_adam(reference.params, 0.01), batch, 0.0
    )
    torch.testing.assert_close(losses, expected)
    for a, b in zip(nets.params, reference.params):
        torch.testing.assert_close(a, b)


def test_bad_learner_params_raise_value_error():
    with pytest.raises(ValueError, match="loss"):
        dqn(2, loss="l1")
    with pytest.raises(ValueError, match="double"):
        dqn(2, double="yes")
