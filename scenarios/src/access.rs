//! Document 000's access races.
//!
//! R-000-12 (the revocation blacklist): two instances check one API key for their requests
//! (each with a final probe at 8 s, after every fault), the admin on instance 0 revokes it
//! and may un-revoke it.
//!
//! R-000-11 (permission-cache invalidation): two or three gateway instances (hosts), each an
//! instance process serving its requests with an in-process cache (the host's memory) and,
//! for DocFix and Correct, a subscriber on the invalidation channel; an admin on instance 0
//! changes a role's permissions. The role graph: `u0` holds `base`, `u1` holds `admin`,
//! which includes `base`, so a change to `base` affects `u1` indirectly.

use std::collections::{BTreeMap, BTreeSet};

use racelab_core::access::{
    ACCESS_API_KEYS, B1, B2, DB_DECIDED_AFTER_REDIS_FAILED, KeyAction, KeyAdmin, KeyInstance,
    KeyMemory, KeyRequest, KeyTag, REJECTED_FROM_CACHE, REVOCATION_LOST, REVOKE_DELTA, revocation,
    revocation_coverage,
};
use racelab_core::access::{
    ACCESS_EPOCH, CACHED_ACROSS_CHANGE, DELTA, EPOCH_ROW, I_PERM, PermAdmin, PermCache,
    PermInstance, PermSubscriber, PermTag, PlannedRequest, RECONNECT_FORGETS_EPOCH, RoleChange,
    RoleGraph, STALE_FILL_DEAD_KEY, i_perm, perm_coverage,
};
use racelab_core::{Duration, Machine, Property, Row, Timestamp, Value, Variant, Verdict};
use racelab_sim::explore::{
    Action, FaultProfile, NetConfig, ProcessSpec, Ratio, Run, SimRng, Step, Target, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![race_11(), race_12()]
}

fn race_11() -> Race {
    Race {
        id: "R-000-11",
        title: "Permission-cache invalidation is incomplete: only the edited user is cleared, \
                stale fills, pub/sub at most once",
        document: "000",
        invariant: "I-PERM: no request starting more than Δ = 500 ms after a role change \
                    commits is decided on the permissions from before it, for any affected user",
        docfix_verdict: "partially",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts: scripts_11,
        profile: profile_11,
        seed_budget: 200,
        properties: PROPS_11,
        net: true,
        build: build_11,
        judge: judge_11,
    }
}

const PROPS_11: &[Property] = &[
    I_PERM,
    CACHED_ACROSS_CHANGE,
    STALE_FILL_DEAD_KEY,
    RECONNECT_FORGETS_EPOCH,
];

const PERMS: [&str; 3] = ["read", "write", "admin"];

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `u0` holds `base` {read, write}; `u1` holds `admin` {admin}, which includes `base`.
fn role_graph() -> RoleGraph {
    RoleGraph {
        users: BTreeMap::from([
            ("u0".to_string(), set(&["base"])),
            ("u1".to_string(), set(&["admin"])),
        ]),
        roles: BTreeMap::from([
            (
                "base".to_string(),
                (set(&["read", "write"]), BTreeSet::new()),
            ),
            ("admin".to_string(), (set(&["admin"]), set(&["base"]))),
        ]),
    }
}

/// The admin takes `write` out of `base`, editing `u0`.
fn revoke_write() -> RoleChange {
    RoleChange {
        role: "base".into(),
        perms: set(&["read"]),
        edited_user: "u0".into(),
    }
}

/// A workload: instances, requests per instance, when the admin starts and its changes,
/// and per instance scripted crashes of its subscriber.
struct Plan11 {
    instances: u32,
    requests: Vec<(u32, PlannedRequest)>,
    admin_at: u64,
    changes: Vec<RoleChange>,
}

fn request(request: u32, at: u64, user: &str, perm: &str) -> PlannedRequest {
    PlannedRequest {
        at: Timestamp::from_ms(at),
        request,
        user: user.into(),
        perm: perm.into(),
    }
}

fn scripted_11(name: &str) -> Plan11 {
    let requests = match name {
        // u1 (holding base through admin) is cached on instance 1, then asks again.
        "indirect-holder-not-cleared" | "subscriber-disconnect" => vec![
            (1, request(1, 100, "u1", "write")),
            (1, request(2, 1_500, "u1", "write")),
        ],
        // Q1 reads the old graph, is held past the change, fills; Q2 hits the fill.
        "invalidate-then-stale-fill" => vec![
            (0, request(1, 500, "u0", "read")),
            (0, request(2, 1_800, "u0", "write")),
        ],
        _ => vec![
            (0, request(1, 100, "u0", "write")),
            (1, request(2, 200, "u1", "admin")),
            (1, request(3, 900, "u1", "write")),
        ],
    };
    let changes = match name {
        "no-change" => Vec::new(),
        _ => vec![revoke_write()],
    };
    let admin_at = if name == "invalidate-then-stale-fill" {
        600
    } else {
        500
    };
    Plan11 {
        instances: 2,
        requests,
        admin_at,
        changes,
    }
}

