//! The breaker family's oracles (R-000-10) are fed known-bad histories and must flag them,
//! naming the property, and known-good ones that they must accept.

use racelab_core::breaker::{
    BREAKER_OPENED, BreakerNote, BreakerTag, C1, C2, C3, C4, FAIL_WINDOW, FORCED_OPEN,
    OPEN_WINS_MERGE, OPENED_WHILE_REDIS_DOWN, PROBE_GAP, Probe, Rejection, SERVED_THROUGH_OUTAGE,
    THRESHOLD, TOKEN_REFUSED, counter_exact, coverage, fails_key, no_rejection_without_failure,
    no_traffic_after_open, one_probe_per_cooldown, probe_key,
};
use racelab_core::{
    CallKind, Duration, EndpointId, Fault, FaultRecord, History, KvOp, KvReply, Note, NoteRecord,
    OpId, OpRecord, ProcessId, Reply, ScriptName, SetCondition, StoreOp, Tag, Timestamp,
    UpstreamOp, UpstreamReply,
};

const G1: ProcessId = ProcessId(0);
const G2: ProcessId = ProcessId(1);
const G3: ProcessId = ProcessId(2);
const U: EndpointId = EndpointId(1);
const U2: EndpointId = EndpointId(2);

fn history() -> History {
    History {
        process_names: vec![(G1, "G1".into()), (G2, "G2".into()), (G3, "G3".into())],
        ..History::default()
    }
}

fn instance(p: ProcessId) -> u32 {
    u32::from(p.0) + 1
}

fn push(h: &mut History, p: ProcessId, tag: BreakerTag, op: StoreOp, result: Reply, at: u64) {
    let at = Timestamp::from_ms(at);
    let n = h.ops.len();
    h.ops.push(OpRecord {
        process: p,
        id: OpId(n as u64 + 1),
        tag: Tag::new(tag),
        op,
        invoked_at: at,
        applied_at: Some(at),
        durable_at: Some(at),
        lost_at: None,
        result: Some(result),
        completed_at: Some(at),
        timed_out: false,
    });
}

/// An upstream call by `p` to `e`, started at `at` and answered `status` 5 ms later.
fn call(h: &mut History, p: ProcessId, e: EndpointId, probe: Probe, status: u16, at: u64) {
    let tag = BreakerTag::Call {
        instance: instance(p),
        endpoint: e,
        probe,
    };
    let op = StoreOp::Upstream(UpstreamOp {
        endpoint: e,
        kind: CallKind::Request {
            stream: Duration::from_ms(5),
        },
    });
    push(h, p, tag, op, Reply::Upstream(UpstreamReply { status }), at);
    let last = h.ops.last_mut().expect("just pushed");
    last.completed_at = Some(Timestamp::from_ms(at + 5));
}

fn token(h: &mut History, p: ProcessId, tok: &str, reply: KvReply, at: u64) {
    let tag = BreakerTag::ProbeToken {
        instance: instance(p),
        endpoint: U,
        token: tok.to_string(),
    };
    let op = StoreOp::Kv(KvOp::Set {
        key: probe_key(U),
        value: tok.to_string(),
        condition: SetCondition::IfAbsent,
        ttl: Some(Duration::from_ms(1_000)),
    });
    push(h, p, tag, op, Reply::Kv(reply), at);
}

fn reject(h: &mut History, p: ProcessId, e: EndpointId, why: Rejection, at: u64) {
    h.notes.push(NoteRecord {
        at: Timestamp::from_ms(at),
        process: p,
        note: Note::new(BreakerNote::Rejected {
            instance: instance(p),
            endpoint: e,
            why,
        }),
    });
}

/// A counter update by `p` leaving `value` at `at`: `SET` (read-modify-write) or the
/// `incr_window` script (which opens the window when it answers 1).
fn count(h: &mut History, p: ProcessId, atomic: bool, value: i64, at: u64) {
    let key = fails_key(U);
    let (op, reply) = if atomic {
        (
            KvOp::Script {
                script: ScriptName::IncrWindow,
                keys: vec![key],
                args: vec![FAIL_WINDOW.as_ms().to_string()],
            },
            KvReply::Int(value),
        )
    } else {
        (
            KvOp::Set {
                key,
                value: value.to_string(),
                condition: SetCondition::Always,
                ttl: None,
            },
            KvReply::Ok,
        )
    };
    let tag = BreakerTag::FailCount {
        instance: instance(p),
        endpoint: U,
    };
    push(h, p, tag, StoreOp::Kv(op), Reply::Kv(reply), at);
}

