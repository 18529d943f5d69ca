//! Protocols never panic on input: every machine of every family, in every variant, is fed
//! arbitrary sequences of starts (sometimes repeated), replies (to an operation in flight, a
//! duplicate to one already answered, or to an id it never emitted), timer calls at arbitrary
//! non-decreasing times and due timers, and drained after each. A reply either fits the
//! operation (the happy-path answer, so that runs get deep into a machine; any answer of its
//! store; for the health family's local blocks, the real answer of a `LocalState` the test
//! keeps), or is an arbitrary `Reply` of any store (rows with missing or ill-typed columns,
//! deliveries with garbage job fields, local results of every `LocalResult` variant or of a
//! foreign type, HTTP 200/401/429/503/0 and others), or a timeout. The property: nothing
//! panics (proptest catches the panic and shrinks the sequence), and a machine never emits
//! an op id twice. 256 cases per machine kind and variant, up to 40 actions each.
//!
//! Deterministic in CI: `scripts/test.sh` sets `PROPTEST_RNG_SEED`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use racelab_core::access::{
    KeyAction, KeyAdmin, KeyInstance, KeyRequest, PermAdmin, PermInstance, PermSubscriber,
    PlannedRequest, RoleChange,
};
use racelab_core::billing::{
    Accounting, Amount, BillRequest, ClientKey, IdemConfig, IdemGateway, KeySource, MarkerOrder,
    OutboxRelay, Publish, Settlement, StreamConfig, StreamGateway, Sweeper, SweeperConfig,
    UsageBillConfig, UsageBiller, UsageConsumer, UsageWorker,
};
use racelab_core::breaker::{BreakerInstance, PlannedRequest as BreakerRequest};
use racelab_core::context::{Action as CtxAction, StepId, StepTask};
use racelab_core::health::tasks::{
    AddThread, BlockTask, ProbeConfig, ProbeRole, ProbeTask, RequestConfig, RequestTask, SaveStyle,
    SaverTask, Selection,
};
use racelab_core::health::{
    Added, EndpointId, Generation, HealthConfig, HealthTag, LocalOp, LocalResult, LocalState,
    Observation, ObserveOutcome, Source,
};
use racelab_core::quota::{
    Counter, DocFixReading, MirrorConfig, MirrorRequest, Observer, QUOTA_BALANCE, QUOTA_LEDGER,
    QUOTA_RESERVATIONS, QUOTA_USAGE, Reconciler, Request as QuotaRequest,
    RequestConfig as QuotaConfig, Sweeper as QuotaSweeper, WarmConfig, WarmRequest, Warmer,
};
use racelab_core::route::affinity::{AffinityConfig, AffinityRequest};
use racelab_core::route::pool::{CounterWrite, PoolClient, PoolProber, PoolResult};
use racelab_core::route::{Attempt, AttemptId};
use racelab_core::scheduler::jobfsm::{Finalize, FsmConfig, JobScheduler, JobSpec};
use racelab_core::scheduler::rollout::{
    Config as RolloutConfig, Publisher, Rollout, RolloutNode, TtlSource,
};
use racelab_core::scheduler::ws::{WsClient, WsMode, WsNode, WsScheduler};
use racelab_core::scheduler::{
    Dispatcher, DurableScheduler, Monitor, Node as SchedNode, NodeConfig, Submit,
};
use racelab_core::session::{Turn, TurnConfig};
use racelab_core::workorder::{
    APPLIED_SCANS, Checker, DocFixPlans, LogOrder, Plan2, PlannedScan, RequestIdSource, ScanJob,
    Terminal, UPDATE_LOG, WORK_ORDERS, Worker, WorkerConfig,
};
use racelab_core::{
    CallKind, ColumnType, Delivery, DeliveryId, Duration, ForeignBlock, JobFields, JobId, KeyedRow,
    KvOp, KvReply, LocalReply, LocalValue, Machine, OpId, PubSubReply, PushReply, Quantity,
    QueueOp, QueueReply, Reply, SCAN_QUANTITY_MAX, ScanId, SqlOp, SqlReply, SqlStmt, StoreOp,
    StreamId, StreamReply, Table, Timestamp, UpstreamReply, Usage, Value, Variant, WorkOrderId,
};

/// Generated cases per machine kind and variant.
const CASES: u32 = 256;
/// Actions per case at most.
const ACTIONS_MAX: usize = 40;

// ---------------------------------------------------------------------------------------------
// Values

fn small_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -3i64..12,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        2 => any::<i64>(),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zE0-9:_ '-]{0,8}",
        Just("wo-1".to_string()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        4 => small_int().prop_map(Value::Int),
        2 => text().prop_map(Value::Text),
    ]
}

/// Rows with any subset of the known columns (and one unknown), any of them ill-typed.
fn rows() -> impl Strategy<Value = Vec<KeyedRow>> {
    let column = prop::sample::select(vec![
        "qty",
        "lease_epoch",
        "lease_owner",
        "lease_until",
        "work_order",
        "status",
        "key",
        "x",
        "amount",
        "owner_epoch",
        "response",
        "balance",
        "used",
        "reserved",
        "limit_units",
        "bucket",
        "est",
        "expires_at",
        "version",
    ]);
    let row = (
        text(),
        prop::collection::btree_map(column.prop_map(String::from), value(), 0..4),
    )
        .prop_map(|(key, columns)| KeyedRow { key, columns });
    prop::collection::vec(row, 0..3)
}

fn table() -> impl Strategy<Value = Table> {
    prop::sample::select(vec![
        WORK_ORDERS,
        APPLIED_SCANS,
        UPDATE_LOG,
        QUOTA_USAGE,
        QUOTA_RESERVATIONS,
        QUOTA_LEDGER,
        QUOTA_BALANCE,
    ])
}

fn kv_reply() -> impl Strategy<Value = KvReply> {
    prop_oneof![
        3 => Just(KvReply::Ok),
        2 => Just(KvReply::Int(1)),
        1 => Just(KvReply::Int(0)),
        1 => Just(KvReply::Nil),
        1 => small_int().prop_map(KvReply::Int),
        1 => text().prop_map(KvReply::Bulk),
        // The scheduler's answers, which `text` is too short to spell.
        1 => prop::sample::select(&[
            "timed_out",
            "timed_out N1",
            "state done",
            "state timed_out",
            "lost",
            "bound N1 0 0",
            "bound  ",
            "ok none created 1",
            "ok created dispatched 2",
            "ok x done 18446744073709551615",
            "dup running 3",
            "no timed_out 4",
            "no none 0",
        ][..])
        .prop_map(|s| KvReply::Bulk(s.to_string())),
        1 => text().prop_map(KvReply::Error),
        1 => prop::collection::vec(prop::option::of(text()), 0..3).prop_map(KvReply::Array),
        1 => prop::collection::vec((text(), text()), 0..3).prop_map(KvReply::Pairs),
    ]
}

