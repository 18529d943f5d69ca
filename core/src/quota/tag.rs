//! Document 000's quota operation tags and notes: what each store operation of a gateway
//! request, the sweeper or the cache machinery means, and what they report.

use std::fmt;

use crate::ops::RequestId;
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};

/// What an operation of the quota family means to its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum QuotaTag {
    /// `quota_check` (or `external_auth`) reads the counter it admits against.
    Check {
        /// The request.
        request: RequestId,
        /// The bucket read.
        bucket: String,
    },
    /// Buggy `quota_check`'s own deduction (`daily_used += units`).
    CheckDeduct {
        /// The request.
        request: RequestId,
        /// The bucket.
        bucket: String,
    },
    /// The correct protocol's hold row (`INSERT quota_reservations`).
    Hold {
        /// The request.
        request: RequestId,
        /// The bucket fixed at reservation.
        bucket: String,
    },
    /// The correct protocol's conditional reservation
    /// (`reserved += est WHERE used + reserved + est <= limit`).
    Reserve {
        /// The request.
        request: RequestId,
        /// The bucket fixed at reservation.
        bucket: String,
    },
    /// Billing's counter update (`used += units`, and in the correct protocol
    /// `reserved -= est`).
    Bill {
        /// The request.
        request: RequestId,
        /// The bucket updated.
        bucket: String,
    },
    /// Billing's ledger row: the committed charge.
    Ledger {
        /// The request.
        request: RequestId,
    },
    /// A reservation's `open -> settled` transition.
    Settle {
        /// The request.
        request: RequestId,
        /// The bucket the reservation holds (fixed at reservation).
        bucket: String,
    },
    /// A reservation's `open -> released` transition (the upstream call failed).
    Release {
        /// The request.
        request: RequestId,
    },
    /// The sweeper looks for expired open reservations.
    Sweep,
    /// The sweeper's `open -> voided` transition of an expired reservation.
    Void {
        /// The request.
        request: RequestId,
    },
    /// Giving a reservation's hold back to its bucket (`reserved -= est`) after a release or
    /// a void.
    Unhold {
        /// The request.
        request: RequestId,
    },
    /// Transaction control.
    Tx,
    /// R-000-04: admission reads the Redis mirror (`HGETALL quota:balance:k`).
    CacheRead {
        /// The request.
        request: RequestId,
    },
    /// R-000-04: admission reads the balance row after a cache miss.
    DbRead {
        /// The request.
        request: RequestId,
    },
    /// The upstream call, which incurs the request's cost once the endpoint applies it.
    Upstream {
        /// The request.
        request: RequestId,
        /// What it costs.
        cost: i64,
    },
    /// R-000-04: the conditional deduction in the database
    /// (`balance -= cost, version += 1 WHERE balance >= cost RETURNING *`).
    Deduct {
        /// The request.
        request: RequestId,
    },
    /// R-000-04: a request writes the Redis mirror after its deduction committed.
    Mirror {
        /// The request.
        request: RequestId,
    },
    /// R-000-04's Lua reading of the document's fix: the atomic deduction in Redis.
    LuaDeduct {
        /// The request.
        request: RequestId,
    },
    /// R-000-04's Lua reading: giving the Redis deduction back after the database refused.
    Compensate {
        /// The request.
        request: RequestId,
    },
    /// The reconciler or the warmer reads the balance row.
    SourceRead,
    /// The reconciler's (versioned) write of the mirror.
    Repair,
    /// The warmer's write of the mirror.
    Warm,
    /// The observer samples the Redis mirror (the document's consistency test, during the
    /// run).
    Observe,
    /// R-000-09: a request takes the warm-up lock.
    Lock {
        /// The request.
        request: RequestId,
    },
    /// R-000-09: a request gives the warm-up lock back.
    Unlock {
        /// The request.
        request: RequestId,
    },
    /// R-000-09: a request's warm-up loads the row from the database.
    WarmLoad {
        /// The request.
        request: RequestId,
    },
    /// R-000-09: a request's warm-up writes the cache.
    WarmWrite {
        /// The request.
        request: RequestId,
    },
}

