"""The learn step's manual path (a network's hand-derived gradients under the learner's autograd loss) equals
autograd through the whole network: every built-in network that offers it, one run and stacked members, fused
members' optimizers, whole runs; and who takes it."""

from __future__ import annotations

import copy

import pytest
import torch

from dqnbench.agent import learning
from dqnbench.agent.learning import (
    AUTOGRAD,
    HAND_DERIVED,
    LearnerBase,
    autograd_backward,
    learn_path,
    offers_manual_path,
    takes_manual_path,
)
from dqnbench.agent.nets import QNetworks, VmapStack
from dqnbench.builtin.dueling import DuelingNetwork, dueling
from dqnbench.builtin.learners import dqn, munchausen
from dqnbench.builtin.member_optimizers import MemberAdam
from dqnbench.builtin.networks import MLP, mlp
from dqnbench.builtin.noisy import noisy
from dqnbench.builtin.optimizers import make_adam
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss
from dqnbench.plugin.obs import ObsSpec

#: the built-in networks that offer the manual path, small
NETWORKS = {
    "mlp": lambda obs, n, outputs, hidden: mlp(obs, n, hidden=list(hidden), outputs=outputs),
    "dueling": lambda obs, n, outputs, hidden: dueling(obs, n, hidden=list(hidden), stream_hidden=8, outputs=outputs),
    "noisy": lambda obs, n, outputs, hidden: noisy(obs, n, hidden=list(hidden), outputs=outputs),
    "noisy-dueling": lambda obs, n, outputs, hidden: noisy(obs, n, hidden=list(hidden), outputs=outputs, dueling=True),
}
SETTINGS = pytest.mark.parametrize(
    "loss, double, max_grad_norm",
    [("mse", False, 0.0), ("huber", True, 0.0), ("mse", False, 0.5)],
    ids=["mse", "huber-double", "clipped"],
)
MEMBERS = pytest.mark.parametrize("members", [None, 3], ids=["single", "stacked"])


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


def gradient_step(backward, nets: QNetworks, optimizer, batch: Batch, max_grad_norm: float, seen=None):
    """The loop's gradient step (``Agent.gradient_step``) with a chosen backward (which sets the gradients);
    ``seen`` gets a copy of the gradients backward set."""
    losses, priorities = backward(nets, batch)
    if seen is not None:
        seen[:] = [p.grad.clone() for p in nets.params]
    if max_grad_norm > 0:
        nets.clip_grad_norm(max_grad_norm)
    optimizer.step()
    return losses, priorities


def twin_nets(
    members: int | None, hidden=(16,), outputs: int = 1, obs_dim: int = 5, n_actions: int = 3, network: str = "mlp"
) -> tuple[QNetworks, QNetworks]:
    torch.manual_seed(0)
    build = NETWORKS[network]
    modules = [build(obs_dim, n_actions, outputs, hidden) for _ in range(members or 1)]
    nets = QNetworks.of(modules, ObsSpec(obs_dim), torch.device("cpu"), stacked=members is not None)
    for value in nets.target.parameters():  # online and target nets differ
        value.data.add_(0.05 * torch.randn_like(value))
    return nets, copy.deepcopy(nets)


def seeded(backward, seed: int):
    """``backward`` with torch's RNG at ``seed``: both paths draw the same noise (noisy nets, iqn's levels)."""

    def call(nets, batch):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return backward(nets, batch)

    return call


def assert_manual_path_matches_autograd(
    learner, members, hidden=(16,), max_grad_norm=0.0, steps=5, atol=1e-6, network="mlp", optimizer=None
):
    """Steps of the learner's ``backward`` (the network's manual path) and of autograd on its ``loss`` give the same
    gradients, losses and priorities, and parameters within float tolerance (the paths round differently, and Adam
    magnifies that on gradients near 0), through the loop's gradient step, the optimizer included."""
    manual, auto = twin_nets(members, hidden, learner.outputs, network=network)
    assert takes_manual_path(learner, manual) and learn_path(learner, manual) == HAND_DERIVED
    make = optimizer or (lambda params: make_adam(params, 0.01))
    manual_opt, auto_opt = make(manual.params), make(auto.params)
    lead = (16,) if members is None else (members, 16)
    got_grads, want_grads = [], []
    for step in range(steps):
        batch = random_batch(lead, 5, 3)
        got = gradient_step(seeded(learner.backward, step), manual, manual_opt, batch, max_grad_norm, got_grads)
        want = gradient_step(
            seeded(lambda n, b: autograd_backward(learner, n, b), step),
            auto,
            auto_opt,
            batch,
            max_grad_norm,
            want_grads,
        )
        for a, b in zip(got_grads, want_grads):  # the same parameters at step 0, after that within rounding
            torch.testing.assert_close(a, b, rtol=1e-5 if step == 0 else 1e-3, atol=1e-6 if step == 0 else 1e-5)
        assert got[0].shape == lead[:-1] and got[1].shape == lead
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=atol)
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=max(atol, 1e-5))
    for a, b in zip(manual.params, auto.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=max(atol, 3e-5))


