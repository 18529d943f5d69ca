//! loom models of document 000's endpoint router shared by a gateway's threads (R-000-15):
//! P2, every recorded outcome is counted exactly once, and P1, failures that reach the
//! threshold close the gate whatever their interleaving. `Buggy` and `DocFix` update the
//! router by read-modify-write, as the document's selection statistics are; `Correct` takes
//! one critical section per operation. Compiled only under `--cfg loom`.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use racelab_core::health::{HealthConfig, Observation};
use racelab_core::route::{Policy, RouterConfig};
use racelab_core::{EndpointId, RandomStream, Timestamp, Variant};
use racelab_local::SharedRouter;
use racelab_models::{Outcomes, explore};

const E: EndpointId = EndpointId(1);
const F: EndpointId = EndpointId(2);
const BOUND: usize = 3;

fn router(variant: Variant, policy: Policy, threshold: u32) -> Arc<SharedRouter> {
    let mut config = RouterConfig::gated(policy);
    config.health = HealthConfig {
        failure_threshold: threshold,
    };
    Arc::new(SharedRouter::new(variant, config, &[E, F]).expect("two endpoints"))
}

fn total(r: &SharedRouter) -> u64 {
    r.recorded(E).unwrap_or(0) + r.recorded(F).unwrap_or(0)
}

/// P2 with `threads` threads, each picking one attempt (its own seeded stream) and
/// recording its success. Every pick must get its own attempt, every record must find it,
/// and the counts must add up to `threads` with nothing left in flight. Returns the
/// interleavings that broke any of it.
fn picks_and_records(variant: Variant, threads: u64, bound: usize) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-000-15 {variant:?} {threads} x (pick, record)"),
        bound,
        move || {
            let r = router(variant, Policy::Uniform, 3);
            let work = |r: &SharedRouter, thread: u64| -> bool {
                let mut rng = RandomStream::for_process(7, thread as u16, 0);
                let Ok(attempt) = r.pick(Timestamp::ZERO, &mut rng) else {
                    return false;
                };
                r.record(attempt.id, Timestamp::from_ms(3), Observation::Success)
                    .is_ok()
            };
            let handles: Vec<_> = (1..threads)
                .map(|t| {
                    let r = Arc::clone(&r);
                    thread::spawn(move || work(&r, t))
                })
                .collect();
            let mut all_ok = work(&r, 0);
            for h in handles {
                all_ok &= h.join().expect("thread ends");
            }
            let bad = !all_ok || total(&r) != threads || r.in_flight() != 0;
            seen.record(bad);
        },
    );
    outcomes
}

#[test]
fn r000_15_buggy_and_docfix_lose_an_outcome() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = picks_and_records(variant, 2, BOUND);
        println!(
            "  {variant:?}: an attempt or outcome lost in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the lost outcome"
        );
    }
}

#[test]
fn r000_15_correct_counts_every_outcome_with_two_and_three_threads() {
    for (threads, bound) in [(2, BOUND), (3, BOUND)] {
        let outcomes = picks_and_records(Variant::Correct, threads, bound);
        println!(
            "  Correct, {threads} threads, bound {bound}: {} interleavings, all exact",
            outcomes.good()
        );
        assert_eq!(outcomes.bad(), 0);
        assert!(outcomes.good() > 0);
    }
}

/// P1 through the gate: E has a threshold of 2; the main thread dispatches two requests to
/// E (round robin from E, every other pick), then two threads each record one of them as a
/// timeout. E must be out of the gate afterwards, so no later request goes to it. Returns
/// the interleavings in which a lost failure left E open.
fn failures_close_the_gate(variant: Variant) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-000-15 {variant:?} 2 x timeout(E), threshold 2"),
        BOUND,
        move || {
            let r = router(variant, Policy::RoundRobin, 2);
            let mut rng = RandomStream::for_process(9, 0, 0);
            let mut to_e = Vec::new();
            while to_e.len() < 2 {
                let a = r.pick(Timestamp::ZERO, &mut rng).expect("both healthy");
                if a.endpoint == E {
                    to_e.push(a.id);
                } else {
                    let _ = r.record(a.id, Timestamp::from_ms(1), Observation::Success);
                }
            }
            let (first, second) = (to_e[0], to_e[1]);
            let other = Arc::clone(&r);
            let h = thread::spawn(move || {
                let _ = other.record(first, Timestamp::from_ms(2), Observation::Timeout);
            });
            let _ = r.record(second, Timestamp::from_ms(2), Observation::Timeout);
            h.join().expect("records");
            seen.record(r.passes_gate(E));
        },
    );
    outcomes
}

#[test]
fn r000_15_buggy_and_docfix_leave_a_failed_endpoint_in_the_gate() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = failures_close_the_gate(variant);
        println!(
            "  {variant:?}: E still passes the gate in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the lost failure"
        );
    }
}

#[test]
fn r000_15_correct_closes_the_gate_in_every_interleaving() {
    let outcomes = failures_close_the_gate(Variant::Correct);
    assert_eq!(outcomes.bad(), 0);
    assert!(outcomes.good() > 0);
}
