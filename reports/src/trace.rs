//! What a rendered trace is made of, shared by the Markdown and the HTML timelines: the input
//! ([`Trace`]), the lanes, and the text of each step.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use racelab_core::{
    Fault, History, OpRecord, ProcessId, StoreId, StoreOp, TimelineKind, TimelineStep, Verdict,
};

/// One trace to render: a run's history and its verdict, plus the words around them.
#[derive(Clone, Copy, Debug)]
pub struct Trace<'a> {
    /// The page's heading (`R-002-01 buggy, timeline base`).
    pub title: &'a str,
    /// What the trace shows, in a sentence (a script's summary, the race's title); may be
    /// empty.
    pub summary: &'a str,
    /// The invariant the oracles judged, in words; may be empty.
    pub invariant: &'a str,
    /// Everything that happened.
    pub history: &'a History,
    /// The oracles' verdict; its violations' `ops` are highlighted.
    pub verdict: &'a Verdict,
    /// The command that replays the trace.
    pub replay: &'a str,
    /// The run's trace hash, if known (equal hashes: identical runs).
    pub trace_hash: Option<u64>,
}

/// A column of the sequence diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Lane {
    /// A process, in the history's naming order.
    Process(ProcessId),
    /// Redis' key space.
    Redis,
    /// The Bull-like queue (which lives in Redis).
    Queue,
    /// The SQL database.
    Sql,
    /// The proxy's own memory (documents 001/003: health table, failure queue, files).
    Local,
    /// The upstream API endpoints.
    Upstream,
    /// The load balancer of push connections between processes.
    Push,
}

/// The lane of the store an operation goes to ([`StoreOp::store`]); the queue, which lives
/// in Redis, has a lane of its own.
pub(crate) fn store_lane(op: &StoreOp) -> Lane {
    match op {
        StoreOp::Queue(_) => Lane::Queue,
        op => lane(op.store()),
    }
}

/// A store's lane.
fn lane(store: StoreId) -> Lane {
    match store {
        StoreId::Redis => Lane::Redis,
        StoreId::Sql => Lane::Sql,
        StoreId::Local => Lane::Local,
        StoreId::Upstream => Lane::Upstream,
        StoreId::Push => Lane::Push,
    }
}

/// The lanes a fault concerns: its process, or the Redis lanes for a Redis-wide fault.
pub(crate) fn fault_lanes(fault: &Fault) -> Vec<Lane> {
    match fault {
        Fault::Pause { process, .. }
        | Fault::Partition { process, .. }
        | Fault::Heal { process, .. }
        | Fault::Crash { process }
        | Fault::Restart { process }
        | Fault::Delay { process, .. }
        | Fault::DropReply { process, .. }
        | Fault::Clock { process, .. } => vec![Lane::Process(*process)],
        Fault::Failover | Fault::RedisRestart => vec![Lane::Redis, Lane::Queue],
    }
}

/// The store lane a partition cuts a process off from.
pub(crate) fn partition_store(fault: &Fault) -> Option<Lane> {
    match fault {
        Fault::Partition { store, .. } | Fault::Heal { store, .. } => Some(lane(*store)),
        _ => None,
    }
}

/// The diagram's lanes, left to right: every process (named ones in naming order, then any
/// other that appears), then the stores that appear.
pub(crate) fn lanes(history: &History) -> Vec<Lane> {
    let mut processes: Vec<ProcessId> = history.process_names.iter().map(|(p, _)| *p).collect();
    let mut seen: BTreeSet<ProcessId> = processes.iter().copied().collect();
    let mut stores = BTreeSet::new();
    let mut more = |p: ProcessId, processes: &mut Vec<ProcessId>| {
        if seen.insert(p) {
            processes.push(p);
        }
    };
    for op in &history.ops {
        more(op.process, &mut processes);
        stores.insert(store_lane(&op.op));
    }
    for n in &history.notes {
        more(n.process, &mut processes);
    }
    for f in &history.faults {
        for lane in fault_lanes(&f.fault) {
            match lane {
                Lane::Process(p) => more(p, &mut processes),
                // A failover shows on the store lanes that the operations already use.
                Lane::Redis
                | Lane::Queue
                | Lane::Sql
                | Lane::Local
                | Lane::Upstream
                | Lane::Push => {}
            }
        }
        if let Some(store) = partition_store(&f.fault) {
            stores.insert(store);
        }
    }
    processes
        .into_iter()
        .map(Lane::Process)
        .chain(stores)
        .collect()
}

/// A lane's heading.
pub(crate) fn lane_name(history: &History, lane: Lane) -> String {
    match lane {
        Lane::Process(p) => history.name(p),
        Lane::Redis => "Redis".to_string(),
        Lane::Queue => "Queue (Redis)".to_string(),
        Lane::Sql => "SQL".to_string(),
        Lane::Local => "Process memory".to_string(),
        Lane::Upstream => "Upstream".to_string(),
        Lane::Push => "Push connections".to_string(),
    }
}

