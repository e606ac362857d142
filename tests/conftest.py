"""Shared fixtures: tiny grids that run in a second or two, and plugin helpers."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import torch

from dqnbench.plugin.registry import load_registry

TINY_EXPERIMENT = """
[experiment]
name = "{name}"
env = "CartPole-v1"
total_steps = {steps}
seeds = {seeds}
eval_every = {eval_every}
eval_episodes = 2

[agent]
learning_starts = 100
batch_size = 16
target_update = 50

[network]
hidden = [16]
"""


@pytest.fixture(autouse=True)
def _one_torch_thread():
    torch.set_num_threads(1)


@pytest.fixture
def write_grid(tmp_path: Path):
    """Write a tiny grid (CartPole, a few hundred steps) plus extra TOML; return its path."""

    def write(
        extra: str = "",
        name: str = "tiny",
        steps: int = 300,
        seeds: int = 2,
        eval_every: int = 150,
        filename: str = "grid.toml",
    ) -> Path:
        text = TINY_EXPERIMENT.format(name=name, steps=steps, seeds=seeds, eval_every=eval_every)
        path = tmp_path / filename
        path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
        return path

    return write


@pytest.fixture
def eta_readings(monkeypatch) -> list[tuple[float, int, int, float]]:
    """Every ``(time, steps done, steps planned, ETA seconds)`` the progress bar computes, as it computes them."""
    from dqnbench.run.progress import RunProgress

    seen: list[tuple[float, int, int, float]] = []
    refresh = RunProgress._refresh

    def spy(self, force_line=False):
        seen.append((time.perf_counter(), self.steps_done(), self.total_steps, self.eta_s()))
        refresh(self, force_line)

    monkeypatch.setattr(RunProgress, "_refresh", spy)
    return seen


@pytest.fixture
def registry():
    """A registry of the built-ins only (no installed entry points)."""
    return load_registry(load_entrypoints=False)
