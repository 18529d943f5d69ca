//! Document 000's circuit breaker across gateway instances (R-000-10): three instances `G1`,
//! `G2`, `G3` (one host each, their breakers in process memory) send requests to a failing
//! upstream U (`E1`, down in scripted windows) and a healthy U' (`E2`), keeping the breaker's
//! shared state in Redis (`core::breaker`).
//!
//! Buggy decides on a stale in-process copy when Redis does not answer and updates its state
//! and counter by `GET`/`SET`; DocFix (the document's fix) rejects every request when the
//! state read fails; Correct runs a local breaker authoritative for its own traffic, with the
//! shared OPEN as advice, an atomic windowed counter, a probe token and the "OPEN wins"
//! merge. The random sweep partitions instances from Redis, fails Redis over, restarts it,
//! delays and loses Redis replies, and crashes instances.

use racelab_core::breaker::{
    BREAKER_OPENED, BreakerInstance, C1, C2, C3, C4, FORCED_OPEN, OPEN_WINS_MERGE,
    OPENED_WHILE_REDIS_DOWN, PlannedRequest, SERVED_THROUGH_OUTAGE, TOKEN_REFUSED, counter_exact,
    coverage, no_rejection_without_failure, no_traffic_after_open, one_probe_per_cooldown,
};
use racelab_core::{Duration, EndpointId, Property, StoreId, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    Action, FaultProfile, NetConfig, ProcessSpec, Ratio, Run, SimRng, Step, Target, Upstream,
    WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-000-10",
        title: "Circuit-breaker state: Redis vs in-process fallback; instances disagree",
        document: "000",
        invariant: "C1: once U's breaker is OPEN, each instance starts at most THRESHOLD more \
                    non-probe requests to U until U answers again; C2: one half-open probe per \
                    cool-down cluster-wide; C3: no rejection of an upstream with no failure \
                    within 4 s; C4: the shared failure counter loses no update",
        docfix_verdict: "insufficient",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts,
        profile,
        seed_budget: 200,
        properties: PROPS,
        net: true,
        build,
        judge,
    }]
}

const PROPS: &[Property] = &[
    C1,
    C2,
    C3,
    C4,
    BREAKER_OPENED,
    OPENED_WHILE_REDIS_DOWN,
    TOKEN_REFUSED,
    OPEN_WINS_MERGE,
    FORCED_OPEN,
    SERVED_THROUGH_OUTAGE,
];

/// The failing upstream U.
const U: EndpointId = EndpointId(1);
/// The healthy upstream U'.
const U2: EndpointId = EndpointId(2);
/// Longer than any run.
const FOREVER: Timestamp = Timestamp::from_ms(3_600_000);
/// The instances.
const INSTANCES: u32 = 3;

/// A breaker world: each instance's requests, and U's down windows.
struct Plan {
    variant: Variant,
    requests: Vec<Vec<PlannedRequest>>,
    upstream: Upstream,
}

impl Plan {
    fn new(variant: Variant) -> Plan {
        Plan {
            variant,
            requests: vec![Vec::new(); INSTANCES as usize],
            upstream: Upstream::default(),
        }
    }

    fn down(&mut self, from_ms: u64, to: Timestamp) {
        self.upstream
            .endpoints
            .entry(U)
            .or_default()
            .down
            .push((Timestamp::from_ms(from_ms), to));
    }

    /// Instance `instance` (1-based) gets a request to `endpoint` at `at_ms`.
    fn request(&mut self, instance: u32, at_ms: u64, endpoint: EndpointId) {
        self.requests[(instance - 1) as usize].push(PlannedRequest {
            at: Timestamp::from_ms(at_ms),
            endpoint,
        });
    }

    /// Requests every `every_ms` from `from_ms` to `to_ms` (excluded), to `pick(i)`.
    fn every(
        &mut self,
        instance: u32,
        from_ms: u64,
        to_ms: u64,
        every_ms: u64,
        pick: impl Fn(u64) -> EndpointId,
    ) {
        let mut i = 0;
        let mut at = from_ms;
        while at < to_ms {
            self.request(instance, at, pick(i));
            i += 1;
            at += every_ms;
        }
    }
}

fn world(plan: Plan) -> (WorldSpec, Capture) {
    let variant = plan.variant;
    let processes = plan
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, requests)| {
            let instance = i as u32 + 1;
            ProcessSpec {
                name: format!("G{instance}"),
                start_at: Timestamp::ZERO,
                fault_prone: true,
                factory: Box::new(move |incarnation| {
                    Box::new(BreakerInstance::new(
                        variant,
                        instance,
                        incarnation,
                        requests.clone(),
                    ))
                }),
                host: i as u32,
            }
        })
        .collect();
    let spec = WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: NetConfig {
            // A breaker read that takes longer than this failed (the client's timeout).
            redis_timeout: Duration::from_ms(200),
            upstream_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(20),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(120_000),
        horizon: None,
        local: None,
        upstream: plan.upstream,
    };
    (spec, Capture::none())
}

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Scripted(name) => scripted(variant, name),
        Workload::Random(rng) => random(variant, rng),
    };
    world(plan)
}

fn alternate(first: EndpointId, second: EndpointId) -> impl Fn(u64) -> EndpointId {
    move |i| if i % 2 == 0 { first } else { second }
}

