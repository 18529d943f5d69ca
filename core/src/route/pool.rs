//! R-000-15: a gateway instance's endpoint choice, as processes of a simulated world.
//!
//! Each gateway instance (a host of the world) keeps one [`Router`] in its memory
//! ([`PoolMemory`]); its request tasks ([`PoolClient`]) and, where the protocol probes, its
//! prober ([`PoolProber`]) run the router's calls as synchronous blocks ([`PoolBlock`]) on
//! it. Every random choice is a [`RandomOp`] of the process's seeded stream, whose draw seeds
//! the pick, so it is in the history and replays. After each attempt the request also
//! updates a shared per-endpoint outcome counter in Redis (`route:{ok|fail}:E<n>`), the
//! statistics several instances share.
//!
//! | variant   | choice                                                  | shared counters          |
//! |-----------|---------------------------------------------------------|--------------------------|
//! | `Buggy`   | `proxy_pool.py:pick()`: uniform over every endpoint      | `GET` then `SET n + 1`   |
//! | `DocFix`  | the document's weighted random (decay 0.5 per outcome, an exploration floor), no gate | `GET` then `SET n + 1` |
//! | `Correct` | the hard health gate (document 001's table), probes with one token per endpoint, then route-bench's shipped policy (load-aware censored discounted Thompson) among healthy endpoints | `INCRBY` |
//!
//! Method kinds of both machines: inputs `handle_start`, `handle_reply`, `handle_timeout`
//! (a spurious one is a no-op); outputs `poll_op` (at most one step in flight), then
//! `poll_timeout`.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};

use crate::health::{HealthConfig, Observation};
use crate::ids::{EndpointId, OpId};
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    CallKind, FamilyMemory, KvOp, KvReply, LocalBlock, RandomOp, RandomStream, Reply, SetCondition,
    StoreOp, UpstreamOp,
};
use crate::tag::Tag;
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

use super::tag::{Outcome, RouteTag};
use super::{Attempt, AttemptId, Gate, Policy, RouteError, Router, RouterConfig};

/// The consecutive failures after which an endpoint is DOWN (the gate's threshold, and P1's
/// `k`): small, so that a world of a few requests reaches it.
pub const DOWN_AFTER: u32 = 2;

/// The most requests one [`PoolClient`] sends (a limit on a world's size).
pub const REQUESTS_MAX: u32 = 1_000;

/// The router configuration of a variant (see the module's table).
pub fn router_config(variant: Variant) -> RouterConfig {
    let (policy, gate) = match variant {
        Variant::Buggy => (Policy::Uniform, Gate::Off),
        Variant::DocFix => (Policy::Weighted { decay: 0.5 }, Gate::Off),
        Variant::Correct => (Policy::LoadAwareThompson { gamma: 0.999 }, Gate::Hard),
    };
    RouterConfig {
        gate,
        health: HealthConfig {
            failure_threshold: DOWN_AFTER,
        },
        probe_interval: Duration::from_ms(200),
        ..RouterConfig::gated(policy)
    }
}

/// The shared counter's key for an endpoint's outcomes.
pub fn counter_key(endpoint: EndpointId, outcome: Outcome) -> String {
    format!("route:{}:{endpoint}", outcome.as_str())
}

/// One synchronous block on an instance's router.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PoolBlock {
    /// [`Router::pick`] at `now`, its draws from a stream seeded by `seed` (the process's
    /// recorded draw).
    Pick {
        /// The time.
        now: Timestamp,
        /// The draw that seeds the pick.
        seed: u64,
    },
    /// [`Router::poll_probe`] at `now`.
    PollProbe {
        /// The time.
        now: Timestamp,
    },
    /// [`Router::record`].
    Record {
        /// The attempt.
        attempt: AttemptId,
        /// The time.
        now: Timestamp,
        /// What it showed.
        observation: Observation,
    },
}

impl fmt::Display for PoolBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolBlock::Pick { .. } => write!(f, "pick()"),
            PoolBlock::PollProbe { .. } => write!(f, "poll_probe()"),
            PoolBlock::Record {
                attempt,
                observation,
                ..
            } => write!(f, "record(a{}, {})", attempt.0, observation.as_str()),
        }
    }
}

