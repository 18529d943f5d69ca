//! `SqlOp` over real PostgreSQL: parameterised statements only (each sent with its parameter
//! types in one round trip), explicit READ COMMITTED transactions, and an idempotent schema
//! set-up. One [`PgSql`] is one connection, which is one session, as in the SQL model.
//!
//! Where PostgreSQL would coerce or reject what the model treats strictly, the adapter applies
//! the model's rule before sending anything, with the model's SQLSTATE: the statement rules
//! are [`SqlStmt::validate`]'s (a value of the wrong type for its column is 42804, an unknown
//! column 42703, `key` inside an insert row 42701, a column assigned twice 42601, `+` on a
//! text column 42883, assigning the key 0A000), shared with the model; a comparison of a
//! column with a value of another type, or with NULL, is false. Inside a
//! transaction such an error fails the transaction on the server too, as the server's own
//! error would have. The conformance tests hold the two to the same answers.
//!
//! A session never silently continues on a new connection inside a transaction: when the
//! connection is lost (or an operation was interrupted by a timeout) while a transaction was
//! open, the server rolls it back, and the session answers every statement with an error and
//! `COMMIT` with `RolledBack` until the machine says `ROLLBACK`. Outside a transaction the
//! next operation simply reconnects.

use std::collections::BTreeSet;

use racelab_core::{
    Assign, ColumnType, Cond, Expr, KeyedRow, OnConflict, Row, SqlOp, SqlReply, SqlStmt, Table,
    Value,
};
use tokio_postgres::types::{ToSql, Type};

use crate::AdapterError;

const WHAT: &str = "PostgreSQL";

/// The error of every statement in a transaction whose connection was lost.
const LOST_TX: &str = "25P02: the connection was lost inside this transaction, which the server \
                       rolled back; ROLLBACK to continue";

/// A PostgreSQL session working inside its own schema.
#[derive(Debug)]
pub struct PgSql {
    url: String,
    schema: String,
    client: Option<tokio_postgres::Client>,
    /// A transaction is open (possibly failed).
    in_tx: bool,
    /// The open transaction had an error: `COMMIT` will roll it back.
    failed: bool,
    /// The connection was lost while a transaction was open.
    lost_tx: bool,
    /// An operation started and did not finish (its future was dropped).
    interrupted: bool,
    /// The tables this session has made sure exist in its schema.
    created: BTreeSet<Table>,
}

/// A typed statement parameter.
#[derive(Debug)]
enum Param {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Param {
    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Param::Int(v) => (v, Type::INT8),
            Param::Text(v) => (v, Type::TEXT),
        }
    }
}

/// The key column of every table.
const KEY: &str = "key";

/// The parameter for `value` in a column of type `ty`, or `None` if the types differ.
fn typed(ty: ColumnType, value: &Value) -> Option<Param> {
    match (ty, value) {
        (ColumnType::Int, Value::Int(n)) => Some(Param::Int(Some(*n))),
        (ColumnType::Int, Value::Null) => Some(Param::Int(None)),
        (ColumnType::Text, Value::Text(s)) => Some(Param::Text(Some(s.clone()))),
        (ColumnType::Text, Value::Null) => Some(Param::Text(None)),
        _ => None,
    }
}

/// Column names come from the core's fixed schema (checked before use); quoting them anyway
/// keeps the SQL valid whatever they are.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A statement's text and parameters, or the model's error reply for it.
type Built = Result<(String, Vec<Param>), SqlReply>;

fn error(message: String) -> SqlReply {
    SqlReply::Error(message)
}

fn cond_sql(table: Table, cond: &Cond, params: &mut Vec<Param>) -> String {
    match cond {
        Cond::True => "TRUE".to_string(),
        Cond::And(all) if all.is_empty() => "TRUE".to_string(),
        Cond::Or(any) if any.is_empty() => "FALSE".to_string(),
        Cond::And(all) => {
            let parts: Vec<String> = all.iter().map(|c| cond_sql(table, c, params)).collect();
            format!("({})", parts.join(" AND "))
        }
        Cond::Or(any) => {
            let parts: Vec<String> = any.iter().map(|c| cond_sql(table, c, params)).collect();
            format!("({})", parts.join(" OR "))
        }
        Cond::Cmp { left, op, right } => {
            if Cond::statically_false(table, left, right) {
                // SQL's unknown (a NULL constant), which a WHERE treats as false, or the
                // model's rule for a comparison across types (PostgreSQL would reject it).
                return "FALSE".to_string();
            }
            let l = expr_sql(table, left, right.ty(table), params);
            let r = expr_sql(table, right, left.ty(table), params);
            format!("{l} {} {r}", op.as_sql())
        }
    }
}

