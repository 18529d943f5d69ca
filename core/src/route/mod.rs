//! Document 000's endpoint router (R-000-15): which upstream endpoint a request goes to.
//!
//! The document's `proxy_pool.py:pick()` draws an endpoint uniformly at random and ignores
//! history, so a dead endpoint keeps its share of the traffic (R-000-15). Its fix, "weighted
//! random or a bandit", is partial: every exploring policy still picks a hard-down endpoint
//! with non-zero probability. This module puts ten policies side by side behind one
//! interface, [`Router`], and behind one **hard health gate**:
//!
//! | [`Policy`]          | picks among the gate's healthy endpoints                             |
//! |---------------------|----------------------------------------------------------------------|
//! | `Uniform`           | uniformly at random (the document's code)                            |
//! | `Weighted`          | at random, weighted by each endpoint's decayed mean reward           |
//! | `RoundRobin`        | in turn                                                              |
//! | `LeastOutstanding`  | the less loaded of two random endpoints (P2C)                        |
//! | `LeastLoaded`       | the least loaded of all (join the shortest queue; herds on stale load) |
//! | `PeakEwma`          | the cheaper of two random endpoints, cost = peak-EWMA latency × (outstanding + 1) (Finagle, Linkerd) |
//! | `Ucb1`              | the highest mean reward + sqrt(2 ln t / n) (Auer et al. 2002)         |
//! | `SlidingWindowUcb`  | UCB over the last `window` outcomes only (Garivier and Moulines 2011) |
//! | `DiscountedThompson`| the highest draw from a Gaussian posterior over discounted reward sums (Raj and Kalyani 2017, with Gaussian instead of Beta posteriors); optionally `censored`: attempts in flight count as outcomes whose loss is at least their age |
//! | `LoadAwareThompson` | censored discounted Thompson, each draw moved by a fitted reward-per-load slope × (load now − the mean load its outcomes were dispatched at): Thompson where latency ignores load, load-spreading where it queues (the shipped policy) |
//!
//! The gate is document 001's health table ([`HealthTable`], variant `Correct`), not a second
//! FSM: per-endpoint [`Generation`], sticky [`Status::AuthFailed`] on 401 until a probe started
//! after it succeeds, `failure_threshold` consecutive failures make an endpoint unhealthy. A
//! request is only ever dispatched to an endpoint the table calls healthy; an unhealthy one
//! gets probes only, at most one in flight per endpoint (the probe token) and at most one per
//! `probe_interval` ([`Router::poll_probe`]). [`Gate::Off`] exists to measure the document's
//! ungated code next to it.
//!
//! Feedback is per attempt: [`Router::pick`] and [`Router::poll_probe`] hand out an
//! [`AttemptId`] that carries the endpoint and the generation it started at; [`Router::record`]
//! consumes it, so an outcome is applied once, to the endpoint that produced it, and a success
//! that started before a newer failure cannot clear it.
//!
//! Sans-IO: time is a parameter (`now`), and every random draw comes from the caller's
//! [`RandomStream`] (the process's seeded stream). Floating point is used for the bandits'
//! statistics only, in a fixed order of operations over endpoints in configured order, so a
//! run replays bit for bit.
//!
//! Method kinds: getters ([`Router::health`], [`Router::in_flight`], [`Router::policy`]);
//! inputs ([`Router::record`]); commands that output an attempt ([`Router::pick`],
//! [`Router::poll_probe`]). A caller drains probes with `poll_probe` until `None` before it
//! picks for the requests of the same instant.

pub mod affinity;
pub mod oracle;
mod policy;
pub mod pool;
mod tag;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::health::{Generation, HealthConfig, HealthTable, Observation, Source, Status};
use crate::ids::EndpointId;
use crate::ops::RandomStream;
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

use policy::Stats;
pub use policy::{Policy, WINDOW_MAX};
pub use tag::{Outcome, RouteTag};

/// The most endpoints a router serves (a limit on its per-pick work).
pub const ENDPOINTS_MAX: usize = 64;
/// The most attempts in flight at once (a limit on the attempt table).
pub const IN_FLIGHT_MAX: usize = 1 << 20;

/// Whether the hard health gate is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Gate {
    /// Requests go only to endpoints the health table calls healthy; the others get probes.
    Hard,
    /// No gate: every endpoint is a candidate (the document's `pick()`); kept to measure it.
    Off,
}

/// A router's tuning.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// The policy.
    pub policy: Policy,
    /// The gate.
    pub gate: Gate,
    /// The health table's thresholds.
    pub health: HealthConfig,
    /// The least time between two probes of one unhealthy endpoint.
    pub probe_interval: Duration,
    /// The client's timeout: an outcome's latency is capped here when it becomes a reward.
    pub timeout: Duration,
}

