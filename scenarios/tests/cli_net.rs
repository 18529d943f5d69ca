//! `racelab run/replay --world net`: the explore world's JSON fields, failures that name the
//! command replaying them, byte-identical replays, and one clear line for bad input.

use common::{racelab, stderr, stdout};

mod common;

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[test]
fn a_net_sweep_reports_failures_with_the_explore_fields_and_a_net_replay() {
    let args = [
        "run",
        "R-002-01",
        "--variant",
        "buggy",
        "--world",
        "net",
        "--seeds",
        "60",
        "--json",
    ];
    let o = racelab(&args);
    let text = stdout(&o);
    let net: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON row");
    assert!(
        net["failures"].as_u64().is_some_and(|n| n > 0),
        "the buggy variant fails in the net world: {text}"
    );
    let replay = net["replay"].as_str().expect("a replay command");
    assert!(replay.ends_with("--world net"), "{replay}");
    let explore = racelab(&[
        "run",
        "R-002-01",
        "--variant",
        "buggy",
        "--seeds",
        "1",
        "--json",
    ]);
    let explore: serde_json::Value =
        serde_json::from_str(stdout(&explore).trim()).expect("one JSON row");
    assert_eq!(
        keys(&net),
        keys(&explore),
        "the same JSON fields in both worlds"
    );

    // The printed command replays the failure, byte for byte, twice.
    let mut words: Vec<&str> = replay.split_whitespace().skip(1).collect();
    words.push("--json");
    let first = racelab(&words);
    let second = racelab(&words);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "replays are byte-identical"
    );
    let row: serde_json::Value = serde_json::from_str(stdout(&first).trim()).expect("JSON");
    assert_eq!(row["violated"], serde_json::Value::Bool(true));
    assert_eq!(row["replay"].as_str(), Some(replay));
    let explore_replay = racelab(&[
        "replay",
        "R-002-01",
        "--variant",
        "buggy",
        "--seed",
        "1",
        "--json",
    ]);
    let explore_replay: serde_json::Value =
        serde_json::from_str(stdout(&explore_replay).trim()).expect("JSON");
    assert_eq!(keys(&row), keys(&explore_replay));
}

/// A document-000 race under `--world net`, every variant: Buggy and DocFix fail as the
/// catalog expects, Correct holds, and Buggy's printed net replay reproduces its failure
/// byte for byte.
#[test]
fn a_billing_race_runs_every_variant_in_the_net_world() {
    let o = racelab(&[
        "run",
        "R-000-03",
        "--world",
        "net",
        "--variant",
        "all",
        "--seeds",
        "30",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let row = |variant: &str| {
        rows.iter()
            .find(|r| r["variant"] == variant)
            .unwrap_or_else(|| panic!("a {variant} row in {rows:?}"))
    };
    for r in &rows {
        assert_eq!(r["race"], "R-000-03");
        assert_eq!(r["seeds_run"], 30);
        assert_eq!(r["verdict_matches"], true, "{r}");
    }
    for variant in ["buggy", "docfix"] {
        assert!(
            row(variant)["failures"].as_u64().is_some_and(|n| n > 0),
            "{variant} fails: {}",
            row(variant)
        );
    }
    assert_eq!(row("correct")["failures"], 0, "{}", row("correct"));
    let replay = row("buggy")["replay"].as_str().expect("a replay command");
    assert!(replay.ends_with("--world net"), "{replay}");
    let mut words: Vec<&str> = replay.split_whitespace().skip(1).collect();
    words.push("--json");
    let (first, second) = (racelab(&words), racelab(&words));
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "replays are byte-identical"
    );
    let replayed: serde_json::Value = serde_json::from_str(stdout(&first).trim()).expect("JSON");
    assert_eq!(replayed["violated"], true, "{replayed}");
}

#[track_caller]
fn check_rejected(args: &[&str], needle: &str) {
    let o = racelab(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
}

#[test]
fn bad_world_input_gets_one_clear_line() {
    check_rejected(&["run", "R-002-01", "--world", "moon"], "moon");
    check_rejected(
        &["run", "R-002-06", "--world", "net", "--seeds", "1"],
        "--world explore",
    );
    check_rejected(
        &[
            "replay",
            "R-002-01",
            "--variant",
            "buggy",
            "--script",
            "base",
            "--world",
            "net",
        ],
        "--world explore",
    );
}
