"""What returns an environment allows: the bounds that intervals and curve bands are clipped to.

A Student's t interval of three MinAtar Breakout seeds can reach −0.37 when no
episode can score below 0. Each side of an environment's bound is

- the smallest / largest return the environment **can** give, where that is
  known (:data:`KNOWN`: MinAtar games only reward, CartPole's return is its
  length, Acrobot and MountainCar pay −1 a step up to their time limit), widened
  to every return observed so a bound never cuts off something that happened;
- else the smallest / largest return **observed** on that environment in the
  results: final returns, evaluation episodes and training episodes of every run.

A statistic of returns (IQM, mean, median, AUC) lies within them, so a CI or
band beyond them only says the interval method does not know the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from dqnbench.run.results import Results

#: env id → ``(min, max)`` of one episode's return; ``"T"`` is the env's ``max_episode_steps``, None unknown.
KNOWN: dict[str, tuple[Any, Any]] = {
    "MinAtar/": (0.0, None),  # MinAtar games never give a negative reward
    "CartPole-v0": (0.0, "T"),
    "CartPole-v1": (0.0, "T"),
    "Acrobot-v1": ("-T", 0.0),
    "MountainCar-v0": ("-T", 0.0),
}

Bounds = tuple[float, float]
UNBOUNDED: Bounds = (-math.inf, math.inf)


def possible_bounds(env_id: str | None) -> tuple[float | None, float | None]:
    """The return range ``env_id`` can give, from :data:`KNOWN`; None on a side that is not known."""
    if not isinstance(env_id, str):
        return None, None
    spec = next((v for k, v in KNOWN.items() if env_id == k or (k.endswith("/") and env_id.startswith(k))), None)
    if spec is None:
        return None, None
    return _resolve(spec[0], env_id), _resolve(spec[1], env_id)


def _resolve(value: Any, env_id: str) -> float | None:
    if value is None or isinstance(value, float):
        return value
    try:
        import gymnasium

        steps = gymnasium.spec(env_id).max_episode_steps
    except Exception:  # an id this process cannot resolve: the side stays unknown
        return None
    if steps is None:
        return None
    return -float(steps) if value.startswith("-") else float(steps)


def observed_returns(runs: pd.DataFrame, *tables: pd.DataFrame | None) -> dict[str | None, Bounds]:
    """env → ``(smallest, largest)`` return recorded: ``runs.final_return`` and any ``evals`` / ``episodes`` tables."""
    from dqnbench.analysis.cells import cell_env

    if runs.empty:
        return {}
    run_env = dict(zip(runs["run_id"], runs["cell"].map(cell_env(runs))))
    values: list[pd.DataFrame] = [pd.DataFrame({"run_id": runs["run_id"], "value": runs.get("final_return")})]
    for table in tables:
        if table is None or table.empty:
            continue
        for column in ("return", "mean_return"):
            if column in table.columns:
                values.append(pd.DataFrame({"run_id": table["run_id"], "value": table[column]}))
        if "returns" in table.columns:  # each evaluation episode's return
            each = table[["run_id", "returns"]].explode("returns")
            values.append(pd.DataFrame({"run_id": each["run_id"], "value": each["returns"]}))
    frame = pd.concat(values, ignore_index=True)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame[np.isfinite(frame["value"])]
    frame["env"] = frame["run_id"].map(run_env)
    out = {}
    for env, group in frame.groupby("env", dropna=False, sort=False):
        key = None if isinstance(env, float) and math.isnan(env) else env
        out[key] = (float(group["value"].min()), float(group["value"].max()))
    return out


def return_bounds(runs: pd.DataFrame, *tables: pd.DataFrame | None) -> dict[str | None, Bounds]:
    """env → the bounds its intervals are clipped to: the possible range widened to what was observed."""
    out = {}
    for env, (low, high) in observed_returns(runs, *tables).items():
        can_low, can_high = possible_bounds(env)
        out[env] = (low if can_low is None else min(can_low, low), high if can_high is None else max(can_high, high))
    return out


def results_bounds(results: Results) -> dict[str | None, Bounds]:
    """:func:`return_bounds` of everything a results directory recorded."""
    return return_bounds(results.runs, results.evals, results.episodes)


def env_bounds(bounds: Mapping[str | None, Bounds] | None, env: str | None) -> Bounds:
    """The bounds of ``env`` in ``bounds``, unbounded when there are none."""
    return UNBOUNDED if bounds is None else bounds.get(env, UNBOUNDED)
