//! R-000-10: the circuit breaker across gateway instances (document 000, P1 item 10,
//! `upstream_call.py:_get_cb_state()` + `_set_cb_state()`).
//!
//! Each gateway instance is one [`BreakerInstance`] serving its planned requests in arrival
//! order; every request names an upstream and goes through that upstream's breaker
//! (threshold [`THRESHOLD`] failures, cool-down [`COOLDOWN`]). The instance's in-process
//! breaker state is the machine's own memory, so a crash loses it (an in-process dict does),
//! and the family runs in the net world as well (no local blocks).
//!
//! | variant   | breaker state                                                  | Redis unreachable                   | half-open                          | failure counter               |
//! |-----------|----------------------------------------------------------------|-------------------------------------|------------------------------------|-------------------------------|
//! | `Buggy`   | `GET`/`SET cb:U:state` (`CLOSED`, `OPEN:<ms>`, `HALF_OPEN`)     | the stale copy of the last answer; writes swallowed | every reader of `HALF_OPEN` sends | `GET` then `SET n + 1`        |
//! | `DocFix`  | the same                                                       | fail closed: the request is rejected | the same                           | the same                      |
//! | `Correct` | a local breaker, authoritative for the instance's own traffic; `cb:U:open` (value: when it opened) forces it OPEN | the local breaker decides alone     | `SET probe:U tok NX PX cooldown`   | `incr_window`: `INCRBY`, and `PEXPIRE` on a new window, one script |
//!
//! Reading of the document (assumption A4 of the catalog, plus one of ours): the accessors
//! are a read-modify-write through `GET`/`SET`; the in-process fallback is the instance's
//! copy of the last state it read from Redis, and a `_set_cb_state` that fails is logged and
//! dropped, so a partitioned instance keeps deciding on the copy it had: CLOSED, if that is
//! what it last read (RACES.md's split brain).
//!
//! Correct, step by step: before each request the instance reads `cb:U:open`; a value whose
//! opening is less than a cool-down old forces a CLOSED local breaker OPEN from that moment;
//! an absent one while the local breaker holds an OPEN Redis never heard of is written back
//! (the "OPEN wins" merge on Redis' recovery). The local breaker counts its own consecutive
//! failures and opens at [`THRESHOLD`], or when the shared counter reaches it: one atomic
//! script, [`ScriptName::IncrWindow`], adds the failure and, when it is the window's first,
//! sets the window's expiry (as two commands, a crash between them left a counter without
//! TTL until the next close); each open is published with the rest of
//! its cool-down as TTL. After the cool-down one probe needs the token; a token answered
//! later than [`TOKEN_USE_MAX`] after it was asked for is not used (its cool-down may be
//! running out), and an instance Redis does not answer probes on its own breaker. A
//! successful probe closes the local breaker and deletes `cb:U:open` and the counter.
//!
//! Method kinds: inputs `handle_start`, `handle_reply`, `handle_timeout` (a spurious one is
//! a no-op); outputs `poll_op` (at most one step in flight), `poll_note`, then `poll_timeout`.

mod oracle;
mod tag;

use std::collections::{BTreeMap, VecDeque};

use crate::health::Observation;
use crate::ids::{EndpointId, OpId};
use crate::machine::{Machine, Outgoing};
use crate::ops::{CallKind, KvOp, KvReply, Reply, ScriptName, SetCondition, StoreOp, UpstreamOp};
use crate::tag::{Note, Tag};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

pub use oracle::{
    BREAKER_OPENED, C1, C2, C3, C3_WINDOW, C4, FORCED_OPEN, OPEN_WINS_MERGE,
    OPENED_WHILE_REDIS_DOWN, PROBE_GAP, SERVED_THROUGH_OUTAGE, TOKEN_REFUSED, counter_exact,
    coverage, no_rejection_without_failure, no_traffic_after_open, one_probe_per_cooldown,
};
pub use tag::{BreakerNote, BreakerTag, Probe, Rejection};

