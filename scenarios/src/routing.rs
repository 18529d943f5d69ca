//! Document 000's routing family: gateway instances choose upstream endpoints with
//! `core::route`'s router held in each instance's memory, over the scripted upstream
//! endpoints of the simulated world (the same local-memory and upstream machinery as the
//! proxy world of documents 001 and 003), and share per-endpoint outcome counters in Redis.
//!
//! - R-000-15: the document's stateless uniform pick keeps a dead endpoint's share of the
//!   traffic; its weighted random still picks a DOWN endpoint; shared counters updated by
//!   read-modify-write lose updates. Correct: the hard gate with probes, then the bandit
//!   among healthy endpoints, `INCRBY` counters.

use racelab_core::route::oracle::{
    DOWN_SKIPPED, ENDPOINT_DOWN, P1, P2, PROBE_RECOVERED, STATS_OVERLAPPED, counters_exact,
    down_endpoints_avoided,
};
use racelab_core::route::pool::{CounterWrite, DOWN_AFTER, PoolClient, PoolMemory, PoolProber};
use racelab_core::{Duration, EndpointId, Machine, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    FaultProfile, NetConfig, ProcessSpec, Ratio, Run, SimRng, Upstream, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-000-15",
        title: "Proxy-pool endpoint selection is stateless random",
        document: "000",
        invariant: "P1: no request to an endpoint that is DOWN (k consecutive recorded failures) \
                    except its probes; P2: shared per-endpoint counters equal the updates \
                    accepted (no lost update)",
        docfix_verdict: "partially",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts: scripts_15,
        profile: profile_15,
        seed_budget: 200,
        properties: PROPS_15,
        net: false,
        build: build_15,
        judge: judge_15,
    }]
}

const PROPS_15: &[Property] = &[
    P1,
    P2,
    ENDPOINT_DOWN,
    DOWN_SKIPPED,
    PROBE_RECOVERED,
    STATS_OVERLAPPED,
];

/// How long a dead endpoint stays dead: longer than any run.
const FOREVER: Timestamp = Timestamp::from_ms(3_600_000);

/// The prober's round interval (the router's probe interval).
const PROBE_EVERY: Duration = Duration::from_ms(200);

/// One request task of the plan.
struct Client {
    instance: u32,
    start_ms: u64,
    requests: u32,
    stream_ms: u64,
}

/// A routing world: gateway instances (hosts 0..instances), their request tasks, and their
/// probers where the protocol has them.
struct Plan {
    variant: Variant,
    endpoints: u32,
    instances: u32,
    upstream: Upstream,
    clients: Vec<Client>,
    probe_rounds: u32,
}

impl Plan {
    fn new(variant: Variant, endpoints: u32, instances: u32) -> Plan {
        Plan {
            variant,
            endpoints,
            instances,
            upstream: Upstream::default(),
            clients: Vec::new(),
            probe_rounds: 15,
        }
    }

    fn down(&mut self, endpoint: u32, from_ms: u64, to: Timestamp) {
        self.upstream
            .endpoints
            .entry(EndpointId(endpoint))
            .or_default()
            .down
            .push((Timestamp::from_ms(from_ms), to));
    }

    fn client(&mut self, instance: u32, start_ms: u64, requests: u32, stream_ms: u64) {
        self.clients.push(Client {
            instance,
            start_ms,
            requests,
            stream_ms,
        });
    }
}

fn process(
    name: String,
    host: u32,
    start_ms: u64,
    f: impl Fn(u32) -> Box<dyn Machine> + 'static,
) -> ProcessSpec {
    ProcessSpec {
        name,
        start_at: Timestamp::from_ms(start_ms),
        fault_prone: true,
        factory: Box::new(f),
        host,
    }
}

