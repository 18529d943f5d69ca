//! R-000-11: the per-instance permission cache and its invalidation.
//!
//! Each gateway instance (a host) caches users' effective permissions in process
//! ([`PermCache`], the host's local memory); a [`PermRequest`] authorises one request, a
//! [`PermAdmin`] changes roles' permissions, a [`PermSubscriber`] per instance listens on
//! the invalidation channel. The variants:
//!
//! | Variant  | cache key        | the admin's change                              | a message / a reconnect |
//! |----------|------------------|-------------------------------------------------|-------------------------|
//! | `Buggy`  | `perm:{u}`, 1 h  | commit, then clear the edited user's entry on its own instance | (no subscriber) |
//! | `DocFix` | `perm:{u}`, 1 h  | commit, then `PUBLISH` to every instance        | clear every entry / resubscribe |
//! | `Correct`| `perm:{u}:{epoch}` | the epoch bumped in the change's transaction, then `PUBLISH` | forget the local epoch |
//!
//! Correct's request reads the current epoch (the local copy if fetched less than
//! [`EPOCH_TTL`] ago, else from the database) before it looks up or fills, so a fill computed
//! before a change lands under a dead key, and the bound Δ ([`DELTA`]) holds whatever
//! pub/sub loses: it only shortens staleness.
//!
//! Drain order as for every [`Machine`]: `poll_op`, then `poll_note`, then `poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use super::tables::{ACCESS_EPOCH, ACCESS_ROLES, ACCESS_USERS, EPOCH_ROW};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, Cond, FamilyMemory, KeyedRow, KvOp, LocalBlock, PubSubOp, PubSubReply, Reply, Row,
    SqlOp, SqlReply, SqlStmt, StoreOp, Value,
};
use crate::tag::{FamilyNote, FamilyTag, Note, Tag, TagKind};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

/// I-PERM's declared bound: a request starting later than this after a change commits
/// must not be decided on the permissions from before it.
pub const DELTA: Duration = Duration::from_ms(500);
/// Correct's local copy of the epoch is used for at most this long after its fetch began.
pub const EPOCH_TTL: Duration = Duration::from_ms(300);
/// The document's cache TTL (1 h).
pub const CACHE_TTL: Duration = Duration::from_secs(3_600);
/// The invalidation channel.
pub const PERM_CHANNEL: &str = "access:perm-changed";
/// How long a subscriber waits for one message.
pub const RECEIVE_WAIT: Duration = Duration::from_ms(200);
/// The role graph is followed at most this deep (a cycle or a deeper graph stops there).
pub const ROLE_DEPTH_MAX: usize = 8;

/// Users, their roles and the role graph: the authoritative state (the database's rows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RoleGraph {
    /// Per user, the roles held directly.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Per role, its own permissions and the roles it includes.
    pub roles: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
}

/// A comma-separated set, as the tables and the cache store it.
pub fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

/// The set a comma-separated text holds (empty items dropped).
pub fn split(text: &str) -> BTreeSet<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl RoleGraph {
    /// `user`'s effective permissions: those of every role reachable from the user's roles
    /// through `includes`, at most [`ROLE_DEPTH_MAX`] deep.
    pub fn effective(&self, user: &str) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<String> = self
            .users
            .get(user)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        for _ in 0..ROLE_DEPTH_MAX {
            let mut next = Vec::new();
            for role in frontier {
                if seen.insert(role.clone())
                    && let Some((_, includes)) = self.roles.get(&role)
                {
                    next.extend(includes.iter().cloned());
                }
            }
            frontier = next;
        }
        seen.iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|(perms, _)| perms.iter().cloned())
            .collect()
    }

    /// The rows of [`ACCESS_USERS`] and [`ACCESS_ROLES`].
    pub fn rows(&self) -> Vec<(crate::ops::Table, String, Row)> {
        let mut rows = Vec::new();
        for (user, roles) in &self.users {
            let row = Row::from([("roles".to_string(), Value::Text(join(roles)))]);
            rows.push((ACCESS_USERS, user.clone(), row));
        }
        for (role, (perms, includes)) in &self.roles {
            let row = Row::from([
                ("perms".to_string(), Value::Text(join(perms))),
                ("includes".to_string(), Value::Text(join(includes))),
            ]);
            rows.push((ACCESS_ROLES, role.clone(), row));
        }
        rows
    }

    /// `user`'s effective permissions from the rows a request read: the user's row and
    /// every role row.
    pub fn effective_from_rows(user: &KeyedRow, roles: &[KeyedRow]) -> BTreeSet<String> {
        let text = |row: &KeyedRow, c: &str| match row.columns.get(c) {
            Some(Value::Text(t)) => t.clone(),
            _ => String::new(),
        };
        let mut graph = RoleGraph::default();
        graph
            .users
            .insert(user.key.clone(), split(&text(user, "roles")));
        for r in roles {
            graph.roles.insert(
                r.key.clone(),
                (split(&text(r, "perms")), split(&text(r, "includes"))),
            );
        }
        graph.effective(&user.key)
    }
}

