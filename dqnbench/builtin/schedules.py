"""Built-in explorations ``exponential``, ``boltzmann`` and ``greedy``.

- ``exponential``: ε-greedy whose ε decays exponentially towards a floor, the
  schedule of PyTorch's DQN tutorial (there with ``exp(−t/τ)``; here with a
  half-life, which is easier to reason about).
- ``boltzmann``: softmax action selection, ``P(a) ∝ exp(Q(s, a)/τ)`` (Sutton &
  Barto, "Reinforcement Learning: An Introduction", 1998, §2.3), the
  temperature τ annealed linearly like the ``linear`` ε schedule.
- ``greedy``: always the argmax; the choice for networks that explore by
  themselves, e.g. ``noisy`` (Fortunato et al. 2018 act greedily, ε = 0).

Random draws come from torch's global RNG, which the runner seeds per run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dqnbench.builtin.explorations import epsilon_greedy, epsilon_greedy_lazily
from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.validation import check_positive, check_probability


def exponential_decay(step: int, start: float, end: float, half_life: float) -> float:
    """``end + (start − end) · 2^(−step / half_life)``: the gap to ``end`` halves every half-life."""
    return end + (start - end) * 2.0 ** (-step / half_life)


def linear_decay(step: int, start: float, end: float, decay_steps: float) -> float:
    """``start`` to ``end`` linearly over ``decay_steps`` steps, then ``end``."""
    return start + (end - start) * min(1.0, step / decay_steps)


def boltzmann_sample(q_values: torch.Tensor, temperature: float) -> torch.Tensor:
    """One action per row of ``q_values (B, n)`` drawn from ``softmax(Q / τ)``.

    The row maximum is subtracted before dividing by τ, so a small τ or large
    Q-values cannot overflow ``exp``: the best action's logit is exactly 0.
    """
    logits = (q_values - q_values.max(dim=1, keepdim=True).values) / temperature
    probabilities = torch.softmax(logits.float(), dim=1)
    return torch.multinomial(probabilities, 1).squeeze(1)


class ExponentialEpsilon:
    """ε-greedy with ``ε(step) = end + (start − end) · 2^(−step / half_life)``."""

    def __init__(self, start: float, end: float, half_life: float, n_actions: int = 0) -> None:
        self.n_actions = n_actions
        self.start = check_probability("start", start)
        self.end = check_probability("end", end)
        self.half_life = check_positive("half_life", half_life)

    def value(self, step: int) -> float:
        return exponential_decay(step, self.start, self.end, self.half_life)

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return epsilon_greedy(q_values, self.value(step))

    def select_lazily(self, q_values: Callable[[], torch.Tensor], rows: int, step: int, device: torch.device):
        return epsilon_greedy_lazily(q_values, rows, self.n_actions, self.value(step), device)


class Boltzmann:
    """Softmax exploration, temperature from ``start`` to ``end`` linearly over ``fraction`` of training."""

    def __init__(self, total_steps: int, start: float, end: float, fraction: float) -> None:
        self.start = check_positive("start", start)
        self.end = check_positive("end", end)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        self.decay_steps = max(1.0, fraction * total_steps)

    def value(self, step: int) -> float:
        """The temperature τ at ``step``."""
        return linear_decay(step, self.start, self.end, self.decay_steps)

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return boltzmann_sample(q_values, self.value(step))


class Greedy:
    """No exploration: the action of highest Q-value (ties: the first)."""

    def value(self, step: int) -> float:
        """ε, always 0."""
        return 0.0

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return q_values.argmax(dim=1)


def exponential(
    n_actions: int, total_steps: int, start: float = 1.0, end: float = 0.05, half_life: float | None = None
) -> ExponentialEpsilon:
    """ε-greedy, ε decaying exponentially from ``start`` towards ``end``.

    :param half_life: env steps for the gap ``ε − end`` to halve; None means 5%
        of ``total_steps``, so halfway through training ``ε − end`` is down to
        2^−10 ≈ 0.1% of ``start − end``.
        A decay rate ``λ`` of ``exp(−λ t)`` is ``half_life = ln 2 / λ``.
    """
    if half_life is None:
        half_life = max(1.0, 0.05 * total_steps)
    return ExponentialEpsilon(start, end, half_life, n_actions)


def boltzmann(
    n_actions: int, total_steps: int, start: float = 1.0, end: float = 0.01, fraction: float = 0.1
) -> Boltzmann:
    """Softmax (Boltzmann) exploration over Q-values.

    :param start: initial temperature τ (> 0); large τ is near uniform.
    :param end: final temperature (> 0); small τ is near greedy.
    :param fraction: share of ``total_steps`` over which τ goes linearly from
        ``start`` to ``end``.

    τ is in the units of the Q-values, so a good range depends on the reward scale.
    """
    return Boltzmann(total_steps, start, end, fraction)


def greedy(n_actions: int, total_steps: int) -> Greedy:
    """Always the greedy action (for ``noisy`` networks, which explore by themselves)."""
    return Greedy()


# Row-wise and stateless: one explorer serves K lock-step members (see the dqnbench_explorations hookspec).
exponential.lockstep = boltzmann.lockstep = greedy.lockstep = True


@hookimpl
def dqnbench_explorations() -> dict:
    return {"exponential": exponential, "boltzmann": boltzmann, "greedy": greedy}
