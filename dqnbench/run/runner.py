"""Running a grid: plan, skip what is finished, dispatch, write, summarise.

The runner is the only writer of results. Each run is executed by
:func:`execute_task` — in this process or a worker, depending on the executor —
which never raises for a run's own failure: a component that raises, breaks
its contract or diverges gives a run record with status ``failed`` or
``diverged``, naming the component and its distribution, and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import math
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import gymnasium as gym
import numpy as np
import torch

from dqnbench.agent.checkpoint import Checkpoint
from dqnbench.agent.envs import env_spaces, register_namespace
from dqnbench.agent.loop import Components, Diverged, TrainLog, train_runs
from dqnbench.agent.nets import network_problem, probe_observations, vmap_problem
from dqnbench.config.grid import Plan, RunSpec, load_grid
from dqnbench.config.schema import RunConfig
from dqnbench.errors import DqnbenchError, GridError, ResultsError
from dqnbench.plugin import host as plugin_host
from dqnbench.plugin.checks import ContractError
from dqnbench.plugin.contracts import Executor
from dqnbench.plugin.host import ENTRY_POINT_GROUP
from dqnbench.plugin.registry import Component, Registry, load_registry
from dqnbench.run.groups import executor_slots, lockstep_groups, split_notes
from dqnbench.run.lock import experiment_lock
from dqnbench.run.progress import PROGRESS_DIR, RunProgress, print_summary, write_progress
from dqnbench.run.results import (
    Results,
    RunOutput,
    clean_partial_writes,
    finished_runs,
    load_results,
    write_plan,
    write_run,
)
from dqnbench.version import __version__

DEFAULT_EXECUTOR = "process"
#: the component kinds a run is built from (the executor dispatches runs and is not one of them)
RUN_KINDS = ("network", "replay", "exploration", "env", "learner", "optimizer")
#: statuses that count as finished: a rerun skips them
FINISHED = ("ok", "diverged")
#: the directory, under a grid's results, of running tasks' mid-run checkpoints (one per task, its latest)
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class ModuleRef:
    """A plugin module named by its import path, so tasks pickle across processes."""

    name: str


@dataclass(frozen=True)
class RunTask:
    """What a worker needs: one run, or (``stacked``) one cell's seeds trained in lock-step."""

    specs: tuple[RunSpec, ...]
    plugins: tuple[Any, ...] = ()
    load_entrypoints: bool = True
    stacked: bool = False
    #: file the worker writes its env steps done to (see :mod:`dqnbench.run.progress`); None: no report
    progress_file: str | None = None
    #: directory of the task's mid-run checkpoint (see :mod:`dqnbench.agent.checkpoint`); None: no checkpoints
    checkpoint_dir: str | None = None

    @property
    def key(self) -> str:
        """The task's name among a grid's tasks (its first run's id)."""
        return self.specs[0].run_id

    @property
    def timeout_s(self) -> float | None:
        """``experiment.timeout_s`` of the task (one run, or a lock-step cell as a whole); None: no limit.

        Executors read it by this name (see :mod:`dqnbench.builtin.executors`).
        """
        return self.specs[0].config.experiment.timeout_s or None


def prepare(
    grid: str | os.PathLike,
    plugins: Sequence[Any] = (),
    load_entrypoints: bool = True,
    *,
    strict: bool = False,
    stream: TextIO | None = None,
) -> tuple[Plan, Registry]:
    """Load the registry and a validated plan, building each cell's components once before anything runs.

    A cell that can never learn (see :func:`never_learns`) gets a one-line
    warning on ``stream`` (default stderr); ``strict`` makes it a grid error.
    """
    registry = load_registry(load_entrypoints, tuple(plugins))
    plan = load_grid(grid, registry)
    for _, label, config in plan.cells:
        check_cell(config, registry, plan.path)
        problems = never_learns(config)
        if problems and strict:
            key, problem = problems[0]
            raise GridError(plan.path, key, f"cell {label!r}: {problem} (an error under --strict)")
        if problems:
            text = "; ".join(problem for _, problem in problems)
            print(f"dqnbench: warning: cell {label!r}: {text}", file=stream or sys.stderr)
    for device in sorted({config.experiment.device for _, _, config in plan.cells}):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GridError(plan.path, "experiment.device", f'"{device}" asked for, but CUDA is not available here')
    return plan, registry


