"""The ``[search]`` section of a grid file → a validated :class:`SearchSpec`.

A search tunes every variant (each cell of ``[grid]`` / ``[variants]``) with the
same budget of trials over ``[search.space]``, then reruns each variant's best
configuration on fresh test seeds (``docs/tuning.md``). This module only reads
and checks the section; :mod:`dqnbench.search` runs it. Every problem is a
:class:`~dqnbench.errors.GridError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dqnbench.config.schema import RunConfig
from dqnbench.errors import GridError

SAMPLERS = ("tpe", "random", "qmc", "grid")
OBJECTIVES = ("auc", "final")
PRUNERS = ("none", "median", "successive_halving")
KEYS = ("trials", "sampler", "objective", "tune_seeds", "test_seeds", "pruner", "seed", "test_default", "space")
INSTALL = 'pip install "dqnbench[tune]"'


@dataclass(frozen=True)
class Param:
    """One searched key: a range (``low``/``high``, maybe ``log`` or ``step``) or a list of ``choices``."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high))

    @property
    def values(self) -> list[Any]:
        """The values a grid sampler walks (choices, or the range on its step); the two ends otherwise."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.is_int:
            return [self.low, self.high]
        step = self.step or 1
        n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        return [self.low + i * step for i in range(n)]

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.key} in {list(self.choices)}"
        scale = ", log" if self.log else (f", step {self.step}" if self.step else "")
        return f"{self.key} in [{self.low}, {self.high}{scale}]"


@dataclass(frozen=True)
class Variant:
    """One cell of the grid that the search tunes: its label and the dotted keys that make it."""

    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class SearchSpec:
    """What ``[search]`` asks for, and what is needed to turn a trial's params into a :class:`RunConfig`."""

    path: Path
    trials: int
    sampler: str
    objective: str
    tune_seeds: int
    test_seeds: int
    pruner: str
    seed: int
    test_default: bool
    space: tuple[Param, ...]
    variants: tuple[Variant, ...]
    base: dict[str, Any] = field(repr=False, default_factory=dict)
    scores: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)

    @property
    def tune_seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.tune_seeds))

    @property
    def test_seed_list(self) -> tuple[int, ...]:
        """Fresh seeds, disjoint from the tuning seeds."""
        return tuple(range(self.tune_seeds, self.tune_seeds + self.test_seeds))

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.space]

    def config(self, variant: Variant, params: Mapping[str, Any], seeds: Sequence[int], registry: Any) -> RunConfig:
        """The resolved config of ``variant`` with the searched ``params`` set, on ``seeds``."""
        from dqnbench.config.grid import resolve, with_overrides

        tables = with_overrides(self.base, {**variant.overrides, **params}, self.path)
        names = {k: f'search.space."{k}"' for k in params}
        config = resolve(tables, self.path, registry, axis_keys=names)
        experiment = dataclasses.replace(config.experiment, seeds=tuple(seeds))
        return dataclasses.replace(config, experiment=experiment, scores=self.scores)

    def default_params(self, variant: Variant, registry: Any) -> dict[str, Any]:
        """The values the grid gives the searched keys without a search (its default config)."""
        flat = self.config(variant, {}, (0,), registry).flat()
        return {k: flat.get(k) for k in self.keys}

    def describe(self) -> str:
        """The ``--dry-run`` text of the search."""
        n = len(self.variants)
        tune = n * self.trials * self.tune_seeds
        test = n * self.test_seeds * (2 if self.test_default else 1)
        lines = [
            f"search: {self.sampler} sampler, objective {self.objective}, pruner {self.pruner}, seed {self.seed}",
            *(f"  space {p.describe()}" for p in self.space),
            *(f"  variant {v.label}" for v in self.variants),
            f"  tuning seeds {list(self.tune_seed_list)}; test seeds {list(self.test_seed_list)}",
            f"{n} variants × {self.trials} trials × {self.tune_seeds} tune seeds = {tune} tuning runs",
            f"test phase: {n} variants × {self.test_seeds} test seeds"
            + (" × (tuned, default)" if self.test_default else " (tuned)")
            + f" = {test} runs; {tune + test} runs in all",
        ]
        return "\n".join(lines)


