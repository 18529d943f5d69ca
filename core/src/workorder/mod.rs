//! Document 002: barcode scans increase a work order's input quantity (R-002-01 .. R-002-06).
//!
//! A terminal ([`Terminal`]) submits each scan as a job to a Bull-like queue. Workers
//! ([`Worker`]) take jobs, lock the work order and apply `$inc qty n`. A consistency checker
//! ([`Checker`]) compares the quantity with the log. Each is written in the variants the catalog
//! names, side by side:
//!
//! | variant | lease | effect |
//! |---|---|---|
//! | `Buggy` | Redis `SET NX PX`, renewal every 8 s, result ignored | unguarded `$inc` |
//! | `DocFix` | plan 1: renewal every 5 s checked, `lockValid` checked before the `$inc` | plan 2 (where the race's fix includes it): `findOne(requestId)` → `$inc` → `create(log)` |
//! | `Correct` | epoch on the work-order row, bumped at acquisition | `INSERT applied_scans(scan)` (unique) + `qty += n WHERE lease_epoch = e`, one transaction |
//!
//! The correct protocol needs no Redis at all: the Redis lock may stay as an efficiency lock,
//! but safety comes from the fence and the unique record in the store that applies the effect.

use std::collections::VecDeque;

use crate::effects;
use crate::ids::{Epoch, OpId, Quantity, SCAN_QUANTITY_MAX, ScanId, WorkOrderId};
use crate::lease::{EpochLease, RedisLock};
use crate::machine::{Machine, Outgoing};
use crate::ops::{
    DeliveryId, JobFields, KvReply, QueueOp, QueueReply, Reply, SqlOp, SqlReply, SqlStmt, StoreOp,
};
use crate::tag::{Note, Tag};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

mod oracle;
mod tables;
mod tag;

pub use oracle::{
    CHECKER_OVERLAPPED, DELIVERED_AGAIN, DUPLICATE_SKIPPED, FAILOVER_LANDED, I_MX, I_WO,
    LEASE_SUPERSEDED, NO_FALSE_ALARM, STALE_WRITE_FENCED, WoEnd, coverage, exactly_once,
    fenced_effects, no_false_alarm,
};
pub use tables::{APPLIED_SCANS, UPDATE_LOG, WORK_ORDERS};
pub use tag::{WoNote, WoTag};

/// Where plan 2's `requestId` comes from (RACES.md assumption A6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestIdSource {
    /// Built inside the job processor from `Date.now()` and `random()`: new on every attempt.
    PerAttempt,
    /// Built once when the job is enqueued and carried in the job data: stable across
    /// redeliveries, new on a client resubmission.
    AtEnqueue,
}

/// In which order plan 2 writes the log and the effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogOrder {
    /// `$inc`, then `create(log)` (the document's order).
    EffectThenLog,
    /// `create(log)` first, then `$inc` (R-002-04 (d)).
    LogFirst,
}

/// How plan 2 is read. The document is ambiguous, so each counter-schedule names its reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Plan2 {
    /// Where the `requestId` comes from.
    pub request_id: RequestIdSource,
    /// The order of log and effect.
    pub order: LogOrder,
    /// Whether `WorkOrderUpdateLog.requestId` has a unique index (the document mentions none).
    pub unique_index: bool,
}

impl Plan2 {
    /// The proposal as written: per-attempt id, effect then log, no unique index.
    pub const LITERAL: Plan2 = Plan2 {
        request_id: RequestIdSource::PerAttempt,
        order: LogOrder::EffectThenLog,
        unique_index: false,
    };
}

/// Which of the document's plans a `DocFix` worker implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DocFixPlans {
    /// Plan 1: check the renewal result, `lockValid` before the update, renew every 5 s.
    pub plan1: bool,
    /// Plan 2: the `requestId` + `WorkOrderUpdateLog` idempotency check.
    pub plan2: Option<Plan2>,
}

/// A worker's parameters (document 002's values by default; RACES.md assumption A5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The protocol.
    pub variant: Variant,
    /// What `DocFix` implements.
    pub docfix: DocFixPlans,
    /// The lock or lease TTL (20 s).
    pub lock_ttl: Duration,
    /// How often `Buggy` renews (8 s).
    pub renew_every_buggy: Duration,
    /// How often plan 1 renews (5 s).
    pub renew_every_docfix: Duration,
    /// How long to wait before retrying a busy lock (1 s).
    pub lock_retry: Duration,
    /// How many times to try a busy lock before giving the job back.
    pub lock_attempts_max: u32,
    /// How long an idle worker waits before asking the queue again.
    pub poll_interval: Duration,
    /// How often the queue client extends the job lock while processing (Bull:
    /// `lockDuration / 2` = 15 s). Every variant does this: it is Bull's, not the app's.
    pub job_lock_renew_every: Duration,
}

impl WorkerConfig {
    /// Document 002's parameters for `variant`, with the given `DocFix` plans.
    pub fn new(variant: Variant, docfix: DocFixPlans) -> WorkerConfig {
        WorkerConfig {
            variant,
            docfix,
            lock_ttl: Duration::from_secs(20),
            renew_every_buggy: Duration::from_secs(8),
            renew_every_docfix: Duration::from_secs(5),
            lock_retry: Duration::from_secs(1),
            lock_attempts_max: 30,
            poll_interval: Duration::from_ms(500),
            job_lock_renew_every: Duration::from_secs(15),
        }
    }
}

