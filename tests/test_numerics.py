"""Training runs with CPU denormals flushed to zero, and gives the caller's setting back."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dqnbench.agent.loop import train
from dqnbench.agent.numerics import denormals_flushed, flush_denormals

from .test_train import tiny_run


@pytest.fixture(autouse=True)
def _denormals_kept():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_probe_tells_the_mode_apart():
    assert not denormals_flushed()
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    assert denormals_flushed()


def test_decorated_function_runs_flushed_and_restores_the_default():
    supported = torch.set_flush_denormal(True)
    torch.set_flush_denormal(False)
    seen = []
    flush_denormals(lambda: seen.append(denormals_flushed()))()
    assert seen == [supported]
    assert not denormals_flushed()


def test_a_caller_that_flushes_already_keeps_it_even_after_an_error():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")

    @flush_denormals
    def fails():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fails()
    assert denormals_flushed()


def test_train_flushes_while_it_runs_then_restores(write_grid, registry):
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    torch.set_flush_denormal(False)
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, obs_dim, n_actions):
            super().__init__()
            self.out = torch.nn.Linear(obs_dim, n_actions)

        def forward(self, x):
            seen.append(denormals_flushed())
            return self.out(x)

    spec, components = tiny_run(write_grid, registry, steps=120, eval_every=0)
    train(spec.config, spec.seed, dataclasses.replace(components, network=Spy))
    assert seen and all(seen)
    assert not denormals_flushed()
