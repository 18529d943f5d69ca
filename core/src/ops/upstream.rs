//! The upstream API endpoints of documents 001 and 003: the calls the proxy makes
//! ([`UpstreamOp`]: a forwarded request or a health probe) and the endpoint's answer
//! ([`UpstreamReply`], an HTTP status).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::EndpointId;
use crate::time::Duration;

/// What kind of call the proxy makes to an upstream endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallKind {
    /// A user request, forwarded; the answer streams for `stream` after it starts.
    Request {
        /// How long the response streams after the endpoint accepted it.
        stream: Duration,
    },
    /// A health probe. `auth: false` is a probe that does not exercise the key (a connect
    /// or a model list), so it succeeds on an endpoint whose key was revoked.
    Probe {
        /// Whether the probe uses the endpoint's key.
        auth: bool,
    },
}

/// A call to an upstream endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamOp {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The call.
    pub kind: CallKind,
}

/// An upstream endpoint's answer: its HTTP status (200, 401, 429, 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamReply {
    /// The HTTP status.
    pub status: u16,
}

impl fmt::Display for UpstreamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CallKind::Request { stream } => {
                write!(f, "POST {}/v1/messages (streams {stream})", self.endpoint)
            }
            CallKind::Probe { auth: true } => write!(f, "probe {} with its key", self.endpoint),
            CallKind::Probe { auth: false } => write!(f, "probe {} without key", self.endpoint),
        }
    }
}
