"""The search's plain-data record, ``<results>/search/trials.json``, and the trial objective.

The Optuna study (``study.db``) is the source of truth while a search runs; after
every batch the driver exports it here with what Optuna does not know (each
trial's run ids and seeds, the test phase), so :func:`~dqnbench.run.results.load_results`
builds ``res.trials`` and the runs' ``phase`` / ``trial`` columns without Optuna.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

INDEX = Path("search") / "trials.json"
STATES = ("complete", "pruned", "failed", "running")


def run_objective(evals: pd.DataFrame, objective: str) -> float:
    """One run's objective from its evaluations: ``auc`` (normalised area under the curve) or ``final``.

    ``auc`` is :func:`~dqnbench.analysis.stats.area_under_curve`: the trapezoid area under
    the mean greedy return against env steps, divided by the steps spanned, so it is in
    units of return and rewards learning early; ``final`` is the last evaluation's mean return.
    """
    if evals.empty:
        return math.nan
    evals = evals.sort_values("step")
    if objective == "final":
        return float(evals["mean_return"].iloc[-1])
    # imported here: every load_results imports this module, and the statistics module brings SciPy (about
    # 1.3 s to import), which loading a plain grid's results never needs
    from dqnbench.analysis.stats import area_under_curve

    return area_under_curve(evals["step"].to_numpy(), evals["mean_return"].to_numpy())


def intermediate(steps: Sequence[float], returns: Sequence[float], objective: str) -> float:
    """The objective of a run so far (what a pruner compares at an evaluation)."""
    frame = pd.DataFrame({"step": np.asarray(steps, dtype=float), "mean_return": np.asarray(returns, dtype=float)})
    return run_objective(frame, objective)


def write_index(experiment_dir: Path, index: Mapping[str, Any]) -> None:
    """Write ``trials.json`` atomically (a reader never sees half of it)."""
    path = Path(experiment_dir) / INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_index(experiment_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The search record of an experiment directory, or None for a plain grid."""
    try:
        with open(Path(experiment_dir) / INDEX, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def trials_frame(index: Mapping[str, Any]) -> pd.DataFrame:
    """``res.trials``: one row per trial: variant, trial, one column per searched key, objective, state, seeds."""
    keys = list(index["keys"])
    rows = [
        {
            "variant": t["variant"],
            "trial": t["trial"],
            **{k: t["params"].get(k) for k in keys},
            "objective": math.nan if t.get("objective") is None else float(t["objective"]),
            "state": t["state"],
            "seeds": tuple(t["seeds"]),
        }
        for t in index["trials"]
    ]
    frame = pd.DataFrame(rows, columns=["variant", "trial", *keys, "objective", "state", "seeds"])
    frame["trial"] = frame["trial"].astype("Int64")
    frame.attrs["space"] = index.get("space", {})
    frame.attrs["objective"] = index.get("objective")
    return frame


def run_phases(index: Mapping[str, Any]) -> dict[str, tuple[str, int | None]]:
    """run_id → (phase, trial): ``tune`` runs carry their trial; ``test`` runs the trial they retest (None: default)."""
    phases: dict[str, tuple[str, int | None]] = {}
    for t in index["trials"]:
        for run_id in t.get("run_ids", ()):
            phases[run_id] = ("tune", t["trial"])
    for t in index.get("test", ()):
        for run_id in t["run_ids"]:
            phases[run_id] = ("test", t.get("trial"))
    return phases


def with_phases(runs: pd.DataFrame, index: Mapping[str, Any]) -> pd.DataFrame:
    """``runs`` with the ``phase`` and ``trial`` columns of a search."""
    phases = run_phases(index)
    runs = runs.copy()
    runs["phase"] = [phases.get(r, (None, None))[0] for r in runs["run_id"]]
    runs["trial"] = pd.array([phases.get(r, (None, None))[1] for r in runs["run_id"]], dtype="Int64")
    return runs
