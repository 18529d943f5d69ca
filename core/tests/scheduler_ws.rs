//! R-004-07's oracles fed known-bad and known-good histories: a job executed twice, a result
//! never delivered or delivered twice, a result sent on a connection the instance knew was
//! closed; and the coverage counts.

use racelab_core::scheduler::ws::{
    DELIVERED_ONCE, MOVED_INSTANCE, NO_STALE_CONNECTION, ONE_EXECUTION, RESUBMIT_DEDUPED,
    RESULT_REPLAYED, WS_JOBS, WsClient, WsNote, WsTag, delivered_once, no_stale_connection,
    one_execution, ws_coverage,
};
use racelab_core::{
    ConnId, Duration, History, Machine, Note, NoteRecord, OnConflict, OpId, OpRecord, ProcessId,
    PushOp, PushReply, Reply, Row, SqlOp, SqlReply, SqlStmt, StoreOp, Tag, Timestamp, Verdict,
};

const S1: ProcessId = ProcessId(0);
const S2: ProcessId = ProcessId(1);
const N1: ProcessId = ProcessId(2);
const C: ProcessId = ProcessId(3);

fn history() -> History {
    History {
        process_names: vec![
            (S1, "S1".into()),
            (S2, "S2".into()),
            (N1, "N1".into()),
            (C, "C".into()),
        ],
        ..History::default()
    }
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

fn note(h: &mut History, who: ProcessId, ms: u64, note: WsNote) {
    h.notes.push(NoteRecord {
        at: at(ms),
        process: who,
        note: Note::new(note),
    });
}

fn op(h: &mut History, who: ProcessId, tag: WsTag, op: StoreOp, reply: Reply, ms: u64) {
    let n = h.ops.len() as u64;
    h.ops.push(OpRecord {
        process: who,
        id: OpId(n + 1),
        tag: Tag::new(tag),
        op,
        invoked_at: at(ms),
        applied_at: Some(at(ms)),
        durable_at: Some(at(ms)),
        lost_at: None,
        result: Some(reply),
        completed_at: Some(at(ms)),
        timed_out: false,
    });
}

fn executed(h: &mut History, job: &str, ms: u64) {
    note(
        h,
        N1,
        ms,
        WsNote::Executed {
            client: "C".into(),
            request: "J1".into(),
            job: job.into(),
        },
    );
}

fn accepted(h: &mut History, job: &str, conn: u64, ms: u64) {
    note(
        h,
        C,
        ms,
        WsNote::Accepted {
            client: "C".into(),
            request: "J1".into(),
            job: job.into(),
            conn: ConnId(conn),
        },
    );
}

fn received(h: &mut History, job: &str, conn: u64, ms: u64) {
    note(
        h,
        C,
        ms,
        WsNote::Received {
            client: "C".into(),
            request: "J1".into(),
            job: job.into(),
            conn: ConnId(conn),
        },
    );
}

#[test]
fn one_execution_flags_a_job_resubmitted_under_a_new_id() {
    let mut h = history();
    executed(&mut h, "S1-0-1", 1_200);
    assert!(one_execution(&h).holds());
    executed(&mut h, "S2-0-1", 5_300);
    let v = one_execution(&h);
    assert_eq!(v.broken(), [ONE_EXECUTION.name]);
    let e = &v.violations[0].explanation;
    assert!(
        e.contains("S1-0-1") && e.contains("S2-0-1") && e.contains("2 times"),
        "{e}"
    );
}

#[test]
fn delivered_once_flags_a_dropped_result_and_a_duplicate() {
    // Accepted, never received, and dropped at S1.
    let mut h = history();
    accepted(&mut h, "C:J1", 1, 1_000);
    note(
        &mut h,
        S1,
        5_000,
        WsNote::Dropped {
            job: "C:J1".into(),
            conn: ConnId(1),
        },
    );
    let v = delivered_once(&h);
    assert_eq!(v.broken(), [DELIVERED_ONCE.name]);
    assert!(
        v.violations[0].explanation.contains("dropped"),
        "{}",
        v.explanation()
    );
    // Received once: holds.
    received(&mut h, "C:J1", 2, 6_000);
    assert!(delivered_once(&h).holds());
    // Received twice: broken.
    received(&mut h, "C:J1", 3, 7_000);
    let v = delivered_once(&h);
    assert_eq!(v.broken(), [DELIVERED_ONCE.name]);
    assert!(
        v.violations[0].explanation.contains("2 times"),
        "{}",
        v.explanation()
    );
}

fn deliver(conn: u64) -> (WsTag, StoreOp) {
    (
        WsTag::Deliver {
            client: "C".into(),
            request: "J1".into(),
            job: "S1-0-1".into(),
            conn: ConnId(conn),
        },
        StoreOp::Push(PushOp::Send {
            conn: ConnId(conn),
            message: "result J1 S1-0-1 r".into(),
        }),
    )
}

#[test]
fn no_stale_connection_flags_a_send_after_the_close_was_heard() {
    let receive = || {
        StoreOp::Push(PushOp::Receive {
            wait: Duration::from_ms(100),
        })
    };
    let mut h = history();
    // S1 hears conn-1 closed at 2 s, then sends J1's result on it at 5 s.
    op(
        &mut h,
        S1,
        WsTag::Receive,
        receive(),
        Reply::Push(PushReply::Closed { conn: ConnId(1) }),
        2_000,
    );
    // A send on another connection is fine.
    let (tag, send) = deliver(2);
    op(&mut h, S1, tag, send, Reply::Push(PushReply::Sent), 4_000);
    assert!(no_stale_connection(&h).holds());
    // S2 sending on conn-1 never heard of its close: not stale for S2.
    let (tag, send) = deliver(1);
    op(
        &mut h,
        S2,
        tag,
        send,
        Reply::Push(PushReply::Closed { conn: ConnId(1) }),
        4_500,
    );
    assert!(no_stale_connection(&h).holds());
    let (tag, send) = deliver(1);
    op(
        &mut h,
        S1,
        tag,
        send,
        Reply::Push(PushReply::Closed { conn: ConnId(1) }),
        5_000,
    );
    let v = no_stale_connection(&h);
    assert_eq!(v.broken(), [NO_STALE_CONNECTION.name]);
    assert!(
        v.violations[0].explanation.contains("S1"),
        "{}",
        v.explanation()
    );
}

#[test]
fn coverage_counts_moves_dedups_and_replays() {
    let mut h = history();
    let connect = || {
        StoreOp::Push(PushOp::Connect {
            service: "sched-ws".into(),
        })
    };
    let connected = |conn: u64, peer: ProcessId| {
        Reply::Push(PushReply::Connected {
            conn: ConnId(conn),
            peer,
        })
    };
    op(&mut h, C, WsTag::Connect, connect(), connected(1, S1), 0);
    op(
        &mut h,
        C,
        WsTag::Connect,
        connect(),
        connected(2, S1),
        1_000,
    );
    let mut v = Verdict::default();
    ws_coverage(&h, &mut v);
    assert!(!v.sometimes.contains_key(MOVED_INSTANCE.name));
    op(
        &mut h,
        C,
        WsTag::Connect,
        connect(),
        connected(3, S2),
        2_000,
    );
    let upsert = StoreOp::Sql(SqlOp::exec(SqlStmt::Upsert {
        table: WS_JOBS,
        key: "C:J1".into(),
        row: Row::new(),
        on_conflict: OnConflict::DoNothing,
    }));
    op(
        &mut h,
        S2,
        WsTag::Record { job: "C:J1".into() },
        upsert,
        Reply::Sql(SqlReply::Rows(Vec::new())),
        2_100,
    );
    accepted(&mut h, "C:J1", 1, 500);
    received(&mut h, "C:J1", 3, 6_000);
    let mut v = Verdict::default();
    ws_coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(MOVED_INSTANCE.name), Some(&1));
    assert_eq!(v.sometimes.get(RESUBMIT_DEDUPED.name), Some(&1));
    assert_eq!(v.sometimes.get(RESULT_REPLAYED.name), Some(&1));
}

