//! The gateway's real-server check (document 000's money protocols) on small runs: the
//! `Correct` protocols hold with every fault kind injected at least three times, and the
//! run catches `Buggy` with a violation naming the broken property. The full size
//! (10,000 requests, 20 workers) is `racelab check-real --protocol gateway`.
//!
//! `RACELAB_GW_REQUESTS` changes the size (default 600).

mod common;

use racelab_adapters::{
    AdapterError, FaultKind, FaultOptions, GatewayOptions, GatewayReport, RedisTarget,
    check_gateway_with_history,
};
use racelab_core::{History, StoreOp, Variant};
use racelab_sim::explore::linear::{LINEAR_BOUND, check_redis, keys_of};

fn requests() -> u64 {
    std::env::var("RACELAB_GW_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

/// Runs `variant` with every fault kind `per_kind` times; `None` (after a banner) when a
/// server is missing.
fn run(variant: Variant, per_kind: u32, test: &str) -> Option<GatewayReport> {
    run_with_history(variant, per_kind, test).map(|(report, _)| report)
}

/// [`run`], with the recorded history.
fn run_with_history(
    variant: Variant,
    per_kind: u32,
    test: &str,
) -> Option<(GatewayReport, History)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let config = rt.block_on(common::reachable_or_skip(test, true, true))?;
    let mut opts = GatewayOptions::new(
        variant,
        20,
        requests(),
        RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
        &config.pg_url,
    );
    opts.seed = 3;
    opts.faults = FaultOptions::every_kind(per_kind);
    opts.time_limit = std::time::Duration::from_secs(120);
    match rt.block_on(check_gateway_with_history(opts, |_, _| {})) {
        Ok((report, history)) => {
            common::ran(test);
            eprintln!(
                "{test} report:\n{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            Some((report, history))
        }
        Err(e @ AdapterError::Process { .. }) => {
            common::skip(test, &format!("our own redis-server cannot run: {e}"));
            None
        }
        Err(e) => {
            common::ran(test);
            panic!("{test}: the run failed: {e}")
        }
    }
}

#[test]
fn the_correct_gateway_conserves_money_under_every_planned_fault() {
    let Some(report) = run(
        Variant::Correct,
        3,
        "the_correct_gateway_conserves_money_under_every_planned_fault",
    ) else {
        return;
    };
    assert!(report.settled, "{report:#?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    for kind in FaultKind::WORKERS {
        assert!(
            report.faults_injected.of(kind) >= 3,
            "{kind:?} injected {} times",
            report.faults_injected.of(kind)
        );
    }
    assert!(report.duplicate_submissions > 0 && report.concurrent_retries > 0);
    assert!(report.cancelled_streams > 0 && report.quota_requests > 0);
    let m = report.money;
    // To the unit, from PostgreSQL directly.
    assert_eq!(m.idem_final, m.idem_initial - m.idem_charged, "{m:?}");
    assert_eq!(m.stream_final, m.stream_initial - m.stream_charged, "{m:?}");
    assert_eq!(m.stream_charged, m.provider_billed, "{m:?}");
    assert_eq!(m.open_holds, 0);
    assert_eq!(m.quota_used, m.quota_expected_used, "{m:?}");
    assert_eq!(m.quota_reserved, 0, "{m:?}");
}

#[test]
fn the_gateway_check_catches_the_buggy_protocols() {
    let Some(report) = run(
        Variant::Buggy,
        3,
        "the_gateway_check_catches_the_buggy_protocols",
    ) else {
        return;
    };
    let broken: std::collections::BTreeSet<&str> = report
        .violations
        .iter()
        .map(|v| v.invariant.as_str())
        .collect();
    // The in-memory budget never refuses (demand is over every budget), and a stream whose
    // client disconnects is never charged though the provider billed it.
    assert!(broken.contains("I-LIMIT"), "{broken:?}");
    assert!(broken.contains("I-BILL-1"), "{broken:?}");
}

#[test]
fn redis_keys_are_linearizable_without_faults_and_flagged_where_a_restart_erased_writes() {
    let test =
        "redis_keys_are_linearizable_without_faults_and_flagged_where_a_restart_erased_writes";
    let Some((_, quiet)) = run_with_history(Variant::Correct, 0, test) else {
        return;
    };
    let report = check_redis(&quiet, LINEAR_BOUND);
    let (ok, bad, unknown) = report.counts();
    eprintln!("fault-free: {report}");
    assert_eq!(bad, 0, "{:?}", report.violating_keys());
    assert!(ok > 100 && unknown * 10 < ok, "{report}");

    let Some((_, faulty)) = run_with_history(Variant::Correct, 3, test) else {
        return;
    };
    let report = check_redis(&faulty, LINEAR_BOUND);
    eprintln!("with faults: {report}");
    let restarts: Vec<_> = faulty.redis_restarts();
    assert!(restarts.len() >= 3);
    // Every key flagged had a write acknowledged by Redis from before a restart.
    for bad in report.violations() {
        let explained = faulty.ops.iter().any(|rec| {
            matches!(&rec.op, StoreOp::Kv(op) if keys_of(op).unwrap_or_default().iter().any(|k| bad.keys.iter().any(|b| b == k)))
                && rec.completed_at.is_some()
                && restarts.iter().any(|&r| rec.invoked_at <= r)
        });
        assert!(
            explained,
            "{bad:?} flagged without an acknowledged write before a restart"
        );
    }
}
