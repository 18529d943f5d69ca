//! The Redis model: single-threaded command and script atomicity, typed values (string,
//! hash, set, sorted set) with `WRONGTYPE` errors, a hash, set or sorted set deleted with its
//! last field or member, per-key TTL on the virtual clock (a TTL applies to the whole key),
//! `PEXPIRE` on a missing key creating nothing, scripts that keep their writes on a runtime
//! error, and a primary with an asynchronous replica: a failover promotes the replica and
//! loses every write not yet replicated; a restart without persistence loses everything.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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

type Keyspace = BTreeMap<String, Entry>;

/// The primary's key space, its replica, and the replication backlog.
#[derive(Debug)]
pub struct RedisModel {
    primary: Keyspace,
    replica: Keyspace,
    /// Writes applied on the primary and not yet on the replica: (applied at, key, whole new
    /// entry or deletion).
    backlog: VecDeque<(Timestamp, String, Option<Entry>)>,
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
            .filter_map(|(k, e)| e.expires_at.map(|at| (k.clone(), at)))
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
    fn entry(&self, key: &str) -> Option<Entry> {
        self.model.live(self.now, key).cloned()
    }

    fn write(&mut self, key: &str, entry: Option<Entry>) {
        match &entry {
            // An existing key is overwritten in place (no new key string).
            Some(e) => match self.model.primary.get_mut(key) {
                Some(slot) => *slot = e.clone(),
                None => {
                    self.model.primary.insert(key.to_string(), e.clone());
                }
            },
            None => {
                self.model.primary.remove(key);
            }
        }
        self.model
            .backlog
            .push_back((self.now, key.to_string(), entry));
        self.model.writes += 1;
    }

    /// Writes a collection back, keeping the key's TTL, or deletes the key when the
    /// collection is empty (as Redis does when the last field or member goes).
    fn put(&mut self, key: &str, value: Value, expires_at: Option<Timestamp>) {
        if value.is_empty_collection() {
            self.write(key, None);
        } else {
            self.write(key, Some(Entry { value, expires_at }));
        }
    }

    fn del(&mut self, key: &str) -> bool {
        let existed = self.exists(key);
        if existed {
            self.write(key, None);
        }
        existed
    }

