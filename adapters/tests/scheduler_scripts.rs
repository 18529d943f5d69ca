//! The scheduler's scripts on real Redis, against document 004's acceptance criteria.
//!
//! AC-004-7: a script that fails at run time keeps the writes it made before the error (no
//! rollback), and the model predicts the same partial state
//! (`a_scheduler_script_failing_half_way_keeps_its_partial_writes_as_the_model_predicts`).
//!
//! AC-004-2 / R-004-08: no script carries a TTL literal; every TTL comes from `ARGV`.
//!
//! The document lists the lines of five Lua scripts to hand-edit when the TTL changes
//! (`register_node_v2.lua` line 27, `heartbeat_with_pool_assign.lua` lines 17, 58, 72, 89,
//! `select_node.lua` line 66). Here there is nothing to edit: the static check reads the
//! adapters' Lua text of every script ([`lua`] for each [`ScriptName::ALL`], and the queue's
//! [`queue_lua`]) and rejects
//!
//! - a TTL argument of `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`, `SETEX`, `PSETEX`, or of
//!   `SET`/`GETEX` after `EX`/`PX`/`EXAT`/`PXAT`, that holds a number (a numeric literal or a
//!   string of digits, anywhere in the expression; `ARGV[n]` is the only place a digit may
//!   appear);
//! - an identifier passed as such a TTL that is assigned a literal expression (`local ttl =
//!   3600`);
//! - a parameter of a helper function passed as such a TTL when a call of the helper passes a
//!   number in that position (`expire(key, 3600)`).
//!
//! Known-bad samples prove the check rejects each shape. Because a text check only sees what
//! it parses, a behavioural check complements it on real Redis: every key the scheduler's
//! scripts give a TTL gets exactly the TTL its `ARGV` asked for (two different values, and
//! none for `0`), and the scripts that take no TTL leave every key without one.

mod common;

use racelab_adapters::{RedisKv, lua, queue_lua};
use racelab_core::scheduler::scripts::NAMESPACE;
use racelab_core::{KvOp, KvReply, ScriptName};
use racelab_sim::explore::models::RedisModel;

/// The commands whose argument at the given position (0: the command name) is a TTL.
const TTL_POSITION: [(&str, usize); 6] = [
    ("EXPIRE", 2),
    ("PEXPIRE", 2),
    ("EXPIREAT", 2),
    ("PEXPIREAT", 2),
    ("SETEX", 2),
    ("PSETEX", 2),
];

/// The commands whose TTL follows an option word.
const TTL_OPTIONS: [&str; 2] = ["SET", "GETEX"];
const OPTION_WORDS: [&str; 4] = ["EX", "PX", "EXAT", "PXAT"];

/// One call found in the text: the callee's name and its top-level arguments.
#[derive(Debug)]
struct Call {
    at: usize,
    name: String,
    args: Vec<String>,
}

