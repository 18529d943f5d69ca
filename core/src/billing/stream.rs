//! R-000-01 (streaming settlement) and R-000-14 (token accounting): a gateway streams an
//! upstream completion to its client and bills it ([`StreamGateway`]); a sweeper settles the
//! holds left open ([`Sweeper`]); the document's proposed queue consumer charges from
//! messages ([`UsageConsumer`]).
//!
//! How the gateway settles ([`Settlement`]):
//!
//! | settlement | R-000-01 variant | what it does |
//! |---|---|---|
//! | `Callback` | `Buggy` | `_stream_billing_callback()` after the stream, in the response task, outside any transaction of the request: a crash, a client disconnect (the task is cancelled) or a failed transaction (logged, swallowed) loses the charge |
//! | `Queue` | `DocFix` | the same task publishes a billing message; a consumer charges and acks (no dedup: schedules) |
//! | `Hold` | `Correct` | reserve-then-settle: a `billing_holds` row and a conditional reserve of the maximum cost commit before the upstream call; the settlement (hold `open` → `settled`, the ledger row keyed by the request, the refund of max − actual) is one transaction, run on the normal end or in a cancellation-shielded `finally`; the sweeper settles holds left open past T from the provider's usage |
//!
//! How it counts tokens ([`Accounting`], R-000-14): `ChunksTimes3` (the document's
//! `estimate_output_tokens()`), `RequireUsage` (the proposal: the final usage record, and the
//! prompt alone when it never arrives), `Provider` (the usage record, else the provider's
//! usage API after cancelling the stream, else the hold is left to the sweeper). The price is
//! one unit per token.
//!
//! Drain order and method kinds are [`Machine`]'s.

use super::consumer::{Handler, Next, Notes, QueueConsumer};
use super::idem::deduct_stmt;
use super::{ACCOUNTS, Amount, BillNote, BillTag, HOLDS, LEDGER, Outbox};
use crate::ids::{EndpointId, OpId};
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, CallKind, CmpOp, Cond, DeliveryId, Expr, JobFields, KeyedRow, QueueOp, Reply,
    RequestId, Row, SqlOp, SqlReply, SqlStmt, StoreOp, StreamId, StreamReply, UpstreamOp, Usage,
    Value,
};
use crate::tag::Note;
use crate::time::{Duration, Timestamp};

/// How a streamed request is settled (R-000-01).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Settlement {
    /// The document's post-stream callback.
    Callback,
    /// The document's proposal: a message queue.
    Queue,
    /// Reserve-then-settle with a hold and a sweeper.
    Hold,
}

/// How the completion tokens are counted (R-000-14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accounting {
    /// `chunks × 3`.
    ChunksTimes3,
    /// The final usage record; the prompt alone without it.
    RequireUsage,
    /// The final usage record, else the provider's usage API.
    Provider,
}

/// The price of a usage record: one unit per token.
pub fn price(usage: Usage) -> Amount {
    Amount(i64::from(usage.prompt_tokens) + i64::from(usage.completion_tokens))
}

/// What a gateway bills for a stream of which it read `chunks` chunks and, if it read one, the
/// usage record `usage` (the final one, or the provider's usage API's): the pure billing
/// function of R-000-14. `None`: the accounting cannot tell (the gateway asks the provider).
pub fn count_tokens(
    accounting: Accounting,
    prompt_tokens: u32,
    chunks: u32,
    usage: Option<Usage>,
) -> Option<Amount> {
    let prompt = i64::from(prompt_tokens);
    match (accounting, usage) {
        (Accounting::ChunksTimes3, _) => Some(Amount(prompt + i64::from(chunks) * 3)),
        (_, Some(usage)) => Some(price(usage)),
        (Accounting::RequireUsage, None) => Some(Amount(prompt)),
        (Accounting::Provider, None) => None,
    }
}

/// The ledger and hold key of a request (`r1`).
pub fn request_key(request: RequestId) -> String {
    request.to_string()
}

