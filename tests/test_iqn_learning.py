"""``iqn`` learns: Tianshou's IQN test settings reach that test's pass mark on CartPole-v1, and a small MinAtar
Breakout budget lands well above random (slow; run in CI too)."""

from __future__ import annotations

import importlib.util
import io

import pytest

import dqnbench

#: Tianshou's ``test/discrete/test_iqn.py`` (thu-ml/tianshou), adapted: lr 3e-3 (Adam), γ 0.9, 3-step returns,
#: batch 64, N = N' = 8 levels, K = 32 for acting, 64 cosines, a 64-64-64 network whose last layer gives the
#: features, a 20k replay, one gradient step per 10 env steps (10 envs × 10 steps, 0.1 updates per step), a target
#: copy every 320 gradient steps, 640 transitions before learning, ε = 0.1 for 10k steps then down to 0.01 by 50k.
#: Its DQN family chooses the next action with the online network by default (``is_double``): ``double = true``.
#: Its pass mark: a best test return of 195 (CartPole-v1's classic bar; its test uses ε = 0.05 over 100 episodes,
#: here the greedy evaluation of 10).
TIANSHOU_IQN = """
[experiment]
name = "iqn-tianshou"
env = "CartPole-v1"
total_steps = 15_000
seeds = [0, 1, 2]
eval_every = 2_500
eval_episodes = 10

[agent]
gamma = 0.9
lr = 3e-3
batch_size = 64
learning_starts = 640
train_every = 10
target_update = 320

[network]
name = "mlp"
hidden = [64, 64, 64]

[learner]
name = "iqn"
tau_samples = 8
tau_prime_samples = 8
quantile_samples = 32
embedding_dim = 64
double = true

[optimizer]
name = "adam"

[replay]
name = "nstep"
capacity = 20_000
n = 3

[exploration]
name = "linear"
start = 0.1
end = 0.01
delay = 10_000
steps = 40_000
"""
PASS_MARK = 195.0


@pytest.mark.slow
def test_iqn_with_tianshous_settings_reaches_its_pass_mark_on_cartpole(tmp_path):
    """Every seed's best greedy evaluation reaches 195 within 15k steps (3 seeds in lock-step: about 40 CPU-seconds
    here; measured bests 398, 500 and 277, each seed first above the mark at 7.5k, 10k and 12.5k steps)."""
    grid = tmp_path / "grid.toml"
    grid.write_text(TIANSHOU_IQN)
    res = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False)
    assert set(res.runs.status) == {"ok"}, res.runs.error.tolist()
    best = res.evals.groupby("run_id").mean_return.max()
    print("best greedy evaluation per seed:", best.round(1).tolist())
    assert len(best) == 3 and (best >= PASS_MARK).all(), best.to_dict()


#: MinAtar Breakout at a CI budget: minatar_cnn (Young & Tian 2019), batch 32, Adam lr 1e-3 with eps 3.125e-4
#: (Revisiting Rainbow's MinAtar optimizer), ε from 1 to 0.05 over 10k steps, a learn step every 2 env steps, a
#: target copy every 500 learn steps, 16 levels for each of N, N' and K (a quarter of the paper's: CI time)
MINATAR_IQN = """
[experiment]
name = "iqn-breakout"
env = "MinAtar/Breakout-v1"
total_steps = 10_000
seeds = [0]
eval_every = 10_000
eval_episodes = 10

[agent]
lr = 1e-3
batch_size = 32
learning_starts = 1_000
train_every = 2
target_update = 500

[network]
name = "minatar_cnn"

[learner]
name = "iqn"
tau_samples = 16
tau_prime_samples = 16
quantile_samples = 16

[optimizer]
name = "adam"
eps = 3.125e-4

[replay]
capacity = 10_000

[exploration]
name = "linear"
start = 1.0
end = 0.05
steps = 10_000
"""
#: MinAtar Breakout's mean return per episode under uniformly random actions (about 0.5)
RANDOM_BREAKOUT = 0.5


@pytest.mark.slow
@pytest.mark.skipif(not importlib.util.find_spec("minatar"), reason="needs MinAtar")
def test_iqn_lands_well_above_random_on_minatar_breakout(tmp_path):
    """10k steps, one seed: the greedy evaluation (10 episodes) is at least 3× random's 0.5."""
    grid = tmp_path / "grid.toml"
    grid.write_text(MINATAR_IQN)
    res = dqnbench.run_grid(grid, tmp_path / "out", executor="serial", stream=io.StringIO(), plots=False)
    assert list(res.runs.status) == ["ok"], res.runs.error.tolist()
    final = float(res.runs.final_return.iloc[0])
    print("final greedy evaluation:", final)
    assert final >= 3 * RANDOM_BREAKOUT, final
