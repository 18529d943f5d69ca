//! I-PERM over a history of permission decisions (R-000-11), B1 and B2 over a history of
//! API-key decisions (R-000-12), and the family's coverage.
//!
//! The truth is the role graph as each committed change left it (the admin's `COMMIT`s in
//! the order the database applied them). A decision of a request that started at `s` and
//! decided at `d` is consistent if it agrees with the user's effective permissions in some
//! state current within `[s - Δ, d]`: a request may be decided on permissions up to Δ old,
//! never older, for any user the change affected, directly or through an included role.

use std::collections::BTreeSet;

use super::perm::{PermDecision, PermTag, RoleChange, RoleGraph};
use super::revoke::{KeyDecision, KeyTag, Source};
use crate::history::History;
use crate::ops::{KvReply, Reply, SqlReply};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::{Duration, Timestamp};

/// I-PERM with the declared bound Δ.
pub const I_PERM: Property = Property::always(
    "I-PERM",
    "no request was decided on permissions older than Δ before it started, for any user a \
     role change affected (directly or through an included role)",
);
/// The race window opened: an instance that had cached a user before a change served that
/// user more than Δ after it.
pub const CACHED_ACROSS_CHANGE: Property = Property::sometimes(
    "cached-across-change",
    "an instance that had cached a user's permissions before a change served that user more \
     than Δ after the change committed",
);
/// Correct's protection: a fill computed under an epoch a change had retired.
pub const STALE_FILL_DEAD_KEY: Property = Property::protection(
    "stale-fill-dead-key",
    "a cache fill landed under an epoch that a committed change had already retired",
);
/// Correct's protection: a lost subscription made the instance forget its epoch.
pub const RECONNECT_FORGETS_EPOCH: Property = Property::protection(
    "reconnect-forgets-epoch",
    "a subscriber that lost its subscription marked the instance's epoch unknown",
);

/// The role graph after each committed change, from the initial one, in commit order.
pub fn states(
    history: &History,
    initial: &RoleGraph,
    changes: &[RoleChange],
) -> Vec<(Timestamp, RoleGraph)> {
    let mut commits: Vec<(Timestamp, usize, usize)> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match (op.tag.get::<PermTag>(), &op.result) {
            (Some(PermTag::Commit { change }), Some(Reply::Sql(SqlReply::Committed))) => {
                Some((op.applied_at?, i, *change))
            }
            _ => None,
        })
        .collect();
    commits.sort();
    let mut graph = initial.clone();
    let mut out = vec![(Timestamp::ZERO, graph.clone())];
    for (at, _, change) in commits {
        if let Some(c) = changes.get(change)
            && let Some(role) = graph.roles.get_mut(&c.role)
        {
            role.0.clone_from(&c.perms);
        }
        out.push((at, graph.clone()));
    }
    out
}

/// The operations of request `request`.
fn request_ops(history: &History, request: u32) -> impl Iterator<Item = (usize, Timestamp)> {
    history.ops.iter().enumerate().filter_map(move |(i, op)| {
        let tag = op.tag.get::<PermTag>()?;
        (tag.request() == Some(request)).then_some((i, op.invoked_at))
    })
}

/// When request `request`'s first operation was invoked (its start).
fn started(history: &History, request: u32) -> Option<Timestamp> {
    request_ops(history, request).map(|(_, at)| at).min()
}

/// I-PERM: every decision agrees with a state current within `[start - delta, decision]`.
pub fn i_perm(
    history: &History,
    initial: &RoleGraph,
    changes: &[RoleChange],
    delta: Duration,
) -> Verdict {
    let states = states(history, initial, changes);
    let mut verdict = Verdict::default();
    for note in &history.notes {
        let Some(d) = note.note.get::<PermDecision>() else {
            continue;
        };
        let start = started(history, d.request).unwrap_or(note.at);
        let lo = start - delta;
        let current_at_lo = states.iter().rposition(|(t, _)| *t <= lo).unwrap_or(0);
        let mut window = states
            .iter()
            .enumerate()
            .filter(|(i, (t, _))| *i == current_at_lo || (*t > lo && *t <= note.at));
        let agrees = window
            .clone()
            .any(|(_, (_, g))| g.effective(&d.user).contains(&d.perm) == d.allowed);
        if !agrees {
            let truth: BTreeSet<String> = window
                .next_back()
                .map(|(_, (_, g))| g.effective(&d.user))
                .unwrap_or_default();
            let ops = request_ops(history, d.request).map(|(i, _)| i).collect();
            verdict.violations.push(Violation {
                invariant: I_PERM.name.into(),
                explanation: format!(
                    "{} (r{}, started {start}) {} {} {} at {} on {{{}}}, but since {lo} (Δ = \
                     {delta} before its start) {}'s permissions were {{{}}}",
                    history.name(note.process),
                    d.request,
                    if d.allowed { "allowed" } else { "denied" },
                    d.user,
                    d.perm,
                    note.at,
                    d.perms,
                    d.user,
                    truth.iter().cloned().collect::<Vec<_>>().join(",")
                ),
                ops,
            });
        }
    }
    verdict
}