/// An expression's SQL; a constant becomes a parameter of its type (a `NULL` one of the type
/// `hint` says, `bigint` by default), text compared byte-wise as the model does.
fn expr_sql(
    table: Table,
    expr: &Expr,
    hint: Option<ColumnType>,
    params: &mut Vec<Param>,
) -> String {
    match expr {
        Expr::Col(c) => col(table, c),
        Expr::Excluded(c) => format!("EXCLUDED.{}", ident(c)),
        Expr::Const(v) => {
            let param = match v {
                Value::Int(n) => Param::Int(Some(*n)),
                Value::Text(t) => Param::Text(Some(t.clone())),
                Value::Null if hint == Some(ColumnType::Text) => Param::Text(None),
                Value::Null => Param::Int(None),
            };
            let text = matches!(param, Param::Text(_));
            params.push(param);
            if text {
                format!("(${} COLLATE \"C\")", params.len())
            } else {
                format!("${}", params.len())
            }
        }
        Expr::Add(l, r) | Expr::Sub(l, r) => {
            let l = expr_sql(table, l, Some(ColumnType::Int), params);
            let r = expr_sql(table, r, Some(ColumnType::Int), params);
            let op = if matches!(expr, Expr::Add(..)) {
                "+"
            } else {
                "-"
            };
            format!("({l} {op} {r})")
        }
    }
}

/// A column qualified by its table (unambiguous beside `EXCLUDED` in `ON CONFLICT`).
fn col(table: Table, column: &str) -> String {
    format!("{}.{}", ident(table.as_str()), ident(column))
}

/// A `SET` list's SQL (`key = key` when empty: `SET` needs one assignment; this one changes
/// nothing but still takes the row lock, as the model's empty update does).
fn set_sql(table: Table, set: &[Assign], params: &mut Vec<Param>) -> Built1 {
    let mut assigns = Vec::new();
    for a in set {
        match a {
            Assign::Set { column, value } => {
                let ty = table.column_type(column).unwrap_or(ColumnType::Text);
                params.push(typed(ty, value).ok_or_else(|| {
                    error(format!("42804: column \"{column}\" has another type"))
                })?);
                assigns.push(format!("{} = ${}", ident(column), params.len()));
            }
            Assign::To { column, expr } => {
                let e = expr_sql(table, expr, table.column_type(column), params);
                assigns.push(format!("{} = {e}", ident(column)));
            }
            Assign::Add { column, delta } => {
                params.push(Param::Int(Some(*delta)));
                assigns.push(format!(
                    "{} = {} + ${}",
                    ident(column),
                    col(table, column),
                    params.len()
                ));
            }
        }
    }
    if assigns.is_empty() {
        return Ok(format!("{} = {}", ident(KEY), col(table, KEY)));
    }
    Ok(assigns.join(", "))
}

/// Part of a statement's text, or the model's error reply for it.
type Built1 = Result<String, SqlReply>;

/// `INSERT INTO table (key, ...) VALUES ($1, ...)`.
fn insert_sql(table: Table, key: &str, row: &Row, params: &mut Vec<Param>) -> Built1 {
    params.push(Param::Text(Some(key.to_string())));
    let mut cols = vec![ident(KEY)];
    let mut placeholders = vec![format!("${}", params.len())];
    for (column, value) in row {
        // Validated: the column exists and the value has its type.
        let param = table
            .column_type(column)
            .and_then(|ty| typed(ty, value))
            .ok_or_else(|| error(format!("42804: column \"{column}\" has another type")))?;
        params.push(param);
        cols.push(ident(column));
        placeholders.push(format!("${}", params.len()));
    }
    Ok(format!(
        "INSERT INTO {} ({}) VALUES ({})",
        ident(table.as_str()),
        cols.join(", "),
        placeholders.join(", ")
    ))
}

