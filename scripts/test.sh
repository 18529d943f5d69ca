#!/usr/bin/env bash
# Every test of racelab: the workspace's tests (unit, catalog, determinism, tidy, CLI,
# real-server adapters, regression gate), then the model-checking lanes (loom, madsim),
# which need their own builds. The last line, pass or fail, counts the real-server tests
# (adapters/tests, scenarios/tests/real.rs) that ran and those skipped because a server was unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."
# The conformance tests' generated sequences are reproducible: the same seed every run, so a
# red run is a change, not luck. Explore new sequences with PROPTEST_RNG_SEED=<n>.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-1}"

# Each real-server test appends "racelab-real-server: ran <test>" or
# "racelab-real-server: skipped <test>: <why>" here (adapters/tests/common/mod.rs).
RACELAB_REAL_SERVER_LOG=$(mktemp)
export RACELAB_REAL_SERVER_LOG
real_server_summary() {
    local ran skipped
    ran=$(grep -c '^racelab-real-server: ran ' "$RACELAB_REAL_SERVER_LOG" || true)
    skipped=$(grep -c '^racelab-real-server: skipped ' "$RACELAB_REAL_SERVER_LOG" || true)
    rm -f "$RACELAB_REAL_SERVER_LOG"
    echo "real-server tests: ${ran:-0} ran, ${skipped:-0} skipped (unreachable server)"
}
trap real_server_summary EXIT

cargo test --workspace
if [ -x scripts/model-check.sh ]; then
    scripts/model-check.sh
fi
