"""Optuna's side of a search: storage, one study per variant, seeded samplers, pruners.

Kept apart so the rest of the search reads plain data, and so importing
dqnbench never imports Optuna (it is the ``tune`` extra).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from dqnbench.config.search import Param, SearchSpec

SEARCH_DIR = "search"
STUDY_FILE = "study.db"

optuna.logging.set_verbosity(logging.WARNING)


def storage_url(experiment_dir: Path) -> str:
    """The SQLite URL of the experiment's study database (``<dir>/search/study.db``), in WAL mode.

    Write-ahead logging (kept in the file) halves the cost of each ask and tell;
    a commit survives the process being killed, however it dies.
    """
    path = (Path(experiment_dir) / SEARCH_DIR / STUDY_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
    return f"sqlite:///{path}"


def _fast_commits(connection: Any, _record: Any) -> None:
    """WAL's ``synchronous=NORMAL``: durable across process crashes (kill -9), not OS crashes; no fsync per commit."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the study database, each connection with :func:`_fast_commits`."""
    rdb = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    sqlalchemy.event.listen(rdb.engine, "connect", _fast_commits)
    rdb.engine.dispose()  # connections opened before the listener go
    return rdb


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of one searched key."""
    if param.choices is not None:
        return CategoricalDistribution(list(param.choices))
    if param.is_int:
        return IntDistribution(param.low, param.high, log=param.log, step=param.step or 1)
    return FloatDistribution(float(param.low), float(param.high), log=param.log, step=param.step)


def distributions(spec: SearchSpec) -> dict[str, BaseDistribution]:
    return {p.key: distribution(p) for p in spec.space}


def sampler(spec: SearchSpec, variant_index: int) -> optuna.samplers.BaseSampler:
    """The variant's sampler, seeded from ``search.seed`` and the variant's position (each variant its own stream)."""
    seed = zlib.crc32(f"{spec.seed}/{variant_index}".encode())
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if spec.sampler == "grid":
        return _GridSampler({p.key: p.values for p in spec.space}, seed=seed)
    # constant liar: trials asked in one batch avoid each other instead of all landing on the same point
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=min(10, max(2, spec.trials // 4)))


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, minus its ``study.stop()`` once the grid is walked (that works only inside
    ``study.optimize``; a search stops at ``trials`` itself, which the grid sampler's check keeps within the grid)."""

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        return None


def pruner(name: str) -> optuna.pruners.BasePruner:
    """``none``, ``median`` or ``successive_halving``: Optuna's pruners on the intermediate objective."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_study(spec: SearchSpec, variant_index: int, url: str | optuna.storages.BaseStorage) -> optuna.Study:
    """The variant's study, created on the first run and loaded (with its finished trials) on a resume."""
    variant = spec.variants[variant_index]
    return optuna.create_study(
        study_name=variant.label,
        storage=url,
        direction="maximize",
        sampler=sampler(spec, variant_index),
        pruner=pruner(spec.pruner),
        load_if_exists=True,
    )


def leftover_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials an interrupted search left RUNNING (the search holds its lock, so no live process owns them)."""
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))


def leftover_params(
    study: optuna.Study, frozen: optuna.trial.FrozenTrial, dists: dict[str, BaseDistribution]
) -> dict[str, Any]:
    """A leftover trial's params: those stored; a trial interrupted while being asked gets the missing ones now.

    ``Trial._suggest`` is what ``Study.ask`` itself calls per param: it returns a stored
    value as is and samples (and stores) one that is missing.
    """
    if set(frozen.params) >= set(dists):
        return dict(frozen.params)
    trial = optuna.Trial(study, frozen._trial_id)
    return {name: trial._suggest(name, dist) for name, dist in dists.items()}


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of the study as plain data: number, params, state, value."""
    return [
        {"trial": t.number, "params": dict(t.params), "state": t.state.name.lower(), "value": t.value}
        for t in study.get_trials(deepcopy=False)
    ]
