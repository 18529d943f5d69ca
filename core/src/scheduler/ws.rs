//! R-004-07: the client's WebSocket connection in scheduler memory, and the load balancer's
//! session persistence as the correctness mechanism. A client `C` connects through the
//! balancer ([`crate::PushOp`], service [`SERVICE`]) to a scheduler instance and submits jobs
//! over the connection; a [`WsNode`] runs them from the jobs table ([`WS_JOBS`]) and writes
//! each result there; the instance delivers the result over a connection.
//!
//! | variant | job id | the instance keeps | a reconnect to another instance | the balancer |
//! |---|---|---|---|---|
//! | `Buggy` | the instance's (`S1-<start>-<n>`) | the job and the connection it came on, in memory | `unknown`: C resubmits, a new job runs again; the first result reaches the old instance, which sends it on the connection it holds (closed) or has forgotten the job (restarted): dropped | least connections |
//! | `DocFix` | the same | the same | the same | sticky: C goes back to the instance it last reached while that one is reachable; a cut, a crash or a restart of it (or its removal) sends C elsewhere |
//! | `Correct` | the client's, stable (`C:J1`) | only which connection asked for which job | the resume is the submission again (`INSERT ... ON CONFLICT DO NOTHING`: one job, one execution); the instance delivers from the table | least connections |
//!
//! Correct writes results durably by job id before any delivery: the SQL model is durable
//! across every fault (a Redis write may be lost by a failover, so the results are not kept
//! there). An instance delivers a job's result at most once per connection, and only on a
//! connection that asked for the job and that it has not been told is closed; a client
//! resumes, on each new connection, exactly the jobs it has no result for, so each accepted
//! job's result reaches it once.
//!
//! Properties ([`one_execution`], [`delivered_once`], [`no_stale_connection`]):
//! - [`ONE_EXECUTION`]: each job the client submitted (by its own name for it) is executed
//!   at most once, however often the client reconnects;
//! - [`DELIVERED_ONCE`]: at the end, each job the client was told was accepted had its result
//!   received by the client exactly once;
//! - [`NO_STALE_CONNECTION`]: no instance sends a result on a connection it was already told
//!   is closed.
//!
//! Drain order of the three machines: one operation in flight at a time, the rest queued
//! in order; the periodic work runs from a timer (`poll_timeout`), so that after the
//! world's horizon the machines drain. Spurious `handle_timeout` calls do nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use crate::history::{History, OpRecord};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    CmpOp, ColumnType, Cond, ConnId, KeyedRow, OnConflict, PushOp, PushReply, Reply, Row, SqlOp,
    SqlReply, SqlStmt, StoreOp, Table, TableDef, Value,
};
use crate::oracle::{Property, Verdict, Violation};
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

static WS_JOBS_DEF: TableDef = TableDef {
    name: "ws_jobs",
    columns: &[
        ("client", ColumnType::Text),
        ("request", ColumnType::Text),
        ("owner", ColumnType::Text),
        ("state", ColumnType::Text),
        ("node", ColumnType::Text),
        ("result", ColumnType::Text),
    ],
};

/// The jobs, keyed by job id: the client and its name for the job (`request`), the instance
/// that accepted it (`owner`), `state` (`queued`, `running`, `done`), the node running it
/// and its result.
pub const WS_JOBS: Table = Table::declare(&WS_JOBS_DEF);

/// The service the scheduler instances listen for behind the balancer.
pub const SERVICE: &str = "sched-ws";

/// I-JOB: one execution per job.
pub const ONE_EXECUTION: Property = Property::always(
    "I-JOB-one-execution",
    "each job a client submitted (by its own name for it) is executed at most once, however \
     often the client reconnects and resubmits",
);

/// I-JOB: every accepted job's result reaches the client once.
pub const DELIVERED_ONCE: Property = Property::eventually(
    "I-JOB-delivered-once",
    "each job a client was told was accepted had its result received by the client exactly \
     once by the end of the run",
);

/// Results never go to a stale connection.
pub const NO_STALE_CONNECTION: Property = Property::always(
    "I-JOB-no-stale-connection",
    "no scheduler instance sends a job's result on a connection it was already told is closed",
);

/// The client reconnected and reached another instance than before (the race's window).
pub const MOVED_INSTANCE: Property = Property::sometimes(
    "moved-instance",
    "a client reconnected and the balancer sent it to another instance than before",
);

/// A resubmission or resume resolved to the existing job (the protection fired).
pub const RESUBMIT_DEDUPED: Property = Property::protection(
    "resubmit-deduped",
    "a resubmission or resume carrying the client's job id found the job already there and \
     started nothing new",
);

/// A result reached the client on another connection than the one the job was accepted on.
pub const RESULT_REPLAYED: Property = Property::sometimes(
    "result-replayed",
    "a result reached the client on a later connection than the one its job was accepted on",
);

/// How job ownership works (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WsMode {
    /// Jobs and connections in the instance's memory; instance-made job ids.
    InMemory,
    /// Client-supplied job ids, results in [`WS_JOBS`], replay on any instance.
    Durable,
}

