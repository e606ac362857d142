"""``dqnbench new-plugin NAME``: a ready third-party plugin package in one command.

Modelled on datasette's plugin template: the package it writes is what a
stranger would publish — a ``pyproject.toml`` declaring the ``dqnbench`` entry
point, a module with one working component of the chosen kind, a README and
tests that go through dqnbench's public API — and it passes its own tests right
after ``pip install -e``, so a plugin is tested from its first minute. The
templates are string constants below (no package data to ship); names are
validated before anything is written.
"""

from __future__ import annotations

import builtins
import importlib.util
import keyword
import re
import string
from dataclasses import dataclass
from pathlib import Path

from dqnbench.errors import DqnbenchError
from dqnbench.version import __version__

#: the kinds a template exists for (every kind a grid names), with the built-in each generated test compares against
KINDS: dict[str, str] = {
    "network": "mlp",
    "replay": "uniform",
    "exploration": "linear",
    "env": "gymnasium",
    "learner": "dqn",
    "optimizer": "adam",
}

# PEP 508: letters, digits, ".", "_", "-"; starting and ending with a letter or digit
_DIST_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
# module-level names of the templates that a component name must not shadow
_TEMPLATE_GLOBALS = {
    "annotations", "Sequence", "np", "numpy", "torch", "nn", "F", "dqnbench", "pytest", "re", "io", "copy", "types",
    "gym", "gymnasium", "Linear", "relu_mlp", "as_float_features", "split_outputs", "textwrap", "canonical",
}  # fmt: skip


@dataclass(frozen=True)
class PluginNames:
    """The names one plugin package is known by, all derived from its distribution name."""

    #: distribution name (``pip install dqnbench-my-net``)
    distribution: str
    #: import name of the package (``dqnbench_my_net``); also the entry-point name, unique per distribution
    module: str
    #: what grids write (``network.name = "my_net"``): the module name without a ``dqnbench_`` prefix
    component: str
    #: the component's class in the generated module
    class_name: str


def plugin_names(name: str, kind: str) -> PluginNames:
    """Validate ``name`` as a distribution name and derive the module and component names.

    Raises :class:`DqnbenchError` for an invalid distribution name, a name that
    gives no valid Python identifier, a module that is already importable (it
    would be shadowed) or a component name that clashes with a built-in.
    """
    if kind not in KINDS:
        raise DqnbenchError(f"unknown plugin kind {kind!r} (allowed: {', '.join(KINDS)})")
    if not _DIST_NAME.match(name):
        raise DqnbenchError(
            f"{name!r} is not a valid distribution name: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit (e.g. dqnbench-my-network)"
        )
    names = _derive(name)
    module, component = names.module, names.component
    if not module.isidentifier() or keyword.iskeyword(module):
        raise DqnbenchError(f"{name!r} gives the module name {module!r}, which is not a Python identifier")
    if (
        not component.isidentifier()
        or keyword.iskeyword(component)
        or component in _TEMPLATE_GLOBALS
        or hasattr(builtins, component)
    ):
        raise DqnbenchError(
            f"{name!r} gives the component name {component!r}, which cannot name a Python function; "
            "pick another name, e.g. dqnbench-my-" + kind
        )
    spec = importlib.util.find_spec(module)
    if spec is not None:
        raise DqnbenchError(
            f"a module named {module!r} is already importable ({spec.origin}); pick another name so that "
            "installing the plugin does not shadow it"
        )
    from dqnbench.plugin.registry import load_registry

    if component in load_registry(load_entrypoints=False).names(kind):
        raise DqnbenchError(
            f'{kind} "{component}" is a built-in dqnbench component; a plugin offering the same name would '
            "make every grid that names it fail. Pick another name."
        )
    return names


