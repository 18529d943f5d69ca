//! Document 000's billing oracles over the family's end state.
//!
//! - R-000-03, I-IDEM (a)-(d) ([`idempotent_billing`]) and the balance's conservation
//!   ([`balance_conserved`]).
//! - R-000-01 and R-000-14, I-BILL and I-TOK ([`streamed_billing`]): the ledger against the
//!   provider's truth ([`StreamEnd`], from `Run::upstream_usage`), the balance, no hold left
//!   open.
//! - R-000-08, I-USAGE ([`usage_bijection`]): the usage records and the committed charges in
//!   bijection by request.
//!
//! Every oracle here has a test that feeds it a known-bad history
//! (`core/tests/billing_oracles.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::tag::{Answer, BillNote, BillTag};
use super::{ACCOUNTS, Amount, BillRequest, ClientKey, HOLDS, LEDGER, USAGE, price, request_key};
use crate::history::History;
use crate::ids::EndpointId;
use crate::ops::{Reply, RequestId, SqlOp, SqlReply, StoreOp, Usage};
use crate::ops::{Row, Table, Value};
use crate::oracle::{Property, Verdict, Violation, at_most_once_per_key};

/// I-IDEM (a): at most one charge commits per idempotency key.
pub const I_IDEM_A: Property = Property::always(
    "I-IDEM-a",
    "at most one ledger row and deduction commits per idempotency key",
);
/// I-IDEM (b): a request answered with success was charged.
pub const I_IDEM_B: Property = Property::always(
    "I-IDEM-b",
    "a request the gateway answered 200 has exactly one committed charge",
);
/// I-IDEM (c): a retry whose earlier attempts all failed before commit executes.
pub const I_IDEM_C: Property = Property::always(
    "I-IDEM-c",
    "no attempt is refused as a duplicate of attempts none of which committed, and no client \
     gives up on a request",
);
/// I-IDEM (d): every answer after the commit is the stored response.
pub const I_IDEM_D: Property = Property::always(
    "I-IDEM-d",
    "every final answer to a charged request is its stored response, byte for byte",
);
/// The balance equals the initial balance minus the committed ledger rows.
pub const I_BAL: Property = Property::always(
    "I-BAL",
    "each balance == its initial value - the sum of its committed ledger rows",
);
/// The correct gateway replayed a stored response.
pub const REPLAYED: Property = Property::protection(
    "response-replayed",
    "a retry got the stored response from the idempotency row or its cache",
);
/// The correct gateway answered 409 while another attempt held the claim.
pub const CONFLICT_ANSWERED: Property = Property::protection(
    "conflict-answered",
    "a concurrent duplicate got 409 + Retry-After while the claim was in progress",
);
/// An expired claim was re-claimed with a newer epoch.
pub const RECLAIMED: Property = Property::sometimes(
    "claim-reclaimed",
    "an attempt re-claimed an expired in-progress claim by bumping its epoch",
);

/// R-000-03's end state: each account's balance before and after, and the committed ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdemEnd {
    /// Each account's balance before the run.
    pub initial: BTreeMap<String, i64>,
    /// Each account's committed balance at the end.
    pub balance: BTreeMap<String, i64>,
    /// The committed ledger rows' amounts, by ledger key.
    pub ledger: BTreeMap<String, i64>,
}

impl IdemEnd {
    /// The end state from the initial balances and the committed rows of the run.
    pub fn read<'a>(
        initial: &BTreeMap<String, i64>,
        rows: impl IntoIterator<Item = (&'a Table, &'a str, &'a Row)>,
    ) -> IdemEnd {
        let mut end = IdemEnd {
            initial: initial.clone(),
            ..IdemEnd::default()
        };
        for (table, key, row) in rows {
            let amount = |col: &str| match row.get(col) {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            };
            if *table == ACCOUNTS {
                end.balance
                    .insert(key.to_string(), amount("balance").unwrap_or(0));
            } else if *table == LEDGER {
                end.ledger
                    .insert(key.to_string(), amount("amount").unwrap_or(0));
            }
        }
        end
    }
}

