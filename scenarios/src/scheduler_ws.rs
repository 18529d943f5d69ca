//! Document 004's client WebSocket connections in scheduler memory (R-004-07): a client
//! connects through the load balancer to S1 or S2 and submits jobs; the instance keeps each
//! job and the connection in memory and delivers the node's result over that connection. A
//! reconnect that lands on another instance finds no job there: the client resubmits (a
//! second execution), and the first result, reaching the old instance, is dropped. The
//! document's fix, the balancer's WebSocket session persistence (DocFix: a sticky balancer),
//! sends the client back to its instance only while that instance is reachable and has not
//! restarted. Correct keys jobs by the client's own id, keeps results in the jobs table, and
//! replays them to whichever instance the client resumes on. See
//! `racelab_core::scheduler::ws`.

use racelab_core::scheduler::ws::{
    DELIVERED_ONCE, MOVED_INSTANCE, NO_STALE_CONNECTION, ONE_EXECUTION, RESUBMIT_DEDUPED,
    RESULT_REPLAYED, WsClient, WsMode, WsNode, WsScheduler, WsTag, delivered_once,
    no_stale_connection, one_execution, ws_coverage,
};
use racelab_core::{Duration, Machine, Property, StoreId, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    Action, FaultProfile, ProcessSpec, Ratio, Run, SimRng, Step, Target, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-004-07",
        title: "WebSocket connections in scheduler memory: a reconnect to another instance \
                resubmits the job, and the first result is dropped at the old instance",
        document: "004",
        invariant: "I-JOB: a job is executed once however the client reconnects, every \
                    accepted job's result reaches the client exactly once, and no result is \
                    sent on a connection the instance knows is closed",
        docfix_verdict: "insufficient",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts,
        profile,
        seed_budget: 100,
        properties: PROPS,
        net: true,
        build,
        judge,
    }]
}

const PROPS: &[Property] = &[
    ONE_EXECUTION,
    DELIVERED_ONCE,
    NO_STALE_CONNECTION,
    MOVED_INSTANCE,
    RESUBMIT_DEDUPED,
    RESULT_REPLAYED,
];

/// The instances behind the balancer (R-004-04 runs the same world).
pub(crate) const INSTANCES: [&str; 2] = ["S1", "S2"];

/// A job runs this long on the node.
const JOB_LENGTH: Duration = Duration::from_secs(4);

/// Jobs are submitted in the first 20 s; the run is judged at 120 s.
const HORIZON: Duration = Duration::from_secs(120);

/// One client's jobs: its name for each, and when it submits it.
pub(crate) type Jobs = Vec<(String, Timestamp)>;

/// A client: its name, when it starts, its jobs.
pub(crate) type Client = (String, Timestamp, Jobs);

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let clients: Vec<Client> = match workload {
        // The clients connect once both instances listen (in the net world too, where the
        // balancer's host starts on first use and messages move at 50 ms ticks).
        Workload::Scripted("client-cut") => vec![
            ("C2".into(), Timestamp::from_ms(200), jobs(&[500])),
            ("C".into(), Timestamp::from_ms(300), jobs(&[1_000])),
        ],
        Workload::Scripted(_) => vec![("C".into(), Timestamp::ZERO, jobs(&[1_000]))],
        Workload::Random(rng) => random_clients(rng),
    };
    (world(variant, clients), Capture::none())
}

/// One or two clients, each starting in the first 2 s with one to three jobs in its first 20 s.
pub(crate) fn random_clients(rng: &mut SimRng) -> Vec<Client> {
    (1..=rng.between(1, 2))
        .map(|i| {
            let start = rng.below(2_000);
            let n = rng.between(1, 3);
            let at: Vec<u64> = (0..n).map(|_| start + rng.below(20_000)).collect();
            (format!("C{i}"), Timestamp::from_ms(start), jobs(&at))
        })
        .collect()
}

/// The world: [`INSTANCES`] behind the balancer (sticky in DocFix, the document's fix:
/// WebSocket session persistence), node N1, and the clients.
pub(crate) fn world(variant: Variant, clients: Vec<Client>) -> WorldSpec {
    let mode = WsMode::of(variant);
    let mut processes: Vec<ProcessSpec> = INSTANCES
        .iter()
        .zip(0u32..)
        .map(|(name, host)| ProcessSpec {
            host,
            name: name.to_string(),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| Box::new(WsScheduler::new(name, mode)) as Box<dyn Machine>),
        })
        .collect();
    processes.push(ProcessSpec {
        host: 2,
        name: "N1".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: Box::new(|_| Box::new(WsNode::new("N1", JOB_LENGTH)) as Box<dyn Machine>),
    });
    for ((name, start, jobs), host) in clients.into_iter().zip(3u32..) {
        let id = name.clone();
        processes.push(ProcessSpec {
            host,
            name,
            start_at: start,
            fault_prone: false,
            factory: Box::new(move |_| Box::new(WsClient::new(&id, &jobs)) as Box<dyn Machine>),
        });
    }
    let mut spec = crate::scheduler::world(processes, HORIZON);
    spec.net.sql_timeout = Duration::from_secs(2);
    spec.net.push_sticky = variant == Variant::DocFix;
    spec
}

