"""``dqnbench bench-compare``: calibrated ratios, user errors, and the two promises measured for real.

The last two tests run pytest-benchmark sessions in subprocesses: the
calibration plus a test-only component (``tests/benchmarks/planted.py``) and a
few suite benchmarks. A 30 % slowdown planted in that component must be
flagged; the unchanged code re-run while other processes load every core must
not be. Their ratios are printed (``pytest -s``) and kept in the tests' output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dqnbench.devtools.benchcompare import (
    CALIBRATION_KEY,
    CALIBRATION_PARTS_KEY,
    CALIBRATION_VERSION,
    BenchComparison,
    CalibrationWorkload,
    bench_compare,
    main,
    parse_fraction,
)
from dqnbench.errors import DqnbenchError

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = "tests/benchmarks/test_calibration.py::test_calibration"
PLANTED = "tests/benchmarks/planted.py::test_planted_network_forward"
#: suite benchmarks re-run under load besides the planted one (short, medium and long rounds)
SUITE = [
    "tests/benchmarks/test_components.py::test_act[network-mlp]",
    "tests/benchmarks/test_components.py::test_replay_sample[replay-prioritized-64]",
    "tests/benchmarks/test_training_step.py::test_training_step[mlp,double=false]",
]


# --------------------------------------------------------------------------- synthetic reports


def entry(fullname: str, seconds: float, rounds: int = 100, calibration: bool = False, **stats) -> dict:
    extra = {CALIBRATION_KEY: CALIBRATION_VERSION} if calibration else {}
    values = {"min": seconds, "median": seconds * 1.1, "mean": seconds * 1.2, "rounds": rounds, **stats}
    return {"name": fullname.split("::")[-1], "fullname": fullname, "extra_info": extra, "stats": values}


def report(path: Path, entries: list[dict], node: str = "runner-a") -> Path:
    machine = {"node": node, "cpu": {"brand_raw": f"CPU of {node}"}}
    path.write_text(json.dumps({"machine_info": machine, "benchmarks": entries}))
    return path


def suite(tmp_path: Path, name: str, scale: float = 1.0, slower: dict | None = None, node: str = "a") -> Path:
    """A report of a calibration and three benchmarks, every time × ``scale``, some × ``slower[name]``."""
    slower = slower or {}
    times = {"t.py::test_act": 50e-6, "t.py::test_learn": 800e-6, "t.py::test_add": 1e-6}
    entries = [entry("t.py::test_calibration", 400e-6 * scale, calibration=True)]
    entries += [entry(k, v * scale * slower.get(k, 1.0)) for k, v in times.items()]
    return report(tmp_path / name, entries, node)


def test_a_uniformly_slower_machine_is_not_a_regression(tmp_path):
    base = suite(tmp_path, "base.json")
    new = suite(tmp_path, "new.json", scale=1.6, node="slow-runner")
    comparison = bench_compare(base, new)
    assert not comparison.regressed
    assert comparison.machine_factor == pytest.approx(1.6)
    assert all(r == pytest.approx(1.0) for r in comparison.ratios().values())
    assert "1.60× slower" in comparison.render("table") and "slow-runner" in comparison.render("table")


def test_one_component_slower_than_the_calibration_is_flagged_even_on_a_faster_machine(tmp_path):
    base = suite(tmp_path, "base.json")
    new = suite(tmp_path, "new.json", scale=0.7, slower={"t.py::test_learn": 1.3})
    comparison = bench_compare(base, new, fail_above=0.15)
    assert comparison.failed == ["t.py::test_learn"]
    assert comparison.ratios()["t.py::test_learn"] == pytest.approx(1.3)
    row = comparison.table.set_index("benchmark").loc["t.py::test_learn"]
    assert row.raw_ratio == pytest.approx(0.91)  # faster in absolute terms: pytest-benchmark alone would pass it
    assert "REGRESSION: 1 of 4 benchmarks slower" in comparison.render("markdown")


def test_threshold_is_exclusive_and_faster_benchmarks_are_reported(tmp_path):
    base = suite(tmp_path, "base.json")
    new = suite(tmp_path, "new.json", slower={"t.py::test_act": 1.14, "t.py::test_add": 0.5})
    verdicts = dict(zip(*bench_compare(base, new, 0.15).table[["benchmark", "verdict"]].T.values))
    assert verdicts["t.py::test_act"] == "ok" and verdicts["t.py::test_add"] == "faster"
    assert bench_compare(base, new, 0.10).failed == ["t.py::test_act"]


def test_statistic_can_be_chosen(tmp_path):
    base = suite(tmp_path, "base.json")
    entries = json.loads(base.read_text())["benchmarks"]
    entries[1]["stats"]["median"] *= 2  # the median of test_act doubled, its min did not
    new = report(tmp_path / "new.json", entries)
    assert not bench_compare(base, new).regressed
    assert bench_compare(base, new, statistic="median").failed == ["t.py::test_act"]


def test_benchmarks_on_one_side_are_reported_not_failed(tmp_path):
    base = suite(tmp_path, "base.json")
    entries = json.loads(base.read_text())["benchmarks"]
    entries = [e for e in entries if e["fullname"] != "t.py::test_add"] + [entry("t.py::test_new", 1e-3)]
    comparison = bench_compare(base, report(tmp_path / "new.json", entries))
    verdicts = dict(zip(comparison.table.benchmark, comparison.table.verdict))
    assert verdicts["t.py::test_add"] == "only in base" and verdicts["t.py::test_new"] == "only in new"
    assert not comparison.regressed
    assert "2 benchmarks are on one side only" in comparison.render("markdown")


def test_benchmarks_with_too_few_rounds_are_reported_not_judged(tmp_path):
    base = suite(tmp_path, "base.json")
    entries = json.loads(base.read_text())["benchmarks"]
    entries[2]["stats"].update(rounds=1, min=entries[2]["stats"]["min"] * 3)
    comparison = bench_compare(base, report(tmp_path / "new.json", entries))
    assert not comparison.regressed
    assert "too few rounds" in set(comparison.table.verdict)
    assert bench_compare(base, report(tmp_path / "new.json", entries), min_rounds=1).regressed


def test_a_report_without_calibration_is_a_clear_user_error(tmp_path):
    base = suite(tmp_path, "base.json")
    bare = report(tmp_path / "bare.json", [entry("t.py::test_act", 1e-5)])
    with pytest.raises(DqnbenchError, match=r"bare.json: no calibration benchmark.*dqnbench_calibration fixture"):
        bench_compare(base, bare)
    # naming a calibration explicitly works for suites that do not mark theirs
    named = report(tmp_path / "named.json", [entry("t.py::test_calibration", 4e-4), entry("t.py::test_act", 5e-5)])
    assert bench_compare(named, named, calibration="test_calibration").ratios()["t.py::test_act"] == 1.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not a JSON file"),
        ('{"hello": 1}', "not a pytest-benchmark report"),
        ('{"benchmarks": []}', "no timed benchmarks .*--benchmark-disable"),
    ],
)
def test_unreadable_reports_are_user_errors(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(DqnbenchError, match=message):
        bench_compare(bad, bad)
    with pytest.raises(DqnbenchError, match="no such benchmark report"):
        bench_compare(tmp_path / "missing.json", bad)


def test_two_calibrations_or_different_calibration_versions_are_user_errors(tmp_path):
    two = report(
        tmp_path / "two.json", [entry("a::cal", 1e-4, calibration=True), entry("b::cal", 1e-4, calibration=True)]
    )
    with pytest.raises(DqnbenchError, match="several calibration benchmarks"):
        bench_compare(two, two)
    old = report(tmp_path / "old.json", [entry("a::cal", 1e-4, calibration=True)])
    newer = [entry("a::cal", 1e-4, calibration=True)]
    newer[0]["extra_info"][CALIBRATION_KEY] = CALIBRATION_VERSION + 1
    with pytest.raises(DqnbenchError, match="calibration workloads differ"):
        bench_compare(old, report(tmp_path / "newer.json", newer))


def test_fail_above_accepts_percent_or_fraction():
    assert parse_fraction("15%") == pytest.approx(0.15)
    assert parse_fraction("0.15") == pytest.approx(0.15)
    assert parse_fraction("150%") == pytest.approx(1.5)
    for bad in ("15", "-5%", "fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_fraction(bad)


def test_command_exit_codes(tmp_path, capsys):
    base = suite(tmp_path, "base.json")
    slow = suite(tmp_path, "slow.json", slower={"t.py::test_act": 1.3})
    assert main([str(base), str(base)]) == 0
    assert main([str(base), str(slow), "--fail-above", "15%", "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert "| t.py::test_act |" in out and "SLOWER" in out
    assert main([str(base), str(slow), "--fail-above", "40%"]) == 0
    assert main([str(base), str(tmp_path / "missing.json")]) == 2
    assert "dqnbench: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(base), str(slow), "--fail-above", "15"])
    assert exc.value.code == 2


def test_table_keeps_parametrised_names_and_csv_has_the_numbers(tmp_path):
    entries = [entry("t.py::test_calibration", 4e-4, calibration=True), entry("t.py::test_act[network-mlp]", 5e-5)]
    path = report(tmp_path / "r.json", entries)
    comparison = bench_compare(path, path)
    assert "test_act[network-mlp]" in comparison.render("table", width=200)
    assert "ratio,change,verdict" in comparison.render("csv").splitlines()[0]


def test_the_calibration_workload_computes_autograds_gradients():
    """The written-out backward pass (calibration v2) is the real gradient, not a stand-in of similar cost."""
    torch = pytest.importorskip("torch")
    workload = CalibrationWorkload()
    x, y = workload.gather()
    loss, grads = workload.gradients(x, y)
    weights = [w.clone().requires_grad_() for w in workload.weights]
    w1, b1, w2, b2, w3, b3 = weights
    q = torch.relu(torch.relu(x @ w1 + b1) @ w2 + b2) @ w3 + b3
    expected = ((q.max(dim=1).values - y) ** 2).mean()
    assert loss == pytest.approx(float(expected.detach()))
    for mine, theirs in zip(grads, torch.autograd.grad(expected, weights)):
        torch.testing.assert_close(mine, theirs)
    parts = workload.part_minimums(seconds=0.02)
    assert set(parts) == {"gather", "forward", "backward", "update"} and all(0 < t < 0.02 for t in parts.values())


def with_parts(path: Path, parts: dict[str, float]) -> Path:
    data = json.loads(path.read_text())
    data["benchmarks"][0]["extra_info"][CALIBRATION_PARTS_KEY] = parts
    path.write_text(json.dumps(data))
    return path


def test_the_min_statistic_divides_by_the_sum_of_the_calibration_parts_mins(tmp_path):
    base = with_parts(suite(tmp_path, "base.json"), {"gather": 100e-6, "update": 100e-6})
    # the whole calibration call's min says 1.3x slower; its parts say the machine ran as fast as before
    new = with_parts(suite(tmp_path, "new.json", scale=1.3), {"gather": 100e-6, "update": 100e-6})
    comparison = bench_compare(base, new)
    assert comparison.machine_factor == pytest.approx(1.0)
    assert comparison.failed == ["t.py::test_act", "t.py::test_learn", "t.py::test_add"]
    # other statistics have no per-part figure: the whole call's median is used
    assert bench_compare(base, new, statistic="median").machine_factor == pytest.approx(1.3)
    bad = with_parts(suite(tmp_path, "bad.json"), {"gather": "fast"})
    with pytest.raises(DqnbenchError, match="parts_min_s.*non-numbers"):
        bench_compare(base, bad)


def test_a_folder_of_sessions_is_judged_by_its_best(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    suite(base, "1.json")
    # the second baseline session ran test_learn in a slow stretch, the third its calibration
    with_parts(suite(base, "2.json", slower={"t.py::test_learn": 1.4}), {"all": 400e-6})
    with_parts(suite(base, "3.json", scale=1.2), {"all": 480e-6})
    new = suite(tmp_path, "new.json", slower={"t.py::test_learn": 1.1})
    comparison = bench_compare(base, new)
    assert not comparison.regressed
    assert comparison.ratios()["t.py::test_learn"] == pytest.approx(1.1)
    assert "best of 3 sessions" in comparison.render("markdown")
    # one slow session alone would have failed it
    assert bench_compare(base / "2.json", new).ratios()["t.py::test_learn"] == pytest.approx(1.1 / 1.4)
    assert main([str(base), str(new)]) == 0


def test_folders_without_reports_or_with_mixed_calibrations_are_user_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DqnbenchError, match="no pytest-benchmark reports"):
        bench_compare(empty, suite(tmp_path, "new.json"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    suite(mixed, "1.json")
    old = json.loads(suite(mixed, "2.json").read_text())
    old["benchmarks"][0]["extra_info"][CALIBRATION_KEY] = CALIBRATION_VERSION - 1
    (mixed / "2.json").write_text(json.dumps(old))
    with pytest.raises(DqnbenchError, match="different calibration workloads"):
        bench_compare(mixed, suite(tmp_path, "new.json"))


# --------------------------------------------------------------------------- real sessions


def run_session(out: Path, tests: list[str], env: dict[str, str] | None = None) -> Path:
    """A pytest-benchmark session in a subprocess writing ``out``; the planted slowdown only if ``env`` says so."""
    environ = {k: v for k, v in os.environ.items() if k != "DQNBENCH_PLANTED_SLOWDOWN"} | (env or {})
    # without Hypothesis's pytest plugin (no benchmark uses it): importing it is a second or two of each session
    cmd = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
           "--benchmark-enable", "--benchmark-max-time=0.5", "--benchmark-min-rounds=20",
           f"--benchmark-json={out}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=environ, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


#: sessions a side. The CI recipe runs two; here three, for the test runs inside a 25-minute suite on a VM whose
#: pace drifts over seconds: with two, ``act[network-mlp]`` read 1.35 under load in one full-suite run in two
#: (1.02 in runs of this test alone), when offline pairs had it at most 1.13 (best of three: at most 1.10).
SESSIONS = 3


def run_sessions(folder: Path, tests: list[str], env: dict[str, str] | None = None, count: int = SESSIONS) -> Path:
    """``count`` sessions into ``folder``: what ``bench-compare`` judges by their best, as the CI recipe runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        run_session(folder / f"{n}.json", tests, env)
    return folder