/// I-BAL: with one account, its balance is its initial value minus the committed ledger.
pub fn balance_conserved(end: &IdemEnd) -> Verdict {
    let mut verdict = Verdict::default();
    let charged: i64 = end.ledger.values().fold(0i64, |s, a| s.saturating_add(*a));
    let initial: i64 = end.initial.values().fold(0i64, |s, a| s.saturating_add(*a));
    let balance: i64 = end.balance.values().fold(0i64, |s, a| s.saturating_add(*a));
    let expected = initial.saturating_sub(charged);
    if balance != expected {
        verdict.violations.push(Violation {
            invariant: I_BAL.name.into(),
            explanation: format!(
                "the balances sum to {balance} but the initial {initial} - the {} committed \
                 ledger rows ({charged}) = {expected}",
                end.ledger.len()
            ),
            ops: Vec::new(),
        });
    }
    verdict
}

/// I-IDEM (a)-(d) over the charges that committed (the `charge` operations the store
/// accepted) and the answers the client got (the gateway's `Answered` notes).
pub fn idempotent_billing(history: &History) -> Verdict {
    let mut verdict =
        at_most_once_per_key(history, I_IDEM_A.name, |op| match BillTag::of(&op.tag) {
            Some(BillTag::Charge { request, .. }) => Some(request.key),
            _ => None,
        });
    for v in &mut verdict.violations {
        v.explanation = format!("the charge of key {}", v.explanation);
    }
    // The stored response of each request: the body of its first committed charge.
    let mut stored: BTreeMap<BillRequest, (String, usize)> = BTreeMap::new();
    let mut charged_keys: BTreeMap<ClientKey, usize> = BTreeMap::new();
    let mut charges: Vec<(crate::time::Timestamp, usize)> = history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.accepted() && op.tag.kind() == BillTag::CHARGE)
        .filter_map(|(i, op)| Some((op.durable_at?, i)))
        .collect();
    charges.sort();
    for (_, i) in charges {
        if let Some(BillTag::Charge { request, body }) = BillTag::of(&history.ops[i].tag) {
            stored.entry(*request).or_insert((body.clone(), i));
            charged_keys.entry(request.key).or_insert(i);
        }
    }
    for note in &history.notes {
        let who = history.name(note.process);
        let at = note.at;
        let (property, explanation, ops) = match BillNote::of(&note.note) {
            Some(BillNote::Answered { request, answer }) => {
                let stored_of = stored.get(request);
                match (answer, stored_of) {
                    (Answer::Served { body }, None) => (
                        I_IDEM_B,
                        format!(
                            "{who} answered {request} 200 {body:?} at {at}, but no charge of it \
                             committed"
                        ),
                        Vec::new(),
                    ),
                    (Answer::Served { body }, Some((s, i))) if body != s => (
                        I_IDEM_D,
                        format!(
                            "{who} answered {request} 200 {body:?} at {at}, but the response \
                             stored with its charge is {s:?}"
                        ),
                        vec![*i],
                    ),
                    (Answer::Duplicate, None) => (
                        I_IDEM_C,
                        format!(
                            "{who} refused {request} as a duplicate at {at}, but no attempt \
                             of it ever committed: the charge is never applied"
                        ),
                        Vec::new(),
                    ),
                    (Answer::Duplicate, Some((s, i))) => (
                        I_IDEM_D,
                        format!(
                            "{who} answered {request} with an empty duplicate at {at} instead \
                             of its stored response {s:?}"
                        ),
                        vec![*i],
                    ),
                    (Answer::Failed, Some((s, i))) => (
                        I_IDEM_D,
                        format!(
                            "{who} answered {request} 500 at {at}, though it was charged with \
                             the response {s:?}"
                        ),
                        vec![*i],
                    ),
                    _ => continue,
                }
            }
            Some(BillNote::GaveUp { key }) => {
                let mut explanation = format!("{who} gave up on {key} at {at} without an answer");
                if !charged_keys.contains_key(key) {
                    let _ = write!(explanation, "; no attempt of it committed");
                }
                (I_IDEM_C, explanation, Vec::new())
            }
            _ => continue,
        };
        verdict.violations.push(Violation {
            invariant: property.name.into(),
            explanation,
            ops,
        });
    }
    verdict
}

