//! The real-server check of document 000's money protocols (R-000-03 idempotent billing,
//! R-000-01/14 streamed settlement with holds, R-000-02 two-phase quota reservation), Jepsen
//! style: many gateway workers, each with its own connections, serve thousands of requests
//! (duplicate keys, concurrent same-key retries, streams the client cancels) against real
//! PostgreSQL and Redis while faults planned on the run's progress are injected; the recorded
//! history and the committed rows are judged by the families' oracles from core.
//!
//! The run, step by step:
//!
//! 1. Set-up: a schema of its own in PostgreSQL (the accounts and the usage buckets seeded,
//!    every table of the two families created before the workers start), a key prefix of its
//!    own in Redis (the idempotency cache, or the document's markers), our own restartable
//!    `redis-server` when asked, a [`FaultProxy`] in front of Redis and PostgreSQL when a
//!    planned kind needs it, and the [`InProcessProvider`]: the one thing that is not real
//!    (there is no real LLM provider to call), the simulated worlds' upstream model served
//!    on the run's clock.
//! 2. The plan, from the seed: requests of three kinds in a shuffled queue. Idempotent
//!    billing ([`IdemGateway`], one client and the gateway serving its attempts), some keys
//!    submitted again later (a duplicate) and some twice at once (a concurrent same-key
//!    retry: two workers take them together); streamed completions ([`StreamGateway`]), one
//!    in four cancelled by its client at a random chunk; quota requests ([`Request`]) over a
//!    few API keys whose budgets are smaller than their demand, so admission must refuse.
//! 3. Workers (`--workers`) take requests from the queue one at a time and drive each
//!    request's machine with [`drive`] over their own connections (kept across requests, as
//!    a gateway instance keeps its pools; a killed worker's connections are dropped, which
//!    rolls back its open transaction, and the request's next incarnation runs on fresh
//!    ones: for idempotent billing the client's retry, for the others nothing, as in the
//!    catalog's worlds). In the `Correct` protocol the holds' [`Sweeper`] and the
//!    reservations' [`QuotaSweeper`] run beside them until the end.
//! 4. Faults ([`FaultPlan`]), each kind at least N times, at planned points of progress
//!    (requests finished): Redis restarts, busy workers killed, workers killed right after a
//!    claim (the idempotency claim or marker, a quota reservation, a stream's hold), latency
//!    spikes, connections stalled past the claim lease, connections cut. A run that could
//!    not inject a planned fault is an error, not a pass.
//! 5. The end: once every request has finished, the faults stop, the proxies heal, and (for
//!    `Correct`) the sweepers run until no hold or reservation is open and no hold is voided
//!    under a request the provider billed.
//! 6. Verdict, from core's oracles: I-IDEM (a)-(d) over the history and I-BAL over the
//!    committed accounts and ledger (idempotent billing); I-BILL (1) and (2), I-TOK and
//!    `holds-resolved` against the provider's final usage (streams); I-LIMIT, I-COUNT,
//!    I-RESERVE and `reservations-resolve` over the committed buckets, reservations and
//!    ledger (quota). The end state is read from PostgreSQL directly, and the report sums
//!    the money moved, to the unit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use racelab_core::billing::{
    ACCOUNTS, Accounting, Amount, BillRequest, BillTag, ClientKey, HOLDS, IDEMPOTENCY, IdemConfig,
    IdemEnd, IdemGateway, LEDGER, Settlement, StreamConfig, StreamEnd, StreamGateway, Sweeper,
    SweeperConfig, balance_conserved, idempotent_billing, streamed_billing,
};
use racelab_core::quota::oracle::{QuotaEnd, counted_once, reservations_balance, within_limits};
use racelab_core::quota::{
    Counter, QUOTA_LEDGER, QUOTA_RESERVATIONS, QUOTA_USAGE, QuotaTag, Request, RequestConfig,
    Sweeper as QuotaSweeper,
};
use racelab_core::{
    Cond, Duration, EndpointId, Fault, History, KvOp, Machine, Note, OpId, Outgoing, ProcessId,
    RandomStream, Reply, RequestId, Row, SqlOp, SqlReply, SqlStmt, StoreOp, Table, Timestamp,
    Value, Variant, Violation,
};
use racelab_sim::explore::{EndpointScript, StreamScript, Upstream};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::AdapterError;
use crate::check::RedisTarget;
use crate::driver::{
    Clock, Completion, Control, DriveEnd, DriverConfig, StoreClient, Stores, drive,
};
use crate::fault_plan::{FaultCounts, FaultKind, FaultOptions, FaultPlan};
use crate::postgres::PgSql;
use crate::provider::{InProcessProvider, WithProvider};
use crate::recorder::Recorder;
use crate::redis_kv::RedisKv;
use crate::run_env::{ConnectionFaults, Injector, RunEnv};

/// The parameters of [`check_gateway`]. [`GatewayOptions::new`] gives the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayOptions {
    /// `Correct` (claim rows, holds and sweeper, two-phase reservation) or `Buggy` (the
    /// document's Redis marker, post-stream callback, in-memory budget).
    pub variant: Variant,
    /// Gateway workers, each with its own connections (1..=512).
    pub workers: u16,
    /// Requests to serve, duplicates and concurrent retries included (1..=60,000).
    pub requests: u64,
    /// The Redis to use.
    pub redis: RedisTarget,
    /// The PostgreSQL URL (`postgres://...`).
    pub pg_url: String,
    /// The faults to inject, planned on the run's progress.
    pub faults: FaultOptions,
    /// The seed of the plan and of the faults' choices (the servers' timing is not ours, so
    /// a run is not replayable bit for bit).
    pub seed: u64,
    /// The run gives up (and reports it did not settle) after this long.
    pub time_limit: std::time::Duration,
    /// Keep the schema and keys afterwards (for inspection).
    pub keep_data: bool,
}