@pytest.fixture(scope="module")
def baseline_session(tmp_path_factory) -> Path:
    return run_sessions(tmp_path_factory.mktemp("bench") / "base", [CALIBRATION, PLANTED, *SUITE])


def test_planted_30_percent_slowdown_of_one_component_is_flagged(baseline_session, tmp_path):
    slowed = {"DQNBENCH_PLANTED_SLOWDOWN": "0.3"}
    new = run_sessions(tmp_path / "planted", [CALIBRATION, PLANTED], slowed)
    comparison = bench_compare(baseline_session, new, fail_above=0.15)
    ratio = comparison.ratios()["planted.py::test_planted_network_forward"]
    print(f"\nplanted 30% slowdown: calibrated ratio {ratio:.3f}\n" + comparison.render("markdown"))
    assert comparison.failed == ["planted.py::test_planted_network_forward"]
    assert ratio < 1.6  # 1.3 planted; each session's calibration moves it by a few percent


BURNER = """
import numpy as np
a = np.random.default_rng(0).random((256, 256))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def baseline_or_fresh(request, baseline_session: Path, tmp_path: Path) -> Path:
    """The module's baseline sessions; on a rerun, fresh ones. A baseline measured in a slow stretch of a shared VM
    flags unchanged code as surely as a slow new session: once, the three baseline sessions' calibration took 444 µs
    against the loaded sessions' 295 µs, and the rerun compared against that same baseline again."""
    if getattr(request.node, "execution_count", 1) > 1:  # pytest-rerunfailures counts the tries
        return run_sessions(tmp_path / "base", [CALIBRATION, PLANTED, *SUITE])
    return baseline_session


