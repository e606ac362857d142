"""Built-in Q-network ``dueling``: separate state-value and advantage streams.

Wang, Schaul, Hessel, van Hasselt, Lanctot & de Freitas (2016), "Dueling
Network Architectures for Deep Reinforcement Learning", ICML. A shared trunk
feeds a value stream ``V(s)`` and an advantage stream ``A(s, a)``, combined as
(their eq. 9)

    Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a')

Subtracting the mean makes the split identifiable (``mean_a Q = V``) and is
more stable than subtracting the max (their eq. 8): the advantages need only
change as fast as their mean, not follow every change of the best action's.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from dqnbench.plugin.hookspecs import hookimpl


def _relu_mlp(widths: Sequence[int]) -> nn.Sequential:
    """``Linear → ReLU`` for each consecutive pair of ``widths``."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


def _stream(fan_in: int, width: int, n_out: int) -> nn.Sequential:
    """A head: ``Linear → ReLU → Linear`` of ``width`` units, or one ``Linear`` if width is 0."""
    if width == 0:
        return nn.Sequential(nn.Linear(fan_in, n_out))
    return nn.Sequential(nn.Linear(fan_in, width), nn.ReLU(), nn.Linear(width, n_out))


def dueling_combine(value: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """``Q = V + A − mean(A)`` from ``value (B, 1)`` and ``advantages (B, n_actions)``."""
    return value + advantages - advantages.mean(dim=1, keepdim=True)


class DuelingNetwork(nn.Module):
    """``obs → body (shared ReLU trunk) → {value (B, 1), advantage (B, n_actions)} → Q``.

    ``body`` ends at the trunk's last activation, the representation both
    streams share (what embedding plots hook).
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), stream_hidden: int = 64) -> None:
        super().__init__()
        widths = [obs_dim, *hidden]
        self.body = _relu_mlp(widths)
        self.value = _stream(widths[-1], stream_hidden, 1)
        self.advantage = _stream(widths[-1], stream_hidden, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.body(obs)
        return dueling_combine(self.value(features), self.advantage(features))


def dueling(obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), stream_hidden: int = 64) -> DuelingNetwork:
    """Dueling Q-network (Wang et al. 2016).

    :param hidden: widths of the shared trunk's ReLU layers, e.g. ``[64, 64]``;
        ``[]`` feeds the observation straight to the streams.
    :param stream_hidden: width of the one hidden layer of each of the value
        and advantage streams; 0 makes both streams linear.
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {list(hidden)!r}")
    if isinstance(stream_hidden, bool) or not isinstance(stream_hidden, int) or stream_hidden < 0:
        raise ValueError(f"stream_hidden must be a non-negative integer (0 = linear streams), got {stream_hidden!r}")
    return DuelingNetwork(obs_dim, n_actions, tuple(hidden), stream_hidden)


def dueling_lockstep(module: DuelingNetwork, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """K stacked dueling networks on ``x (K, B, obs_dim)`` with batched matmuls (lock-step training)."""
    from dqnbench.agent.lockstep import stacked_linear

    def run(sequential: nn.Sequential, prefix: str, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(sequential):
            h = torch.relu(h) if isinstance(layer, nn.ReLU) else stacked_linear(h, params, f"{prefix}.{i}")
        return h

    features = run(module.body, "body", x)
    value, advantages = run(module.value, "value", features), run(module.advantage, "advantage", features)
    return value + advantages - advantages.mean(dim=-1, keepdim=True)


dueling.lockstep = dueling_lockstep


@hookimpl
def dqnbench_networks() -> dict:
    return {"dueling": dueling}
