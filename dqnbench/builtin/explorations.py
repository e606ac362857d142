"""Built-in ε-greedy explorations: ``constant`` and ``linear``.

Random draws come from torch's global RNG, which the runner seeds per run.
"""

from __future__ import annotations

import torch

from dqnbench.plugin.hookspecs import hookimpl


def epsilon_greedy(q_values: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Greedy actions of ``q_values (B, n)``, each replaced by a uniform one with prob. ε."""
    greedy = q_values.argmax(dim=1)
    if epsilon <= 0.0:
        return greedy
    batch, n_actions = q_values.shape
    if batch == 1:  # the acting hot path: one draw decides, a second only when exploring
        if float(torch.rand(())) < epsilon:
            return torch.randint(n_actions, (1,), device=q_values.device)
        return greedy
    explore = torch.rand(batch, device=q_values.device) < epsilon
    random_actions = torch.randint(n_actions, (batch,), device=q_values.device)
    return torch.where(explore, random_actions, greedy)


def _check_probability(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


class ConstantEpsilon:
    """ε-greedy with a fixed ε."""

    def __init__(self, epsilon: float) -> None:
        self.epsilon = _check_probability("epsilon", epsilon)

    def value(self, step: int) -> float:
        return self.epsilon

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return epsilon_greedy(q_values, self.epsilon)


class LinearEpsilon:
    """ε stays at ``start`` for ``delay`` steps, decays linearly to ``end`` over ``decay_steps``, then stays."""

    def __init__(
        self,
        total_steps: int,
        start: float,
        end: float,
        fraction: float,
        delay: int | None = None,
        steps: int | None = None,
    ) -> None:
        self.start = _check_probability("start", start)
        self.end = _check_probability("end", end)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        delay = 0 if delay is None else delay
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be an integer >= 0 (env steps at ε = start), got {delay!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"steps must be a positive integer (env steps of the decay), got {steps!r}")
        self.delay = delay
        self.decay_steps = float(steps) if steps is not None else max(1.0, fraction * total_steps)

    def value(self, step: int) -> float:
        progress = min(1.0, max(0, step - self.delay) / self.decay_steps)
        return self.start + (self.end - self.start) * progress

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return epsilon_greedy(q_values, self.value(step))


def constant(n_actions: int, total_steps: int, epsilon: float = 0.1) -> ConstantEpsilon:
    """ε-greedy with fixed ε: the tutorial's explorer (``epsilon = 0.1`` random actions)."""
    return ConstantEpsilon(epsilon)


def linear(
    n_actions: int,
    total_steps: int,
    start: float = 1.0,
    end: float = 0.05,
    fraction: float = 0.1,
    delay: int | None = None,
    steps: int | None = None,
) -> LinearEpsilon:
    """ε-greedy, ε from ``start`` to ``end`` linearly over ``fraction × total_steps`` steps.

    :param delay: env steps at ε = ``start`` before the decay begins (none by default; MinAtar's
        DQN acts randomly for its 5,000 replay-start steps, then decays ε over
        the next 100k frames: ``delay = 5000, steps = 100_000``).
    :param steps: env steps of the decay, instead of ``fraction × total_steps``
        (a schedule stated in frames, independent of the run's length).
    """
    return LinearEpsilon(total_steps, start, end, fraction, delay, steps)


# Both treat each row of q_values on its own and keep no per-row state: one explorer serves K lock-step members.
constant.lockstep = linear.lockstep = True


@hookimpl
def dqnbench_explorations() -> dict:
    return {"constant": constant, "linear": linear}
