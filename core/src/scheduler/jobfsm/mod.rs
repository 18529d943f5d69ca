//! R-004-05: the job's state machine kept twice, in the scheduler's memory and as a record in
//! Redis (`runtime_job_fsm.rs`), and who believes which.
//!
//! A job moves `created -> dispatched -> running -> done | failed | timed_out`; the timeout
//! finalize may also end a job still `dispatched` (its node never started it), and a job
//! whose record still says `created` after a grace period is re-dispatched by the finalizer
//! ("never dispatched"). Two processes drive jobs: the submitting scheduler (`S1`) and a
//! second scheduler's finalizer (`S2`), which reads each job's record every interval.
//!
//! | variant | writes | memory | reply lost or late (ambiguous) |
//! |---|---|---|---|
//! | `Buggy` | partial (`job_fsm_init`, `job_fsm_to_dispatched`, the terminal states; `running` only in memory), unconditional (last writer wins) | set first, then the write is sent and the process moves on (memory ahead of Redis) | never looked at |
//! | `DocFix` | the same (the FSM complete in Redis, as planned) | set when the write answers | assumed applied: memory moves on |
//! | `Correct` | a CAS `(expected state, version) -> (new state, version + 1)` with a transition id, returning the resulting state | set only from the script's reply | the same transition sent again (same id): the script answers what the record holds |
//!
//! The finalizer also adopts a job whose record is missing long after its submission (never
//! created, or erased by a Redis restart) and starts it over; in `Correct` it hands an
//! outcome it reads in the record to the client (the result is kept under the job's id, and
//! the instance that wrote it may have crashed before telling).
//!
//! `Correct` also makes every outcome durable before anyone is told it (R-004-04's rule): a
//! failover can lose, and a restart erase, the Redis record after its terminal transition was
//! told, and the finalizer would then end the job a second time. Whoever is about to tell an
//! outcome first stores it in PostgreSQL ([`JOB_OUTCOMES`], one row per job, first insert
//! wins); a loser reads the stored outcome and tells that one ([`JobNote::Adopted`]), and the
//! finalizer reads the table before it starts over a job whose record is gone. Redis keeps
//! the FSM of a job in flight; the table alone says how a job ended.
//!
//! Every memory update is reported ([`JobNote::Memory`]), as is every hand-off of a job to a node ([`JobNote::Executed`]), so that
//! the oracles ([`fsm_transitions`], [`memory_behind_redis`], [`executed_once`]) judge the
//! history and nothing else.
//!
//! Drain order is [`Machine`]'s: one operation in flight, the rest queued; timers through
//! `poll_timeout`; spurious `handle_timeout` calls do nothing.

use std::collections::VecDeque;

use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{KvOp, KvReply, Reply, ScriptName, SqlOp, StoreOp};
use crate::tag::{Note, Tag};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

use super::SchedNote;
use outcome::Stored;

mod oracle;
mod outcome;
pub mod script;
mod tag;

pub use oracle::{
    AMBIGUOUS_RESOLVED, EXECUTED_ONCE, FSM_TIMED_OUT, FSM1, FSM2, OUTCOME_ADOPTED,
    STALE_TRANSITION_REFUSED, executed_once, fsm_coverage, fsm_transitions, memory_behind_redis,
};
pub use outcome::{JOB_OUTCOMES, read_outcome, store_outcome};
pub use tag::{JobNote, JobTag};

/// A job's state, as the FSM names it (`none`, a missing record, is `Option::None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    /// Accepted, not yet handed to a node.
    Created,
    /// Handed to a node.
    Dispatched,
    /// The node started it.
    Running,
    /// The node's result was accepted.
    Done,
    /// The node reported a failure.
    Failed,
    /// The timeout finalize ended it.
    TimedOut,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        JobState::Created,
        JobState::Dispatched,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::TimedOut,
    ];

    /// Its name in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "created",
            JobState::Dispatched => "dispatched",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// `done`, `failed` or `timed_out`.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::TimedOut)
    }

    /// Whether `from -> to` is a declared transition (`None`: no record yet).
    pub fn declared(from: Option<JobState>, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (from, to),
            (None, Created)
                | (Some(Created), Dispatched)
                | (Some(Dispatched), Running | TimedOut)
                | (Some(Running), Done | Failed | TimedOut)
        )
    }
}

