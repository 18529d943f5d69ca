//! `racelab check-real`: a protocol with many workers against real Redis and PostgreSQL under
//! planned faults, judged by the same oracles: document 002's work orders (`--protocol
//! workorder`, the default), document 000's gateway (`--protocol gateway`, with `--bench`
//! for its speed against a ceiling measured in the same run) or document 004's scheduler
//! (`--protocol scheduler`).

use std::process::ExitCode;

use racelab_adapters::{
    BenchOptions, BenchReport, CheckRealOptions, Config, FaultCounts, FaultKind, FaultOptions,
    GatewayOptions, GatewayReport, P99_RATIO_MAX, RedisTarget, SchedulerOptions, SchedulerReport,
    THROUGHPUT_SHARE_MIN,
};
use racelab_scenarios::Variant;

use super::output::{clear, progress_bar};

/// Which protocol `check-real` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Document 002.
    Workorder,
    /// Document 000's gateway.
    Gateway,
    /// Document 004's scheduler.
    Scheduler,
}

/// The command's arguments.
#[derive(Clone, Debug)]
pub(crate) struct CheckRealArgs {
    pub(crate) protocol: Protocol,
    pub(crate) redis: Option<String>,
    pub(crate) postgres: Option<String>,
    pub(crate) workers: u16,
    pub(crate) requests: u64,
    /// Scheduler: jobs, worker nodes, scheduler instances.
    pub(crate) jobs: u64,
    pub(crate) nodes: u16,
    pub(crate) schedulers: u16,
    pub(crate) variant: Variant,
    pub(crate) faults_per_kind: u32,
    pub(crate) bench: bool,
    pub(crate) seed: u64,
    pub(crate) json: bool,
}

