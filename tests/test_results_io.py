"""Run tables are written and read through Arrow directly: the same files and frames as through pandas.

``write_run`` builds each table as an Arrow table from the run's arrays, and ``load_results`` concatenates
the runs' tables in Arrow and converts once; both were pandas calls per table before (about a second and
half a second of a 64-run sweep). These tests hold them to what the pandas path gave: the same Parquet
content (NaN stored as null, arrays as list columns) and the same loaded frames, dtypes included.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dqnbench.run.results import (
    TABLE_COLUMNS,
    TABLES,
    RunOutput,
    load_results,
    runs_dir,
    write_plan,
    write_run,
)


def run_output(run_id: str, seed: int, n_steps: int = 300, windowed: bool = False, evals: bool = True) -> RunOutput:
    """A run's output with every kind of column a run writes: ints, float32 with NaN gaps, float64 timings,
    list-valued eval returns, and optionally the windowed ``steps_n`` column or no evaluations at all."""
    rng = np.random.default_rng(seed)
    loss = rng.random(n_steps, dtype=np.float32)
    loss[: n_steps // 3] = np.nan  # nothing learned before learning starts
    q_max = np.full(n_steps, np.nan, np.float32)
    q_max[::50] = rng.random(len(q_max[::50]), dtype=np.float32)
    steps = {
        "step": np.arange(n_steps, dtype=np.int64) * (10 if windowed else 1),
        "episode": np.repeat(np.arange(n_steps // 20 + 1, dtype=np.int64), 20)[:n_steps],
        "reward": np.ones(n_steps, np.float32),
        "t_act": rng.random(n_steps) * 1e-4,
        "t_env": rng.random(n_steps) * 1e-5,
        "t_learn": rng.random(n_steps) * 1e-3,
        "loss": loss,
        "q_max": q_max,
        "epsilon": np.linspace(1, 0.05, n_steps, dtype=np.float32),
    }
    if windowed:
        steps["steps_n"] = np.full(n_steps, 10, np.int64)
    episodes = {
        "episode": np.arange(5, dtype=np.int64),
        "step": np.arange(1, 6, dtype=np.int64) * 20,
        "return": rng.random(5) * 100,
        "length": np.full(5, 20, np.int64),
    }
    eval_table = {}
    if evals:
        eval_table = {
            "step": [100, 200],
            "mean_return": [9.5, float("nan")],
            "std_return": [0.5, float("nan")],
            "returns": [np.array([9.0, 10.0]), np.array([])],
        }
    record = {"run_id": run_id, "cell": run_id[:3], "label": "x", "seed": seed, "status": "ok", "error": None,
              "flat_config": {"agent.lr": 1e-3, "network.hidden": [16]}}  # fmt: skip
    return RunOutput(record, steps, episodes, eval_table, weights={})


def pandas_frame(output: RunOutput, name: str) -> pd.DataFrame:
    """The frame the pandas path wrote for this table (``DataFrame(...).to_parquet(index=False)``)."""
    columns = getattr(output, name)
    data = {c: columns[c] for c in TABLE_COLUMNS[name] if c in columns}
    length = len(next(iter(data.values()))) if data else 0
    return pd.DataFrame({"run_id": pd.Series([output.run_id] * length, dtype=str), **data})


OUTPUTS = [
    run_output("aaa-s0", 0),
    run_output("aaa-s1", 1, evals=False),
    run_output("bbb-s0", 2, n_steps=120, windowed=True),
]


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda o: o.run_id)
def test_written_tables_hold_what_pandas_wrote(tmp_path, output):
    run_dir = write_run(tmp_path, output)
    for name in TABLES:
        written = pq.read_table(run_dir / f"{name}.parquet")
        expected = pa.Table.from_pandas(pandas_frame(output, name), preserve_index=False)
        if expected.num_rows:
            assert written.equals(expected), name  # same columns, types and values, NaN stored as null
        else:  # no rows: pandas 2 typed the empty run_id column null (an empty object column); it is a string now
            assert written.num_rows == 0 and written.column_names == expected.column_names == ["run_id"], name
        pd.testing.assert_frame_equal(pd.read_parquet(run_dir / f"{name}.parquet"), pandas_frame(output, name))


def test_loaded_tables_equal_a_concat_of_each_runs_frame(tmp_path):
    """Mixed files (written now and written by pandas before) load as the per-file pandas reads concatenated."""
    old = run_output("old-s0", 5)
    for output in OUTPUTS:
        write_run(tmp_path, output)
    old_dir = runs_dir(tmp_path) / old.run_id
    write_run(tmp_path, old)
    for name in TABLES:  # this run's files as the pandas path wrote them
        pandas_frame(old, name).to_parquet(old_dir / f"{name}.parquet", index=False)
    for run_ids in ([o.run_id for o in [*OUTPUTS, old]], [o.run_id for o in [old, *OUTPUTS]]):  # old file first too
        write_plan(tmp_path, _grid(tmp_path), run_ids)
        res = load_results(tmp_path)
        for name in TABLES:
            parts = [pd.read_parquet(runs_dir(tmp_path) / r / f"{name}.parquet") for r in run_ids]
            expected = pd.concat([p for p in parts if len(p)], ignore_index=True)
            pd.testing.assert_frame_equal(getattr(res, name), expected, check_exact=True)
        assert set(res.evals.run_id) == {"aaa-s0", "bbb-s0", "old-s0"}  # the run without evals adds none


def test_runs_whose_column_types_differ_still_load_as_pandas_unifies_them(tmp_path):
    first, second = run_output("aaa-s0", 0), run_output("aaa-s1", 1)
    second.steps["reward"] = np.ones(300, np.int64)  # a plugin's run that records integer rewards
    for output in (first, second):
        write_run(tmp_path, output)
    write_plan(tmp_path, _grid(tmp_path), ["aaa-s0", "aaa-s1"])
    steps = load_results(tmp_path).steps
    parts = [pd.read_parquet(runs_dir(tmp_path) / r / "steps.parquet") for r in ("aaa-s0", "aaa-s1")]
    pd.testing.assert_frame_equal(steps, pd.concat(parts, ignore_index=True))


def test_loading_a_plain_grids_results_does_not_import_scipy(tmp_path):
    """SciPy costs about 1.3 s to import; only a search's objective (and the statistics) need it."""
    write_run(tmp_path, run_output("aaa-s0", 0))
    write_plan(tmp_path, _grid(tmp_path), ["aaa-s0"])
    code = (
        "import sys; from dqnbench.run.results import load_results; "
        f"assert len(load_results({str(tmp_path)!r}).steps) == 300; print('scipy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def _grid(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("[experiment]\n")
    return grid
