#!/usr/bin/env bash
# The nightly sweep: one million seeds of every race and variant of the catalog (the Correct
# variants must hold on all of them), cut into N shards, this job running shard K.
#
#   scripts/nightly.sh K N [SEEDS]      # on each machine of the matrix, K = 1..N
#
# Each job writes shard-K-of-N.json (one `racelab run --json` line per race and variant) and
# exits non-zero only when its own part contradicts the catalog (a Correct failure, a failing
# script); whether a Buggy variant was caught is decided on the whole range, by the merge:
#
#   cargo run --release -p racelab-scenarios -- merge shard-*-of-N.json
#   (in a final job that downloads every shard's file)
#
# A GitHub Actions matrix, for example, runs it as
#   strategy: { matrix: { shard: [1, 2, ..., 16] } }
#   run: scripts/nightly.sh ${{ matrix.shard }} 16
# with the JSON files uploaded as artifacts for the merge job; nextest's --partition plays the
# same role for the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:?usage: scripts/nightly.sh K N [SEEDS]}
n=${2:?usage: scripts/nightly.sh K N [SEEDS]}
seeds=${3:-1000000}
cargo run --release -q -p racelab-scenarios -- \
    run --all --variant all --seeds "$seeds" --shard "$k/$n" --json > "shard-$k-of-$n.json"
