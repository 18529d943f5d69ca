//! Document 004's job state, kept in the scheduler's memory and, partly or wholly, as an FSM
//! record in Redis (`core::scheduler::jobfsm`).
//!
//! - R-004-05: two sources of truth. The submitting scheduler `S1` drives each job through
//!   `created -> dispatched -> running -> done | failed`; a second scheduler `S2` reads each
//!   record every 10 s, dispatches itself a job still `created` after a 10 s grace ("never
//!   dispatched") and times out a job still `dispatched` or `running` at its deadline. The
//!   document's code sets memory first and writes a partial FSM (no `running`)
//!   unconditionally; the planned FSM writes
//!   every transition, unconditionally, and takes an unanswered write as applied; the correct
//!   one is a CAS with a transition id whose reply alone moves memory, an unanswered call sent
//!   again, and an outcome stored durably in PostgreSQL (first one wins) before it is told:
//!   a failover can lose, and a Redis restart erase, a terminal record already told, and a
//!   process about to tell another outcome then finds the stored one and tells that instead
//!   (`outcome-adopted`).

use racelab_core::scheduler::jobfsm::{
    AMBIGUOUS_RESOLVED, EXECUTED_ONCE, FSM_TIMED_OUT, FSM1, FSM2, Finalize, FsmConfig,
    JobScheduler, JobSpec, JobTag, OUTCOME_ADOPTED, STALE_TRANSITION_REFUSED, executed_once,
    fsm_coverage, fsm_transitions, memory_behind_redis,
};
use racelab_core::scheduler::{I_JOB_DELIVERED, I_JOB_NOTIFIED, jobs_delivered, notified_once};
use racelab_core::{Duration, Machine, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    Action, FaultProfile, OpEffect, ProcessSpec, Ratio, Run, Step, Target, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};
use crate::scheduler::{declared, world};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-004-05",
        title: "Partial Redis job FSM vs in-memory job state: two sources of truth",
        document: "004",
        invariant: "FSM1: only declared transitions, each state once, in order; FSM2: memory \
                    never ahead of Redis; one execution and one outcome told per job, every \
                    job's outcome delivered",
        docfix_verdict: "partially",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts: scripts_05,
        profile: profile_05,
        seed_budget: 200,
        properties: PROPS_05,
        net: true,
        build: build_05,
        judge: judge_05,
    }]
}

const PROPS_05: &[Property] = &[
    FSM1,
    FSM2,
    EXECUTED_ONCE,
    I_JOB_NOTIFIED,
    I_JOB_DELIVERED,
    AMBIGUOUS_RESOLVED,
    STALE_TRANSITION_REFUSED,
    FSM_TIMED_OUT,
    OUTCOME_ADOPTED,
];

/// Faults end at 150 s; a result held back past a 250 s deadline has landed well before.
const HORIZON_05: Duration = Duration::from_secs(900);

/// The finalizer reads every record every 10 s; "never dispatched" after 10 s.
const EVERY_05: Duration = Duration::from_secs(10);
const GRACE_05: Duration = Duration::from_secs(10);

/// Scripted: J1 at 5 s, a 60 s job, its deadline 200 s after submission.
fn build_05(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (jobs, deadline) = match workload {
        Workload::Scripted(_) => (
            vec![JobSpec {
                id: "J1".into(),
                at: Timestamp::from_ms(5_000),
                length: Duration::from_secs(60),
                fails: false,
            }],
            200,
        ),
        Workload::Random(rng) => {
            let n = rng.between(1, 2);
            let jobs = (1..=n)
                .map(|i| JobSpec {
                    id: format!("J{i}"),
                    at: Timestamp::from_ms(rng.between(1, 30) * 1000),
                    length: Duration::from_secs(rng.between(20, 90)),
                    fails: rng.below(5) == 0,
                })
                .collect();
            (jobs, rng.between(150, 250))
        }
    };
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let config = FsmConfig::of(variant);
    let finalize = Finalize {
        every: EVERY_05,
        grace: GRACE_05,
        deadline: Duration::from_secs(deadline),
    };
    let submitted = jobs.clone();
    let processes = vec![
        ProcessSpec {
            host: 1,
            name: "S1".into(),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| {
                Box::new(JobScheduler::submitter("S1", config, submitted.clone()))
                    as Box<dyn Machine>
            }),
        },
        ProcessSpec {
            host: 2,
            name: "S2".into(),
            start_at: Timestamp::ZERO,
            fault_prone: true,
            factory: Box::new(move |_| {
                Box::new(JobScheduler::finalizer(
                    "S2",
                    config,
                    jobs.clone(),
                    finalize,
                )) as Box<dyn Machine>
            }),
        },
    ];
    (world(processes, HORIZON_05), Capture::new(ids))
}

