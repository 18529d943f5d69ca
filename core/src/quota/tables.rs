//! Document 000's quota tables: the usage counters per bucket, the balance mirrored in Redis, the reservations (holds) of
//! the two-phase protocol, and the ledger of committed charges. Every name starts with
//! `quota_`.

use crate::ops::{ColumnType, Table, TableDef};

static QUOTA_USAGE_DEF: TableDef = TableDef {
    name: "quota_usage",
    columns: &[
        ("used", ColumnType::Int),
        ("reserved", ColumnType::Int),
        ("limit_units", ColumnType::Int),
    ],
};

static QUOTA_RESERVATIONS_DEF: TableDef = TableDef {
    name: "quota_reservations",
    columns: &[
        ("bucket", ColumnType::Text),
        ("est", ColumnType::Int),
        ("status", ColumnType::Text),
        ("expires_at", ColumnType::Int),
    ],
};

static QUOTA_BALANCE_DEF: TableDef = TableDef {
    name: "quota_balance",
    columns: &[("balance", ColumnType::Int), ("version", ColumnType::Int)],
};

static QUOTA_LEDGER_DEF: TableDef = TableDef {
    name: "quota_ledger",
    columns: &[("bucket", ColumnType::Text), ("units", ColumnType::Int)],
};

/// One usage counter per bucket (an API key's budget, or its `daily_used` for one day):
/// `used` (committed), `reserved` (held by open reservations) and `limit_units`. Document
/// 000's `api_key_quota.budget_used` and `daily_used`.
pub const QUOTA_USAGE: Table = Table::declare(&QUOTA_USAGE_DEF);

/// The correct protocol's reservations, keyed by request id: the bucket fixed at
/// reservation, the estimate held, the status (`open`, then exactly one of `settled`,
/// `released`, `voided`) and when the sweeper may void it (ms of virtual time).
pub const QUOTA_RESERVATIONS: Table = Table::declare(&QUOTA_RESERVATIONS_DEF);

/// The committed charges, keyed by request id (unique): the bucket the request was admitted
/// against and the units charged. Every variant's billing writes it; it is what the oracles
/// compare the counters with.
pub const QUOTA_LEDGER: Table = Table::declare(&QUOTA_LEDGER_DEF);

/// R-000-04's authoritative balance (`QuotaRepository`'s row) with the version every
/// deduction bumps: the database side of the Redis mirror.
pub const QUOTA_BALANCE: Table = Table::declare(&QUOTA_BALANCE_DEF);
