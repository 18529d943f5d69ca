//! The routing family's operation tags: what each step of a gateway instance's request or
//! prober means to the protocol.

use crate::ids::EndpointId;
use crate::tag::{FamilyTag, Tag, TagKind};

/// Which shared per-endpoint counter an update concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A successful attempt.
    Ok,
    /// A failed attempt.
    Fail,
}

impl Outcome {
    /// `ok` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
        }
    }
}

/// What a step of a gateway instance means. `instance` is the gateway instance (the host
/// whose memory holds its router).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteTag {
    /// The draw from the process's random stream that seeds one pick.
    Draw {
        /// The instance.
        instance: u32,
    },
    /// The router picks the endpoint of a user request (a local block).
    Pick {
        /// The instance.
        instance: u32,
    },
    /// The prober asks the router for the next probe due (a local block).
    PollProbe {
        /// The instance.
        instance: u32,
    },
    /// An attempt or probe sent to an upstream endpoint.
    Call {
        /// The instance.
        instance: u32,
        /// The endpoint.
        endpoint: EndpointId,
        /// A health probe rather than a user request.
        probe: bool,
    },
    /// The attempt's outcome recorded in the router (a local block).
    Record {
        /// The instance.
        instance: u32,
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// The read half of a read-modify-write of a shared counter.
    StatsRead {
        /// The endpoint.
        endpoint: EndpointId,
        /// Which counter.
        outcome: Outcome,
    },
    /// The write of a shared counter (`SET` after a read, or `INCRBY`).
    StatsWrite {
        /// The endpoint.
        endpoint: EndpointId,
        /// Which counter.
        outcome: Outcome,
    },
}

impl RouteTag {
    /// [`RouteTag::Draw`]'s kind.
    pub const DRAW: TagKind = TagKind::new("route-draw");
    /// [`RouteTag::Pick`]'s kind.
    pub const PICK: TagKind = TagKind::new("route-pick");
    /// [`RouteTag::PollProbe`]'s kind.
    pub const POLL_PROBE: TagKind = TagKind::new("route-poll-probe");
    /// [`RouteTag::Call`]'s kind.
    pub const CALL: TagKind = TagKind::new("route-call");
    /// [`RouteTag::Record`]'s kind.
    pub const RECORD: TagKind = TagKind::new("route-record");
    /// [`RouteTag::StatsRead`]'s kind.
    pub const STATS_READ: TagKind = TagKind::new("route-stats-read");
    /// [`RouteTag::StatsWrite`]'s kind.
    pub const STATS_WRITE: TagKind = TagKind::new("route-stats-write");

    /// The routing tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&RouteTag> {
        tag.get::<RouteTag>()
    }
}

impl FamilyTag for RouteTag {
    fn kind(&self) -> TagKind {
        match self {
            RouteTag::Draw { .. } => RouteTag::DRAW,
            RouteTag::Pick { .. } => RouteTag::PICK,
            RouteTag::PollProbe { .. } => RouteTag::POLL_PROBE,
            RouteTag::Call { .. } => RouteTag::CALL,
            RouteTag::Record { .. } => RouteTag::RECORD,
            RouteTag::StatsRead { .. } => RouteTag::STATS_READ,
            RouteTag::StatsWrite { .. } => RouteTag::STATS_WRITE,
        }
    }
}
