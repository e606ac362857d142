"""Shape-generic building blocks for Q-networks: one module for a single run and for K lock-step members.

Lock-step training stacks K networks' parameters on a leading dimension
(``weight (K, out, in)``) and feeds them ``x (K, B, in)``. A network built from
these pieces runs stacked parameters natively, with batched matmuls, instead
of through ``torch.func.vmap`` (which costs a few hundred µs of Python per
call): :func:`linear` picks ``addmm`` or ``baddbmm`` from the weight's rank, and
:class:`Linear` is ``torch.nn.Linear`` (same initialisation, same ``state_dict``)
with that forward. :func:`conv2d` and :class:`Conv2d` do the same for
convolutions over images ``(…, C, H, W)``: K stacked members run as one grouped
convolution. Write the rest of ``forward`` over the last dimensions (``dim=-1``;
``flatten(-3)`` for images) and the network stacks; ``dqnbench.agent.nets``
checks it once per run and falls back to vmap when it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from dqnbench.errors import DqnbenchError

T = TypeVar("T")


class UnsupportedObservations(DqnbenchError, ValueError):
    """A network factory given observations it is not built for (a conv net on vectors, an MLP on big frames).

    A user error naming what would fit; ``dqnbench plugins --check`` skips the
    network on such an environment instead of reporting it broken.
    """


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


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """A 2D convolution: ``weight (out, in, kh, kw)`` on ``x (…, in, H, W)``, or K stacked members.

    Stacked, ``weight (K, out, in, kh, kw)`` on ``x (K, B, in, H, W)`` runs as one
    convolution with ``groups=K`` over ``(B, K·in, H, W)``: group ``k`` sees only
    member ``k``'s channels and filters, so it is K independent convolutions in
    one kernel call (the same trick ``torch.func.vmap``'s batching rule for
    convolutions uses, without its per-call Python). The result is returned as
    ``(K, B, out, H', W')``, a view of the ``(B, K, …)`` memory the convolution
    wrote: the next stacked layer takes it back without a copy.
    """
    if weight.dim() == 4:
        if x.dim() <= 4:
            return F.conv2d(x, weight, bias, stride, padding, dilation)
        y = F.conv2d(x.reshape(-1, *x.shape[-3:]), weight, bias, stride, padding, dilation)
        return y.reshape(*x.shape[:-3], *y.shape[-3:])
    members, out_channels = weight.shape[:2]
    if x.dim() != 5 or x.shape[0] != members:
        raise ValueError(f"{members} stacked conv members need input (K={members}, B, C, H, W), got {tuple(x.shape)}")
    batch = x.shape[1]
    grouped = x.transpose(0, 1).reshape(batch, members * x.shape[2], *x.shape[-2:])
    y = F.conv2d(
        grouped,
        weight.reshape(members * out_channels, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        stride,
        padding,
        dilation,
        groups=members,
    )
    return y.view(batch, members, out_channels, *y.shape[-2:]).transpose(0, 1)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` (same initialisation, same ``state_dict``) that also runs K stacked members.

    See :func:`conv2d`. Grouped convolutions and padding modes other than zeros
    are refused: stacking uses the groups itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros":
            raise ValueError(
                f"Conv2d stacks only groups=1, padding_mode='zeros' (got {self.groups}, {self.padding_mode!r})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def conv_output_shape(
    shape: tuple[int, int], kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> tuple[int, int]:
    """``(H', W')`` of a convolution on ``(H, W)`` (non-positive when the image is too small for the kernel)."""
    return tuple((n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1 for n in shape)  # type: ignore[return-value]


def relu_mlp(widths: list[int] | tuple[int, ...]) -> nn.Sequential:
    """``Linear → ReLU`` for each consecutive pair of ``widths`` (shape-generic)."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


def as_float(obs: torch.Tensor) -> torch.Tensor:
    """Observations as float32 in their own shape: uint8 (pixels) scaled by 1/255 to [0, 1], bools as 0/1.

    The 1/255 scaling is Mnih et al. (2015)'s input scaling of Atari frames.
    float32 passes through untouched, so classic control pays nothing.
    """
    if obs.dtype == torch.uint8:
        return obs.float().mul_(1.0 / 255.0)
    return obs if obs.dtype == torch.float32 else obs.float()


def as_float_features(obs: torch.Tensor, obs_ndim: int) -> torch.Tensor:
    """Observations ``(…, *shape)`` as float32 features ``(…, prod(shape))`` for a flat network (:func:`as_float`)."""
    obs = as_float(obs)
    return obs.flatten(-obs_ndim) if obs_ndim > 1 else obs


def obs_shape(obs_dim: int) -> tuple[int, ...]:
    """The observation shape of a factory's ``obs_dim`` (an :class:`dqnbench.ObsSpec`, or a plain int: a vector)."""
    return tuple(getattr(obs_dim, "shape", (int(obs_dim),)))


