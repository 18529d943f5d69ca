//! The job FSM's tags (what each operation means) and notes (what its processes report).

use std::fmt;

use super::JobState;
use crate::tag::{FamilyNote, FamilyTag, TagKind};

/// What an operation of the job FSM means to its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobTag {
    /// A transition of the job's record to `to` (`sched_transition`), with its id (a retry
    /// carries the same id).
    Transition {
        /// The job.
        job: String,
        /// The state it moves the job to.
        to: JobState,
        /// The transition's id.
        tx: String,
    },
    /// A read of the job's record (state and version).
    Read {
        /// The job.
        job: String,
    },
    /// `Correct`: the outcome about to be told, stored durably first (first one wins).
    StoreOutcome {
        /// The job.
        job: String,
        /// The outcome.
        outcome: JobState,
    },
    /// `Correct`: a read of the job's durable outcome (after losing the store, or before
    /// starting over a job whose record is gone).
    ReadOutcome {
        /// The job.
        job: String,
    },
}

impl JobTag {
    /// A transition to `created`.
    pub const TO_CREATED: TagKind = TagKind::new("job-to-created");
    /// A transition to `dispatched`.
    pub const TO_DISPATCHED: TagKind = TagKind::new("job-to-dispatched");
    /// A transition to `running`.
    pub const TO_RUNNING: TagKind = TagKind::new("job-to-running");
    /// A transition to `done`.
    pub const TO_DONE: TagKind = TagKind::new("job-to-done");
    /// A transition to `failed`.
    pub const TO_FAILED: TagKind = TagKind::new("job-to-failed");
    /// A transition to `timed_out`.
    pub const TO_TIMED_OUT: TagKind = TagKind::new("job-to-timed-out");
    /// [`JobTag::Read`].
    pub const READ: TagKind = TagKind::new("job-read");
    /// [`JobTag::StoreOutcome`].
    pub const STORE_OUTCOME: TagKind = TagKind::new("job-store-outcome");
    /// [`JobTag::ReadOutcome`].
    pub const READ_OUTCOME: TagKind = TagKind::new("job-read-outcome");

    /// The kind of a transition to `to`.
    pub fn to_kind(to: JobState) -> TagKind {
        match to {
            JobState::Created => JobTag::TO_CREATED,
            JobState::Dispatched => JobTag::TO_DISPATCHED,
            JobState::Running => JobTag::TO_RUNNING,
            JobState::Done => JobTag::TO_DONE,
            JobState::Failed => JobTag::TO_FAILED,
            JobState::TimedOut => JobTag::TO_TIMED_OUT,
        }
    }
}

impl FamilyTag for JobTag {
    fn kind(&self) -> TagKind {
        match self {
            JobTag::Transition { to, .. } => JobTag::to_kind(*to),
            JobTag::Read { .. } => JobTag::READ,
            JobTag::StoreOutcome { .. } => JobTag::STORE_OUTCOME,
            JobTag::ReadOutcome { .. } => JobTag::READ_OUTCOME,
        }
    }
}

/// What a job-FSM process reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobNote {
    /// The process' memory now holds `state` for the job, as the state of the job's record
    /// in Redis (what FSM2 compares with the record).
    Memory {
        /// The job.
        job: String,
        /// The state.
        state: JobState,
    },
    /// The process handed the job to a node, which runs it: one execution.
    Executed {
        /// The job.
        job: String,
        /// The id of the transition to `dispatched` it followed.
        tx: String,
    },
    /// `Correct`: about to tell `proposed` (or, `None`, to start over a job whose record was
    /// gone), the process found `stored`, another outcome, stored durably by `writer`, and
    /// tells that one instead.
    Adopted {
        /// The job.
        job: String,
        /// What it would have told (`None`: nothing yet, it would have started the job over).
        proposed: Option<JobState>,
        /// The durable outcome it tells.
        stored: JobState,
        /// Who stored it.
        writer: String,
    },
}

impl FamilyNote for JobNote {}

impl fmt::Display for JobNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobNote::Memory { job, state } => write!(f, "holds {job} {} in memory", state.as_str()),
            JobNote::Executed { job, .. } => write!(f, "hands {job} to a node, which runs it"),
            JobNote::Adopted {
                job,
                proposed,
                stored,
                writer,
            } => write!(
                f,
                "finds {job}'s outcome {} stored by {writer} and tells it (instead of {})",
                stored.as_str(),
                proposed.map_or("starting it over", JobState::as_str)
            ),
        }
    }
}
