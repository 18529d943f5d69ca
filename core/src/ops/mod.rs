//! The store-operation vocabulary. Races happen at the granularity of store operations, so
//! machines emit exactly these and nothing finer. One module per store:
//!
//! - [`KvOp`] (`kv`): the Redis commands the protocols use, plus [`ScriptName`]d atomic
//!   scripts whose one semantic definition lives there ([`ScriptName::run`], a pure function
//!   over a [`KvView`]); the adapters hold the matching Lua text.
//! - [`SqlOp`] (`sql`): statements named by intent ([`SqlStmt`]) inside explicit
//!   transactions. The semantics are PostgreSQL READ COMMITTED: row locks, a conditional
//!   `UPDATE` re-checked after the lock holder commits, unique violations, rollback undoing
//!   everything. The rules a statement must follow before it touches any row are
//!   [`SqlStmt::validate`]'s, the one copy the SQL model and the PostgreSQL adapter share.
//! - [`QueueOp`] (`queue`): an at-least-once job queue (Bull-like): enqueue with an optional
//!   dedup id, fetch with a job lock, ack, nack.
//! - [`UpstreamOp`] (`upstream`): a call to an upstream API endpoint: a one-shot request or
//!   probe, or one step of a streamed completion (open, read the next frame, cancel, ask for
//!   a request's usage).
//! - [`LocalBlock`] (`local`): a synchronous block on a process's own memory, whose type
//!   and memory a family defines ([`FamilyMemory`]).
//! - [`PubSubOp`] (`pubsub`): Redis pub/sub from the subscriber's connection (at most once);
//!   publishing is [`KvOp::Publish`].
//! - [`PushOp`] (`push`): connections between processes behind a load balancer (a
//!   WebSocket between a scheduler and a node), lost with either end.
//! - [`RandomOp`] (`random`): a draw from the process's own seeded random stream
//!   ([`RandomStream`]), recorded like every other operation.
//!
//! This module holds what spans the stores: [`StoreOp`] with its routing
//! ([`StoreOp::store`]), [`Reply`] and their rendering.

mod kv;
mod local;
mod pubsub;
mod push;
mod queue;
mod random;
mod sql;
mod upstream;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::StoreId;

pub use kv::{KvOp, KvReply, KvView, ScoreBound, ScriptName, SetCondition, WRONGTYPE};
pub use local::{
    FamilyMemory, ForeignBlock, LocalBlock, LocalMemory, LocalReply, LocalValue, NoMemory,
};
pub use pubsub::{PubSubOp, PubSubReply};
pub use push::{ConnId, PushOp, PushReply};
pub use queue::{Delivery, DeliveryId, JobFields, JobId, QueueOp, QueueReply};
pub use random::{RandomOp, RandomStream};
pub use sql::{
    Assign, CmpOp, ColumnType, Cond, Expr, InvalidStmt, KeyedRow, OnConflict, OutOfRange, Row,
    RowRef, ScanLock, SqlOp, SqlReply, SqlStmt, Table, TableDef, Value,
};
pub use upstream::{CallKind, RequestId, StreamId, StreamReply, UpstreamOp, UpstreamReply, Usage};

/// One operation a machine asks a store to perform.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StoreOp {
    /// A Redis command or script.
    Kv(KvOp),
    /// A SQL statement or transaction control.
    Sql(SqlOp),
    /// A queue operation.
    Queue(QueueOp),
    /// One synchronous block on a process's own memory: atomic with respect to the other
    /// tasks of the process, because it contains no `await`.
    Local(LocalBlock),
    /// A call to an upstream API endpoint.
    Upstream(UpstreamOp),
    /// A draw from the process's own random stream (synchronous, like a local block).
    Random(RandomOp),
    /// An operation on the process's Redis subscriber connection.
    PubSub(PubSubOp),
    /// An operation on the process's push connections to other processes.
    Push(PushOp),
}

impl StoreOp {
    /// The store the operation goes to: the one routing rule that the worlds, the adapters'
    /// driver and the reports share. The queue lives in Redis.
    pub fn store(&self) -> StoreId {
        match self {
            StoreOp::Kv(_) | StoreOp::Queue(_) | StoreOp::PubSub(_) => StoreId::Redis,
            StoreOp::Sql(_) => StoreId::Sql,
            StoreOp::Local(_) | StoreOp::Random(_) => StoreId::Local,
            StoreOp::Push(_) => StoreId::Push,
            StoreOp::Upstream(_) => StoreId::Upstream,
        }
    }
}

