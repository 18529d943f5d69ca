//! The coroutines of documents 001 and 003 as sans-IO machines. Each runs one step at a time:
//! a synchronous block on local memory ([`LocalOp`]) or an awaited upstream call
//! ([`UpstreamOp`]). The simulation may run other tasks between any two steps, which is
//! exactly where asyncio may switch.

use std::collections::VecDeque;

use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{CallKind, LocalBlock, Reply, StoreOp, UpstreamOp};
use crate::tag::Tag;
use crate::time::{Duration, Timestamp};

use super::{EndpointId, Generation, HealthTag, LocalOp, LocalResult, Observation, Source};

/// One task's outbox: at most one step in flight.
#[derive(Debug, Default)]
struct Steps {
    next: u64,
    pending: Option<OpId>,
    ops: VecDeque<Outgoing>,
}

impl Steps {
    fn local(&mut self, op: LocalOp, tag: HealthTag) {
        self.send(StoreOp::Local(LocalBlock::new(op)), tag);
    }

    fn call(&mut self, endpoint: EndpointId, kind: CallKind, tag: HealthTag) {
        self.send(StoreOp::Upstream(UpstreamOp { endpoint, kind }), tag);
    }

    fn send(&mut self, op: StoreOp, tag: HealthTag) {
        self.next += 1;
        let id = OpId(self.next);
        self.pending = Some(id);
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
    }

    /// Takes the reply if it answers the step in flight.
    fn accept(&mut self, op: OpId) -> bool {
        if self.pending == Some(op) {
            self.pending = None;
            true
        } else {
            false
        }
    }
}

fn local(reply: Reply) -> Option<LocalResult> {
    match reply {
        Reply::Local(r) => r.result.get::<LocalResult>().cloned(),
        _ => None,
    }
}

fn status(reply: &Reply) -> Option<u16> {
    match reply {
        Reply::Upstream(r) => Some(r.status),
        _ => None,
    }
}

/// How a request task chooses endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Selection {
    /// The documents' handler: one candidate list at request start; each retry takes the next
    /// element of that list without re-checking health.
    ListAtStart,
    /// `Correct`: select (and check) immediately before every attempt.
    EveryAttempt,
}

/// A request task's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestConfig {
    /// How it chooses endpoints.
    pub selection: Selection,
    /// Attempts at most (the documents use 3).
    pub attempts: u32,
    /// How long a successful response streams.
    pub stream: Duration,
    /// Whether failed attempts are added to the failure queue (document 003's call sites).
    pub report_failures: bool,
    /// R-001-03: the observation kind whose call site calls the now-`async`
    /// `update_health_status` without `await` (the coroutine is created and dropped).
    pub missed_await: Option<Observation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqState {
    Starting,
    Listing,
    Choosing,
    Calling(EndpointId, Generation),
    Observing(EndpointId, Observation),
    Reporting(Observation),
    Done,
}

/// A user request forwarded by the proxy, with its retries.
#[derive(Debug)]
pub struct RequestTask {
    cfg: RequestConfig,
    steps: Steps,
    state: ReqState,
    candidates: Vec<EndpointId>,
    tried: Vec<EndpointId>,
    attempt: u32,
    choosing: Option<EndpointId>,
}

impl RequestTask {
    /// A request that starts when its process starts.
    pub fn new(cfg: RequestConfig) -> RequestTask {
        RequestTask {
            cfg,
            steps: Steps::default(),
            state: ReqState::Starting,
            candidates: Vec::new(),
            tried: Vec::new(),
            attempt: 0,
            choosing: None,
        }
    }

    fn next_attempt(&mut self) {
        if self.attempt >= self.cfg.attempts {
            self.state = ReqState::Done;
            return;
        }
        match self.cfg.selection {
            Selection::ListAtStart => {
                if self.candidates.is_empty() {
                    self.state = ReqState::Done;
                    return;
                }
                let e = self.candidates[self.attempt as usize % self.candidates.len()];
                self.choosing = Some(e);
                self.steps
                    .local(LocalOp::Dispatch { endpoint: e }, HealthTag::Select);
            }
            Selection::EveryAttempt => {
                self.steps.local(
                    LocalOp::Select {
                        tried: self.tried.clone(),
                    },
                    HealthTag::Select,
                );
            }
        }
        self.attempt += 1;
        self.state = ReqState::Choosing;
    }

    fn call(&mut self, e: EndpointId, g: Generation) {
        self.tried.push(e);
        self.steps.call(
            e,
            CallKind::Request {
                stream: self.cfg.stream,
            },
            HealthTag::Call { endpoint: e },
        );
        self.state = ReqState::Calling(e, g);
    }

