//! The policies' statistics and choices. Every choice is among `candidates` (the indices the
//! gate lets through, in configured order); every random draw comes from the caller's stream.
//!
//! Rewards are in `[0, 1]`: 1 − loss / timeout, where a failure's loss is the whole timeout
//! and a success's is its latency, so a fast 503 earns nothing.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ops::RandomStream;
use crate::time::Timestamp;

/// The most outcomes a sliding window holds.
pub const WINDOW_MAX: usize = 1 << 16;

/// A routing policy (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Policy {
    /// Uniformly at random (the document's `pick()`).
    Uniform,
    /// At random, weighted by each endpoint's exponentially decayed mean reward (`decay` per
    /// own outcome).
    Weighted {
        /// The weight an old mean keeps per outcome, in `(0, 1)`.
        decay: f64,
    },
    /// In turn.
    RoundRobin,
    /// The one with fewer outstanding requests of two distinct random endpoints.
    LeastOutstanding,
    /// The one with the fewest outstanding requests of all (join the shortest queue), ties
    /// broken at random. Not in [`Policy::all`]: it is the policy that herds when the load it
    /// reads is stale (instances sharing load through a store with a lag all see the same
    /// shortest queue and all join it); `route-bench`'s herding table compares it with P2C.
    LeastLoaded,
    /// The cheaper of two random endpoints, cost = peak-EWMA latency × (outstanding + 1).
    PeakEwma {
        /// The EWMA's time constant in milliseconds (Finagle's default is 10 s).
        tau_ms: f64,
    },
    /// UCB1 over all outcomes.
    Ucb1,
    /// UCB over the last `window` outcomes.
    SlidingWindowUcb {
        /// Outcomes kept (at most [`WINDOW_MAX`]).
        window: usize,
        /// The exploration constant (UCB1's is sqrt 2).
        c: f64,
    },
    /// Gaussian Thompson sampling over reward sums discounted by `gamma` per outcome.
    DiscountedThompson {
        /// The discount per outcome, in `(0, 1)`.
        gamma: f64,
        /// Also count each attempt in flight as a censored outcome: its loss is at least its
        /// age, so when the attempts in flight are on average older than the endpoint's
        /// mean loss they pull its estimate down before any of them completes (a slow
        /// endpoint is seen after a fraction of the timeout, not after it).
        censored: bool,
    },
    /// Censored discounted Thompson sampling (as `DiscountedThompson { censored: true }`)
    /// whose draws are moved by the load: each endpoint's draw is corrected for the
    /// difference between its load now and the mean load its outcomes were dispatched at,
    /// by a slope fitted on the outcomes (discounted least squares of reward on load at
    /// dispatch, within each endpoint, pooled over endpoints; never rewarding load). Where
    /// latency does not depend on load the slope stays near 0 and it is Thompson sampling;
    /// where it does (queueing upstreams), an endpoint it piles onto loses its lead as
    /// soon as its requests are dispatched, before any of them completes, so it does not
    /// herd.
    LoadAwareThompson {
        /// The discount per outcome, in `(0, 1)`.
        gamma: f64,
    },
}

impl Policy {
    /// A short name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Uniform => "uniform",
            Policy::Weighted { .. } => "weighted",
            Policy::RoundRobin => "round-robin",
            Policy::LeastOutstanding => "p2c-least-outstanding",
            Policy::LeastLoaded => "least-loaded",
            Policy::PeakEwma { .. } => "p2c-peak-ewma",
            Policy::Ucb1 => "ucb1",
            Policy::SlidingWindowUcb { .. } => "sw-ucb",
            Policy::DiscountedThompson {
                censored: false, ..
            } => "thompson-discounted",
            Policy::DiscountedThompson { censored: true, .. } => "thompson-censored",
            Policy::LoadAwareThompson { .. } => "thompson-load",
        }
    }

    /// Every policy with its default tuning, in table order.
    pub fn all() -> Vec<Policy> {
        vec![
            Policy::Uniform,
            Policy::Weighted { decay: 0.99 },
            Policy::RoundRobin,
            Policy::LeastOutstanding,
            Policy::PeakEwma { tau_ms: 10_000.0 },
            Policy::Ucb1,
            Policy::SlidingWindowUcb {
                window: 2_000,
                c: 0.5,
            },
            Policy::DiscountedThompson {
                gamma: 0.999,
                censored: false,
            },
            Policy::DiscountedThompson {
                gamma: 0.999,
                censored: true,
            },
            Policy::LoadAwareThompson { gamma: 0.999 },
        ]
    }
}

