//! Conformance: generated sequences of every `KvOp` and named script, run against the Redis
//! model and against real Redis, must give equal replies and leave equal state. Strings,
//! hashes, sets and sorted sets share the same few keys, so that commands meet keys of the
//! wrong type (`WRONGTYPE`), TTLs land on collections and last members get removed.
//! `HGETALL` and `SMEMBERS` come in Redis' hash order and are compared as sets.
//!
//! Time: the model takes virtual `now`, Redis uses its clock. The model is given the real
//! milliseconds since the sequence started, TTLs are generous (at least a minute, or 0 for
//! `PEXPIRE`/`EXPIRE`, which delete at once in both), so nothing expires by accident, and
//! `PTTL` and `TTL` are compared within a tolerance.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use racelab_adapters::RedisKv;
use racelab_core::{
    Duration, KvOp, KvReply, ScoreBound, ScriptName, SetCondition, Timestamp, WRONGTYPE,
};
use racelab_sim::explore::models::RedisModel;

/// Keys with quotes, glob and Lua metacharacters, unicode and a NUL.
const KEYS: [&str; 4] = ["k", "k'\"; --", "ключ🔑{a}*?[x]", "nul\u{0}key"];

/// Values: numbers for INCRBY (and texts Redis does not read as integers: leading zero, plus
/// sign, "-0", a space), SQL/Lua injection attempts, unicode, empty, NUL.
const VALUES: [&str; 15] = [
    "",
    "v",
    "0",
    "42",
    "-7",
    "9223372036854775806",
    "x'; DROP TABLE t; --",
    "return redis.call('FLUSHALL')",
    "]]..redis.call('DEL', KEYS[1])..[[",
    "ünï©ødé 🎉",
    "a\u{0}b",
    "05",
    "+5",
    "-0",
    " 5",
];

/// TTL arguments of `compare_and_extend`, valid and not (leading zeros, too long, signs).
const SCRIPT_TTLS: [&str; 11] = [
    "60000",
    "120000",
    "90000",
    "0060000",
    "0",
    "abc",
    "-1",
    "",
    "1234567890123456",
    "600000",
    "１２",
];

/// Hash fields and set or sorted-set members: mostly the first, so that they meet again.
const FIELDS: [&str; 5] = ["f", "g", "ключ🔑", "a\u{0}b", "'; --"];

/// PTTL tolerance between the model's virtual clock and Redis' clock.
const PTTL_TOLERANCE_MS: i64 = 1_000;

/// TTL (seconds, rounded) tolerance: one rounding step either way.
const TTL_TOLERANCE_S: i64 = 1;

/// The commands the typed-value generators must each have run, by name.
const NEW_COMMANDS: [&str; 20] = [
    "HGET",
    "HSET",
    "HMGET",
    "HGETALL",
    "HINCRBY",
    "HDEL",
    "SADD",
    "SREM",
    "SISMEMBER",
    "SMEMBERS",
    "SCARD",
    "ZADD",
    "ZREM",
    "ZRANGEBYSCORE",
    "ZSCORE",
    "DECRBY",
    "EXPIRE",
    "TTL",
    "EXISTS",
    "PUBLISH",
];

fn ttl() -> impl Strategy<Value = Duration> {
    (60_000u64..600_000).prop_map(Duration::from_ms)
}

/// Mostly the first two keys, so that types collide on them.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&KEYS[..2]).prop_map(str::to_string),
        1 => prop::sample::select(&KEYS[..]).prop_map(str::to_string),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(FIELDS[0].to_string()),
        3 => prop::sample::select(&FIELDS[..2]).prop_map(str::to_string),
        1 => prop::sample::select(&FIELDS[..]).prop_map(str::to_string),
    ]
}

/// One to three fields or members; rarely none, which Redis refuses (arity).
fn fields() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        15 => prop::collection::vec(field(), 1..=3),
        1 => Just(Vec::new()),
    ]
}

/// What `HDEL`, `SREM` and `ZREM` remove: like [`fields`], or every field there is, which
/// empties the key (Redis then deletes it, and so must the model).
fn removal() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => fields(),
        2 => Just(FIELDS.iter().map(|f| f.to_string()).collect()),
    ]
}

/// Integer scores, exact in Redis' doubles up to 2^53.
fn score() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -3i64..=3,
        1 => Just(1i64 << 53),
        1 => Just(-(1i64 << 53)),
    ]
}

fn bound() -> impl Strategy<Value = ScoreBound> {
    prop_oneof![
        4 => score().prop_map(ScoreBound::At),
        1 => Just(ScoreBound::NegInf),
        1 => Just(ScoreBound::PosInf),
    ]
}

fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![-5i64..=5, Just(i64::MAX), Just(i64::MIN), Just(1i64 << 62)]
}

/// Hash commands.
fn hash_op() -> impl Strategy<Value = KvOp> {
    let pairs = prop_oneof![
        15 => prop::collection::vec((field(), value()), 1..=3),
        1 => Just(Vec::new()),
    ];
    prop_oneof![
        2 => (key(), field()).prop_map(|(key, field)| KvOp::HGet { key, field }),
        4 => (key(), pairs).prop_map(|(key, pairs)| KvOp::HSet { key, pairs }),
        1 => (key(), fields()).prop_map(|(key, fields)| KvOp::HMGet { key, fields }),
        1 => key().prop_map(|key| KvOp::HGetAll { key }),
        2 => (key(), field(), delta())
            .prop_map(|(key, field, delta)| KvOp::HIncrBy { key, field, delta }),
        2 => (key(), removal()).prop_map(|(key, fields)| KvOp::HDel { key, fields }),
    ]
}

/// Set commands.
fn set_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        4 => (key(), fields()).prop_map(|(key, members)| KvOp::SAdd { key, members }),
        3 => (key(), removal()).prop_map(|(key, members)| KvOp::SRem { key, members }),
        1 => (key(), field()).prop_map(|(key, member)| KvOp::SIsMember { key, member }),
        1 => key().prop_map(|key| KvOp::SMembers { key }),
        1 => key().prop_map(|key| KvOp::SCard { key }),
    ]
}

/// Sorted-set commands.
fn zset_op() -> impl Strategy<Value = KvOp> {
    let pairs = prop_oneof![
        15 => prop::collection::vec((score(), field()), 1..=3),
        1 => Just(Vec::new()),
    ];
    prop_oneof![
        4 => (key(), pairs).prop_map(|(key, pairs)| KvOp::ZAdd { key, pairs }),
        3 => (key(), removal()).prop_map(|(key, members)| KvOp::ZRem { key, members }),
        2 => (key(), bound(), bound())
            .prop_map(|(key, min, max)| KvOp::ZRangeByScore { key, min, max }),
        1 => (key(), field()).prop_map(|(key, member)| KvOp::ZScore { key, member }),
    ]
}

/// Commands on a key of any type, and `DECRBY`.
fn any_type_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        2 => (key(), prop_oneof![1 => Just(0u64), 6 => 60u64..600])
            .prop_map(|(key, seconds)| KvOp::Expire { key, seconds }),
        2 => key().prop_map(|key| KvOp::Ttl { key }),
        1 => key().prop_map(|key| KvOp::Exists { key }),
        2 => (key(), delta()).prop_map(|(key, delta)| KvOp::DecrBy { key, delta }),
        // Nobody subscribes in these sequences: 0 receivers, and no key changes.
        1 => (key(), value()).prop_map(|(channel, message)| KvOp::Publish { channel, message }),
    ]
}

/// Mostly a few common values, so that owners match and scripts take their success paths.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(&VALUES[1..4]).prop_map(str::to_string),
        1 => prop::sample::select(&VALUES[..]).prop_map(str::to_string),
    ]
}

/// Mostly the one key scripts need; sometimes none or an extra one (ignored).
fn script_keys() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        6 => key().prop_map(|k| vec![k]),
        1 => prop::collection::vec(key(), 0..=2),
    ]
}

