//! R-000-03: the gateway's idempotent billing of one client request, in its three variants
//! (see the table in the module above). One [`IdemGateway`] is the client and the gateway
//! instance serving its attempts: it runs an attempt, answers it, and retries after a 409
//! (at Retry-After) or a 503 (after a backoff), until a final answer or `attempts_max`. A
//! crash of the process is a crash of the gateway mid-attempt; the restarted incarnation is
//! the client's retry after its connection broke.
//!
//! Drain order and method kinds are [`Machine`]'s.

use super::{ACCOUNTS, IDEMPOTENCY, LEDGER};
use super::{Amount, Answer, BillNote, BillRequest, BillTag, Outbox, marker_key};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, CmpOp, Cond, Expr, KeyedRow, KvOp, KvReply, OnConflict, RandomOp, Reply, Row,
    SetCondition, SqlOp, SqlReply, SqlStmt, StoreOp, Value,
};
use crate::tag::Note;
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

/// Which key the document's gateway deduplicates on (RACES.md assumption A1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The client's key, the same on every retry.
    ClientStable,
    /// A `trace_id` the gateway generates per attempt.
    PerAttempt,
}

/// When the document's gateway writes its Redis marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarkerOrder {
    /// `SET NX EX` before the DB transaction (the document's code, schedule S1).
    BeforeTx,
    /// `GET` before the transaction, `SET` after its commit (schedule S2's reading).
    AfterCommit,
}

/// One client request and how its gateway serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemConfig {
    /// The protocol.
    pub variant: Variant,
    /// The request (its key and payload).
    pub request: BillRequest,
    /// The account charged.
    pub account: String,
    /// Which key the document's gateway deduplicates on (`Buggy`, `DocFix`).
    pub key_source: KeySource,
    /// When the document's gateway writes its marker (`Buggy`).
    pub marker: MarkerOrder,
    /// The correct claim's lease (5 s).
    pub lease: Duration,
    /// The Redis marker's and cache's TTL (`EX 86400`).
    pub marker_ttl: Duration,
    /// How long the client waits after a 503 (1 s).
    pub backoff: Duration,
    /// How many attempts the client makes at most.
    pub attempts_max: u32,
}

impl IdemConfig {
    /// The document's parameters for `request` in `variant`: the client-stable key, the
    /// marker before the transaction.
    pub fn new(variant: Variant, request: BillRequest, account: &str) -> IdemConfig {
        IdemConfig {
            variant,
            request,
            account: account.to_string(),
            key_source: KeySource::ClientStable,
            marker: MarkerOrder::BeforeTx,
            lease: Duration::from_secs(5),
            marker_ttl: Duration::from_secs(86_400),
            backoff: Duration::from_secs(1),
            attempts_max: 20,
        }
    }
}

/// How many times one attempt reads or re-claims the idempotency row before it answers 503.
const CLAIM_ROUNDS_MAX: u32 = 4;

/// The client of one request with the gateway serving its attempts.
#[derive(Debug)]
pub struct IdemGateway {
    cfg: IdemConfig,
    /// The process's name and incarnation (`C1#0`): the document's per-attempt ids.
    name: String,
    out: Outbox,
    attempt: u32,
    pending: Option<(OpId, Wait)>,
    timer: Option<Timestamp>,
    done: bool,
    /// The current attempt's generated body, claim epoch and claim rounds.
    body: String,
    epoch: i64,
    rounds: u32,
}

/// What the reply in flight answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    CacheGet,
    Claim,
    ReadRow,
    Reclaim,
    Generate,
    Check,
    Begin,
    Complete,
    Charge,
    Deduct,
    Commit,
    /// `ROLLBACK`, then (Correct) release the claim, then answer.
    Rollback(Answer),
    Release(Answer),
    /// The marker after the commit (`Buggy`'s S2 reading), then answer.
    Mark(Answer),
    /// The cache fill after the answer.
    CacheFill,
}

