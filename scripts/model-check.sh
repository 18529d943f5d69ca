#!/usr/bin/env bash
# The model-checking lanes, each its own build in its own target directory:
#
# - loom: the shared health table, failure queue and endpoint router of racelab-local
#   (R-003-02, R-003-03, R-001-04, R-001-02, R-000-15). Buggy and DocFix must be caught; Correct is explored exhaustively
#   under the preemption bound each model states. No LOOM_MAX_DURATION: a model that runs
#   out of time must not pass silently, so the bound, not a clock, limits it.
# - madsim: the proxy's async code under madsim's seeded task order (R-001-01, R-001-02,
#   R-003-03). Buggy and DocFix caught within 200 seeds, Correct over 10,000 seeds.
#
# A lane that runs no test fails: its tests are compiled only under its cfg, so a cfg typo
# turns every one of them into nothing and cargo still reports "ok. 0 passed".
# `scripts/model-check.sh --self-test` checks that rule on made-up logs, without building.
set -euo pipefail
cd "$(dirname "$0")/.."
unset LOOM_MAX_DURATION LOOM_MAX_PERMUTATIONS LOOM_CHECKPOINT_FILE

# The tests passed in a cargo test log: the sum of "test result: ok. N passed" over every
# test binary (and doc-test run) in it.
passed_in() {
    { grep -oE 'test result: ok\. [0-9]+ passed' "$1" || true; } |
        awk '{ n += $4 } END { print n + 0 }'
}

# Prints "<lane> lane: N tests passed", or fails naming the lane when N is 0.
require_tests() {
    local lane=$1 log=$2 n
    n=$(passed_in "$log")
    if [ "$n" -eq 0 ]; then
        echo "FAILED: the $lane lane ran no test (0 passed): check its cfg and test filters" >&2
        return 1
    fi
    echo "$lane lane: $n tests passed"
}

self_test() {
    local log
    log=$(mktemp)
    trap 'rm -f "$log"' RETURN
    printf '%s\n' \
        'running 3 tests' \
        'test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s' \
        'test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s' \
        'some output without a newlinetest result: ok. 2 passed; 0 failed; 0 ignored' >"$log"
    [ "$(require_tests fake "$log")" = "fake lane: 5 tests passed" ] ||
        { echo "self-test: 5 passed tests were not counted" >&2; return 1; }
    printf '%s\n' \
        'test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s' \
        'test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s' >"$log"
    ! require_tests fake "$log" 2>/dev/null ||
        { echo "self-test: a lane with 0 tests passed" >&2; return 1; }
    : >"$log"
    ! require_tests fake "$log" 2>/dev/null ||
        { echo "self-test: a lane with no test result passed" >&2; return 1; }
    echo "model-check self-test: ok"
}

if [ "${1:-}" = "--self-test" ]; then
    self_test
    exit
fi

loom_log=$(mktemp)
madsim_log=$(mktemp)
trap 'rm -f "$loom_log" "$madsim_log"' EXIT

echo "== loom lane (racelab-models, --cfg loom, release)"
RUSTFLAGS="--cfg loom" cargo test -p racelab-models --release --target-dir target/loom \
    -- --nocapture --test-threads 1 | tee "$loom_log"
require_tests loom "$loom_log"

echo "== madsim lane (madsim-lane, --cfg madsim, release)"
RUSTFLAGS="--cfg madsim" cargo test --release --manifest-path madsim-lane/Cargo.toml \
    --target-dir target/madsim -- --nocapture | tee "$madsim_log"
require_tests madsim "$madsim_log"
