//! The scheduler family's oracles are fed known-bad histories and must flag them, naming the
//! property, and known-good ones that they must accept.

use racelab_core::scheduler::{
    B1, F1, I_JOB, I_JOB_DELIVERED, I_JOB_NOTIFIED, J2, J3, L2, LATE_RESULT, NO_NODE_LEFT,
    OFFLINE_REDISPATCHED, STALE_RESULT_REFUSED, SchedNote, SchedTag, T_DEAD, TIMED_OUT_FINALIZED,
    binding_lifetime, binding_liveness, coverage, fenced_results, finalize_coverage,
    jobs_delivered, notified_once, offline_bindings, one_outcome, terminal_transitions,
};
use racelab_core::{
    History, KvOp, KvReply, Note, NoteRecord, OpId, OpRecord, ProcessId, Reply, ScriptName,
    StoreOp, Tag, Timestamp, Verdict,
};

const S: ProcessId = ProcessId(0);
const N1: ProcessId = ProcessId(1);
const N2: ProcessId = ProcessId(2);

fn history() -> History {
    History {
        process_names: vec![(S, "S".into()), (N1, "N1".into()), (N2, "N2".into())],
        ..History::default()
    }
}

/// A script applied at `at_s` seconds, kept (durable) unless `lost`.
fn op(h: &mut History, p: ProcessId, tag: SchedTag, reply: KvReply, at_s: u64, lost: bool) {
    let at = Timestamp::from_ms(at_s * 1000);
    let n = h.ops.len() as u64;
    h.ops.push(OpRecord {
        process: p,
        id: OpId(n + 1),
        tag: Tag::new(tag),
        op: StoreOp::Kv(KvOp::Script {
            script: ScriptName::SchedReap,
            keys: Vec::new(),
            args: Vec::new(),
        }),
        invoked_at: at,
        applied_at: Some(at),
        durable_at: Some(at),
        lost_at: lost.then_some(at),
        result: Some(Reply::Kv(reply)),
        completed_at: Some(at),
        timed_out: false,
    });
}

fn beat(h: &mut History, p: ProcessId, node: &str, at_s: u64) {
    let tag = SchedTag::Heartbeat { node: node.into() };
    op(h, p, tag, KvReply::Int(1), at_s, false);
}

fn bind(h: &mut History, job: &str, node: &str, epoch: u64, at_s: u64) {
    let tag = SchedTag::Reap { job: job.into() };
    let reply = KvReply::Bulk(format!("bound {node} {epoch} 0"));
    op(h, S, tag, reply, at_s, false);
}

fn complete(h: &mut History, p: ProcessId, job: &str, node: &str, epoch: u64, at_s: u64, r: i64) {
    let tag = SchedTag::Complete {
        job: job.into(),
        node: node.into(),
        epoch,
    };
    op(h, p, tag, KvReply::Int(r), at_s, false);
}

fn broken(v: &Verdict) -> Vec<&str> {
    v.broken()
}

#[test]
fn l2_flags_a_binding_to_a_node_silent_for_longer_than_t_dead() {
    let mut h = history();
    beat(&mut h, N1, "N1", 0);
    bind(&mut h, "J1", "N1", 0, 30);
    assert!(binding_liveness(&h, T_DEAD).holds());
    bind(&mut h, "J2", "N1", 0, 61);
    let v = binding_liveness(&h, T_DEAD);
    assert_eq!(broken(&v), [L2.name]);
    assert!(
        v.violations[0].explanation.contains("J2"),
        "{}",
        v.explanation()
    );
}

#[test]
fn l2_ignores_a_heartbeat_that_was_lost_or_refused() {
    let mut h = history();
    beat(&mut h, N1, "N1", 0);
    // A heartbeat a failover lost, and one refused as "re-register", renew nothing.
    op(
        &mut h,
        N1,
        SchedTag::Heartbeat { node: "N1".into() },
        KvReply::Int(1),
        30,
        true,
    );
    op(
        &mut h,
        N1,
        SchedTag::Heartbeat { node: "N1".into() },
        KvReply::Int(-1),
        40,
        false,
    );
    bind(&mut h, "J1", "N1", 0, 70);
    assert_eq!(broken(&binding_liveness(&h, T_DEAD)), [L2.name]);
}

