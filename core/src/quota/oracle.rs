//! The quota family's oracles (R-000-02, R-000-05, AC-000-3), judged on the committed rows
//! at the end of a run ([`QuotaEnd`]) and on the history.
//!
//! - `I-LIMIT`: no bucket's committed charges exceed its limit (`used_0 + Σ ledger <= limit`),
//!   nor do its counters (`used + reserved <= limit`), and no counter is negative.
//! - `I-COUNT`: every bucket's `used` is `used_0` plus the units of the ledger rows admitted
//!   against it: each request counted once, in its admission bucket.
//! - `I-RESERVE`: every bucket's `reserved` is the sum of the estimates of its open
//!   reservations, and no reservation was resolved (settled, released, voided) twice.
//! - `reservations-resolve` (eventually): a run that settled leaves no reservation open.
//!
//! Together `I-LIMIT` and `I-COUNT` are R-000-02's I-BUDGET and R-000-05's I-LIMIT/I-COUNT.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::history::History;
use crate::ids::ProcessId;
use crate::ops::{Reply, Row, SqlReply, Table, Value};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::Timestamp;

use super::tables::{QUOTA_LEDGER, QUOTA_RESERVATIONS, QUOTA_USAGE};
use super::tag::QuotaTag;
use super::{Counter, STATUS_OPEN, STATUS_VOIDED};

/// `I-LIMIT`.
pub const I_LIMIT: Property = Property::always(
    "I-LIMIT",
    "no bucket's committed charges or counters exceed its limit, and no counter is negative",
);
/// `I-COUNT`.
pub const I_COUNT: Property = Property::always(
    "I-COUNT",
    "every bucket's used counter equals its start value plus the charges admitted against it, \
     each counted once",
);
/// `I-RESERVE`.
pub const I_RESERVE: Property = Property::always(
    "I-RESERVE",
    "every bucket's reserved counter equals the estimates of its open reservations, and each \
     reservation resolves at most once",
);
/// `reservations-resolve`.
pub const RESERVATIONS_RESOLVE: Property = Property::eventually(
    "reservations-resolve",
    "a run that settled leaves no reservation open",
);
/// `reservation-refused`: the conditional reservation found the bucket full.
pub const RESERVATION_REFUSED: Property = Property::protection(
    "reservation-refused",
    "a reservation was refused because used + reserved + est would exceed the limit",
);
/// `abandoned-voided`: the sweeper voided a reservation nobody settled.
pub const ABANDONED_VOIDED: Property = Property::protection(
    "abandoned-voided",
    "the sweeper voided a reservation its gateway abandoned (crash, lost outcome)",
);
/// `resolution-refused`: a settlement or release found its reservation already resolved.
pub const RESOLUTION_REFUSED: Property = Property::protection(
    "resolution-refused",
    "a settlement or release found its reservation already resolved and changed nothing",
);
/// `admissions-overlapped`: two requests were between admission and billing at once.
pub const ADMISSIONS_OVERLAPPED: Property = Property::sometimes(
    "admissions-overlapped",
    "two requests of one bucket were between admission and billing at the same time",
);
/// `bucket-straddled`: a request admitted on one day was billed on the next.
pub const BUCKET_STRADDLED: Property = Property::sometimes(
    "bucket-straddled",
    "a request admitted in one day's bucket was billed after the day ended",
);

/// A usage bucket's committed counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketEnd {
    /// `used`.
    pub used: i64,
    /// `reserved`.
    pub reserved: i64,
    /// `limit_units`.
    pub limit: i64,
}

/// A reservation's committed row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationEnd {
    /// The bucket it holds.
    pub bucket: String,
    /// The estimate held.
    pub est: i64,
    /// Its status.
    pub status: String,
}

/// The family's end state, read from the committed rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaEnd {
    /// Each bucket's `used` before the run (the charges committed before it).
    pub initial_used: BTreeMap<String, i64>,
    /// Each bucket's counters at the end.
    pub buckets: BTreeMap<String, BucketEnd>,
    /// The ledger: request key to (admission bucket, units).
    pub ledger: BTreeMap<String, (String, i64)>,
    /// The reservations by request key.
    pub reservations: BTreeMap<String, ReservationEnd>,
    /// Whether the run settled (quiesced or drained after its horizon).
    pub settled: bool,
}

