//! Document 000's billing races: an LLM gateway that charges an account for each request.
//!
//! - R-000-03, idempotent billing ([`IdemGateway`]): a client submits a request with an
//!   idempotency key and retries it; the gateway generates the response upstream and charges
//!   the account, at most once per key, answering every retry with the stored response.
//!
//! | variant | idempotency | charge |
//! |---|---|---|
//! | `Buggy` | the document's `deduct()`: `SET billing:idem:K NX EX 86400` before the DB transaction (or, in the key-after-commit reading, `GET` before and `SET` after the commit); a marker present is answered as a duplicate (200, empty body) | ledger row keyed by the attempt |
//! | `DocFix` | the proposal, literally: the same `SET NX` kept as "fast interception", plus a `UNIQUE` ledger key in the charge's transaction; a unique violation is a 500; the upstream call is not covered | ledger row keyed by K |
//! | `Correct` | a `billing_idempotency` row claimed with `INSERT ... ON CONFLICT DO NOTHING` (in progress, owner epoch, lease) before the upstream call; a loser gets the stored response when done, 409 + Retry-After while in progress, 422 for another payload; an expired claim is re-claimed by bumping the epoch; Redis is a read-through cache of done rows | the fenced completion (`done` + the response, `WHERE owner_epoch = e`), the ledger row keyed by K and the deduction in one transaction |
//!
//! The per-attempt `trace_id` of RACES.md assumption A1 is a workload reading
//! ([`KeySource::PerAttempt`]): the document's gateway then keys on its own per-attempt id;
//! the correct gateway keys on the client's `Idempotency-Key` header, which the client sends
//! with every attempt in both readings.
//!
//! - R-000-01, streaming settlement ([`StreamGateway`], [`Sweeper`], [`UsageConsumer`]): a
//!   streamed completion is billed by the document's post-stream callback (`Buggy`), by a
//!   message queue (`DocFix`), or by reserve-then-settle with holds and a sweeper (`Correct`);
//!   the stream module's header has the table.
//! - R-000-14, token accounting: the same gateway counts tokens as `chunks × 3` (`Buggy`),
//!   from the final usage record alone (`DocFix`), or from it and else the provider's usage
//!   API after cancelling the stream (`Correct`): [`Accounting`], [`count_tokens`].
//! - R-000-08, the usage record of a charge ([`UsageBiller`], [`OutboxRelay`],
//!   [`UsageWorker`]): published before the commit (`Buggy`), by an `after_commit` hook
//!   (`DocFix`), or through a transactional outbox and an idempotent worker (`Correct`); the
//!   outbox module's header has the table.

use std::collections::VecDeque;
use std::fmt;

use crate::ids::OpId;
use crate::machine::Outgoing;
use crate::ops::StoreOp;
use crate::tag::{Note, Tag};

mod consumer;
mod idem;
mod oracle;
mod outbox;
mod stream;
mod tables;
mod tag;

pub use consumer::{Handler, Next, Notes, QueueConsumer};
pub use idem::{IdemConfig, IdemGateway, KeySource, MarkerOrder};
pub use oracle::{BillingMetrics, I_USAGE, USAGE_DEDUPLICATED, UsageEnd, metrics, usage_bijection};
pub use oracle::{
    CONFLICT_ANSWERED, HOLD_SWEPT, HOLDS_RESOLVED, I_BAL, I_BILL_1, I_BILL_2, I_IDEM_A, I_IDEM_B,
    I_IDEM_C, I_IDEM_D, I_TOK, IdemEnd, LedgerRow, RECLAIMED, REPLAYED, SETTLE_REFUSED, StreamEnd,
    USAGE_LOOKED, balance_conserved, coverage, idempotent_billing, streamed_billing,
};
pub use outbox::{
    OutboxRelay, Publish, RecordUsage, RecordWait, UsageBillConfig, UsageBiller, UsageWorker,
};
pub use stream::{
    Accounting, ChargeUsage, ChargeWait, Settlement, StreamConfig, StreamGateway, Sweeper,
    SweeperConfig, UsageConsumer, count_tokens, price, request_key,
};
pub use tables::{ACCOUNTS, HOLDS, IDEMPOTENCY, LEDGER, OUTBOX, USAGE};
pub use tag::{Answer, BillNote, BillTag};

/// The client's idempotency key (`Idempotency-Key: K1`), stable across its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientKey(pub u32);

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K{}", self.0)
    }
}

/// An amount of money, in the account's smallest unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub i64);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One logical request: its idempotency key and its payload (here, what it costs). Two
/// submissions with the same key and payload are the same request; the same key with another
/// payload is a client error (422).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillRequest {
    /// The key.
    pub key: ClientKey,
    /// The payload's price.
    pub amount: Amount,
}

impl fmt::Display for BillRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(amount {})", self.key, self.amount)
    }
}

/// The Redis key of the idempotency marker or cache for `key` (`billing:idem:K1`).
pub fn marker_key(key: &str) -> String {
    format!("billing:idem:{key}")
}

/// Queues outgoing operations and notes, and hands out operation ids.
#[derive(Debug, Default)]
struct Outbox {
    next: u64,
    ops: VecDeque<Outgoing>,
    notes: VecDeque<BillNote>,
}

impl Outbox {
    fn send(&mut self, op: StoreOp, tag: BillTag) -> OpId {
        self.next += 1;
        let id = OpId(self.next);
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
        id
    }

    fn note(&mut self, note: BillNote) {
        self.notes.push_back(note);
    }

    fn pop_note(&mut self) -> Option<Note> {
        self.notes.pop_front().map(Note::new)
    }
}
