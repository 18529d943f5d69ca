//! Document 000's routing family end to end: every scripted timeline does what the catalog
//! says for every variant; the random scheduler finds the Buggy and DocFix violations within
//! the seed budget, naming the property they break; the Correct variant holds for 10,000
//! seeds with its `sometimes` and protection properties seen.

#[macro_use]
mod common;

race_tests! {
    r_000_07 => "R-000-07", ["A1", "A2", "A3", "A4"],
    r_000_15 => "R-000-15", ["P1", "P2"],
}
