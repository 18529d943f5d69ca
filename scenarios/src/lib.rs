//! racelab-scenarios: the race catalog of `RACES.md` as code, and the engine behind the
//! `racelab` CLI.
//!
//! Each [`Race`] carries its invariant, its scripted minimal timelines ([`Script`]) with the
//! expected outcome per variant, the fault model of its random sweep, and the seed budget
//! within which the random scheduler must find the Buggy variant's violation.
//!
//! ```
//! use racelab_scenarios::{catalog, run_seed, Variant};
//! let races = catalog();
//! let race = races.iter().find(|r| r.id == "R-002-03").unwrap();
//! let outcome = run_seed(race, Variant::Correct, 7);
//! assert!(!outcome.violated());
//! ```

#![forbid(unsafe_code)]

pub mod acceptance;
mod access;
pub mod bench;
mod billing;
mod breaker;
mod catalog;
mod context;
mod doc001;
mod doc002;
mod doc003;
pub mod gate;
pub mod net;
mod parallel;
mod proxy;
mod quota;
pub mod real;
pub mod report;
pub mod route_bench;
mod routing;
mod scheduler;
mod scheduler_jobs;
mod scheduler_restart;
mod scheduler_rollout;
mod scheduler_ws;
mod session;

use std::collections::{BTreeMap, BTreeSet};

use racelab_core::{PropertyKind, Timestamp};
use racelab_sim::explore::{self, Scheduler, SimRng, Step};

pub use catalog::{
    BuildFn, Capture, Expectation, JudgeFn, Outcome, PerVariant, Race, Script, Workload,
};
pub use parallel::{BadShard, Shard, SweepPlan, default_jobs, sweep_seeds};
pub use racelab_core::Variant;

/// Every race of the catalog, in catalog order.
pub fn catalog() -> Vec<Race> {
    let mut races = doc001::races();
    races.extend(doc002::races());
    races.extend(doc003::races());
    races.extend(billing::races());
    races.extend(quota::races());
    races.extend(scheduler::races());
    races.extend(scheduler_rollout::races());
    races.extend(context::races());
    races.extend(access::races());
    races.extend(session::races());
    races.extend(routing::races());
    races.extend(breaker::races());
    races.extend(scheduler_jobs::races());
    races.extend(scheduler_ws::races());
    races.extend(scheduler_restart::races());
    races
}

/// Why a race name was not found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown race {name:?}{}", hint(.suggestions))]
pub struct UnknownRace {
    /// The name given.
    pub name: String,
    /// The nearest known names.
    pub suggestions: Vec<String>,
}

fn hint(suggestions: &[String]) -> String {
    match suggestions {
        [] => "; `racelab list` shows every race".to_string(),
        s => format!(
            "; did you mean {}? (`racelab list` shows every race)",
            s.join(", ")
        ),
    }
}

