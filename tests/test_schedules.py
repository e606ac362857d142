"""Exponential ε, Boltzmann and greedy explorations: schedule values and action frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from dqnbench.builtin.schedules import boltzmann, exponential, greedy

N = 20_000  # rows per frequency test: a frequency's standard error is ≤ √(.25/N) ≈ 0.0035


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def frequencies(actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    return torch.bincount(actions, minlength=n_actions).double() / actions.numel()


# --- exponential -------------------------------------------------------------


def test_exponential_values_at_chosen_steps() -> None:
    explorer = exponential(2, 10_000, start=1.0, end=0.05, half_life=100)
    assert explorer.value(0) == pytest.approx(1.0)
    assert explorer.value(100) == pytest.approx(0.05 + 0.95 / 2)  # one half-life: half the gap left
    assert explorer.value(200) == pytest.approx(0.05 + 0.95 / 4)
    assert explorer.value(50) == pytest.approx(0.05 + 0.95 / math.sqrt(2))
    assert explorer.value(10_000) == pytest.approx(0.05, abs=1e-12)


def test_exponential_default_half_life_is_five_percent_of_training() -> None:
    explorer = exponential(2, 2_000)
    assert explorer.half_life == 100
    assert explorer.value(100) == pytest.approx(0.525)
    assert exponential(2, 3).half_life == 1  # never below one step


def test_exponential_explores_with_the_scheduled_epsilon() -> None:
    """ε at one half-life is 0.525; a random action is non-greedy with prob. ε (n−1)/n = 0.39375.

    Tolerance 0.015 ≈ 4 standard errors at N = 20 000.
    """
    explorer = exponential(4, 10_000, half_life=100)
    q = torch.tensor([[0.0, 5.0, 1.0, 2.0]]).repeat(N, 1)
    actions = explorer.select(q, 100)
    assert actions.dtype == torch.int64 and actions.shape == (N,)
    freq = frequencies(actions, 4)
    assert 1 - freq[1].item() == pytest.approx(0.525 * 3 / 4, abs=0.015)
    for other in (0, 2, 3):  # the random share is uniform over all actions
        assert freq[other].item() == pytest.approx(0.525 / 4, abs=0.015)


# --- boltzmann ---------------------------------------------------------------


def test_boltzmann_temperature_schedule() -> None:
    explorer = boltzmann(3, 1_000, start=1.0, end=0.01, fraction=0.1)  # 100 decay steps
    assert explorer.value(0) == pytest.approx(1.0)
    assert explorer.value(50) == pytest.approx(0.505)
    assert explorer.value(100) == pytest.approx(0.01)
    assert explorer.value(900) == pytest.approx(0.01)


@pytest.mark.parametrize(("step", "temperature"), [(0, 2.0), (100, 0.5)])
def test_boltzmann_action_frequencies_follow_softmax(step: int, temperature: float) -> None:
    """Frequencies ≈ exp(q/τ) / Σ exp(q/τ); tolerance 0.015 ≈ 4 standard errors at N = 20 000."""
    explorer = boltzmann(3, 1_000, start=2.0, end=0.5, fraction=0.1)
    assert explorer.value(step) == pytest.approx(temperature)
    q = torch.tensor([1.0, 2.0, 3.0])
    expected = torch.exp(q / temperature) / torch.exp(q / temperature).sum()
    actions = explorer.select(q.repeat(N, 1), step)
    assert actions.dtype == torch.int64 and actions.shape == (N,)
    torch.testing.assert_close(frequencies(actions, 3), expected.double(), rtol=0, atol=0.015)


def test_boltzmann_rows_are_sampled_independently() -> None:
    """Each row uses its own Q-values: row 0 prefers action 0, row 1 action 1 (τ = 1, gap 3)."""
    explorer = boltzmann(2, 100, start=1.0, end=1.0)
    q = torch.tensor([[3.0, 0.0], [0.0, 3.0]]).repeat(N // 2, 1)
    actions = explorer.select(q, 0).view(-1, 2)
    p_best = 1 / (1 + math.exp(-3))  # ≈ 0.9526
    assert (actions[:, 0] == 0).double().mean().item() == pytest.approx(p_best, abs=0.015)
    assert (actions[:, 1] == 1).double().mean().item() == pytest.approx(p_best, abs=0.015)


def test_boltzmann_is_stable_for_huge_q_and_tiny_temperature() -> None:
    explorer = boltzmann(3, 100, start=1e-4, end=1e-4)
    q = torch.tensor([[1e6, 1e6 + 1.0, -1e6], [-3e38, 3e38, 0.0]])
    actions = explorer.select(q.repeat(100, 1), 0)  # the runner-up is e^-10000 as likely: never drawn
    assert actions.tolist() == [1] * 200


# --- greedy ------------------------------------------------------------------


def test_greedy_is_the_argmax_at_every_step() -> None:
    explorer = greedy(4, 1_000)
    q = torch.randn(256, 4)
    for step in (0, 500, 10_000):
        torch.testing.assert_close(explorer.select(q, step), q.argmax(dim=1))
        assert explorer.value(step) == 0.0


@pytest.mark.parametrize(
    ("factory", "params"),
    [
        (exponential, {"start": 1.5}),
        (exponential, {"end": -0.1}),
        (exponential, {"half_life": 0}),
        (boltzmann, {"start": 0.0}),
        (boltzmann, {"end": -1.0}),
        (boltzmann, {"fraction": 1.5}),
    ],
)
def test_bad_params_raise_value_error(factory, params: dict) -> None:
    with pytest.raises(ValueError):
        factory(3, 100, **params)
