"""Learners and optimizers are components: grid sections, v1 keys, the learner contract's reach, bad input."""

from __future__ import annotations

import io
import types

import numpy as np
import pytest
import torch

import dqnbench
from dqnbench.config.grid import load_grid
from dqnbench.errors import GridError
from dqnbench.run.runner import prepare


def plugin(name: str, **hooks):
    """An in-process plugin module with the given hook implementations."""
    return types.SimpleNamespace(__name__=name, **{k: dqnbench.hookimpl(v) for k, v in hooks.items()})


def run(grid, out, plugins=(), **kwargs):
    return dqnbench.run_grid(
        grid,
        out,
        executor="serial",
        load_entrypoints=False,
        plugins=list(plugins),
        stream=io.StringIO(),
        **kwargs,
        plots=False,
    )


class MeanOfOutputs(dqnbench.LearnerBase):
    """A toy distributional rule: ``outputs`` values per action whose mean is Q, each regressed on the TD target.

    Its priorities are a constant it was given (to see them reach the replay), and it reads the target
    network on the *current* observations, as Munchausen DQN's log-policy term does.
    """

    def __init__(self, outputs: int = 4, priority: float = 7.0) -> None:
        self.outputs, self.priority = outputs, priority

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.mean(dim=-1)

    def loss(self, nets, batch) -> dqnbench.LearnerLoss:
        values = nets.online(batch.obs)  # (…, B, A, N)
        taken = values.gather(-2, batch.actions[..., None, None].expand(*batch.actions.shape, 1, self.outputs))
        with torch.no_grad():
            log_policy = torch.log_softmax(self.q_values(nets.target(batch.obs)), dim=-1)  # Munchausen's term
            bonus = 0.0 * log_policy.gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
            next_q = self.q_values(nets.target(batch.next_obs)).amax(dim=-1)
            target = batch.rewards + bonus + batch.discounts * (~batch.terminated) * next_q
        losses = (taken.squeeze(-2) - target.unsqueeze(-1)).pow(2).mean(dim=-1)
        return dqnbench.LearnerLoss(losses, torch.full_like(losses, self.priority).detach())


def mean_of_outputs(n_actions: int, outputs: int = 4, priority: float = 7.0) -> MeanOfOutputs:
    return MeanOfOutputs(outputs, priority)


mean_of_outputs.lockstep = True

LEARNER_PLUGIN = plugin("mean_of_outputs_plugin", dqnbench_learners=lambda: {"mean_of_outputs": mean_of_outputs})


def test_grid_sections_pick_learner_optimizer_and_env_and_record_their_params(write_grid, tmp_path):
    grid = write_grid(
        '[learner]\nloss = "huber"\n[optimizer.rmsprop]\nalpha = 0.95\neps = 0.01\ncentered = true\n'
        '[grid]\n"optimizer.name" = ["adam", "rmsprop"]\n',
        steps=200,
    )
    res = run(grid, tmp_path / "out")
    assert set(res.runs.status) == {"ok"}
    rms = res.runs[res.runs["optimizer.name"] == "rmsprop"]
    assert set(rms["optimizer.alpha"]) == {0.95} and set(rms["optimizer.centered"]) == {True}
    adam = res.runs[res.runs["optimizer.name"] == "adam"]
    assert set(adam["optimizer.eps"]) == {1e-8} and set(res.runs["learner.loss"]) == {"huber"}
    assert set(res.runs["env.name"]) == {"auto"} and set(res.runs["learner.name"]) == {"dqn"}
    rms_loss = res.steps[res.steps.run_id.isin(rms.run_id)].loss.sum()
    assert rms_loss != res.steps[res.steps.run_id.isin(adam.run_id)].loss.sum()  # another optimizer, other steps


def with_agent_keys(grid, keys: str):
    grid.write_text(grid.read_text().replace("[agent]\n", f"[agent]\n{keys}"))
    return grid


def test_v1_agent_keys_are_the_dqn_learners_params_and_the_learner_table_wins(write_grid, registry):
    grid = with_agent_keys(write_grid(), 'double = true\nloss = "huber"\n')
    (config,) = [c for _, _, c in load_grid(grid, registry).cells]
    assert config.learner.params == {"double": True, "loss": "huber"}
    grid = with_agent_keys(write_grid("[learner]\ndouble = false\n"), "double = true\n")
    (config,) = [c for _, _, c in load_grid(grid, registry).cells]
    assert config.learner.params["double"] is False


