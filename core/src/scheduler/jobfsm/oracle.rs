//! R-004-05's properties, judged from the history: the transitions the store applied and
//! kept (with the state each overwrote, from the script's own reply, recorded even when the
//! caller never got it), and what the processes reported of their memory and executions.
//!
//! - FSM1: every applied transition of a job's record is a declared one, and no state is
//!   entered twice (so they come in order).
//! - FSM2: memory is never ahead of Redis: when a process reports holding state S for a job,
//!   the job's record holds S then or held it before (a cache may lag, never lead).
//! - I-JOB-executed-once: a job is handed to a node at most once.

use std::collections::{BTreeMap, BTreeSet};

use super::JobState;
use super::tag::{JobNote, JobTag};
use crate::history::{History, OpRecord};
use crate::ops::{KvReply, Reply};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::Timestamp;

/// FSM1.
pub const FSM1: Property = Property::always(
    "FSM1",
    "a job's record takes only declared transitions, each state at most once, in order",
);
/// FSM2.
pub const FSM2: Property = Property::always(
    "FSM2",
    "a process' in-memory job state is never ahead of Redis: the record holds or held it",
);
/// Executions per job.
pub const EXECUTED_ONCE: Property = Property::always(
    "I-JOB-executed-once",
    "every job is handed to a node at most once: no second execution",
);
/// A transition with no answer was settled by sending it again.
pub const AMBIGUOUS_RESOLVED: Property = Property::protection(
    "ambiguous-resolved",
    "a transition whose first call got no answer was sent again and answered from the record",
);
/// A CAS from a stale state was refused.
pub const STALE_TRANSITION_REFUSED: Property = Property::protection(
    "stale-transition-refused",
    "a transition from a state or version the record no longer held was refused",
);
/// A process about to tell an outcome found another one stored durably and told that one.
pub const OUTCOME_ADOPTED: Property = Property::protection(
    "outcome-adopted",
    "a process about to tell an outcome (or to start over a job whose record was gone) found \
     another outcome stored durably and told that one instead",
);
/// The finalizer timed a job out.
pub const FSM_TIMED_OUT: Property = Property::sometimes(
    "fsm-timed-out",
    "the timeout finalize moved a job's record to timed_out",
);

fn tag(op: &OpRecord) -> Option<&JobTag> {
    op.tag.get::<JobTag>()
}

fn kept(op: &OpRecord) -> bool {
    op.applied_at.is_some() && op.lost_at.is_none()
}

fn reply(op: &OpRecord) -> Option<&str> {
    match &op.result {
        Some(Reply::Kv(KvReply::Bulk(s))) => Some(s),
        _ => None,
    }
}

/// A kept transition that applied: (job, from, to).
fn applied(op: &OpRecord) -> Option<(&str, Option<JobState>, JobState)> {
    applied_any(op).filter(|_| kept(op))
}

/// A transition that applied, even if a failover lost it later: (job, from, to).
fn applied_any(op: &OpRecord) -> Option<(&str, Option<JobState>, JobState)> {
    let Some(JobTag::Transition { job, .. }) = tag(op) else {
        return None;
    };
    op.applied_at?;
    let mut words = reply(op)?.split(' ');
    if words.next()? != "ok" {
        return None;
    }
    let from = words.next()?;
    let to = JobState::parse(words.next()?)?;
    Some((job, JobState::parse(from), to))
}

/// When Redis restarted, in order (each restart erased every record).
fn restarts(history: &History) -> Vec<Timestamp> {
    let mut r: Vec<Timestamp> = history.redis_restarts();
    r.sort();
    r
}

/// A Redis restart at or after it erased what it wrote.
fn erased(op: &OpRecord, restarts: &[Timestamp]) -> bool {
    op.applied_at
        .is_some_and(|at| restarts.iter().any(|r| *r >= at))
}

fn applied_order(history: &History) -> Vec<usize> {
    let mut order: Vec<usize> = (0..history.ops.len())
        .filter(|&i| history.ops[i].applied_at.is_some())
        .collect();
    order.sort_by_key(|&i| (history.ops[i].applied_at, i));
    order
}

fn name(s: Option<JobState>) -> &'static str {
    s.map_or("none", JobState::as_str)
}

/// FSM1: in the store's order, every applied transition is declared and enters a state the
/// job's record never held before. A transition a failover lost never happened; a Redis
/// restart erases every record, and a job starts over.
pub fn fsm_transitions(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut entered: BTreeMap<&str, BTreeSet<JobState>> = BTreeMap::new();
    let restarts = restarts(history);
    let mut next_restart = 0;
    for i in applied_order(history) {
        let op = &history.ops[i];
        while restarts
            .get(next_restart)
            .is_some_and(|r| op.applied_at.is_some_and(|at| *r < at))
        {
            entered.clear();
            next_restart += 1;
        }
        let Some((job, from, to)) = applied(op) else {
            continue;
        };
        let again = !entered.entry(job).or_default().insert(to);
        let declared = JobState::declared(from, to);
        if (again || !declared) && verdict.violations.len() < 5 {
            let why = if declared {
                format!("{job} had been {} before", to.as_str())
            } else {
                format!(
                    "{} -> {} is not a declared transition",
                    name(from),
                    to.as_str()
                )
            };
            verdict.violations.push(Violation {
                invariant: FSM1.name.into(),
                explanation: format!(
                    "{} moved {job}'s record from {} to {} at {}: {why}",
                    history.name(op.process),
                    name(from),
                    to.as_str(),
                    op.applied_at.unwrap_or(Timestamp::ZERO)
                ),
                ops: vec![i],
            });
        }
    }
    verdict
}

