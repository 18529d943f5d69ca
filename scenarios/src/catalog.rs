//! The catalog's shared shapes: a [`Race`], its [`Script`]ed timelines, and what each variant
//! is expected to do.

use racelab_core::workorder::Variant;
use racelab_core::{FinalState, History, Verdict};
use racelab_sim::explore::{FaultProfile, Run, SimRng, Step, WorldSpec};

/// What a variant is expected to do on a timeline or a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expectation {
    /// The invariant must be violated (the race reproduces).
    Fails,
    /// The invariant must hold.
    Holds,
}

impl Expectation {
    /// `fails` or `holds`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::Fails => "fails",
            Expectation::Holds => "holds",
        }
    }

    /// Whether an observed outcome (`violated`) matches.
    pub fn matches(self, violated: bool) -> bool {
        violated == (self == Expectation::Fails)
    }
}

/// One expectation per variant, in [`Variant::ALL`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PerVariant(pub [Expectation; 3]);

impl PerVariant {
    /// Buggy and DocFix fail, Correct holds: the usual verdict for an insufficient fix.
    pub const DOCFIX_INSUFFICIENT: PerVariant =
        PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]);

    /// The expectation for `variant`.
    pub fn get(self, variant: Variant) -> Expectation {
        self.0[variant_index(variant)]
    }
}

pub(crate) fn variant_index(variant: Variant) -> usize {
    match variant {
        Variant::Buggy => 0,
        Variant::DocFix => 1,
        Variant::Correct => 2,
    }
}

/// A scripted timeline, the way the documents write T1..Tn.
#[derive(Clone, Debug)]
pub struct Script {
    /// A short name (`base`, `pause-after-check`, ...).
    pub name: &'static str,
    /// What the timeline shows.
    pub summary: &'static str,
    /// The faults, by time or by operation.
    pub steps: Vec<Step>,
    /// What each variant does on it.
    pub expect: PerVariant,
}

/// How a race builds its world for a variant: from a script's fixed workload, or from the
/// seed's random one.
pub(crate) type BuildFn = fn(Variant, Workload<'_>) -> (WorldSpec, FinalState);

/// Which workload to build.
pub(crate) enum Workload<'a> {
    /// The fixed workload of the named script.
    Scripted(&'a str),
    /// A random workload drawn from this generator.
    Random(&'a mut SimRng),
}

/// One catalog entry as code.
pub struct Race {
    /// `R-002-01`.
    pub id: &'static str,
    /// The title.
    pub title: &'static str,
    /// The source document's number (`002`).
    pub document: &'static str,
    /// The invariant, in words.
    pub invariant: &'static str,
    /// The catalog's verdict on the document's fix (`insufficient`, ...).
    pub docfix_verdict: &'static str,
    /// What a random sweep of each variant is expected to find.
    pub sweep: PerVariant,
    /// The scripted timelines.
    pub scripts: fn() -> Vec<Script>,
    /// The fault model of the random sweep.
    pub profile: fn() -> FaultProfile,
    /// The random scheduler must find the Buggy variant's violation within this many seeds
    /// from seed 0 (asserted by the test suite).
    pub seed_budget: u64,
    pub(crate) build: BuildFn,
    pub(crate) judge: fn(&History, &FinalState) -> Verdict,
}

impl std::fmt::Debug for Race {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Race")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The outcome of running one race, variant and scheduler.
#[derive(Debug)]
pub struct Outcome {
    /// The world's run.
    pub run: Run,
    /// The end state the oracles used.
    pub state: FinalState,
    /// The oracles' verdict.
    pub verdict: Verdict,
}

impl Outcome {
    /// Whether an invariant was violated.
    pub fn violated(&self) -> bool {
        !self.verdict.holds()
    }
}