def check_cell(config: RunConfig, registry: Registry, path: Path) -> None:
    """User errors a cell's components make together, found before anything runs."""
    chosen = choose(config, registry)
    for kind in ("env", "learner", "network", "replay", "exploration", "optimizer"):
        check_required_params(kind, chosen[kind], getattr(config, kind).params, path)
    obs, n_actions = check_env(config.experiment.env, chosen["env"], _frozen(config.env.params), path)
    try:
        learner = chosen["learner"].factory(n_actions, **config.learner.params)
        outputs = learner.outputs
    except Exception as exc:
        # "v_min must be below v_max": the key is the param the message starts with, where it names one
        first = str(exc).split(" ", 1)[0]
        key = f"learner.{first}" if first in config.learner.params else "learner"
        raise GridError(
            path, key, f"{chosen['learner'].describe()} could not be built: {type(exc).__name__}: {exc}"
        ) from None
    if outputs != 1 and not chosen["network"].accepts("outputs"):
        raise GridError(
            path,
            "network.name",
            f"{chosen['learner'].describe()} needs {outputs} outputs per action, but {chosen['network'].describe()} "
            "cannot give several (its factory takes no `outputs` param)",
        )
    network = check_network_builds(config, chosen, obs, n_actions, outputs, path)
    built = check_components_build(config, chosen, obs, n_actions, network, path)
    check_images_are_read(config, chosen, obs, {"network": network, "replay": built["replay"]}, path)
    check_replay_memory(config, obs, path)


def check_images_are_read(
    config: RunConfig, chosen: dict[str, Component], obs: Any, built: dict[str, Any], path: Path
) -> None:
    """Observations other than float vectors (MinAtar's bools, Atari's uint8 frames) must fit the network and replay.

    DESIGN.md promises v1 plugins (``obs_dim`` a flat size, float32 ``(B, obs_dim)``
    inputs) only on vector observations. On images such a network fails at its
    first forward and such a replay at its first ``add``, in every run of the
    cell: that pairing is found here, on the pre-flight's own network and replay
    (``built``; None where a plugin bug left none), and refused before anything
    runs. On float vectors a failure stays a plugin bug that the cell's runs report.
    """
    if len(obs.shape) == 1 and obs.dtype == np.float32:
        return
    probe = probe_observations(obs, (2,))
    # a transition as an env gives it: with a frame stack, next_obs is obs slid by one new frame
    after = torch.cat([probe[0][1:], probe[1][-1:]]) if obs.frames > 1 else probe[1]
    uses = {
        "network": lambda network: network(probe),
        "replay": lambda replay: replay.add(probe[0].numpy(), 0, 0.0, after.numpy(), False),
    }
    for kind, use in uses.items():
        if built[kind] is None:
            continue
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                use(built[kind])
        except Exception as exc:  # noqa: BLE001 - whatever the component objects to
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = "a conv network (minatar_cnn, nature_cnn)" if kind == "network" else "a built-in replay"
            raise GridError(
                path,
                f"{kind}.name",
                f"{chosen[kind].describe()} cannot take {config.experiment.env}'s observations "
                f"{tuple(obs.shape)} {obs.dtype.name} ({type(exc).__name__}: {first}); components written "
                f"for float vectors (DESIGN.md's v1 table) need them converted, or choose {hint}",
            ) from None


#: the replay capacity the pre-flight build uses: enough for a factory's own checks, no real memory
CHECK_CAPACITY = 1024


