#!/usr/bin/env bash
# The CI regression recipe of docs/ci/github-actions.yml, runnable locally (see docs/benchmarks.md).
#
#   scripts/regress.sh [all|baseline|candidate] [WORK_DIR]      (WORK_DIR defaults to .regress/)
#
#   baseline   the benchmark suite, twice → WORK/base/bench/1.json and 2.json (calibration included), and
#              the regression grid examples/regression.toml → WORK/base/learning/regression/
#   candidate  the same into WORK/new/, then judges it against WORK/base/ with
#                dqnbench bench-compare  (speed, each benchmark relative to its session's calibration,
#                                         the best of the sessions on each side)
#                dqnbench compare        (learning: IQM final return per cell, bootstrap CIs)
#              Both always run; exit 1 if either found a regression, 2 on a user error.
#              Markdown reports land in WORK/bench-compare.md and WORK/compare.md.
#   all        (default) baseline, then candidate, on the current checkout: unchanged code must pass.
#
# To judge a branch against main locally:
#   git switch main && scripts/regress.sh baseline && git switch my-branch && scripts/regress.sh candidate
#
# Environment:
#   DQNBENCH_REGRESS_QUICK=1  a tiny grid, a few benchmark rounds of the calibration, training-step and
#                             framework-overhead benchmarks: proves the recipe runs end to end (about a
#                             minute); the speed threshold is then 50 %, as so few rounds cannot judge 15 %
#   DQNBENCH_REGRESS_BENCH    the benchmark files to run, space-separated (default: tests/benchmarks;
#                             the calibration benchmark must be among them)
#   DQNBENCH_FAIL_ABOVE       bench-compare's threshold (default 15%)
#   DQNBENCH_BENCH_SESSIONS   benchmark sessions per side (default 2; quick mode 1): on a shared runner one
#                             session can run in a slow stretch, the best of two is what the code costs
#   PYTHON                    the interpreter that has dqnbench installed (default: python)
#   DQNBENCH_BENCH_COMPARE    the speed comparison command (default: "$PYTHON -m dqnbench bench-compare")
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-all}"
WORK="${2:-.regress}"
PYTHON="${PYTHON:-python}"
QUICK="${DQNBENCH_REGRESS_QUICK:-0}"
BENCH_COMPARE="${DQNBENCH_BENCH_COMPARE:-$PYTHON -m dqnbench bench-compare}"

case "$MODE" in
    all | baseline | candidate) ;;
    *) echo "usage: scripts/regress.sh [all|baseline|candidate] [WORK_DIR]" >&2; exit 2 ;;
esac

BENCH="${DQNBENCH_REGRESS_BENCH:-tests/benchmarks}"
BENCH_ARGS=(--benchmark-enable --benchmark-only -q -p no:cacheprovider)
RUN_ARGS=(--quiet --no-plots)
COMPARE_ARGS=(--format markdown)
GRID=examples/regression.toml
if [[ "$QUICK" == 1 ]]; then
    SESSIONS="${DQNBENCH_BENCH_SESSIONS:-1}"
    FAIL_ABOVE="${DQNBENCH_FAIL_ABOVE:-50%}"
    BENCH="${DQNBENCH_REGRESS_BENCH:-tests/benchmarks/test_calibration.py tests/benchmarks/test_training_step.py
        tests/benchmarks/test_overhead.py}"
    BENCH_ARGS+=(--benchmark-min-rounds=5 --benchmark-max-time=0.05)
    # judge only benchmarks with 20+ rounds: the ~10 ms train() rounds get 5, too few for a robust min
    COMPARE_ARGS+=(--min-rounds 20)
    RUN_ARGS+=(--executor serial)
    mkdir -p "$WORK"
    GRID="$WORK/quick-regression.toml"
    cat > "$GRID" <<'EOF'
[experiment]
name = "regression"
env = "CartPole-v1"
total_steps = 600
seeds = 2
eval_every = 0
eval_episodes = 3

[agent]
learning_starts = 200
batch_size = 32
target_update = 100
EOF
else
    SESSIONS="${DQNBENCH_BENCH_SESSIONS:-2}"
    FAIL_ABOVE="${DQNBENCH_FAIL_ABOVE:-15%}"
fi

# One side of the recipe: the benchmark JSON reports and the learning results of this checkout.
measure() {
    local side="$WORK/$1" session
    rm -rf "$side" && mkdir -p "$side/bench"
    for ((session = 1; session <= SESSIONS; session++)); do
        echo "== $1: benchmark suite, session $session of $SESSIONS → $side/bench/$session.json"
        # shellcheck disable=SC2086  # BENCH is a list of paths
        "$PYTHON" -m pytest $BENCH "${BENCH_ARGS[@]}" --benchmark-json="$side/bench/$session.json"
    done
    echo "== $1: regression grid $GRID → $side/learning/"
    "$PYTHON" -m dqnbench run --grid "$GRID" --out "$side/learning" "${RUN_ARGS[@]}"
}

# Judge WORK/new against WORK/base: speed by the calibrated comparison, learning by dqnbench compare.
# Absolute steps/s differ between runners, so compare's own speed check is loosened to a halving
# (--speed-tolerance 0.5); bench-compare is the speed judge.
has() {
    [[ -f "$WORK/$1/bench/1.json" && -d "$WORK/$1/learning/regression" ]]
}

judge() {
    local speed=0 learning=0
    echo "== speed: bench-compare --fail-above $FAIL_ABOVE"
    $BENCH_COMPARE "$WORK/base/bench" "$WORK/new/bench" --fail-above "$FAIL_ABOVE" "${COMPARE_ARGS[@]}" \
        | tee "$WORK/bench-compare.md" || speed=$?
    echo "== learning: dqnbench compare"
    "$PYTHON" -m dqnbench compare "$WORK/base/learning/regression" "$WORK/new/learning/regression" \
        --speed-tolerance 0.5 --format markdown | tee "$WORK/compare.md" || learning=$?
    echo "regress: speed exit $speed, learning exit $learning"
    if ((speed == 2 || learning == 2)); then return 2; fi
    if ((speed != 0 || learning != 0)); then return 1; fi
    return 0
}

case "$MODE" in
    baseline) measure base ;;
    candidate)
        if ! has base; then
            echo "regress: no base measurements in $WORK/base (run first: scripts/regress.sh baseline $WORK)" >&2
            exit 2
        fi
        measure new && judge ;;
    all) measure base && measure new && judge ;;
esac
