//! loom models of the shared endpoint health table (document 001): R-001-04 (a threaded port
//! with lock-free reads and `consecutive_failures += 1` as a load and a store: lost
//! increments, a lost 401, a selection after the observed 401 record) and R-001-02 (a stale
//! success write wins). Compiled only under `--cfg loom`.

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use racelab_core::Variant;
use racelab_core::health::{EndpointId, Generation, HealthConfig, Observation, Source};
use racelab_local::SharedHealthTable;
use racelab_models::{Outcomes, explore};

const E: EndpointId = EndpointId(1);
const F: EndpointId = EndpointId(2);
const BOUND: usize = 3;

fn table(variant: Variant) -> Arc<SharedHealthTable> {
    let config = HealthConfig {
        failure_threshold: 2,
    };
    Arc::new(SharedHealthTable::new(variant, config, &[E, F]))
}

/// R-001-04, lost increment: two threads each record a timeout of E (threshold 2). Both
/// failures must count and E must be unhealthy. Returns the interleavings that lost one.
fn two_failures(variant: Variant) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-001-04 {variant:?} 2 x timeout(E)"),
        BOUND,
        move || {
            let t = table(variant);
            let other = Arc::clone(&t);
            let h = thread::spawn(move || {
                other.observe(E, Observation::Timeout, Source::Request, Generation(0));
            });
            t.observe(E, Observation::Timeout, Source::Request, Generation(0));
            h.join().expect("records");
            let failures = t.get(E).map(|h| h.consecutive_failures);
            seen.record(failures != Some(2) || t.is_healthy(E));
        },
    );
    outcomes
}

#[test]
fn r001_04_buggy_and_docfix_lost_increment_is_found() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = two_failures(variant);
        println!(
            "  {variant:?}: a failure lost in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the lost increment"
        );
    }
}

#[test]
fn r001_04_correct_counts_every_failure() {
    let outcomes = two_failures(Variant::Correct);
    assert_eq!(outcomes.bad(), 0);
    assert!(outcomes.good() > 0);
}

/// R-001-04, selection after the observed record: thread A records E's 401 and then raises
/// a flag; thread B records a timeout of E; thread C reads the flag and then selects. If C
/// saw the flag, the 401 happened before its selection, so C must not select E; and after
/// all three, E must not be selectable. Returns the interleavings that broke either.
fn selection_after_the_401(variant: Variant) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-001-04 {variant:?} 401 + timeout + select"),
        BOUND,
        move || {
            let t = table(variant);
            let recorded = Arc::new(AtomicBool::new(false));
            let (ta, flag) = (Arc::clone(&t), Arc::clone(&recorded));
            let a = thread::spawn(move || {
                let generation = ta.dispatch(E);
                ta.observe(E, Observation::Unauthorized, Source::Request, generation);
                flag.store(true, Ordering::Release);
            });
            let tb = Arc::clone(&t);
            let b = thread::spawn(move || {
                tb.observe(E, Observation::Timeout, Source::Request, Generation(0));
            });
            let after_401 = recorded.load(Ordering::Acquire);
            let selected = t.select(0, &[]).map(|s| s.0);
            a.join().expect("records the 401");
            b.join().expect("records the timeout");
            let bad = (after_401 && selected == Some(E)) || t.is_healthy(E);
            seen.record(bad);
        },
    );
    outcomes
}

#[test]
fn r001_04_buggy_and_docfix_selection_after_the_401_is_found() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = selection_after_the_401(variant);
        println!(
            "  {variant:?}: E selectable after its 401 in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the lost 401"
        );
    }
}

#[test]
fn r001_04_correct_never_selects_after_the_401() {
    let outcomes = selection_after_the_401(Variant::Correct);
    assert_eq!(outcomes.bad(), 0);
    assert!(outcomes.good() > 0);
}

/// R-001-02, stale success write: an attempt on E starts (generation captured); another
/// thread records a 401 of E; the attempt's success is then recorded. Whatever the order,
/// the 401 came after the attempt started, so E must stay unselectable. Returns the
/// interleavings where the success won.
fn stale_success(variant: Variant) -> Outcomes {
    let outcomes = Outcomes::new();
    let seen = outcomes.clone();
    explore(
        &format!("R-001-02 {variant:?} success vs 401"),
        BOUND,
        move || {
            let t = table(variant);
            let started = t.dispatch(E);
            let other = Arc::clone(&t);
            let h = thread::spawn(move || {
                let generation = other.dispatch(E);
                other.observe(E, Observation::Unauthorized, Source::Request, generation);
            });
            t.observe(E, Observation::Success, Source::Request, started);
            h.join().expect("records the 401");
            seen.record(t.is_healthy(E));
        },
    );
    outcomes
}

#[test]
fn r001_02_buggy_and_docfix_stale_success_is_found() {
    for variant in [Variant::Buggy, Variant::DocFix] {
        let outcomes = stale_success(variant);
        println!(
            "  {variant:?}: E healthy again in {} of {} interleavings",
            outcomes.bad(),
            outcomes.bad() + outcomes.good()
        );
        assert!(
            outcomes.bad() > 0,
            "{variant:?}: loom must find the stale write"
        );
    }
}

#[test]
fn r001_02_correct_never_lets_a_stale_success_win() {
    let outcomes = stale_success(Variant::Correct);
    assert_eq!(outcomes.bad(), 0);
    assert!(outcomes.good() > 0);
}
