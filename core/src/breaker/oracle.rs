//! The breaker family's properties and oracles (R-000-10), read from the history alone.
//!
//! An upstream call's outcome is what its instance saw: a 200 is a success; any other
//! status, and a timeout, is a failure, observed when the call completed.
//!
//! - C1: for an upstream U, `t_open` is the moment the [`THRESHOLD`]-th failure of U since
//!   the last observed success of U completes, on any instance: from then on U's breaker
//!   must be OPEN. The episode lasts until the next success of U is observed. Δ, the delay
//!   the property grants an instance to act on the OPEN, is counted in requests rather than
//!   time: each instance incarnation may start at most [`THRESHOLD`] non-probe requests to U
//!   in the episode, the cost of its local breaker detecting the failure by itself when it
//!   cannot hear of the OPEN (RACES.md: extra failures bounded by threshold × instances).
//!   A crash starts a new incarnation (its in-process breaker is lost).
//! - C2: at most one half-open probe of U per cool-down cluster-wide: two probes whose starts
//!   are less than [`PROBE_GAP`] (half a cool-down) apart break it. A token whose grant a
//!   failover lost, or a Redis restart erased, before the pair's other token was granted
//!   excuses the pair (the store forgot it; its holder may well probe second). Declared k: an instance whose token request got no answer from Redis
//!   may probe on its own breaker, at most once per [`PROBE_GAP`] per instance; such probes
//!   are outside the cluster-wide count.
//! - C3: no request to an upstream is rejected unless a call to it failed within
//!   [`C3_WINDOW`] before the rejection, or a probe token of it was live in Redis (granted
//!   less than a cool-down before: the half-open protocol letting one probe test it while
//!   the others wait), or Redis refused the rejecting instance's own token request (a token
//!   was held then, even if a failover lost it before the rejection). Any other rejection of a healthy upstream's requests comes from the
//!   breaker's store: its outage, or stale state in it. The window covers the cool-down of
//!   a breaker that opened on that failure, with the Redis round trips after the failure and
//!   the skew of the instances' clocks.
//! - C4: each accepted update of the shared failure counter leaves it one above the accepted
//!   updates before it since its last reset (a `SET 0` or `DEL`, the window `incr_window` set
//!   running out, a Redis restart); updates a failover lost do not count. A lost update
//!   breaks it.

use std::collections::{BTreeMap, BTreeSet};

use super::tag::{BreakerNote, BreakerTag, Probe, Rejection};
use super::{COOLDOWN, THRESHOLD};
use crate::history::{Fault, History, OpRecord};
use crate::ids::{EndpointId, ProcessId};
use crate::ops::{KvOp, KvReply, Reply, ScriptName, StoreOp};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::{Duration, Timestamp};

/// C1.
pub const C1: Property = Property::always(
    "C1",
    "once an upstream's breaker is OPEN (THRESHOLD failures of it since its last success), \
     each instance starts at most THRESHOLD more non-probe requests to it until it answers \
     again",
);
/// C2.
pub const C2: Property = Property::always(
    "C2",
    "at most one half-open probe of an upstream per cool-down cluster-wide (plus one per \
     cool-down per instance Redis did not answer)",
);
/// C3.
pub const C3: Property = Property::always(
    "C3",
    "no request to an upstream is rejected unless a call to it failed within C3_WINDOW before \
     or a probe token of it is live",
);
/// C4.
pub const C4: Property = Property::always(
    "C4",
    "the shared failure counter equals the failures recorded in it since its last reset: no \
     lost update",
);
/// A breaker opened (C1's window opened).
pub const BREAKER_OPENED: Property = Property::sometimes(
    "breaker-opened",
    "THRESHOLD failures of an upstream were observed with no success between",
);
/// A Correct instance's own breaker opened while Redis did not answer it.
pub const OPENED_WHILE_REDIS_DOWN: Property = Property::sometimes(
    "opened-locally-while-redis-down",
    "an instance's local breaker opened while its Redis steps failed",
);
/// A probe token was refused: another instance was probing.
pub const TOKEN_REFUSED: Property = Property::protection(
    "probe-token-refused",
    "an instance past its cool-down was refused the probe token (another instance held it)",
);
/// The "OPEN wins" merge wrote an OPEN back to a recovered Redis.
pub const OPEN_WINS_MERGE: Property = Property::protection(
    "open-wins-merge",
    "an instance wrote its OPEN back to Redis, which had come back without it",
);
/// A shared OPEN forced an instance's CLOSED breaker open.
pub const FORCED_OPEN: Property = Property::protection(
    "shared-open-forced-local",
    "a shared OPEN read from Redis opened an instance's CLOSED breaker",
);
/// A request went to its upstream although the breaker's store did not answer.
pub const SERVED_THROUGH_OUTAGE: Property = Property::sometimes(
    "served-through-store-outage",
    "an instance sent a request to its upstream after Redis did not answer its breaker read",
);

