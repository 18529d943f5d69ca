//! `racelab`: reproduce, judge and replay the consistency races of the catalog.
//!
//! ```text
//! racelab list [--json]
//! racelab run RACE... | --all  [--variant V] [--seeds N] [--start-seed S] [--jobs J]
//!     [--shard K/N] [--time 10m] [--json] [--world explore|net|real]
//! racelab merge FILE... [--json]
//! racelab replay RACE --variant V (--seed S | --script NAME) [--json]
//!     [--world explore|net|real]
//! racelab report [--out DIR] [--seeds N]
//! racelab bench [--seeds N] [--repeats R] [--json]
//! racelab route-bench [--json] [--out DIR] [--seed N]
//! ```
//!
//! This file parses the arguments and dispatches; each command lives in its module of `cli`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use racelab_scenarios::Variant;

use cli::World;

mod cli;

/// The explore world allocates on every store operation (keys, replies, history records);
/// mimalloc serves those small, short-lived blocks faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reproduce, judge and replay the consistency races of Redis + SQL + queue services.
#[derive(Parser, Debug)]
#[command(name = "racelab", version, about)]
struct Cli {
    /// The command to run.
    #[command(subcommand)]
    command: Command,
}

/// The commands, each carried out by its module in `cli`.
#[derive(Subcommand, Debug)]
enum Command {
    /// List the races with their titles and the expected verdict per variant.
    List {
        /// One JSON object per race.
        #[arg(long)]
        json: bool,
    },
    /// Run the scripted timelines and a seeded random sweep per race and variant.
    Run {
        /// Race ids (R-002-01 ...).
        #[arg(
            value_name = "RACE",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        races: Vec<String>,
        /// Every race of the catalog.
        #[arg(long)]
        all: bool,
        /// Which variant(s).
        #[arg(long, value_enum, default_value_t = VariantArg::All)]
        variant: VariantArg,
        /// Seeds per race and variant [default: 1000, or unbounded with --time].
        #[arg(long, value_parser = parse_seed_count)]
        seeds: Option<u64>,
        /// The first seed.
        #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
        start_seed: u64,
        /// Threads per sweep [default: every core]; the results are those of one thread.
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// Run only the K-th of N disjoint consecutive parts of the seed range (a CI matrix
        /// job); `racelab merge` combines the parts' --json output.
        #[arg(long, value_name = "K/N", default_value = "1/1", value_parser = parse_shard)]
        shard: racelab_scenarios::Shard,
        /// Sweep until this wall-clock budget is spent (`90s`, `10m`, `2h`), shared among the
        /// races and variants, and report the seeds run.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        time: Option<std::time::Duration>,
        /// The fault profile: `race` (the race's own, the default) or `swarm` (one generic
        /// profile; each seed draws which fault kinds are on and at what rates).
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// The scheduler: `random` (a seeded random walk, the default) or `pct` (random
        /// process priorities with `--depth` - 1 change points, the swarm's faults).
        #[arg(long, value_enum, default_value_t = SchedulerArg::Random)]
        scheduler: SchedulerArg,
        /// PCT's bug depth [default: 3].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=racelab_scenarios::PCT_DEPTH_MAX as i64))]
        depth: Option<u32>,
        /// One JSON object per line per (race, variant).
        #[arg(long)]
        json: bool,
        /// Where to run: `explore` (the discrete-event world), `net` (the production driver
        /// under turmoil; R-002-01 .. R-002-04, document 000's billing, quota, breaker and
        /// revocation races and document 004's scheduler, random seeds only) or `real` (the
        /// production driver on the real Redis and PostgreSQL of RACELAB_REDIS_URL and
        /// RACELAB_PG_URL: each seed's workload without faults, Correct only).
        #[arg(long, value_enum, default_value_t = WorldArg::Explore)]
        world: WorldArg,
    },
    /// Combine the --json output of `run --shard K/N` jobs into one race matrix.
    Merge {
        /// Files holding `run --json` lines (`-` reads standard input).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<String>,
        /// One JSON object per line per (race, variant), as `run --json` prints.
        #[arg(long)]
        json: bool,
    },
    /// Re-run one seed (or one scripted timeline) and print its timeline and verdict.
    Replay {
        /// The race id.
        race: String,
        /// The variant.
        #[arg(long, value_enum)]
        variant: OneVariant,
        /// The seed to replay.
        #[arg(
            long,
            required_unless_present = "script",
            conflicts_with = "script",
            value_parser = parse_seed,
            allow_negative_numbers = true
        )]
        seed: Option<u64>,
        /// The scripted timeline to replay instead of a seed.
        #[arg(long)]
        script: Option<String>,
        /// The fault profile: `race` (the race's own, the default) or `swarm` (one generic
        /// profile; each seed draws which fault kinds are on and at what rates).
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// The scheduler: `random` (a seeded random walk, the default) or `pct` (random
        /// process priorities with `--depth` - 1 change points, the swarm's faults).
        #[arg(long, value_enum, default_value_t = SchedulerArg::Random)]
        scheduler: SchedulerArg,
        /// PCT's bug depth [default: 3].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=racelab_scenarios::PCT_DEPTH_MAX as i64))]
        depth: Option<u32>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Which world the seed belongs to (`explore`, `net`, or `real`: real servers, where a
        /// timeline without scripted steps also runs).
        #[arg(long, value_enum, default_value_t = WorldArg::Explore)]
        world: WorldArg,
        /// Also check the run's Redis keys for linearizability (which keys a failover or a
        /// restart made lose acknowledged writes).
        #[arg(long)]
        linearizability: bool,
    },
    /// Write the race matrix (Markdown, JSON) and a timeline (Markdown, HTML/SVG) per failing
    /// trace.
    Report {
        /// Where to write.
        #[arg(long, default_value = "reports/out")]
        out: std::path::PathBuf,
        /// Seeds per race and variant (from seed 0).
        #[arg(long, default_value_t = 1000, value_parser = parse_seed_count)]
        seeds: u64,
    },
    /// Measure throughput (seeds and store operations per second, simulated:wall time, the
    /// core machines' cost per operation) and the regression gate's deterministic counts.
    /// Wall-clock figures are reported, never gated.
    Bench {
        /// Seeds per race and variant in the reference workload.
        #[arg(long, default_value_t = 200, value_parser = parse_seed_count)]
        seeds: u64,
        /// Repetitions per measurement; the fastest is kept.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeats: u32,
        /// One JSON document (for CI dashboards).
        #[arg(long)]
        json: bool,
        /// Only the detection table: per failing variant, seeds to the first violation from
        /// seed 0 and the median over 20 start seeds, under each fault profile (deterministic
        /// counts).
        #[arg(long)]
        detection: bool,
    },
    /// Compare the routing policies (document 000's uniform pick and every policy of
    /// `core::route` behind the hard health gate) on seeded upstream scenarios: regret,
    /// success rate under a 1 s timeout, p50/p99 latency and requests sent to down endpoints
    /// (deterministic).
    RouteBench {
        /// One JSON document.
        #[arg(long)]
        json: bool,
        /// Also write `route-bench.html` here: per scenario, cumulative regret and success
        /// rate over time, one SVG line per policy.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Another seed for the upstream answers and the routers' draws than the bench's own
        /// (the table the regression gate holds), to check a policy is not tuned to it.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Run a protocol with many workers against real Redis and PostgreSQL while faults are
    /// injected (each kind at least `--faults-per-kind` times, planned on the run's progress:
    /// Redis restarts, killed workers, workers killed right after a claim, and a fault
    /// proxy's latency spikes, stalls and cuts), and judge the recorded history and the
    /// committed rows with the same oracles as the simulations.
    CheckReal {
        /// The protocol: `workorder` (document 002's scans through a queue), `gateway`
        /// (document 000's idempotent billing, streamed settlement with holds and quota
        /// reservations; the LLM provider is in-process, Redis and PostgreSQL are real) or
        /// `scheduler` (document 004's schedulers and worker nodes, outcomes durable in
        /// PostgreSQL).
        #[arg(long, value_enum, default_value_t = Protocol::Workorder)]
        protocol: Protocol,
        /// A shared Redis to use (no restarts are injected then); by default the run starts
        /// its own `redis-server` on a free loopback port and restarts it.
        #[arg(long)]
        redis: Option<String>,
        /// The PostgreSQL URL (default: `RACELAB_PG_URL` or the loopback default).
        #[arg(long)]
        postgres: Option<String>,
        /// Workers, each with its own connections.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=512))]
        workers: u16,
        /// Requests: distinct scans (workorder) or gateway requests, duplicates included.
        #[arg(long, default_value_t = 10_000, value_parser = parse_seed_count)]
        requests: u64,
        /// Scheduler only: jobs to run (default: `--requests`).
        #[arg(long, value_parser = parse_seed_count)]
        jobs: Option<u64>,
        /// Scheduler only: worker nodes (default: `--workers`).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        nodes: Option<u16>,
        /// Scheduler only: scheduler instances.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
        schedulers: u16,
        /// The protocol's variant: `correct` (shipped) or `buggy` (the document's); the
        /// scheduler also has `docfix` (the revision's TTLs).
        #[arg(long, value_enum, default_value_t = OneVariant::Correct)]
        variant: OneVariant,
        /// How many times each fault kind is injected (0: none).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
        faults_per_kind: u32,
        /// Gateway only: measure, back to back without faults, the ceiling (trivial Lua by
        /// SHA, trivial one-statement transaction), Buggy and Correct, and print throughput,
        /// p50, p99 and the ratios.
        #[arg(long)]
        bench: bool,
        /// The seed of the run's plan and faults.
        #[arg(long, default_value_t = 1, value_parser = parse_seed, allow_negative_numbers = true)]
        seed: u64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Reduce a failing seed to the fewest injected faults that still break the invariant.
    Shrink {
        /// The race id.
        race: String,
        /// The variant.
        #[arg(long, value_enum)]
        variant: OneVariant,
        /// The failing seed.
        #[arg(long, value_parser = parse_seed, allow_negative_numbers = true)]
        seed: u64,
        /// The fault profile: `race` (the race's own, the default) or `swarm` (one generic
        /// profile; each seed draws which fault kinds are on and at what rates).
        #[arg(long, value_enum)]
        profile: Option<ProfileArg>,
        /// The scheduler: `random` (a seeded random walk, the default) or `pct` (random
        /// process priorities with `--depth` - 1 change points, the swarm's faults).
        #[arg(long, value_enum, default_value_t = SchedulerArg::Random)]
        scheduler: SchedulerArg,
        /// PCT's bug depth [default: 3].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=racelab_scenarios::PCT_DEPTH_MAX as i64))]
        depth: Option<u32>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `--variant` of `run`: one variant or all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum VariantArg {
    Buggy,
    Docfix,
    Correct,
    All,
}

/// `--profile`: the fault profile a random run draws its faults from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProfileArg {
    Race,
    Swarm,
}

impl From<ProfileArg> for racelab_scenarios::Profile {
    fn from(p: ProfileArg) -> racelab_scenarios::Profile {
        match p {
            ProfileArg::Race => racelab_scenarios::Profile::Race,
            ProfileArg::Swarm => racelab_scenarios::Profile::Swarm,
        }
    }
}

/// `--scheduler`: how a random run orders its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SchedulerArg {
    Random,
    Pct,
}

/// The exploration `--profile`, `--scheduler` and `--depth` select together, or why they do
/// not fit.
fn exploration(
    profile: Option<ProfileArg>,
    scheduler: SchedulerArg,
    depth: Option<u32>,
) -> Result<racelab_scenarios::Profile, String> {
    match (scheduler, profile, depth) {
        (SchedulerArg::Random, _, Some(_)) => {
            Err("error: --depth is PCT's: add --scheduler pct".to_string())
        }
        (SchedulerArg::Random, p, None) => Ok(p.unwrap_or(ProfileArg::Race).into()),
        (SchedulerArg::Pct, Some(ProfileArg::Race), _) => Err(
            "error: --scheduler pct draws its faults from the swarm profile, not a race's own; \
             drop --profile race"
                .to_string(),
        ),
        (SchedulerArg::Pct, _, depth) => Ok(racelab_scenarios::Profile::Pct(depth.unwrap_or(3))),
    }
}

/// `--world`: the world a run happens in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorldArg {
    Explore,
    Net,
    Real,
}

