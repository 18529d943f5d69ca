//! Conformance: generated sequences of every `KvOp` and named script, run against the Redis
//! model and against real Redis, must give equal replies and leave equal state.
//!
//! Time: the model takes virtual `now`, Redis uses its clock. The model is given the real
//! milliseconds since the sequence started, TTLs are generous (at least a minute, or 0 for
//! `PEXPIRE`, which deletes at once in both), so nothing expires by accident, and `PTTL` is
//! compared within a tolerance.

mod common;

use std::cell::RefCell;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use racelab_adapters::RedisKv;
use racelab_core::{Duration, KvOp, KvReply, ScriptName, SetCondition, Timestamp};
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

/// PTTL tolerance between the model's virtual clock and Redis' clock.
const PTTL_TOLERANCE_MS: i64 = 1_000;

fn ttl() -> impl Strategy<Value = Duration> {
    (60_000u64..600_000).prop_map(Duration::from_ms)
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(&KEYS[..]).prop_map(str::to_string)
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
    let delta = prop_oneof![-5i64..=5, Just(i64::MAX), Just(i64::MIN), Just(1i64 << 62),];
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
    prop::collection::vec(op(), 1..14)
}

/// What the generated sequences exercised, so that the test cannot pass vacuously.
#[derive(Debug, Default)]
struct Seen {
    script_successes: u32,
    ttls_compared: u32,
    errors: u32,
    nils: u32,
}

struct Ctx {
    seen: Seen,
    kv: RedisKv,
}

impl Ctx {
    /// Runs `ops` against a fresh model and a cleaned key space; `Err` describes the first
    /// difference.
    async fn check(&mut self, ops: &[KvOp]) -> Result<(), String> {
        for key in KEYS {
            self.kv
                .execute_kv(&KvOp::Del { key: key.into() })
                .await
                .map_err(|e| format!("cleaning before the sequence: {e}"))?;
        }
        let mut model = RedisModel::new(Duration::ZERO);
        let start = Instant::now();
        let now = || Timestamp::from_ms(u64::try_from(start.elapsed().as_millis()).unwrap_or(0));
        let mut trace = Vec::new();
        let finals = KEYS.iter().flat_map(|k| {
            [
                KvOp::Get { key: k.to_string() },
                KvOp::PTtl { key: k.to_string() },
            ]
        });
        for op in ops.iter().cloned().chain(finals) {
            let real = self
                .kv
                .execute_kv(&op)
                .await
                .map_err(|e| format!("{op}: the real server failed: {e}"))?;
            let expected = model.execute(now(), &op);
            trace.push(format!("{op} -> model {expected}, redis {real}"));
            match (&op, &expected) {
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
                _ => expected == real,
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

#[test]
fn kv_ops_and_scripts_agree_with_the_model() {
    let rt = common::runtime();
    let Some(config) = rt.block_on(common::servers_or_skip("kv conformance", true, false)) else {
        return;
    };
    let prefix = common::prefix("kv");
    let kv = rt
        .block_on(RedisKv::connect(&config.redis_url, &prefix))
        .expect("Redis was reachable a moment ago");
    let ctx = RefCell::new(Ctx {
        seen: Seen::default(),
        kv,
    });
    let mut runner = TestRunner::new(PropConfig {
        cases: 1_000,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&sequence(), |ops| {
        rt.block_on(ctx.borrow_mut().check(&ops))
            .map_err(TestCaseError::fail)
    });
    let cleaned = rt.block_on(ctx.borrow_mut().kv.clean());
    if let Err(e) = result {
        panic!("KV conformance failed (a difference is a bug in the model or the adapter):\n{e}");
    }
    cleaned.expect("cleaning the test's keys");
    let seen = &ctx.borrow().seen;
    assert!(
        seen.script_successes >= 20
            && seen.ttls_compared >= 20
            && seen.errors >= 20
            && seen.nils >= 20,
        "the generated sequences did not exercise enough (the generator needs work): {seen:?}"
    );
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
    ];
    for (name, ops) in cases {
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
