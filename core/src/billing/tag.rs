//! Document 000's billing tags and notes: what each store operation of a gateway, a sweeper,
//! a relay or a usage worker means, and what they report (the answers a client got, the
//! protections that fired).

use std::fmt;

use super::{Amount, BillRequest, ClientKey};
use crate::ops::RequestId;
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};

/// What an operation of the billing family means to its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BillTag {
    /// The Redis idempotency marker: `SET NX`, or `GET` of the marker or of the cache.
    IdemCheck {
        /// The request.
        request: BillRequest,
    },
    /// The Redis marker or cache written after the charge committed.
    IdemMark {
        /// The request.
        request: BillRequest,
    },
    /// The correct protocol's claim (`INSERT ... ON CONFLICT DO NOTHING`).
    Claim {
        /// The request.
        request: BillRequest,
    },
    /// A read of the idempotency row.
    ReadClaim {
        /// The request.
        request: BillRequest,
    },
    /// The re-claim of an expired claim (the epoch bump).
    Reclaim {
        /// The request.
        request: BillRequest,
    },
    /// The release of a claim whose completion failed.
    Release {
        /// The request.
        request: BillRequest,
    },
    /// The upstream generation of the response (the LLM's nondeterministic output).
    Generate {
        /// The request.
        request: BillRequest,
    },
    /// Transaction control.
    Tx,
    /// The fenced completion of a claim (`status = 'done'`, the stored response).
    Complete {
        /// The request.
        request: BillRequest,
    },
    /// The ledger row of a charge: the effect at most one of which may commit per request.
    Charge {
        /// The request.
        request: BillRequest,
        /// The response body stored with it.
        body: String,
    },
    /// The balance deduction that goes with a charge.
    Deduct {
        /// The request.
        request: BillRequest,
    },
    /// A streamed completion's upstream call (open, read, cancel, usage).
    Stream {
        /// The request.
        request: RequestId,
    },
    /// The hold row and the reservation of the maximum cost.
    Hold {
        /// The request.
        request: RequestId,
    },
    /// The settlement of a streamed request (hold to settled, ledger row, refund or charge).
    Settle {
        /// The request.
        request: RequestId,
        /// The amount charged.
        amount: Amount,
    },
    /// A sweeper's scan for open holds.
    Sweep,
    /// A message or job on the queue (publish, fetch, ack).
    Queue,
    /// The outbox relay's scan and mark.
    Relay,
    /// The usage record a worker writes.
    UsageRecord {
        /// The request.
        request: RequestId,
    },
}

impl BillTag {
    /// [`BillTag::IdemCheck`]'s kind.
    pub const IDEM_CHECK: TagKind = TagKind::new("idem-check");
    /// [`BillTag::IdemMark`]'s kind.
    pub const IDEM_MARK: TagKind = TagKind::new("idem-mark");
    /// [`BillTag::Claim`]'s kind.
    pub const CLAIM: TagKind = TagKind::new("claim");
    /// [`BillTag::ReadClaim`]'s kind.
    pub const READ_CLAIM: TagKind = TagKind::new("read-claim");
    /// [`BillTag::Reclaim`]'s kind.
    pub const RECLAIM: TagKind = TagKind::new("reclaim");
    /// [`BillTag::Release`]'s kind.
    pub const RELEASE: TagKind = TagKind::new("release");
    /// [`BillTag::Generate`]'s kind.
    pub const GENERATE: TagKind = TagKind::new("generate");
    /// [`BillTag::Tx`]'s kind.
    pub const TX: TagKind = TagKind::new("tx");
    /// [`BillTag::Complete`]'s kind.
    pub const COMPLETE: TagKind = TagKind::new("complete");
    /// [`BillTag::Charge`]'s kind.
    pub const CHARGE: TagKind = TagKind::new("charge");
    /// [`BillTag::Deduct`]'s kind.
    pub const DEDUCT: TagKind = TagKind::new("deduct");
    /// [`BillTag::Stream`]'s kind.
    pub const STREAM: TagKind = TagKind::new("stream");
    /// [`BillTag::Hold`]'s kind.
    pub const HOLD: TagKind = TagKind::new("hold");
    /// [`BillTag::Settle`]'s kind.
    pub const SETTLE: TagKind = TagKind::new("settle");
    /// [`BillTag::Sweep`]'s kind.
    pub const SWEEP: TagKind = TagKind::new("sweep");
    /// [`BillTag::Queue`]'s kind.
    pub const QUEUE: TagKind = TagKind::new("queue");
    /// [`BillTag::Relay`]'s kind.
    pub const RELAY: TagKind = TagKind::new("relay");
    /// [`BillTag::UsageRecord`]'s kind.
    pub const USAGE_RECORD: TagKind = TagKind::new("usage-record");

    /// The billing tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&BillTag> {
        tag.get::<BillTag>()
    }
}

