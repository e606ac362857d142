"""A learn step's gradient: the learner's loss on the network's outputs, through autograd or a network's manual path.

A learner states its rule once, as a per-sample ``loss`` on the outputs of
``nets.online`` and ``nets.target``. :func:`autograd_backward` differentiates it
through the whole network. A network may offer a *manual path* (``manual_forward``,
``manual_backward``: its own forward without an autograd graph, and its
gradients written out from the loss's gradient in its outputs); for a learner
whose loss reads the networks only through their outputs (``loss_on_outputs``),
:func:`manual_backward` then lets autograd differentiate the loss alone and
hands its gradient to the network. Same gradients, one rule, any learner. Batch
fields are ``(B,)`` for one run and ``(K, B)`` for K lock-step members, each
member's loss the mean over its own samples. Why and measurements: ``docs/internals.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks

#: What a run's ``learn_path`` says when the gradient came from autograd.
AUTOGRAD = "autograd"
#: A run's ``learn_path`` when the network's manual path computed it (its gradients derived by hand).
HAND_DERIVED = "hand-derived"


def autograd_backward(learner, nets: Networks, batch: Batch) -> LearnerLoss:
    """Set ``.grad`` of the online parameters to the weighted mean loss's gradient, by autograd.

    Existing gradients are zeroed in place first (optimizers may hold on to
    the gradient tensors). Returns the per-run losses ``(…,)`` (detached) and
    the priorities ``(…, B)``.
    """
    grads = [p.grad for p in nets.online.parameters() if p.grad is not None]
    if grads:
        torch._foreach_zero_(grads)
    losses, priorities = learner.loss(nets, batch)
    _check_losses(losses, batch)
    per_run = (batch.weights * losses).mean(dim=-1)
    per_run.sum().backward()
    return LearnerLoss(per_run.detach(), priorities.detach())


def _check_losses(losses: torch.Tensor, batch: Batch) -> None:
    if losses.shape != batch.weights.shape:
        raise ValueError(
            f"learner loss returned shape {tuple(losses.shape)}, expected per-sample {tuple(batch.weights.shape)}"
        )


# --------------------------------------------------------------------------- the manual path


_set_grad_enabled = torch._C._set_grad_enabled

#: which network classes offer the manual path (decided once per class)
_OFFERS: dict[type, bool] = {}


def offers_manual_path(network: nn.Module) -> bool:
    """Does ``network`` offer the manual path for its own ``forward``?

    It has ``manual_forward`` and ``manual_backward``, and no subclass below the
    class that wrote them overrides ``forward``, ``features`` or ``from_features``
    (a subclass with its own math learns through autograd until it writes its own
    manual path).
    """
    cls = type(network)
    offers = _OFFERS.get(cls)
    if offers is None:
        owner = _owner(cls, "manual_forward")
        offers = (
            owner is not None
            and callable(getattr(cls, "manual_backward", None))
            and all(_owner(cls, name) in (None, *owner.__mro__) for name in ("forward", "features", "from_features"))
        )
        _OFFERS[cls] = offers
    return offers


def _owner(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO that defines ``name``."""
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def takes_manual_path(learner: Any, nets: Networks) -> bool:
    """Is the learner's loss on outputs only (``loss_on_outputs``) and does the online network offer the manual path?"""
    return bool(getattr(learner, "loss_on_outputs", False)) and offers_manual_path(nets.online)


class _Outputs:
    """A network as a loss reads it on the manual path: its ``manual_forward``, no autograd graph through it.

    Called with gradients enabled (the online network's outputs the loss
    differentiates), the outputs become a leaf of the loss's graph, kept on
    ``tape`` with the network's activations. Other attributes are the network's.
    """

    __slots__ = ("network", "tape")

    def __init__(self, network: nn.Module, tape: list | None) -> None:
        self.network, self.tape = network, tape

    def __call__(self, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
        grad = torch.is_grad_enabled()
        _set_grad_enabled(False)  # a context manager object costs µs a call, a fifth of a tiny net's forward
        try:
            outputs, activations = self.network.manual_forward(x, *more)
        finally:
            _set_grad_enabled(grad)
        if grad and self.tape is not None:
            self.tape.append((outputs.requires_grad_(), activations))
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.network, name)


class _ManualNets:
    """``nets`` as the loss sees them on the manual path (``online`` taped, ``target`` never)."""

    def __init__(self, nets: Networks, tape: list) -> None:
        self.nets, self.online, self.target = nets, _Outputs(nets.online, tape), _Outputs(nets.target, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.nets, name)


def _engine() -> Any:
    """autograd's engine, called without ``torch.autograd.grad``'s Python wrapper (~35 µs a call on the machines
    measured, a sixth of a tiny network's learn step), or None where this torch has no such entry."""
    try:
        from torch.autograd.variable import Variable

        engine = Variable._execution_engine
    except (ImportError, AttributeError):
        return None
    return engine if callable(getattr(engine, "run_backward", None)) else None


_ENGINE = _engine()


def loss_gradients(
    losses: torch.Tensor, grad_losses: torch.Tensor, leaves: list[torch.Tensor]
) -> tuple[torch.Tensor | None, ...]:
    """``torch.autograd.grad(losses, leaves, grad_losses, allow_unused=True)``: the gradients in ``leaves``."""
    if _ENGINE is not None:
        return _ENGINE.run_backward((losses,), (grad_losses,), False, False, tuple(leaves), True, False)
    return torch.autograd.grad(losses, leaves, grad_losses, allow_unused=True)


