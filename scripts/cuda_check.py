"""The CUDA check of one DQN step: single runs and lock-step cells train on a GPU (``experiment.device = "cuda"``).

Run on a machine with a GPU: ``python scripts/cuda_check.py`` (``python scripts/cuda_check.py cpu`` runs the
same checks on the CPU). It trains tiny grids through the public API
(every built-in network, replay and learner/optimizer path, single and lock-step, CartPole and MinAtar when
installed), checks the networks' manual path (hand-derived gradients under the ``dqn`` loss) against autograd on
the GPU, and prints one line
per check; it exits 1 if any fails.
"""

from __future__ import annotations

import copy
import io
import sys
import tempfile
import time
from pathlib import Path

import torch

import dqnbench
from dqnbench.agent.learning import autograd_backward
from dqnbench.agent.nets import QNetworks
from dqnbench.builtin.dueling import dueling
from dqnbench.builtin.learners import dqn
from dqnbench.builtin.networks import mlp
from dqnbench.builtin.optimizers import LeanAdam, make_adam
from dqnbench.plugin.batch import Batch
from dqnbench.plugin.obs import ObsSpec

GRID = """
[experiment]
name = "{name}"
env = "{env}"
total_steps = {steps}
seeds = 3
eval_every = 0
eval_episodes = 2
device = "{device}"

[agent]
learning_starts = 200
batch_size = 32
target_update = 100

[network]
hidden = [64, 64]

[grid]
{axes}
"""


def check_grid(name: str, env: str, axes: str, steps: int = 1_000, device: str = "cuda") -> bool:
    ok = True
    for lockstep in (True, False):
        path = Path(tempfile.mkdtemp()) / "grid.toml"
        path.write_text(GRID.format(name=name, env=env, axes=axes, steps=steps, device=device))
        start = time.time()
        res = dqnbench.run_grid(
            path,
            path.parent / "out",
            executor="serial",
            load_entrypoints=False,
            stream=io.StringIO(),
            lockstep=lockstep,
        )
        statuses = set(res.runs.status)
        stacked = all("lockstep" in res.record(r) for r in res.runs.run_id)
        good = statuses == {"ok"} and stacked == lockstep
        ok &= good
        errors = sorted({e for e in res.runs.error if e})
        print(
            f"{'ok  ' if good else 'FAIL'} {name:<22} lockstep={lockstep!s:<5} {len(res.runs)} runs, statuses "
            f"{sorted(statuses)}, mean steps/s {res.runs.steps_per_s.mean():,.0f}, {time.time() - start:.1f} s"
            + (f" errors: {errors}" if errors else ""),
            flush=True,
        )
    return ok


def check_hand_derived_gradients(members: int | None, device_name: str = "cuda", network=mlp) -> bool:
    device = torch.device(device_name)
    torch.manual_seed(0)
    modules = [network(5, 3, hidden=[32, 16]) for _ in range(members or 1)]
    nets = QNetworks.of(modules, ObsSpec(5), device, stacked=members is not None)
    reference = copy.deepcopy(nets)
    learner = dqn(3, double=True, loss="huber")
    lead = (64,) if members is None else (members, 64)
    batch = Batch(
        torch.randn(*lead, 5), torch.randint(3, lead), torch.randn(lead) * 10, torch.randn(*lead, 5),
        torch.rand(lead) < 0.2, torch.rand(lead) + 0.5, torch.arange(64).expand(lead), torch.full(lead, 0.9),
    ).to(device)  # fmt: skip
    opt, ref_opt = make_adam(nets.params, 1e-2), make_adam(reference.params, 1e-2)
    for _ in range(3):
        hand = learner.backward(nets, batch)
        opt.step()
        auto = autograd_backward(learner, reference, batch)
        ref_opt.step()
    same = torch.allclose(hand.losses, auto.losses, rtol=1e-4, atol=1e-5) and all(
        torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(nets.params, reference.params)
    )
    print(
        f"{'ok  ' if same else 'FAIL'} {network.__name__} manual path == autograd on {device_name}, members={members}, "
        f"optimizer {type(opt).__name__} (fused kernel: {isinstance(opt, LeanAdam)})",
        flush=True,
    )
    return same


def main(device: str = "cuda") -> int:
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    where = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"torch {torch.__version__} on {where}", flush=True)
    ok = True
    for network in (mlp, dueling):
        ok &= check_hand_derived_gradients(None, device, network) & check_hand_derived_gradients(4, device, network)
    ok &= check_grid("networks", "CartPole-v1", '"network.name" = ["mlp", "dueling", "noisy"]', device=device)
    ok &= check_grid("replays", "CartPole-v1", '"replay.name" = ["prioritized", "nstep"]', device=device)
    axes = '"learner.double" = [true]\n"optimizer.name" = ["rmsprop"]'
    ok &= check_grid("learner-optimizer", "CartPole-v1", axes, device=device)
    try:
        import minatar  # noqa: F401
    except ImportError:
        print("skip MinAtar (not installed)")
    else:
        ok &= check_grid("minatar", "MinAtar/Breakout-v1", '"network.name" = ["mlp"]', steps=600, device=device)
    print("ALL OK" if ok else "SOME CHECKS FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
