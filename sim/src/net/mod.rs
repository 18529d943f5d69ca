//! `sim::net`: the production async driver inside a turmoil simulation.
//!
//! Store hosts serve the simulation's Redis, queue and SQL models over turmoil TCP with a small
//! framed protocol ([`wire`]); worker hosts run the adapters' driver over a store client that
//! talks to them. Faults come from turmoil (partition and repair, hold and release, crash and
//! bounce, latency), chosen by the seed. The same oracles judge the same `History`.

pub mod host;
pub mod wire;
