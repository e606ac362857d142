"""Lock-step training: members land in the same tables as independent runs, and learn like them."""

from __future__ import annotations

import io
import types

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import dqnbench
import dqnbench.nn as dqnbench_nn
from dqnbench.agent.envs import make_envs, terminal_next_obs
from dqnbench.agent.nets import QNetworks, VmapStack, network_problem, stack_modules, vmap_problem, widest_activation
from dqnbench.builtin.dueling import dueling
from dqnbench.builtin.envs import gymnasium
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.noisy import noisy
from dqnbench.config.grid import load_grid
from dqnbench.plugin.obs import ObsSpec
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import lockstep_cells


def run(grid, out, **kwargs):
    return dqnbench.run_grid(
        grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), **kwargs, plots=False
    )


def test_members_land_in_the_same_tables_as_independent_runs(write_grid, tmp_path):
    grid = write_grid(steps=300, seeds=3, eval_every=150)
    lock = run(grid, tmp_path / "lock")
    solo = run(grid, tmp_path / "solo", lockstep=False)
    assert sorted(lock.runs.run_id) == sorted(solo.runs.run_id)
    assert set(lock.runs.status) == {"ok"}
    assert all(lock.record(r)["lockstep"] == {"members": 3, "seeds": [0, 1, 2]} for r in lock.runs.run_id)
    assert "lockstep" not in solo.record(solo.runs.run_id[0])
    assert list(lock.steps.columns) == list(solo.steps.columns)
    assert lock.steps.groupby("run_id").size().eq(300).all()
    assert lock.evals.groupby("run_id").step.apply(list).map(lambda s: s == [0, 150, 300]).all()
    for run_id in lock.runs.run_id:
        episodes = lock.episodes[lock.episodes.run_id == run_id]
        assert (episodes.step.diff().dropna() == episodes.length.iloc[1:].to_numpy()).all()
        assert lock.weights(run_id).keys() == solo.weights(run_id).keys()
        for name, tensor in lock.weights(run_id).items():
            assert tensor.shape == solo.weights(run_id)[name].shape


@pytest.mark.parametrize(
    "factory, params",
    [(mlp, {"hidden": [8, 8]}), (dueling, {"hidden": [8], "stream_hidden": 4}), (noisy, {"hidden": [8]})],
)
@pytest.mark.parametrize("outputs", [1, 5])
def test_builtin_networks_stack_natively_and_equal_each_member(factory, params, outputs):
    torch.manual_seed(0)
    nets = [factory(ObsSpec(4), 3, outputs=outputs, **params) for _ in range(3)]
    for net in nets:
        net.eval()  # noise off, so outputs are deterministic
    stacked = stack_modules(nets, ObsSpec(4)).eval()
    via_vmap = VmapStack(nets).eval()
    assert not isinstance(stacked, VmapStack)  # shape-generic: batched matmuls, no vmap
    x = torch.randn(3, 5, 4)
    expected = torch.stack([net(x[k]) for k, net in enumerate(nets)])
    torch.testing.assert_close(stacked(x), expected)
    torch.testing.assert_close(via_vmap(x), expected)
    for module in (stacked, via_vmap):
        states = QNetworks(module, members=3).state_dicts()
        for k, state in enumerate(states):
            assert state.keys() == nets[k].state_dict().keys()
            for name, tensor in nets[k].state_dict().items():
                assert torch.equal(state[name], tensor)


