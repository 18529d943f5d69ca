//! The Redis model: single-threaded command and script atomicity, per-key TTL on the virtual
//! clock, `PEXPIRE` on a missing key creating nothing, scripts that keep their writes on a
//! runtime error, and a primary with an asynchronous replica: a failover promotes the replica
//! and loses every write not yet replicated; a restart without persistence loses everything.

use std::collections::{BTreeMap, VecDeque};

use racelab_core::{Duration, KvOp, KvReply, KvView, SetCondition, Timestamp};

/// Redis' reply to `SET ... PX ms` with a time it refuses.
const INVALID_SET_EXPIRE: &str = "ERR invalid expire time in 'set' command";

/// Redis' reply to `INCRBY` on a value that is not exactly an integer's canonical text.
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    value: String,
    expires_at: Option<Timestamp>,
}

type Keyspace = BTreeMap<String, Entry>;

/// The primary's key space, its replica, and the replication backlog.
#[derive(Debug)]
pub struct RedisModel {
    primary: Keyspace,
    replica: Keyspace,
    /// Writes applied on the primary and not yet on the replica: (applied at, key, new entry
    /// or deletion).
    backlog: VecDeque<(Timestamp, String, Option<Entry>)>,
    /// How long a write takes to reach the replica.
    replication_lag: Duration,
}

/// A view of the primary at one instant, through which commands and scripts run.
struct View<'a> {
    model: &'a mut RedisModel,
    now: Timestamp,
}

impl RedisModel {
    /// An empty Redis whose replica trails the primary by `replication_lag`.
    pub fn new(replication_lag: Duration) -> RedisModel {
        RedisModel {
            primary: Keyspace::new(),
            replica: Keyspace::new(),
            backlog: VecDeque::new(),
            replication_lag,
        }
    }

    /// Executes one command atomically at `now`.
    pub fn execute(&mut self, now: Timestamp, op: &KvOp) -> KvReply {
        self.replicate(now);
        let mut view = View { model: self, now };
        match op {
            KvOp::Get { key } => view.get(key).map_or(KvReply::Nil, KvReply::Bulk),
            KvOp::Set {
                key,
                value,
                condition,
                ttl,
            } => {
                // Redis checks the expire time before anything else, `NX`/`XX` included.
                if ttl.is_some_and(|ttl| !valid_set_ttl(ttl)) {
                    return KvReply::Error(INVALID_SET_EXPIRE.into());
                }
                let exists = view.get(key).is_some();
                let applies = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => !exists,
                    SetCondition::IfPresent => exists,
                };
                if !applies {
                    return KvReply::Nil;
                }
                let expires_at = ttl.map(|ttl| now + ttl);
                view.write(
                    key,
                    Some(Entry {
                        value: value.clone(),
                        expires_at,
                    }),
                );
                KvReply::Ok
            }
            KvOp::Del { key } => KvReply::Int(i64::from(view.del(key))),
            KvOp::IncrBy { key, delta } => {
                let (current, expires_at) = match view.entry(key) {
                    Some(e) => match parse_redis_integer(&e.value) {
                        Some(n) => (n, e.expires_at),
                        None => return KvReply::Error(NOT_AN_INTEGER.into()),
                    },
                    None => (0, None),
                };
                let Some(next) = current.checked_add(*delta) else {
                    return KvReply::Error("ERR increment or decrement would overflow".into());
                };
                view.write(
                    key,
                    Some(Entry {
                        value: next.to_string(),
                        expires_at,
                    }),
                );
                KvReply::Int(next)
            }
            KvOp::PExpire { key, ttl } => KvReply::Int(i64::from(view.pexpire(key, *ttl))),
            KvOp::PTtl { key } => match view.entry(key) {
                None => KvReply::Int(-2),
                Some(Entry {
                    expires_at: None, ..
                }) => KvReply::Int(-1),
                Some(Entry {
                    expires_at: Some(at),
                    ..
                }) => KvReply::Int(
                    i64::try_from(at.saturating_since(now).as_ms()).unwrap_or(i64::MAX),
                ),
            },
            KvOp::Script { script, keys, args } => script.run(&mut view, keys, args),
        }
    }

    /// The replica is promoted: writes applied less than the replication lag ago are lost.
    pub fn failover(&mut self, now: Timestamp) {
        self.replicate(now);
        self.primary = self.replica.clone();
        self.backlog.clear();
    }

    /// A restart without persistence: every key is gone, on both nodes.
    pub fn restart(&mut self) {
        self.primary.clear();
        self.replica.clear();
        self.backlog.clear();
    }

    /// The live value of `key` at `now`, for tests and state snapshots.
    pub fn peek(&self, now: Timestamp, key: &str) -> Option<&str> {
        self.primary
            .get(key)
            .filter(|e| e.expires_at.is_none_or(|at| at > now))
            .map(|e| e.value.as_str())
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
        let e = self.model.primary.get(key)?;
        e.expires_at
            .is_none_or(|at| at > self.now)
            .then(|| e.clone())
    }

    fn write(&mut self, key: &str, entry: Option<Entry>) {
        match &entry {
            Some(e) => self.model.primary.insert(key.to_string(), e.clone()),
            None => self.model.primary.remove(key),
        };
        self.model
            .backlog
            .push_back((self.now, key.to_string(), entry));
    }
}

impl KvView for View<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.entry(key).map(|e| e.value)
    }

    fn pexpire(&mut self, key: &str, ttl: Duration) -> bool {
        match self.entry(key) {
            Some(mut e) => {
                e.expires_at = Some(self.now + ttl);
                self.write(key, Some(e));
                true
            }
            None => false,
        }
    }

    fn del(&mut self, key: &str) -> bool {
        let existed = self.entry(key).is_some();
        if existed {
            self.write(key, None);
        }
        existed
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

    #[test]
    fn restart_without_persistence_loses_everything() {
        let mut r = RedisModel::new(Duration::ZERO);
        r.execute(t(0), &set_nx("lock", "A", 20_000));
        r.restart();
        assert_eq!(r.peek(t(1), "lock"), None);
    }
}
