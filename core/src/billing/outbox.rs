//! R-000-08: the usage record of a charge, written by an asynchronous worker.
//!
//! | publish | R-000-08 variant | what the biller does |
//! |---|---|---|
//! | `BeforeCommit` | `Buggy` | `record_usage_task.delay()` inside the billing transaction, before its commit: a rollback leaves a phantom usage record |
//! | `AfterCommit` | `DocFix` | the `after_commit` hook: publish once the transaction committed; a crash (or a broker error swallowed) between the commit and the publish loses the record |
//! | `Outbox` | `Correct` | `INSERT billing_outbox` in the billing transaction; relays ([`OutboxRelay`]) publish with `SELECT ... FOR UPDATE SKIP LOCKED`, at least once, and mark the row sent |
//!
//! The worker ([`UsageWorker`]) writes the record from the message: a plain `INSERT` keyed by
//! the delivery (`Buggy`, `DocFix`: a redelivery after a crash before the ack writes a second
//! record), or `INSERT ... ON CONFLICT (request) DO NOTHING` (`Correct`).
//!
//! Drain order and method kinds are [`Machine`]'s.

use super::consumer::{Handler, Next, Notes, QueueConsumer};
use super::idem::deduct_stmt;
use super::stream::request_key;
use super::{Amount, BillNote, BillTag, LEDGER, OUTBOX, Outbox, USAGE};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, CmpOp, Cond, DeliveryId, JobFields, OnConflict, QueueOp, QueueReply, Reply, RequestId,
    Row, ScanLock, SqlOp, SqlReply, SqlStmt, StoreOp, Value,
};
use crate::time::{Duration, Timestamp};

/// When the biller publishes the usage event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Publish {
    /// Inside the transaction, before its commit (the document's code).
    BeforeCommit,
    /// After the commit (the proposal's `after_commit` hook).
    AfterCommit,
    /// An outbox row in the transaction, published by a relay.
    Outbox,
}

/// One charge and its usage event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageBillConfig {
    /// When the usage event is published.
    pub publish: Publish,
    /// The request.
    pub request: RequestId,
    /// Its price.
    pub amount: Amount,
    /// The account charged.
    pub account: String,
}

/// The billing step of one request: charge it and emit its usage event.
#[derive(Debug)]
pub struct UsageBiller {
    cfg: UsageBillConfig,
    out: Outbox,
    pending: Option<(OpId, BWait)>,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BWait {
    Begin,
    Ledger,
    Deduct,
    /// The event: the task published (before the commit) or the outbox row.
    Event,
    Commit,
    Rollback,
    /// The publish after the commit.
    Published,
}

fn usage_job(request: RequestId, amount: Amount) -> QueueOp {
    QueueOp::Enqueue {
        dedup: None,
        fields: JobFields::from([
            ("request".to_string(), request_key(request)),
            ("amount".to_string(), amount.0.to_string()),
        ]),
    }
}

impl UsageBiller {
    /// The biller of `cfg.request` in its `incarnation`: a restarted one does nothing (the
    /// request died with it).
    pub fn new(cfg: UsageBillConfig, incarnation: u32) -> UsageBiller {
        UsageBiller {
            cfg,
            out: Outbox::default(),
            pending: None,
            done: incarnation > 0,
        }
    }

    fn send(&mut self, op: StoreOp, tag: BillTag, wait: BWait) {
        let id = self.out.send(op, tag);
        self.pending = Some((id, wait));
    }