/// Finds a race by id (case-insensitive), suggesting the nearest ids when there is none.
pub fn find<'a>(races: &'a [Race], name: &str) -> Result<&'a Race, UnknownRace> {
    if let Some(race) = races.iter().find(|r| r.id.eq_ignore_ascii_case(name)) {
        return Ok(race);
    }
    let wanted = name.to_ascii_uppercase();
    let mut scored: Vec<(usize, &str)> = races
        .iter()
        .map(|r| (edit_distance(&wanted, r.id), r.id))
        .collect();
    scored.sort();
    let best = scored.first().map_or(usize::MAX, |(d, _)| *d);
    let suggestions = scored
        .iter()
        .filter(|(d, _)| *d <= best.max(1) && *d <= 4)
        .take(3)
        .map(|(_, id)| id.to_string())
        .collect();
    Err(UnknownRace {
        name: name.to_string(),
        suggestions,
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The seed of the random workload (the [`SimRng`] a race's build draws from), derived from the run's seed so that the workload and the
/// faults are independent streams of the same seed.
pub fn workload_seed(seed: u64) -> u64 {
    // SplitMix64's finaliser.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which fault profile a random run draws its faults from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// The race's own profile ([`Race::profile`]): rates and targets written for the race.
    #[default]
    Race,
    /// One generic profile for every race ([`explore::FaultProfile::swarm`]): each seed first
    /// draws which fault kinds are on and at what rates, from its own stream. Of the race it
    /// keeps only the workload's time window, the latencies and the operations the store
    /// models cannot fail over.
    Swarm,
    /// The PCT scheduler at this depth ([`explore::Scheduler::Pct`]: random process
    /// priorities, `depth - 1` change points) with the swarm's faults: no race-specific
    /// profile either.
    Pct(u32),
}

/// The names of PCT at depths 1 to [`PCT_DEPTH_MAX`], as tables and JSON rows show them.
const PCT_NAMES: [&str; PCT_DEPTH_MAX as usize] = [
    "pct1", "pct2", "pct3", "pct4", "pct5", "pct6", "pct7", "pct8", "pct9", "pct10",
];

/// The deepest PCT run the CLI accepts (`--depth 1..=10`).
pub const PCT_DEPTH_MAX: u32 = 10;

impl Profile {
    /// Every profile the detection table and the gate measure, in their columns' order.
    pub const ALL: [Profile; 4] = [
        Profile::Race,
        Profile::Swarm,
        Profile::Pct(2),
        Profile::Pct(3),
    ];

    /// `race`, `swarm`, `pct2`, `pct3`, ...: the profile's name in tables and JSON (`pct`
    /// alone for a depth beyond [`PCT_DEPTH_MAX`], which the CLI refuses).
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Race => "race",
            Profile::Swarm => "swarm",
            Profile::Pct(depth) => PCT_NAMES
                .get((depth as usize).wrapping_sub(1))
                .copied()
                .unwrap_or("pct"),
        }
    }

    /// The scheduler of `race`'s random run with `seed`.
    pub fn scheduler(self, race: &Race, seed: u64) -> Scheduler {
        match self {
            Profile::Pct(depth) => Scheduler::Pct {
                seed,
                depth,
                faults: Profile::Swarm.faults(race, seed),
            },
            other => Scheduler::Random {
                seed,
                faults: other.faults(race, seed),
            },
        }
    }

    /// The fault profile of `race`'s run with `seed` (PCT's faults are the swarm's).
    pub fn faults(self, race: &Race, seed: u64) -> explore::FaultProfile {
        let own = (race.profile)();
        match self {
            Profile::Race => own,
            Profile::Swarm | Profile::Pct(_) => {
                // The swarm's draw is a stream of its own, so the workload, the fault mix, the
                // faults and the latencies of one seed are independent.
                let mut rng = SimRng::new(workload_seed(seed ^ 0x5357_4152_4D00_0000));
                explore::FaultProfile::swarm(&mut rng, own.window, own.latency, own.failover_exempt)
            }
        }
    }

    /// The arguments that select it on a replay command line (none for the default).
    fn replay_args(self) -> String {
        match self {
            Profile::Race => String::new(),
            Profile::Swarm => " --profile swarm".to_string(),
            Profile::Pct(depth) => format!(" --scheduler pct --depth {depth}"),
        }
    }
}

/// Runs `race`'s `variant` under the random scheduler with `seed`.
pub fn run_seed(race: &Race, variant: Variant, seed: u64) -> Outcome {
    run_seed_in(race, variant, seed, Profile::Race)
}

/// Runs `race`'s `variant` under the random scheduler with `seed`, its faults drawn from
/// `profile`.
pub fn run_seed_in(race: &Race, variant: Variant, seed: u64, profile: Profile) -> Outcome {
    let mut rng = SimRng::new(workload_seed(seed));
    let (spec, capture) = (race.build)(variant, Workload::Random(&mut rng));
    judge(
        race,
        explore::run(spec, &profile.scheduler(race, seed)),
        &capture,
    )
}

/// Runs `race`'s `variant` on one of its scripted timelines.
pub fn run_script(race: &Race, script: &Script, variant: Variant) -> Outcome {
    let (spec, capture) = (race.build)(variant, Workload::Scripted(script.name));
    let scheduler = Scheduler::Scripted {
        name: script.name.to_string(),
        steps: script.steps.clone(),
    };
    judge(race, explore::run(spec, &scheduler), &capture)
}

/// Judges a run of `race`: its judge's verdict, checked against the properties it declares,
/// plus the generic stuck verdict when the run did not complete. Of the `sometimes` counts the
/// judge reports, those of the properties the race declares are kept.
///
/// # Panics
///
/// When the judge reports a property the race does not declare (a defect of the race's
/// definition, not of the run).
pub fn judge(race: &Race, run: explore::Run, capture: &Capture) -> Outcome {
    let mut verdict = (race.judge)(&run, capture);
    for v in &verdict.violations {
        let declared = race
            .property(&v.invariant)
            .is_some_and(|p| p.kind != PropertyKind::Sometimes);
        assert!(
            declared,
            "{}: its judge reported {:?} broken, which it does not declare as an `always` or \
             `eventually` property",
            race.id, v.invariant
        );
    }
    // A family counts all of its `sometimes` properties; the race keeps those it declares.
    verdict.sometimes.retain(|name, _| {
        race.property(name)
            .is_some_and(|p| p.kind == PropertyKind::Sometimes)
    });
    if !run.quiescent && verdict.stuck.is_none() {
        verdict.stuck = Some(format!(
            "the run did not complete: {}",
            run.unsettled.join("; ")
        ));
    }
    Outcome { run, verdict }
}

/// The summary of a sweep over consecutive seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Seeds run.
    pub seeds_run: u64,
    /// Seeds whose run violated an invariant.
    pub failures: u64,
    /// The first of them.
    pub first_failing_seed: Option<u64>,
    /// Store operations executed over all seeds (a deterministic cost count).
    pub store_ops: u64,
    /// Events processed over all seeds.
    pub events: u64,
    /// Seeds whose run had at least one injected fault.
    pub runs_with_faults: u64,
    /// How often a protocol refused a duplicate or a stale write (the counts of the race's
    /// protection properties): evidence that a passing sweep exercised the protections.
    pub protections: u64,
    /// Seeds whose run violated no property but did not complete.
    pub stuck: u64,
    /// The first of them.
    pub first_stuck_seed: Option<u64>,
    /// Per `sometimes` property, the seeds in which it held.
    pub sometimes: BTreeMap<String, u64>,
}

