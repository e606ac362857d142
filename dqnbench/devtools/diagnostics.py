"""What ``dqnbench plugins --verbose`` and ``--check`` show: who provides what, and who breaks it.

A plugin author's first questions are "did dqnbench find my package?" and
"does my component do what dqnbench expects?". :func:`describe_plugins` answers
the first per distribution (its plugins, the hooks each implements, the
components it provides, plugins that failed to load, duplicate names);
:func:`check_components` answers the second without a training run: it builds
every network, replay and exploration (executors on request) with its default
params on a small environment and probes it with the contract checks the
training loop runs (``dqnbench.plugin.checks``),
plus the things a run needs later (gradients, ``deepcopy`` for the target net,
weights that reload with ``weights_only=True``). Every failure becomes a
:class:`Problem` naming the component's distribution, never a traceback.
"""

from __future__ import annotations

import copy
import io
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import torch
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from dqnbench.plugin.checks import check_actions, check_batch, check_q_values
from dqnbench.errors import DqnbenchError
from dqnbench.plugin.registry import KINDS, Component, Registry, load_registry
from dqnbench.agent.loop import env_dims, make_env, seed_everything

#: what the probes use: a few hundred env steps, small batches, a short schedule
PROBE_STEPS = 200
PROBE_BATCH = 32
PROBE_CAPACITY = 1_000
PROBE_GAMMA = 0.99
PROBE_TOTAL_STEPS = 1_000
PROBE_SEED = 0
#: what ``check_components`` checks unless told otherwise: the kinds a grid names. Executors are
#: checked on request only, since building one may start a cluster (the ``ray`` executor does).
DEFAULT_KINDS = ("network", "replay", "exploration")


@dataclass(frozen=True)
class Problem:
    """One contract violation (or load failure), with who is responsible for it.

    ``kind`` is a component kind (``network``, ``replay``, ``exploration``,
    ``executor``) or ``plugin`` for a plugin that failed to load or provides
    nothing; ``name`` is the component's (or the plugin's) name.
    """

    kind: str
    name: str
    distribution: str
    version: str
    message: str

    def __str__(self) -> str:
        if self.kind == "plugin" and not self.distribution:
            return self.message  # load failures already name the entry point and distribution
        return f'{self.kind} "{self.name}" from {self.distribution} {self.version}: {self.message}'


class _Violation(Exception):
    """Raised inside a probe: ``stage`` says which call broke the contract."""

    def __init__(self, stage: str, cause: BaseException | str) -> None:
        self.stage = stage
        text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{stage}: {text}")


def _stage(stage: str, call: Callable[[], Any]) -> Any:
    """Run one step of a probe, turning any exception into a :class:`_Violation` naming the step."""
    try:
        return call()
    except _Violation:
        raise
    except Exception as exc:
        raise _Violation(stage, exc) from exc


# --- describe ----------------------------------------------------------------------------------


def describe_plugins(registry: Registry, verbose: bool = False) -> RenderableType:
    """The ``dqnbench plugins`` listing, a rich renderable.

    Without ``verbose``: one row per component (kind, name, provider
    distribution, version, plugin). With ``verbose``: a tree per distribution
    of its plugins, the hooks each implements and the components each hook
    provides. Both end with the problems: plugins that failed to load or
    implement no hook, and names provided twice.
    """
    parts: list[RenderableType] = [_plugins_tree(registry) if verbose else _components_table(registry)]
    notes = [str(p) for p in _registry_problems(registry)]
    if notes:
        parts.append(Text("problems:", style="bold red"))
        parts.extend(Text(f"  {note}", style="red") for note in notes)
    return Group(*parts)


def _components_table(registry: Registry) -> Table:
    table = Table(title="dqnbench components")
    for column in ("kind", "name", "provider", "version"):
        table.add_column(column, no_wrap=True)
    table.add_column("plugin", overflow="fold")
    for c in registry.all():
        name = c.name + (" (DUPLICATE)" if (c.kind, c.name) in registry.duplicates else "")
        table.add_row(c.kind, name, c.distribution, c.version, c.provider.plugin)
    return table