/// Failures that open a breaker (consecutive at an instance, or counted in the shared
/// window), and the number of requests C1 allows an instance once a breaker is OPEN.
pub const THRESHOLD: u32 = 3;
/// How long a breaker stays OPEN before one probe may test the upstream.
pub const COOLDOWN: Duration = Duration::from_ms(1_000);
/// The shared failure counter's window (the expiry Correct's `incr_window` sets).
pub const FAIL_WINDOW: Duration = Duration::from_ms(10_000);
/// The longest a Correct instance waits for the probe token's answer and still uses it.
pub const TOKEN_USE_MAX: Duration = Duration::from_ms(200);
/// The most requests one instance serves (a limit on a world's size).
pub const REQUESTS_MAX: usize = 1_000;
/// How long an upstream answer streams.
pub const STREAM: Duration = Duration::from_ms(20);

/// The shared state key of the document's code.
pub fn state_key(endpoint: EndpointId) -> String {
    format!("cb:{endpoint}:state")
}

/// The shared failure counter.
pub fn fails_key(endpoint: EndpointId) -> String {
    format!("cb:{endpoint}:fails")
}

/// Correct's shared OPEN advice.
pub fn open_key(endpoint: EndpointId) -> String {
    format!("cb:{endpoint}:open")
}

/// Correct's half-open probe token.
pub fn probe_key(endpoint: EndpointId) -> String {
    format!("probe:{endpoint}")
}

/// One request an instance is asked to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PlannedRequest {
    /// When it arrives.
    pub at: Timestamp,
    /// The upstream it is for.
    pub endpoint: EndpointId,
}

/// A breaker's state, as the document names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BreakerState {
    /// Requests pass.
    #[default]
    Closed,
    /// Requests are rejected until `at` + [`COOLDOWN`].
    Open {
        /// When it opened (on the clock of whoever opened it).
        at: Timestamp,
    },
    /// A trial request tests the upstream.
    HalfOpen,
}

impl BreakerState {
    /// The stored form: `CLOSED`, `OPEN:<ms>`, `HALF_OPEN`.
    pub fn encode(self) -> String {
        match self {
            BreakerState::Closed => "CLOSED".to_string(),
            BreakerState::Open { at } => format!("OPEN:{}", at.as_ms()),
            BreakerState::HalfOpen => "HALF_OPEN".to_string(),
        }
    }

    /// The stored form read back; anything unreadable is CLOSED (the document's default).
    pub fn decode(s: &str) -> BreakerState {
        match s {
            "HALF_OPEN" => BreakerState::HalfOpen,
            _ => s
                .strip_prefix("OPEN:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .map_or(BreakerState::Closed, |ms| BreakerState::Open {
                    at: Timestamp::from_ms(ms),
                }),
        }
    }
}

/// An instance's in-process memory of one upstream's breaker.
#[derive(Clone, Copy, Debug, Default)]
struct Local {
    /// Buggy: the copy of the last state read or written; Correct: the local breaker.
    state: BreakerState,
    /// Correct: consecutive failures seen by this instance.
    consecutive: u32,
    /// Buggy: the last failure count read or written.
    fails: i64,
    /// Correct: the current OPEN is known to Redis (read from it, or written to it).
    published: bool,
    /// Correct: the last Redis step failed.
    redis_down: bool,
}

/// What the instance is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// No request in progress.
    Idle,
    /// The state read (Buggy, DocFix) or the shared OPEN read (Correct).
    Reading(EndpointId),
    /// Correct: the "OPEN wins" write-back.
    Merging(EndpointId),
    /// Buggy, DocFix: `SET state HALF_OPEN` before the trial request.
    HalfOpening(EndpointId),
    /// Correct: the probe token, asked for at `sent`.
    Token(EndpointId, Timestamp, String),
    /// The upstream call.
    Calling(EndpointId, Probe),
    /// Buggy, DocFix: `GET fails` after a failure.
    FailReading(EndpointId, bool),
    /// `SET fails n` (Buggy, DocFix: then open if `open`) or `incr_window` (Correct).
    FailCounting(EndpointId, bool, i64),
    /// A write whose answer only ends the request, or leads to `then`.
    Writing(Then),
}

/// What follows a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    /// The request is done.
    Done,
    /// Buggy, DocFix: the state written becomes the in-process copy if Redis took it (a
    /// swallowed write changes nothing).
    Cache(EndpointId, BreakerState),
    /// Buggy, DocFix: after `SET state CLOSED`, reset the counter.
    ResetCounter(EndpointId),
    /// Correct: after `DEL open`, delete the counter.
    DeleteCounter(EndpointId),
    /// Correct: the open was published (if the write succeeded).
    Published(EndpointId),
}