fn int(row: &Row, column: &str) -> i64 {
    match row.get(column) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

fn text(row: &Row, column: &str) -> String {
    match row.get(column) {
        Some(Value::Text(s)) => s.clone(),
        _ => String::new(),
    }
}

impl QuotaEnd {
    /// Reads the family's tables from the committed rows.
    pub fn read<'a>(
        initial_used: &BTreeMap<String, i64>,
        rows: impl IntoIterator<Item = (&'a Table, &'a str, &'a Row)>,
        settled: bool,
    ) -> QuotaEnd {
        let mut end = QuotaEnd {
            initial_used: initial_used.clone(),
            settled,
            ..QuotaEnd::default()
        };
        for (table, key, row) in rows {
            if *table == QUOTA_USAGE {
                let bucket = BucketEnd {
                    used: int(row, "used"),
                    reserved: int(row, "reserved"),
                    limit: int(row, "limit_units"),
                };
                end.buckets.insert(key.to_string(), bucket);
            } else if *table == QUOTA_LEDGER {
                end.ledger
                    .insert(key.to_string(), (text(row, "bucket"), int(row, "units")));
            } else if *table == QUOTA_RESERVATIONS {
                let r = ReservationEnd {
                    bucket: text(row, "bucket"),
                    est: int(row, "est"),
                    status: text(row, "status"),
                };
                end.reservations.insert(key.to_string(), r);
            }
        }
        end
    }

    /// The units of the ledger rows admitted against `bucket`.
    pub fn charged(&self, bucket: &str) -> i64 {
        self.ledger
            .values()
            .filter(|(b, _)| b == bucket)
            .fold(0i64, |sum, (_, units)| sum.saturating_add(*units))
    }

    /// How many ledger rows (charged requests) there are.
    pub fn charges(&self) -> usize {
        self.ledger.len()
    }
}

fn violation(property: &Property, explanation: String) -> Violation {
    Violation {
        invariant: property.name.to_string(),
        explanation,
        ops: Vec::new(),
    }
}

/// `I-LIMIT`: per bucket, `used_0 + Σ ledger <= limit`, `used + reserved <= limit`, and
/// `used, reserved >= 0`.
pub fn within_limits(end: &QuotaEnd) -> Verdict {
    let mut verdict = Verdict::default();
    for (bucket, b) in &end.buckets {
        let initial = end.initial_used.get(bucket).copied().unwrap_or(0);
        let charged = initial.saturating_add(end.charged(bucket));
        if charged > b.limit {
            verdict.violations.push(violation(
                &I_LIMIT,
                format!(
                    "{bucket}: {initial} units before the run plus {} charged by the ledger is \
                     {charged}, over its limit {}",
                    end.charged(bucket),
                    b.limit
                ),
            ));
        }
        let counted = b.used.saturating_add(b.reserved);
        if counted > b.limit {
            verdict.violations.push(violation(
                &I_LIMIT,
                format!(
                    "{bucket}: used {} + reserved {} = {counted}, over its limit {}",
                    b.used, b.reserved, b.limit
                ),
            ));
        }
        if b.used < 0 || b.reserved < 0 {
            verdict.violations.push(violation(
                &I_LIMIT,
                format!(
                    "{bucket}: a negative counter (used {}, reserved {})",
                    b.used, b.reserved
                ),
            ));
        }
    }
    verdict
}

/// `I-COUNT`: per bucket, `used == used_0 + Σ ledger units admitted against it`.
pub fn counted_once(end: &QuotaEnd) -> Verdict {
    let mut verdict = Verdict::default();
    for (bucket, b) in &end.buckets {
        let initial = end.initial_used.get(bucket).copied().unwrap_or(0);
        let expected = initial.saturating_add(end.charged(bucket));
        if b.used != expected {
            let mut who = String::new();
            for (request, (_, units)) in end.ledger.iter().filter(|(_, (bb, _))| bb == bucket) {
                let _ = write!(who, " {request}:{units}");
            }
            verdict.violations.push(violation(
                &I_COUNT,
                format!(
                    "{bucket}: used is {} but {initial} before the run plus the ledger's \
                     charges admitted against it ({}) is {expected} ({:+}); ledger:{}",
                    b.used,
                    end.charged(bucket),
                    b.used.saturating_sub(expected),
                    if who.is_empty() { " none" } else { &who }
                ),
            ));
        }
    }
    verdict
}

/// The request key a resolution operation (settle, release, void) changed, if it changed
/// one: the store returned its row and the change became durable.
fn resolution(op: &crate::history::OpRecord) -> Option<String> {
    let tag = QuotaTag::of(&op.tag)?;
    if !matches!(
        tag,
        QuotaTag::Settle { .. } | QuotaTag::Release { .. } | QuotaTag::Void { .. }
    ) || !op.accepted()
    {
        return None;
    }
    match &op.result {
        Some(Reply::Sql(SqlReply::Rows(rows))) => rows.first().map(|r| r.key.clone()),
        _ => None,
    }
}

/// `I-RESERVE`: per bucket, `reserved` equals the estimates of its open reservations; no
/// reservation resolved twice (two accepted resolutions in the history); and, if the run
/// settled, `reservations-resolve`: none is left open.
pub fn reservations_balance(history: &History, end: &QuotaEnd) -> Verdict {
    let mut verdict = Verdict::default();
    for (bucket, b) in &end.buckets {
        let open: i64 = end
            .reservations
            .values()
            .filter(|r| r.bucket == *bucket && r.status == STATUS_OPEN)
            .fold(0i64, |sum, r| sum.saturating_add(r.est));
        if b.reserved != open {
            verdict.violations.push(violation(
                &I_RESERVE,
                format!(
                    "{bucket}: reserved is {} but its open reservations hold {open}",
                    b.reserved
                ),
            ));
        }
    }
    let mut resolved: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Some(key) = resolution(op) {
            resolved.entry(key).or_default().push(i);
        }
    }
    for (key, ops) in resolved.into_iter().filter(|(_, ops)| ops.len() > 1) {
        let mut explanation = format!("reservation {key} was resolved {} times:", ops.len());
        for &i in &ops {
            let op = &history.ops[i];
            let at = op.durable_at.unwrap_or(op.invoked_at);
            let _ = write!(
                explanation,
                " {} by {} at {at};",
                op.tag.kind(),
                history.name(op.process)
            );
        }
        verdict.violations.push(Violation {
            invariant: I_RESERVE.name.to_string(),
            explanation,
            ops,
        });
    }
    if end.settled {
        let open: Vec<&String> = end
            .reservations
            .iter()
            .filter(|(_, r)| r.status == STATUS_OPEN)
            .map(|(k, _)| k)
            .collect();
        if !open.is_empty() {
            verdict.violations.push(violation(
                &RESERVATIONS_RESOLVE,
                format!("the run settled with reservations still open: {open:?}"),
            ));
        }
    }
    verdict
}

