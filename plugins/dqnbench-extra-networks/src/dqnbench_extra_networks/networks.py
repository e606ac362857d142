"""Q-networks with LayerNorm: a drop-in ``mlp`` replacement and a deeper residual one.

Both map float32 observations ``(B, obs_dim)`` to Q-values ``(B, n_actions)``,
as dqnbench's network contract asks, and expose ``body`` (everything up to the
representation the Q-value head reads, which dqnbench's embedding plots hook)
and ``out`` (the linear head). They hold no state outside parameters, so their
``state_dict()`` is the whole network.

Why LayerNorm: normalising pre-activations keeps the features bounded while the
TD targets move, which curbs the value divergence and the loss of plasticity
that plain MLPs suffer under bootstrapping (Ball et al. 2023; Lyle et al. 2023;
Gallici et al. 2025 show it stabilises TD learning enough to drop the target
network). Residual blocks with pre-LayerNorm are what lets value networks grow
deeper and wider without getting worse (Lee et al. 2025, SimBa).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class LayerNormMLP(nn.Module):
    """``obs → [Linear → LayerNorm → ReLU] per hidden width → Linear → Q``.

    ``body`` ends at the last ReLU; ``out`` is the Q-value head.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        widths = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), nn.LayerNorm(fan_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(widths[-1], n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(obs))


class ResidualBlock(nn.Module):
    """``x + W₂ ReLU(W₁ LayerNorm(x))``: a pre-LayerNorm feed-forward block.

    The identity path carries the input through unchanged, so stacking blocks
    starts out close to the shallow network and depth only adds what helps.
    """

    def __init__(self, width: int, expansion: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, expansion * width), nn.ReLU(), nn.Linear(expansion * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class ResidualMLP(nn.Module):
    """``obs → Linear(width) → blocks × ResidualBlock → LayerNorm → Linear → Q`` (SimBa's shape).

    ``body`` ends at the final LayerNorm (the representation the head reads);
    ``out`` is the Q-value head. SimBa's running observation normalisation is
    left out: it would need statistics updated outside the optimiser.
    """

    def __init__(self, obs_dim: int, n_actions: int, width: int = 64, blocks: int = 2, expansion: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(obs_dim, width),
            *(ResidualBlock(width, expansion) for _ in range(blocks)),
            nn.LayerNorm(width),
        )
        self.out = nn.Linear(width, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(obs))


def layernorm_mlp(obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64)) -> LayerNormMLP:
    """MLP Q-network with LayerNorm before every hidden ReLU.

    :param hidden: hidden-layer widths, as for the built-in ``mlp`` (so it is a
        drop-in replacement in a grid); ``[]`` is a linear Q-function.
    """
    hidden = [_positive_int("hidden widths", w) for w in hidden]
    return LayerNormMLP(obs_dim, n_actions, hidden)


def residual_mlp(obs_dim: int, n_actions: int, width: int = 64, blocks: int = 2, expansion: int = 4) -> ResidualMLP:
    """Residual Q-network of pre-LayerNorm feed-forward blocks (SimBa without observation normalisation).

    :param width: width of the residual stream.
    :param blocks: number of residual blocks (0 = one linear layer, LayerNorm, head).
    :param expansion: each block's hidden layer is ``expansion × width`` wide (4 in SimBa).
    """
    width = _positive_int("width", width)
    expansion = _positive_int("expansion", expansion)
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
        raise ValueError(f"blocks must be a non-negative integer, got {blocks!r}")
    return ResidualMLP(obs_dim, n_actions, width, blocks, expansion)