/// A block's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PoolResult {
    /// The attempt handed out (a pick's, or a due probe).
    Attempt(Attempt),
    /// No endpoint passes the gate (a pick), or no probe is due (a poll).
    Nothing,
    /// The outcome was recorded against this endpoint.
    Recorded(EndpointId),
    /// The router refused the call (an unknown attempt, too many in flight).
    Refused(String),
}

impl fmt::Display for PoolResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolResult::Attempt(a) if a.probe => write!(f, "probe a{} to {}", a.id.0, a.endpoint),
            PoolResult::Attempt(a) => write!(f, "a{} to {}", a.id.0, a.endpoint),
            PoolResult::Nothing => write!(f, "none"),
            PoolResult::Recorded(e) => write!(f, "recorded for {e}"),
            PoolResult::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// A gateway instance's memory: its router.
#[derive(Clone, Debug)]
pub struct PoolMemory {
    router: Router,
}

impl PoolMemory {
    /// An instance of `variant` over `endpoints` (1 to [`super::ENDPOINTS_MAX`] distinct).
    pub fn new(
        variant: Variant,
        endpoints: &[EndpointId],
    ) -> Result<PoolMemory, super::ConfigError> {
        Ok(PoolMemory {
            router: Router::new(router_config(variant), endpoints)?,
        })
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

impl Hash for PoolMemory {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The router's statistics are floats (no `Hash`); their printed form is exact and
        // deterministic, which is all a trace hash needs.
        format!("{:?}", self.router).hash(state);
    }
}

impl FamilyMemory for PoolMemory {
    type Block = PoolBlock;
    type Output = PoolResult;

    fn run(&mut self, block: &PoolBlock) -> PoolResult {
        match *block {
            PoolBlock::Pick { now, seed } => {
                let mut rng = RandomStream::for_process(seed, 0, 0);
                match self.router.pick(now, &mut rng) {
                    Ok(a) => PoolResult::Attempt(a),
                    Err(RouteError::NoHealthyEndpoint) => PoolResult::Nothing,
                    Err(e) => PoolResult::Refused(e.to_string()),
                }
            }
            PoolBlock::PollProbe { now } => match self.router.poll_probe(now) {
                Some(a) => PoolResult::Attempt(a),
                None => PoolResult::Nothing,
            },
            PoolBlock::Record {
                attempt,
                now,
                observation,
            } => match self.router.record(attempt, now, observation) {
                Ok(e) => PoolResult::Recorded(e),
                Err(e) => PoolResult::Refused(e.to_string()),
            },
        }
    }
}

/// One machine's outbox: at most one step in flight.
#[derive(Debug, Default)]
struct Steps {
    next: u64,
    pending: Option<OpId>,
    ops: VecDeque<Outgoing>,
}

impl Steps {
    fn send(&mut self, op: StoreOp, tag: RouteTag) {
        assert!(self.pending.is_none(), "one step in flight at a time");
        self.next += 1;
        let id = OpId(self.next);
        self.pending = Some(id);
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
    }

