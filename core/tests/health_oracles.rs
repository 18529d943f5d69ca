//! Documents 001 and 003's freshness and liveness oracles, fed known-bad histories (and the
//! good histories next to them), and the health table's key rotation, which no scenario
//! performs yet.
//!
//! The histories are built by running each synchronous block on a real [`LocalState`] of the
//! chosen variant, so the results and sequence numbers are the ones a run would record.

use racelab_core::health::oracle::{
    ENDPOINT_RECOVERS, I_FRESH, QUEUE_DRAINS, QueueEnd, RECOVERY_PROBED, TableEnd, coverage,
    endpoints_recover, fresh_evidence_only, queue_drains,
};
use racelab_core::health::{
    EndpointId, FailureQueue, Generation, HealthConfig, HealthTable, HealthTag, LocalOp,
    LocalResult, LocalState, Observation, ObserveOutcome, Source, Status,
};
use racelab_core::{
    CallKind, History, LocalBlock, LocalReply, LocalValue, OpId, OpRecord, ProcessId, Reply,
    StoreOp, Tag, Timestamp, UpstreamOp, UpstreamReply, Variant,
};

const E1: EndpointId = EndpointId(1);
const E2: EndpointId = EndpointId(2);

/// A history under construction, one step every 100 ms.
struct Run {
    history: History,
    state: LocalState,
    seq: u64,
    now_ms: u64,
}

impl Run {
    fn new(variant: Variant, processes: &[&str]) -> Run {
        Run {
            history: History {
                process_names: processes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (ProcessId(i as u16), n.to_string()))
                    .collect(),
                ..History::default()
            },
            state: LocalState::new(variant, HealthConfig::default(), &[E1, E2]),
            seq: 0,
            now_ms: 0,
        }
    }

    fn push(&mut self, p: u16, tag: HealthTag, op: StoreOp, result: Reply, timed_out: bool) {
        self.now_ms += 100;
        let at = Timestamp::from_ms(self.now_ms);
        self.history.ops.push(OpRecord {
            process: ProcessId(p),
            id: OpId(self.history.ops.len() as u64),
            tag: Tag::new(tag),
            op,
            invoked_at: at,
            applied_at: Some(at),
            durable_at: Some(at),
            lost_at: None,
            result: Some(result),
            completed_at: Some(at),
            timed_out,
        });
    }

    /// Runs one synchronous block on the state and records it.
    fn local(&mut self, p: u16, op: LocalOp) -> LocalResult {
        let result = self.state.apply(&op);
        self.seq += 1;
        let reply = Reply::Local(LocalReply {
            seq: self.seq,
            result: LocalValue::new(result.clone()),
        });
        let block = StoreOp::Local(LocalBlock::new(op));
        self.push(p, HealthTag::FailureQueue, block, reply, false);
        result
    }

    /// An upstream call answered with `status`.
    fn call(&mut self, p: u16, endpoint: EndpointId, kind: CallKind, status: u16) {
        let op = StoreOp::Upstream(UpstreamOp { endpoint, kind });
        let reply = Reply::Upstream(UpstreamReply { status });
        self.push(p, HealthTag::Call { endpoint }, op, reply, false);
    }

    /// A request attempt on `e` from its selection to its recorded observation, in one go.
    fn request(&mut self, p: u16, e: EndpointId, observation: Observation) {
        let started = self.start(p, e);
        self.observe(p, e, observation, Source::Request, started);
    }

    /// A request's selection of `e` (the documents' dispatch without re-check).
    fn start(&mut self, p: u16, e: EndpointId) -> Generation {
        match self.local(p, LocalOp::Dispatch { endpoint: e }) {
            LocalResult::Dispatched(g) => g,
            other => panic!("dispatch answered {other}"),
        }
    }

    fn observe(
        &mut self,
        p: u16,
        endpoint: EndpointId,
        observation: Observation,
        source: Source,
        started: Generation,
    ) -> LocalResult {
        self.local(
            p,
            LocalOp::Observe {
                endpoint,
                observation,
                source,
                started,
            },
        )
    }

    /// A probe of `e` from its beginning to its upstream answer; returns the generation and
    /// failure epoch it began with.
    fn probe(&mut self, p: u16, e: EndpointId, auth: bool, status: u16) -> (Generation, u64) {
        let begun = match self.local(p, LocalOp::BeginProbe { endpoint: e }) {
            LocalResult::Begun { generation, epoch } => (generation, epoch),
            other => panic!("begin probe answered {other}"),
        };
        self.call(p, e, CallKind::Probe { auth }, status);
        begun
    }

    fn table_end(&self) -> TableEnd {
        TableEnd::read(&self.state)
    }

    fn queue_end(&self) -> QueueEnd {
        QueueEnd::read(&self.state)
    }
}

