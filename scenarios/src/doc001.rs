//! Document 001 (HTTP 401 endpoint health race), R-001-01 .. R-001-04.

use crate::catalog::Race;

/// The entries of document 001.
pub(crate) fn races() -> Vec<Race> {
    Vec::new()
}
