//! Document 004's scheduler family end to end: every scripted timeline does what the catalog
//! says for every variant; the random scheduler finds the Buggy and DocFix violations within
//! the seed budget, naming the property they break; the Correct variant holds for 10,000
//! seeds with its `sometimes` and protection properties seen.

#[macro_use]
mod common;

race_tests! {
    r_004_01 => "R-004-01", ["L2"],
    r_004_02 => "R-004-02", ["F1", "I-JOB"],
    r_004_03 => "R-004-03", ["J3", "F1", "I-JOB", "I-JOB-delivered"],
    r_004_06 => "R-004-06", ["J2", "I-JOB-notified", "B1", "I-JOB-delivered"],
}
