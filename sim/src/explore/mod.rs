//! `sim::explore`: the fast, seeded discrete-event world.
//!
//! One `u64` seed decides everything under the random scheduler; the scripted scheduler
//! replays the catalog's timelines exactly. A [`Run`] carries the history, every decision and
//! a trace hash; running the same spec and scheduler again gives the same hash.

mod exhaustive;
mod faults;
pub mod linear;
mod push;
mod queue;
mod redis;
mod rng;
mod schedule;
mod sql;
mod upstream;
mod world;

/// The store models, public so that the adapters' conformance tests can compare them with
/// real servers.
pub mod models {
    pub use super::queue::QueueModel;
    pub use super::redis::{KeySpace, LostWrites, RedisModel};
    pub use super::sql::{DEADLOCK, DEFAULT_DEADLOCK_TIMEOUT, SessionId, SqlModel, SqlOutcome};
}

pub use exhaustive::{Exhaustive, exhaustive, exhaustive_until_violation};
// The net world's balancer host serves the same balancer.
pub use faults::{FaultProfile, OpSite, PlannedPause, Target};
#[cfg(feature = "net")]
pub(crate) use push::PushHub;
pub use rng::{Choices, Decision, DecisionKind, Ratio, SimRng};
pub use schedule::{Action, OpEffect, PCT_CHANGE_SPAN, PCT_STEP, Scheduler, Step};
pub use upstream::{EndpointScript, StreamScript, StreamStep, Upstream, UpstreamModel};
pub use world::{
    Factory, NetConfig, ProcessSpec, RUN_EVENTS_MAX, Run, RunStats, StableHasher, WorldSpec, run,
};
