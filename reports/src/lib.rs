//! racelab-reports: turns run records into artifacts people read.
//!
//! - [`matrix_markdown`] / [`matrix_json`] / [`matrix_html`]: the race matrix, one
//!   [`MatrixRow`] per race and variant: what the catalog expects, what the random sweep and
//!   the scripted timelines showed, seeds to detect, and the replay commands.
//! - [`timeline_markdown`]: a [`Trace`] as the documents write it, T1..Tn.
//! - [`timeline_html`]: the same trace as a self-contained HTML page with an SVG sequence
//!   diagram: one lane per process and store, operations as arrows (to the store when it
//!   applied them, back when the caller learnt the outcome), faults marked, the violating
//!   operations highlighted, and the oracle's explanation.
//!
//! Everything here is a pure function of its inputs; writing files is the caller's business
//! (`racelab report` in `racelab-scenarios`). All text that reaches a page is escaped for its
//! language: operation text contains quotes, `<`, `>`, `|` and backticks.

#![forbid(unsafe_code)]

mod doc_tests;
mod escape;
mod html;
mod markdown;
mod matrix;
mod trace;

pub use doc_tests::{DocTestRow, doc_tests_html, doc_tests_markdown};
pub use html::timeline_html;
pub use markdown::timeline_markdown;
pub use matrix::{MatrixRow, ScriptRow, matrix_html, matrix_json, matrix_markdown};
pub use trace::Trace;
