"""Fused sweeps (issue #24): cells that differ only in member-wise params train as one lock-step program.

Each member stays its own run, and a member's results never depend on another member's values: changing
every member-wise value of one variant leaves the other variant's runs identical bit for bit.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import dqnbench
from dqnbench.builtin.member_optimizers import MemberAdam, MemberRMSprop
from dqnbench.builtin.optimizers import adam, rmsprop
from dqnbench.config.grid import load_grid
from dqnbench.plugin.members import PerMember
from dqnbench.run.fusion import fuse_problem, memberwise_keys, pools
from dqnbench.run.groups import lockstep_groups
from dqnbench.run.runner import choose, fusion_pools, lockstep_cells, make_tasks
from tests.test_checkpoints import step_counter  # noqa: F401 - a fixture

VARIANTS = """
[variants.a]
"agent.lr" = 1e-3

[variants.b]
{b}
"""

B_ONE = """"agent.lr" = 3e-3
"agent.gamma" = 0.9
"agent.target_update" = 20
"agent.learning_starts" = 150
"agent.max_grad_norm" = 1.0
"exploration.start" = 0.8
"exploration.fraction" = 0.3
"""

B_TWO = """"agent.lr" = 3e-2
"agent.gamma" = 0.5
"agent.target_update" = 7
"agent.learning_starts" = 60
"agent.max_grad_norm" = 0.1
"exploration.start" = 0.3
"exploration.fraction" = 0.05
"""


def run(grid, out, **kwargs):
    return dqnbench.run_grid(
        grid, out, executor="serial", load_entrypoints=False, stream=io.StringIO(), plots=False, **kwargs
    )


def test_a_member_never_depends_on_another_members_values(write_grid, tmp_path):
    one = _with(write_grid(VARIANTS.format(b=B_ONE), steps=400, seeds=3, filename="one.toml"), "lockstep_group = 6")
    two = _with(write_grid(VARIANTS.format(b=B_TWO), steps=400, seeds=3, filename="two.toml"), "lockstep_group = 6")
    one, two = run(one, tmp_path / "one"), run(two, tmp_path / "two")
    assert set(one.runs.status) == set(two.runs.status) == {"ok"}
    record = one.record(one.runs.run_id[0])
    assert record["lockstep"]["members"] == 6 and len(record["lockstep"]["fused"]) == 6  # one group of a and b
    a_runs = sorted(one.runs.run_id[one.runs.label == "a"])
    assert a_runs == sorted(two.runs.run_id[two.runs.label == "a"]) and len(a_runs) == 3
    assert_only_b_changed(one, two, ("steps", "evals", "episodes"))
    for run_id in a_runs:
        for name, value in one.weights(run_id).items():
            assert torch.equal(value, two.weights(run_id)[name]), (run_id, name)


def assert_only_b_changed(one, two, tables: tuple[str, ...]) -> None:
    """Variant a's rows of ``tables`` are identical bit for bit in both results, while b's losses changed."""
    a_runs = sorted(one.runs.run_id[one.runs.label == "a"])
    for table in tables:
        timed = [c for c in getattr(one, table).columns if c.startswith("t_")]  # clocks, not results
        left = getattr(one, table).drop(columns=timed).set_index("run_id").loc[a_runs].reset_index()
        right = getattr(two, table).drop(columns=timed).set_index("run_id").loc[a_runs].reset_index()
        pd.testing.assert_frame_equal(left, right, check_exact=True)
    b_one = one.steps[one.steps.run_id.isin(one.runs.run_id[one.runs.label == "b"])]
    b_two = two.steps[two.steps.run_id.isin(two.runs.run_id[two.runs.label == "b"])]
    assert not np.array_equal(b_one.loss.to_numpy(), b_two.loss.to_numpy())


LEARNER_VARIANTS = {
    # the learners' own member-wise scalars: double (dqn, c51, qr_dqn), Munchausen's α, τ and l0
    "dqn-double": ("", '"learner.double" = true\n', '"learner.double" = true\n"agent.lr" = 3e-2\n'),
    "c51-double": (
        '[learner]\nname = "c51"\natoms = 11\n',
        '"learner.double" = true\n',
        '"learner.double" = true\n"agent.lr" = 3e-2\n',
    ),
    "qr-double": (
        '[learner]\nname = "qr_dqn"\nquantiles = 8\n',
        '"learner.double" = true\n',
        '"learner.double" = true\n"agent.lr" = 3e-2\n',
    ),
    "munchausen": (
        '[learner]\nname = "munchausen"\n',
        '"learner.alpha" = 0.5\n"learner.tau" = 0.1\n"learner.l0" = -0.5\n',
        '"learner.alpha" = 0.1\n"learner.tau" = 0.01\n"learner.l0" = -2.0\n',
    ),
    # C51's atoms (v_min, v_max), QR-DQN's κ, prioritized replay's α, β and ε
    "c51-support": (
        '[learner]\nname = "c51"\natoms = 11\n',
        '"learner.v_min" = -5.0\n"learner.v_max" = 30.0\n',
        '"learner.v_min" = 0.0\n"learner.v_max" = 100.0\n',
    ),
    "qr-kappa": ('[learner]\nname = "qr_dqn"\nquantiles = 8\n', '"learner.kappa" = 0.5\n', '"learner.kappa" = 3.0\n'),
    "prioritized": (
        '[replay]\nname = "prioritized"\n',
        '"replay.alpha" = 0.3\n"replay.beta" = 0.7\n',
        '"replay.alpha" = 1.0\n"replay.beta" = 0.1\n"replay.eps" = 0.01\n',
    ),
}


@pytest.mark.parametrize("learner", list(LEARNER_VARIANTS))
def test_a_member_never_depends_on_another_members_learner_values(write_grid, tmp_path, learner):
    top, b_one, b_two = LEARNER_VARIANTS[learner]
    grids = [
        _with(write_grid(top + VARIANTS.format(b=b), steps=300, seeds=2, filename=f"{i}.toml"), "lockstep_group = 4")
        for i, b in enumerate((b_one, b_two))
    ]
    one, two = (run(grid, tmp_path / grid.stem) for grid in grids)
    assert set(one.runs.status) == set(two.runs.status) == {"ok"}
    assert len(one.record(one.runs.run_id[0])["lockstep"]["fused"]) == 4  # a and b in one group
    assert_only_b_changed(one, two, ("steps", "evals"))


def test_the_builtin_learners_and_replays_memberwise_values_pass_the_plugins_check():
    from dqnbench.devtools.check import check_components
    from dqnbench.plugin.registry import load_registry

    registry = load_registry(load_entrypoints=False)
    declared = {kind: {n: set(getattr(c.factory, "memberwise", ())) for n, c in registry.components[kind].items()}
                for kind in ("learner", "replay")}  # fmt: skip
    assert declared["learner"]["dqn"] == {"double"}
    assert declared["learner"]["munchausen"] == {"alpha", "tau", "l0"}
    assert declared["learner"]["c51"] == {"v_min", "v_max", "double"}
    assert declared["learner"]["qr_dqn"] == {"kappa", "double"}
    assert declared["replay"]["prioritized"] == {"gamma", "alpha", "beta", "eps"}
    assert declared["replay"]["nstep"] == {"alpha", "beta", "eps"}
    assert check_components(registry, kinds=("learner", "replay")) == []


def test_each_fused_member_is_its_own_run_with_its_own_config(write_grid, tmp_path):
    res = run(_with(write_grid(VARIANTS.format(b=B_ONE), steps=300, seeds=2), "lockstep_group = 4"), tmp_path)
    b = res.runs[res.runs.label == "b"].iloc[0]
    assert b["agent.lr"] == 3e-3 and b["agent.learning_starts"] == 150 and b["exploration.start"] == 0.8
    steps = res.steps[res.steps.run_id == b.run_id]
    # b learns from its own learning_starts on (its loss is NaN before), a from 100
    assert steps.loss[steps.step < 149].isna().all() and steps.loss[steps.step >= 160].notna().any()
    a_steps = res.steps[res.steps.run_id == res.runs.run_id[res.runs.label == "a"].iloc[0]]
    assert a_steps.loss[(a_steps.step >= 100) & (a_steps.step < 149)].notna().any()
    # b's ε follows its own schedule: start 0.8
    assert steps.epsilon.dropna().iloc[0] == pytest.approx(0.8)


def test_no_fuse_and_experiment_fuse_keep_one_group_per_cell(write_grid, registry, tmp_path):
    grid = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-3]\n', seeds=2)
    plan = load_grid(grid, registry)
    cells = lockstep_cells(plan, registry, io.StringIO())
    fused = fusion_pools(plan, registry, cells)
    assert len(fused.pools) == 1 and len(fused.pools[0]) == 2
    groups = lockstep_groups(plan, cells, 1, fused)
    tasks = make_tasks(plan.runs, (), False, groups)
    assert (
        len(tasks) == 1
        and tasks[0].fused
        and [s.cell for s in tasks[0].specs] == [c for c, _, _ in plan.cells for _ in (0, 1)]
    )
    apart = make_tasks(plan.runs, (), False, lockstep_groups(plan, cells, 1))
    assert len(apart) == 2 and not any(t.fused for t in apart)
    off = load_grid(_with(grid, "fuse = false"), registry)
    assert all(len(p) == 1 for p in fusion_pools(off, registry, lockstep_cells(off, registry, io.StringIO())).pools)


def test_free_workers_split_a_fused_pool_only_where_its_groups_stay_above_the_floor(write_grid, registry):
    """A pool whose groups would do too little work to be worth a process (a 4-4-2 net at batch 16: 384
    multiply-adds a member) stays one group on 2 workers; a pool of larger members splits as a cell's seeds do."""
    from dqnbench.run.fusion import SPLIT_MIN_MACS

    sizes = {}
    for hidden in (4, 16, 256):
        grid = write_grid(f'[grid]\n"agent.lr" = [1e-3, 3e-3]\n"network.hidden" = [[{hidden}]]\n', seeds=4)
        plan = load_grid(grid, registry)
        cells = lockstep_cells(plan, registry, io.StringIO())
        fusion = fusion_pools(plan, registry, cells)
        ((first, floor),) = fusion.floors.items()
        sizes[hidden] = (floor, [len(g) for g in lockstep_groups(plan, cells, 2, fusion)[first]])
    learn_macs = 16 * (4 * 4 + 4 * 2)  # batch 16 × one sample's forward through 4-4-2
    assert sizes[4] == (-(-SPLIT_MIN_MACS // learn_macs), [8])  # floor 16: one group of 8 on 2 workers
    assert sizes[16][1] == [4, 4] and sizes[16][0] <= 4  # 16 × 96 multiply-adds a member: floor 4, splits
    assert sizes[256][1] == [4, 4] and sizes[256][0] == 2


def _with(grid, line):
    text = grid.read_text().replace("[experiment]", f"[experiment]\n{line}", 1)
    path = grid.with_name(f"{grid.stem}-with-{len(line)}.toml")
    path.write_text(text)
    return path


def test_lockstep_group_caps_the_members_per_group(write_grid, registry):
    grid = _with(write_grid('[grid]\n"agent.lr" = [1e-3, 3e-3, 1e-2]\n', seeds=3), "lockstep_group = 4")
    plan = load_grid(grid, registry)
    cells = lockstep_cells(plan, registry, io.StringIO())
    groups = lockstep_groups(plan, cells, 1, fusion_pools(plan, registry, cells))
    (parts,) = groups.values()
    assert [len(g) for g in parts] == [3, 3, 3]  # 9 runs, at most 4 each: ⌈9 / 4⌉ = 3 groups
    assert [(s.cell, s.seed) for g in parts for s in g] == [(s.cell, s.seed) for s in plan.runs]


def test_cells_differing_in_shape_keys_do_not_fuse(write_grid, registry):
    grid = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-3]\n"agent.batch_size" = [16, 32]\n', seeds=2)
    plan = load_grid(grid, registry)
    cells = lockstep_cells(plan, registry, io.StringIO())
    fused = fusion_pools(plan, registry, cells)
    assert sorted(map(len, fused.pools)) == [2, 2]  # the two batch sizes apart, each pooling its two lrs
    keys = memberwise_keys(choose(plan.cells[0][2], registry))
    assert {"agent.lr", "agent.gamma", "agent.target_update", "agent.learning_starts", "agent.max_grad_norm"} <= keys
    assert {"exploration.start", "exploration.end", "exploration.fraction", "optimizer.eps"} <= keys
    assert "agent.batch_size" not in keys and "network.hidden" not in keys


def test_compute_bound_networks_do_not_fuse():
    assert fuse_problem(300, 64) is None  # the tutorial-sized MLP
    assert "compute-bound" in fuse_problem(400_000, 32)  # minatar_cnn-sized work per member


def test_dry_run_names_the_fused_groups(write_grid, tmp_path):
    grid = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-3]\n', seeds=2)
    out = subprocess.run(
        [sys.executable, "-m", "dqnbench", "run", "--grid", str(grid), "--dry-run", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "fused" in out.stdout and "4 members" in out.stdout and "seeds [0, 1]" in out.stdout
    apart = subprocess.run(
        [sys.executable, "-m", "dqnbench", "run", "--grid", str(grid), "--dry-run", "--workers", "1", "--no-fuse"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    groups = apart.stdout.split("lock-step groups")[1]
    assert apart.returncode == 0 and "fused" not in groups and groups.count("one group of 2") == 2


def test_experiment_fuse_must_be_a_bool(write_grid, tmp_path):
    grid = _with(write_grid(), 'fuse = "yes"')
    out = subprocess.run(
        [sys.executable, "-m", "dqnbench", "run", "--grid", str(grid), "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2 and "experiment.fuse" in out.stderr and "Traceback" not in out.stderr


def test_a_diverging_member_ends_alone(write_grid, tmp_path):
    res = run(write_grid('[grid]\n"agent.lr" = [1e-3, 1e12]\n', seeds=2), tmp_path)
    assert res.record(res.runs.run_id[0])["lockstep"].get("fused")
    assert (res.runs[res.runs["agent.lr"] == 1e-3].status == "ok").all()
    assert (res.runs[res.runs["agent.lr"] == 1e12].status == "diverged").all()


def test_an_interrupted_fused_group_resumes_to_the_same_results(write_grid, tmp_path):
    grid = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-3]\n', seeds=2)
    first = run(grid, tmp_path)
    gone = first.runs.run_id[3]
    record = json.loads((first.path / "runs" / gone / "meta.json").read_text())
    import shutil

    shutil.rmtree(first.path / "runs" / gone)
    again = run(grid, tmp_path)
    assert json.loads((again.path / "runs" / gone / "meta.json").read_text())["final_return"] == record["final_return"]
    timed = [c for c in first.steps.columns if c.startswith("t_")]  # clocks, not results
    pd.testing.assert_frame_equal(
        first.steps[first.steps.run_id == gone].drop(columns=timed).reset_index(drop=True),
        again.steps[again.steps.run_id == gone].drop(columns=timed).reset_index(drop=True),
    )


# --------------------------------------------------------------------------- the member-wise optimizers


def _stacked(k: int = 3, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(k, 5, 4, generator=g)), torch.nn.Parameter(torch.randn(k, 5, generator=g))]


def _steps(optimizer, params, n=5, active=None):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        for p in params:
            p.grad.copy_(torch.randn(p.shape, generator=g))
        optimizer.step() if active is None else optimizer.step(active)


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_member_optimizers_match_torch_member_by_member(kind):
    lrs, eps = (1e-3, 1e-2, 3e-4), (1e-8, 1e-3, 1e-6)
    params = _stacked()
    if kind == "adam":
        betas = ((0.9, 0.999), (0.8, 0.99), (0.5, 0.9))
        optimizer = adam(params, PerMember(lrs), eps=PerMember(eps), betas=PerMember(betas))
        assert isinstance(optimizer, MemberAdam)
    else:
        optimizer = rmsprop(params, PerMember(lrs), eps=PerMember(eps), alpha=PerMember((0.99, 0.9, 0.95)),
                            centered=True, momentum=PerMember((0.0, 0.5, 0.9)))  # fmt: skip
        assert isinstance(optimizer, MemberRMSprop)
    start = [p.detach().clone() for p in params]
    _steps(optimizer, params)
    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(5)]

    def reference(own, k):
        if kind == "adam":
            return torch.optim.Adam(own, lr=lrs[k], eps=eps[k], betas=betas[k])
        return torch.optim.RMSprop(own, lr=lrs[k], eps=eps[k], alpha=(0.99, 0.9, 0.95)[k], centered=True,
                                   momentum=(0.0, 0.5, 0.9)[k])  # fmt: skip

    assert_members_match_torch(params, start, grads, reference)


def assert_members_match_torch(params, start, grads, reference) -> None:
    """Each member k of ``params`` (stepped from ``start`` on ``grads``) equals ``reference(own, k)``, a
    ``torch.optim`` optimizer of member k's parameters alone, stepped on member k's gradients."""
    for k in range(params[0].shape[0]):
        own = [torch.nn.Parameter(s[k].clone()) for s in start]
        ref = reference(own, k)
        for step in grads:
            for p, grad in zip(own, step):
                p.grad = grad[k].clone()
            ref.step()
        for p, mine in zip(own, params):
            torch.testing.assert_close(mine[k], p.detach(), rtol=2e-5, atol=1e-6)


def test_an_inactive_member_stays_exactly_as_it_was():
    params = _stacked()
    optimizer = adam(params, PerMember((1e-3, 1e-3, 1e-3)))
    before = [p.detach().clone() for p in params]
    _steps(optimizer, params, active=torch.tensor([True, False, True]))
    for p, b in zip(params, before):
        assert torch.equal(p[1], b[1]) and not torch.equal(p[0], b[0])
    assert optimizer.steps.flatten().tolist() == [5.0, 0.0, 5.0]


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "rmsprop-centered"])
def test_an_active_member_steps_the_same_numbers_whether_or_not_another_member_waits(kind):
    """The masked step (a member before its learning_starts) and the all-members step give an active member the
    same numbers bit for bit: a member's results never depend on whether another member has started."""

    def build(params):
        if kind == "adam":
            return adam(params, PerMember((1e-3, 3e-3, 1e-2)), betas=PerMember(((0.9, 0.999), (0.8, 0.99), (0.5, 0.9))))
        return rmsprop(params, PerMember((1e-3, 3e-3, 1e-2)), momentum=PerMember((0.0, 0.5, 0.9)),
                       centered=kind == "rmsprop-centered")  # fmt: skip

    everyone, waiting = _stacked(), _stacked()
    _steps(build(everyone), everyone)
    _steps(build(waiting), waiting, active=torch.tensor([True, False, True]))
    for p, q in zip(everyone, waiting):
        assert torch.equal(p[0], q[0]) and torch.equal(p[2], q[2]) and not torch.equal(p[1], q[1])


@pytest.mark.parametrize("kind", ["adam", "rmsprop", "rmsprop-centered"])
def test_the_variance_floor_changes_no_update(kind):
    """Weights whose gradient is always 0 (behind MinAtar's empty cells) skip the CPU's slow sqrt(0) by a variance
    floor, which leaves every update as torch.optim's: those weights exactly unmoved, the others as torch's."""
    params = _stacked()
    lrs, eps = (1e-3, 1e-2, 3e-4), (1e-8, 1e-3, 1e-6)
    if kind == "adam":
        optimizer = adam(params, PerMember(lrs), eps=PerMember(eps))
    else:
        optimizer = rmsprop(params, PerMember(lrs), eps=PerMember(eps), centered=kind == "rmsprop-centered")
    start = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(5)
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(4)]
    for step in grads:
        step[0][:, :, :2] = 0.0  # two columns of the weight never get a gradient
        for p, grad in zip(params, step):
            p.grad.copy_(grad)
        optimizer.step()
    assert torch.equal(params[0][:, :, :2], start[0][:, :, :2])
    centered = kind == "rmsprop-centered"
    assert_members_match_torch(
        params, start, grads,
        lambda own, k: torch.optim.Adam(own, lr=lrs[k], eps=eps[k]) if kind == "adam"
        else torch.optim.RMSprop(own, lr=lrs[k], eps=eps[k], centered=centered),
    )  # fmt: skip


