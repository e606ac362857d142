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

Why it is built this way, with measurements: ``docs/internals.md`` (``builtin.optimizers``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dqnbench.builtin.member_optimizers import MemberAdam, MemberRMSprop
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.members import PerMember


def owned_grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    """The parameters' gradient buffers, allocated (zeros) where missing: a lean optimizer keeps these lists,
    and learners write gradients into them in place."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return [p.grad for p in params]


def follow_replaced_grads(params: list[nn.Parameter], grads: list[torch.Tensor]) -> None:
    """Point ``grads`` at any gradient tensor a learner replaced since (None, a zero gradient, gets a buffer)."""
    for i, p in enumerate(params):
        if p.grad is not grads[i]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads[i] = p.grad


class LeanAdam:
    """Adam (Kingma & Ba 2015), no weight decay.

    The gradient buffers are allocated once here and kept: learners write the
    gradients into them in place (autograd after zeroing them, a network's
    manual path directly), so ``step`` reads fixed lists.
    """

    def __init__(
        self, params: list[nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        # One step counter per device, shared by its parameters (the fused kernel only reads it): one
        # increment per step instead of a foreach over every parameter's own copy of the same number.
        counters = {p.device: torch.zeros((), dtype=torch.float32, device=p.device) for p in params}
        self.counters = list(counters.values())
        self.steps = [counters[p.device] for p in params]
        self.grads = owned_grads(params)

    def step(self) -> None:
        for counter in self.counters:
            counter.add_(1)
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


def _betas(betas: object) -> tuple[float, float]:
    if not isinstance(betas, list | tuple) or len(betas) != 2:
        raise ValueError(f"betas must be a list of two numbers, got {betas!r}")
    b1, b2 = (_number(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas))
    return b1, b2


def _members(values: dict[str, object]) -> int | None:
    """K when any value is a :class:`PerMember` (a fused group), else None."""
    return next((len(v) for v in values.values() if isinstance(v, PerMember)), None)


def _per_member(value: object, members: int, check) -> list:  # noqa: ANN001 - a check of one value
    return [check(v) for v in (value if isinstance(value, PerMember) else (value,) * members)]


def adam(
    parameters: list[nn.Parameter], lr: float, eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)
) -> LeanAdam | TorchAdam | MemberAdam:
    """Adam (Kingma & Ba 2015): the tutorial's optimizer.

    In a fused group ``lr``, ``eps`` and ``betas`` may differ per member (:class:`MemberAdam`).

    :param eps: added to the denominator; Dopamine uses 1.5e-4 and CleanRL 0.01 / batch size for DQN.
    :param betas: decay rates of the first and second moment estimates.
    """
    members = _members({"lr": lr, "eps": eps, "betas": betas})
    positive = lambda name: lambda v: _number(name, v, 0.0, low_open=True)  # noqa: E731
    if members is not None:
        params = [p for p in parameters if p.requires_grad]
        return MemberAdam(
            params,
            _per_member(lr, members, positive("lr")),
            _per_member(betas, members, _betas),
            _per_member(eps, members, positive("eps")),
        )
    return make_adam(parameters, lr, _betas(betas), positive("eps")(eps))


class LeanRMSprop(torch.optim.RMSprop):
    """``torch.optim.RMSprop`` (no weight decay, not maximizing) with a faster ``step``; the same update.

    ``step`` is torch's multi-tensor RMSProp on state kept in lists (also in
    ``self.state``, so ``state_dict`` is torch's), with the variance raised to
    :attr:`floor` before its square root: ``sqrt(v) + eps == sqrt(max(v, floor)) + eps``
    exactly for every ``v >= 0``, since ``sqrt(floor)`` is under half a unit in
    the last place of ``eps``; it only skips the CPU's slow ``sqrt(0)``. The one
    difference from torch: a centered variance that rounds below zero (it is
    ``>= 0`` in exact arithmetic) counts as zero, where torch's ``sqrt`` turns
    the weight into NaN. Like :class:`LeanAdam`, the gradient buffers are
    allocated here and learners write gradients into them in place; a
    gradient tensor replaced since (or set to None: a zero gradient) is picked up.
    Hyper-parameters are read from ``param_groups`` at each step, as torch does.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        alpha: float = 0.99,
        eps: float = 1e-8,
        centered: bool = False,
        momentum: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, centered=centered, momentum=momentum, foreach=True)
        self.params = [p for group in self.param_groups for p in group["params"]]
        self.grads = owned_grads(self.params)
        self.dtype = self.params[0].dtype
        self._bind_state()
        #: the denominators, written in place each step (a fresh multi-MB allocation a step costs page faults)
        self.avgs = [torch.empty_like(p) for p in self.params]

    def _bind_state(self) -> None:
        """Point the lists ``step`` updates at ``self.state``'s tensors, creating those missing as torch names them.

        The centered average and the momentum buffer exist only when in use,
        as in torch's state after a first step.
        """
        group = self.param_groups[0]
        self.steps = self._state("step", lambda p: torch.zeros((), dtype=torch.float32))
        self.square_avgs = self._state("square_avg")
        self.grad_avgs = self._state("grad_avg") if group["centered"] else None
        self.momentum_buffers = self._state("momentum_buffer") if group["momentum"] > 0 else None

    def _state(self, key: str, new=lambda p: torch.zeros_like(p, memory_format=torch.preserve_format)) -> list:
        """Each parameter's ``self.state[p][key]`` (created if missing), as a list in parameter order."""
        for p in self.params:
            if key not in self.state[p]:
                self.state[p][key] = new(p)
        return [self.state[p][key] for p in self.params]

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's ``load_state_dict`` (which replaces the state tensors), then ``step`` follows the new ones."""
        super().load_state_dict(state_dict)
        self._bind_state()

    def floor(self, eps: float) -> float:
        """A variance floor whose square root is far under half an ulp of ``eps`` (0 if that underflows the dtype)."""
        info = torch.finfo(self.dtype)
        floor = (eps * info.eps / 64) ** 2  # sqrt(floor) = eps·2⁻²⁹ (float32) < half an ulp of eps (≥ eps·2⁻²⁵)
        return floor if floor >= info.tiny else 0.0

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        follow_replaced_grads(self.params, self.grads)  # a learner that replaced a gradient tensor
        group = self.param_groups[0]
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        grads, square_avgs, avg = self.grads, self.square_avgs, self.avgs
        torch._foreach_add_(self.steps, 1)
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if group["centered"]:
            if self.grad_avgs is None:  # hyper-parameters changed since: as torch, start the average now
                self.grad_avgs = self._state("grad_avg")
            torch._foreach_lerp_(self.grad_avgs, grads, 1 - alpha)
            for out, square_avg, grad_avg in zip(avg, square_avgs, self.grad_avgs):  # one pass: no foreach out=
                torch.addcmul(square_avg, grad_avg, grad_avg, value=-1, out=out)
            torch._foreach_clamp_min_(avg, self.floor(eps))
        else:
            for out, square_avg in zip(avg, square_avgs):
                torch.clamp_min(square_avg, self.floor(eps), out=out)
        torch._foreach_sqrt_(avg)
        torch._foreach_add_(avg, eps)
        if momentum > 0:
            if self.momentum_buffers is None:  # as torch, a buffer from the first step with momentum
                self.momentum_buffers = self._state("momentum_buffer")
            torch._foreach_mul_(self.momentum_buffers, momentum)
            torch._foreach_addcdiv_(self.momentum_buffers, grads, avg)
            torch._foreach_add_(self.params, self.momentum_buffers, alpha=-lr)
        else:
            torch._foreach_addcdiv_(self.params, grads, avg, value=-lr)
        return loss


