//! Document 000's routing and access races on real Redis and PostgreSQL through the shipped
//! driver (`racelab_scenarios::real`, `racelab_adapters::run_world`), judged by each race's
//! own judge: R-000-07 (affinity: `set_if_newer` and the versioned compare-and-delete by
//! SHA), R-000-10 (breaker: the `incr_window` counter script by SHA, the `SET NX PX` probe token, the
//! shared OPEN), R-000-11 (permission cache: the epoch in PostgreSQL, pub/sub) and R-000-12
//! (revocation: the row in PostgreSQL, the Redis entry). Each Correct variant holds on a
//! timeline without scripted faults and its `sometimes` properties show the protocol was
//! exercised; where a timeline needs no injected fault, the Buggy or DocFix variant is caught
//! on the real servers by the same judge, naming the property it breaks.
//!
//! A test skips with a banner when a server is unreachable, and fails instead under
//! `RACELAB_REQUIRE_SERVICES=1` (the adapters' own real-server helpers). Each run uses a
//! schema and a key prefix of its own. Wall time: the timelines' own length (8 s for
//! R-000-12's final probes), the tests running side by side.

#[path = "../../adapters/tests/common/mod.rs"]
mod servers;

mod common;

use racelab_adapters::WorldOptions;
use racelab_core::access::{B1, CACHED_ACROSS_CHANGE, I_PERM, REJECTED_FROM_CACHE};
use racelab_core::breaker::{BREAKER_OPENED, C4};
use racelab_core::route::affinity::oracle::{A2, A3, FOREIGN_CLEAR_REFUSED, STALE_WRITE_REFUSED};
use racelab_scenarios::real::{RealError, run_script_real, runnable_scripts};
use racelab_scenarios::{Outcome, Race, Variant, catalog, render_timeline};

/// The servers' options, or `None` after a skip banner.
fn servers(test: &str) -> Option<WorldOptions> {
    let config = servers::runtime().block_on(servers::servers_or_skip(test, true, true))?;
    Some(WorldOptions::new(&config, 1))
}

fn race(id: &str) -> Race {
    catalog()
        .into_iter()
        .find(|r| r.id == id)
        .expect("in the catalog")
}

fn run(id: &str, variant: Variant, script: &str, opts: &WorldOptions) -> Outcome {
    let race = race(id);
    match run_script_real(&race, variant, script, opts) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{id} {} {script}: {e}", variant.as_str()),
    }
}

fn timeline(id: &str, outcome: &Outcome) -> String {
    render_timeline(outcome)
        .into_iter()
        .take(80)
        .collect::<Vec<_>>()
        .join("\n")
        + &format!("\n(race {id})")
}

/// The Correct run completed, held, and each of `seen` `sometimes` properties held in it.
fn holds(id: &str, outcome: &Outcome, seen: &[&str]) {
    assert!(
        !outcome.stuck(),
        "{id} Correct did not complete on the real servers: {:?}",
        outcome.verdict.stuck
    );
    assert!(
        outcome.verdict.holds(),
        "{id} Correct broke {:?} on the real servers:\n{}",
        outcome.verdict.broken(),
        timeline(id, outcome)
    );
    for name in seen {
        assert!(
            outcome.verdict.sometimes.get(*name).copied().unwrap_or(0) > 0,
            "{id} Correct: `{name}` never held, so the run did not exercise what it checks \
             (counts {:?})",
            outcome.verdict.sometimes
        );
    }
}

/// The run completed and broke `property`.
fn caught(id: &str, variant: Variant, outcome: &Outcome, property: &str) {
    assert!(!outcome.stuck(), "{id} {}: stuck", variant.as_str());
    assert!(
        outcome.verdict.broke(property),
        "{id} {} on the real servers should break {property}, broke {:?}:\n{}",
        variant.as_str(),
        outcome.verdict.broken(),
        timeline(id, outcome)
    );
}

