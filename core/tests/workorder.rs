//! Document 002's machines on their own: bad job data is an error, never a panic, and a worker
//! completes a poison job instead of choking on it.

use racelab_core::Variant;
use racelab_core::workorder::{
    Checker, DocFixPlans, JobError, PlannedScan, ScanJob, Terminal, WoTag, Worker, WorkerConfig,
};
use racelab_core::{
    Delivery, DeliveryId, Duration, JobFields, JobId, Machine, Quantity, QueueOp, QueueReply,
    Reply, ScanId, StoreOp, Tag, Timestamp, WorkOrderId,
};

fn fields(pairs: &[(&str, &str)]) -> JobFields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn job_data_is_validated_with_clear_errors() {
    let ok = fields(&[
        ("scan", "7"),
        ("work_order", "1"),
        ("qty", "5"),
        ("work_ms", "100"),
    ]);
    assert_eq!(ScanJob::from_fields(&ok).map(|j| j.qty.0), Ok(5));
    let bad = |k: &str, v: &str| {
        let mut f = ok.clone();
        f.insert(k.to_string(), v.to_string());
        ScanJob::from_fields(&f)
    };
    assert_eq!(
        bad("qty", "99999999999999999999"),
        Err(JobError::Malformed {
            field: "qty",
            value: "99999999999999999999".into()
        })
    );
    assert_eq!(bad("qty", "0"), Err(JobError::QuantityOutOfRange(0)));
    assert_eq!(bad("qty", "-3"), Err(JobError::QuantityOutOfRange(-3)));
    assert_eq!(
        bad("qty", "1000000001"),
        Err(JobError::QuantityOutOfRange(1_000_000_001))
    );
    assert!(matches!(
        bad("scan", "s-1'; DROP TABLE work_orders"),
        Err(JobError::Malformed { field: "scan", .. })
    ));
    let mut missing = ok.clone();
    missing.remove("work_order");
    assert_eq!(
        ScanJob::from_fields(&missing),
        Err(JobError::Missing("work_order"))
    );
    assert_eq!(
        JobError::QuantityOutOfRange(0).to_string(),
        "scan quantity 0 is outside 1..=1000000000"
    );
}

#[test]
fn a_worker_completes_a_poison_job_and_asks_for_the_next() {
    for variant in Variant::ALL {
        let cfg = WorkerConfig::new(
            variant,
            DocFixPlans {
                plan1: true,
                plan2: None,
            },
        );
        let mut w = Worker::new(cfg, "W_A", 0);
        let now = Timestamp::ZERO;
        w.handle_start(now);
        let fetch = w.poll_op().expect("a fetch");
        assert_eq!(fetch.tag, Tag::new(WoTag::Fetch));
        let poison = Delivery {
            id: DeliveryId(9),
            job: JobId(1),
            attempt: 1,
            fields: fields(&[("qty", "lots")]),
        };
        w.handle_reply(
            now,
            fetch.id,
            Reply::Queue(QueueReply::Delivered(Some(poison))),
        );
        let ack = w.poll_op().expect("the poison job is completed");
        assert_eq!(
            ack.op,
            StoreOp::Queue(QueueOp::Ack {
                delivery: DeliveryId(9)
            })
        );
        assert!(w.poll_op().is_none());
        w.handle_reply(now, ack.id, Reply::Queue(QueueReply::Acked));
        assert_eq!(
            w.poll_op().map(|o| o.tag),
            Some(Tag::new(WoTag::Fetch)),
            "{variant:?} moves on"
        );
        assert!(w.is_idle());
    }
}

#[test]
fn spurious_timeouts_and_stray_replies_are_no_ops() {
    let cfg = WorkerConfig::new(
        Variant::Correct,
        DocFixPlans {
            plan1: false,
            plan2: None,
        },
    );
    let mut w = Worker::new(cfg, "W_A", 0);
    w.handle_start(Timestamp::ZERO);
    let fetch = w.poll_op().expect("a fetch");
    w.handle_timeout(Timestamp::from_ms(1));
    w.handle_reply(
        Timestamp::from_ms(1),
        racelab_core::OpId(999),
        Reply::Timeout,
    );
    assert!(
        w.poll_op().is_none(),
        "nothing happens without a due timer or an awaited reply"
    );
    w.handle_reply(
        Timestamp::from_ms(2),
        fetch.id,
        Reply::Queue(QueueReply::Delivered(None)),
    );
    assert_eq!(
        w.poll_timeout(),
        Some(Timestamp::from_ms(502)),
        "polls again after 500 ms"
    );
}

