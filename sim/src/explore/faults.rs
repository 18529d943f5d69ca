//! The fault engine: a [`FaultProfile`] (how often each fault happens, and where it may
//! strike) and the one piece of code that turns it and a random stream into faults. Both
//! worlds call it: the explore world (`world.rs`) and the net world (`racelab-scenarios`'s
//! `net.rs`), so a profile means the same thing in either.
//!
//! - [`FaultProfile::op_faults`]: the faults at one operation as its process sends it.
//! - [`FaultProfile::plan_pauses`]: the pauses planned at times (`pauses_at`).
//!
//! A race's own rules are parameters of its profile ([`Target`]s, `failover_exempt`), never
//! code in a world.

use std::hash::{Hash, Hasher};

use racelab_core::{ClockSkew, Duration, StoreId, TagKind, Timestamp};

use super::rng::{DecisionKind, Ratio, SimRng};
use super::schedule::OpEffect;

/// Where a per-operation fault may strike: operations of the named processes, to the given
/// stores, of the given kinds. An empty list allows any; [`Target::ANY`] (the default) allows
/// every operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Target {
    /// The processes, by name (empty: any process).
    pub processes: Vec<String>,
    /// The stores (empty: any store).
    pub stores: Vec<StoreId>,
    /// The operation kinds (empty: any kind).
    pub kinds: Vec<TagKind>,
}

impl Target {
    /// Every operation.
    pub const ANY: Target = Target {
        processes: Vec::new(),
        stores: Vec::new(),
        kinds: Vec::new(),
    };

    /// The operations of the named processes only.
    pub fn processes(names: &[&str]) -> Target {
        Target {
            processes: names.iter().map(|n| n.to_string()).collect(),
            ..Target::ANY
        }
    }

    /// Whether the process named `name` is among the target's.
    pub fn allows_process(&self, name: &str) -> bool {
        self.processes.is_empty() || self.processes.iter().any(|p| p == name)
    }

    /// Whether `op` is one of the target's operations.
    pub fn matches(&self, op: &OpSite<'_>) -> bool {
        self.allows_process(op.process)
            && (self.stores.is_empty() || self.stores.contains(&op.store))
            && (self.kinds.is_empty() || self.kinds.contains(&op.kind))
    }
}

/// How often each fault happens under the random scheduler, all as integer ratios, and where
/// it may strike. No fault is injected at or after `window`.
///
/// A per-operation rate applies to each operation that a process sends before the window
/// closes, if the operation matches the fault's [`Target`] (`pause_on`, ...) and the other
/// conditions its field names; the draws happen in the fields' order, a zero rate draws
/// nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultProfile {
    /// Faults are injected only before this time; afterwards the world settles.
    pub window: Duration,
    /// Network latency bounds for every message.
    pub latency: (Duration, Duration),
    /// Per operation of a fault-prone process that matches `pause_on`: the process pauses
    /// after deciding to send it and before it is sent, for `pause_len`.
    pub pause: Ratio,
    /// Pause length bounds (of per-operation and of planned pauses).
    pub pause_len: (Duration, Duration),
    /// Per operation of any process (fault-prone or not) that matches `delay_on`: the request
    /// spends `delay_len` longer in the network.
    pub delay: Ratio,
    /// Delay bounds.
    pub delay_len: (Duration, Duration),
    /// Per operation of any process (fault-prone or not) that matches `drop_reply_on`: the
    /// store applies it and its reply is lost.
    pub drop_reply: Ratio,
    /// Per operation of a fault-prone process that matches `crash_on`: the process crashes
    /// right after the store applied it (the net world: right after it completes), and
    /// restarts after `restart_after`.
    pub crash: Ratio,
    /// Restart delay bounds after a crash.
    pub restart_after: (Duration, Duration),
    /// Per operation to Redis (the key space or the queue) of any process whose kind is not in
    /// `failover_exempt` and that matches `failover_on`: Redis fails over right after
    /// applying it (before it is replicated).
    pub failover: Ratio,
    /// How many process-to-store partitions to plan within the window, each of a random
    /// fault-prone process.
    pub partitions: u32,
    /// Partition length bounds.
    pub partition_len: (Duration, Duration),
    /// How many Redis restarts to plan within the window.
    pub redis_restarts: u32,
    /// How many pauses to plan at random times within the window, each of a random
    /// fault-prone process among `pause_on`'s processes (its stores and kinds do not apply)
    /// and of `pause_len`: unlike `pause`, such a pause can begin at any moment of the
    /// process' work (waiting for a reply or a timer), not only as it sends.
    pub pauses_at: u32,
    /// Operation kinds after which no failover is injected (a race's own rule, e.g. queue
    /// fetches, whose loss the queue model does not express).
    pub failover_exempt: Vec<TagKind>,
    /// The operations `pause` may strike (and the processes `pauses_at` may).
    pub pause_on: Target,
    /// The operations `delay` may strike.
    pub delay_on: Target,
    /// The operations `drop_reply` may strike.
    pub drop_reply_on: Target,
    /// The operations `crash` may strike.
    pub crash_on: Target,
    /// The operations `failover` may strike.
    pub failover_on: Target,
    /// Clock skew bounds: each fault-prone process among `pause_on`'s processes gets, at the
    /// start of the run, a clock whose offset is drawn within `±clock_offset` and whose rate
    /// error within `±clock_rate_ppm` parts per million (see [`racelab_core::ClockSkew`];
    /// stores keep true time). Zero and zero: every clock is true.
    pub clock_offset: Duration,
    /// See `clock_offset` (capped at [`racelab_core::ClockSkew::RATE_PPM_MAX`]).
    pub clock_rate_ppm: u32,
}

