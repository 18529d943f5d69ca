//! Bounded exhaustive search over a world's fault decisions.
//!
//! Every fault decision of a run is a choice point with a small domain (inject or not; the
//! shortest or the longest pause or delay). The search visits, depth first and each exactly
//! once, every schedule that deviates from the default (no fault) at most `deviations_max`
//! times: the small-scope hypothesis applied to faults, in the manner of a preemption bound.

use super::rng::Choices;

/// What a bounded exhaustive search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhaustive {
    /// Schedules run.
    pub schedules: u64,
    /// Schedules that broke an invariant.
    pub violations: u64,
    /// The choice prefix of the first violating schedule (replay it with
    /// `Scheduler::Exhaustive`).
    pub first_violation: Option<Vec<u32>>,
    /// Whether every schedule within the bound was visited (false if `schedules_max` cut the
    /// search short).
    pub complete: bool,
}

/// Visits every schedule with at most `deviations_max` non-default choices, calling `run`
/// with each schedule's choice prefix; `run` returns whether the schedule broke an invariant
/// and the choices the run took. Stops early after `schedules_max` schedules.
pub fn exhaustive(
    deviations_max: u32,
    schedules_max: u64,
    run: impl FnMut(&[u32]) -> (bool, Choices),
) -> Exhaustive {
    search(deviations_max, schedules_max, false, run)
}

/// As [`exhaustive`], but stops at the first schedule that breaks an invariant (`complete`
/// is then false: the rest was not visited): for a variant that must break somewhere, where
/// visiting the rest only costs time.
pub fn exhaustive_until_violation(
    deviations_max: u32,
    schedules_max: u64,
    run: impl FnMut(&[u32]) -> (bool, Choices),
) -> Exhaustive {
    search(deviations_max, schedules_max, true, run)
}

fn search(
    deviations_max: u32,
    schedules_max: u64,
    stop_at_violation: bool,
    mut run: impl FnMut(&[u32]) -> (bool, Choices),
) -> Exhaustive {
    let mut found = Exhaustive {
        schedules: 0,
        violations: 0,
        first_violation: None,
        complete: true,
    };
    let mut stack: Vec<Vec<u32>> = vec![Vec::new()];
    while let Some(prefix) = stack.pop() {
        if found.schedules >= schedules_max {
            found.complete = false;
            break;
        }
        let (violated, choices) = run(&prefix);
        found.schedules += 1;
        if violated {
            found.violations += 1;
            found.first_violation.get_or_insert_with(|| prefix.clone());
            if stop_at_violation {
                found.complete = false;
                break;
            }
        }
        let deviations =
            u32::try_from(prefix.iter().filter(|c| **c != 0).count()).unwrap_or(u32::MAX);
        if deviations >= deviations_max {
            continue;
        }
        // Every later choice point took its default; branch on each alternative.
        let taken: Vec<u32> = choices.taken.iter().map(|(c, _)| *c).collect();
        for i in (prefix.len()..choices.taken.len()).rev() {
            let (_, domain) = choices.taken[i];
            for alt in (1..domain).rev() {
                let mut next = taken[..i].to_vec();
                next.push(alt);
                stack.push(next);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_until_a_violation_stops_at_the_first_one() {
        let all = exhaustive(2, 100, toy);
        let first = exhaustive_until_violation(2, 100, toy);
        assert_eq!(first.violations, 1);
        assert_eq!(first.first_violation, all.first_violation);
        assert!(first.schedules < all.schedules && !first.complete);
        let none = exhaustive_until_violation(1, 100, toy);
        assert_eq!((none.violations, none.complete), (0, true));
    }

    /// A toy "run": three binary choice points; it fails iff the 1st and 3rd are taken.
    fn toy(prefix: &[u32]) -> (bool, Choices) {
        let taken: Vec<(u32, u32)> = (0..3)
            .map(|i| (prefix.get(i).copied().unwrap_or(0), 2))
            .collect();
        let violated = taken[0].0 == 1 && taken[2].0 == 1;
        (
            violated,
            Choices {
                prefix: prefix.to_vec(),
                taken,
            },
        )
    }

    #[test]
    fn visits_each_schedule_within_the_bound_once() {
        let mut seen = Vec::new();
        let r = exhaustive(3, 1_000, |p| {
            let out = toy(p);
            seen.push(out.1.taken.iter().map(|(c, _)| *c).collect::<Vec<_>>());
            out
        });
        seen.sort();
        let before = seen.len();
        seen.dedup();
        assert_eq!(before, seen.len(), "a schedule was visited twice");
        assert_eq!(r.schedules, 8, "all 2^3 schedules");
        assert!(r.complete);
        assert_eq!(r.violations, 2, "101 and 111");
    }

    #[test]
    fn the_bound_limits_deviations_and_can_miss_deeper_bugs() {
        let one = exhaustive(1, 1_000, toy);
        assert_eq!(one.schedules, 4, "000, 100, 010, 001");
        assert_eq!(one.violations, 0, "the bug needs two deviations");
        let two = exhaustive(2, 1_000, toy);
        assert_eq!(two.schedules, 7);
        assert_eq!(two.first_violation, Some(vec![1, 0, 1]));
    }

    #[test]
    fn a_schedule_cap_marks_the_search_incomplete() {
        let r = exhaustive(3, 5, toy);
        assert_eq!(r.schedules, 5);
        assert!(!r.complete);
    }
}
