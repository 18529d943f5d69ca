//! Records a real run as a core [`History`], the way the simulators do, so that the same
//! oracles judge it.
//!
//! Timestamps are real milliseconds since the run's start ([`crate::Clock`]), taken on the
//! client: `invoked_at` when the driver sends an operation, `completed_at` when its answer
//! arrives. The store's own apply time is not observable from outside, so `applied_at` is the
//! completion time of an answered operation (the latest moment it can have been applied).
//! `durable_at` is stamped when the writes are known durable: at the answer for Redis and
//! for an autocommit statement, at the `COMMIT`'s answer for every statement of a
//! transaction; an operation whose answer never came (a timeout, a cut connection, a crash)
//! has no result and no `durable_at`, exactly what the client knew.

use std::sync::{Arc, Mutex};

use racelab_core::{
    Fault, FaultRecord, History, Note, NoteRecord, OpRecord, Outgoing, ProcessId, Reply, SqlOp,
    SqlReply, StoreId, StoreOp, Timestamp,
};

use crate::driver::{Completion, Control, Observer};

/// A run's history, shared by every process' [`ProcessRecorder`]s.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    history: History,
    /// Completed operations' latencies in ms (idle polls of an empty queue left out).
    latencies_ms: Vec<u64>,
}

impl Recorder {
    /// An empty history.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Names a process (for explanations).
    pub fn name(&self, process: ProcessId, name: &str) {
        if let Ok(mut s) = self.inner.lock()
            && !s.history.process_names.iter().any(|(p, _)| *p == process)
        {
            s.history.process_names.push((process, name.to_string()));
        }
    }

    /// Records an injected fault.
    pub fn fault(&self, at: Timestamp, fault: Fault) {
        if let Ok(mut s) = self.inner.lock() {
            s.history.faults.push(FaultRecord { at, fault });
        }
    }

    /// An observer for one process incarnation. `crash` decides, after each completion,
    /// whether the process crashes there.
    pub fn process<F>(&self, process: ProcessId, crash: F) -> ProcessRecorder<F>
    where
        F: FnMut(&Outgoing, &Completion) -> Control,
    {
        ProcessRecorder {
            recorder: self.clone(),
            process,
            open: Vec::new(),
            in_tx: false,
            tx_ops: Vec::new(),
            crash,
        }
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        self.inner
            .lock()
            .map(|s| s.history.clone())
            .unwrap_or_default()
    }

    /// The latencies of completed operations so far, in ms.
    pub fn latencies_ms(&self) -> Vec<u64> {
        self.inner
            .lock()
            .map(|s| s.latencies_ms.clone())
            .unwrap_or_default()
    }

    /// Applies `f` to the history under the lock (for cheap queries during a run).
    pub fn with_history<T>(&self, f: impl FnOnce(&History) -> T) -> Option<T> {
        self.inner.lock().ok().map(|s| f(&s.history))
    }
}

/// Records one process incarnation's operations and notes; see the module documentation for
/// what each timestamp means.
pub struct ProcessRecorder<F> {
    recorder: Recorder,
    process: ProcessId,
    /// Operations in flight: (the machine's id, index in the history).
    open: Vec<(racelab_core::OpId, usize)>,
    in_tx: bool,
    /// Indexes of the statements of the open transaction.
    tx_ops: Vec<usize>,
    crash: F,
}

impl<F> std::fmt::Debug for ProcessRecorder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRecorder")
            .field("process", &self.process)
            .field("in_tx", &self.in_tx)
            .finish_non_exhaustive()
    }
}

