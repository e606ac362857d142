"""``dqnbench.report`` and ``dqnbench.plot``: the CLI's ``report`` and ``plot`` as functions.

They take a results directory (or a loaded :class:`~dqnbench.run.results.Results`)
and return exactly what the commands print or write, so a notebook or a script
gets the same table and the same files as a terminal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dqnbench.run.results import Results


def _load(results: str | os.PathLike | Results, all_runs: bool) -> Results:
    from dqnbench.run.live import load_live_results
    from dqnbench.run.results import Results

    return results if isinstance(results, Results) else load_live_results(results, all_runs=all_runs)


def report(
    results: str | os.PathLike | Results,
    format: str = "table",  # noqa: A002 - the CLI's flag name
    *,
    sort: str = "grid",
    failures: bool = False,
    all_runs: bool = False,
    width: int | None = None,
) -> str:
    """The text ``dqnbench report DIR --format FORMAT [--sort] [--failures]`` prints (on a grid still running,
    its first line says the results are partial; for ``csv``, which must stay a table, the CLI says it on stderr)."""
    from dqnbench.analysis.report import report as render

    loaded = _load(results, all_runs)
    text = render(loaded, format, width=width, sort=sort, failures=failures)
    return f"({loaded.partial})\n{text}" if loaded.partial and format != "csv" else text


def plot(
    results: str | os.PathLike | Results,
    out: str | os.PathLike | None = None,
    *,
    sort: str = "grid",
    all_runs: bool = False,
) -> list[Path]:
    """Write what ``dqnbench plot DIR [--out OUT]`` writes (default ``DIR/plots``); return the paths."""
    from dqnbench.analysis.plots import write_plots
    from dqnbench.plugin.registry import load_registry

    return write_plots(_load(results, all_runs), out_dir=out, registry=load_registry(), sort=sort)
