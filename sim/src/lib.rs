//! racelab-sim: deterministic worlds that drive the sans-IO machines of `racelab-core`.
//!
//! - [`explore`]: a fast discrete-event world with Redis, SQL and queue models, virtual time,
//!   fault injection, random and scripted schedulers, and trace hashes for replay.
//! - `net` (feature `net`): the production async driver's world under turmoil.

#![forbid(unsafe_code)]

pub mod explore;
#[cfg(feature = "net")]
pub mod net;
