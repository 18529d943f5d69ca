//! R-004-08: the TTLs' source of truth during a mixed-version rollout. The revision retunes
//! the TTLs by hand-editing literals in five Lua scripts and ships the edit as a canary
//! (10% -> 50% -> 100% of the scheduler instances, rollback by the old image), so old and
//! new instances write different TTLs on the same keys and a node key's TTL is whatever the
//! instance that served its last heartbeat wrote.
//!
//! The model: the balancer spreads a node's registration and heartbeats round robin over
//! [`SLOTS`] scheduler instances, starting at the node's own offset; a [`Rollout`] says how
//! many of them run the new image from when on. A [`RolloutNode`] is the document's [`Node`]
//! whose script calls each carry the TTLs of the instance serving them. Every variant uses
//! R-004-01's fixed selection (the lease checked in the selecting script, epoch fencing), so
//! that the race is the TTLs' source alone:
//!
//! | variant | old image | new image | a call carries |
//! |---|---|---|---|
//! | `Buggy` | 3600 s / 3600 s literals | the same (the code) | its image's literals |
//! | `DocFix` | 3600 s / 3600 s literals | 60 s node TTL, the pool TTL of line 89 missed (3600 s) | its image's literals |
//! | `Correct` | TTLs from the published configuration | the same | the configuration the instance read and its version, checked by the script ([`versioned`]) against the one published in Redis |
//!
//! In Correct the configuration (version 2: 60 s / 70 s) is published by a [`Publisher`]
//! before the nodes start; the instances that ran before the publication still hold version
//! 1 (the code's 3600 s) in memory. The versioned script refuses their calls (`-2`, nothing
//! written); the instance then reads the published configuration ([`KvOp::HGetAll`], the
//! version first: a later publication makes the retry refused again, never applied with
//! stale TTLs) and calls again. An instance started after the publication (a new image, a
//! redeployed or rolled-back one) reads it at its start.
//!
//! I-LIVE during the rollout is L2 ([`binding_liveness`](super::binding_liveness)) with
//! `T_dead` the new target, [`ROLLOUT_T_DEAD`] (the pool TTL, 70 s).
//!
//! Drain order of [`RolloutNode`]: its own operations (a configuration read, a retry) first,
//! then the inner node's, each rewritten as it leaves; replies to the inner node's operations
//! are forwarded once the instance's call is settled. Spurious `handle_timeout` calls do
//! nothing beyond the inner node's own.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use super::tag::SchedTag;
use super::{Node, NodeConfig, scripts};
use crate::history::{History, OpRecord};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{KvOp, KvReply, KvView, Reply, ScriptName, StoreOp};
use crate::oracle::{Property, Verdict, Violation};
use crate::tag::{FamilyTag, Note, Tag, TagKind};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

/// The scheduler instances behind the balancer.
pub const SLOTS: u32 = 10;

/// I-LIVE's bound during the rollout: the new target's pool TTL (60 s node TTL + 10 s).
pub const ROLLOUT_T_DEAD: Duration = Duration::from_secs(70);

/// C1: one source for the TTLs.
pub const C1: Property = Property::always(
    "C1",
    "every registration and heartbeat writes the one configured node and pool TTL",
);

/// A configured call was refused for a stale configuration version (the protection fired).
pub const STALE_CONFIG_REFUSED: Property = Property::protection(
    "stale-config-refused",
    "a registration or heartbeat carrying a configuration version other than the published \
     one was refused before any write",
);

/// The field of the configuration hash holding its version.
const VERSION: &str = "version";
/// The fields holding the TTLs (milliseconds).
const NODE_TTL: &str = "node_ttl_ms";
const POOL_TTL: &str = "pool_ttl_ms";

/// The configuration hash in `ns`: `version`, `node_ttl_ms`, `pool_ttl_ms`.
pub fn config_key(ns: &str) -> String {
    format!("{ns}config")
}