    fn expire_in(&mut self, key: &str, ttl: Duration) -> bool {
        match self.entry(key) {
            Some(mut e) => {
                e.expires_at = Some(self.now + ttl);
                self.write(key, Some(e));
                true
            }
            None => false,
        }
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

    /// The value at `key` (`None` when missing) with its expiry, if `pick` accepts its type;
    /// `WRONGTYPE` otherwise.
    fn typed<T>(
        &self,
        key: &str,
        pick: fn(Value) -> Option<T>,
    ) -> Result<Option<(T, Option<Timestamp>)>, KvReply> {
        match self.entry(key) {
            None => Ok(None),
            Some(Entry { value, expires_at }) => match pick(value) {
                Some(v) => Ok(Some((v, expires_at))),
                None => Err(wrongtype()),
            },
        }
    }

    /// The string at `key` (`None` when missing) with its expiry, or `WRONGTYPE`.
    fn string(&self, key: &str) -> Result<Option<(String, Option<Timestamp>)>, KvReply> {
        self.typed(key, |v| match v {
            Value::Str(s) => Some(s),
            _ => None,
        })
    }

    /// The hash at `key` (empty when missing) with its expiry, or `WRONGTYPE`.
    fn hash(&self, key: &str) -> Result<(BTreeMap<String, String>, Option<Timestamp>), KvReply> {
        let hash = self.typed(key, |v| match v {
            Value::Hash(h) => Some(h),
            _ => None,
        })?;
        Ok(hash.unwrap_or_default())
    }

    /// The set at `key` (empty when missing) with its expiry, or `WRONGTYPE`.
    fn set(&self, key: &str) -> Result<(BTreeSet<String>, Option<Timestamp>), KvReply> {
        let set = self.typed(key, |v| match v {
            Value::Set(s) => Some(s),
            _ => None,
        })?;
        Ok(set.unwrap_or_default())
    }

    /// The sorted set at `key` (empty when missing) with its expiry, or `WRONGTYPE`.
    fn zset(&self, key: &str) -> Result<(BTreeMap<String, i64>, Option<Timestamp>), KvReply> {
        let zset = self.typed(key, |v| match v {
            Value::ZSet(z) => Some(z),
            _ => None,
        })?;
        Ok(zset.unwrap_or_default())
    }

    /// Like [`View::typed`], borrowing the value instead of copying it (for commands that
    /// only read).
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
                .string(key)?
                .map_or(KvReply::Nil, |(s, _)| KvReply::Bulk(s)),
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
            KvOp::Del { key } => KvReply::Int(i64::from(self.del(key))),
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
            KvOp::HSet { key, pairs } => {
                if pairs.is_empty() {
                    return Err(arity("hset"));
                }
                let (mut h, expires_at) = self.hash(key)?;
                let mut created = 0;
                for (field, value) in pairs {
                    if h.insert(field.clone(), value.clone()).is_none() {
                        created += 1;
                    }
                }
                self.put(key, Value::Hash(h), expires_at);
                count(created)
            }
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
            KvOp::HGetAll { key } => KvReply::Pairs(self.hash(key)?.0.into_iter().collect()),
            KvOp::HIncrBy { key, field, delta } => {
                let (mut h, expires_at) = self.hash(key)?;
                let current = match h.get(field) {
                    None => 0,
                    Some(text) => parse_redis_integer(text)
                        .ok_or_else(|| KvReply::Error(HASH_NOT_AN_INTEGER.into()))?,
                };
                let next = current
                    .checked_add(*delta)
                    .ok_or_else(|| KvReply::Error(OVERFLOW.into()))?;
                h.insert(field.clone(), next.to_string());
                self.put(key, Value::Hash(h), expires_at);
                KvReply::Int(next)
            }
            KvOp::HDel { key, fields } => {
                if fields.is_empty() {
                    return Err(arity("hdel"));
                }
                let (mut h, expires_at) = self.hash(key)?;
                let removed = fields.iter().filter(|f| h.remove(*f).is_some()).count();
                if removed > 0 {
                    self.put(key, Value::Hash(h), expires_at);
                }
                count(removed)
            }
            KvOp::SAdd { key, members } => {
                if members.is_empty() {
                    return Err(arity("sadd"));
                }
                let (mut s, expires_at) = self.set(key)?;
                let added = members.iter().filter(|m| s.insert((*m).clone())).count();
                if added > 0 {
                    self.put(key, Value::Set(s), expires_at);
                }
                count(added)
            }
            KvOp::SRem { key, members } => {
                if members.is_empty() {
                    return Err(arity("srem"));
                }
                let (mut s, expires_at) = self.set(key)?;
                let removed = members.iter().filter(|m| s.remove(*m)).count();
                if removed > 0 {
                    self.put(key, Value::Set(s), expires_at);
                }
                count(removed)
            }
            KvOp::SIsMember { key, member } => KvReply::Int(i64::from(
                self.set_ref(key)?.is_some_and(|s| s.contains(member)),
            )),
            KvOp::SMembers { key } => {
                KvReply::Array(self.set(key)?.0.into_iter().map(Some).collect())
            }
            KvOp::SCard { key } => count(self.set_ref(key)?.map_or(0, BTreeSet::len)),
            KvOp::ZAdd { key, pairs } => {
                if pairs.is_empty() {
                    return Err(arity("zadd"));
                }
                let (mut z, expires_at) = self.zset(key)?;
                let mut added = 0;
                for (score, member) in pairs {
                    if z.insert(member.clone(), *score).is_none() {
                        added += 1;
                    }
                }
                self.put(key, Value::ZSet(z), expires_at);
                count(added)
            }
            KvOp::ZRem { key, members } => {
                if members.is_empty() {
                    return Err(arity("zrem"));
                }
                let (mut z, expires_at) = self.zset(key)?;
                let removed = members.iter().filter(|m| z.remove(*m).is_some()).count();
                if removed > 0 {
                    self.put(key, Value::ZSet(z), expires_at);
                }
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

    /// `INCRBY`: the string must hold an integer; the key keeps its TTL.
    fn incr(&mut self, key: &str, delta: i64) -> Result<KvReply, KvReply> {
        let (current, expires_at) = match self.string(key)? {
            Some((text, expires_at)) => (
                parse_redis_integer(&text).ok_or_else(|| KvReply::Error(NOT_AN_INTEGER.into()))?,
                expires_at,
            ),
            None => (0, None),
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

impl KvView for View<'_> {
    fn call(&mut self, op: &KvOp) -> KvReply {
        self.command(op)
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
