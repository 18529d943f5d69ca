//! Conformance: generated sequences of statements and transaction control on two sessions,
//! run against the SQL model and a real PostgreSQL 15, must get the same replies and leave
//! the same committed rows. Error replies agree on their SQLSTATE.
//!
//! Concurrency: when the model parks a statement (`Blocked`), the same statement runs on a
//! spawned task and must be seen waiting for a lock in `pg_stat_activity`; when the holder
//! releases its locks (its transaction ends, or fails at an error), the model re-executes the
//! parked statement and its reply must equal the one the server then gives, before anything
//! else is sent. (A statement the model would park while the other session is
//! already parked would be a deadlock: it is left out of the generated sequences, and
//! `a_deadlock_fails_the_first_waiter_with_40p01` checks the model's detection on its own.)
//!
//! Locking scans (`FOR UPDATE`, `SKIP LOCKED`) get filters that cannot fail on a row: the
//! model computes a scan's filter on every row first (PostgreSQL's sort before the lock and
//! the limit), while a plan that reads the key index could stop earlier.

mod common;

use racelab_core::scheduler::ws::WS_JOBS;
use racelab_core::workorder::{APPLIED_SCANS, UPDATE_LOG, WORK_ORDERS};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use racelab_adapters::{AdapterError, PgSql};
use racelab_core::{
    Assign, CmpOp, Cond, Expr, OnConflict, Row, ScanLock, SqlOp, SqlReply, SqlStmt, Value,
};
use racelab_sim::explore::models::{SessionId, SqlModel, SqlOutcome};
use tokio::task::JoinHandle;

const SESSIONS: [SessionId; 2] = [SessionId(1), SessionId(2)];
/// How long a statement may take before the test calls it stuck.
const STATEMENT_WAIT: Duration = Duration::from_secs(10);

fn int() -> impl Strategy<Value = i64> {
    prop::sample::select(vec![0i64, 1, 2, 5, -1, i64::MAX, i64::MIN])
}

/// Texts with quotes, SQL metacharacters and unicode (no NUL: PostgreSQL's text cannot hold
/// it, a limit the model does not have).
fn text() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "",
        "W_A#0",
        "wo-1",
        "it's",
        "b",
        "'; DROP TABLE work_orders; --",
        "ключ🔑",
    ])
    .prop_map(str::to_string)
}

fn wo_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["wo-1", "wo-2", "wo'3"]).prop_map(str::to_string)
}

fn cond() -> impl Strategy<Value = Cond> {
    let cmp = prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ]);
    let leaf = prop_oneof![
        3 => Just(Cond::True),
        3 => (cmp.clone(), int()).prop_map(|(op, n)| Cond::cmp("lease_epoch", op, Value::Int(n))),
        2 => (cmp.clone(), int()).prop_map(|(op, n)| Cond::cmp("qty", op, Value::Int(n))),
        2 => (cmp.clone(), text()).prop_map(|(op, t)| Cond::cmp("lease_owner", op, Value::Text(t))),
        1 => (cmp.clone(), wo_key()).prop_map(|(op, k)| Cond::cmp("key", op, Value::Text(k))),
        1 => Just(Cond::cmp("lease_owner", CmpOp::Eq, Value::Null)),
        1 => Just(Cond::cmp("qty", CmpOp::Eq, Value::Text("1".into()))),
        1 => Just(Cond::cmp("no_such_column", CmpOp::Eq, Value::Int(1))),
        3 => (cmp.clone(), int()).prop_map(|(op, n)| Cond::compare(
            Expr::col("qty").plus(Expr::int(n)), op, Expr::col("lease_until"))),
        2 => (cmp.clone(), int()).prop_map(|(op, n)| Cond::compare(
            Expr::col("qty").minus(Expr::col("lease_epoch")), op, Expr::int(n))),
        1 => cmp.clone().prop_map(|op| Cond::compare(
            Expr::col("lease_owner").plus(Expr::int(1)), op, Expr::int(1))),
        1 => cmp.clone().prop_map(|op| Cond::compare(Expr::excluded("qty"), op, Expr::col("qty"))),
    ];
    prop_oneof![
        5 => leaf.clone(),
        1 => prop::collection::vec(leaf.clone(), 0..3).prop_map(Cond::And),
        1 => prop::collection::vec(leaf, 0..3).prop_map(Cond::Or),
    ]
}

/// Conditions that never fail on a row (no arithmetic), for locking and limited scans.
fn plain_cond() -> impl Strategy<Value = Cond> {
    let cmp = prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Ge]);
    let leaf = prop_oneof![
        3 => Just(Cond::True),
        2 => (cmp.clone(), int()).prop_map(|(op, n)| Cond::cmp("lease_epoch", op, Value::Int(n))),
        2 => (cmp.clone(), int()).prop_map(|(op, n)| Cond::cmp("qty", op, Value::Int(n))),
        2 => (cmp.clone(), wo_key()).prop_map(|(op, k)| Cond::cmp("key", op, Value::Text(k))),
        1 => Just(Cond::cmp("no_such_column", CmpOp::Eq, Value::Int(1))),
    ];
    prop_oneof![
        4 => leaf.clone(),
        1 => prop::collection::vec(leaf, 0..3).prop_map(Cond::Or),
    ]
}

/// A scan of work orders that locks its rows, with or without a limit.
fn locking_scan() -> impl Strategy<Value = SqlStmt> {
    (
        plain_cond(),
        prop::sample::select(vec![ScanLock::ForUpdate, ScanLock::SkipLocked]),
        prop::option::of(0u64..3),
    )
        .prop_map(|(filter, lock, limit)| {
            let scan = SqlStmt::scan(WORK_ORDERS, filter).locking(lock);
            match limit {
                Some(n) => scan.limit(n),
                None => scan,
            }
        })
}

fn assign() -> impl Strategy<Value = Assign> {
    prop_oneof![
        4 => int().prop_map(|delta| Assign::Add { column: "qty".into(), delta }),
        4 => Just(Assign::Add { column: "lease_epoch".into(), delta: 1 }),
        2 => text().prop_map(|t| Assign::Set { column: "lease_owner".into(), value: Value::Text(t) }),
        2 => int().prop_map(|n| Assign::Set { column: "lease_until".into(), value: Value::Int(n) }),
        1 => Just(Assign::Set { column: "lease_until".into(), value: Value::Null }),
        1 => Just(Assign::Set { column: "lease_owner".into(), value: Value::Int(3) }),
        1 => Just(Assign::Add { column: "lease_owner".into(), delta: 1 }),
        1 => Just(Assign::Set { column: "key".into(), value: Value::Text("x".into()) }),
        3 => Just(Assign::to("qty", Expr::col("qty").plus(Expr::col("lease_epoch")))),
        3 => int().prop_map(|n| Assign::to("lease_until", Expr::col("qty").minus(Expr::int(n)))),
        2 => Just(Assign::to("lease_epoch", Expr::excluded("qty"))),
        1 => Just(Assign::to("lease_epoch", Expr::excluded("qty").plus(Expr::col("lease_epoch")))),
        1 => Just(Assign::to("lease_owner", Expr::col("qty"))),
        1 => Just(Assign::to("lease_until", Expr::int(i64::MAX).plus(Expr::int(1)))),
        1 => Just(Assign::to("lease_until", Expr::Const(Value::Null))),
    ]
}