/// Jobs `J1`, `J2`, ... at these times (ms).
pub(crate) fn jobs(at_ms: &[u64]) -> Jobs {
    at_ms
        .iter()
        .enumerate()
        .map(|(i, at)| (format!("J{}", i + 1), Timestamp::from_ms(*at)))
        .collect()
}

/// The properties both races judge: one execution, delivered once, no stale connection, and
/// the ws machines' `sometimes` counts.
pub(crate) fn judge_jobs(h: &racelab_core::History) -> Verdict {
    let mut verdict = one_execution(h)
        .merge(delivered_once(h))
        .merge(no_stale_connection(h));
    ws_coverage(h, &mut verdict);
    verdict
}

fn judge(run: &Run, _: &Capture) -> Verdict {
    let mut verdict = judge_jobs(&run.history);
    verdict
        .sometimes
        .retain(|name, _| PROPS.iter().any(|p| p.name == name));
    verdict
}

/// `process` cut off from the balancer from `from_ms` to `to_ms`.
fn cut(process: &str, from_ms: u64, to_ms: u64) -> Vec<Step> {
    vec![
        Step::at(
            from_ms,
            Action::Partition {
                process: process.into(),
                store: StoreId::Push,
            },
        ),
        Step::at(
            to_ms,
            Action::Heal {
                process: process.into(),
                store: StoreId::Push,
            },
        ),
    ]
}

fn scripts() -> Vec<Script> {
    use Expectation::{Fails, Holds};
    vec![
        Script {
            name: "s1-cut",
            summary: "C connects to S1 and submits J1 (1 s); S1 is cut off from the balancer \
                      at 2 s for 2 s, closing C's connection; C reconnects, the balancer sends \
                      it to S2, which does not know J1: C resubmits and N1 runs it again; J1's \
                      result reaches S1, which sends it on the closed connection: dropped",
            steps: cut("S1", 2_000, 4_000),
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "s1-restart",
            summary: "C connects to S1 and submits J1 (1 s); S1 crashes at 2 s and restarts \
                      1 s later with nothing in memory; C reconnects to S2 (sticky or not: S1 \
                      is down), resubmits, and N1 runs J1 twice",
            steps: vec![Step::at(
                2_000,
                Action::Crash {
                    process: "S1".into(),
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "client-cut",
            summary: "C2 connects at 0.2 s and holds S1 until its job is done (about 5 s), \
                      so C, connecting at 0.3 s, lands on S2 and submits J1 (1 s); C is cut off at 6 s for 0.5 s and reconnects while J1 \
                      runs: the least-loaded balancer sends it to S1, which does not know J1 \
                      (a second execution, J1's result dropped at S2); the sticky one sends it \
                      back to S2, which still holds J1",
            steps: cut("C", 6_000, 6_500),
            expect: PerVariant([Fails, Holds, Holds]),
        },
        Script {
            name: "no-fault",
            summary: "C submits J1 at 1 s and stays connected: one execution, one delivery",
            steps: Vec::new(),
            expect: PerVariant([Holds, Holds, Holds]),
        },
    ]
}

fn profile() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(30),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // An instance crashes right after recording a job (before it answers) now and then,
        // and comes back a few seconds later. Faults strike the recording only, which a
        // client does once per job and connection: the polls and receives that run every
        // tick would make the bounded exhaustive search (every schedule with two faults)
        // far too wide.
        crash: Ratio::per_mille(150),
        restart_after: (Duration::from_secs(1), Duration::from_secs(5)),
        crash_on: Target {
            kinds: vec![WsTag::RECORD],
            ..Target::processes(&INSTANCES)
        },
        drop_reply: Ratio::per_mille(100),
        drop_reply_on: Target {
            kinds: vec![WsTag::RECORD],
            ..Target::ANY
        },
        ..FaultProfile::quiet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_script;

    /// The scripted cut breaks the one-execution property in Buggy and DocFix, and the old
    /// instance's send on the closed connection is named.
    #[test]
    fn the_s1_cut_names_the_second_execution_and_the_stale_send() {
        let race = races().remove(0);
        let script = scripts().remove(0);
        for variant in [Variant::Buggy, Variant::DocFix] {
            let outcome = run_script(&race, &script, variant);
            let broken = outcome.verdict.broken();
            assert!(
                broken.contains(&ONE_EXECUTION.name),
                "{variant:?}: {broken:?}"
            );
            assert!(
                broken.contains(&NO_STALE_CONNECTION.name),
                "{variant:?}: {broken:?}"
            );
        }
        let outcome = run_script(&race, &script, Variant::Correct);
        assert!(outcome.verdict.holds(), "{}", outcome.verdict.explanation());
        assert!(
            outcome.verdict.sometimes.contains_key(RESULT_REPLAYED.name),
            "{:?}",
            outcome.verdict.sometimes
        );
    }
}
