#!/usr/bin/env bash
# Mutation testing of core's protocols and oracles with cargo-mutants (not run in CI: a
# mutant costs a rebuild and a test run, about two minutes on two cores).
#
# Usage (the sample of 100 took 95 minutes here with 2 jobs on 2 cores, the machine busy):
#   scripts/mutants.sh              # the seeded sample: 100 mutants, seed 1
#   MUTANTS_SEED=7 MUTANTS_COUNT=150 scripts/mutants.sh
#   scripts/mutants.sh --list       # print the sample's mutant names, run nothing
#   MUTANTS_JOBS=1 MUTANTS_OUT=/tmp/m scripts/mutants.sh
#
# What is mutated: core/src/workorder/, core/src/health/, core/src/lease.rs,
# core/src/effects.rs and core/src/oracle.rs (the protocols and their oracles).
#
# Which mutants: a seeded random sample, not cargo-mutants' `--shard k/n` (a shard is a slice
# or a round-robin of the source order, not a random draw). Every mutant name that
# `cargo mutants --list` prints for those files is ranked by sha256("<seed>:<name>") and the
# first MUTANTS_COUNT are passed to cargo mutants as anchored `--re` patterns. The sample is a
# function of the seed and of the code (names carry line and column), so the same commit and
# seed always test the same mutants.
#
# Which tests kill them: core's unit tests and its tests/oracles.rs, tests/health_oracles.rs,
# tests/workorder.rs and tests/probe_task.rs; scenarios' unit tests and the catalog's race tests (doc001_003,
# doc002: scripted timelines, random discovery within the budget, Correct over 10,000 seeds
# with its sometimes-properties) and tests/exhaustive.rs. Left out as slow or irrelevant to
# core's logic: the gate, the net world, the CLI and report tests. cargo test stops at the
# first failing test binary, so most caught mutants never reach doc002 (about a minute).
#
# Mutants that cannot be killed because they do not change behaviour are listed, each with
# the reason, in scripts/mutants-equivalent.md; the score excludes them.
#
# cargo-mutants is never installed silently: if it is missing the script says how to install
# it and exits 2. CARGO_TARGET_DIR is unset so that each cargo-mutants job builds in its own
# scratch directory instead of queueing on (and invalidating) a shared target directory.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "cargo-mutants is not installed; install it with:" >&2
    echo "    cargo install cargo-mutants --locked" >&2
    exit 2
fi

seed=${MUTANTS_SEED:-1}
count=${MUTANTS_COUNT:-100}
jobs=${MUTANTS_JOBS:-2}
out=${MUTANTS_OUT:-${TMPDIR:-/tmp}/racelab-mutants}
files=(
    -p racelab-core
    -f 'core/src/workorder/*.rs'
    -f 'core/src/health/*.rs'
    -f core/src/lease.rs
    -f core/src/effects.rs
    -f core/src/oracle.rs
)

# The sample: every mutant name, ranked by a seeded hash, the first `count` of them.
sample=$(
    cargo mutants --list "${files[@]}" |
        while IFS= read -r name; do
            printf '%s %s\n' "$(printf '%s:%s' "$seed" "$name" | sha256sum | cut -c1-16)" "$name"
        done |
        sort | sed -n "1,${count}p" | cut -d" " -f2-
)
if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "$sample"
    exit 0
fi

# Each name as an anchored regex (cargo-mutants matches `--re` against the listed names).
patterns=()
while IFS= read -r name; do
    escaped=$(printf '%s' "$name" | sed 's/[][\\.*+?(){}|^$]/\\&/g')
    patterns+=(--re "^${escaped}\$")
done <<<"$sample"

# The test targets, given to the build (`cargo test --no-run`) as well as to the test run so
# that no other test binary is built.
targets=(--lib --test=oracles --test=health_oracles --test=workorder --test=probe_task
    --test=doc001_003 --test=doc002 --test=exhaustive)
tests=(--test-package racelab-core,racelab-scenarios)
for t in "${targets[@]}"; do
    tests+=("--cargo-arg=$t")
done

# cargo-mutants' own baseline tests only the mutated package (racelab-core), where the catalog
# test targets do not exist, so it is skipped (`--baseline skip`) and the baseline is run here:
# the selected tests must pass on the unmutated tree, or every mutant would look caught.
echo "mutants.sh: baseline: the selected tests on the unmutated tree"
if ! cargo test -p racelab-core -p racelab-scenarios "${targets[@]}" >/dev/null 2>&1; then
    echo "the selected tests fail without any mutation: fix them first" >&2
    echo "    cargo test -p racelab-core -p racelab-scenarios ${targets[*]}" >&2
    exit 1
fi

echo "mutants.sh: seed $seed, $(printf '%s\n' "$sample" | grep -c .) mutants, $jobs jobs, output in $out/mutants.out"
start=$(date +%s)
status=0
(
    unset CARGO_TARGET_DIR
    exec cargo mutants "${files[@]}" "${patterns[@]}" "${tests[@]}" \
        --baseline skip --jobs "$jobs" --timeout 300 --build-timeout 1200 \
        --output "$out" --no-shuffle
) || status=$?
end=$(date +%s)
echo "mutants.sh: seed $seed took $(((end - start) / 60)) min $(((end - start) % 60)) s"
for outcome in caught missed timeout unviable; do
    f="$out/mutants.out/$outcome.txt"
    n=0
    [ -f "$f" ] && n=$(grep -c . "$f" || true)
    echo "  $outcome: $n"
done
echo "missed mutants not in scripts/mutants-equivalent.md:"
if [ -f "$out/mutants.out/missed.txt" ]; then
    while IFS= read -r m; do
        grep -qF -- "$(printf '%s' "$m" | sed 's/^[^:]*:[0-9]*:[0-9]*: //')" \
            scripts/mutants-equivalent.md || echo "  $m"
    done <"$out/mutants.out/missed.txt"
fi
# cargo-mutants exits 2 when a mutant was missed, 3 on timeouts: passed on as is.
exit "$status"