impl From<WorldArg> for World {
    fn from(w: WorldArg) -> World {
        match w {
            WorldArg::Explore => World::Explore,
            WorldArg::Net => World::Net,
            WorldArg::Real => World::Real,
        }
    }
}

/// `check-real --protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// Document 002's work orders.
    Workorder,
    /// Document 000's gateway.
    Gateway,
    /// Document 004's scheduler.
    Scheduler,
}

/// `--variant` of the commands that take exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OneVariant {
    Buggy,
    Docfix,
    Correct,
}

impl From<OneVariant> for Variant {
    fn from(v: OneVariant) -> Variant {
        match v {
            OneVariant::Buggy => Variant::Buggy,
            OneVariant::Docfix => Variant::DocFix,
            OneVariant::Correct => Variant::Correct,
        }
    }
}

impl VariantArg {
    /// The variants it names.
    fn variants(self) -> Vec<Variant> {
        match self {
            VariantArg::Buggy => vec![Variant::Buggy],
            VariantArg::Docfix => vec![Variant::DocFix],
            VariantArg::Correct => vec![Variant::Correct],
            VariantArg::All => Variant::ALL.to_vec(),
        }
    }
}

/// Parses a seed, with an error that says what a seed is.
fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "a seed is a whole number from 0 to {} (as printed by a failing run)",
            u64::MAX
        )
    })
}