def _plugins_tree(registry: Registry) -> Group:
    """One tree per distribution: its plugins, each plugin's hooks and what each hook provides."""
    host = _host(registry)
    provided: dict[tuple[str, str], list[Component]] = defaultdict(list)
    for c in registry.all():
        provided[(c.provider.plugin, KINDS[c.kind])].append(c)
    by_dist: dict[tuple[str, str], list[str]] = defaultdict(list)
    for plugin_name, _ in host.pm.list_name_plugin():
        provider = host.provider(plugin_name)
        by_dist[(provider.distribution, provider.version)].append(plugin_name)

    trees = []
    # dqnbench's own built-ins first, then the installed and in-process plugins by name
    for dist, version in sorted(by_dist, key=lambda dv: (dv[0] != "dqnbench", dv[0].lower())):
        tree = Tree(Text.assemble((dist, "bold"), f" {version}"))
        for plugin_name in by_dist[(dist, version)]:
            branch = tree.add(_plugin_label(registry, plugin_name))
            hooks = _hooks_of(registry, plugin_name)
            if not hooks:
                branch.add(Text("no hooks: forgot @dqnbench.hookimpl?", style="red"))
            for hook in hooks:
                components = provided.get((plugin_name, hook), [])
                names = ", ".join(
                    c.name + (" (DUPLICATE)" if (c.kind, c.name) in registry.duplicates else "") for c in components
                )
                kind = components[0].kind + " " if components else ""
                branch.add(f"{hook} → {kind}{names or 'nothing'}")
        trees.append(tree)
    return Group(Text("dqnbench plugins, by distribution", style="bold"), *trees)


def _host(registry: Registry):
    if registry.host is None:
        raise ValueError("this registry was not built from a plugin host; use dqnbench.plugin.registry.load_registry()")
    return registry.host


def _hooks_of(registry: Registry, plugin_name: str) -> list[str]:
    pm = _host(registry).pm
    plugin = pm.get_plugin(plugin_name)
    callers = pm.get_hookcallers(plugin) if plugin is not None else None
    return sorted(caller.name for caller in callers or ())


def _plugin_label(registry: Registry, plugin_name: str) -> str:
    """The plugin's registration name, plus its module when that differs (``entry point = module``)."""
    plugin = _host(registry).pm.get_plugin(plugin_name)
    module = getattr(plugin, "__name__", None)
    return plugin_name if not isinstance(module, str) or module == plugin_name else f"{plugin_name} = {module}"


def _registry_problems(registry: Registry) -> list[Problem]:
    """Load failures, plugins that implement no hook, and names provided twice."""
    host = _host(registry)
    problems = [Problem("plugin", "", "", "", failure) for failure in host.failures]
    for plugin_name, _ in host.pm.list_name_plugin():
        if not _hooks_of(registry, plugin_name):
            provider = host.provider(plugin_name)
            problems.append(
                Problem(
                    "plugin",
                    plugin_name,
                    provider.distribution,
                    provider.version,
                    "implements no dqnbench hook: mark the hook functions with @dqnbench.hookimpl and name them "
                    f"after the hook specs ({', '.join(KINDS.values())})",
                )
            )
    for (kind, name), group in registry.duplicates.items():
        providers = " and ".join(f"{c.distribution} {c.version} (plugin {c.provider.plugin!r})" for c in group)
        problems.append(
            Problem(
                kind,
                name,
                " and ".join(c.distribution for c in group),
                "",
                f"provided by more than one plugin: {providers}; a grid that names it fails",
            )
        )
    return problems


# --- check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """What every check runs on: env dimensions and a few hundred real transitions."""

    env_id: str
    obs_dim: int
    n_actions: int
    transitions: list[tuple[np.ndarray, int, float, np.ndarray, bool]]

    def observations(self, batch: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([t[0] for t in self.transitions[:batch]]))


def _probe(env_id: str, steps: int = PROBE_STEPS, seed: int = PROBE_SEED) -> _Probe:
    """Random-action steps on ``env_id`` (resetting at episode ends), as the loop would store them.

    Raises :class:`DqnbenchError` for an environment that cannot be made or has no Discrete actions.
    """
    try:
        env = make_env(env_id)
    except Exception as exc:  # an unknown id is the user's to fix, not a traceback
        raise DqnbenchError(f"cannot create environment {env_id!r}: {type(exc).__name__}: {exc}") from None
    try:
        obs_dim, n_actions = env_dims(env, env_id)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        transitions = []
        for _ in range(steps):
            action = int(env.action_space.sample())
            next_obs, reward, terminated, truncated, _ = env.step(action)
            transitions.append((obs, action, float(reward), next_obs, bool(terminated)))
            obs = env.reset()[0] if terminated or truncated else next_obs
    finally:
        env.close()
    return _Probe(env_id, obs_dim, n_actions, transitions)


