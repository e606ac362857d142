"""The report table: one row per grid cell, as a terminal table, Markdown or CSV.

What it shows, per cell (see :func:`dqnbench.analysis.stats.cell_summary`): the IQM of
the final greedy evaluation return across seeds with its 95 % stratified
bootstrap CI (Agarwal et al. 2021), mean and median, the normalised area under
the evaluation curve, steps to the environment's reward threshold, steps per
second and the mean per-step time spent acting, stepping the env and learning.

``table`` and ``markdown`` are for people (rounded, units in headers, a
footnote that says how the numbers were made and how many runs failed);
``csv`` is for machines (the raw numeric summary, full precision).
"""

from __future__ import annotations

import io
import math
import shutil
from typing import TYPE_CHECKING, Any

import pandas as pd

from dqnbench.analysis import stats
from dqnbench.errors import DqnbenchError

if TYPE_CHECKING:
    from dqnbench.run.results import Results

FORMATS = ("table", "markdown", "csv")


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ci(row: pd.Series, name: str) -> str:
    """``"187.3 [150.2, 230.1]"``; ``"187.3 (1 run: no CI)"`` when the CI cannot be estimated."""
    value, low, high = row[name], row[f"{name}_lo"], row[f"{name}_hi"]
    if math.isnan(value):
        return "–"
    if math.isnan(low) or math.isnan(high):
        return f"{_num(value)} (no CI: {int(row['n_ok'])} run)"
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _to_threshold(row: pd.Series) -> str:
    """``"12,000 (5/5)"``, ``"not reached (1/5)"`` or ``"–"`` without a threshold."""
    if math.isnan(row["threshold"]) or row["n_ok"] == 0:
        return "–"
    counts = f"({int(row['n_reached'])}/{int(row['n_ok'])})"
    if math.isinf(row["steps_to_threshold"]):
        return f"not reached {counts}"
    return f"{row['steps_to_threshold']:,.0f} {counts}"


def _ok(row: pd.Series) -> str:
    """``"4/5"``, with why runs are missing: ``"3/5 (1 failed, 1 diverged)"``."""
    text = f"{int(row['n_ok'])}/{int(row['n_runs'])}"
    missing = [f"{int(row[k])} {k[2:]}" for k in ("n_failed", "n_diverged") if row[k]]
    return text + (f" ({', '.join(missing)})" if missing else "")


def _ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1e3:.3f}"


def display_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rounded and labelled for people: strings, units in the headers."""
    rows = []
    for _, row in summary.iterrows():
        rows.append(
            {
                "cell": row["label"],
                "env": row["env"] or "–",
                "ok": _ok(row),
                "IQM [95% CI]": _ci(row, "iqm"),
                "mean": _num(row["mean"]),
                "median": _num(row["median"]),
                "AUC": _num(row["auc"]),
                _threshold_header(summary): _to_threshold(row),
                "steps/s": _num(row["steps_per_s"], 0),
                "act ms": _ms(row["t_act"]),
                "env ms": _ms(row["t_env"]),
                "learn ms": _ms(row["t_learn"]),
            }
        )
    return pd.DataFrame(rows)


def _threshold_header(summary: pd.DataFrame) -> str:
    values = {float(v) for v in summary["threshold"] if not math.isnan(v)}
    if len(values) == 1:
        return f"steps to ≥ {_num(values.pop(), 0)}"
    return "steps to threshold"


def footnote(summary: pd.DataFrame, confidence: float = stats.CONFIDENCE, n_resamples: int = stats.N_RESAMPLES) -> str:
    """How the numbers were made, and how many runs failed (they are excluded from every statistic)."""
    text = (
        "Scores: final greedy evaluation return of each run. IQM: interquartile mean over runs with a "
        f"{confidence:.0%} percentile-bootstrap CI ({n_resamples} resamples; Agarwal et al. 2021). "
        "AUC: area under the evaluation-return curve divided by its step span (mean return over training), "
        "IQM over runs. Steps to ≥ threshold (the env's reward_threshold): median over runs, a run that "
        "never got there counting as never; (reached/runs). act / env / learn ms: mean milliseconds per env "
        "step choosing actions, in env.step and learning. ok: successful/all runs."
    )
    with_ci = summary.loc[summary["n_ok"] >= 2, "n_ok"]
    if len(with_ci) and with_ci.min() < 5:
        text += (" With fewer than 5 runs a CI is rough (with 2 it is about the range of the two): "
                 "use more seeds for a confident comparison.")  # fmt: skip
    failed = int(summary["n_failed"].sum()) if len(summary) else 0
    diverged = int(summary["n_diverged"].sum()) if len(summary) else 0
    if failed or diverged:
        text += f" Excluded from every statistic: {failed} failed and {diverged} diverged run(s)."
    return text


def render_report(summary: pd.DataFrame, fmt: str = "table", *, width: int | None = None) -> str:
    """Render a :func:`dqnbench.analysis.stats.cell_summary` as ``table`` (rich), ``markdown`` or ``csv``."""
    if fmt not in FORMATS:
        raise DqnbenchError(f"unknown report format {fmt!r} (allowed: {', '.join(FORMATS)})")
    if fmt == "csv":
        return summary.to_csv(index=False)
    if summary.empty:
        return "no runs to report\n"
    frame = display_frame(summary)
    if fmt == "markdown":
        return markdown_table(frame) + "\n\n" + footnote(summary) + "\n"
    return rich_text(frame, title="dqnbench report", caption=footnote(summary), width=width)


def report(results: Results, fmt: str = "table", *, width: int | None = None, **stats_kwargs: Any) -> str:
    """Summarise ``results`` per cell and render it: what ``dqnbench report DIR`` prints."""
    return render_report(stats.summarize(results, **stats_kwargs), fmt, width=width)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown pipe table of a DataFrame of strings."""

    def cells(values: Any) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(frame.columns), "| " + " | ".join("---" for _ in frame.columns) + " |"]
    lines += [cells(row) for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def rich_table(frame: pd.DataFrame, title: str | None = None, caption: str | None = None) -> Any:
    """A :class:`rich.table.Table` of a DataFrame of strings (numbers right-aligned)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, caption=caption, caption_justify="left")
    for i, column in enumerate(frame.columns):
        table.add_column(
            str(column), justify="left" if i < 2 else "right", overflow="fold", min_width=(20 if i == 0 else None)
        )
    for row in frame.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))
    return table


def rich_text(
    frame: pd.DataFrame, title: str | None = None, caption: str | None = None, width: int | None = None
) -> str:
    """Render :func:`rich_table` to plain text (no colour codes), ``width`` columns (default: the terminal's)."""
    from rich.console import Console

    buffer = io.StringIO()
    width = width or max(100, shutil.get_terminal_size((160, 24)).columns)
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(rich_table(frame, title, caption))
    return buffer.getvalue()