fn judge_05(run: &Run, capture: &Capture) -> Verdict {
    let jobs = capture.get::<Vec<String>>().cloned().unwrap_or_default();
    let history = &run.history;
    let mut verdict = fsm_transitions(history)
        .merge(memory_behind_redis(history))
        .merge(executed_once(history))
        .merge(notified_once(history))
        .merge(jobs_delivered(history, &jobs));
    fsm_coverage(history, &mut verdict);
    declared(verdict, PROPS_05)
}

fn scripts_05() -> Vec<Script> {
    vec![
        Script {
            name: "ambiguous-ack",
            summary: "S1's write of dispatched for J1 is held 60 s in the network: its call \
                      times out at 7 s, applied or not, and S1 goes on from memory. The \
                      document's code writes nothing more before the result, so at 20 s S2 \
                      reads J1 as created, concludes it was never dispatched and dispatches \
                      it again while S1's node runs it; the planned FSM's next write \
                      (running) lands on created; the held write lands at 65 s over a later \
                      state",
            steps: vec![Step::on(
                "S1",
                JobTag::TO_DISPATCHED,
                1,
                OpEffect::Delay(Duration::from_secs(60)),
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "concurrent-terminal-writers",
            summary: "J1's node finishes at 65 s and S1 stalls 200 s as it writes done; at the \
                      205 s deadline S2 finds J1 running, writes timed_out and tells the \
                      client; S1 then writes done over it and delivers the result too",
            steps: vec![Step::on(
                "S1",
                JobTag::TO_DONE,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(200)),
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "lost-reply",
            summary: "S1's write of dispatched applies but its reply is lost: taking it as \
                      applied happens to be right, and the CAS's retry answers `dup`",
            steps: vec![Step::on(
                "S1",
                JobTag::TO_DISPATCHED,
                1,
                OpEffect::DropReply,
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "told-outcome-lost-in-failover",
            summary: "J1's node finishes at 65 s; S1 writes done and tells the client, and \
                      Redis fails over before done reaches the replica: the record says \
                      running again. At the 205 s deadline S2 times J1 out and the planned \
                      FSM tells the client a timeout after its result; the correct one's \
                      timeout loses to the outcome S1 stored in PostgreSQL first, and S2 \
                      tells that (done) instead",
            steps: vec![Step::on(
                "S1",
                JobTag::TO_DONE,
                1,
                OpEffect::FailoverAfterApply,
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        },
        Script {
            name: "told-outcome-erased-by-restart",
            summary: "J1 is done and told at 65 s; Redis restarts at 100 s and keeps nothing. \
                      At 110 s S2 finds no record and adopts J1: the planned FSM runs it \
                      again and tells the same result a second time (a dispatch the restart \
                      erased counts as redone, not as a second execution), the correct one \
                      first finds J1's outcome in PostgreSQL and tells it without running J1",
            steps: vec![Step::at(100_000, Action::RedisRestart)],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "no-fault",
            summary: "no fault: the document's code still holds each state in memory before \
                      Redis does (FSM2), `running` never, and its record skips from \
                      dispatched to done (FSM1); the others keep memory behind Redis",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile_05() -> FaultProfile {
    let transitions = vec![
        JobTag::TO_CREATED,
        JobTag::TO_DISPATCHED,
        JobTag::TO_RUNNING,
        JobTag::TO_DONE,
        JobTag::TO_FAILED,
        JobTag::TO_TIMED_OUT,
    ];
    FaultProfile {
        window: Duration::from_secs(150),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        // A transition held in the network past the 2 s Redis timeout (applied late), or
        // applied with its reply lost: the ambiguous acknowledgement.
        delay: Ratio::per_mille(120),
        delay_len: (Duration::from_secs(3), Duration::from_secs(40)),
        delay_on: Target {
            kinds: transitions.clone(),
            ..Target::processes(&["S1", "S2"])
        },
        drop_reply: Ratio::per_mille(120),
        // ... and the durable outcome's store, applied with its reply lost: sent again, it
        // conflicts with itself and reads its own outcome back.
        drop_reply_on: Target {
            kinds: [transitions.clone(), vec![JobTag::STORE_OUTCOME]].concat(),
            ..Target::processes(&["S1", "S2"])
        },
        // S1 stalls as it writes a result, for up to a few minutes: around the deadline.
        pause: Ratio::per_mille(300),
        pause_len: (Duration::from_secs(60), Duration::from_secs(250)),
        pause_on: Target {
            kinds: vec![JobTag::TO_DONE, JobTag::TO_FAILED],
            ..Target::processes(&["S1"])
        },
        // Redis fails over right after a transition, before it reaches the replica: a
        // terminal record already told is lost, and the job's record is behind its outcome.
        failover: Ratio::per_mille(60),
        failover_on: Target {
            kinds: transitions,
            ..Target::processes(&["S1", "S2"])
        },
        ..FaultProfile::quiet()
    }
}
