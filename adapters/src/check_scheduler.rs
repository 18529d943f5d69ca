//! The real-server check of document 004's scheduler (R-004-01, R-004-02, with R-004-05's
//! durable outcomes), Jepsen style: scheduler instances submit thousands of jobs by stable id
//! and reap them, worker nodes register, heartbeat, run the jobs bound to them and report
//! their results, every one of them a task driving core's machines ([`DurableScheduler`],
//! [`Node`]) with [`drive`] over connections of its own to a real Redis (the scheduler's
//! scripts, by SHA) and PostgreSQL, while faults planned on the run's progress are injected; the recorded
//! history and the committed outcomes are judged by the family's oracles from core.
//!
//! The run, step by step:
//!
//! 1. Set-up ([`RunEnv`]): a schema of its own in PostgreSQL (the `job_outcomes` table), a key
//!    prefix of its own in Redis, our own restartable `redis-server` when asked, a fault proxy
//!    in front of both when cuts are planned.
//! 2. The plan, from the seed: job ids `j1..jN` (stable: a restarted scheduler submits the
//!    same ids again), dealt round robin to the scheduler instances, each job due at a time
//!    spread evenly over the submission window. Timing is the variant's document timing
//!    ([`NodeConfig::of`]) scaled down 200 times ([`real_config`]): the Correct lease of 40 s
//!    renewed every 10 s becomes 200 ms renewed every 50 ms, T_dead 60 s becomes 300 ms.
//!    The configuration is one value the scripts read as `ARGV`.
//! 3. Each scheduler instance is one machine, core's [`DurableScheduler`]: a dispatcher (one
//!    dispatch script per job, then the reap script every interval) inside a durable outcome
//!    record: before the client is told a job's outcome it is inserted into `job_outcomes`
//!    (first insert wins, R-004-05's rule), and an instance that starts (or
//!    starts again) first reads the outcomes it stored and submits only the other jobs of its
//!    list. Redis keeps the jobs in flight; PostgreSQL alone says how a job ended.
//! 4. Faults ([`FaultPlan`]), each kind at least N times, at planned points of progress (jobs
//!    whose outcome was told): Redis restarts (every key lost: nodes find their lease gone
//!    and register again, schedulers' reaps find their jobs gone and submit them again),
//!    scheduler instances killed and started again, nodes killed and started again after
//!    longer than T_dead, nodes paused past their lease and resumed (the zombie: its
//!    heartbeat finds the lease gone, its results carry the old epoch), connections cut. A
//!    run that could not inject a planned fault is an error, not a pass.
//! 5. The end: once every job's outcome was told, everything stops, and the outcomes are read
//!    back from PostgreSQL.
//! 6. Verdict, from core's oracles over the history: I-JOB ([`one_outcome`]: no job has two
//!    kept results, a result a Redis restart erased not counting), L2 ([`binding_liveness`]
//!    at the scaled T_dead), F1 ([`fenced_results`]: no result accepted from a node or epoch
//!    the job is no longer bound to), and from the end state I-JOB-delivered (every job of
//!    the plan has its one row in `job_outcomes`). The family's `sometimes` counts
//!    ([`coverage`]) show the protections were exercised (stale results refused, leases
//!    lost, dead nodes skipped).
//!
//! The recorder knows only what the client saw: a script whose reply a cut or a kill lost
//! has no result. A binding or a registration whose reply was lost is given the store's
//! truth before the history is judged ([`recover_unknown`]), as the gateway check does for
//! charges: a later reply that shows the job bound to a node and epoch no kept binding made
//! (a reap answering `running N E`, an accepted result) names the lost binding that made it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use racelab_core::scheduler::jobfsm::JOB_OUTCOMES;
use racelab_core::scheduler::{
    DEAD_NODE_SKIPPED, DurableScheduler, LEASE_LOST, Node, NodeConfig, STALE_RESULT_REFUSED,
    SchedNote, SchedTag, T_DEAD, binding_liveness, coverage, fenced_results, one_outcome,
};
use racelab_core::{
    Cond, Duration, Fault, History, KvReply, Note, Outgoing, ProcessId, Reply, SqlOp, SqlReply,
    SqlStmt, StoreOp, Timestamp, Variant, Violation,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::AdapterError;
use crate::check::RedisTarget;
use crate::check_gateway::{execute_sql_afresh_after_doubt, percentile};
use crate::driver::{
    Clock, Completion, Control, DriveEnd, DriverConfig, Observer, StoreClient, Stores, drive,
};
use crate::fault_plan::{FaultCounts, FaultKind, FaultOptions, FaultPlan};
use crate::postgres::PgSql;
use crate::recorder::Recorder;
use crate::redis_kv::RedisKv;
use crate::run_env::{ConnectionFaults, Injector, RunEnv};

/// The parameters of [`check_scheduler`]. [`SchedulerOptions::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// `Correct` (fenced 200 ms leases), `DocFix` (the revision's TTLs, unfenced) or `Buggy`
    /// (the code's TTLs, unfenced), each timed as [`real_config`] says.
    pub variant: Variant,
    /// Scheduler instances (1..=64).
    pub schedulers: u16,
    /// Worker nodes (1..=256).
    pub nodes: u16,
    /// Jobs to run (1..=100,000).
    pub jobs: u64,
    /// The Redis to use.
    pub redis: RedisTarget,
    /// The PostgreSQL URL (`postgres://...`).
    pub pg_url: String,
    /// The faults to inject, planned on the run's progress ([`FaultOptions::scheduler`]).
    pub faults: FaultOptions,
    /// The seed of the plan and of the faults' choices (the servers' timing is not ours, so
    /// a run is not replayable bit for bit).
    pub seed: u64,
    /// The run gives up (and reports it did not settle) after this long.
    pub time_limit: std::time::Duration,
    /// Keep the schema and keys afterwards (for inspection).
    pub keep_data: bool,
}