#[test]
fn breaker_correct_holds_and_buggy_loses_a_counter_update_on_real_redis() {
    let Some(opts) =
        servers("breaker_correct_holds_and_buggy_loses_a_counter_update_on_real_redis")
    else {
        return;
    };
    // U fails for 2 s under G1's traffic: the breaker opens, probes once per cool-down
    // (the probe token by SET NX PX), closes again; G2 and G3 serve U'.
    let outcome = run("R-000-10", Variant::Correct, "no-fault", &opts);
    holds("R-000-10", &outcome, &[BREAKER_OPENED.name]);
    // At 500 ms G2 and G3 each see a failure of U at the same instant: the document's
    // GET/SET of cb:E1:fails loses one on the real server (C4); incr_window does not.
    let script = "half-open-stampede";
    let correct = run("R-000-10", Variant::Correct, script, &opts);
    holds("R-000-10", &correct, &[BREAKER_OPENED.name]);
    let buggy = run("R-000-10", Variant::Buggy, script, &opts);
    caught("R-000-10", Variant::Buggy, &buggy, C4.name);
}

#[test]
fn revocation_correct_holds_on_real_servers() {
    let Some(opts) = servers("revocation_correct_holds_on_real_servers") else {
        return;
    };
    // At 1.5 s the revocation's Redis entry (PX 1 s from about 0.5 s) may just have expired:
    // the row decides then, so no `sometimes` property is certain.
    let outcome = run("R-000-12", Variant::Correct, "sources-disagree", &opts);
    holds("R-000-12", &outcome, &[]);
    // At 0.7 s the entry is there: a hit rejects without asking the database.
    let outcome = run(
        "R-000-12",
        Variant::Correct,
        "unrevoke-not-propagated",
        &opts,
    );
    holds("R-000-12", &outcome, &[REJECTED_FROM_CACHE.name]);
}

#[test]
fn revocation_buggy_is_caught_on_real_servers() {
    let Some(opts) = servers("revocation_buggy_is_caught_on_real_servers") else {
        return;
    };
    // The admin revokes k1 at 500 ms; G1 reads apikey:status:k1 (active) first at 1.5 s.
    let outcome = run("R-000-12", Variant::Buggy, "sources-disagree", &opts);
    caught("R-000-12", Variant::Buggy, &outcome, B1.name);
}

#[test]
fn permission_cache_correct_holds_and_buggy_is_caught_on_real_servers() {
    let Some(opts) = servers("permission_cache_correct_holds_and_buggy_is_caught_on_real_servers")
    else {
        return;
    };
    let script = "indirect-holder-not-cleared";
    let correct = run("R-000-11", Variant::Correct, script, &opts);
    holds("R-000-11", &correct, &[CACHED_ACROSS_CHANGE.name]);
    let buggy = run("R-000-11", Variant::Buggy, script, &opts);
    caught("R-000-11", Variant::Buggy, &buggy, I_PERM.name);
    let quiet = run("R-000-11", Variant::Correct, "no-change", &opts);
    holds("R-000-11", &quiet, &[]);
}

#[test]
fn affinity_correct_holds_and_the_documents_fix_is_caught_on_real_redis() {
    let Some(opts) =
        servers("affinity_correct_holds_and_the_documents_fix_is_caught_on_real_redis")
    else {
        return;
    };
    // C-1: R1's late success would overwrite R2's newer affinity; C-2: R1's late failure
    // would clear R2's affinity to E2. set_if_newer and the versioned delete refuse both.
    let c1 = run("R-000-07", Variant::Correct, "C-1", &opts);
    holds("R-000-07", &c1, &[STALE_WRITE_REFUSED.name]);
    let c2 = run("R-000-07", Variant::Correct, "C-2", &opts);
    holds("R-000-07", &c2, &[FOREIGN_CLEAR_REFUSED.name]);
    caught(
        "R-000-07",
        Variant::DocFix,
        &run("R-000-07", Variant::DocFix, "C-1", &opts),
        A2.name,
    );
    caught(
        "R-000-07",
        Variant::DocFix,
        &run("R-000-07", Variant::DocFix, "C-2", &opts),
        A3.name,
    );
}