fn returning(table: Table) -> String {
    let mut cols = vec![col(table, KEY)];
    cols.extend(table.columns().iter().map(|(c, _)| col(table, c)));
    cols.join(", ")
}

fn build(stmt: &SqlStmt) -> Built {
    stmt.validate().map_err(|invalid| invalid.reply())?;
    let mut params = Vec::new();
    match stmt {
        SqlStmt::Select {
            table,
            key,
            for_update,
        } => {
            params.push(Param::Text(Some(key.clone())));
            let lock = if *for_update { " FOR UPDATE" } else { "" };
            Ok((
                format!(
                    "SELECT {} FROM {} WHERE {} = $1{lock}",
                    returning(*table),
                    ident(table.as_str()),
                    ident(KEY)
                ),
                params,
            ))
        }
        SqlStmt::Scan {
            table,
            filter,
            lock,
            limit,
        } => {
            let filter = cond_sql(*table, filter, &mut params);
            // The limit is a constant of the statement's text (a u64 printed as digits).
            let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
            Ok((
                format!(
                    "SELECT {} FROM {} WHERE {filter} ORDER BY {}{limit}{}",
                    returning(*table),
                    ident(table.as_str()),
                    ident(KEY),
                    lock.sql()
                ),
                params,
            ))
        }
        SqlStmt::Insert { table, key, row } => {
            let text = insert_sql(*table, key, row, &mut params)?;
            Ok((text, params))
        }
        SqlStmt::Update {
            table,
            key,
            guard,
            set,
        } => {
            params.push(Param::Text(Some(key.clone())));
            let assigns = set_sql(*table, set, &mut params)?;
            let guard = cond_sql(*table, guard, &mut params);
            Ok((
                format!(
                    "UPDATE {} SET {assigns} WHERE {} = $1 AND {guard} RETURNING {}",
                    ident(table.as_str()),
                    ident(KEY),
                    returning(*table)
                ),
                params,
            ))
        }
        SqlStmt::Delete { table, key, guard } => {
            params.push(Param::Text(Some(key.clone())));
            let guard = cond_sql(*table, guard, &mut params);
            Ok((
                format!(
                    "DELETE FROM {} WHERE {} = $1 AND {guard} RETURNING {}",
                    ident(table.as_str()),
                    ident(KEY),
                    returning(*table)
                ),
                params,
            ))
        }
        SqlStmt::Upsert {
            table,
            key,
            row,
            on_conflict,
        } => {
            let insert = insert_sql(*table, key, row, &mut params)?;
            let action = match on_conflict {
                OnConflict::DoNothing => "DO NOTHING".to_string(),
                OnConflict::DoUpdate { set, guard } => {
                    let assigns = set_sql(*table, set, &mut params)?;
                    let guard = cond_sql(*table, guard, &mut params);
                    format!("DO UPDATE SET {assigns} WHERE {guard}")
                }
            };
            Ok((
                format!(
                    "{insert} ON CONFLICT ({}) {action} RETURNING {}",
                    ident(KEY),
                    returning(*table)
                ),
                params,
            ))
        }
    }
}

fn row_of(table: Table, row: &tokio_postgres::Row) -> Result<KeyedRow, AdapterError> {
    let bad = |e: tokio_postgres::Error| AdapterError::Protocol {
        what: WHAT,
        message: format!(
            "a row of {} does not have racelab's schema: {e}",
            table.as_str()
        ),
    };
    let key: String = row.try_get(0).map_err(bad)?;
    let mut columns = Row::new();
    for (i, (name, ty)) in table.columns().iter().enumerate() {
        let value = match ty {
            ColumnType::Int => row
                .try_get::<_, Option<i64>>(i + 1)
                .map_err(bad)?
                .map_or(Value::Null, Value::Int),
            ColumnType::Text => row
                .try_get::<_, Option<String>>(i + 1)
                .map_err(bad)?
                .map_or(Value::Null, Value::Text),
        };
        columns.insert((*name).to_string(), value);
    }
    Ok(KeyedRow { key, columns })
}

