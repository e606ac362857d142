"""Distributional RL's math as small pure functions that check their shapes: C51's projection, QR-DQN's loss.

Shapes follow :mod:`dqnbench.agent.losses`: per-sample fields are ``(B,)`` for a
single run and ``(K, B)`` for K lock-step members, and a distribution adds a
last dimension of atoms or quantiles, ``(…, B, N)``. Nothing here loops over
samples in Python.

- :func:`categorical_projection`: Bellemare, Dabney & Munos (2017), "A
  Distributional Perspective on Reinforcement Learning", ICML, Algorithm 1.
- :func:`quantile_huber_loss_pairwise` (the definition) and
  :func:`quantile_huber_loss` (the same numbers in O(N log N) per sample):
  Dabney, Rowland, Bellemare & Munos (2018), "Distributional Reinforcement
  Learning with Quantile Regression", AAAI, eq. 9–10.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _check_samples(samples: torch.Size, **fields: torch.Tensor) -> None:
    for name, tensor in fields.items():
        if tensor.shape != samples:
            raise ValueError(f"{name} must have shape {tuple(samples)}, got {tuple(tensor.shape)}")


def bootstrap_scale(discounts: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    """``discount · (1 − terminated)``: a terminal next state bootstraps nothing."""
    if terminated.dtype == torch.bool:
        return discounts.masked_fill(terminated, 0.0)
    return discounts * (1.0 - terminated.to(discounts.dtype))


def categorical_projection(
    support: torch.Tensor,
    probs: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminated: torch.Tensor,
) -> torch.Tensor:
    """Project the distribution of ``r + discount · (1 − terminated) · Z`` onto ``support``: ``(…, B, N)``.

    Bellemare et al. (2017), Algorithm 1. ``Z`` puts probability ``probs[…, j]``
    on atom ``support[j]``; ``support (N,)`` is evenly spaced from ``v_min`` to
    ``v_max`` (N ≥ 2). Each shifted atom ``T z_j = r + γᵏ z_j`` is clipped to
    ``[v_min, v_max]`` and its probability split between the two neighbouring
    atoms in proportion to closeness: with ``b = (T z_j − v_min) / Δz``, atom
    ``⌊b⌋`` gets ``1 − (b − ⌊b⌋)`` and atom ``⌊b⌋ + 1`` gets ``b − ⌊b⌋``. The
    lower index is capped at ``N − 2``, so a ``T z_j`` exactly on an atom (``v_max``
    included) gives that atom all its probability: no mass is lost where
    ``⌊b⌋ = ⌈b⌉``, the case the paper's pseudo-code leaves out. A terminal
    transition bootstraps nothing: all mass lands next to ``r``. ``discounts``
    hold γ, or γᵏ for n-step returns (:attr:`dqnbench.Batch.discounts`).

    :param support: atoms ``(N,)``, increasing and evenly spaced.
    :param probs: next-state probabilities ``(…, B, N)`` (rows summing to 1).
    :param rewards: ``(…, B)``.
    :param discounts: ``(…, B)``.
    :param terminated: ``(…, B)``, bool or float.
    :returns: projected probabilities ``(…, B, N)``; rows sum to what ``probs``' rows sum to (to 1 for
        terminal transitions flagged by a bool ``terminated``, whose ``probs`` are not read).
    """
    atoms = support.shape[-1]
    if support.dim() != 1 or atoms < 2:
        raise ValueError(f"support must have shape (N,) with N >= 2, got {tuple(support.shape)}")
    if probs.dim() < 2 or probs.shape[-1] != atoms:
        raise ValueError(f"probs must have shape (…, B, {atoms}), got {tuple(probs.shape)}")
    _check_samples(probs.shape[:-1], rewards=rewards, discounts=discounts, terminated=terminated)
    v_min, v_max = support[0], support[-1]
    if terminated.dtype == torch.bool:  # a terminal next state bootstraps nothing, even a non-finite distribution
        probs = probs.masked_fill(terminated.unsqueeze(-1), 1.0 / atoms)
    shifted = torch.addcmul(rewards.unsqueeze(-1), bootstrap_scale(discounts, terminated).unsqueeze(-1), support)
    position = ((shifted - v_min) * ((atoms - 1) / (v_max - v_min))).clamp_(0.0, atoms - 1)
    lower = position.floor().clamp_(max=atoms - 2)
    upper_share = position - lower  # in [0, 1]: 1 when T z sits on atom lower + 1
    index = lower.long()
    projected = torch.zeros_like(probs)
    projected.scatter_add_(-1, index, probs - probs * upper_share)
    projected.scatter_add_(-1, index + 1, probs * upper_share)
    return projected


def quantile_midpoints(quantiles: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``τ̂_i = (2i + 1) / 2N`` for ``i < N``: the quantile levels QR-DQN's outputs estimate (Dabney et al. 2018)."""
    return (torch.arange(quantiles, dtype=torch.float32, device=device) + 0.5) / quantiles


