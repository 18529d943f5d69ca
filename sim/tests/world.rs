//! The explore world's fault semantics, checked directly with a tiny scripted machine that
//! sends a fixed list of operations one after another and keeps the replies it gets.

use racelab_core::workorder::WORK_ORDERS;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use racelab_core::{
    Assign, Cond, Duration, Fault, KvOp, KvReply, Machine, Note, OpId, Outgoing, ProcessId, Reply,
    Row, SetCondition, SqlOp, SqlReply, SqlStmt, StoreId, StoreOp, Tag, TagKind, Timestamp, Value,
};
use racelab_sim::explore::{
    Action, FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Scheduler, Step, Target,
    WorldSpec, run,
};

const TX: TagKind = TagKind::new("tx");
const FETCH: TagKind = TagKind::new("fetch");

type Replies = Rc<RefCell<Vec<(Timestamp, Reply)>>>;

/// Sends `ops` in order, each after the previous one's reply; `gap` between them.
struct Scripted {
    ops: Vec<(StoreOp, Tag)>,
    next: usize,
    waiting: Option<OpId>,
    wake_at: Option<Timestamp>,
    gap: Duration,
    out: Vec<Outgoing>,
    replies: Replies,
}

impl Scripted {
    fn send_next(&mut self) {
        if let Some((op, tag)) = self.ops.get(self.next).cloned() {
            self.next += 1;
            let id = OpId(self.next as u64);
            self.waiting = Some(id);
            self.out.push(Outgoing { id, op, tag });
        }
    }
}

impl Machine for Scripted {
    fn handle_start(&mut self, _now: Timestamp) {
        self.send_next();
    }
    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        if self.waiting == Some(op) {
            self.waiting = None;
            self.replies.borrow_mut().push((now, reply));
            self.wake_at = Some(now + self.gap);
        }
    }
    fn handle_timeout(&mut self, now: Timestamp) {
        if self.wake_at.is_some_and(|t| t <= now) {
            self.wake_at = None;
            self.send_next();
        }
    }
    fn poll_op(&mut self) -> Option<Outgoing> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }
    fn poll_note(&mut self) -> Option<Note> {
        None
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.wake_at
    }
    fn is_idle(&self) -> bool {
        self.waiting.is_none() && self.wake_at.is_none() && self.next >= self.ops.len()
    }
}

fn process(name: &str, ops: Vec<(StoreOp, Tag)>, gap: Duration) -> (ProcessSpec, Replies) {
    let replies: Replies = Rc::default();
    let r = replies.clone();
    let spec = ProcessSpec {
        host: 0,
        name: name.into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(Scripted {
                ops: ops.clone(),
                next: 0,
                waiting: None,
                wake_at: None,
                gap,
                out: Vec::new(),
                replies: r.clone(),
            }) as Box<dyn Machine>
        }),
    };
    (spec, replies)
}

fn world(processes: Vec<ProcessSpec>) -> WorldSpec {
    WorldSpec {
        local: None,
        upstream: Default::default(),
        processes,
        sql_rows: vec![(
            WORK_ORDERS,
            "wo-1".into(),
            Row::from([("qty".to_string(), Value::Int(0))]),
        )],
        net: NetConfig::default(),
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(600_000),
    }
}

fn sql(op: SqlOp) -> (StoreOp, Tag) {
    (StoreOp::Sql(op), Tag::plain(TX))
}

fn add_qty(n: i64) -> SqlOp {
    SqlOp::Exec(SqlStmt::Update {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        guard: Cond::True,
        set: vec![Assign::Add {
            column: "qty".into(),
            delta: n,
        }],
    })
}

fn scripted(steps: Vec<Step>) -> Scheduler {
    Scheduler::Scripted {
        name: "test".into(),
        steps,
    }
}

fn qty(run: &racelab_sim::explore::Run) -> Option<Value> {
    run.row(WORK_ORDERS, "wo-1")
        .and_then(|r| r.get("qty").cloned())
}

