"""One set of param checks for every component: the same value gets the same verdict in each."""

from __future__ import annotations

import numpy as np
import pytest

import dqnbench
from dqnbench.builtin.explorations import LinearEpsilon
from dqnbench.builtin.schedules import ExponentialEpsilon
from dqnbench.plugin.validation import ParamError, check_positive, check_probability


@pytest.mark.parametrize("value", [0, 0.5, 1, np.float32(0.25)])
def test_probabilities_in_range_are_accepted_as_floats(value):
    assert check_probability("start", value) == float(value)


@pytest.mark.parametrize("value", [True, False, "0.5", -0.1, 1.5, float("nan")])
def test_other_probabilities_raise_a_param_error_naming_the_key(value):
    with pytest.raises(ParamError) as caught:
        check_probability("end", value)
    assert caught.value.key == "end" and str(caught.value).startswith("end must be in [0, 1]")
    assert isinstance(caught.value, ValueError) and dqnbench.ParamError is ParamError


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), True, None])
def test_positive_refuses_zero_infinity_bools_and_non_numbers(value):
    with pytest.raises(ParamError, match="half_life must be a positive number"):
        check_positive("half_life", value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: LinearEpsilon(1_000, start=True, end=0.05, fraction=0.1),
        lambda: ExponentialEpsilon(start=True, end=0.05, half_life=100),
    ],
    ids=["linear", "exponential"],
)
def test_builtin_explorations_judge_a_bool_epsilon_alike(build):
    """Once, ``linear`` took ``start = true`` as 1.0 while ``exponential`` refused it."""
    with pytest.raises(ParamError) as caught:
        build()
    assert caught.value.key == "start"


def picky(n_actions, total_steps, low=0.1, high=0.9, mood="calm"):
    """An exploration whose refusals do not start with the param they are about."""
    from dqnbench.builtin.explorations import linear

    if low >= high:
        raise ParamError("high", f"must be above low = {low}, got {high}")
    if mood != "calm":
        raise ValueError("low spirits today")  # starts with a param's name, but is about none
    return linear(n_actions, total_steps)


class PickyPlugin:
    @dqnbench.hookimpl
    def dqnbench_explorations(self):
        return {"picky": picky}


@pytest.mark.parametrize(
    "params, key, says",
    [
        ("low = 0.95", "exploration.high", "high must be above low = 0.95"),  # the key ParamError carries
        ('low = 0.2\nmood = "gloomy"', "exploration.mood", "low spirits today"),  # the param whose default builds
    ],
)
def test_the_preflight_names_the_key_a_factory_refused_not_a_word_of_its_message(write_grid, params, key, says):
    from dqnbench.errors import GridError
    from dqnbench.run.preflight import prepare

    grid = write_grid(f'[exploration]\nname = "picky"\n{params}\n', seeds=1)
    with pytest.raises(GridError) as caught:
        prepare(grid, plugins=[PickyPlugin()], load_entrypoints=False)
    assert caught.value.key == key and says in str(caught.value) and 'exploration "picky"' in str(caught.value)


def test_a_refusal_no_param_explains_names_the_component(write_grid, monkeypatch):
    from dqnbench.errors import GridError
    from dqnbench.run.preflight import prepare

    def moody(n_actions, total_steps, low=0.1):
        raise ValueError("low spirits today")

    monkeypatch.setattr(PickyPlugin, "dqnbench_explorations", dqnbench.hookimpl(lambda self: {"picky": moody}))
    grid = write_grid('[exploration]\nname = "picky"\nlow = 0.2\n', seeds=1)
    with pytest.raises(GridError) as caught:
        prepare(grid, plugins=[PickyPlugin()], load_entrypoints=False)
    assert caught.value.key == "exploration.name" and 'exploration "picky"' in str(caught.value)
    assert "low spirits today" in str(caught.value)
