//! The load balancer in front of push connections ([`racelab_core::PushOp`]): who listens for
//! which service, the open connections, and each endpoint's queue of events (accepted
//! connections, messages in the order they were sent, closures). An endpoint is a process in
//! one incarnation: a restarted process starts with no connection and no listener.
//!
//! The balancer picks a listener in one of two modes ([`PushHub::new`]): least connections,
//! or sticky (the load balancer's WebSocket session persistence, R-004-07): a process that
//! connected before is sent back to the listener process it last reached while that process
//! listens and is reachable (a restarted listener counts: session persistence knows an
//! address, not what the instance remembers), and otherwise to the least-loaded one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use racelab_core::{ConnId, ProcessId, PushReply};

/// A process (by index) in one incarnation.
pub(crate) type Endpoint = (usize, u32);

#[derive(Debug)]
struct Conn {
    /// The connecting end and the listening end.
    ends: [Endpoint; 2],
    open: bool,
}

/// The balancer's state.
#[derive(Debug, Default)]
pub(crate) struct PushHub {
    listeners: BTreeMap<String, BTreeSet<Endpoint>>,
    conns: BTreeMap<u64, Conn>,
    inbox: BTreeMap<Endpoint, VecDeque<PushReply>>,
    /// Endpoints cut off from the balancer (partitioned): no new connection reaches them,
    /// and none leaves them.
    cut: BTreeSet<usize>,
    /// Session persistence on (see the module's docs).
    sticky: bool,
    /// Sticky mode: the listener process each connecting process last reached.
    last: BTreeMap<usize, usize>,
}

impl PushHub {
    /// A balancer with no listener; `sticky`: session persistence instead of least
    /// connections alone.
    pub(crate) fn new(sticky: bool) -> PushHub {
        PushHub {
            sticky,
            ..PushHub::default()
        }
    }

    /// Turns session persistence on or off (the balancer remembers every process' last
    /// listener in either mode, so the switch takes effect at the next connect).
    #[cfg(feature = "net")]
    pub(crate) fn set_sticky(&mut self, sticky: bool) {
        self.sticky = sticky;
    }

    pub(crate) fn listen(&mut self, ep: Endpoint, service: &str) -> PushReply {
        self.listeners
            .entry(service.to_string())
            .or_default()
            .insert(ep);
        PushReply::Listening
    }

    /// Connects `ep` to the reachable listener of `service` with the fewest open connections
    /// (sticky mode: to the listener process `ep`'s process last reached, if it is still a
    /// reachable listener). A process cut off from the balancer reaches nothing.
    pub(crate) fn connect(
        &mut self,
        ep: Endpoint,
        service: &str,
        pid: impl Fn(usize) -> ProcessId,
    ) -> PushReply {
        if self.cut.contains(&ep.0) {
            return PushReply::Refused;
        }
        let reachable = |l: &&Endpoint| !self.cut.contains(&l.0);
        let sticky = self.last.get(&ep.0).filter(|_| self.sticky).and_then(|to| {
            self.listeners
                .get(service)
                .into_iter()
                .flatten()
                .filter(reachable)
                .find(|l| l.0 == *to)
                .copied()
        });
        let open_at = |l: &Endpoint| {
            self.conns
                .values()
                .filter(|c| c.open && c.ends[1] == *l)
                .count()
        };
        let Some(listener) = sticky.or_else(|| {
            self.listeners
                .get(service)
                .into_iter()
                .flatten()
                .filter(reachable)
                .min_by_key(|l| (open_at(l), **l))
                .copied()
        }) else {
            return PushReply::Refused;
        };
        self.last.insert(ep.0, listener.0);
        let id = self.conns.len() as u64 + 1;
        self.conns.insert(
            id,
            Conn {
                ends: [ep, listener],
                open: true,
            },
        );
        self.inbox
            .entry(listener)
            .or_default()
            .push_back(PushReply::Accepted {
                conn: ConnId(id),
                peer: pid(ep.0),
            });
        PushReply::Connected {
            conn: ConnId(id),
            peer: pid(listener.0),
        }
    }

    /// The other end of an open connection `ep` is an end of.
    fn peer(&self, ep: Endpoint, conn: ConnId) -> Option<Endpoint> {
        let c = self.conns.get(&conn.0).filter(|c| c.open)?;
        match c.ends {
            [a, b] if a == ep => Some(b),
            [a, b] if b == ep => Some(a),
            _ => None,
        }
    }

    pub(crate) fn send(&mut self, ep: Endpoint, conn: ConnId, message: &str) -> PushReply {
        match self.peer(ep, conn) {
            Some(to) => {
                self.inbox
                    .entry(to)
                    .or_default()
                    .push_back(PushReply::Message {
                        conn,
                        payload: message.to_string(),
                    });
                PushReply::Sent
            }
            None => PushReply::Closed { conn },
        }
    }

    pub(crate) fn close(&mut self, ep: Endpoint, conn: ConnId) -> PushReply {
        if let Some(to) = self.peer(ep, conn) {
            if let Some(c) = self.conns.get_mut(&conn.0) {
                c.open = false;
            }
            self.inbox
                .entry(to)
                .or_default()
                .push_back(PushReply::Closed { conn });
        }
        PushReply::Closed { conn }
    }

    /// The next event for `ep`, if any.
    pub(crate) fn next_event(&mut self, ep: Endpoint) -> Option<PushReply> {
        self.inbox.get_mut(&ep)?.pop_front()
    }