impl QuotaTag {
    /// [`QuotaTag::Check`]'s kind.
    pub const CHECK: TagKind = TagKind::new("quota-check");
    /// [`QuotaTag::CheckDeduct`]'s kind.
    pub const CHECK_DEDUCT: TagKind = TagKind::new("check-deduct");
    /// [`QuotaTag::Hold`]'s kind.
    pub const HOLD: TagKind = TagKind::new("hold");
    /// [`QuotaTag::Reserve`]'s kind.
    pub const RESERVE: TagKind = TagKind::new("reserve");
    /// [`QuotaTag::Bill`]'s kind.
    pub const BILL: TagKind = TagKind::new("bill");
    /// [`QuotaTag::Ledger`]'s kind.
    pub const LEDGER: TagKind = TagKind::new("ledger");
    /// [`QuotaTag::Settle`]'s kind.
    pub const SETTLE: TagKind = TagKind::new("settle");
    /// [`QuotaTag::Release`]'s kind.
    pub const RELEASE: TagKind = TagKind::new("release");
    /// [`QuotaTag::Sweep`]'s kind.
    pub const SWEEP: TagKind = TagKind::new("sweep");
    /// [`QuotaTag::Void`]'s kind.
    pub const VOID: TagKind = TagKind::new("void");
    /// [`QuotaTag::Unhold`]'s kind.
    pub const UNHOLD: TagKind = TagKind::new("unhold");
    /// [`QuotaTag::Tx`]'s kind.
    pub const TX: TagKind = TagKind::new("tx");
    /// [`QuotaTag::CacheRead`]'s kind.
    pub const CACHE_READ: TagKind = TagKind::new("cache-read");
    /// [`QuotaTag::DbRead`]'s kind.
    pub const DB_READ: TagKind = TagKind::new("db-read");
    /// [`QuotaTag::Upstream`]'s kind.
    pub const UPSTREAM: TagKind = TagKind::new("upstream");
    /// [`QuotaTag::Deduct`]'s kind.
    pub const DEDUCT: TagKind = TagKind::new("deduct");
    /// [`QuotaTag::Mirror`]'s kind.
    pub const MIRROR: TagKind = TagKind::new("mirror");
    /// [`QuotaTag::LuaDeduct`]'s kind.
    pub const LUA_DEDUCT: TagKind = TagKind::new("lua-deduct");
    /// [`QuotaTag::Compensate`]'s kind.
    pub const COMPENSATE: TagKind = TagKind::new("compensate");
    /// [`QuotaTag::SourceRead`]'s kind.
    pub const SOURCE_READ: TagKind = TagKind::new("source-read");
    /// [`QuotaTag::Repair`]'s kind.
    pub const REPAIR: TagKind = TagKind::new("repair");
    /// [`QuotaTag::Warm`]'s kind.
    pub const WARM: TagKind = TagKind::new("warm");
    /// [`QuotaTag::Observe`]'s kind.
    pub const OBSERVE: TagKind = TagKind::new("observe");
    /// [`QuotaTag::Lock`]'s kind.
    pub const LOCK: TagKind = TagKind::new("warm-lock");
    /// [`QuotaTag::Unlock`]'s kind.
    pub const UNLOCK: TagKind = TagKind::new("warm-unlock");
    /// [`QuotaTag::WarmLoad`]'s kind.
    pub const WARM_LOAD: TagKind = TagKind::new("warm-load");
    /// [`QuotaTag::WarmWrite`]'s kind.
    pub const WARM_WRITE: TagKind = TagKind::new("warm-write");

    /// The quota tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&QuotaTag> {
        tag.get::<QuotaTag>()
    }

    /// The request the operation belongs to, if any.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            QuotaTag::Check { request, .. }
            | QuotaTag::CheckDeduct { request, .. }
            | QuotaTag::Hold { request, .. }
            | QuotaTag::Reserve { request, .. }
            | QuotaTag::Bill { request, .. }
            | QuotaTag::Ledger { request }
            | QuotaTag::Settle { request, .. }
            | QuotaTag::Release { request }
            | QuotaTag::Void { request }
            | QuotaTag::Unhold { request }
            | QuotaTag::CacheRead { request }
            | QuotaTag::DbRead { request }
            | QuotaTag::Upstream { request, .. }
            | QuotaTag::Deduct { request }
            | QuotaTag::Mirror { request }
            | QuotaTag::LuaDeduct { request }
            | QuotaTag::Compensate { request }
            | QuotaTag::Lock { request }
            | QuotaTag::Unlock { request }
            | QuotaTag::WarmLoad { request }
            | QuotaTag::WarmWrite { request } => Some(*request),
            QuotaTag::Sweep
            | QuotaTag::Tx
            | QuotaTag::SourceRead
            | QuotaTag::Repair
            | QuotaTag::Warm
            | QuotaTag::Observe => None,
        }
    }
}

