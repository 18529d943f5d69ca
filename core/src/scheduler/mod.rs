//! Document 004's scheduler: worker nodes register and heartbeat in Redis, schedulers bind
//! jobs to them with Lua scripts and re-dispatch the jobs of nodes that went away (R-004-01,
//! R-004-02).
//!
//! | variant | node TTL / pool TTL / heartbeat | selection | heartbeat after expiry | result |
//! |---|---|---|---|---|
//! | `Buggy` | 3600 s / 3600 s / 30 s (the code) | any member of the pool set | re-creates a partial node | accepted unconditionally |
//! | `DocFix` | 60 s / 70 s / 30 s (the revision's retune) | the same | the same | the same |
//! | `Correct` | a 40 s lease renewed every 10 s (Kubernetes' node lease), no pool TTL | members whose lease is present, in the same script, stale ones removed | "re-register": a new epoch, the old epoch's jobs abandoned | a CAS on (running, node, epoch) |
//!
//! R-004-03 adds the node-offline script and who runs it. A [`Monitor`] reads the pool every
//! interval and runs the offline script for each member; the script itself checks that the
//! member's registration is gone and moves its jobs. How the scheduler submits and follows a
//! job is its [`Submit`]:
//!
//! | variant | selection and binding | re-dispatch | offline script | result |
//! |---|---|---|---|---|
//! | `Buggy` | two calls (`select`, then `bind_to`) | left to the offline script | unfenced: fails half-way with no node left | unconditional |
//! | `DocFix` | one unfenced script | left to the offline script | the same | unconditional |
//! | `Correct` | one script checking the lease | the scheduler's reap, one script | fenced: validates, then queues a job with no live node | CAS on (running, node, epoch) |
//!
//! R-004-06 adds the timeout finalize ([`Dispatcher::with_timeout`]): at a job's deadline
//! the scheduler runs [`scripts::finalize`]. Buggy: the code's 3600 s binding TTL, the job's
//! state in memory and an unconditional finalize (a late result is still accepted and
//! delivered); DocFix: the binding TTL retuned with the node TTL, otherwise the same; Correct:
//! no binding TTL, the job FSM in Redis, the finalize and the result each a compare-and-set
//! on the job's state, so only the first terminal transition wins.
//!
//! R-004-07 ([`ws`]): the client's WebSocket connection held in scheduler memory against job
//! ownership by a client-supplied id with results kept by job id in SQL and replayed on
//! reconnect. R-004-04 ([`restart`]) runs the same machines with crashes and restarts of the
//! instances between a job's submission and its result.
//!
//! Every script is one atomic step ([`scripts`]); TTLs are `ARGV` from [`NodeConfig`]. A
//! [`Node`] registers, heartbeats, polls the jobs bound to it and runs each for the job's
//! duration before reporting its result; a [`Dispatcher`] submits its jobs at their times
//! (a stable `job_id`: a restarted dispatcher submits the same ids again, which the dispatch
//! script leaves alone) and then reaps them every interval until it sees each done.
//!
//! Drain order of both machines is [`Machine`]'s: at most one operation in flight, the
//! rest queued; timers through `poll_timeout`, spurious `handle_timeout` calls do nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{KvOp, KvReply, Reply, ScriptName, SetCondition, StoreOp};
use crate::tag::{Note, Tag};
use crate::time::{Duration, Timestamp};
use crate::variant::Variant;

mod durable;
pub mod jobfsm;
mod oracle;
pub mod restart;
pub mod rollout;
pub mod scripts;
mod tag;
pub mod ws;

pub use durable::DurableScheduler;
pub use oracle::{
    B1, DEAD_NODE_SKIPPED, F1, I_JOB, I_JOB_DELIVERED, I_JOB_NOTIFIED, J2, J3, L2, LATE_RESULT,
    LEASE_LOST, NO_NODE_LEFT, OFFLINE_REDISPATCHED, STALE_RESULT_REFUSED, T_DEAD,
    TIMED_OUT_FINALIZED, binding_lifetime, binding_liveness, coverage, fenced_results,
    finalize_coverage, jobs_delivered, notified_once, offline_bindings, one_outcome,
    terminal_transitions,
};
pub use tag::{SchedNote, SchedTag};

