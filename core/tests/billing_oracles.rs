//! The billing family's oracles are fed known-bad histories and must flag them, naming the
//! property, and known-good ones that they must accept.

use std::collections::BTreeMap;

use racelab_core::billing::{
    ACCOUNTS, Amount, Answer, BillNote, BillRequest, BillTag, ClientKey, HOLDS, IdemEnd, LEDGER,
    StreamEnd, USAGE, UsageEnd, balance_conserved, coverage, idempotent_billing, metrics,
    streamed_billing, usage_bijection,
};
use racelab_core::{
    EndpointId, History, Note, NoteRecord, OpId, OpRecord, ProcessId, Reply, RequestId, Row, SqlOp,
    SqlReply, SqlStmt, StoreOp, Table, Tag, Timestamp, Usage, Value,
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
        op: StoreOp::Sql(SqlOp::exec(stmt)),
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

// ---------------------------------------------------------------------------------------------
// I-BILL, I-TOK, holds-resolved

/// The committed rows: the balance, ledger rows `(key, request, amount, estimated)`, holds
/// `(key, status, max_cost)`.
fn stream_rows(
    balance: i64,
    ledger: &[(&str, &str, i64, bool)],
    holds: &[(&str, &str, i64)],
) -> Vec<(Table, String, Row)> {
    let mut out = vec![(
        ACCOUNTS,
        "acct-1".to_string(),
        Row::from([("balance".to_string(), Value::Int(balance))]),
    )];
    for (key, request, amount, estimated) in ledger {
        let row = Row::from([
            ("request".to_string(), Value::Text(request.to_string())),
            ("amount".to_string(), Value::Int(*amount)),
            ("estimated".to_string(), Value::Int(i64::from(*estimated))),
        ]);
        out.push((LEDGER, key.to_string(), row));
    }
    for (key, status, max_cost) in holds {
        let row = Row::from([
            ("status".to_string(), Value::Text(status.to_string())),
            ("max_cost".to_string(), Value::Int(*max_cost)),
        ]);
        out.push((HOLDS, key.to_string(), row));
    }
    out
}

/// The provider billed r1 10 + 20 tokens and r2 5 + 0.
fn truth() -> BTreeMap<(EndpointId, RequestId), Usage> {
    let usage = |p, c| Usage {
        prompt_tokens: p,
        completion_tokens: c,
    };
    BTreeMap::from([
        ((EndpointId(1), RequestId(1)), usage(10, 20)),
        ((EndpointId(1), RequestId(2)), usage(5, 0)),
    ])
}

fn judge_stream(rows: &[(Table, String, Row)], settled: bool) -> racelab_core::Verdict {
    let end = StreamEnd::read(
        1_000,
        rows.iter().map(|(t, k, r)| (t, k.as_str(), r)),
        &truth(),
        settled,
    );
    streamed_billing(&end)
}

#[test]
fn one_exact_row_per_billed_request_holds() {
    let rows = stream_rows(
        965,
        &[("r1", "r1", 30, false), ("r2", "r2", 5, false)],
        &[
            ("r1", "settled", 40),
            ("r2", "settled", 40),
            ("r3", "voided", 40),
        ],
    );
    let v = judge_stream(&rows, true);
    assert!(v.holds(), "{}", v.explanation());
}

#[test]
fn a_billed_request_without_a_row_or_with_two_breaks_i_bill_1() {
    let rows = stream_rows(995, &[("r2", "r2", 5, false)], &[]);
    let v = judge_stream(&rows, true);
    assert_eq!(v.broken(), ["I-BILL-1"], "{}", v.explanation());
    assert!(v.explanation().contains("r1: the provider billed 30"));
    let rows = stream_rows(
        935,
        &[
            ("r1", "r1", 30, false),
            ("r1.d2", "r1", 30, false),
            ("r2", "r2", 5, false),
        ],
        &[],
    );
    let v = judge_stream(&rows, true);
    assert_eq!(v.broken(), ["I-BILL-1"], "{}", v.explanation());
    assert!(v.explanation().contains("charged 2 times"));
    // A run that did not settle is judged on the balance alone.
    assert!(judge_stream(&stream_rows(1_000, &[], &[]), false).holds());
}

#[test]
fn a_row_that_is_not_the_providers_usage_breaks_i_tok_unless_flagged() {
    let rows = stream_rows(957, &[("r1", "r1", 38, false), ("r2", "r2", 5, false)], &[]);
    let v = judge_stream(&rows, true);
    assert_eq!(v.broken(), ["I-TOK"], "{}", v.explanation());
    let rows = stream_rows(957, &[("r1", "r1", 38, true), ("r2", "r2", 5, false)], &[]);
    assert!(judge_stream(&rows, true).holds());
}

#[test]
fn a_balance_off_the_ledger_breaks_i_bill_2_and_an_open_hold_holds_resolved() {
    let rows = stream_rows(970, &[("r1", "r1", 30, false), ("r2", "r2", 5, false)], &[]);
    let v = judge_stream(&rows, true);
    assert_eq!(v.broken(), ["I-BILL-2"], "{}", v.explanation());
    let rows = stream_rows(
        925,
        &[("r1", "r1", 30, false), ("r2", "r2", 5, false)],
        &[("r3", "open", 40)],
    );
    let v = judge_stream(&rows, true);
    assert_eq!(v.broken(), ["holds-resolved"], "{}", v.explanation());
}

#[test]
fn coverage_counts_sweeps_refusals_and_lookups() {
    let mut h = history();
    let r = RequestId(1);
    note(&mut h, C1, 1, BillNote::UsageLooked { request: r });
    note(&mut h, C2, 2, BillNote::Swept { request: r });
    note(&mut h, C1, 3, BillNote::SettleRefused { request: r });
    let c = coverage(&h);
    assert_eq!(c.sometimes["usage-looked-up"], 1);
    assert_eq!(c.sometimes["hold-swept"], 1);
    assert_eq!(c.sometimes["settle-refused"], 1);
}

// ---------------------------------------------------------------------------------------------
// I-USAGE

fn usage_rows(charges: &[&str], usage: &[(&str, &str)]) -> Vec<(Table, String, Row)> {
    let mut out = Vec::new();
    for request in charges {
        let row = Row::from([("request".to_string(), Value::Text(request.to_string()))]);
        out.push((LEDGER, request.to_string(), row));
    }
    for (key, request) in usage {
        let row = Row::from([("request".to_string(), Value::Text(request.to_string()))]);
        out.push((USAGE, key.to_string(), row));
    }
    out
}

fn judge_usage(rows: &[(Table, String, Row)], settled: bool) -> racelab_core::Verdict {
    let end = UsageEnd::read(rows.iter().map(|(t, k, r)| (t, k.as_str(), r)), settled);
    usage_bijection(&end)
}

#[test]
fn one_record_per_committed_charge_holds() {
    let rows = usage_rows(&["r1", "r2"], &[("r1", "r1"), ("r2", "r2")]);
    assert!(judge_usage(&rows, true).holds());
}

#[test]
fn a_phantom_a_duplicate_or_a_missing_record_breaks_i_usage() {
    let phantom = usage_rows(&[], &[("r1.d1", "r1")]);
    let v = judge_usage(&phantom, true);
    assert_eq!(v.broken(), ["I-USAGE"], "{}", v.explanation());
    assert!(v.explanation().contains("phantom"));
    let duplicate = usage_rows(&["r1"], &[("r1.d1", "r1"), ("r1.d2", "r1")]);
    let v = judge_usage(&duplicate, true);
    assert_eq!(v.broken(), ["I-USAGE"], "{}", v.explanation());
    assert!(v.explanation().contains("2 usage records"));
    let missing = usage_rows(&["r1"], &[]);
    let v = judge_usage(&missing, true);
    assert_eq!(v.broken(), ["I-USAGE"], "{}", v.explanation());
    // Before the relay drained, a missing record is not yet a violation.
    assert!(judge_usage(&missing, false).holds());
}

#[test]
fn coverage_counts_absorbed_duplicates() {
    let mut h = history();
    note(
        &mut h,
        C1,
        1,
        BillNote::UsageDeduplicated {
            request: RequestId(1),
        },
    );
    assert_eq!(coverage(&h).sometimes["usage-deduplicated"], 1);
}

// ---------------------------------------------------------------------------------------------
// The document's counters

fn tx(h: &mut History, p: ProcessId, op: SqlOp, result: SqlReply, at: u64) {
    h.ops.push(OpRecord {
        process: p,
        id: OpId(at),
        tag: Tag::new(BillTag::Tx),
        op: StoreOp::Sql(op),
        invoked_at: t(at),
        applied_at: Some(t(at)),
        durable_at: None,
        lost_at: None,
        result: Some(Reply::Sql(result)),
        completed_at: None,
        timed_out: true,
    });
}

#[test]
fn the_counters_count_rollbacks_conflicts_and_duplicate_deductions() {
    let mut h = history();
    // A transaction dropped with its connection, then one committed (its reply lost: the
    // store's result counts).
    tx(&mut h, C1, SqlOp::Begin, SqlReply::Ok, 1);
    tx(&mut h, C1, SqlOp::Begin, SqlReply::Ok, 2);
    tx(&mut h, C1, SqlOp::Commit, SqlReply::Committed, 3);
    charge(&mut h, C1, K1, "x", 4, true);
    charge(&mut h, C2, K1, "y", 5, true);
    charge(&mut h, C2, K1, "z", 6, false);
    answered(&mut h, C2, 7, K1, Answer::Duplicate);
    note(&mut h, C2, 8, BillNote::Replayed { request: K1 });
    answered(&mut h, C2, 9, K1, Answer::InProgress { retry_after_ms: 1 });
    let m = metrics(&h);
    assert_eq!(m.transaction_rollback_count, 1);
    assert_eq!(m.duplicate_deduct_count, 1);
    assert_eq!(m.idempotent_conflict_count, 2);
    assert_eq!(metrics(&history()), Default::default());
}