impl SchedulerOptions {
    /// A run of `variant` with `schedulers` instances and `nodes` nodes running `jobs` jobs
    /// against `redis` and `pg_url`: no faults, seed 1, a 5 minute limit.
    pub fn new(
        variant: Variant,
        schedulers: u16,
        nodes: u16,
        jobs: u64,
        redis: RedisTarget,
        pg_url: &str,
    ) -> SchedulerOptions {
        SchedulerOptions {
            variant,
            schedulers,
            nodes,
            jobs,
            redis,
            pg_url: pg_url.to_string(),
            faults: FaultOptions::none(),
            seed: 1,
            time_limit: std::time::Duration::from_secs(300),
            keep_data: false,
        }
    }
}

/// The run's timing, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerTiming {
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// The node key's TTL (the lease).
    pub node_ttl_ms: u64,
    /// The pool set's TTL (0: none).
    pub pool_ttl_ms: u64,
    /// Whether the scripts fence by epoch.
    pub fenced: bool,
    /// I-LIVE's bound: no job bound to a node silent for longer.
    pub t_dead_ms: u64,
    /// How long each job runs on its node.
    pub job_ms: u64,
    /// How often a scheduler reaps the jobs it follows.
    pub reap_every_ms: u64,
    /// The window over which the jobs are submitted.
    pub submit_window_ms: u64,
}

/// What a scheduler run found. Serialisable for the CLI's JSON output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SchedulerReport {
    /// Always `scheduler`.
    pub protocol: String,
    /// `correct`, `docfix` or `buggy`.
    pub variant: String,
    /// The run's seed.
    pub seed: u64,
    /// Scheduler instances.
    pub schedulers: u16,
    /// Worker nodes.
    pub nodes: u16,
    /// Jobs in the plan.
    pub jobs: u64,
    /// Rows in `job_outcomes` at the end (one per job told its outcome).
    pub outcomes: u64,
    /// Results the store accepted and kept (a restart erasing some: they were run again).
    pub results_accepted: u64,
    /// The timing.
    pub timing: SchedulerTiming,
    /// How many times each planned kind was to be injected.
    pub faults_planned_per_kind: u32,
    /// The kinds planned.
    pub faults_planned: Vec<FaultKind>,
    /// Faults injected, per kind.
    pub faults_injected: FaultCounts,
    /// Every broken invariant, explained (empty when the run is correct).
    pub violations: Vec<Violation>,
    /// How often each of the family's `sometimes` properties held (stale results refused,
    /// leases lost, dead nodes skipped).
    pub sometimes: BTreeMap<String, u64>,
    /// Whether every job's outcome was told within the time limit.
    pub settled: bool,
    /// Median dispatch latency (ms): a job's first submission to its first kept binding.
    pub dispatch_p50_ms: u64,
    /// 99th percentile dispatch latency (ms).
    pub dispatch_p99_ms: u64,
    /// Median store-operation latency (ms, client side).
    pub op_p50_ms: u64,
    /// 99th percentile store-operation latency (ms).
    pub op_p99_ms: u64,
    /// Store operations recorded.
    pub operations: u64,
    /// Operations whose answer never came (cut connections, kills, restarts).
    pub unknown_outcomes: u64,
    /// Bindings and registrations whose reply was lost, given the store's truth shown by a
    /// later reply ([`recover_unknown`]).
    pub recovered: u64,
    /// Wall-clock duration of the jobs' part of the run (ms).
    pub duration_ms: u64,
    /// Jobs told their outcome per second.
    pub jobs_per_second: f64,
}

