"""What runs in a worker: one task (a run, or a lock-step group), its components built, trained, recorded.

:func:`execute_task` is what executors call. It never raises for a run's own
failure: a component that raises, breaks its contract or diverges gives a run
record with status ``failed`` or ``diverged``, naming the component and its
distribution, and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import platform
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dqnbench.agent.checkpoint import Checkpoint
from dqnbench.agent.loop import Components, Diverged, MemberAgent, TrainLog, train_runs
from dqnbench.config.grid import RunSpec
from dqnbench.config.schema import RunConfig
from dqnbench.plugin import host as plugin_host
from dqnbench.plugin.checks import ContractError
from dqnbench.plugin.host import ENTRY_POINT_GROUP
from dqnbench.plugin.legacy_replay import bind_replay
from dqnbench.plugin.members import declared
from dqnbench.plugin.registry import RUN_KINDS, Component, Registry, load_registry
from dqnbench.run.fusion import member_values
from dqnbench.run.progress import write_progress
from dqnbench.run.results import RunOutput
from dqnbench.run.tracking import task_watch
from dqnbench.version import __version__


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
    #: a fused group: members of several cells, each with its own member-wise params (:mod:`dqnbench.run.fusion`)
    fused: bool = False
    #: directory of its runs' live files, and of their TensorBoard event files (see :mod:`dqnbench.run.tracking`)
    live_dir: str | None = None
    tensorboard_dir: str | None = None
    #: called after each evaluation during training (a search's pruning, :mod:`dqnbench.search.prune`); None: none
    on_eval: Any = None

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
        with single_thread(), task_watch(specs, records, task.live_dir, task.tensorboard_dir) as watch:
            report = (
                None
                if task.progress_file is None
                else functools.partial(_report_progress, task.progress_file, len(specs))
            )
            configs = [spec.config for spec in specs]
            components, fused = bind_fused(configs, chosen) if task.fused else (bind_components(config, chosen), None)
            logs = train_runs(
                config, seeds, components, stacked=task.stacked, progress=report, checkpoint=task_checkpoint(task),
                fused=fused, watch=watch, on_eval=task.on_eval,
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
    pruned = getattr(task.on_eval, "pruned", {})  # fused members whose trial a search pruned (they left the group)
    for k, (spec, record, log) in enumerate(zip(specs, records, logs)):
        if k in pruned:
            record.update(status="failed", error=f"TrialPruned: {pruned[k]}", wall_s=wall)
            outputs.append(RunOutput(record))
            continue
        diverged = None
        if task.stacked:
            record["lockstep"] = {"members": len(specs), "seeds": seeds}
        if task.fused:
            record["lockstep"]["fused"] = [s.run_id for s in specs]
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
        learn_path=log.learn_path,
        calibration=log.calibration,
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
    """Bind each factory to its resolved grid params (the replay keeping how it takes part in lock-step)."""
    return Components(
        network=bind_network(config, chosen),
        replay=bind_replay(chosen["replay"].factory, config.replay.params),
        exploration=functools.partial(chosen["exploration"].factory, **config.exploration.params),
        learner=functools.partial(chosen["learner"].factory, **config.learner.params),
        optimizer=functools.partial(chosen["optimizer"].factory, **config.optimizer.params),
        env=bind_env(chosen["env"].factory, config.env.params),
    )


def bind_fused(configs: list[RunConfig], chosen: dict[str, Component]) -> tuple[Components, MemberAgent]:
    """A fused group's components, each bound to its member-wise params per member, and the loop's own values."""
    values = member_values(configs, chosen)
    lr = values["optimizer"].pop("lr", configs[0].agent.lr)  # the optimizer's and the replay's positional args
    gamma = values["replay"].pop("gamma", configs[0].agent.gamma)
    fused_configs = {}
    for kind, params in values.items():
        if kind != "agent" and params:
            section = getattr(configs[0], kind)
            fused_configs[kind] = dataclasses.replace(section, params={**section.params, **params})
    config = dataclasses.replace(configs[0], **fused_configs)
    components = bind_components(config, chosen)
    agent = values["agent"]
    members = MemberAgent(
        lr=lr,
        gamma=gamma,
        target_update=agent["target_update"],
        max_grad_norm=agent["max_grad_norm"],
        learning_starts=agent["learning_starts"] if declared(chosen["optimizer"].factory) else None,
    )
    return components, members


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