    /// Closes every open connection of process `p` (any incarnation), telling the other
    /// ends; `p`'s own queue keeps only the closures (what it had not read is lost).
    fn close_all_of(&mut self, p: usize) {
        let mut closed = Vec::new();
        for (id, c) in &mut self.conns {
            if c.open && (c.ends[0].0 == p || c.ends[1].0 == p) {
                c.open = false;
                closed.push((*id, c.ends));
            }
        }
        for q in self
            .inbox
            .iter_mut()
            .filter(|(e, _)| e.0 == p)
            .map(|(_, q)| q)
        {
            q.clear();
        }
        for (id, ends) in closed {
            for end in ends {
                self.inbox
                    .entry(end)
                    .or_default()
                    .push_back(PushReply::Closed { conn: ConnId(id) });
            }
        }
    }

    /// Process `p` crashed: its connections close and it listens no more.
    pub(crate) fn crashed(&mut self, p: usize) {
        self.close_all_of(p);
        self.inbox.retain(|e, _| e.0 != p);
        for set in self.listeners.values_mut() {
            set.retain(|e| e.0 != p);
        }
    }

    /// Process `p` is cut off from the balancer (`true`) or reachable again (`false`): a cut
    /// closes its connections; it keeps listening once reachable.
    pub(crate) fn set_cut(&mut self, p: usize, cut: bool) {
        if cut {
            self.cut.insert(p);
            self.close_all_of(p);
        } else {
            self.cut.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(i: usize) -> ProcessId {
        ProcessId(u16::try_from(i).unwrap_or(u16::MAX))
    }

    fn peer(reply: &PushReply) -> Option<ProcessId> {
        match reply {
            PushReply::Connected { peer, .. } => Some(*peer),
            _ => None,
        }
    }

    /// Two listeners (processes 0 and 1), and client 2 connected to listener 0.
    fn two_listeners(sticky: bool) -> (PushHub, ConnId) {
        let mut hub = PushHub::new(sticky);
        hub.listen((0, 0), "s");
        hub.listen((1, 0), "s");
        let PushReply::Connected { conn, peer } = hub.connect((2, 0), "s", pid) else {
            panic!("connects");
        };
        assert_eq!(peer, pid(0), "the lowest process on a tie");
        (hub, conn)
    }

    #[test]
    fn least_connections_picks_the_listener_with_the_fewest_open() {
        let (mut hub, conn) = two_listeners(false);
        assert_eq!(peer(&hub.connect((3, 0), "s", pid)), Some(pid(1)));
        assert_eq!(peer(&hub.connect((4, 0), "s", pid)), Some(pid(0)));
        // Client 2 leaves listener 0 and comes back: listener 0 holds one (client 4),
        // listener 1 one (client 3): the tie rule, not where client 2 was.
        hub.close((2, 0), conn);
        assert_eq!(peer(&hub.connect((5, 0), "s", pid)), Some(pid(0)));
        assert_eq!(peer(&hub.connect((2, 0), "s", pid)), Some(pid(1)));
    }

    #[test]
    fn sticky_returns_to_the_last_listener_while_it_is_reachable() {
        let (mut hub, conn) = two_listeners(true);
        assert_eq!(peer(&hub.connect((4, 0), "s", pid)), Some(pid(1)));
        hub.close((2, 0), conn);
        assert_eq!(peer(&hub.connect((5, 0), "s", pid)), Some(pid(0)));
        assert_eq!(peer(&hub.connect((6, 0), "s", pid)), Some(pid(0)));
        // Listener 0 holds two, listener 1 one: client 2 still goes back to 0.
        assert_eq!(peer(&hub.connect((2, 0), "s", pid)), Some(pid(0)));
        // Listener 0 cut off: client 2 goes to listener 1, and stays there once 0 is back
        // (0 now holds nothing, 1 holds two).
        hub.set_cut(0, true);
        assert_eq!(peer(&hub.connect((2, 0), "s", pid)), Some(pid(1)));
        hub.set_cut(0, false);
        assert_eq!(peer(&hub.connect((2, 0), "s", pid)), Some(pid(1)));
        // Listener 1 crashes: client 2 goes to listener 0.
        hub.crashed(1);
        assert_eq!(peer(&hub.connect((2, 0), "s", pid)), Some(pid(0)));
    }

    #[test]
    fn sticky_follows_a_restarted_listener_which_remembers_nothing() {
        let (mut hub, _) = two_listeners(true);
        hub.crashed(0);
        hub.listen((0, 1), "s");
        // Session persistence knows the address: back to process 0, its new incarnation.
        let reply = hub.connect((2, 0), "s", pid);
        assert_eq!(peer(&reply), Some(pid(0)));
        let PushReply::Connected { conn, .. } = reply else {
            panic!("connects");
        };
        assert_eq!(
            hub.next_event((0, 1)),
            Some(PushReply::Accepted { conn, peer: pid(2) })
        );
    }

    #[test]
    fn a_process_cut_off_from_the_balancer_connects_nowhere() {
        let (mut hub, conn) = two_listeners(false);
        hub.set_cut(2, true);
        assert_eq!(hub.connect((2, 0), "s", pid), PushReply::Refused);
        // Its connection closed at the cut, for both ends.
        assert_eq!(hub.send((0, 0), conn, "late"), PushReply::Closed { conn });
        hub.set_cut(2, false);
        assert!(peer(&hub.connect((2, 0), "s", pid)).is_some());
    }
}
