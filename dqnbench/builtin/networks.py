"""Built-in Q-networks: ``mlp``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.agent.losses import dqn_targets, td_loss_and_grad


class MLPBody(nn.Sequential):
    """Linear + ReLU layers; called as one module (so hooks on ``body`` see its output).

    ``forward`` applies the layers' functions directly instead of calling each
    submodule: same parameters and ``state_dict`` keys as ``nn.Sequential``,
    without the per-module call overhead that dominates tiny networks.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        # The Linear layers, listed once: slicing a Sequential builds a new module on every call, which
        # costs more than the math. Modules, not their parameters, so functional_call can swap them.
        self.linears = tuple(m for m in layers if isinstance(m, nn.Linear))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.linears:
            x = F.relu(F.linear(x, layer.weight, layer.bias))
        return x


class MLP(nn.Module):
    """A multilayer perceptron with ReLU: ``obs → hidden… → Q-values``.

    ``body`` ends in the penultimate activation (what embedding plots hook) and
    ``out`` is the linear Q-value head.
    """

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        widths = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.body = MLPBody(*layers)
        self.out = nn.Linear(widths[-1], n_actions)
        if init_std is not None:  # the tutorial's weight.data.normal_(0, 0.1)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, 0.0, init_std)

        self.linears = (*self.body.linears, self.out)
        #: the ``state_dict`` prefixes of ``linears``: the stacked parameters' names in lock-step
        self.linear_names = (*(f"body.{i}" for i in range(0, len(self.body), 2)), "out")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.forward is not MLP.forward:  # the hand-derived gradients are MLP.forward's, not the subclass's
            cls.fused_learn_step = None  # type: ignore[assignment]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return F.linear(self.body(obs), self.out.weight, self.out.bias)

    def fused_learn_step(
        self, target_net: nn.Module, optimizer: Any, agent: Any, batch: Batch
    ) -> tuple[float, torch.Tensor]:
        """``dqnbench.agent.loop.learn_step`` for this MLP, with gradients derived by hand.

        Same targets, loss and Adam update as the autograd path (a test checks
        it), but no autograd graph: for the tutorial's 4-10-2 net, building and
        walking the graph costs more than the arithmetic, so this halves the
        learn step. Backprop of ``q = W_L h_L + b``, ``h_{l+1} = relu(W_l h_l + b_l)``:
        ``dW_l = δ_lᵀ h_l``, ``db_l = Σ δ_l``, ``δ_{l−1} = (δ_l W_l) ⊙ [h_l > 0]``.
        """
        layers = [(layer.weight, layer.bias) for layer in self.linears]
        with torch.no_grad():
            activations = [batch.obs]
            for weight, bias in layers[:-1]:
                activations.append(torch.addmm(bias, activations[-1], weight.t()).clamp_min_(0.0))
            q_values = torch.addmm(layers[-1][1], activations[-1], layers[-1][0].t())
            actions = batch.actions.unsqueeze(1)
            q_taken = q_values.gather(1, actions).squeeze(1)
            next_online = self(batch.next_obs) if agent.double else None
            next_target = (
                _forward(target_net, batch.next_obs) if isinstance(target_net, MLP) else target_net(batch.next_obs)
            )
            targets = dqn_targets(batch.rewards, batch.discounts, batch.terminated, next_target, next_online)
            loss, slope = td_loss_and_grad(q_taken, targets, batch.weights, agent.loss)
            delta = torch.zeros_like(q_values).scatter_(1, actions, slope.unsqueeze(1))
            for i in range(len(layers) - 1, -1, -1):
                weight, bias = layers[i]
                if weight.grad is None or bias.grad is None:
                    weight.grad, bias.grad = torch.empty_like(weight), torch.empty_like(bias)
                torch.mm(delta.t(), activations[i], out=weight.grad)
                torch.sum(delta, 0, out=bias.grad)
                if i > 0:  # ReLU's backward as one kernel: δ ⊙ [h > 0]
                    delta = _relu_backward(torch.mm(delta, weight), activations[i], 0.0)
        if agent.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.parameters(), agent.max_grad_norm)
        optimizer.step()
        return loss.item(), (targets - q_taken)