/// The operations the verdict's violations name, and for each the invariants involved.
pub(crate) fn marked_ops(verdict: &Verdict) -> BTreeMap<usize, Vec<String>> {
    let mut marked: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for v in &verdict.violations {
        for &op in &v.ops {
            let names = marked.entry(op).or_default();
            if !names.contains(&v.invariant) {
                names.push(v.invariant.clone());
            }
        }
    }
    marked
}

/// The step number (`T7` is 7) of each operation that appears in the timeline.
pub(crate) fn step_of_op(steps: &[TimelineStep]) -> BTreeMap<usize, usize> {
    steps
        .iter()
        .filter_map(|s| match s.kind {
            TimelineKind::Op(i) => Some((i, s.step)),
            TimelineKind::Fault(_) | TimelineKind::Note(_) => None,
        })
        .collect()
}

/// The steps a violation involves, in step order (written out by [`step_list`]).
pub(crate) fn violation_steps(ops: &[usize], step_of: &BTreeMap<usize, usize>) -> Vec<usize> {
    let steps: BTreeSet<usize> = ops.iter().filter_map(|i| step_of.get(i).copied()).collect();
    steps.into_iter().collect()
}

/// Steps as the documents write them: `T3, T8, T17` (empty for none).
pub(crate) fn step_list(steps: &[usize]) -> String {
    steps
        .iter()
        .map(|s| format!("T{s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One timeline step in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StepText {
    /// An operation: the process, the operation, and what became of it.
    Op {
        /// The process' name.
        who: String,
        /// The operation.
        what: String,
        /// The store's answer, or `never applied`.
        result: String,
        /// When and how it ended (`applied 00:00.003`, `reply lost: caller timed out`).
        fate: String,
    },
    /// An injected fault.
    Fault {
        /// The fault, as the history renders it (`partition(W_A, Redis)`).
        what: String,
    },
    /// A process' note.
    Note {
        /// The process' name.
        who: String,
        /// The note (`skips s-1: already applied`).
        what: String,
        /// Whether it is an alarm.
        alarm: bool,
    },
}

/// The words of one step. Faults and notes take their text from [`History::render_step`]
/// (their renderers are private to `core`), without its `Tn time` prefix.
pub(crate) fn step_text(history: &History, step: &TimelineStep) -> StepText {
    match step.kind {
        TimelineKind::Op(i) => {
            let op = &history.ops[i];
            let (result, fate) = op_fate(op);
            StepText::Op {
                who: history.name(op.process),
                what: op.op.to_string(),
                result,
                fate,
            }
        }
        TimelineKind::Fault(_) => {
            let line = history.render_step(step);
            let body = strip_step_prefix(&line, step);
            StepText::Fault {
                what: body.strip_prefix("FAULT ").unwrap_or(body).to_string(),
            }
        }
        TimelineKind::Note(i) => {
            let note = &history.notes[i];
            let who = history.name(note.process);
            let line = history.render_step(step);
            let body = strip_step_prefix(&line, step);
            let what = body
                .strip_prefix(&format!("{who:<4} "))
                .unwrap_or(body)
                .trim()
                .to_string();
            StepText::Note {
                who,
                what,
                alarm: note.note.is_alarm(),
            }
        }
    }
}

/// What an operation returned and how it ended, in the words of [`History::render_step`].
fn op_fate(op: &OpRecord) -> (String, String) {
    match (&op.result, op.applied_at) {
        (Some(r), Some(at)) => {
            let mut fate = format!("applied {at}");
            if let Some(lost) = op.lost_at {
                let _ = write!(fate, "; write lost at {lost}: never replicated");
            }
            if op.timed_out {
                fate.push_str("; reply lost: caller timed out");
            }
            (r.to_string(), fate)
        }
        _ => {
            let fate = if op.timed_out {
                "caller timed out".to_string()
            } else {
                String::new()
            };
            ("never applied".to_string(), fate)
        }
    }
}

fn strip_step_prefix<'l>(line: &'l str, step: &TimelineStep) -> &'l str {
    let prefix = format!("T{:<3} {}  ", step.step, step.at);
    line.strip_prefix(&prefix).unwrap_or(line).trim_start()
}

#[cfg(test)]
pub(crate) mod tests {
    use racelab_core::{
        Duration, FamilyNote, Fault, FaultRecord, KvOp, KvReply, Note, NoteRecord, OpId, OpRecord,
        Reply, SetCondition, SqlOp, SqlReply, SqlStmt, Tag, TagKind, Timestamp, Verdict, Violation,
    };

