//! The regression gate against the committed baseline (`reports/baseline/gate.json`).
//!
//! `RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test gate` rewrites the
//! baseline from the current code instead of checking it; review its diff before committing.

use std::sync::OnceLock;

use racelab_scenarios::gate::{
    BASELINE_PATH, Figures, UPDATE_COMMAND, baseline_path, compare, measure, read_baseline,
    to_json, write_baseline,
};
use racelab_scenarios::{Expectation, PerVariant, Race, catalog};
use racelab_sim::explore::{FaultProfile, Ratio};

/// The current figures, measured once for every test of this binary.
fn current() -> &'static Figures {
    static CURRENT: OnceLock<Figures> = OnceLock::new();
    CURRENT.get_or_init(|| measure(&catalog()))
}

fn updating() -> bool {
    std::env::var_os("RACELAB_UPDATE_BASELINE").is_some_and(|v| v == "1")
}

#[test]
fn the_gate_passes_against_the_committed_baseline() {
    let current = current();
    let path = baseline_path();
    if updating() {
        let old = read_baseline(&path).ok();
        write_baseline(&path, current).expect("the baseline is written");
        eprintln!("baseline rewritten: {}", path.display());
        match old {
            Some(old) => {
                let c = compare(&old, current);
                for change in &c.changes {
                    eprintln!("  changed: {change}");
                }
                for r in &c.regressions {
                    eprintln!("  accepted regression: {r}");
                }
            }
            None => eprintln!("  (there was no readable baseline before)"),
        }
        eprintln!("review it with `git diff {BASELINE_PATH}` before committing");
        return;
    }
    let baseline = read_baseline(&path).unwrap_or_else(|e| panic!("{e}"));
    for (race, f) in &current.races {
        let detection: Vec<String> = f
            .detection
            .iter()
            .map(|(v, d)| {
                format!(
                    "{v}: {:?} seeds from seed 0, median {:?} ({} of 20 start seeds)",
                    d.from_seed_0, d.median, d.detected_from
                )
            })
            .collect();
        eprintln!(
            "{race}: {}; per correct seed {} store ops, {} events, {} decisions",
            detection.join("; "),
            f.cost.store_ops_per_seed,
            f.cost.events_per_seed,
            f.cost.decisions_per_seed
        );
    }
    let comparison = compare(&baseline, current);
    eprintln!("{comparison}");
    assert!(comparison.passed(), "{comparison}");
}

#[test]
fn the_committed_baseline_is_what_the_update_command_writes() {
    // The file is produced by the update command, never by hand: it parses, and writing it
    // back gives the same bytes (pretty JSON, stable key order, final newline).
    if updating() {
        eprintln!("the baseline is being rewritten: its format is checked on the next run");
        return;
    }
    let path = baseline_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `{UPDATE_COMMAND}`",
            path.display()
        )
    });
    let parsed = read_baseline(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        to_json(&parsed),
        text,
        "{BASELINE_PATH} is not in the update command's format; regenerate it with `{UPDATE_COMMAND}`"
    );
}

#[test]
fn a_doctored_baseline_makes_the_gate_fail_with_the_race_and_the_numbers() {
    let current = current();
    // Pretend the baseline found the hardest Buggy race in a third of the seeds it needs now,
    // and half the work per seed on another race.
    let (race, median) = current
        .races
        .iter()
        .filter_map(|(race, f)| Some((race.clone(), f.detection.get("buggy")?.median?)))
        .max_by_key(|(_, median)| *median)
        .expect("a detected Buggy variant");
    assert!(
        median >= 3,
        "the hardest race is found within {median} seeds"
    );
    let mut doctored = current.clone();
    let faster = median / 3;
    let figures = doctored.races.get_mut(&race).expect("the race");
    figures.detection.get_mut("buggy").expect("buggy").median = Some(faster);
    let (other, ops) = {
        let (other, f) = doctored
            .races
            .iter_mut()
            .find(|(r, _)| **r != race)
            .expect("a second race");
        f.cost.store_ops_per_seed /= 2;
        (other.clone(), f.cost.store_ops_per_seed)
    };
    let now_ops = current.races[&other].cost.store_ops_per_seed;

    let comparison = compare(&doctored, current);
    assert!(!comparison.passed());
    let regressions: Vec<String> = comparison
        .regressions
        .iter()
        .map(ToString::to_string)
        .collect();
    let pct = |from: u64, to: u64| ((to - from) * 100).div_ceil(from);
    let mut expected = vec![
        format!(
            "{race}: median seeds to detect the buggy variant worsened from {faster} to {median} \
             (+{}%, limit +50%)",
            pct(faster, median)
        ),
        format!(
            "{other}: store operations per seed of the correct variant grew from {ops} to \
             {now_ops} (+{}%, limit +50%)",
            pct(ops, now_ops)
        ),
    ];
    expected.sort();
    assert_eq!(regressions, expected);
    let message = comparison.to_string();
    assert!(
        message.starts_with("the regression gate failed"),
        "{message}"
    );
    assert!(message.contains(UPDATE_COMMAND), "{message}");
    assert!(
        compare(current, current).passed(),
        "the figures pass against themselves"
    );
}

