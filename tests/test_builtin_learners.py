"""The built-in learners beyond DQN (``c51``, ``qr_dqn``, ``munchausen``): gradients, priorities, bad input, and
every learner with every built-in network, replay and exploration, single and lock-step."""

from __future__ import annotations

import io
import re

import pytest
import torch

import dqnbench
from dqnbench.agent.nets import QNetworks
from dqnbench.builtin.distributional import C51Learner, QRLearner, c51, qr_dqn
from dqnbench.builtin.learners import munchausen
from dqnbench.builtin.networks import mlp
from tests.test_dqn_learner import NETWORKS, assert_manual_path_matches_autograd, random_batch, twin_nets

NEW_LEARNERS = ("c51", "qr_dqn", "munchausen")
LEARNERS = pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: c51(3, atoms=11, v_min=-5.0, v_max=5.0), id="c51"),
        pytest.param(lambda: c51(3, atoms=11, v_min=-5.0, v_max=5.0, double=True), id="c51-double"),
        pytest.param(lambda: qr_dqn(3, quantiles=16), id="qr_dqn"),
        pytest.param(lambda: qr_dqn(3, quantiles=16, kappa=0.5, double=True), id="qr_dqn-double"),
        pytest.param(lambda: qr_dqn(3, quantiles=1), id="qr_dqn-1"),
        pytest.param(lambda: munchausen(3), id="munchausen"),
        pytest.param(lambda: munchausen(3, loss="mse", tau=0.5), id="munchausen-mse"),
    ],
)


@LEARNERS
@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("members", [None, 3], ids=["single", "stacked"])
@pytest.mark.parametrize("max_grad_norm", [0.0, 0.5], ids=["", "clipped"])
def test_manual_path_matches_autograd(make, network, members, max_grad_norm):
    """Every learner's loss on every network's manual path: autograd's gradients (the network's, written once)."""
    learner = make()
    assert_manual_path_matches_autograd(
        learner, members, max_grad_norm=max_grad_norm, steps=3, atol=1e-5, network=network
    )


