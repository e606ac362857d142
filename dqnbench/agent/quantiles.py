"""Implicit quantile networks' math as small pure functions: the cosine τ-embedding and the loss at sampled τ.

Dabney, Ostrovski, Silver & Munos (2018), "Implicit Quantile Networks for
Distributional Reinforcement Learning", ICML. Unlike QR-DQN's fixed levels
(:func:`~dqnbench.agent.distributional.quantile_midpoints`), IQN draws its
levels τ ~ U[0, 1] afresh for every sample, so the loss takes one row of levels
per sample. Shapes follow :mod:`dqnbench.agent.distributional`: ``(…, B)``
per-sample fields, ``(…, B, N)`` with levels or quantiles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cosine_embedding(taus: torch.Tensor, size: int) -> torch.Tensor:
    """``cos(π i τ)`` for ``i = 0 … size − 1`` (IQN's eq. 4 before its linear layer): ``(…, size)`` of ``taus (…)``.

    ``i = 0`` gives the constant 1, as in the paper's sum from ``i = 0``.
    """
    frequencies = torch.arange(size, dtype=taus.dtype, device=taus.device).mul_(math.pi)
    return torch.cos(taus.unsqueeze(-1) * frequencies)


def implicit_quantile_huber_loss(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """IQN's loss per sample ``(…, B)``: the quantile Huber loss with each sample's own levels (IQN's eq. 3).

    With ``δ_ij = T Z_j − Z_i`` (target sample j at level τ'_j minus prediction i
    at level τ_i), ``ρ^κ_τ(δ) = |τ − 1{δ < 0}| · L_κ(δ) / κ`` where ``L_κ(δ) = δ²/2``
    for ``|δ| ≤ κ`` and ``κ(|δ| − κ/2)`` beyond, summed over the N predictions and
    averaged over the M targets: ``Σ_i (1/M) Σ_j ρ^κ_{τ_i}(δ_ij)``. All N × M pairs
    (IQN's 64 × 64 per sample are cheap; QR-DQN's sort path needs shared levels).

    :param quantiles: predictions ``Z_τ (…, B, N)``, differentiable.
    :param targets: ``T Z (…, B, M)`` (no gradient flows into them).
    :param taus: the predictions' levels ``(…, B, N)``.
    :param kappa: κ > 0, where the loss turns from quadratic to linear.
    """
    if quantiles.dim() < 2 or targets.shape[:-1] != quantiles.shape[:-1] or taus.shape != quantiles.shape:
        raise ValueError(
            f"quantiles {tuple(quantiles.shape)}, targets {tuple(targets.shape)} and taus {tuple(taus.shape)} "
            "must be (…, B, N), (…, B, M) and (…, B, N)"
        )
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    delta = targets.detach().unsqueeze(-2) - quantiles.unsqueeze(-1)  # (…, B, N, M)
    huber = F.huber_loss(delta, torch.zeros_like(delta), reduction="none", delta=kappa)  # L_κ in one kernel
    weight = (taus.unsqueeze(-1) - (delta.detach() < 0).to(delta.dtype)).abs_()
    return (weight * huber).mean(dim=-1).sum(dim=-1) / kappa