@pytest.mark.parametrize(
    "extra, key, expected",
    [
        (
            '[learner]\nname = "c52"\n',
            "learner.name",
            'unknown learner "c52" (allowed: c51, dqn, iqn, munchausen, qr_dqn; did you mean "c51"?)',
        ),
        ('[optimizer]\nname = "adma"\n', "optimizer.name", 'did you mean "adam"?'),
        ('[env]\nname = "gymnasim"\n', "env.name", "allowed: atari, auto, gymnasium, minatar"),
        ("[optimizer]\nmomentum = 0.9\n", "optimizer.momentum", "has no parameter 'momentum'"),
    ],
)
def test_unknown_components_and_params_name_key_and_allowed_values(write_grid, registry, extra, key, expected):
    with pytest.raises(GridError) as err:
        load_grid(write_grid(extra), registry)
    assert f"{key}: " in str(err.value) and expected in str(err.value)


def test_v1_agent_keys_mean_nothing_to_a_learner_without_them_so_a_v1_grid_can_gain_a_learner_axis(write_grid):
    """DESIGN.md: ``agent.double`` and ``agent.loss`` mean the ``dqn`` learner's params. A learner that has no
    such param ignores them (``double`` reaches ``c51`` and ``qr_dqn``, which define it), instead of refusing
    the grid: ``[agent] loss = "huber"`` plus a learner axis used to exit 2 for the ``c51`` cell."""
    from dqnbench.plugin.registry import load_registry

    registry = load_registry(False, (LEARNER_PLUGIN,))
    grid = with_agent_keys(
        write_grid('[grid]\n"learner.name" = ["dqn", "c51", "qr_dqn", "munchausen", "mean_of_outputs"]\n'),
        'double = true\nloss = "huber"\n',
    )
    params = {c.learner.name: c.learner.params for _, _, c in load_grid(grid, registry).cells}
    assert params["dqn"]["double"] is True and params["dqn"]["loss"] == "huber"
    assert params["c51"]["double"] is True and "loss" not in params["c51"]
    assert params["qr_dqn"]["double"] is True and "loss" not in params["qr_dqn"]
    assert "double" not in params["munchausen"] and "double" not in params["mean_of_outputs"]


def test_a_learner_needing_several_outputs_and_a_v1_network_exit_2_naming_both(write_grid, tmp_path):
    def v1_net(obs_dim, n_actions, width=8):
        return torch.nn.Sequential(torch.nn.Linear(obs_dim, width), torch.nn.ReLU(), torch.nn.Linear(width, n_actions))

    plugins = [LEARNER_PLUGIN, plugin("v1_net_plugin", dqnbench_networks=lambda: {"v1_net": v1_net})]
    grid = write_grid('[learner]\nname = "mean_of_outputs"\n[network]\nname = "v1_net"\n')
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    with pytest.raises(GridError) as err:
        prepare(grid, plugins, load_entrypoints=False)
    message = str(err.value)
    assert "network.name" in message and 'learner "mean_of_outputs"' in message and 'network "v1_net"' in message
    from dqnbench.cli import main

    assert main(["run", "--grid", str(grid), "--out", str(tmp_path), "--quiet"]) == 2  # built-ins only: unknown name


@pytest.mark.parametrize("network", ["mlp", "dueling", "noisy"])
def test_several_outputs_per_action_train_single_and_lockstep_without_touching_the_loop(write_grid, tmp_path, network):
    """The learner asks for 4 outputs per action; built-in networks give (…, A, 4), dueling combined per output."""
    grid = write_grid(f'[learner]\nname = "mean_of_outputs"\n[network]\nname = "{network}"\n', steps=200)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", ""))
    for lockstep in (True, False):
        res = run(grid, tmp_path / f"out-{lockstep}", [LEARNER_PLUGIN], lockstep=lockstep)
        assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
        assert all(("lockstep" in res.record(r)) == lockstep for r in res.runs.run_id)
        weights = res.weights(res.runs.run_id[0])
        head = "out.weight" if network == "mlp" else ("advantage.2.weight" if network == "dueling" else "out.weight_mu")
        assert weights[head].shape[0] == 2 * 4  # n_actions × outputs


