//! The routing family's properties and oracles (R-000-15), read from the history alone.
//!
//! - P1: no user request is routed to an endpoint that is DOWN at its instance, probes
//!   excepted. An endpoint is DOWN at an instance once `k` consecutive failures of it are
//!   recorded there (a 401 at once), and stays DOWN until a success recorded there that
//!   started after the latest of those failures (a probe's, after a 401): the freshest
//!   evidence decides, as document 001's generation rule does. Blocks are ordered by the
//!   sequence number the simulation stamps on each.
//! - P2: the shared per-endpoint counters lose no update: each accepted write of a counter
//!   (not lost by a failover) leaves it equal to the number of accepted writes so far (a
//!   Redis restart empties it).

use std::collections::BTreeMap;

use super::AttemptId;
use super::pool::{PoolBlock, PoolResult};
use super::tag::RouteTag;
use crate::health::Observation;
use crate::history::{History, OpRecord};
use crate::ids::EndpointId;
use crate::ops::{KvOp, KvReply, Reply, StoreOp};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::Timestamp;

/// P1.
pub const P1: Property = Property::always(
    "P1",
    "no request is routed to an endpoint that is DOWN at its instance (k consecutive recorded \
     failures, none cleared by a fresher success), probes excepted",
);
/// P2.
pub const P2: Property = Property::always(
    "P2",
    "a shared per-endpoint counter equals the number of updates of it the store accepted: no \
     lost update",
);
/// An endpoint went DOWN at an instance (the window P1 is about opened).
pub const ENDPOINT_DOWN: Property = Property::sometimes(
    "endpoint-down",
    "an instance recorded k consecutive failures of an endpoint",
);
/// The gate held a DOWN endpoint back.
pub const DOWN_SKIPPED: Property = Property::protection(
    "down-endpoint-skipped",
    "a request was routed while an endpoint was DOWN at its instance, to another endpoint",
);
/// A probe brought an endpoint back.
pub const PROBE_RECOVERED: Property = Property::sometimes(
    "probe-recovered",
    "a probe's success brought a DOWN endpoint back",
);
/// Two processes updated one counter at overlapping times.
pub const STATS_OVERLAPPED: Property = Property::sometimes(
    "stats-updates-overlapped",
    "two processes updated one shared counter at overlapping times",
);

/// One endpoint at one instance, as the recorded outcomes show it.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    consecutive: u32,
    auth_failed: bool,
    last_failure: Option<u64>,
    last_failure_at: Option<Timestamp>,
}

impl Seen {
    fn down(&self, k: u32) -> bool {
        self.auth_failed || self.consecutive >= k
    }
}

fn local(op: &OpRecord) -> Option<(u64, &PoolResult)> {
    match &op.result {
        Some(Reply::Local(r)) => r.result.get::<PoolResult>().map(|res| (r.seq, res)),
        _ => None,
    }
}

fn block(op: &OpRecord) -> Option<&PoolBlock> {
    match &op.op {
        StoreOp::Local(b) => b.get::<PoolBlock>(),
        _ => None,
    }
}