#[test]
fn only_correct_terminals_deduplicate_at_enqueue_and_a_lost_answer_is_resubmitted() {
    for variant in Variant::ALL {
        let scan = PlannedScan {
            at: Timestamp::from_ms(10),
            job: ScanJob {
                scan: ScanId(7),
                work_order: WorkOrderId(1),
                qty: Quantity(5),
                work: Duration::from_ms(100),
                request_id: String::new(),
            },
        };
        let mut t = Terminal::new(variant, vec![scan]);
        t.handle_start(Timestamp::ZERO);
        assert!(t.poll_op().is_none(), "the scan is not due yet");
        assert_eq!(t.poll_timeout(), Some(Timestamp::from_ms(10)));
        let mut now = Timestamp::from_ms(10);
        let mut dedups = Vec::new();
        // The answer to every submission is lost: the terminal submits three times, a second
        // apart, then gives up (bounded, so that a terminal that never gives up fails here
        // instead of looping).
        for _ in 0..10 {
            t.handle_timeout(now);
            let Some(submit) = t.poll_op() else {
                break;
            };
            let StoreOp::Queue(QueueOp::Enqueue { dedup, fields }) = submit.op else {
                panic!("{variant:?}: expected an enqueue, got {}", submit.op);
            };
            assert_eq!(fields.get("scan").map(String::as_str), Some("7"));
            dedups.push(dedup);
            assert!(!t.is_idle());
            t.handle_reply(now, submit.id, Reply::Timeout);
            match t.poll_timeout() {
                Some(next) => {
                    assert_eq!(next, now + Duration::from_secs(1), "{variant:?}");
                    now = next;
                }
                None => break,
            }
        }
        let expected = (variant == Variant::Correct).then(|| "s-7".to_string());
        assert_eq!(dedups, vec![expected; 3], "{variant:?}");
        assert!(t.is_idle(), "{variant:?} gives up after three submissions");
    }
}

#[test]
fn a_terminal_whose_submission_was_answered_does_not_resubmit() {
    let scan = PlannedScan {
        at: Timestamp::ZERO,
        job: ScanJob {
            scan: ScanId(1),
            work_order: WorkOrderId(1),
            qty: Quantity(2),
            work: Duration::from_ms(100),
            request_id: String::new(),
        },
    };
    let mut t = Terminal::new(Variant::Correct, vec![scan]);
    t.handle_start(Timestamp::ZERO);
    let submit = t.poll_op().expect("a submission");
    t.handle_reply(
        Timestamp::from_ms(5),
        submit.id,
        Reply::Queue(QueueReply::Enqueued { job: JobId(1) }),
    );
    assert!(t.poll_op().is_none());
    assert_eq!(t.poll_timeout(), None);
    assert!(t.is_idle());
}

#[test]
fn a_buggy_workers_lock_renewal_names_its_work_order() {
    let cfg = WorkerConfig::new(
        Variant::Buggy,
        DocFixPlans {
            plan1: false,
            plan2: None,
        },
    );
    let mut w = Worker::new(cfg, "W_A", 0);
    let now = Timestamp::ZERO;
    w.handle_start(now);
    let fetch = w.poll_op().expect("a fetch");
    let job = ScanJob {
        scan: ScanId(3),
        work_order: WorkOrderId(4),
        qty: Quantity(1),
        work: Duration::from_secs(30),
        request_id: String::new(),
    };
    let delivery = Delivery {
        id: DeliveryId(1),
        job: JobId(1),
        attempt: 1,
        fields: job.to_fields(),
    };
    w.handle_reply(
        now,
        fetch.id,
        Reply::Queue(QueueReply::Delivered(Some(delivery))),
    );
    assert!(!w.is_idle(), "a worker holding a job is not idle");
    let lock = w.poll_op().expect("the lock");
    assert_eq!(
        lock.tag,
        Tag::new(WoTag::AcquireLease {
            work_order: WorkOrderId(4)
        })
    );
    w.handle_reply(now, lock.id, Reply::Kv(racelab_core::KvReply::Ok));
    // The renewal every 8 s, for wo-4.
    let at = Timestamp::from_ms(8_000);
    assert_eq!(w.poll_timeout(), Some(at));
    w.handle_timeout(at);
    let renew = w.poll_op().expect("a renewal");
    assert_eq!(
        renew.tag,
        Tag::new(WoTag::RenewLease {
            work_order: WorkOrderId(4)
        })
    );
}

#[test]
fn a_checker_round_whose_read_fails_is_retried_one_interval_later() {
    for variant in Variant::ALL {
        let every = Duration::from_secs(5);
        let mut c = Checker::new(variant, WorkOrderId(1), Quantity(100), every, 2);
        c.handle_start(Timestamp::ZERO);
        let first = Timestamp::from_ms(5_000);
        assert_eq!(c.poll_timeout(), Some(first));
        c.handle_timeout(first);
        assert!(!c.is_idle());
        // Every statement's answer is lost (Correct's transaction is rolled back): the round
        // is abandoned and the next one is due `every` after the last answer.
        let mut failed_at = first;
        while let Some(op) = c.poll_op() {
            failed_at = failed_at + Duration::from_ms(100);
            c.handle_reply(failed_at, op.id, Reply::Timeout);
        }
        assert!(failed_at > first, "{variant:?} sent nothing");
        assert_eq!(c.poll_timeout(), Some(failed_at + every), "{variant:?}");
    }
}