def test_pools_keep_grid_order(write_grid, registry):
    grid = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-3]\n"network.hidden" = [[16], [8]]\n', seeds=2)
    plan = load_grid(grid, registry)
    cells = lockstep_cells(plan, registry, io.StringIO())
    found = pools(plan, cells, lambda c: choose(c, registry), lambda cell, c: True)
    by_cell = {cell: config for cell, _, config in plan.cells}
    assert [[by_cell[c].network.params["hidden"] for c in pool] for pool in found] == [[[16], [16]], [[8], [8]]]


# --------------------------------------------------------------------------- plugins --check of the declarations


class _Shared:
    """An explorer that declares ``epsilon`` member-wise but applies the first member's value to every row."""

    def __init__(self, epsilon):
        self.epsilon = float(epsilon[0]) if isinstance(epsilon, PerMember) else float(epsilon)

    def value(self, step):
        return self.epsilon

    def select(self, q_values, step):
        return q_values.argmax(dim=1)


def shared_epsilon(n_actions: int, total_steps: int, epsilon: float = 0.2) -> _Shared:
    return _Shared(epsilon)


shared_epsilon.lockstep = True
shared_epsilon.memberwise = ("epsilon",)


class _LrOnce:
    """SGD that declares ``lr`` member-wise but takes the mean of the members' learning rates."""

    def __init__(self, params, lr):
        self.params = params
        self.lr = float(np.mean(lr)) if isinstance(lr, PerMember) else float(lr)

    def step(self, active=None):
        with torch.no_grad():
            for p in self.params:
                p -= self.lr * p.grad


