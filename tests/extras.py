"""Optional extras: a test that needs one is skipped, naming the extra to install, never broken.

``needs("minatar")`` marks a test or module; ``require("minatar")`` skips from inside a test
and returns the module. With only ``.[dev]`` installed the suite runs and says what it skipped.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

#: the module a test imports → the dqnbench extra that installs it
EXTRAS = {"minatar": "minatar", "ale_py": "atari", "ray": "ray", "stable_baselines3": "bench"}


def reason(module: str) -> str:
    """The skip reason: which extra to install for ``module``."""
    extra = EXTRAS[module.split(".")[0]]
    return f'needs dqnbench[{extra}]: pip install "dqnbench[{extra}]"'


def installed(module: str) -> bool:
    return importlib.util.find_spec(module.split(".")[0]) is not None


def needs(module: str) -> pytest.MarkDecorator:
    """Skip the marked test (or module, as ``pytestmark``) unless ``module`` is installed."""
    return pytest.mark.skipif(not installed(module), reason=reason(module))


def require(module: str) -> ModuleType:
    """Import ``module`` or skip the calling test, naming the extra that provides it."""
    return pytest.importorskip(module, reason=reason(module))