const R0: u16 = 0;
const R1: u16 = 1;
const R2: u16 = 2;
const R3: u16 = 3;
const R4: u16 = 4;
const HM: u16 = 5;
const FQR: u16 = 6;
const NAMES: &[&str] = &["R0", "R1", "R2", "R3", "R4", "HM", "FQR"];

/// R-001-02 with 503s: R0 starts on E1, three requests record a 503 from E1 each, then R0's
/// older success arrives and R4 asks for candidates.
fn stale_503(variant: Variant) -> Run {
    let mut run = Run::new(variant, NAMES);
    let g0 = run.start(R0, E1);
    for r in [R1, R2, R3] {
        run.request(r, E1, Observation::ServerError);
    }
    run.observe(R0, E1, Observation::Success, Source::Request, g0);
    run.local(R4, LocalOp::Candidates);
    run
}

#[test]
fn fresh_evidence_only_flags_a_stale_success_that_undoes_three_503s() {
    let run = stale_503(Variant::Buggy);
    let v = fresh_evidence_only(&run.history, &run.table_end());
    assert_eq!(v.broken(), [I_FRESH.name], "{}", v.explanation());
    let text = v.explanation();
    assert!(
        text.contains(
            "the table offered E1 to R4 at 00:00.900 although 3 failure(s) (threshold 3) since \
             the last success that started after a failure (latest failure recorded by R3 at \
             00:00.700)"
        ),
        "{text}"
    );
    // Once per endpoint, though E1 also ends selectable.
    assert_eq!(v.violations.len(), 1);
}

#[test]
fn fresh_evidence_only_flags_a_selection_of_the_stale_endpoint() {
    // As above, but R4 selects an endpoint (not in a list of candidates): the selection is
    // the offer the oracle names.
    let mut run = Run::new(Variant::Buggy, NAMES);
    let g0 = run.start(R0, E1);
    for r in [R1, R2, R3] {
        run.request(r, E1, Observation::ServerError);
    }
    run.observe(R0, E1, Observation::Success, Source::Request, g0);
    let selected = run.local(R4, LocalOp::Select { tried: vec![E2] });
    assert!(matches!(selected, LocalResult::Selected(Some((e, _))) if e == E1));
    let v = fresh_evidence_only(&run.history, &run.table_end());
    assert_eq!(v.broken(), [I_FRESH.name], "{}", v.explanation());
    let text = v.explanation();
    assert!(
        text.contains("the table offered E1 to R4 at 00:00.900"),
        "the selection is named, not only the end state: {text}"
    );
}

#[test]
fn fresh_evidence_only_accepts_the_correct_table_which_ignores_the_stale_success() {
    let run = stale_503(Variant::Correct);
    assert_eq!(
        run.state.health.get(E1).map(|h| h.status),
        Some(Status::Unhealthy)
    );
    let v = fresh_evidence_only(&run.history, &run.table_end());
    assert!(v.holds(), "{}", v.explanation());
}

#[test]
fn fresh_evidence_only_flags_a_stale_success_after_a_401_at_the_end() {
    // R-001-02's stale stream, with no later request: only the end state shows it.
    let mut run = Run::new(Variant::DocFix, NAMES);
    let g0 = run.start(R0, E1);
    run.request(R1, E1, Observation::Unauthorized);
    run.observe(R0, E1, Observation::Success, Source::Request, g0);
    let v = fresh_evidence_only(&run.history, &run.table_end());
    let text = v.explanation();
    assert!(
        text.contains(
            "E1 ended healthy (selectable) although its 401 was not cleared by a probe started \
             after it"
        ),
        "{text}"
    );
}

