//! Document 004's "no local state" contradiction (R-004-04): the job, its payload and its
//! status live in the scheduler instance's memory, so a crash or a restart of the instance
//! between a job's submission and its result loses the job. The node's result reaches an
//! incarnation that does not know the job and goes nowhere; the client, whose socket
//! closed, retries, and the code gives the retry a new job id: a second execution. The
//! document's short-term fix (DocFix) is client retry plus the balancer's WebSocket session
//! persistence, which does not survive the restart itself, and a retry without a stable
//! client-supplied id still executes twice. Correct records the job durably under the
//! client's id before acknowledging it, resolves a retry to the same job, and lets any
//! instance deliver the stored result. The machines are R-004-07's (see
//! `racelab_core::scheduler::ws` and `racelab_core::scheduler::restart`); this race's faults
//! are crashes and restarts (bounces) of the instances at each step of a job's life.

use racelab_core::scheduler::restart::{RESTART_IN_FLIGHT, RESULT_AFTER_RESTART, restart_coverage};
use racelab_core::scheduler::ws::{
    DELIVERED_ONCE, NO_STALE_CONNECTION, ONE_EXECUTION, RESUBMIT_DEDUPED, WsTag,
};
use racelab_core::{Duration, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{Action, FaultProfile, OpEffect, Ratio, Run, Step, Target, WorldSpec};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};
use crate::scheduler_ws::{Client, INSTANCES, jobs, judge_jobs, random_clients, world};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-004-04",
        title: "Job state lives in scheduler memory: a restart loses in-flight jobs, the \
                node's result is dropped and the client's retry executes the job again",
        document: "004",
        invariant: "I-JOB across a crash or restart of the scheduler: a job is executed once \
                    however the client retries, every accepted job's result reaches the \
                    client exactly once, and no result is sent on a connection the instance \
                    knows is closed",
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
    RESUBMIT_DEDUPED,
    RESTART_IN_FLIGHT,
    RESULT_AFTER_RESTART,
];

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let clients: Vec<Client> = match workload {
        Workload::Scripted(_) => vec![("C".into(), Timestamp::ZERO, jobs(&[1_000]))],
        Workload::Random(rng) => random_clients(rng),
    };
    (world(variant, clients), Capture::none())
}

fn judge(run: &Run, _: &Capture) -> Verdict {
    let mut verdict = judge_jobs(&run.history);
    restart_coverage(&run.history, &INSTANCES, &mut verdict);
    verdict
        .sometimes
        .retain(|name, _| PROPS.iter().any(|p| p.name == name));
    verdict
}

/// `S1` crashes right after its `nth` operation of `kind` and restarts `restart_ms` later.
fn crash_s1_after(kind: racelab_core::TagKind, nth: u32, restart_ms: u64) -> Vec<Step> {
    vec![Step::on(
        "S1",
        kind,
        nth,
        OpEffect::CrashAfterApply {
            restart_after: Some(Duration::from_ms(restart_ms)),
        },
    )]
}

fn scripts() -> Vec<Script> {
    use Expectation::{Fails, Holds};
    vec![
        Script {
            name: "crash-after-accept",
            summary: "C submits J1 to S1 (1 s), S1 records it and tells C it was accepted, \
                      then crashes and restarts 1 s later with nothing in memory; N1 runs J1 \
                      and its result reaches the new S1, which does not know J1; C, whose \
                      socket closed, retries: the code gives the retry a new job id and N1 \
                      runs J1 again (the document's steps 1-4)",
            steps: crash_s1_after(WsTag::ANSWER, 1, 1_000),
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "crash-before-answer",
            summary: "S1 records J1 and crashes before telling C: the job is already queued \
                      for N1 under S1's id; C never heard an answer and submits again, and \
                      the code makes a second job of it",
            steps: crash_s1_after(WsTag::RECORD, 1, 1_000),
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "bounce-while-running",
            summary: "S1 is bounced (killed and restarted 200 ms later, a deploy) at 2 s \
                      while N1 runs J1: the sticky balancer cannot send C back to the S1 it \
                      knew, and the restarted S1 knows no job either way",
            steps: vec![Step::at(
                2_000,
                Action::Crash {
                    process: "S1".into(),
                    restart_after: Some(Duration::from_ms(200)),
                },
            )],
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "crash-after-result",
            summary: "S1 crashes right after sending J1's result to C and restarts 1 s later: \
                      the result was already on its way, nothing was in flight, and every \
                      variant keeps one execution and one delivery",
            steps: crash_s1_after(WsTag::DELIVER, 1, 1_000),
            expect: PerVariant([Holds, Holds, Holds]),
        },
        Script {
            name: "no-fault",
            summary: "C submits J1 at 1 s and S1 stays up: one execution, one delivery",
            steps: Vec::new(),
            expect: PerVariant([Holds, Holds, Holds]),
        },
    ]
}

fn profile() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(30),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // An instance crashes right after one of the steps of a job's life it takes (recording
        // the job, answering the client, delivering the result) now and then, and comes back
        // after a bounce (200 ms) or a slow restart (5 s). Those steps happen once per job and
        // connection; the polls and receives that run every tick would make the bounded
        // exhaustive search (every schedule with two faults) far too wide.
        crash: Ratio::per_mille(150),
        restart_after: (Duration::from_ms(200), Duration::from_secs(5)),
        crash_on: Target {
            kinds: vec![WsTag::RECORD, WsTag::ANSWER, WsTag::DELIVER],
            ..Target::processes(&INSTANCES)
        },
        ..FaultProfile::quiet()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_script;

    /// The document's timeline breaks one execution in Buggy and DocFix, named; Correct
    /// holds and shows the crash fell in the job's flight and the result came over a new
    /// connection.
    #[test]
    fn the_crash_after_accept_names_the_second_execution() {
        let race = races().remove(0);
        let script = scripts().remove(0);
        for variant in [Variant::Buggy, Variant::DocFix] {
            let outcome = run_script(&race, &script, variant);
            let broken = outcome.verdict.broken();
            assert!(
                broken.contains(&ONE_EXECUTION.name),
                "{variant:?}: {broken:?}"
            );
        }
        let outcome = run_script(&race, &script, Variant::Correct);
        assert!(outcome.verdict.holds(), "{}", outcome.verdict.explanation());
        for p in [RESTART_IN_FLIGHT, RESULT_AFTER_RESTART, RESUBMIT_DEDUPED] {
            assert!(
                outcome.verdict.sometimes.contains_key(p.name),
                "{}: {:?}",
                p.name,
                outcome.verdict.sometimes
            );
        }
    }

    /// Every timeline with a step does crash S1 and restart it, in every variant, so that a
    /// timeline expected to hold (crash-after-result) holds across a restart that happened.
    #[test]
    fn every_faulted_timeline_crashes_and_restarts_s1() {
        use racelab_core::Fault;

        let race = races().remove(0);
        for script in scripts().iter().filter(|s| !s.steps.is_empty()) {
            for variant in Variant::ALL {
                let outcome = run_script(&race, script, variant);
                let h = &outcome.run.history;
                let s1 = |p| h.name(p) == "S1";
                let crashed = h
                    .faults
                    .iter()
                    .any(|f| matches!(f.fault, Fault::Crash { process } if s1(process)));
                let restarted = h
                    .faults
                    .iter()
                    .any(|f| matches!(f.fault, Fault::Restart { process } if s1(process)));
                assert!(crashed && restarted, "{} {variant:?}", script.name);
            }
        }
    }
}
