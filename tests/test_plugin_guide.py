"""docs/plugins.md cannot rot: every code block in it is executed or checked here.

- ``python`` blocks run top to bottom in one module (as if they were one plugin
  module plus its tests) in a temporary directory; the ``test_*`` functions they
  define are then called, as pytest would.
- ``toml`` blocks are parsed; a grid (``[experiment]``) is validated against the
  registry holding the guide's own plugin, a ``pyproject.toml`` excerpt must
  declare a ``dqnbench`` entry point.
- ``bash`` blocks: every ``dqnbench …`` command is parsed by the real command
  line. Other commands cannot run in a test, so a block holding one must say why
  in a ``<!-- not executed: REASON -->`` line just above it.
"""

from __future__ import annotations

import inspect
import re
import shlex
import sys
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from dqnbench.cli import build_parser
from dqnbench.config.grid import load_grid
from dqnbench.plugin.registry import load_registry

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
MODULE_NAME = "dqnbench_plugin_guide"
CHECKED_LANGUAGES = ("python", "toml", "bash")

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_EXECUTED = re.compile(r"<!--\s*not executed:\s*(?P<reason>.*?)\s*-->\s*$")
_ENTRY_POINT_VALUE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


@dataclass(frozen=True)
class Block:
    """A fenced code block of the guide."""

    lang: str
    code: str
    line: int  # of the opening fence, for messages
    not_executed: str | None  # the reason given above the block, if any

    @property
    def where(self) -> str:
        return f"{GUIDE.name}:{self.line} ({self.lang or 'no language'} block)"


def guide_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the guide, in order."""
    text = GUIDE.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for match in _FENCE.finditer(text):
        above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = _NOT_EXECUTED.search(above)
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(match["lang"], match["code"], line, reason["reason"] if reason else None))
    return blocks


def shell_commands(block: Block) -> list[list[str]]:
    """The commands of a bash block, comments dropped."""
    return [words for line in block.code.splitlines() if (words := shlex.split(line, comments=True))]


def test_the_guide_has_blocks_of_each_checked_language():
    languages = {block.lang for block in guide_blocks()}
    assert set(CHECKED_LANGUAGES) <= languages


def test_every_block_is_checked_or_says_why_not():
    for block in guide_blocks():
        if block.not_executed is not None:
            reason = block.not_executed
            assert len(reason.split()) >= 3, f"{block.where}: give a real reason, not {reason!r}"
            assert block.lang != "python", f"{block.where}: Python blocks are always executed"
        else:
            assert block.lang in CHECKED_LANGUAGES, f"{block.where}: no checker for this language; say why not"


def test_every_dqnbench_command_parses_and_other_commands_are_explained():
    parser = build_parser()
    for block in (b for b in guide_blocks() if b.lang == "bash"):
        for words in shell_commands(block):
            if words[0] != "dqnbench":
                assert block.not_executed, f"{block.where}: runs {words[0]!r}; only dqnbench commands are checked"
                continue
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"{block.where}: {shlex.join(words)!r} is not a valid dqnbench command")


def check_toml(block: Block, module: types.ModuleType, tmp_path: Path) -> None:
    try:
        data = tomllib.loads(block.code)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{block.where}: invalid TOML: {exc}")
    if "experiment" in data:
        path = tmp_path / f"guide-grid-{block.line}.toml"
        path.write_text(block.code, encoding="utf-8")
        plan = load_grid(path, load_registry(extra_plugins=(module,)))
        assert plan.runs, f"{block.where}: the grid has no runs"
    elif "project" in data:
        entry_points = data["project"].get("entry-points", {}).get("dqnbench")
        assert entry_points, f"{block.where}: a pyproject.toml excerpt must declare [project.entry-points.dqnbench]"
        for name, value in entry_points.items():
            assert _ENTRY_POINT_VALUE.match(value), f"{block.where}: entry point {name} = {value!r} is not a module"
    else:
        pytest.fail(f"{block.where}: a TOML block must be a grid or a pyproject.toml excerpt")


def test_the_guide_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(MODULE_NAME)
    monkeypatch.setitem(sys.modules, MODULE_NAME, module)
    for block in guide_blocks():
        if block.lang == "python":
            code = compile(block.code, block.where, "exec")
            exec(code, module.__dict__)
        elif block.lang == "toml" and block.not_executed is None:
            check_toml(block, module, tmp_path)
    tests = {
        name: fn
        for name, fn in vars(module).items()
        if name.startswith("test_") and inspect.isfunction(fn) and fn.__module__ == MODULE_NAME
    }
    assert tests, "the guide's testing section defines no test functions"
    for name, fn in tests.items():
        kwargs = {}
        if "tmp_path" in inspect.signature(fn).parameters:
            kwargs["tmp_path"] = tmp_path / name
            kwargs["tmp_path"].mkdir()
        fn(**kwargs)
