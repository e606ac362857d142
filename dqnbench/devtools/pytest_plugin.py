"""dqnbench's pytest plugin: speed and learning regression tests for a component, in its own test suite.

Registered through the ``pytest11`` entry point, so installing dqnbench makes
these fixtures available to every test suite; nothing else changes (no hooks,
no options). Each fixture is a *factory*: it returns a function, so one test
can pick the component by name::

    def test_my_net_step_speed(dqnbench_step_benchmark):
        dqnbench_step_benchmark("network", "my_net", {"width": 128})

    def test_calibration(dqnbench_calibration):       # makes `dqnbench bench-compare` work on this suite
        dqnbench_calibration()

Why it is built this way, with measurements: ``docs/internals.md`` (``devtools.pytest_plugin``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dqnbench.plugin.registry import RUN_KINDS

if TYPE_CHECKING:
    from dqnbench.agent.loop import Components
    from dqnbench.config.schema import RunConfig
    from dqnbench.run.results import Results

#: the kinds of component a step or a grid can swap in
SWAPPABLE = RUN_KINDS
#: env steps of the grid behind a harness: the explorer's schedule and β annealing read it
HARNESS_TOTAL_STEPS = 20_000
#: defaults of :func:`assert_learns`, chosen so dqnbench's default agent passes them
LEARN_ENV, LEARN_SEEDS, LEARN_STEPS, LEARN_THRESHOLD = "CartPole-v1", 3, 15_000, 100.0


# --------------------------------------------------------------------------- the step harness


class StepHarness:
    """One DQN agent advanced a step at a time: the :class:`~dqnbench.agent.loop.Agent` that ``train()`` drives.

    ``train()`` runs a whole experiment in one call, which is the wrong grain for
    a benchmark of one step. The harness builds the same agent (same seeding,
    same order of RNG draws, :func:`dqnbench.agent.loop.build`) and calls the
    same act → env step → store → learn, without the per-step logging, so a
    timed :meth:`step` is one of ``train()``'s steps; a test checks that both give
    the same losses step for step.
    """

    def __init__(self, config: RunConfig, components: Components, seed: int = 0, chosen: Mapping | None = None):
        from dqnbench.agent.loop import EVAL_SEED_OFFSET, build

        self.config, self.seed, self.chosen = config, seed, dict(chosen or {})
        self.agent_config = config.agent
        self.agent, self.envs, self.eval_envs = build(config, [seed], components, stacked=False)
        self.obs, _ = self.envs.reset(seed=seed)
        self.eval_envs.reset(seed=seed + EVAL_SEED_OFFSET)
        self.steps = 0

    @property
    def learn_steps(self) -> int:
        return self.agent.learn_steps

    @property
    def replay(self) -> Any:
        return self.agent.replay

    @property
    def n_actions(self) -> int:
        return self.agent.n_actions

    @classmethod
    def from_grid(
        cls,
        tables: Mapping[str, Any],
        *,
        seed: int = 0,
        plugins: Sequence[Any] = (),
        load_entrypoints: bool = True,
        where: str = "<benchmark grid>",
    ) -> StepHarness:
        """The harness of the first cell of a grid given as parsed TOML tables, validated like a grid file."""
        from dqnbench.config.grid import plan_grid
        from dqnbench.plugin.registry import load_registry
        from dqnbench.run.preflight import check_cell
        from dqnbench.run.task import bind_components, choose

        registry = load_registry(load_entrypoints, tuple(plugins))
        plan = plan_grid(tables, where, registry)
        config = plan.cells[0][2]
        check_cell(config, registry, Path(where))
        chosen = choose(config, registry)
        return cls(config, bind_components(config, chosen), seed, chosen)

    @classmethod
    def for_component(
        cls,
        kind: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        batch_size: int | None = None,
        env: str = LEARN_ENV,
        agent: Mapping[str, Any] | None = None,
        grid: Mapping[str, Mapping[str, Any]] | None = None,
        seed: int = 0,
        plugins: Sequence[Any] = (),
        load_entrypoints: bool = True,
    ) -> StepHarness:
        """Default components with ``(kind, name)`` swapped in (see the module docstring for the arguments)."""
        tables = component_tables(
            kind, name, params, env=env, seeds=[seed], total_steps=HARNESS_TOTAL_STEPS, agent=agent, grid=grid
        )
        if batch_size is not None:
            tables["agent"]["batch_size"] = batch_size
        return cls.from_grid(
            tables, seed=seed, plugins=plugins, load_entrypoints=load_entrypoints, where="<dqnbench_step_benchmark>"
        )

    def act(self) -> int:
        """The loop's act: online-net forward on the current observation (batch 1) and the explorer's select.

        The forward runs even where the loop would skip it (a step that explores: ``Agent.act``), so
        that the act benchmark times the network.
        """
        return int(self.agent.act(self.obs, self.steps, q_values=True)[0])

    def learn(self) -> float:
        """The loop's learning phase: ``gradient_steps`` × (sample, gradient step, priority update, target copy)."""
        from dqnbench.agent.loop import Diverged

        loss = float(self.agent.learn())
        if not math.isfinite(loss):
            raise Diverged(self.steps, loss)
        return loss

    def step(self) -> float:
        """One training step (act, env step, store, learn when due); returns the loss, NaN when it did not learn."""
        from dqnbench.agent.loop import Diverged

        outcome = self.agent.step(self.envs, self.obs, self.steps)
        loss = math.nan if outcome.losses is None else float(outcome.losses)
        if outcome.losses is not None and not math.isfinite(loss):
            raise Diverged(self.steps, loss)
        self.obs = outcome.next_obs
        self.steps += 1
        return loss

    def warm_up(self) -> StepHarness:
        """Step until the first learn step (``learning_starts`` reached), so that later steps learn as in a run."""
        while self.learn_steps == 0:
            self.step()
        return self

    def describe(self, measured: str, steps: int = 1, kind: str | None = None) -> dict[str, Any]:
        """The ``extra_info`` of a benchmark of this harness: what was measured, on which components."""
        info: dict[str, Any] = {"measured": measured, "steps": steps, "batch": self.agent_config.batch_size}
        info["env"] = self.config.experiment.env
        if kind is not None:
            section = getattr(self.config, kind)
            info.update(kind=kind, component=section.name, params=dict(section.params))
            if kind in self.chosen:
                info.update(distribution=self.chosen[kind].distribution, version=self.chosen[kind].version)
        info["components"] = {k: getattr(self.config, k).name for k in SWAPPABLE}
        return info

    def close(self) -> None:
        self.envs.close()
        self.eval_envs.close()


