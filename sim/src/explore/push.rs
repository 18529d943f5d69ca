//! The load balancer in front of push connections ([`racelab_core::PushOp`]): who listens for
//! which service, the open connections, and each endpoint's queue of events (accepted
//! connections, messages in the order they were sent, closures). An endpoint is a process in
//! one incarnation: a restarted process starts with no connection and no listener.

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
    /// Endpoints cut off from the balancer (partitioned): no new connection reaches them.
    cut: BTreeSet<usize>,
}

impl PushHub {
    pub(crate) fn listen(&mut self, ep: Endpoint, service: &str) -> PushReply {
        self.listeners
            .entry(service.to_string())
            .or_default()
            .insert(ep);
        PushReply::Listening
    }

    /// Connects `ep` to the reachable listener of `service` with the fewest open connections.
    pub(crate) fn connect(
        &mut self,
        ep: Endpoint,
        service: &str,
        pid: impl Fn(usize) -> ProcessId,
    ) -> PushReply {
        let open_at = |l: &Endpoint| {
            self.conns
                .values()
                .filter(|c| c.open && c.ends[1] == *l)
                .count()
        };
        let Some(listener) = self
            .listeners
            .get(service)
            .into_iter()
            .flatten()
            .filter(|l| !self.cut.contains(&l.0))
            .min_by_key(|l| (open_at(l), **l))
            .copied()
        else {
            return PushReply::Refused;
        };
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