fn stmt() -> impl Strategy<Value = SqlStmt> {
    let scan_key = prop::sample::select(vec!["s-1", "s-2"]).prop_map(str::to_string);
    prop_oneof![
        3 => (wo_key(), any::<bool>()).prop_map(|(key, for_update)| SqlStmt::Select {
            table: WORK_ORDERS,
            key,
            for_update
        }),
        2 => cond().prop_map(|filter| SqlStmt::scan(WORK_ORDERS, filter)),
        1 => (plain_cond(), 0u64..3).prop_map(|(filter, n)| SqlStmt::scan(WORK_ORDERS, filter).limit(n)),
        3 => locking_scan(),
        1 => Just(SqlStmt::scan(APPLIED_SCANS, Cond::cmp("work_order", CmpOp::Eq, Value::Text("wo-1".into())))),
        4 => (scan_key, int()).prop_map(|(key, q)| SqlStmt::Insert {
            table: APPLIED_SCANS,
            key,
            row: Row::from([
                ("work_order".to_string(), Value::Text("wo-1".into())),
                ("qty".to_string(), Value::Int(q)),
            ]),
        }),
        1 => wo_key().prop_map(|key| SqlStmt::Insert { table: WORK_ORDERS, key, row: seed_row(0) }),
        1 => (text(), text()).prop_map(|(request, status)| SqlStmt::Insert {
            table: UPDATE_LOG,
            key: request.clone(),
            row: Row::from([
                ("request_id".to_string(), Value::Text(request)),
                ("status".to_string(), Value::Text(status)),
            ]),
        }),
        1 => Just(SqlStmt::Insert {
            table: APPLIED_SCANS,
            key: "s-3".into(),
            row: Row::from([("qty".to_string(), Value::Text("x".into()))]),
        }),
        1 => Just(SqlStmt::Insert {
            table: APPLIED_SCANS,
            key: "s-4".into(),
            row: Row::from([("key".to_string(), Value::Text("x".into()))]),
        }),
        6 => (wo_key(), cond(), prop::collection::vec(assign(), 0..3))
            .prop_map(|(key, guard, set)| SqlStmt::Update { table: WORK_ORDERS, key, guard, set }),
        2 => (wo_key(), cond()).prop_map(|(key, guard)| SqlStmt::Delete { table: WORK_ORDERS, key, guard }),
        3 => (wo_key(), int(), on_conflict()).prop_map(|(key, qty, on_conflict)| SqlStmt::Upsert {
            table: WORK_ORDERS,
            key,
            row: seed_row(qty),
            on_conflict,
        }),
    ]
}

fn on_conflict() -> impl Strategy<Value = OnConflict> {
    prop_oneof![
        1 => Just(OnConflict::DoNothing),
        2 => (prop::collection::vec(assign(), 0..3), cond())
            .prop_map(|(set, guard)| OnConflict::DoUpdate { set, guard }),
    ]
}

fn op() -> impl Strategy<Value = (usize, SqlOp)> {
    let op = prop_oneof![
        3 => Just(SqlOp::Begin),
        2 => Just(SqlOp::Commit),
        1 => Just(SqlOp::Rollback),
        10 => stmt().prop_map(SqlOp::exec),
    ];
    (0usize..2, op)
}

fn seed_row(qty: i64) -> Row {
    Row::from([
        ("qty".to_string(), Value::Int(qty)),
        ("lease_epoch".to_string(), Value::Int(0)),
        ("lease_owner".to_string(), Value::Text(String::new())),
        ("lease_until".to_string(), Value::Int(0)),
    ])
}

/// A statement that takes a row lock (or inserts a key others may insert).
fn locking() -> impl Strategy<Value = SqlStmt> {
    prop_oneof![
        (cond(), prop::collection::vec(assign(), 0..2)).prop_map(|(guard, set)| SqlStmt::Update {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            guard,
            set
        }),
        Just(SqlStmt::Select {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            for_update: true
        }),
        cond().prop_map(|guard| SqlStmt::Delete {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            guard
        }),
        (prop::sample::select(vec!["wo-1", "wo-3"]), on_conflict()).prop_map(
            |(key, on_conflict)| {
                SqlStmt::Upsert {
                    table: WORK_ORDERS,
                    key: key.into(),
                    row: seed_row(7),
                    on_conflict,
                }
            }
        ),
        Just(SqlStmt::Insert {
            table: APPLIED_SCANS,
            key: "s-1".into(),
            row: Row::from([("qty".to_string(), Value::Int(1))]),
        }),
        locking_scan(),
    ]
}

/// Contention: one session opens a transaction and locks, the other then wants the same.
fn contention() -> impl Strategy<Value = Vec<(usize, SqlOp)>> {
    // Often the other session skips what the first one locked.
    let skip = (plain_cond(), prop::option::of(1u64..3)).prop_map(|(filter, limit)| {
        let scan = SqlStmt::scan(WORK_ORDERS, filter).locking(ScanLock::SkipLocked);
        match limit {
            Some(n) => scan.limit(n),
            None => scan,
        }
    });
    let second = prop_oneof![3 => locking(), 1 => skip];
    (0usize..2, locking(), second).prop_map(|(a, first, second)| {
        vec![
            (a, SqlOp::Begin),
            (a, SqlOp::exec(first)),
            (1 - a, SqlOp::exec(second)),
        ]
    })
}

/// A case: whether wo-2 is seeded (near overflow), then the operations: random ones around
/// an optional contention block.
fn case() -> impl Strategy<Value = (bool, Vec<(usize, SqlOp)>)> {
    (
        any::<bool>(),
        prop::collection::vec(op(), 0..6),
        prop::option::weighted(0.5, contention()),
        prop::collection::vec(op(), 1..8),
    )
        .prop_map(|(seed, mut ops, block, rest)| {
            ops.extend(block.into_iter().flatten());
            ops.extend(rest);
            (seed, ops)
        })
}

/// Replies agree exactly, except that two errors agree when their SQLSTATEs do.
fn agree(model: &SqlReply, real: &SqlReply) -> bool {
    match (model, real) {
        (SqlReply::Error(m), SqlReply::Error(r)) => m.get(..5) == r.get(..5),
        _ => model == real,
    }
}

type Parked = (
    usize,
    SqlOp,
    JoinHandle<(PgSql, Result<SqlReply, AdapterError>)>,
);

/// What the generated sequences exercised, so that the test cannot pass vacuously.
#[derive(Debug, Default)]
struct Seen {
    parked: u32,
    unique_violations: u32,
    rolled_back_commits: u32,
    errors: u32,
    committed_writes: u32,
    /// `SKIP LOCKED` scans that skipped a row (they returned other rows than the same plain
    /// scan would have).
    skipped: u32,
    /// Locking scans the model parked.
    parked_scans: u32,
    /// Statements that did not fail, by kind (see [`kind`]), and that were parked first.
    kinds: BTreeMap<&'static str, u32>,
}

