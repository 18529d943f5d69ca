//! Document 000's access races: the permission cache's invalidation (R-000-11, `perm`) and
//! the API-key revocation blacklist (R-000-12, `revoke`), with their tables (`tables`) and
//! oracles (`oracle`).

mod oracle;
mod perm;
mod revoke;
mod tables;

pub use oracle::{
    B1, B2, CACHED_ACROSS_CHANGE, DB_DECIDED_AFTER_REDIS_FAILED, I_PERM, RECONNECT_FORGETS_EPOCH,
    REJECTED_FROM_CACHE, REVOCATION_LOST, STALE_FILL_DEAD_KEY, i_perm, perm_coverage, revocation,
    revocation_coverage, states,
};
pub use perm::{
    CACHE_TTL, DELTA, EPOCH_TTL, PERM_CHANNEL, PermAdmin, PermBlock, PermCache, PermDecision,
    PermInstance, PermOut, PermSubscriber, PermTag, PlannedRequest, RECEIVE_WAIT, ROLE_DEPTH_MAX,
    RoleChange, RoleGraph, join, split,
};
pub use revoke::{
    BLACKLIST, KeyAction, KeyAdmin, KeyBlock, KeyDecision, KeyInstance, KeyMemory, KeyRequest,
    KeyTag, Known, Next, REVOKE_DELTA, REVOKED_TTL, Seen, Source, next_source, revoked_key,
    status_key,
};
pub use tables::{ACCESS_API_KEYS, ACCESS_EPOCH, ACCESS_ROLES, ACCESS_USERS, EPOCH_ROW};
