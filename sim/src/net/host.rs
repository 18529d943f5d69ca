//! Store hosts: the simulation's Redis, queue, SQL, upstream and push-balancer models served
//! over turmoil TCP.
//!
//! Each accepted connection is one client session and runs as its own task; requests on a
//! connection are answered one at a time. A SQL statement that must wait for a row lock waits
//! (without blocking other connections) until some transaction releases locks (by ending, or
//! by failing at an error, as in PostgreSQL), then runs again, exactly as in `sim::explore`; the
//! model's `deadlock_timeout` after a wait began (a new wait: another holder), the statement
//! runs PostgreSQL's deadlock check once, and is answered 40P01 if its wait closes a cycle.
//! A connection that closes rolls back its open transaction. Every executed
//! operation is recorded with the store-side time it was applied.
//!
//! The upstream host serves `sim::explore`'s [`UpstreamModel`]: a stream is read on the
//! connection that opened it (a read of it on another connection is answered `Closed`), a read
//! of a frame not yet produced waits at the host until the frame's production time (it is
//! applied then), or until a cancel of its stream (answered `Cancelled` at once), or until its
//! connection closes or breaks (applied `Closed`, never answered): the connection's streams
//! have lost their reader and keep generating to their end, as a provider's do. The push
//! balancer host serves `sim::explore`'s balancer; a push endpoint is a process incarnation
//! (carried by each request), and the crash of a process or its cut from the balancer is
//! told by the world ([`Stores::crashed`], [`Stores::push_cut`]), as in `sim::explore`.

use std::cell::RefCell;
use std::rc::Rc;

use racelab_core::{
    CallKind, Duration, ProcessId, PubSubOp, PubSubReply, PushOp, PushReply, Reply, StoreOp,
    StreamId, StreamReply, Timestamp,
};
use tokio::sync::Notify;

use super::wire::{Request, Response, read_frame, write_frame};
use crate::explore::models::{LostWrites, QueueModel, RedisModel, SessionId, SqlModel, SqlOutcome};
use crate::explore::{PushHub, StreamStep, UpstreamModel};

/// What a store host applied: the client, its operation id, when, and the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The client process' name.
    pub client: String,
    /// The client's operation id.
    pub op: u64,
    /// When the store applied it (simulated time since the start).
    pub at: Timestamp,
    /// The store's answer.
    pub reply: Reply,
    /// Whether its writes became durable at `at` (autocommit SQL, Redis and queue commands
    /// that wrote nothing).
    pub durable: bool,
    /// For a Redis command that wrote: the write count of its last write
    /// ([`RedisModel::writes`]); it is durable once the replica has it, unless one of
    /// [`Stores::lost`] covers it.
    pub redis_write: Option<u64>,
    /// For a `COMMIT`: the client's operation ids of the transaction's statements, which
    /// became durable at `at`.
    pub committed: Vec<u64>,
}

/// The models one world's store hosts share, and the record of what they applied.
#[derive(Debug)]
pub struct Stores {
    /// Redis' key space.
    pub redis: RedisModel,
    /// The queue (in Redis).
    pub queue: QueueModel,
    /// The SQL database.
    pub sql: SqlModel,
    /// The upstream endpoints and the streams they accepted (no endpoint scripted by
    /// default: set it to `UpstreamModel::new(script)`).
    pub upstream: UpstreamModel,
    /// The push connections' balancer.
    push: PushHub,
    /// Every applied operation, in order.
    pub applied: Vec<Applied>,
    /// The Redis writes each failover or restart lost before the replica had them.
    pub lost: Vec<(Timestamp, LostWrites)>,
    next_session: u64,
    /// Statements of open transactions, by session.
    open: std::collections::BTreeMap<SessionId, Vec<u64>>,
}

