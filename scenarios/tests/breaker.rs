//! Document 000's circuit breaker across gateway instances (R-000-10) end to end: every
//! scripted timeline does what the catalog says for every variant; the random scheduler
//! finds the Buggy and DocFix violations within the seed budget, naming the property they
//! break; the Correct variant holds for 10,000 seeds with its `sometimes` and protection
//! properties seen.

#[macro_use]
mod common;

race_tests! {
    r_000_10 => "R-000-10", ["C1", "C2", "C3", "C4"],
}