impl WsMode {
    /// The variant's: in memory (Buggy, DocFix: the document keeps the code and adds
    /// session persistence at the balancer) or durable (Correct).
    pub fn of(variant: Variant) -> WsMode {
        match variant {
            Variant::Buggy | Variant::DocFix => WsMode::InMemory,
            Variant::Correct => WsMode::Durable,
        }
    }
}

/// The operations' tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WsTag {
    /// An instance listens for [`SERVICE`].
    Listen,
    /// A client connects.
    Connect,
    /// A client submits a job.
    Submit {
        /// The client's name for the job.
        request: String,
    },
    /// A client resumes a job on a new connection.
    Resume {
        /// The client's name for the job.
        request: String,
        /// The job id it was accepted under.
        job: String,
    },
    /// A wait for the next event on the process's connections.
    Receive,
    /// A client closes its connection.
    Close,
    /// An instance answers a client (accepted, unknown, rejected).
    Answer {
        /// The client's name for the job.
        request: String,
    },
    /// An instance sends a job's result to a client.
    Deliver {
        /// The client.
        client: String,
        /// The client's name for the job.
        request: String,
        /// The job id.
        job: String,
        /// The connection.
        conn: ConnId,
    },
    /// An instance records a job (an insert, or Correct's insert-if-absent).
    Record {
        /// The job id.
        job: String,
    },
    /// An instance reads the results of its jobs.
    Poll,
    /// The node looks for a job.
    Scan,
    /// The node claims a job.
    Claim {
        /// The job id.
        job: String,
    },
    /// The node writes a job's result.
    Finish {
        /// The job id.
        job: String,
    },
}

impl WsTag {
    /// [`WsTag::Listen`].
    pub const LISTEN: TagKind = TagKind::new("ws-listen");
    /// [`WsTag::Connect`].
    pub const CONNECT: TagKind = TagKind::new("ws-connect");
    /// [`WsTag::Submit`].
    pub const SUBMIT: TagKind = TagKind::new("ws-submit");
    /// [`WsTag::Resume`].
    pub const RESUME: TagKind = TagKind::new("ws-resume");
    /// [`WsTag::Receive`].
    pub const RECEIVE: TagKind = TagKind::new("ws-receive");
    /// [`WsTag::Close`].
    pub const CLOSE: TagKind = TagKind::new("ws-close");
    /// [`WsTag::Answer`].
    pub const ANSWER: TagKind = TagKind::new("ws-answer");
    /// [`WsTag::Deliver`].
    pub const DELIVER: TagKind = TagKind::new("ws-deliver");
    /// [`WsTag::Record`].
    pub const RECORD: TagKind = TagKind::new("ws-record");
    /// [`WsTag::Poll`].
    pub const POLL: TagKind = TagKind::new("ws-poll");
    /// [`WsTag::Scan`].
    pub const SCAN: TagKind = TagKind::new("ws-scan");
    /// [`WsTag::Claim`].
    pub const CLAIM: TagKind = TagKind::new("ws-claim");
    /// [`WsTag::Finish`].
    pub const FINISH: TagKind = TagKind::new("ws-finish");
}

impl FamilyTag for WsTag {
    fn kind(&self) -> TagKind {
        match self {
            WsTag::Listen => WsTag::LISTEN,
            WsTag::Connect => WsTag::CONNECT,
            WsTag::Submit { .. } => WsTag::SUBMIT,
            WsTag::Resume { .. } => WsTag::RESUME,
            WsTag::Receive => WsTag::RECEIVE,
            WsTag::Close => WsTag::CLOSE,
            WsTag::Answer { .. } => WsTag::ANSWER,
            WsTag::Deliver { .. } => WsTag::DELIVER,
            WsTag::Record { .. } => WsTag::RECORD,
            WsTag::Poll => WsTag::POLL,
            WsTag::Scan => WsTag::SCAN,
            WsTag::Claim { .. } => WsTag::CLAIM,
            WsTag::Finish { .. } => WsTag::FINISH,
        }
    }
}

/// What the processes report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WsNote {
    /// A client was told its job was accepted.
    Accepted {
        /// The client.
        client: String,
        /// Its name for the job.
        request: String,
        /// The job id.
        job: String,
        /// The connection it was told on.
        conn: ConnId,
    },
    /// A client received a job's result.
    Received {
        /// The client.
        client: String,
        /// Its name for the job.
        request: String,
        /// The job id.
        job: String,
        /// The connection it came on.
        conn: ConnId,
    },
    /// The node started executing a job.
    Executed {
        /// The client.
        client: String,
        /// The client's name for the job.
        request: String,
        /// The job id.
        job: String,
    },
    /// An instance's result had no open connection to go to: dropped.
    Dropped {
        /// The job id.
        job: String,
        /// The connection it was sent on.
        conn: ConnId,
    },
    /// An instance did not know a resumed job.
    Unknown {
        /// The job id.
        job: String,
    },
}

impl FamilyNote for WsNote {
    fn alarm(&self) -> bool {
        matches!(self, WsNote::Dropped { .. })
    }
}