/// The day bucket of `bucket`'s key at `at`, if `bucket` is a daily one.
fn bucket_at(counter: Counter, bucket: &str, at: Timestamp) -> Option<String> {
    let (key, _) = bucket.rsplit_once(":d")?;
    Some(counter.bucket(key, at))
}

/// Counts the family's `sometimes` properties: refused reservations, voided abandoned ones,
/// refused second resolutions, overlapping admissions, and (for daily counters) requests
/// billed after their admission day ended.
pub fn coverage(history: &History, end: &QuotaEnd, counter: Counter) -> Verdict {
    let mut verdict = Verdict::default();
    let empty = |op: &crate::history::OpRecord| matches!(&op.result, Some(Reply::Sql(SqlReply::Rows(rows))) if rows.is_empty());
    let mut refused = 0;
    let mut second = 0;
    let mut straddled = 0;
    // Per request: (admitted at, billed at).
    let mut windows: BTreeMap<u64, (Option<Timestamp>, Option<Timestamp>, String)> =
        BTreeMap::new();
    for op in &history.ops {
        let Some(tag) = QuotaTag::of(&op.tag) else {
            continue;
        };
        match tag {
            QuotaTag::Reserve { .. } if empty(op) => refused += 1,
            QuotaTag::Settle { .. } | QuotaTag::Release { .. } if empty(op) => second += 1,
            _ => {}
        }
        let (Some(request), Some(at)) = (tag.request(), op.applied_at) else {
            continue;
        };
        let w = windows.entry(request.0).or_default();
        match tag {
            QuotaTag::Check { bucket, .. } | QuotaTag::Reserve { bucket, .. } => {
                w.0.get_or_insert(at);
                w.2.clone_from(bucket);
            }
            QuotaTag::Ledger { .. } if op.accepted() => {
                w.1 = Some(at);
                if bucket_at(counter, &w.2, at).is_some_and(|b| b != w.2) {
                    straddled += 1;
                }
            }
            _ => {}
        }
    }
    let spans: Vec<(Timestamp, Timestamp, &String)> = windows
        .values()
        .filter_map(|(a, b, bucket)| Some(((*a)?, (*b)?, bucket)))
        .collect();
    let overlapped = spans
        .iter()
        .filter(|x| {
            spans
                .iter()
                .any(|y| !std::ptr::eq(*x, y) && x.2 == y.2 && y.0 < x.1 && x.0 < y.1)
        })
        .count();
    let voided = end
        .reservations
        .values()
        .filter(|r| r.status == STATUS_VOIDED)
        .count();
    verdict.count(RESERVATION_REFUSED.name, refused);
    verdict.count(RESOLUTION_REFUSED.name, second);
    verdict.count(ABANDONED_VOIDED.name, voided as u64);
    verdict.count(ADMISSIONS_OVERLAPPED.name, overlapped as u64);
    verdict.count(BUCKET_STRADDLED.name, straddled);
    verdict
}