    fn block(&mut self, block: PoolBlock, tag: RouteTag) {
        self.send(StoreOp::Local(LocalBlock::new(block)), tag);
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

fn pool_result(reply: &Reply) -> Option<PoolResult> {
    match reply {
        Reply::Local(r) => r.result.get::<PoolResult>().cloned(),
        _ => None,
    }
}

fn observation(reply: &Reply) -> Observation {
    match reply {
        Reply::Upstream(u) => Observation::from_status(Some(u.status)),
        _ => Observation::Timeout,
    }
}

/// How a request updates the shared counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterWrite {
    /// `GET`, then `SET` the value read plus one (the naming of the documents' accessors).
    ReadModifyWrite,
    /// `INCRBY key 1`.
    Atomic,
}

impl CounterWrite {
    /// The variant's way.
    pub fn of(variant: Variant) -> CounterWrite {
        match variant {
            Variant::Correct => CounterWrite::Atomic,
            Variant::Buggy | Variant::DocFix => CounterWrite::ReadModifyWrite,
        }
    }
}

/// What a client is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Idle,
    Drawing,
    Picking,
    Calling(Attempt),
    Recording(EndpointId, Outcome),
    Reading(EndpointId, Outcome),
    Writing,
    Done,
}

/// A gateway request task: `requests` user requests one after the other, each a draw, a
/// pick, the upstream call, its outcome recorded in the router, and the shared counter's
/// update.
#[derive(Debug)]
pub struct PoolClient {
    instance: u32,
    write: CounterWrite,
    stream: Duration,
    left: u32,
    state: ClientState,
    steps: Steps,
}

impl PoolClient {
    /// A client of instance `instance` sending `requests` (at most [`REQUESTS_MAX`]) requests
    /// whose answers stream for `stream`.
    pub fn new(instance: u32, write: CounterWrite, requests: u32, stream: Duration) -> PoolClient {
        PoolClient {
            instance,
            write,
            stream,
            left: requests.min(REQUESTS_MAX),
            state: ClientState::Idle,
            steps: Steps::default(),
        }
    }

    fn next_request(&mut self) {
        if self.left == 0 {
            self.state = ClientState::Done;
            return;
        }
        self.left -= 1;
        self.steps.send(
            StoreOp::Random(RandomOp::Bits),
            RouteTag::Draw {
                instance: self.instance,
            },
        );
        self.state = ClientState::Drawing;
    }
}

impl Machine for PoolClient {
    fn handle_start(&mut self, _now: Timestamp) {
        if self.state == ClientState::Idle {
            self.next_request();
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if !self.steps.accept(op) {
            return;
        }
        let instance = self.instance;
        match self.state {
            ClientState::Drawing => match reply {
                Reply::Random(seed) => {
                    self.steps
                        .block(PoolBlock::Pick { now, seed }, RouteTag::Pick { instance });
                    self.state = ClientState::Picking;
                }
                // A draw is answered in process; anything else ends this request.
                _ => self.next_request(),
            },
            ClientState::Picking => match pool_result(&reply) {
                Some(PoolResult::Attempt(a)) if !a.probe => {
                    self.steps.send(
                        StoreOp::Upstream(UpstreamOp {
                            endpoint: a.endpoint,
                            kind: CallKind::Request {
                                stream: self.stream,
                            },
                        }),
                        RouteTag::Call {
                            instance,
                            endpoint: a.endpoint,
                            probe: false,
                        },
                    );
                    self.state = ClientState::Calling(a);
                }
                // No healthy endpoint: the request fails fast.
                _ => self.next_request(),
            },
            ClientState::Calling(a) => {
                let observation = observation(&reply);
                let outcome = if observation.is_failure() {
                    Outcome::Fail
                } else {
                    Outcome::Ok
                };
                self.steps.block(
                    PoolBlock::Record {
                        attempt: a.id,
                        now,
                        observation,
                    },
                    RouteTag::Record {
                        instance,
                        endpoint: a.endpoint,
                    },
                );
                self.state = ClientState::Recording(a.endpoint, outcome);
            }
            ClientState::Recording(endpoint, outcome) => {
                let key = counter_key(endpoint, outcome);
                match self.write {
                    CounterWrite::Atomic => {
                        self.steps.send(
                            StoreOp::Kv(KvOp::IncrBy { key, delta: 1 }),
                            RouteTag::StatsWrite { endpoint, outcome },
                        );
                        self.state = ClientState::Writing;
                    }
                    CounterWrite::ReadModifyWrite => {
                        self.steps.send(
                            StoreOp::Kv(KvOp::Get { key }),
                            RouteTag::StatsRead { endpoint, outcome },
                        );
                        self.state = ClientState::Reading(endpoint, outcome);
                    }
                }
            }
            ClientState::Reading(endpoint, outcome) => {
                let read = match reply {
                    Reply::Kv(KvReply::Nil) => Some(0),
                    Reply::Kv(KvReply::Bulk(v)) => v.parse::<i64>().ok(),
                    _ => None,
                };
                match read {
                    Some(n) => {
                        self.steps.send(
                            StoreOp::Kv(KvOp::Set {
                                key: counter_key(endpoint, outcome),
                                value: n.saturating_add(1).to_string(),
                                condition: SetCondition::Always,
                                ttl: None,
                            }),
                            RouteTag::StatsWrite { endpoint, outcome },
                        );
                        self.state = ClientState::Writing;
                    }
                    // Redis unavailable or the value unreadable: the statistics skip this
                    // outcome (they are advisory); the request itself is done.
                    None => self.next_request(),
                }
            }
            ClientState::Writing => self.next_request(),
            ClientState::Idle | ClientState::Done => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.state == ClientState::Done && self.steps.pending.is_none()
    }
}

/// The most rounds a [`PoolProber`] runs.
pub const PROBE_ROUNDS_MAX: u32 = 10_000;

/// What a prober is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProberState {
    Waiting,
    Polling,
    Probing(Attempt),
    Recording,
    Done,
}

/// An instance's prober (the protocol's recovery path behind the hard gate): every `every`,
/// for `rounds` rounds, it drains the router's due probes, each sent with its key and
/// recorded with the attempt it was handed.
#[derive(Debug)]
pub struct PoolProber {
    instance: u32,
    every: Duration,
    rounds: u32,
    next_round: Option<Timestamp>,
    state: ProberState,
    steps: Steps,
}

impl PoolProber {
    /// A prober of instance `instance`, rounds every `every` (at least 1 ms), at most
    /// [`PROBE_ROUNDS_MAX`] of them.
    pub fn new(instance: u32, every: Duration, rounds: u32) -> PoolProber {
        PoolProber {
            instance,
            every: every.max(Duration::from_ms(1)),
            rounds: rounds.min(PROBE_ROUNDS_MAX),
            next_round: None,
            state: ProberState::Waiting,
            steps: Steps::default(),
        }
    }

