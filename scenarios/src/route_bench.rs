//! `racelab route-bench`: routing quality, every policy of `core::route` on the same seeded
//! upstream scenarios (R-000-15).
//!
//! A deterministic discrete-time simulation: virtual time in milliseconds, one request per
//! millisecond (1,000 per second), each answered after a latency drawn from the scenario's
//! model of its endpoint at that instant. Outcomes use common random numbers: request `i`
//! sent to endpoint `e` gets the same answer whichever policy sent it, so the loss of
//! every fixed choice is known for every request, and regret is exact rather than estimated.
//!
//! - **Loss** of a request: its latency if it succeeded within the client's 1 s timeout,
//!   otherwise the whole timeout (a fast 503 is as useless to the client as a slow one).
//! - **Regret**: the policy's summed loss minus that of the best single endpoint in
//!   hindsight (it can be negative: a policy that switches beats every fixed choice when
//!   the world changes).
//! - **Latency** p50/p99: what the client waited, over every request (a timeout counts as
//!   1 s, an error as its own latency).
//! - **To down**: user requests sent to an endpoint that was down or had its key revoked
//!   when they were sent; **after evidence**: those of them sent after the router had
//!   recorded the evidence its gate acts on, from attempts sent in the same episode: the
//!   health table's `failure_threshold` failures, or one 401 (sticky at once). Requests
//!   between the first failure and the threshold are in *to down* only: one 503 is not
//!   evidence of an outage (fail-fast's endpoint answers 503 60% of the time and is up).
//!   Probes are counted apart.
//!
//! A second experiment, [`herding`], runs several gateway instances that share their load
//! through a store read with a lag, on endpoints whose latency grows with their load: stale
//! shared load sends every instance to the same shortest queue.
//!
//! The scenarios are fixed here, not tuned to any policy: Linkerd's "Beyond Round Robin"
//! comparison (11 endpoints, median 167 ms, one forced to 2 s; its 30 s slow period halved
//! with the run so the bench takes seconds), an endpoint failing fast with 503/429, a key
//! revoked mid-run, an endpoint that goes down and recovers, and a slow drift in latency.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use racelab_core::health::Observation;
use racelab_core::route::{AttemptId, Gate, Policy, Router, RouterConfig};
use racelab_core::{EndpointId, RandomStream, Timestamp};
use serde::Serialize;

/// The client's timeout in milliseconds.
pub const TIMEOUT_MS: u64 = 1_000;
/// The seed of the bench's upstream answers and of the routers' random streams.
pub const SEED: u64 = 0x0013_0002;
/// The policy the Correct gateway ships (behind the hard gate), chosen by this bench's table
/// (see the README's route-bench section for the figures).
pub const SHIPPED: &str = "thompson-load";

/// What an endpoint does at an instant.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Answers 200 after a log-normal latency with this median (ms).
    Up(f64),
    /// Answers 200 after exactly this many ms.
    Fixed(u64),
    /// Answers 503 or 429 in 5 ms with probability `fail` (per mille), otherwise as `Up`.
    FailFast { fail_per_mille: u64, median_ms: f64 },
    /// Connection refused (a 503 in 2 ms): hard down.
    Down,
    /// Its key is revoked: 401 in 10 ms.
    Revoked,
}

/// A seeded upstream scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Its name in the table.
    pub name: &'static str,
    /// What it models.
    pub summary: &'static str,
    /// Endpoints.
    pub endpoints: u32,
    /// Virtual duration in ms (one request per ms).
    pub duration_ms: u64,
    mode: fn(u32, u64) -> Mode,
    /// When the current down or revoked episode of (endpoint, time) began, if it is one.
    down_since: fn(u32, u64) -> Option<u64>,
}

const MEDIANS_5: [f64; 5] = [100.0, 150.0, 200.0, 250.0, 300.0];

