//! The madsim lane's races: each `Buggy` and `DocFix` variant must break its invariant
//! within [`SEEDS_TO_FIND_MAX`] seeds; each `Correct` variant must hold over [`SEEDS_CORRECT`]
//! seeds, with the race's window opened in some of them. A failure prints the seed, its
//! event log and the command that replays it (`RACELAB_MADSIM_SEED=<seed>` runs that seed
//! alone). Only built with `--cfg madsim`.

#![cfg(madsim)]

use std::time::Instant;

use racelab_core::Variant;
use racelab_madsim_lane::{Race, SimRun, refused, replay_command, run};

/// The seed budget within which every `Buggy` and `DocFix` variant must be caught.
const SEEDS_TO_FIND_MAX: u64 = 200;
/// The seeds every `Correct` variant must pass.
const SEEDS_CORRECT: u64 = 10_000;

/// The seeds to play: `RACELAB_MADSIM_SEED` alone, or `0..count`.
fn seeds(count: u64) -> Vec<u64> {
    match std::env::var("RACELAB_MADSIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("RACELAB_MADSIM_SEED is a u64")],
        Err(_) => (0..count).collect(),
    }
}

fn print_run(run: &SimRun) {
    for (i, event) in run.events.iter().enumerate() {
        println!("    {i:>3} {event:?}");
    }
}

/// Finds the first seed whose run of `variant` breaks `race`'s invariant.
fn find(race: Race, variant: Variant, test: &str) {
    let start = Instant::now();
    let budget = seeds(SEEDS_TO_FIND_MAX);
    let found = budget
        .iter()
        .map(|seed| run(race, variant, *seed))
        .find(|run| run.violation.is_some());
    let Some(run) = found else {
        panic!(
            "{} {variant:?}: no violation in {} seeds; the model is wrong, not the seeds",
            race.id(),
            budget.len()
        );
    };
    let violation = run.violation.as_ref().expect("found");
    println!(
        "madsim {} {variant:?}: caught at seed {} ({} of at most {SEEDS_TO_FIND_MAX} seeds, {:.2?}): {violation}",
        race.id(),
        run.seed,
        budget
            .iter()
            .position(|s| *s == run.seed)
            .map_or(0, |p| p + 1),
        start.elapsed()
    );
    println!("  replay: {}", replay_command(test, run.seed));
    if budget.len() == 1 {
        print_run(&run);
    }
}

/// Plays `Correct` over the seeds: no violation, and the window opened in some seeds.
fn hold(race: Race, test: &str) {
    let start = Instant::now();
    let budget = seeds(SEEDS_CORRECT);
    let (mut windows, mut refusals) = (0, 0);
    for seed in &budget {
        let run = run(race, Variant::Correct, *seed);
        if let Some(violation) = &run.violation {
            print_run(&run);
            panic!(
                "{} Correct broke at seed {seed}: {violation}\n  replay: {}",
                race.id(),
                replay_command(test, *seed)
            );
        }
        windows += u64::from(run.window);
        refusals += refused(&run);
    }
    println!(
        "madsim {} Correct: {} seeds hold ({:.2?}); the race's window opened in {windows} of them; {refusals} stale observations or recoveries refused",
        race.id(),
        budget.len(),
        start.elapsed()
    );
    if budget.len() > 1 {
        assert!(
            windows > 0,
            "{}: the Correct runs never met the race",
            race.id()
        );
    }
}

#[test]
fn r001_01_stale_candidate_list_is_found_in_buggy_and_docfix() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        find(
            Race::StaleCandidateList,
            variant,
            "r001_01_stale_candidate_list_is_found",
        );
    }
}

#[test]
fn r001_01_correct_reselects_before_every_attempt() {
    hold(Race::StaleCandidateList, "r001_01_correct");
}

#[test]
fn r001_02_stale_success_is_found_in_buggy_and_docfix() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        find(
            Race::StaleSuccess,
            variant,
            "r001_02_stale_success_is_found",
        );
    }
}

#[test]
fn r001_02_correct_refuses_stale_successes() {
    hold(Race::StaleSuccess, "r001_02_correct");
}

#[test]
fn r003_03_stale_recovery_is_found_in_buggy_and_docfix() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        find(
            Race::StaleRecovery,
            variant,
            "r003_03_stale_recovery_is_found",
        );
    }
}

#[test]
fn r003_03_correct_recovery_checks_the_epoch() {
    hold(Race::StaleRecovery, "r003_03_correct");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for race in Race::ALL {
        for variant in Variant::ALL {
            let (a, b) = (run(race, variant, 7), run(race, variant, 7));
            assert_eq!(a, b, "{} {variant:?}: seed 7 twice", race.id());
        }
    }
    // And the seed matters: some other seed gives another log.
    let base = run(Race::StaleSuccess, Variant::Correct, 7);
    assert!(
        (8..20).any(|seed| run(Race::StaleSuccess, Variant::Correct, seed).events != base.events)
    );
}
