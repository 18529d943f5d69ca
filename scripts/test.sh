#!/usr/bin/env bash
# Every test of racelab: the workspace's tests (unit, catalog, determinism, tidy, CLI,
# real-server adapters, regression gate), then the model-checking lanes (loom, madsim),
# which need their own builds.
set -euo pipefail
cd "$(dirname "$0")/.."
# The conformance tests' generated sequences are reproducible: the same seed every run, so a
# red run is a change, not luck. Explore new sequences with PROPTEST_RNG_SEED=<n>.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-1}"
cargo test --workspace
if [ -x scripts/model-check.sh ]; then
    scripts/model-check.sh
fi
