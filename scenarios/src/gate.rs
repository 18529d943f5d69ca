//! The deterministic regression gate: bug-finding power and cost as counts that do not depend
//! on the machine or its load, compared with the committed baseline
//! `reports/baseline/gate.json`. It runs with every `cargo test` (`tests/gate.rs`).
//!
//! - Detection power: for every Buggy variant (and every DocFix variant the catalog expects to
//!   fail), the seeds run from a start seed until the first violation, from seed 0 and as the
//!   median over [`START_SEED_COUNT`] fixed start seeds. The gate fails when a variant is no
//!   longer detected (from seed 0, or from most start seeds, within the race's seed budget) or
//!   when its median worsens by more than [`WORSENING_MAX_PCT`] percent. The same figures
//!   are kept under the swarm profile (`buggy@swarm`), which knows nothing of the race.
//! - Cost: store operations, events and random decisions per seed of the Correct variant over
//!   seeds `0..COST_SEEDS` (the reference run); the gate fails when one grows by more than
//!   [`WORSENING_MAX_PCT`] percent.
//!
//! Wall-clock time is deliberately absent: two identical runs on a shared 2-core machine
//! differ by 20%, so `racelab bench` and the criterion benches report it and nothing gates on
//! it. These counts change only when a protocol, a model or a fault profile changes, and then
//! the answer is a reviewed baseline update: [`UPDATE_COMMAND`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Expectation, Profile, Race, Variant, run_seed, seeds_to_detect_in};

/// How many start seeds the detection median is taken over.
pub const START_SEED_COUNT: u64 = 20;

/// The distance between consecutive start seeds (start seeds are `0, 1000, 2000, ...`), at
/// least every race's seed budget, so that the samples do not share seeds.
pub const START_SEED_STRIDE: u64 = 1_000;

/// Seeds of the Correct variant whose work is counted.
pub const COST_SEEDS: u64 = 50;

/// The seed budget of detection under the swarm profile and PCT: one for every race, since
/// neither knows anything of a race (at most [`START_SEED_STRIDE`]).
pub const SWARM_SEED_BUDGET: u64 = 500;

/// The most seeds the median detection under the swarm profile may need for any race
/// (the target: every Buggy race found with a median of at most 100 seeds, no per-race
/// profile).
pub const SWARM_MEDIAN_MAX: u64 = 100;

/// How much worse than the baseline a figure may get, in percent, before the gate fails.
pub const WORSENING_MAX_PCT: u64 = 50;

/// The committed baseline, relative to the workspace root.
pub const BASELINE_PATH: &str = "reports/baseline/gate.json";

/// The command that rewrites the baseline from the current code.
pub const UPDATE_COMMAND: &str =
    "RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test gate";

/// The start seeds of the detection median.
pub fn start_seeds() -> impl Iterator<Item = u64> {
    (0..START_SEED_COUNT).map(|i| i * START_SEED_STRIDE)
}

/// Every race's figures, and how they were measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// How the figures were measured; a baseline measured otherwise cannot be compared.
    pub method: Method,
    /// By race id (sorted, so the file's diff is reviewable).
    pub races: BTreeMap<String, RaceFigures>,
}

/// How the figures were measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Method {
    /// [`START_SEED_COUNT`].
    pub start_seed_count: u64,
    /// [`START_SEED_STRIDE`].
    pub start_seed_stride: u64,
    /// The variant whose work is counted (`correct`).
    pub cost_variant: String,
    /// [`COST_SEEDS`].
    pub cost_seeds: u64,
}

impl Method {
    /// The method of this code.
    pub fn current() -> Method {
        Method {
            start_seed_count: START_SEED_COUNT,
            start_seed_stride: START_SEED_STRIDE,
            cost_variant: Variant::Correct.as_str().to_string(),
            cost_seeds: COST_SEEDS,
        }
    }
}

/// One race's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceFigures {
    /// By variant (`buggy`, and `docfix` when the catalog expects the document's fix to fail)
    /// under the race's own profile, and by `variant@swarm` under the swarm profile
    /// ([`Profile::Swarm`], budget [`SWARM_SEED_BUDGET`]).
    pub detection: BTreeMap<String, Detection>,
    /// The reference run's work.
    pub cost: Cost,
}

