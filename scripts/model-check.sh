#!/usr/bin/env bash
# The model-checking lanes, each its own build in its own target directory:
#
# - loom: the shared health table and failure queue of racelab-local (R-003-02, R-003-03,
#   R-001-04, R-001-02). Buggy and DocFix must be caught; Correct is explored exhaustively
#   under the preemption bound each model states. No LOOM_MAX_DURATION: a model that runs
#   out of time must not pass silently, so the bound, not a clock, limits it.
# - madsim: the proxy's async code under madsim's seeded task order (R-001-01, R-001-02,
#   R-003-03). Buggy and DocFix caught within 200 seeds, Correct over 10,000 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
unset LOOM_MAX_DURATION LOOM_MAX_PERMUTATIONS LOOM_CHECKPOINT_FILE

echo "== loom lane (racelab-models, --cfg loom, release)"
RUSTFLAGS="--cfg loom" cargo test -p racelab-models --release --target-dir target/loom \
    -- --nocapture --test-threads 1

echo "== madsim lane (madsim-lane, --cfg madsim, release)"
RUSTFLAGS="--cfg madsim" cargo test --release --manifest-path madsim-lane/Cargo.toml \
    --target-dir target/madsim -- --nocapture
