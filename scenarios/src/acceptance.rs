//! The documents' own acceptance tests (RACES.md 7.2 and 7.4; document 000's, 7.1, come from
//! its families' modules), written as literally as the
//! model allows and run against each variant of the race they were written for. A test that
//! passes on the Buggy variant cannot detect that race: that finding is part of the catalog.

use racelab_core::Variant;
use racelab_core::health::oracle::{QueueEnd, episodes_counted_once};
use racelab_core::health::{
    EndpointId, FailureQueue, Generation, HealthTag, LocalOp, Observation, Source, Status,
};
use racelab_sim::explore::{self, Scheduler};

use crate::proxy::{self, ProxyPlan, request_cfg};

/// One of the documents' tests.
#[derive(Clone, Copy, Debug)]
pub struct DocTest {
    /// Its id in RACES.md (`AC-001-1`).
    pub id: &'static str,
    /// The test's name or description in the document.
    pub name: &'static str,
    /// The race it was written to catch.
    pub race: &'static str,
    /// What it does, and what "Buggy" means for it.
    pub setting: &'static str,
    pub(crate) run: fn(Variant) -> bool,
}

/// A test's outcome per variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocTestResult {
    /// The test.
    pub id: &'static str,
    /// The race it was written for.
    pub race: &'static str,
    /// Whether it passes on Buggy, DocFix, Correct.
    pub passes: [bool; 3],
}

impl DocTestResult {
    /// Whether the test fails on the Buggy variant, i.e. can detect its race.
    pub fn detects(&self) -> bool {
        !self.passes[0]
    }
}

impl DocTest {
    /// Runs the test against `variant`; `true` when it passes.
    pub fn passes(&self, variant: Variant) -> bool {
        (self.run)(variant)
    }

    /// Runs it against every variant.
    pub fn result(&self) -> DocTestResult {
        DocTestResult {
            id: self.id,
            race: self.race,
            passes: Variant::ALL.map(|v| self.passes(v)),
        }
    }
}

/// The documents' tests, in document order.
pub fn doc_tests() -> Vec<DocTest> {
    vec![
        DocTest {
            id: "AC-001-1",
            name: "test_concurrent_updates",
            race: "R-001-01",
            setting: "50 concurrent update_fail() (401) and 50 check_health() (1 ms sleep, then \
                      is_healthy()) coroutines; expects the final status unhealthy and \
                      is_healthy() false. 20 seeded interleavings",
            run: ac_001_1,
        },
        DocTest {
            id: "AC-003-1",
            name: "test_duplicate_endpoint_not_counted_twice",
            race: "R-003-01",
            setting: "adds the same endpoint twice; expects total_failed == 1",
            run: ac_003_1,
        },
        DocTest {
            id: "AC-003-2",
            name: "test_multiple_different_endpoints",
            race: "R-003-01",
            setting: "adds two different endpoints; expects total_failed == 2",
            run: ac_003_2,
        },
        DocTest {
            id: "AC-003-3",
            name: "test_remove_and_readd_endpoint",
            race: "R-003-01",
            setting: "adds, removes and re-adds an endpoint; expects total_failed == 2 \
                      (episodes)",
            run: ac_003_3,
        },
        DocTest {
            id: "AC-003-4",
            name: "test_persistence_with_duplicates",
            race: "R-003-01",
            setting: "adds an endpoint twice, saves and reloads; expects one endpoint and \
                      total_failed == 1",
            run: ac_003_4,
        },
        DocTest {
            id: "AC-003-5",
            name: "test_concurrent_add_same_endpoint",
            race: "R-003-02",
            setting: "10 coroutines add the same endpoint; expects total_failed == 1. On one \
                      event loop the unlocked check-then-act has no await, so each add is one \
                      synchronous block (RACES.md 0.6); Buggy is the deduplicated add without \
                      the lock. 20 seeded interleavings",
            run: ac_003_5,
        },
        DocTest {
            id: "AC-003-6",
            name: "test_concurrent_add_different_endpoints",
            race: "R-003-02",
            setting: "10 coroutines add 10 different endpoints; expects total_failed == 10 \
                      (Buggy as for AC-003-5)",
            run: ac_003_6,
        },
        DocTest {
            id: "AC-003-7",
            name: "test_concurrent_add_and_remove",
            race: "R-003-03",
            setting: "10 coroutines add and 10 remove endpoints concurrently; expects a \
                      consistent queue (I-FQ1, I-FQ2). Buggy is the deduplicated queue with the \
                      unconditional removal. 20 seeded interleavings",
            run: ac_003_7,
        },
        DocTest {
            id: "AC-003-8",
            name: "scenario: 2 endpoints, 10 concurrent failing requests",
            race: "R-003-01",
            setting: "both endpoints down, 10 requests with 3 attempts each; expects \
                      failed_endpoints == {E1, E2} and total_failed == 2. 20 seeds",
            run: ac_003_8,
        },
    ]
    .into_iter()
    .chain(crate::billing::doc_tests())
    .chain(crate::quota::doc_tests())
    .collect()
}

/// Seeds each concurrent test runs under.
const SEEDS: u64 = 20;

const E1: EndpointId = EndpointId(1);

fn runs(plan: impl Fn() -> ProxyPlan, check: impl Fn(&explore::Run) -> bool) -> bool {
    (0..SEEDS).all(|seed| {
        let (spec, _) = proxy::world(plan());
        let run = explore::run(
            spec,
            &Scheduler::Random {
                seed,
                faults: proxy::profile_latency(),
            },
        );
        check(&run)
    })
}