/// A node's timing: the TTLs its scripts set and how often it heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NodeConfig {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// The node key's TTL (the lease).
    pub node_ttl: Duration,
    /// The pool set's TTL (zero: none).
    pub pool_ttl: Duration,
    /// Epoch fencing (the correct scripts).
    pub fenced: bool,
}

impl NodeConfig {
    /// The variant's configuration: the code's 3600 s, the revision's 60/70 s, or a fenced
    /// 40 s lease renewed every 10 s.
    pub fn of(variant: Variant) -> NodeConfig {
        match variant {
            Variant::Buggy => NodeConfig {
                heartbeat: Duration::from_secs(30),
                node_ttl: Duration::from_secs(3600),
                pool_ttl: Duration::from_secs(3600),
                fenced: false,
            },
            Variant::DocFix => NodeConfig {
                heartbeat: Duration::from_secs(30),
                node_ttl: Duration::from_secs(60),
                pool_ttl: Duration::from_secs(70),
                fenced: false,
            },
            Variant::Correct => NodeConfig {
                heartbeat: Duration::from_secs(10),
                node_ttl: Duration::from_secs(40),
                pool_ttl: Duration::ZERO,
                fenced: true,
            },
        }
    }

    fn fenced_arg(self) -> String {
        u8::from(self.fenced).to_string()
    }
}

/// One operation at a time, the rest queued.
#[derive(Debug, Default)]
struct Pipe {
    queue: VecDeque<(StoreOp, Tag)>,
    out: VecDeque<Outgoing>,
    in_flight: Option<(OpId, Tag)>,
    next: u64,
}

impl Pipe {
    /// Queues `script` on the object `id` (a node or a job) with `args` after it.
    fn push(&mut self, script: ScriptName, id: &str, args: Vec<String>, tag: SchedTag) {
        let keys = vec![scripts::NAMESPACE.to_string()];
        let args = std::iter::once(id.to_string()).chain(args).collect();
        let op = StoreOp::Kv(KvOp::Script { script, keys, args });
        self.queue.push_back((op, Tag::new(tag)));
        self.pump();
    }

    /// Queues a plain command.
    fn push_op(&mut self, op: KvOp, tag: SchedTag) {
        self.queue.push_back((StoreOp::Kv(op), Tag::new(tag)));
        self.pump();
    }

    fn pump(&mut self) {
        if self.in_flight.is_some() {
            return;
        }
        if let Some((op, tag)) = self.queue.pop_front() {
            self.next += 1;
            let id = OpId(self.next);
            self.in_flight = Some((id, tag.clone()));
            self.out.push_back(Outgoing { id, op, tag });
        }
    }

    /// The tag of the answered operation, if it is the one in flight.
    fn answer(&mut self, op: OpId) -> Option<SchedTag> {
        match &self.in_flight {
            Some((id, tag)) if *id == op => {
                let tag = tag.get::<SchedTag>().cloned();
                self.in_flight = None;
                tag
            }
            _ => None,
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.queue.is_empty() || !self.out.is_empty()
    }
}

/// A worker node: registers, heartbeats, runs the jobs bound to it and reports their results.
#[derive(Debug)]
pub struct Node {
    name: String,
    config: NodeConfig,
    job_length: Duration,
    pipe: Pipe,
    notes: VecDeque<Note>,
    /// `None` until registered.
    epoch: Option<u64>,
    registering: bool,
    next_heartbeat: Option<Timestamp>,
    /// The jobs it runs, with when each finishes and the epoch it runs under.
    running: BTreeMap<String, (Timestamp, u64)>,
    /// The jobs whose result is on its way, by epoch: a poll answered before the result
    /// applied must not run them again.
    finished: BTreeSet<(String, u64)>,
}

impl Node {
    /// A node named `name` (its id in Redis) whose jobs each take `job_length`.
    pub fn new(name: &str, config: NodeConfig, job_length: Duration) -> Node {
        Node {
            name: name.into(),
            config,
            job_length,
            pipe: Pipe::default(),
            notes: VecDeque::new(),
            epoch: None,
            registering: false,
            next_heartbeat: None,
            running: BTreeMap::new(),
            finished: BTreeSet::new(),
        }
    }

