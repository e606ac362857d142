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

import torch
from torch import nn

from dqnbench.nn import Linear, as_float_features, obs_shape, relu_mlp, split_outputs
from dqnbench.plugin.hookspecs import hookimpl


def _stream(fan_in: int, width: int, n_out: int) -> nn.Sequential:
    """A head: ``Linear → ReLU → Linear`` of ``width`` units, or one ``Linear`` if width is 0."""
    if width == 0:
        return nn.Sequential(Linear(fan_in, n_out))
    return nn.Sequential(Linear(fan_in, width), nn.ReLU(), Linear(width, n_out))


class DuelingNetwork(nn.Module):
    """``obs → body (shared ReLU trunk) → {value (B, 1), advantage (B, n_actions)} → Q``.

    ``body`` ends at the trunk's last activation, the representation both
    streams share (what embedding plots hook). Shape-generic (:mod:`dqnbench.nn`):
    K stacked members run natively in lock-step. With ``outputs = N > 1`` the
    streams give ``(…, 1, N)`` and ``(…, n_actions, N)``, combined per output.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        stream_hidden: int = 64,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        self.obs_ndim = len(obs_shape(obs_dim))
        self.n_actions, self.outputs = n_actions, outputs
        widths = [int(obs_dim), *hidden]
        self.body = relu_mlp(widths)
        self.value = _stream(widths[-1], stream_hidden, outputs)
        self.advantage = _stream(widths[-1], stream_hidden, n_actions * outputs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.body(as_float_features(obs, self.obs_ndim))
        value, advantages = self.value(features), self.advantage(features)
        if self.outputs == 1:
            return value + advantages - advantages.mean(dim=-1, keepdim=True)
        value = split_outputs(value, 1, self.outputs)
        advantages = split_outputs(advantages, self.n_actions, self.outputs)
        return value + advantages - advantages.mean(dim=-2, keepdim=True)


def dueling(
    obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), stream_hidden: int = 64, outputs: int = 1
) -> DuelingNetwork:
    """Dueling Q-network (Wang et al. 2016).

    :param hidden: widths of the shared trunk's ReLU layers, e.g. ``[64, 64]``;
        ``[]`` feeds the observation straight to the streams.
    :param stream_hidden: width of the one hidden layer of each of the value
        and advantage streams; 0 makes both streams linear.
    :param outputs: outputs per action, set by the loop for distributional learners (not a grid param).
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {list(hidden)!r}")
    if isinstance(stream_hidden, bool) or not isinstance(stream_hidden, int) or stream_hidden < 0:
        raise ValueError(f"stream_hidden must be a non-negative integer (0 = linear streams), got {stream_hidden!r}")
    return DuelingNetwork(obs_dim, n_actions, tuple(hidden), stream_hidden, outputs)


@hookimpl
def dqnbench_networks() -> dict:
    return {"dueling": dueling}