/// One streamed request and how its gateway serves and bills it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// How it settles.
    pub settlement: Settlement,
    /// How it counts tokens.
    pub accounting: Accounting,
    /// The request.
    pub request: RequestId,
    /// The upstream endpoint.
    pub endpoint: EndpointId,
    /// The prompt's tokens.
    pub prompt_tokens: u32,
    /// The request's `max_tokens`: the hold reserves `prompt + max_tokens`.
    pub max_tokens: u32,
    /// The account charged.
    pub account: String,
    /// The client disconnects after reading this many chunks (`Some(0)`: before the first).
    pub disconnect_after: Option<u32>,
    /// How many usage lookups the gateway makes before leaving the hold to the sweeper.
    pub lookups_max: u32,
}

/// The settlement transaction, shared by the gateway and the sweeper. Its safety does not
/// depend on timing: the ledger row, keyed by the request (`UNIQUE`), goes first, so a second
/// settlement fails on it and rolls back; the hold's status (read `FOR UPDATE`) only decides
/// how the balance moves: an `open` hold refunds `max_cost - amount`, a hold the sweeper
/// voided (its reservation already refunded, because the provider knew no call at the time)
/// is charged `amount` afresh.
///
/// `BEGIN`; `INSERT` ledger; `SELECT` hold `FOR UPDATE`; hold → `settled`; the balance;
/// `COMMIT`. A void (`amount` = `None`): `BEGIN`; hold `open` → `voided` (no row: roll back);
/// refund `max_cost`; `COMMIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SettleTx {
    request: RequestId,
    /// The amount to charge; `None` voids the hold.
    amount: Option<Amount>,
    max_cost: Amount,
    estimated: bool,
    account: String,
    step: SettleStep,
    /// How the balance moves once the hold's status is known.
    delta: i64,
    /// A statement failed: the rollback that follows is a failure's, not a refusal's.
    failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SettleStep {
    Begin,
    Ledger,
    Lock,
    Mark,
    Balance,
    Commit,
    Rollback,
}

/// How a settlement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// Committed.
    Done,
    /// The request was settled (or the hold resolved) already.
    Already,
    /// The transaction failed: the hold stays as it was.
    Failed,
}

impl SettleTx {
    fn new(
        request: RequestId,
        amount: Option<Amount>,
        max_cost: Amount,
        account: &str,
    ) -> SettleTx {
        SettleTx {
            request,
            amount,
            max_cost,
            estimated: false,
            account: account.to_string(),
            step: SettleStep::Begin,
            delta: 0,
            failed: false,
        }
    }

    /// Sends the first statement.
    fn start(&mut self, out: &mut Outbox) -> OpId {
        self.step = SettleStep::Begin;
        out.send(StoreOp::Sql(SqlOp::Begin), BillTag::Tx)
    }

    fn hold_tag(&self) -> BillTag {
        BillTag::Hold {
            request: self.request,
        }
    }

    fn exec(&self, out: &mut Outbox, stmt: SqlStmt, tag: BillTag) -> OpId {
        out.send(StoreOp::Sql(SqlOp::exec(stmt)), tag)
    }

    fn balance(&self, out: &mut Outbox, delta: i64) -> OpId {
        let stmt = SqlStmt::Update {
            table: ACCOUNTS,
            key: self.account.clone(),
            guard: Cond::True,
            set: vec![Assign::to(
                "balance",
                Expr::col("balance").plus(Expr::int(delta)),
            )],
        };
        self.exec(out, stmt, self.hold_tag())
    }

    fn set_status(&self, out: &mut Outbox, from: &str, to: &str) -> OpId {
        let stmt = SqlStmt::Update {
            table: HOLDS,
            key: request_key(self.request),
            guard: Cond::cmp("status", CmpOp::Eq, Value::Text(from.into())),
            set: vec![Assign::Set {
                column: "status".into(),
                value: Value::Text(to.into()),
            }],
        };
        self.exec(out, stmt, self.hold_tag())
    }

