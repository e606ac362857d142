"""Built-in Q-network ``noisy``: NoisyNet layers that explore by perturbing weights.

Fortunato, Azar, Piot, Menick, Osband, Graves, Mnih, Munos, Hassabis, Pietquin,
Blundell & Legg (2018), "Noisy Networks for Exploration", ICLR. Every linear
layer ``y = W x + b`` becomes

    y = (μ_W + σ_W ⊙ ε_W) x + μ_b + σ_b ⊙ ε_b

with learned ``μ`` and ``σ``. With *factorised* Gaussian noise (their §3.2) a
layer of ``p`` inputs and ``q`` outputs draws only ``p + q`` normals:
``ε_W = f(ε_out) f(ε_in)ᵀ``, ``ε_b = f(ε_out)``, ``f(x) = sgn(x) √|x|``. The
network learns how much to explore, so pair it with the ``greedy`` exploration.

Noise is resampled at every forward pass in training mode (the loop acts and
learns in ``train()`` mode), shared by the rows of a batch, and off in
``eval()`` mode, where a layer uses its mean weights ``μ`` for greedy
evaluation. Draws come from torch's global RNG, which the runner seeds.

``dueling = true`` splits the noisy head into value and advantage streams
(Wang et al. 2016), as in Rainbow (Hessel et al. 2018), whose network is noisy
and dueling at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from dqnbench.nn import as_float_features, linear, obs_shape, split_outputs
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
        mean = linear(x, self.weight_mu, self.bias_mu)
        if not self.training:
            return mean
        members = self.weight_mu.shape[:-2]  # () for one network, (K,) for stacked members
        noise_shape = (
            (*members, 1, self.in_features + self.out_features) if members else (self.in_features + self.out_features,)
        )
        f_in, f_out = scaled_noise(noise_shape, x.device).split((self.in_features, self.out_features), -1)
        # (σ_W ⊙ f_out f_inᵀ) x = f_out ⊙ (σ_W (f_in ⊙ x)): never builds the q × p noise matrix.
        return mean + f_out * linear(x * f_in, self.weight_sigma, self.bias_sigma)

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
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(widths):
            layers += [NoisyLinear(fan_in, fan_out, sigma0), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        if dueling:
            self.value = NoisyLinear(widths[-1], outputs, sigma0)
            self.advantage = NoisyLinear(widths[-1], n_actions * outputs, sigma0)
        else:
            self.out = NoisyLinear(widths[-1], n_actions * outputs, sigma0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.body(as_float_features(obs, self.obs_ndim))
        if not self.dueling:
            return split_outputs(self.out(features), self.n_actions, self.outputs)
        value = split_outputs(self.value(features), 1, self.outputs)  # (…, 1[, N])
        advantages = split_outputs(self.advantage(features), self.n_actions, self.outputs)  # (…, A[, N])
        action_dim = -1 if self.outputs == 1 else -2
        return value + advantages - advantages.mean(dim=action_dim, keepdim=True)


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
