//! The SQL model: PostgreSQL 15 under READ COMMITTED, one row per primary key, in memory and
//! deterministic (ordered maps only).
//!
//! - Sessions: one per simulated process incarnation. `BEGIN` opens a transaction; a
//!   statement outside one is autocommit (its own transaction, committed at once).
//! - Reads (`SELECT` without `FOR UPDATE`, scans) never wait: each statement sees the latest
//!   committed version of every row plus its own session's uncommitted writes.
//! - `UPDATE` and `SELECT ... FOR UPDATE` take the row lock. A row locked by another session
//!   makes the statement [`SqlOutcome::Blocked`]; nothing changes, and the simulator parks it
//!   and executes the very same operation again once the holder's transaction has ended (or
//!   failed), so the re-execution sees the holder's committed row (PostgreSQL's re-check of the `WHERE`
//!   clause on the newest row version). As in PostgreSQL, an `UPDATE` whose guard is already
//!   false on the committed version skips the row without waiting, and one whose new values
//!   cannot be computed from the committed version (22003, `bigint` overflow) fails without
//!   waiting: PostgreSQL computes them before it tries the lock (and again, on the newest
//!   version, after the wait). The re-check follows the row's update chain, which a delete
//!   ends: a statement that waited for a row the holder deleted finds no row, even if the
//!   holder inserted the key again (a new row, outside the statement's snapshot).
//! - `INSERT` of a key that another session inserted, updated or deleted without committing
//!   waits for that session, then fails with a unique violation if the row exists.
//! - `DELETE` locks and re-checks like `UPDATE`; a deleted row is the session's own until it
//!   commits. `INSERT ... ON CONFLICT (key)` waits like `INSERT`; `DO NOTHING` then returns
//!   no row if the key exists, `DO UPDATE` locks the existing row (waiting even for a `FOR
//!   UPDATE` holder), keeps it locked and updates it if its guard holds: never a unique
//!   violation on the key.
//! - `WHERE` clauses of scans, `UPDATE` and `DELETE` are computed as PostgreSQL plans them
//!   ([`Cond::eval_where`]: constant folding, then the top-level `AND`'s conjuncts cheapest
//!   first, equalities last among equals; by key, [`Cond::eval_where_by_key`] also leaves out
//!   what `key = $1` proves), which decides whether an overflowing conjunct (22003) is ever
//!   computed.
//! - A statement that breaks the schema's rules ([`SqlStmt::validate`]: unknown columns,
//!   wrong types, ...) is an error before it reads or locks anything.
//! - An error inside a transaction fails it (SQLSTATE 25P02 for every later statement, and
//!   `COMMIT` rolls it back). PostgreSQL aborts the transaction at the error, so its row
//!   locks and uncommitted rows are gone at once, not at `ROLLBACK`: a statement waiting for
//!   them proceeds (checked on PostgreSQL 15; see the adapters' SQL conformance test
//!   `a_failed_transaction_releases_its_locks_at_the_error`). [`SqlModel::lock_releases`]
//!   tells a caller with parked statements when to try them again.
//!
//! - Scans ([`SqlStmt::Scan`]) read the rows their snapshot sees, in key order, up to their
//!   `LIMIT`. `FOR UPDATE` locks each candidate in turn, waiting for another holder (the rows
//!   locked so far stay locked) and, after the wait, re-checking the filter on the newest
//!   version of each remaining candidate (the candidates are the keys of the first execution's
//!   snapshot: a row that starts to pass the filter during the wait is not returned, as in
//!   PostgreSQL). `FOR UPDATE SKIP LOCKED` never waits: it skips every row another session
//!   holds and locks the rest. An autocommit `FOR UPDATE` scan that must wait keeps the rows
//!   it locked until it finishes, in its own transaction (a session sends nothing else while
//!   its statement waits).
//! - Deadlocks, as PostgreSQL detects them: every wait is an edge of a waits-for graph
//!   (waiter to holder; [`SqlOutcome::Blocked`] names the holder). A waiting session checks
//!   for a cycle through itself once, [`SqlModel::deadlock_timeout`] after its wait began;
//!   the caller schedules that check and runs it with [`SqlModel::check_deadlock`], which fails
//!   the waiter's transaction with `40P01: deadlock detected` when there is a cycle (its locks
//!   go at once, so the other members proceed). In a two-session cycle that is the session that
//!   started waiting first, unless its check came before the cycle closed.

use std::collections::{BTreeMap, BTreeSet};

use racelab_core::{
    Assign, Cond, Duration, KeyedRow, OnConflict, OutOfRange, Row, RowRef, ScanLock, SqlOp,
    SqlReply, SqlStmt, Table, Value,
};

/// The error every statement of a failed transaction gets.
const ABORTED: &str =
    "25P02: current transaction is aborted, commands ignored until end of transaction block";

/// The error a deadlock check answers the waiter it chose (SQLSTATE 40P01).
pub const DEADLOCK: &str = "40P01: deadlock detected";

/// PostgreSQL's default `deadlock_timeout`.
pub const DEFAULT_DEADLOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// A row's identity: its table and its key.
type RowId = (Table, String);

/// Identifies a client session (one per simulated process incarnation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// The result of executing one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlOutcome {
    /// The statement finished: its reply, and (for autocommit statements and COMMIT) whether
    /// it made writes durable.
    Done {
        /// The database's answer.
        reply: SqlReply,
        /// Whether writes became durable (committed) with this operation.
        durable: bool,
    },
    /// The statement must wait for a row lock (or an uncommitted insert of the same key) held
    /// by `holder`. Nothing changed, except that a `FOR UPDATE` scan keeps the row locks it
    /// took before the wait, as PostgreSQL does. The simulator parks it and calls
    /// [`SqlModel::execute`] again with the same op after the holder's transaction ends or
    /// fails ([`SqlModel::lock_releases`] moves).
    Blocked {
        /// The session whose transaction holds the lock.
        holder: SessionId,
    },
}

/// One open transaction.
#[derive(Debug, Default)]
struct Txn {
    /// An error happened in it: every later statement fails with 25P02, `COMMIT` rolls back.
    /// Its locks and writes were dropped at the error.
    failed: bool,
    /// The session's uncommitted row versions (inserted or updated rows; `None` for a
    /// deleted one), visible only to the session until commit.
    writes: BTreeMap<RowId, Option<Row>>,
    /// The rows whose committed version this transaction deleted (even if it inserted the
    /// key again): for PostgreSQL the row is gone, and a key inserted again is a new row.
    ended: BTreeSet<RowId>,
    /// The transaction of one autocommit statement, kept open only while that statement
    /// waits holding row locks (a `FOR UPDATE` scan that locked some rows): it ends with the
    /// statement.
    autocommit: bool,
}

/// The database: committed rows, open transactions and row locks.
#[derive(Debug)]
pub struct SqlModel {
    /// The committed rows of each table, by key.
    committed: BTreeMap<Table, BTreeMap<String, Row>>,
    /// The open transactions by session (an autocommit statement has one while it runs).
    txns: BTreeMap<SessionId, Txn>,
    /// Row locks: which session holds each locked row (a row it updated, inserted or
    /// selected `FOR UPDATE`). Held until the transaction ends or fails.
    locks: BTreeMap<RowId, SessionId>,
    /// How many times a transaction released row locks (see [`SqlModel::lock_releases`]).
    lock_releases: u64,
    /// The waits-for graph: each waiting session and the session it waits for.
    waits: BTreeMap<SessionId, SessionId>,
    /// The candidate keys of a `FOR UPDATE` scan that is waiting, by session: the keys its
    /// first execution's snapshot saw pass the filter.
    scan_candidates: BTreeMap<SessionId, Vec<(String, u64)>>,
    /// Per row, how many committed transactions deleted its committed version: a statement
    /// that waited for a row whose incarnation changed meanwhile finds it gone, as
    /// PostgreSQL's re-check follows the row's update chain and a delete ends it (a row
    /// deleted and inserted again under the same key is another row).
    incarnations: BTreeMap<RowId, u64>,
    /// The row a waiting `UPDATE`, `DELETE` or `SELECT ... FOR UPDATE` waits for, by
    /// session, and its incarnation when the statement first ran.
    waited: BTreeMap<SessionId, (RowId, u64)>,
    /// PostgreSQL's `deadlock_timeout`.
    deadlock_timeout: Duration,
}

impl Default for SqlModel {
    fn default() -> Self {
        SqlModel {
            committed: BTreeMap::new(),
            txns: BTreeMap::new(),
            locks: BTreeMap::new(),
            lock_releases: 0,
            waits: BTreeMap::new(),
            scan_candidates: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            waited: BTreeMap::new(),
            deadlock_timeout: DEFAULT_DEADLOCK_TIMEOUT,
        }
    }
}

impl SqlModel {
    /// An empty database: no table and no row. It learns a table from the first seed or
    /// statement that names it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets PostgreSQL's `deadlock_timeout`: how long after its wait began a waiting session
    /// checks for a deadlock ([`DEFAULT_DEADLOCK_TIMEOUT`] unless set).
    pub fn set_deadlock_timeout(&mut self, timeout: Duration) {
        self.deadlock_timeout = timeout;
    }

    /// PostgreSQL's `deadlock_timeout`: a caller that parks a blocked statement runs
    /// [`SqlModel::check_deadlock`] for it this long after its wait began.
    pub fn deadlock_timeout(&self) -> Duration {
        self.deadlock_timeout
    }

    /// The session `session` waits for, if its latest statement is blocked.
    pub fn waits_for(&self, session: SessionId) -> Option<SessionId> {
        self.waits.get(&session).copied()
    }