    fn rollback(&mut self, out: &mut Outbox, failed: bool) -> Result<OpId, Settled> {
        self.failed = failed;
        self.step = SettleStep::Rollback;
        Ok(out.send(StoreOp::Sql(SqlOp::Rollback), BillTag::Tx))
    }

    /// Handles the reply to the statement in flight: the next one to send, or the end.
    fn on_reply(&mut self, out: &mut Outbox, reply: &Reply) -> Result<OpId, Settled> {
        let rows = match reply {
            Reply::Sql(SqlReply::Rows(rows)) => Some(rows.as_slice()),
            _ => None,
        };
        match (self.step, reply) {
            (SettleStep::Rollback, _) => {
                return Err(if self.failed {
                    Settled::Failed
                } else {
                    Settled::Already
                });
            }
            (SettleStep::Commit, Reply::Sql(SqlReply::Committed)) => return Err(Settled::Done),
            (_, Reply::Timeout) | (SettleStep::Commit, _) => return Err(Settled::Failed),
            (SettleStep::Ledger, Reply::Sql(SqlReply::UniqueViolation { .. })) => {
                out.note(BillNote::SettleRefused {
                    request: self.request,
                });
                return self.rollback(out, false);
            }
            _ => {}
        }
        let id = match (self.step, self.amount, reply) {
            (SettleStep::Begin, Some(amount), Reply::Sql(SqlReply::Ok)) => {
                self.step = SettleStep::Ledger;
                let stmt = ledger_insert(
                    request_key(self.request),
                    self.request,
                    amount,
                    self.estimated,
                );
                let tag = BillTag::Settle {
                    request: self.request,
                    amount,
                };
                self.exec(out, stmt, tag)
            }
            (SettleStep::Begin, None, Reply::Sql(SqlReply::Ok)) => {
                self.step = SettleStep::Mark;
                self.delta = self.max_cost.0;
                self.set_status(out, "open", "voided")
            }
            (SettleStep::Ledger, _, Reply::Sql(SqlReply::Affected(n))) if *n > 0 => {
                self.step = SettleStep::Lock;
                let stmt = SqlStmt::Select {
                    table: HOLDS,
                    key: request_key(self.request),
                    for_update: true,
                };
                self.exec(out, stmt, self.hold_tag())
            }
            (SettleStep::Lock, Some(amount), Reply::Sql(SqlReply::Rows(found))) => {
                let status = found.first().and_then(|r| match r.columns.get("status") {
                    Some(Value::Text(s)) => Some(s.clone()),
                    _ => None,
                });
                self.step = SettleStep::Mark;
                match status.as_deref() {
                    Some("open") => {
                        self.delta = self.max_cost.0.saturating_sub(amount.0);
                        self.set_status(out, "open", "settled")
                    }
                    Some("voided") => {
                        self.delta = amount.0.saturating_neg();
                        self.set_status(out, "voided", "settled")
                    }
                    // No hold, or settled without a ledger row: nothing reserved to move.
                    _ => return self.rollback(out, true),
                }
            }
            (SettleStep::Mark, _, Reply::Sql(SqlReply::Rows(_))) => {
                if rows.is_some_and(<[_]>::is_empty) {
                    // The hold moved on since: a void finds it resolved; a settlement holds
                    // its row lock, so it cannot.
                    return self.rollback(out, self.amount.is_some());
                }
                self.step = SettleStep::Balance;
                self.balance(out, self.delta)
            }
            (SettleStep::Balance, _, Reply::Sql(SqlReply::Rows(r))) if !r.is_empty() => {
                self.step = SettleStep::Commit;
                out.send(StoreOp::Sql(SqlOp::Commit), BillTag::Tx)
            }
            _ => return self.rollback(out, true),
        };
        Ok(id)
    }
}