def _check_quantiles(quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float) -> None:
    if quantiles.dim() < 2 or targets.dim() != quantiles.dim() or targets.shape[:-1] != quantiles.shape[:-1]:
        raise ValueError(
            f"quantiles {tuple(quantiles.shape)} and targets {tuple(targets.shape)} must be (…, B, N) and (…, B, M)"
        )
    if taus.shape != quantiles.shape[-1:]:
        raise ValueError(f"taus must have shape ({quantiles.shape[-1]},), got {tuple(taus.shape)}")
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")


def quantile_huber_loss_pairwise(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """The quantile Huber loss per sample ``(…, B)``, computed over all ``N × M`` pairs (the definition).

    Dabney et al. (2018), eq. 9–10: with ``u_ij = T θ_j − θ_i`` (target
    quantile j minus predicted quantile i),
    ``ρ^κ_τ(u) = |τ − 1{u < 0}| · L_κ(u) / κ``, ``L_κ(u) = u²/2`` for ``|u| ≤ κ``
    and ``κ(|u| − κ/2)`` beyond, and the loss is the sum over predicted quantiles
    of the mean over target quantiles: ``Σ_i (1/M) Σ_j ρ^κ_{τ̂_i}(u_ij)``.
    O(B·N·M) memory and time: the reference :func:`quantile_huber_loss` is tested
    against.

    :param quantiles: predicted ``θ (…, B, N)``.
    :param targets: target quantiles ``T θ (…, B, M)`` (no gradient).
    :param taus: the levels ``τ̂ (N,)`` of the predicted quantiles.
    :param kappa: κ > 0, where the loss turns from quadratic to linear.
    """
    _check_quantiles(quantiles, targets, taus, kappa)
    u = targets.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (…, B, N, M)
    abs_u = u.abs()
    huber = torch.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa))
    weight = (taus.unsqueeze(-1) - (u.detach() < 0).to(u.dtype)).abs()
    return (weight * huber / kappa).mean(dim=-1).sum(dim=-1)