fn sql_reply() -> impl Strategy<Value = SqlReply> {
    prop_oneof![
        2 => Just(SqlReply::Ok),
        4 => rows().prop_map(SqlReply::Rows),
        2 => prop_oneof![0u64..3, any::<u64>()].prop_map(SqlReply::Affected),
        2 => Just(SqlReply::Committed),
        1 => Just(SqlReply::RolledBack),
        1 => (table(), text()).prop_map(|(table, key)| SqlReply::UniqueViolation { table, key }),
        1 => text().prop_map(SqlReply::Error),
    ]
}

/// A scan job the worker accepts.
fn scan_job() -> impl Strategy<Value = ScanJob> {
    (
        0u64..6,
        prop_oneof![1u64..3, any::<u64>()],
        prop_oneof![1i64..10, Just(SCAN_QUANTITY_MAX.0)],
        prop_oneof![8 => 0u64..3_000, 1 => 0u64..60_000, 1 => Just(u64::MAX)],
        text(),
    )
        .prop_map(|(scan, work_order, qty, work, request_id)| ScanJob {
            scan: ScanId(scan),
            work_order: WorkOrderId(work_order),
            qty: Quantity(qty),
            work: Duration::from_ms(work),
            request_id,
        })
}

/// Job fields: a valid job, or any subset of the fields with garbage values.
fn job_fields() -> impl Strategy<Value = JobFields> {
    let field = prop::sample::select(vec![
        "scan",
        "work_order",
        "qty",
        "work_ms",
        "request_id",
        "extra",
    ]);
    let garbage = prop_oneof![
        Just(String::new()),
        "-?[0-9]{1,25}",
        text(),
        Just("18446744073709551616".to_string()),
        Just("1e3".to_string()),
        Just(" 1".to_string()),
    ];
    prop_oneof![
        scan_job().prop_map(|job| job.to_fields()),
        prop::collection::btree_map(field.prop_map(String::from), garbage, 0..6),
    ]
}

fn queue_reply() -> impl Strategy<Value = QueueReply> {
    let delivery = (any::<u64>(), any::<u64>(), any::<u32>(), job_fields()).prop_map(
        |(id, job, attempt, fields)| Delivery {
            id: DeliveryId(id),
            job: JobId(job),
            attempt,
            fields,
        },
    );
    prop_oneof![
        1 => any::<u64>().prop_map(|job| QueueReply::Enqueued { job: JobId(job) }),
        1 => any::<u64>().prop_map(|job| QueueReply::Duplicate { job: JobId(job) }),
        1 => Just(QueueReply::Delivered(None)),
        4 => delivery.prop_map(|d| QueueReply::Delivered(Some(d))),
        1 => Just(QueueReply::Acked),
        1 => Just(QueueReply::LockLost),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(401),
        Just(429),
        Just(503),
        Just(0),
        any::<u16>(),
    ]
}

fn endpoint() -> impl Strategy<Value = EndpointId> {
    prop_oneof![4 => 0u32..5, 1 => any::<u32>()].prop_map(EndpointId)
}

fn endpoints() -> impl Strategy<Value = Vec<EndpointId>> {
    prop::collection::vec(endpoint(), 0..4)
}

fn generation() -> impl Strategy<Value = Generation> {
    prop_oneof![0u64..4, any::<u64>()].prop_map(Generation)
}

fn epoch() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..4, Just(u64::MAX), any::<u64>()]
}

/// A persisted failure queue: well formed, with odd endpoint names or extreme counters, or
/// not JSON at all.
fn queue_file() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        (0u32..5).prop_map(|n| format!("E{n}")),
        Just("E".to_string()),
        Just("X2".to_string()),
        Just("E99999999999".to_string()),
        text(),
    ];
    let json = (
        prop::collection::vec(name, 0..3),
        prop_oneof![0u64..4, Just(u64::MAX)],
    )
        .prop_map(|(names, total)| {
            let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!(
                "{{\"failed_endpoints\":[{}],\"stats\":{{\"total_failed\":{total}}}}}",
                names.join(",")
            )
        });
    prop_oneof![
        3 => json,
        1 => Just("{\"failed_endpoints\":[\"E1\"],\"stats\":{\"total_failed\":-1}}".to_string()),
        1 => text(),
    ]
}

fn observation() -> impl Strategy<Value = Observation> {
    prop::sample::select(vec![
        Observation::Success,
        Observation::Unauthorized,
        Observation::RateLimited,
        Observation::ServerError,
        Observation::Timeout,
    ])
}

fn local_result() -> impl Strategy<Value = LocalResult> {
    let outcome = prop::sample::select(vec![
        ObserveOutcome::Applied,
        ObserveOutcome::Stale,
        ObserveOutcome::Sticky,
        ObserveOutcome::Unknown,
    ]);
    prop_oneof![
        endpoints().prop_map(LocalResult::Endpoints),
        generation().prop_map(LocalResult::Dispatched),
        proptest::option::of((endpoint(), generation())).prop_map(LocalResult::Selected),
        outcome.prop_map(LocalResult::Observed),
        (generation(), epoch())
            .prop_map(|(generation, epoch)| LocalResult::Begun { generation, epoch }),
        (any::<bool>(), epoch())
            .prop_map(|(inserted, epoch)| LocalResult::Added(Added { inserted, epoch })),
        any::<bool>().prop_map(LocalResult::Bool),
        queue_file().prop_map(LocalResult::Text),
        proptest::option::of(queue_file()).prop_map(LocalResult::File),
        prop_oneof![Just(Ok(())), text().prop_map(Err)].prop_map(LocalResult::Loaded),
        Just(LocalResult::Done),
    ]
}

/// A local reply: one of the health family's results, or a value of another type.
fn local_reply() -> impl Strategy<Value = LocalReply> {
    let result = prop_oneof![
        6 => local_result().prop_map(LocalValue::new),
        2 => pool_result().prop_map(LocalValue::new),
        1 => text().prop_map(|s| LocalValue::new(ForeignBlock(s))),
        1 => any::<u32>().prop_map(LocalValue::new),
    ];
    (any::<u64>(), result).prop_map(|(seq, result)| LocalReply { seq, result })
}

/// A routing block's result, of any kind.
fn pool_result() -> impl Strategy<Value = PoolResult> {
    prop_oneof![
        (any::<u64>(), endpoint(), any::<bool>()).prop_map(|(id, endpoint, probe)| {
            PoolResult::Attempt(Attempt {
                id: AttemptId(id),
                endpoint,
                probe,
            })
        }),
        Just(PoolResult::Nothing),
        endpoint().prop_map(PoolResult::Recorded),
        text().prop_map(PoolResult::Refused),
    ]
}

