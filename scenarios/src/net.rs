//! The net world: the races whose entry sets [`Race::net`] (today document 002's R-002-01 ..
//! R-002-04, document 000's billing, quota and breaker families, its access races R-000-11
//! and R-000-12 and its affinity race R-000-07, and document 004's scheduler) with
//! the production async driver (`racelab_adapters::drive`, unchanged) inside a turmoil
//! network simulation, and any world spec ([`run_net`]). A process' local blocks (one
//! synchronous block on its host's memory) never cross the network: its store client answers
//! them in process on its host's memory ([`HostMemories`], shared by the processes of a host,
//! as in the explore world), recorded applied and durable when the client got them.
//!
//! Each process of a race's world (for example a terminal `T` and workers `W_A`, `W_B`) is a
//! turmoil host that runs its core machine with `drive` over `NetClient`, a
//! [`StoreClient`] that speaks `racelab_sim::net::wire` to the store hosts, `redis` (the key
//! space and the queue) and `sql`, and, started when a process first calls them, `upstream`
//! (the endpoints and their streamed completions) and `push` (the push connections'
//! balancer), which serve the simulation's models (`racelab_sim::net::host`). Only the store
//! client differs from a real deployment: the timeouts (the upstream's included), retries,
//! reconnects and cancellation are the shipped driver's.
//!
//! Faults come from the race's [`FaultProfile`], drawn from the seed and carried out by
//! turmoil:
//!
//! - planned partitions (both ways, or one way in either direction) between a worker and a
//!   store, repaired after `partition_len` (Redis or SQL, as in the explore world; a test may
//!   script partitions and heals of any store at times, [`run_net_with`]: one from the push
//!   balancer also closes the process' push connections for both ends; and pauses, crashes
//!   with a restart and Redis restarts at times);
//! - per operation, decided as it leaves by the explore world's own fault engine
//!   ([`FaultProfile::op_faults`]: the same ratios, targets and order of draws, from a stream
//!   of this process incarnation's own): `pause` holds every link of the process for
//!   `pause_len` (its messages wait, its timers still fire: a stalled process as the network
//!   sees it), `delay` holds the link of this operation's store, `drop_reply` cuts the
//!   store-to-process direction until the operation's timeout, `crash` kills the host right
//!   after this operation completes (turmoil `crash`, then `bounce` after `restart_after`,
//!   with a fresh machine of the next incarnation); the stores learn of the crash at once
//!   (its streams lose their reader and keep generating, its push connections close for
//!   both ends);
//! - planned pauses (`pauses_at`, [`FaultProfile::plan_pauses`]): every link of the process
//!   held for the pause, as for a per-operation pause;
//! - store faults the network cannot express: `failover` right after a Redis write is applied
//!   (the model loses writes younger than the replication lag) and planned Redis restarts;
//! - clock skew (`clock_offset`, `clock_rate_ppm`, [`FaultProfile::plan_clocks`]): each
//!   fault-prone host's machine reads a skewed clock; the history keeps the shared time line;
//! - latency: turmoil's own distribution between the profile's bounds, from the same seed;
//! - a horizon ([`racelab_sim::explore::WorldSpec::horizon`]): from there no timer fires (the
//!   driver's `DriverConfig::horizon`), no fault but a heal and no restart; the run ends once
//!   nothing is in flight and no link is held.
//!
//! The history is recorded from the client side by the adapters' recorder (invocation,
//! completion, timeouts) and then given the store's truth: each request carries the index of
//! its history record, and the store hosts' apply log (`Applied`) sets the result, apply time
//! and durability, even for answers that never arrived. The same oracles then judge it.
//!
//! Time: turmoil advances every host's tokio clock by a fixed tick ([`TICK_MS`]); timers fire
//! at their exact instant inside a tick, messages are delivered at tick boundaries. Every step
//! ticks every host whether anything happens or not, so the tick sets the cost of a run: at
//! 50 ms a minute of simulated time is 1,200 steps, and leases of 20 s and job locks of 30 s
//! expire cheaply.
//!
//! The upstream and balancer hosts start on first use because turmoil shuffles its running
//! hosts every step: a world that never calls them keeps the schedule it had without them.
//! The first call waits a tick for its host. A hold on a link to one of them planned before it
//! started takes effect when it starts.
//!
//! The history lists operations in invocation order, and those invoked at the same instant
//! in the order the stores applied them: messages move at tick boundaries, so many operations
//! share an invocation and an apply time, and the oracles read the store's order of
//! operations applied at one instant from their order in the history. A random draw, answered
//! in-process, is recorded applied and durable when the client got it, as in the explore
//! world.
//!
//! Known approximations:
//! a partition drops TCP segments for good (FIN included: the SQL host's idle-in-transaction
//! timeout ends the orphaned session); a hold on a partitioned link replaces the partition
//! with the hold; a failover happens at the chosen write's apply time, after the step, so a
//! write applied later in the same tick is lost with it; a pause holds the process' links but
//! its timers fire (the driver times out and reconnects, so a long pause sends a connection
//! attempt per timeout, which all arrive when it ends: [`TCP_CAPACITY`] leaves room for them);
//! two operations applied at one instant but invoked at different instants keep their
//! invocation order in the history, whatever order the store applied them in.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use racelab_adapters::{
    AdapterError, Clock, Completion, Control, DriveEnd, DriverConfig, HostMemories, Observer,
    ProcessRecorder, Recorder, StoreClient, drive,
};
use racelab_core::{
    Duration, Fault, Machine, Note, OpId, Outgoing, ProcessId, QueueOp, Reply, SqlReply, StoreId,
    StoreOp, Table, Timestamp,
};
use racelab_sim::explore::{
    Action, Factory, FaultProfile, OpEffect, OpSite, Run, RunStats, SimRng, StableHasher, Step,
    UpstreamModel,
};
use racelab_sim::net::host::{StoreKinds, Stores, serve};
use racelab_sim::net::wire::{Request, Response, read_frame, write_frame};
use tokio::sync::{Notify, watch};

use crate::catalog::{Outcome, Race, Script, Workload};
use crate::{Profile, Sweep, SweepPlan, Variant};

/// The races the net world runs: those of the catalog whose entry says so ([`Race::net`]).
pub fn net_races() -> Vec<&'static str> {
    crate::catalog()
        .iter()
        .filter(|r| r.net)
        .map(|r| r.id)
        .collect()
}

/// The random sweep must find each Buggy variant's violation in the net world within this
/// many seeds from seed 0 (asserted by `tests/net.rs`).
pub const NET_SEED_BUDGET: u64 = 300;

/// turmoil's tick in milliseconds: the granularity of message delivery.
pub const TICK_MS: u64 = 50;

