"""Built-in Q-networks: ``mlp``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dqnbench.hookspecs import hookimpl


class MLPBody(nn.Sequential):
    """Linear + ReLU layers; called as one module (so hooks on ``body`` see its output).

    ``forward`` applies the layers' functions directly instead of calling each
    submodule: same parameters and ``state_dict`` keys as ``nn.Sequential``,
    without the per-module call overhead that dominates tiny networks.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self[::2]:
            x = F.relu(F.linear(x, layer.weight, layer.bias))
        return x


class MLP(nn.Module):
    """A multilayer perceptron with ReLU: ``obs → hidden… → Q-values``.

    ``body`` ends in the penultimate activation (what embedding plots hook) and
    ``out`` is the linear Q-value head.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        widths = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.body = MLPBody(*layers)
        self.out = nn.Linear(widths[-1], n_actions)
        if init_std is not None:  # the tutorial's weight.data.normal_(0, 0.1)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, init_std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return F.linear(self.body(obs), self.out.weight, self.out.bias)


def mlp(
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int] = (64, 64),
    init_std: float | None = None,
) -> MLP:
    """MLP Q-network.

    :param hidden: widths of the hidden layers, e.g. ``[64, 64]``; ``[]`` is linear.
    :param init_std: if set, weights start as N(0, init_std) (the tutorial's
        ``hidden = [10], init_std = 0.1``); otherwise PyTorch's default init.
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {list(hidden)!r}")
    return MLP(obs_dim, n_actions, tuple(hidden), init_std)


def mlp_lockstep(module: MLP, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """K stacked MLPs on ``x (K, B, obs_dim)`` with batched matmuls (lock-step training)."""
    from dqnbench.lockstep import stacked_linear

    for i in range(0, len(module.body), 2):
        x = torch.relu(stacked_linear(x, params, f"body.{i}"))
    return stacked_linear(x, params, "out")


mlp.lockstep = mlp_lockstep


@hookimpl
def dqnbench_networks() -> dict:
    return {"mlp": mlp}
