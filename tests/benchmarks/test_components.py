"""Per-component timings: acting, one learn step, replay ``add`` and ``sample``, for every built-in component.

Each benchmark swaps one built-in component into otherwise default components
(``mlp``, ``uniform``, ``linear``, the default ``[agent]``) and times one
operation per call, exactly as the training loop performs it; ``extra_info``
says what was measured, on which component, at which batch size.
"""

from __future__ import annotations

import pytest
import torch

from .helpers import BATCHES, FILLED, component_params, cycle, harness, make_replay


@pytest.mark.benchmark(group="act")
@pytest.mark.parametrize("component", component_params(("network", "exploration")))
def test_act(benchmark, component):
    """Network forward + exploration select on one observation (batch 1), as the loop acts."""
    kind, name = component
    agent = harness(kind, name)
    benchmark.extra_info.update(agent.describe("act: network forward + exploration select", steps=1, kind=kind))
    benchmark.extra_info["batch"] = 1
    action = benchmark(agent.act)
    assert 0 <= action < agent.n_actions


@pytest.mark.benchmark(group="learn")
@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("component", component_params(("network", "replay", "learner", "optimizer")))
def test_learn_step(benchmark, component, batch_size):
    """One learning phase of the loop: sample, the learner's gradient, optimizer step, priorities, target copy."""
    kind, name = component
    agent = harness(kind, name, batch_size).warm_up()
    measured = "learn step: replay sample + learner backward + optimizer step + update_priorities"
    benchmark.extra_info.update(agent.describe(measured, steps=1, kind=kind))
    loss = benchmark(agent.learn)
    assert torch.isfinite(torch.tensor(loss))


@pytest.mark.benchmark(group="replay-add")
@pytest.mark.parametrize("component", component_params(("replay",)))
def test_replay_add(benchmark, component, transitions):
    """``add`` of one recorded CartPole transition (n-step and prioritised bookkeeping included)."""
    _, name = component
    replay, source = make_replay(name), cycle(transitions)
    benchmark.extra_info.update(measured="replay add: one transition", kind="replay", component=name, batch=1, steps=1)
    benchmark(lambda: replay.add(*next(source)))


@pytest.mark.benchmark(group="replay-sample")
@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("component", component_params(("replay",)))
def test_replay_sample(benchmark, component, batch_size, transitions):
    """``sample(batch_size)`` from a buffer of 10,000 transitions with non-uniform priorities."""
    _, name = component
    replay, source = make_replay(name), cycle(transitions)
    for _ in range(FILLED):
        replay.add(*next(source))
    generator = torch.Generator().manual_seed(0)
    replay.update_priorities(torch.arange(len(replay)), torch.rand(len(replay), generator=generator))
    benchmark.extra_info.update(
        measured=f"replay sample from {FILLED:,} transitions", kind="replay", component=name, batch=batch_size, steps=1
    )
    batch = benchmark(replay.sample, batch_size)
    assert batch.obs.shape[0] == batch_size
