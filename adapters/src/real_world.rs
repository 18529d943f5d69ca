//! The real world: a simulated world's [`WorldSpec`] (a catalog race's processes, rows,
//! upstream and memory) run on real Redis and PostgreSQL with the shipped driver ([`drive`]),
//! recorded as a [`Run`] that the race's own judge reads, as it reads the explore and net
//! worlds' runs.
//!
//! - Isolation: the run's own PostgreSQL schema and Redis key prefix (channels included),
//!   from [`RunEnv`], dropped at the end unless kept, so that runs and tests sharing the
//!   servers never see each other's data. The spec's rows are seeded in that schema first.
//! - Each process is a task on one thread ([`tokio::task::LocalSet`]: the machines are not
//!   `Send`) that waits for its start time on the run's [`Clock`], builds its machine
//!   (incarnation 0) and drives it over real clients of its own: [`RedisKv`] and
//!   [`RedisPubSub`] under the run's prefix, a [`PgSql`] session in the run's schema, its
//!   random stream ([`RandomStream::for_process`] from the run's seed, so the draws are the
//!   simulated worlds'), the upstream calls answered by the [`InProcessProvider`] (the
//!   simulated worlds' upstream model on the run's clock), the local blocks by the hosts'
//!   [`HostMemories`].
//! - Time is real: a world's timeline of seconds takes seconds. The run ends when every
//!   driver returned (its machine idle), at the spec's horizon plus the longest timeout (the
//!   driver fires no timer from the horizon on; what is in flight then has completed or timed
//!   out by that time), or at the time limit (the spec's, capped by
//!   [`WorldOptions::time_limit_max`]), which leaves the run unsettled.
//! - No faults: the servers' own timing is the only scheduler. A run's history is the
//!   client's view ([`crate::Recorder`]): an operation is applied when its answer arrived.
//! - What it cannot run is an error, never a silently wrong run: a queue or push operation
//!   (no real queue client is wired here, no balancer exists) stops the run and names the
//!   process and operation.
//!
//! Architecture invariant: nothing here names a family; the spec's processes and the
//! family's judge are the catalog's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use racelab_core::{
    Cond, History, Machine, Note, OpId, Outgoing, ProcessId, RandomStream, Reply, SqlOp, SqlReply,
    SqlStmt, StoreOp, Table, Timestamp,
};
use racelab_sim::explore::{ProcessSpec, Run, RunStats, WorldSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use crate::check::RedisTarget;
use crate::check_gateway::execute_sql_afresh_after_doubt;
use crate::driver::{Clock, Completion, Control, DriveEnd, DriverConfig, StoreClient, Stores};
use crate::fault_plan::FaultOptions;
use crate::host_memory::HostMemories;
use crate::postgres::PgSql;
use crate::provider::InProcessProvider;
use crate::recorder::Recorder;
use crate::redis_kv::RedisKv;
use crate::redis_pubsub::RedisPubSub;
use crate::run_env::RunEnv;
use crate::{AdapterError, drive};

/// The most processes one real run starts (each holds up to three connections).
pub const WORLD_PROCESSES_MAX: usize = 64;

/// Where and how a real run happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorldOptions {
    /// The Redis server (shared: the run uses a key prefix of its own).
    pub redis_url: String,
    /// The PostgreSQL server (the run uses a schema of its own).
    pub pg_url: String,
    /// The run's seed: the processes' random streams, and the run's name.
    pub seed: u64,
    /// Keep the schema and the keys after the run (to look at them).
    pub keep_data: bool,
    /// The longest a run may take, whatever the spec's time limit says.
    pub time_limit_max: std::time::Duration,
}

impl WorldOptions {
    /// The servers of `config`, seed `seed`, data dropped, at most a minute.
    pub fn new(config: &crate::Config, seed: u64) -> WorldOptions {
        WorldOptions {
            redis_url: config.redis_url.clone(),
            pg_url: config.pg_url.clone(),
            seed,
            keep_data: false,
            time_limit_max: std::time::Duration::from_secs(60),
        }
    }
}

