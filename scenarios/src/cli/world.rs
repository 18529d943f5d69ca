//! The world a `run` or `replay` happens in: one code path per command, with the world as a
//! parameter.

use racelab_scenarios::net::{self, NetError};
use racelab_scenarios::{Outcome, Profile, Race, Script, Sweep, SweepPlan, Variant};

/// Where a race runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum World {
    /// The discrete-event world: random seeds and the races' scripted timelines.
    Explore,
    /// The production driver under turmoil (`racelab_scenarios::net`): random seeds of the
    /// races `net::net_races` lists only.
    Net,
}

impl World {
    /// `Ok` if `race` runs in this world; otherwise why not.
    pub(crate) fn check(self, race: &Race) -> Result<(), NetError> {
        match self {
            World::Net if !net::supports(race) => Err(NetError::Unsupported {
                race: race.id.to_string(),
                supported: net::net_races().join(", "),
            }),
            _ => Ok(()),
        }
    }

    /// Whether this world runs scripted timelines (the net world runs seeds only).
    pub(crate) fn runs_scripts(self) -> bool {
        self == World::Explore
    }

    /// The scripted timelines of `race` that this world runs.
    pub(crate) fn scripts(self, race: &Race) -> Vec<Script> {
        if self.runs_scripts() {
            (race.scripts)()
        } else {
            Vec::new()
        }
    }

    /// Runs one seed, its faults drawn from `profile`.
    pub(crate) fn run_seed(
        self,
        race: &Race,
        variant: Variant,
        seed: u64,
        profile: Profile,
    ) -> Result<Outcome, NetError> {
        match self {
            World::Explore => Ok(racelab_scenarios::run_seed_in(race, variant, seed, profile)),
            World::Net => net::run_seed_net_in(race, variant, seed, profile),
        }
    }

    /// Runs the seeds of `plan`, calling `progress(done)` as seeds finish.
    pub(crate) fn sweep(
        self,
        race: &Race,
        variant: Variant,
        plan: SweepPlan,
        progress: impl FnMut(u64),
    ) -> Result<Sweep, NetError> {
        match self {
            World::Explore => Ok(racelab_scenarios::sweep_plan(race, variant, plan, progress)),
            World::Net => net::sweep_plan_net(race, variant, plan, progress),
        }
    }

    /// The command that replays one seed, run under `profile`, in this world.
    pub(crate) fn replay_command(
        self,
        race: &Race,
        variant: Variant,
        seed: u64,
        profile: Profile,
    ) -> String {
        match self {
            World::Explore => racelab_scenarios::replay_command_in(race, variant, seed, profile),
            World::Net => net::replay_command_net_in(race, variant, seed, profile),
        }
    }

    /// The heading of a race and variant in `run`'s text output.
    pub(crate) fn heading(self, race: &Race, variant: Variant) -> String {
        match self {
            World::Explore => format!("{} {}:", race.id, variant.as_str()),
            World::Net => format!("{} {} (net world):", race.id, variant.as_str()),
        }
    }

    /// The title of `run`'s closing matrix.
    pub(crate) fn matrix_title(self) -> &'static str {
        match self {
            World::Explore => "race matrix (random sweep; failures / seeds, expected):",
            World::Net => "race matrix (net world, random sweep; failures / seeds, expected):",
        }
    }

    /// What `replay` calls a seed in its first line.
    pub(crate) fn seed_label(self, seed: u64) -> String {
        match self {
            World::Explore => format!("seed {seed}"),
            World::Net => format!("seed {seed}, net world"),
        }
    }

    /// The template of `run`'s progress bar.
    pub(crate) fn progress_template(self) -> &'static str {
        match self {
            World::Explore => "{msg:<18} [{bar:40}] {pos}/{len} seeds (eta {eta})",
            World::Net => "{msg:<22} [{bar:40}] {pos}/{len} seeds (eta {eta})",
        }
    }

    /// The progress bar's message while a race and variant run.
    pub(crate) fn progress_message(self, race: &Race, variant: Variant) -> String {
        match self {
            World::Explore => format!("{} {}", race.id, variant.as_str()),
            World::Net => format!("{} {} (net)", race.id, variant.as_str()),
        }
    }
}
