//! The net world (issue #4): R-002-01 .. R-002-04 with the production async driver inside
//! turmoil. The Buggy variants are found within the asserted seed budget, the Correct
//! variants hold for 1,000 seeds each (with faults injected and protections exercised), and
//! every seed replays to the same trace hash.

use racelab_scenarios::net::{
    NET_SEED_BUDGET, net_races, replay_command_net, run_seed_net, seeds_to_detect_net, sweep_net,
};
use racelab_scenarios::{Race, Variant, catalog, render_timeline};

fn race(id: &str) -> Race {
    catalog()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("{id} is in the catalog"))
}

/// The Correct variant must hold for this many seeds per race in the net world.
const CORRECT_SEEDS: u64 = 1_000;

fn check_buggy_found(id: &str) {
    let race = race(id);
    let seed = seeds_to_detect_net(&race, Variant::Buggy, 0, NET_SEED_BUDGET)
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(seed) = seed else {
        panic!(
            "{id} buggy: no violation in the net world within {NET_SEED_BUDGET} seeds from 0 \
             (`racelab run {id} --variant buggy --world net --seeds {NET_SEED_BUDGET}`)"
        );
    };
    let outcome = run_seed_net(&race, Variant::Buggy, seed).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.violated());
    eprintln!(
        "{id} buggy: first violation at seed {seed}: {}\nreplay: {}",
        outcome.verdict.explanation(),
        replay_command_net(&race, Variant::Buggy, seed)
    );
}

/// `refusals`: whether the sweep must show the protocol refusing a duplicate or a stale write
/// (R-002-02's failovers only cost the Redis lock, which the Correct variant does not rely
/// on, so nothing is ever refused there).
fn check_correct_holds(id: &str, refusals: bool) {
    let race = race(id);
    let sweep = sweep_net(&race, Variant::Correct, 0, CORRECT_SEEDS, |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(seed) = sweep.first_failing_seed {
        let outcome = run_seed_net(&race, Variant::Correct, seed).unwrap_or_else(|e| panic!("{e}"));
        panic!(
            "{id} correct failed in the net world at seed {seed} ({} of {} seeds fail)\n{}\n{}\nreplay: {}",
            sweep.failures,
            sweep.seeds_run,
            render_timeline(&outcome).join("\n"),
            outcome.verdict.explanation(),
            replay_command_net(&race, Variant::Correct, seed)
        );
    }
    // "Sometimes" checks: a passing sweep must have been tested at all.
    assert!(
        sweep.runs_with_faults * 10 >= sweep.seeds_run,
        "{id}: only {} of {} net runs had a fault; the sweep is nearly vacuous",
        sweep.runs_with_faults,
        sweep.seeds_run
    );
    assert!(
        !refusals || sweep.protections > 0,
        "{id}: the Correct variant never refused a duplicate or a stale write in {} seeds; the \
         faults did not reach its protections",
        sweep.seeds_run
    );
    eprintln!(
        "{id} correct: {} seeds held in the net world ({} with faults, {} refusals of a \
         duplicate or stale write, {} store operations)",
        sweep.seeds_run, sweep.runs_with_faults, sweep.protections, sweep.store_ops
    );
}

#[test]
fn r_002_01_buggy_is_found_under_turmoil() {
    check_buggy_found("R-002-01");
}

#[test]
fn r_002_02_buggy_is_found_under_turmoil() {
    check_buggy_found("R-002-02");
}

#[test]
fn r_002_03_buggy_is_found_under_turmoil() {
    check_buggy_found("R-002-03");
}

#[test]
fn r_002_04_buggy_is_found_under_turmoil() {
    check_buggy_found("R-002-04");
}

#[test]
fn r_002_01_correct_holds_for_1000_seeds_under_turmoil() {
    check_correct_holds("R-002-01", true);
}

#[test]
fn r_002_02_correct_holds_for_1000_seeds_under_turmoil() {
    check_correct_holds("R-002-02", false);
}

#[test]
fn r_002_03_correct_holds_for_1000_seeds_under_turmoil() {
    check_correct_holds("R-002-03", true);
}

#[test]
fn r_002_04_correct_holds_for_1000_seeds_under_turmoil() {
    check_correct_holds("R-002-04", true);
}

#[test]
fn every_seed_replays_to_the_same_trace_hash() {
    for id in net_races() {
        let race = race(id);
        for variant in [Variant::Buggy, Variant::Correct] {
            for seed in 0..8 {
                let a = run_seed_net(&race, variant, seed).unwrap_or_else(|e| panic!("{e}"));
                let b = run_seed_net(&race, variant, seed).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    (a.run.trace_hash, render_timeline(&a)),
                    (b.run.trace_hash, render_timeline(&b)),
                    "{id} {} seed {seed} did not replay identically; replay: {}",
                    variant.as_str(),
                    replay_command_net(&race, variant, seed)
                );
            }
        }
    }
}