    fn event(&mut self) {
        let (request, amount) = (self.cfg.request, self.cfg.amount);
        match self.cfg.publish {
            Publish::BeforeCommit => self.send(
                StoreOp::Queue(usage_job(request, amount)),
                BillTag::Queue,
                BWait::Event,
            ),
            Publish::Outbox => {
                let row = Row::from([
                    ("amount".to_string(), Value::Int(amount.0)),
                    ("sent".to_string(), Value::Int(0)),
                ]);
                let stmt = SqlStmt::Insert {
                    table: OUTBOX,
                    key: request_key(request),
                    row,
                };
                self.send(
                    StoreOp::Sql(SqlOp::exec(stmt)),
                    BillTag::Relay,
                    BWait::Event,
                );
            }
            Publish::AfterCommit => {
                self.send(StoreOp::Sql(SqlOp::Commit), BillTag::Tx, BWait::Commit)
            }
        }
    }
}

impl Machine for UsageBiller {
    fn handle_start(&mut self, _now: Timestamp) {
        if !self.done && self.pending.is_none() {
            self.send(StoreOp::Sql(SqlOp::Begin), BillTag::Tx, BWait::Begin);
        }
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        let wait = match self.pending.take() {
            Some((id, wait)) if id == op => wait,
            other => {
                self.pending = other;
                return;
            }
        };
        let (request, amount) = (self.cfg.request, self.cfg.amount);
        let timed_out = matches!(reply, Reply::Timeout);
        match (wait, reply) {
            (BWait::Begin, Reply::Sql(SqlReply::Ok)) => {
                let row = Row::from([
                    ("request".to_string(), Value::Text(request_key(request))),
                    ("amount".to_string(), Value::Int(amount.0)),
                    ("body".to_string(), Value::Text(String::new())),
                    ("estimated".to_string(), Value::Int(0)),
                ]);
                let stmt = SqlStmt::Insert {
                    table: LEDGER,
                    key: request_key(request),
                    row,
                };
                self.send(
                    StoreOp::Sql(SqlOp::exec(stmt)),
                    BillTag::Settle { request, amount },
                    BWait::Ledger,
                );
            }
            (BWait::Ledger, Reply::Sql(SqlReply::Affected(n))) if n > 0 => {
                let stmt = deduct_stmt(&self.cfg.account, amount);
                self.send(
                    StoreOp::Sql(SqlOp::exec(stmt)),
                    BillTag::Hold { request },
                    BWait::Deduct,
                );
            }
            (BWait::Deduct, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => self.event(),
            (BWait::Event, reply) if reply.is_success() => {
                self.send(StoreOp::Sql(SqlOp::Commit), BillTag::Tx, BWait::Commit)
            }
            (BWait::Commit, Reply::Sql(SqlReply::Committed))
                if self.cfg.publish == Publish::AfterCommit =>
            {
                self.send(
                    StoreOp::Queue(usage_job(request, amount)),
                    BillTag::Queue,
                    BWait::Published,
                );
            }
            // Done, or failed and swallowed: the document logs the exception.
            (BWait::Commit | BWait::Rollback | BWait::Published, _) => self.done = true,
            // A SQL statement timed out: the driver dropped the connection and PostgreSQL
            // rolled back. (A queue publish that timed out leaves the transaction open: it
            // is rolled back below.)
            (wait, _) if timed_out && wait != BWait::Event => self.done = true,
            (BWait::Event, _) if timed_out && self.cfg.publish == Publish::Outbox => {
                self.done = true
            }
            (_, _) => self.send(StoreOp::Sql(SqlOp::Rollback), BillTag::Tx, BWait::Rollback),
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.pending.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// The outbox relay

/// Publishes unsent outbox rows at least once: every `every`, in one transaction, `SELECT ...
/// WHERE sent = 0 FOR UPDATE SKIP LOCKED LIMIT batch` (two relays never take the same row),
/// enqueue each row's usage event, mark it sent, commit. A crash after an enqueue and before
/// the commit publishes the event again later: the worker deduplicates. Runs until the world's
/// horizon.
#[derive(Debug)]
pub struct OutboxRelay {
    every: Duration,
    batch_max: u64,
    out: Outbox,
    timer: Option<Timestamp>,
    pending: Option<(OpId, RWait)>,
    /// The rows of the current batch still to publish.
    batch: Vec<(RequestId, Amount)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RWait {
    Begin,
    Scan,
    Enqueue(RequestId),
    Mark,
    Commit,
    Rollback,
}

impl OutboxRelay {
    /// A relay scanning every `every` for at most `batch_max` rows.
    pub fn new(every: Duration, batch_max: u64) -> OutboxRelay {
        OutboxRelay {
            every,
            batch_max,
            out: Outbox::default(),
            timer: None,
            pending: None,
            batch: Vec::new(),
        }
    }

    fn send(&mut self, op: StoreOp, tag: BillTag, wait: RWait) {
        let id = self.out.send(op, tag);
        self.pending = Some((id, wait));
    }

    fn next_row(&mut self) {
        match self.batch.pop() {
            Some((request, amount)) => self.send(
                StoreOp::Queue(usage_job(request, amount)),
                BillTag::Queue,
                RWait::Enqueue(request),
            ),
            None => self.send(StoreOp::Sql(SqlOp::Commit), BillTag::Tx, RWait::Commit),
        }
    }

    fn end_round(&mut self, now: Timestamp) {
        self.batch.clear();
        self.timer = Some(now + self.every);
    }
}

impl Machine for OutboxRelay {
    fn handle_start(&mut self, now: Timestamp) {
        if self.timer.is_none() && self.pending.is_none() {
            self.timer = Some(now + self.every);
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let wait = match self.pending.take() {
            Some((id, wait)) if id == op => wait,
            other => {
                self.pending = other;
                return;
            }
        };
        let timed_out = matches!(reply, Reply::Timeout);
        match (wait, reply) {
            (RWait::Begin, Reply::Sql(SqlReply::Ok)) => {
                let stmt = SqlStmt::scan(OUTBOX, Cond::cmp("sent", CmpOp::Eq, Value::Int(0)))
                    .locking(ScanLock::SkipLocked)
                    .limit(self.batch_max);
                self.send(StoreOp::Sql(SqlOp::exec(stmt)), BillTag::Relay, RWait::Scan);
            }
            (RWait::Scan, Reply::Sql(SqlReply::Rows(rows))) => {
                self.batch = rows
                    .iter()
                    .filter_map(|r| {
                        let n = r.key.strip_prefix('r')?.parse().ok()?;
                        Some((RequestId(n), Amount(r.int("amount")?)))
                    })
                    .collect();
                self.next_row();
            }
            (RWait::Enqueue(request), Reply::Queue(QueueReply::Enqueued { .. })) => {
                let stmt = SqlStmt::Update {
                    table: OUTBOX,
                    key: request_key(request),
                    guard: Cond::True,
                    set: vec![Assign::Set {
                        column: "sent".into(),
                        value: Value::Int(1),
                    }],
                };
                self.send(StoreOp::Sql(SqlOp::exec(stmt)), BillTag::Relay, RWait::Mark);
            }
            (RWait::Mark, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => self.next_row(),
            (RWait::Commit | RWait::Rollback, _) => self.end_round(now),
            (_, _) if timed_out => self.end_round(now),
            (_, _) => self.send(StoreOp::Sql(SqlOp::Rollback), BillTag::Tx, RWait::Rollback),
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.pending.is_some() || self.timer.is_none_or(|t| t > now) {
            return;
        }
        self.timer = None;
        self.send(StoreOp::Sql(SqlOp::Begin), BillTag::Tx, RWait::Begin);
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        if self.pending.is_some() {
            None
        } else {
            self.timer
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_none() && self.timer.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// The usage worker

/// `record_usage_task`'s worker: fetches a usage event and writes its record, then acks. With
/// `dedup` it writes `INSERT ... ON CONFLICT (request) DO NOTHING`; without, a plain insert
/// keyed by the delivery.
pub type UsageWorker = QueueConsumer<RecordUsage>;

impl UsageWorker {
    /// A worker polling every `poll_every`, deduplicating or not.
    pub fn new(dedup: bool, poll_every: Duration) -> UsageWorker {
        QueueConsumer::with(RecordUsage { dedup }, poll_every)
    }
}

/// What [`UsageWorker`] does with a usage event: write its record.
#[derive(Debug)]
pub struct RecordUsage {
    dedup: bool,
}

/// [`RecordUsage`] waits for its record's insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordWait(DeliveryId, RequestId);

impl Handler for RecordUsage {
    type Wait = RecordWait;

    fn delivered(&mut self, d: DeliveryId, request: RequestId, amount: Amount) -> Next<RecordWait> {
        let row = Row::from([
            ("request".to_string(), Value::Text(request_key(request))),
            ("amount".to_string(), Value::Int(amount.0)),
        ]);
        let stmt = if self.dedup {
            SqlStmt::Upsert {
                table: USAGE,
                key: request_key(request),
                row,
                on_conflict: OnConflict::DoNothing,
            }
        } else {
            SqlStmt::Insert {
                table: USAGE,
                key: format!("{}.d{}", request_key(request), d.0),
                row,
            }
        };
        Next::Send(
            StoreOp::Sql(SqlOp::exec(stmt)),
            BillTag::UsageRecord { request },
            RecordWait(d, request),
        )
    }

    fn reply(&mut self, wait: RecordWait, reply: Reply, notes: &mut Notes<'_>) -> Next<RecordWait> {
        let RecordWait(d, request) = wait;
        match reply {
            Reply::Sql(SqlReply::Rows(rows)) => {
                if rows.is_empty() {
                    notes.note(BillNote::UsageDeduplicated { request });
                }
                Next::Finish(d, true)
            }
            Reply::Sql(SqlReply::Affected(n)) => Next::Finish(d, n > 0),
            _ => Next::Finish(d, false),
        }
    }
}
