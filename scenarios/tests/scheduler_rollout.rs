//! Document 004's scheduler during a rollout (R-004-08) end to end: every scripted timeline
//! does what the catalog says for every variant; the random scheduler finds the Buggy and
//! DocFix violations within the seed budget, naming the property they break; the Correct
//! variant holds for 10,000 seeds with its `sometimes` and protection properties seen.
//! AC-004-4 (each canary ratio and the rollback) is a unit test of the race's module.

#[macro_use]
mod common;

race_tests! {
    r_004_08 => "R-004-08", ["I-LIVE", "C1"],
}