fn op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        14 => string_op(),
        4 => hash_op(),
        4 => set_op(),
        4 => zset_op(),
        2 => any_type_op(),
        5 => cache_script_op(),
        9 => affinity_script_op(),
        11 => sched_op(),
        3 => sched_versioned_op(),
        6 => job_fsm_op(),
    ]
}

/// The scheduler scripts' namespace (`KEYS[1]`), node ids and job ids: few, so that they
/// meet; a node id outside ASCII so that the scripts' byte-order sort is exercised.
const SCHED_NS: &str = "s:";
const SCHED_NODES: [&str; 3] = ["n1", "n2", "ü🔑"];
const SCHED_JOBS: [&str; 2] = ["j1", "j2"];

/// Every key the scheduler scripts derive from [`SCHED_NS`], the ids above, and the empty
/// id (refused before any write, listed so that a write to it would show).
fn sched_keys() -> Vec<String> {
    let mut keys = vec![format!("{SCHED_NS}pool"), format!("{SCHED_NS}rr")];
    for n in SCHED_NODES.iter().chain([&""]) {
        for kind in ["node", "epoch", "jobs"] {
            keys.push(format!("{SCHED_NS}{kind}:{n}"));
        }
    }
    for j in SCHED_JOBS.iter().chain([&""]) {
        keys.push(format!("{SCHED_NS}job:{j}"));
        keys.push(format!("{SCHED_NS}binding:{j}"));
    }
    // R-004-08's configuration hash, read by the versioned registration and heartbeat.
    keys.push(format!("{SCHED_NS}config"));
    keys
}

/// The routing family's affinity record's own key.
const AFFINITY_KEY: &str = "aff";

/// The breaker's failure counter's own key (`incr_window`).
const WINDOW_KEY: &str = "cb:fails";

/// Every key a sequence may touch: the generic ones, the scheduler's, the affinity
/// record's, the job FSM's and the breaker counter's.
fn all_keys() -> Vec<String> {
    KEYS.iter()
        .map(|k| k.to_string())
        .chain(sched_keys())
        .chain([AFFINITY_KEY.to_string()])
        .chain(fsm_keys())
        .chain([WINDOW_KEY.to_string()])
        .collect()
}

/// A scheduler script's TTL argument: mostly valid (leading zeros too), or no TTL, or text
/// the scripts must refuse (a letter, empty, a sign, 16 digits, full-width digits).
fn sched_ttl() -> impl Strategy<Value = String> {
    const BAD: [&str; 5] = ["abc", "", "-1", "1234567890123456", "１２"];
    prop_oneof![
        8 => prop::sample::select(&["60000", "120000", "0090000"][..]).prop_map(str::to_string),
        2 => Just("0".to_string()),
        1 => prop::sample::select(&BAD[..]).prop_map(str::to_string),
    ]
}

/// The `fenced` switch: mostly 0 or 1, sometimes `01` (fenced), `2` (not) or a letter.
fn sched_fenced() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&["0", "1"][..]).prop_map(str::to_string),
        1 => prop::sample::select(&["01", "2", "x"][..]).prop_map(str::to_string),
    ]
}

/// An epoch argument: mostly small ones that match what registration handed out.
fn sched_epoch() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&["0", "1", "2", "3"][..]).prop_map(str::to_string),
        1 => prop::sample::select(&["007", "", "x"][..]).prop_map(str::to_string),
    ]
}

fn sched_node() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(&SCHED_NODES[..]).prop_map(str::to_string),
        1 => Just(String::new()),
    ]
}

fn sched_job() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => prop::sample::select(&SCHED_JOBS[..]).prop_map(str::to_string),
        1 => Just(String::new()),
    ]
}

/// One of the scheduler's keys, mostly those its scripts read.
fn sched_key() -> impl Strategy<Value = String> {
    let keys = sched_keys();
    prop::sample::select(keys)
}

/// A scheduler script, its arguments mostly valid and complete; sometimes cut short, the
/// namespace missing or an extra key (ignored).
fn sched_script() -> impl Strategy<Value = KvOp> {
    let keys = prop_oneof![
        12 => Just(vec![SCHED_NS.to_string()]),
        1 => Just(Vec::new()),
        1 => Just(vec![SCHED_NS.to_string(), KEYS[0].to_string()]),
    ];
    let args = prop_oneof![
        (sched_node(), sched_ttl(), sched_ttl(), sched_fenced())
            .prop_map(|(n, a, b, f)| (ScriptName::SchedRegister, vec![n, a, b, f])),
        (
            sched_node(),
            sched_ttl(),
            sched_ttl(),
            sched_fenced(),
            sched_epoch()
        )
            .prop_map(|(n, a, b, f, e)| (ScriptName::SchedHeartbeat, vec![n, a, b, f, e])),
        (sched_job(), sched_fenced()).prop_map(|(j, f)| (ScriptName::SchedDispatch, vec![j, f])),
        (sched_job(), sched_fenced()).prop_map(|(j, f)| (ScriptName::SchedReap, vec![j, f])),
        (sched_node(), sched_fenced(), sched_epoch())
            .prop_map(|(n, f, e)| (ScriptName::SchedPoll, vec![n, f, e])),
        (sched_job(), sched_node(), sched_epoch(), sched_fenced())
            .prop_map(|(j, n, e, f)| (ScriptName::SchedComplete, vec![j, n, e, f])),
        sched_job().prop_map(|j| (ScriptName::SchedSelect, vec![j])),
        (sched_job(), sched_node(), sched_epoch())
            .prop_map(|(j, n, e)| (ScriptName::SchedBind, vec![j, n, e])),
        (sched_node(), sched_fenced()).prop_map(|(n, f)| (ScriptName::SchedOffline, vec![n, f])),
        (sched_job(), sched_fenced()).prop_map(|(j, f)| (ScriptName::SchedFinalize, vec![j, f])),
    ];
    // Mostly every argument; sometimes one too few, or an extra one (ignored).
    let cut = prop_oneof![12 => Just(0usize), 1 => Just(1usize), 1 => Just(usize::MAX)];
    (keys, args, cut).prop_map(|(keys, (script, mut args), cut)| {
        match cut {
            usize::MAX => args.push("extra".into()),
            n => args.truncate(args.len().saturating_sub(n)),
        }
        KvOp::Script { script, keys, args }
    })
}

/// What other writers leave on the scheduler's keys: job and node fields by hand (a state,
/// a binding, a non-integer `results`), pool and index members, a string or a set where a
/// hash belongs (`WRONGTYPE` half-way through a script), counters beyond 15 digits, and
/// deleted keys (an expired lease).
fn sched_plant() -> impl Strategy<Value = KvOp> {
    const FIELD_VALUES: [&str; 10] = [
        "running",
        "done",
        "queued",
        "timed_out",
        "n1",
        "n2",
        "0",
        "1",
        "2",
        "x",
    ];
    const STRINGS: [&str; 4] = ["1", "x", "999999999999999", "-999999999999999"];
    let job_field = prop::sample::select(&["state", "node", "epoch", "results"][..]);
    prop_oneof![
        3 => (sched_job(), job_field, prop::sample::select(&FIELD_VALUES[..])).prop_map(
            |(j, f, v)| KvOp::HSet {
                key: format!("{SCHED_NS}job:{j}"),
                pairs: vec![(f.to_string(), v.to_string())],
            }
        ),
        1 => (sched_node(), sched_epoch()).prop_map(|(n, e)| KvOp::HSet {
            key: format!("{SCHED_NS}node:{n}"),
            pairs: vec![("epoch".into(), e)],
        }),
        1 => sched_node().prop_map(|n| KvOp::SAdd {
            key: format!("{SCHED_NS}pool"),
            members: vec![n],
        }),
        1 => (sched_node(), sched_job()).prop_map(|(n, j)| KvOp::SAdd {
            key: format!("{SCHED_NS}jobs:{n}"),
            members: vec![j],
        }),
        1 => (sched_job(), sched_node()).prop_map(|(j, n)| KvOp::Set {
            key: format!("{SCHED_NS}binding:{j}"),
            value: n,
            condition: SetCondition::Always,
            ttl: None,
        }),
        1 => (sched_key(), prop::sample::select(&STRINGS[..])).prop_map(|(key, v)| KvOp::Set {
            key,
            value: v.to_string(),
            condition: SetCondition::Always,
            ttl: None,
        }),
        1 => sched_key().prop_map(|key| KvOp::SAdd {
            key,
            members: vec!["m".into()],
        }),
        2 => sched_key().prop_map(|key| KvOp::Del { key }),
    ]
}

