//! R-000-09: `quota_check._warm_quota_cache()`. A request finds the Redis mirror of the
//! balance cold and warms it from the database, while the deduction path (R-000-04's sync)
//! writes the same hash. [`WarmRequest`] is one request in each variant:
//!
//! | variant | on a cold cache |
//! |---|---|
//! | `Buggy` | every request loads the row and `HSET`s it: a stampede, and a slow warmer's old row overwrites a newer sync |
//! | `DocFix` | `SETNX lock:warm` (no TTL, as written): the winner loads, `HSET`s and `DEL`s the lock; a loser re-reads the cache once 100 ms later and, still cold, proceeds on the defaults (the document leaves losers unspecified) |
//! | `Correct` | `SET lock <token> NX PX 2000`; the winner re-reads the cache (single flight), loads, writes with `set_if_newer` and releases with `compare_and_delete`; a loser polls the cache and then reads the row: never a default |
//!
//! Every request then calls the upstream if the balance it saw covers its cost.

use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    CallKind, KvOp, KvReply, Reply, RequestId, ScriptName, SetCondition, StoreOp, UpstreamOp,
};
use crate::tag::Note;
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

use super::mirror::{ENDPOINT, mirror_key, mirror_write, mirrored_balance, row_of, select};
use super::{Outbox, QuotaTag};

/// The warm-up lock's key for `account`.
pub fn warm_lock_key(account: &str) -> String {
    format!("quota:lock:warm:{account}")
}

/// How many times a correct loser polls the cache before it reads the row.
const POLLS_MAX: u32 = 5;

/// One R-000-09 request's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmConfig {
    /// The protocol.
    pub variant: Variant,
    /// The account.
    pub account: String,
    /// The request's id (also the lock token's).
    pub request: RequestId,
    /// What the upstream call costs.
    pub cost: i64,
    /// How long the upstream call takes.
    pub work: Duration,
    /// The correct lock's TTL.
    pub lock_ttl: Duration,
    /// How long a loser waits between two reads of the cache.
    pub poll_every: Duration,
}

/// One R-000-09 request. Inputs and outputs follow [`Machine`]'s drain order; a spurious
/// `handle_timeout` is a no-op. A restarted incarnation does nothing (its lock, if any, stays
/// until its TTL, or for ever without one).
#[derive(Debug)]
pub struct WarmRequest {
    cfg: WarmConfig,
    incarnation: u32,
    out: Outbox,
    step: WStep,
    timer: Option<Timestamp>,
    polls: u32,
    /// The balance this request admits on, once it has one.
    balance: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WStep {
    New,
    Reading(OpId),
    Locking(OpId),
    Rechecking(OpId),
    Loading(OpId),
    Writing(OpId),
    Unlocking(OpId),
    Waiting,
    Polling(OpId),
    DbReading(OpId),
    Calling(OpId),
    Done,
}

impl WarmRequest {
    /// The request in its `incarnation` (0 at first start).
    pub fn new(cfg: WarmConfig, incarnation: u32) -> WarmRequest {
        WarmRequest {
            cfg,
            incarnation,
            out: Outbox::default(),
            step: WStep::New,
            timer: None,
            polls: 0,
            balance: None,
        }
    }

    fn kv(&mut self, op: KvOp, tag: QuotaTag) -> OpId {
        self.out.send_op(StoreOp::Kv(op), tag)
    }

    fn token(&self) -> String {
        format!("r{}", self.cfg.request.0)
    }

    fn read_cache(&mut self) -> OpId {
        let key = mirror_key(&self.cfg.account);
        let request = self.cfg.request;
        self.kv(KvOp::HGetAll { key }, QuotaTag::CacheRead { request })
    }

    fn load(&mut self) {
        let request = self.cfg.request;
        let id = self
            .out
            .exec(select(&self.cfg.account), QuotaTag::WarmLoad { request });
        self.step = WStep::Loading(id);
    }

    /// Admits on `balance`: calls the upstream if it covers the cost.
    fn admit(&mut self, balance: i64) {
        self.balance = Some(balance);
        if balance < self.cfg.cost {
            self.step = WStep::Done;
            return;
        }
        let op = StoreOp::Upstream(UpstreamOp {
            endpoint: ENDPOINT,
            kind: CallKind::Request {
                stream: self.cfg.work,
            },
        });
        let tag = QuotaTag::Upstream {
            request: self.cfg.request,
            cost: self.cfg.cost,
        };
        self.step = WStep::Calling(self.out.send_op(op, tag));
    }

    fn wait(&mut self, now: Timestamp) {
        self.step = WStep::Waiting;
        self.timer = Some(now + self.cfg.poll_every);
    }

