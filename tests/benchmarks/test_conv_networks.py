"""K lock-step ``minatar_cnn`` members: natively stacked vs ``torch.func.vmap`` vs K separate networks.

One round is a learn-like step's network work, forward and backward, of K = 8
members on a batch of 32 MinAtar observations ``(4, 10, 10)`` bool each:

- ``native``: the stacked module :func:`dqnbench.agent.nets.stack_modules`
  builds, its convolution one grouped convolution over ``(B, K·C, H, W)`` and
  its linear layers batched matmuls;
- ``vmap``: :class:`dqnbench.agent.nets.VmapStack`, what a network that does
  not stack natively falls back to (a few hundred µs of Python per call);
- ``separate``: the 8 networks called one after the other, as 8 independent
  runs would.

``extra_info`` says what was measured. Compare the groups' means to see what
native stacking buys; the ``conv-stacking`` group in ``bench-compare`` keeps it
from regressing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dqnbench.agent.nets import VmapStack, probe_observations, stack_modules
from dqnbench.builtin.conv import minatar_cnn
from dqnbench.plugin.obs import ObsSpec

MINATAR = ObsSpec((4, 10, 10), "bool")
MEMBERS = 8
BATCH = 32
N_ACTIONS = 6


def _step(kind: str) -> Callable[[], None]:
    """One forward + backward of ``MEMBERS`` networks, the ``kind`` way."""
    torch.manual_seed(0)
    nets = [minatar_cnn(MINATAR, N_ACTIONS) for _ in range(MEMBERS)]
    stacked_obs = probe_observations(MINATAR, (MEMBERS, BATCH))
    if kind == "separate":
        params = [p for net in nets for p in net.parameters()]

        def step() -> None:
            for p in params:  # as the optimizer's zero_grad(set_to_none=True): no gradient accumulation timed
                p.grad = None
            for net, obs in zip(nets, stacked_obs):
                net(obs).sum().backward()

        return step
    module = stack_modules(nets, MINATAR) if kind == "native" else VmapStack(nets)
    assert isinstance(module, VmapStack) == (kind == "vmap")
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        module(stacked_obs).sum().backward()

    return step


@pytest.mark.benchmark(group="conv-stacking")
@pytest.mark.parametrize("kind", ["native", "vmap", "separate"])
def test_stacked_minatar_cnn_forward_backward(benchmark, kind):
    step = _step(kind)
    step()  # warm-up: allocator, oneDNN primitives
    benchmark.extra_info.update(
        measured=f"forward + backward of {MEMBERS} minatar_cnn members ({kind})",
        kind="network",
        component="minatar_cnn",
        members=MEMBERS,
        batch=BATCH,
        steps=1,
    )
    benchmark(step)