@pytest.mark.parametrize("network", list(NETWORKS))
@SETTINGS
@MEMBERS
def test_manual_path_matches_autograd(network, loss, double, max_grad_norm, members):
    learner = dqn(3, double=double, loss=loss)
    assert_manual_path_matches_autograd(learner, members, (16,), max_grad_norm, network=network)


@pytest.mark.parametrize("hidden", [[10], [32, 16], []], ids=["10", "32-16", "linear"])
@pytest.mark.parametrize("network", ["mlp", "dueling", "noisy-dueling"])
@MEMBERS
def test_manual_path_matches_autograd_at_every_depth(hidden, network, members):
    assert_manual_path_matches_autograd(dqn(3, loss="huber"), members, hidden, network=network, steps=3)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_fused_members_optimizers_take_the_manual_paths_gradients(network):
    """A fused group's per-member Adam holds the gradients as views of one flat buffer: written in place."""

    def member_adam(params):
        return MemberAdam(params, lr=[0.01, 0.003, 0.02], betas=[(0.9, 0.999)] * 3, eps=[1e-8, 1e-6, 1e-8])

    learner = dqn(3, loss="huber")
    assert_manual_path_matches_autograd(learner, 3, max_grad_norm=0.5, network=network, optimizer=member_adam)


class TwiceOnline(LearnerBase):
    """DQN's loss plus a second reading of the online network with gradients (an auxiliary term)."""

    loss_on_outputs = True

    def __init__(self) -> None:
        self.rule = dqn(3)

    def loss(self, nets, batch: Batch) -> LearnerLoss:
        losses, priorities = self.rule.loss(nets, batch)
        return LearnerLoss(losses + 0.1 * nets.online(batch.next_obs).square().mean(dim=-1), priorities)


@pytest.mark.parametrize("network", ["mlp", "noisy"])
@MEMBERS
def test_a_loss_that_reads_the_online_network_twice_gets_both_gradients(network, members):
    assert_manual_path_matches_autograd(TwiceOnline(), members, network=network, steps=3)


def test_without_autograds_engine_entry_the_wrapper_gives_the_same_gradients(monkeypatch):
    monkeypatch.setattr(learning, "_ENGINE", None)
    assert_manual_path_matches_autograd(dqn(3, double=True), 3, network="dueling", steps=2)


def test_train_takes_the_manual_path_of_every_network_that_offers_it(write_grid, registry, monkeypatch):
    from dqnbench.agent.loop import train
    from dqnbench.builtin.noisy import NoisyNetwork
    from dqnbench.config.grid import load_grid
    from dqnbench.run.runner import bind_components, choose

    for cls, name in ((MLP, "mlp"), (DuelingNetwork, "dueling"), (NoisyNetwork, "noisy")):
        calls: list[int] = []
        original = cls.manual_backward
        monkeypatch.setattr(cls, "manual_backward", lambda self, *a, f=original, c=calls: c.append(1) or f(self, *a))
        grid = write_grid(f'[network]\nname = "{name}"\n', steps=150)
        grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", "", 1))
        spec = load_grid(grid, registry).runs[0]
        log = train(spec.config, spec.seed, bind_components(spec.config, choose(spec.config, registry)))
        learned = int((~torch.isnan(torch.from_numpy(log.loss))).sum())
        assert learned > 0 and len(calls) == learned, name
        assert log.learn_path == HAND_DERIVED


@pytest.mark.parametrize("network", ["mlp", "dueling", "noisy"])
def test_a_whole_run_on_the_manual_path_matches_autograd(write_grid, registry, monkeypatch, network):
    """Same losses and weights within float tolerance over a short run (the paths round differently)."""
    from dqnbench.agent.loop import train
    from dqnbench.config.grid import load_grid
    from dqnbench.run.runner import bind_components, choose

    grid = write_grid(f'[network]\nname = "{network}"\nhidden = [16]\n', steps=160)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", "", 1))
    spec = load_grid(grid, registry).runs[0]

    def run():
        return train(spec.config, spec.seed, bind_components(spec.config, choose(spec.config, registry)))

    manual = run()
    monkeypatch.setattr(learning, "offers_manual_path", lambda network: False)
    auto = run()
    assert (manual.learn_path, auto.learn_path) == (HAND_DERIVED, AUTOGRAD)
    learned = ~torch.isnan(torch.from_numpy(manual.loss))
    assert int(learned.sum()) > 40
    torch.testing.assert_close(torch.from_numpy(manual.loss), torch.from_numpy(auto.loss), rtol=1e-3, atol=1e-5,
                               equal_nan=True)  # fmt: skip
    assert (manual.reward == auto.reward).all() and (manual.episode == auto.episode).all()
    for name, value in manual.weights.items():
        torch.testing.assert_close(value, auto.weights[name], rtol=1e-3, atol=1e-5)