def split_outputs(values: torch.Tensor, n_actions: int, outputs: int) -> torch.Tensor:
    """A head's ``(…, n_actions · outputs)`` as ``(…, n_actions, outputs)``; unchanged when ``outputs == 1``."""
    return values if outputs == 1 else values.unflatten(-1, (n_actions, outputs))


# --------------------------------------------------------------------------- manual gradients (a network's fast path)

_threshold_backward = torch.ops.aten.threshold_backward

#: one layer's ``(weight, bias)``; bias may be None
Layer = tuple[torch.Tensor, torch.Tensor | None]


def grad_buffer(param: torch.Tensor) -> torch.Tensor:
    """``param.grad`` to write into, made when missing: written in place, since an optimizer may hold the tensor."""
    if param.grad is None:
        param.grad = torch.empty_like(param)
    return param.grad


def linear_backward(delta: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    input_grad: bool = True) -> torch.Tensor | None:  # fmt: skip
    """Backprop of :func:`linear` from ``delta``, the gradient in its output: ``dW = δᵀ x`` and ``db = Σ δ`` into
    ``.grad`` (overwritten), and ``δ W``, the gradient in ``x``, if ``input_grad``.

    One network's ``(B, ·)`` rows, or K members' ``(K, B, ·)`` with stacked weights (batched matmuls).
    """
    mm = torch.mm if weight.dim() == 2 else torch.bmm
    mm(delta.mT, x, out=grad_buffer(weight))
    if bias is not None:
        torch.sum(delta, -2, out=grad_buffer(bias))
    return mm(delta, weight) if input_grad else None


def relu_backward(delta: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``δ ⊙ [h > 0]`` for the ReLU output ``h`` (one kernel, as autograd's)."""
    return _threshold_backward(delta, activation, 0.0)


def relu_layers_forward(x: torch.Tensor, layers: tuple[Layer, ...], relu_last: bool) -> list[torch.Tensor]:
    """``Linear → ReLU`` layers (no ReLU after the last unless ``relu_last``), keeping what backprop needs:
    ``[x, each layer's output]``. Same numbers as the modules (ReLU in place on fresh outputs)."""
    outputs = [x]
    last = len(layers) - 1
    for i, (weight, bias) in enumerate(layers):
        y = linear(outputs[-1], weight, bias)
        outputs.append(y.clamp_min_(0.0) if relu_last or i < last else y)
    return outputs


def relu_layers_backward(delta: torch.Tensor, outputs: list[torch.Tensor], layers: tuple[Layer, ...],
                         relu_last: bool, input_grad: bool = False) -> torch.Tensor | None:  # fmt: skip
    """Backprop of :func:`relu_layers_forward` from ``delta`` (the gradient in its last output): each layer's
    ``.grad``, and the gradient in ``x`` if ``input_grad``."""
    last = len(layers) - 1
    for i in range(last, -1, -1):
        if relu_last or i < last:
            delta = relu_backward(delta, outputs[i + 1])
        weight, bias = layers[i]
        delta = linear_backward(delta, outputs[i], weight, bias, input_grad=i > 0 or input_grad)
    return delta


def combine_streams(value: torch.Tensor, advantages: torch.Tensor, n_actions: int, outputs: int) -> torch.Tensor:
    """Dueling's ``Q = V + A − mean_a A`` (Wang et al. 2016, eq. 9) of ``value (…, outputs)`` and ``advantages
    (…, n_actions · outputs)``: ``(…, n_actions[, outputs])``, per output when ``outputs > 1``."""
    if outputs == 1:
        return value + advantages - advantages.mean(dim=-1, keepdim=True)
    value = split_outputs(value, 1, outputs)
    advantages = split_outputs(advantages, n_actions, outputs)
    return value + advantages - advantages.mean(dim=-2, keepdim=True)


def combine_streams_backward(delta: torch.Tensor, outputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients in :func:`combine_streams`' value ``(…, outputs)`` and advantages ``(…, n_actions · outputs)``
    from ``delta``, the gradient in Q: ``Σ_a δ`` and ``δ − mean_a δ``."""
    actions = -1 if outputs == 1 else -2
    value = delta.sum(dim=actions, keepdim=outputs == 1)
    advantages = delta - delta.mean(dim=actions, keepdim=True)
    return value, advantages if outputs == 1 else advantages.flatten(-2)


def cached_layers(module: nn.Module, probe: torch.Tensor, build: Callable[[], T]) -> T:
    """``build()``'s tensors, kept on ``module`` while ``probe`` (its first parameter) is the one they were built
    with: read through ``nn.Module``'s ``__getattr__`` at every step, a dozen lookups cost a tiny network ~2% of its
    speed, and stacking gives modules new parameters."""
    cached = module.__dict__.get("_dqnbench_layers")
    if cached is None or cached[0] is not probe:
        cached = (probe, build())
        module.__dict__["_dqnbench_layers"] = cached
    return cached[1]
