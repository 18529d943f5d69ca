//! The scheduler family's properties and oracles, all read from the history: which scripts
//! the store applied (and kept: a write a failover or restart lost never happened), and what
//! they answered.
//!
//! - L2 (R-004-01): no job is bound to a node whose last kept heartbeat or registration is
//!   older than [`T_DEAD`] at the moment of the binding.
//! - F1 (R-004-02): a result is accepted only from the node and epoch the job is currently
//!   bound to.
//! - J3 (R-004-03): no job is bound to a node the node-offline script took offline, until
//!   that node heartbeats or registers again (the split selection binds after the script
//!   looked at the node's jobs).
//! - I-JOB: no job has more than one accepted result; and (eventually) every submitted job's
//!   outcome was delivered (its result, or its timeout) by the end of the run.
//! - R-004-06, the timeout finalize against a late completion:
//!   - J2, defined on leases: a job's right to an outcome is held by the node its binding
//!     names for as long as the binding's lease lasts (the binding key's TTL; with the job
//!     FSM in Redis, as long as the job's state is not terminal), and the timeout finalize
//!     takes it by a terminal transition. J2 is that at most one holder ever turns the right
//!     into a terminal transition: in the store's order, a job has at most one kept terminal
//!     transition, counting every accepted result (`complete` answering 1) and every timeout
//!     finalize that wrote `timed_out` (answering `timed_out...`). A transition a failover
//!     lost (not kept) never happened.
//!   - I-JOB-notified: the client is told at most one outcome per job: never both its result
//!     and a timeout (the scheduler's notes; the same outcome told twice is one outcome).
//!   - B1: a running job's binding exists for its whole life: no timeout finalize finds the
//!     binding of a job whose state is still `running` gone (`lost`: the binding's TTL ran
//!     out before the job did). It is judged where the binding is used, by its only reader.

use std::collections::BTreeMap;

use super::tag::{SchedNote, SchedTag};
use crate::history::{History, OpRecord};
use crate::ops::{KvReply, Reply};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::{Duration, Timestamp};

/// The staleness bound of I-LIVE: the document's 60 s.
pub const T_DEAD: Duration = Duration::from_secs(60);

/// L2.
pub const L2: Property = Property::always(
    "L2",
    "no job is bound to a node whose last heartbeat is older than T_dead (60 s)",
);
/// F1.
pub const F1: Property = Property::always(
    "F1",
    "a result is accepted only from the node and lease epoch the job is currently bound to",
);
/// I-JOB's safety half.
pub const I_JOB: Property =
    Property::always("I-JOB", "no job has results accepted from two executions");
/// I-JOB's liveness half.
pub const I_JOB_DELIVERED: Property = Property::eventually(
    "I-JOB-delivered",
    "every submitted job's outcome was delivered by the end of the run",
);
/// Selection skipped a pool member whose lease was gone.
pub const DEAD_NODE_SKIPPED: Property = Property::sometimes(
    "dead-node-skipped",
    "selection found a pool member whose lease was gone and skipped it",
);
/// A stale result was refused.
pub const STALE_RESULT_REFUSED: Property = Property::protection(
    "stale-result-refused",
    "a result from a node or epoch the job is no longer bound to was refused",
);
/// J3 (R-004-03).
pub const J3: Property = Property::always(
    "J3",
    "no job is bound to a node that the node-offline script took offline, unless the node \
     heartbeated or registered since",
);
/// The node-offline script moved a job (the window of R-004-03 opened).
pub const OFFLINE_REDISPATCHED: Property = Property::sometimes(
    "offline-redispatched",
    "a node-offline script moved a job bound to a node whose registration was gone",
);
/// The node-offline script found no live node for a job and queued it.
pub const NO_NODE_LEFT: Property = Property::sometimes(
    "no-node-left",
    "a node-offline script found no live node to move a job to and queued it",
);
/// A node's heartbeat found its lease gone.
pub const LEASE_LOST: Property = Property::sometimes(
    "lease-lost",
    "a node came back after its lease expired and had to register again",
);

