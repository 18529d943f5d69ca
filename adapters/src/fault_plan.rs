//! Faults planned on a real-server run's progress, not on its wall time: each kind is
//! injected at least N times at points of progress (so many requests completed) drawn from
//! the run's seed, so that a fast run gets every one of them as surely as a slow one, and a
//! run that could not inject one of them fails instead of passing quietly.
//!
//! Every real-server check uses it: document 002's ([`crate::check_real`], progress = scans
//! seen applied), the gateway's ([`crate::check_gateway`], progress = requests finished) and
//! the scheduler's ([`crate::check_scheduler`], progress = jobs whose outcome was told).
//! The plan only says *when* a kind is due; each run carries it out on its own processes and
//! servers and reports back with [`FaultPlan::injected`], and [`FaultPlan::verify`] turns a
//! shortfall into an error.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::AdapterError;

/// A kind of fault a real-server run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Our own `redis-server` restarted without persistence: every key (and queued job) lost.
    RedisRestart,
    /// A busy worker killed at whatever point it is (the process dies with its connections;
    /// a fresh incarnation takes over).
    WorkerKill,
    /// A worker killed right after it took its claim and before the effect commits: the
    /// work order's lease (document 002); the idempotency claim or marker, the quota
    /// reservation or the stream's hold (the gateway).
    KillAfterClaim,
    /// Every proxied connection slowed down for a moment.
    LatencySpike,
    /// Some proxied connections held still for longer than a lease or job lock.
    StalledConnection,
    /// Some proxied connections cut.
    CutConnection,
    /// A scheduler instance killed (its connections with it) and started again, fresh, a
    /// moment later (document 004).
    SchedulerKill,
    /// A worker node killed (its connections with it) and started again, fresh, after longer
    /// than the dead-node bound T_dead (document 004).
    NodeKill,
    /// A worker node paused past its lease (nothing it sends leaves it), then resumed: the
    /// zombie whose results must be refused (document 004).
    NodePause,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::RedisRestart,
        FaultKind::WorkerKill,
        FaultKind::KillAfterClaim,
        FaultKind::LatencySpike,
        FaultKind::StalledConnection,
        FaultKind::CutConnection,
        FaultKind::SchedulerKill,
        FaultKind::NodeKill,
        FaultKind::NodePause,
    ];

    /// The kinds of the worker runs (document 002's and the gateway's), in a fixed order.
    pub const WORKERS: [FaultKind; 6] = [
        FaultKind::RedisRestart,
        FaultKind::WorkerKill,
        FaultKind::KillAfterClaim,
        FaultKind::LatencySpike,
        FaultKind::StalledConnection,
        FaultKind::CutConnection,
    ];

    /// The kinds of the scheduler run (document 004), in a fixed order.
    pub const SCHEDULER: [FaultKind; 5] = [
        FaultKind::RedisRestart,
        FaultKind::SchedulerKill,
        FaultKind::NodeKill,
        FaultKind::NodePause,
        FaultKind::CutConnection,
    ];

    /// The kind's name (as in JSON reports).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::RedisRestart => "redis-restart",
            FaultKind::WorkerKill => "worker-kill",
            FaultKind::KillAfterClaim => "kill-after-claim",
            FaultKind::LatencySpike => "latency-spike",
            FaultKind::StalledConnection => "stalled-connection",
            FaultKind::CutConnection => "cut-connection",
            FaultKind::SchedulerKill => "scheduler-kill",
            FaultKind::NodeKill => "node-kill",
            FaultKind::NodePause => "node-pause",
        }
    }

    /// Whether the kind goes through the fault proxy.
    pub fn needs_proxy(self) -> bool {
        matches!(
            self,
            FaultKind::LatencySpike | FaultKind::StalledConnection | FaultKind::CutConnection
        )
    }
}

