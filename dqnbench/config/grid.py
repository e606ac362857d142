"""Grid file (TOML) → validated run specs.

``tomllib`` gives nested dicts; this module checks every section and key
against :mod:`dqnbench.config.schema` and the registry, expands the ``[grid]`` axes
(cartesian product) times the seeds, and gives each run a stable id derived
from its resolved config. Every problem is a :class:`~dqnbench.errors.GridError`
naming the file, the key and the allowed values.

Component sections (``[network]``, ``[replay]``, ``[exploration]``): ``name``
picks the component; other keys are params for its factory; a sub-table
``[replay.prioritized]`` holds params applied only when that component is
chosen (they win over the section's own keys). Params the chosen factory does
not accept are an error. Params left out take the factory's defaults, which
are written into the resolved config so results show them.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import json
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnbench.config.params import describe, expected_type, fits
from dqnbench.config.schema import (
    LOSSES,
    AgentConfig,
    ComponentConfig,
    ExperimentConfig,
    ReplayConfig,
    RunConfig,
    run_id,
)
from dqnbench.config.search import SearchSpec, Variant, read_search
from dqnbench.errors import DqnbenchError, GridError
from dqnbench.plugin.registry import RUN_KINDS, Registry

COMPONENT_SECTIONS = RUN_KINDS
#: the component each section picks when it names none (:class:`RunConfig`'s defaults)
DEFAULT_COMPONENTS = {f.name: f.default.name for f in dataclasses.fields(RunConfig) if f.name in COMPONENT_SECTIONS}
#: v1 ``[agent]`` keys that are params of the learner (of ``dqn``, and of any learner that takes them)
AGENT_LEARNER_KEYS = {"double": bool, "loss": str}
SECTIONS = ("experiment", "agent", *COMPONENT_SECTIONS, "scores", "variants", "grid", "search")
#: sections whose dotted keys can be axes or variant overrides
CONFIG_SECTIONS = ("experiment", "agent", *COMPONENT_SECTIONS)
MAX_RUNS = 100_000

#: value checks beyond the type: field → (predicate, what is allowed)
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "experiment.total_steps": (lambda v: 1 <= v <= 10**9, "an integer in [1, 10**9]"),
    "experiment.eval_every": (lambda v: v >= 0, "an integer >= 0 (0 = only at the end)"),
    "experiment.steps_window": (lambda v: 0 <= v <= 10**9, "an integer >= 0 (0 = per step up to 100k steps)"),
    "experiment.timeout_s": (lambda v: 0 <= v <= 10**9, "a number of seconds in [0, 10**9] (0 = no limit)"),
    "experiment.checkpoint_every": (lambda v: 0 <= v <= 10**9, "an integer >= 0 (0 = no checkpoints)"),
    "experiment.lockstep_group": (lambda v: 0 <= v <= 10**6, "an integer >= 0 (0 = automatic)"),
    "experiment.eval_episodes": (lambda v: 1 <= v <= 10**6, "an integer in [1, 10**6]"),
    "experiment.device": (lambda v: v == "cpu" or v == "cuda" or v.startswith("cuda:"), '"cpu", "cuda" or "cuda:N"'),
    "agent.gamma": (lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]"),
    "agent.lr": (lambda v: v > 0 and math.isfinite(v), "a number > 0"),
    "agent.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "agent.learning_starts": (lambda v: v >= 0, "an integer >= 0"),
    "agent.train_every": (lambda v: v >= 1, "an integer >= 1"),
    "agent.gradient_steps": (lambda v: v >= 1, "an integer >= 1"),
    "agent.target_update": (lambda v: v >= 1, "an integer >= 1"),
    "agent.loss": (lambda v: v in LOSSES, " or ".join(f'"{x}"' for x in LOSSES)),
    "agent.max_grad_norm": (lambda v: v >= 0 and math.isfinite(v), "a number >= 0 (0 = no clipping)"),
    "replay.capacity": (lambda v: 1 <= v <= 10**9, "an integer in [1, 10**9]"),
}


@dataclass(frozen=True)
class RunSpec:
    """One run to execute: a resolved config and a seed, with its stable ids."""

    run_id: str
    cell: str
    label: str
    seed: int
    config: RunConfig


@dataclass(frozen=True)
class Plan:
    """What a grid file asks for: cells × seeds = runs."""

    path: Path
    name: str
    axes: dict[str, list[Any]]
    cells: list[tuple[str, str, RunConfig]]  # (cell id, label, config)
    runs: list[RunSpec]
    #: the ``[search]`` section (:mod:`dqnbench.config.search`); None for a plain grid
    search: SearchSpec | None = None

    def describe(self) -> str:
        """The ``--dry-run`` text: one line per cell, then the count (a search: its trials and test phase)."""
        if self.search is not None:
            return f"experiment {self.name!r} from {self.path}\n{self.search.describe()}"
        seeds = len(self.cells[0][2].experiment.seeds) if self.cells else 0
        lines = [f"experiment {self.name!r} from {self.path}"]
        for axis, values in self.axes.items():
            lines.append(f"  axis {axis}: {', '.join(map(_label_value, values))}")
        for cell, label, config in self.cells:
            lines.append(
                f"  cell {cell}  {label}  ({config.experiment.env}, {config.experiment.total_steps} steps, "
                f"seeds {list(config.experiment.seeds)})"
            )
        lines.append(f"{len(self.cells)} cells × {seeds} seeds = {len(self.runs)} runs")
        return "\n".join(lines)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a grid file; unreadable or invalid TOML is a GridError."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise GridError(path, None, "no such grid file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(path, None, f"cannot read the grid file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GridError(path, None, f"invalid TOML: {exc}") from None


def load_grid(path: str | Path, registry: Registry) -> Plan:
    """Read and validate a grid file into a :class:`Plan`."""
    return plan_grid(read_toml(path), path, registry)


def plan_grid(raw: Mapping[str, Any], path: str | Path, registry: Registry) -> Plan:
    """Validate parsed TOML and expand it into runs (see module docstring)."""
    path = Path(path)
    for section, value in raw.items():
        if section not in SECTIONS:
            raise GridError(path, section, f"unknown section{_allowed(section, SECTIONS)}")
        if not isinstance(value, dict):
            raise GridError(path, section, f"must be a table [{section}], got {_typename(value)}")
    base = {k: v for k, v in raw.items() if k not in ("grid", "variants", "scores", "search")}
    name = raw.get("experiment", {}).get("name")
    if name is None:
        raise GridError(path, "experiment.name", "is required: a string naming the results directory")
    if not isinstance(name, str):
        raise GridError(path, "experiment.name", f"must be a string naming the results directory, got {_show(name)}")
    axes = _read_axes(raw.get("grid", {}), path)
    variants = _read_variants(raw.get("variants", {}), path)
    scores = read_scores(raw.get("scores", {}), path)
    combos = list(itertools.product(*axes.values())) if axes else [()]
    seeds = _seeds(raw.get("experiment", {}).get("seeds", 3), path)
    if len(variants) * len(combos) * len(seeds) > MAX_RUNS:
        raise GridError(
            path, "grid", f"{len(variants) * len(combos)} cells × {len(seeds)} seeds is over {MAX_RUNS} runs"
        )

    cells: dict[str, tuple[str, str, RunConfig]] = {}
    made: dict[str, tuple[str, dict[str, Any]]] = {}  # cell → (variant, axis values) it was first made from
    for variant, overrides in variants.items():
        for combo in combos:
            values = dict(zip(axes, combo))
            resolved = with_overrides(with_overrides(base, overrides, path, variant), values, path)
            names = {k: f'variants."{variant}"."{k}"' for k in overrides} | {k: f'grid."{k}"' for k in values}
            config = dataclasses.replace(resolve(resolved, path, registry, axis_keys=names), scores=scores)
            label = _cell_label(variant, values)
            cell = config.cell_id()
            if cell in cells:
                first_variant, first_values = made[cell]
                unused = [k for k in values if k not in first_values or values[k] != first_values[k]]
                if first_variant != variant or not unused:
                    raise GridError(path, "grid", f"cells {cells[cell][1]!r} and {label!r} resolve to the same config")
                # e.g. "replay.prioritized.alpha" crossed with "replay.name": the uniform cells do not read alpha,
                # so they are one cell, labelled without the axes that do not apply to it
                kept = {k: v for k, v in first_values.items() if k not in unused}
                made[cell] = (variant, kept)
                cells[cell] = (cell, _cell_label(variant, kept), cells[cell][2])
                continue
            made[cell] = (variant, values)
            cells[cell] = (cell, label, config)
    runs = [
        RunSpec(run_id(cell, seed), cell, label, seed, config)
        for cell, label, config in cells.values()
        for seed in config.experiment.seeds
    ]
    name = raw["experiment"]["name"]
    tuned = [Variant(label, {**variants[made[cell][0]], **made[cell][1]}) for cell, label, _ in cells.values()]
    search = read_search(raw.get("search"), path, registry, base, tuned, axes, scores)
    return Plan(path, name, axes, list(cells.values()), runs, search)


def _cell_label(variant: str, values: Mapping[str, Any]) -> str:
    axis_label = ", ".join(f"{k}={_label_value(v)}" for k, v in values.items())
    return ", ".join(x for x in (variant, axis_label) if x) or "default"


def _read_axes(grid: Mapping[str, Any], path: Path) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, values in grid.items():
        where = f"grid.{key}" if "." not in key else f'grid."{key}"'
        if isinstance(values, dict):
            raise GridError(path, where, 'axes are dotted keys with a list of values, e.g. "agent.lr" = [1e-3, 3e-4]')
        if not isinstance(values, list) or not values:
            raise GridError(path, where, f"an axis must be a non-empty list of values, got {_show(values)}")
        section = key.split(".", 1)[0]
        if section not in CONFIG_SECTIONS or "." not in key:
            raise GridError(path, where, f"an axis names a dotted key in one of: {', '.join(CONFIG_SECTIONS)}")
        if key in ("experiment.name", "experiment.seeds"):
            raise GridError(path, where, "cannot be an axis (seeds multiply every cell already)")
        canon = [repr(v) for v in values]
        if len(set(canon)) != len(canon):
            raise GridError(path, where, f"has duplicate values: {_show(values)}")
        axes[key] = values
    return axes


def _read_variants(variants: Mapping[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """``[variants."name"]`` tables of dotted overrides: named cells (crossed with the axes); ``{"": {}}`` if none.

    A grid that is not a cartesian product (an ablation: the full agent, the
    agent with one part removed, the baseline) lists its cells by name here.
    """
    if not variants:
        return {"": {}}
    out: dict[str, dict[str, Any]] = {}
    for name, overrides in variants.items():
        where = f'variants."{name}"'
        if not isinstance(overrides, dict):
            raise GridError(
                path, where, f'must be a table of dotted keys, e.g. "learner.name" = "c51", got {_show(overrides)}'
            )
        flat: dict[str, Any] = {}
        for key, value in overrides.items():
            if isinstance(value, dict):
                raise GridError(path, f'{where}."{key}"', 'use dotted keys, e.g. "replay.name" = "nstep"')
            section = key.split(".", 1)[0]
            if section not in CONFIG_SECTIONS or "." not in key:
                raise GridError(
                    path, f'{where}."{key}"', f"a variant sets dotted keys in one of: {', '.join(CONFIG_SECTIONS)}"
                )
            if key in ("experiment.name", "experiment.seeds"):
                raise GridError(path, f'{where}."{key}"', "cannot differ between variants (seeds multiply every cell)")
            flat[key] = value
        out[name] = flat
    return out


def read_scores(scores: Mapping[str, Any], path: Path) -> dict[str, dict[str, float]]:
    """``[scores."ENV_ID"]`` tables: ``random`` (required) and ``reference`` scores that normalise an env's returns.

    They override the built-in tables of :mod:`dqnbench.analysis.scores` for
    aggregates across environments; they are not part of run ids.
    """
    out: dict[str, dict[str, float]] = {}
    for env_id, table in scores.items():
        where = f'scores."{env_id}"'
        if not isinstance(table, dict):
            raise GridError(path, where, f"must be a table with random (and reference) scores, got {_show(table)}")
        for key, value in table.items():
            if key not in ("random", "reference"):
                raise GridError(path, f"{where}.{key}", f"unknown key{_allowed(key, ('random', 'reference'))}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise GridError(path, f"{where}.{key}", f"must be a finite number, got {_show(value)}")
        if "random" not in table:
            raise GridError(path, f"{where}.random", "is required: the score of a uniformly random policy")
        if "reference" in table and table["reference"] == table["random"]:
            raise GridError(path, f"{where}.reference", "must differ from random (it is the normalised score's 1)")
        out[env_id] = {k: float(v) for k, v in table.items()}
    return out


def with_overrides(
    base: Mapping[str, Any], values: Mapping[str, Any], path: Path, variant: str | None = None
) -> dict[str, Any]:
    """Deep-copy the base tables and set each dotted axis (or variant) key."""
    tables = {k: _copy(v) for k, v in base.items()}
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = tables
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = f'variants."{variant}"."{dotted}"' if variant is not None else f'grid."{dotted}"'
                raise GridError(path, where, f"{part!r} is a value, not a table")
        node[leaf] = value
    return tables


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def resolve(
    tables: Mapping[str, Any],
    path: str | Path,
    registry: Registry,
    axis_keys: set[str] | Mapping[str, str] = frozenset(),
) -> RunConfig:
    """Turn one cell's tables into a :class:`RunConfig`, validating every value.

    ``axis_keys``: dotted keys set by an axis (named ``grid."key"`` in errors),
    or a mapping from dotted key to how errors name it.
    """
    path = Path(path)
    names = axis_keys if isinstance(axis_keys, Mapping) else {k: f'grid."{k}"' for k in axis_keys}

    def key_of(dotted: str) -> str:
        return names.get(dotted, dotted)

    try:
        experiment = _dataclass_section(ExperimentConfig, "experiment", tables.get("experiment", {}), path, key_of)
        agent_table = dict(tables.get("agent", {}))
        learner_defaults = {}
        for key, expected in AGENT_LEARNER_KEYS.items():
            if key in agent_table:
                learner_defaults[key] = _check_value(agent_table.pop(key), expected, f"agent.{key}", path, key_of)
        agent = _dataclass_section(AgentConfig, "agent", agent_table, path, key_of)
        components = {
            section: _component_section(
                section,
                tables.get(section, {}),
                path,
                registry,
                key_of,
                experiment,
                learner_defaults if section == "learner" else {},
            )
            for section in COMPONENT_SECTIONS
        }
    except GridError:
        raise
    except DqnbenchError as exc:
        raise GridError(path, None, str(exc)) from None
    return RunConfig(experiment, agent, **components)


def _dataclass_section(cls: type, section: str, table: Mapping[str, Any], path: Path, key_of) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{section}.{key}"
        if key not in names:
            raise GridError(path, key_of(dotted), f"unknown key{_allowed(key, names)}")
        if key == "seeds":
            kwargs[key] = tuple(_seeds(value, path))
            continue
        kwargs[key] = _check_value(value, hints[key], dotted, path, key_of)
    if section == "experiment":
        _check_name(kwargs["name"], path)
    return cls(**kwargs)


def _check_value(value: Any, expected: Any, dotted: str, path: Path, key_of) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not fits(value, expected):
        raise GridError(path, key_of(dotted), f"must be {describe(expected)}, got {_show(value)}")
    check = _CHECKS.get(dotted)
    if check and not check[0](value):
        raise GridError(path, key_of(dotted), f"must be {check[1]}, got {_show(value)}")
    return value


def _check_name(name: str, path: Path) -> None:
    bad = (
        not name.strip()
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in "/\\\0")
        or len(name) > 120
        or not name.isprintable()
    )
    if bad:
        raise GridError(
            path,
            "experiment.name",
            f"{name!r} cannot name a results directory: use a plain name (no path separators, "
            "not starting with '.', printable, at most 120 characters)",
        )


def _seeds(value: Any, path: Path) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_RUNS:
            raise GridError(path, "experiment.seeds", f"an int n gives seeds 0..n-1 and must be >= 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if any(s < 0 or s >= 2**32 for s in value):
            raise GridError(path, "experiment.seeds", "seeds must be in [0, 2**32)")
        if len(set(value)) != len(value):
            raise GridError(path, "experiment.seeds", f"has duplicate seeds: {value}")
        return list(value)
    raise GridError(
        path, "experiment.seeds", f"must be an int n (seeds 0..n-1) or a non-empty list of ints, got {_show(value)}"
    )


def _component_section(
    section: str,
    table: Mapping[str, Any],
    path: Path,
    registry: Registry,
    key_of,
    experiment: ExperimentConfig,
    agent_params: Mapping[str, Any] = {},  # noqa: B006 (read only)
) -> ComponentConfig:
    name = table.get("name", DEFAULT_COMPONENTS[section])
    if not isinstance(name, str):
        raise GridError(path, key_of(f"{section}.name"), f"must be a string, got {_show(name)}")
    try:
        component = registry.get(section, name)
    except DqnbenchError as exc:
        raise GridError(path, key_of(f"{section}.name"), str(exc)) from None
    # ``auto`` (env) keeps its name in the config, so run ids do not change, but takes the params, defaults and
    # ``[env.<picked>]`` table of the component it picks for this cell's id (``atari`` for ALE/…).
    delegate = getattr(component.factory, "delegate", None) if section == "env" else None
    picked = name
    if callable(delegate):
        picked = delegate(experiment.env)
        component = registry.get(section, picked)
    params: dict[str, Any] = {}
    origin: dict[str, str] = {}  # param → the dotted key it came from, for messages
    capacity = ReplayConfig.capacity
    for key, value in table.items():
        dotted = f"{section}.{key}"
        if key == "name":
            continue
        if section == "replay" and key == "capacity":
            capacity = _check_value(value, int, dotted, path, key_of)
        elif isinstance(value, dict):
            known = registry.names(section)
            if key not in known:
                raise GridError(path, key_of(dotted), f"is a table for an unknown {section}{_allowed(key, known)}")
            _check_subtable(registry.get(section, key), value, dotted, path, key_of)
        else:
            params[key], origin[key] = value, dotted
    for sub_name in dict.fromkeys((name, picked)):
        sub = table.get(sub_name)
        if isinstance(sub, dict):
            for key, value in sub.items():
                params[key], origin[key] = value, f"{section}.{sub_name}.{key}"
    names, accepts_any = component.params()
    # agent.double / agent.loss (v1) are the dqn learner's params: they set the param of that name of any learner
    # that names it (double: c51 and qr_dqn too; the learner's own keys win) and mean nothing to the others, so a
    # v1 grid can gain a "learner.name" axis unchanged
    for key, value in agent_params.items():
        if key in names:
            params.setdefault(key, value)
            origin.setdefault(key, f"agent.{key}")
    for key, value in params.items():
        if not _jsonable(value):
            raise GridError(
                path, key_of(origin[key]), f"params are numbers, strings, booleans or lists of them, got {_show(value)}"
            )
        if key not in names and not accepts_any:
            raise GridError(
                path,
                key_of(origin[key]),
                f"{component.describe()} has no parameter {key!r}{_allowed(key, names)}",
            )
        _check_param_type(component, key, value, origin[key], path, key_of)
    params = {**_factory_defaults(component.factory, names), **params}
    if section == "replay" and "total_steps" in names and params.get("total_steps") is None:
        params["total_steps"] = experiment.total_steps  # e.g. annealing over training
    if section == "replay":
        return ReplayConfig(name, params, capacity)
    return ComponentConfig(name, params)


def _check_subtable(component: Any, table: Mapping[str, Any], dotted: str, path: Path, key_of) -> None:
    """Params of ``[section.<name>]`` must fit that component even when it is not chosen here."""
    names, accepts_any = component.params()
    for key, value in table.items():
        if isinstance(value, dict):
            raise GridError(path, key_of(f"{dotted}.{key}"), "component params cannot be tables")
        if key not in names and not accepts_any:
            raise GridError(
                path,
                key_of(f"{dotted}.{key}"),
                f"{component.describe()} has no parameter {key!r}{_allowed(key, names)}",
            )
        _check_param_type(component, key, value, f"{dotted}.{key}", path, key_of)


def _check_param_type(component: Any, key: str, value: Any, dotted: str, path: Path, key_of) -> None:
    """A param whose value cannot be what the factory's annotation says (see :mod:`dqnbench.config.params`)."""
    expected = expected_type(component.factory, key, value)
    if expected is not None:
        raise GridError(path, key_of(dotted), f"{component.describe()}: must be {expected}, got {_show(value)}")


def _factory_defaults(factory: Any, names: list[str]) -> dict[str, Any]:
    """The factory's JSON-able keyword defaults, so the resolved config shows them."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    defaults = {}
    for name in names:
        default = parameters[name].default
        if default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, tuple):
            default = list(default)
        if _jsonable(default):
            defaults[name] = default
    return defaults


def _jsonable(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" not in value
    if isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, list):
        return all(_jsonable(v) for v in value)
    return False


def _allowed(key: str, names: typing.Iterable[str]) -> str:
    names = list(names)
    text = f" (allowed: {', '.join(names) or 'none'}"
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        text += f"; did you mean {close[0]!r}?"
    return text + ")"


def _label_value(value: Any) -> str:
    """Axis values as a grid would write them: ``true``, ``0.001``, ``[64, 64]``, ``mlp``."""
    return value if isinstance(value, str) else json.dumps(value)


def _typename(value: Any) -> str:
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
