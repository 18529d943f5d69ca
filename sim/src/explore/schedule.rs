//! Schedulers: what decides the faults, the latencies and the order of events.
//!
//! - [`Scheduler::Random`]: a seeded random walk. Latencies, and faults at operations and at
//!   times, are drawn from the seed according to a [`FaultProfile`] (`faults.rs`).
//! - [`Scheduler::Scripted`]: a timeline written as readable [`Step`]s, the way the documents
//!   write T1..Tn; latencies are fixed, nothing is random.

use std::fmt;

use racelab_core::{ClockSkew, Duration, StoreId, TagKind, Timestamp};

use super::faults::FaultProfile;

/// A fault that happens at a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Start dropping messages between the process and the store.
    Partition {
        /// The process, by name.
        process: String,
        /// The store.
        store: StoreId,
    },
    /// Stop dropping them.
    Heal {
        /// The process, by name.
        process: String,
        /// The store.
        store: StoreId,
    },
    /// Pause the process.
    Pause {
        /// The process, by name.
        process: String,
        /// For how long.
        duration: Duration,
    },
    /// Kill the process.
    Crash {
        /// The process, by name.
        process: String,
        /// Restart it this much later, or never.
        restart_after: Option<Duration>,
    },
    /// Promote Redis' replica.
    Failover,
    /// Restart Redis without persistence: every key is lost; the queue survives
    /// (`Fault::RedisRestart` says why).
    RedisRestart,
    /// From now on the process's clock has this error: what it reads (its `now`, the
    /// deadlines it computes) drifts from the stores' true time; it never reads less than it
    /// read before.
    Clock {
        /// The process, by name.
        process: String,
        /// The clock's error.
        skew: ClockSkew,
    },
}

/// A fault that happens at an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpEffect {
    /// The process pauses after deciding to send the operation and before it is sent.
    PauseBeforeSend(Duration),
    /// The request spends this much longer in the network.
    Delay(Duration),
    /// The store applies the operation; its reply is lost.
    DropReply,
    /// The process crashes right after the store applied the operation.
    CrashAfterApply {
        /// Restart it this much later, or never.
        restart_after: Option<Duration>,
    },
    /// Redis fails over right after applying the operation (before it is replicated).
    FailoverAfterApply,
}

/// One step of a scripted timeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// At a time.
    At {
        /// When.
        at: Timestamp,
        /// What.
        action: Action,
    },
    /// At the `nth` (1-based) operation of `kind` that `process` sends.
    On {
        /// The process, by name.
        process: String,
        /// The kind of operation.
        kind: TagKind,
        /// Which occurrence, counted over the process' lifetime (all incarnations).
        nth: u32,
        /// The fault.
        effect: OpEffect,
    },
}

impl Step {
    /// `At` with the time in milliseconds.
    pub fn at(ms: u64, action: Action) -> Step {
        Step::At {
            at: Timestamp::from_ms(ms),
            action,
        }
    }

    /// `On` the `nth` operation of `kind` by `process`.
    pub fn on(process: &str, kind: TagKind, nth: u32, effect: OpEffect) -> Step {
        Step::On {
            process: process.to_string(),
            kind,
            nth,
            effect,
        }
    }
}