#[test]
fn fresh_evidence_only_lets_a_fresh_success_reset_the_count_but_not_a_request_clear_a_401() {
    let mut run = Run::new(Variant::Correct, NAMES);
    // Two 503s, a fresh success, two more 503s: never three in a row.
    run.request(R1, E1, Observation::ServerError);
    run.request(R2, E1, Observation::ServerError);
    run.request(R3, E1, Observation::Success);
    run.request(R1, E1, Observation::ServerError);
    run.request(R2, E1, Observation::ServerError);
    run.local(R4, LocalOp::Candidates);
    assert!(fresh_evidence_only(&run.history, &run.table_end()).holds());
    // A 401, then a request that started after it succeeds: still not selectable (only a
    // probe clears a 401), and the Correct table agrees.
    run.request(R1, E2, Observation::Unauthorized);
    run.request(R2, E2, Observation::Success);
    run.local(R4, LocalOp::Candidates);
    let v = fresh_evidence_only(&run.history, &run.table_end());
    assert!(v.holds(), "{}", v.explanation());
    // A probe that began after the 401 clears it.
    let (g, _) = run.probe(HM, E2, true, 200);
    run.observe(HM, E2, Observation::Success, Source::Probe, g);
    assert_eq!(
        run.local(R4, LocalOp::Candidates),
        LocalResult::Endpoints(vec![E1, E2])
    );
    assert!(fresh_evidence_only(&run.history, &run.table_end()).holds());
}

/// A 401 on E1, then a keyed probe that began after it and answered 200, recorded.
fn recovered_by_probe(variant: Variant) -> Run {
    let mut run = Run::new(variant, NAMES);
    run.request(R1, E1, Observation::Unauthorized);
    let (g, _) = run.probe(HM, E1, true, 200);
    run.observe(HM, E1, Observation::Success, Source::Probe, g);
    run
}

#[test]
fn endpoints_recover_flags_an_endpoint_a_fresh_probe_saw_recover_but_that_stayed_down() {
    let run = recovered_by_probe(Variant::Correct);
    assert!(endpoints_recover(&run.history, &run.table_end(), true).holds());
    // A table that ignored the probe's success (a probe that cannot clear AUTH_FAILED).
    let mut end = run.table_end();
    end.status.insert(E1, Status::AuthFailed);
    let v = endpoints_recover(&run.history, &end, true);
    assert_eq!(v.broken(), [ENDPOINT_RECOVERS.name], "{}", v.explanation());
    assert!(
        v.explanation().contains(
            "HM's probe of E1 answered 200 at 00:00.400 and no failure of E1 was recorded after \
             the probe began, yet E1 ended auth_failed"
        ),
        "{}",
        v.explanation()
    );
    // Liveness is judged only at the end of a completed run.
    assert!(endpoints_recover(&run.history, &end, false).holds());
}

#[test]
fn endpoints_recover_ignores_probes_older_than_the_latest_failure_or_that_failed() {
    let mut run = Run::new(Variant::Correct, NAMES);
    // The probe began before R1's 401: its success is stale evidence.
    let (g, _) = run.probe(HM, E1, true, 200);
    run.request(R1, E1, Observation::Unauthorized);
    run.observe(HM, E1, Observation::Success, Source::Probe, g);
    // A probe after the 401 that got 401 itself.
    let (g, _) = run.probe(HM, E1, true, 401);
    run.observe(HM, E1, Observation::Unauthorized, Source::Probe, g);
    let end = run.table_end();
    assert_eq!(end.status.get(&E1), Some(&Status::AuthFailed));
    assert!(endpoints_recover(&run.history, &end, true).holds());
    assert_eq!(
        coverage(&run.history).sometimes.get(RECOVERY_PROBED.name),
        None
    );
}

#[test]
fn coverage_counts_probes_that_saw_a_failed_endpoint_recover() {
    let run = recovered_by_probe(Variant::Correct);
    assert_eq!(
        coverage(&run.history).sometimes.get(RECOVERY_PROBED.name),
        Some(&1)
    );
}

#[test]
fn coverage_counts_exactly_the_blocks_each_property_names() {
    use racelab_core::health::oracle::{REPEAT_FAILURE, STALE_RECOVERY_REFUSED};
    let mut run = Run::new(Variant::Buggy, NAMES);
    let count = |run: &Run, name: &str| {
        coverage(&run.history)
            .sometimes
            .get(name)
            .copied()
            .unwrap_or(0)
    };
    run.local(R1, LocalOp::FqAdd { endpoint: E1 });
    assert_eq!(count(&run, REPEAT_FAILURE.name), 0, "a first failure");
    // A threaded port's check finds E1 already queued: the double-count window.
    assert_eq!(
        run.local(R2, LocalOp::FqContains { endpoint: E1 }),
        LocalResult::Bool(true)
    );
    assert_eq!(count(&run, REPEAT_FAILURE.name), 1);
    // A removal that happened is not a refused stale recovery.
    assert_eq!(
        run.local(
            FQR,
            LocalOp::FqRemove {
                endpoint: E1,
                epoch: 0
            }
        ),
        LocalResult::Bool(true)
    );
    assert_eq!(count(&run, STALE_RECOVERY_REFUSED.name), 0);
    // Nor is a check that found E1 gone a repeat failure.
    assert_eq!(
        run.local(R2, LocalOp::FqContains { endpoint: E1 }),
        LocalResult::Bool(false)
    );
    assert_eq!(count(&run, REPEAT_FAILURE.name), 1);
}