// ---------------------------------------------------------------------------------------------
// R-000-04: the Redis mirror of the balance row

/// `I-Q1`.
pub const I_Q1: Property = Property::always(
    "I-Q1",
    "the costs of the upstream calls admitted never exceed the initial balance",
);
/// `I-Q2`.
pub const I_Q2: Property = Property::always(
    "I-Q2",
    "the mirror shows every committed version within 1 s, and after a quiet second it equals \
     the committed row field by field",
);
/// `I-Q3`.
pub const I_Q3: Property = Property::always(
    "I-Q3",
    "the version the mirror's accepted writes set never decreases",
);
/// `stale-mirror-refused`: a versioned mirror write found a newer version and wrote nothing.
pub const STALE_MIRROR_REFUSED: Property = Property::protection(
    "stale-mirror-refused",
    "a versioned mirror write found a newer version in Redis and wrote nothing",
);
/// `mirror-repaired`: the reconciler corrected the mirror.
pub const MIRROR_REPAIRED: Property = Property::protection(
    "mirror-repaired",
    "the reconciler found the mirror behind the row and corrected it",
);
/// `admission-refused`: the database refused a deduction the balance could not cover.
pub const ADMISSION_REFUSED: Property = Property::protection(
    "admission-refused",
    "the database's conditional deduction refused a request the balance could not cover",
);
/// `failover-landed`: Redis failed over or restarted during the run.
pub const FAILOVER_LANDED: Property = Property::sometimes(
    "failover-landed",
    "Redis failed over or restarted, losing writes the replica did not have",
);

/// How long the mirror may trail the database (the document's "1 秒内").
pub const CONVERGENCE: crate::time::Duration = crate::time::Duration::from_secs(1);

/// `I-Q1`: the costs of the upstream calls the endpoint applied, at most `initial`.
pub fn admitted_within_balance(history: &History, initial: i64) -> Verdict {
    let mut verdict = Verdict::default();
    let mut total = 0i64;
    let mut ops = Vec::new();
    let mut who = String::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Some(QuotaTag::Upstream { request, cost }) = QuotaTag::of(&op.tag)
            && op.applied_at.is_some()
        {
            total = total.saturating_add(*cost);
            ops.push(i);
            let _ = write!(who, " r{} ({cost})", request.0);
        }
    }
    if total > initial {
        verdict.violations.push(Violation {
            invariant: I_Q1.name.to_string(),
            explanation: format!(
                "upstream calls costing {total} were admitted against a balance of {initial}:{who}"
            ),
            ops,
        });
    }
    verdict
}