/// An answer to a streaming upstream call, of any kind.
fn stream_reply() -> impl Strategy<Value = StreamReply> {
    let usage = (any::<u32>(), any::<u32>()).prop_map(|(prompt_tokens, completion_tokens)| Usage {
        prompt_tokens,
        completion_tokens,
    });
    prop_oneof![
        any::<u64>().prop_map(|s| StreamReply::Opened {
            stream: StreamId(s)
        }),
        (status(), proptest::option::of(any::<u64>())).prop_map(|(status, after)| {
            StreamReply::Refused {
                status,
                retry_after: after.map(Duration::from_ms),
            }
        }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(index, tokens)| StreamReply::Chunk { index, tokens }),
        proptest::option::of(usage.clone()).prop_map(|usage| StreamReply::End { usage }),
        any::<u32>().prop_map(|after_chunks| StreamReply::Failed { after_chunks }),
        Just(StreamReply::Cancelled),
        Just(StreamReply::Closed),
        (usage, any::<bool>()).prop_map(|(usage, complete)| StreamReply::Usage { usage, complete }),
        Just(StreamReply::UnknownRequest),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        kv_reply().prop_map(Reply::Kv),
        sql_reply().prop_map(Reply::Sql),
        queue_reply().prop_map(Reply::Queue),
        local_reply().prop_map(Reply::Local),
        status().prop_map(|status| Reply::Upstream(UpstreamReply { status })),
        stream_reply().prop_map(Reply::Stream),
        Just(Reply::Timeout),
    ]
}

// ---------------------------------------------------------------------------------------------
// Actions

/// Which operation a reply answers.
#[derive(Clone, Debug)]
enum Target {
    /// One still unanswered (by index, modulo their number).
    Pending(usize),
    /// A duplicate answer to one already answered.
    Answered(usize),
    /// An id the machine has not emitted: `Past(k)` is the k-th after the largest so far.
    Zero,
    Past(u8),
    Raw(u64),
}

/// A reply that fits the operation's store, whichever it is: the protocol's happy path
/// (`happy`, so that runs get deep into a machine), or any reply of that store.
#[derive(Clone, Debug)]
struct Fitting {
    happy: bool,
    int: i64,
    job: ScanJob,
    kv: KvReply,
    sql: SqlReply,
    queue: QueueReply,
    local: LocalReply,
    status: u16,
}

impl Fitting {
    /// The answer a store that did what `op` asked would give.
    fn happy(&self, op: &StoreOp) -> Reply {
        match op {
            StoreOp::Kv(KvOp::Get { .. }) => Reply::Kv(KvReply::Bulk(self.int.to_string())),
            StoreOp::Kv(KvOp::Set { .. } | KvOp::PExpire { .. }) => Reply::Kv(KvReply::Ok),
            StoreOp::Kv(_) => Reply::Kv(KvReply::Int(1)),
            StoreOp::Sql(SqlOp::Begin) => Reply::Sql(SqlReply::Ok),
            StoreOp::Sql(SqlOp::Commit) => Reply::Sql(SqlReply::Committed),
            StoreOp::Sql(SqlOp::Rollback) => Reply::Sql(SqlReply::RolledBack),
            StoreOp::Sql(SqlOp::Exec(stmt)) => match &**stmt {
                SqlStmt::Insert { .. } => Reply::Sql(SqlReply::Affected(1)),
                SqlStmt::Select { table, key, .. }
                | SqlStmt::Update { table, key, .. }
                | SqlStmt::Delete { table, key, .. }
                | SqlStmt::Upsert { table, key, .. } => {
                    Reply::Sql(SqlReply::Rows(vec![self.row(*table, key)]))
                }
                SqlStmt::Scan { table, .. } => {
                    let rows = (self.int % 2 == 0).then(|| self.row(*table, "k"));
                    Reply::Sql(SqlReply::Rows(rows.into_iter().collect()))
                }
            },
            StoreOp::Queue(QueueOp::Fetch) => Reply::Queue(QueueReply::Delivered(Some(Delivery {
                id: DeliveryId(self.int.unsigned_abs()),
                job: JobId(self.job.scan.0),
                attempt: 1,
                fields: self.job.to_fields(),
            }))),
            StoreOp::Queue(QueueOp::Enqueue { .. }) => Reply::Queue(QueueReply::Enqueued {
                job: JobId(self.int.unsigned_abs()),
            }),
            StoreOp::Queue(_) => Reply::Queue(QueueReply::Acked),
            StoreOp::Local(_) => Reply::Local(self.local.clone()),
            StoreOp::Upstream(op) => match op.kind {
                CallKind::Open { .. } => Reply::Stream(StreamReply::Opened {
                    stream: StreamId(self.int.unsigned_abs() % 3),
                }),
                CallKind::Next { .. } if self.int % 4 == 0 => Reply::Stream(StreamReply::End {
                    usage: (self.int % 8 == 0).then_some(Usage {
                        prompt_tokens: 3,
                        completion_tokens: 7,
                    }),
                }),
                CallKind::Next { .. } => Reply::Stream(StreamReply::Chunk {
                    index: 0,
                    tokens: u32::try_from(self.int.unsigned_abs() % 20).unwrap_or(1),
                }),
                CallKind::Cancel { .. } => Reply::Stream(StreamReply::Cancelled),
                CallKind::Usage { .. } => Reply::Stream(StreamReply::Usage {
                    usage: Usage {
                        prompt_tokens: 3,
                        completion_tokens: u32::try_from(self.int.unsigned_abs() % 50).unwrap_or(0),
                    },
                    complete: self.int % 3 != 0,
                }),
                CallKind::Request { .. } | CallKind::Probe { .. } => {
                    Reply::Upstream(UpstreamReply { status: 200 })
                }
            },
            StoreOp::Random(_) => Reply::Random(self.int.unsigned_abs()),
            StoreOp::PubSub(_) => Reply::PubSub(PubSubReply::Message {
                channel: "c".into(),
                payload: self.int.to_string(),
            }),
            StoreOp::Push(_) => Reply::Push(PushReply::Message {
                conn: racelab_core::ConnId(self.int.unsigned_abs()),
                payload: self.int.to_string(),
            }),
        }
    }

    /// Any reply of `op`'s store.
    fn any(&self, op: &StoreOp) -> Reply {
        match op {
            StoreOp::Kv(_) => Reply::Kv(self.kv.clone()),
            StoreOp::Sql(_) => Reply::Sql(self.sql.clone()),
            StoreOp::Queue(_) => Reply::Queue(self.queue.clone()),
            StoreOp::Local(_) => Reply::Local(self.local.clone()),
            StoreOp::Upstream(_) => Reply::Upstream(UpstreamReply {
                status: self.status,
            }),
            // No machine of the catalog emits these yet: the fitting reply stands for any.
            StoreOp::Random(_) | StoreOp::PubSub(_) | StoreOp::Push(_) => self.happy(op),
        }
    }

    /// A row of `table` with every column, well typed.
    fn row(&self, table: Table, key: &str) -> KeyedRow {
        let columns = table
            .columns()
            .iter()
            .map(|(column, ty)| {
                let value = match ty {
                    ColumnType::Int => Value::Int(self.int),
                    ColumnType::Text => Value::Text(key.to_string()),
                };
                (column.to_string(), value)
            })
            .collect();
        KeyedRow {
            key: key.to_string(),
            columns,
        }
    }
}

