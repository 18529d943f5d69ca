//! Push connections between processes (a WebSocket between a scheduler and a node, behind a
//! load balancer): a process listens for a service, another connects to the service and the
//! balancer picks a listener; both ends then send messages and receive events on the
//! connection. Messages arrive in the order they were sent on their connection, and are lost
//! with it: a crash of either end, or a partition of either end from the balancer
//! ([`crate::StoreId::Push`]), closes the connection, and each surviving end learns it as
//! [`PushReply::Closed`]. Nothing is redelivered: a result that must arrive is routed through
//! a store, not through a connection.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::ProcessId;
use crate::time::Duration;

/// A push connection, numbered by the balancer from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// An operation on the process's push connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PushOp {
    /// Accept connections to `service` from now on (until the process crashes).
    Listen {
        /// The service name.
        service: String,
    },
    /// Open a connection to `service`: the balancer picks the listener with the fewest open
    /// connections (the lowest process number on a tie).
    Connect {
        /// The service name.
        service: String,
    },
    /// Send a message on a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        message: String,
    },
    /// Wait up to `wait` for the next event on any of the process's connections.
    Receive {
        /// How long to wait.
        wait: Duration,
    },
    /// Close a connection (the peer learns it).
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// The answer to a [`PushOp`], or an event on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PushReply {
    /// Listening.
    Listening,
    /// Connected to `peer`.
    Connected {
        /// The new connection.
        conn: ConnId,
        /// The listener the balancer picked.
        peer: ProcessId,
    },
    /// No process listens for the service.
    Refused,
    /// The message is on its way.
    Sent,
    /// The connection is closed (a send on it, or an event: the peer crashed, closed it, or
    /// one end was cut off).
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// A new inbound connection (event, at the listener).
    Accepted {
        /// The connection.
        conn: ConnId,
        /// Who connected.
        peer: ProcessId,
    },
    /// A message (event).
    Message {
        /// The connection it came on.
        conn: ConnId,
        /// The message.
        payload: String,
    },
    /// Nothing happened within the wait.
    NoMessage,
}

impl fmt::Display for PushOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushOp::Listen { service } => write!(f, "listen {service}"),
            PushOp::Connect { service } => write!(f, "connect {service}"),
            PushOp::Send { conn, message } => write!(f, "send {conn} {message}"),
            PushOp::Receive { wait } => write!(f, "receive push (wait {wait})"),
            PushOp::Close { conn } => write!(f, "close {conn}"),
        }
    }
}

impl fmt::Display for PushReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushReply::Listening => write!(f, "listening"),
            PushReply::Connected { conn, peer } => write!(f, "{conn} to {peer}"),
            PushReply::Refused => write!(f, "refused"),
            PushReply::Sent => write!(f, "sent"),
            PushReply::Closed { conn } => write!(f, "{conn} closed"),
            PushReply::Accepted { conn, peer } => write!(f, "{conn} from {peer}"),
            PushReply::Message { conn, payload } => write!(f, "{conn}: {payload}"),
            PushReply::NoMessage => write!(f, "nothing"),
        }
    }
}
