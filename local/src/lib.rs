//! racelab-local: the proxy's in-process shared structures of documents 001 and 003, as a
//! threaded or multi-task port would build them, and the async code that uses them.
//!
//! - [`SharedHealthTable`] and [`SharedFailureQueue`]: the endpoint table and the failure
//!   queue shared by many threads or tasks, in the `Buggy`, `DocFix` and `Correct` variants
//!   of [`racelab_core::Variant`]. The protocol logic is
//!   [`racelab_core::health`]'s; these types only decide the critical sections (a `Mutex`
//!   around the core type for `Correct`, the ported check-then-act and load/store splits for
//!   the others).
//! - [`SharedRouter`]: document 000's endpoint router ([`racelab_core::route::Router`]) shared
//!   by a gateway's threads: `Buggy`/`DocFix` update it by read-modify-write, as the
//!   document's selection statistics are, `Correct` in one critical section per operation.
//! - [`LocalProxy`]: request forwarding, the health monitor's probe round and the failure
//!   queue's recovery round as `async fn`s over an [`Upstream`], with the documents' await
//!   points, plus an [`EventLog`] and the invariants judged on it ([`no_dispatch_after_401`],
//!   [`no_stale_recovery`]).
//! - [`sync`]: the facade over `std::sync` that switches to loom under `--cfg loom`; the
//!   loom models are in `racelab-models`, the madsim lane in `madsim-lane/`.
//!
//! Architecture invariant: no clock, no randomness, no runtime and no spawning here; the
//! threads (loom) or the scheduler (tokio, madsim) decide every order.

#![forbid(unsafe_code)]

mod log;
mod proxy;
mod queue;
mod router;
pub mod sync;
mod table;

pub use log::{
    Event, EventLog, LogViolation, RequestId, Ticket, no_dispatch_after_401, no_stale_recovery,
};
pub use proxy::{ATTEMPTS_MAX, CallKind, Forwarded, LocalProxy, Upstream};
pub use queue::{QueueAdd, RecoveryTicket, SharedFailureQueue};
pub use router::SharedRouter;
pub use table::SharedHealthTable;
