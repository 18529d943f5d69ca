//! Sweeps on every core and across machines: `--jobs N` gives the one-thread summary, the
//! shards of `--shard K/N` merged by `racelab merge` give the whole range's matrix, and a
//! merge refuses overlapping shards and flags missing ones.

use std::path::PathBuf;

use common::{race, racelab, stderr, stdout};
use racelab_scenarios::{Shard, SweepPlan, Variant, sweep, sweep_plan};

mod common;

/// Races with failing and holding variants, and one whose Correct variant sees protections.
const RACES: [&str; 2] = ["R-002-01", "R-003-03"];

#[test]
fn threads_give_the_one_thread_summary() {
    for id in RACES {
        let race = race(id);
        for variant in Variant::ALL {
            let one = sweep(&race, variant, 7, 300, |_| {});
            for jobs in [2, 3, 8] {
                let many = sweep_plan(&race, variant, SweepPlan::seeds(7, 300).jobs(jobs), |_| {});
                assert_eq!(one, many, "{id} {} on {jobs} threads", variant.as_str());
            }
            if variant == Variant::Buggy {
                assert!(one.failures > 0, "{id} buggy: the sweep must see failures");
            }
        }
    }
}

#[test]
fn merged_parts_give_the_whole_sweep() {
    let race = race("R-002-01");
    let whole = sweep(&race, Variant::Buggy, 0, 250, |_| {});
    let mut merged = racelab_scenarios::Sweep::default();
    for index in (1..=4).rev() {
        let (start, count) = Shard { index, of: 4 }.range(0, 250);
        merged.merge(&sweep(&race, Variant::Buggy, start, count, |_| {}));
    }
    assert_eq!(whole, merged);
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("racelab-shards-{}-{name}", std::process::id()))
}

/// Runs `racelab run` with `extra` arguments and `--json`, returning its lines.
fn run_json(extra: &[&str]) -> String {
    let mut args = vec!["run", RACES[0], RACES[1], "--seeds", "120", "--json"];
    args.extend_from_slice(extra);
    let o = racelab(&args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn jobs_do_not_change_the_output() {
    assert_eq!(run_json(&["--jobs", "1"]), run_json(&["--jobs", "2"]));
}

#[test]
fn shards_merge_into_the_whole_matrix() {
    let whole = run_json(&["--jobs", "1"]);
    let files: Vec<PathBuf> = (1..=3)
        .map(|k| {
            let shard = format!("{k}/3");
            let path = temp(&format!("{k}.json"));
            std::fs::write(&path, run_json(&["--shard", &shard])).expect("temp file");
            path
        })
        .collect();
    let paths: Vec<&str> = files
        .iter()
        .map(|p| p.to_str().expect("utf-8 path"))
        .collect();

    let mut args = vec!["merge", "--json"];
    args.extend_from_slice(&paths);
    let o = racelab(&args);
    assert!(o.status.success(), "merge failed: {}", stderr(&o));
    let merged: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("merge prints JSON lines"))
        .collect();
    let whole: Vec<serde_json::Value> = whole
        .lines()
        .map(|l| serde_json::from_str(l).expect("run prints JSON lines"))
        .collect();
    assert_eq!(merged.len(), whole.len());
    for (m, w) in merged.iter().zip(&whole) {
        for field in [
            "race",
            "variant",
            "seeds_run",
            "failures",
            "first_failing_seed",
            "stuck",
            "store_ops",
            "sometimes",
            "expected",
            "verdict_matches",
            "replay",
        ] {
            assert_eq!(
                m[field], w[field],
                "{field} of {} {}",
                w["race"], w["variant"]
            );
        }
    }

    // A shard left out: the matrix says so and the exit code fails.
    let o = racelab(&["merge", paths[0], paths[2]]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("2/3 not given"), "{}", stdout(&o));

    // A shard given twice is refused, naming both lines.
    let o = racelab(&["merge", paths[0], paths[1], paths[0]]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("overlap"), "{}", stderr(&o));

    for path in files {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn a_shard_alone_settles_only_what_it_can() {
    // Shard 1 of 40 of 40 seeds is one seed: R-002-01 Buggy may well not fail in it, which
    // only the merge can judge, so the shard's run succeeds ...
    let o = racelab(&["run", "R-002-01", "--seeds", "40", "--shard", "1/40"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("shard 1/40"), "{}", stdout(&o));
}

#[test]
fn bad_merge_input_gets_a_clear_error() {
    let path = temp("bad.json");
    std::fs::write(&path, "{\"race\": \"R-002-01\"}\n").expect("temp file");
    let o = racelab(&["merge", path.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(":1:") && err.contains("missing"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::write(&path, "not json\n").expect("temp file");
    let o = racelab(&["merge", path.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a `racelab run --json` line"));
    let _ = std::fs::remove_file(path);

    let o = racelab(&["merge", "/nonexistent/racelab.json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"));
}

#[test]
fn a_time_budget_stops_the_sweep_and_reports_the_seeds_run() {
    let o = racelab(&[
        "run",
        "R-003-03",
        "--variant",
        "correct",
        "--time",
        "1s",
        "--json",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON row");
    let seeds = row["seeds_run"].as_u64().expect("seeds_run");
    assert!(seeds > 0, "{row}");
    assert_eq!(row["verdict_matches"], true, "{row}");
}