/// The scheduler's scripts and the state other writers leave on their keys.
fn sched_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        7 => sched_script(),
        2 => sched_plant(),
    ]
}

/// The job FSM records (R-004-05) of the scheduler's job ids, and of the empty id (refused
/// before any write, listed so that a write to it would show).
fn fsm_keys() -> Vec<String> {
    SCHED_JOBS
        .iter()
        .chain([&""])
        .map(|j| format!("{SCHED_NS}fsm:{j}"))
        .collect()
}

/// A job FSM state argument: mostly a state (or `none`), sometimes text the script refuses.
fn fsm_state() -> impl Strategy<Value = String> {
    const STATES: [&str; 7] = [
        "none",
        "created",
        "dispatched",
        "running",
        "done",
        "failed",
        "timed_out",
    ];
    prop_oneof![
        10 => prop::sample::select(&STATES[..]).prop_map(str::to_string),
        1 => prop::sample::select(&["", "x", "DONE"][..]).prop_map(str::to_string),
    ]
}

/// An expected version: mostly the small ones a few transitions reach, sometimes leading
/// zeros, the largest, or text the script refuses.
fn fsm_version() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&["0", "1", "2", "3"][..]).prop_map(str::to_string),
        1 => prop::sample::select(&["007", "", "x", "999999999999999"][..])
            .prop_map(str::to_string),
    ]
}

/// `sched_transition` (R-004-05): a declared transition mostly (so that compare-and-sets
/// meet the record they expect), any pair of states sometimes; unconditional or CAS; a few
/// transition ids (so that a retry meets its own id); arguments sometimes cut short, the
/// namespace missing or an extra key.
fn fsm_script() -> impl Strategy<Value = KvOp> {
    const DECLARED: [(&str, &str); 7] = [
        ("none", "created"),
        ("created", "dispatched"),
        ("dispatched", "running"),
        ("dispatched", "timed_out"),
        ("running", "done"),
        ("running", "failed"),
        ("running", "timed_out"),
    ];
    let keys = prop_oneof![
        12 => Just(vec![SCHED_NS.to_string()]),
        1 => Just(Vec::new()),
        1 => Just(vec![SCHED_NS.to_string(), KEYS[0].to_string()]),
    ];
    let edge = prop_oneof![
        6 => prop::sample::select(&DECLARED[..]).prop_map(|(a, b)| (a.to_string(), b.to_string())),
        1 => (fsm_state(), fsm_state()),
    ];
    let tx = prop_oneof![
        12 => Just("t1".to_string()),
        2 => Just("t2".to_string()),
        1 => Just(String::new()),
    ];
    let cut = prop_oneof![12 => Just(0usize), 1 => 1usize..=6, 1 => Just(usize::MAX)];
    // Mostly compare-and-sets; the unconditional writes, and the `cas` texts the others
    // take, sometimes.
    let cas = prop_oneof![
        6 => Just("1".to_string()),
        3 => Just("0".to_string()),
        1 => prop::sample::select(&["01", "2", "x"][..]).prop_map(str::to_string),
    ];
    (keys, sched_job(), cas, edge, fsm_version(), tx, cut).prop_map(
        |(keys, j, cas, (from, to), version, tx, cut)| {
            let mut args = vec![j, cas, from, version, to, tx];
            match cut {
                usize::MAX => args.push("extra".into()),
                n => args.truncate(args.len().saturating_sub(n)),
            }
            KvOp::Script {
                script: ScriptName::SchedTransition,
                keys,
                args,
            }
        },
    )
}

/// What other writers leave on a job FSM record: a state, a version (not an integer, or at
/// the 15-digit bound: the unconditional write fails half-way), a transition id, a string or
/// a set where the hash belongs (`WRONGTYPE`), the record deleted.
fn fsm_plant() -> impl Strategy<Value = KvOp> {
    let record = || sched_job().prop_map(|j| format!("{SCHED_NS}fsm:{j}"));
    let field = prop_oneof![
        2 => (Just("state"), fsm_state()),
        2 => (Just("version"), prop::sample::select(&["1", "2", "x", "999999999999999", "-1"][..]).prop_map(str::to_string)),
        1 => (Just("tx"), prop::sample::select(&["t1", "t2"][..]).prop_map(str::to_string)),
    ];
    prop_oneof![
        4 => (record(), field).prop_map(|(key, (f, v))| KvOp::HSet {
            key,
            pairs: vec![(f.to_string(), v)],
        }),
        1 => record().prop_map(|key| KvOp::Set {
            key,
            value: "1".into(),
            condition: SetCondition::Always,
            ttl: None,
        }),
        1 => record().prop_map(|key| KvOp::SAdd {
            key,
            members: vec!["m".into()],
        }),
        2 => record().prop_map(|key| KvOp::Del { key }),
    ]
}

/// The job FSM's script and what other writers leave on its records.
fn job_fsm_op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        6 => fsm_script(),
        2 => fsm_plant(),
    ]
}

/// Versions and amounts of the cache scripts: mostly small ones that meet again, and the
/// texts they must refuse (empty, a sign, a letter, 16 digits, full-width digits).
const SCRIPT_NUMBERS: [&str; 10] = [
    "0",
    "1",
    "2",
    "3",
    "",
    "-1",
    "x",
    "1234567890123456",
    "１",
    "007",
];

fn script_number() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(&SCRIPT_NUMBERS[..4]).prop_map(str::to_string),
        1 => prop::sample::select(&SCRIPT_NUMBERS[..]).prop_map(str::to_string),
    ]
}

/// The versioned cache scripts on a hash (`set_if_newer`, `deduct_if_enough`): the balance
/// field mostly, written with small integers so that deductions meet enough and not enough;
/// sometimes a `version` field written by hand, an odd pair count, or another type's key.
fn cache_script_op() -> impl Strategy<Value = KvOp> {
    let balance = || {
        prop_oneof![
            8 => Just("balance".to_string()),
            1 => field(),
            1 => Just("version".to_string()),
        ]
    };
    let amount = || prop_oneof![4 => 0i64..=6, 1 => Just(-3i64)].prop_map(|n| n.to_string());
    // Mostly one key, so that a versioned write and a deduction meet.
    let keys = || {
        prop_oneof![
            4 => Just(vec![KEYS[0].to_string()]),
            1 => script_keys(),
        ]
    };
    let pairs = prop_oneof![
        8 => prop::collection::vec((balance(), amount()), 1..=2)
            .prop_map(|p| p.into_iter().flat_map(|(f, v)| [f, v]).collect::<Vec<_>>()),
        1 => prop::collection::vec(value(), 0..=3),
    ];
    prop_oneof![
        3 => (keys(), script_number(), pairs).prop_map(|(keys, version, pairs)| {
            KvOp::Script {
                script: ScriptName::SetIfNewer,
                keys,
                args: std::iter::once(version).chain(pairs).collect(),
            }
        }),
        5 => (keys(), balance(), script_number(), 0usize..=2).prop_map(
            |(keys, field, amount, extra)| KvOp::Script {
                script: ScriptName::DeductIfEnough,
                keys,
                args: [field, amount, "extra".to_string()].into_iter().take(2 + extra.min(1)).collect(),
            }
        ),
    ]
}

