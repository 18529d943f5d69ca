//! The quota family's oracles, each fed known-bad end states and histories that it must flag,
//! and known-good ones it must accept.

use std::collections::BTreeMap;

use racelab_core::quota::oracle::{
    BucketEnd, QuotaEnd, ReservationEnd, counted_once, coverage, reservations_balance,
    within_limits,
};
use racelab_core::quota::{Counter, QUOTA_RESERVATIONS, QuotaTag};
use racelab_core::{
    Cond, Duration, History, KeyedRow, OpId, OpRecord, ProcessId, Reply, RequestId, SqlOp,
    SqlReply, SqlStmt, StoreOp, Tag, Timestamp,
};

const A: ProcessId = ProcessId(0);
const S: ProcessId = ProcessId(1);

fn history() -> History {
    History {
        process_names: vec![(A, "R1".into()), (S, "S".into())],
        ..History::default()
    }
}

fn end(bucket: (i64, i64, i64), initial: i64, ledger: &[(&str, i64)]) -> QuotaEnd {
    let (used, reserved, limit) = bucket;
    QuotaEnd {
        initial_used: BTreeMap::from([("k1".to_string(), initial)]),
        buckets: BTreeMap::from([(
            "k1".to_string(),
            BucketEnd {
                used,
                reserved,
                limit,
            },
        )]),
        ledger: ledger
            .iter()
            .map(|(r, u)| (r.to_string(), ("k1".to_string(), *u)))
            .collect(),
        reservations: BTreeMap::new(),
        settled: true,
    }
}

/// A statement on the reservation row `r1`, applied at `at_ms`, answered with `rows` rows,
/// durable or not.
fn op(process: ProcessId, tag: QuotaTag, at_ms: u64, rows: usize, durable: bool) -> OpRecord {
    let at = Timestamp::from_ms(at_ms);
    let stmt = SqlStmt::Update {
        table: QUOTA_RESERVATIONS,
        key: "r1".into(),
        guard: Cond::True,
        set: vec![],
    };
    let row = KeyedRow {
        key: "r1".into(),
        columns: Default::default(),
    };
    OpRecord {
        process,
        id: OpId(at_ms),
        tag: Tag::new(tag),
        op: StoreOp::Sql(SqlOp::exec(stmt)),
        invoked_at: at,
        applied_at: Some(at),
        durable_at: durable.then_some(at),
        lost_at: None,
        result: Some(Reply::Sql(SqlReply::Rows(vec![row; rows]))),
        completed_at: Some(at),
        timed_out: false,
    }
}

#[test]
fn within_limits_flags_an_overshoot_of_the_ledger_and_of_the_counters() {
    // R-000-02's overshoot: 8 before, two charges of 2, limit 10.
    let bad = end((12, 0, 10), 8, &[("r1", 2), ("r2", 2)]);
    let v = within_limits(&bad);
    assert_eq!(v.broken(), ["I-LIMIT"]);
    assert_eq!(v.violations.len(), 2, "{}", v.explanation());
    assert!(v.explanation().contains("over its limit 10"));
    // Counters alone: used + reserved over the limit.
    let bad = end((6, 5, 10), 0, &[("r1", 6)]);
    assert_eq!(within_limits(&bad).broken(), ["I-LIMIT"]);
    // A negative counter (a double release).
    let bad = end((0, -3, 10), 0, &[]);
    assert_eq!(within_limits(&bad).broken(), ["I-LIMIT"]);
    let good = end((10, 0, 10), 8, &[("r1", 2)]);
    assert!(within_limits(&good).holds());
}

