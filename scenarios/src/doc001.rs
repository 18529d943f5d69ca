//! Document 001 (HTTP 401 endpoint health race), R-001-01 .. R-001-04, on the proxy world of
//! [`crate::proxy`]. One asyncio event loop: only await points interleave (RACES.md 0.6),
//! so the document's `asyncio.Lock` around the writes changes nothing and `DocFix` has the
//! same table semantics as `Buggy`.

use racelab_core::Variant;
use racelab_core::health::HealthTag;
use racelab_core::health::oracle::{
    ENDPOINT_RECOVERS, I_401, I_FRESH, I_OBS, RATE_LIMIT_OBSERVED, RECOVERY_PROBED,
    STALE_OBSERVATION_REFUSED, TableEnd, UNAUTHORIZED_OBSERVED, coverage, endpoints_recover,
    fresh_evidence_only, no_selection_after_401, observations_applied,
};
use racelab_core::health::tasks::RequestConfig;
use racelab_core::{Duration, Property, Verdict};
use racelab_sim::explore::{OpEffect, Run, Step, WorldSpec};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};
use crate::proxy::{self, ProxyPlan, Req, ms, request_cfg};

const FAILS_FAILS_HOLDS: PerVariant = PerVariant::DOCFIX_INSUFFICIENT;
const ALL_HOLD: PerVariant =
    PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]);

/// The entries of document 001.
pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
            id: "R-001-01",
            title: "A 401 endpoint is still selected: race between selection and failure record",
            document: "001",
            invariant: "I-401: once a 401 from E is recorded, no attempt is dispatched to E until \
                        a probe started after the record has succeeded",
            docfix_verdict: "insufficient",
            sweep: FAILS_FAILS_HOLDS,
            scripts: scripts_01,
            profile: proxy::profile_timeouts,
            seed_budget: 1_000,
            properties: PROPS_01,
            net: false,
            build: build_01,
            judge: judge_01,
        },
        Race {
            id: "R-001-02",
            title: "A stale success or recovery write brings a 401 endpoint back (last writer wins)",
            document: "001",
            invariant: "I-401: a success observed by an attempt or probe that started before the \
                        401 record does not make E selectable",
            docfix_verdict: "insufficient",
            sweep: FAILS_FAILS_HOLDS,
            scripts: scripts_02,
            profile: proxy::profile_latency,
            seed_budget: 1_000,
            properties: PROPS_02,
            net: false,
            build: build_02,
            judge: judge_02,
        },
        Race {
            id: "R-001-03",
            title: "Converting update_health_status to async silently drops updates at any call \
                    site missing await",
            document: "001",
            invariant: "I-OBS: every observation a request makes is applied to the health table \
                        exactly once",
            docfix_verdict: "partially",
            sweep: FAILS_FAILS_HOLDS,
            scripts: scripts_03,
            profile: proxy::profile_timeouts,
            seed_budget: 1_000,
            properties: PROPS_03,
            net: false,
            build: build_03,
            judge: judge_03,
        },
        Race {
            id: "R-001-04",
            title: "asyncio.Lock with lock-free reads outside one event loop (processes; threads \
                    in the loom models)",
            document: "001",
            invariant: "I-401 across every process that selects endpoints",
            docfix_verdict: "insufficient",
            sweep: FAILS_FAILS_HOLDS,
            scripts: scripts_04,
            profile: proxy::profile_latency,
            seed_budget: 1_000,
            properties: PROPS_04,
            net: false,
            build: build_04,
            judge: judge_04,
        },
    ]
}

// R-001-01 .. 03 run the health monitor, so a probe can see an endpoint recover: each also
// declares that it then ends healthy. R-001-04's processes have a table each and no monitor.
const PROPS_01: &[Property] = &[
    I_401,
    ENDPOINT_RECOVERS,
    UNAUTHORIZED_OBSERVED,
    STALE_OBSERVATION_REFUSED,
    RECOVERY_PROBED,
];
const PROPS_02: &[Property] = &[
    I_401,
    I_FRESH,
    ENDPOINT_RECOVERS,
    UNAUTHORIZED_OBSERVED,
    STALE_OBSERVATION_REFUSED,
    RECOVERY_PROBED,
];
const PROPS_03: &[Property] = &[
    I_OBS,
    ENDPOINT_RECOVERS,
    UNAUTHORIZED_OBSERVED,
    RATE_LIMIT_OBSERVED,
    RECOVERY_PROBED,
];
const PROPS_04: &[Property] = &[I_401, UNAUTHORIZED_OBSERVED, STALE_OBSERVATION_REFUSED];

