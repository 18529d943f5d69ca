//! Document 002's operation tags and notes: what each store operation of a worker, the
//! terminal or the checker means, and what they report.

use std::fmt;

use crate::ids::{Quantity, ScanId, WorkOrderId};
use crate::tag::{FamilyNote, FamilyTag, Tag, TagKind};

/// What an operation of document 002 means to its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WoTag {
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
}

impl WoTag {
    /// [`WoTag::Submit`]'s kind.
    pub const SUBMIT: TagKind = TagKind::new("submit");
    /// [`WoTag::Fetch`]'s kind.
    pub const FETCH: TagKind = TagKind::new("fetch");
    /// [`WoTag::Ack`]'s kind.
    pub const ACK: TagKind = TagKind::new("ack");
    /// [`WoTag::Nack`]'s kind.
    pub const NACK: TagKind = TagKind::new("nack");
    /// [`WoTag::ExtendJob`]'s kind.
    pub const EXTEND_JOB: TagKind = TagKind::new("extend-job");
    /// [`WoTag::AcquireLease`]'s kind.
    pub const ACQUIRE_LEASE: TagKind = TagKind::new("acquire-lease");
    /// [`WoTag::RenewLease`]'s kind.
    pub const RENEW_LEASE: TagKind = TagKind::new("renew-lease");
    /// [`WoTag::ReleaseLease`]'s kind.
    pub const RELEASE_LEASE: TagKind = TagKind::new("release-lease");
    /// [`WoTag::FindRecord`]'s kind.
    pub const FIND_RECORD: TagKind = TagKind::new("find-record");
    /// [`WoTag::Effect`]'s kind.
    pub const EFFECT: TagKind = TagKind::new("effect");
    /// [`WoTag::Record`]'s kind.
    pub const RECORD: TagKind = TagKind::new("record");
    /// [`WoTag::Tx`]'s kind.
    pub const TX: TagKind = TagKind::new("tx");
    /// [`WoTag::CheckerRead`]'s kind.
    pub const CHECKER_READ: TagKind = TagKind::new("checker-read");
    /// [`WoTag::Repair`]'s kind.
    pub const REPAIR: TagKind = TagKind::new("repair");

    /// The document 002 tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&WoTag> {
        tag.get::<WoTag>()
    }
}

impl FamilyTag for WoTag {
    fn kind(&self) -> TagKind {
        match self {
            WoTag::Submit { .. } => WoTag::SUBMIT,
            WoTag::Fetch => WoTag::FETCH,
            WoTag::Ack => WoTag::ACK,
            WoTag::Nack => WoTag::NACK,
            WoTag::ExtendJob => WoTag::EXTEND_JOB,
            WoTag::AcquireLease { .. } => WoTag::ACQUIRE_LEASE,
            WoTag::RenewLease { .. } => WoTag::RENEW_LEASE,
            WoTag::ReleaseLease { .. } => WoTag::RELEASE_LEASE,
            WoTag::FindRecord { .. } => WoTag::FIND_RECORD,
            WoTag::Effect { .. } => WoTag::EFFECT,
            WoTag::Record { .. } => WoTag::RECORD,
            WoTag::Tx => WoTag::TX,
            WoTag::CheckerRead => WoTag::CHECKER_READ,
            WoTag::Repair { .. } => WoTag::REPAIR,
        }
    }
}

impl From<WoTag> for Tag {
    fn from(tag: WoTag) -> Tag {
        Tag::new(tag)
    }
}

/// What a process of document 002 reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WoNote {
    /// The consistency checker believes the work order is inconsistent.
    Alarm {
        /// The work order.
        work_order: WorkOrderId,
        /// `qty_0 + Σ log` as the checker computed it.
        expected: Quantity,
        /// `qty` as the checker read it.
        observed: Quantity,
    },
    /// A worker gave a job back (lock not acquired, an error).
    Abandoned {
        /// The scan.
        scan: ScanId,
        /// Why.
        reason: &'static str,
    },
    /// The Correct worker's fenced increment found the lease epoch moved on: the stale write
    /// was refused and the job given back (the protection firing).
    Fenced {
        /// The scan.
        scan: ScanId,
    },
    /// A worker skipped a job it believes was already applied.
    Skipped {
        /// The scan.
        scan: ScanId,
    },
}

impl WoNote {
    /// The document 002 note of a recorded note, if it is one.
    pub fn of(note: &crate::tag::Note) -> Option<&WoNote> {
        note.get::<WoNote>()
    }
}

impl FamilyNote for WoNote {
    fn alarm(&self) -> bool {
        matches!(self, WoNote::Alarm { .. })
    }
}

impl fmt::Display for WoNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WoNote::Alarm {
                work_order,
                expected,
                observed,
            } => write!(
                f,
                "ALARM {work_order}: qty {observed} but qty_0 + log = {expected}"
            ),
            WoNote::Abandoned { scan, reason } => write!(f, "abandons {scan}: {reason}"),
            WoNote::Fenced { scan } => {
                write!(f, "abandons {scan}: fenced: the lease epoch moved on")
            }
            WoNote::Skipped { scan } => write!(f, "skips {scan}: already applied"),
        }
    }
}
