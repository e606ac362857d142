"""The ``iqn`` learner: its math on hand examples and against plain loops, its head on every built-in network
(single and stacked), bad input, grids, checkpoints, embeddings and ``plugins --check``."""

from __future__ import annotations

import io
import itertools
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import dqnbench
from dqnbench.agent import loop
from dqnbench.agent.checkpoint import Checkpoint
from dqnbench.agent.heads import NoFeatures, features_problem
from dqnbench.agent.nets import QNetworks, VmapStack, stack_modules
from dqnbench.agent.quantiles import cosine_embedding, implicit_quantile_huber_loss
from dqnbench.builtin.conv import minatar_cnn, nature_cnn
from dqnbench.builtin.dueling import dueling
from dqnbench.builtin.iqn import IQNLearner, IQNNetwork, iqn
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.noisy import noisy
from dqnbench.plugin.obs import ObsSpec
from tests.test_checkpoints import assert_same_runs, cell, kill_and_resume, step_counter  # noqa: F401
from tests.test_dqn_learner import random_batch

# --------------------------------------------------------------------------- the math, by hand and by loops


def test_cosine_embedding_on_hand_values():
    got = cosine_embedding(torch.tensor([0.5, 1 / 3, 0.0]), 3)
    want = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.5, -0.5], [1.0, 1.0, 1.0]])  # cos(π i τ), i = 0, 1, 2
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert cosine_embedding(torch.rand(2, 3, 4), 7).shape == (2, 3, 4, 7)


@pytest.mark.parametrize(
    "kappa, loss, grad",
    [
        # θ = (0, 1) at τ = (¼, ¾); targets (0.5, 3). δ_0 = (0.5, 3), δ_1 = (−0.5, 2).
        # κ = 1: i=0: ¼·0.125 and ¼·2.5 → mean 0.328125; i=1: ¼·0.125 and ¾·1.5 → mean 0.578125.
        # ∂/∂θ_i = −mean_j |τ_i − 1{δ<0}| · clip(δ, ±κ)/κ: (−(¼·0.5 + ¼·1)/2, −(−¼·0.5 + ¾·1)/2).
        (1.0, 0.90625, (-0.1875, -0.3125)),
        # κ = 2 (everything / κ; only δ = 3 is past κ): i=0: (¼·0.125 + ¼·2·2)/2/2; i=1: (¼·0.125 + ¾·2)/2/2.
        (2.0, 0.640625, (-(0.25 * 0.25 + 0.25 * 1.0) / 2, -(-0.25 * 0.25 + 0.75 * 1.0) / 2)),
    ],
)
def test_quantile_huber_loss_with_sample_levels_on_a_hand_example(kappa, loss, grad):
    quantiles = torch.tensor([[0.0, 1.0]], requires_grad=True)
    got = implicit_quantile_huber_loss(quantiles, torch.tensor([[0.5, 3.0]]), torch.tensor([[0.25, 0.75]]), kappa)
    got.sum().backward()
    torch.testing.assert_close(got, torch.tensor([loss]))
    torch.testing.assert_close(quantiles.grad, torch.tensor([grad]))


def reference_loss(quantiles, targets, taus, kappa):
    """IQN's eq. 3 with a loop per sample, prediction and target (no broadcasting)."""
    out = torch.zeros(quantiles.shape[:-1], dtype=torch.float64)
    for index in itertools.product(*map(range, quantiles.shape[:-1])):
        total = 0.0
        for i in range(quantiles.shape[-1]):
            for j in range(targets.shape[-1]):
                delta = float(targets[index][j]) - float(quantiles[index][i])
                huber = 0.5 * delta**2 if abs(delta) <= kappa else kappa * (abs(delta) - 0.5 * kappa)
                total += abs(float(taus[index][i]) - (delta < 0)) * huber / kappa / targets.shape[-1]
        out[index] = total
    return out