#[test]
fn a_crash_inside_a_transaction_rolls_it_back() {
    let ops = vec![sql(SqlOp::Begin), sql(add_qty(5)), sql(SqlOp::Commit)];
    let (p, replies) = process("P", ops, Duration::from_secs(1));
    let steps = vec![Step::at(
        1_500,
        Action::Crash {
            process: "P".into(),
            restart_after: None,
        },
    )];
    let r = run(world(vec![p]), &scripted(steps));
    assert_eq!(
        qty(&r),
        Some(Value::Int(0)),
        "the uncommitted +5 was rolled back"
    );
    assert_eq!(
        replies.borrow().len(),
        2,
        "BEGIN and the UPDATE answered before the crash"
    );
    assert!(
        r.history
            .faults
            .iter()
            .any(|f| matches!(f.fault, Fault::Crash { .. }))
    );
    assert!(r.quiescent);
}

#[test]
fn a_lost_reply_is_applied_and_surfaces_as_the_drivers_timeout() {
    let set = KvOp::Set {
        key: "k".into(),
        value: "v".into(),
        condition: SetCondition::Always,
        ttl: None,
    };
    let get = KvOp::Get { key: "k".into() };
    let ops = vec![
        (StoreOp::Kv(set), Tag::plain(FETCH)),
        (StoreOp::Kv(get), Tag::plain(FETCH)),
    ];
    let (p, replies) = process("P", ops, Duration::ZERO);
    let steps = vec![Step::on("P", FETCH, 1, OpEffect::DropReply)];
    let r = run(world(vec![p]), &scripted(steps));
    let replies = replies.borrow();
    assert_eq!(
        replies[0],
        (Timestamp::from_ms(5_000), Reply::Timeout),
        "after the 5 s Redis timeout"
    );
    assert_eq!(
        replies[1].1,
        Reply::Kv(KvReply::Bulk("v".into())),
        "but the SET was applied"
    );
    assert!(r.history.ops[0].timed_out && r.history.ops[0].result == Some(Reply::Kv(KvReply::Ok)));
}

#[test]
fn a_pause_holds_the_send_and_the_timers() {
    let ops = vec![sql(add_qty(1)), sql(add_qty(1))];
    let (p, replies) = process("P", ops, Duration::from_ms(100));
    let steps = vec![Step::on(
        "P",
        TX,
        2,
        OpEffect::PauseBeforeSend(Duration::from_secs(10)),
    )];
    let r = run(world(vec![p]), &scripted(steps));
    let second = r.history.ops[1].applied_at.expect("applied");
    assert!(
        second >= Timestamp::from_ms(10_000),
        "sent only after the pause: {second}"
    );
    assert_eq!(replies.borrow().len(), 2);
    assert_eq!(qty(&r), Some(Value::Int(2)));
}

#[test]
fn a_partition_drops_requests_until_it_heals() {
    let ops = vec![sql(add_qty(1)), sql(add_qty(1))];
    let (p, replies) = process("P", ops, Duration::ZERO);
    let steps = vec![
        Step::at(
            0,
            Action::Partition {
                process: "P".into(),
                store: racelab_core::StoreId::Sql,
            },
        ),
        Step::at(
            20_000,
            Action::Heal {
                process: "P".into(),
                store: racelab_core::StoreId::Sql,
            },
        ),
    ];
    let r = run(world(vec![p]), &scripted(steps));
    assert_eq!(
        replies.borrow()[0],
        (Timestamp::from_ms(30_000), Reply::Timeout),
        "the SQL timeout"
    );
    assert!(
        r.history.ops[0].applied_at.is_none(),
        "the first request never arrived"
    );
    assert_eq!(
        qty(&r),
        Some(Value::Int(1)),
        "the request sent after the heal (at 30 s) applied"
    );
}