def write_plugin(name: str, kind: str, dest: Path) -> Path:
    """Write a ready-to-install plugin package for one component of ``kind`` into ``dest``.

    ``dest`` is created if missing and must be empty if it exists. Returns
    ``dest``. The package: ``pyproject.toml`` (with the ``dqnbench`` entry
    point), ``README.md``, ``src/<module>/{__init__,plugin}.py`` (a working
    component) and ``tests/test_<module>.py``; ``pip install -e <dest>`` then
    ``python -m pytest <dest>`` passes.
    """
    names = plugin_names(name, kind)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DqnbenchError(f"{dest} already exists and is not an empty directory; choose another --dir")
    values = {
        "dist": names.distribution,
        "module": names.module,
        "component": names.component,
        "Class": names.class_name,
        "kind": kind,
        "builtin": KINDS[kind],
        "hook": _HOOKS[kind],
        "dqnbench_min": ".".join(__version__.split(".")[:2]),
        "dependencies": ", ".join(f'"{d}"' for d in _DEPENDENCIES[kind]),
        "summary": _SUMMARIES[kind],
        "grid": string.Template(_GRIDS[kind]).substitute(component=names.component),
        "small_network": "" if kind == "network" else "[network]\nhidden = [16]\n\n",
        "params": _PARAMS[kind],
        "imports": _test_imports(kind),
    }
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        ".gitignore": _GITIGNORE,
        f"src/{names.module}/__init__.py": _INIT,
        f"src/{names.module}/py.typed": "",
        f"src/{names.module}/plugin.py": _PLUGINS[kind],
        f"tests/test_{names.module}.py": _TESTS_HEAD + _TESTS[kind] + _TESTS_GRID,
    }
    for relative, template in files.items():
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(string.Template(template).substitute(values), encoding="utf-8")
    return dest


def next_steps(dest: Path, name: str, kind: str) -> str:
    """What ``dqnbench new-plugin`` prints after writing the package."""
    names = _derive(name)
    return (
        f'created {dest}: the dqnbench {kind} "{names.component}" in distribution {names.distribution}\n'
        f"next:\n"
        f"  cd {dest}\n"
        f'  pip install -e ".[test]"\n'
        f"  python -m pytest            # passes as generated: edit src/{names.module}/plugin.py, keep it passing\n"
        f'  dqnbench plugins --check    # lists {kind} "{names.component}" and checks its contract\n'
        f"guide: docs/plugins.md in the dqnbench repository"
    )


def _derive(name: str) -> PluginNames:
    """Module, component and class names from a distribution name (no validation)."""
    module = re.sub(r"[-_.]+", "_", name).lower()
    component = module.removeprefix("dqnbench_") or module
    class_name = "".join(part.capitalize() for part in component.split("_")) or "Component"
    return PluginNames(name, module, component, class_name)


def _test_imports(kind: str) -> str:
    """The import block of a kind's generated tests (standard library, then third party, sorted)."""
    stdlib, third = _TEST_IMPORTS[kind]
    stdlib = sorted({"io", "re", "textwrap", *stdlib})
    third = sorted({"dqnbench", "pytest", *third}, key=lambda m: m.split()[0])
    lines = [f"import {m}" for m in stdlib] + [""] + [f"import {m}" for m in third]
    return "\n".join([*lines, "from dqnbench.plugin.registry import load_registry"])


#: kind → (standard-library, third-party) modules its generated tests import beyond the common ones
_TEST_IMPORTS = {
    "network": ((), ("torch",)),
    "replay": ((), ("numpy as np", "torch")),
    "exploration": ((), ("torch",)),
    "env": ((), ("gymnasium as gym",)),
    "learner": (("copy", "types"), ("torch",)),
    "optimizer": ((), ("torch",)),
}