    /// PostgreSQL's deadlock check, run by a waiting session `deadlock_timeout` after its
    /// wait began: if following the waits-for graph from `session` comes back to it, the
    /// session's transaction fails (its locks and uncommitted rows go at once, which
    /// [`SqlModel::lock_releases`] counts) and the blocked statement's answer is returned,
    /// `40P01: deadlock detected`. `None`: no cycle through `session` (or it is not waiting),
    /// nothing changes and the statement keeps waiting.
    pub fn check_deadlock(&mut self, session: SessionId) -> Option<SqlReply> {
        let mut at = self.waits.get(&session).copied()?;
        let mut steps = 0;
        while at != session {
            steps += 1;
            if steps > self.waits.len() {
                return None;
            }
            at = self.waits.get(&at).copied()?;
        }
        self.waits.remove(&session);
        self.scan_candidates.remove(&session);
        self.waited.remove(&session);
        if self.txns.get(&session).is_some_and(|txn| txn.autocommit) {
            self.end(session);
        } else {
            self.fail(session);
        }
        Some(SqlReply::Error(DEADLOCK.to_string()))
    }

    /// Seeds a committed row (test/scenario setup), replacing any existing row with that key.
    /// Declared columns missing from `columns` are stored as `NULL`; the columns are not
    /// otherwise checked.
    pub fn seed(&mut self, table: Table, key: &str, columns: Row) {
        let mut row = null_row(table);
        row.extend(columns);
        self.committed
            .entry(table)
            .or_default()
            .insert(key.to_string(), row);
    }

    /// Executes one operation for `session`, or reports that it must wait for a lock (the
    /// wait is then an edge of the waits-for graph until the session's next operation).
    pub fn execute(&mut self, session: SessionId, op: &SqlOp) -> SqlOutcome {
        let outcome = self.execute_op(session, op);
        match outcome {
            SqlOutcome::Blocked { holder } => {
                self.waits.insert(session, holder);
            }
            SqlOutcome::Done { .. } => {
                self.waits.remove(&session);
                self.scan_candidates.remove(&session);
                self.waited.remove(&session);
            }
        }
        outcome
    }

    fn execute_op(&mut self, session: SessionId, op: &SqlOp) -> SqlOutcome {
        match op {
            SqlOp::Begin => match self.txns.get(&session) {
                Some(txn) if txn.failed => done(SqlReply::Error(ABORTED.into()), false),
                // PostgreSQL: WARNING "there is already a transaction in progress".
                Some(_) => done(SqlReply::Ok, false),
                None => {
                    self.txns.insert(session, Txn::default());
                    done(SqlReply::Ok, false)
                }
            },
            SqlOp::Commit => match self.end(session) {
                // PostgreSQL: WARNING "there is no transaction in progress".
                None => done(SqlReply::Committed, false),
                Some(txn) if txn.failed => done(SqlReply::RolledBack, false),
                Some(txn) => {
                    let durable = self.apply(txn);
                    done(SqlReply::Committed, durable)
                }
            },
            SqlOp::Rollback => {
                self.end(session);
                done(SqlReply::Ok, false)
            }
            SqlOp::Exec(stmt) => match self.txns.get(&session) {
                Some(txn) if txn.failed => done(SqlReply::Error(ABORTED.into()), false),
                Some(txn) if txn.autocommit => self.autocommit(session, stmt, true),
                Some(_) => match self.run(session, stmt) {
                    Err(holder) => SqlOutcome::Blocked { holder },
                    Ok(reply) => {
                        if is_error(&reply) {
                            self.fail(session);
                        }
                        done(reply, false)
                    }
                },
                None => {
                    self.txns.insert(
                        session,
                        Txn {
                            autocommit: true,
                            ..Txn::default()
                        },
                    );
                    self.autocommit(session, stmt, false)
                }
            },
        }
    }

    /// Runs an autocommit statement in its own transaction (open): commits it when it
    /// finishes; when it must wait, keeps the transaction only if the statement holds row
    /// locks (a `FOR UPDATE` scan keeps the rows it locked before the wait, as PostgreSQL
    /// does). `resumed`: the transaction was kept from an earlier wait.
    fn autocommit(&mut self, session: SessionId, stmt: &SqlStmt, resumed: bool) -> SqlOutcome {
        let result = self.run(session, stmt);
        let holds_locks = self.locks.values().any(|h| *h == session);
        if let Err(holder) = result
            && holds_locks
        {
            return SqlOutcome::Blocked { holder };
        }
        // Unless it waited holding them, the statement's own locks live and die inside this
        // call: no other statement can have waited for them, so their release is not
        // counted.
        let releases = self.lock_releases;
        let txn = self.end(session).unwrap_or_default();
        if !resumed {
            self.lock_releases = releases;
        }
        match result {
            Err(holder) => SqlOutcome::Blocked { holder },
            Ok(reply) if is_error(&reply) => done(reply, false),
            Ok(reply) => {
                let durable = self.apply(txn);
                done(reply, durable)
            }
        }
    }

    /// The session's connection dropped (process crash): roll back its open transaction and
    /// release its locks. Returns true if a transaction was open.
    pub fn disconnect(&mut self, session: SessionId) -> bool {
        self.waits.remove(&session);
        self.scan_candidates.remove(&session);
        self.waited.remove(&session);
        self.end(session).is_some()
    }

    /// Committed state of one row.
    pub fn committed(&self, table: Table, key: &str) -> Option<&Row> {
        self.committed.get(&table)?.get(key)
    }

    /// All committed rows of a table in key order.
    pub fn committed_rows(&self, table: Table) -> impl Iterator<Item = (&str, &Row)> {
        self.committed
            .get(&table)
            .into_iter()
            .flat_map(|rows| rows.iter().map(|(key, row)| (key.as_str(), row)))
    }

