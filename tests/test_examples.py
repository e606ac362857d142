"""Every grid under ``examples/`` (and the default ``grid.toml``) is valid: ``dqnbench run --dry-run`` accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dqnbench.cli import main
from tests.extras import require

REPO = Path(__file__).resolve().parents[1]
GRIDS = sorted((REPO / "examples").glob("*.toml")) + [REPO / "grid.toml"]


@pytest.mark.parametrize("grid", GRIDS, ids=[g.name for g in GRIDS])
def test_example_grids_pass_the_dry_run(grid, capsys):
    if "minatar" in grid.read_text().lower():
        require("minatar")
    assert main(["run", "--grid", str(grid), "--dry-run", "--out", "unused"]) == 0, capsys.readouterr().err
    assert "runs" in capsys.readouterr().out
