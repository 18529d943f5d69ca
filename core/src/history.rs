//! Recorded histories: every operation's invocation, application by the store and completion,
//! with virtual timestamps and processes, plus injected faults and protocol outcomes. Oracles
//! judge histories; reports render them as timelines.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::ids::{EndpointId, OpId, ProcessId, Quantity, ScanId, WorkOrderId};
use crate::ops::{QueueReply, Reply, StoreOp};
use crate::time::{Duration, Timestamp};

/// What an operation means to the protocol that issued it. Oracles use the tag to know which
/// operations are lease acquisitions, effects and so on; whether the operation took effect
/// always comes from the store's recorded reply, never from the process.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tag {
    /// The terminal submits a scan (an enqueue).
    Submit {
        /// The scan.
        scan: ScanId,
        /// Its work order.
        work_order: WorkOrderId,
        /// Its quantity.
        qty: Quantity,
    },
    /// A worker asks the queue for a job.
    Fetch,
    /// A worker completes a job.
    Ack,
    /// A worker fails a job back to the queue.
    Nack,
    /// The queue client extends a job's lock while the worker processes it.
    ExtendJob,
    /// Acquire the lease (lock) on a work order.
    AcquireLease {
        /// The work order.
        work_order: WorkOrderId,
    },
    /// Renew the lease.
    RenewLease {
        /// The work order.
        work_order: WorkOrderId,
    },
    /// Release the lease.
    ReleaseLease {
        /// The work order.
        work_order: WorkOrderId,
    },
    /// Look up whether an effect was already recorded.
    FindRecord {
        /// The scan.
        scan: ScanId,
    },
    /// Apply the scan's effect to the work order (`$inc`).
    Effect {
        /// The scan.
        scan: ScanId,
        /// The work order.
        work_order: WorkOrderId,
        /// The increment.
        qty: Quantity,
    },
    /// Record that the scan's effect was applied (a log or dedup row).
    Record {
        /// The scan.
        scan: ScanId,
        /// The work order.
        work_order: WorkOrderId,
        /// The quantity recorded.
        qty: Quantity,
    },
    /// Transaction control.
    Tx,
    /// The consistency checker reads state.
    CheckerRead,
    /// The consistency checker overwrites a work order's quantity.
    Repair {
        /// The work order.
        work_order: WorkOrderId,
    },
    /// Documents 001/003: a proxy request chooses an endpoint for an attempt (reads the
    /// health table).
    Select,
    /// Documents 001/003: a request attempt sent to an upstream endpoint.
    Call {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// Documents 001/003: a health probe sent to an upstream endpoint (or its start).
    Probe {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// Documents 001/003: a health observation written to the endpoint table.
    Observe {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// Document 003: an operation on the failure queue.
    FailureQueue,
    /// Document 003: the failure queue's persistence (file writes, reads, loading).
    Persist,
}

/// A [`Tag`] without its data, for matching operations in scripted schedules
/// ("when `W_A` sends its 1st `Effect`").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TagKind {
    /// [`Tag::Submit`].
    Submit,
    /// [`Tag::Fetch`].
    Fetch,
    /// [`Tag::Ack`].
    Ack,
    /// [`Tag::Nack`].
    Nack,
    /// [`Tag::ExtendJob`].
    ExtendJob,
    /// [`Tag::AcquireLease`].
    AcquireLease,
    /// [`Tag::RenewLease`].
    RenewLease,
    /// [`Tag::ReleaseLease`].
    ReleaseLease,
    /// [`Tag::FindRecord`].
    FindRecord,
    /// [`Tag::Effect`].
    Effect,
    /// [`Tag::Record`].
    Record,
    /// [`Tag::Tx`].
    Tx,
    /// [`Tag::CheckerRead`].
    CheckerRead,
    /// [`Tag::Repair`].
    Repair,
    /// [`Tag::Select`].
    Select,
    /// [`Tag::Call`].
    Call,
    /// [`Tag::Probe`].
    Probe,
    /// [`Tag::Observe`].
    Observe,
    /// [`Tag::FailureQueue`].
    FailureQueue,
    /// [`Tag::Persist`].
    Persist,
}

impl Tag {
    /// The tag without its data.
    pub fn kind(&self) -> TagKind {
        match self {
            Tag::Submit { .. } => TagKind::Submit,
            Tag::Fetch => TagKind::Fetch,
            Tag::Ack => TagKind::Ack,
            Tag::Nack => TagKind::Nack,
            Tag::ExtendJob => TagKind::ExtendJob,
            Tag::AcquireLease { .. } => TagKind::AcquireLease,
            Tag::RenewLease { .. } => TagKind::RenewLease,
            Tag::ReleaseLease { .. } => TagKind::ReleaseLease,
            Tag::FindRecord { .. } => TagKind::FindRecord,
            Tag::Effect { .. } => TagKind::Effect,
            Tag::Record { .. } => TagKind::Record,
            Tag::Tx => TagKind::Tx,
            Tag::CheckerRead => TagKind::CheckerRead,
            Tag::Repair { .. } => TagKind::Repair,
            Tag::Select => TagKind::Select,
            Tag::Call { .. } => TagKind::Call,
            Tag::Probe { .. } => TagKind::Probe,
            Tag::Observe { .. } => TagKind::Observe,
            Tag::FailureQueue => TagKind::FailureQueue,
            Tag::Persist => TagKind::Persist,
        }
    }
}

/// One operation, from invocation to completion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpRecord {
    /// The process that issued it.
    pub process: ProcessId,
    /// The process' own id for it.
    pub id: OpId,
    /// What it means.
    pub tag: Tag,
    /// The operation.
    pub op: StoreOp,
    /// When the process emitted it.
    pub invoked_at: Timestamp,
    /// When the store executed it; `None` if it never arrived (partition, crash).
    pub applied_at: Option<Timestamp>,
    /// When its writes became durable: at the store for autocommit and Redis, at `COMMIT`
    /// for statements inside a transaction; `None` if they never did.
    pub durable_at: Option<Timestamp>,
    /// What the store answered, even if the answer was lost on the way back.
    pub result: Option<Reply>,
    /// When the process learnt the outcome (the reply, or its timeout).
    pub completed_at: Option<Timestamp>,
    /// Whether the process saw a timeout instead of `result`.
    pub timed_out: bool,
}