impl SchedulerReport {
    /// Whether every invariant held.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

const SCHEDULERS_MAX: u16 = 64;
const NODES_MAX: u16 = 256;
const JOBS_MAX: u64 = 100_000;
/// The document's timings are divided by this: seconds become 5 ms steps.
pub const TIME_SCALE: u64 = 200;
/// How long each job runs.
const JOB_LENGTH: Duration = Duration::from_ms(50);
/// How often a scheduler reaps the jobs it follows.
const REAP_EVERY: Duration = Duration::from_ms(100);
/// Submission window per job (10,000 jobs: 30 s), and the shortest window.
const SUBMIT_PER_JOB_US: u64 = 3_000;
const SUBMIT_WINDOW_MIN: Duration = Duration::from_secs(5);
/// How long a killed scheduler stays down.
const SCHEDULER_DOWN: std::time::Duration = std::time::Duration::from_millis(300);
/// How often the run looks at its progress.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// Process ids: schedulers from here, nodes from [`FIRST_NODE`].
const FIRST_SCHEDULER: u16 = 10;
const FIRST_NODE: u16 = 1_000;

/// The variant's document timing ([`NodeConfig::of`]) scaled down [`TIME_SCALE`] times:
/// Correct's lease of 40 s renewed every 10 s becomes 200 ms renewed every 50 ms; DocFix's
/// 60/70 s TTLs with a 30 s heartbeat 300/350 ms and 150 ms; Buggy's 3600 s 18 s.
pub fn real_config(variant: Variant) -> NodeConfig {
    let doc = NodeConfig::of(variant);
    let scale = |d: Duration| Duration::from_ms(d.as_ms() / TIME_SCALE);
    NodeConfig {
        heartbeat: scale(doc.heartbeat),
        node_ttl: scale(doc.node_ttl),
        pool_ttl: scale(doc.pool_ttl),
        fenced: doc.fenced,
    }
}

/// I-LIVE's T_dead at the run's scale (the document's 60 s: 300 ms).
pub fn real_t_dead() -> Duration {
    Duration::from_ms(T_DEAD.as_ms() / TIME_SCALE)
}

/// How long a paused node stays paused: three leases of the variant (Correct: 600 ms).
fn pause_for(config: &NodeConfig) -> std::time::Duration {
    std::time::Duration::from_millis(3 * config.node_ttl.as_ms().max(config.heartbeat.as_ms()))
        .min(std::time::Duration::from_secs(2))
}

/// How long a killed node stays dead: twice T_dead (600 ms).
fn node_down() -> std::time::Duration {
    std::time::Duration::from_millis(2 * real_t_dead().as_ms())
}

/// Runs document 004's scheduler against real servers while the planned faults are
/// injected, and judges it.
///
/// Call it inside a tokio runtime with IO and time enabled (the future is `Send`).
/// `progress(told, total)` is called as jobs' outcomes are told. The run leaves nothing
/// behind (schema and keys dropped, its own Redis stopped) unless `keep_data` is set. Errors
/// are set-up failures (an unreachable server, invalid options) and a fault plan that could
/// not be carried out; what the run finds is in the report.
pub async fn check_scheduler(
    opts: SchedulerOptions,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<SchedulerReport, AdapterError> {
    check_scheduler_with_history(opts, progress)
        .await
        .map(|(r, _)| r)
}

/// [`check_scheduler`], also returning the recorded history.
pub async fn check_scheduler_with_history(
    opts: SchedulerOptions,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<(SchedulerReport, History), AdapterError> {
    validate(&opts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let label = format!("sched_{}", opts.variant.as_str());
    let mut env = RunEnv::start(&label, &mut rng, &opts.redis, &opts.pg_url, &opts.faults).await?;
    let result = async {
        env.admin_pg.reset().await?;
        // The table exists before any scheduler names it.
        env.admin_pg
            .execute_sql(&SqlOp::exec(
                SqlStmt::scan(JOB_OUTCOMES, Cond::True).limit(1),
            ))
            .await?;
        let run = SchedRun::new(
            &opts,
            &env.prefix,
            &env.schema,
            &env.worker_redis,
            &env.worker_pg,
        );
        run.execute(
            &opts,
            &mut rng,
            &mut env.admin_pg,
            &mut env.injector,
            &mut progress,
        )
        .await
    }
    .await;
    env.finish(opts.keep_data).await;
    result
}

fn validate(opts: &SchedulerOptions) -> Result<(), AdapterError> {
    let bad = |m: String| Err(AdapterError::InvalidInput(m));
    if opts.schedulers == 0 || opts.schedulers > SCHEDULERS_MAX {
        return bad(format!(
            "schedulers must be 1..={SCHEDULERS_MAX}, not {}",
            opts.schedulers
        ));
    }
    if opts.nodes == 0 || opts.nodes > NODES_MAX {
        return bad(format!("nodes must be 1..={NODES_MAX}, not {}", opts.nodes));
    }
    if opts.jobs == 0 || opts.jobs > JOBS_MAX {
        return bad(format!("jobs must be 1..={JOBS_MAX}, not {}", opts.jobs));
    }
    opts.faults
        .refuse_unsupported(
            "scheduler",
            &FaultKind::SCHEDULER,
            matches!(opts.redis, RedisTarget::Url(_)),
        )
        .or_else(bad)?;
    Ok(())
}

/// The plan: each scheduler's jobs (id, due time), and the window they are submitted over.
fn plan(opts: &SchedulerOptions) -> (Vec<Vec<(String, Timestamp)>>, Duration) {
    let window_us = opts.jobs.saturating_mul(SUBMIT_PER_JOB_US);
    let window = Duration::from_ms(window_us / 1_000).max(SUBMIT_WINDOW_MIN);
    let mut lists = vec![Vec::new(); usize::from(opts.schedulers)];
    for i in 0..opts.jobs {
        let at = Timestamp::from_ms(window.as_ms() * i / opts.jobs.max(1));
        let s = usize::try_from(i % u64::from(opts.schedulers)).unwrap_or(0);
        lists[s].push((format!("j{}", i + 1), at));
    }
    (lists, window)
}

/// A node's client: its real stores, held still while the node is paused (nothing it sends
/// leaves it; its timers fire when it resumes).
struct NodeClient {
    stores: Stores,
    paused_until: Arc<Mutex<Option<tokio::time::Instant>>>,
}

impl StoreClient for NodeClient {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        let until = self.paused_until.lock().ok().and_then(|p| *p);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        self.stores.execute(op).await
    }
}

/// A scheduler's client: Redis, and PostgreSQL under the simulated worlds' session contract
/// (a statement whose outcome is unknown replaces the session).
struct SchedulerClient<'a> {
    stores: Stores,
    pg_url: &'a str,
    schema: &'a str,
    sql_in_doubt: bool,
}

impl StoreClient for SchedulerClient<'_> {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        if !matches!(op, StoreOp::Sql(_)) {
            return self.stores.execute(op).await;
        }
        let session = (self.pg_url, self.schema);
        execute_sql_afresh_after_doubt(&mut self.stores, &mut self.sql_in_doubt, session, op).await
    }
}

