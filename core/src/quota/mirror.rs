//! R-000-04: `QuotaRepository.check_and_deduct` with the balance in SQL and a Redis hash
//! mirror (`quota:balance:<key>`, fields `balance` and `version`) used for admission and
//! display. [`MirrorRequest`] is one gateway request in each variant; [`Reconciler`],
//! [`Warmer`] and [`Observer`] are the processes around it.
//!
//! | variant | admission | after the upstream call |
//! |---|---|---|
//! | `Buggy` | the Redis mirror's balance (RACES.md A2; a miss reads the row) | `balance -= cost WHERE balance >= cost` in SQL, then `HSET` of the row it returned |
//! | `DocFix`, after-commit hook | as `Buggy`: the hook runs the same `HSET` after the same commit | as `Buggy` |
//! | `DocFix`, Lua | `deduct_if_enough` on the Redis hash | the SQL deduction; if it is refused or fails, `HINCRBY balance +cost` (compensation) |
//! | `Correct` | the SQL conditional deduction alone (`version += 1`), before the call | the mirror written by `set_if_newer` with the row's version; the [`Reconciler`] re-mirrors every 400 ms |
//!
//! Redis is never the admission authority in `Correct`: a stale mirror can only be corrected
//! (by version), never believed.

use crate::ids::{EndpointId, OpId};
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    Assign, CallKind, CmpOp, Cond, Expr, KvOp, KvReply, Reply, RequestId, ScriptName, SqlReply,
    SqlStmt, StoreOp, UpstreamOp,
};
use crate::tag::Note;
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

use super::tables::QUOTA_BALANCE;
use super::{Outbox, QuotaTag};

/// The Redis key mirroring `account`'s balance row.
pub fn mirror_key(account: &str) -> String {
    format!("quota:balance:{account}")
}

/// Which reading of the document's fix ("after-commit hook, or Redis Lua atomic deduct") a
/// `DocFix` request implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocFixReading {
    /// The mirror write moved into an after-commit hook: the same order as `Buggy`.
    AfterCommitHook,
    /// The admission is a Lua check-and-deduct on the Redis hash; SQL follows, with a
    /// compensation when it refuses.
    LuaDeduct,
}

/// One R-000-04 request's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The protocol.
    pub variant: Variant,
    /// What `DocFix` implements.
    pub reading: DocFixReading,
    /// The account (the balance row's key).
    pub account: String,
    /// The request's id.
    pub request: RequestId,
    /// What the request costs.
    pub cost: i64,
    /// How long the upstream call takes.
    pub work: Duration,
}

/// The one upstream endpoint of the quota worlds.
pub(super) const ENDPOINT: EndpointId = EndpointId(1);

pub(super) fn select(account: &str) -> SqlStmt {
    SqlStmt::Select {
        table: QUOTA_BALANCE,
        key: account.to_string(),
        for_update: false,
    }
}

/// `(balance, version)` of a returned balance row.
pub(super) fn row_of(reply: &Reply) -> Option<(i64, i64)> {
    match reply {
        Reply::Sql(SqlReply::Rows(rows)) => {
            let row = rows.first()?;
            Some((row.int("balance")?, row.int("version")?))
        }
        _ => None,
    }
}

/// The balance a mirror read shows, if the hash holds one.
pub(super) fn mirrored_balance(reply: &Reply) -> Option<i64> {
    match reply {
        Reply::Kv(KvReply::Pairs(pairs)) => pairs
            .iter()
            .find(|(f, _)| f == "balance")
            .and_then(|(_, v)| v.parse().ok()),
        _ => None,
    }
}

/// The unversioned mirror write of `Buggy` and the after-commit hook.
fn hset(account: &str, (balance, version): (i64, i64)) -> KvOp {
    KvOp::HSet {
        key: mirror_key(account),
        pairs: vec![
            ("balance".into(), balance.to_string()),
            ("version".into(), version.to_string()),
        ],
    }
}

/// The correct protocol's versioned mirror write (`set_if_newer`).
fn set_if_newer(account: &str, (balance, version): (i64, i64)) -> KvOp {
    KvOp::Script {
        script: ScriptName::SetIfNewer,
        keys: vec![mirror_key(account)],
        args: vec![version.to_string(), "balance".into(), balance.to_string()],
    }
}

