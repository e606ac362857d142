"""Running a grid: plan the lock-step groups, skip what is finished, dispatch, write, summarise.

The runner is the only writer of results. It checks the grid first
(:mod:`dqnbench.run.preflight`), hands each task to the executor, which runs
:func:`~dqnbench.run.task.execute_task` in this process or a worker
(:mod:`dqnbench.run.task`), and writes each run's results as they arrive; a
rerun skips finished runs and resumes interrupted tasks from their checkpoints.
The names code imported from here before the split (``prepare``, ``RunTask``,
``execute_task``, ``choose``, ``bind_components``…) still import from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import numpy as np
import torch

from dqnbench.agent.nets import network_problem, probe_observations, vmap_problem
from dqnbench.config.grid import Plan, RunSpec
from dqnbench.config.schema import RunConfig
from dqnbench.errors import DqnbenchError, ResultsError
from dqnbench.plugin.contracts import Executor
from dqnbench.plugin.legacy_replay import supports_lockstep
from dqnbench.plugin.registry import Component, Registry
from dqnbench.run.eta import task_plan
from dqnbench.run.fusion import Fusion, forward_macs, fuse_problem, pools, split_floor
from dqnbench.run.groups import executor_slots, is_fused, lockstep_groups, split_notes
from dqnbench.run.live import LIVE_DIR, discard_live
from dqnbench.run.lock import experiment_lock
from dqnbench.run.preflight import cell_spaces, prepare
from dqnbench.run.preflight import check_cell as check_cell
from dqnbench.run.preflight import never_learns as never_learns
from dqnbench.run.progress import PROGRESS_DIR, RunProgress, print_summary
from dqnbench.run.results import (
    Results,
    RunOutput,
    clean_partial_writes,
    finished_runs,
    load_results,
    write_plan,
    write_run,
)
from dqnbench.run.task import ModuleRef, RunTask, bind_network, choose, execute_task, failed_output
from dqnbench.run.task import base_record as base_record
from dqnbench.run.task import bind_components as bind_components
from dqnbench.run.task import bind_fused as bind_fused
from dqnbench.run.task import single_thread as single_thread
from dqnbench.run.tracking import tensorboard_root

DEFAULT_EXECUTOR = "process"
#: statuses that count as finished: a rerun skips them
FINISHED = ("ok", "diverged")
#: the directory, under a grid's results, of running tasks' mid-run checkpoints (one per task, its latest)
CHECKPOINTS_DIR = "checkpoints"
#: kinds whose factories declare lock-step support with ``lockstep = True`` (a replay's ``lockstep`` is its
#: members-factory; a network is stacked or not by its layers; an env needs nothing)
LOCKSTEP_FLAG_KINDS = ("exploration", "learner", "optimizer")


def run_grid(
    grid: str | os.PathLike,
    out: str | os.PathLike = "results",
    *,
    executor: str = DEFAULT_EXECUTOR,
    workers: int | None = None,
    executor_options: dict[str, Any] | None = None,
    plugins: Sequence[Any] = (),
    load_entrypoints: bool = True,
    quiet: bool = False,
    stream: TextIO | None = None,
    lockstep: bool = True,
    plots: bool = True,
    strict: bool = False,
    fuse: bool = True,
    tensorboard: str | os.PathLike | None = None,
) -> Results:
    """Run every run of a grid file not yet finished under ``<out>/<name>/``; return all results.

    Same as ``dqnbench run``, plots included (``plots=False`` is ``--no-plots``).
    Finished runs (status ``ok`` or ``diverged``) are skipped; failed ones are retried.
    Raises :class:`DqnbenchError` for a bad grid; a failing run does not raise: check ``results.runs.status``.

    :param executor: a registered executor name (``serial``, ``process``, …).
    :param workers: parallel runs for the executor; ``None`` lets it decide.
    :param executor_options: extra keyword params for the executor's factory
        (e.g. ``{"address": "10.0.0.1:6379"}`` for a cluster executor).
    :param lockstep: train each cell's seeds as one batched program where its
        components support it (and ``experiment.lockstep`` is true); False
        runs every seed independently.
    :param fuse: train cells that differ only in member-wise params as one
        lock-step program (``experiment.fuse`` per cell too); False is ``--no-fuse``.
    :param plugins: extra in-process plugins (importable modules or picklable
        objects with hookimpls) to register besides the installed ones.
    :param strict: a cell that can never learn (``learning_starts >= total_steps``…)
        is a :class:`GridError` instead of a one-line warning on stderr (``--strict``).
    :param tensorboard: write TensorBoard events under this directory (``--tensorboard DIR``).
    """
    plan, registry = prepare(grid, plugins, load_entrypoints, strict=strict)
    run = run_plan
    if plan.search is not None:  # a [search]: tune every variant, then the test phase (dqnbench.search)
        from dqnbench.search.driver import run_search as run  # same arguments as run_plan
    results = run(
        plan,
        registry,
        out,
        executor=executor,
        workers=workers,
        executor_options=executor_options,
        lockstep=lockstep,
        fuse=fuse,
        plugins=plugins,
        load_entrypoints=load_entrypoints,
        quiet=quiet,
        stream=stream,
        tensorboard=tensorboard,
    )
    note_few_seeds(plan, stream or sys.stdout)
    if plots:
        write_grid_plots(results, plan, registry, stream or sys.stdout)
    return results


def note_few_seeds(plan: Plan, stream: TextIO) -> None:
    """The one-line note ``dqnbench run`` prints after a grid's summary when a cell has fewer than 5 seeds."""
    from dqnbench.analysis.stats import few_seeds_warning

    warning = few_seeds_warning(min(len(config.experiment.seeds) for _, _, config in plan.cells))
    if warning is not None:
        print(f"note: {warning}", file=stream)