/// R-003's recovery loop: R1 reports E1's 503 to the failure queue; FQR lists the queue and
/// probes E1 without its key.
fn recovery(variant: Variant, status: u16) -> (Run, Generation, u64) {
    let mut run = Run::new(variant, NAMES);
    run.request(R1, E1, Observation::ServerError);
    run.local(R1, LocalOp::FqAdd { endpoint: E1 });
    run.local(FQR, LocalOp::FqFailed);
    let (g, epoch) = run.probe(FQR, E1, false, status);
    (run, g, epoch)
}

#[test]
fn queue_drains_flags_an_endpoint_left_in_the_queue_after_a_fresh_recovery() {
    // The recovery loop saw 200 but never removed E1 (a removal that always refuses).
    let (run, _, _) = recovery(Variant::Correct, 200);
    let v = queue_drains(&run.history, &run.queue_end(), true);
    assert_eq!(v.broken(), [QUEUE_DRAINS.name], "{}", v.explanation());
    assert!(
        v.explanation().contains(
            "FQR's recovery probe of E1 answered 200 at 00:00.600 and no failure of E1 was \
             recorded after the probe began, yet E1 ended in the failure queue"
        ),
        "{}",
        v.explanation()
    );
    assert!(queue_drains(&run.history, &run.queue_end(), false).holds());
}

#[test]
fn queue_drains_accepts_a_removal_and_ignores_failed_or_overtaken_probes() {
    let (mut run, g, epoch) = recovery(Variant::Correct, 200);
    assert_eq!(
        run.local(
            FQR,
            LocalOp::FqRemove {
                endpoint: E1,
                epoch
            }
        ),
        LocalResult::Bool(true)
    );
    run.observe(FQR, E1, Observation::Success, Source::Probe, g);
    assert!(queue_drains(&run.history, &run.queue_end(), true).holds());
    assert!(endpoints_recover(&run.history, &run.table_end(), true).holds());
    // The probe answered 503: nothing to drain.
    let (run, _, _) = recovery(Variant::Correct, 503);
    assert!(queue_drains(&run.history, &run.queue_end(), true).holds());
    // A newer failure was added after the probe began: E1 may stay.
    let (mut run, _, _) = recovery(Variant::Correct, 200);
    run.local(R2, LocalOp::FqAdd { endpoint: E1 });
    assert!(queue_drains(&run.history, &run.queue_end(), true).holds());
    // A probe by a process that never listed the queue (the health monitor) drains nothing.
    let mut run = Run::new(Variant::Correct, NAMES);
    run.local(R1, LocalOp::FqAdd { endpoint: E1 });
    run.probe(HM, E1, true, 200);
    assert!(queue_drains(&run.history, &run.queue_end(), true).holds());
}

#[test]
fn a_probe_whose_answer_timed_out_saw_nothing() {
    let mut run = Run::new(Variant::Correct, NAMES);
    run.request(R1, E1, Observation::ServerError);
    run.local(R1, LocalOp::FqAdd { endpoint: E1 });
    run.local(FQR, LocalOp::FqFailed);
    run.local(FQR, LocalOp::BeginProbe { endpoint: E1 });
    // The endpoint answered 200 but the prober's timeout fired first.
    let op = StoreOp::Upstream(UpstreamOp {
        endpoint: E1,
        kind: CallKind::Probe { auth: false },
    });
    let answer = Reply::Upstream(UpstreamReply { status: 200 });
    run.push(FQR, HealthTag::Probe { endpoint: E1 }, op, answer, true);
    assert!(queue_drains(&run.history, &run.queue_end(), true).holds());
    assert!(endpoints_recover(&run.history, &run.table_end(), true).holds());
}

// ---------------------------------------------------------------------------------------------
// Key rotation (`HealthTable::rotate_key`): a new identity for the endpoint.

fn correct_table() -> HealthTable {
    HealthTable::new(Variant::Correct, HealthConfig::default(), &[E1, E2])
}