def test_the_learners_own_priorities_reach_a_prioritized_replay(write_grid, tmp_path):
    seen = []
    from dqnbench.builtin.prioritized import prioritized

    def spying(capacity, obs_dim, gamma, **params):
        buffer = prioritized(capacity, obs_dim, gamma, **params)
        original = buffer.update_priorities
        buffer.update_priorities = lambda indices, priorities: (
            seen.append(priorities.clone()) or original(indices, priorities)
        )
        return buffer

    spying.supports_members = True  # takes rows, as the built-in it wraps (members= arrives in params)
    plugins = [LEARNER_PLUGIN, plugin("spy_replay", dqnbench_replays=lambda: {"spying": spying})]
    grid = write_grid('[learner]\nname = "mean_of_outputs"\npriority = 5.0\n[replay]\nname = "spying"\n', seeds=1)
    res = run(grid, tmp_path / "out", plugins)
    assert set(res.runs.status) == {"ok"} and seen
    assert all(torch.equal(p, torch.full_like(p, 5.0)) for p in seen)


def test_an_optimizer_without_lockstep_support_runs_its_cell_independently_with_a_notice(write_grid, tmp_path):
    def sgd(parameters, lr, momentum: float = 0.0):
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum)

    grid = write_grid('[optimizer]\nname = "sgd"\nmomentum = 0.5\n', steps=200)
    stream = io.StringIO()
    res = dqnbench.run_grid(
        grid,
        tmp_path / "out",
        executor="serial",
        load_entrypoints=False,
        plugins=[plugin("sgd_plugin", dqnbench_optimizers=lambda: {"sgd": sgd})],
        stream=stream,
        plots=False,
    )
    assert set(res.runs.status) == {"ok"} and set(res.runs["optimizer.momentum"]) == {0.5}
    assert 'optimizer "sgd"' in stream.getvalue() and "runs its seeds independently" in stream.getvalue()


def test_a_v1_plugin_runs_unchanged_single_and_lockstep(write_grid, tmp_path):
    """Factories written to the v1 table: ``(obs_dim: int, n_actions)`` networks, float32 ``obs_dim`` replays."""

    def v1_net(obs_dim, n_actions):
        return torch.nn.Sequential(torch.nn.Linear(obs_dim, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_actions))

    class V1Replay:
        def __init__(self, capacity, obs_dim, gamma):
            self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
            self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
            self.rest = np.zeros((capacity, 3), dtype=np.float32)
            self.size, self.gamma = 0, gamma

        def add(self, obs, action, reward, next_obs, terminated):
            i = self.size % len(self.obs)
            self.obs[i], self.next_obs[i], self.rest[i] = obs, next_obs, (action, reward, terminated)
            self.size += 1

        def sample(self, batch_size):
            i = np.random.randint(0, min(self.size, len(self.obs)), batch_size)
            rest = torch.from_numpy(self.rest[i])
            return dqnbench.Batch(torch.from_numpy(self.obs[i]), rest[:, 0].long(), rest[:, 1].contiguous(),
                                  torch.from_numpy(self.next_obs[i]), rest[:, 2].bool(), torch.ones(batch_size),
                                  torch.from_numpy(i), torch.full((batch_size,), self.gamma))  # fmt: skip

        def update_priorities(self, indices, td_errors):
            pass

        def __len__(self):
            return min(self.size, len(self.obs))

    def v1_replay(capacity, obs_dim, gamma):
        return V1Replay(capacity, obs_dim, gamma)

    v1_replay.lockstep = None  # v1 replays without a members-factory: the cell runs its seeds independently
    v1 = plugin("v1_plugin", dqnbench_networks=lambda: {"v1_net": v1_net}, dqnbench_replays=lambda: {"v1": v1_replay})
    grid = write_grid('[network]\nname = "v1_net"\n[replay]\nname = "v1"\n', steps=250)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", "", 1))
    res = run(grid, tmp_path / "out", [v1])
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    grid = write_grid('[network]\nname = "v1_net"\n', steps=250, name="lock")  # the v1 network in lock-step (vmap)
    grid.write_text(grid.read_text().replace("[network]\nhidden = [16]\n", "", 1))
    res = run(grid, tmp_path / "out", [v1])
    assert set(res.runs.status) == {"ok"}