/// Runs seeds `start..start + count`, calling `progress(done)` after each.
pub fn sweep(
    race: &Race,
    variant: Variant,
    start: u64,
    count: u64,
    progress: impl FnMut(u64),
) -> Sweep {
    sweep_plan(race, variant, SweepPlan::seeds(start, count), progress)
}

/// Runs the seeds of `plan` (on its threads, until its deadline), calling `progress(done)`
/// as seeds finish; the summary is the one-thread sweep's.
pub fn sweep_plan(
    race: &Race,
    variant: Variant,
    plan: SweepPlan,
    progress: impl FnMut(u64),
) -> Sweep {
    let run =
        |seed| Ok::<_, std::convert::Infallible>(run_seed_in(race, variant, seed, plan.profile));
    match sweep_seeds(race, plan, run, progress) {
        Ok(s) => s,
        Err(never) => match never {},
    }
}

impl Sweep {
    /// Adds one seed's outcome.
    pub fn record(&mut self, race: &Race, seed: u64, outcome: &Outcome) {
        self.seeds_run += 1;
        self.store_ops += outcome.run.stats.store_ops;
        self.events += outcome.run.stats.events;
        self.runs_with_faults += u64::from(outcome.run.stats.faults > 0);
        for (name, n) in &outcome.verdict.sometimes {
            *self.sometimes.entry(name.clone()).or_default() += 1;
            if race.property(name).is_some_and(|p| p.protection) {
                self.protections += n;
            }
        }
        if outcome.violated() {
            self.failures += 1;
            self.first_failing_seed.get_or_insert(seed);
        } else if outcome.stuck() {
            self.stuck += 1;
            self.first_stuck_seed.get_or_insert(seed);
        }
    }

    /// Adds the summary of other seeds (a later range, or another thread's seeds): counts
    /// add up, the first failing and first stuck seeds are the smaller. Merging the parts
    /// of a range in any order gives the summary of the whole range.
    pub fn merge(&mut self, other: &Sweep) {
        self.seeds_run += other.seeds_run;
        self.failures += other.failures;
        self.store_ops += other.store_ops;
        self.events += other.events;
        self.runs_with_faults += other.runs_with_faults;
        self.protections += other.protections;
        self.stuck += other.stuck;
        self.first_failing_seed = min_seed(self.first_failing_seed, other.first_failing_seed);
        self.first_stuck_seed = min_seed(self.first_stuck_seed, other.first_stuck_seed);
        for (name, n) in &other.sometimes {
            *self.sometimes.entry(name.clone()).or_default() += n;
        }
    }