fn world(plan: Plan) -> (WorldSpec, Capture) {
    let write = CounterWrite::of(plan.variant);
    let mut processes = Vec::new();
    for (i, c) in plan.clients.iter().enumerate() {
        let (instance, requests, stream) = (c.instance, c.requests, Duration::from_ms(c.stream_ms));
        processes.push(process(
            format!("G{}R{}", c.instance, i + 1),
            c.instance,
            c.start_ms,
            move |_| Box::new(PoolClient::new(instance, write, requests, stream)),
        ));
    }
    if plan.variant == Variant::Correct {
        for instance in 0..plan.instances {
            let rounds = plan.probe_rounds;
            processes.push(process(format!("G{instance}P"), instance, 0, move |_| {
                Box::new(PoolProber::new(instance, PROBE_EVERY, rounds))
            }));
        }
    }
    let endpoints: Vec<EndpointId> = (1..=plan.endpoints).map(EndpointId).collect();
    let memory = PoolMemory::new(plan.variant, &endpoints).ok();
    let spec = WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: NetConfig {
            // The client's timeout: an upstream that does not answer within 1 s failed.
            upstream_timeout: Duration::from_secs(1),
            redis_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(20),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(120_000),
        horizon: None,
        local: memory.map(|m| Box::new(m) as _),
        upstream: plan.upstream,
    };
    (spec, Capture::none())
}

// ---------------------------------------------------------------------------------------------
// R-000-15

fn build_15(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Scripted(name) => scripted_15(variant, name),
        Workload::Random(rng) => random_15(variant, rng),
    };
    world(plan)
}

fn scripted_15(variant: Variant, name: &str) -> Plan {
    match name {
        "dead-endpoint" => {
            let mut plan = Plan::new(variant, 3, 1);
            plan.down(3, 0, FOREVER);
            plan.client(0, 0, 16, 50);
            plan
        }
        "lost-counter-update" => {
            let mut plan = Plan::new(variant, 1, 2);
            plan.client(0, 0, 1, 50);
            plan.client(1, 0, 1, 50);
            plan
        }
        _ => {
            // all-healthy
            let mut plan = Plan::new(variant, 3, 1);
            plan.client(0, 0, 10, 50);
            plan
        }
    }
}

/// Three endpoints, one dead for the whole run in three seeds of four, the others down for a
/// while in half the seeds; two instances with one or two request tasks each, 3-6 requests
/// per task in the first half second.
fn random_15(variant: Variant, rng: &mut SimRng) -> Plan {
    let mut plan = Plan::new(variant, 3, 2);
    let dead = rng.below(4) as u32 + 1;
    for e in 1..=3 {
        if e == dead {
            plan.down(e, 0, FOREVER);
        } else if rng.below(2) == 0 {
            let from = rng.below(1_500);
            let to = from + rng.between(300, 1_500);
            plan.down(e, from, Timestamp::from_ms(to));
        }
    }
    for instance in 0..2 {
        for _ in 0..rng.between(1, 2) {
            let (start, requests, stream) = (
                rng.below(500),
                rng.between(3, 6) as u32,
                rng.between(20, 200),
            );
            plan.client(instance, start, requests, stream);
        }
    }
    plan
}

fn judge_15(run: &Run, _: &Capture) -> Verdict {
    down_endpoints_avoided(&run.history, DOWN_AFTER).merge(counters_exact(&run.history))
}

fn scripts_15() -> Vec<Script> {
    vec![
        Script {
            name: "dead-endpoint",
            summary: "E3 answers 503 to every call from the start; one instance sends 16 \
                      requests one after the other: the uniform pick keeps sending E3 its \
                      third after 2 consecutive failures, the weighted random still picks it \
                      (P1); the gate holds it back and only probes reach it",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "lost-counter-update",
            summary: "one healthy endpoint; instances G0 and G1 each finish a request at the \
                      same instant: both GET route:ok:E1 (nil), both SET it to 1, one outcome \
                      lost (P2); INCRBY counts both",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "all-healthy",
            summary: "every endpoint answers; one instance sends 10 requests one after the \
                      other: nothing goes DOWN and every variant holds",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

/// Latencies 1-40 ms; some calls delayed past the 1 s client timeout, some replies lost,
/// some Redis failovers after a counter write.
fn profile_15() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(5),
        latency: (Duration::from_ms(1), Duration::from_ms(40)),
        delay: Ratio::per_mille(20),
        delay_len: (Duration::from_ms(200), Duration::from_ms(2_000)),
        drop_reply: Ratio::per_mille(10),
        failover: Ratio::per_mille(10),
        ..FaultProfile::quiet()
    }
}
