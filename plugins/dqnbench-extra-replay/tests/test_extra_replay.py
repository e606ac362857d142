"""dqnbench-extra-replay: the replay contract, CER's batches, a tiny grid.

The tests reach the buffer the way dqnbench does, through the registry built
from installed entry points, so they only pass once the package is installed.
"""

from __future__ import annotations

import io
import re
import textwrap

import dqnbench
import numpy as np
import pytest
import torch
from dqnbench.plugin.registry import load_registry

import dqnbench_extra_replay
from dqnbench_extra_replay import combined

OBS_DIM = 3


def canonical(name: str) -> str:
    """A distribution name normalised as in PEP 503, to compare names from metadata."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def factory():
    component = load_registry().get("replay", "combined")
    assert canonical(component.distribution) == "dqnbench-extra-replay"
    assert component.version == dqnbench_extra_replay.__version__ == "0.1.0"
    return component.factory


def fill(buffer, n: int, start: int = 0) -> None:
    """Add ``n`` transitions; transition t has obs (t, t, t), action t % 2, reward t."""
    for t in range(start, start + n):
        obs = np.full(OBS_DIM, t, dtype=np.float32)
        buffer.add(obs, t % 2, float(t), obs + 1, t % 10 == 9)


def test_batch_fields_have_the_contracts_shapes_and_dtypes(factory):
    buffer = factory(100, OBS_DIM, 0.9)
    fill(buffer, 50)
    assert len(buffer) == 50
    batch = buffer.sample(16)
    assert isinstance(batch, dqnbench.Batch)
    assert batch.obs.shape == batch.next_obs.shape == (16, OBS_DIM) and batch.obs.dtype == torch.float32
    for field, dtype in [("actions", torch.int64), ("rewards", torch.float32), ("terminated", torch.bool)]:
        value = getattr(batch, field)
        assert value.shape == (16,) and value.dtype == dtype
    assert batch.indices.dtype == torch.int64 and torch.equal(batch.weights, torch.ones(16))
    assert torch.allclose(batch.discounts, torch.full((16,), 0.9))
    # each row is one stored transition, fields kept together
    assert torch.equal(batch.rewards, batch.obs[:, 0]) and torch.equal(batch.next_obs, batch.obs + 1)
    buffer.update_priorities(batch.indices, torch.zeros(16))


def test_every_batch_holds_the_newest_transition(factory):
    np.random.seed(0)
    buffer = factory(1_000, OBS_DIM, 0.99)
    fill(buffer, 500)
    for _ in range(20):
        assert 499.0 in buffer.sample(8).rewards.tolist()


def test_latest_k_newest_transitions_even_after_wrapping_around(factory):
    buffer = factory(10, OBS_DIM, 0.99, latest=3)
    fill(buffer, 25)  # wraps around twice: the newest rows are 24, 23, 22
    assert len(buffer) == 10
    rewards = buffer.sample(4).rewards.tolist()
    assert rewards[-3:] == [24.0, 23.0, 22.0] and 15.0 <= rewards[0] <= 24.0


def test_latest_zero_is_uniform_replay(factory):
    np.random.seed(0)
    buffer = factory(1_000, OBS_DIM, 0.99, latest=0)
    fill(buffer, 1_000)
    hits = sum(999.0 in buffer.sample(8).rewards.tolist() for _ in range(200))
    assert hits < 10  # uniform: P(newest in a batch of 8) ≈ 0.8%


def test_sampling_draws_from_numpys_global_rng(factory):
    def sample(seed):
        np.random.seed(seed)
        buffer = factory(100, OBS_DIM, 0.99)
        fill(buffer, 100)
        return buffer.sample(16).indices.tolist()

    assert sample(1) == sample(1) and sample(1) != sample(2)


@pytest.mark.parametrize(("params", "message"), [({"latest": -1}, "latest"), ({"capacity": 0}, "capacity")])
def test_bad_params_raise_value_errors_naming_the_param(params, message):
    kwargs = {"capacity": 10, "obs_dim": OBS_DIM, "gamma": 0.99, **params}
    with pytest.raises(ValueError, match=message):
        combined(**kwargs)


def test_a_grid_trains_combined_next_to_the_builtin_uniform(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        textwrap.dedent(
            """
            [experiment]
            name = "extra-replay"
            total_steps = 300
            seeds = 1
            eval_every = 0
            eval_episodes = 2

            [agent]
            learning_starts = 100
            batch_size = 16

            [network]
            hidden = [16]

            [replay]
            capacity = 10_000

            [replay.combined]
            latest = 1

            [grid]
            "replay.name" = ["uniform", "combined"]
            """
        ),
        encoding="utf-8",
    )
    results = dqnbench.run_grid(
        grid, out=tmp_path / "results", executor="serial", quiet=True, stream=io.StringIO(), plots=False
    )
    assert sorted(results.runs["replay.name"]) == ["combined", "uniform"]
    assert set(results.runs.status) == {"ok"}, results.runs.error.tolist()