_HOOKS = {
    "network": "dqnbench_networks",
    "replay": "dqnbench_replays",
    "exploration": "dqnbench_explorations",
    "env": "dqnbench_envs",
    "learner": "dqnbench_learners",
    "optimizer": "dqnbench_optimizers",
}
_DEPENDENCIES = {
    "network": ["torch>=2.2"],
    "replay": ["numpy>=1.26", "torch>=2.2"],
    "exploration": ["torch>=2.2"],
    "env": ["gymnasium>=1.0"],
    "learner": ["torch>=2.2"],
    "optimizer": ["torch>=2.2"],
}
_SUMMARIES = {
    "network": "a Q-network",
    "replay": "a replay buffer",
    "exploration": "an exploration strategy",
    "env": "an environment component",
    "learner": "a learning rule",
    "optimizer": "an optimizer",
}
_PARAMS = {
    "network": "| `hidden` | `[64, 64]` | hidden-layer widths |",
    "replay": "| `capacity` | (engine) | transitions kept, oldest overwritten first |",
    "exploration": "| `start`, `end` | `1.0`, `0.05` | ε at step 0 and after the decay |\n"
    "| `fraction` | `0.1` | share of `total_steps` over which ε decays linearly |",
    "env": "| `scale` | `1.0` | factor on every reward the agent learns from (and the returns record) |",
    "learner": "| `delta` | `1.0` | Huber threshold: quadratic loss for TD errors below it, linear above |",
    "optimizer": "| `momentum` | `0.9` | momentum factor |\n| `nesterov` | `false` | Nesterov momentum |",
}
_GRIDS = {
    "network": """[network]
hidden = [16]

[grid]
"network.name" = ["mlp", "$component"]""",
    "replay": """[replay]
capacity = 10_000

[grid]
"replay.name" = ["uniform", "$component"]""",
    "exploration": """[exploration]
start = 1.0
end = 0.05
fraction = 0.1

[grid]
"exploration.name" = ["linear", "$component"]""",
    "env": """[env.$component]
scale = 0.5

[grid]
"env.name" = ["gymnasium", "$component"]""",
    "learner": """[learner.$component]
delta = 1.0

[grid]
"learner.name" = ["dqn", "$component"]""",
    "optimizer": """[optimizer.$component]
momentum = 0.9

[grid]
"optimizer.name" = ["adam", "$component"]""",
}

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "dqnbench plugin: $summary ($component)"
readme = "README.md"
requires-python = ">=3.11"
keywords = ["dqnbench", "dqn", "reinforcement-learning"]
dependencies = ["dqnbench>=$dqnbench_min", $dependencies]

[project.optional-dependencies]
test = ["pytest>=8"]

# dqnbench loads this module and calls its @dqnbench.hookimpl functions. The entry-point
# name must be unique among installed plugins, so it is the package's own name.
[project.entry-points.dqnbench]
$module = "$module.plugin"

[tool.setuptools.package-data]
$module = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

_README = """\
# $dist

A dqnbench plugin providing $summary: `$component`.

## Install and use

```bash
pip install $dist
dqnbench plugins --check     # lists $kind "$component" from $dist and checks its contract
```

Name it in a grid next to the built-ins:

```toml
$grid
```

| param | default | meaning |
| --- | --- | --- |
$params

## Develop

```bash
pip install -e ".[test]"
python -m pytest
```

The component lives in `src/$module/plugin.py`; dqnbench finds it through the entry point in
`pyproject.toml`. The tests use dqnbench's public API the way dqnbench uses the plugin: keep
them passing as you change the component. See dqnbench's plugin guide (`docs/plugins.md`)
for the contract of each hook, seeding, testing and publishing.

## Publish

```bash
python -m pip install build twine
python -m build
python -m twine upload dist/*
```
"""

_GITIGNORE = """\
__pycache__/
*.egg-info/
build/
dist/
results/
"""

_INIT = '''\
"""$dist: a dqnbench plugin providing $summary, `$component`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("$dist")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"
'''

_PLUGIN_NETWORK = '''\
"""The dqnbench network "$component".

dqnbench finds this module through the entry point in pyproject.toml and calls
the ``@dqnbench.hookimpl`` function below once, when it builds its registry.
Change the network freely but keep the contract: ``factory(obs_dim, n_actions,
**params) -> torch.nn.Module`` whose forward maps observations ``(B,
*obs_dim.shape)`` in their own dtype (``obs_dim`` is a ``dqnbench.ObsSpec``: an
int, the flat size, with ``.shape`` and ``.dtype``) to Q-values ``(B,
n_actions)``, or ``(B, n_actions, outputs)`` when dqnbench passes ``outputs > 1``
for a distributional learner. Give every param a default: a grid sets them in
``[network.$component]``. Keep all state in parameters and buffers, so that
``state_dict()`` saves the whole network.

Built from ``dqnbench.nn``'s shape-generic layers, the same module also runs K
lock-step members' stacked parameters natively (batched matmuls, no vmap).
"""

from __future__ import annotations

from collections.abc import Sequence

import dqnbench
import torch
from dqnbench.nn import Linear, as_float_features, relu_mlp, split_outputs
from torch import nn


class $Class(nn.Module):
    """A ReLU MLP ``obs → hidden… → Q`` (non-vector observations are flattened, uint8 scaled to [0, 1]).

    ``body`` ends at the last hidden activation (dqnbench's embedding plots read
    it); ``out`` is the linear head: ``n_actions × outputs`` values.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), outputs: int = 1) -> None:
        super().__init__()
        self.obs_ndim = len(getattr(obs_dim, "shape", (obs_dim,)))  # a plain int (v1 callers) is a vector
        self.n_actions, self.outputs = n_actions, outputs
        widths = [int(obs_dim), *hidden]
        self.body = relu_mlp(widths)
        self.out = Linear(widths[-1], n_actions * outputs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        values = self.out(self.body(as_float_features(obs, self.obs_ndim)))
        return split_outputs(values, self.n_actions, self.outputs)


def $component(obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), outputs: int = 1) -> $Class:
    """The factory dqnbench calls.

    :param hidden: hidden-layer widths, e.g. ``[64, 64]``.
    :param outputs: outputs per action, passed by dqnbench for distributional learners (not a grid param).
    """
    if any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in hidden):
        raise ValueError(f"hidden must be a list of positive integers, got {hidden!r}")
    return $Class(obs_dim, n_actions, tuple(hidden), outputs)


@dqnbench.hookimpl
def dqnbench_networks() -> dict:
    return {"$component": $component}
'''

