"""Built-in learner ``dqn``: the TD rule of Mnih et al. (2015), optionally Double DQN.

``loss`` states the rule (rlax-style pure functions in
:mod:`dqnbench.agent.losses`): ``Q(s, a)`` of the online network against
``r + γᵏ (1 − terminated) Q_target(s', a*)``. Its ``backward`` keeps the one
speed path of the rule: for the built-in :class:`~dqnbench.builtin.networks.MLP`
the gradients are derived by hand instead of by autograd. For the tutorial's
4-10-2 net, building and walking the autograd graph costs more than the
arithmetic, so this halves the learn step; tests check it equals autograd.
Both paths are shape-generic: ``(B,)`` for one run, ``(K, B)`` for K stacked
lock-step members.
"""

from __future__ import annotations

import torch

from dqnbench.agent.learning import LearnerBase
from dqnbench.agent.losses import LOSSES, dqn_targets, taken, td_loss_and_grad, td_losses
from dqnbench.builtin.networks import MLP, MLPBody
from dqnbench.nn import linear
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks
from dqnbench.plugin.hookspecs import hookimpl

_relu_backward = torch.ops.aten.threshold_backward


class DQNLearner(LearnerBase):
    """DQN's TD loss on Q-values (one output per action); ``double`` picks ``a*`` with the online net."""

    def __init__(self, double: bool = False, loss: str = "mse") -> None:
        self.double = bool(double)
        self.kind = loss
        self._checked: tuple[Networks, bool] | None = None  # (networks, hand-derivable?) decided once per run

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        q_taken = taken(nets.online(batch.obs), batch.actions)
        with torch.no_grad():
            next_q_target = nets.target(batch.next_obs)
            next_q_online = nets.online(batch.next_obs) if self.double else None
            targets = dqn_targets(batch.rewards, batch.discounts, batch.terminated, next_q_target, next_q_online)
        return LearnerLoss(td_losses(q_taken, targets, self.kind), (targets - q_taken).detach())

    def backward(self, nets: Networks, batch: Batch) -> LearnerLoss:
        if self._checked is None or self._checked[0] is not nets:
            self._checked = (nets, hand_derivable(nets.online) and hand_derivable(nets.target))
        if self._checked[1]:
            return self.mlp_backward(nets.online, nets.target, batch)
        return super().backward(nets, batch)

    def mlp_backward(self, online: MLP, target: MLP, batch: Batch) -> LearnerLoss:
        """:meth:`loss`'s gradient for an MLP, derived by hand (same targets, loss and gradient as autograd).

        Backprop of ``q = W_L h_L + b``, ``h_{l+1} = relu(W_l h_l + b_l)``:
        ``dW_l = δ_lᵀ h_l``, ``db_l = Σ δ_l``, ``δ_{l−1} = (δ_l W_l) ⊙ [h_l > 0]``,
        with batched matmuls when the weights are K members' ``(K, out, in)``.
        """
        layers = [(layer.weight, layer.bias) for layer in online.linears]
        with torch.no_grad():
            activations = [batch.obs]
            for weight, bias in layers[:-1]:
                activations.append(linear(activations[-1], weight, bias).clamp_min_(0.0))
            q_values = linear(activations[-1], *layers[-1])
            actions = batch.actions.unsqueeze(-1)
            q_taken = q_values.gather(-1, actions).squeeze(-1)
            next_online = mlp_outputs(online, batch.next_obs) if self.double else None
            next_target = mlp_outputs(target, batch.next_obs)
            targets = dqn_targets(batch.rewards, batch.discounts, batch.terminated, next_target, next_online)
            losses, slope = td_loss_and_grad(q_taken, targets, batch.weights, self.kind)
            delta = torch.zeros_like(q_values).scatter_(-1, actions, slope.unsqueeze(-1))
            for i in range(len(layers) - 1, -1, -1):
                weight, bias = layers[i]
                if weight.grad is None or bias.grad is None:
                    weight.grad, bias.grad = torch.empty_like(weight), torch.empty_like(bias)
                torch.matmul(delta.transpose(-1, -2), activations[i], out=weight.grad)
                torch.sum(delta, -2, out=bias.grad)
                if i > 0:  # ReLU's backward as one kernel: δ ⊙ [h > 0]
                    delta = _relu_backward(torch.matmul(delta, weight), activations[i], 0.0)
        return LearnerLoss(losses, targets - q_taken)


def hand_derivable(net: torch.nn.Module) -> bool:
    """Is ``net`` exactly the built-in MLP's math (so its gradients can be derived by hand)?

    Not for subclasses with their own ``forward``, distributional heads or
    non-vector observations, which learn through autograd.
    """
    return (
        isinstance(net, MLP)
        and type(net).forward is MLP.forward
        and type(net.body).forward is MLPBody.forward
        and net.outputs == 1
        and net.obs_ndim == 1
    )


def mlp_outputs(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without module calls or hooks, ReLU in place (float32 vector observations)."""
    *hidden, out = net.linears
    for layer in hidden:
        x = linear(x, layer.weight, layer.bias).clamp_min_(0.0)
    return linear(x, out.weight, out.bias)


def dqn(n_actions: int, double: bool = False, loss: str = "mse") -> DQNLearner:
    """DQN (Mnih et al. 2015), or Double DQN (van Hasselt et al. 2016) with ``double = true``.

    :param double: pick the next action with the online net, value it with the target net.
    :param loss: ``"mse"`` (the tutorial's) or ``"huber"`` (smooth L1, δ = 1: Mnih et al.'s error clipping).
    """
    if not isinstance(double, bool):
        raise ValueError(f"double must be true or false, got {double!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
    return DQNLearner(double, loss)


dqn.lockstep = True  # shape-generic: K stacked members learn in one call


@hookimpl
def dqnbench_learners() -> dict:
    return {"dqn": dqn}
