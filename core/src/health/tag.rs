//! Documents 001 and 003's operation tags: what each step of the proxy's coroutines means.

use crate::ids::EndpointId;
use crate::tag::{FamilyTag, Tag, TagKind};

/// What a step of the proxy's coroutines means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HealthTag {
    /// A proxy request chooses an endpoint for an attempt (reads the health table).
    Select,
    /// A request attempt sent to an upstream endpoint.
    Call {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// A health probe sent to an upstream endpoint (or its start).
    Probe {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// A health observation written to the endpoint table.
    Observe {
        /// The endpoint.
        endpoint: EndpointId,
    },
    /// An operation on the failure queue.
    FailureQueue,
    /// The failure queue's persistence (file writes, reads, loading).
    Persist,
}

impl HealthTag {
    /// [`HealthTag::Select`]'s kind.
    pub const SELECT: TagKind = TagKind::new("select");
    /// [`HealthTag::Call`]'s kind.
    pub const CALL: TagKind = TagKind::new("call");
    /// [`HealthTag::Probe`]'s kind.
    pub const PROBE: TagKind = TagKind::new("probe");
    /// [`HealthTag::Observe`]'s kind.
    pub const OBSERVE: TagKind = TagKind::new("observe");
    /// [`HealthTag::FailureQueue`]'s kind.
    pub const FAILURE_QUEUE: TagKind = TagKind::new("failure-queue");
    /// [`HealthTag::Persist`]'s kind.
    pub const PERSIST: TagKind = TagKind::new("persist");

    /// The health tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&HealthTag> {
        tag.get::<HealthTag>()
    }
}

impl FamilyTag for HealthTag {
    fn kind(&self) -> TagKind {
        match self {
            HealthTag::Select => HealthTag::SELECT,
            HealthTag::Call { .. } => HealthTag::CALL,
            HealthTag::Probe { .. } => HealthTag::PROBE,
            HealthTag::Observe { .. } => HealthTag::OBSERVE,
            HealthTag::FailureQueue => HealthTag::FAILURE_QUEUE,
            HealthTag::Persist => HealthTag::PERSIST,
        }
    }
}

impl From<HealthTag> for Tag {
    fn from(tag: HealthTag) -> Tag {
        Tag::new(tag)
    }
}