#[test]
fn timelines_with_scripted_faults_are_refused_with_the_runnable_ones_named() {
    // No server needed: the refusal comes before any connection.
    let opts = WorldOptions::new(&racelab_adapters::Config::from_env(), 1);
    let race = race("R-000-12");
    let err = run_script_real(&race, Variant::Correct, "failover-loses-sadd", &opts)
        .expect_err("a timeline with scripted failovers");
    assert!(matches!(err, RealError::ScriptedSteps { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("sources-disagree") && text.contains("explore world"),
        "{text}"
    );
    assert_eq!(
        runnable_scripts(&race),
        vec!["sources-disagree", "unrevoke-not-propagated"]
    );
    let err = run_script_real(&race, Variant::Correct, "no-such", &opts).expect_err("unknown");
    assert!(err.to_string().contains("has no timeline"), "{err}");
}

#[track_caller]
fn check_rejected(args: &[&str], needle: &str) {
    let o = common::racelab(args);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
}

#[test]
fn the_cli_refuses_what_the_real_world_cannot_judge_in_one_line() {
    // No server needed: each refusal comes before any connection.
    check_rejected(
        &["run", "R-000-12", "--world", "real", "--variant", "buggy"],
        "--variant correct",
    );
    check_rejected(
        &[
            "run",
            "R-000-10",
            "--world",
            "real",
            "--variant",
            "correct",
            "--profile",
            "swarm",
        ],
        "explore world",
    );
    check_rejected(
        &[
            "replay",
            "R-000-12",
            "--variant",
            "correct",
            "--script",
            "failover-loses-sadd",
            "--world",
            "real",
        ],
        "scripted steps",
    );
}

#[test]
fn the_cli_runs_correct_seeds_and_a_buggy_timeline_on_real_servers() {
    let test = "the_cli_runs_correct_seeds_and_a_buggy_timeline_on_real_servers";
    if servers(test).is_none() {
        return;
    }
    let o = common::racelab(&[
        "run",
        "R-000-07",
        "--world",
        "real",
        "--variant",
        "correct",
        "--seeds",
        "2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let row: serde_json::Value =
        serde_json::from_str(common::stdout(&o).trim()).expect("one JSON object");
    assert_eq!(row["seeds_run"], 2, "{row}");
    assert_eq!(row["failures"], 0, "{row}");
    assert_eq!(row["verdict_matches"], true, "{row}");
    let o = common::racelab(&[
        "replay",
        "R-000-12",
        "--variant",
        "buggy",
        "--script",
        "sources-disagree",
        "--world",
        "real",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let replayed: serde_json::Value =
        serde_json::from_str(common::stdout(&o).trim()).expect("JSON");
    assert_eq!(replayed["violated"], true, "{replayed}");
}

#[test]
fn a_process_sending_what_the_real_world_cannot_serve_stops_the_run_with_its_name() {
    let test = "a_process_sending_what_the_real_world_cannot_serve_stops_the_run_with_its_name";
    let Some(opts) = servers(test) else {
        return;
    };
    // Document 002's terminal submits its scans to the queue, which is not wired here.
    let race = race("R-002-01");
    let started = std::time::Instant::now();
    let err = racelab_scenarios::real::run_seed_real(
        &race,
        Variant::Correct,
        0,
        racelab_scenarios::Profile::Race,
        &opts,
    )
    .expect_err("the queue is not served");
    let text = err.to_string();
    assert!(
        text.contains("cannot serve") && text.contains("process "),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the run stops at the operation, not at its time limit"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let opts = WorldOptions {
        redis_url: "redis://127.0.0.1:1".into(),
        ..WorldOptions::new(&racelab_adapters::Config::from_env(), 1)
    };
    let err = run_script_real(&race("R-000-10"), Variant::Correct, "no-fault", &opts)
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        text.contains("R-000-10 correct") && text.contains("cannot reach"),
        "{text}"
    );
}
