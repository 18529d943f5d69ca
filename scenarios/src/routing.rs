//! Document 000's routing family: gateway instances choose upstream endpoints with
//! `core::route`'s router held in each instance's memory, over the scripted upstream
//! endpoints of the simulated world (the same local-memory and upstream machinery as the
//! proxy world of documents 001 and 003), and share per-endpoint outcome counters in Redis.
//!
//! - R-000-07: a session's affinity after failover retries: the fired-and-forgotten feedback
//!   on every attempt (A1, A4), the document's "only on final success, clear on failure"
//!   under concurrent requests of one session (C-1: A2, C-2: A3). Correct: the affinity
//!   record versioned by the request's start sequence, `set_if_newer` and the versioned
//!   compare-and-delete.
//! - R-000-15: the document's stateless uniform pick keeps a dead endpoint's share of the
//!   traffic; its weighted random still picks a DOWN endpoint; shared counters updated by
//!   read-modify-write lose updates. Correct: the hard gate with probes, then the bandit
//!   among healthy endpoints, `INCRBY` counters.

use racelab_core::route::affinity::oracle::{
    A1, A2, A3, A4, FAILOVER_RETRY, FOREIGN_CLEAR_REFUSED, STALE_WRITE_REFUSED, affinity,
};
use racelab_core::route::affinity::{AffinityConfig, AffinityRequest, AffinityTag};
use racelab_core::route::oracle::{
    DOWN_SKIPPED, ENDPOINT_DOWN, P1, P2, PROBE_RECOVERED, STATS_OVERLAPPED, counters_exact,
    down_endpoints_avoided,
};
use racelab_core::route::pool::{CounterWrite, DOWN_AFTER, PoolClient, PoolMemory, PoolProber};
use racelab_core::{Duration, EndpointId, Machine, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Run, SimRng, Step, Upstream, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
            id: "R-000-07",
            title: "Routing affinity updated on success and failure; after a failover retry it \
                    points to an undetermined upstream",
            document: "000",
            invariant: "A1: affinity U only from a request whose final attempt succeeded on U; \
                        A2: an earlier-started request never overwrites a later one's; A3: a \
                        failure on U never clears an affinity naming another upstream; A4: each \
                        attempt credited at most once, to the upstream that served it",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_07,
            profile: profile_07,
            seed_budget: 300,
            properties: PROPS_07,
            net: true,
            build: build_07,
            judge: judge_07,
        },
        Race {
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
        },
    ]
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
            name: "lost-counter-update",
            summary: "one healthy endpoint; instances G0 and G1 each finish a request at the \
                      same instant: both GET route:ok:E1 (nil), both SET it to 1, one outcome \
                      lost (P2); INCRBY counts both",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
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

// ---------------------------------------------------------------------------------------------
// R-000-07

const PROPS_07: &[Property] = &[
    A1,
    A2,
    A3,
    A4,
    STALE_WRITE_REFUSED,
    FOREIGN_CLEAR_REFUSED,
    FAILOVER_RETRY,
];

/// The session every request of an R-000-07 world belongs to.
const SESSION: &str = "S";

/// One request of a session: its start time (its start sequence is its rank by start),
/// first choice (1 or 2) and stream length.
struct SessionRequest {
    start_ms: u64,
    first: u32,
    stream_ms: u64,
}

fn affinity_world(
    variant: Variant,
    mut requests: Vec<SessionRequest>,
    upstream: Upstream,
) -> (WorldSpec, Capture) {
    requests.sort_by_key(|r| r.start_ms);
    let processes = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let cfg = AffinityConfig {
                variant,
                session: SESSION.to_string(),
                seq: i as u64 + 1,
                first_choice: EndpointId(r.first),
                stream: Duration::from_ms(r.stream_ms),
            };
            process(format!("R{}", i + 1), 0, r.start_ms, move |inc| {
                Box::new(AffinityRequest::new(cfg.clone(), inc))
            })
        })
        .collect();
    let spec = WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: NetConfig {
            upstream_timeout: Duration::from_secs(2),
            redis_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(20),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(120_000),
        horizon: None,
        local: None,
        upstream,
    };
    (spec, Capture::none())
}