def read_search(
    table: Any,
    path: Path,
    registry: Any,
    base: Mapping[str, Any],
    variants: Sequence[Variant],
    axes: Mapping[str, list[Any]],
    scores: dict[str, dict[str, float]],
) -> SearchSpec | None:
    """Validate ``[search]`` (None when the grid has none); every bad input is a GridError naming its key."""
    if table is None:
        return None
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise GridError(path, "search", f"a [search] needs Optuna: {INSTALL}") from None
    for key in table:
        if key not in KEYS:
            raise GridError(path, f"search.{key}", f"unknown key (allowed: {', '.join(KEYS)})")
    counts = {
        name: _count(table.get(name, default), f"search.{name}", path)
        for name, default in (("trials", 32), ("tune_seeds", 2), ("test_seeds", 10))
    }
    sampler = _choice(table.get("sampler", "tpe"), SAMPLERS, "search.sampler", path)
    objective = _choice(table.get("objective", "auc"), OBJECTIVES, "search.objective", path)
    pruner = _choice(table.get("pruner", "none"), PRUNERS, "search.pruner", path)
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise GridError(path, "search.seed", f"must be an integer in [0, 2**32), got {seed!r}")
    test_default = table.get("test_default", True)
    if not isinstance(test_default, bool):
        raise GridError(path, "search.test_default", f"must be true or false, got {test_default!r}")
    space_table = table.get("space")
    if not isinstance(space_table, dict) or not space_table:
        raise GridError(path, "search.space", 'needs at least one key, e.g. "agent.lr" = { low = 1e-4, high = 1e-2 }')
    space = tuple(_param(key, value, path) for key, value in space_table.items())
    for param in space:
        where = f'search.space."{param.key}"'
        if param.key in axes:
            raise GridError(path, where, f'is also an axis grid."{param.key}": a key is either searched or swept')
        for variant in variants:
            if param.key in variant.overrides:
                raise GridError(path, where, f"is also set by the variant {variant.label!r}: remove one of them")
    spec = SearchSpec(
        path, counts["trials"], sampler, objective, counts["tune_seeds"], counts["test_seeds"], pruner, seed,
        test_default, space, tuple(variants), dict(base), scores,
    )  # fmt: skip
    for variant in variants:
        for param in space:  # an unknown key, or a value the key does not take, names the key
            for value in param.values[:1] + param.values[-1:]:
                spec.config(variant, {param.key: value}, (0,), registry)
        if objective == "auc" and spec.config(variant, {}, (0,), registry).experiment.eval_every == 0:
            raise GridError(
                path,
                "search.objective",
                f'"auc" needs evaluations during training, but experiment.eval_every = 0 in {variant.label!r}: '
                'set eval_every or use objective = "final"',
            )
    if sampler == "grid":
        size = math.prod(len(p.values) for p in space)
        if any(p.choices is None and p.step is None and not p.is_int for p in space):
            raise GridError(path, "search.sampler", '"grid" needs lists or ranges with a step in [search.space]')
        if spec.trials > size:
            raise GridError(
                path, "search.trials", f"the grid sampler's space has only {size} points, got {spec.trials}"
            )
    return spec


def _count(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GridError(path, key, f"must be an integer >= 1, got {value!r}")
    return value


def _choice(value: Any, allowed: tuple[str, ...], key: str, path: Path) -> str:
    if value not in allowed:
        raise GridError(path, key, f"unknown value {value!r} (allowed: {', '.join(allowed)})")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _param(key: str, value: Any, path: Path) -> Param:
    """One ``[search.space]`` entry: a list is categorical; a table is a range."""
    where = f'search.space."{key}"'
    if isinstance(value, list):
        if not value:
            raise GridError(path, where, "a list of choices must not be empty")
        if any(isinstance(v, list | dict) for v in value):
            raise GridError(path, where, "choices are numbers, strings or booleans")
        if len({repr(v) for v in value}) != len(value):
            raise GridError(path, where, f"has duplicate choices: {value!r}")
        return Param(key, choices=tuple(value))
    if not isinstance(value, dict):
        raise GridError(path, where, f"must be a list of choices or a table {{ low, high }}, got {value!r}")
    for name in value:
        if name not in ("low", "high", "log", "step"):
            raise GridError(path, f"{where}.{name}", "unknown key (allowed: low, high, log, step)")
    low, high, log, step = value.get("low"), value.get("high"), value.get("log", False), value.get("step")
    for name, number in (("low", low), ("high", high)):
        if not _number(number):
            raise GridError(path, f"{where}.{name}", f"must be a finite number, got {number!r}")
    if low >= high:
        raise GridError(path, where, f"low must be below high, got low = {low}, high = {high}")
    if not isinstance(log, bool):
        raise GridError(path, f"{where}.log", f"must be true or false, got {log!r}")
    if log and low <= 0:
        raise GridError(path, f"{where}.low", f"a log range needs low > 0, got {low}")
    if step is not None:
        if not _number(step) or step <= 0:
            raise GridError(path, f"{where}.step", f"must be a number > 0, got {step!r}")
        if log:
            raise GridError(path, f"{where}.step", "a log range cannot have a step")
        if isinstance(low, int) and isinstance(high, int) and not isinstance(step, int):
            raise GridError(path, f"{where}.step", f"an integer range takes an integer step, got {step!r}")
    return Param(key, low, high, log, step)
