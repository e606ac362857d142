"""Misbehaving components, importable by module name so process workers can load them."""

from __future__ import annotations

import torch

import dqnbench
from dqnbench.builtin.networks import mlp


def broken_at_construction(obs_dim: int, n_actions: int):
    raise RuntimeError("cannot build this network")


class WrongShape(torch.nn.Module):
    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.out = torch.nn.Linear(obs_dim, n_actions + 1)

    def forward(self, x):
        return self.out(x)


class SqueezesOneRow(torch.nn.Module):
    """Right at every batch but 1, the acting batch: ``squeeze`` drops its batch axis."""

    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.out = torch.nn.Linear(obs_dim, n_actions)

    def forward(self, x):
        return self.out(x).squeeze(0)


class RaisesMidRun:
    """A replay whose sample raises after a while."""

    def __init__(self, capacity: int, obs_dim: int, gamma: float):
        self.n = 0

    def add(self, obs, action, reward, next_obs, terminated):
        self.n += 1

    def sample(self, batch_size):
        raise ValueError("sampling exploded")

    def update_priorities(self, indices, td_errors):
        pass

    def __len__(self):
        return self.n


def nan_network(obs_dim: int, n_actions: int):
    net = mlp(obs_dim, n_actions, hidden=[8])
    with torch.no_grad():
        net.out.bias.fill_(float("inf"))
    return net


@dqnbench.hookimpl
def dqnbench_networks():
    return {
        "broken": broken_at_construction,
        "wrong_shape": WrongShape,
        "squeeze_q": SqueezesOneRow,
        "nan_net": nan_network,
    }


@dqnbench.hookimpl
def dqnbench_replays():
    return {"exploding": RaisesMidRun}
