"""How a grid's runs become tasks: one run each, or a lock-step cell's seeds in groups.

A lock-step cell trains its seeds as one batched program in one process. When
a grid has fewer tasks than the executor runs at once (one reference
configuration over many seeds, the job researchers run most), one process per
cell leaves workers idle, so each cell's seeds split into *lock-step groups*,
one task each, until every worker has one. ``experiment.lockstep_group = N``
pins the split instead: at most N seeds per group.

A group is a lock-step cell of its own: its members share the random streams
seeded from the group's first seed (env resets, exploration, replay sampling,
noise), while each member's network starts from its own seed. A member's
results are therefore a function of its configuration and its group's seeds:
the same group gives the same results bit for bit wherever it runs, and another
split gives other draws of the same distribution (``docs/lockstep.md``).

The grouping is a function of the plan and the executor's capacity alone,
never of which runs are left to do, so a rerun of an interrupted grid regroups
exactly as before and a group with a missing member reruns as a whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dqnbench.config.grid import Plan, RunSpec


def executor_slots(pool: Any) -> int:
    """How many tasks the executor runs at once: its optional ``slots`` attribute (the built-ins have it), else 1."""
    try:
        return max(1, int(getattr(pool, "slots", 1) or 1))
    except (TypeError, ValueError):
        return 1


def split_seeds(specs: Sequence[RunSpec], groups: int) -> list[tuple[RunSpec, ...]]:
    """``specs`` in ``groups`` runs of consecutive seeds, as equal as possible, the larger first (7 in 2: 4 + 3)."""
    groups = max(1, min(groups, len(specs)))
    size, extra = divmod(len(specs), groups)
    out, start = [], 0
    for g in range(groups):
        end = start + size + (1 if g < extra else 0)
        out.append(tuple(specs[start:end]))
        start = end
    return out


def lockstep_groups(plan: Plan, lockstep_cells: set[str], slots: int) -> dict[str, list[tuple[RunSpec, ...]]]:
    """Each lock-step cell's groups of runs (a group of one trains as a plain single run).

    A cell with ``experiment.lockstep_group = N`` gets ⌈seeds / N⌉ groups. The
    others start as one group each; while the grid has fewer tasks (its other
    runs, one each, plus the groups) than ``slots``, the cell whose groups are
    largest gains one more group.
    """
    seeds = {cell: [spec for spec in plan.runs if spec.cell == cell] for cell in lockstep_cells}
    counts: dict[str, int] = {}
    automatic = []
    for cell, _, config in plan.cells:
        if cell not in lockstep_cells:
            continue
        pinned = config.experiment.lockstep_group
        counts[cell] = math.ceil(len(seeds[cell]) / pinned) if pinned else 1
        if not pinned:
            automatic.append(cell)
    tasks = sum(1 for spec in plan.runs if spec.cell not in lockstep_cells) + sum(counts.values())
    while tasks < slots:
        widest = max(automatic, key=lambda c: math.ceil(len(seeds[c]) / counts[c]), default=None)
        if widest is None or counts[widest] >= len(seeds[widest]):
            break
        counts[widest] += 1
        tasks += 1
    return {cell: split_seeds(seeds[cell], counts[cell]) for cell in counts}


def split_notes(plan: Plan, groups: dict[str, list[tuple[RunSpec, ...]]]) -> list[str]:
    """One line per cell split automatically (not pinned by ``experiment.lockstep_group``), for the run's output."""
    notes = []
    for cell, label, config in plan.cells:
        parts = groups.get(cell, [])
        if len(parts) > 1 and not config.experiment.lockstep_group:
            sizes = " + ".join(str(len(g)) for g in parts)
            notes.append(
                f"note: cell {label!r}: {sum(map(len, parts))} seeds in {len(parts)} lock-step groups ({sizes}), "
                "one per free worker; results depend on the grouping: experiment.lockstep_group pins it"
            )
    return notes


def describe_groups(plan: Plan, groups: dict[str, list[tuple[RunSpec, ...]]]) -> list[str]:
    """The ``--dry-run`` lines on lock-step: each lock-step cell's groups, one line per cell."""
    lines = []
    for cell, label, _ in plan.cells:
        parts = groups.get(cell)
        if parts is None:
            continue
        sizes = " + ".join(str(len(g)) for g in parts)
        if len(parts) == 1:
            what = f"one group of {sizes}"
        elif all(len(g) == 1 for g in parts):
            what = f"{len(parts)} single runs (a group of one is a plain run)"
        else:
            what = f"{len(parts)} groups ({sizes})"
        lines.append(f"  cell {cell}  {label}: {what}")
    return lines