/// A role graph drawn from the seed, in the manner of a property test's generator: 2 to 5
/// roles `r0..`, each with a random subset of the permissions and random included roles
/// (cycles and diamonds allowed: the graph is followed at most `ROLE_DEPTH_MAX` deep), and 2
/// to 4 users `u0..` holding one or more roles directly. Most users then hold some roles only
/// through others, the case the document's clearing misses.
fn random_graph(rng: &mut SimRng) -> RoleGraph {
    let roles = rng.between(2, 5) as usize;
    let name = |i: usize| format!("r{i}");
    let mut graph = RoleGraph::default();
    for i in 0..roles {
        let perms = PERMS
            .iter()
            .filter(|_| rng.below(2) == 0)
            .map(|p| p.to_string())
            .collect();
        let includes = (0..roles)
            .filter(|j| *j != i && rng.below(3) == 0)
            .map(name)
            .collect();
        graph.roles.insert(name(i), (perms, includes));
    }
    for u in 0..rng.between(2, 4) as usize {
        let mut held: BTreeSet<String> =
            (0..roles).filter(|_| rng.below(3) == 0).map(name).collect();
        if held.is_empty() {
            held.insert(name(rng.below(roles as u64) as usize));
        }
        graph.users.insert(format!("u{u}"), held);
    }
    graph
}

fn random_11(rng: &mut SimRng) -> (RoleGraph, Plan11) {
    let graph = random_graph(rng);
    let users: Vec<String> = graph.users.keys().cloned().collect();
    let roles: Vec<String> = graph.roles.keys().cloned().collect();
    let changes: Vec<RoleChange> = (0..rng.between(1, 2))
        .map(|_| {
            let role = roles[rng.below(roles.len() as u64) as usize].clone();
            let perms = PERMS
                .iter()
                .filter(|_| rng.below(2) == 0)
                .map(|p| p.to_string())
                .collect();
            // The admin edits a user holding the role directly (the document's page), if any.
            let edited_user = graph
                .users
                .iter()
                .find(|(_, held)| held.contains(&role))
                .map_or_else(|| users[0].clone(), |(u, _)| u.clone());
            RoleChange {
                role,
                perms,
                edited_user,
            }
        })
        .collect();
    // The users whose effective permissions the changes alter: requests ask for them two
    // times in three, as traffic from the users an admin is editing the roles of would.
    let mut after = graph.clone();
    for change in &changes {
        if let Some((perms, _)) = after.roles.get_mut(&change.role) {
            perms.clone_from(&change.perms);
        }
    }
    let affected: Vec<&String> = users
        .iter()
        .filter(|u| graph.effective(u) != after.effective(u))
        .collect();
    let instances = rng.between(2, 3) as u32;
    let n = rng.between(5, 9) as u32;
    let requests = (1..=n)
        .map(|i| {
            let instance = rng.below(u64::from(instances)) as u32;
            let at = rng.below(3_000);
            let user = if !affected.is_empty() && rng.below(3) > 0 {
                affected[rng.below(affected.len() as u64) as usize]
            } else {
                &users[rng.below(users.len() as u64) as usize]
            };
            let perm = PERMS[rng.below(3) as usize];
            (instance, request(i, at, user, perm))
        })
        .collect();
    let plan = Plan11 {
        instances,
        requests,
        admin_at: rng.between(200, 1_500),
        changes,
    };
    (graph, plan)
}

