//! `racelab check-real --protocol gateway --bench` (AC-000-5): the gateway's speed on real
//! servers, measured back to back in one run on the same machine and servers, with the
//! same client code and the same number of concurrent clients:
//!
//! - (a) the ceiling: each client calls one trivial Lua script (`return 1`) by SHA over the
//!   adapters' Redis connection, and runs one trivial single-statement transaction (an
//!   autocommit `UPDATE` of its own row) over the adapters' PostgreSQL session; each alone,
//!   and the two in a row as one ceiling "request";
//! - (b) `Buggy` and (c) `Correct`: [`crate::check_gateway`] on the same fault-free
//!   workload (same seed, same requests).
//!
//! It reports throughput, p50 and p99 of each, the document's criterion (Correct p99 at most
//! 1.10 × Buggy's) and the (Correct throughput at least half the ceiling), whether
//! each holds, and what each operation of the Correct path costs (from the recorded history:
//! client-side times at millisecond resolution, so the mean is the figure to read). Wall
//! clock figures are reported, never asserted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use racelab_core::billing::ACCOUNTS;
use racelab_core::{
    Assign, Cond, Expr, History, Row, SqlOp, SqlReply, SqlStmt, StoreOp, Value, Variant,
};

use crate::AdapterError;
use crate::check::RedisTarget;
use crate::check_gateway::{
    GatewayOptions, GatewayReport, KindLatency, check_gateway_with_history, percentile,
};
use crate::fault_plan::FaultOptions;
use crate::postgres::PgSql;
use crate::redis_conn::{Answer, RedisConn};
use crate::redis_server::OwnRedis;

/// The parameters of [`bench_gateway`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Concurrent clients (the gateway's workers, and the ceiling's clients).
    pub workers: u16,
    /// Requests per measurement.
    pub requests: u64,
    /// The Redis to use (`Spawn`: our own, started once for the whole bench).
    pub redis: RedisTarget,
    /// The PostgreSQL URL.
    pub pg_url: String,
    /// The workload's seed.
    pub seed: u64,
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchFigures {
    /// What was measured.
    pub name: String,
    /// Requests (or operations) completed.
    pub requests: u64,
    /// Per second.
    pub throughput_per_s: f64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
}

/// What one kind of operation of the Correct path costs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpCost {
    /// The operation: its meaning to the protocol (tag kind) and the store.
    pub operation: String,
    /// How many there were per request.
    pub per_request: f64,
    /// Mean latency (ms; client side, from millisecond timestamps).
    pub mean_ms: f64,
    /// Median latency (ms, whole milliseconds).
    pub p50_ms: u64,
    /// 99th percentile latency (ms, whole milliseconds).
    pub p99_ms: u64,
}

/// The bench's table and ratios.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BenchReport {
    /// Concurrent clients.
    pub workers: u16,
    /// Requests per measurement.
    pub requests: u64,
    /// (a) the trivial Lua script by SHA alone.
    pub ceiling_lua: BenchFigures,
    /// (a) the trivial single-statement transaction alone.
    pub ceiling_sql: BenchFigures,
    /// (a) one of each in a row: the ceiling a request touching both stores can reach.
    pub ceiling: BenchFigures,
    /// (b) the document's protocols.
    pub buggy: BenchFigures,
    /// (c) the correct protocols.
    pub correct: BenchFigures,
    /// Correct p99 / Buggy p99 (the document's target: at most 1.10).
    pub p99_ratio: f64,
    /// Whether `p99_ratio <= 1.10`.
    pub p99_target_met: bool,
    /// Correct throughput / the ceiling's (the target: at least 0.5).
    pub throughput_ratio: f64,
    /// Whether `throughput_ratio >= 0.5`.
    pub throughput_target_met: bool,
    /// What each operation of the Correct path costs (heaviest first).
    pub correct_costs: Vec<OpCost>,
    /// What each operation of the Buggy path costs (heaviest first), for comparison.
    pub buggy_costs: Vec<OpCost>,
    /// Buggy's latency per kind of request.
    pub buggy_by_kind: Vec<KindLatency>,
    /// Correct's latency per kind of request (a concurrent same-key retry waits for the
    /// claim holder: 409 and Retry-After, the rest of its lease).
    pub correct_by_kind: Vec<KindLatency>,
    /// Violations the fault-free runs found (Buggy's protocols break even without faults:
    /// its budget and disconnected streams; Correct's must be 0).
    pub buggy_violations: u64,
    /// Violations of the Correct run.
    pub correct_violations: u64,
}

