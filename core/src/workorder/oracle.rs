//! Document 002's oracles: I-WO (exactly-once effect), I-MX (mutual exclusion with
//! fencing) and the consistency checker's soundness, over the family's end state [`WoEnd`].
//!
//! Every oracle here has a test that feeds it a known-bad history (`core/tests/oracles.rs`).

use super::WORK_ORDERS;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::tag::{WoNote, WoTag};
use crate::history::{History, OpRecord};
use crate::ids::{Quantity, ScanId, WorkOrderId};
use crate::ops::{Assign, QueueReply, Reply, Row, SqlOp, SqlStmt, StoreOp, Table, Value};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::Timestamp;

/// Document 002's end state: what its oracles need besides the history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WoEnd {
    /// Each work order's quantity before the run (`qty_0`).
    pub initial_qty: BTreeMap<WorkOrderId, Quantity>,
    /// Each work order's committed quantity at the end.
    pub final_qty: BTreeMap<WorkOrderId, Quantity>,
    /// Whether the run reached quiescence (no job left, nothing in flight).
    pub quiescent: bool,
}

impl WoEnd {
    /// The end state read from the committed rows of the stores: each work order of
    /// `initial_qty` gets the `qty` of its `work_orders` row.
    pub fn read<'a>(
        initial_qty: &BTreeMap<WorkOrderId, Quantity>,
        rows: impl IntoIterator<Item = (&'a Table, &'a str, &'a Row)>,
        quiescent: bool,
    ) -> WoEnd {
        let mut final_qty = BTreeMap::new();
        for (table, key, row) in rows {
            if *table != WORK_ORDERS {
                continue;
            }
            let Some(wo) = initial_qty.keys().find(|wo| wo.to_string() == key) else {
                continue;
            };
            if let Some(Value::Int(q)) = row.get("qty") {
                final_qty.insert(*wo, Quantity(*q));
            }
        }
        WoEnd {
            initial_qty: initial_qty.clone(),
            final_qty,
            quiescent,
        }
    }
}

/// I-WO, exactly-once effect (document 002): at quiescence every work order's quantity equals
/// `qty_0` plus the quantities of the distinct scans the queue accepted, each applied once.
/// A run that did not quiesce is judged on its safety half only (no scan applied twice, no
/// quantity overwritten): whether every scan was applied is a liveness question, which the
/// run's `stuck` verdict answers.
pub fn exactly_once(history: &History, state: &WoEnd) -> Verdict {
    let mut verdict = Verdict::default();
    // Scans the queue accepted, by work order.
    let mut accepted: BTreeMap<WorkOrderId, BTreeMap<ScanId, Quantity>> = BTreeMap::new();
    for op in &history.ops {
        if let Some(&WoTag::Submit {
            scan,
            work_order,
            qty,
        }) = WoTag::of(&op.tag)
        {
            let queued = matches!(
                op.result,
                Some(Reply::Queue(
                    QueueReply::Enqueued { .. } | QueueReply::Duplicate { .. }
                ))
            );
            if queued {
                accepted.entry(work_order).or_default().insert(scan, qty);
            }
        }
    }
    // Effects the store accepted, by scan.
    let mut applied: BTreeMap<ScanId, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Some(&WoTag::Effect { scan, .. }) = WoTag::of(&op.tag)
            && op.accepted()
        {
            applied.entry(scan).or_default().push(i);
        }
    }
    let work_orders: Vec<WorkOrderId> = accepted
        .keys()
        .chain(state.initial_qty.keys())
        .copied()
        .collect();
    let mut seen = Vec::new();
    for wo in work_orders {
        if seen.contains(&wo) {
            continue;
        }
        seen.push(wo);
        let qty0 = state.initial_qty.get(&wo).copied().unwrap_or_default();
        let scans = accepted.get(&wo).cloned().unwrap_or_default();
        let expected = scans
            .values()
            .fold(qty0.0, |sum, q| sum.saturating_add(q.0));
        let actual = state.final_qty.get(&wo).copied().unwrap_or_default().0;
        let mut details = String::new();
        let mut ops = Vec::new();
        let mut overwritten = false;
        for (scan, qty) in &scans {
            let effects = applied.get(scan).map_or(&[][..], Vec::as_slice);
            if effects.len() == 1 {
                continue;
            }
            if effects.is_empty() {
                if state.quiescent {
                    let _ = write!(details, "; scan {scan} (qty {qty}) was never applied");
                }
                continue;
            }
            let _ = write!(
                details,
                "; scan {scan} (qty {qty}) applied {} times:",
                effects.len()
            );
            for (k, &i) in effects.iter().enumerate() {
                let op = &history.ops[i];
                let sep = if k == 0 { "" } else { " and" };
                let at = op.durable_at.unwrap_or(op.invoked_at);
                let _ = write!(details, "{sep} at {at} by {}", history.name(op.process));
                ops.push(i);
            }
        }
        for (i, op) in history.ops.iter().enumerate() {
            let repair = matches!(WoTag::of(&op.tag), Some(&WoTag::Repair { work_order }) if work_order == wo);
            if repair && op.accepted() {
                overwritten = true;
                let at = op.durable_at.unwrap_or(op.invoked_at);
                let _ = write!(
                    details,
                    "; {} overwrote the quantity at {at} ({})",
                    history.name(op.process),
                    op.op
                );
                ops.push(i);
            }
        }
        if !state.quiescent {
            if !ops.is_empty() {
                verdict.violations.push(Violation {
                    invariant: I_WO.name.into(),
                    explanation: format!(
                        "work order {wo}, before the run settled:{}",
                        details.trim_start_matches(';')
                    ),
                    ops,
                });
            }
        } else if actual != expected {
            verdict.violations.push(Violation {
                invariant: I_WO.name.into(),
                explanation: format!(
                    "work order {wo}: qty is {actual} but qty_0 {qty0} + the {} distinct scans \
                     accepted = {expected}{details}",
                    scans.len()
                ),
                ops,
            });
        } else if !ops.is_empty() && !overwritten {
            verdict.violations.push(Violation {
                invariant: I_WO.name.into(),
                explanation: format!("work order {wo}: the total matches by accident{details}"),
                ops,
            });
        }
    }
    verdict
}

