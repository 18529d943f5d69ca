//! Document 004's scheduler family: worker nodes register and heartbeat in Redis, a scheduler
//! binds jobs to them and re-dispatches the jobs of nodes that went away.
//!
//! - R-004-01: a node crashes without deregistering; with the code's 3600 s TTLs it stays
//!   selectable for up to an hour, and with the revision's 60/70 s the pool set, whose TTL
//!   every live member's heartbeat refreshes, keeps it a member forever (counter-schedule PS).
//! - R-004-02: a node pauses past its lease while running a job; the job is re-dispatched and
//!   the zombie's result is accepted beside the new node's (the zombie schedule, independent
//!   of the TTL value).
//!
//! - R-004-03: the node-offline script (which re-dispatches the node's jobs) against the
//!   selection and binding scripts and the result path: a binding that lands after the
//!   offline script looked at the node's jobs (lost job), a re-dispatch of a slow node's job
//!   whose late result is accepted beside the new one (double dispatch), and an offline
//!   script that fails half-way with no node left, its writes kept (orphaned job).
//!
//! - R-004-06: the job->node binding's TTL and the timeout finalize: with the job's state in
//!   the scheduler's memory and an unconditional finalize, a result arriving just after the
//!   deadline gives the client a timeout and then the result (J2, I-JOB-notified); with the
//!   binding TTL retuned with the node TTL, a long job outlives its binding and the finalizer
//!   can no longer find it (B1, I-JOB-delivered).
//!
//! Heartbeats never stop: every world has a horizon and is judged there.

use racelab_core::scheduler::{
    B1, DEAD_NODE_SKIPPED, Dispatcher, F1, I_JOB, I_JOB_DELIVERED, I_JOB_NOTIFIED, J2, J3, L2,
    LATE_RESULT, LEASE_LOST, Monitor, NO_NODE_LEFT, Node, NodeConfig, OFFLINE_REDISPATCHED,
    STALE_RESULT_REFUSED, SchedTag, Submit, T_DEAD, TIMED_OUT_FINALIZED, binding_lifetime,
    binding_liveness, coverage, fenced_results, finalize_coverage, jobs_delivered, notified_once,
    offline_bindings, one_outcome, terminal_transitions,
};
use racelab_core::{Duration, Machine, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    Action, FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Run, Step, Target, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
            id: "R-004-01",
            title: "Node/pool TTL is 3600 s in code vs 60/70 s in the document: a dead node \
                    stays selectable",
            document: "004",
            invariant: "L2 (I-LIVE at binding): no job is bound to a node whose last heartbeat \
                        is older than T_dead = 60 s",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_01,
            profile: profile_01,
            seed_budget: 100,
            properties: PROPS_01,
            net: true,
            build: build_01,
            judge: judge_01,
        },
        Race {
            id: "R-004-02",
            title: "Heartbeat/TTL lease without fencing: a zombie node's result accepted after \
                    its job was re-dispatched",
            document: "004",
            invariant: "F1: results only from the job's current (node, epoch); I-JOB: at most \
                        one accepted result per job, every job's outcome delivered",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_02,
            profile: profile_02,
            seed_budget: 200,
            properties: PROPS_02,
            net: true,
            build: build_02,
            judge: judge_02,
        },
        Race {
            id: "R-004-03",
            title: "Node-offline script vs job re-dispatch: a lost, doubly dispatched or \
                    orphaned job between scripts",
            document: "004",
            invariant: "J3: no binding to a node the offline script took offline; F1 and I-JOB: \
                        one accepted result per job, from its current binding; every job's \
                        outcome delivered",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_03,
            profile: profile_03,
            seed_budget: 200,
            properties: PROPS_03,
            net: true,
            build: build_03,
            judge: judge_03,
        },
        Race {
            id: "R-004-06",
            title: "Job->node binding TTL, and the timeout finalize vs a late completion",
            document: "004",
            invariant: "J2: at most one terminal transition per job (lease-based); \
                        I-JOB-notified: the client told one outcome per job; B1: a running \
                        job's binding outlives it; every job's outcome delivered",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_06,
            profile: profile_06,
            seed_budget: 200,
            properties: PROPS_06,
            net: true,
            build: build_06,
            judge: judge_06,
        },
    ]
}

const NODES_01: [&str; 3] = ["N1", "N2", "N3"];
const NODES_02: [&str; 2] = ["N1", "N2"];

/// The scheduler reaps its jobs every 10 s.
const REAP_EVERY: Duration = Duration::from_secs(10);