/// The document's latency criterion: Correct p99 at most this times Buggy's.
pub const P99_RATIO_MAX: f64 = 1.10;
/// The throughput criterion: Correct at least this share of the ceiling.
pub const THROUGHPUT_SHARE_MIN: f64 = 0.5;

/// Runs the bench. Errors are set-up failures.
pub async fn bench_gateway(opts: BenchOptions) -> Result<BenchReport, AdapterError> {
    let mut own = match &opts.redis {
        RedisTarget::Spawn { binary } => Some(OwnRedis::start(binary).await?),
        RedisTarget::Url(_) => None,
    };
    let redis_url = match (&opts.redis, &own) {
        (_, Some(o)) => o.url(),
        (RedisTarget::Url(u), None) => u.clone(),
        (RedisTarget::Spawn { .. }, None) => {
            return Err(AdapterError::InvalidInput("no Redis".into()));
        }
    };
    let result = bench_on(&opts, &redis_url).await;
    if let Some(o) = &mut own {
        o.stop().await;
    }
    result
}

async fn bench_on(opts: &BenchOptions, redis_url: &str) -> Result<BenchReport, AdapterError> {
    let schema = format!("rl_bench_{}_{}", std::process::id(), opts.seed);
    let mut admin = PgSql::connect(&opts.pg_url, &schema).await?;
    admin.reset().await?;
    for w in 0..opts.workers {
        let row = Row::from([("balance".to_string(), Value::Int(0))]);
        admin
            .execute_sql(&SqlOp::exec(SqlStmt::Insert {
                table: ACCOUNTS,
                key: format!("bench-{w}"),
                row,
            }))
            .await?;
    }
    let ceiling = async {
        let lua = ceiling(opts, redis_url, &schema, Ceiling::Lua).await?;
        let sql = ceiling(opts, redis_url, &schema, Ceiling::Sql).await?;
        let both = ceiling(opts, redis_url, &schema, Ceiling::Both).await?;
        Ok::<_, AdapterError>((lua, sql, both))
    }
    .await;
    let _ = admin.drop_schema().await;
    let (ceiling_lua, ceiling_sql, ceiling) = ceiling?;
    let (buggy, buggy_history) = gateway(opts, redis_url, Variant::Buggy).await?;
    let (correct, correct_history) = gateway(opts, redis_url, Variant::Correct).await?;
    let figures = |name: &str, r: &GatewayReport| BenchFigures {
        name: name.into(),
        requests: r.requests,
        throughput_per_s: r.requests_per_second,
        p50_ms: r.p50_ms,
        p99_ms: r.p99_ms,
    };
    let buggy_f = figures("buggy", &buggy);
    let correct_f = figures("correct", &correct);
    let p99_ratio = correct_f.p99_ms / buggy_f.p99_ms.max(0.001);
    let throughput_ratio = correct_f.throughput_per_s / ceiling.throughput_per_s.max(0.001);
    Ok(BenchReport {
        workers: opts.workers,
        requests: opts.requests,
        ceiling_lua,
        ceiling_sql,
        ceiling,
        buggy: buggy_f,
        correct: correct_f,
        p99_ratio,
        p99_target_met: p99_ratio <= P99_RATIO_MAX,
        throughput_ratio,
        throughput_target_met: throughput_ratio >= THROUGHPUT_SHARE_MIN,
        correct_costs: costs(&correct_history, correct.requests),
        buggy_costs: costs(&buggy_history, buggy.requests),
        buggy_by_kind: buggy.latency_by_kind.clone(),
        correct_by_kind: correct.latency_by_kind.clone(),
        buggy_violations: buggy.violations.len() as u64,
        correct_violations: correct.violations.len() as u64,
    })
}