fn window(upstream: &mut Upstream, endpoint: u32, from_ms: u64, to_ms: u64, slow_ms: u64) {
    let script = upstream.endpoints.entry(EndpointId(endpoint)).or_default();
    let (from, to) = (Timestamp::from_ms(from_ms), Timestamp::from_ms(to_ms));
    script.down.push((from, to));
    if slow_ms > 0 {
        script.slow.push((from, to, Duration::from_ms(slow_ms)));
    }
}

fn req(start_ms: u64, first: u32, stream_ms: u64) -> SessionRequest {
    SessionRequest {
        start_ms,
        first,
        stream_ms,
    }
}

fn build_07(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let mut upstream = Upstream::default();
    let requests = match workload {
        // R1's first attempt on E1 fails (E1 down), its retry on E2 succeeds.
        Workload::Scripted("late-feedback") => {
            window(&mut upstream, 1, 0, 1_000, 0);
            vec![req(0, 1, 50)]
        }
        // R1 streams from E1 for 1 s; R2 starts at 100 ms, E1 is down from 50 ms: R2 fails
        // on E1 and succeeds on E2 before R1 ends.
        Workload::Scripted("C-1") => {
            window(&mut upstream, 1, 50, 2_000, 0);
            vec![req(0, 1, 1_000), req(100, 1, 50)]
        }
        // R1 starts on E1, which answers 503 only after 500 ms; R2 starts at 100 ms on E2
        // and sets the affinity to E2 before R1's failure arrives.
        Workload::Scripted(_) => {
            window(&mut upstream, 1, 0, 50, 500);
            vec![req(0, 1, 50), req(100, 2, 50)]
        }
        Workload::Random(rng) => random_07(rng, &mut upstream),
    };
    affinity_world(variant, requests, upstream)
}

/// Two endpoints, each down for a while in most seeds (its 503s sometimes slow); 2-4
/// requests of one session in the first 1.5 s, some streaming for up to 1.2 s.
fn random_07(rng: &mut SimRng, upstream: &mut Upstream) -> Vec<SessionRequest> {
    for e in 1..=2 {
        if rng.below(4) != 0 {
            let from = rng.below(1_500);
            let to = from + rng.between(100, 1_500);
            let slow = if rng.below(2) == 0 {
                rng.between(100, 800)
            } else {
                0
            };
            window(upstream, e, from, to, slow);
        }
    }
    (0..rng.between(2, 4))
        .map(|_| {
            let stream = if rng.below(3) == 0 {
                rng.between(300, 1_200)
            } else {
                rng.between(20, 200)
            };
            req(rng.below(1_500), 1 + rng.below(2) as u32, stream)
        })
        .collect()
}

fn judge_07(run: &Run, _: &Capture) -> Verdict {
    affinity(&run.history)
}

fn scripts_07() -> Vec<Script> {
    vec![
        Script {
            name: "late-feedback",
            summary: "R1's attempt on E1 gets 503; its fired-and-forgotten feedback (affinity \
                      E1, credit to ctx.upstream, already E2) is delayed past the retry's \
                      success on E2 and lands last: the affinity names the failing E1 (A1)",
            steps: vec![Step::on(
                "R1",
                AffinityTag::SET,
                1,
                OpEffect::Delay(Duration::from_ms(500)),
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "C-1",
            summary: "R1 starts on E1 (a 1 s stream); R2 starts on E1 at 100 ms, fails, clears \
                      the affinity, retries on E2 and sets E2; R1 succeeds at ~1 s and sets \
                      E1 over the newer request's E2 (A2)",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "C-2",
            summary: "R1 starts on E1, whose 503 takes 500 ms; R2 starts at 100 ms on E2 and \
                      sets E2; R1's failure on E1 arrives and clears the affinity that names \
                      E2 (A3)",
            steps: Vec::new(),
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

/// Latencies 1-30 ms; some operations delayed (a late feedback write), some replies lost,
/// some Redis failovers after a write.
fn profile_07() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(5),
        latency: (Duration::from_ms(1), Duration::from_ms(30)),
        delay: Ratio::per_mille(40),
        delay_len: (Duration::from_ms(100), Duration::from_ms(1_500)),
        drop_reply: Ratio::per_mille(10),
        failover: Ratio::per_mille(10),
        ..FaultProfile::quiet()
    }
}
