//! The endpoint health table shared by many threads or tasks (document 001; R-001-01,
//! R-001-02, R-001-04).
//!
//! The table's protocol is [`racelab_core::health::HealthTable`]; this module only decides how
//! the threaded port takes its critical sections:
//!
//! - `Buggy`: the documents' dict of per-endpoint rows. Reads take no table lock (each row is
//!   read on its own), and every write is a read-modify-write of one row done as a separate
//!   load and store (`h['consecutive_failures'] += 1`): two threads recording failures of
//!   the same endpoint can lose one (the threshold is reached late, a 401 can be overwritten;
//!   R-001-04). Success writes are unconditional: the last writer wins (R-001-02).
//! - `DocFix`: the same, with writes under the document's `asyncio.Lock`, which gives no
//!   mutual exclusion across OS threads ([`EventLoopLock`]); reads stay unlocked as in the
//!   document. The same races.
//! - `Correct`: the whole core table behind one `Mutex`, one critical section per
//!   operation: the selection checks and dispatches in one block and captures the
//!   generation, a success only applies if the generation it started with is current, and
//!   a 401 is a sticky `AuthFailed` that only a probe started after it clears.

use racelab_core::Variant;
use racelab_core::health::{
    EndpointHealth, EndpointId, Generation, HealthConfig, HealthTable, Observation, ObserveOutcome,
    Source,
};

use crate::sync::{EventLoopLock, Mutex, lock};

/// The endpoint health table, shared by reference (or `Arc`) between threads and tasks.
#[derive(Debug)]
pub struct SharedHealthTable {
    variant: Variant,
    order: Vec<EndpointId>,
    repr: Repr,
    doc_lock: EventLoopLock,
}

#[derive(Debug)]
enum Repr {
    /// `Buggy`, `DocFix`: one row per endpoint (a one-endpoint core table), each its own
    /// critical section, in `order`.
    Rows(Vec<Mutex<HealthTable>>),
    /// `Correct`: one table, one critical section per operation.
    Table(Mutex<HealthTable>),
}

impl SharedHealthTable {
    /// A table over `endpoints`, in the configured (selection) order.
    pub fn new(variant: Variant, config: HealthConfig, endpoints: &[EndpointId]) -> Self {
        let repr = match variant {
            Variant::Correct => {
                Repr::Table(Mutex::new(HealthTable::new(variant, config, endpoints)))
            }
            Variant::Buggy | Variant::DocFix => Repr::Rows(
                endpoints
                    .iter()
                    .map(|e| Mutex::new(HealthTable::new(variant, config, &[*e])))
                    .collect(),
            ),
        };
        SharedHealthTable {
            variant,
            order: endpoints.to_vec(),
            repr,
            doc_lock: EventLoopLock::new(),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The configured endpoints, in selection order.
    pub fn endpoints(&self) -> &[EndpointId] {
        &self.order
    }

    fn row(&self, endpoint: EndpointId) -> Option<&Mutex<HealthTable>> {
        let Repr::Rows(rows) = &self.repr else {
            return None;
        };
        let index = self.order.iter().position(|e| *e == endpoint)?;
        rows.get(index)
    }

    /// `is_healthy(e)`.
    pub fn is_healthy(&self, endpoint: EndpointId) -> bool {
        match &self.repr {
            Repr::Table(table) => lock(table).is_healthy(endpoint),
            Repr::Rows(_) => self
                .row(endpoint)
                .is_some_and(|row| lock(row).is_healthy(endpoint)),
        }
    }

    /// One endpoint's row.
    pub fn get(&self, endpoint: EndpointId) -> Option<EndpointHealth> {
        match &self.repr {
            Repr::Table(table) => lock(table).get(endpoint).cloned(),
            Repr::Rows(_) => self
                .row(endpoint)
                .and_then(|row| lock(row).get(endpoint).cloned()),
        }
    }

    /// `get_healthy_endpoints()`, starting at position `start` of the configured order
    /// (round robin): the candidate list a `Buggy` request computes once (R-001-01).
    pub fn healthy_endpoints(&self, start: usize) -> Vec<EndpointId> {
        let rotated = self.rotated(start);
        match &self.repr {
            Repr::Table(table) => {
                let table = lock(table);
                rotated.filter(|e| table.is_healthy(*e)).collect()
            }
            Repr::Rows(_) => rotated.filter(|e| self.is_healthy(*e)).collect(),
        }
    }

    fn rotated(&self, start: usize) -> impl Iterator<Item = EndpointId> + '_ {
        let n = self.order.len();
        (0..n).map(move |i| self.order[(start + i) % n])
    }

    /// An attempt is sent to `endpoint`: counts it and returns the generation it starts
    /// with (`Generation(0)` outside `Correct`).
    pub fn dispatch(&self, endpoint: EndpointId) -> Generation {
        match &self.repr {
            Repr::Table(table) => lock(table).dispatch(endpoint),
            Repr::Rows(_) => {
                let _held = self.doc_held();
                self.read_modify_write(endpoint, |t| t.dispatch(endpoint))
                    .unwrap_or_default()
            }
        }
    }

    /// The selection of one attempt, immediately before the send: the first healthy
    /// endpoint not in `tried`, starting at position `start`, dispatched. `Correct` checks
    /// and dispatches in one critical section; the others check, then dispatch.
    pub fn select(&self, start: usize, tried: &[EndpointId]) -> Option<(EndpointId, Generation)> {
        match &self.repr {
            Repr::Table(table) => {
                let mut table = lock(table);
                let endpoint = self
                    .rotated(start)
                    .find(|e| !tried.contains(e) && table.is_healthy(*e))?;
                Some((endpoint, table.dispatch(endpoint)))
            }
            Repr::Rows(_) => {
                let endpoint = self
                    .rotated(start)
                    .find(|e| !tried.contains(e) && self.is_healthy(*e))?;
                Some((endpoint, self.dispatch(endpoint)))
            }
        }
    }

    /// The generation a probe of `endpoint` starts with.
    pub fn begin_probe(&self, endpoint: EndpointId) -> Generation {
        match &self.repr {
            Repr::Table(table) => lock(table).begin_probe(endpoint),
            Repr::Rows(_) => self
                .row(endpoint)
                .map(|row| lock(row).begin_probe(endpoint))
                .unwrap_or_default(),
        }
    }

    /// `update_health_status`: record an observation of an attempt or probe that started at
    /// generation `started`.
    pub fn observe(
        &self,
        endpoint: EndpointId,
        observation: Observation,
        source: Source,
        started: Generation,
    ) -> ObserveOutcome {
        match &self.repr {
            Repr::Table(table) => lock(table).observe(endpoint, observation, source, started),
            Repr::Rows(_) => {
                let _held = self.doc_held();
                self.read_modify_write(endpoint, |t| {
                    t.observe(endpoint, observation, source, started)
                })
                .unwrap_or(ObserveOutcome::Unknown)
            }
        }
    }

    /// The document's write lock (`DocFix`), which excludes nothing across threads.
    fn doc_held(&self) -> Option<crate::sync::EventLoopGuard<'_>> {
        (self.variant == Variant::DocFix).then(|| self.doc_lock.acquire())
    }

