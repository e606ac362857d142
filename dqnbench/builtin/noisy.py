"""Built-in Q-network ``noisy``: NoisyNet layers that explore by perturbing weights.

Fortunato, Azar, Piot, Menick, Osband, Graves, Mnih, Munos, Hassabis, Pietquin,
Blundell & Legg (2018), "Noisy Networks for Exploration", ICLR. Every linear
layer ``y = W x + b`` becomes

    y = (μ_W + σ_W ⊙ ε_W) x + μ_b + σ_b ⊙ ε_b

with learned ``μ`` and ``σ``. With *factorised* Gaussian noise (their §3.2) a
layer of ``p`` inputs and ``q`` outputs draws only ``p + q`` normals:
``ε_W = f(ε_out) f(ε_in)ᵀ``, ``ε_b = f(ε_out)``, ``f(x) = sgn(x) √|x|``. The
network learns how much to explore, so pair it with the ``greedy`` exploration.
The network offers the manual path (:mod:`dqnbench.agent.learning`).

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.noisy``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from dqnbench.nn import (
    as_float_features,
    cached_layers,
    combine_streams,
    combine_streams_backward,
    grad_buffer,
    linear,
    linear_backward,
    obs_shape,
    relu_backward,
    split_outputs,
)
from dqnbench.plugin.hookspecs import hookimpl


def scaled_noise(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``f(ε) = sgn(ε) √|ε|`` of standard normals of ``shape`` (Fortunato et al. 2018, §3.2)."""
    eps = torch.randn(shape, device=device)
    return eps.sign() * eps.abs().sqrt()