/// The kinds of statement every run must exercise.
const KINDS: [&str; 11] = [
    "expression",
    "select",
    "select-for-update",
    "scan",
    "scan-for-update",
    "scan-skip-locked",
    "insert",
    "update",
    "delete",
    "upsert-do-nothing",
    "upsert-do-update",
];

/// Whether a statement computes an expression (beyond `column op constant`, `column = column
/// + constant`).
fn has_expression(stmt: &SqlStmt) -> bool {
    fn cond(c: &Cond) -> bool {
        match c {
            Cond::True => false,
            Cond::Cmp { left, right, .. } => {
                !matches!(left, Expr::Col(_)) || !matches!(right, Expr::Const(_))
            }
            Cond::And(all) | Cond::Or(all) => all.iter().any(cond),
        }
    }
    let set = |set: &[Assign]| set.iter().any(|a| matches!(a, Assign::To { .. }));
    match stmt {
        SqlStmt::Scan { filter, .. } => cond(filter),
        SqlStmt::Update { guard, set: s, .. } => cond(guard) || set(s),
        SqlStmt::Delete { guard, .. } => cond(guard),
        SqlStmt::Upsert {
            on_conflict: OnConflict::DoUpdate { set: s, guard },
            ..
        } => cond(guard) || set(s),
        _ => false,
    }
}

/// A statement's kind, as counted in [`Seen::kinds`].
fn kind(stmt: &SqlStmt) -> &'static str {
    match stmt {
        SqlStmt::Select {
            for_update: false, ..
        } => "select",
        SqlStmt::Select {
            for_update: true, ..
        } => "select-for-update",
        SqlStmt::Scan {
            lock: ScanLock::None,
            ..
        } => "scan",
        SqlStmt::Scan {
            lock: ScanLock::ForUpdate,
            ..
        } => "scan-for-update",
        SqlStmt::Scan {
            lock: ScanLock::SkipLocked,
            ..
        } => "scan-skip-locked",
        SqlStmt::Insert { .. } => "insert",
        SqlStmt::Update { .. } => "update",
        SqlStmt::Delete { .. } => "delete",
        SqlStmt::Upsert {
            on_conflict: OnConflict::DoNothing,
            ..
        } => "upsert-do-nothing",
        SqlStmt::Upsert {
            on_conflict: OnConflict::DoUpdate { .. },
            ..
        } => "upsert-do-update",
    }
}

struct Ctx {
    seen: Seen,
    sessions: [Option<PgSql>; 2],
    pids: [i32; 2],
    /// Watches `pg_stat_activity`.
    observer: tokio_postgres::Client,
}

impl Ctx {
    fn session(&mut self, s: usize) -> Result<&mut PgSql, String> {
        self.sessions[s]
            .as_mut()
            .ok_or_else(|| format!("session {s} is parked"))
    }

