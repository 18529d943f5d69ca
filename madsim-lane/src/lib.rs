//! The madsim lane: the proxy's async code of `racelab-local` ([`LocalProxy::forward`],
//! [`LocalProxy::probe_round`], [`LocalProxy::recovery_round`]) run by many tasks against a
//! simulated upstream, under madsim's seeded random choice of the next ready task and its
//! virtual time. Latencies, failures and the time E's key is revoked are drawn from the seed;
//! the same seed gives the same run.
//!
//! Each [`Race`] is a small world whose only way to break its invariant is the race it names
//! (RACES.md R-001-01, R-001-02, R-003-03); [`run`] plays one seed and judges the event log
//! with `racelab-local`'s oracles. Only built with `--cfg madsim`.

#![cfg(madsim)]

use std::sync::Arc;
use std::time::Duration;

use madsim::rand::{Rng, thread_rng};
use madsim::runtime::Runtime;
use madsim::time::TimeHandle;
use racelab_core::health::{EndpointId, HealthConfig, Observation, ObserveOutcome};
use racelab_core::Variant;
use racelab_local::{
    ATTEMPTS_MAX, CallKind, Event, LocalProxy, LogViolation, RequestId, Upstream,
    no_dispatch_after_401, no_stale_recovery,
};

/// The endpoint whose key is revoked or that flaps (R-003-03).
pub const E: EndpointId = EndpointId(0);
/// The other endpoint.
pub const F: EndpointId = EndpointId(1);

/// A race of the madsim lane, with the world that exposes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Race {
    /// R-001-01: E's key is revoked from the start; F times out half the time; requests
    /// make up to 3 attempts (round robin from their number). A request that computed its
    /// candidate list before E's 401 was recorded retries on E after it.
    StaleCandidateList,
    /// R-001-02: E's key is revoked at a seeded time; requests on E stream for long; one
    /// attempt per request (so candidate lists play no part); the health monitor probes.
    /// A success of a stream or probe that started before the 401 makes E healthy again.
    StaleSuccess,
    /// R-003-03: E answers 500 to half the requests, its probes always succeed (the probe
    /// path checks no auth); the recovery loop probes the failed endpoints. A probe that
    /// started before a newer failure removes E from the queue.
    StaleRecovery,
}

impl Race {
    /// Every race of the lane.
    pub const ALL: [Race; 3] = [
        Race::StaleCandidateList,
        Race::StaleSuccess,
        Race::StaleRecovery,
    ];

    /// The catalog id.
    pub fn id(self) -> &'static str {
        match self {
            Race::StaleCandidateList => "R-001-01",
            Race::StaleSuccess => "R-001-02",
            Race::StaleRecovery => "R-003-03",
        }
    }
}

/// One seed's run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimRun {
    /// The seed.
    pub seed: u64,
    /// The proxy's event log.
    pub events: Vec<Event>,
    /// The first violation of the race's invariant (I-401 or I-FQ4).
    pub violation: Option<LogViolation>,
    /// Whether the race's window opened (the schedule that breaks the `Buggy` code
    /// happened), whether or not the variant broke.
    pub window: bool,
}

/// Plays `race` for `variant` under madsim with `seed`.
pub fn run(race: Race, variant: Variant, seed: u64) -> SimRun {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    let events = runtime.block_on(world(race, variant));
    let violation = match race {
        Race::StaleRecovery => no_stale_recovery(&events),
        Race::StaleCandidateList | Race::StaleSuccess => no_dispatch_after_401(&events),
    };
    let window = window_opened(race, &events);
    SimRun {
        seed,
        events,
        violation,
        window,
    }
}

/// The command that replays `seed` of `race`'s test.
pub fn replay_command(test: &str, seed: u64) -> String {
    format!(
        "RACELAB_MADSIM_SEED={seed} RUSTFLAGS=\"--cfg madsim\" cargo test --release \
         --manifest-path madsim-lane/Cargo.toml --target-dir target/madsim -- {test} --nocapture"
    )
}

/// The simulated upstream: latencies and answers drawn from madsim's seeded generator.
struct SimUpstream {
    race: Race,
    revoked_at: Duration,
}

