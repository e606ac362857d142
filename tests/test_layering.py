"""Import-graph facts the layout promises, checked in a fresh interpreter each."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dqnbench"


def imported_after(statement: str) -> set[str]:
    """The modules a fresh Python has loaded after running ``statement``."""
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_parsing_a_grid_loads_neither_torch_nor_the_agent():
    loaded = imported_after("import dqnbench.config.grid")
    assert "torch" not in loaded
    assert not [m for m in loaded if m.startswith("dqnbench.agent")]


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_builtin_env_modules_import_one_way():
    """``builtin.envs`` uses ``atari`` and ``minatar_env``; they never import it back, not even lazily."""
    for module in ("atari", "minatar_env"):
        assert "dqnbench.builtin.envs" not in imports_of(PACKAGE / "builtin" / f"{module}.py"), module


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def module_level_imports(path: Path) -> set[str]:
    """The dqnbench modules ``path`` imports when it is imported (not in functions, not under ``if TYPE_CHECKING``)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in found if name in MODULES}


def test_the_package_has_no_import_cycles():
    graph = {name: module_level_imports(path) - {name} for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join((*path[path.index(name) :], name)))
        if name not in done:
            for imported in sorted(graph[name]):
                visit(imported, (*path, name))
            done.add(name)

    for name in sorted(graph):
        visit(name, ())


def layer_imports(package: str) -> dict[str, set[str]]:
    """Each module of a subpackage → the dqnbench modules it imports anywhere (lazily too)."""
    return {
        name: {m for m in imports_of(path) if m.startswith("dqnbench")}
        for name, path in MODULES.items()
        if name.startswith(f"dqnbench.{package}.")
    }


def test_config_imports_nothing_from_the_agent_and_the_loop_nothing_from_the_runner_cli_or_analysis():
    for package, never in (("config", ("agent", "run", "builtin")), ("agent", ("run", "cli", "analysis", "search"))):
        for name, imported in layer_imports(package).items():
            bad = sorted(m for m in imported if m.split(".")[1] in never)
            assert not bad, f"{name} imports {bad}"


#: private names a module imports from another, still to be made public (the learners' param checks)
KNOWN_PRIVATE_IMPORTS = {
    ("dqnbench.builtin.iqn", "dqnbench.builtin.learners", "_check_bool"),
    ("dqnbench.builtin.iqn", "dqnbench.builtin.learners", "_check_number"),
    ("dqnbench.builtin.distributional", "dqnbench.builtin.learners", "_check_bool"),
    ("dqnbench.builtin.distributional", "dqnbench.builtin.learners", "_check_number"),
}


def test_no_private_name_crosses_modules():
    crossing = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dqnbench"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                crossing.update((name, node.module, imported) for imported in private)
    assert crossing <= KNOWN_PRIVATE_IMPORTS, sorted(crossing - KNOWN_PRIVATE_IMPORTS)


def test_the_run_layer_never_switches_on_builtin_replay_names():
    """The runner asks a replay's factory (its ``memory_bytes``, its ``lockstep``), whoever provides it."""
    from dqnbench.plugin.registry import load_registry

    names = set(load_registry(load_entrypoints=False).names("replay"))
    for path in (PACKAGE / "run").glob("*.py"):
        strings = {
            n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Constant)
        }
        assert not strings & names, f"{path.name} names built-in replays {sorted(strings & names)}"


def test_the_list_of_component_kinds_is_written_once():
    """``registry.KINDS`` / ``RUN_KINDS`` are read everywhere; no module writes the whole list again."""
    from dqnbench.plugin.registry import KINDS, RUN_KINDS

    whole = (set(KINDS), set(RUN_KINDS))
    for name, path in MODULES.items():
        if name == "dqnbench.plugin.registry":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                items = node.elts
            elif isinstance(node, ast.Dict) and all(isinstance(v, ast.Constant) for v in node.values):
                items = node.keys  # a table of plain values per kind (a dict of a function per kind is fine)
            else:
                continue
            values = {item.value for item in items if isinstance(item, ast.Constant)}
            assert len(values) < len(items) or values not in whole, f"{name}:{node.lineno} restates the kinds"