fn build_11(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (graph, plan) = match workload {
        Workload::Scripted(name) => (role_graph(), scripted_11(name)),
        Workload::Random(rng) => random_11(rng),
    };
    let last = plan
        .requests
        .iter()
        .map(|(_, r)| r.at)
        .max()
        .unwrap_or(Timestamp::ZERO);
    let mut processes = Vec::new();
    for instance in 0..plan.instances {
        let mine: Vec<PlannedRequest> = plan
            .requests
            .iter()
            .filter(|(i, _)| *i == instance)
            .map(|(_, r)| r.clone())
            .collect();
        processes.push(ProcessSpec {
            host: instance,
            name: format!("G{instance}"),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| {
                Box::new(PermInstance::new(variant, instance, mine.clone())) as Box<dyn Machine>
            }),
        });
        let until = last + Duration::from_secs(1);
        processes.push(ProcessSpec {
            host: instance,
            name: format!("S{instance}"),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| {
                Box::new(PermSubscriber::new(variant, until)) as Box<dyn Machine>
            }),
        });
    }
    let changes = plan.changes.clone();
    processes.push(ProcessSpec {
        host: 0,
        name: "A".into(),
        start_at: Timestamp::from_ms(plan.admin_at),
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(PermAdmin::new(variant, changes.clone())) as Box<dyn Machine>
        }),
    });
    let mut sql_rows = graph.rows();
    sql_rows.push((
        ACCESS_EPOCH,
        EPOCH_ROW.into(),
        Row::from([("epoch".to_string(), Value::Int(0))]),
    ));
    let spec = WorldSpec {
        processes,
        sql_rows,
        net: NetConfig {
            scripted_latency: Duration::from_ms(5),
            redis_timeout: Duration::from_secs(1),
            sql_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(10),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(120_000),
        horizon: None,
        local: Some(Box::new(PermCache::new())),
        upstream: Default::default(),
    };
    (spec, Capture::new((graph, plan.changes)))
}

fn judge_11(run: &Run, capture: &Capture) -> Verdict {
    let Some((graph, changes)) = capture.get::<(RoleGraph, Vec<RoleChange>)>() else {
        return Verdict::default();
    };
    let mut verdict = i_perm(&run.history, graph, changes, DELTA);
    perm_coverage(&run.history, DELTA, &mut verdict);
    verdict
}