/// The FSM record of job `j` in the scheduler's namespace.
pub fn record_key(j: &str) -> String {
    script::record_key(super::scripts::NAMESPACE, j)
}

/// How a variant keeps the job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FsmConfig {
    /// Transitions are compare-and-set scripts whose reply alone updates memory, and an
    /// ambiguous one is sent again; otherwise unconditional writes, assumed applied.
    pub cas: bool,
    /// Memory moves before the write is sent, and the process goes on without its reply.
    pub memory_first: bool,
    /// `running` is written to Redis too (the document's partial FSM keeps it in memory).
    pub complete: bool,
    /// An outcome is stored durably (PostgreSQL, first one wins) before it is told, and the
    /// stored one is what is told.
    pub durable: bool,
}

impl FsmConfig {
    /// The variant's: the document's code, the FSM it plans, the CAS one with durable
    /// outcomes.
    pub fn of(variant: Variant) -> FsmConfig {
        FsmConfig {
            cas: variant == Variant::Correct,
            memory_first: variant == Variant::Buggy,
            complete: variant != Variant::Buggy,
            durable: variant == Variant::Correct,
        }
    }
}

/// One job: its id (stable, chosen by the client), when it is submitted, how long the node
/// runs it, and whether the node reports a failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobSpec {
    /// The job id.
    pub id: String,
    /// When it is submitted.
    pub at: Timestamp,
    /// How long the node runs it.
    pub length: Duration,
    /// The node reports a failure instead of a result.
    pub fails: bool,
}

/// The finalizer's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Finalize {
    /// How often it reads every job's record.
    pub every: Duration,
    /// A job still `created` this long after its submission was never dispatched: the
    /// finalizer dispatches it itself.
    pub grace: Duration,
    /// A job `dispatched` or `running` this long after its submission is timed out.
    pub deadline: Duration,
}

/// How long a transition with no answer waits before it is sent again (`Correct`).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The most times one transition is sent again.
const RETRIES_MAX: u32 = 64;

/// What a transition's reply says of the record.
enum Answer {
    /// Applied: the record went from one state to `to`, at this version.
    Applied(JobState, u64),
    /// Not applied by this call: the record holds this (a retry of an applied transition, or
    /// a refused one; `None` for no record), and whether the record's last transition is this
    /// one.
    Current(Option<JobState>, u64, bool),
    /// No answer, or one that says nothing of the record.
    Unknown,
}

fn answer(reply: &Reply) -> Answer {
    let Reply::Kv(KvReply::Bulk(text)) = reply else {
        return Answer::Unknown;
    };
    let words: Vec<&str> = text.split(' ').collect();
    let version = |w: &str| w.parse::<u64>().ok();
    match words.as_slice() {
        ["ok", _, to, v] => match (JobState::parse(to), version(v)) {
            (Some(to), Some(v)) => Answer::Applied(to, v),
            _ => Answer::Unknown,
        },
        [kind @ ("dup" | "no"), state, v] => {
            let state = JobState::parse(state);
            match version(v) {
                Some(v) => Answer::Current(state, v, *kind == "dup"),
                None => Answer::Unknown,
            }
        }
        _ => Answer::Unknown,
    }
}

/// A transition this process sent and has not settled.
#[derive(Clone, Debug)]
struct Pending {
    to: JobState,
    expected: (Option<JobState>, u64),
    tx: String,
    attempts: u32,
}

/// An outcome being made durable before it is told (`Correct`).
#[derive(Clone, Debug)]
struct Settle {
    /// The outcome this process would tell (`None`: the job's record is gone and this
    /// process would start it over, unless an outcome is stored).
    proposed: Option<JobState>,
    /// The store has conflicted (or there is nothing to store): the stored row is read.
    reading: bool,
    attempts: u32,
}