/// The table's end state (the one host of R-001-01 .. 03).
fn table_end(run: &Run) -> TableEnd {
    proxy::host_state(run, 0)
        .map(TableEnd::read)
        .unwrap_or_default()
}

fn judge_01(run: &Run, _: &Capture) -> Verdict {
    no_selection_after_401(&run.history)
        .merge(endpoints_recover(
            &run.history,
            &table_end(run),
            run.quiescent,
        ))
        .merge(coverage(&run.history))
}

fn judge_02(run: &Run, _: &Capture) -> Verdict {
    let end = table_end(run);
    no_selection_after_401(&run.history)
        .merge(fresh_evidence_only(&run.history, &end))
        .merge(endpoints_recover(&run.history, &end, run.quiescent))
        .merge(coverage(&run.history))
}

fn judge_03(run: &Run, _: &Capture) -> Verdict {
    observations_applied(&run.history)
        .merge(endpoints_recover(
            &run.history,
            &table_end(run),
            run.quiescent,
        ))
        .merge(coverage(&run.history))
}

fn judge_04(run: &Run, _: &Capture) -> Verdict {
    no_selection_after_401(&run.history).merge(coverage(&run.history))
}

/// The random world shared by R-001-01 and R-001-02: requests, and the health monitor
/// probing every endpoint each second for 6 rounds.
fn random_world(variant: Variant, rng: &mut racelab_sim::explore::SimRng) -> ProxyPlan {
    let mut plan = proxy::random_plan(variant, rng, false);
    plan.monitor = Some((1_000, 6));
    plan
}

// ---------------------------------------------------------------------------------------------
// R-001-01

fn scripts_01() -> Vec<Script> {
    vec![
        Script {
            name: "stale-list",
            summary: "R4 computes its candidates [E1, E2] at 0 s; R1 gets a 401 from E2 and \
                      records it at 0.1 s; R4's attempt on E1 times out at 10 s and its retry \
                      takes E2 from the stale list",
            steps: vec![Step::on(
                "R4",
                HealthTag::CALL,
                1,
                OpEffect::Delay(Duration::from_secs(15)),
            )],
            expect: FAILS_FAILS_HOLDS,
        },
        Script {
            name: "document-timeline",
            summary: "the document's T1-T7: R1 and R2 both select E before R1's 401 is \
                      recorded; R2's 401 is the unavoidable in-flight case, not a violation of \
                      I-401 (and no await-free block can be seen half-applied)",
            steps: Vec::new(),
            expect: ALL_HOLD,
        },
    ]
}

fn build_01(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Random(rng) => random_world(variant, rng),
        Workload::Scripted("document-timeline") => {
            let mut plan = ProxyPlan::new(variant, 1);
            plan.script(1).revoked_at = Some(ms(0));
            // The document's timeline has one attempt per request (no retry).
            let single = RequestConfig {
                attempts: 1,
                ..request_cfg(variant, 10, false)
            };
            plan.request("R1", 0, single.clone());
            plan.request("R2", 0, single);
            plan
        }
        Workload::Scripted(_) => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(2).revoked_at = Some(ms(0));
            plan.script(1).down.push((ms(50), ms(20_000)));
            plan.request("R4", 0, request_cfg(variant, 10, false));
            plan.request("R1", 100, request_cfg(variant, 10, false));
            plan
        }
    };
    proxy::world(plan)
}

// ---------------------------------------------------------------------------------------------
// R-001-02

fn scripts_02() -> Vec<Script> {
    vec![
        Script {
            name: "stale-stream",
            summary: "R0 starts a 5 s stream on E1 at 0 s; E1's key is revoked at 1 s; R1 \
                      records E1's 401 at 2 s; R0's stream ends at 5 s and marks E1 healthy; \
                      R3 selects E1 at 6 s",
            steps: Vec::new(),
            expect: FAILS_FAILS_HOLDS,
        },
        Script {
            name: "stale-probe",
            summary: "HM's probe of E1 starts at 0.9 s (E1 answers slowly); E1's key is revoked \
                      at 1 s; R1 records E1's 401 at 2 s; the probe's success arrives at 3.9 s \
                      and marks E1 healthy; R3 selects E1 at 5 s",
            steps: Vec::new(),
            expect: FAILS_FAILS_HOLDS,
        },
        Script {
            name: "stale-503",
            summary: "R0 starts a 5 s stream on E1 at 0 s; E1 answers 503 from 1 s to 3 s, and \
                      R1, R2 and R3 each record a 503 from E1 (the third makes it unhealthy) \
                      before retrying on E2; R0's stream ends at 5 s and resets E1 to healthy; \
                      R4 is offered E1 at 6 s. Every failure bumps Correct's generation, so R0's \
                      success is stale",
            steps: Vec::new(),
            expect: FAILS_FAILS_HOLDS,
        },
        Script {
            name: "stale-429",
            summary: "as stale-503 with E1 rate limiting (429) from 1 s to 3 s: three 429s make \
                      E1 unhealthy, R0's older stream success must not undo them",
            steps: Vec::new(),
            expect: FAILS_FAILS_HOLDS,
        },
    ]
}

