//! The `racelab` binary: JSON rows as documented, replays that print their own command, and a
//! clear one-line error with a non-zero exit for every kind of bad input (never a panic).

use common::{racelab, stderr, stdout};

mod common;

#[track_caller]
fn check_rejected(args: &[&str], needle: &str) {
    let o = racelab(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?} should exit 2; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "{args:?} should print one line, got:\n{err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_code_2() {
    check_rejected(&["run", "R-002-1"], "did you mean R-002-01");
    check_rejected(
        &["replay", "R-002-9", "--variant", "buggy", "--seed", "1"],
        "unknown race",
    );
    check_rejected(&["run", "R-002-01", "--seeds", "0"], "--seeds");
    check_rejected(
        &["replay", "R-002-01", "--variant", "buggy", "--seed", "12x"],
        "12x",
    );
    check_rejected(
        &["replay", "R-002-01", "--variant", "buggy", "--seed", "-1"],
        "--seed",
    );
    check_rejected(
        &[
            "replay",
            "R-002-01",
            "--variant",
            "sometimes",
            "--seed",
            "1",
        ],
        "sometimes",
    );
    check_rejected(&["run", "R-002-01", "--all"], "cannot be used with");
    check_rejected(&["run", "R-002-01", "--jobs", "0"], "--jobs");
    check_rejected(&["run", "R-002-01", "--shard", "5/4"], "1 <= K <= N");
    check_rejected(&["run", "R-002-01", "--shard", "two"], "--shard");
    check_rejected(&["run", "R-002-01", "--time", "10"], "unit");
    check_rejected(&["run", "R-002-01", "--time", "0s"], "--time");
    check_rejected(
        &["run", "R-002-01", "--time", "5s", "--shard", "1/2"],
        "give --seeds",
    );
    check_rejected(&["merge"], "required");
    check_rejected(&["run", "R-002-01", "--profile", "swarmy"], "swarmy");
    check_rejected(&["run"], "required");
    check_rejected(
        &[
            "replay",
            "R-002-01",
            "--variant",
            "buggy",
            "--seed",
            "1",
            "--script",
            "base",
        ],
        "cannot be used with",
    );
    check_rejected(
        &[
            "replay",
            "R-002-01",
            "--variant",
            "buggy",
            "--script",
            "nope",
        ],
        "has no timeline",
    );
    check_rejected(&["frobnicate"], "frobnicate");
    check_rejected(&["route-bench", "--seeds", "3"], "--seeds");
    check_rejected(&["route-bench", "linkerd"], "linkerd");
}