    fn ttl_args(&self) -> Vec<String> {
        vec![
            self.config.node_ttl.as_ms().to_string(),
            self.config.pool_ttl.as_ms().to_string(),
            self.config.fenced_arg(),
        ]
    }

    fn register(&mut self) {
        if self.registering {
            return;
        }
        self.registering = true;
        let args = self.ttl_args();
        let tag = SchedTag::Register {
            node: self.name.clone(),
        };
        self.pipe
            .push(ScriptName::SchedRegister, &self.name, args, tag);
    }

    fn poll(&mut self, epoch: u64) {
        let tag = SchedTag::Poll {
            node: self.name.clone(),
        };
        let args = vec![self.config.fenced_arg(), epoch.to_string()];
        self.pipe.push(ScriptName::SchedPoll, &self.name, args, tag);
    }
}

impl Machine for Node {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_heartbeat = Some(now + self.config.heartbeat);
        self.register();
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let Some(tag) = self.pipe.answer(op) else {
            return;
        };
        match (tag, reply) {
            (SchedTag::Register { .. }, Reply::Kv(KvReply::Int(e))) if e >= 0 => {
                self.registering = false;
                self.epoch = Some(e.unsigned_abs());
                self.poll(e.unsigned_abs());
            }
            (SchedTag::Register { .. }, _) => {
                // Unknown outcome: try again at the next heartbeat.
                self.registering = false;
            }
            (SchedTag::Heartbeat { .. }, Reply::Kv(KvReply::Int(-1))) => {
                // The lease is gone: the jobs bound under it are someone else's now.
                if let Some(epoch) = self.epoch.take() {
                    self.notes.push_back(Note::new(SchedNote::LeaseLost {
                        node: self.name.clone(),
                        epoch,
                    }));
                }
                self.running.clear();
                self.register();
            }
            (SchedTag::Heartbeat { .. }, Reply::Kv(KvReply::Int(_))) => {
                if let Some(e) = self.epoch {
                    self.poll(e);
                }
            }
            (SchedTag::Poll { .. }, Reply::Kv(KvReply::Array(jobs))) => {
                let epoch = self.epoch.unwrap_or_default();
                for job in jobs.into_iter().flatten() {
                    if !self.finished.contains(&(job.clone(), epoch)) {
                        self.running
                            .entry(job)
                            .or_insert((now + self.job_length, epoch));
                    }
                }
            }
            (SchedTag::Complete { job, epoch, .. }, _) => {
                // Answered: a later poll that still finds the job bound here means the result
                // never took (a timeout, or a failover lost it), so it runs again.
                self.finished.remove(&(job, epoch));
            }
            _ => {}
        }
        self.pipe.pump();
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.next_heartbeat.is_some_and(|t| t <= now) {
            self.next_heartbeat = Some(now + self.config.heartbeat);
            match self.epoch {
                Some(epoch) => {
                    let mut args = self.ttl_args();
                    args.push(epoch.to_string());
                    let tag = SchedTag::Heartbeat {
                        node: self.name.clone(),
                    };
                    self.pipe
                        .push(ScriptName::SchedHeartbeat, &self.name, args, tag);
                }
                None => self.register(),
            }
        }
        let done: Vec<(String, u64)> = self
            .running
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(j, (_, e))| (j.clone(), *e))
            .collect();
        for (job, epoch) in done {
            self.running.remove(&job);
            self.finished.insert((job.clone(), epoch));
            let tag = SchedTag::Complete {
                job: job.clone(),
                node: self.name.clone(),
                epoch,
            };
            let args = vec![
                self.name.clone(),
                epoch.to_string(),
                self.config.fenced_arg(),
            ];
            self.pipe.push(ScriptName::SchedComplete, &job, args, tag);
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.pipe.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let finish = self.running.values().map(|(at, _)| *at).min();
        match (self.next_heartbeat, finish) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_idle(&self) -> bool {
        // Heartbeats never stop: the world's horizon ends the run.
        !self.pipe.busy() && self.next_heartbeat.is_none()
    }
}

/// A scheduler instance: submits its jobs at their times, then reaps each until it sees it
/// done and delivers the outcome.
#[derive(Debug)]
pub struct Dispatcher {
    config: NodeConfig,
    submit: Submit,
    reap_every: Duration,
    pending: Vec<(String, Timestamp)>,
    /// Split selection: jobs waiting for a selection (none answered yet, or no node).
    unbound: BTreeSet<String>,
    tracked: BTreeSet<String>,
    pipe: Pipe,
    notes: VecDeque<Note>,
    next_reap: Option<Timestamp>,
    /// R-004-06: the timeout finalize, if any (see [`Dispatcher::with_timeout`]).
    timeout: Option<Timeout>,
    /// When each tracked job's finalize is due.
    deadlines: BTreeMap<String, Timestamp>,
    /// Jobs whose finalize was sent (or answered that it could not find the job's node).
    finalizing: BTreeSet<String>,
    /// Jobs whose timeout the client was told.
    timed_out: BTreeSet<String>,
}

/// A [`Dispatcher`]'s timeout finalize (R-004-06).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Timeout {
    after: Duration,
    binding_ttl: Duration,
}

