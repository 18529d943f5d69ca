//! Verdicts and named properties, and the generic oracles every family may use.
//!
//! An oracle is a pure function from a recorded [`History`] (plus the end state its family
//! reads from the stores) to a [`Verdict`] whose explanation names the processes, times and
//! values involved. Oracles live in `core` so that the simulators and the real-server runs
//! share them; a family's own oracles live in its module (`workorder::oracle`,
//! `health::oracle`).
//!
//! Properties follow stateright's vocabulary. A race declares them ([`Property`]):
//! - `always` (safety): must hold in every run; a [`Violation`] names the one that broke;
//! - `eventually` (liveness judged at the run's end): the endpoint recovered, the job
//!   completed; also reported as a [`Violation`];
//! - `sometimes` (coverage): must hold in at least one run of a sweep (the race window
//!   opened, the protection fired); a verdict counts how often each held
//!   ([`Verdict::sometimes`]), and a Correct sweep in which one never held fails.
//!
//! A run that never completed is neither: it is `stuck` ([`Verdict::stuck`]), its own
//! outcome, and never counts as detecting a safety race.
//!
//! Every oracle here has a test that feeds it a known-bad history.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::history::{History, OpRecord};
use crate::time::Timestamp;

/// When a property must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PropertyKind {
    /// In every run, at every moment (safety).
    Always,
    /// By the end of every run that completed (liveness).
    Eventually,
    /// In at least one run of a sweep (coverage).
    Sometimes,
}

impl PropertyKind {
    /// `always`, `eventually` or `sometimes`.
    pub fn as_str(self) -> &'static str {
        match self {
            PropertyKind::Always => "always",
            PropertyKind::Eventually => "eventually",
            PropertyKind::Sometimes => "sometimes",
        }
    }
}

/// A named property a race declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Property {
    /// Its name (`I-WO`, `fenced-write-refused`, ...), the one violations and counts use.
    pub name: &'static str,
    /// When it must hold.
    pub kind: PropertyKind,
    /// For `sometimes` properties: whether it counts a protection refusing a duplicate or
    /// stale write (summed into a sweep's `protections`).
    pub protection: bool,
    /// What it says, in one sentence.
    pub summary: &'static str,
}

impl Property {
    /// A safety property.
    pub const fn always(name: &'static str, summary: &'static str) -> Property {
        Property {
            name,
            kind: PropertyKind::Always,
            protection: false,
            summary,
        }
    }

    /// A liveness property judged at the end of a completed run.
    pub const fn eventually(name: &'static str, summary: &'static str) -> Property {
        Property {
            name,
            kind: PropertyKind::Eventually,
            protection: false,
            summary,
        }
    }

    /// A coverage property: the sweep must see it hold at least once.
    pub const fn sometimes(name: &'static str, summary: &'static str) -> Property {
        Property {
            name,
            kind: PropertyKind::Sometimes,
            protection: false,
            summary,
        }
    }

    /// A coverage property counting a protection at work (a duplicate skipped, a stale write
    /// fenced): the sweep must see it, and its counts make up the sweep's `protections`.
    pub const fn protection(name: &'static str, summary: &'static str) -> Property {
        Property {
            name,
            kind: PropertyKind::Sometimes,
            protection: true,
            summary,
        }
    }
}

/// One broken property, explained.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// The broken property's name (`I-WO`, `I-MX`, ...).
    pub invariant: String,
    /// What happened, naming processes, times and values.
    pub explanation: String,
    /// The operations involved, as indexes into [`History::ops`] (highlighted in timelines).
    pub ops: Vec<usize>,
}

/// The outcome of judging a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Verdict {
    /// Every `always` or `eventually` property that broke; empty when they all held.
    pub violations: Vec<Violation>,
    /// Set when the run did not complete: what was still in flight at its end.
    pub stuck: Option<String>,
    /// How often each `sometimes` property held in the run (absent: never).
    pub sometimes: BTreeMap<String, u64>,
}

impl Verdict {
    /// Whether every `always` and `eventually` property held (a stuck run may still hold).
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether the run did not complete.
    pub fn is_stuck(&self) -> bool {
        self.stuck.is_some()
    }

    /// Adds the violations and counts of another verdict.
    pub fn merge(mut self, other: Verdict) -> Verdict {
        self.violations.extend(other.violations);
        if self.stuck.is_none() {
            self.stuck = other.stuck;
        }
        for (name, n) in other.sometimes {
            *self.sometimes.entry(name).or_default() += n;
        }
        self
    }