impl RouterConfig {
    /// `policy` behind the hard gate, with a 3-failure threshold, a probe per second and a
    /// 1 s timeout.
    pub fn gated(policy: Policy) -> RouterConfig {
        RouterConfig {
            policy,
            gate: Gate::Hard,
            health: HealthConfig::default(),
            probe_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}

/// One attempt handed out by the router; [`Router::record`] takes it back with its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId(pub u64);

/// An attempt: where it goes and whether it is a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attempt {
    /// Its identity, for [`Router::record`].
    pub id: AttemptId,
    /// The endpoint.
    pub endpoint: EndpointId,
    /// A health probe (not a user request).
    pub probe: bool,
}

/// Why the router refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No endpoint passes the gate: fail the request fast rather than send it to a down one.
    #[error("no healthy endpoint: every endpoint is down or its key is revoked")]
    NoHealthyEndpoint,
    /// The outcome names an attempt that is not in flight (unknown, or already recorded).
    #[error("attempt {0} is not in flight (unknown or already recorded)")]
    UnknownAttempt(u64),
    /// Too many attempts in flight; record outcomes before picking again.
    #[error("too many attempts in flight (the limit is {IN_FLIGHT_MAX})")]
    TooManyInFlight,
}

/// Why a router could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No endpoints, or more than [`ENDPOINTS_MAX`], or one twice.
    #[error("a router needs 1 to {ENDPOINTS_MAX} distinct endpoints")]
    Endpoints,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct InFlight {
    index: usize,
    generation: Generation,
    started: Timestamp,
    probe: bool,
    /// The endpoint's load when the policy chose it (0 for a probe).
    load: u32,
}

/// The router: the health gate, the policy's statistics and the attempts in flight.
#[derive(Clone, Debug)]
pub struct Router {
    config: RouterConfig,
    endpoints: Vec<EndpointId>,
    health: HealthTable,
    stats: Stats,
    outstanding: Vec<u32>,
    start_sum_ms: Vec<u64>,
    age_sum_ms: Vec<u64>,
    probe_in_flight: Vec<bool>,
    last_probe: Vec<Option<Timestamp>>,
    in_flight: BTreeMap<AttemptId, InFlight>,
    next_attempt: u64,
    candidates: Vec<usize>,
    /// Outcomes recorded per endpoint (requests and probes), exact integers (P2).
    recorded: Vec<u64>,
    /// Other instances' outstanding requests per endpoint, as last read from the shared
    /// store ([`Router::set_peer_load`]); added to this router's own in every load figure.
    peer_load: Vec<u32>,
    /// `outstanding + peer_load`, the load figures the policy reads.
    load: Vec<u32>,
}

impl Router {
    /// A router over `endpoints` (in configured order).
    pub fn new(config: RouterConfig, endpoints: &[EndpointId]) -> Result<Router, ConfigError> {
        let mut sorted = endpoints.to_vec();
        sorted.sort();
        sorted.dedup();
        if endpoints.is_empty()
            || endpoints.len() > ENDPOINTS_MAX
            || sorted.len() != endpoints.len()
        {
            return Err(ConfigError::Endpoints);
        }
        let n = endpoints.len();
        Ok(Router {
            config,
            endpoints: endpoints.to_vec(),
            health: HealthTable::new(Variant::Correct, config.health, endpoints),
            stats: Stats::new(config.policy, n, config.timeout.as_ms()),
            outstanding: vec![0; n],
            start_sum_ms: vec![0; n],
            age_sum_ms: vec![0; n],
            probe_in_flight: vec![false; n],
            last_probe: vec![None; n],
            in_flight: BTreeMap::new(),
            next_attempt: 0,
            candidates: Vec::with_capacity(n),
            recorded: vec![0; n],
            peer_load: vec![0; n],
            load: vec![0; n],
        })
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// The health table behind the gate.
    pub fn health(&self) -> &HealthTable {
        &self.health
    }

    /// Attempts handed out and not yet recorded.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The outcomes recorded for `endpoint` so far (requests and probes): R-000-15's P2 says
    /// this equals the outcomes its attempts produced; `None` for an unknown endpoint.
    pub fn recorded(&self, endpoint: EndpointId) -> Option<u64> {
        let index = self.endpoints.iter().position(|e| *e == endpoint)?;
        Some(self.recorded[index])
    }

    /// Sets the other gateway instances' outstanding requests per endpoint (in configured
    /// order), as read from the store they share them through. The read may be stale: that
    /// lag is what makes instances herd (`route-bench`'s herding table). Until it is called,
    /// and after a call with the wrong length (an error), the router knows only its own load.
    pub fn set_peer_load(&mut self, peer: &[u32]) -> Result<(), ConfigError> {
        if peer.len() != self.endpoints.len() {
            self.peer_load.iter_mut().for_each(|p| *p = 0);
            return Err(ConfigError::Endpoints);
        }
        self.peer_load.copy_from_slice(peer);
        Ok(())
    }

    /// This router's own outstanding requests (not probes) per endpoint, in configured
    /// order: what an instance publishes for the others.
    pub fn own_load(&self) -> &[u32] {
        &self.outstanding
    }

    /// Whether the gate lets requests go to `endpoint` now.
    pub fn passes_gate(&self, endpoint: EndpointId) -> bool {
        self.config.gate == Gate::Off || self.health.is_healthy(endpoint)
    }

    /// Picks the endpoint for a user request at `now`, drawing from `rng`.
    pub fn pick(&mut self, now: Timestamp, rng: &mut RandomStream) -> Result<Attempt, RouteError> {
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            return Err(RouteError::TooManyInFlight);
        }
        self.candidates.clear();
        for (i, e) in self.endpoints.iter().enumerate() {
            if self.config.gate == Gate::Off || self.health.is_healthy(*e) {
                self.candidates.push(i);
            }
        }
        if self.candidates.is_empty() {
            return Err(RouteError::NoHealthyEndpoint);
        }
        for i in 0..self.endpoints.len() {
            // The summed age of the requests in flight: outstanding × now − their starts.
            self.age_sum_ms[i] =
                (u64::from(self.outstanding[i]) * now.as_ms()).saturating_sub(self.start_sum_ms[i]);
        }
        for i in 0..self.endpoints.len() {
            self.load[i] = self.outstanding[i].saturating_add(self.peer_load[i]);
        }
        let index = self.stats.choose(
            &self.candidates,
            &self.outstanding,
            &self.load,
            &self.age_sum_ms,
            now,
            rng,
        );
        // The policy chooses among the candidates only: the gate's invariant.
        assert!(self.candidates.contains(&index));
        let endpoint = self.endpoints[index];
        let generation = self.health.dispatch(endpoint);
        let load = self.load[index];
        Ok(self.start(index, generation, now, false, load))
    }