@pytest.mark.parametrize("kappa", [1.0, 0.3])
def test_quantile_huber_loss_equals_a_plain_loop_on_stacked_samples(kappa):
    generator = torch.Generator().manual_seed(3)
    quantiles, targets = torch.randn(2, 3, 4, generator=generator), 2 * torch.randn(2, 3, 5, generator=generator)
    taus = torch.rand(2, 3, 4, generator=generator)
    got = implicit_quantile_huber_loss(quantiles, targets, taus, kappa)
    torch.testing.assert_close(got.double(), reference_loss(quantiles, targets, taus, kappa), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="taus"):
        implicit_quantile_huber_loss(quantiles, targets, taus[..., :3], kappa)


def test_the_head_equals_psi_times_phi_through_the_network_head_by_loops():
    """Z_τ(x, a) = out(ψ(x) ⊙ ReLU(W cos(π i τ) + b))_a, one sample and one level at a time."""
    torch.manual_seed(0)
    net = IQNNetwork(mlp(4, 3, hidden=[8]), quantile_samples=5, embedding_dim=6)
    obs, taus = torch.randn(2, 4), torch.rand(2, 5)
    got = net(obs, taus)
    assert got.shape == (2, 3, 5)
    body, out, embedding = net.network.body.linears[0], net.network.out, net.embedding
    for b, n in itertools.product(range(2), range(5)):
        psi = torch.relu(body.weight @ obs[b] + body.bias)
        cosines = torch.tensor([math.cos(math.pi * i * float(taus[b, n])) for i in range(6)])
        phi = torch.relu(embedding.weight @ cosines + embedding.bias)
        torch.testing.assert_close(got[b, :, n], out.weight @ (psi * phi) + out.bias, rtol=1e-5, atol=1e-6)


def test_acting_reads_k_levels_from_the_seeded_rng_and_evaluation_the_midpoints():
    torch.manual_seed(0)
    net = IQNNetwork(mlp(4, 3, hidden=[8]), quantile_samples=4, embedding_dim=6)
    obs = torch.randn(2, 4)
    torch.manual_seed(1)
    acted = net(obs)
    torch.manual_seed(1)
    torch.testing.assert_close(acted, net(obs, torch.rand(2, 4)).mean(dim=-1))
    state = torch.get_rng_state()
    evaluated = net.eval()(obs)
    assert torch.equal(torch.get_rng_state(), state)  # evaluation draws nothing
    torch.testing.assert_close(evaluated, net(obs, torch.tensor([[0.125, 0.375, 0.625, 0.875]] * 2)).mean(dim=-1))


# --------------------------------------------------------------------------- every network, single and stacked

VECTOR = ObsSpec(5)
IMAGES = {"minatar_cnn": ObsSpec((4, 10, 10), "bool"), "nature_cnn": ObsSpec((4, 36, 36), "uint8")}
NETWORKS = {
    "mlp": (lambda o, a: mlp(o, a, hidden=[16]), VECTOR),
    "mlp-linear": (lambda o, a: mlp(o, a, hidden=[]), VECTOR),
    "dueling": (lambda o, a: dueling(o, a, hidden=[16], stream_hidden=8), VECTOR),
    "noisy": (lambda o, a: noisy(o, a, hidden=[16]), VECTOR),
    "noisy-dueling": (lambda o, a: noisy(o, a, hidden=[16], dueling=True), VECTOR),
    "minatar_cnn": (lambda o, a: minatar_cnn(o, a, hidden=[16]), IMAGES["minatar_cnn"]),
    "minatar_cnn-dueling-noisy": (
        lambda o, a: minatar_cnn(o, a, hidden=[16], dueling=True, noisy=True),
        IMAGES["minatar_cnn"],
    ),
    "nature_cnn": (lambda o, a: nature_cnn(o, a, hidden=[16]), IMAGES["nature_cnn"]),
}


def observations(obs: ObsSpec, lead: tuple[int, ...]) -> torch.Tensor:
    from dqnbench.agent.nets import probe_observations

    return probe_observations(obs, lead)


@pytest.mark.parametrize("make, obs", NETWORKS.values(), ids=NETWORKS)
def test_every_builtin_network_splits_into_features_and_head(make, obs):
    torch.manual_seed(0)
    net = make(obs, 3).eval()  # noisy layers: mean weights, so two calls agree
    x = observations(obs, (4,))
    features = net.features(x)
    assert features_problem(net) is None and features.shape == (4, net.feature_dim)
    torch.testing.assert_close(net.from_features(features), net(x))