/// I-BILL (1): every request the provider billed has exactly one ledger row.
pub const I_BILL_1: Property = Property::always(
    "I-BILL-1",
    "every request the upstream billed has exactly one ledger row once recovery has run",
);
/// I-BILL (2): the balance matches the ledger and the open holds.
pub const I_BILL_2: Property = Property::always(
    "I-BILL-2",
    "balance == initial - Σ ledger - Σ open holds' reservations",
);
/// I-TOK: a request's ledger amount is the price of the provider's usage.
pub const I_TOK: Property = Property::always(
    "I-TOK",
    "a request's billed tokens equal the provider's usage, unless flagged estimated",
);
/// Every hold resolves.
pub const HOLDS_RESOLVED: Property = Property::eventually(
    "holds-resolved",
    "no hold is left open once the sweeper has run",
);
/// The sweeper settled a hold left open.
pub const HOLD_SWEPT: Property = Property::protection(
    "hold-swept",
    "the sweeper settled a hold its gateway left open from the provider's usage",
);
/// A settlement found its hold settled already.
pub const SETTLE_REFUSED: Property = Property::protection(
    "settle-refused",
    "a second settlement of a hold was refused by its status",
);
/// A gateway read the provider's usage instead of the final record.
pub const USAGE_LOOKED: Property = Property::sometimes(
    "usage-looked-up",
    "a gateway that never read the final usage record asked the provider's usage API",
);

/// One ledger row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    /// Its key.
    pub key: String,
    /// The request it charges (`r1`).
    pub request: String,
    /// The amount.
    pub amount: Amount,
    /// Whether the amount is an estimate awaiting reconciliation.
    pub estimated: bool,
}

/// R-000-01's and R-000-14's end state: the account, the ledger and the holds from the
/// committed rows, and the provider's truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEnd {
    /// The balance before the run.
    pub initial: i64,
    /// The committed balance at the end.
    pub balance: i64,
    /// The committed ledger rows.
    pub ledger: Vec<LedgerRow>,
    /// The holds still open, with what they reserve.
    pub open_holds: Vec<(String, i64)>,
    /// What the provider billed per request (`Run::upstream_usage`), priced.
    pub truth: BTreeMap<String, Amount>,
    /// Whether the run settled (quiesced, or drained after its horizon).
    pub settled: bool,
}

impl StreamEnd {
    /// The end state from the initial balance, the committed rows and the provider's usage.
    pub fn read<'a>(
        initial: i64,
        rows: impl IntoIterator<Item = (&'a Table, &'a str, &'a Row)>,
        usage: &BTreeMap<(EndpointId, RequestId), Usage>,
        settled: bool,
    ) -> StreamEnd {
        let mut end = StreamEnd {
            initial,
            settled,
            ..StreamEnd::default()
        };
        for (table, key, row) in rows {
            let int = |col: &str| match row.get(col) {
                Some(Value::Int(n)) => *n,
                _ => 0,
            };
            if *table == ACCOUNTS {
                end.balance = end.balance.saturating_add(int("balance"));
            } else if *table == LEDGER {
                let request = match row.get("request") {
                    Some(Value::Text(r)) => r.clone(),
                    _ => String::new(),
                };
                end.ledger.push(LedgerRow {
                    key: key.to_string(),
                    request,
                    amount: Amount(int("amount")),
                    estimated: int("estimated") != 0,
                });
            } else if *table == HOLDS
                && matches!(row.get("status"), Some(Value::Text(s)) if s == "open")
            {
                end.open_holds.push((key.to_string(), int("max_cost")));
            }
        }
        for ((_, request), u) in usage {
            let entry = end.truth.entry(request_key(*request)).or_default();
            *entry = Amount(entry.0.saturating_add(price(*u).0));
        }
        end
    }
}

