//! The real-server check of document 002 (R-002-01 .. R-002-05), Jepsen style: many workers,
//! each with its own connections, process thousands of scans (with duplicate submissions and
//! retries) through the Redis queue into PostgreSQL while faults are injected; the recorded
//! history is judged by the core's oracles, and the database is checked directly.
//!
//! The run, step by step:
//!
//! 1. Set-up: a schema of its own in PostgreSQL with the work orders seeded (`qty_0`), a key
//!    prefix of its own in Redis, and (when asked) our own `redis-server` that can be
//!    restarted and a [`FaultProxy`] in front of Redis and PostgreSQL for the workers.
//! 2. Terminals (core [`Terminal`] machines) submit every scan, some of them twice, with the
//!    scan id as the dedup id (`Correct`) or without (`Buggy`), and resubmit when an answer is
//!    lost. Workers (core [`Worker`] machines) consume the queue. Everything runs through
//!    [`drive`] and is recorded by a [`Recorder`].
//! 3. Faults, each kind at least N times at points of progress (effects acknowledged) that
//!    the [`FaultPlan`] draws from the run's seed, so that a fast run gets them all: latency
//!    spikes, stalled connections (longer than the queue's lock, so jobs are redelivered
//!    while their first worker still runs), cut connections, workers killed at random points
//!    and right after acquiring a lease (before the effect), and Redis restarted without
//!    persistence (every queued job is lost). A run that could not inject a planned fault is
//!    an error.
//! 4. The producer re-submits what a restart lost: scans it has not seen applied (the
//!    `applied_scans` table for `Correct`; acknowledged effects for `Buggy`, which keeps no
//!    record) are enqueued again with the same scan id, which the `Correct` protocol makes
//!    idempotent. At the end every scan gets at least one acknowledged submission (the
//!    oracle counts accepted submissions), then the run waits for the queue to drain.
//! 5. Verdict: [`exactly_once`] (I-WO) over the history and the final quantities, plus a
//!    direct check of the database: for `Correct`, one `applied_scans` row per distinct scan
//!    with its quantity, and `qty == qty_0 + Σ applied_scans.qty` for every work order.
//!
//! Why not [`racelab_core::oracle::fenced_effects`] (I-MX): it orders lease acquisitions and
//! effects by the time the store applied them. A real client only sees when it sent an
//! operation and when the answer came back; the store applied it somewhere in between, so
//! comparing two operations of different clients by client-side timestamps can invent an
//! overlap that did not happen or miss one that did. For the `Correct` protocol mutual
//! exclusion is not what safety rests on (the fence and the unique record are checked by
//! the store itself), and any double effect shows up in I-WO and in the database check, so
//! the real-server check judges with those; the simulators, which know the apply times,
//! judge I-MX.

use racelab_core::workorder::{APPLIED_SCANS, WORK_ORDERS};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use racelab_core::workorder::{
    DocFixPlans, PlannedScan, ScanJob, Terminal, WoEnd, WoTag, Worker, WorkerConfig, exactly_once,
};
use racelab_core::{
    Cond, Duration, Fault, History, OpId, Outgoing, ProcessId, Quantity, QueueOp, QueueReply,
    Reply, Row, SCAN_QUANTITY_MAX, ScanId, SqlOp, SqlReply, SqlStmt, StoreOp, Tag, Timestamp,
    Value, Variant, Violation, WorkOrderId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::AdapterError;
use crate::driver::{Clock, Completion, Control, DriveEnd, DriverConfig, Observer, Stores, drive};
use crate::fault_plan::{FaultCounts, FaultKind, FaultOptions, FaultPlan};
use crate::postgres::PgSql;
use crate::queue::RedisQueue;
use crate::recorder::Recorder;
use crate::redis_kv::RedisKv;
use crate::run_env::{ConnectionFaults, Injector, RunEnv};

/// Where the run's Redis comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// A server at this URL, shared with others: the run uses a key prefix of its own and
    /// cannot restart it.
    Url(String),
    /// Our own server, started from this binary (`redis-server`) on a free loopback port
    /// without persistence, which the run may restart.
    Spawn {
        /// The `redis-server` binary.
        binary: String,
    },
}

/// The parameters of [`check_real`]. [`CheckRealOptions::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRealOptions {
    /// Document 002's protocol to run: `Correct` (the shipped one) or `Buggy`.
    pub variant: Variant,
    /// How many workers, each with its own connections (1..=512).
    pub workers: u16,
    /// How many distinct scans (requests) to process (1..=1,000,000).
    pub scans: u64,
    /// How many work orders the scans spread over (1..=100,000).
    pub work_orders: u64,
    /// The share of scans the terminal submits twice, in percent (0..=100).
    pub duplicate_percent: u8,
    /// The largest quantity of one scan (1..=`SCAN_QUANTITY_MAX`).
    pub qty_max: i64,
    /// The Redis to use.
    pub redis: RedisTarget,
    /// The PostgreSQL URL (`postgres://...`).
    pub pg_url: String,
    /// The faults to inject.
    pub faults: FaultOptions,
    /// The seed of every random choice of the run (plan and faults; the servers' timing is
    /// not under our control, so a run is not replayable bit for bit).
    pub seed: u64,
    /// The run gives up (and reports non-quiescence) after this long.
    pub time_limit: std::time::Duration,
    /// The queue's job lock (Bull's `lockDuration`).
    pub queue_lock: Duration,
    /// The lease TTL of the workers.
    pub lease_ttl: Duration,
    /// Keep the schema and keys afterwards (for inspection).
    pub keep_data: bool,
}

