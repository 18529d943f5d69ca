//! racelab-models: loom models of the in-process shared structures of `racelab-local`
//! (the proxy's endpoint health table and failure queue, documents 001 and 003; the
//! gateway's endpoint router, document 000).
//!
//! The models are the integration tests `tests/loom_*.rs`, compiled only under `--cfg loom`
//! (a normal `cargo test` builds them to nothing); `scripts/model-check.sh` runs them:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p racelab-models --release --target-dir target/loom -- --nocapture
//! ```
//!
//! Each `Buggy` and `DocFix` structure must be caught: the model counts, outside loom, the
//! interleavings whose outcome breaks the invariant and asserts that there was one. Each
//! `Correct` structure is explored exhaustively under an explicit preemption bound with the
//! invariant asserted in every interleaving. `explore` runs one model and reports the bound,
//! the number of interleavings and the wall time. The bounded exhaustive search over
//! simulated worlds is `racelab_sim::explore::exhaustive`.

#![forbid(unsafe_code)]

#[cfg(loom)]
pub use explore::{Explored, Outcomes, explore};

#[cfg(loom)]
mod explore {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// What one loom exploration did.
    #[derive(Clone, Copy, Debug)]
    pub struct Explored {
        /// The preemption bound.
        pub preemption_bound: usize,
        /// Interleavings explored (counted by the model closure).
        pub iterations: u64,
        /// Wall time (reported, never asserted).
        pub wall: Duration,
    }

    /// Counters of outcomes, shared between the interleavings of one exploration (they live
    /// outside loom, so loom neither sees nor resets them).
    #[derive(Clone, Debug, Default)]
    pub struct Outcomes {
        bad: Arc<AtomicU64>,
        good: Arc<AtomicU64>,
    }

    impl Outcomes {
        /// Counters at zero.
        pub fn new() -> Outcomes {
            Outcomes::default()
        }

        /// Counts one interleaving's outcome: `bad` if it broke the invariant.
        pub fn record(&self, bad: bool) {
            let counter = if bad { &self.bad } else { &self.good };
            counter.fetch_add(1, Ordering::Relaxed);
        }

        /// Interleavings that broke the invariant.
        pub fn bad(&self) -> u64 {
            self.bad.load(Ordering::Relaxed)
        }

        /// Interleavings that kept it.
        pub fn good(&self) -> u64 {
            self.good.load(Ordering::Relaxed)
        }
    }

    /// Explores every interleaving of `model` with at most `preemption_bound` preemptions
    /// (no time or permutation limit, whatever the `LOOM_*` environment says, so that an
    /// exploration never stops early and passes silently), and prints the bound, the count
    /// and the wall time under `name`.
    pub fn explore<F>(name: &str, preemption_bound: usize, model: F) -> Explored
    where
        F: Fn() + Sync + Send + 'static,
    {
        let iterations = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&iterations);
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(preemption_bound);
        builder.max_duration = None;
        builder.max_permutations = None;
        builder.checkpoint_file = None;
        let start = Instant::now();
        builder.check(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            model();
        });
        let explored = Explored {
            preemption_bound,
            iterations: iterations.load(Ordering::Relaxed),
            wall: start.elapsed(),
        };
        println!(
            "loom {name}: preemption bound {}, {} interleavings, {:.2?}",
            explored.preemption_bound, explored.iterations, explored.wall
        );
        explored
    }
}
