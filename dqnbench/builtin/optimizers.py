"""Built-in optimizers ``adam`` and ``rmsprop``; Adam without the per-step Python overhead of ``torch.optim``.

For the tutorial's 4-10-2 network the arithmetic of an Adam step takes
nanoseconds; ``torch.optim.Adam.step`` spends ~120 µs in Python (grouping
tensors by device, profiler hooks, state lookups), and even its fused variant
~40 µs. :class:`LeanAdam` keeps the state in flat lists and calls the same
fused kernel (``torch._fused_adam_``) directly, so the update is the one
``torch.optim.Adam(fused=True)`` computes, bit for bit (a test checks this).
Where that kernel is missing (another torch, device or dtype),
:func:`make_adam` falls back to ``torch.optim.Adam``. This is the optimizer's
speed path, behind the ``adam`` component's boundary.

``rmsprop`` is ``torch.optim.RMSprop``: with ``alpha = 0.95, eps = 0.01,
centered = true`` it is close to the Nature DQN's centered RMSProp (Mnih et al.
2015; their ε is added inside the square root, torch's outside). Both are
elementwise, so K stacked lock-step members are K independent optimizers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dqnbench.plugin.hookspecs import hookimpl


class LeanAdam:
    """Adam (Kingma & Ba 2015), no weight decay.

    The gradient buffers are allocated once here and kept: learners write the
    gradients into them in place (autograd after zeroing them, the ``dqn``
    learner's hand-derived path directly), so ``step`` reads fixed lists.
    """

    def __init__(
        self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.grads = [p.grad for p in params]

    def step(self) -> None:
        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(
            self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, [], self.steps,
            lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
        )  # fmt: skip


class TorchAdam:
    """``torch.optim.Adam`` behind the same ``step`` interface (the fallback)."""

    def __init__(
        self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        try:
            self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=True)
        except (RuntimeError, TypeError, ValueError):
            self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)

    def step(self) -> None:
        self.optimizer.step()


def make_adam(
    params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> LeanAdam | TorchAdam:
    """The fastest Adam that computes ``torch.optim.Adam(fused=True)``'s update for ``params``."""
    params = [p for p in params if p.requires_grad]
    same_kind = len({(p.device, p.dtype) for p in params}) == 1
    if hasattr(torch, "_fused_adam_") and same_kind and params and params[0].dtype in (torch.float32, torch.float64):
        lean = LeanAdam(params, lr, betas, eps)
        try:  # probe the kernel once on copies, so an unsupported device falls back cleanly
            probe = [p.detach().clone() for p in params[:1]]
            torch._fused_adam_(
                probe, [torch.zeros_like(probe[0])], [torch.zeros_like(probe[0])], [torch.zeros_like(probe[0])],
                [], [torch.ones((), device=probe[0].device)],
                lr=lean.lr, beta1=lean.betas[0], beta2=lean.betas[1], weight_decay=0.0, eps=lean.eps,
                amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
            )  # fmt: skip
            return lean
        except (RuntimeError, TypeError, NotImplementedError):
            for p in params:
                p.grad = None
    return TorchAdam(params, lr, betas, eps)


def _number(name: str, value: object, low: float, high: float = float("inf"), low_open: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= value < high
        or (low_open and value == low)
    ):
        bounds = f"{'(' if low_open else '['}{low}, {high})"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)


def adam(
    parameters: list[nn.Parameter], lr: float, eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)
) -> LeanAdam | TorchAdam:
    """Adam (Kingma & Ba 2015): the tutorial's optimizer.

    :param eps: added to the denominator; Dopamine uses 1.5e-4 and CleanRL 0.01 / batch size for DQN.
    :param betas: decay rates of the first and second moment estimates.
    """
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise ValueError(f"betas must be a list of two numbers, got {betas!r}")
    b1, b2 = (_number(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas))
    return make_adam(parameters, lr, (b1, b2), _number("eps", eps, 0.0, low_open=True))


def rmsprop(
    parameters: list[nn.Parameter],
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
    centered: bool = False,
    momentum: float = 0.0,
) -> torch.optim.RMSprop:
    """RMSProp (Tieleman & Hinton 2012), ``torch.optim.RMSprop``; Nature DQN: alpha 0.95, eps 0.01, centered.

    :param alpha: decay of the squared-gradient average.
    :param eps: added to the denominator.
    :param centered: divide by the gradient's estimated variance instead of its second moment.
    :param momentum: momentum factor.
    """
    if not isinstance(centered, bool):
        raise ValueError(f"centered must be true or false, got {centered!r}")
    return torch.optim.RMSprop(
        parameters,
        lr=lr,
        alpha=_number("alpha", alpha, 0.0, 1.0),
        eps=_number("eps", eps, 0.0, low_open=True),
        centered=centered,
        momentum=_number("momentum", momentum, 0.0),
    )


# Elementwise updates: K stacked lock-step members are K independent optimizers.
adam.lockstep = rmsprop.lockstep = True


@hookimpl
def dqnbench_optimizers() -> dict:
    return {"adam": adam, "rmsprop": rmsprop}