_PLUGIN_REPLAY = '''\
"""The dqnbench replay "$component".

dqnbench finds this module through the entry point in pyproject.toml and calls
the ``@dqnbench.hookimpl`` function below once, when it builds its registry.
Change the buffer freely but keep the contract: ``factory(capacity, obs_dim,
gamma, **params) -> buffer`` with ``add(obs, action, reward, next_obs,
terminated)``, ``sample(batch_size) -> dqnbench.Batch``,
``update_priorities(indices, priorities)`` and ``__len__()``. ``obs_dim`` is a
``dqnbench.ObsSpec``: store observations in its ``.shape`` and ``.dtype`` (uint8
frames stay one byte). Draw random numbers from NumPy's (or torch's) global RNG:
dqnbench seeds both per run.
"""

from __future__ import annotations

import dqnbench
import numpy as np
import torch


class $Class:
    """Uniform replay of the last ``capacity`` transitions, in preallocated NumPy arrays."""

    def __init__(self, capacity: int, obs_dim: dqnbench.ObsSpec, gamma: float) -> None:
        self.capacity, self.gamma = capacity, float(gamma)
        self.obs = np.zeros((capacity, *obs_dim.shape), dtype=obs_dim.dtype)
        self.next_obs = np.zeros((capacity, *obs_dim.shape), dtype=obs_dim.dtype)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.cursor = 0
        self.size = 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.cursor
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> dqnbench.Batch:
        indices = np.random.randint(0, self.size, size=batch_size)
        return dqnbench.Batch(
            obs=torch.from_numpy(self.obs[indices]),
            actions=torch.from_numpy(self.actions[indices]),
            rewards=torch.from_numpy(self.rewards[indices]),
            next_obs=torch.from_numpy(self.next_obs[indices]),
            terminated=torch.from_numpy(self.terminated[indices]),
            weights=torch.ones(batch_size),  # importance-sampling weights: none for uniform sampling
            indices=torch.from_numpy(indices),
            discounts=torch.full((batch_size,), self.gamma),  # γ for one-step transitions
        )

    def update_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """Uniform sampling ignores the learner's priorities."""

    def __len__(self) -> int:
        return self.size


def $component(capacity: int, obs_dim: dqnbench.ObsSpec, gamma: float) -> $Class:
    """The factory dqnbench calls; add keyword params with defaults to make it configurable."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
        raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
    return $Class(capacity, obs_dim, gamma)


@dqnbench.hookimpl
def dqnbench_replays() -> dict:
    return {"$component": $component}
'''

