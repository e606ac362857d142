"""Pruning at evaluations: the hook a trial's runs call after each greedy evaluation.

The runner hands it to the training loop (``on_eval``); in the worker it reports the
objective so far (the mean over the task's runs) to the trial in the study database
and raises :class:`optuna.TrialPruned` when the pruner says stop, so the run ends
there and is recorded with that error; the driver then tells the trial ``pruned``.
Workers reach the study through its SQLite file, so pruning needs the results
directory on a filesystem the workers share (local processes do; see docs/tuning.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: what a pruned run's error says (the driver reads it back from the run record)
PRUNED = "TrialPruned"


@dataclass(frozen=True)
class PruneReporter:
    """Picklable: the study (by URL and name), the trial, the pruner and the objective."""

    url: str
    study_name: str
    trial_id: int
    pruner: str
    objective: str

    def __call__(self, step: int, curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> None:
        """``curves``: each run's evaluations so far, ``(steps, mean returns)``; raises TrialPruned to stop."""
        import optuna

        from dqnbench.search.study import pruner
        from dqnbench.search.trials import intermediate

        values = [intermediate(steps, returns, self.objective) for steps, returns in curves]
        study = optuna.load_study(study_name=self.study_name, storage=self.url, pruner=pruner(self.pruner))
        trial = optuna.Trial(study, self.trial_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step another seed's run reported already keeps its first value
            trial.report(sum(values) / len(values), step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned by the {self.pruner} pruner at step {step}")


@dataclass
class MemberPruners:
    """A fused group's pruning: each member's trial hook sees that trial's own runs; a pruned trial leaves the group.

    Its members train on with the group (they share one program) but are recorded
    pruned (``pruned``: member index → the pruner's message, read by the runner
    when the task ends); the group stops only once every trial in it is pruned.
    """

    hooks: tuple[PruneReporter | None, ...]
    pruned: dict[int, str] = field(default_factory=dict)

    def __call__(self, step: int, curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> None:
        import optuna

        members: dict[PruneReporter, list[int]] = {}
        for k, hook in enumerate(self.hooks):
            if hook is not None and k not in self.pruned:
                members.setdefault(hook, []).append(k)
        for hook, rows in members.items():
            try:
                hook(step, [curves[k] for k in rows])
            except optuna.TrialPruned as pruned:
                self.pruned.update({k: str(pruned) for k in rows})
        if len(self.pruned) == len(self.hooks):
            raise optuna.TrialPruned(f"every trial of the group was pruned by step {step}")


def task_pruner(specs: Sequence[Any], hooks: Mapping[str, PruneReporter]) -> Any:
    """The ``on_eval`` of a task: its cell's hook, or for a fused group (several cells) one per member."""
    cells = {spec.cell for spec in specs}
    if len(cells) == 1:
        return hooks.get(specs[0].cell)
    return MemberPruners(tuple(hooks.get(spec.cell) for spec in specs))
