//! Leases on a work order (R-002-01, R-002-02).
//!
//! Two kinds live side by side so a reader can diff them:
//!
//! - [`RedisLock`]: document 002's lock, `SET lock:WO owner NX PX ttl`, renewed by a
//!   compare-and-extend script and released by compare-and-delete. It gives mutual exclusion
//!   only while nobody pauses, no packet is delayed and Redis never fails over: the store that
//!   applies the effect never sees it.
//! - [`EpochLease`]: the correct lease. Its epoch (fencing token) is owned by the store that
//!   applies the effect: acquisition bumps `lease_epoch` on the work-order row, and every effect
//!   is a conditional update `WHERE lease_epoch = e`, so a zombie's write matches no row.

use crate::ids::{Epoch, WorkOrderId};
use crate::ops::{
    Assign, CmpOp, Cond, KvOp, Reply, ScriptName, SetCondition, SqlReply, SqlStmt, Value,
};
use crate::time::{Duration, Timestamp};
use crate::workorder::WORK_ORDERS;

/// Document 002's Redis lock on one work order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisLock {
    /// `lock:wo-N`.
    pub key: String,
    /// This holder's token (unique per job attempt).
    pub owner: String,
    /// The lock's TTL (20 s in document 002).
    pub ttl: Duration,
}

impl RedisLock {
    /// The lock on `work_order` for `owner`.
    pub fn new(work_order: WorkOrderId, owner: String, ttl: Duration) -> RedisLock {
        RedisLock {
            key: format!("lock:{work_order}"),
            owner,
            ttl,
        }
    }

    /// `SET lock:WO owner NX PX ttl`.
    pub fn acquire(&self) -> KvOp {
        KvOp::Set {
            key: self.key.clone(),
            value: self.owner.clone(),
            condition: SetCondition::IfAbsent,
            ttl: Some(self.ttl),
        }
    }

    /// The atomic compare-and-extend renewal.
    pub fn extend(&self) -> KvOp {
        KvOp::Script {
            script: ScriptName::CompareAndExtend,
            keys: vec![self.key.clone()],
            args: vec![self.owner.clone(), self.ttl.as_ms().to_string()],
        }
    }

    /// The atomic compare-and-delete release.
    pub fn release(&self) -> KvOp {
        KvOp::Script {
            script: ScriptName::CompareAndDelete,
            keys: vec![self.key.clone()],
            args: vec![self.owner.clone()],
        }
    }
}

/// The correct lease: its epoch lives on the work-order row that effects update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochLease {
    /// The work order.
    pub work_order: WorkOrderId,
    /// This holder's name.
    pub owner: String,
    /// How long an acquisition keeps others out if the holder goes silent.
    pub ttl: Duration,
}

impl EpochLease {
    /// `UPDATE work_orders SET lease_epoch = lease_epoch + 1, lease_owner = me, lease_until =
    /// now + ttl WHERE key = WO AND (lease_until <= now OR lease_owner = me) RETURNING *`.
    /// A lease is expired from the instant `lease_until` itself, so a row seeded with
    /// `lease_until = 0` can be acquired at t = 0.
    pub fn acquire(&self, now: Timestamp) -> SqlStmt {
        let until = now + self.ttl;
        SqlStmt::Update {
            table: WORK_ORDERS,
            key: self.work_order.to_string(),
            guard: Cond::Or(vec![
                Cond::cmp("lease_until", CmpOp::Le, Value::Int(ms(now))),
                Cond::cmp("lease_owner", CmpOp::Eq, Value::Text(self.owner.clone())),
            ]),
            set: vec![
                Assign::Add {
                    column: "lease_epoch".into(),
                    delta: 1,
                },
                Assign::Set {
                    column: "lease_owner".into(),
                    value: Value::Text(self.owner.clone()),
                },
                Assign::Set {
                    column: "lease_until".into(),
                    value: Value::Int(ms(until)),
                },
            ],
        }
    }

    /// The epoch granted by an acquisition's reply, or `None` if it was refused.
    pub fn granted(reply: &Reply) -> Option<Epoch> {
        match reply {
            Reply::Sql(SqlReply::Rows(rows)) => rows.first()?.int("lease_epoch").map(Epoch),
            _ => None,
        }
    }

    /// The fence every effect carries: `lease_epoch = e`.
    pub fn fence(epoch: Epoch) -> Cond {
        Cond::cmp("lease_epoch", CmpOp::Eq, Value::Int(epoch.0))
    }

