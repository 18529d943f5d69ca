//! R-000-07 as a proptest state machine: requests of one session start, make attempts that
//! succeed or fail, and emit their affinity feedback, which is delivered later and in any
//! order across requests (in order within a request whose protocol awaits its writes). After
//! every delivery the stored affinity must be one the invariants allow: written only for a
//! final success (A1), never over a later-started request's record (A2), never cleared after
//! a failure of another upstream (A3). The Correct protocol runs the named scripts'
//! semantics (`ScriptName::run`), so the scripts themselves are what is checked.
//!
//! The document's fix must fail (proptest finds and shrinks C-1 or C-2); Correct must hold.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use racelab_core::{KvOp, KvReply, KvView, ScriptName, Variant};

/// The most requests of one case.
const REQUESTS: usize = 3;

/// One transition, by request index (indices of requests that cannot take it are skipped).
#[derive(Clone, Copy, Debug)]
enum Action {
    Start(usize),
    /// The request's next attempt, succeeding or failing.
    Attempt(usize, bool),
    /// Delivers the oldest pending feedback of a request (its first, for a protocol that
    /// fires and forgets).
    Deliver(usize),
}

fn action() -> impl Strategy<Value = Action> {
    let r = 0..REQUESTS;
    prop_oneof![
        1 => r.clone().prop_map(Action::Start),
        2 => (r.clone(), any::<bool>()).prop_map(|(r, ok)| Action::Attempt(r, ok)),
        2 => r.prop_map(Action::Deliver),
    ]
}

/// A feedback write in flight.
#[derive(Clone, Debug)]
enum Feedback {
    /// Set the affinity to `upstream` (the attempt's outcome said `ok`).
    Set { upstream: u32, ok: bool },
    /// Clear the affinity after a failure of `upstream`.
    Clear { upstream: u32 },
}

#[derive(Clone, Debug, Default)]
struct Req {
    seq: Option<u64>,
    attempts: u32,
    finished: bool,
    pending: VecDeque<Feedback>,
}

/// One hash, `aff:S`, as the scripts see it.
#[derive(Default)]
struct Record(BTreeMap<String, String>);

impl KvView for Record {
    fn call(&mut self, op: &KvOp) -> KvReply {
        match op {
            KvOp::HGet { field, .. } => self
                .0
                .get(field)
                .cloned()
                .map_or(KvReply::Nil, KvReply::Bulk),
            KvOp::HSet { pairs, .. } => {
                for (f, v) in pairs {
                    self.0.insert(f.clone(), v.clone());
                }
                KvReply::Int(0)
            }
            KvOp::Del { .. } => {
                let had = !self.0.is_empty();
                self.0.clear();
                KvReply::Int(i64::from(had))
            }
            _ => KvReply::Error("ERR not in this model".into()),
        }
    }
}

/// Which request wrote the stored record (the oracle's view, beside the record itself).
struct World {
    variant: Variant,
    reqs: Vec<Req>,
    next_seq: u64,
    record: Record,
    writer: Option<(u64, u32)>,
}

impl World {
    fn new(variant: Variant) -> World {
        World {
            variant,
            reqs: vec![Req::default(); REQUESTS],
            next_seq: 1,
            record: Record::default(),
            writer: None,
        }
    }

    /// Whether a request waits for its feedback writes before going on.
    fn awaited(&self) -> bool {
        self.variant != Variant::Buggy
    }