impl fmt::Display for WsNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsNote::Accepted {
                client,
                request,
                job,
                conn,
            } => write!(f, "{client}'s {request} accepted as {job} on {conn}"),
            WsNote::Received {
                client,
                request,
                job,
                conn,
            } => write!(
                f,
                "{client} received the result of {request} ({job}) on {conn}"
            ),
            WsNote::Executed {
                client,
                request,
                job,
            } => write!(f, "executes {job} ({client}'s {request})"),
            WsNote::Dropped { job, conn } => {
                write!(f, "the result of {job} dropped: {conn} is closed")
            }
            WsNote::Unknown { job } => write!(f, "does not know {job}"),
        }
    }
}

/// The periodic tick of every machine.
const TICK: Duration = Duration::from_ms(200);
/// How long a receive waits for an event (under the driver's timeout).
const RECEIVE_WAIT: Duration = Duration::from_ms(100);
/// Jobs a client submits at most.
pub const CLIENT_JOBS_MAX: usize = 16;

/// One operation in flight and a queue: the shared plumbing of the three machines.
#[derive(Debug)]
struct Pipe<P> {
    queue: VecDeque<(StoreOp, Tag, P)>,
    in_flight: Option<(OpId, P)>,
    next_id: u64,
    timer: Option<Timestamp>,
    notes: VecDeque<Note>,
}

impl<P> Default for Pipe<P> {
    fn default() -> Pipe<P> {
        Pipe {
            queue: VecDeque::new(),
            in_flight: None,
            next_id: 0,
            timer: None,
            notes: VecDeque::new(),
        }
    }
}

impl<P: Clone> Pipe<P> {
    fn push(&mut self, op: StoreOp, tag: WsTag, purpose: P) {
        self.queue.push_back((op, Tag::new(tag), purpose));
    }

    fn poll(&mut self) -> Option<Outgoing> {
        if self.in_flight.is_some() {
            return None;
        }
        let (op, tag, purpose) = self.queue.pop_front()?;
        self.next_id += 1;
        let id = OpId(self.next_id);
        self.in_flight = Some((id, purpose));
        Some(Outgoing { id, op, tag })
    }

    /// The purpose of the reply to `op`, if it is the one in flight.
    fn settle(&mut self, op: OpId) -> Option<P> {
        match self.in_flight.take() {
            Some((id, p)) if id == op => Some(p),
            other => {
                self.in_flight = other;
                None
            }
        }
    }

    fn idle(&self) -> bool {
        self.in_flight.is_none() && self.queue.is_empty()
    }

    /// Whether the timer is due at `now` (and clears it then).
    fn due(&mut self, now: Timestamp) -> bool {
        if self.timer.is_some_and(|t| t <= now) {
            self.timer = None;
            true
        } else {
            false
        }
    }

    /// Asks for a tick at `at` unless work is queued or a tick is already asked for.
    fn later(&mut self, at: Timestamp) {
        if self.queue.is_empty() && self.in_flight.is_none() && self.timer.is_none() {
            self.timer = Some(at);
        }
    }

    fn note(&mut self, note: WsNote) {
        self.notes.push_back(Note::new(note));
    }
}

fn push(op: PushOp) -> StoreOp {
    StoreOp::Push(op)
}

fn receive() -> StoreOp {
    push(PushOp::Receive { wait: RECEIVE_WAIT })
}

fn send(conn: ConnId, message: String) -> StoreOp {
    push(PushOp::Send { conn, message })
}

fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}