_PLUGIN_EXPLORATION = '''\
"""The dqnbench exploration "$component".

dqnbench finds this module through the entry point in pyproject.toml and calls
the ``@dqnbench.hookimpl`` function below once, when it builds its registry.
Change the strategy freely but keep the contract: ``factory(n_actions,
total_steps, **params) -> explorer`` whose ``select(q_values, step)`` maps float
Q-values ``(B, n_actions)`` at env step ``step`` to int64 actions ``(B,)``. Draw
random numbers from torch's global RNG: dqnbench seeds it per run.
"""

from __future__ import annotations

import dqnbench
import torch


class $Class:
    """ε-greedy, ε going linearly from ``start`` to ``end`` over ``fraction`` of training."""

    def __init__(self, total_steps: int, start: float, end: float, fraction: float) -> None:
        self.start, self.end = start, end
        self.decay_steps = max(1.0, fraction * total_steps)

    def value(self, step: int) -> float:
        """ε at env step ``step``."""
        return self.start + (self.end - self.start) * min(1.0, step / self.decay_steps)

    def select(self, q_values: torch.Tensor, step: int) -> torch.Tensor:
        batch, n_actions = q_values.shape
        greedy = q_values.argmax(dim=1)
        explore = torch.rand(batch, device=q_values.device) < self.value(step)
        return torch.where(explore, torch.randint(n_actions, (batch,), device=q_values.device), greedy)


def $component(
    n_actions: int, total_steps: int, start: float = 1.0, end: float = 0.05, fraction: float = 0.1
) -> $Class:
    """The factory dqnbench calls.

    :param start: ε at step 0.
    :param end: ε after the decay.
    :param fraction: share of ``total_steps`` over which ε decays.
    """
    for param, value in (("start", start), ("end", end), ("fraction", fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{param} must be a number in [0, 1], got {value!r}")
    return $Class(total_steps, float(start), float(end), float(fraction))


# Lock-step training: select treats each row on its own and keeps no per-row state, so one
# explorer serves K members (q_values of shape (K, n_actions)).
$component.lockstep = True


@dqnbench.hookimpl
def dqnbench_explorations() -> dict:
    return {"$component": $component}
'''

_PLUGIN_ENV = '''\
"""The dqnbench env "$component".

dqnbench finds this module through the entry point in pyproject.toml and calls
the ``@dqnbench.hookimpl`` function below once, when it builds its registry.
Change the preprocessing freely but keep the contract: ``factory(env_id,
**params) -> gymnasium.Env`` with Discrete actions and Box observations, in the
shape and dtype the networks should see. ``env_id`` is the grid's
``experiment.env``. The factory runs in every worker process, so it makes the
environment from installed packages alone: dqnbench registers ``MinAtar/`` and
``ALE/`` ids before calling it; for other suites import the package that
registers an id inside the factory, and raise ``dqnbench.DqnbenchError`` naming
what to install when it is missing. For lock-step training dqnbench steps K copies
in a ``SyncVectorEnv``; a ``factory.vector(env_id, num_envs, **params)`` with
same-step autoreset can supply a faster one.
"""

from __future__ import annotations

import dqnbench
import gymnasium as gym


class $Class(gym.RewardWrapper):
    """Multiplies every reward by ``scale``; the episode returns dqnbench records are sums of scaled rewards."""

    def __init__(self, env: gym.Env, scale: float) -> None:
        super().__init__(env)
        self.scale = scale

    def reward(self, reward: float) -> float:
        return self.scale * float(reward)


def $component(env_id: str, scale: float = 1.0) -> gym.Env:
    """The factory dqnbench calls: ``gymnasium.make(env_id)`` with its rewards scaled.

    :param scale: the factor on every reward, e.g. ``0.01`` for rewards in the hundreds.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return $Class(gym.make(env_id), float(scale))


@dqnbench.hookimpl
def dqnbench_envs() -> dict:
    return {"$component": $component}
'''

