//! A scheduler instance whose outcomes are durable (R-004-05's rule, applied to
//! R-004-01/02's [`Dispatcher`]): Redis keeps the jobs in flight, which a restart without
//! persistence erases; what the client is told is stored first in PostgreSQL
//! ([`JOB_OUTCOMES`], first insert wins), and an instance that starts (or starts again after
//! a crash) first reads the outcomes it stored and submits only the other jobs of its list,
//! by their stable ids. The real-server check of document 004 runs it
//! (`racelab check-real --protocol scheduler`).
//!
//! Drain order is [`Machine`]'s: the dispatcher's operations pass through (their ids
//! doubled), its own are odd; one SQL statement in flight at a time (one session).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::jobfsm::{JOB_OUTCOMES, JobState, JobTag, store_outcome};
use super::{Dispatcher, NodeConfig, SchedNote};
use crate::ids::OpId;
use crate::machine::{Machine, Outgoing};
use crate::ops::{CmpOp, Cond, Reply, SqlOp, SqlReply, SqlStmt, StoreOp, Value};
use crate::tag::{Note, Tag};
use crate::time::{Duration, Timestamp};

/// A scheduler instance: a [`Dispatcher`] inside a durable outcome record. It first
/// reads the outcomes its earlier incarnations stored (`job_outcomes` rows it wrote) and
/// submits only the other jobs of its list; before the client is told a job's outcome
/// ([`SchedNote::Delivered`]) the outcome is inserted (first insert wins; a conflicting
/// insert means it is stored already), and told only once the insert answered. A job it
/// finds stored at its start is told again (the same outcome: its earlier incarnation may
/// have died between storing and telling). Its own operations are tagged with [`JobTag`];
/// the dispatcher's pass through unchanged (their ids doubled, its own odd).
pub struct DurableScheduler {
    name: String,
    config: NodeConfig,
    jobs: Vec<(String, Timestamp)>,
    reap_every: Duration,
    inner: Option<Dispatcher>,
    /// The read of the stored outcomes is in flight (its id), or due again at a time.
    loading: Option<OpId>,
    retry_load_at: Option<Timestamp>,
    /// Stores in flight (id -> job) and stores waiting to be sent.
    storing: BTreeMap<OpId, String>,
    to_store: VecDeque<String>,
    next_own: u64,
    out: VecDeque<Outgoing>,
    notes: VecDeque<Note>,
}

impl std::fmt::Debug for DurableScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableScheduler")
            .field("name", &self.name)
            .field("started", &self.inner.is_some())
            .finish_non_exhaustive()
    }
}

impl DurableScheduler {
    /// The scheduler `name` (the `writer` of its rows) submitting `jobs` with `config`,
    /// reaping every `reap_every`.
    pub fn new(
        name: &str,
        config: NodeConfig,
        jobs: Vec<(String, Timestamp)>,
        reap_every: Duration,
    ) -> DurableScheduler {
        DurableScheduler {
            name: name.to_string(),
            config,
            jobs,
            reap_every,
            inner: None,
            loading: None,
            retry_load_at: None,
            storing: BTreeMap::new(),
            to_store: VecDeque::new(),
            next_own: 0,
            out: VecDeque::new(),
            notes: VecDeque::new(),
        }
    }

    fn own(&mut self, op: SqlStmt, tag: JobTag) -> OpId {
        self.next_own += 1;
        let id = OpId(self.next_own * 2 + 1);
        self.out.push_back(Outgoing {
            id,
            op: StoreOp::Sql(SqlOp::exec(op)),
            tag: Tag::new(tag),
        });
        id
    }

    fn load(&mut self) {
        let filter = Cond::cmp("writer", CmpOp::Eq, Value::Text(self.name.clone()));
        let tag = JobTag::ReadOutcome {
            job: format!("{}:*", self.name),
        };
        self.loading = Some(self.own(SqlStmt::scan(JOB_OUTCOMES, filter), tag));
    }

    /// Moves the dispatcher's operations and notes out, holding back each delivery until its
    /// outcome is stored.
    fn pump(&mut self) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        while let Some(mut op) = inner.poll_op() {
            op.id = OpId(op.id.0 * 2);
            self.out.push_back(op);
        }
        while let Some(note) = inner.poll_note() {
            match note.get::<SchedNote>() {
                Some(SchedNote::Delivered { job }) => self.to_store.push_back(job.clone()),
                _ => self.notes.push_back(note),
            }
        }
        // One store in flight at a time: the session is one.
        if self.storing.is_empty()
            && let Some(job) = self.to_store.pop_front()
        {
            let tag = JobTag::StoreOutcome {
                job: job.clone(),
                outcome: JobState::Done,
            };
            let id = self.own(store_outcome(&job, JobState::Done, &self.name), tag);
            self.storing.insert(id, job);
        }
    }
}

