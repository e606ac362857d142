"""Grid files: validation errors name file, key and allowed values; expansion; stable ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest

from dqnbench.config.grid import load_grid
from dqnbench.errors import GridError
from dqnbench.run.runner import prepare


def error_of(path, registry):
    with pytest.raises(GridError) as err:
        load_grid(path, registry)
    return str(err.value)


def test_axes_expand_to_cartesian_product_times_seeds(write_grid, registry):
    path = write_grid('[grid]\n"agent.lr" = [1e-3, 3e-4]\n"exploration.name" = ["linear", "constant"]\n', seeds=3)
    plan = load_grid(path, registry)
    assert len(plan.cells) == 4 and len(plan.runs) == 12
    assert len({r.run_id for r in plan.runs}) == 12
    labels = {label for _, label, _ in plan.cells}
    assert "agent.lr=0.001, exploration.name=constant" in labels
    assert "4 cells × 3 seeds = 12 runs" in plan.describe()


def test_run_ids_are_stable_and_derived_from_config(write_grid, registry):
    first = [r.run_id for r in load_grid(write_grid('[grid]\n"agent.lr" = [1e-3, 3e-4]\n'), registry).runs]
    again = [r.run_id for r in load_grid(write_grid('[grid]\n"agent.lr" = [1e-3, 3e-4]\n'), registry).runs]
    other = [r.run_id for r in load_grid(write_grid('[grid]\n"agent.lr" = [1e-3, 1e-4]\n'), registry).runs]
    renamed = [r.run_id for r in load_grid(write_grid('[grid]\n"agent.lr" = [1e-3, 3e-4]\n', name="x"), registry).runs]
    assert first == again == renamed
    assert first[:2] == other[:2] and first[2:] != other[2:]


def test_explicit_seed_list(write_grid, registry):
    path = write_grid()
    text = path.read_text().replace("seeds = 2", "seeds = [0, 7, 42]")
    path.write_text(text)
    assert [r.seed for r in load_grid(path, registry).runs] == [0, 7, 42]


def test_component_subtable_applies_only_when_that_component_is_chosen(write_grid, registry):
    path = write_grid(
        '[exploration]\nname = "linear"\n[exploration.constant]\nepsilon = 0.3\n'
        '[grid]\n"exploration.name" = ["linear", "constant"]\n'
    )
    configs = {c.exploration.name: c.exploration for _, _, c in load_grid(path, registry).cells}
    assert configs["constant"].params == {"epsilon": 0.3}
    assert "epsilon" not in configs["linear"].params
    assert configs["linear"].params == {"start": 1.0, "end": 0.05, "fraction": 0.1}  # factory defaults shown


def test_defaults_reproduce_the_contract(tmp_path, registry):
    path = tmp_path / "g.toml"
    path.write_text('[experiment]\nname = "d"\n')
    plan = load_grid(path, registry)
    (config,) = [c for _, _, c in plan.cells]
    assert config.experiment.env == "CartPole-v1" and config.network.name == "mlp"
    assert config.replay.name == "uniform" and config.exploration.name == "linear"
    assert config.env.name == "auto" and config.optimizer.name == "adam"
    assert config.learner.name == "dqn" and config.learner.params == {"double": False, "loss": "mse"}
    assert [r.label for r in plan.runs] == ["default"] * len(config.experiment.seeds)


def test_param_axis_over_network_widths(write_grid, registry):
    path = write_grid('[grid]\n"network.hidden" = [[8], [16, 16]]\n')
    widths = sorted(tuple(c.network.params["hidden"]) for _, _, c in load_grid(path, registry).cells)
    assert widths == [(8,), (16, 16)]


@pytest.mark.parametrize(
    "extra, key, expected",
    [
        ("[agnet]\nlr = 1\n", "agnet", "unknown section (allowed: experiment, agent"),
        ("[agent]\nlrr = 0.1\n", "agent.lrr", "did you mean 'lr'?"),
        ('[agent]\nbatch_size = "big"\n', "agent.batch_size", "must be an integer"),
        ("[agent]\ndouble = 1\n", "agent.double", "must be true or false"),
        ('[agent]\nloss = "l1"\n', "agent.loss", 'must be "mse" or "huber"'),
        ("[agent]\ngamma = 1.5\n", "agent.gamma", "must be a number in [0, 1]"),
        ('[grid]\n"agent.lr" = []\n', 'grid."agent.lr"', "non-empty list"),
        ('[grid]\n"agent.lr" = 0.1\n', 'grid."agent.lr"', "non-empty list"),
        ('[grid]\n"agent.lr" = [0.1, 0.1]\n', 'grid."agent.lr"', "duplicate"),
        ('[grid]\n"agent.lr" = [0.1, "fast"]\n', 'grid."agent.lr"', "must be a number"),
        ('[grid]\n"experiment.seeds" = [1, 2]\n', 'grid."experiment.seeds"', "cannot be an axis"),
        ('[grid]\n"network.name" = ["mlp", "mpl"]\n', 'grid."network.name"', 'did you mean "mlp"'),
        ('[network]\nname = "transformer"\n', "network.name", "allowed: "),
        ("[network]\nwidth = 3\n", "network.width", "has no parameter 'width' (allowed: hidden, init_std"),
        ("[replay.prioritised]\nalpha = 0.5\n", "replay.prioritised", "unknown replay"),
        ("[replay]\ncapacity = 0\n", "replay.capacity", "an integer in [1, 10**9]"),
        ("[exploration.constant]\nepsilon = 0.1\nrate = 2\n", "exploration.constant.rate", "no parameter 'rate'"),
    ],
)
def test_bad_grids_name_file_key_and_allowed_values(tmp_path, registry, extra, key, expected):
    path = tmp_path / "grid.toml"
    path.write_text('[experiment]\nname = "bad"\n' + extra)
    message = error_of(path, registry)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message


def test_missing_experiment_name(tmp_path, registry):
    path = tmp_path / "g.toml"
    path.write_text("[agent]\nlr = 0.1\n")
    assert "experiment.name: is required" in error_of(path, registry)
    path.write_text("[experiment]\nname = 5\n")
    assert "experiment.name: must be a string naming the results directory, got 5" in error_of(path, registry)


@pytest.mark.parametrize(
    "extra, key, expected",
    [
        ('[network]\nhidden = "64"\n', "network.hidden", "must be a list of integers, got '64'"),
        ("[network]\nhidden = [64, 1.5]\n", "network.hidden", "must be a list of integers"),
        ('[exploration]\nfraction = "x"\n', "exploration.fraction", "must be a number, got 'x'"),
        ('[replay]\nname = "prioritized"\n[replay.prioritized]\nalpha = "x"\n', "replay.prioritized.alpha", "number"),
        ("[optimizer.rmsprop]\ncentered = 1\n", "optimizer.rmsprop.centered", "must be true or false, got 1"),
        ('[learner]\nname = "c51"\natoms = 5.5\n', "learner.atoms", "must be an integer, got 5.5"),
    ],
)
def test_component_params_of_the_wrong_type_name_the_key_they_came_from(tmp_path, registry, extra, key, expected):
    """Checked against the factory's annotations, before any factory sees them (``"64"`` was split into
    the widths ``['6', '4']``; ``fraction = "x"`` raised Python's own ``TypeError``)."""
    path = tmp_path / "grid.toml"
    path.write_text('[experiment]\nname = "bad"\n' + extra)
    message = error_of(path, registry)
    assert message.startswith(f"{path}: {key}: "), message
    assert expected in message