#[test]
fn a_blocked_statement_waits_for_the_other_sessions_commit() {
    let holder = vec![sql(SqlOp::Begin), sql(add_qty(1)), sql(SqlOp::Commit)];
    let waiter = vec![sql(add_qty(10))];
    let (a, _) = process("A", holder, Duration::from_secs(2));
    let (b, b_replies) = process("B", waiter, Duration::ZERO);
    let mut spec = world(vec![a, b]);
    // A holds the row lock from about 2 s (its UPDATE) to about 4 s (its COMMIT).
    spec.processes[1].start_at = Timestamp::from_ms(3_000);
    let r = run(spec, &scripted(vec![]));
    let (at, reply) = b_replies.borrow()[0].clone();
    assert!(
        at >= Timestamp::from_ms(4_000),
        "B waited for A's commit at about 4 s, got {at}"
    );
    assert!(matches!(reply, Reply::Sql(SqlReply::Rows(ref rows)) if rows.len() == 1));
    assert_eq!(qty(&r), Some(Value::Int(11)));
}

#[test]
fn random_runs_are_reproducible_and_record_their_faults() {
    let ops: Vec<_> = (0..20).map(|_| sql(add_qty(1))).collect();
    let faults = FaultProfile {
        window: Duration::from_secs(600),
        drop_reply: racelab_sim::explore::Ratio::per_mille(200),
        ..FaultProfile::quiet()
    };
    let make = || {
        let (p, _) = process("P", ops.clone(), Duration::from_ms(10));
        world(vec![p])
    };
    let sched = Scheduler::Random { seed: 9, faults };
    let (a, b) = (run(make(), &sched), run(make(), &sched));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(
        !a.injected.is_empty(),
        "a 20% drop rate over 20 operations injected something"
    );
    assert_eq!(a.injected.len(), a.history.faults.len());
}

fn set(key: &str) -> StoreOp {
    StoreOp::Kv(KvOp::Set {
        key: key.into(),
        value: "v".into(),
        condition: SetCondition::Always,
        ttl: None,
    })
}

/// Every per-operation fault, each at about one operation in three (crashes one in ten),
/// within a minute.
fn every_fault() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        pause: Ratio::per_mille(300),
        pause_len: (Duration::from_secs(1), Duration::from_secs(5)),
        delay: Ratio::per_mille(300),
        delay_len: (Duration::from_secs(1), Duration::from_secs(5)),
        drop_reply: Ratio::per_mille(300),
        crash: Ratio::per_mille(100),
        failover: Ratio::per_mille(300),
        ..FaultProfile::quiet()
    }
}

/// The processes the faults of a run strike: those of its injected steps.
fn struck(r: &racelab_sim::explore::Run) -> BTreeSet<String> {
    r.injected
        .iter()
        .map(|s| match s {
            Step::On { process, .. } => process.clone(),
            Step::At { action, .. } => action.to_string(),
        })
        .collect()
}

#[test]
fn a_fault_aimed_at_one_process_never_strikes_the_other() {
    let only_p = Target::processes(&["P"]);
    let faults = FaultProfile {
        pause_on: only_p.clone(),
        delay_on: only_p.clone(),
        drop_reply_on: only_p.clone(),
        crash_on: only_p.clone(),
        failover_on: only_p,
        ..every_fault()
    };
    let make = || {
        let ops: Vec<_> = (0..20).map(|_| (set("k"), Tag::plain(FETCH))).collect();
        let (p, _) = process("P", ops.clone(), Duration::from_ms(100));
        let (q, _) = process("Q", ops, Duration::from_ms(100));
        world(vec![p, q])
    };
    for seed in 0..20 {
        let r = run(
            make(),
            &Scheduler::Random {
                seed,
                faults: faults.clone(),
            },
        );
        assert_eq!(struck(&r), BTreeSet::from(["P".to_string()]), "seed {seed}");
        let q = ProcessId(1);
        assert!(r.history.faults.iter().all(|f| match f.fault {
            Fault::Pause { process, .. }
            | Fault::Crash { process }
            | Fault::Restart { process }
            | Fault::Delay { process, .. }
            | Fault::DropReply { process, .. } => process != q,
            _ => true,
        }));
    }
    // Unaimed, the same profile strikes both.
    let r = run(
        make(),
        &Scheduler::Random {
            seed: 0,
            faults: every_fault(),
        },
    );
    assert_eq!(struck(&r).len(), 2, "{:?}", r.injected);
}

