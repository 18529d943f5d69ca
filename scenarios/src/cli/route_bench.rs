//! `racelab route-bench`: every routing policy on the same seeded upstream scenarios, with
//! regret, success rate, latency and requests sent to down endpoints (deterministic).

use std::process::ExitCode;

use racelab_scenarios::route_bench;

/// Runs `racelab route-bench` (with `seed`, on that seed instead of the bench's own); with
/// `out`, also writes `route-bench.html` there.
pub(crate) fn route_bench(
    json: bool,
    out: Option<&std::path::Path>,
    seed: Option<u64>,
) -> ExitCode {
    let bench = seed.map_or_else(route_bench::run, route_bench::run_seeded);
    if let Some(dir) = out {
        let path = dir.join("route-bench.html");
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, route_bench::html(&bench)));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("wrote {}", path.display());
    }
    if json {
        match serde_json::to_string_pretty(&bench) {
            Ok(text) => out!("{text}"),
            Err(e) => {
                eprintln!("error: cannot encode the figures: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    out!(
        "route-bench (seed {:#x}, 1,000 requests/s of virtual time, client timeout {} ms); \
         regret = summed loss (latency, or the whole timeout on failure) minus the best fixed \
         endpoint's in hindsight; shipped: {} behind the hard gate",
        bench.seed,
        bench.timeout_ms,
        bench.shipped
    );
    for s in &bench.scenarios {
        out!();
        out!(
            "{}: {} ({} requests; best fixed {}, loss {:.1} s)",
            s.scenario,
            s.summary,
            s.requests,
            s.best_fixed,
            s.best_fixed_loss_ms as f64 / 1000.0
        );
        out!(
            "  {:<22} {:>10} {:>8} {:>6} {:>6} {:>8} {:>9} {:>8} {:>6}",
            "policy",
            "regret s",
            "success",
            "p50",
            "p99",
            "to down",
            "evidence",
            "refused",
            "probes"
        );
        for r in &s.rows {
            out!(
                "  {:<22} {:>10.1} {:>7.1}% {:>6} {:>6} {:>8} {:>9} {:>8} {:>6}",
                r.policy,
                r.regret_ms as f64 / 1000.0,
                r.success_per_mille as f64 / 10.0,
                r.p50_ms,
                r.p99_ms,
                r.to_down,
                r.to_down_after_evidence,
                r.refused,
                r.probes
            );
        }
        let t = &s.target;
        let yn = |b: bool| if b { "yes" } else { "NO" };
        out!(
            "  target for {}: regret <= 20% of uniform's {}; within 10% of the best other ({}) \
             {}; none to a known-down endpoint {}",
            t.policy,
            yn(t.within_20pct_of_uniform),
            t.best_other,
            yn(t.within_10pct_of_best_other),
            yn(t.none_to_known_down)
        );
    }
    let h = &bench.herding;
    out!();
    out!("herding: {} ({} requests)", h.summary, h.requests);
    out!(
        "  {:<22} {:<14} {:>8} {:>6} {:>6} {:>10} {:>10}",
        "policy",
        "load",
        "success",
        "p50",
        "p99",
        "peak busy",
        "top share"
    );
    for r in &h.rows {
        out!(
            "  {:<22} {:<14} {:>7.1}% {:>6} {:>6} {:>10} {:>9.1}%",
            r.policy,
            r.sharing,
            r.success_per_mille as f64 / 10.0,
            r.p50_ms,
            r.p99_ms,
            r.peak_in_flight,
            r.top_share_per_mille as f64 / 10.0
        );
    }
    ExitCode::SUCCESS
}