/// The store's answer to a [`StoreOp`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reply {
    /// Redis' answer.
    Kv(KvReply),
    /// The SQL database's answer.
    Sql(SqlReply),
    /// The queue's answer.
    Queue(QueueReply),
    /// The answer of a synchronous block on local memory.
    Local(LocalReply),
    /// An upstream endpoint's answer to a request or a probe.
    Upstream(UpstreamReply),
    /// The value a [`RandomOp`] drew.
    Random(u64),
    /// The answer on the subscriber connection.
    PubSub(PubSubReply),
    /// The answer on the push connections.
    Push(PushReply),
    /// The client gave up waiting (a timeout or a cut connection): the operation may or may
    /// not have been applied.
    Timeout,
    /// An upstream endpoint's answer to a streaming call (after `Timeout` so that the
    /// existing variants keep their hashes, and so every recorded trace hash).
    Stream(StreamReply),
}

impl Reply {
    /// Whether the reply, the answer to `op`, reports that the operation took effect: as
    /// [`Reply::is_success`], except that an `HSET` answering any count succeeded (Redis
    /// answers the number of fields it added; 0 means it only overwrote existing ones, which
    /// is still a write that took effect).
    pub fn is_success_of(&self, op: &StoreOp) -> bool {
        match (op, self) {
            (StoreOp::Kv(KvOp::HSet { .. }), Reply::Kv(KvReply::Int(n))) => *n >= 0,
            _ => self.is_success(),
        }
    }

    /// Whether the reply reports that the operation took effect: `OK`, a positive integer, a
    /// Redis array holding a value, non-empty pairs, a non-empty row set, a positive row
    /// count, a commit, an enqueue or a delivery. Without the operation an integer's meaning
    /// is unknown: where the operation is known, [`Reply::is_success_of`] is the definition.
    pub fn is_success(&self) -> bool {
        match self {
            Reply::Kv(KvReply::Ok) | Reply::Kv(KvReply::Bulk(_)) => true,
            Reply::Kv(KvReply::Int(n)) => *n > 0,
            Reply::Kv(KvReply::Nil) | Reply::Kv(KvReply::Error(_)) => false,
            Reply::Kv(KvReply::Array(items)) => items.iter().any(Option::is_some),
            Reply::Kv(KvReply::Pairs(pairs)) => !pairs.is_empty(),
            Reply::Sql(SqlReply::Rows(rows)) => !rows.is_empty(),
            Reply::Sql(SqlReply::Affected(n)) => *n > 0,
            Reply::Sql(SqlReply::Ok) | Reply::Sql(SqlReply::Committed) => true,
            Reply::Sql(_) => false,
            Reply::Queue(QueueReply::Enqueued { .. })
            | Reply::Queue(QueueReply::Acked)
            | Reply::Queue(QueueReply::Delivered(Some(_))) => true,
            Reply::Queue(_) => false,
            Reply::Local(_) | Reply::Random(_) => true,
            Reply::Push(reply) => !matches!(
                reply,
                PushReply::Refused | PushReply::Closed { .. } | PushReply::NoMessage
            ),
            Reply::PubSub(reply) => matches!(
                reply,
                PubSubReply::Subscribed { .. } | PubSubReply::Message { .. }
            ),
            Reply::Upstream(reply) => reply.status == 200,
            Reply::Stream(reply) => reply.is_success(),
            Reply::Timeout => false,
        }
    }
}

impl fmt::Display for StoreOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreOp::Kv(op) => op.fmt(f),
            StoreOp::Sql(op) => op.fmt(f),
            StoreOp::Queue(op) => op.fmt(f),
            StoreOp::Local(op) => op.fmt(f),
            StoreOp::Upstream(op) => op.fmt(f),
            StoreOp::Random(op) => op.fmt(f),
            StoreOp::PubSub(op) => op.fmt(f),
            StoreOp::Push(op) => op.fmt(f),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Kv(r) => r.fmt(f),
            Reply::Sql(r) => r.fmt(f),
            Reply::Queue(r) => r.fmt(f),
            Reply::Local(r) => r.result.fmt(f),
            Reply::Upstream(r) => write!(f, "HTTP {}", r.status),
            Reply::Random(v) => write!(f, "{v}"),
            Reply::PubSub(r) => r.fmt(f),
            Reply::Push(r) => r.fmt(f),
            Reply::Stream(r) => r.fmt(f),
            Reply::Timeout => write!(f, "timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpRecord;

    /// Every operation in flight and every record of a history is as large as the largest
    /// kind of operation: a statement is boxed so that an operation stays the size of a
    /// Redis command (the explore world moves and stores millions of them).
    #[test]
    fn an_operation_is_the_size_of_a_redis_command() {
        assert!(
            std::mem::size_of::<StoreOp>() <= 80,
            "{}",
            std::mem::size_of::<StoreOp>()
        );
        assert!(std::mem::size_of::<SqlOp>() <= 16);
        assert!(std::mem::size_of::<OpRecord>() <= 256);
    }
}
