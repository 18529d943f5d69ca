//! The invariants of documents 001 and 003, judged on recorded histories. Local blocks are
//! ordered by the sequence number the simulation gives each ([`crate::LocalReply::seq`]), so that
//! "after the failure was recorded" means after it in the one event loop's order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::HealthTag;
use crate::history::{History, OpRecord};
use crate::ids::ProcessId;
use crate::ops::{Reply, StoreOp};
use crate::oracle::{Property, Verdict, Violation};

use super::{EndpointId, FailureQueue, LocalOp, LocalResult, Observation, Source};

/// The failure queue's end state, for I-FQ1 and I-FQ2.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEnd {
    /// `stats['total_failed']` at the end.
    pub total_failed: u64,
    /// The failed endpoints at the end.
    pub failed: Vec<EndpointId>,
    /// How many endpoints are configured.
    pub configured: usize,
}

/// A local block's result as the family's oracles read it.
struct Block<'a> {
    /// Its position in the run's order of local blocks.
    seq: u64,
    /// The family's result.
    result: &'a LocalResult,
}

/// The applied local blocks of this family in a history, in their execution order.
fn local_blocks(history: &History) -> Vec<(usize, &OpRecord, &LocalOp, Block<'_>)> {
    let mut blocks: Vec<_> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match (&op.op, &op.result) {
            (StoreOp::Local(l), Some(Reply::Local(r))) => {
                let block = Block {
                    seq: r.seq,
                    result: r.result.get::<LocalResult>()?,
                };
                Some((i, op, l.get::<LocalOp>()?, block))
            }
            _ => None,
        })
        .collect();
    blocks.sort_by_key(|b| b.3.seq);
    blocks
}

/// I-401 (R-001-01, R-001-02, R-001-04): once a 401 from endpoint E is recorded, no request
/// attempt is dispatched to E until a probe that started after the record has succeeded.
/// Attempts dispatched before the record may still fail; that is unavoidable.
pub fn no_selection_after_401(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    // Endpoint -> (seq, op index) of the 401 record that made it unselectable.
    let mut failed: BTreeMap<EndpointId, (u64, usize)> = BTreeMap::new();
    let mut probe_began: BTreeMap<(ProcessId, EndpointId), u64> = BTreeMap::new();
    let mut reported: BTreeSet<EndpointId> = BTreeSet::new();
    for (i, op, local, reply) in local_blocks(history) {
        let dispatched = match (local, &reply.result) {
            (
                LocalOp::Observe {
                    endpoint,
                    observation: Observation::Unauthorized,
                    ..
                },
                _,
            ) => {
                failed.entry(*endpoint).or_insert((reply.seq, i));
                None
            }
            (LocalOp::BeginProbe { endpoint }, _) => {
                probe_began.insert((op.process, *endpoint), reply.seq);
                None
            }
            (
                LocalOp::Observe {
                    endpoint,
                    observation: Observation::Success,
                    source: Source::Probe,
                    ..
                },
                _,
            ) => {
                let began = probe_began.get(&(op.process, *endpoint)).copied();
                if let (Some(began), Some((at, _))) = (began, failed.get(endpoint))
                    && began > *at
                {
                    failed.remove(endpoint);
                }
                None
            }
            (LocalOp::Dispatch { endpoint }, _) => Some(*endpoint),
            (LocalOp::Select { .. }, LocalResult::Selected(Some((endpoint, _)))) => Some(*endpoint),
            _ => None,
        };
        if let Some(e) = dispatched
            && let Some(&(_, record)) = failed.get(&e)
            && reported.insert(e)
        {
            let rec = &history.ops[record];
            verdict.violations.push(Violation {
                invariant: I_401.name.into(),
                explanation: format!(
                    "{} dispatched a request to {e} at {} although {} had recorded a 401 from \
                     {e} at {} and no probe started since then had succeeded",
                    history.name(op.process),
                    op.applied_at.unwrap_or(op.invoked_at),
                    history.name(rec.process),
                    rec.applied_at.unwrap_or(rec.invoked_at),
                ),
                ops: vec![record, i],
            });
        }
    }
    verdict
}

/// R-001-03: every observation a request made (every completed upstream call) is applied to
/// the health table exactly once.
pub fn observations_applied(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    // (process, endpoint) -> (calls completed, first call index, observations applied).
    let mut counts: BTreeMap<(ProcessId, EndpointId), (u64, usize, u64)> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        let block = match &op.op {
            StoreOp::Local(block) => block.get::<LocalOp>(),
            _ => None,
        };
        match (HealthTag::of(&op.tag), block) {
            (Some(HealthTag::Call { endpoint }), _) if op.completed_at.is_some() => {
                let c = counts.entry((op.process, *endpoint)).or_insert((0, i, 0));
                c.0 += 1;
            }
            (
                Some(HealthTag::Observe { endpoint }),
                Some(LocalOp::Observe {
                    source: Source::Request,
                    ..
                }),
            ) if op.applied_at.is_some() => {
                let c = counts.entry((op.process, *endpoint)).or_insert((0, i, 0));
                c.2 += 1;
            }
            _ => {}
        }
    }
    for ((p, e), (calls, first, applied)) in counts {
        if calls != applied {
            verdict.violations.push(Violation {
                invariant: I_OBS.name.into(),
                explanation: format!(
                    "{} made {calls} observation(s) of {e} but {applied} reached the health \
                     table: an update_health_status coroutine was created and never awaited",
                    history.name(p)
                ),
                ops: vec![first],
            });
        }
    }
    verdict
}

