//! Small-scope bounded exhaustive checks: on each race's smallest workload (its first scripted
//! timeline's processes and scans), every schedule with up to two injected faults is visited.
//! The Buggy variant must break within the bound; the Correct variant must hold on all of them.
//! Races whose sweep injects no fault (only latencies vary) are enumerated over arrival orders
//! instead: every schedule in which up to two messages take the profile's longest latency.

use racelab_scenarios::{
    Variant, catalog, explore_exhaustively, explore_until_violation, injects_faults,
    render_timeline, run_exhaustive,
};

/// Faults per schedule.
const DEVIATIONS_MAX: u32 = 2;
/// A cap that the searches below stay well under (asserted through `complete`).
const SCHEDULES_MAX: u64 = 200_000;

/// The races that inject faults are split over this many tests, by their place in the
/// catalog, so that the test harness runs the shards on every core at once.
const SHARDS: usize = 3;

#[test]
fn correct_holds_on_every_schedule_within_the_bound_and_buggy_does_not_shard_0() {
    faulted_races_hold_when_correct_and_break_when_buggy(0);
}

#[test]
fn correct_holds_on_every_schedule_within_the_bound_and_buggy_does_not_shard_1() {
    faulted_races_hold_when_correct_and_break_when_buggy(1);
}

#[test]
fn correct_holds_on_every_schedule_within_the_bound_and_buggy_does_not_shard_2() {
    faulted_races_hold_when_correct_and_break_when_buggy(2);
}

/// Every race of the catalog at a place `shard` modulo [`SHARDS`] whose sweep injects faults:
/// the Correct variant holds on every schedule with up to [`DEVIATIONS_MAX`] faults, and some
/// such schedule breaks the Buggy variant.
fn faulted_races_hold_when_correct_and_break_when_buggy(shard: usize) {
    let races = catalog().into_iter().enumerate();
    for race in races.filter(|(i, _)| i % SHARDS == shard).map(|(_, r)| r) {
        if !injects_faults(&(race.profile)()) {
            // Checked over arrival orders instead (below).
            continue;
        }
        let correct = explore_exhaustively(&race, Variant::Correct, DEVIATIONS_MAX, SCHEDULES_MAX);
        eprintln!(
            "{} correct: {} schedules with up to {DEVIATIONS_MAX} faults, {} violations, complete: {}",
            race.id, correct.schedules, correct.violations, correct.complete
        );
        assert!(
            correct.complete,
            "{}: the search was cut short at {} schedules",
            race.id, correct.schedules
        );
        if let Some(prefix) = &correct.first_violation {
            let outcome = run_exhaustive(&race, Variant::Correct, prefix);
            panic!(
                "{}: the Correct variant breaks under fault choices {prefix:?}\n{}\n{}",
                race.id,
                render_timeline(&outcome).join("\n"),
                outcome.verdict.explanation()
            );
        }
        assert!(
            correct.schedules > 1,
            "{}: no fault was ever a choice",
            race.id
        );
        let buggy = explore_until_violation(&race, Variant::Buggy, DEVIATIONS_MAX, SCHEDULES_MAX);
        eprintln!(
            "{} buggy: broken at schedule {} by the choices {:?}",
            race.id, buggy.schedules, buggy.first_violation
        );
        assert!(
            buggy.violations > 0,
            "{}: no schedule with up to {DEVIATIONS_MAX} faults breaks the Buggy variant",
            race.id
        );
    }
}

/// Slow messages per schedule for the races that race on arrival order.
const SLOW_MAX: u32 = 2;

#[test]
fn races_without_faults_are_checked_over_every_arrival_order_within_the_bound() {
    let mut checked = Vec::new();
    for race in catalog() {
        if injects_faults(&(race.profile)()) {
            continue;
        }
        let correct = explore_exhaustively(&race, Variant::Correct, SLOW_MAX, SCHEDULES_MAX);
        let buggy = explore_until_violation(&race, Variant::Buggy, SLOW_MAX, SCHEDULES_MAX);
        eprintln!(
            "{}: up to {SLOW_MAX} slow messages: correct {} schedules ({} violations, complete: \
             {}), buggy broken at schedule {} ({} violation, choices {:?})",
            race.id,
            correct.schedules,
            correct.violations,
            correct.complete,
            buggy.schedules,
            buggy.violations,
            buggy.first_violation
        );
        assert!(correct.complete, "{}: cut short", race.id);
        assert!(
            correct.schedules > 1,
            "{}: no latency was a choice",
            race.id
        );
        if let Some(prefix) = &correct.first_violation {
            let outcome = run_exhaustive(&race, Variant::Correct, prefix);
            panic!(
                "{}: the Correct variant breaks under latency choices {prefix:?}\n{}\n{}",
                race.id,
                render_timeline(&outcome).join("\n"),
                outcome.verdict.explanation()
            );
        }
        assert!(
            buggy.violations > 0,
            "{}: no schedule with up to {SLOW_MAX} slow messages breaks the Buggy variant",
            race.id
        );
        checked.push(race.id);
    }
    assert_eq!(
        checked,
        ["R-001-02", "R-001-04", "R-003-02", "R-003-03"],
        "the races whose sweeps inject no fault"
    );
}

/// R-004-03 on its smallest workload: every ordering of the node-offline script against the
/// selection, binding, re-dispatch and result scripts that up to two faults (a node crash
/// after a heartbeat, a node stalled as it reports, the scheduler stalled between selection
/// and binding) produce. Each script is one atomic step of the model; the counts are pinned
/// so that a change of the search space shows.
#[test]
fn the_offline_script_race_is_checked_over_every_schedule_with_up_to_two_faults() {
    let race = catalog()
        .into_iter()
        .find(|r| r.id == "R-004-03")
        .expect("R-004-03 is in the catalog");
    let correct = explore_exhaustively(&race, Variant::Correct, DEVIATIONS_MAX, SCHEDULES_MAX);
    let buggy = explore_exhaustively(&race, Variant::Buggy, DEVIATIONS_MAX, SCHEDULES_MAX);
    eprintln!(
        "R-004-03: correct {} schedules ({} violations), buggy {} schedules ({} violations)",
        correct.schedules, correct.violations, buggy.schedules, buggy.violations
    );
    assert!(correct.complete && buggy.complete);
    assert_eq!(correct.violations, 0);
    assert_eq!((correct.schedules, buggy.schedules), (189, 237));
    assert!(buggy.violations > 0);
}