    fn observed(&mut self, e: EndpointId, obs: Observation) {
        if obs.is_failure() && self.cfg.report_failures {
            self.steps
                .local(LocalOp::FqAdd { endpoint: e }, HealthTag::FailureQueue);
            self.state = ReqState::Reporting(obs);
        } else {
            self.finish_attempt(obs);
        }
    }

    fn finish_attempt(&mut self, obs: Observation) {
        if obs.is_failure() {
            self.next_attempt();
        } else {
            self.state = ReqState::Done;
        }
    }
}

impl Machine for RequestTask {
    fn handle_start(&mut self, _now: Timestamp) {
        match self.cfg.selection {
            Selection::ListAtStart => {
                self.steps.local(LocalOp::Candidates, HealthTag::Select);
                self.state = ReqState::Listing;
            }
            Selection::EveryAttempt => self.next_attempt(),
        }
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if !self.steps.accept(op) {
            return;
        }
        match self.state {
            ReqState::Listing => {
                if let Some(LocalResult::Endpoints(list)) = local(reply) {
                    self.candidates = list;
                }
                self.next_attempt();
            }
            ReqState::Choosing => match local(reply) {
                Some(LocalResult::Dispatched(g)) => match self.choosing.take() {
                    Some(e) => self.call(e, g),
                    None => self.state = ReqState::Done,
                },
                Some(LocalResult::Selected(Some((e, g)))) => self.call(e, g),
                _ => self.state = ReqState::Done,
            },
            ReqState::Calling(e, g) => {
                let obs = Observation::from_status(status(&reply));
                if self.cfg.missed_await == Some(obs) {
                    // `update_health_status(...)` without `await`: a coroutine object is
                    // created and discarded; nothing is recorded.
                    self.observed(e, obs);
                } else {
                    self.steps.local(
                        LocalOp::Observe {
                            endpoint: e,
                            observation: obs,
                            source: Source::Request,
                            started: g,
                        },
                        HealthTag::Observe { endpoint: e },
                    );
                    self.state = ReqState::Observing(e, obs);
                }
            }
            ReqState::Observing(e, obs) => self.observed(e, obs),
            ReqState::Reporting(obs) => self.finish_attempt(obs),
            ReqState::Starting | ReqState::Done => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.state == ReqState::Done && self.steps.pending.is_none()
    }
}

/// A periodic prober: the health monitor (`auth: true` probes, observations recorded) or
/// the failure queue's recovery loop (probes of queued endpoints, removal, then a healthy
/// mark).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProbeConfig {
    /// Monitor or recovery loop.
    pub role: ProbeRole,
    /// Time between rounds.
    pub interval: Duration,
    /// Rounds to run (then the task is idle, so runs end).
    pub rounds: u32,
}

/// Which prober.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProbeRole {
    /// `health_monitor.py`: probes every endpoint with its key and records the result.
    Monitor {
        /// The endpoints, in order.
        endpoints: Vec<EndpointId>,
    },
    /// `failure_queue.py`'s recovery loop: probes each queued endpoint (without its key),
    /// removes it on success and marks it healthy (line 158).
    Recovery,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProbeState {
    Waiting,
    Listing,
    Beginning(EndpointId),
    Probing(EndpointId, Generation, u64),
    Removing(EndpointId, Generation),
    Recording,
}

/// The health monitor or the recovery loop.
#[derive(Debug)]
pub struct ProbeTask {
    cfg: ProbeConfig,
    steps: Steps,
    state: ProbeState,
    queue: VecDeque<EndpointId>,
    rounds_done: u32,
    next_at: Option<Timestamp>,
}

impl ProbeTask {
    /// A prober whose first round starts one interval after its process starts.
    pub fn new(cfg: ProbeConfig) -> ProbeTask {
        ProbeTask {
            cfg,
            steps: Steps::default(),
            state: ProbeState::Waiting,
            queue: VecDeque::new(),
            rounds_done: 0,
            next_at: None,
        }
    }

    fn next_endpoint(&mut self, now: Timestamp) {
        match self.queue.pop_front() {
            Some(e) => {
                self.steps.local(
                    LocalOp::BeginProbe { endpoint: e },
                    HealthTag::Probe { endpoint: e },
                );
                self.state = ProbeState::Beginning(e);
            }
            None => {
                self.rounds_done += 1;
                self.state = ProbeState::Waiting;
                self.next_at =
                    (self.rounds_done < self.cfg.rounds).then(|| now + self.cfg.interval);
            }
        }
    }

    fn auth(&self) -> bool {
        matches!(self.cfg.role, ProbeRole::Monitor { .. })
    }
}