fn ac_001_1(variant: Variant) -> bool {
    let plan = || {
        let mut plan = ProxyPlan::new(variant, 2);
        for i in 0..50 {
            let fail = LocalOp::Observe {
                endpoint: E1,
                observation: Observation::Unauthorized,
                source: Source::Request,
                started: Generation(0),
            };
            plan.blocks.push((
                format!("U{i}"),
                0,
                vec![(fail, HealthTag::Observe { endpoint: E1 })],
            ));
            plan.blocks.push((
                format!("C{i}"),
                1,
                vec![(LocalOp::Candidates, HealthTag::Select)],
            ));
        }
        plan
    };
    runs(plan, |run| {
        proxy::host_state(run, 0).is_some_and(|l| {
            let status = l.health.get(E1).map(|h| h.status);
            matches!(status, Some(Status::Unhealthy | Status::AuthFailed))
                && !l.health.is_healthy(E1)
        })
    })
}

fn ac_003_1(variant: Variant) -> bool {
    let mut q = FailureQueue::new(variant);
    q.add(E1);
    q.add(E1);
    q.total_failed() == 1
}

fn ac_003_2(variant: Variant) -> bool {
    let mut q = FailureQueue::new(variant);
    q.add(E1);
    q.add(EndpointId(2));
    q.total_failed() == 2
}

fn ac_003_3(variant: Variant) -> bool {
    let mut q = FailureQueue::new(variant);
    q.add(E1);
    let epoch = q.begin_recovery(E1);
    q.remove(E1, epoch);
    q.add(E1);
    q.total_failed() == 2
}

fn ac_003_4(variant: Variant) -> bool {
    let mut q = FailureQueue::new(variant);
    q.add(E1);
    q.add(E1);
    match FailureQueue::from_json(variant, &q.to_json()) {
        Ok(back) => back.failed() == vec![E1] && back.total_failed() == 1,
        Err(_) => false,
    }
}

/// The queue semantics of the code AC-003-5/6/7 were written against: the deduplicated add,
/// with (DocFix) or without (Buggy) the lock, which on one event loop are the same.
fn after_dedup(variant: Variant) -> Variant {
    match variant {
        Variant::Buggy => Variant::DocFix,
        v => v,
    }
}

fn concurrent_adds(variant: Variant, endpoints: impl Fn(u32) -> EndpointId, expect: u64) -> bool {
    let plan = || {
        let mut plan = ProxyPlan::new(after_dedup(variant), 10);
        for i in 0..10 {
            let add = LocalOp::FqAdd {
                endpoint: endpoints(i),
            };
            plan.blocks
                .push((format!("A{i}"), 0, vec![(add, HealthTag::FailureQueue)]));
        }
        plan
    };
    runs(plan, |run| {
        proxy::host_state(run, 0)
            .map(QueueEnd::read)
            .is_some_and(|end| end.total_failed == expect)
    })
}

fn ac_003_5(variant: Variant) -> bool {
    concurrent_adds(variant, |_| E1, 1)
}

fn ac_003_6(variant: Variant) -> bool {
    concurrent_adds(variant, |i| EndpointId(i + 1), 10)
}

fn ac_003_7(variant: Variant) -> bool {
    let plan = || {
        let mut plan = ProxyPlan::new(after_dedup(variant), 10);
        for i in 0..10 {
            let endpoint = EndpointId(i % 3 + 1);
            plan.blocks.push((
                format!("A{i}"),
                0,
                vec![(LocalOp::FqAdd { endpoint }, HealthTag::FailureQueue)],
            ));
            plan.blocks.push((
                format!("D{i}"),
                0,
                vec![
                    (
                        LocalOp::BeginProbe { endpoint },
                        HealthTag::Probe { endpoint },
                    ),
                    (
                        LocalOp::FqRemove { endpoint, epoch: 0 },
                        HealthTag::FailureQueue,
                    ),
                ],
            ));
        }
        plan
    };
    runs(plan, |run| {
        proxy::host_state(run, 0)
            .map(QueueEnd::read)
            .is_some_and(|end| episodes_counted_once(&run.history, &end).holds())
    })
}

fn ac_003_8(variant: Variant) -> bool {
    let plan = || {
        let mut plan = ProxyPlan::new(variant, 2);
        for e in 1..=2 {
            plan.script(e).down.push((proxy::ms(0), proxy::ms(60_000)));
        }
        for i in 0..10 {
            plan.request(&format!("R{i}"), 0, request_cfg(variant, 10, true));
        }
        plan
    };
    runs(plan, |run| {
        proxy::host_state(run, 0)
            .map(QueueEnd::read)
            .is_some_and(|end| end.failed == vec![E1, EndpointId(2)] && end.total_failed == 2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_tests_that_cannot_detect_their_race() {
        let blind: Vec<&str> = doc_tests()
            .iter()
            .map(DocTest::result)
            .filter(|r| !r.detects())
            .map(|r| r.id)
            .collect();
        assert_eq!(
            blind,
            [
                "AC-001-1", "AC-003-2", "AC-003-3", "AC-003-5", "AC-003-6", "AC-003-7"
            ]
        );
    }

    #[test]
    fn every_documents_test_passes_on_the_correct_variant() {
        for t in doc_tests() {
            assert!(t.passes(Variant::Correct), "{} fails on Correct", t.id);
        }
    }
}