_relu_backward = torch.ops.aten.threshold_backward


def _forward(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` without module calls or hooks, ReLU in place (the learn step's target net)."""
    *hidden, out = net.linears
    for layer in hidden:
        x = torch.addmm(layer.bias, x, layer.weight.t()).clamp_min_(0.0)
    return torch.addmm(out.bias, x, out.weight.t())


def mlp(
    obs_dim: int,
    n_actions: int,
    hidden: Sequence[int] = (64, 64),
    init_std: float | None = None,
) -> MLP:
    """MLP Q-network.

    :param hidden: widths of the hidden layers, e.g. ``[64, 64]``; ``[]`` is linear.
    :param init_std: if set, weights start as N(0, init_std) (the tutorial's
        ``hidden = [10], init_std = 0.1``); otherwise PyTorch's default init.
    """
    if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {list(hidden)!r}")
    return MLP(obs_dim, n_actions, tuple(hidden), init_std)


def mlp_lockstep(module: MLP, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """K stacked MLPs on ``x (K, B, obs_dim)`` with batched matmuls (lock-step training)."""
    from dqnbench.agent.lockstep import stacked_linear

    *hidden, out = module.linear_names
    for name in hidden:
        x = torch.relu(stacked_linear(x, params, name))
    return stacked_linear(x, params, out)


def mlp_lockstep_learn(
    module: MLP,
    q_net: Any,
    target_params: dict[str, torch.Tensor],
    optimizer: Any,
    batch: Batch,
    agent: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``dqnbench.agent.lockstep.learn_step_lockstep`` for K stacked MLPs, gradients derived by hand.

    :meth:`MLP.fused_learn_step` per member, with batched matmuls: member k's
    loss is the mean over its B samples, so its output gradient is
    ``w · dℓ/dq / B``; then ``dW = δᵀ h``, ``db = Σ δ``, ``δ ← (δ W) ⊙ [h > 0]``
    for all members at once. Same losses, TD errors and update as the autograd
    path (a test checks it), without building a graph.
    """
    from dqnbench.agent.lockstep import clip_member_grad_norms, stacked_linear

    params = q_net.params
    prefixes = module.linear_names
    members, size = batch.actions.shape
    with torch.no_grad():
        activations = [batch.obs]
        for prefix in prefixes[:-1]:
            activations.append(stacked_linear(activations[-1], params, prefix).clamp_min_(0.0))
        q_values = stacked_linear(activations[-1], params, prefixes[-1])
        actions = batch.actions.unsqueeze(2)
        q_taken = q_values.gather(2, actions).squeeze(2)
        next_online = mlp_lockstep(module, params, batch.next_obs) if agent.double else None
        targets = dqn_targets(
            batch.rewards.reshape(-1),
            batch.discounts.reshape(-1),
            batch.terminated.reshape(-1),
            mlp_lockstep(module, target_params, batch.next_obs).reshape(members * size, -1),
            None if next_online is None else next_online.reshape(members * size, -1),
        ).view(members, size)
        member_losses, slope = td_loss_and_grad(q_taken, targets, batch.weights, agent.loss)
        delta = torch.zeros_like(q_values).scatter_(2, actions, slope.unsqueeze(2))
        for i in range(len(prefixes) - 1, -1, -1):
            weight, bias = params[f"{prefixes[i]}.weight"], params[f"{prefixes[i]}.bias"]
            if weight.grad is None or bias.grad is None:
                weight.grad, bias.grad = torch.empty_like(weight), torch.empty_like(bias)
            torch.bmm(delta.transpose(1, 2), activations[i], out=weight.grad)
            torch.sum(delta, 1, out=bias.grad)
            if i > 0:
                delta = _relu_backward(torch.bmm(delta, weight), activations[i], 0.0)
    if agent.max_grad_norm > 0:
        clip_member_grad_norms(q_net.parameters(), agent.max_grad_norm)
    optimizer.step()
    return member_losses, targets - q_taken


mlp.lockstep = mlp_lockstep
mlp_lockstep.learn = mlp_lockstep_learn  # type: ignore[attr-defined]


@hookimpl
def dqnbench_networks() -> dict:
    return {"mlp": mlp}