    /// The tables the database knows, in name order: every table a seed or a statement has
    /// named (there is no global list of tables; each family declares its own).
    pub fn tables(&self) -> impl Iterator<Item = Table> + '_ {
        self.committed.keys().copied()
    }

    /// Every committed row of every table, by table name then key.
    pub fn all_committed_rows(&self) -> impl Iterator<Item = (Table, &str, &Row)> {
        self.committed
            .iter()
            .flat_map(|(table, rows)| rows.iter().map(|(key, row)| (*table, key.as_str(), row)))
    }

    /// Whether `session` has an open transaction (possibly a failed one).
    pub fn in_transaction(&self, session: SessionId) -> bool {
        self.txns.get(&session).is_some_and(|txn| !txn.autocommit)
    }

    /// How many times so far a transaction released row locks: by its end (commit, rollback,
    /// disconnect) or by failing. A statement parked behind a lock may proceed once this
    /// changes, and not before; a caller compares it before and after each operation.
    pub fn lock_releases(&self) -> u64 {
        self.lock_releases
    }

    /// Ends the session's transaction, if any, without applying it: removes it and releases
    /// its locks. Returns the transaction.
    fn end(&mut self, session: SessionId) -> Option<Txn> {
        let txn = self.txns.remove(&session)?;
        self.release_locks(session);
        Some(txn)
    }

    /// An error failed the session's open transaction: PostgreSQL aborts it at once, so its
    /// uncommitted rows vanish and its locks are released; only the transaction block stays
    /// (answering 25P02) until `COMMIT` or `ROLLBACK`.
    fn fail(&mut self, session: SessionId) {
        let Some(txn) = self.txns.get_mut(&session) else {
            return;
        };
        txn.failed = true;
        txn.writes.clear();
        txn.ended.clear();
        self.release_locks(session);
    }

    /// Releases every row lock `session` holds, counting the release if there was any.
    fn release_locks(&mut self, session: SessionId) {
        let before = self.locks.len();
        self.locks.retain(|_, holder| *holder != session);
        if self.locks.len() != before {
            self.lock_releases += 1;
        }
    }

    /// Applies an ended transaction's writes to the committed state. Returns whether it
    /// wrote anything.
    fn apply(&mut self, txn: Txn) -> bool {
        let wrote = !txn.writes.is_empty();
        for id in txn.ended {
            *self.incarnations.entry(id).or_default() += 1;
        }
        for ((table, key), row) in txn.writes {
            let rows = self.committed.entry(table).or_default();
            match row {
                Some(row) => rows.insert(key, row),
                None => rows.remove(&key),
            };
        }
        wrote
    }

    /// The committed version of a row.
    fn committed_row(&self, id: &RowId) -> Option<&Row> {
        self.committed.get(&id.0)?.get(&id.1)
    }

    /// How many committed transactions deleted the row's committed version.
    fn incarnation(&self, id: &RowId) -> u64 {
        self.incarnations.get(id).copied().unwrap_or(0)
    }

    /// `Err(holder)`, remembering the row `session` waits for and its incarnation (the first
    /// time: a statement that waits again keeps its first snapshot's).
    fn wait_for_row(&mut self, session: SessionId, id: &RowId, holder: SessionId) -> SessionId {
        let incarnation = self.incarnation(id);
        self.waited
            .entry(session)
            .or_insert_with(|| (id.clone(), incarnation));
        holder
    }

    /// Whether `session` waited for this row and a committed transaction deleted it since
    /// (PostgreSQL's re-check then finds no row, even if the key was inserted again).
    fn waited_row_gone(&self, session: SessionId, id: &RowId) -> bool {
        self.waited
            .get(&session)
            .is_some_and(|(w, inc)| w == id && *inc != self.incarnation(id))
    }

    /// The version of a row `session` sees: its own uncommitted one, else the committed one.
    fn visible(&self, session: SessionId, id: &RowId) -> Option<&Row> {
        match self.txns.get(&session).and_then(|txn| txn.writes.get(id)) {
            Some(own) => own.as_ref(),
            None => self.committed_row(id),
        }
    }

    /// The session other than `session` that holds the lock on a row, if any.
    fn other_holder(&self, session: SessionId, id: &RowId) -> Option<SessionId> {
        self.locks
            .get(id)
            .copied()
            .filter(|holder| *holder != session)
    }

    /// Whether `holder` has an uncommitted version of the row (it inserted or updated it,
    /// rather than only locking it `FOR UPDATE`).
    fn wrote(&self, holder: SessionId, id: &RowId) -> bool {
        self.txns
            .get(&holder)
            .is_some_and(|txn| txn.writes.contains_key(id))
    }

    /// Locks a row for `session` (whose transaction is open).
    fn lock(&mut self, session: SessionId, id: RowId) {
        self.locks.insert(id, session);
    }

    /// Records the session's new version of a row (`None`: deleted) and locks it.
    fn write(&mut self, session: SessionId, id: RowId, row: Option<Row>) {
        if let Some(txn) = self.txns.get_mut(&session) {
            txn.writes.insert(id.clone(), row);
        }
        self.lock(session, id);
    }

    /// Runs one statement inside the session's (open, not failed) transaction. `Err` is the
    /// holder of the lock the statement waits for; nothing has changed then.
    fn run(&mut self, session: SessionId, stmt: &SqlStmt) -> Result<SqlReply, SessionId> {
        self.committed.entry(stmt.table()).or_default();
        if let Err(invalid) = stmt.validate() {
            return Ok(invalid.reply());
        }
        if let Err(e) = stmt.fold_constants() {
            return Ok(e.reply());
        }
        match stmt {
            SqlStmt::Select {
                table,
                key,
                for_update,
            } => {
                let id = (*table, key.clone());
                if *for_update {
                    // Another session's uncommitted insert is invisible: no row, no wait.
                    if let Some(holder) = self.other_holder(session, &id)
                        && self.committed_row(&id).is_some()
                    {
                        return Err(self.wait_for_row(session, &id, holder));
                    }
                    if self.waited_row_gone(session, &id) {
                        return Ok(SqlReply::Rows(Vec::new()));
                    }
                }
                let Some(row) = self.visible(session, &id).cloned() else {
                    return Ok(SqlReply::Rows(Vec::new()));
                };
                if *for_update {
                    self.lock(session, id);
                }
                Ok(SqlReply::Rows(vec![keyed(key, row)]))
            }
            SqlStmt::Scan {
                table,
                filter,
                lock,
                limit,
            } => self.scan(session, *table, filter, *lock, *limit),
            SqlStmt::Insert { table, key, row } => {
                let id = (*table, key.clone());
                // PostgreSQL's unique check waits for an in-progress inserter or updater of
                // the key (not for a mere FOR UPDATE locker), then re-checks.
                if let Some(holder) = self.other_holder(session, &id)
                    && self.wrote(holder, &id)
                {
                    return Err(holder);
                }
                if self.visible(session, &id).is_some() {
                    return Ok(SqlReply::UniqueViolation {
                        table: *table,
                        key: key.clone(),
                    });
                }
                let mut full = null_row(*table);
                full.extend(row.iter().map(|(c, v)| (c.clone(), v.clone())));
                self.write(session, id, Some(full));
                Ok(SqlReply::Affected(1))
            }
            SqlStmt::Update {
                table,
                key,
                guard,
                set,
            } => {
                let id = (*table, key.clone());
                if let Some(holder) = self.other_holder(session, &id) {
                    // The statement's snapshot holds the committed version (another session's
                    // uncommitted insert is invisible). PostgreSQL only waits for the lock if
                    // that version passes the guard, and it computes the new values from
                    // that version before it tries the lock, so an overflow fails at once.
                    // After the wait it re-checks and recomputes on the newest version,
                    // which the re-execution does.
                    let Some(row) = self.committed_row(&id) else {
                        return Ok(SqlReply::Rows(Vec::new()));
                    };
                    return match matches_by_key(*table, guard, key, row) {
                        Err(e) => Ok(e),
                        Ok(false) => Ok(SqlReply::Rows(Vec::new())),
                        Ok(true) => match assign(*table, key, row, None, set) {
                            Ok(_) => Err(self.wait_for_row(session, &id, holder)),
                            Err(e) => Ok(e),
                        },
                    };
                }
                if self.waited_row_gone(session, &id) {
                    return Ok(SqlReply::Rows(Vec::new()));
                }
                let Some(row) = self.visible(session, &id) else {
                    return Ok(SqlReply::Rows(Vec::new()));
                };
                match matches_by_key(*table, guard, key, row) {
                    Err(e) => return Ok(e),
                    Ok(false) => return Ok(SqlReply::Rows(Vec::new())),
                    Ok(true) => {}
                }
                let updated = match assign(*table, key, row, None, set) {
                    Ok(updated) => updated,
                    Err(e) => return Ok(e),
                };
                self.write(session, id, Some(updated.clone()));
                Ok(SqlReply::Rows(vec![keyed(key, updated)]))
            }
            SqlStmt::Delete { table, key, guard } => {
                let id = (*table, key.clone());
                if let Some(holder) = self.other_holder(session, &id) {
                    // As for UPDATE: wait only if the committed version passes the guard;
                    // the re-execution re-checks on the newest version.
                    return match self
                        .committed_row(&id)
                        .map(|row| matches_by_key(*table, guard, key, row))
                    {
                        Some(Err(e)) => Ok(e),
                        Some(Ok(true)) => Err(self.wait_for_row(session, &id, holder)),
                        _ => Ok(SqlReply::Rows(Vec::new())),
                    };
                }
                if self.waited_row_gone(session, &id) {
                    return Ok(SqlReply::Rows(Vec::new()));
                }
                let Some(row) = self.visible(session, &id).cloned() else {
                    return Ok(SqlReply::Rows(Vec::new()));
                };
                match matches_by_key(*table, guard, key, &row) {
                    Err(e) => return Ok(e),
                    Ok(false) => return Ok(SqlReply::Rows(Vec::new())),
                    Ok(true) => {}
                }
                if self.committed_row(&id).is_some()
                    && let Some(txn) = self.txns.get_mut(&session)
                {
                    txn.ended.insert(id.clone());
                }
                self.write(session, id, None);
                Ok(SqlReply::Rows(vec![keyed(key, row)]))
            }
            SqlStmt::Upsert {
                table,
                key,
                row,
                on_conflict,
            } => {
                let id = (*table, key.clone());
                let mut proposed = null_row(*table);
                proposed.extend(row.iter().map(|(c, v)| (c.clone(), v.clone())));
                if let Some(holder) = self.other_holder(session, &id) {
                    // The arbiter check waits for an uncommitted inserter, updater or
                    // deleter of the key; DO UPDATE then locks the existing row, so it also
                    // waits for a FOR UPDATE holder (DO NOTHING does not lock).
                    let locks_existing = matches!(on_conflict, OnConflict::DoUpdate { .. })
                        && self.committed_row(&id).is_some();
                    if self.wrote(holder, &id) || locks_existing {
                        return Err(holder);
                    }
                }
                let Some(existing) = self.visible(session, &id).cloned() else {
                    self.write(session, id, Some(proposed.clone()));
                    return Ok(SqlReply::Rows(vec![keyed(key, proposed)]));
                };
                match on_conflict {
                    OnConflict::DoNothing => Ok(SqlReply::Rows(Vec::new())),
                    OnConflict::DoUpdate { set, guard } => {
                        // The existing row is locked whether or not the guard holds.
                        self.lock(session, id.clone());
                        match matches(*table, guard, key, &existing, Some(&proposed)) {
                            Err(e) => return Ok(e),
                            Ok(false) => return Ok(SqlReply::Rows(Vec::new())),
                            Ok(true) => {}
                        }
                        let updated = match assign(*table, key, &existing, Some(&proposed), set) {
                            Ok(updated) => updated,
                            Err(e) => return Ok(e),
                        };
                        self.write(session, id, Some(updated.clone()));
                        Ok(SqlReply::Rows(vec![keyed(key, updated)]))
                    }
                }
            }
        }
    }
}

impl SqlModel {
    /// The rows a scan of `table` by `session` sees (committed, with its own uncommitted
    /// versions), in key order, borrowed from the model.
    fn visible_rows(&self, session: SessionId, table: Table) -> Vec<(&str, &Row)> {
        let committed = self.committed.get(&table);
        let committed_rows = || {
            committed
                .into_iter()
                .flatten()
                .map(|(k, r)| (k.as_str(), r))
        };
        // The session's own versions of this table's rows, in key order (the writes are
        // ordered by table, then key).
        let own: Vec<(&str, Option<&Row>)> = self
            .txns
            .get(&session)
            .map(|txn| {
                txn.writes
                    .range((table, String::new())..)
                    .take_while(|((t, _), _)| *t == table)
                    .map(|((_, k), r)| (k.as_str(), r.as_ref()))
                    .collect()
            })
            .unwrap_or_default();
        if own.is_empty() {
            return committed_rows().collect();
        }
        // Merge the two key-ordered lists; an own version replaces (or deletes) the
        // committed row of its key.
        let mut rows = Vec::new();
        let mut own = own.into_iter().peekable();
        for (k, r) in committed_rows() {
            let mut replaced = false;
            while let Some((ok, or)) = own.next_if(|(ok, _)| *ok <= k) {
                replaced |= ok == k;
                if let Some(or) = or {
                    rows.push((ok, or));
                }
            }
            if !replaced {
                rows.push((k, r));
            }
        }
        rows.extend(own.filter_map(|(k, r)| r.map(|r| (k, r))));
        rows
    }

    /// A scan (see [`SqlStmt::Scan`]). The filter is computed on every visible row first
    /// (PostgreSQL sorts them by key before it limits or locks), so a 22003 on any of them
    /// fails the scan whatever the limit. `Err`: the holder a `FOR UPDATE` scan waits for.
    fn scan(
        &mut self,
        session: SessionId,
        table: Table,
        filter: &Cond,
        lock: ScanLock,
        limit: Option<u64>,
    ) -> Result<SqlReply, SessionId> {
        let limit = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let mut found = Vec::new();
        // Rows are copied only when returned; the rows a SKIP LOCKED scan locks are locked
        // after its pass (each row once, and only other sessions' locks skip a row, so the
        // order changes nothing).
        let mut to_lock = Vec::new();
        let passing = {
            let visible = self.visible_rows(session, table);
            let passing = match filter.filter_where(table, visible) {
                Ok(passing) => passing,
                Err(e) => return Ok(e.reply()),
            };
            match lock {
                ScanLock::None => {
                    for (k, r) in passing.into_iter().take(limit) {
                        found.push(keyed(k, r.clone()));
                    }
                    Vec::new()
                }
                ScanLock::SkipLocked => {
                    for (k, r) in passing {
                        if found.len() >= limit {
                            break;
                        }
                        let id = (table, k.to_string());
                        if self.other_holder(session, &id).is_some() {
                            continue;
                        }
                        found.push(keyed(k, r.clone()));
                        to_lock.push(id);
                    }
                    Vec::new()
                }
                ScanLock::ForUpdate => passing
                    .into_iter()
                    .map(|(k, _)| k.to_string())
                    .collect::<Vec<String>>(),
            }
        };
        for id in to_lock {
            self.lock(session, id);
        }
        match lock {
            ScanLock::None | ScanLock::SkipLocked => {}
            ScanLock::ForUpdate => {
                // After a wait, the candidates are still those of the first snapshot, and one
                // that a committed transaction deleted meanwhile is gone.
                let candidates = match self.scan_candidates.get(&session) {
                    Some(keys) => keys.clone(),
                    None => passing
                        .into_iter()
                        .map(|k| {
                            let incarnation = self.incarnation(&(table, k.clone()));
                            (k, incarnation)
                        })
                        .collect(),
                };
                for (k, incarnation) in &candidates {
                    if found.len() >= limit {
                        break;
                    }
                    let id = (table, k.clone());
                    if let Some(holder) = self.other_holder(session, &id) {
                        self.scan_candidates.insert(session, candidates.clone());
                        return Err(holder);
                    }
                    if self.incarnation(&id) != *incarnation {
                        continue;
                    }
                    // The newest version (unchanged unless this scan waited): re-checked.
                    let Some(row) = self.visible(session, &id).cloned() else {
                        continue;
                    };
                    match matches(table, filter, k, &row, None) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => return Ok(e),
                    }
                    found.push(keyed(k, row));
                    self.lock(session, id);
                }
            }
        }
        Ok(SqlReply::Rows(found))
    }
}