/// I-MX, mutual exclusion with fencing (document 002): every effect the store accepts was
/// issued under a lease that no other process had acquired since. An effect accepted after
/// another process acquired the same work order (the writer paused, was partitioned, its
/// write was delayed, or Redis lost the lock in a failover) is a violation.
pub fn fenced_effects(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let acquisitions: Vec<(usize, &OpRecord)> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.tag.kind() == WoTag::ACQUIRE_LEASE && op.succeeded())
        .collect();
    for (ei, effect) in history.ops.iter().enumerate() {
        let Some(&WoTag::Effect {
            work_order, scan, ..
        }) = WoTag::of(&effect.tag)
        else {
            continue;
        };
        if !effect.accepted() {
            continue;
        }
        let Some(accepted_at) = effect.durable_at else {
            continue;
        };
        let same_wo = |op: &OpRecord| matches!(WoTag::of(&op.tag), Some(&WoTag::AcquireLease { work_order: w }) if w == work_order);
        // The writer's lease: its latest acquisition applied before it issued the effect.
        let lease = acquisitions
            .iter()
            .filter(|(_, a)| a.process == effect.process && same_wo(a))
            .filter(|(_, a)| a.applied_at.is_some_and(|t| t <= effect.invoked_at))
            .max_by_key(|(_, a)| a.applied_at);
        let Some(&(li, lease)) = lease else {
            verdict.violations.push(Violation {
                invariant: I_MX.name.into(),
                explanation: format!(
                    "{} applied scan {scan} to {work_order} at {accepted_at} without ever \
                     holding its lease",
                    history.name(effect.process)
                ),
                ops: vec![ei],
            });
            continue;
        };
        let Some(leased_at) = lease.applied_at else {
            continue;
        };
        let usurper = acquisitions.iter().find(|(_, a)| {
            a.process != effect.process
                && same_wo(a)
                && a.applied_at
                    .is_some_and(|t| t > leased_at && t < accepted_at)
        });
        if let Some(&(ui, usurper)) = usurper {
            let usurped_at = usurper.applied_at.unwrap_or(Timestamp::ZERO);
            verdict.violations.push(Violation {
                invariant: I_MX.name.into(),
                explanation: format!(
                    "{writer} acquired {work_order} at {leased_at}, but {other} acquired it at \
                     {usurped_at}; {writer}'s effect for scan {scan} was still accepted at \
                     {accepted_at} (issued at {issued}) under the superseded lease",
                    writer = history.name(effect.process),
                    other = history.name(usurper.process),
                    issued = effect.invoked_at,
                ),
                ops: vec![li, ui, ei],
            });
        }
    }
    verdict
}