/// Every call `name(args)` in `text`, with arguments split at top-level commas. Strings and
/// comments are skipped when looking for parentheses and commas.
fn calls(text: &str) -> Vec<Call> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for open in 0..b.len() {
        if b[open] != b'(' {
            continue;
        }
        let mut start = open;
        while start > 0 && (b[start - 1].is_ascii_alphanumeric() || b"_.".contains(&b[start - 1])) {
            start -= 1;
        }
        if start == open {
            continue;
        }
        let name = text[start..open].to_string();
        let (mut depth, mut i, mut arg_start) = (0usize, open + 1, open + 1);
        let mut args = Vec::new();
        while i < b.len() {
            match b[i] {
                q @ (b'\'' | b'"') => {
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' if depth > 0 => depth -= 1,
                b')' => {
                    args.push(text[arg_start..i].trim().to_string());
                    break;
                }
                b',' if depth == 0 => {
                    args.push(text[arg_start..i].trim().to_string());
                    arg_start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        if args.len() == 1 && args[0].is_empty() {
            args.clear();
        }
        out.push(Call {
            at: start,
            name,
            args,
        });
    }
    out
}

/// A string literal's content, if the argument is one.
fn string_literal(arg: &str) -> Option<&str> {
    let a = arg.trim();
    let q = a.chars().next()?;
    (a.len() >= 2 && (q == '\'' || q == '"') && a.ends_with(q)).then(|| &a[1..a.len() - 1])
}

/// Whether an expression holds a number: a digit that is not part of an identifier and not
/// the index of `ARGV[...]` or `KEYS[...]`.
fn holds_number(expr: &str) -> bool {
    let mut e = expr.to_string();
    for table in ["ARGV[", "KEYS["] {
        while let Some(p) = e.find(table) {
            let close = e[p..].find(']').map_or(e.len(), |c| p + c + 1);
            e.replace_range(p..close, "argv");
        }
    }
    let b = e.as_bytes();
    (0..b.len()).any(|i| {
        b[i].is_ascii_digit() && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
    })
}

/// Whether an expression is nothing but numbers and arithmetic (`3600`, `60 * 1000`).
fn is_literal_expression(expr: &str) -> bool {
    let e = expr.trim();
    let e = string_literal(e).unwrap_or(e);
    !e.is_empty()
        && e.bytes().any(|c| c.is_ascii_digit())
        && e.bytes()
            .all(|c| c.is_ascii_digit() || b" .*+-/()".contains(&c))
}

fn is_identifier(expr: &str) -> bool {
    let mut c = expr.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The TTL arguments of the Redis calls in `text` (`redis.call`, `redis.pcall` or any helper
/// whose first argument is the command name), with where they are.
fn ttl_arguments(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for call in calls(text) {
        let Some(command) = call.args.first().and_then(|a| string_literal(a)) else {
            continue;
        };
        let command = command.to_ascii_uppercase();
        for (name, pos) in TTL_POSITION {
            if command == name
                && let Some(arg) = call.args.get(pos)
            {
                out.push((call.at, arg.clone()));
            }
        }
        if TTL_OPTIONS.contains(&command.as_str()) {
            for (i, a) in call.args.iter().enumerate() {
                let word = string_literal(a).map(str::to_ascii_uppercase);
                if word.is_some_and(|w| OPTION_WORDS.contains(&w.as_str()))
                    && let Some(arg) = call.args.get(i + 1)
                {
                    out.push((call.at, arg.clone()));
                }
            }
        }
    }
    out
}

/// The parameters of the function whose body contains `at`, if any, and its name.
fn enclosing_function(text: &str, at: usize) -> Option<(String, Vec<String>)> {
    let before = &text[..at];
    let p = before.rfind("function ")?;
    let rest = &before[p + "function ".len()..];
    let open = rest.find('(')?;
    let close = rest.find(')')?;
    let name = rest[..open].trim().to_string();
    let params = rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    Some((name, params))
}

/// Every TTL literal in one script's text, described; empty when there is none.
fn ttl_literals(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, arg) in ttl_arguments(text) {
        if holds_number(&arg) {
            found.push(format!("a TTL argument holds a number: `{arg}`"));
            continue;
        }
        if !is_identifier(&arg) {
            continue;
        }
        // Assignments to the identifier.
        for line in text.lines() {
            let l = line.trim().trim_start_matches("local ").trim();
            if let Some(rhs) = l
                .strip_prefix(&arg)
                .and_then(|r| r.trim().strip_prefix('='))
                && !rhs.starts_with('=')
                && is_literal_expression(rhs)
            {
                found.push(format!(
                    "the TTL `{arg}` is assigned a literal: `{}`",
                    line.trim()
                ));
            }
        }
        // A helper's parameter: the helper's call sites.
        if let Some((helper, params)) = enclosing_function(text, at)
            && let Some(i) = params.iter().position(|p| *p == arg)
            && !helper.is_empty()
        {
            for call in calls(text).into_iter().filter(|c| c.name == helper) {
                let def = text[..call.at].trim_end().ends_with("function");
                if let Some(a) = call.args.get(i)
                    && !def
                    && holds_number(a)
                {
                    found.push(format!(
                        "`{helper}` is called with a TTL that holds a number: `{a}`"
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn no_script_carries_a_ttl_literal() {
    let mut texts: Vec<(String, &str)> = ScriptName::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), lua(*s)))
        .collect();
    texts.extend(
        queue_lua()
            .into_iter()
            .map(|(n, t)| (format!("queue {n}"), t)),
    );
    let mut checked_ttls = 0;
    for (name, text) in &texts {
        let found = ttl_literals(text);
        assert!(found.is_empty(), "{name} carries a TTL literal: {found:?}");
        checked_ttls += ttl_arguments(text).len();
    }
    // The scripts that do set TTLs were parsed (not a vacuous pass): register and heartbeat
    // (through `expire`), compare_and_extend.
    assert!(
        checked_ttls >= 3,
        "only {checked_ttls} TTL arguments found: the check no longer parses the scripts"
    );
}

#[test]
fn the_check_rejects_every_shape_of_ttl_literal() {
    let bad = [
        // The document's own lines.
        "redis.call('EXPIRE', KEYS[1], 3600)",
        "redis.call('expire', node_key, 3600)",
        "redis.call(\"PEXPIRE\", KEYS[1], '60000')",
        "redis.pcall('PEXPIRE', KEYS[1], 60 * 1000)",
        "redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 1000)",
        "redis.call('SET', KEYS[1], ARGV[1], 'EX', 60)",
        "redis.call('SET', KEYS[1], ARGV[1], 'NX', 'px', 60000)",
        "redis.call('SETEX', KEYS[1], 3600, ARGV[1])",
        "redis.call('GETEX', KEYS[1], 'EXAT', 1700000000)",
        "local ttl = 3600\nredis.call('EXPIRE', KEYS[1], ttl)",
        "local ttl = '70'\nredis.call('EXPIRE', KEYS[1], ttl)",
        "local function expire(key, ttl)\n  redis.call('PEXPIRE', key, ttl)\nend\n\
         expire(KEYS[1], ARGV[1])\nexpire(KEYS[2], 70000)",
        "local function cmd(...) return redis.pcall(...) end\ncmd('EXPIRE', KEYS[1], 3600)",
    ];
    for sample in bad {
        assert!(
            !ttl_literals(sample).is_empty(),
            "the check let a TTL literal through: {sample}"
        );
    }
    let good = [
        "redis.call('EXPIRE', KEYS[1], ARGV[2])",
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])",
        "local ttl = ARGV[2]\nredis.call('PEXPIRE', KEYS[1], ttl)",
        "local function expire(key, ttl)\n  redis.call('PEXPIRE', key, ttl)\nend\n\
         expire(KEYS[1], ARGV[1])",
        // Numbers elsewhere are not TTLs.
        "redis.call('HINCRBY', KEYS[1], 'results', 1)\nredis.call('EXPIRE', KEYS[1], ARGV[1])",
    ];
    for sample in good {
        assert_eq!(ttl_literals(sample), Vec::<String>::new(), "{sample}");
    }
}

fn sched(script: ScriptName, args: &[&str]) -> KvOp {
    KvOp::Script {
        script,
        keys: vec![NAMESPACE.to_string()],
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

async fn pttl(kv: &mut RedisKv, key: &str) -> i64 {
    match kv.execute_kv(&KvOp::PTtl { key: key.into() }).await {
        Ok(KvReply::Int(n)) => n,
        other => panic!("PTTL {key}: {other:?}"),
    }
}

/// Whether `got` is the TTL `want` (ms) asked for, within the time the test takes.
fn about(got: i64, want: i64) -> bool {
    got <= want && got > want - 5_000
}

#[tokio::test]
async fn every_ttl_the_scheduler_sets_is_the_one_its_argv_asked_for() {
    let Some(config) = common::servers_or_skip("scheduler TTLs from ARGV", true, false).await
    else {
        return;
    };
    let mut kv = RedisKv::connect(&config.redis_url, &common::prefix("schedttl"))
        .await
        .expect("Redis answers");
    let node = format!("{NAMESPACE}node:n1");
    let pool = format!("{NAMESPACE}pool");
    // Two configurations: the TTLs follow ARGV, whatever they are.
    for (node_ttl, pool_ttl) in [(60_000i64, 70_000i64), (123_000, 456_000)] {
        let (a, b) = (node_ttl.to_string(), pool_ttl.to_string());
        let r = kv
            .execute_kv(&sched(ScriptName::SchedRegister, &["n1", &a, &b, "1"]))
            .await
            .expect("register");
        let KvReply::Int(epoch) = r else {
            panic!("register answered {r:?}");
        };
        assert!(about(pttl(&mut kv, &node).await, node_ttl));
        assert!(about(pttl(&mut kv, &pool).await, pool_ttl));
        let epoch = epoch.to_string();
        // A heartbeat with other TTLs sets those.
        let (c, d) = ((node_ttl * 2).to_string(), (pool_ttl * 2).to_string());
        kv.execute_kv(&sched(
            ScriptName::SchedHeartbeat,
            &["n1", &c, &d, "1", &epoch],
        ))
        .await
        .expect("heartbeat");
        assert!(about(pttl(&mut kv, &node).await, node_ttl * 2));
        assert!(about(pttl(&mut kv, &pool).await, pool_ttl * 2));
    }
    // `0`: no TTL at all (the register deletes and re-creates the node key; the pool keeps the
    // TTL it had, which a 0 does not touch).
    kv.execute_kv(&KvOp::Del { key: pool.clone() })
        .await
        .expect("DEL");
    kv.execute_kv(&sched(ScriptName::SchedRegister, &["n2", "0", "0", "1"]))
        .await
        .expect("register");
    assert_eq!(pttl(&mut kv, &format!("{NAMESPACE}node:n2")).await, -1);
    assert_eq!(pttl(&mut kv, &pool).await, -1);
    // The scripts that take no TTL give none: every key they write has none.
    for op in [
        sched(ScriptName::SchedDispatch, &["j1", "1"]),
        sched(ScriptName::SchedReap, &["j1", "1"]),
        sched(ScriptName::SchedPoll, &["n2", "1", "1"]),
        sched(ScriptName::SchedComplete, &["j1", "n2", "1", "1"]),
        sched(ScriptName::SchedSelect, &["j2"]),
        sched(ScriptName::SchedBind, &["j2", "n2", "1"]),
        sched(ScriptName::SchedOffline, &["n1", "1"]),
        sched(ScriptName::SchedFinalize, &["j2", "1"]),
        sched(ScriptName::SchedFinalize, &["j1", "0"]),
    ] {
        let r = kv.execute_kv(&op).await.expect("script");
        assert!(!matches!(r, KvReply::Error(_)), "{op}: {r:?}");
    }
    for key in [
        format!("{NAMESPACE}job:j1"),
        format!("{NAMESPACE}job:j2"),
        format!("{NAMESPACE}jobs:n2"),
        format!("{NAMESPACE}rr"),
        format!("{NAMESPACE}epoch:n1"),
    ] {
        let t = pttl(&mut kv, &key).await;
        assert!(t == -1 || t == -2, "{key} has a TTL of {t} ms");
    }
    kv.clean().await.expect("cleaning the test's keys");
}

/// AC-004-7: "single-script atomicity" hides that a script which fails at run time keeps the
/// writes it made before the error (Redis has no rollback). Each case runs the adapters' Lua
/// on real Redis, reads the keys it touched, and requires (1) the error reply, (2) the
/// partial state named in the case, and (3) that the model, given the same operations,
/// answers the same error and predicts the same state, read by read.
#[tokio::test]
async fn a_scheduler_script_failing_half_way_keeps_its_partial_writes_as_the_model_predicts() {
    let Some(config) = common::servers_or_skip("scheduler partial writes", true, false).await
    else {
        return;
    };
    let mut kv = RedisKv::connect(&config.redis_url, &common::prefix("schedpartial"))
        .await
        .expect("Redis answers");
    let ns = |k: &str| format!("{NAMESPACE}{k}");
    let hget = |k: &str, f: &str| KvOp::HGet {
        key: ns(k),
        field: f.into(),
    };
    let members = |k: &str| KvOp::SMembers { key: ns(k) };
    struct Case {
        name: &'static str,
        setup: Vec<KvOp>,
        script: KvOp,
        error: &'static str,
        /// Reads after the script, with what each must answer on both sides.
        reads: Vec<(KvOp, KvReply)>,
    }
    let bulk = |s: &str| KvReply::Bulk(s.into());
    let set =
        |members_: &[&str]| KvReply::Array(members_.iter().map(|m| Some(m.to_string())).collect());
    let cases = vec![
        Case {
            // The document's unconditional completion: `state done` is written, HINCRBY then
            // fails on a `results` another writer left non-numeric, and the index entry is
            // never removed: the job is done and still listed as N1's running work.
            name: "completion: state written, counter failed, index entry left",
            setup: vec![
                sched(ScriptName::SchedRegister, &["n1", "60000", "0", "0"]),
                sched(ScriptName::SchedDispatch, &["j1", "0"]),
                KvOp::HSet {
                    key: ns("job:j1"),
                    pairs: vec![("results".into(), "x".into())],
                },
            ],
            script: sched(ScriptName::SchedComplete, &["j1", "n1", "0", "0"]),
            error: "ERR hash value is not an integer",
            reads: vec![
                (hget("job:j1", "state"), bulk("done")),
                (hget("job:j1", "results"), bulk("x")),
                (members("jobs:n1"), set(&["j1"])),
            ],
        },
        Case {
            // Fenced selection removes stale members one at a time; the second member's node
            // key is a string, HGET fails with WRONGTYPE, and the first removal stays while
            // the job was never bound.
            name: "selection: a stale member removed, then WRONGTYPE, job unbound",
            setup: vec![
                KvOp::SAdd {
                    key: ns("pool"),
                    members: vec!["n1".into(), "n2".into()],
                },
                KvOp::Set {
                    key: ns("node:n2"),
                    value: "x".into(),
                    condition: racelab_core::SetCondition::Always,
                    ttl: None,
                },
            ],
            script: sched(ScriptName::SchedDispatch, &["j1", "1"]),
            error: racelab_core::WRONGTYPE,
            reads: vec![
                (members("pool"), set(&["n2"])),
                (hget("job:j1", "state"), KvReply::Nil),
            ],
        },
        Case {
            // Registration increments the epoch counter first; a counter beyond what the
            // script can return exactly is refused after that write, and no node key exists.
            name: "registration: epoch counter written, node never created",
            setup: vec![KvOp::Set {
                key: ns("epoch:n1"),
                value: "999999999999999".into(),
                condition: racelab_core::SetCondition::Always,
                ttl: None,
            }],
            script: sched(ScriptName::SchedRegister, &["n1", "60000", "0", "1"]),
            error: "ERR epoch out of range",
            reads: vec![
                (
                    KvOp::Get {
                        key: ns("epoch:n1"),
                    },
                    bulk("1000000000000000"),
                ),
                (KvOp::Exists { key: ns("node:n1") }, KvReply::Int(0)),
                (members("pool"), set(&[])),
            ],
        },
        Case {
            // R-004-03's partial offline script: the document's node-offline script removes
            // N1 from the pool and deletes its hash, then finds no member to move N1's job
            // to and fails there: N1 is out of the pool, j1 still bound to it, and nothing
            // will look at N1's jobs again.
            name: "node offline: removed from the pool, job left bound to it",
            setup: vec![
                sched(ScriptName::SchedRegister, &["n1", "60000", "0", "0"]),
                sched(ScriptName::SchedDispatch, &["j1", "0"]),
                KvOp::HDel {
                    key: ns("node:n1"),
                    fields: vec!["epoch".into()],
                },
            ],
            script: sched(ScriptName::SchedOffline, &["n1", "0"]),
            error: "ERR no node to re-dispatch to",
            reads: vec![
                (members("pool"), set(&[])),
                (KvOp::Exists { key: ns("node:n1") }, KvReply::Int(0)),
                (hget("job:j1", "node"), bulk("n1")),
                (members("jobs:n1"), set(&["j1"])),
            ],
        },
        Case {
            // R-004-05's unconditional `job_fsm_to_*`: the state and the transition id are
            // written, then HINCRBY fails on a version another writer left non-numeric: the
            // record says done at no version the FSM ever gave it.
            name: "job FSM transition: state written, version increment failed",
            setup: vec![KvOp::HSet {
                key: ns("fsm:j1"),
                pairs: vec![
                    ("state".into(), "running".into()),
                    ("version".into(), "x".into()),
                ],
            }],
            script: sched(
                ScriptName::SchedTransition,
                &["j1", "0", "running", "3", "done", "t1"],
            ),
            error: "ERR hash value is not an integer",
            reads: vec![
                (hget("fsm:j1", "state"), bulk("done")),
                (hget("fsm:j1", "tx"), bulk("t1")),
                (hget("fsm:j1", "version"), bulk("x")),
            ],
        },
    ];
    for case in cases {
        kv.clean().await.expect("cleaning before the case");
        let mut model = RedisModel::new(racelab_core::Duration::ZERO);
        let now = racelab_core::Timestamp::ZERO;
        for op in &case.setup {
            let real = kv.execute_kv(op).await.expect("setup");
            assert_eq!(model.execute(now, op), real, "{}: setup {op}", case.name);
        }
        let real = kv.execute_kv(&case.script).await.expect("script");
        let predicted = model.execute(now, &case.script);
        assert_eq!(
            real,
            KvReply::Error(case.error.into()),
            "{}: Redis",
            case.name
        );
        assert_eq!(predicted, real, "{}: the model's reply", case.name);
        for (read, want) in &case.reads {
            let real = kv.execute_kv(read).await.expect("read");
            let predicted = model.execute(now, read);
            let sorted = |r: KvReply| match r {
                KvReply::Array(mut items) => {
                    items.sort();
                    KvReply::Array(items)
                }
                r => r,
            };
            assert_eq!(
                sorted(real.clone()),
                *want,
                "{}: Redis after the error: {read}",
                case.name
            );
            assert_eq!(
                sorted(predicted),
                sorted(real),
                "{}: the model's state: {read}",
                case.name
            );
        }
    }
    kv.clean().await.expect("cleaning the test's keys");
}
