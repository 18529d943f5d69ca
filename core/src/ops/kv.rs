//! The key-value store (Redis): the commands the protocols use ([`KvOp`], [`KvReply`]) on
//! strings, hashes, sets and sorted sets, and the [`ScriptName`]d atomic scripts, whose one
//! semantic definition lives here ([`ScriptName::run`], a pure function over a [`KvView`]);
//! the adapters hold the matching Lua text.

use std::borrow::Cow;
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

/// One end of a `ZRANGEBYSCORE` range (inclusive). Scores are integers: every integer within
/// 2^53 of zero is exact in Redis' doubles, and the adapter refuses scores beyond that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScoreBound {
    /// `-inf`.
    NegInf,
    /// A score, included.
    At(i64),
    /// `+inf`.
    PosInf,
}

impl ScoreBound {
    /// Whether `score` lies at or above this bound taken as a minimum.
    pub fn below_or_at(self, score: i64) -> bool {
        match self {
            ScoreBound::NegInf => true,
            ScoreBound::At(b) => b <= score,
            ScoreBound::PosInf => false,
        }
    }

    /// Whether `score` lies at or below this bound taken as a maximum.
    pub fn above_or_at(self, score: i64) -> bool {
        match self {
            ScoreBound::NegInf => false,
            ScoreBound::At(b) => score <= b,
            ScoreBound::PosInf => true,
        }
    }
}

impl fmt::Display for ScoreBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreBound::NegInf => write!(f, "-inf"),
            ScoreBound::At(n) => write!(f, "{n}"),
            ScoreBound::PosInf => write!(f, "+inf"),
        }
    }
}

/// A Redis command. Commands on a key of another type answer `WRONGTYPE`; `DEL`, `EXISTS`
/// and the expiry commands apply to a key of any type.
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
    /// `DECRBY key delta`.
    DecrBy {
        /// The key.
        key: String,
        /// The decrement.
        delta: i64,
    },
    /// `EXPIRE key seconds`.
    Expire {
        /// The key.
        key: String,
        /// The new time to live, in seconds.
        seconds: u64,
    },
    /// `TTL key`: seconds (rounded to the nearest), -1 without expiry, -2 when missing.
    Ttl {
        /// The key.
        key: String,
    },
    /// `EXISTS key`.
    Exists {
        /// The key.
        key: String,
    },
    /// `PUBLISH channel message`: the number of subscribed connections Redis wrote it to
    /// (at most once: a subscriber that is disconnected or partitioned misses it; see
    /// [`crate::PubSubOp`]).
    Publish {
        /// The channel.
        channel: String,
        /// The message.
        message: String,
    },
    /// `HGET key field`.
    HGet {
        /// The key.
        key: String,
        /// The field.
        field: String,
    },
    /// `HSET key field value [field value ...]`: the number of fields created.
    HSet {
        /// The key.
        key: String,
        /// Field-value pairs, applied in order.
        pairs: Vec<(String, String)>,
    },
    /// `HMGET key field [field ...]`.
    HMGet {
        /// The key.
        key: String,
        /// The fields.
        fields: Vec<String>,
    },
    /// `HGETALL key`.
    HGetAll {
        /// The key.
        key: String,
    },
    /// `HINCRBY key field delta`.
    HIncrBy {
        /// The key.
        key: String,
        /// The field.
        field: String,
        /// The increment.
        delta: i64,
    },
    /// `HDEL key field [field ...]`: the number of fields removed.
    HDel {
        /// The key.
        key: String,
        /// The fields.
        fields: Vec<String>,
    },
    /// `SADD key member [member ...]`: the number of members added.
    SAdd {
        /// The key.
        key: String,
        /// The members.
        members: Vec<String>,
    },
    /// `SREM key member [member ...]`: the number of members removed.
    SRem {
        /// The key.
        key: String,
        /// The members.
        members: Vec<String>,
    },
    /// `SISMEMBER key member`.
    SIsMember {
        /// The key.
        key: String,
        /// The member.
        member: String,
    },
    /// `SMEMBERS key`.
    SMembers {
        /// The key.
        key: String,
    },
    /// `SCARD key`.
    SCard {
        /// The key.
        key: String,
    },
    /// `ZADD key score member [score member ...]`: the number of members added.
    ZAdd {
        /// The key.
        key: String,
        /// Score-member pairs, applied in order.
        pairs: Vec<(i64, String)>,
    },
    /// `ZREM key member [member ...]`: the number of members removed.
    ZRem {
        /// The key.
        key: String,
        /// The members.
        members: Vec<String>,
    },
    /// `ZRANGEBYSCORE key min max`: members with `min <= score <= max`, by score then member.
    ZRangeByScore {
        /// The key.
        key: String,
        /// The lowest score included.
        min: ScoreBound,
        /// The highest score included.
        max: ScoreBound,
    },
    /// `ZSCORE key member`: the score as Redis writes it.
    ZScore {
        /// The key.
        key: String,
        /// The member.
        member: String,
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
    /// An array of bulk strings or nils (`HMGET`, `SMEMBERS`, `ZRANGEBYSCORE`). `SMEMBERS`
    /// comes in the server's hash order: compare it as a set.
    Array(Vec<Option<String>>),
    /// Field-value pairs (`HGETALL`), in the server's hash order: compare them as a set.
    Pairs(Vec<(String, String)>),
}

