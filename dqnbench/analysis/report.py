"""The report table: one row per grid cell, as a terminal table, Markdown or CSV.

What it shows, per cell (see :func:`dqnbench.analysis.cells.cell_summary`): the IQM of
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
import textwrap
from typing import TYPE_CHECKING, Any

import pandas as pd

from dqnbench.analysis import cells, stats
from dqnbench.errors import DqnbenchError

if TYPE_CHECKING:
    from dqnbench.run.results import Results

FORMATS = ("table", "markdown", "csv")


SMALL_MARK = "†"


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def short_number(value: float) -> str:
    """A number in at most ~6 characters: 12.3k, 187, 42.5, 0.87, −499."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value / 1e3:.0f}k"
    if magnitude >= 1_000:
        return f"{value / 1e3:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1:
        return f"{value:.1f}"
    return f"{value:.2f}"


def signed_number(value: float) -> str:
    """:func:`short_number` with its sign: +12.3, −4.5, +0.00."""
    if value is None or math.isnan(value):
        return "–"
    return ("+" if value >= 0 else "") + short_number(value)


def terminal_width() -> int:
    """Columns to render tables in: the terminal's (``COLUMNS`` when set), at least 100."""
    return max(100, shutil.get_terminal_size((160, 24)).columns)


def _ci(row: pd.Series, name: str) -> str:
    return ci_text(row[name], row[f"{name}_lo"], row[f"{name}_hi"], int(row["n_ok"]))


def ci_text(value: float, low: float, high: float, n_ok: int) -> str:
    """``"187 [150, 230]"``; ``"187 [90, 260]†"`` below 5 runs; ``"187 (no CI: 1 run)"`` without a CI."""
    if math.isnan(value):
        return "–"
    if math.isnan(low) or math.isnan(high):
        return f"{short_number(value)} (no CI: {n_ok} run)"
    mark = SMALL_MARK if 0 < n_ok < stats.SMALL_N else ""
    return f"{short_number(value)} [{short_number(low)}, {short_number(high)}]{mark}"


#: Header of the final-return column, in ``report`` and in the summary ``run`` prints.
SCORE_HEADER = "IQM [95% CI]"
#: What † means, wherever it is printed next to a final return.
SMALL_NOTE = (f"{SMALL_MARK} n too small: fewer than {stats.SMALL_N} runs, the CI is Student's t interval "
              "(a bootstrap of so few runs collapses); use more seeds for a confident comparison.")  # fmt: skip


def final_return_texts(results: Results) -> dict[str, str]:
    """cell → the IQM [95% CI] of its final returns, as ``report`` prints it (the end-of-run summary's column)."""
    from dqnbench.analysis.bounds import UNBOUNDED, results_bounds

    bounds, envs = results_bounds(results), cells.cell_env(results.runs)
    out = {}
    for cell, scores in cells.final_scores(results.runs).items():
        est = stats.clip(stats.estimate(scores), *bounds.get(envs[cell], UNBOUNDED))
        out[cell] = ci_text(est.value, est.low, est.high, scores.size)
    return out


def _to_threshold(row: pd.Series) -> str:
    """``"12.0k (5/5)"``, ``"never (1/5)"`` or ``"–"`` without a threshold."""
    if math.isnan(row["threshold"]) or row["n_ok"] == 0:
        return "–"
    counts = f"({int(row['n_reached'])}/{int(row['n_ok'])})"
    if math.isinf(row["steps_to_threshold"]):
        return f"never {counts}"
    return f"{short_number(row['steps_to_threshold'])} {counts}"


def _ok(row: pd.Series) -> str:
    """``"4/5"``, with why runs are missing: ``"3/5 (1 failed, 1 diverged)"``."""
    text = f"{int(row['n_ok'])}/{int(row['n_runs'])}"
    missing = [f"{int(row[k])} {k[2:]}" for k in ("n_failed", "n_diverged") if row[k]]
    return text + (f" ({', '.join(missing)})" if missing else "")


def _ms(seconds: float) -> str:
    return "–" if math.isnan(seconds) else f"{seconds * 1e3:.3f}"


