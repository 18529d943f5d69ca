//! The endpoint router shared by the threads (or tasks) of one gateway instance (document
//! 000; R-000-15's P1 and P2).
//!
//! The router's protocol is [`racelab_core::route::Router`]: the hard health gate, the
//! policy's statistics, the attempts in flight, per-attempt feedback. This module only decides
//! how a threaded gateway takes its critical sections around it:
//!
//! - `Buggy` and `DocFix`: the document's `proxy_pool.py` keeps its selection statistics in a
//!   plain shared structure updated by read-modify-write (`stats[e]["ok"] += 1`), and its fix,
//!   "weighted random or a bandit", changes the choice, not the update. So every operation
//!   loads the router (one critical section), works on the copy and stores it back (another):
//!   an outcome recorded by another thread in between is lost (P2), a failure that should
//!   have closed the gate can vanish (P1), and two picks can hand out the same attempt.
//! - `Correct`: one `Mutex` around the core router, one critical section per operation, so
//!   every outcome is counted exactly once whatever the interleaving (the counters a
//!   multi-instance gateway shares go through Redis `HINCRBY` instead, one atomic command
//!   per outcome).
//!
//! The loom models of both are in `racelab-models` (`tests/loom_router.rs`).

use racelab_core::health::{Observation, Status};
use racelab_core::route::{Attempt, AttemptId, ConfigError, RouteError, Router, RouterConfig};
use racelab_core::{EndpointId, RandomStream, Timestamp, Variant};

use crate::sync::{Mutex, lock};

/// The router, shared by reference (or `Arc`) between a gateway's threads.
#[derive(Debug)]
pub struct SharedRouter {
    variant: Variant,
    router: Mutex<Router>,
}

impl SharedRouter {
    /// A router over `endpoints` (in configured order), its critical sections as `variant`
    /// takes them.
    pub fn new(
        variant: Variant,
        config: RouterConfig,
        endpoints: &[EndpointId],
    ) -> Result<SharedRouter, ConfigError> {
        Ok(SharedRouter {
            variant,
            router: Mutex::new(Router::new(config, endpoints)?),
        })
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Picks the endpoint of a user request at `now`, drawing from the calling thread's own
    /// `rng`.
    pub fn pick(&self, now: Timestamp, rng: &mut RandomStream) -> Result<Attempt, RouteError> {
        self.operate(|router| router.pick(now, rng))
    }

    /// The next probe due at `now`, if any.
    pub fn poll_probe(&self, now: Timestamp) -> Option<Attempt> {
        self.operate(|router| router.poll_probe(now))
    }

    /// Records the outcome of attempt `id` at `now`.
    pub fn record(
        &self,
        id: AttemptId,
        now: Timestamp,
        observation: Observation,
    ) -> Result<EndpointId, RouteError> {
        self.operate(|router| router.record(id, now, observation))
    }

    /// The outcomes recorded for `endpoint` so far.
    pub fn recorded(&self, endpoint: EndpointId) -> Option<u64> {
        lock(&self.router).recorded(endpoint)
    }

    /// Attempts handed out and not yet recorded.
    pub fn in_flight(&self) -> usize {
        lock(&self.router).in_flight()
    }

    /// Whether the gate lets requests go to `endpoint` now.
    pub fn passes_gate(&self, endpoint: EndpointId) -> bool {
        lock(&self.router).passes_gate(endpoint)
    }

    /// The endpoint's status in the gate's table.
    pub fn status(&self, endpoint: EndpointId) -> Option<Status> {
        lock(&self.router).status(endpoint)
    }

    /// One operation on the router: `Correct` in one critical section; the others load a
    /// copy, change it and store it back, in two.
    fn operate<R>(&self, change: impl FnOnce(&mut Router) -> R) -> R {
        match self.variant {
            Variant::Correct => change(&mut lock(&self.router)),
            Variant::Buggy | Variant::DocFix => {
                let mut copy = lock(&self.router).clone();
                let result = change(&mut copy);
                *lock(&self.router) = copy;
                result
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use racelab_core::route::Policy;

    const E: EndpointId = EndpointId(1);
    const F: EndpointId = EndpointId(2);

    fn router(variant: Variant) -> SharedRouter {
        SharedRouter::new(variant, RouterConfig::gated(Policy::RoundRobin), &[E, F])
            .expect("two endpoints")
    }

    #[test]
    fn sequential_use_counts_every_outcome_in_every_variant() {
        for variant in Variant::ALL {
            let r = router(variant);
            let mut rng = RandomStream::for_process(1, 0, 0);
            let mut ids = Vec::new();
            for _ in 0..4 {
                ids.push(r.pick(Timestamp::ZERO, &mut rng).expect("healthy"));
            }
            for a in &ids {
                r.record(a.id, Timestamp::from_ms(5), Observation::Success)
                    .expect("in flight");
            }
            let total = r.recorded(E).unwrap_or(0) + r.recorded(F).unwrap_or(0);
            assert_eq!((total, r.in_flight()), (4, 0), "{variant:?}");
            assert_eq!(r.recorded(EndpointId(9)), None);
        }
    }

    #[test]
    fn failures_close_the_gate_and_probes_follow() {
        let r = router(Variant::Correct);
        let mut rng = RandomStream::for_process(2, 0, 0);
        for _ in 0..8 {
            let a = r.pick(Timestamp::ZERO, &mut rng).expect("one is healthy");
            let o = if a.endpoint == E {
                Observation::Timeout
            } else {
                Observation::Success
            };
            r.record(a.id, Timestamp::from_ms(1), o).expect("in flight");
        }
        assert!(!r.passes_gate(E));
        assert_ne!(r.status(E), Some(Status::Healthy));
        let probe = r
            .poll_probe(Timestamp::from_ms(2))
            .expect("E is due a probe");
        assert_eq!((probe.endpoint, probe.probe), (E, true));
        assert_eq!(r.poll_probe(Timestamp::from_ms(3)), None, "one probe token");
        assert_eq!(r.variant(), Variant::Correct);
    }

    #[test]
    fn an_unknown_attempt_is_an_error_not_a_panic() {
        let r = router(Variant::Buggy);
        assert_eq!(
            r.record(AttemptId(77), Timestamp::ZERO, Observation::Success),
            Err(RouteError::UnknownAttempt(77))
        );
    }
}
