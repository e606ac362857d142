"""``dqnbench new-plugin NAME``: a ready third-party plugin package in one command.

Modelled on datasette's plugin template: the package it writes is what a
stranger would publish — a ``pyproject.toml`` declaring the ``dqnbench`` entry
point, a module with one working component of the chosen kind, a README and
tests that go through dqnbench's public API — and it passes its own tests right
after ``pip install -e``, so a plugin is tested from its first minute. The
templates are package data (``devtools/templates/``: files shared by every kind,
and per kind its ``plugin.py``, tests and a ``kind.toml`` of the values to fill
in), read with ``importlib.resources``; names are validated before anything is
written.
"""

from __future__ import annotations

import builtins
import functools
import importlib.resources
import importlib.util
import keyword
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnbench.errors import DqnbenchError
from dqnbench.plugin.registry import KINDS as HOOKS
from dqnbench.plugin.registry import RUN_KINDS
from dqnbench.version import __version__

#: the templates: shared files, and a folder per kind
TEMPLATES = importlib.resources.files("dqnbench.devtools") / "templates"


def _template(*parts: str) -> str:
    return TEMPLATES.joinpath(*parts).read_text(encoding="utf-8")


@functools.cache
def kind_values(kind: str) -> dict[str, Any]:
    """The values a kind's template fills in, from its ``kind.toml`` (builtin, summary, params, grid, …)."""
    values = tomllib.loads(_template(kind, "kind.toml"))
    return {key: value.strip("\n") if isinstance(value, str) else value for key, value in values.items()}


#: the kinds a template exists for (every kind a grid names), with the built-in each generated test compares against
KINDS: dict[str, str] = {kind: kind_values(kind)["builtin"] for kind in RUN_KINDS}

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
    meta = kind_values(kind)
    values = {
        "dist": names.distribution,
        "module": names.module,
        "component": names.component,
        "Class": names.class_name,
        "kind": kind,
        "builtin": meta["builtin"],
        "hook": HOOKS[kind],
        "dqnbench_min": ".".join(__version__.split(".")[:2]),
        "dependencies": ", ".join(f'"{d}"' for d in meta["dependencies"]),
        "summary": meta["summary"],
        "grid": string.Template(meta["grid"]).substitute(component=names.component),
        "small_network": "" if kind == "network" else "[network]\nhidden = [16]\n\n",
        "params": meta["params"],
        "imports": _test_imports(meta["test_imports"], meta["test_third_party"]),
    }
    files = {
        "pyproject.toml": _template("pyproject.toml.tmpl"),
        "README.md": _template("README.md.tmpl"),
        ".gitignore": _template("gitignore.tmpl"),
        f"src/{names.module}/__init__.py": _template("__init__.py.tmpl"),
        f"src/{names.module}/py.typed": "",
        f"src/{names.module}/plugin.py": _template(kind, "plugin.py.tmpl"),
        f"tests/test_{names.module}.py": _template("tests_head.py.tmpl")
        + _template(kind, "tests.py.tmpl")
        + _template("tests_grid.py.tmpl"),
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


def _test_imports(stdlib: list[str], third: list[str]) -> str:
    """The import block of a kind's generated tests (standard library, then third party, sorted)."""
    stdlib = sorted({"io", "re", "textwrap", *stdlib})
    third = sorted({"dqnbench", "pytest", *third}, key=lambda m: m.split()[0])
    lines = [f"import {m}" for m in stdlib] + [""] + [f"import {m}" for m in third]
    return "\n".join([*lines, "from dqnbench.plugin.registry import load_registry"])