#[test]
fn counted_once_flags_a_double_count_and_a_lost_count() {
    // R-000-05's Buggy: one unit counted twice.
    let bad = end((2, 0, 100), 0, &[("r1", 1)]);
    let v = counted_once(&bad);
    assert_eq!(v.broken(), ["I-COUNT"]);
    assert!(v.explanation().contains("(+1)"), "{}", v.explanation());
    // R-000-02's Buggy: charges never reach budget_used.
    let bad = end((0, 0, 10), 0, &[("r1", 4), ("r2", 4)]);
    assert_eq!(counted_once(&bad).broken(), ["I-COUNT"]);
    // A charge counted in another bucket than the one it was admitted against.
    let mut bad = end((0, 0, 10), 0, &[]);
    bad.ledger.insert("r1".into(), ("k1:d0".into(), 1));
    bad.buckets.insert(
        "k1:d1".into(),
        BucketEnd {
            used: 1,
            reserved: 0,
            limit: 10,
        },
    );
    bad.buckets.insert("k1:d0".into(), BucketEnd::default());
    assert_eq!(counted_once(&bad).violations.len(), 2);
    assert!(counted_once(&end((4, 0, 10), 0, &[("r1", 4)])).holds());
}

#[test]
fn reservations_balance_flags_a_leak_a_double_resolution_and_an_open_hold() {
    let open = |status: &str| ReservationEnd {
        bucket: "k1".into(),
        est: 3,
        status: status.into(),
    };
    // reserved still counts a reservation that was voided: a leak.
    let mut bad = end((0, 3, 10), 0, &[]);
    bad.reservations.insert("r1".into(), open("voided"));
    let v = reservations_balance(&history(), &bad);
    assert_eq!(v.broken(), ["I-RESERVE"]);
    // A reservation settled by R1 and voided by the sweeper: resolved twice.
    let mut h = history();
    let request = RequestId(1);
    let settle = QuotaTag::Settle {
        request,
        bucket: "k1".into(),
    };
    h.ops.push(op(A, settle, 10, 1, true));
    h.ops.push(op(S, QuotaTag::Void { request }, 20, 1, true));
    let mut good_counts = end((3, 0, 10), 0, &[("r1", 3)]);
    good_counts
        .reservations
        .insert("r1".into(), open("settled"));
    let v = reservations_balance(&h, &good_counts);
    assert_eq!(v.broken(), ["I-RESERVE"]);
    assert_eq!(v.violations[0].ops, vec![0, 1]);
    assert!(
        v.explanation().contains("resolved 2 times"),
        "{}",
        v.explanation()
    );
    // The sweeper's refused void (no row) or a rolled-back one (not durable) is no resolution.
    let mut h = history();
    h.ops.push(op(
        A,
        QuotaTag::Settle {
            request,
            bucket: "k1".into(),
        },
        10,
        1,
        true,
    ));
    h.ops.push(op(S, QuotaTag::Void { request }, 20, 0, true));
    h.ops.push(op(S, QuotaTag::Void { request }, 30, 1, false));
    assert!(reservations_balance(&h, &good_counts).holds());
    // A settled run that leaves a reservation open.
    let mut bad = end((0, 3, 10), 0, &[]);
    bad.reservations.insert("r1".into(), open("open"));
    let v = reservations_balance(&history(), &bad);
    assert_eq!(v.broken(), ["reservations-resolve"]);
    bad.settled = false;
    assert!(reservations_balance(&history(), &bad).holds());
}

#[test]
fn coverage_counts_refusals_and_a_straddled_day() {
    let day = Duration::from_ms(1_000);
    let request = RequestId(1);
    let mut h = history();
    let reserve = QuotaTag::Reserve {
        request,
        bucket: "k1:d0".into(),
    };
    h.ops.push(op(A, reserve.clone(), 900, 1, true));
    h.ops
        .push(op(A, QuotaTag::Ledger { request }, 1_200, 1, true));
    let other = RequestId(2);
    let refused = QuotaTag::Reserve {
        request: other,
        bucket: "k1:d0".into(),
    };
    h.ops.push(op(A, refused, 950, 0, true));
    let v = coverage(
        &h,
        &QuotaEnd::default(),
        Counter::Daily {
            day,
            from: Duration::ZERO,
        },
    );
    assert_eq!(v.sometimes.get("bucket-straddled"), Some(&1));
    assert_eq!(v.sometimes.get("reservation-refused"), Some(&1));
    // The same request billed within its day straddles nothing.
    let mut h = history();
    h.ops.push(op(A, reserve, 100, 1, true));
    h.ops
        .push(op(A, QuotaTag::Ledger { request }, 400, 1, true));
    let v = coverage(
        &h,
        &QuotaEnd::default(),
        Counter::Daily {
            day,
            from: Duration::ZERO,
        },
    );
    assert_eq!(v.sometimes.get("bucket-straddled"), None);
}

