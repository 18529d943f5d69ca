//! The upstream API endpoints (an LLM-style API): each answers by a script of
//! virtual-time windows (key revoked from `t`, rate limited, down), and generates streamed
//! completions from its [`StreamScript`].
//!
//! [`Upstream`] is the script, and answers documents 001 and 003's one-shot calls as a pure
//! function of the time ([`Upstream::call`]). [`UpstreamModel`] adds the state of the
//! streaming calls: the open streams, each generating its chunks over virtual time from the
//! moment the endpoint accepted it, whether or not anyone reads them, until its script ends,
//! it fails, or it is cancelled. The provider's usage of a stream is what it generated.

use std::collections::BTreeMap;

use racelab_core::{
    CallKind, Duration, EndpointId, RequestId, StreamId, StreamReply, Timestamp, UpstreamOp,
    UpstreamReply, Usage,
};

/// How an endpoint generates a streamed completion ([`CallKind::Open`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StreamScript {
    /// From the acceptance to the first chunk (time to first token).
    pub first_chunk_after: Duration,
    /// Between two chunks.
    pub gap: Duration,
    /// The completion tokens of each chunk, in order (their number is the chunk count).
    pub chunks: Vec<u32>,
    /// Whether the end of the stream carries the usage record (OpenAI only with
    /// `stream_options.include_usage`).
    pub usage_in_final: bool,
    /// The stream breaks when chunk `k` would be produced (after `k` chunks): no further
    /// chunk, no usage record.
    pub fail_after: Option<u32>,
}

impl StreamScript {
    /// `count` chunks of `tokens` tokens, `gap` apart, the first after `gap`, with the usage
    /// record at the end.
    pub fn uniform(count: u32, tokens: u32, gap: Duration) -> StreamScript {
        StreamScript {
            first_chunk_after: gap,
            gap,
            chunks: vec![tokens; count as usize],
            usage_in_final: true,
            fail_after: None,
        }
    }

    /// The chunks the stream produces before it ends or fails.
    fn produced(&self) -> u32 {
        let all = u32::try_from(self.chunks.len()).unwrap_or(u32::MAX);
        self.fail_after.map_or(all, |k| k.min(all))
    }

    /// When frame `i` (chunk `i`, or the end or failure when `i` is past the chunks) is
    /// produced by a stream accepted at `base`. The end comes with the last chunk.
    fn frame_at(&self, base: Timestamp, i: u32) -> Timestamp {
        let last = if i < self.produced() || self.fail_after.is_some() || i == 0 {
            i
        } else {
            i - 1
        };
        base + self.first_chunk_after
            + Duration::from_ms(self.gap.as_ms().saturating_mul(u64::from(last)))
    }
}

impl Default for StreamScript {
    /// Four chunks of 5 tokens, 100 ms apart, with the usage record.
    fn default() -> StreamScript {
        StreamScript::uniform(4, 5, Duration::from_ms(100))
    }
}

/// How one endpoint behaves over time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointScript {
    /// From this time on the key is rejected (401) by requests and by keyed probes.
    pub revoked_at: Option<Timestamp>,
    /// Windows `[from, to)` in which requests get 429.
    pub rate_limited: Vec<(Timestamp, Timestamp)>,
    /// Windows `[from, to)` in which every call gets 503.
    pub down: Vec<(Timestamp, Timestamp)>,
    /// Windows `[from, to)` in which the endpoint answers calls that reach it this much
    /// later (a slow endpoint; the answer is decided when the call arrives).
    pub slow: Vec<(Timestamp, Timestamp, Duration)>,
    /// How it generates streamed completions. A stream, once accepted, ignores the windows
    /// above (its key was checked at the open).
    pub stream: StreamScript,
}

/// The upstream endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Each endpoint's script; an endpoint not listed always answers 200.
    pub endpoints: BTreeMap<EndpointId, EndpointScript>,
}

fn window(windows: &[(Timestamp, Timestamp)], now: Timestamp) -> Option<Timestamp> {
    windows
        .iter()
        .find(|(from, to)| *from <= now && now < *to)
        .map(|w| w.1)
}

fn within(windows: &[(Timestamp, Timestamp)], now: Timestamp) -> bool {
    window(windows, now).is_some()
}