impl GatewayOptions {
    /// A run of `variant` with `workers` workers serving `requests` requests against `redis`
    /// and `pg_url`: no faults, seed 1, a 5 minute limit.
    pub fn new(
        variant: Variant,
        workers: u16,
        requests: u64,
        redis: RedisTarget,
        pg_url: &str,
    ) -> GatewayOptions {
        GatewayOptions {
            variant,
            workers,
            requests,
            redis,
            pg_url: pg_url.to_string(),
            faults: FaultOptions::none(),
            seed: 1,
            time_limit: std::time::Duration::from_secs(300),
            keep_data: false,
        }
    }
}

/// The money a run moved, read from PostgreSQL, in the account's smallest unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MoneyReport {
    /// The idempotent-billing accounts' balances before the run, summed.
    pub idem_initial: i64,
    /// ... and after it.
    pub idem_final: i64,
    /// Their committed ledger rows, summed.
    pub idem_charged: i64,
    /// The streaming account's balance before the run.
    pub stream_initial: i64,
    /// ... and after it.
    pub stream_final: i64,
    /// Its committed ledger rows, summed.
    pub stream_charged: i64,
    /// What the (in-process) provider billed for the streams, priced.
    pub provider_billed: i64,
    /// Holds still open, and what they reserve.
    pub open_holds: u64,
    /// The quota buckets' `used`, summed, before the run plus the ledger's units.
    pub quota_expected_used: i64,
    /// The quota buckets' `used` at the end, summed.
    pub quota_used: i64,
    /// The quota buckets' `reserved` at the end, summed.
    pub quota_reserved: i64,
}

/// The latency of one kind of request.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KindLatency {
    /// The kind (`idem`, `idem-concurrent-retry`, `idem-duplicate`, `stream`,
    /// `stream-cancelled`, `quota`).
    pub kind: String,
    /// How many finished.
    pub requests: u64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
}

/// What a gateway run found. Serialisable for the CLI's JSON output.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GatewayReport {
    /// Always `gateway`.
    pub protocol: String,
    /// `correct` or `buggy`.
    pub variant: String,
    /// The run's seed.
    pub seed: u64,
    /// Gateway workers.
    pub workers: u16,
    /// Requests served (every kind, duplicates and retries included).
    pub requests: u64,
    /// Idempotent-billing requests.
    pub idem_requests: u64,
    /// Of those, submissions of a key sent before (a later duplicate).
    pub duplicate_submissions: u64,
    /// Of those, submissions of a key sent at the same moment as another (a concurrent
    /// same-key retry).
    pub concurrent_retries: u64,
    /// Streamed requests.
    pub stream_requests: u64,
    /// Of those, streams the client cancels.
    pub cancelled_streams: u64,
    /// Quota requests.
    pub quota_requests: u64,
    /// How many times each planned kind was to be injected.
    pub faults_planned_per_kind: u32,
    /// The kinds planned.
    pub faults_planned: Vec<FaultKind>,
    /// Faults injected, per kind.
    pub faults_injected: FaultCounts,
    /// Every broken invariant, explained (empty when the run is correct).
    pub violations: Vec<Violation>,
    /// The money moved.
    pub money: MoneyReport,
    /// Whether the run settled (every request finished, the sweepers done) in time.
    pub settled: bool,
    /// Median request latency (ms, from the first start to the final answer, restarts
    /// included).
    pub p50_ms: f64,
    /// 99th percentile request latency (ms).
    pub p99_ms: f64,
    /// Request latency per kind of request (first submissions, concurrent same-key
    /// retries, later duplicates, streams, cancelled streams, quota).
    pub latency_by_kind: Vec<KindLatency>,
    /// Median store-operation latency (ms, client side).
    pub op_p50_ms: u64,
    /// 99th percentile store-operation latency (ms).
    pub op_p99_ms: u64,
    /// Store and provider operations recorded.
    pub operations: u64,
    /// Operations whose answer never came (timeouts, cut connections, kills).
    pub unknown_outcomes: u64,
    /// Charges whose transaction's outcome the client never learnt (its `COMMIT` answer was
    /// lost) and that the committed ledger shows did commit: the history is given that truth
    /// before it is judged.
    pub charges_recovered: u64,
    /// Wall-clock duration of the requests' part of the run (ms).
    pub duration_ms: u64,
    /// Requests finished per second.
    pub requests_per_second: f64,
}

