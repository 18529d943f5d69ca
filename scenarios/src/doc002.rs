//! Document 002 (work-order quantity: Redis lock with renewal, Bull redelivery, MongoDB `$inc`),
//! R-002-01 .. R-002-06. MongoDB's single-document conditional update is modelled by the SQL
//! model's conditional `UPDATE` (RACES.md assumption A10); Bull's lock is 30 s and the work
//! order lock's TTL 20 s (A5).

use racelab_core::workorder::WORK_ORDERS;
use std::collections::BTreeMap;

use racelab_core::workorder::{
    CHECKER_OVERLAPPED, Checker, DELIVERED_AGAIN, DUPLICATE_SKIPPED, DocFixPlans, FAILOVER_LANDED,
    I_MX, I_WO, LEASE_SUPERSEDED, LogOrder, NO_FALSE_ALARM, Plan2, PlannedScan, RequestIdSource,
    STALE_WRITE_FENCED, ScanJob, Terminal, WoEnd, WoTag, Worker, WorkerConfig, coverage,
    exactly_once, fenced_effects, no_false_alarm,
};
use racelab_core::{
    Duration, Machine, Property, Quantity, Row, ScanId, StoreId, Timestamp, Value, Variant,
    Verdict, WorkOrderId,
};
use racelab_sim::explore::{
    Action, FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Run, SimRng, Step, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

const QTY0: i64 = 100;
const WO: WorkOrderId = WorkOrderId(1);

/// The six entries of document 002.
pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
            id: "R-002-01",
            title: "Lock renewal result ignored: lock expires, a second worker acquires it, double $inc",
            document: "002",
            invariant: "I-MX: every effect the store accepts was issued under a lease nobody else \
                        acquired since; I-WO: qty == qty_0 + Σ distinct scans",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_01,
            profile: profile_01,
            seed_budget: 1_000,
            properties: PROPS_01,
            net: true,
            build: build_01,
            judge: judge_mx,
        },
        Race {
            id: "R-002-02",
            title: "Redis primary/replica failover loses the lock: two holders",
            document: "002",
            invariant: "I-MX and I-WO under a Redis failover that loses unreplicated writes",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_02,
            profile: profile_02,
            seed_budget: 1_000,
            properties: PROPS_02,
            net: true,
            build: build_plans_1_2,
            judge: judge_mx,
        },
        Race {
            id: "R-002-03",
            title: "No idempotency: the same barcode scan increases the input quantity several times",
            document: "002",
            invariant: "I-WO: qty == qty_0 + Σ distinct scan ids, each applied exactly once",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_03,
            profile: profile_03,
            seed_budget: 1_000,
            properties: PROPS_03,
            net: true,
            build: build_plans_1_2,
            judge: judge_wo,
        },
        Race {
            id: "R-002-04",
            title: "The idempotency proposal's own races: per-attempt requestId, find-then-create, \
                    effect and log not atomic",
            document: "002",
            invariant: "I-WO, and at most one SUCCESS log row per scan event",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_04,
            profile: profile_04,
            seed_budget: 1_000,
            properties: PROPS_04,
            net: true,
            build: build_04,
            judge: judge_wo,
        },
        Race {
            id: "R-002-05",
            title: "Claim that \"Bull dispatches each job once\" is false: stalled jobs, \
                    redelivery, Redis outage",
            document: "002",
            invariant: "I-WO under at-least-once delivery",
            docfix_verdict: "claim incorrect",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_05,
            profile: profile_05,
            seed_budget: 1_000,
            properties: PROPS_05,
            net: false,
            build: build_plans_1_2,
            judge: judge_wo,
        },
        Race {
            id: "R-002-06",
            title: "The consistency checker and optional auto-repair race with live updates",
            document: "002",
            invariant: "no false alarm on a consistent store; a repair never destroys a \
                        legitimate increment (I-WO)",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_06,
            profile: profile_06,
            seed_budget: 1_000,
            properties: PROPS_06,
            net: false,
            build: build_06,
            judge: judge_checker,
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// Judges

const PROPS_01: &[Property] = &[I_MX, I_WO, LEASE_SUPERSEDED, STALE_WRITE_FENCED];
const PROPS_02: &[Property] = &[I_MX, I_WO, FAILOVER_LANDED];
const PROPS_03: &[Property] = &[I_WO, DELIVERED_AGAIN, DUPLICATE_SKIPPED];
const PROPS_04: &[Property] = &[I_WO, DELIVERED_AGAIN, DUPLICATE_SKIPPED];
const PROPS_05: &[Property] = &[I_WO, DELIVERED_AGAIN, DUPLICATE_SKIPPED];
const PROPS_06: &[Property] = &[NO_FALSE_ALARM, I_WO, CHECKER_OVERLAPPED];

/// The family's end state: the initial quantities the build captured, the final ones from
/// the committed rows.
fn end(run: &Run, capture: &Capture) -> WoEnd {
    let initial = capture
        .get::<BTreeMap<WorkOrderId, Quantity>>()
        .cloned()
        .unwrap_or_default();
    let rows = run.sql_rows.iter().map(|(t, k, r)| (t, k.as_str(), r));
    WoEnd::read(&initial, rows, run.quiescent)
}

fn judge_mx(run: &Run, capture: &Capture) -> Verdict {
    let h = &run.history;
    fenced_effects(h)
        .merge(exactly_once(h, &end(run, capture)))
        .merge(coverage(h))
}

fn judge_wo(run: &Run, capture: &Capture) -> Verdict {
    exactly_once(&run.history, &end(run, capture)).merge(coverage(&run.history))
}

fn judge_checker(run: &Run, capture: &Capture) -> Verdict {
    let (h, end) = (&run.history, end(run, capture));
    no_false_alarm(h, &end)
        .merge(exactly_once(h, &end))
        .merge(coverage(h))
}

// ---------------------------------------------------------------------------------------------
// Worlds

/// The processes and scans of one world.
struct Plan {
    variant: Variant,
    docfix: DocFixPlans,
    workers: Vec<(&'static str, Timestamp)>,
    scans: Vec<PlannedScan>,
    work_orders: Vec<WorkOrderId>,
    /// The checker's variant and schedule (R-002-06), with the workers running `Correct`.
    checker: Option<(Variant, Duration, u32)>,
}

fn scan(at_ms: u64, id: u64, wo: WorkOrderId, qty: i64, work_ms: u64) -> PlannedScan {
    PlannedScan {
        at: Timestamp::from_ms(at_ms),
        job: ScanJob {
            scan: ScanId(id),
            work_order: wo,
            qty: Quantity(qty),
            work: Duration::from_ms(work_ms),
            request_id: String::new(),
        },
    }
}

fn world(plan: Plan) -> (WorldSpec, Capture) {
    let worker_variant = if plan.checker.is_some() {
        Variant::Correct
    } else {
        plan.variant
    };
    let mut processes = vec![ProcessSpec {
        host: 0,
        name: "T".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: {
            let scans = plan.scans.clone();
            Box::new(move |_| {
                Box::new(Terminal::new(worker_variant, scans.clone())) as Box<dyn Machine>
            })
        },
    }];
    for (name, start) in &plan.workers {
        let cfg = WorkerConfig::new(worker_variant, plan.docfix);
        let name = *name;
        processes.push(ProcessSpec {
            host: 0,
            name: name.into(),
            start_at: *start,
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(Worker::new(cfg.clone(), name, inc)) as Box<dyn Machine>
            }),
        });
    }
    if let Some((variant, every, rounds)) = plan.checker {
        processes.push(ProcessSpec {
            host: 0,
            name: "C".into(),
            start_at: Timestamp::ZERO,
            fault_prone: false,
            factory: Box::new(move |_| {
                Box::new(Checker::new(variant, WO, Quantity(QTY0), every, rounds))
                    as Box<dyn Machine>
            }),
        });
    }
    let mut initial_qty: BTreeMap<WorkOrderId, Quantity> = BTreeMap::new();
    let mut sql_rows = Vec::new();
    for wo in &plan.work_orders {
        initial_qty.insert(*wo, Quantity(QTY0));
        let row = Row::from([
            ("qty".to_string(), Value::Int(QTY0)),
            ("lease_epoch".to_string(), Value::Int(0)),
            ("lease_owner".to_string(), Value::Text(String::new())),
            ("lease_until".to_string(), Value::Int(0)),
        ]);
        sql_rows.push((WORK_ORDERS, wo.to_string(), row));
    }
    let spec = WorldSpec {
        local: None,
        upstream: Default::default(),
        processes,
        sql_rows,
        net: NetConfig::default(),
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(30 * 60 * 1000),
        horizon: None,
    };
    (spec, Capture::new(initial_qty))
}