#[derive(Clone, Debug)]
enum Answer {
    Fit(Box<Fitting>),
    Any(Reply),
}

#[derive(Clone, Debug)]
enum Action {
    Start {
        dt: u64,
    },
    Reply {
        dt: u64,
        to: Target,
        answer: Answer,
    },
    Timeout {
        dt: u64,
    },
    /// `handle_timeout` at the time the machine asked for (if later than now).
    TimerDue,
}

fn dt() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => Just(0u64),
        6 => 0u64..2_000,
        3 => 0u64..120_000,
        1 => Just(u64::MAX / 2),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        12 => any::<usize>().prop_map(Target::Pending),
        2 => any::<usize>().prop_map(Target::Answered),
        1 => Just(Target::Zero),
        1 => (0u8..4).prop_map(Target::Past),
        1 => any::<u64>().prop_map(Target::Raw),
    ]
}

fn answer() -> impl Strategy<Value = Answer> {
    let fitting = (
        (prop::bool::weighted(0.75), small_int(), scan_job()),
        (
            kv_reply(),
            sql_reply(),
            queue_reply(),
            local_reply(),
            status(),
        ),
    )
        .prop_map(|((happy, int, job), (kv, sql, queue, local, status))| {
            Answer::Fit(Box::new(Fitting {
                happy,
                int,
                job,
                kv,
                sql,
                queue,
                local,
                status,
            }))
        });
    prop_oneof![
        8 => fitting,
        3 => reply().prop_map(Answer::Any),
        1 => Just(Answer::Any(Reply::Timeout)),
    ]
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    let action = prop_oneof![
        2 => dt().prop_map(|dt| Action::Start { dt }),
        12 => (dt(), target(), answer()).prop_map(|(dt, to, answer)| Action::Reply { dt, to, answer }),
        2 => dt().prop_map(|dt| Action::Timeout { dt }),
        4 => Just(Action::TimerDue),
    ];
    // Start first most of the time, as the driver does; sometimes not at all.
    (any::<u8>(), prop::collection::vec(action, 0..ACTIONS_MAX)).prop_map(|(first, mut rest)| {
        if first % 8 != 0 {
            rest.insert(0, Action::Start { dt: 0 });
            rest.truncate(ACTIONS_MAX);
        }
        rest
    })
}

// ---------------------------------------------------------------------------------------------
// Machines

/// A machine to build, in the variant the test runs.
#[derive(Clone, Debug)]
enum Kind {
    Worker(WorkerConfig, u32),
    Terminal(Vec<PlannedScan>),
    Checker {
        work_order: WorkOrderId,
        qty0: Quantity,
        every: Duration,
        rounds: u32,
    },
    Request(RequestConfig),
    Probe(ProbeConfig),
    Add(EndpointId, bool),
    Saver(Vec<EndpointId>, SaveStyle, u32),
    Blocks(Vec<(LocalOp, HealthTag)>),
    Idem(Box<IdemConfig>, u32),
    Stream(Box<StreamConfig>, u32),
    Sweeper(SweeperConfig),
    Consumer(Duration),
    Biller(UsageBillConfig, u32),
    Relay(Duration, u64),
    Worker08(bool, Duration),
    Quota(QuotaConfig, u32),
    QuotaSweeper(Duration),
    Mirror(MirrorConfig, u32),
    Reconciler(Duration),
    Warmer,
    Observer(Duration),
    Warm(WarmConfig, u32),
    SchedNode(Duration),
    SchedDispatcher(
        Vec<(String, Timestamp)>,
        Duration,
        Submit,
        Option<(Duration, Duration)>,
    ),
    SchedMonitor(Duration),
    SchedDurable(Vec<(String, Timestamp)>, Duration),
    CtxStep(StepId, Vec<CtxAction>),
    PermInstance(Vec<PlannedRequest>),
    PermAdmin(Vec<RoleChange>),
    PermSubscriber(Timestamp),
    KeyInstance(Vec<KeyRequest>),
    KeyAdmin(Vec<KeyAction>),
    Turn(TurnConfig),
    PoolClient(u32, u32, Duration),
    PoolProber(u32, Duration, u32),
    Affinity(u64, u32, Duration, u32),
    Breaker(u32, u32, Vec<(Timestamp, u32)>),
    RolloutNode(Duration, Vec<(u64, u32)>, u32),
    RolloutPublisher(u64),
    JobSubmitter(Vec<JobSpec>),
    JobFinalizer(Vec<JobSpec>, Finalize),
    WsClient(Vec<(String, Timestamp)>),
    WsScheduler,
    WsNode(Duration),
}