impl GatewayReport {
    /// Whether every invariant held.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

const WORKERS_MAX: u16 = 512;
const REQUESTS_MAX: u64 = 60_000;
/// The idempotent-billing accounts (spread so that one row's lock is not the whole run's).
const IDEM_ACCOUNTS: u32 = 8;
/// The streaming account (one: the holds' sweeper settles to one account).
const STREAM_ACCOUNT: &str = "stream";
/// The quota API keys.
const QUOTA_KEYS: u32 = 8;
/// The provider's one endpoint.
const ENDPOINT: EndpointId = EndpointId(1);
/// Process ids: requests from here on, by their index in the plan.
const FIRST_REQUEST_PROCESS: u16 = 10;
const HOLD_SWEEPER: ProcessId = ProcessId(1);
const QUOTA_SWEEPER: ProcessId = ProcessId(2);
/// The claim lease of idempotent billing; a stalled connection outlasts it.
const CLAIM_LEASE: Duration = Duration::from_ms(2_000);
/// How long a stalled connection is held: past the claim lease, so another attempt
/// re-claims under the stalled one.
const STALL: std::time::Duration = std::time::Duration::from_millis(2_500);
/// How long a latency spike lasts.
const SPIKE: std::time::Duration = std::time::Duration::from_millis(300);
/// How often the run looks at its progress (faults, the end).
const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Runs document 000's gateway protocols against real servers while the planned faults are
/// injected, and judges them.
///
/// Call it inside a tokio runtime with IO and time enabled (the future is `Send`).
/// `progress(finished, total)` is called as requests finish. The run leaves nothing behind
/// (schema and keys dropped, its own Redis stopped) unless `keep_data` is set. Errors are
/// set-up failures (an unreachable server, invalid options) and a fault plan that could not
/// be carried out; what the run finds is in the report.
pub async fn check_gateway(
    opts: GatewayOptions,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<GatewayReport, AdapterError> {
    check_gateway_with_history(opts, progress)
        .await
        .map(|(r, _)| r)
}

/// [`check_gateway`], also returning the recorded history.
pub async fn check_gateway_with_history(
    opts: GatewayOptions,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<(GatewayReport, History), AdapterError> {
    validate(&opts)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let label = format!("gw_{}", opts.variant.as_str());
    let mut env = RunEnv::start(&label, &mut rng, &opts.redis, &opts.pg_url, &opts.faults).await?;
    let result = async {
        env.admin_pg.reset().await?;
        let plan = plan(&opts, &mut rng);
        seed_rows(&mut env.admin_pg, &plan).await?;
        let run = GwRun::new(
            &opts,
            plan,
            &env.schema,
            &env.prefix,
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

fn validate(opts: &GatewayOptions) -> Result<(), AdapterError> {
    let bad = |m: String| Err(AdapterError::InvalidInput(m));
    if opts.workers == 0 || opts.workers > WORKERS_MAX {
        return bad(format!(
            "workers must be 1..={WORKERS_MAX}, not {}",
            opts.workers
        ));
    }
    if opts.requests == 0 || opts.requests > REQUESTS_MAX {
        return bad(format!(
            "requests must be 1..={REQUESTS_MAX}, not {}",
            opts.requests
        ));
    }
    if !matches!(opts.variant, Variant::Correct | Variant::Buggy) {
        return bad(format!(
            "the gateway run has the variants correct and buggy, not {}",
            opts.variant.as_str()
        ));
    }
    opts.faults
        .refuse_unsupported(
            "gateway",
            &FaultKind::WORKERS,
            matches!(opts.redis, RedisTarget::Url(_)),
        )
        .or_else(bad)?;
    Ok(())
}

/// One request of the plan.
#[derive(Clone, Debug)]
enum Job {
    Idem(IdemConfig),
    Stream(StreamConfig),
    Quota(RequestConfig),
}

/// A request and its place in the plan (its process is `FIRST_REQUEST_PROCESS + index`).
#[derive(Clone, Debug)]
struct Planned {
    index: usize,
    job: Job,
    /// What kind of request it is, for the latency table.
    label: &'static str,
}

/// The plan: requests in the order the workers take them, and the seeded rows.
struct Plan {
    jobs: Vec<Planned>,
    idem_initial: BTreeMap<String, i64>,
    stream_initial: i64,
    /// Quota buckets: (key, limit).
    quota_limits: BTreeMap<String, i64>,
    duplicates: u64,
    concurrent: u64,
    idem: u64,
    streams: u64,
    cancelled: u64,
    quota: u64,
    /// The provider's stream script.
    chunks: Vec<u32>,
}

fn plan(opts: &GatewayOptions, rng: &mut ChaCha8Rng) -> Plan {
    let variant = opts.variant;
    let chunks: Vec<u32> = (0..rng.random_range(3..=6))
        .map(|_| rng.random_range(1..=12))
        .collect();
    let max_tokens: u32 = chunks.iter().sum();
    let mut jobs: Vec<(Job, &'static str)> = Vec::new();
    // Duplicates wait to be sent until the queue is a little further on.
    let mut later: Vec<(usize, Job)> = Vec::new();
    let mut p = Plan {
        jobs: Vec::new(),
        idem_initial: BTreeMap::new(),
        stream_initial: 0,
        quota_limits: BTreeMap::new(),
        duplicates: 0,
        concurrent: 0,
        idem: 0,
        streams: 0,
        cancelled: 0,
        quota: 0,
        chunks: chunks.clone(),
    };
    let mut keys = 0u32;
    let mut stream_ids = 0u64;
    let mut quota_ids = 0u64;
    let mut demand: BTreeMap<String, i64> = BTreeMap::new();
    let total = usize::try_from(opts.requests).unwrap_or(usize::MAX);
    while jobs.len() < total {
        if let Some(i) = later.iter().position(|(at, _)| *at <= jobs.len()) {
            let (_, job) = later.swap_remove(i);
            jobs.push((job, "idem-duplicate"));
            p.idem += 1;
            p.duplicates += 1;
            continue;
        }
        let roll = rng.random_range(0..100u32);
        if roll < 50 {
            keys += 1;
            let account = format!("acct-{}", keys % IDEM_ACCOUNTS);
            let request = BillRequest {
                key: ClientKey(keys),
                amount: Amount(rng.random_range(1..=50)),
            };
            let mut cfg = IdemConfig::new(variant, request, &account);
            cfg.lease = CLAIM_LEASE;
            cfg.backoff = Duration::from_ms(200);
            cfg.attempts_max = 60;
            *p.idem_initial.entry(account).or_default() += 2 * request.amount.0;
            jobs.push((Job::Idem(cfg.clone()), "idem"));
            p.idem += 1;
            let second = rng.random_range(0..100u32);
            if second < 15 && jobs.len() < total {
                // A concurrent same-key retry: the next worker takes it at once.
                jobs.push((Job::Idem(cfg), "idem-concurrent-retry"));
                p.idem += 1;
                p.concurrent += 1;
            } else if second < 30 {
                let at = jobs.len() + rng.random_range(20..200);
                later.push((at, Job::Idem(cfg)));
            }
        } else if roll < 75 {
            stream_ids += 1;
            let disconnect_after = (rng.random_range(0..4u32) == 0)
                .then(|| rng.random_range(0..=u32::try_from(chunks.len()).unwrap_or(0)));
            let cfg = StreamConfig {
                settlement: match variant {
                    Variant::Correct => Settlement::Hold,
                    _ => Settlement::Callback,
                },
                accounting: Accounting::Provider,
                request: RequestId(stream_ids),
                endpoint: ENDPOINT,
                prompt_tokens: rng.random_range(5..=20),
                max_tokens,
                account: STREAM_ACCOUNT.into(),
                disconnect_after,
                lookups_max: 3,
            };
            p.stream_initial += 2 * (i64::from(cfg.prompt_tokens) + i64::from(max_tokens));
            p.streams += 1;
            p.cancelled += u64::from(disconnect_after.is_some());
            let label = if disconnect_after.is_some() {
                "stream-cancelled"
            } else {
                "stream"
            };
            jobs.push((Job::Stream(cfg), label));
        } else {
            quota_ids += 1;
            let key = format!("key-{}", rng.random_range(0..QUOTA_KEYS));
            let units = rng.random_range(1..=10);
            let mut cfg = RequestConfig::new(variant, Counter::Budget, &key, quota_ids, units);
            cfg.work = Duration::from_ms(rng.random_range(2..=20));
            cfg.reservation_ttl = Duration::from_secs(4);
            cfg.resolve_attempts_max = 10;
            cfg.retry_after = Duration::from_ms(200);
            *demand.entry(key).or_default() += units;
            p.quota += 1;
            jobs.push((Job::Quota(cfg), "quota"));
        }
    }
    p.idem_initial
        .values_mut()
        .for_each(|b| *b = b.saturating_add(1_000));
    p.stream_initial = p.stream_initial.saturating_add(1_000);
    // Each budget is three quarters of its key's demand: admission has to refuse.
    for key in 0..QUOTA_KEYS {
        let key = format!("key-{key}");
        let d = demand.get(&key).copied().unwrap_or(0);
        p.quota_limits.insert(key, (d * 3 / 4).max(1));
    }
    p.jobs = jobs
        .into_iter()
        .enumerate()
        .map(|(index, (job, label))| Planned { index, job, label })
        .collect();
    p
}

/// Seeds the accounts and buckets, and creates every table before the workers name them.
async fn seed_rows(pg: &mut PgSql, plan: &Plan) -> Result<(), AdapterError> {
    let insert =
        |table: Table, key: String, row: Row| SqlOp::exec(SqlStmt::Insert { table, key, row });
    let mut ops = Vec::new();
    for (account, balance) in &plan.idem_initial {
        let row = Row::from([("balance".to_string(), Value::Int(*balance))]);
        ops.push(insert(ACCOUNTS, account.clone(), row));
    }
    let row = Row::from([("balance".to_string(), Value::Int(plan.stream_initial))]);
    ops.push(insert(ACCOUNTS, STREAM_ACCOUNT.into(), row));
    for (key, limit) in &plan.quota_limits {
        let row = Row::from([
            ("used".to_string(), Value::Int(0)),
            ("reserved".to_string(), Value::Int(0)),
            ("limit_units".to_string(), Value::Int(*limit)),
        ]);
        ops.push(insert(QUOTA_USAGE, key.clone(), row));
    }
    pg.insert_each(ops).await?;
    for table in TABLES {
        pg.execute_sql(&SqlOp::exec(SqlStmt::scan(table, Cond::True).limit(1)))
            .await?;
    }
    Ok(())
}

/// Every table of the run.
const TABLES: [Table; 7] = [
    ACCOUNTS,
    LEDGER,
    IDEMPOTENCY,
    HOLDS,
    QUOTA_USAGE,
    QUOTA_RESERVATIONS,
    QUOTA_LEDGER,
];

/// One request's machine, whichever family it is.
enum GwMachine {
    Idem(IdemGateway),
    Stream(StreamGateway),
    Quota(Request),
}

impl GwMachine {
    fn new(job: &Planned, incarnation: u32) -> GwMachine {
        match &job.job {
            Job::Idem(cfg) => GwMachine::Idem(IdemGateway::new(
                cfg.clone(),
                &process_name(job),
                incarnation,
            )),
            Job::Stream(cfg) => GwMachine::Stream(StreamGateway::new(cfg.clone(), incarnation)),
            Job::Quota(cfg) => GwMachine::Quota(Request::new(cfg.clone(), incarnation)),
        }
    }

    fn inner(&mut self) -> &mut dyn Machine {
        match self {
            GwMachine::Idem(m) => m,
            GwMachine::Stream(m) => m,
            GwMachine::Quota(m) => m,
        }
    }

    fn inner_ref(&self) -> &dyn Machine {
        match self {
            GwMachine::Idem(m) => m,
            GwMachine::Stream(m) => m,
            GwMachine::Quota(m) => m,
        }
    }
}

impl Machine for GwMachine {
    fn handle_start(&mut self, now: Timestamp) {
        self.inner().handle_start(now);
    }
    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        self.inner().handle_reply(now, op, reply);
    }
    fn handle_timeout(&mut self, now: Timestamp) {
        self.inner().handle_timeout(now);
    }
    fn poll_op(&mut self) -> Option<Outgoing> {
        self.inner().poll_op()
    }
    fn poll_note(&mut self) -> Option<Note> {
        self.inner().poll_note()
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.inner_ref().poll_timeout()
    }
    fn is_idle(&self) -> bool {
        self.inner_ref().is_idle()
    }
}

fn process_name(job: &Planned) -> String {
    let kind = match job.job {
        Job::Idem(_) => "I",
        Job::Stream(_) => "G",
        Job::Quota(_) => "Q",
    };
    format!("{kind}{}", job.index + 1)
}

fn process_of(job: &Planned) -> ProcessId {
    ProcessId(FIRST_REQUEST_PROCESS.saturating_add(u16::try_from(job.index).unwrap_or(u16::MAX)))
}

/// Whether a completed operation is a claim: the idempotency claim row or the document's
/// marker (`SET NX`), a quota reservation, a stream's hold reserve.
fn is_claim(op: &Outgoing, completion: &Completion) -> bool {
    let Completion::Reply(reply) = completion else {
        return false;
    };
    if !reply.is_success_of(&op.op) {
        return false;
    }
    let kind = op.tag.kind();
    kind == BillTag::CLAIM
        || (kind == BillTag::IDEM_CHECK && matches!(op.op, StoreOp::Kv(KvOp::Set { .. })))
        || kind == QuotaTag::RESERVE
        || (matches!(BillTag::of(&op.tag), Some(BillTag::Hold { .. }))
            && matches!(reply, Reply::Sql(SqlReply::Rows(rows)) if !rows.is_empty()))
}

/// A gateway worker's client: its real stores with the in-process provider beside them, and
/// the simulated worlds' driver contract for SQL sessions, which document 000's machines are
/// written for: a statement whose outcome is unknown (it timed out, or its connection failed)
/// discards the session, the server rolls its transaction back, and the next statement runs
/// on a fresh session (`sim`'s world resets the session at a timeout). [`PgSql`] alone keeps
/// a lost transaction's session refusing every statement until the machine says `ROLLBACK`,
/// which a machine that starts over after a timeout (as the idempotent gateway's claim does)
/// never says.
struct GatewayClient<'p> {
    inner: WithProvider<'p, Stores>,
    pg_url: &'p str,
    schema: &'p str,
    /// The last SQL operation's outcome is unknown (or it never finished): replace the
    /// session before the next one.
    sql_in_doubt: bool,
}

impl StoreClient for GatewayClient<'_> {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        if !matches!(op, StoreOp::Sql(_)) {
            return self.inner.execute(op).await;
        }
        let session = (self.pg_url, self.schema);
        execute_sql_afresh_after_doubt(self.inner.inner, &mut self.sql_in_doubt, session, op).await
    }
}

/// Executes the SQL operation `op` on `stores` under the simulated worlds' session contract
/// ([`GatewayClient`]'s): when `in_doubt` (the last SQL operation's outcome is unknown, or it
/// never finished), the session is replaced by a fresh one on `session` (URL, schema) first;
/// `in_doubt` is set during the call (so it stays set if the future is dropped) and after an
/// outcome that may or may not have applied.
pub(crate) async fn execute_sql_afresh_after_doubt(
    stores: &mut Stores,
    in_doubt: &mut bool,
    session: (&str, &str),
    op: &StoreOp,
) -> Result<Reply, AdapterError> {
    if *in_doubt {
        stores.sql = Some(PgSql::lazy(session.0, session.1)?);
    }
    *in_doubt = true;
    let r = stores.execute(op).await;
    *in_doubt = matches!(&r, Err(e) if !matches!(e, AdapterError::Unreachable { .. }));
    r
}

/// Shared state of one run.
struct GwRun {
    variant: Variant,
    seed: u64,
    plan: Plan,
    queue: Mutex<VecDeque<Planned>>,
    schema: String,
    prefix: String,
    redis_url: String,
    pg_url: String,
    recorder: Recorder,
    clock: Clock,
    provider: InProcessProvider,
    /// Requests finished (their machine went idle).
    finished: AtomicU64,
    /// Each worker slot's kill switch while it runs a request.
    busy: Vec<Mutex<Option<watch::Sender<bool>>>>,
    /// Kills armed to strike right after the next claim.
    claim_kills_armed: AtomicU32,
    faults: Mutex<FaultCounts>,
    stopping: AtomicBool,
    stop_sweepers: watch::Sender<bool>,
    driver: DriverConfig,
    /// Each request's kind and latency, first start to final answer (µs).
    latencies_us: Mutex<Vec<(&'static str, u64)>>,
}

impl GwRun {
    fn new(
        opts: &GatewayOptions,
        plan: Plan,
        schema: &str,
        prefix: &str,
        redis_url: &str,
        pg_url: &str,
    ) -> Arc<GwRun> {
        let clock = Clock::start_now();
        let script = EndpointScript {
            stream: StreamScript {
                first_chunk_after: Duration::from_ms(20),
                gap: Duration::from_ms(10),
                chunks: plan.chunks.clone(),
                usage_in_final: true,
                fail_after: None,
            },
            ..EndpointScript::default()
        };
        let upstream = Upstream {
            endpoints: [(ENDPOINT, script)].into(),
        };
        Arc::new(GwRun {
            variant: opts.variant,
            seed: opts.seed,
            queue: Mutex::new(plan.jobs.iter().cloned().collect()),
            plan,
            schema: schema.to_string(),
            prefix: prefix.to_string(),
            redis_url: redis_url.to_string(),
            pg_url: pg_url.to_string(),
            recorder: Recorder::new(),
            clock,
            provider: InProcessProvider::new(upstream, clock),
            finished: AtomicU64::new(0),
            busy: (0..opts.workers).map(|_| Mutex::new(None)).collect(),
            claim_kills_armed: AtomicU32::new(0),
            faults: Mutex::new(FaultCounts::default()),
            stopping: AtomicBool::new(false),
            stop_sweepers: watch::Sender::new(false),
            driver: DriverConfig {
                redis_timeout: std::time::Duration::from_secs(1),
                sql_timeout: std::time::Duration::from_secs(4),
                upstream_timeout: std::time::Duration::from_secs(2),
                ..DriverConfig::default()
            },
            latencies_us: Mutex::new(Vec::new()),
        })
    }

    fn count(&self, kind: FaultKind) {
        self.count_with(|c| c.add(kind));
    }

    fn stores(&self) -> Result<Stores, AdapterError> {
        Ok(Stores {
            kv: Some(RedisKv::lazy(&self.redis_url, &self.prefix)?),
            queue: None,
            sql: Some(PgSql::lazy(&self.pg_url, &self.schema)?),
            pubsub: None,
            random: None,
        })
    }

    /// One worker: takes requests until the queue is empty, each driven to its end through
    /// its incarnations.
    async fn worker(self: Arc<GwRun>, slot: usize) -> Result<(), AdapterError> {
        let mut stores = self.stores()?;
        // Carried from request to request: the worker keeps its session.
        let mut sql_in_doubt = false;
        loop {
            let next = self.queue.lock().ok().and_then(|mut q| q.pop_front());
            let Some(job) = next else {
                return Ok(());
            };
            let process = process_of(&job);
            self.recorder.name(process, &process_name(&job));
            let started = std::time::Instant::now();
            let mut incarnation = 0u32;
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return Ok(());
                }
                let (tx, mut rx) = watch::channel(false);
                if let Ok(mut b) = self.busy[slot].lock() {
                    *b = Some(tx);
                }
                let mut machine = GwMachine::new(&job, incarnation);
                stores.random = Some(RandomStream::for_process(self.seed, process.0, incarnation));
                let run = self.clone();
                let crash = move |op: &Outgoing, completion: &Completion| {
                    if is_claim(op, completion)
                        && run
                            .claim_kills_armed
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        run.count(FaultKind::KillAfterClaim);
                        return Control::Crash;
                    }
                    Control::Continue
                };
                let mut observer = self.recorder.process(process, crash);
                let mut client = GatewayClient {
                    inner: WithProvider {
                        inner: &mut stores,
                        provider: &self.provider,
                        reader: (job.index, incarnation),
                    },
                    pg_url: &self.pg_url,
                    schema: &self.schema,
                    sql_in_doubt,
                };
                let end = drive(
                    &mut machine,
                    &mut client,
                    &self.driver,
                    self.clock,
                    &mut rx,
                    &mut observer,
                )
                .await;
                sql_in_doubt = client.sql_in_doubt;
                if let Ok(mut b) = self.busy[slot].lock() {
                    *b = None;
                }
                match end {
                    DriveEnd::Idle => break,
                    DriveEnd::Stopped if self.stopping.load(Ordering::SeqCst) => return Ok(()),
                    DriveEnd::Stopped | DriveEnd::Crashed => {
                        // The process dies with its connections (an open transaction rolls
                        // back, its streams generate on unread); the next incarnation runs
                        // on fresh ones.
                        self.recorder
                            .fault(self.clock.true_now(), Fault::Crash { process });
                        self.provider.reader_gone(job.index);
                        stores = self.stores()?;
                        sql_in_doubt = false;
                        incarnation += 1;
                        self.recorder
                            .fault(self.clock.true_now(), Fault::Restart { process });
                    }
                }
            }
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if let Ok(mut l) = self.latencies_us.lock() {
                l.push((job.label, us));
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A sweeper, until the run stops it.
    async fn sweeper(self: Arc<GwRun>, process: ProcessId) -> Result<(), AdapterError> {
        let mut stores = self.stores()?;
        let mut rx = self.stop_sweepers.subscribe();
        let mut observer = self
            .recorder
            .process(process, |_: &Outgoing, _: &Completion| Control::Continue);
        let mut client = GatewayClient {
            inner: WithProvider {
                inner: &mut stores,
                provider: &self.provider,
                reader: (usize::MAX - usize::from(process.0), 0),
            },
            pg_url: &self.pg_url,
            schema: &self.schema,
            sql_in_doubt: false,
        };
        if process == HOLD_SWEEPER {
            self.recorder.name(process, "SW-holds");
            let mut machine = Sweeper::new(SweeperConfig {
                endpoint: ENDPOINT,
                account: STREAM_ACCOUNT.into(),
                every: Duration::from_ms(300),
                // Longer than an `Open` may be in flight (the upstream timeout).
                after: Duration::from_secs(3),
                batch_max: 256,
            });
            drive(
                &mut machine,
                &mut client,
                &self.driver,
                self.clock,
                &mut rx,
                &mut observer,
            )
            .await;
        } else {
            self.recorder.name(process, "SW-quota");
            let mut machine = QuotaSweeper::new(Duration::from_ms(300));
            drive(
                &mut machine,
                &mut client,
                &self.driver,
                self.clock,
                &mut rx,
                &mut observer,
            )
            .await;
        }
        Ok(())
    }

    fn busy_slots(&self) -> Vec<usize> {
        (0..self.busy.len())
            .filter(|s| self.busy[*s].lock().is_ok_and(|b| b.is_some()))
            .collect()
    }

    fn kill(&self, slot: usize) -> bool {
        self.busy[slot]
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(|tx| tx.send_replace(true)))
            .is_some()
    }

    /// Carries out one planned fault; false when it cannot be done now (try again later).
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
                self.recorder
                    .fault(self.clock.true_now(), Fault::RedisRestart);
            }
            FaultKind::WorkerKill => {
                let busy = self.busy_slots();
                if busy.is_empty() {
                    return Ok(false);
                }
                let slot = busy[rng.random_range(0..busy.len())];
                if !self.kill(slot) {
                    return Ok(false);
                }
            }
            FaultKind::KillAfterClaim => {
                // Counted when it strikes.
                self.claim_kills_armed.fetch_add(1, Ordering::SeqCst);
                return Ok(true);
            }
            FaultKind::LatencySpike | FaultKind::StalledConnection | FaultKind::CutConnection => {
                let shape = ConnectionFaults {
                    spike: SPIKE,
                    stall_every: 3,
                    stall_hold: STALL,
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

    fn count_with(&self, f: impl FnOnce(&mut FaultCounts)) {
        if let Ok(mut c) = self.faults.lock() {
            f(&mut c);
        }
    }

    /// Whether the sweepers are done: no hold or reservation open, and no hold voided under
    /// a request the provider billed.
    async fn swept(&self, pg: &mut PgSql) -> Result<bool, AdapterError> {
        let open =
            |col: &str, v: &str| Cond::cmp(col, racelab_core::CmpOp::Eq, Value::Text(v.into()));
        let holds = rows(pg, SqlStmt::scan(HOLDS, Cond::True), "holds").await?;
        let usage = self.provider.final_usage();
        for h in &holds {
            let status = text(&h.columns, "status");
            if status == "open" {
                return Ok(false);
            }
            let billed = h
                .key
                .strip_prefix('r')
                .and_then(|n| n.parse().ok())
                .and_then(|n| usage.get(&(ENDPOINT, RequestId(n))))
                .is_some_and(|u| u.prompt_tokens + u.completion_tokens > 0);
            if status == "voided" && billed {
                return Ok(false);
            }
        }
        let reservations = rows(
            pg,
            SqlStmt::scan(QUOTA_RESERVATIONS, open("status", "open")),
            "reservations",
        )
        .await?;
        Ok(reservations.is_empty())
    }

    #[allow(clippy::too_many_arguments)]
    async fn execute(
        self: Arc<GwRun>,
        opts: &GatewayOptions,
        rng: &mut ChaCha8Rng,
        admin_pg: &mut PgSql,
        injector: &mut Injector,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<(GatewayReport, History), AdapterError> {
        let total = self.plan.jobs.len() as u64;
        let mut fault_plan = FaultPlan::new(&opts.faults, total, rng);
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let correct = self.variant == Variant::Correct;
        if correct {
            tasks.spawn(self.clone().sweeper(HOLD_SWEEPER));
            tasks.spawn(self.clone().sweeper(QUOTA_SWEEPER));
        }
        for slot in 0..self.busy.len() {
            tasks.spawn(self.clone().worker(slot));
        }
        let mut reported = u64::MAX;
        let mut requests_done_at = None;
        let mut settled = false;
        let mut last_sweep_look = std::time::Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            if started.elapsed() > opts.time_limit {
                break;
            }
            let done = self.finished.load(Ordering::SeqCst);
            if done != reported {
                reported = done;
                progress(done, total);
            }
            injector.end_spike_if_due();
            if done < total {
                while let Some(kind) = fault_plan.due(done) {
                    if !self.inject(kind, rng, injector).await? {
                        fault_plan.postpone();
                        break;
                    }
                }
                continue;
            }
            // Every request finished: no more faults; the sweepers finish their work.
            if requests_done_at.is_none() {
                requests_done_at = Some(started.elapsed());
                self.claim_kills_armed.store(0, Ordering::SeqCst);
                injector.heal();
            }
            if !correct {
                settled = true;
                break;
            }
            if last_sweep_look.elapsed() >= std::time::Duration::from_millis(200) {
                last_sweep_look = std::time::Instant::now();
                if self.swept(admin_pg).await.unwrap_or(false) {
                    settled = true;
                    break;
                }
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.stop_sweepers.send_replace(true);
        for slot in 0..self.busy.len() {
            self.kill(slot);
        }
        if let Ok(mut q) = self.queue.lock() {
            q.clear();
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
        let duration = requests_done_at.unwrap_or_else(|| started.elapsed());
        self.judge(opts, admin_pg, settled, duration, injected, &fault_plan)
            .await
    }

    async fn judge(
        &self,
        opts: &GatewayOptions,
        pg: &mut PgSql,
        settled: bool,
        duration: std::time::Duration,
        injected: FaultCounts,
        _plan: &FaultPlan,
    ) -> Result<(GatewayReport, History), AdapterError> {
        let mut history = self.recorder.history();
        let mut tables: Vec<(Table, racelab_core::KeyedRow)> = Vec::new();
        for table in TABLES {
            for r in rows(pg, SqlStmt::scan(table, Cond::True), table.as_str()).await? {
                tables.push((table, r));
            }
        }
        let recovered = recover_charges(&mut history, &tables);
        let of = |pred: &dyn Fn(&Table, &str) -> bool| {
            tables
                .iter()
                .filter(move |(t, r)| pred(t, &r.key))
                .map(|(t, r)| (t, r.key.as_str(), &r.columns))
                .collect::<Vec<_>>()
        };
        // Idempotent billing: its accounts and its ledger rows (keyed by the client's key).
        let idem_rows = of(&|t, k| {
            (*t == ACCOUNTS && k.starts_with("acct-")) || (*t == LEDGER && k.starts_with('K'))
        });
        let idem_end = IdemEnd::read(&self.plan.idem_initial, idem_rows);
        let mut verdict = idempotent_billing(&history).merge(balance_conserved(&idem_end));
        // Streams: their account, ledger rows (keyed by the request) and holds.
        let stream_rows = of(&|t, k| {
            (*t == ACCOUNTS && k == STREAM_ACCOUNT)
                || (*t == LEDGER && k.starts_with('r'))
                || *t == HOLDS
        });
        let usage = self.provider.final_usage();
        let stream_end = StreamEnd::read(self.plan.stream_initial, stream_rows, &usage, settled);
        verdict = verdict.merge(streamed_billing(&stream_end));
        // Quota.
        let quota_rows =
            of(&|t, _| *t == QUOTA_USAGE || *t == QUOTA_RESERVATIONS || *t == QUOTA_LEDGER);
        let initial_used: BTreeMap<String, i64> = self
            .plan
            .quota_limits
            .keys()
            .map(|k| (k.clone(), 0))
            .collect();
        let quota_end = QuotaEnd::read(&initial_used, quota_rows, settled);
        verdict = verdict
            .merge(within_limits(&quota_end))
            .merge(counted_once(&quota_end))
            .merge(reservations_balance(&history, &quota_end));
        let mut violations = verdict.violations;
        if !settled {
            violations.push(Violation {
                invariant: "stuck".into(),
                explanation: format!(
                    "the run did not settle within {} s: {} of {} requests finished, or holds \
                     and reservations were still open",
                    opts.time_limit.as_secs(),
                    self.finished.load(Ordering::SeqCst),
                    self.plan.jobs.len()
                ),
                ops: Vec::new(),
            });
        }
        let money = MoneyReport {
            idem_initial: idem_end.initial.values().sum(),
            idem_final: idem_end.balance.values().sum(),
            idem_charged: idem_end.ledger.values().sum(),
            stream_initial: stream_end.initial,
            stream_final: stream_end.balance,
            stream_charged: stream_end.ledger.iter().map(|r| r.amount.0).sum(),
            provider_billed: stream_end.truth.values().map(|a| a.0).sum(),
            open_holds: stream_end.open_holds.len() as u64,
            quota_expected_used: quota_end.buckets.keys().map(|b| quota_end.charged(b)).sum(),
            quota_used: quota_end.buckets.values().map(|b| b.used).sum(),
            quota_reserved: quota_end.buckets.values().map(|b| b.reserved).sum(),
        };
        let labelled = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        let mut latencies: Vec<u64> = labelled.iter().map(|(_, us)| *us).collect();
        latencies.sort_unstable();
        let mut by_kind: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (label, us) in &labelled {
            by_kind.entry(label).or_default().push(*us);
        }
        let latency_by_kind = by_kind
            .into_iter()
            .map(|(label, mut l)| {
                l.sort_unstable();
                KindLatency {
                    kind: label.to_string(),
                    requests: l.len() as u64,
                    p50_ms: percentile(&l, 50) as f64 / 1_000.0,
                    p99_ms: percentile(&l, 99) as f64 / 1_000.0,
                }
            })
            .collect();
        let mut op_latencies = self.recorder.latencies_ms();
        op_latencies.sort_unstable();
        let done = self.finished.load(Ordering::SeqCst);
        let report = GatewayReport {
            protocol: "gateway".into(),
            variant: opts.variant.as_str().to_string(),
            seed: opts.seed,
            workers: opts.workers,
            requests: self.plan.jobs.len() as u64,
            idem_requests: self.plan.idem,
            duplicate_submissions: self.plan.duplicates,
            concurrent_retries: self.plan.concurrent,
            stream_requests: self.plan.streams,
            cancelled_streams: self.plan.cancelled,
            quota_requests: self.plan.quota,
            faults_planned_per_kind: opts.faults.per_kind,
            faults_planned: if opts.faults.per_kind == 0 {
                Vec::new()
            } else {
                opts.faults.kinds.clone()
            },
            faults_injected: injected,
            violations,
            money,
            settled,
            p50_ms: percentile(&latencies, 50) as f64 / 1_000.0,
            p99_ms: percentile(&latencies, 99) as f64 / 1_000.0,
            latency_by_kind,
            op_p50_ms: percentile(&op_latencies, 50),
            op_p99_ms: percentile(&op_latencies, 99),
            operations: history.ops.len() as u64,
            unknown_outcomes: history.ops.iter().filter(|o| o.result.is_none()).count() as u64,
            charges_recovered: recovered,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            requests_per_second: done as f64 / duration.as_secs_f64().max(0.001),
        };
        Ok((report, history))
    }
}

/// Gives the history the store's truth about charges whose outcome the client never learnt:
/// a charge (a ledger row carrying its attempt's generated body, unique to the attempt) that
/// is in the committed ledger committed, whatever its client saw. The recorder marks a
/// transaction's statements durable only at its `COMMIT`'s answer; a lost answer leaves a
/// committed charge looking uncommitted, and I-IDEM-b would then blame a later replay of its
/// stored response. The durable time given is the charge's own completion (or invocation):
/// the client cannot know better. Returns how many charges were recovered.
fn recover_charges(history: &mut History, tables: &[(Table, racelab_core::KeyedRow)]) -> u64 {
    let committed: BTreeMap<&str, String> = tables
        .iter()
        .filter(|(t, _)| *t == LEDGER)
        .map(|(_, r)| (r.key.as_str(), text(&r.columns, "body")))
        .collect();
    let mut recovered = 0;
    for op in &mut history.ops {
        if op.accepted() {
            continue;
        }
        let Some(BillTag::Charge { body, .. }) = BillTag::of(&op.tag) else {
            continue;
        };
        let StoreOp::Sql(SqlOp::Exec(stmt)) = &op.op else {
            continue;
        };
        let SqlStmt::Insert { key, .. } = &**stmt else {
            continue;
        };
        if committed.get(key.as_str()) != Some(body) || body.is_empty() {
            continue;
        }
        let at = op.completed_at.unwrap_or(op.invoked_at);
        op.result = Some(Reply::Sql(SqlReply::Affected(1)));
        op.applied_at = Some(op.applied_at.unwrap_or(at));
        op.durable_at = Some(at);
        recovered += 1;
    }
    recovered
}

/// The `p`th percentile of sorted values (0 when empty).
pub(crate) fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn text(row: &Row, column: &str) -> String {
    match row.get(column) {
        Some(Value::Text(s)) => s.clone(),
        _ => String::new(),
    }
}

async fn rows(
    pg: &mut PgSql,
    stmt: SqlStmt,
    what: &str,
) -> Result<Vec<racelab_core::KeyedRow>, AdapterError> {
    match pg.execute_sql(&SqlOp::exec(stmt)).await? {
        SqlReply::Rows(rows) => Ok(rows),
        other => Err(AdapterError::Protocol {
            what: "PostgreSQL",
            message: format!("reading {what} answered {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        let opts = GatewayOptions::new(
            Variant::Correct,
            1,
            1,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        send(&check_gateway(opts, |_, _| {}));
    }

    #[test]
    fn the_plan_has_every_kind_of_request() {
        let opts = GatewayOptions::new(
            Variant::Correct,
            20,
            2_000,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        let p = plan(&opts, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(p.jobs.len(), 2_000);
        assert_eq!(p.idem + p.streams + p.quota, 2_000);
        assert!(
            p.duplicates > 50 && p.concurrent > 50,
            "{} {}",
            p.duplicates,
            p.concurrent
        );
        assert!(p.cancelled > 50 && p.quota > 200);
        let demand: i64 = p
            .jobs
            .iter()
            .filter_map(|j| match &j.job {
                Job::Quota(c) => Some(c.estimate),
                _ => None,
            })
            .sum();
        let limits: i64 = p.quota_limits.values().sum();
        assert!(limits < demand, "the budgets must make admission refuse");
    }

    #[test]
    fn a_variant_without_a_gateway_protocol_is_refused() {
        let mut opts = GatewayOptions::new(
            Variant::DocFix,
            1,
            1,
            RedisTarget::Url("redis://127.0.0.1:1".into()),
            "postgres://127.0.0.1:1/x",
        );
        assert!(matches!(
            validate(&opts),
            Err(AdapterError::InvalidInput(_))
        ));
        opts.variant = Variant::Correct;
        opts.faults = FaultOptions::every_kind(3);
        let err = validate(&opts).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("Spawn")));
    }
}
