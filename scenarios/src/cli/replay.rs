//! `racelab replay`: re-runs one seed (in any world) or one scripted timeline (explore world;
//! the real world runs those without scripted steps) and prints its timeline, verdict, trace
//! hash and replay command.

use std::process::ExitCode;

use racelab_scenarios::{
    Outcome, Profile, Race, Variant, catalog, render_timeline, replay_script_command, run_script,
};
use serde_json::json;

use super::{World, lookup};

/// What a replay prints besides the timeline and verdict.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Printed {
    /// One JSON object instead of text.
    pub(crate) json: bool,
    /// Also the Redis keys' linearizability.
    pub(crate) linearizability: bool,
}

/// Runs `racelab replay` in `world`: `seed`, or else the timeline named `script`.
pub(crate) fn replay(
    world: World,
    name: &str,
    variant: Variant,
    seed: Option<u64>,
    script: Option<&str>,
    profile: Profile,
    printed: Printed,
) -> ExitCode {
    let races = catalog();
    let race = match lookup(&races, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (outcome, command, label) = match (seed, script) {
        (Some(seed), _) => match world.run_seed(race, variant, seed, profile) {
            Ok(outcome) => (
                outcome,
                world.replay_command(race, variant, seed, profile),
                world.seed_label(seed),
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("error: pass --seed S or --script NAME");
            return ExitCode::from(2);
        }
        (None, Some(name)) if world == World::Real => {
            match World::run_real_script(race, variant, name) {
                Ok(outcome) => {
                    // The timeline exists: the run found it.
                    let command = (race.scripts)()
                        .iter()
                        .find(|s| s.name == name)
                        .map(|s| replay_script_command(race, s, variant))
                        .unwrap_or_default();
                    (
                        outcome,
                        format!("{command} --world real"),
                        format!("timeline {name}, real servers"),
                    )
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (None, _) if !world.runs_scripts() => {
            eprintln!(
                "error: the net world replays seeds (--seed S); scripted timelines run with \
                 --world explore"
            );
            return ExitCode::from(2);
        }
        (None, Some(name)) => {
            let scripts = world.scripts(race);
            let Some(s) = scripts.iter().find(|s| s.name == name) else {
                let names: Vec<_> = scripts.iter().map(|s| s.name).collect();
                eprintln!(
                    "error: {} has no timeline {name:?}; it has: {}",
                    race.id,
                    names.join(", ")
                );
                return ExitCode::from(2);
            };
            (
                run_script(race, s, variant),
                replay_script_command(race, s, variant),
                format!("timeline {name}"),
            )
        }
    };
    let shown = Shown {
        race,
        variant,
        seed,
        script,
        label: &label,
        command: &command,
        linearizability: printed.linearizability,
    };
    shown.print(&outcome, printed.json);
    ExitCode::SUCCESS
}

/// What a replay prints besides its outcome.
struct Shown<'a> {
    /// The race.
    race: &'a Race,
    /// The variant.
    variant: Variant,
    /// The seed replayed, if one was.
    seed: Option<u64>,
    /// The timeline replayed, if one was.
    script: Option<&'a str>,
    /// What the first line calls the run (`seed 3`, `timeline base`, ...).
    label: &'a str,
    /// The command that replays it.
    command: &'a str,
    /// Whether to check the run's Redis keys for linearizability.
    linearizability: bool,
}

impl Shown<'_> {
    /// Prints the run's timeline, verdict, trace hash and replay command (or one JSON object
    /// with the same fields).
    fn print(&self, outcome: &Outcome, json: bool) {
        let (race, variant) = (self.race, self.variant);
        let timeline = render_timeline(outcome);
        let hash = format!("{:016x}", outcome.run.trace_hash());
        let history = &outcome.run.history;
        let linear = self.linearizability.then(|| super::linear::check(history));
        if json {
            let mut row = json!({
                "race": race.id,
                "variant": variant.as_str(),
                "seed": self.seed,
                "script": self.script,
                "trace_hash": hash,
                "violated": outcome.violated(),
                "observed": outcome.observed().as_str(),
                "broken": outcome.verdict.broken(),
                "explanation": outcome.verdict.explanation(),
                "quiescent": outcome.run.quiescent,
                "timeline": timeline,
                "replay": self.command,
            });
            if let Some(report) = &linear {
                row["linearizability"] = super::linear::json(report);
            }
            out!("{row}");
        } else {
            out!(
                "{} ({}), {} variant, {}",
                race.id,
                race.title,
                variant.as_str(),
                self.label
            );
            for line in &timeline {
                out!("{line}");
            }
            out!();
            out!(
                "{}",
                if outcome.violated() {
                    "VIOLATED"
                } else {
                    "HELD"
                }
            );
            out!("{}", outcome.verdict.explanation());
            if let Some(report) = &linear {
                for line in super::linear::lines(history, report) {
                    out!("{line}");
                }
            }
            out!("trace hash {hash}");
            out!("replay: {}", self.command);
        }
    }
}