impl Upstream {
    /// The status a call gets when it reaches the endpoint at `now`, and how much longer
    /// than the network latency its answer takes (streaming, a slow endpoint). For
    /// [`CallKind::Request`] and [`CallKind::Probe`]; a streaming call gets the status its
    /// [`CallKind::Open`] would.
    pub fn call(&self, now: Timestamp, op: &UpstreamOp) -> (UpstreamReply, Duration) {
        let script = self.endpoints.get(&op.endpoint);
        let revoked = script.and_then(|s| s.revoked_at).is_some_and(|t| t <= now);
        let down = script.is_some_and(|s| within(&s.down, now));
        let limited = script.is_some_and(|s| within(&s.rate_limited, now));
        let keyed = matches!(
            op.kind,
            CallKind::Request { .. } | CallKind::Probe { auth: true } | CallKind::Open { .. }
        );
        let status = match op.kind {
            _ if down => 503,
            _ if keyed && revoked => 401,
            CallKind::Request { .. } | CallKind::Open { .. } if limited => 429,
            _ => 200,
        };
        let stream = match op.kind {
            CallKind::Request { stream } if status == 200 => stream,
            _ => Duration::ZERO,
        };
        (
            UpstreamReply { status },
            self.slow(op.endpoint, now) + stream,
        )
    }

    fn slow(&self, endpoint: EndpointId, now: Timestamp) -> Duration {
        self.endpoints
            .get(&endpoint)
            .and_then(|s| {
                s.slow
                    .iter()
                    .find(|(from, to, _)| *from <= now && now < *to)
                    .map(|w| w.2)
            })
            .unwrap_or(Duration::ZERO)
    }

    fn stream_script(&self, endpoint: EndpointId) -> StreamScript {
        self.endpoints
            .get(&endpoint)
            .map(|s| s.stream.clone())
            .unwrap_or_default()
    }
}

/// One stream an endpoint accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Stream {
    endpoint: EndpointId,
    request: RequestId,
    prompt_tokens: u32,
    script: StreamScript,
    /// Generation starts here (the acceptance, plus a slow window's delay).
    base: Timestamp,
    /// The process (index and incarnation) reading it; `None` once that process crashed.
    reader: Option<(usize, u32)>,
    /// Frames delivered to the reader.
    read: u32,
    /// The end or the failure was delivered.
    finished: bool,
    /// When a cancel reached the endpoint.
    cancelled_at: Option<Timestamp>,
}

impl Stream {
    /// The completion tokens generated by `t` (by the cancel, if earlier).
    fn generated_by(&self, t: Option<Timestamp>) -> u32 {
        let until = match (t, self.cancelled_at) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        };
        (0..self.script.produced())
            .filter(|i| until.is_none_or(|u| self.script.frame_at(self.base, *i) <= u))
            .map(|i| self.script.chunks[i as usize])
            .fold(0u32, u32::saturating_add)
    }

    fn usage_by(&self, t: Option<Timestamp>) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generated_by(t),
        }
    }

    /// When it stops generating: its last chunk or its failure, or the cancel if earlier.
    fn done_at(&self) -> Timestamp {
        let produced = self.script.produced();
        let last = self.script.frame_at(self.base, produced.saturating_sub(1));
        let end = if self.script.fail_after.is_some() {
            self.script.frame_at(self.base, produced)
        } else {
            last
        };
        self.cancelled_at.map_or(end, |c| c.min(end))
    }
}

/// What a streaming call gets when it reaches the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStep {
    /// The answer, and how much longer than the network latency it takes (a slow window).
    Reply(StreamReply, Duration),
    /// A read of a frame not yet produced: ask again at this time (or when the stream is
    /// cancelled or its reader gone).
    Wait(Timestamp),
}

/// The endpoints' state: the scripts, and every stream they accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamModel {
    script: Upstream,
    streams: BTreeMap<StreamId, Stream>,
}

impl UpstreamModel {
    /// The endpoints of `script`, no stream open.
    pub fn new(script: Upstream) -> UpstreamModel {
        UpstreamModel {
            script,
            streams: BTreeMap::new(),
        }
    }

    /// A one-shot call ([`CallKind::Request`], [`CallKind::Probe`]): [`Upstream::call`].
    pub fn call(&self, now: Timestamp, op: &UpstreamOp) -> (UpstreamReply, Duration) {
        self.script.call(now, op)
    }

