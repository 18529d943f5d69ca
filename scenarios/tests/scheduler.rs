//! Document 004's scheduler family end to end: every scripted timeline does what the catalog
//! says for every variant; the random scheduler finds the Buggy and DocFix violations within
//! the seed budget, naming the property they break; the Correct variant holds for 10,000
//! seeds with its `sometimes` and protection properties seen.

#[macro_use]
mod common;

race_tests! {
    r_004_01 => "R-004-01", ["L2"],
    r_004_02 => "R-004-02", ["F1", "I-JOB"],
    r_004_03 => "R-004-03", ["J3", "F1", "I-JOB", "I-JOB-delivered"],
    r_004_06 => "R-004-06", ["J2", "I-JOB-notified", "B1", "I-JOB-delivered"],
}

/// AC-004-5/6 for the protocols whose job state lives in Redis (R-004-03's scheduler and
/// R-004-06's, which follows each job and finalizes it at its deadline): the scheduler `S`
/// is killed right after each of its operations in turn (the n-th of each kind it sends),
/// and restarted 2 s later with the same stable job ids, on the race's scripted workload
/// with and without its counter-schedule. Correct must keep every job to exactly one
/// delivered outcome (the race's whole verdict, I-JOB and I-JOB-delivered among it) at every
/// crash point. The crash points are counted, and a point that was never reached (no n-th
/// operation of that kind) is not counted, so the test fails if the scheduler's work changes
/// shape and the sweep stops covering it. The Buggy variant, on the timelines it survives
/// without a restart, must break at some crash point (the document's "a scheduler restart
/// loses in-progress jobs"), naming a job property.
#[test]
fn ac_004_5_6_a_scheduler_restart_at_every_step_loses_no_job_in_correct() {
    use racelab_core::Duration;
    use racelab_core::Fault;
    use racelab_core::scheduler::SchedTag;
    use racelab_scenarios::{Expectation, Script, Variant, run_script};
    use racelab_sim::explore::{OpEffect, Step};

    // What a restart of the document's scheduler breaks: a job lost, doubled, left without
    // an outcome or given two.
    let job_properties = ["I-JOB", "I-JOB-delivered", "J2", "B1", "I-JOB-notified"];
    let kinds = [
        SchedTag::DISPATCH,
        SchedTag::REAP,
        SchedTag::STATUS,
        SchedTag::FINALIZE,
        SchedTag::BINDING,
        SchedTag::SELECT,
        SchedTag::BIND,
    ];
    for (id, min_points) in [("R-004-03", 10), ("R-004-06", 10)] {
        let race = common::race(id);
        let mut points = 0;
        let mut buggy_breaks = 0;
        for base in (race.scripts)() {
            for kind in kinds {
                for nth in 1..=12 {
                    let mut steps = base.steps.clone();
                    steps.push(Step::on(
                        "S",
                        kind,
                        nth,
                        OpEffect::CrashAfterApply {
                            restart_after: Some(Duration::from_secs(2)),
                        },
                    ));
                    let script = Script {
                        steps,
                        ..base.clone()
                    };
                    // The document's code, on a timeline it survives without the restart.
                    if base.expect.get(Variant::Buggy) == Expectation::Holds {
                        let buggy = run_script(&race, &script, Variant::Buggy);
                        if buggy.violated() {
                            let broken = buggy.verdict.broken();
                            assert!(
                                broken.iter().all(|b| job_properties.contains(b)),
                                "{id}: Buggy broke {broken:?} after a restart"
                            );
                            buggy_breaks += 1;
                        }
                    }
                    let outcome = run_script(&race, &script, Variant::Correct);
                    let crashed = outcome.run.history.faults.iter().any(|f| {
                        matches!(f.fault, Fault::Crash { process } if outcome.run.history.name(process) == "S")
                    });
                    if !crashed {
                        continue;
                    }
                    points += 1;
                    assert!(
                        !outcome.violated(),
                        "{id} timeline {} with S killed after its {nth}th {kind:?}: {}",
                        base.name,
                        outcome.verdict.explanation()
                    );
                }
            }
        }
        println!(
            "{id}: Correct kept every job through {points} scheduler restarts; the document's \
             code lost or doubled a job at {buggy_breaks} of them"
        );
        assert!(
            points >= min_points,
            "{id}: only {points} crash points reached"
        );
        assert!(
            buggy_breaks > 0,
            "{id}: no restart broke the Buggy scheduler: the sweep cannot tell the protocols apart"
        );
    }
}