impl Kind {
    fn build(&self, variant: Variant) -> Box<dyn Machine> {
        match self.clone() {
            Kind::Worker(cfg, incarnation) => Box::new(Worker::new(cfg, "W", incarnation)),
            Kind::Terminal(plan) => Box::new(Terminal::new(variant, plan)),
            Kind::Checker {
                work_order,
                qty0,
                every,
                rounds,
            } => Box::new(Checker::new(variant, work_order, qty0, every, rounds)),
            Kind::Request(cfg) => Box::new(RequestTask::new(cfg)),
            Kind::Probe(cfg) => Box::new(ProbeTask::new(cfg)),
            Kind::Add(endpoint, split) => Box::new(AddThread::new(endpoint, split)),
            Kind::Saver(adds, style, incarnation) => {
                Box::new(SaverTask::new(adds, style, incarnation))
            }
            Kind::Blocks(blocks) => Box::new(BlockTask::new(blocks)),
            Kind::Idem(cfg, incarnation) => Box::new(IdemGateway::new(*cfg, "C", incarnation)),
            Kind::Stream(cfg, incarnation) => Box::new(StreamGateway::new(*cfg, incarnation)),
            Kind::Sweeper(cfg) => Box::new(Sweeper::new(cfg)),
            Kind::Consumer(every) => Box::new(UsageConsumer::new("acct-1", every)),
            Kind::Biller(cfg, inc) => Box::new(UsageBiller::new(cfg, inc)),
            Kind::Relay(every, batch) => Box::new(OutboxRelay::new(every, batch)),
            Kind::Worker08(dedup, every) => Box::new(UsageWorker::new(dedup, every)),
            Kind::Quota(mut cfg, incarnation) => {
                cfg.variant = variant;
                Box::new(QuotaRequest::new(cfg, incarnation))
            }
            Kind::QuotaSweeper(every) => Box::new(QuotaSweeper::new(every)),
            Kind::Mirror(mut cfg, incarnation) => {
                cfg.variant = variant;
                Box::new(MirrorRequest::new(cfg, incarnation))
            }
            Kind::Reconciler(every) => Box::new(Reconciler::new("k", every)),
            Kind::Warmer => Box::new(Warmer::new(variant, "k")),
            Kind::Observer(every) => Box::new(Observer::new("k", every)),
            Kind::Warm(mut cfg, incarnation) => {
                cfg.variant = variant;
                Box::new(WarmRequest::new(cfg, incarnation))
            }
            Kind::SchedNode(length) => {
                Box::new(SchedNode::new("N1", NodeConfig::of(variant), length))
            }
            Kind::SchedDispatcher(jobs, every, submit, timeout) => {
                let d = Dispatcher::new(NodeConfig::of(variant), jobs, every).with_submit(submit);
                Box::new(match timeout {
                    Some((after, binding_ttl)) => d.with_timeout(after, binding_ttl),
                    None => d,
                })
            }
            Kind::SchedMonitor(every) => Box::new(Monitor::new(NodeConfig::of(variant), every)),
            Kind::SchedDurable(jobs, every) => Box::new(DurableScheduler::new(
                "S1",
                NodeConfig::of(variant),
                jobs,
                every,
            )),
            Kind::CtxStep(step, plan) => Box::new(StepTask::new(step, plan)),
            Kind::PermInstance(plan) => Box::new(PermInstance::new(variant, 0, plan)),
            Kind::PermAdmin(changes) => Box::new(PermAdmin::new(variant, changes)),
            Kind::PermSubscriber(until) => Box::new(PermSubscriber::new(variant, until)),
            Kind::KeyInstance(plan) => Box::new(KeyInstance::new(variant, 0, "k1", plan)),
            Kind::KeyAdmin(actions) => Box::new(KeyAdmin::new(variant, "k1", actions)),
            Kind::Turn(cfg) => Box::new(Turn::new(variant, cfg)),
            Kind::PoolClient(instance, requests, stream) => Box::new(PoolClient::new(
                instance,
                CounterWrite::of(variant),
                requests,
                stream,
            )),
            Kind::PoolProber(instance, every, rounds) => {
                Box::new(PoolProber::new(instance, every, rounds))
            }
            Kind::Affinity(seq, first, stream, incarnation) => {
                let cfg = AffinityConfig {
                    variant,
                    session: "S".into(),
                    seq,
                    first_choice: EndpointId(first),
                    stream,
                };
                Box::new(AffinityRequest::new(cfg, incarnation))
            }
            Kind::Breaker(instance, incarnation, plan) => Box::new(BreakerInstance::new(
                variant,
                instance,
                incarnation,
                plan.into_iter()
                    .map(|(at, e)| BreakerRequest {
                        at,
                        endpoint: EndpointId(e),
                    })
                    .collect(),
            )),
            Kind::RolloutNode(length, phases, offset) => {
                let phases = phases
                    .into_iter()
                    .map(|(at, n)| (Timestamp::from_ms(at), n))
                    .collect();
                Box::new(RolloutNode::new(
                    "N1",
                    NodeConfig::of(variant),
                    length,
                    Rollout::new(phases),
                    TtlSource::of(variant),
                    offset,
                ))
            }
            Kind::RolloutPublisher(version) => Box::new(Publisher::new(RolloutConfig {
                version,
                ..RolloutConfig::TARGET
            })),
            Kind::JobSubmitter(jobs) => {
                Box::new(JobScheduler::submitter("S1", FsmConfig::of(variant), jobs))
            }
            Kind::JobFinalizer(jobs, finalize) => Box::new(JobScheduler::finalizer(
                "S2",
                FsmConfig::of(variant),
                jobs,
                finalize,
            )),
            Kind::WsClient(jobs) => Box::new(WsClient::new("C", &jobs)),
            Kind::WsScheduler => Box::new(WsScheduler::new("S1", WsMode::of(variant))),
            Kind::WsNode(length) => Box::new(WsNode::new("N1", length)),
        }
    }
}

fn quota_request() -> impl Strategy<Value = Kind> {
    let counter = prop_oneof![
        Just(Counter::Budget),
        millis(100_000).prop_map(|day| Counter::Daily {
            day,
            from: Duration::ZERO,
        }),
    ];
    (
        (counter, any::<u64>(), small_int(), small_int()),
        (
            millis(5_000),
            any::<bool>(),
            millis(10_000),
            0u32..4,
            millis(1_000),
        ),
        0u32..2,
    )
        .prop_map(
            |((counter, request, estimate, actual), (work, fails, ttl, attempts, retry), inc)| {
                let mut cfg = QuotaConfig::new(Variant::Buggy, counter, "k", request, estimate);
                cfg.actual = actual;
                cfg.work = work;
                cfg.upstream_fails = fails;
                cfg.reservation_ttl = ttl;
                cfg.resolve_attempts_max = attempts;
                cfg.retry_after = retry;
                Kind::Quota(cfg, inc)
            },
        )
}

fn mirror_request() -> impl Strategy<Value = Kind> {
    let reading = prop::sample::select(vec![
        DocFixReading::AfterCommitHook,
        DocFixReading::LuaDeduct,
    ]);
    (reading, any::<u64>(), small_int(), millis(5_000), 0u32..2).prop_map(
        |(reading, request, cost, work, inc)| {
            let cfg = MirrorConfig {
                variant: Variant::Buggy,
                reading,
                account: "k".into(),
                request: racelab_core::RequestId(request),
                cost,
                work,
            };
            Kind::Mirror(cfg, inc)
        },
    )
}

fn warm_request() -> impl Strategy<Value = Kind> {
    (
        any::<u64>(),
        small_int(),
        millis(5_000),
        millis(5_000),
        millis(1_000),
        0u32..2,
    )
        .prop_map(|(request, cost, work, lock_ttl, poll_every, inc)| {
            let cfg = WarmConfig {
                variant: Variant::Buggy,
                account: "k".into(),
                request: racelab_core::RequestId(request),
                cost,
                work,
                lock_ttl,
                poll_every,
            };
            Kind::Warm(cfg, inc)
        })
}

fn mirror_helper() -> impl Strategy<Value = Kind> {
    prop_oneof![
        millis(5_000).prop_map(Kind::Reconciler),
        Just(Kind::Warmer),
        millis(5_000).prop_map(Kind::Observer),
    ]
}

fn quota_sweeper() -> impl Strategy<Value = Kind> {
    millis(5_000).prop_map(Kind::QuotaSweeper)
}

fn millis(max: u64) -> impl Strategy<Value = Duration> {
    prop_oneof![4 => 0..max, 1 => Just(0u64), 1 => Just(u64::MAX)].prop_map(Duration::from_ms)
}

