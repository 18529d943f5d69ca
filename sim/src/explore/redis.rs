//! The Redis model: single-threaded command and script atomicity, typed values (string,
//! hash, set, sorted set) with `WRONGTYPE` errors, a hash, set or sorted set deleted with its
//! last field or member, per-key TTL on the virtual clock (a TTL applies to the whole key),
//! `PEXPIRE` on a missing key creating nothing, scripts that keep their writes on a runtime
//! error, and a primary with an asynchronous replica: a failover promotes the replica and
//! loses every write not yet replicated; a restart without persistence loses everything.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;

use racelab_core::{Duration, KvOp, KvReply, KvView, SetCondition, Timestamp, WRONGTYPE};

/// Redis' reply to `SET ... PX ms` with a time it refuses.
const INVALID_SET_EXPIRE: &str = "ERR invalid expire time in 'set' command";

/// Redis' reply to `EXPIRE key seconds` whose milliseconds overflow.
const INVALID_EXPIRE: &str = "ERR invalid expire time in 'expire' command";

/// Redis' reply to `INCRBY` on a value that is not exactly an integer's canonical text.
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Redis' reply to `HINCRBY` on a field that is not exactly an integer's canonical text.
const HASH_NOT_AN_INTEGER: &str = "ERR hash value is not an integer";

/// Redis' reply to an increment past `i64`.
const OVERFLOW: &str = "ERR increment or decrement would overflow";

/// A key's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Str(String),
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    /// Member to score.
    ZSet(BTreeMap<String, i64>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// An empty collection, which Redis never keeps.
    fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    value: Value,
    expires_at: Option<Timestamp>,
}

impl Entry {
    /// A new key's entry: `fresh`'s empty value, no TTL.
    fn fresh(fresh: fn() -> Value) -> Entry {
        Entry {
            value: fresh(),
            expires_at: None,
        }
    }
}

/// Keys and entries are shared (`Rc`) between the primary, the replication backlog and the
/// replica, so that a write queues its entry without a copy: a later write to the same key
/// copies the entry only while the backlog or the replica still holds the older version
/// (`Rc::make_mut`), and a failover's promotion copies no entry at all.
type Keyspace = BTreeMap<Rc<str>, Rc<Entry>>;

/// The primary's key space, its replica, and the replication backlog.
#[derive(Debug)]
pub struct RedisModel {
    primary: Keyspace,
    replica: Keyspace,
    /// Writes applied on the primary and not yet on the replica: (applied at, key, whole new
    /// entry or deletion).
    backlog: VecDeque<(Timestamp, Rc<str>, Option<Rc<Entry>>)>,
    /// How long a write takes to reach the replica.
    replication_lag: Duration,
    /// Writes applied on the primary since the start, the lost ones included.
    writes: u64,
    /// Subscriber connections by id (the caller names them), with their channels and the
    /// messages published to those and not yet received.
    subscribers: BTreeMap<u64, Subscription>,
    /// Subscribers that messages cannot reach at the moment (partitioned): `PUBLISH` counts
    /// them, as Redis counts a connection it still believes open, but they miss the message.
    unreachable: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Subscription {
    channels: BTreeSet<String>,
    queue: VecDeque<(String, String)>,
}

/// What became of the writes a failover or restart found not yet replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostWrites {
    /// The write count ([`RedisModel::writes`]) of the first lost write; every later write
    /// up to the count at the fault is lost too.
    pub first: u64,
    /// How many writes were lost.
    pub count: u64,
}

/// A key space alone, without replica, backlog or subscribers: Redis' commands and scripts
/// as a sequential specification, one at a time and atomically, through the same code as
/// [`RedisModel::execute`]. The linearizability checker ([`super::linear`]) steps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeySpace(Keyspace);

impl KeySpace {
    /// An empty key space.
    pub fn new() -> KeySpace {
        KeySpace::default()
    }

    /// Executes one command or script atomically at `now`.
    pub fn execute(&mut self, now: Timestamp, op: &KvOp) -> KvReply {
        let mut model = RedisModel::new(Duration::ZERO);
        model.primary = std::mem::take(&mut self.0);
        let reply = model.execute(now, op);
        self.0 = std::mem::take(&mut model.primary);
        reply
    }

    /// The keys with a TTL, with the instant each expires at.
    pub fn expiring(&self) -> Vec<(String, Timestamp)> {
        self.0
            .iter()
            .filter_map(|(k, e)| e.expires_at.map(|at| (k.to_string(), at)))
            .collect()
    }

