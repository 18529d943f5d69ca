//! Small-scope bounded exhaustive checks: on each race's smallest workload (its first scripted
//! timeline's processes and scans), every schedule with up to two injected faults is visited.
//! The Buggy variant must break within the bound; the Correct variant must hold on all of them.
//! Races whose sweep injects no fault (only latencies vary) have nothing to enumerate here.

use racelab_scenarios::{Variant, catalog, explore_exhaustively, render_timeline, run_exhaustive};

/// Faults per schedule.
const DEVIATIONS_MAX: u32 = 2;
/// A cap that the searches below stay well under (asserted through `complete`).
const SCHEDULES_MAX: u64 = 200_000;

#[test]
fn correct_holds_on_every_schedule_within_the_bound_and_buggy_does_not() {
    for race in catalog() {
        let profile = (race.profile)();
        if profile.delay.is_never()
            && profile.drop_reply.is_never()
            && profile.pause.is_never()
            && profile.crash.is_never()
            && profile.failover.is_never()
            && profile.partitions == 0
            && profile.redis_restarts == 0
        {
            // Its sweep injects no fault: its interleavings come from latencies and workloads
            // (the random sweep), and from the loom and madsim lanes for in-process code.
            eprintln!("{}: no fault to enumerate, skipped", race.id);
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
        let buggy = explore_exhaustively(&race, Variant::Buggy, DEVIATIONS_MAX, SCHEDULES_MAX);
        eprintln!(
            "{} buggy: {} schedules, {} violations, first at choices {:?}",
            race.id, buggy.schedules, buggy.violations, buggy.first_violation
        );
        assert!(
            buggy.violations > 0,
            "{}: no schedule with up to {DEVIATIONS_MAX} faults breaks the Buggy variant",
            race.id
        );
    }
}