/// A scan job's data, as carried in the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanJob {
    /// The scan's identity, assigned at the terminal.
    pub scan: ScanId,
    /// The work order.
    pub work_order: WorkOrderId,
    /// The quantity to add.
    pub qty: Quantity,
    /// How long the worker's processing takes between taking the lock and the `$inc`.
    pub work: Duration,
    /// Plan 2's `requestId` when it is built at enqueue time.
    pub request_id: String,
}

/// Why a job's data cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// A field is missing.
    #[error("job field `{0}` is missing")]
    Missing(&'static str),
    /// A field does not parse.
    #[error("job field `{field}` is not a valid number: {value:?}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// Its text.
        value: String,
    },
    /// The quantity is out of range.
    #[error("scan quantity {0} is outside 1..={max}", max = SCAN_QUANTITY_MAX.0)]
    QuantityOutOfRange(i64),
}

impl ScanJob {
    /// The job's fields.
    pub fn to_fields(&self) -> JobFields {
        JobFields::from([
            ("scan".to_string(), self.scan.0.to_string()),
            ("work_order".to_string(), self.work_order.0.to_string()),
            ("qty".to_string(), self.qty.0.to_string()),
            ("work_ms".to_string(), self.work.as_ms().to_string()),
            ("request_id".to_string(), self.request_id.clone()),
        ])
    }

    /// Parses a job's fields; anything a producer could have got wrong is an error, not a
    /// panic.
    pub fn from_fields(fields: &JobFields) -> Result<ScanJob, JobError> {
        fn num(fields: &JobFields, field: &'static str) -> Result<u64, JobError> {
            let value = fields.get(field).ok_or(JobError::Missing(field))?;
            value.parse().map_err(|_| JobError::Malformed {
                field,
                value: value.clone(),
            })
        }
        let qty = fields.get("qty").ok_or(JobError::Missing("qty"))?;
        let qty: i64 = qty.parse().map_err(|_| JobError::Malformed {
            field: "qty",
            value: qty.clone(),
        })?;
        if !(1..=SCAN_QUANTITY_MAX.0).contains(&qty) {
            return Err(JobError::QuantityOutOfRange(qty));
        }
        Ok(ScanJob {
            scan: ScanId(num(fields, "scan")?),
            work_order: WorkOrderId(num(fields, "work_order")?),
            qty: Quantity(qty),
            work: Duration::from_ms(num(fields, "work_ms")?),
            request_id: fields.get("request_id").cloned().unwrap_or_default(),
        })
    }
}

/// Queues outgoing operations and notes, and hands out operation ids.
#[derive(Debug, Default)]
struct Outbox {
    next: u64,
    ops: VecDeque<Outgoing>,
    notes: VecDeque<WoNote>,
}

impl Outbox {
    fn send(&mut self, op: StoreOp, tag: WoTag) -> OpId {
        self.next += 1;
        let id = OpId(self.next);
        self.ops.push_back(Outgoing {
            id,
            op,
            tag: Tag::new(tag),
        });
        id
    }

    fn pop_note(&mut self) -> Option<Note> {
        self.notes.pop_front().map(Note::new)
    }

    fn sql(&mut self, stmt: SqlStmt, tag: WoTag) -> OpId {
        self.send(StoreOp::Sql(SqlOp::exec(stmt)), tag)
    }
}

// ---------------------------------------------------------------------------------------------
// Worker

/// A document 002 worker (a PM2 instance consuming the Bull queue).
#[derive(Debug)]
pub struct Worker {
    cfg: WorkerConfig,
    name: String,
    out: Outbox,
    state: WorkerState,
    /// The main timer: poll again, retry the lock, or finish processing.
    timer: Option<Timestamp>,
    /// Renewal of the Redis lock (`Buggy` and `DocFix` only).
    renewal: Option<Renewal>,
    /// How many request ids this incarnation has built (plan 2's per-attempt ids).
    request_ids: u64,
    /// When the queue client next extends the current job's lock, and the extension in
    /// flight. Its result is ignored, as Bull's processor ignores a lost lock.
    job_lock: Option<(Timestamp, Option<OpId>)>,
}

#[derive(Debug)]
struct Renewal {
    lease: RenewedLease,
    next_at: Timestamp,
    every: Duration,
    in_flight: Option<OpId>,
    /// Plan 1's `lockValid`.
    valid: bool,
}

/// What a renewal extends.
#[derive(Debug)]
enum RenewedLease {
    /// Document 002's Redis lock (compare-and-extend).
    Redis(RedisLock),
    /// The correct lease's heartbeat, on the work-order row.
    Epoch(EpochLease, Epoch),
}

#[derive(Debug)]
enum WorkerState {
    /// Waiting for the poll timer.
    Idle,
    /// Asked the queue for a job.
    Fetching(OpId),
    /// Processing a delivery.
    Job(Job),
    /// Completing a delivery whose data could not be parsed.
    Discarding(OpId),
}