    /// The heartbeat while working: `lease_until = now + ttl WHERE lease_epoch = e`. It keeps
    /// a slow but live holder's lease; it is not what makes the protocol safe (the fence is).
    pub fn renew(&self, epoch: Epoch, now: Timestamp) -> SqlStmt {
        SqlStmt::Update {
            table: WORK_ORDERS,
            key: self.work_order.to_string(),
            guard: EpochLease::fence(epoch),
            set: vec![Assign::Set {
                column: "lease_until".into(),
                value: Value::Int(ms(now + self.ttl)),
            }],
        }
    }

    /// Give the lease up early (only if still ours): `lease_until = 0 WHERE lease_epoch = e`.
    pub fn release(&self, epoch: Epoch) -> SqlStmt {
        SqlStmt::Update {
            table: WORK_ORDERS,
            key: self.work_order.to_string(),
            guard: EpochLease::fence(epoch),
            set: vec![Assign::Set {
                column: "lease_until".into(),
                value: Value::Int(0),
            }],
        }
    }
}

fn ms(t: Timestamp) -> i64 {
    i64::try_from(t.as_ms()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{KeyedRow, Row};

    #[test]
    fn acquisition_is_refused_while_another_owner_holds_an_unexpired_lease() {
        let lease = EpochLease {
            work_order: WorkOrderId(1),
            owner: "W_B".into(),
            ttl: Duration::from_secs(20),
        };
        let SqlStmt::Update { guard, .. } = lease.acquire(Timestamp::from_ms(5_000)) else {
            panic!("acquire is an update")
        };
        let held = Row::from([
            ("lease_owner".to_string(), Value::Text("W_A".into())),
            ("lease_until".to_string(), Value::Int(20_000)),
        ]);
        let on = |row: &Row| guard.holds_on(WORK_ORDERS, "1", row);
        assert_eq!(on(&held), Ok(false));
        let expired = Row::from([
            ("lease_owner".to_string(), Value::Text("W_A".into())),
            ("lease_until".to_string(), Value::Int(4_999)),
        ]);
        assert_eq!(on(&expired), Ok(true));
    }

    #[test]
    fn a_lease_can_be_acquired_at_the_instant_it_expires() {
        let lease = EpochLease {
            work_order: WorkOrderId(1),
            owner: "W_B".into(),
            ttl: Duration::from_secs(20),
        };
        let guard = |now| {
            let SqlStmt::Update { guard, .. } = lease.acquire(Timestamp::from_ms(now)) else {
                panic!("acquire is an update")
            };
            guard
        };
        // A row seeded with `lease_until = 0`, first acquired at t = 0.
        let never_held = Row::from([
            ("lease_owner".to_string(), Value::Text(String::new())),
            ("lease_until".to_string(), Value::Int(0)),
        ]);
        assert_eq!(guard(0).holds_on(WORK_ORDERS, "1", &never_held), Ok(true));
        // Another owner's lease, at the instant it runs out and one millisecond before.
        let held = Row::from([
            ("lease_owner".to_string(), Value::Text("W_A".into())),
            ("lease_until".to_string(), Value::Int(20_000)),
        ]);
        assert_eq!(guard(20_000).holds_on(WORK_ORDERS, "1", &held), Ok(true));
        assert_eq!(guard(19_999).holds_on(WORK_ORDERS, "1", &held), Ok(false));
    }

    #[test]
    fn renewal_requires_the_current_epoch_whatever_the_expiry() {
        let lease = EpochLease {
            work_order: WorkOrderId(1),
            owner: "W_A".into(),
            ttl: Duration::from_secs(20),
        };
        let SqlStmt::Update { guard, .. } = lease.renew(Epoch(3), Timestamp::from_ms(20_000))
        else {
            panic!("renew is an update")
        };
        let row = |epoch| {
            Row::from([
                ("lease_epoch".to_string(), Value::Int(epoch)),
                ("lease_owner".to_string(), Value::Text("W_A".into())),
                ("lease_until".to_string(), Value::Int(20_000)),
            ])
        };
        assert_eq!(guard.holds_on(WORK_ORDERS, "1", &row(3)), Ok(true));
        assert_eq!(guard.holds_on(WORK_ORDERS, "1", &row(4)), Ok(false));
    }

    #[test]
    fn granted_reads_the_epoch_from_the_returned_row() {
        let row = KeyedRow {
            key: "wo-1".into(),
            columns: Row::from([("lease_epoch".to_string(), Value::Int(4))]),
        };
        assert_eq!(
            EpochLease::granted(&Reply::Sql(SqlReply::Rows(vec![row]))),
            Some(Epoch(4))
        );
        assert_eq!(
            EpochLease::granted(&Reply::Sql(SqlReply::Rows(vec![]))),
            None
        );
        assert_eq!(EpochLease::granted(&Reply::Timeout), None);
    }
}
