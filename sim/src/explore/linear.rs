//! Linearizability of the Redis keys of any [`History`], simulated or recorded on real
//! servers: core's checker ([`racelab_core::linear`]) with Redis' own commands and scripts as
//! the sequential specification ([`KeySpace`], the same code as the Redis model).
//!
//! - **Objects.** Keys are partitioned (Porcupine's P-compositionality): a key is its own
//!   object unless a script touches it together with other keys, which then form one object.
//! - **What the client knew.** An operation is its invocation and, when the client got
//!   Redis' answer, that answer and when it came; a timeout, a cut connection or a crash
//!   leaves the outcome unknown (it may have applied at any later moment, or never). So a
//!   simulated history is judged exactly as a recorded one would be.
//! - **Left out.** `PUBLISH` (a channel, not a key), and `TTL`/`PTTL`, whose answers depend on
//!   the instant they were served; leaving out a read only removes constraints, so it can hide
//!   a violation but never invent one.
//! - **Expiry.** When a key expires is known only within bounds: an operation takes effect
//!   somewhere between its invocation and its answer. The specification runs each operation
//!   at its invocation, so a TTL it sets runs out at the earliest instant it could; every later
//!   operation that may come after that instant (it was answered after it, or never) branches:
//!   the key has expired, or it has not yet (and the operation then runs just before that
//!   instant). This admits every real timing, and more (a key may outlive its TTL), so it can
//!   hide a violation but never invent one. More than [`TTL_BRANCH_MAX`] keys of one object in
//!   that window at once leave the object undecided.
//! - **Replies.** Equal, except that `SMEMBERS` and `HGETALL` compare as sets (the server's
//!   hash order) and any two errors are equal (the text of a script error names its script
//!   on a real server).
//!
//! Redis with asynchronous replication is not linearizable: a failover or a restart without
//! persistence loses acknowledged writes. The checker shows which keys that touched.

use std::collections::BTreeMap;
use std::fmt;

use racelab_core::linear::{Operation, Outcome, Spec, check};
use racelab_core::{History, KvOp, KvReply, Reply, ScriptName, StoreOp, Timestamp};

use super::redis::KeySpace;

/// The default bound on search steps per object.
pub const LINEAR_BOUND: u64 = 1_000_000;

/// What the checker concluded about one object (one key, or keys a script ties together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectVerdict {
    /// Some order of its operations respects real time and Redis' semantics.
    Linearizable,
    /// None does.
    NotLinearizable {
        /// The longest consistent order found, as indexes into `History::ops`.
        prefix: Vec<usize>,
        /// An operation (index into `History::ops`) that could not come next.
        stuck: usize,
    },
    /// Not decided, and why.
    Unknown(String),
}

/// One object's keys, operations and verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectReport {
    /// Its keys, sorted.
    pub keys: Vec<String>,
    /// How many operations of the history touched it.
    pub operations: usize,
    /// The verdict.
    pub verdict: ObjectVerdict,
}

/// The verdicts of every object of a history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearReport {
    /// One per object, by first key.
    pub objects: Vec<ObjectReport>,
}

impl LinearReport {
    /// The objects found not linearizable.
    pub fn violations(&self) -> impl Iterator<Item = &ObjectReport> {
        self.objects
            .iter()
            .filter(|o| matches!(o.verdict, ObjectVerdict::NotLinearizable { .. }))
    }

    /// How many objects were linearizable, not linearizable, and undecided.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for o in &self.objects {
            match o.verdict {
                ObjectVerdict::Linearizable => c.0 += 1,
                ObjectVerdict::NotLinearizable { .. } => c.1 += 1,
                ObjectVerdict::Unknown(_) => c.2 += 1,
            }
        }
        c
    }

    /// The keys of the objects found not linearizable, sorted.
    pub fn violating_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.violations().flat_map(|o| o.keys.clone()).collect();
        keys.sort();
        keys
    }
}

impl fmt::Display for LinearReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ok, bad, unknown) = self.counts();
        write!(
            f,
            "{} objects: {ok} linearizable, {bad} not, {unknown} undecided",
            self.objects.len()
        )
    }
}

/// How many keys of one object may be in their expiry window at one operation (each doubles
/// the states tried).
pub const TTL_BRANCH_MAX: usize = 4;

/// Redis as a sequential specification, for one object. `too_many` records that an operation
/// met more than [`TTL_BRANCH_MAX`] keys that may have expired.
struct RedisSpec {
    too_many: std::cell::Cell<bool>,
}

impl Spec for RedisSpec {
    type State = KeySpace;
    type Input = KvOp;
    type Output = KvReply;

    fn init(&self) -> KeySpace {
        KeySpace::new()
    }

    fn step(
        &self,
        state: &KeySpace,
        op: &KvOp,
        call: Timestamp,
        ret: Option<Timestamp>,
        output: Option<&KvReply>,
    ) -> Vec<KeySpace> {
        // Keys whose TTL may have run out by the time this operation took effect.
        let latest = ret.unwrap_or(Timestamp::from_ms(u64::MAX));
        let window: Vec<(String, Timestamp)> = state
            .expiring()
            .into_iter()
            .filter(|(_, at)| *at <= latest)
            .collect();
        if window.len() > TTL_BRANCH_MAX {
            self.too_many.set(true);
            return Vec::new();
        }
        let mut next: Vec<KeySpace> = Vec::new();
        for expired in 0u32..(1 << window.len()) {
            let mut s = state.clone();
            let mut now = call;
            for (j, (key, at)) in window.iter().enumerate() {
                if expired & (1 << j) != 0 {
                    s.expire_now(key);
                } else {
                    // Still there: the operation took effect before the key expired.
                    now = now.min(Timestamp::from_ms(at.as_ms().saturating_sub(1)));
                }
            }
            let reply = s.execute(now, op);
            if output.is_none_or(|seen| same_reply(op, &reply, seen)) && !next.contains(&s) {
                next.push(s);
            }
        }
        next
    }
}