def check_components(
    registry: Registry,
    env_id: str = "CartPole-v1",
    kinds: Sequence[str] | None = None,
    distributions: Sequence[str] | None = None,
) -> list[Problem]:
    """Build every component (default params) on ``env_id`` and probe it against its contract.

    Per kind:

    - network: ``factory(obs_dim, n_actions)`` is a ``torch.nn.Module`` with
      trainable parameters; forward on float32 ``(B, obs_dim)`` gives finite
      float ``(B, n_actions)`` Q-values in train and eval mode; gradients flow;
      it survives ``copy.deepcopy``; its ``state_dict`` reloads into a fresh one
      through ``torch.load(..., weights_only=True)``;
    - exploration: ``factory(n_actions, total_steps)``; ``select`` on batches of
      2 and 1 at several steps gives int64 ``(B,)`` actions in range;
    - replay: ``factory(capacity, obs_dim, gamma)`` takes 200 transitions of
      random play, then ``len()`` ≥ 32, ``sample(32)`` is a well-formed
      :class:`dqnbench.Batch` (shapes, dtypes; discounts in [0, 1], finite
      non-negative weights), ``update_priorities`` accepts zero TD errors;
    - executor (only when ``kinds`` includes it): ``factory(workers=1)`` maps
      a function over three items, yielding each with its result, and closes.

    Plus, from the registry: plugins that failed to load, plugins implementing
    no hook, names provided twice. Every component is seeded first (as a run
    is) and every exception is caught and reported as a :class:`Problem`
    naming the component's kind, name, distribution and version.

    :param kinds: the component kinds to check (default: :data:`DEFAULT_KINDS`,
        every kind but executors).
    :param distributions: check only the components (and duplicates) of these
        distributions, e.g. your own plugin's in its tests; plugins that failed
        to load are reported regardless (yours may be one of them).
    """
    kinds = tuple(DEFAULT_KINDS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown component kinds {unknown} (allowed: {', '.join(KINDS)})")
    wanted = None if distributions is None else {_canonical(d) for d in distributions}

    def selected(distribution: str) -> bool:
        return wanted is None or any(_canonical(d) in wanted for d in distribution.split(" and "))

    probe = _probe(env_id)
    problems = [p for p in _registry_problems(registry) if not p.distribution or selected(p.distribution)]
    for component in registry.all():
        if component.kind not in kinds or not selected(component.distribution):
            continue
        seed_everything(PROBE_SEED)
        try:
            CHECKS[component.kind](component, probe)
        except _Violation as violation:
            problems.append(
                Problem(component.kind, component.name, component.distribution, component.version, str(violation))
            )
    return problems


def _canonical(distribution: str) -> str:
    """PEP 503 normalisation: ``My_Plugin`` and ``my-plugin`` name the same distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _check_network(component: Component, probe: _Probe) -> None:
    obs_dim, n_actions = probe.obs_dim, probe.n_actions
    build = f"factory(obs_dim={obs_dim}, n_actions={n_actions})"
    net = _stage(build, lambda: component.factory(obs_dim, n_actions))
    if not isinstance(net, torch.nn.Module):
        raise _Violation(build, f"returned {type(net).__name__}, not a torch.nn.Module")
    if not any(p.requires_grad for p in net.parameters()):
        raise _Violation(build, "the network has no trainable parameters: the optimiser needs some")
    net.train()
    for batch in (PROBE_BATCH, 1):
        obs = probe.observations(batch)
        q_values = _stage(f"forward on float32 ({batch}, {obs_dim}) in train mode", lambda obs=obs: net(obs))
        _stage("Q-values", lambda q=q_values, b=batch: check_q_values(q, b, n_actions))
        if not bool(torch.isfinite(q_values).all()):
            raise _Violation("Q-values", "forward returned NaN or infinite Q-values")
    _stage("backward from the Q-values", lambda: q_values.sum().backward())
    if all(p.grad is None for p in net.parameters()):
        raise _Violation("backward from the Q-values", "no parameter received a gradient")
    net.eval()
    with torch.no_grad():
        obs = probe.observations(PROBE_BATCH)
        q_values = _stage(f"forward on float32 ({PROBE_BATCH}, {obs_dim}) in eval mode", lambda: net(obs))
        _stage("Q-values in eval mode", lambda: check_q_values(q_values, PROBE_BATCH, n_actions))
    net.train()
    _stage("copy.deepcopy (the target network is a deep copy)", lambda: copy.deepcopy(net))

    def reload() -> None:
        buffer = io.BytesIO()
        torch.save(net.state_dict(), buffer)
        buffer.seek(0)
        fresh = component.factory(obs_dim, n_actions)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))

    _stage("saving and reloading the weights (state_dict, torch.load weights_only=True)", reload)


def _check_exploration(component: Component, probe: _Probe) -> None:
    n_actions = probe.n_actions
    build = f"factory(n_actions={n_actions}, total_steps={PROBE_TOTAL_STEPS})"
    explorer = _stage(build, lambda: component.factory(n_actions, PROBE_TOTAL_STEPS))
    if not callable(getattr(explorer, "select", None)):
        raise _Violation(build, f"returned {type(explorer).__name__}, which has no select(q_values, step) method")
    for batch in (2, 1):
        q_values = torch.randn(batch, n_actions)
        for step in (0, PROBE_TOTAL_STEPS // 2, PROBE_TOTAL_STEPS - 1):
            stage = f"select(Q-values ({batch}, {n_actions}), step={step})"
            actions = _stage(stage, lambda q=q_values, s=step: explorer.select(q, s))
            _stage(stage, lambda a=actions, b=batch: check_actions(a, b, n_actions))


def _check_replay(component: Component, probe: _Probe) -> None:
    obs_dim = probe.obs_dim
    build = f"factory(capacity={PROBE_CAPACITY}, obs_dim={obs_dim}, gamma={PROBE_GAMMA})"
    buffer = _stage(build, lambda: component.factory(PROBE_CAPACITY, obs_dim, PROBE_GAMMA))
    missing = [m for m in ("add", "sample", "update_priorities", "__len__") if not callable(getattr(buffer, m, None))]
    if missing:
        raise _Violation(build, f"returned {type(buffer).__name__}, which has no {', '.join(missing)}")
    for i, transition in enumerate(probe.transitions):
        _stage(f"add() of transition {i}", lambda t=transition: buffer.add(*t))
    size = _stage("len()", lambda: len(buffer))
    if size < PROBE_BATCH:
        raise _Violation("len()", f"is {size} after {len(probe.transitions)} add() calls: sample() is never reached")
    batch = _stage(f"sample({PROBE_BATCH})", lambda: buffer.sample(PROBE_BATCH))
    _stage(f"sample({PROBE_BATCH})", lambda: check_batch(batch, PROBE_BATCH, obs_dim))
    if not bool(((batch.discounts >= 0) & (batch.discounts <= 1)).all()):
        raise _Violation(f"sample({PROBE_BATCH})", "Batch.discounts must lie in [0, 1] (γ or γᵏ)")
    if not bool((torch.isfinite(batch.weights) & (batch.weights >= 0)).all()):
        raise _Violation(f"sample({PROBE_BATCH})", "Batch.weights must be finite and non-negative")
    _stage(
        f"update_priorities(indices, td_errors=zeros({PROBE_BATCH}))",
        lambda: buffer.update_priorities(batch.indices, torch.zeros(PROBE_BATCH)),
    )


def _check_executor(component: Component, probe: _Probe | None) -> None:
    executor = _stage("factory(workers=1)", lambda: component.factory(workers=1))
    items = [-1, 2, -3]
    try:
        outcomes = _stage("map_unordered(abs, [-1, 2, -3])", lambda: list(executor.map_unordered(abs, items)))
    finally:
        _stage("close()", lambda: executor.close())
    got = {}
    for outcome in outcomes:
        if not (isinstance(outcome, tuple) and len(outcome) == 2):
            raise _Violation("map_unordered", f"yielded {outcome!r}, not an (item, result) pair")
        got[outcome[0]] = outcome[1]
    if sorted(got) != sorted(items) or len(outcomes) != len(items):
        raise _Violation("map_unordered", f"yielded items {[o[0] for o in outcomes]}, expected each of {items} once")
    wrong = {item: result for item, result in got.items() if result != abs(item)}
    if wrong:
        raise _Violation("map_unordered", f"yielded wrong results {wrong} (an exception means the call failed)")


#: the probe of each component kind
CHECKS: dict[str, Callable[[Component, _Probe], None]] = {
    "network": _check_network,
    "replay": _check_replay,
    "exploration": _check_exploration,
    "executor": _check_executor,
}


# --- the command -------------------------------------------------------------------------------


def plugins_command(
    verbose: bool = False,
    check: bool = False,
    env_id: str = "CartPole-v1",
    stream: TextIO | None = None,
    registry: Registry | None = None,
    kinds: Sequence[str] | None = None,
) -> int:
    """``dqnbench plugins [--verbose] [--check [--env ID]]``: print the listing (and the check); return the exit code.

    Returns 1 when ``check`` finds a problem, else 0. ``registry`` defaults to
    every installed plugin; ``kinds`` are the kinds checked (see :func:`check_components`).
    """
    stream = stream or sys.stdout
    registry = registry or load_registry()
    console = Console(file=stream, width=max(120, Console(file=stream).width))
    console.print(describe_plugins(registry, verbose))
    if not check:
        return 0
    problems = check_components(registry, env_id, kinds)
    checked = len([c for c in registry.all() if c.kind in (kinds or DEFAULT_KINDS)])
    if not problems:
        print(f"checked {checked} components on {env_id}: every one meets its contract", file=stream)
        return 0
    print(f"checked {checked} components on {env_id}: {len(problems)} problem(s)", file=stream)
    for problem in problems:
        print(f"  {problem}", file=stream)
    return 1


def to_text(renderable: RenderableType, width: int = 120) -> str:
    """Plain text of a rich renderable (for tests, logs and notebooks)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()
