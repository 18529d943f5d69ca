//! Virtual time. Every machine receives `now` as a parameter; nothing in `core` reads a clock.

use std::fmt;
use std::ops::{Add, Sub};

use serde::{Deserialize, Serialize};

/// A point in virtual time, in milliseconds since the start of a run.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(u64);

/// A span of virtual time, in milliseconds.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Duration(u64);

impl Timestamp {
    /// The start of every run.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `ms` milliseconds after the start of the run.
    pub const fn from_ms(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the start of the run.
    pub const fn as_ms(self) -> u64 {
        self.0
    }

    /// The time elapsed since `earlier`, or zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration(0);

    /// A span of `ms` milliseconds.
    pub const fn from_ms(ms: u64) -> Duration {
        Duration(ms)
    }

    /// A span of `s` seconds.
    pub const fn from_secs(s: u64) -> Duration {
        Duration(s * 1000)
    }

    /// The span in milliseconds.
    pub const fn as_ms(self) -> u64 {
        self.0
    }
}

/// A process's clock error: what it reads at true time `t` is `t + offset + t * rate / 10^6`
/// (an NTP offset and a drift in parts per million), never less than it read before (a
/// monotonic clock: a step back is held until true time catches up). Stores keep true time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ClockSkew {
    /// The constant offset, in milliseconds (negative: the clock is behind).
    pub offset_ms: i64,
    /// The rate error in parts per million (positive: the clock runs fast). Bounded by
    /// [`ClockSkew::RATE_PPM_MAX`] in magnitude.
    pub rate_ppm: i32,
}

impl ClockSkew {
    /// A true clock.
    pub const NONE: ClockSkew = ClockSkew {
        offset_ms: 0,
        rate_ppm: 0,
    };

    /// The largest rate error a clock may have, in parts per million (50%: a clock that
    /// runs at half or one and a half times true speed; real ones are within 500 ppm).
    pub const RATE_PPM_MAX: i32 = 500_000;

    /// A clock `offset_ms` off with a rate error of `rate_ppm`, or `None` if the rate is
    /// beyond [`ClockSkew::RATE_PPM_MAX`].
    pub fn new(offset_ms: i64, rate_ppm: i32) -> Option<ClockSkew> {
        (rate_ppm.unsigned_abs() <= Self::RATE_PPM_MAX.unsigned_abs()).then_some(ClockSkew {
            offset_ms,
            rate_ppm,
        })
    }

    /// What the clock reads at true time `now` (before the monotonic hold; zero at the
    /// least).
    pub fn read(self, now: Timestamp) -> Timestamp {
        let rate = self.rate_ppm.clamp(-Self::RATE_PPM_MAX, Self::RATE_PPM_MAX);
        // The same sum in 64 bits when it fits (every run's times do), which spares the
        // 128-bit division; the division truncates toward zero in either width.
        if let Ok(t) = i64::try_from(now.0)
            && let Some(local) = t
                .checked_mul(i64::from(rate))
                .map(|d| d / 1_000_000)
                .and_then(|drift| t.checked_add(drift))
                .and_then(|l| l.checked_add(self.offset_ms))
        {
            return Timestamp(u64::try_from(local.max(0)).unwrap_or(0));
        }
        let t = i128::from(now.0);
        let local = t + i128::from(self.offset_ms) + t * i128::from(rate) / 1_000_000;
        Timestamp(u64::try_from(local.max(0)).unwrap_or(u64::MAX))
    }

    /// The earliest true time at which the clock reads `local` or later: when a timer the
    /// process set for `local` fires.
    pub fn true_time_of(self, local: Timestamp) -> Timestamp {
        if self == ClockSkew::NONE {
            return local;
        }
        let rate = i128::from(self.rate_ppm.clamp(-Self::RATE_PPM_MAX, Self::RATE_PPM_MAX));
        // Solve t + o + t*r/1e6 >= L for the smallest t, then correct the rounding.
        let target = i128::from(local.0) - i128::from(self.offset_ms);
        let mut t = (target * 1_000_000).div_euclid(1_000_000 + rate).max(0);
        let as_ts = |t: i128| Timestamp(u64::try_from(t.max(0)).unwrap_or(u64::MAX));
        while t > 0 && self.read(as_ts(t - 1)) >= local {
            t -= 1;
        }
        while self.read(as_ts(t)) < local && t < i128::from(u64::MAX) {
            t += 1;
        }
        as_ts(t)
    }
}