def rmsprop(
    parameters: list[nn.Parameter],
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
    centered: bool = False,
    momentum: float = 0.0,
) -> torch.optim.RMSprop | MemberRMSprop:
    """RMSProp (Tieleman & Hinton 2012), ``torch.optim.RMSprop``; Nature DQN: alpha 0.95, eps 0.01, centered.

    :class:`LeanRMSprop` when the parameters share one device and floating
    dtype (one parameter group), else ``torch.optim.RMSprop`` itself.

    :param alpha: decay of the squared-gradient average.
    :param eps: added to the denominator.
    :param centered: divide by the gradient's estimated variance instead of its second moment.
    :param momentum: momentum factor.
    """
    if not isinstance(centered, bool):
        raise ValueError(f"centered must be true or false, got {centered!r}")
    params = [p for p in parameters if p.requires_grad]
    members = _members({"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum})
    if members is not None:
        return MemberRMSprop(
            params,
            _per_member(lr, members, lambda v: _number("lr", v, 0.0, low_open=True)),
            _per_member(alpha, members, lambda v: _number("alpha", v, 0.0, 1.0)),
            _per_member(eps, members, lambda v: _number("eps", v, 0.0, low_open=True)),
            centered,
            _per_member(momentum, members, lambda v: _number("momentum", v, 0.0)),
        )
    hyper = {
        "lr": lr,
        "alpha": _number("alpha", alpha, 0.0, 1.0),
        "eps": _number("eps", eps, 0.0, low_open=True),
        "centered": centered,
        "momentum": _number("momentum", momentum, 0.0),
    }
    kinds = {(p.device, p.dtype) for p in params}
    if len(kinds) == 1 and params[0].dtype.is_floating_point and not any(p.is_sparse for p in params):
        return LeanRMSprop(params, **hyper)
    return torch.optim.RMSprop(params, **hyper)


# Elementwise updates: K stacked lock-step members are K independent optimizers, and in a fused group each
# member has its own scalars ("lr" is agent.lr) and steps only while active (agent.learning_starts).
adam.lockstep = rmsprop.lockstep = True
adam.memberwise = ("lr", "eps", "betas")
rmsprop.memberwise = ("lr", "alpha", "eps", "momentum")


@hookimpl
def dqnbench_optimizers() -> dict:
    return {"adam": adam, "rmsprop": rmsprop}