def _sorted_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x sorted along the last axis, the sorting order)``; NumPy's sort on the CPU (an order of magnitude
    faster than torch's on rows of a few hundred), torch's elsewhere."""
    if x.device.type == "cpu":
        order = torch.from_numpy(np.argsort(x.numpy(), axis=-1))
        return x.gather(-1, order), order
    values, order = x.sort(dim=-1)
    return values, order


def quantile_huber_loss_and_grad(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantile_huber_loss_pairwise` per sample ``(…, B)`` and its gradient in ``quantiles`` ``(…, B, N)``.

    The pairwise loss touches ``N × M`` pairs per sample (2.6M values for a batch
    of 64 at QR-DQN's 200 quantiles): that, not the network, would be the learn
    step. For a fixed predicted ``θ_i`` the loss over the targets is piecewise in
    ``T θ_j`` (linear below ``θ_i − κ``, quadratic in between, linear above
    ``θ_i + κ``, weighted ``1 − τ̂_i`` below ``θ_i`` and ``τ̂_i`` above), so
    sorting each sample's targets once and reading the counts, sums and sums of
    squares of each piece from prefix sums gives the same loss and gradient in
    O((N + M) log M). The pieces meet continuously (values and slopes), so a
    target tied with a boundary may fall on either side. Targets are centred per
    sample and prefix sums accumulated in float64, so the expansion
    ``Σ(T − θ)² = ΣT² − 2θΣT + nθ²`` keeps float32 precision; the predicted
    quantiles are searched in sorted order, which makes the searches several
    times faster. About 40× faster than the pairwise definition at 200 quantiles.
    """
    _check_quantiles(quantiles, targets, taus, kappa)
    dtype, size, count = quantiles.dtype, quantiles.shape[-1], targets.shape[-1]
    with torch.no_grad():
        centre = targets.mean(dim=-1, keepdim=True)
        sorted_targets, _ = _sorted_rows((targets - centre).float())
        theta, order = _sorted_rows((quantiles.detach() - centre).float())
        # how many targets lie below θ − κ, below θ and below θ + κ (u < −κ, u < 0, u < κ), in one search
        counts = torch.searchsorted(sorted_targets, torch.cat([theta - kappa, theta, theta + kappa], dim=-1))
        # prefix sums of the targets and their squares (sums[k]: of the k smallest), accumulated in float64
        sums = F.pad(sorted_targets.cumsum(-1, dtype=torch.float64), (1, 0)).float().gather(-1, counts)
        squares = F.pad((sorted_targets * sorted_targets).cumsum(-1, dtype=torch.float64), (1, 0)).float()
        n_below, n_negative, n_within = counts.float().split(size, dim=-1)
        s_below, s_negative, s_within = sums.split(size, dim=-1)
        q_below, q_negative, q_within = squares.gather(-1, counts).split(size, dim=-1)
        n_above, s_above = count - n_within, sorted_targets.sum(dim=-1, keepdim=True) - s_within
        n_low, s_low, q_low = n_negative - n_below, s_negative - s_below, q_negative - q_below  # −κ ≤ u < 0
        n_high, s_high, q_high = n_within - n_negative, s_within - s_negative, q_within - q_negative  # 0 ≤ u < κ
        tau = taus.float().take(order)  # the levels of the quantiles in their sorted order
        # Σ over a piece of (T − θ)²/2κ, and the linear pieces' Σ |u| − κ/2, weighted 1 − τ below θ and τ above
        low_sq = (q_low - 2 * theta * s_low + n_low * theta * theta) / (2 * kappa)
        high_sq = (q_high - 2 * theta * s_high + n_high * theta * theta) / (2 * kappa)
        lin_below = n_below * (theta - 0.5 * kappa) - s_below
        lin_above = s_above - n_above * (theta + 0.5 * kappa)
        losses = ((1 - tau) * (lin_below + low_sq) + tau * (high_sq + lin_above)).sum(dim=-1) / count
        # d/dθ_i: 1 per target below θ−κ, (θ − T)/κ in the quadratic pieces, −1 per target above θ+κ
        slope = (1 - tau) * (n_below + (n_low * theta - s_low) / kappa)
        slope += tau * ((n_high * theta - s_high) / kappa - n_above)
        grad = torch.empty(quantiles.shape, dtype=dtype, device=quantiles.device)
        grad.scatter_(-1, order, slope.div_(count).to(dtype))  # back to the quantiles' own order
    return losses.to(dtype), grad


class _QuantileHuberLoss(torch.autograd.Function):
    """Autograd for :func:`quantile_huber_loss`: the gradient comes with the loss, backward scales it."""

    @staticmethod
    def forward(quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float) -> torch.Tensor:
        losses, grad = quantile_huber_loss_and_grad(quantiles, targets, taus, kappa)
        return losses, grad

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_losses: torch.Tensor, _grad_grad: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_losses.unsqueeze(-1) * grad, None, None, None


def quantile_huber_loss(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float = 1.0
) -> torch.Tensor:
    """The quantile Huber loss per sample ``(…, B)`` of Dabney et al. (2018), differentiable in ``quantiles``.

    Same numbers as :func:`quantile_huber_loss_pairwise` (the definition, see
    there) at O((N + M) log M) per sample instead of O(N·M), by
    :func:`quantile_huber_loss_and_grad`. ``targets`` get no gradient.
    """
    return _QuantileHuberLoss.apply(quantiles, targets.detach(), taus, float(kappa))[0]
