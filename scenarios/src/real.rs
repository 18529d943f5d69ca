//! The real world (`--world real`): a catalog race's world on real Redis and PostgreSQL with
//! the shipped driver (`racelab_adapters::run_world`), judged by the race's own judge, as
//! the explore and net worlds' runs are.
//!
//! What it runs: a race's scripted timeline without scripted steps (the document's T1..Tn as
//! the workload itself: requests, changes and upstream windows at their times), or a random
//! seed's workload (the explore world's draws for that seed) with no faults, since the real
//! servers take none here. Time is real, so a timeline of seconds takes seconds, and a run
//! is not replayable: the servers' timing is part of it. Each run has a PostgreSQL schema and
//! a Redis key prefix of its own, dropped afterwards, so that runs sharing the servers never
//! meet.
//!
//! What it refuses, with an error that says why: a timeline with scripted steps (partitions,
//! failovers, pauses: the explore world carries them out), a process that sends a queue or
//! push operation (no real queue client is wired here, no balancer exists), and PCT.

use racelab_adapters::{AdapterError, WorldOptions, run_world};
use racelab_sim::explore::SimRng;

use crate::catalog::{Outcome, Race, Workload};
use crate::{Profile, Variant};

/// Why a race, timeline or seed cannot run in the real world.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The race has no such timeline.
    #[error("{race} has no timeline {script:?}; it has {known}")]
    NoScript {
        /// The race id.
        race: String,
        /// The timeline asked for.
        script: String,
        /// The race's timelines, comma-separated.
        known: String,
    },
    /// The timeline's scripted steps are faults the real servers do not take.
    #[error(
        "{race}'s timeline {script:?} has scripted steps (faults at chosen points), which only \
         the explore world carries out; the real world runs timelines without steps: {runnable}"
    )]
    ScriptedSteps {
        /// The race id.
        race: String,
        /// The timeline.
        script: String,
        /// The race's timelines the real world runs, comma-separated (or "none").
        runnable: String,
    },
    /// Only the race's own workload, without faults, runs on the real servers.
    #[error(
        "the real world injects no faults: it runs the race's seeds with faults off, so \
         --profile swarm and --scheduler pct run in the explore world only"
    )]
    NoProfile,
    /// The servers, the set-up, or an operation the real world cannot serve.
    #[error("{race} {variant} in the real world: {source}")]
    Adapter {
        /// The race id.
        race: String,
        /// The variant.
        variant: String,
        /// What went wrong.
        source: AdapterError,
    },
}

/// The timelines of `race` the real world runs: those without scripted steps.
pub fn runnable_scripts(race: &Race) -> Vec<&'static str> {
    (race.scripts)()
        .into_iter()
        .filter(|s| s.steps.is_empty())
        .map(|s| s.name)
        .collect()
}

/// Runs `race`'s timeline `script` for `variant` on the real servers of `opts`.
pub fn run_script_real(
    race: &Race,
    variant: Variant,
    script: &str,
    opts: &WorldOptions,
) -> Result<Outcome, RealError> {
    let scripts = (race.scripts)();
    let Some(found) = scripts.iter().find(|s| s.name == script) else {
        return Err(RealError::NoScript {
            race: race.id.to_string(),
            script: script.to_string(),
            known: scripts
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if !found.steps.is_empty() {
        let runnable = runnable_scripts(race);
        return Err(RealError::ScriptedSteps {
            race: race.id.to_string(),
            script: script.to_string(),
            runnable: if runnable.is_empty() {
                "none".to_string()
            } else {
                runnable.join(", ")
            },
        });
    }
    let (spec, capture) = (race.build)(variant, Workload::Scripted(found.name));
    let run = block_on(run_world(spec, opts)).map_err(|source| adapter(race, variant, source))?;
    Ok(crate::judge(race, run, &capture))
}

/// Runs `race`'s random workload of `seed` (the explore world's draws) for `variant` on the
/// real servers of `opts`, with no faults (`profile` must be the race's own).
pub fn run_seed_real(
    race: &Race,
    variant: Variant,
    seed: u64,
    profile: Profile,
    opts: &WorldOptions,
) -> Result<Outcome, RealError> {
    if profile != Profile::Race {
        return Err(RealError::NoProfile);
    }
    let mut rng = SimRng::new(crate::workload_seed(seed));
    let (spec, capture) = (race.build)(variant, Workload::Random(&mut rng));
    let opts = WorldOptions {
        seed,
        ..opts.clone()
    };
    let run = block_on(run_world(spec, &opts)).map_err(|source| adapter(race, variant, source))?;
    Ok(crate::judge(race, run, &capture))
}

fn adapter(race: &Race, variant: Variant, source: AdapterError) -> RealError {
    RealError::Adapter {
        race: race.id.to_string(),
        variant: variant.as_str().to_string(),
        source,
    }
}

/// Runs a real-world future on a runtime of its own (the process tasks share its thread).
fn block_on<T>(
    future: impl std::future::Future<Output = Result<T, AdapterError>>,
) -> Result<T, AdapterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdapterError::Process {
            what: "starting the real world's runtime".into(),
            message: e.to_string(),
        })?
        .block_on(future)
}
