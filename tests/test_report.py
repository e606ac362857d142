"""The report table in its three formats."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from dqnbench.analysis import cells, stats
from dqnbench.analysis.report import FORMATS, render_report, report
from dqnbench.errors import DqnbenchError
from tests.test_stats import in_memory_results, make_evals, make_runs


@pytest.fixture
def results():
    runs = make_runs({
        "network.name=mlp": {"final": [480, 490, 500, 300], "sps": 1200.0},
        "network.name=dueling": {"final": [20.0, None], "sps": 800.0, "network": "dueling"},
    })  # fmt: skip
    curves = {"c0-s0": [100, 480], "c0-s1": [100, 490], "c0-s2": [400, 500], "c0-s3": [10, 300], "c1-s0": [5, 20]}
    evals = make_evals(runs, curves, [500, 1000])
    steps = pd.DataFrame({"run_id": ["c0-s0", "c1-s0"], "step": [0, 0], "t_act": [2e-4, 3e-4],
                          "t_env": [1e-4, 1e-4], "t_learn": [1e-3, 2e-3]})  # fmt: skip
    return in_memory_results(runs, evals, steps)


def test_table_shows_every_cell_and_how_the_numbers_were_made(results):
    text = report(results, "table", width=200)
    assert "network.name=mlp" in text and "network.name=dueling" in text
    assert "IQM [95% CI]" in text and "Agarwal et al. 2021" in text
    assert "1/2 (1 failed)" in text  # failed runs are counted, not hidden
    assert "no CI: 1 run" in text  # one successful seed: no interval, said so
    assert "steps to ≥ 475" in text and "1.0k (3/4)" in text and "never (0/1)" in text
    assert "1 failed" in text and "\x1b[" not in text  # no colour codes in the text


def test_markdown_is_a_pipe_table_with_a_row_per_cell(results):
    text = report(results, "markdown")
    lines = text.splitlines()
    assert lines[0].startswith("| cell | env | ok | IQM [95% CI] |")
    assert set(lines[1].replace("|", "").split()) == {"---"}
    assert sum(1 for line in lines if line.startswith("| network.name=")) == 2
    assert "act ms" in lines[0] and "steps/s" in lines[0]


def test_csv_is_the_full_precision_numeric_summary(results):
    frame = pd.read_csv(io.StringIO(report(results, "csv")))
    assert list(frame.columns) == cells.SUMMARY_COLUMNS
    assert frame.loc[0, "iqm"] == pytest.approx(stats.iqm([480, 490, 500, 300]))
    assert frame.loc[0, "t_learn"] == pytest.approx(1e-3)


def test_unknown_format_is_a_user_error(results):
    with pytest.raises(DqnbenchError, match="table, markdown, csv"):
        render_report(cells.summarize(results), "html")
    assert FORMATS == ("table", "markdown", "csv")


def _multi_env_results():
    runs = make_runs({
        "experiment.env=CartPole-v1, network.name=mlp": {"final": [480, 490, 500, 300, 200], "sps": 1200.0},
        "experiment.env=CartPole-v1, network.name=dueling-with-a-long-variant-name": {
            "final": [20.0, None, 30.0], "sps": 800.0, "network": "dueling"},
        "experiment.env=Acrobot-v1, network.name=mlp": {"final": [-90, -100, -120], "env": "Acrobot-v1"},
        "experiment.env=Acrobot-v1, network.name=dueling-with-a-long-variant-name": {
            "final": [-400, -300, -200], "env": "Acrobot-v1", "network": "dueling"},
    })  # fmt: skip
    return in_memory_results(runs)


def test_report_fits_100_columns_with_aggregates_and_small_n_marks():
    text = report(_multi_env_results(), "table", width=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "across environments: normalized scores" in text and "optimality gap" in text
    assert "†" in text and "n too small" in text  # 3 seeds: marked, not a collapsed [x, x]
    assert "probability of improvement across environments" in text
    # nothing cut: every cell's variant and every CI appears whole
    assert text.count("dueling-with-a-long-variant-name") >= 2 and "Acrobot-v1" in text
    assert text.index("CartPole-v1") < text.index("Acrobot-v1")  # grid order


def test_failures_lists_each_failed_run_with_its_error():
    text = report(_multi_env_results(), failures=True, width=100)
    assert "c1-s1" in text and "boom" in text and "1 run did not succeed" in text
    assert report(in_memory_results(make_runs({"a": {"final": [1.0]}})), failures=True) == "no failed runs\n"


def test_python_api_returns_what_the_cli_prints(tmp_path, capsys):
    import dqnbench
    from dqnbench.cli import main
    from tests.test_plots import write_synthetic_results

    write_synthetic_results(tmp_path / "r", {"default": {}}, seeds=2)
    assert main(["report", str(tmp_path / "r"), "--format", "markdown"]) == 0
    assert capsys.readouterr().out == dqnbench.report(tmp_path / "r", "markdown")


def test_the_footnote_says_how_rows_are_ordered():
    """``--sort score`` once sorted the rows but kept saying "Rows in grid order"."""
    results = _multi_env_results()
    for fmt in ("table", "markdown"):
        assert "Rows in grid order." in report(results, fmt, width=100)
        by_score = report(results, fmt, width=100, sort="score")
        assert "Rows best IQM first." in by_score.replace("\n", " ") and "grid order" not in by_score
