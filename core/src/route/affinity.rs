//! R-000-07: a session's routing affinity after failover retries.
//!
//! A gateway request of session `S` reads the session's affinity record (the Redis hash
//! `aff:S`, fields `upstream` and, for `Correct`, `version`), sends its first attempt to the
//! affinity upstream (else to its own first choice), retries once on the other endpoint after
//! a failure, and feeds every attempt's outcome back: the bandit's per-upstream counter
//! (`bandit:E<n>` fields `ok`/`fail`, `HINCRBY`) and the affinity record.
//!
//! | variant   | feedback per attempt                                                              |
//! |-----------|-----------------------------------------------------------------------------------|
//! | `Buggy`   | `_record_bandit_feedback` fired and forgotten after every attempt, success or failure: `HSET aff:S upstream U` with the attempt's upstream, and the credit to `ctx.upstream`, read when the task runs, after the retry switched it |
//! | `DocFix`  | the document's fix: `HSET` only on the final success, `DEL aff:S` on every failure; credit awaited, to the attempt's upstream |
//! | `Correct` | `set_if_newer(aff:S, version = the request's start sequence, upstream U)` on the final success; on a failure of `U` the versioned compare-and-delete (only if the record still names `U` with a version at most the request's); credit awaited, to the upstream captured at dispatch |
//!
//! The start sequence is the request's arrival order at the gateway, a parameter of the
//! request (a gateway-wide monotonic request id): it does not depend on what Redis keeps
//! across a failover or restart.
//!
//! Method kinds: inputs `handle_start`, `handle_reply` (replies to fired-and-forgotten writes
//! are ignored); outputs `poll_op`. No timers.

use std::collections::VecDeque;

use crate::ids::{EndpointId, OpId};
use crate::machine::{Machine, Outgoing};
use crate::ops::{CallKind, KvOp, KvReply, Reply, ScriptName, StoreOp, UpstreamOp};
use crate::tag::{FamilyTag, Tag, TagKind};
use crate::time::Duration;
use crate::time::Timestamp;
use crate::variant::Variant;

pub mod oracle;

/// The affinity record's key for a session.
pub fn affinity_key(session: &str) -> String {
    format!("aff:{session}")
}

/// The bandit's counters' key for an upstream.
pub fn bandit_key(endpoint: EndpointId) -> String {
    format!("bandit:{endpoint}")
}

/// The two endpoints a request may use: its first choice and the other one.
pub const ENDPOINTS: [EndpointId; 2] = [EndpointId(1), EndpointId(2)];

/// Which request (start sequence and incarnation of its process) an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestRef {
    /// The request's start sequence (its arrival order at the gateway).
    pub seq: u64,
    /// The incarnation of the process handling it (a restart handles it afresh).
    pub incarnation: u32,
}

/// What an operation of an affinity request means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AffinityTag {
    /// The read of the session's affinity.
    Read {
        /// The request.
        request: RequestRef,
    },
    /// Attempt `n` (from 1) sent to `endpoint`.
    Attempt {
        /// The request.
        request: RequestRef,
        /// The attempt's number.
        n: u32,
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// The credit of attempt `n`'s outcome to `endpoint`'s bandit counter.
    Credit {
        /// The request.
        request: RequestRef,
        /// The attempt credited.
        n: u32,
        /// The endpoint credited.
        endpoint: EndpointId,
    },
    /// A write of the affinity record naming `endpoint`.
    Set {
        /// The request.
        request: RequestRef,
        /// The upstream written.
        endpoint: EndpointId,
    },
    /// A clear of the affinity record after a failure observed on `endpoint`.
    Clear {
        /// The request.
        request: RequestRef,
        /// The upstream that failed.
        endpoint: EndpointId,
    },
}

impl AffinityTag {
    /// [`AffinityTag::Read`]'s kind.
    pub const READ: TagKind = TagKind::new("affinity-read");
    /// [`AffinityTag::Attempt`]'s kind.
    pub const ATTEMPT: TagKind = TagKind::new("affinity-attempt");
    /// [`AffinityTag::Credit`]'s kind.
    pub const CREDIT: TagKind = TagKind::new("affinity-credit");
    /// [`AffinityTag::Set`]'s kind.
    pub const SET: TagKind = TagKind::new("affinity-set");
    /// [`AffinityTag::Clear`]'s kind.
    pub const CLEAR: TagKind = TagKind::new("affinity-clear");