/// The bench's scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "linkerd",
            summary: "11 endpoints, median 167 ms; E0 answers in 2 s from 5 s to 20 s",
            endpoints: 11,
            duration_ms: 30_000,
            mode: |e, t| {
                if e == 0 && (5_000..20_000).contains(&t) {
                    Mode::Fixed(2_000)
                } else {
                    Mode::Up(167.0)
                }
            },
            down_since: |_, _| None,
        },
        Scenario {
            name: "fail-fast",
            summary: "E0 answers 503/429 in 5 ms 60% of the time, else 100 ms; others 150..300 ms",
            endpoints: 5,
            duration_ms: 30_000,
            mode: |e, _| {
                if e == 0 {
                    Mode::FailFast {
                        fail_per_mille: 600,
                        median_ms: 100.0,
                    }
                } else {
                    Mode::Up(MEDIANS_5[e as usize])
                }
            },
            down_since: |_, _| None,
        },
        Scenario {
            name: "revoked",
            summary: "medians 100..300 ms; the best endpoint's key is revoked at 10 s (401, sticky)",
            endpoints: 5,
            duration_ms: 30_000,
            mode: |e, t| {
                if e == 0 && t >= 10_000 {
                    Mode::Revoked
                } else {
                    Mode::Up(MEDIANS_5[e as usize])
                }
            },
            down_since: |e, t| (e == 0 && t >= 10_000).then_some(10_000),
        },
        Scenario {
            name: "recovers",
            summary: "medians 100..300 ms; the best endpoint is down from 5 s to 15 s, then back",
            endpoints: 5,
            duration_ms: 30_000,
            mode: |e, t| {
                if e == 0 && (5_000..15_000).contains(&t) {
                    Mode::Down
                } else {
                    Mode::Up(MEDIANS_5[e as usize])
                }
            },
            down_since: |e, t| (e == 0 && (5_000..15_000).contains(&t)).then_some(5_000),
        },
        Scenario {
            name: "drift",
            summary: "E0 drifts from 100 to 400 ms and E1 from 400 to 100 ms; others 200..300 ms",
            endpoints: 5,
            duration_ms: 30_000,
            mode: |e, t| {
                let x = t as f64 / 30_000.0;
                match e {
                    0 => Mode::Up(100.0 + 300.0 * x),
                    1 => Mode::Up(400.0 - 300.0 * x),
                    _ => Mode::Up(MEDIANS_5[e as usize]),
                }
            },
            down_since: |_, _| None,
        },
    ]
}

/// The routers compared: the document's ungated uniform pick, then every policy behind the
/// hard gate.
pub fn routers() -> Vec<(String, RouterConfig)> {
    let mut doc = RouterConfig::gated(Policy::Uniform);
    doc.gate = Gate::Off;
    let mut all = vec![("doc-uniform-no-gate".to_string(), doc)];
    for p in Policy::all() {
        all.push((p.name().to_string(), RouterConfig::gated(p)));
    }
    all
}

/// SplitMix64's finaliser, the hash behind the common random numbers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A log-normal latency (ms, at least 1) with this median and a spread of 0.35, from the
/// random bits `h` (Box-Muller over `h` and its mix).
fn lognormal_ms(h: u64, median: f64) -> u64 {
    let u1 = 1.0 - unit(h);
    let u2 = unit(mix(h));
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (median * (0.35 * z).exp()).round().max(1.0) as u64
}

/// The answer of endpoint `e` to the attempt numbered `key` sent at `t`: a latency (ms) and
/// an observation (before the client's timeout is applied).
fn answer(seed: u64, s: &Scenario, e: u32, t: u64, key: u64) -> (u64, Observation) {
    let h = mix(seed ^ mix(key ^ (u64::from(e) << 48)));
    let lognormal = |median: f64| lognormal_ms(h, median);
    match (s.mode)(e, t) {
        Mode::Up(median) => (lognormal(median), Observation::Success),
        Mode::Fixed(ms) => (ms, Observation::Success),
        Mode::FailFast {
            fail_per_mille,
            median_ms,
        } => {
            let roll = mix(h ^ 0xFA11) % 1000;
            if roll < fail_per_mille / 2 {
                (5, Observation::ServerError)
            } else if roll < fail_per_mille {
                (5, Observation::RateLimited)
            } else {
                (lognormal(median_ms), Observation::Success)
            }
        }
        Mode::Down => (2, Observation::ServerError),
        Mode::Revoked => (10, Observation::Unauthorized),
    }
}

/// What the client sees: the time it waited and whether it got a 200 in time.
fn client_view(latency_ms: u64, obs: Observation) -> (u64, bool) {
    if latency_ms > TIMEOUT_MS {
        (TIMEOUT_MS, false)
    } else {
        (latency_ms, obs == Observation::Success)
    }
}

fn loss(latency_ms: u64, obs: Observation) -> u64 {
    match client_view(latency_ms, obs) {
        (ms, true) => ms,
        (_, false) => TIMEOUT_MS,
    }
}