/// Redis' reply to a command on a key holding another type.
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

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
    /// `KEYS[1]` hash, `ARGV[1]` version, `ARGV[2..]` field-value pairs: a versioned cache
    /// write. If the hash's `version` field is missing or not a version (1 to 15 ASCII
    /// digits) it counts as -1; if it is smaller than `ARGV[1]`, `HSET key version ARGV[1]
    /// pairs...` and return 1; otherwise write nothing and return 0. `ARGV[1]` must be a
    /// version and the pairs complete (an error before any write).
    SetIfNewer,
    /// `KEYS[1]` hash, `ARGV[1]` field, `ARGV[2]` amount: an atomic check-and-deduct. If the
    /// field holds an integer (an optional `-` and 1 to 15 ASCII digits) of at least the
    /// amount, `HINCRBY key field -amount` and return 1; otherwise (missing, smaller, not an
    /// integer) write nothing and return 0. The amount must be 1 to 15 ASCII digits (an error
    /// before any write).
    DeductIfEnough,
    /// The scheduler's node registration (`register_node_v2.lua`); see
    /// [`crate::scheduler::scripts`] for this and the following scripts' keys and arguments.
    SchedRegister,
    /// The scheduler's heartbeat (`heartbeat_with_pool_assign.lua`).
    SchedHeartbeat,
    /// The scheduler's submit-and-bind (`select_node.lua` with the binding).
    SchedDispatch,
    /// The scheduler's re-dispatch decision for one job.
    SchedReap,
    /// A node's query of the jobs bound to it.
    SchedPoll,
    /// A node's result for a job.
    SchedComplete,
    /// The scheduler's node selection without the binding (the split of assumption A9).
    SchedSelect,
    /// The binding of a job to a node selected by an earlier call.
    SchedBind,
    /// The node-offline script, which re-dispatches the node's jobs.
    SchedOffline,
    /// The timeout finalize of a job (R-004-06).
    SchedFinalize,
    /// `KEYS[1]` hash, `ARGV[1]` field, `ARGV[2]` expected value, `ARGV[3]` version: a
    /// versioned compare-and-delete (the routing family's affinity cleared on a failure). If
    /// the field holds exactly the expected value and the hash's `version` field (missing or
    /// not a version: -1) is at most `ARGV[3]`, `DEL key` and return 1; otherwise write
    /// nothing and return 0. `ARGV[3]` must be a version (an error before any write).
    CompareAndDeleteVersioned,
    /// The scheduler's registration or heartbeat behind a configuration version check
    /// (R-004-08, [`crate::scheduler::rollout::versioned`]).
    SchedVersioned,
    /// A transition of a job's FSM record (R-004-05), unconditional or a compare-and-set;
    /// see [`crate::scheduler::jobfsm::script`].
    SchedTransition,
    /// `KEYS[1]` counter, `ARGV[1]` window in ms: a counter in a window, as one atomic step
    /// (the breaker's shared failure counter, R-000-10). `INCRBY key 1`; if that made the
    /// counter 1 (it was absent: a new window), `PEXPIRE key window`; return the count. So
    /// that no crash can fall between the two and leave a counter without a TTL. The window
    /// must be 1 to 15 ASCII digits and not zero, and a counter's text may hold at most 15
    /// digits (Lua would round a larger count): errors before any write; a key of another
    /// type is `WRONGTYPE`, and a value that is not an integer `INCRBY`'s error, with
    /// nothing written.
    IncrWindow,
}

