//! Document 003 (failure queue: duplicate counting, concurrent add), R-003-01 .. R-003-04, on
//! the proxy world of [`crate::proxy`].

use racelab_core::Variant;
use racelab_core::health::oracle::{
    ENDPOINT_RECOVERS, I_FQ1, I_FQ2, I_FQ4, I_FQ5, QUEUE_DRAINS, QUEUE_RELOADED, QueueEnd,
    RECOVERY_PROBED, REPEAT_FAILURE, STALE_RECOVERY_REFUSED, TableEnd, coverage, crash_consistent,
    endpoints_recover, episodes_counted_once, no_stale_recovery, queue_drains,
};
use racelab_core::health::tasks::SaveStyle;
use racelab_core::health::{EndpointId, HealthTag};
use racelab_core::{Duration, Property, Verdict};
use racelab_sim::explore::{FaultProfile, OpEffect, Ratio, Run, Step, WorldSpec};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};
use crate::proxy::{self, ProxyPlan, ms, request_cfg};

/// The entries of document 003.
pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
            id: "R-003-01",
            title: "Duplicate counting: total_failed incremented for every failed attempt and path",
            document: "003",
            invariant: "I-FQ1: total_failed == transitions into failed_endpoints; I-FQ2: \
                        |failed_endpoints| <= configured endpoints",
            docfix_verdict: "sufficient",
            sweep: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
            scripts: scripts_01,
            profile: proxy::profile_timeouts,
            seed_budget: 1_000,
            properties: PROPS_01,
            net: false,
            build: build_01,
            judge: judge_01,
        },
        Race {
            id: "R-003-02",
            title: "Concurrent add_failed_endpoint: the check-then-act race (threaded port)",
            document: "003",
            invariant: "I-FQ1 when several threads add endpoints",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_02,
            profile: proxy::profile_latency,
            seed_budget: 1_000,
            properties: PROPS_02,
            net: false,
            build: build_02,
            judge: judge_02,
        },
        Race {
            id: "R-003-03",
            title: "Add vs remove (recovery) race: a stale recovery erases a newer failure",
            document: "003",
            invariant: "I-FQ4: E leaves the failure queue only through a recovery probe that \
                        started after E's latest recorded failure",
            docfix_verdict: "insufficient",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_03,
            profile: proxy::profile_latency,
            seed_budget: 1_000,
            properties: PROPS_03,
            net: false,
            build: build_03,
            judge: judge_03,
        },
        Race {
            id: "R-003-04",
            title: "_save() persistence: crash consistency",
            document: "003",
            invariant: "I-FQ5: after a crash and restart the loaded queue parses and equals a \
                        state the queue had",
            docfix_verdict: "not addressed",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_04,
            profile: profile_crash,
            seed_budget: 1_000,
            properties: PROPS_04,
            net: false,
            build: build_04,
            judge: judge_04,
        },
    ]
}

// R-003-01 and R-003-03 run the recovery loop, so a probe can see an endpoint recover: each
// also declares that it then leaves the queue and ends healthy. R-003-02 and R-003-04 probe
// nothing.
const PROPS_01: &[Property] = &[
    I_FQ1,
    I_FQ2,
    QUEUE_DRAINS,
    ENDPOINT_RECOVERS,
    REPEAT_FAILURE,
    RECOVERY_PROBED,
];
const PROPS_02: &[Property] = &[I_FQ1, I_FQ2, REPEAT_FAILURE];
const PROPS_03: &[Property] = &[
    I_FQ4,
    QUEUE_DRAINS,
    ENDPOINT_RECOVERS,
    STALE_RECOVERY_REFUSED,
    RECOVERY_PROBED,
];
const PROPS_04: &[Property] = &[I_FQ5, QUEUE_RELOADED];

/// The liveness half of R-003-01 and R-003-03: the queue drains and recovered endpoints end
/// healthy.
fn recovered(run: &Run) -> Verdict {
    let Some(local) = proxy::host_state(run, 0) else {
        return Verdict::default();
    };
    queue_drains(&run.history, &QueueEnd::read(local), run.quiescent).merge(endpoints_recover(
        &run.history,
        &TableEnd::read(local),
        run.quiescent,
    ))
}

fn judge_01(run: &Run, _: &Capture) -> Verdict {
    let end = proxy::host_state(run, 0)
        .map(QueueEnd::read)
        .unwrap_or_default();
    episodes_counted_once(&run.history, &end)
        .merge(recovered(run))
        .merge(coverage(&run.history))
}

fn judge_02(run: &Run, _: &Capture) -> Verdict {
    let end = proxy::host_state(run, 0)
        .map(QueueEnd::read)
        .unwrap_or_default();
    episodes_counted_once(&run.history, &end).merge(coverage(&run.history))
}

fn judge_03(run: &Run, _: &Capture) -> Verdict {
    no_stale_recovery(&run.history)
        .merge(recovered(run))
        .merge(coverage(&run.history))
}

