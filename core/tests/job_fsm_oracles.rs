//! R-004-05's oracles are fed known-bad histories and must flag them, naming the property,
//! and known-good ones that they must accept.

use racelab_core::scheduler::jobfsm::{
    AMBIGUOUS_RESOLVED, EXECUTED_ONCE, FSM_TIMED_OUT, FSM1, FSM2, JobNote, JobState, JobTag,
    OUTCOME_ADOPTED, STALE_TRANSITION_REFUSED, executed_once, fsm_coverage, fsm_transitions,
    memory_behind_redis,
};
use racelab_core::{
    History, KvOp, KvReply, Note, NoteRecord, OpId, OpRecord, ProcessId, Reply, ScriptName,
    StoreOp, Tag, Timestamp, Verdict,
};

const S1: ProcessId = ProcessId(0);
const S2: ProcessId = ProcessId(1);

fn history() -> History {
    History {
        process_names: vec![(S1, "S1".into()), (S2, "S2".into())],
        ..History::default()
    }
}

/// A transition of J1 to `to` sent at `sent_s`, applied at `at_s` (if ever) answering
/// `reply`; the caller timed out if `timed_out`.
#[allow(clippy::too_many_arguments)]
fn transition(
    h: &mut History,
    p: ProcessId,
    to: JobState,
    tx: &str,
    sent_s: u64,
    at_s: Option<u64>,
    reply: &str,
    timed_out: bool,
) {
    let ms = |s: u64| Timestamp::from_ms(s * 1000);
    let n = h.ops.len() as u64;
    h.ops.push(OpRecord {
        process: p,
        id: OpId(n + 1),
        tag: Tag::new(JobTag::Transition {
            job: "J1".into(),
            to,
            tx: tx.into(),
        }),
        op: StoreOp::Kv(KvOp::Script {
            script: ScriptName::SchedTransition,
            keys: Vec::new(),
            args: Vec::new(),
        }),
        invoked_at: ms(sent_s),
        applied_at: at_s.map(ms),
        durable_at: at_s.map(ms),
        lost_at: None,
        result: at_s.map(|_| Reply::Kv(KvReply::Bulk(reply.into()))),
        completed_at: Some(ms(if timed_out {
            sent_s + 2
        } else {
            at_s.unwrap_or(sent_s)
        })),
        timed_out,
    });
}

fn ok(h: &mut History, p: ProcessId, to: JobState, reply: &str, at_s: u64) {
    transition(h, p, to, &format!("{at_s}"), at_s, Some(at_s), reply, false);
}

fn note(h: &mut History, p: ProcessId, note: JobNote, at_s: u64) {
    h.notes.push(NoteRecord {
        at: Timestamp::from_ms(at_s * 1000),
        process: p,
        note: Note::new(note),
    });
}

fn memory(h: &mut History, p: ProcessId, state: JobState, at_s: u64) {
    let job = "J1".into();
    note(h, p, JobNote::Memory { job, state }, at_s);
}

fn happy_path(h: &mut History) {
    ok(h, S1, JobState::Created, "ok none created 1", 5);
    ok(h, S1, JobState::Dispatched, "ok created dispatched 2", 6);
    ok(h, S1, JobState::Running, "ok dispatched running 3", 7);
    ok(h, S1, JobState::Done, "ok running done 4", 70);
}

fn broken(v: &Verdict) -> Vec<&str> {
    v.broken()
}

#[test]
fn fsm1_accepts_the_declared_path_and_flags_a_terminal_overwrite() {
    let mut h = history();
    happy_path(&mut h);
    assert!(fsm_transitions(&h).holds());
    // The finalizer's unconditional timeout lands after done: last writer wins.
    ok(&mut h, S2, JobState::TimedOut, "ok done timed_out 5", 205);
    let v = fsm_transitions(&h);
    assert_eq!(broken(&v), vec![FSM1.name]);
    assert!(
        v.explanation().contains("done -> timed_out"),
        "{}",
        v.explanation()
    );
}

