//! I-CONV over the stored log: every turn's messages are its user message at `base + 1` and
//! its answer at `base + 2`, where `base` is the version the turn read (so its answer was
//! generated from exactly the prefix stored before it), and no acknowledged turn is missing.

use std::collections::BTreeMap;

use super::{SessionNote, SessionTag};
use crate::history::History;
use crate::ops::{KeyedRow, Value};
use crate::oracle::{Property, Verdict, Violation};
use crate::time::Timestamp;

/// I-CONV: the log is the concatenation of whole turns, each on the prefix it read.
pub const I_CONV: Property = Property::always(
    "I-CONV",
    "the stored log is a concatenation of whole turns, each turn's answer stored right after \
     its user message, right after the prefix the answer was generated from",
);
/// I-CONV (3): no acknowledged turn is missing.
pub const I_CONV_ACKED: Property = Property::always(
    "I-CONV-acked",
    "every turn the client was told was stored is in the log",
);
/// Correct's protection: a turn whose prefix changed was refused with a 409.
pub const CONFLICT_REFUSED: Property = Property::protection(
    "conflict-refused",
    "a turn whose prefix another turn extended first was refused with a 409",
);
/// The race window opened: two turns on the session were in flight at once.
pub const TURNS_OVERLAPPED: Property = Property::sometimes(
    "turns-overlapped",
    "two turns on the session were in flight at the same time",
);

fn int(row: &KeyedRow, c: &str) -> Option<i64> {
    row.int(c)
}

fn text(row: &KeyedRow, c: &str) -> String {
    match row.columns.get(c) {
        Some(Value::Text(t)) => t.clone(),
        _ => String::new(),
    }
}

/// Judges the stored `messages` of one session (the rows of `SESSION_MESSAGES`), written
/// by the turns of `history`, against I-CONV and I-CONV-acked. Messages of turn 0 are the
/// seeded history and are not judged.
pub fn conversation(messages: &[KeyedRow], history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut turns: BTreeMap<(i64, i64), Vec<(i64, String)>> = BTreeMap::new();
    for m in messages {
        let (Some(turn), Some(base), Some(seq)) = (int(m, "turn"), int(m, "base"), int(m, "seq"))
        else {
            verdict.violations.push(Violation {
                invariant: I_CONV.name.into(),
                explanation: format!("message {} has no turn, base or seq", m.key),
                ops: Vec::new(),
            });
            continue;
        };
        if turn == 0 {
            continue;
        }
        turns
            .entry((turn, base))
            .or_default()
            .push((seq, text(m, "role")));
    }
    for ((turn, base), mut msgs) in turns {
        msgs.sort();
        let expected = vec![
            (base.saturating_add(1), "user".to_string()),
            (base.saturating_add(2), "assistant".to_string()),
        ];
        if msgs != expected {
            let got: Vec<String> = msgs.iter().map(|(s, r)| format!("{r}@{s}")).collect();
            verdict.violations.push(Violation {
                invariant: I_CONV.name.into(),
                explanation: format!(
                    "turn {turn} read the log at version {base}, so its messages belong at {} \
                     and {}, but the log holds {}: its answer was generated from another \
                     prefix than the one stored before it",
                    base + 1,
                    base + 2,
                    got.join(", ")
                ),
                ops: turn_ops(history, turn),
            });
        }
    }
    for note in &history.notes {
        let Some(SessionNote::Acked { turn }) = note.note.get::<SessionNote>() else {
            continue;
        };
        let stored = messages
            .iter()
            .filter(|m| int(m, "turn") == Some(i64::from(*turn)))
            .count();
        if stored < 2 {
            verdict.violations.push(Violation {
                invariant: I_CONV_ACKED.name.into(),
                explanation: format!(
                    "turn {turn} was acknowledged at {} but the log holds {stored} of its \
                     messages",
                    note.at
                ),
                ops: turn_ops(history, i64::from(*turn)),
            });
        }
    }
    verdict
}

fn turn_ops(history: &History, turn: i64) -> Vec<usize> {
    history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            op.tag
                .get::<SessionTag>()
                .is_some_and(|t| i64::from(t.turn()) == turn)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Counts R-000-06's `sometimes` properties.
pub fn session_coverage(history: &History, verdict: &mut Verdict) {
    let conflicts = history
        .notes
        .iter()
        .filter(|n| {
            matches!(
                n.note.get::<SessionNote>(),
                Some(SessionNote::Conflict { .. })
            )
        })
        .count() as u64;
    let mut spans: BTreeMap<u32, (Timestamp, Timestamp)> = BTreeMap::new();
    for op in &history.ops {
        let Some(tag) = op.tag.get::<SessionTag>() else {
            continue;
        };
        let end = op.completed_at.or(op.applied_at).unwrap_or(op.invoked_at);
        let span = spans.entry(tag.turn()).or_insert((op.invoked_at, end));
        span.0 = span.0.min(op.invoked_at);
        span.1 = span.1.max(end);
    }
    let spans: Vec<(Timestamp, Timestamp)> = spans.into_values().collect();
    let overlapping = spans
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            spans
                .iter()
                .enumerate()
                .any(|(j, b)| *i != j && b.0 < a.1 && a.0 < b.1)
        })
        .count() as u64;
    verdict.count(CONFLICT_REFUSED.name, conflicts);
    verdict.count(TURNS_OVERLAPPED.name, overlapping);
}