/// The most simulation steps one run may take (a run that needs more is stopped as not
/// quiescent, like `RUN_EVENTS_MAX` in the explore world).
pub const RUN_STEPS_MAX: u64 = 400_000;

/// turmoil's per-socket and listen-backlog capacity: its default, 64, is less than the
/// connection attempts a process held by a long pause sends (R-004-02's zombie node, held
/// for over an hour with a 2 s Redis timeout), which turmoil answers with a panic.
pub const TCP_CAPACITY: usize = 4_096;

/// The store hosts' port (one per host).
const STORE_PORT: u16 = 7000;
const REDIS_HOST: &str = "redis";
const SQL_HOST: &str = "sql";
const UPSTREAM_HOST: &str = "upstream";
const PUSH_HOST: &str = "push";

/// Why a race cannot run in the net world.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The race has no net-world version.
    #[error(
        "{race} does not run in the net world yet; it covers {supported} (use --world explore \
         for the others)"
    )]
    Unsupported {
        /// The race id.
        race: String,
        /// The races it does run, comma-separated.
        supported: String,
    },
    /// The net world's messages are ordered by turmoil, so it has no PCT scheduler.
    #[error(
        "the net world orders messages with turmoil's seeded network: --scheduler pct runs in \
         --world explore only"
    )]
    NoPct,
    /// A scripted step the net world does not carry out.
    #[error(
        "the net world carries out partitions, heals, pauses, crashes with a restart and \
         Redis restarts at times only, not {step} (use the explore world's scripted \
         scheduler)"
    )]
    UnsupportedStep {
        /// The step.
        step: String,
    },
    /// A host's software failed (a bug in the harness, not a race).
    #[error("the net simulation of {race} seed {seed} failed: {message}")]
    Simulation {
        /// The race id.
        race: String,
        /// The seed.
        seed: u64,
        /// What turmoil reported.
        message: String,
    },
}

/// Whether `race` runs in the net world.
pub fn supports(race: &Race) -> bool {
    race.net
}

/// Runs `race`'s `variant` in the net world with `seed`: the same random workload as the
/// explore world's seed, faults from the race's profile carried out by turmoil.
pub fn run_seed_net(race: &Race, variant: Variant, seed: u64) -> Result<Outcome, NetError> {
    run_seed_net_in(race, variant, seed, Profile::Race)
}

/// Runs `race`'s `variant` in the net world with `seed`, its faults drawn from `profile`.
pub fn run_seed_net_in(
    race: &Race,
    variant: Variant,
    seed: u64,
    profile: Profile,
) -> Result<Outcome, NetError> {
    if !supports(race) {
        return Err(NetError::Unsupported {
            race: race.id.to_string(),
            supported: net_races().join(", "),
        });
    }
    if let Profile::Pct(_) = profile {
        return Err(NetError::NoPct);
    }
    let mut rng = SimRng::new(crate::workload_seed(seed));
    let (spec, capture) = (race.build)(variant, Workload::Random(&mut rng));
    let run = NetWorld::new(spec, profile.faults(race, seed), seed)
        .run()
        .map_err(|message| NetError::Simulation {
            race: race.id.to_string(),
            seed,
            message,
        })?;
    Ok(crate::judge(race, run, &capture))
}

/// Runs `race`'s scripted timeline `script` for `variant` in the net world: its scripted
/// workload, its steps carried out as [`run_net_with`] does (faults at times only: any other
/// step is refused, [`NetError::UnsupportedStep`]) and no other fault, turmoil's latencies
/// between the race's profile's bounds drawn from `seed`; judged by the race's judge.
pub fn run_script_net(
    race: &Race,
    script: &Script,
    variant: Variant,
    seed: u64,
) -> Result<Outcome, NetError> {
    if !supports(race) {
        return Err(NetError::Unsupported {
            race: race.id.to_string(),
            supported: net_races().join(", "),
        });
    }
    let (spec, capture) = (race.build)(variant, Workload::Scripted(script.name));
    let profile = FaultProfile {
        latency: (race.profile)().latency,
        ..FaultProfile::quiet()
    };
    let mut world = NetWorld::new(spec, profile, seed);
    world.script(&script.steps)?;
    let run = world.run().map_err(|message| NetError::Simulation {
        race: race.id.to_string(),
        seed,
        message,
    })?;
    Ok(crate::judge(race, run, &capture))
}

/// Runs `spec` in the net world with faults from `profile` drawn from `seed`: what
/// [`run_seed_net`] does for a race's workload, for any world (a test's own machines).
pub fn run_net(
    spec: racelab_sim::explore::WorldSpec,
    profile: FaultProfile,
    seed: u64,
) -> Result<Run, NetError> {
    run_net_with(spec, profile, seed, &[])
}

/// [`run_net`] plus faults at given times: the `Step::At` steps whose action is
/// [`Action::Partition`] or [`Action::Heal`] (both ways), [`Action::Pause`] (every link of
/// the process held), [`Action::Crash`] with a restart (the host killed at the end of the
/// tick and bounced later) or [`Action::RedisRestart`], the only scripted faults the net
/// world carries out, so that a scenario of the explore world's scripted tests runs in both
/// worlds. Any other step ([`Step::On`], a failover or a clock at a time, a crash for good)
/// is refused.
pub fn run_net_with(
    spec: racelab_sim::explore::WorldSpec,
    profile: FaultProfile,
    seed: u64,
    steps: &[Step],
) -> Result<Run, NetError> {
    let mut world = NetWorld::new(spec, profile, seed);
    world.script(steps)?;
    world.run().map_err(|message| NetError::Simulation {
        race: "a world spec".to_string(),
        seed,
        message,
    })
}

/// Runs seeds `start..start + count` in the net world, calling `progress(done)` after each.
pub fn sweep_net(
    race: &Race,
    variant: Variant,
    start: u64,
    count: u64,
    progress: impl FnMut(u64),
) -> Result<Sweep, NetError> {
    sweep_plan_net(race, variant, SweepPlan::seeds(start, count), progress)
}

/// Runs the seeds of `plan` in the net world (on its threads, until its deadline; each
/// thread runs its own turmoil simulations), calling `progress(done)` as seeds finish.
pub fn sweep_plan_net(
    race: &Race,
    variant: Variant,
    plan: SweepPlan,
    progress: impl FnMut(u64),
) -> Result<Sweep, NetError> {
    crate::sweep_seeds(
        race,
        plan,
        |seed| run_seed_net_in(race, variant, seed, plan.profile),
        progress,
    )
}

/// The first seed from `start` whose net-world run violates an invariant, within `budget`.
pub fn seeds_to_detect_net(
    race: &Race,
    variant: Variant,
    start: u64,
    budget: u64,
) -> Result<Option<u64>, NetError> {
    for seed in start..start.saturating_add(budget) {
        if run_seed_net(race, variant, seed)?.violated() {
            return Ok(Some(seed));
        }
    }
    Ok(None)
}

