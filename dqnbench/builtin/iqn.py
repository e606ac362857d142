"""Built-in learner ``iqn``: implicit quantile networks, a learner that brings its own head.

Dabney, Ostrovski, Silver & Munos (2018), "Implicit Quantile Networks for
Distributional Reinforcement Learning", ICML. The return's quantile function is
learned at levels τ drawn afresh, ``Z_τ(x, a) = f(ψ(x) ⊙ φ(τ))_a``: ``ψ`` is the
network's state features, ``φ(τ) = ReLU(W cos(π i τ) + b)`` (i = 0 … n − 1) the
learner's τ-embedding, ``f`` the network's own head (an MLP's last layer,
dueling's streams, noisy layers). The learner wraps the network the factory
built in an :class:`IQNNetwork` (``wrap_network``, see
:mod:`dqnbench.agent.heads`), which reads the network's features split.

``IQNNetwork.forward(obs)`` gives expected Q-values, the mean of K quantiles, so
acting, evaluation and embeddings read it like any network (``outputs = 1``):
in training mode at K levels drawn from torch's RNG (which the run seeds), in
eval mode at the K midpoints ``(2k + 1)/2K`` (evaluation then draws nothing,
and leaves the training's random stream where it was, as noisy nets' mean
weights do). ``forward(obs, taus)`` gives the quantiles ``(…, B, A, N)`` at the
given levels, which is all the loss asks of ``nets.online`` and ``nets.target``.

The loss (IQN's eq. 3): N levels τ for the online network, N' levels τ' for the
target network; the next action is the argmax of the mean of K quantiles at
fresh levels: the target network's (as Dopamine), or with ``double`` the online
network's Q-values (Double DQN's rule; Tianshou's IQN does this by default).
Shape-generic: ``(B,)`` for one run, ``(K, B)`` for lock-step members, each
member drawing its own levels.
"""

from __future__ import annotations

import torch
from torch import nn

from dqnbench.agent.distributional import bootstrap_scale
from dqnbench.agent.heads import check_features
from dqnbench.agent.learning import LearnerBase
from dqnbench.agent.quantiles import cosine_embedding, implicit_quantile_huber_loss
from dqnbench.builtin.learners import _check_bool, _check_number
from dqnbench.nn import Linear, linear
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks
from dqnbench.plugin.hookspecs import hookimpl