/// A float in `[0, 1)` from 53 random bits.
fn unit(rng: &mut RandomStream) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal draw (Box-Muller, one of the pair).
fn normal(rng: &mut RandomStream) -> f64 {
    let u1 = 1.0 - unit(rng); // in (0, 1]
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Two distinct candidates at random (the same one twice if there is only one).
fn two(candidates: &[usize], rng: &mut RandomStream) -> (usize, usize) {
    let n = candidates.len() as u64;
    let a = rng.below(n) as usize;
    if n < 2 {
        return (candidates[a], candidates[a]);
    }
    let mut b = rng.below(n - 1) as usize;
    if b >= a {
        b += 1;
    }
    (candidates[a], candidates[b])
}

/// The per-endpoint statistics a policy keeps.
#[derive(Clone, Debug)]
pub(super) struct Stats {
    policy: Policy,
    /// Outcomes per endpoint (all-time, or discounted / windowed).
    count: Vec<f64>,
    /// Reward sums per endpoint (same accounting as `count`).
    sum: Vec<f64>,
    /// Weighted: the decayed mean reward, starting at 1.
    mean: Vec<f64>,
    /// Peak EWMA: the latency estimate (ms) and when it was last updated.
    ewma: Vec<f64>,
    stamp: Vec<Timestamp>,
    /// Sliding window: the last outcomes (endpoint, reward).
    window: VecDeque<(usize, f64)>,
    /// Load-aware Thompson: per endpoint, discounted sums (same accounting as `count`) of
    /// the load at dispatch, its square, and its product with the reward.
    load_sum: Vec<f64>,
    load_sq: Vec<f64>,
    load_reward: Vec<f64>,
    /// Outcomes seen (UCB1's t).
    total: u64,
    /// Round robin's cursor.
    cursor: usize,
    /// The client's timeout, ms (rewards are 1 − loss / timeout).
    timeout_ms: f64,
}

impl Stats {
    pub(super) fn new(policy: Policy, n: usize, timeout_ms: u64) -> Stats {
        Stats {
            policy,
            count: vec![0.0; n],
            sum: vec![0.0; n],
            mean: vec![1.0; n],
            ewma: vec![0.0; n],
            stamp: vec![Timestamp::ZERO; n],
            window: VecDeque::new(),
            load_sum: vec![0.0; n],
            load_sq: vec![0.0; n],
            load_reward: vec![0.0; n],
            total: 0,
            cursor: 0,
            timeout_ms: timeout_ms.max(1) as f64,
        }
    }

    /// Chooses one of `candidates` (non-empty). `outstanding` is this router's own requests
    /// in flight (whose summed ages are `age_sum_ms`), `load` the same plus the other
    /// instances' as last read: the load-based policies read `load`.
    pub(super) fn choose(
        &mut self,
        candidates: &[usize],
        outstanding: &[u32],
        load: &[u32],
        age_sum_ms: &[u64],
        now: Timestamp,
        rng: &mut RandomStream,
    ) -> usize {
        assert!(!candidates.is_empty());
        match self.policy {
            Policy::Uniform => candidates[rng.below(candidates.len() as u64) as usize],
            Policy::Weighted { .. } => {
                let weights: Vec<f64> =
                    candidates.iter().map(|&i| self.mean[i].max(0.01)).collect();
                let total: f64 = weights.iter().sum();
                let mut x = unit(rng) * total;
                for (k, w) in weights.iter().enumerate() {
                    if x < *w {
                        return candidates[k];
                    }
                    x -= w;
                }
                candidates[candidates.len() - 1]
            }
            Policy::RoundRobin => {
                // The first candidate at or after the cursor, in configured order.
                let pick = candidates
                    .iter()
                    .copied()
                    .find(|&i| i >= self.cursor)
                    .unwrap_or(candidates[0]);
                self.cursor = pick + 1;
                pick
            }
            Policy::LeastOutstanding => {
                let (a, b) = two(candidates, rng);
                if load[b] < load[a] { b } else { a }
            }
            Policy::LeastLoaded => {
                let least = candidates.iter().map(|&i| load[i]).min();
                let tied: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| Some(load[i]) == least)
                    .collect();
                tied[rng.below(tied.len() as u64) as usize]
            }
            Policy::PeakEwma { tau_ms } => {
                let (a, b) = two(candidates, rng);
                let cost = |i: usize| {
                    let decayed = self.decayed_ewma(i, now, tau_ms);
                    decayed * f64::from(load[i].saturating_add(1))
                };
                if cost(b) < cost(a) { b } else { a }
            }
            Policy::Ucb1 | Policy::SlidingWindowUcb { .. } => {
                if let Some(&i) = candidates.iter().find(|&&i| self.count[i] < 1.0) {
                    return i;
                }
                let (t, c) = match self.policy {
                    Policy::SlidingWindowUcb { window, c } => {
                        ((self.total as f64).min(window as f64), c)
                    }
                    _ => (self.total as f64, std::f64::consts::SQRT_2),
                };
                let ln_t = t.max(1.0).ln();
                self.argmax(candidates, |s, i| {
                    s.sum[i] / s.count[i] + c * (ln_t / s.count[i]).sqrt()
                })
            }
            Policy::DiscountedThompson { .. } | Policy::LoadAwareThompson { .. } => {
                let (censored, slope) = match self.policy {
                    Policy::DiscountedThompson { censored, .. } => (censored, 0.0),
                    _ => (true, self.load_slope()),
                };
                let mut draws = Vec::with_capacity(candidates.len());
                for &i in candidates {
                    // Prior: one pseudo-outcome of reward 1 (optimistic), sd 0.5 per outcome.
                    let mut n = self.count[i] + 1.0;
                    let mut mean = (self.sum[i] + 1.0) / n;
                    if censored && outstanding[i] > 0 {
                        let k = f64::from(outstanding[i]);
                        let bound = 1.0 - (age_sum_ms[i] as f64 / k) / self.timeout_ms;
                        if bound < mean {
                            mean = (mean * n + bound * k) / (n + k);
                            n += k;
                        }
                    }
                    let mut draw = mean + 0.5 / n.sqrt() * normal(rng);
                    if slope > 0.0 {
                        // The expected reward at today's load, not at the mean load the
                        // endpoint's outcomes were dispatched at.
                        let dispatched = if self.count[i] > 0.0 {
                            self.load_sum[i] / self.count[i]
                        } else {
                            0.0
                        };
                        draw -= slope * (f64::from(load[i]) - dispatched);
                    }
                    draws.push(draw);
                }
                let mut best = 0;
                for k in 1..draws.len() {
                    if draws[k] > draws[best] {
                        best = k;
                    }
                }
                candidates[best]
            }
        }
    }

    /// The reward lost per unit of load at dispatch: minus the slope of reward on load,
    /// fitted by discounted least squares within each endpoint (deviations from the
    /// endpoint's own means, so a fast endpoint's higher load does not read as load being
    /// good) pooled over endpoints; 0 when it is not positive or there is no spread of load.
    fn load_slope(&self) -> f64 {
        let (mut cov, mut var) = (0.0, 0.0);
        for i in 0..self.count.len() {
            let n = self.count[i];
            if n < 2.0 {
                continue;
            }
            cov += self.load_reward[i] - self.load_sum[i] * self.sum[i] / n;
            var += self.load_sq[i] - self.load_sum[i] * self.load_sum[i] / n;
        }
        if var <= 1e-9 {
            return 0.0;
        }
        (-cov / var).max(0.0)
    }

    fn argmax(&self, candidates: &[usize], score: impl Fn(&Stats, usize) -> f64) -> usize {
        let mut best = candidates[0];
        let mut best_score = score(self, best);
        for &i in &candidates[1..] {
            let s = score(self, i);
            if s > best_score {
                best = i;
                best_score = s;
            }
        }
        best
    }

    /// Finagle's peak EWMA decayed to `now` (an idle endpoint's estimate fades toward 0, so
    /// it gets tried again).
    fn decayed_ewma(&self, i: usize, now: Timestamp, tau_ms: f64) -> f64 {
        let elapsed = now.saturating_since(self.stamp[i]).as_ms() as f64;
        self.ewma[i] * (-elapsed / tau_ms).exp()
    }

    /// Records a request's outcome on endpoint `i`.
    /// `load` is the load (own plus peers') the endpoint had when the request was chosen,
    /// not counting it: the figure `choose` compared.
    pub(super) fn observe(
        &mut self,
        i: usize,
        reward: f64,
        latency_ms: f64,
        load: f64,
        now: Timestamp,
    ) {
        self.total += 1;
        match self.policy {
            Policy::Uniform
            | Policy::RoundRobin
            | Policy::LeastOutstanding
            | Policy::LeastLoaded => {}
            Policy::Weighted { decay } => {
                self.mean[i] = self.mean[i] * decay + reward * (1.0 - decay);
            }
            Policy::PeakEwma { tau_ms } => {
                let current = self.decayed_ewma(i, now, tau_ms);
                let elapsed = now.saturating_since(self.stamp[i]).as_ms() as f64;
                let w = (-elapsed / tau_ms).exp();
                self.ewma[i] = if latency_ms > current {
                    latency_ms
                } else {
                    current * w + latency_ms * (1.0 - w)
                };
                self.stamp[i] = now;
            }
            Policy::Ucb1 => {
                self.count[i] += 1.0;
                self.sum[i] += reward;
            }
            Policy::SlidingWindowUcb { window, .. } => {
                self.count[i] += 1.0;
                self.sum[i] += reward;
                self.window.push_back((i, reward));
                if self.window.len() > window.clamp(1, WINDOW_MAX)
                    && let Some((j, r)) = self.window.pop_front()
                {
                    self.count[j] -= 1.0;
                    self.sum[j] -= r;
                }
            }
            Policy::DiscountedThompson { gamma, .. } => {
                for k in 0..self.count.len() {
                    self.count[k] *= gamma;
                    self.sum[k] *= gamma;
                }
                self.count[i] += 1.0;
                self.sum[i] += reward;
            }
            Policy::LoadAwareThompson { gamma } => {
                for k in 0..self.count.len() {
                    self.count[k] *= gamma;
                    self.sum[k] *= gamma;
                    self.load_sum[k] *= gamma;
                    self.load_sq[k] *= gamma;
                    self.load_reward[k] *= gamma;
                }
                self.count[i] += 1.0;
                self.sum[i] += reward;
                self.load_sum[i] += load;
                self.load_sq[i] += load * load;
                self.load_reward[i] += load * reward;
            }
        }
    }
}
