//! Documents 001 and 003: the proxy's endpoint health table and failure queue.
//!
//! The proxy of both documents is one asyncio process: many request coroutines, a health
//! monitor and a failure-queue recovery loop share an endpoint table and a failure queue. A
//! coroutine only yields at `await`, so every synchronous block is atomic; the races are
//! between await points (RACES.md 0.6). This module holds:
//!
//! - [`HealthTable`]: per-endpoint status. Its `Buggy` and `DocFix` variants are the
//!   documents' last-writer-wins updates (the document's `asyncio.Lock` changes nothing on one
//!   event loop, so `DocFix` has the same table semantics); `Correct` keeps a per-endpoint
//!   [`Generation`] (a success may only clear a failure it has observed), a sticky
//!   [`Status::AuthFailed`] on 401 that only a probe started after the failure (or a key
//!   rotation) clears, and consecutive-failure thresholds.
//! - [`FailureQueue`]: the set of failed endpoints with the episode counter `total_failed`.
//!   `Buggy` counts every failed attempt (R-003-01), `DocFix` and `Correct` count only
//!   insertions; `Correct` also keeps a per-endpoint failure epoch so that a recovery probe
//!   started before a newer failure cannot remove the endpoint (R-003-03).
//! - [`LocalState`] / [`LocalOp`]: the synchronous blocks the coroutines run on this state,
//!   as one store operation each, so that `sim::explore` interleaves tasks exactly at their
//!   await points.
//! - [`tasks`]: the coroutines as sans-IO machines: requests, the health monitor, the
//!   failure-queue recovery loop, threads of a threaded port, and a process that saves and
//!   reloads the queue.
//! - [`oracle`]: I-401, exactly-once observations, I-FQ1/2, I-FQ4 and I-FQ5.

mod local;
pub mod oracle;
mod tag;
pub mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::ids::EndpointId;
use crate::variant::Variant;
pub use local::{LocalOp, LocalResult, LocalState};
pub use tag::HealthTag;

/// What a call to an endpoint showed about its health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Observation {
    /// 200.
    Success,
    /// 401: the key was rejected.
    Unauthorized,
    /// 429.
    RateLimited,
    /// 5xx or another non-200 status.
    ServerError,
    /// No answer in time.
    Timeout,
}

impl Observation {
    /// The observation an HTTP status (or `None` for a timeout) gives.
    pub fn from_status(status: Option<u16>) -> Observation {
        match status {
            None => Observation::Timeout,
            Some(200) => Observation::Success,
            Some(401) => Observation::Unauthorized,
            Some(429) => Observation::RateLimited,
            Some(_) => Observation::ServerError,
        }
    }

    /// Whether this is a failure.
    pub fn is_failure(self) -> bool {
        self != Observation::Success
    }

    /// A short name (`success`, `401`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Observation::Success => "success",
            Observation::Unauthorized => "401",
            Observation::RateLimited => "429",
            Observation::ServerError => "5xx",
            Observation::Timeout => "timeout",
        }
    }
}

/// Who made an observation: a user request, or a probe (health monitor, recovery loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Source {
    /// A forwarded user request.
    Request,
    /// A health probe.
    Probe,
}

/// An endpoint's health status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Never observed (selectable).
    Unknown,
    /// Last observation succeeded.
    Healthy,
    /// Failed `failure_threshold` times in a row (or, in the documents' code, a 401).
    Unhealthy,
    /// `Correct` only: a 401 was observed; sticky until a probe started after it succeeds or
    /// the key is rotated.
    AuthFailed,
}

impl Status {
    /// The documents' status string.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::AuthFailed => "auth_failed",
        }
    }
}

/// A per-endpoint failure generation (`Correct`): every failure observation increments it;
/// an attempt or probe carries the value it saw when it started.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Generation(pub u64);

/// The table's tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthConfig {
    /// Consecutive ordinary failures after which an endpoint is unhealthy.
    pub failure_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            failure_threshold: 3,
        }
    }
}

/// One endpoint's row (the documents' `health_status` dict, plus the generation).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointHealth {
    /// The status.
    pub status: Status,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Attempts dispatched to it.
    pub total_requests: u64,
    /// The failure generation (`Correct`; the other variants keep it at 0).
    pub generation: Generation,
    /// How many times its key was rotated.
    pub key_version: u32,
}