impl FamilyTag for QuotaTag {
    fn kind(&self) -> TagKind {
        match self {
            QuotaTag::Check { .. } => QuotaTag::CHECK,
            QuotaTag::CheckDeduct { .. } => QuotaTag::CHECK_DEDUCT,
            QuotaTag::Hold { .. } => QuotaTag::HOLD,
            QuotaTag::Reserve { .. } => QuotaTag::RESERVE,
            QuotaTag::Bill { .. } => QuotaTag::BILL,
            QuotaTag::Ledger { .. } => QuotaTag::LEDGER,
            QuotaTag::Settle { .. } => QuotaTag::SETTLE,
            QuotaTag::Release { .. } => QuotaTag::RELEASE,
            QuotaTag::Sweep => QuotaTag::SWEEP,
            QuotaTag::Void { .. } => QuotaTag::VOID,
            QuotaTag::Unhold { .. } => QuotaTag::UNHOLD,
            QuotaTag::Tx => QuotaTag::TX,
            QuotaTag::CacheRead { .. } => QuotaTag::CACHE_READ,
            QuotaTag::DbRead { .. } => QuotaTag::DB_READ,
            QuotaTag::Upstream { .. } => QuotaTag::UPSTREAM,
            QuotaTag::Deduct { .. } => QuotaTag::DEDUCT,
            QuotaTag::Mirror { .. } => QuotaTag::MIRROR,
            QuotaTag::LuaDeduct { .. } => QuotaTag::LUA_DEDUCT,
            QuotaTag::Compensate { .. } => QuotaTag::COMPENSATE,
            QuotaTag::SourceRead => QuotaTag::SOURCE_READ,
            QuotaTag::Repair => QuotaTag::REPAIR,
            QuotaTag::Warm => QuotaTag::WARM,
            QuotaTag::Observe => QuotaTag::OBSERVE,
            QuotaTag::Lock { .. } => QuotaTag::LOCK,
            QuotaTag::Unlock { .. } => QuotaTag::UNLOCK,
            QuotaTag::WarmLoad { .. } => QuotaTag::WARM_LOAD,
            QuotaTag::WarmWrite { .. } => QuotaTag::WARM_WRITE,
        }
    }
}

impl From<QuotaTag> for Tag {
    fn from(tag: QuotaTag) -> Tag {
        Tag::new(tag)
    }
}

/// What a process of the quota family reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum QuotaNote {
    /// The request was admitted against `bucket`.
    Admitted {
        /// The request.
        request: RequestId,
        /// The bucket.
        bucket: String,
    },
    /// The request was refused: the bucket is full.
    Refused {
        /// The request.
        request: RequestId,
        /// The bucket.
        bucket: String,
    },
    /// The request's charge was committed.
    Charged {
        /// The request.
        request: RequestId,
        /// The units charged.
        units: i64,
    },
    /// The request gave up (an unknown outcome, an error).
    GaveUp {
        /// The request.
        request: RequestId,
        /// Why.
        reason: &'static str,
    },
}

impl QuotaNote {
    /// The quota note of a recorded note, if it is one.
    pub fn of(note: &Note) -> Option<&QuotaNote> {
        note.get::<QuotaNote>()
    }
}

impl FamilyNote for QuotaNote {}

impl fmt::Display for QuotaNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaNote::Admitted { request, bucket } => {
                write!(f, "admits r{} against {bucket}", request.0)
            }
            QuotaNote::Refused { request, bucket } => {
                write!(f, "refuses r{}: {bucket} is full", request.0)
            }
            QuotaNote::Charged { request, units } => {
                write!(f, "charges r{} {units} units", request.0)
            }
            QuotaNote::GaveUp { request, reason } => {
                write!(f, "gives up r{}: {reason}", request.0)
            }
        }
    }
}
