//! Document 000's quota family. This module: the quota counters (R-000-02, R-000-05); the
//! Redis mirror of the balance is `mirror` (R-000-04) and its warm-up `warm` (R-000-09).
//!
//! An LLM gateway's `quota_check` (or `external_auth`) admits a request against a counter,
//! the upstream call runs, and `billing` charges it. [`Request`] is one gateway request in the variants the catalog names, side by
//! side; [`Sweeper`] is the correct protocol's timeout of abandoned reservations.
//!
//! | variant | admission | billing |
//! |---|---|---|
//! | `Buggy`, budget (R-000-02) | `budget_used` from the in-memory `WorkflowContext`: 0 for every request | ledger row only (the Context is thrown away) |
//! | `Buggy`, daily (R-000-05) | reads `daily_used`, then `daily_used += units` | `daily_used += units` again, with the ledger row |
//! | `DocFix` (both) | reads the counter from the table, checks `used + units <= limit` | `used += units` with the ledger row, one transaction, in the bucket of the billing instant |
//! | `Correct` (both) | one transaction: `INSERT quota_reservations` + `reserved += est WHERE used + reserved + est <= limit` (zero rows: refused), the bucket fixed at reservation | `open -> settled` + `used += actual, reserved -= est` + ledger row, one transaction, retried until it commits or finds the reservation resolved; a failed upstream call releases instead |
//!
//! The correct protocol is a two-phase reservation in the manner of TigerBeetle's pending
//! transfers: each reservation resolves at most once (settled, released, or voided by the
//! [`Sweeper`] after its timeout when the gateway crashed or lost the outcome), because every
//! resolution is the guarded transition `status = 'open' -> ...` in the transaction that moves
//! the counters. The upstream call is a timer: its cost is what billing charges.

use std::collections::VecDeque;

use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, CmpOp, Cond, Expr, KeyedRow, Reply, RequestId, Row, ScanLock, SqlOp, SqlReply, SqlStmt,
    StoreOp, Value,
};
use crate::tag::{Note, Tag};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

mod mirror;
pub mod oracle;
mod tables;
mod tag;
mod warm;

pub use mirror::{
    DocFixReading, MirrorConfig, MirrorRequest, Observer, Reconciler, Warmer, mirror_key,
};
pub use tables::{QUOTA_BALANCE, QUOTA_LEDGER, QUOTA_RESERVATIONS, QUOTA_USAGE};
pub use tag::{QuotaNote, QuotaTag};
pub use warm::{WarmConfig, WarmRequest, warm_lock_key};

/// A reservation's status while it holds units.
pub const STATUS_OPEN: &str = "open";
/// A reservation's status once billing charged it.
pub const STATUS_SETTLED: &str = "settled";
/// A reservation's status once its failed request gave it back.
pub const STATUS_RELEASED: &str = "released";
/// A reservation's status once the sweeper timed it out.
pub const STATUS_VOIDED: &str = "voided";

/// Which counter a request is admitted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// The API key's cumulative budget (`api_key_quota.budget_used`, R-000-02): one bucket
    /// per key.
    Budget,
    /// The key's `daily_used` (R-000-05): one bucket per key and day of `day` length.
    Daily {
        /// The length of a day (virtual time).
        day: Duration,
        /// The time of day 0 at the world's origin (a world that models the seconds around
        /// a midnight starts shortly before it, not a whole day earlier).
        from: Duration,
    },
}

impl Counter {
    /// The bucket of `key` at `at`: the key itself, or `key:d<day number>`.
    pub fn bucket(self, key: &str, at: Timestamp) -> String {
        match self {
            Counter::Budget => key.to_string(),
            Counter::Daily { day, from } => {
                let day_ms = day.as_ms().max(1);
                format!(
                    "{key}:d{}",
                    at.as_ms().saturating_add(from.as_ms()) / day_ms
                )
            }
        }
    }
}