/// J2 (R-004-06; lease-based, see the module's docs).
pub const J2: Property = Property::always(
    "J2",
    "a job has at most one kept terminal transition: an accepted result or a timeout finalize",
);
/// I-JOB as the client sees it (R-004-06).
pub const I_JOB_NOTIFIED: Property = Property::always(
    "I-JOB-notified",
    "the client is told at most one outcome per job: never both its result and a timeout",
);
/// B1 (R-004-06).
pub const B1: Property = Property::always(
    "B1",
    "a running job's binding exists for its whole life: the timeout finalize never finds it gone",
);
/// A timeout finalize timed a job out.
pub const TIMED_OUT_FINALIZED: Property = Property::sometimes(
    "timed-out-finalized",
    "a timeout finalize moved a job to timed_out",
);
/// A node's result reached the store after its job's timeout finalize (the race's window).
pub const LATE_RESULT: Property = Property::sometimes(
    "late-result",
    "a node's result for a job reached the store after the job's timeout finalize",
);

fn tag(op: &OpRecord) -> Option<&SchedTag> {
    op.tag.get::<SchedTag>()
}

/// The store applied it, it was not lost, and it did not answer an error.
fn kept(op: &OpRecord) -> bool {
    op.applied_at.is_some()
        && op.lost_at.is_none()
        && !matches!(op.result, None | Some(Reply::Kv(KvReply::Error(_))))
}

fn bulk(op: &OpRecord) -> Option<&str> {
    match &op.result {
        Some(Reply::Kv(KvReply::Bulk(s))) => Some(s),
        _ => None,
    }
}

