//! loom models of the shared failure queue (document 003): R-003-02 (the threaded port's
//! check-then-act double count) and R-003-03 (a stale recovery erases a newer failure).
//! Compiled only under `--cfg loom`.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use racelab_core::Variant;
use racelab_core::health::EndpointId;
use racelab_local::SharedFailureQueue;
use racelab_models::{Outcomes, explore};

const E: EndpointId = EndpointId(1);
const F: EndpointId = EndpointId(2);
const BOUND: usize = 3;

/// R-003-02: two threads add E; I-FQ1 says one episode. Returns the interleavings that
/// counted it twice.
fn two_threads_add_the_same_endpoint(variant: Variant) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-003-02 {variant:?} 2 x add(E)"),
        BOUND,
        move || {
            let queue = Arc::new(SharedFailureQueue::new(variant));
            let other = Arc::clone(&queue);
            let t = thread::spawn(move || {
                other.add(E);
            });
            queue.add(E);
            t.join().expect("the other thread adds");
            assert_eq!(
                queue.failed(),
                vec![E],
                "the set holds E once whatever happens"
            );
            let total = queue.total_failed();
            assert!(total == 1 || (variant != Variant::Correct && total == 2));
            seen.record(total != 1);
        },
    );
    outcomes
}

#[test]
fn r003_02_buggy_and_docfix_check_then_act_double_count_is_found() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = two_threads_add_the_same_endpoint(variant);
        println!(
            "  {variant:?}: total_failed == 2 in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the double count"
        );
    }
}

#[test]
fn r003_02_correct_counts_one_episode_in_every_interleaving() {
    let outcomes = two_threads_add_the_same_endpoint(Variant::Correct);
    assert_eq!(outcomes.bad(), 0);
    assert!(outcomes.good() > 0);
    // Three threads: E twice and F once are two episodes.
    let explored = explore("R-003-02 Correct 2 x add(E) + add(F)", BOUND, || {
        let queue = Arc::new(SharedFailureQueue::new(Variant::Correct));
        let threads: Vec<_> = [E, F]
            .into_iter()
            .map(|endpoint| {
                let queue = Arc::clone(&queue);
                thread::spawn(move || {
                    queue.add(endpoint);
                })
            })
            .collect();
        queue.add(E);
        for t in threads {
            t.join().expect("adds");
        }
        assert_eq!((queue.total_failed(), queue.failed()), (2, vec![E, F]));
    });
    assert!(explored.iterations > 1);
}

/// R-003-03: E is failed and a recovery probe of it has started (its ticket taken); another
/// thread then records a new failure of E while the probe is in flight, and the probe comes
/// back OK. I-FQ4: E must still be failed at the end, since no probe started after the new
/// failure. Returns the interleavings that erased it.
fn recovery_races_a_newer_failure(variant: Variant) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-003-03 {variant:?} remove vs add(E)"),
        BOUND,
        move || {
            let queue = Arc::new(SharedFailureQueue::new(variant));
            queue.add(E);
            let ticket = queue.begin_recovery(E);
            let other = Arc::clone(&queue);
            let failure = thread::spawn(move || {
                other.add(E);
            });
            queue.remove(E, ticket);
            failure.join().expect("the failure is recorded");
            seen.record(!queue.contains(E));
        },
    );
    outcomes
}

#[test]
fn r003_03_buggy_and_docfix_stale_recovery_is_found() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = recovery_races_a_newer_failure(variant);
        println!(
            "  {variant:?}: E erased in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the stale removal"
        );
    }
}

#[test]
fn r003_03_correct_recovery_never_erases_a_newer_failure() {
    let outcomes = recovery_races_a_newer_failure(Variant::Correct);
    assert_eq!(outcomes.bad(), 0);
    assert!(outcomes.good() > 0);
    // The probe's start races the failure too. A failure added after the probe started
    // (its epoch is newer than the probe's ticket) is never erased, whether it lands before
    // the removal (refused) or after it (re-inserted); a failure added before the probe
    // started does not stop the recovery. Both orders occur.
    let newer = Outcomes::new();
    let seen = newer.clone();
    explore("R-003-03 Correct recovery vs add(E)", BOUND, move || {
        let queue = Arc::new(SharedFailureQueue::new(Variant::Correct));
        queue.add(E);
        let other = Arc::clone(&queue);
        let failure = thread::spawn(move || other.add(E).epoch);
        let ticket = queue.begin_recovery(E);
        let was_removed = queue.remove(E, ticket);
        let failure_epoch = failure.join().expect("the failure is recorded");
        let failure_is_newer = failure_epoch > ticket.epoch;
        if failure_is_newer {
            assert!(
                queue.contains(E),
                "a failure newer than the probe was erased"
            );
        } else {
            assert!(
                was_removed && !queue.contains(E),
                "the recovery was refused"
            );
        }
        seen.record(failure_is_newer);
    });
    assert!(
        newer.bad() > 0 && newer.good() > 0,
        "both orders are explored"
    );
}
