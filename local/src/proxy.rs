//! The proxy's async code over the shared table and queue: request forwarding, the health
//! monitor's probe round and the failure queue's recovery round (documents 001 and 003).
//!
//! Each function keeps the documents' await points and nothing finer: select → send (await)
//! → record; probe started → await → record; recovery snapshot → await probe → remove. The
//! synchronous block between two awaits is one call into the shared structures plus the log
//! entry that reports it. The code is generic over an [`Upstream`] and spawns nothing, so the
//! same functions run on tokio in production and on madsim's seeded scheduler in the madsim
//! lane, where the await-point races are found (R-001-01, R-001-02, R-003-03).

use std::future::Future;

use racelab_core::Variant;
use racelab_core::health::{EndpointId, Generation, HealthConfig, Observation, Source};

use crate::log::{Event, EventLog, RequestId, Ticket};
use crate::queue::SharedFailureQueue;
use crate::table::SharedHealthTable;

/// The most attempts a request makes (documents 001 and 003: up to 3).
pub const ATTEMPTS_MAX: u32 = 3;

/// What a call to an endpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A forwarded user request (it may stream for a long time).
    Request,
    /// A health or recovery probe.
    Probe,
}

/// The upstream API endpoints: one HTTP call, answering a status or `None` on timeout.
pub trait Upstream: Sync {
    /// Calls `endpoint`; resolves to its status, or `None` if it did not answer in time.
    fn call(
        &self,
        endpoint: EndpointId,
        kind: CallKind,
    ) -> impl Future<Output = Option<u16>> + Send;
}

/// How a forwarded request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Forwarded {
    /// An endpoint answered 200.
    Served {
        /// The endpoint that served it.
        endpoint: EndpointId,
        /// Attempts made, this one included.
        attempts: u32,
    },
    /// Every attempt failed, or no endpoint was selectable.
    Failed {
        /// Attempts made.
        attempts: u32,
    },
}

/// The proxy's in-process state: the health table, the failure queue and the event log,
/// shared (by `Arc`) between its request tasks, its health monitor and its recovery loop.
#[derive(Debug)]
pub struct LocalProxy {
    variant: Variant,
    table: SharedHealthTable,
    queue: SharedFailureQueue,
    log: EventLog,
}