def check_components_build(
    config: RunConfig, chosen: dict[str, Component], obs: Any, n_actions: int, network: Any, path: Path
) -> dict[str, Any]:
    """Build the cell's replay (small), exploration and optimizer once, so a bad param stops the plan; what was built.

    The factory contract's user errors (DqnbenchError, ValueError) name their
    key where the message starts with it; any other exception is blamed on a
    grid param only where the factory's default for it builds (see :func:`_blame_param`);
    else it is a plugin bug that the cell's runs report, and that kind maps to None.
    """
    params = [torch.nn.Parameter(torch.zeros(1))] if network is None else list(network.parameters())
    builds = {
        "replay": lambda p: chosen["replay"].factory(
            min(config.replay.capacity, CHECK_CAPACITY), obs, config.agent.gamma, **p
        ),
        "exploration": lambda p: chosen["exploration"].factory(n_actions, config.experiment.total_steps, **p),
        "optimizer": lambda p: chosen["optimizer"].factory(params, config.agent.lr, **p),
    }
    built: dict[str, Any] = dict.fromkeys(builds)
    for kind, build in builds.items():
        grid_params = getattr(config, kind).params
        try:
            with torch.random.fork_rng(devices=[]):
                built[kind] = build(grid_params)
        except (DqnbenchError, ValueError) as exc:
            first = str(exc).split(" ", 1)[0]
            if first not in grid_params:  # "could not convert string to float: 'x'": which param, if one
                _blame_param(kind, grid_params, chosen[kind], build, exc, path)
            key = f"{kind}.{first}" if first in grid_params else f"{kind}.name"
            raise GridError(path, key, f"{chosen[kind].describe()} could not be built: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a wrong param type, or a plugin bug (its runs name it)
            _blame_param(kind, grid_params, chosen[kind], build, exc, path)
    return built


def _blame_param(
    kind: str, params: dict[str, Any], component: Component, build: Any, exc: BaseException, path: Path
) -> None:
    """A factory raised something other than a user error: is one grid param the cause?

    ``hidden = 64`` where a list belongs makes ``mlp`` raise ``TypeError: 'int'
    object is not iterable``. If putting back the factory's own default for
    one param makes the build succeed, that param is the user's error (a grid
    error naming component, key and value); otherwise the factory itself is
    broken, and its runs fail naming it.
    """
    try:
        signature = inspect.signature(component.factory).parameters
    except (TypeError, ValueError):
        return
    for key, value in params.items():
        default = signature[key].default if key in signature else inspect.Parameter.empty
        if default is inspect.Parameter.empty or _plain(default) == _plain(value):
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                build({**params, key: default})
        except Exception:  # noqa: BLE001 - not this param
            continue
        raise GridError(
            path,
            f"{kind}.{key}",
            f"{component.describe()} cannot be built with {key} = {json.dumps(value)}: {type(exc).__name__}: {exc}",
        ) from None


def _plain(value: Any) -> Any:
    """Tuples as lists, as grid params hold them."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_required_params(kind: str, component: Component, params: Mapping[str, Any], path: Path) -> None:
    """A factory param without a default that the grid does not set is a grid error naming it, before any run."""
    missing = component.missing_params(params)
    if missing:
        keys = ", ".join(f"{kind}.{name}" for name in missing)
        raise GridError(
            path,
            f"{kind}.{missing[0]}",
            f"{component.describe()} needs {keys} (no default in its factory): set it in [{kind}] or "
            f"[{kind}.{component.name}]",
        )


def never_learns(config: RunConfig) -> list[tuple[str, str]]:
    """``(key, problem)`` for each reason a cell's runs can never learn (or never evaluate, or never update the target).

    Mirrors the loop: a learning phase runs at env step ``s`` (0-based) once
    ``s + 1 >= learning_starts``, the replay holds ``batch_size`` transitions
    and ``s % train_every == 0``; the target net is copied every
    ``target_update`` learn steps.
    """
    exp, agent = config.experiment, config.agent
    problems = []
    if agent.learning_starts >= exp.total_steps:
        problems.append((
            "agent.learning_starts",
            f"agent.learning_starts = {agent.learning_starts} >= experiment.total_steps = {exp.total_steps} "
            "(it never learns)",
        ))  # fmt: skip
    if agent.batch_size > config.replay.capacity:
        problems.append((
            "agent.batch_size",
            f"agent.batch_size = {agent.batch_size} > replay.capacity = {config.replay.capacity} (it never learns)",
        ))  # fmt: skip
    if exp.eval_every > exp.total_steps:
        problems.append((
            "experiment.eval_every",
            f"experiment.eval_every = {exp.eval_every} > experiment.total_steps = {exp.total_steps} "
            "(it is evaluated only at the end)",
        ))  # fmt: skip
    if not problems:
        first = max(agent.learning_starts, agent.batch_size) - 1
        first += -first % agent.train_every  # the first learning phase's step
        learn_steps = max(0, -(-(exp.total_steps - first) // agent.train_every)) * agent.gradient_steps
        if agent.target_update > learn_steps:
            problems.append((
                "agent.target_update",
                f"agent.target_update = {agent.target_update} > the {learn_steps} learn steps of a run "
                "(the target net is never updated)",
            ))  # fmt: skip
    return problems


def check_replay_memory(config: RunConfig, obs: Any, path: Path) -> None:
    """A built-in replay (of all a lock-step cell's members) that cannot fit in available memory: a grid error.

    Checked again when the replay is built, in whichever process trains it.
    """
    from dqnbench.builtin.replay_memory import builtin_replay_bytes, check_replay_fits

    seeds = len(config.experiment.seeds)
    members = seeds if config.experiment.lockstep and seeds > 1 else None
    replay = config.replay
    needed = builtin_replay_bytes(replay.name, replay.params, replay.capacity, obs, members)
    if needed is None:
        return
    try:
        check_replay_fits(needed, replay.capacity, obs, members)
    except DqnbenchError as exc:
        raise GridError(path, "replay.capacity", str(exc)) from None


def check_network_builds(
    config: RunConfig, chosen: dict[str, Component], obs: Any, n_actions: int, outputs: int, path: Path
) -> Any:
    """A network factory's user error (observations it does not take, a bad param) as a grid error; the network.

    Built once per cell, drawing nothing from the torch RNG. The factory
    contract's user errors (DqnbenchError, ValueError) stop the plan, and so
    does a param of the wrong type (see :func:`_blame_param`); anything else is
    a plugin bug that its runs report (and name): None.
    """
    extra = {"outputs": outputs} if outputs != 1 else {}
    try:
        with torch.random.fork_rng(devices=[]):
            return bind_network(config, chosen, outputs)(obs, n_actions)
    except (DqnbenchError, ValueError) as exc:
        first = str(exc).split(" ", 1)[0]
        key = f"network.{first}" if first in config.network.params else "network.name"
        raise GridError(
            path, key, f"{chosen['network'].describe()} cannot be built for {config.experiment.env}: {exc}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a wrong param type, or a plugin bug: its runs fail and name it
        build = lambda p: chosen["network"].factory(obs, n_actions, **p, **extra)  # noqa: E731
        _blame_param("network", config.network.params, chosen["network"], build, exc, path)
        return None


@functools.cache
def check_env(env_id: str, component: Component, params: tuple[tuple[str, Any], ...], path: Path) -> tuple[Any, int]:
    """Make the env once with its component: unknown ids and non-discrete actions are grid errors; its spaces."""
    try:
        register_namespace(env_id)  # as make_envs does in the workers: plugin envs get MinAtar/ALE ids too
        env = component.factory(env_id, **dict(params))
    except DqnbenchError as exc:
        # "frame_stack must be an int >= 1": the key is the env param the message starts with, where it names one
        first = str(exc).split(" ", 1)[0]
        raise GridError(path, f"env.{first}" if first in dict(params) else "experiment.env", str(exc)) from None
    except gym.error.Error as exc:
        import difflib

        close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise GridError(
            path,
            "experiment.env",
            f"unknown or unavailable gymnasium environment {env_id!r} ({type(exc).__name__}: {exc}){hint}",
        ) from None
    except Exception as exc:
        raise GridError(
            path, "experiment.env", f"{component.describe()} cannot create {env_id!r}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        return env_spaces(env, env_id)
    except DqnbenchError as exc:
        raise GridError(path, "experiment.env", str(exc)) from None
    finally:
        env.close()


def _frozen(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Params as a hashable key (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))


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
    :param plugins: extra in-process plugins (importable modules or picklable
        objects with hookimpls) to register besides the installed ones.
    :param strict: a cell that can never learn (``learning_starts >= total_steps``…)
        is a :class:`GridError` instead of a one-line warning on stderr (``--strict``).
    """
    plan, registry = prepare(grid, plugins, load_entrypoints, strict=strict)
    results = run_plan(
        plan,
        registry,
        out,
        executor=executor,
        workers=workers,
        executor_options=executor_options,
        lockstep=lockstep,
        plugins=plugins,
        load_entrypoints=load_entrypoints,
        quiet=quiet,
        stream=stream,
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
) -> Results:
    """Execute a prepared plan (see :func:`run_grid`, which prepares it from a grid file)."""
    run_executor = registry.get("executor", executor)
    stream = stream or sys.stdout
    experiment_dir = Path(out) / plan.name
    try:
        experiment_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot create results directory {experiment_dir}: {exc}") from exc

    with experiment_lock(experiment_dir):
        clean_partial_writes(experiment_dir)
        write_plan(experiment_dir, plan.path, [spec.run_id for spec in plan.runs])
        pool = make_executor(run_executor, workers, executor_options or {})
        cells = lockstep_cells(plan, registry, stream) if lockstep else set()
        _execute(plan, experiment_dir, pool, plugins, load_entrypoints, quiet, stream, cells)
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
) -> None:
    """Dispatch the plan's unfinished runs and write each result as it arrives."""
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
    groups = lockstep_groups(plan, lockstep_cells, executor_slots(pool))
    for note in split_notes(plan, groups):
        print(note, file=stream, flush=True)
    tasks = [
        dataclasses.replace(
            task,
            progress_file=str(progress_dir / task.key),
            checkpoint_dir=str(experiment_dir / CHECKPOINTS_DIR / task.key),
        )
        for task in make_tasks(todo, refs, load_entrypoints, groups)
    ]
    wanted = {spec.run_id for spec in todo}
    total_steps = sum(
        spec.config.experiment.total_steps for task in tasks for spec in task.specs if spec.run_id in wanted
    )
    progress = RunProgress(
        len(todo), skipped, live=not quiet and stream.isatty(), stream=stream, total_steps=total_steps,
        directory=progress_dir,
    )  # fmt: skip
    try:
        for task, outcome in pool.map_unordered(execute_task, tasks):
            progress.task_finished(
                task.key, sum(spec.config.experiment.total_steps for spec in task.specs if spec.run_id in wanted)
            )
            if isinstance(outcome, BaseException):
                outcome = lost_outputs(task, outcome)
            for output in outcome:
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
    if not callable(getattr(chosen["replay"].factory, "lockstep", None)):
        return f"{chosen['replay'].describe()} does not declare lock-step support"
    for kind in ("exploration", "learner", "optimizer"):
        if getattr(chosen[kind].factory, "lockstep", None) is not True:
            return f"{chosen[kind].describe()} does not declare lock-step support"
    obs, n_actions = check_env(config.experiment.env, chosen["env"], _frozen(config.env.params), path)
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


def make_tasks(
    todo: list[RunSpec],
    plugins: tuple[Any, ...],
    load_entrypoints: bool,
    groups: dict[str, list[tuple[RunSpec, ...]]],
) -> list[RunTask]:
    """One task per unfinished run, except lock-step cells: one task per lock-step group with an unfinished seed.

    ``groups`` are the lock-step cells' groups (:func:`~dqnbench.run.groups.lockstep_groups`:
    one per cell, unless there are workers to spare). A lock-step member's result
    depends on the seeds of its group, so a group with any unfinished seed reruns
    as a whole and only the missing members are written: an interrupted grid
    resumes to exactly the uninterrupted results.
    """
    unfinished = {spec.run_id for spec in todo}
    tasks = [RunTask((spec,), plugins, load_entrypoints) for spec in todo if spec.cell not in groups]
    for cell_groups in groups.values():
        for group in cell_groups:
            if any(spec.run_id in unfinished for spec in group):
                tasks.append(RunTask(group, plugins, load_entrypoints, stacked=len(group) > 1))
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


def plan_failed(results: Results, plan: Plan) -> list[str]:
    """Run ids of the plan that did not finish with status ok."""
    status = dict(zip(results.runs.run_id, results.runs.status)) if len(results.runs) else {}
    return [spec.run_id for spec in plan.runs if status.get(spec.run_id) != "ok"]


def cell_summary(results: Results, plan: Plan) -> list[dict[str, Any]]:
    """One row per cell of the plan: ok / failed counts, final return mean and std, steps/s."""
    runs = results.runs.set_index("run_id") if len(results.runs) else None
    rows = []
    for cell, label, _ in plan.cells:
        ids = [s.run_id for s in plan.runs if s.cell == cell]
        status = [runs.at[i, "status"] if runs is not None and i in runs.index else "missing" for i in ids]
        ok = [i for i, s in zip(ids, status) if s == "ok"]
        returns = np.array([runs.at[i, "final_return"] for i in ok], dtype=float)
        speed = np.array([runs.at[i, "steps_per_s"] for i in ok], dtype=float)
        rows.append(
            {
                "cell": cell,
                "label": label,
                "ok": len(ok),
                "failed": len(ids) - len(ok),
                "mean": float(returns.mean()) if len(ok) else math.nan,
                "std": float(returns.std(ddof=1)) if len(ok) > 1 else math.nan,
                "steps_per_s": float(speed.mean()) if len(ok) else math.nan,
            }
        )
    return rows


# --- worker side -------------------------------------------------------------------------------


def execute_task(task: RunTask) -> list[RunOutput]:
    """What executors call: train one run, or one cell's seeds in lock-step; every run gets its own record.

    A run's own failure (a component that raises, breaks its contract or
    diverges) becomes a record naming the component, never a raise. With a
    checkpoint directory, training saves checkpoints there and resumes from
    one (:func:`task_checkpoint`); each record then carries ``resumed_at``.
    """
    specs = task.specs
    config, seeds = specs[0].config, [spec.seed for spec in specs]
    started = time.time()
    try:
        chosen = choose(config, _registry(task.plugins, task.load_entrypoints))
    except Exception as exc:
        return [failed_output(s, f"{type(exc).__name__}: {exc}", traceback.format_exc(), started) for s in specs]
    records = [base_record(spec, chosen, started) for spec in specs]
    try:
        with single_thread():
            report = (
                None
                if task.progress_file is None
                else functools.partial(_report_progress, task.progress_file, len(specs))
            )
            logs = train_runs(
                config, seeds, bind_components(config, chosen), stacked=task.stacked, progress=report,
                checkpoint=task_checkpoint(task),
            )  # fmt: skip
    except Diverged as exc:  # a single run stops at its first non-finite loss
        (record,) = records
        record.update(diverged_step=exc.step, resumed_at=exc.resumed_at, traceback=traceback.format_exc())
        return [finish_record(specs[0], record, None, chosen, time.time() - started, diverged=exc)]
    except Exception as exc:
        error, tb, wall = blame(exc, chosen), traceback.format_exc(), time.time() - started
        for record in records:
            record.update(status="failed", error=error, traceback=tb, wall_s=wall / len(specs))
        return [RunOutput(record) for record in records]
    wall = (time.time() - started) / len(specs)  # each member's share of the group's wall time
    outputs = []
    for spec, record, log in zip(specs, records, logs):
        diverged = None
        if task.stacked:
            record["lockstep"] = {"members": len(specs), "seeds": seeds}
        record["resumed_at"] = log.resumed_at
        if log.diverged_step is not None:
            record["diverged_step"] = log.diverged_step
            diverged = Diverged(log.diverged_step, log.diverged_loss)
        outputs.append(finish_record(spec, record, log, chosen, wall, diverged=diverged))
    return outputs


def task_checkpoint(task: RunTask) -> Checkpoint | None:
    """Where the task keeps its mid-run checkpoint, and how often: None without a directory or with ``every = 0``.

    A lock-step cell is one task, so its members checkpoint as one.
    """
    directory = task.checkpoint_dir
    every = task.specs[0].config.experiment.checkpoint_every
    return Checkpoint(Path(directory), every) if directory and every > 0 else None


def _report_progress(path: str, rows: int, steps: int) -> None:
    write_progress(path, steps * rows)


def finish_record(
    spec: RunSpec,
    record: dict[str, Any],
    log: TrainLog | None,
    chosen: dict[str, Component],
    wall_s: float,
    diverged: Diverged | None = None,
) -> RunOutput:
    """The run's output once training ended: ok, or diverged (with the step)."""
    record["wall_s"] = wall_s
    if diverged is not None:
        record.update(status="diverged", error=f"{diverged} ({_describe(chosen['network'])})")
        if log is None:
            return RunOutput(record)
    else:
        record["status"] = "ok"
    record.update(
        obs_dim=log.obs_dim,
        obs_shape=list(log.obs_shape),
        obs_dtype=log.obs_dtype,
        n_actions=log.n_actions,
        train_s=log.train_s,
        steps_per_s=spec.config.experiment.total_steps / max(log.train_s, 1e-9),
        final_return=log.final_return,
    )
    return RunOutput(
        record, log.steps_table(), {k: np.asarray(v) for k, v in log.episodes.items()}, dict(log.evals), log.weights
    )


def choose(config: RunConfig, registry: Registry) -> dict[str, Component]:
    """The registered component of each kind the config names."""
    return {kind: registry.get(kind, getattr(config, kind).name) for kind in RUN_KINDS}


def bind_network(config: RunConfig, chosen: dict[str, Component], outputs: int = 1) -> Any:
    """The network factory with its grid params (and ``outputs`` when the learner needs several)."""
    extra = {"outputs": outputs} if outputs != 1 else {}
    return functools.partial(chosen["network"].factory, **config.network.params, **extra)


def bind_components(config: RunConfig, chosen: dict[str, Component]) -> Components:
    """Bind each factory to its resolved grid params (the replay's members-factory too, where it has one)."""
    members_replay = getattr(chosen["replay"].factory, "lockstep", None)
    return Components(
        network=bind_network(config, chosen),
        replay=functools.partial(chosen["replay"].factory, **config.replay.params),
        exploration=functools.partial(chosen["exploration"].factory, **config.exploration.params),
        learner=functools.partial(chosen["learner"].factory, **config.learner.params),
        optimizer=functools.partial(chosen["optimizer"].factory, **config.optimizer.params),
        env=bind_env(chosen["env"].factory, config.env.params),
        members_replay=functools.partial(members_replay, **config.replay.params) if callable(members_replay) else None,
    )


def bind_env(factory: Any, params: dict[str, Any]) -> Any:
    """The env factory with its params, keeping its optional ``vector`` form (see ``dqnbench_envs``)."""
    bound = functools.partial(factory, **params)
    vector = getattr(factory, "vector", None)
    if vector is not None:
        bound.vector = functools.partial(vector, **params)
    return bound


def base_record(spec: RunSpec, chosen: dict[str, Component], started: float) -> dict[str, Any]:
    """The run record before the outcome is known: ids, config, versions."""
    env = spec.config.experiment.env
    return {
        "run_id": spec.run_id,
        "cell": spec.cell,
        "label": spec.label,
        "seed": spec.seed,
        "status": "running",
        "error": None,
        "env": env,
        "config": spec.config.to_dict(),
        "flat_config": spec.config.flat(),
        "versions": versions(chosen),
        "started_at": started,
        "host": platform.node(),
        "pid": os.getpid(),
        "wall_s": None,
        "steps_per_s": None,
        "final_return": None,
    }


def failed_output(spec: RunSpec, error: str, tb: str, started: float | None = None) -> RunOutput:
    record = {
        "run_id": spec.run_id,
        "cell": spec.cell,
        "label": spec.label,
        "seed": spec.seed,
        "status": "failed",
        "error": error,
        "traceback": tb,
        "env": spec.config.experiment.env,
        "config": spec.config.to_dict(),
        "flat_config": spec.config.flat(),
        "versions": versions({}),
        "started_at": started,
        "wall_s": (time.time() - started) if started else None,
        "steps_per_s": None,
        "final_return": None,
    }
    return RunOutput(record)


def versions(chosen: dict[str, Component]) -> dict[str, Any]:
    """Versions of dqnbench, its main dependencies and each component's distribution."""
    found: dict[str, Any] = {"dqnbench": __version__, "python": platform.python_version()}
    for dist in ("torch", "gymnasium", "numpy"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "unknown"
    found["components"] = {
        kind: {"name": c.name, "distribution": c.distribution, "version": c.version, "plugin": c.provider.plugin}
        for kind, c in chosen.items()
    }
    return found


def blame(exc: BaseException, chosen: dict[str, Component]) -> str:
    """One line naming the component (and distribution) an exception came from, if any."""
    culprit = None
    if isinstance(exc, ContractError):
        culprit = chosen.get(exc.kind)
    else:
        modules = {c.factory.__module__: c for c in chosen.values()}
        tb = exc.__traceback__
        while tb is not None:  # the deepest frame inside a component's module wins
            module = tb.tb_frame.f_globals.get("__name__")
            if module in modules:
                culprit = modules[module]
            tb = tb.tb_next
    text = f"{type(exc).__name__}: {exc}"
    return f"{_describe(culprit)} raised {text}" if culprit else text


def _describe(component: Component | None) -> str:
    return component.describe() if component else "unknown component"


_REGISTRIES: dict[tuple[Any, ...], Registry] = {}


def _registry(plugins: tuple[Any, ...], load_entrypoints: bool) -> Registry:
    """The registry a worker builds runs from, built once per process and set of plugins.

    The key includes the installed entry points, so a long-lived process (a
    notebook, the serial executor) sees plugins installed since its last run.
    """
    installed = tuple((ep.name, ep.value) for ep in plugin_host.entry_points(group=ENTRY_POINT_GROUP))
    key = (
        load_entrypoints,
        installed if load_entrypoints else (),
        *(p if isinstance(p, ModuleRef) else id(p) for p in plugins),
    )
    if key not in _REGISTRIES:
        objects = tuple(importlib.import_module(p.name) if isinstance(p, ModuleRef) else p for p in plugins)
        _REGISTRIES[key] = load_registry(load_entrypoints, objects)
    return _REGISTRIES[key]


@contextmanager
def single_thread():
    """One intra-op torch thread per run: reproducible, and parallel runs share cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