def write_grid_plots(results: Results, plan: Plan, registry: Registry, stream: TextIO) -> list[Path]:
    """The plots ``dqnbench run`` writes after a grid (when a run succeeded)."""
    if not (results.runs.status == "ok").any():
        return []
    from dqnbench.analysis.plots import write_plots

    written = write_plots(results, registry=registry)
    print(f"plots: {written[-1]}", file=stream)
    return written


def run_plan(
    plan: Plan,
    registry: Registry,
    out: str | os.PathLike = "results",
    *,
    executor: str = DEFAULT_EXECUTOR,
    workers: int | None = None,
    executor_options: dict[str, Any] | None = None,
    plugins: Sequence[Any] = (),
    load_entrypoints: bool = True,
    quiet: bool = False,
    stream: TextIO | None = None,
    lockstep: bool = True,
    fuse: bool = True,
    tensorboard: str | os.PathLike | None = None,
    on_eval: Any = None,
    pool: Executor | None = None,
) -> Results:
    """Execute a prepared plan (see :func:`run_grid`, which prepares it from a grid file).

    ``on_eval(task)``, if given, returns the task's evaluation hook (``RunTask.on_eval``) or None.
    ``pool``: an executor already started (a search's, lent to each of its plans) instead of a new one.
    """
    run_executor = registry.get("executor", executor)
    stream = stream or sys.stdout
    experiment_dir = Path(out) / plan.name
    events = tensorboard_root(experiment_dir, tensorboard, any(c.experiment.tensorboard for _, _, c in plan.cells))
    try:
        experiment_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot create results directory {experiment_dir}: {exc}") from exc

    with experiment_lock(experiment_dir):
        clean_partial_writes(experiment_dir)
        write_plan(experiment_dir, plan.path, [spec.run_id for spec in plan.runs])
        pool = make_executor(run_executor, workers, executor_options or {}) if pool is None else pool
        cells = lockstep_cells(plan, registry, stream) if lockstep else set()
        fused = fusion_pools(plan, registry, cells) if fuse else None
        _execute(plan, experiment_dir, pool, plugins, load_entrypoints, quiet, stream, cells, events, fused, on_eval)
    results = load_results(experiment_dir)
    print_summary(cell_summary(results, plan), f"{plan.name}: {len(plan.runs)} runs in {experiment_dir}", stream)
    return results


