//! Sweeps on every core and across machines: a seed range spread over threads
//! ([`sweep_seeds`]), cut into disjoint shards for a CI matrix ([`Shard`]), or run until a
//! time budget is spent ([`SweepPlan::deadline`]).
//!
//! Seeds are independent runs, so the order in which threads finish them changes nothing:
//! each thread keeps its own [`Sweep`], and [`Sweep::merge`] adds them up (counts are sums,
//! first seeds are minima), which is the one-thread summary exactly. Threads claim seeds in
//! increasing order and finish every seed they claimed, so the seeds run are always one
//! consecutive range from the start, even when a deadline stops the sweep.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use crate::{Outcome, Profile, Race, Sweep};

/// Which seeds a sweep runs, on how many threads, and until when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepPlan {
    /// The first seed.
    pub start: u64,
    /// How many seeds at most (`u64::MAX - start` for "until the deadline").
    pub count: u64,
    /// Threads (at least one).
    pub jobs: usize,
    /// No seed is started at or after this instant (wall clock: a budget, never part of a
    /// verdict).
    pub deadline: Option<Instant>,
    /// The fault profile the seeds' faults are drawn from.
    pub profile: Profile,
}

impl SweepPlan {
    /// `count` seeds from `start` on one thread, with no deadline.
    pub fn seeds(start: u64, count: u64) -> SweepPlan {
        SweepPlan {
            start,
            count,
            jobs: 1,
            deadline: None,
            profile: Profile::Race,
        }
    }

    /// The same plan on `jobs` threads (at least one).
    pub fn jobs(self, jobs: usize) -> SweepPlan {
        SweepPlan {
            jobs: jobs.max(1),
            ..self
        }
    }

    /// The same plan, its faults drawn from `profile`.
    pub fn profile(self, profile: Profile) -> SweepPlan {
        SweepPlan { profile, ..self }
    }

    /// The same plan, stopping at `deadline`.
    pub fn until(self, deadline: Option<Instant>) -> SweepPlan {
        SweepPlan { deadline, ..self }
    }

    /// One past the last seed of the plan.
    fn end(&self) -> u64 {
        self.start.saturating_add(self.count)
    }
}

/// The number of threads a sweep uses by default: every core the process may use.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs the seeds of `plan` with `run` on `plan.jobs` threads, calling `progress(done)` on
/// the calling thread as seeds finish. The summary is the same as a one-thread sweep of the
/// same seeds. The first error stops the sweep (seeds already claimed finish) and is
/// returned.
pub fn sweep_seeds<E: Send>(
    race: &Race,
    plan: SweepPlan,
    run: impl Fn(u64) -> Result<Outcome, E> + Sync,
    mut progress: impl FnMut(u64),
) -> Result<Sweep, E> {
    let end = plan.end();
    let expired = || plan.deadline.is_some_and(|d| Instant::now() >= d);
    if plan.jobs <= 1 {
        let mut s = Sweep::default();
        for seed in plan.start..end {
            if expired() {
                break;
            }
            s.record(race, seed, &run(seed)?);
            progress(s.seeds_run);
        }
        return Ok(s);
    }
    let next = AtomicU64::new(plan.start);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.jobs)
            .map(|_| {
                let tx = tx.clone();
                let (next, stop, run, expired) = (&next, &stop, &run, &expired);
                scope.spawn(move || -> Result<Sweep, E> {
                    let mut s = Sweep::default();
                    while !stop.load(Ordering::Relaxed) && !expired() {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= end {
                            break;
                        }
                        match run(seed) {
                            Ok(outcome) => s.record(race, seed, &outcome),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                        // The receiver lives until every worker is joined.
                        let _ = tx.send(());
                    }
                    Ok(s)
                })
            })
            .collect();
        drop(tx);
        let mut done = 0;
        while rx.recv().is_ok() {
            done += 1;
            progress(done);
        }
        let mut total = Sweep::default();
        let mut first_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(s)) => total.merge(&s),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    })
}

/// The K-th of N disjoint, consecutive seed ranges that together cover a sweep: how a CI
/// matrix splits one sweep over machines (`--shard 2/4`). K counts from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 1.
    pub index: u64,
    /// How many shards.
    pub of: u64,
}

impl Shard {
    /// The whole range as one shard.
    pub const WHOLE: Shard = Shard { index: 1, of: 1 };

    /// The shard's part of `count` seeds from `start`: its first seed and its seed count.
    /// Shards differ in size by at most one seed; the earlier ones are the larger.
    pub fn range(self, start: u64, count: u64) -> (u64, u64) {
        let i = self.index - 1;
        let base = count / self.of;
        let rem = count % self.of;
        let first = start
            .saturating_add(i.saturating_mul(base))
            .saturating_add(i.min(rem));
        (first, base + u64::from(i < rem))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

/// Why a shard could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a shard is K/N with 1 <= K <= N (`--shard 2/4` is the second of four), not {0:?}")]
pub struct BadShard(pub String);

impl FromStr for Shard {
    type Err = BadShard;

    fn from_str(text: &str) -> Result<Shard, BadShard> {
        let bad = || BadShard(text.to_string());
        let (k, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let of: u64 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || of == 0 || index > of {
            return Err(bad());
        }
        Ok(Shard { index, of })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_range_once_in_order() {
        for count in [0, 1, 7, 10, 1000, 1001] {
            for of in 1..=9 {
                let mut next = 5;
                for index in 1..=of {
                    let (first, n) = Shard { index, of }.range(5, count);
                    assert_eq!(first, next, "{index}/{of} of {count}");
                    next = first + n;
                }
                assert_eq!(next, 5 + count, "{of} shards of {count}");
            }
        }
    }

    #[test]
    fn shard_text_is_checked() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, of: 4 }));
        assert_eq!(" 1 / 1 ".parse(), Ok(Shard::WHOLE));
        for bad in ["0/4", "5/4", "1/0", "2", "a/b", "-1/4", "", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
