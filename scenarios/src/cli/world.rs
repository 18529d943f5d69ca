//! The world a `run` or `replay` happens in: one code path per command, with the world as a
//! parameter.

use racelab_adapters::{Config, WorldOptions};
use racelab_scenarios::net::{self, NetError};
use racelab_scenarios::real::{self, RealError};
use racelab_scenarios::{Outcome, Profile, Race, Script, Sweep, SweepPlan, Variant};

/// Why a world cannot run what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorldError {
    /// The net world's refusal or failure.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The real world's refusal or failure.
    #[error(transparent)]
    Real(#[from] RealError),
    /// The real world judges Correct only: with no faults, a Buggy variant's expected
    /// failure is not expected there.
    #[error(
        "the real world injects no faults, so a sweep of {variant} there could only check \
         that it holds: use --variant correct, the variant every race promises to hold (any \
         variant's timeline runs with `racelab replay RACE --variant V --script NAME --world \
         real`)"
    )]
    RealVariant {
        /// The variant asked for.
        variant: String,
    },
}

/// Where a race runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum World {
    /// The discrete-event world: random seeds and the races' scripted timelines.
    Explore,
    /// The production driver under turmoil (`racelab_scenarios::net`): random seeds of the
    /// races `net::net_races` lists only.
    Net,
    /// The production driver on the real Redis and PostgreSQL of `RACELAB_REDIS_URL` and
    /// `RACELAB_PG_URL` (`racelab_scenarios::real`): a seed's workload with no faults, or a
    /// timeline without scripted steps (`replay --script`); Correct only in `run`.
    Real,
}

impl World {
    /// `Ok` if `race` runs in this world; otherwise why not.
    pub(crate) fn check(self, race: &Race) -> Result<(), WorldError> {
        match self {
            World::Net if !net::supports(race) => Err(NetError::Unsupported {
                race: race.id.to_string(),
                supported: net::net_races().join(", "),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// `Ok` if a sweep of `variant` under `profile` can be judged in this world; otherwise
    /// why not.
    pub(crate) fn check_sweep(self, variant: Variant, profile: Profile) -> Result<(), WorldError> {
        match self {
            World::Real if profile != Profile::Race => Err(RealError::NoProfile.into()),
            World::Real if variant != Variant::Correct => Err(WorldError::RealVariant {
                variant: variant.as_str().to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Runs the timeline `script` of `race` in the real world (the other worlds run scripts
    /// through the catalog's `run_script`).
    pub(crate) fn run_real_script(
        race: &Race,
        variant: Variant,
        script: &str,
    ) -> Result<Outcome, WorldError> {
        Ok(real::run_script_real(
            race,
            variant,
            script,
            &WorldOptions::new(&Config::from_env(), 1),
        )?)
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
    ) -> Result<Outcome, WorldError> {
        match self {
            World::Explore => Ok(racelab_scenarios::run_seed_in(race, variant, seed, profile)),
            World::Net => Ok(net::run_seed_net_in(race, variant, seed, profile)?),
            World::Real => Ok(real::run_seed_real(
                race,
                variant,
                seed,
                profile,
                &WorldOptions::new(&Config::from_env(), seed),
            )?),
        }
    }

    /// Runs the seeds of `plan`, calling `progress(done)` as seeds finish.
    pub(crate) fn sweep(
        self,
        race: &Race,
        variant: Variant,
        plan: SweepPlan,
        progress: impl FnMut(u64),
    ) -> Result<Sweep, WorldError> {
        match self {
            World::Explore => Ok(racelab_scenarios::sweep_plan(race, variant, plan, progress)),
            World::Net => Ok(net::sweep_plan_net(race, variant, plan, progress)?),
            World::Real => {
                let opts = WorldOptions::new(&Config::from_env(), 0);
                let run = |seed| {
                    real::run_seed_real(race, variant, seed, plan.profile, &opts)
                        .map_err(WorldError::from)
                };
                racelab_scenarios::sweep_seeds(race, plan, run, progress)
            }
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
            // The same workload again; the servers' timing is not replayed.
            World::Real => format!(
                "{} --world real",
                racelab_scenarios::replay_command_in(race, variant, seed, profile)
            ),
        }
    }

    /// The heading of a race and variant in `run`'s text output.
    pub(crate) fn heading(self, race: &Race, variant: Variant) -> String {
        match self {
            World::Explore => format!("{} {}:", race.id, variant.as_str()),
            World::Net => format!("{} {} (net world):", race.id, variant.as_str()),
            World::Real => format!(
                "{} {} (real servers, no faults):",
                race.id,
                variant.as_str()
            ),
        }
    }

    /// The title of `run`'s closing matrix.
    pub(crate) fn matrix_title(self) -> &'static str {
        match self {
            World::Explore => "race matrix (random sweep; failures / seeds, expected):",
            World::Net => "race matrix (net world, random sweep; failures / seeds, expected):",
            World::Real => {
                "race matrix (real servers, seeds' workloads without faults; failures / seeds, \
                 expected):"
            }
        }
    }

    /// What `replay` calls a seed in its first line.
    pub(crate) fn seed_label(self, seed: u64) -> String {
        match self {
            World::Explore => format!("seed {seed}"),
            World::Net => format!("seed {seed}, net world"),
            World::Real => format!("seed {seed}'s workload, real servers"),
        }
    }

    /// The template of `run`'s progress bar.
    pub(crate) fn progress_template(self) -> &'static str {
        match self {
            World::Explore => "{msg:<18} [{bar:40}] {pos}/{len} seeds (eta {eta})",
            World::Net | World::Real => "{msg:<22} [{bar:40}] {pos}/{len} seeds (eta {eta})",
        }
    }

    /// The progress bar's message while a race and variant run.
    pub(crate) fn progress_message(self, race: &Race, variant: Variant) -> String {
        match self {
            World::Explore => format!("{} {}", race.id, variant.as_str()),
            World::Net => format!("{} {} (net)", race.id, variant.as_str()),
            World::Real => format!("{} {} (real)", race.id, variant.as_str()),
        }
    }
}