/// A bare `INCRBY` by `p` leaving `value` at `at`: a count that sets no window.
fn count_without_window(h: &mut History, p: ProcessId, value: i64, at: u64) {
    let tag = BreakerTag::FailCount {
        instance: instance(p),
        endpoint: U,
    };
    let op = KvOp::IncrBy {
        key: fails_key(U),
        delta: 1,
    };
    push(
        h,
        p,
        tag,
        StoreOp::Kv(op),
        Reply::Kv(KvReply::Int(value)),
        at,
    );
}

// ---------------------------------------------------------------------------------------------
// C1

/// U fails three times (the breaker is OPEN), then G1, partitioned and on its stale CLOSED
/// copy, keeps sending.
#[test]
fn c1_flags_an_instance_that_keeps_calling_an_open_upstream() {
    let mut h = history();
    for (i, p) in [G2, G3, G2].into_iter().enumerate() {
        call(&mut h, p, U, Probe::No, 503, i as u64 * 10);
    }
    for k in 0..=THRESHOLD as u64 {
        call(&mut h, G1, U, Probe::No, 503, 100 + k * 50);
    }
    let v = no_traffic_after_open(&h);
    assert!(v.broke(C1.name), "{}", v.explanation());
    assert_eq!(v.sometimes.get(BREAKER_OPENED.name), Some(&1));
}

/// Each instance may spend THRESHOLD requests of its own; probes and a success's new episode
/// do not count; a crash starts a new incarnation with a fresh budget.
#[test]
fn c1_accepts_the_local_breakers_budget_probes_and_recovery() {
    let mut h = history();
    for k in 0..THRESHOLD as u64 {
        call(&mut h, G1, U, Probe::No, 503, k * 10);
    }
    for k in 0..THRESHOLD as u64 {
        call(&mut h, G2, U, Probe::No, 503, 100 + k * 10);
    }
    call(&mut h, G3, U, Probe::Token("G3.0.1".into()), 503, 1_200);
    call(&mut h, G2, U, Probe::Local, 503, 1_300);
    // G3 crashes and its next incarnation spends its own budget.
    for k in 0..THRESHOLD as u64 {
        call(&mut h, G3, U, Probe::No, 503, 1_400 + k * 10);
    }
    h.faults.push(FaultRecord {
        at: Timestamp::from_ms(1_450),
        fault: Fault::Crash { process: G3 },
    });
    for k in 0..THRESHOLD as u64 {
        call(&mut h, G3, U, Probe::No, 503, 1_500 + k * 10);
    }
    // U answers: a new episode starts from zero.
    call(&mut h, G1, U, Probe::Token("G1.0.1".into()), 200, 2_500);
    for k in 0..THRESHOLD as u64 {
        call(&mut h, G1, U, Probe::No, 200, 2_600 + k * 10);
    }
    let v = no_traffic_after_open(&h);
    assert!(v.holds(), "{}", v.explanation());
}

// ---------------------------------------------------------------------------------------------
// C2

/// The half-open stampede: two instances send trial requests within milliseconds.
#[test]
fn c2_flags_two_trial_requests_at_once() {
    let mut h = history();
    call(&mut h, G1, U, Probe::Trial, 503, 1_500);
    call(&mut h, G2, U, Probe::Trial, 503, 1_502);
    let v = one_probe_per_cooldown(&h);
    assert!(v.broke(C2.name), "{}", v.explanation());
}

