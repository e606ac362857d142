"""What a run shows while it trains: the records since the last look, handed to sinks (live file, trackers).

The loop calls :meth:`Watch.update` once :attr:`Watch.next_step` is reached: at
each evaluation and every :data:`WATCH_EVERY_S` seconds or so. The watch reads
what the loop has already recorded (the logs' evaluations and episodes, the step
records' losses, max-Q, ε and times), bins the per-step signals, and hands each
row's :class:`RunDelta` to that row's sinks. A :class:`Tracker` (TensorBoard's,
a plugin's) sees plain scalars. ``docs/console.md`` shows the whole console.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: seconds between looks at a run's records (besides each evaluation)
WATCH_EVERY_S = 3.0
#: the most of a task's time its looks may take: a look that cost c seconds waits at least c / LOOK_BUDGET
LOOK_BUDGET = 0.02
#: a run's training signals are binned into about this many rows
LIVE_BINS = 200


@runtime_checkable
class Tracker(Protocol):
    """An experiment tracker for one run (TensorBoard is the built-in): scalars by env step."""

    def log_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` (tag → value) at env ``step``."""

    def close(self) -> None:
        """Flush and release the tracker (the run ended, or failed)."""


@dataclass(frozen=True)
class Pace:
    """How fast a task trains (all its rows together), for the ETA: seconds per env step and per evaluation."""

    #: seconds per env step before the first learning phase (act, env, store, loop)
    plain_s: float = math.nan
    #: seconds per env step once learning (learning phases every ``train_every`` steps included)
    learning_s: float = math.nan
    #: seconds per evaluation (the latest ones)
    eval_s: float = math.nan
    #: seconds per env step spent acting and stepping the env (what a greedy evaluation step costs)
    greedy_s: float = math.nan


@dataclass
class RunDelta:
    """One row's news since the last look: its new evaluations, episodes and binned step rows."""

    step: int
    evals: dict[str, list[Any]] = field(default_factory=dict)
    episodes: dict[str, list[Any]] = field(default_factory=dict)
    #: binned ``steps`` rows (the windowed table's columns, ``steps_n`` env steps each)
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    pace: Pace = Pace()
    #: env steps per second of this row over the last interval (its share, as ``runs.steps_per_s``)
    steps_per_s: float = math.nan


class Sink(Protocol):
    """Where a row's :class:`RunDelta` goes (the live results file)."""

    def update(self, delta: RunDelta) -> None: ...

    def close(self) -> None: ...