fn ledger_insert(key: String, request: RequestId, amount: Amount, estimated: bool) -> SqlStmt {
    SqlStmt::Insert {
        table: LEDGER,
        key,
        row: Row::from([
            ("request".to_string(), Value::Text(request_key(request))),
            ("amount".to_string(), Value::Int(amount.0)),
            ("body".to_string(), Value::Text(String::new())),
            ("estimated".to_string(), Value::Int(i64::from(estimated))),
        ]),
    }
}

/// The gateway serving one streamed request.
#[derive(Debug)]
pub struct StreamGateway {
    cfg: StreamConfig,
    out: Outbox,
    pending: Option<(OpId, GwWait)>,
    done: bool,
    stream: Option<StreamId>,
    chunks: u32,
    usage: Option<Usage>,
    lookups: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GwWait {
    /// The hold transaction: begin, insert, reserve, commit.
    HoldBegin,
    HoldInsert,
    HoldReserve,
    HoldCommit,
    HoldRollback,
    Open,
    Next,
    Cancel,
    Lookup,
    /// The callback's transaction: begin, charge, deduct, commit (failures swallowed).
    CbBegin(Amount),
    CbCharge(Amount),
    CbDeduct,
    CbCommit,
    CbRollback,
    Publish,
    Settle(Box<SettleTx>),
}

impl StreamGateway {
    /// The gateway of `cfg.request` in its `incarnation`: a restarted gateway does nothing
    /// (the client's request died with it; only a sweeper can settle it).
    pub fn new(cfg: StreamConfig, incarnation: u32) -> StreamGateway {
        StreamGateway {
            cfg,
            out: Outbox::default(),
            pending: None,
            done: incarnation > 0,
            stream: None,
            chunks: 0,
            usage: None,
            lookups: 0,
        }
    }

    fn max_cost(&self) -> Amount {
        Amount(i64::from(self.cfg.prompt_tokens) + i64::from(self.cfg.max_tokens))
    }

    fn send(&mut self, op: StoreOp, tag: BillTag, wait: GwWait) {
        let id = self.out.send(op, tag);
        self.pending = Some((id, wait));
    }

    fn sql(&mut self, stmt: SqlStmt, tag: BillTag, wait: GwWait) {
        self.send(StoreOp::Sql(SqlOp::exec(stmt)), tag, wait);
    }

    fn tx(&mut self, op: SqlOp, wait: GwWait) {
        self.send(StoreOp::Sql(op), BillTag::Tx, wait);
    }

    fn upstream(&mut self, kind: CallKind, wait: GwWait) {
        let op = UpstreamOp {
            endpoint: self.cfg.endpoint,
            kind,
        };
        let request = self.cfg.request;
        self.send(StoreOp::Upstream(op), BillTag::Stream { request }, wait);
    }

    fn open(&mut self) {
        let kind = CallKind::Open {
            request: self.cfg.request,
            prompt_tokens: self.cfg.prompt_tokens,
        };
        self.upstream(kind, GwWait::Open);
    }

    fn next(&mut self) {
        if self.cfg.disconnect_after == Some(self.chunks) {
            return self.disconnected();
        }
        match self.stream {
            Some(stream) => self.upstream(CallKind::Next { stream }, GwWait::Next),
            None => self.done = true,
        }
    }

    /// The client closed the connection.
    fn disconnected(&mut self) {
        match (self.cfg.settlement, self.stream) {
            // The response task is cancelled: nothing after the stream runs.
            (Settlement::Callback | Settlement::Queue, _) => self.done = true,
            // The shielded `finally`: stop the generation, then settle from what the
            // accounting knows.
            (Settlement::Hold, Some(stream)) => {
                self.upstream(CallKind::Cancel { stream }, GwWait::Cancel)
            }
            (Settlement::Hold, None) => self.finish(),
        }
    }

    /// The prompt's and the counted completion tokens, if the accounting can tell.
    fn counted(&self) -> Option<Amount> {
        count_tokens(
            self.cfg.accounting,
            self.cfg.prompt_tokens,
            self.chunks,
            self.usage,
        )
    }

