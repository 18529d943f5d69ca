//! `racelab bench`: throughput per race and family, the simulated:wall ratio, the core
//! machines' cost per operation and the regression gate's deterministic counts.

use std::process::ExitCode;

use racelab_scenarios::catalog;

use super::output::{clear, show_progress};

/// Runs `racelab bench` (`repeats` runs of `seeds` seeds each, the fastest kept).
pub(crate) fn bench(seeds: u64, repeats: u32, json: bool) -> ExitCode {
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
    clear(bar);
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
        "store operations per second over the whole workload: {}; a bare seeded step (draw, \
         ordered-map update, log push) in the same run: {} per second; ratio {} (target 0.2)",
        report.store_ops_per_sec,
        report.bare_steps_per_sec,
        report.store_op_to_bare_step
    );
    out!(
        "the world floor (the explore world running machines that only send INCRBY, no faults): \
         {} store operations per second; ratio {}",
        report.floor_store_ops_per_sec,
        report.floor_to_bare_step
    );
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

/// Runs `racelab bench --detection`: per failing variant of every race, the seeds to its
/// first violation from seed 0 and the median over the gate's start seeds, under each fault
/// profile side by side (the gate's figures, deterministic).
pub(crate) fn detection(json: bool) -> ExitCode {
    use racelab_scenarios::Profile;
    use racelab_scenarios::gate::{START_SEED_COUNT, detected_variants, detection_in};

    let races = catalog();
    let bar = show_progress(json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut rows = Vec::new();
    for race in &races {
        for variant in detected_variants(race) {
            let figures: Vec<(Profile, racelab_scenarios::gate::Detection)> = Profile::ALL
                .into_iter()
                .map(|p| {
                    if let Some(b) = &bar {
                        b.set_message(format!(
                            "{} {} under the {} profile",
                            race.id,
                            variant.as_str(),
                            p.as_str()
                        ));
                    }
                    (p, detection_in(race, variant, p))
                })
                .collect();
            rows.push((race.id, variant, figures));
        }
    }
    clear(bar);
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|(race, variant, figures)| {
                let mut row = serde_json::json!({"race": race, "variant": variant.as_str()});
                for (p, d) in figures {
                    row[p.as_str()] = serde_json::json!({
                        "budget": d.budget,
                        "from_seed_0": d.from_seed_0,
                        "median": d.median,
                        "detected_from": d.detected_from,
                    });
                }
                row
            })
            .collect();
        out!(
            "{}",
            serde_json::json!({ "start_seeds": START_SEED_COUNT, "rows": rows })
        );
        return ExitCode::SUCCESS;
    }
    out!(
        "seeds to the first violation: from seed 0 / median over {START_SEED_COUNT} start \
         seeds (- : not within the budget); `race` is the race's own fault profile, `swarm` \
         one generic profile for every race, `pctD` the PCT scheduler at depth D with the \
         swarm's faults"
    );
    let mut header = format!("{:<10} {:<8}", "race", "variant");
    for p in Profile::ALL {
        header.push_str(&format!(" {:>10}", p.as_str()));
    }
    out!("{header}");
    let n = |x: Option<u64>| x.map_or_else(|| "-".to_string(), |n| n.to_string());
    for (race, variant, figures) in &rows {
        let cells: Vec<String> = figures
            .iter()
            .map(|(_, d)| format!("{}/{}", n(d.from_seed_0), n(d.median)))
            .collect();
        let mut line = format!("{race:<10} {:<8}", variant.as_str());
        for cell in cells {
            line.push_str(&format!(" {cell:>10}"));
        }
        out!("{line}");
    }
    ExitCode::SUCCESS
}
