//! R-000-12: the API-key revocation blacklist.
//!
//! Gateway instances ([`KeyInstance`], one machine per instance serving its requests in
//! arrival order) decide whether a request's API key is revoked; an admin ([`KeyAdmin`])
//! creates the key, revokes it and may un-revoke it. The decision is one pure function,
//! [`next_source`]: given what the request has learnt so far ([`Known`]), ask the next
//! source or decide. The variants:
//!
//! | Variant  | sources, in order                                                     | revoke / un-revoke |
//! |----------|-----------------------------------------------------------------------|--------------------|
//! | `Buggy`  | in-memory set; `apikey:status:{k}` (`active` returns early); set `apikey:blacklist` (a member is also added to memory) | `SADD` (and the admin's own instance's memory) / `SREM` in Redis only |
//! | `DocFix` | set `apikey:blacklist` alone; a Redis error accepts (fail-open: the document does not say, and fail-closed is a total outage) | `SADD` / `SREM` |
//! | `Correct`| `revoked:{k}` in Redis (a hit rejects); a miss or an error reads the database row, which decides | the row's `revoked` and `key_version` in one statement, then `SET revoked:{k} {version} PX 1000` / `DEL` |
//!
//! Correct's Redis entry only accelerates rejections and expires ([`REVOKED_TTL`]), so a
//! revocation Redis lost (a failover, a restart, an eviction) costs a database read, never
//! an acceptance, and an un-revocation whose `DEL` Redis lost is seen within the TTL.
//!
//! Drain order as for every [`Machine`]: `poll_op`, then `poll_note`, then `poll_timeout`.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use super::tables::ACCESS_API_KEYS;
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, Cond, FamilyMemory, KvOp, KvReply, LocalBlock, Reply, SetCondition, SqlOp, SqlReply,
    SqlStmt, StoreOp, Value,
};
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

/// B1's declared bound: a request starting later than this after a revocation must reject.
pub const REVOKE_DELTA: Duration = Duration::from_ms(500);
/// Correct's Redis entry of a revocation lives this long.
pub const REVOKED_TTL: Duration = Duration::from_secs(1);
/// Buggy's and DocFix's blacklist set.
pub const BLACKLIST: &str = "apikey:blacklist";

/// Buggy's second Redis key for `key`: its status string.
pub fn status_key(key: &str) -> String {
    format!("apikey:status:{key}")
}

/// Correct's Redis entry for `key`.
pub fn revoked_key(key: &str) -> String {
    format!("revoked:{key}")
}

/// What one source said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Seen {
    /// The source says the key is revoked (a member, `revoked`, a hit, a revoked row).
    Revoked,
    /// The source says it is not (not a member, a miss, an active row).
    Clear,
    /// Buggy's status key says `active`.
    Active,
    /// The source failed (a Redis error or timeout).
    Error,
}

/// A source of the decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The instance's in-memory set (Buggy).
    Memory,
    /// Buggy's status key.
    StatusKey,
    /// The blacklist set (Buggy, DocFix).
    Set,
    /// Correct's Redis entry.
    Cache,
    /// The database row (Correct).
    Db,
}

/// What a request has learnt, source by source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Known {
    seen: Vec<(Source, Seen)>,
}

impl Known {
    /// Nothing yet.
    pub fn new() -> Known {
        Known::default()
    }

    /// Records what `source` said.
    pub fn learn(&mut self, source: Source, seen: Seen) {
        self.seen.push((source, seen));
    }

    /// What `source` said, if asked.
    pub fn get(&self, source: Source) -> Option<Seen> {
        self.seen
            .iter()
            .find(|(s, _)| *s == source)
            .map(|(_, v)| *v)
    }
}

/// The next step of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Next {
    /// Ask this source.
    Ask(Source),
    /// Decide: `true` accepts the key.
    Decide(bool),
}