/// The faults a run injects: each kind of `kinds` at least `per_kind` times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultOptions {
    /// The kinds to inject (a shared Redis cannot take [`FaultKind::RedisRestart`]).
    pub kinds: Vec<FaultKind>,
    /// How many times each kind is injected (at least; 0: no faults at all).
    pub per_kind: u32,
}

impl FaultOptions {
    /// No faults at all.
    pub fn none() -> FaultOptions {
        FaultOptions {
            kinds: Vec::new(),
            per_kind: 0,
        }
    }

    /// Every kind of the worker runs ([`FaultKind::WORKERS`]), `per_kind` times each.
    pub fn every_kind(per_kind: u32) -> FaultOptions {
        FaultOptions {
            kinds: FaultKind::WORKERS.to_vec(),
            per_kind,
        }
    }

    /// Every kind of the worker runs but Redis restarts (a shared Redis is never restarted),
    /// `per_kind` times.
    pub fn shared_redis(per_kind: u32) -> FaultOptions {
        FaultOptions {
            kinds: FaultKind::WORKERS
                .into_iter()
                .filter(|k| *k != FaultKind::RedisRestart)
                .collect(),
            per_kind,
        }
    }

    /// Every kind of the scheduler run ([`FaultKind::SCHEDULER`]), `per_kind` times each;
    /// without Redis restarts when `shared` (a shared Redis is never restarted).
    pub fn scheduler(per_kind: u32, shared: bool) -> FaultOptions {
        FaultOptions {
            kinds: FaultKind::SCHEDULER
                .into_iter()
                .filter(|k| !shared || *k != FaultKind::RedisRestart)
                .collect(),
            per_kind,
        }
    }

    /// Whether any planned kind needs the fault proxy.
    pub fn needs_proxy(&self) -> bool {
        self.per_kind > 0 && self.kinds.iter().any(|k| k.needs_proxy())
    }

    /// Whether `kind` is planned.
    pub fn plans(&self, kind: FaultKind) -> bool {
        self.per_kind > 0 && self.kinds.contains(&kind)
    }