/// Parses a thread count (at least one).
fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err("the number of jobs is a whole number of at least 1".to_string()),
        Ok(n) => Ok(n),
    }
}

/// Parses `--shard K/N`.
fn parse_shard(text: &str) -> Result<racelab_scenarios::Shard, String> {
    text.parse()
        .map_err(|e: racelab_scenarios::BadShard| e.to_string())
}

/// Parses a wall-clock budget: a whole number with a unit, `s`, `m` or `h` (`90s`, `10m`),
/// or several (`1h30m`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!(
            "a duration is a number with a unit s, m or h (`90s`, `10m`, `1h30m`), not {text:?}"
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Parses a number of seeds (at least one).
fn parse_seed_count(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("at least one seed is needed".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err("the number of seeds is a whole number of at least 1".to_string()),
    }
}

/// Folds clap's multi-line error into one line: the message and the lines that continue it,
/// without the usage block.
fn one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("Usage:") || line.starts_with("For more information")
        {
            if !parts.is_empty() {
                break;
            }
            continue;
        }
        parts.push(line);
    }
    if parts.is_empty() {
        "error: bad arguments".to_string()
    } else {
        parts.join(" ")
    }
}

/// Parses the arguments (one line on stderr and exit code 2 when they are wrong) and runs the
/// command.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: what is wrong. `--help` has the rest.
            eprintln!(
                "{} (see `racelab --help`)",
                one_line(&e.render().to_string())
            );
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::List { json } => cli::list::list(json),
        Command::Run {
            races,
            all,
            variant,
            seeds,
            start_seed,
            jobs,
            shard,
            time,
            profile,
            scheduler,
            depth,
            json,
            world,
        } => {
            let profile = match exploration(profile, scheduler, depth) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            cli::run::run(
                world.into(),
                &races,
                all,
                &variant.variants(),
                cli::run::Seeds {
                    count: seeds,
                    start: start_seed,
                    jobs: jobs.unwrap_or_else(racelab_scenarios::default_jobs),
                    shard,
                    time,
                    profile,
                },
                json,
            )
        }
        Command::RouteBench { json, out, seed } => {
            cli::route_bench::route_bench(json, out.as_deref(), seed)
        }
        Command::Merge { files, json } => cli::merge::merge(&files, json),
        Command::Replay {
            race,
            variant,
            seed,
            script,
            profile,
            scheduler,
            depth,
            json,
            world,
            linearizability,
        } => match exploration(profile, scheduler, depth) {
            Ok(profile) => cli::replay::replay(
                world.into(),
                &race,
                variant.into(),
                seed,
                script.as_deref(),
                profile,
                cli::replay::Printed {
                    json,
                    linearizability,
                },
            ),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Shrink {
            race,
            variant,
            seed,
            profile,
            scheduler,
            depth,
            json,
        } => match exploration(profile, scheduler, depth) {
            Ok(profile) => cli::shrink::shrink(&race, variant.into(), seed, profile, json),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Report { out, seeds } => cli::report::report(&out, seeds),
        Command::Bench {
            seeds,
            repeats,
            json,
            detection: true,
        } => {
            let _ = (seeds, repeats);
            cli::bench::detection(json)
        }
        Command::Bench {
            seeds,
            repeats,
            json,
            detection: false,
        } => cli::bench::bench(seeds, repeats, json),
        Command::CheckReal {
            protocol,
            redis,
            postgres,
            workers,
            requests,
            jobs,
            nodes,
            schedulers,
            variant,
            faults_per_kind,
            bench,
            seed,
            json,
        } => cli::check_real::check_real(cli::check_real::CheckRealArgs {
            protocol: match protocol {
                Protocol::Workorder => cli::check_real::Protocol::Workorder,
                Protocol::Gateway => cli::check_real::Protocol::Gateway,
                Protocol::Scheduler => cli::check_real::Protocol::Scheduler,
            },
            redis,
            postgres,
            workers,
            requests,
            jobs: jobs.unwrap_or(requests),
            nodes: nodes.unwrap_or(workers),
            schedulers,
            variant: variant.into(),
            faults_per_kind,
            bench,
            seed,
            json,
        }),
    }
}
