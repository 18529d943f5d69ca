//! Document 004's scheduler during a rollout (R-004-08): the TTL retune shipped as a canary
//! (10% -> 50% -> 100% of the scheduler instances, rollback by the old image) while worker
//! nodes crash. Old and new instances serve the same nodes' heartbeats, so a node key's TTL
//! is whichever instance served the node's last heartbeat: a node that dies right after an
//! old instance served it stays selectable for an hour (I-LIVE), and every write of the old
//! image's literals, or of the hand edit that missed line 89 (the pool TTL), is a TTL other
//! than the configured one (C1). Correct publishes one configuration in Redis; every call
//! carries the version it was read at and the script refuses any other.
//!
//! Every variant selects with R-004-01's fix (the lease checked in the selecting script) so
//! that the race is the TTLs' source alone; see `racelab_core::scheduler::rollout`.

use racelab_core::scheduler::rollout::{
    C1, Config, Publisher, ROLLOUT_T_DEAD, Rollout, RolloutNode, STALE_CONFIG_REFUSED, TtlSource,
    Ttls, config_coverage, one_ttl_source,
};
use racelab_core::scheduler::{
    DEAD_NODE_SKIPPED, Dispatcher, L2, NodeConfig, SchedTag, Submit, binding_liveness, coverage,
};
use racelab_core::{Duration, Machine, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{
    FaultProfile, OpEffect, ProcessSpec, Ratio, Run, Step, Target, WorldSpec,
};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-004-08",
        title: "TTL literals in the Lua scripts and a mixed-version canary: old and new \
                instances write different TTLs on the same keys",
        document: "004",
        invariant: "I-LIVE during the rollout: no job is bound to a node whose last heartbeat \
                    is older than the new target's T_dead = 70 s; C1: every registration and \
                    heartbeat writes the one configured TTL",
        docfix_verdict: "partially",
        sweep: PerVariant::DOCFIX_INSUFFICIENT,
        scripts,
        profile,
        seed_budget: 100,
        properties: PROPS,
        net: true,
        build,
        judge,
    }]
}

/// I-LIVE during the rollout: L2 judged with the new target's bound.
pub(crate) const I_LIVE: Property = Property::always(
    "I-LIVE",
    "no job is bound to a node whose last heartbeat is older than the new target's T_dead \
     (70 s), during the rollout and after a rollback",
);

const PROPS: &[Property] = &[I_LIVE, C1, DEAD_NODE_SKIPPED, STALE_CONFIG_REFUSED];

const NODES: [&str; 3] = ["N1", "N2", "N3"];

/// Jobs are submitted until 400 s; the run is judged at 480 s.
const HORIZON: Duration = Duration::from_secs(480);

/// The scheduler reaps its jobs every 10 s.
const REAP_EVERY: Duration = Duration::from_secs(10);

/// The nodes start after the operator published the configuration (Correct).
const NODES_START_MS: u64 = 1_000;

/// The rollback of the scripted timeline: the old image back on every instance.
const ROLLBACK_AT: Timestamp = Timestamp::from_ms(120_000);

/// Every variant's nodes heartbeat every 30 s with epoch fencing, and the scheduler selects
/// among live leases: the TTLs themselves come from the serving instance.
const NODE_CONFIG: NodeConfig = NodeConfig {
    heartbeat: Duration::from_secs(30),
    node_ttl: Duration::from_secs(60),
    pool_ttl: Duration::from_secs(70),
    fenced: true,
};