/// A random workload: 2-3 workers, 1-2 work orders, 3-6 scans in the first 20 s, most of
/// them quick, one in four taking 5-25 s between lock and `$inc`.
fn random_plan(variant: Variant, docfix: DocFixPlans, rng: &mut SimRng) -> Plan {
    // Sizes a shrink may take below what a sweep draws: one worker, one scan.
    const WORKERS: [&str; 3] = ["W_A", "W_B", "W_C"];
    let workers = &WORKERS[..usize::try_from(rng.size(1, 2, 3)).unwrap_or(2)];
    let work_orders: Vec<WorkOrderId> = (1..=1 + rng.below(2)).map(WorkOrderId).collect();
    let n = rng.size(1, 3, 6);
    let scans = (1..=n)
        .map(|id| {
            let at = rng.below(20_000);
            let wo = work_orders[usize::try_from(rng.below(work_orders.len() as u64)).unwrap_or(0)];
            let qty = i64::try_from(rng.between(1, 9)).unwrap_or(1);
            let work = if rng.below(4) == 0 {
                rng.between(5_000, 25_000)
            } else {
                rng.between(50, 2_000)
            };
            scan(at, id, wo, qty, work)
        })
        .collect();
    Plan {
        variant,
        docfix,
        workers: workers.iter().map(|w| (*w, Timestamp::ZERO)).collect(),
        scans,
        work_orders,
        checker: None,
    }
}

