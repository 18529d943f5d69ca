//! I-CTX over a history of context blocks: every accepted write is by its field's declared
//! owner (I-CTX-owner), at most once per field (I-CTX-once), and every read made after the
//! owner finished returns the owner's write (I-CTX-read). Blocks are ordered by the sequence
//! number the world stamps on each local block.

use std::collections::BTreeMap;

use super::{Cell, CtxOut, CtxTag, Refusal, Slot, StepId, owner_of};
use crate::history::History;
use crate::ops::Reply;
use crate::oracle::{Property, Verdict, Violation};

/// I-CTX (1): only a field's declared owner writes it.
pub const I_CTX_OWNER: Property = Property::always(
    "I-CTX-owner",
    "every write the context accepted was made by the field's declared owner step",
);
/// I-CTX (2): a field is written at most once per request.
pub const I_CTX_ONCE: Property = Property::always(
    "I-CTX-once",
    "no context field accepted more than one write in a request",
);
/// I-CTX (3): a read after the owner's write gets the owner's value.
pub const I_CTX_READ: Property = Property::always(
    "I-CTX-read",
    "every read made after the owner step finished returned the owner's write",
);
/// The protection fired: Correct refused a write to a field another step owns.
pub const FOREIGN_WRITE_REFUSED: Property = Property::protection(
    "foreign-write-refused",
    "the context refused (and reported) a step's write to a field another step owns",
);
/// The race window opened: a colliding write came between the owner's write and a read.
pub const WRITE_IN_WINDOW: Property = Property::sometimes(
    "write-in-window",
    "a step wrote another step's key after the owner wrote it and before a reader read it",
);

/// One context block as the oracle sees it.
struct Event {
    op: usize,
    seq: u64,
    tag: CtxTag,
    out: CtxOut,
}

fn events(history: &History) -> Vec<Event> {
    let mut events: Vec<Event> = history
        .ops
        .iter()
        .enumerate()
        .filter_map(|(op, rec)| {
            let tag = rec.tag.get::<CtxTag>()?.clone();
            let Some(Reply::Local(reply)) = &rec.result else {
                return None;
            };
            let out = reply.result.get::<CtxOut>()?.clone();
            Some(Event {
                op,
                seq: reply.seq,
                tag,
                out,
            })
        })
        .collect();
    events.sort_by_key(|e| e.seq);
    events
}

/// Judges I-CTX-owner, I-CTX-once and I-CTX-read on a history.
pub fn context_integrity(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut written: BTreeMap<Slot, Vec<(usize, StepId, i64)>> = BTreeMap::new();
    for e in events(history) {
        match (&e.tag, &e.out) {
            (CtxTag::Write { step, value, .. }, CtxOut::Written { slot, previous }) => {
                if slot.owner() != Some(*step) {
                    let owner = slot
                        .owner()
                        .map_or("no step".to_string(), |o| o.to_string());
                    verdict.violations.push(Violation {
                        invariant: I_CTX_OWNER.name.into(),
                        explanation: format!(
                            "{step} wrote {value} into {slot}, which {owner} owns{}",
                            previous.map_or(String::new(), |p: Cell| format!(
                                ", replacing {}'s {}",
                                p.writer, p.value
                            ))
                        ),
                        ops: vec![e.op],
                    });
                }
                let writes = written.entry(*slot).or_default();
                writes.push((e.op, *step, *value));
                if writes.len() == 2 {
                    verdict.violations.push(Violation {
                        invariant: I_CTX_ONCE.name.into(),
                        explanation: format!(
                            "{slot} was written by {} ({}) and again by {step} ({value})",
                            writes[0].1, writes[0].2
                        ),
                        ops: writes.iter().map(|w| w.0).collect(),
                    });
                }
            }
            (CtxTag::Read { step, key }, CtxOut::Value { slot, cell }) => {
                let owner = owner_of(key);
                let owners_write = written
                    .get(slot)
                    .and_then(|w| w.iter().find(|(_, s, _)| Some(*s) == owner))
                    .map(|w| w.2);
                let good = match (cell, owner) {
                    (Some(c), Some(o)) => c.writer == o && Some(c.value) == owners_write,
                    _ => false,
                };
                if !good {
                    let got = cell.map_or("nothing".to_string(), |c| {
                        format!("{} written by {}", c.value, c.writer)
                    });
                    let wanted = match (owner, owners_write) {
                        (Some(o), Some(v)) => format!("{o}'s {v}"),
                        (Some(o), None) => format!("{o}'s value, which it never wrote"),
                        (None, _) => "the value of a declared key".into(),
                    };
                    let mut ops = vec![e.op];
                    if let Some(w) = written.get(slot) {
                        ops.extend(w.iter().map(|w| w.0));
                    }
                    verdict.violations.push(Violation {
                        invariant: I_CTX_READ.name.into(),
                        explanation: format!(
                            "{step} read {slot} after its owner finished and got {got}, not \
                             {wanted}"
                        ),
                        ops,
                    });
                }
            }
            _ => {}
        }
    }
    verdict
}

/// Counts the family's `sometimes` properties: refused foreign writes, and colliding writes
/// attempted between the owner's write and a later read of the key.
pub fn coverage(history: &History, verdict: &mut Verdict) {
    let events = events(history);
    let refused = events
        .iter()
        .filter(|e| {
            matches!(
                e.out,
                CtxOut::Refused {
                    why: Refusal::Foreign { .. },
                    ..
                }
            )
        })
        .count() as u64;
    let mut in_window = 0;
    for (i, e) in events.iter().enumerate() {
        let CtxTag::Write { step, key, .. } = e.tag else {
            continue;
        };
        let Some(owner) = owner_of(key).filter(|o| *o != step) else {
            continue;
        };
        let owner_before = events[..i].iter().any(
            |b| matches!(b.tag, CtxTag::Write { step: s, key: k, .. } if s == owner && k == key),
        );
        let read_after = events[i + 1..].iter().any(|a| {
            matches!(a.tag, CtxTag::Read { key: k, .. } if k == key)
                && matches!(a.out, CtxOut::Value { .. })
        });
        if owner_before && read_after {
            in_window += 1;
        }
    }
    verdict.count(FOREIGN_WRITE_REFUSED.name, refused);
    verdict.count(WRITE_IN_WINDOW.name, in_window);
}