    /// Counts `n` more occurrences of the `sometimes` property `name` (nothing for 0).
    pub fn count(&mut self, name: &str, n: u64) {
        if n > 0 {
            *self.sometimes.entry(name.to_string()).or_default() += n;
        }
    }

    /// Whether the property `name` broke.
    pub fn broke(&self, name: &str) -> bool {
        self.violations.iter().any(|v| v.invariant == name)
    }

    /// The names of the broken properties, each once, in order of first violation.
    pub fn broken(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for v in &self.violations {
            if !names.contains(&v.invariant.as_str()) {
                names.push(&v.invariant);
            }
        }
        names
    }

    /// A human explanation: one paragraph per violation, the stuck run's state, or a line
    /// saying all held.
    pub fn explanation(&self) -> String {
        let mut out = String::new();
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = write!(out, "{} violated: {}", v.invariant, v.explanation);
        }
        if let Some(stuck) = &self.stuck {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = write!(out, "stuck: {stuck}");
        }
        if out.is_empty() {
            out.push_str("all invariants held");
        }
        out
    }
}

/// Generic oracle: at most one accepted effect per key. `key_of` says which operations are
/// effects and their key; every key whose effects the store accepted more than once is a
/// violation of `property`.
pub fn at_most_once_per_key<K: Ord + std::fmt::Display>(
    history: &History,
    property: &str,
    mut key_of: impl FnMut(&OpRecord) -> Option<K>,
) -> Verdict {
    let mut by_key: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if op.accepted()
            && let Some(key) = key_of(op)
        {
            by_key.entry(key).or_default().push(i);
        }
    }
    let mut verdict = Verdict::default();
    for (key, ops) in by_key.into_iter().filter(|(_, ops)| ops.len() > 1) {
        let mut explanation = format!("{key} took effect {} times:", ops.len());
        for (k, &i) in ops.iter().enumerate() {
            let op = &history.ops[i];
            let sep = if k == 0 { "" } else { " and" };
            let at = op.durable_at.unwrap_or(op.invoked_at);
            let _ = write!(explanation, "{sep} at {at} by {}", history.name(op.process));
        }
        verdict.violations.push(Violation {
            invariant: property.to_string(),
            explanation,
            ops,
        });
    }
    verdict
}

/// Generic oracle: every accepted write carries the newest epoch granted before it took
/// effect. `grant_of` gives an operation's granted epoch (for a key), `write_of` the epoch a
/// write carries; a write accepted after a newer grant of its key breaks `property`.
pub fn newest_epoch_only<K: Ord + Clone + std::fmt::Display>(
    history: &History,
    property: &str,
    mut grant_of: impl FnMut(&OpRecord) -> Option<(K, u64)>,
    mut write_of: impl FnMut(&OpRecord) -> Option<(K, u64)>,
) -> Verdict {
    let mut grants: Vec<(Timestamp, K, u64, usize)> = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let (Some(at), true) = (op.applied_at, op.succeeded())
            && let Some((key, epoch)) = grant_of(op)
        {
            grants.push((at, key, epoch, i));
        }
    }
    let mut verdict = Verdict::default();
    for (i, op) in history.ops.iter().enumerate() {
        let Some(at) = op.durable_at.filter(|_| op.accepted()) else {
            continue;
        };
        let Some((key, epoch)) = write_of(op) else {
            continue;
        };
        let newer = grants
            .iter()
            .filter(|(t, k, e, _)| *t < at && *k == key && *e > epoch)
            .max_by_key(|(_, _, e, _)| *e);
        if let Some((granted_at, _, newest, gi)) = newer {
            verdict.violations.push(Violation {
                invariant: property.to_string(),
                explanation: format!(
                    "{} wrote {key} with epoch {epoch} at {at}, but epoch {newest} had been \
                     granted at {granted_at}",
                    history.name(op.process)
                ),
                ops: vec![*gi, i],
            });
        }
    }
    verdict
}

/// Generic oracle: conservation of a sum. `expected` is what the total must be, `actual`
/// what the stores hold at the end; a difference breaks `property`.
pub fn conservation(property: &str, what: &str, expected: i64, actual: i64) -> Verdict {
    let mut verdict = Verdict::default();
    if expected != actual {
        verdict.violations.push(Violation {
            invariant: property.to_string(),
            explanation: format!(
                "{what} is {actual} but must be {expected} ({:+})",
                actual.saturating_sub(expected)
            ),
            ops: Vec::new(),
        });
    }
    verdict
}
