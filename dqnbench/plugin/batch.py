"""The one data type that crosses the replay → learner boundary.

A replay buffer hands the learner a :class:`Batch`; the learner needs to know
nothing else about how the buffer stored, prioritised or accumulated its
transitions. n-step buffers put γⁿ in ``discounts``; prioritised buffers put
importance-sampling weights in ``weights``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """A sampled minibatch of transitions, every field a torch tensor of length B.

    For K lock-step members every field has a leading member dimension: ``(K, B, …)``.

    :ivar obs: ``(B, *obs.shape)`` observations the actions were taken in, in their own dtype
        (float32 vectors for classic control, uint8 frames, MinAtar's bools).
    :ivar actions: int64 ``(B,)`` actions taken.
    :ivar rewards: float32 ``(B,)`` rewards (for n-step replay: the discounted
        sum of the k ≤ n rewards accumulated).
    :ivar next_obs: observations to bootstrap from, shaped and typed like ``obs``.
    :ivar terminated: bool or float32 ``(B,)``; true where ``next_obs`` is terminal
        (true termination only: a time-limit truncation is *not* terminated).
    :ivar weights: float32 ``(B,)`` importance-sampling weights multiplying each
        sample's loss (ones for uniform replay).
    :ivar indices: int64 ``(B,)`` buffer positions, given back to
        ``update_priorities``.
    :ivar discounts: float32 ``(B,)`` factor multiplying the bootstrap term
        (γ for one-step replay, γᵏ for k accumulated steps).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    weights: torch.Tensor
    indices: torch.Tensor
    discounts: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """Return the batch with every tensor moved to ``device``."""
        return Batch(*(t.to(device, non_blocking=True) for t in self))
