"""``dqnbench plugins [--verbose] [--check]``: the listing of :mod:`.describe` and the probes of :mod:`.check`.

The names plugin authors and tests import from here (``check_components``,
``describe_plugins``, ``Problem``, ``CHECKS``, ``DEFAULT_KINDS``) are re-exported.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console, RenderableType

from dqnbench.devtools.check import CHECKS, DEFAULT_KINDS, check_components, run_checks  # noqa: F401 - re-exported
from dqnbench.devtools.describe import Problem, describe_plugins, missing_requirement  # noqa: F401 - re-exported
from dqnbench.plugin.registry import Registry, load_registry


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
    problems, skipped, checked = run_checks(registry, env_id, kinds)
    for note in skipped:
        print(f"skipped {note}", file=stream)
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
