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

import weakref

import numpy as np
import torch


def _check_samples(samples: torch.Size, **fields: torch.Tensor) -> None:
    for name, tensor in fields.items():
        if tensor.shape != samples:
            raise ValueError(f"{name} must have shape {tuple(samples)}, got {tuple(tensor.shape)}")


def _broadcasts(shape: torch.Size, over: torch.Size) -> bool:
    """Does a tensor of ``shape`` broadcast over one of shape ``over`` (leaving it that shape)? Checked by hand:
    ``torch.broadcast_shapes`` imports ``torch._refs`` on first use (a third of a second)."""
    return len(shape) <= len(over) and all(s in (1, o) for s, o in zip(reversed(shape), reversed(over)))


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

    :param support: atoms ``(N,)``, increasing and evenly spaced; or a support per row of the leading
        dimensions that broadcasts over ``probs`` (a fused group's ``(K, 1, N)``: each member's own atoms).
    :param probs: next-state probabilities ``(…, B, N)`` (rows summing to 1).
    :param rewards: ``(…, B)``.
    :param discounts: ``(…, B)``.
    :param terminated: ``(…, B)``, bool or float.
    :returns: projected probabilities ``(…, B, N)``; rows sum to what ``probs``' rows sum to (to 1 for
        terminal transitions flagged by a bool ``terminated``, whose ``probs`` are not read).
    """
    atoms = support.shape[-1]
    if support.dim() < 1 or atoms < 2:
        raise ValueError(f"support must have shape (N,) or (…, 1, N) with N >= 2, got {tuple(support.shape)}")
    if probs.dim() < 2 or probs.shape[-1] != atoms:
        raise ValueError(f"probs must have shape (…, B, {atoms}), got {tuple(probs.shape)}")
    if support.dim() > 1 and not _broadcasts(support.shape, probs.shape):
        raise ValueError(f"support {tuple(support.shape)} must broadcast over probs {tuple(probs.shape)}")
    _check_samples(probs.shape[:-1], rewards=rewards, discounts=discounts, terminated=terminated)
    v_min, inverse_step = _support_constants(support)
    if terminated.dtype == torch.bool:  # a terminal next state bootstraps nothing, even a non-finite distribution
        probs = probs.masked_fill(terminated.unsqueeze(-1), 1.0 / atoms)
    position = torch.addcmul(rewards.unsqueeze(-1), bootstrap_scale(discounts, terminated).unsqueeze(-1), support)
    position.sub_(v_min).mul_(inverse_step).clamp_(0.0, atoms - 1)
    lower = position.clamp(max=atoms - 2).floor_()
    upper_share = position.sub_(lower)  # in [0, 1]: 1 when T z sits on atom lower + 1
    index = lower.long()
    upper = probs * upper_share
    projected = torch.zeros_like(probs).scatter_add_(-1, index, probs - upper)
    return projected.scatter_add_(-1, index.add_(1), upper)


#: ``(v_min, (N − 1)/(v_max − v_min))`` of a support by ``id``: ``(weak reference, version, constants)``
_SUPPORTS: dict[int, tuple[weakref.ref, int, tuple]] = {}


def _support_constants(support: torch.Tensor) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
    """The lowest atom and the inverse atom spacing, read once per support tensor (a learner keeps one): as
    numbers for one support (as 0-d tensors they would cost four small operations a step, and on a GPU a
    sync); for a support per row, ``(…, 1)`` tensors in the support's dtype, each row's rounded as its
    number alone would be."""
    cached = _SUPPORTS.get(id(support))
    if cached is not None and cached[0]() is support and cached[1] == support._version:
        return cached[2]
    atoms = support.shape[-1]
    if support.dim() == 1:
        v_min, v_max = float(support[0]), float(support[-1])
        constants = (v_min, (atoms - 1) / (v_max - v_min))
    else:
        low, high = support[..., :1].double(), support[..., -1:].double()
        constants = (low.to(support.dtype), ((atoms - 1) / (high - low)).to(support.dtype))
    if len(_SUPPORTS) >= 16:
        _SUPPORTS.clear()
    _SUPPORTS[id(support)] = (weakref.ref(support), support._version, constants)
    return constants


def quantile_midpoints(quantiles: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``τ̂_i = (2i + 1) / 2N`` for ``i < N``: the quantile levels QR-DQN's outputs estimate (Dabney et al. 2018)."""
    return (torch.arange(quantiles, dtype=torch.float32, device=device) + 0.5) / quantiles