/// The consistency checker's soundness (R-002-06): every alarm must be justified, i.e. at some
/// instant of the checker's read window the store really held `qty != qty_0 + Σ log`. The
/// true state is rebuilt from the accepted effects, records and repairs in the history.
pub fn no_false_alarm(history: &History, state: &WoEnd) -> Verdict {
    let mut verdict = Verdict::default();
    let mut changes: Vec<(Timestamp, usize, WorkOrderId, QtyChange)> = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        let Some(at) = op.durable_at.filter(|_| op.accepted()) else {
            continue;
        };
        let change = match WoTag::of(&op.tag) {
            Some(&WoTag::Effect {
                work_order, qty, ..
            }) => (work_order, QtyChange::Add(qty.0)),
            Some(&WoTag::Record {
                work_order, qty, ..
            }) => (work_order, QtyChange::Log(qty.0)),
            Some(&WoTag::Repair { work_order }) => match repair_change(&op.op) {
                Some(change) => (work_order, change),
                None => continue,
            },
            _ => continue,
        };
        changes.push((at, i, change.0, change.1));
    }
    changes.sort_by_key(|(at, i, ..)| (*at, *i));
    for note in &history.notes {
        let Some(&WoNote::Alarm {
            work_order,
            expected,
            observed,
        }) = WoNote::of(&note.note)
        else {
            continue;
        };
        // The read window: the checker's last two reads completed before the alarm (a round
        // reads the log and the quantity).
        let round: Vec<Timestamp> = history
            .ops
            .iter()
            .filter(|op| op.process == note.process && op.tag.kind() == WoTag::CHECKER_READ)
            .filter(|op| op.completed_at.is_some_and(|t| t <= note.at))
            .filter_map(|op| op.applied_at)
            .rev()
            .take(2)
            .collect();
        let (Some(&first), Some(&last)) = (round.iter().min(), round.iter().max()) else {
            continue;
        };
        let qty0 = state
            .initial_qty
            .get(&work_order)
            .copied()
            .unwrap_or_default()
            .0;
        let consistent_at = |t: Timestamp| {
            let (mut qty, mut log) = (qty0, 0i64);
            for (_, _, wo, change) in changes.iter().filter(|(at, ..)| *at <= t) {
                if *wo == work_order {
                    change.apply(&mut qty, &mut log);
                }
            }
            qty == qty0.saturating_add(log)
        };
        let instants = std::iter::once(first).chain(
            changes
                .iter()
                .map(|(at, ..)| *at)
                .filter(|at| *at > first && *at <= last),
        );
        let justified = instants.into_iter().any(|t| !consistent_at(t));
        if !justified {
            verdict.violations.push(Violation {
                invariant: NO_FALSE_ALARM.name.into(),
                explanation: format!(
                    "{} raised an alarm at {} for {work_order} (read qty {observed}, computed \
                     qty_0 + log = {expected}) although the store was consistent at every \
                     instant of its reads from {first} to {last}: the reads were not one \
                     snapshot",
                    history.name(note.process),
                    note.at
                ),
                ops: Vec::new(),
            });
        }
    }
    verdict
}

/// A durable change to a work order's quantity or to the sum of its log.
enum QtyChange {
    Add(i64),
    SetTo(i64),
    Log(i64),
}

impl QtyChange {
    fn apply(&self, qty: &mut i64, log: &mut i64) {
        match self {
            QtyChange::Add(d) => *qty = qty.saturating_add(*d),
            QtyChange::SetTo(v) => *qty = *v,
            QtyChange::Log(d) => *log = log.saturating_add(*d),
        }
    }
}

fn repair_change(op: &StoreOp) -> Option<QtyChange> {
    let StoreOp::Sql(SqlOp::Exec(stmt)) = op else {
        return None;
    };
    let SqlStmt::Update { set, .. } = &**stmt else {
        return None;
    };
    set.iter().find_map(|a| match a {
        Assign::Set {
            column,
            value: Value::Int(v),
        } if column == "qty" => Some(QtyChange::SetTo(*v)),
        Assign::Add { column, delta } if column == "qty" => Some(QtyChange::Add(*delta)),
        _ => None,
    })
}