/// The rollout of a scripted timeline, by its name.
fn scripted_rollout(name: &str) -> Rollout {
    match name {
        "canary-10" => Rollout::fixed(1),
        "canary-50" => Rollout::fixed(5),
        "canary-100" => Rollout::fixed(10),
        "rollback" => Rollout::new(vec![(Timestamp::ZERO, 10), (ROLLBACK_AT, 0)]),
        _ => Rollout::new(vec![
            (Timestamp::ZERO, 1),
            (Timestamp::from_ms(150_000), 5),
            (Timestamp::from_ms(300_000), 10),
        ]),
    }
}

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (every, starts, offsets, rollout) = match workload {
        Workload::Scripted(name) => (5, [0, 1, 2], [0, 3, 6], scripted_rollout(name)),
        Workload::Random(rng) => {
            let every = rng.between(3, 15);
            let starts = [rng.below(5_000), rng.below(5_000), rng.below(5_000)];
            let offsets = [rng.below(10), rng.below(10), rng.below(10)].map(|o| o as u32);
            // The canary's steps at random times, and a rollback in one run of three.
            let half = rng.between(60, 200) * 1000;
            let full = rng.between(half / 1000 + 30, 350) * 1000;
            let mut phases = vec![
                (Timestamp::ZERO, 1),
                (Timestamp::from_ms(half), 5),
                (Timestamp::from_ms(full), 10),
            ];
            if rng.below(3) == 0 {
                let back = rng.between(full / 1000 + 10, 400) * 1000;
                phases.push((Timestamp::from_ms(back), 0));
            }
            (every, starts, offsets, Rollout::new(phases))
        }
    };
    let jobs: Vec<(String, Timestamp)> = (1..)
        .map(|i| (format!("J{i}"), Timestamp::from_ms(i * every * 1000)))
        .take_while(|(_, at)| at.as_ms() <= 400_000)
        .collect();
    let source = TtlSource::of(variant);
    let mut processes: Vec<ProcessSpec> = NODES
        .iter()
        .zip(starts)
        .zip(offsets)
        .map(|((n, start), offset)| {
            let id = n.to_string();
            let rollout = rollout.clone();
            ProcessSpec {
                host: 0,
                name: id.clone(),
                start_at: Timestamp::from_ms(NODES_START_MS + start),
                fault_prone: true,
                factory: Box::new(move |_| {
                    Box::new(RolloutNode::new(
                        &id,
                        NODE_CONFIG,
                        Duration::from_secs(5),
                        rollout.clone(),
                        source,
                        offset,
                    )) as Box<dyn Machine>
                }),
            }
        })
        .collect();
    processes.push(ProcessSpec {
        host: 1,
        name: "S".into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(
                Dispatcher::new(NODE_CONFIG, jobs.clone(), REAP_EVERY)
                    .with_submit(Submit::DispatchAndReap),
            ) as Box<dyn Machine>
        }),
    });
    if let TtlSource::Published { current, .. } = source {
        processes.push(publisher(current));
    }
    (crate::scheduler::world(processes, HORIZON), Capture::none())
}

/// The operator, publishing the configuration before the nodes start.
fn publisher(config: Config) -> ProcessSpec {
    ProcessSpec {
        host: 2,
        name: "O".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: Box::new(move |_| Box::new(Publisher::new(config)) as Box<dyn Machine>),
    }
}

fn judge(run: &Run, _: &Capture) -> Verdict {
    let mut live = binding_liveness(&run.history, ROLLOUT_T_DEAD);
    for v in &mut live.violations {
        // The same check as L2, with the rollout's bound: named for the document's invariant.
        if v.invariant == L2.name {
            v.invariant = I_LIVE.name.into();
        }
    }
    let mut verdict = live.merge(one_ttl_source(&run.history, Ttls::TARGET));
    coverage(&run.history, &mut verdict);
    config_coverage(&run.history, &mut verdict);
    verdict
        .sometimes
        .retain(|name, _| PROPS.iter().any(|p| p.name == name));
    verdict
}

/// N1 crashes for good right after its `nth` heartbeat.
fn crash_after_heartbeat(nth: u32) -> Step {
    Step::on(
        "N1",
        SchedTag::HEARTBEAT,
        nth,
        OpEffect::CrashAfterApply {
            restart_after: None,
        },
    )
}

/// The heartbeat after which the scripted timelines crash N1: its sixth call (registration
/// first), served by instance 5, old at 10% and 50%, new at 100%, and old again after the
/// rollback at 120 s (it lands at about 151 s).
const CRASH_AFTER: u32 = 5;

