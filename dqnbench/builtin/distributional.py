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
from dqnbench.builtin.learners import Forward, _check_bool, _check_number, checked_numbers, double_mask, next_actions
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.members import PerMember, each_member


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

    def __init__(
        self, n_actions: int, atoms: int, v_min: float | PerMember, v_max: float | PerMember, double: bool | PerMember
    ) -> None:
        self.n_actions, self.outputs, self.double = n_actions, atoms, double_mask(double)
        self.v_min, self.v_max = v_min, v_max
        self.support = _Cached(_support(v_min, v_max, atoms))  # (N,), or a fused group's (K, 1, N): one per member

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """``Σ_j p_j z_j`` ``(…, n_actions)`` of probabilities ``(…, n_actions, atoms)``; member k's rows of a fused
        group's ``(K, …)`` on member k's atoms."""
        support = self.support.on(probs.device)
        if support.dim() == 1:
            return probs @ support
        members, atoms = support.shape[0], support.shape[-1]
        return (probs @ support.view(members, *(1,) * (probs.dim() - 3), atoms, 1)).squeeze(-1)

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected returns ``Σ_j softmax(logits)_j z_j`` ``(…, n_actions)`` of logits ``(…, n_actions, atoms)``."""
        return self.expected(torch.softmax(outputs, dim=-1))

    def target_distribution(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        """The projected target distribution ``(…, B, atoms)`` of the greedy next action (no gradient)."""
        probs = torch.softmax(target(batch.next_obs), dim=-1)  # (…, B, A, N)
        best = next_actions(self.double, lambda: self.expected(probs), lambda: self.q_values(online(batch.next_obs)))
        next_probs = _taken(probs, best)
        support = self.support.on(probs.device)
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

    In a fused group ``v_min``, ``v_max`` and ``double`` arrive as :class:`PerMember` values (the grid
    checks them against the plain types annotated here, as it does every value).
    """
    if isinstance(atoms, bool) or not isinstance(atoms, int) or atoms < 2:
        raise ValueError(f"atoms must be an integer >= 2, got {atoms!r}")
    lows, highs = each_member(v_min, v_max)
    for low, high in zip(lows, highs):
        low = _check_number("v_min", low, lambda v: True, "a finite number")
        high = _check_number("v_max", high, lambda v: True, "a finite number")
        if not low < high:
            raise ValueError(f"v_min must be below v_max, got v_min = {low} and v_max = {high}")
    _check_bool("double", double)
    return C51Learner(n_actions, atoms, v_min, v_max, double)


def _support(v_min: float | PerMember, v_max: float | PerMember, atoms: int) -> torch.Tensor:
    """The atoms ``(N,)`` from ``v_min`` to ``v_max``; for member-wise values one per member ``(K, 1, N)`` (over
    its ``(K, B, N)`` samples), each exactly the atoms that member has alone."""
    if not isinstance(v_min, PerMember) and not isinstance(v_max, PerMember):
        return torch.linspace(float(v_min), float(v_max), atoms)
    rows = [torch.linspace(float(low), float(high), atoms) for low, high in zip(*each_member(v_min, v_max))]
    return torch.stack(rows).unsqueeze(1)


c51.lockstep = True
c51.memberwise = ("v_min", "v_max", "double")  # atoms per member (a (K, 1, N) support); both next actions


class QRLearner(LearnerBase):
    """QR-DQN: ``quantiles`` quantile estimates per action, regressed with the quantile Huber loss.

    Priorities are the per-sample loss (what the learner minimises, as C51's
    cross-entropy), not the TD error of the mean.
    """

    loss_on_outputs = True

    def __init__(self, n_actions: int, quantiles: int, kappa: float | torch.Tensor, double: bool | PerMember) -> None:
        self.n_actions, self.outputs, self.double = n_actions, quantiles, double_mask(double)
        self.kappa = kappa  # a fused group's κ per member: a (K, 1) tensor over its (K, B) samples
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
        kappa = self.kappa.to(quantiles.device) if isinstance(self.kappa, torch.Tensor) else self.kappa
        losses = quantile_huber_loss(quantiles, targets, self.taus.on(quantiles.device), kappa)
        return LearnerLoss(losses, losses.detach())


def qr_dqn(n_actions: int, quantiles: int = 200, kappa: float = 1.0, double: bool = False) -> QRLearner:
    """QR-DQN (Dabney et al. 2018): ``quantiles`` quantiles of the return per action, quantile Huber loss.

    Defaults are the paper's: 200 quantiles, κ = 1.

    :param quantiles: number of quantiles N ≥ 1 (the network gives N outputs per action).
    :param kappa: κ > 0 of the quantile Huber loss (quadratic within ±κ of each target, linear beyond).
    :param double: choose the next action with the online network's mean quantiles (Double DQN's rule).

    In a fused group ``kappa`` and ``double`` arrive as :class:`PerMember` values.
    """
    if isinstance(quantiles, bool) or not isinstance(quantiles, int) or quantiles < 1:
        raise ValueError(f"quantiles must be an integer >= 1, got {quantiles!r}")
    kappa = checked_numbers("kappa", kappa, lambda v: v > 0.0, "a number > 0")
    _check_bool("double", double)
    return QRLearner(n_actions, quantiles, kappa, double)


qr_dqn.lockstep = True
qr_dqn.memberwise = ("kappa", "double")  # κ per member (a (K, 1) tensor); both next actions per member


@hookimpl
def dqnbench_learners() -> dict:
    return {"c51": c51, "qr_dqn": qr_dqn}
