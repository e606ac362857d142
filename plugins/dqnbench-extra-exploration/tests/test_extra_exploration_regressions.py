"""Regression checks with dqnbench's pytest plugin: speed inside a standard DQN step, and still learning.

``dqnbench_step_benchmark`` times one act + env step + store + learn step with this
package's component swapped into otherwise default components; ``dqnbench_learns``
trains a small CartPole-v1 grid across seeds and asserts the IQM greedy return.
``dqnbench_calibration`` records the calibration workload so that
``dqnbench bench-compare`` can judge this suite's JSON reports across CI machines.
"""

import pytest

NAMES = ["ez_greedy"]


def test_calibration(dqnbench_calibration):
    dqnbench_calibration()


@pytest.mark.parametrize("name", NAMES)
def test_training_step_speed(dqnbench_step_benchmark, name):
    assert dqnbench_step_benchmark("exploration", name, batch_size=64).learn_steps >= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_still_learns_cartpole(dqnbench_learns, name):
    # more than 3× a random policy's ~22, in 10k steps (measured: ez_greedy 183)
    dqnbench_learns("exploration", name, seeds=3, total_steps=10_000, threshold=75)