/// Bad input never panics the client: unknown words, missing fields, foreign requests.
#[test]
fn the_client_ignores_malformed_messages() {
    let mut c = WsClient::new("C", &[("J1".into(), at(0))]);
    c.handle_start(at(0));
    c.handle_timeout(at(0));
    let connect = c.poll_op().expect("connects");
    c.handle_reply(
        at(1),
        connect.id,
        Reply::Push(PushReply::Connected {
            conn: ConnId(1),
            peer: S1,
        }),
    );
    let submit = c.poll_op().expect("submits");
    c.handle_reply(at(2), submit.id, Reply::Push(PushReply::Sent));
    for payload in ["", "result", "accepted J9 x", "result J1", "unknown", "  "] {
        let r = c.poll_op().expect("receives");
        c.handle_reply(
            at(3),
            r.id,
            Reply::Push(PushReply::Message {
                conn: ConnId(1),
                payload: payload.into(),
            }),
        );
    }
    assert!(c.poll_note().is_none());
}

/// R-004-04's coverage: a crash of an instance that restarts, between the client's
/// submission and its receiving the result, is counted once per job; the result's arrival on
/// a connection opened after the crash is counted too; a crash outside the job's flight, or
/// one with no restart, or of a process that is not an instance, is not.
#[test]
fn restart_coverage_counts_a_crash_in_flight_and_a_result_after_it() {
    use racelab_core::scheduler::restart::{
        RESTART_IN_FLIGHT, RESULT_AFTER_RESTART, restart_coverage,
    };
    use racelab_core::{Fault, FaultRecord};

    let instances = ["S1", "S2"];
    let counted = |h: &History| {
        let mut v = Verdict::default();
        restart_coverage(h, &instances, &mut v);
        (
            v.sometimes.get(RESTART_IN_FLIGHT.name).copied(),
            v.sometimes.get(RESULT_AFTER_RESTART.name).copied(),
        )
    };
    let fault = |h: &mut History, ms: u64, fault: Fault| {
        h.faults.push(FaultRecord { at: at(ms), fault });
    };
    let mut h = history();
    let connect = StoreOp::Push(PushOp::Connect {
        service: "sched-ws".into(),
    });
    let connected = |conn: u64, peer: ProcessId| {
        Reply::Push(PushReply::Connected {
            conn: ConnId(conn),
            peer,
        })
    };
    op(
        &mut h,
        C,
        WsTag::Connect,
        connect.clone(),
        connected(1, S1),
        0,
    );
    let submit = StoreOp::Push(PushOp::Send {
        conn: ConnId(1),
        message: "submit C J1 C:J1".into(),
    });
    let tag = WsTag::Submit {
        request: "J1".into(),
    };
    op(&mut h, C, tag, submit, Reply::Push(PushReply::Sent), 1_000);
    accepted(&mut h, "C:J1", 1, 1_050);
    // A crash before the submission, one of a process that is not an instance, and one
    // never followed by a restart: none counts.
    fault(&mut h, 500, Fault::Crash { process: S1 });
    fault(&mut h, 600, Fault::Restart { process: S1 });
    fault(&mut h, 2_000, Fault::Crash { process: N1 });
    fault(&mut h, 2_100, Fault::Restart { process: N1 });
    fault(&mut h, 3_000, Fault::Crash { process: S2 });
    received(&mut h, "C:J1", 1, 6_000);
    assert_eq!(counted(&h), (None, None));
    // S1 crashes in the job's flight and restarts; the result still came on the old
    // connection (before any reconnect): in flight, not after.
    let mut h2 = history();
    h2.ops = h.ops.clone();
    h2.notes = h.notes.clone();
    fault(&mut h2, 2_000, Fault::Crash { process: S1 });
    fault(&mut h2, 3_000, Fault::Restart { process: S1 });
    assert_eq!(counted(&h2), (Some(1), None));
    // The result arrives on a connection opened after the crash.
    let mut h3 = history();
    h3.ops = h.ops.clone();
    h3.faults = h2.faults.clone();
    op(&mut h3, C, WsTag::Connect, connect, connected(2, S2), 2_500);
    accepted(&mut h3, "C:J1", 1, 1_050);
    received(&mut h3, "C:J1", 2, 6_000);
    assert_eq!(counted(&h3), (Some(1), Some(1)));
}