/// R-004-08's versioned registration and heartbeat (arguments mostly valid: the published
/// version or another, both modes, the inner scripts' TTLs, fencing and epochs, sometimes cut
/// short or with an extra argument), and the configuration hash they read: published as
/// version 1, 2 or `02` (text that is not the canonical number), or deleted; other types on
/// its key come from the scheduler's own plants.
fn sched_versioned_op() -> impl Strategy<Value = KvOp> {
    let version = prop_oneof![
        6 => prop::sample::select(&["1", "2"][..]).prop_map(str::to_string),
        1 => prop::sample::select(&["02", "", "x", "1234567890123456"][..]).prop_map(str::to_string),
    ];
    let mode = prop_oneof![
        6 => prop::sample::select(&["register", "heartbeat"][..]).prop_map(str::to_string),
        1 => prop::sample::select(&["", "Register"][..]).prop_map(str::to_string),
    ];
    let script = (
        sched_node(),
        version,
        mode,
        sched_ttl(),
        sched_ttl(),
        sched_fenced(),
        sched_epoch(),
        prop_oneof![12 => Just(0usize), 1 => 1usize..=6, 1 => Just(usize::MAX)],
    )
        .prop_map(|(n, v, m, a, b, f, e, cut)| {
            let mut args = vec![n, v, m, a, b, f];
            if args[2] == "heartbeat" {
                args.push(e);
            }
            match cut {
                usize::MAX => args.push("extra".into()),
                n => args.truncate(args.len().saturating_sub(n)),
            }
            KvOp::Script {
                script: ScriptName::SchedVersioned,
                keys: vec![SCHED_NS.to_string()],
                args,
            }
        });
    let publish = prop::sample::select(&["1", "2", "02"][..]).prop_map(|v| KvOp::HSet {
        key: format!("{SCHED_NS}config"),
        pairs: vec![("version".into(), v.to_string())],
    });
    prop_oneof![
        6 => script,
        2 => publish,
        1 => Just(KvOp::Del {
            key: format!("{SCHED_NS}config"),
        }),
    ]
}

/// The routing family's affinity record: `set_if_newer` of an upstream and the versioned
/// compare-and-delete, mostly on one key of their own, with few upstreams and versions so
/// that writes, refusals and deletions all happen; sometimes another field, a bad version,
/// missing arguments or another type's key.
fn affinity_script_op() -> impl Strategy<Value = KvOp> {
    let keys = || {
        prop_oneof![
            6 => Just(vec![AFFINITY_KEY.to_string()]),
            1 => script_keys(),
        ]
    };
    let upstream = || {
        prop_oneof![
            4 => prop::sample::select(&["E1", "E2"][..]).prop_map(str::to_string),
            1 => value(),
        ]
    };
    let field = || {
        prop_oneof![
            6 => Just("upstream".to_string()),
            1 => field(),
        ]
    };
    prop_oneof![
        1 => (keys(), script_number(), upstream()).prop_map(|(keys, version, u)| KvOp::Script {
            script: ScriptName::SetIfNewer,
            keys,
            args: vec![version, "upstream".to_string(), u],
        }),
        1 => (
            keys(),
            field(),
            upstream(),
            script_number(),
            prop_oneof![6 => Just(3usize), 1 => 0usize..=2],
        )
            .prop_map(|(keys, field, expected, version, nargs)| KvOp::Script {
                script: ScriptName::CompareAndDeleteVersioned,
                keys,
                args: [field, expected, version].into_iter().take(nargs).collect(),
            }),
    ]
}

/// The breaker's `incr_window`, mostly on a key of its own so that counts go on in an open
/// window, and on the generic keys, so that it meets absent keys, counters, text that is not
/// an integer and other types; its window one of
/// the scripts' TTL texts (valid, with leading zeros, zero, or text it must refuse), its
/// argument sometimes missing or followed by another; and a `PTTL` of the key, which
/// compares the window it set.
fn window_script_op() -> impl Strategy<Value = KvOp> {
    let keys = prop_oneof![
        3 => Just(vec![WINDOW_KEY.to_string()]),
        2 => script_keys(),
    ];
    let script = (
        keys,
        prop::sample::select(&SCRIPT_TTLS[..]),
        prop_oneof![8 => Just(1usize), 1 => Just(0usize), 1 => Just(2usize)],
    )
        .prop_map(|(keys, window, nargs)| KvOp::Script {
            script: ScriptName::IncrWindow,
            keys,
            args: [window.to_string(), "extra".to_string()]
                .into_iter()
                .take(nargs)
                .collect(),
        });
    prop_oneof![
        4 => script,
        1 => prop_oneof![Just(WINDOW_KEY.to_string()), key()].prop_map(|key| KvOp::PTtl { key }),
    ]
}

/// The string commands and the scripts.
fn string_op() -> impl Strategy<Value = KvOp> {
    let delta = delta();
    let condition = prop_oneof![
        Just(SetCondition::Always),
        Just(SetCondition::IfAbsent),
        Just(SetCondition::IfPresent),
    ];
    prop_oneof![
        1 => key().prop_map(|key| KvOp::Get { key }),
        // `PX 0` is refused by Redis (see `set_px_0_and_non_canonical_integers_agree`).
        3 => (key(), value(), condition, prop::option::of(prop_oneof![
            8 => ttl(),
            1 => Just(Duration::ZERO),
        ])).prop_map(
            |(key, value, condition, ttl)| KvOp::Set {
                key,
                value,
                condition,
                ttl
            }
        ),
        1 => key().prop_map(|key| KvOp::Del { key }),
        1 => (key(), delta).prop_map(|(key, delta)| KvOp::IncrBy { key, delta }),
        1 => (key(), prop_oneof![Just(Duration::ZERO), ttl()])
            .prop_map(|(key, ttl)| KvOp::PExpire { key, ttl }),
        1 => key().prop_map(|key| KvOp::PTtl { key }),
        2 => (
            script_keys(),
            value(),
            prop::sample::select(&SCRIPT_TTLS[..]),
            prop_oneof![6 => Just(2usize), 1 => 0usize..=3]
        )
            .prop_map(|(keys, owner, ttl, nargs)| {
                let args: Vec<String> = [owner, ttl.to_string(), "extra".to_string()]
                    .into_iter()
                    .take(nargs)
                    .collect();
                KvOp::Script {
                    script: ScriptName::CompareAndExtend,
                    keys,
                    args,
                }
            }),
        2 => (script_keys(), prop_oneof![6 => value().prop_map(Some), 1 => Just(None)]).prop_map(
            |(keys, owner)| KvOp::Script {
                script: ScriptName::CompareAndDelete,
                keys,
                args: owner.into_iter().collect(),
            }
        ),
    ]
}

/// A sequence: a few of the operations, biased towards keys that hold something.
fn sequence() -> impl Strategy<Value = Vec<KvOp>> {
    prop::collection::vec(op(), 1..24)
}

