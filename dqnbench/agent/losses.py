"""DQN targets and losses as small pure functions that check their shapes.

The tutorial computes ``q_target = b_r + GAMMA * q_next.max(1)[0]`` with ``b_r``
of shape ``(B, 1)``: broadcasting makes a ``(B, B)`` target and the MSE quietly
averages the wrong thing. Every function here asserts that its per-sample
inputs share one shape first, as rlax does, so that bug cannot come back.
Shapes are ``(B,)`` for a single run and ``(K, B)`` for K lock-step members:
the math runs over the last dimensions only.
"""

from __future__ import annotations

import torch

from dqnbench.config.schema import LOSSES  # noqa: F401 - the learners read it here


def _check_same(name: str, tensor: torch.Tensor, shape: torch.Size) -> None:
    if tensor.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def dqn_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminated: torch.Tensor,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bootstrapped targets ``r + discount · (1 − terminated) · Q_target(s', a*)``, shape ``(…, B)``.

    ``a*`` is ``argmax Q_target(s')`` (Mnih et al. 2015), or with
    ``next_q_online`` given, ``argmax Q_online(s')`` evaluated by the target
    net (Double DQN, van Hasselt et al. 2016). Only true termination stops
    bootstrapping; a time-limit truncation is stored as not terminated.
    """
    if next_q_target.dim() < 2:
        raise ValueError(f"next_q_target must have shape (…, B, n_actions), got {tuple(next_q_target.shape)}")
    samples = next_q_target.shape[:-1]
    _check_same("rewards", rewards, samples)
    _check_same("discounts", discounts, samples)
    _check_same("terminated", terminated, samples)
    if next_q_online is None:
        next_values = next_q_target.amax(dim=-1)
    else:
        if next_q_online.shape != next_q_target.shape:
            raise ValueError(
                f"next_q_online {tuple(next_q_online.shape)} must match next_q_target {tuple(next_q_target.shape)}"
            )
        best = next_q_online.argmax(dim=-1, keepdim=True)
        next_values = next_q_target.gather(-1, best).squeeze(-1)
    if terminated.dtype == torch.bool:  # a terminal next state bootstraps nothing (even a non-finite Q)
        next_values = next_values.masked_fill(terminated, 0.0)
    else:
        next_values = next_values * (1.0 - terminated.to(next_values.dtype))
    return torch.addcmul(rewards, discounts, next_values)


def taken(q_values: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``Q(s, a)`` of the actions taken: ``q_values (…, B, n_actions)``, ``actions (…, B)`` → ``(…, B)``."""
    _check_same("actions", actions, q_values.shape[:-1])
    return q_values.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def td_losses(q_taken: torch.Tensor, targets: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-sample TD losses ``loss(Q, target)`` of the same shape ``(…, B)``.

    ``kind`` is ``"mse"`` (squared error, the tutorial's ``MSELoss``) or
    ``"huber"`` (smooth L1 with δ = 1, Mnih et al. 2015's error clipping).
    """
    _check_same("q_taken", q_taken, targets.shape)
    # the kernels F.mse_loss and F.smooth_l1_loss call, without their broadcasting check (the shapes are one):
    # ~4 µs a call, a fiftieth of the tutorial's learn step
    if kind == "mse":
        return torch._C._nn.mse_loss(q_taken, targets, 0)
    if kind == "huber":
        return torch._C._nn.smooth_l1_loss(q_taken, targets, 0, 1.0)
    raise ValueError(f'unknown loss {kind!r} (allowed: "mse", "huber")')


def td_loss(
    q_taken: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kind: str = "mse"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-weighted mean TD loss over the last axis and the TD errors ``target − Q``.

    With unit weights the mean equals the unweighted loss.
    """
    elementwise = td_losses(q_taken, targets, kind)
    _check_same("weights", weights, q_taken.shape)
    return (weights * elementwise).mean(dim=-1), (targets - q_taken).detach()


def scaled_log_softmax(q_values: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """``τ · log softmax(q / τ)`` over the last axis: the log-policy of Munchausen RL, in units of Q.

    Computed from ``q − max q`` (``τ log π = q − max q − τ log Σ exp((q − max q)/τ)``),
    so a small τ cannot overflow.
    """
    shifted = q_values - q_values.amax(dim=-1, keepdim=True)
    return shifted - tau * torch.logsumexp(shifted / tau, dim=-1, keepdim=True)


def munchausen_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminated: torch.Tensor,
    actions: torch.Tensor,
    q_target: torch.Tensor,
    next_q_target: torch.Tensor,
    alpha: float | torch.Tensor = 0.9,
    tau: float | torch.Tensor = 0.03,
    l0: float | torch.Tensor = -1.0,
) -> torch.Tensor:
    """Munchausen-DQN targets (Vieillard, Pietquin & Geist 2020, eq. 3), shape ``(…, B)``.

    ``r + α · clip(τ log π(a|s), l0, 0) + discount · (1 − terminated) · Σ_a' π(a'|s') (q(s', a') − τ log π(a'|s'))``

    where ``π = softmax(q / τ)`` is the policy of the *target* network's
    Q-values, read at the observations (``q_target (…, B, n_actions)``, for the
    Munchausen bonus of the action taken) and at the next observations
    (``next_q_target``, for the soft, entropy-regularised value of ``s'``).
    Clipping the scaled log-policy at ``l0 < 0`` keeps the bonus of a nearly
    never-taken action finite. α = 0 gives soft DQN; α = 0 and τ → 0, DQN.
    Each of α, τ and l0 may be a tensor that broadcasts per member (a fused
    group's): α and l0 over ``(…, B)``, τ over ``(…, B, n_actions)``.
    """
    if q_target.dim() < 2 or next_q_target.shape != q_target.shape:
        raise ValueError(
            f"q_target {tuple(q_target.shape)} and next_q_target {tuple(next_q_target.shape)} must both be "
            "(…, B, n_actions)"
        )
    samples = q_target.shape[:-1]
    _check_same("rewards", rewards, samples)
    _check_same("discounts", discounts, samples)
    _check_same("terminated", terminated, samples)
    _check_same("actions", actions, samples)
    log_policy = scaled_log_softmax(q_target, tau).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    if isinstance(l0, torch.Tensor):  # per member (l0 < 0): max with l0, then min with 0
        clipped = torch.maximum(log_policy, l0.to(log_policy)).clamp(max=0.0)
    else:
        clipped = log_policy.clamp(min=l0, max=0.0)
    bonus = alpha * clipped
    next_log_policy = scaled_log_softmax(next_q_target, tau)
    next_policy = (next_log_policy / tau).exp()
    soft_values = (next_policy * (next_q_target - next_log_policy)).sum(dim=-1)
    if terminated.dtype == torch.bool:
        soft_values = soft_values.masked_fill(terminated, 0.0)
    else:
        soft_values = soft_values * (1.0 - terminated.to(soft_values.dtype))
    return rewards + bonus + discounts * soft_values