impl CheckRealOptions {
    /// A run of `variant` with `workers` workers and `scans` scans against `redis` and
    /// `pg_url`: 64 work orders, 10 % duplicates, no faults, a 2 minute limit.
    pub fn new(
        variant: Variant,
        workers: u16,
        scans: u64,
        redis: RedisTarget,
        pg_url: &str,
    ) -> CheckRealOptions {
        CheckRealOptions {
            variant,
            workers,
            scans,
            work_orders: 64,
            duplicate_percent: 10,
            qty_max: 100,
            redis,
            pg_url: pg_url.to_string(),
            faults: FaultOptions::none(),
            seed: 1,
            time_limit: std::time::Duration::from_secs(120),
            queue_lock: Duration::from_ms(1_500),
            lease_ttl: Duration::from_ms(2_000),
            keep_data: false,
        }
    }
}

/// What a real-server run found. Serialisable for the CLI's JSON output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckRealReport {
    /// `correct` or `buggy`.
    pub variant: String,
    /// The run's seed.
    pub seed: u64,
    /// Workers.
    pub workers: u16,
    /// Distinct scans (requests) planned.
    pub requests: u64,
    /// Scans the terminals submit a second time on purpose (a double press).
    pub duplicates_planned: u64,
    /// Submissions sent (duplicates, retries and re-submissions included).
    pub submissions: u64,
    /// Faults injected, per kind.
    pub faults_injected: FaultCounts,
    /// Every broken invariant, explained (empty when the run is correct).
    pub violations: Vec<Violation>,
    /// Scans whose effect was acknowledged more than once.
    pub double_applied_scans: u64,
    /// Whether the run drained its queue before the time limit.
    pub quiescent: bool,
    /// Median store-operation latency (ms, client side; idle polls left out).
    pub p50_ms: u64,
    /// 99th percentile store-operation latency (ms).
    pub p99_ms: u64,
    /// Store operations recorded.
    pub operations: u64,
    /// Operations whose answer never came (timeouts, cut connections).
    pub unknown_outcomes: u64,
    /// Deliveries of a job that had been delivered before (after a stall or a nack).
    pub redeliveries: u64,
    /// Acks and lock extensions refused because the job's lock had expired (its job stalled
    /// and was delivered again).
    pub lock_lost: u64,
    /// Wall-clock duration of the run (ms).
    pub duration_ms: u64,
    /// Distinct scans applied per second.
    pub scans_per_second: f64,
}