    fn poll(&mut self, now: Timestamp) {
        self.steps.block(
            PoolBlock::PollProbe { now },
            RouteTag::PollProbe {
                instance: self.instance,
            },
        );
        self.state = ProberState::Polling;
    }

    fn end_round(&mut self, now: Timestamp) {
        if self.rounds == 0 {
            self.state = ProberState::Done;
            self.next_round = None;
        } else {
            self.state = ProberState::Waiting;
            self.next_round = Some(now + self.every);
        }
    }
}

impl Machine for PoolProber {
    fn handle_start(&mut self, now: Timestamp) {
        if self.state == ProberState::Waiting && self.next_round.is_none() {
            self.end_round(now);
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if !self.steps.accept(op) {
            return;
        }
        let instance = self.instance;
        match self.state {
            ProberState::Polling => match pool_result(&reply) {
                Some(PoolResult::Attempt(a)) if a.probe => {
                    self.steps.send(
                        StoreOp::Upstream(UpstreamOp {
                            endpoint: a.endpoint,
                            kind: CallKind::Probe { auth: true },
                        }),
                        RouteTag::Call {
                            instance,
                            endpoint: a.endpoint,
                            probe: true,
                        },
                    );
                    self.state = ProberState::Probing(a);
                }
                _ => self.end_round(now),
            },
            ProberState::Probing(a) => {
                self.steps.block(
                    PoolBlock::Record {
                        attempt: a.id,
                        now,
                        observation: observation(&reply),
                    },
                    RouteTag::Record {
                        instance,
                        endpoint: a.endpoint,
                    },
                );
                self.state = ProberState::Recording;
            }
            ProberState::Recording => self.poll(now),
            ProberState::Waiting | ProberState::Done => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let due = self.next_round.is_some_and(|t| t <= now);
        if self.state == ProberState::Waiting && due {
            self.next_round = None;
            assert!(self.rounds > 0);
            self.rounds -= 1;
            self.poll(now);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.steps.ops.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        if self.state == ProberState::Waiting {
            self.next_round
        } else {
            None
        }
    }

    fn is_idle(&self) -> bool {
        self.state == ProberState::Done && self.steps.pending.is_none()
    }
}
