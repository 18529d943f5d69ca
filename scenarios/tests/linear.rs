//! The Redis linearizability checker on the catalog's simulated runs. The Redis model applies
//! each command atomically between its invocation and its answer, so without a failover or a
//! restart every key must come out linearizable (or undecided); a failover or a restart loses
//! acknowledged writes, and the checker must flag keys only in runs that had one, and flag
//! some.

use racelab_core::{Fault, History, StoreOp, Timestamp};
use racelab_scenarios::{Profile, Variant, catalog, run_seed_in};
use racelab_sim::explore::linear::{LINEAR_BOUND, ObjectReport, check_redis, keys_of};

/// Seeds per race and variant.
const SEEDS: u64 = 30;

/// When Redis lost writes (a failover or a restart), in the run's order.
fn redis_losses(h: &History) -> Vec<Timestamp> {
    h.faults
        .iter()
        .filter(|f| matches!(f.fault, Fault::Failover | Fault::RedisRestart))
        .map(|f| f.at)
        .collect()
}

/// Whether some operation on the object's keys was invoked before a loss and answered (then
/// or later): an acknowledged write a failover or restart could have erased.
fn explained(h: &History, object: &ObjectReport, losses: &[Timestamp]) -> bool {
    h.ops.iter().any(|rec| {
        let StoreOp::Kv(op) = &rec.op else {
            return false;
        };
        let touches = keys_of(op)
            .unwrap_or_default()
            .iter()
            .any(|k| object.keys.iter().any(|o| o == k));
        touches && rec.completed_at.is_some() && losses.iter().any(|&l| rec.invoked_at <= l)
    })
}

#[test]
fn keys_are_linearizable_unless_redis_lost_writes() {
    let mut checked = 0usize;
    let mut decided_linearizable = 0usize;
    let mut undecided = 0usize;
    let mut flagged_runs = 0usize;
    let mut runs_with_losses = 0usize;
    for race in catalog() {
        for variant in [Variant::Buggy, Variant::Correct] {
            for seed in 0..SEEDS {
                let outcome = run_seed_in(&race, variant, seed, Profile::Swarm);
                let h = &outcome.run.history;
                let report = check_redis(h, LINEAR_BOUND);
                checked += report.objects.len();
                let (ok, _, unknown) = report.counts();
                decided_linearizable += ok;
                undecided += unknown;
                let losses = redis_losses(h);
                runs_with_losses += usize::from(!losses.is_empty());
                let replay = format!(
                    "racelab replay {} --variant {} --seed {seed} --profile swarm",
                    race.id,
                    variant.as_str()
                );
                for bad in report.violations() {
                    assert!(
                        !losses.is_empty(),
                        "{:?} not linearizable without any failover or restart: {bad:?}\n{replay}",
                        bad.keys
                    );
                    assert!(
                        explained(h, bad, &losses),
                        "{:?} not linearizable, but no write on it was invoked before a loss and answered: {bad:?}\n{replay}",
                        bad.keys
                    );
                }
                flagged_runs += usize::from(report.violations().next().is_some());
            }
        }
    }
    println!(
        "linearizability: {checked} Redis objects checked ({decided_linearizable} linearizable, {undecided} undecided); {runs_with_losses} runs with a failover or restart, {flagged_runs} with keys flagged"
    );
    // The check must decide, not only shrug: most objects get a verdict.
    assert!(
        decided_linearizable > checked / 2,
        "too few objects decided linearizable: {decided_linearizable} of {checked}"
    );
    assert!(
        flagged_runs > 0,
        "no run's lost writes were flagged: the check is vacuous"
    );
}
