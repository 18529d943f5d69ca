//! The invariants of documents 001 and 003, judged on recorded histories. Local blocks are
//! ordered by the sequence number the simulation gives each ([`crate::LocalReply::seq`]), so that
//! "after the failure was recorded" means after it in the one event loop's order.
//!
//! Safety (`always`): I-401, I-OBS, I-FQ1/2, I-FQ4, I-FQ5 and I-FRESH (the table offers an
//! endpoint only when the freshest evidence allows it). Liveness (`eventually`, judged at the
//! end of a completed run): an endpoint a probe saw recover after its latest failure ends
//! healthy ([`ENDPOINT_RECOVERS`]) and out of the failure queue ([`QUEUE_DRAINS`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::HealthTag;
use crate::history::{History, OpRecord};
use crate::ids::ProcessId;
use crate::ops::{CallKind, Reply, StoreOp};
use crate::oracle::{Property, Verdict, Violation};

use super::{
    EndpointId, FailureQueue, LocalOp, LocalResult, LocalState, Observation, Source, Status,
};

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
    pub fn read(local: &LocalState) -> QueueEnd {
        QueueEnd {
            total_failed: local.queue.total_failed(),
            failed: local.queue.failed(),
            configured: local.health.endpoints().len(),
        }
    }
}

/// The health table's end state, for I-FRESH and [`ENDPOINT_RECOVERS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEnd {
    /// Each configured endpoint's status at the end.
    pub status: BTreeMap<EndpointId, Status>,
    /// The table's consecutive-failure threshold.
    pub failure_threshold: u32,
}

impl TableEnd {
    /// The end state read from a host's local memory.
    pub fn read(local: &LocalState) -> TableEnd {
        let status = local
            .health
            .endpoints()
            .iter()
            .filter_map(|e| local.health.get(*e).map(|h| (*e, h.status)))
            .collect();
        TableEnd {
            status,
            failure_threshold: local.health.config().failure_threshold,
        }
    }
}

/// Whether a table status lets requests select the endpoint (`is_healthy`).
fn selectable(status: Status) -> bool {
    matches!(status, Status::Unknown | Status::Healthy)
}

/// One endpoint's health as the freshest evidence says, rebuilt from the history with the
/// catalog's correct rules (RACES.md R-001-01, correct fix): a success counts only if its
/// attempt or probe started after the endpoint's latest recorded failure (401, 429, 5xx or
/// timeout alike), and a 401 stays until a probe that started after it succeeds.
#[derive(Clone, Copy, Debug, Default)]
struct Evidence {
    /// Failures since the last fresh success (a 401 counts as the threshold).
    failures: u32,
    /// A 401 no fresh probe success has cleared since.
    auth_failed: bool,
    /// The sequence number and op index of the latest recorded failure observation.
    last_failure: Option<(u64, usize)>,
}

impl Evidence {
    fn allows(&self, threshold: u32) -> bool {
        !self.auth_failed && self.failures < threshold
    }

    fn why_not(&self, history: &History, threshold: u32) -> String {
        let latest = self.last_failure.map(|(_, i)| {
            let op = &history.ops[i];
            format!(
                " (latest failure recorded by {} at {})",
                history.name(op.process),
                op.applied_at.unwrap_or(op.invoked_at)
            )
        });
        let latest = latest.unwrap_or_default();
        if self.auth_failed {
            format!("its 401 was not cleared by a probe started after it{latest}")
        } else {
            format!(
                "{} failure(s) (threshold {threshold}) since the last success that started \
                 after a failure{latest}",
                self.failures
            )
        }
    }
}