/// The mirror write of `variant`: versioned in `Correct`, a plain `HSET` otherwise.
pub(super) fn mirror_write(variant: Variant, account: &str, row: (i64, i64)) -> KvOp {
    match variant {
        Variant::Correct => set_if_newer(account, row),
        Variant::Buggy | Variant::DocFix => hset(account, row),
    }
}

// ---------------------------------------------------------------------------------------------
// MirrorRequest

/// One R-000-04 request. Inputs and outputs follow [`Machine`]'s drain order; a spurious
/// `handle_timeout` is a no-op (it sets no timer). A restarted incarnation does nothing.
#[derive(Debug)]
pub struct MirrorRequest {
    cfg: MirrorConfig,
    incarnation: u32,
    out: Outbox,
    step: MStep,
    /// The row the deduction returned (`Correct`: before the call).
    row: Option<(i64, i64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MStep {
    New,
    CacheRead(OpId),
    DbRead(OpId),
    LuaDeduct(OpId),
    Calling(OpId),
    Deducting(OpId),
    Mirroring(OpId),
    Compensating(OpId),
    Done,
}

impl MirrorRequest {
    /// The request in its `incarnation` (0 at first start).
    pub fn new(cfg: MirrorConfig, incarnation: u32) -> MirrorRequest {
        MirrorRequest {
            cfg,
            incarnation,
            out: Outbox::default(),
            step: MStep::New,
            row: None,
        }
    }

    fn lua(&self) -> bool {
        self.cfg.variant == Variant::DocFix && self.cfg.reading == DocFixReading::LuaDeduct
    }

    fn kv(&mut self, op: KvOp, tag: QuotaTag) -> OpId {
        self.out.send_op(StoreOp::Kv(op), tag)
    }

    fn call(&mut self) {
        let request = self.cfg.request;
        let op = StoreOp::Upstream(UpstreamOp {
            endpoint: ENDPOINT,
            kind: CallKind::Request {
                stream: self.cfg.work,
            },
        });
        let tag = QuotaTag::Upstream {
            request,
            cost: self.cfg.cost,
        };
        self.step = MStep::Calling(self.out.send_op(op, tag));
    }

    fn deduct(&mut self) {
        let cost = self.cfg.cost;
        let stmt = SqlStmt::Update {
            table: QUOTA_BALANCE,
            key: self.cfg.account.clone(),
            guard: Cond::cmp("balance", CmpOp::Ge, crate::ops::Value::Int(cost)),
            set: vec![
                Assign::to("balance", Expr::col("balance").minus(Expr::int(cost))),
                Assign::to("version", Expr::col("version").plus(Expr::int(1))),
            ],
        };
        let request = self.cfg.request;
        let id = self.out.exec(stmt, QuotaTag::Deduct { request });
        self.step = MStep::Deducting(id);
    }

    fn admit_on(&mut self, balance: Option<i64>) {
        match balance {
            Some(b) if b >= self.cfg.cost => self.call(),
            Some(_) => self.step = MStep::Done,
            None => {
                let request = self.cfg.request;
                let id = self
                    .out
                    .exec(select(&self.cfg.account), QuotaTag::DbRead { request });
                self.step = MStep::DbRead(id);
            }
        }
    }
}

impl Machine for MirrorRequest {
    fn handle_start(&mut self, _now: Timestamp) {
        if self.step != MStep::New {
            return;
        }
        if self.incarnation > 0 {
            self.step = MStep::Done;
            return;
        }
        let request = self.cfg.request;
        let key = mirror_key(&self.cfg.account);
        self.step = match self.cfg.variant {
            Variant::Correct => {
                self.deduct();
                self.step
            }
            _ if self.lua() => {
                let op = KvOp::Script {
                    script: ScriptName::DeductIfEnough,
                    keys: vec![key],
                    args: vec!["balance".into(), self.cfg.cost.to_string()],
                };
                MStep::LuaDeduct(self.kv(op, QuotaTag::LuaDeduct { request }))
            }
            _ => MStep::CacheRead(self.kv(KvOp::HGetAll { key }, QuotaTag::CacheRead { request })),
        };
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        let waiting = match self.step {
            MStep::CacheRead(id)
            | MStep::DbRead(id)
            | MStep::LuaDeduct(id)
            | MStep::Calling(id)
            | MStep::Deducting(id)
            | MStep::Mirroring(id)
            | MStep::Compensating(id) => id,
            MStep::New | MStep::Done => return,
        };
        if waiting != op {
            return;
        }
        let request = self.cfg.request;
        match self.step {
            MStep::CacheRead(_) => match reply {
                Reply::Kv(KvReply::Pairs(_)) => self.admit_on(mirrored_balance(&reply)),
                _ => self.step = MStep::Done,
            },
            MStep::DbRead(_) => match row_of(&reply) {
                Some((balance, _)) if balance >= self.cfg.cost => self.call(),
                _ => self.step = MStep::Done,
            },
            MStep::LuaDeduct(_) => match reply {
                Reply::Kv(KvReply::Int(1)) => self.call(),
                _ => self.step = MStep::Done,
            },
            MStep::Calling(_) => match self.cfg.variant {
                // The cost is incurred whatever the answer; billing follows.
                Variant::Buggy | Variant::DocFix => self.deduct(),
                Variant::Correct => self.step = MStep::Done,
            },
            MStep::Deducting(_) => {
                let row = row_of(&reply);
                match (self.cfg.variant, row) {
                    (Variant::Correct, Some(row)) => {
                        self.row = Some(row);
                        let op = set_if_newer(&self.cfg.account, row);
                        self.step = MStep::Mirroring(self.kv(op, QuotaTag::Mirror { request }));
                    }
                    // Refused, or unknown: nothing was admitted (if it committed, the
                    // reconciler mirrors it).
                    (Variant::Correct, None) => self.step = MStep::Done,
                    _ if self.lua() => match row {
                        Some(_) => self.step = MStep::Done,
                        None => {
                            let op = KvOp::HIncrBy {
                                key: mirror_key(&self.cfg.account),
                                field: "balance".into(),
                                delta: self.cfg.cost,
                            };
                            let id = self.kv(op, QuotaTag::Compensate { request });
                            self.step = MStep::Compensating(id);
                        }
                    },
                    (_, Some(row)) => {
                        let op = mirror_write(self.cfg.variant, &self.cfg.account, row);
                        self.step = MStep::Mirroring(self.kv(op, QuotaTag::Mirror { request }));
                    }
                    // The call was served without quota: the document's code has nothing more.
                    (_, None) => self.step = MStep::Done,
                }
            }
            MStep::Mirroring(_) => match self.cfg.variant {
                Variant::Correct => self.call(),
                _ => self.step = MStep::Done,
            },
            MStep::Compensating(_) => self.step = MStep::Done,
            MStep::New | MStep::Done => {}
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.notes.pop_front().map(Note::new)
    }

    fn is_idle(&self) -> bool {
        matches!(self.step, MStep::Done)
    }
}

// ---------------------------------------------------------------------------------------------
// Reconciler, Warmer, Observer

/// Reads the balance row and writes the mirror, every `every` (`Reconciler`) or once
/// (`Warmer`); the write is versioned in `Correct`.
#[derive(Debug)]
struct Copier {
    variant: Variant,
    account: String,
    out: Outbox,
    waiting: Option<OpId>,
    reading: bool,
    write_tag: QuotaTag,
}

impl Copier {
    fn read(&mut self) {
        let id = self.out.exec(select(&self.account), QuotaTag::SourceRead);
        self.waiting = Some(id);
        self.reading = true;
    }

    /// Takes a reply; true when the copy is over.
    fn on_reply(&mut self, op: OpId, reply: &Reply) -> bool {
        if self.waiting != Some(op) {
            return false;
        }
        self.waiting = None;
        if !self.reading {
            return true;
        }
        self.reading = false;
        let Some(row) = row_of(reply) else {
            return true;
        };
        let write = mirror_write(self.variant, &self.account, row);
        let id = self.out.send_op(StoreOp::Kv(write), self.write_tag.clone());
        self.waiting = Some(id);
        false
    }
}

/// The correct protocol's reconciliation loop: every `every` it copies the balance row to
/// the mirror with `set_if_newer`, so that the mirror converges within `every` plus two round
/// trips after a lost sync, a crash between commit and sync, or a failover. A copy that has
/// not finished `every` after it began (a lost or delayed reply) is abandoned and a fresh one
/// starts: one lost reply does not block the loop for the driver's timeout (5 s of SQL, longer
/// than the 1 s bound), and a late reply of the abandoned copy is ignored; a late write of it
/// is harmless, being versioned. Never idle: the world's horizon ends its run.
#[derive(Debug)]
pub struct Reconciler {
    copier: Copier,
    every: Duration,
    next_at: Option<Timestamp>,
    /// When the copy in flight is abandoned.
    give_up_at: Option<Timestamp>,
}

impl Reconciler {
    /// A reconciler of `account`'s mirror, every `every`.
    pub fn new(account: &str, every: Duration) -> Reconciler {
        Reconciler {
            copier: Copier {
                variant: Variant::Correct,
                account: account.to_string(),
                out: Outbox::default(),
                waiting: None,
                reading: false,
                write_tag: QuotaTag::Repair,
            },
            every,
            next_at: None,
            give_up_at: None,
        }
    }
}

impl Machine for Reconciler {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_at = Some(now + self.every);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if self.copier.on_reply(op, &reply) {
            self.give_up_at = None;
            self.next_at = Some(now + self.every);
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.copier.waiting.is_some() {
            if self.give_up_at.is_none_or(|t| t > now) {
                return;
            }
            // The copy in flight is abandoned: its reply, if it ever comes, is ignored.
            self.copier.waiting = None;
            self.copier.reading = false;
        } else if self.next_at.is_none_or(|t| t > now) {
            return;
        }
        self.next_at = None;
        self.give_up_at = Some(now + self.every);
        self.copier.read();
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.copier.out.ops.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        if self.copier.waiting.is_some() {
            self.give_up_at
        } else {
            self.next_at
        }
    }

    fn is_idle(&self) -> bool {
        false
    }
}

/// Warms the mirror once at start: reads the row and writes it (versioned in `Correct`).
#[derive(Debug)]
pub struct Warmer {
    copier: Copier,
    started: bool,
    done: bool,
}

impl Warmer {
    /// A warmer of `account`'s mirror in `variant`.
    pub fn new(variant: Variant, account: &str) -> Warmer {
        Warmer {
            copier: Copier {
                variant,
                account: account.to_string(),
                out: Outbox::default(),
                waiting: None,
                reading: false,
                write_tag: QuotaTag::Warm,
            },
            started: false,
            done: false,
        }
    }
}

impl Machine for Warmer {
    fn handle_start(&mut self, _now: Timestamp) {
        if !self.started {
            self.started = true;
            self.copier.read();
        }
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if self.copier.on_reply(op, &reply) {
            self.done = true;
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.copier.out.ops.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.done || (self.started && self.copier.waiting.is_none())
    }
}

/// Samples the mirror every `every` (`HGETALL`), as the document's consistency test should
/// during the run (RACES.md TS-000-2): the oracles compare the samples with the committed
/// rows. Never idle.
#[derive(Debug)]
pub struct Observer {
    key: String,
    every: Duration,
    out: Outbox,
    next_at: Option<Timestamp>,
    waiting: Option<OpId>,
}

impl Observer {
    /// An observer of `account`'s mirror, every `every`.
    pub fn new(account: &str, every: Duration) -> Observer {
        Observer {
            key: mirror_key(account),
            every,
            out: Outbox::default(),
            next_at: None,
            waiting: None,
        }
    }
}

impl Machine for Observer {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_at = Some(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, _reply: Reply) {
        if self.waiting == Some(op) {
            self.waiting = None;
            self.next_at = Some(now + self.every);
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.waiting.is_some() || self.next_at.is_none_or(|t| t > now) {
            return;
        }
        self.next_at = None;
        let op = KvOp::HGetAll {
            key: self.key.clone(),
        };
        self.waiting = Some(self.out.send_op(StoreOp::Kv(op), QuotaTag::Observe));
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_at
    }

    fn is_idle(&self) -> bool {
        false
    }
}