    /// The affinity tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&AffinityTag> {
        tag.get::<AffinityTag>()
    }

    /// The request the operation belongs to.
    pub fn request(&self) -> RequestRef {
        match self {
            AffinityTag::Read { request }
            | AffinityTag::Attempt { request, .. }
            | AffinityTag::Credit { request, .. }
            | AffinityTag::Set { request, .. }
            | AffinityTag::Clear { request, .. } => *request,
        }
    }
}

impl FamilyTag for AffinityTag {
    fn kind(&self) -> TagKind {
        match self {
            AffinityTag::Read { .. } => AffinityTag::READ,
            AffinityTag::Attempt { .. } => AffinityTag::ATTEMPT,
            AffinityTag::Credit { .. } => AffinityTag::CREDIT,
            AffinityTag::Set { .. } => AffinityTag::SET,
            AffinityTag::Clear { .. } => AffinityTag::CLEAR,
        }
    }
}

/// One request of a session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AffinityConfig {
    /// The protocol.
    pub variant: Variant,
    /// The session.
    pub session: String,
    /// The request's start sequence (at least 1).
    pub seq: u64,
    /// Its first choice when the session has no affinity.
    pub first_choice: EndpointId,
    /// How long a successful answer streams.
    pub stream: Duration,
}

/// The most attempts a request makes (the first and one failover retry).
pub const ATTEMPTS_MAX: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Reading,
    Calling(u32, EndpointId),
    /// Awaiting the credit of attempt n (DocFix, Correct), then the affinity step.
    Crediting(u32, EndpointId, bool),
    /// Awaiting the affinity write or clear after attempt n.
    Feeding(u32, EndpointId, bool),
    Done,
}

/// A gateway request of one session (see the module's table).
#[derive(Debug)]
pub struct AffinityRequest {
    cfg: AffinityConfig,
    request: RequestRef,
    state: State,
    next_id: u64,
    pending: Option<OpId>,
    ops: VecDeque<Outgoing>,
}

impl AffinityRequest {
    /// The request of `cfg`, handled by its process's incarnation `incarnation`.
    pub fn new(cfg: AffinityConfig, incarnation: u32) -> AffinityRequest {
        let request = RequestRef {
            seq: cfg.seq,
            incarnation,
        };
        AffinityRequest {
            cfg,
            request,
            state: State::Idle,
            next_id: 0,
            pending: None,
            ops: VecDeque::new(),
        }
    }

    /// Sends an operation; `awaited` ones are the step in flight, the others are fired and
    /// forgotten.
    fn send(&mut self, op: StoreOp, tag: AffinityTag, awaited: bool) {
        self.next_id += 1;
        let id = OpId(self.next_id);
        if awaited {
            self.pending = Some(id);
        }
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
    }

    fn other(endpoint: EndpointId) -> EndpointId {
        if endpoint == ENDPOINTS[0] {
            ENDPOINTS[1]
        } else {
            ENDPOINTS[0]
        }
    }

    fn attempt(&mut self, n: u32, endpoint: EndpointId) {
        let tag = AffinityTag::Attempt {
            request: self.request,
            n,
            endpoint,
        };
        let op = StoreOp::Upstream(UpstreamOp {
            endpoint,
            kind: CallKind::Request {
                stream: self.cfg.stream,
            },
        });
        self.send(op, tag, true);
        self.state = State::Calling(n, endpoint);
    }

    fn credit_op(&self, n: u32, endpoint: EndpointId, ok: bool) -> (StoreOp, AffinityTag) {
        let op = StoreOp::Kv(KvOp::HIncrBy {
            key: bandit_key(endpoint),
            field: if ok { "ok" } else { "fail" }.to_string(),
            delta: 1,
        });
        let tag = AffinityTag::Credit {
            request: self.request,
            n,
            endpoint,
        };
        (op, tag)
    }