def lr_once(parameters, lr):
    return _LrOnce([p for p in parameters if p.requires_grad], lr)


lr_once.lockstep = True
lr_once.memberwise = ("lr",)


def first_alpha(capacity, obs_dim, gamma, alpha=0.6, members=None):
    """Prioritized replay that declares ``alpha`` member-wise but gives every member the first member's."""
    from dqnbench.builtin.prioritized import prioritized

    return prioritized(capacity, obs_dim, gamma, alpha=alpha[0] if isinstance(alpha, PerMember) else alpha,
                       members=members)  # fmt: skip


first_alpha.supports_members = True
first_alpha.memberwise = ("alpha",)


class _BadMembers:
    @dqnbench.hookimpl
    def dqnbench_explorations(self):
        return {"shared_epsilon": shared_epsilon}

    @dqnbench.hookimpl
    def dqnbench_replays(self):
        return {"first_alpha": first_alpha}

    @dqnbench.hookimpl
    def dqnbench_optimizers(self):
        return {"lr_once": lr_once}


def test_plugins_check_refuses_a_memberwise_param_the_plugin_cannot_take_per_member(monkeypatch):
    from dqnbench.devtools.diagnostics import plugins_command
    from dqnbench.plugin import host

    entry = type("EP", (), {"name": "bad_members", "value": "bad_members.plugin", "load": lambda self: _BadMembers()})()
    entry.dist = type("D", (), {"name": "dqnbench-bad-members", "version": "0.1"})()
    monkeypatch.setattr(host, "entry_points", lambda group: [entry])
    from dqnbench.plugin.registry import load_registry

    out = io.StringIO()
    kinds = ("exploration", "optimizer", "replay")
    code = plugins_command(check=True, stream=out, registry=load_registry(load_entrypoints=True), kinds=kinds)
    text = out.getvalue()
    assert code == 1
    assert all(name in text for name in ("shared_epsilon", "lr_once", "first_alpha", "dqnbench-bad-members"))
    assert "member 1" in text and "memberwise" in text and "draws other slots or weights" in text
    from dqnbench.devtools.check import check_components

    problems = check_components(load_registry(load_entrypoints=True), kinds=kinds)
    assert sorted(p.name for p in problems) == ["first_alpha", "lr_once", "shared_epsilon"]  # the built-ins pass


