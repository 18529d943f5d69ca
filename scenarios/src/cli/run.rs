//! `racelab run`: per race and variant, the scripted timelines and a seeded random sweep, in
//! either world, then the race matrix; the exit code says whether every verdict was the
//! expected one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use racelab_scenarios::{
    Expectation, Outcome, Profile, Race, Script, Shard, Sweep, SweepPlan, Variant, catalog, find,
    replay_script_command, run_script,
};
use serde_json::json;

use super::World;
use super::output::{clear, print_above, progress_bar, spinner};

/// Which seeds `run` sweeps per race and variant, how, and for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seeds {
    /// Seeds per race and variant; `None`: 1,000, or unbounded under a time budget.
    pub(crate) count: Option<u64>,
    /// The first seed of the whole range (before sharding).
    pub(crate) start: u64,
    /// Threads per sweep.
    pub(crate) jobs: usize,
    /// The part of the range this run covers.
    pub(crate) shard: Shard,
    /// A wall-clock budget for the whole command, shared out among the rows still to run.
    pub(crate) time: Option<Duration>,
    /// The fault profile of the sweeps.
    pub(crate) profile: Profile,
}

impl Seeds {
    /// The default number of seeds per race and variant.
    const DEFAULT_COUNT: u64 = 1000;

    /// The shard's first seed and seed count, or why the options do not fit together.
    fn range(&self) -> Result<(u64, u64), String> {
        let count = match (self.count, self.time) {
            (Some(n), _) => n,
            (None, None) => Seeds::DEFAULT_COUNT,
            (None, Some(_)) if self.shard != Shard::WHOLE => {
                return Err(
                    "--shard splits a finite range: give --seeds with --time (the budget then \
                     stops each shard early)"
                        .to_string(),
                );
            }
            (None, Some(_)) => u64::MAX - self.start,
        };
        Ok(self.shard.range(self.start, count))
    }
}

