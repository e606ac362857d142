"""The default gradient of a learner's loss, and a base class for learners.

A learner (``dqnbench_learners``) states its rule as a per-sample ``loss``; the
loop turns that into gradients with :func:`autograd_backward` unless the
learner brings its own ``backward`` (a speed path that stays inside the
learner, like the built-in ``dqn``'s hand-derived MLP gradients). The same
code serves a single run (batch fields ``(B,)``) and K lock-step members
(``(K, B)``): each member's loss is the mean over its own B samples, and since
members' parameters are disjoint, the gradient of their sum is each member's
own gradient.
"""

from __future__ import annotations

import torch

from dqnbench.plugin.batch import Batch
from dqnbench.plugin.contracts import LearnerLoss, Networks


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
    if losses.shape != batch.weights.shape:
        raise ValueError(
            f"learner loss returned shape {tuple(losses.shape)}, expected per-sample {tuple(batch.weights.shape)}"
        )
    per_run = (batch.weights * losses).mean(dim=-1)
    per_run.sum().backward()
    return LearnerLoss(per_run.detach(), priorities.detach())


class LearnerBase:
    """Defaults for a learner: one output per action read as Q-values, autograd for the gradient.

    Subclasses implement :meth:`loss`; a distributional learner sets ``outputs``
    and overrides :meth:`q_values`.
    """

    #: outputs per action the network must give
    outputs: int = 1

    def q_values(self, outputs: torch.Tensor) -> torch.Tensor:
        """The network's outputs are the Q-values ``(…, n_actions)``."""
        return outputs

    def loss(self, nets: Networks, batch: Batch) -> LearnerLoss:
        raise NotImplementedError

    def backward(self, nets: Networks, batch: Batch) -> LearnerLoss:
        return autograd_backward(self, nets, batch)
