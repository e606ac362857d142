"""Adam and RMSProp for fused lock-step groups, whose members may each have their own hyper-parameters.

The members' parameters are stacked on a leading K dimension. Here they are
moved into one flat ``(K, P)`` buffer (each parameter a view of it), so an
update is a dozen tensor operations for the whole network, with each member's
``lr`` (and ``eps``, ``betas``, ``alpha``, ``momentum``) broadcast down its
row, and a step count per member. ``step(active)`` leaves the members not in
``active`` exactly as they were (parameters and state): a member whose
``learning_starts`` has not come yet. Every operation is elementwise, so a
member's update never reads another member's values (tests check it bit for
bit, and against ``torch.optim`` member by member).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """K numbers as a ``(K, 1)`` column in float64 (the precision torch.optim keeps its scalars in)."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=like.device).unsqueeze(1)


class FlatMembers:
    """The K members' parameters and gradients as views of two flat ``(K, P)`` buffers."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        first = params[0]
        self.members = first.shape[0]
        sizes = [p[0].numel() for p in params]
        self.flat = torch.empty(self.members, sum(sizes), dtype=first.dtype, device=first.device)
        self.flat_grad = torch.zeros_like(self.flat)
        offset = 0
        self.grads = []
        with torch.no_grad():
            for p, size in zip(params, sizes):
                view = self.flat[:, offset : offset + size].view(p.shape)
                view.copy_(p)
                p.data = view
                p.grad = self.flat_grad[:, offset : offset + size].view(p.shape)
                self.grads.append(p.grad)
                offset += size

    def gradient(self) -> torch.Tensor:
        """The flat gradient, after copying in any gradient tensor a learner replaced (None: a zero gradient)."""
        for i, p in enumerate(self.params):
            if p.grad is not self.grads[i]:
                if p.grad is None:
                    self.grads[i].zero_()
                else:
                    self.grads[i].copy_(p.grad)
                p.grad = self.grads[i]
        return self.flat_grad

    def rows(self, active: torch.Tensor | None) -> torch.Tensor | None:
        """``active`` as a ``(K, 1)`` mask, or None when every member steps."""
        if active is None or bool(active.all()):
            return None
        return active.to(self.flat.device).view(-1, 1)


class MemberAdam:
    """Adam (Kingma & Ba 2015) with a learning rate, betas and eps per member; no weight decay."""

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: Sequence[float],
        betas: Sequence[tuple[float, float]],
        eps: Sequence[float],
    ) -> None:
        self.members = FlatMembers(params)
        flat = self.members.flat
        self.lr, self.eps = _column(lr, flat), _column(eps, flat).to(flat.dtype)
        self.beta1, self.beta2 = _column([b[0] for b in betas], flat), _column([b[1] for b in betas], flat)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
        self.steps = torch.zeros_like(self.lr)

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        grad, flat, mask = self.members.gradient(), self.members.flat, self.members.rows(active)
        self.steps += 1.0 if mask is None else mask.to(self.steps.dtype)
        correction1 = 1.0 - self.beta1**self.steps
        correction2_sqrt = (1.0 - self.beta2**self.steps).sqrt()
        exp_avg = self.exp_avg.lerp(grad, (1.0 - self.beta1).to(flat.dtype))
        exp_avg_sq = self.exp_avg_sq * self.beta2.to(flat.dtype) + (1.0 - self.beta2).to(flat.dtype) * grad * grad
        denom = (exp_avg_sq.sqrt() / correction2_sqrt.to(flat.dtype)).add_(self.eps)
        update = exp_avg / denom * (self.lr / correction1).to(flat.dtype)
        if mask is None:
            self.exp_avg.copy_(exp_avg)
            self.exp_avg_sq.copy_(exp_avg_sq)
            flat.sub_(update)
            return
        torch.where(mask, exp_avg, self.exp_avg, out=self.exp_avg)
        torch.where(mask, exp_avg_sq, self.exp_avg_sq, out=self.exp_avg_sq)
        torch.where(mask, flat - update, flat, out=flat)


class MemberRMSprop:
    """RMSProp (Tieleman & Hinton 2012) as ``torch.optim.RMSprop`` computes it, its scalars per member.

    ``centered`` is one code path, so it is shared by the group (not member-wise).
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: Sequence[float],
        alpha: Sequence[float],
        eps: Sequence[float],
        centered: bool,
        momentum: Sequence[float],
    ) -> None:
        self.members = FlatMembers(params)
        flat = self.members.flat
        self.lr, self.alpha = _column(lr, flat).to(flat.dtype), _column(alpha, flat).to(flat.dtype)
        self.eps, self.momentum = _column(eps, flat).to(flat.dtype), _column(momentum, flat).to(flat.dtype)
        self.centered = centered
        self.square_avg = torch.zeros_like(flat)
        self.grad_avg = torch.zeros_like(flat) if centered else None
        self.momentum_buffer = torch.zeros_like(flat)

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        grad, flat, mask = self.members.gradient(), self.members.flat, self.members.rows(active)
        square_avg = self.square_avg * self.alpha + (1.0 - self.alpha) * grad * grad
        if self.centered:
            grad_avg = self.grad_avg.lerp(grad, 1.0 - self.alpha)
            avg = (square_avg - grad_avg * grad_avg).clamp_min_(0.0).sqrt_().add_(self.eps)
        else:
            avg = square_avg.sqrt().add_(self.eps)
        buffer = self.momentum_buffer * self.momentum + grad / avg  # with momentum 0, the plain step grad / avg
        update = self.lr * buffer
        new = {"square_avg": square_avg, "momentum_buffer": buffer}
        if self.centered:
            new["grad_avg"] = grad_avg
        for name, value in new.items():
            state = getattr(self, name)
            state.copy_(value) if mask is None else torch.where(mask, value, state, out=state)
        if mask is None:
            flat.sub_(update)
        else:
            torch.where(mask, flat - update, flat, out=flat)
