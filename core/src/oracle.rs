//! Oracles: pure functions from a recorded [`History`] (plus the final store state) to a
//! [`Verdict`] whose explanation names the processes, times and values involved. They live in
//! `core` so that the simulators and the real-server runs share them.
//!
//! Every oracle here has a test that feeds it a known-bad history.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::history::{History, Note, OpRecord, Tag};
use crate::ids::{Quantity, ScanId, WorkOrderId};
use crate::ops::{Assign, QueueReply, Reply, SqlOp, SqlStmt, StoreOp, Value};
use crate::time::Timestamp;

/// One broken invariant, explained.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// The invariant's name (`I-WO`, `I-MX`, ...).
    pub invariant: String,
    /// What happened, naming processes, times and values.
    pub explanation: String,
    /// The operations involved, as indexes into [`History::ops`] (highlighted in timelines).
    pub ops: Vec<usize>,
}

/// The outcome of judging a history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    /// Every violation found; empty when the invariants hold.
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Whether every invariant held.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    /// Adds the violations of another verdict.
    pub fn merge(mut self, other: Verdict) -> Verdict {
        self.violations.extend(other.violations);
        self
    }

    /// A human explanation: one paragraph per violation, or a line saying all held.
    pub fn explanation(&self) -> String {
        if self.holds() {
            return "all invariants held".to_string();
        }
        let mut out = String::new();
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = write!(out, "{} violated: {}", v.invariant, v.explanation);
        }
        out
    }
}

/// The end state of a run that oracles need besides the history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    /// Each work order's quantity before the run (`qty_0`).
    pub initial_qty: BTreeMap<WorkOrderId, Quantity>,
    /// Each work order's committed quantity at the end.
    pub final_qty: BTreeMap<WorkOrderId, Quantity>,
    /// Whether the run reached quiescence (no job left, nothing in flight).
    pub quiescent: bool,
    /// Documents 001/003: the failure queue's end state, when the run has one.
    pub queue: Option<crate::health::oracle::QueueEnd>,
}

/// I-WO, exactly-once effect (document 002): at quiescence every work order's quantity equals
/// `qty_0` plus the quantities of the distinct scans the queue accepted, each applied once.
pub fn exactly_once(history: &History, state: &FinalState) -> Verdict {
    let mut verdict = Verdict::default();
    if !state.quiescent {
        verdict.violations.push(Violation {
            invariant: "I-WO".into(),
            explanation: "the run did not reach quiescence: jobs were still queued or in flight \
                          when the time limit ran out, so no scan can be shown applied"
                .into(),
            ops: Vec::new(),
        });
        return verdict;
    }
    // Scans the queue accepted, by work order.
    let mut accepted: BTreeMap<WorkOrderId, BTreeMap<ScanId, Quantity>> = BTreeMap::new();
    for op in &history.ops {
        if let Tag::Submit {
            scan,
            work_order,
            qty,
        } = op.tag
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
        if let Tag::Effect { scan, .. } = op.tag
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
        for (scan, qty) in &scans {
            let effects = applied.get(scan).map_or(&[][..], Vec::as_slice);
            if effects.len() == 1 {
                continue;
            }
            if effects.is_empty() {
                let _ = write!(details, "; scan {scan} (qty {qty}) was never applied");
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
            if matches!(op.tag, Tag::Repair { work_order } if work_order == wo) && op.accepted() {
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
        if actual != expected {
            verdict.violations.push(Violation {
                invariant: "I-WO".into(),
                explanation: format!(
                    "work order {wo}: qty is {actual} but qty_0 {qty0} + the {} distinct scans \
                     accepted = {expected}{details}",
                    scans.len()
                ),
                ops,
            });
        } else if !ops.is_empty() && !details.contains("overwrote") {
            verdict.violations.push(Violation {
                invariant: "I-WO".into(),
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
        .filter(|(_, op)| matches!(op.tag, Tag::AcquireLease { .. }) && op.succeeded())
        .collect();
    for (ei, effect) in history.ops.iter().enumerate() {
        let Tag::Effect {
            work_order, scan, ..
        } = effect.tag
        else {
            continue;
        };
        if !effect.accepted() {
            continue;
        }
        let Some(accepted_at) = effect.durable_at else {
            continue;
        };
        let same_wo = |op: &OpRecord| matches!(op.tag, Tag::AcquireLease { work_order: w } if w == work_order);
        // The writer's lease: its latest acquisition applied before it issued the effect.
        let lease = acquisitions
            .iter()
            .filter(|(_, a)| a.process == effect.process && same_wo(a))
            .filter(|(_, a)| a.applied_at.is_some_and(|t| t <= effect.invoked_at))
            .max_by_key(|(_, a)| a.applied_at);
        let Some(&(li, lease)) = lease else {
            verdict.violations.push(Violation {
                invariant: "I-MX".into(),
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
                invariant: "I-MX".into(),
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
pub fn no_false_alarm(history: &History, state: &FinalState) -> Verdict {
    let mut verdict = Verdict::default();
    let mut changes: Vec<(Timestamp, usize, WorkOrderId, QtyChange)> = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        let Some(at) = op.durable_at.filter(|_| op.accepted()) else {
            continue;
        };
        let change = match op.tag {
            Tag::Effect {
                work_order, qty, ..
            } => (work_order, QtyChange::Add(qty.0)),
            Tag::Record {
                work_order, qty, ..
            } => (work_order, QtyChange::Log(qty.0)),
            Tag::Repair { work_order } => match repair_change(&op.op) {
                Some(change) => (work_order, change),
                None => continue,
            },
            _ => continue,
        };
        changes.push((at, i, change.0, change.1));
    }
    changes.sort_by_key(|(at, i, ..)| (*at, *i));
    for note in &history.notes {
        let Note::Alarm {
            work_order,
            expected,
            observed,
        } = note.note
        else {
            continue;
        };
        // The read window: the checker's last two reads completed before the alarm (a round
        // reads the log and the quantity).
        let round: Vec<Timestamp> = history
            .ops
            .iter()
            .filter(|op| op.process == note.process && op.tag == Tag::CheckerRead)
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
                invariant: "no-false-alarm".into(),
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
    let StoreOp::Sql(SqlOp::Exec(SqlStmt::Update { set, .. })) = op else {
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
