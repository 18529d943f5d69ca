//! The proxy's event log and the invariants judged on it (I-401, I-FQ4).
//!
//! Every event is appended in the same synchronous block as the table or queue operation it
//! reports, with no await in between, so on one event loop (or one simulated thread) the
//! log's order is the order in which the operations took effect. A [`Ticket`] is the log
//! index of the event that started an attempt or a probe.

use std::fmt;

use racelab_core::health::{EndpointId, Observation, ObserveOutcome, Source};

use crate::sync::{Mutex, lock};

/// A request forwarded by the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u32);

/// The log index of the event that started an attempt or a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub usize);

/// One thing the proxy did to its shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request attempt was dispatched to `endpoint`.
    Dispatched {
        /// The request.
        request: RequestId,
        /// 1-based attempt number.
        attempt: u32,
        /// Where it goes.
        endpoint: EndpointId,
    },
    /// A health probe (health monitor or failure-queue recovery) of `endpoint` started.
    ProbeStarted {
        /// The probed endpoint.
        endpoint: EndpointId,
    },
    /// An observation was recorded in the health table.
    Recorded {
        /// The endpoint.
        endpoint: EndpointId,
        /// What the attempt or probe showed.
        observation: Observation,
        /// Who observed it.
        source: Source,
        /// The event that started the attempt or probe.
        started: Ticket,
        /// What the table did with it.
        outcome: ObserveOutcome,
    },
    /// `add_failed_endpoint(endpoint)`.
    FailureAdded {
        /// The endpoint.
        endpoint: EndpointId,
        /// Whether it was newly inserted.
        inserted: bool,
    },
    /// A recovery probe succeeded and the recovery loop tried to remove the endpoint.
    Recovered {
        /// The endpoint.
        endpoint: EndpointId,
        /// The [`Event::ProbeStarted`] of the recovery probe.
        started: Ticket,
        /// Whether the endpoint was removed from the queue.
        removed: bool,
    },
}

/// The append-only event log shared by the proxy's tasks.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<Vec<Event>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        EventLog::default()
    }

    /// Appends `event`; returns its index.
    pub fn record(&self, event: Event) -> Ticket {
        let mut events = lock(&self.events);
        events.push(event);
        Ticket(events.len() - 1)
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.events).clone()
    }
}

/// An invariant violated by the event at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogViolation {
    /// The violating event's index.
    pub index: usize,
    /// What happened, naming the events involved.
    pub explanation: String,
}

impl fmt::Display for LogViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {}", self.index, self.explanation)
    }
}

/// I-401 (R-001-01, R-001-02): once a 401 from E is recorded (at `t_f`), no request attempt
/// is dispatched to E until a probe that started after `t_f` has succeeded. Returns the
/// first violation.
pub fn no_dispatch_after_401(events: &[Event]) -> Option<LogViolation> {
    let mut blocked: Vec<(EndpointId, usize)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match *event {
            Event::Recorded {
                endpoint,
                observation: Observation::Unauthorized,
                ..
            } if !blocked.iter().any(|b| b.0 == endpoint) => blocked.push((endpoint, index)),
            Event::Recorded {
                endpoint,
                observation: Observation::Success,
                source: Source::Probe,
                started,
                ..
            } => blocked.retain(|b| !(b.0 == endpoint && started.0 > b.1)),
            Event::Dispatched {
                request,
                attempt,
                endpoint,
            } => {
                if let Some((_, t_f)) = blocked.iter().find(|b| b.0 == endpoint) {
                    return Some(LogViolation {
                        index,
                        explanation: format!(
                            "request {} attempt {attempt} was dispatched to {endpoint} after \
                             its 401 was recorded at event {t_f}, and no probe started since \
                             has succeeded",
                            request.0
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// I-FQ4 (R-003-03): an endpoint is removed from the failure queue only by a recovery probe
/// that started after the endpoint's latest recorded failure. Returns the first violation.
pub fn no_stale_recovery(events: &[Event]) -> Option<LogViolation> {
    let mut last_failure: Vec<(EndpointId, usize)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match *event {
            Event::FailureAdded { endpoint, .. } => {
                last_failure.retain(|f| f.0 != endpoint);
                last_failure.push((endpoint, index));
            }
            Event::Recovered {
                endpoint,
                started,
                removed: true,
            } => {
                if let Some((_, failed)) = last_failure
                    .iter()
                    .find(|f| f.0 == endpoint && f.1 > started.0)
                {
                    return Some(LogViolation {
                        index,
                        explanation: format!(
                            "{endpoint} was removed by a recovery probe started at event {} \
                             although a failure was added at event {failed}, after the probe \
                             started",
                            started.0
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const E: EndpointId = EndpointId(1);

    fn recorded(observation: Observation, source: Source, started: usize) -> Event {
        Event::Recorded {
            endpoint: E,
            observation,
            source,
            started: Ticket(started),
            outcome: ObserveOutcome::Applied,
        }
    }

    fn dispatched() -> Event {
        Event::Dispatched {
            request: RequestId(1),
            attempt: 1,
            endpoint: E,
        }
    }

    #[test]
    fn i401_flags_a_dispatch_after_the_401_until_a_later_probe_succeeds() {
        let stale_probe = [
            Event::ProbeStarted { endpoint: E },
            dispatched(),
            recorded(Observation::Unauthorized, Source::Request, 1),
            recorded(Observation::Success, Source::Probe, 0),
            dispatched(),
        ];
        let v = no_dispatch_after_401(&stale_probe).expect("the probe started before the 401");
        assert_eq!(v.index, 4);
        let fresh_probe = [
            dispatched(),
            recorded(Observation::Unauthorized, Source::Request, 0),
            Event::ProbeStarted { endpoint: E },
            recorded(Observation::Success, Source::Probe, 2),
            dispatched(),
        ];
        assert_eq!(no_dispatch_after_401(&fresh_probe), None);
    }

    #[test]
    fn ifq4_flags_a_removal_by_a_probe_older_than_the_failure() {
        let added = Event::FailureAdded {
            endpoint: E,
            inserted: false,
        };
        let removed = |started| Event::Recovered {
            endpoint: E,
            started: Ticket(started),
            removed: true,
        };
        let stale = [Event::ProbeStarted { endpoint: E }, added, removed(0)];
        assert_eq!(no_stale_recovery(&stale).map(|v| v.index), Some(2));
        let fresh = [added, Event::ProbeStarted { endpoint: E }, removed(1)];
        assert_eq!(no_stale_recovery(&fresh), None);
    }
}
