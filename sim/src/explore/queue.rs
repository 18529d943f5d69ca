//! The queue model (Bull-like, at-least-once): a fetched job is locked for the lock duration
//! (Bull's `lockDuration`, 30 s); a job whose lock expires before it is acked is stalled and
//! moved back to waiting, so it is delivered again while its first worker may still be
//! running. An ack from a delivery that lost its lock fails. A dedup id (Bull's `jobId`)
//! drops an enqueue while a job with the same id still exists.
//!
//! The queue is taken to be durable (Bull's Redis with persistence): the Redis faults of the
//! lock's key space (failover, restart) do not lose jobs; a lost enqueue answer and the
//! terminal's resubmission stand for an outage's duplicates.

use std::collections::{BTreeMap, VecDeque};

use racelab_core::{
    Delivery, DeliveryId, Duration, JobFields, JobId, QueueOp, QueueReply, Timestamp,
};

#[derive(Debug)]
enum JobState {
    Waiting,
    Active {
        delivery: DeliveryId,
        deadline: Timestamp,
    },
    Done,
}

#[derive(Debug)]
struct Job {
    fields: JobFields,
    dedup: Option<String>,
    attempts: u32,
    state: JobState,
}

/// The queue's jobs.
#[derive(Debug)]
pub struct QueueModel {
    jobs: BTreeMap<JobId, Job>,
    waiting: VecDeque<JobId>,
    lock_duration: Duration,
    next_job: u64,
    next_delivery: u64,
    /// How many jobs were moved back after their lock expired.
    pub stalls: u64,
}

impl QueueModel {
    /// An empty queue whose fetched jobs stay locked for `lock_duration`.
    pub fn new(lock_duration: Duration) -> QueueModel {
        QueueModel {
            jobs: BTreeMap::new(),
            waiting: VecDeque::new(),
            lock_duration,
            next_job: 0,
            next_delivery: 0,
            stalls: 0,
        }
    }

    /// Executes one operation at `now`.
    pub fn execute(&mut self, now: Timestamp, op: &QueueOp) -> QueueReply {
        self.requeue_stalled(now);
        match op {
            QueueOp::Enqueue { dedup, fields } => {
                if let Some(d) = dedup {
                    let existing = self.jobs.iter().find(|(_, j)| {
                        j.dedup.as_ref() == Some(d) && !matches!(j.state, JobState::Done)
                    });
                    if let Some((id, _)) = existing {
                        return QueueReply::Duplicate { job: *id };
                    }
                }
                self.next_job += 1;
                let id = JobId(self.next_job);
                let job = Job {
                    fields: fields.clone(),
                    dedup: dedup.clone(),
                    attempts: 0,
                    state: JobState::Waiting,
                };
                self.jobs.insert(id, job);
                self.waiting.push_back(id);
                QueueReply::Enqueued { job: id }
            }
            QueueOp::Fetch => {
                let Some(id) = self.waiting.pop_front() else {
                    return QueueReply::Delivered(None);
                };
                self.next_delivery += 1;
                let delivery = DeliveryId(self.next_delivery);
                let deadline = now + self.lock_duration;
                let Some(job) = self.jobs.get_mut(&id) else {
                    return QueueReply::Delivered(None);
                };
                job.attempts += 1;
                job.state = JobState::Active { delivery, deadline };
                QueueReply::Delivered(Some(Delivery {
                    id: delivery,
                    job: id,
                    attempt: job.attempts,
                    fields: job.fields.clone(),
                }))
            }
            QueueOp::Extend { delivery } => {
                let lock = self.lock_duration;
                let found = self.jobs.values_mut().find(
                    |j| matches!(j.state, JobState::Active { delivery: d, .. } if d == *delivery),
                );
                match found {
                    Some(job) => {
                        job.state = JobState::Active {
                            delivery: *delivery,
                            deadline: now + lock,
                        };
                        QueueReply::Acked
                    }
                    None => QueueReply::LockLost,
                }
            }
            QueueOp::Ack { delivery } | QueueOp::Nack { delivery } => {
                let found = self.jobs.iter_mut().find(|(_, j)| {
                    matches!(j.state, JobState::Active { delivery: d, .. } if d == *delivery)
                });
                let Some((id, job)) = found else {
                    return QueueReply::LockLost;
                };
                if matches!(op, QueueOp::Ack { .. }) {
                    job.state = JobState::Done;
                } else {
                    job.state = JobState::Waiting;
                    self.waiting.push_back(*id);
                }
                QueueReply::Acked
            }
        }
    }

