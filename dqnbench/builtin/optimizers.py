"""Adam for small networks, without the per-step Python overhead of ``torch.optim``.

For the tutorial's 4-10-2 network the arithmetic of an Adam step takes
nanoseconds; ``torch.optim.Adam.step`` spends ~120 µs in Python (grouping
tensors by device, profiler hooks, state lookups), and even its fused variant
~40 µs. :class:`LeanAdam` keeps the state in flat lists and calls the same
fused kernel (``torch._fused_adam_``) directly, so the update is the one
``torch.optim.Adam(fused=True)`` computes, bit for bit (a test checks this).
Where that kernel is missing (another torch, device or dtype),
:func:`make_adam` falls back to ``torch.optim.Adam``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class LeanAdam:
    """Adam (Kingma & Ba 2015) with β = (0.9, 0.999), ε = 1e-8, no weight decay.

    ``zero_grad`` zeroes gradients in place (one fused call) instead of
    freeing them, so backward accumulates into buffers allocated once.
    """

    def __init__(self, params: list[nn.Parameter], lr: float) -> None:
        self.params = params
        self.lr = float(lr)
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in params]

    def zero_grad(self) -> None:
        torch._foreach_zero_(self.grads)

    def step(self) -> None:
        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(
            self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, [], self.steps,
            lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
            amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip


class TorchAdam:
    """``torch.optim.Adam`` behind the same two-method interface (the fallback)."""

    def __init__(self, params: list[nn.Parameter], lr: float) -> None:
        try:
            self.optimizer = torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            self.optimizer = torch.optim.Adam(params, lr=lr)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()


def make_adam(params: Iterable[nn.Parameter], lr: float) -> LeanAdam | TorchAdam:
    """The fastest Adam that computes ``torch.optim.Adam(fused=True)``'s update for ``params``."""
    params = [p for p in params if p.requires_grad]
    same_kind = len({(p.device, p.dtype) for p in params}) == 1
    if hasattr(torch, "_fused_adam_") and same_kind and params and params[0].dtype in (torch.float32, torch.float64):
        lean = LeanAdam(params, lr)
        try:  # probe the kernel once on copies, so an unsupported device falls back cleanly
            probe = [p.detach().clone() for p in params[:1]]
            torch._fused_adam_(
                probe, [torch.zeros_like(probe[0])], [torch.zeros_like(probe[0])], [torch.zeros_like(probe[0])],
                [], [torch.ones((), device=probe[0].device)],
                lr=lean.lr, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8,
                amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
            )  # fmt: skip
            return lean
        except (RuntimeError, TypeError, NotImplementedError):
            for p in params:
                p.grad = None
    return TorchAdam(params, lr)