fn build_02(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Random(rng) => random_world(variant, rng),
        Workload::Scripted("stale-probe") => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(1).revoked_at = Some(ms(1_000));
            plan.script(1)
                .slow
                .push((ms(850), ms(1_000), Duration::from_secs(3)));
            plan.monitor = Some((900, 1));
            plan.request("R1", 2_000, request_cfg(variant, 10, false));
            plan.request("R3", 5_000, request_cfg(variant, 10, false));
            plan
        }
        Workload::Scripted(name @ ("stale-503" | "stale-429")) => {
            let mut plan = ProxyPlan::new(variant, 2);
            let window = (ms(1_000), ms(3_000));
            if name == "stale-503" {
                plan.script(1).down.push(window);
            } else {
                plan.script(1).rate_limited.push(window);
            }
            plan.request("R0", 0, request_cfg(variant, 5_000, false));
            for (name, start) in [("R1", 1_000), ("R2", 1_200), ("R3", 1_400)] {
                plan.request(name, start, request_cfg(variant, 10, false));
            }
            plan.request("R4", 6_000, request_cfg(variant, 10, false));
            plan
        }
        Workload::Scripted(_) => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(1).revoked_at = Some(ms(1_000));
            plan.request("R0", 0, request_cfg(variant, 5_000, false));
            plan.request("R1", 2_000, request_cfg(variant, 10, false));
            plan.request("R3", 6_000, request_cfg(variant, 10, false));
            plan
        }
    };
    proxy::world(plan)
}

// ---------------------------------------------------------------------------------------------
// R-001-03

fn scripts_03() -> Vec<Script> {
    vec![
        Script {
            name: "missed-401",
            summary: "update_health_status became async; the 401 call site was not updated, so \
                      R1's 401 from E1 creates a coroutine that is never awaited and E1 stays \
                      selectable",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "missed-unlisted-site",
            summary: "every call site the document lists awaits, but the rate-limit path (not \
                      on the list) calls update_health_status without await: R1's 429 is lost",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
    ]
}

fn build_03(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let mut plan = match workload {
        Workload::Random(rng) => random_world(variant, rng),
        Workload::Scripted("missed-unlisted-site") => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(1).rate_limited.push((ms(0), ms(5_000)));
            plan.request("R1", 0, request_cfg(variant, 10, false));
            plan
        }
        Workload::Scripted(_) => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(1).revoked_at = Some(ms(0));
            plan.request("R1", 0, request_cfg(variant, 10, false));
            plan.request("R2", 1_000, request_cfg(variant, 10, false));
            plan
        }
    };
    for r in &mut plan.requests {
        r.cfg.missed_await = proxy::missed_await(variant);
    }
    proxy::world(plan)
}

// ---------------------------------------------------------------------------------------------
// R-001-04

fn scripts_04() -> Vec<Script> {
    vec![Script {
        name: "two-processes",
        summary: "the proxy runs two worker processes, each with its own health table; P1's \
                  request records E1's 401 at 0 s; P2's request at 1 s still selects E1. \
                  Correct keeps one table (a shared store with the generation check) for both",
        steps: Vec::new(),
        expect: FAILS_FAILS_HOLDS,
    }]
}

/// The host a request runs on: its own process for the documents' per-process table, one
/// shared table for `Correct`.
fn host(variant: Variant, process: u32) -> u32 {
    if variant == Variant::Correct {
        0
    } else {
        process
    }
}

fn build_04(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Random(rng) => {
            let mut plan = proxy::random_plan(variant, rng, false);
            let processes = rng.between(2, 3);
            for r in &mut plan.requests {
                r.host = host(variant, rng.below(processes) as u32);
            }
            plan
        }
        Workload::Scripted(_) => {
            let mut plan = ProxyPlan::new(variant, 2);
            plan.script(1).revoked_at = Some(ms(0));
            for (name, start, process) in [("P1.R1", 0, 0), ("P2.R2", 1_000, 1)] {
                plan.requests.push(Req {
                    name: name.into(),
                    start_ms: start,
                    host: host(variant, process),
                    cfg: request_cfg(variant, 10, false),
                });
            }
            plan
        }
    };
    proxy::world(plan)
}