/// FSM2: every [`JobNote::Memory`] names a state the job's record held at or before the
/// note (by the transitions applied by then, a failover's later loss or a restart's later
/// erasure notwithstanding: the record held it).
pub fn memory_behind_redis(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let order = applied_order(history);
    for n in &history.notes {
        let Some(JobNote::Memory { job, state }) = n.note.get::<JobNote>() else {
            continue;
        };
        let held = order.iter().any(|&i| {
            let op = &history.ops[i];
            op.applied_at.is_some_and(|at| at <= n.at)
                && applied_any(op).is_some_and(|(j, _, to)| j == job && to == *state)
        });
        if !held && verdict.violations.len() < 5 {
            let current = order
                .iter()
                .rev()
                .filter(|&&i| history.ops[i].applied_at.is_some_and(|at| at <= n.at))
                .filter_map(|&i| applied(&history.ops[i]))
                .find(|(j, _, _)| j == job)
                .map(|(_, _, to)| to);
            verdict.violations.push(Violation {
                invariant: FSM2.name.into(),
                explanation: format!(
                    "{} held {job} as {} in memory at {}, but Redis had never recorded it \
                     (the record said {})",
                    history.name(n.process),
                    state.as_str(),
                    n.at,
                    name(current)
                ),
                ops: Vec::new(),
            });
        }
    }
    verdict
}

/// I-JOB-executed-once: at most one [`JobNote::Executed`] per job. An execution whose
/// dispatch the store applied and then lost (a failover) or erased (a Redis restart) is
/// redone, not a second execution (as I-JOB counts results); one whose dispatch was never
/// applied at all still counts: the node ran it.
pub fn executed_once(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let restarts = restarts(history);
    for n in &history.notes {
        let Some(JobNote::Executed { job, tx }) = n.note.get::<JobNote>() else {
            continue;
        };
        let forgotten = history.ops.iter().any(|op| {
            op.process == n.process
                && matches!(tag(op), Some(JobTag::Transition { tx: t, .. }) if t == tx)
                && applied_any(op).is_some()
                && (op.lost_at.is_some() || erased(op, &restarts))
        });
        if !forgotten {
            by.entry(job)
                .or_default()
                .push(format!("{} at {}", history.name(n.process), n.at));
        }
    }
    for (job, who) in by {
        if who.len() > 1 {
            verdict.violations.push(Violation {
                invariant: EXECUTED_ONCE.name.into(),
                explanation: format!(
                    "{job} was executed {} times: handed to a node by {}",
                    who.len(),
                    who.join(" and by ")
                ),
                ops: Vec::new(),
            });
        }
    }
    verdict
}

/// Counts R-004-05's `sometimes` and protection properties: transitions sent again after a
/// call with no answer and then answered, CAS refusals, applied timeouts, adopted outcomes
/// ([`JobNote::Adopted`]).
pub fn fsm_coverage(history: &History, verdict: &mut Verdict) {
    let mut unanswered: BTreeSet<(crate::ids::ProcessId, &str)> = BTreeSet::new();
    let (mut resolved, mut refused, mut timed_out) = (0, 0, 0);
    let mut by_invocation: Vec<usize> = (0..history.ops.len()).collect();
    by_invocation.sort_by_key(|&i| (history.ops[i].invoked_at, i));
    for i in by_invocation {
        let op = &history.ops[i];
        let Some(JobTag::Transition { tx, .. }) = tag(op) else {
            continue;
        };
        let key = (op.process, tx.as_str());
        if op.completed_at.is_none() || op.timed_out {
            unanswered.insert(key);
        } else if unanswered.remove(&key) {
            resolved += 1;
        }
    }
    for op in &history.ops {
        if tag(op).is_none() || !kept(op) {
            continue;
        }
        if reply(op).is_some_and(|r| r.starts_with("no ")) {
            refused += 1;
        }
        if applied(op).is_some_and(|(_, _, to)| to == JobState::TimedOut) {
            timed_out += 1;
        }
    }
    verdict.count(AMBIGUOUS_RESOLVED.name, resolved);
    verdict.count(STALE_TRANSITION_REFUSED.name, refused);
    verdict.count(FSM_TIMED_OUT.name, timed_out);
    let adopted = history
        .notes
        .iter()
        .filter(|n| {
            matches!(n.note.get::<JobNote>(),
                Some(JobNote::Adopted { proposed, stored, .. }) if *proposed != Some(*stored))
        })
        .count();
    verdict.count(
        OUTCOME_ADOPTED.name,
        u64::try_from(adopted).unwrap_or(u64::MAX),
    );
}