/// I-BILL (1) and (2), I-TOK and `holds-resolved` on a run's end state. A run that did not
/// settle is judged on I-BILL (2) only (its stuck verdict says the rest).
pub fn streamed_billing(end: &StreamEnd) -> Verdict {
    let mut verdict = Verdict::default();
    let mut push = |property: &Property, explanation: String| {
        verdict.violations.push(Violation {
            invariant: property.name.into(),
            explanation,
            ops: Vec::new(),
        })
    };
    let charged: i64 = end
        .ledger
        .iter()
        .fold(0i64, |s, r| s.saturating_add(r.amount.0));
    let held: i64 = end
        .open_holds
        .iter()
        .fold(0i64, |s, h| s.saturating_add(h.1));
    let expected = end.initial.saturating_sub(charged).saturating_sub(held);
    if end.balance != expected {
        push(
            &I_BILL_2,
            format!(
                "the balance is {} but initial {} - ledger {charged} - open holds {held} =                  {expected}",
                end.balance, end.initial
            ),
        );
    }
    if !end.settled {
        return verdict;
    }
    for (request, truth) in &end.truth {
        let rows: Vec<&LedgerRow> = end
            .ledger
            .iter()
            .filter(|r| r.request == *request)
            .collect();
        match rows.as_slice() {
            [] if truth.0 > 0 => push(
                &I_BILL_1,
                format!("{request}: the provider billed {truth} but no ledger row charges it"),
            ),
            [] => {}
            [row] if row.amount != *truth && !row.estimated => push(
                &I_TOK,
                format!(
                    "{request}: the ledger charges {} but the provider billed {truth} tokens",
                    row.amount
                ),
            ),
            [_] => {}
            many => {
                let keys: Vec<&str> = many.iter().map(|r| r.key.as_str()).collect();
                push(
                    &I_BILL_1,
                    format!(
                        "{request}: charged {} times (ledger rows {})",
                        many.len(),
                        keys.join(", ")
                    ),
                );
            }
        }
    }
    for (hold, reserved) in &end.open_holds {
        push(
            &HOLDS_RESOLVED,
            format!("the hold of {hold} (reserving {reserved}) is still open"),
        );
    }
    verdict
}

/// I-USAGE: usage records and committed charges in bijection by request.
pub const I_USAGE: Property = Property::always(
    "I-USAGE",
    "no usage record without a committed charge, no committed charge without one once the \
     relay has drained, never two for one request",
);
/// A usage worker absorbed a redelivered or republished event.
pub const USAGE_DEDUPLICATED: Property = Property::protection(
    "usage-deduplicated",
    "a usage worker found the record written already and skipped the duplicate",
);

/// R-000-08's end state: the requests of the committed ledger rows and of the usage records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageEnd {
    /// The request of each committed ledger row.
    pub charges: Vec<String>,
    /// Each usage record: its key and its request.
    pub usage: Vec<(String, String)>,
    /// Whether the run settled (the relay and the workers drained).
    pub settled: bool,
}

impl UsageEnd {
    /// The end state from the committed rows.
    pub fn read<'a>(
        rows: impl IntoIterator<Item = (&'a Table, &'a str, &'a Row)>,
        settled: bool,
    ) -> UsageEnd {
        let mut end = UsageEnd {
            settled,
            ..UsageEnd::default()
        };
        for (table, key, row) in rows {
            let request = match row.get("request") {
                Some(Value::Text(r)) => r.clone(),
                _ => String::new(),
            };
            if *table == LEDGER {
                end.charges.push(request);
            } else if *table == USAGE {
                end.usage.push((key.to_string(), request));
            }
        }
        end
    }
}

/// I-USAGE on a run's end state: a phantom record (no committed charge), a duplicate, and,
/// once the run settled, a charge without a record.
pub fn usage_bijection(end: &UsageEnd) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_request: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, request) in &end.usage {
        by_request.entry(request).or_default().push(key);
    }
    let mut push = |explanation: String| {
        verdict.violations.push(Violation {
            invariant: I_USAGE.name.into(),
            explanation,
            ops: Vec::new(),
        })
    };
    for (request, keys) in &by_request {
        if !end.charges.iter().any(|c| c == request) {
            push(format!(
                "{request}: usage record {} but no committed charge (a phantom)",
                keys.join(", ")
            ));
        } else if keys.len() > 1 {
            push(format!(
                "{request}: {} usage records ({})",
                keys.len(),
                keys.join(", ")
            ));
        }
    }
    if end.settled {
        for charge in &end.charges {
            if !by_request.contains_key(charge.as_str()) {
                push(format!(
                    "{charge}: charged, but no usage record was ever written"
                ));
            }
        }
    }
    verdict
}