/// One policy's figures on one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The router (policy name, or the ungated document code).
    pub policy: String,
    /// Summed loss minus the best fixed endpoint's, in ms.
    pub regret_ms: i64,
    /// Requests answered 200 within the timeout, per mille.
    pub success_per_mille: u64,
    /// The client's median wait, ms.
    pub p50_ms: u64,
    /// The client's 99th percentile wait, ms.
    pub p99_ms: u64,
    /// User requests sent to a down or revoked endpoint.
    pub to_down: u64,
    /// Of those, the ones sent after the router had recorded the gate's evidence of that
    /// episode (`failure_threshold` failures, or a 401).
    pub to_down_after_evidence: u64,
    /// Requests failed by the router because no endpoint passed the gate.
    pub refused: u64,
    /// Health probes sent.
    pub probes: u64,
}

/// One scenario's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioTable {
    /// The scenario.
    pub scenario: String,
    /// What it models.
    pub summary: String,
    /// Requests sent.
    pub requests: u64,
    /// The best fixed endpoint in hindsight and its summed loss (ms).
    pub best_fixed: String,
    /// Its summed loss, ms.
    pub best_fixed_loss_ms: u64,
    /// One row per router.
    pub rows: Vec<Row>,
    /// The shipped policy's target on this scenario.
    pub target: Target,
    /// Per router, per second of virtual time: cumulative regret (ms) and success (per
    /// mille) in that second; for the plots of `--out`, not part of the JSON table.
    #[serde(skip)]
    pub series: Vec<Series>,
}

/// One router's figures over time on one scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    /// The router.
    pub policy: String,
    /// Cumulative regret at the end of each second, ms.
    pub regret_ms: Vec<i64>,
    /// Requests answered 200 in time among those sent in each second, per mille.
    pub success_per_mille: Vec<u64>,
}

/// The shipped policy's target on one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The shipped policy.
    pub policy: String,
    /// Regret at most 20% of the gated uniform policy's (or not above it when that is <= 0).
    pub within_20pct_of_uniform: bool,
    /// Regret at most the best other gated policy's plus 10% of its magnitude.
    pub within_10pct_of_best_other: bool,
    /// The best other gated policy.
    pub best_other: String,
    /// No user request to a down or revoked endpoint after the router had evidence of it.
    pub none_to_known_down: bool,
}

/// The whole bench.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteBench {
    /// The seed.
    pub seed: u64,
    /// The client's timeout, ms.
    pub timeout_ms: u64,
    /// The shipped policy.
    pub shipped: String,
    /// One table per scenario.
    pub scenarios: Vec<ScenarioTable>,
    /// Several instances sharing load with a lag: where stale load makes them herd.
    pub herding: HerdingTable,
}

/// Runs every router on every scenario, with the bench's [`SEED`] (the table the gate holds).
pub fn run() -> RouteBench {
    run_seeded(SEED)
}

/// Runs every router on every scenario with `seed` for the upstream answers and the
/// routers' random streams (other seeds check that a policy is not tuned to [`SEED`]).
pub fn run_seeded(seed: u64) -> RouteBench {
    let scenarios = scenarios()
        .iter()
        .map(|s| {
            let (best_fixed, best_loss, best_per_second) = best_fixed(seed, s);
            let (rows, series): (Vec<Row>, Vec<Series>) = routers()
                .into_iter()
                .map(|(name, config)| simulate(seed, s, &name, config, best_loss, &best_per_second))
                .unzip();
            let target = target(&rows);
            ScenarioTable {
                scenario: s.name.to_string(),
                summary: s.summary.to_string(),
                requests: s.duration_ms,
                best_fixed: EndpointId(best_fixed).to_string(),
                best_fixed_loss_ms: best_loss,
                rows,
                target,
                series,
            }
        })
        .collect();
    RouteBench {
        seed,
        timeout_ms: TIMEOUT_MS,
        shipped: SHIPPED.to_string(),
        scenarios,
        herding: herding(seed),
    }
}

