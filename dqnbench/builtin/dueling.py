"""Built-in Q-network ``dueling``: separate state-value and advantage streams.

Wang, Schaul, Hessel, van Hasselt, Lanctot & de Freitas (2016), "Dueling
Network Architectures for Deep Reinforcement Learning", ICML. A shared trunk
feeds a value stream ``V(s)`` and an advantage stream ``A(s, a)``, combined as
(their eq. 9)

    Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a')

Subtracting the mean makes the split identifiable (``mean_a Q = V``) and is
more stable than subtracting the max (their eq. 8): the advantages need only
change as fast as their mean, not follow every change of the best action's.
The network offers the manual path (:mod:`dqnbench.agent.learning`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dqnbench.nn import (
    Linear,
    as_float_features,
    cached_layers,
    combine_streams,
    combine_streams_backward,
    obs_shape,
    relu_layers_backward,
    relu_layers_forward,
    relu_mlp,
)
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
        self.feature_dim = widths[-1]
        # the Linear layers of the trunk and of each stream, listed once (modules: stacking swaps their parameters)
        self.linears = tuple(tuple(m for m in part if isinstance(m, nn.Linear)) for part in self.streams())

    def streams(self) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
        """The trunk, the value stream and the advantage stream."""
        return self.body, self.value, self.advantage

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(obs))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The shared trunk's last activation ``(…, B, feature_dim)`` (features split: :mod:`dqnbench.agent.heads`)."""
        return self.body(as_float_features(obs, self.obs_ndim))

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The two streams, combined, on features ``(…, R, feature_dim)``."""
        return combine_streams(self.value(features), self.advantage(features), self.n_actions, self.outputs)

    def manual_layers(self) -> tuple[tuple[tuple[torch.Tensor, torch.Tensor], ...], ...]:
        """``(weight, bias)`` of each linear layer of the trunk, the value and the advantage stream."""
        linears = self.linears
        probe = linears[1][0]._parameters["weight"]  # not through nn.Module's __getattr__: ~1 µs
        return cached_layers(self, probe, lambda: tuple(tuple((m.weight, m.bias) for m in part) for part in linears))

    def manual_forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, tuple[list[torch.Tensor], ...]]:
        """``forward(obs)`` without module calls, and what :meth:`manual_backward` needs (each layer's output)."""
        trunk, value, advantage = self.manual_layers()
        features = relu_layers_forward(as_float_features(obs, self.obs_ndim), trunk, relu_last=True)
        values = relu_layers_forward(features[-1], value, relu_last=False)
        advantages = relu_layers_forward(features[-1], advantage, relu_last=False)
        q = combine_streams(values[-1], advantages[-1], self.n_actions, self.outputs)
        return q, (features, values, advantages)

    def manual_backward(self, tape: tuple[list[torch.Tensor], ...], grad: torch.Tensor) -> None:
        """Every parameter's ``.grad`` from ``grad``, the loss's gradient in the outputs: both streams' backprop,
        their gradients in the features summed, then the trunk's."""
        (trunk, value, advantage), (features, values, advantages) = self.manual_layers(), tape
        d_value, d_advantages = combine_streams_backward(grad, self.outputs)
        d_features = relu_layers_backward(d_value, values, value, relu_last=False, input_grad=bool(trunk))
        d_from_advantages = relu_layers_backward(
            d_advantages, advantages, advantage, relu_last=False, input_grad=bool(trunk)
        )
        if trunk:
            relu_layers_backward(d_features.add_(d_from_advantages), features, trunk, relu_last=True)


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