    /// What the sweep showed: fails if any seed violated a property, else stuck if any seed
    /// did not complete, else holds.
    pub fn observed(&self) -> Expectation {
        Expectation::observed(self.failures > 0, self.stuck > 0)
    }

    /// The `sometimes` properties of `race` that never held in this sweep.
    pub fn never_held(&self, race: &Race) -> Vec<&'static str> {
        race.properties_of(PropertyKind::Sometimes)
            .filter(|p| !self.sometimes.contains_key(p.name))
            .map(|p| p.name)
            .collect()
    }
}

/// The smaller of two optional seeds.
fn min_seed(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A failing random run reduced to the fewest faults that still break the invariant.
#[derive(Debug)]
pub struct Shrunk {
    /// How many faults the original run injected.
    pub original_faults: usize,
    /// The faults that remain, as a readable schedule.
    pub steps: Vec<Step>,
    /// The run with only those faults.
    pub outcome: Outcome,
    /// How many candidate schedules were tried.
    pub attempts: u64,
    /// How many draws the seed's random workload made.
    pub workload_draws: usize,
    /// The workload the shrink settled on, as the values of its draws
    /// ([`run_pinned_workload`] replays them; [`SimRng::replaying`] says how).
    pub workload: Vec<u64>,
    /// How many draws the shrunk workload makes (fewer than `workload` holds values for
    /// when a size went down; more when draws past its end take their simplest value).
    pub workload_draws_now: usize,
    /// How many of those draws take their simplest value (the least request count, worker
    /// count, job length, ...).
    pub workload_simplest: usize,
    /// Whether the shrink edited the workload at all.
    pub workload_changed: bool,
}

/// The most rounds of retargeting faults and shrinking the workload one shrink makes.
pub const SHRINK_ROUNDS: usize = 4;

/// The most candidate schedules one shrink may try.
pub const SHRINK_ATTEMPTS_MAX: u64 = 2_000;

/// Runs `race`'s `variant` with `seed`'s workload and latencies but only the faults `steps`.
pub fn run_pinned(race: &Race, variant: Variant, seed: u64, steps: &[Step]) -> Outcome {
    let mut rng = SimRng::new(workload_seed(seed));
    pinned(race, variant, seed, steps, &mut rng)
}

/// [`run_pinned`] with the workload whose draws take the values `workload`
/// ([`SimRng::replaying`]): the workload a shrink settled on.
pub fn run_pinned_workload(
    race: &Race,
    variant: Variant,
    seed: u64,
    steps: &[Step],
    workload: &[u64],
) -> Outcome {
    pinned(
        race,
        variant,
        seed,
        steps,
        &mut SimRng::replaying(workload.to_vec()),
    )
}

/// Runs `race`'s `variant` with the workload `rng` draws, `seed`'s latencies and the faults
/// `steps`.
fn pinned(race: &Race, variant: Variant, seed: u64, steps: &[Step], rng: &mut SimRng) -> Outcome {
    let (spec, capture) = (race.build)(variant, Workload::Random(rng));
    let latency = (race.profile)().latency;
    let scheduler = Scheduler::Pinned {
        seed,
        latency,
        steps: steps.to_vec(),
    };
    judge(race, explore::run(spec, &scheduler), &capture)
}

/// The values of the draws `race`'s random workload for `seed` makes.
fn workload_values(race: &Race, variant: Variant, seed: u64) -> Vec<u64> {
    let mut rng = SimRng::new(workload_seed(seed));
    let _ = (race.build)(variant, Workload::Random(&mut rng));
    rng.values()
}

/// The generator after building the workload of `values`: its draws and their simplest
/// values.
fn replayed_workload(race: &Race, variant: Variant, values: &[u64]) -> SimRng {
    let mut rng = SimRng::replaying(values.to_vec());
    let _ = (race.build)(variant, Workload::Random(&mut rng));
    rng
}

/// Shrinks a failing seed: delta debugging (ddmin) over the faults the random scheduler
/// injected, keeping the seed's workload and latencies. `None` if the seed does not fail.
pub fn shrink(race: &Race, variant: Variant, seed: u64) -> Option<Shrunk> {
    shrink_in(race, variant, seed, Profile::Race)
}

/// [`shrink`] for a seed run under `profile` (the pinned runs keep the seed's workload and
/// random latencies, which no fault profile changes, and inject only the chosen faults).
/// `None` for a PCT run too: its order comes from priorities the pinned runs do not keep.
pub fn shrink_in(race: &Race, variant: Variant, seed: u64, profile: Profile) -> Option<Shrunk> {
    if let Profile::Pct(_) = profile {
        return None;
    }
    let original = run_seed_in(race, variant, seed, profile);
    if !original.violated() {
        return None;
    }
    let mut steps = original.run.injected.clone();
    let original_faults = steps.len();
    // A candidate counts only if it still breaks a property the original broke, so that
    // shrinking the workload cannot wander off to another failure.
    let broken: BTreeSet<String> = original
        .verdict
        .violations
        .iter()
        .map(|v| v.invariant.clone())
        .collect();
    let mut attempts = 0u64;
    let original_workload = workload_values(race, variant, seed);
    let mut workload = original_workload.clone();
    // The run of a candidate, if it still breaks a property the original broke.
    let mut failing = |candidate: &[Step], workload: &[u64]| {
        attempts += 1;
        if attempts > SHRINK_ATTEMPTS_MAX {
            return None;
        }
        let outcome = run_pinned_workload(race, variant, seed, candidate, workload);
        let same = outcome
            .verdict
            .violations
            .iter()
            .any(|v| broken.contains(&v.invariant));
        same.then_some(outcome)
    };
    // Faults first. Then, in rounds until nothing changes: each fault aimed at the n-th
    // operation of a kind is aimed at an earlier one if the run still fails (so that fewer
    // operations of that kind are needed), and each fault planned at a time earlier; the
    // workload's draws, keeping an edit only when
    // the run still fails and its timeline is no longer (a simpler value is not always a
    // simpler story: one work order for every scan makes more contention, not less): spans
    // of draws deleted (a request, a worker fewer: the later draws move up), then each draw
    // set to its simplest value; and the faults again, which a smaller workload may need
    // fewer of.
    steps = ddmin(steps, |c| failing(c, &workload).is_some());
    let mut length = timeline_length(&run_pinned_workload(race, variant, seed, &steps, &workload));
    for _round in 0..SHRINK_ROUNDS {
        let mut changed = false;
        for i in 0..steps.len() {
            let Step::On { nth, .. } = &steps[i] else {
                continue;
            };
            for earlier in 1..*nth {
                let mut candidate = steps.clone();
                if let Step::On { nth, .. } = &mut candidate[i] {
                    *nth = earlier;
                }
                if let Some(run) = failing(&candidate, &workload) {
                    length = timeline_length(&run);
                    steps = candidate;
                    changed = true;
                    break;
                }
            }
        }
        for i in 0..steps.len() {
            let Step::At { at, .. } = &steps[i] else {
                continue;
            };
            // Earlier, by halving the gap to 0 while the run still fails.
            let (mut now, mut gap) = (at.as_ms(), at.as_ms());
            while gap > 0 {
                let mut candidate = steps.clone();
                if let Step::At { at, .. } = &mut candidate[i] {
                    *at = Timestamp::from_ms(now - gap);
                }
                match failing(&candidate, &workload) {
                    Some(run) if timeline_length(&run) <= length => {
                        length = timeline_length(&run);
                        steps = candidate;
                        now -= gap;
                        changed = true;
                    }
                    _ => gap /= 2,
                }
            }
        }
        for span in (1..=8).rev() {
            let mut at = 0;
            while at + span <= workload.len() {
                let mut candidate = workload.clone();
                candidate.drain(at..at + span);
                match failing(&steps, &candidate) {
                    Some(run) if timeline_length(&run) <= length => {
                        length = timeline_length(&run);
                        workload = candidate;
                        changed = true;
                    }
                    _ => at += 1,
                }
            }
        }
        let simplest = replayed_workload(race, variant, &workload)
            .simplest()
            .to_vec();
        for (i, least) in simplest.iter().enumerate() {
            if workload.get(i).is_none_or(|v| v == least) {
                continue;
            }
            let mut candidate = workload.clone();
            candidate[i] = *least;
            if let Some(run) = failing(&steps, &candidate)
                && timeline_length(&run) <= length
            {
                length = timeline_length(&run);
                workload = candidate;
                changed = true;
            }
        }
        let fewer = ddmin(steps.clone(), |c| failing(c, &workload).is_some());
        if fewer.len() < steps.len() {
            steps = fewer;
            changed = true;
        }
        if !changed {
            break;
        }
    }
    let outcome = run_pinned_workload(race, variant, seed, &steps, &workload);
    // Invariant: every accepted candidate failed, and runs are deterministic.
    assert!(
        outcome.violated(),
        "the shrunk schedule of {} seed {seed} no longer fails",
        race.id
    );
    let replayed = replayed_workload(race, variant, &workload);
    let workload_simplest = replayed
        .simplest()
        .iter()
        .zip(replayed.values())
        .filter(|(least, v)| **least == *v)
        .count();
    Some(Shrunk {
        original_faults,
        steps,
        outcome,
        attempts,
        workload_draws: original_workload.len(),
        workload_changed: workload != original_workload,
        workload,
        workload_draws_now: replayed.draws(),
        workload_simplest,
    })
}

/// How many steps a run's story shows (T1..Tn up to its last violation: [`render_story`]).
fn timeline_length(outcome: &Outcome) -> usize {
    render_story(outcome).0.len()
}

/// Delta debugging (Zeller's ddmin) over `steps`: a smallest subset (1-minimal) for which
/// `fails` holds, given that it holds for `steps`.
fn ddmin(mut steps: Vec<Step>, mut fails: impl FnMut(&[Step]) -> bool) -> Vec<Step> {
    if fails(&[]) {
        return Vec::new();
    }
    let mut n = 2usize;
    while steps.len() >= 2 {
        let chunk = steps.len().div_ceil(n);
        let chunks: Vec<Vec<Step>> = steps.chunks(chunk).map(<[Step]>::to_vec).collect();
        let mut reduced = false;
        for (i, c) in chunks.iter().enumerate() {
            if fails(c) {
                steps = c.clone();
                n = 2;
                reduced = true;
                break;
            }
            let complement: Vec<Step> = chunks
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, c)| c.clone())
                .collect();
            if chunks.len() > 2 && fails(&complement) {
                steps = complement;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= steps.len() {
                break;
            }
            n = (n * 2).min(steps.len());
        }
    }
    steps
}

