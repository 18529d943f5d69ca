//! The async driver: runs one sans-IO machine against a store client. Timeouts, retries and
//! cancellation live here, never in the machine.
//!
//! - Operations run one at a time, in the order the machine emits them (a machine's SQL
//!   statements share one session, so they must be ordered anyway).
//! - Each operation gets its store's timeout. An operation that certainly did not reach the
//!   server (no connection could be made) is retried with backoff until that deadline; any
//!   other failure, and the deadline itself, is reported to the machine as
//!   [`Reply::Timeout`]: the outcome is unknown, and only the protocol may decide what to do.
//! - Cancellation: the driver stops at its next await point once `stop` turns true (an
//!   operation in flight is abandoned; the clients reconnect before their next use, so an
//!   abandoned session never leaks into the next operation). An [`Observer`] may also crash
//!   the process right after any completion, which is how the real-server check kills
//!   workers between acquiring a lease and applying the effect.
//! - Time given to the machine is milliseconds since [`Clock`]'s start on tokio's clock, so
//!   the driver runs unchanged under a simulated clock, and every process of one run shares
//!   one time line (leases written by one worker are compared by another). Every `select!` is
//!   `biased;` so that a simulation replays from its seed.

use std::collections::VecDeque;
use std::future::Future;

use racelab_core::{ClockSkew, Machine, Note, Outgoing, Reply, StoreId, StoreOp, Timestamp};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::AdapterError;
use crate::postgres::PgSql;
use crate::queue::RedisQueue;
use crate::redis_kv::RedisKv;

/// Executes store operations. Implemented by [`Stores`] (real Redis and PostgreSQL) and, in
/// a simulation, by clients of the store models.
pub trait StoreClient {
    /// Executes one operation. `Err(`[`AdapterError::Unreachable`]`)` means it was certainly
    /// not sent (the driver may retry); any other `Err` means it may or may not have been
    /// applied. The future may be dropped at any await point (a timeout or a stop): the
    /// client must then not reuse the interrupted session.
    fn execute(&mut self, op: &StoreOp)
    -> impl Future<Output = Result<Reply, AdapterError>> + Send;
}

/// The driver's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// How long a Redis or queue operation may take, retries included.
    pub redis_timeout: std::time::Duration,
    /// How long a SQL statement may take, retries included.
    pub sql_timeout: std::time::Duration,
    /// How long an upstream call may take, retries included (a stream read: until its
    /// frame arrives).
    pub upstream_timeout: std::time::Duration,
    /// The first pause before retrying an operation that could not be sent (doubles up to
    /// [`DriverConfig::retry_backoff_max`]).
    pub retry_backoff: std::time::Duration,
    /// The longest pause between retries.
    pub retry_backoff_max: std::time::Duration,
    /// A simulated world's horizon on the shared time line: no timer due at or after it
    /// fires (the machine only finishes what is in flight). `None` for real runs.
    pub horizon: Option<Timestamp>,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            redis_timeout: std::time::Duration::from_secs(5),
            sql_timeout: std::time::Duration::from_secs(30),
            upstream_timeout: std::time::Duration::from_secs(10),
            retry_backoff: std::time::Duration::from_millis(10),
            retry_backoff_max: std::time::Duration::from_millis(500),
            horizon: None,
        }
    }
}

impl DriverConfig {
    /// The driver of a simulated or real run of `spec`: the world's store and upstream
    /// timeouts and its horizon, the default retries.
    pub fn of_world(spec: &racelab_sim::explore::WorldSpec) -> DriverConfig {
        let to_std = |d: racelab_core::Duration| std::time::Duration::from_millis(d.as_ms());
        DriverConfig {
            redis_timeout: to_std(spec.net.redis_timeout),
            sql_timeout: to_std(spec.net.sql_timeout),
            upstream_timeout: to_std(spec.net.upstream_timeout),
            horizon: spec.horizon,
            ..DriverConfig::default()
        }
    }
}

