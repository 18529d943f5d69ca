//! Document 000's access tables: the role graph, the permission epoch, the API keys'
//! revocation state. Every name starts with `access_`.

use crate::ops::{ColumnType, Table, TableDef};

static ACCESS_USERS_DEF: TableDef = TableDef {
    name: "access_users",
    columns: &[("roles", ColumnType::Text)],
};

static ACCESS_ROLES_DEF: TableDef = TableDef {
    name: "access_roles",
    columns: &[("perms", ColumnType::Text), ("includes", ColumnType::Text)],
};

static ACCESS_EPOCH_DEF: TableDef = TableDef {
    name: "access_epoch",
    columns: &[("epoch", ColumnType::Int)],
};

/// The roles each user holds directly, keyed by user: `roles`, comma separated.
pub const ACCESS_USERS: Table = Table::declare(&ACCESS_USERS_DEF);

/// The role graph, keyed by role: its own `perms` and the roles it `includes` (whose
/// permissions its holders get too), both comma separated.
pub const ACCESS_ROLES: Table = Table::declare(&ACCESS_ROLES_DEF);

/// The permission epoch (one row, key [`EPOCH_ROW`]), bumped in the transaction of every
/// role or permission change (R-000-11's correct protocol).
pub const ACCESS_EPOCH: Table = Table::declare(&ACCESS_EPOCH_DEF);

/// The key of [`ACCESS_EPOCH`]'s one row.
pub const EPOCH_ROW: &str = "global";

static ACCESS_API_KEYS_DEF: TableDef = TableDef {
    name: "access_api_keys",
    columns: &[
        ("revoked", ColumnType::Int),
        ("key_version", ColumnType::Int),
    ],
};

/// The API keys' authoritative revocation state (R-000-12's correct protocol), keyed by API
/// key: `revoked` (0 or 1; the document's `revoked_at` reduced to whether it is set) and
/// `key_version`, bumped by every revocation and un-revocation.
pub const ACCESS_API_KEYS: Table = Table::declare(&ACCESS_API_KEYS_DEF);