    fn step(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Start(r) => {
                if self.reqs[r].seq.is_none() {
                    self.reqs[r].seq = Some(self.next_seq);
                    self.next_seq += 1;
                }
            }
            Action::Attempt(r, ok) => {
                let awaited = self.awaited();
                let req = &mut self.reqs[r];
                if req.seq.is_none() || req.finished || (awaited && !req.pending.is_empty()) {
                    return Ok(());
                }
                req.attempts += 1;
                // Request r's first choice alternates with its index; the retry goes to the
                // other upstream.
                let upstream = (r as u32 + req.attempts) % 2 + 1;
                req.finished = ok || req.attempts >= 2;
                let feedback = match (self.variant, ok) {
                    (Variant::Buggy, _) | (_, true) => Feedback::Set { upstream, ok },
                    (_, false) => Feedback::Clear { upstream },
                };
                req.pending.push_back(feedback);
            }
            Action::Deliver(r) => {
                let Some(seq) = self.reqs[r].seq else {
                    return Ok(());
                };
                let Some(feedback) = self.reqs[r].pending.pop_front() else {
                    return Ok(());
                };
                self.deliver(seq, feedback)?;
            }
        }
        Ok(())
    }

    fn deliver(&mut self, seq: u64, feedback: Feedback) -> Result<(), String> {
        let key = vec!["aff:S".to_string()];
        match feedback {
            Feedback::Set { upstream, ok } => {
                let wrote = match self.variant {
                    Variant::Correct => {
                        let args = vec![seq.to_string(), "upstream".into(), format!("E{upstream}")];
                        ScriptName::SetIfNewer.run(&mut self.record, &key, &args) == KvReply::Int(1)
                    }
                    _ => {
                        let pairs = vec![("upstream".to_string(), format!("E{upstream}"))];
                        let op = KvOp::HSet {
                            key: key[0].clone(),
                            pairs,
                        };
                        self.record.call(&op);
                        true
                    }
                };
                if wrote {
                    if !ok {
                        return Err(format!(
                            "A1: request #{seq} set E{upstream} after a failure"
                        ));
                    }
                    if let Some((w, _)) = self.writer
                        && w > seq
                    {
                        return Err(format!(
                            "A2: request #{seq} overwrote request #{w}'s record"
                        ));
                    }
                    self.writer = Some((seq, upstream));
                }
            }
            Feedback::Clear { upstream } => {
                let cleared = match self.variant {
                    Variant::Correct => {
                        let args = vec!["upstream".into(), format!("E{upstream}"), seq.to_string()];
                        ScriptName::CompareAndDeleteVersioned.run(&mut self.record, &key, &args)
                            == KvReply::Int(1)
                    }
                    _ => {
                        self.record.call(&KvOp::Del {
                            key: key[0].clone(),
                        }) == KvReply::Int(1)
                    }
                };
                if cleared {
                    if let Some((w, u)) = self.writer
                        && u != upstream
                    {
                        return Err(format!(
                            "A3: request #{seq}'s failure on E{upstream} cleared request #{w}'s E{u}"
                        ));
                    }
                    self.writer = None;
                }
            }
        }
        // The record and the oracle's view agree.
        let stored = self.record.0.get("upstream").cloned();
        let expected = self.writer.map(|(_, u)| format!("E{u}"));
        if stored != expected {
            return Err(format!(
                "the record holds {stored:?}, the model expects {expected:?}"
            ));
        }
        Ok(())
    }
}

fn run(variant: Variant, actions: &[Action]) -> Result<(), String> {
    let mut world = World::new(variant);
    for a in actions {
        world.step(*a)?;
    }
    // Deliver whatever is still in flight, request by request.
    for r in 0..REQUESTS {
        while let Some(seq) = world.reqs[r].seq {
            let Some(f) = world.reqs[r].pending.pop_front() else {
                break;
            };
            world.deliver(seq, f)?;
        }
    }
    Ok(())
}

fn check(variant: Variant, cases: u32) -> Result<(), TestError<Vec<Action>>> {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&prop::collection::vec(action(), 0..24), |actions| {
        run(variant, &actions).map_err(TestCaseError::fail)
    })
}

#[test]
fn correct_keeps_a1_a2_a3_under_any_delivery_order() {
    if let Err(e) = check(Variant::Correct, 4_000) {
        panic!("Correct broke an invariant: {e}");
    }
}

#[test]
fn the_documents_fix_fails_with_two_concurrent_requests() {
    match check(Variant::DocFix, 4_000) {
        Err(TestError::Fail(why, actions)) => {
            let why = why.to_string();
            assert!(why.contains("A2") || why.contains("A3"), "{why}");
            // Shrunk to two requests, as C-1 and C-2 are.
            let mut who: Vec<usize> = actions
                .iter()
                .map(|a| match a {
                    Action::Start(r) | Action::Attempt(r, _) | Action::Deliver(r) => *r,
                })
                .collect();
            who.sort_unstable();
            who.dedup();
            assert_eq!(who.len(), 2, "{why}: {actions:?}");
            eprintln!("DocFix's shrunk counterexample: {why}: {actions:?}");
        }
        other => panic!("DocFix was expected to fail: {other:?}"),
    }
}

#[test]
fn fire_and_forget_feedback_fails_a1() {
    match check(Variant::Buggy, 4_000) {
        Err(TestError::Fail(why, _)) => assert!(why.to_string().contains("A"), "{why}"),
        other => panic!("Buggy was expected to fail: {other:?}"),
    }
}
