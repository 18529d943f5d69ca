//! The deterministic regression gate: bug-finding power and cost, as counts that do not depend
//! on the machine, compared with the committed baseline `reports/baseline/gate.json`.
//!
//! - Detection: for every Buggy variant, the seeds run until the first violation from seed 0,
//!   and the median of that over [`START_SEEDS`]. The gate fails when a race is no longer
//!   detected within its budget, or when its median worsens by more than [`WORSENING_MAX_PCT`].
//! - Cost: store operations, events and random decisions per seed of the Correct variant over
//!   seeds `0..COST_SEEDS`; the gate fails when one grows by more than [`WORSENING_MAX_PCT`].
//!
//! Update the baseline (and review its diff) with
//! `RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test gate`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Race, Variant, run_seed};

/// The fixed start seeds of the detection median.
pub const START_SEEDS: [u64; 20] = [
    0, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000, 10_000, 11_000, 12_000,
    13_000, 14_000, 15_000, 16_000, 17_000, 18_000, 19_000,
];

/// Seeds of the Correct variant whose work is counted.
pub const COST_SEEDS: u64 = 50;

/// How much worse than the baseline a figure may get before the gate fails.
pub const WORSENING_MAX_PCT: u64 = 50;

/// The committed baseline's path, relative to the workspace root.
pub const BASELINE_PATH: &str = "reports/baseline/gate.json";

/// One race's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceFigures {
    /// Seeds run from seed 0 until the Buggy variant's first violation (`None`: not within
    /// the race's budget).
    pub seeds_to_detect_from_0: Option<u64>,
    /// The median over [`START_SEEDS`] of the same count.
    pub seeds_to_detect_median: Option<u64>,
    /// Store operations per seed of the Correct variant.
    pub store_ops_per_seed: u64,
    /// Events per seed of the Correct variant.
    pub events_per_seed: u64,
    /// Random decisions per seed of the Correct variant.
    pub decisions_per_seed: u64,
}

/// Every race's figures, by race id (sorted, so the file's diff is reviewable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// By race id.
    pub races: BTreeMap<String, RaceFigures>,
}

/// A figure that got worse than the gate allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Regression {
    /// The race.
    pub race: String,
    /// What got worse, and by how much.
    pub what: String,
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.race, self.what)
    }
}

/// Seeds run from `start` until the Buggy variant's first violation, within the budget.
pub fn seeds_to_detect(race: &Race, start: u64) -> Option<u64> {
    (0..race.seed_budget)
        .find(|i| run_seed(race, Variant::Buggy, start + i).violated())
        .map(|i| i + 1)
}

/// Measures every race's figures.
pub fn measure(races: &[Race]) -> Figures {
    let mut figures = Figures::default();
    for race in races {
        let mut counts: Vec<Option<u64>> = START_SEEDS
            .iter()
            .map(|s| seeds_to_detect(race, *s))
            .collect();
        let from_0 = counts[0];
        counts.sort_by_key(|c| c.unwrap_or(u64::MAX));
        let median = counts[counts.len() / 2];
        let (mut ops, mut events, mut decisions) = (0u64, 0u64, 0u64);
        for seed in 0..COST_SEEDS {
            let run = run_seed(race, Variant::Correct, seed).run;
            ops += run.stats.store_ops;
            events += run.stats.events;
            decisions += run.stats.decisions;
        }
        figures.races.insert(
            race.id.to_string(),
            RaceFigures {
                seeds_to_detect_from_0: from_0,
                seeds_to_detect_median: median,
                store_ops_per_seed: ops / COST_SEEDS,
                events_per_seed: events / COST_SEEDS,
                decisions_per_seed: decisions / COST_SEEDS,
            },
        );
    }
    figures
}