#[test]
fn a_fault_aimed_at_a_store_and_a_kind_strikes_only_those_operations() {
    let faults = FaultProfile {
        window: Duration::from_secs(60),
        drop_reply: Ratio::per_mille(500),
        drop_reply_on: Target {
            stores: vec![StoreId::Sql],
            kinds: vec![TX],
            ..Target::ANY
        },
        ..FaultProfile::quiet()
    };
    // Alternately: a Redis write of kind TX, a SQL update of kind TX, one of kind FETCH.
    let ops: Vec<_> = (0..10)
        .flat_map(|_| {
            [
                (set("k"), Tag::plain(TX)),
                sql(add_qty(1)),
                (StoreOp::Sql(add_qty(1)), Tag::plain(FETCH)),
            ]
        })
        .collect();
    let (p, _) = process("P", ops, Duration::from_ms(10));
    let r = run(world(vec![p]), &Scheduler::Random { seed: 3, faults });
    assert!(!r.injected.is_empty());
    for step in &r.injected {
        assert!(matches!(step, Step::On { kind, effect: OpEffect::DropReply, .. } if *kind == TX));
    }
    for f in &r.history.faults {
        let Fault::DropReply { op, .. } = f.fault else {
            panic!("only lost replies: {f:?}");
        };
        let record = r.history.ops.iter().find(|o| o.id == op).expect("the op");
        assert_eq!(record.op.store(), StoreId::Sql);
        assert_eq!(record.tag.kind(), TX);
    }
}

/// One planned pause of 60 s within the first 50 s: it covers the moment P's timer was due.
fn pause_at_a_time() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(50),
        pause_len: (Duration::from_secs(60), Duration::from_secs(60)),
        pauses_at: 1,
        ..FaultProfile::quiet()
    }
}

#[test]
fn a_pause_at_a_time_holds_a_timer_driven_operation() {
    // P sends its second update 60 s after the first one's reply, on its timer.
    let make = || {
        let (p, _) = process(
            "P",
            vec![sql(add_qty(1)), sql(add_qty(1))],
            Duration::from_secs(60),
        );
        world(vec![p])
    };
    let seed = 1;
    let paused = run(
        make(),
        &Scheduler::Random {
            seed,
            faults: pause_at_a_time(),
        },
    );
    let Some(Step::At {
        at,
        action: Action::Pause { process, duration },
    }) = paused.injected.first().cloned()
    else {
        panic!(
            "a planned pause is injected as a step at its time: {:?}",
            paused.injected
        );
    };
    assert_eq!((process.as_str(), paused.injected.len()), ("P", 1));
    let first_reply = paused.history.ops[0].completed_at.expect("answered");
    assert!(
        at > first_reply,
        "the pause began while P waited for its timer ({at}, reply at {first_reply})"
    );
    let second = paused.history.ops[1].invoked_at;
    assert_eq!(second, at + duration, "sent as the pause ended");
    let unpaused = FaultProfile {
        pauses_at: 0,
        ..pause_at_a_time()
    };
    let plain = run(
        make(),
        &Scheduler::Random {
            seed,
            faults: unpaused,
        },
    );
    assert!(plain.history.ops[1].invoked_at < second);
    assert_eq!(qty(&paused), Some(Value::Int(2)));
    assert!(
        paused
            .history
            .faults
            .iter()
            .any(|f| matches!(f.fault, Fault::Pause { .. }))
    );
}

