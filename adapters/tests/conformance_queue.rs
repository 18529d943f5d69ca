//! Conformance: generated sequences of queue operations (enqueue with and without dedup id,
//! fetch, ack, nack, extend, and the passing of time that stalls a job) run against the
//! queue model and against the Lua queue on real Redis must give equal replies.
//!
//! Time: both sides get the same virtual `now` (the queue scripts take it as an argument in
//! this mode), so stalls and redeliveries are compared exactly without sleeping. A separate
//! test checks stalled redelivery on the server's own clock.
//!
//! Ids: the real queue's ids start at the server's time, the model's at 1. Replies are
//! compared through a bijection built as ids appear (a model id always maps to the same real
//! id and vice versa).

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use racelab_adapters::{QueueClock, RedisQueue};
use racelab_core::{DeliveryId, Duration, JobFields, QueueOp, QueueReply, Timestamp};
use racelab_sim::explore::models::QueueModel;

const LOCK_MS: u64 = 1_000;

/// A step of a generated sequence. Deliveries are named by the order they were handed out,
/// since the two sides number them differently.
#[derive(Clone, Debug)]
enum Step {
    Enqueue(Option<String>, JobFields),
    Fetch,
    Ack(usize),
    Nack(usize),
    Extend(usize),
    /// A delivery id that was never handed out.
    AckUnknown,
    Advance(u64),
}

fn fields() -> impl Strategy<Value = JobFields> {
    let name = prop::sample::select(vec!["scan", "qty", "f'\"", "ключ", "f:x"]);
    let value = prop::sample::select(vec![
        "1",
        "",
        "]] redis.call('FLUSHALL') --[[",
        "ü🎉",
        "a\u{0}b",
    ]);
    prop::collection::btree_map(
        name.prop_map(str::to_string),
        value.prop_map(str::to_string),
        0..3,
    )
}

fn step() -> impl Strategy<Value = Step> {
    let dedup = prop::option::of(
        prop::sample::select(vec!["s-1", "s-2", "x'\"]"]).prop_map(str::to_string),
    );
    prop_oneof![
        4 => (dedup, fields()).prop_map(|(d, f)| Step::Enqueue(d, f)),
        5 => Just(Step::Fetch),
        3 => (0usize..4).prop_map(Step::Ack),
        1 => (0usize..4).prop_map(Step::Nack),
        1 => (0usize..4).prop_map(Step::Extend),
        1 => Just(Step::AckUnknown),
        2 => prop::sample::select(vec![0u64, 400, 999, 1_000, 1_500]).prop_map(Step::Advance),
    ]
}

/// A bijection between the model's ids and the real ones.
#[derive(Default)]
struct Ids {
    to_real: BTreeMap<u64, u64>,
    to_model: BTreeMap<u64, u64>,
}

impl Ids {
    fn same(&mut self, model: u64, real: u64) -> bool {
        match (self.to_real.get(&model), self.to_model.get(&real)) {
            (None, None) => {
                self.to_real.insert(model, real);
                self.to_model.insert(real, model);
                true
            }
            (Some(r), Some(m)) => *r == real && *m == model,
            _ => false,
        }
    }
}

/// What the generated sequences exercised, so that the test cannot pass vacuously.
#[derive(Debug, Default)]
struct Seen {
    redeliveries: u32,
    lock_lost: u32,
    duplicates: u32,
    acked: u32,
}

struct Ctx {
    seen: Seen,
    queue: RedisQueue,
    case: u64,
    url: String,
    prefix: String,
}

impl Ctx {
    async fn check(&mut self, steps: &[Step]) -> Result<(), String> {
        // A fresh queue per case: its own prefix, cleaned afterwards.
        self.case += 1;
        let prefix = format!("{}c{}:", self.prefix, self.case);
        self.queue = RedisQueue::lazy(&self.url, &prefix, Duration::from_ms(LOCK_MS))
            .map_err(|e| e.to_string())?;
        let r = self.run(steps).await;
        self.queue
            .clean()
            .await
            .map_err(|e| format!("cleaning: {e}"))?;
        r
    }

