//! The scheduler family's tags (what each script call means) and notes (what its processes
//! report).

use std::fmt;

use crate::tag::{FamilyNote, FamilyTag, TagKind};

/// What an operation of the scheduler family means to its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SchedTag {
    /// A node's registration.
    Register {
        /// The node.
        node: String,
    },
    /// A node's heartbeat.
    Heartbeat {
        /// The node.
        node: String,
    },
    /// A node's query of the jobs bound to it.
    Poll {
        /// The node.
        node: String,
    },
    /// A scheduler's submit-and-bind of a job.
    Dispatch {
        /// The job.
        job: String,
    },
    /// A scheduler's re-dispatch decision for a job.
    Reap {
        /// The job.
        job: String,
    },
    /// A node's result for a job.
    Complete {
        /// The job.
        job: String,
        /// The node.
        node: String,
        /// The registration epoch the node ran the job under.
        epoch: u64,
    },
    /// A scheduler's node selection for a job, the binding left to a later call.
    Select {
        /// The job.
        job: String,
    },
    /// A scheduler's binding of a job to the node it selected.
    Bind {
        /// The job.
        job: String,
    },
    /// A monitor's read of the pool's members.
    Scan,
    /// A monitor's node-offline script (with the re-dispatch of the node's jobs).
    Offline {
        /// The node.
        node: String,
    },
    /// A scheduler's read of a job's state.
    Status {
        /// The job.
        job: String,
    },
    /// A scheduler's timeout finalize of a job at its deadline (R-004-06).
    Finalize {
        /// The job.
        job: String,
    },
    /// A scheduler's write of the job->node binding key with its TTL (R-004-06).
    Binding {
        /// The job.
        job: String,
    },
}

impl SchedTag {
    /// [`SchedTag::Register`].
    pub const REGISTER: TagKind = TagKind::new("sched-register");
    /// [`SchedTag::Heartbeat`].
    pub const HEARTBEAT: TagKind = TagKind::new("sched-heartbeat");
    /// [`SchedTag::Poll`].
    pub const POLL: TagKind = TagKind::new("sched-poll");
    /// [`SchedTag::Dispatch`].
    pub const DISPATCH: TagKind = TagKind::new("sched-dispatch");
    /// [`SchedTag::Reap`].
    pub const REAP: TagKind = TagKind::new("sched-reap");
    /// [`SchedTag::Complete`].
    pub const COMPLETE: TagKind = TagKind::new("sched-complete");
    /// [`SchedTag::Select`].
    pub const SELECT: TagKind = TagKind::new("sched-select");
    /// [`SchedTag::Bind`].
    pub const BIND: TagKind = TagKind::new("sched-bind");
    /// [`SchedTag::Scan`].
    pub const SCAN: TagKind = TagKind::new("sched-scan");
    /// [`SchedTag::Offline`].
    pub const OFFLINE: TagKind = TagKind::new("sched-offline");
    /// [`SchedTag::Status`].
    pub const STATUS: TagKind = TagKind::new("sched-status");
    /// [`SchedTag::Finalize`].
    pub const FINALIZE: TagKind = TagKind::new("sched-finalize");
    /// [`SchedTag::Binding`].
    pub const BINDING: TagKind = TagKind::new("sched-binding");
}

impl FamilyTag for SchedTag {
    fn kind(&self) -> TagKind {
        match self {
            SchedTag::Register { .. } => SchedTag::REGISTER,
            SchedTag::Heartbeat { .. } => SchedTag::HEARTBEAT,
            SchedTag::Poll { .. } => SchedTag::POLL,
            SchedTag::Dispatch { .. } => SchedTag::DISPATCH,
            SchedTag::Reap { .. } => SchedTag::REAP,
            SchedTag::Complete { .. } => SchedTag::COMPLETE,
            SchedTag::Select { .. } => SchedTag::SELECT,
            SchedTag::Bind { .. } => SchedTag::BIND,
            SchedTag::Scan => SchedTag::SCAN,
            SchedTag::Offline { .. } => SchedTag::OFFLINE,
            SchedTag::Status { .. } => SchedTag::STATUS,
            SchedTag::Finalize { .. } => SchedTag::FINALIZE,
            SchedTag::Binding { .. } => SchedTag::BINDING,
        }
    }
}

/// What a scheduler-family process reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SchedNote {
    /// The scheduler saw the job done and delivered its outcome to the client.
    Delivered {
        /// The job.
        job: String,
    },
    /// The scheduler's timeout finalize timed the job out and told the client so.
    TimedOut {
        /// The job.
        job: String,
    },
    /// A node's heartbeat found its lease gone: it abandons its jobs and registers again.
    LeaseLost {
        /// The node.
        node: String,
        /// The epoch it held.
        epoch: u64,
    },
}

impl FamilyNote for SchedNote {}

impl fmt::Display for SchedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedNote::Delivered { job } => write!(f, "delivers the outcome of {job}"),
            SchedNote::TimedOut { job } => write!(f, "tells the client {job} timed out"),
            SchedNote::LeaseLost { node, epoch } => {
                write!(
                    f,
                    "{node} lost its lease (epoch {epoch}): abandons its jobs"
                )
            }
        }
    }
}