/// The decision function: the next source to ask, or the decision, from what is known.
pub fn next_source(variant: Variant, known: &Known) -> Next {
    use Seen::*;
    match variant {
        Variant::Buggy => match known.get(Source::Memory) {
            None => Next::Ask(Source::Memory),
            Some(Revoked) => Next::Decide(false),
            Some(_) => match known.get(Source::StatusKey) {
                None => Next::Ask(Source::StatusKey),
                Some(Active) => Next::Decide(true),
                Some(Revoked) => Next::Decide(false),
                Some(_) => match known.get(Source::Set) {
                    None => Next::Ask(Source::Set),
                    Some(Revoked) => Next::Decide(false),
                    // Not a member, or an error the code swallows.
                    Some(_) => Next::Decide(true),
                },
            },
        },
        Variant::DocFix => match known.get(Source::Set) {
            None => Next::Ask(Source::Set),
            Some(Revoked) => Next::Decide(false),
            Some(_) => Next::Decide(true),
        },
        Variant::Correct => match known.get(Source::Cache) {
            None => Next::Ask(Source::Cache),
            Some(Revoked) => Next::Decide(false),
            Some(_) => match known.get(Source::Db) {
                None => Next::Ask(Source::Db),
                Some(Clear) => Next::Decide(true),
                // Revoked, or the database failed too: no authority says the key is good.
                Some(_) => Next::Decide(false),
            },
        },
    }
}

/// Buggy's per-instance in-memory blacklist, the host's memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyMemory {
    revoked: BTreeSet<String>,
}

impl KeyMemory {
    /// An empty set.
    pub fn new() -> KeyMemory {
        KeyMemory::default()
    }
}

/// A block on the in-memory set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyBlock {
    /// Whether `key` is in the set.
    Contains(String),
    /// Adds `key`.
    Add(String),
    /// Removes `key`.
    Remove(String),
}

impl fmt::Display for KeyBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBlock::Contains(k) => write!(f, "{k} in memory?"),
            KeyBlock::Add(k) => write!(f, "memory.add({k})"),
            KeyBlock::Remove(k) => write!(f, "memory.remove({k})"),
        }
    }
}

impl FamilyMemory for KeyMemory {
    type Block = KeyBlock;
    type Output = bool;

    fn run(&mut self, block: &KeyBlock) -> bool {
        match block {
            KeyBlock::Contains(k) => self.revoked.contains(k),
            KeyBlock::Add(k) => self.revoked.insert(k.clone()),
            KeyBlock::Remove(k) => self.revoked.remove(k),
        }
    }
}

/// What an operation of R-000-12 means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyTag {
    /// A request asks a source.
    Check {
        /// The request.
        request: u32,
        /// The source.
        source: Source,
    },
    /// A Buggy instance remembers a key it found in the blacklist.
    Remember {
        /// The request.
        request: u32,
    },
    /// The admin creates the key.
    Create,
    /// The admin's first write of a revocation (`revoked` true) or un-revocation: the
    /// moment it happened as far as the admin knows.
    Decide {
        /// Revoked or not from then on.
        revoked: bool,
    },
    /// The admin's further writes of the same action (other sources, the cache).
    Propagate {
        /// Revoked or not.
        revoked: bool,
    },
}

impl KeyTag {
    /// [`KeyTag::Check`].
    pub const CHECK: TagKind = TagKind::new("key-check");
    /// [`KeyTag::Remember`].
    pub const REMEMBER: TagKind = TagKind::new("key-remember");
    /// [`KeyTag::Create`].
    pub const CREATE: TagKind = TagKind::new("key-create");
    /// [`KeyTag::Decide`].
    pub const DECIDE: TagKind = TagKind::new("key-decide");
    /// [`KeyTag::Propagate`].
    pub const PROPAGATE: TagKind = TagKind::new("key-propagate");

    /// The request an operation serves, if any.
    pub fn request(&self) -> Option<u32> {
        match self {
            KeyTag::Check { request, .. } | KeyTag::Remember { request } => Some(*request),
            _ => None,
        }
    }
}

