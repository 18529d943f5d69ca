//! racelab-models: loom models of the in-process shared structures (not built yet: see
//! ARCHITECTURE.md). The bounded exhaustive search over simulated worlds lives in
//! `racelab_sim::explore::exhaustive`.

#![forbid(unsafe_code)]