/// Runs `racelab check-real` and turns the violations found into the exit code (2 when the
/// run itself fails: a server down, a fault plan that could not be carried out, bad input).
pub(crate) fn check_real(args: CheckRealArgs) -> ExitCode {
    if args.bench && args.protocol != Protocol::Gateway {
        eprintln!("error: --bench measures the gateway: add --protocol gateway");
        return ExitCode::from(2);
    }
    if args.protocol == Protocol::Gateway && args.variant == Variant::DocFix {
        eprintln!(
            "error: the gateway run has the variants correct and buggy (the document's \
             proposals are judged in the simulated worlds: racelab run R-000-03 --variant docfix)"
        );
        return ExitCode::from(2);
    }
    let config = Config::from_env();
    let pg_url = args.postgres.clone().unwrap_or(config.pg_url);
    let shared = args.redis.is_some();
    let target = match args.redis.clone() {
        Some(url) => RedisTarget::Url(url),
        None => RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
    };
    // A shared server is never restarted.
    let faults = if args.protocol == Protocol::Scheduler {
        FaultOptions::scheduler(args.faults_per_kind, shared)
    } else if shared {
        FaultOptions::shared_redis(args.faults_per_kind)
    } else {
        FaultOptions::every_kind(args.faults_per_kind)
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match (args.protocol, args.bench) {
        (Protocol::Workorder, _) => workorder(&args, &runtime, target, &pg_url, faults),
        (Protocol::Gateway, false) => gateway(&args, &runtime, target, &pg_url, faults),
        (Protocol::Gateway, true) => bench(&args, &runtime, target, &pg_url),
        (Protocol::Scheduler, _) => scheduler(&args, &runtime, target, &pg_url, faults),
    }
}

fn scheduler(
    args: &CheckRealArgs,
    runtime: &tokio::runtime::Runtime,
    target: RedisTarget,
    pg_url: &str,
    faults: FaultOptions,
) -> ExitCode {
    let mut opts = SchedulerOptions::new(
        args.variant,
        args.schedulers,
        args.nodes,
        args.jobs,
        target,
        pg_url,
    );
    opts.seed = args.seed;
    opts.faults = faults;
    opts.time_limit = std::time::Duration::from_secs(600);
    let result = with_progress(
        args.json,
        args.jobs,
        "jobs told their outcome",
        |progress| {
            runtime.block_on(racelab_adapters::check_scheduler_with_history(
                opts, progress,
            ))
        },
    );
    finish(
        args.json,
        result,
        |r| r.violations.is_empty(),
        print_scheduler,
    )
}

fn print_scheduler(r: &SchedulerReport) {
    let t = &r.timing;
    out!(
        "scheduler {} variant: {} jobs, {} schedulers, {} nodes; lease {} ms renewed every {} \
         ms (fenced: {}), T_dead {} ms, jobs of {} ms submitted over {} ms",
        r.variant,
        r.jobs,
        r.schedulers,
        r.nodes,
        t.node_ttl_ms,
        t.heartbeat_ms,
        t.fenced,
        t.t_dead_ms,
        t.job_ms,
        t.submit_window_ms
    );
    out!(
        "faults: {}",
        faults_line(&r.faults_injected, &FaultKind::SCHEDULER)
    );
    out!(
        "outcomes stored: {} of {} jobs; results accepted: {}; dispatch latency p50 {} ms, p99 \
         {} ms; {:.0} jobs/s; operations {} ({} unknown outcomes, {} recovered); settled: {}",
        r.outcomes,
        r.jobs,
        r.results_accepted,
        r.dispatch_p50_ms,
        r.dispatch_p99_ms,
        r.jobs_per_second,
        r.operations,
        r.unknown_outcomes,
        r.recovered,
        r.settled
    );
    let sometimes: Vec<String> = r
        .sometimes
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    out!("protections exercised: {}", sometimes.join(", "));
    if r.violations.is_empty() {
        out!(
            "no violation: every job has exactly one outcome, no binding to a dead node, no stale result accepted"
        );
    } else {
        for v in &r.violations {
            out!("{} violated: {}", v.invariant, v.explanation);
        }
    }
}

fn workorder(
    args: &CheckRealArgs,
    runtime: &tokio::runtime::Runtime,
    target: RedisTarget,
    pg_url: &str,
    faults: FaultOptions,
) -> ExitCode {
    let mut opts = CheckRealOptions::new(args.variant, args.workers, args.requests, target, pg_url);
    opts.seed = args.seed;
    opts.faults = faults;
    opts.time_limit = std::time::Duration::from_secs(600);
    let result = with_progress(args.json, args.requests, "scans applied", |progress| {
        runtime.block_on(racelab_adapters::check_real_with_history(opts, progress))
    });
    finish(
        args.json,
        result,
        |r| r.violations.is_empty(),
        |report| {
            out!(
                "workorder {} variant: {} scans, {} workers",
                report.variant,
                report.requests,
                report.workers
            );
            out!(
                "faults: {}",
                faults_line(&report.faults_injected, &FaultKind::WORKERS)
            );
            out!(
                "operation latency p50 {} ms, p99 {} ms; quiescent: {}",
                report.p50_ms,
                report.p99_ms,
                report.quiescent
            );
            if report.violations.is_empty() {
                out!("no violation: every scan applied exactly once");
            } else {
                for v in &report.violations {
                    out!("{} violated: {}", v.invariant, v.explanation);
                }
            }
        },
    )
}

fn gateway(
    args: &CheckRealArgs,
    runtime: &tokio::runtime::Runtime,
    target: RedisTarget,
    pg_url: &str,
    faults: FaultOptions,
) -> ExitCode {
    let mut opts = GatewayOptions::new(args.variant, args.workers, args.requests, target, pg_url);
    opts.seed = args.seed;
    opts.faults = faults;
    opts.time_limit = std::time::Duration::from_secs(600);
    let result = with_progress(args.json, args.requests, "requests finished", |progress| {
        runtime.block_on(racelab_adapters::check_gateway_with_history(opts, progress))
    });
    finish(
        args.json,
        result,
        |r| r.violations.is_empty(),
        print_gateway,
    )
}

/// Runs a real-server check with a progress bar over `len` items counted as `what` ("scans
/// applied"), none under `--json` or off a terminal; `run` hands the adapters' progress
/// callback to the check.
fn with_progress<R>(
    json: bool,
    len: u64,
    what: &str,
    run: impl FnOnce(Box<dyn FnMut(u64, u64) + Send>) -> R,
) -> R {
    let bar = progress_bar(
        json,
        len,
        &format!("check-real [{{bar:40}}] {{pos}}/{{len}} {what} (eta {{eta}})"),
    );
    let shown = bar.clone();
    let result = run(Box::new(move |done, _| {
        if let Some(b) = &shown {
            b.set_position(done);
        }
    }));
    clear(bar);
    result
}

/// Ends a run: a set-up failure is exit code 2; otherwise the report as JSON (with the Redis
/// keys' linearizability added) or as text (`print`, then the linearizability lines), and the
/// exit code from whether it `holds`.
fn finish<R: serde::Serialize>(
    json: bool,
    result: Result<(R, racelab_core::History), racelab_adapters::AdapterError>,
    holds: impl Fn(&R) -> bool,
    print: impl Fn(&R),
) -> ExitCode {
    let (report, history) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let linear = super::linear::check(&history);
    if json {
        out!("{}", with_linearizability(&report, &linear));
    } else {
        print(&report);
        print_linearizability(&history, &linear);
    }
    verdict_code(holds(&report))
}

/// The report as JSON with the Redis keys' linearizability added (`linearizability`).
fn with_linearizability(
    report: &impl serde::Serialize,
    linear: &racelab_sim::explore::linear::LinearReport,
) -> serde_json::Value {
    let mut row = serde_json::to_value(report).unwrap_or_default();
    if let Some(map) = row.as_object_mut() {
        map.insert("linearizability".into(), super::linear::json(linear));
    }
    row
}

/// The Redis keys' linearizability, after the verdict. Informative: Redis without
/// persistence loses acknowledged writes at a restart, which the protocols must survive and
/// which the checker shows key by key; it does not change the exit code.
fn print_linearizability(
    history: &racelab_core::History,
    linear: &racelab_sim::explore::linear::LinearReport,
) {
    for line in super::linear::lines(history, linear) {
        out!("{line}");
    }
}

fn print_gateway(r: &GatewayReport) {
    out!(
        "gateway {} variant: {} requests, {} workers ({} idempotent: {} later duplicates, {} \
         concurrent same-key retries; {} streamed: {} cancelled by the client; {} quota)",
        r.variant,
        r.requests,
        r.workers,
        r.idem_requests,
        r.duplicate_submissions,
        r.concurrent_retries,
        r.stream_requests,
        r.cancelled_streams,
        r.quota_requests
    );
    out!(
        "faults: {}",
        faults_line(&r.faults_injected, &FaultKind::WORKERS)
    );
    let m = &r.money;
    out!(
        "money: idempotent accounts {} -> {} (ledger {}); streaming account {} -> {} (ledger \
         {}, provider billed {}, holds open {}); quota used {} (ledger {}), reserved {}",
        m.idem_initial,
        m.idem_final,
        m.idem_charged,
        m.stream_initial,
        m.stream_final,
        m.stream_charged,
        m.provider_billed,
        m.open_holds,
        m.quota_used,
        m.quota_expected_used,
        m.quota_reserved
    );
    out!(
        "request latency p50 {:.1} ms, p99 {:.1} ms; {:.0} requests/s; operations {} ({} \
         unknown outcomes, {} charges found committed in the ledger); settled: {}",
        r.p50_ms,
        r.p99_ms,
        r.requests_per_second,
        r.operations,
        r.unknown_outcomes,
        r.charges_recovered,
        r.settled
    );
    if r.violations.is_empty() {
        out!("no violation: money conserved to the unit, every invariant held");
    } else {
        for v in &r.violations {
            out!("{} violated: {}", v.invariant, v.explanation);
        }
    }
}

fn bench(
    args: &CheckRealArgs,
    runtime: &tokio::runtime::Runtime,
    target: RedisTarget,
    pg_url: &str,
) -> ExitCode {
    let opts = BenchOptions {
        workers: args.workers,
        requests: args.requests,
        redis: target,
        pg_url: pg_url.into(),
        seed: args.seed,
    };
    let report = match runtime.block_on(racelab_adapters::bench_gateway(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print_bench(&report);
    }
    // The figures are measurements, not a verdict; a Correct run with a violation is one.
    verdict_code(report.correct_violations == 0)
}

fn print_bench(r: &BenchReport) {
    out!(
        "gateway bench: {} concurrent clients, {} requests per row, no faults",
        r.workers,
        r.requests
    );
    out!(
        "{:<44} {:>12} {:>10} {:>10}",
        "",
        "requests/s",
        "p50 ms",
        "p99 ms"
    );
    for f in [
        &r.ceiling_lua,
        &r.ceiling_sql,
        &r.ceiling,
        &r.buggy,
        &r.correct,
    ] {
        out!(
            "{:<44} {:>12.0} {:>10.2} {:>10.2}",
            f.name,
            f.throughput_per_s,
            f.p50_ms,
            f.p99_ms
        );
    }
    let met = |b: bool| if b { "met" } else { "NOT met" };
    out!(
        "Correct p99 / Buggy p99 = {:.2} (target <= {P99_RATIO_MAX:.2}: {})",
        r.p99_ratio,
        met(r.p99_target_met)
    );
    out!(
        "Correct throughput / ceiling = {:.2} (target >= {THROUGHPUT_SHARE_MIN:.2}: {})",
        r.throughput_ratio,
        met(r.throughput_target_met)
    );
    out!(
        "violations without faults: buggy {}, correct {}",
        r.buggy_violations,
        r.correct_violations
    );
    out!("latency per kind of request (p50 / p99 ms):");
    for (b, c) in r.buggy_by_kind.iter().zip(&r.correct_by_kind) {
        out!(
            "  {:<24} buggy {:>8.2} / {:>8.2}   correct {:>8.2} / {:>8.2}",
            c.kind,
            b.p50_ms,
            b.p99_ms,
            c.p50_ms,
            c.p99_ms
        );
    }
    if !(r.p99_target_met && r.throughput_target_met) {
        out!("what each operation of the Correct path costs (heaviest first):");
        out!(
            "  {:<44} {:>8} {:>9} {:>7} {:>7}",
            "operation",
            "per req",
            "mean ms",
            "p50 ms",
            "p99 ms"
        );
        for c in &r.correct_costs {
            out!(
                "  {:<44} {:>8.2} {:>9.2} {:>7} {:>7}",
                c.operation,
                c.per_request,
                c.mean_ms,
                c.p50_ms,
                c.p99_ms
            );
        }
    }
}

fn faults_line(f: &FaultCounts, kinds: &[FaultKind]) -> String {
    let mut parts: Vec<String> = kinds
        .iter()
        .map(|k| format!("{} {}", f.of(*k), k.name()))
        .collect();
    let stalls = kinds.contains(&FaultKind::StalledConnection);
    parts.push(if stalls {
        format!(
            "({} connections stalled, {} cut)",
            f.stalled_connections, f.cut_connections
        )
    } else {
        format!("({} connections cut)", f.cut_connections)
    });
    parts.join(", ")
}

fn verdict_code(holds: bool) -> ExitCode {
    if holds {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