/// Counts the jobs told (distinct), then records.
struct Telling<'a, O> {
    inner: O,
    told: &'a Mutex<BTreeSet<String>>,
}

impl<O: Observer> Observer for Telling<'_, O> {
    fn invoked(&mut self, at: Timestamp, op: &Outgoing) {
        self.inner.invoked(at, op);
    }
    fn completed(&mut self, at: Timestamp, op: &Outgoing, completion: &Completion) -> Control {
        self.inner.completed(at, op, completion)
    }
    fn noted(&mut self, at: Timestamp, note: &Note) {
        if let Some(SchedNote::Delivered { job }) = note.get::<SchedNote>()
            && let Ok(mut t) = self.told.lock()
        {
            t.insert(job.clone());
        }
        self.inner.noted(at, note);
    }
}

/// A process slot's switch: the sender that stops its current incarnation, and whether it is
/// down (killed, not yet started again) or paused.
#[derive(Default)]
struct Slot {
    stop: Option<watch::Sender<bool>>,
    faulted: bool,
}

/// Shared state of one run.
struct SchedRun {
    variant: Variant,
    config: NodeConfig,
    lists: Vec<Vec<(String, Timestamp)>>,
    window: Duration,
    total: u64,
    prefix: String,
    schema: String,
    redis_url: String,
    pg_url: String,
    recorder: Recorder,
    clock: Clock,
    told: Mutex<BTreeSet<String>>,
    schedulers: Vec<Mutex<Slot>>,
    nodes: Vec<Mutex<Slot>>,
    pauses: Vec<Arc<Mutex<Option<tokio::time::Instant>>>>,
    faults: Mutex<FaultCounts>,
    stopping: AtomicBool,
    node_driver: DriverConfig,
    scheduler_driver: DriverConfig,
}

impl SchedRun {
    fn new(
        opts: &SchedulerOptions,
        prefix: &str,
        schema: &str,
        redis_url: &str,
        pg_url: &str,
    ) -> Arc<SchedRun> {
        let config = real_config(opts.variant);
        let (lists, window) = plan(opts);
        Arc::new(SchedRun {
            variant: opts.variant,
            config,
            lists,
            window,
            total: opts.jobs,
            prefix: prefix.to_string(),
            schema: schema.to_string(),
            redis_url: redis_url.to_string(),
            pg_url: pg_url.to_string(),
            recorder: Recorder::new(),
            clock: Clock::start_now(),
            told: Mutex::new(BTreeSet::new()),
            schedulers: (0..opts.schedulers)
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
            nodes: (0..opts.nodes)
                .map(|_| Mutex::new(Slot::default()))
                .collect(),
            pauses: (0..opts.nodes)
                .map(|_| Arc::new(Mutex::new(None)))
                .collect(),
            faults: Mutex::new(FaultCounts::default()),
            stopping: AtomicBool::new(false),
            // A paused node's operation waits out the pause before it is sent.
            node_driver: DriverConfig {
                redis_timeout: std::time::Duration::from_secs(3),
                ..DriverConfig::default()
            },
            scheduler_driver: DriverConfig {
                redis_timeout: std::time::Duration::from_secs(1),
                sql_timeout: std::time::Duration::from_secs(4),
                ..DriverConfig::default()
            },
        })
    }

    fn stores(&self, sql: bool) -> Result<Stores, AdapterError> {
        Ok(Stores {
            kv: Some(RedisKv::lazy(&self.redis_url, &self.prefix)?),
            queue: None,
            sql: if sql {
                Some(PgSql::lazy(&self.pg_url, &self.schema)?)
            } else {
                None
            },
            pubsub: None,
            random: None,
        })
    }

    /// Arms `slot` for a new incarnation; `None` when the run is stopping.
    fn arm(&self, slot: &Mutex<Slot>) -> Option<watch::Receiver<bool>> {
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let (tx, rx) = watch::channel(false);
        if let Ok(mut s) = slot.lock() {
            s.stop = Some(tx);
            s.faulted = false;
        }
        Some(rx)
    }

    /// One node: incarnations until the run stops, each a fresh [`Node`] on fresh
    /// connections; a killed one stays dead for [`node_down`].
    async fn node(self: Arc<SchedRun>, i: usize) -> Result<(), AdapterError> {
        let process = ProcessId(FIRST_NODE + u16::try_from(i).unwrap_or(0));
        let name = format!("N{}", i + 1);
        self.recorder.name(process, &name);
        loop {
            let Some(mut rx) = self.arm(&self.nodes[i]) else {
                return Ok(());
            };
            let mut machine = Node::new(&name, self.config, JOB_LENGTH);
            let mut client = NodeClient {
                stores: self.stores(false)?,
                paused_until: self.pauses[i].clone(),
            };
            let mut observer = self
                .recorder
                .process(process, |_: &Outgoing, _: &Completion| Control::Continue);
            let end = drive(
                &mut machine,
                &mut client,
                &self.node_driver,
                self.clock,
                &mut rx,
                &mut observer,
            )
            .await;
            if self.stopping.load(Ordering::SeqCst) || end == DriveEnd::Idle {
                return Ok(());
            }
            self.recorder
                .fault(self.clock.true_now(), Fault::Crash { process });
            tokio::time::sleep(node_down()).await;
            self.recorder
                .fault(self.clock.true_now(), Fault::Restart { process });
        }
    }

