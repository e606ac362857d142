"""Built-in learners ``dqn`` and ``munchausen``: TD rules on Q-values (one output per action).

- ``dqn``: Mnih et al. (2015), optionally Double DQN (van Hasselt et al. 2016).
- ``munchausen``: Munchausen-DQN (Vieillard, Pietquin & Geist 2020).

``loss`` states each rule (rlax-style pure functions in
:mod:`dqnbench.agent.losses`): ``Q(s, a)`` of the online network against its
target. Their ``backward`` keeps the one speed path of the rules: for the
built-in :class:`~dqnbench.builtin.networks.MLP` the gradients are derived by
hand instead of by autograd (:class:`HandDerivedLearner`, which the
distributional learners of :mod:`dqnbench.builtin.distributional` share). For
the tutorial's 4-10-2 net, building and walking the autograd graph costs more
than the arithmetic, so this halves the learn step; tests check it equals
autograd. Both paths are shape-generic: ``(B,)`` for one run, ``(K, B)`` for K
stacked lock-step members.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dqnbench.agent.learning import LearnerBase, autograd_backward
from dqnbench.agent.losses import LOSSES, dqn_targets, munchausen_targets, taken, td_loss_and_grad, td_losses
from dqnbench.builtin.networks import MLP, MLPBody
from dqnbench.nn import linear
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks
from dqnbench.plugin.hookspecs import hookimpl

_relu_backward = torch.ops.aten.threshold_backward

#: a network's outputs on observations, as a learner's targets read them: ``x → (…, B, n_actions[, N])``
Forward = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- the hand-derived MLP path


def hand_derivable(net: torch.nn.Module, outputs: int = 1) -> bool:
    """Is ``net`` exactly the built-in MLP's math with ``outputs`` per action (so its gradients can be derived by hand)?

    Not for subclasses with their own ``forward`` or non-vector observations,
    which learn through autograd.
    """
    return (
        isinstance(net, MLP)
        and type(net).forward is MLP.forward
        and type(net.body).forward is MLPBody.forward
        and net.outputs == outputs
        and net.obs_ndim == 1
    )


def mlp_params(net: MLP) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Each linear layer's ``(weight, bias)``, read once per network rather than through ``nn.Module``'s
    ``__getattr__`` at every step (a dozen lookups a step cost the tutorial's net ~2% of its speed).

    Checked against the first layer's weight on each call, so parameters a module was given anew are followed.
    """
    cached = net.__dict__.get("_dqnbench_params")
    if cached is None or cached[0][0] is not net.linears[0].weight:
        cached = tuple((layer.weight, layer.bias) for layer in net.linears)
        net.__dict__["_dqnbench_params"] = cached
    return cached


