//! The failure queue shared by many threads or tasks (document 003; R-003-02, R-003-03).
//!
//! The queue's protocol is [`racelab_core::health::FailureQueue`]; this module only decides
//! how the threaded port takes its critical sections:
//!
//! - `Buggy`: the check-then-act split of a threaded port of `add_failed_endpoint`
//!   (`if e not in failed:` in one critical section, `failed.add(e); total_failed += 1` in
//!   another). Two threads adding the same endpoint can both pass the check, and the episode
//!   counter counts one insertion twice (R-003-02). Recovery removes unconditionally
//!   (R-003-03).
//! - `DocFix`: the same blocks under the document's `asyncio.Lock`, which gives no mutual
//!   exclusion across OS threads ([`EventLoopLock`]): the same races.
//! - `Correct`: one critical section per operation around the core queue, whose `add` counts
//!   only insertions and bumps the endpoint's failure epoch; recovery removes only if the
//!   epoch it snapshotted before probing is unchanged.
//!
//! On one event loop (or on a single-threaded simulator) no variant can interleave inside an
//! operation, since none contains an await; the races of the async code are in
//! [`crate::LocalProxy::recovery_round`].

use racelab_core::Variant;
use racelab_core::health::{EndpointId, FailureQueue};

use crate::sync::{EventLoopLock, Mutex, lock};

/// The failure epoch a recovery probe started with (see [`SharedFailureQueue::begin_recovery`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecoveryTicket {
    /// The endpoint's failure epoch when the probe started (`Correct`; 0 otherwise).
    pub epoch: u64,
}

/// What [`SharedFailureQueue::add`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueAdd {
    /// Whether this call inserted the endpoint (a new failure episode).
    pub inserted: bool,
    /// Whether this call incremented `total_failed`.
    pub counted: bool,
    /// The endpoint's failure epoch after the add (`Correct`; 0 otherwise).
    pub epoch: u64,
}

/// The failure queue, shared by reference (or `Arc`) between threads and tasks.
#[derive(Debug)]
pub struct SharedFailureQueue {
    variant: Variant,
    queue: Mutex<FailureQueue>,
    doc_lock: EventLoopLock,
}

impl SharedFailureQueue {
    /// An empty queue of the given variant.
    pub fn new(variant: Variant) -> SharedFailureQueue {
        SharedFailureQueue {
            variant,
            queue: Mutex::new(FailureQueue::new(variant)),
            doc_lock: EventLoopLock::new(),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// `add_failed_endpoint(e)`: a failure of `endpoint` was observed.
    pub fn add(&self, endpoint: EndpointId) -> QueueAdd {
        match self.variant {
            Variant::Buggy => self.check_then_act(endpoint),
            Variant::DocFix => {
                let _held = self.doc_lock.acquire();
                self.check_then_act(endpoint)
            }
            Variant::Correct => {
                let mut queue = lock(&self.queue);
                let before = queue.total_failed();
                let added = queue.add(endpoint);
                QueueAdd {
                    inserted: added.inserted,
                    counted: queue.total_failed() > before,
                    epoch: added.epoch,
                }
            }
        }
    }

    /// The threaded port's `if e not in failed: failed.add(e); total_failed += 1`, each half
    /// its own critical section (each Python operation is atomic under the GIL; the block is
    /// not).
    fn check_then_act(&self, endpoint: EndpointId) -> QueueAdd {
        let present = lock(&self.queue).contains(endpoint);
        if present {
            return QueueAdd {
                inserted: false,
                counted: false,
                epoch: 0,
            };
        }
        let added = lock(&self.queue).insert_counted(endpoint);
        QueueAdd {
            inserted: added.inserted,
            counted: true,
            epoch: added.epoch,
        }
    }

    /// A recovery probe of `endpoint` starts: the ticket it must present to remove it.
    pub fn begin_recovery(&self, endpoint: EndpointId) -> RecoveryTicket {
        RecoveryTicket {
            epoch: lock(&self.queue).begin_recovery(endpoint),
        }
    }

    /// `remove_failed_endpoint(e)` after a successful recovery probe that started with
    /// `ticket`. `Correct` removes only if no failure was added since; the others remove
    /// unconditionally (R-003-03). Returns whether the endpoint was removed.
    pub fn remove(&self, endpoint: EndpointId, ticket: RecoveryTicket) -> bool {
        let _held = (self.variant == Variant::DocFix).then(|| self.doc_lock.acquire());
        lock(&self.queue).remove(endpoint, ticket.epoch)
    }

    /// Whether `endpoint` is in the queue.
    pub fn contains(&self, endpoint: EndpointId) -> bool {
        lock(&self.queue).contains(endpoint)
    }

    /// The failed endpoints, in order.
    pub fn failed(&self) -> Vec<EndpointId> {
        lock(&self.queue).failed()
    }

    /// `stats['total_failed']`: failure episodes.
    pub fn total_failed(&self) -> u64 {
        lock(&self.queue).total_failed()
    }

    /// A copy of the core queue, taken in one critical section.
    pub fn snapshot(&self) -> FailureQueue {
        lock(&self.queue).clone()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const E: EndpointId = EndpointId(1);
    const F: EndpointId = EndpointId(2);

    #[test]
    fn sequential_adds_count_episodes_in_every_variant() {
        for variant in Variant::ALL {
            let q = SharedFailureQueue::new(variant);
            assert!(q.add(E).counted);
            assert!(!q.add(E).counted, "{variant:?}: already failed");
            assert!(q.add(F).counted);
            assert_eq!(
                (q.total_failed(), q.failed()),
                (2, vec![E, F]),
                "{variant:?}"
            );
        }
    }

    #[test]
    fn only_correct_recovery_refuses_after_a_newer_failure() {
        for variant in Variant::ALL {
            let q = SharedFailureQueue::new(variant);
            q.add(E);
            let ticket = q.begin_recovery(E);
            q.add(E);
            let removed = q.remove(E, ticket);
            assert_eq!(removed, variant != Variant::Correct, "{variant:?}");
            assert_eq!(q.contains(E), variant == Variant::Correct, "{variant:?}");
        }
    }
}
