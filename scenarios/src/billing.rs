//! Document 000's billing family: R-000-03 (idempotent billing), R-000-01 (streaming
//! settlement), R-000-14 (token accounting) and R-000-08 (the usage outbox). Worlds, scripted timelines, fault profiles,
//! judges, budgets and properties.
//!
//! A "rollback(tx)" of RACES.md (a deadlock or a statement timeout) is a lost reply inside
//! the transaction: the driver times the statement out after `sql_timeout` (2 s here) and
//! discards the connection, and PostgreSQL rolls the transaction back.

use std::collections::BTreeMap;

use racelab_core::billing::{
    ACCOUNTS, Accounting, Amount, Answer, BillNote, BillRequest, BillTag, CONFLICT_ANSWERED,
    ClientKey, HOLD_SWEPT, HOLDS_RESOLVED, I_BAL, I_BILL_1, I_BILL_2, I_IDEM_A, I_IDEM_B, I_IDEM_C,
    I_IDEM_D, I_TOK, IdemConfig, IdemEnd, IdemGateway, KeySource, LEDGER, MarkerOrder, RECLAIMED,
    REPLAYED, SETTLE_REFUSED, Settlement, StreamConfig, StreamEnd, StreamGateway, Sweeper,
    SweeperConfig, USAGE_LOOKED, UsageConsumer, balance_conserved, coverage, idempotent_billing,
    streamed_billing,
};
use racelab_core::billing::{
    I_USAGE, OutboxRelay, Publish, USAGE_DEDUPLICATED, UsageBillConfig, UsageBiller, UsageEnd,
    UsageWorker, usage_bijection,
};
use racelab_core::billing::{IDEMPOTENCY, OUTBOX, USAGE, metrics};
use racelab_core::{
    Duration, EndpointId, Machine, Property, RequestId, Row, Timestamp, Value, Variant, Verdict,
};
use racelab_core::{KvOp, QueueOp, StoreOp, TagKind};
use racelab_sim::explore::{
    self, EndpointScript, FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Run, Scheduler,
    SimRng, Step, StreamScript, Upstream, WorldSpec,
};

use crate::acceptance::DocTest;
use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

/// The account every request charges, and its balance before the run.
const ACCOUNT: &str = "acct-1";
const BALANCE0: i64 = 1_000_000;
const PRICE: Amount = Amount(10);

/// The billing family's races.
pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
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
            net: true,
            build: build_03,
            judge: judge_03,
        },
        Race {
            id: "R-000-01",
            title: "Streaming billing callback runs outside the transaction: usage delivered but \
                never charged",
            document: "000",
            invariant: "I-BILL: every request the upstream billed has exactly one ledger row of \
                    its price once recovery has run; balance == initial - Σ ledger; no hold \
                    left open",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_01,
            profile: profile_01,
            seed_budget: 300,
            properties: PROPS_01,
            net: true,
            build: build_01,
            judge: judge_stream,
        },
        Race {
            id: "R-000-14",
            title: "Streaming token accumulator estimates output as chunks × 3",
            document: "000",
            invariant: "I-TOK: billed tokens == the provider's usage whenever it reports usage; \
                        otherwise flagged estimated and reconciled",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_14,
            profile: profile_14,
            seed_budget: 300,
            properties: PROPS_14,
            net: true,
            build: build_14,
            judge: judge_stream,
        },
        Race {
            id: "R-000-08",
            title: "Async usage task triggered before the transaction commits",
            document: "000",
            invariant: "I-USAGE: usage records and committed charges in bijection by request \
                        (no phantom, none missing once drained, no duplicate)",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_08,
            profile: profile_08,
            seed_budget: 300,
            properties: PROPS_08,
            net: true,
            build: build_08,
            judge: judge_08,
        },
    ]
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
    idem_world_with(variant, clients, key_source, marker, None)
}