def image_batch(obs: ObsSpec, lead: tuple[int, ...], n_actions: int) -> dqnbench.Batch:
    batch = random_batch(lead, 1, n_actions)
    return batch._replace(obs=observations(obs, lead), next_obs=observations(obs, lead).flip(-1))


@pytest.mark.parametrize("double", [False, True], ids=["", "double"])
@pytest.mark.parametrize("make, obs", NETWORKS.values(), ids=NETWORKS)
def test_stacked_members_get_their_own_runs_losses_at_the_same_levels(make, obs, double):
    """Lock-step members stack natively with iqn's head, and member k's loss and gradient are its own run's."""
    learner = iqn(3, tau_samples=4, tau_prime_samples=5, quantile_samples=3, embedding_dim=8, double=double)
    torch.manual_seed(0)
    modules = [learner.wrap_network(make(obs, 3)) for _ in range(3)]
    stacked = QNetworks(stack_modules(modules, obs), 3)
    assert isinstance(stacked.online, IQNNetwork)  # natively: no vmap
    for net in (stacked.online, stacked.target):  # noise off: the online forward of `double` draws only levels
        net.eval()
    batch = image_batch(obs, (3, 6), 3)
    taus, target_taus = learner.levels(batch)
    torch.manual_seed(5)
    losses, priorities = learner.loss_at(stacked, batch, taus, target_taus)
    losses.sum().backward()
    for k in range(3):
        single = learner.wrap_network(make(obs, 3))
        single.load_state_dict({n: v[k] for n, v in stacked.online.state_dict().items()})
        nets = QNetworks(single)
        nets.online.eval(), nets.target.eval()
        own = learner.loss_at(nets, dqnbench.Batch(*(f[k] for f in batch)), taus[k], target_taus[k])
        own.losses.sum().backward()
        torch.testing.assert_close(own.losses, losses[k], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(own.priorities, priorities[k], rtol=1e-4, atol=1e-5)
        for (name, p), q in zip(single.named_parameters(), stacked.online.parameters()):
            assert (p.grad is None) == (q.grad is None), name  # (noisy σ: no gradient with the noise off)
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad[k], rtol=1e-4, atol=1e-5, msg=name)


class FlatFeatures(nn.Module):
    """A plugin network with the features split, written with ``torch.nn`` layers: it stacks only through vmap."""

    def __init__(self, obs_dim, n_actions):
        super().__init__()
        self.feature_dim = 8
        self.trunk, self.head = nn.Linear(int(obs_dim), 8), nn.Linear(8, n_actions)

    def features(self, obs):
        return torch.relu(self.trunk(obs))

    def from_features(self, features):
        return self.head(features)

    def forward(self, obs):
        return self.from_features(self.features(obs))


def test_a_plugin_network_stacked_through_vmap_gets_its_levels_per_member():
    learner = iqn(3, tau_samples=4, tau_prime_samples=4, quantile_samples=2, embedding_dim=5)
    modules = [learner.wrap_network(FlatFeatures(5, 3)) for _ in range(2)]
    stacked = QNetworks(stack_modules(modules, VECTOR), 2)
    assert isinstance(stacked.online, VmapStack)
    batch = random_batch((2, 6), 5, 3)
    taus, target_taus = learner.levels(batch)
    losses, _ = learner.loss_at(stacked, batch, taus, target_taus)
    for k, module in enumerate(modules):
        own = learner.loss_at(QNetworks(module), dqnbench.Batch(*(f[k] for f in batch)), taus[k], target_taus[k])
        torch.testing.assert_close(own.losses, losses[k], rtol=1e-5, atol=1e-5)
    assert stacked.rows(torch.randn(2, 5)).shape == (2, 3)  # acting draws each member's levels inside vmap