fn node(name: &str, variant: Variant, job_length: Duration, start: Timestamp) -> ProcessSpec {
    let name = name.to_string();
    let id = name.clone();
    ProcessSpec {
        host: 0,
        name,
        start_at: start,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(Node::new(&id, NodeConfig::of(variant), job_length)) as Box<dyn Machine>
        }),
    }
}

fn dispatcher(variant: Variant, jobs: Vec<(String, Timestamp)>) -> ProcessSpec {
    dispatcher_with(
        NodeConfig::of(variant),
        Submit::DispatchAndReap,
        jobs,
        REAP_EVERY,
    )
}

fn dispatcher_with(
    config: NodeConfig,
    submit: Submit,
    jobs: Vec<(String, Timestamp)>,
    reap_every: Duration,
) -> ProcessSpec {
    ProcessSpec {
        host: 1,
        name: "S".into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(Dispatcher::new(config, jobs.clone(), reap_every).with_submit(submit))
                as Box<dyn Machine>
        }),
    }
}

/// The scheduler family's world: `processes` against Redis alone, heartbeats until
/// `horizon`, then ten minutes to settle.
pub(crate) fn world(processes: Vec<ProcessSpec>, horizon: Duration) -> WorldSpec {
    WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: NetConfig {
            redis_timeout: Duration::from_secs(2),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::ZERO + horizon + Duration::from_secs(600),
        horizon: Some(Timestamp::ZERO + horizon),
        local: None,
        upstream: Default::default(),
    }
}

/// Keeps only the `sometimes` counts the race declares.
pub(crate) fn declared(mut verdict: Verdict, properties: &[Property]) -> Verdict {
    verdict
        .sometimes
        .retain(|name, _| properties.iter().any(|p| p.name == name));
    verdict
}

// ---------------------------------------------------------------------------------------------
// R-004-01

const PROPS_01: &[Property] = &[L2, DEAD_NODE_SKIPPED];

/// Jobs are submitted every 5 s until 400 s; the run is judged at 480 s.
const HORIZON_01: Duration = Duration::from_secs(480);

fn build_01(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (every, starts) = match workload {
        Workload::Scripted(_) => (5, [0, 1, 2]),
        Workload::Random(rng) => (
            rng.between(3, 15),
            [rng.below(5_000), rng.below(5_000), rng.below(5_000)],
        ),
    };
    let jobs = (1..)
        .map(|i| (format!("J{i}"), Timestamp::from_ms(i * every * 1000)))
        .take_while(|(_, at)| at.as_ms() <= 400_000)
        .collect();
    let mut processes: Vec<ProcessSpec> = NODES_01
        .iter()
        .zip(starts)
        .map(|(n, s)| node(n, variant, Duration::from_secs(5), Timestamp::from_ms(s)))
        .collect();
    processes.push(dispatcher(variant, jobs));
    (world(processes, HORIZON_01), Capture::none())
}

fn judge_01(run: &Run, _: &Capture) -> Verdict {
    let mut verdict = binding_liveness(&run.history, T_DEAD);
    coverage(&run.history, &mut verdict);
    declared(verdict, PROPS_01)
}

fn crash_forever(process: &str, nth: u32) -> Step {
    Step::on(
        process,
        SchedTag::HEARTBEAT,
        nth,
        OpEffect::CrashAfterApply {
            restart_after: None,
        },
    )
}

