//! `racelab check-real`: document 002's protocol with many workers against real Redis and
//! PostgreSQL under injected faults, judged by the same oracles.

use std::process::ExitCode;

use racelab_scenarios::Variant;

use super::output::{clear, progress_bar};

/// Runs `racelab check-real` and turns the violations found into the exit code (2 when the
/// run itself fails).
pub(crate) fn check_real(
    redis: Option<String>,
    postgres: Option<String>,
    workers: u16,
    requests: u64,
    variant: Variant,
    seed: u64,
    json: bool,
) -> ExitCode {
    use racelab_adapters::{CheckRealOptions, Config, FaultOptions, RedisTarget};
    let config = Config::from_env();
    let pg_url = postgres.unwrap_or(config.pg_url);
    let shared = redis.is_some();
    let target = match redis {
        Some(url) => RedisTarget::Url(url),
        None => RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
    };
    let mut opts = CheckRealOptions::new(variant, workers, requests, target, &pg_url);
    opts.seed = seed;
    opts.faults = FaultOptions {
        // A shared server is never restarted.
        redis_restarts: if shared { 0 } else { 3 },
        worker_kills: 3,
        kills_after_lease: 3,
        proxy: true,
        every: std::time::Duration::from_millis(400),
    };
    opts.time_limit = std::time::Duration::from_secs(600);
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
    let bar = progress_bar(
        json,
        requests,
        "check-real [{bar:40}] {pos}/{len} scans applied (eta {eta})",
    );
    let result = runtime.block_on(racelab_adapters::check_real(opts, |applied, _| {
        if let Some(b) = &bar {
            b.set_position(applied);
        }
    }));
    clear(bar);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let f = &report.faults_injected;
        out!(
            "{} variant: {} scans, {} workers; faults: {} Redis restarts, {} worker kills, {} kills after a lease, {} latency spikes, {} stalled and {} cut connections",
            report.variant,
            report.requests,
            report.workers,
            f.redis_restarts,
            f.worker_kills,
            f.kills_after_lease,
            f.latency_spikes,
            f.stalled_connections,
            f.cut_connections
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
    }
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