/// How quickly the random scheduler finds a failing variant's violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// The race's seed budget: a start seed that finds nothing within it counts as undetected.
    pub budget: u64,
    /// Seeds run from seed 0 until the first violation (`None`: not within the budget).
    pub from_seed_0: Option<u64>,
    /// The median over the start seeds (undetected counts as infinite; `None`: most start
    /// seeds found nothing within the budget).
    pub median: Option<u64>,
    /// How many start seeds found the violation within the budget.
    pub detected_from: u64,
}

/// The work of the reference run, per seed (deterministic counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// Operations the stores executed.
    pub store_ops_per_seed: u64,
    /// Events the world processed.
    pub events_per_seed: u64,
    /// Random decisions the scheduler drew.
    pub decisions_per_seed: u64,
}

/// The variants whose detection the gate tracks: Buggy always, DocFix when the catalog
/// expects its sweep to fail.
pub fn detected_variants(race: &Race) -> Vec<Variant> {
    let mut out = vec![Variant::Buggy];
    if race.sweep.get(Variant::DocFix) == Expectation::Fails {
        out.push(Variant::DocFix);
    }
    out
}

/// The key of a variant's detection under `profile` in [`RaceFigures::detection`].
pub fn detection_key(variant: Variant, profile: Profile) -> String {
    match profile {
        Profile::Race => variant.as_str().to_string(),
        other => format!("{}@{}", variant.as_str(), other.as_str()),
    }
}

/// Measures one variant's detection under the race's own profile.
pub fn detection(race: &Race, variant: Variant) -> Detection {
    detection_in(race, variant, Profile::Race)
}

/// Measures one variant's detection under `profile` (the race's seed budget for its own
/// profile, [`SWARM_SEED_BUDGET`] for the swarm).
pub fn detection_in(race: &Race, variant: Variant, profile: Profile) -> Detection {
    let budget = match profile {
        Profile::Race => race.seed_budget,
        Profile::Swarm | Profile::Pct(_) => SWARM_SEED_BUDGET,
    };
    let counts: Vec<Option<u64>> = start_seeds()
        .map(|start| {
            seeds_to_detect_in(race, variant, start, budget, profile).map(|seed| seed - start + 1)
        })
        .collect();
    let mut sorted = counts.clone();
    sorted.sort_by_key(|c| c.unwrap_or(u64::MAX));
    Detection {
        budget,
        // Invariant: start_seeds() yields START_SEED_COUNT >= 1 seeds, the first being 0.
        from_seed_0: counts[0],
        median: sorted[sorted.len() / 2],
        detected_from: counts.iter().flatten().count() as u64,
    }
}

/// Measures the reference run's work.
pub fn cost(race: &Race) -> Cost {
    let (mut ops, mut events, mut decisions) = (0u64, 0u64, 0u64);
    for seed in 0..COST_SEEDS {
        let stats = run_seed(race, Variant::Correct, seed).run.stats;
        ops += stats.store_ops;
        events += stats.events;
        decisions += stats.decisions;
    }
    Cost {
        store_ops_per_seed: ops / COST_SEEDS,
        events_per_seed: events / COST_SEEDS,
        decisions_per_seed: decisions / COST_SEEDS,
    }
}

/// Measures every race's figures.
pub fn measure(races: &[Race]) -> Figures {
    let races = races
        .iter()
        .map(|race| {
            let detection = detected_variants(race)
                .into_iter()
                .flat_map(|v| Profile::ALL.map(|p| (detection_key(v, p), detection_in(race, v, p))))
                .collect();
            let figures = RaceFigures {
                detection,
                cost: cost(race),
            };
            (race.id.to_string(), figures)
        })
        .collect();
    Figures {
        method: Method::current(),
        races,
    }
}

/// One figure that moved, and by how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The race.
    pub race: String,
    /// What moved.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.race, self.what)
    }
}