impl OpRecord {
    /// Whether the store applied it and answered success ([`Reply::is_success`]).
    pub fn succeeded(&self) -> bool {
        self.result.as_ref().is_some_and(Reply::is_success)
    }

    /// Whether its writes were accepted: it succeeded and became durable.
    pub fn accepted(&self) -> bool {
        self.succeeded() && self.durable_at.is_some()
    }
}

/// Which store a fault concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StoreId {
    /// Redis: the key space and the Bull-like queue that lives in it.
    Redis,
    /// The SQL database (document 002's MongoDB stand-in).
    Sql,
    /// A process's own memory (documents 001 and 003: the endpoint health table, the failure
    /// queue and the local file it is saved to), reached without a network.
    Local,
    /// The upstream API endpoints the proxy of documents 001 and 003 forwards requests to.
    Upstream,
}

/// An injected fault.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Fault {
    /// The process is paused: no timers fire and nothing is sent until it resumes.
    Pause {
        /// The process.
        process: ProcessId,
        /// For how long.
        duration: Duration,
    },
    /// Messages between the process and the store are dropped.
    Partition {
        /// The process.
        process: ProcessId,
        /// The store.
        store: StoreId,
    },
    /// A partition ends.
    Heal {
        /// The process.
        process: ProcessId,
        /// The store.
        store: StoreId,
    },
    /// The process is killed, losing its in-memory state and its SQL session.
    Crash {
        /// The process.
        process: ProcessId,
    },
    /// The process starts again, fresh.
    Restart {
        /// The process.
        process: ProcessId,
    },
    /// Redis' replica is promoted; writes not yet replicated are lost.
    Failover,
    /// Redis restarts without persistence: every key and every queued job is lost.
    RedisRestart,
    /// An operation's request is delayed in the network.
    Delay {
        /// The process whose operation it is.
        process: ProcessId,
        /// The operation.
        op: OpId,
        /// The extra delay.
        by: Duration,
    },
    /// The store applied the operation but its reply is lost.
    DropReply {
        /// The process whose operation it is.
        process: ProcessId,
        /// The operation.
        op: OpId,
    },
}

/// A fault and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FaultRecord {
    /// When.
    pub at: Timestamp,
    /// What.
    pub fault: Fault,
}

/// An outcome a process reports (a checker's alarm, a job given up).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Note {
    /// The consistency checker believes the work order is inconsistent.
    Alarm {
        /// The work order.
        work_order: WorkOrderId,
        /// `qty_0 + Σ log` as the checker computed it.
        expected: Quantity,
        /// `qty` as the checker read it.
        observed: Quantity,
    },
    /// A worker gave a job back (lease lost, lock not acquired, an error).
    Abandoned {
        /// The scan.
        scan: ScanId,
        /// Why.
        reason: String,
    },
    /// A worker skipped a job it believes was already applied.
    Skipped {
        /// The scan.
        scan: ScanId,
    },
}

/// A note and who reported it when.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NoteRecord {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub process: ProcessId,
    /// What.
    pub note: Note,
}