    /// One scheduler instance: incarnations until the run stops or every job of its list
    /// is told; a killed one starts again after [`SCHEDULER_DOWN`].
    async fn scheduler(self: Arc<SchedRun>, i: usize) -> Result<(), AdapterError> {
        let process = ProcessId(FIRST_SCHEDULER + u16::try_from(i).unwrap_or(0));
        let name = format!("S{}", i + 1);
        self.recorder.name(process, &name);
        loop {
            let Some(mut rx) = self.arm(&self.schedulers[i]) else {
                return Ok(());
            };
            let mut machine =
                DurableScheduler::new(&name, self.config, self.lists[i].clone(), REAP_EVERY);
            let mut client = SchedulerClient {
                stores: self.stores(true)?,
                pg_url: &self.pg_url,
                schema: &self.schema,
                sql_in_doubt: false,
            };
            let mut observer = Telling {
                inner: self
                    .recorder
                    .process(process, |_: &Outgoing, _: &Completion| Control::Continue),
                told: &self.told,
            };
            let end = drive(
                &mut machine,
                &mut client,
                &self.scheduler_driver,
                self.clock,
                &mut rx,
                &mut observer,
            )
            .await;
            if end == DriveEnd::Idle {
                // Every job of its list told: nothing left to kill.
                if let Ok(mut s) = self.schedulers[i].lock() {
                    s.stop = None;
                }
                return Ok(());
            }
            if self.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.recorder
                .fault(self.clock.true_now(), Fault::Crash { process });
            tokio::time::sleep(SCHEDULER_DOWN).await;
            self.recorder
                .fault(self.clock.true_now(), Fault::Restart { process });
        }
    }

    /// Stops the incarnation in `slot` (a kill), unless it is already down or paused.
    fn kill(slot: &Mutex<Slot>) -> bool {
        let Ok(mut s) = slot.lock() else {
            return false;
        };
        if s.faulted {
            return false;
        }
        match &s.stop {
            Some(tx) => {
                tx.send_replace(true);
                s.faulted = true;
                true
            }
            None => false,
        }
    }

    /// A slot that is up and not faulted, drawn from `rng`.
    fn pick(slots: &[Mutex<Slot>], rng: &mut ChaCha8Rng) -> Option<usize> {
        let up: Vec<usize> = (0..slots.len())
            .filter(|i| {
                slots[*i]
                    .lock()
                    .is_ok_and(|s| !s.faulted && s.stop.is_some())
            })
            .collect();
        (!up.is_empty()).then(|| up[rng.random_range(0..up.len())])
    }

    fn count(&self, kind: FaultKind) {
        self.count_with(|c| c.add(kind));
    }

    fn count_with(&self, f: impl FnOnce(&mut FaultCounts)) {
        if let Ok(mut c) = self.faults.lock() {
            f(&mut c);
        }
    }

