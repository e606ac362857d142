"""Built-in distributional learners ``c51`` and ``qr_dqn``: a distribution of returns per action.

- ``c51``: Bellemare, Dabney & Munos (2017), ICML. N probabilities on fixed atoms from
  ``v_min`` to ``v_max``; the target is projected back onto the atoms
  (:func:`~dqnbench.agent.distributional.categorical_projection`), the loss is the cross-entropy.
- ``qr_dqn``: Dabney, Rowland, Bellemare & Munos (2018), AAAI. N quantiles at levels
  ``(2i + 1)/2N``, regressed with the quantile Huber loss
  (:func:`~dqnbench.agent.distributional.quantile_huber_loss`).

Both ask the network for N outputs per action (``(…, B, A, N)``) and read expected
Q-values from them. ``double = true`` picks the next action by the online network's expected
Q-values (as Rainbow, Hessel et al. 2018). Shape-generic (``(B,)`` one run, ``(K, B)``
members); the loss reads only the networks' outputs (``loss_on_outputs``: a network's manual
path serves it, :mod:`dqnbench.agent.learning`).
"""

from __future__ import annotations

import torch

from dqnbench.agent.distributional import (
    bootstrap_scale,
    categorical_projection,
    quantile_huber_loss,
    quantile_midpoints,
)
from dqnbench.agent.learning import LearnerBase
from dqnbench.builtin.learners import Forward, _check_bool, _check_number, double_mask, next_actions
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks
from dqnbench.plugin.hookspecs import hookimpl


