//! Every oracle is fed known-bad histories and must flag them, and a known-good one that it
//! must accept.

use racelab_core::oracle::{at_most_once_per_key, conservation, newest_epoch_only};
use racelab_core::workorder::WORK_ORDERS;
use racelab_core::workorder::{
    LEASE_SUPERSEDED, WoEnd, WoNote, WoTag, coverage, exactly_once, fenced_effects, no_false_alarm,
};
use racelab_core::{
    Assign, Cond, History, JobId, KvOp, KvReply, Note, NoteRecord, OpId, OpRecord, ProcessId,
    Quantity, QueueOp, QueueReply, Reply, ScanId, SetCondition, SqlOp, SqlReply, SqlStmt, StoreOp,
    Tag, Timestamp, Value, Verdict, WorkOrderId,
};

const WO: WorkOrderId = WorkOrderId(1);
const A: ProcessId = ProcessId(1);
const B: ProcessId = ProcessId(2);
const T: ProcessId = ProcessId(0);

fn t(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

fn history() -> History {
    History {
        process_names: vec![(T, "T".into()), (A, "W_A".into()), (B, "W_B".into())],
        ..History::default()
    }
}

fn op(
    process: ProcessId,
    tag: WoTag,
    op: StoreOp,
    at: u64,
    result: Reply,
    durable: bool,
) -> OpRecord {
    OpRecord {
        process,
        id: OpId(at),
        tag: Tag::new(tag),
        op,
        invoked_at: t(at),
        applied_at: Some(t(at)),
        durable_at: durable.then(|| t(at)),
        lost_at: None,
        result: Some(result),
        completed_at: Some(t(at + 1)),
        timed_out: false,
    }
}

fn submit(h: &mut History, scan: u64, qty: i64, at: u64) {
    let tag = WoTag::Submit {
        scan: ScanId(scan),
        work_order: WO,
        qty: Quantity(qty),
    };
    let enqueue = StoreOp::Queue(QueueOp::Enqueue {
        dedup: None,
        fields: Default::default(),
    });
    let reply = Reply::Queue(QueueReply::Enqueued { job: JobId(scan) });
    h.ops.push(op(T, tag, enqueue, at, reply, true));
}

fn acquire(h: &mut History, p: ProcessId, at: u64) {
    let set = KvOp::Set {
        key: "lock:wo-1".into(),
        value: "x".into(),
        condition: SetCondition::IfAbsent,
        ttl: None,
    };
    h.ops.push(op(
        p,
        WoTag::AcquireLease { work_order: WO },
        StoreOp::Kv(set),
        at,
        Reply::Kv(KvReply::Ok),
        true,
    ));
}

fn inc(qty: i64) -> StoreOp {
    StoreOp::Sql(SqlOp::exec(SqlStmt::Update {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        guard: Cond::True,
        set: vec![Assign::Add {
            column: "qty".into(),
            delta: qty,
        }],
    }))
}

fn effect(h: &mut History, p: ProcessId, scan: u64, qty: i64, at: u64) {
    let tag = WoTag::Effect {
        scan: ScanId(scan),
        work_order: WO,
        qty: Quantity(qty),
    };
    h.ops.push(op(
        p,
        tag,
        inc(qty),
        at,
        Reply::Sql(SqlReply::Rows(vec![Default::default()])),
        true,
    ));
}

fn state(final_qty: i64) -> WoEnd {
    WoEnd {
        initial_qty: [(WO, Quantity(100))].into(),
        final_qty: [(WO, Quantity(final_qty))].into(),
        quiescent: true,
    }
}

#[test]
fn exactly_once_flags_a_scan_applied_twice_and_names_who_and_when() {
    let mut h = history();
    submit(&mut h, 1, 5, 0);
    effect(&mut h, A, 1, 5, 22_000);
    effect(&mut h, B, 1, 5, 43_000);
    let v = exactly_once(&h, &state(110));
    assert!(!v.holds());
    let text = v.explanation();
    assert!(text.contains("qty is 110 but qty_0 100"), "{text}");
    assert!(
        text.contains(
            "scan s-1 (qty 5) applied 2 times: at 00:22.000 by W_A and at 00:43.000 by W_B"
        ),
        "{text}"
    );
}

#[test]
fn exactly_once_flags_a_lost_scan() {
    let mut h = history();
    submit(&mut h, 1, 5, 0);
    submit(&mut h, 2, 3, 0);
    effect(&mut h, A, 1, 5, 1_000);
    let v = exactly_once(&h, &state(105));
    assert!(
        v.explanation()
            .contains("scan s-2 (qty 3) was never applied"),
        "{}",
        v.explanation()
    );
}

#[test]
fn exactly_once_judges_only_duplicates_in_a_run_that_never_quiesced() {
    // A scan not yet applied is a liveness matter (the run is stuck), not an I-WO violation.
    let mut h = history();
    submit(&mut h, 1, 5, 0);
    let mut s = state(100);
    s.quiescent = false;
    assert!(exactly_once(&h, &s).holds());
    // A scan applied twice breaks I-WO whether or not the run settled.
    effect(&mut h, A, 1, 5, 1_000);
    effect(&mut h, B, 1, 5, 2_000);
    let v = exactly_once(&h, &s);
    assert_eq!(v.broken(), ["I-WO"], "{}", v.explanation());
    assert!(
        v.explanation()
            .contains("before the run settled: scan s-1 (qty 5) applied 2 times"),
        "{}",
        v.explanation()
    );
}

#[test]
fn exactly_once_accepts_each_scan_once_even_when_submitted_twice() {
    let mut h = history();
    submit(&mut h, 1, 5, 0);
    submit(&mut h, 1, 5, 3_000);
    effect(&mut h, A, 1, 5, 1_000);
    assert!(exactly_once(&h, &state(105)).holds());
}

#[test]
fn fenced_effects_flags_an_effect_under_a_superseded_lease() {
    // R-002-01's base timeline: W_A locks at 0, W_B at 21 s, W_A's $inc lands at 22 s.
    let mut h = history();
    acquire(&mut h, A, 0);
    acquire(&mut h, B, 21_000);
    effect(&mut h, A, 1, 5, 22_000);
    let v = fenced_effects(&h);
    assert!(!v.holds());
    let text = v.explanation();
    assert!(
        text.contains("W_A acquired wo-1 at 00:00.000, but W_B acquired it at 00:21.000"),
        "{text}"
    );
    assert_eq!(v.violations[0].ops.len(), 3);
}

#[test]
fn fenced_effects_flags_an_effect_without_any_lease() {
    let mut h = history();
    effect(&mut h, A, 1, 5, 1_000);
    assert!(
        fenced_effects(&h)
            .explanation()
            .contains("without ever holding its lease")
    );
}

#[test]
fn fenced_effects_accepts_sequential_holders() {
    let mut h = history();
    acquire(&mut h, A, 0);
    effect(&mut h, A, 1, 5, 1_000);
    acquire(&mut h, B, 2_000);
    effect(&mut h, B, 2, 3, 3_000);
    assert!(fenced_effects(&h).holds());
}

#[test]
fn fenced_effects_ignores_effects_the_store_refused() {
    let mut h = history();
    acquire(&mut h, A, 0);
    acquire(&mut h, B, 21_000);
    let tag = WoTag::Effect {
        scan: ScanId(1),
        work_order: WO,
        qty: Quantity(5),
    };
    h.ops.push(op(
        A,
        tag,
        inc(5),
        22_000,
        Reply::Sql(SqlReply::Rows(vec![])),
        true,
    ));
    assert!(fenced_effects(&h).holds());
}

fn checker_history(commit_at: u64) -> History {
    let mut h = history();
    let c = ProcessId(3);
    h.process_names.push((c, "C".into()));
    let read = |at| {
        let select = SqlStmt::Select {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            for_update: false,
        };
        op(
            c,
            WoTag::CheckerRead,
            StoreOp::Sql(SqlOp::exec(select)),
            at,
            Reply::Sql(SqlReply::Rows(vec![])),
            false,
        )
    };
    submit(&mut h, 1, 3, 0);
    h.ops.push(read(5_000));
    // A scan's effect and record commit together between the checker's two reads.
    effect(&mut h, A, 1, 3, commit_at);
    let record = WoTag::Record {
        scan: ScanId(1),
        work_order: WO,
        qty: Quantity(3),
    };
    h.ops.push(op(
        A,
        record,
        inc(0),
        commit_at,
        Reply::Sql(SqlReply::Affected(1)),
        true,
    ));
    h.ops.push(read(7_000));
    h.notes.push(NoteRecord {
        at: t(7_001),
        process: c,
        note: Note::new(WoNote::Alarm {
            work_order: WO,
            expected: Quantity(100),
            observed: Quantity(103),
        }),
    });
    h
}

#[test]
fn no_false_alarm_flags_an_alarm_on_a_store_that_was_always_consistent() {
    let h = checker_history(6_000);
    let v = no_false_alarm(&h, &state(103));
    assert!(!v.holds());
    assert!(
        v.explanation().contains("the reads were not one snapshot"),
        "{}",
        v.explanation()
    );
}

#[test]
fn no_false_alarm_accepts_an_alarm_after_a_repair_broke_the_store() {
    let mut h = checker_history(6_000);
    // A repair at 6.5 s overwrote qty: the store really was inconsistent during the reads.
    let repair = StoreOp::Sql(SqlOp::exec(SqlStmt::Update {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        guard: Cond::True,
        set: vec![Assign::Set {
            column: "qty".into(),
            value: Value::Int(100),
        }],
    }));
    let c = ProcessId(3);
    h.ops.push(op(
        c,
        WoTag::Repair { work_order: WO },
        repair,
        6_500,
        Reply::Sql(SqlReply::Rows(vec![Default::default()])),
        true,
    ));
    assert!(no_false_alarm(&h, &state(100)).holds());
}

// ---------------------------------------------------------------------------------------------
// The generic oracles, each fed a known-bad history.

#[test]
fn at_most_once_per_key_flags_a_key_accepted_twice_and_accepts_once() {
    let mut h = history();
    effect(&mut h, A, 1, 5, 1_000);
    effect(&mut h, B, 1, 5, 2_000);
    effect(&mut h, A, 2, 5, 3_000);
    let scan_of = |op: &OpRecord| match WoTag::of(&op.tag) {
        Some(&WoTag::Effect { scan, .. }) => Some(scan),
        _ => None,
    };
    let v = racelab_core::oracle::at_most_once_per_key(&h, "once", scan_of);
    assert_eq!(v.broken(), ["once"], "{}", v.explanation());
    assert_eq!(
        v.violations.len(),
        1,
        "only s-1 broke it: {}",
        v.explanation()
    );
    let text = v.explanation();
    assert!(
        text.contains("s-1 took effect 2 times") && text.contains("by W_A and at"),
        "{text}"
    );
    h.ops.remove(1);
    assert!(racelab_core::oracle::at_most_once_per_key(&h, "once", scan_of).holds());
}

#[test]
fn newest_epoch_only_flags_a_write_under_a_superseded_epoch() {
    // Grants are lease acquisitions carrying their epoch in the op id; writes carry theirs
    // likewise: A is granted 1 at 0, B is granted 2 at 10, A writes with 1 at 20.
    let mut h = history();
    let grant = |p, at, epoch| {
        let mut o = op(
            p,
            WoTag::AcquireLease { work_order: WO },
            inc(0),
            at,
            Reply::Sql(SqlReply::Rows(vec![Default::default()])),
            true,
        );
        o.id = OpId(epoch);
        o
    };
    h.ops.push(grant(A, 0, 1));
    h.ops.push(grant(B, 10, 2));
    let mut write = op(
        A,
        WoTag::Effect {
            scan: ScanId(1),
            work_order: WO,
            qty: Quantity(1),
        },
        inc(1),
        20,
        Reply::Sql(SqlReply::Rows(vec![Default::default()])),
        true,
    );
    write.id = OpId(1);
    h.ops.push(write);
    let of = |kind: racelab_core::TagKind| {
        move |o: &OpRecord| (o.tag.kind() == kind).then_some((WO, o.id.0))
    };
    let v = racelab_core::oracle::newest_epoch_only(
        &h,
        "newest-epoch",
        of(WoTag::ACQUIRE_LEASE),
        of(WoTag::EFFECT),
    );
    assert_eq!(v.broken(), ["newest-epoch"], "{}", v.explanation());
    assert_eq!(v.violations[0].ops, vec![1, 2]);
    // A newer grant of another key, or one at the very instant of the write, is no reason.
    let mut other = h.clone();
    other.ops[1].id = OpId(2);
    let of_key = |kind: racelab_core::TagKind| {
        move |o: &OpRecord| {
            let key = if o.process == B { WorkOrderId(2) } else { WO };
            (o.tag.kind() == kind).then_some((key, o.id.0))
        }
    };
    let v = racelab_core::oracle::newest_epoch_only(
        &other,
        "newest-epoch",
        of_key(WoTag::ACQUIRE_LEASE),
        of_key(WoTag::EFFECT),
    );
    assert!(v.holds(), "another key's grant: {}", v.explanation());
    let mut same_instant = h.clone();
    same_instant.ops[1].applied_at = Some(t(20));
    same_instant.ops[1].invoked_at = t(20);
    let v = racelab_core::oracle::newest_epoch_only(
        &same_instant,
        "newest-epoch",
        of(WoTag::ACQUIRE_LEASE),
        of(WoTag::EFFECT),
    );
    assert!(
        v.holds(),
        "a grant at the write's instant: {}",
        v.explanation()
    );
    // An older grant with a lower epoch is no reason either.
    let mut older = h.clone();
    older.ops[1].id = OpId(0);
    let v = racelab_core::oracle::newest_epoch_only(
        &older,
        "newest-epoch",
        of(WoTag::ACQUIRE_LEASE),
        of(WoTag::EFFECT),
    );
    assert!(v.holds(), "a lower epoch: {}", v.explanation());
    // The same write with the newest epoch is fine.
    h.ops[2].id = OpId(2);
    let v = racelab_core::oracle::newest_epoch_only(
        &h,
        "newest-epoch",
        of(WoTag::ACQUIRE_LEASE),
        of(WoTag::EFFECT),
    );
    assert!(v.holds(), "{}", v.explanation());
}

#[test]
fn conservation_flags_a_lost_or_invented_unit() {
    let v = racelab_core::oracle::conservation("sum", "the balance", 10, 9);
    assert_eq!(v.broken(), ["sum"]);
    assert!(
        v.explanation()
            .contains("the balance is 9 but must be 10 (-1)")
    );
    assert!(racelab_core::oracle::conservation("sum", "the balance", 10, 10).holds());
}

#[test]
fn a_verdict_counts_sometimes_properties_and_keeps_stuck_apart() {
    let mut v = Verdict::default();
    v.count("window", 0);
    assert!(v.sometimes.is_empty(), "a zero count is not a hold");
    v.count("window", 2);
    let stuck = Verdict {
        stuck: Some("W_A busy".into()),
        ..Verdict::default()
    };
    let v = v.merge(stuck);
    assert!(v.holds(), "a stuck run violates no property");
    assert!(v.is_stuck());
    assert_eq!(v.sometimes["window"], 2);
    assert!(v.explanation().contains("stuck: W_A busy"));
}

#[test]
fn a_history_that_breaks_time_is_not_well_formed() {
    let mut h = history();
    effect(&mut h, A, 1, 5, 1_000);
    assert!(h.check_well_formed().is_ok());
    let mut early = h.clone();
    early.ops[0].applied_at = Some(t(999));
    let e = early.check_well_formed().unwrap_err();
    assert!(e.contains("before its invocation"), "{e}");
    let mut ghost = h.clone();
    ghost.ops[0].applied_at = None;
    ghost.ops[0].result = None;
    let e = ghost.check_well_formed().unwrap_err();
    assert!(e.contains("never applied"), "{e}");
    let mut late = h.clone();
    late.ops[0].completed_at = Some(t(500));
    assert!(late.check_well_formed().is_err());
    let mut notes = h;
    for at in [5, 3] {
        notes.notes.push(NoteRecord {
            at: t(at),
            process: A,
            note: Note::new(WoNote::Skipped { scan: ScanId(1) }),
        });
    }
    let e = notes.check_well_formed().unwrap_err();
    assert!(e.contains("notes are not recorded in time order"), "{e}");
}

// The generic oracles, over document 002's vocabulary: effects keyed by scan, leases granted
// with the epoch given as the acquisition's time in seconds.

fn scan_of(op: &OpRecord) -> Option<u64> {
    match WoTag::of(&op.tag) {
        Some(WoTag::Effect { scan, .. }) => Some(scan.0),
        _ => None,
    }
}

fn grant_of(op: &OpRecord) -> Option<(WorkOrderId, u64)> {
    matches!(WoTag::of(&op.tag), Some(WoTag::AcquireLease { .. }))
        .then(|| (WO, op.invoked_at.as_ms() / 1_000))
}

#[test]
fn at_most_once_per_key_flags_a_key_accepted_twice_and_ignores_refused_effects() {
    let mut h = history();
    effect(&mut h, A, 1, 5, 1_000);
    effect(&mut h, B, 2, 5, 2_000);
    assert!(at_most_once_per_key(&h, "once", scan_of).holds());
    effect(&mut h, B, 1, 5, 3_000);
    // Refused, and not durable: neither counts.
    let mut refused = h.ops[0].clone();
    refused.result = Some(Reply::Sql(SqlReply::Error("40P01 deadlock".into())));
    h.ops.push(refused);
    let mut lost = h.ops[0].clone();
    lost.durable_at = None;
    h.ops.push(lost);
    let v = at_most_once_per_key(&h, "once", scan_of);
    assert_eq!(v.broken(), ["once"]);
    assert_eq!(
        v.explanation(),
        "once violated: 1 took effect 2 times: at 00:01.000 by W_A and at 00:03.000 by W_B"
    );
    assert_eq!(v.violations[0].ops, [0, 2]);
}

#[test]
fn newest_epoch_only_flags_a_write_after_a_newer_grant_of_its_key_only() {
    // Epoch 1 granted at 1 s to W_A, epoch 2 at 2 s to W_B; W_A writes with epoch 1 at 3 s.
    let write_of = |op: &OpRecord| scan_of(op).map(|_| (WO, 1));
    let mut h = history();
    acquire(&mut h, A, 1_000);
    effect(&mut h, A, 1, 5, 1_500);
    assert!(newest_epoch_only(&h, "fresh", grant_of, write_of).holds());
    acquire(&mut h, B, 2_000);
    effect(&mut h, A, 2, 5, 3_000);
    let v = newest_epoch_only(&h, "fresh", grant_of, write_of);
    assert_eq!(
        v.explanation(),
        "fresh violated: W_A wrote wo-1 with epoch 1 at 00:03.000, but epoch 2 had been granted \
         at 00:02.000"
    );
    assert_eq!(v.violations[0].ops, [2, 3]);
    // A newer grant of another key, an older or equal grant of the same key, or a grant at
    // the write's own instant do not make the write stale.
    let other = |op: &OpRecord| grant_of(op).map(|(_, e)| (WorkOrderId(2), e));
    assert!(newest_epoch_only(&h, "fresh", other, write_of).holds());
    let newest = |op: &OpRecord| scan_of(op).map(|_| (WO, 2));
    assert!(newest_epoch_only(&h, "fresh", grant_of, newest).holds());
    let mut h = history();
    acquire(&mut h, B, 2_000);
    effect(&mut h, A, 1, 5, 2_000);
    assert!(newest_epoch_only(&h, "fresh", grant_of, write_of).holds());
}

#[test]
fn conservation_names_the_difference() {
    assert!(conservation("sum", "qty", 7, 7).holds());
    assert_eq!(
        conservation("sum", "qty", 7, 5).explanation(),
        "sum violated: qty is 5 but must be 7 (-2)"
    );
}

#[test]
fn a_verdict_explains_each_violation_on_its_own_line_then_the_stuck_state() {
    let mut v = conservation("a", "x", 1, 2).merge(conservation("b", "y", 1, 3));
    v.stuck = Some("W_A still holds a job".into());
    v.count("window", 2);
    v.count("never", 0);
    assert_eq!(
        v.explanation(),
        "a violated: x is 2 but must be 1 (+1)\nb violated: y is 3 but must be 1 (+2)\nstuck: W_A \
         still holds a job"
    );
    assert_eq!(v.broken(), ["a", "b"]);
    assert!(v.broke("b") && !v.broke("c") && v.is_stuck() && !v.holds());
    assert_eq!(v.sometimes.len(), 1);
    let merged = v.clone().merge(v);
    assert_eq!(merged.sometimes.get("window"), Some(&4));
    assert_eq!(merged.violations.len(), 4);
    assert_eq!(
        racelab_core::Verdict::default().explanation(),
        "all invariants held"
    );
}

/// LEASE_SUPERSEDED counts acquisitions that take a work order from a holder that had not
/// released it: a clean handover is none, and a late release by a former holder does not
/// end the current holder's lease.
#[test]
fn lease_superseded_counts_only_takeovers_from_a_holder_that_had_not_released() {
    const C: ProcessId = ProcessId(3);
    let lock = |v: &str| {
        StoreOp::Kv(KvOp::Set {
            key: "lock:wo-1".into(),
            value: v.into(),
            condition: SetCondition::IfAbsent,
            ttl: None,
        })
    };
    let release = StoreOp::Kv(KvOp::Del {
        key: "lock:wo-1".into(),
    });
    let acquire = WoTag::AcquireLease { work_order: WO };
    let released = WoTag::ReleaseLease { work_order: WO };
    let ok = || Reply::Kv(KvReply::Ok);
    let one = || Reply::Kv(KvReply::Int(1));
    let mut h = history();
    h.process_names.push((C, "W_C".into()));
    h.ops
        .push(op(A, acquire.clone(), lock("A"), 10, ok(), true));
    h.ops
        .push(op(A, released.clone(), release.clone(), 20, one(), true));
    h.ops
        .push(op(B, acquire.clone(), lock("B"), 30, ok(), true));
    let superseded = |h: &History| {
        coverage(h)
            .sometimes
            .get(LEASE_SUPERSEDED.name)
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(superseded(&h), 0, "A released before B acquired");
    // A's late, second release does not end B's lease; C then takes it from B.
    h.ops.push(op(A, released, release, 40, one(), true));
    h.ops.push(op(C, acquire, lock("C"), 50, ok(), true));
    assert_eq!(superseded(&h), 1);
}