/// Two probes of one upstream closer than this break C2.
pub const PROBE_GAP: Duration = Duration::from_ms(COOLDOWN.as_ms() / 2);
/// How long after the last failure of an upstream C3 tolerates its requests being rejected:
/// a cool-down for the breakers that opened on that failure, one more while another
/// instance holds the probe token, and the rest for the skew of the instances' clocks and
/// the Redis and upstream round trips of the probe.
pub const C3_WINDOW: Duration = Duration::from_ms(4 * COOLDOWN.as_ms());

fn tag(op: &OpRecord) -> Option<&BreakerTag> {
    BreakerTag::of(&op.tag)
}

/// Whether the instance saw the call fail, and when it learnt it.
fn call_outcome(op: &OpRecord) -> Option<(Timestamp, bool)> {
    let at = op.completed_at?;
    if op.timed_out {
        return Some((at, true));
    }
    match &op.result {
        Some(Reply::Upstream(u)) => Some((at, u.status != 200)),
        _ => Some((at, true)),
    }
}

/// The incarnation of `process` at `at`: the crashes before it.
fn incarnation(history: &History, process: ProcessId, at: Timestamp) -> usize {
    history
        .faults
        .iter()
        .filter(|f| f.at <= at && matches!(f.fault, Fault::Crash { process: p } if p == process))
        .count()
}

/// The upstreams the history's calls name.
fn endpoints(history: &History) -> Vec<EndpointId> {
    let mut all: Vec<EndpointId> = history
        .ops
        .iter()
        .filter_map(|op| match tag(op) {
            Some(BreakerTag::Call { endpoint, .. }) => Some(*endpoint),
            _ => None,
        })
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// C1, and the count of `breaker-opened`.
pub fn no_traffic_after_open(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut opened = 0;
    for endpoint in endpoints(history) {
        // (time, 0 = an outcome observed / 1 = a call started, op index, failed)
        let mut events: Vec<(Timestamp, u8, usize, bool)> = Vec::new();
        for (i, op) in history.ops.iter().enumerate() {
            let Some(BreakerTag::Call {
                endpoint: e, probe, ..
            }) = tag(op)
            else {
                continue;
            };
            if *e != endpoint {
                continue;
            }
            if !probe.is_probe() {
                events.push((op.invoked_at, 1, i, false));
            }
            if let Some((at, failed)) = call_outcome(op) {
                events.push((at, 0, i, failed));
            }
        }
        events.sort_unstable();
        let mut failures = 0u32;
        let mut t_open: Option<Timestamp> = None;
        let mut sent: BTreeMap<(ProcessId, usize), u32> = BTreeMap::new();
        let mut flagged = false;
        for (at, kind, i, failed) in events {
            let op = &history.ops[i];
            if kind == 0 {
                if failed {
                    failures = failures.saturating_add(1);
                    if failures >= THRESHOLD && t_open.is_none() {
                        t_open = Some(at);
                        sent.clear();
                        opened += 1;
                    }
                } else {
                    failures = 0;
                    t_open = None;
                }
                continue;
            }
            let Some(open) = t_open else {
                continue;
            };
            let key = (op.process, incarnation(history, op.process, op.invoked_at));
            let n = sent.entry(key).or_insert(0);
            *n += 1;
            if *n > THRESHOLD && !flagged {
                flagged = true;
                verdict.violations.push(Violation {
                    invariant: C1.name.into(),
                    explanation: format!(
                        "{} started its {}th request to {endpoint} at {} although {endpoint}'s \
                         breaker had been OPEN since {open} ({THRESHOLD} failures observed and \
                         no success since): at most {THRESHOLD} were allowed",
                        history.name(op.process),
                        n,
                        op.invoked_at,
                    ),
                    ops: vec![i],
                });
            }
        }
    }
    verdict.count(BREAKER_OPENED.name, opened);
    verdict
}

/// The grant of a token: the `SET NX` of the probe that carried it.
fn grant<'h>(history: &'h History, token: &str) -> Option<&'h OpRecord> {
    history.ops.iter().find(|op| {
        matches!(tag(op), Some(BreakerTag::ProbeToken { token: t, .. }) if t == token)
            && matches!(op.result, Some(Reply::Kv(KvReply::Ok)))
    })
}

