//! The Redis linearizability checker on known histories: linearizable ones pass, known
//! non-linearizable ones (a write a restart erased, a stale read, a lost increment) are
//! flagged on exactly their keys, TTLs that may expire and spent bounds give "unknown".

use racelab_core::{
    Duration, History, KvOp, KvReply, OpId, OpRecord, ProcessId, Reply, ScriptName, SetCondition,
    StoreOp, Tag, TagKind, Timestamp,
};
use racelab_sim::explore::linear::{LINEAR_BOUND, ObjectVerdict, check_redis};

const KIND: TagKind = TagKind::new("redis");

/// An operation of process `p` invoked at `call` and answered `reply` at `ret` (`None`: the
/// client never learnt the outcome).
fn rec(p: u16, call: u64, ret: Option<u64>, op: KvOp, reply: KvReply) -> OpRecord {
    OpRecord {
        process: ProcessId(p),
        id: OpId(call * 100 + u64::from(p)),
        tag: Tag::plain(KIND),
        op: StoreOp::Kv(op),
        invoked_at: Timestamp::from_ms(call),
        applied_at: ret.map(Timestamp::from_ms),
        durable_at: ret.map(Timestamp::from_ms),
        lost_at: None,
        result: ret.map(|_| Reply::Kv(reply)),
        completed_at: ret.map(Timestamp::from_ms),
        timed_out: false,
    }
}

fn history(ops: Vec<OpRecord>) -> History {
    History {
        ops,
        ..History::default()
    }
}

fn set(key: &str, value: &str) -> KvOp {
    KvOp::Set {
        key: key.into(),
        value: value.into(),
        condition: SetCondition::Always,
        ttl: None,
    }
}

fn set_nx(key: &str, value: &str, ttl: Option<u64>) -> KvOp {
    KvOp::Set {
        key: key.into(),
        value: value.into(),
        condition: SetCondition::IfAbsent,
        ttl: ttl.map(Duration::from_ms),
    }
}

fn get(key: &str) -> KvOp {
    KvOp::Get { key: key.into() }
}

fn bulk(v: &str) -> KvReply {
    KvReply::Bulk(v.into())
}

#[test]
fn overlapping_writes_and_reads_are_linearizable() {
    let h = history(vec![
        rec(1, 0, Some(10), set("a", "1"), KvReply::Ok),
        rec(2, 5, Some(15), set("a", "2"), KvReply::Ok),
        rec(3, 12, Some(20), get("a"), bulk("1")),
        rec(3, 21, Some(22), get("a"), bulk("1")),
        rec(
            1,
            30,
            Some(31),
            KvOp::IncrBy {
                key: "n".into(),
                delta: 5,
            },
            KvReply::Int(5),
        ),
        rec(
            2,
            30,
            Some(31),
            KvOp::IncrBy {
                key: "n".into(),
                delta: 2,
            },
            KvReply::Int(7),
        ),
    ]);
    let report = check_redis(&h, LINEAR_BOUND);
    assert_eq!(report.counts(), (2, 0, 0), "{report:?}");
}

#[test]
fn a_write_a_restart_erased_is_flagged_on_its_key_only() {
    // The acknowledged SET NX of `lock` is gone after a restart: a second owner gets it.
    let h = history(vec![
        rec(1, 0, Some(2), set_nx("lock", "a", None), KvReply::Ok),
        rec(2, 10, Some(12), set_nx("lock", "b", None), KvReply::Ok),
        rec(1, 0, Some(2), set("other", "x"), KvReply::Ok),
        rec(2, 10, Some(12), get("other"), bulk("x")),
    ]);
    let report = check_redis(&h, LINEAR_BOUND);
    assert_eq!(report.violating_keys(), vec!["lock".to_string()]);
    let bad = report.violations().next().expect("one violation");
    let ObjectVerdict::NotLinearizable { prefix, stuck } = &bad.verdict else {
        unreachable!()
    };
    assert_eq!(
        prefix,
        &vec![0],
        "the first owner's write is the consistent prefix"
    );
    assert_eq!(*stuck, 1, "the second owner's SET NX cannot follow it");
}

#[test]
fn a_lost_increment_is_flagged() {
    // Two increments of 1 both answered 1: one of them was lost.
    let incr = || KvOp::IncrBy {
        key: "n".into(),
        delta: 1,
    };
    let h = history(vec![
        rec(1, 0, Some(5), incr(), KvReply::Int(1)),
        rec(2, 1, Some(6), incr(), KvReply::Int(1)),
    ]);
    assert_eq!(check_redis(&h, LINEAR_BOUND).violating_keys(), vec!["n"]);
}

#[test]
fn an_unanswered_write_may_or_may_not_have_applied() {
    for seen in [KvReply::Nil, bulk("1")] {
        let h = history(vec![
            rec(1, 0, None, set("a", "1"), KvReply::Ok),
            rec(2, 50, Some(51), get("a"), seen),
        ]);
        assert_eq!(check_redis(&h, LINEAR_BOUND).counts(), (1, 0, 0));
    }
}