impl Stores {
    /// Fresh models.
    pub fn new(replication_lag: Duration, queue_lock: Duration) -> Stores {
        Stores {
            redis: RedisModel::new(replication_lag),
            queue: QueueModel::new(queue_lock),
            sql: SqlModel::new(),
            upstream: UpstreamModel::default(),
            push: PushHub::default(),
            applied: Vec::new(),
            lost: Vec::new(),
            next_session: 0,
            open: std::collections::BTreeMap::new(),
        }
    }

    /// Redis fails over at `now` (the replica is promoted); the writes it loses are recorded.
    pub fn redis_failover(&mut self, now: Timestamp) {
        if let Some(lost) = self.redis.failover(now) {
            self.lost.push((now, lost));
        }
    }

    /// Redis restarts at `now` without persistence; the unreplicated writes are recorded lost.
    pub fn redis_restart(&mut self, now: Timestamp) {
        if let Some(lost) = self.redis.restart(now) {
            self.lost.push((now, lost));
        }
    }

    /// When the Redis write numbered `write` was lost, if a fault lost it.
    pub fn lost_at(&self, write: u64) -> Option<Timestamp> {
        self.lost
            .iter()
            .find(|(_, l)| l.first <= write && write < l.first + l.count)
            .map(|(at, _)| *at)
    }

    /// The push balancer's mode: session persistence (`NetConfig::push_sticky`, as the
    /// explore world's balancer) or least connections alone (the default).
    ///
    /// [`NetConfig::push_sticky`]: crate::explore::NetConfig
    pub fn set_push_sticky(&mut self, sticky: bool) {
        self.push.set_sticky(sticky);
    }

    /// Process `process` (its index) crashed: its push connections close for both ends and
    /// it listens no more; its streams lose their reader and keep generating to their end.
    /// The caller wakes the waiting reads and receives (the hosts' `Notify`).
    pub fn crashed(&mut self, process: usize) {
        self.push.crashed(process);
        self.upstream.reader_gone(process);
    }

    /// Process `process` is cut off from the push balancer (`true`: its push connections
    /// close for both ends) or reachable again (`false`). The caller wakes the waiting
    /// receives.
    pub fn push_cut(&mut self, process: usize, cut: bool) {
        self.push.set_cut(process, cut);
    }

    /// How many SQL transactions are open (a world with one is not quiescent: a statement
    /// may still be waiting for its locks).
    pub fn open_transactions(&self) -> usize {
        self.open.len()
    }
}

/// Shared store state inside one (single-threaded) simulation.
pub type SharedStores = Rc<RefCell<Stores>>;

/// Simulated time since the simulation started.
pub fn sim_now() -> Timestamp {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    Timestamp::from_ms(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Serves the stores on `port` until the host is crashed. `kinds` selects what this host
/// answers: a request for another store gets an error reply.
pub async fn serve(
    port: u16,
    stores: SharedStores,
    kinds: StoreKinds,
    tx_done: Rc<Notify>,
) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let stores = stores.clone();
        let tx_done = tx_done.clone();
        tokio::task::spawn_local(async move {
            let session = {
                let mut s = stores.borrow_mut();
                s.next_session += 1;
                SessionId(s.next_session)
            };
            let mut streams = Vec::new();
            let _ = connection(stream, &stores, session, &mut streams, kinds, &tx_done).await;
            // The client is gone: PostgreSQL rolls back its transaction, Redis drops its
            // subscriptions, the streams it read lose their reader.
            let released = {
                let mut s = stores.borrow_mut();
                for stream in streams {
                    s.upstream.stream_reader_gone(stream);
                }
                s.redis.disconnect(session.0);
                s.open.remove(&session);
                let releases = s.sql.lock_releases();
                s.sql.disconnect(session);
                s.sql.lock_releases() != releases
            };
            if released {
                tx_done.notify_waiters();
            }
        });
    }
}