// ---------------------------------------------------------------------------------------------
// R-000-04: the mirror oracles

use racelab_core::quota::oracle::{
    I_Q3, admitted_within_balance, mirror_converges, mirror_coverage, mirror_monotone,
};
use racelab_core::quota::{QUOTA_BALANCE, mirror_key};
use racelab_core::{
    CallKind, EndpointId, Fault, FaultRecord, KvOp, KvReply, KvView, ScriptName, UpstreamOp,
    UpstreamReply, Value,
};

fn record(process: ProcessId, tag: QuotaTag, op: StoreOp, at_ms: u64, result: Reply) -> OpRecord {
    let at = Timestamp::from_ms(at_ms);
    OpRecord {
        process,
        id: OpId(at_ms),
        tag: Tag::new(tag),
        op,
        invoked_at: at,
        applied_at: Some(at),
        durable_at: Some(at),
        lost_at: None,
        result: Some(result),
        completed_at: Some(at),
        timed_out: false,
    }
}

fn upstream(h: &mut History, request: u64, cost: i64, at: u64) {
    let op = StoreOp::Upstream(UpstreamOp {
        endpoint: EndpointId(1),
        kind: CallKind::Request {
            stream: Duration::from_ms(100),
        },
    });
    let tag = QuotaTag::Upstream {
        request: RequestId(request),
        cost,
    };
    h.ops.push(record(
        A,
        tag,
        op,
        at,
        Reply::Upstream(UpstreamReply { status: 200 }),
    ));
}

/// A committed deduction leaving `balance` at `version`.
fn deduct(h: &mut History, balance: i64, version: i64, at: u64) {
    let stmt = SqlStmt::Update {
        table: QUOTA_BALANCE,
        key: "k1".into(),
        guard: Cond::True,
        set: vec![],
    };
    let row = KeyedRow {
        key: "k1".into(),
        columns: [
            ("balance".to_string(), Value::Int(balance)),
            ("version".to_string(), Value::Int(version)),
        ]
        .into(),
    };
    let tag = QuotaTag::Deduct {
        request: RequestId(1),
    };
    let reply = Reply::Sql(SqlReply::Rows(vec![row]));
    h.ops
        .push(record(A, tag, StoreOp::Sql(SqlOp::exec(stmt)), at, reply));
}

/// The observer sees the mirror at `balance` / `version` at `at`.
fn observe(h: &mut History, balance: i64, version: i64, at: u64) {
    let op = StoreOp::Kv(KvOp::HGetAll {
        key: mirror_key("k1"),
    });
    let pairs = vec![
        ("balance".to_string(), balance.to_string()),
        ("version".to_string(), version.to_string()),
    ];
    h.ops.push(record(
        S,
        QuotaTag::Observe,
        op,
        at,
        Reply::Kv(KvReply::Pairs(pairs)),
    ));
}

/// A mirror write of `version` by `process`, plain or versioned, answered `answer`.
fn mirror(
    h: &mut History,
    process: ProcessId,
    version: i64,
    at: u64,
    versioned: bool,
    answer: i64,
) {
    let key = mirror_key("k1");
    let op = if versioned {
        KvOp::Script {
            script: ScriptName::SetIfNewer,
            keys: vec![key],
            args: vec![version.to_string(), "balance".into(), "0".into()],
        }
    } else {
        KvOp::HSet {
            key,
            pairs: vec![("version".into(), version.to_string())],
        }
    };
    let tag = QuotaTag::Mirror {
        request: RequestId(u64::from(process.0)),
    };
    h.ops.push(record(
        process,
        tag,
        StoreOp::Kv(op),
        at,
        Reply::Kv(KvReply::Int(answer)),
    ));
}