fn scripted(variant: Variant, name: &str) -> Plan {
    let mut plan = Plan::new(variant);
    match name {
        "split-brain" => {
            plan.down(0, FOREVER);
            plan.every(1, 0, 3_000, 100, alternate(U, U2));
            plan.every(2, 0, 1_000, 100, |_| U);
            plan.every(3, 0, 1_000, 100, alternate(U, U2));
        }
        "lost-update" => {
            plan.down(0, FOREVER);
            plan.request(1, 0, U);
            plan.request(2, 0, U);
        }
        "half-open-stampede" => {
            plan.down(0, FOREVER);
            plan.every(1, 0, 30, 10, |_| U);
            plan.request(2, 500, U);
            plan.request(3, 500, U);
            for instance in 1..=INSTANCES {
                plan.request(instance, 1_500, U);
            }
        }
        "redis-failover-15s" => {
            plan.every(1, 0, 18_000, 500, alternate(U, U2));
            plan.every(2, 0, 18_000, 500, alternate(U2, U));
            plan.every(3, 0, 18_000, 500, alternate(U, U2));
        }
        _ => {
            // no-fault
            plan.down(0, Timestamp::from_ms(2_000));
            plan.every(1, 0, 4_000, 100, |_| U);
            plan.every(2, 0, 4_000, 200, |_| U2);
            plan.every(3, 0, 4_000, 200, |_| U2);
        }
    }
    plan
}

/// U down for 1.5-6 s from some time in the first 1.5 s (healthy in one seed in eight);
/// each instance 8-16 requests, 50-600 ms apart, each to U or U' at even odds.
fn random(variant: Variant, rng: &mut SimRng) -> Plan {
    let mut plan = Plan::new(variant);
    if rng.below(8) != 0 {
        let from = rng.below(1_500);
        let to = from + rng.between(1_500, 6_000);
        plan.down(from, Timestamp::from_ms(to));
    }
    for instance in 1..=INSTANCES {
        let mut at = rng.below(300);
        for _ in 0..rng.between(8, 16) {
            let endpoint = if rng.below(2) == 0 { U } else { U2 };
            plan.request(instance, at, endpoint);
            at += rng.between(50, 600);
        }
    }
    plan
}

fn judge(run: &Run, _: &Capture) -> Verdict {
    let history = &run.history;
    no_traffic_after_open(history)
        .merge(one_probe_per_cooldown(history))
        .merge(no_rejection_without_failure(history))
        .merge(counter_exact(history))
        .merge(coverage(history))
}

fn partition(at_ms: u64, process: &str) -> Step {
    Step::at(
        at_ms,
        Action::Partition {
            process: process.to_string(),
            store: StoreId::Redis,
        },
    )
}

fn heal(at_ms: u64, process: &str) -> Step {
    Step::at(
        at_ms,
        Action::Heal {
            process: process.to_string(),
            store: StoreId::Redis,
        },
    )
}

fn scripts() -> Vec<Script> {
    let mut outage = vec![Step::at(1_000, Action::Failover)];
    for g in ["G1", "G2", "G3"] {
        outage.push(partition(1_000, g));
        outage.push(heal(16_000, g));
    }
    vec![
        Script {
            name: "lost-update",
            summary: "U fails; G1 and G2 each see one failure at the same instant: both GET \
                      cb:E1:fails (nil), both SET it to 1, one failure lost and the breaker opens \
                      late (C4); incr_window counts both",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "split-brain",
            summary: "U fails from the start; G1 is partitioned from Redis from 0 to 5 s while G2 \
                      and G3 open U's breaker there: the document's G1 keeps its stale CLOSED \
                      and sends every request to U (C1); the fail-closed fix rejects G1's \
                      requests to the healthy U' (C3); the local breaker opens after its own \
                      3 failures",
            steps: vec![partition(0, "G1"), heal(5_000, "G1")],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "half-open-stampede",
            summary: "G1 opens U's breaker after 3 failures; at 1500 ms, past the cool-down, all \
                      three instances get a request to U: each reads OPEN (or HALF_OPEN) and sends \
                      a trial request (C2); the probe token lets one through and refuses two",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "redis-failover-15s",
            summary: "both upstreams healthy; Redis fails over at 1 s and no instance reaches it \
                      until 16 s: the fail-closed fix rejects every request for 15 s (C3); the \
                      stale copy and the local breaker both serve",
            steps: outage,
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "no-fault",
            summary: "U fails for the first 2 s and only G1 calls it; G2 and G3 call U': every \
                      variant opens, probes once per cool-down and closes again",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

/// Latencies 1-20 ms; two partitions of an instance from a store (Redis or, harmlessly, SQL)
/// for 0.5-4 s; Redis replies delayed or lost, failovers after Redis writes, one Redis
/// restart; a few instance crashes.
fn profile() -> FaultProfile {
    let redis = Target {
        stores: vec![StoreId::Redis],
        ..Target::ANY
    };
    FaultProfile {
        window: Duration::from_secs(6),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        partitions: 2,
        partition_len: (Duration::from_ms(500), Duration::from_ms(4_000)),
        delay: Ratio::per_mille(20),
        delay_len: (Duration::from_ms(100), Duration::from_ms(1_500)),
        delay_on: redis.clone(),
        drop_reply: Ratio::per_mille(20),
        drop_reply_on: redis.clone(),
        failover: Ratio::per_mille(20),
        failover_on: redis,
        redis_restarts: 1,
        crash: Ratio::per_mille(5),
        restart_after: (Duration::from_ms(100), Duration::from_ms(1_000)),
        ..FaultProfile::quiet()
    }
}
