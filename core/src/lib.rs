//! racelab-core: the sans-IO consistency core.
//!
//! Pure state machines, the store-operation vocabulary they speak, recorded histories and the
//! oracles that judge them. Nothing here does IO, reads a clock, spawns a thread or draws OS
//! randomness: time is a parameter, IO is an output (see [`Machine`]), and a tidy test keeps
//! it that way.
//!
//! - [`StoreOp`] / [`Reply`]: what machines ask of Redis ([`KvOp`], named [`ScriptName`]s),
//!   SQL ([`SqlOp`]) and the queue ([`QueueOp`]).
//! - [`History`]: every operation from invocation to completion, faults and notes.
//! - [`oracle`]: invariants over histories, each returning a [`Verdict`] with an explanation.
//! - [`workorder`]: document 002's work-order worker, terminal and consistency checker in
//!   their `Buggy`, `DocFix` and `Correct` variants (R-002-01 .. R-002-06), built from the
//!   [`lease`] and [`effects`] protocol pieces.
//! - [`scheduler`]: document 004's scheduler races (R-004-01, R-004-02): node registry,
//!   heartbeats and leases, job binding and results.
//! - [`billing`]: document 000's billing races (R-000-03, R-000-01, R-000-14, R-000-08): an
//!   LLM gateway's idempotent charges, streamed settlements, token counts and usage records, in their `Buggy`, `DocFix` and `Correct`
//!   variants, and their oracles.
//! - [`health`]: documents 001 and 003's endpoint health table and failure queue, the proxy's
//!   coroutines as machines, and their oracles (R-001-01 .. R-003-04).
//! - [`quota`]: document 000's quota counters: the gateway request's admission and billing
//!   and the correct protocol's reservation sweeper (R-000-02, R-000-05), the balance's
//!   Redis mirror with its reconciler (R-000-04) and its warm-up (R-000-09), with their
//!   oracles.
//! - [`access`]: document 000's access races: the per-instance permission cache and its
//!   invalidation (R-000-11), the API-key revocation blacklist (R-000-12), with the I-PERM,
//!   B1 and B2 oracles.
//! - [`context`]: document 000's request context (R-000-13): steps and plugins sharing a
//!   `WorkflowContext`, as a shared dict, typed namespaced fields, or owner-declared
//!   write-once cells, and the I-CTX oracle.
//! - [`session`]: document 000's conversation window under concurrent turns (R-000-06):
//!   uncoordinated appends, a Redis lock with a TTL, and an optimistic version CAS, with the
//!   I-CONV oracle.
//! - [`linear`]: a linearizability checker (Wing and Gong's search with memoisation) over any
//!   sequential specification, with a step bound and an explicit "unknown".
//! - [`route`]: document 000's endpoint router (R-000-15): ten policies side by side behind
//!   one hard health gate (document 001's health table), with per-attempt feedback.

#![forbid(unsafe_code)]

mod history;
mod ids;
mod machine;
mod ops;
pub mod oracle;
mod tag;
mod time;
mod variant;

pub mod access;
pub mod billing;
pub mod breaker;
pub mod context;
pub mod effects;
pub mod health;
pub mod lease;
pub mod linear;
pub mod quota;
pub mod route;
pub mod scheduler;
pub mod session;
pub mod workorder;

pub use history::{
    Fault, FaultRecord, History, NoteRecord, OpRecord, StoreId, TimelineKind, TimelineStep,
};
pub use ids::{
    EndpointId, Epoch, OpId, ProcessId, Quantity, SCAN_QUANTITY_MAX, ScanId, WorkOrderId,
};
pub use machine::{Machine, Outgoing};
pub use ops::{
    Assign, CallKind, CmpOp, ColumnType, Cond, ConnId, Delivery, DeliveryId, Expr, FamilyMemory,
    ForeignBlock, InvalidStmt, JobFields, JobId, KeyedRow, KvOp, KvReply, KvView, LocalBlock,
    LocalMemory, LocalReply, LocalValue, NoMemory, OnConflict, OutOfRange, PubSubOp, PubSubReply,
    PushOp, PushReply, QueueOp, QueueReply, RandomOp, RandomStream, Reply, RequestId, Row, RowRef,
    ScanLock, ScoreBound, ScriptName, SetCondition, SqlOp, SqlReply, SqlStmt, StoreOp, StreamId,
    StreamReply, Table, TableDef, UpstreamOp, UpstreamReply, Usage, Value, WRONGTYPE,
};
pub use oracle::{Property, PropertyKind, Verdict, Violation};
pub use tag::{FamilyNote, FamilyTag, Note, Plain, Tag, TagKind};
pub use time::{ClockSkew, Duration, Timestamp};
pub use variant::Variant;
