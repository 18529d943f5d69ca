//! The run's one source of randomness: a ChaCha8 stream expanded from the run's `u64` seed.
//! Probabilities are integer ratios; every draw is recorded as a [`Decision`].

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
    /// In replay mode ([`SimRng::replaying`]): the value of each draw, by its index in the
    /// decision log; draws past its end give their simplest value.
    replay: Option<Vec<u64>>,
    /// Each draw's simplest value (the one a shrink tries first), by index.
    simplest: Vec<u64>,
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
            replay: None,
            simplest: Vec::new(),
        }
    }

    /// A generator that gives each draw the value at its index in `values` instead of the
    /// stream's, brought into the draw's domain (`below(n)` at most `n - 1`, `between` and
    /// `size` clamped to their range, `chance` true when the value is below its numerator),
    /// and to every draw past the end of `values` its simplest value (`below` and
    /// `alternative` 0, `between` its low end, `size` its floor, `chance` false). Seeded with
    /// a run's own draws ([`SimRng::values`]) it replays that run's workload; a shrink edits
    /// the values (deletes a span, lowers one) without knowing what the numbers mean, in the
    /// manner of Hypothesis' shrinking of the choice sequence: deleting the draws of one
    /// request shifts the next request's draws into its place.
    pub fn replaying(values: Vec<u64>) -> SimRng {
        let mut rng = SimRng::new(0);
        rng.replay = Some(values);
        rng
    }

    /// How many draws were made so far.
    pub fn draws(&self) -> usize {
        self.decisions.len()
    }

    /// The values drawn so far, in order ([`SimRng::replaying`] takes them back).
    pub fn values(&self) -> Vec<u64> {
        self.decisions.iter().map(|d| d.value).collect()
    }

    /// The simplest value of each draw made so far, in order: what a replayed draw gives
    /// past the end of its values.
    pub fn simplest(&self) -> &[u64] {
        &self.simplest
    }

    /// In replay mode, the next draw's given value (`simplest` past the end of the values).
    fn replayed(&self, simplest: u64) -> Option<u64> {
        let values = self.replay.as_ref()?;
        Some(
            values
                .get(self.decisions.len())
                .copied()
                .unwrap_or(simplest),
        )
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

    fn record(&mut self, value: u64, simplest: u64) -> u64 {
        self.simplest.push(simplest);
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
        let v = self.replayed(0).map_or(v, |r| r.min(n.saturating_sub(1)));
        self.record(v, 0)
    }

    /// A uniform integer in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let v = if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        };
        let v = self.replayed(lo).map_or(v, |r| r.clamp(lo, hi.max(lo)));
        self.record(v, lo)
    }

    /// A workload's size (how many scans, requests or workers): uniform in `lo..=hi`, as
    /// [`SimRng::between`] draws it (the same value from the same stream), except that a
    /// minimised draw gives `floor`, which may be below `lo`. A sweep draws sizes worth
    /// exploring; a shrink may take the workload down to the least one the protocol can run.
    pub fn size(&mut self, floor: u64, lo: u64, hi: u64) -> u64 {
        let v = if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        };
        let floor = floor.min(lo);
        let v = self
            .replayed(floor)
            .map_or(v, |r| r.clamp(floor, hi.max(lo)));
        self.record(v, floor)
    }

    /// A uniform duration in `lo..=hi`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_ms(self.between(lo.as_ms(), hi.as_ms()))
    }

    /// One of `domain` alternatives (0 is the default): a choice point when enumerating,
    /// a uniform draw otherwise.
    pub fn alternative(&mut self, domain: u32) -> u32 {
        if let Some(pick) = self.choose(domain) {
            self.record(u64::from(pick), 0);
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
            return self.record(u64::from(pick), 0) == 1;
        }
        let v = u64::from(self.rng.random_range(0..ratio.den.max(1)));
        // The simplest value is at or above `num`: false.
        let never = u64::from(ratio.den.max(ratio.num));
        let v = self.replayed(never).unwrap_or(v);
        self.record(v, never) < u64::from(ratio.num)
    }

    /// Makes room for `additional` more draws in the logs (a capacity: draws are unchanged).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.decisions.reserve(additional);
        self.simplest.reserve(additional);
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
    fn a_replayed_stream_gives_its_values_in_their_domains_and_the_simplest_past_them() {
        let mut plain = SimRng::new(7);
        let values = draws(&mut plain);
        // Its own values replay the run.
        let mut again = SimRng::replaying(plain.values());
        assert_eq!(draws(&mut again), values);
        assert_eq!(again.values(), plain.values());
        // Out-of-domain values are brought in; past the end, the simplest values.
        let mut edited = SimRng::replaying(vec![99, 99]);
        assert_eq!(draws(&mut edited), vec![6, 9, 0, 100]);
        assert_eq!(edited.simplest(), &[3, 0, 1, 100]);
    }

    #[test]
    fn a_size_draws_as_between_does_and_shrinks_to_its_floor() {
        for seed in 0..50 {
            let mut a = SimRng::new(seed);
            let mut b = SimRng::new(seed);
            assert_eq!(a.size(1, 3, 6), b.between(3, 6));
            assert_eq!(a.below(1000), b.below(1000));
        }
        let mut rng = SimRng::replaying(vec![0, 9]);
        assert_eq!(rng.size(1, 3, 6), 1);
        assert_eq!(rng.size(1, 3, 6), 6);
        assert_eq!(rng.size(1, 3, 6), 1);
    }
}