_PLUGIN_LEARNER = '''\
"""The dqnbench learner "$component".

dqnbench finds this module through the entry point in pyproject.toml and calls
the ``@dqnbench.hookimpl`` function below once, when it builds its registry.
Change the rule freely but keep the contract: ``factory(n_actions, **params) ->
learner`` with ``outputs`` (outputs per action it needs from the network),
``q_values(outputs)`` (Q-values ``(…, n_actions)`` from the network's outputs)
and ``loss(nets, batch) -> dqnbench.LearnerLoss``: per-sample losses ``(…, B)``,
differentiable and not yet importance-weighted, and per-sample priorities for
the replay. ``dqnbench.LearnerBase`` gives ``outputs = 1``, ``q_values`` (the
outputs are the Q-values) and the gradient by autograd.
"""

from __future__ import annotations

import dqnbench
import torch
import torch.nn.functional as F


class $Class(dqnbench.LearnerBase):
    """DQN's TD rule (Mnih et al. 2015) with a Huber loss of threshold ``delta``.

    Per sample, ``q = Q(s, a)`` from the online network and the target
    ``y = r + γᵏ (1 − terminated) max_a' Q_target(s', a')``; the loss is
    ``½ (y − q)²`` where ``|y − q| ≤ δ`` and ``δ (|y − q| − ½ δ)`` beyond, so
    large TD errors have gradients of size ``δ`` at most. The priority is the TD
    error ``y − q``. Written over the last dimension, the same code serves one
    run (batch fields ``(B,)``) and K stacked lock-step members (``(K, B)``).
    """

    def __init__(self, delta: float) -> None:
        self.delta = delta

    def loss(self, nets, batch: dqnbench.Batch) -> dqnbench.LearnerLoss:
        q_taken = nets.online(batch.obs).gather(-1, batch.actions.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            next_q = nets.target(batch.next_obs).max(dim=-1).values
            targets = batch.rewards + batch.discounts * (1.0 - batch.terminated.float()) * next_q
        losses = F.huber_loss(q_taken, targets, reduction="none", delta=self.delta)
        return dqnbench.LearnerLoss(losses, (targets - q_taken).detach())


def $component(n_actions: int, delta: float = 1.0) -> $Class:
    """The factory dqnbench calls.

    :param delta: the Huber threshold on the TD error (1.0: Mnih et al.'s error clipping).
    """
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0:
        raise ValueError(f"delta must be a positive number, got {delta!r}")
    return $Class(float(delta))


# Lock-step training: the loss is shape-generic, so K stacked members learn in one call.
$component.lockstep = True


@dqnbench.hookimpl
def dqnbench_learners() -> dict:
    return {"$component": $component}
'''

_PLUGIN_OPTIMIZER = '''\
"""The dqnbench optimizer "$component".

dqnbench finds this module through the entry point in pyproject.toml and calls
the ``@dqnbench.hookimpl`` function below once, when it builds its registry.
Change the optimizer freely but keep the contract: ``factory(parameters, lr,
**params) -> optimizer`` whose ``step()`` applies the gradients in the
parameters' ``.grad`` (any ``torch.optim.Optimizer`` fits; the learner sets the
gradients, so dqnbench never calls ``zero_grad``). ``lr`` is the grid's
``agent.lr``.
"""

from __future__ import annotations

import dqnbench
import torch


def $component(
    parameters: list[torch.nn.Parameter], lr: float, momentum: float = 0.9, nesterov: bool = False
) -> torch.optim.SGD:
    """The factory dqnbench calls: SGD with momentum, ``torch.optim.SGD``.

    :param momentum: the momentum factor (the velocity ``v ← momentum · v + g``, then ``θ ← θ − lr · v``).
    :param nesterov: Nesterov's momentum (needs ``momentum > 0``).
    """
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be true or false, got {nesterov!r}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov needs momentum > 0")
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, nesterov=nesterov)


# Lock-step training: the update is elementwise, so K members' parameters stacked on a leading
# dimension are K independent optimizers.
$component.lockstep = True


@dqnbench.hookimpl
def dqnbench_optimizers() -> dict:
    return {"$component": $component}
'''

_PLUGINS = {
    "network": _PLUGIN_NETWORK,
    "replay": _PLUGIN_REPLAY,
    "exploration": _PLUGIN_EXPLORATION,
    "env": _PLUGIN_ENV,
    "learner": _PLUGIN_LEARNER,
    "optimizer": _PLUGIN_OPTIMIZER,
}

_TESTS_HEAD = '''\
"""Tests of $dist through dqnbench's public API, the way dqnbench uses the plugin.

They need the package installed (``pip install -e .``): dqnbench finds the
component through the entry point, as it will for your users.
"""

from __future__ import annotations

$imports

DISTRIBUTION = "$dist"


def canonical(name: str) -> str:
    """A distribution name normalised as in PEP 503."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def factory():
    component = load_registry().get("$kind", "$component")
    assert canonical(component.distribution) == canonical(DISTRIBUTION)
    return component.factory


def test_the_installed_entry_point_provides_the_component(factory):
    assert callable(factory)

'''

