//! The correct job FSM's durable outcomes (R-004-05, with R-004-04's rule that what a client
//! is told is durable first): one row per job in PostgreSQL, keyed by the job id, written
//! once. The Redis record may be lost by a failover or erased by a restart (this Redis keeps
//! nothing on disk); the row is not. Whoever is about to tell the client an outcome first
//! inserts it (`INSERT ... ON CONFLICT (key) DO NOTHING RETURNING *`): the insert that lands
//! first wins, and a loser, which gets no row back, reads the stored outcome (`SELECT`) and
//! tells that one instead of its own. The row is never updated or deleted, so the read
//! after a conflict always finds the winner's outcome.

use super::JobState;
use crate::ops::{ColumnType, KeyedRow, OnConflict, Reply, Row, SqlReply, SqlStmt, Table};
use crate::ops::{TableDef, Value};

static JOB_OUTCOMES_DEF: TableDef = TableDef {
    name: "job_outcomes",
    columns: &[("outcome", ColumnType::Text), ("writer", ColumnType::Text)],
};

/// One row per job (keyed by its id): the outcome told to its client, and who stored it
/// (process, job and outcome).
pub const JOB_OUTCOMES: Table = Table::declare(&JOB_OUTCOMES_DEF);

/// `INSERT INTO job_outcomes (key, outcome, writer) VALUES (job, outcome, writer) ON CONFLICT
/// (key) DO NOTHING RETURNING *`.
pub fn store_outcome(job: &str, outcome: JobState, writer: &str) -> SqlStmt {
    SqlStmt::Upsert {
        table: JOB_OUTCOMES,
        key: job.to_string(),
        row: Row::from([
            ("outcome".to_string(), Value::Text(outcome.as_str().into())),
            ("writer".to_string(), Value::Text(writer.to_string())),
        ]),
        on_conflict: OnConflict::DoNothing,
    }
}

/// `SELECT * FROM job_outcomes WHERE key = job`.
pub fn read_outcome(job: &str) -> SqlStmt {
    SqlStmt::Select {
        table: JOB_OUTCOMES,
        key: job.to_string(),
        for_update: false,
    }
}

/// What a store's or a read's reply says of the job's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stored {
    /// The row holds this outcome, stored by this writer.
    Outcome(JobState, String),
    /// No row came back: the insert conflicted (a row exists), or the read found none.
    None,
    /// No answer, an error, or a row that is not one of ours: ask again.
    Unknown,
}

/// Decodes the reply to [`store_outcome`] or [`read_outcome`].
pub(super) fn stored(reply: &Reply) -> Stored {
    let Reply::Sql(SqlReply::Rows(rows)) = reply else {
        return Stored::Unknown;
    };
    match rows.as_slice() {
        [] => Stored::None,
        [row] => outcome_of(row).map_or(Stored::Unknown, |(o, tx)| Stored::Outcome(o, tx)),
        _ => Stored::Unknown,
    }
}

fn outcome_of(row: &KeyedRow) -> Option<(JobState, String)> {
    let Some(Value::Text(outcome)) = row.columns.get("outcome") else {
        return None;
    };
    let outcome = JobState::parse(outcome).filter(|s| s.is_terminal())?;
    let writer = match row.columns.get("writer") {
        Some(Value::Text(w)) => w.clone(),
        _ => String::new(),
    };
    Some((outcome, writer))
}