/// One job as a process follows it.
#[derive(Clone, Debug)]
struct Job {
    spec: JobSpec,
    /// What memory holds: the state (if any) and its version.
    memory: (Option<JobState>, u64),
    /// This process drives the job (it submitted or re-dispatched it).
    own: bool,
    /// A transition in flight or waiting to be sent again.
    pending: Option<Pending>,
    /// When a retry is due.
    retry_at: Option<Timestamp>,
    /// When the node's result arrives.
    result_at: Option<Timestamp>,
    /// The id of the latest transition to `dispatched` this process sent.
    dispatch_tx: String,
    /// A read of the record is in flight.
    reading: bool,
    /// Its outcome is being stored or read in PostgreSQL (`Correct`).
    settle: Option<Settle>,
    /// No longer followed.
    finished: bool,
}

/// A scheduler instance driving jobs through their FSM: the submitter, or a second
/// instance's finalizer (see the module's docs).
#[derive(Debug)]
pub struct JobScheduler {
    name: String,
    config: FsmConfig,
    finalize: Option<Finalize>,
    /// Jobs not yet submitted (the submitter's).
    pending: Vec<JobSpec>,
    jobs: Vec<Job>,
    queue: VecDeque<(StoreOp, Tag)>,
    out: VecDeque<Outgoing>,
    in_flight: Option<(OpId, Tag)>,
    next_op: u64,
    notes: VecDeque<Note>,
    next_scan: Option<Timestamp>,
}

impl JobScheduler {
    /// The scheduler `name` that submits `jobs` at their times and drives them to an outcome.
    pub fn submitter(name: &str, config: FsmConfig, jobs: Vec<JobSpec>) -> JobScheduler {
        JobScheduler {
            name: name.into(),
            config,
            finalize: None,
            pending: jobs,
            jobs: Vec::new(),
            queue: VecDeque::new(),
            out: VecDeque::new(),
            in_flight: None,
            next_op: 0,
            notes: VecDeque::new(),
            next_scan: None,
        }
    }

    /// The scheduler `name` whose finalizer follows `jobs` (submitted elsewhere) by reading
    /// their records, as `finalize` says.
    pub fn finalizer(
        name: &str,
        config: FsmConfig,
        jobs: Vec<JobSpec>,
        finalize: Finalize,
    ) -> JobScheduler {
        let mut s = JobScheduler::submitter(name, config, Vec::new());
        s.finalize = Some(Finalize {
            // A zero interval would ask for the same instant forever.
            every: finalize.every.max(Duration::from_ms(1)),
            ..finalize
        });
        s.jobs = jobs
            .into_iter()
            .map(|spec| Job {
                spec,
                memory: (None, 0),
                own: false,
                pending: None,
                retry_at: None,
                result_at: None,
                dispatch_tx: String::new(),
                reading: false,
                settle: None,
                finished: false,
            })
            .collect();
        s
    }

    fn push(&mut self, op: StoreOp, tag: JobTag) {
        self.queue.push_back((op, Tag::new(tag)));
        self.pump();
    }

    fn pump(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some((op, tag)) = self.queue.pop_front() {
            self.next_op += 1;
            let id = OpId(self.next_op);
            self.in_flight = Some((id, tag.clone()));
            self.out.push_back(Outgoing { id, op, tag });
        }
    }

    fn note(&mut self, note: impl crate::tag::FamilyNote) {
        self.notes.push_back(Note::new(note));
    }

    /// Sets memory, and reports a change.
    fn remember(&mut self, i: usize, state: Option<JobState>, version: u64) {
        let job = &mut self.jobs[i];
        let changed = job.memory.0 != state;
        job.memory = (state, version);
        if let (true, Some(state)) = (changed, state) {
            let job = job.spec.id.clone();
            self.note(JobNote::Memory { job, state });
        }
    }

    /// Sends the transition of job `i` to `to` from what memory holds (memory first: and
    /// takes it as done at once).
    fn transition(&mut self, now: Timestamp, i: usize, to: JobState) {
        let job = &self.jobs[i];
        let expected = job.memory;
        let tx = format!(
            "{}:{}:{}:{}",
            self.name,
            job.spec.id,
            to.as_str(),
            expected.1
        );
        if to == JobState::Dispatched {
            self.jobs[i].dispatch_tx = tx.clone();
        }
        self.jobs[i].pending = Some(Pending {
            to,
            expected,
            tx,
            attempts: 0,
        });
        self.send(i);
        if self.config.memory_first {
            self.jobs[i].pending = None;
            self.remember(i, Some(to), expected.1.saturating_add(1));
            self.proceed(now, i, to);
        }
    }