/// Whether the specification's reply and the recorded one agree (see the module's docs).
fn same_reply(op: &KvOp, spec: &KvReply, seen: &KvReply) -> bool {
    match (spec, seen) {
        (KvReply::Error(_), KvReply::Error(_)) => true,
        (KvReply::Array(a), KvReply::Array(b)) if matches!(op, KvOp::SMembers { .. }) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.sort();
            b.sort();
            a == b
        }
        (KvReply::Pairs(a), KvReply::Pairs(b)) => {
            let (mut a, mut b) = (a.clone(), b.clone());
            a.sort();
            b.sort();
            a == b
        }
        (a, b) => a == b,
    }
}

/// Whether a script touches only the keys it is given in `KEYS`, as Redis asks scripts to
/// (and as Redis Cluster requires). The scheduler's scripts derive further keys from their
/// arguments and from what they read, so a history that runs one cannot be split by key: it
/// is one object, left undecided. A script not listed here counts as undeclaring.
fn declares_its_keys(script: ScriptName) -> bool {
    matches!(
        script,
        ScriptName::CompareAndExtend
            | ScriptName::CompareAndDelete
            | ScriptName::SetIfNewer
            | ScriptName::DeductIfEnough
            | ScriptName::IncrWindow
    )
}

/// The keys an operation is given (a script's `KEYS`); `None` for the operations the checker
/// leaves out (`PUBLISH`, `TTL`, `PTTL`).
pub fn keys_of(op: &KvOp) -> Option<Vec<&str>> {
    match op {
        KvOp::Publish { .. } | KvOp::Ttl { .. } | KvOp::PTtl { .. } => None,
        KvOp::Script { keys, .. } => Some(keys.iter().map(String::as_str).collect()),
        other => other.key().map(|k| vec![k]),
    }
}

/// Union-find over key names.
struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }
}

/// Checks every Redis object of `history`, with at most `bound` search steps per object.
pub fn check_redis(history: &History, bound: u64) -> LinearReport {
    // The Redis operations kept, with their keys.
    let mut kept: Vec<(usize, &KvOp, Vec<&str>)> = Vec::new();
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    let mut undeclared = Vec::new();
    for (i, rec) in history.ops.iter().enumerate() {
        let StoreOp::Kv(op) = &rec.op else { continue };
        if let KvOp::Script { script, .. } = op
            && !declares_its_keys(*script)
        {
            undeclared.push(script.as_str());
        }
        let Some(keys) = keys_of(op) else { continue };
        for k in &keys {
            let n = ids.len();
            ids.entry(k).or_insert(n);
        }
        kept.push((i, op, keys));
    }
    if !undeclared.is_empty() {
        undeclared.sort();
        undeclared.dedup();
        let mut keys: Vec<String> = ids.keys().map(|k| k.to_string()).collect();
        keys.sort();
        return LinearReport {
            objects: vec![ObjectReport {
                keys,
                operations: kept.len(),
                verdict: ObjectVerdict::Unknown(format!(
                    "the scripts {} touch keys they are not given, so the history cannot be split by key",
                    undeclared.join(", ")
                )),
            }],
        };
    }
    let mut groups = Groups {
        parent: (0..ids.len()).collect(),
    };
    for (_, _, keys) in &kept {
        for pair in keys.windows(2) {
            groups.union(ids[pair[0]], ids[pair[1]]);
        }
    }
    // Objects by their root key id; operations in history order. A script without keys is
    // an object of its own.
    let mut objects: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (n, (_, _, keys)) in kept.iter().enumerate() {
        let root = match keys.first() {
            Some(k) => (groups.find(ids[k]), 0),
            None => (usize::MAX, n),
        };
        objects.entry(root).or_default().push(n);
    }
    let mut names: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (k, &id) in &ids {
        names
            .entry(groups.find(id))
            .or_default()
            .push(k.to_string());
    }

    let mut report = LinearReport::default();
    for ((root, _), members) in objects {
        let mut keys = names.get(&root).cloned().unwrap_or_default();
        keys.sort();
        let ops: Vec<Operation<KvOp, KvReply>> = members
            .iter()
            .map(|&n| {
                let rec = &history.ops[kept[n].0];
                let ret = match (&rec.result, rec.completed_at, rec.timed_out) {
                    (Some(Reply::Kv(r)), Some(at), false) => Some((at, r.clone())),
                    _ => None,
                };
                Operation {
                    call: rec.invoked_at,
                    ret,
                    input: kept[n].1.clone(),
                }
            })
            .collect();
        let spec = RedisSpec {
            too_many: std::cell::Cell::new(false),
        };
        let outcome = check(&spec, &ops, bound);
        let verdict = if spec.too_many.get() {
            ObjectVerdict::Unknown(format!(
                "more than {TTL_BRANCH_MAX} of its keys may expire around one operation"
            ))
        } else {
            match outcome {
                Outcome::Linearizable => ObjectVerdict::Linearizable,
                Outcome::NotLinearizable(c) => ObjectVerdict::NotLinearizable {
                    prefix: c.prefix.iter().map(|&i| kept[members[i]].0).collect(),
                    stuck: kept[members[c.stuck]].0,
                },
                Outcome::Unknown { steps } => {
                    ObjectVerdict::Unknown(format!("search bound of {steps} steps reached"))
                }
            }
        };
        report.objects.push(ObjectReport {
            keys,
            operations: members.len(),
            verdict,
        });
    }
    report.objects.sort_by(|a, b| a.keys.cmp(&b.keys));
    report
}
