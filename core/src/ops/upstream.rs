//! The upstream API endpoints: the calls a proxy or gateway makes ([`UpstreamOp`]) and the
//! endpoint's answers.
//!
//! Two kinds of call live side by side:
//!
//! - documents 001 and 003's one-shot calls, [`CallKind::Request`] (a forwarded request whose
//!   response streams for a while) and [`CallKind::Probe`], answered by one [`UpstreamReply`]
//!   (an HTTP status) in [`crate::Reply::Upstream`];
//! - the streaming calls of an LLM gateway, read the way a client reads a socket: one
//!   operation per step, so that every chunk read is an operation of the history with its own
//!   times, and a fault can aim at "the k-th chunk read". [`CallKind::Open`] starts a
//!   completion (answered by a stream handle, or a refusal with its status and Retry-After);
//!   each [`CallKind::Next`] is answered by the next frame once the endpoint has produced it
//!   (a [`StreamReply::Chunk`], then [`StreamReply::End`] with the final usage record, or
//!   [`StreamReply::Failed`] mid-stream, or [`StreamReply::Cancelled`]);
//!   [`CallKind::Cancel`] stops the generation; [`CallKind::Usage`] asks the provider what it
//!   billed for a request, as a correct gateway does after a disconnect. They are answered in
//!   [`crate::Reply::Stream`]. The endpoint generates whether or not the client reads: a
//!   client that disconnects simply stops sending `Next`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::EndpointId;
use crate::time::Duration;

/// A gateway's id for one user request, sent with [`CallKind::Open`] (as request metadata)
/// so that the provider's usage can be looked up by it ([`CallKind::Usage`]). Retries of one
/// request may reuse it: the provider then reports the sum of every attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// The handle of one open stream (one accepted [`CallKind::Open`]), assigned by the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamId(pub u64);

/// A usage record: the tokens a provider bills for a request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Usage {
    /// The prompt (input) tokens.
    pub prompt_tokens: u32,
    /// The completion (output) tokens generated.
    pub completion_tokens: u32,
}

impl Usage {
    /// The sum of two records (attempts of one request).
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_add(other.completion_tokens),
        }
    }
}

/// What kind of call the proxy makes to an upstream endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallKind {
    /// A user request, forwarded; the answer streams for `stream` after it starts. Answered
    /// by an [`UpstreamReply`] once the whole response has streamed.
    Request {
        /// How long the response streams after the endpoint accepted it.
        stream: Duration,
    },
    /// A health probe. `auth: false` is a probe that does not exercise the key (a connect
    /// or a model list), so it succeeds on an endpoint whose key was revoked. Answered by an
    /// [`UpstreamReply`].
    Probe {
        /// Whether the probe uses the endpoint's key.
        auth: bool,
    },
    /// Opens a streamed completion. Answered by [`StreamReply::Opened`] (HTTP 200, the
    /// headers) or [`StreamReply::Refused`] (401, 429 with Retry-After, 503). From the
    /// acceptance on the endpoint generates the completion's chunks on its own schedule.
    Open {
        /// The gateway's id for the request (the key of [`CallKind::Usage`]).
        request: RequestId,
        /// The prompt's tokens, billed once the endpoint accepts the call.
        prompt_tokens: u32,
    },
    /// Reads the next frame of an open stream. Answered, once the endpoint has produced it,
    /// by [`StreamReply::Chunk`], then [`StreamReply::End`]; or [`StreamReply::Failed`]
    /// (the stream broke), [`StreamReply::Cancelled`] (it was cancelled), or
    /// [`StreamReply::Closed`] (not a stream this connection reads, or read past its end).
    Next {
        /// The stream.
        stream: StreamId,
    },
    /// Stops a stream (the client closes the response): the endpoint stops generating, and
    /// bills what it generated until then. Answered by [`StreamReply::Cancelled`] or
    /// [`StreamReply::Closed`].
    Cancel {
        /// The stream.
        stream: StreamId,
    },
    /// Asks the provider for a request's usage (its usage or billing API). Answered by
    /// [`StreamReply::Usage`] or [`StreamReply::UnknownRequest`].
    Usage {
        /// The gateway's id for the request.
        request: RequestId,
    },
}

impl CallKind {
    /// Whether the call is one of the streaming calls, answered in [`crate::Reply::Stream`].
    pub fn is_stream(&self) -> bool {
        !matches!(self, CallKind::Request { .. } | CallKind::Probe { .. })
    }
}

/// A call to an upstream endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamOp {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The call.
    pub kind: CallKind,
}