/// The profile is part of a random run's trace hash (through its [`Scheduler`]). The fields
/// added after the first ones (`pauses_at`, the targets, the clock bounds) are hashed only
/// when set, so that
/// a profile that does not use them keeps the trace hashes it had before they existed.
///
/// [`Scheduler`]: super::Scheduler
impl Hash for FaultProfile {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let FaultProfile {
            window,
            latency,
            pause,
            pause_len,
            delay,
            delay_len,
            drop_reply,
            crash,
            restart_after,
            failover,
            partitions,
            partition_len,
            redis_restarts,
            pauses_at,
            failover_exempt,
            pause_on,
            delay_on,
            drop_reply_on,
            crash_on,
            failover_on,
            clock_offset,
            clock_rate_ppm,
        } = self;
        (
            window, latency, pause, pause_len, delay, delay_len, drop_reply,
        )
            .hash(state);
        (crash, restart_after, failover, partitions, partition_len).hash(state);
        (redis_restarts, failover_exempt).hash(state);
        if *pauses_at != 0 {
            (0u8, pauses_at).hash(state);
        }
        let targets = [pause_on, delay_on, drop_reply_on, crash_on, failover_on];
        for (i, target) in (1u8..).zip(targets) {
            if *target != Target::ANY {
                (i, target).hash(state);
            }
        }
        if *clock_offset != Duration::ZERO || *clock_rate_ppm != 0 {
            (6u8, clock_offset, clock_rate_ppm).hash(state);
        }
    }
}

/// An operation as the fault engine sees it.
#[derive(Clone, Copy, Debug)]
pub struct OpSite<'a> {
    /// Its process, by name.
    pub process: &'a str,
    /// Whether that process is fault-prone ([`crate::explore::ProcessSpec::fault_prone`]).
    pub fault_prone: bool,
    /// Its kind (the tag's).
    pub kind: TagKind,
    /// Its store ([`racelab_core::StoreOp::store`]).
    pub store: StoreId,
}

/// A pause planned at a time ([`FaultProfile::plan_pauses`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedPause {
    /// When it begins.
    pub at: Timestamp,
    /// The process, as an index into the list given to the planner.
    pub process: usize,
    /// How long it lasts.
    pub duration: Duration,
}