fn scripts_01() -> Vec<Script> {
    vec![
        Script {
            name: "crash-without-deregistering",
            summary: "N1 crashes right after its first heartbeat and never returns; N2 and N3 \
                      keep heartbeating (and refreshing the pool set's TTL); jobs keep coming",
            steps: vec![crash_forever("N1", 1)],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "all-nodes-crash",
            summary: "every node crashes after its second heartbeat: the node keys expire \
                      (60 s with the retune) while the pool set lives 10 s longer (M)",
            steps: vec![
                crash_forever("N1", 2),
                crash_forever("N2", 2),
                crash_forever("N3", 2),
            ],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "no-fault",
            summary: "every node stays up: no variant binds a job to a dead node",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile_01() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(300),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        crash: Ratio::per_mille(30),
        // A crashed node stays down past the horizon: it never deregisters.
        restart_after: (Duration::from_secs(1_000), Duration::from_secs(2_000)),
        crash_on: Target {
            kinds: vec![SchedTag::HEARTBEAT],
            ..Target::processes(&NODES_01)
        },
        drop_reply: Ratio::per_mille(10),
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-004-02

const PROPS_02: &[Property] = &[F1, I_JOB, I_JOB_DELIVERED, STALE_RESULT_REFUSED, LEASE_LOST];

/// Long enough for a pause past the code's 3600 s TTL, a re-dispatch and both results.
const HORIZON_02: Duration = Duration::from_secs(4_800);

fn build_02(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (times, length) = match workload {
        Workload::Scripted(_) => (vec![5, 60, 200], 120),
        Workload::Random(rng) => {
            let n = rng.between(2, 4);
            let times = (0..n).map(|_| rng.between(1, 300)).collect();
            (times, rng.between(30, 240))
        }
    };
    let jobs: Vec<(String, Timestamp)> = times
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("J{}", i + 1), Timestamp::from_ms(s * 1000)))
        .collect();
    let ids: Vec<String> = jobs.iter().map(|(j, _)| j.clone()).collect();
    let mut processes: Vec<ProcessSpec> = NODES_02
        .iter()
        .map(|n| node(n, variant, Duration::from_secs(length), Timestamp::ZERO))
        .collect();
    processes.push(dispatcher(variant, jobs));
    (world(processes, HORIZON_02), Capture::new(ids))
}

fn judge_02(run: &Run, capture: &Capture) -> Verdict {
    let jobs = capture.get::<Vec<String>>().cloned().unwrap_or_default();
    let mut verdict = fenced_results(&run.history)
        .merge(one_outcome(&run.history))
        .merge(jobs_delivered(&run.history, &jobs));
    coverage(&run.history, &mut verdict);
    declared(verdict, PROPS_02)
}

fn scripts_02() -> Vec<Script> {
    let pause = |secs| {
        Step::at(
            40_000,
            Action::Pause {
                process: "N2".into(),
                duration: Duration::from_secs(secs),
            },
        )
    };
    vec![
        Script {
            name: "zombie",
            summary: "N2 runs J1 and pauses (GC, VM stall) for 3800 s; its lease expires, J1 is \
                      re-dispatched to N1 and finished there; N2 resumes and reports J1 too",
            steps: vec![pause(3_800)],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "zombie-within-the-code-ttl",
            summary: "N2 pauses for 90 s: past the revision's 60 s TTL but within the code's \
                      3600 s: only the retuned TTL re-dispatches J1 and accepts both results",
            steps: vec![pause(90)],
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "no-fault",
            summary: "no pause: every job runs once and is delivered",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile_02() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(400),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // A node stalls as it is about to report a result, for longer than the code's TTL:
        // the zombie, one fault per completion (so the exhaustive search stays small).
        pause: Ratio::per_mille(300),
        pause_len: (Duration::from_secs(3_700), Duration::from_secs(3_900)),
        pause_on: Target {
            kinds: vec![SchedTag::COMPLETE],
            ..Target::processes(&NODES_02)
        },
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-004-03

const PROPS_03: &[Property] = &[
    J3,
    F1,
    I_JOB,
    I_JOB_DELIVERED,
    OFFLINE_REDISPATCHED,
    NO_NODE_LEFT,
    STALE_RESULT_REFUSED,
];

/// Faults end at 120 s; a crashed node is back by 270 s; every job is done well before.
const HORIZON_03: Duration = Duration::from_secs(400);

/// The monitor scans the pool every 10 s.
const MONITOR_EVERY: Duration = Duration::from_secs(10);

/// The scheduler follows its jobs every 30 s: the offline script is the fast path of
/// re-dispatch, the Correct scheduler's own reap the slow one (and the one that binds a job
/// queued for want of a live node).
const REAP_EVERY_03: Duration = Duration::from_secs(30);

/// Every variant runs at the same short timing (a 30 s lease renewed every 10 s, the pool
/// without TTL: only the offline script removes a member), so that the offline script fires
/// within the run: the race is between scripts, not about the TTL's value (R-004-01 is).
/// Buggy splits selection from binding (assumption A9's split branch), DocFix selects and
/// binds in one script (the document's "key design"), both unfenced, re-dispatch left to the
/// offline script; Correct fences every script on the node's lease and epoch, and its
/// scheduler's own re-dispatch decision is one script too.
fn config_03(variant: Variant) -> NodeConfig {
    NodeConfig {
        heartbeat: Duration::from_secs(10),
        node_ttl: Duration::from_secs(30),
        pool_ttl: Duration::ZERO,
        fenced: variant == Variant::Correct,
    }
}

fn build_03(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (times, length) = match workload {
        Workload::Scripted(_) => (vec![5, 35], 20),
        Workload::Random(rng) => {
            let n = rng.between(1, 3);
            let times = (0..n).map(|_| rng.between(1, 90)).collect();
            (times, rng.between(10, 40))
        }
    };
    let jobs: Vec<(String, Timestamp)> = times
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("J{}", i + 1), Timestamp::from_ms(s * 1000)))
        .collect();
    let ids: Vec<String> = jobs.iter().map(|(j, _)| j.clone()).collect();
    let config = config_03(variant);
    let length = Duration::from_secs(length);
    let mut processes: Vec<ProcessSpec> = NODES_02
        .iter()
        .map(|n| {
            let id = n.to_string();
            ProcessSpec {
                host: 0,
                name: id.clone(),
                start_at: Timestamp::ZERO,
                fault_prone: true,
                factory: Box::new(move |_| {
                    Box::new(Node::new(&id, config, length)) as Box<dyn Machine>
                }),
            }
        })
        .collect();
    let submit = match variant {
        Variant::Buggy => Submit::SelectBindThenWatch,
        Variant::DocFix => Submit::DispatchThenWatch,
        Variant::Correct => Submit::DispatchAndReap,
    };
    processes.push(dispatcher_with(config, submit, jobs, REAP_EVERY_03));
    processes.push(ProcessSpec {
        host: 2,
        name: "M".into(),
        // Halfway between the scheduler's reaps: either may be the first to find a node gone.
        start_at: Timestamp::from_ms(5_000),
        fault_prone: false,
        factory: Box::new(move |_| {
            Box::new(Monitor::new(config, MONITOR_EVERY)) as Box<dyn Machine>
        }),
    });
    (world(processes, HORIZON_03), Capture::new(ids))
}

fn judge_03(run: &Run, capture: &Capture) -> Verdict {
    let jobs = capture.get::<Vec<String>>().cloned().unwrap_or_default();
    let mut verdict = offline_bindings(&run.history)
        .merge(fenced_results(&run.history))
        .merge(one_outcome(&run.history))
        .merge(jobs_delivered(&run.history, &jobs));
    coverage(&run.history, &mut verdict);
    declared(verdict, PROPS_03)
}

fn scripts_03() -> Vec<Script> {
    let crash = |process, restart_after| {
        Step::on(
            process,
            SchedTag::HEARTBEAT,
            1,
            OpEffect::CrashAfterApply { restart_after },
        )
    };
    vec![
        Script {
            name: "lost-job",
            summary: "N1 crashes after its first heartbeat; at 35 s S selects N1 (still a pool \
                      member) for J2 and stalls 15 s before binding; at 45 s the offline \
                      script takes N1 out and moves its jobs (J2 is not bound yet); S then \
                      binds J2 to the dead N1",
            steps: vec![
                crash("N1", None),
                Step::on(
                    "S",
                    SchedTag::BIND,
                    2,
                    OpEffect::PauseBeforeSend(Duration::from_secs(15)),
                ),
            ],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "double-dispatch",
            summary: "N2 runs J1 and stalls 45 s at 12 s: its lease runs out, the offline \
                      script moves J1 to N1, which runs it; N2 resumes and reports J1 too, \
                      and the result path takes both",
            steps: vec![Step::at(
                12_000,
                Action::Pause {
                    process: "N2".into(),
                    duration: Duration::from_secs(45),
                },
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "partial-offline-script",
            summary: "both nodes crash after their first heartbeat, N2 (running J1) for good, \
                      N1 back after 100 s; the offline script takes N1 out, then N2, and \
                      fails with no node to move J1 to, keeping its writes: N2 is out of \
                      the pool and J1 still bound to it, where nothing looks again",
            steps: vec![
                crash("N1", Some(Duration::from_secs(100))),
                crash("N2", None),
            ],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "no-fault",
            summary: "no fault: every job runs once and is delivered",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile_03() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(120),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // A node crashes after a heartbeat and is back within 20 s to 150 s.
        crash: Ratio::per_mille(40),
        restart_after: (Duration::from_secs(20), Duration::from_secs(150)),
        crash_on: Target {
            kinds: vec![SchedTag::HEARTBEAT],
            ..Target::processes(&NODES_02)
        },
        // A node stalls as it reports a result, or the scheduler between selection and
        // binding, for about a lease.
        pause: Ratio::per_mille(200),
        pause_len: (Duration::from_secs(15), Duration::from_secs(50)),
        pause_on: Target {
            kinds: vec![SchedTag::COMPLETE, SchedTag::BIND],
            ..Target::processes(&["N1", "N2", "S"])
        },
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-004-06

const PROPS_06: &[Property] = &[
    J2,
    I_JOB_NOTIFIED,
    B1,
    I_JOB_DELIVERED,
    TIMED_OUT_FINALIZED,
    LATE_RESULT,
    STALE_RESULT_REFUSED,
];

/// Deadlines and late results all fall well before it.
const HORIZON_06: Duration = Duration::from_secs(1_000);

/// The job->node binding's TTL: the code's 3600 s; the revision's, lowered with the node TTL
/// to the top of its 60-120 s range; none (the job FSM in Redis is the binding).
fn binding_ttl_06(variant: Variant) -> Duration {
    match variant {
        Variant::Buggy => Duration::from_secs(3_600),
        Variant::DocFix => Duration::from_secs(120),
        Variant::Correct => Duration::ZERO,
    }
}

/// One node (the variant's TTLs and fencing), one scheduler that submits, follows each job's
/// state and finalizes it at its deadline; no re-dispatch ("the binding is used only by the
/// timeout finalize"). Scripted: J1 at 5 s, a 300 s audio job, a 600 s deadline.
fn build_06(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (times, length, timeout) = match workload {
        Workload::Scripted(_) => (vec![5], 300, 600),
        Workload::Random(rng) => {
            let n = rng.between(1, 2);
            let times = (0..n).map(|_| rng.between(1, 60)).collect();
            let length = rng.between(60, 400);
            // Around the job's length: the node starts it at its next poll (up to a
            // heartbeat later), so some deadlines fall before the result.
            (times, length, length + rng.between(5, 90))
        }
    };
    let jobs: Vec<(String, Timestamp)> = times
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("J{}", i + 1), Timestamp::from_ms(s * 1000)))
        .collect();
    let ids: Vec<String> = jobs.iter().map(|(j, _)| j.clone()).collect();
    let config = NodeConfig::of(variant);
    let ttl = binding_ttl_06(variant);
    let processes = vec![
        node("N1", variant, Duration::from_secs(length), Timestamp::ZERO),
        ProcessSpec {
            host: 1,
            name: "S".into(),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| {
                Box::new(
                    Dispatcher::new(config, jobs.clone(), REAP_EVERY)
                        .with_submit(Submit::DispatchThenWatch)
                        .with_timeout(Duration::from_secs(timeout), ttl),
                ) as Box<dyn Machine>
            }),
        },
    ];
    (world(processes, HORIZON_06), Capture::new(ids))
}

fn judge_06(run: &Run, capture: &Capture) -> Verdict {
    let jobs = capture.get::<Vec<String>>().cloned().unwrap_or_default();
    let mut verdict = terminal_transitions(&run.history)
        .merge(notified_once(&run.history))
        .merge(binding_lifetime(&run.history))
        .merge(jobs_delivered(&run.history, &jobs));
    coverage(&run.history, &mut verdict);
    finalize_coverage(&run.history, &mut verdict);
    declared(verdict, PROPS_06)
}

fn scripts_06() -> Vec<Script> {
    vec![
        Script {
            name: "late-completion",
            summary: "N1 runs J1 (300 s, deadline 605 s) and stalls 320 s as it reports the \
                      result; at 605 s the finalizer reads the binding and times J1 out, \
                      telling the client; the result then lands and is delivered too",
            steps: vec![Step::on(
                "N1",
                SchedTag::COMPLETE,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(320)),
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "binding-outlived",
            summary: "N1 crashes for good after its second heartbeat, running J1: only the \
                      finalizer can end J1, and with the binding TTL lowered to 120 s it finds \
                      no binding at 605 s: J1 is never finalized",
            steps: vec![crash_forever("N1", 2)],
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "no-fault",
            summary: "no fault: J1 finishes at about 330 s, before its deadline, and is \
                      delivered once",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile_06() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(500),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // The node stalls as it reports a result, for up to a few minutes: around the
        // deadline.
        pause: Ratio::per_mille(300),
        pause_len: (Duration::from_secs(10), Duration::from_secs(300)),
        pause_on: Target {
            kinds: vec![SchedTag::COMPLETE],
            ..Target::processes(&["N1"])
        },
        // Or crashes after a heartbeat and comes back after a while.
        crash: Ratio::per_mille(20),
        restart_after: (Duration::from_secs(30), Duration::from_secs(600)),
        crash_on: Target {
            kinds: vec![SchedTag::HEARTBEAT],
            ..Target::processes(&["N1"])
        },
        drop_reply: Ratio::per_mille(10),
        ..FaultProfile::quiet()
    }
}