#[test]
fn route_bench_json_has_every_scenario_policy_and_target() {
    let o = racelab(&["route-bench", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bench: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(bench["timeout_ms"], 1000);
    let scenarios = bench["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(
        names,
        ["linkerd", "fail-fast", "revoked", "recovers", "drift"]
    );
    for s in scenarios {
        let rows = s["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 11, "{s}");
        for field in [
            "regret_ms",
            "success_per_mille",
            "p50_ms",
            "p99_ms",
            "to_down",
            "probes",
        ] {
            assert!(rows.iter().all(|r| r[field].is_number()), "{field} in {s}");
        }
        assert_eq!(s["target"]["policy"], bench["shipped"]);
    }
    // `--out` writes a page with two charts per scenario, one line per router.
    let dir = std::env::temp_dir().join(format!("racelab-route-bench-{}", std::process::id()));
    let o = racelab(&["route-bench", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = std::fs::read_to_string(dir.join("route-bench.html")).expect("the page");
    assert_eq!(page.matches("<svg").count(), 10);
    assert_eq!(page.matches("</svg>").count(), 10);
    assert_eq!(page.matches("<polyline").count(), 110);
    // A DIR that cannot be created (under a file) is one clear line and exit 2.
    let file = dir.join("route-bench.html");
    check_rejected(
        &["route-bench", "--out", file.join("sub").to_str().unwrap()],
        "cannot write",
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The text table says the same in columns.
    let text = racelab(&["route-bench"]);
    let table = stdout(&text);
    assert!(table.contains("thompson-censored"), "{table}");
    assert!(table.contains("thompson-load"), "{table}");
    assert_eq!(table.matches("target for").count(), 5, "{table}");
    // `--seed` runs the same bench on other upstream answers and draws.
    let o = racelab(&["route-bench", "--json", "--seed", "7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let other: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(other["seed"], 7);
    assert_ne!(other["scenarios"], bench["scenarios"]);
    check_rejected(&["route-bench", "--seed", "x"], "--seed");
}

#[test]
fn run_json_has_the_documented_fields_and_a_replay_command() {
    let o = racelab(&[
        "run",
        "R-002-03",
        "--variant",
        "buggy",
        "--seeds",
        "20",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let row: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("one row")).expect("JSON");
    assert_eq!(row["race"], "R-002-03");
    assert_eq!(row["variant"], "buggy");
    assert_eq!(row["seeds_run"], 20);
    assert_eq!(row["expected"], "fails");
    assert_eq!(row["verdict_matches"], true);
    assert!(row["failures"].as_u64().expect("a count") > 0);
    let seed = row["first_failing_seed"].as_u64().expect("a failing seed");
    assert_eq!(
        row["replay"],
        format!("racelab replay R-002-03 --variant buggy --seed {seed}")
    );
}

#[test]
fn replay_is_byte_identical_and_ends_with_its_own_command() {
    let run = racelab(&[
        "run",
        "R-002-01",
        "--variant",
        "buggy",
        "--seeds",
        "50",
        "--json",
    ]);
    let row: serde_json::Value = serde_json::from_str(stdout(&run).trim()).expect("JSON");
    let seed = row["first_failing_seed"]
        .as_u64()
        .expect("a failing seed")
        .to_string();
    let args = [
        "replay",
        "R-002-01",
        "--variant",
        "buggy",
        "--seed",
        seed.as_str(),
        "--json",
    ];
    let (a, b) = (racelab(&args), racelab(&args));
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout, "two replays of one seed differ");
    let row: serde_json::Value = serde_json::from_str(&stdout(&a)).expect("JSON");
    assert_eq!(row["violated"], true);
    assert_eq!(row["seed"].to_string(), seed);
    assert!(row["trace_hash"].as_str().is_some_and(|h| h.len() == 16));
    assert!(
        row["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("violated"))
    );
    let text = racelab(&[
        "replay",
        "R-002-01",
        "--variant",
        "buggy",
        "--seed",
        seed.as_str(),
    ]);
    let last = stdout(&text).lines().last().unwrap_or_default().to_string();
    assert_eq!(
        last,
        format!("replay: racelab replay R-002-01 --variant buggy --seed {seed}")
    );
}

#[test]
fn shrink_reports_a_minimal_schedule_that_still_fails() {
    let run = racelab(&[
        "run",
        "R-002-03",
        "--variant",
        "buggy",
        "--seeds",
        "50",
        "--json",
    ]);
    let row: serde_json::Value = serde_json::from_str(stdout(&run).trim()).expect("JSON");
    let seed = row["first_failing_seed"]
        .as_u64()
        .expect("a failing seed")
        .to_string();
    let o = racelab(&[
        "shrink",
        "R-002-03",
        "--variant",
        "buggy",
        "--seed",
        seed.as_str(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let kept = row["faults"].as_array().expect("a list").len() as u64;
    assert!(kept <= row["original_faults"].as_u64().expect("a count"));
    assert!(
        row["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("violated"))
    );
    assert_eq!(
        row["replay"],
        format!("racelab shrink R-002-03 --variant buggy --seed {seed}")
    );
    let held = racelab(&["shrink", "R-002-03", "--variant", "correct", "--seed", "1"]);
    assert_eq!(held.status.code(), Some(1));
    assert!(stderr(&held).contains("nothing to shrink"));
}

#[test]
fn list_shows_every_race_with_its_expected_verdicts() {
    let o = racelab(&["list", "--json"]);
    assert!(o.status.success());
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for id in [
        "R-002-01", "R-002-02", "R-002-03", "R-002-04", "R-002-05", "R-002-06",
    ] {
        let row = rows
            .iter()
            .find(|r| r["race"] == id)
            .unwrap_or_else(|| panic!("{id} listed"));
        assert_eq!(row["expected"]["buggy"], "fails");
        assert_eq!(row["expected"]["correct"], "holds");
    }
}

#[test]
fn check_real_reports_the_documented_fields() {
    // The command's plumbing and fields, on the shared Redis (so no Redis restarts; kills and
    // the fault proxy stay on). Robustness under every fault is adapters/tests/e2e.rs's job.
    let redis =
        std::env::var("RACELAB_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let o = racelab(&[
        "check-real",
        "--redis",
        redis.as_str(),
        "--workers",
        "4",
        "--requests",
        "300",
        "--json",
    ]);
    if !o.status.success() && std::env::var_os("RACELAB_REQUIRE_SERVICES").is_none_or(|v| v != "1")
    {
        eprintln!(
            "\n!!! SKIPPED: racelab check-real could not run here: {}\n",
            stderr(&o).trim()
        );
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("JSON");
    assert_eq!(row["requests"], 300);
    for field in ["faults_injected", "violations", "p50_ms", "p99_ms"] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
    assert_eq!(row["violations"].as_array().map(Vec::len), Some(0), "{row}");
    // Planned on progress, three of each kind a shared Redis can take, however fast the run.
    for kind in [
        "worker_kills",
        "kills_after_claim",
        "latency_spikes",
        "stalls",
        "cuts",
    ] {
        assert!(
            row["faults_injected"][kind].as_u64() >= Some(3),
            "{kind}: {row}"
        );
    }
}

#[test]
fn check_real_refuses_bad_protocol_arguments_in_one_line() {
    // Refused before anything connects: no server is needed.
    check_rejected(
        &["check-real", "--protocol", "payments"],
        "[possible values: workorder, gateway, scheduler]",
    );
    check_rejected(
        &["check-real", "--protocol", "scheduler", "--schedulers", "0"],
        "--schedulers",
    );
    check_rejected(
        &["check-real", "--protocol", "scheduler", "--bench"],
        "--protocol gateway",
    );
    check_rejected(&["check-real", "--bench"], "--protocol gateway");
    check_rejected(
        &["check-real", "--protocol", "gateway", "--variant", "docfix"],
        "correct and buggy",
    );
    check_rejected(
        &[
            "check-real",
            "--protocol",
            "gateway",
            "--faults-per-kind",
            "x",
        ],
        "--faults-per-kind",
    );
}

/// Runs `check-real` with `args` on the shared Redis; `None` (after a banner) when the
/// servers are not there and they are not required.
fn check_real_json(args: &[&str]) -> Option<serde_json::Value> {
    let redis =
        std::env::var("RACELAB_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut all = vec!["check-real", "--redis", redis.as_str()];
    all.extend_from_slice(args);
    all.push("--json");
    let o = racelab(&all);
    if o.status.code() == Some(2)
        && std::env::var_os("RACELAB_REQUIRE_SERVICES").is_none_or(|v| v != "1")
    {
        eprintln!(
            "\n!!! SKIPPED: racelab {all:?} could not run here: {}\n",
            stderr(&o).trim()
        );
        return None;
    }
    assert!(o.status.code().is_some_and(|c| c != 2), "{}", stderr(&o));
    Some(serde_json::from_str(stdout(&o).trim()).expect("JSON"))
}

#[test]
fn check_real_gateway_reports_faults_money_and_no_violation() {
    // The shared Redis is never restarted: the other five kinds, three times each.
    let Some(row) = check_real_json(&[
        "--protocol",
        "gateway",
        "--workers",
        "20",
        "--requests",
        "400",
    ]) else {
        return;
    };
    assert_eq!(row["protocol"], "gateway");
    assert_eq!(row["requests"], 400);
    assert_eq!(row["violations"].as_array().map(Vec::len), Some(0), "{row}");
    for kind in [
        "worker_kills",
        "kills_after_claim",
        "latency_spikes",
        "stalls",
        "cuts",
    ] {
        assert!(
            row["faults_injected"][kind].as_u64() >= Some(3),
            "{kind}: {row}"
        );
    }
    let m = &row["money"];
    for field in [
        "idem_initial",
        "stream_charged",
        "provider_billed",
        "quota_used",
    ] {
        assert!(m.get(field).is_some(), "missing money.{field}: {row}");
    }
    for field in ["p50_ms", "p99_ms", "settled"] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
}

#[test]
fn check_real_scheduler_reports_jobs_outcomes_and_dispatch_latency() {
    // A small run on the shared Redis (never restarted), one fault of each other kind.
    let Some(row) = check_real_json(&[
        "--protocol",
        "scheduler",
        "--jobs",
        "150",
        "--nodes",
        "4",
        "--schedulers",
        "3",
        "--faults-per-kind",
        "1",
    ]) else {
        return;
    };
    assert_eq!(row["protocol"], "scheduler");
    assert_eq!(row["jobs"], 150);
    assert_eq!(row["nodes"], 4);
    assert_eq!(row["schedulers"], 3);
    assert_eq!(row["outcomes"], 150, "{row}");
    assert_eq!(row["violations"].as_array().map(Vec::len), Some(0), "{row}");
    assert_eq!(row["faults_injected"]["redis_restarts"], 0, "{row}");
    for kind in ["scheduler_kills", "node_kills", "node_pauses", "cuts"] {
        assert!(
            row["faults_injected"][kind].as_u64() >= Some(1),
            "{kind}: {row}"
        );
    }
    for field in [
        "dispatch_p50_ms",
        "dispatch_p99_ms",
        "sometimes",
        "timing",
        "settled",
    ] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
}

#[test]
fn check_real_gateway_bench_prints_every_row_and_ratio() {
    // Shape only: wall-clock figures are reported, never asserted.
    let Some(row) = check_real_json(&[
        "--protocol",
        "gateway",
        "--bench",
        "--workers",
        "4",
        "--requests",
        "60",
    ]) else {
        return;
    };
    for field in ["ceiling_lua", "ceiling_sql", "ceiling", "buggy", "correct"] {
        for figure in ["throughput_per_s", "p50_ms", "p99_ms"] {
            assert!(
                row[field].get(figure).is_some(),
                "missing {field}.{figure}: {row}"
            );
        }
    }
    for field in [
        "p99_ratio",
        "p99_target_met",
        "throughput_ratio",
        "throughput_target_met",
        "correct_costs",
    ] {
        assert!(row.get(field).is_some(), "missing {field}: {row}");
    }
    assert_eq!(row["correct_violations"], 0, "{row}");
}

#[test]
fn replay_checks_redis_linearizability_on_request() {
    // Seed 8 of R-002-01's swarm has two Redis failovers that lose acknowledged lock writes.
    let args = [
        "replay",
        "R-002-01",
        "--variant",
        "buggy",
        "--seed",
        "8",
        "--profile",
        "swarm",
        "--linearizability",
    ];
    let text = racelab(&args);
    assert!(text.status.success(), "{}", stderr(&text));
    let out = stdout(&text);
    assert!(out.contains("Redis linearizability: "), "{out}");
    assert!(out.contains("not linearizable: lock:wo-"), "{out}");
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let row: serde_json::Value =
        serde_json::from_str(stdout(&racelab(&with_json)).trim()).expect("JSON");
    let lin = &row["linearizability"];
    assert!(lin["not_linearizable"].as_u64().unwrap_or(0) > 0, "{row}");
    // Without the flag nothing is checked.
    let plain: serde_json::Value = serde_json::from_str(
        stdout(&racelab(
            &args[..8]
                .iter()
                .copied()
                .chain(["--json"])
                .collect::<Vec<_>>(),
        ))
        .trim(),
    )
    .expect("JSON");
    assert!(plain.get("linearizability").is_none());
}