/// I-FQ1 and I-FQ2 (R-003-01, R-003-02): `total_failed` equals the number of transitions of
/// an endpoint into the failed set, rebuilt from the history; the set is never larger than
/// the configured endpoints.
pub fn episodes_counted_once(history: &History, end: &QueueEnd) -> Verdict {
    let mut verdict = Verdict::default();
    let mut members: BTreeSet<EndpointId> = BTreeSet::new();
    let mut transitions = 0u64;
    let mut adds = Vec::new();
    for (i, _, local, reply) in local_blocks(history) {
        match (local, &reply.result) {
            (LocalOp::FqAdd { endpoint } | LocalOp::FqInsertCounted { endpoint }, _) => {
                adds.push(i);
                if members.insert(*endpoint) {
                    transitions += 1;
                }
            }
            (LocalOp::FqRemove { endpoint, .. }, LocalResult::Bool(true)) => {
                members.remove(endpoint);
            }
            _ => {}
        }
    }
    if end.total_failed != transitions {
        verdict.violations.push(Violation {
            invariant: I_FQ1.name.into(),
            explanation: format!(
                "total_failed is {} but endpoints entered the failure queue {transitions} \
                 time(s) ({} add call(s))",
                end.total_failed,
                adds.len()
            ),
            ops: adds.iter().copied().take(8).collect(),
        });
    }
    if end.failed.len() > end.configured {
        verdict.violations.push(Violation {
            invariant: I_FQ2.name.into(),
            explanation: format!(
                "{} failed endpoints but only {} configured",
                end.failed.len(),
                end.configured
            ),
            ops: Vec::new(),
        });
    }
    verdict
}

/// I-FQ4 (R-003-03): an endpoint leaves the failure queue only through a recovery probe that
/// started after its latest recorded failure.
pub fn no_stale_recovery(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut last_failure: BTreeMap<EndpointId, (u64, usize)> = BTreeMap::new();
    let mut began: BTreeMap<(ProcessId, EndpointId), u64> = BTreeMap::new();
    for (i, op, local, reply) in local_blocks(history) {
        match (local, &reply.result) {
            (LocalOp::FqAdd { endpoint } | LocalOp::FqInsertCounted { endpoint }, _) => {
                last_failure.insert(*endpoint, (reply.seq, i));
            }
            (LocalOp::BeginProbe { endpoint }, _) => {
                began.insert((op.process, *endpoint), reply.seq);
            }
            (LocalOp::FqRemove { endpoint, .. }, LocalResult::Bool(true)) => {
                let start = began.get(&(op.process, *endpoint)).copied().unwrap_or(0);
                if let Some(&(at, failure)) = last_failure.get(endpoint)
                    && at > start
                {
                    let f = &history.ops[failure];
                    verdict.violations.push(Violation {
                        invariant: I_FQ4.name.into(),
                        explanation: format!(
                            "{} removed {endpoint} from the failure queue at {} on a probe that \
                             started before {} recorded a newer failure of it at {}",
                            history.name(op.process),
                            op.applied_at.unwrap_or(op.invoked_at),
                            history.name(f.process),
                            f.applied_at.unwrap_or(f.invoked_at),
                        ),
                        ops: vec![failure, i],
                    });
                }
            }
            _ => {}
        }
    }
    verdict
}

/// I-FQ5 (R-003-04): after a crash and restart, the loaded file parses and equals a state the
/// queue really had (a snapshot taken before), and a completed save is not lost.
pub fn crash_consistent(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut snapshots: BTreeSet<&str> = BTreeSet::new();
    let mut saved = false;
    for (i, _, local, reply) in local_blocks(history) {
        match (local, &reply.result) {
            (LocalOp::FqSnapshot, LocalResult::Text(text)) => {
                snapshots.insert(text.as_str());
            }
            (LocalOp::FsWrite { path, .. }, _) | (LocalOp::FsRename { to: path, .. }, _)
                if path == super::tasks::QUEUE_FILE =>
            {
                saved = true;
            }
            (LocalOp::FqLoad { content }, _) => {
                let problem = match content {
                    None if saved => Some("the file is gone although a save completed".into()),
                    None => None,
                    Some(text) => match FailureQueue::from_json(super::Variant::Correct, text) {
                        Err(e) => Some(format!("{e} (content {text:?})")),
                        Ok(_) if !snapshots.contains(text.as_str()) => Some(format!(
                            "the file holds {text:?}, a state the queue never had"
                        )),
                        Ok(_) => None,
                    },
                };
                if let Some(problem) = problem {
                    verdict.violations.push(Violation {
                        invariant: I_FQ5.name.into(),
                        explanation: format!(
                            "the restarted process loaded a torn failure queue: {problem}"
                        ),
                        ops: vec![i],
                    });
                }
            }
            _ => {}
        }
    }
    verdict
}