impl<F> Observer for ProcessRecorder<F>
where
    F: FnMut(&Outgoing, &Completion) -> Control,
{
    fn invoked(&mut self, at: Timestamp, op: &Outgoing) {
        let Ok(mut s) = self.recorder.inner.lock() else {
            return;
        };
        s.history.ops.push(OpRecord {
            process: self.process,
            id: op.id,
            tag: op.tag.clone(),
            op: op.op.clone(),
            invoked_at: at,
            applied_at: None,
            durable_at: None,
            lost_at: None,
            result: None,
            completed_at: None,
            timed_out: false,
        });
        let index = s.history.ops.len() - 1;
        self.open.push((op.id, index));
    }

    fn completed(&mut self, at: Timestamp, op: &Outgoing, completion: &Completion) -> Control {
        let Some(pos) = self.open.iter().position(|(id, _)| *id == op.id) else {
            return (self.crash)(op, completion);
        };
        let (_, index) = self.open.swap_remove(pos);
        if let Ok(mut s) = self.recorder.inner.lock() {
            let record = &mut s.history.ops[index];
            record.completed_at = Some(at);
            let latency = at.saturating_since(record.invoked_at).as_ms();
            match completion {
                Completion::Reply(reply) => {
                    record.result = Some(reply.clone());
                    record.applied_at = Some(at);
                    let mut durable: Vec<usize> = Vec::new();
                    match (&op.op, reply) {
                        (op, _) if op.store() == StoreId::Redis => durable.push(index),
                        (StoreOp::Sql(SqlOp::Begin), Reply::Sql(SqlReply::Ok)) => {
                            self.in_tx = true;
                            self.tx_ops.clear();
                        }
                        (StoreOp::Sql(SqlOp::Commit), Reply::Sql(SqlReply::Committed)) => {
                            durable.append(&mut self.tx_ops);
                            durable.push(index);
                            self.in_tx = false;
                        }
                        (StoreOp::Sql(SqlOp::Commit | SqlOp::Rollback), _) => {
                            self.in_tx = false;
                            self.tx_ops.clear();
                        }
                        (StoreOp::Sql(SqlOp::Exec(_)), _) if self.in_tx => self.tx_ops.push(index),
                        (StoreOp::Sql(SqlOp::Exec(_)), Reply::Sql(r)) if !is_error(r) => {
                            durable.push(index);
                        }
                        _ => {}
                    }
                    for i in durable {
                        s.history.ops[i].durable_at = Some(at);
                    }
                    let idle_poll = matches!(
                        reply,
                        Reply::Queue(racelab_core::QueueReply::Delivered(None))
                    );
                    if !idle_poll {
                        s.latencies_ms.push(latency);
                    }
                }
                Completion::TimedOut | Completion::Failed { .. } => {
                    record.timed_out = true;
                    s.latencies_ms.push(latency);
                }
            }
        }
        (self.crash)(op, completion)
    }

    fn noted(&mut self, at: Timestamp, note: &Note) {
        if let Ok(mut s) = self.recorder.inner.lock() {
            s.history.notes.push(NoteRecord {
                at,
                process: self.process,
                note: note.clone(),
            });
        }
    }
}

fn is_error(reply: &SqlReply) -> bool {
    matches!(reply, SqlReply::Error(_) | SqlReply::UniqueViolation { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use racelab_core::{KvOp, KvReply, OpId, Tag};

    fn out(id: u64, op: StoreOp) -> Outgoing {
        Outgoing {
            id: OpId(id),
            op,
            tag: Tag::plain(racelab_core::TagKind::new("tx")),
        }
    }

    fn stmt() -> StoreOp {
        StoreOp::Sql(SqlOp::exec(racelab_core::SqlStmt::Select {
            table: racelab_core::workorder::WORK_ORDERS,
            key: "wo-1".into(),
            for_update: true,
        }))
    }

    #[test]
    fn statements_of_a_transaction_become_durable_at_its_commit_and_unknowns_never() {
        let rec = Recorder::new();
        let mut p = rec.process(ProcessId(1), |_: &Outgoing, _: &Completion| {
            Control::Continue
        });
        let ok = |r: SqlReply| Completion::Reply(Reply::Sql(r));
        let steps: Vec<(Outgoing, Completion)> = vec![
            (out(1, StoreOp::Sql(SqlOp::Begin)), ok(SqlReply::Ok)),
            (out(2, stmt()), ok(SqlReply::Rows(Vec::new()))),
            (out(3, StoreOp::Sql(SqlOp::Commit)), ok(SqlReply::Committed)),
            (out(4, stmt()), ok(SqlReply::Rows(Vec::new()))),
            (out(5, StoreOp::Sql(SqlOp::Begin)), ok(SqlReply::Ok)),
            (out(6, stmt()), ok(SqlReply::Rows(Vec::new()))),
            (out(7, StoreOp::Sql(SqlOp::Commit)), Completion::TimedOut),
            (
                out(8, StoreOp::Kv(KvOp::Get { key: "k".into() })),
                Completion::Reply(Reply::Kv(KvReply::Nil)),
            ),
        ];
        for (i, (o, c)) in steps.iter().enumerate() {
            let t = Timestamp::from_ms(10 * i as u64);
            p.invoked(t, o);
            p.completed(t + racelab_core::Duration::from_ms(5), o, c);
        }
        let h = rec.history();
        let durable: Vec<Option<u64>> = h
            .ops
            .iter()
            .map(|o| o.durable_at.map(|t| t.as_ms()))
            .collect();
        assert_eq!(
            durable,
            vec![
                None,
                Some(25),
                Some(25),
                Some(35),
                None,
                None,
                None,
                Some(75)
            ],
            "the statement in the committed transaction is durable at the COMMIT's answer, the \
             autocommit one at its own, the one whose COMMIT timed out never"
        );
        assert!(
            h.ops[6].timed_out && h.ops[6].result.is_none(),
            "an unknown outcome has no result"
        );
    }
}
