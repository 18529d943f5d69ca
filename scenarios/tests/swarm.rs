//! The explorations that know nothing of a race, the swarm profile (one generic fault profile
//! for every race) and the PCT scheduler (random priorities with change points, the swarm's
//! faults): every Correct variant holds under them, runs replay byte for byte, each swarm seed
//! draws its own mix of fault kinds, and a failure's replay command names the exploration.

use std::collections::BTreeSet;

use common::{race, racelab, stderr, stdout};
use racelab_scenarios::{
    Profile, SweepPlan, Variant, catalog, injects_faults, replay_command_in, run_seed, run_seed_in,
    sweep_plan,
};

mod common;

/// Seeds of each Correct variant under the swarm profile.
const CORRECT_SEEDS: u64 = 2_000;

#[test]
fn every_correct_variant_holds_under_the_swarm() {
    for race in catalog() {
        let plan = SweepPlan::seeds(0, CORRECT_SEEDS).profile(Profile::Swarm);
        let sweep = sweep_plan(&race, Variant::Correct, plan, |_| {});
        assert_eq!(
            sweep.failures,
            0,
            "{} correct fails under the swarm; replay: {}",
            race.id,
            replay_command_in(
                &race,
                Variant::Correct,
                sweep.first_failing_seed.unwrap_or_default(),
                Profile::Swarm
            )
        );
        assert_eq!(
            sweep.stuck,
            0,
            "{} correct gets stuck under the swarm; replay: {}",
            race.id,
            replay_command_in(
                &race,
                Variant::Correct,
                sweep.first_stuck_seed.unwrap_or_default(),
                Profile::Swarm
            )
        );
        // Races whose bugs are in arrival order inject no fault (their window is empty), under
        // any profile; the others must meet faults in a good share of the runs.
        assert!(
            !injects_faults(&(race.profile)()) || sweep.runs_with_faults > CORRECT_SEEDS / 10,
            "{}: only {} of {CORRECT_SEEDS} swarm runs injected a fault",
            race.id,
            sweep.runs_with_faults
        );
    }
}

#[test]
fn swarm_runs_replay_and_differ_from_the_race_profile() {
    for race in catalog() {
        for seed in [0, 7, 4_242] {
            let a = run_seed_in(&race, Variant::Buggy, seed, Profile::Swarm);
            let b = run_seed_in(&race, Variant::Buggy, seed, Profile::Swarm);
            assert_eq!(
                a.run.trace_hash(),
                b.run.trace_hash(),
                "{} seed {seed}",
                race.id
            );
            assert_eq!(a.run.decisions, b.run.decisions);
        }
        let own = run_seed(&race, Variant::Buggy, 3);
        assert_eq!(
            own.run.trace_hash(),
            run_seed_in(&race, Variant::Buggy, 3, Profile::Race)
                .run
                .trace_hash()
        );
    }
}

#[test]
fn each_seed_draws_its_own_mix_of_fault_kinds() {
    let race = race("R-002-01");
    let mixes: BTreeSet<String> = (0..200)
        .map(|seed| {
            let p = Profile::Swarm.faults(&race, seed);
            format!(
                "{}{}{}{}{}{}{}{}",
                u8::from(!p.pause.is_never()),
                u8::from(!p.delay.is_never()),
                u8::from(!p.drop_reply.is_never()),
                u8::from(!p.crash.is_never()),
                u8::from(!p.failover.is_never()),
                u8::from(p.partitions > 0),
                u8::from(p.redis_restarts > 0),
                u8::from(p.pauses_at > 0),
            )
        })
        .collect();
    // 8 kinds on or off: 256 mixes; 200 seeds must see a large share of them.
    assert!(mixes.len() > 100, "only {} distinct mixes", mixes.len());
    let own = (race.profile)();
    for seed in 0..50 {
        let p = Profile::Swarm.faults(&race, seed);
        assert_eq!((p.window, p.latency), (own.window, own.latency));
        assert_eq!(
            p,
            Profile::Swarm.faults(&race, seed),
            "the draw is a function of the seed"
        );
    }
}

