"""dqnbench-extra-exploration: the explorer contract, εz-greedy's behaviour, a tiny grid.

The tests reach the explorer the way dqnbench does, through the registry built
from installed entry points, so they only pass once the package is installed.
"""

from __future__ import annotations

import io
import re
import textwrap
from itertools import pairwise

import dqnbench
import pytest
import torch
from dqnbench.plugin.registry import load_registry

import dqnbench_extra_exploration
from dqnbench_extra_exploration import ez_greedy, zeta_probabilities


def canonical(name: str) -> str:
    """A distribution name normalised as in PEP 503, to compare names from metadata."""
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def factory():
    component = load_registry().get("exploration", "ez_greedy")
    assert canonical(component.distribution) == "dqnbench-extra-exploration"
    assert component.version == dqnbench_extra_exploration.__version__ == "0.1.0"
    return component.factory


@pytest.mark.parametrize(("batch", "n_actions"), [(1, 2), (2, 2), (64, 7)])
def test_select_returns_one_int64_action_per_row(factory, batch, n_actions):
    torch.manual_seed(0)
    explorer = factory(n_actions, 1_000)
    for step in (0, 50, 99, 100, 999):
        actions = explorer.select(torch.randn(batch, n_actions), step)
        assert actions.shape == (batch,) and actions.dtype == torch.int64
        assert ((actions >= 0) & (actions < n_actions)).all()


def test_a_batch_of_another_size_starts_afresh(factory):
    explorer = factory(3, 100, start=1.0, end=1.0)
    explorer.select(torch.zeros(2, 3), 0)  # dqnbench's contract probe uses a batch of 2
    assert explorer.select(torch.zeros(1, 3), 0).shape == (1,)


def test_zero_epsilon_is_greedy(factory):
    explorer = factory(4, 100, start=0.0, end=0.0)
    q_values = torch.randn(32, 4)
    for step in range(10):
        assert torch.equal(explorer.select(q_values, step), q_values.argmax(dim=1))


def test_epsilon_decays_linearly_then_stays(factory):
    explorer = factory(2, 1_000, start=1.0, end=0.1, fraction=0.5)
    assert explorer.value(0) == 1.0
    assert explorer.value(250) == pytest.approx(0.55)
    assert explorer.value(500) == explorer.value(999) == pytest.approx(0.1)


def test_durations_follow_a_truncated_zeta_distribution():
    probabilities = zeta_probabilities(2.0, 100)
    assert probabilities.shape == (100,) and probabilities.sum().item() == pytest.approx(1.0)
    assert (probabilities[0] / probabilities[1]).item() == pytest.approx(4.0)  # (2/1)^μ


def run_lengths(actions: list[int]) -> list[int]:
    lengths, current = [], 1
    for previous, action in pairwise(actions):
        if action == previous:
            current += 1
        else:
            lengths.append(current)
            current = 1
    return lengths


def test_exploring_repeats_one_random_action_for_the_drawn_duration(factory):
    # ε = 1 and many actions: every excursion picks a new action, so runs of equal
    # actions are excursions, and their mean length is the zeta distribution's mean.
    torch.manual_seed(0)
    explorer = factory(10_000, 10_000, start=1.0, end=1.0, mu=2.0, max_duration=100)
    q_values = torch.zeros(1, 10_000)
    actions = [int(explorer.select(q_values, step)) for step in range(6_000)]
    expected = (torch.arange(1, 101, dtype=torch.float64) * zeta_probabilities(2.0, 100)).sum().item()
    lengths = run_lengths(actions)[:-1]  # the last excursion may be cut off
    assert sum(lengths) / len(lengths) == pytest.approx(expected, rel=0.15)
    assert max(lengths) > 10  # heavy tail: some excursions are long


def test_max_duration_one_is_plain_epsilon_greedy(factory):
    torch.manual_seed(0)
    explorer = factory(2, 10_000, start=0.3, end=0.3, max_duration=1)
    q_values = torch.tensor([[0.0, 1.0]])
    actions = torch.cat([explorer.select(q_values, step) for step in range(4_000)])
    # a random action is the non-greedy one half of the time: P(action 0) = ε / 2
    assert (actions == 0).float().mean().item() == pytest.approx(0.15, abs=0.03)
    longest_excursion = max(len(run) for run in "".join(map(str, actions.tolist())).split("1"))
    assert longest_excursion < 8  # non-greedy runs are as short as independent draws make them


def test_draws_come_from_torchs_global_rng(factory):
    def actions(seed):
        torch.manual_seed(seed)
        explorer = factory(5, 1_000)
        return [int(explorer.select(torch.zeros(1, 5), step)) for step in range(200)]

    assert actions(1) == actions(1) and actions(1) != actions(2)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"start": 1.5}, "start"), ({"fraction": -0.1}, "fraction"), ({"mu": -1}, "mu"), ({"max_duration": 0}, "max")],
)
def test_bad_params_raise_value_errors_naming_the_param(params, message):
    with pytest.raises(ValueError, match=message):
        ez_greedy(2, 100, **params)


def test_a_grid_trains_ez_greedy_next_to_the_builtin_linear(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        textwrap.dedent(
            """
            [experiment]
            name = "extra-exploration"
            total_steps = 300
            seeds = 1
            eval_every = 0
            eval_episodes = 2

            [agent]
            learning_starts = 100
            batch_size = 16

            [network]
            hidden = [16]

            [exploration.ez_greedy]
            mu = 2.0
            max_duration = 50

            [grid]
            "exploration.name" = ["linear", "ez_greedy"]
            """
        ),
        encoding="utf-8",
    )
    results = dqnbench.run_grid(
        grid, out=tmp_path / "results", executor="serial", quiet=True, stream=io.StringIO(), plots=False
    )
    assert sorted(results.runs["exploration.name"]) == ["ez_greedy", "linear"]
    assert set(results.runs.status) == {"ok"}, results.runs.error.tolist()
    ez = results.runs.set_index("exploration.name").loc["ez_greedy"]
    assert ez["exploration.max_duration"] == 50 and ez["exploration.mu"] == 2.0