impl FamilyTag for BillTag {
    fn kind(&self) -> TagKind {
        match self {
            BillTag::IdemCheck { .. } => BillTag::IDEM_CHECK,
            BillTag::IdemMark { .. } => BillTag::IDEM_MARK,
            BillTag::Claim { .. } => BillTag::CLAIM,
            BillTag::ReadClaim { .. } => BillTag::READ_CLAIM,
            BillTag::Reclaim { .. } => BillTag::RECLAIM,
            BillTag::Release { .. } => BillTag::RELEASE,
            BillTag::Generate { .. } => BillTag::GENERATE,
            BillTag::Tx => BillTag::TX,
            BillTag::Complete { .. } => BillTag::COMPLETE,
            BillTag::Charge { .. } => BillTag::CHARGE,
            BillTag::Deduct { .. } => BillTag::DEDUCT,
            BillTag::Stream { .. } => BillTag::STREAM,
            BillTag::Hold { .. } => BillTag::HOLD,
            BillTag::Settle { .. } => BillTag::SETTLE,
            BillTag::Sweep => BillTag::SWEEP,
            BillTag::Queue => BillTag::QUEUE,
            BillTag::Relay => BillTag::RELAY,
            BillTag::UsageRecord { .. } => BillTag::USAGE_RECORD,
        }
    }
}

/// How a gateway answered one attempt of a request, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// HTTP 200 with the response body.
    Served {
        /// The body.
        body: String,
    },
    /// Refused as a duplicate of an earlier attempt (the document's "the request is refused
    /// or an empty result returned"): HTTP 200 with an empty body.
    Duplicate,
    /// HTTP 409 with Retry-After: an attempt with the same key is in progress.
    InProgress {
        /// Retry-After, in milliseconds.
        retry_after_ms: u64,
    },
    /// HTTP 422: the key was used with a different payload.
    Mismatch,
    /// HTTP 402: the balance does not cover the charge.
    Insufficient,
    /// HTTP 500: an internal error the client does not retry.
    Failed,
    /// HTTP 503: a transient failure (a rolled-back transaction, a lost connection) the
    /// client retries.
    Unavailable,
}

impl Answer {
    /// Whether the client stops here (anything but 409 and 503).
    pub fn is_final(&self) -> bool {
        !matches!(self, Answer::InProgress { .. } | Answer::Unavailable)
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Served { body } => write!(f, "200 {body:?}"),
            Answer::Duplicate => write!(f, "200 \"\" (duplicate)"),
            Answer::InProgress { retry_after_ms } => {
                write!(f, "409 (Retry-After {retry_after_ms} ms)")
            }
            Answer::Mismatch => write!(f, "422 (key reused with another payload)"),
            Answer::Insufficient => write!(f, "402 (insufficient balance)"),
            Answer::Failed => write!(f, "500"),
            Answer::Unavailable => write!(f, "503"),
        }
    }
}

/// What a billing process reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BillNote {
    /// The gateway answered an attempt of a request.
    Answered {
        /// The request.
        request: BillRequest,
        /// The answer.
        answer: Answer,
    },
    /// The client stopped retrying without a final answer.
    GaveUp {
        /// The request's key.
        key: ClientKey,
    },
    /// The stored response was replayed (from the idempotency row or its cache).
    Replayed {
        /// The request.
        request: BillRequest,
    },
    /// An expired claim was re-claimed with a newer epoch.
    Reclaimed {
        /// The request.
        request: BillRequest,
    },
    /// A completion was refused because a newer epoch had re-claimed the key.
    Fenced {
        /// The request.
        request: BillRequest,
    },
    /// A settlement found its hold settled already and rolled back.
    SettleRefused {
        /// The request.
        request: RequestId,
    },
    /// A gateway asked the provider for a request's usage (the final record was never read).
    UsageLooked {
        /// The request.
        request: RequestId,
    },
    /// The sweeper settled a hold left open.
    Swept {
        /// The request.
        request: RequestId,
    },
    /// A usage worker found the request's record written already (a redelivered or
    /// republished event).
    UsageDeduplicated {
        /// The request.
        request: RequestId,
    },
}

impl BillNote {
    /// The billing note of a recorded note, if it is one.
    pub fn of(note: &Note) -> Option<&BillNote> {
        note.get::<BillNote>()
    }
}

impl FamilyNote for BillNote {}

impl fmt::Display for BillNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillNote::Answered { request, answer } => write!(f, "answers {request}: {answer}"),
            BillNote::GaveUp { key } => write!(f, "gives up on {key}"),
            BillNote::Replayed { request } => write!(f, "replays the stored response of {request}"),
            BillNote::Reclaimed { request } => {
                write!(f, "re-claims the expired claim of {request}")
            }
            BillNote::Fenced { request } => {
                write!(
                    f,
                    "completion of {request} fenced: a newer epoch owns the key"
                )
            }
            BillNote::SettleRefused { request } => {
                write!(
                    f,
                    "settlement of {request} refused: its hold was settled already"
                )
            }
            BillNote::UsageLooked { request } => {
                write!(f, "looked up the provider's usage of {request}")
            }
            BillNote::Swept { request } => write!(f, "swept the open hold of {request}"),
            BillNote::UsageDeduplicated { request } => {
                write!(f, "the usage record of {request} exists already: skipped")
            }
        }
    }
}
