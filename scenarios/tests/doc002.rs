//! Document 002 end to end: every scripted timeline does what the catalog says for every
//! variant; the random scheduler finds the Buggy (and DocFix) violations within the asserted
//! seed budget; the Correct variant holds for 10,000 seeds with faults on; and every run is
//! reproducible from its seed.

use racelab_scenarios::{Variant, catalog, render_timeline, run_script, run_seed, seeds_to_detect};

#[macro_use]
mod common;

use common::race;

race_tests! {
    r_002_01 => "R-002-01", ["I-MX", "I-WO"],
    r_002_02 => "R-002-02", ["I-MX", "I-WO"],
    r_002_03 => "R-002-03", ["I-WO"],
    r_002_04 => "R-002-04", ["I-WO"],
    r_002_05 => "R-002-05", ["I-WO"],
    r_002_06 => "R-002-06", ["no-false-alarm", "I-WO"],
}

#[test]
fn every_race_and_variant_replays_byte_for_byte() {
    for race in catalog() {
        for variant in Variant::ALL {
            for seed in [0, 1, 42, 4_242] {
                let a = run_seed(&race, variant, seed);
                let b = run_seed(&race, variant, seed);
                assert_eq!(
                    a.run.trace_hash(),
                    b.run.trace_hash(),
                    "{} {} seed {seed}",
                    race.id,
                    variant.as_str()
                );
                assert_eq!(render_timeline(&a), render_timeline(&b));
                assert_eq!(a.run.decisions, b.run.decisions);
            }
            for script in (race.scripts)() {
                let a = run_script(&race, &script, variant);
                let b = run_script(&race, &script, variant);
                assert_eq!(
                    a.run.trace_hash(),
                    b.run.trace_hash(),
                    "{} {}",
                    race.id,
                    script.name
                );
            }
        }
    }
}

#[test]
fn different_seeds_give_different_traces() {
    let race = race("R-002-01");
    let hashes: std::collections::BTreeSet<u64> = (0..50)
        .map(|s| run_seed(&race, Variant::Buggy, s).run.trace_hash())
        .collect();
    assert!(
        hashes.len() > 45,
        "the seed barely changes the run: {} distinct traces of 50",
        hashes.len()
    );
}

#[test]
fn without_faults_every_worker_variant_keeps_its_invariants() {
    // The workers' races need a fault (pause, partition, delay, lost reply, crash, failover).
    // A failure here would be an artefact of the model, not the race. R-002-06's checker race
    // needs only an unlucky interleaving, so it is not part of this check.
    for id in ["R-002-01", "R-002-02", "R-002-03", "R-002-04", "R-002-05"] {
        let race = race(id);
        for variant in Variant::ALL {
            for seed in 0..300 {
                let outcome = racelab_scenarios::run_pinned(&race, variant, seed, &[]);
                assert!(
                    !outcome.violated(),
                    "{id} {} seed {seed} fails without any fault:\n{}\n{}",
                    variant.as_str(),
                    render_timeline(&outcome).join("\n"),
                    outcome.verdict.explanation()
                );
            }
        }
    }
}

#[test]
fn pinning_a_random_runs_faults_reproduces_its_history() {
    for race in catalog() {
        for seed in 0..20 {
            let original = run_seed(&race, Variant::Buggy, seed);
            let pinned =
                racelab_scenarios::run_pinned(&race, Variant::Buggy, seed, &original.run.injected);
            assert_eq!(
                pinned.run.history, original.run.history,
                "{} seed {seed}",
                race.id
            );
        }
    }
}

#[test]
fn shrinking_keeps_the_violation_with_fewer_faults() {
    for race in catalog() {
        let seed =
            seeds_to_detect(&race, Variant::Buggy, 0, race.seed_budget).expect("a failing seed");
        let shrunk = racelab_scenarios::shrink(&race, Variant::Buggy, seed).expect("it fails");
        assert!(shrunk.outcome.violated());
        assert!(shrunk.steps.len() <= shrunk.original_faults, "{}", race.id);
        assert!(shrunk.attempts <= racelab_scenarios::SHRINK_ATTEMPTS_MAX);
        let original = racelab_scenarios::run_seed(&race, Variant::Buggy, seed);
        let (before, after) = (
            original.run.history.timeline().len(),
            shrunk.outcome.run.history.timeline().len(),
        );
        if race.id == "R-002-01" {
            // The document-sized story: a shrink deletes scans and workers the sweep's
            // generator would never draw so few of, and the story ends at the violation.
            let story = racelab_scenarios::render_story(&shrunk.outcome).0.len();
            assert!(
                story <= 12,
                "{} seed {seed}: {before} steps became a story of {story}",
                race.id
            );
        }
        println!(
            "{} seed {seed}: {before} steps shrunk to {after} ({} workload draws shrunk to {})",
            race.id, shrunk.workload_draws, shrunk.workload_draws_now
        );
    }
}