    use super::*;

    /// A note of the tests' own family.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct Skipped(u64);

    impl FamilyNote for Skipped {}

    impl std::fmt::Display for Skipped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "skips s-{}: already applied", self.0)
        }
    }

    /// A small history with every kind of step: an applied op, a lost reply, an op that never
    /// arrived, a fault and a note; operation text with quotes and `<>`.
    pub(crate) fn sample() -> (History, Verdict) {
        let t = Timestamp::from_ms;
        let op = |process: u16,
                  id: u64,
                  op: StoreOp,
                  invoked: u64,
                  applied: Option<u64>,
                  result: Option<Reply>,
                  completed: Option<u64>,
                  timed_out: bool| OpRecord {
            process: ProcessId(process),
            id: OpId(id),
            tag: Tag::plain(TagKind::new("op")),
            op,
            invoked_at: t(invoked),
            applied_at: applied.map(t),
            durable_at: applied.map(t),
            lost_at: None,
            result,
            completed_at: completed.map(t),
            timed_out,
        };
        let set = StoreOp::Kv(KvOp::Set {
            key: "lock:<wo-1>".into(),
            value: "\"W_A\" & 'x'".into(),
            condition: SetCondition::IfAbsent,
            ttl: Some(Duration::from_secs(20)),
        });
        let sql = StoreOp::Sql(SqlOp::Begin);
        let history = History {
            process_names: vec![(ProcessId(0), "<W_A>".into()), (ProcessId(1), "W_B".into())],
            ops: vec![
                op(
                    0,
                    1,
                    set.clone(),
                    0,
                    Some(1),
                    Some(Reply::Kv(KvReply::Ok)),
                    Some(2),
                    false,
                ),
                op(
                    1,
                    2,
                    set,
                    5,
                    Some(6_000),
                    Some(Reply::Kv(KvReply::Ok)),
                    Some(5_005),
                    true,
                ),
                op(0, 3, sql, 7, None, None, Some(30_007), true),
                op(
                    1,
                    4,
                    StoreOp::Sql(SqlOp::exec(SqlStmt::Select {
                        table: racelab_core::workorder::WORK_ORDERS,
                        key: "wo-1".into(),
                        for_update: false,
                    })),
                    8,
                    Some(9),
                    Some(Reply::Sql(SqlReply::Ok)),
                    Some(10),
                    false,
                ),
            ],
            faults: vec![FaultRecord {
                at: t(3),
                fault: Fault::Pause {
                    process: ProcessId(0),
                    duration: Duration::from_secs(4),
                },
            }],
            notes: vec![NoteRecord {
                at: t(11),
                process: ProcessId(1),
                note: Note::new(Skipped(1)),
            }],
        };
        let verdict = Verdict {
            violations: vec![Violation {
                invariant: "I-MX".into(),
                explanation: "both <W_A> and W_B hold \"wo-1\"".into(),
                ops: vec![0, 1, 99],
            }],
            ..Verdict::default()
        };
        (history, verdict)
    }

    #[test]
    fn step_lists_read_as_in_the_documents() {
        assert_eq!(step_list(&[3, 8, 17]), "T3, T8, T17");
        assert_eq!(step_list(&[1]), "T1");
        assert_eq!(step_list(&[]), "");
    }

    #[test]
    fn lanes_are_processes_then_the_stores_in_use() {
        let (h, _) = sample();
        assert_eq!(
            lanes(&h),
            vec![
                Lane::Process(ProcessId(0)),
                Lane::Process(ProcessId(1)),
                Lane::Redis,
                Lane::Sql
            ]
        );
    }

    #[test]
    fn faults_and_notes_lose_the_step_prefix_but_keep_their_words() {
        let (h, _) = sample();
        let steps = h.timeline();
        let texts: Vec<StepText> = steps.iter().map(|s| step_text(&h, s)).collect();
        assert!(texts.contains(&StepText::Fault {
            what: "pause(<W_A>, 4s)".into()
        }));
        assert!(texts.contains(&StepText::Note {
            who: "W_B".into(),
            what: "skips s-1: already applied".into(),
            alarm: false
        }));
        assert!(texts.contains(&StepText::Op {
            who: "W_B".into(),
            what: "SET lock:<wo-1> \"W_A\" & 'x' NX PX 20000".into(),
            result: "OK".into(),
            fate: "applied 00:06.000; reply lost: caller timed out".into()
        }));
    }

    #[test]
    fn violations_map_to_steps_and_ignore_unknown_ops() {
        let (h, v) = sample();
        let steps = h.timeline();
        let step_of = step_of_op(&steps);
        assert_eq!(violation_steps(&v.violations[0].ops, &step_of), vec![1, 3]);
        assert_eq!(marked_ops(&v).len(), 3);
    }
}