class IQNNetwork(nn.Module):
    """A network with IQN's head: ``forward(obs)`` expected Q-values, ``forward(obs, taus)`` quantiles.

    ``network`` is the wrapped module (its ``state_dict`` keys get the prefix
    ``network.``), ``embedding`` the τ-embedding's linear layer
    ``embedding_dim → feature_dim``. Built from :mod:`dqnbench.nn` pieces, so it
    stacks natively wherever the wrapped network does.
    """

    def __init__(self, network: nn.Module, quantile_samples: int, embedding_dim: int) -> None:
        super().__init__()
        self.network = network
        self.embedding = Linear(embedding_dim, check_features(network))
        self.quantile_samples, self.embedding_dim = quantile_samples, embedding_dim

    def forward(self, obs: torch.Tensor, taus: torch.Tensor | None = None) -> torch.Tensor:
        """``(…, B, A)`` expected Q-values (``taus`` None), else quantiles ``(…, B, A, N)`` at ``taus (…, B, N)``."""
        features = self.network.features(obs)
        if taus is not None:
            return self.quantiles(features, taus)
        lead, samples = features.shape[:-1], self.quantile_samples
        if self.training:
            taus = torch.rand((*lead, samples), device=features.device)
        else:
            taus = ((torch.arange(samples, device=features.device) + 0.5) / samples).expand(*lead, samples)
        return self.quantiles(features, taus).mean(dim=-1)

    def quantiles(self, features: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        """``f(ψ ⊙ φ(τ))``: features ``(…, B, D)`` and levels ``(…, B, N)`` to quantiles ``(…, B, A, N)``."""
        batch, samples = taus.shape[-2:]
        cosines = cosine_embedding(taus, self.embedding_dim).flatten(-3, -2)  # (…, B·N, n): rows for linear
        phi = linear(cosines, self.embedding.weight, self.embedding.bias).relu_()
        rows = (features.unsqueeze(-2) * phi.unflatten(-2, (batch, samples))).flatten(-3, -2)
        values = self.network.from_features(rows)  # (…, B·N, A)
        return values.unflatten(-2, (batch, samples)).transpose(-1, -2)


class IQNLearner(LearnerBase):
    """IQN's quantile Huber loss at sampled levels; priorities are the per-sample loss (as ``qr_dqn``'s)."""

    loss_on_outputs = True

    def __init__(
        self,
        n_actions: int,
        tau_samples: int,
        tau_prime_samples: int,
        quantile_samples: int,
        embedding_dim: int,
        kappa: float,
        double: bool,
    ) -> None:
        self.n_actions, self.tau_samples, self.tau_prime_samples = n_actions, tau_samples, tau_prime_samples
        self.quantile_samples = quantile_samples
        self.embedding_dim, self.kappa, self.double = embedding_dim, kappa, double

    def wrap_network(self, network: nn.Module) -> IQNNetwork:
        """The network with IQN's head (:class:`~dqnbench.agent.heads.NoFeatures` without the features split)."""
        return IQNNetwork(network, self.quantile_samples, self.embedding_dim)

    def levels(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh levels from torch's RNG: τ ``(…, B, N)`` for the online network, then the target's
        ``(…, B, N' [+ K])`` (N' for its quantiles, and K more for its policy unless ``double``)."""
        lead, device = batch.rewards.shape, batch.rewards.device
        target = self.tau_prime_samples + (0 if self.double else self.quantile_samples)
        return torch.rand((*lead, self.tau_samples), device=device), torch.rand((*lead, target), device=device)

    def target_quantiles(self, nets: Networks, batch: Batch, taus: torch.Tensor) -> torch.Tensor:
        """``r + γᵏ (1 − terminated) Z_τ'(s', a*)`` ``(…, B, N')`` at the target's levels ``taus`` (no gradient).

        ``a*`` maximises the mean of K quantiles at fresh levels (IQN's policy):
        the target network's, at the last K of ``taus`` in the same call as its
        N' quantiles (one pass of its body), or with ``double`` the online
        network's Q-values (whose forward draws its own K levels).
        """
        samples = self.tau_prime_samples
        quantiles = nets.target(batch.next_obs, taus)  # (…, B, A, N' [+ K])
        if self.double:
            chooser = nets.online(batch.next_obs)
        else:
            quantiles, policy = quantiles.split((samples, self.quantile_samples), dim=-1)
            chooser = policy.mean(dim=-1)
        best = chooser.argmax(dim=-1)
        index = best[..., None, None].expand(*best.shape, 1, samples)
        next_quantiles = quantiles.gather(-2, index).squeeze(-2)
        if batch.terminated.dtype == torch.bool:  # a terminal next state bootstraps nothing (even a non-finite one)
            next_quantiles = next_quantiles.masked_fill(batch.terminated.unsqueeze(-1), 0.0)
        scale = bootstrap_scale(batch.discounts, batch.terminated).unsqueeze(-1)
        return torch.addcmul(batch.rewards.unsqueeze(-1), scale, next_quantiles)

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        return self.loss_at(nets, batch, *self.levels(batch))

    def loss_at(self, nets: Networks, batch: Batch, taus: torch.Tensor, target_taus: torch.Tensor) -> LearnerLoss:
        """:meth:`loss` at given levels: τ ``(…, B, N)`` and the target's (see :meth:`levels`)."""
        actions = batch.actions
        quantiles = nets.online(batch.obs, taus)  # (…, B, A, N)
        index = actions[..., None, None].expand(*actions.shape, 1, taus.shape[-1])
        taken = quantiles.gather(-2, index).squeeze(-2)
        with torch.no_grad():
            targets = self.target_quantiles(nets, batch, target_taus)
        losses = implicit_quantile_huber_loss(taken, targets, taus, self.kappa)
        return LearnerLoss(losses, losses.detach())


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def iqn(
    n_actions: int,
    tau_samples: int = 64,
    tau_prime_samples: int = 64,
    quantile_samples: int = 32,
    embedding_dim: int = 64,
    kappa: float = 1.0,
    double: bool = False,
) -> IQNLearner:
    """IQN (Dabney et al. 2018): quantiles at sampled levels from the network's features and a τ-embedding.

    Defaults are the paper's (and Dopamine's): N = N' = 64, K = 32, 64 cosines, κ = 1.
    Needs a network with the features split (every built-in network has it;
    see ``docs/plugins.md``).

    :param tau_samples: N ≥ 1, levels τ drawn per sample for the online network's quantiles.
    :param tau_prime_samples: N' ≥ 1, levels τ' drawn per sample for the target quantiles.
    :param quantile_samples: K ≥ 1, levels whose quantiles' mean is the Q-value that acts (and evaluates).
    :param embedding_dim: n ≥ 1, cosines ``cos(π i τ)``, i = 0 … n − 1, of the τ-embedding.
    :param kappa: κ > 0 of the quantile Huber loss.
    :param double: choose the next action by the online network's Q-values (Double DQN's rule).
    """
    counts = {
        "tau_samples": tau_samples,
        "tau_prime_samples": tau_prime_samples,
        "quantile_samples": quantile_samples,
        "embedding_dim": embedding_dim,
    }
    for name, value in counts.items():
        _check_count(name, value)
    kappa = _check_number("kappa", kappa, lambda v: v > 0.0, "a number > 0")
    _check_bool("double", double)
    return IQNLearner(n_actions, tau_samples, tau_prime_samples, quantile_samples, embedding_dim, kappa, double)


iqn.lockstep = True  # shape-generic: K stacked members learn in one call


@hookimpl
def dqnbench_learners() -> dict:
    return {"iqn": iqn}