    /// A streaming call from `reader` (a process' index and incarnation: one connection)
    /// reaching the endpoint at `now`. A one-shot call gets [`StreamReply::Closed`] here (the
    /// world never sends one).
    pub fn stream_call(
        &mut self,
        now: Timestamp,
        reader: (usize, u32),
        op: &UpstreamOp,
    ) -> StreamStep {
        let ready = |reply| StreamStep::Reply(reply, Duration::ZERO);
        match op.kind {
            CallKind::Open {
                request,
                prompt_tokens,
            } => {
                let (UpstreamReply { status }, slow) = self.script.call(now, op);
                if status != 200 {
                    let retry_after = (status == 429)
                        .then(|| {
                            let script = self.script.endpoints.get(&op.endpoint)?;
                            window(&script.rate_limited, now).map(|to| to.saturating_since(now))
                        })
                        .flatten();
                    return StreamStep::Reply(
                        StreamReply::Refused {
                            status,
                            retry_after,
                        },
                        slow,
                    );
                }
                let stream = StreamId(self.streams.len() as u64 + 1);
                self.streams.insert(
                    stream,
                    Stream {
                        endpoint: op.endpoint,
                        request,
                        prompt_tokens,
                        script: self.script.stream_script(op.endpoint),
                        base: now + slow,
                        reader: Some(reader),
                        read: 0,
                        finished: false,
                        cancelled_at: None,
                    },
                );
                StreamStep::Reply(StreamReply::Opened { stream }, slow)
            }
            CallKind::Next { stream } => {
                let Some(s) = self.own(stream, op.endpoint, reader) else {
                    return ready(StreamReply::Closed);
                };
                if s.cancelled_at.is_some() {
                    return ready(StreamReply::Cancelled);
                }
                if s.finished {
                    return ready(StreamReply::Closed);
                }
                let at = s.script.frame_at(s.base, s.read);
                if at > now {
                    return StreamStep::Wait(at);
                }
                let produced = s.script.produced();
                let reply = if s.read < produced {
                    let index = s.read;
                    s.read += 1;
                    StreamReply::Chunk {
                        index,
                        tokens: s.script.chunks[index as usize],
                    }
                } else if s.script.fail_after.is_some() {
                    s.finished = true;
                    StreamReply::Failed {
                        after_chunks: produced,
                    }
                } else {
                    s.finished = true;
                    let usage = s.usage_by(None);
                    StreamReply::End {
                        usage: s.script.usage_in_final.then_some(usage),
                    }
                };
                ready(reply)
            }
            CallKind::Cancel { stream } => match self.own(stream, op.endpoint, reader) {
                Some(s) => {
                    s.cancelled_at = Some(s.cancelled_at.map_or(now, |c| c.min(now)));
                    ready(StreamReply::Cancelled)
                }
                None => ready(StreamReply::Closed),
            },
            CallKind::Usage { request } => {
                let mut found = false;
                let mut usage = Usage::default();
                let mut complete = true;
                for s in self.streams.values() {
                    if s.endpoint == op.endpoint && s.request == request {
                        found = true;
                        usage = usage.plus(s.usage_by(Some(now)));
                        complete &= s.done_at() <= now;
                    }
                }
                ready(if found {
                    StreamReply::Usage { usage, complete }
                } else {
                    StreamReply::UnknownRequest
                })
            }
            CallKind::Request { .. } | CallKind::Probe { .. } => ready(StreamReply::Closed),
        }
    }

    /// The stream `stream` on `endpoint` if `reader` reads it.
    fn own(
        &mut self,
        stream: StreamId,
        endpoint: EndpointId,
        reader: (usize, u32),
    ) -> Option<&mut Stream> {
        self.streams
            .get_mut(&stream)
            .filter(|s| s.endpoint == endpoint && s.reader == Some(reader))
    }

    /// Process `process` crashed: its connections are gone. Its streams keep generating to
    /// their end (a provider does not notice a vanished reader at once, and bills what it
    /// generated); reads of them get [`StreamReply::Closed`] from now on.
    pub fn reader_gone(&mut self, process: usize) {
        for s in self.streams.values_mut() {
            if s.reader.is_some_and(|(p, _)| p == process) {
                s.reader = None;
            }
        }
    }

    /// The connection reading `stream` closed or broke (the net world, where a stream is read
    /// on the connection that opened it): the stream keeps generating to its end, as after
    /// [`UpstreamModel::reader_gone`], and reads or cancels of it get
    /// [`StreamReply::Closed`] from now on.
    pub fn stream_reader_gone(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.reader = None;
        }
    }

    /// What the provider bills in the end for each request (the sum over its attempts):
    /// every stream generates to its end unless it failed or was cancelled.
    pub fn final_usage(&self) -> BTreeMap<(EndpointId, RequestId), Usage> {
        let mut out: BTreeMap<(EndpointId, RequestId), Usage> = BTreeMap::new();
        for s in self.streams.values() {
            let entry = out.entry((s.endpoint, s.request)).or_default();
            *entry = entry.plus(s.usage_by(None));
        }
        out
    }
}
