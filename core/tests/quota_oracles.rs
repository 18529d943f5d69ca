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
        op: StoreOp::Sql(SqlOp::Exec(stmt)),
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
    let v = coverage(&h, &QuotaEnd::default(), Counter::Daily { day });
    assert_eq!(v.sometimes.get("bucket-straddled"), Some(&1));
    assert_eq!(v.sometimes.get("reservation-refused"), Some(&1));
    // The same request billed within its day straddles nothing.
    let mut h = history();
    h.ops.push(op(A, reserve, 100, 1, true));
    h.ops
        .push(op(A, QuotaTag::Ledger { request }, 400, 1, true));
    let v = coverage(&h, &QuotaEnd::default(), Counter::Daily { day });
    assert_eq!(v.sometimes.get("bucket-straddled"), None);
}