    /// The next probe due at `now`, if any: an endpoint the gate holds back, with no probe in
    /// flight (the probe token) and none started within `probe_interval`.
    #[must_use]
    pub fn poll_probe(&mut self, now: Timestamp) -> Option<Attempt> {
        if self.config.gate == Gate::Off || self.in_flight.len() >= IN_FLIGHT_MAX {
            return None;
        }
        let interval = self.config.probe_interval;
        let index = (0..self.endpoints.len()).find(|&i| {
            !self.health.is_healthy(self.endpoints[i])
                && !self.probe_in_flight[i]
                && self.last_probe[i].is_none_or(|t| now.saturating_since(t) >= interval)
        })?;
        self.probe_in_flight[index] = true;
        self.last_probe[index] = Some(now);
        let generation = self.health.begin_probe(self.endpoints[index]);
        Some(self.start(index, generation, now, true, 0))
    }

    fn start(
        &mut self,
        index: usize,
        generation: Generation,
        now: Timestamp,
        probe: bool,
        load: u32,
    ) -> Attempt {
        let id = AttemptId(self.next_attempt);
        self.next_attempt += 1;
        if !probe {
            self.outstanding[index] += 1;
            self.start_sum_ms[index] += now.as_ms();
        }
        self.in_flight.insert(
            id,
            InFlight {
                index,
                generation,
                started: now,
                probe,
                load,
            },
        );
        Attempt {
            id,
            endpoint: self.endpoints[index],
            probe,
        }
    }

    /// Records the outcome of attempt `id` at `now`: the health table sees it with the
    /// generation the attempt started at, and the policy's statistics (for requests) with
    /// the latency from its start to `now`.
    pub fn record(
        &mut self,
        id: AttemptId,
        now: Timestamp,
        observation: Observation,
    ) -> Result<EndpointId, RouteError> {
        let attempt = self
            .in_flight
            .remove(&id)
            .ok_or(RouteError::UnknownAttempt(id.0))?;
        let endpoint = self.endpoints[attempt.index];
        self.recorded[attempt.index] += 1;
        let source = if attempt.probe {
            self.probe_in_flight[attempt.index] = false;
            Source::Probe
        } else {
            assert!(self.outstanding[attempt.index] > 0);
            self.outstanding[attempt.index] -= 1;
            self.start_sum_ms[attempt.index] -= attempt.started.as_ms();
            Source::Request
        };
        let _ = self
            .health
            .observe(endpoint, observation, source, attempt.generation);
        if !attempt.probe {
            let latency = now
                .saturating_since(attempt.started)
                .min(self.config.timeout);
            let loss_ms = if observation.is_failure() {
                self.config.timeout.as_ms()
            } else {
                latency.as_ms()
            };
            let reward = 1.0 - loss_ms as f64 / self.config.timeout.as_ms().max(1) as f64;
            self.stats.observe(
                attempt.index,
                reward,
                latency.as_ms() as f64,
                f64::from(attempt.load),
                now,
            );
        }
        Ok(endpoint)
    }

    /// The endpoint's status in the gate's table.
    pub fn status(&self, endpoint: EndpointId) -> Option<Status> {
        self.health.get(endpoint).map(|h| h.status)
    }
}

#[cfg(test)]
mod tests;