#[derive(Debug)]
struct Job {
    delivery: DeliveryId,
    scan: ScanJob,
    lock_attempts: u32,
    /// The correct variant's lease and epoch.
    epoch: Option<Epoch>,
    /// Plan 2's request id for this attempt.
    request_id: String,
    step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for the lock or lease reply.
    Locking(OpId),
    /// The lock was busy; retrying when the timer fires.
    LockBackoff,
    /// Holding the lock, processing until the timer fires.
    Working,
    /// Plan 2's `findOne`.
    FindingLog(OpId),
    /// Plan 2's `create(log)` before the effect (log-first reading).
    LoggingFirst(OpId),
    /// The `$inc`.
    Incrementing(OpId),
    /// Plan 2's `create(log)` after the effect.
    LoggingAfter(OpId),
    /// Correct: `BEGIN`.
    Beginning(OpId),
    /// Correct: the unique record.
    Recording(OpId),
    /// Correct: the fenced increment.
    FencedIncrement(OpId),
    /// Correct: `COMMIT`.
    Committing(OpId),
    /// Correct: `ROLLBACK`, then finish the job as `then` says.
    RollingBack(OpId, Finish),
    /// Releasing the lock or lease, then finishing as `then` says.
    Releasing(OpId, Finish),
    /// `ACK` or `NACK` sent.
    Finishing(OpId),
}

/// How a job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    Ack,
    Nack,
}

impl Worker {
    /// A fresh worker process. `incarnation` distinguishes restarts after a crash, so lock
    /// tokens and request ids of a restarted process never collide with its previous life.
    pub fn new(cfg: WorkerConfig, name: &str, incarnation: u32) -> Worker {
        Worker {
            cfg,
            name: format!("{name}#{incarnation}"),
            out: Outbox::default(),
            state: WorkerState::Idle,
            timer: None,
            renewal: None,
            request_ids: 0,
            job_lock: None,
        }
    }

    fn fetch(&mut self) {
        self.job_lock = None;
        let id = self.out.send(StoreOp::Queue(QueueOp::Fetch), WoTag::Fetch);
        self.state = WorkerState::Fetching(id);
        self.timer = None;
    }

    fn lock_for(&self, job: &Job) -> RedisLock {
        RedisLock::new(
            job.scan.work_order,
            format!("{}:d{}", self.name, job.delivery.0),
            self.cfg.lock_ttl,
        )
    }

    fn epoch_lease(&self, work_order: WorkOrderId) -> EpochLease {
        EpochLease {
            work_order,
            owner: self.name.clone(),
            ttl: self.cfg.lock_ttl,
        }
    }

    fn start_job(&mut self, now: Timestamp, delivery: DeliveryId, scan: ScanJob) {
        let request_id = match self.cfg.docfix.plan2.map(|p| p.request_id) {
            Some(RequestIdSource::AtEnqueue) => scan.request_id.clone(),
            // `${workOrderId}_${type}_${Date.now()}_${random()}`: the random part is this
            // incarnation's counter, which is at least as unique.
            _ => {
                self.request_ids += 1;
                format!(
                    "{}_in_{}_{}{}",
                    scan.work_order,
                    now.as_ms(),
                    self.name,
                    self.request_ids
                )
            }
        };
        let job = Job {
            delivery,
            scan,
            lock_attempts: 0,
            epoch: None,
            request_id,
            step: Step::LockBackoff,
        };
        self.state = WorkerState::Job(job);
        self.job_lock = Some((now + self.cfg.job_lock_renew_every, None));
        self.try_lock(now);
    }

    fn try_lock(&mut self, now: Timestamp) {
        let WorkerState::Job(job) = &self.state else {
            return;
        };
        let work_order = job.scan.work_order;
        let tag = WoTag::AcquireLease { work_order };
        let id = match self.cfg.variant {
            Variant::Buggy | Variant::DocFix => {
                let op = self.lock_for(job).acquire();
                self.out.send(StoreOp::Kv(op), tag)
            }
            Variant::Correct => {
                let stmt = self.epoch_lease(work_order).acquire(now);
                self.out.sql(stmt, tag)
            }
        };
        if let WorkerState::Job(job) = &mut self.state {
            job.lock_attempts += 1;
            job.step = Step::Locking(id);
        }
        self.timer = None;
    }

    fn job(&mut self) -> Option<&mut Job> {
        match &mut self.state {
            WorkerState::Job(job) => Some(job),
            _ => None,
        }
    }

    fn set_step(&mut self, step: Step) {
        if let Some(job) = self.job() {
            job.step = step;
        }
    }

    /// The lock or lease was granted: start processing.
    fn locked(&mut self, now: Timestamp, epoch: Option<Epoch>) {
        let every = match self.cfg.variant {
            Variant::Buggy => self.cfg.renew_every_buggy,
            Variant::DocFix | Variant::Correct => self.cfg.renew_every_docfix,
        };
        let Some(job) = self.job() else { return };
        job.epoch = epoch;
        job.step = Step::Working;
        let work = job.scan.work;
        let WorkerState::Job(job) = &self.state else {
            return;
        };
        let lease = match epoch {
            Some(epoch) => RenewedLease::Epoch(self.epoch_lease(job.scan.work_order), epoch),
            None => RenewedLease::Redis(self.lock_for(job)),
        };
        self.renewal = Some(Renewal {
            lease,
            next_at: now + every,
            every,
            in_flight: None,
            valid: true,
        });
        self.timer = Some(now + work);
    }

