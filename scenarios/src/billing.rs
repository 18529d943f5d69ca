//! Document 000's billing family: R-000-03 (idempotent billing). Worlds, scripted
//! timelines, fault profiles, judges, budgets and properties.
//!
//! A "rollback(tx)" of RACES.md (a deadlock or a statement timeout) is a lost reply inside
//! the transaction: the driver times the statement out after `sql_timeout` (2 s here) and
//! discards the connection, and PostgreSQL rolls the transaction back.

use std::collections::BTreeMap;

use racelab_core::billing::{
    ACCOUNTS, Amount, BillRequest, BillTag, CONFLICT_ANSWERED, ClientKey, I_BAL, I_IDEM_A,
    I_IDEM_B, I_IDEM_C, I_IDEM_D, IdemConfig, IdemEnd, IdemGateway, KeySource, MarkerOrder,
    RECLAIMED, REPLAYED, balance_conserved, coverage, idempotent_billing,
};
use racelab_core::{Duration, Machine, Property, Row, Timestamp, Value, Variant, Verdict};
use racelab_sim::explore::{
    FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Run, SimRng, Step, WorldSpec,
};

use crate::catalog::{Capture, PerVariant, Race, Script, Workload};

/// The account every request charges, and its balance before the run.
const ACCOUNT: &str = "acct-1";
const BALANCE0: i64 = 1_000_000;
const PRICE: Amount = Amount(10);

/// The billing family's races.
pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-000-03",
        title: "BillingRepository: Redis idempotency key set outside the DB transaction",
        document: "000",
        invariant: "I-IDEM: at most one charge per key (a); a 200 was charged (b); a retry of \
                    uncommitted attempts executes (c); every answer after the commit is the \
                    stored response (d); balance == initial - Σ ledger",
        docfix_verdict: "partially",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts: scripts_03,
        profile: profile_03,
        seed_budget: 300,
        properties: PROPS_03,
        net: false,
        build: build_03,
        judge: judge_03,
    }]
}

// ---------------------------------------------------------------------------------------------
// R-000-03

const PROPS_03: &[Property] = &[
    I_IDEM_A,
    I_IDEM_B,
    I_IDEM_C,
    I_IDEM_D,
    I_BAL,
    REPLAYED,
    CONFLICT_ANSWERED,
    RECLAIMED,
];

fn judge_03(run: &Run, capture: &Capture) -> Verdict {
    let initial = capture
        .get::<BTreeMap<String, i64>>()
        .cloned()
        .unwrap_or_default();
    let rows = run.sql_rows.iter().map(|(t, k, r)| (t, k.as_str(), r));
    let end = IdemEnd::read(&initial, rows);
    idempotent_billing(&run.history)
        .merge(balance_conserved(&end))
        .merge(coverage(&run.history))
}

/// One client process: its name, when it starts, its request.
struct Client {
    name: String,
    start: Timestamp,
    request: BillRequest,
}

fn client(name: &str, start_ms: u64, key: u32, amount: i64) -> Client {
    Client {
        name: name.into(),
        start: Timestamp::from_ms(start_ms),
        request: BillRequest {
            key: ClientKey(key),
            amount: Amount(amount),
        },
    }
}

