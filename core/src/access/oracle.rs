//! I-PERM over a history of permission decisions, and the family's coverage.
//!
//! The truth is the role graph as each committed change left it (the admin's `COMMIT`s in
//! the order the database applied them). A decision of a request that started at `s` and
//! decided at `d` is consistent if it agrees with the user's effective permissions in some
//! state current within `[s - Δ, d]`: a request may be decided on permissions up to Δ old,
//! never older, for any user the change affected, directly or through an included role.

use std::collections::BTreeSet;

use super::perm::{PermDecision, PermTag, RoleChange, RoleGraph};
use crate::history::History;
use crate::ops::{Reply, SqlReply};
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
        let window = states
            .iter()
            .enumerate()
            .filter(|(i, (t, _))| *i == current_at_lo || (*t > lo && *t <= note.at));
        let agrees = window
            .clone()
            .any(|(_, (_, g))| g.effective(&d.user).contains(&d.perm) == d.allowed);
        if !agrees {
            let truth: BTreeSet<String> = window
                .last()
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