/// Counts the family's `sometimes` properties.
pub fn perm_coverage(history: &History, delta: Duration, verdict: &mut Verdict) {
    let commits: Vec<Timestamp> = history
        .ops
        .iter()
        .filter(|op| {
            matches!(op.tag.get::<PermTag>(), Some(PermTag::Commit { .. }))
                && matches!(op.result, Some(Reply::Sql(SqlReply::Committed)))
        })
        .filter_map(|op| op.applied_at)
        .collect();
    let fills: Vec<(Timestamp, u32, &str, Option<i64>)> = history
        .ops
        .iter()
        .filter_map(|op| match op.tag.get::<PermTag>() {
            Some(PermTag::Fill {
                instance,
                user,
                epoch,
                ..
            }) => Some((op.applied_at?, *instance, user.as_str(), *epoch)),
            _ => None,
        })
        .collect();
    let mut across = 0;
    for note in &history.notes {
        let Some(d) = note.note.get::<PermDecision>() else {
            continue;
        };
        let start = started(history, d.request).unwrap_or(note.at);
        let hit = commits.iter().any(|c| {
            *c + delta < start
                && fills
                    .iter()
                    .any(|f| f.0 < *c && f.1 == d.instance && f.2 == d.user)
        });
        across += u64::from(hit);
    }
    let dead = fills
        .iter()
        .filter(|(at, _, _, epoch)| {
            epoch.is_some_and(|e| commits.iter().filter(|c| *c <= at).count() as i64 > e)
        })
        .count() as u64;
    let mut listened = BTreeSet::new();
    let mut forgot = 0;
    for op in &history.ops {
        match op.tag.get::<PermTag>() {
            Some(PermTag::Listen) => {
                listened.insert(op.process);
            }
            Some(PermTag::OnMessage { reconnect: true }) if listened.contains(&op.process) => {
                forgot += 1;
            }
            _ => {}
        }
    }
    verdict.count(CACHED_ACROSS_CHANGE.name, across);
    verdict.count(STALE_FILL_DEAD_KEY.name, dead);
    verdict.count(RECONNECT_FORGETS_EPOCH.name, forgot);
}

// ---------------------------------------------------------------------------------------------
// R-000-12

/// B1 (safety) with the declared bound.
pub const B1: Property = Property::always(
    "B1",
    "no request starting more than Δ after a revocation accepted the key while it stayed \
     revoked (whatever Redis lost or failed)",
);
/// B2 (liveness): the final probes agree with the key's final state.
pub const B2: Property = Property::eventually(
    "B2",
    "once every fault is over, every instance's final probe decides as the key's final \
     state says (an un-revoked key is accepted again)",
);
/// The window opened: Redis lost a write of a revocation or un-revocation.
pub const REVOCATION_LOST: Property = Property::sometimes(
    "revocation-lost",
    "a failover or a Redis restart lost a write of the admin's (revocation or un-revocation)",
);
/// The accelerator worked: a rejection decided by Correct's Redis entry.
pub const REJECTED_FROM_CACHE: Property = Property::sometimes(
    "rejected-from-cache",
    "a request was rejected by the Redis entry of a revocation, without a database read",
);
/// Correct's protection: a Redis miss or error sent the decision to the database.
pub const DB_DECIDED_AFTER_REDIS_FAILED: Property = Property::protection(
    "db-decided-after-redis-failed",
    "a request whose Redis check failed (an error or a timeout) was decided by the database",
);

