//! Document 003 (failure-queue duplicate counting and concurrent add), R-003-01 .. R-003-04.

use crate::catalog::Race;

/// The entries of document 003.
pub(crate) fn races() -> Vec<Race> {
    Vec::new()
}