def mlp_outputs(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without module calls or hooks, ReLU in place (float32 vector observations), outputs split."""
    *hidden, (weight, bias) = mlp_params(net)
    for w, b in hidden:
        x = linear(x, w, b).clamp_min_(0.0)
    x = linear(x, weight, bias)
    return x if net.outputs == 1 else x.unflatten(-1, (net.n_actions, net.outputs))


def mlp_forward(net: MLP, obs: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The MLP's forward, keeping what its backward needs: ``(each linear layer's input, head outputs (…, B, A·N))``."""
    *hidden, (weight, bias) = mlp_params(net)
    activations = [obs]
    for w, b in hidden:
        activations.append(linear(activations[-1], w, b).clamp_min_(0.0))
    return activations, linear(activations[-1], weight, bias)


def mlp_backprop(net: MLP, activations: list[torch.Tensor], delta: torch.Tensor) -> None:
    """Set the MLP's ``.grad`` from ``delta``, the loss's gradient in the head outputs ``(…, B, A·N)``.

    Backprop of ``y = W_L h_L + b``, ``h_{l+1} = relu(W_l h_l + b_l)``:
    ``dW_l = δ_lᵀ h_l``, ``db_l = Σ δ_l``, ``δ_{l−1} = (δ_l W_l) ⊙ [h_l > 0]``,
    with batched matmuls when the weights are K members' ``(K, out, in)``.
    Gradients are written in place where tensors exist (optimizers hold them).
    """
    params = mlp_params(net)
    mm = torch.mm if delta.dim() == 2 else torch.bmm  # one network's (B, ·) or K members' (K, B, ·)
    for i in range(len(params) - 1, -1, -1):
        weight, bias = params[i]
        if weight.grad is None or bias.grad is None:
            weight.grad, bias.grad = torch.empty_like(weight), torch.empty_like(bias)
        mm(delta.mT, activations[i], out=weight.grad)
        torch.sum(delta, -2, out=bias.grad)
        if i > 0:  # ReLU's backward as one kernel: δ ⊙ [h > 0]
            delta = _relu_backward(mm(delta, weight), activations[i], 0.0)


class HandDerivedLearner(LearnerBase):
    """A learner whose gradient on the built-in MLP is derived by hand, by autograd on any other network.

    Subclasses implement :meth:`loss` (the rule, for autograd) and
    :meth:`mlp_backward` (the same rule's gradient for an :class:`MLP`, with
    :func:`mlp_forward` and :func:`mlp_backprop`); tests check that both agree.
    Which path a pair of networks takes is decided once per run.
    """

    _checked: tuple[Networks, bool] | None = None

    def backward(self, nets: Networks, batch: Batch) -> LearnerLoss:
        if self._checked is None or self._checked[0] is not nets:
            derivable = hand_derivable(nets.online, self.outputs) and hand_derivable(nets.target, self.outputs)
            self._checked = (nets, derivable)
        if self._checked[1]:
            with torch.no_grad():
                return self.mlp_backward(nets.online, nets.target, batch)
        return autograd_backward(self, nets, batch)

    def mlp_backward(self, online: MLP, target: MLP, batch: Batch) -> LearnerLoss:
        """:meth:`loss`'s gradient for MLPs, by hand: per-run weighted mean losses ``(…,)``, priorities ``(…, B)``."""
        raise NotImplementedError


# --------------------------------------------------------------------------- dqn


class DQNLearner(HandDerivedLearner):
    """DQN's TD loss on Q-values (one output per action); ``double`` picks ``a*`` with the online net."""

    def __init__(self, double: bool = False, loss: str = "mse") -> None:
        self.double = bool(double)
        self.kind = loss

    def targets(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        """The TD targets ``(…, B)`` from the target (and, for Double DQN, the online) network's outputs."""
        next_target = target(batch.next_obs)  # before the online net: noisy nets draw in the previous release's order
        next_online = online(batch.next_obs) if self.double else None
        return dqn_targets(batch.rewards, batch.discounts, batch.terminated, next_target, next_online)

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        q_taken = taken(nets.online(batch.obs), batch.actions)
        with torch.no_grad():
            targets = self.targets(batch, nets.target, nets.online)
        return LearnerLoss(td_losses(q_taken, targets, self.kind), (targets - q_taken).detach())

    def mlp_backward(self, online: MLP, target: MLP, batch: Batch) -> LearnerLoss:
        """:meth:`loss`'s gradient for an MLP, derived by hand (same targets, loss and gradient as autograd)."""
        activations, q_values = mlp_forward(online, batch.obs)
        actions = batch.actions.unsqueeze(-1)
        q_taken = q_values.gather(-1, actions).squeeze(-1)
        targets = self.targets(batch, lambda x: mlp_outputs(target, x), lambda x: mlp_outputs(online, x))
        losses, slope = td_loss_and_grad(q_taken, targets, batch.weights, self.kind)
        mlp_backprop(online, activations, torch.zeros_like(q_values).scatter_(-1, actions, slope.unsqueeze(-1)))
        return LearnerLoss(losses, targets - q_taken)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _check_loss(loss: object) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")


def _check_number(name: str, value: object, ok: Callable[[float], bool], allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def dqn(n_actions: int, double: bool = False, loss: str = "mse") -> DQNLearner:
    """DQN (Mnih et al. 2015), or Double DQN (van Hasselt et al. 2016) with ``double = true``.

    :param double: pick the next action with the online net, value it with the target net.
    :param loss: ``"mse"`` (the tutorial's) or ``"huber"`` (smooth L1, δ = 1: Mnih et al.'s error clipping).
    """
    _check_bool("double", double)
    _check_loss(loss)
    return DQNLearner(double, loss)


dqn.lockstep = True  # shape-generic: K stacked members learn in one call


# --------------------------------------------------------------------------- munchausen


class MunchausenLearner(DQNLearner):
    """Munchausen-DQN: DQN's regression on :func:`~dqnbench.agent.losses.munchausen_targets`.

    The target network is read twice: at the observations (the log-policy of the
    action taken, the Munchausen bonus) and at the next observations (the soft
    value). Priorities are the TD errors, as for ``dqn``.
    """

    def __init__(self, alpha: float, tau: float, l0: float, loss: str) -> None:
        super().__init__(False, loss)
        self.alpha, self.tau, self.l0 = alpha, tau, l0

    def targets(self, batch: Batch, target: Forward, online: Forward) -> torch.Tensor:
        return munchausen_targets(
            batch.rewards,
            batch.discounts,
            batch.terminated,
            batch.actions,
            target(batch.obs),
            target(batch.next_obs),
            self.alpha,
            self.tau,
            self.l0,
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
    alpha = _check_number("alpha", alpha, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
    tau = _check_number("tau", tau, lambda v: v > 0.0, "a number > 0")
    l0 = _check_number("l0", l0, lambda v: v < 0.0, "a number < 0")
    _check_loss(loss)
    return MunchausenLearner(alpha, tau, l0, loss)


munchausen.lockstep = True


@hookimpl
def dqnbench_learners() -> dict:
    return {"dqn": dqn, "munchausen": munchausen}
