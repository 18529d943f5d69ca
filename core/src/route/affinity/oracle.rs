//! R-000-07's invariants, read from the history: the affinity record's writes and clears in
//! the order Redis applied them (a write a failover lost never happened, a Redis restart
//! empties the record), the attempts' outcomes, and the bandit credits.
//!
//! - A1: the record names `U` only by a write of a request whose final attempt succeeded on
//!   `U` (a restarted process handles its request afresh: requests are counted per
//!   incarnation).
//! - A2: a write by a request that started earlier (a smaller start sequence) never
//!   overwrites the record of a request that started later.
//! - A3: a clear after a failure observed on `U` never removes a record naming another
//!   upstream.
//! - A4: each attempt's outcome is credited at most once, and only to the upstream that
//!   served that attempt. (At most, not exactly: a credit a Redis outage swallowed is lost
//!   statistics, not a misattribution.)

use std::collections::BTreeMap;

use super::{AffinityTag, RequestRef};
use crate::history::{History, OpRecord};
use crate::ids::EndpointId;
use crate::ops::{KvOp, KvReply, Reply, ScriptName, StoreOp};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::Timestamp;

/// A1.
pub const A1: Property = Property::always(
    "A1",
    "the affinity names U only by a write of a request whose final attempt succeeded on U",
);
/// A2.
pub const A2: Property = Property::always(
    "A2",
    "a write by a request that started earlier never overwrites one by a request that \
     started later",
);
/// A3.
pub const A3: Property = Property::always(
    "A3",
    "a failure observed on U never clears an affinity that names another upstream",
);
/// A4.
pub const A4: Property = Property::always(
    "A4",
    "each attempt's outcome is credited at most once, to the upstream that served it",
);
/// An older request's affinity write was refused.
pub const STALE_WRITE_REFUSED: Property = Property::protection(
    "stale-affinity-refused",
    "a write by a request that started before the record's writer was refused",
);
/// A failure's clear was refused.
pub const FOREIGN_CLEAR_REFUSED: Property = Property::protection(
    "foreign-clear-refused",
    "a failure's clear was refused: the record names another upstream or a newer request",
);
/// A retry on another upstream succeeded after a failure.
pub const FAILOVER_RETRY: Property = Property::sometimes(
    "failover-retry",
    "a request's retry on the other upstream succeeded after its first attempt failed",
);

fn tag(op: &OpRecord) -> Option<&AffinityTag> {
    AffinityTag::of(&op.tag)
}

fn int(op: &OpRecord) -> Option<i64> {
    match &op.result {
        Some(Reply::Kv(KvReply::Int(n))) => Some(*n),
        _ => None,
    }
}

/// Whether an applied write of the record took effect (`Some(true)`), was refused
/// (`Some(false)`), or failed (`None`).
fn took_effect(op: &OpRecord) -> Option<bool> {
    let n = int(op)?;
    match &op.op {
        StoreOp::Kv(KvOp::HSet { .. }) => Some(n >= 0),
        StoreOp::Kv(KvOp::Del { .. }) => Some(n > 0),
        StoreOp::Kv(KvOp::Script {
            script: ScriptName::SetIfNewer | ScriptName::CompareAndDeleteVersioned,
            ..
        }) => Some(n == 1),
        _ => None,
    }
}

