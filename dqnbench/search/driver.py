"""The search loop: ask a batch of trials per variant, run them as one plan, tell, repeat; then the test phase.

Trials are ordinary runs: each batch is a :class:`~dqnbench.config.grid.Plan` whose
cells are the trials asked together (``<config id>-t<trial>``, one run per tuning
seed) and goes through :func:`~dqnbench.run.runner.run_plan` and whichever executor
was chosen, so every trial's runs get run ids, records, results and resume.

Resume: trials an interrupted search left RUNNING (Ctrl-C, SIGTERM, kill -9) are
run again with the params Optuna stored for them; their run ids are the same, so
runs that had finished are skipped, not repeated. Trials told complete, pruned
or failed are never rerun, and a variant's study stops at exactly ``trials``.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from optuna.trial import TrialState

from dqnbench.config.grid import Plan, RunSpec
from dqnbench.config.schema import run_id
from dqnbench.config.search import SearchSpec, Variant
from dqnbench.run.groups import executor_slots
from dqnbench.run.lock import experiment_lock
from dqnbench.run.results import Results, load_results, write_plan
from dqnbench.search import study as studies
from dqnbench.search.prune import PRUNED, PruneReporter, task_pruner
from dqnbench.search.trials import run_objective, write_index


@dataclass
class Trial:
    """A trial asked (or left running) and the runs that train it."""

    variant: int
    number: int
    trial_id: int
    params: dict[str, Any]
    run_ids: list[str] = field(default_factory=list)


def run_search(
    plan: Plan,
    registry: Any,
    out: str | os.PathLike = "results",
    *,
    executor: str = "process",
    workers: int | None = None,
    executor_options: dict[str, Any] | None = None,
    plugins: Sequence[Any] = (),
    load_entrypoints: bool = True,
    quiet: bool = False,
    stream: TextIO | None = None,
    lockstep: bool = True,
    fuse: bool = True,
    tensorboard: str | os.PathLike | None = None,
) -> Results:
    """Tune every variant of ``plan.search``, then rerun each one's best (and default) config on the test seeds."""
    from dqnbench.run.runner import make_executor, run_plan

    spec: SearchSpec = plan.search
    stream = stream or sys.stdout
    experiment_dir = Path(out) / plan.name
    (experiment_dir / studies.SEARCH_DIR).mkdir(parents=True, exist_ok=True)

    def run(batch_plan: Plan, hooks: dict[str, PruneReporter] | None = None, sink: TextIO | None = None) -> Results:
        on_eval = (lambda task: task_pruner(task.specs, hooks)) if hooks else None
        return run_plan(
            batch_plan, registry, out, executor=executor, plugins=plugins, load_entrypoints=load_entrypoints,
            quiet=True if sink else quiet, stream=sink or stream, lockstep=lockstep, fuse=fuse,
            tensorboard=tensorboard, on_eval=on_eval, pool=lent,
        )  # fmt: skip

    # one executor for every plan of the search (a Ray cluster is joined once), closed when the search ends
    lent = Lent(make_executor(registry.get("executor", executor), workers, executor_options or {}))
    with lent, experiment_lock(experiment_dir / studies.SEARCH_DIR):
        url = studies.storage_url(experiment_dir)
        rdb = studies.storage(url)
        opened = [studies.open_study(spec, i, rdb) for i in range(len(spec.variants))]
        progress = SearchProgress(spec, opened, stream)
        # trials per variant asked together, as one plan: every worker busy, and trials that differ only in
        # member-wise keys fuse into one lock-step program (docs/sweeps.md), so a batch costs about one trial
        batch = max(lent.slots, TRIALS_PER_BATCH)
        tune_ids: list[str] = []
        try:
            while True:
                asked = ask(spec, opened, batch)
                if not asked:
                    break
                batch_plan, hooks = trial_plan(plan, spec, asked, registry, url)
                results = run(batch_plan, hooks, sink=io.StringIO())
                for trial in asked:
                    tell(spec, opened[trial.variant], trial, results)
                export(experiment_dir, spec, opened, registry, [])  # readers see finished trials as they come
                progress.batch_done(len(asked))
        finally:
            tune_ids = export(experiment_dir, spec, opened, registry, [])
        entries = test_entries(spec, opened, registry)
        test = test_plan(plan, entries)
        print(f"test phase: {len(test.runs)} runs on seeds {list(spec.test_seed_list)}", file=stream, flush=True)
        if test.runs:
            run(test)
        export(experiment_dir, spec, opened, registry, entries)
        write_plan(experiment_dir, Path(plan.path), tune_ids + [r.run_id for r in test.runs])
    return load_results(experiment_dir)


