"""``dqnbench run`` on a grid with a ``[search]``: dry run, the search, plots, exit status."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dqnbench.config.grid import Plan


def cmd_search(args: argparse.Namespace, plan: Plan, registry: Any) -> int:
    """Run the search; exit 1 when a test-phase run did not succeed (failed tuning trials are part of a search)."""
    if args.dry_run:
        print(plan.describe())
        return 0
    from dqnbench.cli import run_options
    from dqnbench.run.runner import write_grid_plots
    from dqnbench.search.driver import run_search

    results = run_search(plan, registry, **run_options(args))
    if not args.no_plots:
        write_grid_plots(results, plan, registry, sys.stdout)
    runs = results.runs
    failed = runs[(runs["phase"] == "test") & (runs["status"] != "ok")]["run_id"].tolist()
    if failed:
        print(
            f"dqnbench: {len(failed)} test-phase runs did not succeed: {', '.join(failed[:10])} (their errors: "
            f"dqnbench report {results.path} --failures; rerun the same command to retry them)",
            file=sys.stderr,
        )
        return 1
    return 0