/// The command that shrinks (and so replays the shrunk schedule of) one seed.
pub fn shrink_command(race: &Race, variant: Variant, seed: u64) -> String {
    shrink_command_in(race, variant, seed, Profile::Race)
}

/// The command that shrinks one seed run under `profile`.
pub fn shrink_command_in(race: &Race, variant: Variant, seed: u64, profile: Profile) -> String {
    format!(
        "racelab shrink {} --variant {} --seed {seed}{}",
        race.id,
        variant.as_str(),
        profile.replay_args()
    )
}

/// Runs `race`'s `variant` on the small workload of its first scripted timeline under one
/// schedule of the bounded exhaustive search (`prefix` of fault choices).
pub fn run_exhaustive(race: &Race, variant: Variant, prefix: &[u32]) -> Outcome {
    let scripts = (race.scripts)();
    let workload = scripts.first().map_or("", |s| s.name);
    let (spec, capture) = (race.build)(variant, Workload::Scripted(workload));
    let mut faults = (race.profile)();
    // Faults planned at times are not choice points (their domain is every millisecond);
    // the random sweeps cover them.
    faults.partitions = 0;
    faults.redis_restarts = 0;
    // A race whose sweep injects no fault races on arrival order: its choice points are the
    // messages' latencies (the scripted one, or the profile's longest).
    let slow = (!injects_faults(&faults)).then_some(faults.latency.1);
    let scheduler = Scheduler::Exhaustive {
        prefix: prefix.to_vec(),
        faults,
        slow,
    };
    judge(race, explore::run(spec, &scheduler), &capture)
}