/// The outcome of comparing current figures with the baseline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Figures worse than the gate allows: the gate fails if there is any.
    pub regressions: Vec<Finding>,
    /// Figures much better than the baseline: the gate passes, but the baseline should be
    /// updated so that it keeps guarding the better figure.
    pub improvements: Vec<Finding>,
    /// Every figure that differs from the baseline at all, for the record.
    pub changes: Vec<Finding>,
}

impl Comparison {
    /// Whether the gate passes.
    pub fn passed(&self) -> bool {
        self.regressions.is_empty()
    }
}

impl fmt::Display for Comparison {
    /// The gate's verdict for people: every regression with its numbers and what to do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            write!(f, "the regression gate passed ({BASELINE_PATH})")?;
        } else {
            writeln!(
                f,
                "the regression gate failed against {BASELINE_PATH} (limit: +{WORSENING_MAX_PCT}%):"
            )?;
            for r in &self.regressions {
                writeln!(f, "  - {r}")?;
            }
            write!(
                f,
                "If the change is intended, update the baseline with `{UPDATE_COMMAND}` and \
                 commit the reviewed diff of {BASELINE_PATH}."
            )?;
        }
        if !self.improvements.is_empty() {
            write!(
                f,
                "\nmuch better than the baseline (update it with `{UPDATE_COMMAND}` so the gate \
                 guards the new figures):"
            )?;
            for i in &self.improvements {
                write!(f, "\n  - {i}")?;
            }
        }
        Ok(())
    }
}

/// Compares current figures with the baseline.
pub fn compare(baseline: &Figures, current: &Figures) -> Comparison {
    let mut c = Comparison::default();
    let finding = |race: &str, what: String| Finding {
        race: race.to_string(),
        what,
    };
    if baseline.method != current.method {
        c.regressions.push(finding(
            "(all)",
            format!(
                "the baseline was measured with {:?}, this code measures with {:?}; the figures \
                 are not comparable: update the baseline",
                baseline.method, current.method
            ),
        ));
        return c;
    }
    for (race, now) in &current.races {
        let Some(base) = baseline.races.get(race) else {
            c.regressions.push(finding(
                race,
                "is new: it has no baseline yet; add it with the update command".into(),
            ));
            continue;
        };
        for (variant, d) in &now.detection {
            let Some(b) = base.detection.get(variant) else {
                c.regressions.push(finding(
                    race,
                    format!("the {variant} variant's detection has no baseline yet"),
                ));
                continue;
            };
            compare_detection(&mut c, race, variant, b, d);
        }
        for variant in base.detection.keys() {
            if !now.detection.contains_key(variant) {
                c.regressions.push(finding(
                    race,
                    format!(
                        "the baseline tracks the {variant} variant's detection, but the catalog \
                         no longer expects it to fail"
                    ),
                ));
            }
        }
        let costs = [
            (
                "store operations",
                base.cost.store_ops_per_seed,
                now.cost.store_ops_per_seed,
            ),
            (
                "events",
                base.cost.events_per_seed,
                now.cost.events_per_seed,
            ),
            (
                "random decisions",
                base.cost.decisions_per_seed,
                now.cost.decisions_per_seed,
            ),
        ];
        for (what, b, n) in costs {
            let what = format!(
                "{what} per seed of the {} variant",
                current.method.cost_variant
            );
            compare_lower_is_better(&mut c, race, &what, "grew", b, n);
        }
    }
    for race in baseline.races.keys() {
        if !current.races.contains_key(race) {
            c.regressions.push(finding(
                race,
                "is in the baseline but no longer in the catalog".into(),
            ));
        }
    }
    c
}

