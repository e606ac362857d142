"""The learning schedule: at which env steps the loop learns, and how many learn steps a run takes.

One object read by the loop (:meth:`~dqnbench.agent.loop.Agent.learn_due`),
the pre-flight (:func:`~dqnbench.run.preflight.never_learns`), the ETA and
the estimate (:mod:`dqnbench.run.eta`, :mod:`dqnbench.run.estimate`) and the
benchmarks, so none of them restates the rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dqnbench.config.schema import AgentConfig


@dataclass(frozen=True)
class LearningSchedule:
    """A learning phase (``gradient_steps`` learn steps) runs at env step ``s`` (0-based) when
    ``s + 1 >= learning_starts``, the replay holds ``batch_size`` transitions and ``s % train_every == 0``."""

    #: transitions stored before the first learning phase (``agent.learning_starts``)
    learning_starts: int
    #: transitions per learn step: the replay must hold as many (``agent.batch_size``)
    batch_size: int
    #: env steps between learning phases (``agent.train_every``)
    train_every: int = 1
    #: learn steps per learning phase (``agent.gradient_steps``)
    gradient_steps: int = 1
    #: env steps the replay's length lags behind the steps stored (an n-step window's n - 1); where the replay
    #: is at hand, :meth:`due` reads its length instead
    lag: int = 0

    @classmethod
    def of(cls, agent: AgentConfig, lag: int = 0) -> LearningSchedule:
        """The schedule of an ``[agent]`` section (:class:`~dqnbench.config.schema.AgentConfig`)."""
        return cls(agent.learning_starts, agent.batch_size, agent.train_every, agent.gradient_steps, lag)

    def due(self, step: int, stored: int | None = None) -> bool:
        """Is env step ``step`` a learning step? ``stored``: the replay's length (default: the steps so far, less
        :attr:`lag`)."""
        stored = step + 1 - self.lag if stored is None else stored
        return step + 1 >= self.learning_starts and stored >= self.batch_size and step % self.train_every == 0

    @property
    def first_step(self) -> int:
        """The env step of the first learning phase (where the replay's length is :attr:`lag` behind the steps)."""
        first = max(self.learning_starts, self.batch_size + self.lag) - 1
        return first + (-first % self.train_every)

    def phases(self, total_steps: int) -> int:
        """Learning phases in a run of ``total_steps`` env steps."""
        return max(0, -(-(total_steps - self.first_step) // self.train_every))

    def learn_steps(self, total_steps: int) -> int:
        """Learn steps (gradient steps, target-update counts) in a run of ``total_steps`` env steps."""
        return self.phases(total_steps) * self.gradient_steps

    @property
    def phases_per_step(self) -> float:
        """Learning phases per env step once learning has started (the ETA's and the estimate's rate)."""
        return 1.0 / self.train_every
