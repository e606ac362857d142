"""What the per-step timing instrumentation (t_act / t_env / t_learn) costs.

Two figures, both on the tutorial's agent (4-10-2 MLP, batch 32, a learn step
per env step):

- ``instrumentation_share``: the instrumentation's own operations per step
  (four ``perf_counter`` calls, three subtractions and stores into the
  preallocated arrays), timed in isolation, divided by the time of a full
  instrumented step. Stable on a noisy machine; asserted below 3%.
- ``on_off_ratio``: the same training run with timing on vs off, interleaved
  and repeated; reported in ``extra_info`` (too noisy here to assert on).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dqnbench.agent.loop import train
from dqnbench.config.grid import load_grid
from dqnbench.plugin.registry import load_registry
from dqnbench.run.runner import bind_components, choose

STEPS = 2_000
#: a smoke run's (``--benchmark-disable``): 200 learning steps after the 200 that fill the replay, one on/off pair
SMOKE_STEPS = 400
TUTORIAL = """
[experiment]
name = "overhead"
total_steps = {steps}
seeds = 1
eval_every = 0
eval_episodes = 1
[agent]
gamma = 0.9
lr = 0.01
batch_size = 32
learning_starts = 200
target_update = 100
[network]
hidden = [10]
init_std = 0.1
[replay]
capacity = 2000
[exploration]
name = "constant"
epsilon = 0.1
"""


def tutorial_run(folder: Path, steps: int):
    """The tutorial agent's run of ``steps`` steps: its spec and components."""
    path = folder / "tutorial.toml"
    path.write_text(TUTORIAL.format(steps=steps))
    registry = load_registry(load_entrypoints=False)
    spec = load_grid(path, registry).runs[0]
    chosen = choose(spec.config, registry)
    return spec, bind_components(spec.config, chosen)


def instrumentation_ops(n: int) -> float:
    """Seconds per step of exactly the loop's timing operations."""
    clock = time.perf_counter
    t_act, t_env, t_learn = np.zeros(n), np.zeros(n), np.zeros(n)
    start = clock()
    for step in range(n):
        t0 = clock()
        t1 = clock()
        t2 = clock()
        t3 = clock()
        t_act[step], t_env[step], t_learn[step] = t1 - t0, t2 - t1, t3 - t2
    return (clock() - start) / n


def test_timing_instrumentation_costs_under_3_percent_of_a_step(benchmark, tmp_path):
    torch.set_num_threads(1)
    steps = SMOKE_STEPS if benchmark.disabled else STEPS
    spec, components = tutorial_run(tmp_path, steps)
    log = benchmark.pedantic(train, args=(spec.config, spec.seed, components), rounds=1, iterations=1)
    learned = ~np.isnan(log.loss)
    step_s = float(np.median((log.t_act + log.t_env + log.t_learn)[learned]))
    ops_s = min(instrumentation_ops(50_000) for _ in range(3))
    share = ops_s / step_s

    on, off = [], []
    for _ in range(1 if benchmark.disabled else 2):  # interleaved so drifts in machine load hit both alike
        on.append(train(spec.config, spec.seed, components, timing=True).train_s)
        off.append(train(spec.config, spec.seed, components, timing=False).train_s)
    ratio = statistics.median(on) / statistics.median(off)
    benchmark.extra_info.update(
        measured="train() on the tutorial agent, instrumentation cost per step",
        steps=steps,
        step_us=step_s * 1e6,
        instrumentation_us=ops_s * 1e6,
        instrumentation_share=share,
        on_off_ratio=ratio,
    )
    print(
        f"\nstep {step_s * 1e6:.1f} µs, instrumentation {ops_s * 1e6:.2f} µs = {share:.2%}; "
        f"on/off wall ratio {ratio:.3f}"
    )
    assert share < 0.03