class Custom:
    """A plugin's own class: not a TOML type, so a param annotated with it is left to the factory."""


def annotated_factory(
    a: int = 1,
    b: float | None = None,
    c: Sequence[int] = (),
    d: Literal["x", "y"] = "x",
    e: Custom = None,
    f: tuple[int, float] = (1, 2.0),
    g=3,
    h: Unresolvable = 0,  # noqa: F821 - a name only a type checker would see
) -> None:
    return None


class CallableFactory:
    """A factory that is an unhashable callable object."""

    __hash__ = None

    def __call__(self, a: int = 1) -> None:
        return None


def test_param_annotations_judge_only_toml_types():
    from dqnbench.config.params import expected_type

    factory = annotated_factory
    assert expected_type(factory, "a", 2) is None and expected_type(factory, "a", True) == "an integer"
    assert expected_type(factory, "b", 1) is None and expected_type(factory, "b", "1") == "a number"
    assert expected_type(factory, "c", [1, 2]) is None and expected_type(factory, "c", "12") == "a list of integers"
    assert expected_type(factory, "d", "y") is None and expected_type(factory, "d", "z") == "'x' or 'y'"
    assert expected_type(factory, "e", "anything") is None and expected_type(factory, "g", "anything") is None
    assert expected_type(factory, "f", [1, 2.5]) is None and expected_type(factory, "f", [1]) is not None
    assert expected_type(factory, "h", "anything") is None  # unresolvable: skipped, the others still judged
    assert expected_type(CallableFactory(), "a", "x") == "an integer"


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", "a\\\\b", ".hidden", ".."])
def test_experiment_names_that_escape_the_results_directory_are_refused(tmp_path, registry, name):
    path = tmp_path / "g.toml"
    path.write_text(f'[experiment]\nname = "{name}"\n')
    assert "experiment.name" in error_of(path, registry)


def test_invalid_toml_and_missing_file(tmp_path, registry):
    path = tmp_path / "g.toml"
    path.write_text("[experiment\nname = 'x'\n")
    assert "invalid TOML" in error_of(path, registry)
    assert "no such grid file" in error_of(tmp_path / "missing.toml", registry)


def test_unknown_and_non_discrete_environments_are_grid_errors(write_grid):
    path = write_grid()
    path.write_text(path.read_text().replace("CartPole-v1", "CartPol-v1"))
    with pytest.raises(GridError, match=r"experiment.env: unknown .*did you mean CartPole-v1"):
        prepare(path, load_entrypoints=False)
    path.write_text(path.read_text().replace("CartPol-v1", "Pendulum-v1"))
    with pytest.raises(GridError, match="experiment.env: .*Box actions; DQN needs Discrete actions"):
        prepare(path, load_entrypoints=False)