/// I-WO: every accepted scan applied exactly once ([`exactly_once`]).
pub const I_WO: Property = Property::always(
    "I-WO",
    "qty == qty_0 + the quantities of the distinct accepted scans, each applied once",
);
/// I-MX: mutual exclusion with fencing ([`fenced_effects`]).
pub const I_MX: Property = Property::always(
    "I-MX",
    "every effect the store accepts was issued under a lease nobody else acquired since",
);
/// The checker's soundness ([`no_false_alarm`]).
pub const NO_FALSE_ALARM: Property = Property::always(
    "no-false-alarm",
    "an alarm is raised only when the store really was inconsistent during the reads",
);
/// Protection: the Correct worker's fenced increment refused a write under a lease epoch
/// that had moved on.
pub const STALE_WRITE_FENCED: Property = Property::protection(
    "stale-write-fenced",
    "an effect issued under a superseded lease epoch was refused by the store",
);
/// Protection: a worker skipped a scan whose effect was already recorded.
pub const DUPLICATE_SKIPPED: Property = Property::protection(
    "duplicate-skipped",
    "a redelivered or resubmitted scan was recognised as applied and skipped",
);
/// Window: the queue delivered a job again (a stalled job, a nack, a lost ack).
pub const DELIVERED_AGAIN: Property = Property::sometimes(
    "delivered-again",
    "a job was delivered a second time (at-least-once delivery at work)",
);
/// Window: a process acquired a work order's lease while another still believed it held it.
pub const LEASE_SUPERSEDED: Property = Property::sometimes(
    "lease-superseded",
    "a lease was acquired by one worker while another had not released it",
);
/// Fault: a Redis failover landed in the run.
pub const FAILOVER_LANDED: Property = Property::sometimes(
    "failover-landed",
    "Redis failed over during the run, losing unreplicated writes",
);
/// Window: an effect became durable between two reads of one checker round.
pub const CHECKER_OVERLAPPED: Property = Property::sometimes(
    "checker-overlapped-update",
    "an increment landed between the two reads of a checker round",
);

/// How often each of document 002's `sometimes` properties held in a history, as a verdict
/// with no violation (a race keeps the counts of the properties it declares).
pub fn coverage(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let notes = |f: fn(&WoNote) -> bool| {
        history
            .notes
            .iter()
            .filter(|n| WoNote::of(&n.note).is_some_and(f))
            .count() as u64
    };
    verdict.count(
        STALE_WRITE_FENCED.name,
        notes(|n| matches!(n, WoNote::Fenced { .. })),
    );
    verdict.count(
        DUPLICATE_SKIPPED.name,
        notes(|n| matches!(n, WoNote::Skipped { .. })),
    );
    let again = history
        .ops
        .iter()
        .filter(|op| {
            matches!(&op.result, Some(Reply::Queue(QueueReply::Delivered(Some(d)))) if d.attempt > 1)
        })
        .count() as u64;
    verdict.count(DELIVERED_AGAIN.name, again);
    verdict.count(LEASE_SUPERSEDED.name, leases_superseded(history));
    let failovers = history
        .faults
        .iter()
        .filter(|f| f.fault == crate::history::Fault::Failover)
        .count() as u64;
    verdict.count(FAILOVER_LANDED.name, failovers);
    verdict.count(CHECKER_OVERLAPPED.name, checker_overlaps(history));
    verdict
}

/// Lease acquisitions that took a work order from a holder that had not released it.
fn leases_superseded(history: &History) -> u64 {
    let mut events: Vec<(Timestamp, usize, bool, WorkOrderId)> = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        let (Some(at), true) = (op.applied_at, op.succeeded()) else {
            continue;
        };
        match WoTag::of(&op.tag) {
            Some(&WoTag::AcquireLease { work_order }) => events.push((at, i, true, work_order)),
            Some(&WoTag::ReleaseLease { work_order }) => events.push((at, i, false, work_order)),
            _ => {}
        }
    }
    events.sort();
    let mut holder: BTreeMap<WorkOrderId, crate::ids::ProcessId> = BTreeMap::new();
    let mut superseded = 0;
    for (_, i, acquire, wo) in events {
        let process = history.ops[i].process;
        if acquire {
            if holder.insert(wo, process).is_some_and(|h| h != process) {
                superseded += 1;
            }
        } else if holder.get(&wo) == Some(&process) {
            holder.remove(&wo);
        }
    }
    superseded
}

/// Accepted effects that became durable between two consecutive reads of one checker.
fn checker_overlaps(history: &History) -> u64 {
    let mut reads: BTreeMap<crate::ids::ProcessId, Vec<Timestamp>> = BTreeMap::new();
    for op in &history.ops {
        if op.tag.kind() == WoTag::CHECKER_READ
            && let Some(at) = op.applied_at
        {
            reads.entry(op.process).or_default().push(at);
        }
    }
    let mut overlaps = 0;
    for op in &history.ops {
        let Some(at) = op.durable_at.filter(|_| op.accepted()) else {
            continue;
        };
        if op.tag.kind() != WoTag::EFFECT {
            continue;
        }
        let inside = reads
            .values()
            .any(|r| r.windows(2).any(|w| w[0] < at && at < w[1]));
        overlaps += u64::from(inside);
    }
    overlaps
}