async fn gateway(
    opts: &BenchOptions,
    redis_url: &str,
    variant: Variant,
) -> Result<(GatewayReport, History), AdapterError> {
    let mut g = GatewayOptions::new(
        variant,
        opts.workers,
        opts.requests,
        RedisTarget::Url(redis_url.into()),
        &opts.pg_url,
    );
    g.seed = opts.seed;
    g.faults = FaultOptions::none();
    check_gateway_with_history(g, |_, _| {}).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ceiling {
    Lua,
    Sql,
    Both,
}

/// The trivial script: no key, no work.
const TRIVIAL_LUA: &str = "return 1";

async fn ceiling(
    opts: &BenchOptions,
    redis_url: &str,
    schema: &str,
    what: Ceiling,
) -> Result<BenchFigures, AdapterError> {
    let next = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..opts.workers {
        let next = next.clone();
        let mut redis = RedisConn::new(redis_url)?;
        let mut pg = PgSql::connect(&opts.pg_url, schema).await?;
        let total = opts.requests;
        let script = redis::Script::new(TRIVIAL_LUA);
        let bump = SqlOp::exec(SqlStmt::Update {
            table: ACCOUNTS,
            key: format!("bench-{w}"),
            guard: Cond::True,
            set: vec![Assign::to(
                "balance",
                Expr::col("balance").plus(Expr::int(1)),
            )],
        });
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < total {
                let t = std::time::Instant::now();
                if what != Ceiling::Sql {
                    match redis.eval(&script, &[], &[]).await? {
                        Answer::Value(_) => {}
                        Answer::Error(e) => {
                            return Err(AdapterError::Protocol {
                                what: "Redis",
                                message: format!("the trivial script answered {e}"),
                            });
                        }
                    }
                }
                if what != Ceiling::Lua {
                    match pg.execute_sql(&bump).await? {
                        SqlReply::Rows(rows) if rows.len() == 1 => {}
                        other => {
                            return Err(AdapterError::Protocol {
                                what: "PostgreSQL",
                                message: format!("the trivial transaction answered {other}"),
                            });
                        }
                    }
                }
                latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Ok::<_, AdapterError>(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(AdapterError::Protocol {
                    what: "bench",
                    message: format!("a client task failed: {e}"),
                });
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(0.001);
    all.sort_unstable();
    let name = match what {
        Ceiling::Lua => "ceiling: trivial Lua by SHA",
        Ceiling::Sql => "ceiling: trivial 1-statement transaction",
        Ceiling::Both => "ceiling: one of each",
    };
    Ok(BenchFigures {
        name: name.into(),
        requests: all.len() as u64,
        throughput_per_s: all.len() as f64 / secs,
        p50_ms: percentile(&all, 50) as f64 / 1_000.0,
        p99_ms: percentile(&all, 99) as f64 / 1_000.0,
    })
}

/// Per kind of operation (tag kind and store): count per request, mean, p50, p99.
fn costs(history: &History, requests: u64) -> Vec<OpCost> {
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for op in &history.ops {
        let Some(done) = op.completed_at else {
            continue;
        };
        let store = match &op.op {
            StoreOp::Kv(_) => "Redis",
            StoreOp::Sql(SqlOp::Begin | SqlOp::Commit | SqlOp::Rollback) => "SQL tx control",
            StoreOp::Sql(_) => "SQL",
            StoreOp::Upstream(_) => "provider (in-process)",
            StoreOp::Random(_) => "in-process draw",
            _ => "other",
        };
        let key = format!("{} ({store})", op.tag.kind());
        by.entry(key)
            .or_default()
            .push(done.as_ms().saturating_sub(op.invoked_at.as_ms()));
    }
    let mut out: Vec<OpCost> = by
        .into_iter()
        .map(|(operation, mut l)| {
            l.sort_unstable();
            let sum: u64 = l.iter().sum();
            OpCost {
                operation,
                per_request: l.len() as f64 / requests.max(1) as f64,
                mean_ms: sum as f64 / l.len().max(1) as f64,
                p50_ms: percentile(&l, 50),
                p99_ms: percentile(&l, 99),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.per_request * b.mean_ms)
            .partial_cmp(&(a.per_request * a.mean_ms))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    out
}