/// Compares current figures with the baseline; empty when the gate passes.
pub fn compare(baseline: &Figures, current: &Figures) -> Vec<Regression> {
    let mut out = Vec::new();
    let regress = |race: &str, what: String| Regression {
        race: race.to_string(),
        what,
    };
    for (race, now) in &current.races {
        let Some(base) = baseline.races.get(race) else {
            out.push(regress(
                race,
                format!("has no baseline; update it with `{UPDATE_COMMAND}` and review the diff"),
            ));
            continue;
        };
        match (base.seeds_to_detect_median, now.seeds_to_detect_median) {
            (_, None) => out.push(regress(
                race,
                "the Buggy variant is no longer detected within its seed budget".into(),
            )),
            (Some(b), Some(n)) => {
                if let Some(pct) = worse(b, n) {
                    out.push(regress(race, format!("median seeds to detect the Buggy variant worsened from {b} to {n} (+{pct}%, limit +{WORSENING_MAX_PCT}%)")));
                }
            }
            (None, Some(_)) => {}
        }
        let costs = [
            (
                "store operations per seed",
                base.store_ops_per_seed,
                now.store_ops_per_seed,
            ),
            ("events per seed", base.events_per_seed, now.events_per_seed),
            (
                "random decisions per seed",
                base.decisions_per_seed,
                now.decisions_per_seed,
            ),
        ];
        for (what, b, n) in costs {
            if let Some(pct) = worse(b, n) {
                out.push(regress(
                    race,
                    format!("{what} grew from {b} to {n} (+{pct}%, limit +{WORSENING_MAX_PCT}%)"),
                ));
            }
        }
    }
    for race in baseline.races.keys() {
        if !current.races.contains_key(race) {
            out.push(regress(
                race,
                "is in the baseline but no longer in the catalog".into(),
            ));
        }
    }
    out
}

/// The command that rewrites the baseline.
pub const UPDATE_COMMAND: &str =
    "RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test gate";

/// By how many percent `now` is worse than `base`, if by more than the limit.
fn worse(base: u64, now: u64) -> Option<u64> {
    let limit = base.saturating_mul(100 + WORSENING_MAX_PCT) / 100;
    (now > limit.max(base)).then(|| now.saturating_sub(base).saturating_mul(100) / base.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(median: Option<u64>, ops: u64) -> Figures {
        let mut f = Figures::default();
        f.races.insert(
            "R-X".into(),
            RaceFigures {
                seeds_to_detect_from_0: median,
                seeds_to_detect_median: median,
                store_ops_per_seed: ops,
                events_per_seed: 10,
                decisions_per_seed: 10,
            },
        );
        f
    }

    #[test]
    fn within_the_limit_passes_and_beyond_it_fails_with_the_numbers() {
        assert!(compare(&figures(Some(4), 100), &figures(Some(6), 150)).is_empty());
        let r = compare(&figures(Some(4), 100), &figures(Some(7), 100));
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].to_string(),
            "R-X: median seeds to detect the Buggy variant worsened from 4 to 7 (+75%, limit +50%)"
        );
        let r = compare(&figures(Some(4), 100), &figures(Some(4), 151));
        assert!(
            r[0].what
                .starts_with("store operations per seed grew from 100 to 151")
        );
    }

    #[test]
    fn a_race_no_longer_detected_fails() {
        let r = compare(&figures(Some(2), 100), &figures(None, 100));
        assert_eq!(
            r[0].what,
            "the Buggy variant is no longer detected within its seed budget"
        );
    }

    #[test]
    fn missing_baselines_and_vanished_races_fail() {
        let r = compare(&Figures::default(), &figures(Some(2), 1));
        assert!(r[0].what.contains("has no baseline"));
        let r = compare(&figures(Some(2), 1), &Figures::default());
        assert!(r[0].what.contains("no longer in the catalog"));
    }

    #[test]
    fn the_rule_is_the_same_for_tiny_baselines() {
        // 1 -> 2 seeds is +100%: a regression, even though it is one seed. The counts are
        // deterministic, so they move only when the model or a protocol changes, and then a
        // reviewed baseline update is the right answer.
        assert!(worse(1, 2).is_some());
        assert!(worse(2, 3).is_none());
    }
}