#[test]
fn l2_flags_a_binding_to_a_node_that_never_heartbeated() {
    let mut h = history();
    bind(&mut h, "J1", "N9", 0, 1);
    assert_eq!(broken(&binding_liveness(&h, T_DEAD)), [L2.name]);
}

#[test]
fn f1_flags_a_zombie_result_after_the_job_moved() {
    let mut h = history();
    bind(&mut h, "J1", "N1", 1, 0);
    bind(&mut h, "J1", "N2", 4, 100);
    complete(&mut h, N2, "J1", "N2", 4, 200, 1);
    assert!(fenced_results(&h).holds());
    complete(&mut h, N1, "J1", "N1", 1, 300, 1);
    let v = fenced_results(&h);
    assert_eq!(broken(&v), [F1.name]);
    assert!(
        v.violations[0].explanation.contains("N2 epoch 4"),
        "{}",
        v.explanation()
    );
}

#[test]
fn f1_flags_a_result_from_an_older_epoch_of_the_same_node() {
    let mut h = history();
    bind(&mut h, "J1", "N1", 2, 0);
    complete(&mut h, N1, "J1", "N1", 1, 10, 1);
    assert_eq!(broken(&fenced_results(&h)), [F1.name]);
}

#[test]
fn refused_results_break_nothing_and_are_counted() {
    let mut h = history();
    bind(&mut h, "J1", "N1", 1, 0);
    bind(&mut h, "J1", "N2", 2, 100);
    complete(&mut h, N1, "J1", "N1", 1, 150, 0);
    complete(&mut h, N2, "J1", "N2", 2, 200, 1);
    assert!(fenced_results(&h).holds());
    assert!(one_outcome(&h).holds());
    let mut v = Verdict::default();
    coverage(&h, &mut v);
    assert_eq!(v.sometimes.get("stale-result-refused"), Some(&1));
}

#[test]
fn i_job_flags_two_accepted_results() {
    let mut h = history();
    complete(&mut h, N1, "J1", "N1", 0, 10, 1);
    complete(&mut h, N2, "J1", "N2", 0, 20, 1);
    let v = one_outcome(&h);
    assert_eq!(broken(&v), [I_JOB.name]);
    assert!(
        v.violations[0].explanation.contains("N1 and N2"),
        "{}",
        v.explanation()
    );
}

#[test]
fn i_job_does_not_count_a_result_a_failover_lost() {
    let mut h = history();
    let tag = SchedTag::Complete {
        job: "J1".into(),
        node: "N1".into(),
        epoch: 0,
    };
    op(&mut h, N1, tag, KvReply::Int(1), 10, true);
    complete(&mut h, N1, "J1", "N1", 0, 20, 1);
    assert!(one_outcome(&h).holds());
}

#[test]
fn undelivered_jobs_break_the_liveness_half() {
    let mut h = history();
    let jobs = vec!["J1".to_string(), "J2".to_string()];
    h.notes.push(NoteRecord {
        at: Timestamp::from_ms(5),
        process: S,
        note: Note::new(SchedNote::Delivered { job: "J1".into() }),
    });
    let v = jobs_delivered(&h, &jobs);
    assert_eq!(broken(&v), [I_JOB_DELIVERED.name]);
    assert!(v.violations[0].explanation.contains("J2"));
    assert!(jobs_delivered(&h, &jobs[..1]).holds());
}

#[test]
fn i_job_does_not_count_a_result_a_redis_restart_erased() {
    let mut h = history();
    complete(&mut h, N1, "J1", "N1", 0, 10, 1);
    h.faults.push(racelab_core::FaultRecord {
        at: Timestamp::from_ms(15_000),
        fault: racelab_core::Fault::RedisRestart,
    });
    complete(&mut h, N1, "J1", "N1", 0, 20, 1);
    assert!(one_outcome(&h).holds());
    // Two results after the restart are two outcomes.
    complete(&mut h, N2, "J1", "N2", 0, 30, 1);
    assert_eq!(broken(&one_outcome(&h)), [I_JOB.name]);
}