def test_double_and_terminal_transitions_shape_the_target():
    learner, double = iqn(3, quantile_samples=4), iqn(3, quantile_samples=4, double=True)
    torch.manual_seed(0)
    nets = QNetworks(learner.wrap_network(mlp(5, 3, hidden=[16])))
    for value in nets.target.parameters():
        value.data.add_(0.3 * torch.randn_like(value))
    batch = random_batch((32,), 5, 3)._replace(terminated=torch.arange(32) % 2 == 0)
    batch = batch._replace(next_obs=torch.where(batch.terminated[:, None], torch.nan, batch.next_obs))
    _, target_taus = learner.levels(batch)
    plain = learner.target_quantiles(nets, batch, target_taus)
    torch.manual_seed(2)
    chosen = double.target_quantiles(nets, batch, target_taus[..., : double.tau_prime_samples])
    terminal = batch.terminated
    assert torch.equal(plain[terminal], batch.rewards[terminal, None].expand(-1, 64))  # nothing bootstrapped, no NaN
    assert not torch.equal(plain[~terminal], chosen[~terminal])


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "params, match",
    [
        ({"tau_samples": 0}, "tau_samples must be an integer >= 1"),
        ({"tau_prime_samples": 2.0}, "tau_prime_samples"),
        ({"quantile_samples": -1}, "quantile_samples"),
        ({"embedding_dim": True}, "embedding_dim"),
        ({"kappa": 0.0}, "kappa must be a number > 0"),
        ({"kappa": float("nan")}, "kappa"),
        ({"double": "yes"}, "double"),
    ],
)
def test_bad_iqn_params_raise_value_error_naming_the_param(params, match):
    with pytest.raises(ValueError, match=match):
        iqn(2, **params)