def test_a_killed_fused_group_resumes_from_its_checkpoint_and_equals_an_uninterrupted_one(
    write_grid,
    registry,
    tmp_path,
    step_counter,  # noqa: F811 - the fixture imported above
):
    from dqnbench.agent import loop
    from dqnbench.agent.checkpoint import Checkpoint
    from dqnbench.run.runner import bind_fused
    from tests.test_checkpoints import Killed, assert_same_runs

    grid = write_grid(VARIANTS.format(b=B_ONE), steps=1000, eval_every=250, seeds=2)
    plan = load_grid(grid, registry)
    configs = [spec.config for spec in plan.runs]
    components, fused = bind_fused(configs, choose(configs[0], registry))
    seeds = [spec.seed for spec in plan.runs]
    expected = loop.train_runs(configs[0], seeds, components, stacked=True, fused=fused)
    components, fused = bind_fused(configs, choose(configs[0], registry))  # fresh components, as a new worker
    checkpoint = Checkpoint(tmp_path / "checkpoints" / "task", every=200)
    step_counter["kill"] = 650
    with pytest.raises(Killed):
        loop.train_runs(configs[0], seeds, components, stacked=True, checkpoint=checkpoint, fused=fused)
    step_counter["steps"], step_counter["kill"] = 0, None
    resumed = loop.train_runs(configs[0], seeds, components, stacked=True, checkpoint=checkpoint, fused=fused)
    assert step_counter["steps"] == 400 and [log.resumed_at for log in resumed] == [600] * 4
    assert_same_runs(expected, resumed)


