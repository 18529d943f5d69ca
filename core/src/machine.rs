//! The sans-IO machine interface shared by every protocol in `core`.
//!
//! A machine is driven from outside (by `sim::explore`, or by the adapters' async driver):
//!
//! - inputs: [`Machine::handle_start`], [`Machine::handle_reply`] (exactly one reply per
//!   emitted operation: the store's answer, or [`Reply::Timeout`] from the driver), and
//!   [`Machine::handle_timeout`] (spurious calls are no-ops);
//! - outputs, drained after every input in this order until `None`: [`Machine::poll_op`]
//!   (store operations to perform), [`Machine::poll_note`] (outcomes worth recording), then
//!   [`Machine::poll_timeout`] (when the machine next wants `handle_timeout`).
//!
//! Time is always a parameter. A machine never reads a clock, never sleeps and never does IO.

use crate::ids::OpId;
use crate::ops::{Reply, StoreOp};
use crate::tag::{Note, Tag};
use crate::time::Timestamp;

/// An operation a machine wants performed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The machine's own id for it, echoed back in [`Machine::handle_reply`].
    pub id: OpId,
    /// The operation.
    pub op: StoreOp,
    /// What the operation means to the protocol (the `f` of a Jepsen history).
    pub tag: Tag,
}

/// A sans-IO protocol participant. See the module documentation for the drain order.
pub trait Machine {
    /// The process starts (or restarts after a crash, with fresh state).
    fn handle_start(&mut self, now: Timestamp);
    /// The answer to an operation this machine emitted.
    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply);
    /// A timer the machine asked for is due. Spurious calls are no-ops (the default, for
    /// machines that never ask for one).
    fn handle_timeout(&mut self, now: Timestamp) {
        let _ = now;
    }
    /// The next store operation to perform.
    #[must_use]
    fn poll_op(&mut self) -> Option<Outgoing>;
    /// The next outcome to record in the history (none by default).
    #[must_use]
    fn poll_note(&mut self) -> Option<Note> {
        None
    }
    /// When the machine next wants [`Machine::handle_timeout`] (never by default).
    #[must_use]
    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
    /// Whether the machine has nothing in flight and nothing it will do without new input
    /// other than polling for work (used to detect quiescence).
    fn is_idle(&self) -> bool;
}
