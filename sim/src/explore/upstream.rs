//! The upstream API endpoints (an LLM-style API): each answers by a script of
//! virtual-time windows (key revoked from `t`, rate limited, down).

use std::collections::BTreeMap;

use racelab_core::{CallKind, Duration, EndpointId, Timestamp, UpstreamOp, UpstreamReply};

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
}

/// The upstream endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Each endpoint's script; an endpoint not listed always answers 200.
    pub endpoints: BTreeMap<EndpointId, EndpointScript>,
}

fn within(windows: &[(Timestamp, Timestamp)], now: Timestamp) -> bool {
    windows.iter().any(|(from, to)| *from <= now && now < *to)
}

impl Upstream {
    /// The status a call gets when it reaches the endpoint at `now`, and how much longer
    /// than the network latency its answer takes (streaming, a slow endpoint).
    pub fn call(&self, now: Timestamp, op: &UpstreamOp) -> (UpstreamReply, Duration) {
        let script = self.endpoints.get(&op.endpoint);
        let revoked = script.and_then(|s| s.revoked_at).is_some_and(|t| t <= now);
        let down = script.is_some_and(|s| within(&s.down, now));
        let limited = script.is_some_and(|s| within(&s.rate_limited, now));
        let status = match op.kind {
            _ if down => 503,
            CallKind::Request { .. } | CallKind::Probe { auth: true } if revoked => 401,
            CallKind::Request { .. } if limited => 429,
            _ => 200,
        };
        let slow = script
            .and_then(|s| {
                s.slow
                    .iter()
                    .find(|(from, to, _)| *from <= now && now < *to)
                    .map(|w| w.2)
            })
            .unwrap_or(Duration::ZERO);
        let stream = match op.kind {
            CallKind::Request { stream } if status == 200 => stream,
            _ => Duration::ZERO,
        };
        (UpstreamReply { status }, slow + stream)
    }
}