/// A probe claiming to be an instance's own, while its token request was answered (refused),
/// counts cluster-wide; two token probes close together are flagged unless the store forgot
/// the first token.
#[test]
fn c2_flags_a_local_probe_without_an_outage_and_excuses_only_forgotten_tokens() {
    let mut h = history();
    token(&mut h, G1, "G1.0.1", KvReply::Ok, 1_000);
    call(&mut h, G1, U, Probe::Token("G1.0.1".into()), 503, 1_001);
    token(&mut h, G2, "G2.0.1", KvReply::Nil, 1_010);
    call(&mut h, G2, U, Probe::Local, 503, 1_011);
    let v = one_probe_per_cooldown(&h);
    assert!(v.broke(C2.name), "{}", v.explanation());

    let mut h = history();
    token(&mut h, G1, "G1.0.1", KvReply::Ok, 1_000);
    call(&mut h, G1, U, Probe::Token("G1.0.1".into()), 503, 1_001);
    token(&mut h, G2, "G2.0.1", KvReply::Ok, 1_100);
    call(&mut h, G2, U, Probe::Token("G2.0.1".into()), 503, 1_101);
    let v = one_probe_per_cooldown(&h);
    assert!(v.broke(C2.name), "{}", v.explanation());
    // The same, with G1's grant lost by a failover: the store forgot the token.
    h.ops[0].lost_at = Some(Timestamp::from_ms(1_050));
    let v = one_probe_per_cooldown(&h);
    assert!(v.holds(), "{}", v.explanation());
}

/// The forgotten token may be the later probe's: G2's grant is lost by a failover, G1 is
/// granted the token after it and probes first, G2 probes on its lost token a moment later.
/// The store forgot G2's token, so the pair is excused; with nothing lost it is flagged.
#[test]
fn c2_excuses_a_pair_whose_earlier_grant_was_forgotten_whoever_probes_first() {
    let build = |lost: bool| {
        let mut h = history();
        token(&mut h, G2, "G2.0.1", KvReply::Ok, 1_000);
        if lost {
            h.ops[0].lost_at = Some(Timestamp::from_ms(1_000));
        }
        token(&mut h, G1, "G1.0.1", KvReply::Ok, 1_002);
        call(&mut h, G1, U, Probe::Token("G1.0.1".into()), 200, 1_015);
        call(&mut h, G2, U, Probe::Token("G2.0.1".into()), 200, 1_019);
        h
    };
    let v = one_probe_per_cooldown(&build(true));
    assert!(v.holds(), "{}", v.explanation());
    let v = one_probe_per_cooldown(&build(false));
    assert!(v.broke(C2.name), "{}", v.explanation());
}

/// One token probe per cool-down, and an instance cut off from Redis probing on its own.
#[test]
fn c2_accepts_spaced_token_probes_and_an_outage_probe() {
    let mut h = history();
    token(&mut h, G1, "G1.0.1", KvReply::Ok, 1_000);
    call(&mut h, G1, U, Probe::Token("G1.0.1".into()), 503, 1_001);
    token(&mut h, G2, "G2.0.1", KvReply::Nil, 1_200);
    token(
        &mut h,
        G3,
        "G3.0.1",
        KvReply::Ok,
        1_000 + PROBE_GAP.as_ms() + 500,
    );
    call(
        &mut h,
        G3,
        U,
        Probe::Token("G3.0.1".into()),
        503,
        1_001 + PROBE_GAP.as_ms() + 500,
    );
    token(&mut h, G2, "G2.0.2", KvReply::Nil, 1_300);
    h.ops.last_mut().expect("pushed").timed_out = true;
    call(&mut h, G2, U, Probe::Local, 503, 1_500);
    let v = one_probe_per_cooldown(&h);
    assert!(v.holds(), "{}", v.explanation());
    let c = coverage(&h);
    assert_eq!(c.sometimes.get(TOKEN_REFUSED.name), Some(&1));
}

// ---------------------------------------------------------------------------------------------
// C3

/// The fail-closed fix rejects requests to U', which never failed.
#[test]
fn c3_flags_rejecting_a_healthy_upstream() {
    let mut h = history();
    call(&mut h, G1, U2, Probe::No, 200, 0);
    reject(&mut h, G2, U2, Rejection::StoreUnavailable, 1_000);
    let v = no_rejection_without_failure(&h);
    assert!(v.broke(C3.name), "{}", v.explanation());

    // A failure long before does not excuse it either.
    let mut h = history();
    call(&mut h, G1, U2, Probe::No, 503, 0);
    reject(&mut h, G2, U2, Rejection::Open, 10_000);
    let v = no_rejection_without_failure(&h);
    assert!(v.broke(C3.name), "{}", v.explanation());
}