fn idem_world(
    variant: Variant,
    clients: Vec<Client>,
    key_source: KeySource,
    marker: MarkerOrder,
) -> (WorldSpec, Capture) {
    let processes = clients
        .into_iter()
        .map(|c| {
            let mut cfg = IdemConfig::new(variant, c.request, ACCOUNT);
            let name = c.name.clone();
            cfg.key_source = key_source;
            cfg.marker = marker;
            ProcessSpec {
                host: 0,
                name: c.name,
                start_at: c.start,
                fault_prone: true,
                factory: Box::new(move |inc| {
                    Box::new(IdemGateway::new(cfg.clone(), &name, inc)) as Box<dyn Machine>
                }),
            }
        })
        .collect();
    let row = Row::from([("balance".to_string(), Value::Int(BALANCE0))]);
    let spec = WorldSpec {
        processes,
        sql_rows: vec![(ACCOUNTS, ACCOUNT.into(), row)],
        net: NetConfig {
            redis_timeout: Duration::from_secs(1),
            sql_timeout: Duration::from_secs(2),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(10 * 60 * 1000),
        horizon: None,
        local: None,
        upstream: Default::default(),
    };
    let initial = BTreeMap::from([(ACCOUNT.to_string(), BALANCE0)]);
    (spec, Capture::new(initial))
}

fn build_03(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let p = PRICE.0;
    match workload {
        Workload::Scripted(name) => {
            let clients = match name {
                "s3-failover" => vec![client("C1", 0, 1, p), client("C2", 3_000, 1, p)],
                "concurrent-duplicates" => vec![client("C1", 0, 1, p), client("C2", 0, 1, p)],
                "mismatched-payload" => vec![client("C1", 0, 1, p), client("C2", 3_000, 1, 2 * p)],
                "lease-expiry" => vec![client("C1", 0, 1, p), client("C2", 1_000, 1, p)],
                _ => vec![client("C1", 0, 1, p)],
            };
            let key_source = match name {
                "per-attempt-trace-id" => KeySource::PerAttempt,
                _ => KeySource::ClientStable,
            };
            let marker = match name {
                "s2-crash-after-commit" => MarkerOrder::AfterCommit,
                _ => MarkerOrder::BeforeTx,
            };
            idem_world(variant, clients, key_source, marker)
        }
        Workload::Random(rng) => random_03(variant, rng),
    }
}

/// A random workload: one or two keys, each sent by one to three clients within 3 s (a
/// double submission, a proxy's retry), one in eight of the later ones with another payload;
/// in one run of four the document's gateway keys on a per-attempt trace id.
fn random_03(variant: Variant, rng: &mut SimRng) -> (WorldSpec, Capture) {
    let keys = 1 + rng.below(2);
    let mut clients = Vec::new();
    for key in 1..=keys {
        let senders = rng.between(1, 3);
        for s in 0..senders {
            let start = if s == 0 { 0 } else { rng.below(3_000) };
            let amount = if s > 0 && rng.below(8) == 0 {
                2 * PRICE.0
            } else {
                PRICE.0
            };
            let name = format!("C{}", clients.len() + 1);
            clients.push(client(
                &name,
                start,
                u32::try_from(key).unwrap_or(1),
                amount,
            ));
        }
    }
    let key_source = if rng.below(4) == 0 {
        KeySource::PerAttempt
    } else {
        KeySource::ClientStable
    };
    idem_world(variant, clients, key_source, MarkerOrder::BeforeTx)
}

fn scripts_03() -> Vec<Script> {
    let fails = PerVariant::DOCFIX_INSUFFICIENT;
    vec![
        Script {
            name: "s1-rollback-after-marker",
            summary: "S1: C1's SET billing:idem:K1 NX EX succeeds, its charge transaction rolls \
                      back (the statement's reply is lost, the driver times out and drops the \
                      connection); the retry finds the key and is refused as a duplicate: \
                      never charged",
            steps: vec![Step::on("C1", BillTag::CHARGE, 1, OpEffect::DropReply)],
            expect: fails,
        },
        Script {
            name: "s2-crash-after-commit",
            summary: "S2 (key after commit): C1 commits the charge and crashes before SET \
                      billing:idem:K1; the client's retry misses Redis and is charged again \
                      (DocFix's marker, set before, refuses the retry as a duplicate instead \
                      of replaying the stored response)",
            steps: vec![Step::on(
                "C1",
                BillTag::TX,
                2,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: fails,
        },
        Script {
            name: "s3-failover",
            summary: "S3: C1's SET NX is acked by the primary, which fails over before \
                      replicating it; C1 commits; C2 resubmits K1 at 3 s, misses Redis and is \
                      charged again (DocFix: the unique ledger key refuses the charge with a \
                      500 for a request that was charged)",
            steps: vec![Step::on(
                "C1",
                BillTag::IDEM_CHECK,
                1,
                OpEffect::FailoverAfterApply,
            )],
            expect: fails,
        },
        Script {
            name: "concurrent-duplicates",
            summary: "C1 and C2 submit K1 at once: both call the upstream; C2's SET NX fails \
                      and it answers an empty duplicate while C1 commits another body \
                      (Correct: C2's claim loses, it gets 409 + Retry-After, then the stored \
                      response)",
            steps: vec![],
            expect: fails,
        },
        Script {
            name: "per-attempt-trace-id",
            summary: "A1: the gateway keys on a per-attempt trace_id; C1's commit is applied \
                      but its answer lost, so the client retries, the retry carries a new \
                      trace_id and is charged again",
            steps: vec![Step::on("C1", BillTag::TX, 2, OpEffect::DropReply)],
            expect: fails,
        },
        Script {
            name: "mismatched-payload",
            summary: "C2 reuses key K1 at 3 s with another payload: the marker refuses it as \
                      a duplicate of a request it is not (Correct: 422)",
            steps: vec![],
            expect: fails,
        },
        Script {
            name: "lease-expiry",
            summary: "C1 pauses 8 s before its charge transaction; C2 resubmits K1 at 1 s \
                      (Correct: 409 until C1's 5 s lease expires, then re-claims with epoch 2 \
                      and completes; C1's completion is fenced and it replays C2's response)",
            steps: vec![Step::on(
                "C1",
                BillTag::TX,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(8)),
            )],
            expect: fails,
        },
    ]
}

fn profile_03() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(20),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        pause: Ratio::per_mille(10),
        pause_len: (Duration::from_secs(1), Duration::from_secs(8)),
        delay: Ratio::per_mille(20),
        delay_len: (Duration::from_ms(100), Duration::from_secs(3)),
        drop_reply: Ratio::per_mille(30),
        crash: Ratio::per_mille(20),
        restart_after: (Duration::from_ms(500), Duration::from_secs(3)),
        failover: Ratio::per_mille(30),
        ..FaultProfile::quiet()
    }
}