fn worker(variant: Variant) -> impl Strategy<Value = Kind> {
    let plan2 = proptest::option::of(
        (
            prop::sample::select(vec![
                RequestIdSource::PerAttempt,
                RequestIdSource::AtEnqueue,
            ]),
            prop::sample::select(vec![LogOrder::EffectThenLog, LogOrder::LogFirst]),
            any::<bool>(),
        )
            .prop_map(|(request_id, order, unique_index)| Plan2 {
                request_id,
                order,
                unique_index,
            }),
    );
    (
        any::<bool>(),
        plan2,
        0u32..3,
        prop_oneof![Just(1u32), Just(2), Just(30)],
    )
        .prop_map(move |(plan1, plan2, incarnation, attempts)| {
            let mut cfg = WorkerConfig::new(variant, DocFixPlans { plan1, plan2 });
            cfg.lock_attempts_max = attempts;
            Kind::Worker(cfg, incarnation)
        })
}

fn terminal() -> impl Strategy<Value = Kind> {
    let scan = (0u64..5_000, scan_job(), small_int()).prop_map(|(at, mut job, qty)| {
        if qty % 3 == 0 {
            job.qty = Quantity(qty);
        }
        PlannedScan {
            at: Timestamp::from_ms(at),
            job,
        }
    });
    prop::collection::vec(scan, 0..4).prop_map(Kind::Terminal)
}

fn checker() -> impl Strategy<Value = Kind> {
    (any::<u64>(), small_int(), millis(10_000), 0u32..4).prop_map(
        |(work_order, qty0, every, rounds)| Kind::Checker {
            work_order: WorkOrderId(work_order),
            qty0: Quantity(qty0),
            every,
            rounds,
        },
    )
}

fn request() -> impl Strategy<Value = Kind> {
    (
        prop::sample::select(vec![Selection::ListAtStart, Selection::EveryAttempt]),
        prop_oneof![0u32..5, Just(u32::MAX)],
        millis(5_000),
        any::<bool>(),
        proptest::option::of(observation()),
    )
        .prop_map(
            |(selection, attempts, stream, report_failures, missed_await)| {
                Kind::Request(RequestConfig {
                    selection,
                    attempts,
                    stream,
                    report_failures,
                    missed_await,
                })
            },
        )
}

fn probe() -> impl Strategy<Value = Kind> {
    let role = prop_oneof![
        endpoints().prop_map(|endpoints| ProbeRole::Monitor { endpoints }),
        Just(ProbeRole::Recovery),
    ];
    (role, millis(5_000), prop_oneof![0u32..4, Just(u32::MAX)]).prop_map(
        |(role, interval, rounds)| {
            Kind::Probe(ProbeConfig {
                role,
                interval,
                rounds,
            })
        },
    )
}

fn add_thread() -> impl Strategy<Value = Kind> {
    (endpoint(), any::<bool>()).prop_map(|(e, split)| Kind::Add(e, split))
}

fn saver() -> impl Strategy<Value = Kind> {
    (
        endpoints(),
        prop::sample::select(vec![SaveStyle::InPlace, SaveStyle::TempAndRename]),
        0u32..3,
    )
        .prop_map(|(adds, style, incarnation)| Kind::Saver(adds, style, incarnation))
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("failure_queue.json".to_string()),
        Just("failure_queue.json.tmp".to_string()),
        text(),
    ]
}

fn local_op() -> impl Strategy<Value = LocalOp> {
    let source = prop::sample::select(vec![Source::Request, Source::Probe]);
    prop_oneof![
        Just(LocalOp::Candidates),
        endpoint().prop_map(|endpoint| LocalOp::Dispatch { endpoint }),
        endpoints().prop_map(|tried| LocalOp::Select { tried }),
        (endpoint(), observation(), source, generation()).prop_map(
            |(endpoint, observation, source, started)| LocalOp::Observe {
                endpoint,
                observation,
                source,
                started,
            }
        ),
        endpoint().prop_map(|endpoint| LocalOp::BeginProbe { endpoint }),
        endpoint().prop_map(|endpoint| LocalOp::FqAdd { endpoint }),
        endpoint().prop_map(|endpoint| LocalOp::FqContains { endpoint }),
        endpoint().prop_map(|endpoint| LocalOp::FqInsertCounted { endpoint }),
        Just(LocalOp::FqFailed),
        (endpoint(), epoch()).prop_map(|(endpoint, epoch)| LocalOp::FqRemove { endpoint, epoch }),
        Just(LocalOp::FqSnapshot),
        proptest::option::of(queue_file()).prop_map(|content| LocalOp::FqLoad { content }),
        path().prop_map(|path| LocalOp::FsTruncate { path }),
        (path(), queue_file()).prop_map(|(path, content)| LocalOp::FsWrite { path, content }),
        (path(), path()).prop_map(|(from, to)| LocalOp::FsRename { from, to }),
        path().prop_map(|path| LocalOp::FsRead { path }),
    ]
}

fn blocks() -> impl Strategy<Value = Kind> {
    let tag = prop_oneof![
        Just(HealthTag::Select),
        endpoint().prop_map(|endpoint| HealthTag::Call { endpoint }),
        endpoint().prop_map(|endpoint| HealthTag::Probe { endpoint }),
        endpoint().prop_map(|endpoint| HealthTag::Observe { endpoint }),
        Just(HealthTag::FailureQueue),
        Just(HealthTag::Persist),
    ];
    prop::collection::vec((local_op(), tag), 0..5).prop_map(Kind::Blocks)
}

fn idem_gateway(variant: Variant) -> impl Strategy<Value = Kind> {
    (
        prop::sample::select(vec![KeySource::ClientStable, KeySource::PerAttempt]),
        prop::sample::select(vec![MarkerOrder::BeforeTx, MarkerOrder::AfterCommit]),
        small_int(),
        prop_oneof![Just(1u32), Just(3), Just(20)],
        millis(10_000),
        0u32..3,
    )
        .prop_map(
            move |(key_source, marker, amount, attempts, lease, incarnation)| {
                let request = BillRequest {
                    key: ClientKey(1),
                    amount: Amount(amount),
                };
                let mut cfg = IdemConfig::new(variant, request, "acct-1");
                cfg.key_source = key_source;
                cfg.marker = marker;
                cfg.attempts_max = attempts;
                cfg.lease = lease;
                cfg.backoff = lease;
                Kind::Idem(Box::new(cfg), incarnation)
            },
        )
}

fn stream_gateway() -> impl Strategy<Value = Kind> {
    (
        prop::sample::select(vec![
            Settlement::Callback,
            Settlement::Queue,
            Settlement::Hold,
        ]),
        prop::sample::select(vec![
            Accounting::ChunksTimes3,
            Accounting::RequireUsage,
            Accounting::Provider,
        ]),
        (any::<u64>(), any::<u32>(), any::<u32>()),
        proptest::option::of(0u32..6),
        0u32..4,
        0u32..2,
    )
        .prop_map(
            |(settlement, accounting, (request, prompt, max), disconnect, lookups, inc)| {
                let cfg = StreamConfig {
                    settlement,
                    accounting,
                    request: racelab_core::RequestId(request),
                    endpoint: EndpointId(1),
                    prompt_tokens: prompt,
                    max_tokens: max,
                    account: "acct-1".into(),
                    disconnect_after: disconnect,
                    lookups_max: lookups,
                };
                Kind::Stream(Box::new(cfg), inc)
            },
        )
}