/// How a [`Dispatcher`] submits its jobs and follows them (R-004-03).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Submit {
    /// One dispatch script per job (selection and binding, with fencing the lease check, in
    /// one step), then the reap script every interval: every re-dispatch decision is one
    /// script that checks the binding it replaces.
    #[default]
    DispatchAndReap,
    /// One dispatch script per job, then only reads of its state: re-dispatch is left to the
    /// node-offline script.
    DispatchThenWatch,
    /// The document's split: a selection script, the binding in a later call, then only
    /// reads of the job's state.
    SelectBindThenWatch,
}

impl Dispatcher {
    /// A scheduler submitting `jobs` (id, time), reaping every `reap_every`.
    pub fn new(
        config: NodeConfig,
        jobs: Vec<(String, Timestamp)>,
        reap_every: Duration,
    ) -> Dispatcher {
        Dispatcher {
            config,
            submit: Submit::default(),
            // A zero interval would ask for the same instant forever.
            reap_every: reap_every.max(Duration::from_ms(1)),
            pending: jobs,
            unbound: BTreeSet::new(),
            tracked: BTreeSet::new(),
            pipe: Pipe::default(),
            notes: VecDeque::new(),
            next_reap: None,
            timeout: None,
            deadlines: BTreeMap::new(),
            finalizing: BTreeSet::new(),
            timed_out: BTreeSet::new(),
        }
    }

    /// The same scheduler with the document's timeout finalize (R-004-06): `after` its
    /// submission time a job it still follows is finalized ([`ScriptName::SchedFinalize`],
    /// fenced as the configuration says); with a non-zero `binding_ttl` each binding the
    /// dispatch script reports is also written to the binding key with that TTL (the
    /// document's `select_node.lua` line 66; a zero TTL writes no binding key: the job FSM in
    /// Redis is the binding). Unfenced, the job's state is the scheduler's memory: a timed-out
    /// job is still followed and its result still delivered if it arrives (the document's
    /// result path); fenced, the finalize's compare-and-set decides and the job is no longer
    /// followed once it is terminal.
    pub fn with_timeout(mut self, after: Duration, binding_ttl: Duration) -> Dispatcher {
        self.timeout = Some(Timeout { after, binding_ttl });
        self
    }

    /// The client is told `job` timed out (once); fenced, the job is terminal.
    fn time_out(&mut self, job: String) {
        if !self.tracked.contains(&job) {
            return;
        }
        if self.timed_out.insert(job.clone()) {
            self.notes
                .push_back(Note::new(SchedNote::TimedOut { job: job.clone() }));
        }
        if self.config.fenced {
            self.tracked.remove(&job);
        }
    }