impl CheckRealReport {
    /// Whether every invariant held.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Limits on the options.
const WORKERS_MAX: u16 = 512;
const SCANS_MAX: u64 = 1_000_000;
const WORK_ORDERS_MAX: u64 = 100_000;
/// How many terminals submit the plan.
const TERMINALS: u16 = 4;
/// The process id of the producer's re-submissions.
const PRODUCER: ProcessId = ProcessId(99);
/// After this long without a newly applied scan, the producer re-submits what is pending.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(6);
/// How often the run looks at its fault plan.
const FAULT_TICK: std::time::Duration = std::time::Duration::from_millis(20);
/// How long a latency spike lasts.
const SPIKE: std::time::Duration = std::time::Duration::from_millis(300);
/// How long the producer waits between two looks at the run.
const PRODUCER_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs document 002's protocol against real servers while injecting faults, and judges it.
///
/// Call it inside a tokio runtime with IO and time enabled (a multi-thread runtime lets the
/// workers use every core); the future is `Send`, so it may also be spawned. A typical CLI
/// call: `CheckRealOptions::new(Variant::Correct, 20, 10_000, RedisTarget::Spawn { binary:
/// "redis-server".into() }, &pg_url)` with `faults` set, then print the report as JSON.
///
/// `progress(applied, total)` is called a few times a second with the number of distinct
/// scans seen applied so far. The run leaves nothing behind (its schema and keys are dropped,
/// its own Redis stopped) unless `keep_data` is set. Errors are set-up failures (an
/// unreachable server, invalid options, a plan whose quantities would overflow); what the
/// run finds is in the report.
pub async fn check_real(
    opts: CheckRealOptions,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<CheckRealReport, AdapterError> {
    check_real_with_history(opts, progress)
        .await
        .map(|(report, _)| report)
}

/// [`check_real`], also returning the recorded history (for timelines and tests).
pub async fn check_real_with_history(
    opts: CheckRealOptions,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<(CheckRealReport, History), AdapterError> {
    validate(&opts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let label = opts.variant.as_str();
    let mut env = RunEnv::start(label, &mut rng, &opts.redis, &opts.pg_url, &opts.faults).await?;
    let admin_queue = RedisQueue::connect(&env.redis_url, &env.prefix, opts.queue_lock).await;
    let mut admin_queue = match admin_queue {
        Ok(q) => q,
        Err(e) => {
            env.finish(opts.keep_data).await;
            return Err(e);
        }
    };
    let admin_pg = &mut env.admin_pg;
    let result = async {
        // The work orders and the plan.
        admin_pg.reset().await?;
        let mut initial_qty = BTreeMap::new();
        for w in 1..=opts.work_orders {
            let wo = WorkOrderId(w);
            let qty0 = Quantity(rng.random_range(0..1_000));
            initial_qty.insert(wo, qty0);
            let row = Row::from([
                ("qty".to_string(), Value::Int(qty0.0)),
                ("lease_epoch".to_string(), Value::Int(0)),
                ("lease_owner".to_string(), Value::Text(String::new())),
                ("lease_until".to_string(), Value::Int(0)),
            ]);
            let insert = SqlStmt::Insert {
                table: WORK_ORDERS,
                key: wo.to_string(),
                row,
            };
            match admin_pg.execute_sql(&SqlOp::exec(insert)).await? {
                SqlReply::Affected(1) => {}
                other => {
                    return Err(AdapterError::Protocol {
                        what: "PostgreSQL",
                        message: format!("seeding {wo} answered {other}"),
                    });
                }
            }
        }
        let plan = plan(&opts, &mut rng, &initial_qty)?;
        let state = Run::new(
            &opts,
            plan,
            initial_qty,
            &env.schema,
            &env.prefix,
            &env.worker_redis,
            &env.worker_pg,
        );
        let outcome = state
            .execute(
                &opts,
                &mut rng,
                admin_pg,
                &mut admin_queue,
                &mut env.injector,
                &mut progress,
            )
            .await;
        Ok(outcome)
    }
    .await;

    env.finish(opts.keep_data).await;
    result?
}

fn validate(opts: &CheckRealOptions) -> Result<(), AdapterError> {
    let bad = |m: String| Err(AdapterError::InvalidInput(m));
    if opts.workers == 0 || opts.workers > WORKERS_MAX {
        return bad(format!(
            "workers must be 1..={WORKERS_MAX}, not {}",
            opts.workers
        ));
    }
    if opts.scans == 0 || opts.scans > SCANS_MAX {
        return bad(format!("scans must be 1..={SCANS_MAX}, not {}", opts.scans));
    }
    if opts.work_orders == 0 || opts.work_orders > WORK_ORDERS_MAX {
        return bad(format!(
            "work orders must be 1..={WORK_ORDERS_MAX}, not {}",
            opts.work_orders
        ));
    }
    if opts.duplicate_percent > 100 {
        return bad(format!(
            "duplicate_percent must be 0..=100, not {}",
            opts.duplicate_percent
        ));
    }
    if !(1..=SCAN_QUANTITY_MAX.0).contains(&opts.qty_max) {
        return Err(AdapterError::AmountOutOfRange {
            what: "qty_max".into(),
            value: i128::from(opts.qty_max),
            max: SCAN_QUANTITY_MAX.0,
        });
    }
    opts.faults
        .refuse_unsupported(
            "work-order",
            &FaultKind::WORKERS,
            matches!(opts.redis, RedisTarget::Url(_)),
        )
        .or_else(bad)?;
    if opts.queue_lock.as_ms() < 100 || opts.lease_ttl.as_ms() < 100 {
        return bad("the queue lock and the lease TTL must be at least 100 ms".into());
    }
    Ok(())
}

/// The scans, and the terminals' submissions of them.
struct Plan {
    scans: BTreeMap<ScanId, ScanJob>,
    terminals: Vec<Vec<PlannedScan>>,
    duplicates: u64,
}

fn plan(
    opts: &CheckRealOptions,
    rng: &mut ChaCha8Rng,
    initial_qty: &BTreeMap<WorkOrderId, Quantity>,
) -> Result<Plan, AdapterError> {
    let mut scans = BTreeMap::new();
    let mut totals: BTreeMap<WorkOrderId, Quantity> = initial_qty.clone();
    for s in 1..=opts.scans {
        let work_order = WorkOrderId(rng.random_range(1..=opts.work_orders));
        let qty = Quantity(rng.random_range(1..=opts.qty_max));
        let total = totals.entry(work_order).or_default();
        *total = total
            .checked_add(qty)
            .ok_or_else(|| AdapterError::AmountOutOfRange {
                what: format!("the final quantity of {work_order}"),
                value: i128::from(total.0) + i128::from(qty.0),
                max: i64::MAX,
            })?;
        let job = ScanJob {
            scan: ScanId(s),
            work_order,
            qty,
            work: Duration::from_ms(rng.random_range(0..=2)),
            request_id: String::new(),
        };
        scans.insert(ScanId(s), job);
    }
    let mut terminals: Vec<Vec<PlannedScan>> = vec![Vec::new(); usize::from(TERMINALS)];
    let mut duplicates = 0;
    // First submissions at once; duplicates later (after some were applied), from another
    // terminal, as a user pressing the button twice would.
    let spread_ms = (opts.scans / 2).max(1_000);
    let n = terminals.len();
    for (i, job) in scans.values().enumerate() {
        let t = i % n;
        terminals[t].push(PlannedScan {
            at: Timestamp::from_ms(1),
            job: job.clone(),
        });
        if rng.random_range(0..100u8) < opts.duplicate_percent {
            duplicates += 1;
            terminals[(t + 1) % n].push(PlannedScan {
                at: Timestamp::from_ms(rng.random_range(1..=spread_ms)),
                job: job.clone(),
            });
        }
    }
    Ok(Plan {
        scans,
        terminals,
        duplicates,
    })
}

/// Shared state of one run.
struct Run {
    variant: Variant,
    plan: Plan,
    initial_qty: BTreeMap<WorkOrderId, Quantity>,
    schema: String,
    prefix: String,
    redis_url: String,
    pg_url: String,
    recorder: Recorder,
    clock: Clock,
    /// Set when the run ends: every worker stops.
    stopping: AtomicBool,
    /// Turns true when the run ends: the terminals stop.
    stop_terminals: watch::Sender<bool>,
    /// The kill switch of each worker slot's current incarnation.
    switches: Vec<Mutex<Option<watch::Sender<bool>>>>,
    /// Kills armed to strike right after the next lease acquisition (planned faults).
    kills_after_lease_left: AtomicU32,
    /// Effects acknowledged so far (the fault plan's measure of progress).
    effects_acked: AtomicU64,
    faults: Mutex<FaultCounts>,
    /// Bumped by every Redis restart.
    redis_epoch: AtomicU64,
    terminals_done: AtomicU32,
    driver: DriverConfig,
    worker_config: WorkerConfig,
    queue_lock: Duration,
}

impl Run {
    fn new(
        opts: &CheckRealOptions,
        plan: Plan,
        initial_qty: BTreeMap<WorkOrderId, Quantity>,
        schema: &str,
        prefix: &str,
        redis_url: &str,
        pg_url: &str,
    ) -> Arc<Run> {
        let mut worker_config = WorkerConfig::new(
            opts.variant,
            DocFixPlans {
                plan1: false,
                plan2: None,
            },
        );
        let lease_ms = opts.lease_ttl.as_ms();
        worker_config.lock_ttl = opts.lease_ttl;
        worker_config.renew_every_buggy = Duration::from_ms(lease_ms * 2 / 5);
        worker_config.renew_every_docfix = Duration::from_ms(lease_ms / 4);
        worker_config.lock_retry = Duration::from_ms(25);
        worker_config.lock_attempts_max =
            u32::try_from(lease_ms * 2 / 25).unwrap_or(u32::MAX).max(10);
        worker_config.poll_interval = Duration::from_ms(20);
        worker_config.job_lock_renew_every = Duration::from_ms(opts.queue_lock.as_ms() / 2);
        Arc::new(Run {
            variant: opts.variant,
            plan,
            initial_qty,
            schema: schema.to_string(),
            prefix: prefix.to_string(),
            redis_url: redis_url.to_string(),
            pg_url: pg_url.to_string(),
            recorder: Recorder::new(),
            clock: Clock::start_now(),
            stopping: AtomicBool::new(false),
            stop_terminals: watch::Sender::new(false),
            switches: (0..opts.workers).map(|_| Mutex::new(None)).collect(),
            kills_after_lease_left: AtomicU32::new(0),
            effects_acked: AtomicU64::new(0),
            faults: Mutex::new(FaultCounts::default()),
            redis_epoch: AtomicU64::new(0),
            terminals_done: AtomicU32::new(0),
            driver: DriverConfig {
                redis_timeout: std::time::Duration::from_secs(2),
                sql_timeout: std::time::Duration::from_secs(4),
                ..DriverConfig::default()
            },
            worker_config,
            queue_lock: opts.queue_lock,
        })
    }

    fn count(&self, kind: FaultKind) {
        self.count_with(|c| c.add(kind));
    }

    fn count_with(&self, f: impl FnOnce(&mut FaultCounts)) {
        if let Ok(mut c) = self.faults.lock() {
            f(&mut c);
        }
    }

    fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_terminals.send_replace(true);
        for s in &self.switches {
            if let Ok(s) = s.lock()
                && let Some(tx) = s.as_ref()
            {
                tx.send_replace(true);
            }
        }
    }

    fn stores(&self, with_kv: bool) -> Result<Stores, AdapterError> {
        Ok(Stores {
            kv: if with_kv {
                Some(RedisKv::lazy(&self.redis_url, &self.prefix)?)
            } else {
                None
            },
            queue: Some(RedisQueue::lazy(
                &self.redis_url,
                &self.prefix,
                self.queue_lock,
            )?),
            sql: Some(PgSql::lazy(&self.pg_url, &self.schema)?),
            // Document 002's machines never draw nor subscribe.
            pubsub: None,
            random: None,
        })
    }

    /// One worker slot: incarnations of a worker until the run stops.
    async fn worker_slot(self: Arc<Run>, slot: usize) -> Result<(), AdapterError> {
        let process = ProcessId(100 + u16::try_from(slot).unwrap_or(u16::MAX - 100));
        let name = format!("W{slot}");
        self.recorder.name(process, &name);
        let mut incarnation = 0u32;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (tx, mut rx) = watch::channel(false);
            if let Ok(mut s) = self.switches[slot].lock() {
                *s = Some(tx);
            }
            if self.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut stores = self.stores(self.variant != Variant::Correct)?;
            let mut machine = Worker::new(self.worker_config.clone(), &name, incarnation);
            let run = self.clone();
            let crash = move |op: &Outgoing, completion: &Completion| {
                let succeeded = matches!(completion, Completion::Reply(r) if r.is_success());
                if succeeded && op.tag.kind() == WoTag::EFFECT {
                    run.effects_acked.fetch_add(1, Ordering::SeqCst);
                }
                let acquired = op.tag.kind() == WoTag::ACQUIRE_LEASE && succeeded;
                if acquired
                    && run
                        .kills_after_lease_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    run.count(FaultKind::KillAfterClaim);
                    return Control::Crash;
                }
                Control::Continue
            };
            let mut observer = self.recorder.process(process, crash);
            let end = drive(
                &mut machine,
                &mut stores,
                &self.driver,
                self.clock,
                &mut rx,
                &mut observer,
            )
            .await;
            // Dropping the clients closes the connections: an open transaction rolls back.
            drop(stores);
            match end {
                DriveEnd::Stopped if self.stopping.load(Ordering::SeqCst) => return Ok(()),
                DriveEnd::Idle => return Ok(()),
                DriveEnd::Stopped | DriveEnd::Crashed => {
                    self.recorder
                        .fault(self.clock.now(), Fault::Crash { process });
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    incarnation += 1;
                    self.recorder
                        .fault(self.clock.now(), Fault::Restart { process });
                }
            }
        }
    }

    async fn terminal(self: Arc<Run>, t: usize) -> Result<(), AdapterError> {
        let process = ProcessId(1 + u16::try_from(t).unwrap_or(0));
        self.recorder.name(process, &format!("T{t}"));
        let mut machine = Terminal::new(self.variant, self.plan.terminals[t].clone());
        // Terminals go through the proxy too: a lost answer makes them resubmit.
        let mut stores = Stores {
            kv: None,
            queue: Some(RedisQueue::lazy(
                &self.redis_url,
                &self.prefix,
                self.queue_lock,
            )?),
            sql: None,
            pubsub: None,
            random: None,
        };
        let mut rx = self.stop_terminals.subscribe();
        let mut observer = self
            .recorder
            .process(process, |_: &Outgoing, _: &Completion| Control::Continue);
        drive(
            &mut machine,
            &mut stores,
            &self.driver,
            self.clock,
            &mut rx,
            &mut observer,
        )
        .await;
        self.terminals_done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Scans seen applied: `applied_scans` rows (`Correct`) or acknowledged effects.
    async fn applied(&self, pg: &mut PgSql) -> Result<BTreeSet<ScanId>, AdapterError> {
        if self.variant == Variant::Correct {
            let all = SqlOp::exec(SqlStmt::scan(APPLIED_SCANS, Cond::True));
            return match pg.execute_sql(&all).await? {
                SqlReply::Rows(rows) => Ok(rows
                    .iter()
                    .filter_map(|r| r.key.strip_prefix("s-")?.parse().ok().map(ScanId))
                    .collect()),
                other => Err(AdapterError::Protocol {
                    what: "PostgreSQL",
                    message: format!("reading applied_scans answered {other}"),
                }),
            };
        }
        Ok(self
            .recorder
            .with_history(|h| {
                h.ops
                    .iter()
                    .filter_map(|op| match WoTag::of(&op.tag) {
                        Some(&WoTag::Effect { scan, .. }) if op.succeeded() => Some(scan),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The producer's own submission of a scan, recorded like a terminal's.
    async fn submit(
        &self,
        queue: &mut RedisQueue,
        observer: &mut (dyn Observer + Send),
        next: &mut u64,
        scan: &ScanJob,
    ) -> Option<Reply> {
        *next += 1;
        let dedup = (self.variant == Variant::Correct).then(|| scan.scan.to_string());
        let out = Outgoing {
            id: OpId(*next),
            op: StoreOp::Queue(QueueOp::Enqueue {
                dedup,
                fields: scan.to_fields(),
            }),
            tag: Tag::new(WoTag::Submit {
                scan: scan.scan,
                work_order: scan.work_order,
                qty: scan.qty,
            }),
        };
        observer.invoked(self.clock.now(), &out);
        let StoreOp::Queue(op) = &out.op else {
            return None;
        };
        let completion =
            match tokio::time::timeout(self.driver.redis_timeout, queue.execute_queue(op)).await {
                Ok(Ok(reply)) => Completion::Reply(Reply::Queue(reply)),
                Ok(Err(e)) => Completion::Failed {
                    sent: !matches!(e, AdapterError::Unreachable { .. }),
                    message: e.to_string(),
                },
                Err(_) => Completion::TimedOut,
            };
        observer.completed(self.clock.now(), &out, &completion);
        match completion {
            Completion::Reply(r) => Some(r),
            _ => None,
        }
    }

    /// Scans with an acknowledged submission.
    fn accepted(&self) -> BTreeSet<ScanId> {
        self.recorder
            .with_history(|h| {
                h.ops
                    .iter()
                    .filter_map(|op| match WoTag::of(&op.tag) {
                        Some(&WoTag::Submit { scan, .. })
                            if matches!(
                                op.result,
                                Some(Reply::Queue(
                                    QueueReply::Enqueued { .. } | QueueReply::Duplicate { .. }
                                ))
                            ) =>
                        {
                            Some(scan)
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Carries out one planned fault; false when it cannot be done now (the plan tries again
    /// at the next look).
    async fn inject(
        &self,
        kind: FaultKind,
        rng: &mut ChaCha8Rng,
        injector: &mut Injector,
    ) -> Result<bool, AdapterError> {
        match kind {
            // The scheduler's kinds: `validate` refuses them.
            FaultKind::SchedulerKill | FaultKind::NodeKill | FaultKind::NodePause => {
                return Ok(false);
            }
            FaultKind::RedisRestart => {
                if !injector.restart_redis().await? {
                    return Ok(false);
                }
                self.redis_epoch.fetch_add(1, Ordering::SeqCst);
                self.recorder.fault(self.clock.now(), Fault::RedisRestart);
            }
            FaultKind::WorkerKill => {
                let slot = rng.random_range(0..self.switches.len());
                let killed = self.switches[slot]
                    .lock()
                    .ok()
                    .and_then(|s| s.as_ref().map(|tx| tx.send_replace(true)))
                    .is_some();
                if !killed {
                    return Ok(false);
                }
            }
            FaultKind::KillAfterClaim => {
                // Armed here, counted when it strikes.
                self.kills_after_lease_left.fetch_add(1, Ordering::SeqCst);
                return Ok(true);
            }
            FaultKind::LatencySpike | FaultKind::StalledConnection | FaultKind::CutConnection => {
                let shape = ConnectionFaults {
                    spike: SPIKE,
                    stall_every: 4,
                    // Longer than the queue's lock: the stalled jobs are delivered again while
                    // their first worker still holds them.
                    stall_hold: std::time::Duration::from_millis(self.queue_lock.as_ms() + 800),
                    cut_every: 3,
                };
                let mut done = false;
                self.count_with(|c| done = injector.connection_fault(kind, rng, &shape, c));
                if !done {
                    return Ok(false);
                }
            }
        }
        self.count(kind);
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        self: Arc<Run>,
        opts: &CheckRealOptions,
        rng: &mut ChaCha8Rng,
        admin_pg: &mut PgSql,
        admin_queue: &mut RedisQueue,
        injector: &mut Injector,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<(CheckRealReport, History), AdapterError> {
        let started = std::time::Instant::now();
        let total = self.plan.scans.len() as u64;
        self.recorder.name(PRODUCER, "P");
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..usize::from(TERMINALS) {
            tasks.spawn(self.clone().terminal(t));
        }
        for slot in 0..self.switches.len() {
            tasks.spawn(self.clone().worker_slot(slot));
        }
        let mut producer = self
            .recorder
            .process(PRODUCER, |_: &Outgoing, _: &Completion| Control::Continue);
        let mut producer_ops = 0u64;
        let mut seen_epoch = 0u64;
        let mut drained_checks = 0u32;
        let mut injecting = true;
        let mut fault_plan = FaultPlan::new(&opts.faults, total, rng);
        let mut quiescent = false;
        let mut last_done = 0;
        let mut last_progress = std::time::Instant::now();
        loop {
            // Faults are planned on progress (effects acknowledged) and looked at every
            // FAULT_TICK, so that a fast run gets them all; the rest runs every
            // PRODUCER_TICK.
            let tick_end = std::time::Instant::now() + PRODUCER_TICK;
            while std::time::Instant::now() < tick_end {
                tokio::time::sleep(FAULT_TICK).await;
                injector.end_spike_if_due();
                if !injecting {
                    continue;
                }
                let progress = self.effects_acked.load(Ordering::SeqCst).min(total);
                while let Some(kind) = fault_plan.due(progress) {
                    let carried_out = self.inject(kind, rng, injector).await?;
                    if !carried_out {
                        fault_plan.postpone();
                        break;
                    }
                }
            }
            if started.elapsed() > opts.time_limit {
                break;
            }
            // Progress and re-submission.
            let applied = match self.applied(admin_pg).await {
                Ok(a) => a,
                Err(_) => continue,
            };
            let done = applied.len() as u64;
            progress(done.min(total), total);
            let status = admin_queue.status().await.ok();
            let drained = status.is_some_and(|s| s.waiting == 0 && s.active == 0);
            let terminals_done = self.terminals_done.load(Ordering::SeqCst) == u32::from(TERMINALS);
            let epoch = self.redis_epoch.load(Ordering::SeqCst);
            let pending: Vec<ScanJob> = self
                .plan
                .scans
                .values()
                .filter(|s| !applied.contains(&s.scan))
                .cloned()
                .collect();
            if done > last_done {
                last_done = done;
                last_progress = std::time::Instant::now();
            }
            // Re-submit what a restart lost, what nobody holds any more, and (as a safety net
            // against a job lost in any other way) what made no progress for a while; the
            // dedup id and the unique record make every re-submission harmless.
            let stuck = last_progress.elapsed() > STUCK_AFTER;
            if (epoch != seen_epoch || (terminals_done && drained) || stuck) && !pending.is_empty()
            {
                last_progress = std::time::Instant::now();
                seen_epoch = epoch;
                for scan in &pending {
                    self.submit(admin_queue, &mut producer, &mut producer_ops, scan)
                        .await;
                }
                drained_checks = 0;
                continue;
            }
            if pending.is_empty() {
                // Every scan is applied, so a Redis restart can only have lost jobs whose
                // effect is in already: there is nothing to re-submit for it. (A restart at
                // or after the last scan, which a tiny run reaches within moments, used to
                // leave `seen_epoch` behind for good: the run waited for a re-submission that
                // nothing was left to make, until its time limit.)
                seen_epoch = epoch;
            }
            if pending.is_empty() && terminals_done {
                // Everything applied: stop injecting, heal the network, make sure every scan
                // has an acknowledged submission, then wait for the queue to drain.
                if injecting {
                    injecting = false;
                    self.kills_after_lease_left.store(0, Ordering::SeqCst);
                    injector.heal();
                }
                let accepted = self.accepted();
                let unacknowledged: Vec<ScanJob> = self
                    .plan
                    .scans
                    .values()
                    .filter(|s| !accepted.contains(&s.scan))
                    .cloned()
                    .collect();
                if !unacknowledged.is_empty() {
                    for scan in &unacknowledged {
                        self.submit(admin_queue, &mut producer, &mut producer_ops, scan)
                            .await;
                    }
                    drained_checks = 0;
                    continue;
                }
                if drained && epoch == seen_epoch {
                    drained_checks += 1;
                    if drained_checks >= 3 {
                        quiescent = true;
                        break;
                    }
                } else {
                    drained_checks = 0;
                }
            }
        }
        self.stop_all();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                return Err(e);
            }
        }
        let duration = started.elapsed();
        injector.heal();
        if quiescent {
            let injected = self.faults.lock().map(|f| *f).unwrap_or_default();
            fault_plan.verify(&injected)?;
        }
        self.judge(opts, admin_pg, quiescent, duration).await
    }

    async fn judge(
        &self,
        opts: &CheckRealOptions,
        pg: &mut PgSql,
        quiescent: bool,
        duration: std::time::Duration,
    ) -> Result<(CheckRealReport, History), AdapterError> {
        let history = self.recorder.history();
        let read = |table| SqlOp::exec(SqlStmt::scan(table, Cond::True));
        let rows = |r: SqlReply, what: &str| match r {
            SqlReply::Rows(rows) => Ok(rows),
            other => Err(AdapterError::Protocol {
                what: "PostgreSQL",
                message: format!("reading {what} answered {other}"),
            }),
        };
        let work_orders = rows(pg.execute_sql(&read(WORK_ORDERS)).await?, "work_orders")?;
        let applied_rows = rows(pg.execute_sql(&read(APPLIED_SCANS)).await?, "applied_scans")?;
        let final_qty: BTreeMap<WorkOrderId, Quantity> = work_orders
            .iter()
            .filter_map(|r| {
                let id = r.key.strip_prefix("wo-")?.parse().ok()?;
                Some((WorkOrderId(id), Quantity(r.int("qty")?)))
            })
            .collect();
        let state = WoEnd {
            initial_qty: self.initial_qty.clone(),
            final_qty: final_qty.clone(),
            quiescent,
        };
        let mut violations = exactly_once(&history, &state).violations;
        if !quiescent {
            // A real run that did not settle is a liveness failure of its own.
            violations.push(Violation {
                invariant: "stuck".into(),
                explanation: "the run did not settle: scans were still queued or in flight \
                              when its time ran out"
                    .into(),
                ops: Vec::new(),
            });
        }
        if self.variant == Variant::Correct {
            violations.extend(self.check_database(&applied_rows, &final_qty));
        }
        let mut effects: BTreeMap<ScanId, u32> = BTreeMap::new();
        for op in &history.ops {
            if let Some(&WoTag::Effect { scan, .. }) = WoTag::of(&op.tag)
                && op.accepted()
            {
                *effects.entry(scan).or_default() += 1;
            }
        }
        let double_applied_scans = effects.values().filter(|n| **n > 1).count() as u64;
        let mut latencies = self.recorder.latencies_ms();
        latencies.sort_unstable();
        let pct = |p: usize| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            latencies[(latencies.len() * p / 100).min(latencies.len() - 1)]
        };
        let submissions = history
            .ops
            .iter()
            .filter(|op| op.tag.kind() == WoTag::SUBMIT)
            .count() as u64;
        let unknown_outcomes = history.ops.iter().filter(|op| op.result.is_none()).count() as u64;
        let redeliveries = history
            .ops
            .iter()
            .filter(|op| {
                matches!(&op.result, Some(Reply::Queue(QueueReply::Delivered(Some(d)))) if d.attempt > 1)
            })
            .count() as u64;
        let lock_lost = history
            .ops
            .iter()
            .filter(|op| matches!(op.result, Some(Reply::Queue(QueueReply::LockLost))))
            .count() as u64;
        let faults = self.faults.lock().map(|f| *f).unwrap_or_default();
        let report = CheckRealReport {
            variant: opts.variant.as_str().to_string(),
            seed: opts.seed,
            workers: opts.workers,
            requests: self.plan.scans.len() as u64,
            duplicates_planned: self.plan.duplicates,
            submissions,
            faults_injected: faults,
            violations,
            double_applied_scans,
            quiescent,
            p50_ms: pct(50),
            p99_ms: pct(99),
            operations: history.ops.len() as u64,
            unknown_outcomes,
            redeliveries,
            lock_lost,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            scans_per_second: self.plan.scans.len() as f64 / duration.as_secs_f64().max(0.001),
        };
        Ok((report, history))
    }

    /// The database itself: one `applied_scans` row per distinct scan, with its work order and
    /// quantity, and every work order's `qty == qty_0 + Σ applied_scans.qty`.
    fn check_database(
        &self,
        applied_rows: &[racelab_core::KeyedRow],
        final_qty: &BTreeMap<WorkOrderId, Quantity>,
    ) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for row in applied_rows {
            let scan = row
                .key
                .strip_prefix("s-")
                .and_then(|s| s.parse().ok())
                .map(ScanId);
            let planned = scan.and_then(|s| self.plan.scans.get(&s));
            let wo = match row.columns.get("work_order") {
                Some(Value::Text(t)) => t.clone(),
                _ => String::new(),
            };
            match planned {
                Some(job)
                    if job.work_order.to_string() == wo && Some(job.qty.0) == row.int("qty") =>
                {
                    seen.insert(job.scan);
                }
                _ => violations.push(Violation {
                    invariant: "I-WO (database)".into(),
                    explanation: format!(
                        "applied_scans row {} ({wo}, qty {:?}) matches no planned scan",
                        row.key,
                        row.int("qty")
                    ),
                    ops: Vec::new(),
                }),
            }
            *sums.entry(wo).or_default() += row.int("qty").unwrap_or(0);
        }
        let missing = self.plan.scans.len() - seen.len();
        if missing > 0 {
            violations.push(Violation {
                invariant: "I-WO (database)".into(),
                explanation: format!("{missing} planned scans have no applied_scans row"),
                ops: Vec::new(),
            });
        }
        for (wo, qty0) in &self.initial_qty {
            let logged = sums.get(&wo.to_string()).copied().unwrap_or(0);
            let actual = final_qty.get(wo).copied().unwrap_or_default();
            if qty0.0.checked_add(logged) != Some(actual.0) {
                violations.push(Violation {
                    invariant: "I-WO (database)".into(),
                    explanation: format!(
                        "{wo}: qty is {actual} but qty_0 {qty0} + Σ applied_scans.qty {logged} = {}",
                        qty0.0.saturating_add(logged)
                    ),
                    ops: Vec::new(),
                });
            }
        }
        violations
    }
}

/// The `host:port` part of a URL: its byte range (after any `user@`) and its value.
fn authority(url: &str) -> Result<(usize, usize), AdapterError> {
    let bad = || AdapterError::InvalidInput(format!("cannot find host:port in URL {url:?}"));
    let start = url.find("://").ok_or_else(bad)? + 3;
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    if host_start >= end || url[host_start..end].starts_with('[') {
        return Err(bad());
    }
    Ok((host_start, end))
}

/// `url` with its `host:port` replaced.
pub(crate) fn with_authority(url: &str, host_port: &str) -> Result<String, AdapterError> {
    let (start, end) = authority(url)?;
    Ok(format!("{}{host_port}{}", &url[..start], &url[end..]))
}

/// The address a URL points to (`default_port` when it names none).
pub(crate) async fn target_of(
    url: &str,
    default_port: u16,
) -> Result<std::net::SocketAddr, AdapterError> {
    let (start, end) = authority(url)?;
    let hp = &url[start..end];
    let hp = if hp.contains(':') {
        hp.to_string()
    } else {
        format!("{hp}:{default_port}")
    };
    tokio::net::lookup_host(&hp)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| AdapterError::InvalidInput(format!("cannot resolve {hp} (from {url:?})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_can_run_on_any_runtime_thread() {
        fn send<T: Send>(_: &T) {}
        let opts = CheckRealOptions::new(
            Variant::Correct,
            1,
            1,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        // Never polled: this only proves the future is `Send` (so a CLI may spawn it).
        let fut = check_real(opts, |_, _| {});
        send(&fut);
    }

    #[test]
    fn urls_get_the_proxy_as_their_authority() {
        assert_eq!(
            with_authority("postgres://postgres@127.0.0.1:5432/test", "127.0.0.1:9").ok(),
            Some("postgres://postgres@127.0.0.1:9/test".to_string())
        );
        assert_eq!(
            with_authority("redis://127.0.0.1:6379", "127.0.0.1:9").ok(),
            Some("redis://127.0.0.1:9".to_string())
        );
        assert_eq!(
            with_authority("redis://:p%40ss@localhost/0?x=1", "127.0.0.1:9").ok(),
            Some("redis://:p%40ss@127.0.0.1:9/0?x=1".to_string())
        );
        assert!(with_authority("host=localhost user=postgres", "127.0.0.1:9").is_err());
    }

    #[test]
    fn a_plan_whose_quantities_would_overflow_is_rejected() {
        let mut opts = CheckRealOptions::new(
            Variant::Correct,
            1,
            3,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        opts.work_orders = 1;
        opts.qty_max = SCAN_QUANTITY_MAX.0;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let near_max = BTreeMap::from([(WorkOrderId(1), Quantity(i64::MAX - 10))]);
        let err = plan(&opts, &mut rng, &near_max).err();
        assert!(
            matches!(err, Some(AdapterError::AmountOutOfRange { .. })),
            "an overflowing total is refused before anything runs: {err:?}"
        );
        opts.qty_max = SCAN_QUANTITY_MAX.0 + 1;
        assert!(matches!(
            validate(&opts),
            Err(AdapterError::AmountOutOfRange { .. })
        ));
    }
}