impl Machine for DurableScheduler {
    fn handle_start(&mut self, _now: Timestamp) {
        self.load();
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if op.0.is_multiple_of(2) {
            if let Some(inner) = self.inner.as_mut() {
                inner.handle_reply(now, OpId(op.0 / 2), reply);
            }
        } else if self.loading == Some(op) {
            self.loading = None;
            match reply {
                Reply::Sql(SqlReply::Rows(rows)) => {
                    let stored: BTreeSet<String> = rows.into_iter().map(|r| r.key).collect();
                    for job in &stored {
                        self.notes
                            .push_back(Note::new(SchedNote::Delivered { job: job.clone() }));
                    }
                    let jobs = std::mem::take(&mut self.jobs)
                        .into_iter()
                        .filter(|(j, _)| !stored.contains(j))
                        .collect();
                    let mut inner = Dispatcher::new(self.config, jobs, self.reap_every);
                    inner.handle_start(now);
                    self.inner = Some(inner);
                }
                _ => self.retry_load_at = Some(now + self.reap_every),
            }
        } else if let Some(job) = self.storing.remove(&op) {
            match reply {
                // Stored now, or stored before (the conflict): told either way.
                Reply::Sql(SqlReply::Rows(_)) => {
                    self.notes
                        .push_back(Note::new(SchedNote::Delivered { job }));
                }
                // Unknown: store again (first insert wins, so again is harmless).
                _ => self.to_store.push_front(job),
            }
        }
        self.pump();
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.retry_load_at.is_some_and(|t| t <= now) {
            self.retry_load_at = None;
            self.load();
        }
        if let Some(inner) = self.inner.as_mut() {
            inner.handle_timeout(now);
        }
        self.pump();
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let inner = self.inner.as_ref().and_then(|d| d.poll_timeout());
        match (inner, self.retry_load_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn is_idle(&self) -> bool {
        self.inner.as_ref().is_some_and(|d| d.is_idle())
            && self.loading.is_none()
            && self.retry_load_at.is_none()
            && self.storing.is_empty()
            && self.to_store.is_empty()
            && self.out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{KeyedRow, KvReply, Row};

    fn config() -> NodeConfig {
        NodeConfig::of(crate::variant::Variant::Correct)
    }

    fn jobs() -> Vec<(String, Timestamp)> {
        vec![
            ("j1".to_string(), Timestamp::ZERO),
            ("j2".to_string(), Timestamp::ZERO),
        ]
    }

    fn drain(m: &mut DurableScheduler) -> Vec<Outgoing> {
        std::iter::from_fn(|| m.poll_op()).collect()
    }

    fn delivered(m: &mut DurableScheduler) -> Vec<String> {
        std::iter::from_fn(|| m.poll_note())
            .filter_map(|n| match n.get::<SchedNote>() {
                Some(SchedNote::Delivered { job }) => Some(job.clone()),
                _ => None,
            })
            .collect()
    }

    fn rows(keys: &[&str]) -> Reply {
        Reply::Sql(SqlReply::Rows(
            keys.iter()
                .map(|k| KeyedRow {
                    key: (*k).to_string(),
                    columns: Row::new(),
                })
                .collect(),
        ))
    }

    #[test]
    fn a_start_submits_only_the_jobs_not_stored_and_retells_the_stored_ones() {
        let now = Timestamp::ZERO;
        let mut m = DurableScheduler::new("S1", config(), jobs(), Duration::from_ms(100));
        m.handle_start(now);
        let load = drain(&mut m);
        assert_eq!(load.len(), 1);
        assert!(matches!(load[0].op, StoreOp::Sql(_)));
        // Nothing is submitted before the stored outcomes are known.
        m.handle_timeout(now);
        assert!(drain(&mut m).is_empty());
        m.handle_reply(now, load[0].id, rows(&["j1"]));
        assert_eq!(delivered(&mut m), vec!["j1".to_string()]);
        let ops = drain(&mut m);
        let submitted: Vec<String> = ops
            .iter()
            .filter_map(|o| o.tag.get::<super::super::SchedTag>())
            .filter_map(|t| match t {
                super::super::SchedTag::Dispatch { job } => Some(job.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(submitted, vec!["j2".to_string()]);
        assert!(ops.iter().all(|o| o.id.0 % 2 == 0));
    }

    #[test]
    fn an_outcome_is_told_only_after_its_store_answered_and_a_lost_store_is_sent_again() {
        let now = Timestamp::ZERO;
        let mut m = DurableScheduler::new("S1", config(), jobs(), Duration::from_ms(100));
        m.handle_start(now);
        let load = drain(&mut m);
        m.handle_reply(now, load[0].id, rows(&[]));
        // j1's dispatch answers that it is done already: the dispatcher delivers it.
        let ops = drain(&mut m);
        assert!(!ops.is_empty());
        m.handle_reply(now, ops[0].id, Reply::Kv(KvReply::Bulk("done".into())));
        let store: Vec<Outgoing> = drain(&mut m)
            .into_iter()
            .filter(|o| o.tag.get::<JobTag>().is_some())
            .collect();
        assert_eq!(store.len(), 1, "one store, before any telling");
        assert!(delivered(&mut m).is_empty());
        // Its answer is lost: stored again, still not told.
        m.handle_reply(now, store[0].id, Reply::Timeout);
        assert!(delivered(&mut m).is_empty());
        let again: Vec<Outgoing> = drain(&mut m)
            .into_iter()
            .filter(|o| o.tag.get::<JobTag>().is_some())
            .collect();
        assert_eq!(again.len(), 1);
        // A conflict (stored before) answers no row: told.
        m.handle_reply(now, again[0].id, rows(&[]));
        assert_eq!(delivered(&mut m), vec!["j1".to_string()]);
    }
}