/// The fields of a hash read (`HGETALL`), or `None` for another reply.
fn fields(reply: &Reply) -> Option<BTreeMap<String, String>> {
    match reply {
        crate::ops::Reply::Kv(crate::ops::KvReply::Pairs(pairs)) => {
            Some(pairs.iter().cloned().collect())
        }
        _ => None,
    }
}

/// The committed `(balance, version)` rows of the history's accepted deductions, in commit
/// order (time, then version), after the initial row at time zero.
fn commits(history: &History, initial: (i64, i64)) -> Vec<(Timestamp, i64, i64)> {
    let mut out = vec![(Timestamp::ZERO, initial.0, initial.1)];
    for op in &history.ops {
        if !matches!(QuotaTag::of(&op.tag), Some(QuotaTag::Deduct { .. })) || !op.accepted() {
            continue;
        }
        let (Some(at), Some(Reply::Sql(SqlReply::Rows(rows)))) = (op.durable_at, &op.result) else {
            continue;
        };
        if let Some(row) = rows.first()
            && let (Some(b), Some(v)) = (row.int("balance"), row.int("version"))
        {
            out.push((at, b, v));
        }
    }
    // Commits of one millisecond are ordered by version: every commit bumps the row's, and
    // the history lists operations by invocation, not by commit.
    out.sort_by_key(|(at, _, version)| (*at, *version));
    out
}

/// The processes that reconcile the mirror: those that read the row or repaired the mirror
/// and never warmed it.
fn reconcilers(history: &History) -> BTreeSet<ProcessId> {
    let warmers: BTreeSet<ProcessId> = history
        .ops
        .iter()
        .filter(|op| matches!(QuotaTag::of(&op.tag), Some(QuotaTag::Warm)))
        .map(|op| op.process)
        .collect();
    history
        .ops
        .iter()
        .filter(|op| {
            matches!(
                QuotaTag::of(&op.tag),
                Some(QuotaTag::SourceRead | QuotaTag::Repair)
            )
        })
        .map(|op| op.process)
        .filter(|p| !warmers.contains(p))
        .collect()
}

/// The spans `(from, to)` after which the 1 s bound starts again: a failover or a Redis
/// restart (a failover that loses every key), and a fault that disables a reconciler itself
/// (a delayed or lost reply of one of its operations, its pause until it resumes, its
/// partition from a store until it heals, its crash, its restart).
fn disruptions(history: &History) -> Vec<(Timestamp, Timestamp)> {
    use crate::history::Fault;
    let reconcilers = reconcilers(history);
    let mut spans = Vec::new();
    let mut cut: BTreeMap<(ProcessId, crate::history::StoreId), Timestamp> = BTreeMap::new();
    for f in &history.faults {
        let at = f.at;
        match &f.fault {
            Fault::Failover | Fault::RedisRestart => spans.push((at, at)),
            Fault::Delay { process, .. }
            | Fault::DropReply { process, .. }
            | Fault::Crash { process }
            | Fault::Restart { process }
                if reconcilers.contains(process) =>
            {
                spans.push((at, at))
            }
            Fault::Pause { process, duration } if reconcilers.contains(process) => {
                spans.push((at, at + *duration))
            }
            Fault::Partition { process, store } if reconcilers.contains(process) => {
                cut.insert((*process, *store), at);
            }
            Fault::Heal { process, store } => {
                if let Some(from) = cut.remove(&(*process, *store)) {
                    spans.push((from, at));
                }
            }
            _ => {}
        }
    }
    // A partition never healed lasts to the end.
    spans.extend(
        cut.into_values()
            .map(|from| (from, Timestamp::from_ms(u64::MAX))),
    );
    spans
}

