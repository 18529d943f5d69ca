//! racelab-adapters: the Correct protocols over real Redis and PostgreSQL (not built yet: see
//! ARCHITECTURE.md). The store-operation vocabulary it will execute is `racelab_core::StoreOp`.

#![forbid(unsafe_code)]