/// An upstream endpoint's answer to a [`CallKind::Request`] or [`CallKind::Probe`]: its HTTP
/// status (200, 401, 429, 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamReply {
    /// The HTTP status.
    pub status: u16,
}

/// An upstream endpoint's answer to a streaming call ([`CallKind::Open`], [`CallKind::Next`],
/// [`CallKind::Cancel`], [`CallKind::Usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamReply {
    /// The call was accepted (HTTP 200): the stream to read.
    Opened {
        /// The handle for [`CallKind::Next`] and [`CallKind::Cancel`].
        stream: StreamId,
    },
    /// The call was refused: nothing is generated or billed.
    Refused {
        /// The HTTP status: 401 (key revoked), 429 (rate limited) or 503 (down).
        status: u16,
        /// A 429's Retry-After: how long until the rate limit lifts.
        retry_after: Option<Duration>,
    },
    /// The next chunk of the completion.
    Chunk {
        /// Its index in the stream, from 0.
        index: u32,
        /// The completion tokens it carries.
        tokens: u32,
    },
    /// The stream ended normally. `usage` is the final usage record, when the endpoint sends
    /// one (OpenAI only with `stream_options.include_usage`; Anthropic always).
    End {
        /// The final usage record, if sent.
        usage: Option<Usage>,
    },
    /// The stream broke after `after_chunks` chunks (no usage record follows).
    Failed {
        /// The chunks produced before the failure.
        after_chunks: u32,
    },
    /// The stream was cancelled: the answer to [`CallKind::Cancel`], and to every read of a
    /// cancelled stream.
    Cancelled,
    /// Not a stream this connection reads (unknown, another process', its reader crashed),
    /// or read past its end.
    Closed,
    /// The provider's usage for a request (the sum over its attempts).
    Usage {
        /// The tokens billed so far.
        usage: Usage,
        /// Whether every attempt has stopped generating, so that `usage` is final.
        complete: bool,
    },
    /// The provider knows no call with this request id on this endpoint.
    UnknownRequest,
}

impl StreamReply {
    /// Whether the call did what it asked: a stream opened, a frame read (a chunk, the end),
    /// a cancel applied, a usage record found.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            StreamReply::Opened { .. }
                | StreamReply::Chunk { .. }
                | StreamReply::End { .. }
                | StreamReply::Cancelled
                | StreamReply::Usage { .. }
        )
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} prompt + {} completion tokens",
            self.prompt_tokens, self.completion_tokens
        )
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl fmt::Display for UpstreamOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.endpoint;
        match self.kind {
            CallKind::Request { stream } => {
                write!(f, "POST {e}/v1/messages (streams {stream})")
            }
            CallKind::Probe { auth: true } => write!(f, "probe {e} with its key"),
            CallKind::Probe { auth: false } => write!(f, "probe {e} without key"),
            CallKind::Open {
                request,
                prompt_tokens,
            } => write!(
                f,
                "POST {e}/v1/messages stream for {request} ({prompt_tokens} prompt tokens)"
            ),
            CallKind::Next { stream } => write!(f, "read {stream} from {e}"),
            CallKind::Cancel { stream } => write!(f, "cancel {stream} on {e}"),
            CallKind::Usage { request } => write!(f, "GET {e} usage of {request}"),
        }
    }
}

impl fmt::Display for StreamReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamReply::Opened { stream } => write!(f, "HTTP 200, {stream}"),
            StreamReply::Refused {
                status,
                retry_after: Some(after),
            } => write!(f, "HTTP {status} (Retry-After {after})"),
            StreamReply::Refused { status, .. } => write!(f, "HTTP {status}"),
            StreamReply::Chunk { index, tokens } => write!(f, "chunk {index} ({tokens} tokens)"),
            StreamReply::End { usage: Some(u) } => write!(f, "end, usage {u}"),
            StreamReply::End { usage: None } => write!(f, "end, no usage"),
            StreamReply::Failed { after_chunks } => {
                write!(f, "stream failed after {after_chunks} chunks")
            }
            StreamReply::Cancelled => write!(f, "cancelled"),
            StreamReply::Closed => write!(f, "closed"),
            StreamReply::Usage {
                usage,
                complete: true,
            } => write!(f, "usage {usage}"),
            StreamReply::Usage {
                usage,
                complete: false,
            } => write!(f, "usage so far {usage} (still generating)"),
            StreamReply::UnknownRequest => write!(f, "unknown request"),
        }
    }
}