/// The node-offline script's reply: `offline N` and one line per job it moved.
fn offline(h: &mut History, node: &str, lines: &[&str], at_s: u64) {
    let mut reply = vec![Some(format!("offline {node}"))];
    reply.extend(lines.iter().map(|l| Some(l.to_string())));
    let tag = SchedTag::Offline { node: node.into() };
    op(h, S, tag, KvReply::Array(reply), at_s, false);
}

/// The split binding (the second call after a selection).
fn split_bind(h: &mut History, job: &str, node: &str, at_s: u64) {
    let tag = SchedTag::Bind { job: job.into() };
    let reply = KvReply::Bulk(format!("bound {node} 0 0"));
    op(h, S, tag, reply, at_s, false);
}

#[test]
fn j3_flags_a_binding_that_lands_after_the_offline_script_took_the_node_out() {
    let mut h = history();
    beat(&mut h, N1, "N1", 0);
    offline(&mut h, "N1", &[], 40);
    split_bind(&mut h, "J2", "N1", 50);
    let v = offline_bindings(&h);
    assert_eq!(broken(&v), [J3.name]);
    assert!(
        v.violations[0].explanation.contains("J2") && v.violations[0].ops.len() == 2,
        "{}",
        v.explanation()
    );
}

#[test]
fn j3_accepts_a_binding_after_the_node_came_back_or_that_the_offline_script_refused() {
    let mut h = history();
    offline(&mut h, "N1", &[], 40);
    beat(&mut h, N1, "N1", 45);
    split_bind(&mut h, "J2", "N1", 50);
    // An "alive" answer took nothing offline.
    let tag = SchedTag::Offline { node: "N2".into() };
    op(
        &mut h,
        S,
        tag,
        KvReply::Array(vec![Some("alive".into())]),
        55,
        false,
    );
    split_bind(&mut h, "J3", "N2", 56);
    assert!(offline_bindings(&h).holds());
    // An offline script whose write a failover lost took nothing offline either.
    let mut h = history();
    let tag = SchedTag::Offline { node: "N1".into() };
    let reply = KvReply::Array(vec![Some("offline N1".into())]);
    op(&mut h, S, tag, reply, 40, true);
    split_bind(&mut h, "J2", "N1", 50);
    assert!(offline_bindings(&h).holds());
}

#[test]
fn f1_and_i_job_see_the_offline_scripts_re_dispatch() {
    let mut h = history();
    bind(&mut h, "J1", "N1", 0, 5);
    // The offline script moves J1 to N2; N1's late result is accepted anyway, then N2's.
    offline(&mut h, "N1", &["J1 bound N2 0 0"], 40);
    complete(&mut h, N1, "J1", "N1", 0, 57, 1);
    complete(&mut h, N2, "J1", "N2", 0, 80, 1);
    let v = fenced_results(&h).merge(one_outcome(&h));
    let mut names = broken(&v);
    names.sort();
    assert_eq!(names, [F1.name, I_JOB.name], "{}", v.explanation());
    let mut v = Verdict::default();
    coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(OFFLINE_REDISPATCHED.name), Some(&1));
}

#[test]
fn coverage_counts_a_job_the_offline_script_queued_for_want_of_a_live_node() {
    let mut h = history();
    offline(&mut h, "N1", &["J1 queued 1"], 40);
    let mut v = Verdict::default();
    coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(NO_NODE_LEFT.name), Some(&1));
    assert_eq!(v.sometimes.get(OFFLINE_REDISPATCHED.name), None);
}

// R-004-06: the timeout finalize against a late completion.

fn finalize(h: &mut History, job: &str, reply: &str, at_s: u64, lost: bool) {
    let tag = SchedTag::Finalize { job: job.into() };
    op(h, S, tag, KvReply::Bulk(reply.into()), at_s, lost);
}