_TESTS_NETWORK = """
@pytest.mark.parametrize("batch", [1, 32])
def test_forward_maps_float32_observations_to_q_values(factory, batch):
    net = factory(dqnbench.ObsSpec(4), 2)
    q_values = net(torch.randn(batch, 4))
    assert q_values.shape == (batch, 2) and q_values.dtype == torch.float32


def test_uint8_frames_keep_their_shape_into_the_network(factory):
    net = factory(dqnbench.ObsSpec((3, 5, 5), "uint8"), 2)
    q_values = net(torch.randint(0, 256, (8, 3, 5, 5), dtype=torch.uint8))
    assert q_values.shape == (8, 2) and q_values.dtype == torch.float32


def test_distributional_learners_get_several_outputs_per_action(factory):
    net = factory(dqnbench.ObsSpec(4), 2, outputs=51)  # dqnbench passes outputs for C51's atoms
    assert net(torch.randn(8, 4)).shape == (8, 2, 51)


def test_weights_round_trip_through_state_dict(factory, tmp_path):
    net, fresh = factory(dqnbench.ObsSpec(4), 2), factory(dqnbench.ObsSpec(4), 2)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    fresh.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True))
    obs = torch.randn(3, 4)
    assert torch.equal(net(obs), fresh(obs))


def test_bad_params_raise_value_error(factory):
    with pytest.raises(ValueError, match="hidden"):
        factory(dqnbench.ObsSpec(4), 2, hidden=[0])

"""

_TESTS_REPLAY = """
def test_sample_returns_a_batch_of_the_contracts_shapes_and_dtypes(factory):
    buffer = factory(100, dqnbench.ObsSpec(3), 0.99)
    for t in range(50):
        obs = np.full(3, t, dtype=np.float32)
        buffer.add(obs, t % 2, float(t), obs + 1, t % 10 == 9)
    assert len(buffer) == 50
    batch = buffer.sample(16)
    assert isinstance(batch, dqnbench.Batch)
    assert batch.obs.shape == batch.next_obs.shape == (16, 3) and batch.obs.dtype == torch.float32
    assert batch.actions.shape == (16,) and batch.actions.dtype == torch.int64
    assert batch.rewards.dtype == batch.weights.dtype == batch.discounts.dtype == torch.float32
    assert batch.terminated.dtype in (torch.bool, torch.float32) and batch.indices.dtype == torch.int64
    assert torch.equal(batch.rewards, batch.obs[:, 0])  # fields of one transition stay together
    buffer.update_priorities(batch.indices, torch.zeros(16))


def test_frames_are_stored_in_their_own_dtype(factory):
    buffer = factory(10, dqnbench.ObsSpec((2, 4, 4), "uint8"), 0.99)
    frame = np.full((2, 4, 4), 255, dtype=np.uint8)
    buffer.add(frame, 0, 1.0, frame, False)
    batch = buffer.sample(4)
    assert batch.obs.shape == (4, 2, 4, 4) and batch.obs.dtype == torch.uint8


def test_bad_params_raise_value_error(factory):
    with pytest.raises(ValueError, match="capacity"):
        factory(0, dqnbench.ObsSpec(3), 0.99)

"""

_TESTS_EXPLORATION = """
@pytest.mark.parametrize("batch", [1, 2, 32])
def test_select_returns_int64_actions_in_range(factory, batch):
    explorer = factory(3, 1_000)
    for step in (0, 500, 999):
        actions = explorer.select(torch.randn(batch, 3), step)
        assert actions.shape == (batch,) and actions.dtype == torch.int64
        assert ((actions >= 0) & (actions < 3)).all()


def test_zero_epsilon_is_greedy(factory):
    explorer = factory(3, 100, start=0.0, end=0.0)
    q_values = torch.randn(16, 3)
    assert torch.equal(explorer.select(q_values, 0), q_values.argmax(dim=1))


def test_bad_params_raise_value_error(factory):
    with pytest.raises(ValueError, match="start"):
        factory(3, 100, start=2.0)

"""

_TESTS_ENV = """
def test_it_makes_the_env_with_discrete_actions_and_box_observations(factory):
    env = factory("CartPole-v1")
    assert isinstance(env.action_space, gym.spaces.Discrete)
    assert isinstance(env.observation_space, gym.spaces.Box)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and obs.dtype == env.observation_space.dtype
    env.close()


def test_rewards_are_scaled(factory):
    env = factory("CartPole-v1", scale=0.5)
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(0)
    assert reward == 0.5 and not (terminated or truncated)  # CartPole pays 1 per step
    env.close()


def test_bad_params_raise_value_error(factory):
    with pytest.raises(ValueError, match="scale"):
        factory("CartPole-v1", scale=0)

"""

