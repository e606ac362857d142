"""Built-in learners ``dqn`` and ``munchausen``: TD rules on Q-values (one output per action).

- ``dqn``: Mnih et al. (2015), optionally Double DQN (van Hasselt et al. 2016).
- ``munchausen``: Munchausen-DQN (Vieillard, Pietquin & Geist 2020).

``loss`` states each rule (rlax-style pure functions in
:mod:`dqnbench.agent.losses`): ``Q(s, a)`` of the online network against its
target, read only from the networks' outputs (``loss_on_outputs``), so a network
that offers the manual path learns by it (:mod:`dqnbench.agent.learning`).
Shape-generic: ``(B,)`` for one run, ``(K, B)`` for K stacked lock-step members.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dqnbench.agent.learning import LearnerBase
from dqnbench.agent.losses import LOSSES, dqn_targets, munchausen_targets, taken, td_losses
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.members import PerMember, each_member

#: a network's outputs on observations, as a learner's targets read them: ``x → (…, B, n_actions[, N])``
Forward = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- dqn


class DQNLearner(LearnerBase):
    """DQN's TD loss on Q-values (one output per action); ``double`` picks ``a*`` with the online net.

    In a fused group ``double`` may differ between members (a :class:`PerMember`):
    every member then computes both targets and keeps its own, so no member's
    code path depends on another's value.
    """

    loss_on_outputs = True

    def __init__(self, double: bool | PerMember = False, loss: str = "mse") -> None:
        self.double = double_mask(double)
        self.kind = loss

    def targets(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        """The TD targets ``(…, B)`` from the target (and, for Double DQN, the online) network's outputs."""
        next_target = target(batch.next_obs)  # before the online net: noisy nets draw in the previous release's order
        if isinstance(self.double, torch.Tensor):
            args = (batch.rewards, batch.discounts, batch.terminated, next_target)
            double = dqn_targets(*args, online(batch.next_obs))
            return torch.where(self.double.to(double.device), double, dqn_targets(*args))
        next_online = online(batch.next_obs) if self.double else None
        return dqn_targets(batch.rewards, batch.discounts, batch.terminated, next_target, next_online)

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        q_taken = taken(nets.online(batch.obs), batch.actions)
        with torch.no_grad():
            targets = self.targets(batch, nets.target, nets.online)
        return LearnerLoss(td_losses(q_taken, targets, self.kind), targets - q_taken.detach())

    def loss_gradient(
        self, q_values: torch.Tensor, nets: Networks, batch: Batch, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`loss` on ``q_values = nets.online(batch.obs)`` and ``d(Σ scale · losses) / d q_values``.

        The speed path of the manual path (:func:`~dqnbench.agent.learning.hand_gradient`):
        the TD loss's slope written out, ``2 (Q − target)`` for MSE and
        ``clamp(Q − target, −1, 1)`` for Huber, in the taken action's column,
        instead of autograd over the loss (tested equal in ``tests/test_dqn_learner.py``).
        Returns the per-sample losses, the priorities and that gradient.
        """
        q_taken = taken(q_values, batch.actions)
        targets = self.targets(batch, nets.target, nets.online)
        losses = td_losses(q_taken, targets, self.kind)
        errors = q_taken - targets
        slope = errors.mul(2.0) if self.kind == "mse" else errors.clamp(-1.0, 1.0)
        d_q = torch.zeros_like(q_values).scatter_(-1, batch.actions.unsqueeze(-1), (scale * slope).unsqueeze(-1))
        return losses, errors.neg_(), d_q


def double_mask(double: bool | PerMember) -> bool | torch.Tensor:
    """``double`` as a bool, or a fused group's per-member values as a ``(K, 1)`` mask over ``(K, B)`` samples
    (the learner then computes both next actions for every member and keeps each member's own)."""
    return torch.tensor([bool(v) for v in double]).unsqueeze(-1) if isinstance(double, PerMember) else bool(double)


def next_actions(
    double: bool | torch.Tensor, by_target: Callable[[], torch.Tensor], by_online: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """``a*``: the argmax over the last axis of the target network's values (``by_target()``), or with
    ``double`` of the online network's (``by_online()``); for a per-member mask (:func:`double_mask`) both,
    each member keeping its own."""
    if isinstance(double, torch.Tensor):
        target = by_target().argmax(dim=-1)
        return torch.where(double.to(target.device), by_online().argmax(dim=-1), target)
    return (by_online() if double else by_target()).argmax(dim=-1)


def _check_bool(name: str, value: object) -> None:
    for v in each_member(value)[0]:
        if not isinstance(v, bool):
            raise ValueError(f"{name} must be true or false, got {v!r}")


def _check_loss(loss: object) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")


def _check_number(name: str, value: object, ok: Callable[[float], bool], allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def checked_numbers(
    name: str, value: object, ok: Callable[[float], bool], allowed: str, dims: int = 1
) -> float | torch.Tensor:
    """A checked number, or for a :class:`PerMember` each member's, as a ``(K, 1, …)`` tensor (``dims`` ones)
    that broadcasts over the members' ``(K, B, …)`` values."""
    if isinstance(value, PerMember):
        values = [_check_number(name, v, ok, allowed) for v in value]
        return torch.tensor(values).view(len(values), *(1,) * dims)
    return _check_number(name, value, ok, allowed)


def dqn(n_actions: int, double: bool = False, loss: str = "mse") -> DQNLearner:
    """DQN (Mnih et al. 2015), or Double DQN (van Hasselt et al. 2016) with ``double = true``.

    :param double: pick the next action with the online net, value it with the target net.
    :param loss: ``"mse"`` (the tutorial's) or ``"huber"`` (smooth L1, δ = 1: Mnih et al.'s error clipping).
    """
    _check_bool("double", double)
    _check_loss(loss)
    return DQNLearner(double, loss)


dqn.lockstep = True  # shape-generic: K stacked members learn in one call
dqn.memberwise = ("double",)  # both targets per member, each keeps its own


# --------------------------------------------------------------------------- munchausen


class MunchausenLearner(DQNLearner):
    """Munchausen-DQN: DQN's regression on :func:`~dqnbench.agent.losses.munchausen_targets`.

    The target network is read twice: at the observations (the log-policy of the
    action taken, the Munchausen bonus) and at the next observations (the soft
    value). Priorities are the TD errors, as for ``dqn``.
    """

    def __init__(
        self, alpha: float | torch.Tensor, tau: float | torch.Tensor, l0: float | torch.Tensor, loss: str
    ) -> None:
        super().__init__(False, loss)
        self.alpha, self.tau, self.l0 = alpha, tau, l0  # per member: (K, 1) tensors, τ (K, 1, 1)

    def targets(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        q_target = target(batch.obs)
        alpha, tau, l0 = (v.to(q_target) if isinstance(v, torch.Tensor) else v for v in (self.alpha, self.tau, self.l0))
        return munchausen_targets(
            batch.rewards,
            batch.discounts,
            batch.terminated,
            batch.actions,
            q_target,
            target(batch.next_obs),
            alpha,
            tau,
            l0,
        )


def munchausen(
    n_actions: int, alpha: float = 0.9, tau: float = 0.03, l0: float = -1.0, loss: str = "huber"
) -> MunchausenLearner:
    """Munchausen-DQN (Vieillard, Pietquin & Geist 2020): DQN with a scaled log-policy bonus and a soft target.

    Defaults are the paper's (its Atari M-DQN, also the reference code's
    ``clip_value_min = -1``): α = 0.9, τ = 0.03, l0 = −1, and the Huber loss of
    Dopamine's DQN on which it builds (the paper pairs it with Adam, lr 5e-5, eps 3.125e-4).

    :param alpha: α ∈ [0, 1], scale of the log-policy bonus (0: soft DQN).
    :param tau: τ > 0, entropy temperature of the policy softmax(q/τ).
    :param l0: l0 < 0, lower clip of the scaled log-policy τ log π(a|s).
    :param loss: ``"huber"`` (smooth L1, δ = 1, the paper's) or ``"mse"``.
    """
    alpha = checked_numbers("alpha", alpha, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
    tau = checked_numbers("tau", tau, lambda v: v > 0.0, "a number > 0", dims=2)  # over (K, B, n_actions)
    l0 = checked_numbers("l0", l0, lambda v: v < 0.0, "a number < 0")
    _check_loss(loss)
    return MunchausenLearner(alpha, tau, l0, loss)


munchausen.lockstep = True
munchausen.memberwise = ("alpha", "tau", "l0")  # numbers in the target: (K, 1) tensors in a fused group


@hookimpl
def dqnbench_learners() -> dict:
    return {"dqn": dqn, "munchausen": munchausen}