/// One role change by the admin: `role`'s permissions become `perms`, edited on
/// `edited_user`'s page (the one user whose cache the document's code clears).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoleChange {
    /// The role.
    pub role: String,
    /// Its new permissions.
    pub perms: BTreeSet<String>,
    /// The user the admin edited.
    pub edited_user: String,
}

// ---------------------------------------------------------------------------------------------
// The instance's memory.

/// An instance's in-process cache: entries by key with their expiry on the instance's
/// clock, and (Correct) the local copy of the epoch with the time until which it is used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PermCache {
    entries: BTreeMap<String, (String, Timestamp)>,
    epoch: Option<(i64, Timestamp)>,
}

impl PermCache {
    /// An empty cache.
    pub fn new() -> PermCache {
        PermCache::default()
    }
}

/// One synchronous block on an instance's cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PermBlock {
    /// Look `key` up at `now`.
    Lookup {
        /// The key.
        key: String,
        /// The instance's clock.
        now: Timestamp,
    },
    /// Store `perms` under `key` until `expires`.
    Fill {
        /// The key.
        key: String,
        /// The permissions, comma separated.
        perms: String,
        /// Expiry.
        expires: Timestamp,
    },
    /// Remove one key.
    Clear {
        /// The key.
        key: String,
    },
    /// Remove every entry.
    ClearAll,
    /// The local epoch, if known and fresh at `now`.
    EpochGet {
        /// The instance's clock.
        now: Timestamp,
    },
    /// Remember `epoch` until `until`.
    EpochSet {
        /// The epoch read.
        epoch: i64,
        /// Until when it may be used.
        until: Timestamp,
    },
    /// Forget the local epoch (a message or a reconnect).
    EpochForget,
}

impl fmt::Display for PermBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermBlock::Lookup { key, .. } => write!(f, "cache.get({key})"),
            PermBlock::Fill { key, perms, .. } => write!(f, "cache.set({key}, {{{perms}}})"),
            PermBlock::Clear { key } => write!(f, "cache.clear({key})"),
            PermBlock::ClearAll => f.write_str("cache.clear_all()"),
            PermBlock::EpochGet { .. } => f.write_str("local epoch?"),
            PermBlock::EpochSet { epoch, .. } => write!(f, "local epoch := {epoch}"),
            PermBlock::EpochForget => f.write_str("local epoch := unknown"),
        }
    }
}

/// A block's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PermOut {
    /// The entry's permissions.
    Hit(String),
    /// No live entry.
    Miss,
    /// Done.
    Done,
    /// The local epoch, if known and fresh.
    Epoch(Option<i64>),
}

impl fmt::Display for PermOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermOut::Hit(p) => write!(f, "hit {{{p}}}"),
            PermOut::Miss => f.write_str("miss"),
            PermOut::Done => f.write_str("ok"),
            PermOut::Epoch(Some(e)) => write!(f, "epoch {e}"),
            PermOut::Epoch(None) => f.write_str("epoch unknown"),
        }
    }
}

impl FamilyMemory for PermCache {
    type Block = PermBlock;
    type Output = PermOut;

