//! `racelab route-bench`'s table: deterministic, held against the committed figures
//! (`reports/baseline/route-bench.json`), and the shipped policy's targets as far as they
//! hold (the ones that do not are asserted as not holding, so a change either way is seen).
//!
//! `RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test route_bench` rewrites
//! the committed table from the current code; review its diff before committing.

use std::path::PathBuf;

use racelab_scenarios::route_bench::{self, RouteBench, SHIPPED, ScenarioTable};

fn table_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/baseline/route-bench.json")
}

fn scenario<'a>(bench: &'a RouteBench, name: &str) -> &'a ScenarioTable {
    bench
        .scenarios
        .iter()
        .find(|s| s.scenario == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

#[test]
fn the_table_is_deterministic_and_matches_the_committed_figures() {
    let first = route_bench::run();
    let second = route_bench::run();
    assert_eq!(first, second, "two runs of the bench differ");
    let text = serde_json::to_string_pretty(&first).unwrap() + "\n";
    let path = table_path();
    if std::env::var_os("RACELAB_UPDATE_BASELINE").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        eprintln!("route-bench table rewritten: {}", path.display());
        return;
    }
    let held = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        held == text,
        "the route-bench table differs from {}; if the change is intended, run \
         RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test route_bench and \
         review the diff",
        path.display()
    );
}

#[test]
fn the_shipped_policy_meets_its_targets_where_it_can_and_the_misses_are_the_reported_ones() {
    let bench = route_bench::run();
    assert_eq!(bench.shipped, SHIPPED);
    for s in &bench.scenarios {
        assert_eq!(s.rows.len(), 11, "{}", s.scenario);
        assert_eq!(s.target.policy, SHIPPED);
    }
    // Regret at most 20% of gated uniform's: holds where the best endpoint matters.
    for name in ["revoked", "recovers", "drift"] {
        assert!(
            scenario(&bench, name).target.within_20pct_of_uniform,
            "{name}"
        );
    }
    // Reported misses (README, route-bench): on linkerd no policy reaches 20% of uniform's
    // regret (P2C is best), and on fail-fast the shipped policy is short of it (UCB1 is
    // closest); UCB1 beats it on fail-fast, revoked and recovers, but herds onto one
    // endpoint under delayed feedback and loses 16x more on linkerd. On drift it is within
    // 10% of UCB1.
    assert!(!scenario(&bench, "linkerd").target.within_20pct_of_uniform);
    assert!(!scenario(&bench, "fail-fast").target.within_20pct_of_uniform);
    for s in &bench.scenarios {
        let within = s.target.within_10pct_of_best_other;
        assert_eq!(within, s.scenario == "drift", "{}", s.scenario);
    }
    // No request to an endpoint after the router had the gate's evidence that it is down.
    for s in &bench.scenarios {
        assert!(s.target.none_to_known_down, "{}", s.scenario);
    }
}

#[test]
fn after_evidence_counts_what_the_gate_had_evidence_of_and_not_the_first_failures() {
    let bench = route_bench::run();
    let recovers = scenario(&bench, "recovers");
    for row in &recovers.rows {
        if row.policy == "doc-uniform-no-gate" {
            // Without the gate, a fifth of the 10 s outage's requests, all after evidence.
            assert!(row.to_down_after_evidence > 1_500, "{row:?}");
        } else {
            // Gated: requests sent before the third failure came back, none after.
            assert!(row.to_down >= 1, "{row:?}");
            assert_eq!(row.to_down_after_evidence, 0, "{row:?}");
        }
    }
}

#[test]
fn the_gate_stops_traffic_to_a_revoked_key_and_the_document_code_does_not() {
    let bench = route_bench::run();
    let revoked = scenario(&bench, "revoked");
    for row in &revoked.rows {
        if row.policy == "doc-uniform-no-gate" {
            // A fifth of 20,000 requests after the revocation.
            assert!(row.to_down_after_evidence > 3_500, "{row:?}");
            assert_eq!(row.probes, 0);
        } else {
            // 401 is sticky at once: only the requests in flight before the first 401.
            assert_eq!(row.to_down_after_evidence, 0, "{row:?}");
            assert!(row.to_down <= 20, "{row:?}");
            assert!(row.probes > 0, "{row:?}");
        }
    }
}