impl QueueEnd {
    /// The end state read from a host's local memory.
    pub fn read(local: &super::LocalState) -> QueueEnd {
        QueueEnd {
            total_failed: local.queue.total_failed(),
            failed: local.queue.failed(),
            configured: local.health.endpoints().len(),
        }
    }
}

/// I-401 ([`no_selection_after_401`]).
pub const I_401: Property = Property::always(
    "I-401",
    "no request is dispatched to an endpoint after its 401 until a later probe succeeded",
);
/// I-OBS ([`observations_applied`]).
pub const I_OBS: Property = Property::always(
    "I-OBS",
    "every completed upstream call's observation is applied to the health table once",
);
/// I-FQ1 ([`episodes_counted_once`]).
pub const I_FQ1: Property = Property::always(
    "I-FQ1",
    "total_failed equals the transitions of endpoints into the failed set",
);
/// I-FQ2 ([`episodes_counted_once`]).
pub const I_FQ2: Property = Property::always(
    "I-FQ2",
    "the failed set is never larger than the configured endpoints",
);
/// I-FQ4 ([`no_stale_recovery`]).
pub const I_FQ4: Property = Property::always(
    "I-FQ4",
    "an endpoint leaves the failure queue only through a probe started after its last failure",
);
/// I-FQ5 ([`crash_consistent`]).
pub const I_FQ5: Property = Property::always(
    "I-FQ5",
    "after a crash the loaded queue parses and equals a state the queue had",
);
/// Protection: a stale success or a request success on an `AuthFailed` endpoint was ignored.
pub const STALE_OBSERVATION_REFUSED: Property = Property::protection(
    "stale-observation-refused",
    "a success older than a newer failure, or a request success on AUTH_FAILED, was ignored",
);
/// Protection: a recovery from a probe older than the endpoint's latest failure was refused.
pub const STALE_RECOVERY_REFUSED: Property = Property::protection(
    "stale-recovery-refused",
    "a recovery by a probe that started before the latest failure was refused",
);
/// Window: a 401 was observed and recorded.
pub const UNAUTHORIZED_OBSERVED: Property = Property::sometimes(
    "unauthorized-observed",
    "an upstream answered 401 and the observation reached the health table",
);
/// Window: a 429 was observed and recorded.
pub const RATE_LIMIT_OBSERVED: Property = Property::sometimes(
    "rate-limit-observed",
    "an upstream answered 429 and the observation reached the health table",
);
/// Window: a failure was reported for an endpoint already in the failure queue.
pub const REPEAT_FAILURE: Property = Property::sometimes(
    "repeat-failure-in-episode",
    "an endpoint already in the failure queue failed again (the double-count window)",
);
/// Window: a restarted process loaded a persisted failure queue.
pub const QUEUE_RELOADED: Property = Property::sometimes(
    "queue-reloaded",
    "a restarted process loaded the failure queue from its file",
);

/// How often each of documents 001 and 003's `sometimes` properties held in a history, as a
/// verdict with no violation (a race keeps the counts of the properties it declares).
pub fn coverage(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let count = |f: &dyn Fn(&LocalOp, &LocalResult) -> bool| {
        local_blocks(history)
            .into_iter()
            .filter(|(_, _, op, reply)| f(op, reply.result))
            .count() as u64
    };
    verdict.count(
        STALE_OBSERVATION_REFUSED.name,
        count(&|op, r| {
            matches!(op, LocalOp::Observe { .. })
                && matches!(
                    r,
                    LocalResult::Observed(
                        super::ObserveOutcome::Stale | super::ObserveOutcome::Sticky
                    )
                )
        }),
    );
    verdict.count(
        STALE_RECOVERY_REFUSED.name,
        count(&|op, r| matches!(op, LocalOp::FqRemove { .. }) && *r == LocalResult::Bool(false)),
    );
    let observed = |o: Observation| {
        count(&|op, _| matches!(op, LocalOp::Observe { observation, .. } if *observation == o))
    };
    verdict.count(
        UNAUTHORIZED_OBSERVED.name,
        observed(Observation::Unauthorized),
    );
    verdict.count(RATE_LIMIT_OBSERVED.name, observed(Observation::RateLimited));
    verdict.count(
        REPEAT_FAILURE.name,
        count(&|op, r| match (op, r) {
            (LocalOp::FqAdd { .. }, LocalResult::Added(added)) => !added.inserted,
            (LocalOp::FqContains { .. }, LocalResult::Bool(present)) => *present,
            _ => false,
        }),
    );
    verdict.count(
        QUEUE_RELOADED.name,
        count(&|op, _| matches!(op, LocalOp::FqLoad { content: Some(_) })),
    );
    verdict
}
