"""Learning tests: the default agent really learns CartPole-v1 (slow; run in CI too)."""

from __future__ import annotations

import io
import time

import pytest

import dqnbench

RANDOM_POLICY_RETURN = 22.0  # CartPole-v1's mean return under uniformly random actions

DEFAULT_AGENT = """
[experiment]
name = "learns"
env = "CartPole-v1"
total_steps = 15_000
seeds = [0, 1]
eval_every = 2_500
eval_episodes = 10
"""


@pytest.mark.slow
def test_default_agent_learns_cartpole(tmp_path):
    """Every seed's greedy return (mean of 10 episodes) reaches 195 within 15k steps, in under 2 minutes.

    195 is CartPole's classic "solved" bar; the agent is the default of every
    [agent], [network], [replay] and [exploration] key. The final evaluation
    must also stay far above a random policy (DQN on CartPole oscillates once
    it is good, so the bar for the last evaluation is lower).
    """
    grid = tmp_path / "grid.toml"
    grid.write_text(DEFAULT_AGENT)
    start = time.perf_counter()
    res = dqnbench.run_grid(grid, tmp_path / "out", workers=2, stream=io.StringIO())
    elapsed = time.perf_counter() - start
    assert set(res.runs.status) == {"ok"}
    best = res.evals.groupby("run_id").mean_return.max()
    assert (best >= 195).all(), best.to_dict()
    assert (res.runs.final_return >= 5 * RANDOM_POLICY_RETURN).all(), res.runs.final_return.tolist()
    assert elapsed < 120, f"took {elapsed:.0f} s"