/// What the generated sequences exercised, so that the test cannot pass vacuously.
#[derive(Debug, Default)]
struct Seen {
    script_successes: u32,
    /// `set_if_newer` calls that wrote (a newer version).
    versioned_writes: u32,
    /// `deduct_if_enough` calls that deducted.
    deductions: u32,
    /// `compare_and_delete_versioned` calls that deleted.
    versioned_deletes: u32,
    /// `incr_window` calls that opened a window (answered 1).
    windows_opened: u32,
    /// `incr_window` calls that counted in an open window (answered more than 1).
    window_counts: u32,
    ttls_compared: u32,
    errors: u32,
    nils: u32,
    /// `WRONGTYPE` replies to generated commands (the end-state reads add many more).
    wrongtype: u32,
    /// Expiry commands (`EXPIRE`, `PEXPIRE`, `TTL`, `PTTL`) that set or read a TTL on a hash,
    /// set or sorted set.
    collection_ttls: u32,
    /// `HDEL`, `SREM`, `ZREM` that removed the last field or member (the key went).
    last_member_removed: u32,
    /// Generated commands run, by name.
    commands: BTreeMap<String, u32>,
    /// Generated scheduler scripts run, by name: (runs, error replies).
    sched: BTreeMap<&'static str, (u32, u32)>,
    /// `sched_transition`'s replies by their first word (`ok`, `dup`, `no`, or `error`).
    fsm: BTreeMap<String, u32>,
}

/// A reply in a canonical order: `HGETALL` and `SMEMBERS` come in Redis' hash order.
fn canonical(op: &KvOp, reply: &KvReply) -> KvReply {
    match (op, reply) {
        (KvOp::HGetAll { .. }, KvReply::Pairs(pairs)) => {
            let mut pairs = pairs.clone();
            pairs.sort();
            KvReply::Pairs(pairs)
        }
        (KvOp::SMembers { .. }, KvReply::Array(items)) => {
            let mut items = items.clone();
            items.sort();
            KvReply::Array(items)
        }
        _ => reply.clone(),
    }
}

fn is_collection(kind: Option<&str>) -> bool {
    matches!(kind, Some("hash" | "set" | "zset"))
}

struct Ctx {
    seen: Seen,
    kv: RedisKv,
}

impl Ctx {
    /// Runs `ops` against a fresh model and a cleaned key space; `Err` describes the first
    /// difference.
    async fn check(&mut self, ops: &[KvOp]) -> Result<(), String> {
        for key in all_keys() {
            self.kv
                .execute_kv(&KvOp::Del { key })
                .await
                .map_err(|e| format!("cleaning before the sequence: {e}"))?;
        }
        let mut model = RedisModel::new(Duration::ZERO);
        let start = Instant::now();
        let now = || Timestamp::from_ms(u64::try_from(start.elapsed().as_millis()).unwrap_or(0));
        let mut trace = Vec::new();
        // The end state of every key, whatever its type (the others answer WRONGTYPE).
        let finals = all_keys().into_iter().flat_map(|k| {
            let key = || k.clone();
            [
                KvOp::Exists { key: key() },
                KvOp::Get { key: key() },
                KvOp::PTtl { key: key() },
                KvOp::HGetAll { key: key() },
                KvOp::SMembers { key: key() },
                KvOp::ZRangeByScore {
                    key: key(),
                    min: ScoreBound::NegInf,
                    max: ScoreBound::PosInf,
                },
            ]
        });
        for (i, op) in ops.iter().cloned().chain(finals).enumerate() {
            let real = self
                .kv
                .execute_kv(&op)
                .await
                .map_err(|e| format!("{op}: the real server failed: {e}"))?;
            let at = now();
            let before = op.key().and_then(|k| model.type_of(at, k));
            let expected = model.execute(at, &op);
            let after = op.key().and_then(|k| model.type_of(at, k));
            trace.push(format!("{op} -> model {expected}, redis {real}"));
            if i < ops.len() {
                let name = op.to_string();
                let name = name.split(' ').next().unwrap_or_default().to_string();
                *self.seen.commands.entry(name).or_default() += 1;
            }
            match &op {
                KvOp::Expire { .. }
                | KvOp::PExpire { .. }
                | KvOp::Ttl { .. }
                | KvOp::PTtl { .. }
                    if is_collection(before) && expected != KvReply::Int(-1) =>
                {
                    self.seen.collection_ttls += 1;
                }
                KvOp::HDel { .. } | KvOp::SRem { .. } | KvOp::ZRem { .. }
                    if is_collection(before) && after.is_none() =>
                {
                    self.seen.last_member_removed += 1;
                }
                _ => {}
            }
            if let (true, KvOp::Script { script, .. }) = (i < ops.len(), &op)
                && ScriptName::SCHEDULER.contains(script)
            {
                let counts = self.seen.sched.entry(script.as_str()).or_default();
                counts.0 += 1;
                counts.1 += u32::from(matches!(expected, KvReply::Error(_)));
            }
            if let (
                true,
                KvOp::Script {
                    script: ScriptName::SchedTransition,
                    ..
                },
            ) = (i < ops.len(), &op)
            {
                let word = match &expected {
                    KvReply::Bulk(text) => text.split(' ').next().unwrap_or_default().to_string(),
                    KvReply::Error(_) => "error".to_string(),
                    _ => "other".to_string(),
                };
                *self.seen.fsm.entry(word).or_default() += 1;
            }
            if i < ops.len() && expected == KvReply::Error(WRONGTYPE.into()) {
                self.seen.wrongtype += 1;
            }
            match (&op, &expected) {
                (
                    KvOp::Script {
                        script: ScriptName::SetIfNewer,
                        ..
                    },
                    KvReply::Int(1),
                ) => self.seen.versioned_writes += 1,
                (
                    KvOp::Script {
                        script: ScriptName::DeductIfEnough,
                        ..
                    },
                    KvReply::Int(1),
                ) => self.seen.deductions += 1,
                (
                    KvOp::Script {
                        script: ScriptName::CompareAndDeleteVersioned,
                        ..
                    },
                    KvReply::Int(1),
                ) => self.seen.versioned_deletes += 1,
                (
                    KvOp::Script {
                        script: ScriptName::IncrWindow,
                        ..
                    },
                    KvReply::Int(n),
                ) if *n >= 1 => {
                    if *n == 1 {
                        self.seen.windows_opened += 1;
                    } else {
                        self.seen.window_counts += 1;
                    }
                }
                (KvOp::Script { .. }, KvReply::Int(1)) => self.seen.script_successes += 1,
                (KvOp::PTtl { .. }, KvReply::Int(n)) if *n > 0 => self.seen.ttls_compared += 1,
                (_, KvReply::Error(_)) => self.seen.errors += 1,
                (_, KvReply::Nil) => self.seen.nils += 1,
                _ => {}
            }
            let equal = match (&op, &expected, &real) {
                (KvOp::PTtl { .. }, KvReply::Int(m), KvReply::Int(r)) if *m >= 0 && *r >= 0 => {
                    (m - r).abs() <= PTTL_TOLERANCE_MS
                }
                (KvOp::Ttl { .. }, KvReply::Int(m), KvReply::Int(r)) if *m >= 0 && *r >= 0 => {
                    (m - r).abs() <= TTL_TOLERANCE_S
                }
                _ => canonical(&op, &expected) == canonical(&op, &real),
            };
            if !equal {
                return Err(format!(
                    "model and Redis differ at `{op}`: model {expected:?}, Redis {real:?}\n\
                     sequence so far:\n  {}",
                    trace.join("\n  ")
                ));
            }
        }
        Ok(())
    }
}

/// The breaker's `incr_window` among string and hash commands on the same keys: a
/// generator of its own, so that the main one's sequences (and what they exercise under a
/// given seed) stay as they were.
fn window_sequence() -> impl Strategy<Value = Vec<KvOp>> {
    prop::collection::vec(
        prop_oneof![
            6 => window_script_op(),
            3 => string_op(),
            1 => hash_op(),
        ],
        1..24,
    )
}

