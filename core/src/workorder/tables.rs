//! Document 002's tables: the work orders, the effect-dedup records and the update log.

use crate::ops::{ColumnType, Table, TableDef};

static WORK_ORDERS_DEF: TableDef = TableDef {
    name: "work_orders",
    columns: &[
        ("qty", ColumnType::Int),
        ("lease_epoch", ColumnType::Int),
        ("lease_owner", ColumnType::Text),
        ("lease_until", ColumnType::Int),
    ],
};

static APPLIED_SCANS_DEF: TableDef = TableDef {
    name: "applied_scans",
    columns: &[("work_order", ColumnType::Text), ("qty", ColumnType::Int)],
};

static UPDATE_LOG_DEF: TableDef = TableDef {
    name: "update_log",
    columns: &[
        ("request_id", ColumnType::Text),
        ("scan", ColumnType::Text),
        ("work_order", ColumnType::Text),
        ("qty", ColumnType::Int),
        ("status", ColumnType::Text),
    ],
};

/// Document 002's work order (MongoDB's `WorkOrder` document): quantity and the lease.
pub const WORK_ORDERS: Table = Table::declare(&WORK_ORDERS_DEF);

/// The effect-dedup records keyed by the scan id (unique): the correct protocol's log.
pub const APPLIED_SCANS: Table = Table::declare(&APPLIED_SCANS_DEF);

/// Document 002's `WorkOrderUpdateLog`: one row per logged update, with the proposal's
/// `requestId` in a column (keyed by it only when the unique index is modelled).
pub const UPDATE_LOG: Table = Table::declare(&UPDATE_LOG_DEF);
