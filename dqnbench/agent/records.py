"""What a run records while it trains: per-step (or per-window) arrays, episodes, evaluations.

Short runs keep one ``steps`` row per env step. A 10M-step Atari run would
write 10M rows of timing (hundreds of MB), so runs longer than
:data:`PER_STEP_ROWS` steps are recorded in windows of N consecutive env steps
(``experiment.steps_window``; 0 chooses N so that a run has at most
``PER_STEP_ROWS`` rows). A windowed row carries ``steps_n`` (how many env
steps it sums) and the window's first ``step`` and ``episode``; ``reward``,
``t_act``, ``t_env`` and ``t_learn`` are sums over the window, ``loss`` the mean
over its learn steps, so totals (steps/s, time shares) read the same either way.

Why it is built this way, with measurements: ``docs/internals.md`` (``agent.records``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dqnbench.agent.calibration import CALIBRATE_EVERY

#: runs up to this many env steps keep one ``steps`` row per step; longer ones are windowed to about this many rows
PER_STEP_ROWS = 100_000
#: env steps between probes of max Q and ε (per-step tables); windowed tables probe once per window
PROBE_EVERY = 50


def steps_window(total_steps: int, window: int = 0) -> int:
    """Env steps per ``steps`` row: ``window`` if set, else 1 up to :data:`PER_STEP_ROWS` steps, else windows."""
    if window:
        return int(window)
    return 1 if total_steps <= PER_STEP_ROWS else math.ceil(total_steps / PER_STEP_ROWS)


class StepRecords:
    """Step (or window) records of R rows: rewards, act/env/learn times, losses, probes of max Q and ε."""

    def __init__(self, total_steps: int, rows: int, window: int = 1) -> None:
        self.total_steps, self.rows, self.window = total_steps, rows, window
        n = math.ceil(total_steps / window)
        self.reward = np.zeros((n, rows), dtype=np.float32 if window == 1 else np.float64)
        self.loss = np.full((n, rows), np.nan, dtype=np.float32) if window == 1 else np.zeros((n, rows))
        self.learn_n = np.zeros((n, rows), dtype=np.int32)  # per row: a fused member learns from its own start
        self.times = np.zeros((3, n))
        self.q_max = np.full((n, rows), np.nan, dtype=np.float32)
        #: every CALIBRATE_EVERY steps (NaN elsewhere): the calibration workload's seconds (the machine's pace) and
        #: the process's CPU seconds so far (differences between marks: CPU time per block, immune to time-slicing)
        self.calib = np.full(n, np.nan, dtype=np.float64)
        self.cpu = np.full(n, np.nan, dtype=np.float64)
        self.epsilon = np.full((n, rows), np.nan, dtype=np.float32)  # per row: fused members have their own ε
        self.probe_every = max(window, PROBE_EVERY)
        self.calibrate_every = max(window, CALIBRATE_EVERY)

    def record(self, step: int, rewards: np.ndarray, losses: np.ndarray | None, t_act: float, t_env: float,
               t_learn: float) -> None:  # fmt: skip
        """One env step of every row."""
        i = step // self.window
        if self.window == 1:
            self.reward[i] = rewards
            if losses is not None:
                self.loss[i] = losses
            self.times[0, i], self.times[1, i], self.times[2, i] = t_act, t_env, t_learn
            return
        self.reward[i] += rewards
        if losses is not None:
            learned = np.isfinite(losses) if np.ndim(losses) else True  # a fused member before its learning starts
            self.loss[i] += np.where(learned, losses, 0.0)
            self.learn_n[i] += learned
        self.times[0, i] += t_act
        self.times[1, i] += t_env
        self.times[2, i] += t_learn

    def calibration_due(self, step: int) -> bool:
        return step % self.calibrate_every == 0

    def calibrate(self, step: int, seconds: float, cpu_s: float) -> None:
        self.calib[step // self.window], self.cpu[step // self.window] = seconds, cpu_s

    def calibration(self) -> dict[str, list[float]]:
        """The calibration marks: env step, process CPU seconds so far, the workload's seconds (a run record's)."""
        marks = np.flatnonzero(np.isfinite(self.calib))
        return {
            "step": [int(i * self.window) for i in marks],
            "cpu_s": [float(v) for v in self.cpu[marks]],
            "calib_s": [float(v) for v in self.calib[marks]],
        }

    def probe_due(self, step: int) -> bool:
        return step % self.probe_every == 0

    def probe(self, step: int, q_max: np.ndarray, epsilon: float | np.ndarray) -> None:
        i = step // self.window
        self.q_max[i], self.epsilon[i] = q_max, epsilon

    def loss_at(self, step: int, row: int) -> float:
        """The loss recorded at ``step`` (its window's mean when windowed)."""
        i = step // self.window
        return float(self.loss[i, row] if self.window == 1 else self.loss[i, row] / max(self.learn_n[i, row], 1))

    def table(self, row: int, episode_ends: np.ndarray, rows_share: int) -> dict[str, np.ndarray]:
        """Run ``row``'s ``steps`` table; times divided by ``rows_share`` (each row's share of a batched step)."""
        starts = np.arange(0, self.total_steps, self.window, dtype=np.int64)
        table = {
            "step": starts,
            # a step's episode: how many of the run's episodes had ended before it
            "episode": np.searchsorted(episode_ends, starts, side="right"),
            "reward": np.ascontiguousarray(self.reward[:, row], dtype=np.float32),
            "t_act": self.times[0] / rows_share,
            "t_env": self.times[1] / rows_share,
            "t_learn": self.times[2] / rows_share,
        }
        if self.window == 1:
            table["loss"] = np.ascontiguousarray(self.loss[:, row])
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                table["loss"] = (self.loss[:, row] / self.learn_n[:, row]).astype(np.float32)
            table["steps_n"] = np.minimum(self.window, self.total_steps - starts).astype(np.int32)
        table["q_max"] = np.ascontiguousarray(self.q_max[:, row])
        table["epsilon"] = np.ascontiguousarray(self.epsilon[:, row])
        return table

    def state_dict(self) -> dict[str, Any]:
        """The arrays so far, for a checkpoint (:mod:`dqnbench.agent.checkpoint`)."""
        names = ("reward", "loss", "learn_n", "times", "q_max", "epsilon", "calib", "cpu")
        return {"total_steps": self.total_steps, "rows": self.rows, "window": self.window,
                **{name: getattr(self, name) for name in names}}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s arrays; a ValueError when they are another run's layout."""
        layout = (self.total_steps, self.rows, self.window)
        if (state["total_steps"], state["rows"], state["window"]) != layout:
            raise ValueError(
                f"steps records of {state['total_steps']} steps × {state['rows']} rows in windows of "
                f"{state['window']}, not {layout[0]} × {layout[1]} in windows of {layout[2]}"
            )
        for name in ("reward", "loss", "learn_n", "times", "q_max", "epsilon", "calib", "cpu"):
            np.copyto(getattr(self, name), state[name])


@dataclass
class TrainLog:
    """What one run produced: its ``steps`` table, episodes, evaluations, weights."""

    total_steps: int
    obs_dim: int = 0
    n_actions: int = 0
    #: the ``steps`` table (see :class:`StepRecords`), set when training ends
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    episodes: dict[str, list[Any]] = field(
        default_factory=lambda: {"episode": [], "step": [], "return": [], "length": []}
    )
    evals: dict[str, list[Any]] = field(
        default_factory=lambda: {"step": [], "mean_return": [], "std_return": [], "returns": []}
    )
    train_s: float = 0.0
    weights: dict[str, torch.Tensor] | None = None
    #: env step at which the loss became non-finite (lock-step members keep a record instead of raising)
    diverged_step: int | None = None
    #: the loss recorded at ``diverged_step``
    diverged_loss: float = math.nan
    #: the observation shape and dtype the run trained on
    obs_shape: tuple[int, ...] = ()
    obs_dtype: str = "float32"
    #: the env step this run resumed from (a checkpoint of an interrupted run), None when it ran from step 0
    resumed_at: int | None = None
    #: how the learner computed gradients: "autograd" or a speed path it names (see ``learning.learn_path``)
    learn_path: str = "autograd"
    #: calibration marks every 100 env steps (:meth:`StepRecords.calibration`): what speed verdicts of lock-step
    #: groups read (stored in the run record, not in ``steps``, whose columns stay deterministic but for t_*)
    calibration: dict[str, list[float]] = field(default_factory=dict)

    @property
    def final_return(self) -> float:
        return float(self.evals["mean_return"][-1])

    def steps_table(self) -> dict[str, np.ndarray]:
        return self.steps

    # The steps table's columns as attributes (per step, or per window when windowed).
    reward = property(lambda self: self.steps["reward"])
    episode = property(lambda self: self.steps["episode"])
    loss = property(lambda self: self.steps["loss"])
    t_act = property(lambda self: self.steps["t_act"])
    t_env = property(lambda self: self.steps["t_env"])
    t_learn = property(lambda self: self.steps["t_learn"])