#[test]
fn admitted_within_balance_flags_two_calls_on_one_balance() {
    let mut h = history();
    upstream(&mut h, 1, 10, 100);
    upstream(&mut h, 2, 10, 700);
    let v = admitted_within_balance(&h, 10);
    assert_eq!(v.broken(), ["I-Q1"]);
    assert_eq!(v.violations[0].ops, vec![0, 1]);
    assert!(admitted_within_balance(&h, 20).holds());
    // A call that never reached the endpoint cost nothing.
    h.ops[1].applied_at = None;
    h.ops[1].result = None;
    assert!(admitted_within_balance(&h, 10).holds());
}

#[test]
fn mirror_converges_flags_a_stale_mirror_and_a_quiet_mismatch() {
    // The lost sync: v1 committed at 0.7 s, the mirror still shows v0 at 2 s.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    observe(&mut h, 10, 0, 1_500);
    assert!(mirror_converges(&h, (10, 0)).holds(), "within the second");
    observe(&mut h, 10, 0, 2_000);
    let v = mirror_converges(&h, (10, 0));
    assert_eq!(v.broken(), ["I-Q2"]);
    assert_eq!(v.violations[0].ops, vec![2]);
    // L-1: the version agrees, the balance does not, after a quiet second.
    let mut h = history();
    observe(&mut h, 0, 0, 1_500);
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
    // A failover within the second before the sample excuses it; one before does not.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    h.faults.push(FaultRecord {
        at: Timestamp::from_ms(1_800),
        fault: Fault::Failover,
    });
    observe(&mut h, 10, 0, 2_000);
    assert!(mirror_converges(&h, (10, 0)).holds());
    observe(&mut h, 10, 0, 2_900);
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
    // A converged mirror holds.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    observe(&mut h, 0, 1, 2_000);
    assert!(mirror_converges(&h, (10, 0)).holds());
    // Two commits in one millisecond, listed in invocation order (the later commit, v2,
    // invoked first): the row is v2's.
    let mut h = history();
    deduct(&mut h, 5, 2, 700);
    deduct(&mut h, 9, 1, 700);
    observe(&mut h, 5, 2, 2_000);
    assert!(mirror_converges(&h, (20, 0)).holds());
}

/// A reconciler's row read at `at` (the process `C` that reconciles).
fn reconcile_read(h: &mut History, process: ProcessId, at: u64) {
    let stmt = SqlStmt::Select {
        table: QUOTA_BALANCE,
        key: "k1".into(),
        for_update: false,
    };
    h.ops.push(record(
        process,
        QuotaTag::SourceRead,
        StoreOp::Sql(SqlOp::exec(stmt)),
        at,
        Reply::Timeout,
    ));
}