    fn run(&mut self, block: &PermBlock) -> PermOut {
        match block {
            PermBlock::Lookup { key, now } => match self.entries.get(key) {
                Some((perms, expires)) if now < expires => PermOut::Hit(perms.clone()),
                _ => PermOut::Miss,
            },
            PermBlock::Fill {
                key,
                perms,
                expires,
            } => {
                self.entries.insert(key.clone(), (perms.clone(), *expires));
                PermOut::Done
            }
            PermBlock::Clear { key } => {
                self.entries.remove(key);
                PermOut::Done
            }
            PermBlock::ClearAll => {
                self.entries.clear();
                PermOut::Done
            }
            PermBlock::EpochGet { now } => {
                PermOut::Epoch(self.epoch.filter(|(_, until)| now < until).map(|(e, _)| e))
            }
            PermBlock::EpochSet { epoch, until } => {
                self.epoch = Some((*epoch, *until));
                PermOut::Done
            }
            PermBlock::EpochForget => {
                self.epoch = None;
                PermOut::Done
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tags and notes.

/// What an operation of R-000-11 means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PermTag {
    /// A request reads or sets the local epoch, or reads it from the database.
    Epoch {
        /// The request.
        request: u32,
    },
    /// A request looks its user up in the cache.
    Lookup {
        /// The request.
        request: u32,
    },
    /// A request reads the user's roles or the role graph.
    ReadDb {
        /// The request.
        request: u32,
    },
    /// A request fills the cache for `user` on `instance`, under `epoch` (Correct).
    Fill {
        /// The request.
        request: u32,
        /// The instance (host).
        instance: u32,
        /// The user.
        user: String,
        /// The epoch in the key, if any.
        epoch: Option<i64>,
    },
    /// A statement of the admin's change transaction.
    Change {
        /// The change.
        change: usize,
    },
    /// The change's `COMMIT`.
    Commit {
        /// The change.
        change: usize,
    },
    /// The invalidation after the commit (a local clear or a `PUBLISH`).
    Invalidate {
        /// The change.
        change: usize,
    },
    /// A subscriber's subscribe or receive.
    Listen,
    /// A subscriber acting on a message, or (Correct) on a reconnect.
    OnMessage {
        /// Whether a disconnect, not a message, caused it.
        reconnect: bool,
    },
}

impl PermTag {
    /// The request an operation serves, if it serves one.
    pub fn request(&self) -> Option<u32> {
        match self {
            PermTag::Epoch { request }
            | PermTag::Lookup { request }
            | PermTag::ReadDb { request }
            | PermTag::Fill { request, .. } => Some(*request),
            _ => None,
        }
    }

    /// [`PermTag::Epoch`].
    pub const EPOCH: TagKind = TagKind::new("perm-epoch");
    /// [`PermTag::Lookup`].
    pub const LOOKUP: TagKind = TagKind::new("perm-lookup");
    /// [`PermTag::ReadDb`].
    pub const READ_DB: TagKind = TagKind::new("perm-read-db");
    /// [`PermTag::Fill`].
    pub const FILL: TagKind = TagKind::new("perm-fill");
    /// [`PermTag::Change`].
    pub const CHANGE: TagKind = TagKind::new("perm-change");
    /// [`PermTag::Commit`].
    pub const COMMIT: TagKind = TagKind::new("perm-commit");
    /// [`PermTag::Invalidate`].
    pub const INVALIDATE: TagKind = TagKind::new("perm-invalidate");
    /// [`PermTag::Listen`].
    pub const LISTEN: TagKind = TagKind::new("perm-listen");
    /// [`PermTag::OnMessage`].
    pub const ON_MESSAGE: TagKind = TagKind::new("perm-on-message");
}

impl FamilyTag for PermTag {
    fn kind(&self) -> TagKind {
        match self {
            PermTag::Epoch { .. } => PermTag::EPOCH,
            PermTag::Lookup { .. } => PermTag::LOOKUP,
            PermTag::ReadDb { .. } => PermTag::READ_DB,
            PermTag::Fill { .. } => PermTag::FILL,
            PermTag::Change { .. } => PermTag::CHANGE,
            PermTag::Commit { .. } => PermTag::COMMIT,
            PermTag::Invalidate { .. } => PermTag::INVALIDATE,
            PermTag::Listen => PermTag::LISTEN,
            PermTag::OnMessage { .. } => PermTag::ON_MESSAGE,
        }
    }
}

/// What a request reports: its authorisation decision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PermDecision {
    /// The request.
    pub request: u32,
    /// The instance that served it.
    pub instance: u32,
    /// The user.
    pub user: String,
    /// The permission asked for.
    pub perm: String,
    /// Whether it was granted.
    pub allowed: bool,
    /// The permission set it was decided on.
    pub perms: String,
}

impl FamilyNote for PermDecision {}

impl fmt::Display for PermDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "r{} {} {} {} on {{{}}}",
            self.request,
            if self.allowed { "allows" } else { "denies" },
            self.user,
            self.perm,
            self.perms
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Machines.

/// One operation in flight and what to do with its answer.
#[derive(Debug, Default)]
struct Io {
    next: u64,
    pending: Option<OpId>,
    out: VecDeque<Outgoing>,
}

impl Io {
    fn send(&mut self, op: StoreOp, tag: impl FamilyTag) {
        self.next += 1;
        let id = OpId(self.next);
        self.pending = Some(id);
        self.out.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
    }

    fn local(&mut self, block: PermBlock, tag: impl FamilyTag) {
        self.send(StoreOp::Local(LocalBlock::new(block)), tag);
    }

    fn sql(&mut self, op: SqlOp, tag: impl FamilyTag) {
        self.send(StoreOp::Sql(op), tag);
    }

    /// Whether `op` is the answer awaited (and clears it).
    fn take(&mut self, op: OpId) -> bool {
        if self.pending == Some(op) {
            self.pending = None;
            true
        } else {
            false
        }
    }
}

fn local_out(reply: &Reply) -> Option<PermOut> {
    match reply {
        Reply::Local(r) => r.result.get::<PermOut>().cloned(),
        _ => None,
    }
}

fn rows(reply: &Reply) -> Option<&[KeyedRow]> {
    match reply {
        Reply::Sql(SqlReply::Rows(rows)) => Some(rows),
        _ => None,
    }
}

/// Where a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    EpochLocal,
    EpochDb { asked_at: Timestamp },
    EpochSet { epoch: i64 },
    Lookup,
    ReadUser,
    ReadRoles { user: KeyedRow },
    Fill { perms: String },
    Done,
}

/// One request of `user` for `perm`, served by a [`PermInstance`].
#[derive(Debug)]
struct PermRequest {
    variant: Variant,
    request: u32,
    instance: u32,
    user: String,
    perm: String,
    stage: Stage,
    epoch: Option<i64>,
    now: Timestamp,
    io: Io,
    notes: VecDeque<Note>,
}

impl PermRequest {
    /// `first_id`: the operation ids before this request's (an instance numbers all its
    /// requests' operations in one sequence).
    fn new(variant: Variant, r: &PlannedRequest, instance: u32, first_id: u64) -> Self {
        let (request, user, perm) = (r.request, r.user.as_str(), r.perm.as_str());
        PermRequest {
            variant,
            request,
            instance,
            user: user.to_string(),
            perm: perm.to_string(),
            stage: Stage::Done,
            epoch: None,
            now: Timestamp::ZERO,
            io: Io {
                next: first_id,
                ..Io::default()
            },
            notes: VecDeque::new(),
        }
    }