def component_tables(
    kind: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    env: str = LEARN_ENV,
    seeds: int | list[int] = LEARN_SEEDS,
    total_steps: int = LEARN_STEPS,
    agent: Mapping[str, Any] | None = None,
    grid: Mapping[str, Mapping[str, Any]] | None = None,
    eval_episodes: int = 10,
    experiment: str = "dqnbench-component",
) -> dict[str, dict[str, Any]]:
    """Grid tables (parsed-TOML form) with ``(kind, name)`` in otherwise default components."""
    from dqnbench.errors import DqnbenchError

    if kind not in SWAPPABLE:
        raise DqnbenchError(f"unknown component kind {kind!r} (allowed: {', '.join(SWAPPABLE)})")
    tables: dict[str, dict[str, Any]] = {
        "experiment": {
            "name": experiment,
            "env": env,
            "total_steps": total_steps,
            "seeds": seeds,
            "eval_every": 0,
            "eval_episodes": eval_episodes,
        },
        "agent": dict(agent or {}),
    }
    for section, values in (grid or {}).items():
        tables.setdefault(section, {}).update(copy.deepcopy(dict(values)))
    tables.setdefault(kind, {}).update({"name": name, **copy.deepcopy(dict(params or {}))})
    return tables


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Time as every run trains: one torch thread (:func:`dqnbench.run.task.single_thread`), denormals flushed."""
    from dqnbench.agent.numerics import flushing_denormals
    from dqnbench.run.task import single_thread

    with single_thread(), flushing_denormals():
        yield


# --------------------------------------------------------------------------- benchmarks


def benchmark_step(benchmark: Any, kind: str, name: str, params: Mapping[str, Any] | None = None, **options: Any):
    """Time one training step with ``(kind, name)`` swapped in; see ``dqnbench_step_benchmark`` in the docstring."""
    with _single_thread():
        harness = StepHarness.for_component(kind, name, params, **options).warm_up()
        benchmark.extra_info.update(
            harness.describe("training step: act (batch 1) + env step + store + learn step", steps=1, kind=kind)
        )
        benchmark(harness.step)
    return harness


#: calls of the calibration workload before it is timed
CALIBRATION_WARMUP_CALLS = 200


def benchmark_calibration(benchmark: Any) -> None:
    """Time the fixed calibration workload and mark it as this session's calibration for ``bench-compare``."""
    from dqnbench.devtools.benchcompare import (
        CALIBRATION_KEY,
        CALIBRATION_PARTS_KEY,
        CALIBRATION_VERSION,
        CalibrationWorkload,
    )

    workload = CalibrationWorkload()
    benchmark.extra_info.update(
        {CALIBRATION_KEY: CALIBRATION_VERSION, "measured": workload.describe(), "steps": 1, "batch": workload.batch}
    )
    with _single_thread():
        # pytest-benchmark sizes its rounds from a first timing: a cold first call (lazy kernel selection, first
        # allocations) is ~10x slower and would leave ~100 rounds of a 0.5 s budget instead of ~1,000
        for _ in range(CALIBRATION_WARMUP_CALLS):
            workload()
        benchmark(workload)
        # what bench-compare divides by (min statistic): the sum of the parts' mins, steadier than the whole's min
        benchmark.extra_info[CALIBRATION_PARTS_KEY] = workload.part_minimums()


# --------------------------------------------------------------------------- learning