/// One time line for every process of a run: milliseconds since `start`, on tokio's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    start: Instant,
    /// The clock's error: what it reads drifts from the shared time line (simulated worlds).
    skew: ClockSkew,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start_now() -> Clock {
        Clock {
            start: Instant::now(),
            skew: ClockSkew::NONE,
        }
    }

    /// A clock whose zero is `start`.
    pub fn starting_at(start: Instant) -> Clock {
        Clock {
            start,
            skew: ClockSkew::NONE,
        }
    }

    /// This clock with an error: it reads `skew.read(t)` at time `t` of the time line, and
    /// its timers fire when it reads their time (a constant skew never reads backwards).
    pub fn with_skew(self, skew: ClockSkew) -> Clock {
        Clock { skew, ..self }
    }

    /// The time since the start, as this clock reads it.
    pub fn now(&self) -> Timestamp {
        self.skew.read(self.true_now())
    }

    /// The time on the shared time line at which this clock reads `local`.
    pub fn true_time_of(&self, local: Timestamp) -> Timestamp {
        self.skew.true_time_of(local)
    }

    /// The time since the start on the shared time line (what histories record).
    pub fn true_now(&self) -> Timestamp {
        Timestamp::from_ms(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The instant at which this clock reads `at`.
    pub fn instant(&self, at: Timestamp) -> Instant {
        let t = self.skew.true_time_of(at);
        self.start + std::time::Duration::from_millis(t.as_ms())
    }
}

/// How an operation ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The store answered.
    Reply(Reply),
    /// No answer before the deadline: the outcome is unknown.
    TimedOut,
    /// The operation failed around the store (a cut connection, or it could not be sent
    /// before the deadline): the outcome is unknown unless `sent` is false.
    Failed {
        /// Whether the request may have reached the server.
        sent: bool,
        /// What went wrong.
        message: String,
    },
}

impl Completion {
    /// What the machine is told: the reply, or [`Reply::Timeout`].
    pub fn reply(&self) -> Reply {
        match self {
            Completion::Reply(r) => r.clone(),
            Completion::TimedOut | Completion::Failed { .. } => Reply::Timeout,
        }
    }
}

/// What the observer wants after a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Crash the process now: the machine never sees this reply, the driver returns
    /// [`DriveEnd::Crashed`], and the caller drops the clients (closing their connections,
    /// which rolls back an open transaction).
    Crash,
}

/// Sees what the driver does; records histories and injects crashes. Every method has a
/// default that does nothing.
pub trait Observer {
    /// The driver is about to execute `op` (at `at`).
    fn invoked(&mut self, at: Timestamp, op: &Outgoing) {
        let _ = (at, op);
    }
    /// `op` completed (at `at`).
    fn completed(&mut self, at: Timestamp, op: &Outgoing, completion: &Completion) -> Control {
        let _ = (at, op, completion);
        Control::Continue
    }
    /// The machine reported an outcome.
    fn noted(&mut self, at: Timestamp, note: &Note) {
        let _ = (at, note);
    }
}

/// An observer that does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Why [`drive`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriveEnd {
    /// The machine is idle and wants no timer: it has nothing left to do.
    Idle,
    /// `stop` turned true.
    Stopped,
    /// The observer crashed the process.
    Crashed,
}