/// A1 to A4, and the counts of the family's `sometimes` properties.
pub fn affinity(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    // Each request's attempts: number -> (endpoint, succeeded).
    let mut attempts: BTreeMap<RequestRef, BTreeMap<u32, (EndpointId, bool)>> = BTreeMap::new();
    for op in &history.ops {
        if let (
            Some(AffinityTag::Attempt {
                request,
                n,
                endpoint,
            }),
            Some(result),
        ) = (tag(op), &op.result)
        {
            let ok = matches!(result, Reply::Upstream(u) if u.status == 200);
            attempts
                .entry(*request)
                .or_default()
                .insert(*n, (*endpoint, ok));
        }
    }
    let final_success = |r: &RequestRef| -> Option<EndpointId> {
        let (_, (e, ok)) = attempts.get(r)?.iter().next_back()?;
        ok.then_some(*e)
    };
    let retried = attempts
        .values()
        .filter(|a| a.get(&1).is_some_and(|x| !x.1) && a.get(&2).is_some_and(|x| x.1))
        .count() as u64;
    verdict.count(FAILOVER_RETRY.name, retried);

    let restarts: Vec<Timestamp> = history.redis_restarts();
    let mut record_ops: Vec<(Timestamp, usize)> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            matches!(
                tag(op),
                Some(AffinityTag::Set { .. } | AffinityTag::Clear { .. })
            )
        })
        .filter(|(_, op)| op.lost_at.is_none())
        .filter_map(|(i, op)| op.applied_at.map(|t| (t, i)))
        .collect();
    record_ops.sort_unstable();
    let mut record: Option<(RequestRef, EndpointId, usize)> = None;
    let mut restart = 0;
    let (mut flagged1, mut flagged2, mut flagged3) = (false, false, false);
    let (mut refused_writes, mut refused_clears) = (0, 0);
    for (at, i) in record_ops {
        // A restart empties the record; one at this very instant is taken to come after
        // the write (the weaker check: never a false alarm).
        while restart < restarts.len() && restarts[restart] < at {
            record = None;
            restart += 1;
        }
        let op = &history.ops[i];
        let Some(effect) = took_effect(op) else {
            continue;
        };
        let who = history.name(op.process);
        match tag(op) {
            Some(AffinityTag::Set { request, endpoint }) if effect => {
                if !flagged1 && final_success(request) != Some(*endpoint) {
                    flagged1 = true;
                    verdict.violations.push(Violation {
                        invariant: A1.name.into(),
                        explanation: format!(
                            "{who} (request #{}) set the affinity to {endpoint} at {at}, but its \
                             final attempt {}",
                            request.seq,
                            match attempts.get(request).and_then(|a| a.iter().next_back()) {
                                Some((n, (e, true))) => format!("(#{n}) succeeded on {e}"),
                                Some((n, (e, false))) => format!("(#{n}) failed on {e}"),
                                None => "is unknown".to_string(),
                            }
                        ),
                        ops: vec![i],
                    });
                }
                if let Some((writer, upstream, j)) = record
                    && writer.seq > request.seq
                    && !flagged2
                {
                    flagged2 = true;
                    verdict.violations.push(Violation {
                        invariant: A2.name.into(),
                        explanation: format!(
                            "{who} (request #{}) set the affinity to {endpoint} at {at}, over \
                             {upstream} written by request #{}, which started later",
                            request.seq, writer.seq
                        ),
                        ops: vec![j, i],
                    });
                }
                record = Some((*request, *endpoint, i));
            }
            Some(AffinityTag::Set { .. }) => refused_writes += 1,
            Some(AffinityTag::Clear { request, endpoint }) if effect => {
                if let Some((writer, upstream, j)) = record
                    && upstream != *endpoint
                    && !flagged3
                {
                    flagged3 = true;
                    verdict.violations.push(Violation {
                        invariant: A3.name.into(),
                        explanation: format!(
                            "{who} (request #{}) cleared the affinity at {at} after a failure \
                             on {endpoint}, but it named {upstream} (written by request #{})",
                            request.seq, writer.seq
                        ),
                        ops: vec![j, i],
                    });
                }
                record = None;
            }
            Some(AffinityTag::Clear { .. }) if record.is_some() => refused_clears += 1,
            _ => {}
        }
    }
    verdict.count(STALE_WRITE_REFUSED.name, refused_writes);
    verdict.count(FOREIGN_CLEAR_REFUSED.name, refused_clears);

    // A4: credits that took effect, per attempt.
    let mut credits: BTreeMap<(RequestRef, u32), Vec<(EndpointId, usize)>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Some(AffinityTag::Credit {
            request,
            n,
            endpoint,
        }) = tag(op)
            && op.lost_at.is_none()
            && int(op).is_some()
        {
            credits
                .entry((*request, *n))
                .or_default()
                .push((*endpoint, i));
        }
    }
    for ((request, n), cs) in credits {
        let served = attempts.get(&request).and_then(|a| a.get(&n)).map(|x| x.0);
        let wrong = cs.iter().find(|(e, _)| Some(*e) != served);
        if cs.len() > 1 || wrong.is_some() {
            let (e, i) = wrong.copied().unwrap_or(cs[cs.len() - 1]);
            verdict.violations.push(Violation {
                invariant: A4.name.into(),
                explanation: format!(
                    "{} credited attempt #{n} of request #{} to {e} ({} credit(s) in all), but \
                     that attempt was served by {}",
                    history.name(history.ops[i].process),
                    request.seq,
                    cs.len(),
                    served.map_or("no upstream".to_string(), |s| s.to_string()),
                ),
                ops: cs.iter().map(|c| c.1).collect(),
            });
            break;
        }
    }
    verdict
}