@pytest.mark.slow
@pytest.mark.flaky(reruns=1)  # the loaded sessions again, against a fresh baseline (baseline_or_fresh): see SESSIONS
def test_unchanged_code_under_machine_load_is_not_flagged(baseline_or_fresh, tmp_path):
    """Busy loops on every core (NumPy matrix products, one thread each) during both loaded sessions."""
    baseline_session = baseline_or_fresh
    env = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    burners = [
        subprocess.Popen([sys.executable, "-c", BURNER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        time.sleep(0.5)
        start = time.perf_counter()
        new = run_sessions(tmp_path / "loaded", [CALIBRATION, PLANTED, *SUITE])
        elapsed = time.perf_counter() - start
        burned = sum(cpu_seconds(p.pid) for p in burners)
    finally:
        for p in burners:
            p.kill()
            p.wait()
    comparison = bench_compare(baseline_session, new, fail_above=0.15)
    median = bench_compare(baseline_session, new, fail_above=0.15, statistic="median")
    single = bench_compare(baseline_session / "1.json", new / "1.json", fail_above=0.15)

    def show(c: BenchComparison) -> str:
        return ", ".join(f"{name.split('::')[-1]} {r:.3f}" for name, r in c.ratios().items())

    print(f"\nunder load ({len(burners)} burners, {burned:.0f} CPU s in {elapsed:.0f} s): "
          f"best-of-{SESSIONS} min ratios "
          f"{show(comparison)}; first sessions alone {show(single)}; median ratios {show(median)}; "
          f"machine factor {comparison.machine_factor:.3f}")  # fmt: skip
    print(comparison.render("markdown"))
    if burned == burned:  # /proc is there: the burners really ran (sharing the cores with whatever else runs)
        assert burned > 0.1 * elapsed * len(burners)
    assert not comparison.regressed, comparison.render("markdown")