@pytest.mark.parametrize(
    "name, shape, dtype, params",
    [
        ("mlp", (4,), np.float32, {"hidden": [64, 64]}),
        ("dueling", (4,), np.float32, {}),
        ("noisy", (4,), np.float32, {"dueling": True}),
        ("minatar_cnn", (10, 10, 4), np.bool_, {}),
        ("nature_cnn", (4, 84, 84), np.uint8, {"dueling": True}),
    ],
)
def test_forward_macs_of_builtin_networks_match_torchs_flop_counter(name, shape, dtype, params):
    """The fusion rule's shape count (hooks on linear and conv layers) agrees with torch's FLOP counter."""
    from dqnbench.agent.nets import probe_observations
    from dqnbench.plugin.obs import ObsSpec
    from dqnbench.plugin.registry import load_registry
    from dqnbench.run.fusion import _counted_macs, forward_macs

    obs = ObsSpec(shape, dtype)
    network = load_registry(load_entrypoints=False).get("network", name).factory(obs, 6, **params)
    probe = probe_observations(obs, (1,))
    assert forward_macs(network, probe) == _counted_macs(network, probe) > 0


def test_forward_macs_counts_products_however_the_forward_calls_them():
    """``@`` on a parameter is counted from its shapes; an ``einsum`` hands the count to torch's FLOP counter."""
    from dqnbench.run.fusion import _counted_macs, forward_macs

    class Products(torch.nn.Module):
        def __init__(self, einsum: bool) -> None:
            super().__init__()
            self.weight, self.einsum = torch.nn.Parameter(torch.ones(4, 3)), einsum

        def forward(self, x):
            y = x @ self.weight
            return torch.einsum("bi,ij->bj", y, self.weight.T) if self.einsum else y

    assert forward_macs(Products(False), torch.ones(1, 4)) == 12
    both = Products(True)
    assert forward_macs(both, torch.ones(1, 4)) == _counted_macs(both, torch.ones(1, 4)) == 24
