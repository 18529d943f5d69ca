//! The billing family's oracles are fed known-bad histories and must flag them, naming the
//! property, and known-good ones that they must accept.

use std::collections::BTreeMap;

use racelab_core::billing::{
    ACCOUNTS, Amount, Answer, BillNote, BillRequest, BillTag, ClientKey, IdemEnd, LEDGER,
    balance_conserved, coverage, idempotent_billing,
};
use racelab_core::{
    History, Note, NoteRecord, OpId, OpRecord, ProcessId, Reply, Row, SqlOp, SqlReply, SqlStmt,
    StoreOp, Table, Tag, Timestamp, Value,
};

const C1: ProcessId = ProcessId(0);
const C2: ProcessId = ProcessId(1);
const K1: BillRequest = BillRequest {
    key: ClientKey(1),
    amount: Amount(10),
};

fn t(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

fn history() -> History {
    History {
        process_names: vec![(C1, "C1".into()), (C2, "C2".into())],
        ..History::default()
    }
}

/// A ledger insert of `request` with `body`, committed or not.
fn charge(
    h: &mut History,
    p: ProcessId,
    request: BillRequest,
    body: &str,
    at: u64,
    committed: bool,
) {
    let stmt = SqlStmt::Insert {
        table: LEDGER,
        key: format!("{}-{at}", request.key),
        row: Row::new(),
    };
    h.ops.push(OpRecord {
        process: p,
        id: OpId(at),
        tag: Tag::new(BillTag::Charge {
            request,
            body: body.into(),
        }),
        op: StoreOp::Sql(SqlOp::Exec(stmt)),
        invoked_at: t(at),
        applied_at: Some(t(at)),
        durable_at: committed.then(|| t(at + 1)),
        lost_at: None,
        result: Some(Reply::Sql(SqlReply::Affected(1))),
        completed_at: Some(t(at + 1)),
        timed_out: false,
    });
}

fn note(h: &mut History, p: ProcessId, at: u64, note: BillNote) {
    h.notes.push(NoteRecord {
        at: t(at),
        process: p,
        note: Note::new(note),
    });
}

fn answered(h: &mut History, p: ProcessId, at: u64, request: BillRequest, answer: Answer) {
    note(h, p, at, BillNote::Answered { request, answer });
}

fn served(body: &str) -> Answer {
    Answer::Served { body: body.into() }
}

#[test]
fn one_charge_and_identical_replays_hold() {
    let mut h = history();
    charge(&mut h, C1, K1, "x", 10, true);
    answered(&mut h, C1, 20, K1, served("x"));
    note(&mut h, C2, 30, BillNote::Replayed { request: K1 });
    answered(&mut h, C2, 30, K1, served("x"));
    answered(&mut h, C2, 40, K1, Answer::InProgress { retry_after_ms: 5 });
    let v = idempotent_billing(&h);
    assert!(v.holds(), "{}", v.explanation());
    let c = coverage(&h);
    assert_eq!(c.sometimes["response-replayed"], 1);
    assert_eq!(c.sometimes["conflict-answered"], 1);
}

#[test]
fn two_committed_charges_of_one_key_break_a() {
    let mut h = history();
    charge(&mut h, C1, K1, "x", 10, true);
    charge(&mut h, C2, K1, "y", 20, true);
    // An uncommitted third does not count.
    charge(&mut h, C2, K1, "z", 30, false);
    let v = idempotent_billing(&h);
    assert_eq!(v.broken(), ["I-IDEM-a"], "{}", v.explanation());
    assert_eq!(v.violations[0].ops, vec![0, 1]);
}

#[test]
fn a_200_without_a_committed_charge_breaks_b() {
    let mut h = history();
    charge(&mut h, C1, K1, "x", 10, false);
    answered(&mut h, C1, 20, K1, served("x"));
    let v = idempotent_billing(&h);
    assert_eq!(v.broken(), ["I-IDEM-b"], "{}", v.explanation());
}

#[test]
fn a_duplicate_refusal_of_an_uncommitted_request_or_giving_up_breaks_c() {
    let mut h = history();
    charge(&mut h, C1, K1, "x", 10, false);
    answered(&mut h, C1, 2_000, K1, Answer::Duplicate);
    let v = idempotent_billing(&h);
    assert_eq!(v.broken(), ["I-IDEM-c"], "{}", v.explanation());
    let mut h = history();
    note(&mut h, C1, 9_000, BillNote::GaveUp { key: K1.key });
    let v = idempotent_billing(&h);
    assert_eq!(v.broken(), ["I-IDEM-c"], "{}", v.explanation());
    assert!(v.explanation().contains("no attempt of it committed"));
}

#[test]
fn another_body_an_empty_duplicate_or_a_500_after_the_charge_breaks_d() {
    for answer in [served("y"), Answer::Duplicate, Answer::Failed] {
        let mut h = history();
        charge(&mut h, C1, K1, "x", 10, true);
        answered(&mut h, C1, 20, K1, served("x"));
        answered(&mut h, C2, 30, K1, answer.clone());
        let v = idempotent_billing(&h);
        assert_eq!(v.broken(), ["I-IDEM-d"], "{answer}: {}", v.explanation());
        assert_eq!(v.violations[0].ops, vec![0]);
    }
    // A 422 for the same key with another payload is no replay of this one.
    let mut h = history();
    charge(&mut h, C1, K1, "x", 10, true);
    let other = BillRequest {
        amount: Amount(20),
        ..K1
    };
    answered(&mut h, C2, 30, other, Answer::Mismatch);
    assert!(idempotent_billing(&h).holds());
}

fn rows(balance: i64, ledger: &[i64]) -> Vec<(Table, String, Row)> {
    let mut out = vec![(
        ACCOUNTS,
        "acct-1".to_string(),
        Row::from([("balance".to_string(), Value::Int(balance))]),
    )];
    for (i, a) in ledger.iter().enumerate() {
        out.push((
            LEDGER,
            format!("l{i}"),
            Row::from([("amount".to_string(), Value::Int(*a))]),
        ));
    }
    out
}

#[test]
fn a_balance_that_does_not_match_the_ledger_breaks_i_bal() {
    let initial = BTreeMap::from([("acct-1".to_string(), 100)]);
    let good = rows(80, &[10, 10]);
    let end = IdemEnd::read(&initial, good.iter().map(|(t, k, r)| (t, k.as_str(), r)));
    assert!(balance_conserved(&end).holds());
    let bad = rows(90, &[10, 10]);
    let end = IdemEnd::read(&initial, bad.iter().map(|(t, k, r)| (t, k.as_str(), r)));
    let v = balance_conserved(&end);
    assert_eq!(v.broken(), ["I-BAL"], "{}", v.explanation());
}