    async fn exec(&mut self, s: usize, op: &SqlOp) -> Result<SqlReply, String> {
        let pg = self.session(s)?;
        match tokio::time::timeout(STATEMENT_WAIT, pg.execute_sql(op)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("session {s} `{op}`: PostgreSQL failed: {e}")),
            Err(_) => Err(format!(
                "session {s} `{op}`: no answer within {STATEMENT_WAIT:?} (the model did not block it)"
            )),
        }
    }

    /// Whether the session's backend waits for a lock, polled until it does or `task`
    /// finishes.
    async fn waits_for_lock(
        &self,
        s: usize,
        task: &JoinHandle<(PgSql, Result<SqlReply, AdapterError>)>,
    ) -> Result<bool, String> {
        let deadline = tokio::time::Instant::now() + STATEMENT_WAIT;
        while tokio::time::Instant::now() < deadline {
            if task.is_finished() {
                return Ok(false);
            }
            let row = self
                .observer
                .query_opt(
                    "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                    &[&self.pids[s]],
                )
                .await
                .map_err(|e| format!("watching pg_stat_activity: {e}"))?;
            let wait: Option<String> = row.and_then(|r| r.get(0));
            if wait.as_deref() == Some("Lock") {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(format!(
            "session {s}'s statement neither finished nor waited for a lock"
        ))
    }

    /// Whether session `s`'s backend still waits for a lock the other session's backend
    /// holds.
    async fn blocked_by_other(&self, s: usize) -> Result<bool, String> {
        let row = self
            .observer
            .query_one(
                "SELECT $2::int4 = ANY(pg_blocking_pids($1::int4))",
                &[&self.pids[s], &self.pids[1 - s]],
            )
            .await
            .map_err(|e| format!("watching pg_blocking_pids: {e}"))?;
        Ok(row.get(0))
    }

    async fn check(&mut self, seed_wo2: bool, ops: &[(usize, SqlOp)]) -> Result<(), String> {
        for s in 0..2 {
            self.exec(s, &SqlOp::Rollback).await?;
        }
        self.session(0)?
            .reset()
            .await
            .map_err(|e| format!("resetting the tables: {e}"))?;
        let mut model = SqlModel::new();
        let mut seeds = vec![("wo-1", seed_row(0))];
        if seed_wo2 {
            seeds.push(("wo-2", seed_row(i64::MAX - 1)));
        }
        for (key, row) in seeds {
            model.seed(WORK_ORDERS, key, row.clone());
            let insert = SqlOp::exec(SqlStmt::Insert {
                table: WORK_ORDERS,
                key: key.into(),
                row,
            });
            self.exec(0, &insert).await?;
        }
        let mut trace: Vec<String> = Vec::new();
        let mut parked: Option<Parked> = None;
        let fail = |trace: &[String], what: String| {
            Err(format!(
                "{what}\nsequence so far:\n  {}",
                trace.join("\n  ")
            ))
        };
        for (s, op) in ops {
            let s = *s;
            if parked.as_ref().is_some_and(|p| p.0 == s) {
                continue;
            }
            let releases = model.lock_releases();
            match model.execute(SESSIONS[s], op) {
                SqlOutcome::Done { reply, .. } => {
                    let real = self.exec(s, op).await?;
                    trace.push(format!("S{s} {op} -> model {reply}, PostgreSQL {real}"));
                    if !agree(&reply, &real) {
                        return fail(
                            &trace,
                            format!("S{s} `{op}`: model {reply:?}, PostgreSQL {real:?}"),
                        );
                    }
                    if let SqlOp::Exec(stmt) = op
                        && let SqlStmt::Scan { lock, .. } = &**stmt
                        && *lock == ScanLock::SkipLocked
                        && matches!(reply, SqlReply::Rows(_))
                    {
                        // The same scan without the lock clause: a read that changes nothing.
                        let plain = SqlOp::exec((**stmt).clone().locking(ScanLock::None));
                        if let SqlOutcome::Done { reply: all, .. } =
                            model.execute(SESSIONS[s], &plain)
                            && all != reply
                        {
                            self.seen.skipped += 1;
                        }
                    }
                    if let SqlOp::Exec(stmt) = op
                        && !matches!(reply, SqlReply::Error(_))
                    {
                        *self.seen.kinds.entry(kind(stmt)).or_default() += 1;
                        if has_expression(stmt) {
                            *self.seen.kinds.entry("expression").or_default() += 1;
                        }
                    }
                    match &reply {
                        SqlReply::UniqueViolation { .. } => self.seen.unique_violations += 1,
                        SqlReply::RolledBack => self.seen.rolled_back_commits += 1,
                        SqlReply::Error(_) => self.seen.errors += 1,
                        SqlReply::Committed if matches!(op, SqlOp::Commit) => {
                            self.seen.committed_writes += 1
                        }
                        _ => {}
                    }
                    // The holder's locks are gone (its transaction ended or failed): the
                    // parked statement must finish now, on the server too.
                    if model.lock_releases() != releases
                        && let Some(p) = parked.take()
                    {
                        self.resolve(&mut model, p, &mut trace).await?;
                    } else if let Some(p) = &parked
                        && !self.blocked_by_other(p.0).await?
                    {
                        // The model still parks it: so must the server.
                        return fail(
                            &trace,
                            format!(
                                "S{} `{}`: the model still parks it after S{s} `{op}`, but \
                                 PostgreSQL no longer makes it wait",
                                p.0, p.1
                            ),
                        );
                    }
                }
                SqlOutcome::Blocked { holder } => {
                    if parked.is_some() {
                        // A deadlock: the model has no detector. Left out (nothing changed).
                        continue;
                    }
                    let Some(mut pg) = self.sessions[s].take() else {
                        return fail(&trace, format!("session {s} is missing"));
                    };
                    let o = op.clone();
                    let task = tokio::spawn(async move {
                        let r = pg.execute_sql(&o).await;
                        (pg, r)
                    });
                    trace.push(format!("S{s} {op} -> model: waits for {holder:?}"));
                    if !self.waits_for_lock(s, &task).await? {
                        let (pg, r) = task.await.map_err(|e| format!("task: {e}"))?;
                        self.sessions[s] = Some(pg);
                        return fail(
                            &trace,
                            format!(
                                "S{s} `{op}`: the model parks it, but PostgreSQL answered at once: {r:?}"
                            ),
                        );
                    }
                    self.seen.parked += 1;
                    if matches!(op, SqlOp::Exec(stmt) if matches!(**stmt, SqlStmt::Scan { .. })) {
                        self.seen.parked_scans += 1;
                    }
                    parked = Some((s, op.clone(), task));
                }
            }
        }
        if let Some(p) = parked.take() {
            let holder = 1 - p.0;
            model.execute(SESSIONS[holder], &SqlOp::Rollback);
            self.exec(holder, &SqlOp::Rollback).await?;
            trace.push(format!("S{holder} ROLLBACK (end of sequence)"));
            self.resolve(&mut model, p, &mut trace).await?;
        }
        for (s, session) in SESSIONS.iter().enumerate() {
            model.execute(*session, &SqlOp::Rollback);
            self.exec(s, &SqlOp::Rollback).await?;
        }
        for table in [WORK_ORDERS, APPLIED_SCANS, UPDATE_LOG, WS_JOBS] {
            let all = SqlOp::exec(SqlStmt::scan(table, Cond::True));
            let real = match self.exec(0, &all).await? {
                SqlReply::Rows(rows) => rows,
                other => {
                    return fail(
                        &trace,
                        format!("reading {} failed: {other:?}", table.as_str()),
                    );
                }
            };
            let expected: Vec<(String, Row)> = model
                .committed_rows(table)
                .map(|(k, r)| (k.to_string(), r.clone()))
                .collect();
            let real: Vec<(String, Row)> = real.into_iter().map(|r| (r.key, r.columns)).collect();
            if expected != real {
                return fail(
                    &trace,
                    format!(
                        "committed {} differ: model {expected:?}, PostgreSQL {real:?}",
                        table.as_str()
                    ),
                );
            }
        }
        Ok(())
    }

    /// The holder released its locks: the parked statement finishes on both sides.
    async fn resolve(
        &mut self,
        model: &mut SqlModel,
        parked: Parked,
        trace: &mut Vec<String>,
    ) -> Result<(), String> {
        let (s, op, task) = parked;
        let (pg, real) = tokio::time::timeout(STATEMENT_WAIT, task)
            .await
            .map_err(|_| format!("S{s} `{op}` still waits after the holder released its locks"))?
            .map_err(|e| format!("task: {e}"))?;
        self.sessions[s] = Some(pg);
        let real = real.map_err(|e| format!("S{s} `{op}`: PostgreSQL failed: {e}"))?;
        let SqlOutcome::Done { reply, .. } = model.execute(SESSIONS[s], &op) else {
            return Err(format!(
                "S{s} `{op}`: the model still parks it after the holder released its locks"
            ));
        };
        trace.push(format!(
            "S{s} {op} (resumed) -> model {reply}, PostgreSQL {real}"
        ));
        if !agree(&reply, &real) {
            return Err(format!(
                "S{s} `{op}` after the wait: model {reply:?}, PostgreSQL {real:?}\nsequence:\n  {}",
                trace.join("\n  ")
            ));
        }
        Ok(())
    }
}

async fn connect(test: &str) -> Option<(Ctx, String)> {
    let config = common::servers_or_skip(test, false, true).await?;
    let schema = common::unique("sqlconf");
    let mut a = PgSql::connect(&config.pg_url, &schema)
        .await
        .expect("PostgreSQL was reachable a moment ago");
    let mut b = PgSql::connect(&config.pg_url, &schema)
        .await
        .expect("PostgreSQL was reachable a moment ago");
    let pids = [
        a.backend_pid().await.expect("backend pid"),
        b.backend_pid().await.expect("backend pid"),
    ];
    let (observer, connection) = tokio_postgres::connect(&config.pg_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL was reachable a moment ago");
    tokio::spawn(connection);
    Some((
        Ctx {
            seen: Seen::default(),
            sessions: [Some(a), Some(b)],
            pids,
            observer,
        },
        schema,
    ))
}

#[test]
fn sql_statements_and_transactions_on_two_sessions_agree_with_the_model() {
    let rt = common::runtime();
    let Some((ctx, _schema)) = rt.block_on(connect("sql conformance")) else {
        return;
    };
    let ctx = RefCell::new(ctx);
    let mut runner = TestRunner::new(PropConfig {
        cases: 1_000,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&case(), |(seed_wo2, ops)| {
        rt.block_on(ctx.borrow_mut().check(seed_wo2, &ops))
            .map_err(TestCaseError::fail)
    });
    let mut ctx = ctx.into_inner();
    let dropped = match ctx.session(0) {
        Ok(pg) => rt.block_on(pg.drop_schema()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        panic!("SQL conformance failed (a difference is a bug in the model or the adapter):\n{e}");
    }
    dropped.expect("dropping the test's schema");
    let seen = &ctx.seen;
    assert!(
        seen.parked >= 20
            && seen.unique_violations >= 20
            && seen.rolled_back_commits >= 20
            && seen.errors >= 20
            && seen.committed_writes >= 20
            && seen.skipped >= 20
            && KINDS
                .iter()
                .all(|k| seen.kinds.get(k).is_some_and(|n| *n >= 20)),
        "the generated sequences did not exercise enough (the generator needs work): {seen:?}"
    );
    eprintln!("SQL conformance exercised: {seen:?}");
}

/// Hand-picked two-session sequences: the lock waits of document 002's protocols.
#[test]
fn sql_regression_sequences_agree_with_the_model() {
    let rt = common::runtime();
    let Some((mut ctx, _schema)) = rt.block_on(connect("sql regressions")) else {
        return;
    };
    let bump = |epoch: i64| {
        SqlOp::exec(SqlStmt::Update {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            guard: Cond::cmp("lease_epoch", CmpOp::Eq, Value::Int(epoch)),
            set: vec![Assign::Add {
                column: "lease_epoch".into(),
                delta: 1,
            }],
        })
    };
    let insert = SqlOp::exec(SqlStmt::Insert {
        table: APPLIED_SCANS,
        key: "s-1".into(),
        row: Row::from([("qty".to_string(), Value::Int(1))]),
    });
    let lock = SqlOp::exec(SqlStmt::Select {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        for_update: true,
    });
    // A statement that fails at analysis (42703), whatever the data.
    let bad = SqlOp::exec(SqlStmt::Insert {
        table: APPLIED_SCANS,
        key: "s-9".into(),
        row: Row::from([("no_such_column".to_string(), Value::Int(1))]),
    });
    // wo-2 is seeded with qty i64::MAX - 1.
    let add_to_wo2 = |delta: i64| {
        SqlOp::exec(SqlStmt::Update {
            table: WORK_ORDERS,
            key: "wo-2".into(),
            guard: Cond::True,
            set: vec![Assign::Add {
                column: "qty".into(),
                delta,
            }],
        })
    };
    let lock_wo2 = SqlOp::exec(SqlStmt::Select {
        table: WORK_ORDERS,
        key: "wo-2".into(),
        for_update: true,
    });
    // wo-2's qty + 2 overflows; its lease_owner is ''.
    let overflow_and_false = SqlOp::exec(SqlStmt::scan(
        WORK_ORDERS,
        Cond::And(vec![
            Cond::compare(
                Expr::col("qty").plus(Expr::int(2)),
                CmpOp::Eq,
                Expr::col("lease_until"),
            ),
            Cond::cmp("lease_owner", CmpOp::Eq, Value::Text("W_A#0".into())),
        ]),
    ));
    let cases: Vec<(&str, Vec<(usize, SqlOp)>)> = vec![
        (
            // Found by the generated sequences: PostgreSQL runs a WHERE clause's cheaper
            // conjunct first, which is false, so the overflowing one is never computed.
            "a WHERE clause's conjuncts run cheapest first",
            vec![(0, overflow_and_false)],
        ),
        (
            "a conditional update waits, then re-checks its guard on the committed row",
            vec![
                (0, SqlOp::Begin),
                (0, bump(0)),
                (1, bump(0)),
                (0, SqlOp::Commit),
            ],
        ),
        (
            "a conditional update waits and applies after the holder rolls back",
            vec![
                (0, SqlOp::Begin),
                (0, bump(0)),
                (1, bump(0)),
                (0, SqlOp::Rollback),
            ],
        ),
        (
            "a duplicate insert waits for the first inserter, then violates",
            vec![
                (0, SqlOp::Begin),
                (0, insert.clone()),
                (1, insert.clone()),
                (0, SqlOp::Commit),
            ],
        ),
        (
            "a duplicate insert waits for the first inserter, then succeeds after its rollback",
            vec![
                (0, SqlOp::Begin),
                (0, insert.clone()),
                (1, insert.clone()),
                (0, SqlOp::Rollback),
            ],
        ),
        (
            "SELECT FOR UPDATE waits for an updater and sees its committed row",
            vec![
                (0, SqlOp::Begin),
                (0, bump(0)),
                (1, SqlOp::Begin),
                (1, lock.clone()),
                (0, SqlOp::Commit),
                (1, SqlOp::Commit),
            ],
        ),
        (
            "an update whose guard is false on the committed row does not wait",
            vec![
                (0, SqlOp::Begin),
                (0, bump(0)),
                (1, bump(7)),
                (0, SqlOp::Commit),
            ],
        ),
        (
            // Once a known model difference: the model kept a failed transaction's locks
            // until ROLLBACK. PostgreSQL aborts the transaction at the error.
            "a waiting update proceeds when the holder's transaction fails, before its ROLLBACK",
            vec![
                (0, SqlOp::Begin),
                (0, bump(0)),
                (1, bump(0)),
                (0, bad.clone()),
                (0, SqlOp::Rollback),
            ],
        ),
        (
            "a waiting insert proceeds when the first inserter's transaction fails",
            vec![
                (0, SqlOp::Begin),
                (0, insert.clone()),
                (1, SqlOp::Begin),
                (1, insert.clone()),
                (0, bad.clone()),
                (1, SqlOp::Commit),
                (0, SqlOp::Commit),
            ],
        ),
        (
            "a waiting FOR UPDATE proceeds when the holder fails on a unique violation",
            vec![
                (0, SqlOp::Begin),
                (0, lock.clone()),
                (0, insert.clone()),
                (1, lock.clone()),
                (0, insert.clone()),
                (0, SqlOp::Commit),
            ],
        ),
        (
            // Found by the generated sequences with other seeds: PostgreSQL computes the new
            // value from the committed version before it tries the row lock.
            "an update that would overflow fails at once on a locked row",
            vec![
                (0, SqlOp::Begin),
                (0, lock_wo2.clone()),
                (1, add_to_wo2(5)),
                (0, SqlOp::Commit),
            ],
        ),
        (
            "an update that fits waits, then overflows on the holder's committed row",
            vec![
                (0, SqlOp::Begin),
                (0, add_to_wo2(1)),
                (1, add_to_wo2(1)),
                (0, SqlOp::Commit),
            ],
        ),
    ];
    for (name, ops) in cases {
        // wo-2 (near overflow) is seeded for every case; only the overflow cases use it.
        let r = rt.block_on(ctx.check(true, &ops));
        assert!(r.is_ok(), "regression case `{name}`: {}", r.unwrap_err());
    }
    rt.block_on(async { ctx.session(0).expect("idle").drop_schema().await })
        .expect("dropping the test's schema");
}

/// Once a known model difference, now a regression case: PostgreSQL aborts a transaction at
/// its first error and releases its row locks right away (the transaction block only waits
/// for `ROLLBACK`). A statement another session sends after the error runs at once on the
/// server, and must in the model too, with the same answer.
#[test]
fn a_failed_transaction_releases_its_locks_at_the_error() {
    let rt = common::runtime();
    let Some((mut ctx, _schema)) = rt.block_on(connect("sql failed transaction")) else {
        return;
    };
    rt.block_on(async {
        ctx.session(0).expect("idle").reset().await.expect("reset");
        let mut model = SqlModel::new();
        let seed = SqlStmt::Insert {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            row: seed_row(0),
        };
        model.seed(WORK_ORDERS, "wo-1", seed_row(0));
        ctx.exec(0, &SqlOp::exec(seed)).await.expect("seed");
        let bump = SqlOp::exec(SqlStmt::Update {
            table: WORK_ORDERS,
            key: "wo-1".into(),
            guard: Cond::True,
            set: vec![Assign::Add {
                column: "qty".into(),
                delta: 1,
            }],
        });
        let insert = SqlOp::exec(SqlStmt::Insert {
            table: APPLIED_SCANS,
            key: "s-1".into(),
            row: Row::from([("qty".to_string(), Value::Int(i64::MAX))]),
        });
        let done = |outcome: SqlOutcome| match outcome {
            SqlOutcome::Done { reply, .. } => reply,
            SqlOutcome::Blocked { holder } => SqlReply::Error(format!("parked behind {holder:?}")),
        };
        // S0 locks wo-1, then fails its transaction with a unique violation.
        for op in [SqlOp::Begin, bump.clone(), insert.clone(), insert] {
            let expected = done(model.execute(SESSIONS[0], &op));
            let real = ctx.exec(0, &op).await.expect("S0 answers");
            assert!(
                agree(&expected, &real),
                "S0 `{op}`: model {expected:?}, PostgreSQL {real:?}"
            );
        }
        // S1's update runs at once (within `STATEMENT_WAIT`, before S0's ROLLBACK) and does
        // not see S0's aborted +1.
        let real = ctx.exec(1, &bump).await.expect("PostgreSQL runs S1's update at once");
        let expected = done(model.execute(SESSIONS[1], &bump));
        assert!(
            matches!(&real, SqlReply::Rows(rows) if rows.len() == 1 && rows[0].int("qty") == Some(1)),
            "PostgreSQL updates the committed row: {real:?}"
        );
        assert_eq!(expected, real, "the model answers S1's update as PostgreSQL does");
        let expected = done(model.execute(SESSIONS[0], &SqlOp::Commit));
        let real = ctx.exec(0, &SqlOp::Commit).await.expect("S0 answers");
        assert_eq!((&expected, &real), (&SqlReply::RolledBack, &SqlReply::RolledBack));
        ctx.session(0)
            .expect("idle")
            .drop_schema()
            .await
            .expect("dropping the test's schema");
    });
}

/// Resets the tables and seeds the same work orders (`seed_row(0)`) in a fresh model and on
/// the server.
async fn seeded(ctx: &mut Ctx, keys: &[&str]) -> SqlModel {
    for s in 0..2 {
        ctx.exec(s, &SqlOp::Rollback).await.expect("rollback");
    }
    ctx.session(0).expect("idle").reset().await.expect("reset");
    let mut model = SqlModel::new();
    for key in keys {
        model.seed(WORK_ORDERS, key, seed_row(0));
        let insert = SqlOp::exec(SqlStmt::Insert {
            table: WORK_ORDERS,
            key: (*key).into(),
            row: seed_row(0),
        });
        ctx.exec(0, &insert).await.expect("seed");
    }
    model
}

/// Runs `op` on session `s` in the model and on the server, which must agree without a
/// wait; returns the server's reply.
async fn both(ctx: &mut Ctx, model: &mut SqlModel, s: usize, op: &SqlOp) -> SqlReply {
    let expected = match model.execute(SESSIONS[s], op) {
        SqlOutcome::Done { reply, .. } => reply,
        SqlOutcome::Blocked { holder } => panic!("S{s} `{op}`: the model parks it on {holder:?}"),
    };
    let real = ctx.exec(s, op).await.expect("PostgreSQL answers");
    assert!(
        agree(&expected, &real),
        "S{s} `{op}`: model {expected:?}, PostgreSQL {real:?}"
    );
    real
}

fn keys_of(reply: &SqlReply) -> Vec<&str> {
    match reply {
        SqlReply::Rows(rows) => rows.iter().map(|r| r.key.as_str()).collect(),
        other => panic!("expected rows, got {other:?}"),
    }
}

fn lock_row(key: &str) -> SqlOp {
    SqlOp::exec(SqlStmt::Select {
        table: WORK_ORDERS,
        key: key.into(),
        for_update: true,
    })
}

#[test]
fn skip_locked_returns_the_next_row_another_session_does_not_hold() {
    let rt = common::runtime();
    let Some((mut ctx, _schema)) = rt.block_on(connect("sql skip locked")) else {
        return;
    };
    rt.block_on(async {
        let mut model = seeded(&mut ctx, &["wo-1", "wo-2", "wo-3"]).await;
        let c = &mut ctx;
        let m = &mut model;
        both(c, m, 0, &SqlOp::Begin).await;
        assert_eq!(keys_of(&both(c, m, 0, &lock_row("wo-1")).await), ["wo-1"]);
        both(c, m, 1, &SqlOp::Begin).await;
        let skip = SqlStmt::scan(WORK_ORDERS, Cond::True).locking(ScanLock::SkipLocked);
        let skip_one = SqlOp::exec(skip.clone().limit(1));
        assert_eq!(keys_of(&both(c, m, 1, &skip_one).await), ["wo-2"]);
        // What it returned is locked: S0 skips wo-2 and keeps its own wo-1.
        let skip_all = SqlOp::exec(skip);
        assert_eq!(keys_of(&both(c, m, 0, &skip_all).await), ["wo-1", "wo-3"]);
        // An uncommitted update is skipped too; a plain scan neither waits nor skips.
        both(c, m, 1, &SqlOp::Commit).await;
        let plain = SqlOp::exec(SqlStmt::scan(WORK_ORDERS, Cond::True).limit(2));
        assert_eq!(keys_of(&both(c, m, 1, &plain).await), ["wo-1", "wo-2"]);
        assert_eq!(keys_of(&both(c, m, 1, &skip_all).await), ["wo-2"]);
        both(c, m, 0, &SqlOp::Commit).await;
        ctx.session(0)
            .expect("idle")
            .drop_schema()
            .await
            .expect("dropping the test's schema");
    });
}

type Running = JoinHandle<(PgSql, Result<SqlReply, AdapterError>)>;

/// Sends `op` on session `s` from a task (it is expected to wait for a lock) and returns
/// once the server shows the session waiting.
async fn send_waiting(ctx: &mut Ctx, s: usize, op: &SqlOp) -> Running {
    let mut pg = ctx.sessions[s].take().expect("session idle");
    let o = op.clone();
    let task = tokio::spawn(async move {
        let r = pg.execute_sql(&o).await;
        (pg, r)
    });
    assert!(
        ctx.waits_for_lock(s, &task).await.expect("watching"),
        "S{s} `{op}` waits for a lock on the server"
    );
    task
}

#[test]
fn a_deadlock_fails_the_first_waiter_with_40p01() {
    let rt = common::runtime();
    let Some((mut ctx, _schema)) = rt.block_on(connect("sql deadlock")) else {
        return;
    };
    rt.block_on(async {
        let mut model = seeded(&mut ctx, &["wo-1", "wo-2"]).await;
        let c = &mut ctx;
        let m = &mut model;
        for s in 0..2 {
            both(c, m, s, &SqlOp::Begin).await;
        }
        both(c, m, 0, &lock_row("wo-1")).await;
        both(c, m, 1, &lock_row("wo-2")).await;
        // S0 waits for S1, then S1 for S0: the cycle closes well within deadlock_timeout
        // of S0's wait, so S0's check (its wait began first) finds it.
        let (s0_wants, s1_wants) = (lock_row("wo-2"), lock_row("wo-1"));
        assert_eq!(
            m.execute(SESSIONS[0], &s0_wants),
            SqlOutcome::Blocked {
                holder: SESSIONS[1]
            }
        );
        let t0 = send_waiting(c, 0, &s0_wants).await;
        assert_eq!(
            m.execute(SESSIONS[1], &s1_wants),
            SqlOutcome::Blocked {
                holder: SESSIONS[0]
            }
        );
        let t1 = send_waiting(c, 1, &s1_wants).await;
        let model_s0 = m
            .check_deadlock(SESSIONS[0])
            .expect("the model finds the cycle");
        let SqlOutcome::Done {
            reply: model_s1, ..
        } = m.execute(SESSIONS[1], &s1_wants)
        else {
            panic!("S1 proceeds in the model once S0's transaction failed")
        };
        let mut real = Vec::new();
        for (s, task) in [(0, t0), (1, t1)] {
            let (pg, r) = tokio::time::timeout(STATEMENT_WAIT, task)
                .await
                .expect("the server breaks the deadlock")
                .expect("task");
            c.sessions[s] = Some(pg);
            real.push(r.expect("PostgreSQL answers"));
        }
        let deadlocks = real
            .iter()
            .filter(|r| matches!(r, SqlReply::Error(e) if e.starts_with("40P01")))
            .count();
        assert_eq!(deadlocks, 1, "exactly one session gets 40P01: {real:?}");
        assert!(
            agree(&model_s0, &real[0]) && agree(&model_s1, &real[1]),
            "model S0 {model_s0:?}, S1 {model_s1:?}; PostgreSQL {real:?}"
        );
        assert_eq!(keys_of(&real[1]), ["wo-1"]);
        // S1 holds both rows: after S0's rollback, its SKIP LOCKED scan finds nothing.
        both(c, m, 0, &SqlOp::Rollback).await;
        let skip =
            SqlOp::exec(SqlStmt::scan(WORK_ORDERS, Cond::True).locking(ScanLock::SkipLocked));
        assert!(keys_of(&both(c, m, 0, &skip).await).is_empty());
        assert_eq!(both(c, m, 1, &SqlOp::Commit).await, SqlReply::Committed);
        ctx.session(0)
            .expect("idle")
            .drop_schema()
            .await
            .expect("dropping the test's schema");
    });
}

/// R-004-07's statements on `ws_jobs` (its machines' seven shapes over three job keys, two
/// clients and two nodes), generated into two-session sequences with transaction control.
fn ws_jobs_op() -> impl Strategy<Value = (usize, SqlOp)> {
    let t = |v: &str| Value::Text(v.into());
    let key = prop_oneof![Just("S1-0-1"), Just("C:J1"), Just("C2:J1")];
    let who = prop_oneof![Just("N1"), Just("N2")];
    let claimable = move |node: &str| {
        Cond::Or(vec![
            Cond::cmp("state", CmpOp::Eq, t("queued")),
            Cond::And(vec![
                Cond::cmp("state", CmpOp::Eq, t("running")),
                Cond::cmp("node", CmpOp::Eq, t(node)),
            ]),
        ])
    };
    let row = move |k: &str| {
        Row::from([
            ("client".to_string(), t(k.split(':').next().unwrap_or("C"))),
            ("request".to_string(), t("J1")),
            ("owner".to_string(), t("S1")),
            ("state".to_string(), t("queued")),
        ])
    };
    let set = move |a: &str, b: &str, c: &str, d: &str| {
        vec![
            Assign::Set {
                column: a.into(),
                value: t(b),
            },
            Assign::Set {
                column: c.into(),
                value: t(d),
            },
        ]
    };
    let stmt = prop_oneof![
        2 => key.clone().prop_map(move |k| SqlStmt::Insert { table: WS_JOBS, key: k.into(), row: row(k) }),
        3 => key.clone().prop_map(move |k| SqlStmt::Upsert {
            table: WS_JOBS,
            key: k.into(),
            row: row(k),
            on_conflict: OnConflict::DoNothing,
        }),
        2 => who.clone().prop_map(move |n| SqlStmt::scan(WS_JOBS, claimable(n)).limit(1)),
        3 => (key.clone(), who.clone()).prop_map(move |(k, n)| SqlStmt::Update {
            table: WS_JOBS,
            key: k.into(),
            guard: claimable(n),
            set: set("state", "running", "node", n),
        }),
        2 => (key, who).prop_map(move |(k, n)| SqlStmt::Update {
            table: WS_JOBS,
            key: k.into(),
            guard: Cond::cmp("node", CmpOp::Eq, t(n)),
            set: set("state", "done", "result", &format!("r-{k}")),
        }),
        1 => Just(SqlStmt::scan(WS_JOBS, Cond::And(vec![
            Cond::cmp("owner", CmpOp::Eq, t("S1")),
            Cond::cmp("state", CmpOp::Eq, t("done")),
        ]))),
        1 => Just(SqlStmt::scan(WS_JOBS, Cond::And(vec![
            Cond::cmp("state", CmpOp::Eq, t("done")),
            Cond::Or(vec![
                Cond::cmp("client", CmpOp::Eq, t("C")),
                Cond::cmp("client", CmpOp::Eq, t("C2")),
            ]),
        ]))),
    ];
    // Transactions often enough, and sequences long enough, that one session's statement
    // regularly waits for the other's uncommitted write (the floor below asks for five).
    let op = prop_oneof![
        8 => stmt.prop_map(SqlOp::exec),
        3 => Just(SqlOp::Begin),
        1 => Just(SqlOp::Commit),
        1 => Just(SqlOp::Rollback),
    ];
    (0usize..2, op)
}

#[test]
fn ws_jobs_generated_sequences_agree_with_the_model() {
    let rt = common::runtime();
    let Some((ctx, _schema)) = rt.block_on(connect("ws_jobs generated")) else {
        return;
    };
    let ctx = RefCell::new(ctx);
    let mut runner = TestRunner::new(PropConfig {
        cases: 300,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&prop::collection::vec(ws_jobs_op(), 2..20), |ops| {
        rt.block_on(ctx.borrow_mut().check(false, &ops))
            .map_err(TestCaseError::fail)
    });
    let mut ctx = ctx.into_inner();
    let dropped = match ctx.session(0) {
        Ok(pg) => rt.block_on(pg.drop_schema()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        panic!(
            "ws_jobs conformance failed (a difference is a bug in the model or the adapter):\n{e}"
        );
    }
    dropped.expect("dropping the test's schema");
    let seen = &ctx.seen;
    assert!(
        seen.parked >= 5 && seen.unique_violations >= 5 && seen.committed_writes >= 5,
        "the generated ws_jobs sequences did not exercise enough: {seen:?}"
    );
    eprintln!("ws_jobs conformance exercised: {seen:?}");
}

/// R-004-07's statements on `ws_jobs`, as its machines send them: the in-memory instance's
/// insert (a duplicate violates), Correct's insert-if-absent (the second finds the job and
/// returns nothing), the node's scan and claim of a queued job (or one it claimed before),
/// a second claim waiting for the first and re-checking its guard, the finish, and both
/// instances' result polls.
#[test]
fn ws_jobs_statements_agree_with_the_model() {
    let rt = common::runtime();
    let Some((mut ctx, _schema)) = rt.block_on(connect("ws_jobs statements")) else {
        return;
    };
    let t = |v: &str| Value::Text(v.into());
    let job_row = |client: &str, request: &str, owner: &str| {
        Row::from([
            ("client".to_string(), t(client)),
            ("request".to_string(), t(request)),
            ("owner".to_string(), t(owner)),
            ("state".to_string(), t("queued")),
        ])
    };
    let insert = SqlOp::exec(SqlStmt::Insert {
        table: WS_JOBS,
        key: "S1-0-1".into(),
        row: job_row("C", "J1", "S1"),
    });
    let upsert = SqlOp::exec(SqlStmt::Upsert {
        table: WS_JOBS,
        key: "C:J1".into(),
        row: job_row("C", "J1", "S2"),
        on_conflict: OnConflict::DoNothing,
    });
    let claimable = Cond::Or(vec![
        Cond::cmp("state", CmpOp::Eq, t("queued")),
        Cond::And(vec![
            Cond::cmp("state", CmpOp::Eq, t("running")),
            Cond::cmp("node", CmpOp::Eq, t("N1")),
        ]),
    ]);
    let scan = SqlOp::exec(SqlStmt::scan(WS_JOBS, claimable.clone()).limit(1));
    let claim = |key: &str| {
        SqlOp::exec(SqlStmt::Update {
            table: WS_JOBS,
            key: key.into(),
            guard: claimable.clone(),
            set: vec![
                Assign::Set {
                    column: "state".into(),
                    value: t("running"),
                },
                Assign::Set {
                    column: "node".into(),
                    value: t("N1"),
                },
            ],
        })
    };
    let finish = |key: &str| {
        SqlOp::exec(SqlStmt::Update {
            table: WS_JOBS,
            key: key.into(),
            guard: Cond::cmp("node", CmpOp::Eq, t("N1")),
            set: vec![
                Assign::Set {
                    column: "state".into(),
                    value: t("done"),
                },
                Assign::Set {
                    column: "result".into(),
                    value: t(&format!("r-{key}")),
                },
            ],
        })
    };
    let poll_owner = SqlOp::exec(SqlStmt::scan(
        WS_JOBS,
        Cond::And(vec![
            Cond::cmp("owner", CmpOp::Eq, t("S1")),
            Cond::cmp("state", CmpOp::Eq, t("done")),
        ]),
    ));
    let poll_clients = SqlOp::exec(SqlStmt::scan(
        WS_JOBS,
        Cond::And(vec![
            Cond::cmp("state", CmpOp::Eq, t("done")),
            Cond::Or(vec![
                Cond::cmp("client", CmpOp::Eq, t("C")),
                Cond::cmp("client", CmpOp::Eq, t("C2")),
            ]),
        ]),
    ));
    let cases: Vec<(&str, Vec<(usize, SqlOp)>)> = vec![
        (
            "insert, duplicate insert, insert-if-absent twice",
            vec![
                (0, insert.clone()),
                (1, insert.clone()),
                (0, upsert.clone()),
                (1, upsert.clone()),
            ],
        ),
        (
            "scan, claim, claim again, finish, polls",
            vec![
                (0, insert.clone()),
                (1, upsert.clone()),
                (0, scan.clone()),
                (0, claim("C:J1")),
                (0, claim("C:J1")),
                (0, scan.clone()),
                (1, poll_clients.clone()),
                (0, finish("C:J1")),
                (0, finish("C:J1")),
                (1, poll_clients.clone()),
                (0, claim("S1-0-1")),
                (0, finish("S1-0-1")),
                (1, poll_owner.clone()),
                (0, scan.clone()),
            ],
        ),
        (
            "a claim waits for a claim in flight and re-checks its guard",
            vec![
                (0, upsert.clone()),
                (0, SqlOp::Begin),
                (0, claim("C:J1")),
                (1, claim("C:J1")),
                (0, SqlOp::Commit),
                (1, finish("C:J1")),
            ],
        ),
        (
            "an insert-if-absent waits for an uncommitted insert of the job",
            vec![
                (0, SqlOp::Begin),
                (0, upsert.clone()),
                (1, upsert.clone()),
                (0, SqlOp::Commit),
            ],
        ),
    ];
    for (name, ops) in cases {
        let r = rt.block_on(ctx.check(false, &ops));
        assert!(r.is_ok(), "ws_jobs case `{name}`: {}", r.unwrap_err());
    }
    rt.block_on(async { ctx.session(0).expect("idle").drop_schema().await })
        .expect("dropping the test's schema");
}

/// R-004-05's durable outcomes (`core::scheduler::jobfsm::{store_outcome, read_outcome}`),
/// in autocommit as the job FSM sends them: the first store wins and returns its row, a
/// later store (another outcome, or the same one sent again after a lost reply) returns no
/// row, and the read returns the winner's; the model and PostgreSQL agree on each reply.
#[test]
fn the_job_outcome_store_and_read_agree_with_the_model() {
    use racelab_core::scheduler::jobfsm::{JobState, read_outcome, store_outcome};
    let rt = common::runtime();
    let Some((mut ctx, _schema)) = rt.block_on(connect("job outcome statements")) else {
        return;
    };
    rt.block_on(async {
        let mut model = seeded(&mut ctx, &[]).await;
        let exec = |stmt: SqlStmt| SqlOp::exec(stmt);
        let outcome_of = |reply: &SqlReply| match reply {
            SqlReply::Rows(rows) => rows
                .iter()
                .map(|r| r.columns.get("outcome").cloned())
                .collect::<Vec<_>>(),
            other => panic!("expected rows, got {other:?}"),
        };
        let done = Some(Value::Text("done".into()));
        let first = exec(store_outcome("J1", JobState::Done, "S1:J1:done"));
        assert_eq!(
            outcome_of(&both(&mut ctx, &mut model, 0, &first).await),
            vec![done.clone()]
        );
        let late = exec(store_outcome("J1", JobState::TimedOut, "S2:J1:timed_out"));
        assert!(outcome_of(&both(&mut ctx, &mut model, 1, &late).await).is_empty());
        assert!(outcome_of(&both(&mut ctx, &mut model, 0, &first).await).is_empty());
        let read = exec(read_outcome("J1"));
        let stored = both(&mut ctx, &mut model, 1, &read).await;
        assert_eq!(outcome_of(&stored), vec![done]);
        let SqlReply::Rows(rows) = &stored else {
            unreachable!("checked above")
        };
        assert_eq!(
            rows[0].columns.get("writer"),
            Some(&Value::Text("S1:J1:done".into()))
        );
        let none = exec(read_outcome("J'2"));
        assert!(outcome_of(&both(&mut ctx, &mut model, 0, &none).await).is_empty());
    });
    let dropped = match ctx.session(0) {
        Ok(pg) => rt.block_on(pg.drop_schema()).map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    dropped.expect("dropping the test's schema");
}