    /// Whether every job is done (nothing waiting, nothing active).
    pub fn is_drained(&self) -> bool {
        self.unfinished() == 0
    }

    /// How many jobs are not completed (waiting or active).
    pub fn unfinished(&self) -> usize {
        self.jobs
            .values()
            .filter(|j| !matches!(j.state, JobState::Done))
            .count()
    }

    /// Bull's stalled-job checker: active jobs whose lock expired go back to waiting.
    fn requeue_stalled(&mut self, now: Timestamp) {
        for (id, job) in &mut self.jobs {
            if let JobState::Active { deadline, .. } = job.state
                && deadline <= now
            {
                job.state = JobState::Waiting;
                self.waiting.push_back(*id);
                self.stalls += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_ms(ms)
    }

    fn enqueue(q: &mut QueueModel, dedup: Option<&str>) -> QueueReply {
        let op = QueueOp::Enqueue {
            dedup: dedup.map(str::to_string),
            fields: JobFields::new(),
        };
        q.execute(t(0), &op)
    }

    fn fetch(q: &mut QueueModel, now: u64) -> Option<Delivery> {
        match q.execute(t(now), &QueueOp::Fetch) {
            QueueReply::Delivered(d) => d,
            other => panic!("fetch answered {other:?}"),
        }
    }

    #[test]
    fn a_stalled_job_is_delivered_again_and_the_old_ack_fails() {
        let mut q = QueueModel::new(Duration::from_secs(30));
        enqueue(&mut q, None);
        let first = fetch(&mut q, 0).expect("a job");
        assert!(fetch(&mut q, 29_999).is_none(), "still locked");
        let second = fetch(&mut q, 30_000).expect("redelivered after the lock expired");
        assert_eq!(second.job, first.job);
        assert_eq!(second.attempt, 2);
        assert_eq!(
            q.execute(t(31_000), &QueueOp::Ack { delivery: first.id }),
            QueueReply::LockLost
        );
        assert_eq!(
            q.execute(
                t(31_000),
                &QueueOp::Ack {
                    delivery: second.id
                }
            ),
            QueueReply::Acked
        );
        assert!(q.is_drained());
        assert_eq!(q.stalls, 1);
    }

    #[test]
    fn dedup_holds_only_while_the_job_exists() {
        let mut q = QueueModel::new(Duration::from_secs(30));
        assert!(matches!(
            enqueue(&mut q, Some("s-1")),
            QueueReply::Enqueued { .. }
        ));
        assert!(matches!(
            enqueue(&mut q, Some("s-1")),
            QueueReply::Duplicate { .. }
        ));
        let d = fetch(&mut q, 0).expect("a job");
        q.execute(t(1), &QueueOp::Ack { delivery: d.id });
        assert!(matches!(
            enqueue(&mut q, Some("s-1")),
            QueueReply::Enqueued { .. }
        ));
    }

    #[test]
    fn an_extended_job_does_not_stall_and_a_stalled_one_cannot_be_extended() {
        let mut q = QueueModel::new(Duration::from_secs(30));
        enqueue(&mut q, None);
        let d = fetch(&mut q, 0).expect("a job");
        assert_eq!(
            q.execute(t(15_000), &QueueOp::Extend { delivery: d.id }),
            QueueReply::Acked
        );
        assert!(
            fetch(&mut q, 44_999).is_none(),
            "the lock now lasts until 45 s"
        );
        let again = fetch(&mut q, 45_000).expect("stalled at 45 s");
        assert_eq!(
            q.execute(t(45_001), &QueueOp::Extend { delivery: d.id }),
            QueueReply::LockLost
        );
        assert_eq!(
            q.execute(t(45_001), &QueueOp::Ack { delivery: again.id }),
            QueueReply::Acked
        );
    }

    #[test]
    fn nack_puts_the_job_back() {
        let mut q = QueueModel::new(Duration::from_secs(30));
        enqueue(&mut q, None);
        let d = fetch(&mut q, 0).expect("a job");
        assert_eq!(
            q.execute(t(1), &QueueOp::Nack { delivery: d.id }),
            QueueReply::Acked
        );
        assert!(!q.is_drained());
        assert_eq!(fetch(&mut q, 2).expect("again").attempt, 2);
    }
}