/// The command that replays one seed in the net world.
pub fn replay_command_net(race: &Race, variant: Variant, seed: u64) -> String {
    replay_command_net_in(race, variant, seed, Profile::Race)
}

/// The command that replays one seed run under `profile` in the net world.
pub fn replay_command_net_in(race: &Race, variant: Variant, seed: u64, profile: Profile) -> String {
    format!(
        "{} --world net",
        crate::replay_command_in(race, variant, seed, profile)
    )
}

// ---------------------------------------------------------------------------------------------
// The world

/// What the hosts and the outer loop share (one thread: turmoil runs hosts on a `LocalSet`).
struct Shared {
    procs: Vec<ProcState>,
    /// Links held until a time, by (process, store).
    holds: BTreeMap<(usize, StoreId), Timestamp>,
    /// One-way cuts (store to process) until a time.
    reply_cuts: BTreeMap<(usize, StoreId), Timestamp>,
    /// History indexes of Redis writes after whose application Redis fails over.
    failover_after: Vec<u64>,
    /// Faults injected so far.
    faults: u64,
}

#[derive(Debug)]
struct ProcState {
    ip: IpAddr,
    prone: bool,
    start_at: Timestamp,
    incarnation: u32,
    started: bool,
    /// The machine's `is_idle`, updated by [`Tracked`].
    idle: Rc<Cell<bool>>,
    /// Operations in flight other than queue polls.
    in_flight: u32,
    /// The driver returned (the machine has nothing left to do).
    finished: bool,
    /// The process asked to crash, with the pause before its restart.
    crash: Option<Duration>,
    /// Crashed; restarts at this time.
    restart_at: Option<Timestamp>,
    /// The clock error of its host (from the profile's clock bounds).
    clock: racelab_core::ClockSkew,
}

/// What one process host needs to (re)start.
struct ProcCtx {
    index: usize,
    name: String,
    /// Its host, whose memory its local blocks run on.
    host: u32,
    memories: HostMemories,
    factory: Factory,
    shared: Rc<RefCell<Shared>>,
    recorder: Recorder,
    config: DriverConfig,
    profile: FaultProfile,
    seed: u64,
    ips: StoreIps,
}

/// The store hosts' addresses.
#[derive(Clone, Debug)]
struct StoreIps {
    redis: IpAddr,
    sql: IpAddr,
    upstream: Arc<LazyHost>,
    push: Arc<LazyHost>,
}

impl StoreIps {
    /// The host that serves `store`, if it runs (local blocks and draws need none).
    fn of(&self, store: StoreId) -> Option<IpAddr> {
        match store {
            StoreId::Sql => Some(self.sql),
            StoreId::Redis => Some(self.redis),
            StoreId::Upstream => self.upstream.ip(),
            StoreId::Push => self.push.ip(),
            StoreId::Local => None,
        }
    }
}

/// A store host started when a process first needs it (the upstream endpoints, the push
/// balancer): a world whose processes never call it runs exactly the hosts, and so the
/// turmoil schedule, of a world without it (turmoil shuffles its running hosts each step).
/// The first call waits a tick for it.
#[derive(Debug, Default)]
struct LazyHost {
    /// A process asked for it.
    wanted: AtomicBool,
    /// Its address once started.
    ip: Mutex<Option<IpAddr>>,
}

impl LazyHost {
    fn ip(&self) -> Option<IpAddr> {
        self.ip.lock().ok().and_then(|ip| *ip)
    }

    /// The host's address, once the outer loop has started it.
    async fn started(&self) -> IpAddr {
        loop {
            if let Some(ip) = self.ip() {
                return ip;
            }
            self.wanted.store(true, Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(TICK_MS)).await;
        }
    }
}

/// A planned fault of the outer loop.
#[derive(Clone, Debug)]
enum Planned {
    Partition {
        proc: usize,
        store: StoreId,
        /// 0: both ways, 1: process to store only, 2: store to process only.
        direction: u64,
    },
    Heal {
        proc: usize,
        store: StoreId,
    },
    RedisRestart,
    /// Hold every link of the process (a pause as the network sees it).
    Pause {
        proc: usize,
        duration: Duration,
    },
    /// Kill the process' host at the end of this step and bounce it `restart_after` later
    /// (as a per-operation crash is carried out).
    Crash {
        proc: usize,
        restart_after: Duration,
    },
}

/// The links of a process: the stores it reaches (a link to a host not started yet is held
/// from the host's start).
const LINKS: [StoreId; 4] = [
    StoreId::Redis,
    StoreId::Sql,
    StoreId::Upstream,
    StoreId::Push,
];

/// Keeps `key` in `until_of` until `until` at least (the latest of overlapping holds or cuts).
fn extend_until(
    until_of: &mut BTreeMap<(usize, StoreId), Timestamp>,
    key: (usize, StoreId),
    until: Timestamp,
) {
    let entry = until_of.entry(key).or_insert(until);
    *entry = (*entry).max(until);
}

struct NetWorld {
    sim: turmoil::Sim<'static>,
    shared: Rc<RefCell<Shared>>,
    stores: Rc<RefCell<Stores>>,
    recorder: Recorder,
    /// The hosts' memories (local blocks, answered in process).
    memories: HostMemories,
    planned: Vec<(Timestamp, Planned)>,
    ips: StoreIps,
    time_limit: Timestamp,
    /// Where a run that never quiesces stops and drains ([`WorldSpec::horizon`]).
    ///
    /// [`WorldSpec::horizon`]: racelab_sim::explore::WorldSpec
    horizon: Option<Timestamp>,
    decisions: u64,
    seed: u64,
    /// Wakes what waits at the store hosts (row locks, pub/sub receives) after a store fault.
    tx_done: Rc<Notify>,
    /// Wakes what waits at the upstream and balancer hosts (stream reads, push receives)
    /// after a crash or a cut.
    waits: Rc<Notify>,
    /// The partitions in force, by (process, store), with their direction (for a host that
    /// starts during one).
    partitioned: BTreeMap<(usize, StoreId), u64>,
}

fn to_std(d: Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_ms())
}

fn pid(index: usize) -> ProcessId {
    ProcessId(u16::try_from(index).unwrap_or(u16::MAX))
}

