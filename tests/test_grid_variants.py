"""Grid sections beyond the cartesian axes: named ``[variants]`` and ``[scores]`` tables."""

from __future__ import annotations

import pytest

from dqnbench.config.grid import plan_grid
from dqnbench.errors import GridError

BASE = {"experiment": {"name": "v", "total_steps": 100, "seeds": 2}}


def plan(registry, **tables):
    return plan_grid({**BASE, **tables}, "grid.toml", registry)


def test_variants_are_named_cells_crossed_with_the_axes_in_grid_order(registry):
    p = plan(
        registry,
        variants={"full": {}, "no double": {"learner.double": True}, "dueling": {"network.name": "dueling"}},
        grid={"agent.lr": [1e-3, 3e-4]},
    )
    labels = [label for _, label, _ in p.cells]
    assert labels == [
        "full, agent.lr=0.001", "full, agent.lr=0.0003",
        "no double, agent.lr=0.001", "no double, agent.lr=0.0003",
        "dueling, agent.lr=0.001", "dueling, agent.lr=0.0003",
    ]  # fmt: skip
    configs = {label: config for _, label, config in p.cells}
    assert configs["no double, agent.lr=0.001"].learner.params["double"] is True
    assert configs["dueling, agent.lr=0.0003"].network.name == "dueling"
    assert len(p.runs) == 12


@pytest.mark.parametrize(
    ("grid", "labels"),
    [
        (
            {"replay.name": ["uniform", "prioritized"], "replay.prioritized.alpha": [0.4, 0.6, 0.8]},
            ["replay.name=uniform", "replay.name=prioritized, replay.prioritized.alpha=0.4",
             "replay.name=prioritized, replay.prioritized.alpha=0.6",
             "replay.name=prioritized, replay.prioritized.alpha=0.8"],
        ),
        (
            {"learner.c51.atoms": [11, 21], "learner.name": ["dqn", "c51"]},
            ["learner.c51.atoms=11, learner.name=c51", "learner.name=dqn", "learner.c51.atoms=21, learner.name=c51"],
        ),
    ],
)  # fmt: skip
def test_an_axis_of_a_components_params_crossed_with_its_name_axis_runs_the_other_components_once(
    registry, grid, labels
):
    """docs/grids.md: any dotted key is an axis, ``[<kind>.<name>]`` params apply only where that component is chosen.

    Crossed with the name axis, the other components' cells differ only in a value
    they never read: one cell each, labelled without that axis (it once was the
    error "resolve to the same config").
    """
    p = plan(registry, grid=grid)
    assert sorted(label for _, label, _ in p.cells) == sorted(labels)
    assert len(p.runs) == 2 * len(labels)


def test_a_variant_that_resolves_to_another_cell_is_an_error(registry):
    with pytest.raises(GridError, match="resolve to the same config"):
        plan(registry, variants={"a": {}, "b": {"agent.lr": 1e-3}})  # 1e-3 is the default


@pytest.mark.parametrize(
    ("variants", "key", "message"),
    [
        ({"x": 3}, 'variants."x"', "must be a table of dotted keys"),
        ({"x": {"agent": {"lr": 1.0}}}, 'variants."x"."agent"', "use dotted keys"),
        ({"x": {"grid.lr": 1.0}}, 'variants."x"."grid.lr"', "a variant sets dotted keys in one of"),
        ({"x": {"experiment.seeds": 3}}, 'variants."x"."experiment.seeds"', "cannot differ between variants"),
        ({"x": {"agent.lr": "fast"}}, 'variants."x"."agent.lr"', "must be"),
        ({"x": {"network.name": "mlpp"}}, 'variants."x"."network.name"', "mlp"),
    ],
)
def test_bad_variants_name_their_key(registry, variants, key, message):
    with pytest.raises(GridError, match=message) as info:
        plan(registry, variants=variants)
    assert key in str(info.value)


def test_scores_are_recorded_with_every_run_but_not_part_of_its_id(registry):
    plain = plan(registry)
    scored = plan(registry, scores={"CartPole-v1": {"random": 22.0, "reference": 500}})
    assert [s.run_id for s in plain.runs] == [s.run_id for s in scored.runs]
    flat = scored.runs[0].config.flat()
    assert flat["scores.CartPole-v1.random"] == 22.0 and flat["scores.CartPole-v1.reference"] == 500.0


@pytest.mark.parametrize(
    ("scores", "key"),
    [
        ({"CartPole-v1": 1.0}, 'scores."CartPole-v1"'),
        ({"CartPole-v1": {"reference": 500.0}}, 'scores."CartPole-v1".random'),
        ({"CartPole-v1": {"random": "low"}}, 'scores."CartPole-v1".random'),
        ({"CartPole-v1": {"random": 1.0, "best": 2.0}}, 'scores."CartPole-v1".best'),
        ({"CartPole-v1": {"random": 1.0, "reference": 1.0}}, 'scores."CartPole-v1".reference'),
    ],
)
def test_bad_scores_name_their_key(registry, scores, key):
    with pytest.raises(GridError) as info:
        plan(registry, scores=scores)
    assert key in str(info.value)