#[test]
fn the_net_world_runs_the_driver_against_the_store_hosts() {
    // Seed 0 of R-002-03 correct: a fault-free or faulty run alike must settle with every
    // scan applied once, through real (simulated) TCP round trips.
    let race = race("R-002-03");
    let outcome = run_seed_net(&race, Variant::Correct, 0).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.run.quiescent, "the run settles");
    assert!(!outcome.violated(), "{}", outcome.verdict.explanation());
    let history = &outcome.run.history;
    assert!(
        history.ops.iter().any(|op| op.applied_at.is_some()),
        "the stores applied operations"
    );
    assert!(
        history
            .ops
            .iter()
            .all(|op| op.applied_at.is_none_or(|t| t >= op.invoked_at)),
        "nothing is applied before it is sent"
    );
    assert!(outcome.run.stats.store_ops > 0);
}

#[test]
fn races_outside_the_net_world_are_refused_with_a_clear_error() {
    let race = race("R-002-05");
    let err = run_seed_net(&race, Variant::Correct, 0).expect_err("R-002-05 is explore-only");
    let text = err.to_string();
    assert!(
        text.contains("R-002-05") && text.contains("--world explore"),
        "{text}"
    );
}

/// R-002-01's profile with every fault-prone host's clock skewed (up to 3 s off and 10% fast
/// or slow).
fn skewed_profile() -> racelab_sim::explore::FaultProfile {
    let mut p = (race("R-002-01").profile)();
    p.clock_offset = racelab_core::Duration::from_secs(3);
    p.clock_rate_ppm = 100_000;
    p
}

/// Skewed clocks in the net world: each fault-prone host's clock is drawn from the profile
/// and recorded, the history keeps the shared time line, runs replay, and the fenced
/// Correct protocol still holds.
#[test]
fn hosts_with_skewed_clocks_are_recorded_and_the_fenced_protocol_holds() {
    let mut skewed = race("R-002-01");
    skewed.profile = skewed_profile;
    for seed in 0..5 {
        let a = run_seed_net(&skewed, Variant::Correct, seed).unwrap_or_else(|e| panic!("{e}"));
        let clocks: Vec<_> = a
            .run
            .history
            .faults
            .iter()
            .filter_map(|f| match f.fault {
                racelab_core::Fault::Clock { skew, .. } => Some(skew),
                _ => None,
            })
            .collect();
        assert!(!clocks.is_empty(), "seed {seed}: no clock was skewed");
        assert!(
            clocks
                .iter()
                .all(|s| s.offset_ms.abs() <= 3_000 && s.rate_ppm.abs() <= 100_000)
        );
        assert!(
            !a.violated(),
            "seed {seed}: {}\n{}",
            a.verdict.explanation(),
            render_timeline(&a).join("\n")
        );
        let b = run_seed_net(&skewed, Variant::Correct, seed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.run.trace_hash, b.run.trace_hash, "seed {seed} replays");
    }
}

/// R-002-01's workload stopped at a 3 s horizon.
fn build_with_horizon(
    variant: Variant,
    workload: racelab_scenarios::Workload<'_>,
) -> (racelab_sim::explore::WorldSpec, racelab_scenarios::Capture) {
    let (mut spec, capture) = (race("R-002-01").build)(variant, workload);
    spec.horizon = Some(racelab_core::Timestamp::from_ms(3_000));
    (spec, capture)
}

/// A horizon in the net world: timers stop, faults stop (heals aside), what is in flight
/// drains, the run is settled and says it ended at its horizon; it replays.
#[test]
fn a_run_with_a_horizon_drains_in_the_net_world() {
    let h = racelab_core::Timestamp::from_ms(3_000);
    let mut bounded = race("R-002-01");
    bounded.build = build_with_horizon;
    for seed in 0..5 {
        let a = run_seed_net(&bounded, Variant::Correct, seed).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.run.quiescent, "seed {seed}: {:?}", a.run.unsettled);
        assert_eq!(
            a.run.horizon,
            Some(h),
            "seed {seed} ended at {}",
            a.run.ended_at
        );
        assert!(a.run.ended_at >= h);
        assert!(
            a.run
                .history
                .faults
                .iter()
                .all(|f| f.at <= h || matches!(f.fault, racelab_core::Fault::Heal { .. })),
            "seed {seed}: a fault after the horizon"
        );
        let b = run_seed_net(&bounded, Variant::Correct, seed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.run.trace_hash, b.run.trace_hash, "seed {seed} replays");
    }
}