/// P1 with `k` = `threshold`, and the counts of `endpoint-down`, `down-endpoint-skipped` and
/// `probe-recovered`.
pub fn down_endpoints_avoided(history: &History, threshold: u32) -> Verdict {
    let mut verdict = Verdict::default();
    let mut steps: Vec<(u64, usize)> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| RouteTag::of(&op.tag).is_some())
        .filter_map(|(i, op)| local(op).map(|(seq, _)| (seq, i)))
        .collect();
    steps.sort_unstable();
    let mut seen: BTreeMap<(u32, EndpointId), Seen> = BTreeMap::new();
    // Each attempt's start (its block's sequence number) and whether it is a probe.
    let mut started: BTreeMap<(u32, AttemptId), (u64, bool)> = BTreeMap::new();
    let (mut downs, mut skipped, mut recovered) = (0, 0, 0);
    let mut flagged = false;
    for (seq, i) in steps {
        let op = &history.ops[i];
        let Some((_, result)) = local(op) else {
            continue;
        };
        let (instance, pick) = match RouteTag::of(&op.tag) {
            Some(RouteTag::Pick { instance }) => (*instance, true),
            Some(RouteTag::PollProbe { instance }) | Some(RouteTag::Record { instance, .. }) => {
                (*instance, false)
            }
            _ => continue,
        };
        match (block(op), result) {
            (
                Some(PoolBlock::Pick { .. } | PoolBlock::PollProbe { .. }),
                PoolResult::Attempt(a),
            ) => {
                started.insert((instance, a.id), (seq, a.probe));
                if !pick || a.probe {
                    continue;
                }
                let state = seen
                    .get(&(instance, a.endpoint))
                    .copied()
                    .unwrap_or_default();
                if state.down(threshold) {
                    if !flagged {
                        flagged = true;
                        verdict.violations.push(Violation {
                            invariant: P1.name.into(),
                            explanation: format!(
                                "{} (instance {instance}) routed a request to {} at {} although \
                                 {} was DOWN there: {} consecutive recorded failures{}, the \
                                 last at {}, and no fresher success",
                                history.name(op.process),
                                a.endpoint,
                                op.applied_at.unwrap_or(op.invoked_at),
                                a.endpoint,
                                state.consecutive,
                                if state.auth_failed {
                                    " (a 401 among them)"
                                } else {
                                    ""
                                },
                                state
                                    .last_failure_at
                                    .map_or("?".to_string(), |t| t.to_string()),
                            ),
                            ops: vec![i],
                        });
                    }
                } else if seen
                    .iter()
                    .any(|((inst, _), s)| *inst == instance && s.down(threshold))
                {
                    skipped += 1;
                }
            }
            (
                Some(PoolBlock::Record {
                    attempt,
                    observation,
                    ..
                }),
                PoolResult::Recorded(endpoint),
            ) => {
                let (start, probe) = match started.get(&(instance, *attempt)) {
                    Some((s, p)) => (Some(*s), *p),
                    None => (None, false),
                };
                let state = seen.entry((instance, *endpoint)).or_default();
                let was_down = state.down(threshold);
                match observation {
                    Observation::Success => {
                        let fresh = start.is_some_and(|s| state.last_failure.is_none_or(|f| s > f));
                        if fresh && (!state.auth_failed || probe) {
                            if was_down && probe {
                                recovered += 1;
                            }
                            *state = Seen::default();
                        }
                    }
                    other => {
                        state.consecutive = state.consecutive.saturating_add(1);
                        state.auth_failed |= *other == Observation::Unauthorized;
                        state.last_failure = Some(seq);
                        state.last_failure_at = op.applied_at;
                        if !was_down && state.down(threshold) {
                            downs += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    verdict.count(ENDPOINT_DOWN.name, downs);
    verdict.count(DOWN_SKIPPED.name, skipped);
    verdict.count(PROBE_RECOVERED.name, recovered);
    verdict
}

/// One accepted write of a shared counter: when, what it left, by whom.
struct Write {
    at: Timestamp,
    value: i64,
    index: usize,
}

fn counter_write(op: &OpRecord) -> Option<(String, i64)> {
    if !matches!(RouteTag::of(&op.tag), Some(RouteTag::StatsWrite { .. })) {
        return None;
    }
    if !op.succeeded() || op.lost_at.is_some() {
        return None;
    }
    match (&op.op, &op.result) {
        (StoreOp::Kv(KvOp::Set { key, value, .. }), _) => {
            value.parse::<i64>().ok().map(|v| (key.clone(), v))
        }
        (StoreOp::Kv(KvOp::IncrBy { key, .. }), Some(Reply::Kv(KvReply::Int(v)))) => {
            Some((key.clone(), *v))
        }
        _ => None,
    }
}

fn counter_key(op: &OpRecord) -> Option<&str> {
    if !matches!(
        RouteTag::of(&op.tag),
        Some(RouteTag::StatsRead { .. } | RouteTag::StatsWrite { .. })
    ) {
        return None;
    }
    match &op.op {
        StoreOp::Kv(KvOp::Get { key } | KvOp::Set { key, .. } | KvOp::IncrBy { key, .. }) => {
            Some(key)
        }
        _ => None,
    }
}

/// P2, and the count of `stats-updates-overlapped`.
pub fn counters_exact(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let restarts: Vec<Timestamp> = history.redis_restarts();
    let mut writes: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        if let (Some((key, value)), Some(at)) = (counter_write(op), op.applied_at) {
            writes
                .entry(key)
                .or_default()
                .push(Write { at, value, index });
        }
    }
    for (key, mut ws) in writes {
        ws.sort_by_key(|w| (w.at, w.value, w.index));
        let mut count: i64 = 0;
        let mut restart = 0;
        for w in &ws {
            while restart < restarts.len() && restarts[restart] < w.at {
                count = 0;
                restart += 1;
            }
            // A restart at the write's own instant may have come before or after it.
            if restart < restarts.len() && restarts[restart] == w.at && w.value == 1 {
                count = 0;
                restart += 1;
            }
            if w.value != count + 1 {
                let op = &history.ops[w.index];
                verdict.violations.push(Violation {
                    invariant: P2.name.into(),
                    explanation: format!(
                        "{} left {key} = {} at {}, but {} update(s) of it had been accepted \
                         before: {} lost",
                        history.name(op.process),
                        w.value,
                        w.at,
                        count,
                        if w.value <= count {
                            format!("{} update(s) were", count + 1 - w.value)
                        } else {
                            "no update was, yet it counted more".to_string()
                        },
                    ),
                    ops: vec![w.index],
                });
                break;
            }
            count = w.value;
        }
    }
    // Overlapping updates of one counter by two processes: the window a lost update needs.
    let mut by_key: BTreeMap<&str, Vec<(Timestamp, Timestamp, usize)>> = BTreeMap::new();
    for op in &history.ops {
        if let Some(key) = counter_key(op) {
            let end = op.completed_at.or(op.applied_at).unwrap_or(op.invoked_at);
            by_key
                .entry(key)
                .or_default()
                .push((op.invoked_at, end, op.process.0 as usize));
        }
    }
    let mut overlaps = 0;
    for spans in by_key.values() {
        for (i, a) in spans.iter().enumerate() {
            overlaps += spans[i + 1..]
                .iter()
                .filter(|b| b.2 != a.2 && a.0 <= b.1 && b.0 <= a.1)
                .count() as u64;
        }
    }
    verdict.count(STATS_OVERLAPPED.name, overlaps);
    verdict
}