fn told(h: &mut History, note: SchedNote, at_s: u64) {
    h.notes.push(NoteRecord {
        at: Timestamp::from_ms(at_s * 1000),
        process: S,
        note: Note::new(note),
    });
}

#[test]
fn j2_flags_a_result_accepted_after_the_timeout_finalize_and_the_reverse() {
    let mut h = history();
    bind(&mut h, "J1", "N1", 0, 5);
    finalize(&mut h, "J1", "timed_out N1", 605, false);
    complete(&mut h, N1, "J1", "N1", 0, 650, 1);
    let v = terminal_transitions(&h);
    assert_eq!(broken(&v), [J2.name], "{}", v.explanation());
    assert!(
        v.violations[0].explanation.contains("timeout finalize") && v.violations[0].ops.len() == 2,
        "{}",
        v.explanation()
    );
    // A result, then an unconditional finalize over it.
    let mut h = history();
    complete(&mut h, N1, "J1", "N1", 0, 600, 1);
    finalize(&mut h, "J1", "timed_out N1", 605, false);
    assert_eq!(broken(&terminal_transitions(&h)), [J2.name]);
    // Two accepted results are two terminal transitions too.
    let mut h = history();
    complete(&mut h, N1, "J1", "N1", 0, 600, 1);
    complete(&mut h, N1, "J1", "N1", 0, 700, 1);
    assert_eq!(broken(&terminal_transitions(&h)), [J2.name]);
}

#[test]
fn j2_accepts_a_refused_late_result_a_lost_finalize_and_a_finalize_that_lost_the_cas() {
    let mut h = history();
    finalize(&mut h, "J1", "timed_out", 605, false);
    complete(&mut h, N1, "J1", "N1", 1, 650, 0);
    // Another job: the result won, the finalize found it done.
    complete(&mut h, N1, "J2", "N1", 1, 600, 1);
    finalize(&mut h, "J2", "state done", 605, false);
    // A finalize whose write a failover lost never happened.
    finalize(&mut h, "J3", "timed_out N1", 605, true);
    complete(&mut h, N1, "J3", "N1", 0, 650, 1);
    let v = terminal_transitions(&h);
    assert!(v.holds(), "{}", v.explanation());
    let mut v = Verdict::default();
    finalize_coverage(&h, &mut v);
    coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(TIMED_OUT_FINALIZED.name), Some(&1));
    assert_eq!(v.sometimes.get(LATE_RESULT.name), Some(&1));
    assert_eq!(v.sometimes.get(STALE_RESULT_REFUSED.name), Some(&1));
}

#[test]
fn i_job_notified_flags_a_timeout_and_a_result_told_for_one_job() {
    let mut h = history();
    told(&mut h, SchedNote::TimedOut { job: "J1".into() }, 605);
    told(&mut h, SchedNote::Delivered { job: "J2".into() }, 300);
    assert!(notified_once(&h).holds());
    told(&mut h, SchedNote::Delivered { job: "J1".into() }, 660);
    let v = notified_once(&h);
    assert_eq!(broken(&v), [I_JOB_NOTIFIED.name]);
    assert!(
        v.violations[0].explanation.contains("J1"),
        "{}",
        v.explanation()
    );
    // A timeout is an outcome: the job counts as delivered.
    let jobs = vec!["J1".to_string(), "J2".to_string()];
    assert!(jobs_delivered(&h, &jobs).holds());
}

#[test]
fn b1_flags_a_finalize_that_found_a_running_jobs_binding_gone() {
    let mut h = history();
    finalize(&mut h, "J1", "unbound", 605, false);
    finalize(&mut h, "J2", "timed_out N1", 605, false);
    assert!(binding_lifetime(&h).holds());
    finalize(&mut h, "J3", "lost", 605, false);
    let v = binding_lifetime(&h);
    assert_eq!(broken(&v), [B1.name]);
    assert!(
        v.violations[0].explanation.contains("J3"),
        "{}",
        v.explanation()
    );
    // A lost (unkept) answer is not the store's.
    let mut h = history();
    finalize(&mut h, "J3", "lost", 605, true);
    assert!(binding_lifetime(&h).holds());
}