    /// Removes `key`, as its expiry does.
    pub fn expire_now(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// A view of the primary at one instant, through which commands and scripts run.
struct View<'a> {
    model: &'a mut RedisModel,
    now: Timestamp,
}

/// `ERR wrong number of arguments for 'cmd' command`.
fn arity(cmd: &str) -> KvReply {
    KvReply::Error(format!("ERR wrong number of arguments for '{cmd}' command"))
}

fn wrongtype() -> KvReply {
    KvReply::Error(WRONGTYPE.into())
}

fn count(n: usize) -> KvReply {
    KvReply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl RedisModel {
    /// An empty Redis whose replica trails the primary by `replication_lag`.
    pub fn new(replication_lag: Duration) -> RedisModel {
        RedisModel {
            primary: Keyspace::new(),
            replica: Keyspace::new(),
            backlog: VecDeque::new(),
            replication_lag,
            writes: 0,
            subscribers: BTreeMap::new(),
            unreachable: BTreeSet::new(),
        }
    }

    /// `SUBSCRIBE` on subscriber connection `sub`: the number of channels it is subscribed
    /// to afterwards.
    pub fn subscribe(&mut self, sub: u64, channels: &[String]) -> u64 {
        let s = self.subscribers.entry(sub).or_default();
        s.channels.extend(channels.iter().cloned());
        s.channels.len() as u64
    }

    /// The next message for `sub` (channel, payload): `None` if it is not subscribed (never,
    /// or it lost its subscriptions), `Some(None)` if nothing is queued.
    pub fn next_message(&mut self, sub: u64) -> Option<Option<(String, String)>> {
        self.subscribers.get_mut(&sub).map(|s| s.queue.pop_front())
    }

    /// Whether `sub` has a message queued.
    pub fn has_message(&self, sub: u64) -> bool {
        self.subscribers
            .get(&sub)
            .is_some_and(|s| !s.queue.is_empty())
    }

    /// The subscriber connection closed (its process crashed): its subscriptions and
    /// queued messages are gone.
    pub fn disconnect(&mut self, sub: u64) {
        self.subscribers.remove(&sub);
        self.unreachable.remove(&sub);
    }

    /// Whether messages can reach `sub` (false while it is partitioned from Redis).
    pub fn set_reachable(&mut self, sub: u64, reachable: bool) {
        if reachable {
            self.unreachable.remove(&sub);
        } else {
            self.unreachable.insert(sub);
        }
    }

    /// How many writes the primary has applied since the start: the `n`-th write is numbered
    /// `n`. A command or script that changed nothing leaves the count as it was.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// When the replica receives a write applied at `applied_at`, unless a fault loses it first.
    pub fn replicated_at(&self, applied_at: Timestamp) -> Timestamp {
        applied_at + self.replication_lag
    }

    /// The writes not yet on the replica at `now`: the newest `count` of them.
    fn unreplicated(&mut self, now: Timestamp) -> Option<LostWrites> {
        self.replicate(now);
        let count = self.backlog.len() as u64;
        (count > 0).then(|| LostWrites {
            first: self.writes - count + 1,
            count,
        })
    }

    /// Executes one command atomically at `now`.
    pub fn execute(&mut self, now: Timestamp, op: &KvOp) -> KvReply {
        self.replicate(now);
        let mut view = View { model: self, now };
        match op {
            KvOp::Script { script, keys, args } => script.run(&mut view, keys, args),
            op => view.command(op),
        }
    }

    /// The replica is promoted: writes applied less than the replication lag ago are lost,
    /// and returned.
    pub fn failover(&mut self, now: Timestamp) -> Option<LostWrites> {
        let lost = self.unreplicated(now);
        self.primary = self.replica.clone();
        self.backlog.clear();
        // Clients are disconnected from the old primary: every subscription is gone.
        self.subscribers.clear();
        lost
    }

    /// A restart without persistence: every key is gone, on both nodes. Returns the writes
    /// that had not even reached the replica (the replicated ones were durable, then wiped).
    pub fn restart(&mut self, now: Timestamp) -> Option<LostWrites> {
        let lost = self.unreplicated(now);
        self.primary.clear();
        self.replica.clear();
        self.backlog.clear();
        self.subscribers.clear();
        lost
    }

    /// The live string value of `key` at `now`, for tests and state snapshots (`None` when
    /// missing or of another type).
    pub fn peek(&self, now: Timestamp, key: &str) -> Option<&str> {
        match &self.live(now, key)?.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `TYPE key` at `now`: "string", "hash", "set", "zset", or `None` when missing.
    pub fn type_of(&self, now: Timestamp, key: &str) -> Option<&'static str> {
        self.live(now, key).map(|e| e.value.type_name())
    }

    fn live(&self, now: Timestamp, key: &str) -> Option<&Entry> {
        self.primary
            .get(key)
            .map(|e| &**e)
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
    }

    fn replicate(&mut self, now: Timestamp) {
        while let Some((at, _, _)) = self.backlog.front() {
            if *at + self.replication_lag > now {
                break;
            }
            let Some((_, key, entry)) = self.backlog.pop_front() else {
                break;
            };
            match entry {
                Some(e) => self.replica.insert(key, e),
                None => self.replica.remove(&key),
            };
        }
    }
}

/// Whether Redis accepts `PX ttl` in `SET`: a positive number of milliseconds that fits its
/// signed 64 bits (0 is refused; a negative one cannot be written as a [`Duration`]).
///
/// Redis also refuses a time whose sum with its Unix clock overflows (within about
/// 1.8 * 10^12 ms of `i64::MAX`); the model's clock is virtual, so it does not refuse those.
/// The same holds for `EXPIRE`.
fn valid_set_ttl(ttl: Duration) -> bool {
    ttl.as_ms() > 0 && i64::try_from(ttl.as_ms()).is_ok()
}

/// A value as Redis reads an integer from a string (`string2ll`): the canonical decimal text
/// of an `i64` and nothing else. No sign `+`, no leading zeros ("0" itself is fine), no
/// "-0", no spaces, not empty, no overflow. Rust's `str::parse::<i64>` is more lenient
/// ("+5", "05", "-0"), so it cannot be used alone.
fn parse_redis_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = match digits.as_bytes() {
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if canonical { text.parse().ok() } else { None }
}

impl View<'_> {
    /// The key space's own string for `key` if it holds the key (shared with the backlog, so
    /// a write to an existing key allocates no key string), or a new one.
    fn key_of(&self, key: &str) -> Rc<str> {
        self.model
            .primary
            .get_key_value(key)
            .map_or_else(|| Rc::from(key), |(k, _)| Rc::clone(k))
    }

    /// Counts a write the primary applied and queues it for the replica: the key's whole
    /// new entry (shared with the primary until either changes), or its deletion.
    fn record(&mut self, key: Rc<str>, entry: Option<Rc<Entry>>) {
        self.model.backlog.push_back((self.now, key, entry));
        self.model.writes += 1;
    }

    /// Replaces the entry at `key`, or deletes the key.
    fn write(&mut self, key: &str, entry: Option<Entry>) {
        match entry {
            Some(e) => {
                let k = self.key_of(key);
                let e = Rc::new(e);
                self.model.primary.insert(Rc::clone(&k), Rc::clone(&e));
                self.record(k, Some(e));
            }
            None => {
                let k = self
                    .model
                    .primary
                    .remove_entry(key)
                    .map_or_else(|| Rc::from(key), |(k, _)| k);
                self.record(k, None);
            }
        }
    }

    /// Changes the value of `pick`'s type at `key` in place and records the write, keeping
    /// the key's TTL: a missing (or expired) key starts as `fresh` without one, and a
    /// collection left empty deletes the key (as Redis does when the last field or member
    /// goes). A key of another type is `WRONGTYPE`, with nothing changed. `change` cannot
    /// fail: the caller checks what can fail first.
    fn update<T, R>(
        &mut self,
        key: &str,
        fresh: fn() -> Value,
        pick: fn(&mut Value) -> Option<&mut T>,
        change: impl FnOnce(&mut T) -> R,
    ) -> Result<R, KvReply> {
        let now = self.now;
        let k = self.key_of(key);
        let slot = self
            .model
            .primary
            .entry(Rc::clone(&k))
            .or_insert_with(|| Rc::new(Entry::fresh(fresh)));
        if slot.expires_at.is_some_and(|at| at <= now) {
            *slot = Rc::new(Entry::fresh(fresh));
        }
        // Copies the entry only if the backlog or the replica still holds this version.
        let entry = Rc::make_mut(slot);
        let Some(value) = pick(&mut entry.value) else {
            // Only a live key of another type gets here (a fresh one is of `pick`'s type),
            // and it is left as it was.
            return Err(wrongtype());
        };
        let result = change(value);
        if entry.value.is_empty_collection() {
            self.model.primary.remove(key);
            self.record(k, None);
        } else {
            let e = Rc::clone(slot);
            self.record(k, Some(e));
        }
        Ok(result)
    }

    /// `DEL key`: whether it existed.
    fn remove_key(&mut self, key: &str) -> bool {
        let existed = self.exists(key);
        if existed {
            self.write(key, None);
        }
        existed
    }

    fn expire_in(&mut self, key: &str, ttl: Duration) -> bool {
        if !self.exists(key) {
            return false;
        }
        let at = self.now + ttl;
        let k = self.key_of(key);
        let Some(slot) = self.model.primary.get_mut(key) else {
            return false;
        };
        Rc::make_mut(slot).expires_at = Some(at);
        let e = Rc::clone(slot);
        self.record(k, Some(e));
        true
    }

    /// The remaining time to live in ms: -2 missing, -1 no expiry.
    fn pttl(&self, key: &str) -> i64 {
        match self.model.live(self.now, key) {
            None => -2,
            Some(Entry {
                expires_at: None, ..
            }) => -1,
            Some(Entry {
                expires_at: Some(at),
                ..
            }) => i64::try_from(at.saturating_since(self.now).as_ms()).unwrap_or(i64::MAX),
        }
    }

    /// The value at `key`, borrowed (`None` when missing), if `pick` accepts its type;
    /// `WRONGTYPE` otherwise.
    fn typed_ref<T>(
        &self,
        key: &str,
        pick: fn(&Value) -> Option<&T>,
    ) -> Result<Option<&T>, KvReply> {
        match self.model.live(self.now, key) {
            None => Ok(None),
            Some(e) => pick(&e.value).map(Some).ok_or_else(wrongtype),
        }
    }

    /// The string at `key`, borrowed (`None` when missing), or `WRONGTYPE`.
    fn string_ref(&self, key: &str) -> Result<Option<&String>, KvReply> {
        self.typed_ref(key, |v| match v {
            Value::Str(s) => Some(s),
            _ => None,
        })
    }

    /// The hash at `key`, borrowed (`None` when missing), or `WRONGTYPE`.
    fn hash_ref(&self, key: &str) -> Result<Option<&BTreeMap<String, String>>, KvReply> {
        self.typed_ref(key, |v| match v {
            Value::Hash(h) => Some(h),
            _ => None,
        })
    }

    /// The set at `key`, borrowed (`None` when missing), or `WRONGTYPE`.
    fn set_ref(&self, key: &str) -> Result<Option<&BTreeSet<String>>, KvReply> {
        self.typed_ref(key, |v| match v {
            Value::Set(s) => Some(s),
            _ => None,
        })
    }

    /// The sorted set at `key`, borrowed (`None` when missing), or `WRONGTYPE`.
    fn zset_ref(&self, key: &str) -> Result<Option<&BTreeMap<String, i64>>, KvReply> {
        self.typed_ref(key, |v| match v {
            Value::ZSet(z) => Some(z),
            _ => None,
        })
    }

    /// Whether `key` holds a live value of any type.
    fn exists(&self, key: &str) -> bool {
        self.model.live(self.now, key).is_some()
    }

    /// One command other than a script.
    fn command(&mut self, op: &KvOp) -> KvReply {
        match self.try_command(op) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn try_command(&mut self, op: &KvOp) -> Result<KvReply, KvReply> {
        let now = self.now;
        Ok(match op {
            KvOp::Script { .. } => {
                return Err(KvReply::Error(
                    "ERR This Redis command is not allowed from script".into(),
                ));
            }
            KvOp::Get { key } => self
                .string_ref(key)?
                .map_or(KvReply::Nil, |s| KvReply::Bulk(s.clone())),
            KvOp::Set {
                key,
                value,
                condition,
                ttl,
            } => {
                // Redis checks the expire time before anything else, `NX`/`XX` included.
                if ttl.is_some_and(|ttl| !valid_set_ttl(ttl)) {
                    return Err(KvReply::Error(INVALID_SET_EXPIRE.into()));
                }
                // A key of any type counts, and `SET` replaces it whatever its type.
                let exists = self.exists(key);
                let applies = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => !exists,
                    SetCondition::IfPresent => exists,
                };
                if !applies {
                    return Ok(KvReply::Nil);
                }
                let expires_at = ttl.map(|ttl| now + ttl);
                self.write(
                    key,
                    Some(Entry {
                        value: Value::Str(value.clone()),
                        expires_at,
                    }),
                );
                KvReply::Ok
            }
            KvOp::Del { key } => KvReply::Int(i64::from(self.remove_key(key))),
            KvOp::Exists { key } => KvReply::Int(i64::from(self.exists(key))),
            KvOp::Publish { channel, message } => {
                let model = &mut *self.model;
                let mut receivers = 0;
                for (sub, s) in &mut model.subscribers {
                    if s.channels.contains(channel) {
                        receivers += 1;
                        if !model.unreachable.contains(sub) {
                            s.queue.push_back((channel.clone(), message.clone()));
                        }
                    }
                }
                count(receivers)
            }
            KvOp::IncrBy { key, delta } => self.incr(key, *delta)?,
            KvOp::DecrBy { key, delta } => {
                if *delta == i64::MIN {
                    return Err(KvReply::Error("ERR decrement would overflow".into()));
                }
                self.incr(key, -*delta)?
            }
            KvOp::PExpire { key, ttl } => KvReply::Int(i64::from(self.expire_in(key, *ttl))),
            KvOp::Expire { key, seconds } => {
                let ms = i64::try_from(*seconds)
                    .map_err(|_| KvReply::Error(NOT_AN_INTEGER.into()))?
                    .checked_mul(1000)
                    .ok_or_else(|| KvReply::Error(INVALID_EXPIRE.into()))?;
                let ttl = Duration::from_ms(ms.unsigned_abs());
                KvReply::Int(i64::from(self.expire_in(key, ttl)))
            }
            KvOp::PTtl { key } => KvReply::Int(self.pttl(key)),
            KvOp::Ttl { key } => match self.pttl(key) {
                // Redis rounds the remaining milliseconds to the nearest second.
                ms if ms >= 0 => KvReply::Int(ms.saturating_add(500) / 1000),
                code => KvReply::Int(code),
            },
            KvOp::HGet { key, field } => self
                .hash_ref(key)?
                .and_then(|h| h.get(field))
                .map_or(KvReply::Nil, |v| KvReply::Bulk(v.clone())),
            KvOp::HSet { key, pairs } => self.hset_pairs(key, pairs)?,
            KvOp::HMGet { key, fields } => {
                if fields.is_empty() {
                    return Err(arity("hmget"));
                }
                let h = self.hash_ref(key)?;
                KvReply::Array(
                    fields
                        .iter()
                        .map(|f| h.and_then(|h| h.get(f)).cloned())
                        .collect(),
                )
            }
            KvOp::HGetAll { key } => KvReply::Pairs(
                self.hash_ref(key)?
                    .into_iter()
                    .flatten()
                    .map(|(f, v)| (f.clone(), v.clone()))
                    .collect(),
            ),
            KvOp::HIncrBy { key, field, delta } => self.hincr(key, field, *delta)?,
            KvOp::HDel { key, fields } => {
                if fields.is_empty() {
                    return Err(arity("hdel"));
                }
                let any = self
                    .hash_ref(key)?
                    .is_some_and(|h| fields.iter().any(|f| h.contains_key(f)));
                let removed = if any {
                    self.update(key, fresh_hash, pick_hash, |h| {
                        fields.iter().filter(|f| h.remove(*f).is_some()).count()
                    })?
                } else {
                    0
                };
                count(removed)
            }
            KvOp::SAdd { key, members } => self.sadd_members(key, members)?,
            KvOp::SRem { key, members } => self.srem_members(key, members)?,
            KvOp::SIsMember { key, member } => KvReply::Int(i64::from(
                self.set_ref(key)?.is_some_and(|s| s.contains(member)),
            )),
            KvOp::SMembers { key } => KvReply::Array(
                self.set_ref(key)?
                    .into_iter()
                    .flatten()
                    .map(|m| Some(m.clone()))
                    .collect(),
            ),
            KvOp::SCard { key } => count(self.set_ref(key)?.map_or(0, BTreeSet::len)),
            KvOp::ZAdd { key, pairs } => {
                if pairs.is_empty() {
                    return Err(arity("zadd"));
                }
                let added = self.update(key, fresh_zset, pick_zset, |z| {
                    let mut added = 0;
                    for (score, member) in pairs {
                        match z.get_mut(member) {
                            Some(s) => *s = *score,
                            None => {
                                z.insert(member.clone(), *score);
                                added += 1;
                            }
                        }
                    }
                    added
                })?;
                count(added)
            }
            KvOp::ZRem { key, members } => {
                if members.is_empty() {
                    return Err(arity("zrem"));
                }
                let any = self
                    .zset_ref(key)?
                    .is_some_and(|z| members.iter().any(|m| z.contains_key(m)));
                let removed = if any {
                    self.update(key, fresh_zset, pick_zset, |z| {
                        members.iter().filter(|m| z.remove(*m).is_some()).count()
                    })?
                } else {
                    0
                };
                count(removed)
            }
            KvOp::ZRangeByScore { key, min, max } => {
                let mut hits: Vec<(i64, String)> = self
                    .zset_ref(key)?
                    .into_iter()
                    .flatten()
                    .filter(|(_, score)| min.below_or_at(**score) && max.above_or_at(**score))
                    .map(|(member, score)| (*score, member.clone()))
                    .collect();
                hits.sort();
                KvReply::Array(hits.into_iter().map(|(_, m)| Some(m)).collect())
            }
            KvOp::ZScore { key, member } => self
                .zset_ref(key)?
                .and_then(|z| z.get(member))
                .map_or(KvReply::Nil, |score| KvReply::Bulk(score.to_string())),
        })
    }

    /// `HSET key field value ...`: the number of fields created; the key keeps its TTL.
    fn hset_pairs<F: AsRef<str>, V: AsRef<str>>(
        &mut self,
        key: &str,
        pairs: &[(F, V)],
    ) -> Result<KvReply, KvReply> {
        if pairs.is_empty() {
            return Err(arity("hset"));
        }
        let created = self.update(key, fresh_hash, pick_hash, |h| {
            let mut created = 0;
            for (field, value) in pairs {
                let (field, value) = (field.as_ref(), value.as_ref());
                match h.get_mut(field) {
                    Some(v) => {
                        v.clear();
                        v.push_str(value);
                    }
                    None => {
                        h.insert(field.to_owned(), value.to_owned());
                        created += 1;
                    }
                }
            }
            created
        })?;
        Ok(count(created))
    }

    /// `HINCRBY`: the field must hold an integer; the key keeps its TTL.
    fn hincr(&mut self, key: &str, field: &str, delta: i64) -> Result<KvReply, KvReply> {
        let current = match self.hash_ref(key)?.and_then(|h| h.get(field)) {
            None => 0,
            Some(text) => parse_redis_integer(text)
                .ok_or_else(|| KvReply::Error(HASH_NOT_AN_INTEGER.into()))?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvReply::Error(OVERFLOW.into()))?;
        self.update(key, fresh_hash, pick_hash, |h| match h.get_mut(field) {
            Some(v) => {
                v.clear();
                // Invariant: writing to a String cannot fail.
                let _ = write!(v, "{next}");
            }
            None => {
                h.insert(field.to_owned(), next.to_string());
            }
        })?;
        Ok(KvReply::Int(next))
    }

    /// `SADD key member ...`: the number of members added; the key keeps its TTL.
    fn sadd_members<M: AsRef<str>>(
        &mut self,
        key: &str,
        members: &[M],
    ) -> Result<KvReply, KvReply> {
        if members.is_empty() {
            return Err(arity("sadd"));
        }
        let set = self.set_ref(key)?;
        let any = members
            .iter()
            .any(|m| set.is_none_or(|s| !s.contains(m.as_ref())));
        let added = if any {
            self.update(key, fresh_set, pick_set, |s| {
                members
                    .iter()
                    .filter(|m| {
                        let m = m.as_ref();
                        !s.contains(m) && s.insert(m.to_owned())
                    })
                    .count()
            })?
        } else {
            0
        };
        Ok(count(added))
    }

    /// `SREM key member ...`: the number of members removed; the key keeps its TTL.
    fn srem_members<M: AsRef<str>>(
        &mut self,
        key: &str,
        members: &[M],
    ) -> Result<KvReply, KvReply> {
        if members.is_empty() {
            return Err(arity("srem"));
        }
        let any = self
            .set_ref(key)?
            .is_some_and(|s| members.iter().any(|m| s.contains(m.as_ref())));
        let removed = if any {
            self.update(key, fresh_set, pick_set, |s| {
                members.iter().filter(|m| s.remove(m.as_ref())).count()
            })?
        } else {
            0
        };
        Ok(count(removed))
    }

    /// `INCRBY`: the string must hold an integer; the key keeps its TTL.
    fn incr(&mut self, key: &str, delta: i64) -> Result<KvReply, KvReply> {
        let now = self.now;
        let (current, expires_at) = match self.model.live(now, key) {
            None => (0, None),
            Some(Entry {
                value: Value::Str(text),
                expires_at,
            }) => (
                parse_redis_integer(text).ok_or_else(|| KvReply::Error(NOT_AN_INTEGER.into()))?,
                *expires_at,
            ),
            Some(_) => return Err(wrongtype()),
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvReply::Error(OVERFLOW.into()))?;
        self.write(
            key,
            Some(Entry {
                value: Value::Str(next.to_string()),
                expires_at,
            }),
        );
        Ok(KvReply::Int(next))
    }
}

fn fresh_hash() -> Value {
    Value::Hash(BTreeMap::new())
}

fn fresh_set() -> Value {
    Value::Set(BTreeSet::new())
}

fn fresh_zset() -> Value {
    Value::ZSet(BTreeMap::new())
}

fn pick_hash(v: &mut Value) -> Option<&mut BTreeMap<String, String>> {
    match v {
        Value::Hash(h) => Some(h),
        _ => None,
    }
}

fn pick_set(v: &mut Value) -> Option<&mut BTreeSet<String>> {
    match v {
        Value::Set(s) => Some(s),
        _ => None,
    }
}

fn pick_zset(v: &mut Value) -> Option<&mut BTreeMap<String, i64>> {
    match v {
        Value::ZSet(z) => Some(z),
        _ => None,
    }
}

/// The script fast paths answer as [`View::command`] does for the matching [`KvOp`] (the
/// same code underneath), borrowing instead of building the command or copying the value.
impl KvView for View<'_> {
    fn call(&mut self, op: &KvOp) -> KvReply {
        self.command(op)
    }

    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, str>>, KvReply> {
        Ok(self.string_ref(key)?.map(|s| Cow::Borrowed(s.as_str())))
    }