impl Machine for ProbeTask {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_at = (self.cfg.rounds > 0).then(|| now + self.cfg.interval);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if !self.steps.accept(op) {
            return;
        }
        match self.state {
            ProbeState::Listing => {
                if let Some(LocalResult::Endpoints(list)) = local(reply) {
                    self.queue = list.into();
                }
                self.next_endpoint(now);
            }
            ProbeState::Beginning(e) => {
                let (g, epoch) = match local(reply) {
                    Some(LocalResult::Begun { generation, epoch }) => (generation, epoch),
                    _ => (Generation(0), 0),
                };
                let auth = self.auth();
                self.steps.call(
                    e,
                    CallKind::Probe { auth },
                    HealthTag::Probe { endpoint: e },
                );
                self.state = ProbeState::Probing(e, g, epoch);
            }
            ProbeState::Probing(e, g, epoch) => {
                let obs = Observation::from_status(status(&reply));
                match self.cfg.role {
                    ProbeRole::Monitor { .. } => {
                        self.steps.local(
                            LocalOp::Observe {
                                endpoint: e,
                                observation: obs,
                                source: Source::Probe,
                                started: g,
                            },
                            HealthTag::Observe { endpoint: e },
                        );
                        self.state = ProbeState::Recording;
                    }
                    ProbeRole::Recovery if obs == Observation::Success => {
                        self.steps.local(
                            LocalOp::FqRemove { endpoint: e, epoch },
                            HealthTag::FailureQueue,
                        );
                        self.state = ProbeState::Removing(e, g);
                    }
                    ProbeRole::Recovery => self.next_endpoint(now),
                }
            }
            ProbeState::Removing(e, g) => {
                if matches!(local(reply), Some(LocalResult::Bool(true))) {
                    self.steps.local(
                        LocalOp::Observe {
                            endpoint: e,
                            observation: Observation::Success,
                            source: Source::Probe,
                            started: g,
                        },
                        HealthTag::Observe { endpoint: e },
                    );
                    self.state = ProbeState::Recording;
                } else {
                    self.next_endpoint(now);
                }
            }
            ProbeState::Recording => self.next_endpoint(now),
            ProbeState::Waiting => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.state != ProbeState::Waiting || self.next_at.is_none_or(|t| t > now) {
            return;
        }
        self.next_at = None;
        match &self.cfg.role {
            ProbeRole::Monitor { endpoints } => {
                self.queue = endpoints.iter().copied().collect();
                self.next_endpoint(now);
            }
            ProbeRole::Recovery => {
                self.steps.local(LocalOp::FqFailed, HealthTag::FailureQueue);
                self.state = ProbeState::Listing;
            }
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_at
    }

    fn is_idle(&self) -> bool {
        self.state == ProbeState::Waiting && self.next_at.is_none() && self.steps.pending.is_none()
    }
}

/// R-003-02: one OS thread of a threaded port calling `add_failed_endpoint(endpoint)`.
/// `split: true` is the check-then-act with the check and the act in separate critical
/// sections (what a lock that is not shared by the threads, like `asyncio.Lock`, amounts to);
/// `split: false` is one critical section.
#[derive(Debug)]
pub struct AddThread {
    endpoint: EndpointId,
    split: bool,
    steps: Steps,
    checking: bool,
    done: bool,
}

impl AddThread {
    /// A thread adding `endpoint`.
    pub fn new(endpoint: EndpointId, split: bool) -> AddThread {
        AddThread {
            endpoint,
            split,
            steps: Steps::default(),
            checking: false,
            done: false,
        }
    }
}

impl Machine for AddThread {
    fn handle_start(&mut self, _now: Timestamp) {
        let endpoint = self.endpoint;
        if self.split {
            self.steps
                .local(LocalOp::FqContains { endpoint }, HealthTag::FailureQueue);
            self.checking = true;
        } else {
            self.steps
                .local(LocalOp::FqAdd { endpoint }, HealthTag::FailureQueue);
        }
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if !self.steps.accept(op) {
            return;
        }
        if self.checking {
            self.checking = false;
            if matches!(local(reply), Some(LocalResult::Bool(false))) {
                let endpoint = self.endpoint;
                self.steps.local(
                    LocalOp::FqInsertCounted { endpoint },
                    HealthTag::FailureQueue,
                );
                return;
            }
        }
        self.done = true;
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.done && self.steps.pending.is_none()
    }
}

/// How `_save()` writes the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaveStyle {
    /// The documents' in-place rewrite: truncate, then write.
    InPlace,
    /// Write a temporary file, then rename it over the old one (atomic).
    TempAndRename,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SaverState {
    Reading,
    Loading,
    Adding(usize),
    Snapshotting,
    Writing(u8),
    Done,
}

/// R-003-04: the proxy's failure-queue owner. On (re)start it loads the file; the first
/// incarnation then adds `adds` one by one, saving after each.
#[derive(Debug)]
pub struct SaverTask {
    adds: Vec<EndpointId>,
    style: SaveStyle,
    first_life: bool,
    steps: Steps,
    state: SaverState,
    snapshot: String,
    next_add: usize,
}

/// The file the failure queue is saved to.
pub const QUEUE_FILE: &str = "failure_queue.json";
const QUEUE_TMP: &str = "failure_queue.json.tmp";

impl SaverTask {
    /// The task for process incarnation `incarnation` (0 is the first life).
    pub fn new(adds: Vec<EndpointId>, style: SaveStyle, incarnation: u32) -> SaverTask {
        SaverTask {
            adds,
            style,
            first_life: incarnation == 0,
            steps: Steps::default(),
            state: SaverState::Reading,
            snapshot: String::new(),
            next_add: 0,
        }
    }