/// The TTLs a registration or heartbeat writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ttls {
    /// The node key's TTL.
    pub node: Duration,
    /// The pool set's TTL.
    pub pool: Duration,
}

impl Ttls {
    /// The code's literals: 3600 s and 3600 s.
    pub const CODE: Ttls = Ttls {
        node: Duration::from_secs(3_600),
        pool: Duration::from_secs(3_600),
    };
    /// The revision's target: twice the 30 s heartbeat, and 10 s more for the pool.
    pub const TARGET: Ttls = Ttls {
        node: Duration::from_secs(60),
        pool: Duration::from_secs(70),
    };
    /// The revision's hand edit with line 89 (a pool TTL) missed.
    pub const HAND_EDITED: Ttls = Ttls {
        node: Duration::from_secs(60),
        pool: Duration::from_secs(3_600),
    };
}

/// A published configuration: its version and its TTLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// The version (1 to 15 digits in the script).
    pub version: u64,
    /// The TTLs.
    pub ttls: Ttls,
}

impl Config {
    /// Version 1: the code's values, what the instances that ran before the rollout hold.
    pub const BEFORE: Config = Config {
        version: 1,
        ttls: Ttls::CODE,
    };
    /// Version 2: the target, published before the rollout.
    pub const TARGET: Config = Config {
        version: 2,
        ttls: Ttls::TARGET,
    };

    /// Parses an `HGETALL` of the configuration hash; `None` if a field is missing or not a
    /// number.
    fn parse(reply: &KvReply) -> Option<Config> {
        let KvReply::Pairs(pairs) = reply else {
            return None;
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(f, _)| f == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        Some(Config {
            version: field(VERSION)?,
            ttls: Ttls {
                node: Duration::from_ms(field(NODE_TTL)?),
                pool: Duration::from_ms(field(POOL_TTL)?),
            },
        })
    }
}

/// Where the instances take the TTLs they write from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TtlSource {
    /// Each image carries its literals.
    Literals {
        /// The old image's.
        old: Ttls,
        /// The new image's.
        new: Ttls,
    },
    /// One configuration published in Redis; instances pass the one they read, with its
    /// version, and the script refuses a version that is not the published one.
    Published {
        /// The published configuration.
        current: Config,
        /// What the instances that ran before the publication hold.
        stale: Config,
    },
}

impl TtlSource {
    /// The variant's: the code's literals in both images, the hand edit in the new image,
    /// or the published configuration.
    pub fn of(variant: Variant) -> TtlSource {
        match variant {
            Variant::Buggy => TtlSource::Literals {
                old: Ttls::CODE,
                new: Ttls::CODE,
            },
            Variant::DocFix => TtlSource::Literals {
                old: Ttls::CODE,
                new: Ttls::HAND_EDITED,
            },
            Variant::Correct => TtlSource::Published {
                current: Config::TARGET,
                stale: Config::BEFORE,
            },
        }
    }
}

/// How many of the [`SLOTS`] instances run the new image, from when on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rollout {
    /// `(from, new instances)`, in time order; before the first, none.
    phases: Vec<(Timestamp, u32)>,
}

impl Rollout {
    /// Phases `(from, new instances)`; counts above [`SLOTS`] are capped, and the phases are
    /// sorted by time.
    pub fn new(mut phases: Vec<(Timestamp, u32)>) -> Rollout {
        phases.sort_by_key(|(at, _)| *at);
        for (_, n) in &mut phases {
            *n = (*n).min(SLOTS);
        }
        Rollout { phases }
    }

    /// `new` instances from the start on.
    pub fn fixed(new: u32) -> Rollout {
        Rollout::new(vec![(Timestamp::ZERO, new)])
    }

    /// How many instances run the new image at `now`.
    pub fn new_at(&self, now: Timestamp) -> u32 {
        self.phases
            .iter()
            .take_while(|(at, _)| *at <= now)
            .last()
            .map_or(0, |(_, n)| *n)
    }

