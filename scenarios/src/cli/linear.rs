//! The Redis linearizability summary that `replay --linearizability` (and the real-server
//! check) print: `racelab_sim::explore::linear` over a history.

use racelab_core::History;
use racelab_sim::explore::linear::{LINEAR_BOUND, LinearReport, ObjectVerdict, check_redis};
use serde_json::{Value, json};

/// Checks `history`'s Redis keys.
pub(crate) fn check(history: &History) -> LinearReport {
    check_redis(history, LINEAR_BOUND)
}

/// How many objects not linearizable or undecided the text lists (JSON lists every key).
const LISTED_MAX: usize = 10;

/// The report as text lines: a summary, then one line per object not linearizable (its keys
/// and the operation that could not be placed) or undecided (why), at most [`LISTED_MAX`].
pub(crate) fn lines(history: &History, report: &LinearReport) -> Vec<String> {
    let mut out = vec![format!("Redis linearizability: {report}")];
    let listed: Vec<_> = report
        .objects
        .iter()
        .filter(|o| !matches!(o.verdict, ObjectVerdict::Linearizable))
        .collect();
    if listed.len() > LISTED_MAX {
        out.push(format!(
            "  the first {LISTED_MAX} of {} objects not linearizable or undecided:",
            listed.len()
        ));
    }
    for o in listed.into_iter().take(LISTED_MAX) {
        match &o.verdict {
            ObjectVerdict::Linearizable => {}
            ObjectVerdict::NotLinearizable { prefix, stuck } => {
                let op = &history.ops[*stuck];
                out.push(format!(
                    "  not linearizable: {} ({} operations): after {} consistent ones, {} by {} invoked at {} cannot be placed",
                    o.keys.join(", "),
                    o.operations,
                    prefix.len(),
                    op.op,
                    history.name(op.process),
                    op.invoked_at
                ));
            }
            ObjectVerdict::Unknown(why) => {
                out.push(format!("  undecided: {}: {why}", o.keys.join(", ")));
            }
        }
    }
    out
}

/// The report as JSON: counts and the keys of the objects not linearizable.
pub(crate) fn json(report: &LinearReport) -> Value {
    let (ok, bad, unknown) = report.counts();
    json!({
        "objects": report.objects.len(),
        "linearizable": ok,
        "not_linearizable": bad,
        "undecided": unknown,
        "violating_keys": report.violating_keys(),
    })
}
