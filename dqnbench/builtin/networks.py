"""Built-in Q-network ``mlp``: a multilayer perceptron of ReLU layers.

Shape-generic (:mod:`dqnbench.nn`): the same module runs one network or K
stacked lock-step members. It offers the manual path (``manual_forward``,
``manual_backward``: :mod:`dqnbench.agent.learning`), its gradients derived by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dqnbench.nn import (
    UnsupportedObservations,
    as_float_features,
    cached_layers,
    linear,
    obs_shape,
    relu_layers_backward,
    relu_layers_forward,
    split_outputs,
)
from dqnbench.plugin.hookspecs import hookimpl

#: the most values an image observation may have for ``mlp`` to flatten it (MinAtar's 400 are fine,
#: Atari's 4×84×84 = 28,224 are not: a conv network is what such frames need)
MAX_FLAT_IMAGE = 4096


class MLPBody(nn.Sequential):
    """Linear + ReLU layers; called as one module (so hooks on ``body`` see its output).

    ``forward`` applies the layers' functions directly instead of calling each
    submodule: same parameters and ``state_dict`` keys as ``nn.Sequential``,
    without the per-module call overhead that dominates tiny networks.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        # The Linear layers, listed once: slicing a Sequential builds a new module on every call, which
        # costs more than the math. Modules, not their parameters, so stacking can swap them.
        self.linears = tuple(m for m in layers if isinstance(m, nn.Linear))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.linears:
            x = F.relu(linear(x, layer.weight, layer.bias))
        return x


class MLP(nn.Module):
    """A multilayer perceptron with ReLU: ``obs → hidden… → Q-values``.

    ``body`` ends in the penultimate activation (what embedding plots hook) and
    ``out`` is the linear head: ``n_actions`` Q-values, or ``n_actions × outputs``
    values shaped ``(…, n_actions, outputs)`` for distributional learners.
    Non-vector observations are flattened (uint8 scaled to [0, 1]).
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        init_std: float | None = None,
        outputs: int = 1,
    ) -> None:
        super().__init__()
        shape = obs_shape(obs_dim)
        self.obs_ndim = len(shape)
        self.n_actions, self.outputs = n_actions, outputs
        widths = [int(obs_dim), *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.body = MLPBody(*layers)
        self.out = nn.Linear(widths[-1], n_actions * outputs)
        if init_std is not None:  # the tutorial's weight.data.normal_(0, 0.1)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, init_std)
        self.linears = (*self.body.linears, self.out)
        #: the features split (:mod:`dqnbench.agent.heads`): ``body``'s output, ``out`` is the head
        self.feature_dim = widths[-1]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.body(as_float_features(obs, self.obs_ndim))
        return split_outputs(linear(x, self.out.weight, self.out.bias), self.n_actions, self.outputs)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The last hidden activation ``(…, B, feature_dim)`` (the observations themselves with no hidden layer)."""
        return self.body(as_float_features(obs, self.obs_ndim))

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The head on features ``(…, R, feature_dim)``: ``forward(obs) == from_features(features(obs))``."""
        return split_outputs(linear(features, self.out.weight, self.out.bias), self.n_actions, self.outputs)

    def manual_layers(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Each linear layer's ``(weight, bias)``, the head last (kept: :func:`~dqnbench.nn.cached_layers`)."""
        linears = self.linears
        probe = linears[0]._parameters["weight"]  # not through nn.Module's __getattr__: ~1 µs
        return cached_layers(self, probe, lambda: tuple((m.weight, m.bias) for m in linears))

    def manual_forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``forward(obs)`` without module calls, and what :meth:`manual_backward` needs (each layer's output)."""
        tape = relu_layers_forward(as_float_features(obs, self.obs_ndim), self.manual_layers(), relu_last=False)
        return split_outputs(tape[-1], self.n_actions, self.outputs), tape

    def manual_backward(self, tape: list[torch.Tensor], grad: torch.Tensor) -> None:
        """Every parameter's ``.grad`` from ``grad``, the loss's gradient in the outputs, by backprop written out:
        ``dW_l = δ_lᵀ h_l``, ``db_l = Σ δ_l``, ``δ_{l−1} = (δ_l W_l) ⊙ [h_l > 0]``."""
        delta = grad if self.outputs == 1 else grad.flatten(-2)
        relu_layers_backward(delta, tape, self.manual_layers(), relu_last=False)


def mlp(
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int] = (64, 64),
    init_std: float | None = None,
    outputs: int = 1,
) -> MLP:
    """MLP Q-network.

    :param hidden: widths of the hidden layers, e.g. ``[64, 64]``; ``[]`` is linear.
    :param init_std: if set, weights start as N(0, init_std) (the tutorial's
        ``hidden = [10], init_std = 0.1``); otherwise PyTorch's default init.
    :param outputs: outputs per action, set by the loop for distributional learners (not a grid param).

    Image observations of more than ``MAX_FLAT_IMAGE`` values (Atari frames) are
    refused with an error naming the conv networks: flattened, their first
    layer alone would hold millions of weights and ignore the pixels' layout.
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {list(hidden)!r}")
    shape = obs_shape(obs_dim)
    if len(shape) > 1 and int(obs_dim) > MAX_FLAT_IMAGE:
        raise UnsupportedObservations(
            f"mlp would flatten {obs_dim!r} into {int(obs_dim):,} inputs (at most {MAX_FLAT_IMAGE:,}); "
            "for image observations choose the nature_cnn or minatar_cnn network"
        )
    return MLP(obs_dim, n_actions, tuple(hidden), init_std, outputs)


@hookimpl
def dqnbench_networks() -> dict:
    return {"mlp": mlp}