    /// Carries out one planned fault; false when it cannot be done now (try again later).
    async fn inject(
        self: &Arc<SchedRun>,
        kind: FaultKind,
        rng: &mut ChaCha8Rng,
        injector: &mut Injector,
    ) -> Result<bool, AdapterError> {
        match kind {
            FaultKind::RedisRestart => {
                // Recorded while no server runs: every result applied before it was erased
                // (`one_outcome` leaves them out), none applied after it.
                let (recorder, clock) = (&self.recorder, self.clock);
                let dead = || recorder.fault(clock.true_now(), Fault::RedisRestart);
                if !injector.restart_redis_marking(dead).await? {
                    return Ok(false);
                }
            }
            FaultKind::SchedulerKill => {
                let Some(i) = Self::pick(&self.schedulers, rng) else {
                    return Ok(false);
                };
                if !Self::kill(&self.schedulers[i]) {
                    return Ok(false);
                }
            }
            FaultKind::NodeKill => {
                let Some(i) = Self::pick(&self.nodes, rng) else {
                    return Ok(false);
                };
                if !Self::kill(&self.nodes[i]) {
                    return Ok(false);
                }
            }
            FaultKind::NodePause => {
                let Some(i) = Self::pick(&self.nodes, rng) else {
                    return Ok(false);
                };
                let pause = pause_for(&self.config);
                if let Ok(mut s) = self.nodes[i].lock() {
                    s.faulted = true;
                }
                if let Ok(mut p) = self.pauses[i].lock() {
                    *p = Some(tokio::time::Instant::now() + pause);
                }
                let process = ProcessId(FIRST_NODE + u16::try_from(i).unwrap_or(0));
                self.recorder.fault(
                    self.clock.true_now(),
                    Fault::Pause {
                        process,
                        duration: Duration::from_ms(
                            u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        ),
                    },
                );
                let run = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    if let Ok(mut s) = run.nodes[i].lock() {
                        s.faulted = false;
                    }
                });
            }
            FaultKind::CutConnection => {
                let shape = ConnectionFaults {
                    spike: std::time::Duration::ZERO,
                    stall_every: 3,
                    stall_hold: std::time::Duration::ZERO,
                    cut_every: 3,
                };
                let mut done = false;
                self.count_with(|c| done = injector.connection_fault(kind, rng, &shape, c));
                if !done {
                    return Ok(false);
                }
            }
            // Not the scheduler's (validate refuses them).
            _ => return Ok(false),
        }
        self.count(kind);
        Ok(true)
    }

    fn told(&self) -> u64 {
        self.told.lock().map(|t| t.len() as u64).unwrap_or(0)
    }

    async fn execute(
        self: Arc<SchedRun>,
        opts: &SchedulerOptions,
        rng: &mut ChaCha8Rng,
        admin_pg: &mut PgSql,
        injector: &mut Injector,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<(SchedulerReport, History), AdapterError> {
        let total = self.total;
        let mut fault_plan = FaultPlan::new(&opts.faults, total, rng);
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.nodes.len() {
            tasks.spawn(self.clone().node(i));
        }
        for i in 0..self.schedulers.len() {
            tasks.spawn(self.clone().scheduler(i));
        }
        let mut reported = u64::MAX;
        let mut settled = false;
        loop {
            tokio::time::sleep(TICK).await;
            if started.elapsed() > opts.time_limit {
                break;
            }
            let done = self.told();
            if done != reported {
                reported = done;
                progress(done, total);
            }
            if done >= total {
                settled = true;
                break;
            }
            while let Some(kind) = fault_plan.due(done) {
                if !self.inject(kind, rng, injector).await? {
                    fault_plan.postpone();
                    break;
                }
            }
        }
        let duration = started.elapsed();
        self.stopping.store(true, Ordering::SeqCst);
        for slot in self.nodes.iter().chain(&self.schedulers) {
            if let Ok(s) = slot.lock()
                && let Some(tx) = &s.stop
            {
                tx.send_replace(true);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                return Err(e);
            }
        }
        injector.heal();
        let injected = self.faults.lock().map(|f| *f).unwrap_or_default();
        if settled {
            fault_plan.verify(&injected)?;
        }
        self.judge(opts, admin_pg, settled, duration, injected)
            .await
    }

    async fn judge(
        &self,
        opts: &SchedulerOptions,
        pg: &mut PgSql,
        settled: bool,
        duration: std::time::Duration,
        injected: FaultCounts,
    ) -> Result<(SchedulerReport, History), AdapterError> {
        let mut history = self.recorder.history();
        let recovered = recover_unknown(&mut history);
        let rows = match pg
            .execute_sql(&SqlOp::exec(SqlStmt::scan(JOB_OUTCOMES, Cond::True)))
            .await?
        {
            SqlReply::Rows(rows) => rows,
            other => {
                return Err(AdapterError::Protocol {
                    what: "PostgreSQL",
                    message: format!("reading job_outcomes answered {other}"),
                });
            }
        };
        let stored: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let t_dead = real_t_dead();
        let mut verdict = one_outcome(&history)
            .merge(fenced_results(&history))
            .merge(binding_liveness(&history, t_dead));
        // I-JOB-delivered, from the durable end state: every job of the plan has its row.
        let missing: Vec<&str> = self
            .lists
            .iter()
            .flatten()
            .map(|(j, _)| j.as_str())
            .filter(|j| !stored.contains(j))
            .collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(10).copied().collect();
            verdict.violations.push(Violation {
                invariant: racelab_core::scheduler::I_JOB_DELIVERED.name.into(),
                explanation: format!(
                    "{} of {} jobs have no stored outcome at the end ({}{})",
                    missing.len(),
                    self.total,
                    shown.join(", "),
                    if missing.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                ),
                ops: Vec::new(),
            });
        }
        if !settled {
            verdict.violations.push(Violation {
                invariant: "stuck".into(),
                explanation: format!(
                    "the run did not settle within {} s: {} of {} jobs told their outcome",
                    opts.time_limit.as_secs(),
                    self.told(),
                    self.total
                ),
                ops: Vec::new(),
            });
        }
        coverage(&history, &mut verdict);
        verdict.sometimes.retain(|name, _| {
            [
                DEAD_NODE_SKIPPED.name,
                STALE_RESULT_REFUSED.name,
                LEASE_LOST.name,
            ]
            .contains(&name.as_str())
        });
        let results_accepted = history
            .ops
            .iter()
            .filter(|op| {
                matches!(op.tag.get::<SchedTag>(), Some(SchedTag::Complete { .. }))
                    && op.result == Some(Reply::Kv(KvReply::Int(1)))
            })
            .count() as u64;
        let mut dispatch = dispatch_latencies(&history);
        dispatch.sort_unstable();
        let mut op_latencies = self.recorder.latencies_ms();
        op_latencies.sort_unstable();
        let report = SchedulerReport {
            protocol: "scheduler".into(),
            variant: self.variant.as_str().to_string(),
            seed: opts.seed,
            schedulers: opts.schedulers,
            nodes: opts.nodes,
            jobs: self.total,
            outcomes: rows.len() as u64,
            results_accepted,
            timing: SchedulerTiming {
                heartbeat_ms: self.config.heartbeat.as_ms(),
                node_ttl_ms: self.config.node_ttl.as_ms(),
                pool_ttl_ms: self.config.pool_ttl.as_ms(),
                fenced: self.config.fenced,
                t_dead_ms: t_dead.as_ms(),
                job_ms: JOB_LENGTH.as_ms(),
                reap_every_ms: REAP_EVERY.as_ms(),
                submit_window_ms: self.window.as_ms(),
            },
            faults_planned_per_kind: opts.faults.per_kind,
            faults_planned: if opts.faults.per_kind == 0 {
                Vec::new()
            } else {
                opts.faults.kinds.clone()
            },
            faults_injected: injected,
            violations: verdict.violations,
            sometimes: verdict.sometimes,
            settled,
            dispatch_p50_ms: percentile(&dispatch, 50),
            dispatch_p99_ms: percentile(&dispatch, 99),
            op_p50_ms: percentile(&op_latencies, 50),
            op_p99_ms: percentile(&op_latencies, 99),
            operations: history.ops.len() as u64,
            unknown_outcomes: history.ops.iter().filter(|o| o.result.is_none()).count() as u64,
            recovered,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            jobs_per_second: self.told() as f64 / duration.as_secs_f64().max(0.001),
        };
        Ok((report, history))
    }
}

