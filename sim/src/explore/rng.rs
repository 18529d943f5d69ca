//! The run's one source of randomness: a ChaCha8 stream expanded from the run's `u64` seed.
//! Probabilities are integer ratios; every draw is recorded as a [`Decision`].

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use racelab_core::{Duration, Timestamp};

/// A probability as an integer ratio, `num / den` (no floats decide replay order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ratio {
    /// Numerator.
    pub num: u32,
    /// Denominator, > 0.
    pub den: u32,
}

impl Ratio {
    /// Never.
    pub const NEVER: Ratio = Ratio { num: 0, den: 1 };

    /// `num` per thousand.
    pub const fn per_mille(num: u32) -> Ratio {
        Ratio { num, den: 1000 }
    }

    /// Whether the ratio is zero.
    pub const fn is_never(self) -> bool {
        self.num == 0
    }
}

/// What a random draw decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// A workload parameter chosen when the scenario is built.
    Workload,
    /// A message's network latency.
    Latency,
    /// Whether (and how) to inject a fault at an operation.
    OpFault,
    /// A time-triggered fault's time, target or duration.
    PlannedFault,
    /// A process's draw from its own stream ([`racelab_core::RandomOp`]).
    ProcessRandom,
}

/// One random draw and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// When (virtual time) it was drawn.
    pub at: Timestamp,
    /// What it decided.
    pub kind: DecisionKind,
    /// The value drawn.
    pub value: u64,
}

/// The seeded generator. Every draw goes into the decision log.
///
/// A generator can also *enumerate* instead of sampling ([`SimRng::enumerating`]): every draw
/// is then a choice point with a small domain (a chance is {no, yes}, a range is {low, high}),
/// taken from a given prefix and defaulting to the first option after it. That is how the
/// bounded exhaustive search walks every schedule with few deviations from the default.
#[derive(Debug)]
pub struct SimRng {
    rng: ChaCha8Rng,
    now: Timestamp,
    kind: DecisionKind,
    decisions: Vec<Decision>,
    /// In enumeration mode: the prefix of choices to take, and every choice made.
    choices: Option<Choices>,
    /// Draws (by their index in the decision log) that give the least value of their domain.
    minimise: BTreeSet<usize>,
}

/// The choices of an enumerating generator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Choices {
    /// The choices to take first (index into each choice point's domain).
    pub prefix: Vec<u32>,
    /// Every choice point met: (the option taken, how many options there were).
    pub taken: Vec<(u32, u32)>,
}

impl SimRng {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: Timestamp::ZERO,
            kind: DecisionKind::Workload,
            decisions: Vec::new(),
            choices: None,
            minimise: BTreeSet::new(),
        }
    }

    /// The stream for `seed`, except that the draws numbered in `minimise` (their index in
    /// the decision log: the first draw is 0) give the least value of their domain (`below`
    /// and `alternative` 0, `between` its low end, `chance` false). The stream advances as
    /// usual at those draws, so every other draw keeps its value as long as the draws before
    /// it are the same ones. This is how shrinking makes a random workload smaller (fewer
    /// requests, shorter jobs) without knowing what the numbers mean, in the manner of
    /// Hypothesis' shrinking of the choice sequence.
    pub fn minimising(seed: u64, minimise: BTreeSet<usize>) -> SimRng {
        let mut rng = SimRng::new(seed);
        rng.minimise = minimise;
        rng
    }

    /// How many draws were made so far.
    pub fn draws(&self) -> usize {
        self.decisions.len()
    }

    /// Whether the next draw is one to minimise.
    fn minimised(&self) -> bool {
        self.minimise.contains(&self.decisions.len())
    }

    /// A generator that enumerates: it takes `prefix`'s choices, then the first option of
    /// every later choice point.
    pub fn enumerating(prefix: Vec<u32>) -> SimRng {
        let mut rng = SimRng::new(0);
        rng.choices = Some(Choices {
            prefix,
            taken: Vec::new(),
        });
        rng
    }

    /// The choices an enumerating generator made (`None` for a sampling one).
    pub fn choices(&self) -> Option<&Choices> {
        self.choices.as_ref()
    }

    /// In enumeration mode, the option taken at the next choice point of `domain` options.
    fn choose(&mut self, domain: u32) -> Option<u32> {
        let c = self.choices.as_mut()?;
        let i = c.taken.len();
        let pick = c
            .prefix
            .get(i)
            .copied()
            .unwrap_or(0)
            .min(domain.saturating_sub(1));
        c.taken.push((pick, domain));
        Some(pick)
    }

    pub(crate) fn at(&mut self, now: Timestamp, kind: DecisionKind) -> &mut SimRng {
        self.now = now;
        self.kind = kind;
        self
    }

    fn record(&mut self, value: u64) -> u64 {
        self.decisions.push(Decision {
            at: self.now,
            kind: self.kind,
            value,
        });
        value
    }

    /// A uniform integer in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let v = if n == 0 {
            0
        } else {
            self.rng.random_range(0..n)
        };
        let v = if self.minimised() { 0 } else { v };
        self.record(v)
    }

    /// A uniform integer in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let v = if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        };
        let v = if self.minimised() { lo } else { v };
        self.record(v)
    }

    /// A uniform duration in `lo..=hi`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_ms(self.between(lo.as_ms(), hi.as_ms()))
    }

    /// One of `domain` alternatives (0 is the default): a choice point when enumerating,
    /// a uniform draw otherwise.
    pub fn alternative(&mut self, domain: u32) -> u32 {
        if let Some(pick) = self.choose(domain) {
            self.record(u64::from(pick));
            return pick;
        }
        let v = self.below(u64::from(domain.max(1)));
        u32::try_from(v).unwrap_or(0)
    }

    /// `true` with probability `ratio`.
    pub fn chance(&mut self, ratio: Ratio) -> bool {
        if ratio.num == 0 {
            return false;
        }
        if let Some(pick) = self.choose(2) {
            return self.record(u64::from(pick)) == 1;
        }
        let v = self.rng.random_range(0..ratio.den.max(1));
        // Minimised: a value at or above `num`, so false.
        let v = if self.minimised() {
            u64::from(ratio.den.max(ratio.num))
        } else {
            u64::from(v)
        };
        self.record(v) < u64::from(ratio.num)
    }

    pub(crate) fn take_decisions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.decisions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(rng: &mut SimRng) -> Vec<u64> {
        vec![
            rng.between(3, 6),
            rng.below(10),
            u64::from(rng.chance(Ratio { num: 1, den: 1 })),
            rng.between(100, 200),
        ]
    }

    #[test]
    fn minimised_draws_take_their_least_value_and_the_others_keep_theirs() {
        let plain = draws(&mut SimRng::new(7));
        let mut rng = SimRng::minimising(7, [0, 2].into_iter().collect());
        let shrunk = draws(&mut rng);
        assert_eq!(shrunk, vec![3, plain[1], 0, plain[3]]);
        assert_eq!(rng.draws(), 4);
        // Nothing minimised: the plain stream.
        assert_eq!(draws(&mut SimRng::minimising(7, BTreeSet::new())), plain);
    }
}