impl EndpointHealth {
    fn new() -> EndpointHealth {
        EndpointHealth {
            status: Status::Unknown,
            consecutive_failures: 0,
            total_requests: 0,
            generation: Generation(0),
            key_version: 0,
        }
    }
}

/// What an observation did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObserveOutcome {
    /// It was applied.
    Applied,
    /// `Correct`: a success from an attempt or probe that started before a newer failure;
    /// ignored.
    Stale,
    /// `Correct`: a request success on an `AuthFailed` endpoint; only a probe clears it.
    Sticky,
    /// The endpoint is not configured.
    Unknown,
}

/// The endpoint health table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthTable {
    variant: Variant,
    config: HealthConfig,
    order: Vec<EndpointId>,
    endpoints: BTreeMap<EndpointId, EndpointHealth>,
}

impl HealthTable {
    /// A table over `endpoints`, in the configured (selection) order.
    pub fn new(variant: Variant, config: HealthConfig, endpoints: &[EndpointId]) -> HealthTable {
        HealthTable {
            variant,
            config,
            order: endpoints.to_vec(),
            endpoints: endpoints
                .iter()
                .map(|e| (*e, EndpointHealth::new()))
                .collect(),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The tuning.
    pub fn config(&self) -> HealthConfig {
        self.config
    }

    /// The configured endpoints in selection order.
    pub fn endpoints(&self) -> &[EndpointId] {
        &self.order
    }

    /// One endpoint's row.
    pub fn get(&self, endpoint: EndpointId) -> Option<&EndpointHealth> {
        self.endpoints.get(&endpoint)
    }

    /// `is_healthy()`: the documents' code treats everything but `unhealthy` as selectable
    /// (unknown endpoints are tried); `Correct` also refuses `AuthFailed`.
    pub fn is_healthy(&self, endpoint: EndpointId) -> bool {
        match self.endpoints.get(&endpoint).map(|h| h.status) {
            None => false,
            Some(Status::Unhealthy) | Some(Status::AuthFailed) => false,
            Some(Status::Unknown) | Some(Status::Healthy) => true,
        }
    }

    /// `get_healthy_endpoints()`: the selectable endpoints, in order.
    pub fn healthy_endpoints(&self) -> Vec<EndpointId> {
        self.order
            .iter()
            .copied()
            .filter(|e| self.is_healthy(*e))
            .collect()
    }

    /// An attempt is sent to `endpoint` (counted in `total_requests`); returns the generation
    /// the attempt starts with.
    pub fn dispatch(&mut self, endpoint: EndpointId) -> Generation {
        match self.endpoints.get_mut(&endpoint) {
            Some(h) => {
                h.total_requests += 1;
                h.generation
            }
            None => Generation(0),
        }
    }

    /// `Correct`'s selection: the first healthy endpoint not in `tried`, checked and
    /// dispatched in one synchronous block, immediately before the send.
    pub fn select(&mut self, tried: &[EndpointId]) -> Option<(EndpointId, Generation)> {
        let endpoint = self
            .order
            .iter()
            .copied()
            .find(|e| !tried.contains(e) && self.is_healthy(*e))?;
        Some((endpoint, self.dispatch(endpoint)))
    }

    /// The generation a probe of `endpoint` starts with.
    pub fn begin_probe(&self, endpoint: EndpointId) -> Generation {
        self.endpoints
            .get(&endpoint)
            .map(|h| h.generation)
            .unwrap_or_default()
    }

    /// `update_health_status`: record an observation made by an attempt or probe that
    /// started at generation `started`.
    pub fn observe(
        &mut self,
        endpoint: EndpointId,
        observation: Observation,
        source: Source,
        started: Generation,
    ) -> ObserveOutcome {
        let threshold = self.config.failure_threshold;
        let correct = self.variant == Variant::Correct;
        let Some(h) = self.endpoints.get_mut(&endpoint) else {
            return ObserveOutcome::Unknown;
        };
        match observation {
            Observation::Success => {
                if correct {
                    if started != h.generation {
                        return ObserveOutcome::Stale;
                    }
                    if h.status == Status::AuthFailed && source == Source::Request {
                        return ObserveOutcome::Sticky;
                    }
                }
                h.status = Status::Healthy;
                h.consecutive_failures = 0;
            }
            Observation::Unauthorized => {
                if correct {
                    h.generation.0 += 1;
                    h.status = Status::AuthFailed;
                } else {
                    h.status = Status::Unhealthy;
                }
                h.consecutive_failures = h.consecutive_failures.max(threshold);
            }
            Observation::RateLimited | Observation::ServerError | Observation::Timeout => {
                if correct {
                    h.generation.0 += 1;
                }
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                if h.consecutive_failures >= threshold && h.status != Status::AuthFailed {
                    h.status = Status::Unhealthy;
                }
            }
        }
        ObserveOutcome::Applied
    }

    /// The endpoint's key is replaced: a new identity, so its past failures no longer apply.
    pub fn rotate_key(&mut self, endpoint: EndpointId) {
        if let Some(h) = self.endpoints.get_mut(&endpoint) {
            h.generation.0 += 1;
            h.key_version += 1;
            h.status = Status::Unknown;
            h.consecutive_failures = 0;
        }
    }
}

/// What [`FailureQueue::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Added {
    /// Whether the endpoint was newly inserted (a new failure episode).
    pub inserted: bool,
    /// The endpoint's failure epoch after the add (`Correct`; 0 otherwise).
    pub epoch: u64,
}

/// The failure queue (`failure_queue.py`): failed endpoints awaiting recovery and the episode
/// counter `total_failed`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FailureQueue {
    variant: Variant,
    failed: BTreeSet<EndpointId>,
    total_failed: u64,
    epochs: BTreeMap<EndpointId, u64>,
}