fn judge_04(run: &Run, _: &Capture) -> Verdict {
    crash_consistent(&run.history).merge(coverage(&run.history))
}

// ---------------------------------------------------------------------------------------------
// R-003-01

fn scripts_01() -> Vec<Script> {
    vec![Script {
        name: "three-failures",
        summary: "both endpoints are down; R1's three attempts fail on E1, E2 and E1 again, and \
                  each failure calls add_failed_endpoint: total_failed = 3 with 2 endpoints \
                  in the queue",
        steps: Vec::new(),
        expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
    }]
}

fn build_01(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Random(rng) => {
            let mut plan = proxy::random_plan(variant, rng, true);
            plan.recovery = Some((1_000, 6));
            plan
        }
        Workload::Scripted(_) => {
            let mut plan = ProxyPlan::new(variant, 2);
            for e in 1..=2 {
                plan.script(e).down.push((ms(0), ms(10_000)));
            }
            plan.request("R1", 0, request_cfg(variant, 10, true));
            plan
        }
    };
    proxy::world(plan)
}

// ---------------------------------------------------------------------------------------------
// R-003-02

fn scripts_02() -> Vec<Script> {
    vec![Script {
        name: "check-then-act",
        summary: "threads T1 and T2 both check E1 not in failed_endpoints, then both add it and \
                  count it: total_failed = 2 for one endpoint (asyncio.Lock does not exclude \
                  across threads)",
        steps: Vec::new(),
        expect: PerVariant::DOCFIX_INSUFFICIENT,
    }]
}

fn build_02(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let split = variant != Variant::Correct;
    let mut plan = ProxyPlan::new(variant, 2);
    match workload {
        Workload::Random(rng) => {
            for t in 1..=rng.between(2, 3) {
                let endpoint = EndpointId(1 + rng.below(2) as u32);
                let start = rng.below(3);
                plan.threads.push((format!("T{t}"), start, endpoint, split));
            }
        }
        Workload::Scripted(_) => {
            for t in ["T1", "T2"] {
                plan.threads.push((t.into(), 0, EndpointId(1), split));
            }
        }
    }
    proxy::world(plan)
}

// ---------------------------------------------------------------------------------------------
// R-003-03

fn scripts_03() -> Vec<Script> {
    vec![Script {
        name: "stale-recovery",
        summary: "E1 is in the failure queue; FQR starts a probe of E1 at 1 s (E1 answers \
                  slowly); E1's key is revoked at 1.5 s and R2 records a new failure of E1 at \
                  2 s; the probe's success arrives at 3 s and FQR removes E1 and marks it \
                  healthy",
        steps: Vec::new(),
        expect: PerVariant::DOCFIX_INSUFFICIENT,
    }]
}

fn build_03(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Random(rng) => {
            let mut plan = proxy::random_plan(variant, rng, true);
            plan.recovery = Some((800, 8));
            plan
        }
        Workload::Scripted(_) => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(1).down.push((ms(0), ms(500)));
            plan.script(1).revoked_at = Some(ms(1_500));
            plan.script(1)
                .slow
                .push((ms(1_000), ms(1_100), Duration::from_secs(2)));
            plan.recovery = Some((1_000, 1));
            plan.request("R1", 0, request_cfg(variant, 10, true));
            plan.request("R2", 2_000, request_cfg(variant, 10, true));
            plan
        }
    };
    proxy::world(plan)
}

// ---------------------------------------------------------------------------------------------
// R-003-04

fn scripts_04() -> Vec<Script> {
    vec![Script {
        name: "crash-mid-save",
        summary: "P adds E1 and saves, adds E2 and saves again; it crashes during the second \
                  save (after the truncate of the in-place rewrite) and on restart loads an \
                  empty file",
        steps: vec![Step::on(
            "P",
            HealthTag::PERSIST,
            7,
            OpEffect::CrashAfterApply {
                restart_after: Some(Duration::from_secs(1)),
            },
        )],
        expect: PerVariant::DOCFIX_INSUFFICIENT,
    }]
}

fn style(variant: Variant) -> SaveStyle {
    if variant == Variant::Correct {
        SaveStyle::TempAndRename
    } else {
        SaveStyle::InPlace
    }
}

fn build_04(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let mut plan = ProxyPlan::new(variant, 4);
    let adds = match workload {
        Workload::Random(rng) => (1..=rng.between(2, 4))
            .map(|_| EndpointId(1 + rng.below(4) as u32))
            .collect(),
        Workload::Scripted(_) => vec![EndpointId(1), EndpointId(2)],
    };
    plan.saver = Some((adds, style(variant)));
    proxy::world(plan)
}

/// The process crashes right after one of its operations now and then, and restarts.
fn profile_crash() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        crash: Ratio::per_mille(100),
        restart_after: (Duration::from_ms(100), Duration::from_secs(2)),
        ..proxy::profile_latency()
    }
}