class NoisyLinear(nn.Module):
    """A linear layer with factorised Gaussian weight noise.

    Initialisation follows the paper's factorised case: ``μ ~ U[−1/√p, 1/√p]``
    and ``σ = σ₀ / √p`` for ``p`` inputs. Shape-generic (:mod:`dqnbench.nn`):
    with K stacked members (``weight_mu (K, out, in)``) each member draws its own
    noise, shared by the rows of its batch.
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noisy_linear(x, (self.weight_mu, self.weight_sigma, self.bias_mu, self.bias_sigma))[0]

    def noise(self, members: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``f(ε_in)``, ``f(ε_out)``: one draw per member (``members``: () for one network, (K,) stacked), shared
        by the rows of its batch."""
        size = self.in_features + self.out_features
        f = scaled_noise((*members, 1, size) if members else (size,), device)
        return f.split((self.in_features, self.out_features), -1)

    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``μ_W, σ_W, μ_b, σ_b`` (kept between steps: :func:`~dqnbench.nn.cached_layers`)."""
        probe = self._parameters["weight_mu"]  # not through nn.Module's __getattr__: ~1 µs
        return cached_layers(self, probe, lambda: (self.weight_mu, self.weight_sigma, self.bias_mu, self.bias_sigma))

    def noisy_linear(
        self, x: torch.Tensor, params: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The layer on ``x`` with parameters ``μ_W, σ_W, μ_b, σ_b``, and what :meth:`noisy_backward` needs: the noise
        and ``x ⊙ f_in`` (None in eval mode, which draws none)."""
        weight_mu, weight_sigma, bias_mu, bias_sigma = params
        mean = linear(x, weight_mu, bias_mu)
        if not self.training:
            return mean, None
        f_in, f_out = self.noise(weight_mu.shape[:-2], x.device)
        # (σ_W ⊙ f_out f_inᵀ) x = f_out ⊙ (σ_W (f_in ⊙ x)): never builds the q × p noise matrix.
        scaled = x * f_in
        return mean + f_out * linear(scaled, weight_sigma, bias_sigma), (f_in, f_out, scaled)

    def noisy_backward(
        self, saved: tuple[torch.Tensor, ...] | None, delta: torch.Tensor, x: torch.Tensor, input_grad: bool
    ) -> torch.Tensor | None:
        """``μ``'s and ``σ``'s ``.grad`` from ``delta``, the gradient in the output (``x``: the input); the gradient
        in ``x`` if ``input_grad``: ``δ μ_W + ((δ ⊙ f_out) σ_W) ⊙ f_in``."""
        weight_mu, weight_sigma, bias_mu, bias_sigma = self.params()
        grad_x = linear_backward(delta, x, weight_mu, bias_mu, input_grad)
        if saved is None:  # no noise drawn: σ played no part
            grad_buffer(weight_sigma).zero_()
            grad_buffer(bias_sigma).zero_()
            return grad_x
        f_in, f_out, scaled = saved
        noisy = delta * f_out
        grad_scaled = linear_backward(noisy, scaled, weight_sigma, bias_sigma, input_grad)
        return grad_x.addcmul_(grad_scaled, f_in) if input_grad else None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class NoisyNetwork(nn.Module):
    """An MLP whose every layer is a :class:`NoisyLinear`: ``obs → body → out``.

    ``body`` ends at the last hidden ReLU (what embedding plots hook) and
    ``out`` is the noisy Q-value head. With ``dueling`` the head is two noisy
    streams instead, ``value`` and ``advantage``, combined as the ``dueling``
    network does (Wang et al. 2016, eq. 9), per output when ``outputs > 1``:
    Rainbow's network (Hessel et al. 2018).
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        sigma0: float = 0.5,
        outputs: int = 1,
        dueling: bool = False,
    ) -> None:
        super().__init__()
        self.obs_ndim = len(obs_shape(obs_dim))
        self.n_actions, self.outputs, self.dueling = n_actions, outputs, dueling
        widths = [int(obs_dim), *hidden]
        self.feature_dim = widths[-1]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(widths):
            layers += [NoisyLinear(fan_in, fan_out, sigma0), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        if dueling:
            self.value = NoisyLinear(widths[-1], outputs, sigma0)
            self.advantage = NoisyLinear(widths[-1], n_actions * outputs, sigma0)
        else:
            self.out = NoisyLinear(widths[-1], n_actions * outputs, sigma0)
        # the noisy layers, listed once: the body's, then the head's (value and advantage, or out)
        self.noisy_body = tuple(m for m in layers if isinstance(m, NoisyLinear))
        self.noisy_head = (self.value, self.advantage) if dueling else (self.out,)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(obs))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The last hidden activation ``(…, B, feature_dim)`` (the features split, :mod:`dqnbench.agent.heads`)."""
        return self.body(as_float_features(obs, self.obs_ndim))

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """The noisy head (or value and advantage streams) on features ``(…, R, feature_dim)``."""
        if not self.dueling:
            return split_outputs(self.out(features), self.n_actions, self.outputs)
        return combine_streams(self.value(features), self.advantage(features), self.n_actions, self.outputs)

    def manual_forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, tuple[list, list, list]]:
        """``forward(obs)`` (the same noise draws, in the same order) without module calls, and what
        :meth:`manual_backward` needs: the body's outputs, and each layer's noise."""
        outputs, body, head = [as_float_features(obs, self.obs_ndim)], [], []
        for layer in self.noisy_body:
            y, saved = layer.noisy_linear(outputs[-1], layer.params())
            outputs.append(y.clamp_min_(0.0))
            body.append(saved)
        heads = []
        for layer in self.noisy_head:
            y, saved = layer.noisy_linear(outputs[-1], layer.params())
            heads.append(y)
            head.append(saved)
        if self.dueling:
            q = combine_streams(*heads, self.n_actions, self.outputs)
        else:
            q = split_outputs(heads[0], self.n_actions, self.outputs)
        return q, (outputs, body, head)

    def manual_backward(self, tape: tuple[list, list, list], grad: torch.Tensor) -> None:
        """Every parameter's ``.grad`` (``μ`` and ``σ``) from ``grad``, the loss's gradient in the outputs."""
        outputs, body, head = tape
        features, deep = outputs[-1], bool(self.noisy_body)
        if self.dueling:
            d_value, d_advantages = combine_streams_backward(grad, self.outputs)
            value, advantage = self.noisy_head
            delta = value.noisy_backward(head[0], d_value, features, deep)
            more = advantage.noisy_backward(head[1], d_advantages, features, deep)
            if deep:
                delta.add_(more)
        else:
            delta = grad if self.outputs == 1 else grad.flatten(-2)
            delta = self.noisy_head[0].noisy_backward(head[0], delta, features, deep)
        for i in range(len(body) - 1, -1, -1):
            delta = relu_backward(delta, outputs[i + 1])
            delta = self.noisy_body[i].noisy_backward(body[i], delta, outputs[i], i > 0)


def noisy(
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int] = (64, 64),
    sigma0: float = 0.5,
    dueling: bool = False,
    outputs: int = 1,
) -> NoisyNetwork:
    """NoisyNet Q-network with factorised Gaussian noise (Fortunato et al. 2018).

    :param hidden: widths of the hidden layers, e.g. ``[64, 64]``; ``[]`` is one noisy linear layer.
    :param sigma0: σ₀ of the noise scale's initialisation ``σ = σ₀/√fan_in``
        (0.5 in the paper; 0 starts noiseless, and σ may still grow by learning).
    :param dueling: a dueling head of two noisy streams (value, advantage) on the
        last hidden layer instead of one noisy head (Rainbow's network).
    :param outputs: outputs per action, set by the loop for distributional learners (not a grid param).
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {list(hidden)!r}")
    if isinstance(sigma0, bool) or not isinstance(sigma0, (int, float)) or not 0.0 <= sigma0 < math.inf:
        raise ValueError(f"sigma0 must be a finite non-negative number, got {sigma0!r}")
    if not isinstance(dueling, bool):
        raise ValueError(f"dueling must be true or false, got {dueling!r}")
    return NoisyNetwork(obs_dim, n_actions, tuple(hidden), float(sigma0), outputs, dueling)


@hookimpl
def dqnbench_networks() -> dict:
    return {"noisy": noisy}