/// Whether a fault profile injects any fault a bounded exhaustive search enumerates (per
/// operation, or planned pauses).
pub fn injects_faults(profile: &explore::FaultProfile) -> bool {
    !(profile.delay.is_never()
        && profile.drop_reply.is_never()
        && profile.pause.is_never()
        && profile.crash.is_never()
        && profile.failover.is_never())
}

/// Visits every schedule of `race`'s small workload with at most `deviations_max` injected
/// faults, or, for a race whose profile injects none, with at most `deviations_max` slow
/// messages (see `racelab_sim::explore::exhaustive`).
pub fn explore_exhaustively(
    race: &Race,
    variant: Variant,
    deviations_max: u32,
    schedules_max: u64,
) -> explore::Exhaustive {
    explore::exhaustive(deviations_max, schedules_max, |prefix| {
        let outcome = run_exhaustive(race, variant, prefix);
        let choices = outcome.run.choices.clone().unwrap_or_default();
        (outcome.violated(), choices)
    })
}

/// As [`explore_exhaustively`], but stops at the first schedule that breaks an invariant.
pub fn explore_until_violation(
    race: &Race,
    variant: Variant,
    deviations_max: u32,
    schedules_max: u64,
) -> explore::Exhaustive {
    explore::exhaustive_until_violation(deviations_max, schedules_max, |prefix| {
        let outcome = run_exhaustive(race, variant, prefix);
        let choices = outcome.run.choices.clone().unwrap_or_default();
        (outcome.violated(), choices)
    })
}

