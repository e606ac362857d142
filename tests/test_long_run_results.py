"""A 10M-step run's results: the steps table is windowed, and the whole run directory stays under 100 MB."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dqnbench.agent.records import PER_STEP_ROWS, StepRecords, steps_window
from dqnbench.builtin.conv import nature_cnn
from dqnbench.plugin.obs import ObsSpec
from dqnbench.run.results import RunOutput, load_results, write_plan, write_run

TOTAL = 10_000_000


def test_runs_up_to_100k_steps_keep_a_row_per_step_and_longer_ones_are_windowed():
    assert steps_window(PER_STEP_ROWS) == 1
    assert steps_window(TOTAL) == 100 and steps_window(TOTAL, window=10) == 10
    records = StepRecords(1_000, rows=2, window=100)
    for step in range(1_000):
        learned = np.array([0.5, 1.5]) if step >= 250 else None
        records.record(step, np.array([1.0, 0.0]), learned, 1e-4, 2e-4, 3e-4)
        if records.probe_due(step):
            records.probe(step, np.array([2.0, 4.0]), 0.1)
    table = records.table(1, np.array([400]), rows_share=2)
    assert len(table["step"]) == 10 and table["steps_n"].tolist() == [100] * 10
    # the episode at each window's start (the first ended after 400 env steps: step 400 begins the second)
    assert table["episode"].tolist() == [0] * 4 + [1] * 6
    assert table["reward"].sum() == 0.0 and records.table(0, np.array([]), 2)["reward"].sum() == 1_000
    assert np.isnan(table["loss"][:2]).all() and table["loss"][2] == pytest.approx(1.5)  # mean over learn steps
    assert table["t_act"].sum() == pytest.approx(1_000 * 1e-4 / 2)  # sums, each row's share
    assert table["q_max"].tolist() == [4.0] * 10 and table["epsilon"].tolist() == pytest.approx([0.1] * 10)


def test_a_10m_step_atari_run_writes_under_100_mb(tmp_path):
    """Windowed steps (100k rows), 4,000 episodes, 200 evaluations of 10 episodes, nature_cnn's weights."""
    rng = np.random.default_rng(0)
    records = StepRecords(TOTAL, rows=1, window=steps_window(TOTAL))
    windows = len(records.times[0])
    # what 10M steps leave in the window sums (filled directly: recording 10M steps takes minutes)
    records.reward[:, 0] = rng.integers(0, 5, windows)
    records.times[:] = rng.uniform(0.01, 0.05, records.times.shape)
    records.loss[:, 0] = rng.uniform(0, 1, windows) * 25
    records.learn_n[:] = 25
    records.q_max[:, 0] = rng.normal(5, 1, windows)
    records.epsilon[:] = np.linspace(1, 0.01, windows)[:, None]  # one column per row
    ends = np.sort(rng.choice(TOTAL, 4_000, replace=False))
    steps = records.table(0, ends, rows_share=1)
    episodes = {
        "episode": np.arange(len(ends)),
        "step": ends,
        "return": rng.normal(10, 5, len(ends)),
        "length": np.diff(ends, prepend=0),
    }
    returns = [rng.normal(10, 5, 10).tolist() for _ in range(200)]
    evals = {
        "step": list(range(0, TOTAL, 50_000)),
        "mean_return": [float(np.mean(r)) for r in returns],
        "std_return": [float(np.std(r)) for r in returns],
        "returns": returns,
    }
    weights = nature_cnn(ObsSpec((4, 84, 84), "uint8", frames=4), 18).state_dict()
    record = {"run_id": "long-s0", "cell": "long", "label": "default", "seed": 0, "status": "ok", "error": None}
    (tmp_path / "grid.toml").write_text('[experiment]\nname = "long"\n')
    write_plan(tmp_path, tmp_path / "grid.toml", ["long-s0"])
    run_dir = write_run(tmp_path, RunOutput(record, steps, episodes, evals, weights))
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert len(pd.read_parquet(run_dir / "steps.parquet")) == 100_000
    print(f"10M-step run: {size / 2**20:.1f} MiB on disk")
    assert size < 100 * 2**20, size
    assert len(load_results(tmp_path).steps) == 100_000
