//! Document 000's billing family end to end: every scripted timeline does what the catalog
//! says for every variant; the random scheduler finds the Buggy and DocFix violations within
//! the seed budget, naming the property they break; the Correct variant holds for 10,000
//! seeds with its protections seen.

#[macro_use]
mod common;

race_tests! {
    r_000_03 => "R-000-03", ["I-IDEM-a", "I-IDEM-b", "I-IDEM-c", "I-IDEM-d"],
    r_000_01 => "R-000-01", ["I-BILL-1"],
}
