//! `racelab shrink`: reduces a failing seed to the fewest injected faults that still break the
//! invariant, and prints that schedule's timeline and replay command.

use std::process::ExitCode;

use racelab_scenarios::{Profile, Variant, catalog, render_story};
use serde_json::json;

use super::lookup;

/// Runs `racelab shrink` on `name`'s `variant` at `seed` (explore world).
pub(crate) fn shrink(
    name: &str,
    variant: Variant,
    seed: u64,
    profile: Profile,
    json: bool,
) -> ExitCode {
    let races = catalog();
    let race = match lookup(&races, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Profile::Pct(_) = profile {
        eprintln!(
            "error: shrinking keeps a seed's random latencies and drops faults; a PCT run's \
             order comes from its priorities, so shrink works on --scheduler random seeds"
        );
        return ExitCode::from(2);
    }
    let Some(shrunk) = racelab_scenarios::shrink_in(race, variant, seed, profile) else {
        eprintln!(
            "error: {} {} seed {seed} holds its invariants: there is nothing to shrink",
            race.id,
            variant.as_str()
        );
        return ExitCode::from(1);
    };
    let command = racelab_scenarios::shrink_command_in(race, variant, seed, profile);
    let steps: Vec<String> = shrunk.steps.iter().map(ToString::to_string).collect();
    let (story, later) = render_story(&shrunk.outcome);
    if json {
        let row = json!({
            "race": race.id,
            "variant": variant.as_str(),
            "seed": seed,
            "original_faults": shrunk.original_faults,
            "faults": steps,
            "attempts": shrunk.attempts,
            "workload_draws": shrunk.workload_draws,
            "workload_draws_now": shrunk.workload_draws_now,
            "workload_draws_simplest": shrunk.workload_simplest,
            "trace_hash": format!("{:016x}", shrunk.outcome.run.trace_hash()),
            "explanation": shrunk.outcome.verdict.explanation(),
            "timeline": story,
            "later_steps": later,
            "replay": command,
        });
        out!("{row}");
        return ExitCode::SUCCESS;
    }
    out!(
        "{} {} seed {seed}: {} injected faults shrunk to {} ({} schedules tried)",
        race.id,
        variant.as_str(),
        shrunk.original_faults,
        steps.len(),
        shrunk.attempts
    );
    if steps.is_empty() {
        out!("  it fails with no fault at all: the seed's workload and latencies suffice");
    }
    if shrunk.workload_changed {
        out!(
            "  workload: {} random draws became {}, {} of them at their simplest value",
            shrunk.workload_draws,
            shrunk.workload_draws_now,
            shrunk.workload_simplest
        );
    }
    for step in &steps {
        out!("  {step}");
    }
    out!();
    for line in &story {
        out!("{line}");
    }
    if later > 0 {
        out!("     ({later} later steps, after the last violation, not shown)");
    }
    out!();
    out!("{}", shrunk.outcome.verdict.explanation());
    out!("replay: {command}");
    ExitCode::SUCCESS
}