/// The document's billing counters (RACES.md 7.1, TS-000-4), derived from a run's history:
/// what a correct deployment's metrics would have counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BillingMetrics {
    /// `billing.duplicate_deduct_count`: committed charges beyond the first, per request.
    pub duplicate_deduct_count: u64,
    /// `billing.idempotent_conflict_count`: attempts answered from an existing key (refused
    /// as a duplicate, refused for another payload, or served the stored response).
    pub idempotent_conflict_count: u64,
    /// `billing.transaction_rollback_count`: transactions begun that did not commit (rolled
    /// back, failed, or dropped with their connection).
    pub transaction_rollback_count: u64,
}

/// The counters of a run, from the store's results (a `BEGIN` and a `COMMIT` count when the
/// store applied them, whether or not the reply arrived) and the gateways' answers.
pub fn metrics(history: &History) -> BillingMetrics {
    let mut m = BillingMetrics::default();
    let mut charges: BTreeMap<String, u64> = BTreeMap::new();
    let (mut begun, mut committed) = (0u64, 0u64);
    for op in &history.ops {
        match (&op.op, &op.result) {
            (StoreOp::Sql(SqlOp::Begin), Some(Reply::Sql(SqlReply::Ok))) => begun += 1,
            (StoreOp::Sql(SqlOp::Commit), Some(Reply::Sql(SqlReply::Committed))) => committed += 1,
            _ => {}
        }
        if !op.accepted() {
            continue;
        }
        let key = match BillTag::of(&op.tag) {
            Some(BillTag::Charge { request, .. }) => request.key.to_string(),
            Some(BillTag::Settle { request, .. }) => request.to_string(),
            _ => continue,
        };
        *charges.entry(key).or_default() += 1;
    }
    m.transaction_rollback_count = begun.saturating_sub(committed);
    m.duplicate_deduct_count = charges.values().map(|n| n.saturating_sub(1)).sum();
    m.idempotent_conflict_count = history
        .notes
        .iter()
        .filter(|n| {
            matches!(
                BillNote::of(&n.note),
                Some(
                    BillNote::Replayed { .. }
                        | BillNote::Answered {
                            answer: Answer::Duplicate | Answer::Mismatch,
                            ..
                        }
                )
            )
        })
        .count() as u64;
    m
}

/// Counts the family's `sometimes` properties in a run: stored responses replayed, 409s
/// answered, expired claims re-claimed, holds swept, second settlements refused, usage
/// looked up, duplicate usage events absorbed.
pub fn coverage(history: &History) -> Verdict {
    let mut verdict = Verdict::default();
    let mut counts = [0u64; 7];
    for note in &history.notes {
        match BillNote::of(&note.note) {
            Some(BillNote::Replayed { .. }) => counts[0] += 1,
            Some(BillNote::Answered {
                answer: Answer::InProgress { .. },
                ..
            }) => counts[1] += 1,
            Some(BillNote::Reclaimed { .. }) => counts[2] += 1,
            Some(BillNote::Swept { .. }) => counts[3] += 1,
            Some(BillNote::SettleRefused { .. }) => counts[4] += 1,
            Some(BillNote::UsageLooked { .. }) => counts[5] += 1,
            Some(BillNote::UsageDeduplicated { .. }) => counts[6] += 1,
            _ => {}
        }
    }
    verdict.count(REPLAYED.name, counts[0]);
    verdict.count(CONFLICT_ANSWERED.name, counts[1]);
    verdict.count(RECLAIMED.name, counts[2]);
    verdict.count(HOLD_SWEPT.name, counts[3]);
    verdict.count(SETTLE_REFUSED.name, counts[4]);
    verdict.count(USAGE_LOOKED.name, counts[5]);
    verdict.count(USAGE_DEDUPLICATED.name, counts[6]);
    verdict
}