    /// Whether instance `slot` runs the new image at `now` (the first `new_at` slots do).
    pub fn is_new(&self, slot: u32, now: Timestamp) -> bool {
        slot < self.new_at(now)
    }

    /// Whether instance `slot` has run the old image without a restart since the start: it
    /// was never redeployed up to `now`.
    pub fn never_redeployed(&self, slot: u32, now: Timestamp) -> bool {
        self.phases
            .iter()
            .take_while(|(at, _)| *at <= now)
            .all(|(_, n)| slot >= *n)
    }
}

/// The tags of the rollout's own operations.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RolloutTag {
    /// The operator publishes the configuration.
    Publish,
    /// An instance reads the published configuration after a refusal.
    ReadConfig {
        /// The node whose call it serves.
        node: String,
    },
}

impl RolloutTag {
    /// [`RolloutTag::Publish`].
    pub const PUBLISH: TagKind = TagKind::new("sched-publish-config");
    /// [`RolloutTag::ReadConfig`].
    pub const READ_CONFIG: TagKind = TagKind::new("sched-read-config");
}

impl FamilyTag for RolloutTag {
    fn kind(&self) -> TagKind {
        match self {
            RolloutTag::Publish => RolloutTag::PUBLISH,
            RolloutTag::ReadConfig { .. } => RolloutTag::READ_CONFIG,
        }
    }
}

impl fmt::Display for RolloutTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RolloutTag::Publish => write!(f, "publishes the configuration"),
            RolloutTag::ReadConfig { node } => write!(f, "reads the configuration for {node}"),
        }
    }
}

/// A configured call waiting to be settled: the inner node's operation and the instance
/// serving it.
#[derive(Clone, Debug)]
struct Served {
    inner: OpId,
    slot: u32,
    tag: Tag,
    /// `register` or `heartbeat`.
    mode: &'static str,
    /// The inner script's `ARGV` after the node id (TTLs replaced when sent).
    args: Vec<String>,
    /// Refusals so far.
    refusals: u32,
}

/// Refusals of one call before the instance gives up and answers the node with an error
/// (each refusal means a publication between the read and the call).
const REFUSALS_MAX: u32 = 3;

/// Own operation ids start here, far above the inner node's.
const OWN_BASE: u64 = 1 << 48;

/// A worker node whose registration and heartbeats are served by the instance the balancer
/// picks (see the module's docs).
#[derive(Debug)]
pub struct RolloutNode {
    inner: Node,
    name: String,
    rollout: Rollout,
    source: TtlSource,
    offset: u32,
    /// Registration and heartbeat calls sent so far: the balancer's round robin.
    calls: u64,
    now: Timestamp,
    /// Correct: the configuration each instance read after a refusal.
    read: BTreeMap<u32, Config>,
    /// Correct: calls in flight, by the id they were sent under.
    served: BTreeMap<OpId, Served>,
    /// Correct: configuration reads in flight.
    reading: BTreeMap<OpId, Served>,
    out: VecDeque<Outgoing>,
    next_own: u64,
}

impl RolloutNode {
    /// Node `name` (see [`Node::new`]: its `config` gives the heartbeat and fencing; the TTLs
    /// come from `source`), served from instance `offset` on.
    pub fn new(
        name: &str,
        config: NodeConfig,
        job_length: Duration,
        rollout: Rollout,
        source: TtlSource,
        offset: u32,
    ) -> RolloutNode {
        RolloutNode {
            inner: Node::new(name, config, job_length),
            name: name.into(),
            rollout,
            source,
            offset: offset % SLOTS,
            calls: 0,
            now: Timestamp::ZERO,
            read: BTreeMap::new(),
            served: BTreeMap::new(),
            reading: BTreeMap::new(),
            out: VecDeque::new(),
            next_own: OWN_BASE,
        }
    }

    fn own_id(&mut self) -> OpId {
        self.next_own += 1;
        OpId(self.next_own)
    }