/// R-002-02's fault profile with Redis failovers three times rarer.
fn rarer_failovers() -> FaultProfile {
    let races = catalog();
    let race = races.iter().find(|r| r.id == "R-002-02").expect("R-002-02");
    let mut profile = (race.profile)();
    assert!(
        profile.failover.num > 0,
        "R-002-02's sweep injects failovers"
    );
    profile.failover = Ratio {
        num: profile.failover.num,
        den: profile.failover.den * 3,
    };
    profile
}

/// R-002-02's fault profile without its failovers: the only fault that breaks its lock.
fn no_failovers() -> FaultProfile {
    FaultProfile {
        failover: Ratio::NEVER,
        ..rarer_failovers()
    }
}

/// R-002-02 with another fault profile and seed budget. Only its Buggy variant's detection
/// is measured (the DocFix one would double the test's time and show the same thing).
fn weakened(profile: fn() -> FaultProfile, seed_budget: u64) -> Vec<Race> {
    let mut races: Vec<Race> = catalog()
        .into_iter()
        .filter(|r| r.id == "R-002-02")
        .collect();
    races[0].profile = profile;
    races[0].seed_budget = seed_budget;
    races[0].sweep = PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]);
    races
}

#[test]
fn weakening_a_buggy_variants_detection_makes_the_gate_fail() {
    let baseline = current();
    let mut r_002_02 = baseline.races["R-002-02"].clone();
    r_002_02.detection.retain(|variant, _| variant == "buggy");
    let base = Figures {
        method: baseline.method.clone(),
        races: [("R-002-02".to_string(), r_002_02)].into(),
    };
    let budget = base.races["R-002-02"].detection["buggy"].budget;

    // Failovers three times rarer: the random scheduler needs several times more seeds.
    let rarer = compare(&base, &measure(&weakened(rarer_failovers, budget)));
    assert!(!rarer.passed());
    let text = rarer.to_string();
    assert!(
        text.contains("R-002-02: median seeds to detect the buggy variant worsened from"),
        "{text}"
    );
    eprintln!("{text}");

    // No failovers at all: the race is not found any more (a small budget keeps this quick).
    let gone = compare(&base, &measure(&weakened(no_failovers, 20)));
    let text = gone.to_string();
    assert!(
        text.contains(
            "R-002-02: the buggy variant is no longer detected: only 0 of 20 start seeds find \
             its violation within 20 seeds"
        ),
        "{text}"
    );
    assert!(
        text.contains("R-002-02: the buggy variant is no longer detected from seed 0"),
        "{text}"
    );
}

#[test]
fn the_swarm_finds_every_failing_variant_without_a_race_profile() {
    // Swarm testing's promise, held by the gate's own figures: no per-race fault profile, and
    // every Buggy (and failing DocFix) variant is still found with a median of at most
    // SWARM_MEDIAN_MAX seeds.
    use racelab_scenarios::gate::SWARM_MEDIAN_MAX;
    let mut checked = 0;
    for (race, f) in &current().races {
        for (key, d) in f.detection.iter().filter(|(k, _)| k.ends_with("@swarm")) {
            checked += 1;
            let median = d.median.unwrap_or(u64::MAX);
            assert!(
                median <= SWARM_MEDIAN_MAX,
                "{race} {key}: median {:?} seeds to detect under the swarm profile (at most \
                 {SWARM_MEDIAN_MAX}); replay the first: racelab run {race} --profile swarm",
                d.median
            );
        }
    }
    assert!(checked >= catalog().len(), "every race has swarm figures");
}