class Lent:
    """An executor lent to each plan of a search: a plan's ``close()`` leaves it running; the search closes it."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.slots = executor_slots(executor)

    def map_unordered(self, fn: Any, items: Any) -> Any:
        return self.executor.map_unordered(fn, items)

    def close(self) -> None:
        """A plan is done; the search goes on with the same executor."""

    def __enter__(self) -> Lent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.close()


#: at least this many trials per variant are asked at once (a sampler sees their results only after the batch)
TRIALS_PER_BATCH = 8


def ask(spec: SearchSpec, opened: list[Any], batch: int) -> list[Trial]:
    """Trials left running by an interrupted search, then new ones up to ``batch`` per variant; ``trials`` in all."""
    dists = studies.distributions(spec)
    asked: list[Trial] = []
    for i, study in enumerate(opened):
        left = [
            Trial(i, t.number, t._trial_id, studies.leftover_params(study, t, dists))
            for t in studies.leftover_trials(study)
        ]
        room = spec.trials - len(study.get_trials(deepcopy=False))
        asked += left
        for _ in range(max(0, min(batch - len(left), room))):
            t = study.ask(dists)
            asked.append(Trial(i, t.number, t._trial_id, dict(t.params)))
    return asked


def trial_cell(spec: SearchSpec, variant: Variant, number: int, params: dict[str, Any], registry: Any):
    """A trial as a cell: ``(cell id, label, config)`` on the tuning seeds (resolved once per process)."""
    key = (id(spec), variant.label, number, tuple(sorted(params.items())))
    if key not in _CELLS:
        config = spec.config(variant, params, spec.tune_seed_list, registry)
        _CELLS[key] = (f"{config.cell_id()}-t{number}", f"{variant.label} · trial {number}", config)
    return _CELLS[key]


#: trial cells already resolved: the export after each batch lists every trial's run ids
_CELLS: dict[tuple[Any, ...], tuple[str, str, Any]] = {}


def trial_plan(
    plan: Plan, spec: SearchSpec, asked: list[Trial], registry: Any, url: str
) -> tuple[Plan, dict[str, PruneReporter]]:
    """The batch as one plan (a cell per trial) and the pruning hook of each cell, if the search prunes."""
    cells, runs, hooks = [], [], {}
    for trial in asked:
        variant = spec.variants[trial.variant]
        cell, label, config = trial_cell(spec, variant, trial.number, trial.params, registry)
        specs = [RunSpec(run_id(cell, seed), cell, label, seed, config) for seed in spec.tune_seed_list]
        trial.run_ids = [s.run_id for s in specs]
        cells.append((cell, label, config))
        runs += specs
        if spec.pruner != "none":
            hooks[cell] = PruneReporter(url, variant.label, trial.trial_id, spec.pruner, spec.objective)
    return Plan(plan.path, plan.name, {}, cells, runs), hooks


def tell(spec: SearchSpec, study: Any, trial: Trial, results: Results) -> None:
    """Tell Optuna how the trial ended: its objective (mean over tuning seeds), pruned, or failed."""
    runs = results.runs.set_index("run_id") if len(results.runs) else None
    status = [runs.at[r, "status"] if runs is not None and r in runs.index else "missing" for r in trial.run_ids]
    errors = [str(runs.at[r, "error"]) if runs is not None and r in runs.index else "" for r in trial.run_ids]
    if any(PRUNED in e for e in errors):
        study.tell(trial.number, state=TrialState.PRUNED)
        return
    if any(s != "ok" for s in status):  # failed or diverged: recorded failed, the study goes on
        study.tell(trial.number, state=TrialState.FAIL)
        return
    values = [run_objective(results.evals[results.evals.run_id == r], spec.objective) for r in trial.run_ids]
    value = float(sum(values) / len(values))
    if not math.isfinite(value):
        study.tell(trial.number, state=TrialState.FAIL)
    else:
        study.tell(trial.number, value)


def best_trial(study: Any) -> Any | None:
    """The complete trial with the highest mean objective over the tuning seeds (the first on a tie); None if none."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def test_entries(spec: SearchSpec, opened: list[Any], registry: Any) -> list[dict[str, Any]]:
    """Each variant's test-phase cells: its best config (and its default one), on the test seeds."""
    entries = []
    for variant, study in zip(spec.variants, opened):
        best = best_trial(study)
        kinds = [("tuned", best.number, dict(best.params), best.value)] if best is not None else []
        if spec.test_default:
            kinds.append(("default", None, spec.default_params(variant, registry), None))
        for kind, number, params, tune_value in kinds:
            config = spec.config(variant, params if kind == "tuned" else {}, spec.test_seed_list, registry)
            cell = f"{config.cell_id()}-{kind}"
            entries.append({
                "variant": variant.label, "kind": kind, "trial": number, "params": params, "tune_objective": tune_value,
                "cell": cell, "label": f"{variant.label} ({kind})", "config": config,
                "seeds": list(spec.test_seed_list), "run_ids": [run_id(cell, s) for s in spec.test_seed_list],
            })  # fmt: skip
    return entries


