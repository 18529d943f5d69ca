//! The three variants every race is written in, side by side: the code as the document
//! describes it, the document's fix implemented literally, and the correct protocol.

/// Which protocol a machine runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Variant {
    /// The code as the document describes its current state.
    Buggy,
    /// The document's proposed fix, implemented literally.
    DocFix,
    /// The correct fix.
    Correct,
}

impl Variant {
    /// Every variant, in catalog order.
    pub const ALL: [Variant; 3] = [Variant::Buggy, Variant::DocFix, Variant::Correct];

    /// `buggy`, `docfix` or `correct`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Buggy => "buggy",
            Variant::DocFix => "docfix",
            Variant::Correct => "correct",
        }
    }
}

impl Variant {
    /// The variant's position in [`Variant::ALL`].
    pub fn index(self) -> usize {
        match self {
            Variant::Buggy => 0,
            Variant::DocFix => 1,
            Variant::Correct => 2,
        }
    }
}