#[test]
fn fsm1_flags_a_state_entered_twice_and_a_skipped_state() {
    let mut h = history();
    ok(&mut h, S1, JobState::Created, "ok none created 1", 5);
    ok(&mut h, S1, JobState::Running, "ok created running 2", 7);
    let v = fsm_transitions(&h);
    assert_eq!(broken(&v), vec![FSM1.name]);
    let mut h = history();
    ok(&mut h, S1, JobState::Created, "ok none created 1", 5);
    ok(
        &mut h,
        S2,
        JobState::Dispatched,
        "ok created dispatched 2",
        20,
    );
    // S1's held write of the same state lands later, unconditionally.
    transition(
        &mut h,
        S1,
        JobState::Dispatched,
        "a",
        5,
        Some(65),
        "ok dispatched dispatched 3",
        true,
    );
    let v = fsm_transitions(&h);
    assert_eq!(broken(&v), vec![FSM1.name]);
    assert!(
        v.explanation().contains("dispatched -> dispatched"),
        "{}",
        v.explanation()
    );
}

#[test]
fn fsm1_ignores_refused_and_unapplied_transitions() {
    let mut h = history();
    happy_path(&mut h);
    ok(&mut h, S2, JobState::TimedOut, "no done 4", 205);
    transition(&mut h, S2, JobState::TimedOut, "b", 206, None, "", true);
    assert!(fsm_transitions(&h).holds());
}

#[test]
fn fsm2_flags_memory_ahead_of_the_record() {
    let mut h = history();
    ok(&mut h, S1, JobState::Created, "ok none created 1", 5);
    memory(&mut h, S1, JobState::Created, 5);
    // The write of dispatched is held; S1 takes it as done at its timeout.
    transition(
        &mut h,
        S1,
        JobState::Dispatched,
        "a",
        5,
        Some(65),
        "ok created dispatched 2",
        true,
    );
    memory(&mut h, S1, JobState::Dispatched, 7);
    let v = memory_behind_redis(&h);
    assert_eq!(broken(&v), vec![FSM2.name]);
    assert!(
        v.explanation().contains("the record said created"),
        "{}",
        v.explanation()
    );
    // Memory that only lags is fine.
    let mut h = history();
    happy_path(&mut h);
    memory(&mut h, S1, JobState::Created, 80);
    memory(&mut h, S1, JobState::Done, 70);
    assert!(memory_behind_redis(&h).holds());
}

#[test]
fn executions_are_counted_per_job() {
    let mut h = history();
    note(&mut h, S1, executed("J1", "a"), 6);
    note(&mut h, S1, executed("J2", "b"), 7);
    assert!(executed_once(&h).holds());
    note(&mut h, S2, executed("J1", "c"), 20);
    let v = executed_once(&h);
    assert_eq!(broken(&v), vec![EXECUTED_ONCE.name]);
    assert!(v.explanation().contains("J1 was executed 2 times"));
}

fn executed(job: &str, tx: &str) -> JobNote {
    JobNote::Executed {
        job: job.into(),
        tx: tx.into(),
    }
}

#[test]
fn an_execution_whose_dispatch_a_restart_erased_is_redone_not_doubled() {
    let mut h = history();
    transition(
        &mut h,
        S1,
        JobState::Dispatched,
        "a",
        5,
        Some(5),
        "ok created dispatched 2",
        false,
    );
    note(&mut h, S1, executed("J1", "a"), 5);
    h.faults.push(racelab_core::FaultRecord {
        at: Timestamp::from_ms(30_000),
        fault: racelab_core::Fault::RedisRestart,
    });
    transition(
        &mut h,
        S2,
        JobState::Dispatched,
        "c",
        40,
        Some(40),
        "ok created dispatched 2",
        false,
    );
    note(&mut h, S2, executed("J1", "c"), 40);
    assert!(executed_once(&h).holds());
    // FSM1 starts the erased record over too.
    assert!(fsm_transitions(&h).holds());
    // A dispatch that never reached Redis still ran on a node: it counts.
    transition(&mut h, S1, JobState::Dispatched, "d", 50, None, "", true);
    note(&mut h, S1, executed("J1", "d"), 52);
    assert_eq!(broken(&executed_once(&h)), vec![EXECUTED_ONCE.name]);
}