#[test]
fn pinning_the_injected_steps_reproduces_a_run_with_planned_pauses() {
    let faults = FaultProfile {
        pauses_at: 3,
        pause_len: (Duration::from_secs(1), Duration::from_secs(20)),
        drop_reply: Ratio::per_mille(200),
        ..every_fault()
    };
    let make = || {
        let ops: Vec<_> = (0..20).map(|_| sql(add_qty(1))).collect();
        let (p, _) = process("P", ops.clone(), Duration::from_secs(2));
        let (q, _) = process("Q", ops, Duration::from_secs(3));
        world(vec![p, q])
    };
    let seed = 5;
    let original = run(
        make(),
        &Scheduler::Random {
            seed,
            faults: faults.clone(),
        },
    );
    let planned = original
        .injected
        .iter()
        .filter(|s| {
            matches!(
                s,
                Step::At {
                    action: Action::Pause { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(planned, 3);
    let pinned = Scheduler::Pinned {
        seed,
        latency: faults.latency,
        steps: original.injected.clone(),
    };
    let (a, b) = (run(make(), &pinned), run(make(), &pinned));
    assert_eq!(a.history, original.history);
    assert_eq!(a.sql_rows, original.sql_rows);
    assert_eq!(a.trace_hash, b.trace_hash);
}

/// A process that wakes every millisecond forever and is never idle.
struct Spinner {
    next: Timestamp,
}

impl Machine for Spinner {
    fn handle_start(&mut self, now: Timestamp) {
        self.next = now + Duration::from_ms(1);
    }
    fn handle_reply(&mut self, _: Timestamp, _: OpId, _: Reply) {}
    fn handle_timeout(&mut self, now: Timestamp) {
        self.next = now + Duration::from_ms(1);
    }
    fn poll_op(&mut self) -> Option<Outgoing> {
        None
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        Some(self.next)
    }
    fn is_idle(&self) -> bool {
        false
    }
}

fn spinner_world(time_limit_ms: u64) -> WorldSpec {
    let spinner = ProcessSpec {
        host: 0,
        name: "S".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: Box::new(|_| {
            Box::new(Spinner {
                next: Timestamp::ZERO,
            }) as Box<dyn Machine>
        }),
    };
    WorldSpec {
        time_limit: Timestamp::from_ms(time_limit_ms),
        ..world(vec![spinner])
    }
}

#[test]
fn a_run_stopped_by_the_time_limit_says_so_and_names_the_busy_process() {
    let run = run(
        spinner_world(1_000),
        &Scheduler::Scripted {
            name: "t".into(),
            steps: Vec::new(),
        },
    );
    assert!(!run.quiescent);
    assert!(
        run.unsettled[0].contains("the time limit"),
        "{:?}",
        run.unsettled
    );
    assert!(
        run.unsettled.iter().any(|u| u == "S busy"),
        "{:?}",
        run.unsettled
    );
}

#[test]
fn a_run_stopped_by_run_events_max_says_so() {
    // One event a millisecond for longer than RUN_EVENTS_MAX milliseconds.
    let limit = racelab_sim::explore::RUN_EVENTS_MAX + 10;
    let run = run(
        spinner_world(limit),
        &Scheduler::Scripted {
            name: "t".into(),
            steps: Vec::new(),
        },
    );
    assert!(!run.quiescent);
    assert_eq!(run.stats.events, racelab_sim::explore::RUN_EVENTS_MAX);
    assert!(
        run.unsettled[0].contains("RUN_EVENTS_MAX"),
        "{:?}",
        run.unsettled
    );
}

#[test]
fn every_run_of_these_tests_leaves_a_well_formed_history() {
    let get = StoreOp::Kv(KvOp::Get { key: "k".into() });
    let (p, _) = process("P", vec![(get, Tag::plain(FETCH))], Duration::ZERO);
    let run = run(
        world(vec![p]),
        &Scheduler::Scripted {
            name: "t".into(),
            steps: Vec::new(),
        },
    );
    assert!(run.quiescent, "{:?}", run.unsettled);
    assert!(run.unsettled.is_empty());
    run.history.check_well_formed().expect("well formed");
}
