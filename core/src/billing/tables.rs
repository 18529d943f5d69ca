//! Document 000's billing tables, each prefixed `billing_`: the accounts, the ledger, the
//! idempotency claims, the streaming holds, the usage outbox and the usage records.

use crate::ops::{ColumnType, Table, TableDef};

static ACCOUNTS_DEF: TableDef = TableDef {
    name: "billing_accounts",
    columns: &[("balance", ColumnType::Int)],
};

static LEDGER_DEF: TableDef = TableDef {
    name: "billing_ledger",
    columns: &[
        ("request", ColumnType::Text),
        ("amount", ColumnType::Int),
        ("body", ColumnType::Text),
        ("estimated", ColumnType::Int),
    ],
};

static IDEMPOTENCY_DEF: TableDef = TableDef {
    name: "billing_idempotency",
    columns: &[
        ("status", ColumnType::Text),
        ("amount", ColumnType::Int),
        ("owner_epoch", ColumnType::Int),
        ("lease_until", ColumnType::Int),
        ("response", ColumnType::Text),
    ],
};

static HOLDS_DEF: TableDef = TableDef {
    name: "billing_holds",
    columns: &[
        ("status", ColumnType::Text),
        ("max_cost", ColumnType::Int),
        ("created_at", ColumnType::Int),
    ],
};

static OUTBOX_DEF: TableDef = TableDef {
    name: "billing_outbox",
    columns: &[("amount", ColumnType::Int), ("sent", ColumnType::Int)],
};

static USAGE_DEF: TableDef = TableDef {
    name: "billing_usage",
    columns: &[("request", ColumnType::Text), ("amount", ColumnType::Int)],
};

/// The accounts: the balance a charge deducts (`balance`), keyed by account.
pub const ACCOUNTS: Table = Table::declare(&ACCOUNTS_DEF);

/// The ledger: one row per charge. The correct protocols key it by the request (its
/// idempotency key or request id: `UNIQUE`); the document's `deduct()` keys it by the
/// attempt, so nothing stops a second row for one request.
pub const LEDGER: Table = Table::declare(&LEDGER_DEF);

/// The idempotency claims (R-000-03's correct fix): per idempotency key, `in_progress` with
/// its owner's epoch and lease, or `done` with the stored response.
pub const IDEMPOTENCY: Table = Table::declare(&IDEMPOTENCY_DEF);

/// The streaming holds (R-000-01's reserve-then-settle): per request, `open` with the
/// amount reserved, then `settled` exactly once.
pub const HOLDS: Table = Table::declare(&HOLDS_DEF);

/// The transactional outbox (R-000-08): one usage event per committed charge, `sent` once a
/// relay published it.
pub const OUTBOX: Table = Table::declare(&OUTBOX_DEF);

/// The usage records the usage worker writes (R-000-08): keyed by the request when the
/// worker deduplicates, by the delivery when it does not; `request` names the request.
pub const USAGE: Table = Table::declare(&USAGE_DEF);