def test_only_a_networks_own_math_takes_its_manual_path():
    """A subclass with another forward (or features split) learns through autograd; distributional heads, image
    inputs and renamed subclasses keep the manual path."""

    class Scaled(MLP):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(obs)

    class Renamed(MLP):  # same math: the manual path stays valid
        pass

    class OtherHead(DuelingNetwork):
        def from_features(self, features: torch.Tensor) -> torch.Tensor:
            return super().from_features(features).neg()

    assert offers_manual_path(Renamed(4, 2, (8,)))
    assert offers_manual_path(mlp(4, 2, outputs=51))
    assert offers_manual_path(mlp(ObsSpec((4, 10, 10), "bool"), 2))
    assert offers_manual_path(dueling(4, 2)) and offers_manual_path(noisy(4, 2, dueling=True))
    assert not offers_manual_path(Scaled(4, 2, (8,)))
    assert not offers_manual_path(OtherHead(4, 2))
    assert not offers_manual_path(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    assert not offers_manual_path(VmapStack([mlp(4, 2), mlp(4, 2)]))


def test_only_a_learner_whose_loss_reads_outputs_only_takes_it():
    """A plugin learner takes the manual path when it says its loss reads the networks only through their outputs."""

    class Plain(LearnerBase):
        def loss(self, nets, batch):
            return dqn(3).loss(nets, batch)

    nets, _ = twin_nets(None)
    assert not takes_manual_path(Plain(), nets) and learn_path(Plain(), nets) == AUTOGRAD
    opted = Plain()
    opted.loss_on_outputs = True
    assert learn_path(opted, nets) == HAND_DERIVED
    assert_manual_path_matches_autograd(opted, None, steps=2)


def test_a_subclass_with_its_own_forward_gets_autograd_gradients():
    class Scaled(MLP):
        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return 2.0 * super().forward(obs)

    torch.manual_seed(0)
    nets = QNetworks(Scaled(4, 2, (8,)))
    reference = copy.deepcopy(nets)
    learner = dqn(2)
    assert learn_path(learner, nets) == AUTOGRAD
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


TD_LEARNERS = {
    "dqn-mse": lambda: dqn(3),
    "dqn-huber-double": lambda: dqn(3, double=True, loss="huber"),
    "munchausen": lambda: munchausen(3),
}


@pytest.mark.parametrize("learner", list(TD_LEARNERS))
@pytest.mark.parametrize("network", ["mlp", "dueling", "noisy"])
@MEMBERS
def test_the_td_learners_written_out_gradient_equals_autograd_on_their_loss(monkeypatch, learner, network, members):
    """The speed path (``loss_gradient``: the TD loss's slope written out) against the plain manual path it
    replaces (autograd over the learner's loss, the network's manual backward): same gradients, losses and
    priorities, to float rounding."""
    rule = TD_LEARNERS[learner]()
    assert learning.hand_gradient(rule) is not None
    fast, plain = twin_nets(members, network=network)
    lead = (16,) if members is None else (members, 16)
    for step in range(3):
        batch = random_batch(lead, 5, 3)
        got = seeded(lambda n, b: learning.manual_backward(rule, n, b), step)(fast, batch)
        with monkeypatch.context() as patch:
            patch.setattr(learning, "hand_gradient", lambda learner: None)
            want = seeded(lambda n, b: learning.manual_backward(rule, n, b), step)(plain, batch)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        for a, b in zip(fast.params, plain.params):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
            with torch.no_grad():  # a step, so that the next batch meets other parameters
                a.sub_(0.01 * a.grad)
                b.sub_(0.01 * b.grad)


def test_a_learner_subclass_with_its_own_loss_does_not_inherit_the_written_out_gradient():
    class Scaled(type(dqn(3))):
        def loss(self, nets, batch):
            losses, priorities = super().loss(nets, batch)
            return LearnerLoss(3.0 * losses, priorities)

    class Renamed(type(dqn(3))):  # the same loss: the written-out gradient stays valid
        pass

    assert learning.hand_gradient(Scaled()) is None and learning.hand_gradient(Renamed()) is not None
    assert_manual_path_matches_autograd(Scaled(), None, steps=2)