/// The bindings an operation made, each (job, node, epoch, members skipped): a dispatch,
/// reap or split binding that bound its job, or the jobs a node-offline script moved.
fn bindings(op: &OpRecord) -> Vec<(&str, &str, &str, u64)> {
    if !kept(op) {
        return Vec::new();
    }
    match tag(op) {
        Some(SchedTag::Dispatch { job } | SchedTag::Reap { job } | SchedTag::Bind { job }) => {
            bulk(op)
                .and_then(bound_line)
                .map(|(n, e, s)| (job.as_str(), n, e, s))
                .into_iter()
                .collect()
        }
        Some(SchedTag::Offline { .. }) => offline_iter(op)
            .filter_map(|line| {
                let (job, rest) = line.split_once(' ')?;
                bound_line(rest).map(|(n, e, s)| (job, n, e, s))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `bound N E skipped`: (node, epoch, skipped).
fn bound_line(line: &str) -> Option<(&str, &str, u64)> {
    let mut words = line.split(' ');
    if words.next()? != "bound" {
        return None;
    }
    let node = words.next()?;
    let epoch = words.next()?;
    let skipped = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    Some((node, epoch, skipped))
}

/// The lines of a kept node-offline script's reply after its first (`offline N`); empty if
/// the node was alive, or the script failed.
fn offline_lines(op: &OpRecord) -> &[Option<String>] {
    match &op.result {
        Some(Reply::Kv(KvReply::Array(lines))) if offline_took(op) => &lines[1..],
        _ => &[],
    }
}

/// Iterates the present lines of [`offline_lines`].
fn offline_iter(op: &OpRecord) -> impl Iterator<Item = &str> {
    offline_lines(op).iter().filter_map(|l| l.as_deref())
}

/// Ops in the order the store applied them (index into `history.ops`).
fn applied_order(history: &History) -> Vec<usize> {
    let mut order: Vec<usize> = (0..history.ops.len())
        .filter(|&i| history.ops[i].applied_at.is_some())
        .collect();
    order.sort_by_key(|&i| (history.ops[i].applied_at, i));
    order
}

/// L2: every kept binding names a node that heartbeated (or registered) successfully
/// within `t_dead` before it.
pub fn binding_liveness(history: &History, t_dead: Duration) -> Verdict {
    let mut verdict = Verdict::default();
    let mut last_beat: BTreeMap<&str, (Timestamp, usize)> = BTreeMap::new();
    for i in applied_order(history) {
        let op = &history.ops[i];
        let at = op.applied_at.unwrap_or(Timestamp::ZERO);
        match tag(op) {
            // A negative answer wrote nothing: `-1` the lease was gone, `-2` (R-004-08) the
            // call's configuration version was not the published one.
            Some(SchedTag::Register { node } | SchedTag::Heartbeat { node })
                if kept(op) && !matches!(op.result, Some(Reply::Kv(KvReply::Int(n))) if n < 0) =>
            {
                last_beat.insert(node.as_str(), (at, i));
            }
            _ => {}
        }
        for (job, node, _, _) in bindings(op) {
            let stale = match last_beat.get(node) {
                Some((beat, _)) => at.saturating_since(*beat) > t_dead,
                None => true,
            };
            if stale && verdict.violations.len() < 5 {
                let (beat, mut ops) = match last_beat.get(node) {
                    Some((b, j)) => (format!("its last heartbeat was at {b}"), vec![*j]),
                    None => ("it never heartbeated".into(), Vec::new()),
                };
                ops.push(i);
                verdict.violations.push(Violation {
                    invariant: L2.name.into(),
                    explanation: format!(
                        "{} bound {job} to {node} at {at}, but {beat}: older than T_dead = {}",
                        history.name(op.process),
                        t_dead
                    ),
                    ops,
                });
            }
        }
    }
    verdict
}

/// F1: every accepted result comes from the binding current when the store applied it.
pub fn fenced_results(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut bound: BTreeMap<&str, (&str, &str, usize)> = BTreeMap::new();
    for i in applied_order(history) {
        let op = &history.ops[i];
        for (job, node, epoch, _) in bindings(op) {
            bound.insert(job, (node, epoch, i));
        }
        let Some(SchedTag::Complete { job, node, epoch }) = tag(op) else {
            continue;
        };
        if !kept(op) || op.result != Some(Reply::Kv(KvReply::Int(1))) {
            continue;
        }
        let epoch = epoch.to_string();
        let current = bound.get(job.as_str()).copied();
        let ok = current.is_some_and(|(n, e, _)| n == node && e == epoch);
        if !ok && verdict.violations.len() < 5 {
            let (what, mut ops) = match current {
                Some((n, e, j)) => (format!("{job} was bound to {n} epoch {e}"), vec![j]),
                None => (format!("{job} was bound to no node"), Vec::new()),
            };
            ops.push(i);
            verdict.violations.push(Violation {
                invariant: F1.name.into(),
                explanation: format!(
                    "a result of {job} from {node} epoch {epoch} was accepted at {}, but {what}",
                    op.applied_at.unwrap_or(Timestamp::ZERO)
                ),
                ops,
            });
        }
    }
    verdict
}

/// J3: no kept binding names a node that a kept node-offline script took offline, with no
/// kept registration or heartbeat of that node in between (in the store's order).
pub fn offline_bindings(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut offline: BTreeMap<&str, usize> = BTreeMap::new();
    for i in applied_order(history) {
        let op = &history.ops[i];
        match tag(op) {
            // A negative answer wrote nothing: `-1` the lease was gone, `-2` (R-004-08) the
            // call's configuration version was not the published one.
            Some(SchedTag::Register { node } | SchedTag::Heartbeat { node })
                if kept(op) && !matches!(op.result, Some(Reply::Kv(KvReply::Int(n))) if n < 0) =>
            {
                offline.remove(node.as_str());
            }
            Some(SchedTag::Offline { node }) if offline_took(op) => {
                offline.insert(node.as_str(), i);
            }
            _ => {}
        }
        for (job, node, _, _) in bindings(op) {
            if let Some(&off) = offline.get(node)
                && verdict.violations.len() < 5
            {
                verdict.violations.push(Violation {
                    invariant: J3.name.into(),
                    explanation: format!(
                        "{} bound {job} to {node} at {}, after {} took {node} offline at {} \
                         (and {node} had not come back since)",
                        history.name(op.process),
                        op.applied_at.unwrap_or(Timestamp::ZERO),
                        history.name(history.ops[off].process),
                        history.ops[off].applied_at.unwrap_or(Timestamp::ZERO),
                    ),
                    ops: vec![off, i],
                });
            }
        }
    }
    verdict
}

/// The kept node-offline script took its node offline (its reply's first line).
fn offline_took(op: &OpRecord) -> bool {
    match &op.result {
        Some(Reply::Kv(KvReply::Array(lines))) => {
            kept(op)
                && lines
                    .first()
                    .and_then(|l| l.as_deref())
                    .is_some_and(|l| l.starts_with("offline "))
        }
        _ => false,
    }
}

/// I-JOB (safety): at most one accepted result per job. A result a Redis restart erased (the
/// restart loses every key, as a failover loses the unreplicated writes, which `kept`
/// already leaves out) was never accepted: the job is redone, which is not a second outcome.
pub fn one_outcome(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut results: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let restarts: Vec<Timestamp> = history.redis_restarts();
    for (i, op) in history.ops.iter().enumerate() {
        let erased = op
            .applied_at
            .is_some_and(|at| restarts.iter().any(|r| *r >= at));
        if let Some(SchedTag::Complete { job, .. }) = tag(op)
            && kept(op)
            && !erased
            && op.result == Some(Reply::Kv(KvReply::Int(1)))
        {
            results.entry(job.as_str()).or_default().push(i);
        }
    }
    for (job, ops) in results {
        if ops.len() > 1 {
            let who: Vec<String> = ops
                .iter()
                .map(|&i| history.name(history.ops[i].process))
                .collect();
            verdict.violations.push(Violation {
                invariant: I_JOB.name.into(),
                explanation: format!(
                    "{job} had {} results accepted, from {}",
                    ops.len(),
                    who.join(" and ")
                ),
                ops,
            });
        }
    }
    verdict
}

/// I-JOB (liveness): every job in `jobs` was delivered (a [`SchedNote::Delivered`], or a
/// [`SchedNote::TimedOut`]: a timeout is an outcome).
pub fn jobs_delivered(history: &History, jobs: &[String]) -> Verdict {
    let mut verdict = Verdict::default();
    for job in jobs {
        let delivered = history.notes.iter().any(|n| {
            matches!(
                n.note.get::<SchedNote>(),
                Some(SchedNote::Delivered { job: j } | SchedNote::TimedOut { job: j }) if j == job
            )
        });
        if !delivered {
            verdict.violations.push(Violation {
                invariant: I_JOB_DELIVERED.name.into(),
                explanation: format!("{job}'s outcome was never delivered"),
                ops: Vec::new(),
            });
        }
    }
    verdict
}

/// A kept timeout finalize that wrote `timed_out` (its job), R-004-06.
fn finalized(op: &OpRecord) -> Option<&str> {
    match tag(op) {
        Some(SchedTag::Finalize { job }) if kept(op) && bulk(op)?.starts_with("timed_out") => {
            Some(job)
        }
        _ => None,
    }
}

/// A kept accepted result (its job).
fn accepted(op: &OpRecord) -> Option<&str> {
    match tag(op) {
        Some(SchedTag::Complete { job, .. })
            if kept(op) && op.result == Some(Reply::Kv(KvReply::Int(1))) =>
        {
            Some(job)
        }
        _ => None,
    }
}

/// J2: at most one kept terminal transition per job (accepted results and timeout finalizes
/// that wrote `timed_out`), in the store's order. A transition a Redis restart erased (as
/// [`one_outcome`] counts them) never happened: the job starts over.
pub fn terminal_transitions(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let restarts: Vec<Timestamp> = history.redis_restarts();
    for i in applied_order(history) {
        let op = &history.ops[i];
        if op
            .applied_at
            .is_some_and(|at| restarts.iter().any(|r| *r >= at))
        {
            continue;
        }
        let Some(job) = finalized(op).or_else(|| accepted(op)) else {
            continue;
        };
        match first.get(job) {
            None => {
                first.insert(job, i);
            }
            Some(&f) if verdict.violations.len() < 5 => {
                let what = |k: usize| {
                    let o = &history.ops[k];
                    let kind = if finalized(o).is_some() {
                        "a timeout finalize"
                    } else {
                        "a result"
                    };
                    format!(
                        "{kind} by {} at {}",
                        history.name(o.process),
                        o.applied_at.unwrap_or(Timestamp::ZERO)
                    )
                };
                verdict.violations.push(Violation {
                    invariant: J2.name.into(),
                    explanation: format!(
                        "{job} reached a terminal state twice: {}, then {}",
                        what(f),
                        what(i)
                    ),
                    ops: vec![f, i],
                });
            }
            Some(_) => {}
        }
    }
    verdict
}

/// I-JOB-notified: no job has both a [`SchedNote::Delivered`] and a [`SchedNote::TimedOut`]
/// (the same outcome told again is still one outcome).
pub fn notified_once(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    // The outcomes told per job, each kind once, in the order first told: a scheduler that
    // restarts may tell the same outcome again, which the client can take twice.
    let mut told: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for n in &history.notes {
        let (job, what) = match n.note.get::<SchedNote>() {
            Some(SchedNote::Delivered { job }) => (job, "its result"),
            Some(SchedNote::TimedOut { job }) => (job, "a timeout"),
            _ => continue,
        };
        let seen = told.entry(job).or_default();
        if !seen.contains(&what) {
            seen.push(what);
        }
    }
    for (job, outcomes) in told {
        if outcomes.len() > 1 {
            verdict.violations.push(Violation {
                invariant: I_JOB_NOTIFIED.name.into(),
                explanation: format!(
                    "the client was told {} outcomes of {job}: {}",
                    outcomes.len(),
                    outcomes.join(", then ")
                ),
                ops: Vec::new(),
            });
        }
    }
    verdict
}

/// B1: no kept timeout finalize answered `lost` (the binding of a running job was gone).
pub fn binding_lifetime(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    for (i, op) in history.ops.iter().enumerate() {
        if let Some(SchedTag::Finalize { job }) = tag(op)
            && kept(op)
            && bulk(op) == Some("lost")
            && verdict.violations.len() < 5
        {
            verdict.violations.push(Violation {
                invariant: B1.name.into(),
                explanation: format!(
                    "{}'s timeout finalize of {job} at {} found no binding, though {job} was \
                     still running: the binding's TTL ran out before the job",
                    history.name(op.process),
                    op.applied_at.unwrap_or(Timestamp::ZERO)
                ),
                ops: vec![i],
            });
        }
    }
    verdict
}

/// Counts R-004-06's `sometimes` properties: timeout finalizes that timed a job out, and
/// results (accepted or refused) that reached the store after their job's finalize.
pub fn finalize_coverage(history: &History, verdict: &mut Verdict) {
    let mut done: BTreeMap<&str, ()> = BTreeMap::new();
    let (mut finals, mut late) = (0, 0);
    for i in applied_order(history) {
        let op = &history.ops[i];
        if let Some(job) = finalized(op) {
            finals += 1;
            done.insert(job, ());
        }
        if let Some(SchedTag::Complete { job, .. }) = tag(op)
            && kept(op)
            && done.contains_key(job.as_str())
        {
            late += 1;
        }
    }
    verdict.count(TIMED_OUT_FINALIZED.name, finals);
    verdict.count(LATE_RESULT.name, late);
}

/// Counts the family's `sometimes` and protection properties in `verdict`.
pub fn coverage(history: &History, verdict: &mut Verdict) {
    let skipped: u64 = history
        .ops
        .iter()
        .flat_map(bindings)
        .map(|(_, _, _, s)| s)
        .sum();
    let queued_skips: u64 = history
        .ops
        .iter()
        .filter(|op| kept(op))
        .filter_map(bulk)
        .filter_map(|s| s.strip_prefix("queued "))
        .filter_map(|s| s.parse::<u64>().ok())
        .sum();
    verdict.count(DEAD_NODE_SKIPPED.name, skipped + queued_skips);
    let refused = history
        .ops
        .iter()
        .filter(|op| matches!(tag(op), Some(SchedTag::Complete { .. })))
        .filter(|op| kept(op) && op.result == Some(Reply::Kv(KvReply::Int(0))))
        .count() as u64;
    verdict.count(STALE_RESULT_REFUSED.name, refused);
    let lost = history
        .notes
        .iter()
        .filter(|n| matches!(n.note.get::<SchedNote>(), Some(SchedNote::LeaseLost { .. })))
        .count() as u64;
    verdict.count(LEASE_LOST.name, lost);
    let offline = || {
        history
            .ops
            .iter()
            .filter(|op| matches!(tag(op), Some(SchedTag::Offline { .. })))
            .flat_map(offline_iter)
    };
    let moved = offline().filter(|l| l.contains(" bound ")).count() as u64;
    verdict.count(OFFLINE_REDISPATCHED.name, moved);
    let queued = offline().filter(|l| l.contains(" queued ")).count() as u64;
    verdict.count(NO_NODE_LEFT.name, queued);
}