/// Runs `machine` from `handle_start` until it is idle with no timer, `stop` turns true (or
/// its sender is dropped), or the observer crashes it. Every operation goes to `client`.
pub async fn drive<M, C, O>(
    machine: &mut M,
    client: &mut C,
    config: &DriverConfig,
    clock: Clock,
    stop: &mut watch::Receiver<bool>,
    observer: &mut O,
) -> DriveEnd
where
    M: Machine,
    C: StoreClient,
    O: Observer,
{
    let mut pending: VecDeque<Outgoing> = VecDeque::new();
    machine.handle_start(clock.now());
    loop {
        // Drain in the machine's order: operations, then notes, then the timer.
        while let Some(out) = machine.poll_op() {
            pending.push_back(out);
        }
        // The observer records on the shared time line; the machine reads its own clock.
        while let Some(note) = machine.poll_note() {
            observer.noted(clock.true_now(), &note);
        }
        if *stop.borrow() {
            return DriveEnd::Stopped;
        }
        if let Some(out) = pending.pop_front() {
            observer.invoked(clock.true_now(), &out);
            let completion = tokio::select! {
                biased;
                () = stopped(stop) => return DriveEnd::Stopped,
                c = execute(client, &out.op, config) => c,
            };
            if observer.completed(clock.true_now(), &out, &completion) == Control::Crash {
                return DriveEnd::Crashed;
            }
            machine.handle_reply(clock.now(), out.id, completion.reply());
            continue;
        }
        let due = machine
            .poll_timeout()
            .filter(|at| config.horizon.is_none_or(|h| clock.true_time_of(*at) < h));
        let Some(at) = due else {
            if machine.is_idle() {
                return DriveEnd::Idle;
            }
            // A machine that is not idle waits for a reply or a timer; with neither it can
            // only be stopped.
            stopped(stop).await;
            return DriveEnd::Stopped;
        };
        tokio::select! {
            biased;
            () = stopped(stop) => return DriveEnd::Stopped,
            () = tokio::time::sleep_until(clock.instant(at)) => machine.handle_timeout(clock.now()),
        }
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can stop us any more, so stop now.
    let _ = stop.wait_for(|s| *s).await;
}

/// One operation with its deadline, retrying what certainly was not sent.
async fn execute<C: StoreClient>(
    client: &mut C,
    op: &StoreOp,
    config: &DriverConfig,
) -> Completion {
    let timeout = match op.store() {
        StoreId::Sql => config.sql_timeout,
        StoreId::Upstream => config.upstream_timeout,
        StoreId::Redis | StoreId::Local | StoreId::Push => config.redis_timeout,
    };
    let deadline = Instant::now() + timeout;
    let mut backoff = config.retry_backoff;
    loop {
        match tokio::time::timeout_at(deadline, client.execute(op)).await {
            Err(_) => return Completion::TimedOut,
            Ok(Ok(reply)) => return Completion::Reply(reply),
            Ok(Err(e @ AdapterError::Unreachable { .. })) => {
                if Instant::now() + backoff >= deadline {
                    return Completion::Failed {
                        sent: false,
                        message: e.to_string(),
                    };
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.retry_backoff_max);
            }
            Ok(Err(
                e @ (AdapterError::InvalidInput(_) | AdapterError::AmountOutOfRange { .. }),
            )) => {
                return Completion::Failed {
                    sent: false,
                    message: e.to_string(),
                };
            }
            Ok(Err(e)) => {
                return Completion::Failed {
                    sent: true,
                    message: e.to_string(),
                };
            }
        }
    }
}

/// The three real clients as one [`StoreClient`]: key-value operations go to `kv`, queue
/// operations to `queue`, SQL to `sql`. A missing client makes its operations fail with
/// [`AdapterError::InvalidInput`] (nothing is sent).
#[derive(Debug, Default)]
pub struct Stores {
    /// Redis commands and named scripts.
    pub kv: Option<RedisKv>,
    /// The queue.
    pub queue: Option<RedisQueue>,
    /// The SQL session.
    pub sql: Option<PgSql>,
    /// The subscriber connection ([`StoreOp::PubSub`]).
    pub pubsub: Option<crate::RedisPubSub>,
    /// The process's random stream, answering [`StoreOp::Random`] in-process (seed it
    /// with [`racelab_core::RandomStream::for_process`] to replay a simulated run's draws).
    pub random: Option<racelab_core::RandomStream>,
}

impl StoreClient for Stores {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        let missing = |what: &str| AdapterError::InvalidInput(format!("no {what} client for {op}"));
        match op {
            StoreOp::Kv(kv) => match &mut self.kv {
                Some(c) => c.execute_kv(kv).await.map(Reply::Kv),
                None => Err(missing("Redis")),
            },
            StoreOp::Queue(q) => match &mut self.queue {
                Some(c) => c.execute_queue(q).await.map(Reply::Queue),
                None => Err(missing("queue")),
            },
            StoreOp::Sql(s) => match &mut self.sql {
                Some(c) => c.execute_sql(s).await.map(Reply::Sql),
                None => Err(missing("SQL")),
            },
            // The proxy's in-process state and its upstream endpoints are not stores the
            // real-server clients reach: the shipped in-process structures live in
            // `crate::local`, and document 002's protocols never emit these.
            StoreOp::Local(_) => Err(missing("in-process state")),
            StoreOp::Upstream(_) => Err(missing("upstream HTTP")),
            StoreOp::PubSub(p) => match &mut self.pubsub {
                Some(c) => c.execute_pubsub(p).await.map(Reply::PubSub),
                None => Err(missing("Redis subscriber")),
            },
            // Push connections between processes exist only in the simulated worlds.
            StoreOp::Push(_) => Err(missing("push connection")),
            StoreOp::Random(draw) => match &mut self.random {
                Some(r) => Ok(Reply::Random(r.answer(draw))),
                None => Err(missing("random stream")),
            },
        }
    }
}