impl FaultProfile {
    /// No faults at all, latencies of 1 to 5 ms.
    pub fn quiet() -> FaultProfile {
        FaultProfile {
            window: Duration::ZERO,
            latency: (Duration::from_ms(1), Duration::from_ms(5)),
            pause: Ratio::NEVER,
            pause_len: (Duration::ZERO, Duration::ZERO),
            delay: Ratio::NEVER,
            delay_len: (Duration::ZERO, Duration::ZERO),
            drop_reply: Ratio::NEVER,
            crash: Ratio::NEVER,
            restart_after: (Duration::from_secs(1), Duration::from_secs(10)),
            failover: Ratio::NEVER,
            partitions: 0,
            partition_len: (Duration::ZERO, Duration::ZERO),
            redis_restarts: 0,
            pauses_at: 0,
            failover_exempt: Vec::new(),
            pause_on: Target::ANY,
            delay_on: Target::ANY,
            drop_reply_on: Target::ANY,
            crash_on: Target::ANY,
            failover_on: Target::ANY,
            clock_offset: Duration::ZERO,
            clock_rate_ppm: 0,
        }
    }

    /// Swarm testing (Groce et al., ISSTA 2012): one generic profile for every race, in which
    /// each run first draws from `rng` which fault kinds are on (each with probability one
    /// half) and at what rate or count, then the faults as usual. Runs thus differ in their
    /// *mix* of faults (a run with only failovers, one with only pauses and lost replies),
    /// which finds failures that a fixed mix with every kind on at once hides.
    ///
    /// Nothing of a race is consulted but the span of its workload, `window`, the network
    /// `latency`, and `failover_exempt` (operations whose loss the store models cannot
    /// express, a model limit rather than a hint): every [`Target`] is [`Target::ANY`], and
    /// fault lengths are drawn on a log scale of the window (from a hundredth to a half of
    /// it), so a lease of any TTL meets pauses both shorter and longer than it.
    pub fn swarm(
        rng: &mut SimRng,
        window: Duration,
        latency: (Duration, Duration),
        failover_exempt: Vec<TagKind>,
    ) -> FaultProfile {
        const RATES: [u32; 4] = [5, 20, 50, 100];
        let on = |rng: &mut SimRng| rng.below(2) == 1;
        let rate = |rng: &mut SimRng| {
            if on(rng) {
                Ratio::per_mille(RATES[rng.below(RATES.len() as u64) as usize])
            } else {
                Ratio::NEVER
            }
        };
        let count = |rng: &mut SimRng, max: u64| {
            if on(rng) {
                rng.between(1, max) as u32
            } else {
                0
            }
        };
        // A length range: its top one of window/100, window/10, window/2, its bottom a tenth
        // of the top (at least 1 ms).
        let lengths = |rng: &mut SimRng| {
            let top = match rng.below(3) {
                0 => window.as_ms() / 100,
                1 => window.as_ms() / 10,
                _ => window.as_ms() / 2,
            }
            .max(2);
            (Duration::from_ms((top / 10).max(1)), Duration::from_ms(top))
        };
        let pause = rate(rng);
        let pause_len = lengths(rng);
        let delay = rate(rng);
        let delay_len = lengths(rng);
        let drop_reply = rate(rng);
        let crash = rate(rng);
        let restart_after = lengths(rng);
        let failover = rate(rng);
        let partitions = count(rng, 3);
        let partition_len = lengths(rng);
        let redis_restarts = count(rng, 2);
        let pauses_at = count(rng, 3);
        let (clock_offset, clock_rate_ppm) = if on(rng) {
            let (_, top) = lengths(rng);
            (top, 1000)
        } else {
            (Duration::ZERO, 0)
        };
        FaultProfile {
            window,
            latency,
            pause,
            pause_len,
            delay,
            delay_len,
            drop_reply,
            crash,
            restart_after,
            failover,
            partitions,
            partition_len,
            redis_restarts,
            pauses_at,
            failover_exempt,
            clock_offset,
            clock_rate_ppm,
            ..FaultProfile::quiet()
        }
    }

