//! `racelab`: reproduce, judge and replay the consistency races of the catalog.
//!
//! ```text
//! racelab list [--json]
//! racelab run RACE... | --all  [--variant V] [--seeds N] [--start-seed S] [--json] [--world explore|net]
//! racelab replay RACE --variant V (--seed S | --script NAME) [--json] [--world explore|net]
//! racelab report [--out DIR] [--seeds N]
//! racelab bench [--seeds N] [--repeats R] [--json]
//! ```

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use racelab_scenarios::{
    Race, Variant, catalog, find, render_timeline, replay_command, replay_script_command,
    run_script, run_seed, sweep,
};
use serde_json::json;

/// `println!` that ends the program quietly when stdout is closed (`racelab run ... | head`)
/// instead of panicking on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Reproduce, judge and replay the consistency races of Redis + SQL + queue services.
#[derive(Parser, Debug)]
#[command(name = "racelab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
        /// Seeds per race and variant.
        #[arg(long, default_value_t = 1000, value_parser = parse_seed_count)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
        start_seed: u64,
        /// One JSON object per line per (race, variant).
        #[arg(long)]
        json: bool,
        /// Where to run: `explore` (the discrete-event world) or `net` (the production driver
        /// under turmoil; R-002-01 .. R-002-04, random seeds only).
        #[arg(long, value_enum, default_value_t = WorldArg::Explore)]
        world: WorldArg,
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
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Which world the seed belongs to (`explore` or `net`).
        #[arg(long, value_enum, default_value_t = WorldArg::Explore)]
        world: WorldArg,
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
    },
    /// Run document 002's protocol with many workers against real Redis and PostgreSQL while
    /// faults are injected (Redis restarts, killed workers, a fault proxy), and judge the
    /// recorded history with the same oracles.
    CheckReal {
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
        /// Distinct scans to process.
        #[arg(long, default_value_t = 10_000, value_parser = parse_seed_count)]
        requests: u64,
        /// The protocol: `correct` (shipped) or `buggy`.
        #[arg(long, value_enum, default_value_t = OneVariant::Correct)]
        variant: OneVariant,
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
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum VariantArg {
    Buggy,
    Docfix,
    Correct,
    All,
}

/// The world a run happens in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorldArg {
    Explore,
    Net,
}

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
    fn variants(self) -> Vec<Variant> {
        match self {
            VariantArg::Buggy => vec![Variant::Buggy],
            VariantArg::Docfix => vec![Variant::DocFix],
            VariantArg::Correct => vec![Variant::Correct],
            VariantArg::All => Variant::ALL.to_vec(),
        }
    }
}

fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "a seed is a whole number from 0 to {} (as printed by a failing run)",
            u64::MAX
        )
    })
}

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
        Command::List { json } => list(json),
        Command::CheckReal {
            redis,
            postgres,
            workers,
            requests,
            variant,
            seed,
            json,
        } => check_real(
            redis,
            postgres,
            workers,
            requests,
            variant.into(),
            seed,
            json,
        ),
        Command::Report { out, seeds } => report(&out, seeds),
        Command::Bench {
            seeds,
            repeats,
            json,
        } => bench(seeds, repeats, json),
        Command::Shrink {
            race,
            variant,
            seed,
            json,
        } => shrink(&race, variant.into(), seed, json),
        Command::Run {
            races,
            all,
            variant,
            seeds,
            start_seed,
            json,
            world: WorldArg::Net,
        } => run_net(&races, all, variant, seeds, start_seed, json),
        Command::Run {
            races,
            all,
            variant,
            seeds,
            start_seed,
            json,
            world: WorldArg::Explore,
        } => run(&races, all, variant, seeds, start_seed, json),
        Command::Replay {
            race,
            variant,
            seed,
            script,
            json,
            world: WorldArg::Net,
        } => replay_net(&race, variant.into(), seed, script.as_deref(), json),
        Command::Replay {
            race,
            variant,
            seed,
            script,
            json,
            world: WorldArg::Explore,
        } => replay(&race, variant.into(), seed, script.as_deref(), json),
    }
}

