//! Throughput of the explore world, reported and never gated (wall-clock figures swing by
//! 20% between identical runs on a shared 2-core machine; the gate in `tests/gate.rs` uses
//! deterministic counts instead).
//!
//! - seeds per second and store operations per second on a fixed reference workload per race
//!   (seeds 0..50 of the Buggy and the Correct variant);
//! - the cost of one core machine step (a worker's fetch, lock, work and effect cycle);
//! - the simulated-time to wall-time ratio, printed once per race.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use racelab_core::workorder::{DocFixPlans, Variant as V, Worker, WorkerConfig};
use racelab_core::{Machine, Reply, Timestamp};
use racelab_scenarios::{Variant, catalog, run_seed};

const SEEDS: u64 = 50;

fn explore(c: &mut Criterion) {
    for race in catalog() {
        for variant in [Variant::Buggy, Variant::Correct] {
            let (ops, sim_ms) = (0..SEEDS).fold((0u64, 0u64), |(o, s), seed| {
                let run = run_seed(&race, variant, seed).run;
                (o + run.stats.store_ops, s + run.ended_at.as_ms())
            });
            let started = Instant::now();
            for seed in 0..SEEDS {
                black_box(run_seed(&race, variant, seed));
            }
            let ratio = sim_ms as f64 / 1000.0 / started.elapsed().as_secs_f64();
            eprintln!(
                "{} {}: simulated:wall {ratio:.0}:1",
                race.id,
                variant.as_str()
            );
            let mut group = c.benchmark_group(format!("{}/{}", race.id, variant.as_str()));
            group.sample_size(10);
            group.throughput(Throughput::Elements(SEEDS));
            group.bench_function("seeds", |b| {
                b.iter(|| {
                    (0..SEEDS)
                        .map(|s| run_seed(&race, variant, black_box(s)).run.stats.events)
                        .sum::<u64>()
                })
            });
            group.throughput(Throughput::Elements(ops));
            group.bench_function("store_ops", |b| {
                b.iter(|| {
                    (0..SEEDS)
                        .map(|s| run_seed(&race, variant, black_box(s)).run.stats.store_ops)
                        .sum::<u64>()
                })
            });
            group.finish();
        }
    }
}

fn machine_step(c: &mut Criterion) {
    c.bench_function("core/worker_handle_reply", |b| {
        b.iter(|| {
            let mut w = Worker::new(
                WorkerConfig::new(
                    V::Correct,
                    DocFixPlans {
                        plan1: false,
                        plan2: None,
                    },
                ),
                "W",
                0,
            );
            w.handle_start(Timestamp::ZERO);
            let fetch = w.poll_op().expect("a fetch");
            w.handle_reply(Timestamp::from_ms(1), fetch.id, black_box(Reply::Timeout));
            black_box(w.poll_timeout())
        })
    });
}

criterion_group!(benches, explore, machine_step);
criterion_main!(benches);