    /// `Buggy`/`DocFix` writes: load the row (one critical section), change the copy, store
    /// it back (another). A write by another thread between the two is lost.
    fn read_modify_write<R>(
        &self,
        endpoint: EndpointId,
        change: impl FnOnce(&mut HealthTable) -> R,
    ) -> Option<R> {
        let row = self.row(endpoint)?;
        let mut copy = lock(row).clone();
        let result = change(&mut copy);
        *lock(row) = copy;
        Some(result)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use racelab_core::health::Status;

    const E: EndpointId = EndpointId(1);
    const F: EndpointId = EndpointId(2);

    fn table(variant: Variant) -> SharedHealthTable {
        SharedHealthTable::new(variant, HealthConfig::default(), &[E, F])
    }

    #[test]
    fn sequential_thresholds_and_401_in_every_variant() {
        for variant in Variant::ALL {
            let t = table(variant);
            for _ in 0..3 {
                t.observe(F, Observation::Timeout, Source::Request, Generation(0));
            }
            assert!(!t.is_healthy(F), "{variant:?}");
            let g = t.dispatch(E);
            t.observe(E, Observation::Unauthorized, Source::Request, g);
            assert!(!t.is_healthy(E), "{variant:?}");
            assert_eq!(t.select(0, &[]), None, "{variant:?}");
        }
    }

    #[test]
    fn stale_success_is_ignored_only_in_correct() {
        for variant in Variant::ALL {
            let t = table(variant);
            let (endpoint, before) = t.select(0, &[]).expect("E is selectable");
            assert_eq!(endpoint, E);
            let g = t.dispatch(E);
            t.observe(E, Observation::Unauthorized, Source::Request, g);
            let outcome = t.observe(E, Observation::Success, Source::Request, before);
            let status = t.get(E).map(|h| h.status);
            if variant == Variant::Correct {
                assert_eq!(
                    (outcome, status),
                    (ObserveOutcome::Stale, Some(Status::AuthFailed))
                );
            } else {
                assert_eq!(
                    (outcome, status),
                    (ObserveOutcome::Applied, Some(Status::Healthy))
                );
            }
        }
    }

    #[test]
    fn rotation_starts_the_candidate_list_at_the_offset() {
        let t = table(Variant::Buggy);
        assert_eq!(t.healthy_endpoints(1), vec![F, E]);
        assert_eq!(t.select(1, &[F]).map(|s| s.0), Some(E));
    }
}