/// Rejections of an upstream that just failed are the breaker doing its work.
#[test]
fn c3_accepts_rejecting_a_failing_upstream() {
    let mut h = history();
    call(&mut h, G1, U, Probe::No, 503, 0);
    reject(&mut h, G2, U, Rejection::Open, 500);
    reject(&mut h, G3, U, Rejection::ProbeTaken, 1_500);
    let v = no_rejection_without_failure(&h);
    assert!(v.holds(), "{}", v.explanation());
}

/// A "probe taken" rejection is excused by the instance's own token request that Redis
/// refused (a token was held), even when a failover lost that token before the rejection
/// was noted; without the refusal, the lost token excuses nothing.
#[test]
fn c3_accepts_a_rejection_on_a_refused_token_whose_holder_a_failover_lost() {
    let mut h = history();
    call(&mut h, G1, U, Probe::No, 503, 0);
    token(&mut h, G2, "G2.0.1", KvReply::Ok, 5_000);
    h.ops.last_mut().expect("pushed").lost_at = Some(Timestamp::from_ms(5_600));
    token(&mut h, G1, "G1.0.1", KvReply::Nil, 5_600);
    reject(&mut h, G1, U, Rejection::ProbeTaken, 5_601);
    let v = no_rejection_without_failure(&h);
    assert!(v.holds(), "{}", v.explanation());

    // Granted instead (used too late): the lost token and the old failure excuse nothing.
    let mut h = history();
    call(&mut h, G1, U, Probe::No, 503, 0);
    token(&mut h, G2, "G2.0.1", KvReply::Ok, 5_000);
    h.ops.last_mut().expect("pushed").lost_at = Some(Timestamp::from_ms(5_600));
    token(&mut h, G1, "G1.0.1", KvReply::Ok, 5_600);
    h.ops.last_mut().expect("pushed").lost_at = Some(Timestamp::from_ms(5_600));
    reject(&mut h, G1, U, Rejection::ProbeTaken, 5_601);
    let v = no_rejection_without_failure(&h);
    assert!(v.broke(C3.name), "{}", v.explanation());

    // Another instance's refused request does not excuse this one's rejection.
    let mut h = history();
    call(&mut h, G1, U, Probe::No, 503, 0);
    token(&mut h, G2, "G2.0.1", KvReply::Nil, 5_600);
    reject(&mut h, G1, U, Rejection::ProbeTaken, 5_601);
    let v = no_rejection_without_failure(&h);
    assert!(v.broke(C3.name), "{}", v.explanation());
}

// ---------------------------------------------------------------------------------------------
// C4

/// Two read-modify-writes both write 1: one failure lost.
#[test]
fn c4_flags_a_lost_update() {
    let mut h = history();
    count(&mut h, G1, false, 1, 10);
    count(&mut h, G2, false, 1, 11);
    let v = counter_exact(&h);
    assert!(v.broke(C4.name), "{}", v.explanation());
}

