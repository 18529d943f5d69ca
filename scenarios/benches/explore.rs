//! criterion benches: reported, never gated. Wall-clock figures swing by 20% between identical
//! runs on a shared 2-core machine; the gate (`tests/gate.rs`) compares deterministic counts.
//!
//! - `explore/FAMILY`: the explore world's throughput on a race family's reference workload
//!   (seeds `0..SEEDS` of every race's Buggy and Correct variant), as seeds per second
//!   (`seeds`) and store operations per second (`store_ops`);
//! - `race/RACE/VARIANT`: seeds per second of one race and variant;
//! - `core/RACE/VARIANT`: the core machines alone, replaying the calls recorded from the same
//!   seeds (`racelab_scenarios::bench::MachineRecording`), per store operation;
//! - the simulated-time to wall-time ratio of each family and race, printed before its group
//!   (criterion has no unit for it).
//!
//! `cargo bench -p racelab-scenarios`; `cargo bench -p racelab-scenarios -- core/` for one
//! group.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use racelab_scenarios::bench::{BENCH_VARIANTS, MachineRecording, reference_work, time_reference};
use racelab_scenarios::{Race, Variant, catalog};

/// Seeds per race and variant in the reference workload.
const SEEDS: u64 = 50;

fn families(races: &[Race]) -> BTreeMap<&'static str, Vec<&Race>> {
    let mut out: BTreeMap<&'static str, Vec<&Race>> = BTreeMap::new();
    for race in races {
        out.entry(race.document).or_default().push(race);
    }
    out
}

/// Runs a family's reference workload; returns the store operations (so nothing is elided).
fn family_workload(races: &[&Race]) -> u64 {
    races
        .iter()
        .flat_map(|race| BENCH_VARIANTS.map(|v| (*race, v)))
        .map(|(race, variant)| reference_work(race, variant, black_box(SEEDS)).store_ops)
        .sum()
}

fn explore(c: &mut Criterion) {
    let races = catalog();
    for (family, members) in families(&races) {
        let (mut seeds, mut ops, mut sim_ms, mut wall_ms) = (0, 0, 0, 0.0);
        for race in &members {
            for variant in BENCH_VARIANTS {
                let t = time_reference(race, variant, SEEDS, 1);
                seeds += t.work.seeds;
                ops += t.work.store_ops;
                sim_ms += t.work.simulated_ms;
                wall_ms += t.wall_ms;
            }
        }
        eprintln!(
            "explore/{family}: {} races, simulated:wall {:.0}:1 ({} seeds, {} store ops)",
            members.len(),
            sim_ms as f64 / wall_ms.max(1e-6),
            seeds,
            ops
        );
        let mut group = c.benchmark_group(format!("explore/{family}"));
        group.throughput(Throughput::Elements(seeds));
        group.bench_function("seeds", |b| b.iter(|| family_workload(&members)));
        group.throughput(Throughput::Elements(ops));
        group.bench_function("store_ops", |b| b.iter(|| family_workload(&members)));
        group.finish();
    }
}

fn per_race(c: &mut Criterion) {
    for race in catalog() {
        let mut group = c.benchmark_group(format!("race/{}", race.id));
        group.throughput(Throughput::Elements(SEEDS));
        for variant in BENCH_VARIANTS {
            let t = time_reference(&race, variant, SEEDS, 1);
            eprintln!(
                "race/{}/{}: simulated:wall {:.0}:1, {} store ops per seed",
                race.id,
                variant.as_str(),
                t.sim_wall_ratio,
                t.work.store_ops / SEEDS
            );
            group.bench_function(variant.as_str(), |b| {
                b.iter(|| reference_work(&race, variant, black_box(SEEDS)).store_ops)
            });
        }
        group.finish();
    }
}

fn machines(c: &mut Criterion) {
    for race in catalog() {
        let mut group = c.benchmark_group(format!("core/{}", race.id));
        for variant in [Variant::Buggy, Variant::Correct] {
            let recordings: Vec<MachineRecording> = (0..SEEDS)
                .map(|seed| MachineRecording::record(&race, variant, seed))
                .collect();
            let ops: u64 = recordings.iter().map(MachineRecording::ops).sum();
            group.throughput(Throughput::Elements(ops));
            group.bench_function(variant.as_str(), |b| {
                b.iter(|| recordings.iter().map(MachineRecording::replay).sum::<u64>())
            });
        }
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = explore, per_race, machines
}
criterion_main!(benches);