/// One gateway request's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestConfig {
    /// The protocol.
    pub variant: Variant,
    /// The counter it is admitted against.
    pub counter: Counter,
    /// The API key.
    pub key: String,
    /// The request's id (client-stable: billing retries reuse it).
    pub request: RequestId,
    /// The units admission checks or reserves (the maximum the request may cost).
    pub estimate: i64,
    /// The units the upstream call actually costs (at most `estimate`).
    pub actual: i64,
    /// How long the upstream call takes.
    pub work: Duration,
    /// Whether the upstream call fails (nothing to charge).
    pub upstream_fails: bool,
    /// How long a reservation stays open before the sweeper may void it.
    pub reservation_ttl: Duration,
    /// How many times the correct protocol tries to settle or release.
    pub resolve_attempts_max: u32,
    /// How long it waits between two attempts.
    pub retry_after: Duration,
}

impl RequestConfig {
    /// A request of `units` on `key` with the document's defaults: a 500 ms upstream call,
    /// reservations voided after 5 s, three settlement attempts 300 ms apart.
    pub fn new(variant: Variant, counter: Counter, key: &str, request: u64, units: i64) -> Self {
        RequestConfig {
            variant,
            counter,
            key: key.to_string(),
            request: RequestId(request),
            estimate: units,
            actual: units,
            work: Duration::from_ms(500),
            upstream_fails: false,
            reservation_ttl: Duration::from_secs(5),
            resolve_attempts_max: 3,
            retry_after: Duration::from_ms(300),
        }
    }
}

/// Queues outgoing operations and notes, and hands out operation ids.
#[derive(Debug, Default)]
struct Outbox {
    next: u64,
    ops: VecDeque<Outgoing>,
    notes: VecDeque<QuotaNote>,
}

impl Outbox {
    fn send(&mut self, op: SqlOp, tag: QuotaTag) -> OpId {
        self.send_op(StoreOp::Sql(op), tag)
    }

    fn send_op(&mut self, op: StoreOp, tag: QuotaTag) -> OpId {
        self.next += 1;
        let id = OpId(self.next);
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
        id
    }

    fn exec(&mut self, stmt: SqlStmt, tag: QuotaTag) -> OpId {
        self.send(SqlOp::exec(stmt), tag)
    }
}

/// What a statement of a [`TxRun`] must answer for the transaction to go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// `BEGIN`.
    Begun,
    /// A guarded `UPDATE`: at least one row (none: the guard refused, the transaction is
    /// rolled back with the outcome [`TxOutcome::Refused`]).
    Row,
    /// An `INSERT`: one row.
    Inserted,
    /// `COMMIT`.
    Committed,
}

impl Need {
    fn met(self, reply: &Reply) -> Option<bool> {
        match (self, reply) {
            (Need::Begun, Reply::Sql(SqlReply::Ok)) => Some(true),
            (Need::Row, Reply::Sql(SqlReply::Rows(rows))) => Some(!rows.is_empty()),
            (Need::Inserted, Reply::Sql(SqlReply::Affected(n))) => Some(*n > 0),
            (Need::Committed, Reply::Sql(SqlReply::Committed)) => Some(true),
            _ => None,
        }
    }
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxOutcome {
    /// Every statement did what it must and the last one (a `COMMIT`, or the only statement
    /// in autocommit) succeeded.
    Committed,
    /// A guard refused (zero rows): rolled back.
    Refused,
    /// An error, a timeout or a lost commit: rolled back, or of unknown outcome.
    Failed,
}

/// A transaction in progress: its statements, sent one after the other.
#[derive(Debug)]
struct TxRun {
    stmts: VecDeque<(SqlOp, QuotaTag, Need)>,
    waiting: OpId,
    need: Need,
    /// Set once a `ROLLBACK` is on its way: the outcome to report when it answers.
    rolling_back: Option<TxOutcome>,
}

impl TxRun {
    /// Starts the transaction: sends its first statement.
    fn start(out: &mut Outbox, stmts: Vec<(SqlOp, QuotaTag, Need)>) -> Option<TxRun> {
        let mut stmts: VecDeque<_> = stmts.into();
        let (op, tag, need) = stmts.pop_front()?;
        let waiting = out.send(op, tag);
        Some(TxRun {
            stmts,
            waiting,
            need,
            rolling_back: None,
        })
    }

