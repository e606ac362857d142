"""The report of a search: the tuned comparison on the test seeds, and each variant's configurations.

- the usual per-cell table (:mod:`dqnbench.analysis.report`) of the test phase only:
  each variant's best configuration ("tuned") and, where the search tests it, its
  default one, IQM with 95 % CIs on the fresh test seeds; cross-environment
  aggregates where the grid has several environments;
- P(X > Y) between the tuned variants (:func:`~dqnbench.analysis.cells.improvement_matrix`);
- the configurations: each searched key's value, the objective on the tuning seeds
  (the best of ``trials`` draws: optimistic) beside the same objective on the test
  seeds. The drop between them is the winner's curse.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dqnbench.analysis import cells
from dqnbench.analysis.report import fit_tables, markdown_table, render_report, short_number, wrap
from dqnbench.analysis.sensitivity import search_view
from dqnbench.search.trials import read_index, run_objective

if TYPE_CHECKING:
    from dqnbench.run.results import Results


def configs_table(results: Results) -> pd.DataFrame:
    """One row per test-phase config: variant, config (tuned / default), trial, searched values, objectives."""
    index = read_index(results.path) or {"keys": [], "test": []}
    ok = set(cells.ok_runs(results.runs)["run_id"])
    rows = []
    for entry in index["test"]:
        ids = [r for r in entry["run_ids"] if r in ok]
        values = [run_objective(results.evals[results.evals.run_id == r], index["objective"]) for r in ids]
        tune = entry.get("tune_objective")
        rows.append({
            "variant": entry["variant"], "config": entry["kind"],
            "trial": "–" if entry.get("trial") is None else str(entry["trial"]),
            **{key: _value(entry["params"].get(key)) for key in index["keys"]},
            "tune objective": short_number(tune) if tune is not None else "–",
            "test objective": short_number(float(np.mean(values))) if values else "–",
        })  # fmt: skip
    return pd.DataFrame(rows)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "–" if value is None else str(value)


def improvement_table(runs: pd.DataFrame) -> pd.DataFrame:
    """P(X > Y) on the final return between the tuned configs, with its CI, per environment."""
    tuned = runs[runs["label"].str.endswith("(tuned)")]
    matrix = cells.improvement_matrix(tuned)
    rows = []
    for row in matrix[matrix["x"] != matrix["y"]].itertuples():
        ci = "" if math.isnan(row.lo) else f" [{row.lo:.2f}, {row.hi:.2f}]" + ("†" if row.small else "")
        rows.append({"X (tuned)": cells.variant_label(row.x_label), "Y (tuned)": cells.variant_label(row.y_label),
                     "P(X > Y)": f"{row.p:.2f}{ci}"})  # fmt: skip
    return pd.DataFrame(rows, columns=["X (tuned)", "Y (tuned)", "P(X > Y)"])


def tuned_report(results: Results, fmt: str = "table", *, width: int | None = None, sort: str = "grid") -> str:
    """What ``dqnbench report`` prints for a search (``csv``: the test phase's per-cell summary)."""
    from dqnbench.analysis.aggregate import aggregates

    view = search_view(results)
    summary = cells.summarize(view)
    if fmt == "csv":
        return render_report(summary, "csv")
    index = read_index(results.path) or {}
    seeds = next((e["seeds"] for e in index.get("test", [])), [])
    head = (f"Tuned comparison: each variant's best of {index.get('trials_per_variant')} trials (by the mean "
            f"{index.get('objective')} objective over the tuning seeds), and its default config, rerun on the "
            f"test seeds {seeds}.")  # fmt: skip
    table = render_report(summary, fmt, width=width, aggregates=aggregates(view.runs), sort=sort)
    poi, configs = improvement_table(view.runs), configs_table(results)
    curse = ("tune objective: the best trial's mean over the tuning seeds (the best of many draws, so "
             "optimistic); test objective: the same objective on the test seeds. The drop between them is the "
             "winner's curse.")  # fmt: skip
    if fmt == "markdown":
        parts = [head, "", table]
        if len(poi):
            title = "Probability of improvement between the tuned variants (final return):"
            parts += [title, "", markdown_table(poi), ""]
        parts += ["Configurations:", "", markdown_table(configs), "", curse, ""]
        return "\n".join(parts)
    width = width or 100
    text = wrap(head, width) + "\n" + table + "\n"
    if len(poi):
        text += fit_tables(poi, "probability of improvement, tuned variants", width, keys=2)
    return text + fit_tables(configs, "configurations", width, keys=2) + wrap(curse, width)