/// Whether the store forgot the token granted by `g` before `before`: a failover lost the
/// grant, or a Redis restart erased it.
fn token_forgotten(history: &History, g: &OpRecord, before: Timestamp) -> bool {
    let applied = g.applied_at.unwrap_or(g.invoked_at);
    g.lost_at.is_some() || token_forgotten_by_restart(history, applied, before)
}

/// Whether the probe at `index` may count as the instance's own: its latest token request
/// for the upstream got no answer from Redis (a timeout or an error).
fn local_probe_allowed(history: &History, index: usize, endpoint: EndpointId) -> bool {
    let process = history.ops[index].process;
    history.ops[..index]
        .iter()
        .rev()
        .find(|op| {
            op.process == process
                && matches!(tag(op), Some(BreakerTag::ProbeToken { endpoint: e, .. }) if *e == endpoint)
        })
        .is_some_and(|op| op.timed_out || matches!(op.result, Some(Reply::Kv(KvReply::Error(_)))))
}

/// C2.
pub fn one_probe_per_cooldown(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    for endpoint in endpoints(history) {
        let mut cluster: Vec<(Timestamp, usize)> = Vec::new();
        let mut local: BTreeMap<ProcessId, Vec<(Timestamp, usize)>> = BTreeMap::new();
        for (i, op) in history.ops.iter().enumerate() {
            let Some(BreakerTag::Call {
                endpoint: e, probe, ..
            }) = tag(op)
            else {
                continue;
            };
            if *e != endpoint || !probe.is_probe() {
                continue;
            }
            if *probe == Probe::Local && local_probe_allowed(history, i, endpoint) {
                local
                    .entry(op.process)
                    .or_default()
                    .push((op.invoked_at, i));
            } else {
                cluster.push((op.invoked_at, i));
            }
        }
        cluster.sort_unstable();
        let mut flagged = false;
        for pair in cluster.windows(2) {
            let ((ta, a), (tb, b)) = (pair[0], pair[1]);
            if tb.as_ms() - ta.as_ms() >= PROBE_GAP.as_ms() {
                continue;
            }
            // The store forgot a token if the grant of the two that came first (not
            // necessarily the first probe's: its holder may start later) was lost or erased
            // before the other grant.
            let granted = |i: usize| match tag(&history.ops[i]) {
                Some(BreakerTag::Call {
                    probe: Probe::Token(token),
                    ..
                }) => grant(history, token),
                _ => None,
            };
            let excused = match (granted(a), granted(b)) {
                (Some(ga), Some(gb)) => {
                    let at = |g: &OpRecord| g.applied_at.unwrap_or(g.invoked_at);
                    let (first, second) = if at(ga) <= at(gb) { (ga, gb) } else { (gb, ga) };
                    token_forgotten(history, first, at(second))
                }
                (Some(ga), None) => token_forgotten(history, ga, tb),
                _ => false,
            };
            if !excused && !flagged {
                flagged = true;
                verdict.violations.push(Violation {
                    invariant: C2.name.into(),
                    explanation: format!(
                        "{} probed {endpoint} at {ta} and {} probed it again at {tb}, within \
                         half a cool-down ({COOLDOWN}): two half-open probes at once",
                        history.name(history.ops[a].process),
                        history.name(history.ops[b].process),
                    ),
                    ops: vec![a, b],
                });
            }
        }
        for (process, mut probes) in local {
            probes.sort_unstable();
            if let Some(pair) = probes
                .windows(2)
                .find(|p| p[1].0.as_ms() - p[0].0.as_ms() < PROBE_GAP.as_ms())
            {
                verdict.violations.push(Violation {
                    invariant: C2.name.into(),
                    explanation: format!(
                        "{} probed {endpoint} on its own breaker at {} and again at {}, within \
                         half a cool-down",
                        history.name(process),
                        pair[0].0,
                        pair[1].0,
                    ),
                    ops: vec![pair[0].1, pair[1].1],
                });
            }
        }
    }
    verdict
}