/// The DDL of one table in `schema`: `key text PRIMARY KEY` plus its declared columns
/// (`bigint` or `text`). Text compares byte-wise (`COLLATE "C"`), as the model's strings do.
fn table_ddl(schema: &str, table: Table) -> String {
    let cols: Vec<String> = table
        .columns()
        .iter()
        .map(|(c, t)| match t {
            ColumnType::Int => format!("{} bigint", ident(c)),
            ColumnType::Text => format!("{} text COLLATE \"C\"", ident(c)),
        })
        .collect();
    let mut all = vec![format!("{} text COLLATE \"C\" PRIMARY KEY", ident(KEY))];
    all.extend(cols);
    format!(
        "CREATE TABLE IF NOT EXISTS {}.{} ({});",
        ident(schema),
        ident(table.as_str()),
        all.join(", ")
    )
}

/// An arbitrary constant naming racelab's schema set-up lock (concurrent `CREATE ... IF NOT
/// EXISTS` can otherwise fail with a unique violation in the catalog).
const DDL_LOCK: i64 = 0x0072_6163_656c_6162;

impl PgSql {
    /// Runs each `INSERT` of a run's seed rows, failing on any answer but one row inserted.
    pub(crate) async fn insert_each(
        &mut self,
        ops: impl IntoIterator<Item = SqlOp>,
    ) -> Result<(), AdapterError> {
        for op in ops {
            match self.execute_sql(&op).await? {
                SqlReply::Affected(1) => {}
                other => {
                    return Err(AdapterError::Protocol {
                        what: "PostgreSQL",
                        message: format!("seeding {op} answered {other}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Connects to `url`, creates `schema` if absent, and works inside it from then on. A
    /// table is created (if absent) when a statement of the session first names it. `schema` must be `[a-z0-9_]+` (it is a name in SQL
    /// text; checked so that it can never carry SQL). Safe to call concurrently.
    pub async fn connect(url: &str, schema: &str) -> Result<PgSql, AdapterError> {
        let mut pg = PgSql::lazy(url, schema)?;
        let client = pg.client().await?;
        let setup = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({DDL_LOCK}); CREATE SCHEMA IF NOT EXISTS {}; \
             COMMIT;",
            ident(schema)
        );
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| conn_err(&e))?;
        Ok(pg)
    }

    /// A session that connects on its first operation, in a schema that must already exist
    /// (see [`PgSql::connect`]).
    pub fn lazy(url: &str, schema: &str) -> Result<PgSql, AdapterError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(AdapterError::InvalidInput(format!(
                "schema name {schema:?} must be 1 to 63 of [a-z0-9_]"
            )));
        }
        Ok(PgSql {
            url: url.to_string(),
            schema: schema.to_string(),
            client: None,
            in_tx: false,
            failed: false,
            lost_tx: false,
            interrupted: false,
            created: BTreeSet::new(),
        })
    }

    /// The schema this session works in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Whether the session has an open transaction (possibly a failed or lost one).
    pub fn in_transaction(&self) -> bool {
        self.in_tx || self.lost_tx
    }

    /// A new connection to the server, and the task that drives it (it ends when the client
    /// is dropped or the socket breaks; either way the client reports the failure).
    async fn connect_new(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), AdapterError> {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .map_err(|e| AdapterError::Unreachable {
                what: WHAT,
                url: self.url.clone(),
                source: Box::new(e),
            })?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, driver))
    }

    /// The live connection, made (with `search_path` set) if there is none. Never a new one
    /// under an open transaction: if the transaction's connection closed (it may close at
    /// any moment, for example while `ensure_table` awaits), the transaction is gone, and a
    /// statement run on a fresh connection would commit on its own. That is an error, and
    /// the session answers `LOST_TX` until `ROLLBACK` or `COMMIT`.
    async fn client(&mut self) -> Result<&tokio_postgres::Client, AdapterError> {
        if self
            .client
            .as_ref()
            .is_some_and(tokio_postgres::Client::is_closed)
        {
            let in_tx = self.in_tx;
            self.drop_connection();
            if in_tx {
                return Err(AdapterError::Connection {
                    what: WHAT,
                    message: "the connection of the open transaction closed; the transaction \
                              is gone"
                        .into(),
                });
            }
        }
        if self.client.is_none() {
            let (client, _driver) = self.connect_new().await?;
            let set = format!("SET search_path TO {}", ident(&self.schema));
            client
                .batch_execute(&set)
                .await
                .map_err(|e| AdapterError::Unreachable {
                    what: WHAT,
                    url: self.url.clone(),
                    source: Box::new(e),
                })?;
            self.client = Some(client);
        }
        // Invariant: set just above when it was `None`.
        self.client
            .as_ref()
            .ok_or_else(|| AdapterError::Connection {
                what: WHAT,
                message: "no connection".into(),
            })
    }

    /// Closes the connection. An open transaction is rolled back by the server; the session
    /// remembers it until `ROLLBACK`. A statement still running on the server is cancelled
    /// (best effort), so that a timed-out statement does not apply much later.
    fn drop_connection(&mut self) {
        if let Some(client) = self.client.take() {
            let cancel = client.cancel_token();
            tokio::spawn(async move {
                let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
            });
        }
        if self.in_tx {
            self.lost_tx = true;
        }
        self.in_tx = false;
        self.failed = false;
    }

    /// Ends any transaction (`ROLLBACK`) and deletes every row of every table of the schema
    /// (test and run set-up).
    pub async fn reset(&mut self) -> Result<(), AdapterError> {
        self.execute_sql(&SqlOp::Rollback).await?;
        let schema = self.schema.clone();
        let client = self.client().await?;
        let tables = client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
                &[&schema],
            )
            .await
            .map_err(|e| conn_err(&e))?;
        let mut sql = String::new();
        for row in tables {
            let name: String = row.try_get(0).map_err(|e| conn_err(&e))?;
            sql.push_str(&format!("DELETE FROM {}.{};", ident(&schema), ident(&name)));
        }
        client.batch_execute(&sql).await.map_err(|e| conn_err(&e))
    }