impl FailureQueue {
    /// An empty queue.
    pub fn new(variant: Variant) -> FailureQueue {
        FailureQueue {
            variant,
            failed: BTreeSet::new(),
            total_failed: 0,
            epochs: BTreeMap::new(),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// `add_failed_endpoint`, as one synchronous block. `Buggy` counts every call (R-003-01);
    /// `DocFix` and `Correct` count insertions only (`let inserted = set.insert(e); if
    /// inserted { total += 1 }`: the insert is the check); `Correct` bumps the endpoint's
    /// failure epoch on every failure, present or not.
    pub fn add(&mut self, endpoint: EndpointId) -> Added {
        let inserted = self.failed.insert(endpoint);
        if inserted || self.variant == Variant::Buggy {
            // Saturating: a loaded file may carry any count, up to `u64::MAX`.
            self.total_failed = self.total_failed.saturating_add(1);
        }
        let epoch = if self.variant == Variant::Correct {
            let epoch = self.epochs.entry(endpoint).or_insert(0);
            *epoch += 1;
            *epoch
        } else {
            0
        };
        Added { inserted, epoch }
    }

    /// The check half of a threaded port's check-then-act (`if e not in failed`).
    pub fn contains(&self, endpoint: EndpointId) -> bool {
        self.failed.contains(&endpoint)
    }

    /// The act half of a threaded port's check-then-act: insert and count, trusting a check
    /// made earlier (R-003-02's Buggy split).
    pub fn insert_counted(&mut self, endpoint: EndpointId) -> Added {
        let inserted = self.failed.insert(endpoint);
        self.total_failed = self.total_failed.saturating_add(1);
        Added { inserted, epoch: 0 }
    }

    /// The epoch a recovery probe of `endpoint` starts with.
    pub fn begin_recovery(&self, endpoint: EndpointId) -> u64 {
        self.epochs.get(&endpoint).copied().unwrap_or(0)
    }

    /// `remove_failed_endpoint` after a successful recovery probe that started at `epoch`.
    /// `Correct` removes only if no failure was added since (CAS on the epoch); the others
    /// remove unconditionally. Returns whether the endpoint was removed.
    pub fn remove(&mut self, endpoint: EndpointId, epoch: u64) -> bool {
        if self.variant == Variant::Correct && self.begin_recovery(endpoint) != epoch {
            return false;
        }
        self.failed.remove(&endpoint)
    }

    /// The failed endpoints, in order.
    pub fn failed(&self) -> Vec<EndpointId> {
        self.failed.iter().copied().collect()
    }

    /// The current number of failed endpoints (what a UI should show as "failed endpoints").
    pub fn len(&self) -> usize {
        self.failed.len()
    }

    /// Whether no endpoint is failed.
    pub fn is_empty(&self) -> bool {
        self.failed.is_empty()
    }

    /// `stats['total_failed']`: failure episodes (`Buggy`: failed attempts).
    pub fn total_failed(&self) -> u64 {
        self.total_failed
    }

    /// The persisted JSON, in the documents' format (unchanged by the fix, AC-003-10):
    /// `{"failed_endpoints":["E1"],"stats":{"total_failed":1}}`.
    pub fn to_json(&self) -> String {
        let persisted = Persisted {
            failed_endpoints: self.failed.iter().map(|e| e.to_string()).collect(),
            stats: PersistedStats {
                total_failed: self.total_failed,
            },
        };
        serde_json::to_string(&persisted).unwrap_or_default()
    }

    /// Loads a persisted queue. Epochs start again at 0: a restart ends every in-flight probe.
    pub fn from_json(variant: Variant, text: &str) -> Result<FailureQueue, PersistError> {
        let persisted: Persisted =
            serde_json::from_str(text).map_err(|e| PersistError(e.to_string()))?;
        let mut failed = BTreeSet::new();
        for name in &persisted.failed_endpoints {
            let id = name
                .strip_prefix('E')
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or_else(|| PersistError(format!("bad endpoint name {name:?}")))?;
            failed.insert(EndpointId(id));
        }
        Ok(FailureQueue {
            variant,
            failed,
            total_failed: persisted.stats.total_failed,
            epochs: BTreeMap::new(),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    failed_endpoints: Vec<String>,
    stats: PersistedStats,
}

#[derive(Serialize, Deserialize)]
struct PersistedStats {
    total_failed: u64,
}

/// A persisted failure queue that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistError(pub String);

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the persisted failure queue does not parse: {}", self.0)
    }
}

impl std::error::Error for PersistError {}

#[cfg(test)]
mod tests {
    use super::*;

    const E: EndpointId = EndpointId(1);
    const F: EndpointId = EndpointId(2);

    fn table(variant: Variant) -> HealthTable {
        HealthTable::new(variant, HealthConfig::default(), &[E, F])
    }

    #[test]
    fn a_threaded_ports_act_counts_every_insert_it_trusts() {
        // The act half of the check-then-act split counts whatever its check decided, so two
        // threads that both saw `E` absent count it twice (R-003-02's double count).
        let mut q = FailureQueue::new(Variant::Buggy);
        assert!(q.insert_counted(E).inserted);
        assert!(!q.insert_counted(E).inserted);
        assert_eq!(q.total_failed(), 2);
        assert_eq!(q.failed(), vec![E]);
    }

    #[test]
    fn stale_success_wins_in_the_documents_table_and_loses_in_correct() {
        for variant in Variant::ALL {
            let mut t = table(variant);
            let g0 = t.dispatch(E);
            let g1 = t.dispatch(E);
            t.observe(E, Observation::Unauthorized, Source::Request, g1);
            let outcome = t.observe(E, Observation::Success, Source::Request, g0);
            if variant == Variant::Correct {
                assert_eq!(outcome, ObserveOutcome::Stale);
                assert!(!t.is_healthy(E));
            } else {
                assert_eq!(outcome, ObserveOutcome::Applied);
                assert!(t.is_healthy(E), "{variant:?}: last writer wins");
            }
        }
    }

    #[test]
    fn auth_failed_is_sticky_until_a_probe_started_after_it() {
        let mut t = table(Variant::Correct);
        let before = t.begin_probe(E);
        t.observe(E, Observation::Unauthorized, Source::Request, Generation(0));
        let g = t.dispatch(E);
        assert_eq!(
            t.observe(E, Observation::Success, Source::Request, g),
            ObserveOutcome::Sticky
        );
        assert_eq!(
            t.observe(E, Observation::Success, Source::Probe, before),
            ObserveOutcome::Stale
        );
        assert!(!t.is_healthy(E));
        let after = t.begin_probe(E);
        assert_eq!(
            t.observe(E, Observation::Success, Source::Probe, after),
            ObserveOutcome::Applied
        );
        assert!(t.is_healthy(E));
    }

    #[test]
    fn key_rotation_clears_auth_failed() {
        let mut t = table(Variant::Correct);
        t.observe(E, Observation::Unauthorized, Source::Request, Generation(0));
        t.rotate_key(E);
        assert!(t.is_healthy(E));
        assert_eq!(t.select(&[]), Some((E, Generation(2))));
    }

    #[test]
    fn thresholds_count_consecutive_failures() {
        for variant in Variant::ALL {
            let mut t = table(variant);
            for _ in 0..2 {
                t.observe(E, Observation::Timeout, Source::Request, Generation(0));
            }
            assert!(t.is_healthy(E), "{variant:?}: 2 of 3");
            t.observe(E, Observation::ServerError, Source::Request, Generation(0));
            assert!(!t.is_healthy(E), "{variant:?}: 3 of 3");
            assert_eq!(t.healthy_endpoints(), vec![F]);
        }
    }

    #[test]
    fn select_skips_tried_and_unhealthy_endpoints() {
        let mut t = table(Variant::Correct);
        t.observe(E, Observation::Unauthorized, Source::Request, Generation(0));
        assert_eq!(t.select(&[]).map(|s| s.0), Some(F));
        assert_eq!(t.select(&[F]), None);
        assert_eq!(t.get(F).map(|h| h.total_requests), Some(1));
    }

    #[test]
    fn failure_queue_counts_episodes_except_in_buggy() {
        let mut buggy = FailureQueue::new(Variant::Buggy);
        let mut fixed = FailureQueue::new(Variant::DocFix);
        for q in [&mut buggy, &mut fixed] {
            q.add(E);
            q.add(E);
            q.add(F);
        }
        assert_eq!((buggy.total_failed(), buggy.len()), (3, 2));
        assert_eq!((fixed.total_failed(), fixed.len()), (2, 2));
        // AC-003-3: remove and re-add counts again (episodes).
        fixed.remove(E, 0);
        fixed.add(E);
        assert_eq!(fixed.total_failed(), 3);
    }

    #[test]
    fn correct_recovery_does_not_remove_after_a_newer_failure() {
        let mut q = FailureQueue::new(Variant::Correct);
        q.add(E);
        let epoch = q.begin_recovery(E);
        q.add(E);
        assert!(!q.remove(E, epoch), "a failure arrived during the probe");
        assert!(q.contains(E));
        let epoch = q.begin_recovery(E);
        assert!(q.remove(E, epoch));
        assert_eq!(q.total_failed(), 1);
    }

    #[test]
    fn persistence_round_trips_and_rejects_torn_files() {
        let mut q = FailureQueue::new(Variant::Correct);
        q.add(E);
        q.add(F);
        let text = q.to_json();
        assert_eq!(
            text,
            r#"{"failed_endpoints":["E1","E2"],"stats":{"total_failed":2}}"#
        );
        let back = FailureQueue::from_json(Variant::Correct, &text).expect("parses");
        assert_eq!((back.failed(), back.total_failed()), (vec![E, F], 2));
        for torn in [
            "",
            "{\"failed_endpoints\":[\"E1\"",
            "{\"failed_endpoints\":[\"X\"],\"stats\":{\"total_failed\":1}}",
        ] {
            assert!(
                FailureQueue::from_json(Variant::Correct, torn).is_err(),
                "{torn:?}"
            );
        }
    }

    /// Found by `core/tests/machines_never_panic.rs`: a loaded file may carry any count, and
    /// one more failure after a count of `u64::MAX` overflowed `total_failed`.
    #[test]
    fn a_loaded_failure_count_at_its_maximum_saturates() {
        let text = format!(
            r#"{{"failed_endpoints":[],"stats":{{"total_failed":{}}}}}"#,
            u64::MAX
        );
        for variant in Variant::ALL {
            let mut q = FailureQueue::from_json(variant, &text).expect("parses");
            q.add(E);
            q.insert_counted(F);
            assert_eq!(q.total_failed(), u64::MAX, "{variant:?}");
        }
    }
}