#[test]
fn mirror_converges_restarts_the_bound_after_a_fault_on_the_reconciler_only() {
    const C: ProcessId = ProcessId(2);
    let fault = |h: &mut History, at: u64, fault: Fault| {
        h.faults.push(FaultRecord {
            at: Timestamp::from_ms(at),
            fault,
        })
    };
    // v1 committed at 0.7 s; the reconciler's read reply was lost at 1.5 s: a stale sample
    // at 2 s is within the second after the fault, one at 2.6 s is not.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    reconcile_read(&mut h, C, 1_500);
    fault(
        &mut h,
        1_500,
        Fault::DropReply {
            process: C,
            op: OpId(1_500),
        },
    );
    observe(&mut h, 10, 0, 2_000);
    assert!(mirror_converges(&h, (10, 0)).holds());
    observe(&mut h, 10, 0, 2_600);
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
    // The same lost reply of a request (not a reconciler) excuses nothing.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    reconcile_read(&mut h, C, 1_200);
    fault(
        &mut h,
        1_500,
        Fault::DropReply {
            process: A,
            op: OpId(1_500),
        },
    );
    observe(&mut h, 10, 0, 2_000);
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
    // A reconciler paused 3 s from 1 s: samples until 1 s after it resumes (5 s) are not
    // judged; a mirror still stale at 5.2 s is a violation.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    reconcile_read(&mut h, C, 400);
    let duration = Duration::from_secs(3);
    fault(
        &mut h,
        1_000,
        Fault::Pause {
            process: C,
            duration,
        },
    );
    observe(&mut h, 10, 0, 3_900);
    observe(&mut h, 10, 0, 4_900);
    assert!(mirror_converges(&h, (10, 0)).holds());
    observe(&mut h, 10, 0, 5_200);
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
    // A reconciler cut from Redis from 1 s to 4 s: the same, from the heal on.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    reconcile_read(&mut h, C, 400);
    let store = racelab_core::StoreId::Redis;
    fault(&mut h, 1_000, Fault::Partition { process: C, store });
    fault(&mut h, 4_000, Fault::Heal { process: C, store });
    observe(&mut h, 10, 0, 4_900);
    assert!(mirror_converges(&h, (10, 0)).holds());
    observe(&mut h, 10, 0, 5_100);
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
    // A Redis restart (every key lost) restarts the bound as a failover does; an empty
    // mirror 1 s after it is a violation.
    let mut h = history();
    deduct(&mut h, 0, 1, 700);
    fault(&mut h, 1_800, Fault::RedisRestart);
    h.ops.push(record(
        S,
        QuotaTag::Observe,
        StoreOp::Kv(KvOp::HGetAll {
            key: mirror_key("k1"),
        }),
        2_500,
        Reply::Kv(KvReply::Pairs(vec![])),
    ));
    assert!(mirror_converges(&h, (10, 0)).holds());
    h.ops.push(record(
        S,
        QuotaTag::Observe,
        StoreOp::Kv(KvOp::HGetAll {
            key: mirror_key("k1"),
        }),
        2_900,
        Reply::Kv(KvReply::Pairs(vec![])),
    ));
    assert_eq!(mirror_converges(&h, (10, 0)).broken(), ["I-Q2"]);
}

#[test]
fn mirror_monotone_flags_a_reordered_sync_but_not_a_refused_one() {
    let mut h = history();
    mirror(&mut h, S, 2, 750, false, 0);
    mirror(&mut h, A, 1, 2_700, false, 0);
    let v = mirror_monotone(&h, &I_Q3);
    assert_eq!(v.broken(), ["I-Q3"]);
    assert!(v.explanation().contains("version 1"), "{}", v.explanation());
    // The versioned write answered 0: it wrote nothing.
    let mut h = history();
    mirror(&mut h, S, 2, 750, true, 1);
    mirror(&mut h, A, 1, 2_700, true, 0);
    assert!(mirror_monotone(&h, &I_Q3).holds());
    assert_eq!(
        mirror_coverage(&h).sometimes.get("stale-mirror-refused"),
        Some(&1)
    );
    // A write a failover lost never happened.
    let mut h = history();
    mirror(&mut h, S, 2, 750, false, 0);
    h.ops[0].lost_at = Some(Timestamp::from_ms(760));
    mirror(&mut h, A, 1, 2_700, false, 0);
    assert!(mirror_monotone(&h, &I_Q3).holds());
    // A Redis restart between the writes lost every key: v1 into the emptied key is no
    // decrease. A decrease among the writes after the restart still is, and so is one
    // across a restart that came before both writes.
    let restart = |h: &mut History, at: u64| {
        h.faults.push(FaultRecord {
            at: Timestamp::from_ms(at),
            fault: Fault::RedisRestart,
        })
    };
    let mut h = history();
    mirror(&mut h, S, 2, 750, true, 1);
    restart(&mut h, 1_000);
    mirror(&mut h, A, 1, 2_700, true, 1);
    assert!(mirror_monotone(&h, &I_Q3).holds());
    mirror(&mut h, S, 3, 2_800, true, 1);
    mirror(&mut h, A, 2, 2_900, false, 0);
    assert_eq!(mirror_monotone(&h, &I_Q3).broken(), ["I-Q3"]);
    let mut h = history();
    restart(&mut h, 500);
    mirror(&mut h, S, 2, 750, false, 0);
    mirror(&mut h, A, 1, 2_700, false, 0);
    assert_eq!(mirror_monotone(&h, &I_Q3).broken(), ["I-Q3"]);
}

/// A hash-only key space for the named scripts.
#[derive(Default)]
struct Hashes(BTreeMap<String, BTreeMap<String, String>>);