    async fn run(&mut self, steps: &[Step]) -> Result<(), String> {
        let mut model = QueueModel::new(Duration::from_ms(LOCK_MS));
        let mut now = Timestamp::ZERO;
        let mut jobs = Ids::default();
        let mut deliveries = Ids::default();
        // Deliveries in the order handed out: (model id, real id).
        let mut handed: Vec<(DeliveryId, DeliveryId)> = Vec::new();
        let mut trace = Vec::new();
        for step in steps {
            let (m_op, r_op) = match step {
                Step::Advance(ms) => {
                    now = now + Duration::from_ms(*ms);
                    trace.push(format!("advance {ms} ms"));
                    continue;
                }
                Step::Enqueue(dedup, fields) => {
                    let op = QueueOp::Enqueue {
                        dedup: dedup.clone(),
                        fields: fields.clone(),
                    };
                    (op.clone(), op)
                }
                Step::Fetch => (QueueOp::Fetch, QueueOp::Fetch),
                Step::AckUnknown => (
                    QueueOp::Ack {
                        delivery: DeliveryId(u64::MAX),
                    },
                    QueueOp::Ack {
                        delivery: DeliveryId(u64::MAX),
                    },
                ),
                Step::Ack(i) | Step::Nack(i) | Step::Extend(i) => {
                    let Some((m, r)) = handed.get(*i).copied() else {
                        continue;
                    };
                    match step {
                        Step::Ack(_) => {
                            (QueueOp::Ack { delivery: m }, QueueOp::Ack { delivery: r })
                        }
                        Step::Nack(_) => {
                            (QueueOp::Nack { delivery: m }, QueueOp::Nack { delivery: r })
                        }
                        _ => (
                            QueueOp::Extend { delivery: m },
                            QueueOp::Extend { delivery: r },
                        ),
                    }
                }
            };
            self.queue.set_clock(QueueClock::Manual(now));
            let real = self
                .queue
                .execute_queue(&r_op)
                .await
                .map_err(|e| format!("{r_op}: the real queue failed: {e}"))?;
            let expected = model.execute(now, &m_op);
            trace.push(format!("{m_op} at {now} -> model {expected}, Redis {real}"));
            match &expected {
                QueueReply::Delivered(Some(d)) if d.attempt > 1 => self.seen.redeliveries += 1,
                QueueReply::LockLost if !matches!(step, Step::AckUnknown) => {
                    self.seen.lock_lost += 1
                }
                QueueReply::Duplicate { .. } => self.seen.duplicates += 1,
                QueueReply::Acked => self.seen.acked += 1,
                _ => {}
            }
            let equal = match (&expected, &real) {
                (QueueReply::Enqueued { job: m }, QueueReply::Enqueued { job: r })
                | (QueueReply::Duplicate { job: m }, QueueReply::Duplicate { job: r }) => {
                    jobs.same(m.0, r.0)
                }
                (QueueReply::Delivered(Some(m)), QueueReply::Delivered(Some(r))) => {
                    handed.push((m.id, r.id));
                    jobs.same(m.job.0, r.job.0)
                        && deliveries.same(m.id.0, r.id.0)
                        && m.attempt == r.attempt
                        && m.fields == r.fields
                }
                _ => expected == real,
            };
            if !equal {
                return Err(format!(
                    "model and Redis queue differ at `{m_op}`: model {expected:?}, Redis {real:?}\n\
                     sequence so far:\n  {}",
                    trace.join("\n  ")
                ));
            }
        }
        self.queue.set_clock(QueueClock::Manual(now));
        // The status script checks for stalled jobs first, as every queue operation does;
        // an ack of an unknown delivery makes the model do the same and nothing else.
        let _ = model.execute(
            now,
            &QueueOp::Ack {
                delivery: DeliveryId(u64::MAX),
            },
        );
        let status = self
            .queue
            .status()
            .await
            .map_err(|e| format!("status: {e}"))?;
        let drained = status.waiting == 0 && status.active == 0;
        if drained != model.is_drained() || status.stalls != model.stalls {
            return Err(format!(
                "final state differs: model drained {} with {} stalls, Redis {status:?}\n\
                 sequence:\n  {}",
                model.is_drained(),
                model.stalls,
                trace.join("\n  ")
            ));
        }
        Ok(())
    }
}