    fn add(&mut self, i: usize) {
        match self.adds.get(i) {
            Some(&endpoint) if self.first_life => {
                self.steps
                    .local(LocalOp::FqAdd { endpoint }, HealthTag::FailureQueue);
                self.state = SaverState::Adding(i);
            }
            _ => self.state = SaverState::Done,
        }
    }

    fn write(&mut self, step: u8) {
        let op = match (self.style, step) {
            (SaveStyle::InPlace, 0) => LocalOp::FsTruncate {
                path: QUEUE_FILE.into(),
            },
            (SaveStyle::InPlace, 1) => LocalOp::FsWrite {
                path: QUEUE_FILE.into(),
                content: self.snapshot.clone(),
            },
            (SaveStyle::TempAndRename, 0) => LocalOp::FsWrite {
                path: QUEUE_TMP.into(),
                content: self.snapshot.clone(),
            },
            (SaveStyle::TempAndRename, 1) => LocalOp::FsRename {
                from: QUEUE_TMP.into(),
                to: QUEUE_FILE.into(),
            },
            _ => return,
        };
        self.steps.local(op, HealthTag::Persist);
        self.state = SaverState::Writing(step);
    }
}

impl Machine for SaverTask {
    fn handle_start(&mut self, _now: Timestamp) {
        self.steps.local(
            LocalOp::FsRead {
                path: QUEUE_FILE.into(),
            },
            HealthTag::Persist,
        );
        self.state = SaverState::Reading;
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if !self.steps.accept(op) {
            return;
        }
        match self.state {
            SaverState::Reading => {
                let content = match local(reply) {
                    Some(LocalResult::File(content)) => content,
                    _ => None,
                };
                self.steps
                    .local(LocalOp::FqLoad { content }, HealthTag::Persist);
                self.state = SaverState::Loading;
            }
            SaverState::Loading => self.add(0),
            SaverState::Adding(i) => {
                self.steps.local(LocalOp::FqSnapshot, HealthTag::Persist);
                self.state = SaverState::Snapshotting;
                self.next_add = i + 1;
            }
            SaverState::Snapshotting => {
                if let Some(LocalResult::Text(text)) = local(reply) {
                    self.snapshot = text;
                }
                self.write(0);
            }
            SaverState::Writing(0) => self.write(1),
            SaverState::Writing(_) => self.add(self.next_add),
            SaverState::Done => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.state == SaverState::Done && self.steps.pending.is_none()
    }
}

/// A coroutine that runs fixed synchronous blocks one after another, awaiting between them:
/// the documents' own concurrency tests are made of these (`update_fail()`,
/// `check_health()`, `add_failed_endpoint()`, `remove_failed_endpoint()`).
#[derive(Debug)]
pub struct BlockTask {
    blocks: VecDeque<(LocalOp, HealthTag)>,
    steps: Steps,
}

impl BlockTask {
    /// A task running `blocks` in order.
    pub fn new(blocks: Vec<(LocalOp, HealthTag)>) -> BlockTask {
        BlockTask {
            blocks: blocks.into(),
            steps: Steps::default(),
        }
    }

    fn next(&mut self) {
        if let Some((op, tag)) = self.blocks.pop_front() {
            self.steps.local(op, tag);
        }
    }
}

impl Machine for BlockTask {
    fn handle_start(&mut self, _now: Timestamp) {
        self.next();
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, _reply: Reply) {
        if self.steps.accept(op) {
            self.next();
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.blocks.is_empty() && self.steps.pending.is_none()
    }
}