#[test]
fn the_detection_table_has_every_failing_variant_under_each_profile() {
    let o = racelab(&["bench", "--detection", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table: serde_json::Value =
        serde_json::from_str(stdout(&o).trim()).expect("one JSON document");
    let rows = table["rows"].as_array().expect("rows");
    let failing: usize = catalog()
        .iter()
        .map(|r| racelab_scenarios::gate::detected_variants(r).len())
        .sum();
    assert_eq!(rows.len(), failing);
    for row in rows {
        for profile in Profile::ALL {
            let d = &row[profile.as_str()];
            assert!(
                d["median"].as_u64().is_some(),
                "{row}: undetected under {}",
                profile.as_str()
            );
        }
    }
}

#[test]
fn every_correct_variant_holds_under_pct() {
    for race in catalog() {
        for depth in [2, 3] {
            let plan = SweepPlan::seeds(0, 1_000).profile(Profile::Pct(depth));
            let sweep = sweep_plan(&race, Variant::Correct, plan, |_| {});
            let first = sweep.first_failing_seed.or(sweep.first_stuck_seed);
            assert_eq!(
                (sweep.failures, sweep.stuck),
                (0, 0),
                "{} correct under PCT depth {depth}; replay: {}",
                race.id,
                replay_command_in(
                    &race,
                    Variant::Correct,
                    first.unwrap_or_default(),
                    Profile::Pct(depth)
                )
            );
        }
    }
}

#[test]
fn pct_runs_replay_and_order_by_priority() {
    let race = race("R-003-02");
    for seed in [0, 5, 99] {
        let a = run_seed_in(&race, Variant::Buggy, seed, Profile::Pct(3));
        let b = run_seed_in(&race, Variant::Buggy, seed, Profile::Pct(3));
        assert_eq!(a.run.trace_hash(), b.run.trace_hash(), "seed {seed}");
    }
    // The priorities, not the random latencies, order the messages: the same seed's PCT and
    // swarm runs (same faults) differ.
    let differ = (0..20)
        .filter(|&seed| {
            run_seed_in(&race, Variant::Buggy, seed, Profile::Pct(2))
                .run
                .trace_hash()
                != run_seed_in(&race, Variant::Buggy, seed, Profile::Swarm)
                    .run
                    .trace_hash()
        })
        .count();
    assert!(
        differ > 15,
        "PCT runs look like swarm runs: {differ} of 20 differ"
    );
}

#[test]
fn pct_is_explore_only_and_not_shrunk() {
    let o = racelab(&[
        "run",
        "R-002-01",
        "--world",
        "net",
        "--scheduler",
        "pct",
        "--seeds",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--world explore only"),
        "{}",
        stderr(&o)
    );
    let o = racelab(&[
        "shrink",
        "R-002-01",
        "--variant",
        "buggy",
        "--seed",
        "1",
        "--scheduler",
        "pct",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--scheduler random"), "{}", stderr(&o));
    let o = racelab(&["run", "R-002-01", "--scheduler", "pct", "--profile", "race"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("swarm"), "{}", stderr(&o));
    let o = racelab(&["run", "R-002-01", "--depth", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--scheduler pct"), "{}", stderr(&o));
}

#[test]
fn the_net_world_draws_its_faults_from_the_swarm_too() {
    use racelab_scenarios::net::run_seed_net_in;
    let race = race("R-002-02");
    let differ = (0..5)
        .filter(|&seed| {
            let own = run_seed_net_in(&race, Variant::Buggy, seed, Profile::Race).expect("runs");
            let swarm = run_seed_net_in(&race, Variant::Buggy, seed, Profile::Swarm).expect("runs");
            own.run.trace_hash() != swarm.run.trace_hash()
        })
        .count();
    assert!(
        differ >= 4,
        "only {differ} of 5 net runs changed with the swarm profile"
    );
}

/// Runs `race`'s Buggy variant with `flags` over 20 seeds, then replays its first failure
/// from the printed command: the command names the exploration (it ends with `suffix`)
/// and gives the failing run's trace hash.
fn failure_replays_from_its_printed_command(
    race_id: &str,
    flags: &[&str],
    profile: Profile,
    suffix: &str,
) {
    let mut args = vec![
        "run",
        race_id,
        "--variant",
        "buggy",
        "--seeds",
        "20",
        "--json",
    ];
    args.extend_from_slice(flags);
    let o = racelab(&args);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let row: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON row");
    assert_eq!(row["profile"], profile.as_str());
    let replay = row["replay"]
        .as_str()
        .expect("a failing seed's replay command");
    assert!(replay.ends_with(suffix), "{replay}");
    let seed = row["first_failing_seed"].as_u64().expect("a failing seed");
    let args: Vec<&str> = replay
        .split_whitespace()
        .skip(1)
        .chain(["--json"])
        .collect();
    let replayed: serde_json::Value =
        serde_json::from_str(stdout(&racelab(&args)).trim()).expect("replay prints JSON");
    let direct = run_seed_in(&race(race_id), Variant::Buggy, seed, profile);
    assert_eq!(
        replayed["trace_hash"].as_str(),
        Some(format!("{:016x}", direct.run.trace_hash()).as_str()),
        "{replayed}"
    );
    assert_eq!(replayed["violated"], true, "{replayed}");
}

#[test]
fn a_swarm_failure_replays_from_its_printed_command() {
    failure_replays_from_its_printed_command(
        "R-002-02",
        &["--profile", "swarm"],
        Profile::Swarm,
        "--profile swarm",
    );
}

#[test]
fn a_pct_failure_replays_from_its_printed_command() {
    failure_replays_from_its_printed_command(
        "R-002-01",
        &["--scheduler", "pct", "--depth", "2"],
        Profile::Pct(2),
        "--scheduler pct --depth 2",
    );
}

#[test]
fn every_pct_depth_the_cli_accepts_has_its_own_name() {
    let names: Vec<&str> = (1..=racelab_scenarios::PCT_DEPTH_MAX)
        .map(|d| Profile::Pct(d).as_str())
        .collect();
    for (d, name) in (1..).zip(&names) {
        assert_eq!(*name, format!("pct{d}"));
    }
}