def _taken(outputs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """The taken actions' rows ``(…, B, N)`` of ``outputs (…, B, A, N)``."""
    index = actions[..., None, None].expand(*actions.shape, 1, outputs.shape[-1])
    return outputs.gather(-2, index).squeeze(-2)


class _Cached:
    """A constant tensor (the atoms, the quantile levels) made once and kept per device."""

    def __init__(self, value: torch.Tensor) -> None:
        self.value, self.device = value, value.device

    def on(self, device: torch.device) -> torch.Tensor:
        if device != self.device:
            self.value, self.device = self.value.to(device), device
        return self.value


class C51Learner(LearnerBase):
    """C51: categorical distributions on ``atoms`` evenly spaced atoms, cross-entropy to the projected target.

    Priorities are the per-sample cross-entropy, as Rainbow prioritises by the
    KL loss (Hessel et al. 2018; the two differ by the target's entropy, which
    the network does not change).
    """

    loss_on_outputs = True

    def __init__(self, n_actions: int, atoms: int, v_min: float, v_max: float, double: bool) -> None:
        self.n_actions, self.outputs, self.double = n_actions, atoms, double_mask(double)
        self.v_min, self.v_max = v_min, v_max
        self.support = _Cached(torch.linspace(v_min, v_max, atoms))

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected returns ``Σ_j softmax(logits)_j z_j`` ``(…, n_actions)`` of logits ``(…, n_actions, atoms)``."""
        return torch.softmax(outputs, dim=-1) @ self.support.on(outputs.device)

    def target_distribution(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        """The projected target distribution ``(…, B, atoms)`` of the greedy next action (no gradient)."""
        probs = torch.softmax(target(batch.next_obs), dim=-1)  # (…, B, A, N)
        support = self.support.on(probs.device)
        best = next_actions(
            self.double, lambda: probs @ support, lambda: torch.softmax(online(batch.next_obs), dim=-1) @ support
        )
        next_probs = _taken(probs, best)
        return categorical_projection(support, next_probs, batch.rewards, batch.discounts, batch.terminated)

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        logits = _taken(nets.online(batch.obs), batch.actions)
        with torch.no_grad():
            target = self.target_distribution(batch, nets.target, nets.online)
        losses = -(target * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        return LearnerLoss(losses, losses.detach())


def c51(n_actions: int, atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0, double: bool = False) -> C51Learner:
    """C51 (Bellemare et al. 2017): a categorical return distribution on ``atoms`` atoms in [v_min, v_max].

    Defaults are the paper's Atari values (51 atoms in [−10, 10], for clipped
    rewards); choose [v_min, v_max] to cover the returns of the environment
    (CleanRL's CartPole C51: 101 atoms in [−100, 100]).

    :param atoms: number of atoms N ≥ 2 (the network gives N outputs per action).
    :param v_min: the lowest atom.
    :param v_max: the highest atom, > v_min.
    :param double: choose the next action with the online network (Double DQN's
        rule, as in Rainbow); its distribution still comes from the target network.
    """
    if isinstance(atoms, bool) or not isinstance(atoms, int) or atoms < 2:
        raise ValueError(f"atoms must be an integer >= 2, got {atoms!r}")
    v_min = _check_number("v_min", v_min, lambda v: True, "a finite number")
    v_max = _check_number("v_max", v_max, lambda v: True, "a finite number")
    if not v_min < v_max:
        raise ValueError(f"v_min must be below v_max, got v_min = {v_min} and v_max = {v_max}")
    _check_bool("double", double)
    return C51Learner(n_actions, atoms, v_min, v_max, double)


c51.lockstep = True
c51.memberwise = ("double",)  # both next actions per member, each keeps its own


class QRLearner(LearnerBase):
    """QR-DQN: ``quantiles`` quantile estimates per action, regressed with the quantile Huber loss.

    Priorities are the per-sample loss (what the learner minimises, as C51's
    cross-entropy), not the TD error of the mean.
    """

    loss_on_outputs = True

    def __init__(self, n_actions: int, quantiles: int, kappa: float, double: bool) -> None:
        self.n_actions, self.outputs, self.kappa, self.double = n_actions, quantiles, kappa, double_mask(double)
        self.taus = _Cached(quantile_midpoints(quantiles))

    def split(self, outputs: torch.Tensor) -> torch.Tensor:
        """The network's outputs as ``(…, n_actions, N)`` (with one quantile the loop asks for plain Q-values)."""
        return outputs.unsqueeze(-1) if self.outputs == 1 else outputs

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected returns: the mean of the quantiles ``(…, n_actions)``."""
        return outputs if self.outputs == 1 else outputs.mean(dim=-1)

    def target_quantiles(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        """``r + γᵏ (1 − terminated) θ_target(s', a*)`` per quantile ``(…, B, N)`` (no gradient)."""
        quantiles = self.split(target(batch.next_obs))  # (…, B, A, N)
        best = next_actions(
            self.double, lambda: quantiles.mean(dim=-1), lambda: self.split(online(batch.next_obs)).mean(dim=-1)
        )
        next_quantiles = _taken(quantiles, best)
        scale = bootstrap_scale(batch.discounts, batch.terminated).unsqueeze(-1)
        if batch.terminated.dtype == torch.bool:  # a terminal next state bootstraps nothing (even a non-finite one)
            next_quantiles = next_quantiles.masked_fill(batch.terminated.unsqueeze(-1), 0.0)
        return torch.addcmul(batch.rewards.unsqueeze(-1), scale, next_quantiles)

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        quantiles = _taken(self.split(nets.online(batch.obs)), batch.actions)
        with torch.no_grad():
            targets = self.target_quantiles(batch, nets.target, nets.online)
        losses = quantile_huber_loss(quantiles, targets, self.taus.on(quantiles.device), self.kappa)
        return LearnerLoss(losses, losses.detach())


def qr_dqn(n_actions: int, quantiles: int = 200, kappa: float = 1.0, double: bool = False) -> QRLearner:
    """QR-DQN (Dabney et al. 2018): ``quantiles`` quantiles of the return per action, quantile Huber loss.

    Defaults are the paper's: 200 quantiles, κ = 1.

    :param quantiles: number of quantiles N ≥ 1 (the network gives N outputs per action).
    :param kappa: κ > 0 of the quantile Huber loss (quadratic within ±κ of each target, linear beyond).
    :param double: choose the next action with the online network's mean quantiles (Double DQN's rule).
    """
    if isinstance(quantiles, bool) or not isinstance(quantiles, int) or quantiles < 1:
        raise ValueError(f"quantiles must be an integer >= 1, got {quantiles!r}")
    kappa = _check_number("kappa", kappa, lambda v: v > 0.0, "a number > 0")
    _check_bool("double", double)
    return QRLearner(n_actions, quantiles, kappa, double)


qr_dqn.lockstep = True
qr_dqn.memberwise = ("double",)  # both next actions per member, each keeps its own


@hookimpl
def dqnbench_learners() -> dict:
    return {"c51": c51, "qr_dqn": qr_dqn}