    /// The configuration instance `slot` holds (Correct).
    fn config_of(&self, slot: u32, current: Config, stale: Config) -> Config {
        if let Some(c) = self.read.get(&slot) {
            return *c;
        }
        if self.rollout.never_redeployed(slot, self.now) {
            stale
        } else {
            current
        }
    }

    /// The versioned call for `served` with `config`.
    fn versioned_op(&self, served: &Served, config: Config) -> StoreOp {
        let mut args = vec![
            self.name.clone(),
            config.version.to_string(),
            served.mode.to_string(),
        ];
        args.extend(with_ttls(&served.args, config.ttls));
        StoreOp::Kv(KvOp::Script {
            script: ScriptName::SchedVersioned,
            keys: vec![scripts::NAMESPACE.to_string()],
            args,
        })
    }

    /// Rewrites one of the inner node's operations as the serving instance sends it.
    fn rewrite(&mut self, out: Outgoing) -> Outgoing {
        let mode = match out.tag.get::<SchedTag>() {
            Some(SchedTag::Register { .. }) => "register",
            Some(SchedTag::Heartbeat { .. }) => "heartbeat",
            _ => return out,
        };
        let StoreOp::Kv(KvOp::Script { script, keys, args }) = &out.op else {
            return out;
        };
        let slot = u32::try_from((u64::from(self.offset) + self.calls) % u64::from(SLOTS))
            .unwrap_or_default();
        self.calls += 1;
        match self.source {
            TtlSource::Literals { old, new } => {
                let ttls = if self.rollout.is_new(slot, self.now) {
                    new
                } else {
                    old
                };
                let mut args = args.clone();
                if let Some(rest) = args.get_mut(1..) {
                    let replaced = with_ttls(rest, ttls);
                    rest.clone_from_slice(&replaced);
                }
                Outgoing {
                    id: out.id,
                    op: StoreOp::Kv(KvOp::Script {
                        script: *script,
                        keys: keys.clone(),
                        args,
                    }),
                    tag: out.tag,
                }
            }
            TtlSource::Published { current, stale } => {
                let served = Served {
                    inner: out.id,
                    slot,
                    tag: out.tag.clone(),
                    mode,
                    args: args.get(1..).map(<[String]>::to_vec).unwrap_or_default(),
                    refusals: 0,
                };
                let op = self.versioned_op(&served, self.config_of(slot, current, stale));
                self.served.insert(out.id, served);
                Outgoing {
                    id: out.id,
                    op,
                    tag: out.tag,
                }
            }
        }
    }

    /// Settles a configured call's reply: a refusal reads the configuration, anything else
    /// goes to the inner node.
    fn settle(&mut self, now: Timestamp, served: Served, reply: Reply) {
        if reply == Reply::Kv(KvReply::Int(-2)) && served.refusals < REFUSALS_MAX {
            let id = self.own_id();
            let op = StoreOp::Kv(KvOp::HGetAll {
                key: config_key(scripts::NAMESPACE),
            });
            let tag = Tag::new(RolloutTag::ReadConfig {
                node: self.name.clone(),
            });
            self.reading.insert(
                id,
                Served {
                    refusals: served.refusals + 1,
                    ..served
                },
            );
            self.out.push_back(Outgoing { id, op, tag });
            return;
        }
        self.inner.handle_reply(now, served.inner, reply);
    }
}

/// `args` (an inner registration or heartbeat's `ARGV` after the node id: node TTL, pool TTL,
/// then the rest) with the TTLs replaced.
fn with_ttls(args: &[String], ttls: Ttls) -> Vec<String> {
    args.iter()
        .enumerate()
        .map(|(i, a)| match i {
            0 => ttls.node.as_ms().to_string(),
            1 => ttls.pool.as_ms().to_string(),
            _ => a.clone(),
        })
        .collect()
}