def test_noisy_members_draw_independent_noise():
    torch.manual_seed(0)
    nets = [noisy(4, 2, hidden=[8]) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    stacked = stack_modules(nets, ObsSpec(4)).train(True)
    q = stacked(torch.ones(2, 1, 4))
    assert not torch.allclose(q[0], q[1])


def test_third_party_networks_use_vmap_and_unstackable_ones_are_detected():
    def plain(obs_dim, n_actions):
        return nn.Sequential(nn.Linear(obs_dim, 8), nn.Tanh(), nn.Linear(8, n_actions))

    assert network_problem(plain, ObsSpec(4), 2) == (None, False)  # stackable, through vmap
    assert network_problem(mlp, ObsSpec(4), 2) == (None, True)  # natively
    problem, _ = network_problem(DataDependent, ObsSpec(4), 2)
    assert problem is not None


def test_a_network_whose_forward_assumes_no_member_dim_falls_back_to_vmap():
    """``mean(dim=1)`` is right for (B, A) but wrong with a leading member dim: the probe notices."""

    class MeanCentred(nn.Module):
        def __init__(self, obs_dim, n_actions):
            super().__init__()
            self.out = dqnbench_nn.Linear(obs_dim, n_actions)

        def forward(self, x):
            q = self.out(x)
            return q - q.mean(dim=1, keepdim=True)

    torch.manual_seed(0)
    nets = [MeanCentred(4, 3) for _ in range(2)]
    stacked = stack_modules(nets, ObsSpec(4))
    assert isinstance(stacked, VmapStack)
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(stacked(x), torch.stack([net(x[k]) for k, net in enumerate(nets)]))


class DataDependent(nn.Module):
    """Python control flow on tensor values: vmap cannot batch ``.item()``."""

    def __init__(self, obs_dim, n_actions):
        super().__init__()
        self.out = nn.Linear(obs_dim, n_actions)

    def forward(self, x):
        return self.out(x) if x.sum().item() >= 0 else -self.out(x)


def test_cells_that_cannot_run_in_lockstep_fall_back_with_a_notice(write_grid, tmp_path):
    def dqnbench_networks():
        return {"bn": DataDependent}

    plugin = types.SimpleNamespace(
        __name__="unstackable_plugin", dqnbench_networks=dqnbench.hookimpl(dqnbench_networks)
    )
    grid = write_grid('[grid]\n"network.name" = ["mlp", "bn"]\n', steps=200, seeds=2)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    stream = io.StringIO()
    res = dqnbench.run_grid(
        grid, tmp_path / "out", executor="serial", load_entrypoints=False, plugins=[plugin], stream=stream, plots=False
    )
    notes = [line for line in stream.getvalue().splitlines() if line.startswith("note:") and "lock-step" in line]
    assert len(notes) == 1 and "network.name=bn" in notes[0] and "runs its seeds independently" in notes[0]
    assert set(res.runs.status) == {"ok"}
    lockstep = {r: "lockstep" in res.record(r) for r in res.runs.run_id}
    by_net = dict(zip(res.runs.run_id, res.runs["network.name"]))
    assert all(lockstep[r] == (by_net[r] == "mlp") for r in lockstep)


def plain_mlp(width: int):
    """A v1 network of plain ``torch.nn`` layers: it stacks only through vmap."""

    def factory(obs_dim, n_actions):
        return nn.Sequential(nn.Linear(obs_dim, width), nn.ReLU(), nn.Linear(width, n_actions))

    return factory


def test_vmap_lockstep_follows_a_rule_on_the_cells_shape_not_a_timing(write_grid, tmp_path, monkeypatch):
    """A timing probe flips near its threshold with the machine's load, and lock-step changes a run's numbers:
    the choice reads only the seeds and the widest layer, so the same grid gives the same results every time."""
    obs = ObsSpec(4)
    assert "from 8 seeds; this cell has 7" in vmap_problem(plain_mlp(64), obs, 2, 7)
    assert vmap_problem(plain_mlp(64), obs, 2, 8) is None
    assert vmap_problem(plain_mlp(2048), obs, 2, 8) is None
    assert "4,096 values per sample" in vmap_problem(plain_mlp(4096), obs, 2, 32)
    assert widest_activation(plain_mlp(300), obs, 2) == 300

    def no_clock(*_args):
        raise AssertionError("the lock-step choice must not read a clock")

    monkeypatch.setattr("time.perf_counter", no_clock)

    def dqnbench_networks():
        return {"plain": plain_mlp(32), "wide": plain_mlp(4096)}

    plugin = types.SimpleNamespace(__name__="plain_nets", dqnbench_networks=dqnbench.hookimpl(dqnbench_networks))
    registry = load_registry(False, (plugin,))
    for seeds, expected in ((4, set()), (8, {"network.name=plain"})):
        grid = write_grid('[grid]\n"network.name" = ["plain", "wide"]\n', seeds=seeds)
        grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
        plan = load_grid(grid, registry)
        stream = io.StringIO()
        cells = lockstep_cells(plan, registry, stream)
        assert {label for cell, label, _ in plan.cells if cell in cells} == expected, stream.getvalue()
        assert stream.getvalue().count("note:") == 2 - len(expected)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_vector_envs_reset_finished_members_in_the_same_step(env_id):
    envs = make_envs(gymnasium, env_id, 3)
    obs, _ = envs.reset(seed=0)
    lengths, running = [], np.zeros(3, dtype=int)
    for _ in range(700):
        next_obs, _, terminated, truncated, info = envs.step(envs.action_space.sample())
        real = terminal_next_obs(next_obs, info)
        running += 1
        done = terminated | truncated
        if done.any():
            assert not np.array_equal(real[done], next_obs[done])  # terminal obs kept, reset obs returned
            lengths += list(running[done])
            running[done] = 0
    assert lengths and min(lengths) >= 1 and sum(lengths) + running.sum() == 3 * 700


@pytest.mark.slow
def test_lockstep_learns_like_independent_runs(tmp_path):
    """Eight seeds of the default agent, two ways, 15k CartPole-v1 steps each: one lock-step group of 8 and
    8 independent runs (how a cell's seeds split into groups on idle workers is ``test_lockstep_groups.py``'s).

    Every member must learn: its best greedy evaluation (mean of the eval
    episodes) ≥ 150, seven times a random policy's ~22. (The default agent at
    15k steps plateaus near 200; which seeds peak above 195 shifts with float
    rounding, e.g. 188 for one of 16 once the loss arithmetic was reordered.)
    The two samples of final returns must be indistinguishable by a
    two-sided Mann–Whitney U test at α = 0.05. With 8 vs 8 runs that test
    detects a shift of about 1.5 standard deviations with 80% power, so it
    catches a broken lock-step learner (returns near random, ~22),
    not subtle differences; the per-member learning check is the sharper one.
    A member's results depend on its group's seeds (``docs/lockstep.md``): the
    group gives another draw of the same distribution, which this checks.
    """
    grid = tmp_path / "grid.toml"
    text = '[experiment]\nname = "equiv"\ntotal_steps = 15_000\nseeds = 8\neval_every = 2_500\n'
    grid.write_text(text)
    one = tmp_path / "one.toml"
    one.write_text(text + "lockstep_group = 8\n")
    lock = dqnbench.run_grid(one, tmp_path / "lock", workers=2, stream=io.StringIO(), plots=False)
    solo = dqnbench.run_grid(grid, tmp_path / "solo", workers=2, stream=io.StringIO(), lockstep=False, plots=False)
    assert set(lock.runs.lockstep_members) == {8}
    for res in (lock, solo):
        assert set(res.runs.status) == {"ok"}
        assert res.evals.groupby("run_id").mean_return.max().ge(150).all()
    x, y = lock.runs.final_return, solo.runs.final_return
    p = stats.mannwhitneyu(x, y, alternative="two-sided").pvalue
    assert p > 0.05, (x.tolist(), y.tolist())


def test_a_cell_missing_one_member_is_retrained_whole_so_results_do_not_change(write_grid, tmp_path):
    import shutil

    grid = write_grid(steps=200, seeds=3)
    first = run(grid, tmp_path / "out")
    missing = first.runs.run_id[1]
    kept = {r: (first.run_dir(r) / "steps.parquet").read_bytes() for r in first.runs.run_id if r != missing}
    shutil.rmtree(first.run_dir(missing))  # as if the run was interrupted between two members' writes
    again = run(grid, tmp_path / "out")
    assert {r: (again.run_dir(r) / "steps.parquet").read_bytes() for r in kept} == kept  # not rewritten
    cols = ["run_id", "step", "reward", "loss"]
    pd_first = first.steps[cols].sort_values(["run_id", "step"]).reset_index(drop=True)
    pd_again = again.steps[cols].sort_values(["run_id", "step"]).reset_index(drop=True)
    assert pd_first.equals(pd_again)


def _with_buffers(obs: ObsSpec, n_actions: int, hidden: list[int]) -> nn.Module:
    """A network with buffers, a float and an integer one (batch norm's running stats and count)."""
    return nn.Sequential(nn.Linear(int(obs), n_actions), nn.BatchNorm1d(n_actions))


@pytest.mark.parametrize(
    "factory, stacked", [(mlp, False), (mlp, True), (noisy, True), (_with_buffers, False)],
    ids=["mlp-single", "mlp-stacked", "noisy-stacked", "buffers-single"],
)  # fmt: skip
def test_the_target_copy_equals_load_state_dict_parameters_and_buffers(factory, stacked):
    """``sync_target``'s in-place copy gives the target exactly what ``load_state_dict`` would, buffers included."""
    torch.manual_seed(0)
    modules = [factory(ObsSpec(4), 3, hidden=[8]) for _ in range(2 if stacked else 1)]
    nets = QNetworks.of(modules, ObsSpec(4), torch.device("cpu"), stacked)
    with torch.no_grad():
        for tensor in nets.online.state_dict().values():
            tensor.add_(torch.randn_like(tensor) if tensor.is_floating_point() else 1)
    expected = {k: v.clone() for k, v in nets.online.state_dict().items()}
    for _ in range(2):  # the first call finds the pairs of tensors, the second reuses them
        nets.sync_target()
        got = nets.target.state_dict()
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
        with torch.no_grad():
            for tensor in nets.online.state_dict().values():
                tensor.mul_(2)
        expected = {k: v.clone() for k, v in nets.online.state_dict().items()}
