"""Shape-generic building blocks for Q-networks: one module for a single run and for K lock-step members.

Lock-step training stacks K networks' parameters on a leading dimension
(``weight (K, out, in)``) and feeds them ``x (K, B, in)``. A network built from
these pieces runs stacked parameters natively, with batched matmuls, instead
of through ``torch.func.vmap`` (which costs a few hundred µs of Python per
call): :func:`linear` picks ``addmm`` or ``baddbmm`` from the weight's rank, and
:class:`Linear` is ``torch.nn.Linear`` (same initialisation, same ``state_dict``)
with that forward. Write the rest of ``forward`` over the last dimensions
(``dim=-1``) and the network stacks; ``dqnbench.agent.nets`` checks it once per
run and falls back to vmap when it does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x Wᵀ + b``: ``weight (out, in)`` on ``x (…, in)``, or K stacked ``weight (K, out, in)`` on ``x (K, B, in)``."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class Linear(nn.Linear):
    """``torch.nn.Linear`` that also runs K stacked members (see :func:`linear`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def relu_mlp(widths: list[int] | tuple[int, ...]) -> nn.Sequential:
    """``Linear → ReLU`` for each consecutive pair of ``widths`` (shape-generic)."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


def as_float_features(obs: torch.Tensor, obs_ndim: int) -> torch.Tensor:
    """Observations ``(…, *shape)`` as float32 features ``(…, prod(shape))`` for a flat network.

    uint8 observations (pixels) are scaled to [0, 1]; bools become 0/1. Flat
    float32 vectors pass through untouched, so classic control pays nothing.
    """
    if obs.dtype == torch.uint8:
        obs = obs.float().mul_(1.0 / 255.0)
    elif obs.dtype != torch.float32:
        obs = obs.float()
    return obs.flatten(-obs_ndim) if obs_ndim > 1 else obs


def obs_shape(obs_dim: int) -> tuple[int, ...]:
    """The observation shape of a factory's ``obs_dim`` (an :class:`dqnbench.ObsSpec`, or a plain int: a vector)."""
    return tuple(getattr(obs_dim, "shape", (int(obs_dim),)))


def split_outputs(values: torch.Tensor, n_actions: int, outputs: int) -> torch.Tensor:
    """A head's ``(…, n_actions · outputs)`` as ``(…, n_actions, outputs)``; unchanged when ``outputs == 1``."""
    return values if outputs == 1 else values.unflatten(-1, (n_actions, outputs))