/// A complete run's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct History {
    /// Process names by id (`W_A`, `W_B`, `T`, ...), for explanations.
    pub process_names: Vec<(ProcessId, String)>,
    /// Every operation, in invocation order.
    pub ops: Vec<OpRecord>,
    /// Every injected fault, in order.
    pub faults: Vec<FaultRecord>,
    /// Every reported outcome, in order.
    pub notes: Vec<NoteRecord>,
}

impl History {
    /// The process' display name.
    pub fn name(&self, process: ProcessId) -> String {
        self.process_names
            .iter()
            .find(|(p, _)| *p == process)
            .map_or_else(|| process.to_string(), |(_, n)| n.clone())
    }

    /// The timeline in the style of the documents: one line per step (`T1`, `T2`, ...) with
    /// time, process, operation, result and injected faults, ordered by time. Idle polls of
    /// the queue that found nothing are left out.
    pub fn timeline(&self) -> Vec<TimelineStep> {
        let mut steps = Vec::new();
        for (index, op) in self.ops.iter().enumerate() {
            let empty_poll = op.tag == Tag::Fetch
                && matches!(op.result, Some(Reply::Queue(QueueReply::Delivered(None))));
            if !empty_poll {
                steps.push((op.invoked_at, 0, index, TimelineKind::Op(index)));
            }
        }
        for (index, f) in self.faults.iter().enumerate() {
            steps.push((f.at, 1, index, TimelineKind::Fault(index)));
        }
        for (index, n) in self.notes.iter().enumerate() {
            steps.push((n.at, 2, index, TimelineKind::Note(index)));
        }
        steps.sort_by_key(|(at, class, index, _)| (*at, *class, *index));
        steps
            .into_iter()
            .enumerate()
            .map(|(i, (at, _, _, kind))| TimelineStep {
                step: i + 1,
                at,
                kind,
            })
            .collect()
    }

    /// Renders one timeline step as a line of text.
    pub fn render_step(&self, step: &TimelineStep) -> String {
        let mut line = format!("T{:<3} {}  ", step.step, step.at);
        match step.kind {
            TimelineKind::Op(i) => {
                let op = &self.ops[i];
                let _ = write!(line, "{:<4} {}", self.name(op.process), op.op);
                match (&op.result, op.applied_at) {
                    (Some(r), Some(at)) => {
                        let _ = write!(line, " -> {r} (applied {at}");
                        if op.timed_out {
                            let _ = write!(line, ", reply lost: caller timed out");
                        }
                        let _ = write!(line, ")");
                    }
                    _ => {
                        let _ = write!(line, " -> never applied");
                        if op.timed_out {
                            let _ = write!(line, " (caller timed out)");
                        }
                    }
                }
            }
            TimelineKind::Fault(i) => {
                let _ = write!(line, "FAULT {}", FaultDisplay(self, &self.faults[i].fault));
            }
            TimelineKind::Note(i) => {
                let n = &self.notes[i];
                let _ = write!(line, "{:<4} {}", self.name(n.process), NoteDisplay(&n.note));
            }
        }
        line
    }
}

/// One line of a timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineStep {
    /// 1-based step number (`T1`, `T2`, ...).
    pub step: usize,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: TimelineKind,
}

/// What a timeline step shows: an index into [`History::ops`], `faults` or `notes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineKind {
    /// An operation.
    Op(usize),
    /// A fault.
    Fault(usize),
    /// A note.
    Note(usize),
}

struct FaultDisplay<'a>(&'a History, &'a Fault);

impl fmt::Display for FaultDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        match self.1 {
            Fault::Pause { process, duration } => {
                write!(f, "pause({}, {duration})", h.name(*process))
            }
            Fault::Partition { process, store } => {
                write!(f, "partition({}, {store:?})", h.name(*process))
            }
            Fault::Heal { process, store } => write!(f, "heal({}, {store:?})", h.name(*process)),
            Fault::Crash { process } => write!(f, "crash({})", h.name(*process)),
            Fault::Restart { process } => write!(f, "restart({})", h.name(*process)),
            Fault::Failover => write!(f, "failover(Redis): unreplicated writes lost"),
            Fault::RedisRestart => write!(f, "restart(Redis): every key and job lost"),
            Fault::Delay { process, op, by } => {
                write!(f, "delay({} {op}, {by})", h.name(*process))
            }
            Fault::DropReply { process, op } => {
                write!(f, "drop reply to {} {op}", h.name(*process))
            }
        }
    }
}

struct NoteDisplay<'a>(&'a Note);

impl fmt::Display for NoteDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Note::Alarm {
                work_order,
                expected,
                observed,
            } => write!(
                f,
                "ALARM {work_order}: qty {observed} but qty_0 + log = {expected}"
            ),
            Note::Abandoned { scan, reason } => write!(f, "abandons {scan}: {reason}"),
            Note::Skipped { scan } => write!(f, "skips {scan}: already applied"),
        }
    }
}