/// The best single endpoint in hindsight: the one whose answers to every request (the same
/// common random numbers) lose least.
/// Also returns its cumulative loss at the end of each second.
fn best_fixed(seed: u64, s: &Scenario) -> (u32, u64, Vec<u64>) {
    let (e, total) = (0..s.endpoints)
        .map(|e| {
            let total: u64 = (0..s.duration_ms)
                .map(|t| {
                    let (ms, obs) = answer(seed, s, e, t, t);
                    loss(ms, obs)
                })
                .sum();
            (e, total)
        })
        .min_by_key(|&(e, total)| (total, e))
        .unwrap_or((0, 0));
    let mut cumulative = Vec::new();
    let mut sum = 0u64;
    for t in 0..s.duration_ms {
        let (ms, obs) = answer(seed, s, e, t, t);
        sum += loss(ms, obs);
        if (t + 1).is_multiple_of(1000) {
            cumulative.push(sum);
        }
    }
    (e, total, cumulative)
}

/// Probes draw their answers from keys above every request's.
const PROBE_KEY_BASE: u64 = 1 << 40;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Done {
    at_ms: u64,
    sent_ms: u64,
    attempt: u64,
    endpoint: u32,
    observation: u8,
    probe: bool,
}

fn obs_code(o: Observation) -> u8 {
    match o {
        Observation::Success => 0,
        Observation::Unauthorized => 1,
        Observation::RateLimited => 2,
        Observation::ServerError => 3,
        Observation::Timeout => 4,
    }
}

fn code_obs(c: u8) -> Observation {
    match c {
        0 => Observation::Success,
        1 => Observation::Unauthorized,
        2 => Observation::RateLimited,
        3 => Observation::ServerError,
        _ => Observation::Timeout,
    }
}

fn simulate(
    seed: u64,
    s: &Scenario,
    name: &str,
    config: RouterConfig,
    best_loss: u64,
    best_per_second: &[u64],
) -> (Row, Series) {
    let mut series = Series {
        policy: name.to_string(),
        regret_ms: Vec::new(),
        success_per_mille: Vec::new(),
    };
    let mut second_successes = 0u64;
    let ids: Vec<EndpointId> = (0..s.endpoints).map(EndpointId).collect();
    // Invariant: the scenarios have 1..=ENDPOINTS_MAX distinct endpoints.
    let mut router = Router::new(config, &ids).expect("the scenarios' endpoints are valid");
    let mut rng = RandomStream::for_process(seed, 0, 0);
    let mut heap: BinaryHeap<Reverse<Done>> = BinaryHeap::new();
    let mut waits = Vec::with_capacity(s.duration_ms as usize);
    let mut total_loss: u64 = 0;
    let mut successes = 0u64;
    let (mut to_down, mut after_evidence, mut refused, mut probes) = (0u64, 0u64, 0u64, 0u64);
    // Per endpoint, the episode (its start) the router has evidence of and the failures it
    // recorded in it: evidence is what the gate acts on, `failure_threshold` failures of
    // attempts sent in the episode, or one 401 (sticky at once).
    let threshold = config.health.failure_threshold.max(1);
    let mut evidence: Vec<(Option<u64>, u32)> = vec![(None, 0); s.endpoints as usize];
    let mut probe_key = PROBE_KEY_BASE;
    let mut t = 0u64;
    while t < s.duration_ms || !heap.is_empty() {
        let now = Timestamp::from_ms(t);
        while heap.peek().is_some_and(|d| d.0.at_ms <= t) {
            let Some(Reverse(d)) = heap.pop() else { break };
            let obs = code_obs(d.observation);
            if obs.is_failure()
                && let Some(since) = (s.down_since)(d.endpoint, d.sent_ms)
            {
                let seen = &mut evidence[d.endpoint as usize];
                if seen.0 != Some(since) {
                    *seen = (Some(since), 0);
                }
                seen.1 = if obs == Observation::Unauthorized {
                    seen.1.max(threshold)
                } else {
                    seen.1 + 1
                };
            }
            // Invariant: every attempt is recorded exactly once, at its completion.
            let recorded = router.record(AttemptId(d.attempt), now, obs);
            assert!(recorded.is_ok());
        }
        if t < s.duration_ms {
            while let Some(a) = router.poll_probe(now) {
                probes += 1;
                let (ms, obs) = answer(seed, s, a.endpoint.0, t, probe_key);
                probe_key += 1;
                let (wait, ok) = client_view(ms, obs);
                let obs = if ok || ms <= TIMEOUT_MS {
                    obs
                } else {
                    Observation::Timeout
                };
                heap.push(Reverse(Done {
                    at_ms: t + wait,
                    sent_ms: t,
                    attempt: a.id.0,
                    endpoint: a.endpoint.0,
                    observation: obs_code(obs),
                    probe: true,
                }));
            }
            match router.pick(now, &mut rng) {
                Ok(a) => {
                    let e = a.endpoint.0;
                    if let Some(since) = (s.down_since)(e, t) {
                        to_down += 1;
                        let seen = evidence[e as usize];
                        if seen.0 == Some(since) && seen.1 >= threshold {
                            after_evidence += 1;
                        }
                    }
                    let (ms, obs) = answer(seed, s, e, t, t);
                    let (wait, ok) = client_view(ms, obs);
                    total_loss += loss(ms, obs);
                    successes += u64::from(ok);
                    second_successes += u64::from(ok);
                    waits.push(wait);
                    let obs = if ms > TIMEOUT_MS {
                        Observation::Timeout
                    } else {
                        obs
                    };
                    heap.push(Reverse(Done {
                        at_ms: t + wait,
                        sent_ms: t,
                        attempt: a.id.0,
                        endpoint: e,
                        observation: obs_code(obs),
                        probe: false,
                    }));
                }
                Err(_) => {
                    refused += 1;
                    total_loss += TIMEOUT_MS;
                    waits.push(0);
                }
            }
        }
        if t < s.duration_ms && (t + 1).is_multiple_of(1000) {
            let k = series.regret_ms.len();
            let best = best_per_second.get(k).copied().unwrap_or(0);
            series.regret_ms.push(total_loss as i64 - best as i64);
            series.success_per_mille.push(second_successes);
            second_successes = 0;
        }
        t += 1;
    }
    waits.sort_unstable();
    let pct = |p: usize| waits.get((waits.len() * p / 100).min(waits.len().saturating_sub(1)));
    let row = Row {
        policy: name.to_string(),
        regret_ms: total_loss as i64 - best_loss as i64,
        success_per_mille: successes * 1000 / s.duration_ms.max(1),
        p50_ms: pct(50).copied().unwrap_or(0),
        p99_ms: pct(99).copied().unwrap_or(0),
        to_down,
        to_down_after_evidence: after_evidence,
        refused,
        probes,
    };
    (row, series)
}