/// Whether a probe token of `endpoint` was live in Redis at `at`: granted (applied) less than
/// a cool-down before, neither lost by a failover nor erased by a restart by then.
fn token_live(history: &History, endpoint: EndpointId, at: Timestamp) -> bool {
    history.ops.iter().any(|op| {
        let granted = matches!(tag(op), Some(BreakerTag::ProbeToken { endpoint: e, .. }) if *e == endpoint)
            && matches!(op.result, Some(Reply::Kv(KvReply::Ok)));
        let Some(applied) = op.applied_at.filter(|_| granted) else {
            return false;
        };
        applied <= at
            && at < applied + COOLDOWN
            && op.lost_at.is_none_or(|l| l > at)
            && !token_forgotten_by_restart(history, applied, at)
    })
}

/// Whether `process`'s last probe token request of `endpoint` answered by `at` was refused
/// by Redis (`SET NX` applied, answered nil): a token was held when Redis refused it, even if
/// a failover lost that token right after, before the rejection was noted.
fn token_refused(
    history: &History,
    process: ProcessId,
    endpoint: EndpointId,
    at: Timestamp,
) -> bool {
    history
        .ops
        .iter()
        .filter(|op| {
            op.process == process
                && matches!(tag(op), Some(BreakerTag::ProbeToken { endpoint: e, .. }) if *e == endpoint)
                && op.completed_at.is_some_and(|c| c <= at)
        })
        .max_by_key(|op| op.completed_at)
        .is_some_and(|op| {
            op.applied_at.is_some() && matches!(op.result, Some(Reply::Kv(KvReply::Nil)))
        })
}

fn token_forgotten_by_restart(history: &History, applied: Timestamp, at: Timestamp) -> bool {
    history
        .faults
        .iter()
        .any(|f| matches!(f.fault, Fault::RedisRestart) && applied <= f.at && f.at <= at)
}

