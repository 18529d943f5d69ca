//! The synchronisation facade: `std::sync` normally, loom's checked versions under
//! `--cfg loom`, so that the structures of this crate are the ones loom explores.
//!
//! Every structure in this crate takes its locks through [`lock`], which never panics on a
//! poisoned lock: a panic in another thread is a bug reported by that thread, and the data a
//! critical section protects is valid after each of its statements.

#[cfg(loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex` (one critical section until the guard is dropped), ignoring poisoning.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The documents' `asyncio.Lock`, ported literally to a threaded proxy.
///
/// An `asyncio.Lock` belongs to one event loop and is not thread-safe: it only orders the
/// coroutines of the loop that awaits it. A port whose threads each run their own event loop
/// (RACES.md R-001-04, R-003-02) therefore has, in effect, one lock per thread, and a lock
/// that no other thread ever takes is always free: it gives **no mutual exclusion across OS
/// threads**. Within one event loop it adds nothing either, because the blocks it guards
/// contain no `await` and are atomic already (RACES.md 0.6). So [`EventLoopLock::acquire`]
/// excludes nothing, on purpose: it is the `DocFix` variants' lock as it behaves across
/// threads, not a placeholder.
#[derive(Debug, Default)]
pub struct EventLoopLock {
    _private: (),
}

/// Held while the document's `async with self._lock:` block runs; excludes nothing.
#[derive(Debug)]
#[must_use = "the document's lock is held for the guarded block"]
pub struct EventLoopGuard<'a> {
    _lock: &'a EventLoopLock,
}

impl EventLoopLock {
    /// A lock bound to the calling thread's event loop.
    pub fn new() -> EventLoopLock {
        EventLoopLock { _private: () }
    }

    /// `async with self._lock:` on the caller's own event loop: always granted at once,
    /// whatever other threads hold.
    pub fn acquire(&self) -> EventLoopGuard<'_> {
        EventLoopGuard { _lock: self }
    }
}
