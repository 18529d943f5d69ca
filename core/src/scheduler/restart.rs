//! R-004-04: the job (and its payload) lives in the scheduler instance's memory, so a crash
//! or restart of the instance between a job's submission and its result loses the job. The
//! race runs [`super::ws`]'s machines, whose variant axis is this race's too:
//!
//! | variant | what survives a restart of the instance | the client's retry | who delivers the result |
//! |---|---|---|---|
//! | `Buggy` | nothing of the job but its row; the instance's job id (`S1-<start>-<n>`) is unknown to the new incarnation | resumes, hears `unknown`, submits again: a new job id, a second execution | the instance that accepted it, over the connection it held: after a restart, nobody |
//! | `DocFix` | the same (the document's short-term fix adds client retry and the balancer's session persistence, which does not survive the restart itself) | the same, sent back to the same instance while it is up | the same |
//! | `Correct` | the job record, written durably under the client's stable id before the client is told it was accepted | resolves to the same job (`INSERT ... ON CONFLICT DO NOTHING`) | any instance the client reaches, from the table |
//!
//! The properties are [`super::ws`]'s (one execution, delivered once, no stale connection);
//! this module adds what a run must show to have exercised the race
//! ([`restart_coverage`]): [`RESTART_IN_FLIGHT`] (an instance crashed while a submitted job
//! had no result yet) and [`RESULT_AFTER_RESTART`] (a job's result reached its client on a
//! connection opened after such a crash).

use std::collections::BTreeMap;

use crate::history::{Fault, History};
use crate::ops::{ConnId, PushReply, Reply};
use crate::oracle::{Property, Verdict};
use crate::time::Timestamp;

use super::ws::{WsNote, WsTag};

/// A scheduler instance crashed while a job was in flight (the race's window).
pub const RESTART_IN_FLIGHT: Property = Property::sometimes(
    "restart-in-flight",
    "a scheduler instance crashed and restarted after a client submitted a job and before the \
     client received its result",
);

/// A result reached its client over a connection opened after a crash (the fix at work).
pub const RESULT_AFTER_RESTART: Property = Property::sometimes(
    "result-after-restart",
    "a client received a job's result on a connection it opened after a scheduler instance \
     crashed with the job in flight",
);

/// Counts [`RESTART_IN_FLIGHT`] (jobs, by client and the client's name for the job, with a
/// crash of one of `instances` that restarted later, between the client's first submission
/// and its first reception of the result, or the end of the run) and [`RESULT_AFTER_RESTART`]
/// (those of them whose result the client received on a connection opened after that crash).
pub fn restart_coverage(history: &History, instances: &[&str], verdict: &mut Verdict) {
    // Crashes of an instance that came back.
    let mut crashes: Vec<Timestamp> = Vec::new();
    for (i, f) in history.faults.iter().enumerate() {
        let Fault::Crash { process } = f.fault else {
            continue;
        };
        let restarted = history.faults[i..]
            .iter()
            .any(|r| matches!(r.fault, Fault::Restart { process: p } if p == process));
        if restarted && instances.contains(&history.name(process).as_str()) {
            crashes.push(f.at);
        }
    }
    // When each job was first submitted, and when each connection was opened.
    let mut submitted: BTreeMap<(String, String), Timestamp> = BTreeMap::new();
    let mut opened: BTreeMap<ConnId, Timestamp> = BTreeMap::new();
    for op in &history.ops {
        match (op.tag.get::<WsTag>(), &op.result) {
            (Some(WsTag::Submit { request }), _) => {
                submitted
                    .entry((history.name(op.process), request.clone()))
                    .or_insert(op.invoked_at);
            }
            (Some(WsTag::Connect), Some(Reply::Push(PushReply::Connected { conn, .. }))) => {
                if let Some(at) = op.completed_at {
                    opened.insert(*conn, at);
                }
            }
            _ => {}
        }
    }
    let mut received: BTreeMap<(String, String), (Timestamp, ConnId)> = BTreeMap::new();
    for n in &history.notes {
        if let Some(WsNote::Received {
            client,
            request,
            conn,
            ..
        }) = n.note.get::<WsNote>()
        {
            received
                .entry((client.clone(), request.clone()))
                .or_insert((n.at, *conn));
        }
    }
    let mut in_flight = 0;
    let mut after = 0;
    for (job, from) in &submitted {
        let got = received.get(job);
        let until = got.map_or(Timestamp::from_ms(u64::MAX), |(at, _)| *at);
        let Some(crash) = crashes.iter().find(|c| **c > *from && **c < until) else {
            continue;
        };
        in_flight += 1;
        let reopened = got.and_then(|(_, conn)| opened.get(conn));
        after += u64::from(reopened.is_some_and(|at| at >= crash));
    }
    verdict.count(RESTART_IN_FLIGHT.name, in_flight);
    verdict.count(RESULT_AFTER_RESTART.name, after);
}