    /// The stream is over (ended, failed, cancelled): bill it.
    fn finish(&mut self) {
        let Some(amount) = self.counted() else {
            return self.lookup();
        };
        match self.cfg.settlement {
            Settlement::Callback => self.tx(SqlOp::Begin, GwWait::CbBegin(amount)),
            Settlement::Queue => {
                let fields = JobFields::from([
                    ("request".to_string(), request_key(self.cfg.request)),
                    ("amount".to_string(), amount.0.to_string()),
                ]);
                let op = QueueOp::Enqueue {
                    dedup: None,
                    fields,
                };
                self.send(StoreOp::Queue(op), BillTag::Queue, GwWait::Publish);
            }
            Settlement::Hold => self.settle(amount, false),
        }
    }

    fn lookup(&mut self) {
        if self.lookups >= self.cfg.lookups_max || self.stream.is_none() {
            // Left open: the sweeper settles it from the provider's usage.
            self.done = true;
            return;
        }
        self.lookups += 1;
        let kind = CallKind::Usage {
            request: self.cfg.request,
        };
        self.upstream(kind, GwWait::Lookup);
    }

    fn settle(&mut self, amount: Amount, estimated: bool) {
        let mut tx = Box::new(SettleTx::new(
            self.cfg.request,
            Some(amount),
            self.max_cost(),
            &self.cfg.account,
        ));
        tx.estimated = estimated;
        let id = tx.start(&mut self.out);
        self.pending = Some((id, GwWait::Settle(tx)));
    }

