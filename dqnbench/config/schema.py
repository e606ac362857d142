"""Resolved, validated configuration of one run: frozen dataclasses.

``grid.py`` turns a TOML grid into these; ``train.py`` reads them. Defaults
reproduce a DQN that learns CartPole-v1 within the default step budget; the
tutorial's own agent is ``examples/tutorial.toml``. Field docstrings (the
``#:`` comments) are the reference for each grid key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

#: the values of the ``dqn`` learner's ``loss`` param (and of v1 grids' ``agent.loss``)
LOSSES = ("mse", "huber")
#: ``[experiment]`` keys that say how runs execute or are stored, not what is trained: not part of the run ids
EXECUTION_KEYS = (
    "name", "lockstep", "fuse", "lockstep_group", "steps_window", "timeout_s", "checkpoint_every", "tensorboard",
)  # fmt: skip


@dataclass(frozen=True)
class ExperimentConfig:
    """``[experiment]``: what is trained on, for how long, how it is evaluated."""

    #: results go to ``<out>/<name>/``; required
    name: str
    #: gymnasium id: Discrete actions, Box observations
    env: str = "CartPole-v1"
    #: environment steps per run
    total_steps: int = 20_000
    #: int n → seeds 0..n-1, or an explicit list
    seeds: tuple[int, ...] = (0, 1, 2)
    #: greedy evaluation cadence in env steps (0 = only the final evaluation)
    eval_every: int = 2_000
    #: episodes per evaluation
    eval_episodes: int = 10
    #: torch device of the networks: "cpu" or "cuda" / "cuda:N"
    device: str = "cpu"
    #: train a cell's seeds as one batched program where its components allow (how runs
    #: execute, like the executor: not part of the run ids)
    lockstep: bool = True
    #: train cells that differ only in member-wise params (``agent.lr``, exploration scalars…) as one lock-step
    #: program, each run still its own (see ``docs/sweeps.md``; how runs execute: not part of the run ids)
    fuse: bool = True
    #: at most this many members (a cell's seeds, or a fused pool's runs) per lock-step group, each group one task
    #: on its own worker; 0 = automatic: one cell or pool, one group, unless the grid has fewer tasks than the
    #: executor has workers, when each pool's runs split into groups that fill them (see ``docs/lockstep.md``;
    #: how runs execute: not part of the run ids)
    lockstep_group: int = 0
    #: env steps per row of the ``steps`` table; 0 = one row per step up to 100k steps, windows beyond
    #: (how results are stored, not what is trained: not part of the run ids)
    steps_window: int = 0
    #: seconds one run (or one lock-step group, trained as one task) may take; past it the run is stopped and
    #: recorded failed, and the grid goes on; 0 = no limit (how runs execute: not part of the run ids)
    timeout_s: float = 0.0
    #: env steps between mid-run checkpoints, which a rerun resumes from (0 = none). 10,000 steps keep what a
    #: killed Atari run loses to minutes (docs/benchmarks.md, "Figures behind constants"); runs shorter than that
    #: never save one (how runs execute, not what is trained: not part of the run ids)
    checkpoint_every: int = 10_000
    #: write a TensorBoard event file per run under ``<results>/tensorboard/`` (needs ``dqnbench[tensorboard]``;
    #: how runs are stored, not what is trained: not part of the run ids)
    tensorboard: bool = False


@dataclass(frozen=True)
class AgentConfig:
    """``[agent]``: DQN hyper-parameters shared by every learning rule.

    The v1 keys ``double`` and ``loss`` are accepted in grids and become the
    ``dqn`` learner's params (``[learner]``), so they are not fields here.
    """

    #: discount factor
    gamma: float = 0.99
    #: learning rate of the optimizer (``[optimizer]``)
    lr: float = 1e-3
    #: transitions per learn step
    batch_size: int = 64
    #: transitions stored before the first learn step
    learning_starts: int = 1_000
    #: env steps between learning phases
    train_every: int = 1
    #: learn steps per learning phase
    gradient_steps: int = 1
    #: learn steps between hard copies of the online net into the target net
    target_update: int = 500
    #: clip the gradient's global norm to this; 0 = no clipping
    max_grad_norm: float = 0.0


@dataclass(frozen=True)
class ComponentConfig:
    """A chosen component: its registered name and the params passed to its factory."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayConfig(ComponentConfig):
    """``[replay]``: the component plus its capacity (the factory's first argument)."""

    capacity: int = 50_000


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run except its seed."""

    experiment: ExperimentConfig
    agent: AgentConfig = AgentConfig()
    network: ComponentConfig = ComponentConfig("mlp")
    replay: ReplayConfig = ReplayConfig("uniform")
    exploration: ComponentConfig = ComponentConfig("linear")
    env: ComponentConfig = ComponentConfig("auto")
    learner: ComponentConfig = ComponentConfig("dqn")
    optimizer: ComponentConfig = ComponentConfig("adam")
    #: ``[scores."ENV_ID"]``: random / reference scores that normalise returns (analysis only, not in run ids)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (JSON-able), the form stored in each run's record."""
        data = dataclasses.asdict(self)
        data["experiment"].pop("seeds")
        return data

    def flat(self) -> dict[str, Any]:
        """Dotted keys → values, component params folded in: the ``runs`` columns."""
        flat: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if section == "scores":
                for env_id, table in values.items():
                    flat.update({f"scores.{env_id}.{k}": v for k, v in table.items()})
                continue
            for key, value in values.items():
                if key == "params":
                    flat.update({f"{section}.{k}": v for k, v in value.items()})
                elif not (section == "experiment" and key in EXECUTION_KEYS):
                    flat[f"{section}.{key}"] = value
        return flat

    def cell_id(self) -> str:
        """Stable id of the configuration without seed (and without the experiment name)."""
        flat = {k: v for k, v in self.flat().items() if not k.startswith("scores.")}
        canonical = json.dumps(flat, sort_keys=True, default=list, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def run_id(cell_id: str, seed: int) -> str:
    """``<cell id>-s<seed>``: stable across invocations, readable in listings."""
    return f"{cell_id}-s{seed}"