    fn set_op(&self, endpoint: EndpointId) -> StoreOp {
        let key = affinity_key(&self.cfg.session);
        match self.cfg.variant {
            Variant::Buggy | Variant::DocFix => StoreOp::Kv(KvOp::HSet {
                key,
                pairs: vec![("upstream".to_string(), endpoint.to_string())],
            }),
            Variant::Correct => StoreOp::Kv(KvOp::Script {
                script: ScriptName::SetIfNewer,
                keys: vec![key],
                args: vec![
                    self.cfg.seq.to_string(),
                    "upstream".to_string(),
                    endpoint.to_string(),
                ],
            }),
        }
    }

    fn clear_op(&self, endpoint: EndpointId) -> StoreOp {
        let key = affinity_key(&self.cfg.session);
        match self.cfg.variant {
            Variant::Buggy | Variant::DocFix => StoreOp::Kv(KvOp::Del { key }),
            Variant::Correct => StoreOp::Kv(KvOp::Script {
                script: ScriptName::CompareAndDeleteVersioned,
                keys: vec![key],
                args: vec![
                    "upstream".to_string(),
                    endpoint.to_string(),
                    self.cfg.seq.to_string(),
                ],
            }),
        }
    }

    /// After attempt `n` on `endpoint`: retry on the other endpoint, or finish.
    fn next(&mut self, n: u32, endpoint: EndpointId, ok: bool) {
        if !ok && n < ATTEMPTS_MAX {
            self.attempt(n + 1, Self::other(endpoint));
        } else {
            self.state = State::Done;
        }
    }

    /// The affinity step after attempt `n` (DocFix, Correct): a write on the final success,
    /// a clear on a failure; else go on.
    fn feed(&mut self, n: u32, endpoint: EndpointId, ok: bool) {
        let request = self.request;
        if ok {
            let op = self.set_op(endpoint);
            self.send(op, AffinityTag::Set { request, endpoint }, true);
        } else {
            let op = self.clear_op(endpoint);
            self.send(op, AffinityTag::Clear { request, endpoint }, true);
        }
        self.state = State::Feeding(n, endpoint, ok);
    }

    fn called(&mut self, n: u32, endpoint: EndpointId, ok: bool) {
        match self.cfg.variant {
            Variant::Buggy => {
                // The feedback task is created now and runs at the request's next await: the
                // affinity write carries the attempt's upstream (an argument), the credit
                // reads `ctx.upstream`, which a retry has switched by then.
                let retry = !ok && n < ATTEMPTS_MAX;
                let ctx_upstream = if retry {
                    Self::other(endpoint)
                } else {
                    endpoint
                };
                let request = self.request;
                let set = self.set_op(endpoint);
                self.send(set, AffinityTag::Set { request, endpoint }, false);
                let (credit, tag) = self.credit_op(n, ctx_upstream, ok);
                self.send(credit, tag, false);
                self.next(n, endpoint, ok);
            }
            Variant::DocFix | Variant::Correct => {
                let (credit, tag) = self.credit_op(n, endpoint, ok);
                self.send(credit, tag, true);
                self.state = State::Crediting(n, endpoint, ok);
            }
        }
    }
}

impl Machine for AffinityRequest {
    fn handle_start(&mut self, _now: Timestamp) {
        if self.state != State::Idle {
            return;
        }
        let op = StoreOp::Kv(KvOp::HGet {
            key: affinity_key(&self.cfg.session),
            field: "upstream".to_string(),
        });
        let request = self.request;
        self.send(op, AffinityTag::Read { request }, true);
        self.state = State::Reading;
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        match self.state {
            State::Reading => {
                let affinity = match &reply {
                    Reply::Kv(KvReply::Bulk(v)) => {
                        ENDPOINTS.into_iter().find(|e| e.to_string() == *v)
                    }
                    _ => None,
                };
                let first = affinity.unwrap_or(self.cfg.first_choice);
                self.attempt(1, first);
            }
            State::Calling(n, endpoint) => {
                let ok = matches!(reply, Reply::Upstream(u) if u.status == 200);
                self.called(n, endpoint, ok);
            }
            // A success is always final: its affinity write; a failure: its clear.
            State::Crediting(n, endpoint, ok) => self.feed(n, endpoint, ok),
            State::Feeding(n, endpoint, ok) => self.next(n, endpoint, ok),
            State::Idle | State::Done => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.state == State::Done && self.pending.is_none()
    }
}