/// The shipped policy's target against the other rows (the ungated document row is not a
/// competitor: it is the bug).
fn target(rows: &[Row]) -> Target {
    let gated: Vec<&Row> = rows
        .iter()
        .filter(|r| r.policy != "doc-uniform-no-gate")
        .collect();
    let find = |name: &str| gated.iter().find(|r| r.policy == name);
    let (Some(shipped), Some(uniform)) = (find(SHIPPED), find("uniform")) else {
        return Target {
            policy: SHIPPED.to_string(),
            within_20pct_of_uniform: false,
            within_10pct_of_best_other: false,
            best_other: String::new(),
            none_to_known_down: false,
        };
    };
    let best_other = gated
        .iter()
        .filter(|r| r.policy != SHIPPED)
        .min_by_key(|r| r.regret_ms);
    let (best_name, best_regret) =
        best_other.map_or((String::new(), 0), |r| (r.policy.clone(), r.regret_ms));
    let within_20 = if uniform.regret_ms > 0 {
        shipped.regret_ms * 5 <= uniform.regret_ms
    } else {
        shipped.regret_ms <= uniform.regret_ms
    };
    let within_10 = shipped.regret_ms * 10 <= best_regret * 10 + best_regret.abs();
    Target {
        policy: SHIPPED.to_string(),
        within_20pct_of_uniform: within_20,
        within_10pct_of_best_other: within_10,
        best_other: best_name,
        none_to_known_down: shipped.to_down_after_evidence == 0,
    }
}

/// The herding experiment's figures: several gateway instances sharing their load through
/// a store with a lag, on endpoints whose latency grows with their load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HerdingTable {
    /// What it models.
    pub summary: String,
    /// Gateway instances.
    pub instances: u32,
    /// Endpoints.
    pub endpoints: u32,
    /// Requests sent (all instances).
    pub requests: u64,
    /// One row per (policy, sharing).
    pub rows: Vec<HerdRow>,
}

/// One policy under one way of sharing load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HerdRow {
    /// The policy.
    pub policy: String,
    /// `local` (each instance counts only its own requests), or `shared-<lag>ms`: every
    /// instance publishes its outstanding requests per endpoint and reads the others' every
    /// `lag` ms (`shared-0ms`: exact global load).
    pub sharing: String,
    /// Requests answered 200 within the timeout, per mille.
    pub success_per_mille: u64,
    /// The client's median wait, ms.
    pub p50_ms: u64,
    /// The client's 99th percentile wait, ms.
    pub p99_ms: u64,
    /// The most requests in flight at one endpoint at any instant (a fair share is the
    /// total in flight over the endpoints).
    pub peak_in_flight: u64,
    /// Per second, the share of the requests sent that went to the most chosen endpoint,
    /// per mille, as the median over the seconds of the run (a fair share is 1000 / endpoints).
    pub top_share_per_mille: u64,
}