/// [`idem_world`] with the clients' `attempts_max` (`None`: the default).
fn idem_world_with(
    variant: Variant,
    clients: Vec<Client>,
    key_source: KeySource,
    marker: MarkerOrder,
    attempts_max: Option<u32>,
) -> (WorldSpec, Capture) {
    let processes = clients
        .into_iter()
        .map(|c| {
            let mut cfg = IdemConfig::new(variant, c.request, ACCOUNT);
            let name = c.name.clone();
            cfg.key_source = key_source;
            cfg.marker = marker;
            if let Some(n) = attempts_max {
                cfg.attempts_max = n;
            }
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

// ---------------------------------------------------------------------------------------------
// R-000-01

const PROPS_01: &[Property] = &[
    I_BILL_1,
    I_BILL_2,
    I_TOK,
    HOLDS_RESOLVED,
    HOLD_SWEPT,
    SETTLE_REFUSED,
    USAGE_LOOKED,
];

const ENDPOINT: EndpointId = EndpointId(1);

fn judge_stream(run: &Run, _capture: &Capture) -> Verdict {
    let rows = run.sql_rows.iter().map(|(t, k, r)| (t, k.as_str(), r));
    let end = StreamEnd::read(BALANCE0, rows, &run.upstream_usage, run.quiescent);
    streamed_billing(&end).merge(coverage(&run.history))
}

/// One streamed request of a world.
struct Streamed {
    start_ms: u64,
    prompt_tokens: u32,
    disconnect_after: Option<u32>,
}

/// A world of streamed requests, one gateway each (`G1`, ...), over one endpoint streaming
/// `chunks`, with the variant's settlement and `accounting`; the sweeper (`S`) for holds and
/// the consumer (`W`) for the queue.
fn stream_world(
    settlement: Settlement,
    accounting: Accounting,
    requests: Vec<Streamed>,
    chunks: Vec<u32>,
    usage_in_final: bool,
) -> (WorldSpec, Capture) {
    let max_tokens = chunks.iter().sum();
    let mut processes = Vec::new();
    for (i, r) in requests.into_iter().enumerate() {
        let cfg = StreamConfig {
            settlement,
            accounting,
            request: RequestId(i as u64 + 1),
            endpoint: ENDPOINT,
            prompt_tokens: r.prompt_tokens,
            max_tokens,
            account: ACCOUNT.into(),
            disconnect_after: r.disconnect_after,
            lookups_max: 3,
        };
        processes.push(ProcessSpec {
            host: 0,
            name: format!("G{}", i + 1),
            start_at: Timestamp::from_ms(r.start_ms),
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(StreamGateway::new(cfg.clone(), inc)) as Box<dyn Machine>
            }),
        });
    }
    match settlement {
        Settlement::Hold => {
            let cfg = SweeperConfig {
                endpoint: ENDPOINT,
                account: ACCOUNT.into(),
                every: Duration::from_secs(2),
                // Longer than an `Open` can be in flight (the upstream timeout plus a delay),
                // so that a hold is never voided under a stream about to open.
                after: Duration::from_secs(15),
                batch_max: 16,
            };
            processes.push(ProcessSpec {
                host: 1,
                name: "S".into(),
                start_at: Timestamp::ZERO,
                fault_prone: false,
                factory: Box::new(move |_| Box::new(Sweeper::new(cfg.clone())) as Box<dyn Machine>),
            });
        }
        Settlement::Queue => processes.push(ProcessSpec {
            host: 1,
            name: "W".into(),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(|_| {
                Box::new(UsageConsumer::new(ACCOUNT, Duration::from_ms(200))) as Box<dyn Machine>
            }),
        }),
        Settlement::Callback => {}
    }
    let script = EndpointScript {
        stream: StreamScript {
            first_chunk_after: Duration::from_ms(200),
            gap: Duration::from_ms(100),
            chunks,
            usage_in_final,
            fail_after: None,
        },
        ..EndpointScript::default()
    };
    let row = Row::from([("balance".to_string(), Value::Int(BALANCE0))]);
    let spec = WorldSpec {
        processes,
        sql_rows: vec![(ACCOUNTS, ACCOUNT.into(), row)],
        net: NetConfig {
            sql_timeout: Duration::from_secs(2),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(5),
        time_limit: Timestamp::from_ms(5 * 60 * 1000),
        horizon: Some(Timestamp::from_ms(60_000)),
        local: None,
        upstream: Upstream {
            endpoints: [(ENDPOINT, script)].into(),
        },
    };
    (spec, Capture::none())
}

fn settlement_of(variant: Variant) -> Settlement {
    match variant {
        Variant::Buggy => Settlement::Callback,
        Variant::DocFix => Settlement::Queue,
        Variant::Correct => Settlement::Hold,
    }
}

fn build_01(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let settlement = settlement_of(variant);
    match workload {
        Workload::Scripted(name) => {
            let disconnect_after = match name {
                "client-disconnect" => Some(2),
                "cancel-before-first-chunk" => Some(0),
                _ => None,
            };
            let requests = vec![Streamed {
                start_ms: 0,
                prompt_tokens: 10,
                disconnect_after,
            }];
            stream_world(settlement, Accounting::Provider, requests, vec![5; 4], true)
        }
        Workload::Random(rng) => {
            let (requests, chunks) = random_streams(rng);
            stream_world(settlement, Accounting::Provider, requests, chunks, true)
        }
    }
}

/// One to three requests within 2 s, 5-20 prompt tokens each, one in four disconnecting at a
/// random chunk; the endpoint streams 2-6 chunks of 1-12 tokens.
fn random_streams(rng: &mut SimRng) -> (Vec<Streamed>, Vec<u32>) {
    let count = rng.between(2, 6);
    let chunks: Vec<u32> = (0..count)
        .map(|_| u32::try_from(rng.between(1, 12)).unwrap_or(1))
        .collect();
    let requests = (0..rng.between(1, 3))
        .map(|_| Streamed {
            start_ms: rng.below(2_000),
            prompt_tokens: u32::try_from(rng.between(5, 20)).unwrap_or(5),
            disconnect_after: (rng.below(4) == 0)
                .then(|| u32::try_from(rng.below(count + 1)).unwrap_or(0)),
        })
        .collect();
    (requests, chunks)
}

fn scripts_01() -> Vec<Script> {
    vec![
        Script {
            name: "crash-after-stream",
            summary: "(a) G1 streams r1's four chunks and the end to the client, then crashes \
                      before the callback commits (Q-1: before it publishes); the provider \
                      billed 30 tokens and no ledger row exists (Correct: the sweeper settles \
                      the hold from the provider's usage)",
            steps: vec![Step::on(
                "G1",
                BillTag::STREAM,
                6,
                OpEffect::CrashAfterApply {
                    restart_after: None,
                },
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "client-disconnect",
            summary: "(b) the client disconnects after chunk 2: the response task is \
                      cancelled and nothing after the stream runs, while the upstream \
                      generates to the end (Correct: the shielded finally cancels the stream \
                      and settles from the provider's usage)",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "callback-tx-fails",
            summary: "(c) G1's charge statement times out (its reply is lost): the callback \
                      logs and swallows the exception (DocFix: G1 only publishes; Correct: the \
                      hold stays open and the sweeper settles it)",
            steps: vec![Step::on("G1", BillTag::SETTLE, 1, OpEffect::DropReply)],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "q2-consumer-crash-before-ack",
            summary: "Q-2: the consumer W commits r1's charge and crashes before its ack; the \
                      queue redelivers the message after its 5 s lock and W charges it again",
            steps: vec![Step::on(
                "W",
                BillTag::TX,
                2,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "void-then-late-stream",
            summary: "G1 pauses 20 s after its hold commits, before it opens the stream; the \
                      sweeper finds no call for r1 and voids the hold (refunding it); G1 then \
                      streams and settles: its unique ledger row goes in and the voided hold \
                      is charged afresh (no variant loses the charge)",
            steps: vec![Step::on(
                "G1",
                BillTag::STREAM,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(20)),
            )],
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "cancel-before-first-chunk",
            summary: "the client cancels before the first chunk: nothing is charged for the \
                      generation the upstream still bills (Correct: the hold is settled at the \
                      prompt's price, not leaked)",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn profile_01() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(10),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // Long enough for the sweeper to void a hold under a gateway about to open its
        // stream, or to settle one under a gateway about to settle it.
        pause: Ratio::per_mille(10),
        pause_len: (Duration::from_secs(5), Duration::from_secs(25)),
        delay: Ratio::per_mille(10),
        delay_len: (Duration::from_ms(100), Duration::from_secs(3)),
        drop_reply: Ratio::per_mille(20),
        crash: Ratio::per_mille(20),
        restart_after: (Duration::from_ms(500), Duration::from_secs(3)),
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-000-14

const PROPS_14: &[Property] = &[I_TOK, I_BILL_1, I_BILL_2, HOLDS_RESOLVED, USAGE_LOOKED];

fn accounting_of(variant: Variant) -> Accounting {
    match variant {
        Variant::Buggy => Accounting::ChunksTimes3,
        Variant::DocFix => Accounting::RequireUsage,
        Variant::Correct => Accounting::Provider,
    }
}

/// Every variant settles with the correct holds (R-000-01's fix), so that only the token
/// count differs.
fn build_14(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let accounting = accounting_of(variant);
    match workload {
        Workload::Scripted(name) => {
            let (chunks, disconnect_after, usage_in_final) = match name {
                "small-chunks" => (vec![1; 20], None, true),
                "large-chunks" => (vec![20; 20], None, true),
                "disconnect" => (vec![5; 20], Some(5), true),
                _ => (vec![5; 10], None, false),
            };
            let requests = vec![Streamed {
                start_ms: 0,
                prompt_tokens: 10,
                disconnect_after,
            }];
            stream_world(
                Settlement::Hold,
                accounting,
                requests,
                chunks,
                usage_in_final,
            )
        }
        Workload::Random(rng) => {
            let (requests, chunks) = random_streams(rng);
            let usage_in_final = rng.below(4) != 0;
            stream_world(
                Settlement::Hold,
                accounting,
                requests,
                chunks,
                usage_in_final,
            )
        }
    }
}

fn scripts_14() -> Vec<Script> {
    let only_buggy = PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]);
    vec![
        Script {
            name: "small-chunks",
            summary: "the upstream sends 20 chunks of 1 token: chunks × 3 bills 60 completion \
                      tokens for 20 (a 3× overcharge)",
            steps: vec![],
            expect: only_buggy,
        },
        Script {
            name: "large-chunks",
            summary: "20 chunks of 20 tokens: chunks × 3 bills 60 for 400 (an undercharge)",
            steps: vec![],
            expect: only_buggy,
        },
        Script {
            name: "disconnect",
            summary: "the client disconnects at chunk 5: the final usage chunk is never read, \
                      so \"require usage\" has nothing but the prompt to bill, while the \
                      upstream bills what it generated until the cancel (Correct: the provider's \
                      usage API after the cancel)",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "no-usage-record",
            summary: "an OpenAI-style stream without stream_options.include_usage: the end \
                      carries no usage record (Correct: the provider's usage API)",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn profile_14() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(10),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        delay: Ratio::per_mille(10),
        delay_len: (Duration::from_ms(100), Duration::from_secs(3)),
        drop_reply: Ratio::per_mille(20),
        crash: Ratio::per_mille(10),
        restart_after: (Duration::from_ms(500), Duration::from_secs(3)),
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-000-08

const PROPS_08: &[Property] = &[I_USAGE, USAGE_DEDUPLICATED];

fn judge_08(run: &Run, _capture: &Capture) -> Verdict {
    let rows = run.sql_rows.iter().map(|(t, k, r)| (t, k.as_str(), r));
    let end = UsageEnd::read(rows, run.quiescent);
    usage_bijection(&end).merge(coverage(&run.history))
}

/// Billers `B1..` (one request each, starting at `starts`), the usage worker `Wk`, and for
/// the outbox two relays `R1`, `R2`.
fn usage_world(variant: Variant, starts: &[u64]) -> (WorldSpec, Capture) {
    let publish = match variant {
        Variant::Buggy => Publish::BeforeCommit,
        Variant::DocFix => Publish::AfterCommit,
        Variant::Correct => Publish::Outbox,
    };
    let mut processes = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let cfg = UsageBillConfig {
            publish,
            request: RequestId(i as u64 + 1),
            amount: PRICE,
            account: ACCOUNT.into(),
        };
        processes.push(ProcessSpec {
            host: 0,
            name: format!("B{}", i + 1),
            start_at: Timestamp::from_ms(*start),
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(UsageBiller::new(cfg.clone(), inc)) as Box<dyn Machine>
            }),
        });
    }
    let dedup = variant == Variant::Correct;
    processes.push(ProcessSpec {
        host: 1,
        name: "Wk".into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(UsageWorker::new(dedup, Duration::from_ms(500))) as Box<dyn Machine>
        }),
    });
    if publish == Publish::Outbox {
        for name in ["R1", "R2"] {
            processes.push(ProcessSpec {
                host: 2,
                name: name.into(),
                start_at: Timestamp::ZERO,
                fault_prone: true,
                factory: Box::new(|_| {
                    Box::new(OutboxRelay::new(Duration::from_ms(500), 4)) as Box<dyn Machine>
                }),
            });
        }
    }
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
        queue_lock: Duration::from_secs(5),
        time_limit: Timestamp::from_ms(5 * 60 * 1000),
        horizon: Some(Timestamp::from_ms(30_000)),
        local: None,
        upstream: Default::default(),
    };
    (spec, Capture::none())
}

fn build_08(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    match workload {
        Workload::Scripted(_) => usage_world(variant, &[0]),
        Workload::Random(rng) => {
            let starts: Vec<u64> = (0..rng.between(1, 3)).map(|_| rng.below(2_000)).collect();
            usage_world(variant, &starts)
        }
    }
}

fn scripts_08() -> Vec<Script> {
    vec![
        Script {
            name: "s1-rollback-after-delay",
            summary: "S1: B1 calls record_usage_task.delay() inside the billing transaction and \
                      crashes before the commit; PostgreSQL rolls the charge back, and the \
                      worker writes usage for a charge that never existed (a phantom)",
            steps: vec![Step::on(
                "B1",
                BillTag::QUEUE,
                1,
                OpEffect::CrashAfterApply {
                    restart_after: None,
                },
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "s2-redelivery",
            summary: "S2: the worker writes r1's usage record and crashes before its ack; the \
                      queue redelivers the event after its 5 s lock and a second record is \
                      written (Correct: ON CONFLICT DO NOTHING)",
            steps: vec![Step::on(
                "Wk",
                BillTag::USAGE_RECORD,
                1,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "crash-before-publish",
            summary: "the counter-schedule: B1 commits the charge and crashes before the \
                      after_commit hook publishes; the charge never gets its usage record \
                      (Correct: the outbox row committed with it, and a relay publishes it)",
            steps: vec![Step::on(
                "B1",
                BillTag::TX,
                2,
                OpEffect::CrashAfterApply {
                    restart_after: None,
                },
            )],
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
    ]
}

fn profile_08() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(10),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        drop_reply: Ratio::per_mille(20),
        crash: Ratio::per_mille(30),
        restart_after: (Duration::from_ms(500), Duration::from_secs(3)),
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// The document's acceptance criteria (RACES.md 7.1)

/// Document 000's acceptance criteria for the billing family, run against each variant.
pub(crate) fn doc_tests() -> Vec<DocTest> {
    vec![
        DocTest {
            id: "AC-000-2",
            name: "same trace_id executed repeatedly gives completely identical results",
            race: "R-000-03",
            setting: "five submissions of one client-stable key, sequential (2 s apart) and \
                  concurrent, each under 20 seeds of crashes between steps (5% per operation, \
                  restart 0.5-3 s: the restarted client retries); expects at most one ledger \
                  row for the key and every 200 body byte-identical to the stored one",
            run: ac_000_2,
        },
        DocTest {
            id: "AC-000-4",
            name: "after a transaction rollback, all state is completely rolled back",
            race: "R-000-03",
            setting: "one request (one attempt, no retry) with a rollback injected at each step of \
                  its billing transaction (the statement's reply is lost, the driver drops the \
                  connection): R-000-03's charge (ledger, deduction, completion) and R-000-08's \
                  (ledger, deduction, usage event). Expects the balance, ledger, idempotency \
                  rows, Redis idempotency keys, outbox rows, queued events and usage records \
                  as before the request",
            run: ac_000_4,
        },
        DocTest {
            id: "AC-000-6",
            name: "all key operations have logs and metrics",
            race: "R-000-03",
            setting: "the counters derived from each run: one injected rollback moves \
                  billing.transaction_rollback_count by exactly one and one duplicate \
                  submission billing.idempotent_conflict_count by exactly one; \
                  billing.duplicate_deduct_count stays 0 over R-000-03's first 500 random \
                  seeds",
            run: ac_000_6,
        },
    ]
}

/// Seeds each acceptance world runs under.
const AC_SEEDS: u64 = 20;

/// Crashes between steps, and latencies.
fn crash_profile() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(20),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        crash: Ratio::per_mille(50),
        restart_after: (Duration::from_ms(500), Duration::from_secs(3)),
        ..FaultProfile::quiet()
    }
}

fn ac_000_2(variant: Variant) -> bool {
    let sequential = || {
        (0..5u64)
            .map(|i| client(&format!("C{}", i + 1), i * 2_000, 1, PRICE.0))
            .collect::<Vec<_>>()
    };
    let concurrent = || {
        (0..5u64)
            .map(|i| client(&format!("C{}", i + 1), 0, 1, PRICE.0))
            .collect::<Vec<_>>()
    };
    let plans: [&dyn Fn() -> Vec<Client>; 2] = [&sequential, &concurrent];
    plans.iter().all(|plan| {
        (0..AC_SEEDS).all(|seed| {
            let (spec, _) = idem_world(
                variant,
                plan(),
                KeySource::ClientStable,
                MarkerOrder::BeforeTx,
            );
            let scheduler = Scheduler::Random {
                seed,
                faults: crash_profile(),
            };
            replays_identical(&explore::run(spec, &scheduler))
        })
    })
}

/// At most one committed ledger row for key K1, and every 200 answer's body equal to it.
fn replays_identical(run: &Run) -> bool {
    let bodies: Vec<String> = run
        .sql_rows
        .iter()
        .filter(|(t, _, r)| *t == LEDGER && r.get("request") == Some(&Value::Text("K1".into())))
        .map(|(_, _, r)| match r.get("body") {
            Some(Value::Text(b)) => b.clone(),
            _ => String::new(),
        })
        .collect();
    if bodies.len() > 1 {
        return false;
    }
    run.history
        .notes
        .iter()
        .all(|n| match BillNote::of(&n.note) {
            Some(BillNote::Answered {
                answer: Answer::Served { body },
                ..
            }) => bodies.first() == Some(body),
            Some(BillNote::Answered {
                answer: Answer::Duplicate,
                ..
            }) => false,
            _ => true,
        })
}

fn scripted(spec: WorldSpec, name: &str, steps: Vec<Step>) -> Run {
    let scheduler = Scheduler::Scripted {
        name: name.to_string(),
        steps,
    };
    explore::run(spec, &scheduler)
}

/// Whether `process` had a write of `store_write` applied and not lost (a Redis key set, an
/// event queued).
fn wrote(run: &Run, store_write: impl Fn(&StoreOp) -> bool) -> bool {
    run.history
        .ops
        .iter()
        .any(|op| store_write(&op.op) && op.succeeded() && op.lost_at.is_none())
}

fn rows_of(run: &Run, table: racelab_core::Table) -> usize {
    run.sql_rows.iter().filter(|(t, _, _)| *t == table).count()
}

/// Whether the run's end state is the state before the request: the balance, and no ledger,
/// idempotency, outbox or usage row, no Redis idempotency key, no queued event.
fn as_before(run: &Run) -> bool {
    let balance = run
        .row(ACCOUNTS, ACCOUNT)
        .and_then(|r| r.get("balance").cloned());
    let redis_key = |op: &StoreOp| matches!(op, StoreOp::Kv(KvOp::Set { key, .. }) if key.starts_with("billing:"));
    let queued = |op: &StoreOp| matches!(op, StoreOp::Queue(QueueOp::Enqueue { .. }));
    balance == Some(Value::Int(BALANCE0))
        && [LEDGER, IDEMPOTENCY, OUTBOX, USAGE]
            .iter()
            .all(|t| rows_of(run, *t) == 0)
        && !wrote(run, redis_key)
        && !wrote(run, queued)
}

fn ac_000_4(variant: Variant) -> bool {
    let idem_steps = [BillTag::CHARGE, BillTag::DEDUCT, BillTag::COMPLETE];
    let usage_steps = [
        BillTag::SETTLE,
        BillTag::HOLD,
        BillTag::QUEUE,
        BillTag::RELAY,
    ];
    let runs = idem_steps
        .iter()
        .map(|kind| {
            let (spec, _) = idem_world_with(
                variant,
                vec![client("C1", 0, 1, PRICE.0)],
                KeySource::ClientStable,
                MarkerOrder::BeforeTx,
                Some(1),
            );
            (spec, "C1", *kind)
        })
        .chain(usage_steps.iter().map(|kind| {
            let (spec, _) = usage_world(variant, &[0]);
            (spec, "B1", *kind)
        }));
    let rolled_back: Vec<Run> = runs
        .map(|(spec, process, kind): (WorldSpec, &str, TagKind)| {
            let step = Step::on(process, kind, 1, OpEffect::DropReply);
            scripted(spec, "ac-000-4", vec![step])
        })
        // A variant without this step committed the request: no rollback to judge.
        .filter(|run| rows_of(run, LEDGER) == 0)
        .collect();
    // Every variant has at least the ledger and the deduction steps in both races.
    rolled_back.len() >= 4 && rolled_back.iter().all(as_before)
}

fn ac_000_6(variant: Variant) -> bool {
    // One rollback, counted once.
    let (spec, _) = idem_world(
        variant,
        vec![client("C1", 0, 1, PRICE.0)],
        KeySource::ClientStable,
        MarkerOrder::BeforeTx,
    );
    let step = Step::on("C1", BillTag::CHARGE, 1, OpEffect::DropReply);
    let rollback = metrics(&scripted(spec, "ac-000-6-rollback", vec![step]).history);
    // One duplicate submission after the first completed, counted once.
    let (spec, _) = idem_world(
        variant,
        vec![client("C1", 0, 1, PRICE.0), client("C2", 3_000, 1, PRICE.0)],
        KeySource::ClientStable,
        MarkerOrder::BeforeTx,
    );
    let conflict = metrics(&scripted(spec, "ac-000-6-duplicate", Vec::new()).history);
    // No duplicate deduction under R-000-03's random workloads and faults.
    let race = races().into_iter().find(|r| r.id == "R-000-03");
    let no_duplicates = race.is_some_and(|race| {
        (0..500).all(|seed| {
            let outcome = crate::run_seed(&race, variant, seed);
            metrics(&outcome.run.history).duplicate_deduct_count == 0
        })
    });
    rollback.transaction_rollback_count == 1
        && conflict.idempotent_conflict_count == 1
        && no_duplicates
}