/// A version or amount as the scripts accept it: 1 to 15 ASCII digits, so that Rust's and
/// Lua's number parsing can never disagree.
fn script_number(text: &str) -> Option<i64> {
    let digits = !text.is_empty() && text.len() <= 15 && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

/// An integer field as [`ScriptName::DeductIfEnough`] reads it: an optional `-` and 1 to 15
/// ASCII digits.
fn script_signed(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some(rest) => script_number(rest).map(|n| -n),
        None => script_number(text),
    }
}

/// `HGET key field` inside a script: the value, `None` when missing, or the error reply
/// (`WRONGTYPE`) the script must return at once.
fn script_hget(view: &mut dyn KvView, key: &str, field: &str) -> Result<Option<String>, KvReply> {
    Ok(view.hget(key, field)?.map(Cow::into_owned))
}

/// What a script sees of the key space: the commands a Lua script runs through
/// `redis.pcall`, every [`KvOp`] but a script. Implemented by the Redis model (with TTL on the
/// virtual clock) and by test doubles.
///
/// [`KvView::call`] is the one required method. The others are the commands scripts run most,
/// taking borrowed arguments so that a script builds no [`KvOp`] for them; each one's default
/// goes through [`KvView::call`] with the matching [`KvOp`], and an implementation that
/// overrides one must answer exactly as that default would (the Redis model's tests hold it
/// to that). A reply that is an error comes back as [`KvReply::Error`], as from `call`.
pub trait KvView {
    /// Runs one command inside the script and returns its reply; an error (`WRONGTYPE`, ...)
    /// comes back as [`KvReply::Error`], as `redis.pcall` returns it.
    fn call(&mut self, op: &KvOp) -> KvReply;