/// The binding a kept reply shows, `(node, epoch)`: `bound N E ...` (it made it) or
/// `running N E` (a reap found it).
fn shown_binding(reply: &str) -> Option<(&str, &str, bool)> {
    let mut words = reply.split(' ');
    let made = match words.next()? {
        "bound" => true,
        "running" => false,
        _ => return None,
    };
    Some((words.next()?, words.next()?, made))
}

/// A job's dispatch and reap operations' bindings, and the registrations' epochs, whose reply
/// was lost (a cut, a kill): each is given the store's truth when a later kept reply shows it.
///
/// - A binding: when a reap answers `running N E`, or a result from (N, E) is accepted, for a
///   job whose last kept binding (in the order of invocation) is not (N, E), the latest
///   dispatch or reap of that job whose reply was lost since then made it (there is no other
///   writer of the binding in this run: no node-offline monitor runs); it is given the reply
///   `bound N E 0`, applied when it was invoked.
/// - A registration: when a kept binding names (N, E) and no kept registration of N answered
///   E, the latest registration of N whose reply was lost before it made epoch E; it is
///   given the reply E, applied when it was invoked.
///
/// Nothing is recovered across a Redis restart (the restart erased what it wrote). Returns
/// how many operations were recovered.
pub fn recover_unknown(history: &mut History) -> u64 {
    let restarts: Vec<Timestamp> = history.redis_restarts();
    let across = |from: Timestamp, to: Timestamp| restarts.iter().any(|r| *r >= from && *r <= to);
    let mut recovered = 0;
    // Per job: (node, epoch) of its last kept binding, and its lost bindings since.
    let mut bound: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut lost: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut fills: Vec<(usize, String)> = Vec::new();
    for i in 0..history.ops.len() {
        let op = &history.ops[i];
        let Some(tag) = op.tag.get::<SchedTag>() else {
            continue;
        };
        let shown = match (tag, &op.result) {
            (
                SchedTag::Dispatch { job } | SchedTag::Reap { job },
                Some(Reply::Kv(KvReply::Bulk(s))),
            ) => shown_binding(s).map(|(n, e, made)| (job, n.to_string(), e.to_string(), made)),
            (SchedTag::Dispatch { job } | SchedTag::Reap { job }, None) => {
                lost.entry(job.clone()).or_default().push(i);
                None
            }
            (SchedTag::Complete { job, node, epoch }, Some(Reply::Kv(KvReply::Int(1)))) => {
                Some((job, node.clone(), epoch.to_string(), false))
            }
            _ => None,
        };
        let Some((job, node, epoch, made)) = shown else {
            continue;
        };
        let at = op.completed_at.unwrap_or(op.invoked_at);
        if made {
            bound.insert(job.clone(), (node, epoch));
            lost.remove(job);
            continue;
        }
        if bound.get(job) == Some(&(node.clone(), epoch.clone())) {
            continue;
        }
        let candidate = lost
            .get(job)
            .and_then(|l| l.last().copied())
            .filter(|&k| !across(history.ops[k].invoked_at, at));
        if let Some(k) = candidate {
            fills.push((k, format!("bound {node} {epoch} 0")));
            bound.insert(job.clone(), (node, epoch));
            lost.remove(job);
        }
    }
    for (k, reply) in fills {
        let op = &mut history.ops[k];
        op.result = Some(Reply::Kv(KvReply::Bulk(reply)));
        op.applied_at = Some(op.invoked_at);
        op.durable_at = Some(op.invoked_at);
        recovered += 1;
    }
    // Registrations: epochs that bindings name but no kept registration answered.
    let mut answered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut lost_reg: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut reg_fills: Vec<(usize, i64)> = Vec::new();
    for i in 0..history.ops.len() {
        let op = &history.ops[i];
        match (op.tag.get::<SchedTag>(), &op.result) {
            (Some(SchedTag::Register { node }), Some(Reply::Kv(KvReply::Int(e)))) => {
                answered.insert((node.clone(), e.to_string()));
            }
            (Some(SchedTag::Register { node }), None) => {
                lost_reg.entry(node.clone()).or_default().push(i);
            }
            (
                Some(SchedTag::Dispatch { .. } | SchedTag::Reap { .. }),
                Some(Reply::Kv(KvReply::Bulk(s))),
            ) => {
                let Some((node, epoch, true)) = shown_binding(s) else {
                    continue;
                };
                if answered.contains(&(node.to_string(), epoch.to_string())) {
                    continue;
                }
                let at = op.completed_at.unwrap_or(op.invoked_at);
                let candidate = lost_reg
                    .get(node)
                    .and_then(|l| l.last().copied())
                    .filter(|&k| !across(history.ops[k].invoked_at, at));
                if let (Some(k), Ok(e)) = (candidate, epoch.parse::<i64>()) {
                    reg_fills.push((k, e));
                    answered.insert((node.to_string(), epoch.to_string()));
                    if let Some(l) = lost_reg.get_mut(node) {
                        l.pop();
                    }
                }
            }
            _ => {}
        }
    }
    for (k, e) in reg_fills {
        let op = &mut history.ops[k];
        op.result = Some(Reply::Kv(KvReply::Int(e)));
        op.applied_at = Some(op.invoked_at);
        op.durable_at = Some(op.invoked_at);
        recovered += 1;
    }
    recovered
}