/// The key's state after each of the admin's acknowledged deciding writes, from
/// "not revoked" at the start.
fn key_states(history: &History) -> Vec<(Timestamp, bool)> {
    let mut states: Vec<(Timestamp, bool)> = history
        .ops
        .iter()
        .filter_map(|op| match op.tag.get::<KeyTag>() {
            Some(KeyTag::Decide { revoked }) if op.succeeded() => Some((op.applied_at?, *revoked)),
            _ => None,
        })
        .collect();
    states.sort();
    states.insert(0, (Timestamp::ZERO, false));
    states
}

fn key_request_start(history: &History, request: u32) -> Option<Timestamp> {
    history
        .ops
        .iter()
        .filter(|op| op.tag.get::<KeyTag>().and_then(KeyTag::request) == Some(request))
        .map(|op| op.invoked_at)
        .min()
}

fn key_request_ops(history: &History, request: u32) -> Vec<usize> {
    history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.tag.get::<KeyTag>().and_then(KeyTag::request) == Some(request))
        .map(|(i, _)| i)
        .collect()
}

/// B1 and B2 over the instances' decisions.
pub fn revocation(history: &History, delta: Duration) -> Verdict {
    let states = key_states(history);
    let final_revoked = states.last().is_some_and(|s| s.1);
    let mut verdict = Verdict::default();
    for note in &history.notes {
        let Some(d) = note.note.get::<KeyDecision>() else {
            continue;
        };
        let start = key_request_start(history, d.request).unwrap_or(note.at);
        if d.accepted {
            let lo = start - delta;
            let at_lo = states.iter().rposition(|(t, _)| *t <= lo).unwrap_or(0);
            let ok = states
                .iter()
                .enumerate()
                .filter(|(i, (t, _))| *i == at_lo || (*t > lo && *t <= note.at))
                .any(|(_, (_, revoked))| !revoked);
            if !ok {
                let since = states.get(at_lo).map_or(Timestamp::ZERO, |s| s.0);
                verdict.violations.push(Violation {
                    invariant: B1.name.into(),
                    explanation: format!(
                        "{} (r{}, started {start}) accepted the key at {} by {:?}, but it was \
                         revoked at {since}, more than Δ = {delta} before",
                        history.name(note.process),
                        d.request,
                        note.at,
                        d.by
                    ),
                    ops: key_request_ops(history, d.request),
                });
            }
        }
        if d.probe && d.accepted == final_revoked {
            verdict.violations.push(Violation {
                invariant: B2.name.into(),
                explanation: format!(
                    "{}'s final probe r{} {} the key at {} (by {:?}), but the key is {}",
                    history.name(note.process),
                    d.request,
                    if d.accepted { "accepted" } else { "rejected" },
                    note.at,
                    d.by,
                    if final_revoked {
                        "revoked"
                    } else {
                        "not revoked"
                    }
                ),
                ops: key_request_ops(history, d.request),
            });
        }
    }
    verdict
}

/// Counts R-000-12's `sometimes` properties.
pub fn revocation_coverage(history: &History, verdict: &mut Verdict) {
    let lost = history
        .ops
        .iter()
        .filter(|op| {
            matches!(
                op.tag.get::<KeyTag>(),
                Some(KeyTag::Decide { .. } | KeyTag::Propagate { .. })
            ) && op.lost_at.is_some()
        })
        .count() as u64;
    let from_cache = history
        .notes
        .iter()
        .filter_map(|n| n.note.get::<KeyDecision>())
        .filter(|d| !d.accepted && d.by == Source::Cache)
        .count() as u64;
    let failed_then_db = history
        .ops
        .iter()
        .filter(|op| {
            matches!(
                op.tag.get::<KeyTag>(),
                Some(KeyTag::Check {
                    source: Source::Cache,
                    ..
                })
            ) && (op.timed_out
                || !matches!(op.result, Some(Reply::Kv(KvReply::Bulk(_) | KvReply::Nil))))
        })
        .filter(|op| {
            let request = op.tag.get::<KeyTag>().and_then(KeyTag::request);
            history.notes.iter().any(|n| {
                n.note
                    .get::<KeyDecision>()
                    .is_some_and(|d| Some(d.request) == request && d.by == Source::Db)
            })
        })
        .count() as u64;
    verdict.count(REVOCATION_LOST.name, lost);
    verdict.count(REJECTED_FROM_CACHE.name, from_cache);
    verdict.count(DB_DECIDED_AFTER_REDIS_FAILED.name, failed_then_db);
}
