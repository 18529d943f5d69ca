//! Document 000's conversation window (R-000-06): two or three turns on one session, each
//! streaming its answer from the scripted upstream for a while; the session starts with one
//! stored turn (version 2). DocFix's lock TTL is 3 s, the document's 30 s scaled with the
//! streams (0.2 to 5 s here, "seconds to minutes" there).

use racelab_core::session::{
    CONFLICT_REFUSED, I_CONV, I_CONV_ACKED, SESSION_MESSAGES, SESSION_SESSIONS, SessionTag,
    TURNS_OVERLAPPED, Turn, TurnConfig, conversation, message_key, session_coverage,
};
use racelab_core::{
    Duration, KeyedRow, Machine, Property, Row, Timestamp, Value, Variant, Verdict,
};
use racelab_sim::explore::{
    FaultProfile, NetConfig, ProcessSpec, Ratio, Run, SimRng, Target, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-000-06",
        title: "Concurrent writes to the same session_id conversation window",
        document: "000",
        invariant: "I-CONV: the stored log is a concatenation of whole turns, each answer \
                    generated from the prefix stored before it; no acknowledged turn is missing",
        docfix_verdict: "insufficient",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts,
        profile,
        seed_budget: 200,
        properties: PROPS,
        net: false,
        build,
        judge,
    }]
}

const PROPS: &[Property] = &[I_CONV, I_CONV_ACKED, CONFLICT_REFUSED, TURNS_OVERLAPPED];

const SESSION: &str = "S1";

/// DocFix's lock TTL.
const LOCK_TTL: Duration = Duration::from_secs(3);

/// Each turn: when it starts and how long its answer streams (ms).
fn turns(name: &str) -> Vec<(u64, u64)> {
    match name {
        // T1 streams for 2 s; T2 arrives at 100 ms with a 0.5 s answer.
        "interleaved-appends" => vec![(0, 2_000), (100, 500)],
        // T1 streams for 5 s, past the lock's 3 s TTL.
        "lock-expires-during-stream" => vec![(0, 5_000), (100, 500)],
        _ => vec![(0, 300), (1_000, 300)],
    }
}

fn random_turns(rng: &mut SimRng) -> Vec<(u64, u64)> {
    (0..rng.between(2, 3))
        .map(|_| (rng.below(2_000), rng.between(200, 5_000)))
        .collect()
}

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Scripted(name) => turns(name),
        Workload::Random(rng) => random_turns(rng),
    };
    let processes = plan
        .iter()
        .enumerate()
        .map(|(i, (start, stream))| {
            let cfg = TurnConfig {
                turn: i as u32 + 1,
                session: SESSION.into(),
                stream: Duration::from_ms(*stream),
                lock_ttl: LOCK_TTL,
            };
            ProcessSpec {
                host: 0,
                name: format!("T{}", i + 1),
                start_at: Timestamp::from_ms(*start),
                fault_prone: true,
                factory: Box::new(move |_| {
                    Box::new(Turn::new(variant, cfg.clone())) as Box<dyn Machine>
                }),
            }
        })
        .collect();
    let message = |seq: i64, role: &str| {
        (
            SESSION_MESSAGES,
            message_key(SESSION, seq),
            Row::from([
                ("session".to_string(), Value::Text(SESSION.into())),
                ("seq".to_string(), Value::Int(seq)),
                ("turn".to_string(), Value::Int(0)),
                ("role".to_string(), Value::Text(role.into())),
                ("base".to_string(), Value::Int(0)),
            ]),
        )
    };
    let spec = WorldSpec {
        processes,
        sql_rows: vec![
            (
                SESSION_SESSIONS,
                SESSION.into(),
                Row::from([("version".to_string(), Value::Int(2))]),
            ),
            message(1, "user"),
            message(2, "assistant"),
        ],
        net: NetConfig {
            scripted_latency: Duration::from_ms(5),
            redis_timeout: Duration::from_secs(1),
            sql_timeout: Duration::from_secs(2),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(10),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(120_000),
        horizon: None,
        local: None,
        upstream: Default::default(),
    };
    (spec, Capture::none())
}

fn judge(run: &Run, _: &Capture) -> Verdict {
    let messages: Vec<KeyedRow> = run
        .sql_rows
        .iter()
        .filter(|(t, _, _)| *t == SESSION_MESSAGES)
        .map(|(_, key, row)| KeyedRow {
            key: key.clone(),
            columns: row.clone(),
        })
        .collect();
    let mut verdict = conversation(&messages, &run.history);
    session_coverage(&run.history, &mut verdict);
    verdict
}

fn scripts() -> Vec<Script> {
    vec![
        Script {
            name: "interleaved-appends",
            summary: "T1 and T2 read the log at v2; T1 appends u1 (v3), T2 reads v3 and appends \
                      u2 (v4); T2's faster stream appends a2 (v5), then T1's a1 (v6): a1 does \
                      not follow u1",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "lock-expires-during-stream",
            summary: "T1 takes the 3 s lock and streams for 5 s; the lock expires, T2 takes it, \
                      appends its whole turn and unlocks; T1 appends its answer at 5 s on top",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "sequential-turns",
            summary: "T2 arrives after T1 is stored: every variant holds",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(5),
        latency: (Duration::from_ms(1), Duration::from_ms(10)),
        // A turn stalls before a write (a GC pause, a blocked event loop), sometimes past the
        // lock's TTL.
        pause: Ratio::per_mille(150),
        pause_len: (Duration::from_ms(100), Duration::from_secs(5)),
        pause_on: Target {
            kinds: vec![SessionTag::APPEND],
            ..Target::ANY
        },
        drop_reply: Ratio::per_mille(20),
        ..FaultProfile::quiet()
    }
}