#[test]
fn a_key_rotation_clears_auth_failed_and_starts_a_new_count() {
    let mut t = correct_table();
    t.observe(
        E1,
        Observation::Unauthorized,
        Source::Request,
        Generation(0),
    );
    let before = t.get(E1).cloned().expect("configured");
    assert_eq!(
        (
            before.status,
            before.consecutive_failures,
            before.key_version
        ),
        (Status::AuthFailed, 3, 0)
    );
    t.rotate_key(E1);
    let after = t.get(E1).cloned().expect("configured");
    assert_eq!(
        (after.status, after.consecutive_failures, after.key_version),
        (Status::Unknown, 0, 1)
    );
    assert!(after.generation > before.generation);
    assert!(t.is_healthy(E1));
    // The count starts again: two timeouts leave the new key selectable, a third does not.
    let g = t.dispatch(E1);
    t.observe(E1, Observation::Timeout, Source::Request, g);
    t.observe(E1, Observation::Timeout, Source::Request, g);
    assert!(t.is_healthy(E1));
    t.observe(E1, Observation::Timeout, Source::Request, g);
    assert!(!t.is_healthy(E1));
    // Rotating an endpoint that is not configured changes nothing.
    let copy = t.clone();
    t.rotate_key(EndpointId(9));
    assert_eq!(t, copy);
}

#[test]
fn a_success_that_started_under_the_old_key_is_stale_after_a_rotation() {
    let mut t = correct_table();
    let old = t.dispatch(E1);
    t.rotate_key(E1);
    assert_eq!(
        t.observe(E1, Observation::Success, Source::Request, old),
        ObserveOutcome::Stale
    );
    assert_eq!(t.get(E1).map(|h| h.status), Some(Status::Unknown));
    let new = t.dispatch(E1);
    assert_eq!(
        t.observe(E1, Observation::Success, Source::Request, new),
        ObserveOutcome::Applied
    );
    assert_eq!(t.get(E1).map(|h| h.status), Some(Status::Healthy));
    // Two rotations are two new identities.
    t.rotate_key(E1);
    t.rotate_key(E1);
    assert_eq!(t.get(E1).map(|h| h.key_version), Some(3));
}

// ---------------------------------------------------------------------------------------------
// 429 and 5xx bump the generation too (RACES.md R-001-01, correct fix 2).

#[test]
fn every_failure_kind_makes_older_successes_stale_in_correct_only() {
    for failure in [
        Observation::RateLimited,
        Observation::ServerError,
        Observation::Timeout,
        Observation::Unauthorized,
    ] {
        for variant in Variant::ALL {
            let mut t = HealthTable::new(variant, HealthConfig::default(), &[E1, E2]);
            let old = t.dispatch(E1);
            let newer = t.dispatch(E1);
            t.observe(E1, failure, Source::Request, newer);
            let outcome = t.observe(E1, Observation::Success, Source::Probe, old);
            let expected = if variant == Variant::Correct {
                ObserveOutcome::Stale
            } else {
                ObserveOutcome::Applied
            };
            assert_eq!(outcome, expected, "{variant:?} after {failure:?}");
            let failures = t.get(E1).map(|h| h.consecutive_failures);
            if variant == Variant::Correct {
                assert_ne!(failures, Some(0), "{failure:?}: the count survives");
            } else {
                assert_eq!(failures, Some(0), "{variant:?}: last writer wins");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The failure queue's pieces that only Buggy and DocFix worlds reach.

#[test]
fn the_threaded_ports_act_half_counts_every_call() {
    // R-003-02's split check-then-act: both threads saw E1 absent, both insert and count.
    for variant in Variant::ALL {
        let mut q = FailureQueue::new(variant);
        assert!(!q.contains(E1));
        let first = q.insert_counted(E1);
        let second = q.insert_counted(E1);
        assert!(first.inserted && !second.inserted, "{variant:?}");
        assert_eq!((q.total_failed(), q.len()), (2, 1), "{variant:?}");
    }
}

#[test]
fn a_torn_queue_file_is_an_error_that_says_so() {
    let err = FailureQueue::from_json(Variant::Correct, "{\"failed_endpoints\":[\"E1\"")
        .expect_err("a torn file does not parse");
    let text = err.to_string();
    assert!(
        text.starts_with("the persisted failure queue does not parse: "),
        "{text}"
    );
    assert!(text.len() > "the persisted failure queue does not parse: ".len());
    let bad_name = FailureQueue::from_json(
        Variant::Correct,
        r#"{"failed_endpoints":["X1"],"stats":{"total_failed":1}}"#,
    )
    .expect_err("not an endpoint name");
    assert_eq!(
        bad_name.to_string(),
        "the persisted failure queue does not parse: bad endpoint name \"X1\""
    );
}