/// `I-Q2` on the observer's samples: for a sample at `r`, every version committed by
/// `r - 1 s` is shown; and if no commit happened in the second before `r`, the sample equals
/// the committed row (the `balance`, and the `version` when the mirror keeps one). The bound
/// starts again at the end of a fault the document's criterion (RACES.md 7.1 AC-000-1: crash
/// between commit and sync, pause, failover) does not promise to mask within it: a failover
/// or Redis restart (every key lost), and a fault that disables the reconciler itself (a
/// delayed or lost reply of its own, its pause, partition, crash or restart): a sample
/// within 1 s of such a fault's end is not judged. A mirror still stale 1 s after the
/// reconciler is healthy again is a violation.
pub fn mirror_converges(history: &History, initial: (i64, i64)) -> Verdict {
    let mut verdict = Verdict::default();
    let commits = commits(history, initial);
    let disruptions = disruptions(history);
    for (i, op) in history.ops.iter().enumerate() {
        if !matches!(QuotaTag::of(&op.tag), Some(QuotaTag::Observe)) {
            continue;
        }
        let (Some(r), Some(sample)) = (op.applied_at, op.result.as_ref().and_then(fields)) else {
            continue;
        };
        let Some(since) = r
            .as_ms()
            .checked_sub(CONVERGENCE.as_ms())
            .map(Timestamp::from_ms)
        else {
            continue;
        };
        if disruptions
            .iter()
            .any(|(from, to)| *from <= r && since < *to)
        {
            continue;
        }
        let version = sample.get("version").and_then(|v| v.parse::<i64>().ok());
        let balance = sample.get("balance").and_then(|v| v.parse::<i64>().ok());
        let due = commits.iter().rfind(|(t, ..)| *t <= since);
        let latest = commits.iter().rfind(|(t, ..)| *t <= r);
        let quiet = !commits.iter().any(|(t, ..)| since < *t && *t <= r);
        let mut problem = None;
        if let (Some((t, _, v)), Some(shown)) = (due, version)
            && shown < *v
        {
            problem = Some(format!(
                "the mirror showed version {shown} at {r}, but version {v} committed at {t}"
            ));
        }
        if let (true, Some((t, b, v))) = (quiet, latest)
            && (balance != Some(*b) || version.is_some_and(|shown| shown != *v))
        {
            problem.get_or_insert(format!(
                "after a quiet second the mirror showed {sample:?} at {r}, but the row \
                 committed at {t} is balance {b}, version {v}"
            ));
        }
        if let Some(explanation) = problem {
            verdict.violations.push(Violation {
                invariant: I_Q2.name.to_string(),
                explanation,
                ops: vec![i],
            });
            // The first sample that shows it is the explanation; later ones repeat it.
            break;
        }
    }
    verdict
}

/// The version an accepted mirror write set: an `HSET` with a `version` field, or a
/// `set_if_newer` that wrote (answered 1), applied and never lost to a failover.
fn version_written(op: &crate::history::OpRecord) -> Option<i64> {
    use crate::ops::{KvOp, KvReply, ScriptName, StoreOp};
    if op.applied_at.is_none() || op.lost_at.is_some() {
        return None;
    }
    match (&op.op, &op.result) {
        (StoreOp::Kv(KvOp::HSet { pairs, .. }), Some(Reply::Kv(KvReply::Int(_)))) => pairs
            .iter()
            .rev()
            .find(|(f, _)| f == "version")
            .and_then(|(_, v)| v.parse().ok()),
        (
            StoreOp::Kv(KvOp::Script {
                script: ScriptName::SetIfNewer,
                args,
                ..
            }),
            Some(Reply::Kv(KvReply::Int(1))),
        ) => args.first().and_then(|v| v.parse().ok()),
        _ => None,
    }
}

