"""Fused members are draws of the same distribution as independent runs (issue #24, statistics).

Two learning rates × 8 seeds, trained fused (one pool) and as independent runs: for each config the
final returns and the evaluation curves of the two ways are indistinguishable (two-sample tests that
detect a learning rate of 1e-6 against 3e-3 on the same data sizes).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy import stats

import dqnbench

GRID = """
[experiment]
name = "dist"
env = "CartPole-v1"
total_steps = 3000
seeds = 8
eval_every = 1000
eval_episodes = 5
checkpoint_every = 0

[agent]
learning_starts = 300
batch_size = 32
target_update = 100

[network]
hidden = [32]

[exploration]
fraction = 0.3

[grid]
"agent.lr" = [1e-6, 3e-3]
"""


@pytest.mark.slow
def test_fused_members_match_independent_runs_in_distribution(tmp_path):
    grid = tmp_path / "dist.toml"
    grid.write_text(GRID)

    def run(name: str, **kwargs) -> dqnbench.Results:
        res = dqnbench.run_grid(
            grid, tmp_path / name, executor="process", workers=2, quiet=True, stream=io.StringIO(),
            plots=False, load_entrypoints=False, **kwargs,
        )  # fmt: skip
        assert set(res.runs.status) == {"ok"}
        return res

    fused, independent = run("fused"), run("independent", lockstep=False)
    assert all(fused.record(r)["lockstep"].get("fused") for r in fused.runs.run_id)

    def finals(res: dqnbench.Results, lr: float) -> np.ndarray:
        return res.runs[res.runs["agent.lr"] == lr]["final_return"].to_numpy()

    def curve_area(res: dqnbench.Results, lr: float) -> np.ndarray:
        ids = set(res.runs.run_id[res.runs["agent.lr"] == lr])
        evals = res.evals[res.evals.run_id.isin(ids)]
        return evals.groupby("run_id").mean_return.mean().to_numpy()  # per run: mean over its evaluations

    for lr in (1e-6, 3e-3):
        for measure in (finals, curve_area):
            p = stats.mannwhitneyu(measure(fused, lr), measure(independent, lr)).pvalue
            assert p > 0.01, (lr, measure.__name__, measure(fused, lr), measure(independent, lr))
    # the same test on these sizes tells a learner from a non-learner: it can fail
    assert stats.mannwhitneyu(finals(independent, 3e-3), finals(fused, 1e-6)).pvalue < 0.01