    fn key(&self) -> String {
        match self.epoch {
            Some(e) => format!("perm:{}:{e}", self.user),
            None => format!("perm:{}", self.user),
        }
    }

    fn enter(&mut self, stage: Stage) {
        let request = self.request;
        match &stage {
            Stage::EpochLocal => self.io.local(
                PermBlock::EpochGet { now: self.now },
                PermTag::Epoch { request },
            ),
            Stage::EpochDb { .. } => self.io.sql(
                SqlOp::exec(SqlStmt::Select {
                    table: ACCESS_EPOCH,
                    key: EPOCH_ROW.into(),
                    for_update: false,
                }),
                PermTag::Epoch { request },
            ),
            Stage::EpochSet { epoch } => self.io.local(
                PermBlock::EpochSet {
                    epoch: *epoch,
                    until: self.now + EPOCH_TTL,
                },
                PermTag::Epoch { request },
            ),
            Stage::Lookup => self.io.local(
                PermBlock::Lookup {
                    key: self.key(),
                    now: self.now,
                },
                PermTag::Lookup { request },
            ),
            Stage::ReadUser => self.io.sql(
                SqlOp::exec(SqlStmt::Select {
                    table: ACCESS_USERS,
                    key: self.user.clone(),
                    for_update: false,
                }),
                PermTag::ReadDb { request },
            ),
            Stage::ReadRoles { .. } => self.io.sql(
                SqlOp::exec(SqlStmt::scan(ACCESS_ROLES, Cond::True)),
                PermTag::ReadDb { request },
            ),
            Stage::Fill { perms } => {
                let tag = PermTag::Fill {
                    request,
                    instance: self.instance,
                    user: self.user.clone(),
                    epoch: self.epoch,
                };
                self.io.local(
                    PermBlock::Fill {
                        key: self.key(),
                        perms: perms.clone(),
                        expires: self.now + CACHE_TTL,
                    },
                    tag,
                );
            }
            Stage::Done => {}
        }
        self.stage = stage;
    }