fn col_text<'a>(row: &'a KeyedRow, column: &str) -> &'a str {
    match row.columns.get(column) {
        Some(Value::Text(t)) => t,
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// The client

#[derive(Clone, Debug, PartialEq, Eq)]
enum JobState {
    /// Not sent yet (or to be sent again).
    Pending,
    /// Sent, no answer yet.
    Submitted,
    /// Accepted under this job id.
    Accepted(String),
    /// Its result arrived.
    Done,
}

#[derive(Clone, Debug)]
struct ClientJob {
    request: String,
    at: Timestamp,
    state: JobState,
}

#[derive(Clone, Debug)]
enum ClientStep {
    Connect,
    Send,
    Receive,
    Close,
}

/// A client: connects through the balancer, submits its jobs at their times, resumes its
/// accepted jobs on every new connection, and resubmits what was never accepted or what the
/// instance does not know. It closes its connection once every job's result arrived.
#[derive(Debug)]
pub struct WsClient {
    name: String,
    jobs: Vec<ClientJob>,
    conn: Option<ConnId>,
    pipe: Pipe<ClientStep>,
}

impl WsClient {
    /// Client `name` submitting `jobs` (its name for each job, and when), at most
    /// [`CLIENT_JOBS_MAX`] of them (the rest are ignored).
    pub fn new(name: &str, jobs: &[(String, Timestamp)]) -> WsClient {
        WsClient {
            name: name.into(),
            jobs: jobs
                .iter()
                .take(CLIENT_JOBS_MAX)
                .map(|(request, at)| ClientJob {
                    request: request.clone(),
                    at: *at,
                    state: JobState::Pending,
                })
                .collect(),
            conn: None,
            pipe: Pipe::default(),
        }
    }

    /// The stable job id the client supplies (Correct's instances use it).
    pub fn job_id(client: &str, request: &str) -> String {
        format!("{client}:{request}")
    }

    fn step(&mut self, now: Timestamp) {
        if !self.pipe.idle() {
            return;
        }
        if self.jobs.iter().all(|j| j.state == JobState::Done) {
            if let Some(conn) = self.conn.take() {
                self.pipe.push(
                    push(PushOp::Close { conn }),
                    WsTag::Close,
                    ClientStep::Close,
                );
            }
            return;
        }
        let Some(conn) = self.conn else {
            self.pipe.push(
                push(PushOp::Connect {
                    service: SERVICE.into(),
                }),
                WsTag::Connect,
                ClientStep::Connect,
            );
            return;
        };
        for i in 0..self.jobs.len() {
            if self.jobs[i].state == JobState::Pending && self.jobs[i].at <= now {
                self.submit(conn, i);
            }
        }
        self.pipe
            .push(receive(), WsTag::Receive, ClientStep::Receive);
    }

    fn submit(&mut self, conn: ConnId, i: usize) {
        let request = self.jobs[i].request.clone();
        let id = WsClient::job_id(&self.name, &request);
        self.jobs[i].state = JobState::Submitted;
        self.pipe.push(
            send(conn, format!("submit {} {request} {id}", self.name)),
            WsTag::Submit { request },
            ClientStep::Send,
        );
    }

    /// A new connection: resubmit what was never answered, resume what was accepted.
    fn connected(&mut self, conn: ConnId) {
        self.conn = Some(conn);
        for i in 0..self.jobs.len() {
            match self.jobs[i].state.clone() {
                JobState::Submitted => self.submit(conn, i),
                JobState::Accepted(_) => self.resume(conn, i),
                JobState::Pending | JobState::Done => {}
            }
        }
    }

    /// Resumes job `i` if it was accepted and has no result yet.
    fn resume(&mut self, conn: ConnId, i: usize) {
        let JobState::Accepted(job) = self.jobs[i].state.clone() else {
            return;
        };
        let request = self.jobs[i].request.clone();
        self.pipe.push(
            send(conn, format!("resume {} {request} {job}", self.name)),
            WsTag::Resume { request, job },
            ClientStep::Send,
        );
    }

    fn lost(&mut self, now: Timestamp) {
        self.conn = None;
        self.pipe.queue.clear();
        self.pipe.timer = Some(now + TICK);
    }

    fn message(&mut self, conn: ConnId, payload: &str) {
        let words: Vec<&str> = payload.split(' ').collect();
        let find = |jobs: &[ClientJob], r: &str| jobs.iter().position(|j| j.request == r);
        match words.as_slice() {
            ["accepted", request, job] => {
                if let Some(i) = find(&self.jobs, request)
                    && self.jobs[i].state == JobState::Submitted
                {
                    self.jobs[i].state = JobState::Accepted(job.to_string());
                    self.pipe.note(WsNote::Accepted {
                        client: self.name.clone(),
                        request: request.to_string(),
                        job: job.to_string(),
                        conn,
                    });
                }
            }
            ["unknown", request] => {
                if let Some(i) = find(&self.jobs, request)
                    && matches!(self.jobs[i].state, JobState::Accepted(_))
                {
                    self.submit(conn, i);
                }
            }
            ["rejected", request] => match find(&self.jobs, request) {
                Some(i) if self.jobs[i].state == JobState::Submitted => {
                    self.jobs[i].state = JobState::Pending;
                }
                // A resume the instance could not record: resume again.
                Some(i) => self.resume(conn, i),
                None => {}
            },
            ["result", request, job, _value] => {
                if let Some(i) = find(&self.jobs, request) {
                    self.jobs[i].state = JobState::Done;
                }
                self.pipe.note(WsNote::Received {
                    client: self.name.clone(),
                    request: request.to_string(),
                    job: job.to_string(),
                    conn,
                });
            }
            _ => {}
        }
    }
}

impl Machine for WsClient {
    fn handle_start(&mut self, now: Timestamp) {
        self.pipe.timer = Some(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let Some(step) = self.pipe.settle(op) else {
            return;
        };
        let reply = match reply {
            Reply::Push(r) => Some(r),
            _ => None,
        };
        match (step, reply) {
            (ClientStep::Connect, Some(PushReply::Connected { conn, .. })) => {
                self.connected(conn);
            }
            (ClientStep::Connect, _) => self.pipe.timer = Some(now + TICK),
            (ClientStep::Send, Some(PushReply::Sent)) | (ClientStep::Close, _) => {}
            (ClientStep::Send, _) => self.lost(now),
            (ClientStep::Receive, Some(PushReply::Message { conn, payload })) => {
                if Some(conn) == self.conn {
                    self.message(conn, &payload);
                }
            }
            (ClientStep::Receive, Some(PushReply::Closed { conn })) => {
                if Some(conn) == self.conn {
                    self.lost(now);
                }
            }
            (ClientStep::Receive, Some(PushReply::NoMessage)) => {
                self.pipe.timer = Some(now + TICK);
            }
            (ClientStep::Receive, Some(_)) => {}
            (ClientStep::Receive, None) => {
                // The receive timed out: the connection can no longer be trusted.
                if let Some(conn) = self.conn {
                    self.lost(now);
                    self.pipe.queue.push_back((
                        push(PushOp::Close { conn }),
                        Tag::new(WsTag::Close),
                        ClientStep::Close,
                    ));
                }
            }
        }
        if self.pipe.idle() && self.pipe.timer.is_none() {
            self.step(now);
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.pipe.due(now) {
            self.step(now);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.pipe.poll()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.pipe.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.pipe.timer
    }

    fn is_idle(&self) -> bool {
        // A tick asked for is work to come: the world's horizon ends the run.
        self.pipe.idle() && self.pipe.timer.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// The scheduler instance

#[derive(Clone, Debug)]
enum SchedStep {
    Listen,
    Receive,
    Answer,
    Deliver { job: String, conn: ConnId },
    Record(Pending),
    Poll,
}

/// A job being recorded for a client's connection.
#[derive(Clone, Debug)]
struct Pending {
    job: String,
    client: String,
    request: String,
    conn: ConnId,
}

/// A job the in-memory instance holds, with the connection it answers on.
#[derive(Clone, Debug)]
struct MemJob {
    client: String,
    request: String,
    conn: ConnId,
}

/// A scheduler instance: listens for [`SERVICE`], records the jobs clients submit in
/// [`WS_JOBS`], and delivers their results from there (see the module's table for what it
/// keeps in memory per mode).
#[derive(Debug)]
pub struct WsScheduler {
    name: String,
    mode: WsMode,
    started_ms: u64,
    seq: u64,
    /// Connections it has not been told are closed.
    open: BTreeSet<ConnId>,
    /// In memory: its jobs and the connection each answers on.
    jobs: BTreeMap<String, MemJob>,
    /// Durable: per open connection, its client and the jobs it waits for.
    watch: BTreeMap<ConnId, (String, BTreeSet<String>)>,
    pipe: Pipe<SchedStep>,
}

impl WsScheduler {
    /// Instance `name` in `mode`.
    pub fn new(name: &str, mode: WsMode) -> WsScheduler {
        WsScheduler {
            name: name.into(),
            mode,
            started_ms: 0,
            seq: 0,
            open: BTreeSet::new(),
            jobs: BTreeMap::new(),
            watch: BTreeMap::new(),
            pipe: Pipe::default(),
        }
    }

    fn answer(&mut self, conn: ConnId, request: &str, message: String) {
        self.pipe.push(
            send(conn, message),
            WsTag::Answer {
                request: request.into(),
            },
            SchedStep::Answer,
        );
    }

    fn record(&mut self, p: Pending) {
        let row = Row::from([
            ("client".to_string(), text(&p.client)),
            ("request".to_string(), text(&p.request)),
            ("owner".to_string(), text(&self.name)),
            ("state".to_string(), text("queued")),
        ]);
        let stmt = match self.mode {
            WsMode::InMemory => SqlStmt::Insert {
                table: WS_JOBS,
                key: p.job.clone(),
                row,
            },
            WsMode::Durable => SqlStmt::Upsert {
                table: WS_JOBS,
                key: p.job.clone(),
                row,
                on_conflict: OnConflict::DoNothing,
            },
        };
        self.pipe.push(
            StoreOp::Sql(SqlOp::exec(stmt)),
            WsTag::Record { job: p.job.clone() },
            SchedStep::Record(p),
        );
    }

    fn message(&mut self, conn: ConnId, payload: &str) {
        let words: Vec<&str> = payload.split(' ').collect();
        match (self.mode, words.as_slice()) {
            (WsMode::InMemory, ["submit", client, request, _]) => {
                self.seq += 1;
                let job = format!("{}-{}-{}", self.name, self.started_ms, self.seq);
                self.record(Pending {
                    job,
                    client: client.to_string(),
                    request: request.to_string(),
                    conn,
                });
            }
            (WsMode::InMemory, ["resume", _, request, job]) => match self.jobs.get_mut(*job) {
                Some(j) => j.conn = conn,
                None => {
                    self.pipe.note(WsNote::Unknown {
                        job: job.to_string(),
                    });
                    self.answer(conn, request, format!("unknown {request}"));
                }
            },
            (WsMode::Durable, ["submit", client, request, job])
            | (WsMode::Durable, ["resume", client, request, job]) => {
                self.record(Pending {
                    job: job.to_string(),
                    client: client.to_string(),
                    request: request.to_string(),
                    conn,
                });
            }
            _ => {}
        }
    }

    fn recorded(&mut self, p: Pending, reply: Reply) {
        let ok = match (self.mode, &reply) {
            (WsMode::InMemory, Reply::Sql(SqlReply::Affected(1))) => {
                self.jobs.insert(
                    p.job.clone(),
                    MemJob {
                        client: p.client.clone(),
                        request: p.request.clone(),
                        conn: p.conn,
                    },
                );
                true
            }
            (WsMode::Durable, Reply::Sql(SqlReply::Rows(_))) => {
                if let Some((_, jobs)) = self.watch.get_mut(&p.conn) {
                    jobs.insert(p.job.clone());
                }
                true
            }
            _ => false,
        };
        let message = if ok {
            format!("accepted {} {}", p.request, p.job)
        } else {
            format!("rejected {}", p.request)
        };
        self.answer(p.conn, &p.request, message);
    }

    fn poll(&mut self) {
        let filter = match self.mode {
            WsMode::InMemory if !self.jobs.is_empty() => Cond::And(vec![
                Cond::cmp("owner", CmpOp::Eq, text(&self.name)),
                Cond::cmp("state", CmpOp::Eq, text("done")),
            ]),
            WsMode::Durable if self.watch.values().any(|(_, j)| !j.is_empty()) => {
                let clients: BTreeSet<&String> = self.watch.values().map(|(c, _)| c).collect();
                Cond::And(vec![
                    Cond::cmp("state", CmpOp::Eq, text("done")),
                    Cond::Or(
                        clients
                            .into_iter()
                            .map(|c| Cond::cmp("client", CmpOp::Eq, text(c)))
                            .collect(),
                    ),
                ])
            }
            _ => return,
        };
        self.pipe.push(
            StoreOp::Sql(SqlOp::exec(SqlStmt::scan(WS_JOBS, filter))),
            WsTag::Poll,
            SchedStep::Poll,
        );
    }

    fn deliver(&mut self, client: &str, request: &str, job: &str, conn: ConnId, result: &str) {
        self.pipe.push(
            send(conn, format!("result {request} {job} {result}")),
            WsTag::Deliver {
                client: client.into(),
                request: request.into(),
                job: job.into(),
                conn,
            },
            SchedStep::Deliver {
                job: job.into(),
                conn,
            },
        );
    }

    fn polled(&mut self, rows: &[KeyedRow]) {
        for row in rows {
            let result = col_text(row, "result").to_string();
            match self.mode {
                WsMode::InMemory => {
                    // The job's result reached this instance: it delivers it over the
                    // connection it holds, once.
                    if let Some(j) = self.jobs.remove(&row.key) {
                        self.deliver(&j.client, &j.request, &row.key, j.conn, &result);
                    }
                }
                WsMode::Durable => {
                    let client = col_text(row, "client").to_string();
                    let request = col_text(row, "request").to_string();
                    let waiting: Vec<ConnId> = self
                        .watch
                        .iter_mut()
                        .filter_map(|(conn, (_, jobs))| jobs.remove(&row.key).then_some(*conn))
                        .collect();
                    for conn in waiting {
                        self.deliver(&client, &request, &row.key, conn, &result);
                    }
                }
            }
        }
    }
}

impl Machine for WsScheduler {
    fn handle_start(&mut self, now: Timestamp) {
        self.started_ms = now.as_ms();
        self.pipe.push(
            push(PushOp::Listen {
                service: SERVICE.into(),
            }),
            WsTag::Listen,
            SchedStep::Listen,
        );
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let Some(step) = self.pipe.settle(op) else {
            return;
        };
        match (step, reply) {
            (SchedStep::Listen, Reply::Push(PushReply::Listening)) => {}
            (SchedStep::Listen, _) => {
                // Not listening yet (the balancer was out of reach): again.
                self.pipe.push(
                    push(PushOp::Listen {
                        service: SERVICE.into(),
                    }),
                    WsTag::Listen,
                    SchedStep::Listen,
                );
                return;
            }
            (SchedStep::Receive, Reply::Push(event)) => {
                match event {
                    PushReply::Accepted { conn, .. } => {
                        self.open.insert(conn);
                    }
                    PushReply::Message { conn, payload } => {
                        if self.mode == WsMode::Durable
                            && !self.watch.contains_key(&conn)
                            && let Some(client) = payload.split(' ').nth(1)
                        {
                            self.watch
                                .insert(conn, (client.to_string(), BTreeSet::new()));
                        }
                        self.message(conn, &payload);
                    }
                    PushReply::Closed { conn } => {
                        // The in-memory jobs keep the connection they came on (the bug).
                        self.open.remove(&conn);
                        self.watch.remove(&conn);
                    }
                    _ => {
                        self.poll();
                        self.pipe.later(now + TICK);
                        return;
                    }
                }
                self.pipe
                    .push(receive(), WsTag::Receive, SchedStep::Receive);
            }
            (SchedStep::Deliver { job, conn }, Reply::Push(PushReply::Closed { .. })) => {
                self.open.remove(&conn);
                self.watch.remove(&conn);
                self.pipe.note(WsNote::Dropped { job, conn });
            }
            (SchedStep::Record(p), reply) => self.recorded(p, reply),
            (SchedStep::Poll, Reply::Sql(SqlReply::Rows(rows))) => self.polled(&rows),
            _ => {}
        }
        self.pipe.later(now + TICK);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.pipe.due(now) {
            self.pipe
                .push(receive(), WsTag::Receive, SchedStep::Receive);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.pipe.poll()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.pipe.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.pipe.timer
    }

    fn is_idle(&self) -> bool {
        // A tick asked for is work to come: the world's horizon ends the run.
        self.pipe.idle() && self.pipe.timer.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// The node

#[derive(Clone, Debug)]
enum NodeStep {
    Scan,
    Claim,
    Finish(String),
}

/// A worker node: takes the first queued job (or one it claimed before an unknown outcome),
/// runs it for its length and writes its result.
#[derive(Debug)]
pub struct WsNode {
    name: String,
    job_length: Duration,
    running: Option<String>,
    pipe: Pipe<NodeStep>,
}

impl WsNode {
    /// Node `name` taking `job_length` per job.
    pub fn new(name: &str, job_length: Duration) -> WsNode {
        WsNode {
            name: name.into(),
            job_length,
            running: None,
            pipe: Pipe::default(),
        }
    }

    /// Queued, or claimed by this node (whose claim's answer was lost).
    fn claimable(&self) -> Cond {
        Cond::Or(vec![
            Cond::cmp("state", CmpOp::Eq, text("queued")),
            Cond::And(vec![
                Cond::cmp("state", CmpOp::Eq, text("running")),
                Cond::cmp("node", CmpOp::Eq, text(&self.name)),
            ]),
        ])
    }

    fn scan(&mut self) {
        let stmt = SqlStmt::scan(WS_JOBS, self.claimable()).limit(1);
        self.pipe
            .push(StoreOp::Sql(SqlOp::exec(stmt)), WsTag::Scan, NodeStep::Scan);
    }

    fn finish(&mut self, job: String) {
        let stmt = SqlStmt::Update {
            table: WS_JOBS,
            key: job.clone(),
            guard: Cond::cmp("node", CmpOp::Eq, text(&self.name)),
            set: vec![
                crate::ops::Assign::Set {
                    column: "state".into(),
                    value: text("done"),
                },
                crate::ops::Assign::Set {
                    column: "result".into(),
                    value: text(&format!("r-{job}")),
                },
            ],
        };
        self.pipe.push(
            StoreOp::Sql(SqlOp::exec(stmt)),
            WsTag::Finish { job: job.clone() },
            NodeStep::Finish(job),
        );
    }
}

impl Machine for WsNode {
    fn handle_start(&mut self, now: Timestamp) {
        self.pipe.timer = Some(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let Some(step) = self.pipe.settle(op) else {
            return;
        };
        match (step, reply) {
            (NodeStep::Scan, Reply::Sql(SqlReply::Rows(rows))) => {
                if let Some(row) = rows.first() {
                    let stmt = SqlStmt::Update {
                        table: WS_JOBS,
                        key: row.key.clone(),
                        guard: self.claimable(),
                        set: vec![
                            crate::ops::Assign::Set {
                                column: "state".into(),
                                value: text("running"),
                            },
                            crate::ops::Assign::Set {
                                column: "node".into(),
                                value: text(&self.name),
                            },
                        ],
                    };
                    self.pipe.push(
                        StoreOp::Sql(SqlOp::exec(stmt)),
                        WsTag::Claim {
                            job: row.key.clone(),
                        },
                        NodeStep::Claim,
                    );
                }
            }
            (NodeStep::Claim, Reply::Sql(SqlReply::Rows(rows))) => {
                if let Some(row) = rows.first() {
                    self.pipe.note(WsNote::Executed {
                        client: col_text(row, "client").into(),
                        request: col_text(row, "request").into(),
                        job: row.key.clone(),
                    });
                    self.running = Some(row.key.clone());
                    self.pipe.timer = Some(now + self.job_length);
                    return;
                }
            }
            (NodeStep::Finish(_), Reply::Sql(SqlReply::Rows(_))) => {
                self.running = None;
                self.scan();
                return;
            }
            (NodeStep::Finish(job), _) => {
                // Unknown outcome: write it again (the same values).
                self.pipe.timer = Some(now + TICK);
                self.running = Some(job);
                return;
            }
            _ => {}
        }
        self.pipe.later(now + TICK);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if !self.pipe.due(now) {
            return;
        }
        match self.running.clone() {
            Some(job) => self.finish(job),
            None => self.scan(),
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.pipe.poll()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.pipe.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.pipe.timer
    }

    fn is_idle(&self) -> bool {
        // It scans until the world's horizon.
        self.pipe.idle() && self.pipe.timer.is_none() && self.running.is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// Oracles

fn notes(history: &History) -> impl Iterator<Item = (Timestamp, &WsNote)> {
    history
        .notes
        .iter()
        .filter_map(|n| n.note.get::<WsNote>().map(|w| (n.at, w)))
}

/// [`ONE_EXECUTION`]: the node's executions grouped by the client's name for the job.
pub fn one_execution(history: &History) -> Verdict {
    let mut runs: BTreeMap<(&str, &str), Vec<(Timestamp, &str)>> = BTreeMap::new();
    for (at, note) in notes(history) {
        if let WsNote::Executed {
            client,
            request,
            job,
        } = note
        {
            runs.entry((client, request)).or_default().push((at, job));
        }
    }
    let mut verdict = Verdict::default();
    for ((client, request), runs) in runs {
        if runs.len() > 1 {
            let list: Vec<String> = runs
                .iter()
                .map(|(at, job)| format!("{job} at {at}"))
                .collect();
            verdict.violations.push(Violation {
                invariant: ONE_EXECUTION.name.into(),
                explanation: format!(
                    "{client}'s {request} was executed {} times: {}",
                    runs.len(),
                    list.join(", ")
                ),
                ops: Vec::new(),
            });
        }
    }
    verdict
}

/// [`DELIVERED_ONCE`]: each job the client was told was accepted had its result received
/// exactly once. A missing result is explained by the instance that dropped it, if one did.
pub fn delivered_once(history: &History) -> Verdict {
    let mut accepted: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    let mut received: BTreeMap<(&str, &str), Vec<(Timestamp, ConnId)>> = BTreeMap::new();
    let mut dropped: BTreeMap<&str, (Timestamp, ConnId)> = BTreeMap::new();
    for (at, note) in notes(history) {
        match note {
            WsNote::Accepted {
                client,
                request,
                job,
                ..
            } => accepted.entry((client, request)).or_default().push(job),
            WsNote::Received {
                client,
                request,
                conn,
                ..
            } => received
                .entry((client, request))
                .or_default()
                .push((at, *conn)),
            WsNote::Dropped { job, conn } => {
                dropped.insert(job, (at, *conn));
            }
            _ => {}
        }
    }
    let mut verdict = Verdict::default();
    for ((client, request), jobs) in accepted {
        let got = received.get(&(client, request)).map_or(&[][..], |v| v);
        let explanation = match got.len() {
            1 => continue,
            0 => {
                let why: Vec<String> = jobs
                    .iter()
                    .filter_map(|j| dropped.get(j).map(|(at, c)| (j, at, c)))
                    .map(|(j, at, c)| format!("{j}'s result was dropped at {at} ({c} closed)"))
                    .collect();
                format!(
                    "{client}'s {request} (accepted as {}) never reached {client}{}",
                    jobs.join(", "),
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", why.join("; "))
                    }
                )
            }
            n => {
                let list: Vec<String> = got.iter().map(|(at, c)| format!("{c} at {at}")).collect();
                format!(
                    "{client} received the result of {request} {n} times: {}",
                    list.join(", ")
                )
            }
        };
        verdict.violations.push(Violation {
            invariant: DELIVERED_ONCE.name.into(),
            explanation,
            ops: Vec::new(),
        });
    }
    verdict
}

fn closed_conn(op: &OpRecord) -> Option<ConnId> {
    match op.result {
        Some(Reply::Push(PushReply::Closed { conn })) => Some(conn),
        _ => None,
    }
}

/// [`NO_STALE_CONNECTION`]: no result sent on a connection the sending process had already
/// been told is closed (by an event it received, or by a send's answer) before it sent.
pub fn no_stale_connection(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    for (i, op) in history.ops.iter().enumerate() {
        let Some(WsTag::Deliver {
            client, job, conn, ..
        }) = op.tag.get::<WsTag>()
        else {
            continue;
        };
        let told = history.ops[..i].iter().find(|o| {
            o.process == op.process
                && closed_conn(o) == Some(*conn)
                // What the process saw: not a reply that came after it gave up.
                && !o.timed_out
                && o.completed_at.is_some_and(|t| t <= op.invoked_at)
        });
        if let Some(told) = told {
            verdict.violations.push(Violation {
                invariant: NO_STALE_CONNECTION.name.into(),
                explanation: format!(
                    "{} sent {job}'s result for {client} on {conn} at {}, though it had \
                     learned at {} that {conn} was closed",
                    history.name(op.process),
                    op.invoked_at,
                    told.completed_at.unwrap_or(op.invoked_at),
                ),
                ops: vec![i],
            });
        }
    }
    verdict
}

/// Counts [`MOVED_INSTANCE`] (a client's connection reached another instance than its
/// previous one), [`RESUBMIT_DEDUPED`] (an insert-if-absent of a job that was there) and
/// [`RESULT_REPLAYED`] (a result received on another connection than its acceptance's).
pub fn ws_coverage(history: &History, verdict: &mut Verdict) {
    let mut last_peer = BTreeMap::new();
    let mut moved = 0;
    let mut deduped = 0;
    for op in &history.ops {
        match (op.tag.get::<WsTag>(), &op.result) {
            (Some(WsTag::Connect), Some(Reply::Push(PushReply::Connected { peer, .. }))) => {
                let before = last_peer.insert(op.process, *peer);
                moved += u64::from(before.is_some_and(|p| p != *peer));
            }
            (Some(WsTag::Record { .. }), Some(Reply::Sql(SqlReply::Rows(rows))))
                if rows.is_empty()
                    && matches!(&op.op, StoreOp::Sql(SqlOp::Exec(stmt)) if matches!(**stmt, SqlStmt::Upsert { .. })) =>
            {
                deduped += 1;
            }
            _ => {}
        }
    }
    let mut accepted_on = BTreeMap::new();
    let mut replayed = 0;
    for (_, note) in notes(history) {
        match note {
            WsNote::Accepted {
                client,
                request,
                conn,
                ..
            } => {
                accepted_on.entry((client, request)).or_insert(*conn);
            }
            WsNote::Received {
                client,
                request,
                conn,
                ..
            } => {
                let first = accepted_on.get(&(client, request));
                replayed += u64::from(first.is_some_and(|c| c != conn));
            }
            _ => {}
        }
    }
    verdict.count(MOVED_INSTANCE.name, moved);
    verdict.count(RESUBMIT_DEDUPED.name, deduped);
    verdict.count(RESULT_REPLAYED.name, replayed);
}