/// C3.
pub fn no_rejection_without_failure(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let failures: Vec<(EndpointId, Timestamp)> = history
        .ops
        .iter()
        .filter_map(|op| match tag(op) {
            Some(BreakerTag::Call { endpoint, .. }) => match call_outcome(op) {
                Some((at, true)) => Some((*endpoint, at)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    for note in &history.notes {
        let Some(BreakerNote::Rejected { endpoint, why, .. }) = note.note.get::<BreakerNote>()
        else {
            continue;
        };
        let from = note.at - C3_WINDOW;
        let last = failures
            .iter()
            .filter(|(e, at)| e == endpoint && *at <= note.at)
            .map(|(_, at)| *at)
            .max();
        let probe_taken = *why == Rejection::ProbeTaken
            && token_refused(history, note.process, *endpoint, note.at);
        if last.is_some_and(|at| at >= from)
            || token_live(history, *endpoint, note.at)
            || probe_taken
        {
            continue;
        }
        verdict.violations.push(Violation {
            invariant: C3.name.into(),
            explanation: format!(
                "{} rejected a request to {endpoint} at {} ({}) although {}, and no probe \
                 token of it was live",
                history.name(note.process),
                note.at,
                why.as_str(),
                match last {
                    Some(at) => format!(
                        "its last observed failure was at {at}, more than {C3_WINDOW} before"
                    ),
                    None => "no call to it had failed".to_string(),
                },
            ),
            ops: Vec::new(),
        });
        break;
    }
    verdict
}

/// One accepted event of a shared failure counter, in Redis' apply order.
enum CounterEvent {
    /// An update leaving this value.
    Update(i64),
    /// A reset (`SET 0`, `DEL`).
    Reset,
    /// A window set on the key by the update of its group (`incr_window` answering 1): it
    /// expires this long after.
    Window(Duration),
}

/// An accepted counter event of `op`, and the window it opened (`incr_window`'s first count
/// of a window sets its expiry in the same atomic step).
fn counter_event(op: &OpRecord) -> Option<(String, CounterEvent, Option<Duration>)> {
    let t = tag(op)?;
    if op.lost_at.is_some() || op.applied_at.is_none() {
        return None;
    }
    let result = op.result.as_ref()?;
    let event = |key: &String, e: CounterEvent| Some((key.clone(), e, None));
    match (t, &op.op, result) {
        (BreakerTag::FailCount { .. }, StoreOp::Kv(KvOp::Set { key, value, .. }), r)
            if r.is_success_of(&op.op) =>
        {
            event(key, CounterEvent::Update(value.parse().ok()?))
        }
        (
            BreakerTag::FailCount { .. },
            StoreOp::Kv(KvOp::IncrBy { key, .. }),
            Reply::Kv(KvReply::Int(v)),
        ) => event(key, CounterEvent::Update(*v)),
        (
            BreakerTag::FailCount { .. },
            StoreOp::Kv(KvOp::Script {
                script: ScriptName::IncrWindow,
                keys,
                args,
            }),
            Reply::Kv(KvReply::Int(v)),
        ) => {
            let window = (*v == 1)
                .then(|| args.first()?.parse::<u64>().ok().map(Duration::from_ms))
                .flatten();
            Some((keys.first()?.clone(), CounterEvent::Update(*v), window))
        }
        (BreakerTag::FailReset { .. }, StoreOp::Kv(KvOp::Set { key, .. }), r)
            if r.is_success_of(&op.op) =>
        {
            event(key, CounterEvent::Reset)
        }
        (
            BreakerTag::FailReset { .. },
            StoreOp::Kv(KvOp::Del { key }),
            Reply::Kv(KvReply::Int(_)),
        ) => event(key, CounterEvent::Reset),
        _ => None,
    }
}

/// C4.
pub fn counter_exact(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let restarts: Vec<Timestamp> = history.redis_restarts();
    let mut by_key: BTreeMap<String, Vec<(Timestamp, usize, CounterEvent)>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let (Some((key, event, window)), Some(at)) = (counter_event(op), op.applied_at) {
            let events = by_key.entry(key).or_default();
            events.push((at, i, event));
            if let Some(ttl) = window {
                events.push((at, i, CounterEvent::Window(ttl)));
            }
        }
    }
    for (key, mut events) in by_key {
        events.sort_by_key(|(at, i, _)| (*at, *i));
        // The values the counter may hold. Events of one instant are taken as one group:
        // the net world lists operations applied at one instant in their invocation order,
        // not necessarily Redis' order, so a group's updates are taken in increasing value
        // and its resets (its own, a restart's, the window's end) may come before or after
        // them.
        let mut counts: BTreeSet<i64> = BTreeSet::from([0]);
        let mut expires: Option<Timestamp> = None;
        let mut restart = 0;
        let mut start = 0;
        'groups: while start < events.len() {
            let at = events[start].0;
            let end = start + events[start..].iter().take_while(|e| e.0 == at).count();
            let group = &events[start..end];
            start = end;
            let mut reset_in_group = false;
            while restart < restarts.len() && restarts[restart] <= at {
                if restarts[restart] < at {
                    counts = BTreeSet::from([0]);
                } else {
                    reset_in_group = true;
                }
                expires = None;
                restart += 1;
            }
            if let Some(e) = expires.filter(|e| *e <= at) {
                if e < at {
                    counts = BTreeSet::from([0]);
                } else {
                    reset_in_group = true;
                }
                expires = None;
            }
            let mut updates: Vec<(i64, usize)> = Vec::new();
            for (_, i, event) in group {
                match event {
                    CounterEvent::Reset => reset_in_group = true,
                    CounterEvent::Window(ttl) => expires = Some(at + *ttl),
                    CounterEvent::Update(v) => updates.push((*v, *i)),
                }
            }
            if reset_in_group {
                counts.insert(0);
            }
            updates.sort_unstable();
            for (v, i) in updates {
                if !counts.contains(&(v - 1)) {
                    let count = counts.iter().next_back().copied().unwrap_or(0);
                    let op = &history.ops[i];
                    verdict.violations.push(Violation {
                        invariant: C4.name.into(),
                        explanation: format!(
                            "{} left {key} = {v} at {at}, but {count} failure(s) had been \
                             recorded in it since its last reset: {}",
                            history.name(op.process),
                            if v <= count {
                                format!("{} recorded failure(s) lost", count + 1 - v)
                            } else {
                                "it counted failures nobody recorded".to_string()
                            },
                        ),
                        ops: vec![i],
                    });
                    break 'groups;
                }
                counts = BTreeSet::from([v]);
            }
            if reset_in_group {
                counts.insert(0);
            }
        }
    }
    verdict
}

/// The `sometimes` and protection counts other than `breaker-opened`.
pub fn coverage(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let (mut down_opens, mut forced) = (0, 0);
    for note in &history.notes {
        match note.note.get::<BreakerNote>() {
            Some(BreakerNote::OpenedLocally {
                redis_down: true, ..
            }) => down_opens += 1,
            Some(BreakerNote::ForcedOpen { .. }) => forced += 1,
            _ => {}
        }
    }
    let (mut refused, mut merged, mut served) = (0, 0, 0);
    // Each process's latest breaker read: whether Redis answered it.
    let mut read_failed: BTreeMap<(ProcessId, EndpointId), bool> = BTreeMap::new();
    for op in &history.ops {
        match tag(op) {
            Some(BreakerTag::ProbeToken { .. })
                if !op.timed_out && matches!(op.result, Some(Reply::Kv(KvReply::Nil))) =>
            {
                refused += 1
            }
            Some(BreakerTag::OpenWrite { merge: true, .. }) if op.succeeded() => merged += 1,
            Some(
                BreakerTag::StateRead { endpoint, .. } | BreakerTag::OpenRead { endpoint, .. },
            ) => {
                let failed = op.timed_out
                    || !matches!(op.result, Some(Reply::Kv(KvReply::Bulk(_) | KvReply::Nil)));
                read_failed.insert((op.process, *endpoint), failed);
            }
            Some(BreakerTag::Call {
                endpoint,
                probe: Probe::No,
                ..
            }) if read_failed.get(&(op.process, *endpoint)) == Some(&true) => served += 1,
            _ => {}
        }
    }
    verdict.count(OPENED_WHILE_REDIS_DOWN.name, down_opens);
    verdict.count(TOKEN_REFUSED.name, refused);
    verdict.count(OPEN_WINS_MERGE.name, merged);
    verdict.count(FORCED_OPEN.name, forced);
    verdict.count(SERVED_THROUGH_OUTAGE.name, served);
    verdict
}