@LEARNERS
def test_stacked_members_learn_as_their_own_runs(make):
    """Member k of a stacked step gets exactly the losses and priorities its own run would (autograd path too)."""
    learner = make()
    stacked, _ = twin_nets(3, outputs=learner.outputs)
    batch = random_batch((3, 8), 5, 3)
    losses, priorities = learner.loss(stacked, batch)
    for k in range(3):
        single = QNetworks(mlp(5, 3, hidden=[16], outputs=learner.outputs))
        single.online.load_state_dict({n: v[k] for n, v in stacked.online.state_dict().items()})
        single.target.load_state_dict({n: v[k] for n, v in stacked.target.state_dict().items()})
        own = learner.loss(single, dqnbench.Batch(*(field[k] for field in batch)))
        torch.testing.assert_close(own.losses, losses[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(own.priorities, priorities[k], rtol=1e-5, atol=1e-5)


def test_c51_reads_expected_q_values_and_prioritises_by_cross_entropy():
    learner = c51(2, atoms=3, v_min=-1.0, v_max=1.0)
    logits = torch.log(torch.tensor([[[0.2, 0.5, 0.3], [1.0, 1e-9, 1e-9]]]))  # (B=1, A=2, N=3)
    torch.testing.assert_close(learner.q_values(logits), torch.tensor([[0.1, -1.0]]))
    nets, _ = twin_nets(None, outputs=51, obs_dim=4, n_actions=2)
    learner = c51(2)
    batch = random_batch((8,), 4, 2)
    losses, priorities = learner.loss(nets, batch)
    assert losses.shape == (8,) and bool((losses > 0).all())
    torch.testing.assert_close(priorities, losses.detach())
    torch.testing.assert_close(learner.backward(nets, batch).priorities, priorities)


def test_qr_dqn_reads_the_mean_of_quantiles_and_prioritises_by_its_loss():
    learner = qr_dqn(2, quantiles=4)
    outputs = torch.tensor([[[0.0, 1.0, 2.0, 5.0], [1.0, 1.0, 1.0, 1.0]]])
    torch.testing.assert_close(learner.q_values(outputs), torch.tensor([[2.0, 1.0]]))
    nets, _ = twin_nets(None, outputs=4, obs_dim=4, n_actions=2)
    losses, priorities = learner.loss(nets, random_batch((8,), 4, 2))
    torch.testing.assert_close(priorities, losses.detach())


def test_double_changes_the_target_of_distributional_learners():
    nets, _ = twin_nets(None, outputs=11)
    batch = random_batch((32,), 5, 3)
    for make in (lambda d: c51(3, atoms=11, double=d), lambda d: qr_dqn(3, quantiles=11, double=d)):
        plain, double = make(False).loss(nets, batch).losses, make(True).loss(nets, batch).losses
        assert not torch.allclose(plain, double)


def test_terminal_transitions_ignore_the_next_state_even_when_it_is_not_finite():
    nets, _ = twin_nets(None, outputs=11)
    batch = random_batch((8,), 5, 3)._replace(terminated=torch.ones(8, dtype=torch.bool))
    batch = batch._replace(next_obs=torch.full((8, 5), float("nan")))
    for learner in (c51(3, atoms=11), qr_dqn(3, quantiles=11)):
        assert torch.isfinite(learner.loss(nets, batch).losses).all()


@pytest.mark.parametrize(
    "factory, params, match",
    [
        (c51, {"atoms": 1}, "atoms"),
        (c51, {"atoms": 5.0}, "atoms"),
        (c51, {"v_min": 1.0, "v_max": 1.0}, "v_min must be below v_max"),
        (c51, {"v_max": float("inf")}, "v_max"),
        (c51, {"double": 1}, "double"),
        (qr_dqn, {"quantiles": 0}, "quantiles"),
        (qr_dqn, {"kappa": 0.0}, "kappa"),
        (munchausen, {"tau": 0.0}, "tau"),
        (munchausen, {"alpha": 1.5}, "alpha"),
        (munchausen, {"l0": 0.0}, "l0"),
        (munchausen, {"loss": "l1"}, "loss"),
    ],
)
def test_bad_learner_params_raise_value_error_naming_the_param(factory, params, match):
    with pytest.raises(ValueError, match=match):
        factory(2, **params)


@pytest.mark.parametrize(
    "learner, match",
    [
        ("v_min = 5.0\nv_max = 1.0", r"learner\.v_min: .*v_min must be below v_max"),
        ("atoms = 1", r"learner\.atoms: .*atoms must be an integer >= 2"),
        ('name = "qr_dqn"\nquantiles = 0', r"learner\.quantiles: "),
        ('name = "munchausen"\ntau = 0.0', r"learner\.tau: "),
        ("vmax = 3.0", r"learner\.vmax: .*did you mean 'v_max'"),
    ],
)
def test_bad_learner_input_exits_2_naming_the_key_before_anything_runs(write_grid, tmp_path, capsys, learner, match):
    from dqnbench.cli import main

    name = "" if "name" in learner else 'name = "c51"\n'
    grid = write_grid(f"[learner]\n{name}{learner}\n")
    assert main(["run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def run(grid, out, **kwargs):
    return dqnbench.run_grid(
        grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False, **kwargs
    )


SMALL_LEARNERS = "[learner.c51]\natoms = 11\n[learner.qr_dqn]\nquantiles = 8\n"


def assert_all_ok(res, lockstep: bool) -> None:
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    assert all(("lockstep" in res.record(r)) == lockstep for r in res.runs.run_id)


def test_every_learner_trains_with_every_network_in_lockstep(write_grid, tmp_path):
    axes = f'"learner.name" = {list(NEW_LEARNERS)}\n"network.name" = ["mlp", "dueling", "noisy"]\n'.replace("'", '"')
    grid = write_grid(f"{SMALL_LEARNERS}[grid]\n{axes}", steps=200)
    res = run(grid, tmp_path / "out")
    assert len(res.runs) == 2 * 9
    assert_all_ok(res, lockstep=True)


def test_every_learner_trains_with_every_replay_single_and_lockstep(write_grid, tmp_path):
    axes = f'"learner.name" = {list(NEW_LEARNERS)}\n"replay.name" = ["uniform", "prioritized", "nstep"]\n'
    grid = write_grid(
        f"{SMALL_LEARNERS}[replay.nstep]\nprioritized = true\n[grid]\n{axes}".replace("'", '"'), steps=200
    )
    for lockstep in (True, False):
        res = run(grid, tmp_path / f"out-{lockstep}", lockstep=lockstep)
        assert len(res.runs) == 2 * 9
        assert_all_ok(res, lockstep=lockstep)


def test_distributional_learners_act_through_expected_q_with_every_exploration(write_grid, tmp_path):
    explorations = ["constant", "linear", "exponential", "boltzmann", "greedy"]
    axes = f'"learner.name" = ["c51", "qr_dqn"]\n"exploration.name" = {explorations}\n'.replace("'", '"')
    grid = write_grid(f"{SMALL_LEARNERS}[grid]\n{axes}", steps=200)
    grid.write_text(grid.read_text().replace("[network]\n", '[network]\nname = "noisy"\n', 1))
    res = run(grid, tmp_path / "out")
    assert len(res.runs) == 2 * 10
    assert_all_ok(res, lockstep=True)


def test_rainbow_cell_trains_single_and_lockstep(write_grid, tmp_path):
    """c51 + double on a noisy dueling net, greedy acting, prioritized 3-step replay: Rainbow's parts together."""
    grid = write_grid(
        '[learner]\nname = "c51"\natoms = 11\ndouble = true\n[network]\nname = "noisy"\ndueling = true\nhidden = [16]\n'
        '[exploration]\nname = "greedy"\n[replay]\nname = "nstep"\nn = 3\nprioritized = true\n',
        steps=250,
    )
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", "", 1))
    for lockstep in (True, False):
        res = run(grid, tmp_path / f"out-{lockstep}", lockstep=lockstep)
        assert_all_ok(res, lockstep=lockstep)
        weights = res.weights(res.runs.run_id[0])
        assert weights["advantage.weight_mu"].shape[0] == 2 * 11 and weights["value.weight_mu"].shape[0] == 11


def test_a_learner_whose_loss_turns_nan_gives_a_diverged_run(write_grid, tmp_path):
    grid = write_grid('[learner]\nname = "c51"\natoms = 11\n', steps=300, seeds=1)
    grid.write_text(grid.read_text().replace("[agent]\n", "[agent]\nlr = 1e30\n", 1))
    res = run(grid, tmp_path / "out")
    assert set(res.runs.status) == {"diverged"}, res.runs[["status", "error"]].to_dict("records")


@pytest.mark.parametrize("cls", [C51Learner, QRLearner])
def test_distributional_learners_declare_lockstep_and_several_outputs(cls):
    from dqnbench.builtin.distributional import c51 as c51_factory
    from dqnbench.builtin.distributional import qr_dqn as qr_factory

    factory = c51_factory if cls is C51Learner else qr_factory
    assert factory.lockstep is True and munchausen.lockstep is True
    assert isinstance(factory(2), cls) and factory(2).outputs > 1


def v1_catch_all(obs_dim, n_actions, **params):
    """DESIGN.md's v1 signature, ``factory(obs_dim, n_actions, **params)``: it never heard of ``outputs``."""
    width = params.get("width", 8)
    return torch.nn.Sequential(torch.nn.Linear(obs_dim, width), torch.nn.ReLU(), torch.nn.Linear(width, n_actions))


def v1_named(obs_dim, n_actions, width=8):
    return torch.nn.Sequential(torch.nn.Linear(obs_dim, width), torch.nn.ReLU(), torch.nn.Linear(width, n_actions))


@pytest.mark.parametrize("v1_dueling", [v1_named, v1_catch_all], ids=["named-params", "catch-all-params"])
def test_c51_with_a_v1_network_that_cannot_give_atoms_exits_2_naming_both(write_grid, v1_dueling):
    """A v1 plugin network (no ``outputs`` param, a ``**params`` catch-all included) cannot give C51 its atoms:
    refused before anything runs; ``plugins --check`` does not ask it for atoms either."""
    from dqnbench.devtools.diagnostics import check_components
    from dqnbench.errors import GridError
    from dqnbench.plugin.registry import load_registry
    from dqnbench.run.runner import prepare

    plugin = type(
        "V1", (), {"__name__": "v1", "dqnbench_networks": dqnbench.hookimpl(lambda self: {"v1_dueling": v1_dueling})}
    )()
    grid = write_grid('[learner]\nname = "c51"\n[network]\nname = "v1_dueling"\n')
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    with pytest.raises(GridError) as err:
        prepare(grid, [plugin], load_entrypoints=False)
    message = str(err.value)
    assert "network.name: " in message and 'learner "c51"' in message and 'network "v1_dueling"' in message
    assert "51 outputs per action" in message
    assert check_components(load_registry(False, (plugin,)), kinds=("network",)) == []