/// Gateway instances in the herding experiment.
pub const HERD_INSTANCES: u32 = 4;
/// Endpoints in the herding experiment.
pub const HERD_ENDPOINTS: u32 = 10;
/// Its duration, ms of virtual time (one request per ms across the instances).
pub const HERD_DURATION_MS: u64 = 20_000;
/// An endpoint's latency grows by this many ms per request already in flight there.
pub const HERD_MS_PER_IN_FLIGHT: u64 = 8;
/// The lags of the shared load, ms.
pub const HERD_LAGS_MS: [u64; 3] = [0, 100, 1_000];

/// The policies the herding table compares (the Thompson ones without shared load: the
/// shipped one reads its own load only).
fn herd_policies() -> Vec<Policy> {
    vec![
        Policy::Uniform,
        Policy::LeastLoaded,
        Policy::LeastOutstanding,
        Policy::PeakEwma { tau_ms: 10_000.0 },
        Policy::DiscountedThompson {
            gamma: 0.999,
            censored: true,
        },
        Policy::LoadAwareThompson { gamma: 0.999 },
    ]
}

/// Runs the herding experiment: [`HERD_INSTANCES`] gateways, each with its own router and
/// random stream, take turns sending one request per ms to [`HERD_ENDPOINTS`] equal
/// endpoints (log-normal latency, median 40 ms, plus [`HERD_MS_PER_IN_FLIGHT`] per request in
/// flight there when it arrives, so piling onto one endpoint is slow and past the 1 s timeout
/// fails). Each load-based policy runs with local load only and with load shared at each lag
/// of [`HERD_LAGS_MS`]; stale shared load makes every instance see the same shortest queue.
pub fn herding(seed: u64) -> HerdingTable {
    let mut rows = Vec::new();
    for policy in herd_policies() {
        let load_based = matches!(
            policy,
            Policy::LeastLoaded | Policy::LeastOutstanding | Policy::PeakEwma { .. }
        );
        rows.push(herd_run(seed, policy, None));
        if load_based {
            for lag in HERD_LAGS_MS {
                rows.push(herd_run(seed, policy, Some(lag)));
            }
        }
    }
    HerdingTable {
        summary: format!(
            "{HERD_INSTANCES} gateway instances, {HERD_ENDPOINTS} equal endpoints (median 40 ms \
             + {HERD_MS_PER_IN_FLIGHT} ms per request in flight there), 1,000 requests per \
             second in all, load shared through a store read every lag ms"
        ),
        instances: HERD_INSTANCES,
        endpoints: HERD_ENDPOINTS,
        requests: HERD_DURATION_MS,
        rows,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct HerdDone {
    at_ms: u64,
    instance: u32,
    attempt: u64,
    endpoint: u32,
    /// The router learns the outcome now (at the answer, or at the client's timeout).
    record: Option<Observation>,
    /// The endpoint finishes the request now (it works on after a client timed out).
    release: bool,
}

fn herd_run(seed: u64, policy: Policy, lag_ms: Option<u64>) -> HerdRow {
    let n = HERD_ENDPOINTS as usize;
    let ids: Vec<EndpointId> = (0..HERD_ENDPOINTS).map(EndpointId).collect();
    let mut routers: Vec<Router> = (0..HERD_INSTANCES)
        .map(|_| {
            // Invariant: HERD_ENDPOINTS is within 1..=ENDPOINTS_MAX.
            Router::new(RouterConfig::gated(policy), &ids).expect("valid endpoints")
        })
        .collect();
    let mut rngs: Vec<RandomStream> = (0..HERD_INSTANCES)
        .map(|k| RandomStream::for_process(seed, k as u16, 0))
        .collect();
    // What each instance last published (its own outstanding per endpoint).
    let mut published: Vec<Vec<u32>> = vec![vec![0; n]; HERD_INSTANCES as usize];
    let mut in_flight = vec![0u64; n];
    let mut heap: BinaryHeap<Reverse<HerdDone>> = BinaryHeap::new();
    let mut waits = Vec::with_capacity(HERD_DURATION_MS as usize);
    let (mut successes, mut peak) = (0u64, 0u64);
    let mut second = vec![0u64; n];
    let mut top_shares = Vec::new();
    let mut t = 0u64;
    while t < HERD_DURATION_MS || !heap.is_empty() {
        let now = Timestamp::from_ms(t);
        while heap.peek().is_some_and(|d| d.0.at_ms <= t) {
            let Some(Reverse(d)) = heap.pop() else { break };
            if d.release {
                in_flight[d.endpoint as usize] -= 1;
            }
            if let Some(obs) = d.record {
                let router = &mut routers[d.instance as usize];
                let recorded = router.record(AttemptId(d.attempt), now, obs);
                assert!(recorded.is_ok(), "every attempt is recorded once");
            }
        }
        if t >= HERD_DURATION_MS {
            t += 1;
            continue;
        }
        if let Some(lag) = lag_ms
            && t.is_multiple_of(lag.max(1))
        {
            for (k, r) in routers.iter().enumerate() {
                published[k].copy_from_slice(r.own_load());
            }
            for (k, r) in routers.iter_mut().enumerate() {
                let peers: Vec<u32> = (0..n)
                    .map(|e| {
                        (0..HERD_INSTANCES as usize)
                            .filter(|j| *j != k)
                            .map(|j| published[j][e])
                            .sum()
                    })
                    .collect();
                // Invariant: one figure per endpoint.
                r.set_peer_load(&peers).expect("one figure per endpoint");
            }
        }
        let k = (t % u64::from(HERD_INSTANCES)) as usize;
        // Timeouts can close an endpoint in an instance's gate: it probes it back (a probe
        // is answered like a request, without adding to the endpoint's load).
        while let Some(p) = routers[k].poll_probe(now) {
            let e = p.endpoint.0 as usize;
            let latency = 40 + HERD_MS_PER_IN_FLIGHT * in_flight[e];
            let (at, obs) = if latency <= TIMEOUT_MS {
                (t + latency, Observation::Success)
            } else {
                (t + TIMEOUT_MS, Observation::Timeout)
            };
            heap.push(Reverse(HerdDone {
                at_ms: at,
                instance: k as u32,
                attempt: p.id.0,
                endpoint: e as u32,
                record: Some(obs),
                release: false,
            }));
        }
        let Ok(a) = routers[k].pick(now, &mut rngs[k]) else {
            // Every endpoint is closed in this instance's gate: the request fails at once.
            waits.push(TIMEOUT_MS);
            t += 1;
            continue;
        };
        let e = a.endpoint.0 as usize;
        let base = lognormal_ms(mix(seed ^ mix(t ^ 0x4E5D)), 40.0);
        let latency = base + HERD_MS_PER_IN_FLIGHT * in_flight[e];
        in_flight[e] += 1;
        peak = peak.max(in_flight[e]);
        second[e] += 1;
        let ok = latency <= TIMEOUT_MS;
        successes += u64::from(ok);
        let wait = latency.min(TIMEOUT_MS);
        waits.push(wait);
        let done = HerdDone {
            at_ms: t + latency,
            instance: k as u32,
            attempt: a.id.0,
            endpoint: e as u32,
            record: Some(Observation::Success),
            release: true,
        };
        if ok {
            heap.push(Reverse(done));
        } else {
            // The client gives up at its timeout; the endpoint works on until it is done.
            heap.push(Reverse(HerdDone {
                at_ms: t + TIMEOUT_MS,
                record: Some(Observation::Timeout),
                release: false,
                ..done
            }));
            heap.push(Reverse(HerdDone {
                record: None,
                ..done
            }));
        }
        if (t + 1).is_multiple_of(1000) {
            let sent: u64 = second.iter().sum();
            let top = second.iter().copied().max().unwrap_or(0);
            top_shares.push(top * 1000 / sent.max(1));
            second.iter_mut().for_each(|c| *c = 0);
        }
        t += 1;
    }
    waits.sort_unstable();
    top_shares.sort_unstable();
    let pct = |p: usize| {
        let i = (waits.len() * p / 100).min(waits.len().saturating_sub(1));
        waits.get(i).copied().unwrap_or(0)
    };
    HerdRow {
        policy: policy.name().to_string(),
        sharing: lag_ms.map_or("local".to_string(), |l| format!("shared-{l}ms")),
        success_per_mille: successes * 1000 / HERD_DURATION_MS,
        p50_ms: pct(50),
        p99_ms: pct(99),
        peak_in_flight: peak,
        top_share_per_mille: top_shares.get(top_shares.len() / 2).copied().unwrap_or(0),
    }
}

/// Line colours, one per router in table order.
const COLOURS: [&str; 11] = [
    "#999999", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#17becf", "#000000", "#bcbd22",
];

/// One SVG line chart: a polyline per series, one point per second.
fn chart(title: &str, lines: &[(&str, Vec<f64>)]) -> String {
    let (w, h, pad) = (640.0, 260.0, 40.0);
    let n = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(0).max(2);
    let all = lines.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = all.fold((0.0f64, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / span;
    let (zero_y, right, hi_y, lo_y) = (y(0.0_f64.clamp(lo, hi)), w - pad, y(hi) + 4.0, y(lo));
    let title = escape(title);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\
         <text x=\"{pad}\" y=\"20\" font-size=\"13\">{title}</text>\
         <line x1=\"{pad}\" y1=\"{zero_y:.1}\" x2=\"{right:.1}\" y2=\"{zero_y:.1}\" \
         stroke=\"#ccc\"/>\
         <text x=\"2\" y=\"{hi_y:.1}\" font-size=\"10\">{hi:.0}</text>\
         <text x=\"2\" y=\"{lo_y:.1}\" font-size=\"10\">{lo:.0}</text>"
    );
    for (k, (name, values)) in lines.iter().enumerate() {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let colour = COLOURS[k % COLOURS.len()];
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\">\
             <title>{}</title></polyline>",
            points.join(" "),
            escape(name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained HTML page with, per scenario, the cumulative regret and the success rate
/// per second of every router as SVG line charts.
pub fn html(bench: &RouteBench) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>racelab route-bench</title>\
         </head><body style=\"font-family:sans-serif\"><h1>route-bench</h1>",
    );
    page.push_str(&format!(
        "<p>Seed {:#x}, 1,000 requests per second of virtual time, client timeout {} ms; \
         shipped: {}.</p><p>",
        bench.seed,
        bench.timeout_ms,
        escape(&bench.shipped)
    ));
    let names: Vec<&str> = bench
        .scenarios
        .first()
        .map(|s| s.series.iter().map(|r| r.policy.as_str()).collect())
        .unwrap_or_default();
    for (k, name) in names.iter().enumerate() {
        page.push_str(&format!(
            "<span style=\"color:{}\">&#9632; {}</span> ",
            COLOURS[k % COLOURS.len()],
            escape(name)
        ));
    }
    page.push_str("</p>");
    for s in &bench.scenarios {
        page.push_str(&format!(
            "<h2>{}</h2><p>{}</p>",
            escape(&s.scenario),
            escape(&s.summary)
        ));
        let regret: Vec<(&str, Vec<f64>)> = s
            .series
            .iter()
            .map(|r| {
                let v = r.regret_ms.iter().map(|ms| *ms as f64 / 1000.0).collect();
                (r.policy.as_str(), v)
            })
            .collect();
        let success: Vec<(&str, Vec<f64>)> = s
            .series
            .iter()
            .map(|r| {
                let v = r
                    .success_per_mille
                    .iter()
                    .map(|m| *m as f64 / 10.0)
                    .collect();
                (r.policy.as_str(), v)
            })
            .collect();
        page.push_str(&chart(
            "cumulative regret (s) per second of the run",
            &regret,
        ));
        page.push_str(&chart("success rate (%) per second of the run", &success));
    }
    let h = &bench.herding;
    page.push_str(&format!(
        "<h2>herding</h2><p>{}</p><table border=\"1\" cellpadding=\"3\" \
         style=\"border-collapse:collapse\"><tr><th>policy</th><th>load</th>\
         <th>success %</th><th>p50 ms</th><th>p99 ms</th><th>peak in flight at one \
         endpoint</th><th>top endpoint's share %</th></tr>",
        escape(&h.summary)
    ));
    for r in &h.rows {
        page.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{:.1}</td></tr>",
            escape(&r.policy),
            escape(&r.sharing),
            r.success_per_mille as f64 / 10.0,
            r.p50_ms,
            r.p99_ms,
            r.peak_in_flight,
            r.top_share_per_mille as f64 / 10.0
        ));
    }
    page.push_str("</table>");
    page.push_str("</body></html>\n");
    page
}