    fn decide(&mut self, perms: String) {
        let allowed = split(&perms).contains(&self.perm);
        self.notes.push_back(Note::new(PermDecision {
            request: self.request,
            instance: self.instance,
            user: self.user.clone(),
            perm: self.perm.clone(),
            allowed,
            perms,
        }));
        self.enter(Stage::Done);
    }
}

impl Machine for PermRequest {
    fn handle_start(&mut self, now: Timestamp) {
        self.now = now;
        self.epoch = None;
        match self.variant {
            Variant::Correct => self.enter(Stage::EpochLocal),
            Variant::Buggy | Variant::DocFix => self.enter(Stage::Lookup),
        }
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if !self.io.take(op) {
            return;
        }
        self.now = now;
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        match stage {
            Stage::EpochLocal => match local_out(&reply) {
                Some(PermOut::Epoch(Some(e))) => {
                    self.epoch = Some(e);
                    self.enter(Stage::Lookup);
                }
                _ => self.enter(Stage::EpochDb { asked_at: now }),
            },
            Stage::EpochDb { asked_at } => {
                let epoch = rows(&reply)
                    .and_then(|r| r.first())
                    .and_then(|r| r.int("epoch"));
                match epoch {
                    Some(e) => {
                        self.epoch = Some(e);
                        // Valid from when the read was asked: its answer is at least that new.
                        self.now = asked_at;
                        self.enter(Stage::EpochSet { epoch: e });
                        self.now = now;
                    }
                    // No epoch, no decision: the request fails closed (a 503).
                    None => self.enter(Stage::Done),
                }
            }
            Stage::EpochSet { .. } => self.enter(Stage::Lookup),
            Stage::Lookup => match local_out(&reply) {
                Some(PermOut::Hit(perms)) => self.decide(perms),
                _ => self.enter(Stage::ReadUser),
            },
            Stage::ReadUser => match rows(&reply).and_then(|r| r.first()) {
                Some(user) => {
                    let user = user.clone();
                    self.enter(Stage::ReadRoles { user });
                }
                None if rows(&reply).is_some() => self.decide(String::new()),
                None => self.enter(Stage::Done),
            },
            Stage::ReadRoles { user } => match rows(&reply) {
                Some(roles) => {
                    let perms = join(&RoleGraph::effective_from_rows(&user, roles));
                    self.enter(Stage::Fill { perms });
                }
                None => self.enter(Stage::Done),
            },
            Stage::Fill { perms } => self.decide(perms),
            Stage::Done => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.io.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.stage == Stage::Done && self.io.pending.is_none()
    }
}

/// One request an instance serves: when it arrives, for whom, for what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannedRequest {
    /// When it arrives (on the instance's clock).
    pub at: Timestamp,
    /// Its number, unique in the run.
    pub request: u32,
    /// The user.
    pub user: String,
    /// The permission asked for.
    pub perm: String,
}

/// A gateway instance serving its requests one at a time, in arrival order (a request that
/// arrives while another is served waits). One machine per instance, so that the times its
/// cache and its local epoch hold are all read on one clock. Inputs: `handle_start`,
/// `handle_reply`, `handle_timeout` (the next arrival). A restarted instance serves only
/// the requests that arrive from then on.
#[derive(Debug)]
pub struct PermInstance {
    variant: Variant,
    instance: u32,
    plan: Vec<PlannedRequest>,
    next: usize,
    current: Option<PermRequest>,
    ids: u64,
    timer: Option<Timestamp>,
    out: VecDeque<Outgoing>,
    notes: VecDeque<Note>,
}

impl PermInstance {
    /// Instance `instance` serving `plan` (sorted by arrival here).
    pub fn new(variant: Variant, instance: u32, mut plan: Vec<PlannedRequest>) -> PermInstance {
        plan.sort_by_key(|r| (r.at, r.request));
        PermInstance {
            variant,
            instance,
            plan,
            next: 0,
            current: None,
            ids: 0,
            timer: None,
            out: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    /// Moves the current request's output to the instance's, and serves the next request
    /// once it is done.
    fn drain(&mut self, now: Timestamp) {
        if let Some(r) = self.current.as_mut() {
            self.ids = r.io.next;
            self.out.extend(std::iter::from_fn(|| r.poll_op()));
            self.notes.extend(std::iter::from_fn(|| r.poll_note()));
            if r.is_idle() {
                self.current = None;
            }
        }
        self.serve(now);
    }

    fn serve(&mut self, now: Timestamp) {
        if self.current.is_some() {
            return;
        }
        self.timer = None;
        let Some(r) = self.plan.get(self.next) else {
            return;
        };
        if r.at > now {
            self.timer = Some(r.at);
            return;
        }
        let mut request = PermRequest::new(self.variant, r, self.instance, self.ids);
        self.next += 1;
        request.handle_start(now);
        self.current = Some(request);
        self.drain(now);
    }
}

impl Machine for PermInstance {
    fn handle_start(&mut self, now: Timestamp) {
        self.current = None;
        self.next = self
            .plan
            .iter()
            .position(|r| r.at >= now)
            .unwrap_or(self.plan.len());
        self.serve(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if let Some(r) = self.current.as_mut() {
            r.handle_reply(now, op, reply);
        }
        self.drain(now);
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
        self.current.is_none() && self.next >= self.plan.len()
    }
}

/// Where the admin is in its current change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdminStep {
    Begin,
    Update,
    Bump,
    Commit,
    Invalidate,
    Rollback,
}

/// The admin applying its role changes one after the other. Inputs: `handle_start`,
/// `handle_reply`.
#[derive(Debug)]
pub struct PermAdmin {
    variant: Variant,
    changes: Vec<RoleChange>,
    change: usize,
    step: AdminStep,
    io: Io,
}

impl PermAdmin {
    /// An admin applying `changes` in order.
    pub fn new(variant: Variant, changes: Vec<RoleChange>) -> PermAdmin {
        PermAdmin {
            variant,
            changes,
            change: 0,
            step: AdminStep::Begin,
            io: Io::default(),
        }
    }

    fn run(&mut self, step: AdminStep) {
        self.step = step;
        let change = self.change;
        let Some(c) = self.changes.get(change).cloned() else {
            return;
        };
        match step {
            AdminStep::Begin => self.io.sql(SqlOp::Begin, PermTag::Change { change }),
            AdminStep::Update => self.io.sql(
                SqlOp::exec(SqlStmt::Update {
                    table: ACCESS_ROLES,
                    key: c.role.clone(),
                    guard: Cond::True,
                    set: vec![Assign::Set {
                        column: "perms".into(),
                        value: Value::Text(join(&c.perms)),
                    }],
                }),
                PermTag::Change { change },
            ),
            AdminStep::Bump => self.io.sql(
                SqlOp::exec(SqlStmt::Update {
                    table: ACCESS_EPOCH,
                    key: EPOCH_ROW.into(),
                    guard: Cond::True,
                    set: vec![Assign::Add {
                        column: "epoch".into(),
                        delta: 1,
                    }],
                }),
                PermTag::Change { change },
            ),
            AdminStep::Commit => self.io.sql(SqlOp::Commit, PermTag::Commit { change }),
            AdminStep::Invalidate => match self.variant {
                Variant::Buggy => self.io.local(
                    PermBlock::Clear {
                        key: format!("perm:{}", c.edited_user),
                    },
                    PermTag::Invalidate { change },
                ),
                Variant::DocFix | Variant::Correct => self.io.send(
                    StoreOp::Kv(KvOp::Publish {
                        channel: PERM_CHANNEL.into(),
                        message: c.role.clone(),
                    }),
                    PermTag::Invalidate { change },
                ),
            },
            AdminStep::Rollback => self.io.sql(SqlOp::Rollback, PermTag::Change { change }),
        }
    }

    fn next_change(&mut self) {
        self.change += 1;
        self.run(AdminStep::Begin);
    }
}

impl Machine for PermAdmin {
    fn handle_start(&mut self, _now: Timestamp) {
        self.change = 0;
        self.run(AdminStep::Begin);
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if !self.io.take(op) {
            return;
        }
        let ok = match &reply {
            Reply::Sql(SqlReply::Rows(rows)) => !rows.is_empty(),
            Reply::Sql(SqlReply::Ok | SqlReply::Committed) => true,
            _ => false,
        };
        match self.step {
            AdminStep::Begin if ok => self.run(AdminStep::Update),
            AdminStep::Update if ok && self.variant == Variant::Correct => {
                self.run(AdminStep::Bump)
            }
            AdminStep::Update | AdminStep::Bump if ok => self.run(AdminStep::Commit),
            AdminStep::Commit if ok => self.run(AdminStep::Invalidate),
            // Committed or not, its answer lost: invalidate anyway (it may have committed).
            AdminStep::Commit if matches!(reply, Reply::Timeout) => self.run(AdminStep::Invalidate),
            AdminStep::Commit | AdminStep::Invalidate | AdminStep::Rollback => self.next_change(),
            AdminStep::Begin | AdminStep::Update | AdminStep::Bump => self.run(AdminStep::Rollback),
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.io.out.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.io.pending.is_none()
    }
}

/// Where a subscriber is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SubStep {
    Subscribe,
    Receive,
    Act,
    Stopped,
}

/// An instance's invalidation subscriber, listening until `until` (Buggy's does nothing: the
/// document's code has none).
/// Inputs: `handle_start`, `handle_reply`.
#[derive(Debug)]
pub struct PermSubscriber {
    variant: Variant,
    until: Timestamp,
    step: SubStep,
    after_act: SubStep,
    io: Io,
}

impl PermSubscriber {
    /// A subscriber that stops listening at `until`.
    pub fn new(variant: Variant, until: Timestamp) -> PermSubscriber {
        PermSubscriber {
            variant,
            until,
            step: SubStep::Stopped,
            after_act: SubStep::Stopped,
            io: Io::default(),
        }
    }

    fn go(&mut self, step: SubStep, now: Timestamp) {
        if now >= self.until {
            self.step = SubStep::Stopped;
            return;
        }
        self.step = step;
        match step {
            SubStep::Subscribe => self.io.send(
                StoreOp::PubSub(PubSubOp::Subscribe {
                    channels: vec![PERM_CHANNEL.into()],
                }),
                PermTag::Listen,
            ),
            SubStep::Receive => self.io.send(
                StoreOp::PubSub(PubSubOp::Receive { wait: RECEIVE_WAIT }),
                PermTag::Listen,
            ),
            SubStep::Act | SubStep::Stopped => {}
        }
    }

    /// Acts on a message (`reconnect` false) or a lost subscription, then goes on to `then`.
    fn act(&mut self, reconnect: bool, then: SubStep, now: Timestamp) {
        let block = match (self.variant, reconnect) {
            (Variant::Correct, _) => Some(PermBlock::EpochForget),
            (Variant::DocFix, false) => Some(PermBlock::ClearAll),
            _ => None,
        };
        match block {
            Some(block) => {
                self.step = SubStep::Act;
                self.io.local(block, PermTag::OnMessage { reconnect });
                self.after_act = then;
            }
            None => self.go(then, now),
        }
    }
}

impl Machine for PermSubscriber {
    fn handle_start(&mut self, now: Timestamp) {
        if self.variant == Variant::Buggy {
            // The document's code has no invalidation channel.
            self.step = SubStep::Stopped;
            return;
        }
        // A (re)started instance knows no epoch and has no subscription.
        self.act(true, SubStep::Subscribe, now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if !self.io.take(op) {
            return;
        }
        match (self.step, reply) {
            (SubStep::Act, _) => self.go(self.after_act, now),
            (SubStep::Subscribe, Reply::PubSub(PubSubReply::Subscribed { .. })) => {
                self.go(SubStep::Receive, now)
            }
            (SubStep::Receive, Reply::PubSub(PubSubReply::Message { .. })) => {
                self.act(false, SubStep::Receive, now)
            }
            (SubStep::Receive, Reply::PubSub(PubSubReply::NoMessage)) => {
                self.go(SubStep::Receive, now)
            }
            // Disconnected, a timeout or an error: the subscription may be gone.
            _ => self.act(true, SubStep::Subscribe, now),
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.io.out.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.step == SubStep::Stopped && self.io.pending.is_none()
    }
}