/// `incr_window`'s answers count up; the window its first count opened ending, a reset and
/// a restart start again at 1; a write a failover lost is not counted.
#[test]
fn c4_accepts_atomic_counts_resets_expiry_and_lost_writes() {
    let mut h = history();
    count(&mut h, G1, true, 1, 10);
    count(&mut h, G2, true, 2, 20);
    // The window runs out.
    count(&mut h, G3, true, 1, 10 + FAIL_WINDOW.as_ms() + 1);
    // A reset.
    push(
        &mut h,
        G1,
        BreakerTag::FailReset {
            instance: 1,
            endpoint: U,
        },
        StoreOp::Kv(KvOp::Del { key: fails_key(U) }),
        Reply::Kv(KvReply::Int(1)),
        20_000,
    );
    count(&mut h, G1, true, 1, 20_010);
    // A lost write, then the count goes on from the replica's value.
    count(&mut h, G2, true, 2, 20_020);
    h.ops.last_mut().expect("pushed").lost_at = Some(Timestamp::from_ms(20_030));
    count(&mut h, G2, true, 2, 20_040);
    // A restart empties it.
    h.faults.push(FaultRecord {
        at: Timestamp::from_ms(20_050),
        fault: Fault::RedisRestart,
    });
    count(&mut h, G3, true, 1, 20_060);
    let v = counter_exact(&h);
    assert!(v.holds(), "{}", v.explanation());

    // Without the window (a bare INCRBY) the restart at 1 is a lost count.
    let mut h = history();
    count_without_window(&mut h, G1, 1, 10);
    count(&mut h, G2, true, 2, 20);
    count(&mut h, G3, true, 1, 10 + FAIL_WINDOW.as_ms() + 1);
    let v = counter_exact(&h);
    assert!(v.broke(C4.name), "{}", v.explanation());

    // Nor does the window outlast its length: a count of 1 before it ends is a lost count.
    let mut h = history();
    count(&mut h, G1, true, 1, 10);
    count(&mut h, G2, true, 2, 20);
    count(&mut h, G3, true, 1, 10 + FAIL_WINDOW.as_ms() - 1);
    let v = counter_exact(&h);
    assert!(v.broke(C4.name), "{}", v.explanation());
}

// ---------------------------------------------------------------------------------------------
// Coverage

#[test]
fn coverage_counts_the_protections() {
    let mut h = history();
    for (p, note) in [
        (
            G1,
            BreakerNote::OpenedLocally {
                instance: 1,
                endpoint: U,
                redis_down: true,
            },
        ),
        (
            G2,
            BreakerNote::ForcedOpen {
                instance: 2,
                endpoint: U,
            },
        ),
    ] {
        h.notes.push(NoteRecord {
            at: Timestamp::from_ms(5),
            process: p,
            note: Note::new(note),
        });
    }
    push(
        &mut h,
        G1,
        BreakerTag::OpenWrite {
            instance: 1,
            endpoint: U,
            merge: true,
        },
        StoreOp::Kv(KvOp::Set {
            key: "cb:E1:open".into(),
            value: "5".into(),
            condition: SetCondition::Always,
            ttl: Some(Duration::from_ms(500)),
        }),
        Reply::Kv(KvReply::Ok),
        600,
    );
    push(
        &mut h,
        G3,
        BreakerTag::OpenRead {
            instance: 3,
            endpoint: U2,
        },
        StoreOp::Kv(KvOp::Get {
            key: "cb:E2:open".into(),
        }),
        Reply::Timeout,
        700,
    );
    h.ops.last_mut().expect("pushed").timed_out = true;
    call(&mut h, G3, U2, Probe::No, 200, 900);
    let c = coverage(&h);
    for p in [
        OPENED_WHILE_REDIS_DOWN,
        FORCED_OPEN,
        OPEN_WINS_MERGE,
        SERVED_THROUGH_OUTAGE,
    ] {
        assert_eq!(c.sometimes.get(p.name), Some(&1), "{}", p.name);
    }
}

/// Updates applied at one instant are judged in increasing value (the net world lists them
/// in invocation order); a restart at the instant of an update may come before it.
#[test]
fn c4_takes_one_instants_updates_in_any_order() {
    let mut h = history();
    count(&mut h, G1, true, 1, 10);
    count(&mut h, G2, true, 3, 20);
    count(&mut h, G3, true, 2, 20);
    h.faults.push(FaultRecord {
        at: Timestamp::from_ms(30),
        fault: Fault::RedisRestart,
    });
    count(&mut h, G1, true, 1, 30);
    count(&mut h, G2, true, 2, 40);
    let v = counter_exact(&h);
    assert!(v.holds(), "{}", v.explanation());

    // Two read-modify-writes at one instant leaving the same value still lose one.
    let mut h = history();
    count(&mut h, G1, false, 1, 10);
    count(&mut h, G2, false, 2, 20);
    count(&mut h, G3, false, 2, 20);
    let v = counter_exact(&h);
    assert!(v.broke(C4.name), "{}", v.explanation());
}