/// `I-Q3` (or R-000-09's `W2`, named by `property`): in the order Redis applied them, the
/// versions the accepted mirror writes set never decrease. A Redis restart without
/// persistence loses every key, as a failover loses the writes its replica lacked: the writes
/// applied before it are lost, and the versions are compared again from the restart on (a
/// write of an older version into the emptied key is no decrease; a decrease among the
/// writes after one restart still is).
pub fn mirror_monotone(history: &History, property: &Property) -> Verdict {
    let mut verdict = Verdict::default();
    let restarts: Vec<Timestamp> = history
        .faults
        .iter()
        .filter(|f| matches!(f.fault, crate::history::Fault::RedisRestart))
        .map(|f| f.at)
        .collect();
    let mut writes: Vec<(Timestamp, usize, i64)> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| Some((op.applied_at?, i, version_written(op)?)))
        .collect();
    writes.sort();
    let mut newest: Option<(usize, i64, Timestamp)> = None;
    for (at, i, v) in writes {
        if let Some((_, _, since)) = newest
            && restarts.iter().any(|r| since < *r && *r <= at)
        {
            newest = None;
        }
        if let Some((j, w, _)) = newest
            && v < w
        {
            let op = &history.ops[i];
            verdict.violations.push(Violation {
                invariant: property.name.to_string(),
                explanation: format!(
                    "{} wrote version {v} to the mirror at {at}, over version {w} written \
                         by {}",
                    history.name(op.process),
                    history.name(history.ops[j].process)
                ),
                ops: vec![j, i],
            });
            continue;
        }
        newest = Some((i, v, at));
    }
    verdict
}

/// Counts R-000-04's `sometimes` properties: stale mirror writes refused, reconciler repairs,
/// deductions refused, and failovers or restarts.
pub fn mirror_coverage(history: &History) -> Verdict {
    use crate::ops::KvReply;
    let mut verdict = Verdict::default();
    let (mut stale, mut repaired, mut refused) = (0, 0, 0);
    for op in &history.ops {
        let script = |n: i64| matches!(&op.result, Some(Reply::Kv(KvReply::Int(m))) if *m == n);
        match QuotaTag::of(&op.tag) {
            Some(QuotaTag::Mirror { .. }) if script(0) => stale += 1,
            Some(QuotaTag::Repair) if script(1) => repaired += 1,
            Some(QuotaTag::Deduct { .. }) if matches!(&op.result, Some(Reply::Sql(SqlReply::Rows(r))) if r.is_empty()) => {
                refused += 1
            }
            _ => {}
        }
    }
    let failovers = history
        .faults
        .iter()
        .filter(|f| {
            matches!(
                f.fault,
                crate::history::Fault::Failover | crate::history::Fault::RedisRestart
            )
        })
        .count();
    verdict.count(STALE_MIRROR_REFUSED.name, stale);
    verdict.count(MIRROR_REPAIRED.name, repaired);
    verdict.count(ADMISSION_REFUSED.name, refused);
    verdict.count(FAILOVER_LANDED.name, failovers as u64);
    verdict
}

// ---------------------------------------------------------------------------------------------
// R-000-09: warming the mirror

/// `W1`.
pub const W1: Property = Property::always(
    "W1",
    "a cold cache is loaded from the database once, unless a fault (pause, crash, delay, \
     failover) may have cost the loader its lock",
);
/// `W2`.
pub const W2: Property = Property::always(
    "W2",
    "a warm-up never installs a version older than one already installed",
);
/// `W3`.
pub const W3: Property = Property::always(
    "W3",
    "no request admits on the defaults of a cold cache: it admits on a cached or loaded row",
);
/// `cache-warmed`.
pub const CACHE_WARMED: Property = Property::eventually(
    "cache-warmed",
    "at the end of the run the cache holds the committed row",
);
/// `warm-lock-contended`: a request found the warm-up lock taken and did not load.
pub const WARM_LOCK_CONTENDED: Property = Property::protection(
    "warm-lock-contended",
    "a request found the warm-up lock taken and waited instead of loading the row again",
);
/// `stale-warm-refused`: a warm-up's versioned write found a newer version.
pub const STALE_WARM_REFUSED: Property = Property::protection(
    "stale-warm-refused",
    "a warm-up's versioned write found a newer version in the cache and wrote nothing",
);

/// `W1`: two warm-up loads with no pause, crash, delay, failover or restart before the second.
pub fn single_load(history: &History) -> Verdict {
    use crate::history::Fault;
    let mut verdict = Verdict::default();
    let loads: Vec<(Timestamp, usize)> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(QuotaTag::of(&op.tag), Some(QuotaTag::WarmLoad { .. })))
        .filter_map(|(i, op)| Some((op.applied_at?, i)))
        .collect();
    let Some(&(second_at, second)) = loads.get(1) else {
        return verdict;
    };
    let excused = history.faults.iter().any(|f| {
        f.at <= second_at
            && matches!(
                f.fault,
                Fault::Pause { .. }
                    | Fault::Crash { .. }
                    | Fault::Delay { .. }
                    | Fault::Failover
                    | Fault::RedisRestart
            )
    });
    if !excused {
        let first = loads[0].1;
        verdict.violations.push(Violation {
            invariant: W1.name.to_string(),
            explanation: format!(
                "the cold cache was loaded {} times, first by {}, again by {} at {second_at}, \
                 with no fault in between",
                loads.len(),
                history.name(history.ops[first].process),
                history.name(history.ops[second].process)
            ),
            ops: vec![first, second],
        });
    }
    verdict
}