@pytest.mark.parametrize(
    "learner, match",
    [
        ("tau_samples = 0", r"learner\.tau_samples: .*tau_samples must be an integer >= 1"),
        ("quantile_samples = 0", r"learner\.quantile_samples: "),
        ("kappa = -1.0", r"learner\.kappa: .*kappa must be a number > 0"),
    ],
)
def test_bad_iqn_input_exits_2_naming_the_key_before_anything_runs(write_grid, tmp_path, capsys, learner, match):
    from dqnbench.cli import main

    grid = write_grid(f'[learner]\nname = "iqn"\n{learner}\n')
    assert main(["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def plain_network(obs_dim, n_actions, width=8):
    """A v1 plugin network: no features split."""
    return nn.Sequential(nn.Linear(int(obs_dim), width), nn.ReLU(), nn.Linear(width, n_actions))


def test_a_network_without_features_exits_2_naming_both_components(write_grid, tmp_path, capsys):
    from dqnbench.cli import main

    plugin = type("P", (), {"dqnbench_networks": dqnbench.hookimpl(lambda self: {"plain": plain_network})})()
    grid = write_grid('[learner]\nname = "iqn"\n[network]\nname = "plain"\n')
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    with pytest.raises(dqnbench.GridError) as err:
        dqnbench.run_grid(grid, tmp_path / "out", plugins=[plugin], load_entrypoints=False, stream=io.StringIO())
    message = str(err.value)
    assert "network.name: " in message and 'learner "iqn"' in message and 'network "plain"' in message
    assert "feature_dim" in message and "features" in message
    with pytest.raises(NoFeatures, match="Sequential has no feature_dim"):
        iqn(2).wrap_network(plain_network(4, 2))
    assert main(["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--quiet"]) == 2  # no plugin: unknown


# --------------------------------------------------------------------------- grids, checkpoints, embeddings, checks


def run(grid, out, **kwargs):
    return dqnbench.run_grid(grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), **kwargs)


IQN_PARAMS = "tau_samples = 8\ntau_prime_samples = 8\nquantile_samples = 4\nembedding_dim = 16\n"
IQN_SMALL = f"[learner.iqn]\n{IQN_PARAMS}"


def test_iqn_is_a_grid_learner_with_its_params_on_every_flat_network_in_lockstep_and_single(write_grid, tmp_path):
    axes = '"learner.name" = ["iqn"]\n"network.name" = ["mlp", "dueling", "noisy"]\n'
    grid = write_grid(f"{IQN_SMALL}[grid]\n{axes}", steps=150, eval_every=150)
    res = run(grid, tmp_path / "out", plots=False)
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    assert all("lockstep" in res.record(r) for r in res.runs.run_id)
    runs = res.runs[res.runs["learner.name"] == "iqn"]
    assert len(runs) == 6 and set(runs["learner.tau_samples"]) == {8} and set(runs["learner.embedding_dim"]) == {16}
    assert res.weights(runs.run_id.iloc[0])["embedding.weight"].shape == (16, 16)  # embedding_dim → 16 features
    replay = '[replay]\nname = "nstep"\nn = 3\nprioritized = true\n'  # priorities: iqn's per-sample loss
    grid = write_grid(f'[learner]\nname = "iqn"\n{IQN_PARAMS}{replay}', steps=150, seeds=1)
    single = run(grid, tmp_path / "1", plots=False)
    assert list(single.runs.status) == ["ok"] and "lockstep" not in single.record(single.runs.run_id[0])


def test_an_iqn_run_killed_midway_resumes_and_equals_an_uninterrupted_run(
    write_grid,
    registry,
    tmp_path,
    step_counter,  # noqa: F811
):
    config, seeds, components = cell(write_grid, registry, f'[learner]\nname = "iqn"\n{IQN_PARAMS}', steps=400)
    for stacked, group in ((False, seeds[:1]), (True, seeds)):
        expected = loop.train_runs(config, group, components, stacked=stacked)
        checkpoint = Checkpoint(tmp_path / f"checkpoints-{stacked}" / "task", every=150)
        resumed = kill_and_resume(config, group, components, stacked, checkpoint, step_counter, kill_at=320)
        assert [log.resumed_at for log in resumed] == [300] * len(group)
        assert_same_runs(expected, resumed)


def test_an_iqn_run_embeds_its_states_and_plugins_check_knows_iqn(write_grid, tmp_path, registry):
    from dqnbench.analysis.embedding import embed_states, load_trained_learner, load_trained_network
    from dqnbench.devtools.diagnostics import check_components

    grid = write_grid(f'[learner]\nname = "iqn"\n{IQN_PARAMS}', steps=200, seeds=1)
    res = run(grid, tmp_path / "out", plots=False)
    run_id = res.runs.run_id[0]
    net = load_trained_network(res, run_id)
    assert isinstance(net, IQNNetwork) and not net.training
    embedding = embed_states(net, "CartPole-v1", episodes=1, q_values=load_trained_learner(res, run_id).q_values)
    assert embedding.features.shape[1] == 16
    assert "iqn" in registry.names("learner")
    assert check_components(registry, kinds=("learner",)) == []


def test_iqn_learner_declares_lockstep_and_one_output():
    assert iqn.lockstep is True
    learner = iqn(2)
    assert isinstance(learner, IQNLearner) and learner.outputs == 1
    assert (learner.tau_samples, learner.tau_prime_samples, learner.quantile_samples) == (64, 64, 32)
    assert (learner.embedding_dim, learner.kappa, learner.double) == (64, 1.0, False)
    np.testing.assert_equal(learner.q_values(torch.ones(2, 2)).numpy(), np.ones((2, 2)))


class HalfSplit(FlatFeatures):
    """Declares a features split whose head disagrees with its forward."""

    def forward(self, obs):
        return self.head(self.features(obs))

    def from_features(self, features):
        return self.head(features) + 1.0


@pytest.mark.parametrize("network, problem", [(FlatFeatures, None), (HalfSplit, "differs from forward")])
def test_plugins_check_holds_a_declared_features_split_to_forward(network, problem):
    from dqnbench.devtools.diagnostics import check_components
    from dqnbench.plugin.registry import load_registry

    plugin = type("P", (), {"dqnbench_networks": dqnbench.hookimpl(lambda self: {"split": network})})()
    problems = check_components(load_registry(False, (plugin,)), kinds=("network",))
    found = [p.message for p in problems if p.name == "split"]
    assert (found == []) if problem is None else (len(found) == 1 and problem in found[0]), found