def _execute(
    plan: Plan,
    experiment_dir: Path,
    pool: Executor,
    plugins: Sequence[Any],
    load_entrypoints: bool,
    quiet: bool,
    stream: TextIO,
    lockstep_cells: set[str],
    tensorboard: Path | None = None,
    fused: Fusion | None = None,
    on_eval: Any = None,
) -> None:
    """Dispatch the plan's unfinished runs and write each result as it arrives (``fused``: the lock-step pools)."""
    finished = finished_runs(experiment_dir)
    todo = [spec for spec in plan.runs if finished.get(spec.run_id, {}).get("status") not in FINISHED]
    skipped = len(plan.runs) - len(todo)
    if skipped:
        print(
            f"{skipped} of {len(plan.runs)} runs already finished in {experiment_dir}: skipping them",
            file=stream,
            flush=True,
        )
    refs = tuple(ModuleRef(p.__name__) if isinstance(p, ModuleType) else p for p in plugins)
    progress_dir = experiment_dir / PROGRESS_DIR
    shutil.rmtree(progress_dir, ignore_errors=True)
    progress_dir.mkdir(exist_ok=True)
    groups = lockstep_groups(plan, lockstep_cells, executor_slots(pool), fused)
    for note in split_notes(plan, groups):
        print(note, file=stream, flush=True)
    tasks = [
        dataclasses.replace(
            task,
            progress_file=str(progress_dir / task.key),
            checkpoint_dir=str(experiment_dir / CHECKPOINTS_DIR / task.key),
            live_dir=str(experiment_dir / LIVE_DIR),
            tensorboard_dir=str(tensorboard) if tensorboard is not None else None,
            on_eval=on_eval(task) if on_eval else None,
        )
        for task in make_tasks(todo, refs, load_entrypoints, groups)
    ]
    wanted = {spec.run_id for spec in todo}
    total_steps = sum(
        spec.config.experiment.total_steps for task in tasks for spec in task.specs if spec.run_id in wanted
    )
    progress = RunProgress(
        len(todo), skipped, live=not quiet and stream.isatty(), stream=stream, total_steps=total_steps,
        directory=progress_dir, tasks=[task_plan(task.key, task.specs) for task in tasks], lanes=executor_slots(pool),
        live_dir=experiment_dir / LIVE_DIR,
    )  # fmt: skip
    try:
        for task, outcome in pool.map_unordered(execute_task, tasks):
            progress.task_finished(
                task.key, sum(spec.config.experiment.total_steps for spec in task.specs if spec.run_id in wanted)
            )
            if isinstance(outcome, BaseException):
                outcome = lost_outputs(task, outcome)
            for output in outcome:
                discard_live(experiment_dir, output.run_id)  # its final results supersede it
                if output.run_id not in wanted:
                    continue  # a finished lock-step member, recomputed with its cell
                write_run(experiment_dir, output)
                record = output.record
                detail = (
                    f"return={record['final_return']:.1f} {record['steps_per_s']:,.0f} steps/s"
                    if record["status"] == "ok"
                    else record["error"]
                )
                spec = next(s for s in task.specs if s.run_id == output.run_id)
                progress.update(
                    spec.run_id, spec.label, spec.seed, record["status"], spec.config.experiment.total_steps, detail
                )
            # A finished task's checkpoint is spent; a failed one's is kept, so a rerun (after a timeout or a
            # lost worker) resumes from it.
            if all(o.record["status"] in FINISHED for o in outcome):
                shutil.rmtree(experiment_dir / CHECKPOINTS_DIR / task.key, ignore_errors=True)
    finally:
        progress.close()
        pool.close()
        shutil.rmtree(progress_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # live files left by an interrupted run stay (report shows them partial)
            (experiment_dir / LIVE_DIR).rmdir()


def lost_outputs(task: RunTask, outcome: BaseException) -> list[RunOutput]:
    """Failed records for each run of a task the executor yielded an exception for (timed out, worker lost…)."""
    if isinstance(outcome, TimeoutError):  # the executors' "timed out after N s"
        error = str(outcome) + (f" (lock-step cell of {len(task.specs)} seeds)" if task.stacked else "")
        error += "; raise experiment.timeout_s if the run needs longer"
    else:
        error = f"the executor lost this run: {describe_loss(outcome)}"
    tb = "".join(traceback.format_exception(outcome))
    return [failed_output(spec, error, tb) for spec in task.specs]


def describe_loss(exc: BaseException) -> str:
    """An executor's exception in one line; a Ray worker killed for memory says so plainly."""
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "OutOfMemoryError" or "OutOfMemoryError" in text.split(":", 1)[0]:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"out of memory: the worker was killed for using too much memory ({type(exc).__name__}: {first})"
    return text


def make_tasks(
    todo: list[RunSpec],
    plugins: tuple[Any, ...],
    load_entrypoints: bool,
    groups: dict[str, list[tuple[RunSpec, ...]]],
) -> list[RunTask]:
    """One task per unfinished run, except lock-step pools: one task per lock-step group with an unfinished run.

    ``groups`` are the lock-step pools' groups (:func:`~dqnbench.run.groups.lockstep_groups`:
    one per cell or fused pool, unless there are workers to spare). A lock-step
    member's result depends on its group, so a group with any unfinished run
    reruns as a whole and only the missing members are written: an interrupted
    grid resumes to exactly the uninterrupted results.
    """
    unfinished = {spec.run_id for spec in todo}
    grouped = {spec.cell for pool in groups.values() for group in pool for spec in group}
    tasks = [RunTask((spec,), plugins, load_entrypoints) for spec in todo if spec.cell not in grouped]
    for pool in groups.values():
        cells = len({spec.cell for group in pool for spec in group})
        for group in pool:
            if any(spec.run_id in unfinished for spec in group):
                stacked = len(group) > 1
                tasks.append(RunTask(group, plugins, load_entrypoints, stacked=stacked, fused=is_fused(group, cells)))
    return tasks


def make_executor(component: Component, workers: int | None, options: dict[str, Any]) -> Executor:
    """Build the executor; options it does not take, or a factory that raises, are user errors."""
    component.check_params(options)
    try:
        return component.factory(workers=workers, **options)
    except DqnbenchError:
        raise
    except Exception as exc:
        raise DqnbenchError(f"{component.describe()} could not start: {type(exc).__name__}: {exc}") from exc


def lockstep_cells(plan: Plan, registry: Registry, stream: TextIO) -> set[str]:
    """Cells whose seeds can train in lock-step; a one-line notice for each cell that cannot."""
    cells = set()
    for cell, label, config in plan.cells:
        if not config.experiment.lockstep or len(config.experiment.seeds) < 2:
            continue
        problem = lockstep_problem(config, choose(config, registry), plan.path)
        if problem is None:
            cells.add(cell)
        else:
            print(f"note: cell {label!r} runs its seeds independently, not in lock-step: {problem}", file=stream)
    return cells


def lockstep_problem(config: RunConfig, chosen: dict[str, Component], path: Path) -> str | None:
    """Why a cell cannot train in lock-step, or None (see ``docs/plugins.md`` for what each kind needs)."""
    if not supports_lockstep(chosen["replay"].factory):
        return f"{chosen['replay'].describe()} does not declare lock-step support"
    for kind in LOCKSTEP_FLAG_KINDS:
        if getattr(chosen[kind].factory, "lockstep", None) is not True:
            return f"{chosen[kind].describe()} does not declare lock-step support"
    obs, n_actions = cell_spaces(config, chosen, path)
    outputs = chosen["learner"].factory(n_actions, **config.learner.params).outputs
    network = bind_network(config, chosen, outputs)
    problem, native = network_problem(network, obs, n_actions)
    if problem:
        return f"{chosen['network'].describe()} cannot be stacked ({problem})"
    if not native:  # vmap: only where it pays, by a rule on the cell's shape (no timing: results must not flip)
        problem = vmap_problem(network, obs, n_actions, len(config.experiment.seeds))
        if problem:
            return (
                f"{chosen['network'].describe()} stacks only through vmap, and {problem} "
                "(build it from dqnbench.nn layers to stack it natively)"
            )
    return None


def fusion_pools(plan: Plan, registry: Registry, cells: set[str]) -> Fusion:
    """The lock-step ``cells`` in pools that train fused (:mod:`dqnbench.run.fusion`); compute-bound ones alone."""
    learn_macs: dict[str, int] = {}

    def fits(cell: str, config: RunConfig) -> bool:
        chosen = choose(config, registry)
        obs, n_actions = cell_spaces(config, chosen, plan.path)
        outputs = chosen["learner"].factory(n_actions, **config.learner.params).outputs
        with torch.random.fork_rng(devices=[]):
            network = bind_network(config, chosen, outputs)(obs, n_actions)
            macs = forward_macs(network, probe_observations(obs, (1,)))
        learn_macs[cell] = macs * config.agent.batch_size  # the plan's cell id (a search's test cells add a suffix)
        return fuse_problem(macs, config.agent.batch_size) is None

    found = pools(plan, cells, lambda config: choose(config, registry), fits)
    floors = {pool[0]: split_floor(learn_macs[pool[0]]) for pool in found if len(pool) > 1}
    return Fusion(found, floors)


def planned_groups(
    plan: Plan, registry: Registry, slots: int, stream: TextIO, fuse: bool = True
) -> dict[str, list[tuple[RunSpec, ...]]]:
    """The lock-step groups the runner makes of ``plan`` on ``slots`` workers (``fuse``: fused pools, as
    ``--no-fuse`` leaves out); a notice on ``stream`` for each cell that cannot train in lock-step."""
    cells = lockstep_cells(plan, registry, stream)
    return lockstep_groups(plan, cells, slots, fusion_pools(plan, registry, cells) if fuse else None)


def plan_failed(results: Results, plan: Plan) -> list[str]:
    """Run ids of the plan that did not finish with status ok."""
    status = dict(zip(results.runs.run_id, results.runs.status)) if len(results.runs) else {}
    return [spec.run_id for spec in plan.runs if status.get(spec.run_id) != "ok"]


def cell_summary(results: Results, plan: Plan) -> list[dict[str, Any]]:
    """One row per cell of the plan: ok / failed counts, final return IQM [95% CI] as ``report`` shows it, steps/s."""
    from dqnbench.analysis.report import final_return_texts

    scores = final_return_texts(results) if len(results.runs) else {}
    runs = results.runs.set_index("run_id") if len(results.runs) else None
    rows = []
    for cell, label, _ in plan.cells:
        ids = [s.run_id for s in plan.runs if s.cell == cell]
        status = [runs.at[i, "status"] if runs is not None and i in runs.index else "missing" for i in ids]
        ok = [i for i, s in zip(ids, status) if s == "ok"]
        speed = np.array([runs.at[i, "steps_per_s"] for i in ok], dtype=float)
        rows.append(
            {
                "cell": cell,
                "label": label,
                "ok": len(ok),
                "failed": len(ids) - len(ok),
                "score": scores.get(cell, "–"),
                "steps_per_s": float(speed.mean()) if len(ok) else math.nan,
            }
        )
    return rows