    fn send(&mut self, i: usize) {
        let job = &self.jobs[i];
        let Some(p) = &job.pending else {
            return;
        };
        let args = vec![
            job.spec.id.clone(),
            u8::from(self.config.cas).to_string(),
            p.expected.0.map_or("none", JobState::as_str).to_string(),
            p.expected.1.to_string(),
            p.to.as_str().to_string(),
            p.tx.clone(),
        ];
        let tag = JobTag::Transition {
            job: job.spec.id.clone(),
            to: p.to,
            tx: p.tx.clone(),
        };
        let op = StoreOp::Kv(KvOp::Script {
            script: ScriptName::SchedTransition,
            keys: vec![super::scripts::NAMESPACE.to_string()],
            args,
        });
        self.push(op, tag);
    }

    fn index(&self, job: &str) -> Option<usize> {
        self.jobs.iter().position(|j| j.spec.id == job)
    }

    /// The transition of job `i` to `to` took (as this process knows or assumes): the next
    /// step of the job.
    fn proceed(&mut self, now: Timestamp, i: usize, to: JobState) {
        let id = self.jobs[i].spec.id.clone();
        match to {
            JobState::Created if self.jobs[i].own => self.transition(now, i, JobState::Dispatched),
            JobState::Dispatched if self.jobs[i].own => {
                let tx = self.jobs[i].dispatch_tx.clone();
                self.note(JobNote::Executed { job: id, tx });
                self.jobs[i].result_at = Some(now + self.jobs[i].spec.length);
                if self.config.complete {
                    self.transition(now, i, JobState::Running);
                } else {
                    let v = self.jobs[i].memory.1;
                    self.remember(i, Some(JobState::Running), v);
                }
            }
            s if s.is_terminal() && self.config.durable => self.settle(i, Some(s)),
            s if s.is_terminal() => self.tell(i, s),
            _ => {}
        }
    }

    /// Tells the client `outcome` of job `i`, and stops following it.
    fn tell(&mut self, i: usize, outcome: JobState) {
        assert!(outcome.is_terminal(), "only an outcome is told");
        let job = &mut self.jobs[i];
        job.finished = true;
        job.result_at = None;
        job.retry_at = None;
        let job = job.spec.id.clone();
        if outcome == JobState::TimedOut {
            self.note(SchedNote::TimedOut { job });
        } else {
            self.note(SchedNote::Delivered { job });
        }
    }

    /// `Correct`: before telling `proposed`, stores it in PostgreSQL; before starting over
    /// a job whose record is gone (`None`), reads whether an outcome is stored.
    fn settle(&mut self, i: usize, proposed: Option<JobState>) {
        assert!(self.config.durable && self.jobs[i].pending.is_none());
        self.jobs[i].settle = Some(Settle {
            proposed,
            reading: proposed.is_none(),
            attempts: 0,
        });
        self.send_settle(i);
    }

    fn send_settle(&mut self, i: usize) {
        let Some(s) = &self.jobs[i].settle else {
            return;
        };
        let job = self.jobs[i].spec.id.clone();
        let (stmt, tag) = match s.proposed {
            Some(outcome) if !s.reading => {
                let writer = format!("{}:{job}:{}", self.name, outcome.as_str());
                (
                    store_outcome(&job, outcome, &writer),
                    JobTag::StoreOutcome { job, outcome },
                )
            }
            _ => (read_outcome(&job), JobTag::ReadOutcome { job }),
        };
        self.push(StoreOp::Sql(SqlOp::exec(stmt)), tag);
    }