    fn hget(&mut self, key: &str, field: &str) -> Result<Option<Cow<'_, str>>, KvReply> {
        Ok(self
            .hash_ref(key)?
            .and_then(|h| h.get(field))
            .map(|v| Cow::Borrowed(v.as_str())))
    }

    fn members_sorted(&mut self, key: &str) -> Result<Vec<String>, KvReply> {
        // A BTreeSet of Strings iterates byte by byte, already sorted.
        Ok(self
            .set_ref(key)?
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn hset(&mut self, key: &str, pairs: &[(&str, &str)]) -> KvReply {
        self.hset_pairs(key, pairs).unwrap_or_else(|e| e)
    }

    fn hincr_by(&mut self, key: &str, field: &str, delta: i64) -> KvReply {
        self.hincr(key, field, delta).unwrap_or_else(|e| e)
    }

    fn sadd(&mut self, key: &str, member: &str) -> KvReply {
        self.sadd_members(key, &[member]).unwrap_or_else(|e| e)
    }

    fn srem(&mut self, key: &str, member: &str) -> KvReply {
        self.srem_members(key, &[member]).unwrap_or_else(|e| e)
    }

    fn incr_by(&mut self, key: &str, delta: i64) -> KvReply {
        self.incr(key, delta).unwrap_or_else(|e| e)
    }

    fn pexpire(&mut self, key: &str, ttl: Duration) -> KvReply {
        KvReply::Int(i64::from(self.expire_in(key, ttl)))
    }

    fn del(&mut self, key: &str) -> KvReply {
        KvReply::Int(i64::from(self.remove_key(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_core::ScriptName;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_ms(ms)
    }

    fn set_nx(key: &str, value: &str, ttl_ms: u64) -> KvOp {
        KvOp::Set {
            key: key.into(),
            value: value.into(),
            condition: SetCondition::IfAbsent,
            ttl: Some(Duration::from_ms(ttl_ms)),
        }
    }

    #[test]
    fn keys_expire_on_the_virtual_clock() {
        let mut r = RedisModel::new(Duration::from_ms(10));
        assert_eq!(r.execute(t(0), &set_nx("lock", "A", 20_000)), KvReply::Ok);
        assert_eq!(
            r.execute(t(19_999), &set_nx("lock", "B", 20_000)),
            KvReply::Nil
        );
        assert_eq!(
            r.execute(t(20_000), &set_nx("lock", "B", 20_000)),
            KvReply::Ok
        );
        assert_eq!(r.peek(t(20_000), "lock"), Some("B"));
    }

    #[test]
    fn pexpire_on_a_missing_key_creates_nothing() {
        let mut r = RedisModel::new(Duration::ZERO);
        let reply = r.execute(
            t(0),
            &KvOp::PExpire {
                key: "k".into(),
                ttl: Duration::from_secs(5),
            },
        );
        assert_eq!(reply, KvReply::Int(0));
        assert_eq!(
            r.execute(t(0), &KvOp::PTtl { key: "k".into() }),
            KvReply::Int(-2)
        );
    }

    #[test]
    fn failover_loses_writes_younger_than_the_replication_lag() {
        let mut r = RedisModel::new(Duration::from_ms(100));
        r.execute(t(0), &set_nx("old", "x", 60_000));
        r.execute(t(950), &set_nx("lock", "A", 20_000));
        r.failover(t(1_000));
        assert_eq!(r.peek(t(1_000), "old"), Some("x"));
        assert_eq!(
            r.peek(t(1_000), "lock"),
            None,
            "the unreplicated lock is lost"
        );
        assert_eq!(
            r.execute(t(1_001), &set_nx("lock", "B", 20_000)),
            KvReply::Ok
        );
    }

    #[test]
    fn compare_and_extend_does_not_extend_someone_elses_lock() {
        let mut r = RedisModel::new(Duration::ZERO);
        r.execute(t(0), &set_nx("lock", "B", 20_000));
        let extend = KvOp::Script {
            script: ScriptName::CompareAndExtend,
            keys: vec!["lock".into()],
            args: vec!["A".into(), "20000".into()],
        };
        assert_eq!(r.execute(t(10_000), &extend), KvReply::Int(0));
        assert_eq!(
            r.execute(t(10_000), &KvOp::PTtl { key: "lock".into() }),
            KvReply::Int(10_000)
        );
    }

    #[test]
    fn incrby_rejects_overflow_and_non_integers() {
        let mut r = RedisModel::new(Duration::ZERO);
        let inc = |d| KvOp::IncrBy {
            key: "n".into(),
            delta: d,
        };
        assert_eq!(r.execute(t(0), &inc(i64::MAX)), KvReply::Int(i64::MAX));
        assert!(matches!(r.execute(t(0), &inc(1)), KvReply::Error(_)));
        r.execute(
            t(0),
            &KvOp::Set {
                key: "s".into(),
                value: "x".into(),
                condition: SetCondition::Always,
                ttl: None,
            },
        );
        let reply = r.execute(
            t(0),
            &KvOp::IncrBy {
                key: "s".into(),
                delta: 1,
            },
        );
        assert!(matches!(reply, KvReply::Error(_)));
    }

    #[test]
    fn set_refuses_an_expire_time_of_zero_before_its_condition() {
        let mut r = RedisModel::new(Duration::ZERO);
        let set = |condition, ttl_ms| KvOp::Set {
            key: "k".into(),
            value: "v".into(),
            condition,
            ttl: Some(Duration::from_ms(ttl_ms)),
        };
        let refused = KvReply::Error(INVALID_SET_EXPIRE.into());
        for condition in [
            SetCondition::Always,
            SetCondition::IfAbsent,
            SetCondition::IfPresent,
        ] {
            assert_eq!(r.execute(t(0), &set(condition, 0)), refused);
        }
        assert_eq!(r.peek(t(0), "k"), None, "a refused SET writes nothing");
        assert_eq!(
            r.execute(t(0), &set(SetCondition::Always, u64::MAX)),
            refused
        );
        assert_eq!(r.execute(t(0), &set(SetCondition::Always, 1)), KvReply::Ok);
        assert_eq!(r.peek(t(0), "k"), Some("v"));
    }

    #[test]
    fn incrby_reads_integers_as_strictly_as_redis() {
        let mut r = RedisModel::new(Duration::ZERO);
        let set = |value: &str| KvOp::Set {
            key: "n".into(),
            value: value.into(),
            condition: SetCondition::Always,
            ttl: None,
        };
        let inc = KvOp::IncrBy {
            key: "n".into(),
            delta: 1,
        };
        let refused = [
            "05",
            "+5",
            "-0",
            " 5",
            "5 ",
            "",
            "-",
            "00",
            "-05",
            "1e3",
            "0x1",
            "١",
            "9223372036854775808",
            "-9223372036854775809",
        ];
        for text in refused {
            r.execute(t(0), &set(text));
            assert_eq!(
                r.execute(t(0), &inc),
                KvReply::Error(NOT_AN_INTEGER.into()),
                "INCRBY on {text:?}"
            );
            assert_eq!(r.peek(t(0), "n"), Some(text), "the value is left alone");
        }
        let accepted = [
            ("0", 1),
            ("7", 8),
            ("-1", 0),
            ("-10", -9),
            ("9223372036854775806", i64::MAX),
            ("-9223372036854775808", i64::MIN + 1),
        ];
        for (text, next) in accepted {
            r.execute(t(0), &set(text));
            assert_eq!(
                r.execute(t(0), &inc),
                KvReply::Int(next),
                "INCRBY on {text:?}"
            );
        }
    }

    /// A view that only runs commands: each script fast path takes the trait's default,
    /// which builds the matching [`KvOp`].
    struct ThroughCall<'a>(View<'a>);

    impl KvView for ThroughCall<'_> {
        fn call(&mut self, op: &KvOp) -> KvReply {
            self.0.call(op)
        }
    }

    /// One fast path on one key, its answer written out.
    type Step = fn(&mut dyn KvView, &str) -> String;

    /// Each fast path the scripts use answers, writes, counts and replicates exactly as its
    /// default through the [`KvOp`] command does, on keys of every type, missing and expired.
    #[test]
    fn script_fast_paths_match_the_commands() {
        let setup = |r: &mut RedisModel| {
            r.execute(t(0), &hset("h", &[("f", "1"), ("g", "x")]));
            r.execute(t(0), &hset("old", &[("f", "1")]));
            for (key, ms) in [("h", 60_000), ("old", 5)] {
                let ttl = Duration::from_ms(ms);
                r.execute(
                    t(0),
                    &KvOp::PExpire {
                        key: key.into(),
                        ttl,
                    },
                );
            }
            let members = strs(&["b", "a", "c"]);
            r.execute(
                t(0),
                &KvOp::SAdd {
                    key: "s".into(),
                    members,
                },
            );
            r.execute(
                t(0),
                &KvOp::SAdd {
                    key: "one".into(),
                    members: strs(&["a"]),
                },
            );
            r.execute(t(0), &set_nx("str", "7", 60_000));
            r.execute(t(0), &set_nx("text", "x", 60_000));
            let pairs = vec![(1, "m".into())];
            r.execute(
                t(0),
                &KvOp::ZAdd {
                    key: "z".into(),
                    pairs,
                },
            );
        };
        let keys = ["h", "old", "s", "one", "str", "text", "z", "missing"];
        let steps: [(&str, Step); 15] = [
            ("get", |v, k| {
                format!("{:?}", v.get(k).map(|o| o.map(Cow::into_owned)))
            }),
            ("hget", |v, k| {
                format!("{:?}", v.hget(k, "f").map(|o| o.map(Cow::into_owned)))
            }),
            ("hget of a missing field", |v, k| {
                format!("{:?}", v.hget(k, "nope").map(|o| o.map(Cow::into_owned)))
            }),
            ("members_sorted", |v, k| {
                format!("{:?}", v.members_sorted(k))
            }),
            ("hset", |v, k| {
                v.hset(k, &[("f", "2"), ("n", "3"), ("f", "4")]).to_string()
            }),
            ("hincr_by", |v, k| v.hincr_by(k, "f", 5).to_string()),
            ("hincr_by of a text field", |v, k| {
                v.hincr_by(k, "g", 1).to_string()
            }),
            ("sadd", |v, k| v.sadd(k, "d").to_string()),
            ("sadd of a member", |v, k| v.sadd(k, "a").to_string()),
            ("srem", |v, k| v.srem(k, "a").to_string()),
            ("srem of a non-member", |v, k| v.srem(k, "zz").to_string()),
            ("incr_by", |v, k| v.incr_by(k, 2).to_string()),
            ("pexpire", |v, k| {
                v.pexpire(k, Duration::from_ms(100)).to_string()
            }),
            ("del", |v, k| v.del(k).to_string()),
            ("two writes", |v, k| {
                let first = v.hset(k, &[("f", "9")]);
                format!("{first} {}", v.pexpire(k, Duration::from_ms(30)))
            }),
        ];
        let mut answers = BTreeSet::new();
        for (name, step) in steps {
            for key in keys {
                let (mut fast, mut slow) = (
                    RedisModel::new(Duration::from_ms(50)),
                    RedisModel::new(Duration::from_ms(50)),
                );
                setup(&mut fast);
                setup(&mut slow);
                let now = t(10);
                let a = step(
                    &mut View {
                        model: &mut fast,
                        now,
                    },
                    key,
                );
                let b = step(
                    &mut ThroughCall(View {
                        model: &mut slow,
                        now,
                    }),
                    key,
                );
                assert_eq!(a, b, "{name} on {key}");
                assert_eq!(fast.primary, slow.primary, "{name} on {key}: the key space");
                assert_eq!(fast.backlog, slow.backlog, "{name} on {key}: the backlog");
                assert_eq!(fast.writes, slow.writes, "{name} on {key}: the write count");
                fast.replicate(t(100));
                slow.replicate(t(100));
                assert_eq!(fast.replica, slow.replica, "{name} on {key}: the replica");
                answers.insert(a);
            }
        }
        // Not vacuous: the steps met values, misses, writes and WRONGTYPE.
        for expected in [
            r#"Ok(Some("1"))"#,
            "Ok(None)",
            "1",
            "0",
            "error \"WRONGTYPE",
        ] {
            assert!(
                answers.iter().any(|a| a.starts_with(expected)),
                "no answer {expected}: {answers:?}"
            );
        }
    }

    fn hset(key: &str, pairs: &[(&str, &str)]) -> KvOp {
        KvOp::HSet {
            key: key.into(),
            pairs: pairs
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn commands_on_a_key_of_another_type_answer_wrongtype() {
        let mut r = RedisModel::new(Duration::ZERO);
        let wrong = KvReply::Error(WRONGTYPE.into());
        let k = || "k".to_string();
        r.execute(t(0), &hset("k", &[("f", "1")]));
        for op in [
            KvOp::Get { key: k() },
            KvOp::IncrBy { key: k(), delta: 1 },
            KvOp::DecrBy { key: k(), delta: 1 },
            KvOp::SAdd {
                key: k(),
                members: strs(&["m"]),
            },
            KvOp::SCard { key: k() },
            KvOp::ZScore {
                key: k(),
                member: "m".into(),
            },
            KvOp::ZAdd {
                key: k(),
                pairs: vec![(1, "m".into())],
            },
        ] {
            assert_eq!(r.execute(t(0), &op), wrong, "{op}");
        }
        // A script reading the lock key gets WRONGTYPE too, and writes nothing.
        let del = KvOp::Script {
            script: ScriptName::CompareAndDelete,
            keys: vec![k()],
            args: strs(&["1"]),
        };
        assert_eq!(r.execute(t(0), &del), wrong);
        assert_eq!(r.type_of(t(0), "k"), Some("hash"));
        // Type-agnostic commands work; SET replaces a hash with a string.
        assert_eq!(r.execute(t(0), &KvOp::Exists { key: k() }), KvReply::Int(1));
        let set = KvOp::Set {
            key: k(),
            value: "v".into(),
            condition: SetCondition::IfAbsent,
            ttl: None,
        };
        assert_eq!(r.execute(t(0), &set), KvReply::Nil, "NX sees the hash");
        let set = KvOp::Set {
            key: k(),
            value: "v".into(),
            condition: SetCondition::Always,
            ttl: None,
        };
        assert_eq!(r.execute(t(0), &set), KvReply::Ok);
        assert_eq!(r.peek(t(0), "k"), Some("v"));
        r.execute(
            t(0),
            &KvOp::SAdd {
                key: "s".into(),
                members: strs(&["m"]),
            },
        );
        assert_eq!(
            r.execute(
                t(0),
                &KvOp::HGet {
                    key: "s".into(),
                    field: "f".into()
                }
            ),
            wrong
        );
        assert_eq!(
            r.execute(t(0), &KvOp::Del { key: "s".into() }),
            KvReply::Int(1)
        );
    }

    #[test]
    fn the_last_field_or_member_removed_deletes_the_key() {
        let mut r = RedisModel::new(Duration::ZERO);
        let exists =
            |r: &mut RedisModel, key: &str| r.execute(t(0), &KvOp::Exists { key: key.into() });
        r.execute(t(0), &hset("h", &[("f", "1"), ("g", "2")]));
        let hdel = |fields: &[&str]| KvOp::HDel {
            key: "h".into(),
            fields: strs(fields),
        };
        assert_eq!(r.execute(t(0), &hdel(&["f", "x"])), KvReply::Int(1));
        assert_eq!(exists(&mut r, "h"), KvReply::Int(1));
        assert_eq!(r.execute(t(0), &hdel(&["g"])), KvReply::Int(1));
        assert_eq!(exists(&mut r, "h"), KvReply::Int(0));
        assert_eq!(r.type_of(t(0), "h"), None);

        r.execute(
            t(0),
            &KvOp::SAdd {
                key: "s".into(),
                members: strs(&["a", "b", "a"]),
            },
        );
        assert_eq!(
            r.execute(t(0), &KvOp::SCard { key: "s".into() }),
            KvReply::Int(2)
        );
        let srem = KvOp::SRem {
            key: "s".into(),
            members: strs(&["a", "b"]),
        };
        assert_eq!(r.execute(t(0), &srem), KvReply::Int(2));
        assert_eq!(exists(&mut r, "s"), KvReply::Int(0));

        r.execute(
            t(0),
            &KvOp::ZAdd {
                key: "z".into(),
                pairs: vec![(2, "b".into()), (1, "a".into())],
            },
        );
        let all = KvOp::ZRangeByScore {
            key: "z".into(),
            min: racelab_core::ScoreBound::NegInf,
            max: racelab_core::ScoreBound::PosInf,
        };
        assert_eq!(
            r.execute(t(0), &all),
            KvReply::Array(vec![Some("a".into()), Some("b".into())])
        );
        let zrem = KvOp::ZRem {
            key: "z".into(),
            members: strs(&["a", "b"]),
        };
        assert_eq!(r.execute(t(0), &zrem), KvReply::Int(2));
        assert_eq!(exists(&mut r, "z"), KvReply::Int(0));
        // The key's next incarnation starts without the old TTL, and may be of another type.
        assert_eq!(r.execute(t(0), &hset("z", &[("f", "1")])), KvReply::Int(1));
        assert_eq!(r.type_of(t(0), "z"), Some("hash"));
    }

    #[test]
    fn a_ttl_applies_to_the_whole_collection() {
        let mut r = RedisModel::new(Duration::ZERO);
        r.execute(t(0), &hset("h", &[("f", "1")]));
        let expire = KvOp::Expire {
            key: "h".into(),
            seconds: 10,
        };
        assert_eq!(r.execute(t(0), &expire), KvReply::Int(1));
        // Writing a field keeps the key's TTL.
        r.execute(t(1_000), &hset("h", &[("g", "2")]));
        r.execute(
            t(1_000),
            &KvOp::HIncrBy {
                key: "h".into(),
                field: "n".into(),
                delta: 3,
            },
        );
        assert_eq!(
            r.execute(t(1_400), &KvOp::Ttl { key: "h".into() }),
            KvReply::Int(9),
            "8.6 s rounds to 9"
        );
        assert_eq!(
            r.execute(t(1_400), &KvOp::PTtl { key: "h".into() }),
            KvReply::Int(8_600)
        );
        assert_eq!(
            r.execute(t(9_999), &KvOp::HGetAll { key: "h".into() }),
            KvReply::Pairs(vec![
                ("f".into(), "1".into()),
                ("g".into(), "2".into()),
                ("n".into(), "3".into()),
            ])
        );
        assert_eq!(
            r.execute(t(10_000), &KvOp::HGetAll { key: "h".into() }),
            KvReply::Pairs(vec![]),
            "every field expires with the key"
        );
        assert_eq!(
            r.execute(t(10_000), &KvOp::Ttl { key: "h".into() }),
            KvReply::Int(-2)
        );
        // A set likewise; EXPIRE 0 deletes at once.
        r.execute(
            t(0),
            &KvOp::SAdd {
                key: "s".into(),
                members: strs(&["m"]),
            },
        );
        assert_eq!(
            r.execute(t(0), &KvOp::Ttl { key: "s".into() }),
            KvReply::Int(-1)
        );
        let expire0 = KvOp::Expire {
            key: "s".into(),
            seconds: 0,
        };
        assert_eq!(r.execute(t(0), &expire0), KvReply::Int(1));
        assert_eq!(
            r.execute(
                t(0),
                &KvOp::SIsMember {
                    key: "s".into(),
                    member: "m".into()
                }
            ),
            KvReply::Int(0)
        );
    }

    #[test]
    fn hincrby_reads_fields_as_strictly_as_incrby() {
        let mut r = RedisModel::new(Duration::ZERO);
        let inc = |delta| KvOp::HIncrBy {
            key: "h".into(),
            field: "f".into(),
            delta,
        };
        for text in ["05", "+5", "-0", " 5", "x", ""] {
            r.execute(t(0), &hset("h", &[("f", text)]));
            assert_eq!(
                r.execute(t(0), &inc(1)),
                KvReply::Error(HASH_NOT_AN_INTEGER.into()),
                "HINCRBY on {text:?}"
            );
        }
        r.execute(t(0), &hset("h", &[("f", "9223372036854775807")]));
        assert_eq!(r.execute(t(0), &inc(1)), KvReply::Error(OVERFLOW.into()));
        assert_eq!(r.execute(t(0), &inc(-7)), KvReply::Int(i64::MAX - 7));
    }

    #[test]
    fn failover_loses_an_unreplicated_hset_and_keeps_the_replicated_hash() {
        let mut r = RedisModel::new(Duration::from_ms(100));
        r.execute(t(0), &hset("h", &[("f", "1")]));
        r.execute(
            t(0),
            &KvOp::ZAdd {
                key: "z".into(),
                pairs: vec![(5, "m".into())],
            },
        );
        r.execute(t(950), &hset("h", &[("g", "2")]));
        r.execute(
            t(960),
            &KvOp::ZRem {
                key: "z".into(),
                members: strs(&["m"]),
            },
        );
        r.failover(t(1_000));
        assert_eq!(
            r.execute(t(1_000), &KvOp::HGetAll { key: "h".into() }),
            KvReply::Pairs(vec![("f".into(), "1".into())]),
            "the unreplicated field is lost, the replicated one kept"
        );
        assert_eq!(
            r.execute(
                t(1_000),
                &KvOp::ZScore {
                    key: "z".into(),
                    member: "m".into()
                }
            ),
            KvReply::Bulk("5".into()),
            "the unreplicated deletion of the last member is lost"
        );
    }

    #[test]
    fn arity_errors_come_before_the_type_check() {
        let mut r = RedisModel::new(Duration::ZERO);
        r.execute(t(0), &set_nx("k", "v", 60_000));
        assert_eq!(
            r.execute(
                t(0),
                &KvOp::HSet {
                    key: "k".into(),
                    pairs: vec![]
                }
            ),
            KvReply::Error("ERR wrong number of arguments for 'hset' command".into())
        );
        assert_eq!(
            r.execute(
                t(0),
                &KvOp::DecrBy {
                    key: "k".into(),
                    delta: i64::MIN
                }
            ),
            KvReply::Error("ERR decrement would overflow".into())
        );
    }

    #[test]
    fn restart_without_persistence_loses_everything() {
        let mut r = RedisModel::new(Duration::ZERO);
        r.execute(t(0), &set_nx("lock", "A", 20_000));
        assert_eq!(
            r.restart(t(1)),
            None,
            "with no lag the write was replicated"
        );
        assert_eq!(r.peek(t(1), "lock"), None);
    }

    #[test]
    fn a_failover_names_the_writes_it_lost() {
        let mut r = RedisModel::new(Duration::from_ms(100));
        r.execute(t(0), &set_nx("a", "1", 60_000));
        // A write that changes nothing is not counted.
        r.execute(t(10), &set_nx("a", "2", 60_000));
        r.execute(t(950), &set_nx("b", "1", 60_000));
        r.execute(t(960), &set_nx("c", "1", 60_000));
        assert_eq!(r.writes(), 3);
        assert_eq!(r.replicated_at(t(950)), t(1_050));
        assert_eq!(
            r.failover(t(1_000)),
            Some(LostWrites { first: 2, count: 2 })
        );
        assert_eq!(r.failover(t(1_001)), None, "nothing left to lose");
        r.execute(t(1_002), &set_nx("d", "1", 60_000));
        assert_eq!(r.restart(t(1_003)), Some(LostWrites { first: 4, count: 1 }));
    }
}
