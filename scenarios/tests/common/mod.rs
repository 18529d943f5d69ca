//! The checks every catalog entry goes through: its scripted timelines, random discovery
//! within its seed budget, and its Correct variant over 10,000 seeds.

#![allow(dead_code, unused_macros)]

use std::process::{Command, Output};

use racelab_scenarios::{
    Expectation, Race, Sweep, Variant, catalog, render_timeline, replay_command,
    replay_script_command, run_script, run_seed, seeds_to_detect,
};

/// Runs the `racelab` binary.
pub(crate) fn racelab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_racelab"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the racelab binary runs")
}

/// Its standard output.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Its standard error.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The same profile with every fault switched off (latencies kept).
fn racelab_sim_profile_without_faults(race: &Race) -> racelab_sim::explore::FaultProfile {
    let profile = (race.profile)();
    racelab_sim::explore::FaultProfile {
        window: profile.window,
        latency: profile.latency,
        ..racelab_sim::explore::FaultProfile::quiet()
    }
}

pub(crate) fn race(id: &str) -> Race {
    catalog()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("{id} is in the catalog"))
}

/// The Correct variant must hold for this many seeds per race.
pub(crate) const CORRECT_SEEDS: u64 = 10_000;

pub(crate) fn check_scripts(id: &str, expected_broken: &[&str]) {
    let race = race(id);
    let scripts = (race.scripts)();
    assert!(!scripts.is_empty(), "{id} has no scripted timeline");
    for script in &scripts {
        for variant in Variant::ALL {
            let outcome = run_script(&race, script, variant);
            let expected = script.expect.get(variant);
            if !expected.matches(outcome.observed()) {
                panic!(
                    "{id} timeline {} ({}): the {} variant was expected to be {} but was {}\n{}\n{}\nreplay: {}",
                    script.name,
                    script.summary,
                    variant.as_str(),
                    expected.as_str(),
                    outcome.observed().as_str(),
                    render_timeline(&outcome).join("\n"),
                    outcome.verdict.explanation(),
                    replay_script_command(&race, script, variant),
                );
            }
            if outcome.violated() {
                check_broken(
                    id,
                    &outcome,
                    expected_broken,
                    &format!("timeline {} {}", script.name, variant.as_str()),
                );
            }
        }
    }
}

/// A detection must name a property the race expects its Buggy variant to break.
fn check_broken(id: &str, outcome: &racelab_scenarios::Outcome, expected: &[&str], what: &str) {
    let broken = outcome.verdict.broken();
    assert!(
        !broken.is_empty() && broken.iter().all(|b| expected.contains(b)),
        "{id} {what}: broke {broken:?}, expected one of {expected:?}\n{}",
        outcome.verdict.explanation()
    );
}

pub(crate) fn check_discovery(id: &str, expected: &[&str]) -> Vec<(Variant, u64)> {
    let race = race(id);
    let mut found = Vec::new();
    for variant in Variant::ALL {
        if race.sweep.get(variant) != Expectation::Fails {
            continue;
        }
        let seed = seeds_to_detect(&race, variant, 0, race.seed_budget);
        let seed = seed.unwrap_or_else(|| {
            panic!(
                "{id}: the random scheduler did not find the {} variant's violation within {} \
                 seeds: the model no longer reproduces the race",
                variant.as_str(),
                race.seed_budget
            )
        });
        // The failure replays: same seed, same trace, same verdict.
        let a = run_seed(&race, variant, seed);
        let b = run_seed(&race, variant, seed);
        assert!(
            a.violated() && b.violated(),
            "{id} seed {seed} did not replay"
        );
        check_broken(
            id,
            &a,
            expected,
            &format!("{} seed {seed}", variant.as_str()),
        );
        assert_eq!(
            a.run.trace_hash(),
            b.run.trace_hash(),
            "replay: {}",
            replay_command(&race, variant, seed)
        );
        found.push((variant, seed));
    }
    found
}

pub(crate) fn check_correct(id: &str) {
    let race = race(id);
    // Seed by seed, stopping at the first failing or stuck seed: a broken Correct variant
    // (whose runs may each run to the time limit) fails promptly instead of sweeping on.
    let mut result = Sweep::default();
    for seed in 0..CORRECT_SEEDS {
        let outcome = run_seed(&race, Variant::Correct, seed);
        result.record(&race, seed, &outcome);
        if outcome.violated() {
            panic!(
                "{id}: the Correct variant failed at seed {seed} (the sweep stops at the first \
                 failure)\n{}\n{}\nreplay: {}",
                render_timeline(&outcome).join("\n"),
                outcome.verdict.explanation(),
                replay_command(&race, Variant::Correct, seed)
            );
        }
        if outcome.verdict.stuck.is_some() {
            break;
        }
    }
    // Sometimes-properties: a pass means something only if faults were injected and the
    // protections were exercised.
    // A race whose sweep draws only latencies and workloads (no injected fault) must show
    // its protections at work instead.
    let injects_faults = (race.profile)() != racelab_sim_profile_without_faults(&race);
    assert!(
        !injects_faults || result.runs_with_faults * 10 >= CORRECT_SEEDS,
        "{id}: only {} of {} seeds injected any fault: the sweep is nearly vacuous",
        result.runs_with_faults,
        CORRECT_SEEDS
    );
    if let Some(seed) = result.first_stuck_seed {
        let outcome = run_seed(&race, Variant::Correct, seed);
        panic!(
            "{id}: the Correct variant did not complete at seed {seed} (the sweep stops at the \
             first stuck seed)\n{}\nreplay: {}",
            outcome.verdict.explanation(),
            replay_command(&race, Variant::Correct, seed)
        );
    }
    assert_eq!(result.seeds_run, CORRECT_SEEDS);
    // Every declared `sometimes` property (the window opened, the protection fired, the
    // fault landed) must have held somewhere, or the sweep proved nothing.
    let never = result.never_held(&race);
    assert!(
        never.is_empty(),
        "{id}: over {CORRECT_SEEDS} Correct seeds these sometimes-properties never held: \
         {never:?} (held: {:?})",
        result.sometimes
    );
    assert!(
        race.properties
            .iter()
            .any(|p| p.kind == racelab_core::PropertyKind::Sometimes),
        "{id} declares no sometimes-property: nothing shows a sweep exercised it"
    );
    eprintln!(
        "{id}: correct held for {} seeds; {} with faults; sometimes-properties held in {:?} \
         seeds; {} refusals of duplicates or stale writes",
        result.seeds_run, result.runs_with_faults, result.sometimes, result.protections
    );
}

macro_rules! race_tests {
    ($($name:ident => $id:literal, [$($broken:literal),+]),* $(,)?) => {$(
        mod $name {
            #[test]
            fn scripted_timelines_match_the_catalog() {
                $crate::common::check_scripts($id, &[$($broken),+]);
            }

            #[test]
            fn random_search_finds_the_buggy_and_docfix_violations() {
                let found = $crate::common::check_discovery($id, &[$($broken),+]);
                eprintln!("{} seeds to first detection: {found:?}", $id);
            }

            #[test]
            fn correct_holds_for_ten_thousand_seeds() {
                $crate::common::check_correct($id);
            }
        }
    )*};
}