/// Runs `racelab run` in `world` over the races named (or `all` those the world runs).
pub(crate) fn run(
    world: World,
    names: &[String],
    all: bool,
    variants: &[Variant],
    seeds: Seeds,
    json: bool,
) -> ExitCode {
    let races = catalog();
    let selected: Vec<&Race> = if all {
        races.iter().filter(|r| world.check(r).is_ok()).collect()
    } else {
        match resolve(&races, names) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    };
    if let Some(e) = selected.iter().find_map(|r| world.check(r).err()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(e) = variants
        .iter()
        .find_map(|v| world.check_sweep(*v, seeds.profile).err())
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let (start, count) = match seeds.range() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = selected.len() * variants.len();
    let budget_end = seeds.time.map(|t| Instant::now() + t);
    let bar = match budget_end {
        None => progress_bar(
            json,
            count.saturating_mul(rows as u64),
            world.progress_template(),
        ),
        Some(_) => spinner(json),
    };
    let mut all_match = true;
    let mut matrix = Vec::new();
    let mut rows_left = rows as u32;
    for race in &selected {
        for &v in variants {
            let scripts: Vec<ScriptRun> = world
                .scripts(race)
                .into_iter()
                .map(|script| ScriptRun::new(race, script, v))
                .collect();
            if let Some(bar) = &bar {
                bar.set_message(world.progress_message(race, v));
            }
            // Each row gets an equal share of what is left of the budget.
            let deadline = budget_end.map(|end| {
                let now = Instant::now();
                now + end.saturating_duration_since(now) / rows_left.max(1)
            });
            rows_left = rows_left.saturating_sub(1);
            let plan = SweepPlan::seeds(start, count)
                .jobs(seeds.jobs)
                .until(deadline)
                .profile(seeds.profile);
            let done_before = bar.as_ref().map_or(0, ProgressBar::position);
            let sweep = match world.sweep(race, v, plan, |n| {
                if let Some(bar) = &bar {
                    bar.set_position(done_before + n);
                }
            }) {
                Ok(s) => s,
                Err(e) => {
                    clear(bar);
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let row = Row::new(world, race, v, scripts, sweep, &seeds, start);
            all_match &= row.settled();
            if json {
                out!("{}", row.json());
            } else {
                for line in row.text(world) {
                    print_above(bar.as_ref(), &line);
                }
                matrix.push(row);
            }
        }
    }
    clear(bar);
    if !json {
        print_matrix(world.matrix_title(), &matrix);
        if seeds.shard != Shard::WHOLE {
            out!(
                "shard {} of a sweep: a row expected to fail may find its failure in another \
                 shard; `racelab merge` the shards' --json output for the verdict",
                seeds.shard
            );
        }
    }
    if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The races named, in order and each once, or the error line for an unknown name.
fn resolve<'a>(races: &'a [Race], names: &[String]) -> Result<Vec<&'a Race>, String> {
    let mut out = Vec::new();
    for name in names {
        let race = find(races, name).map_err(|e| format!("error: {e}"))?;
        if !out.iter().any(|r: &&Race| r.id == race.id) {
            out.push(race);
        }
    }
    Ok(out)
}

/// One scripted timeline run against one variant.
struct ScriptRun {
    /// The timeline.
    script: Script,
    /// Its expected outcome for the variant.
    expected: Expectation,
    /// What happened.
    outcome: Outcome,
    /// Whether that was the expected outcome.
    matches: bool,
}

impl ScriptRun {
    /// Runs `script` against `variant` and judges it.
    fn new(race: &Race, script: Script, variant: Variant) -> ScriptRun {
        let outcome = run_script(race, &script, variant);
        let expected = script.expect.get(variant);
        let matches = expected.matches(outcome.observed());
        ScriptRun {
            script,
            expected,
            outcome,
            matches,
        }
    }
}

/// What `run` found for one race and variant.
struct Row<'a> {
    /// The race.
    race: &'a Race,
    /// The variant.
    variant: Variant,
    /// Its scripted timelines (none in the net world).
    scripts: Vec<ScriptRun>,
    /// The random sweep.
    sweep: Sweep,
    /// The sweep's expected verdict.
    expected: Expectation,
    /// Whether the sweep's verdict was the expected one.
    sweep_matches: bool,
    /// The part of the seed range this row covers.
    shard: Shard,
    /// Its first seed.
    start: u64,
    /// The fault profile of its sweep.
    profile: Profile,
    /// The command replaying the first failing seed, if a seed failed.
    replay: Option<String>,
}

impl<'a> Row<'a> {
    /// Judges the sweep of `race`'s `variant` in `world`.
    fn new(
        world: World,
        race: &'a Race,
        variant: Variant,
        scripts: Vec<ScriptRun>,
        sweep: Sweep,
        seeds: &Seeds,
        start: u64,
    ) -> Row<'a> {
        let (shard, profile) = (seeds.shard, seeds.profile);
        let expected = race.sweep.get(variant);
        let sweep_matches = expected.matches(sweep.observed());
        let replay = sweep
            .first_failing_seed
            .map(|s| world.replay_command(race, variant, s, profile));
        Row {
            race,
            variant,
            scripts,
            sweep,
            expected,
            sweep_matches,
            replay,
            shard,
            start,
            profile,
        }
    }

    /// Whether the sweep and every timeline had their expected verdicts.
    fn matches(&self) -> bool {
        self.sweep_matches && self.scripts.iter().all(|s| s.matches)
    }

    /// Whether this row settles its part of the verdict: the whole range must match; one
    /// shard of it only must not contradict (a row expected to fail may fail in another
    /// shard, but a failure, or a stuck seed where every run should complete, is final).
    fn settled(&self) -> bool {
        if self.shard == Shard::WHOLE {
            return self.matches();
        }
        let observed = self.sweep.observed();
        let contradicted = match self.expected {
            Expectation::Fails => false,
            Expectation::Holds => observed != Expectation::Holds,
            Expectation::Stuck => observed == Expectation::Fails,
        };
        !contradicted && self.scripts.iter().all(|s| s.matches)
    }

    /// The row as one JSON object (the same fields in both worlds; `racelab merge` reads it).
    fn json(&self) -> serde_json::Value {
        json!({
            "race": self.race.id,
            "variant": self.variant.as_str(),
            "shard": self.shard.to_string(),
            "profile": self.profile.as_str(),
            "seeds_run": self.sweep.seeds_run,
            "start_seed": self.start,
            "failures": self.sweep.failures,
            "first_failing_seed": self.sweep.first_failing_seed,
            "expected": self.expected.as_str(),
            "verdict_matches": self.matches(),
            "store_ops": self.sweep.store_ops,
            "stuck": self.sweep.stuck,
            "first_stuck_seed": self.sweep.first_stuck_seed,
            "sometimes": self.sweep.sometimes,
            "replay": self.replay,
            "scripts": self.scripts.iter().map(|s| json!({
                "name": s.script.name,
                "expected": s.expected.as_str(),
                "violated": s.outcome.violated(),
                "observed": s.outcome.observed().as_str(),
                "broken": s.outcome.verdict.broken(),
                "matches": s.matches,
            })).collect::<Vec<_>>(),
        })
    }

    /// The row as text: a heading, a line per timeline, the sweep's line.
    fn text(&self, world: World) -> Vec<String> {
        let start = self.start;
        let mut lines = vec![world.heading(self.race, self.variant)];
        for s in &self.scripts {
            let violated = s.outcome.violated();
            let observed = s.outcome.observed().as_str();
            let mark = if s.matches { "ok" } else { "MISMATCH" };
            let mut line = format!(
                "  timeline {:<24} expected {:<5} observed {:<5} {mark}",
                s.script.name,
                s.expected.as_str(),
                observed
            );
            if violated || !s.matches {
                line.push_str(&format!(
                    "\n    replay: {}",
                    replay_script_command(self.race, &s.script, self.variant)
                ));
            }
            lines.push(line);
        }
        let shard = if self.shard == Shard::WHOLE {
            String::new()
        } else {
            format!(" (shard {})", self.shard)
        };
        let mark = match (self.sweep_matches, self.settled()) {
            (true, _) => "ok",
            (false, true) => "pending merge",
            (false, false) => "MISMATCH",
        };
        let mut line = format!(
            "  random   {} seeds from {start}{shard}: {} failing, expected {} -> {mark}",
            self.sweep.seeds_run,
            self.sweep.failures,
            self.expected.as_str(),
        );
        if let (Some(seed), Some(command)) = (self.sweep.first_failing_seed, &self.replay) {
            line.push_str(&format!(
                "\n    first failing seed {seed}; replay: {command}"
            ));
        }
        if let Some(seed) = self.sweep.first_stuck_seed {
            line.push_str(&format!(
                "\n    {} seeds stuck (did not complete), first {seed}; replay: {}",
                self.sweep.stuck,
                world.replay_command(self.race, self.variant, seed, self.profile)
            ));
        }
        lines.push(line);
        lines
    }
}

/// Prints the race matrix under `title`.
fn print_matrix(title: &str, matrix: &[Row<'_>]) {
    out!("\n{title}");
    out!(
        "{:<10} {:<8} {:>10} {:>8} {:>9}  verdict",
        "race",
        "variant",
        "failures",
        "seeds",
        "expected"
    );
    for row in matrix {
        out!(
            "{:<10} {:<8} {:>10} {:>8} {:>9}  {}",
            row.race.id,
            row.variant.as_str(),
            row.sweep.failures,
            row.sweep.seeds_run,
            row.expected.as_str(),
            if row.matches() {
                "as expected"
            } else if row.settled() {
                "pending merge"
            } else {
                "MISMATCH"
            }
        );
    }
}