class Watch:
    """Looks at a task's records now and then; each row's news goes to that row's sinks and trackers.

    :param sinks: per row, the sinks of :class:`RunDelta` (live file).
    :param trackers: per row, the :class:`Tracker` objects (scalars).
    """

    def __init__(
        self,
        total_steps: int,
        eval_every: int,
        sinks: Sequence[Sequence[Sink]] = (),
        trackers: Sequence[Sequence[Tracker]] = (),
        every_s: float = WATCH_EVERY_S,
    ) -> None:
        self.total_steps, self.eval_every, self.every_s = total_steps, eval_every, every_s
        self.sinks, self.trackers = [list(s) for s in sinks], [list(t) for t in trackers]
        #: the loop calls :meth:`update` once it reaches this env step
        self.next_step = 0 if (self.sinks or self.trackers) else total_steps + 1
        self._row = 0  # first records row not yet binned
        self._episodes_seen: list[int] = []
        self._evals_seen: list[int] = []
        self._last: tuple[float, int, float] | None = None  # (wall, step, eval_s) of the last look
        self._evals = (0, 0.0, math.nan)  # evaluations seen, their seconds, the cost of the latest ones
        self._overhead = [0.0, 0]  # wall not in the step timings nor evaluations, and its env steps
        self._look_s = 0.0  # what the latest look cost

    def update(self, step: int, logs: Sequence[Any], records: Any, eval_s: float) -> None:
        """Hand each row its news up to env ``step`` (``eval_s``: the loop's evaluation seconds so far)."""
        now = time.perf_counter()
        rows = len(logs)
        if not self._episodes_seen:
            self._episodes_seen, self._evals_seen = [0] * rows, [0] * rows
        final = step >= self.total_steps
        end_row = math.ceil(self.total_steps / records.window) if final else step // records.window
        bins = self._bins(records, end_row, final)
        pace, rate = self._pace(now, step, records, eval_s, logs)
        for k, log in enumerate(logs):
            delta = RunDelta(step, pace=pace, steps_per_s=rate * rows)
            delta.evals = {key: values[self._evals_seen[k] :] for key, values in log.evals.items()}
            delta.episodes = {key: values[self._episodes_seen[k] :] for key, values in log.episodes.items()}
            self._evals_seen[k] = len(log.evals["step"])
            self._episodes_seen[k] = len(log.episodes["step"])
            delta.steps = {name: column[:, k] if column.ndim == 2 else column for name, column in bins.items()}
            for sink in self.sinks[k] if k < len(self.sinks) else ():
                sink.update(delta)
            for tracker in self.trackers[k] if k < len(self.trackers) else ():
                for at, scalars in tracker_scalars(delta):
                    tracker.log_scalars(at, scalars)
        self._look_s = time.perf_counter() - now
        self._schedule(step, rate)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every sink and tracker (each is closed once, even if another one raises)."""
        errors = []
        for handles in (*self.sinks, *self.trackers):
            for handle in handles:
                try:
                    handle.close()
                except Exception as exc:  # noqa: BLE001 - close the others first
                    errors.append(exc)
        if errors:
            raise errors[0]

    # --- what a look computes ---------------------------------------------------------------
    def _bins(self, records: Any, end_row: int, final: bool) -> dict[str, np.ndarray]:
        """The binned step rows from records row ``self._row`` to ``end_row`` (whole bins, the rest at the end)."""
        per_bin = max(1, math.ceil(math.ceil(self.total_steps / records.window) / LIVE_BINS))
        stop = end_row if final else self._row + (end_row - self._row) // per_bin * per_bin
        if stop <= self._row:
            return {}
        starts = np.arange(self._row, stop, per_bin)
        self._row = stop
        window = records.window

        def summed(values: np.ndarray) -> np.ndarray:
            return np.add.reduceat(values[starts[0] : stop], starts - starts[0], axis=0)

        def mean(values: np.ndarray) -> np.ndarray:  # over the values that are not NaN
            with np.errstate(invalid="ignore", divide="ignore"):
                values = values.astype(np.float64)
                return (summed(np.nan_to_num(values)) / summed((~np.isnan(values)).astype(np.float64))).astype(
                    np.float32
                )

        rows_share = records.rows
        if window == 1:
            loss = mean(records.loss)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                learn_n = summed(records.learn_n)  # per row: a fused member learns from its own start
                loss = (summed(records.loss) / learn_n).astype(np.float32)
        step0 = starts * window
        steps_n = np.minimum((np.append(starts[1:], stop) - starts) * window, self.total_steps - step0)
        return {
            "step": step0.astype(np.int64),
            "reward": summed(records.reward.astype(np.float64)).astype(np.float32),
            "t_act": summed(records.times[0]) / rows_share,
            "t_env": summed(records.times[1]) / rows_share,
            "t_learn": summed(records.times[2]) / rows_share,
            "loss": loss,
            "q_max": mean(records.q_max),
            "epsilon": mean(records.epsilon),
            "steps_n": steps_n.astype(np.int32),
        }

    def _pace(self, now: float, step: int, records: Any, eval_s: float, logs: Sequence[Any]) -> tuple[Pace, float]:
        """The task's pace so far, and its env steps per second since the last look (evaluations excluded)."""
        window, done = records.window, math.ceil(step / records.window)
        per_row = records.times[:, :done].sum(axis=0)
        learned = (records.learn_n[:done] > 0).any(axis=1) if window > 1 else ~np.isnan(records.loss[:done]).all(axis=1)
        first = int(np.argmax(learned)) if learned.any() else done
        rate = math.nan
        if self._last is not None:
            wall, last_step, last_eval = self._last
            train = (now - wall) - (eval_s - last_eval)
            timed = per_row[last_step // window : done].sum()
            if step > last_step and train > 0:
                rate = (step - last_step) / train
                self._overhead[0] += max(0.0, train - timed)
                self._overhead[1] += step - last_step
        self._last = (now, step, eval_s)
        overhead = self._overhead[0] / self._overhead[1] if self._overhead[1] else 0.0
        plain = per_row[:first].sum() / (first * window) + overhead if first else math.nan
        learning = per_row[first:].sum() / ((done - first) * window) + overhead if done > first else math.nan
        # the latest evaluations' cost (a trained agent's episodes run longer than an untrained one's)
        evals = len(logs[0].evals["step"]) if logs else 0
        if evals > self._evals[0]:
            self._evals = (evals, eval_s, (eval_s - self._evals[1]) / (evals - self._evals[0]))
        greedy = records.times[:2, :done].sum() / (done * window) if done else math.nan
        return Pace(plain, learning, self._evals[2], greedy), rate

    def _schedule(self, step: int, rate: float) -> None:
        """The next look: at the next evaluation, or about :attr:`every_s` seconds of training from now
        (later where looking would cost more than :data:`LOOK_BUDGET` of the time)."""
        every = max(self.every_s, self._look_s / LOOK_BUDGET)
        ahead = int(rate * every) if rate == rate and rate > 0 else 256
        upcoming = step + max(ahead, 1)
        if self.eval_every:
            upcoming = min(upcoming, (step // self.eval_every + 1) * self.eval_every)
        self.next_step = min(upcoming, self.total_steps) if step < self.total_steps else self.total_steps + 1


def tracker_scalars(delta: RunDelta) -> list[tuple[int, dict[str, float]]]:
    """A row's news as ``(env step, {tag: value})`` pairs, in the tags of ``docs/console.md``."""
    out: list[tuple[int, dict[str, float]]] = []
    for at, mean in zip(delta.evals.get("step", ()), delta.evals.get("mean_return", ())):
        out.append((int(at), {"eval/mean_return": float(mean)}))
    episodes = delta.episodes
    for at, ret, length in zip(episodes.get("step", ()), episodes.get("return", ()), episodes.get("length", ())):
        out.append((int(at), {"episode/return": float(ret), "episode/length": float(length)}))
    steps = delta.steps
    for i in range(len(steps.get("step", ()))):
        end = int(steps["step"][i] + steps["steps_n"][i])
        values = {f"train/{name}": steps[name][i] for name in ("loss", "q_max", "epsilon")}
        finite = {tag: float(v) for tag, v in values.items() if np.isfinite(v)}
        if finite:
            out.append((end, finite))
    if delta.steps_per_s == delta.steps_per_s:
        out.append((delta.step, {"train/steps_per_s": float(delta.steps_per_s)}))
    return out