impl FamilyTag for KeyTag {
    fn kind(&self) -> TagKind {
        match self {
            KeyTag::Check { .. } => KeyTag::CHECK,
            KeyTag::Remember { .. } => KeyTag::REMEMBER,
            KeyTag::Create => KeyTag::CREATE,
            KeyTag::Decide { .. } => KeyTag::DECIDE,
            KeyTag::Propagate { .. } => KeyTag::PROPAGATE,
        }
    }
}

/// A request's decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyDecision {
    /// The request.
    pub request: u32,
    /// The instance.
    pub instance: u32,
    /// Whether the key was accepted.
    pub accepted: bool,
    /// Whether this request is a final probe (judged by B2).
    pub probe: bool,
    /// The last source asked.
    pub by: Source,
}

impl FamilyNote for KeyDecision {}

impl fmt::Display for KeyDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "r{} {} the key (by {:?}){}",
            self.request,
            if self.accepted { "accepts" } else { "rejects" },
            self.by,
            if self.probe { ", final probe" } else { "" }
        )
    }
}

/// One request an instance serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyRequest {
    /// When it arrives.
    pub at: Timestamp,
    /// Its number, unique in the run.
    pub request: u32,
    /// Whether it is a final probe (B2).
    pub probe: bool,
}

/// A gateway instance checking `key` for each of its requests, one at a time. Inputs:
/// `handle_start`, `handle_reply`, `handle_timeout` (the next arrival). A restarted instance
/// (its memory survives: the host's) serves the requests arriving from then on.
#[derive(Debug)]
pub struct KeyInstance {
    variant: Variant,
    instance: u32,
    key: String,
    plan: Vec<KeyRequest>,
    next: usize,
    current: Option<(KeyRequest, Known, Source)>,
    remembering: bool,
    ids: u64,
    pending: Option<OpId>,
    timer: Option<Timestamp>,
    out: VecDeque<Outgoing>,
    notes: VecDeque<Note>,
}