def display_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary rounded and labelled for people: strings, units in the headers.

    ``cell`` is the variant (the label without the environment, which has its own column).
    """
    rows = []
    for _, row in summary.iterrows():
        rows.append(
            {
                "cell": cells.variant_label(row["label"]),
                "env": row["env"] or "–",
                "ok": _ok(row),
                SCORE_HEADER: _ci(row, "iqm"),
                "median": short_number(row["median"]),
                "mean": short_number(row["mean"]),
                "AUC": short_number(row["auc"]),
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
        return f"steps to ≥ {short_number(values.pop())}"
    return "steps to threshold"


def footnote(
    summary: pd.DataFrame,
    confidence: float = stats.CONFIDENCE,
    n_resamples: int = stats.N_RESAMPLES,
    sort: str = "grid",
) -> str:
    """How the numbers were made, and how many runs failed (they are excluded from every statistic)."""
    text = (
        "Scores: final greedy evaluation return of each run. IQM: interquartile mean over runs with a "
        f"{confidence:.0%} percentile-bootstrap CI ({n_resamples} resamples; Agarwal et al. 2021), clipped to the "
        "returns the env allows (its known range, else the extremes observed). "
        "AUC: area under the evaluation-return curve divided by its step span (mean return over training), "
        "IQM over runs. Steps to ≥ threshold (the env's reward_threshold): median over runs, a run that "
        "never got there counting as never; (reached/runs). act / env / learn ms: mean milliseconds per env "
        "step choosing actions, in env.step and learning. ok: successful/all runs. "
        + ("Rows best IQM first." if sort == "score" else "Rows in grid order.")
    )
    if bool(summary.get("small_n", pd.Series(dtype=bool)).any()):
        text += " " + SMALL_NOTE
    failed = int(summary["n_failed"].sum()) if len(summary) else 0
    diverged = int(summary["n_diverged"].sum()) if len(summary) else 0
    if failed or diverged:
        text += (f" Excluded from every statistic: {failed} failed and {diverged} diverged run(s); "
                 "`dqnbench report DIR --failures` shows their errors.")  # fmt: skip
    return text


SCORE_COLUMNS = ("cell", "env", "ok", SCORE_HEADER, "median", "mean", "AUC")
SPEED_COLUMNS = ("cell", "env", "steps/s", "act ms", "env ms", "learn ms")


def render_report(
    summary: pd.DataFrame,
    fmt: str = "table",
    *,
    width: int | None = None,
    aggregates: Any = None,
    sort: str = "grid",
) -> str:
    """Render a :func:`dqnbench.analysis.cells.cell_summary` as ``table`` (rich), ``markdown`` or ``csv``.

    ``table`` fits ``width`` columns (default: the terminal's, at least 100):
    scores and speed are separate tables, a table that would still be too
    wide is split further, and the footnote is wrapped, so no row wraps and
    nothing is cut. ``aggregates`` (:class:`~dqnbench.analysis.aggregate.Aggregates`)
    adds the cross-environment section.
    """
    if fmt not in FORMATS:
        raise DqnbenchError(f"unknown report format {fmt!r} (allowed: {', '.join(FORMATS)})")
    if fmt == "csv":
        return summary.to_csv(index=False)
    if summary.empty:
        return "no runs to report\n"
    frame = display_frame(summary)
    if fmt == "markdown":
        text = markdown_table(frame) + "\n\n" + footnote(summary, sort=sort) + "\n"
        if aggregates is not None:
            text += "\n" + aggregate_section(aggregates, "markdown")
        return text
    env = None
    if len({str(e) for e in frame["env"]}) == 1:  # one environment: say it once, in the title
        env = frame["env"].iloc[0]
        frame = frame.drop(columns="env")
    title = "dqnbench report" + (f": {env}" if env else "")
    width = width or terminal_width()
    speed = [c for c in SPEED_COLUMNS if c in frame.columns]
    score = [c for c in frame.columns if c not in speed or c in ("cell", "env")]
    parts = [fit_tables(frame[score], title, width), fit_tables(frame[speed], "speed per env step", width)]
    text = "\n".join(parts) + wrap(footnote(summary, sort=sort), width)
    if aggregates is not None:
        text += "\n" + aggregate_section(aggregates, "table", width=width)
    return text


def wrap(text: str, width: int) -> str:
    """``text`` wrapped to ``width`` columns, paragraph by paragraph."""
    return "".join(textwrap.fill(p, width) + "\n" for p in text.split("\n"))


def fit_tables(frame: pd.DataFrame, title: str | None, width: int, keys: int | None = None) -> str:
    """``frame`` as rich tables no wider than ``width``: key columns repeated, the others packed greedily.

    ``keys``: how many leading columns identify a row (default: ``cell`` and ``env`` if present).
    """
    if keys is None:
        keys = 2 if len(frame.columns) > 1 and frame.columns[1] == "env" else 1
    key_cols, rest = list(frame.columns[:keys]), list(frame.columns[keys:])
    chunks: list[list[str]] = []
    for column in rest:
        if chunks and _table_width(frame[key_cols + chunks[-1] + [column]]) <= width:
            chunks[-1].append(column)
        else:
            chunks.append([column])
    out = []
    for i, chunk in enumerate(chunks or [[]]):
        name = title if i == 0 else f"{title} (continued)" if title else None
        out.append(rich_text(frame[key_cols + chunk], title=name, width=width))
    return "".join(out)


def _table_width(frame: pd.DataFrame) -> int:
    from rich.console import Console

    console = Console(width=10_000, color_system=None)
    return console.measure(rich_table(frame)).maximum


def aggregate_section(agg: Any, fmt: str = "table", *, width: int = 100) -> str:
    """The cross-environment aggregates: per-variant table, P(X > Y) across tasks, and the anchors used."""
    rows = []
    for _, r in agg.table.iterrows():
        mark = SMALL_MARK if r["small"] else ""

        def ci(m: str) -> str:
            return f"{r[m]:.2f} [{r[m + '_lo']:.2f}, {r[m + '_hi']:.2f}]{mark}"  # noqa: B023

        rows.append({"variant": r["variant"], "envs": str(r["n_envs"]), "runs": str(r["n_runs"]),
                     "IQM": ci("iqm"), "median": ci("median"), "mean": ci("mean"),
                     "optimality gap": ci("optimality_gap")})  # fmt: skip
    frame = pd.DataFrame(rows)
    poi = pd.DataFrame(
        [
            {
                "X": r.x,
                "Y": r.y,
                "envs": str(r.n_envs),
                "P(X > Y) [95% CI]": f"{r.p:.2f} [{r.lo:.2f}, {r.hi:.2f}]{SMALL_MARK if r.small else ''}",
            }
            for r in agg.improvement.itertuples()
        ]  # fmt: skip
    )
    from dqnbench.analysis.aggregate import anchors_text

    note = ("Normalized score = (return − random) / (reference − random), per environment; aggregates over "
            "all runs of a variant with stratified-bootstrap 95% CIs (runs resampled within each environment; "
            "Agarwal et al. 2021). Optimality gap: mean of max(1 − score, 0), lower is better. "
            f"{SMALL_MARK} fewer than {stats.SMALL_N} runs on an environment: rough. Anchors: "
            + "; ".join(anchors_text(agg.anchors)) + ". " + " ".join(agg.notes))  # fmt: skip
    if fmt == "markdown":
        text = "## Across environments (normalized scores)\n\n"
        if len(frame):
            text += markdown_table(frame) + "\n\n"
        if len(poi):
            text += markdown_table(poi) + "\n\n"
        return text + note + "\n"
    text = ""
    if len(frame):
        text += fit_tables(frame, "across environments: normalized scores", width, keys=1)
    if len(poi):
        text += fit_tables(poi, "probability of improvement across environments", width, keys=2)
    return text + wrap(note, width)


def report(
    results: Results,
    fmt: str = "table",
    *,
    width: int | None = None,
    sort: str = "grid",
    failures: bool = False,
    **stats_kwargs: Any,
) -> str:
    """Summarise ``results`` per cell and render it: what ``dqnbench report DIR`` prints.

    Cells in grid order (``plan.json``) or best IQM first (``sort="score"``);
    grids of several environments add the cross-environment aggregates;
    ``failures=True`` returns the failed runs and their errors instead.
    """
    from dqnbench.analysis.aggregate import aggregates

    results = cells.in_order(results, sort)
    if failures:
        return failures_text(results, fmt, width=width or terminal_width())
    if results.trials is not None:  # a search: the tuned comparison on the test seeds
        from dqnbench.analysis.tuned import tuned_report

        return tuned_report(results, fmt, width=width, sort=sort)
    agg = aggregates(results.runs) if fmt != "csv" else None
    return render_report(cells.summarize(results, **stats_kwargs), fmt, width=width, aggregates=agg, sort=sort)


def failures_text(results: Results, fmt: str = "table", *, width: int = 100) -> str:
    """Every run that did not succeed: its id, cell, seed, status and the last line of its error."""
    runs = results.runs
    bad = runs[runs["status"] != "ok"] if "status" in runs.columns else runs.iloc[0:0]
    if fmt == "csv":
        return bad.to_csv(index=False)
    if bad.empty:
        return "no failed runs\n"
    lines = []
    for _, r in bad.iterrows():
        error = str(r.get("error") or "").strip().splitlines()
        head = f"{r['run_id']} ({r['label']}, seed {r['seed']}): {r['status']}"
        last = error[-1] if error else "no error recorded"
        if fmt == "markdown":
            lines.append(f"- **{head}**: `{last}`")
        else:
            lines.append(textwrap.fill(head, width))
            lines.append(textwrap.fill(last, width, initial_indent="    ", subsequent_indent="    "))
    n = len(bad)
    plural = "s" if n != 1 else ""
    lines.append(f"{n} run{plural} did not succeed; rerun the same `dqnbench run` command to retry them.")
    return "\n".join(lines) + "\n"


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
        table.add_column(str(column), justify="left" if i < 2 else "right", no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))
    return table


def rich_text(
    frame: pd.DataFrame, title: str | None = None, caption: str | None = None, width: int | None = None
) -> str:
    """Render :func:`rich_table` to plain text (no colour codes), ``width`` columns (default: the terminal's)."""
    from rich.console import Console

    buffer = io.StringIO()
    width = width or terminal_width()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(rich_table(frame, title, caption))
    return buffer.getvalue()