/// What decides a run's faults and ordering.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// A seeded random walk.
    Random {
        /// The seed.
        seed: u64,
        /// The fault model.
        faults: FaultProfile,
    },
    /// Exactly the given fault steps, with the seed's latencies: how a random run's faults are
    /// replayed and shrunk (see `Run::injected`).
    Pinned {
        /// The seed of the original run (its latency stream is reused).
        seed: u64,
        /// The latency bounds of the original run's fault profile.
        latency: (Duration, Duration),
        /// The faults to inject.
        steps: Vec<Step>,
    },
    /// One schedule of a bounded exhaustive search: every fault decision is a choice point
    /// (see `SimRng::enumerating`); `prefix` fixes the first ones, later ones take their
    /// default (no fault). Latencies are fixed at the scripted latency, unless `slow` is set:
    /// then every message's latency is a choice point too (the scripted latency by default,
    /// or `slow`), so that the order in which messages arrive is enumerated, not only the
    /// faults. `explore::exhaustive` walks all prefixes.
    Exhaustive {
        /// The choices to take first.
        prefix: Vec<u32>,
        /// Which faults are choice points (only the non-zero ratios), and their bounds.
        faults: FaultProfile,
        /// The latency of a message delayed by choice; `None`: latencies are not choices.
        slow: Option<Duration>,
    },
    /// A scripted timeline with a fixed latency.
    Scripted {
        /// The timeline's name (`base`, `pause-after-check`, ...).
        name: String,
        /// The steps.
        steps: Vec<Step>,
    },
    /// PCT (Burckhardt et al., ASPLOS 2010) adapted to a world of messages: each process gets
    /// a distinct random priority, and every message it sends or receives takes longer the
    /// lower its priority (the latency's lower bound plus one step per rank, the step being
    /// the profile's latency spread divided among the processes, at least `PCT_STEP`), so a
    /// lower-priority process's next delivery waits behind every higher one's, the ranks span
    /// the same latencies the random walk draws from (a race that needs one process's
    /// round trip to outlast another's, such as a slow probe overtaken by a newer failure,
    /// stays reachable), and its local blocks start after theirs; at `depth - 1` change points, drawn among the first
    /// `PCT_CHANGE_SPAN` operations sent, the sending process drops below every other. Faults
    /// come from `faults`, drawn as under `Random`.
    Pct {
        /// The seed (priorities, change points, faults).
        seed: u64,
        /// The bug depth the run targets (at least 1: `depth - 1` change points).
        depth: u32,
        /// The fault model (its latency bounds give the lower bound and the spread).
        faults: FaultProfile,
    },
}

/// The least extra latency per priority rank under [`Scheduler::Pct`] (and the delay per rank
/// of a local block's start).
pub const PCT_STEP: Duration = Duration::from_ms(1);

/// Under [`Scheduler::Pct`], the change points are drawn among this many first operations
/// sent (PCT's `k`, the run's length, which a world does not know in advance: a constant for
/// every race, about the length of the catalog's runs).
pub const PCT_CHANGE_SPAN: u64 = 64;

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Partition { process, store } => write!(f, "partition({process}, {store:?})"),
            Action::Heal { process, store } => write!(f, "heal({process}, {store:?})"),
            Action::Pause { process, duration } => write!(f, "pause({process}, {duration})"),
            Action::Crash {
                process,
                restart_after: Some(d),
            } => {
                write!(f, "crash({process}), restart after {d}")
            }
            Action::Crash {
                process,
                restart_after: None,
            } => write!(f, "crash({process})"),
            Action::Failover => write!(f, "failover(Redis)"),
            Action::RedisRestart => write!(f, "restart(Redis)"),
            Action::Clock { process, skew } => write!(f, "clock({process}, {skew})"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::At { at, action } => write!(f, "at {at}: {action}"),
            Step::On {
                process,
                kind,
                nth,
                effect,
            } => {
                write!(f, "when {process} sends its {} {kind:?}: ", ordinal(*nth))?;
                match effect {
                    OpEffect::PauseBeforeSend(d) => {
                        write!(f, "pause({process}, {d}) before it leaves")
                    }
                    OpEffect::Delay(d) => write!(f, "delay it {d} in the network"),
                    OpEffect::DropReply => write!(f, "apply it, lose the reply"),
                    OpEffect::CrashAfterApply {
                        restart_after: Some(d),
                    } => {
                        write!(f, "apply it, crash({process}), restart after {d}")
                    }
                    OpEffect::CrashAfterApply {
                        restart_after: None,
                    } => {
                        write!(f, "apply it, crash({process})")
                    }
                    OpEffect::FailoverAfterApply => {
                        write!(f, "apply it, failover(Redis) before it replicates")
                    }
                }
            }
        }
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}
