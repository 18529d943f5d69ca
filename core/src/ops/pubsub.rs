//! Redis pub/sub from the subscriber's side: a process subscribes its (one) subscriber
//! connection to channels, then receives what is published to them, one message per
//! [`PubSubOp::Receive`]. Publishing is a Redis command ([`crate::KvOp::Publish`]).
//!
//! Delivery is at most once, as in Redis: a message reaches the connections subscribed when
//! it is published; a subscriber that is partitioned from Redis at that moment, crashed, or
//! not yet (re)subscribed misses it, and a failover or restart of Redis drops every
//! subscription (the subscriber learns it as [`PubSubReply::Disconnected`] and must subscribe
//! again). Messages to one connection arrive in publish order. Use it as an accelerator
//! (cache invalidation, wake-ups), never as the only carrier of a fact.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// An operation on the process's subscriber connection to Redis.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PubSubOp {
    /// `SUBSCRIBE channel [channel ...]`: from the moment Redis applies it, messages
    /// published to these channels are queued for this connection.
    Subscribe {
        /// The channels.
        channels: Vec<String>,
    },
    /// Waits up to `wait` for the next message on the connection.
    Receive {
        /// How long to wait for one (the driver's Redis timeout still applies).
        wait: Duration,
    },
}

/// The answer on the subscriber connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PubSubReply {
    /// Subscribed; the connection is now subscribed to this many channels.
    Subscribed {
        /// Channels subscribed to in all.
        count: u64,
    },
    /// A message published to a subscribed channel.
    Message {
        /// The channel.
        channel: String,
        /// The message.
        payload: String,
    },
    /// Nothing arrived within the wait.
    NoMessage,
    /// The connection is not subscribed (never was, or lost its subscriptions to a
    /// disconnect, a Redis failover or restart): subscribe again.
    Disconnected,
}

impl fmt::Display for PubSubOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PubSubOp::Subscribe { channels } => write!(f, "SUBSCRIBE {}", channels.join(" ")),
            PubSubOp::Receive { wait } => write!(f, "receive (wait {wait})"),
        }
    }
}

impl fmt::Display for PubSubReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PubSubReply::Subscribed { count } => write!(f, "subscribed to {count}"),
            PubSubReply::Message { channel, payload } => write!(f, "message {channel}: {payload}"),
            PubSubReply::NoMessage => write!(f, "no message"),
            PubSubReply::Disconnected => write!(f, "disconnected"),
        }
    }
}