fn list(json: bool) -> ExitCode {
    for race in catalog() {
        let scripts: Vec<_> = (race.scripts)()
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "summary": s.summary,
                    "expected": Variant::ALL.iter().map(|v| (v.as_str().to_string(), json!(s.expect.get(*v).as_str()))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        if json {
            let expected: serde_json::Map<_, _> = Variant::ALL
                .iter()
                .map(|v| (v.as_str().to_string(), json!(race.sweep.get(*v).as_str())))
                .collect();
            let row = json!({
                "race": race.id,
                "title": race.title,
                "document": race.document,
                "invariant": race.invariant,
                "docfix_verdict": race.docfix_verdict,
                "expected": expected,
                "scripts": scripts,
            });
            out!("{row}");
        } else {
            let e = |v| race.sweep.get(v).as_str();
            out!(
                "{}  {}\n          doc fix: {}; expected: buggy {}, docfix {}, correct {}",
                race.id,
                race.title,
                race.docfix_verdict,
                e(Variant::Buggy),
                e(Variant::DocFix),
                e(Variant::Correct)
            );
            for s in (race.scripts)() {
                out!("          timeline {:<24} {}", s.name, s.summary);
            }
        }
    }
    let tests = racelab_scenarios::acceptance::doc_tests();
    if !json {
        out!(
            "\nthe documents' own tests, run against each variant of the race they were written for:"
        );
    }
    for t in &tests {
        let r = t.result();
        let word = |p: bool| if p { "passes" } else { "fails" };
        if json {
            let row = json!({
                "doc_test": t.id,
                "name": t.name,
                "race": t.race,
                "setting": t.setting,
                "passes": Variant::ALL.iter().zip(r.passes).map(|(v, p)| (v.as_str().to_string(), json!(p))).collect::<serde_json::Map<_, _>>(),
                "detects_race": r.detects(),
            });
            out!("{row}");
        } else {
            out!(
                "{:<9} {:<45} {}: buggy {}, docfix {}, correct {} -> {}",
                t.id,
                t.name,
                t.race,
                word(r.passes[0]),
                word(r.passes[1]),
                word(r.passes[2]),
                if r.detects() {
                    "detects the race".to_string()
                } else {
                    format!("passes on buggy code: cannot detect {}", t.race)
                }
            );
        }
    }
    ExitCode::SUCCESS
}

/// Finds a race, or reports the unknown name (with suggestions) and the exit code to use.
fn lookup<'a>(races: &'a [Race], name: &str) -> Result<&'a Race, ExitCode> {
    find(races, name).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

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

fn show_progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

