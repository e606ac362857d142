"""Built-in ε-greedy explorations: ``constant`` and ``linear``.

Random draws come from torch's global RNG, which the runner seeds per run.
Their scalars are member-wise (``memberwise``, see :mod:`dqnbench.plugin.members`):
in a fused group each arrives as K values and ε is a ``(K,)`` array, while the
draws stay the same for any values (always ``rand(K)`` and ``randint(K)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from dqnbench.plugin.hookspecs import hookimpl
from dqnbench.plugin.members import PerMember, each_member
from dqnbench.plugin.validation import check_probability


def epsilon_greedy(q_values: torch.Tensor, epsilon: float | np.ndarray) -> torch.Tensor:
    """Greedy actions of ``q_values (B, n)``, each replaced by a uniform one with prob. ε (a number, or one per row)."""
    batch, n_actions = q_values.shape
    return epsilon_greedy_lazily(lambda: q_values, batch, n_actions, epsilon, q_values.device)


def epsilon_greedy_lazily(
    q_values: Callable[[], torch.Tensor], rows: int, n_actions: int, epsilon: float | np.ndarray, device: torch.device
) -> torch.Tensor:
    """:func:`epsilon_greedy` that draws first and calls ``q_values()`` only when some row acts greedily.

    The same draws in the same order and the same actions as :func:`epsilon_greedy`
    on ``q_values()``: a step where every row explores needs no forward pass.
    """
    if isinstance(epsilon, np.ndarray):  # one ε per member: the same draws whatever the values
        explore = torch.rand(rows, device=device) < torch.from_numpy(epsilon).to(device)
        random_actions = torch.randint(n_actions, (rows,), device=device)
        return random_actions if bool(explore.all()) else torch.where(explore, random_actions, greedy(q_values()))
    if epsilon <= 0.0:
        return greedy(q_values())
    if rows == 1:  # the acting hot path: one draw decides, a second only when exploring
        if uniform() < epsilon:
            return torch.randint(n_actions, (1,), device=device)
        return greedy(q_values())
    explore = torch.rand(rows, device=device) < epsilon
    random_actions = torch.randint(n_actions, (rows,), device=device)
    return random_actions if bool(explore.all()) else torch.where(explore, random_actions, greedy(q_values()))


_draws = threading.local()


def uniform() -> float:
    """One draw of ``torch.rand(())`` (the same number, the same RNG state after), written into a tensor kept per
    thread instead of a new one: ~1.3 µs against ~3.3 µs, on every env step of a single run. Like ``torch.rand``
    it follows the default dtype; dqnbench sets no default device, so both draw on the CPU generator."""
    buffer = getattr(_draws, "buffer", None)
    if buffer is None or buffer.dtype != torch.get_default_dtype():  # as torch.rand: float64 draws 64 bits
        with torch.inference_mode(False):  # a normal tensor, which acting (in inference mode) may write
            buffer = _draws.buffer = torch.empty(())
    return float(buffer.uniform_())


def greedy(q_values: torch.Tensor) -> torch.Tensor:
    """The action of highest Q-value per row (ties: the first)."""
    return q_values.argmax(dim=1)


def _probability(name: str, value: float | PerMember) -> float | np.ndarray:
    """``value`` in [0, 1]; K of them (an array) for a member-wise value."""
    if isinstance(value, PerMember):
        return np.array([check_probability(name, v) for v in value])
    return check_probability(name, value)


class ConstantEpsilon:
    """ε-greedy with a fixed ε."""

    def __init__(self, epsilon: float, n_actions: int = 0) -> None:
        self.epsilon = _probability("epsilon", epsilon)
        self.n_actions = n_actions

    def value(self, step: int) -> float:
        return self.epsilon

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return epsilon_greedy(q_values, self.epsilon)

    def select_lazily(self, q_values: Callable[[], torch.Tensor], rows: int, step: int, device: torch.device):
        return epsilon_greedy_lazily(q_values, rows, self.n_actions, self.epsilon, device)


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
        n_actions: int = 0,
    ) -> None:
        self.n_actions = n_actions
        self.start = _probability("start", start)
        self.end = _probability("end", end)
        if isinstance(fraction, PerMember) or isinstance(delay, PerMember) or isinstance(steps, PerMember):
            rows = zip(*each_member(fraction, delay, steps))
            decays = [_decay(total_steps, f, d, s) for f, d, s in rows]
            self.delay = np.array([d for d, _ in decays], dtype=np.float64)
            self.decay_steps = np.array([s for _, s in decays], dtype=np.float64)
        else:
            self.delay, self.decay_steps = _decay(total_steps, fraction, delay, steps)
        self.shape = np.broadcast_shapes(*(np.shape(v) for v in (self.start, self.end, self.decay_steps)))

        self.per_member = any(isinstance(v, np.ndarray) for v in (self.start, self.end, self.decay_steps))

    def value(self, step: int) -> float | np.ndarray:
        """ε at ``step``: a number, or one per member (an array) when any param is member-wise."""
        if self.per_member:
            progress = np.minimum(1.0, np.maximum(0.0, step - self.delay) / self.decay_steps)
            return np.broadcast_to(self.start + (self.end - self.start) * progress, self.shape).copy()
        progress = min(1.0, max(0, step - self.delay) / self.decay_steps)
        return self.start + (self.end - self.start) * progress

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        return epsilon_greedy(q_values, self.value(step))

    def select_lazily(self, q_values: Callable[[], torch.Tensor], rows: int, step: int, device: torch.device):
        return epsilon_greedy_lazily(q_values, rows, self.n_actions, self.value(step), device)


def _decay(total_steps: int, fraction: float, delay: int | None, steps: int | None) -> tuple[int, float]:
    """``(delay, decay steps)`` of one schedule, checked: ``steps`` when given, else ``fraction × total_steps``."""
    fraction = check_probability("fraction", fraction)
    delay = 0 if delay is None else delay
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay must be an integer >= 0 (env steps at ε = start), got {delay!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer (env steps of the decay), got {steps!r}")
    return delay, float(steps) if steps is not None else max(1.0, fraction * total_steps)


def constant(n_actions: int, total_steps: int, epsilon: float = 0.1) -> ConstantEpsilon:
    """ε-greedy with fixed ε: the tutorial's explorer (``epsilon = 0.1`` random actions)."""
    return ConstantEpsilon(epsilon, n_actions)


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
    return LinearEpsilon(total_steps, start, end, fraction, delay, steps, n_actions)


# Both treat each row of q_values on its own and keep no per-row state: one explorer serves K lock-step members.
constant.lockstep = linear.lockstep = True
# ...and every scalar may differ between the members of a fused group (dqnbench.plugin.members).
constant.memberwise = ("epsilon",)
linear.memberwise = ("start", "end", "fraction", "delay", "steps")


@hookimpl
def dqnbench_explorations() -> dict:
    return {"constant": constant, "linear": linear}