/// Per job, its first submission (the first dispatch's invocation) to its first kept
/// binding (the reply that made it), in ms.
fn dispatch_latencies(history: &History) -> Vec<u64> {
    let mut first: BTreeMap<&str, Timestamp> = BTreeMap::new();
    let mut bound: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    for op in &history.ops {
        let job = match op.tag.get::<SchedTag>() {
            Some(SchedTag::Dispatch { job }) => {
                first.entry(job.as_str()).or_insert(op.invoked_at);
                job
            }
            Some(SchedTag::Reap { job }) => job,
            _ => continue,
        };
        let made =
            matches!(&op.result, Some(Reply::Kv(KvReply::Bulk(s))) if s.starts_with("bound "));
        if let (true, Some(at), Some(t)) = (made, op.applied_at, first.get(job.as_str()))
            && bound.insert(job.as_str())
        {
            out.push(at.saturating_since(*t).as_ms());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_core::{OpId, Tag};

    #[test]
    fn the_run_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let opts = SchedulerOptions::new(
            Variant::Correct,
            1,
            1,
            1,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        send(&check_scheduler(opts, |_, _| {}));
    }

    #[test]
    fn the_timing_is_the_documents_scaled_down() {
        let c = real_config(Variant::Correct);
        assert_eq!((c.heartbeat.as_ms(), c.node_ttl.as_ms()), (50, 200));
        assert!(c.fenced);
        assert_eq!(real_t_dead().as_ms(), 300);
        assert_eq!(pause_for(&c).as_millis(), 600);
        assert!(node_down().as_millis() > u128::from(real_t_dead().as_ms()));
    }

    #[test]
    fn the_plan_deals_every_job_once_over_the_window() {
        let opts = SchedulerOptions::new(
            Variant::Correct,
            3,
            20,
            10_000,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        let (lists, window) = plan(&opts);
        assert_eq!(window.as_ms(), 30_000);
        let ids: BTreeSet<&str> = lists.iter().flatten().map(|(j, _)| j.as_str()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(lists.iter().all(|l| l.len() >= 3_333));
    }

    #[test]
    fn bad_options_are_refused() {
        let mut opts = SchedulerOptions::new(
            Variant::Correct,
            0,
            20,
            10,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        assert!(matches!(
            validate(&opts),
            Err(AdapterError::InvalidInput(_))
        ));
        opts.schedulers = 3;
        opts.faults = FaultOptions::every_kind(1);
        let err = validate(&opts).err().map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("cannot inject")),
            "worker kinds refused"
        );
        opts.faults = FaultOptions::scheduler(1, false);
        let err = validate(&opts).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("Spawn")));
        opts.faults = FaultOptions::scheduler(1, true);
        assert!(validate(&opts).is_ok());
    }

    fn op(tag: SchedTag, at: u64, result: Option<Reply>) -> racelab_core::OpRecord {
        racelab_core::OpRecord {
            process: ProcessId(1),
            id: OpId(at),
            tag: Tag::new(tag),
            op: StoreOp::Kv(racelab_core::KvOp::Get { key: "k".into() }),
            invoked_at: Timestamp::from_ms(at),
            applied_at: result.as_ref().map(|_| Timestamp::from_ms(at + 1)),
            durable_at: None,
            lost_at: None,
            result,
            completed_at: Some(Timestamp::from_ms(at + 1)),
            timed_out: false,
        }
    }

    fn bulk(s: &str) -> Option<Reply> {
        Some(Reply::Kv(KvReply::Bulk(s.into())))
    }

    #[test]
    fn a_lost_binding_is_recovered_from_the_reap_that_shows_it_and_only_then() {
        let job = || "j1".to_string();
        let mut h = History::default();
        h.ops.push(op(
            SchedTag::Register { node: "N1".into() },
            0,
            Some(Reply::Kv(KvReply::Int(1))),
        ));
        h.ops.push(op(SchedTag::Dispatch { job: job() }, 10, None));
        h.ops
            .push(op(SchedTag::Reap { job: job() }, 20, bulk("running N1 1")));
        h.ops.push(op(
            SchedTag::Complete {
                job: job(),
                node: "N1".into(),
                epoch: 1,
            },
            30,
            Some(Reply::Kv(KvReply::Int(1))),
        ));
        // Without the recovery the accepted result looks unbound: F1 would blame it.
        assert!(!fenced_results(&h).holds());
        assert_eq!(recover_unknown(&mut h), 1);
        assert_eq!(h.ops[1].result, bulk("bound N1 1 0"));
        assert!(fenced_results(&h).holds());
        // A result from an epoch no binding (kept or lost) made is still caught.
        h.ops.push(op(
            SchedTag::Complete {
                job: job(),
                node: "N1".into(),
                epoch: 7,
            },
            40,
            Some(Reply::Kv(KvReply::Int(1))),
        ));
        assert_eq!(recover_unknown(&mut h), 0);
        let v = fenced_results(&h);
        assert!(v.violations.iter().any(|v| v.invariant == "F1"), "{v:?}");
        assert!(!one_outcome(&h).holds());
    }

    #[test]
    fn nothing_is_recovered_across_a_redis_restart() {
        let mut h = History::default();
        h.ops
            .push(op(SchedTag::Dispatch { job: "j1".into() }, 10, None));
        h.faults.push(racelab_core::FaultRecord {
            at: Timestamp::from_ms(15),
            fault: Fault::RedisRestart,
        });
        h.ops.push(op(
            SchedTag::Reap { job: "j1".into() },
            20,
            bulk("running N1 1"),
        ));
        assert_eq!(recover_unknown(&mut h), 0);
        assert_eq!(h.ops[0].result, None);
    }
}