    fn unlock(&mut self) {
        let request = self.cfg.request;
        let key = warm_lock_key(&self.cfg.account);
        let op = match self.cfg.variant {
            Variant::Correct => KvOp::Script {
                script: ScriptName::CompareAndDelete,
                keys: vec![key],
                args: vec![self.token()],
            },
            Variant::Buggy | Variant::DocFix => KvOp::Del { key },
        };
        self.step = WStep::Unlocking(self.kv(op, QuotaTag::Unlock { request }));
    }
}

impl Machine for WarmRequest {
    fn handle_start(&mut self, _now: Timestamp) {
        if self.step != WStep::New {
            return;
        }
        if self.incarnation > 0 {
            self.step = WStep::Done;
            return;
        }
        self.step = WStep::Reading(self.read_cache());
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let waiting = match self.step {
            WStep::Reading(id)
            | WStep::Locking(id)
            | WStep::Rechecking(id)
            | WStep::Loading(id)
            | WStep::Writing(id)
            | WStep::Unlocking(id)
            | WStep::Polling(id)
            | WStep::DbReading(id)
            | WStep::Calling(id) => id,
            WStep::New | WStep::Waiting | WStep::Done => return,
        };
        if waiting != op {
            return;
        }
        let request = self.cfg.request;
        match self.step {
            WStep::Reading(_) => match (mirrored_balance(&reply), &reply) {
                (Some(balance), _) => self.admit(balance),
                (None, Reply::Kv(KvReply::Pairs(_))) => match self.cfg.variant {
                    Variant::Buggy => self.load(),
                    Variant::DocFix => {
                        let op = KvOp::Set {
                            key: warm_lock_key(&self.cfg.account),
                            value: "1".into(),
                            condition: SetCondition::IfAbsent,
                            ttl: None,
                        };
                        self.step = WStep::Locking(self.kv(op, QuotaTag::Lock { request }));
                    }
                    Variant::Correct => {
                        let op = KvOp::Set {
                            key: warm_lock_key(&self.cfg.account),
                            value: self.token(),
                            condition: SetCondition::IfAbsent,
                            ttl: Some(self.cfg.lock_ttl),
                        };
                        self.step = WStep::Locking(self.kv(op, QuotaTag::Lock { request }));
                    }
                },
                // Redis did not answer: nothing to admit on.
                _ => self.step = WStep::Done,
            },
            WStep::Locking(_) => match (reply, self.cfg.variant) {
                (Reply::Kv(KvReply::Ok), Variant::Correct) => {
                    // Single flight: the cache may have been warmed since the miss.
                    self.step = WStep::Rechecking(self.read_cache());
                }
                (Reply::Kv(KvReply::Ok), _) => self.load(),
                (Reply::Kv(KvReply::Nil), _) => self.wait(now),
                _ => self.step = WStep::Done,
            },
            WStep::Rechecking(_) => match mirrored_balance(&reply) {
                Some(balance) => {
                    self.balance = Some(balance);
                    self.unlock();
                }
                None => self.load(),
            },
            WStep::Loading(_) => match row_of(&reply) {
                Some(row) => {
                    self.balance = Some(row.0);
                    let op = mirror_write(self.cfg.variant, &self.cfg.account, row);
                    self.step = WStep::Writing(self.kv(op, QuotaTag::WarmWrite { request }));
                }
                None => match self.cfg.variant {
                    Variant::Buggy => self.step = WStep::Done,
                    Variant::DocFix | Variant::Correct => {
                        self.balance = None;
                        self.unlock();
                    }
                },
            },
            WStep::Writing(_) => match self.cfg.variant {
                Variant::Buggy => match self.balance {
                    Some(balance) => self.admit(balance),
                    None => self.step = WStep::Done,
                },
                Variant::DocFix | Variant::Correct => self.unlock(),
            },
            WStep::Unlocking(_) => match self.balance {
                Some(balance) => self.admit(balance),
                None => self.step = WStep::Done,
            },
            WStep::Polling(_) => match mirrored_balance(&reply) {
                Some(balance) => self.admit(balance),
                None => match self.cfg.variant {
                    // The document leaves the loser unspecified: it proceeds on the defaults
                    // of an empty hash, nothing used (RACES.md R-000-09, W3).
                    Variant::Buggy | Variant::DocFix => self.admit(i64::MAX),
                    Variant::Correct if self.polls < POLLS_MAX => self.wait(now),
                    Variant::Correct => {
                        let id = self
                            .out
                            .exec(select(&self.cfg.account), QuotaTag::DbRead { request });
                        self.step = WStep::DbReading(id);
                    }
                },
            },
            WStep::DbReading(_) => match row_of(&reply) {
                Some((balance, _)) => self.admit(balance),
                None => self.step = WStep::Done,
            },
            WStep::Calling(_) => self.step = WStep::Done,
            WStep::New | WStep::Waiting | WStep::Done => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.step != WStep::Waiting || self.timer.is_none_or(|t| t > now) {
            return;
        }
        self.timer = None;
        self.polls += 1;
        self.step = WStep::Polling(self.read_cache());
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.notes.pop_front().map(Note::new)
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.timer
    }

    fn is_idle(&self) -> bool {
        matches!(self.step, WStep::Done)
    }
}
