//! racelab-reports: turns run records into artifacts people read.
//!
//! - [`matrix_markdown`] / [`matrix_json`]: the race matrix, one row per race and variant.
//! - [`timeline_markdown`]: a failing trace as the documents write it, T1..Tn.
//! - [`timeline_html`]: the same trace as a self-contained HTML page with an SVG sequence
//!   diagram: one lane per process and store, operations as arrows, faults marked, the
//!   violating operations highlighted, and the oracle's explanation.
//!
//! Everything here is a pure function of its inputs; writing files is the caller's business.

#![forbid(unsafe_code)]

mod html;
mod matrix;

pub use html::timeline_html;
pub use matrix::{MatrixRow, matrix_json, matrix_markdown, timeline_markdown};