#[test]
fn coverage_counts_resolved_ambiguity_refusals_and_timeouts() {
    let mut h = history();
    ok(&mut h, S1, JobState::Created, "ok none created 1", 5);
    // Applied, reply lost; sent again, answered `dup`.
    transition(
        &mut h,
        S1,
        JobState::Dispatched,
        "t",
        5,
        Some(5),
        "ok created dispatched 2",
        true,
    );
    transition(
        &mut h,
        S1,
        JobState::Dispatched,
        "t",
        8,
        Some(8),
        "dup dispatched 2",
        false,
    );
    ok(&mut h, S1, JobState::Running, "ok dispatched running 3", 9);
    ok(
        &mut h,
        S2,
        JobState::TimedOut,
        "ok running timed_out 4",
        205,
    );
    ok(&mut h, S1, JobState::Done, "no timed_out 4", 265);
    let mut v = Verdict::default();
    fsm_coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(AMBIGUOUS_RESOLVED.name), Some(&1));
    assert_eq!(v.sometimes.get(STALE_TRANSITION_REFUSED.name), Some(&1));
    assert_eq!(v.sometimes.get(FSM_TIMED_OUT.name), Some(&1));
    assert!(fsm_transitions(&h).holds());
}

/// The race the durable outcome closes: S1 tells J1's result, a failover loses `done`, and
/// at the deadline S2 times J1 out. Telling the timeout breaks I-JOB-notified; adopting the
/// stored outcome (and telling it) holds, and counts as `outcome-adopted`. An adoption of
/// the outcome the process would have told anyway (its own earlier store, whose reply was
/// lost) is not counted.
#[test]
fn a_timeout_after_a_lost_terminal_record_breaks_notified_unless_the_stored_outcome_is_adopted() {
    use racelab_core::scheduler::{I_JOB_NOTIFIED, SchedNote, notified_once};
    let told = |h: &mut History, p: ProcessId, note: SchedNote, at_s: u64| {
        h.notes.push(NoteRecord {
            at: Timestamp::from_ms(at_s * 1000),
            process: p,
            note: Note::new(note),
        });
    };
    let mut base = history();
    happy_path(&mut base);
    base.ops.last_mut().expect("done").lost_at = Some(Timestamp::from_ms(70_100));
    told(&mut base, S1, SchedNote::Delivered { job: "J1".into() }, 70);
    ok(
        &mut base,
        S2,
        JobState::TimedOut,
        "ok running timed_out 4",
        205,
    );
    assert!(fsm_transitions(&base).holds());

    let mut h = base.clone();
    told(&mut h, S2, SchedNote::TimedOut { job: "J1".into() }, 206);
    assert_eq!(broken(&notified_once(&h)), vec![I_JOB_NOTIFIED.name]);

    let mut h = base.clone();
    let adopted = JobNote::Adopted {
        job: "J1".into(),
        proposed: Some(JobState::TimedOut),
        stored: JobState::Done,
        writer: "S1:J1:done".into(),
    };
    note(&mut h, S2, adopted, 206);
    told(&mut h, S2, SchedNote::Delivered { job: "J1".into() }, 206);
    assert!(notified_once(&h).holds());
    let mut v = Verdict::default();
    fsm_coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(OUTCOME_ADOPTED.name), Some(&1));

    let mut h = base;
    let own = JobNote::Adopted {
        job: "J1".into(),
        proposed: Some(JobState::TimedOut),
        stored: JobState::TimedOut,
        writer: "S2:J1:timed_out".into(),
    };
    note(&mut h, S2, own, 206);
    let mut v = Verdict::default();
    fsm_coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(OUTCOME_ADOPTED.name), None);
}
