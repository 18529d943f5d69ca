//! The explore world's fault semantics, checked directly with a tiny scripted machine that
//! sends a fixed list of operations one after another and keeps the replies it gets.

use racelab_core::workorder::WORK_ORDERS;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use racelab_core::{
    Assign, CallKind, Cond, Duration, EndpointId, Fault, KvOp, KvReply, Machine, Note, OpId,
    Outgoing, ProcessId, Reply, RequestId, Row, SetCondition, SqlOp, SqlReply, SqlStmt, StoreId,
    StoreOp, StreamId, StreamReply, Tag, TagKind, Timestamp, UpstreamOp, Usage, Value,
};
use racelab_sim::explore::{
    Action, EndpointScript, FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Scheduler, Step,
    StreamScript, Target, Upstream, WorldSpec, run,
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
        horizon: None,
    }
}

fn sql(op: SqlOp) -> (StoreOp, Tag) {
    (StoreOp::Sql(op), Tag::plain(TX))
}

fn add_qty(n: i64) -> SqlOp {
    SqlOp::exec(SqlStmt::Update {
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
    assert_eq!(a.trace_hash(), b.trace_hash());
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
    assert_eq!(a.trace_hash(), b.trace_hash());
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
        horizon: None,
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

/// A Redis write is durable when the replica has it (the world's replication lag after it
/// was applied); a failover or restart before then loses it, and the history says so.
#[test]
fn a_redis_write_is_durable_at_the_replica_and_lost_in_a_failover_before() {
    for (action, fault) in [
        (Action::Failover, Fault::Failover),
        (Action::RedisRestart, Fault::RedisRestart),
    ] {
        let get = StoreOp::Kv(KvOp::Get { key: "b".into() });
        let (a, replies) = process(
            "A",
            vec![
                (set("a"), Tag::plain(TX)),
                (set("b"), Tag::plain(TX)),
                (get, Tag::plain(TX)),
                (StoreOp::Kv(KvOp::Get { key: "a".into() }), Tag::plain(TX)),
            ],
            Duration::from_ms(100),
        );
        // Latency 1 ms, lag 50 ms: `a` applied at 1 ms (replicated at 51 ms), `b` at 103 ms,
        // the first GET at 205 ms; the fault at 120 ms, before `b` reached the replica.
        let steps = vec![Step::At {
            at: Timestamp::from_ms(120),
            action: action.clone(),
        }];
        let r = run(world(vec![a]), &scripted(steps));
        assert!(r.quiescent, "{:?}", r.unsettled);
        let ops = &r.history.ops;
        assert_eq!(ops[0].applied_at, Some(Timestamp::from_ms(1)));
        assert_eq!(
            ops[0].durable_at,
            Some(Timestamp::from_ms(51)),
            "{action:?}"
        );
        assert!(ops[0].accepted() && ops[0].lost_at.is_none());
        assert_eq!(ops[1].applied_at, Some(Timestamp::from_ms(103)));
        assert!(ops[1].succeeded(), "the primary answered OK");
        assert_eq!(ops[1].lost_at, Some(Timestamp::from_ms(120)), "{action:?}");
        assert_eq!(ops[1].durable_at, None);
        assert!(!ops[1].accepted(), "a lost write was never accepted");
        assert_eq!(
            replies.borrow()[2].1,
            Reply::Kv(KvReply::Nil),
            "{action:?}: b is gone"
        );
        // A failover keeps the replicated `a` (a restart wipes it too); a read of it is
        // durable where it was applied.
        if fault == Fault::Failover {
            assert!(ops[3].succeeded());
            assert_eq!(ops[3].durable_at, ops[3].applied_at);
        } else {
            assert_eq!(replies.borrow()[3].1, Reply::Kv(KvReply::Nil));
        }
        assert_eq!(r.history.faults[0].fault, fault);
        let text: Vec<String> = r
            .history
            .timeline()
            .iter()
            .map(|s| r.history.render_step(s))
            .collect();
        assert!(
            text.iter()
                .any(|l| l.contains("write lost at 00:00.120: never replicated")),
            "{text:#?}"
        );
    }
    // Without a fault, the last write becomes durable a lag after it was applied, even after
    // the run ended.
    let (a, _) = process("A", vec![(set("a"), Tag::plain(TX))], Duration::ZERO);
    let r = run(world(vec![a]), &scripted(Vec::new()));
    assert_eq!(r.history.ops[0].durable_at, Some(Timestamp::from_ms(51)));
    assert!(r.ended_at < Timestamp::from_ms(51));
}

/// Sends a SET every `every`, forever: a workload that never quiesces.
struct Heartbeat {
    every: Duration,
    next_at: Option<Timestamp>,
    beats: u64,
    waiting: Option<OpId>,
    out: Vec<Outgoing>,
}

impl Machine for Heartbeat {
    fn handle_start(&mut self, now: Timestamp) {
        self.next_at = Some(now);
    }
    fn handle_reply(&mut self, _now: Timestamp, op: OpId, _reply: Reply) {
        if self.waiting == Some(op) {
            self.waiting = None;
        }
    }
    fn handle_timeout(&mut self, now: Timestamp) {
        if self.next_at.is_some_and(|t| t <= now) {
            self.beats += 1;
            let id = OpId(self.beats);
            self.waiting = Some(id);
            self.out.push(Outgoing {
                id,
                op: set("heartbeat"),
                tag: Tag::plain(TX),
            });
            self.next_at = Some(now + self.every);
        }
    }
    fn poll_op(&mut self) -> Option<Outgoing> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_at
    }
    fn is_idle(&self) -> bool {
        false
    }
}

fn heartbeat_world(horizon: Option<Timestamp>) -> WorldSpec {
    let spec = ProcessSpec {
        host: 0,
        name: "N".into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(|_| {
            Box::new(Heartbeat {
                every: Duration::from_secs(1),
                next_at: None,
                beats: 0,
                waiting: None,
                out: Vec::new(),
            }) as Box<dyn Machine>
        }),
    };
    WorldSpec {
        horizon,
        time_limit: Timestamp::from_ms(60_000),
        ..world(vec![spec])
    }
}

#[test]
fn a_run_with_a_horizon_stops_its_timers_there_and_drains_what_is_in_flight() {
    // Without a horizon a heartbeat never quiesces: the time limit makes it stuck.
    let r = run(heartbeat_world(None), &scripted(Vec::new()));
    assert!(!r.quiescent && r.horizon.is_none());
    assert!(r.unsettled[0].contains("time limit"), "{:?}", r.unsettled);

    // With one at 10 s: beats at 0, 1, ..., 9 s, then nothing is left in flight.
    let horizon = Timestamp::from_ms(10_000);
    let r = run(heartbeat_world(Some(horizon)), &scripted(Vec::new()));
    assert!(r.quiescent, "{:?}", r.unsettled);
    assert_eq!(r.horizon, Some(horizon));
    assert_eq!(r.history.ops.len(), 10);
    assert_eq!(r.ended_at, horizon);

    // The tenth beat (sent at 9 s) is delayed 1.5 s: the run drains it past the horizon, its
    // reply delivered, and no timer fires meanwhile.
    let delayed = vec![Step::On {
        process: "N".into(),
        kind: TX,
        nth: 10,
        effect: OpEffect::Delay(Duration::from_ms(1_500)),
    }];
    let r = run(heartbeat_world(Some(horizon)), &scripted(delayed.clone()));
    assert!(r.quiescent, "{:?}", r.unsettled);
    assert_eq!(r.horizon, Some(horizon));
    assert_eq!(r.history.ops.len(), 10, "no beat after the horizon");
    let last = &r.history.ops[9];
    assert_eq!(last.completed_at, Some(Timestamp::from_ms(10_502)));
    assert_eq!(r.ended_at, Timestamp::from_ms(10_502));

    // No fault after the horizon: a crash planned there does not happen.
    let mut late_crash = delayed;
    late_crash.push(Step::At {
        at: Timestamp::from_ms(10_200),
        action: Action::Crash {
            process: "N".into(),
            restart_after: None,
        },
    });
    let r = run(heartbeat_world(Some(horizon)), &scripted(late_crash));
    assert!(
        r.history.faults.iter().all(|f| f.at < horizon),
        "{:?}",
        r.history.faults
    );

    // A drain that cannot finish before the time limit is stuck, and says it was draining.
    let stuck = WorldSpec {
        time_limit: Timestamp::from_ms(10_300),
        ..heartbeat_world(Some(horizon))
    };
    let delayed = vec![Step::On {
        process: "N".into(),
        kind: TX,
        nth: 10,
        effect: OpEffect::Delay(Duration::from_ms(1_500)),
    }];
    let r = run(stuck, &scripted(delayed));
    assert!(!r.quiescent && r.horizon.is_none());
    assert!(
        r.unsettled
            .iter()
            .any(|u| u.contains("draining after the horizon 00:10.000")),
        "{:?}",
        r.unsettled
    );
}

/// Each process draws from its own stream, derived from the run's seed, the process and its
/// incarnation; every draw is an operation in the history and a decision of the run.
#[test]
fn each_process_draws_from_its_own_seeded_stream_recorded_in_the_history() {
    use racelab_core::RandomOp;
    use racelab_sim::explore::DecisionKind;
    let draw = || (StoreOp::Random(RandomOp::Below(1_000_000)), Tag::plain(TX));
    let make = || {
        let (a, ra) = process("A", vec![draw(), draw(), draw()], Duration::from_ms(10));
        let (b, rb) = process("B", vec![draw(), draw(), draw()], Duration::from_ms(10));
        (world(vec![a, b]), ra, rb)
    };
    let values = |r: &Replies| -> Vec<u64> {
        r.borrow()
            .iter()
            .map(|(_, reply)| match reply {
                Reply::Random(v) => *v,
                other => panic!("a draw answered {other:?}"),
            })
            .collect()
    };
    let sched = |seed| Scheduler::Random {
        seed,
        faults: FaultProfile::quiet(),
    };
    let (spec, ra, rb) = make();
    let run1 = run(spec, &sched(5));
    let (a1, b1) = (values(&ra), values(&rb));
    assert_eq!(a1.len(), 3);
    assert_ne!(a1, b1, "two processes, two streams");
    assert!(a1.iter().chain(&b1).all(|v| *v < 1_000_000));
    // Recorded: each draw is an operation with its value, and a decision of the run.
    let recorded: Vec<u64> = run1
        .history
        .ops
        .iter()
        .filter(|o| o.process == ProcessId(0))
        .map(|o| match o.result {
            Some(Reply::Random(v)) => v,
            _ => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(recorded, a1);
    let decided: Vec<u64> = run1
        .decisions
        .iter()
        .filter(|d| d.kind == DecisionKind::ProcessRandom)
        .map(|d| d.value)
        .collect();
    assert_eq!(decided.len(), 6);
    assert!(a1.iter().all(|v| decided.contains(v)));
    // Same seed, same draws; another seed, others.
    let (spec, ra, _) = make();
    let run2 = run(spec, &sched(5));
    assert_eq!(values(&ra), a1);
    assert_eq!(run1.trace_hash(), run2.trace_hash());
    let (spec, ra, _) = make();
    run(spec, &sched(6));
    assert_ne!(values(&ra), a1);
    // A restarted process reseeds: after a crash right after its first draw, A's second
    // incarnation starts its stream anew, unlike the first one's continuation.
    let crash = vec![Step::On {
        process: "A".into(),
        kind: TX,
        nth: 1,
        effect: OpEffect::CrashAfterApply {
            restart_after: Some(Duration::from_ms(5)),
        },
    }];
    let (spec, ra, _) = make();
    let pinned = Scheduler::Pinned {
        seed: 5,
        latency: FaultProfile::quiet().latency,
        steps: crash,
    };
    let r = run(spec, &pinned);
    assert!(r.quiescent, "{:?}", r.unsettled);
    let after = values(&ra);
    assert_eq!(after.len(), 3, "the second incarnation drew three times");
    assert_ne!(after, a1[1..].to_vec());
}

/// A process's clock may be skewed: it reads `t + offset + t * rate`, its timers fire when
/// its own clock reaches them, the stores keep true time, and the timeline shows both.
#[test]
fn a_skewed_clock_moves_a_process_timers_and_the_timeline_shows_both_times() {
    use racelab_core::ClockSkew;
    let horizon = Timestamp::from_ms(10_000);
    // 10% fast, from the start: beats when N's clock reads 0, 1, 2, ... s, i.e. true times
    // 0, 910, 1819, ...: eleven of them before the horizon instead of ten.
    let fast = ClockSkew::new(0, 100_000).expect("within bounds");
    let steps = vec![Step::At {
        at: Timestamp::ZERO,
        action: Action::Clock {
            process: "N".into(),
            skew: fast,
        },
    }];
    let r = run(heartbeat_world(Some(horizon)), &scripted(steps));
    assert!(r.quiescent, "{:?}", r.unsettled);
    let sent: Vec<u64> = r.history.ops.iter().map(|o| o.invoked_at.as_ms()).collect();
    assert_eq!(sent.len(), 11, "{sent:?}");
    // Each beat is due one second on N's clock after what the clock read at the last one.
    let mut due = Timestamp::ZERO;
    for (k, at) in sent.iter().enumerate() {
        let fired = fast.true_time_of(due);
        assert_eq!(*at, fired.as_ms(), "beat {k}");
        due = fast.read(fired) + Duration::from_secs(1);
    }
    assert_eq!(
        r.history.faults[0].fault,
        Fault::Clock {
            process: ProcessId(0),
            skew: fast
        }
    );
    let text: Vec<String> = r
        .history
        .timeline()
        .iter()
        .map(|s| r.history.render_step(s))
        .collect();
    // The last beat, sent at true 00:09.100, is the one N's clock read as 00:10.010.
    assert!(
        text.iter()
            .any(|l| l.contains("00:09.100  [N's clock 00:10.010]  N    SET")),
        "{text:#?}"
    );

    // Drawn from the profile within its bounds, recorded as a fault, pinned with the rest.
    let faults = FaultProfile {
        clock_offset: Duration::from_secs(2),
        clock_rate_ppm: 50_000,
        ..FaultProfile::quiet()
    };
    let random = Scheduler::Random {
        seed: 3,
        faults: faults.clone(),
    };
    let original = run(heartbeat_world(Some(horizon)), &random);
    let skew = match original.history.faults.first().map(|f| &f.fault) {
        Some(Fault::Clock { skew, .. }) => *skew,
        other => panic!("no clock fault: {other:?}"),
    };
    assert!(
        skew.offset_ms.abs() <= 2_000 && skew.rate_ppm.abs() <= 50_000,
        "{skew}"
    );
    assert_ne!(skew, ClockSkew::NONE);
    let pinned = Scheduler::Pinned {
        seed: 3,
        latency: faults.latency,
        steps: original.injected.clone(),
    };
    assert_eq!(
        run(heartbeat_world(Some(horizon)), &pinned).history,
        original.history
    );
    assert_eq!(
        run(heartbeat_world(Some(horizon)), &random).trace_hash(),
        original.trace_hash()
    );
}

// ---------------------------------------------------------------------------------------------
// Streamed upstream calls: open, read chunk by chunk, cancel, usage; faults at the k-th read.

const OPEN: TagKind = TagKind::new("open");
const READ: TagKind = TagKind::new("read");
const CANCEL: TagKind = TagKind::new("cancel");
const USAGE: TagKind = TagKind::new("usage");

const E1: EndpointId = EndpointId(1);
const R1: RequestId = RequestId(1);
/// The first stream a run's endpoints accept.
const S1: StreamId = StreamId(1);

fn call(kind: CallKind, tag: TagKind) -> (StoreOp, Tag) {
    let op = StoreOp::Upstream(UpstreamOp { endpoint: E1, kind });
    (op, Tag::plain(tag))
}

fn open() -> (StoreOp, Tag) {
    let kind = CallKind::Open {
        request: R1,
        prompt_tokens: 10,
    };
    call(kind, OPEN)
}

fn read() -> (StoreOp, Tag) {
    call(CallKind::Next { stream: S1 }, READ)
}

fn cancel() -> (StoreOp, Tag) {
    call(CallKind::Cancel { stream: S1 }, CANCEL)
}

fn usage_of_r1() -> (StoreOp, Tag) {
    call(CallKind::Usage { request: R1 }, USAGE)
}

/// A world whose endpoint E1 follows `script` and streams three chunks of 7 tokens, 100 ms
/// apart, the first 100 ms after the open.
fn stream_world(processes: Vec<ProcessSpec>, script: EndpointScript) -> WorldSpec {
    let mut w = world(processes);
    w.upstream = Upstream {
        endpoints: [(E1, script)].into(),
    };
    w
}

fn three_chunks() -> EndpointScript {
    EndpointScript {
        stream: StreamScript::uniform(3, 7, Duration::from_ms(100)),
        ..EndpointScript::default()
    }
}

fn stream_replies(replies: &Replies) -> Vec<(u64, StreamReply)> {
    replies
        .borrow()
        .iter()
        .map(|(at, r)| match r {
            Reply::Stream(s) => (at.as_ms(), *s),
            other => panic!("not a stream reply: {other}"),
        })
        .collect()
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
    }
}

#[test]
fn a_stream_read_to_the_end_gets_every_chunk_at_its_production_time_and_the_usage() {
    let ops = vec![
        open(),
        read(),
        read(),
        read(),
        read(),
        read(),
        usage_of_r1(),
    ];
    let (p, replies) = process("C", ops, Duration::ZERO);
    let r = run(stream_world(vec![p], three_chunks()), &scripted(vec![]));
    assert!(r.quiescent, "{:?}", r.unsettled);
    // 1 ms each way: the open reaches E1 at 1 ms, so chunk i is produced at 101 + 100 i ms;
    // a read waits at the endpoint for its chunk and is answered 1 ms after it.
    let full = usage(10, 21);
    assert_eq!(
        stream_replies(&replies),
        vec![
            (2, StreamReply::Opened { stream: S1 }),
            (
                102,
                StreamReply::Chunk {
                    index: 0,
                    tokens: 7
                }
            ),
            (
                202,
                StreamReply::Chunk {
                    index: 1,
                    tokens: 7
                }
            ),
            (
                302,
                StreamReply::Chunk {
                    index: 2,
                    tokens: 7
                }
            ),
            (304, StreamReply::End { usage: Some(full) }),
            (306, StreamReply::Closed),
            (
                308,
                StreamReply::Usage {
                    usage: full,
                    complete: true
                }
            ),
        ]
    );
    let applied: Vec<u64> = r.history.ops[1..4]
        .iter()
        .map(|o| o.applied_at.map_or(0, Timestamp::as_ms))
        .collect();
    assert_eq!(
        applied,
        vec![101, 201, 301],
        "each read applies as its chunk is produced"
    );
    assert_eq!(r.upstream_usage, [((E1, R1), full)].into());
    let timeline = r.history.timeline();
    let rendered: Vec<String> = timeline.iter().map(|s| r.history.render_step(s)).collect();
    assert!(
        rendered.iter().any(|l| l.contains("chunk 1 (7 tokens)")),
        "{rendered:#?}"
    );
}

#[test]
fn the_final_usage_record_is_missing_when_the_endpoint_does_not_send_it() {
    let mut script = three_chunks();
    script.stream.usage_in_final = false;
    let ops = vec![open(), read(), read(), read(), read()];
    let (p, replies) = process("C", ops, Duration::ZERO);
    let r = run(stream_world(vec![p], script), &scripted(vec![]));
    let last = stream_replies(&replies).pop().map(|(_, s)| s);
    assert_eq!(last, Some(StreamReply::End { usage: None }));
    assert_eq!(
        r.upstream_usage[&(E1, R1)],
        usage(10, 21),
        "billed all the same"
    );
}

#[test]
fn a_stream_that_fails_mid_stream_ends_with_the_failure_and_bills_what_it_generated() {
    let mut script = three_chunks();
    script.stream.fail_after = Some(1);
    let ops = vec![open(), read(), read(), read()];
    let (p, replies) = process("C", ops, Duration::ZERO);
    let r = run(stream_world(vec![p], script), &scripted(vec![]));
    assert_eq!(
        stream_replies(&replies)[1..],
        [
            (
                102,
                StreamReply::Chunk {
                    index: 0,
                    tokens: 7
                }
            ),
            (202, StreamReply::Failed { after_chunks: 1 }),
            (204, StreamReply::Closed),
        ]
    );
    assert!(!r.history.ops[2].succeeded());
    assert_eq!(r.upstream_usage[&(E1, R1)], usage(10, 7));
}

#[test]
fn a_cancel_before_the_first_chunk_delivers_no_chunk_and_bills_the_prompt_only() {
    let ops = vec![open(), cancel(), read(), usage_of_r1()];
    let (p, replies) = process("C", ops, Duration::ZERO);
    let r = run(stream_world(vec![p], three_chunks()), &scripted(vec![]));
    assert_eq!(
        stream_replies(&replies)[1..],
        [
            (4, StreamReply::Cancelled),
            (6, StreamReply::Cancelled),
            (
                8,
                StreamReply::Usage {
                    usage: usage(10, 0),
                    complete: true
                }
            ),
        ]
    );
    assert_eq!(r.upstream_usage[&(E1, R1)], usage(10, 0));
}

/// Sends all its operations at its start, at once, and keeps the replies.
struct Burst {
    ops: Vec<(StoreOp, Tag)>,
    answered: usize,
    replies: Replies,
}

impl Machine for Burst {
    fn handle_start(&mut self, _now: Timestamp) {}
    fn handle_reply(&mut self, now: Timestamp, _op: OpId, reply: Reply) {
        self.answered += 1;
        self.replies.borrow_mut().push((now, reply));
    }
    fn handle_timeout(&mut self, _now: Timestamp) {}
    fn poll_op(&mut self) -> Option<Outgoing> {
        let (op, tag) = (!self.ops.is_empty()).then(|| self.ops.remove(0))?;
        Some(Outgoing {
            id: OpId(self.replies.borrow().len() as u64 + 100 + self.ops.len() as u64),
            op,
            tag,
        })
    }
    fn poll_note(&mut self) -> Option<Note> {
        None
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
    fn is_idle(&self) -> bool {
        self.ops.is_empty()
    }
}

#[test]
fn a_cancel_fails_the_read_waiting_for_a_chunk_at_once() {
    let replies: Replies = Rc::default();
    let r2 = replies.clone();
    let ops = vec![open(), read(), cancel()];
    let p = ProcessSpec {
        host: 0,
        name: "C".into(),
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| {
            Box::new(Burst {
                ops: ops.clone(),
                answered: 0,
                replies: r2.clone(),
            }) as Box<dyn Machine>
        }),
    };
    // The read reaches E1 at 1 ms and waits for chunk 0 (101 ms); the cancel, delayed,
    // reaches E1 at 51 ms.
    let steps = vec![Step::on(
        "C",
        CANCEL,
        1,
        OpEffect::Delay(Duration::from_ms(50)),
    )];
    let r = run(stream_world(vec![p], three_chunks()), &scripted(steps));
    assert!(r.quiescent, "{:?}", r.unsettled);
    let read = &r.history.ops[1];
    assert_eq!(read.applied_at, Some(Timestamp::from_ms(51)));
    assert_eq!(read.result, Some(Reply::Stream(StreamReply::Cancelled)));
    assert_eq!(stream_replies(&replies).len(), 3);
    assert_eq!(r.upstream_usage[&(E1, R1)], usage(10, 0));
}

#[test]
fn a_crash_after_the_kth_chunk_read_leaves_the_provider_billing_the_whole_generation() {
    let ops = vec![open(), read(), read(), read(), read()];
    let (p, replies) = process("C", ops, Duration::ZERO);
    // The client (the gateway's process) dies right after its second chunk read applies.
    let crash = OpEffect::CrashAfterApply {
        restart_after: None,
    };
    let r = run(
        stream_world(vec![p], three_chunks()),
        &scripted(vec![Step::on("C", READ, 2, crash)]),
    );
    assert!(r.quiescent, "{:?}", r.unsettled);
    assert_eq!(stream_replies(&replies).len(), 2, "the opened and chunk 0");
    assert_eq!(r.history.ops.len(), 3, "nothing more was read");
    assert_eq!(r.upstream_usage[&(E1, R1)], usage(10, 21));
}

#[test]
fn a_crash_while_a_read_waits_fails_it_and_a_new_incarnation_cannot_read_the_old_stream() {
    let ops = vec![open(), read(), read(), usage_of_r1()];
    let (p, replies) = process("C", ops, Duration::ZERO);
    let crash = Action::Crash {
        process: "C".into(),
        restart_after: Some(Duration::from_ms(10)),
    };
    let steps = vec![Step::At {
        at: Timestamp::from_ms(150),
        action: crash,
    }];
    let r = run(stream_world(vec![p], three_chunks()), &scripted(steps));
    assert!(r.quiescent, "{:?}", r.unsettled);
    let waiting = &r.history.ops[2];
    assert_eq!(
        (
            waiting.applied_at,
            waiting.result.clone(),
            waiting.completed_at
        ),
        (
            Some(Timestamp::from_ms(150)),
            Some(Reply::Stream(StreamReply::Closed)),
            None
        ),
        "the read waiting for chunk 1 failed with the connection, unanswered"
    );
    // The restarted process opens s2 and reads s1, the dead connection's stream.
    let after: Vec<StreamReply> = stream_replies(&replies)[2..]
        .iter()
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        after[0],
        StreamReply::Opened {
            stream: StreamId(2)
        }
    );
    assert_eq!(after[1..3], [StreamReply::Closed, StreamReply::Closed]);
    match after[3] {
        StreamReply::Usage {
            usage: u,
            complete: false,
        } => assert_eq!(u.prompt_tokens, 20, "two attempts of r1"),
        other => panic!("{other}"),
    }
    assert_eq!(
        r.upstream_usage[&(E1, R1)],
        usage(20, 42),
        "both generated to their end"
    );
}

#[test]
fn a_refused_open_carries_its_status_and_a_429_its_retry_after() {
    let cases = [
        (
            EndpointScript {
                rate_limited: vec![(Timestamp::ZERO, Timestamp::from_ms(5_000))],
                ..three_chunks()
            },
            StreamReply::Refused {
                status: 429,
                retry_after: Some(Duration::from_ms(4_999)),
            },
        ),
        (
            EndpointScript {
                revoked_at: Some(Timestamp::ZERO),
                ..three_chunks()
            },
            StreamReply::Refused {
                status: 401,
                retry_after: None,
            },
        ),
        (
            EndpointScript {
                down: vec![(Timestamp::ZERO, Timestamp::from_ms(5_000))],
                ..three_chunks()
            },
            StreamReply::Refused {
                status: 503,
                retry_after: None,
            },
        ),
    ];
    for (script, expected) in cases {
        let (p, replies) = process("C", vec![open(), read(), usage_of_r1()], Duration::ZERO);
        let r = run(stream_world(vec![p], script), &scripted(vec![]));
        let got: Vec<StreamReply> = stream_replies(&replies).iter().map(|(_, s)| *s).collect();
        assert_eq!(
            got,
            vec![expected, StreamReply::Closed, StreamReply::UnknownRequest]
        );
        assert!(
            r.upstream_usage.is_empty(),
            "nothing generated, nothing billed"
        );
    }
}

#[test]
fn streamed_runs_under_random_faults_are_reproducible() {
    let mut ops = vec![open()];
    ops.extend((0..5).map(|_| read()));
    ops.push(cancel());
    ops.push(usage_of_r1());
    let make = || {
        let (p, _) = process("C", ops.clone(), Duration::from_ms(20));
        stream_world(vec![p], three_chunks())
    };
    let mut struck_any = false;
    for seed in 0..20 {
        let sched = Scheduler::Random {
            seed,
            faults: every_fault(),
        };
        let (a, b) = (run(make(), &sched), run(make(), &sched));
        assert_eq!(a.trace_hash(), b.trace_hash(), "seed {seed}");
        assert_eq!(a.upstream_usage, b.upstream_usage);
        struck_any |= !a.injected.is_empty();
        a.history.check_well_formed().expect("well formed");
    }
    assert!(struck_any);
}

/// Under an exhaustive search with `slow`, arrival order is enumerated: two processes that
/// write one key at the same instant leave either value, and both orders are visited.
#[test]
fn an_exhaustive_search_with_slow_messages_visits_both_arrival_orders() {
    let write = |v: &str| {
        (
            StoreOp::Kv(KvOp::Set {
                key: "k".into(),
                value: v.into(),
                condition: SetCondition::Always,
                ttl: None,
            }),
            Tag::plain(TX),
        )
    };
    let read = (StoreOp::Kv(KvOp::Get { key: "k".into() }), Tag::plain(TX));
    let mut finals = BTreeSet::new();
    let found = racelab_sim::explore::exhaustive(1, 1_000, |prefix| {
        let (a, _) = process("A", vec![write("a")], Duration::ZERO);
        let (b, _) = process("B", vec![write("b")], Duration::ZERO);
        let (c, seen) = process("C", vec![read.clone()], Duration::ZERO);
        let mut spec = world(vec![a, b, c]);
        spec.processes[2].start_at = Timestamp::from_ms(100);
        let r = run(
            spec,
            &Scheduler::Exhaustive {
                prefix: prefix.to_vec(),
                faults: FaultProfile::quiet(),
                slow: Some(Duration::from_ms(10)),
            },
        );
        finals.insert(format!("{:?}", seen.borrow()[0].1));
        (false, r.choices.unwrap_or_default())
    });
    assert!(found.complete);
    // Six messages (two requests and replies, one read and its reply), each fast or slow,
    // at most one slow: seven schedules.
    assert_eq!(found.schedules, 7);
    assert_eq!(finals.len(), 2, "both orders of the two writes: {finals:?}");
}

/// Redis pub/sub is at most once: a subscriber partitioned when a message is published misses
/// it (Redis still counts it), a waiting receive gets the next message at once, and a
/// failover drops the subscription.
#[test]
fn pub_sub_delivers_at_most_once_and_a_failover_disconnects_subscribers() {
    use racelab_core::{PubSubOp, PubSubReply};
    let tag = || Tag::plain(TX);
    let receive = || {
        (
            StoreOp::PubSub(PubSubOp::Receive {
                wait: Duration::from_ms(500),
            }),
            tag(),
        )
    };
    let publish = |m: &str| {
        (
            StoreOp::Kv(KvOp::Publish {
                channel: "ch".into(),
                message: m.into(),
            }),
            tag(),
        )
    };
    let (s, got) = process(
        "S",
        vec![
            (
                StoreOp::PubSub(PubSubOp::Subscribe {
                    channels: vec!["ch".into()],
                }),
                tag(),
            ),
            receive(),
            receive(),
            receive(),
            receive(),
        ],
        Duration::ZERO,
    );
    let (mut p, published) = process(
        "P",
        vec![publish("m1"), publish("m2"), publish("m3")],
        Duration::from_ms(100),
    );
    p.start_at = Timestamp::from_ms(50);
    // m1 at 51 ms, m2 at 153 ms (S cut off from Redis 100..200 ms), m3 at 255 ms; a failover
    // at 400 ms while S waits for a fourth message.
    let steps = vec![
        Step::At {
            at: Timestamp::from_ms(100),
            action: Action::Partition {
                process: "S".into(),
                store: StoreId::Redis,
            },
        },
        Step::At {
            at: Timestamp::from_ms(200),
            action: Action::Heal {
                process: "S".into(),
                store: StoreId::Redis,
            },
        },
        Step::At {
            at: Timestamp::from_ms(400),
            action: Action::Failover,
        },
    ];
    let r = run(world(vec![s, p]), &scripted(steps));
    assert!(r.quiescent, "{:?}", r.unsettled);
    let message = |m: &str| {
        Reply::PubSub(PubSubReply::Message {
            channel: "ch".into(),
            payload: m.into(),
        })
    };
    let got: Vec<Reply> = got.borrow().iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(
        got,
        vec![
            Reply::PubSub(PubSubReply::Subscribed { count: 1 }),
            message("m1"),
            message("m3"),
            Reply::PubSub(PubSubReply::Disconnected),
            Reply::PubSub(PubSubReply::Disconnected),
        ],
        "m2 is missed, the failover ends the subscription"
    );
    let receivers: Vec<Reply> = published.borrow().iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(
        receivers,
        vec![Reply::Kv(KvReply::Int(1)); 3],
        "Redis counts S every time"
    );
    // The third receive waited at Redis and got m3 the instant it was published.
    let third = &r.history.ops[3];
    assert_eq!(third.applied_at, Some(Timestamp::from_ms(255)));
    assert!(third.invoked_at < Timestamp::from_ms(200));
}

fn lock_row(key: &str) -> (StoreOp, Tag) {
    sql(SqlOp::exec(SqlStmt::Select {
        table: WORK_ORDERS,
        key: key.into(),
        for_update: true,
    }))
}

/// A locks wo-1 then wo-2, B locks wo-2 then wo-1, each in a transaction, 2 s between
/// statements; B starts at `b_start_ms`. Returns the run and each one's replies.
fn opposite_lock_orders(b_start_ms: u64) -> (racelab_sim::explore::Run, Replies, Replies) {
    let a_ops = vec![
        sql(SqlOp::Begin),
        lock_row("wo-1"),
        lock_row("wo-2"),
        sql(SqlOp::Commit),
    ];
    let b_ops = vec![
        sql(SqlOp::Begin),
        lock_row("wo-2"),
        lock_row("wo-1"),
        sql(SqlOp::Commit),
    ];
    let (a, a_replies) = process("A", a_ops, Duration::from_secs(2));
    let (b, b_replies) = process("B", b_ops, Duration::from_secs(2));
    let mut spec = world(vec![a, b]);
    spec.sql_rows.push((WORK_ORDERS, "wo-2".into(), Row::new()));
    spec.processes[1].start_at = Timestamp::from_ms(b_start_ms);
    (run(spec, &scripted(vec![])), a_replies, b_replies)
}

/// The victim's replies and the survivor's, checked: one 40P01 then a rolled-back commit,
/// and the other gets its second row and commits. Returns when the victim got 40P01.
fn one_deadlock_victim(victim: &Replies, survivor: &Replies) -> Timestamp {
    let v = victim.borrow();
    let s = survivor.borrow();
    let sql_reply = |r: &Reply| match r {
        Reply::Sql(r) => r.clone(),
        other => panic!("not a SQL reply: {other:?}"),
    };
    assert_eq!(v.len(), 4);
    assert_eq!(
        sql_reply(&v[2].1),
        SqlReply::Error("40P01: deadlock detected".into())
    );
    assert_eq!(sql_reply(&v[3].1), SqlReply::RolledBack);
    assert_eq!(s.len(), 4);
    assert!(matches!(sql_reply(&s[2].1), SqlReply::Rows(rows) if rows.len() == 1));
    assert!(
        s[2].0 >= v[2].0,
        "the survivor's lock came at the victim's error"
    );
    assert_eq!(sql_reply(&s[3].1), SqlReply::Committed);
    v[2].0
}

#[test]
fn a_deadlock_fails_the_first_waiter_whose_check_comes_after_the_cycle_closed() {
    // A waits for B from about 4.0 s; B closes the cycle at about 4.2 s; A's check at about
    // 5.0 s (1 s after its wait began) finds the cycle: A gets 40P01, B commits.
    let (r, a, b) = opposite_lock_orders(200);
    assert!(r.quiescent, "{:?}", r.unsettled);
    let at = one_deadlock_victim(&a, &b);
    assert!(
        (Timestamp::from_ms(4_990)..=Timestamp::from_ms(5_020)).contains(&at),
        "A's error came about 1 s after its wait began (about 0.8 s after the cycle closed), \
         got {at}"
    );
    // Deterministic.
    let (again, _, _) = opposite_lock_orders(200);
    assert_eq!(r.trace_hash(), again.trace_hash());

    // A waits from about 4.0 s but B closes the cycle only at about 5.5 s: A's check at about
    // 5.0 s finds nothing (and PostgreSQL does not check again); B's at about 6.5 s does.
    let (r, a, b) = opposite_lock_orders(1_500);
    assert!(r.quiescent, "{:?}", r.unsettled);
    let at = one_deadlock_victim(&b, &a);
    assert!(
        (Timestamp::from_ms(6_490)..=Timestamp::from_ms(6_520)).contains(&at),
        "B's error came 1 s after its wait began, got {at}"
    );
}

/// Push connections behind the balancer: a connection reaches a listener, messages arrive in
/// order, a crash of one end closes it for the other, and a send on a closed connection or a
/// connect to a service nobody listens for says so.
#[test]
fn push_connections_deliver_in_order_and_close_with_a_crashed_end() {
    use racelab_core::{ConnId, PushOp, PushReply};
    let tag = || Tag::plain(TX);
    let push = |op: PushOp| (StoreOp::Push(op), tag());
    let receive = || {
        push(PushOp::Receive {
            wait: Duration::from_secs(2),
        })
    };
    let (s, at_s) = process(
        "S",
        vec![
            push(PushOp::Listen {
                service: "sched".into(),
            }),
            receive(),
            receive(),
            receive(),
            receive(),
        ],
        Duration::ZERO,
    );
    let send = |m: &str| {
        push(PushOp::Send {
            conn: ConnId(1),
            message: m.into(),
        })
    };
    let (mut n, at_n) = process(
        "N",
        vec![
            push(PushOp::Connect {
                service: "sched".into(),
            }),
            send("r1"),
            send("r2"),
        ],
        Duration::from_ms(10),
    );
    n.start_at = Timestamp::from_ms(10);
    let (mut c, at_c) = process(
        "C",
        vec![
            push(PushOp::Connect {
                service: "other".into(),
            }),
            send("late"),
        ],
        Duration::ZERO,
    );
    c.start_at = Timestamp::from_ms(300);
    let steps = vec![Step::At {
        at: Timestamp::from_ms(200),
        action: Action::Crash {
            process: "N".into(),
            restart_after: None,
        },
    }];
    let r = run(world(vec![s, n, c]), &scripted(steps));
    assert!(r.quiescent, "{:?}", r.unsettled);
    let replies =
        |x: &Replies| -> Vec<Reply> { x.borrow().iter().map(|(_, r)| r.clone()).collect() };
    let conn = ConnId(1);
    assert_eq!(
        replies(&at_n),
        vec![
            Reply::Push(PushReply::Connected {
                conn,
                peer: ProcessId(0)
            }),
            Reply::Push(PushReply::Sent),
            Reply::Push(PushReply::Sent),
        ]
    );
    assert_eq!(
        replies(&at_s),
        vec![
            Reply::Push(PushReply::Listening),
            Reply::Push(PushReply::Accepted {
                conn,
                peer: ProcessId(1)
            }),
            Reply::Push(PushReply::Message {
                conn,
                payload: "r1".into()
            }),
            Reply::Push(PushReply::Message {
                conn,
                payload: "r2".into()
            }),
            Reply::Push(PushReply::Closed { conn }),
        ],
        "in order, then closed by N's crash"
    );
    assert_eq!(
        replies(&at_c),
        vec![
            Reply::Push(PushReply::Refused),
            Reply::Push(PushReply::Closed { conn }),
        ]
    );
}

/// A partition between a process and the balancer closes its push connections: the other end
/// learns it at once, and a message sent after the heal finds the connection closed.
#[test]
fn a_partition_from_the_balancer_closes_push_connections() {
    use racelab_core::{ConnId, PushOp, PushReply};
    let push = |op: PushOp| (StoreOp::Push(op), Tag::plain(TX));
    let (s, at_s) = process(
        "S",
        vec![
            push(PushOp::Listen {
                service: "sched".into(),
            }),
            push(PushOp::Receive {
                wait: Duration::from_secs(2),
            }),
            push(PushOp::Receive {
                wait: Duration::from_secs(2),
            }),
        ],
        Duration::ZERO,
    );
    let (mut n, at_n) = process(
        "N",
        vec![
            push(PushOp::Connect {
                service: "sched".into(),
            }),
            push(PushOp::Send {
                conn: ConnId(1),
                message: "after the heal".into(),
            }),
        ],
        Duration::from_ms(500),
    );
    n.start_at = Timestamp::from_ms(10);
    let at = |ms| Timestamp::from_ms(ms);
    let steps = vec![
        Step::At {
            at: at(100),
            action: Action::Partition {
                process: "N".into(),
                store: StoreId::Push,
            },
        },
        Step::At {
            at: at(200),
            action: Action::Heal {
                process: "N".into(),
                store: StoreId::Push,
            },
        },
    ];
    let r = run(world(vec![s, n]), &scripted(steps));
    assert!(r.quiescent, "{:?}", r.unsettled);
    let last = |x: &Replies| x.borrow().last().map(|(t, r)| (*t, r.clone()));
    let (closed_at, closed) = last(&at_s).expect("S heard");
    assert_eq!(closed, Reply::Push(PushReply::Closed { conn: ConnId(1) }));
    assert!(closed_at < at(110), "at the cut: {closed_at}");
    assert_eq!(
        last(&at_n).map(|(_, r)| r),
        Some(Reply::Push(PushReply::Closed { conn: ConnId(1) }))
    );
}

/// Three processes, each setting its own key `n` times one after the other.
fn three_setters(n: usize) -> WorldSpec {
    let procs = ["A", "B", "C"]
        .into_iter()
        .map(|name| {
            let ops: Vec<_> = (0..n).map(|_| (set(name), Tag::plain(TX))).collect();
            process(name, ops, Duration::ZERO).0
        })
        .collect();
    world(procs)
}

fn pct(seed: u64, depth: u32) -> Scheduler {
    Scheduler::Pct {
        seed,
        depth,
        faults: FaultProfile {
            latency: (Duration::from_ms(1), Duration::from_ms(5)),
            ..FaultProfile::quiet()
        },
    }
}

/// Per process (by index), the round-trip time of each of its operations.
fn round_trips(r: &racelab_sim::explore::Run) -> Vec<Vec<u64>> {
    let mut out = vec![Vec::new(); 3];
    for op in &r.history.ops {
        let done = op.completed_at.expect("every operation completes");
        out[op.process.0 as usize].push(done.as_ms() - op.invoked_at.as_ms());
    }
    out
}

#[test]
fn pct_orders_messages_by_process_priority_and_drops_a_process_at_a_change_point() {
    let mut orders = BTreeSet::new();
    for seed in 0..30 {
        // Depth 1: no change point. Each process keeps one latency, 1 ms plus 1 ms per rank,
        // and the three ranks are a permutation: round trips of 2, 4 and 6 ms.
        let r = run(three_setters(4), &pct(seed, 1));
        let trips = round_trips(&r);
        let mut per_process: Vec<u64> = trips
            .iter()
            .map(|t| {
                assert!(t.iter().all(|&x| x == t[0]), "seed {seed}: {trips:?}");
                t[0]
            })
            .collect();
        orders.insert(per_process.clone());
        per_process.sort_unstable();
        assert_eq!(per_process, vec![2, 4, 6], "seed {seed}");
        assert_eq!(
            r.trace_hash(),
            run(three_setters(4), &pct(seed, 1)).trace_hash()
        );
    }
    assert_eq!(orders.len(), 6, "every priority order occurs: {orders:?}");

    // Depth 3: two change points among the first operations; a process dropped there takes
    // longer from then on (8 or 10 ms round trips: below the three initial ranks).
    let dropped = (0..30)
        .filter(|&seed| {
            let trips = round_trips(&run(three_setters(30), &pct(seed, 3)));
            trips.iter().flatten().any(|&t| t >= 8)
        })
        .count();
    assert!(
        dropped >= 25,
        "only {dropped} of 30 depth-3 runs dropped a process"
    );
}