/// `W3`: every upstream call's request last read either a cached balance or a row, never a
/// cold cache.
pub fn no_defaults(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    for (i, op) in history.ops.iter().enumerate() {
        if !matches!(QuotaTag::of(&op.tag), Some(QuotaTag::Upstream { .. }))
            || op.applied_at.is_none()
        {
            continue;
        }
        let last_read = history.ops[..i].iter().enumerate().rev().find(|(_, o)| {
            o.process == op.process
                && matches!(
                    QuotaTag::of(&o.tag),
                    Some(
                        QuotaTag::CacheRead { .. }
                            | QuotaTag::WarmLoad { .. }
                            | QuotaTag::DbRead { .. }
                    )
                )
        });
        let Some((j, read)) = last_read else {
            continue;
        };
        let cold = matches!(QuotaTag::of(&read.tag), Some(QuotaTag::CacheRead { .. }))
            && read
                .result
                .as_ref()
                .and_then(fields)
                .is_some_and(|f| !f.contains_key("balance"));
        if cold {
            verdict.violations.push(Violation {
                invariant: W3.name.to_string(),
                explanation: format!(
                    "{} called the upstream at {} on a cold cache (its last read, at {}, found \
                     nothing): it admitted on the defaults",
                    history.name(op.process),
                    op.invoked_at,
                    read.invoked_at
                ),
                ops: vec![j, i],
            });
        }
    }
    verdict
}

/// `cache-warmed`: the observer's last sample shows the committed row (judged when the run
/// settled).
pub fn cache_warmed(history: &History, initial: (i64, i64), settled: bool) -> Verdict {
    let mut verdict = Verdict::default();
    if !settled {
        return verdict;
    }
    let Some((at, sample)) = history
        .ops
        .iter()
        .filter(|op| matches!(QuotaTag::of(&op.tag), Some(QuotaTag::Observe)))
        .filter_map(|op| Some((op.applied_at?, op.result.as_ref().and_then(fields)?)))
        .next_back()
    else {
        return verdict;
    };
    let Some(&(_, b, v)) = commits(history, initial).last() else {
        return verdict;
    };
    let shows =
        |field: &str, n: i64| sample.get(field).and_then(|x| x.parse::<i64>().ok()) == Some(n);
    if !(shows("balance", b) && shows("version", v)) {
        verdict.violations.push(violation(
            &CACHE_WARMED,
            format!(
                "the cache's last sample at {at} is {sample:?}, but the committed row is \
                 balance {b}, version {v}"
            ),
        ));
    }
    verdict
}

/// Counts R-000-09's `sometimes` properties: contended warm-up locks and refused stale
/// warm-up writes.
pub fn warm_coverage(history: &History) -> Verdict {
    use crate::ops::KvReply;
    let mut verdict = Verdict::default();
    let (mut contended, mut refused) = (0, 0);
    for op in &history.ops {
        match (QuotaTag::of(&op.tag), &op.result) {
            (Some(QuotaTag::Lock { .. }), Some(Reply::Kv(KvReply::Nil))) => contended += 1,
            (Some(QuotaTag::WarmWrite { .. }), Some(Reply::Kv(KvReply::Int(0))))
                if matches!(
                    &op.op,
                    crate::ops::StoreOp::Kv(crate::ops::KvOp::Script { .. })
                ) =>
            {
                refused += 1
            }
            _ => {}
        }
    }
    verdict.count(WARM_LOCK_CONTENDED.name, contended);
    verdict.count(STALE_WARM_REFUSED.name, refused);
    verdict
}
