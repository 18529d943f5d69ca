//! Document 004's client WebSocket connections in scheduler memory (R-004-07) end to end:
//! every scripted timeline does what the catalog says for every variant; the random
//! scheduler finds the Buggy and DocFix violations within the seed budget, naming the
//! property they break; the Correct variant holds for 10,000 seeds with its `sometimes` and
//! protection properties seen.

#[macro_use]
mod common;

race_tests! {
    r_004_07 => "R-004-07", ["I-JOB-one-execution", "I-JOB-delivered-once", "I-JOB-no-stale-connection"],
}