#: per learner class, its hand-derived loss gradient's owner decision (see :func:`hand_gradient`)
_HAND: dict[type, bool] = {}


def hand_gradient(learner: Any) -> Any:
    """The learner's ``loss_gradient`` (its loss's gradient in the online outputs, written out), or None.

    Only where the class that wrote ``loss_gradient`` also wrote the ``loss`` it
    derives: a subclass with a loss of its own learns through autograd on its
    loss until it writes its own gradient (as :func:`offers_manual_path` for networks).
    """
    cls = type(learner)
    ok = _HAND.get(cls)
    if ok is None:
        owner = _owner(cls, "loss_gradient")
        ok = _HAND[cls] = owner is not None and _owner(cls, "loss") in owner.__mro__
    return learner.loss_gradient if ok else None


def manual_backward(learner: Any, nets: Networks, batch: Batch) -> LearnerLoss:
    """:func:`autograd_backward`'s gradients by the network's manual path (see :func:`takes_manual_path`).

    The loss runs on the networks' ``manual_forward``; autograd takes the
    weighted mean's gradient in the online outputs, ``weights / B`` per sample
    through the loss; ``manual_backward`` turns it into the parameters' ``.grad``.
    A learner that writes that gradient out (``loss_gradient``, :func:`hand_gradient`)
    skips autograd altogether: the speed path of the built-in TD learners, whose
    loss graph's autograd call was a third of the tutorial network's learn step.
    """
    scale = batch.weights * (1.0 / batch.weights.shape[-1])  # d(weighted mean)/d(loss) per sample
    hand = hand_gradient(learner)
    if hand is not None:
        online, grad = nets.online, torch.is_grad_enabled()
        _set_grad_enabled(False)
        try:
            outputs, activations = online.manual_forward(batch.obs)
            losses, priorities, d_outputs = hand(outputs, _ManualNets(nets, None), batch, scale)
            _check_losses(losses, batch)
            online.manual_backward(activations, d_outputs)
            return LearnerLoss(torch.linalg.vecdot(scale, losses), priorities)
        finally:
            _set_grad_enabled(grad)
    tape: list = []
    losses, priorities = learner.loss(_ManualNets(nets, tape), batch)
    _check_losses(losses, batch)
    if not tape:
        raise RuntimeError("the learner's loss never read nets.online with gradients: nothing to differentiate")
    grads = loss_gradients(losses, scale, [outputs for outputs, _ in tape])
    online = nets.online
    with torch.no_grad():
        for i, ((outputs, activations), grad) in enumerate(zip(tape, grads)):
            grad = torch.zeros_like(outputs) if grad is None else grad
            if i == 0:
                online.manual_backward(activations, grad)
                continue
            # the loss read the online network more than once: each reading's gradients add up
            params = [p for p in online.parameters() if p.grad is not None]
            earlier = [p.grad.clone() for p in params]
            online.manual_backward(activations, grad)
            torch._foreach_add_([p.grad for p in params], earlier)
        per_run = torch.linalg.vecdot(scale, losses.detach())  # the weighted mean, in one operation
    return LearnerLoss(per_run, priorities.detach())


# --------------------------------------------------------------------------- what the loop calls


def learn_backward(learner: Any, nets: Networks, batch: Batch) -> LearnerLoss:
    """The learn step's gradient of a learner without its own ``backward``: the manual path where it applies,
    else autograd."""
    if takes_manual_path(learner, nets):
        return manual_backward(learner, nets, batch)
    return autograd_backward(learner, nets, batch)


def learn_path(learner, nets: Networks) -> str:
    """How ``learner`` computes gradients for ``nets``: its own ``learn_path(nets)``, else :data:`HAND_DERIVED`
    where :func:`learn_backward` takes the manual path, else :data:`AUTOGRAD`.

    Recorded per run, so plots can say which cells ran a speed path (their
    steps per second are not comparable one to one with autograd cells).
    """
    says = getattr(learner, "learn_path", None)
    if callable(says):
        return str(says(nets))
    if getattr(learner, "backward", None) is None and takes_manual_path(learner, nets):
        return HAND_DERIVED
    return AUTOGRAD


class LearnerBase:
    """Defaults for a learner: one output per action read as Q-values, the gradient by :func:`learn_backward`.

    Subclasses implement :meth:`loss`; a distributional learner sets ``outputs``
    and overrides :meth:`q_values`. A loss that reads the networks only through
    their outputs (``nets.online(x)``, ``nets.target(x)``) may say so with
    ``loss_on_outputs = True``: networks that offer the manual path then learn by it.
    """

    #: outputs per action the network must give
    outputs: int = 1
    #: the loss reads the networks only through their outputs (no parameters, no other module calls)
    loss_on_outputs: bool = False

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """The network's outputs are the Q-values ``(…, n_actions)``."""
        return outputs

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        raise NotImplementedError

    def backward(self, nets: Networks, batch: Batch) -> LearnerLoss:
        return learn_backward(self, nets, batch)

    def learn_path(self, nets: Networks) -> str:
        """:data:`HAND_DERIVED` where :meth:`backward` (this class's) takes the manual path, else :data:`AUTOGRAD`."""
        own = type(self).backward is LearnerBase.backward
        return HAND_DERIVED if own and takes_manual_path(self, nets) else AUTOGRAD