#[test]
fn queue_operations_agree_with_the_model() {
    let rt = common::runtime();
    let Some(config) = rt.block_on(common::servers_or_skip("queue conformance", true, false))
    else {
        return;
    };
    let prefix = common::prefix("queue");
    let queue = rt
        .block_on(RedisQueue::connect(
            &config.redis_url,
            &prefix,
            Duration::from_ms(LOCK_MS),
        ))
        .expect("Redis was reachable a moment ago");
    let ctx = RefCell::new(Ctx {
        seen: Seen::default(),
        queue,
        case: 0,
        url: config.redis_url.clone(),
        prefix,
    });
    let mut runner = TestRunner::new(PropConfig {
        cases: 1_000,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&prop::collection::vec(step(), 1..16), |steps| {
        rt.block_on(ctx.borrow_mut().check(&steps))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!(
            "queue conformance failed (a difference is a bug in the model or the adapter):\n{e}"
        );
    }
    let seen = &ctx.borrow().seen;
    assert!(
        seen.redeliveries >= 20
            && seen.lock_lost >= 20
            && seen.duplicates >= 20
            && seen.acked >= 20,
        "the generated sequences did not exercise enough (the generator needs work): {seen:?}"
    );
    eprintln!("queue conformance exercised: {seen:?}");
}

/// Stalled redelivery on the server's own clock: a job whose lock expires is delivered
/// again, the first delivery's ack fails with `LockLost`, and an extended lock does not
/// expire.
#[test]
fn a_stalled_job_is_redelivered_on_the_servers_clock() {
    let rt = common::runtime();
    let Some(config) = rt.block_on(common::servers_or_skip("queue stall", true, false)) else {
        return;
    };
    rt.block_on(async {
        let prefix = common::prefix("stall");
        let lock = Duration::from_ms(300);
        let mut q = RedisQueue::connect(&config.redis_url, &prefix, lock)
            .await
            .expect("Redis was reachable a moment ago");
        let enqueue = QueueOp::Enqueue {
            dedup: Some("s-1".into()),
            fields: JobFields::from([("scan".to_string(), "1".to_string())]),
        };
        let Ok(QueueReply::Enqueued { job }) = q.execute_queue(&enqueue).await else {
            panic!("the first enqueue adds a job");
        };
        let first = fetch(&mut q).await.expect("a job is waiting");
        assert_eq!((first.job, first.attempt), (job, 1));
        assert!(fetch(&mut q).await.is_none(), "the job is locked, nothing else waits");
        // Extended at 200 ms, the lock now lasts until about 500 ms.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let extend = QueueOp::Extend { delivery: first.id };
        assert_eq!(q.execute_queue(&extend).await.expect("extend"), QueueReply::Acked);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(fetch(&mut q).await.is_none(), "the extended lock still holds at about 400 ms");
        assert!(
            matches!(q.execute_queue(&enqueue).await, Ok(QueueReply::Duplicate { job: j }) if j == job),
            "the dedup id holds while the job exists"
        );
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let second = fetch(&mut q).await.expect("the stalled job is delivered again");
        assert_eq!((second.job, second.attempt), (job, 2), "same job, second attempt");
        assert_ne!(second.id, first.id, "a new delivery");
        let ack = |d: DeliveryId| QueueOp::Ack { delivery: d };
        assert_eq!(q.execute_queue(&ack(first.id)).await.expect("ack"), QueueReply::LockLost);
        assert_eq!(q.execute_queue(&ack(second.id)).await.expect("ack"), QueueReply::Acked);
        let status = q.status().await.expect("status");
        assert_eq!((status.waiting, status.active, status.stalls), (0, 0, 1));
        assert!(
            matches!(q.execute_queue(&enqueue).await, Ok(QueueReply::Enqueued { .. })),
            "the dedup id is free once the job is done"
        );
        q.clean().await.expect("cleaning the test's keys");
    });
}

async fn fetch(q: &mut RedisQueue) -> Option<racelab_core::Delivery> {
    match q.execute_queue(&QueueOp::Fetch).await {
        Ok(QueueReply::Delivered(d)) => d,
        other => panic!("fetch answered {other:?}"),
    }
}
