//! The session family's oracle (R-000-06) on known-bad logs.

use racelab_core::session::{I_CONV, I_CONV_ACKED, SessionNote, conversation, message_key};
use racelab_core::{History, KeyedRow, Note, NoteRecord, ProcessId, Row, Timestamp, Value};

fn message(seq: i64, turn: i64, role: &str, base: i64) -> KeyedRow {
    KeyedRow {
        key: message_key("S1", seq),
        columns: Row::from([
            ("session".to_string(), Value::Text("S1".into())),
            ("seq".to_string(), Value::Int(seq)),
            ("turn".to_string(), Value::Int(turn)),
            ("role".to_string(), Value::Text(role.into())),
            ("base".to_string(), Value::Int(base)),
        ]),
    }
}

fn acked(turn: u32) -> NoteRecord {
    NoteRecord {
        at: Timestamp::from_ms(1_000),
        process: ProcessId(turn as u16),
        note: Note::new(SessionNote::Acked { turn }),
    }
}

/// The document's schedule: H (v2), u1 (v3), u2 (v4), a2 (v5), a1 (v6).
#[test]
fn an_answer_stored_after_another_turn_breaks_i_conv() {
    let log = vec![
        message(1, 0, "user", 0),
        message(2, 0, "assistant", 0),
        message(3, 1, "user", 2),
        message(4, 2, "user", 3),
        message(5, 2, "assistant", 3),
        message(6, 1, "assistant", 2),
    ];
    let verdict = conversation(&log, &History::default());
    assert_eq!(verdict.broken(), [I_CONV.name], "{}", verdict.explanation());
    assert_eq!(verdict.violations.len(), 1, "turn 2 is whole on its prefix");
    assert!(verdict.explanation().contains("user@3, assistant@6"));
}

#[test]
fn two_turns_on_the_same_prefix_break_i_conv() {
    // Both read v2; the whole-window writes land one after the other.
    let log = vec![
        message(3, 1, "user", 2),
        message(4, 1, "assistant", 2),
        message(5, 2, "user", 2),
        message(6, 2, "assistant", 2),
    ];
    let verdict = conversation(&log, &History::default());
    assert_eq!(verdict.broken(), [I_CONV.name]);
}

#[test]
fn a_missing_acknowledged_turn_breaks_i_conv_acked() {
    let log = vec![message(3, 1, "user", 2), message(4, 1, "assistant", 2)];
    let mut history = History::default();
    history.notes.push(acked(1));
    history.notes.push(acked(2));
    let verdict = conversation(&log, &history);
    assert_eq!(verdict.broken(), [I_CONV_ACKED.name]);
    assert!(verdict.explanation().contains("turn 2"));
}

#[test]
fn serial_turns_hold() {
    let log = vec![
        message(3, 1, "user", 2),
        message(4, 1, "assistant", 2),
        message(5, 2, "user", 4),
        message(6, 2, "assistant", 4),
    ];
    let mut history = History::default();
    history.notes.push(acked(1));
    history.notes.push(acked(2));
    assert!(conversation(&log, &history).holds());
}