/// A gateway instance: its requests in arrival order, each through its upstream's breaker,
/// in one variant (see the module's table).
#[derive(Debug)]
pub struct BreakerInstance {
    variant: Variant,
    instance: u32,
    incarnation: u32,
    plan: Vec<PlannedRequest>,
    next: usize,
    started: bool,
    stage: Stage,
    local: BTreeMap<EndpointId, Local>,
    tokens: u64,
    op_next: u64,
    pending: Option<OpId>,
    ops: VecDeque<Outgoing>,
    notes: VecDeque<Note>,
}

impl BreakerInstance {
    /// Instance `instance` (incarnation `incarnation`) of `variant`, serving `plan` (sorted
    /// by arrival; at most [`REQUESTS_MAX`] are kept).
    pub fn new(
        variant: Variant,
        instance: u32,
        incarnation: u32,
        mut plan: Vec<PlannedRequest>,
    ) -> BreakerInstance {
        plan.sort_by_key(|r| (r.at, r.endpoint));
        plan.truncate(REQUESTS_MAX);
        BreakerInstance {
            variant,
            instance,
            incarnation,
            plan,
            next: 0,
            started: false,
            stage: Stage::Idle,
            local: BTreeMap::new(),
            tokens: 0,
            op_next: 0,
            pending: None,
            ops: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    fn send(&mut self, op: StoreOp, tag: BreakerTag, stage: Stage) {
        assert!(self.pending.is_none(), "one step in flight at a time");
        self.op_next += 1;
        let id = OpId(self.op_next);
        self.pending = Some(id);
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
        self.stage = stage;
    }

    fn kv(&mut self, op: KvOp, tag: BreakerTag, stage: Stage) {
        self.send(StoreOp::Kv(op), tag, stage);
    }

    fn note(&mut self, note: BreakerNote) {
        self.notes.push_back(Note::new(note));
    }

    fn local(&mut self, endpoint: EndpointId) -> &mut Local {
        self.local.entry(endpoint).or_default()
    }

    /// Starts the next request if one has arrived and none is in progress.
    fn start_due(&mut self, now: Timestamp) {
        if self.stage != Stage::Idle || self.pending.is_some() {
            return;
        }
        let Some(request) = self.plan.get(self.next).copied() else {
            return;
        };
        if request.at > now {
            return;
        }
        self.next += 1;
        let (instance, endpoint) = (self.instance, request.endpoint);
        match self.variant {
            Variant::Buggy | Variant::DocFix => self.kv(
                KvOp::Get {
                    key: state_key(endpoint),
                },
                BreakerTag::StateRead { instance, endpoint },
                Stage::Reading(endpoint),
            ),
            Variant::Correct => self.kv(
                KvOp::Get {
                    key: open_key(endpoint),
                },
                BreakerTag::OpenRead { instance, endpoint },
                Stage::Reading(endpoint),
            ),
        }
    }

    fn finish(&mut self, now: Timestamp) {
        self.stage = Stage::Idle;
        self.start_due(now);
    }

    fn reject(&mut self, now: Timestamp, endpoint: EndpointId, why: Rejection) {
        self.note(BreakerNote::Rejected {
            instance: self.instance,
            endpoint,
            why,
        });
        self.finish(now);
    }

    fn call(&mut self, endpoint: EndpointId, probe: Probe) {
        let instance = self.instance;
        self.send(
            StoreOp::Upstream(UpstreamOp {
                endpoint,
                kind: CallKind::Request { stream: STREAM },
            }),
            BreakerTag::Call {
                instance,
                endpoint,
                probe: probe.clone(),
            },
            Stage::Calling(endpoint, probe),
        );
    }

    /// Buggy and DocFix: what the state read says to do.
    fn decide_shared(&mut self, now: Timestamp, endpoint: EndpointId, state: BreakerState) {
        match state {
            BreakerState::Closed => self.call(endpoint, Probe::No),
            BreakerState::HalfOpen => self.call(endpoint, Probe::Trial),
            BreakerState::Open { at } if now < at + COOLDOWN => {
                self.reject(now, endpoint, Rejection::Open)
            }
            BreakerState::Open { .. } => {
                let instance = self.instance;
                self.kv(
                    KvOp::Set {
                        key: state_key(endpoint),
                        value: BreakerState::HalfOpen.encode(),
                        condition: SetCondition::Always,
                        ttl: None,
                    },
                    BreakerTag::StateWrite { instance, endpoint },
                    Stage::HalfOpening(endpoint),
                );
            }
        }
    }

    /// Correct: what the local breaker says to do.
    fn decide_local(&mut self, now: Timestamp, endpoint: EndpointId) {
        match self.local(endpoint).state {
            BreakerState::Closed => self.call(endpoint, Probe::No),
            BreakerState::Open { at } if now < at + COOLDOWN => {
                self.reject(now, endpoint, Rejection::Open)
            }
            // The cool-down elapsed (a half-open left over by a crash cannot happen: the
            // machine is fresh after one).
            BreakerState::Open { .. } | BreakerState::HalfOpen => {
                self.tokens += 1;
                let token = format!("G{}.{}.{}", self.instance, self.incarnation, self.tokens);
                let instance = self.instance;
                self.kv(
                    KvOp::Set {
                        key: probe_key(endpoint),
                        value: token.clone(),
                        condition: SetCondition::IfAbsent,
                        ttl: Some(COOLDOWN),
                    },
                    BreakerTag::ProbeToken {
                        instance,
                        endpoint,
                        token: token.clone(),
                    },
                    Stage::Token(endpoint, now, token),
                );
            }
        }
    }

    fn on_state_read(&mut self, now: Timestamp, endpoint: EndpointId, reply: Reply) {
        let read = match reply {
            Reply::Kv(KvReply::Nil) => Some(BreakerState::Closed),
            Reply::Kv(KvReply::Bulk(s)) => Some(BreakerState::decode(&s)),
            _ => None,
        };
        match (read, self.variant) {
            (Some(state), _) => {
                self.local(endpoint).state = state;
                self.decide_shared(now, endpoint, state);
            }
            // `_get_cb_state` raised: the document's fix fails closed.
            (None, Variant::DocFix) => self.reject(now, endpoint, Rejection::StoreUnavailable),
            // The document's code: the in-process copy, however stale.
            (None, _) => {
                let state = self.local(endpoint).state;
                self.decide_shared(now, endpoint, state);
            }
        }
    }

    fn on_open_read(&mut self, now: Timestamp, endpoint: EndpointId, reply: Reply) {
        let instance = self.instance;
        match reply {
            Reply::Kv(KvReply::Bulk(v)) => {
                let opened = v
                    .parse::<u64>()
                    .map_or(now, |ms| Timestamp::from_ms(ms).min(now));
                let local = self.local(endpoint);
                local.redis_down = false;
                // Advice older than a cool-down is spent: its holder is past it too.
                if local.state == BreakerState::Closed && now < opened + COOLDOWN {
                    local.state = BreakerState::Open { at: opened };
                    local.published = true;
                    self.note(BreakerNote::ForcedOpen { instance, endpoint });
                }
                self.decide_local(now, endpoint);
            }
            Reply::Kv(KvReply::Nil) => {
                let local = self.local(endpoint);
                local.redis_down = false;
                match local.state {
                    BreakerState::Open { at } if !local.published && now < at + COOLDOWN => {
                        // OPEN wins: Redis came back without the OPEN this instance holds.
                        let rest = Duration::from_ms((at + COOLDOWN).as_ms() - now.as_ms());
                        self.kv(
                            KvOp::Set {
                                key: open_key(endpoint),
                                value: at.as_ms().to_string(),
                                condition: SetCondition::Always,
                                ttl: Some(rest),
                            },
                            BreakerTag::OpenWrite {
                                instance,
                                endpoint,
                                merge: true,
                            },
                            Stage::Merging(endpoint),
                        );
                    }
                    _ => self.decide_local(now, endpoint),
                }
            }
            _ => {
                self.local(endpoint).redis_down = true;
                self.decide_local(now, endpoint);
            }
        }
    }

    fn on_token(
        &mut self,
        now: Timestamp,
        endpoint: EndpointId,
        sent: Timestamp,
        token: String,
        reply: Reply,
    ) {
        match reply {
            Reply::Kv(KvReply::Ok) if now <= sent + TOKEN_USE_MAX => {
                self.local(endpoint).redis_down = false;
                self.call(endpoint, Probe::Token(token));
            }
            Reply::Kv(KvReply::Ok) | Reply::Kv(KvReply::Nil) => {
                self.local(endpoint).redis_down = false;
                self.reject(now, endpoint, Rejection::ProbeTaken);
            }
            // Redis does not answer: the local breaker probes on its own.
            _ => {
                self.local(endpoint).redis_down = true;
                self.call(endpoint, Probe::Local);
            }
        }
    }

    fn on_call(&mut self, now: Timestamp, endpoint: EndpointId, probe: Probe, reply: Reply) {
        let failed = match reply {
            Reply::Upstream(u) => Observation::from_status(Some(u.status)).is_failure(),
            _ => true,
        };
        let instance = self.instance;
        match (self.variant, failed) {
            (Variant::Buggy | Variant::DocFix, false) if probe.is_probe() => self.kv(
                KvOp::Set {
                    key: state_key(endpoint),
                    value: BreakerState::Closed.encode(),
                    condition: SetCondition::Always,
                    ttl: None,
                },
                BreakerTag::StateWrite { instance, endpoint },
                Stage::Writing(Then::ResetCounter(endpoint)),
            ),
            (Variant::Buggy | Variant::DocFix, true) => self.kv(
                KvOp::Get {
                    key: fails_key(endpoint),
                },
                BreakerTag::FailRead { instance, endpoint },
                Stage::FailReading(endpoint, probe.is_probe()),
            ),
            (Variant::Correct, false) => {
                let local = self.local(endpoint);
                local.consecutive = 0;
                if probe.is_probe() {
                    local.state = BreakerState::Closed;
                    local.published = false;
                    self.kv(
                        KvOp::Del {
                            key: open_key(endpoint),
                        },
                        BreakerTag::OpenClear { instance, endpoint },
                        Stage::Writing(Then::DeleteCounter(endpoint)),
                    );
                } else {
                    self.finish(now);
                }
            }
            (Variant::Correct, true) => {
                let local = self.local(endpoint);
                local.consecutive = local.consecutive.saturating_add(1);
                self.kv(
                    KvOp::Script {
                        script: ScriptName::IncrWindow,
                        keys: vec![fails_key(endpoint)],
                        args: vec![FAIL_WINDOW.as_ms().to_string()],
                    },
                    BreakerTag::FailCount { instance, endpoint },
                    Stage::FailCounting(endpoint, probe.is_probe(), 0),
                );
            }
            (Variant::Buggy | Variant::DocFix, false) => self.finish(now),
        }
    }

    /// Correct, after a failure was counted (or not: Redis down): open if the local or the
    /// shared count says so, or the probe failed.
    fn maybe_open(&mut self, now: Timestamp, endpoint: EndpointId, probe: bool, shared: i64) {
        let instance = self.instance;
        let local = self.local(endpoint);
        let open = probe || local.consecutive >= THRESHOLD || shared >= i64::from(THRESHOLD);
        let already = matches!(local.state, BreakerState::Open { .. });
        if !open || (already && !probe) {
            self.finish(now);
            return;
        }
        local.state = BreakerState::Open { at: now };
        local.published = false;
        let redis_down = local.redis_down;
        self.note(BreakerNote::OpenedLocally {
            instance,
            endpoint,
            redis_down,
        });
        self.kv(
            KvOp::Set {
                key: open_key(endpoint),
                value: now.as_ms().to_string(),
                condition: SetCondition::Always,
                ttl: Some(COOLDOWN),
            },
            BreakerTag::OpenWrite {
                instance,
                endpoint,
                merge: false,
            },
            Stage::Writing(Then::Published(endpoint)),
        );
    }

    fn on_reply(&mut self, now: Timestamp, reply: Reply) {
        let instance = self.instance;
        let stage = std::mem::replace(&mut self.stage, Stage::Idle);
        let ok = matches!(
            reply,
            Reply::Kv(KvReply::Ok | KvReply::Int(_) | KvReply::Bulk(_) | KvReply::Nil)
        );
        match stage {
            Stage::Idle => {}
            Stage::Reading(endpoint) => match self.variant {
                Variant::Correct => self.on_open_read(now, endpoint, reply),
                Variant::Buggy | Variant::DocFix => self.on_state_read(now, endpoint, reply),
            },
            Stage::Merging(endpoint) => {
                if ok {
                    self.local(endpoint).published = true;
                }
                self.decide_local(now, endpoint);
            }
            Stage::HalfOpening(endpoint) => {
                if ok {
                    self.local(endpoint).state = BreakerState::HalfOpen;
                    self.call(endpoint, Probe::Trial);
                } else if self.variant == Variant::DocFix {
                    self.reject(now, endpoint, Rejection::StoreUnavailable);
                } else {
                    // The write is swallowed; the trial request goes out anyway.
                    self.call(endpoint, Probe::Trial);
                }
            }
            Stage::Token(endpoint, sent, token) => self.on_token(now, endpoint, sent, token, reply),
            Stage::Calling(endpoint, probe) => self.on_call(now, endpoint, probe, reply),
            Stage::FailReading(endpoint, probe) => {
                let read = match reply {
                    Reply::Kv(KvReply::Nil) => Some(0),
                    Reply::Kv(KvReply::Bulk(v)) => v.parse::<i64>().ok(),
                    _ => None,
                };
                let n = match (read, self.variant) {
                    (Some(n), _) => {
                        self.local(endpoint).fails = n;
                        n
                    }
                    // Fail closed has nothing to count with: the failure goes unrecorded.
                    (None, Variant::DocFix) => return self.finish(now),
                    (None, _) => self.local(endpoint).fails,
                };
                let n = n.saturating_add(1);
                self.kv(
                    KvOp::Set {
                        key: fails_key(endpoint),
                        value: n.to_string(),
                        condition: SetCondition::Always,
                        ttl: None,
                    },
                    BreakerTag::FailCount { instance, endpoint },
                    Stage::FailCounting(endpoint, probe, n),
                );
            }
            Stage::FailCounting(endpoint, probe, n) => match self.variant {
                Variant::Buggy | Variant::DocFix => {
                    if ok {
                        self.local(endpoint).fails = n;
                    }
                    if probe || n >= i64::from(THRESHOLD) {
                        let state = BreakerState::Open { at: now };
                        self.kv(
                            KvOp::Set {
                                key: state_key(endpoint),
                                value: state.encode(),
                                condition: SetCondition::Always,
                                ttl: None,
                            },
                            BreakerTag::StateWrite { instance, endpoint },
                            Stage::Writing(Then::Cache(endpoint, state)),
                        );
                    } else {
                        self.finish(now);
                    }
                }
                Variant::Correct => match reply {
                    Reply::Kv(KvReply::Int(count)) => {
                        self.local(endpoint).redis_down = false;
                        self.maybe_open(now, endpoint, probe, count);
                    }
                    _ => {
                        self.local(endpoint).redis_down = true;
                        self.maybe_open(now, endpoint, probe, 0);
                    }
                },
            },
            Stage::Writing(then) => match then {
                Then::Done => self.finish(now),
                Then::Cache(endpoint, state) => {
                    if ok {
                        self.local(endpoint).state = state;
                    }
                    self.finish(now);
                }
                Then::ResetCounter(endpoint) => {
                    if ok {
                        self.local(endpoint).state = BreakerState::Closed;
                    }
                    self.kv(
                        KvOp::Set {
                            key: fails_key(endpoint),
                            value: "0".to_string(),
                            condition: SetCondition::Always,
                            ttl: None,
                        },
                        BreakerTag::FailReset { instance, endpoint },
                        Stage::Writing(Then::Done),
                    );
                }
                Then::DeleteCounter(endpoint) => self.kv(
                    KvOp::Del {
                        key: fails_key(endpoint),
                    },
                    BreakerTag::FailReset { instance, endpoint },
                    Stage::Writing(Then::Done),
                ),
                Then::Published(endpoint) => {
                    let local = self.local(endpoint);
                    if ok {
                        local.published = true;
                        local.redis_down = false;
                    } else {
                        local.redis_down = true;
                    }
                    self.finish(now);
                }
            },
        }
    }
}

impl Machine for BreakerInstance {
    fn handle_start(&mut self, now: Timestamp) {
        if self.started {
            return;
        }
        self.started = true;
        // Requests that arrived while this incarnation was not running were lost with the
        // previous one.
        while self.plan.get(self.next).is_some_and(|r| r.at < now) {
            self.next += 1;
        }
        self.start_due(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        self.on_reply(now, reply);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.started {
            self.start_due(now);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        if self.started && self.stage == Stage::Idle && self.pending.is_none() {
            self.plan.get(self.next).map(|r| r.at)
        } else {
            None
        }
    }

    fn is_idle(&self) -> bool {
        self.stage == Stage::Idle && self.pending.is_none() && self.next >= self.plan.len()
    }
}
