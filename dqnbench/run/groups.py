"""How a grid's runs become tasks: one run each, or a lock-step cell's seeds in groups.

A lock-step cell trains its seeds as one batched program in one process. When
a grid has fewer tasks than the executor runs at once (one reference
configuration over many seeds, the job researchers run most), one process per
cell leaves workers idle, so each cell's seeds split into *lock-step groups*,
one task each, until every worker has one; and where the tasks would leave
workers idle in the last wave, the last cells split to fill it. ``experiment.lockstep_group = N``
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
from dqnbench.run.fusion import Fusion


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


def lockstep_groups(
    plan: Plan, lockstep_cells: set[str], slots: int, fusion: Fusion | None = None
) -> dict[str, list[tuple[RunSpec, ...]]]:
    """Each lock-step pool's groups of runs, keyed by the pool's first cell (a group of one trains as a plain run).

    ``fusion`` (:func:`~dqnbench.run.runner.fusion_pools`): lock-step cells that
    fuse, in grid order; without it each cell is its own pool. A pool's runs are
    its cells' seeds in grid order, then seed. With ``experiment.lockstep_group = N``
    a pool gets ⌈runs / N⌉ groups. The others start as one group each; while the
    grid has fewer tasks (its other runs, one each, plus the groups) than
    ``slots``, the pool whose groups are largest gains one more group, unless
    that would leave a fused pool's groups below its floor (``Fusion.floors``:
    an overhead-bound group gains more from its size than from a second worker).
    When the tasks outnumber the slots but not by whole waves, the last pools
    (tasks run in grid order, so theirs run last) split the same way until the
    last wave fills the workers it would leave idle.
    """
    pools = fusion.pools if fusion else [[cell] for cell, _, _ in plan.cells if cell in lockstep_cells]
    floors = fusion.floors if fusion else {}
    runs = {pool[0]: [spec for cell in pool for spec in plan.runs if spec.cell == cell] for pool in pools}
    configs = {cell: config for cell, _, config in plan.cells}
    counts: dict[str, int] = {}
    automatic = []
    for pool in pools:
        pinned = configs[pool[0]].experiment.lockstep_group
        counts[pool[0]] = math.ceil(len(runs[pool[0]]) / pinned) if pinned else 1
        if not pinned:
            automatic.append(pool[0])
    pooled = {cell for pool in pools for cell in pool}
    tasks = sum(1 for spec in plan.runs if spec.cell not in pooled) + sum(counts.values())
    while tasks < slots:
        splittable = [p for p in automatic if len(runs[p]) // (counts[p] + 1) >= floors.get(p, 1)]
        widest = max(splittable, key=lambda p: math.ceil(len(runs[p]) / counts[p]), default=None)
        if widest is None:
            break
        counts[widest] += 1
        tasks += 1
    # the last wave: tasks that outnumber the workers by part of a wave would leave workers idle at the end (3
    # cells on 2 workers: one alone for a third of the job), so the last pools, which run last, split until it fills
    for pool in reversed(automatic):
        while tasks > slots and tasks % slots and len(runs[pool]) // (counts[pool] + 1) >= floors.get(pool, 1):
            counts[pool] += 1
            tasks += 1
    return {first: split_seeds(runs[first], counts[first]) for first in counts}


def is_fused(group: tuple[RunSpec, ...], pool_cells: int) -> bool:
    """Does a group train fused (its members' member-wise params per member)? When its pool has several cells."""
    return pool_cells > 1 and len(group) > 1


def split_notes(plan: Plan, groups: dict[str, list[tuple[RunSpec, ...]]]) -> list[str]:
    """One line per pool split automatically (not pinned by ``experiment.lockstep_group``), for the run's output."""
    notes = []
    for cell, label, config in plan.cells:
        parts = groups.get(cell, [])
        if len(parts) > 1 and not config.experiment.lockstep_group:
            sizes = " + ".join(str(len(g)) for g in parts)
            cells = len({spec.cell for g in parts for spec in g})
            what = f"cell {label!r}" if cells == 1 else f"fused pool of {cells} cells from {label!r}"
            runs = "seeds" if cells == 1 else "runs"
            notes.append(
                f"note: {what}: {sum(map(len, parts))} {runs} in {len(parts)} lock-step groups ({sizes}), "
                "one per free worker; results depend on the grouping: experiment.lockstep_group pins it"
            )
    return notes


def describe_groups(plan: Plan, groups: dict[str, list[tuple[RunSpec, ...]]]) -> list[str]:
    """The ``--dry-run`` lines on lock-step: each pool's groups; a fused group with its cells and seeds."""
    lines = []
    for cell, label, _ in plan.cells:
        parts = groups.get(cell)
        if parts is None:
            continue
        cells = list(dict.fromkeys(spec.cell for g in parts for spec in g))
        if len(cells) == 1:
            sizes = " + ".join(str(len(g)) for g in parts)
            if len(parts) == 1:
                what = f"one group of {sizes}"
            elif all(len(g) == 1 for g in parts):
                what = f"{len(parts)} single runs (a group of one is a plain run)"
            else:
                what = f"{len(parts)} groups ({sizes})"
            lines.append(f"  cell {cell}  {label}: {what}")
            continue
        lines.append(f"  pool of {len(cells)} cells fused ({sum(map(len, parts))} runs in {len(parts)} groups):")
        for i, group in enumerate(parts):
            kind = "fused" if is_fused(group, len(cells)) else "single run"
            members = {}
            for spec in group:
                members.setdefault(spec.cell, []).append(spec.seed)
            body = "; ".join(f"cell {c} seeds {seeds}" for c, seeds in members.items())
            lines.append(f"    group {i + 1}: {kind}, {len(group)} members: {body}")
    return lines