    /// Makes sure `table` exists in the schema (`CREATE TABLE IF NOT EXISTS`, under the
    /// set-up lock), once per session. Outside a transaction on the session's connection;
    /// inside one on a connection of its own, so that the table outlives the transaction.
    async fn ensure_table(&mut self, table: Table) -> Result<(), AdapterError> {
        if self.created.contains(&table) {
            return Ok(());
        }
        let setup = format!(
            "BEGIN; SELECT pg_advisory_xact_lock({DDL_LOCK}); {} COMMIT;",
            table_ddl(&self.schema, table)
        );
        if self.in_tx {
            let (client, driver) = self.connect_new().await?;
            let r = client.batch_execute(&setup).await;
            drop(client);
            let _ = driver.await;
            r.map_err(|e| conn_err(&e))?;
        } else {
            let client = self.client().await?;
            client
                .batch_execute(&setup)
                .await
                .map_err(|e| conn_err(&e))?;
        }
        self.created.insert(table);
        Ok(())
    }

    /// The server process id of this session's connection (to watch it in `pg_stat_activity`,
    /// for example to see that a statement waits for a lock).
    pub async fn backend_pid(&mut self) -> Result<i32, AdapterError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| conn_err(&e))?;
        row.try_get(0).map_err(|e| conn_err(&e))
    }

    /// Drops the schema and everything in it.
    pub async fn drop_schema(&mut self) -> Result<(), AdapterError> {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&self.schema));
        let client = self.client().await?;
        client.batch_execute(&sql).await.map_err(|e| conn_err(&e))
    }

    /// Executes one operation in this session.
    pub async fn execute_sql(&mut self, op: &SqlOp) -> Result<SqlReply, AdapterError> {
        if self.interrupted {
            // The previous operation's future was dropped mid-flight: its statement may still
            // run on that connection, so it is not reused.
            self.interrupted = false;
            self.drop_connection();
        }
        if self
            .client
            .as_ref()
            .is_some_and(tokio_postgres::Client::is_closed)
        {
            // Noticed before sending anything: inside a transaction, that transaction is
            // gone with its connection.
            self.drop_connection();
        }
        if self.lost_tx {
            return Ok(match op {
                SqlOp::Begin | SqlOp::Exec(_) => error(LOST_TX.to_string()),
                SqlOp::Commit => {
                    self.lost_tx = false;
                    SqlReply::RolledBack
                }
                SqlOp::Rollback => {
                    self.lost_tx = false;
                    SqlReply::Ok
                }
            });
        }
        self.client().await?;
        self.interrupted = true;
        let r = self.execute_connected(op).await;
        self.interrupted = false;
        if r.is_err() {
            self.drop_connection();
        }
        r
    }

    async fn execute_connected(&mut self, op: &SqlOp) -> Result<SqlReply, AdapterError> {
        match op {
            SqlOp::Begin => {
                let r = self.control("BEGIN ISOLATION LEVEL READ COMMITTED").await?;
                if r == SqlReply::Ok {
                    self.in_tx = true;
                }
                Ok(r)
            }
            SqlOp::Commit => {
                let (was_tx, was_failed) = (self.in_tx, self.failed);
                let r = self.control("COMMIT").await?;
                self.in_tx = false;
                self.failed = false;
                Ok(match r {
                    SqlReply::Ok if was_tx && was_failed => SqlReply::RolledBack,
                    SqlReply::Ok => SqlReply::Committed,
                    other => other,
                })
            }
            SqlOp::Rollback => {
                let r = self.control("ROLLBACK").await?;
                self.in_tx = false;
                self.failed = false;
                Ok(r)
            }
            SqlOp::Exec(stmt) => {
                let table = stmt.table();
                let (text, params) = match build(stmt) {
                    Ok(built) => built,
                    Err(reply) => return self.local_error(reply).await,
                };
                if !(self.in_tx && self.failed) {
                    self.ensure_table(table).await?;
                }
                let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                    params.iter().map(Param::typed).collect();
                let client = self.client().await?;
                match &**stmt {
                    SqlStmt::Insert { key, .. } => {
                        match client.execute_typed(&text, &typed).await {
                            Ok(n) => Ok(SqlReply::Affected(n)),
                            Err(e) => self.db_error(&e, Some(table), key),
                        }
                    }
                    _ => match client.query_typed(&text, &typed).await {
                        Ok(rows) => rows
                            .iter()
                            .map(|r| row_of(table, r))
                            .collect::<Result<Vec<_>, _>>()
                            .map(SqlReply::Rows),
                        Err(e) => self.db_error(&e, Some(table), ""),
                    },
                }
            }
        }
    }

    async fn control(&mut self, sql: &str) -> Result<SqlReply, AdapterError> {
        let client = self.client().await?;
        match client.batch_execute(sql).await {
            Ok(()) => Ok(SqlReply::Ok),
            Err(e) => self.db_error(&e, None, ""),
        }
    }

    /// A statement the model rejects is not sent. Inside a transaction it fails the
    /// transaction, as the server's own error would have, so the server is told to fail it
    /// too (with a constant statement that errors) and the two stay in step.
    async fn local_error(&mut self, reply: SqlReply) -> Result<SqlReply, AdapterError> {
        if self.in_tx {
            if self.failed {
                return Ok(error(
                    "25P02: current transaction is aborted, commands ignored until end of \
                     transaction block"
                        .into(),
                ));
            }
            self.failed = true;
            let client = self.client().await?;
            if let Err(e) = client.batch_execute("SELECT 1/0").await
                && e.as_db_error().is_none()
            {
                return Err(conn_err(&e));
            }
        }
        Ok(reply)
    }

    fn db_error(
        &mut self,
        e: &tokio_postgres::Error,
        table: Option<Table>,
        key: &str,
    ) -> Result<SqlReply, AdapterError> {
        let Some(db) = e.as_db_error() else {
            return Err(conn_err(e));
        };
        if self.in_tx {
            self.failed = true;
        }
        if *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && let Some(table) = table
        {
            return Ok(SqlReply::UniqueViolation {
                table,
                key: key.to_string(),
            });
        }
        Ok(error(format!("{}: {}", db.code().code(), db.message())))
    }
}

fn conn_err(e: &tokio_postgres::Error) -> AdapterError {
    AdapterError::Connection {
        what: WHAT,
        message: e.to_string(),
    }
}