    fn on_reply(&mut self, now: Timestamp, wait: GwWait, reply: Reply) {
        let request = self.cfg.request;
        let key = request_key(request);
        match (wait, reply) {
            (GwWait::HoldBegin, Reply::Sql(SqlReply::Ok)) => {
                let row = Row::from([
                    ("status".to_string(), Value::Text("open".into())),
                    ("max_cost".to_string(), Value::Int(self.max_cost().0)),
                    (
                        "created_at".to_string(),
                        Value::Int(i64::try_from(now.as_ms()).unwrap_or(i64::MAX)),
                    ),
                ]);
                let stmt = SqlStmt::Insert {
                    table: HOLDS,
                    key,
                    row,
                };
                self.sql(stmt, BillTag::Hold { request }, GwWait::HoldInsert);
            }
            (GwWait::HoldInsert, Reply::Sql(SqlReply::Affected(n))) if n > 0 => {
                let stmt = deduct_stmt(&self.cfg.account, self.max_cost());
                self.sql(stmt, BillTag::Hold { request }, GwWait::HoldReserve);
            }
            (GwWait::HoldReserve, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => {
                self.tx(SqlOp::Commit, GwWait::HoldCommit)
            }
            (GwWait::HoldCommit, Reply::Sql(SqlReply::Committed)) => self.open(),
            // Not reserved (or not known to be): the request is refused before any upstream
            // byte; a hold that did commit is voided by the sweeper.
            (GwWait::HoldCommit, _) | (GwWait::HoldRollback, _) => self.done = true,
            (GwWait::HoldBegin | GwWait::HoldInsert | GwWait::HoldReserve, Reply::Timeout) => {
                self.done = true
            }
            (GwWait::HoldBegin | GwWait::HoldInsert | GwWait::HoldReserve, _) => {
                self.tx(SqlOp::Rollback, GwWait::HoldRollback)
            }
            (GwWait::Open, Reply::Stream(StreamReply::Opened { stream })) => {
                self.stream = Some(stream);
                self.next();
            }
            // Refused: nothing generated. The hold (if any) is voided by the sweeper, which
            // finds no usage for the request.
            (GwWait::Open, _) => self.done = true,
            (GwWait::Next, Reply::Stream(StreamReply::Chunk { .. })) => {
                self.chunks = self.chunks.saturating_add(1);
                self.next();
            }
            (GwWait::Next, Reply::Stream(StreamReply::End { usage })) => {
                self.usage = usage;
                self.finish();
            }
            (GwWait::Next, Reply::Stream(StreamReply::Failed { .. })) => self.finish(),
            // Cancelled, closed, a timeout: the stream is gone; bill what is known.
            (GwWait::Next, _) => self.finish(),
            (GwWait::Cancel, _) => self.finish(),
            (
                GwWait::Lookup,
                Reply::Stream(StreamReply::Usage {
                    usage,
                    complete: true,
                }),
            ) => {
                self.usage = Some(usage);
                self.out.note(BillNote::UsageLooked { request });
                self.finish();
            }
            (GwWait::Lookup, _) => self.lookup(),
            (GwWait::CbBegin(amount), Reply::Sql(SqlReply::Ok)) => {
                let stmt = ledger_insert(key, request, amount, false);
                self.sql(
                    stmt,
                    BillTag::Settle { request, amount },
                    GwWait::CbCharge(amount),
                );
            }
            (GwWait::CbCharge(amount), Reply::Sql(SqlReply::Affected(n))) if n > 0 => {
                let stmt = deduct_stmt(&self.cfg.account, amount);
                self.sql(stmt, BillTag::Hold { request }, GwWait::CbDeduct);
            }
            (GwWait::CbDeduct, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => {
                self.tx(SqlOp::Commit, GwWait::CbCommit)
            }
            // The exception is logged and swallowed.
            (GwWait::CbBegin(_) | GwWait::CbCharge(_) | GwWait::CbDeduct, Reply::Timeout) => {
                self.done = true
            }
            (GwWait::CbBegin(_) | GwWait::CbCharge(_) | GwWait::CbDeduct, _) => {
                self.tx(SqlOp::Rollback, GwWait::CbRollback)
            }
            (GwWait::CbCommit | GwWait::CbRollback | GwWait::Publish, _) => self.done = true,
            (GwWait::Settle(mut tx), reply) => match tx.on_reply(&mut self.out, &reply) {
                Ok(id) => self.pending = Some((id, GwWait::Settle(tx))),
                Err(_) => self.done = true,
            },
        }
    }
}

impl Machine for StreamGateway {
    fn handle_start(&mut self, _now: Timestamp) {
        if self.done || self.pending.is_some() || self.stream.is_some() {
            return;
        }
        match self.cfg.settlement {
            Settlement::Hold => self.tx(SqlOp::Begin, GwWait::HoldBegin),
            Settlement::Callback | Settlement::Queue => self.open(),
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        match self.pending.take() {
            Some((id, wait)) if id == op => self.on_reply(now, wait, reply),
            other => self.pending = other,
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
    }

    fn is_idle(&self) -> bool {
        self.pending.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// Sweeper

/// The sweeper's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweeperConfig {
    /// The endpoint whose usage API it asks.
    pub endpoint: EndpointId,
    /// The account holds are reserved on.
    pub account: String,
    /// How often it scans.
    pub every: Duration,
    /// How long a hold stays open before the sweeper settles it (T).
    pub after: Duration,
    /// How many holds one scan returns at most.
    pub batch_max: u64,
}

/// Settles holds left open longer than T from the provider's usage, or voids them (refunds
/// the reservation) when the provider knows no call for the request; and settles a voided
/// hold whose request the provider bills after all (a stream opened after the void). Each
/// with the settlement transaction, whose unique ledger row makes it exactly once. It runs
/// until the world's horizon.
#[derive(Debug)]
pub struct Sweeper {
    cfg: SweeperConfig,
    out: Outbox,
    timer: Option<Timestamp>,
    pending: Option<(OpId, SwWait)>,
    /// The holds of the last scan due for a look, with their maximum cost and whether they
    /// are voided.
    queue: Vec<(String, Amount, bool)>,
    /// When the sweeper first saw each hold open: it settles a hold once it has seen it open
    /// for T by its own clock (a gateway's `created_at` is another host's clock).
    seen: Vec<(String, Timestamp)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SwWait {
    Scan,
    Lookup(String, Amount, bool),
    Settle(Box<SettleTx>),
}

/// The most holds a sweeper remembers having seen open.
const SEEN_MAX: usize = 1_024;

impl Sweeper {
    /// A sweeper.
    pub fn new(cfg: SweeperConfig) -> Sweeper {
        Sweeper {
            cfg,
            out: Outbox::default(),
            timer: None,
            pending: None,
            queue: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn next_hold(&mut self, now: Timestamp) {
        let Some((key, max_cost, voided)) = self.queue.pop() else {
            self.timer = Some(now + self.cfg.every);
            return;
        };
        let Some(request) = key.strip_prefix('r').and_then(|n| n.parse().ok()) else {
            return self.next_hold(now);
        };
        let op = UpstreamOp {
            endpoint: self.cfg.endpoint,
            kind: CallKind::Usage {
                request: RequestId(request),
            },
        };
        let id = self.out.send(
            StoreOp::Upstream(op),
            BillTag::Stream {
                request: RequestId(request),
            },
        );
        self.pending = Some((id, SwWait::Lookup(key, max_cost, voided)));
    }

    fn settle(&mut self, key: &str, amount: Option<Amount>, max_cost: Amount) {
        let Some(request) = key.strip_prefix('r').and_then(|n| n.parse().ok()) else {
            return;
        };
        let mut tx = Box::new(SettleTx::new(
            RequestId(request),
            amount,
            max_cost,
            &self.cfg.account,
        ));
        let id = tx.start(&mut self.out);
        self.pending = Some((id, SwWait::Settle(tx)));
    }

    fn on_scan(&mut self, now: Timestamp, rows: &[KeyedRow]) {
        self.seen.retain(|(k, _)| rows.iter().any(|r| r.key == *k));
        for row in rows {
            let max_cost = Amount(row.int("max_cost").unwrap_or(0));
            if matches!(row.columns.get("status"), Some(Value::Text(s)) if s == "voided") {
                self.queue.push((row.key.clone(), max_cost, true));
                continue;
            }
            let first = match self.seen.iter().find(|(k, _)| *k == row.key) {
                Some((_, t)) => *t,
                None => {
                    if self.seen.len() < SEEN_MAX {
                        self.seen.push((row.key.clone(), now));
                    }
                    now
                }
            };
            if now.saturating_since(first) >= self.cfg.after {
                self.queue.push((row.key.clone(), max_cost, false));
            }
        }
    }
}

impl Machine for Sweeper {
    fn handle_start(&mut self, now: Timestamp) {
        if self.timer.is_none() && self.pending.is_none() {
            self.timer = Some(now + self.cfg.every);
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
        match (wait, reply) {
            (SwWait::Scan, Reply::Sql(SqlReply::Rows(rows))) => {
                self.on_scan(now, &rows);
                self.next_hold(now);
            }
            (SwWait::Scan, _) => self.timer = Some(now + self.cfg.every),
            (
                SwWait::Lookup(key, max_cost, _),
                Reply::Stream(StreamReply::Usage {
                    usage,
                    complete: true,
                }),
            ) => self.settle(&key, Some(price(usage)), max_cost),
            (SwWait::Lookup(key, max_cost, false), Reply::Stream(StreamReply::UnknownRequest)) => {
                self.settle(&key, None, max_cost)
            }
            (SwWait::Lookup(..), _) => self.next_hold(now),
            (SwWait::Settle(mut tx), reply) => match tx.on_reply(&mut self.out, &reply) {
                Ok(id) => self.pending = Some((id, SwWait::Settle(tx))),
                Err(settled) => {
                    if settled == Settled::Done {
                        self.out.note(BillNote::Swept {
                            request: tx.request,
                        });
                    }
                    self.next_hold(now);
                }
            },
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.pending.is_some() || self.timer.is_none_or(|t| t > now) {
            return;
        }
        self.timer = None;
        let stmt = SqlStmt::scan(
            HOLDS,
            Cond::Or(vec![
                Cond::cmp("status", CmpOp::Eq, Value::Text("open".into())),
                Cond::cmp("status", CmpOp::Eq, Value::Text("voided".into())),
            ]),
        )
        .limit(self.cfg.batch_max);
        let id = self
            .out
            .send(StoreOp::Sql(SqlOp::exec(stmt)), BillTag::Sweep);
        self.pending = Some((id, SwWait::Scan));
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
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
// The document's queue consumer

/// The document's proposal's consumer: fetches a billing message, charges it (ledger row
/// keyed by the delivery, deduction, commit) and acks it. Not idempotent (schedule Q-2).
pub type UsageConsumer = QueueConsumer<ChargeUsage>;

impl UsageConsumer {
    /// A consumer of the billing queue charging `account`, polling every `poll_every`.
    pub fn new(account: &str, poll_every: Duration) -> UsageConsumer {
        QueueConsumer::with(
            ChargeUsage {
                account: account.to_string(),
            },
            poll_every,
        )
    }
}

/// What [`UsageConsumer`] does with a billing message: charge it in one transaction.
#[derive(Debug)]
pub struct ChargeUsage {
    account: String,
}

/// Where [`ChargeUsage`]'s transaction stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeWait {
    /// `BEGIN` sent.
    Begin(DeliveryId, RequestId, Amount),
    /// The ledger row sent.
    Charge(DeliveryId, RequestId, Amount),
    /// The deduction sent.
    Deduct(DeliveryId),
    /// `COMMIT` sent.
    Commit(DeliveryId),
    /// `ROLLBACK` sent.
    Rollback(DeliveryId),
}

impl Handler for ChargeUsage {
    type Wait = ChargeWait;

    fn delivered(&mut self, d: DeliveryId, request: RequestId, amount: Amount) -> Next<ChargeWait> {
        Next::Send(
            StoreOp::Sql(SqlOp::Begin),
            BillTag::Tx,
            ChargeWait::Begin(d, request, amount),
        )
    }

    fn reply(
        &mut self,
        wait: ChargeWait,
        reply: Reply,
        _notes: &mut Notes<'_>,
    ) -> Next<ChargeWait> {
        let sql = |stmt| StoreOp::Sql(SqlOp::exec(stmt));
        match (wait, reply) {
            (ChargeWait::Begin(d, request, amount), Reply::Sql(SqlReply::Ok)) => {
                let key = format!("{}.d{}", request_key(request), d.0);
                let stmt = ledger_insert(key, request, amount, false);
                Next::Send(
                    sql(stmt),
                    BillTag::Settle { request, amount },
                    ChargeWait::Charge(d, request, amount),
                )
            }
            (ChargeWait::Charge(d, request, amount), Reply::Sql(SqlReply::Affected(n)))
                if n > 0 =>
            {
                let stmt = deduct_stmt(&self.account, amount);
                Next::Send(sql(stmt), BillTag::Hold { request }, ChargeWait::Deduct(d))
            }
            (ChargeWait::Deduct(d), Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => {
                Next::Send(
                    StoreOp::Sql(SqlOp::Commit),
                    BillTag::Tx,
                    ChargeWait::Commit(d),
                )
            }
            (ChargeWait::Commit(d), Reply::Sql(SqlReply::Committed)) => Next::Finish(d, true),
            (ChargeWait::Commit(d), _) => Next::Finish(d, false),
            (
                ChargeWait::Begin(d, ..) | ChargeWait::Charge(d, ..) | ChargeWait::Deduct(d),
                Reply::Timeout,
            ) => Next::Finish(d, false),
            (ChargeWait::Begin(d, ..) | ChargeWait::Charge(d, ..) | ChargeWait::Deduct(d), _) => {
                Next::Send(
                    StoreOp::Sql(SqlOp::Rollback),
                    BillTag::Tx,
                    ChargeWait::Rollback(d),
                )
            }
            (ChargeWait::Rollback(d), _) => Next::Finish(d, false),
        }
    }
}