/// SplitMix64's finaliser: independent streams from one seed.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NetWorld {
    fn new(spec: racelab_sim::explore::WorldSpec, profile: FaultProfile, seed: u64) -> NetWorld {
        let mut builder = turmoil::Builder::new();
        builder
            .rng_seed(seed)
            .enable_random_order()
            // A held link (a pause) delivers every connection attempt made during the hold
            // at once: the driver opens a new connection after each timeout.
            .tcp_capacity(TCP_CAPACITY)
            .tick_duration(std::time::Duration::from_millis(TICK_MS))
            // The outer loop enforces the time limit; turmoil's own limit only applies to
            // clients, of which there are none.
            .simulation_duration(to_std(Duration::from_ms(spec.time_limit.as_ms())) * 2)
            .min_message_latency(to_std(profile.latency.0))
            .max_message_latency(to_std(profile.latency.1));
        let mut sim = builder.build();
        let config = DriverConfig::of_world(&spec);
        let stores = Rc::new(RefCell::new(Stores::new(
            spec.replication_lag,
            spec.queue_lock,
        )));
        stores
            .borrow_mut()
            .sql
            .set_deadlock_timeout(spec.net.sql_deadlock_timeout);
        stores.borrow_mut().set_push_sticky(spec.net.push_sticky);
        for (table, key, row) in &spec.sql_rows {
            stores.borrow_mut().sql.seed(*table, key, row.clone());
        }
        let tx_done = Rc::new(Notify::new());
        for (name, kinds) in [(REDIS_HOST, StoreKinds::Redis), (SQL_HOST, StoreKinds::Sql)] {
            let stores = stores.clone();
            let tx_done = tx_done.clone();
            sim.host(name, move || {
                serve(STORE_PORT, stores.clone(), kinds, tx_done.clone())
            });
        }
        stores.borrow_mut().upstream = UpstreamModel::new(spec.upstream);
        let ips = StoreIps {
            redis: sim.lookup(REDIS_HOST),
            sql: sim.lookup(SQL_HOST),
            upstream: Arc::default(),
            push: Arc::default(),
        };
        let recorder = Recorder::new();
        let memories = HostMemories::new(spec.local);
        let shared = Rc::new(RefCell::new(Shared {
            procs: Vec::new(),
            holds: BTreeMap::new(),
            reply_cuts: BTreeMap::new(),
            failover_after: Vec::new(),
            faults: 0,
        }));
        let mut procs = Vec::new();
        for (index, p) in spec.processes.into_iter().enumerate() {
            recorder.name(pid(index), &p.name);
            procs.push((p.name.clone(), p.fault_prone));
            let ctx = Rc::new(ProcCtx {
                index,
                name: p.name.clone(),
                host: p.host,
                memories: memories.clone(),
                factory: p.factory,
                shared: shared.clone(),
                recorder: recorder.clone(),
                config: config.clone(),
                profile: profile.clone(),
                seed,
                ips: ips.clone(),
            });
            sim.host(p.name.as_str(), move || run_process(ctx.clone()));
            let ip = sim.lookup(p.name.as_str());
            shared.borrow_mut().procs.push(ProcState {
                ip,
                prone: p.fault_prone,
                start_at: p.start_at,
                incarnation: 0,
                started: false,
                idle: Rc::new(Cell::new(false)),
                in_flight: 0,
                finished: false,
                crash: None,
                restart_at: None,
                clock: racelab_core::ClockSkew::NONE,
            });
        }
        let mut world = NetWorld {
            sim,
            shared,
            stores,
            recorder,
            memories,
            planned: Vec::new(),
            ips,
            time_limit: spec.time_limit,
            horizon: spec.horizon,
            decisions: 0,
            seed,
            tx_done,
            waits: Rc::new(Notify::new()),
            partitioned: BTreeMap::new(),
        };
        world.plan(&profile, &procs);
        world
    }

    /// The faults planned at times: partitions, Redis restarts and pauses. `procs`: each
    /// process' name and whether it is fault-prone.
    fn plan(&mut self, profile: &FaultProfile, procs: &[(String, bool)]) {
        let prone: Vec<usize> = (0..procs.len()).filter(|i| procs[*i].1).collect();
        let mut rng = SimRng::new(mix(self.seed, 0xFA17));
        let window = profile.window.as_ms().max(1);
        for _ in 0..profile.partitions {
            if prone.is_empty() {
                break;
            }
            let at = Timestamp::from_ms(rng.below(window));
            let proc = prone[usize::try_from(rng.below(prone.len() as u64)).unwrap_or(0)];
            let store = if rng.below(2) == 0 {
                StoreId::Redis
            } else {
                StoreId::Sql
            };
            let direction = rng.below(3);
            let len = rng.duration(profile.partition_len.0, profile.partition_len.1);
            self.decisions += 5;
            self.planned.push((
                at,
                Planned::Partition {
                    proc,
                    store,
                    direction,
                },
            ));
            self.planned.push((at + len, Planned::Heal { proc, store }));
        }
        for _ in 0..profile.redis_restarts {
            let at = Timestamp::from_ms(rng.below(window));
            self.decisions += 1;
            self.planned.push((at, Planned::RedisRestart));
        }
        let names: Vec<(&str, bool)> = procs.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        for (p, skew) in profile.plan_clocks(&mut rng, &names) {
            self.decisions += 2;
            self.shared.borrow_mut().procs[p].clock = skew;
            self.fault(Fault::Clock {
                process: pid(p),
                skew,
            });
        }
        for pause in profile.plan_pauses(&mut rng, &names) {
            self.decisions += 3;
            let planned = Planned::Pause {
                proc: pause.process,
                duration: pause.duration,
            };
            self.planned.push((pause.at, planned));
        }
        // Stable: equal times keep their planning order.
        self.planned.sort_by_key(|(at, _)| *at);
    }

    /// Adds the scripted faults at times to the planned faults: partitions and heals, pauses,
    /// crashes with a restart, Redis restarts.
    fn script(&mut self, steps: &[Step]) -> Result<(), NetError> {
        for step in steps {
            let unsupported = || NetError::UnsupportedStep {
                step: format!("{step:?}"),
            };
            let Step::At { at, action } = step else {
                return Err(unsupported());
            };
            let proc_of = |process: &String| {
                self.recorder
                    .with_history(|h| {
                        h.process_names
                            .iter()
                            .find(|(_, name)| name == process)
                            .map(|(p, _)| usize::from(p.0))
                    })
                    .flatten()
                    .ok_or_else(unsupported)
            };
            let planned = match action {
                Action::Partition { process, store } => Planned::Partition {
                    proc: proc_of(process)?,
                    store: *store,
                    direction: 0,
                },
                Action::Heal { process, store } => Planned::Heal {
                    proc: proc_of(process)?,
                    store: *store,
                },
                Action::Pause { process, duration } => Planned::Pause {
                    proc: proc_of(process)?,
                    duration: *duration,
                },
                Action::Crash {
                    process,
                    restart_after: Some(restart_after),
                } => Planned::Crash {
                    proc: proc_of(process)?,
                    restart_after: *restart_after,
                },
                Action::RedisRestart => Planned::RedisRestart,
                _ => return Err(unsupported()),
            };
            self.planned.push((*at, planned));
        }
        self.planned.sort_by_key(|(at, _)| *at);
        Ok(())
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_ms(u64::try_from(self.sim.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn fault(&self, fault: Fault) {
        self.recorder.fault(self.now(), fault);
        self.shared.borrow_mut().faults += 1;
    }

    fn run(mut self) -> Result<Run, String> {
        let mut steps = 0u64;
        let mut applied_seen = 0usize;
        let mut quiescent = false;
        let mut drained = false;
        let horizon = self.horizon;
        loop {
            self.act();
            self.sim.step().map_err(|e| e.to_string())?;
            steps += 1;
            applied_seen = self.after_step(applied_seen);
            if self.is_quiescent() {
                quiescent = true;
                break;
            }
            if self.is_drained() {
                quiescent = true;
                drained = true;
                break;
            }
            if self.now() > self.time_limit || steps >= RUN_STEPS_MAX {
                break;
            }
        }
        let mut run = self.finish(steps, quiescent);
        if drained {
            run.horizon = horizon;
        }
        Ok(run)
    }

    /// Past the horizon: nothing in flight and no link held.
    fn is_drained(&self) -> bool {
        let shared = self.shared.borrow();
        self.horizon.is_some_and(|h| self.now() >= h)
            && shared.holds.is_empty()
            && shared
                .procs
                .iter()
                .all(|p| p.restart_at.is_some() || p.in_flight == 0)
    }

    /// Carries out what is due: planned faults, releases, repairs and restarts.
    fn act(&mut self) {
        let now = self.now();
        let draining = self.horizon.is_some_and(|h| now >= h);
        if draining {
            // No new fault and no restart (below); heals still apply.
            self.planned
                .retain(|(_, p)| matches!(p, Planned::Heal { .. }));
        }
        while self.planned.first().is_some_and(|(at, _)| *at <= now) {
            let (at, planned) = self.planned.remove(0);
            match planned {
                Planned::Partition {
                    proc,
                    store,
                    direction,
                } => {
                    let (p, s) = (self.shared.borrow().procs[proc].ip, self.ips.of(store));
                    if let Some(s) = s {
                        self.partition(p, s, direction);
                    }
                    self.partitioned.insert((proc, store), direction);
                    if store == StoreId::Push {
                        // The balancer closes the cut process' connections at once.
                        self.stores.borrow_mut().push_cut(proc, true);
                        self.waits.notify_waiters();
                    }
                    self.fault(Fault::Partition {
                        process: pid(proc),
                        store,
                    });
                }
                Planned::Heal { proc, store } => {
                    let (p, s) = (self.shared.borrow().procs[proc].ip, self.ips.of(store));
                    if let Some(s) = s {
                        self.sim.repair(p, s);
                    }
                    self.partitioned.remove(&(proc, store));
                    if store == StoreId::Push {
                        self.stores.borrow_mut().push_cut(proc, false);
                    }
                    self.fault(Fault::Heal {
                        process: pid(proc),
                        store,
                    });
                }
                Planned::RedisRestart => {
                    let now = self.now();
                    self.stores.borrow_mut().redis_restart(now);
                    // Subscribers waiting for a message learn they lost their subscription.
                    self.tx_done.notify_waiters();
                    self.fault(Fault::RedisRestart);
                }
                Planned::Crash {
                    proc,
                    restart_after,
                } => {
                    // A process already down stays down until its own restart.
                    let mut shared = self.shared.borrow_mut();
                    let p = &mut shared.procs[proc];
                    if p.restart_at.is_none() && p.crash.is_none() {
                        p.crash = Some(restart_after);
                    }
                }
                Planned::Pause { proc, duration } => {
                    let p = self.shared.borrow().procs[proc].ip;
                    for store in LINKS {
                        if let Some(s) = self.ips.of(store) {
                            self.sim.hold(p, s);
                        }
                        let holds = &mut self.shared.borrow_mut().holds;
                        extend_until(holds, (proc, store), at + duration);
                    }
                    self.fault(Fault::Pause {
                        process: pid(proc),
                        duration,
                    });
                }
            }
        }
        let due = |m: &mut BTreeMap<(usize, StoreId), Timestamp>| {
            let keys: Vec<_> = m
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(k, _)| *k)
                .collect();
            for k in &keys {
                m.remove(k);
            }
            keys
        };
        let (released, repaired) = {
            let mut shared = self.shared.borrow_mut();
            let released = due(&mut shared.holds);
            let repaired = due(&mut shared.reply_cuts);
            (released, repaired)
        };
        for (proc, store) in released {
            let p = self.shared.borrow().procs[proc].ip;
            if let Some(s) = self.ips.of(store) {
                self.sim.release(p, s);
            }
        }
        for (proc, store) in repaired {
            let p = self.shared.borrow().procs[proc].ip;
            if let Some(s) = self.ips.of(store) {
                self.sim.repair_oneway(s, p);
            }
        }
        self.start_wanted_hosts();
        let restarts: Vec<usize> = self
            .shared
            .borrow()
            .procs
            .iter()
            .enumerate()
            .filter(|(_, p)| !draining && p.restart_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        for i in restarts {
            let ip = {
                let mut shared = self.shared.borrow_mut();
                let p = &mut shared.procs[i];
                p.restart_at = None;
                p.incarnation += 1;
                p.started = false;
                p.idle.set(false);
                p.in_flight = 0;
                p.finished = false;
                p.ip
            };
            self.fault(Fault::Restart { process: pid(i) });
            self.sim.bounce(ip);
        }
    }

    /// Cuts `p` from `s`: 0 both ways, 1 from `p` to `s` only, else from `s` to `p` only.
    fn partition(&self, p: IpAddr, s: IpAddr, direction: u64) {
        match direction {
            0 => self.sim.partition(p, s),
            1 => self.sim.partition_oneway(p, s),
            _ => self.sim.partition_oneway(s, p),
        }
    }

    /// Starts the upstream and balancer hosts a process asked for, and holds or cuts their
    /// links as the faults already decided say.
    fn start_wanted_hosts(&mut self) {
        let hosts = [
            (UPSTREAM_HOST, StoreKinds::Upstream, StoreId::Upstream),
            (PUSH_HOST, StoreKinds::Push, StoreId::Push),
        ];
        for (name, kinds, store) in hosts {
            let lazy = match store {
                StoreId::Upstream => self.ips.upstream.clone(),
                _ => self.ips.push.clone(),
            };
            if lazy.ip().is_some() || !lazy.wanted.load(Ordering::Relaxed) {
                continue;
            }
            let (stores, waits) = (self.stores.clone(), self.waits.clone());
            self.sim.host(name, move || {
                serve(STORE_PORT, stores.clone(), kinds, waits.clone())
            });
            let ip = self.sim.lookup(name);
            if let Ok(mut slot) = lazy.ip.lock() {
                *slot = Some(ip);
            }
            let shared = self.shared.borrow();
            for (proc, _) in shared.holds.keys().filter(|(_, s)| *s == store) {
                self.sim.hold(shared.procs[*proc].ip, ip);
            }
            for (proc, _) in shared.reply_cuts.keys().filter(|(_, s)| *s == store) {
                self.sim.partition_oneway(ip, shared.procs[*proc].ip);
            }
            for ((proc, _), direction) in self.partitioned.iter().filter(|((_, s), _)| *s == store)
            {
                self.partition(shared.procs[*proc].ip, ip, *direction);
            }
        }
    }

    /// Crashes the processes that asked for it, and fails Redis over after the writes chosen
    /// for it. Returns how much of the apply log has been looked at.
    fn after_step(&mut self, applied_seen: usize) -> usize {
        let now = self.now();
        let crashes: Vec<(usize, Duration)> = self
            .shared
            .borrow_mut()
            .procs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.crash.take().map(|d| (i, d)))
            .collect();
        for (i, restart_after) in crashes {
            let ip = {
                let mut shared = self.shared.borrow_mut();
                let p = &mut shared.procs[i];
                p.restart_at = Some(now + restart_after);
                p.ip
            };
            self.sim.crash(ip);
            // Its streams lose their reader, its push connections close for both ends.
            self.stores.borrow_mut().crashed(i);
            self.waits.notify_waiters();
            self.fault(Fault::Crash { process: pid(i) });
        }
        let applied_len = self.stores.borrow().applied.len();
        if applied_len > applied_seen && !self.shared.borrow().failover_after.is_empty() {
            // The earliest chosen write applied in this step: Redis fails over right after
            // it (at its apply time, so the write is younger than the replication lag).
            let hit = {
                let stores = self.stores.borrow();
                let mut shared = self.shared.borrow_mut();
                let new = &stores.applied[applied_seen..];
                let at = new
                    .iter()
                    .find(|a| shared.failover_after.contains(&a.op))
                    .map(|a| a.at);
                shared
                    .failover_after
                    .retain(|op| !new.iter().any(|a| a.op == *op));
                at
            };
            if let Some(at) = hit {
                self.stores.borrow_mut().redis_failover(at);
                self.tx_done.notify_waiters();
                self.recorder.fault(at, Fault::Failover);
                self.shared.borrow_mut().faults += 1;
            }
        }
        applied_len
    }

    fn is_quiescent(&self) -> bool {
        let shared = self.shared.borrow();
        let stores = self.stores.borrow();
        stores.queue.is_drained()
            && stores.open_transactions() == 0
            && shared.holds.is_empty()
            && shared.procs.iter().all(|p| {
                p.restart_at.is_none()
                    && p.crash.is_none()
                    && (p.finished || (p.started && p.in_flight == 0 && p.idle.get()))
            })
    }

    /// The history with the store's truth, the end state and the trace hash.
    fn finish(self, steps: u64, quiescent: bool) -> Run {
        let ended_at = self.now();
        let mut history = self.recorder.history();
        // The client only knows what reached it; the store's apply log says what happened.
        // A random draw and a local block are answered in-process (no store sees them):
        // applied, and durable, when the client got them, as in the explore world.
        for op in &mut history.ops {
            if matches!(op.op, StoreOp::Random(_) | StoreOp::Local(_)) {
                op.durable_at = op.applied_at;
                continue;
            }
            op.applied_at = None;
            op.durable_at = None;
            op.result = None;
        }
        let stores = self.stores.borrow();
        for a in &stores.applied {
            let Some(record) = usize::try_from(a.op)
                .ok()
                .and_then(|i| history.ops.get_mut(i))
            else {
                continue;
            };
            record.applied_at = Some(a.at);
            let committed = a.reply == Reply::Sql(SqlReply::Committed);
            if let Some(write) = a.redis_write {
                // A Redis write is durable once the replica has it, unless a fault lost it.
                match stores.lost_at(write) {
                    Some(lost) => record.lost_at = Some(lost),
                    None if a.reply.is_success_of(&record.op) => {
                        record.durable_at = Some(stores.redis.replicated_at(a.at));
                    }
                    None => {}
                }
            } else if (a.durable || committed) && a.reply.is_success_of(&record.op) {
                record.durable_at = Some(a.at);
            }
            record.result = Some(a.reply.clone());
            for c in &a.committed {
                if let Some(r) = usize::try_from(*c)
                    .ok()
                    .and_then(|i| history.ops.get_mut(i))
                    && r.succeeded()
                {
                    r.durable_at = Some(a.at);
                }
            }
        }
        in_apply_order(&mut history, &stores.applied);
        let sql_rows: Vec<(Table, String, racelab_core::Row)> = stores
            .sql
            .all_committed_rows()
            .map(|(table, key, row)| (table, key.to_string(), row.clone()))
            .collect();
        // The net world's own part of the trace: the seed and the stores' log in apply order
        // (the history, the rows and the memories are hashed by `Run::trace_hash`).
        let mut hasher = StableHasher::default();
        self.seed.hash(&mut hasher);
        for a in &stores.applied {
            (&a.client, a.op, a.at, &a.reply, a.durable, &a.committed).hash(&mut hasher);
        }
        let local = self.memories.snapshot();
        let faults = self.shared.borrow().faults;
        Run {
            trace_seed: hasher.finish(),
            injected: Vec::new(),
            choices: None,
            decisions: Vec::new(),
            quiescent,
            horizon: None,
            unsettled: if quiescent {
                Vec::new()
            } else {
                vec!["the net world stopped before every job completed".to_string()]
            },
            ended_at,
            stats: RunStats {
                events: steps,
                store_ops: stores.applied.len() as u64,
                decisions: self.decisions,
                faults,
            },
            sql_rows,
            history,
            local,
            upstream_usage: stores.upstream.final_usage(),
        }
    }
}

/// Puts `history`'s operations in invocation order, and those invoked at the same instant in
/// the order the stores applied them (`applied` is the hosts' apply log, in order).
///
/// turmoil delivers messages at tick boundaries, so operations sent in one tick are invoked
/// and applied at the same instants; the oracles read the store's order of operations applied
/// at one instant from their order in the history (`(applied_at, index)`), which the
/// recorder alone would leave in the order the hosts happened to run in.
fn in_apply_order(
    history: &mut racelab_core::History,
    applied: &[racelab_sim::net::host::Applied],
) {
    let mut rank = vec![usize::MAX; history.ops.len()];
    for (i, a) in applied.iter().enumerate() {
        if let Some(r) = usize::try_from(a.op).ok().and_then(|op| rank.get_mut(op))
            && *r == usize::MAX
        {
            *r = i;
        }
    }
    let mut order: Vec<usize> = (0..history.ops.len()).collect();
    order.sort_by_key(|&i| (history.ops[i].invoked_at, rank[i]));
    let mut ops: Vec<Option<racelab_core::OpRecord>> = std::mem::take(&mut history.ops)
        .into_iter()
        .map(Some)
        .collect();
    history.ops = order.iter().filter_map(|&i| ops[i].take()).collect();
}

// ---------------------------------------------------------------------------------------------
// A process host

/// The software of one process host: waits for its start time, builds the machine of its
/// incarnation and drives it until it is idle for good or crashes.
async fn run_process(ctx: Rc<ProcCtx>) -> turmoil::Result {
    // One time line for every host: the zero of this host's tokio clock is the simulation's
    // start (a bounced host gets a fresh runtime whose clock starts anew).
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    let zero = tokio::time::Instant::now()
        .checked_sub(elapsed)
        .ok_or("the host clock cannot express the simulation's start")?;
    let line = Clock::starting_at(zero);
    let (start_at, incarnation, idle, skew) = {
        let shared = ctx.shared.borrow();
        let p = &shared.procs[ctx.index];
        (p.start_at, p.incarnation, p.idle.clone(), p.clock)
    };
    if line.now() < start_at {
        tokio::time::sleep_until(line.instant(start_at)).await;
    }
    // The machine reads its host's clock; the history keeps the shared time line.
    let clock = line.with_skew(skew);
    ctx.shared.borrow_mut().procs[ctx.index].started = true;
    let mut machine = Tracked {
        inner: (ctx.factory)(incarnation),
        idle,
    };
    let current = Arc::new(AtomicU64::new(0));
    let mut client = NetClient {
        name: ctx.name.clone(),
        process: pid(ctx.index),
        incarnation,
        current: current.clone(),
        redis: Conn::new(Host::Known(ctx.ips.redis)),
        sql: Conn::new(Host::Known(ctx.ips.sql)),
        upstream: Conn::new(Host::Started(ctx.ips.upstream.clone())),
        push: Conn::new(Host::Started(ctx.ips.push.clone())),
        random: racelab_core::RandomStream::for_process(ctx.seed, pid(ctx.index).0, incarnation),
        memories: ctx.memories.clone(),
        host: ctx.host,
    };
    let mut observer = NetObserver {
        recorder: ctx.recorder.process(
            pid(ctx.index),
            go_on as fn(&Outgoing, &Completion) -> Control,
        ),
        ctx: ctx.clone(),
        rng: SimRng::new(mix(
            ctx.seed,
            1 + ((ctx.index as u64) << 16) + u64::from(incarnation),
        )),
        current,
        store_of: BTreeMap::new(),
        crash_after: BTreeMap::new(),
    };
    let (_stop_tx, mut stop) = watch::channel(false);
    let end = drive(
        &mut machine,
        &mut client,
        &ctx.config,
        clock,
        &mut stop,
        &mut observer,
    )
    .await;
    // A crashed process' connections close now, which rolls back its transaction.
    drop(client);
    match end {
        DriveEnd::Crashed => {
            // The outer loop crashes the host (and bounces it later).
            std::future::pending::<()>().await;
            Ok(())
        }
        DriveEnd::Idle | DriveEnd::Stopped => {
            ctx.shared.borrow_mut().procs[ctx.index].finished = true;
            Ok(())
        }
    }
}

fn go_on(_: &Outgoing, _: &Completion) -> Control {
    Control::Continue
}

/// A machine that publishes whether it is idle after every call (for quiescence).
struct Tracked {
    inner: Box<dyn Machine>,
    idle: Rc<Cell<bool>>,
}

impl Tracked {
    fn publish(&self) {
        self.idle.set(self.inner.is_idle());
    }
}

impl Machine for Tracked {
    fn handle_start(&mut self, now: Timestamp) {
        self.inner.handle_start(now);
        self.publish();
    }
    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        self.inner.handle_reply(now, op, reply);
        self.publish();
    }
    fn handle_timeout(&mut self, now: Timestamp) {
        self.inner.handle_timeout(now);
        self.publish();
    }
    fn poll_op(&mut self) -> Option<Outgoing> {
        let out = self.inner.poll_op();
        self.publish();
        out
    }
    fn poll_note(&mut self) -> Option<Note> {
        self.inner.poll_note()
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.publish();
        self.inner.poll_timeout()
    }
    fn is_idle(&self) -> bool {
        self.inner.is_idle()
    }
}

