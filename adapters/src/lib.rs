//! racelab-adapters: the store-operation vocabulary of `racelab-core` executed against real
//! Redis and PostgreSQL, the async driver that runs core machines over them, and the
//! real-server check of document 002's protocols.
//!
//! - [`StoreClient`]: the small interface the driver needs. [`RedisKv`] (commands, and the
//!   named scripts as Lua loaded once and called by SHA), [`RedisQueue`] (the at-least-once
//!   queue as atomic Lua scripts over Redis) and [`PgSql`] (parameterised statements,
//!   explicit transactions, each table created when a statement first names it) each execute their part of
//!   [`racelab_core::StoreOp`]; [`Stores`] bundles the three into one client.
//! - [`drive`]: runs one sans-IO machine: drains its operations, executes them with a timeout
//!   (retrying only what certainly did not reach the server), feeds replies and timers back,
//!   and stops on request. An [`Observer`] sees every invocation and completion (that is how
//!   histories are recorded) and may crash the process at any point.
//! - [`check_real`]: document 002's work-order protocol with many workers against real
//!   servers while faults are injected ([`FaultProxy`], [`OwnRedis`]), judged by the core's
//!   oracles. This is what `racelab check-real` runs.
//! - [`check_gateway`]: document 000's money protocols (idempotent billing, streamed
//!   settlement with holds, two-phase quota reservation) with many gateway workers against
//!   real servers, the LLM provider answered in process ([`InProcessProvider`]), judged by
//!   the billing and quota families' oracles. `racelab check-real --protocol gateway`.
//! - [`check_scheduler`]: document 004's scheduler (core's dispatcher and nodes, outcomes
//!   durable in PostgreSQL) with scheduler instances and worker nodes against real servers
//!   under Redis restarts, scheduler and node kills, node pauses past the lease and cut
//!   connections, judged by the scheduler family's oracles. `racelab check-real --protocol
//!   scheduler`.
//! - [`bench_gateway`]: `--bench`, the gateway's speed against a ceiling measured in the
//!   same run (trivial Lua by SHA, trivial one-statement transaction), Buggy and Correct.
//! - [`run_world`]: any simulated world's [`racelab_sim::explore::WorldSpec`] (a catalog
//!   race's processes) on real Redis and PostgreSQL with the same driver, no faults, recorded
//!   as a `Run` for the race's own judge; local blocks answered by [`HostMemories`], upstream
//!   calls by the [`InProcessProvider`]. `racelab run --world real` runs it.
//! - [`FaultPlan`]: every check's faults, each kind at least N times at planned points of
//!   the run's progress.
//! - [`Config`]: `RACELAB_REDIS_URL` / `RACELAB_PG_URL` with loopback defaults.
//!
//! Architecture invariant: the adapters own no protocol logic. What to do next is always the
//! machine's decision; the adapters only execute operations and report what happened.
//! Architecture invariant: keys and values travel only as `KEYS`/`ARGV` and as statement
//! parameters, never spliced into script or SQL text (table and column names come from the
//! families' [`racelab_core::Table`] declarations and are quoted, schema names are checked
//! `[a-z0-9_]+`).

#![forbid(unsafe_code)]

mod bench_gateway;
mod check;
mod check_gateway;
mod check_scheduler;
mod config;
mod driver;
mod fault_plan;
mod host_memory;
mod postgres;
mod provider;
mod proxy;
mod queue;
mod real_world;
mod recorder;
mod redis_conn;
mod redis_kv;
mod redis_pubsub;
mod redis_server;
mod run_env;

pub use bench_gateway::{
    BenchFigures, BenchOptions, BenchReport, OpCost, P99_RATIO_MAX, THROUGHPUT_SHARE_MIN,
    bench_gateway,
};
pub use check::{
    CheckRealOptions, CheckRealReport, RedisTarget, check_real, check_real_with_history,
};
pub use check_gateway::{
    GatewayOptions, GatewayReport, KindLatency, MoneyReport, check_gateway,
    check_gateway_with_history,
};
pub use check_scheduler::{
    SchedulerOptions, SchedulerReport, SchedulerTiming, TIME_SCALE, check_scheduler,
    check_scheduler_with_history, real_config, real_t_dead, recover_unknown,
};
pub use config::{Config, ServiceStatus, require_services, services};
pub use driver::{
    Clock, Completion, Control, DriveEnd, DriverConfig, NoObserver, Observer, StoreClient, Stores,
    drive,
};
pub use fault_plan::{FaultCounts, FaultKind, FaultOptions, FaultPlan};
pub use host_memory::HostMemories;
pub use postgres::PgSql;
pub use provider::{InProcessProvider, WithProvider};
pub use proxy::{FaultProxy, ProxyFaults};
pub use queue::{QueueClock, QueueStatus, RedisQueue, queue_lua};
pub use real_world::{WORLD_PROCESSES_MAX, WorldOptions, run_world};
pub use recorder::{ProcessRecorder, Recorder};
pub use redis_kv::{RedisKv, lua};
pub use redis_pubsub::RedisPubSub;
pub use redis_server::OwnRedis;

/// The proxy's in-process shared structures of documents 001 and 003 (endpoint health
/// table, failure queue) and the async code that uses them, over a sync facade that loom
/// checks: the `racelab-local` crate, kept apart so that it builds under `--cfg loom`.
pub use racelab_local as local;

/// What can go wrong talking to a store or setting up a run. Server answers (a unique
/// violation, a `WRONGTYPE`, a script's error reply) are replies, not errors; these are the
/// failures around them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// No connection could be established: the operation was certainly not sent, so it is
    /// safe to retry.
    #[error("cannot reach {what} at {url}: {source} (is the server running? check the URL)")]
    Unreachable {
        /// Which store.
        what: &'static str,
        /// Where.
        url: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection failed during an operation: it may or may not have been applied.
    #[error(
        "{what} connection failed during an operation (it may or may not have applied): {message}"
    )]
    Connection {
        /// Which store.
        what: &'static str,
        /// What the client library said.
        message: String,
    },
    /// The server answered something the adapter cannot interpret (a schema that is not
    /// racelab's, a script reply of the wrong shape).
    #[error("{what} answered unexpectedly: {message}")]
    Protocol {
        /// Which store.
        what: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The input cannot be sent as it is: a number out of the store's range, an invalid
    /// schema name, an operation for another store. Nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A quantity would overflow a 64-bit column; nothing was sent.
    #[error("quantity overflow: {what} = {value} is outside 1..={max}")]
    AmountOutOfRange {
        /// Which amount.
        what: String,
        /// Its value.
        value: i128,
        /// The largest accepted value.
        max: i64,
    },
    /// A real-server run could not carry out its fault plan (a kind injected fewer times
    /// than planned): its verdict would not cover what it promised.
    #[error("fault plan not carried out: {0}")]
    FaultPlan(String),
    /// Starting, stopping or talking to a local helper process (our own `redis-server`)
    /// failed.
    #[error("{what}: {message}")]
    Process {
        /// What was attempted.
        what: String,
        /// Why it failed.
        message: String,
    },
}
