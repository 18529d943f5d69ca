//! The catalog's shared shapes: a [`Race`], its [`Script`]ed timelines, and what each variant
//! is expected to do.

use std::any::Any;

use racelab_core::{Property, PropertyKind, Variant, Verdict};
use racelab_sim::explore::{FaultProfile, Run, SimRng, Step, WorldSpec};

/// What a variant is expected to do on a timeline or a sweep, and what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expectation {
    /// A property is violated (the race reproduces).
    Fails,
    /// Every property holds and every run completes.
    Holds,
    /// No property is violated, but a run does not complete (a liveness failure: the
    /// protocol hangs or livelocks). Never counts as detecting a safety race.
    Stuck,
}

impl Expectation {
    /// `fails`, `holds` or `stuck`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expectation::Fails => "fails",
            Expectation::Holds => "holds",
            Expectation::Stuck => "stuck",
        }
    }

    /// What a run or a sweep showed: `Fails` if a property broke, else `Stuck` if a run did
    /// not complete, else `Holds`.
    pub fn observed(violated: bool, stuck: bool) -> Expectation {
        match (violated, stuck) {
            (true, _) => Expectation::Fails,
            (false, true) => Expectation::Stuck,
            (false, false) => Expectation::Holds,
        }
    }

    /// Whether an observed outcome matches.
    pub fn matches(self, observed: Expectation) -> bool {
        self == observed
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
        self.0[variant.index()]
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
/// seed's random one. The [`Capture`] is handed to the judge with the run.
pub type BuildFn = fn(Variant, Workload<'_>) -> (WorldSpec, Capture);

/// How a race judges a run: the whole [`Run`] (history and the stores' end state) plus what
/// its build captured. The verdict names the broken `always`/`eventually` properties and
/// counts the `sometimes` ones; whether the run was stuck is decided generically.
pub type JudgeFn = fn(&Run, &Capture) -> Verdict;

/// What a race's build hands its judge (the initial quantities, the planned workload...):
/// any value, read back by type.
#[derive(Default)]
pub struct Capture(Option<Box<dyn Any + Send + Sync>>);

impl Capture {
    /// Captures `value`.
    pub fn new<T: Any + Send + Sync>(value: T) -> Capture {
        Capture(Some(Box::new(value)))
    }

    /// Nothing captured.
    pub fn none() -> Capture {
        Capture(None)
    }

    /// The captured value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_ref().and_then(|b| b.downcast_ref::<T>())
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Capture(..)"
        } else {
            "Capture(none)"
        })
    }
}

/// Which workload to build.
pub enum Workload<'a> {
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
    /// The named properties: `always` and `eventually` ones its judge may report broken,
    /// `sometimes` ones a Correct sweep must see hold at least once.
    pub properties: &'static [Property],
    /// Whether the net world (the shipped driver under turmoil) can run it.
    pub net: bool,
    /// Builds the world.
    pub build: BuildFn,
    /// Judges a run.
    pub judge: JudgeFn,
}

impl Race {
    /// The declared property called `name`.
    pub fn property(&self, name: &str) -> Option<&'static Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// The declared properties of `kind`.
    pub fn properties_of(&self, kind: PropertyKind) -> impl Iterator<Item = &'static Property> {
        self.properties.iter().filter(move |p| p.kind == kind)
    }
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
    /// The oracles' verdict.
    pub verdict: Verdict,
}

impl Outcome {
    /// Whether a property was violated.
    pub fn violated(&self) -> bool {
        !self.verdict.holds()
    }

    /// Whether the run did not complete.
    pub fn stuck(&self) -> bool {
        self.verdict.is_stuck()
    }

    /// What the run showed: fails, holds or stuck.
    pub fn observed(&self) -> Expectation {
        Expectation::observed(self.violated(), self.stuck())
    }
}