fn scripts_11() -> Vec<Script> {
    vec![
        Script {
            name: "indirect-holder-not-cleared",
            summary: "u1 (base through admin) is cached on G1 at 100 ms; the admin takes write \
                      out of base at 500 ms and clears only u0; u1 asks for write at 1500 ms",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "invalidate-then-stale-fill",
            summary: "Q1 (u0 on G0) misses at 500 ms and reads {read, write}; G0 stalls before \
                      the fill; the admin revokes write at 600 ms and invalidates; Q1 fills the \
                      old set at 1117 ms; Q2 (u0, write) hits it at 1800 ms",
            steps: vec![Step::at(
                517,
                Action::Pause {
                    process: "G0".into(),
                    duration: Duration::from_ms(600),
                },
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "subscriber-disconnect",
            summary: "G1's subscriber drops at 400 ms (crash, back at 900 ms); the admin revokes \
                      at 500 ms and the PUBLISH reaches G0 only; u1, cached on G1, asks for \
                      write at 1500 ms",
            steps: vec![Step::at(
                400,
                Action::Crash {
                    process: "S1".into(),
                    restart_after: Some(Duration::from_ms(500)),
                },
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "no-change",
            summary: "requests on both instances and no role change: every variant holds",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile_11() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(3),
        latency: (Duration::from_ms(1), Duration::from_ms(10)),
        // Instances stall (a GC pause, a blocked event loop) at planned times, some of them
        // between a database read and the cache fill it feeds.
        pauses_at: 3,
        pause_len: (Duration::from_ms(50), Duration::from_ms(1_500)),
        // Subscribers lose their subscription: crashes, and a Redis restart.
        crash: Ratio::per_mille(100),
        restart_after: (Duration::from_ms(100), Duration::from_ms(1_000)),
        crash_on: Target {
            kinds: vec![PermTag::LISTEN],
            ..Target::ANY
        },
        redis_restarts: 1,
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-000-12

fn race_12() -> Race {
    Race {
        id: "R-000-12",
        title: "API-key blacklist checked in redundant memory + multiple Redis keys; one Redis \
                key as the sole authority",
        document: "000",
        invariant: "B1: no request starting Δ = 500 ms after a revocation accepts the key while \
                    it stays revoked; B2: an un-revoked key is accepted again once faults end",
        docfix_verdict: "partially",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts: scripts_12,
        profile: profile_12,
        seed_budget: 200,
        properties: PROPS_12,
        net: true,
        build: build_12,
        judge: judge_12,
    }
}

const PROPS_12: &[Property] = &[
    B1,
    B2,
    REVOCATION_LOST,
    REJECTED_FROM_CACHE,
    DB_DECIDED_AFTER_REDIS_FAILED,
];

const API_KEY: &str = "k1";

/// Every instance's final probe, after every fault of the sweep is over.
const PROBE_AT_MS: u64 = 8_000;

struct Plan12 {
    requests: Vec<(u32, u64)>,
    actions: Vec<KeyAction>,
}

fn scripted_12(name: &str) -> Plan12 {
    let at = Timestamp::from_ms;
    match name {
        "unrevoke-not-propagated" => Plan12 {
            requests: vec![(0, 700), (1, 700), (0, 1_500)],
            actions: vec![KeyAction::Revoke(at(500)), KeyAction::Unrevoke(at(1_000))],
        },
        _ => Plan12 {
            requests: vec![(0, 1_500), (1, 1_500)],
            actions: vec![KeyAction::Revoke(at(500))],
        },
    }
}

fn random_12(rng: &mut SimRng) -> Plan12 {
    let n = rng.between(3, 7);
    let requests = (0..n)
        .map(|_| (rng.below(2) as u32, rng.below(3_000)))
        .collect();
    let revoke = rng.between(200, 1_500);
    let mut actions = vec![KeyAction::Revoke(Timestamp::from_ms(revoke))];
    if rng.below(2) == 0 {
        let unrevoke = revoke + rng.between(300, 1_500);
        actions.push(KeyAction::Unrevoke(Timestamp::from_ms(unrevoke)));
    }
    Plan12 { requests, actions }
}

fn build_12(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Scripted(name) => scripted_12(name),
        Workload::Random(rng) => random_12(rng),
    };
    let mut processes = Vec::new();
    let mut number = 0;
    for instance in 0..2u32 {
        let mut mine: Vec<KeyRequest> = Vec::new();
        for (i, at) in &plan.requests {
            if *i == instance {
                number += 1;
                mine.push(KeyRequest {
                    at: Timestamp::from_ms(*at),
                    request: number,
                    probe: false,
                });
            }
        }
        number += 1;
        mine.push(KeyRequest {
            at: Timestamp::from_ms(PROBE_AT_MS),
            request: number,
            probe: true,
        });
        processes.push(ProcessSpec {
            host: instance,
            name: format!("G{instance}"),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| {
                Box::new(KeyInstance::new(variant, instance, API_KEY, mine.clone()))
                    as Box<dyn Machine>
            }),
        });
    }
    let actions = plan.actions.clone();
    processes.push(ProcessSpec {
        host: 0,
        name: "A".into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(KeyAdmin::new(variant, API_KEY, actions.clone())) as Box<dyn Machine>
        }),
    });
    let row = Row::from([
        ("revoked".to_string(), Value::Int(0)),
        ("key_version".to_string(), Value::Int(0)),
    ]);
    let spec = WorldSpec {
        processes,
        sql_rows: vec![(ACCESS_API_KEYS, API_KEY.into(), row)],
        net: NetConfig {
            scripted_latency: Duration::from_ms(5),
            redis_timeout: Duration::from_secs(1),
            sql_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(10),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(120_000),
        horizon: None,
        local: Some(Box::new(KeyMemory::new())),
        upstream: Default::default(),
    };
    (spec, Capture::none())
}

fn judge_12(run: &Run, _: &Capture) -> Verdict {
    let mut verdict = revocation(&run.history, REVOKE_DELTA);
    revocation_coverage(&run.history, &mut verdict);
    verdict
}

fn scripts_12() -> Vec<Script> {
    vec![
        Script {
            name: "sources-disagree",
            summary: "the admin revokes k1 at 500 ms (the blacklist set, and G0's memory); at \
                      1500 ms G1 consults apikey:status:k1 first, which still says active",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "unrevoke-not-propagated",
            summary: "the admin revokes k1 at 500 ms (G0 keeps it in memory) and un-revokes it in \
                      Redis at 1000 ms; G0 rejects k1 until it restarts",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "failover-loses-sadd",
            summary: "the revocation's Redis write is acked and Redis fails over before it \
                      replicates (at 506 ms, and 516 ms for the write after the row's update); \
                      G0 and G1 check k1 at 1500 ms",
            steps: vec![
                Step::at(506, Action::Failover),
                Step::at(516, Action::Failover),
            ],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn profile_12() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(3),
        latency: (Duration::from_ms(1), Duration::from_ms(10)),
        // Redis loses the admin's writes (a failover before replication, a restart) and
        // answers some checks too late (a lost reply: the driver's timeout, an error).
        failover: Ratio::per_mille(300),
        failover_on: Target {
            kinds: vec![KeyTag::DECIDE, KeyTag::PROPAGATE],
            ..Target::ANY
        },
        redis_restarts: 1,
        drop_reply: Ratio::per_mille(50),
        drop_reply_on: Target {
            kinds: vec![KeyTag::CHECK],
            ..Target::ANY
        },
        pauses_at: 2,
        pause_len: (Duration::from_ms(50), Duration::from_ms(1_000)),
        ..FaultProfile::quiet()
    }
}
