//! The key-value store (Redis): the commands the protocols use ([`KvOp`], [`KvReply`]) and
//! the [`ScriptName`]d atomic scripts, whose one semantic definition lives here
//! ([`ScriptName::run`], a pure function over a [`KvView`]); the adapters hold the matching
//! Lua text.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// When a `SET` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SetCondition {
    /// Always.
    Always,
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// A Redis command.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvOp {
    /// `GET key`.
    Get {
        /// The key.
        key: String,
    },
    /// `SET key value [NX|XX] [PX ttl]`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// `NX`, `XX` or neither.
        condition: SetCondition,
        /// `PX`, if any.
        ttl: Option<Duration>,
    },
    /// `DEL key`.
    Del {
        /// The key.
        key: String,
    },
    /// `INCRBY key delta`.
    IncrBy {
        /// The key.
        key: String,
        /// The increment.
        delta: i64,
    },
    /// `PEXPIRE key ttl`.
    PExpire {
        /// The key.
        key: String,
        /// The new time to live.
        ttl: Duration,
    },
    /// `PTTL key`.
    PTtl {
        /// The key.
        key: String,
    },
    /// `EVALSHA sha(script) keys args`: a named script, atomic on the server.
    Script {
        /// Which script.
        script: ScriptName,
        /// `KEYS`.
        keys: Vec<String>,
        /// `ARGV`.
        args: Vec<String>,
    },
}

/// Redis' reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvReply {
    /// A nil bulk reply (missing key, or a `SET NX` that did not apply).
    Nil,
    /// `+OK`.
    Ok,
    /// An integer reply.
    Int(i64),
    /// A bulk string reply.
    Bulk(String),
    /// An error reply (`WRONGTYPE`, a script runtime error, ...).
    Error(String),
}

/// The named atomic scripts. Each has exactly one semantic definition, [`ScriptName::run`];
/// the adapters carry the matching Lua and a conformance test proves the two agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScriptName {
    /// `KEYS[1]` lock, `ARGV[1]` owner, `ARGV[2]` ttl in ms: extend the lock's TTL only if
    /// the caller still owns it. Returns 1 if extended, 0 otherwise.
    CompareAndExtend,
    /// `KEYS[1]` lock, `ARGV[1]` owner: delete the lock only if the caller owns it. Returns 1
    /// if deleted, 0 otherwise.
    CompareAndDelete,
}

/// What a script sees of the key space: the calls a Lua script makes through `redis.call`.
/// Implemented by the Redis model (with TTL on the virtual clock) and by test doubles.
pub trait KvView {
    /// `GET`.
    fn get(&self, key: &str) -> Option<String>;
    /// `PEXPIRE`; `false` when the key does not exist (nothing is created).
    fn pexpire(&mut self, key: &str, ttl: Duration) -> bool;
    /// `DEL`; `false` when the key did not exist.
    fn del(&mut self, key: &str) -> bool;
}

impl ScriptName {
    /// Every script, for conformance tests and for loading on a server.
    pub const ALL: [ScriptName; 2] = [ScriptName::CompareAndExtend, ScriptName::CompareAndDelete];

    /// The script's semantics. A wrong number of keys or arguments, or a TTL that is not a
    /// positive integer, is a runtime error (Redis keeps any writes made before it; these
    /// scripts validate before their first write).
    pub fn run(self, view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
        match self {
            ScriptName::CompareAndExtend => {
                let (Some(key), Some(owner), Some(ttl)) = (keys.first(), args.first(), args.get(1))
                else {
                    return KvReply::Error("ERR compare_and_extend needs 1 key and 2 args".into());
                };
                // Digits only and at most 15 of them, exactly as the Lua text checks, so that
                // Rust's and Lua's number parsing can never disagree.
                let digits =
                    !ttl.is_empty() && ttl.len() <= 15 && ttl.bytes().all(|b| b.is_ascii_digit());
                let Some(ttl) = digits
                    .then(|| ttl.parse::<u64>().ok())
                    .flatten()
                    .filter(|ms| *ms > 0)
                else {
                    return KvReply::Error("ERR ttl must be a positive integer".into());
                };
                if view.get(key).as_deref() == Some(owner.as_str()) {
                    view.pexpire(key, Duration::from_ms(ttl));
                    KvReply::Int(1)
                } else {
                    KvReply::Int(0)
                }
            }
            ScriptName::CompareAndDelete => {
                let (Some(key), Some(owner)) = (keys.first(), args.first()) else {
                    return KvReply::Error("ERR compare_and_delete needs 1 key and 1 arg".into());
                };
                if view.get(key).as_deref() == Some(owner.as_str()) {
                    view.del(key);
                    KvReply::Int(1)
                } else {
                    KvReply::Int(0)
                }
            }
        }
    }

    /// The script's name as written in timelines and in the adapters.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptName::CompareAndExtend => "compare_and_extend",
            ScriptName::CompareAndDelete => "compare_and_delete",
        }
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Get { key } => write!(f, "GET {key}"),
            KvOp::Set {
                key,
                value,
                condition,
                ttl,
            } => {
                write!(f, "SET {key} {value}")?;
                match condition {
                    SetCondition::Always => {}
                    SetCondition::IfAbsent => write!(f, " NX")?,
                    SetCondition::IfPresent => write!(f, " XX")?,
                }
                if let Some(ttl) = ttl {
                    write!(f, " PX {}", ttl.as_ms())?;
                }
                Ok(())
            }
            KvOp::Del { key } => write!(f, "DEL {key}"),
            KvOp::IncrBy { key, delta } => write!(f, "INCRBY {key} {delta}"),
            KvOp::PExpire { key, ttl } => write!(f, "PEXPIRE {key} {}", ttl.as_ms()),
            KvOp::PTtl { key } => write!(f, "PTTL {key}"),
            KvOp::Script { script, keys, args } => {
                write!(f, "EVALSHA {} {}", script.as_str(), keys.len())?;
                for k in keys.iter().chain(args) {
                    write!(f, " {k}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for KvReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvReply::Nil => write!(f, "nil"),
            KvReply::Ok => write!(f, "OK"),
            KvReply::Int(n) => write!(f, "{n}"),
            KvReply::Bulk(s) => write!(f, "{s:?}"),
            KvReply::Error(e) => write!(f, "error {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Map(BTreeMap<String, String>);

    impl KvView for Map {
        fn get(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn pexpire(&mut self, key: &str, _ttl: Duration) -> bool {
            self.0.contains_key(key)
        }
        fn del(&mut self, key: &str) -> bool {
            self.0.remove(key).is_some()
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn compare_and_delete_only_deletes_the_owners_lock() {
        let mut m = Map(BTreeMap::from([("lock".to_string(), "A".to_string())]));
        let other = ScriptName::CompareAndDelete.run(&mut m, &s(&["lock"]), &s(&["B"]));
        assert_eq!(other, KvReply::Int(0));
        assert!(m.0.contains_key("lock"));
        let mine = ScriptName::CompareAndDelete.run(&mut m, &s(&["lock"]), &s(&["A"]));
        assert_eq!(mine, KvReply::Int(1));
        assert!(m.0.is_empty());
    }

    #[test]
    fn scripts_reject_bad_arguments_with_an_error_reply() {
        let mut m = Map(BTreeMap::new());
        let r = ScriptName::CompareAndExtend.run(&mut m, &s(&["lock"]), &s(&["A", "soon"]));
        assert!(matches!(r, KvReply::Error(_)));
        let r = ScriptName::CompareAndDelete.run(&mut m, &[], &[]);
        assert!(matches!(r, KvReply::Error(_)));
    }
}