/// Runs `spec` on the real servers of `opts` and returns its [`Run`] (see the module
/// documentation). Errors: a server unreachable, the set-up failing, more than
/// [`WORLD_PROCESSES_MAX`] processes, or a process sending an operation the real world
/// cannot serve.
pub async fn run_world(spec: WorldSpec, opts: &WorldOptions) -> Result<Run, AdapterError> {
    if spec.processes.len() > WORLD_PROCESSES_MAX {
        return Err(AdapterError::InvalidInput(format!(
            "the real world runs at most {WORLD_PROCESSES_MAX} processes, not {}",
            spec.processes.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let redis = RedisTarget::Url(opts.redis_url.clone());
    let mut env = RunEnv::start(
        "world",
        &mut rng,
        &redis,
        &opts.pg_url,
        &FaultOptions::none(),
    )
    .await?;
    let result = async {
        seed_rows(&mut env.admin_pg, &spec.sql_rows).await?;
        let schema = env.schema.clone();
        let prefix = env.prefix.clone();
        tokio::task::LocalSet::new()
            .run_until(run_processes(
                spec,
                opts,
                &schema,
                &prefix,
                &mut env.admin_pg,
            ))
            .await
    }
    .await;
    env.finish(opts.keep_data).await;
    result
}

/// Seeds the spec's rows (committed before any process starts).
async fn seed_rows(
    pg: &mut PgSql,
    rows: &[(Table, String, racelab_core::Row)],
) -> Result<(), AdapterError> {
    pg.insert_each(rows.iter().map(|(table, key, row)| {
        SqlOp::exec(SqlStmt::Insert {
            table: *table,
            key: key.clone(),
            row: row.clone(),
        })
    }))
    .await
}

/// What every process task of one run shares.
struct Shared {
    redis_url: String,
    pg_url: String,
    schema: String,
    prefix: String,
    seed: u64,
    clock: Clock,
    config: DriverConfig,
    recorder: Recorder,
    provider: InProcessProvider,
    memories: HostMemories,
    /// The first operation the real world could not serve, with its process.
    unsupported: Mutex<Option<String>>,
    /// Stops every driver: the run's end (its limit, its horizon), or an operation it cannot
    /// serve.
    stop: watch::Sender<bool>,
}

fn to_std(d: racelab_core::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_ms())
}

fn pid(index: usize) -> ProcessId {
    ProcessId(u16::try_from(index).unwrap_or(u16::MAX))
}

async fn run_processes(
    spec: WorldSpec,
    opts: &WorldOptions,
    schema: &str,
    prefix: &str,
    admin_pg: &mut PgSql,
) -> Result<Run, AdapterError> {
    let config = DriverConfig::of_world(&spec);
    let longest_timeout = config
        .redis_timeout
        .max(config.sql_timeout)
        .max(config.upstream_timeout);
    let seeded: Vec<Table> = spec.sql_rows.iter().map(|(t, _, _)| *t).collect();
    let clock = Clock::start_now();
    let shared = Arc::new(Shared {
        redis_url: opts.redis_url.clone(),
        pg_url: opts.pg_url.clone(),
        schema: schema.to_string(),
        prefix: prefix.to_string(),
        seed: opts.seed,
        clock,
        config,
        recorder: Recorder::new(),
        provider: InProcessProvider::new(spec.upstream, clock),
        memories: HostMemories::new(spec.local),
        unsupported: Mutex::new(None),
        stop: watch::Sender::new(false),
    });
    let mut tasks = Vec::new();
    for (index, process) in spec.processes.into_iter().enumerate() {
        shared.recorder.name(pid(index), &process.name);
        let task = run_process(shared.clone(), index, process, shared.stop.subscribe());
        tasks.push(tokio::task::spawn_local(task));
    }
    let limit =
        to_std(racelab_core::Duration::from_ms(spec.time_limit.as_ms())).min(opts.time_limit_max);
    let deadline = clock.instant(Timestamp::ZERO) + limit;
    // With a horizon, what is in flight there has completed or timed out a timeout later.
    let drained_at = spec
        .horizon
        .map(|h| clock.instant(h) + longest_timeout)
        .filter(|at| *at < deadline);
    let end_at = drained_at.unwrap_or(deadline);
    let mut stopped = false;
    for mut task in tasks {
        let joined = if stopped {
            task.await
        } else {
            tokio::select! {
                biased;
                joined = &mut task => joined,
                () = tokio::time::sleep_until(end_at) => {
                    // Stop everything still running; each task returns at its next await
                    // point, its operation in flight recorded without an answer.
                    stopped = true;
                    shared.stop.send_replace(true);
                    task.await
                }
            }
        };
        joined.map_err(|e| AdapterError::Process {
            what: "a process task of the real world".into(),
            message: e.to_string(),
        })??;
    }
    let timed_out = stopped && drained_at.is_none();
    let stopped_at_horizon = stopped && drained_at.is_some();
    shared.stop.send_replace(true);
    let unsupported = shared.unsupported.lock().ok().and_then(|u| u.clone());
    if let Some(what) = unsupported {
        return Err(AdapterError::InvalidInput(format!(
            "{what}, which the real world cannot serve (it runs Redis commands and scripts, \
             pub/sub, SQL, upstream calls answered in process, local blocks and random draws)"
        )));
    }
    let ended_at = clock.true_now();
    let history = shared.recorder.history();
    let sql_rows = read_rows(admin_pg, &seeded, &history).await?;
    let quiescent = !timed_out;
    let store_ops = history
        .ops
        .iter()
        .filter(|o| o.result.is_some() && !matches!(o.op, StoreOp::Random(_)))
        .count() as u64;
    Ok(Run {
        // A real run has no scheduler to hash: its trace is the history it recorded.
        trace_seed: 0,
        injected: Vec::new(),
        choices: None,
        decisions: Vec::new(),
        quiescent,
        // Drained after the horizon (stopped a timeout after it, or finished past it).
        horizon: spec
            .horizon
            .filter(|h| stopped_at_horizon || (quiescent && ended_at >= *h)),
        unsettled: if quiescent {
            Vec::new()
        } else {
            vec![format!(
                "the real world stopped at its time limit ({} ms) before every process finished",
                limit.as_millis()
            )]
        },
        ended_at,
        stats: RunStats {
            events: history.ops.len() as u64 + history.notes.len() as u64,
            store_ops,
            decisions: 0,
            faults: 0,
        },
        sql_rows,
        history,
        local: shared.memories.snapshot(),
        upstream_usage: shared.provider.final_usage(),
    })
}

/// One process: waits for its start, then drives its machine to its end.
async fn run_process(
    shared: Arc<Shared>,
    index: usize,
    process: ProcessSpec,
    mut stop: watch::Receiver<bool>,
) -> Result<DriveEnd, AdapterError> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|s| *s) => return Ok(DriveEnd::Stopped),
        () = tokio::time::sleep_until(shared.clock.instant(process.start_at)) => {}
    }
    let mut machine = Boxed((process.factory)(0));
    let mut client = WorldClient {
        stores: Stores {
            kv: Some(RedisKv::lazy(&shared.redis_url, &shared.prefix)?),
            queue: None,
            sql: Some(PgSql::lazy(&shared.pg_url, &shared.schema)?),
            pubsub: Some(RedisPubSub::new(&shared.redis_url, &shared.prefix)?),
            random: Some(RandomStream::for_process(shared.seed, pid(index).0, 0)),
        },
        shared: shared.clone(),
        name: process.name.clone(),
        host: process.host,
        reader: (index, 0),
        sql_in_doubt: false,
    };
    let mut observer = shared
        .recorder
        .process(pid(index), |_: &Outgoing, _: &Completion| Control::Continue);
    Ok(drive(
        &mut machine,
        &mut client,
        &shared.config,
        shared.clock,
        &mut stop,
        &mut observer,
    )
    .await)
}