    fn on_settle(&mut self, now: Timestamp, job: &str, reply: &Reply) {
        let Some(i) = self.index(job) else {
            return;
        };
        let Some(mut s) = self.jobs[i].settle.take() else {
            return;
        };
        match outcome::stored(reply) {
            Stored::Outcome(stored, writer) => {
                if s.proposed != Some(stored) {
                    let job = job.to_string();
                    let proposed = s.proposed;
                    self.note(JobNote::Adopted {
                        job,
                        proposed,
                        stored,
                        writer,
                    });
                }
                self.tell(i, stored);
            }
            Stored::None if s.proposed.is_none() => {
                // No outcome stored: the job never ended, and this process starts it over.
                self.transition(now, i, JobState::Created);
            }
            Stored::None if !s.reading => {
                // The insert conflicted: another outcome (or this one, whose earlier reply
                // was lost) is stored; read it.
                s.reading = true;
                s.attempts = 0;
                self.jobs[i].settle = Some(s);
                self.send_settle(i);
            }
            // A stored row is never deleted: a read that finds none (or any reply that says
            // nothing) is asked again, the insert first.
            Stored::None | Stored::Unknown => {
                s.attempts += 1;
                s.reading = s.proposed.is_none();
                if s.attempts <= RETRIES_MAX {
                    self.jobs[i].settle = Some(s);
                    self.jobs[i].retry_at = Some(now + RETRY_AFTER);
                }
            }
        }
    }

    /// The record of job `i` is gone and this process would start it over: `Correct` first
    /// reads whether its outcome is stored.
    fn start_over(&mut self, now: Timestamp, i: usize) {
        self.jobs[i].own = true;
        self.jobs[i].result_at = None;
        self.remember(i, None, 0);
        if self.config.durable {
            self.settle(i, None);
        } else {
            self.transition(now, i, JobState::Created);
        }
    }

    fn on_transition(&mut self, now: Timestamp, job: &str, tx: &str, reply: &Reply) {
        let Some(i) = self.index(job) else {
            return;
        };
        let Some(p) = self.jobs[i].pending.clone().filter(|p| p.tx == tx) else {
            return;
        };
        if !self.config.cas {
            // The planned FSM: whatever the reply, the write is taken as done.
            let v = match answer(reply) {
                Answer::Applied(_, v) => v,
                _ => p.expected.1.saturating_add(1),
            };
            self.jobs[i].pending = None;
            self.remember(i, Some(p.to), v);
            self.proceed(now, i, p.to);
            return;
        }
        match answer(reply) {
            Answer::Applied(to, v) => {
                self.jobs[i].pending = None;
                self.remember(i, Some(to), v);
                self.proceed(now, i, to);
            }
            Answer::Current(None, _, _) if self.finalize.is_some() && self.jobs[i].own => {
                // The record is gone (a Redis restart erased it): the finalizer's own job
                // starts over, as a job never submitted would.
                self.jobs[i].pending = None;
                self.start_over(now, i);
            }
            Answer::Current(state, v, mine) => {
                self.jobs[i].pending = None;
                self.remember(i, state, v);
                if mine && state == Some(p.to) {
                    self.proceed(now, i, p.to);
                } else if self.finalize.is_none() || self.jobs[i].own {
                    // Someone else moved the job, or its record is gone: the finalizer ends
                    // it (and tells the client), or adopts it.
                    self.jobs[i].own = false;
                    self.jobs[i].result_at = None;
                    self.jobs[i].finished = self.finalize.is_none();
                }
            }
            Answer::Unknown => {
                let Some(mut p) = self.jobs[i].pending.take() else {
                    return;
                };
                p.attempts += 1;
                if p.attempts <= RETRIES_MAX {
                    self.jobs[i].pending = Some(p);
                    self.jobs[i].retry_at = Some(now + RETRY_AFTER);
                }
            }
        }
    }

    fn on_read(&mut self, now: Timestamp, job: &str, reply: &Reply) {
        let Some(i) = self.index(job) else {
            return;
        };
        self.jobs[i].reading = false;
        let Some(f) = self.finalize else {
            return;
        };
        let Reply::Kv(KvReply::Array(fields)) = reply else {
            return;
        };
        let state = fields.first().cloned().flatten();
        let version = fields.get(1).cloned().flatten();
        let busy = self.jobs[i].own
            || self.jobs[i].pending.is_some()
            || self.jobs[i].settle.is_some()
            || self.jobs[i].finished;
        let age = now.saturating_since(self.jobs[i].spec.at);
        if state.is_none() && version.is_none() && !busy && age >= f.grace {
            // No record long after the submission: never created, or erased by a Redis
            // restart. This instance adopts the job and starts it over.
            self.start_over(now, i);
            return;
        }
        let (Some(state), Some(version)) = (
            state.as_deref().and_then(JobState::parse),
            version.and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return;
        };
        if busy {
            return;
        }
        self.remember(i, Some(state), version);
        match state {
            // Correct: the outcome is kept under the job's id, and any instance hands it to
            // the client (the instance that wrote it may have crashed before telling).
            s if s.is_terminal() && self.config.cas => self.proceed(now, i, s),
            s if s.is_terminal() => self.jobs[i].finished = true,
            JobState::Created if age >= f.grace => {
                // "Never dispatched": this instance dispatches it.
                self.jobs[i].own = true;
                self.transition(now, i, JobState::Dispatched);
            }
            JobState::Dispatched | JobState::Running if age >= f.deadline => {
                self.transition(now, i, JobState::TimedOut);
            }
            _ => {}
        }
    }
}