impl Machine for RolloutNode {
    fn handle_start(&mut self, now: Timestamp) {
        self.now = now;
        self.inner.handle_start(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        self.now = now;
        if let Some(served) = self.served.remove(&op) {
            self.settle(now, served, reply);
            return;
        }
        if let Some(served) = self.reading.remove(&op) {
            match reply {
                Reply::Kv(r) => match Config::parse(&r) {
                    Some(config) => {
                        self.read.insert(served.slot, config);
                        let id = self.own_id();
                        let op = self.versioned_op(&served, config);
                        let tag = served.tag.clone();
                        self.served.insert(id, served);
                        self.out.push_back(Outgoing { id, op, tag });
                    }
                    None => {
                        let error = KvReply::Error("ERR no published configuration".into());
                        self.inner.handle_reply(now, served.inner, Reply::Kv(error));
                    }
                },
                other => self.inner.handle_reply(now, served.inner, other),
            }
            return;
        }
        self.inner.handle_reply(now, op, reply);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.now = now;
        self.inner.handle_timeout(now);
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        if let Some(out) = self.out.pop_front() {
            return Some(out);
        }
        let out = self.inner.poll_op()?;
        Some(self.rewrite(out))
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.inner.poll_note()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.inner.poll_timeout()
    }

    fn is_idle(&self) -> bool {
        self.out.is_empty()
            && self.served.is_empty()
            && self.reading.is_empty()
            && self.inner.is_idle()
    }
}

/// Attempts of the publication before the operator gives up.
const PUBLISH_ATTEMPTS_MAX: u32 = 5;

/// The operator: publishes one configuration in the configuration hash at its start (all
/// fields in one `HSET`), again after an unknown outcome.
#[derive(Debug)]
pub struct Publisher {
    config: Config,
    attempts: u32,
    in_flight: Option<OpId>,
    out: VecDeque<Outgoing>,
}

impl Publisher {
    /// An operator publishing `config`.
    pub fn new(config: Config) -> Publisher {
        Publisher {
            config,
            attempts: 0,
            in_flight: None,
            out: VecDeque::new(),
        }
    }

    fn publish(&mut self) {
        if self.attempts >= PUBLISH_ATTEMPTS_MAX {
            return;
        }
        self.attempts += 1;
        let id = OpId(u64::from(self.attempts));
        let op = StoreOp::Kv(KvOp::HSet {
            key: config_key(scripts::NAMESPACE),
            pairs: vec![
                (VERSION.into(), self.config.version.to_string()),
                (NODE_TTL.into(), self.config.ttls.node.as_ms().to_string()),
                (POOL_TTL.into(), self.config.ttls.pool.as_ms().to_string()),
            ],
        });
        self.in_flight = Some(id);
        self.out.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(RolloutTag::Publish),
        });
    }
}