@dataclass
class LearnOutcome:
    """What :func:`assert_learns` ran and found."""

    iqm: float
    threshold: float
    returns: dict[int, float]
    grid: Path
    results: Results = field(repr=False)


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Grid tables as TOML text (tables of scalars, lists and sub-tables: all a grid holds).

    JSON's spelling of strings, numbers, booleans and arrays is valid TOML, so
    no TOML writer is needed.
    """

    def key(text: str) -> str:
        return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)

    def table(name: str, values: Mapping[str, Any]) -> list[str]:
        lines = [f"[{name}]"] + [f"{key(k)} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
        for k, v in values.items():
            if isinstance(v, dict):
                lines += ["", *table(f"{name}.{key(k)}", v)]
        return lines

    return "\n".join(line for name, values in tables.items() for line in [*table(key(name), values), ""])


def assert_learns(
    tmp_path: Path,
    kind: str,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    env: str = LEARN_ENV,
    seeds: int | list[int] = LEARN_SEEDS,
    total_steps: int = LEARN_STEPS,
    threshold: float = LEARN_THRESHOLD,
    agent: Mapping[str, Any] | None = None,
    grid: Mapping[str, Mapping[str, Any]] | None = None,
    eval_episodes: int = 10,
    executor: str = "process",
    workers: int | None = None,
    plugins: Sequence[Any] = (),
    load_entrypoints: bool = True,
) -> LearnOutcome:
    """Run a grid with ``(kind, name)`` and assert its IQM final greedy return reaches ``threshold``.

    The IQM (Agarwal et al. 2021) over seeds, not the mean, so one unlucky seed
    does not fail the test and one lucky seed does not pass it.
    """
    from dqnbench.analysis import stats
    from dqnbench.run.runner import run_grid

    experiment = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"learns-{kind}-{name}")[:100]
    tables = component_tables(
        kind, name, params, env=env, seeds=seeds, total_steps=total_steps, agent=agent, grid=grid,
        eval_episodes=eval_episodes, experiment=experiment,
    )  # fmt: skip
    path = Path(tmp_path) / f"{experiment}.toml"
    path.write_text(to_toml(tables), encoding="utf-8")
    log = io.StringIO()
    # no plots: each variant's rotating 3D embedding costs seconds, and `dqnbench plot DIR` draws them on demand
    results = run_grid(
        path, Path(tmp_path) / "results", executor=executor, workers=workers, plugins=plugins,
        load_entrypoints=load_entrypoints, quiet=True, stream=log, plots=False,
    )  # fmt: skip
    runs = results.runs
    where = (f"{kind} {name!r} on {env}, {total_steps:,} steps (grid {path}, results {results.path}; "
             f"plots: dqnbench plot {results.path})")  # fmt: skip
    bad = runs[runs.status != "ok"]
    if len(bad):
        errors = "; ".join(f"seed {s}: {st}: {e}" for s, st, e in zip(bad.seed, bad.status, bad.error))
        raise AssertionError(f"{len(bad)} of {len(runs)} runs of {where} did not finish: {errors}")
    returns = {int(s): float(r) for s, r in sorted(zip(runs.seed, runs.final_return))}
    score = float(stats.iqm(list(returns.values())))
    per_seed = ", ".join(f"seed {s}: {r:.1f}" for s, r in returns.items())
    if not score >= threshold:
        raise AssertionError(
            f"{where} did not learn: IQM final greedy return {score:.1f} < threshold {threshold:g} "
            f"over {len(returns)} seeds ({per_seed})"
        )
    return LearnOutcome(score, threshold, returns, path, results)


# --------------------------------------------------------------------------- fixtures


def _benchmark_fixture(request: pytest.FixtureRequest, who: str, fixture: str = "benchmark") -> Any:
    """pytest-benchmark's ``benchmark`` fixture, or a usage error saying how to get it."""
    try:
        return request.getfixturevalue(fixture)
    except pytest.FixtureLookupError:
        raise pytest.UsageError(f"{who} needs pytest-benchmark: pip install pytest-benchmark") from None


@pytest.fixture
def dqnbench_step_benchmark(request: pytest.FixtureRequest) -> Callable[..., StepHarness]:
    """Factory: ``dqnbench_step_benchmark(kind, name, params=None, **options)`` times one DQN step (see module)."""
    benchmark = _benchmark_fixture(request, "dqnbench_step_benchmark")
    return functools.partial(benchmark_step, benchmark)


@pytest.fixture
def dqnbench_calibration(request: pytest.FixtureRequest) -> Callable[[], None]:
    """Factory: ``dqnbench_calibration()`` benchmarks the calibration workload that ``bench-compare`` needs."""
    benchmark = _benchmark_fixture(request, "dqnbench_calibration")
    return functools.partial(benchmark_calibration, benchmark)


@pytest.fixture
def dqnbench_learns(request: pytest.FixtureRequest) -> Callable[..., LearnOutcome]:
    """Factory: ``dqnbench_learns(kind, name, params=None, **options)`` asserts a grid still learns (see module)."""
    return functools.partial(assert_learns, request.getfixturevalue("tmp_path"))