fn run(
    names: &[String],
    all: bool,
    variant: VariantArg,
    seeds: u64,
    start: u64,
    json: bool,
) -> ExitCode {
    let races = catalog();
    let selected: Vec<&Race> = if all {
        races.iter().collect()
    } else {
        match resolve(&races, names) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    };
    let variants = variant.variants();
    let total = seeds.saturating_mul((selected.len() * variants.len()) as u64);
    let bar = show_progress(json).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:<18} [{bar:40}] {pos}/{len} seeds (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut all_match = true;
    let mut matrix = Vec::new();
    for race in &selected {
        for &v in &variants {
            let scripts: Vec<_> = (race.scripts)()
                .into_iter()
                .map(|s| {
                    let outcome = run_script(race, &s, v);
                    let expected = s.expect.get(v);
                    let matches = expected.matches(outcome.observed());
                    (s, expected, outcome, matches)
                })
                .collect();
            if let Some(bar) = &bar {
                bar.set_message(format!("{} {}", race.id, v.as_str()));
            }
            let done_before = bar.as_ref().map_or(0, |b| b.position());
            let result = sweep(race, v, start, seeds, |n| {
                if let Some(bar) = &bar {
                    bar.set_position(done_before + n);
                }
            });
            let expected = race.sweep.get(v);
            let sweep_matches = expected.matches(result.observed());
            let scripts_match = scripts.iter().all(|(.., m)| *m);
            let matches = sweep_matches && scripts_match;
            all_match &= matches;
            if json {
                let row = json!({
                    "race": race.id,
                    "variant": v.as_str(),
                    "seeds_run": result.seeds_run,
                    "start_seed": start,
                    "failures": result.failures,
                    "first_failing_seed": result.first_failing_seed,
                    "expected": expected.as_str(),
                    "verdict_matches": matches,
                    "store_ops": result.store_ops,
                    "stuck": result.stuck,
                    "first_stuck_seed": result.first_stuck_seed,
                    "sometimes": result.sometimes,
                    "replay": result.first_failing_seed.map(|s| replay_command(race, v, s)),
                    "scripts": scripts.iter().map(|(s, e, o, m)| json!({
                        "name": s.name,
                        "expected": e.as_str(),
                        "violated": o.violated(),
                        "observed": o.observed().as_str(),
                        "broken": o.verdict.broken(),
                        "matches": m,
                    })).collect::<Vec<_>>(),
                });
                out!("{row}");
            } else {
                if let Some(bar) = &bar {
                    bar.suspend(|| {});
                }
                matrix.push((race.id, v, result.clone(), expected, matches));
                let mut lines = Vec::new();
                for (s, e, o, m) in &scripts {
                    let observed = o.observed().as_str();
                    let mark = if *m { "ok" } else { "MISMATCH" };
                    let mut line = format!(
                        "  timeline {:<24} expected {:<5} observed {:<5} {mark}",
                        s.name,
                        e.as_str(),
                        observed
                    );
                    if o.violated() || !m {
                        line.push_str(&format!(
                            "\n    replay: {}",
                            replay_script_command(race, s, v)
                        ));
                    }
                    lines.push(line);
                }
                let print = |bar: &Option<indicatif::ProgressBar>, text: String| match bar {
                    Some(b) => b.suspend(|| out!("{text}")),
                    None => out!("{text}"),
                };
                print(&bar, format!("{} {}:", race.id, v.as_str()));
                for l in lines {
                    print(&bar, l);
                }
                let mut line = format!(
                    "  random   {} seeds from {start}: {} failing, expected {} -> {}",
                    result.seeds_run,
                    result.failures,
                    expected.as_str(),
                    if sweep_matches { "ok" } else { "MISMATCH" }
                );
                if let Some(seed) = result.first_failing_seed {
                    line.push_str(&format!(
                        "\n    first failing seed {seed}; replay: {}",
                        replay_command(race, v, seed)
                    ));
                }
                print(&bar, line);
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    finish_matrix(
        "race matrix (random sweep; failures / seeds, expected):",
        &matrix,
        all_match,
        json,
    )
}

fn replay(
    name: &str,
    variant: Variant,
    seed: Option<u64>,
    script: Option<&str>,
    json: bool,
) -> ExitCode {
    let races = catalog();
    let race = match lookup(&races, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (outcome, command, label) = match (seed, script) {
        (Some(seed), _) => (
            run_seed(race, variant, seed),
            replay_command(race, variant, seed),
            format!("seed {seed}"),
        ),
        (None, Some(name)) => {
            let scripts = (race.scripts)();
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
        (None, None) => {
            eprintln!("error: pass --seed S or --script NAME");
            return ExitCode::from(2);
        }
    };
    print_replay(
        race, variant, seed, script, &label, &outcome, &command, json,
    )
}

fn shrink(name: &str, variant: Variant, seed: u64, json: bool) -> ExitCode {
    let races = catalog();
    let race = match lookup(&races, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(shrunk) = racelab_scenarios::shrink(race, variant, seed) else {
        eprintln!(
            "error: {} {} seed {seed} holds its invariants: there is nothing to shrink",
            race.id,
            variant.as_str()
        );
        return ExitCode::from(1);
    };
    let command = racelab_scenarios::shrink_command(race, variant, seed);
    let steps: Vec<String> = shrunk.steps.iter().map(ToString::to_string).collect();
    if json {
        let row = json!({
            "race": race.id,
            "variant": variant.as_str(),
            "seed": seed,
            "original_faults": shrunk.original_faults,
            "faults": steps,
            "attempts": shrunk.attempts,
            "trace_hash": format!("{:016x}", shrunk.outcome.run.trace_hash),
            "explanation": shrunk.outcome.verdict.explanation(),
            "timeline": render_timeline(&shrunk.outcome),
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
    for step in &steps {
        out!("  {step}");
    }
    out!();
    for line in render_timeline(&shrunk.outcome) {
        out!("{line}");
    }
    out!();
    out!("{}", shrunk.outcome.verdict.explanation());
    out!("replay: {command}");
    ExitCode::SUCCESS
}

fn report(out: &std::path::Path, seeds: u64) -> ExitCode {
    let races = catalog();
    let bar = show_progress(false).then(|| {
        let bar = indicatif::ProgressBar::new((races.len() * Variant::ALL.len()) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("report [{bar:40}] {pos}/{len} race variants")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let written = racelab_scenarios::report::write_report(&races, out, seeds, |done, _| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match written {
        Ok(w) => {
            let unexpected = w.rows.iter().filter(|r| !r.as_expected()).count();
            let pages = w
                .files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "html"))
                .count()
                .saturating_sub(1);
            out!(
                "wrote {} files to {}: the matrix ({} rows, {} unexpected) and {} failing traces",
                w.files.len(),
                out.display(),
                w.rows.len(),
                unexpected,
                pages
            );
            out!("open {}", out.join("index.html").display());
            for row in w.rows.iter().filter(|r| !r.as_expected()) {
                out!(
                    "unexpected: {} {} (expected {}, observed {}){}",
                    row.race,
                    row.variant,
                    row.expected,
                    row.observed,
                    row.replay
                        .as_deref()
                        .map_or_else(String::new, |c| format!("; replay: {c}"))
                );
            }
            if unexpected == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: cannot write the report to {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn bench(seeds: u64, repeats: u32, json: bool) -> ExitCode {
    let races = catalog();
    let bar = show_progress(false).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let report = racelab_scenarios::bench::run(&races, seeds, repeats, |what| {
        if let Some(b) = &bar {
            b.set_message(format!("measuring {what}"));
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => out!("{text}"),
            Err(e) => {
                eprintln!("error: cannot encode the figures: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    out!(
        "reference workload: seeds 0..{} of each race's buggy and correct variants, fastest of \
         {} runs; wall-clock figures are reported, never gated",
        report.seeds,
        report.repeats
    );
    out!();
    out!(
        "{:<8} {:<18} {:>9} {:>12} {:>16}",
        "family",
        "races",
        "seeds/s",
        "store ops/s",
        "simulated:wall"
    );
    for f in &report.families {
        out!(
            "{:<8} {:<18} {:>9} {:>12} {:>14}:1",
            f.family,
            format!("{} races", f.races.len()),
            f.explore.seeds_per_sec,
            f.explore.store_ops_per_sec,
            f.explore.sim_wall_ratio
        );
    }
    out!();
    out!(
        "{:<8} {:<8} {:>9} {:>12} {:>16} {:>14} {:>9} {:>7} {:>9}",
        "race",
        "variant",
        "seeds/s",
        "store ops/s",
        "simulated:wall",
        "machine ns/op",
        "ops/seed",
        "events",
        "decisions"
    );
    for r in &report.races {
        out!(
            "{:<8} {:<8} {:>9} {:>12} {:>14}:1 {:>14} {:>9} {:>7} {:>9}",
            r.race,
            r.variant,
            r.explore.seeds_per_sec,
            r.explore.store_ops_per_sec,
            r.explore.sim_wall_ratio,
            r.machines.ns_per_op,
            r.store_ops_per_seed,
            r.events_per_seed,
            r.decisions_per_seed
        );
    }
    out!();
    out!(
        "regression gate (deterministic): seeds to detect from seed 0 / median over {} start \
         seeds; work per seed of the correct variant",
        racelab_scenarios::gate::START_SEED_COUNT
    );
    for (race, f) in &report.gate.races {
        let detection: Vec<String> = f
            .detection
            .iter()
            .map(|(v, d)| {
                let n = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |n| n.to_string());
                format!("{v} {}/{}", n(d.from_seed_0), n(d.median))
            })
            .collect();
        out!(
            "{race:<10} {:<28} {} store ops, {} events, {} decisions",
            detection.join(", "),
            f.cost.store_ops_per_seed,
            f.cost.events_per_seed,
            f.cost.decisions_per_seed
        );
    }
    let check = &report.gate_check;
    match (check.passed, &check.error) {
        (Some(true), _) => out!("the gate passes against {}", check.baseline),
        (Some(false), _) => {
            out!("the gate FAILS against {}:", check.baseline);
            for line in &check.regressions {
                out!("  - {line}");
            }
        }
        (None, error) => out!(
            "the gate was not checked: {}",
            error.as_deref().unwrap_or("no baseline")
        ),
    }
    ExitCode::SUCCESS
}

fn check_real(
    redis: Option<String>,
    postgres: Option<String>,
    workers: u16,
    requests: u64,
    variant: Variant,
    seed: u64,
    json: bool,
) -> ExitCode {
    use racelab_adapters::{CheckRealOptions, Config, FaultOptions, RedisTarget};
    let config = Config::from_env();
    let pg_url = postgres.unwrap_or(config.pg_url);
    let shared = redis.is_some();
    let target = match redis {
        Some(url) => RedisTarget::Url(url),
        None => RedisTarget::Spawn {
            binary: "redis-server".into(),
        },
    };
    let mut opts = CheckRealOptions::new(variant, workers, requests, target, &pg_url);
    opts.seed = seed;
    opts.faults = FaultOptions {
        // A shared server is never restarted.
        redis_restarts: if shared { 0 } else { 3 },
        worker_kills: 3,
        kills_after_lease: 3,
        proxy: true,
        every: std::time::Duration::from_millis(400),
    };
    opts.time_limit = std::time::Duration::from_secs(600);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = show_progress(json).then(|| {
        let bar = indicatif::ProgressBar::new(requests);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "check-real [{bar:40}] {pos}/{len} scans applied (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let result = runtime.block_on(racelab_adapters::check_real(opts, |applied, _| {
        if let Some(b) = &bar {
            b.set_position(applied);
        }
    }));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        out!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let f = &report.faults_injected;
        out!(
            "{} variant: {} scans, {} workers; faults: {} Redis restarts, {} worker kills, {} kills after a lease, {} latency spikes, {} stalled and {} cut connections",
            report.variant,
            report.requests,
            report.workers,
            f.redis_restarts,
            f.worker_kills,
            f.kills_after_lease,
            f.latency_spikes,
            f.stalled_connections,
            f.cut_connections
        );
        out!(
            "operation latency p50 {} ms, p99 {} ms; quiescent: {}",
            report.p50_ms,
            report.p99_ms,
            report.quiescent
        );
        if report.violations.is_empty() {
            out!("no violation: every scan applied exactly once");
        } else {
            for v in &report.violations {
                out!("{} violated: {}", v.invariant, v.explanation);
            }
        }
    }
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// `--world net`: the production driver under turmoil (racelab_scenarios::net).

fn run_net(
    names: &[String],
    all: bool,
    variant: VariantArg,
    seeds: u64,
    start: u64,
    json: bool,
) -> ExitCode {
    use racelab_scenarios::net::{replay_command_net, supports, sweep_net};
    let races = catalog();
    let selected: Vec<&Race> = if all {
        races.iter().filter(|r| supports(r)).collect()
    } else {
        match resolve(&races, names) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    };
    if let Some(race) = selected.iter().find(|r| !supports(r)) {
        eprintln!(
            "error: {}",
            racelab_scenarios::net::NetError::Unsupported {
                race: race.id.to_string(),
                supported: racelab_scenarios::net::net_races().join(", "),
            }
        );
        return ExitCode::from(2);
    }
    let variants = variant.variants();
    let total = seeds.saturating_mul((selected.len() * variants.len()) as u64);
    let bar = show_progress(json).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:<22} [{bar:40}] {pos}/{len} seeds (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut all_match = true;
    let mut matrix = Vec::new();
    for race in &selected {
        for &v in &variants {
            if let Some(bar) = &bar {
                bar.set_message(format!("{} {} (net)", race.id, v.as_str()));
            }
            let done_before = bar.as_ref().map_or(0, |b| b.position());
            let result = match sweep_net(race, v, start, seeds, |n| {
                if let Some(bar) = &bar {
                    bar.set_position(done_before + n);
                }
            }) {
                Ok(r) => r,
                Err(e) => {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let expected = race.sweep.get(v);
            let matches = expected.matches(result.observed());
            all_match &= matches;
            let replay = result
                .first_failing_seed
                .map(|s| replay_command_net(race, v, s));
            if json {
                // The explore world's fields; the net world has no scripted timelines.
                let row = json!({
                    "race": race.id,
                    "variant": v.as_str(),
                    "seeds_run": result.seeds_run,
                    "start_seed": start,
                    "failures": result.failures,
                    "first_failing_seed": result.first_failing_seed,
                    "expected": expected.as_str(),
                    "verdict_matches": matches,
                    "store_ops": result.store_ops,
                    "replay": replay,
                    "scripts": Vec::<serde_json::Value>::new(),
                });
                out!("{row}");
            } else {
                let mut line = format!(
                    "{} {} (net world):\n  random   {} seeds from {start}: {} failing, expected {} -> {}",
                    race.id,
                    v.as_str(),
                    result.seeds_run,
                    result.failures,
                    expected.as_str(),
                    if matches { "ok" } else { "MISMATCH" }
                );
                if let (Some(seed), Some(command)) = (result.first_failing_seed, &replay) {
                    line.push_str(&format!(
                        "\n    first failing seed {seed}; replay: {command}"
                    ));
                }
                match &bar {
                    Some(b) => b.suspend(|| out!("{line}")),
                    None => out!("{line}"),
                }
                matrix.push((race.id, v, result, expected, matches));
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    finish_matrix(
        "race matrix (net world, random sweep; failures / seeds, expected):",
        &matrix,
        all_match,
        json,
    )
}

/// One row of a `run` matrix: race, variant, sweep, expectation, whether they match.
type MatrixLine = (
    &'static str,
    Variant,
    racelab_scenarios::Sweep,
    racelab_scenarios::Expectation,
    bool,
);

/// Prints the matrix (unless `--json`) and turns the match into the exit code.
fn finish_matrix(title: &str, matrix: &[MatrixLine], all_match: bool, json: bool) -> ExitCode {
    if !json {
        out!("\n{title}");
        out!(
            "{:<10} {:<8} {:>10} {:>8} {:>9}  verdict",
            "race",
            "variant",
            "failures",
            "seeds",
            "expected"
        );
        for (id, v, r, e, m) in matrix {
            out!(
                "{id:<10} {:<8} {:>10} {:>8} {:>9}  {}",
                v.as_str(),
                r.failures,
                r.seeds_run,
                e.as_str(),
                if *m { "as expected" } else { "MISMATCH" }
            );
        }
    }
    if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay_net(
    name: &str,
    variant: Variant,
    seed: Option<u64>,
    script: Option<&str>,
    json: bool,
) -> ExitCode {
    use racelab_scenarios::net::{replay_command_net, run_seed_net};
    let races = catalog();
    let race = match lookup(&races, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let Some(seed) = seed else {
        eprintln!(
            "error: the net world replays seeds (--seed S); scripted timelines run with \
             --world explore"
        );
        return ExitCode::from(2);
    };
    let outcome = match run_seed_net(race, variant, seed) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let command = replay_command_net(race, variant, seed);
    let label = format!("seed {seed}, net world");
    print_replay(
        race,
        variant,
        Some(seed),
        script,
        &label,
        &outcome,
        &command,
        json,
    )
}

/// Prints a replayed run: its timeline, verdict, trace hash and replay command (or one JSON
/// object with the same fields).
#[allow(clippy::too_many_arguments)]
fn print_replay(
    race: &Race,
    variant: Variant,
    seed: Option<u64>,
    script: Option<&str>,
    label: &str,
    outcome: &racelab_scenarios::Outcome,
    command: &str,
    json: bool,
) -> ExitCode {
    let timeline = render_timeline(outcome);
    let hash = format!("{:016x}", outcome.run.trace_hash);
    if json {
        let row = json!({
            "race": race.id,
            "variant": variant.as_str(),
            "seed": seed,
            "script": script,
            "trace_hash": hash,
            "violated": outcome.violated(),
            "explanation": outcome.verdict.explanation(),
            "quiescent": outcome.run.quiescent,
            "timeline": timeline,
            "replay": command,
        });
        out!("{row}");
    } else {
        out!(
            "{} ({}), {} variant, {label}",
            race.id,
            race.title,
            variant.as_str()
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
        out!("trace hash {hash}");
        out!("replay: {command}");
    }
    ExitCode::SUCCESS
}