fn text(row: &KeyedRow, column: &str) -> Option<String> {
    match row.columns.get(column) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

impl IdemGateway {
    /// The client `name` of `cfg.request` in its `incarnation` (0 at first start, +1 per
    /// restart).
    pub fn new(cfg: IdemConfig, name: &str, incarnation: u32) -> IdemGateway {
        IdemGateway {
            cfg,
            name: format!("{name}#{incarnation}"),
            out: Outbox::default(),
            attempt: 0,
            pending: None,
            timer: None,
            done: false,
            body: String::new(),
            epoch: 0,
            rounds: 0,
        }
    }

    fn tag_request(&self) -> BillRequest {
        self.cfg.request
    }

    /// The key the gateway deduplicates on in this attempt.
    fn idem_key(&self) -> String {
        let key = self.cfg.request.key;
        match (self.cfg.variant, self.cfg.key_source) {
            (Variant::Correct, _) | (_, KeySource::ClientStable) => key.to_string(),
            (_, KeySource::PerAttempt) => format!("{key}.{}.t{}", self.name, self.attempt),
        }
    }

    fn send(&mut self, op: StoreOp, tag: BillTag, wait: Wait) {
        let id = self.out.send(op, tag);
        self.pending = Some((id, wait));
    }

    fn sql(&mut self, stmt: SqlStmt, tag: BillTag, wait: Wait) {
        self.send(StoreOp::Sql(SqlOp::exec(stmt)), tag, wait);
    }

    fn tx(&mut self, op: SqlOp, wait: Wait) {
        self.send(StoreOp::Sql(op), BillTag::Tx, wait);
    }

    fn start_attempt(&mut self, now: Timestamp) {
        self.timer = None;
        self.attempt += 1;
        self.body.clear();
        self.epoch = 0;
        self.rounds = 0;
        let request = self.tag_request();
        if self.cfg.variant == Variant::Correct {
            let key = marker_key(&self.idem_key());
            self.send(
                StoreOp::Kv(KvOp::Get { key }),
                BillTag::IdemCheck { request },
                Wait::CacheGet,
            );
        } else {
            let _ = now;
            self.generate();
        }
    }

    fn generate(&mut self) {
        let request = self.tag_request();
        self.send(
            StoreOp::Random(RandomOp::Bits),
            BillTag::Generate { request },
            Wait::Generate,
        );
    }

    fn answer(&mut self, now: Timestamp, answer: Answer) {
        let request = self.tag_request();
        let wait = match &answer {
            Answer::InProgress { retry_after_ms } => Duration::from_ms((*retry_after_ms).max(100)),
            _ => self.cfg.backoff,
        };
        let is_final = answer.is_final();
        self.out.note(BillNote::Answered { request, answer });
        if is_final {
            self.done = true;
        } else if self.attempt >= self.cfg.attempts_max {
            self.out.note(BillNote::GaveUp { key: request.key });
            self.done = true;
        } else {
            self.timer = Some(now + wait);
        }
    }

    fn claim(&mut self, now: Timestamp) {
        let request = self.tag_request();
        let row = Row::from([
            ("status".to_string(), Value::Text("in_progress".into())),
            ("amount".to_string(), Value::Int(request.amount.0)),
            ("owner_epoch".to_string(), Value::Int(1)),
            ("lease_until".to_string(), Value::Int(self.lease_until(now))),
            ("response".to_string(), Value::Text(String::new())),
        ]);
        let stmt = SqlStmt::Upsert {
            table: IDEMPOTENCY,
            key: self.idem_key(),
            row,
            on_conflict: OnConflict::DoNothing,
        };
        self.sql(stmt, BillTag::Claim { request }, Wait::Claim);
    }

    fn lease_until(&self, now: Timestamp) -> i64 {
        i64::try_from((now + self.cfg.lease).as_ms()).unwrap_or(i64::MAX)
    }

    fn read_row(&mut self, now: Timestamp) {
        self.rounds += 1;
        if self.rounds > CLAIM_ROUNDS_MAX {
            return self.answer(now, Answer::Unavailable);
        }
        let request = self.tag_request();
        let stmt = SqlStmt::Select {
            table: IDEMPOTENCY,
            key: self.idem_key(),
            for_update: false,
        };
        self.sql(stmt, BillTag::ReadClaim { request }, Wait::ReadRow);
    }

    /// The correct gateway read the claim row someone else holds or completed.
    fn on_row(&mut self, now: Timestamp, row: &KeyedRow) {
        let request = self.tag_request();
        if row.int("amount") != Some(request.amount.0) {
            return self.answer(now, Answer::Mismatch);
        }
        let status = text(row, "status").unwrap_or_default();
        let epoch = row.int("owner_epoch").unwrap_or(0);
        let lease_until = row.int("lease_until").unwrap_or(0);
        let now_ms = i64::try_from(now.as_ms()).unwrap_or(i64::MAX);
        match status.as_str() {
            "done" => {
                let body = text(row, "response").unwrap_or_default();
                self.out.note(BillNote::Replayed { request });
                self.answer(now, Answer::Served { body: body.clone() });
                self.fill_cache(body);
            }
            "in_progress" if lease_until > now_ms => {
                let retry_after_ms = u64::try_from(lease_until - now_ms).unwrap_or(0);
                self.answer(now, Answer::InProgress { retry_after_ms });
            }
            "in_progress" => {
                let stmt = SqlStmt::Update {
                    table: IDEMPOTENCY,
                    key: self.idem_key(),
                    guard: Cond::And(vec![
                        Cond::cmp("status", CmpOp::Eq, Value::Text("in_progress".into())),
                        Cond::cmp("owner_epoch", CmpOp::Eq, Value::Int(epoch)),
                    ]),
                    set: vec![
                        Assign::Set {
                            column: "owner_epoch".into(),
                            value: Value::Int(epoch.saturating_add(1)),
                        },
                        Assign::Set {
                            column: "lease_until".into(),
                            value: Value::Int(self.lease_until(now)),
                        },
                    ],
                };
                self.epoch = epoch.saturating_add(1);
                self.sql(stmt, BillTag::Reclaim { request }, Wait::Reclaim);
            }
            _ => self.answer(now, Answer::Unavailable),
        }
    }

    fn fill_cache(&mut self, body: String) {
        let request = self.tag_request();
        let op = KvOp::Set {
            key: marker_key(&self.idem_key()),
            value: format!("{}|{body}", request.amount.0),
            condition: SetCondition::Always,
            ttl: Some(self.cfg.marker_ttl),
        };
        self.send(
            StoreOp::Kv(op),
            BillTag::IdemMark { request },
            Wait::CacheFill,
        );
    }

    /// The document's Redis check, after the upstream call.
    fn check(&mut self) {
        let request = self.tag_request();
        let key = marker_key(&self.idem_key());
        let op = match self.cfg.marker {
            MarkerOrder::BeforeTx => KvOp::Set {
                key,
                value: "1".into(),
                condition: SetCondition::IfAbsent,
                ttl: Some(self.cfg.marker_ttl),
            },
            MarkerOrder::AfterCommit => KvOp::Get { key },
        };
        self.send(StoreOp::Kv(op), BillTag::IdemCheck { request }, Wait::Check);
    }

    fn charge(&mut self) {
        let request = self.tag_request();
        // The document's ledger row is keyed by the attempt; the fixes key it by the request.
        let key = match self.cfg.variant {
            Variant::Buggy => format!("{}.{}.a{}", self.idem_key(), self.name, self.attempt),
            Variant::DocFix | Variant::Correct => self.idem_key(),
        };
        let row = Row::from([
            ("request".to_string(), Value::Text(self.idem_key())),
            ("amount".to_string(), Value::Int(request.amount.0)),
            ("body".to_string(), Value::Text(self.body.clone())),
            ("estimated".to_string(), Value::Int(0)),
        ]);
        let stmt = SqlStmt::Insert {
            table: LEDGER,
            key,
            row,
        };
        let body = self.body.clone();
        self.sql(stmt, BillTag::Charge { request, body }, Wait::Charge);
    }

    fn deduct(&mut self) {
        let request = self.tag_request();
        let stmt = deduct_stmt(&self.cfg.account, request.amount);
        self.sql(stmt, BillTag::Deduct { request }, Wait::Deduct);
    }

    /// The transaction failed: roll back (unless the connection is gone), release the claim
    /// (`Correct`), then answer.
    fn abort(&mut self, now: Timestamp, timed_out: bool, answer: Answer) {
        if timed_out {
            self.release_then(now, answer);
        } else {
            self.tx(SqlOp::Rollback, Wait::Rollback(answer));
        }
    }

    fn release_then(&mut self, now: Timestamp, answer: Answer) {
        if self.cfg.variant != Variant::Correct || self.epoch == 0 {
            return self.answer(now, answer);
        }
        let request = self.tag_request();
        let stmt = SqlStmt::Delete {
            table: IDEMPOTENCY,
            key: self.idem_key(),
            guard: Cond::And(vec![
                Cond::cmp("status", CmpOp::Eq, Value::Text("in_progress".into())),
                Cond::cmp("owner_epoch", CmpOp::Eq, Value::Int(self.epoch)),
            ]),
        };
        self.sql(stmt, BillTag::Release { request }, Wait::Release(answer));
    }

    fn on_reply(&mut self, now: Timestamp, wait: Wait, reply: Reply) {
        let timed_out = matches!(reply, Reply::Timeout);
        let request = self.tag_request();
        match (wait, reply) {
            (Wait::CacheGet, Reply::Kv(KvReply::Bulk(v))) => match v.split_once('|') {
                Some((amount, body)) if amount == request.amount.0.to_string() => {
                    self.out.note(BillNote::Replayed { request });
                    self.answer(
                        now,
                        Answer::Served {
                            body: body.to_string(),
                        },
                    );
                }
                Some(_) => self.answer(now, Answer::Mismatch),
                None => self.claim(now),
            },
            (Wait::CacheGet, _) => self.claim(now),
            (Wait::Claim, Reply::Sql(SqlReply::Rows(rows))) if rows.is_empty() => {
                self.read_row(now)
            }
            (Wait::Claim, Reply::Sql(SqlReply::Rows(_))) => {
                self.epoch = 1;
                self.generate();
            }
            (Wait::Claim, _) => self.answer(now, Answer::Unavailable),
            (Wait::ReadRow, Reply::Sql(SqlReply::Rows(rows))) => match rows.first() {
                Some(row) => self.on_row(now, row),
                // Released since our claim lost: claim again.
                None => self.claim(now),
            },
            (Wait::ReadRow, _) => self.answer(now, Answer::Unavailable),
            (Wait::Reclaim, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => {
                self.out.note(BillNote::Reclaimed { request });
                self.generate();
            }
            (Wait::Reclaim, Reply::Sql(SqlReply::Rows(_))) => {
                self.epoch = 0;
                self.read_row(now);
            }
            (Wait::Reclaim, _) => {
                // Whether the bump applied is unknown: the lease expires either way.
                self.epoch = 0;
                self.answer(now, Answer::Unavailable);
            }
            (Wait::Generate, Reply::Random(v)) => {
                self.body = format!("completion-{v:016x}");
                match self.cfg.variant {
                    Variant::Correct => self.tx(SqlOp::Begin, Wait::Begin),
                    Variant::Buggy | Variant::DocFix => self.check(),
                }
            }
            (Wait::Generate, _) => self.release_then(now, Answer::Unavailable),
            (Wait::Check, reply) => {
                let fresh = match (self.cfg.marker, &reply) {
                    (MarkerOrder::BeforeTx, Reply::Kv(KvReply::Ok)) => Some(true),
                    (MarkerOrder::BeforeTx, Reply::Kv(KvReply::Nil)) => Some(false),
                    (MarkerOrder::AfterCommit, Reply::Kv(KvReply::Nil)) => Some(true),
                    (MarkerOrder::AfterCommit, Reply::Kv(KvReply::Bulk(_))) => Some(false),
                    _ => None,
                };
                match fresh {
                    Some(true) => self.tx(SqlOp::Begin, Wait::Begin),
                    Some(false) => self.answer(now, Answer::Duplicate),
                    None => self.answer(now, Answer::Unavailable),
                }
            }
            (Wait::Begin, Reply::Sql(SqlReply::Ok)) => match self.cfg.variant {
                Variant::Correct => {
                    let stmt = SqlStmt::Update {
                        table: IDEMPOTENCY,
                        key: self.idem_key(),
                        guard: Cond::And(vec![
                            Cond::cmp("status", CmpOp::Eq, Value::Text("in_progress".into())),
                            Cond::cmp("owner_epoch", CmpOp::Eq, Value::Int(self.epoch)),
                        ]),
                        set: vec![
                            Assign::Set {
                                column: "status".into(),
                                value: Value::Text("done".into()),
                            },
                            Assign::Set {
                                column: "response".into(),
                                value: Value::Text(self.body.clone()),
                            },
                        ],
                    };
                    self.sql(stmt, BillTag::Complete { request }, Wait::Complete);
                }
                Variant::Buggy | Variant::DocFix => self.charge(),
            },
            (Wait::Begin, reply) => {
                let timed_out = matches!(reply, Reply::Timeout);
                self.abort(now, timed_out, Answer::Unavailable)
            }
            (Wait::Complete, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => self.charge(),
            (Wait::Complete, Reply::Sql(SqlReply::Rows(_))) => {
                // A newer epoch owns the key: this completion must not land.
                self.out.note(BillNote::Fenced { request });
                self.epoch = 0;
                self.tx(SqlOp::Rollback, Wait::Rollback(Answer::Unavailable));
            }
            (Wait::Complete, _) => self.abort(now, timed_out, Answer::Unavailable),
            (Wait::Charge, Reply::Sql(SqlReply::Affected(n))) if n > 0 => self.deduct(),
            (Wait::Charge, Reply::Sql(SqlReply::UniqueViolation { .. }))
                if self.cfg.variant == Variant::DocFix =>
            {
                // The proposal maps the unique violation to an error, not to the stored
                // response (its missing condition (iii)).
                self.abort(now, false, Answer::Failed)
            }
            (Wait::Charge, _) => self.abort(now, timed_out, Answer::Unavailable),
            (Wait::Deduct, Reply::Sql(SqlReply::Rows(rows))) if !rows.is_empty() => {
                self.tx(SqlOp::Commit, Wait::Commit)
            }
            (Wait::Deduct, Reply::Sql(SqlReply::Rows(_))) => {
                self.abort(now, false, Answer::Insufficient)
            }
            (Wait::Deduct, _) => self.abort(now, timed_out, Answer::Unavailable),
            (Wait::Commit, Reply::Sql(SqlReply::Committed)) => {
                let body = self.body.clone();
                let served = Answer::Served { body: body.clone() };
                match (self.cfg.variant, self.cfg.marker) {
                    (Variant::Correct, _) => {
                        self.answer(now, served);
                        self.fill_cache(body);
                    }
                    (Variant::Buggy, MarkerOrder::AfterCommit) => {
                        let op = KvOp::Set {
                            key: marker_key(&self.idem_key()),
                            value: "1".into(),
                            condition: SetCondition::Always,
                            ttl: Some(self.cfg.marker_ttl),
                        };
                        self.send(
                            StoreOp::Kv(op),
                            BillTag::IdemMark { request },
                            Wait::Mark(served),
                        );
                    }
                    _ => self.answer(now, served),
                }
            }
            // A commit whose answer was lost may have committed: the retry finds out.
            (Wait::Commit, _) => self.release_then(now, Answer::Unavailable),
            (Wait::Rollback(answer), _) => self.release_then(now, answer),
            (Wait::Release(answer), _) => self.answer(now, answer),
            (Wait::Mark(answer), _) => self.answer(now, answer),
            (Wait::CacheFill, _) => {}
        }
    }
}

/// `UPDATE billing_accounts SET balance = balance - amount WHERE key = account AND balance >=
/// amount`: the conditional deduction (no row: insufficient balance).
pub(crate) fn deduct_stmt(account: &str, amount: Amount) -> SqlStmt {
    SqlStmt::Update {
        table: ACCOUNTS,
        key: account.to_string(),
        guard: Cond::cmp("balance", CmpOp::Ge, Value::Int(amount.0)),
        set: vec![Assign::to(
            "balance",
            Expr::col("balance").minus(Expr::int(amount.0)),
        )],
    }
}

impl Machine for IdemGateway {
    fn handle_start(&mut self, now: Timestamp) {
        if self.attempt == 0 && self.pending.is_none() {
            self.start_attempt(now);
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        match self.pending.take() {
            Some((id, wait)) if id == op => self.on_reply(now, wait, reply),
            other => self.pending = other,
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.pending.is_none() && !self.done && self.timer.is_some_and(|t| t <= now) {
            self.start_attempt(now);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        if self.done || self.pending.is_some() {
            None
        } else {
            self.timer
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_none() && (self.done || self.timer.is_none())
    }
}