def _check_quantiles(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float | torch.Tensor
) -> None:
    if quantiles.dim() < 2 or targets.dim() != quantiles.dim() or targets.shape[:-1] != quantiles.shape[:-1]:
        raise ValueError(
            f"quantiles {tuple(quantiles.shape)} and targets {tuple(targets.shape)} must be (…, B, N) and (…, B, M)"
        )
    if taus.shape != quantiles.shape[-1:]:
        raise ValueError(f"taus must have shape ({quantiles.shape[-1]},), got {tuple(taus.shape)}")
    if isinstance(kappa, torch.Tensor):
        if not _broadcasts(kappa.shape, quantiles.shape[:-1]):
            samples = tuple(quantiles.shape[:-1])
            raise ValueError(f"kappa {tuple(kappa.shape)} must broadcast over the samples {samples}")
        if not bool((kappa > 0).all()):
            raise ValueError(f"kappa must be > 0, got {kappa.flatten().tolist()}")
    elif not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")


def quantile_huber_loss_pairwise(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float | torch.Tensor = 1.0
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
    :param kappa: κ > 0, where the loss turns from quadratic to linear; or a tensor of κ per sample that
        broadcasts over ``(…, B)`` (a fused group's ``(K, 1)``: one per member).
    """
    _check_quantiles(quantiles, targets, taus, kappa)
    if isinstance(kappa, torch.Tensor):
        kappa = kappa[..., None, None]  # over the pairs
    u = targets.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (…, B, N, M)
    abs_u = u.abs()
    huber = torch.where(abs_u <= kappa, 0.5 * u * u, kappa * (abs_u - 0.5 * kappa))
    weight = (taus.unsqueeze(-1) - (u.detach() < 0).to(u.dtype)).abs()
    return (weight * huber / kappa).mean(dim=-1).sum(dim=-1)


def _sorted_values(x: torch.Tensor) -> torch.Tensor:
    """``x`` sorted along the last axis (values only); NumPy's vectorised sort on the CPU (~20× torch's on rows
    of a few hundred), torch's elsewhere."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return x.sort(dim=-1).values


#: dtypes whose values convert to float64 exactly with the low 29 mantissa bits zero
_NARROW = (torch.float32, torch.float16, torch.bfloat16)
#: what a non-finite value sorts as in :func:`_merged_counts` (a float32, so its low bits are zero too)
_LARGEST = float(torch.finfo(torch.float32).max)
#: one in the exponent field of a float64's bits
_EXPONENT_ONE = 1 << 52


def _merged_counts(merged: torch.Tensor, count: int, codes: torch.Tensor, narrow: bool) -> torch.Tensor:
    """How many of the first ``count`` values of each row of ``merged`` (the targets) lie below each later one (the
    bounds): ``(…, Q)`` int64, by one sort. ``merged`` (float64, overwritten) is ``(…, count + Q)``.

    Each float64 value carries a code in its lowest ``⌈log2(Q + 1)⌉`` mantissa bits
    (``codes``: 0 for a target, ``1 + k`` for bound k), so after sorting, the number of
    targets before a bound is a running count and its code says where it goes. Values
    converted from float32 (``narrow``) have those bits zero, so nothing moves; otherwise
    overwriting them moves a value by under 2⁻⁴⁰ of itself for Q < 4096, far below
    float32's resolution, so only values that tie to that precision may count on either
    side (the quantile loss is continuous there). A vectorised sort of the merged rows is
    several times faster than a binary search per bound (``torch.searchsorted``) on the CPU.
    Non-finite values count as ±float32's largest (a sort may not keep a NaN's bits).
    Every key's exponent field is raised by one, which keeps the order: a zero with a
    code in its low bits would be a denormal, and with denormals flushed (as in
    training, :mod:`dqnbench.agent.numerics`) the sort's min/max compare all denormals
    equal and may keep one twice, losing a code.
    """
    bits = (merged.shape[-1] - count).bit_length()
    low = (1 << bits) - 1
    keys = merged.nan_to_num_(nan=_LARGEST, posinf=_LARGEST, neginf=-_LARGEST).view(torch.int64)
    if not narrow:
        keys.bitwise_and_(~low)
    keys.bitwise_or_(codes).add_(_EXPONENT_ONE)
    if keys.device.type == "cpu":  # in place: the rows are ours, and a second copy costs cache
        keys.view(torch.float64).numpy().sort(axis=-1)
        code = keys.bitwise_and_(low)
    else:
        code = keys.view(torch.float64).sort(dim=-1).values.view(torch.int64).bitwise_and_(low)
    counts = torch.empty((*code.shape[:-1], merged.shape[-1] - count + 1), dtype=torch.int64, device=code.device)
    return counts.scatter_(-1, code, (code == 0).cumsum(dim=-1))[..., 1:]


def _counts_below(targets: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """How many of each row's ``targets (…, M)`` lie below each of its ``bounds (…, Q)``: ``(…, Q)`` int64
    (:func:`_merged_counts` on float64 copies)."""
    size, count = targets.shape[-1], bounds.shape[-1]
    codes = torch.cat([torch.zeros(size, dtype=torch.int64), torch.arange(1, count + 1)]).to(targets.device)
    merged = torch.cat([targets, bounds], dim=-1).to(torch.float64, copy=True)
    narrow = targets.dtype in _NARROW and bounds.dtype in _NARROW
    return _merged_counts(merged, size, codes, narrow)


class _QuantileConstants:
    """What :func:`quantile_huber_loss_and_grad` reads for one ``taus`` tensor, κ and ``M = count`` targets.

    ``weights (3 · 3N,)``: the loss's coefficients of the counts, sums and sums of
    squares of the targets below ``θ − κ, θ, θ + κ`` (those that do not depend on θ),
    divided by M; ``levels`` τ in float64 (``scaled``: τ M); ``offsets`` the three
    bounds' offsets from θ; ``inverse`` 1/κ; ``codes`` :func:`_merged_counts`' codes
    for M targets then the 3N bounds. Made once per ``taus`` tensor (and κ, M):
    rebuilding them costs a tenth of the loss. A κ per sample (a tensor ``(…)`` over
    the samples, a fused group's ``(K, 1)``) makes ``weights (…, 9N)`` (``(K, 9N, 1)``), ``offsets
    (…, 3, 1)`` and the other κ terms ``(…, 1)``, each row the numbers of its κ.
    """

    def __init__(self, taus: torch.Tensor, kappa: float | torch.Tensor, count: int) -> None:
        size, device = taus.shape[-1], taus.device
        tau = taus.detach().double()
        below, above, zero = 1 - tau, tau, torch.zeros_like(tau)
        per_sample = isinstance(kappa, torch.Tensor)
        kappa = kappa.detach().to(device, torch.float64).unsqueeze(-1) if per_sample else kappa  # (…, 1)
        counts, sums = torch.cat([-below, zero, above]), -torch.cat([below, zero, above])
        squares = torch.cat([-below, 1 - 2 * tau, above])
        if per_sample:
            counts, sums, squares = (v.expand(*kappa.shape[:-1], -1) for v in (counts, sums, squares))
        # n: the linear pieces' −κ/2 and +κ/2; Σ T: of L = n θ − Σ T; Σ T²: of the quadratic window
        self.weights = torch.cat([0.5 * kappa * counts, sums, squares / (2 * kappa)], dim=-1) / count
        if per_sample and kappa.shape[-2] == 1:  # one κ per row of samples (a member's): a batched matrix-vector
            self.weights = self.weights.transpose(-1, -2)  # product, (…, 9N, 1), as fast as one κ's
        self.levels, self.scaled = tau, tau * count
        self.level_sum = float(tau.sum())
        self.inverse, self.half_kappa = 1.0 / kappa, 0.5 * kappa * self.level_sum
        self.minus_half_inverse = -0.5 / kappa
        if per_sample:
            offsets = torch.stack([-kappa, torch.zeros_like(kappa), kappa], dim=-2)  # (…, 3, 1)
        else:
            offsets = torch.tensor([[-kappa], [0.0], [kappa]], dtype=torch.float64, device=device)
        self.offsets = {torch.float64: offsets, torch.float32: offsets.float()}
        self.codes = torch.cat([torch.zeros(count, dtype=torch.int64), torch.arange(1, 3 * size + 1)]).to(device)


#: :class:`_QuantileConstants` by ``id(taus)``: ``(weak reference to taus, key, constants)``;
#: a learner passes the same ``taus`` tensor at every step
_CONSTANTS: dict[int, tuple[weakref.ref, tuple, _QuantileConstants]] = {}


def _quantile_constants(taus: torch.Tensor, kappa: float | torch.Tensor, count: int) -> _QuantileConstants:
    kappas = (tuple(kappa.shape), *kappa.flatten().tolist()) if isinstance(kappa, torch.Tensor) else kappa
    key = (kappas, count, taus._version, taus.device)
    cached = _CONSTANTS.get(id(taus))
    if cached is not None and cached[0]() is taus and cached[1] == key:
        return cached[2]
    made = _QuantileConstants(taus, kappa, count)
    if len(_CONSTANTS) >= 16:  # tests make many taus; a run one or two
        _CONSTANTS.clear()
    _CONSTANTS[id(taus)] = (weakref.ref(taus), key, made)
    return made


def quantile_huber_loss_and_grad(
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float | torch.Tensor = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantile_huber_loss_pairwise` per sample ``(…, B)`` and its gradient in ``quantiles`` ``(…, B, N)``.

    The pairwise loss touches ``N × M`` pairs per sample (2.6M values for a batch
    of 64 at QR-DQN's 200 quantiles): that, not the network, would be the learn
    step. For a fixed predicted ``θ_i`` the loss over the targets is piecewise in
    ``T θ_j`` (linear below ``θ_i − κ``, quadratic in between, linear above
    ``θ_i + κ``, weighted ``1 − τ̂_i`` below ``θ_i`` and ``τ̂_i`` above), so
    sorting each sample's targets once and reading, at the three boundaries
    ``x ∈ {a, b, c} = {θ_i − κ, θ_i, θ_i + κ}``, the count ``n_x`` of targets below
    ``x`` and the prefix sums ``s_x = Σ_{T<x} T`` and ``q_x = Σ_{T<x} T²`` gives the
    same loss and gradient in O((N + M) log M). With ``F(v) = (1 − τ) v_a + τ v_c``,
    ``G(v) = τ v_c − (1 − τ) v_a``, ``E(v) = (1 − τ)(v_b − v_a) + τ (v_c − v_b)`` and
    ``S`` the sum of the targets:
    ``M · loss_i = κ G(n)/2 − F(s) + E(q)/2κ + θ_i (F(n) − E(s)/κ − τM) + θ_i² E(n)/2κ + τ (S − κM/2)``,
    whose derivative in θ_i (the counts stay put: the pieces meet with equal values
    and slopes, so a target tied with a boundary may fall on either side) is
    ``M · ∂loss_i/∂θ_i = F(n) − (E(s) − θ_i E(n))/κ − τM``.
    The θ-free terms are one matrix-vector product with fixed coefficients
    (:class:`_QuantileConstants`), the rest a few operations on ``(…, B, N)``.
    Targets are centred per sample and everything after the counts is float64, so
    the expansion in prefix sums keeps float32 precision. The counts come from one
    merged sort (:func:`_merged_counts`), whose bounds ``θ ± κ`` are rounded to
    ``quantiles``' dtype. At 64 × 200 quantiles on one CPU thread: ~0.7 ms (the sort of
    64 × 800 keys a fifth of it), against tens of ms for the pairwise definition.
    ``kappa`` may be a tensor of κ per sample that broadcasts over ``(…, B)`` (a fused
    group's ``(K, 1)``): each sample's numbers are then those of its own κ.
    """
    _check_quantiles(quantiles, targets, taus, kappa)
    dtype, size, count = quantiles.dtype, quantiles.shape[-1], targets.shape[-1]
    lead, device, wide = quantiles.shape[:-1], quantiles.device, torch.float64
    constants = _quantile_constants(taus, kappa, count)
    with torch.no_grad():
        quantiles, targets = quantiles.detach(), targets.detach()
        centre = targets.mean(dim=-1, keepdim=True, dtype=wide)
        # prefix sums of the sorted, centred targets and of their squares (column k: of the k smallest)
        sums = torch.zeros((*lead, 2, count + 1), dtype=wide, device=device)
        torch.sub(_sorted_values(targets), centre, out=sums[..., 0, 1:])
        torch.mul(sums[..., 0, 1:], sums[..., 0, 1:], out=sums[..., 1, 1:])
        sums.cumsum_(dim=-1)
        # how many targets lie below θ − κ, θ, θ + κ (u < −κ, u < 0, u < κ), counted by one sort
        merged = torch.empty((*lead, count + 3 * size), dtype=wide, device=device)
        merged[..., :count] = targets
        bounds = merged[..., count:].unflatten(-1, (3, size))
        offsets = constants.offsets[torch.float64 if dtype == torch.float64 else torch.float32]
        torch.add(quantiles.unsqueeze(-2), offsets, out=bounds)
        narrow = dtype in _NARROW and targets.dtype in _NARROW
        counts = _merged_counts(merged, count, constants.codes, narrow)
        parts = torch.empty((*lead, 3, 3 * size), dtype=wide, device=device)  # n, s, q at a, b, c
        parts[..., 0, :] = counts
        torch.gather(sums, -1, counts.unsqueeze(-2).expand(*lead, 2, 3 * size), out=parts[..., 1:, :])
        steps = parts[..., :2, :].unflatten(-1, (3, size)).diff(dim=-2)  # v_b − v_a, v_c − v_b of n and s
        window = torch.lerp(steps[..., 0, :], steps[..., 1, :], constants.levels, out=steps[..., 0, :])
        e_n, e_s = window.unbind(-2)
        theta = torch.sub(quantiles, centre)
        n = parts[..., 0, :].unflatten(-1, (3, size))
        slope = torch.lerp(n[..., 0, :], n[..., 2, :], constants.levels)  # F(n), then M · the slope
        inverse = constants.inverse
        if isinstance(inverse, float):
            slope.sub_(e_s.addcmul_(theta, e_n, value=-1.0), alpha=inverse).sub_(constants.scaled)
            loss = parts.flatten(-2) @ constants.weights
        else:  # a κ per sample
            slope.sub_(e_s.addcmul_(theta, e_n, value=-1.0).mul_(inverse)).sub_(constants.scaled)
            flat, weights = parts.flatten(-2), constants.weights
            loss = (flat @ weights).squeeze(-1) if weights.shape[-1] == 1 else torch.linalg.vecdot(flat, weights)
        rest = e_n.mul_(theta).mul_(constants.minus_half_inverse).add_(slope)  # M · slope − θ E(n)/2κ
        loss += torch.linalg.vecdot(theta, rest).div_(count)
        loss += sums[..., 0, -1] * (constants.level_sum / count)
        loss -= constants.half_kappa.squeeze(-1) if isinstance(inverse, torch.Tensor) else constants.half_kappa
        slope.div_(count)
    return loss.to(dtype), slope.to(dtype)


class _QuantileHuberLoss(torch.autograd.Function):
    """Autograd for :func:`quantile_huber_loss`: the gradient comes with the loss, backward scales it."""

    @staticmethod
    def forward(
        quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float | torch.Tensor
    ) -> torch.Tensor:
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
    quantiles: torch.Tensor, targets: torch.Tensor, taus: torch.Tensor, kappa: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """The quantile Huber loss per sample ``(…, B)`` of Dabney et al. (2018), differentiable in ``quantiles``.

    Same numbers as :func:`quantile_huber_loss_pairwise` (the definition, see
    there) at O((N + M) log M) per sample instead of O(N·M), by
    :func:`quantile_huber_loss_and_grad`. ``targets`` get no gradient.
    """
    kappa = kappa.detach() if isinstance(kappa, torch.Tensor) else float(kappa)  # a κ per sample, or one
    return _QuantileHuberLoss.apply(quantiles, targets.detach(), taus, kappa)[0]
