//! The job queue: an at-least-once queue (Bull-like) with enqueue under an optional dedup
//! id, fetch with a job lock, ack, nack and lock extension ([`QueueOp`], [`QueueReply`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a job in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// Identifies one delivery of a job (a job delivered twice has two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryId(pub u64);

/// A job's fields (a Redis stream entry's field-value pairs).
pub type JobFields = BTreeMap<String, String>;

/// A queue operation (Bull-like, at-least-once).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueOp {
    /// Add a job. With `dedup`, a job with the same dedup id that still exists (waiting or
    /// active) makes this a no-op (Bull's `jobId`).
    Enqueue {
        /// Bull's `jobId`.
        dedup: Option<String>,
        /// The job's data.
        fields: JobFields,
    },
    /// Take the next waiting job, locking it for the queue's lock duration.
    Fetch,
    /// Complete a delivery. Fails with [`QueueReply::LockLost`] when the job's lock expired
    /// and it was (or will be) delivered again.
    Ack {
        /// The delivery.
        delivery: DeliveryId,
    },
    /// Fail a delivery: the job goes back to waiting (Bull's retry with `attempts`).
    Nack {
        /// The delivery.
        delivery: DeliveryId,
    },
    /// Extend the delivery's job lock by the lock duration (Bull renews it every
    /// `lockDuration / 2` while the processor's event loop runs). Fails with
    /// [`QueueReply::LockLost`] if the job already stalled.
    Extend {
        /// The delivery.
        delivery: DeliveryId,
    },
}

/// One delivery of a job.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delivery {
    /// This delivery.
    pub id: DeliveryId,
    /// The job.
    pub job: JobId,
    /// 1 for the first delivery, 2 for the first redelivery, ...
    pub attempt: u32,
    /// The job's data.
    pub fields: JobFields,
}

/// The queue's answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueReply {
    /// The job was added.
    Enqueued {
        /// Its id.
        job: JobId,
    },
    /// A job with this dedup id exists; nothing was added.
    Duplicate {
        /// The existing job.
        job: JobId,
    },
    /// The next job, or `None` when none is waiting.
    Delivered(Option<Delivery>),
    /// The delivery was completed (or failed back to waiting, for `Nack`).
    Acked,
    /// The delivery no longer holds the job's lock: the job was stalled and moved back.
    LockLost,
}

impl fmt::Display for QueueOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueOp::Enqueue { dedup, fields } => {
                write!(f, "ENQUEUE")?;
                if let Some(d) = dedup {
                    write!(f, " jobId={d}")?;
                }
                for (k, v) in fields {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
            QueueOp::Fetch => write!(f, "FETCH"),
            QueueOp::Ack { delivery } => write!(f, "ACK d{}", delivery.0),
            QueueOp::Nack { delivery } => write!(f, "NACK d{}", delivery.0),
            QueueOp::Extend { delivery } => write!(f, "EXTEND d{}", delivery.0),
        }
    }
}

impl fmt::Display for QueueReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueReply::Enqueued { job } => write!(f, "job j{}", job.0),
            QueueReply::Duplicate { job } => write!(f, "duplicate of j{}", job.0),
            QueueReply::Delivered(None) => write!(f, "empty"),
            QueueReply::Delivered(Some(d)) => {
                write!(f, "j{} (d{}, attempt {})", d.job.0, d.id.0, d.attempt)
            }
            QueueReply::Acked => write!(f, "OK"),
            QueueReply::LockLost => write!(f, "lock lost (job stalled)"),
        }
    }
}
