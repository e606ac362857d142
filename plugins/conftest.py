"""The example packages' tests run where the package is installed (``pip install ./plugins/NAME``).

Without it they are not collected, and the session header says which and how to install
them, so a checkout with only ``.[dev]`` runs the rest of the suite instead of erroring.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).parent
#: folder → the module its package installs
PACKAGES = {path.name: path.name.replace("-", "_") for path in HERE.iterdir() if (path / "pyproject.toml").is_file()}
MISSING = sorted(folder for folder, module in PACKAGES.items() if importlib.util.find_spec(module) is None)

collect_ignore = [str(HERE / folder) for folder in MISSING]


def pytest_report_header(config) -> str | None:
    if MISSING:
        install = " ".join(f"./plugins/{folder}" for folder in MISSING)
        return f"example plugin tests not collected (not installed): pip install {install}"
    return None