    /// Processing is done: apply the effect the variant's way.
    fn work_done(&mut self) {
        let Some(job) = self.job() else { return };
        let scan = job.scan.scan;
        let request_id = job.request_id.clone();
        self.timer = None;
        if self.cfg.variant == Variant::Correct {
            // The heartbeat stops once the short effect transaction starts: the fence decides.
            self.renewal = None;
        }
        match self.cfg.variant {
            Variant::Buggy => self.increment(),
            Variant::DocFix => match self.cfg.docfix.plan2 {
                Some(_) => {
                    let id = self
                        .out
                        .sql(effects::find_log(&request_id), WoTag::FindRecord { scan });
                    self.set_step(Step::FindingLog(id));
                }
                None => self.checked_increment(),
            },
            Variant::Correct => {
                let id = self.out.send(StoreOp::Sql(SqlOp::Begin), WoTag::Tx);
                self.set_step(Step::Beginning(id));
            }
        }
    }

    /// Plan 1's check before the update, then the `$inc`.
    fn checked_increment(&mut self) {
        let lock_lost = self.cfg.docfix.plan1 && self.renewal.as_ref().is_some_and(|r| !r.valid);
        if lock_lost {
            self.abandon("lockValid is false: a renewal failed");
        } else {
            self.increment();
        }
    }

    fn increment(&mut self) {
        let Some(job) = self.job() else { return };
        let s = &job.scan;
        let tag = WoTag::Effect {
            scan: s.scan,
            work_order: s.work_order,
            qty: s.qty,
        };
        let stmt = effects::increment(s.work_order, s.qty);
        let id = self.out.sql(stmt, tag);
        self.set_step(Step::Incrementing(id));
    }

    fn log(&mut self, then_step: fn(OpId) -> Step) {
        let Some(job) = self.job() else { return };
        let s = job.scan.clone();
        let request_id = job.request_id.clone();
        let unique = self.cfg.docfix.plan2.is_some_and(|p| p.unique_index);
        let row_key = if unique {
            request_id.clone()
        } else {
            self.request_ids += 1;
            format!("log-{}-{}", self.name, self.request_ids)
        };
        let stmt = effects::insert_log(row_key, &request_id, s.scan, s.work_order, s.qty);
        let tag = WoTag::Record {
            scan: s.scan,
            work_order: s.work_order,
            qty: s.qty,
        };
        let id = self.out.sql(stmt, tag);
        self.set_step(then_step(id));
    }

    /// Release the lock (or lease) and finish the job.
    fn release(&mut self, finish: Finish) {
        self.renewal = None;
        let Some(job) = self.job() else { return };
        let work_order = job.scan.work_order;
        let epoch = job.epoch;
        let tag = WoTag::ReleaseLease { work_order };
        let id = match (self.cfg.variant, epoch) {
            (Variant::Correct, Some(epoch)) => {
                let stmt = self.epoch_lease(work_order).release(epoch);
                self.out.sql(stmt, tag)
            }
            (Variant::Correct, None) => return self.finish(finish),
            _ => {
                let WorkerState::Job(job) = &self.state else {
                    return;
                };
                let op = self.lock_for(job).release();
                self.out.send(StoreOp::Kv(op), tag)
            }
        };
        self.set_step(Step::Releasing(id, finish));
    }

    fn finish(&mut self, finish: Finish) {
        self.renewal = None;
        let Some(job) = self.job() else { return };
        let delivery = job.delivery;
        let (op, tag) = match finish {
            Finish::Ack => (QueueOp::Ack { delivery }, WoTag::Ack),
            Finish::Nack => (QueueOp::Nack { delivery }, WoTag::Nack),
        };
        let id = self.out.send(StoreOp::Queue(op), tag);
        self.set_step(Step::Finishing(id));
    }

    fn abandon(&mut self, reason: &'static str) {
        if let Some(job) = self.job() {
            let scan = job.scan.scan;
            self.out.notes.push_back(WoNote::Abandoned { scan, reason });
        }
        self.release(Finish::Nack);
    }

    fn skip(&mut self) {
        if let Some(job) = self.job() {
            let scan = job.scan.scan;
            self.out.notes.push_back(WoNote::Skipped { scan });
        }
    }

    fn rollback_then(&mut self, finish: Finish) {
        let id = self.out.send(StoreOp::Sql(SqlOp::Rollback), WoTag::Tx);
        self.set_step(Step::RollingBack(id, finish));
    }

    fn on_renewal_reply(&mut self, reply: &Reply) {
        let Some(renewal) = &mut self.renewal else {
            return;
        };
        renewal.in_flight = None;
        // Buggy ignores the result (queueService.js:639-641); plan 1 checks it.
        let checked = self.cfg.variant == Variant::DocFix && self.cfg.docfix.plan1;
        if checked && !matches!(reply, Reply::Kv(KvReply::Int(1))) {
            renewal.valid = false;
        }
    }

