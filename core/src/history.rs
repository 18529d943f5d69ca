//! Recorded histories: every operation's invocation, application by the store and completion,
//! with virtual timestamps and processes, plus injected faults and protocol outcomes. Oracles
//! judge histories; reports render them as timelines.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::ids::{OpId, ProcessId};
use crate::ops::{QueueOp, QueueReply, Reply, StoreOp};
use crate::tag::{Note, Tag};
use crate::time::{ClockSkew, Duration, Timestamp};

/// One operation, from invocation to completion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
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
    /// When its writes became durable: at the store for autocommit SQL, at `COMMIT` for
    /// statements inside a transaction, when the replica received them for a Redis write
    /// (a read or a write that changed nothing: at the store); `None` if they never did.
    pub durable_at: Option<Timestamp>,
    /// When a fault lost its writes before they became durable: a Redis failover or restart
    /// before the replica had them. Such an operation succeeded at the store but was never
    /// accepted ([`OpRecord::accepted`] is false).
    pub lost_at: Option<Timestamp>,
    /// What the store answered, even if the answer was lost on the way back.
    pub result: Option<Reply>,
    /// When the process learnt the outcome (the reply, or its timeout).
    pub completed_at: Option<Timestamp>,
    /// Whether the process saw a timeout instead of `result`.
    pub timed_out: bool,
}

impl OpRecord {
    /// Whether the store applied it and answered success ([`Reply::is_success_of`]).
    pub fn succeeded(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.is_success_of(&self.op))
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
    /// The load balancer in front of push connections between processes
    /// ([`crate::PushOp`]): a process cut off from it loses its connections.
    Push,
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
    /// Redis restarts without persistence: every key of the key space is lost. The job queue
    /// survives: it is modelled as Bull on a Redis that persists its queue (the documents'
    /// deployments do), so a restart costs the queue only its in-flight replies.
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
    /// From now on the process's clock has this error (stores keep true time).
    Clock {
        /// The process.
        process: ProcessId,
        /// Its clock's error.
        skew: ClockSkew,
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

/// A note and who reported it when.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct NoteRecord {
    /// When.
    pub at: Timestamp,
    /// Who.
    pub process: ProcessId,
    /// What.
    pub note: Note,
}

/// A complete run's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
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
    /// Checks the history is well formed: every operation was applied at most once, between
    /// its invocation and its completion, became durable no earlier than it was applied, and
    /// completed no earlier than it was invoked; faults and notes are in time order. The
    /// worlds assert it at the end of every run.
    pub fn check_well_formed(&self) -> Result<(), String> {
        for (i, op) in self.ops.iter().enumerate() {
            let who = || format!("operation {i} ({} {})", self.name(op.process), op.op);
            if let Some(applied) = op.applied_at
                && applied < op.invoked_at
            {
                return Err(format!(
                    "{} applied at {applied}, before its invocation at {}",
                    who(),
                    op.invoked_at
                ));
            }
            if let (Some(applied), Some(done)) = (op.applied_at, op.completed_at)
                && done < applied
                && !op.timed_out
            {
                return Err(format!(
                    "{} completed at {done} with the store's reply, before it was applied at \
                     {applied}",
                    who()
                ));
            }
            if let Some(done) = op.completed_at
                && done < op.invoked_at
            {
                return Err(format!(
                    "{} completed at {done}, before its invocation at {}",
                    who(),
                    op.invoked_at
                ));
            }
            match (op.applied_at, op.lost_at) {
                (_, Some(l)) if op.durable_at.is_some() => {
                    return Err(format!("{} both durable and lost at {l}", who()));
                }
                (None, Some(l)) => {
                    return Err(format!("{} lost at {l} but never applied", who()));
                }
                (Some(a), Some(l)) if l < a => {
                    return Err(format!(
                        "{} lost at {l}, before it was applied at {a}",
                        who()
                    ));
                }
                _ => {}
            }
            match (op.applied_at, op.durable_at) {
                (None, Some(d)) => {
                    return Err(format!("{} durable at {d} but never applied", who()));
                }
                (Some(a), Some(d)) if d < a => {
                    return Err(format!(
                        "{} durable at {d}, before it was applied at {a}",
                        who()
                    ));
                }
                _ => {}
            }
            if op.applied_at.is_some() != op.result.is_some() {
                return Err(format!(
                    "{} has a store result without an apply time, or the reverse",
                    who()
                ));
            }
        }
        fn in_order(mut times: impl Iterator<Item = Timestamp>) -> bool {
            let mut last = Timestamp::ZERO;
            times.all(|t| {
                let ok = t >= last;
                last = t;
                ok
            })
        }
        if !in_order(self.faults.iter().map(|f| f.at)) {
            return Err("faults are not recorded in time order".into());
        }
        if !in_order(self.notes.iter().map(|n| n.at)) {
            return Err("notes are not recorded in time order".into());
        }
        Ok(())
    }

    /// When Redis restarted (every key lost), in the order recorded: oracles use it to tell a
    /// write the restart erased from one that took effect.
    pub fn redis_restarts(&self) -> Vec<Timestamp> {
        self.faults
            .iter()
            .filter(|f| matches!(f.fault, Fault::RedisRestart))
            .map(|f| f.at)
            .collect()
    }

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
            let empty_poll = matches!(op.op, StoreOp::Queue(QueueOp::Fetch))
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

    /// What `process`'s clock read at true time `at`, if a [`Fault::Clock`] skewed it by
    /// then (the latest one before `at`); `None` for a true clock.
    pub fn local_time(&self, process: ProcessId, at: Timestamp) -> Option<Timestamp> {
        let skew = self
            .faults
            .iter()
            .filter(|f| f.at <= at)
            .filter_map(|f| match &f.fault {
                Fault::Clock { process: p, skew } if *p == process => Some(*skew),
                _ => None,
            })
            .next_back()?;
        (skew != ClockSkew::NONE).then(|| skew.read(at))
    }

    /// Renders one timeline step as a line of text. A step of a process whose clock is
    /// skewed also shows what its clock read (`[W_A's clock 00:01.250]`).
    pub fn render_step(&self, step: &TimelineStep) -> String {
        let mut line = format!("T{:<3} {}  ", step.step, step.at);
        let process = match step.kind {
            TimelineKind::Op(i) => Some(self.ops[i].process),
            TimelineKind::Note(i) => Some(self.notes[i].process),
            TimelineKind::Fault(_) => None,
        };
        if let Some(p) = process
            && let Some(local) = self.local_time(p, step.at)
        {
            let _ = write!(line, "[{}'s clock {local}]  ", self.name(p));
        }
        match step.kind {
            TimelineKind::Op(i) => {
                let op = &self.ops[i];
                let _ = write!(line, "{:<4} {}", self.name(op.process), op.op);
                match (&op.result, op.applied_at) {
                    (Some(r), Some(at)) => {
                        let _ = write!(line, " -> {r} (applied {at}");
                        if let Some(lost) = op.lost_at {
                            let _ = write!(line, ", write lost at {lost}: never replicated");
                        }
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
                let _ = write!(line, "{:<4} {}", self.name(n.process), n.note);
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
            Fault::RedisRestart => write!(f, "restart(Redis): every key lost, queued jobs kept"),
            Fault::Delay { process, op, by } => {
                write!(f, "delay({} {op}, {by})", h.name(*process))
            }
            Fault::DropReply { process, op } => {
                write!(f, "drop reply to {} {op}", h.name(*process))
            }
            Fault::Clock { process, skew } => {
                write!(f, "clock({}): {skew}", h.name(*process))
            }
        }
    }
}