    /// Refuses, in one sentence, a kind outside `allowed` (the kinds the run named `run` can
    /// inject) and a Redis restart planned against a shared server (`shared_redis`).
    pub fn refuse_unsupported(
        &self,
        run: &str,
        allowed: &[FaultKind],
        shared_redis: bool,
    ) -> Result<(), String> {
        if let Some(k) = self
            .kinds
            .iter()
            .find(|k| self.per_kind > 0 && !allowed.contains(*k))
        {
            let names: Vec<&str> = allowed.iter().map(|k| k.name()).collect();
            return Err(format!(
                "the {run} run cannot inject {} (its kinds: {})",
                k.name(),
                names.join(", ")
            ));
        }
        if shared_redis && self.plans(FaultKind::RedisRestart) {
            return Err(
                "restarting Redis needs RedisTarget::Spawn (a shared server is never restarted)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Faults injected during a run, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounts {
    /// Redis restarts (every key and queued job lost).
    pub redis_restarts: u64,
    /// Workers killed at a random moment.
    pub worker_kills: u64,
    /// Workers killed right after taking their claim (lease, idempotency claim, reservation,
    /// hold), before the effect.
    pub kills_after_claim: u64,
    /// Latency spikes on every proxied connection.
    pub latency_spikes: u64,
    /// Times some connections were stalled (held longer than a lease or the queue's lock).
    pub stalls: u64,
    /// Times some connections were cut.
    pub cuts: u64,
    /// Connections stalled, over all stalls.
    pub stalled_connections: u64,
    /// Connections cut, over all cuts.
    pub cut_connections: u64,
    /// Scheduler instances killed and started again (document 004).
    pub scheduler_kills: u64,
    /// Worker nodes killed and started again after T_dead (document 004).
    pub node_kills: u64,
    /// Worker nodes paused past their lease and resumed (document 004).
    pub node_pauses: u64,
}

impl FaultCounts {
    /// How many times `kind` was injected.
    pub fn of(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::RedisRestart => self.redis_restarts,
            FaultKind::WorkerKill => self.worker_kills,
            FaultKind::KillAfterClaim => self.kills_after_claim,
            FaultKind::LatencySpike => self.latency_spikes,
            FaultKind::StalledConnection => self.stalls,
            FaultKind::CutConnection => self.cuts,
            FaultKind::SchedulerKill => self.scheduler_kills,
            FaultKind::NodeKill => self.node_kills,
            FaultKind::NodePause => self.node_pauses,
        }
    }

    /// Counts one injection of `kind`.
    pub fn add(&mut self, kind: FaultKind) {
        let n = match kind {
            FaultKind::RedisRestart => &mut self.redis_restarts,
            FaultKind::WorkerKill => &mut self.worker_kills,
            FaultKind::KillAfterClaim => &mut self.kills_after_claim,
            FaultKind::LatencySpike => &mut self.latency_spikes,
            FaultKind::StalledConnection => &mut self.stalls,
            FaultKind::CutConnection => &mut self.cuts,
            FaultKind::SchedulerKill => &mut self.scheduler_kills,
            FaultKind::NodeKill => &mut self.node_kills,
            FaultKind::NodePause => &mut self.node_pauses,
        };
        *n += 1;
    }
}

/// The planned points, in order of progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// (progress at which it is due, kind), sorted by progress.
    points: Vec<(u64, FaultKind)>,
    next: usize,
    options: FaultOptions,
}

/// The share of the run (in percent of its progress) over which faults are spread: none in
/// the first moments (the workers are still connecting) and none in the last stretch (a
/// kill after a claim needs claims left to happen after it is armed).
const SPREAD_FROM_PERCENT: u64 = 5;
const SPREAD_TO_PERCENT: u64 = 80;

impl FaultPlan {
    /// The plan of `options` over a run whose progress goes from 0 to `total`: every kind
    /// `per_kind` times, the kinds of each round in an order drawn from `rng` (the kills after
    /// a claim first of all), the points evenly spread over 5-80 % of the progress.
    pub fn new(options: &FaultOptions, total: u64, rng: &mut ChaCha8Rng) -> FaultPlan {
        let mut kinds = options.kinds.clone();
        kinds.sort();
        kinds.dedup();
        let mut order = Vec::new();
        for _ in 0..options.per_kind {
            let mut round = kinds.clone();
            // Fisher-Yates from the run's seed.
            for i in (1..round.len()).rev() {
                round.swap(i, rng.random_range(0..=i));
            }
            order.extend(round);
        }
        // A kill after a claim is only armed at its point and strikes at the next claim, so
        // those come first: armed early, each has most of the run's claims still ahead of
        // it, instead of being armed late and disarmed at the end unstruck (a run that
        // finished its last claims while an earlier fault was being injected).
        order.sort_by_key(|k| *k != FaultKind::KillAfterClaim);
        let n = order.len() as u64;
        let points = order
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let i = i as u64;
                let percent_x_n =
                    SPREAD_FROM_PERCENT * n.max(1) + (SPREAD_TO_PERCENT - SPREAD_FROM_PERCENT) * i;
                let at = u64::try_from(
                    u128::from(total) * u128::from(percent_x_n) / (100 * u128::from(n.max(1))),
                )
                .unwrap_or(total);
                (at, kind)
            })
            .collect();
        FaultPlan {
            points,
            next: 0,
            options: FaultOptions {
                kinds,
                per_kind: options.per_kind,
            },
        }
    }

    /// The next kind due at `progress`, if any (each planned point is handed out once).
    pub fn due(&mut self, progress: u64) -> Option<FaultKind> {
        let (at, kind) = *self.points.get(self.next)?;
        if progress < at {
            return None;
        }
        self.next += 1;
        Some(kind)
    }

    /// Hands the point just taken back (it could not be carried out now: try again later).
    pub fn postpone(&mut self) {
        self.next = self.next.saturating_sub(1);
    }

    /// How many planned points have not been handed out.
    pub fn remaining(&self) -> usize {
        self.points.len() - self.next
    }

    /// How many points the plan has.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the plan injects nothing.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// An error naming each planned kind injected fewer than `per_kind` times.
    pub fn verify(&self, injected: &FaultCounts) -> Result<(), AdapterError> {
        let short: Vec<String> = self
            .options
            .kinds
            .iter()
            .filter(|k| injected.of(**k) < u64::from(self.options.per_kind))
            .map(|k| format!("{} {}/{}", k.name(), injected.of(*k), self.options.per_kind))
            .collect();
        if short.is_empty() || self.options.per_kind == 0 {
            return Ok(());
        }
        Err(AdapterError::FaultPlan(format!(
            "the run could not inject every planned fault (injected/planned: {}); its \
             verdict would not cover them, so it is refused (a larger run gives the plan \
             more room)",
            short.join(", ")
        )))
    }
}