/// `Done` with a reply.
fn done(reply: SqlReply, durable: bool) -> SqlOutcome {
    SqlOutcome::Done { reply, durable }
}

/// Whether a reply is an error (which fails the transaction).
fn is_error(reply: &SqlReply) -> bool {
    matches!(reply, SqlReply::Error(_) | SqlReply::UniqueViolation { .. })
}

/// A row of `table` with every column `NULL`.
fn null_row(table: Table) -> Row {
    table
        .columns()
        .iter()
        .map(|(c, _)| (c.to_string(), Value::Null))
        .collect()
}

/// A returned row.
fn keyed(key: &str, columns: Row) -> KeyedRow {
    KeyedRow {
        key: key.to_string(),
        columns,
    }
}

/// Evaluates a condition on a row (22003 as an error reply): a `WHERE` clause as PostgreSQL
/// plans it ([`Cond::eval_where`]), or, with an `EXCLUDED` row (`ON CONFLICT DO UPDATE ...
/// WHERE`), folded and left to right ([`Cond::eval_folded`]).
fn matches(
    table: Table,
    cond: &Cond,
    key: &str,
    row: &Row,
    excluded: Option<&Row>,
) -> Result<bool, SqlReply> {
    let at = RowRef {
        table,
        key,
        row,
        excluded,
    };
    match excluded {
        None => cond.eval_where(&at),
        Some(_) => cond.eval_folded(&at),
    }
    .map_err(OutOfRange::reply)
}

/// [`matches`] for the guard of an `UPDATE` or `DELETE` by key ([`Cond::eval_where_by_key`]).
fn matches_by_key(table: Table, guard: &Cond, key: &str, row: &Row) -> Result<bool, SqlReply> {
    let at = RowRef {
        table,
        key,
        row,
        excluded: None,
    };
    guard.eval_where_by_key(&at).map_err(OutOfRange::reply)
}