/// Runs `cases` sequences of `strategy` against real Redis and the model under the key
/// prefix `prefix` (`what` names the run in the skip notice and the failure) and returns what
/// they exercised; `None`: Redis unreachable (the skip is recorded).
fn run_sequences(
    what: &str,
    prefix: &str,
    cases: u32,
    strategy: impl Strategy<Value = Vec<KvOp>>,
) -> Option<Seen> {
    let rt = common::runtime();
    let config = rt.block_on(common::servers_or_skip(what, true, false))?;
    let kv = rt
        .block_on(RedisKv::connect(&config.redis_url, &common::prefix(prefix)))
        .expect("Redis was reachable a moment ago");
    let ctx = RefCell::new(Ctx {
        seen: Seen::default(),
        kv,
    });
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&strategy, |ops| {
        rt.block_on(ctx.borrow_mut().check(&ops))
            .map_err(TestCaseError::fail)
    });
    let cleaned = rt.block_on(ctx.borrow_mut().kv.clean());
    if let Err(e) = result {
        panic!("{what} failed (a difference is a bug in the model or the adapter):\n{e}");
    }
    cleaned.expect("cleaning the test's keys");
    Some(ctx.into_inner().seen)
}

#[test]
fn incr_window_agrees_with_the_model() {
    let Some(seen) = run_sequences("kv incr_window", "kvwin", 500, window_sequence()) else {
        return;
    };
    assert!(
        seen.windows_opened >= 50
            && seen.window_counts >= 50
            && seen.ttls_compared >= 50
            && seen.errors >= 50
            && seen.wrongtype >= 10,
        "the generated sequences did not exercise incr_window enough: {seen:?}"
    );
}

#[test]
fn kv_ops_and_scripts_agree_with_the_model() {
    let Some(seen) = run_sequences("kv conformance", "kv", 1_500, sequence()) else {
        return;
    };
    assert!(
        seen.script_successes >= 20
            && seen.versioned_writes >= 20
            && seen.deductions >= 20
            && seen.versioned_deletes >= 20
            && seen.ttls_compared >= 20
            && seen.errors >= 20
            && seen.nils >= 20
            && seen.wrongtype >= 20
            && seen.collection_ttls >= 20
            && seen.last_member_removed >= 20,
        "the generated sequences did not exercise enough (the generator needs work): {seen:?}"
    );
    for script in ScriptName::SCHEDULER {
        let (runs, errors) = seen.sched.get(script.as_str()).copied().unwrap_or((0, 0));
        assert!(
            runs >= 200 && errors >= 10 && runs - errors >= 100,
            "{}: {runs} runs, {errors} errors (the generator needs work)",
            script.as_str()
        );
    }
    // The job FSM's script applied, answered a retry of its own transition, refused a stale
    // one, and failed (bad arguments, a wrong type, a version that is not an integer).
    for (word, least) in [("ok", 100), ("dup", 10), ("no", 100), ("error", 100)] {
        let n = seen.fsm.get(word).copied().unwrap_or(0);
        assert!(
            n >= least,
            "sched_transition answered `{word}` only {n} times (the generator needs work)"
        );
    }
    for name in NEW_COMMANDS {
        let n = seen.commands.get(name).copied().unwrap_or(0);
        assert!(
            n >= 20,
            "only {n} generated {name} (the generator needs work)"
        );
    }
    eprintln!("KV conformance exercised: {seen:?}");
}