    fn deliver(&mut self, job: String) {
        if self.tracked.remove(&job) {
            self.notes
                .push_back(Note::new(SchedNote::Delivered { job }));
        }
    }

    /// The same scheduler submitting and following its jobs as `submit` says.
    pub fn with_submit(mut self, submit: Submit) -> Dispatcher {
        self.submit = submit;
        self
    }

    fn select(&mut self, job: String) {
        let tag = SchedTag::Select { job: job.clone() };
        self.pipe
            .push(ScriptName::SchedSelect, &job, Vec::new(), tag);
    }
}

impl Machine for Dispatcher {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_reap = Some(now + self.reap_every);
        self.handle_timeout(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        let Some(tag) = self.pipe.answer(op) else {
            return;
        };
        match (tag, reply) {
            (SchedTag::Finalize { job }, Reply::Kv(KvReply::Bulk(answer))) => {
                match answer.as_str() {
                    "state done" => self.deliver(job),
                    a if a.starts_with("timed_out") || a == "state timed_out" => self.time_out(job),
                    // `lost`, `unbound`: the finalizer cannot find the job's node and gives up.
                    _ => {}
                }
            }
            (SchedTag::Finalize { job }, _) => {
                // Unknown outcome: finalize again (the fenced finalize is idempotent) at the
                // next interval.
                self.finalizing.remove(&job);
                self.deadlines.insert(job, now + self.reap_every);
            }
            (
                SchedTag::Dispatch { job } | SchedTag::Reap { job } | SchedTag::Status { job },
                Reply::Kv(KvReply::Bulk(status)),
            ) if status == "timed_out" && self.timeout.is_some() => {
                self.time_out(job);
            }
            (
                SchedTag::Dispatch { job } | SchedTag::Reap { job } | SchedTag::Status { job },
                Reply::Kv(KvReply::Bulk(status)),
            ) if status == "done" && self.tracked.remove(&job) => {
                self.notes
                    .push_back(Note::new(SchedNote::Delivered { job }));
            }
            (SchedTag::Dispatch { job }, Reply::Kv(KvReply::Bulk(status)))
                if status.starts_with("bound ") =>
            {
                let ttl = self.timeout.map(|t| t.binding_ttl).unwrap_or_default();
                if let Some(node) = status.split(' ').nth(1)
                    && ttl > Duration::ZERO
                {
                    let op = KvOp::Set {
                        key: scripts::binding_key(&job),
                        value: node.to_string(),
                        condition: SetCondition::Always,
                        ttl: Some(ttl),
                    };
                    self.pipe.push_op(op, SchedTag::Binding { job });
                }
            }
            (SchedTag::Select { job }, Reply::Kv(KvReply::Bulk(choice))) => {
                let mut words = choice.split(' ');
                match (words.next(), words.next()) {
                    (Some(node), Some(epoch)) if !node.is_empty() => {
                        let args = vec![node.to_string(), epoch.to_string()];
                        let tag = SchedTag::Bind { job: job.clone() };
                        self.pipe.push(ScriptName::SchedBind, &job, args, tag);
                    }
                    // `none`: no node yet; select again at the next interval.
                    _ => {
                        self.unbound.insert(job);
                    }
                }
            }
            (SchedTag::Select { job }, _) => {
                // Unknown outcome (selection writes only its counter): select again.
                self.unbound.insert(job);
            }
            _ => {}
        }
        self.pipe.pump();
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<(String, Timestamp)> = self
            .pending
            .iter()
            .filter(|(_, at)| *at <= now)
            .cloned()
            .collect();
        self.pending.retain(|(_, at)| *at > now);
        for (job, at) in due {
            self.tracked.insert(job.clone());
            if let Some(t) = self.timeout {
                // The deadline is the job's (its submission time's), not this incarnation's:
                // a restarted scheduler finalizes on the same schedule.
                self.deadlines.insert(job.clone(), at + t.after);
            }
            if self.submit == Submit::SelectBindThenWatch {
                self.select(job);
                continue;
            }
            let tag = SchedTag::Dispatch { job: job.clone() };
            self.pipe.push(
                ScriptName::SchedDispatch,
                &job,
                vec![self.config.fenced_arg()],
                tag,
            );
        }
        let expired: Vec<String> = self
            .deadlines
            .iter()
            .filter(|(j, at)| **at <= now && self.tracked.contains(*j))
            .map(|(j, _)| j.clone())
            .filter(|j| !self.finalizing.contains(j))
            .collect();
        for job in expired {
            self.finalizing.insert(job.clone());
            let tag = SchedTag::Finalize { job: job.clone() };
            self.pipe.push(
                ScriptName::SchedFinalize,
                &job,
                vec![self.config.fenced_arg()],
                tag,
            );
        }
        if self.next_reap.is_some_and(|t| t <= now) {
            self.next_reap = Some(now + self.reap_every);
            if !self.pipe.busy() {
                for job in std::mem::take(&mut self.unbound) {
                    self.select(job);
                }
                for job in self.tracked.clone() {
                    if self.submit == Submit::DispatchAndReap {
                        let tag = SchedTag::Reap { job: job.clone() };
                        self.pipe.push(
                            ScriptName::SchedReap,
                            &job,
                            vec![self.config.fenced_arg()],
                            tag,
                        );
                    } else {
                        let op = KvOp::HGet {
                            key: scripts::job_key(&job),
                            field: "state".into(),
                        };
                        self.pipe.push_op(op, SchedTag::Status { job });
                    }
                }
            }
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.pipe.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let deadline = self
            .deadlines
            .iter()
            .filter(|(j, _)| self.tracked.contains(*j) && !self.finalizing.contains(*j))
            .map(|(_, at)| *at)
            .min();
        let submit = self.pending.iter().map(|(_, at)| *at).min();
        let submit = match (submit, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (self.next_reap, submit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_idle(&self) -> bool {
        !self.pipe.busy() && self.pending.is_empty() && self.tracked.is_empty()
    }
}

/// The node-offline monitor (R-004-03): every interval it reads the pool's members and runs
/// the node-offline script for each; the script itself decides whether the node's
/// registration is gone and re-dispatches its jobs. A node no longer in the pool is no longer
/// watched.
#[derive(Debug)]
pub struct Monitor {
    config: NodeConfig,
    every: Duration,
    pipe: Pipe,
    next_scan: Option<Timestamp>,
}

impl Monitor {
    /// A monitor scanning the pool every `every`, with `config`'s fencing.
    pub fn new(config: NodeConfig, every: Duration) -> Monitor {
        Monitor {
            config,
            // A zero interval would ask for the same instant forever.
            every: every.max(Duration::from_ms(1)),
            pipe: Pipe::default(),
            next_scan: None,
        }
    }
}

impl Machine for Monitor {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_scan = Some(now + self.every);
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        let Some(tag) = self.pipe.answer(op) else {
            return;
        };
        if let (SchedTag::Scan, Reply::Kv(KvReply::Array(members))) = (tag, reply) {
            let mut members: Vec<String> = members.into_iter().flatten().collect();
            // SMEMBERS answers in hash order: visit them in one order whatever the store.
            members.sort();
            for node in members {
                let tag = SchedTag::Offline { node: node.clone() };
                let args = vec![self.config.fenced_arg()];
                self.pipe.push(ScriptName::SchedOffline, &node, args, tag);
            }
        }
        self.pipe.pump();
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.next_scan.is_some_and(|t| t <= now) {
            self.next_scan = Some(now + self.every);
            if !self.pipe.busy() {
                let op = KvOp::SMembers {
                    key: scripts::pool_key(),
                };
                self.pipe.push_op(op, SchedTag::Scan);
            }
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.pipe.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        None
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_scan
    }

    fn is_idle(&self) -> bool {
        // It scans until the world's horizon.
        !self.pipe.busy() && self.next_scan.is_none()
    }
}
