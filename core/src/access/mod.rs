//! Document 000's access races: the permission cache's invalidation (R-000-11, `perm`), with
//! its tables (`tables`) and oracles (`oracle`).

mod oracle;
mod perm;
mod tables;

pub use oracle::{
    CACHED_ACROSS_CHANGE, I_PERM, RECONNECT_FORGETS_EPOCH, STALE_FILL_DEAD_KEY, i_perm,
    perm_coverage, states,
};
pub use perm::{
    CACHE_TTL, DELTA, EPOCH_TTL, PERM_CHANNEL, PermAdmin, PermBlock, PermCache, PermDecision,
    PermInstance, PermOut, PermSubscriber, PermTag, PlannedRequest, RECEIVE_WAIT, ROLE_DEPTH_MAX,
    RoleChange, RoleGraph, join, split,
};
pub use tables::{ACCESS_EPOCH, ACCESS_ROLES, ACCESS_USERS, EPOCH_ROW};