    /// Takes the reply to the statement in flight; returns the outcome once the transaction
    /// has ended.
    fn on_reply(&mut self, out: &mut Outbox, reply: &Reply) -> Option<TxOutcome> {
        if let Some(outcome) = self.rolling_back {
            return Some(outcome);
        }
        let failed = match self.need.met(reply) {
            Some(true) => match self.stmts.pop_front() {
                Some((op, tag, need)) => {
                    self.waiting = out.send(op, tag);
                    self.need = need;
                    return None;
                }
                None => return Some(TxOutcome::Committed),
            },
            Some(false) => TxOutcome::Refused,
            None => TxOutcome::Failed,
        };
        // A failed `COMMIT` (rolled back, or lost) or an autocommit statement leaves nothing
        // to roll back.
        let open = self
            .stmts
            .back()
            .is_some_and(|(_, _, n)| *n == Need::Committed);
        if !open {
            return Some(failed);
        }
        self.waiting = out.send(SqlOp::Rollback, QuotaTag::Tx);
        self.rolling_back = Some(failed);
        None
    }
}

fn int(v: i64) -> Expr {
    Expr::int(v)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// `UPDATE quota_reservations SET status = to WHERE key = $key AND status = 'open'
/// [AND expires_at <= now]`.
fn transition(key: &str, to: &str, expired_by: Option<Timestamp>) -> SqlStmt {
    let open = Cond::cmp("status", CmpOp::Eq, text(STATUS_OPEN));
    let guard = match expired_by {
        None => open,
        Some(now) => Cond::And(vec![
            open,
            Cond::cmp("expires_at", CmpOp::Le, Value::Int(ms(now))),
        ]),
    };
    SqlStmt::Update {
        table: QUOTA_RESERVATIONS,
        key: key.to_string(),
        guard,
        set: vec![Assign::Set {
            column: "status".into(),
            value: text(to),
        }],
    }
}

/// `UPDATE quota_usage SET reserved = reserved - est WHERE key = bucket`.
fn unhold(bucket: &str, est: i64) -> SqlStmt {
    SqlStmt::Update {
        table: QUOTA_USAGE,
        key: bucket.to_string(),
        guard: Cond::True,
        set: vec![Assign::to(
            "reserved",
            Expr::col("reserved").minus(int(est)),
        )],
    }
}

/// A timestamp as a `bigint` column value, saturating.
fn ms(at: Timestamp) -> i64 {
    i64::try_from(at.as_ms()).unwrap_or(i64::MAX)
}

/// The primary key of a request's reservation and ledger rows.
pub fn request_key(request: RequestId) -> String {
    format!("r{}", request.0)
}

// ---------------------------------------------------------------------------------------------
// Request

/// One gateway request: admission, the upstream call, billing. Inputs and outputs follow
/// [`Machine`]'s drain order; a spurious `handle_timeout` is a no-op. A restarted incarnation
/// (after a crash) does nothing: the client's connection died with the process.
#[derive(Debug)]
pub struct Request {
    cfg: RequestConfig,
    incarnation: u32,
    out: Outbox,
    phase: Phase,
    /// The bucket the request was admitted against.
    admitted: Option<String>,
    timer: Option<Timestamp>,
    attempts: u32,
}

#[derive(Debug)]
enum Phase {
    /// Not started.
    New,
    /// Buggy and DocFix: reading the counter.
    Checking(OpId),
    /// Buggy, daily: `quota_check`'s own deduction.
    Deducting(OpId),
    /// Correct: the reservation transaction.
    Reserving(TxRun),
    /// The upstream call (until the timer).
    Calling,
    /// Billing (Buggy, DocFix) or settling (Correct).
    Billing(TxRun),
    /// Correct: releasing after a failed upstream call.
    Releasing(TxRun),
    /// Correct: waiting to try settling or releasing again.
    Backoff,
    /// Finished.
    Done,
}

impl Request {
    /// The request in its `incarnation` (0 at first start).
    pub fn new(cfg: RequestConfig, incarnation: u32) -> Request {
        Request {
            cfg,
            incarnation,
            out: Outbox::default(),
            phase: Phase::New,
            admitted: None,
            timer: None,
            attempts: 0,
        }
    }

    fn id(&self) -> RequestId {
        self.cfg.request
    }

    fn done(&mut self, note: Option<QuotaNote>) {
        self.out.notes.extend(note);
        self.phase = Phase::Done;
        self.timer = None;
    }

    fn give_up(&mut self, reason: &'static str) {
        let request = self.id();
        self.done(Some(QuotaNote::GaveUp { request, reason }));
    }

    fn refuse(&mut self, bucket: String) {
        let request = self.id();
        self.done(Some(QuotaNote::Refused { request, bucket }));
    }

    fn admit(&mut self, now: Timestamp, bucket: String) {
        let request = self.id();
        self.out.notes.push_back(QuotaNote::Admitted {
            request,
            bucket: bucket.clone(),
        });
        self.admitted = Some(bucket);
        self.phase = Phase::Calling;
        self.timer = Some(now + self.cfg.work);
    }

    fn start(&mut self, now: Timestamp) {
        let bucket = self.cfg.counter.bucket(&self.cfg.key, now);
        let request = self.id();
        match self.cfg.variant {
            Variant::Buggy | Variant::DocFix => {
                let stmt = SqlStmt::Select {
                    table: QUOTA_USAGE,
                    key: bucket.clone(),
                    for_update: false,
                };
                let id = self.out.exec(stmt, QuotaTag::Check { request, bucket });
                self.phase = Phase::Checking(id);
            }
            Variant::Correct => {
                let est = self.cfg.estimate;
                let bucket_fixed = bucket.clone();
                let hold = SqlStmt::Insert {
                    table: QUOTA_RESERVATIONS,
                    key: request_key(request),
                    row: Row::from([
                        ("bucket".to_string(), text(&bucket)),
                        ("est".to_string(), Value::Int(est)),
                        ("status".to_string(), text(STATUS_OPEN)),
                        (
                            "expires_at".to_string(),
                            Value::Int(ms(now + self.cfg.reservation_ttl)),
                        ),
                    ]),
                };
                let room = Cond::compare(
                    Expr::col("used").plus(Expr::col("reserved")).plus(int(est)),
                    CmpOp::Le,
                    Expr::col("limit_units"),
                );
                let reserve = SqlStmt::Update {
                    table: QUOTA_USAGE,
                    key: bucket.clone(),
                    guard: room,
                    set: vec![Assign::to("reserved", Expr::col("reserved").plus(int(est)))],
                };
                let stmts = vec![
                    (SqlOp::Begin, QuotaTag::Tx, Need::Begun),
                    (
                        SqlOp::exec(hold),
                        QuotaTag::Hold {
                            request,
                            bucket: bucket.clone(),
                        },
                        Need::Inserted,
                    ),
                    (
                        SqlOp::exec(reserve),
                        QuotaTag::Reserve { request, bucket },
                        Need::Row,
                    ),
                    (SqlOp::Commit, QuotaTag::Tx, Need::Committed),
                ];
                self.admitted = Some(bucket_fixed);
                self.phase = match TxRun::start(&mut self.out, stmts) {
                    Some(tx) => Phase::Reserving(tx),
                    None => Phase::Done,
                };
            }
        }
    }

    /// Buggy and DocFix: the counter was read; admit or refuse.
    fn checked(&mut self, now: Timestamp, reply: &Reply) {
        let row = match reply {
            Reply::Sql(SqlReply::Rows(rows)) => rows.first(),
            _ => None,
        };
        let Some((used, limit)) =
            row.and_then(|r: &KeyedRow| Some((r.int("used")?, r.int("limit_units")?)))
        else {
            return self.give_up("the counter could not be read");
        };
        let bucket = self.cfg.counter.bucket(&self.cfg.key, now);
        // R-000-02's Buggy admits against the fresh Context's `budget_used`, always 0.
        let used = match (self.cfg.variant, self.cfg.counter) {
            (Variant::Buggy, Counter::Budget) => 0,
            _ => used,
        };
        if used.saturating_add(self.cfg.estimate) > limit {
            return self.refuse(bucket);
        }
        if let (Variant::Buggy, Counter::Daily { .. }) = (self.cfg.variant, self.cfg.counter) {
            let request = self.id();
            let stmt = SqlStmt::Update {
                table: QUOTA_USAGE,
                key: bucket.clone(),
                guard: Cond::True,
                set: vec![Assign::Add {
                    column: "used".into(),
                    delta: self.cfg.estimate,
                }],
            };
            let id = self.out.exec(
                stmt,
                QuotaTag::CheckDeduct {
                    request,
                    bucket: bucket.clone(),
                },
            );
            self.admitted = Some(bucket);
            self.phase = Phase::Deducting(id);
            return;
        }
        self.admit(now, bucket);
    }

    /// The upstream call is over: bill, settle or release.
    fn called(&mut self, now: Timestamp) {
        let Some(admitted) = self.admitted.clone() else {
            return self.give_up("admitted against no bucket");
        };
        let request = self.id();
        if self.cfg.upstream_fails && self.cfg.variant != Variant::Correct {
            // The documents' billing step never runs for a failed call.
            return self.give_up("the upstream call failed");
        }
        let actual = self.cfg.actual;
        let ledger = SqlStmt::Insert {
            table: QUOTA_LEDGER,
            key: request_key(request),
            row: Row::from([
                ("bucket".to_string(), text(&admitted)),
                ("units".to_string(), Value::Int(actual)),
            ]),
        };
        match self.cfg.variant {
            // The Context's `budget_used += cost` is lost with the Context: only the ledger.
            Variant::Buggy if self.cfg.counter == Counter::Budget => {
                let stmts = vec![(
                    SqlOp::exec(ledger),
                    QuotaTag::Ledger { request },
                    Need::Inserted,
                )];
                self.bill(stmts);
            }
            Variant::Buggy | Variant::DocFix => {
                // Billing deducts in the bucket of its own instant.
                let bucket = self.cfg.counter.bucket(&self.cfg.key, now);
                let charge = SqlStmt::Update {
                    table: QUOTA_USAGE,
                    key: bucket.clone(),
                    guard: Cond::True,
                    set: vec![Assign::Add {
                        column: "used".into(),
                        delta: actual,
                    }],
                };
                let stmts = vec![
                    (SqlOp::Begin, QuotaTag::Tx, Need::Begun),
                    (
                        SqlOp::exec(charge),
                        QuotaTag::Bill { request, bucket },
                        Need::Row,
                    ),
                    (
                        SqlOp::exec(ledger),
                        QuotaTag::Ledger { request },
                        Need::Inserted,
                    ),
                    (SqlOp::Commit, QuotaTag::Tx, Need::Committed),
                ];
                self.bill(stmts);
            }
            Variant::Correct => self.resolve(),
        }
    }

    fn bill(&mut self, stmts: Vec<(SqlOp, QuotaTag, Need)>) {
        self.phase = match TxRun::start(&mut self.out, stmts) {
            Some(tx) => Phase::Billing(tx),
            None => Phase::Done,
        };
    }

    /// Correct: settle (or release after a failed call) the reservation, in one transaction.
    fn resolve(&mut self) {
        let Some(bucket) = self.admitted.clone() else {
            return self.give_up("no reservation to resolve");
        };
        self.attempts += 1;
        let request = self.id();
        let est = self.cfg.estimate;
        let begin = (SqlOp::Begin, QuotaTag::Tx, Need::Begun);
        let commit = (SqlOp::Commit, QuotaTag::Tx, Need::Committed);
        if self.cfg.upstream_fails {
            let stmts = vec![
                begin,
                (
                    SqlOp::exec(transition(&request_key(request), STATUS_RELEASED, None)),
                    QuotaTag::Release { request },
                    Need::Row,
                ),
                (
                    SqlOp::exec(unhold(&bucket, est)),
                    QuotaTag::Unhold { request },
                    Need::Row,
                ),
                commit,
            ];
            self.phase = match TxRun::start(&mut self.out, stmts) {
                Some(tx) => Phase::Releasing(tx),
                None => Phase::Done,
            };
            return;
        }
        let actual = self.cfg.actual;
        let charge = SqlStmt::Update {
            table: QUOTA_USAGE,
            key: bucket.clone(),
            guard: Cond::True,
            set: vec![
                Assign::to("used", Expr::col("used").plus(int(actual))),
                Assign::to("reserved", Expr::col("reserved").minus(int(est))),
            ],
        };
        let ledger = SqlStmt::Insert {
            table: QUOTA_LEDGER,
            key: request_key(request),
            row: Row::from([
                ("bucket".to_string(), text(&bucket)),
                ("units".to_string(), Value::Int(actual)),
            ]),
        };
        let stmts = vec![
            begin,
            (
                SqlOp::exec(transition(&request_key(request), STATUS_SETTLED, None)),
                QuotaTag::Settle {
                    request,
                    bucket: bucket.clone(),
                },
                Need::Row,
            ),
            (
                SqlOp::exec(charge),
                QuotaTag::Bill { request, bucket },
                Need::Row,
            ),
            (
                SqlOp::exec(ledger),
                QuotaTag::Ledger { request },
                Need::Inserted,
            ),
            commit,
        ];
        self.bill(stmts);
    }

    fn resolved(&mut self, now: Timestamp, outcome: TxOutcome) {
        let request = self.id();
        match outcome {
            TxOutcome::Committed => {
                let note = (!self.cfg.upstream_fails).then_some(QuotaNote::Charged {
                    request,
                    units: self.cfg.actual,
                });
                self.done(note);
            }
            // Settled by an earlier attempt whose answer was lost, or voided: nothing to do.
            TxOutcome::Refused => self.done(None),
            TxOutcome::Failed if self.attempts < self.cfg.resolve_attempts_max => {
                self.phase = Phase::Backoff;
                self.timer = Some(now + self.cfg.retry_after);
            }
            TxOutcome::Failed => self.give_up("the reservation could not be resolved"),
        }
    }
}

impl Machine for Request {
    fn handle_start(&mut self, now: Timestamp) {
        if !matches!(self.phase, Phase::New) {
            return;
        }
        if self.incarnation > 0 {
            self.phase = Phase::Done;
            return;
        }
        self.start(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        match &mut self.phase {
            Phase::Checking(id) if *id == op => self.checked(now, &reply),
            Phase::Deducting(id) if *id == op => match reply {
                Reply::Sql(SqlReply::Rows(rows)) if !rows.is_empty() => {
                    let bucket = self.admitted.clone().unwrap_or_default();
                    self.admit(now, bucket);
                }
                _ => self.give_up("quota_check's deduction failed"),
            },
            Phase::Reserving(tx) if tx.waiting == op => {
                let Some(outcome) = tx.on_reply(&mut self.out, &reply) else {
                    return;
                };
                let bucket = self.admitted.clone().unwrap_or_default();
                match outcome {
                    TxOutcome::Committed => self.admit(now, bucket),
                    TxOutcome::Refused => self.refuse(bucket),
                    // The reservation may have committed: the sweeper voids it if so.
                    TxOutcome::Failed => self.give_up("the reservation's outcome is unknown"),
                }
            }
            Phase::Billing(tx) if tx.waiting == op => {
                let Some(outcome) = tx.on_reply(&mut self.out, &reply) else {
                    return;
                };
                match self.cfg.variant {
                    Variant::Correct => self.resolved(now, outcome),
                    _ if outcome == TxOutcome::Committed => {
                        let request = self.id();
                        let units = self.cfg.actual;
                        self.done(Some(QuotaNote::Charged { request, units }));
                    }
                    _ => self.give_up("billing failed"),
                }
            }
            Phase::Releasing(tx) if tx.waiting == op => {
                if let Some(outcome) = tx.on_reply(&mut self.out, &reply) {
                    self.resolved(now, outcome);
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.timer.is_none_or(|t| t > now) {
            return;
        }
        self.timer = None;
        match self.phase {
            Phase::Calling => self.called(now),
            Phase::Backoff => self.resolve(),
            _ => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.notes.pop_front().map(Note::new)
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timer
    }

    fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

// ---------------------------------------------------------------------------------------------
// Sweeper

/// The most expired reservations one sweep takes.
pub const SWEEP_BATCH_MAX: u64 = 8;

/// The correct protocol's sweeper: every `every`, it scans for open reservations past their
/// `expires_at` and voids each in its own transaction (`open -> voided` guarded on status and
/// expiry, then `reserved -= est`), so that a gateway that crashed or lost the outcome between
/// reserve and settle leaks nothing, and a settlement racing with it resolves the reservation
/// at most once. It never goes idle: the world's horizon ends its run.
#[derive(Debug)]
pub struct Sweeper {
    every: Duration,
    out: Outbox,
    next_at: Option<Timestamp>,
    step: SweepStep,
    /// Expired reservations found by the last scan and not voided yet: (request key, bucket,
    /// estimate).
    found: VecDeque<(String, String, i64)>,
}

#[derive(Debug)]
enum SweepStep {
    Waiting,
    Scanning(OpId),
    Voiding(TxRun),
}

impl Sweeper {
    /// A sweeper that runs every `every`, from its start.
    pub fn new(every: Duration) -> Sweeper {
        Sweeper {
            every,
            out: Outbox::default(),
            next_at: None,
            step: SweepStep::Waiting,
            found: VecDeque::new(),
        }
    }

    fn void_next(&mut self, now: Timestamp) {
        let Some((key, bucket, est)) = self.found.pop_front() else {
            self.step = SweepStep::Waiting;
            self.next_at = Some(now + self.every);
            return;
        };
        let request = key
            .strip_prefix('r')
            .and_then(|n| n.parse().ok())
            .map_or(RequestId(u64::MAX), RequestId);
        let void = transition(&key, STATUS_VOIDED, Some(now));
        let stmts = vec![
            (SqlOp::Begin, QuotaTag::Tx, Need::Begun),
            (SqlOp::exec(void), QuotaTag::Void { request }, Need::Row),
            (
                SqlOp::exec(unhold(&bucket, est)),
                QuotaTag::Unhold { request },
                Need::Row,
            ),
            (SqlOp::Commit, QuotaTag::Tx, Need::Committed),
        ];
        match TxRun::start(&mut self.out, stmts) {
            Some(tx) => self.step = SweepStep::Voiding(tx),
            None => self.void_next(now),
        }
    }
}

impl Machine for Sweeper {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_at = Some(now + self.every);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        match &mut self.step {
            SweepStep::Scanning(id) if *id == op => {
                if let Reply::Sql(SqlReply::Rows(rows)) = &reply {
                    self.found = rows
                        .iter()
                        .filter_map(|r| {
                            let bucket = match r.columns.get("bucket") {
                                Some(Value::Text(b)) => b.clone(),
                                _ => return None,
                            };
                            Some((r.key.clone(), bucket, r.int("est")?))
                        })
                        .collect();
                }
                self.void_next(now);
            }
            SweepStep::Voiding(tx) if tx.waiting == op => {
                let ended = tx.on_reply(&mut self.out, &reply).is_some();
                if ended {
                    self.void_next(now);
                }
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if !matches!(self.step, SweepStep::Waiting) || self.next_at.is_none_or(|t| t > now) {
            return;
        }
        self.next_at = None;
        let expired = Cond::And(vec![
            Cond::cmp("status", CmpOp::Eq, text(STATUS_OPEN)),
            Cond::cmp("expires_at", CmpOp::Le, Value::Int(ms(now))),
        ]);
        let scan = SqlStmt::scan(QUOTA_RESERVATIONS, expired)
            .locking(ScanLock::None)
            .limit(SWEEP_BATCH_MAX);
        let id = self.out.exec(scan, QuotaTag::Sweep);
        self.step = SweepStep::Scanning(id);
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.notes.pop_front().map(Note::new)
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_at
    }

    fn is_idle(&self) -> bool {
        false
    }
}