fn compare_detection(c: &mut Comparison, race: &str, variant: &str, b: &Detection, d: &Detection) {
    let finding = |what: String| Finding {
        race: race.to_string(),
        what,
    };
    if b.budget != d.budget {
        c.changes.push(finding(format!(
            "the {variant} variant's seed budget changed from {} to {}",
            b.budget, d.budget
        )));
    }
    match d.median {
        None => c.regressions.push(finding(format!(
            "the {variant} variant is no longer detected: only {} of {START_SEED_COUNT} start \
             seeds find its violation within {} seeds (baseline: {} of {START_SEED_COUNT}, \
             median {})",
            d.detected_from,
            d.budget,
            b.detected_from,
            b.median
                .map_or_else(|| "none".to_string(), |m| format!("{m} seeds"))
        ))),
        Some(n) => {
            let what = format!("median seeds to detect the {variant} variant");
            match b.median {
                Some(bm) => compare_lower_is_better(c, race, &what, "worsened", bm, n),
                None => c
                    .changes
                    .push(finding(format!("{what} is now {n} (baseline: none)"))),
            }
        }
    }
    match (b.from_seed_0, d.from_seed_0) {
        (_, None) => c.regressions.push(finding(format!(
            "the {variant} variant is no longer detected from seed 0 within {} seeds (baseline: \
             {})",
            d.budget,
            b.from_seed_0
                .map_or_else(|| "not either".to_string(), |n| format!("{n} seeds"))
        ))),
        (bz, Some(nz)) if bz != Some(nz) => c.changes.push(finding(format!(
            "seeds to detect the {variant} variant from seed 0: {} -> {nz}",
            bz.map_or_else(|| "none".to_string(), |n| n.to_string())
        ))),
        _ => {}
    }
    if b.detected_from != d.detected_from {
        c.changes.push(finding(format!(
            "start seeds that detect the {variant} variant: {} -> {} of {START_SEED_COUNT}",
            b.detected_from, d.detected_from
        )));
    }
}

/// Files a figure where smaller is better: a regression beyond the limit, an improvement
/// beyond the same limit the other way, and a change whenever it moved.
fn compare_lower_is_better(
    c: &mut Comparison,
    race: &str,
    what: &str,
    verb: &str,
    base: u64,
    now: u64,
) {
    if base == now {
        return;
    }
    let finding = |text: String| Finding {
        race: race.to_string(),
        what: text,
    };
    // Rounded away from the limit, so that a regression never reads "+50%, limit +50%".
    let pct = |from: u64, to: u64, up: bool| {
        let diff = u128::from(to.abs_diff(from)) * 100;
        let from = u128::from(from.max(1));
        if up { diff.div_ceil(from) } else { diff / from }
    };
    c.changes.push(finding(format!("{what}: {base} -> {now}")));
    if worse_than_allowed(base, now) {
        c.regressions.push(finding(format!(
            "{what} {verb} from {base} to {now} (+{}%, limit +{WORSENING_MAX_PCT}%)",
            pct(base, now, true)
        )));
    } else if worse_than_allowed(now, base) {
        c.improvements.push(finding(format!(
            "{what} improved from {base} to {now} (-{}%)",
            pct(base, now, false)
        )));
    }
}

/// Whether `now` exceeds `base` by more than [`WORSENING_MAX_PCT`] percent.
fn worse_than_allowed(base: u64, now: u64) -> bool {
    u128::from(now) * 100 > u128::from(base) * u128::from(100 + WORSENING_MAX_PCT)
}

/// The baseline's path in this checkout.
pub fn baseline_path() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The scenarios crate sits directly in the workspace root.
    crate_dir.parent().unwrap_or(crate_dir).join(BASELINE_PATH)
}

/// Why the baseline could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// There is no baseline file.
    #[error("cannot read the baseline {path}: {source}; create it with `{UPDATE_COMMAND}`")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not a baseline.
    #[error(
        "the baseline {path} is malformed ({source}); it is written by `{UPDATE_COMMAND}`, never by hand: regenerate it"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Reads a baseline file.
pub fn read_baseline(path: &Path) -> Result<Figures, BaselineError> {
    let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| BaselineError::Malformed {
        path: path.to_path_buf(),
        source,
    })
}

/// The figures as the baseline file holds them: pretty JSON, keys in a stable order, a final
/// newline.
pub fn to_json(figures: &Figures) -> String {
    // Invariant: Figures holds only strings, integers, options and maps with string keys.
    serde_json::to_string_pretty(figures).expect("figures serialise") + "\n"
}