impl SimUpstream {
    /// (latency in ms, answer) of a call arriving now.
    fn decide(&self, endpoint: EndpointId, kind: CallKind) -> (u64, Option<u16>) {
        let mut rng = thread_rng();
        let revoked = TimeHandle::current().elapsed() >= self.revoked_at;
        match (self.race, endpoint == E, kind) {
            (Race::StaleCandidateList, true, _) => (rng.gen_range(2..20), Some(401)),
            (Race::StaleCandidateList, false, _) => {
                if rng.gen_bool(0.5) {
                    (rng.gen_range(60..120), None)
                } else {
                    (rng.gen_range(5..40), Some(200))
                }
            }
            (Race::StaleSuccess, true, _) if revoked => (rng.gen_range(2..20), Some(401)),
            (Race::StaleSuccess, true, CallKind::Request) => (rng.gen_range(50..300), Some(200)),
            (Race::StaleSuccess, true, CallKind::Probe) => (rng.gen_range(5..60), Some(200)),
            (Race::StaleRecovery, true, CallKind::Request) => {
                let status = if rng.gen_bool(0.5) { 500 } else { 200 };
                (rng.gen_range(5..40), Some(status))
            }
            (Race::StaleRecovery, true, CallKind::Probe) => (rng.gen_range(20..100), Some(200)),
            (_, false, _) => (rng.gen_range(5..30), Some(200)),
        }
    }
}

impl Upstream for SimUpstream {
    async fn call(&self, endpoint: EndpointId, kind: CallKind) -> Option<u16> {
        let (latency_ms, answer) = self.decide(endpoint, kind);
        tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        answer
    }
}

const REQUESTS: u32 = 8;
const REQUEST_START_MS_MAX: u64 = 200;
const ROUNDS: u32 = 8;

async fn world(race: Race, variant: Variant) -> Vec<Event> {
    let revoked_at = match race {
        Race::StaleCandidateList => Duration::ZERO,
        Race::StaleSuccess | Race::StaleRecovery => {
            Duration::from_millis(thread_rng().gen_range(20..120))
        }
    };
    let proxy = Arc::new(LocalProxy::new(variant, HealthConfig::default(), &[E, F]));
    let upstream = Arc::new(SimUpstream { race, revoked_at });
    let attempts = match race {
        Race::StaleCandidateList => ATTEMPTS_MAX,
        Race::StaleSuccess | Race::StaleRecovery => 1,
    };
    let mut tasks = Vec::new();
    for request in 0..REQUESTS {
        let start = Duration::from_millis(thread_rng().gen_range(0..REQUEST_START_MS_MAX));
        let (proxy, upstream) = (Arc::clone(&proxy), Arc::clone(&upstream));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            proxy
                .forward(upstream.as_ref(), RequestId(request), attempts)
                .await;
        }));
    }
    if race != Race::StaleCandidateList {
        let (proxy, upstream) = (Arc::clone(&proxy), Arc::clone(&upstream));
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let pause = Duration::from_millis(thread_rng().gen_range(10..40));
                tokio::time::sleep(pause).await;
                match race {
                    Race::StaleSuccess => proxy.probe_round(upstream.as_ref()).await,
                    _ => proxy.recovery_round(upstream.as_ref()).await,
                }
            }
        }));
    }
    for task in tasks {
        // Invariant: the tasks do not panic (a panic is a bug in the proxy code).
        task.await.expect("a proxy task panicked");
    }
    proxy.log().events()
}

/// Whether the schedule that breaks the `Buggy` code happened (so that a passing `Correct`
/// run is evidence, not luck).
fn window_opened(race: Race, events: &[Event]) -> bool {
    let first_401 = events.iter().position(|e| {
        matches!(
            e,
            Event::Recorded {
                endpoint: E,
                observation: Observation::Unauthorized,
                ..
            }
        )
    });
    match race {
        // A request's attempt on F was dispatched before E's 401 and failed after it.
        Race::StaleCandidateList => first_401.is_some_and(|t_f| {
            events.iter().enumerate().any(|(i, e)| {
                matches!(
                    *e,
                    Event::Recorded { endpoint: F, observation, started, .. }
                        if observation.is_failure() && started.0 < t_f && i > t_f
                )
            })
        }),
        // A success of E from an attempt or probe started before the 401, recorded after it.
        Race::StaleSuccess => first_401.is_some_and(|t_f| {
            events.iter().enumerate().any(|(i, e)| {
                matches!(
                    *e,
                    Event::Recorded { endpoint: E, observation: Observation::Success, started, .. }
                        if started.0 < t_f && i > t_f
                )
            })
        }),
        // A failure of E added while a recovery probe of E was in flight.
        Race::StaleRecovery => events.iter().enumerate().any(|(i, e)| match *e {
            Event::Recovered {
                endpoint: E,
                started,
                ..
            } => events[started.0 + 1..i]
                .iter()
                .any(|a| matches!(a, Event::FailureAdded { endpoint: E, .. })),
            _ => false,
        }),
    }
}

/// How many of a run's recorded observations the `Correct` table refused as stale or
/// sticky (0 in the other variants).
pub fn refused(run: &SimRun) -> usize {
    run.events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Recorded {
                    outcome: ObserveOutcome::Stale | ObserveOutcome::Sticky,
                    ..
                } | Event::Recovered { removed: false, .. }
            )
        })
        .count()
}