impl KeyInstance {
    /// Instance `instance` checking `key` for `plan`.
    pub fn new(variant: Variant, instance: u32, key: &str, mut plan: Vec<KeyRequest>) -> Self {
        plan.sort_by_key(|r| (r.at, r.request));
        KeyInstance {
            variant,
            instance,
            key: key.to_string(),
            plan,
            next: 0,
            current: None,
            remembering: false,
            ids: 0,
            pending: None,
            timer: None,
            out: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    fn send(&mut self, op: StoreOp, tag: KeyTag) {
        self.ids += 1;
        let id = OpId(self.ids);
        self.pending = Some(id);
        self.out.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
    }

    fn serve(&mut self, now: Timestamp) {
        if self.current.is_some() || self.pending.is_some() {
            return;
        }
        self.timer = None;
        let Some(r) = self.plan.get(self.next).cloned() else {
            return;
        };
        if r.at > now {
            self.timer = Some(r.at);
            return;
        }
        self.next += 1;
        self.current = Some((r, Known::new(), Source::Memory));
        self.step(now);
    }

    /// Asks the next source, or decides.
    fn step(&mut self, now: Timestamp) {
        let Some((r, known, _)) = self.current.clone() else {
            return;
        };
        let request = r.request;
        match next_source(self.variant, &known) {
            Next::Ask(source) => {
                let key = self.key.clone();
                let op = match source {
                    Source::Memory => StoreOp::Local(LocalBlock::new(KeyBlock::Contains(key))),
                    Source::StatusKey => StoreOp::Kv(KvOp::Get {
                        key: status_key(&key),
                    }),
                    Source::Set => StoreOp::Kv(KvOp::SIsMember {
                        key: BLACKLIST.into(),
                        member: key,
                    }),
                    Source::Cache => StoreOp::Kv(KvOp::Get {
                        key: revoked_key(&key),
                    }),
                    Source::Db => StoreOp::Sql(SqlOp::exec(SqlStmt::Select {
                        table: ACCESS_API_KEYS,
                        key,
                        for_update: false,
                    })),
                };
                if let Some(c) = self.current.as_mut() {
                    c.2 = source;
                }
                self.send(op, KeyTag::Check { request, source });
            }
            Next::Decide(accepted) => {
                let by = self.current.as_ref().map_or(Source::Memory, |c| c.2);
                self.notes.push_back(Note::new(KeyDecision {
                    request,
                    instance: self.instance,
                    accepted,
                    probe: r.probe,
                    by,
                }));
                // Buggy remembers a key it found in the blacklist set, for good.
                if self.variant == Variant::Buggy && !accepted && by == Source::Set {
                    self.remembering = true;
                    let block = KeyBlock::Add(self.key.clone());
                    self.send(
                        StoreOp::Local(LocalBlock::new(block)),
                        KeyTag::Remember { request },
                    );
                }
                self.current = None;
                self.serve(now);
            }
        }
    }

    fn seen(source: Source, reply: &Reply) -> Seen {
        match (source, reply) {
            (Source::Memory, Reply::Local(r)) => match r.result.get::<bool>() {
                Some(true) => Seen::Revoked,
                _ => Seen::Clear,
            },
            (Source::StatusKey, Reply::Kv(KvReply::Bulk(v))) if v == "active" => Seen::Active,
            (Source::StatusKey, Reply::Kv(KvReply::Bulk(v))) if v == "revoked" => Seen::Revoked,
            (Source::StatusKey, Reply::Kv(KvReply::Nil | KvReply::Bulk(_))) => Seen::Clear,
            (Source::Set, Reply::Kv(KvReply::Int(1))) => Seen::Revoked,
            (Source::Set, Reply::Kv(KvReply::Int(_))) => Seen::Clear,
            (Source::Cache, Reply::Kv(KvReply::Bulk(_))) => Seen::Revoked,
            (Source::Cache, Reply::Kv(KvReply::Nil)) => Seen::Clear,
            (Source::Db, Reply::Sql(SqlReply::Rows(rows))) => {
                match rows.first().and_then(|r| r.int("revoked")) {
                    Some(0) => Seen::Clear,
                    Some(_) => Seen::Revoked,
                    // No such key: nothing to accept.
                    None => Seen::Revoked,
                }
            }
            _ => Seen::Error,
        }
    }
}

impl Machine for KeyInstance {
    fn handle_start(&mut self, now: Timestamp) {
        self.current = None;
        self.pending = None;
        self.next = self
            .plan
            .iter()
            .position(|r| r.at >= now)
            .unwrap_or(self.plan.len());
        self.serve(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        if self.remembering {
            self.remembering = false;
            self.serve(now);
            return;
        }
        let Some(source) = self.current.as_ref().map(|c| c.2) else {
            return;
        };
        let seen = KeyInstance::seen(source, &reply);
        if let Some(c) = self.current.as_mut() {
            c.1.learn(source, seen);
        }
        self.step(now);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.timer.is_some_and(|t| now >= t) {
            self.serve(now);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timer
    }

    fn is_idle(&self) -> bool {
        self.current.is_none() && self.pending.is_none() && self.next >= self.plan.len()
    }
}

/// One admin action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAction {
    /// Revoke at this time (or once the previous action is done, if later).
    Revoke(Timestamp),
    /// Un-revoke at this time.
    Unrevoke(Timestamp),
}

/// The admin: creates the key at its start, then revokes and un-revokes it. Inputs:
/// `handle_start`, `handle_reply`, `handle_timeout`. Each action's writes go one after the
/// other; a failed write does not stop the next.
#[derive(Debug)]
pub struct KeyAdmin {
    variant: Variant,
    key: String,
    actions: Vec<KeyAction>,
    queue: VecDeque<(StoreOp, KeyTag)>,
    next: usize,
    ids: u64,
    pending: Option<OpId>,
    timer: Option<Timestamp>,
    out: VecDeque<Outgoing>,
}

impl KeyAdmin {
    /// The admin of `key` carrying out `actions` in order.
    pub fn new(variant: Variant, key: &str, actions: Vec<KeyAction>) -> KeyAdmin {
        KeyAdmin {
            variant,
            key: key.to_string(),
            actions,
            queue: VecDeque::new(),
            next: 0,
            ids: 0,
            pending: None,
            timer: None,
            out: VecDeque::new(),
        }
    }

    /// The writes of one action, the first being the one that decides it.
    fn writes(&self, revoked: bool) -> Vec<(StoreOp, KeyTag)> {
        let key = self.key.clone();
        let decide = KeyTag::Decide { revoked };
        let propagate = KeyTag::Propagate { revoked };
        let set = if revoked {
            KvOp::SAdd {
                key: BLACKLIST.into(),
                members: vec![key.clone()],
            }
        } else {
            KvOp::SRem {
                key: BLACKLIST.into(),
                members: vec![key.clone()],
            }
        };
        match self.variant {
            // The revocation also lands in the admin's own instance's memory; the
            // un-revocation is made in Redis only.
            Variant::Buggy if revoked => vec![
                (StoreOp::Kv(set), decide),
                (
                    StoreOp::Local(LocalBlock::new(KeyBlock::Add(key))),
                    propagate,
                ),
            ],
            Variant::Buggy => vec![(StoreOp::Kv(set), decide)],
            Variant::DocFix => vec![(StoreOp::Kv(set), decide)],
            Variant::Correct => {
                let row = SqlStmt::Update {
                    table: ACCESS_API_KEYS,
                    key: key.clone(),
                    guard: Cond::True,
                    set: vec![
                        Assign::Set {
                            column: "revoked".into(),
                            value: Value::Int(i64::from(revoked)),
                        },
                        Assign::Add {
                            column: "key_version".into(),
                            delta: 1,
                        },
                    ],
                };
                let cache = if revoked {
                    KvOp::Set {
                        key: revoked_key(&key),
                        value: "revoked".into(),
                        condition: SetCondition::Always,
                        ttl: Some(REVOKED_TTL),
                    }
                } else {
                    KvOp::Del {
                        key: revoked_key(&key),
                    }
                };
                vec![
                    (StoreOp::Sql(SqlOp::exec(row)), decide),
                    (StoreOp::Kv(cache), propagate),
                ]
            }
        }
    }

    fn pump(&mut self, now: Timestamp) {
        if self.pending.is_some() {
            return;
        }
        if let Some((op, tag)) = self.queue.pop_front() {
            self.ids += 1;
            let id = OpId(self.ids);
            self.pending = Some(id);
            self.out.push_back(Outgoing {
                id,
                op,
                tag: Tag::new(tag),
            });
            return;
        }
        self.timer = None;
        let Some(action) = self.actions.get(self.next).copied() else {
            return;
        };
        let (at, revoked) = match action {
            KeyAction::Revoke(at) => (at, true),
            KeyAction::Unrevoke(at) => (at, false),
        };
        if at > now {
            self.timer = Some(at);
            return;
        }
        self.next += 1;
        self.queue = self.writes(revoked).into();
        self.pump(now);
    }
}

impl Machine for KeyAdmin {
    fn handle_start(&mut self, now: Timestamp) {
        self.next = 0;
        self.pending = None;
        // The key's creation: Buggy's status key says `active` (the row is seeded).
        self.queue.clear();
        if self.variant == Variant::Buggy {
            self.queue.push_back((
                StoreOp::Kv(KvOp::Set {
                    key: status_key(&self.key),
                    value: "active".into(),
                    condition: SetCondition::Always,
                    ttl: None,
                }),
                KeyTag::Create,
            ));
        }
        self.pump(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, _reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        self.pump(now);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.timer.is_some_and(|t| now >= t) {
            self.pump(now);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timer
    }

    fn is_idle(&self) -> bool {
        self.pending.is_none() && self.queue.is_empty() && self.next >= self.actions.len()
    }
}