/// Writes a baseline file (creating its directory), atomically: a reader sees the old file or
/// the new one, never half of one.
pub fn write_baseline(path: &Path, figures: &Figures) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, to_json(figures))?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(median: Option<u64>, ops: u64) -> Figures {
        let detection = Detection {
            budget: 100,
            from_seed_0: median,
            median,
            detected_from: if median.is_some() { 20 } else { 3 },
        };
        let race = RaceFigures {
            detection: [("buggy".to_string(), detection)].into(),
            cost: Cost {
                store_ops_per_seed: ops,
                events_per_seed: 10,
                decisions_per_seed: 10,
            },
        };
        Figures {
            method: Method::current(),
            races: [("R-X".to_string(), race)].into(),
        }
    }

    #[test]
    fn within_the_limit_passes_and_beyond_it_fails_with_the_numbers() {
        let c = compare(&figures(Some(4), 100), &figures(Some(6), 150));
        assert!(c.passed(), "{c}");
        assert_eq!(c.changes.len(), 3, "{c:?}");
        let c = compare(&figures(Some(4), 100), &figures(Some(7), 100));
        assert_eq!(
            c.regressions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec![
                "R-X: median seeds to detect the buggy variant worsened from 4 to 7 (+75%, limit +50%)"
            ]
        );
        let c = compare(&figures(Some(4), 100), &figures(Some(4), 151));
        assert_eq!(
            c.regressions[0].what,
            "store operations per seed of the correct variant grew from 100 to 151 (+51%, limit +50%)"
        );
        let text = c.to_string();
        assert!(text.contains("the regression gate failed"), "{text}");
        assert!(text.contains(UPDATE_COMMAND), "{text}");
    }

    #[test]
    fn a_race_no_longer_detected_fails() {
        let c = compare(&figures(Some(2), 100), &figures(None, 100));
        assert_eq!(c.regressions.len(), 2, "{c}");
        assert_eq!(
            c.regressions[0].what,
            "the buggy variant is no longer detected: only 3 of 20 start seeds find its \
             violation within 100 seeds (baseline: 20 of 20, median 2 seeds)"
        );
        assert_eq!(
            c.regressions[1].what,
            "the buggy variant is no longer detected from seed 0 within 100 seeds (baseline: 2 \
             seeds)"
        );
        // Even a baseline that records the failure does not make it pass.
        assert!(!compare(&figures(None, 100), &figures(None, 100)).passed());
    }

    #[test]
    fn big_improvements_pass_but_ask_for_a_baseline_update() {
        let c = compare(&figures(Some(30), 100), &figures(Some(10), 100));
        assert!(c.passed());
        assert_eq!(
            c.improvements[0].what,
            "median seeds to detect the buggy variant improved from 30 to 10 (-66%)"
        );
        assert!(c.to_string().contains("much better than the baseline"));
    }

    #[test]
    fn new_vanished_and_differently_measured_races_fail() {
        let mut empty = figures(Some(2), 1);
        empty.races.clear();
        assert!(
            compare(&empty, &figures(Some(2), 1)).regressions[0]
                .what
                .contains("has no baseline")
        );
        assert!(
            compare(&figures(Some(2), 1), &empty).regressions[0]
                .what
                .contains("no longer in the catalog")
        );
        let mut other = figures(Some(2), 1);
        other.method.cost_seeds += 1;
        assert!(
            compare(&other, &figures(Some(2), 1)).regressions[0]
                .what
                .contains("not comparable")
        );
    }

    #[test]
    fn the_rule_is_the_same_for_tiny_figures() {
        // 1 -> 2 seeds is +100%: a regression, even though it is one seed. The counts are
        // deterministic, so they move only when the model or a protocol changes, and then a
        // reviewed baseline update is the right answer.
        assert!(worse_than_allowed(1, 2));
        assert!(!worse_than_allowed(2, 3));
        assert!(worse_than_allowed(0, 1));
        assert!(!worse_than_allowed(u64::MAX, u64::MAX));
    }

    #[test]
    fn the_baseline_round_trips_through_its_file_format() {
        let f = figures(Some(3), 42);
        let text = to_json(&f);
        assert!(text.ends_with("}\n"));
        assert_eq!(serde_json::from_str::<Figures>(&text).expect("parses"), f);
        // Stable key order: races sorted, fields in declaration order.
        let buggy = text.find("\"buggy\"").expect("buggy");
        let cost = text.find("\"cost\"").expect("cost");
        assert!(buggy < cost);
    }
}