impl fmt::Display for ClockSkew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:+} ms, {:+} ppm", self.offset_ms, self.rate_ppm)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(rhs.0))
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration(self.0.saturating_add(rhs.0))
    }
}

impl fmt::Display for Timestamp {
    /// `mm:ss.mmm`, the way the documents write their timelines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let s = (self.0 / 1000) % 60;
        let m = self.0 / 60_000;
        write!(f, "{m:02}:{s:02}.{ms:03}")
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_the_documents_timelines() {
        assert_eq!(Timestamp::from_ms(21_000).to_string(), "00:21.000");
        assert_eq!(Timestamp::from_ms(61_005).to_string(), "01:01.005");
        assert_eq!(Duration::from_secs(20).to_string(), "20s");
        assert_eq!(Duration::from_ms(150).to_string(), "150ms");
    }

    #[test]
    fn a_skewed_clock_reads_offset_and_drift_and_finds_its_timers_true_time() {
        let fast = ClockSkew::new(250, 100_000).expect("10% is within bounds");
        assert_eq!(
            fast.read(Timestamp::from_ms(10_000)),
            Timestamp::from_ms(11_250)
        );
        let slow = ClockSkew::new(-5_000, -100_000).expect("within bounds");
        assert_eq!(
            slow.read(Timestamp::from_ms(1_000)),
            Timestamp::ZERO,
            "never below zero"
        );
        assert_eq!(
            slow.read(Timestamp::from_ms(10_000)),
            Timestamp::from_ms(4_000)
        );
        assert_eq!(ClockSkew::new(0, 500_001), None);
        assert_eq!(
            ClockSkew::NONE.read(Timestamp::from_ms(7)),
            Timestamp::from_ms(7)
        );
        for skew in [
            fast,
            slow,
            ClockSkew::NONE,
            ClockSkew::new(3, 333).expect("ok"),
        ] {
            for local in [0, 1, 999, 4_000, 11_250, 11_251, 123_457] {
                let local = Timestamp::from_ms(local);
                let t = skew.true_time_of(local);
                assert!(skew.read(t) >= local, "{skew}: {t} reads {}", skew.read(t));
                if t > Timestamp::ZERO {
                    assert!(
                        skew.read(t - Duration::from_ms(1)) < local,
                        "{skew}: {local}"
                    );
                }
            }
        }
        assert_eq!(fast.to_string(), "+250 ms, +100000 ppm");
    }

    /// `read`'s 64-bit path gives what the 128-bit sum gives, at the edges of both.
    #[test]
    fn a_clock_reads_the_128_bit_sum_whatever_the_width_it_is_computed_in() {
        let wide = |skew: ClockSkew, now: u64| {
            let t = i128::from(now);
            let local = t + i128::from(skew.offset_ms) + t * i128::from(skew.rate_ppm) / 1_000_000;
            Timestamp(u64::try_from(local.max(0)).unwrap_or(u64::MAX))
        };
        let max = ClockSkew::RATE_PPM_MAX;
        let offsets = [0, 1, -1, 250, -5_000, i64::MAX, i64::MIN, i64::MAX / 2];
        let rates = [0, 1, -1, 333, -333, 100_000, -100_000, max, -max];
        let times = [
            0,
            1,
            999_999,
            1_000_001,
            123_457,
            i64::MAX as u64 / 500_000,
            i64::MAX as u64 / 500_000 + 1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX,
        ];
        for offset_ms in offsets {
            for rate_ppm in rates {
                let skew = ClockSkew {
                    offset_ms,
                    rate_ppm,
                };
                for now in times {
                    assert_eq!(
                        skew.read(Timestamp(now)),
                        wide(skew, now),
                        "{skew} at {now} ms"
                    );
                }
            }
        }
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Timestamp::ZERO - Duration::from_ms(5), Timestamp::ZERO);
        assert_eq!(
            Timestamp::from_ms(u64::MAX) + Duration::from_ms(1),
            Timestamp::from_ms(u64::MAX)
        );
        assert_eq!(
            Timestamp::from_ms(3).saturating_since(Timestamp::from_ms(9)),
            Duration::ZERO
        );
    }
}