/// A process' machine as the driver takes it.
struct Boxed(Box<dyn Machine>);

impl Machine for Boxed {
    fn handle_start(&mut self, now: Timestamp) {
        self.0.handle_start(now);
    }
    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        self.0.handle_reply(now, op, reply);
    }
    fn handle_timeout(&mut self, now: Timestamp) {
        self.0.handle_timeout(now);
    }
    fn poll_op(&mut self) -> Option<Outgoing> {
        self.0.poll_op()
    }
    fn poll_note(&mut self) -> Option<Note> {
        self.0.poll_note()
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.0.poll_timeout()
    }
    fn is_idle(&self) -> bool {
        self.0.is_idle()
    }
}

/// One process' clients: the real stores, the in-process provider and host memory, and a
/// refusal of what the real world cannot serve.
struct WorldClient {
    stores: Stores,
    shared: Arc<Shared>,
    name: String,
    host: u32,
    reader: (usize, u32),
    /// The last SQL operation's outcome is unknown (or it never finished): the session is
    /// replaced before the next one, as in the gateway check, the simulated worlds' session
    /// contract the machines are written for.
    sql_in_doubt: bool,
}

impl StoreClient for WorldClient {
    async fn execute(&mut self, op: &StoreOp) -> Result<Reply, AdapterError> {
        match op {
            StoreOp::Upstream(call) => self.shared.provider.call(self.reader, call).await,
            StoreOp::Local(block) => self.shared.memories.run(self.host, block),
            StoreOp::Queue(_) | StoreOp::Push(_) => {
                let what = format!("process {} sent {op}", self.name);
                if let Ok(mut first) = self.shared.unsupported.lock() {
                    first.get_or_insert(what);
                }
                // The run cannot be judged any more: every driver stops.
                self.shared.stop.send_replace(true);
                Err(AdapterError::InvalidInput(format!(
                    "the real world does not serve {op}"
                )))
            }
            StoreOp::Sql(_) => {
                let session = (self.shared.pg_url.as_str(), self.shared.schema.as_str());
                execute_sql_afresh_after_doubt(
                    &mut self.stores,
                    &mut self.sql_in_doubt,
                    session,
                    op,
                )
                .await
            }
            StoreOp::Kv(_) | StoreOp::PubSub(_) | StoreOp::Random(_) => {
                self.stores.execute(op).await
            }
        }
    }
}

/// Every committed row at the end, of every table the spec seeded or a statement named.
async fn read_rows(
    pg: &mut PgSql,
    seeded: &[Table],
    history: &History,
) -> Result<Vec<(Table, String, racelab_core::Row)>, AdapterError> {
    let mut tables: BTreeMap<Table, ()> = seeded.iter().map(|t| (*t, ())).collect();
    for op in &history.ops {
        if let StoreOp::Sql(SqlOp::Exec(stmt)) = &op.op {
            tables.insert(stmt.table(), ());
        }
    }
    let mut rows = Vec::new();
    for table in tables.into_keys() {
        let scan = SqlOp::exec(SqlStmt::scan(table, Cond::True));
        match pg.execute_sql(&scan).await? {
            SqlReply::Rows(found) => {
                rows.extend(found.into_iter().map(|r| (table, r.key, r.columns)));
            }
            other => {
                return Err(AdapterError::Protocol {
                    what: "PostgreSQL",
                    message: format!("reading back {table} answered {other}"),
                });
            }
        }
    }
    Ok(rows)
}