/// Hand-picked sequences that once mattered, kept as regression cases.
#[test]
fn kv_regression_sequences_agree_with_the_model() {
    let rt = common::runtime();
    let Some(config) = rt.block_on(common::servers_or_skip("kv regressions", true, false)) else {
        return;
    };
    let prefix = common::prefix("kvreg");
    let mut ctx = Ctx {
        seen: Seen::default(),
        kv: rt
            .block_on(RedisKv::connect(&config.redis_url, &prefix))
            .expect("Redis was reachable a moment ago"),
    };
    let script = |script, keys: &[&str], args: &[&str]| KvOp::Script {
        script,
        keys: keys.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let set = |key: &str, value: &str| KvOp::Set {
        key: key.into(),
        value: value.into(),
        condition: SetCondition::Always,
        ttl: None,
    };
    let cases: Vec<(&str, Vec<KvOp>)> = vec![
        (
            // Redis' PEXPIRE rejects "0060000"; the Lua text strips leading zeros so that it
            // extends exactly as the model does.
            "leading zeros in compare_and_extend's TTL",
            vec![
                set("k", "A"),
                script(ScriptName::CompareAndExtend, &["k"], &["A", "0060000"]),
                KvOp::PTtl { key: "k".into() },
            ],
        ),
        (
            // The model ignores extra keys and arguments; so does the Lua text.
            "extra keys and arguments are ignored",
            vec![
                set("k", "A"),
                script(
                    ScriptName::CompareAndDelete,
                    &["k", "k'\"; --"],
                    &["A", "x"],
                ),
                KvOp::Get { key: "k".into() },
            ],
        ),
        (
            "INCRBY at the edge of i64",
            vec![
                KvOp::IncrBy {
                    key: "k".into(),
                    delta: i64::MAX,
                },
                KvOp::IncrBy {
                    key: "k".into(),
                    delta: 1,
                },
                KvOp::IncrBy {
                    key: "k".into(),
                    delta: i64::MIN,
                },
            ],
        ),
        (
            // `redis.call` would append the script's SHA and line to WRONGTYPE; the Lua text
            // uses `redis.pcall` and returns the command's own error, as the model does.
            "a script on a lock key holding a hash answers WRONGTYPE",
            vec![
                KvOp::HSet {
                    key: "k".into(),
                    pairs: vec![("A".into(), "A".into())],
                },
                script(ScriptName::CompareAndDelete, &["k"], &["A"]),
                script(ScriptName::CompareAndExtend, &["k"], &["A", "60000"]),
                KvOp::HGetAll { key: "k".into() },
            ],
        ),
        (
            // Redis refuses DECRBY by i64::MIN before looking at the key, with its own text;
            // empty argument lists are arity errors before the type check.
            "DECRBY i64::MIN and arity errors",
            vec![
                KvOp::SAdd {
                    key: "k".into(),
                    members: vec!["m".into()],
                },
                KvOp::DecrBy {
                    key: "k".into(),
                    delta: i64::MIN,
                },
                KvOp::HSet {
                    key: "k".into(),
                    pairs: vec![],
                },
                KvOp::ZAdd {
                    key: "k".into(),
                    pairs: vec![],
                },
                KvOp::SRem {
                    key: "k".into(),
                    members: vec![],
                },
                KvOp::HMGet {
                    key: "k".into(),
                    fields: vec![],
                },
            ],
        ),
        (
            "HINCRBY reads fields as strictly as INCRBY, with the hash's own error",
            vec![
                KvOp::HSet {
                    key: "k".into(),
                    pairs: vec![("f".into(), "05".into()), ("g".into(), "x".into())],
                },
                KvOp::HIncrBy {
                    key: "k".into(),
                    field: "f".into(),
                    delta: 1,
                },
                KvOp::HIncrBy {
                    key: "k".into(),
                    field: "g".into(),
                    delta: 1,
                },
                KvOp::HIncrBy {
                    key: "k".into(),
                    field: "n".into(),
                    delta: i64::MAX,
                },
                KvOp::HIncrBy {
                    key: "k".into(),
                    field: "n".into(),
                    delta: 1,
                },
            ],
        ),
        (
            // The quota family's versioned mirror write and check-and-deduct: an older or
            // equal version writes nothing, a stored version that is not digits counts as -1,
            // a deduction never takes more than the field holds, and bad arguments are errors
            // before any write.
            "set_if_newer and deduct_if_enough",
            vec![
                script(ScriptName::SetIfNewer, &["m"], &["2", "balance", "80"]),
                script(ScriptName::SetIfNewer, &["m"], &["1", "balance", "90"]),
                script(ScriptName::SetIfNewer, &["m"], &["2", "balance", "70"]),
                KvOp::HGetAll { key: "m".into() },
                script(ScriptName::DeductIfEnough, &["m"], &["balance", "80"]),
                // A zero amount (Lua's -0 is no integer to HINCRBY), a leading zero and 15
                // digits (Lua prints those in exponent notation): found by the generator.
                script(ScriptName::DeductIfEnough, &["m"], &["balance", "0"]),
                script(ScriptName::DeductIfEnough, &["m"], &["balance", "007"]),
                script(
                    ScriptName::DeductIfEnough,
                    &["m"],
                    &["balance", "100000000000000"],
                ),
                script(ScriptName::DeductIfEnough, &["m"], &["balance", "1"]),
                script(ScriptName::DeductIfEnough, &["m"], &["nope", "1"]),
                script(ScriptName::DeductIfEnough, &["m"], &["balance", "-1"]),
                KvOp::HSet {
                    key: "m".into(),
                    pairs: vec![
                        ("version".into(), " 9".into()),
                        ("balance".into(), "05".into()),
                    ],
                },
                script(ScriptName::SetIfNewer, &["m"], &["0", "balance", "3"]),
                script(ScriptName::DeductIfEnough, &["m"], &["balance", "2"]),
                script(ScriptName::SetIfNewer, &["m"], &["x", "balance", "3"]),
                script(ScriptName::SetIfNewer, &["m"], &["7", "balance"]),
                set("s", "A"),
                script(ScriptName::SetIfNewer, &["s"], &["7", "balance", "1"]),
                script(ScriptName::DeductIfEnough, &["s"], &["balance", "1"]),
                KvOp::HGetAll { key: "m".into() },
            ],
        ),
        (
            // The breaker's counter in a window: the first count sets the window, the next
            // ones keep it; the window's text with leading zeros (which PEXPIRE rejects) and
            // 15 digits (which Lua prints in exponent notation); a zero, empty or signed
            // window, a missing argument, a counter past 15 digits, a value that is no
            // integer and another type are errors with nothing written.
            "incr_window",
            vec![
                script(ScriptName::IncrWindow, &["c"], &["60000"]),
                script(ScriptName::IncrWindow, &["c"], &["1"]),
                KvOp::PTtl { key: "c".into() },
                script(ScriptName::IncrWindow, &["d"], &["0060000"]),
                KvOp::PTtl { key: "d".into() },
                script(ScriptName::IncrWindow, &["e"], &["100000000000000"]),
                KvOp::PTtl { key: "e".into() },
                script(ScriptName::IncrWindow, &["f"], &["0"]),
                script(ScriptName::IncrWindow, &["f"], &[""]),
                script(ScriptName::IncrWindow, &["f"], &["-1"]),
                script(ScriptName::IncrWindow, &["f"], &[]),
                KvOp::Get { key: "f".into() },
                // Counts stay exact through Lua's doubles: 15 digits count on, 16 are
                // refused (found by the generator with PROPTEST_RNG_SEED=1).
                set("b", "999999999999999"),
                script(ScriptName::IncrWindow, &["b"], &["60000"]),
                set("b", "-9223372036854775808"),
                script(ScriptName::IncrWindow, &["b"], &["60000"]),
                KvOp::Get { key: "b".into() },
                set("s", "A"),
                script(ScriptName::IncrWindow, &["s"], &["60000"]),
                KvOp::HSet {
                    key: "h".into(),
                    pairs: vec![("n".into(), "1".into())],
                },
                script(ScriptName::IncrWindow, &["h"], &["60000"]),
                KvOp::PTtl { key: "h".into() },
            ],
        ),
        (
            "a TTL on a hash goes with its last field",
            vec![
                KvOp::HSet {
                    key: "k".into(),
                    pairs: vec![("f".into(), "1".into())],
                },
                KvOp::Expire {
                    key: "k".into(),
                    seconds: 100,
                },
                KvOp::Ttl { key: "k".into() },
                KvOp::HDel {
                    key: "k".into(),
                    fields: vec!["f".into()],
                },
                KvOp::Exists { key: "k".into() },
                KvOp::HSet {
                    key: "k".into(),
                    pairs: vec![("f".into(), "1".into())],
                },
                KvOp::Ttl { key: "k".into() },
            ],
        ),
        (
            "sorted sets: ties by member, scores at 2^53, bounds inclusive",
            vec![
                KvOp::ZAdd {
                    key: "k".into(),
                    pairs: vec![
                        (1, "b".into()),
                        (1, "a".into()),
                        (1 << 53, "c".into()),
                        (-(1 << 53), "d".into()),
                    ],
                },
                KvOp::ZRangeByScore {
                    key: "k".into(),
                    min: ScoreBound::At(1),
                    max: ScoreBound::PosInf,
                },
                KvOp::ZScore {
                    key: "k".into(),
                    member: "c".into(),
                },
                KvOp::ZScore {
                    key: "k".into(),
                    member: "d".into(),
                },
            ],
        ),
    ];
    let sched = |script, args: &[&str]| KvOp::Script {
        script,
        keys: vec![SCHED_NS.to_string()],
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    let hset = |key: &str, field: &str, value: &str| KvOp::HSet {
        key: format!("{SCHED_NS}{key}"),
        pairs: vec![(field.into(), value.into())],
    };
    let sched_cases: Vec<(&str, Vec<KvOp>)> = vec![
        (
            // Found while porting: Redis 7's Lua `pcall` hands an error table raised with
            // `error()` back as its text, so a script that raised its reply answered
            // `ERR ERR empty id`; the Lua keeps the reply beside the raised error instead.
            "a scheduler script's own error is the model's text",
            vec![
                sched(ScriptName::SchedComplete, &["j1", "", "0", "0"]),
                sched(ScriptName::SchedRegister, &["n1", "60000", "x", "1"]),
                sched(ScriptName::SchedHeartbeat, &["n1", "60000", "0", "1"]),
            ],
        ),
        (
            // The unfenced completion writes `state done`, then HINCRBY fails on a
            // non-integer `results`: the state write stays, the index entry is not removed.
            "a completion failing half-way keeps its first write",
            vec![
                sched(ScriptName::SchedRegister, &["n1", "60000", "0", "0"]),
                sched(ScriptName::SchedDispatch, &["j1", "0"]),
                hset("job:j1", "results", "x"),
                sched(ScriptName::SchedComplete, &["j1", "n1", "0", "0"]),
            ],
        ),
        (
            // Fenced selection removes the stale members one by one; a member whose node key
            // is a string fails HGET with WRONGTYPE after the earlier removals.
            "a selection failing half-way keeps the pool members it removed",
            vec![
                KvOp::SAdd {
                    key: format!("{SCHED_NS}pool"),
                    members: vec!["n1".into(), "n2".into()],
                },
                set(&format!("{SCHED_NS}node:n2"), "x"),
                sched(ScriptName::SchedDispatch, &["j1", "1"]),
            ],
        ),
        (
            // Lua's `<` on strings follows the server's collation; the Lua sorts byte by byte
            // as Rust does, so the round robin picks the same node.
            "selection sorts node ids byte by byte",
            vec![
                sched(ScriptName::SchedRegister, &["ü🔑", "0", "0", "1"]),
                sched(ScriptName::SchedRegister, &["n2", "0", "0", "1"]),
                sched(ScriptName::SchedRegister, &["n1", "0", "0", "1"]),
                sched(ScriptName::SchedDispatch, &["j1", "1"]),
                sched(ScriptName::SchedDispatch, &["j2", "1"]),
                sched(ScriptName::SchedPoll, &["n1", "1", "1"]),
            ],
        ),
        (
            // Beyond 15 digits Lua's doubles are not exact: the counter is written, then the
            // script refuses it.
            "an epoch counter beyond 15 digits is an error after its write",
            vec![
                set(&format!("{SCHED_NS}epoch:n1"), "999999999999999"),
                sched(ScriptName::SchedRegister, &["n1", "60000", "0", "1"]),
                set(&format!("{SCHED_NS}rr"), "-999999999999999"),
                sched(ScriptName::SchedRegister, &["n2", "60000", "0", "0"]),
                sched(ScriptName::SchedDispatch, &["j1", "0"]),
            ],
        ),
        (
            // Leading zeros in TTLs, epochs and the switch read as their canonical numbers.
            "leading zeros in the scheduler's arguments",
            vec![
                sched(ScriptName::SchedRegister, &["n1", "0090000", "000", "01"]),
                sched(
                    ScriptName::SchedHeartbeat,
                    &["n1", "0090000", "0", "01", "001"],
                ),
                sched(ScriptName::SchedHeartbeat, &["n1", "60000", "0", "1", "00"]),
            ],
        ),
    ];
    for (name, ops) in cases.into_iter().chain(sched_cases) {
        let r = rt.block_on(ctx.check(&ops));
        assert!(r.is_ok(), "regression case `{name}`: {}", r.unwrap_err());
    }
    rt.block_on(ctx.kv.clean())
        .expect("cleaning the test's keys");
}

/// Former model differences, now regression cases: `SET k v PX 0`, which Redis refuses, and
/// `INCRBY` on texts Redis' strict integer parsing (`string2ll`) refuses. Each case checks
/// the exact error real Redis gives and that the model gives the same.
#[test]
fn set_px_0_and_non_canonical_integers_agree() {
    let rt = common::runtime();
    let Some(config) = rt.block_on(common::servers_or_skip(
        "kv former differences",
        true,
        false,
    )) else {
        return;
    };
    let prefix = common::prefix("kvdiff");
    let mut kv = rt
        .block_on(RedisKv::connect(&config.redis_url, &prefix))
        .expect("Redis was reachable a moment ago");
    let set = |value: &str, condition, ttl: Option<Duration>| KvOp::Set {
        key: "n".into(),
        value: value.into(),
        condition,
        ttl,
    };
    let incr = KvOp::IncrBy {
        key: "n".into(),
        delta: 1,
    };
    // 1. `SET k v PX 0`, whatever the condition and whether the key exists.
    let refused = KvReply::Error("ERR invalid expire time in 'set' command".into());
    let mut model = RedisModel::new(Duration::ZERO);
    for exists in [false, true] {
        if exists {
            let op = set("v", SetCondition::Always, None);
            rt.block_on(kv.execute_kv(&op)).expect("Redis answers");
            model.execute(Timestamp::ZERO, &op);
        }
        for condition in [
            SetCondition::Always,
            SetCondition::IfAbsent,
            SetCondition::IfPresent,
        ] {
            let op = set("w", condition, Some(Duration::ZERO));
            let real = rt.block_on(kv.execute_kv(&op)).expect("Redis answers");
            assert_eq!(real, refused, "Redis refuses `{op}` (key exists: {exists})");
            assert_eq!(
                model.execute(Timestamp::ZERO, &op),
                real,
                "the model answers `{op}` as Redis does (key exists: {exists})"
            );
        }
    }
    // 2. INCRBY on texts that are not an integer's canonical decimal form.
    let not_an_integer = KvReply::Error("ERR value is not an integer or out of range".into());
    for text in ["05", "+5", "-0", " 5", "", "9223372036854775808"] {
        let mut model = RedisModel::new(Duration::ZERO);
        let op = set(text, SetCondition::Always, None);
        model.execute(Timestamp::ZERO, &op);
        rt.block_on(kv.execute_kv(&op)).expect("Redis answers");
        let real = rt.block_on(kv.execute_kv(&incr)).expect("Redis answers");
        assert_eq!(real, not_an_integer, "Redis refuses INCRBY on {text:?}");
        assert_eq!(
            model.execute(Timestamp::ZERO, &incr),
            real,
            "the model answers INCRBY on {text:?} as Redis does"
        );
    }
    rt.block_on(kv.clean()).expect("cleaning the test's keys");
}

/// Pub/sub misses what is published while a subscriber is disconnected, on real Redis as in
/// the model: the same script of subscribe, publish, receive, disconnect and resubscribe
/// gives the same answers from both.
#[test]
fn pub_sub_misses_messages_across_a_disconnect_like_the_model() {
    use racelab_adapters::RedisPubSub;
    use racelab_core::{PubSubOp, PubSubReply};
    let rt = common::runtime();
    let Some(config) = rt.block_on(common::servers_or_skip("pub/sub conformance", true, false))
    else {
        return;
    };
    let prefix = common::prefix("pubsub");
    let mut kv = rt
        .block_on(RedisKv::connect(&config.redis_url, &prefix))
        .expect("Redis was reachable a moment ago");
    let mut sub = RedisPubSub::new(&config.redis_url, &prefix).expect("the URL parses");
    let mut model = RedisModel::new(Duration::ZERO);
    const S: u64 = 1;
    enum Step {
        Subscribe(&'static str),
        Publish(&'static str, &'static str),
        Receive(u64),
        Disconnect,
    }
    use Step::*;
    let script = [
        Receive(50),
        Subscribe("news"),
        Subscribe("alerts"),
        Publish("news", "m1"),
        Publish("other", "x"),
        Receive(1_000),
        Receive(100),
        Disconnect,
        Publish("news", "m2"),
        Receive(100),
        Subscribe("news"),
        Publish("news", "m3"),
        Publish("alerts", "a1"),
        Receive(1_000),
        Receive(1_000),
        Receive(100),
    ];
    let mut answers = Vec::new();
    for step in &script {
        let (real, modelled) = match step {
            Subscribe(ch) => {
                let op = PubSubOp::Subscribe {
                    channels: vec![(*ch).to_string()],
                };
                let real = rt.block_on(sub.execute_pubsub(&op)).expect("subscribe");
                (
                    format!("{real}"),
                    format!(
                        "{}",
                        PubSubReply::Subscribed {
                            count: model.subscribe(S, &[(*ch).to_string()]),
                        }
                    ),
                )
            }
            Publish(ch, m) => {
                let op = KvOp::Publish {
                    channel: (*ch).to_string(),
                    message: (*m).to_string(),
                };
                let real = rt.block_on(kv.execute_kv(&op)).expect("publish");
                (
                    format!("{real}"),
                    format!("{}", model.execute(Timestamp::ZERO, &op)),
                )
            }
            Receive(wait) => {
                let op = PubSubOp::Receive {
                    wait: Duration::from_ms(*wait),
                };
                let real = rt.block_on(sub.execute_pubsub(&op)).expect("receive");
                let modelled = match model.next_message(S) {
                    None => PubSubReply::Disconnected,
                    Some(None) => PubSubReply::NoMessage,
                    Some(Some((channel, payload))) => PubSubReply::Message { channel, payload },
                };
                (format!("{real}"), format!("{modelled}"))
            }
            Disconnect => {
                sub.disconnect();
                model.disconnect(S);
                // Redis counts a subscriber until it notices the closed connection; the
                // model's disconnect is that moment, so wait for it (a second at most).
                let client = redis::Client::open(config.redis_url.as_str()).expect("URL");
                let gone = rt.block_on(async {
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    for _ in 0..100 {
                        let numsub: (String, i64) = redis::cmd("PUBSUB")
                            .arg("NUMSUB")
                            .arg(format!("{prefix}news"))
                            .query_async(&mut c)
                            .await
                            .ok()?;
                        if numsub.1 == 0 {
                            return Some(());
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    None
                });
                assert!(gone.is_some(), "Redis never noticed the closed subscriber");
                ("-".to_string(), "-".to_string())
            }
        };
        assert_eq!(real, modelled, "after {answers:?}");
        answers.push(real);
    }
    assert_eq!(
        answers,
        [
            "disconnected",
            "subscribed to 1",
            "subscribed to 2",
            "1",
            "0",
            "message news: m1",
            "no message",
            "-",
            "0",
            "disconnected",
            "subscribed to 1",
            "1",
            "0",
            "message news: m3",
            "no message",
            "no message",
        ]
    );
    common::ran("pub/sub conformance");
}
