//! Document 004's scheduler on real servers, a small run: 3 scheduler instances, 5 worker
//! nodes, 300 jobs, every fault kind of the scheduler run (Redis restart, scheduler kill,
//! node kill, node pause past the lease, cut connections) at least once. The Correct
//! protocol keeps every invariant and its protections are exercised; the document's code
//! (Buggy) and its revision (DocFix) are caught, each violation naming L2 and F1. The full size (3
//! schedulers, 20 nodes, 10,000 jobs, three of every kind) is `racelab check-real --protocol
//! scheduler`.
//!
//! `RACELAB_SCHED_JOBS` changes the size (default 300).

mod common;

use racelab_adapters::{
    AdapterError, FaultKind, FaultOptions, RedisTarget, SchedulerOptions, SchedulerReport,
    check_scheduler,
};
use racelab_core::Variant;

fn jobs() -> u64 {
    std::env::var("RACELAB_SCHED_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Runs `variant` with every scheduler fault kind `per_kind` times; `None` (after a banner)
/// when a server is missing.
fn run(variant: Variant, per_kind: u32, seed: u64, test: &str) -> Option<SchedulerReport> {
    // One run at a time: the protocol's timing is in milliseconds, and runs of this binary
    // in parallel would only compete for the cores.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let config = rt.block_on(common::reachable_or_skip(test, true, true))?;
    let mut opts = SchedulerOptions::new(
        variant,
        3,
        5,
        jobs(),
        RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
        &config.pg_url,
    );
    opts.seed = seed;
    opts.faults = FaultOptions::scheduler(per_kind, false);
    opts.time_limit = std::time::Duration::from_secs(90);
    match rt.block_on(check_scheduler(opts, |_, _| {})) {
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
            panic!("{test}: the run failed: {e}")
        }
    }
}

#[test]
fn the_correct_scheduler_keeps_one_outcome_per_job_under_every_planned_fault() {
    let test = "the_correct_scheduler_keeps_one_outcome_per_job_under_every_planned_fault";
    let Some(report) = run(Variant::Correct, 1, 1, test) else {
        return;
    };
    assert!(report.settled, "{report:#?}");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.outcomes, report.jobs);
    for kind in FaultKind::SCHEDULER {
        assert!(
            report.faults_injected.of(kind) >= 1,
            "{kind:?} injected {} times",
            report.faults_injected.of(kind)
        );
    }
    // The protections were exercised: a node found its lease gone and registered again.
    assert!(
        report.sometimes.get("lease-lost").copied().unwrap_or(0) > 0,
        "{:?}",
        report.sometimes
    );
}

/// Runs `variant` and asserts the violations name L2 (a dead node stays selectable: the
/// code's 3600 s TTLs; the revision's pool set, which every live member's heartbeat
/// refreshes) and F1 (a result accepted from a node the job is no longer bound to: no
/// fencing).
fn caught(variant: Variant, test: &str) {
    let Some(report) = run(variant, 1, 1, test) else {
        return;
    };
    let broken: std::collections::BTreeSet<&str> = report
        .violations
        .iter()
        .map(|v| v.invariant.as_str())
        .collect();
    assert!(broken.contains("L2"), "{variant:?}: {broken:?}");
    assert!(broken.contains("F1"), "{variant:?}: {broken:?}");
}

#[test]
fn the_scheduler_check_catches_the_documents_code() {
    caught(
        Variant::Buggy,
        "the_scheduler_check_catches_the_documents_code",
    );
}

#[test]
fn the_scheduler_check_catches_the_documents_revision() {
    caught(
        Variant::DocFix,
        "the_scheduler_check_catches_the_documents_revision",
    );
}