/// PostgreSQL's `idle_in_transaction_session_timeout` as the SQL host applies it. turmoil
/// drops the segments a partition cuts, FIN included, so without it a transaction whose client
/// gave up during a partition would keep its locks for the rest of the run (a real server
/// needs the same setting, or TCP keepalives, for a client host that vanishes).
pub const IDLE_IN_TRANSACTION: std::time::Duration = std::time::Duration::from_secs(60);

/// Which stores a host answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKinds {
    /// Redis commands and the queue.
    Redis,
    /// SQL.
    Sql,
    /// The upstream endpoints ([`StoreOp::Upstream`]).
    Upstream,
    /// The push connections' balancer ([`StoreOp::Push`]).
    Push,
}

/// What a request got from its store.
enum Executed {
    /// Answered (and recorded).
    Done {
        /// The answer.
        reply: Reply,
        /// Whether what waits on other connections must look again (a transaction released
        /// row locks, a message was published or pushed, a stream was cancelled).
        wake: bool,
        /// How much later than now the answer leaves (an upstream's response streaming, a
        /// slow endpoint).
        after: Duration,
    },
    /// It must wait: for a row lock or a message (`None`), or until a stream frame is
    /// produced at this time.
    Wait(Option<Timestamp>),
}

async fn connection(
    mut stream: turmoil::net::TcpStream,
    stores: &SharedStores,
    session: SessionId,
    streams: &mut Vec<StreamId>,
    kinds: StoreKinds,
    tx_done: &Notify,
) -> Result<(), super::wire::WireError> {
    loop {
        // A session idle inside a transaction is ended (and so rolled back) after
        // `IDLE_IN_TRANSACTION`: a client lost without a FIN must not hold row locks forever.
        let in_tx = stores.borrow().sql.in_transaction(session);
        let next = if in_tx {
            match tokio::time::timeout(IDLE_IN_TRANSACTION, read_frame(&mut stream)).await {
                Ok(next) => next?,
                Err(_) => return Ok(()),
            }
        } else {
            read_frame::<_, Request>(&mut stream).await?
        };
        let Some(req) = next else { break };
        // A pub/sub or push receive waits at most its own wait for a message.
        let deadline = match &req.body {
            StoreOp::PubSub(PubSubOp::Receive { wait })
            | StoreOp::Push(PushOp::Receive { wait }) => {
                Some(tokio::time::Instant::now() + std::time::Duration::from_millis(wait.as_ms()))
            }
            _ => None,
        };
        // The current wait: whom the statement waits for, and when its deadlock check is due
        // (`None` once it ran and found no cycle).
        let mut wait: Option<(SessionId, Option<tokio::time::Instant>)> = None;
        let reply = loop {
            // Register interest before trying, so a commit (or a publish) between the try
            // and the wait is not missed.
            let notified = tx_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match execute(stores, session, streams, kinds, &req) {
                Executed::Done { reply, wake, after } => {
                    if wake {
                        tx_done.notify_waiters();
                    }
                    if after > Duration::ZERO {
                        tokio::time::sleep(std::time::Duration::from_millis(after.as_ms())).await;
                    }
                    break reply;
                }
                Executed::Wait(Some(at)) => {
                    // A stream read waits for its frame, a cancel, or its connection's end.
                    let due = tokio::time::Instant::now()
                        + std::time::Duration::from_millis(at.saturating_since(sim_now()).as_ms());
                    tokio::select! {
                        biased;
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(due) => {}
                        // The client sends nothing while it waits for an answer: whatever
                        // comes is the connection's end (or a broken client).
                        _ = read_frame::<_, Request>(&mut stream) => {
                            {
                                let mut s = stores.borrow_mut();
                                for stream in streams.iter() {
                                    s.upstream.stream_reader_gone(*stream);
                                }
                            }
                            // Applied now, as `Closed`; nobody reads the answer.
                            let _ = execute(stores, session, streams, kinds, &req);
                            return Ok(());
                        }
                    }
                }
                Executed::Wait(None) if deadline.is_some() => {
                    let at = deadline.unwrap_or_else(tokio::time::Instant::now);
                    if tokio::time::timeout_at(at, notified).await.is_err() {
                        let nothing = match req.body {
                            StoreOp::Push(_) => Reply::Push(PushReply::NoMessage),
                            _ => Reply::PubSub(PubSubReply::NoMessage),
                        };
                        break record(stores, &req, nothing);
                    }
                }
                Executed::Wait(None) => {
                    let holder = stores.borrow().sql.waits_for(session);
                    if holder != wait.map(|(h, _)| h) {
                        let timeout = stores.borrow().sql.deadlock_timeout();
                        let due = tokio::time::Instant::now()
                            + std::time::Duration::from_millis(timeout.as_ms());
                        wait = holder.map(|h| (h, Some(due)));
                    }
                    let Some((holder, Some(due))) = wait else {
                        notified.await;
                        continue;
                    };
                    tokio::select! {
                        biased;
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(due) => {
                            wait = Some((holder, None));
                            if let Some(reply) = deadlock(stores, session, &req) {
                                // The victim's locks went at the error.
                                tx_done.notify_waiters();
                                break reply;
                            }
                            notified.await;
                        }
                    }
                }
            }
        };
        write_frame(&mut stream, &Response { op: req.op, reply }).await?;
    }
    Ok(())
}