impl KvView for Hashes {
    fn call(&mut self, op: &KvOp) -> KvReply {
        match op {
            KvOp::HGet { key, field } => self
                .0
                .get(key)
                .and_then(|h| h.get(field))
                .cloned()
                .map_or(KvReply::Nil, KvReply::Bulk),
            KvOp::HSet { key, pairs } => {
                let h = self.0.entry(key.clone()).or_default();
                for (f, v) in pairs {
                    h.insert(f.clone(), v.clone());
                }
                KvReply::Int(0)
            }
            KvOp::HIncrBy { key, field, delta } => {
                let h = self.0.entry(key.clone()).or_default();
                let n: i64 = h.get(field).and_then(|v| v.parse().ok()).unwrap_or(0) + delta;
                h.insert(field.clone(), n.to_string());
                KvReply::Int(n)
            }
            _ => KvReply::Error("ERR not in this test double".into()),
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn set_if_newer_writes_only_a_newer_version() {
    let mut kv = Hashes::default();
    let keys = strings(&["m"]);
    let run =
        |kv: &mut Hashes, args: &[&str]| ScriptName::SetIfNewer.run(kv, &keys, &strings(args));
    assert_eq!(run(&mut kv, &["2", "balance", "80"]), KvReply::Int(1));
    assert_eq!(run(&mut kv, &["1", "balance", "90"]), KvReply::Int(0));
    assert_eq!(run(&mut kv, &["2", "balance", "70"]), KvReply::Int(0));
    assert_eq!(kv.0["m"]["balance"], "80");
    assert_eq!(run(&mut kv, &["3", "balance", "70"]), KvReply::Int(1));
    assert_eq!(kv.0["m"]["version"], "3");
    // A stored version that is not one counts as -1; a bad version or odd pairs are errors.
    kv.0.get_mut("m")
        .map(|h| h.insert("version".into(), "x".into()));
    assert_eq!(run(&mut kv, &["0", "balance", "1"]), KvReply::Int(1));
    assert!(matches!(
        run(&mut kv, &["-1", "balance", "1"]),
        KvReply::Error(_)
    ));
    assert!(matches!(run(&mut kv, &["5", "balance"]), KvReply::Error(_)));
    assert_eq!(kv.0["m"]["version"], "0");
}

#[test]
fn deduct_if_enough_deducts_only_what_is_there() {
    let mut kv = Hashes::default();
    let keys = strings(&["m"]);
    let run =
        |kv: &mut Hashes, args: &[&str]| ScriptName::DeductIfEnough.run(kv, &keys, &strings(args));
    assert_eq!(run(&mut kv, &["balance", "5"]), KvReply::Int(0), "missing");
    kv.0.entry("m".into())
        .or_default()
        .insert("balance".into(), "10".into());
    assert_eq!(run(&mut kv, &["balance", "10"]), KvReply::Int(1));
    assert_eq!(kv.0["m"]["balance"], "0");
    assert_eq!(run(&mut kv, &["balance", "1"]), KvReply::Int(0));
    assert!(matches!(run(&mut kv, &["balance", "x"]), KvReply::Error(_)));
}

// ---------------------------------------------------------------------------------------------
// R-000-09: the warm-up oracles

use racelab_core::quota::oracle::{W2, cache_warmed, no_defaults, single_load, warm_coverage};
use racelab_core::{ProcessId as Pid, SetCondition};

fn warm_load(h: &mut History, process: Pid, at: u64) {
    let tag = QuotaTag::WarmLoad {
        request: RequestId(u64::from(process.0)),
    };
    let stmt = SqlStmt::Select {
        table: QUOTA_BALANCE,
        key: "k1".into(),
        for_update: false,
    };
    h.ops.push(record(
        process,
        tag,
        StoreOp::Sql(SqlOp::exec(stmt)),
        at,
        Reply::Sql(SqlReply::Rows(vec![])),
    ));
}

fn cache_read(h: &mut History, process: Pid, at: u64, pairs: Vec<(String, String)>) {
    let tag = QuotaTag::CacheRead {
        request: RequestId(u64::from(process.0)),
    };
    let op = StoreOp::Kv(KvOp::HGetAll {
        key: mirror_key("k1"),
    });
    h.ops.push(record(
        process,
        tag,
        op,
        at,
        Reply::Kv(KvReply::Pairs(pairs)),
    ));
}

#[test]
fn single_load_flags_a_stampede_unless_a_fault_may_have_cost_the_lock() {
    let mut h = history();
    warm_load(&mut h, A, 3);
    warm_load(&mut h, S, 4);
    let v = single_load(&h);
    assert_eq!(v.broken(), ["W1"]);
    assert_eq!(v.violations[0].ops, vec![0, 1]);
    h.faults.push(FaultRecord {
        at: Timestamp::from_ms(2),
        fault: Fault::Pause {
            process: A,
            duration: Duration::from_secs(3),
        },
    });
    assert!(single_load(&h).holds());
    let mut one = history();
    warm_load(&mut one, A, 3);
    assert!(single_load(&one).holds());
}

#[test]
fn no_defaults_flags_a_call_after_a_cold_read_only() {
    let mut h = history();
    cache_read(&mut h, A, 100, vec![]);
    upstream(&mut h, 1, 1, 110);
    let v = no_defaults(&h);
    assert_eq!(v.broken(), ["W3"]);
    assert_eq!(v.violations[0].ops, vec![0, 1]);
    // After a cold read, a load from the database is what it admits on.
    let mut h = history();
    cache_read(&mut h, A, 100, vec![]);
    warm_load(&mut h, A, 105);
    upstream(&mut h, 1, 1, 110);
    assert!(no_defaults(&h).holds());
    // A warm read.
    let mut h = history();
    cache_read(&mut h, A, 100, vec![("balance".into(), "5".into())]);
    upstream(&mut h, 1, 1, 110);
    assert!(no_defaults(&h).holds());
}

#[test]
fn cache_warmed_flags_a_cold_or_stale_end_and_w2_a_resurrection() {
    let mut h = history();
    observe(&mut h, 100, 0, 9_000);
    assert!(cache_warmed(&h, (100, 0), true).holds());
    deduct(&mut h, 90, 1, 5_000);
    let v = cache_warmed(&h, (100, 0), true);
    assert_eq!(v.broken(), ["cache-warmed"]);
    assert!(
        cache_warmed(&h, (100, 0), false).holds(),
        "only a settled run"
    );
    // The stale resurrection: D syncs v1, the warmer writes v0 over it.
    let mut h = history();
    mirror(&mut h, S, 1, 300, false, 0);
    mirror(&mut h, A, 0, 2_000, false, 0);
    assert_eq!(mirror_monotone(&h, &W2).broken(), ["W2"]);
}

#[test]
fn warm_coverage_counts_contended_locks() {
    let mut h = history();
    let lock = KvOp::Set {
        key: "quota:lock:warm:k1".into(),
        value: "r1".into(),
        condition: SetCondition::IfAbsent,
        ttl: None,
    };
    let tag = QuotaTag::Lock {
        request: RequestId(1),
    };
    h.ops.push(record(
        A,
        tag,
        StoreOp::Kv(lock),
        5,
        Reply::Kv(KvReply::Nil),
    ));
    assert_eq!(
        warm_coverage(&h).sometimes.get("warm-lock-contended"),
        Some(&1)
    );
}

#[test]
fn an_hset_that_only_overwrites_fields_succeeded() {
    // Redis answers HSET with the number of fields it added: 0 when it only overwrote.
    let mut h = history();
    mirror(&mut h, S, 2, 750, false, 0);
    assert!(h.ops[0].succeeded());
    assert!(h.ops[0].accepted());
    // Elsewhere an integer 0 still means nothing happened (an HDEL that found no field).
    let hdel = StoreOp::Kv(KvOp::HDel {
        key: "h".into(),
        fields: vec!["f".into()],
    });
    assert!(!Reply::Kv(KvReply::Int(0)).is_success_of(&hdel));
    assert!(Reply::Kv(KvReply::Int(1)).is_success_of(&hdel));
}