fn sweeper() -> impl Strategy<Value = Kind> {
    (millis(5_000), millis(20_000), 0u64..20).prop_map(|(every, after, batch_max)| {
        Kind::Sweeper(SweeperConfig {
            endpoint: EndpointId(1),
            account: "acct-1".into(),
            every,
            after,
            batch_max,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The harness

/// Drives one machine through `actions`. `memory`, for the health family, answers fitting
/// local blocks as the simulation would.
fn drive(
    kind: &Kind,
    variant: Variant,
    mut memory: Option<LocalState>,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    let mut machine = kind.build(variant);
    let mut now = Timestamp::ZERO;
    let mut emitted: BTreeMap<OpId, StoreOp> = BTreeMap::new();
    let mut pending: Vec<OpId> = Vec::new();
    let mut answered: Vec<OpId> = Vec::new();
    let mut replies: BTreeMap<OpId, Reply> = BTreeMap::new();
    let mut seq = 0u64;
    for action in actions {
        match action {
            Action::Start { dt } => {
                now = now + Duration::from_ms(*dt);
                machine.handle_start(now);
            }
            Action::Timeout { dt } => {
                now = now + Duration::from_ms(*dt);
                machine.handle_timeout(now);
            }
            Action::TimerDue => {
                if let Some(at) = machine.poll_timeout() {
                    now = now.max(at);
                }
                machine.handle_timeout(now);
            }
            Action::Reply { dt, to, answer } => {
                now = now + Duration::from_ms(*dt);
                let last = emitted.keys().next_back().map_or(0, |id| id.0);
                let id = match to {
                    Target::Pending(i) if !pending.is_empty() => {
                        let id = pending.remove(i % pending.len());
                        answered.push(id);
                        id
                    }
                    Target::Answered(i) if !answered.is_empty() => answered[i % answered.len()],
                    Target::Past(k) => OpId(last.saturating_add(1 + u64::from(*k))),
                    Target::Raw(raw) => OpId(*raw),
                    _ => OpId(0),
                };
                let reply = match (answer, replies.get(&id)) {
                    (Answer::Any(reply), _) => reply.clone(),
                    // A duplicate of a fitting reply is the same reply again: a local block
                    // runs once.
                    (Answer::Fit(_), Some(previous)) => previous.clone(),
                    (Answer::Fit(fit), None) => match emitted.get(&id) {
                        Some(StoreOp::Local(block)) => {
                            match (memory.as_mut(), block.get::<LocalOp>()) {
                                (Some(memory), Some(op)) => {
                                    seq += 1;
                                    Reply::Local(LocalReply {
                                        seq,
                                        result: LocalValue::new(memory.apply(op)),
                                    })
                                }
                                _ => fit.any(&StoreOp::Local(block.clone())),
                            }
                        }
                        Some(op) if fit.happy => fit.happy(op),
                        Some(op) => fit.any(op),
                        None => Reply::Kv(fit.kv.clone()),
                    },
                };
                if emitted.contains_key(&id) {
                    replies.entry(id).or_insert_with(|| reply.clone());
                }
                machine.handle_reply(now, id, reply);
            }
        }
        while let Some(out) = machine.poll_op() {
            prop_assert!(
                !emitted.contains_key(&out.id),
                "op id {:?} emitted twice ({} after {})",
                out.id,
                out.op,
                emitted[&out.id]
            );
            let _ = (out.op.to_string(), format!("{:?}", out.tag), out.tag.kind());
            pending.push(out.id);
            emitted.insert(out.id, out.op);
        }
        while let Some(note) = machine.poll_note() {
            let _ = note.to_string();
        }
        let _ = machine.poll_timeout();
        let _ = machine.is_idle();
    }
    Ok(())
}

fn memory(variant: Variant, threshold: u32) -> LocalState {
    let endpoints: Vec<EndpointId> = (1..=3).map(EndpointId).collect();
    LocalState::new(
        variant,
        HealthConfig {
            failure_threshold: threshold,
        },
        &endpoints,
    )
}

/// Runs `CASES` generated cases of the machines `kinds` builds, in every variant.
fn check<S: Strategy<Value = Kind>>(health: bool, kinds: impl Fn(Variant) -> S) {
    for variant in Variant::ALL {
        let mut runner = TestRunner::new(PropConfig {
            cases: CASES,
            failure_persistence: None,
            ..PropConfig::default()
        });
        let case = (kinds(variant), actions(), 0u32..5);
        let result = runner.run(&case, |(kind, actions, threshold)| {
            let memory = health.then(|| memory(variant, threshold));
            drive(&kind, variant, memory, &actions)
        });
        if let Err(e) = result {
            panic!("{variant:?}: {e}");
        }
    }
}

#[test]
fn workers_never_panic() {
    check(false, worker);
}

#[test]
fn terminals_never_panic() {
    check(false, |_| terminal());
}

#[test]
fn checkers_never_panic() {
    check(false, |_| checker());
}

#[test]
fn request_tasks_never_panic() {
    check(true, |_| request());
}

#[test]
fn probe_tasks_never_panic() {
    check(true, |_| probe());
}

#[test]
fn add_threads_never_panic() {
    check(true, |_| add_thread());
}

#[test]
fn saver_tasks_never_panic() {
    check(true, |_| saver());
}

#[test]
fn block_tasks_never_panic() {
    check(true, |_| blocks());
}

#[test]
fn idem_gateways_never_panic() {
    check(false, idem_gateway);
}

#[test]
fn stream_gateways_never_panic() {
    check(false, |_| stream_gateway());
}

#[test]
fn sweepers_never_panic() {
    check(false, |_| sweeper());
}

#[test]
fn quota_requests_never_panic() {
    check(false, |_| quota_request());
}

#[test]
fn quota_sweepers_never_panic() {
    check(false, |_| quota_sweeper());
}

#[test]
fn usage_consumers_never_panic() {
    check(false, |_| millis(2_000).prop_map(Kind::Consumer));
}

#[test]
fn usage_billers_relays_and_workers_never_panic() {
    check(false, |_| {
        let publish = prop::sample::select(vec![
            Publish::BeforeCommit,
            Publish::AfterCommit,
            Publish::Outbox,
        ]);
        prop_oneof![
            (publish, any::<u64>(), small_int(), 0u32..2).prop_map(|(publish, r, amount, inc)| {
                Kind::Biller(
                    UsageBillConfig {
                        publish,
                        request: racelab_core::RequestId(r),
                        amount: Amount(amount),
                        account: "acct-1".into(),
                    },
                    inc,
                )
            }),
            (millis(2_000), 0u64..8).prop_map(|(every, batch)| Kind::Relay(every, batch)),
            (any::<bool>(), millis(2_000)).prop_map(|(dedup, every)| Kind::Worker08(dedup, every)),
        ]
    });
}

#[test]
fn mirror_requests_never_panic() {
    check(false, |_| mirror_request());
}

#[test]
fn mirror_reconcilers_warmers_and_observers_never_panic() {
    check(false, |_| mirror_helper());
}

#[test]
fn warm_requests_never_panic() {
    check(false, |_| warm_request());
}

#[test]
fn scheduler_nodes_and_dispatchers_never_panic() {
    check(false, |_| {
        let job =
            || (text(), millis(100_000)).prop_map(|(j, at)| (j, Timestamp::from_ms(at.as_ms())));
        prop_oneof![
            millis(200_000).prop_map(Kind::SchedNode),
            (
                prop::collection::vec(job(), 0..4),
                millis(20_000),
                prop::sample::select(vec![
                    Submit::DispatchAndReap,
                    Submit::DispatchThenWatch,
                    Submit::SelectBindThenWatch,
                ]),
                // R-004-06's timeout finalize (a zero deadline and a zero binding TTL too).
                prop::option::of((millis(50_000), millis(50_000))),
            )
                .prop_map(|(jobs, every, submit, timeout)| {
                    Kind::SchedDispatcher(jobs, every, submit, timeout)
                }),
            millis(20_000).prop_map(Kind::SchedMonitor),
            (prop::collection::vec(job(), 0..4), millis(20_000))
                .prop_map(|(jobs, every)| Kind::SchedDurable(jobs, every)),
        ]
    });
}

#[test]
fn scheduler_rollout_machines_never_panic() {
    check(false, |_| {
        prop_oneof![
            (
                millis(200_000),
                prop::collection::vec((0u64..400_000, prop_oneof![0u32..11, Just(u32::MAX)]), 0..4),
                prop_oneof![0u32..10, Just(u32::MAX)],
            )
                .prop_map(|(length, phases, offset)| Kind::RolloutNode(length, phases, offset)),
            prop_oneof![0u64..3, Just(u64::MAX)].prop_map(Kind::RolloutPublisher),
        ]
    });
}

#[test]
fn job_fsm_schedulers_never_panic() {
    check(false, |_| {
        let jobs = || {
            let job = (text(), millis(100_000), millis(100_000), any::<bool>()).prop_map(
                |(id, at, length, fails)| JobSpec {
                    id,
                    at: Timestamp::from_ms(at.as_ms()),
                    length,
                    fails,
                },
            );
            prop::collection::vec(job, 0..4)
        };
        let finalize = (millis(20_000), millis(20_000), millis(100_000)).prop_map(
            |(every, grace, deadline)| Finalize {
                every,
                grace,
                deadline,
            },
        );
        prop_oneof![
            jobs().prop_map(Kind::JobSubmitter),
            (jobs(), finalize).prop_map(|(jobs, f)| Kind::JobFinalizer(jobs, f)),
        ]
    });
}

#[test]
fn access_session_and_context_machines_never_panic() {
    check(false, |_| {
        let at = || millis(5_000).prop_map(|d| Timestamp::from_ms(d.as_ms()));
        let step = prop_oneof![
            Just(StepId::Upstream),
            Just(StepId::Billing),
            (0u8..4).prop_map(StepId::Plugin),
        ];
        let key = prop::sample::select(vec!["usage", "moderation", "trace", "other"]);
        let action = prop_oneof![
            millis(50).prop_map(CtxAction::Wait),
            (key.clone(), small_int()).prop_map(|(key, value)| CtxAction::Write { key, value }),
            (key, step.clone(), millis(20)).prop_map(|(key, after, poll)| CtxAction::Read {
                key,
                after,
                poll
            }),
            Just(CtxAction::Finish),
        ];
        let user = prop::sample::select(vec!["u0", "u1", "nobody"]);
        let perm_request =
            (at(), 0u32..1_000, user, text()).prop_map(|(at, request, user, perm)| {
                PlannedRequest {
                    at,
                    request,
                    user: user.into(),
                    perm,
                }
            });
        let change = (text(), prop::collection::btree_set(text(), 0..3), text()).prop_map(
            |(role, perms, edited_user)| RoleChange {
                role,
                perms,
                edited_user,
            },
        );
        let key_request = (at(), 0u32..1_000, any::<bool>())
            .prop_map(|(at, request, probe)| KeyRequest { at, request, probe });
        let key_action = prop_oneof![
            at().prop_map(KeyAction::Revoke),
            at().prop_map(KeyAction::Unrevoke),
        ];
        let turn = (0u32..5, millis(5_000), millis(5_000)).prop_map(|(turn, stream, lock_ttl)| {
            TurnConfig {
                turn,
                session: "S1".into(),
                stream,
                lock_ttl,
            }
        });
        prop_oneof![
            (step, prop::collection::vec(action, 0..6))
                .prop_map(|(step, plan)| Kind::CtxStep(step, plan)),
            prop::collection::vec(perm_request, 0..4).prop_map(Kind::PermInstance),
            prop::collection::vec(change, 0..3).prop_map(Kind::PermAdmin),
            at().prop_map(Kind::PermSubscriber),
            prop::collection::vec(key_request, 0..4).prop_map(Kind::KeyInstance),
            prop::collection::vec(key_action, 0..3).prop_map(Kind::KeyAdmin),
            turn.prop_map(Kind::Turn),
        ]
    });
}

#[test]
fn routing_clients_probers_and_affinity_requests_never_panic() {
    check(false, |_| {
        prop_oneof![
            (
                any::<u32>(),
                prop_oneof![0u32..5, any::<u32>()],
                millis(2_000)
            )
                .prop_map(|(i, n, stream)| Kind::PoolClient(i, n, stream)),
            (
                any::<u32>(),
                millis(2_000),
                prop_oneof![0u32..5, any::<u32>()]
            )
                .prop_map(|(i, every, rounds)| Kind::PoolProber(i, every, rounds)),
            (any::<u64>(), 0u32..4, millis(2_000), 0u32..2)
                .prop_map(|(seq, first, stream, inc)| Kind::Affinity(seq, first, stream, inc)),
        ]
    });
}

#[test]
fn breaker_instances_never_panic() {
    check(false, |_| {
        let at = prop_oneof![4 => 0u64..3_000, 1 => Just(u64::MAX)].prop_map(Timestamp::from_ms);
        (
            any::<u32>(),
            0u32..3,
            prop::collection::vec((at, 0u32..4), 0..6),
        )
            .prop_map(|(i, inc, plan)| Kind::Breaker(i, inc, plan))
    });
}

#[test]
fn ws_clients_schedulers_and_nodes_never_panic() {
    check(false, |_| {
        prop_oneof![
            prop::collection::vec(
                (text(), millis(30_000).prop_map(|d| Timestamp::ZERO + d)),
                0..4
            )
            .prop_map(Kind::WsClient),
            Just(Kind::WsScheduler),
            millis(10_000).prop_map(Kind::WsNode),
        ]
    });
}