#[test]
fn scripts_tie_their_keys_into_one_object_and_run_as_redis_runs_them() {
    // compare_and_delete by a non-owner leaves the lock; a read after it must still see it.
    let cad = |owner: &str| KvOp::Script {
        script: ScriptName::CompareAndDelete,
        keys: vec!["lock".into()],
        args: vec![owner.into()],
    };
    let good = history(vec![
        rec(1, 0, Some(1), set("lock", "a"), KvReply::Ok),
        rec(2, 2, Some(3), cad("b"), KvReply::Int(0)),
        rec(2, 4, Some(5), get("lock"), bulk("a")),
    ]);
    assert_eq!(check_redis(&good, LINEAR_BOUND).counts(), (1, 0, 0));
    let bad = history(vec![
        rec(1, 0, Some(1), set("lock", "a"), KvReply::Ok),
        rec(2, 2, Some(3), cad("b"), KvReply::Int(1)),
    ]);
    assert_eq!(
        check_redis(&bad, LINEAR_BOUND).violating_keys(),
        vec!["lock"]
    );
}

#[test]
fn a_ttl_may_have_run_out_from_its_earliest_instant() {
    // The lock's 100 ms TTL has surely run out by 500: a second owner may take it.
    let h = history(vec![
        rec(1, 0, Some(1), set_nx("lock", "a", Some(100)), KvReply::Ok),
        rec(
            2,
            500,
            Some(501),
            set_nx("lock", "b", Some(100)),
            KvReply::Ok,
        ),
        rec(3, 502, Some(503), get("lock"), bulk("b")),
    ]);
    assert_eq!(check_redis(&h, LINEAR_BOUND).counts(), (1, 0, 0));
    // Around the expiry either answer is possible (the SET took effect somewhere in 0..=40).
    for seen in [KvReply::Nil, bulk("a")] {
        let h = history(vec![
            rec(1, 0, Some(40), set_nx("lock", "a", Some(100)), KvReply::Ok),
            rec(2, 90, Some(120), get("lock"), seen),
        ]);
        assert_eq!(check_redis(&h, LINEAR_BOUND).counts(), (1, 0, 0));
    }
    // But not before the earliest expiry: the SET NX at 50 cannot succeed.
    let h = history(vec![
        rec(1, 0, Some(1), set_nx("lock", "a", Some(100)), KvReply::Ok),
        rec(2, 50, Some(51), set_nx("lock", "b", Some(100)), KvReply::Ok),
    ]);
    assert_eq!(check_redis(&h, LINEAR_BOUND).violating_keys(), vec!["lock"]);
    // Nor once one read saw it expired: it cannot come back.
    let h = history(vec![
        rec(1, 0, Some(1), set_nx("lock", "a", Some(100)), KvReply::Ok),
        rec(2, 200, Some(201), get("lock"), KvReply::Nil),
        rec(2, 202, Some(203), get("lock"), bulk("a")),
    ]);
    assert_eq!(check_redis(&h, LINEAR_BOUND).violating_keys(), vec!["lock"]);
    // A TTL that outlives the history: the second SET NX is impossible (a restart erased the
    // first).
    let h = history(vec![
        rec(
            1,
            0,
            Some(1),
            set_nx("lock", "a", Some(60_000)),
            KvReply::Ok,
        ),
        rec(
            2,
            500,
            Some(501),
            set_nx("lock", "b", Some(60_000)),
            KvReply::Ok,
        ),
    ]);
    assert_eq!(check_redis(&h, LINEAR_BOUND).violating_keys(), vec!["lock"]);
}

#[test]
fn a_spent_bound_is_unknown() {
    let mut ops: Vec<OpRecord> = (0..10)
        .map(|v| rec(v, 0, Some(100), set("a", &v.to_string()), KvReply::Ok))
        .collect();
    ops.push(rec(20, 200, Some(201), get("a"), bulk("none of them")));
    let report = check_redis(&history(ops), 20);
    assert!(matches!(
        report.objects[0].verdict,
        ObjectVerdict::Unknown(_)
    ));
}

#[test]
fn smembers_compare_as_sets() {
    let h = history(vec![
        rec(
            1,
            0,
            Some(1),
            KvOp::SAdd {
                key: "s".into(),
                members: vec!["x".into(), "y".into()],
            },
            KvReply::Int(2),
        ),
        rec(
            1,
            2,
            Some(3),
            KvOp::SMembers { key: "s".into() },
            KvReply::Array(vec![Some("y".into()), Some("x".into())]),
        ),
    ]);
    assert_eq!(check_redis(&h, LINEAR_BOUND).counts(), (1, 0, 0));
}

#[test]
fn a_script_that_reaches_beyond_its_keys_leaves_the_history_undecided() {
    let h = history(vec![
        rec(1, 0, Some(1), set("a", "1"), KvReply::Ok),
        rec(
            2,
            2,
            Some(3),
            KvOp::Script {
                script: ScriptName::SchedPoll,
                keys: vec!["N1".into()],
                args: vec!["1".into(), "1".into()],
            },
            KvReply::Array(Vec::new()),
        ),
    ]);
    let report = check_redis(&h, LINEAR_BOUND);
    assert_eq!(report.objects.len(), 1);
    let ObjectVerdict::Unknown(why) = &report.objects[0].verdict else {
        panic!("{report:?}");
    };
    assert!(why.contains("sched-poll") || why.contains("poll"), "{why}");
}
