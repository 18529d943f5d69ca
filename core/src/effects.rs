//! Effects on a work order, from unsafe to idempotent (R-002-03, R-002-04, R-002-05).
//!
//! - [`increment`]: document 002's `$inc`, unguarded: every delivery of a scan adds again.
//! - [`find_log`] / [`insert_log`]: document 002's plan 2, a `WorkOrderUpdateLog` consulted
//!   before and written after (or before) the `$inc`, keyed by a `requestId`. Check-then-act,
//!   not atomic with the effect, and (as literally proposed) without a unique index.
//! - [`record_scan`] + [`fenced_increment`] in one transaction: the correct idempotent effect.
//!   The scan id assigned at the terminal is the key of a unique row inserted together with
//!   the increment, and the increment carries the lease epoch as its fence.

use crate::ids::{Epoch, Quantity, ScanId, WorkOrderId};
use crate::lease::EpochLease;
use crate::ops::{Assign, CmpOp, Cond, Row, SqlStmt, Value};
use crate::workorder::{APPLIED_SCANS, UPDATE_LOG, WORK_ORDERS};

/// `$inc: {qty: n}` with no guard at all.
pub fn increment(work_order: WorkOrderId, qty: Quantity) -> SqlStmt {
    SqlStmt::Update {
        table: WORK_ORDERS,
        key: work_order.to_string(),
        guard: Cond::True,
        set: vec![Assign::Add {
            column: "qty".into(),
            delta: qty.0,
        }],
    }
}

/// Plan 2's `findOne({requestId, status: 'SUCCESS'})`.
pub fn find_log(request_id: &str) -> SqlStmt {
    SqlStmt::scan(
        UPDATE_LOG,
        Cond::And(vec![
            Cond::cmp("request_id", CmpOp::Eq, Value::Text(request_id.to_string())),
            Cond::cmp("status", CmpOp::Eq, Value::Text("SUCCESS".into())),
        ]),
    )
}

/// Plan 2's `WorkOrderUpdateLog.create(...)`. `row_key` is the request id itself when the
/// unique index is modelled, and a fresh row id otherwise.
pub fn insert_log(
    row_key: String,
    request_id: &str,
    scan: ScanId,
    work_order: WorkOrderId,
    qty: Quantity,
) -> SqlStmt {
    SqlStmt::Insert {
        table: UPDATE_LOG,
        key: row_key,
        row: Row::from([
            (
                "request_id".to_string(),
                Value::Text(request_id.to_string()),
            ),
            ("scan".to_string(), Value::Text(scan.to_string())),
            (
                "work_order".to_string(),
                Value::Text(work_order.to_string()),
            ),
            ("qty".to_string(), Value::Int(qty.0)),
            ("status".to_string(), Value::Text("SUCCESS".into())),
        ]),
    }
}

/// The correct dedup record: `INSERT INTO applied_scans (key = scan id, ...)`, unique.
pub fn record_scan(scan: ScanId, work_order: WorkOrderId, qty: Quantity) -> SqlStmt {
    SqlStmt::Insert {
        table: APPLIED_SCANS,
        key: scan.to_string(),
        row: Row::from([
            (
                "work_order".to_string(),
                Value::Text(work_order.to_string()),
            ),
            ("qty".to_string(), Value::Int(qty.0)),
        ]),
    }
}

/// The correct increment: `qty = qty + n, lease_until = 0 WHERE lease_epoch = e` (the lease
/// is released in the same statement, since the job is done once this commits).
pub fn fenced_increment(work_order: WorkOrderId, epoch: Epoch, qty: Quantity) -> SqlStmt {
    SqlStmt::Update {
        table: WORK_ORDERS,
        key: work_order.to_string(),
        guard: EpochLease::fence(epoch),
        set: vec![
            Assign::Add {
                column: "qty".into(),
                delta: qty.0,
            },
            Assign::Set {
                column: "lease_until".into(),
                value: Value::Int(0),
            },
        ],
    }
}

/// The checker's read of a work order's log: every applied-scan row of the work order.
pub fn applied_scans_of(work_order: WorkOrderId) -> SqlStmt {
    SqlStmt::scan(
        APPLIED_SCANS,
        Cond::cmp("work_order", CmpOp::Eq, Value::Text(work_order.to_string())),
    )
}