/// A number no other real-server run of this process has had: with the process id it makes
/// a run's schema and key prefix its own, even when two runs with the same seed go at once
/// (as tests do).
pub(crate) fn next_run() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_kind_is_planned_per_kind_times_within_the_spread() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let opts = FaultOptions::every_kind(3);
        let mut plan = FaultPlan::new(&opts, 1_000, &mut rng);
        assert_eq!(plan.len(), 18);
        let mut counts = FaultCounts::default();
        let mut last = 0;
        let mut order = Vec::new();
        for progress in 0..=1_000 {
            while let Some(kind) = plan.due(progress) {
                assert!((50..=800).contains(&progress), "due at {progress}");
                assert!(progress >= last);
                last = progress;
                counts.add(kind);
                order.push(kind);
            }
        }
        // The kills after a claim are armed before anything else.
        assert!(
            order[..3].iter().all(|k| *k == FaultKind::KillAfterClaim),
            "{order:?}"
        );
        for kind in FaultKind::WORKERS {
            assert_eq!(counts.of(kind), 3, "{kind:?}");
        }
        assert!(plan.verify(&counts).is_ok());
    }

    #[test]
    fn a_shortfall_is_an_error_naming_the_kind() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let plan = FaultPlan::new(&FaultOptions::shared_redis(2), 100, &mut rng);
        let mut counts = FaultCounts::default();
        for kind in FaultKind::WORKERS {
            counts.add(kind);
            counts.add(kind);
        }
        assert!(plan.verify(&counts).is_ok());
        counts.cuts = 1;
        let err = plan.verify(&counts).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("cut-connection 1/2")),
            "{err:?}"
        );
        // A Redis restart is not planned on a shared server: none is required.
        counts.cuts = 2;
        counts.redis_restarts = 0;
        assert!(plan.verify(&counts).is_ok());
    }

    #[test]
    fn a_tiny_run_still_gets_every_point() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut plan = FaultPlan::new(&FaultOptions::every_kind(3), 10, &mut rng);
        let mut n = 0;
        for progress in 0..=10 {
            while plan.due(progress).is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 18);
        assert_eq!(plan.remaining(), 0);
    }

    #[test]
    fn the_scheduler_plan_has_its_five_kinds_and_a_shared_redis_drops_restarts() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let plan = FaultPlan::new(&FaultOptions::scheduler(3, false), 100, &mut rng);
        assert_eq!(plan.len(), 15);
        let mut counts = FaultCounts::default();
        for kind in FaultKind::SCHEDULER {
            for _ in 0..3 {
                counts.add(kind);
            }
        }
        assert!(plan.verify(&counts).is_ok());
        counts.node_pauses = 2;
        let err = plan.verify(&counts).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("node-pause 2/3")),
            "{err:?}"
        );
        let shared = FaultOptions::scheduler(3, true);
        assert!(!shared.plans(FaultKind::RedisRestart));
        assert!(shared.plans(FaultKind::NodePause) && shared.needs_proxy());
    }
}