_TESTS_LEARNER = """
def networks(n_obs=4, n_actions=2):
    \"\"\"What the loop hands a learner: ``online`` and ``target`` (a copy, no gradients).\"\"\"
    online = torch.nn.Linear(n_obs, n_actions)
    return types.SimpleNamespace(online=online, target=copy.deepcopy(online).requires_grad_(False))


def batch_of(*lead, n_obs=4, n_actions=2):
    \"\"\"A random batch with fields ``(*lead, …)``: ``(B,)`` for a run, ``(K, B)`` for K lock-step members.\"\"\"
    return dqnbench.Batch(
        obs=torch.randn(*lead, n_obs),
        actions=torch.randint(n_actions, lead),
        rewards=torch.randn(lead),
        next_obs=torch.randn(*lead, n_obs),
        terminated=torch.rand(lead) < 0.1,
        weights=torch.ones(lead),
        indices=torch.arange(torch.Size(lead).numel()).reshape(lead),
        discounts=torch.full(lead, 0.99),
    )


def test_one_output_per_action_read_as_q_values(factory):
    learner = factory(2)
    q_values = torch.randn(8, 2)
    assert learner.outputs == 1 and torch.equal(learner.q_values(q_values), q_values)


@pytest.mark.parametrize("lead", [(16,), (3, 16)])
def test_loss_is_per_sample_and_differentiable(factory, lead):
    nets, batch = networks(), batch_of(*lead)
    losses, priorities = factory(2).loss(nets, batch)
    assert losses.shape == priorities.shape == lead
    (batch.weights * losses).mean().backward()
    assert nets.online.weight.grad is not None and nets.target.weight.grad is None


def test_the_loss_is_the_huber_loss_of_the_td_error(factory):
    losses, td_errors = factory(2, delta=1.0).loss(networks(), batch_of(64))
    size = td_errors.abs()
    assert torch.allclose(losses, torch.where(size <= 1.0, 0.5 * td_errors**2, size - 0.5))


def test_bad_params_raise_value_error(factory):
    with pytest.raises(ValueError, match="delta"):
        factory(2, delta=0)

"""

_TESTS_OPTIMIZER = """
def test_step_follows_the_momentum_rule(factory):
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = factory([param], 0.1, momentum=0.5)
    expected, velocity = param.detach().clone(), torch.zeros(2)
    for _ in range(3):
        param.grad = 2 * param.detach()  # the gradient of θ², as a learner's backward would set it
        velocity = 0.5 * velocity + 2 * expected
        expected = expected - 0.1 * velocity
        optimizer.step()
    assert torch.allclose(param.detach(), expected)


def test_stacked_members_are_updated_as_on_their_own(factory):
    # lockstep = True promises this: K members' parameters stacked (K, …) are K independent optimizers
    stacked = torch.nn.Parameter(torch.randn(3, 5))
    alone = torch.nn.Parameter(stacked.detach()[1].clone())
    optimizers = factory([stacked], 0.1), factory([alone], 0.1)
    for _ in range(3):
        grad = torch.randn(3, 5)
        for optimizer, param, g in zip(optimizers, (stacked, alone), (grad, grad[1])):
            param.grad = g.clone()
            optimizer.step()
    assert torch.allclose(stacked.detach()[1], alone.detach())


def test_bad_params_raise_value_error(factory):
    with pytest.raises(ValueError, match="momentum"):
        factory([torch.nn.Parameter(torch.zeros(1))], 0.1, momentum=1.5)

"""

_TESTS = {
    "network": _TESTS_NETWORK,
    "replay": _TESTS_REPLAY,
    "exploration": _TESTS_EXPLORATION,
    "env": _TESTS_ENV,
    "learner": _TESTS_LEARNER,
    "optimizer": _TESTS_OPTIMIZER,
}

_TESTS_GRID = '''
GRID = """
[experiment]
name = "$module"
total_steps = 300
seeds = 2  # a cell's seeds train as lock-step members where every component declares support
eval_every = 0
eval_episodes = 2

[agent]
learning_starts = 100
batch_size = 16

$small_network$grid
"""


def test_a_tiny_grid_trains_it_next_to_the_builtin_$builtin(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(textwrap.dedent(GRID), encoding="utf-8")
    results = dqnbench.run_grid(grid, out=tmp_path / "results", executor="serial", quiet=True, stream=io.StringIO())
    assert sorted(results.runs["$kind.name"]) == sorted(["$builtin", "$component"] * 2)
    assert set(results.runs.status) == {"ok"}, results.runs.error.tolist()
'''