    fn on_job_reply(&mut self, now: Timestamp, step: Step, reply: Reply) {
        match step {
            Step::Locking(_) => {
                let granted = match self.cfg.variant {
                    Variant::Correct => EpochLease::granted(&reply).map(Some),
                    _ => matches!(reply, Reply::Kv(KvReply::Ok)).then_some(None),
                };
                match granted {
                    Some(epoch) => self.locked(now, epoch),
                    None => {
                        let attempts = self.job().map_or(0, |j| j.lock_attempts);
                        if attempts >= self.cfg.lock_attempts_max {
                            if let Some(job) = self.job() {
                                let scan = job.scan.scan;
                                self.out.notes.push_back(WoNote::Abandoned {
                                    scan,
                                    reason: "the lock stayed busy",
                                });
                            }
                            self.finish(Finish::Nack);
                        } else {
                            self.set_step(Step::LockBackoff);
                            self.timer = Some(now + self.cfg.lock_retry);
                        }
                    }
                }
            }
            Step::FindingLog(_) => match reply {
                Reply::Sql(SqlReply::Rows(rows)) if !rows.is_empty() => {
                    self.skip();
                    self.release(Finish::Ack);
                }
                Reply::Sql(SqlReply::Rows(_)) => match self.cfg.docfix.plan2.map(|p| p.order) {
                    Some(LogOrder::LogFirst) => self.log(Step::LoggingFirst),
                    _ => self.checked_increment(),
                },
                _ => self.abandon("findOne failed"),
            },
            Step::LoggingFirst(_) => match reply {
                Reply::Sql(SqlReply::Affected(_)) => self.checked_increment(),
                Reply::Sql(SqlReply::UniqueViolation { .. }) => {
                    self.skip();
                    self.release(Finish::Ack);
                }
                _ => self.abandon("create(log) failed"),
            },
            Step::Incrementing(_) => match reply {
                Reply::Sql(SqlReply::Rows(_))
                    if self.cfg.docfix.plan2.is_some()
                        && self.cfg.variant == Variant::DocFix
                        && self.cfg.docfix.plan2.map(|p| p.order)
                            == Some(LogOrder::EffectThenLog) =>
                {
                    self.log(Step::LoggingAfter)
                }
                Reply::Sql(SqlReply::Rows(_)) => self.release(Finish::Ack),
                // The `$inc` may or may not have been applied; Bull retries the job.
                _ => self.abandon("the update failed or timed out"),
            },
            Step::LoggingAfter(_) => match reply {
                Reply::Sql(SqlReply::Affected(_)) => self.release(Finish::Ack),
                _ => self.abandon("create(log) failed after the update"),
            },
            Step::Beginning(_) => match reply {
                Reply::Sql(SqlReply::Ok) => {
                    let Some(job) = self.job() else { return };
                    let s = job.scan.clone();
                    let tag = WoTag::Record {
                        scan: s.scan,
                        work_order: s.work_order,
                        qty: s.qty,
                    };
                    let id = self
                        .out
                        .sql(effects::record_scan(s.scan, s.work_order, s.qty), tag);
                    self.set_step(Step::Recording(id));
                }
                _ => self.rollback_then(Finish::Nack),
            },
            Step::Recording(_) => match reply {
                Reply::Sql(SqlReply::Affected(_)) => {
                    let Some(job) = self.job() else { return };
                    let s = job.scan.clone();
                    let Some(epoch) = job.epoch else {
                        return self.rollback_then(Finish::Nack);
                    };
                    let tag = WoTag::Effect {
                        scan: s.scan,
                        work_order: s.work_order,
                        qty: s.qty,
                    };
                    let stmt = effects::fenced_increment(s.work_order, epoch, s.qty);
                    let id = self.out.sql(stmt, tag);
                    self.set_step(Step::FencedIncrement(id));
                }
                Reply::Sql(SqlReply::UniqueViolation { .. }) => {
                    // Already applied by an earlier delivery: done, not an error.
                    self.skip();
                    let id = self.out.send(StoreOp::Sql(SqlOp::Rollback), WoTag::Tx);
                    self.set_step(Step::RollingBack(id, Finish::Ack));
                }
                _ => self.rollback_then(Finish::Nack),
            },
            Step::FencedIncrement(_) => match reply {
                Reply::Sql(SqlReply::Rows(rows)) if !rows.is_empty() => {
                    let id = self.out.send(StoreOp::Sql(SqlOp::Commit), WoTag::Tx);
                    self.set_step(Step::Committing(id));
                }
                Reply::Sql(SqlReply::Rows(_)) => {
                    if let Some(job) = self.job() {
                        let scan = job.scan.scan;
                        self.out.notes.push_back(WoNote::Fenced { scan });
                    }
                    self.rollback_then(Finish::Nack)
                }
                _ => self.rollback_then(Finish::Nack),
            },
            Step::Committing(_) => match reply {
                Reply::Sql(SqlReply::Committed) => self.finish(Finish::Ack),
                // Unknown outcome (timeout) or rolled back: let the queue redeliver; the
                // unique record makes the retry safe either way.
                _ => self.finish(Finish::Nack),
            },
            Step::RollingBack(_, finish) => {
                // After a rollback the lease is still ours until its TTL; give it back.
                if finish == Finish::Ack {
                    self.release(Finish::Ack);
                } else {
                    self.release(Finish::Nack);
                }
            }
            Step::Releasing(_, finish) => self.finish(finish),
            Step::Finishing(_) => self.fetch(),
            Step::LockBackoff | Step::Working => {}
        }
    }
}