/// The row after an `UPDATE`'s (checked) assignments, every expression computed on the row
/// before the update. `+` leaves `NULL` alone and fails with 22003 on overflow, as `bigint`
/// arithmetic does.
fn assign(
    table: Table,
    key: &str,
    row: &Row,
    excluded: Option<&Row>,
    set: &[Assign],
) -> Result<Row, SqlReply> {
    let at = RowRef {
        table,
        key,
        row,
        excluded,
    };
    let mut updated = row.clone();
    for a in set {
        match a {
            Assign::Set { column, value } => {
                updated.insert(column.clone(), value.clone());
            }
            Assign::Add { column, delta } => {
                if let Some(Value::Int(n)) = updated.get_mut(column) {
                    *n = n
                        .checked_add(*delta)
                        .ok_or(OutOfRange)
                        .map_err(OutOfRange::reply)?;
                }
            }
            Assign::To { column, expr } => {
                let value = expr.eval(&at).map_err(OutOfRange::reply)?;
                updated.insert(column.clone(), value);
            }
        }
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_core::CmpOp;
    use racelab_core::workorder::{APPLIED_SCANS, UPDATE_LOG, WORK_ORDERS};

    const A: SessionId = SessionId(1);
    const B: SessionId = SessionId(2);
    const C: SessionId = SessionId(3);
    const WO: &str = "wo-1";

    fn int(n: i64) -> Value {
        Value::Int(n)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    fn row(columns: &[(&str, Value)]) -> Row {
        columns
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect()
    }

    fn work_order(qty: i64, epoch: i64) -> Row {
        row(&[
            ("qty", int(qty)),
            ("lease_epoch", int(epoch)),
            ("lease_owner", text("")),
            ("lease_until", int(0)),
        ])
    }

    fn seeded() -> SqlModel {
        let mut m = SqlModel::new();
        m.seed(WORK_ORDERS, WO, work_order(10, 1));
        m
    }

    fn exec(stmt: SqlStmt) -> SqlOp {
        SqlOp::exec(stmt)
    }

    fn select(table: Table, key: &str) -> SqlOp {
        exec(SqlStmt::Select {
            table,
            key: key.to_string(),
            for_update: false,
        })
    }

    fn select_for_update(table: Table, key: &str) -> SqlOp {
        exec(SqlStmt::Select {
            table,
            key: key.to_string(),
            for_update: true,
        })
    }

    fn update(key: &str, guard: Cond, set: Vec<Assign>) -> SqlOp {
        exec(SqlStmt::Update {
            table: WORK_ORDERS,
            key: key.to_string(),
            guard,
            set,
        })
    }

    fn add(column: &str, delta: i64) -> Assign {
        Assign::Add {
            column: column.to_string(),
            delta,
        }
    }

    fn set(column: &str, value: Value) -> Assign {
        Assign::Set {
            column: column.to_string(),
            value,
        }
    }

    fn epoch_is(e: i64) -> Cond {
        Cond::cmp("lease_epoch", CmpOp::Eq, int(e))
    }

    fn insert_scan(key: &str, qty: i64) -> SqlOp {
        exec(SqlStmt::Insert {
            table: APPLIED_SCANS,
            key: key.to_string(),
            row: row(&[("work_order", text(WO)), ("qty", int(qty))]),
        })
    }

    fn reply(outcome: SqlOutcome) -> SqlReply {
        match outcome {
            SqlOutcome::Done { reply, .. } => reply,
            SqlOutcome::Blocked { holder } => panic!("unexpectedly blocked on {holder:?}"),
        }
    }

    fn ok(m: &mut SqlModel, s: SessionId, op: &SqlOp) -> SqlReply {
        reply(m.execute(s, op))
    }

    fn rows(r: SqlReply) -> Vec<KeyedRow> {
        match r {
            SqlReply::Rows(rows) => rows,
            other => panic!("expected rows, got {other:?}"),
        }
    }

    fn qty_seen(m: &mut SqlModel, s: SessionId) -> Option<i64> {
        rows(ok(m, s, &select(WORK_ORDERS, WO)))
            .first()
            .and_then(|r| r.int("qty"))
    }

    fn committed_qty(m: &SqlModel) -> Option<&Value> {
        m.committed(WORK_ORDERS, WO)?.get("qty")
    }

    fn error(r: SqlReply) -> String {
        match r {
            SqlReply::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn autocommit_writes_are_durable_and_reads_are_not() {
        let mut m = seeded();
        let out = m.execute(A, &update(WO, Cond::True, vec![add("qty", 5)]));
        let SqlOutcome::Done { reply, durable } = out else {
            panic!("blocked")
        };
        assert!(durable);
        assert_eq!(rows(reply)[0].int("qty"), Some(15));
        assert_eq!(committed_qty(&m), Some(&int(15)));
        assert!(!m.in_transaction(A));

        let out = m.execute(A, &insert_scan("s1", 5));
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Affected(1),
                durable: true
            }
        );
        assert!(m.committed(APPLIED_SCANS, "s1").is_some());

        // A guard that fails writes nothing: not durable.
        let out = m.execute(A, &update(WO, epoch_is(7), vec![add("qty", 5)]));
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Rows(vec![]),
                durable: false
            }
        );
        let out = m.execute(A, &select(WORK_ORDERS, WO));
        assert!(matches!(out, SqlOutcome::Done { durable: false, .. }));
        let out = m.execute(A, &select_for_update(WORK_ORDERS, WO));
        assert!(matches!(out, SqlOutcome::Done { durable: false, .. }));
        // An autocommit FOR UPDATE does not keep its lock.
        assert_eq!(qty_seen(&mut m, B), Some(15));
        let out = m.execute(B, &update(WO, Cond::True, vec![add("qty", 1)]));
        assert!(matches!(out, SqlOutcome::Done { durable: true, .. }));
        // An update of a missing key matches nothing.
        let out = m.execute(A, &update("nope", Cond::True, vec![add("qty", 1)]));
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Rows(vec![]),
                durable: false
            }
        );
    }

    #[test]
    fn own_writes_are_visible_and_others_see_only_committed_rows() {
        let mut m = seeded();
        assert_eq!(ok(&mut m, A, &SqlOp::Begin), SqlReply::Ok);
        assert!(m.in_transaction(A));
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 5)])));
        assert_eq!(ok(&mut m, A, &insert_scan("s1", 5)), SqlReply::Affected(1));
        assert_eq!(qty_seen(&mut m, A), Some(15));
        assert_eq!(qty_seen(&mut m, B), Some(10));
        assert_eq!(committed_qty(&m), Some(&int(10)));
        assert!(rows(ok(&mut m, B, &select(APPLIED_SCANS, "s1"))).is_empty());
        let scan = exec(SqlStmt::scan(
            APPLIED_SCANS,
            Cond::cmp("work_order", CmpOp::Eq, text(WO)),
        ));
        assert_eq!(rows(ok(&mut m, A, &scan)).len(), 1);
        assert!(rows(ok(&mut m, B, &scan)).is_empty());
        // Another session's uncommitted insert is invisible to FOR UPDATE and UPDATE too.
        assert!(rows(ok(&mut m, B, &select_for_update(APPLIED_SCANS, "s1"))).is_empty());

        let out = m.execute(A, &SqlOp::Commit);
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Committed,
                durable: true
            }
        );
        assert!(!m.in_transaction(A));
        assert_eq!(qty_seen(&mut m, B), Some(15));
        assert_eq!(rows(ok(&mut m, B, &scan)).len(), 1);
    }

    #[test]
    fn rollback_discards_writes_and_read_only_commit_is_not_durable() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 5)])));
        assert_eq!(ok(&mut m, A, &SqlOp::Rollback), SqlReply::Ok);
        assert_eq!(committed_qty(&m), Some(&int(10)));
        // The lock is gone.
        assert!(matches!(
            m.execute(B, &update(WO, Cond::True, vec![add("qty", 1)])),
            SqlOutcome::Done { durable: true, .. }
        ));

        ok(&mut m, A, &SqlOp::Begin);
        ok(&mut m, A, &select_for_update(WORK_ORDERS, WO));
        assert_eq!(
            m.execute(A, &SqlOp::Commit),
            SqlOutcome::Done {
                reply: SqlReply::Committed,
                durable: false
            }
        );
    }

    #[test]
    fn transaction_control_outside_and_inside_transactions() {
        let mut m = seeded();
        assert_eq!(
            m.execute(A, &SqlOp::Commit),
            SqlOutcome::Done {
                reply: SqlReply::Committed,
                durable: false
            }
        );
        assert_eq!(ok(&mut m, A, &SqlOp::Rollback), SqlReply::Ok);
        assert!(!m.in_transaction(A));
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 1)])));
        // A second BEGIN only warns: the transaction and its writes stay.
        assert_eq!(ok(&mut m, A, &SqlOp::Begin), SqlReply::Ok);
        assert_eq!(qty_seen(&mut m, A), Some(11));
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::Committed);
        assert_eq!(committed_qty(&m), Some(&int(11)));
    }

    #[test]
    fn conditional_update_is_rechecked_after_the_holder_commits() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        ok(&mut m, B, &SqlOp::Begin);
        let a_update = update(WO, epoch_is(1), vec![add("qty", 5), add("lease_epoch", 1)]);
        let after = rows(ok(&mut m, A, &a_update));
        assert_eq!(after[0].int("lease_epoch"), Some(2));
        assert_eq!(after[0].int("qty"), Some(15));

        let b_update = update(WO, epoch_is(1), vec![add("qty", 7)]);
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        // Blocked changed nothing, and blocking again is the same.
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        // The holder itself never blocks on its own lock.
        assert_eq!(
            rows(ok(&mut m, A, &update(WO, Cond::True, vec![]))).len(),
            1
        );
        // Plain reads do not wait.
        assert_eq!(qty_seen(&mut m, B), Some(10));

        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::Committed);
        assert!(rows(ok(&mut m, B, &b_update)).is_empty());
        // B took no lock: C can update at once.
        let c = m.execute(C, &update(WO, epoch_is(2), vec![add("qty", 1)]));
        assert!(matches!(c, SqlOutcome::Done { durable: true, .. }));
        assert_eq!(ok(&mut m, B, &SqlOp::Commit), SqlReply::Committed);
        assert_eq!(committed_qty(&m), Some(&int(16)));
    }

    #[test]
    fn blocked_update_applies_on_the_newest_row_when_the_guard_still_holds() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, epoch_is(1), vec![add("qty", 5)])));
        let b_update = update(WO, epoch_is(1), vec![add("qty", 7)]);
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        ok(&mut m, A, &SqlOp::Commit);
        let out = m.execute(B, &b_update);
        let SqlOutcome::Done { reply, durable } = out else {
            panic!("blocked")
        };
        assert!(durable);
        assert_eq!(rows(reply)[0].int("qty"), Some(22));
    }

    #[test]
    fn update_whose_guard_fails_on_the_committed_row_does_not_wait() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(
            &mut m,
            A,
            &update(WO, Cond::True, vec![set("lease_epoch", int(5))]),
        ));
        // PostgreSQL filters on the snapshot (epoch 1) before trying the lock.
        let out = m.execute(B, &update(WO, epoch_is(5), vec![add("qty", 1)]));
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Rows(vec![]),
                durable: false
            }
        );
    }

    #[test]
    fn select_for_update_waits_for_any_row_lock() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        let locked = rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, WO)));
        assert_eq!(locked[0].int("qty"), Some(10));
        assert_eq!(
            m.execute(B, &select_for_update(WORK_ORDERS, WO)),
            SqlOutcome::Blocked { holder: A }
        );
        assert_eq!(
            m.execute(B, &update(WO, Cond::True, vec![add("qty", 1)])),
            SqlOutcome::Blocked { holder: A }
        );
        // A second FOR UPDATE by the holder does not block.
        assert_eq!(
            rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, WO))).len(),
            1
        );
        // A missing key: no row, no lock.
        assert!(rows(ok(&mut m, B, &select_for_update(WORK_ORDERS, "nope"))).is_empty());
        ok(&mut m, A, &SqlOp::Rollback);
        assert_eq!(
            rows(ok(&mut m, B, &select_for_update(WORK_ORDERS, WO))).len(),
            1
        );
    }

    #[test]
    fn insert_waits_for_an_uncommitted_inserter_then_violates_if_it_committed() {
        let mut m = SqlModel::new();
        ok(&mut m, A, &SqlOp::Begin);
        assert_eq!(ok(&mut m, A, &insert_scan("s1", 5)), SqlReply::Affected(1));
        // Inserting it again in the same transaction is a violation (and fails it).
        ok(&mut m, C, &SqlOp::Begin);
        assert_eq!(ok(&mut m, C, &insert_scan("s2", 5)), SqlReply::Affected(1));
        assert!(matches!(
            ok(&mut m, C, &insert_scan("s2", 5)),
            SqlReply::UniqueViolation { .. }
        ));
        assert_eq!(ok(&mut m, C, &SqlOp::Commit), SqlReply::RolledBack);

        ok(&mut m, B, &SqlOp::Begin);
        assert_eq!(
            m.execute(B, &insert_scan("s1", 9)),
            SqlOutcome::Blocked { holder: A }
        );
        // Blocking did not fail B's transaction.
        assert_eq!(qty_seen(&mut m, B), None);
        ok(&mut m, A, &SqlOp::Commit);
        assert_eq!(
            ok(&mut m, B, &insert_scan("s1", 9)),
            SqlReply::UniqueViolation {
                table: APPLIED_SCANS,
                key: "s1".into()
            }
        );
        assert_eq!(ok(&mut m, B, &SqlOp::Commit), SqlReply::RolledBack);
        assert_eq!(
            m.committed(APPLIED_SCANS, "s1").and_then(|r| r.get("qty")),
            Some(&int(5))
        );
        assert!(m.committed(APPLIED_SCANS, "s2").is_none());
    }

    #[test]
    fn insert_waits_for_an_uncommitted_inserter_then_succeeds_if_it_rolled_back() {
        let mut m = SqlModel::new();
        ok(&mut m, A, &SqlOp::Begin);
        ok(&mut m, A, &insert_scan("s1", 5));
        // Autocommit insert blocks too, with nothing changed.
        assert_eq!(
            m.execute(B, &insert_scan("s1", 9)),
            SqlOutcome::Blocked { holder: A }
        );
        assert!(!m.in_transaction(B));
        ok(&mut m, A, &SqlOp::Rollback);
        assert_eq!(
            m.execute(B, &insert_scan("s1", 9)),
            SqlOutcome::Done {
                reply: SqlReply::Affected(1),
                durable: true
            }
        );
        assert_eq!(
            m.committed(APPLIED_SCANS, "s1").and_then(|r| r.get("qty")),
            Some(&int(9))
        );
    }

    #[test]
    fn insert_of_a_committed_key_waits_only_for_an_uncommitted_updater() {
        let mut m = seeded();
        let dup = exec(SqlStmt::Insert {
            table: WORK_ORDERS,
            key: WO.into(),
            row: Row::new(),
        });
        assert!(matches!(
            ok(&mut m, B, &dup),
            SqlReply::UniqueViolation { .. }
        ));
        ok(&mut m, A, &SqlOp::Begin);
        ok(&mut m, A, &select_for_update(WORK_ORDERS, WO));
        // A FOR UPDATE locker does not hold up the unique check.
        assert!(matches!(
            ok(&mut m, B, &dup),
            SqlReply::UniqueViolation { .. }
        ));
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 1)])));
        assert_eq!(m.execute(B, &dup), SqlOutcome::Blocked { holder: A });
        ok(&mut m, A, &SqlOp::Commit);
        assert!(matches!(
            ok(&mut m, B, &dup),
            SqlReply::UniqueViolation { .. }
        ));
    }

    #[test]
    fn an_error_fails_the_transaction_until_its_end() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 5)])));
        ok(&mut m, A, &insert_scan("s1", 5));
        assert!(matches!(
            ok(&mut m, A, &insert_scan("s1", 5)),
            SqlReply::UniqueViolation { .. }
        ));
        assert_eq!(error(ok(&mut m, A, &select(WORK_ORDERS, WO))), ABORTED);
        assert_eq!(error(ok(&mut m, A, &insert_scan("s9", 1))), ABORTED);
        assert_eq!(error(ok(&mut m, A, &SqlOp::Begin)), ABORTED);
        assert!(m.in_transaction(A));
        assert_eq!(
            m.execute(A, &SqlOp::Commit),
            SqlOutcome::Done {
                reply: SqlReply::RolledBack,
                durable: false
            }
        );
        assert!(!m.in_transaction(A));
        assert_eq!(committed_qty(&m), Some(&int(10)));
        assert!(m.committed(APPLIED_SCANS, "s1").is_none());
        // The next transaction starts clean.
        ok(&mut m, A, &SqlOp::Begin);
        assert_eq!(qty_seen(&mut m, A), Some(10));
        assert_eq!(ok(&mut m, A, &SqlOp::Rollback), SqlReply::Ok);

        // ROLLBACK ends a failed transaction too.
        ok(&mut m, A, &SqlOp::Begin);
        error(ok(&mut m, A, &update(WO, Cond::True, vec![add("nope", 1)])));
        assert_eq!(ok(&mut m, A, &SqlOp::Rollback), SqlReply::Ok);
        assert!(!m.in_transaction(A));
    }

    #[test]
    fn a_failed_transaction_releases_its_locks_and_rows_at_the_error() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 5)])));
        ok(&mut m, A, &insert_scan("s1", 5));
        let b_update = update(WO, Cond::True, vec![add("qty", 1)]);
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        assert_eq!(
            m.execute(B, &insert_scan("s1", 9)),
            SqlOutcome::Blocked { holder: A }
        );
        let releases = m.lock_releases();
        // A's transaction fails (on a column it does not have): PostgreSQL aborts it there.
        error(ok(&mut m, A, &update(WO, Cond::True, vec![add("nope", 1)])));
        assert_ne!(m.lock_releases(), releases, "the failure released locks");
        assert!(m.in_transaction(A), "the block waits for ROLLBACK");
        // B proceeds before A's ROLLBACK, without A's uncommitted update or insert.
        assert_eq!(rows(ok(&mut m, B, &b_update))[0].int("qty"), Some(11));
        assert_eq!(ok(&mut m, B, &insert_scan("s1", 9)), SqlReply::Affected(1));
        assert_eq!(error(ok(&mut m, A, &insert_scan("s2", 1))), ABORTED);
        assert_eq!(ok(&mut m, A, &SqlOp::Rollback), SqlReply::Ok);
        assert_eq!(committed_qty(&m), Some(&int(11)));
        assert_eq!(
            m.committed(APPLIED_SCANS, "s1").and_then(|r| r.get("qty")),
            Some(&int(9))
        );
    }

    #[test]
    fn lock_releases_count_only_locks_another_statement_could_wait_for() {
        let mut m = seeded();
        let releases = m.lock_releases();
        // Autocommit: the lock is taken and dropped inside one call.
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 1)])));
        error(ok(&mut m, A, &update(WO, Cond::True, vec![add("nope", 1)])));
        // A transaction without locks, failed and ended.
        ok(&mut m, A, &SqlOp::Begin);
        ok(&mut m, A, &select(WORK_ORDERS, WO));
        let bad_scan = exec(SqlStmt::scan(
            WORK_ORDERS,
            Cond::cmp("nope", CmpOp::Eq, int(1)),
        ));
        error(ok(&mut m, A, &bad_scan));
        ok(&mut m, A, &SqlOp::Rollback);
        assert_eq!(m.lock_releases(), releases);
        // A transaction holding a lock, committed.
        ok(&mut m, B, &SqlOp::Begin);
        ok(&mut m, B, &select_for_update(WORK_ORDERS, WO));
        ok(&mut m, B, &SqlOp::Commit);
        assert_eq!(m.lock_releases(), releases + 1);
    }

    #[test]
    fn an_update_that_would_overflow_fails_without_waiting_for_the_lock() {
        let mut m = seeded();
        m.seed(WORK_ORDERS, "big", work_order(i64::MAX - 1, 1));
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, "big")));
        // PostgreSQL computes the new value from the committed version before it tries
        // the lock.
        ok(&mut m, B, &SqlOp::Begin);
        assert_eq!(
            error(ok(
                &mut m,
                B,
                &update("big", Cond::True, vec![add("qty", 5)])
            )),
            "22003: bigint out of range"
        );
        assert_eq!(ok(&mut m, B, &SqlOp::Rollback), SqlReply::Ok);
        // The guard comes first: a row it skips is not computed.
        assert!(
            rows(ok(
                &mut m,
                B,
                &update("big", epoch_is(7), vec![add("qty", 5)])
            ))
            .is_empty()
        );
        // A value that fits waits, and is computed again on the newest version.
        let b_update = update("big", Cond::True, vec![add("qty", 1)]);
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        rows(ok(
            &mut m,
            A,
            &update("big", Cond::True, vec![add("qty", 1)]),
        ));
        ok(&mut m, A, &SqlOp::Commit);
        assert_eq!(
            error(ok(&mut m, B, &b_update)),
            "22003: bigint out of range"
        );
        assert_eq!(
            m.committed(WORK_ORDERS, "big").and_then(|r| r.get("qty")),
            Some(&int(i64::MAX))
        );
    }

    #[test]
    fn an_autocommit_error_applies_nothing() {
        let mut m = seeded();
        m.seed(WORK_ORDERS, "big", work_order(i64::MAX, 1));
        let out = m.execute(
            A,
            &update(
                "big",
                Cond::True,
                vec![add("lease_epoch", 1), add("qty", 1)],
            ),
        );
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Error("22003: bigint out of range".into()),
                durable: false
            }
        );
        assert!(!m.in_transaction(A));
        let big = m.committed(WORK_ORDERS, "big").unwrap();
        assert_eq!(big.get("lease_epoch"), Some(&int(1)));
        assert_eq!(big.get("qty"), Some(&int(i64::MAX)));
        // No lock was left behind.
        assert_eq!(
            rows(ok(
                &mut m,
                B,
                &update("big", Cond::True, vec![add("qty", -1)])
            ))[0]
                .int("qty"),
            Some(i64::MAX - 1)
        );
    }

    #[test]
    fn disconnect_rolls_back_and_releases_locks() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 5)])));
        ok(&mut m, A, &insert_scan("s1", 5));
        let b_update = update(WO, Cond::True, vec![add("qty", 1)]);
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        assert_eq!(
            m.execute(B, &insert_scan("s1", 1)),
            SqlOutcome::Blocked { holder: A }
        );
        assert!(m.disconnect(A));
        assert!(!m.in_transaction(A));
        assert_eq!(committed_qty(&m), Some(&int(10)));
        assert_eq!(rows(ok(&mut m, B, &b_update))[0].int("qty"), Some(11));
        assert_eq!(ok(&mut m, B, &insert_scan("s1", 1)), SqlReply::Affected(1));
        assert!(!m.disconnect(A));
        assert!(!m.disconnect(B));
    }

    #[test]
    fn add_leaves_null_alone_and_fails_on_overflow() {
        let mut m = SqlModel::new();
        m.seed(WORK_ORDERS, WO, row(&[("lease_epoch", int(1))]));
        let after = rows(ok(
            &mut m,
            A,
            &update(WO, Cond::True, vec![add("qty", 5), add("lease_epoch", 1)]),
        ));
        assert_eq!(after[0].columns.get("qty"), Some(&Value::Null));
        assert_eq!(after[0].int("lease_epoch"), Some(2));
        assert_eq!(committed_qty(&m), Some(&Value::Null));

        m.seed(WORK_ORDERS, WO, work_order(i64::MIN, 1));
        ok(&mut m, A, &SqlOp::Begin);
        assert_eq!(
            error(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", -1)]))),
            "22003: bigint out of range"
        );
        assert_eq!(error(ok(&mut m, A, &select(WORK_ORDERS, WO))), ABORTED);
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::RolledBack);
        assert_eq!(committed_qty(&m), Some(&int(i64::MIN)));
    }

    #[test]
    fn unknown_columns_and_wrong_types_are_errors() {
        let mut m = seeded();
        let bad_insert = |row: Row| {
            exec(SqlStmt::Insert {
                table: WORK_ORDERS,
                key: "w2".into(),
                row,
            })
        };
        assert_eq!(
            error(ok(&mut m, A, &bad_insert(row(&[("x", int(1))])))),
            "42703: column \"x\" of relation \"work_orders\" does not exist"
        );
        assert_eq!(
            error(ok(&mut m, A, &bad_insert(row(&[("lease_owner", int(1))])))),
            "42804: column \"lease_owner\" is of type text but expression is of type bigint"
        );
        assert_eq!(
            error(ok(&mut m, A, &bad_insert(row(&[("qty", text("1"))])))),
            "42804: column \"qty\" is of type bigint but expression is of type text"
        );
        error(ok(&mut m, A, &bad_insert(row(&[("key", text("w2"))]))));
        assert_eq!(
            error(ok(
                &mut m,
                A,
                &update(WO, Cond::True, vec![set("x", int(1))])
            )),
            "42703: column \"x\" of relation \"work_orders\" does not exist"
        );
        assert_eq!(
            error(ok(
                &mut m,
                A,
                &update(WO, Cond::True, vec![set("qty", text("a"))])
            )),
            "42804: column \"qty\" is of type bigint but expression is of type text"
        );
        assert_eq!(
            error(ok(
                &mut m,
                A,
                &update(WO, Cond::True, vec![add("lease_owner", 1)])
            )),
            "42883: operator does not exist: text + bigint"
        );
        assert_eq!(
            error(ok(
                &mut m,
                A,
                &update(WO, Cond::cmp("x", CmpOp::Eq, int(1)), vec![])
            )),
            "42703: column \"x\" does not exist"
        );
        error(ok(
            &mut m,
            A,
            &update(WO, Cond::True, vec![add("qty", 1), add("qty", 1)]),
        ));
        error(ok(
            &mut m,
            A,
            &update(WO, Cond::True, vec![set("key", text("w3"))]),
        ));
        let bad_scan = exec(SqlStmt::scan(
            WORK_ORDERS,
            Cond::Or(vec![Cond::True, Cond::cmp("y", CmpOp::Eq, int(1))]),
        ));
        error(ok(&mut m, A, &bad_scan));
        // NULL fits any column.
        assert_eq!(
            ok(&mut m, A, &bad_insert(row(&[("qty", Value::Null)]))),
            SqlReply::Affected(1)
        );
        // None of the errors changed anything.
        assert_eq!(m.committed(WORK_ORDERS, WO), Some(&work_order(10, 1)));

        // Inside a transaction, a column error fails it.
        ok(&mut m, A, &SqlOp::Begin);
        error(ok(&mut m, A, &bad_insert(row(&[("x", int(1))]))));
        assert_eq!(error(ok(&mut m, A, &select(WORK_ORDERS, WO))), ABORTED);
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::RolledBack);
    }

    #[test]
    fn inserted_rows_have_every_column_and_scans_are_in_key_order() {
        let mut m = SqlModel::new();
        for (key, qty) in [("c", 3), ("a", 1), ("b", 2)] {
            ok(
                &mut m,
                A,
                &exec(SqlStmt::Insert {
                    table: WORK_ORDERS,
                    key: key.into(),
                    row: row(&[("qty", int(qty))]),
                }),
            );
        }
        let expected = row(&[
            ("qty", int(1)),
            ("lease_epoch", Value::Null),
            ("lease_owner", Value::Null),
            ("lease_until", Value::Null),
        ]);
        assert_eq!(m.committed(WORK_ORDERS, "a"), Some(&expected));
        ok(&mut m, B, &SqlOp::Begin);
        ok(
            &mut m,
            B,
            &exec(SqlStmt::Insert {
                table: WORK_ORDERS,
                key: "aa".into(),
                row: row(&[("qty", int(9))]),
            }),
        );
        let scan = |filter| exec(SqlStmt::scan(WORK_ORDERS, filter));
        let keys = |rows: Vec<KeyedRow>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
        assert_eq!(
            keys(rows(ok(&mut m, B, &scan(Cond::True)))),
            ["a", "aa", "b", "c"]
        );
        assert_eq!(
            keys(rows(ok(&mut m, A, &scan(Cond::True)))),
            ["a", "b", "c"]
        );
        let filter = Cond::And(vec![
            Cond::cmp("key", CmpOp::Ne, text("b")),
            Cond::cmp("qty", CmpOp::Ge, int(2)),
        ]);
        assert_eq!(keys(rows(ok(&mut m, B, &scan(filter)))), ["aa", "c"]);
        let committed: Vec<&str> = m.committed_rows(WORK_ORDERS).map(|(k, _)| k).collect();
        assert_eq!(committed, ["a", "b", "c"]);
        assert_eq!(m.committed_rows(UPDATE_LOG).count(), 0);
        // A guard on the key works in UPDATE too.
        let on_key = update(
            "a",
            Cond::cmp("key", CmpOp::Eq, text("a")),
            vec![add("qty", 1)],
        );
        assert_eq!(rows(ok(&mut m, A, &on_key))[0].int("qty"), Some(2));
    }

    /// A scan inside a transaction sees the committed rows with the transaction's own
    /// inserts, updates and deletes merged in key order (of its table only); other sessions
    /// see the committed rows until the commit.
    #[test]
    fn a_scan_merges_the_sessions_own_inserts_updates_and_deletes_in_key_order() {
        let mut m = SqlModel::new();
        for (key, qty) in [("b", 2), ("d", 4), ("f", 6)] {
            m.seed(WORK_ORDERS, key, row(&[("qty", int(qty))]));
        }
        m.seed(UPDATE_LOG, "c", Row::new());
        let insert = |key: &str, qty: i64| {
            exec(SqlStmt::Insert {
                table: WORK_ORDERS,
                key: key.into(),
                row: row(&[("qty", int(qty))]),
            })
        };
        ok(&mut m, A, &SqlOp::Begin);
        for (key, qty) in [("a", 1), ("e", 5), ("g", 7)] {
            assert_eq!(ok(&mut m, A, &insert(key, qty)), SqlReply::Affected(1));
        }
        let log = exec(SqlStmt::Insert {
            table: UPDATE_LOG,
            key: "z".into(),
            row: Row::new(),
        });
        assert_eq!(ok(&mut m, A, &log), SqlReply::Affected(1));
        rows(ok(&mut m, A, &delete("b", Cond::True)));
        rows(ok(
            &mut m,
            A,
            &update("d", Cond::True, vec![add("qty", 10)]),
        ));
        let scan = |filter| exec(SqlStmt::scan(WORK_ORDERS, filter));
        let seen = |r: SqlReply| {
            rows(r)
                .into_iter()
                .map(|r| (r.key.clone(), r.int("qty")))
                .collect::<Vec<_>>()
        };
        let own = [("a", 1), ("d", 14), ("e", 5), ("f", 6), ("g", 7)]
            .map(|(k, q)| (k.to_string(), Some(q)));
        assert_eq!(seen(ok(&mut m, A, &scan(Cond::True))), own);
        let over_4 = Cond::cmp("qty", CmpOp::Gt, int(4));
        assert_eq!(
            seen(ok(&mut m, A, &scan(over_4.clone()))),
            own[1..].to_vec()
        );
        let committed = [("b", 2), ("d", 4), ("f", 6)].map(|(k, q)| (k.to_string(), Some(q)));
        assert_eq!(seen(ok(&mut m, B, &scan(Cond::True))), committed);
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::Committed);
        assert_eq!(seen(ok(&mut m, B, &scan(over_4))), own[1..].to_vec());
    }

    /// PostgreSQL 15, READ COMMITTED: a statement that waited for a row another transaction
    /// deleted and inserted again under the same key finds no row (the re-check follows the
    /// row's update chain, which the delete ended; the new row is not in its snapshot),
    /// while a plain update of the row is followed.
    #[test]
    fn a_row_deleted_and_inserted_again_is_gone_for_a_statement_that_waited_for_it() {
        let again = || {
            exec(SqlStmt::Upsert {
                table: WORK_ORDERS,
                key: WO.into(),
                row: work_order(20, 1),
                on_conflict: OnConflict::DoNothing,
            })
        };
        let waiters = [
            update(WO, Cond::True, vec![add("qty", 1)]),
            delete(WO, Cond::True),
            select_for_update(WORK_ORDERS, WO),
            scan_qty_over(5, ScanLock::ForUpdate, None),
        ];
        for waiter in &waiters {
            let mut m = seeded();
            ok(&mut m, A, &SqlOp::Begin);
            rows(ok(&mut m, A, &delete(WO, Cond::True)));
            assert_eq!(m.execute(B, waiter), SqlOutcome::Blocked { holder: A });
            rows(ok(&mut m, A, &again()));
            assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::Committed);
            assert!(rows(ok(&mut m, B, waiter)).is_empty(), "{waiter:?}");
            assert_eq!(committed_qty(&m), Some(&int(20)), "{waiter:?}");
            // A later statement sees the new row.
            assert_eq!(rows(ok(&mut m, B, waiter)).len(), 1, "{waiter:?}");
        }
        // An update (no delete) is followed to the newest version.
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &update(WO, Cond::True, vec![add("qty", 10)])));
        assert_eq!(m.execute(B, &waiters[0]), SqlOutcome::Blocked { holder: A });
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::Committed);
        assert_eq!(rows(ok(&mut m, B, &waiters[0]))[0].int("qty"), Some(21));
    }

    fn delete(key: &str, guard: Cond) -> SqlOp {
        exec(SqlStmt::Delete {
            table: WORK_ORDERS,
            key: key.to_string(),
            guard,
        })
    }

    fn upsert(key: &str, qty: i64, on_conflict: OnConflict) -> SqlOp {
        exec(SqlStmt::Upsert {
            table: WORK_ORDERS,
            key: key.to_string(),
            row: row(&[("qty", int(qty))]),
            on_conflict,
        })
    }

    #[test]
    fn delete_returns_the_row_locks_it_and_is_rechecked_after_a_wait() {
        let mut m = seeded();
        ok(&mut m, A, &SqlOp::Begin);
        let gone = rows(ok(&mut m, A, &delete(WO, Cond::True)));
        assert_eq!(gone[0].int("qty"), Some(10));
        assert!(rows(ok(&mut m, A, &select(WORK_ORDERS, WO))).is_empty());
        let scan = exec(SqlStmt::scan(WORK_ORDERS, Cond::True));
        assert!(rows(ok(&mut m, A, &scan)).is_empty());
        // Others still see the row, and wait for it.
        assert_eq!(rows(ok(&mut m, B, &select(WORK_ORDERS, WO))).len(), 1);
        let b_update = update(WO, Cond::True, vec![add("qty", 1)]);
        assert_eq!(m.execute(B, &b_update), SqlOutcome::Blocked { holder: A });
        // A re-insert of the key waits for the deleter too.
        let b_insert = exec(SqlStmt::Insert {
            table: WORK_ORDERS,
            key: WO.into(),
            row: Row::new(),
        });
        assert_eq!(m.execute(B, &b_insert), SqlOutcome::Blocked { holder: A });
        // A guard false on the committed row does not wait.
        assert!(rows(ok(&mut m, B, &delete(WO, epoch_is(9)))).is_empty());
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::Committed);
        assert!(rows(ok(&mut m, B, &b_update)).is_empty());
        assert_eq!(ok(&mut m, B, &b_insert), SqlReply::Affected(1));
        assert!(rows(ok(&mut m, A, &delete("nope", Cond::True))).is_empty());
    }

    #[test]
    fn upsert_does_nothing_or_updates_and_waits_like_postgresql() {
        let mut m = seeded();
        let nothing = upsert(WO, 3, OnConflict::DoNothing);
        assert!(rows(ok(&mut m, A, &nothing)).is_empty());
        let fresh = rows(ok(&mut m, A, &upsert("w2", 3, OnConflict::DoNothing)));
        assert_eq!(fresh[0].int("qty"), Some(3));
        assert_eq!(fresh[0].columns.get("lease_epoch"), Some(&Value::Null));
        let bump = OnConflict::DoUpdate {
            set: vec![add("qty", 1)],
            guard: epoch_is(1),
        };
        assert_eq!(
            rows(ok(&mut m, A, &upsert(WO, 3, bump.clone())))[0].int("qty"),
            Some(11)
        );
        // A FOR UPDATE holder: DO NOTHING does not wait, DO UPDATE does.
        ok(&mut m, A, &SqlOp::Begin);
        ok(&mut m, A, &select_for_update(WORK_ORDERS, WO));
        assert!(rows(ok(&mut m, B, &nothing)).is_empty());
        assert_eq!(
            m.execute(B, &upsert(WO, 3, bump.clone())),
            SqlOutcome::Blocked { holder: A }
        );
        ok(&mut m, A, &SqlOp::Commit);
        // An uncommitted insert of the key: both wait; after a rollback, they insert.
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &upsert("w3", 1, OnConflict::DoNothing)));
        assert_eq!(
            m.execute(B, &nothing.clone()),
            SqlOutcome::Done {
                reply: SqlReply::Rows(Vec::new()),
                durable: false,
            }
        );
        let w3 = upsert("w3", 5, bump.clone());
        assert_eq!(m.execute(B, &w3), SqlOutcome::Blocked { holder: A });
        ok(&mut m, A, &SqlOp::Rollback);
        assert_eq!(rows(ok(&mut m, B, &w3))[0].int("qty"), Some(5));
        // A false guard updates nothing but keeps the row locked.
        ok(&mut m, A, &SqlOp::Begin);
        let no = OnConflict::DoUpdate {
            set: vec![add("qty", 1)],
            guard: epoch_is(9),
        };
        assert!(rows(ok(&mut m, A, &upsert(WO, 0, no))).is_empty());
        assert_eq!(
            m.execute(B, &update(WO, Cond::True, vec![add("qty", 1)])),
            SqlOutcome::Blocked { holder: A }
        );
    }

    fn scan_qty_over(n: i64, lock: ScanLock, limit: Option<u64>) -> SqlOp {
        let stmt = SqlStmt::scan(WORK_ORDERS, Cond::cmp("qty", CmpOp::Gt, int(n))).locking(lock);
        exec(match limit {
            Some(l) => stmt.limit(l),
            None => stmt,
        })
    }

    fn keys(r: SqlReply) -> Vec<String> {
        rows(r).into_iter().map(|r| r.key).collect()
    }

    fn three_orders() -> SqlModel {
        let mut m = SqlModel::new();
        for k in ["wo-1", "wo-2", "wo-3"] {
            m.seed(WORK_ORDERS, k, work_order(10, 1));
        }
        m
    }

    #[test]
    fn skip_locked_skips_rows_other_sessions_hold_and_locks_what_it_returns() {
        let mut m = three_orders();
        for s in [A, B, C] {
            ok(&mut m, s, &SqlOp::Begin);
        }
        rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, "wo-1")));
        // An uncommitted insert by A is invisible to the others.
        let insert = exec(SqlStmt::Insert {
            table: WORK_ORDERS,
            key: "wo-0".into(),
            row: work_order(10, 1),
        });
        assert_eq!(ok(&mut m, A, &insert), SqlReply::Affected(1));
        let skip_one = scan_qty_over(5, ScanLock::SkipLocked, Some(1));
        assert_eq!(keys(ok(&mut m, B, &skip_one)), ["wo-2"]);
        let skip_all = scan_qty_over(5, ScanLock::SkipLocked, None);
        assert_eq!(keys(ok(&mut m, C, &skip_all)), ["wo-3"]);
        // The rows it returned are locked: an update of wo-3 by B waits for C.
        let bump = update("wo-3", Cond::True, vec![add("qty", 1)]);
        assert_eq!(m.execute(B, &bump), SqlOutcome::Blocked { holder: C });
        // A plain scan neither waits nor skips; LIMIT counts in key order.
        let plain = scan_qty_over(5, ScanLock::None, Some(2));
        assert_eq!(keys(ok(&mut m, C, &plain)), ["wo-1", "wo-2"]);
        // An uncommitted update or delete by another session is skipped too.
        ok(&mut m, A, &SqlOp::Commit);
        ok(&mut m, C, &SqlOp::Rollback);
        assert_eq!(keys(ok(&mut m, B, &bump)), ["wo-3"]);
        let delete = exec(SqlStmt::Delete {
            table: WORK_ORDERS,
            key: "wo-0".into(),
            guard: Cond::True,
        });
        ok(&mut m, B, &delete);
        assert_eq!(keys(ok(&mut m, A, &skip_all)), ["wo-1"]);
        assert_eq!(
            m.execute(A, &skip_all),
            m.execute(A, &skip_all),
            "own rows stay"
        );
    }

    #[test]
    fn a_for_update_scan_waits_keeps_its_locks_and_rechecks_its_first_candidates() {
        let mut m = three_orders();
        for s in [A, B] {
            ok(&mut m, s, &SqlOp::Begin);
        }
        // B holds wo-2 with an uncommitted qty = 0.
        rows(ok(
            &mut m,
            B,
            &update("wo-2", Cond::True, vec![set("qty", int(0))]),
        ));
        let scan = scan_qty_over(5, ScanLock::ForUpdate, None);
        assert_eq!(m.execute(A, &scan), SqlOutcome::Blocked { holder: B });
        assert_eq!(m.waits_for(A), Some(B));
        // A kept wo-1 while it waits; wo-3 is still free.
        let skip = scan_qty_over(-1, ScanLock::SkipLocked, None);
        assert_eq!(keys(ok(&mut m, C, &skip)), ["wo-3"]);
        rows(ok(
            &mut m,
            C,
            &update("wo-3", Cond::True, vec![set("qty", int(1))]),
        ));
        // B commits wo-2 = 0 and a new wo-4 that passes the filter.
        let insert = exec(SqlStmt::Insert {
            table: WORK_ORDERS,
            key: "wo-4".into(),
            row: work_order(10, 1),
        });
        ok(&mut m, B, &insert);
        ok(&mut m, B, &SqlOp::Commit);
        // Re-executed: wo-2 and wo-3 fail the re-check, wo-4 was not a candidate.
        assert_eq!(keys(ok(&mut m, A, &scan)), ["wo-1"]);
        assert_eq!(m.waits_for(A), None);
        // A fresh scan with a limit locks only what it returns.
        ok(&mut m, A, &SqlOp::Commit);
        ok(&mut m, A, &SqlOp::Begin);
        let first = scan_qty_over(5, ScanLock::ForUpdate, Some(1));
        assert_eq!(keys(ok(&mut m, A, &first)), ["wo-1"]);
        assert_eq!(keys(ok(&mut m, B, &skip)), ["wo-2", "wo-3", "wo-4"]);
    }

    #[test]
    fn a_scan_limit_beyond_bigint_is_out_of_range() {
        let mut m = three_orders();
        let huge = scan_qty_over(5, ScanLock::None, Some(u64::MAX));
        assert_eq!(ok(&mut m, A, &huge), OutOfRange.reply());
    }

    #[test]
    fn a_deadlock_check_fails_the_waiter_only_when_its_wait_closes_a_cycle() {
        let mut m = three_orders();
        assert_eq!(m.deadlock_timeout(), Duration::from_secs(1));
        for s in [A, B] {
            ok(&mut m, s, &SqlOp::Begin);
        }
        rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, "wo-1")));
        rows(ok(&mut m, B, &select_for_update(WORK_ORDERS, "wo-2")));
        let a_wants = select_for_update(WORK_ORDERS, "wo-2");
        let b_wants = select_for_update(WORK_ORDERS, "wo-1");
        assert_eq!(m.execute(A, &a_wants), SqlOutcome::Blocked { holder: B });
        // No cycle yet: the check changes nothing.
        assert_eq!(m.check_deadlock(A), None);
        assert_eq!(m.check_deadlock(C), None);
        assert_eq!(m.execute(B, &b_wants), SqlOutcome::Blocked { holder: A });
        let releases = m.lock_releases();
        assert_eq!(m.check_deadlock(A), Some(SqlReply::Error(DEADLOCK.into())));
        assert_ne!(m.lock_releases(), releases, "A's locks went at the error");
        assert_eq!(m.check_deadlock(B), None, "the cycle is broken");
        assert_eq!(keys(ok(&mut m, B, &b_wants)), ["wo-1"]);
        assert_eq!(error(ok(&mut m, A, &a_wants)), ABORTED);
        assert_eq!(ok(&mut m, A, &SqlOp::Commit), SqlReply::RolledBack);
        assert_eq!(ok(&mut m, B, &SqlOp::Commit), SqlReply::Committed);
    }

    #[test]
    fn an_autocommit_for_update_scan_keeps_its_locks_while_it_waits() {
        let mut m = three_orders();
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, "wo-3")));
        let scan = scan_qty_over(-1, ScanLock::ForUpdate, None);
        assert_eq!(m.execute(B, &scan), SqlOutcome::Blocked { holder: A });
        assert!(
            !m.in_transaction(B),
            "no transaction block for an autocommit statement"
        );
        let skip = scan_qty_over(-1, ScanLock::SkipLocked, None);
        assert!(
            keys(ok(&mut m, C, &skip)).is_empty(),
            "B holds wo-1 and wo-2"
        );
        // A now wants wo-1: a deadlock, which B's check finds (B waited first).
        assert_eq!(
            m.execute(A, &select_for_update(WORK_ORDERS, "wo-1")),
            SqlOutcome::Blocked { holder: B }
        );
        let releases = m.lock_releases();
        assert_eq!(m.check_deadlock(B), Some(SqlReply::Error(DEADLOCK.into())));
        assert_ne!(m.lock_releases(), releases);
        assert!(!m.in_transaction(B));
        assert_eq!(
            keys(ok(&mut m, A, &select_for_update(WORK_ORDERS, "wo-1"))),
            ["wo-1"]
        );
        // Without a deadlock, the scan finishes after A's commit and its release counts.
        ok(&mut m, A, &SqlOp::Commit);
        ok(&mut m, A, &SqlOp::Begin);
        rows(ok(&mut m, A, &select_for_update(WORK_ORDERS, "wo-3")));
        assert_eq!(m.execute(B, &scan), SqlOutcome::Blocked { holder: A });
        ok(&mut m, A, &SqlOp::Commit);
        let releases = m.lock_releases();
        let out = m.execute(B, &scan);
        assert_eq!(
            out,
            SqlOutcome::Done {
                reply: SqlReply::Rows(
                    ["wo-1", "wo-2", "wo-3"]
                        .map(|k| keyed(k, work_order(10, 1)))
                        .to_vec()
                ),
                durable: false
            }
        );
        assert_ne!(
            m.lock_releases(),
            releases,
            "others may have waited for its locks"
        );
        assert_eq!(keys(ok(&mut m, C, &skip)), ["wo-1", "wo-2", "wo-3"]);
    }
}