    /// `GET key`: the value (borrowed where the view can), `None` when missing or not a bulk
    /// reply, or the error reply (`WRONGTYPE`).
    fn get(&mut self, key: &str) -> Result<Option<Cow<'_, str>>, KvReply> {
        match self.call(&KvOp::Get { key: key.into() }) {
            KvReply::Bulk(v) => Ok(Some(Cow::Owned(v))),
            KvReply::Error(e) => Err(KvReply::Error(e)),
            _ => Ok(None),
        }
    }

    /// `HGET key field`: the value (borrowed where the view can), `None` when missing or not
    /// a bulk reply, or the error reply (`WRONGTYPE`).
    fn hget(&mut self, key: &str, field: &str) -> Result<Option<Cow<'_, str>>, KvReply> {
        let op = KvOp::HGet {
            key: key.into(),
            field: field.into(),
        };
        match self.call(&op) {
            KvReply::Bulk(v) => Ok(Some(Cow::Owned(v))),
            KvReply::Error(e) => Err(KvReply::Error(e)),
            _ => Ok(None),
        }
    }

    /// `SMEMBERS key` sorted byte by byte (as the scripts' Lua sorts it), the nil items of
    /// the reply left out; empty when the reply is not an array, or the error reply.
    fn members_sorted(&mut self, key: &str) -> Result<Vec<String>, KvReply> {
        match self.call(&KvOp::SMembers { key: key.into() }) {
            KvReply::Array(items) => {
                let mut m: Vec<String> = items.into_iter().flatten().collect();
                m.sort();
                Ok(m)
            }
            KvReply::Error(e) => Err(KvReply::Error(e)),
            _ => Ok(Vec::new()),
        }
    }

    /// `HSET key field value [field value ...]`.
    fn hset(&mut self, key: &str, pairs: &[(&str, &str)]) -> KvReply {
        self.call(&KvOp::HSet {
            key: key.into(),
            pairs: pairs
                .iter()
                .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    /// `HINCRBY key field delta`.
    fn hincr_by(&mut self, key: &str, field: &str, delta: i64) -> KvReply {
        self.call(&KvOp::HIncrBy {
            key: key.into(),
            field: field.into(),
            delta,
        })
    }

    /// `SADD key member`.
    fn sadd(&mut self, key: &str, member: &str) -> KvReply {
        self.call(&KvOp::SAdd {
            key: key.into(),
            members: vec![member.into()],
        })
    }

    /// `SREM key member`.
    fn srem(&mut self, key: &str, member: &str) -> KvReply {
        self.call(&KvOp::SRem {
            key: key.into(),
            members: vec![member.into()],
        })
    }

    /// `INCRBY key delta`.
    fn incr_by(&mut self, key: &str, delta: i64) -> KvReply {
        self.call(&KvOp::IncrBy {
            key: key.into(),
            delta,
        })
    }

    /// `PEXPIRE key ttl`.
    fn pexpire(&mut self, key: &str, ttl: Duration) -> KvReply {
        self.call(&KvOp::PExpire {
            key: key.into(),
            ttl,
        })
    }

    /// `DEL key`.
    fn del(&mut self, key: &str) -> KvReply {
        self.call(&KvOp::Del { key: key.into() })
    }
}

/// `GET key` inside a script: the value, `None` when missing, or the error reply
/// (`WRONGTYPE`) the script must return at once.
fn script_get(view: &mut dyn KvView, key: &str) -> Result<Option<String>, KvReply> {
    Ok(view.get(key)?.map(Cow::into_owned))
}

impl ScriptName {
    /// Every script, each with its Lua in the adapters: for conformance tests and for loading
    /// on a server.
    pub const ALL: [ScriptName; 18] = [
        ScriptName::CompareAndExtend,
        ScriptName::CompareAndDelete,
        ScriptName::SetIfNewer,
        ScriptName::DeductIfEnough,
        ScriptName::SchedRegister,
        ScriptName::SchedHeartbeat,
        ScriptName::SchedDispatch,
        ScriptName::SchedReap,
        ScriptName::SchedPoll,
        ScriptName::SchedComplete,
        ScriptName::SchedSelect,
        ScriptName::SchedBind,
        ScriptName::SchedOffline,
        ScriptName::SchedFinalize,
        ScriptName::CompareAndDeleteVersioned,
        ScriptName::SchedVersioned,
        ScriptName::SchedTransition,
        ScriptName::IncrWindow,
    ];

    /// The scheduler family's scripts, whose keys derive from a namespace in `KEYS[1]` (see
    /// [`crate::scheduler::scripts`]).
    pub const SCHEDULER: [ScriptName; 12] = [
        ScriptName::SchedRegister,
        ScriptName::SchedHeartbeat,
        ScriptName::SchedDispatch,
        ScriptName::SchedReap,
        ScriptName::SchedPoll,
        ScriptName::SchedComplete,
        ScriptName::SchedSelect,
        ScriptName::SchedBind,
        ScriptName::SchedOffline,
        ScriptName::SchedFinalize,
        ScriptName::SchedVersioned,
        ScriptName::SchedTransition,
    ];

    /// The script's semantics. A wrong number of keys or arguments, or a TTL that is not a
    /// positive integer, is a runtime error (Redis keeps any writes made before it; the lock
    /// and cache scripts validate before their first write). A lock key holding a hash, set
    /// or sorted set makes them return `WRONGTYPE`, before any write. The scheduler's
    /// scripts may fail half-way (a key of the wrong type met after a write), keeping the
    /// earlier writes, as Redis does.
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
                let current = match script_get(view, key) {
                    Ok(v) => v,
                    Err(e) => return e,
                };
                if current.as_deref() == Some(owner.as_str()) {
                    view.call(&KvOp::PExpire {
                        key: key.clone(),
                        ttl: Duration::from_ms(ttl),
                    });
                    KvReply::Int(1)
                } else {
                    KvReply::Int(0)
                }
            }
            ScriptName::SetIfNewer => ScriptName::set_if_newer(view, keys, args),
            ScriptName::CompareAndDeleteVersioned => {
                ScriptName::compare_and_delete_versioned(view, keys, args)
            }
            ScriptName::DeductIfEnough => ScriptName::deduct_if_enough(view, keys, args),
            ScriptName::CompareAndDelete => {
                let (Some(key), Some(owner)) = (keys.first(), args.first()) else {
                    return KvReply::Error("ERR compare_and_delete needs 1 key and 1 arg".into());
                };
                let current = match script_get(view, key) {
                    Ok(v) => v,
                    Err(e) => return e,
                };
                if current.as_deref() == Some(owner.as_str()) {
                    view.call(&KvOp::Del { key: key.clone() });
                    KvReply::Int(1)
                } else {
                    KvReply::Int(0)
                }
            }
            ScriptName::SchedRegister => crate::scheduler::scripts::register(view, keys, args),
            ScriptName::SchedHeartbeat => crate::scheduler::scripts::heartbeat(view, keys, args),
            ScriptName::SchedDispatch => crate::scheduler::scripts::dispatch(view, keys, args),
            ScriptName::SchedReap => crate::scheduler::scripts::reap(view, keys, args),
            ScriptName::SchedPoll => crate::scheduler::scripts::poll(view, keys, args),
            ScriptName::SchedComplete => crate::scheduler::scripts::complete(view, keys, args),
            ScriptName::SchedSelect => crate::scheduler::scripts::select(view, keys, args),
            ScriptName::SchedBind => crate::scheduler::scripts::bind_to(view, keys, args),
            ScriptName::SchedOffline => crate::scheduler::scripts::offline(view, keys, args),
            ScriptName::SchedFinalize => crate::scheduler::scripts::finalize(view, keys, args),
            ScriptName::SchedVersioned => crate::scheduler::rollout::versioned(view, keys, args),
            ScriptName::SchedTransition => {
                crate::scheduler::jobfsm::script::transition(view, keys, args)
            }
            ScriptName::IncrWindow => ScriptName::incr_window(view, keys, args),
        }
    }

    /// The script's name as written in timelines and in the adapters.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptName::CompareAndExtend => "compare_and_extend",
            ScriptName::CompareAndDelete => "compare_and_delete",
            ScriptName::SetIfNewer => "set_if_newer",
            ScriptName::CompareAndDeleteVersioned => "compare_and_delete_versioned",
            ScriptName::DeductIfEnough => "deduct_if_enough",
            ScriptName::SchedRegister => "sched_register",
            ScriptName::SchedHeartbeat => "sched_heartbeat",
            ScriptName::SchedDispatch => "sched_dispatch",
            ScriptName::SchedReap => "sched_reap",
            ScriptName::SchedPoll => "sched_poll",
            ScriptName::SchedComplete => "sched_complete",
            ScriptName::SchedSelect => "sched_select",
            ScriptName::SchedBind => "sched_bind",
            ScriptName::SchedOffline => "sched_offline",
            ScriptName::SchedFinalize => "sched_finalize",
            ScriptName::SchedVersioned => "sched_versioned",
            ScriptName::SchedTransition => "sched_transition",
            ScriptName::IncrWindow => "incr_window",
        }
    }

    fn set_if_newer(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
        let (Some(key), Some(version)) = (keys.first(), args.first()) else {
            return KvReply::Error("ERR set_if_newer needs 1 key and a version".into());
        };
        let pairs = &args[1..];
        if !pairs.len().is_multiple_of(2) {
            return KvReply::Error("ERR set_if_newer needs field-value pairs".into());
        }
        let Some(new) = script_number(version) else {
            return KvReply::Error("ERR version must be 1 to 15 digits".into());
        };
        let stored = match script_hget(view, key, "version") {
            Ok(v) => v.as_deref().and_then(script_number).unwrap_or(-1),
            Err(e) => return e,
        };
        if stored >= new {
            return KvReply::Int(0);
        }
        let mut all = vec![("version".to_string(), version.clone())];
        all.extend(pairs.chunks(2).map(|p| (p[0].clone(), p[1].clone())));
        match view.call(&KvOp::HSet {
            key: key.clone(),
            pairs: all,
        }) {
            KvReply::Error(e) => KvReply::Error(e),
            _ => KvReply::Int(1),
        }
    }

    fn compare_and_delete_versioned(
        view: &mut dyn KvView,
        keys: &[String],
        args: &[String],
    ) -> KvReply {
        let (Some(key), Some(field), Some(expected), Some(version)) =
            (keys.first(), args.first(), args.get(1), args.get(2))
        else {
            return KvReply::Error(
                "ERR compare_and_delete_versioned needs 1 key and 3 args".into(),
            );
        };
        let Some(mine) = script_number(version) else {
            return KvReply::Error("ERR version must be 1 to 15 digits".into());
        };
        let current = match script_hget(view, key, field) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if current.as_deref() != Some(expected.as_str()) {
            return KvReply::Int(0);
        }
        let stored = match script_hget(view, key, "version") {
            Ok(v) => v.as_deref().and_then(script_number).unwrap_or(-1),
            Err(e) => return e,
        };
        if stored > mine {
            return KvReply::Int(0);
        }
        view.call(&KvOp::Del { key: key.clone() });
        KvReply::Int(1)
    }

    fn incr_window(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
        let (Some(key), Some(window)) = (keys.first(), args.first()) else {
            return KvReply::Error("ERR incr_window needs 1 key and 1 arg".into());
        };
        let Some(window) = script_number(window).filter(|ms| *ms > 0) else {
            return KvReply::Error("ERR window must be 1 to 15 digits, not zero".into());
        };
        // Lua holds a reply's integer as a double: a counter past 15 digits would come back
        // rounded, so such a counter is refused before the write.
        match script_get(view, key) {
            Ok(Some(v)) => {
                let digits = v.strip_prefix('-').unwrap_or(&v);
                if digits.len() > 15 && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return KvReply::Error("ERR incr_window counter past 15 digits".into());
                }
            }
            Ok(None) => {}
            Err(e) => return e,
        }
        let count = match view.call(&KvOp::IncrBy {
            key: key.clone(),
            delta: 1,
        }) {
            KvReply::Int(count) => count,
            other => return other,
        };
        if count == 1 {
            view.call(&KvOp::PExpire {
                key: key.clone(),
                ttl: Duration::from_ms(window.unsigned_abs()),
            });
        }
        KvReply::Int(count)
    }

    fn deduct_if_enough(view: &mut dyn KvView, keys: &[String], args: &[String]) -> KvReply {
        let (Some(key), Some(field), Some(amount)) = (keys.first(), args.first(), args.get(1))
        else {
            return KvReply::Error("ERR deduct_if_enough needs 1 key and 2 args".into());
        };
        let Some(amount) = script_number(amount) else {
            return KvReply::Error("ERR amount must be 1 to 15 digits".into());
        };
        let current = match script_hget(view, key, field) {
            Ok(v) => v.as_deref().and_then(script_signed),
            Err(e) => return e,
        };
        if current.is_none_or(|c| c < amount) {
            return KvReply::Int(0);
        }
        match view.call(&KvOp::HIncrBy {
            key: key.clone(),
            field: field.clone(),
            delta: -amount,
        }) {
            KvReply::Error(e) => KvReply::Error(e),
            _ => KvReply::Int(1),
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
            KvOp::DecrBy { key, delta } => write!(f, "DECRBY {key} {delta}"),
            KvOp::Expire { key, seconds } => write!(f, "EXPIRE {key} {seconds}"),
            KvOp::Ttl { key } => write!(f, "TTL {key}"),
            KvOp::Exists { key } => write!(f, "EXISTS {key}"),
            KvOp::Publish { channel, message } => write!(f, "PUBLISH {channel} {message}"),
            KvOp::HGet { key, field } => write!(f, "HGET {key} {field}"),
            KvOp::HSet { key, pairs } => {
                write!(f, "HSET {key}")?;
                for (field, value) in pairs {
                    write!(f, " {field} {value}")?;
                }
                Ok(())
            }
            KvOp::HMGet { key, fields } => write_list(f, "HMGET", key, fields),
            KvOp::HGetAll { key } => write!(f, "HGETALL {key}"),
            KvOp::HIncrBy { key, field, delta } => write!(f, "HINCRBY {key} {field} {delta}"),
            KvOp::HDel { key, fields } => write_list(f, "HDEL", key, fields),
            KvOp::SAdd { key, members } => write_list(f, "SADD", key, members),
            KvOp::SRem { key, members } => write_list(f, "SREM", key, members),
            KvOp::SIsMember { key, member } => write!(f, "SISMEMBER {key} {member}"),
            KvOp::SMembers { key } => write!(f, "SMEMBERS {key}"),
            KvOp::SCard { key } => write!(f, "SCARD {key}"),
            KvOp::ZAdd { key, pairs } => {
                write!(f, "ZADD {key}")?;
                for (score, member) in pairs {
                    write!(f, " {score} {member}")?;
                }
                Ok(())
            }
            KvOp::ZRem { key, members } => write_list(f, "ZREM", key, members),
            KvOp::ZRangeByScore { key, min, max } => write!(f, "ZRANGEBYSCORE {key} {min} {max}"),
            KvOp::ZScore { key, member } => write!(f, "ZSCORE {key} {member}"),
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
            KvReply::Array(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    match item {
                        Some(s) => write!(f, "{sep}{s:?}")?,
                        None => write!(f, "{sep}nil")?,
                    }
                }
                write!(f, "]")
            }
            KvReply::Pairs(pairs) => {
                write!(f, "{{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{k:?}: {v:?}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

impl KvOp {
    /// The key the command is about (a script's first key, if any; none for `PUBLISH`).
    pub fn key(&self) -> Option<&str> {
        match self {
            KvOp::Script { keys, .. } => keys.first().map(String::as_str),
            KvOp::Publish { .. } => None,
            KvOp::Get { key }
            | KvOp::Set { key, .. }
            | KvOp::Del { key }
            | KvOp::IncrBy { key, .. }
            | KvOp::PExpire { key, .. }
            | KvOp::PTtl { key }
            | KvOp::DecrBy { key, .. }
            | KvOp::Expire { key, .. }
            | KvOp::Ttl { key }
            | KvOp::Exists { key }
            | KvOp::HGet { key, .. }
            | KvOp::HSet { key, .. }
            | KvOp::HMGet { key, .. }
            | KvOp::HGetAll { key }
            | KvOp::HIncrBy { key, .. }
            | KvOp::HDel { key, .. }
            | KvOp::SAdd { key, .. }
            | KvOp::SRem { key, .. }
            | KvOp::SIsMember { key, .. }
            | KvOp::SMembers { key }
            | KvOp::SCard { key }
            | KvOp::ZAdd { key, .. }
            | KvOp::ZRem { key, .. }
            | KvOp::ZRangeByScore { key, .. }
            | KvOp::ZScore { key, .. } => Some(key),
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, cmd: &str, key: &str, items: &[String]) -> fmt::Result {
    write!(f, "{cmd} {key}")?;
    for item in items {
        write!(f, " {item}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Map(BTreeMap<String, String>);

    impl KvView for Map {
        fn call(&mut self, op: &KvOp) -> KvReply {
            match op {
                KvOp::Get { key } => self.0.get(key).cloned().map_or(KvReply::Nil, KvReply::Bulk),
                KvOp::PExpire { key, .. } => KvReply::Int(i64::from(self.0.contains_key(key))),
                KvOp::Del { key } => KvReply::Int(i64::from(self.0.remove(key).is_some())),
                _ => KvReply::Error("ERR not in this test double".into()),
            }
        }
    }

    /// A view whose lock key holds a hash.
    struct WrongType;

    impl KvView for WrongType {
        fn call(&mut self, op: &KvOp) -> KvReply {
            match op {
                // INCRBY on a hash fails as a whole: nothing is written.
                KvOp::Get { .. } | KvOp::HGet { .. } | KvOp::IncrBy { .. } => {
                    KvReply::Error(WRONGTYPE.into())
                }
                _ => panic!("the script wrote after WRONGTYPE: {op}"),
            }
        }
    }

    #[test]
    fn scripts_return_wrongtype_before_any_write() {
        let lock_and_cache = ScriptName::ALL
            .into_iter()
            .filter(|s| !ScriptName::SCHEDULER.contains(s));
        for script in lock_and_cache {
            let args = match script {
                ScriptName::SetIfNewer => s(&["7", "balance", "10"]),
                ScriptName::DeductIfEnough => s(&["balance", "10"]),
                ScriptName::CompareAndDeleteVersioned => s(&["upstream", "E1", "3"]),
                ScriptName::IncrWindow => s(&["1000"]),
                _ => s(&["A", "1000"]),
            };
            let r = script.run(&mut WrongType, &s(&["lock"]), &args);
            assert_eq!(r, KvReply::Error(WRONGTYPE.into()), "{}", script.as_str());
        }
    }

    /// A counter and the windows set on it.
    #[derive(Default)]
    struct Counter {
        value: Option<i64>,
        windows: Vec<Duration>,
    }

    impl KvView for Counter {
        fn call(&mut self, op: &KvOp) -> KvReply {
            match op {
                KvOp::IncrBy { delta, .. } => {
                    let v = self.value.unwrap_or(0) + delta;
                    self.value = Some(v);
                    KvReply::Int(v)
                }
                KvOp::PExpire { ttl, .. } => {
                    self.windows.push(*ttl);
                    KvReply::Int(1)
                }
                KvOp::Get { .. } => self
                    .value
                    .map_or(KvReply::Nil, |v| KvReply::Bulk(v.to_string())),
                _ => panic!("incr_window sent {op}"),
            }
        }
    }

    /// The first count opens a window, the next ones only count; a bad window is refused
    /// before any write.
    #[test]
    fn incr_window_sets_the_window_with_the_first_count_only() {
        let mut c = Counter::default();
        let run = |c: &mut Counter, window: &str| {
            ScriptName::IncrWindow.run(c, &s(&["cb:E1:fails"]), &s(&[window]))
        };
        assert_eq!(run(&mut c, "10000"), KvReply::Int(1));
        assert_eq!(run(&mut c, "10000"), KvReply::Int(2));
        assert_eq!(c.windows, vec![Duration::from_ms(10_000)]);
        for bad in ["0", "", "-5", "1e3", "1234567890123456"] {
            assert!(
                matches!(run(&mut c, bad), KvReply::Error(_)),
                "window {bad:?} refused"
            );
        }
        assert_eq!((c.value, c.windows.len()), (Some(2), 1), "nothing written");
        c.value = Some(-1_000_000_000_000_000);
        assert!(matches!(run(&mut c, "10"), KvReply::Error(_)), "16 digits");
        assert_eq!(c.value, Some(-1_000_000_000_000_000), "nothing written");
    }

    #[test]
    fn commands_display_as_redis_writes_them() {
        let hset = KvOp::HSet {
            key: "k".into(),
            pairs: vec![("f".into(), "v".into()), ("g".into(), "w".into())],
        };
        assert_eq!(hset.to_string(), "HSET k f v g w");
        let range = KvOp::ZRangeByScore {
            key: "z".into(),
            min: ScoreBound::NegInf,
            max: ScoreBound::At(3),
        };
        assert_eq!(range.to_string(), "ZRANGEBYSCORE z -inf 3");
        let reply = KvReply::Array(vec![Some("a".into()), None]);
        assert_eq!(reply.to_string(), r#"["a", nil]"#);
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