/// I-FRESH (R-001-02, with 401, 429 and 5xx): the table offers an endpoint (in a candidate
/// list, a selection, or selectable at the end) only when the freshest evidence allows it: a
/// success observed by an attempt or probe that started before a newer recorded failure
/// neither clears a 401 nor resets the failure count. A request's start is its selection or
/// dispatch, a probe's its `BeginProbe`.
pub fn fresh_evidence_only(history: &History, end: &TableEnd) -> Verdict {
    let threshold = end.failure_threshold;
    let mut verdict = Verdict::default();
    let mut evidence: BTreeMap<EndpointId, Evidence> = BTreeMap::new();
    let mut started: BTreeMap<ProcessId, u64> = BTreeMap::new();
    let mut reported: BTreeSet<EndpointId> = BTreeSet::new();
    let mut report = |verdict: &mut Verdict, e: EndpointId, ev: &Evidence, what: String, i| {
        if reported.insert(e) {
            let mut ops: Vec<usize> = ev.last_failure.map(|(_, f)| f).into_iter().collect();
            ops.extend(i);
            verdict.violations.push(Violation {
                invariant: I_FRESH.name.into(),
                explanation: format!("{what} although {}", ev.why_not(history, threshold)),
                ops,
            });
        }
    };
    for (i, op, local, reply) in local_blocks(history) {
        let offered: Vec<EndpointId> = match (local, &reply.result) {
            (LocalOp::Candidates, LocalResult::Endpoints(list)) => list.clone(),
            (LocalOp::Select { .. }, LocalResult::Selected(Some((e, _)))) => {
                started.insert(op.process, reply.seq);
                vec![*e]
            }
            (LocalOp::Dispatch { .. } | LocalOp::BeginProbe { .. }, _) => {
                started.insert(op.process, reply.seq);
                Vec::new()
            }
            (
                LocalOp::Observe {
                    endpoint,
                    observation,
                    source,
                    ..
                },
                _,
            ) => {
                let ev = evidence.entry(*endpoint).or_default();
                match observation {
                    Observation::Success => {
                        let start = started.get(&op.process).copied();
                        let fresh = match ev.last_failure {
                            None => true,
                            Some((failed_at, _)) => start.is_some_and(|s| s > failed_at),
                        };
                        if fresh && (*source == Source::Probe || !ev.auth_failed) {
                            ev.failures = 0;
                            ev.auth_failed = false;
                        }
                    }
                    Observation::Unauthorized => {
                        ev.auth_failed = true;
                        ev.failures = ev.failures.max(threshold);
                        ev.last_failure = Some((reply.seq, i));
                    }
                    Observation::RateLimited | Observation::ServerError | Observation::Timeout => {
                        ev.failures = ev.failures.saturating_add(1);
                        ev.last_failure = Some((reply.seq, i));
                    }
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        for e in offered {
            let ev = evidence.get(&e).copied().unwrap_or_default();
            if !ev.allows(threshold) {
                let what = format!(
                    "the table offered {e} to {} at {}",
                    history.name(op.process),
                    op.applied_at.unwrap_or(op.invoked_at)
                );
                report(&mut verdict, e, &ev, what, Some(i));
            }
        }
    }
    for (e, status) in &end.status {
        let ev = evidence.get(e).copied().unwrap_or_default();
        if selectable(*status) && !ev.allows(threshold) {
            let what = format!("{e} ended {} (selectable)", status.as_str());
            report(&mut verdict, *e, &ev, what, None);
        }
    }
    verdict
}

/// A probe whose upstream call answered 200 to the prober, and which began after every
/// failure of its endpoint recorded in the whole run (an observation or a failure-queue add):
/// nothing newer than its evidence exists.
struct FreshProbe {
    process: ProcessId,
    endpoint: EndpointId,
    /// The op index of the probe's upstream call.
    call: usize,
    /// Whether the endpoint had failed before the probe began.
    after_failure: bool,
}

/// Every probe that succeeded with nothing newer than its evidence, in history order.
fn fresh_probes(history: &History) -> Vec<FreshProbe> {
    // Each endpoint's failure records (observations and queue adds), in execution order.
    let mut failures: BTreeMap<EndpointId, Vec<u64>> = BTreeMap::new();
    for (_, _, local, reply) in local_blocks(history) {
        let failed = match local {
            LocalOp::Observe {
                endpoint,
                observation,
                ..
            } if observation.is_failure() => Some(endpoint),
            LocalOp::FqAdd { endpoint } | LocalOp::FqInsertCounted { endpoint } => Some(endpoint),
            _ => None,
        };
        if let Some(e) = failed {
            failures.entry(*e).or_default().push(reply.seq);
        }
    }
    // A process runs one step at a time, so its operations appear in the history in program
    // order: a probe's upstream call follows its `BeginProbe`.
    let mut began: BTreeMap<ProcessId, (EndpointId, u64)> = BTreeMap::new();
    let mut probes = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        let block = match &op.op {
            StoreOp::Local(block) => block.get::<LocalOp>(),
            _ => None,
        };
        match (&op.op, &op.result) {
            (StoreOp::Local(_), Some(Reply::Local(r))) => {
                if let Some(LocalOp::BeginProbe { endpoint }) = block {
                    began.insert(op.process, (*endpoint, r.seq));
                }
            }
            (StoreOp::Upstream(call), result) if matches!(call.kind, CallKind::Probe { .. }) => {
                let Some((endpoint, seq)) = began.remove(&op.process) else {
                    continue;
                };
                let answered_200 = matches!(result, Some(Reply::Upstream(r)) if r.status == 200)
                    && !op.timed_out
                    && op.completed_at.is_some();
                let failed = failures.get(&endpoint).map(Vec::as_slice).unwrap_or(&[]);
                let newest = failed.last().is_none_or(|f| *f < seq);
                if endpoint == call.endpoint && answered_200 && newest {
                    probes.push(FreshProbe {
                        process: op.process,
                        endpoint,
                        call: i,
                        after_failure: !failed.is_empty(),
                    });
                }
            }
            _ => {}
        }
    }
    probes
}

/// `endpoint-recovers` (documents 001 and 003, liveness): an endpoint that a probe saw
/// answer 200, the probe having begun after every failure of it recorded in the run, ends
/// `healthy` in the table. Judged only at the end of a completed run (`settled`): before
/// that the prober may not have recorded what it saw.
pub fn endpoints_recover(history: &History, end: &TableEnd, settled: bool) -> Verdict {
    let mut verdict = Verdict::default();
    if !settled {
        return verdict;
    }
    let mut reported: BTreeSet<EndpointId> = BTreeSet::new();
    for p in fresh_probes(history) {
        let status = end.status.get(&p.endpoint).copied();
        if status == Some(Status::Healthy) || !reported.insert(p.endpoint) {
            continue;
        }
        let call = &history.ops[p.call];
        verdict.violations.push(Violation {
            invariant: ENDPOINT_RECOVERS.name.into(),
            explanation: format!(
                "{}'s probe of {} answered 200 at {} and no failure of {} was recorded after \
                 the probe began, yet {} ended {}",
                history.name(p.process),
                p.endpoint,
                call.completed_at.unwrap_or(call.invoked_at),
                p.endpoint,
                p.endpoint,
                status.map_or("unconfigured", Status::as_str),
            ),
            ops: vec![p.call],
        });
    }
    verdict
}

/// `queue-drains` (document 003, liveness): an endpoint that the failure queue's recovery
/// loop (a process that listed the queue) probed successfully, the probe having begun after
/// every failure of it recorded in the run, ends out of the failure queue. Judged only at the
/// end of a completed run (`settled`).
pub fn queue_drains(history: &History, end: &QueueEnd, settled: bool) -> Verdict {
    let mut verdict = Verdict::default();
    if !settled {
        return verdict;
    }
    let recovery: BTreeSet<ProcessId> = local_blocks(history)
        .into_iter()
        .filter(|(_, _, local, _)| matches!(local, LocalOp::FqFailed))
        .map(|(_, op, _, _)| op.process)
        .collect();
    let mut reported: BTreeSet<EndpointId> = BTreeSet::new();
    for p in fresh_probes(history) {
        if !recovery.contains(&p.process)
            || !end.failed.contains(&p.endpoint)
            || !reported.insert(p.endpoint)
        {
            continue;
        }
        let call = &history.ops[p.call];
        verdict.violations.push(Violation {
            invariant: QUEUE_DRAINS.name.into(),
            explanation: format!(
                "{}'s recovery probe of {} answered 200 at {} and no failure of {} was recorded \
                 after the probe began, yet {} ended in the failure queue",
                history.name(p.process),
                p.endpoint,
                call.completed_at.unwrap_or(call.invoked_at),
                p.endpoint,
                p.endpoint,
            ),
            ops: vec![p.call],
        });
    }
    verdict
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
/// I-FRESH ([`fresh_evidence_only`]).
pub const I_FRESH: Property = Property::always(
    "I-FRESH",
    "the table offers an endpoint only if no failure newer than its last fresh success forbids \
     it: a success whose attempt or probe started before a newer 401, 429 or 5xx changes nothing",
);
/// `endpoint-recovers` ([`endpoints_recover`]).
pub const ENDPOINT_RECOVERS: Property = Property::eventually(
    "endpoint-recovers",
    "an endpoint a probe saw answer 200 after its latest failure ends healthy",
);
/// `queue-drains` ([`queue_drains`]).
pub const QUEUE_DRAINS: Property = Property::eventually(
    "queue-drains",
    "an endpoint the recovery loop saw answer 200 after its latest failure ends out of the queue",
);
/// Window: a probe that began after its endpoint's latest failure answered 200 (what the
/// recovery properties judge).
pub const RECOVERY_PROBED: Property = Property::sometimes(
    "recovery-probed",
    "a probe that began after its endpoint's latest failure answered 200",
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
        RECOVERY_PROBED.name,
        fresh_probes(history)
            .iter()
            .filter(|p| p.after_failure)
            .count() as u64,
    );
    verdict.count(
        QUEUE_RELOADED.name,
        count(&|op, _| matches!(op, LocalOp::FqLoad { content: Some(_) })),
    );
    verdict
}