def test_plan(plan: Plan, entries: list[dict[str, Any]]) -> Plan:
    """The test phase (:func:`test_entries`) as one plan."""
    cells = [(e["cell"], e["label"], e["config"]) for e in entries]
    runs = [
        RunSpec(r, e["cell"], e["label"], s, e["config"]) for e in entries for r, s in zip(e["run_ids"], e["seeds"])
    ]
    return Plan(plan.path, plan.name, {}, cells, runs)


def export(
    experiment_dir: Path, spec: SearchSpec, opened: list[Any], registry: Any, test: list[dict[str, Any]]
) -> list[str]:
    """Write ``search/trials.json`` from the studies (see :mod:`dqnbench.search.trials`); the tuning run ids."""
    rows, run_ids = [], []
    for variant, study in zip(spec.variants, opened):
        for row in studies.trial_rows(study):
            cell = trial_cell(spec, variant, row["trial"], row["params"], registry)[0]
            ids = [run_id(cell, s) for s in spec.tune_seed_list]
            run_ids += ids
            state = "failed" if row["state"] == "fail" else row["state"]
            rows.append({"variant": variant.label, "trial": row["trial"], "params": row["params"],
                         "objective": row["value"], "state": state, "seeds": list(spec.tune_seed_list),
                         "run_ids": ids})  # fmt: skip
    space = {p.key: {"log": p.log, "categorical": p.choices is not None} for p in spec.space}
    index = {
        "keys": spec.keys, "space": space, "objective": spec.objective, "trials_per_variant": spec.trials,
        "variants": [v.label for v in spec.variants], "trials": rows,
        "test": [{k: v for k, v in e.items() if k != "config"} for e in test],
    }  # fmt: skip
    write_index(experiment_dir, index)
    return run_ids


class SearchProgress:
    """One line per batch: trials done / total and the best objective so far per variant, and an ETA.

    The ETA extrapolates this session's wall time per trial to the trials left and
    to the test phase (a run per test seed, tuned and default, per variant).
    """

    def __init__(self, spec: SearchSpec, opened: list[Any], stream: TextIO) -> None:
        self.spec, self.opened, self.stream = spec, opened, stream
        self.started = time.perf_counter()
        self.ran = 0

    def batch_done(self, trials: int) -> None:
        self.ran += trials
        total = self.spec.trials * len(self.opened)
        done = sum(
            len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
            for s in self.opened
        )
        parts = []
        for variant, study in zip(self.spec.variants, self.opened):
            best = best_trial(study)
            n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))
            text = f"best {best.value:.1f} (trial {best.number})" if best is not None else "no complete trial yet"
            parts.append(f"{variant.label}: {n}/{self.spec.trials}, {text}")
        per_trial = (time.perf_counter() - self.started) / max(1, self.ran)
        test_runs = len(self.opened) * self.spec.test_seeds * (2 if self.spec.test_default else 1)
        eta = per_trial * (total - done) + per_trial / self.spec.tune_seeds * test_runs
        print(f"search: {done}/{total} trials; " + "; ".join(parts) + f"; ETA {_clock(eta)} (test phase included)",
              file=self.stream, flush=True)  # fmt: skip


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"