const PLAN1_ONLY: DocFixPlans = DocFixPlans {
    plan1: true,
    plan2: None,
};
const PLANS_1_2: DocFixPlans = DocFixPlans {
    plan1: true,
    plan2: Some(Plan2::LITERAL),
};

fn build_with(
    variant: Variant,
    workload: Workload<'_>,
    docfix: DocFixPlans,
    scripted: fn(&str) -> Vec<PlannedScan>,
    workers: fn(&str) -> Vec<(&'static str, Timestamp)>,
) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Random(rng) => random_plan(variant, docfix, rng),
        Workload::Scripted(name) => Plan {
            variant,
            docfix,
            workers: workers(name),
            scans: scripted(name),
            work_orders: vec![WO],
            checker: None,
        },
    };
    world(plan)
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

// ---------------------------------------------------------------------------------------------
// R-002-01

fn scripts_01() -> Vec<Script> {
    vec![
        Script {
            name: "base",
            summary: "W_A locks wo-1 at 0 s and is cut off from Redis; its renewals fail \
                      unnoticed, the lock expires at 20 s, W_B locks wo-1 at 21 s, and W_A's \
                      $inc still lands at 22 s",
            steps: vec![
                Step::at(
                    10,
                    Action::Partition {
                        process: "W_A".into(),
                        store: StoreId::Redis,
                    },
                ),
                Step::at(
                    60_000,
                    Action::Heal {
                        process: "W_A".into(),
                        store: StoreId::Redis,
                    },
                ),
            ],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "pause-after-check",
            summary: "counter-schedule P: W_A's renewal at 15 s succeeds, it passes the \
                      lockValid check at 19 s and pauses 21 s before its $inc leaves; the lock \
                      expires at 35 s, W_B locks at 36 s, and W_A's $inc lands at 40 s",
            steps: vec![Step::on(
                "W_A",
                WoTag::EFFECT,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(21)),
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "delayed-write",
            summary: "counter-schedule D: W_A passes its checks and sends its $inc at 19 s while \
                      the lock is valid; the same network trouble delays the packet 20 s and \
                      cuts W_A off from Redis, so the lock expires at 35 s; W_B locks and \
                      writes, and W_A's delayed $inc lands after it",
            steps: vec![
                Step::on(
                    "W_A",
                    WoTag::EFFECT,
                    1,
                    OpEffect::Delay(Duration::from_secs(20)),
                ),
                Step::at(
                    19_500,
                    Action::Partition {
                        process: "W_A".into(),
                        store: StoreId::Redis,
                    },
                ),
                Step::at(
                    60_000,
                    Action::Heal {
                        process: "W_A".into(),
                        store: StoreId::Redis,
                    },
                ),
            ],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn build_01(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    build_with(variant, workload, PLAN1_ONLY, scans_01, workers_01)
}

fn scans_01(name: &str) -> Vec<PlannedScan> {
    match name {
        // W_A takes s-1 (22 s of work); s-2 on the same work order waits for W_B.
        "base" => vec![scan(0, 1, WO, 5, 22_000), scan(100, 2, WO, 3, 1_000)],
        // W_A takes s-1 (19 s of work); W_B takes s-2 once it starts at 30 s.
        _ => vec![scan(0, 1, WO, 5, 19_000), scan(25_000, 2, WO, 3, 1_000)],
    }
}

fn workers_01(name: &str) -> Vec<(&'static str, Timestamp)> {
    match name {
        "base" => vec![("W_A", at(0)), ("W_B", at(21_000))],
        _ => vec![("W_A", at(0)), ("W_B", at(30_000))],
    }
}

fn profile_01() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        pause: Ratio::per_mille(20),
        pause_len: (Duration::from_secs(1), Duration::from_secs(40)),
        delay: Ratio::per_mille(20),
        delay_len: (Duration::from_secs(1), Duration::from_secs(25)),
        partitions: 1,
        partition_len: (Duration::from_secs(5), Duration::from_secs(40)),
        failover_exempt: vec![WoTag::FETCH],
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-002-02

fn scripts_02() -> Vec<Script> {
    vec![Script {
        name: "failover",
        summary: "W_A's SET lock:wo-1 NX PX 20000 is acked by the primary, which fails over \
                  before replicating it; W_B's SET NX then succeeds and both apply $inc",
        steps: vec![Step::on(
            "W_A",
            WoTag::ACQUIRE_LEASE,
            1,
            OpEffect::FailoverAfterApply,
        )],
        expect: PerVariant::DOCFIX_INSUFFICIENT,
    }]
}

fn build_plans_1_2(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    build_with(
        variant,
        workload,
        PLANS_1_2,
        scans_plans_1_2,
        workers_plans_1_2,
    )
}

fn scans_plans_1_2(name: &str) -> Vec<PlannedScan> {
    match name {
        "failover" => vec![scan(0, 1, WO, 5, 4_000), scan(500, 2, WO, 3, 1_000)],
        _ => vec![scan(0, 1, WO, 5, 1_000)],
    }
}

fn workers_plans_1_2(name: &str) -> Vec<(&'static str, Timestamp)> {
    match name {
        "failover" | "stall" => vec![("W_A", at(0)), ("W_B", at(1_000))],
        _ => vec![("W_A", at(0))],
    }
}

fn profile_02() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        failover: Ratio::per_mille(30),
        failover_exempt: vec![WoTag::FETCH],
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-002-03

fn scripts_03() -> Vec<Script> {
    vec![
        Script {
            name: "client-retry",
            summary: "the answer to T's submission of s-1 is lost; T resubmits, two jobs carry \
                      the same scan, and the lock serialises them without deduplicating them",
            steps: vec![Step::on("T", WoTag::SUBMIT, 1, OpEffect::DropReply)],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "crash-after-effect",
            summary: "W_A applies $inc for s-1 and crashes before completing the job; Bull \
                      redelivers the stalled job and it is applied again",
            steps: vec![Step::on(
                "W_A",
                WoTag::EFFECT,
                1,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(2)),
                },
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn profile_03() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        drop_reply: Ratio::per_mille(30),
        crash: Ratio::per_mille(10),
        failover_exempt: vec![WoTag::FETCH],
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-002-04

fn scripts_04() -> Vec<Script> {
    let crash = |kind| {
        Step::on(
            "W_A",
            kind,
            1,
            OpEffect::CrashAfterApply {
                restart_after: Some(Duration::from_secs(2)),
            },
        )
    };
    vec![
        Script {
            name: "a-per-attempt-id",
            summary: "(a) attempt 1 applies $inc and logs rid1, then crashes; the redelivery \
                      builds rid2 from a new Date.now(), findOne(rid2) finds nothing, $inc again",
            steps: vec![crash(WoTag::RECORD)],
            // Buggy never logs, so the crash point never comes: it applies once.
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "b-check-then-act",
            summary: "(b) rid fixed at enqueue, no unique index: W_A's findOne finds nothing, \
                      W_A pauses past the job lock, W_B (the redelivery) finds nothing too; both \
                      apply $inc and both log",
            steps: vec![Step::on(
                "W_A",
                WoTag::EFFECT,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(40)),
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "c-effect-before-record",
            summary: "(c) rid fixed at enqueue, unique index: $inc, then a crash before \
                      create(log); the retry's findOne finds nothing and applies $inc again",
            steps: vec![crash(WoTag::EFFECT)],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "d-record-first",
            summary: "(d) rid fixed at enqueue, unique index, log written first: a crash between \
                      create(log) and $inc; the retry sees the log and skips: the scan is never \
                      applied",
            steps: vec![crash(WoTag::RECORD)],
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
    ]
}

fn build_04(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let reading = match &workload {
        Workload::Scripted("b-check-then-act") => Plan2 {
            request_id: RequestIdSource::AtEnqueue,
            order: LogOrder::EffectThenLog,
            unique_index: false,
        },
        Workload::Scripted("c-effect-before-record") => Plan2 {
            request_id: RequestIdSource::AtEnqueue,
            order: LogOrder::EffectThenLog,
            unique_index: true,
        },
        Workload::Scripted("d-record-first") => Plan2 {
            request_id: RequestIdSource::AtEnqueue,
            order: LogOrder::LogFirst,
            unique_index: true,
        },
        _ => Plan2::LITERAL,
    };
    let docfix = DocFixPlans {
        plan1: true,
        plan2: Some(reading),
    };
    build_with(
        variant,
        workload,
        docfix,
        |_| vec![scan(0, 1, WO, 5, 1_000)],
        |name| match name {
            "b-check-then-act" => vec![("W_A", at(0)), ("W_B", at(0))],
            _ => vec![("W_A", at(0))],
        },
    )
}

fn profile_04() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        crash: Ratio::per_mille(20),
        drop_reply: Ratio::per_mille(20),
        pause: Ratio::per_mille(10),
        pause_len: (Duration::from_secs(1), Duration::from_secs(40)),
        failover_exempt: vec![WoTag::FETCH],
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-002-05

fn scripts_05() -> Vec<Script> {
    vec![
        Script {
            name: "stall",
            summary: "W_A takes job J and pauses 35 s before its $inc leaves; Bull's 30 s job \
                      lock expires, the stalled job goes to W_B, which applies it; W_A resumes \
                      and applies it too",
            steps: vec![Step::on(
                "W_A",
                WoTag::EFFECT,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(35)),
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "outage",
            summary: "Redis restarts while T submits s-1; T never gets the answer and \
                      resubmits after the outage: two jobs for one scan",
            steps: vec![
                Step::on("T", WoTag::SUBMIT, 1, OpEffect::DropReply),
                Step::at(2, Action::RedisRestart),
            ],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn profile_05() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        pause: Ratio::per_mille(30),
        pause_len: (Duration::from_secs(20), Duration::from_secs(45)),
        partitions: 1,
        partition_len: (Duration::from_secs(20), Duration::from_secs(45)),
        failover_exempt: vec![WoTag::FETCH],
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-002-06

fn scripts_06() -> Vec<Script> {
    vec![Script {
        name: "scan-between-reads",
        summary: "the checker sums the log at 5 s; W_A commits scan s-2 (quantity and log \
                  together); the checker's read of qty, delayed 2 s, sees it: a false alarm, \
                  and auto-repair sets qty back, destroying s-2",
        steps: vec![Step::on(
            "C",
            WoTag::CHECKER_READ,
            2,
            OpEffect::Delay(Duration::from_secs(2)),
        )],
        expect: PerVariant::DOCFIX_INSUFFICIENT,
    }]
}

fn build_06(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Scripted(_) => Plan {
            variant,
            docfix: PLANS_1_2,
            workers: vec![("W_A", at(0))],
            scans: vec![scan(0, 1, WO, 5, 100), scan(5_100, 2, WO, 3, 100)],
            work_orders: vec![WO],
            checker: Some((variant, Duration::from_secs(5), 1)),
        },
        Workload::Random(rng) => {
            let n = rng.between(8, 12);
            let scans = (1..=n)
                .map(|id| {
                    let at = rng.below(10_000);
                    let qty = i64::try_from(rng.between(1, 9)).unwrap_or(1);
                    scan(at, id, WO, qty, rng.between(10, 300))
                })
                .collect();
            Plan {
                variant,
                docfix: PLANS_1_2,
                workers: vec![("W_A", at(0)), ("W_B", at(0))],
                scans,
                work_orders: vec![WO],
                checker: Some((variant, Duration::from_ms(500), 30)),
            }
        }
    };
    world(plan)
}

fn profile_06() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(30),
        delay: Ratio::per_mille(50),
        delay_len: (Duration::from_ms(5), Duration::from_ms(300)),
        failover_exempt: vec![WoTag::FETCH],
        ..FaultProfile::quiet()
    }
}