#[test]
fn stale_shared_load_makes_instances_herd_and_p2c_limits_it() {
    let bench = route_bench::run();
    let h = &bench.herding;
    let row = |policy: &str, sharing: &str| {
        h.rows
            .iter()
            .find(|r| r.policy == policy && r.sharing == sharing)
            .unwrap_or_else(|| panic!("no row {policy} {sharing}"))
    };
    let fair = 1000 / u64::from(h.endpoints);
    // Exact shared load: join-the-shortest-queue spreads evenly.
    let exact = row("least-loaded", "shared-0ms");
    assert!(exact.top_share_per_mille <= fair + fair / 5, "{exact:?}");
    assert_eq!(exact.success_per_mille, 1000, "{exact:?}");
    // Read a second late, every instance joins the same stale shortest queue.
    let stale = row("least-loaded", "shared-1000ms");
    assert!(stale.top_share_per_mille >= 2 * fair, "{stale:?}");
    assert!(
        stale.peak_in_flight >= 5 * exact.peak_in_flight,
        "{stale:?}"
    );
    assert!(stale.success_per_mille < 1000, "{stale:?}");
    // Two random choices bound the damage of the same stale load: no request fails and the
    // pile-up is a third of join-the-shortest-queue's.
    let p2c = row("p2c-least-outstanding", "shared-1000ms");
    assert_eq!(p2c.success_per_mille, 1000, "{p2c:?}");
    assert!(
        3 * p2c.peak_in_flight <= stale.peak_in_flight + 3,
        "{p2c:?}"
    );
    // Local load alone is close to exact shared load: sharing with a lag buys nothing here.
    let local = row("p2c-least-outstanding", "local");
    assert!(local.p99_ms <= exact.p99_ms + exact.p99_ms / 4, "{local:?}");
    // Thompson sampling that reads no load piles onto one endpoint by itself on
    // load-sensitive endpoints: its argmax over delayed rewards sends a round trip's
    // requests to one endpoint.
    let censored = row("thompson-censored", "local");
    assert!(censored.top_share_per_mille >= 2 * fair, "{censored:?}");
    assert!(censored.success_per_mille < 800, "{censored:?}");
    // The shipped policy corrects its draws by its own load: it spreads like P2C.
    let shipped = row(SHIPPED, "local");
    assert_eq!(shipped.success_per_mille, 1000, "{shipped:?}");
    assert!(
        shipped.top_share_per_mille <= fair + fair / 5,
        "{shipped:?}"
    );
    assert!(
        shipped.p99_ms <= local.p99_ms + local.p99_ms / 5,
        "{shipped:?}"
    );
}

#[test]
fn the_shipped_policy_is_not_tuned_to_the_bench_seed() {
    // Four other seeds: the herding fix and the gate hold on each, and on every scenario the
    // mean regret is within 5% of uniform's (the target's scale) of the policy it extends,
    // censored Thompson, whose figures are noisy by as much on Linkerd's (seed 1: 50.2 s vs
    // 33.3 s; seed 2: 33.8 s vs 36.4 s).
    let seeds = [1, 2, 3, 4];
    let benches: Vec<RouteBench> = seeds.iter().map(|&s| route_bench::run_seeded(s)).collect();
    for (k, name) in ["linkerd", "fail-fast", "revoked", "recovers", "drift"]
        .iter()
        .enumerate()
    {
        let total = |p: &str| -> i64 {
            benches
                .iter()
                .map(|b| {
                    let s = &b.scenarios[k];
                    assert_eq!(s.scenario, *name);
                    s.rows.iter().find(|r| r.policy == p).unwrap().regret_ms
                })
                .sum()
        };
        let (shipped, censored, uniform) =
            (total(SHIPPED), total("thompson-censored"), total("uniform"));
        assert!(
            shipped * 20 <= censored * 20 + uniform,
            "{name}: summed regret {shipped} vs censored {censored}, uniform {uniform}"
        );
    }
    for (seed, bench) in seeds.iter().zip(&benches) {
        for s in &bench.scenarios {
            assert!(s.target.none_to_known_down, "seed {seed} {}", s.scenario);
        }
        let herd = bench
            .herding
            .rows
            .iter()
            .find(|r| r.policy == SHIPPED)
            .unwrap();
        assert_eq!(herd.success_per_mille, 1000, "seed {seed} {herd:?}");
        assert!(herd.top_share_per_mille <= 120, "seed {seed} {herd:?}");
    }
}