/// Records the process' operations and injects its per-operation faults.
struct NetObserver<F> {
    recorder: ProcessRecorder<F>,
    ctx: Rc<ProcCtx>,
    rng: SimRng,
    /// The history index of the operation being executed, read by [`NetClient`].
    current: Arc<AtomicU64>,
    /// Operations in flight that count for quiescence, with their store.
    store_of: BTreeMap<OpId, StoreId>,
    /// Operations after whose completion the process crashes, with the pause before its
    /// restart.
    crash_after: BTreeMap<OpId, Duration>,
}

impl<F> NetObserver<F> {
    fn timeout(&self, store: StoreId) -> Duration {
        let d = match store {
            StoreId::Sql => self.ctx.config.sql_timeout,
            StoreId::Upstream => self.ctx.config.upstream_timeout,
            StoreId::Redis | StoreId::Local | StoreId::Push => self.ctx.config.redis_timeout,
        };
        Duration::from_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn hold(&self, store: StoreId, until: Timestamp) {
        let me = self.ctx.shared.borrow().procs[self.ctx.index].ip;
        if let Some(host) = self.ctx.ips.of(store) {
            turmoil::hold(me, host);
        }
        let holds = &mut self.ctx.shared.borrow_mut().holds;
        extend_until(holds, (self.ctx.index, store), until);
    }

    /// The per-operation faults of the profile ([`FaultProfile::op_faults`]), decided as the
    /// operation leaves.
    fn op_faults(&mut self, at: Timestamp, op: &Outgoing, index: u64) {
        let (prone, process) = {
            let shared = self.ctx.shared.borrow();
            (shared.procs[self.ctx.index].prone, pid(self.ctx.index))
        };
        let store = op.op.store();
        let site = OpSite {
            process: &self.ctx.name,
            fault_prone: prone,
            kind: op.tag.kind(),
            store,
        };
        let mut effects = self.ctx.profile.op_faults(&mut self.rng, at, &site);
        if store == StoreId::Local {
            // A synchronous block runs without the network: only a crash right after it
            // applies (as in the explore world).
            effects.retain(|e| matches!(e, OpEffect::CrashAfterApply { .. }));
        }
        let mut faults = Vec::new();
        for effect in effects {
            match effect {
                OpEffect::PauseBeforeSend(d) => {
                    for link in LINKS {
                        self.hold(link, at + d);
                    }
                    faults.push(Fault::Pause {
                        process,
                        duration: d,
                    });
                }
                OpEffect::Delay(d) => {
                    self.hold(store, at + d);
                    faults.push(Fault::Delay {
                        process,
                        op: op.id,
                        by: d,
                    });
                }
                OpEffect::DropReply => {
                    let me = self.ctx.shared.borrow().procs[self.ctx.index].ip;
                    if let Some(host) = self.ctx.ips.of(store) {
                        turmoil::partition_oneway(host, me);
                    }
                    let until = at + self.timeout(store);
                    let cuts = &mut self.ctx.shared.borrow_mut().reply_cuts;
                    extend_until(cuts, (self.ctx.index, store), until);
                    faults.push(Fault::DropReply { process, op: op.id });
                }
                // The engine always restarts a crashed process (a crash for good is only
                // scripted, and the net world runs no scripts).
                OpEffect::CrashAfterApply { restart_after } => {
                    if let Some(d) = restart_after {
                        self.crash_after.insert(op.id, d);
                    }
                }
                OpEffect::FailoverAfterApply => {
                    self.ctx.shared.borrow_mut().failover_after.push(index);
                }
            }
        }
        for f in faults {
            self.ctx.recorder.fault(at, f);
            self.ctx.shared.borrow_mut().faults += 1;
        }
    }
}

impl<F> Observer for NetObserver<F>
where
    F: FnMut(&Outgoing, &Completion) -> Control,
{
    fn invoked(&mut self, at: Timestamp, op: &Outgoing) {
        let index = self
            .ctx
            .recorder
            .with_history(|h| h.ops.len() as u64)
            .unwrap_or(0);
        self.current.store(index, Ordering::Relaxed);
        if !matches!(op.op, StoreOp::Queue(QueueOp::Fetch)) {
            self.store_of.insert(op.id, op.op.store());
            self.ctx.shared.borrow_mut().procs[self.ctx.index].in_flight += 1;
        }
        self.recorder.invoked(at, op);
        self.op_faults(at, op, index);
    }

    fn completed(&mut self, at: Timestamp, op: &Outgoing, completion: &Completion) -> Control {
        if self.store_of.remove(&op.id).is_some() {
            let mut shared = self.ctx.shared.borrow_mut();
            let p = &mut shared.procs[self.ctx.index];
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        let control = self.recorder.completed(at, op, completion);
        if let Some(d) = self.crash_after.remove(&op.id) {
            self.ctx.shared.borrow_mut().procs[self.ctx.index].crash = Some(d);
            return Control::Crash;
        }
        control
    }

    fn noted(&mut self, at: Timestamp, note: &Note) {
        self.recorder.noted(at, note);
    }
}

// ---------------------------------------------------------------------------------------------
// The store client

/// A [`StoreClient`] over turmoil TCP: one connection to the Redis host (commands and the
/// queue), one to the SQL host (the session), one to the upstream host (its streams are read
/// on it) and one to the push balancer. A connection whose request was interrupted (a timeout
/// or a stop dropped the future) is never reused, as with the real clients.
#[derive(Debug)]
struct NetClient {
    name: String,
    /// The process and its incarnation, sent with each request.
    process: ProcessId,
    incarnation: u32,
    current: Arc<AtomicU64>,
    redis: Conn,
    sql: Conn,
    upstream: Conn,
    push: Conn,
    /// The process's random stream (draws are answered in-process, as in the explore world).
    random: racelab_core::RandomStream,
    /// The hosts' memories, and this process' host: its local blocks run there, in process.
    memories: HostMemories,
    host: u32,
}

/// Where a connection goes.
#[derive(Debug)]
enum Host {
    /// A host that runs from the start.
    Known(IpAddr),
    /// A host started on first use.
    Started(Arc<LazyHost>),
}

#[derive(Debug)]
struct Conn {
    host: Host,
    stream: Option<turmoil::net::TcpStream>,
    /// A request is outstanding; still set at the next call means it was interrupted.
    busy: bool,
}

impl Conn {
    fn new(host: Host) -> Conn {
        Conn {
            host,
            stream: None,
            busy: false,
        }
    }

    async fn call(&mut self, req: &Request, what: &'static str) -> Result<Reply, AdapterError> {
        if self.busy {
            self.stream = None;
            self.busy = false;
        }
        if self.stream.is_none() {
            let host = match &self.host {
                Host::Known(ip) => *ip,
                Host::Started(lazy) => lazy.started().await,
            };
            let stream = turmoil::net::TcpStream::connect((host, STORE_PORT))
                .await
                .map_err(|e| AdapterError::Unreachable {
                    what,
                    url: format!("{host}:{STORE_PORT}"),
                    source: Box::new(e),
                })?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(AdapterError::InvalidInput("no connection".into()));
        };
        self.busy = true;
        let result = async {
            write_frame(stream, req).await?;
            read_frame::<_, Response>(stream).await
        }
        .await;
        self.busy = false;
        let failed = |message: String| AdapterError::Connection { what, message };
        match result {
            Ok(Some(resp)) if resp.op == req.op => Ok(resp.reply),
            Ok(Some(resp)) => {
                self.stream = None;
                Err(AdapterError::Protocol {
                    what,
                    message: format!("answer to request {} for request {}", resp.op, req.op),
                })
            }
            Ok(None) => {
                self.stream = None;
                Err(failed("the store closed the connection".into()))
            }
            Err(e) => {
                self.stream = None;
                Err(failed(e.to_string()))
            }
        }
    }
}

impl StoreClient for NetClient {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        let req = Request {
            op: self.current.load(Ordering::Relaxed),
            client: self.name.clone(),
            process: self.process,
            incarnation: self.incarnation,
            body: op.clone(),
        };
        match op {
            StoreOp::Random(draw) => return Ok(Reply::Random(self.random.answer(draw))),
            StoreOp::Local(block) => return self.memories.run(self.host, block),
            _ => {}
        }
        match op.store() {
            StoreId::Sql => self.sql.call(&req, "SQL").await,
            StoreId::Redis => self.redis.call(&req, "Redis").await,
            StoreId::Upstream => self.upstream.call(&req, "upstream").await,
            StoreId::Push => self.push.call(&req, "push balancer").await,
            // Answered above: a local block never crosses the network.
            StoreId::Local => Err(AdapterError::InvalidInput(format!(
                "{op} is answered in process"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_race_is_a_clear_error() {
        let races = crate::catalog();
        let race = crate::find(&races, "R-002-06").expect("in the catalog");
        let err = run_seed_net(race, Variant::Correct, 1).expect_err("not in the net world");
        assert!(err.to_string().contains("--world explore"), "{err}");
    }
}