impl Machine for Publisher {
    fn handle_start(&mut self, _now: Timestamp) {
        self.publish();
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if self.in_flight != Some(op) {
            return;
        }
        self.in_flight = None;
        if !matches!(reply, Reply::Kv(KvReply::Int(_))) {
            self.publish();
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_none() && self.out.is_empty()
    }
}

/// `versioned(KEYS[1]=ns; ARGV: N, version, mode, then the registration's or heartbeat's
/// ARGV after N)`: the fenced registration (`mode` `register`) or heartbeat (`heartbeat`) of
/// [`scripts`], applied only if `version` (1 to 15 digits) is the one published in the
/// configuration hash `{ns}config` (field `version`, compared as text with the canonical
/// number); otherwise `-2` and nothing written. The arguments are checked before the read:
/// the namespace, the node id, the version, the mode.
pub fn versioned(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
    let err = |m: &str| KvReply::Error(format!("ERR {m}"));
    let Some(ns) = keys.first() else {
        return err("missing key");
    };
    match args.first() {
        None => return err("missing argument"),
        Some(n) if n.is_empty() => return err("empty id"),
        Some(_) => {}
    }
    let version = match args.get(1) {
        None => return err("missing argument"),
        Some(v) if v.is_empty() || v.len() > 15 || !v.bytes().all(|b| b.is_ascii_digit()) => {
            return err("argument must be a non-negative integer");
        }
        Some(v) => match v.parse::<u64>() {
            Ok(v) => v.to_string(),
            Err(_) => return err("bad integer"),
        },
    };
    let mode = match args.get(2).map(String::as_str) {
        None => return err("missing argument"),
        Some(m @ ("register" | "heartbeat")) => m,
        Some(_) => return err("unknown mode"),
    };
    let published = view.call(&KvOp::HGet {
        key: config_key(ns),
        field: VERSION.into(),
    });
    match published {
        KvReply::Error(e) => return KvReply::Error(e),
        KvReply::Bulk(v) if v == version => {}
        _ => return KvReply::Int(-2),
    }
    let inner: Vec<String> = args[..1].iter().chain(&args[3..]).cloned().collect();
    if mode == "register" {
        scripts::register(view, keys, &inner)
    } else {
        scripts::heartbeat(view, keys, &inner)
    }
}

fn is_versioned_beat(op: &OpRecord) -> bool {
    matches!(
        op.tag.get::<SchedTag>(),
        Some(SchedTag::Register { .. } | SchedTag::Heartbeat { .. })
    ) && matches!(
        op.op,
        StoreOp::Kv(KvOp::Script {
            script: ScriptName::SchedVersioned,
            ..
        })
    )
}

/// Counts [`STALE_CONFIG_REFUSED`]: configured calls the store applied and answered `-2`
/// (a failover that lost nothing of them: a refusal writes nothing either way).
pub fn config_coverage(history: &History, verdict: &mut Verdict) {
    let refused = history
        .ops
        .iter()
        .filter(|op| is_versioned_beat(op))
        .filter(|op| op.applied_at.is_some() && op.result == Some(Reply::Kv(KvReply::Int(-2))))
        .count() as u64;
    verdict.count(STALE_CONFIG_REFUSED.name, refused);
}

/// C1: every registration or heartbeat the store applied (and that wrote: not refused)
/// carried `expected`, the one configuration's TTLs. Reports the first few that did not, each
/// with the node, the time and the TTLs it wrote.
pub fn one_ttl_source(history: &History, expected: Ttls) -> Verdict {
    let mut verdict = Verdict::default();
    for (i, op) in history.ops.iter().enumerate() {
        let Some(at) = op.applied_at else {
            continue;
        };
        let node = match op.tag.get::<SchedTag>() {
            Some(SchedTag::Register { node } | SchedTag::Heartbeat { node }) => node,
            _ => continue,
        };
        // A refusal (-2), a lost lease (-1) or an error wrote no TTL.
        if matches!(op.result, Some(Reply::Kv(KvReply::Int(n))) if n < 0)
            || matches!(op.result, None | Some(Reply::Kv(KvReply::Error(_))))
        {
            continue;
        }
        let StoreOp::Kv(KvOp::Script { script, args, .. }) = &op.op else {
            continue;
        };
        // The TTLs follow the node id, and in the versioned call its version and mode.
        let first = if *script == ScriptName::SchedVersioned {
            3
        } else {
            1
        };
        let ms = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
        let (Some(n), Some(p)) = (ms(first), ms(first + 1)) else {
            continue;
        };
        let wrote = Ttls {
            node: Duration::from_ms(n),
            pool: Duration::from_ms(p),
        };
        if wrote != expected && verdict.violations.len() < 3 {
            verdict.violations.push(Violation {
                invariant: C1.name.into(),
                explanation: format!(
                    "{}'s {} for {node} at {at} wrote a node TTL of {} and a pool TTL of {}, \
                     not the configured {} and {}",
                    history.name(op.process),
                    op.tag.kind().name(),
                    wrote.node,
                    wrote.pool,
                    expected.node,
                    expected.pool
                ),
                ops: vec![i],
            });
        }
    }
    verdict
}
