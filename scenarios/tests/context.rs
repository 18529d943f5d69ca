//! Document 000's request context (R-000-13) end to end: the scripted timelines per variant,
//! random discovery of Buggy's collision naming the broken I-CTX property, and the Correct
//! variant over 10,000 seeds with its refusals seen.

#[macro_use]
mod common;

race_tests! {
    r_000_13 => "R-000-13", ["I-CTX-owner", "I-CTX-once", "I-CTX-read"],
}
