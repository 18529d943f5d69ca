//! End-to-end, Jepsen style: document 002's protocol with 20 workers over real Redis (our own
//! restartable `redis-server`) and PostgreSQL, 10,000 scans with duplicates and retries,
//! while Redis restarts, workers are killed (also right between acquiring a lease and the
//! effect) and a proxy injects latency, stalls and cut connections. The recorded history is
//! judged by the core's oracles and the database is checked directly.
//!
//! `RACELAB_E2E_SCANS` and `RACELAB_E2E_WORKERS` change the size (defaults 10,000 and 20),
//! `RACELAB_E2E_SEED` the seed (default 2).

mod common;

use racelab_adapters::{
    AdapterError, CheckRealOptions, CheckRealReport, FaultKind, FaultOptions, RedisTarget,
    check_real,
};
use racelab_core::Variant;

fn size(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `variant` with every fault; `None` (after a banner) when a server is missing.
fn run(variant: Variant, scans: u64, test: &str) -> Option<CheckRealReport> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let config = rt.block_on(common::reachable_or_skip(test, false, true))?;
    let workers = u16::try_from(size("RACELAB_E2E_WORKERS", 20)).unwrap_or(20);
    let mut opts = CheckRealOptions::new(
        variant,
        workers,
        scans,
        RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
        &config.pg_url,
    );
    opts.seed = size("RACELAB_E2E_SEED", 2);
    opts.faults = FaultOptions::every_kind(3);
    // Generous: a slow, loaded machine must not turn into a false liveness failure.
    opts.time_limit = std::time::Duration::from_secs(300);
    let mut last = 0;
    let result = rt.block_on(check_real(opts, |applied, total| {
        if applied >= last + total / 4 {
            last = applied;
            eprintln!("{test}: {applied}/{total} scans applied");
        }
    }));
    match result {
        Ok(report) => {
            common::ran(test);
            eprintln!(
                "{test} report:\n{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            Some(report)
        }
        Err(e @ AdapterError::Process { .. }) => {
            common::skip(test, &format!("our own redis-server cannot run: {e}"));
            None
        }
        Err(e) => {
            common::ran(test);
            panic!("{test}: the run could not be set up: {e}")
        }
    }
}

#[test]
fn the_correct_protocol_applies_every_scan_exactly_once_under_faults() {
    let scans = size("RACELAB_E2E_SCANS", 10_000);
    let Some(report) = run(Variant::Correct, scans, "e2e correct") else {
        return;
    };
    let f = report.faults_injected;
    assert!(
        report.holds(),
        "the Correct protocol broke an invariant on real servers:\n{:#?}",
        report.violations
    );
    assert!(
        report.quiescent,
        "the run did not drain its queue: {report:?}"
    );
    assert_eq!(report.double_applied_scans, 0, "no scan is applied twice");
    assert!(
        report.requests >= scans && report.submissions > report.requests,
        "duplicates were submitted"
    );
    // Three of each kind are planned on the run's progress (a run that cannot inject one
    // fails with an error), so the report must show them all.
    for kind in FaultKind::WORKERS {
        assert!(
            f.of(kind) >= 3,
            "{kind:?} injected {} times: {f:?}",
            f.of(kind)
        );
    }
}

#[test]
fn the_buggy_protocol_is_caught_double_applying_on_real_servers() {
    let scans = size("RACELAB_E2E_SCANS", 10_000) / 5;
    let Some(report) = run(Variant::Buggy, scans, "e2e buggy") else {
        return;
    };
    eprintln!(
        "Buggy on real servers: {} violation(s), {} scans applied more than once out of {}",
        report.violations.len(),
        report.double_applied_scans,
        report.requests
    );
    // The Buggy terminal passes no dedup id and its workers apply an unguarded `$inc`: every
    // duplicate submission is applied again, so the oracle must see it.
    assert!(
        !report.holds() && report.double_applied_scans > 0,
        "the oracle missed the Buggy protocol's double effects: {report:?}"
    );
}

/// A tiny run reaches its Redis restart milestones within moments, so restarts can land at or
/// after the last scan is applied. The run must still drain and finish: it once waited for a
/// re-submission that nothing was left to make, until its time limit (ten minutes from the
/// CLI). The timeout is only a hang guard; the assertions are on the report.
#[test]
fn a_tiny_run_with_redis_restarts_finishes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let test = "e2e tiny";
    let Some(config) = rt.block_on(common::reachable_or_skip(test, false, true)) else {
        return;
    };
    let mut opts = CheckRealOptions::new(
        Variant::Correct,
        4,
        20,
        RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
        &config.pg_url,
    );
    opts.faults = FaultOptions {
        kinds: vec![FaultKind::RedisRestart],
        per_kind: 3,
    };
    // Well above what a tiny run needs (a few seconds), well below the hang guard.
    opts.time_limit = std::time::Duration::from_secs(60);
    let guard = std::time::Duration::from_secs(120);
    let result =
        rt.block_on(async { tokio::time::timeout(guard, check_real(opts, |_, _| {})).await });
    if let Ok(Err(e @ AdapterError::Process { .. })) = &result {
        common::skip(test, &format!("our own redis-server cannot run: {e}"));
        return;
    }
    common::ran(test);
    let report = match result {
        Err(_) => panic!("the tiny run hung for {guard:?}, past its own time limit"),
        Ok(Err(e)) => panic!("the tiny run could not be set up: {e}"),
        Ok(Ok(report)) => report,
    };
    assert!(
        report.quiescent,
        "the tiny run did not drain before its time limit: {report:?}"
    );
    assert!(report.holds(), "{:#?}", report.violations);
    assert!(
        report.faults_injected.redis_restarts >= 3,
        "Redis was restarted: {report:?}"
    );
}
