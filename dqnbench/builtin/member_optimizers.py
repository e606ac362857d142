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


def variance_floor(eps: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Each member's variance floor ``(K, 1)``: ``sqrt(floor) / scale`` is ``eps · 2⁻²⁹`` in float32, far under half
    a unit in the last place of ``eps``, so ``sqrt(max(v, floor)) / scale + eps == sqrt(v) / scale + eps`` exactly;
    0 where that would underflow the dtype. It only skips the CPU's slow ``sqrt(0)`` (8× a normal value's here,
    50× on other machines: a weight whose gradient is always 0, behind MinAtar's empty cells or a dead ReLU), as
    ``LeanRMSprop`` does (``docs/internals.md``)."""
    info = torch.finfo(dtype)
    floor = (eps.double() * scale * info.eps / 64) ** 2
    return torch.where(floor >= info.tiny, floor, 0.0).to(dtype)


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
        # the averages' weights in the parameters' dtype, made once (each costs a conversion a step otherwise)
        self.weight1, self.weight2 = (1.0 - self.beta1).to(flat.dtype), (1.0 - self.beta2).to(flat.dtype)
        # √v is divided by √(1 − β₂ᵗ) ≥ √(1 − β₂) from the first step on: the floor holds for every step
        self.floor = variance_floor(self.eps, flat.dtype, (1.0 - self.beta2).sqrt())

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        grad, flat, mask = self.members.gradient(), self.members.flat, self.members.rows(active)
        self.steps += 1.0 if mask is None else mask.to(self.steps.dtype)
        correction1 = 1.0 - self.beta1**self.steps
        correction2_sqrt = (1.0 - self.beta2**self.steps).sqrt().to(flat.dtype)
        step_size = (self.lr / correction1).to(flat.dtype)
        if mask is None:  # every member steps: the state in place, eight operations on the flat (K, P) buffers
            self.exp_avg.lerp_(grad, self.weight1)
            self.exp_avg_sq.lerp_(grad.square(), self.weight2)  # β₂ v + (1 − β₂) g²
            denom = self.exp_avg_sq.clamp_min(self.floor).sqrt_().div_(correction2_sqrt).add_(self.eps).div_(step_size)
            flat.addcdiv_(self.exp_avg, denom, value=-1.0)  # − step_size · m / (√v / c₂ + ε)
            return
        # the same operations out of place, kept where a member steps: its numbers are those of the path above
        exp_avg = self.exp_avg.lerp(grad, self.weight1)
        exp_avg_sq = self.exp_avg_sq.lerp(grad.square(), self.weight2)
        denom = exp_avg_sq.clamp_min(self.floor).sqrt_().div_(correction2_sqrt).add_(self.eps).div_(step_size)
        torch.where(mask, exp_avg, self.exp_avg, out=self.exp_avg)
        torch.where(mask, exp_avg_sq, self.exp_avg_sq, out=self.exp_avg_sq)
        torch.where(mask, flat.addcdiv(exp_avg, denom, value=-1.0), flat, out=flat)


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
        self.weight = 1.0 - self.alpha  # the average's weight of the new square, made once
        self.floor = variance_floor(self.eps, flat.dtype)

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        grad, flat, mask = self.members.gradient(), self.members.flat, self.members.rows(active)
        if mask is None:  # every member steps: the state in place (the masked path below gives the same numbers)
            self._update(grad, self.square_avg, self.grad_avg, self.momentum_buffer)
            flat.addcmul_(self.momentum_buffer, self.lr, value=-1.0)
            return
        states = {"square_avg": self.square_avg.clone(), "momentum_buffer": self.momentum_buffer.clone()}
        if self.centered:
            states["grad_avg"] = self.grad_avg.clone()
        self._update(grad, states["square_avg"], states.get("grad_avg"), states["momentum_buffer"])
        for name, value in states.items():
            state = getattr(self, name)
            torch.where(mask, value, state, out=state)
        torch.where(mask, flat.addcmul(states["momentum_buffer"], self.lr, value=-1.0), flat, out=flat)

    def _update(
        self, grad: torch.Tensor, square_avg: torch.Tensor, grad_avg: torch.Tensor | None, buffer: torch.Tensor
    ) -> None:
        """The averages and the momentum buffer, in place: ``buffer`` becomes the step before the learning rate."""
        square_avg.lerp_(grad.square(), self.weight)  # α v + (1 − α) g²
        if self.centered:
            grad_avg.lerp_(grad, self.weight)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1.0).clamp_min_(self.floor).sqrt_().add_(self.eps)
        else:
            avg = square_avg.clamp_min(self.floor).sqrt_().add_(self.eps)
        buffer.mul_(self.momentum).addcdiv_(grad, avg)  # with momentum 0, the plain step grad / avg
