//! The breaker family's operation tags and notes: what each step of a gateway instance means
//! to the circuit-breaker protocol (R-000-10), and what the instance reports.

use std::fmt;

use crate::ids::EndpointId;
use crate::tag::{FamilyNote, FamilyTag, Tag, TagKind};

/// How an upstream call relates to the half-open state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// A request sent through a CLOSED breaker.
    No,
    /// A request sent because the shared state read HALF_OPEN (or the reader moved it there):
    /// the document's trial request, with no token.
    Trial,
    /// The half-open probe of the holder of this token (`SET probe:U tok NX PX cooldown`).
    Token(String),
    /// A probe sent on the instance's own breaker because Redis did not answer the token's
    /// `SET NX`.
    Local,
}

impl Probe {
    /// Whether the call is a half-open probe of any kind.
    pub fn is_probe(&self) -> bool {
        *self != Probe::No
    }
}

/// What a step of a gateway instance means. `instance` is the gateway instance (1, 2, 3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BreakerTag {
    /// `GET cb:U:state`: the document's `_get_cb_state` (Buggy, DocFix).
    StateRead {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// `SET cb:U:state`: the document's `_set_cb_state` (Buggy, DocFix).
    StateWrite {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// `GET cb:U:open`: the shared OPEN advice (Correct).
    OpenRead {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// `SET cb:U:open <opened_at> PX <rest of the cool-down>` (Correct): after a local open,
    /// or (`merge`) when Redis answers again and lacks an OPEN the instance holds.
    OpenWrite {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
        /// Written by the "OPEN wins" merge on Redis' recovery.
        merge: bool,
    },
    /// `DEL cb:U:open` after a successful probe (Correct).
    OpenClear {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// `GET cb:U:fails`, the read half of the document's read-modify-write (Buggy, DocFix).
    FailRead {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// One recorded failure: `SET cb:U:fails n+1` (Buggy, DocFix) or the script
    /// `incr_window cb:U:fails <window>` (Correct: `INCRBY`, and `PEXPIRE` on a new window).
    FailCount {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// The counter's reset on a close: `SET cb:U:fails 0` or `DEL cb:U:fails`.
    FailReset {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
    /// `SET probe:U <token> NX PX <cool-down>` (Correct).
    ProbeToken {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
        /// The token (instance, incarnation, attempt).
        token: String,
    },
    /// The upstream call of a request.
    Call {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
        /// Whether, and how, it is a half-open probe.
        probe: Probe,
    },
}

impl BreakerTag {
    /// [`BreakerTag::StateRead`]'s kind.
    pub const STATE_READ: TagKind = TagKind::new("cb-state-read");
    /// [`BreakerTag::StateWrite`]'s kind.
    pub const STATE_WRITE: TagKind = TagKind::new("cb-state-write");
    /// [`BreakerTag::OpenRead`]'s kind.
    pub const OPEN_READ: TagKind = TagKind::new("cb-open-read");
    /// [`BreakerTag::OpenWrite`]'s kind.
    pub const OPEN_WRITE: TagKind = TagKind::new("cb-open-write");
    /// [`BreakerTag::OpenClear`]'s kind.
    pub const OPEN_CLEAR: TagKind = TagKind::new("cb-open-clear");
    /// [`BreakerTag::FailRead`]'s kind.
    pub const FAIL_READ: TagKind = TagKind::new("cb-fail-read");
    /// [`BreakerTag::FailCount`]'s kind.
    pub const FAIL_COUNT: TagKind = TagKind::new("cb-fail-count");
    /// [`BreakerTag::FailReset`]'s kind.
    pub const FAIL_RESET: TagKind = TagKind::new("cb-fail-reset");
    /// [`BreakerTag::ProbeToken`]'s kind.
    pub const PROBE_TOKEN: TagKind = TagKind::new("cb-probe-token");
    /// [`BreakerTag::Call`]'s kind.
    pub const CALL: TagKind = TagKind::new("cb-call");

    /// The breaker tag of a recorded operation, if it is one.
    pub fn of(tag: &Tag) -> Option<&BreakerTag> {
        tag.get::<BreakerTag>()
    }

    /// The instance whose step it is.
    pub fn instance(&self) -> u32 {
        match self {
            BreakerTag::StateRead { instance, .. }
            | BreakerTag::StateWrite { instance, .. }
            | BreakerTag::OpenRead { instance, .. }
            | BreakerTag::OpenWrite { instance, .. }
            | BreakerTag::OpenClear { instance, .. }
            | BreakerTag::FailRead { instance, .. }
            | BreakerTag::FailCount { instance, .. }
            | BreakerTag::FailReset { instance, .. }
            | BreakerTag::ProbeToken { instance, .. }
            | BreakerTag::Call { instance, .. } => *instance,
        }
    }

    /// The upstream the step concerns.
    pub fn endpoint(&self) -> EndpointId {
        match self {
            BreakerTag::StateRead { endpoint, .. }
            | BreakerTag::StateWrite { endpoint, .. }
            | BreakerTag::OpenRead { endpoint, .. }
            | BreakerTag::OpenWrite { endpoint, .. }
            | BreakerTag::OpenClear { endpoint, .. }
            | BreakerTag::FailRead { endpoint, .. }
            | BreakerTag::FailCount { endpoint, .. }
            | BreakerTag::FailReset { endpoint, .. }
            | BreakerTag::ProbeToken { endpoint, .. }
            | BreakerTag::Call { endpoint, .. } => *endpoint,
        }
    }
}

impl FamilyTag for BreakerTag {
    fn kind(&self) -> TagKind {
        match self {
            BreakerTag::StateRead { .. } => BreakerTag::STATE_READ,
            BreakerTag::StateWrite { .. } => BreakerTag::STATE_WRITE,
            BreakerTag::OpenRead { .. } => BreakerTag::OPEN_READ,
            BreakerTag::OpenWrite { .. } => BreakerTag::OPEN_WRITE,
            BreakerTag::OpenClear { .. } => BreakerTag::OPEN_CLEAR,
            BreakerTag::FailRead { .. } => BreakerTag::FAIL_READ,
            BreakerTag::FailCount { .. } => BreakerTag::FAIL_COUNT,
            BreakerTag::FailReset { .. } => BreakerTag::FAIL_RESET,
            BreakerTag::ProbeToken { .. } => BreakerTag::PROBE_TOKEN,
            BreakerTag::Call { .. } => BreakerTag::CALL,
        }
    }
}

/// Why an instance rejected a request without calling the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Its breaker is OPEN and the cool-down has not elapsed.
    Open,
    /// The cool-down elapsed but another instance holds the probe token (or the token came
    /// back too late to use).
    ProbeTaken,
    /// Redis did not answer the state read: the document's fix fails closed.
    StoreUnavailable,
}

impl Rejection {
    /// A short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Open => "open",
            Rejection::ProbeTaken => "probe taken",
            Rejection::StoreUnavailable => "breaker store unavailable",
        }
    }
}

/// What a gateway instance reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BreakerNote {
    /// A request to `endpoint` was answered with an error by the breaker, never sent.
    Rejected {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
        /// Why.
        why: Rejection,
    },
    /// The instance's own breaker opened (Correct), `redis_down` if its last Redis step had
    /// failed (the local breaker deciding alone).
    OpenedLocally {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
        /// Whether Redis was unreachable.
        redis_down: bool,
    },
    /// A shared OPEN read from Redis forced the instance's CLOSED breaker OPEN (Correct).
    ForcedOpen {
        /// The instance.
        instance: u32,
        /// The upstream.
        endpoint: EndpointId,
    },
}

impl fmt::Display for BreakerNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerNote::Rejected {
                instance,
                endpoint,
                why,
            } => write!(
                f,
                "G{instance} rejected a request to {endpoint} ({})",
                why.as_str()
            ),
            BreakerNote::OpenedLocally {
                instance,
                endpoint,
                redis_down,
            } => write!(
                f,
                "G{instance} opened its breaker of {endpoint}{}",
                if *redis_down { " (Redis down)" } else { "" }
            ),
            BreakerNote::ForcedOpen { instance, endpoint } => {
                write!(
                    f,
                    "G{instance} forced OPEN for {endpoint} by the shared state"
                )
            }
        }
    }
}

impl FamilyNote for BreakerNote {}
