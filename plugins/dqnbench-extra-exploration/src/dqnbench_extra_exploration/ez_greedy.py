"""εz-greedy: ε-greedy whose random actions are repeated for a heavy-tailed duration.

Dabney, Ostrovski & Barreto (2021), "Temporally-Extended ε-Greedy Exploration",
ICLR. Plain ε-greedy dithers: a random action is undone by the next greedy one,
so it rarely carries the agent anywhere new. εz-greedy keeps ε-greedy's
simplicity but, when it explores, commits to one random action for ``n`` steps,
``n`` drawn from a zeta (discrete power-law) distribution ``P(n) ∝ n^−μ``: most
excursions are short, a few are long enough to reach states one-step dithering
never would. Their algorithm, per environment:

    if no action is being repeated:
        with probability ε: draw n ~ zeta(μ), w ~ uniform actions; repeat w for n steps
        otherwise: act greedily
    while repeating: take w (the greedy action is ignored)

Here the zeta distribution is truncated at ``max_duration`` so that it can be
sampled exactly with ``torch.multinomial``; ``max_duration = 1`` is ordinary
ε-greedy. ε follows the same linear schedule as dqnbench's built-in ``linear``.

dqnbench's explorer contract gives ``select`` only Q-values and the step, not
episode boundaries, so an excursion may run on for a few steps into the next
episode. Every draw uses torch's global RNG, which dqnbench seeds per run.
"""

from __future__ import annotations

import math

import torch


def zeta_probabilities(mu: float, max_duration: int) -> torch.Tensor:
    """``P(n) ∝ n^−μ`` for ``n = 1..max_duration``, as a float64 tensor summing to 1."""
    n = torch.arange(1, max_duration + 1, dtype=torch.float64)
    weights = n.pow(-mu)
    return weights / weights.sum()


def linear_epsilon(step: int, start: float, end: float, decay_steps: float) -> float:
    """``start`` to ``end`` linearly over ``decay_steps`` env steps, then ``end``."""
    return start + (end - start) * min(1.0, step / decay_steps)


class EzGreedy:
    """The εz-greedy explorer; keeps one excursion (action, steps left) per batch row.

    dqnbench acts on one environment, so a batch is one row; a batch of another
    size (dqnbench's contract probe, a vectorised caller) starts afresh.
    """

    def __init__(self, total_steps: int, start: float, end: float, fraction: float, mu: float, max_duration: int):
        self.start, self.end = start, end
        self.decay_steps = max(1.0, fraction * total_steps)
        self.durations = zeta_probabilities(mu, max_duration).float()
        self.remaining: torch.Tensor | None = None  # (B,) int64 steps left in each row's excursion
        self.action: torch.Tensor | None = None  # (B,) int64 the action being repeated

    def value(self, step: int) -> float:
        """ε at env step ``step``: the probability of starting an excursion when none runs."""
        return linear_epsilon(step, self.start, self.end, self.decay_steps)

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        """``(B, n_actions)`` Q-values → ``(B,)`` int64 actions."""
        batch, n_actions = q_values.shape
        device = q_values.device
        if self.remaining is None or self.remaining.shape[0] != batch or self.remaining.device != device:
            self.remaining = torch.zeros(batch, dtype=torch.int64, device=device)
            self.action = torch.zeros(batch, dtype=torch.int64, device=device)
        starts = (self.remaining == 0) & (torch.rand(batch, device=device) < self.value(step))
        n_new = int(starts.sum())
        if n_new:
            durations = torch.multinomial(self.durations, n_new, replacement=True).to(device) + 1
            self.remaining[starts] = durations
            self.action[starts] = torch.randint(n_actions, (n_new,), device=device)
        repeating = self.remaining > 0
        actions = torch.where(repeating, self.action, q_values.argmax(dim=1))
        self.remaining = torch.where(repeating, self.remaining - 1, self.remaining)
        return actions


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def ez_greedy(
    n_actions: int,
    total_steps: int,
    start: float = 1.0,
    end: float = 0.05,
    fraction: float = 0.1,
    mu: float = 2.0,
    max_duration: int = 100,
) -> EzGreedy:
    """Temporally-extended ε-greedy (Dabney et al. 2021).

    :param start: ε at step 0.
    :param end: ε after the decay.
    :param fraction: share of ``total_steps`` over which ε goes linearly from ``start`` to ``end``.
    :param mu: exponent of the duration distribution ``P(n) ∝ n^−μ`` (2 in the paper);
        larger means shorter excursions.
    :param max_duration: longest excursion, in env steps (1 = plain ε-greedy).
    """
    start, end, fraction = _probability("start", start), _probability("end", end), _probability("fraction", fraction)
    if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0.0 <= mu < math.inf:
        raise ValueError(f"mu must be a finite number >= 0, got {mu!r}")
    if isinstance(max_duration, bool) or not isinstance(max_duration, int) or max_duration < 1:
        raise ValueError(f"max_duration must be a positive integer, got {max_duration!r}")
    return EzGreedy(total_steps, start, end, fraction, float(mu), max_duration)