impl LocalProxy {
    /// A proxy of the given variant over `endpoints` (selection order).
    pub fn new(variant: Variant, config: HealthConfig, endpoints: &[EndpointId]) -> LocalProxy {
        LocalProxy {
            variant,
            table: SharedHealthTable::new(variant, config, endpoints),
            queue: SharedFailureQueue::new(variant),
            log: EventLog::new(),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The health table.
    pub fn table(&self) -> &SharedHealthTable {
        &self.table
    }

    /// The failure queue.
    pub fn queue(&self) -> &SharedFailureQueue {
        &self.queue
    }

    /// The event log.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Forwards one request with up to `attempts_max` (at most [`ATTEMPTS_MAX`]) attempts,
    /// starting the round robin at the request's number.
    ///
    /// `Buggy` and `DocFix` compute the candidate list once, at request start, and record
    /// observations without a generation (R-001-01: a retry can go to an endpoint whose 401
    /// was recorded meanwhile). `Correct` selects again immediately before each attempt and
    /// records with the generation captured at dispatch.
    pub async fn forward<U: Upstream>(
        &self,
        upstream: &U,
        request: RequestId,
        attempts_max: u32,
    ) -> Forwarded {
        let attempts_max = attempts_max.min(ATTEMPTS_MAX);
        let start = request.0 as usize;
        let mut attempts = 0;
        if self.variant == Variant::Correct {
            let mut tried = Vec::new();
            while attempts < attempts_max {
                let Some((endpoint, generation)) = self.table.select(start, &tried) else {
                    break;
                };
                tried.push(endpoint);
                attempts += 1;
                if self
                    .attempt(upstream, request, attempts, endpoint, generation)
                    .await
                {
                    return Forwarded::Served { endpoint, attempts };
                }
            }
        } else {
            let candidates = self.table.healthy_endpoints(start);
            for endpoint in candidates.into_iter().take(attempts_max as usize) {
                self.table.dispatch(endpoint);
                attempts += 1;
                if self
                    .attempt(upstream, request, attempts, endpoint, Generation::default())
                    .await
                {
                    return Forwarded::Served { endpoint, attempts };
                }
            }
        }
        Forwarded::Failed { attempts }
    }

    /// One attempt already dispatched to `endpoint`: log it, send, record. Returns whether
    /// it succeeded.
    async fn attempt<U: Upstream>(
        &self,
        upstream: &U,
        request: RequestId,
        attempt: u32,
        endpoint: EndpointId,
        generation: Generation,
    ) -> bool {
        let started = self.log.record(Event::Dispatched {
            request,
            attempt,
            endpoint,
        });
        let status = upstream.call(endpoint, CallKind::Request).await;
        let observation = Observation::from_status(status);
        self.record(endpoint, observation, Source::Request, generation, started);
        if observation.is_failure() {
            let added = self.queue.add(endpoint);
            self.log.record(Event::FailureAdded {
                endpoint,
                inserted: added.inserted,
            });
        }
        !observation.is_failure()
    }

    /// The health monitor's round: probe every endpoint in turn and record the result with
    /// the generation captured when the probe started (R-001-02: in `Buggy` and `DocFix`, a
    /// success from a probe that started before a 401 still wins).
    pub async fn probe_round<U: Upstream>(&self, upstream: &U) {
        for endpoint in self.table.endpoints().to_vec() {
            let generation = self.table.begin_probe(endpoint);
            let started = self.log.record(Event::ProbeStarted { endpoint });
            let status = upstream.call(endpoint, CallKind::Probe).await;
            let observation = Observation::from_status(status);
            self.record(endpoint, observation, Source::Probe, generation, started);
        }
    }

    /// The failure queue's recovery round: for each failed endpoint, snapshot its failure
    /// epoch and generation, probe it, and on success remove it and mark it healthy. `Correct`
    /// removes only if no failure was added during the probe; `Buggy` and `DocFix` remove
    /// unconditionally (R-003-03).
    pub async fn recovery_round<U: Upstream>(&self, upstream: &U) {
        for endpoint in self.queue.failed() {
            let ticket = self.queue.begin_recovery(endpoint);
            let generation = self.table.begin_probe(endpoint);
            let started = self.log.record(Event::ProbeStarted { endpoint });
            let status = upstream.call(endpoint, CallKind::Probe).await;
            if Observation::from_status(status) != Observation::Success {
                continue;
            }
            let removed = self.queue.remove(endpoint, ticket);
            self.log.record(Event::Recovered {
                endpoint,
                started,
                removed,
            });
            if removed {
                self.record(
                    endpoint,
                    Observation::Success,
                    Source::Probe,
                    generation,
                    started,
                );
            }
        }
    }

    fn record(
        &self,
        endpoint: EndpointId,
        observation: Observation,
        source: Source,
        generation: Generation,
        started: Ticket,
    ) {
        let outcome = self
            .table
            .observe(endpoint, observation, source, generation);
        self.log.record(Event::Recorded {
            endpoint,
            observation,
            source,
            started,
            outcome,
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::{Future, ready};
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::log::{no_dispatch_after_401, no_stale_recovery};

    const E: EndpointId = EndpointId(0);
    const F: EndpointId = EndpointId(1);

    /// Runs a future whose awaits are all ready (the upstreams below answer at once).
    fn block_on<T>(future: impl Future<Output = T>) -> T {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1_000 {
            if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                return value;
            }
        }
        panic!("the test upstreams are always ready");
    }

    /// E's key is revoked: every call to E answers 401.
    struct Revoked;

    impl Upstream for Revoked {
        fn call(
            &self,
            endpoint: EndpointId,
            _: CallKind,
        ) -> impl Future<Output = Option<u16>> + Send {
            ready(if endpoint == E { Some(401) } else { Some(200) })
        }
    }

    /// While a request waits for F (which times out), another request gets E's 401, which
    /// is recorded before the first request retries (the R-001-01 timeline, one await point
    /// at a time).
    struct FTimesOutMeanwhileE401<'a> {
        proxy: &'a LocalProxy,
    }

    impl Upstream for FTimesOutMeanwhileE401<'_> {
        fn call(
            &self,
            endpoint: EndpointId,
            kind: CallKind,
        ) -> impl Future<Output = Option<u16>> + Send {
            if endpoint == F && kind == CallKind::Request {
                block_on(self.proxy.forward(&Revoked, RequestId(0), 1));
                return ready(None);
            }
            ready(if endpoint == E { Some(401) } else { Some(200) })
        }
    }

    fn proxy(variant: Variant) -> LocalProxy {
        LocalProxy::new(variant, HealthConfig::default(), &[E, F])
    }

    #[test]
    fn stale_candidate_list_reaches_the_401_endpoint_except_in_correct() {
        for variant in Variant::ALL {
            let p = proxy(variant);
            let upstream = FTimesOutMeanwhileE401 { proxy: &p };
            let outcome = block_on(p.forward(&upstream, RequestId(1), ATTEMPTS_MAX));
            let violation = no_dispatch_after_401(&p.log().events());
            if variant == Variant::Correct {
                assert_eq!(violation, None);
                assert_eq!(outcome, Forwarded::Failed { attempts: 1 });
            } else {
                assert_eq!(violation.map(|v| v.index), Some(6), "{variant:?}");
                assert_eq!(outcome, Forwarded::Failed { attempts: 2 });
            }
        }
    }

    /// E answers 500 to requests (below the failure threshold, so it stays selectable).
    struct E500;

    impl Upstream for E500 {
        fn call(
            &self,
            endpoint: EndpointId,
            _: CallKind,
        ) -> impl Future<Output = Option<u16>> + Send {
            ready(if endpoint == E { Some(500) } else { Some(200) })
        }
    }

    /// The recovery probe of E succeeds, but while it was in flight a request failed on E.
    struct ProbeOkMeanwhileEFails<'a> {
        proxy: &'a LocalProxy,
    }

    impl Upstream for ProbeOkMeanwhileEFails<'_> {
        fn call(
            &self,
            endpoint: EndpointId,
            kind: CallKind,
        ) -> impl Future<Output = Option<u16>> + Send {
            if kind == CallKind::Probe {
                block_on(self.proxy.forward(&E500, RequestId(0), 1));
                return ready(Some(200));
            }
            ready(if endpoint == E { Some(500) } else { Some(200) })
        }
    }

    #[test]
    fn stale_recovery_erases_a_newer_failure_except_in_correct() {
        for variant in Variant::ALL {
            let p = proxy(variant);
            block_on(p.forward(&E500, RequestId(0), 1));
            assert_eq!(p.queue().failed(), vec![E]);
            block_on(p.recovery_round(&ProbeOkMeanwhileEFails { proxy: &p }));
            let violation = no_stale_recovery(&p.log().events());
            assert_eq!(
                violation.is_some(),
                variant != Variant::Correct,
                "{variant:?}"
            );
            assert_eq!(
                p.queue().contains(E),
                variant == Variant::Correct,
                "{variant:?}"
            );
        }
    }

    #[test]
    fn probes_after_the_401_record_it_and_requests_fail_over() {
        for variant in Variant::ALL {
            let p = proxy(variant);
            block_on(p.probe_round(&Revoked));
            let outcome = block_on(p.forward(&Revoked, RequestId(0), ATTEMPTS_MAX));
            assert_eq!(
                outcome,
                Forwarded::Served {
                    endpoint: F,
                    attempts: 1
                },
                "{variant:?}"
            );
            assert_eq!(no_dispatch_after_401(&p.log().events()), None);
        }
    }
}