/// The first seed from `start` whose run violates an invariant, within `budget` seeds.
pub fn seeds_to_detect(race: &Race, variant: Variant, start: u64, budget: u64) -> Option<u64> {
    seeds_to_detect_in(race, variant, start, budget, Profile::Race)
}

/// The first seed from `start` whose run under `profile` violates an invariant, within
/// `budget`.
pub fn seeds_to_detect_in(
    race: &Race,
    variant: Variant,
    start: u64,
    budget: u64,
    profile: Profile,
) -> Option<u64> {
    (start..start.saturating_add(budget))
        .find(|seed| run_seed_in(race, variant, *seed, profile).violated())
}

/// The command that replays one seed.
pub fn replay_command(race: &Race, variant: Variant, seed: u64) -> String {
    replay_command_in(race, variant, seed, Profile::Race)
}

/// The command that replays one seed run under `profile`.
pub fn replay_command_in(race: &Race, variant: Variant, seed: u64, profile: Profile) -> String {
    format!(
        "racelab replay {} --variant {} --seed {seed}{}",
        race.id,
        variant.as_str(),
        profile.replay_args()
    )
}

/// The command that replays one scripted timeline.
pub fn replay_script_command(race: &Race, script: &Script, variant: Variant) -> String {
    format!(
        "racelab replay {} --variant {} --script {}",
        race.id,
        variant.as_str(),
        script.name
    )
}

/// The timeline of an outcome, one line per step, with the violating operations marked.
pub fn render_timeline(outcome: &Outcome) -> Vec<String> {
    marked_lines(marked_timeline(outcome))
}

/// The lines of `steps`, a violating one marked.
fn marked_lines(steps: Vec<(String, bool)>) -> Vec<String> {
    steps
        .into_iter()
        .map(|(line, violation)| {
            if violation {
                format!("{line}   <== violation")
            } else {
                line
            }
        })
        .collect()
}

/// Each timeline step rendered, and whether it is an operation a violation names.
fn marked_timeline(outcome: &Outcome) -> Vec<(String, bool)> {
    let history = &outcome.run.history;
    let marked: BTreeSet<usize> = outcome
        .verdict
        .violations
        .iter()
        .flat_map(|v| v.ops.iter().copied())
        .collect();
    history
        .timeline()
        .iter()
        .map(|step| {
            let violation =
                matches!(step.kind, racelab_core::TimelineKind::Op(i) if marked.contains(&i));
            (history.render_step(step), violation)
        })
        .collect()
}

/// A failing run's story: its timeline ([`render_timeline`]) up to and including the last
/// step marked as a violation, and how many later steps that leaves out (none when no step
/// is marked, as for a property judged on the end state alone). What a shrink minimises and
/// prints: the steps after the last violation do not tell how it came about.
pub fn render_story(outcome: &Outcome) -> (Vec<String>, usize) {
    let mut steps = marked_timeline(outcome);
    let end = steps
        .iter()
        .rposition(|(_, v)| *v)
        .map_or(steps.len(), |last| last + 1);
    let later = steps.len() - end;
    steps.truncate(end);
    (marked_lines(steps), later)
}