fn scripts() -> Vec<Script> {
    use Expectation::{Fails, Holds};
    vec![
        Script {
            name: "canary-10",
            summary: "one instance in ten runs the retuned image; N1's fifth heartbeat is \
                      served by an old one (3600 s) and N1 crashes right after: it stays \
                      selectable, and jobs keep going to it long after 70 s",
            steps: vec![crash_after_heartbeat(CRASH_AFTER)],
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "canary-50",
            summary: "half the instances run the retuned image; N1's fifth heartbeat is still \
                      served by an old one, and N1 crashes right after",
            steps: vec![crash_after_heartbeat(CRASH_AFTER)],
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "canary-100",
            summary: "every instance runs the retuned image and N1 crashes after its fifth \
                      heartbeat: its 60 s node TTL keeps I-LIVE, but the hand edit's pool TTL \
                      (line 89, missed) is still 3600 s",
            steps: vec![crash_after_heartbeat(CRASH_AFTER)],
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "rollback",
            summary: "the retuned image everywhere, rolled back to the old one at 120 s; N1's \
                      fifth heartbeat (about 151 s) is served by the old image and N1 crashes \
                      right after",
            steps: vec![crash_after_heartbeat(CRASH_AFTER)],
            expect: PerVariant([Fails, Fails, Holds]),
        },
        Script {
            name: "no-fault",
            summary: "the canary's three steps (10% at 0 s, 50% at 150 s, 100% at 300 s) and no \
                      node crashing: nothing binds to a dead node, but the old image and the \
                      hand edit still write TTLs other than the configured ones",
            steps: Vec::new(),
            expect: PerVariant([Fails, Fails, Holds]),
        },
    ]
}

fn profile() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(300),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        crash: Ratio::per_mille(30),
        // A crashed node stays down past the horizon: it never deregisters.
        restart_after: (Duration::from_secs(1_000), Duration::from_secs(2_000)),
        crash_on: Target {
            kinds: vec![SchedTag::HEARTBEAT],
            ..Target::processes(&NODES)
        },
        drop_reply: Ratio::per_mille(10),
        ..FaultProfile::quiet()
    }
}

#[cfg(test)]
mod tests {
    //! AC-004-4: the mixed-version simulation at each step of the canary and on rollback.

    use super::*;
    use crate::catalog::Script;
    use crate::{run_script, run_seed};

    /// C1 breaks on every Buggy and DocFix run (the old image writes its literals from the
    /// start): the random sweep must also find the staleness itself, I-LIVE, within the
    /// race's seed budget, in both, and never in Correct.
    #[test]
    fn random_search_finds_i_live_broken_during_the_rollout() {
        let race = races().remove(0);
        for variant in Variant::ALL {
            let seeds: Vec<u64> = (0..race.seed_budget)
                .filter(|&seed| run_seed(&race, variant, seed).verdict.broke(I_LIVE.name))
                .collect();
            println!(
                "R-004-08 {variant:?}: I-LIVE broken in {} of {} seeds, first {:?}",
                seeds.len(),
                race.seed_budget,
                seeds.first()
            );
            if variant == Variant::Correct {
                assert!(seeds.is_empty(), "Correct broke I-LIVE at seeds {seeds:?}");
            } else {
                assert!(!seeds.is_empty(), "{variant:?}: I-LIVE never broke");
            }
        }
    }

    /// At each ratio (10%, 50%, 100%) and after a rollback, N1 crashes for good after each
    /// of its first ten heartbeats in turn (each served by another instance). I-LIVE with
    /// `T_dead` the new target (70 s): the hand edit breaks it at the mixed ratios and after
    /// the rollback, and keeps it at 100%; the published configuration keeps it at every
    /// ratio; the code's literals break it at every one.
    #[test]
    fn ac_004_4_i_live_at_each_canary_ratio_and_on_rollback() {
        let race = races().remove(0);
        for stage in ["canary-10", "canary-50", "canary-100", "rollback"] {
            for variant in Variant::ALL {
                let mut broken = 0;
                for nth in 1..=10 {
                    let script = Script {
                        name: stage,
                        summary: "",
                        steps: vec![crash_after_heartbeat(nth)],
                        expect: PerVariant([Expectation::Holds; 3]),
                    };
                    let outcome = run_script(&race, &script, variant);
                    if outcome.verdict.broke(I_LIVE.name) {
                        broken += 1;
                    }
                }
                println!(
                    "AC-004-4 {stage} {variant:?}: I-LIVE broken after {broken} of 10 crashes"
                );
                let expect_broken = match variant {
                    Variant::Buggy => true,
                    Variant::DocFix => stage != "canary-100",
                    Variant::Correct => false,
                };
                if expect_broken {
                    assert!(broken > 0, "{stage} {variant:?}: I-LIVE never broke");
                } else {
                    assert_eq!(broken, 0, "{stage} {variant:?}: I-LIVE broke");
                }
            }
        }
    }
}