fn step_op(step: Step) -> Option<OpId> {
    match step {
        Step::Locking(id)
        | Step::FindingLog(id)
        | Step::LoggingFirst(id)
        | Step::Incrementing(id)
        | Step::LoggingAfter(id)
        | Step::Beginning(id)
        | Step::Recording(id)
        | Step::FencedIncrement(id)
        | Step::Committing(id)
        | Step::RollingBack(id, _)
        | Step::Releasing(id, _)
        | Step::Finishing(id) => Some(id),
        Step::LockBackoff | Step::Working => None,
    }
}

impl Machine for Worker {
    fn handle_start(&mut self, _now: Timestamp) {
        self.fetch();
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if let Some((_, in_flight)) = &mut self.job_lock
            && *in_flight == Some(op)
        {
            *in_flight = None;
            return;
        }
        if self.renewal.as_ref().and_then(|r| r.in_flight) == Some(op) {
            self.on_renewal_reply(&reply);
            return;
        }
        match &mut self.state {
            WorkerState::Fetching(id) if *id == op => match reply {
                Reply::Queue(QueueReply::Delivered(Some(delivery))) => {
                    match ScanJob::from_fields(&delivery.fields) {
                        Ok(scan) => self.start_job(now, delivery.id, scan),
                        Err(_) => {
                            // A poison job: complete it so that it is not redelivered
                            // forever. Its fields stay in the history's FETCH reply.
                            let ack = QueueOp::Ack {
                                delivery: delivery.id,
                            };
                            let id = self.out.send(StoreOp::Queue(ack), WoTag::Ack);
                            self.state = WorkerState::Discarding(id);
                        }
                    }
                }
                _ => {
                    self.state = WorkerState::Idle;
                    self.timer = Some(now + self.cfg.poll_interval);
                }
            },
            WorkerState::Discarding(id) if *id == op => self.fetch(),
            WorkerState::Job(job) if step_op(job.step) == Some(op) => {
                let step = job.step;
                self.on_job_reply(now, step, reply);
            }
            // A reply for an operation this worker no longer waits for.
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if let (Some((at, in_flight)), WorkerState::Job(job)) = (&mut self.job_lock, &self.state)
            && *at <= now
        {
            *at = now + self.cfg.job_lock_renew_every;
            if in_flight.is_none() {
                let extend = QueueOp::Extend {
                    delivery: job.delivery,
                };
                *in_flight = Some(self.out.send(StoreOp::Queue(extend), WoTag::ExtendJob));
            }
        }
        if let Some(renewal) = &mut self.renewal
            && renewal.next_at <= now
        {
            renewal.next_at = now + renewal.every;
            if renewal.in_flight.is_none() {
                let (op, work_order) = match &renewal.lease {
                    RenewedLease::Redis(lock) => {
                        let work_order = match &self.state {
                            WorkerState::Job(job) => job.scan.work_order,
                            _ => WorkOrderId(0),
                        };
                        (StoreOp::Kv(lock.extend()), work_order)
                    }
                    RenewedLease::Epoch(lease, epoch) => (
                        StoreOp::Sql(SqlOp::exec(lease.renew(*epoch, now))),
                        lease.work_order,
                    ),
                };
                let id = self.out.send(op, WoTag::RenewLease { work_order });
                if let Some(renewal) = &mut self.renewal {
                    renewal.in_flight = Some(id);
                }
            }
        }
        if self.timer.is_some_and(|t| t <= now) {
            self.timer = None;
            match &self.state {
                WorkerState::Idle => self.fetch(),
                WorkerState::Job(job) if job.step == Step::LockBackoff => self.try_lock(now),
                WorkerState::Job(job) if job.step == Step::Working => self.work_done(),
                _ => {}
            }
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let renew = self.renewal.as_ref().map(|r| r.next_at);
        let job_lock = self.job_lock.map(|(at, _)| at);
        [self.timer, renew, job_lock].into_iter().flatten().min()
    }

    fn is_idle(&self) -> bool {
        matches!(self.state, WorkerState::Idle | WorkerState::Fetching(_))
    }
}

// ---------------------------------------------------------------------------------------------
// Terminal

/// One scan the terminal submits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedScan {
    /// When the operator scans.
    pub at: Timestamp,
    /// The job data.
    pub job: ScanJob,
}

/// The scanning terminal: submits each scan, and resubmits it when the submission's answer is
/// lost (an HTTP timeout), up to a limit.
#[derive(Debug)]
pub struct Terminal {
    variant: Variant,
    plan: Vec<PlannedScan>,
    /// Index of the next scan to submit.
    next: usize,
    /// In flight: (op, plan index, submissions so far).
    in_flight: Vec<(OpId, usize, u32)>,
    /// Resubmissions waiting for their time.
    retries: Vec<(Timestamp, usize, u32)>,
    out: Outbox,
    submissions: u64,
}

/// How many times the terminal submits one scan at most.
pub const TERMINAL_SUBMISSIONS_MAX: u32 = 3;
/// How long the terminal waits before resubmitting after a lost answer.
pub const TERMINAL_RETRY_DELAY: Duration = Duration::from_secs(1);

impl Terminal {
    /// A terminal that will submit `plan` (sorted by time). `Correct` passes the scan id as
    /// Bull's `jobId`, so a resubmission while the job exists is dropped by the queue.
    pub fn new(variant: Variant, mut plan: Vec<PlannedScan>) -> Terminal {
        plan.sort_by_key(|p| p.at);
        Terminal {
            variant,
            plan,
            next: 0,
            in_flight: Vec::new(),
            retries: Vec::new(),
            out: Outbox::default(),
            submissions: 0,
        }
    }