impl Machine for JobScheduler {
    fn handle_start(&mut self, now: Timestamp) {
        if let Some(f) = self.finalize {
            self.next_scan = Some(now + f.every);
        }
        self.handle_timeout(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let tag = match &self.in_flight {
            Some((id, tag)) if *id == op => tag.get::<JobTag>().cloned(),
            _ => return,
        };
        self.in_flight = None;
        match tag {
            Some(JobTag::Transition { job, tx, .. }) => self.on_transition(now, &job, &tx, &reply),
            Some(JobTag::Read { job }) => self.on_read(now, &job, &reply),
            Some(JobTag::StoreOutcome { job, .. } | JobTag::ReadOutcome { job }) => {
                self.on_settle(now, &job, &reply);
            }
            None => {}
        }
        self.pump();
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<JobSpec> = self
            .pending
            .iter()
            .filter(|j| j.at <= now)
            .cloned()
            .collect();
        self.pending.retain(|j| j.at > now);
        for spec in due {
            if self.index(&spec.id).is_some() {
                continue;
            }
            self.jobs.push(Job {
                spec,
                memory: (None, 0),
                own: true,
                pending: None,
                retry_at: None,
                result_at: None,
                dispatch_tx: String::new(),
                reading: false,
                settle: None,
                finished: false,
            });
            let i = self.jobs.len() - 1;
            self.transition(now, i, JobState::Created);
        }
        for i in 0..self.jobs.len() {
            if self.jobs[i].retry_at.is_some_and(|t| t <= now) {
                self.jobs[i].retry_at = None;
                self.send(i);
                self.send_settle(i);
            }
            let result_due = self.jobs[i].result_at.is_some_and(|t| t <= now);
            if result_due && self.jobs[i].pending.is_none() && self.jobs[i].settle.is_none() {
                self.jobs[i].result_at = None;
                let to = if self.jobs[i].spec.fails {
                    JobState::Failed
                } else {
                    JobState::Done
                };
                self.transition(now, i, to);
            }
        }
        if self.next_scan.is_some_and(|t| t <= now)
            && let Some(f) = self.finalize
        {
            self.next_scan = Some(now + f.every);
            for i in 0..self.jobs.len() {
                let j = &self.jobs[i];
                let busy = j.pending.is_some() || j.settle.is_some();
                if j.own || j.finished || j.reading || busy || j.spec.at > now {
                    continue;
                }
                let job = j.spec.id.clone();
                self.jobs[i].reading = true;
                let op = StoreOp::Kv(KvOp::HMGet {
                    key: record_key(&job),
                    fields: vec!["state".into(), "version".into()],
                });
                self.push(op, JobTag::Read { job });
            }
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let submit = self.pending.iter().map(|j| j.at);
        let timers = self.jobs.iter().flat_map(|j| {
            let result = j
                .result_at
                .filter(|_| j.pending.is_none() && j.settle.is_none());
            [j.retry_at, result].into_iter().flatten()
        });
        let scan = self
            .next_scan
            .filter(|_| self.jobs.iter().any(|j| !j.finished));
        submit.chain(timers).chain(scan).min()
    }

    fn is_idle(&self) -> bool {
        self.in_flight.is_none()
            && self.queue.is_empty()
            && self.out.is_empty()
            && self.pending.is_empty()
            && self.jobs.iter().all(|j| j.finished)
    }
}