    /// The faults to inject at `op`, sent at `now`, drawn from `rng` (in this order, each only
    /// where it applies: pause, delay, lost reply, crash, failover).
    pub fn op_faults(&self, rng: &mut SimRng, now: Timestamp, op: &OpSite<'_>) -> Vec<OpEffect> {
        let mut effects = Vec::new();
        if now.as_ms() >= self.window.as_ms() {
            return effects;
        }
        let rng = rng.at(now, DecisionKind::OpFault);
        if op.fault_prone && self.pause_on.matches(op) && rng.chance(self.pause) {
            let d = rng.duration(self.pause_len.0, self.pause_len.1);
            effects.push(OpEffect::PauseBeforeSend(d));
        }
        if self.delay_on.matches(op) && rng.chance(self.delay) {
            let d = rng.duration(self.delay_len.0, self.delay_len.1);
            effects.push(OpEffect::Delay(d));
        }
        if self.drop_reply_on.matches(op) && rng.chance(self.drop_reply) {
            effects.push(OpEffect::DropReply);
        }
        if op.fault_prone && self.crash_on.matches(op) && rng.chance(self.crash) {
            let d = rng.duration(self.restart_after.0, self.restart_after.1);
            effects.push(OpEffect::CrashAfterApply {
                restart_after: Some(d),
            });
        }
        if op.store == StoreId::Redis
            && !self.failover_exempt.contains(&op.kind)
            && self.failover_on.matches(op)
            && rng.chance(self.failover)
        {
            effects.push(OpEffect::FailoverAfterApply);
        }
        effects
    }

    /// The clocks of the processes (name, fault-prone) that the clock bounds apply to, drawn
    /// from `rng`: (process index, skew), none when both bounds are zero.
    pub fn plan_clocks(
        &self,
        rng: &mut SimRng,
        processes: &[(&str, bool)],
    ) -> Vec<(usize, ClockSkew)> {
        if self.clock_offset == Duration::ZERO && self.clock_rate_ppm == 0 {
            return Vec::new();
        }
        let rng = rng.at(Timestamp::ZERO, DecisionKind::PlannedFault);
        let max_offset = self.clock_offset.as_ms().min(i64::MAX as u64 / 2);
        let max_rate = u64::from(
            self.clock_rate_ppm
                .min(ClockSkew::RATE_PPM_MAX.unsigned_abs()),
        );
        processes
            .iter()
            .enumerate()
            .filter(|(_, (name, prone))| *prone && self.pause_on.allows_process(name))
            .map(|(i, _)| {
                let offset = rng.between(0, 2 * max_offset) as i64 - max_offset as i64;
                let rate = rng.between(0, 2 * max_rate) as i64 - max_rate as i64;
                let skew = ClockSkew {
                    offset_ms: offset,
                    rate_ppm: i32::try_from(rate).unwrap_or(0),
                };
                (i, skew)
            })
            .collect()
    }

    /// The `pauses_at` pauses planned within the window, drawn from `rng`: each at a random
    /// time, of a random candidate among `processes` (name, fault-prone) that are fault-prone
    /// and among `pause_on`'s processes, for `pause_len`. None without a candidate.
    pub fn plan_pauses(&self, rng: &mut SimRng, processes: &[(&str, bool)]) -> Vec<PlannedPause> {
        let candidates: Vec<usize> = processes
            .iter()
            .enumerate()
            .filter(|(_, (name, prone))| *prone && self.pause_on.allows_process(name))
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let rng = rng.at(Timestamp::ZERO, DecisionKind::PlannedFault);
        let window = self.window.as_ms().max(1);
        (0..self.pauses_at)
            .map(|_| {
                let at = Timestamp::from_ms(rng.below(window));
                let pick = rng.below(candidates.len() as u64);
                let process = candidates[usize::try_from(pick).unwrap_or(0)];
                let duration = rng.duration(self.pause_len.0, self.pause_len.1);
                PlannedPause {
                    at,
                    process,
                    duration,
                }
            })
            .collect()
    }
}
