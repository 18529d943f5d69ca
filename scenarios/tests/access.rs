//! Document 000's access races (R-000-11, R-000-12) and its session race (R-000-06) end to
//! end: every scripted timeline does what the catalog says
//! for every variant; the random scheduler finds the Buggy and DocFix violations within the
//! seed budget, naming the broken property; the Correct variant holds for 10,000 seeds with
//! its protections seen.

#[macro_use]
mod common;

race_tests! {
    r_000_11 => "R-000-11", ["I-PERM"],
    r_000_12 => "R-000-12", ["B1", "B2"],
    r_000_06 => "R-000-06", ["I-CONV", "I-CONV-acked"],
}