    fn submit(&mut self, now: Timestamp, index: usize, submission: u32) {
        let p = &self.plan[index];
        let mut job = p.job.clone();
        self.submissions += 1;
        // Plan 2's id when built at enqueue: new on every submission (RACES.md A6).
        job.request_id = format!("{}_in_{}_{}", job.work_order, now.as_ms(), self.submissions);
        let dedup = (self.variant == Variant::Correct).then(|| job.scan.to_string());
        let tag = WoTag::Submit {
            scan: job.scan,
            work_order: job.work_order,
            qty: job.qty,
        };
        let op = StoreOp::Queue(QueueOp::Enqueue {
            dedup,
            fields: job.to_fields(),
        });
        let id = self.out.send(op, tag);
        self.in_flight.push((id, index, submission + 1));
    }
}

impl Machine for Terminal {
    fn handle_start(&mut self, now: Timestamp) {
        self.handle_timeout(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let Some(pos) = self.in_flight.iter().position(|(id, ..)| *id == op) else {
            return;
        };
        let (_, index, submissions) = self.in_flight.swap_remove(pos);
        let lost = matches!(reply, Reply::Timeout);
        if lost && submissions < TERMINAL_SUBMISSIONS_MAX {
            self.retries
                .push((now + TERMINAL_RETRY_DELAY, index, submissions));
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        while self.next < self.plan.len() && self.plan[self.next].at <= now {
            let index = self.next;
            self.next += 1;
            self.submit(now, index, 0);
        }
        let due: Vec<(Timestamp, usize, u32)> = self
            .retries
            .iter()
            .copied()
            .filter(|(at, ..)| *at <= now)
            .collect();
        self.retries.retain(|(at, ..)| *at > now);
        for (_, index, submissions) in due {
            self.submit(now, index, submissions);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let next = self.plan.get(self.next).map(|p| p.at);
        let retry = self.retries.iter().map(|(at, ..)| *at).min();
        match (next, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_idle(&self) -> bool {
        self.next >= self.plan.len() && self.in_flight.is_empty() && self.retries.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Checker (R-002-06)

/// The consistency checker of plan 3 (`verify-workorder-consistency.js`).
///
/// - `Buggy`: reads the log, then the quantity, in separate statements, and alerts on a
///   mismatch: no snapshot, so a concurrent scan between the two reads is a false alarm.
/// - `DocFix`: the same reads, plus the optional auto-repair `qty = qty_0 + Σ log`, which
///   destroys a legitimate increment that landed between the reads.
/// - `Correct`: locks the work-order row (`SELECT ... FOR UPDATE`) and reads the log in the
///   same transaction, so the two reads are one consistent snapshot; it alerts only, never
///   repairs.
#[derive(Debug)]
pub struct Checker {
    variant: Variant,
    work_order: WorkOrderId,
    qty0: Quantity,
    every: Duration,
    rounds_left: u32,
    next_at: Option<Timestamp>,
    step: CheckStep,
    log_sum: Option<i64>,
    observed: Option<i64>,
    out: Outbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckStep {
    Waiting,
    ReadingLog(OpId),
    ReadingQty(OpId),
    Beginning(OpId),
    Locking(OpId),
    ReadingLogLocked(OpId),
    Committing(OpId),
    Repairing(OpId),
}

impl Checker {
    /// A checker of `work_order` (initial quantity `qty0`) running `rounds` rounds, one every
    /// `every`, starting at `every`.
    pub fn new(
        variant: Variant,
        work_order: WorkOrderId,
        qty0: Quantity,
        every: Duration,
        rounds: u32,
    ) -> Checker {
        Checker {
            variant,
            work_order,
            qty0,
            every,
            rounds_left: rounds,
            next_at: None,
            step: CheckStep::Waiting,
            log_sum: None,
            observed: None,
            out: Outbox::default(),
        }
    }

    fn sum_of(reply: &Reply) -> Option<i64> {
        match reply {
            Reply::Sql(SqlReply::Rows(rows)) => Some(
                rows.iter()
                    .filter_map(|r| r.int("qty"))
                    .fold(0i64, i64::saturating_add),
            ),
            _ => None,
        }
    }

    fn qty_of(reply: &Reply) -> Option<i64> {
        match reply {
            Reply::Sql(SqlReply::Rows(rows)) => rows.first()?.int("qty"),
            _ => None,
        }
    }

    fn read_qty_stmt(&self, for_update: bool) -> SqlStmt {
        SqlStmt::Select {
            table: WORK_ORDERS,
            key: self.work_order.to_string(),
            for_update,
        }
    }

    fn round_done(&mut self, now: Timestamp) {
        let (Some(log_sum), Some(observed)) = (self.log_sum, self.observed) else {
            self.step = CheckStep::Waiting;
            self.next_at = (self.rounds_left > 0).then(|| now + self.every);
            return;
        };
        let expected = self.qty0.0.saturating_add(log_sum);
        self.step = CheckStep::Waiting;
        self.next_at = (self.rounds_left > 0).then(|| now + self.every);
        if observed == expected {
            return;
        }
        self.out.notes.push_back(WoNote::Alarm {
            work_order: self.work_order,
            expected: Quantity(expected),
            observed: Quantity(observed),
        });
        if self.variant == Variant::DocFix {
            let stmt = SqlStmt::Update {
                table: WORK_ORDERS,
                key: self.work_order.to_string(),
                guard: crate::ops::Cond::True,
                set: vec![crate::ops::Assign::Set {
                    column: "qty".into(),
                    value: crate::ops::Value::Int(expected),
                }],
            };
            let id = self.out.sql(
                stmt,
                WoTag::Repair {
                    work_order: self.work_order,
                },
            );
            self.step = CheckStep::Repairing(id);
        }
    }
}

impl Machine for Checker {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_at = (self.rounds_left > 0).then(|| now + self.every);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let expected_op = match self.step {
            CheckStep::Waiting => None,
            CheckStep::ReadingLog(id)
            | CheckStep::ReadingQty(id)
            | CheckStep::Beginning(id)
            | CheckStep::Locking(id)
            | CheckStep::ReadingLogLocked(id)
            | CheckStep::Committing(id)
            | CheckStep::Repairing(id) => Some(id),
        };
        if expected_op != Some(op) {
            return;
        }
        let abort = |c: &mut Checker| {
            c.step = CheckStep::Waiting;
            c.next_at = (c.rounds_left > 0).then(|| now + c.every);
        };
        match self.step {
            CheckStep::ReadingLog(_) => match Checker::sum_of(&reply) {
                Some(sum) => {
                    self.log_sum = Some(sum);
                    let id = self.out.sql(self.read_qty_stmt(false), WoTag::CheckerRead);
                    self.step = CheckStep::ReadingQty(id);
                }
                None => abort(self),
            },
            CheckStep::ReadingQty(_) => match Checker::qty_of(&reply) {
                Some(qty) => {
                    self.observed = Some(qty);
                    self.round_done(now);
                }
                None => abort(self),
            },
            CheckStep::Beginning(_) => {
                let id = self.out.sql(self.read_qty_stmt(true), WoTag::CheckerRead);
                self.step = CheckStep::Locking(id);
            }
            CheckStep::Locking(_) => match Checker::qty_of(&reply) {
                Some(qty) => {
                    self.observed = Some(qty);
                    let id = self.out.sql(
                        effects::applied_scans_of(self.work_order),
                        WoTag::CheckerRead,
                    );
                    self.step = CheckStep::ReadingLogLocked(id);
                }
                None => {
                    let id = self.out.send(StoreOp::Sql(SqlOp::Rollback), WoTag::Tx);
                    self.step = CheckStep::Committing(id);
                    self.observed = None;
                }
            },
            CheckStep::ReadingLogLocked(_) => {
                self.log_sum = Checker::sum_of(&reply);
                let id = self.out.send(StoreOp::Sql(SqlOp::Commit), WoTag::Tx);
                self.step = CheckStep::Committing(id);
            }
            CheckStep::Committing(_) => {
                if matches!(reply, Reply::Sql(SqlReply::Committed)) {
                    self.round_done(now);
                } else {
                    abort(self);
                }
            }
            CheckStep::Repairing(_) => abort(self),
            CheckStep::Waiting => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.step != CheckStep::Waiting || self.next_at.is_none_or(|t| t > now) {
            return;
        }
        self.next_at = None;
        self.rounds_left = self.rounds_left.saturating_sub(1);
        self.log_sum = None;
        self.observed = None;
        self.step = match self.variant {
            Variant::Buggy | Variant::DocFix => {
                let id = self.out.sql(
                    effects::applied_scans_of(self.work_order),
                    WoTag::CheckerRead,
                );
                CheckStep::ReadingLog(id)
            }
            Variant::Correct => {
                let id = self.out.send(StoreOp::Sql(SqlOp::Begin), WoTag::Tx);
                CheckStep::Beginning(id)
            }
        };
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.ops.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.out.pop_note()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_at
    }

    fn is_idle(&self) -> bool {
        self.step == CheckStep::Waiting && self.next_at.is_none()
    }
}