/// Records a reply the host gives without executing anything (a receive whose wait ended).
fn record(stores: &SharedStores, req: &Request, reply: Reply) -> Reply {
    stores.borrow_mut().applied.push(Applied {
        client: req.client.clone(),
        op: req.op,
        at: sim_now(),
        reply: reply.clone(),
        durable: true,
        redis_write: None,
        committed: Vec::new(),
    });
    reply
}

/// The deadlock check of a waiting SQL statement: its 40P01 answer (recorded as applied) if
/// its wait closes a cycle, `None` otherwise.
fn deadlock(stores: &SharedStores, session: SessionId, req: &Request) -> Option<Reply> {
    let now = sim_now();
    let mut s = stores.borrow_mut();
    let reply = Reply::Sql(s.sql.check_deadlock(session)?);
    if let StoreOp::Sql(racelab_core::SqlOp::Exec(_)) = &req.body {
        s.open.entry(session).or_default().push(req.op);
    }
    s.applied.push(Applied {
        client: req.client.clone(),
        op: req.op,
        at: now,
        reply: reply.clone(),
        durable: false,
        redis_write: None,
        committed: Vec::new(),
    });
    Some(reply)
}

/// Runs one request on the connection `session` (whose open streams are `streams`): its
/// answer, or why it must wait (a SQL lock, a receive with nothing to receive, a stream frame
/// not yet produced).
fn execute(
    stores: &SharedStores,
    session: SessionId,
    streams: &mut Vec<StreamId>,
    kinds: StoreKinds,
    req: &Request,
) -> Executed {
    let now = sim_now();
    let mut s = stores.borrow_mut();
    let mut committed = Vec::new();
    let mut redis_write = None;
    let mut after = Duration::ZERO;
    // The process incarnation the request speaks for: a stream's reader, a push endpoint.
    let process = (usize::from(req.process.0), req.incarnation);
    let (reply, durable, released) = match (&req.body, kinds) {
        (StoreOp::Kv(op), StoreKinds::Redis) => {
            let before = s.redis.writes();
            let r = Reply::Kv(s.redis.execute(now, op));
            let wrote = s.redis.writes();
            redis_write = (wrote > before).then_some(wrote);
            // A publish may answer a receive waiting on another connection: wake them.
            let published = matches!(op, racelab_core::KvOp::Publish { .. });
            (r, redis_write.is_none(), published)
        }
        (StoreOp::PubSub(op), StoreKinds::Redis) => {
            // The connection is the subscriber (its session id names it).
            let reply = match op {
                PubSubOp::Subscribe { channels } => PubSubReply::Subscribed {
                    count: s.redis.subscribe(session.0, channels),
                },
                PubSubOp::Receive { .. } => match s.redis.next_message(session.0) {
                    None => PubSubReply::Disconnected,
                    Some(Some((channel, payload))) => PubSubReply::Message { channel, payload },
                    Some(None) => return Executed::Wait(None),
                },
            };
            (Reply::PubSub(reply), true, false)
        }
        (StoreOp::Queue(op), StoreKinds::Redis) => {
            let r = Reply::Queue(s.queue.execute(now, op));
            (r, true, false)
        }
        (StoreOp::Sql(op), StoreKinds::Sql) => {
            let in_tx = s.sql.in_transaction(session);
            let releases = s.sql.lock_releases();
            match s.sql.execute(session, op) {
                SqlOutcome::Blocked { .. } => return Executed::Wait(None),
                SqlOutcome::Done { reply, durable } => {
                    use racelab_core::SqlOp;
                    let released = s.sql.lock_releases() != releases;
                    match op {
                        SqlOp::Begin => {
                            s.open.entry(session).or_default();
                        }
                        SqlOp::Exec(_) if in_tx => s.open.entry(session).or_default().push(req.op),
                        SqlOp::Commit => {
                            let ops = s.open.remove(&session).unwrap_or_default();
                            if durable {
                                committed = ops;
                            }
                        }
                        SqlOp::Rollback => {
                            s.open.remove(&session);
                        }
                        SqlOp::Exec(_) => {}
                    }
                    (Reply::Sql(reply), durable && !in_tx, released)
                }
            }
        }
        (StoreOp::Upstream(call), StoreKinds::Upstream) if !call.kind.is_stream() => {
            let (reply, extra) = s.upstream.call(now, call);
            after = extra;
            (Reply::Upstream(reply), true, false)
        }
        (StoreOp::Upstream(call), StoreKinds::Upstream) => {
            let (reply, extra) = match call.kind {
                // A stream is read on the connection that opened it.
                CallKind::Next { stream } if !streams.contains(&stream) => {
                    (StreamReply::Closed, Duration::ZERO)
                }
                _ => match s.upstream.stream_call(now, process, call) {
                    StreamStep::Reply(reply, extra) => (reply, extra),
                    StreamStep::Wait(at) => return Executed::Wait(Some(at)),
                },
            };
            if let StreamReply::Opened { stream } = reply {
                streams.push(stream);
            }
            after = extra;
            // A cancel answers the reads waiting on its stream at once.
            let cancelled =
                matches!(call.kind, CallKind::Cancel { .. }) && reply == StreamReply::Cancelled;
            (Reply::Stream(reply), true, cancelled)
        }
        (StoreOp::Push(op), StoreKinds::Push) => {
            let pid = |i: usize| ProcessId(u16::try_from(i).unwrap_or(u16::MAX));
            let reply = match op {
                PushOp::Listen { service } => s.push.listen(process, service),
                PushOp::Connect { service } => s.push.connect(process, service, pid),
                PushOp::Send { conn, message } => s.push.send(process, *conn, message),
                PushOp::Close { conn } => s.push.close(process, *conn),
                PushOp::Receive { .. } => match s.push.next_event(process) {
                    Some(event) => event,
                    None => return Executed::Wait(None),
                },
            };
            // A connect, a send or a close may answer a receive waiting on another
            // connection.
            let sent = !matches!(op, PushOp::Listen { .. } | PushOp::Receive { .. });
            (Reply::Push(reply), true, sent)
        }
        (op, _) => {
            let msg = format!("this host does not serve {op}");
            (Reply::Kv(racelab_core::KvReply::Error(msg)), false, false)
        }
    };
    s.applied.push(Applied {
        client: req.client.clone(),
        op: req.op,
        at: now,
        reply: reply.clone(),
        durable,
        redis_write,
        committed,
    });
    Executed::Done {
        reply,
        wake: released,
        after,
    }
}
