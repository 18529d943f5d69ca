//! R-004-05 as a proptest state machine. The model is the FSM (`JobState::declared`, each
//! state entered at most once); the implementation is each variant's way of driving one
//! job's record through `sched_transition` (the script's own semantics,
//! `ScriptName::SchedTransition.run`), by two schedulers that each push the job forward from
//! what their memory holds and a finalizer that reads the record and times a `dispatched` or
//! `running` job out. Every call meets a Redis that answers, or times out after applying, or
//! times out before applying (the request never arrived). After every step: FSM1 (every
//! applied transition declared, no state entered twice) and FSM2 (every process' memory
//! holds a state the record has held).
//!
//! The document's code and its planned FSM must fail (proptest finds and shrinks a
//! counterexample); the CAS protocol must hold.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use racelab_core::scheduler::jobfsm::{FsmConfig, JobState};
use racelab_core::{KvOp, KvReply, KvView, ScriptName, Variant};

const ACTORS: [&str; 3] = ["S1", "S2", "F"];
const FINALIZER: usize = 2;

/// What Redis does with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Applied and answered.
    Answered,
    /// Applied; the reply is lost (the caller times out).
    LostAfter,
    /// Never applied (the caller times out).
    LostBefore,
}

/// One step of one actor.
#[derive(Clone, Copy, Debug)]
struct Action {
    actor: usize,
    fate: Fate,
}

fn action() -> impl Strategy<Value = Action> {
    let fate = prop_oneof![
        3 => Just(Fate::Answered),
        1 => Just(Fate::LostAfter),
        1 => Just(Fate::LostBefore),
    ];
    (0..ACTORS.len(), fate).prop_map(|(actor, fate)| Action { actor, fate })
}

/// The job's record, `s:fsm:J`, as the script sees it.
#[derive(Default)]
struct Record(BTreeMap<String, String>);

impl KvView for Record {
    fn call(&mut self, op: &KvOp) -> KvReply {
        match op {
            KvOp::HGet { field, .. } => self
                .0
                .get(field)
                .map_or(KvReply::Nil, |v| KvReply::Bulk(v.clone())),
            KvOp::HSet { pairs, .. } => {
                for (f, v) in pairs {
                    self.0.insert(f.clone(), v.clone());
                }
                KvReply::Int(1)
            }
            KvOp::HIncrBy { field, delta, .. } => {
                let n = self.0.get(field).map_or(Some(0), |v| v.parse::<i64>().ok());
                match n {
                    Some(n) => {
                        self.0.insert(field.clone(), (n + delta).to_string());
                        KvReply::Int(n + delta)
                    }
                    None => KvReply::Error("ERR hash value is not an integer".into()),
                }
            }
            other => KvReply::Error(format!("ERR not in this model: {other}")),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Actor {
    /// What memory holds: state and version.
    memory: (Option<JobState>, u64),
    /// A CAS transition with no answer yet: (to, expected, tx).
    pending: Option<(JobState, (Option<JobState>, u64), String)>,
}

struct World {
    /// The script's replies by first word (and `timed_out` for an applied timeout), so that
    /// a passing run shows the retries, refusals and timeouts it met.
    seen: BTreeMap<String, u64>,
    config: FsmConfig,
    record: Record,
    actors: [Actor; 3],
    /// The states the record entered, in order.
    entered: Vec<JobState>,
}

fn name(s: Option<JobState>) -> &'static str {
    s.map_or("none", JobState::as_str)
}

impl World {
    fn new(variant: Variant) -> World {
        World {
            seen: BTreeMap::new(),
            config: FsmConfig::of(variant),
            record: Record::default(),
            actors: Default::default(),
            entered: Vec::new(),
        }
    }

    fn read(&self) -> (Option<JobState>, u64) {
        let state = self.record.0.get("state").and_then(|s| JobState::parse(s));
        let version = self
            .record
            .0
            .get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (state, version)
    }

    /// The transition `actor` sends now, if any.
    fn next(&mut self, actor: usize) -> Option<(JobState, (Option<JobState>, u64), String)> {
        if let Some(p) = self.actors[actor].pending.clone() {
            return Some(p);
        }
        if actor == FINALIZER {
            // The finalizer reads the record first (a read is always answered here).
            self.actors[actor].memory = self.read();
        }
        let memory = self.actors[actor].memory;
        let to = match (actor, memory.0) {
            (FINALIZER, Some(JobState::Dispatched | JobState::Running)) => JobState::TimedOut,
            (FINALIZER, _) => return None,
            (_, None) => JobState::Created,
            (_, Some(JobState::Created)) => JobState::Dispatched,
            (_, Some(JobState::Dispatched)) if self.config.complete => JobState::Running,
            (_, Some(JobState::Dispatched)) => {
                // The document's partial FSM: `running` lives in memory only.
                self.actors[actor].memory.0 = Some(JobState::Running);
                JobState::Done
            }
            (_, Some(JobState::Running)) => JobState::Done,
            (_, Some(_)) => return None,
        };
        let tx = format!("{}:{}:{}", ACTORS[actor], to.as_str(), memory.1);
        Some((to, memory, tx))
    }

    fn step(&mut self, a: Action) -> Result<(), String> {
        let Some((to, expected, tx)) = self.next(a.actor) else {
            return Ok(());
        };
        if self.config.memory_first {
            self.actors[a.actor].memory = (Some(to), expected.1 + 1);
        }
        let args = vec![
            "J".to_string(),
            u8::from(self.config.cas).to_string(),
            name(expected.0).to_string(),
            expected.1.to_string(),
            to.as_str().to_string(),
            tx.clone(),
        ];
        let reply = match a.fate {
            Fate::LostBefore => None,
            Fate::Answered | Fate::LostAfter => {
                let r = ScriptName::SchedTransition.run(&mut self.record, &["s:".into()], &args);
                self.judge_applied(a.actor, &r)?;
                Some(r).filter(|_| a.fate == Fate::Answered)
            }
        };
        let actor = &mut self.actors[a.actor];
        if self.config.cas {
            actor.pending = Some((to, expected, tx));
            if let Some(KvReply::Bulk(text)) = &reply {
                let words: Vec<&str> = text.split(' ').collect();
                let (state, version) = match words.as_slice() {
                    ["ok", _, s, v] | ["dup" | "no", s, v] => (JobState::parse(s), v.parse()),
                    _ => return Err(format!("unexpected reply {text}")),
                };
                actor.memory = (
                    state,
                    version.map_err(|_| format!("bad version in {text}"))?,
                );
                actor.pending = None;
            }
        } else if !self.config.memory_first {
            // The planned FSM: the write is taken as done, answered or not.
            actor.memory = (Some(to), expected.1 + 1);
        }
        self.judge_memory()
    }

    /// FSM1 on an applied call.
    fn judge_applied(&mut self, actor: usize, reply: &KvReply) -> Result<(), String> {
        let KvReply::Bulk(text) = reply else {
            return Err(format!("{}: the script answered {reply}", ACTORS[actor]));
        };
        let words: Vec<&str> = text.split(' ').collect();
        *self.seen.entry(words[0].to_string()).or_default() += 1;
        if let ["ok", _, "timed_out", _] = words.as_slice() {
            *self.seen.entry("timed_out".into()).or_default() += 1;
        }
        if let ["ok", from, to, _] = words.as_slice() {
            let (from, to) = (JobState::parse(from), JobState::parse(to));
            let Some(to) = to else {
                return Err(format!("unknown state in {text}"));
            };
            if !JobState::declared(from, to) {
                return Err(format!(
                    "FSM1: {} moved the record {} -> {}, not a declared transition (record \
                     history {:?})",
                    ACTORS[actor],
                    name(from),
                    to.as_str(),
                    self.entered
                ));
            }
            if self.entered.contains(&to) {
                return Err(format!(
                    "FSM1: {} moved the record to {} again (record history {:?})",
                    ACTORS[actor],
                    to.as_str(),
                    self.entered
                ));
            }
            self.entered.push(to);
        }
        Ok(())
    }

    /// FSM2: every memory holds a state the record has held.
    fn judge_memory(&self) -> Result<(), String> {
        for (i, actor) in self.actors.iter().enumerate() {
            if let Some(s) = actor.memory.0
                && !self.entered.contains(&s)
            {
                return Err(format!(
                    "FSM2: {} holds {} in memory, which the record never held (record \
                     history {:?})",
                    ACTORS[i],
                    s.as_str(),
                    self.entered
                ));
            }
        }
        Ok(())
    }
}

fn run(
    variant: Variant,
    actions: &[Action],
    seen: &RefCell<BTreeMap<String, u64>>,
) -> Result<(), String> {
    let mut world = World::new(variant);
    let result = actions.iter().try_for_each(|a| world.step(*a));
    let mut seen = seen.borrow_mut();
    for (k, n) in world.seen {
        *seen.entry(k).or_default() += n;
    }
    result
}

/// A proptest run's result and the script replies its cases met.
struct Checked {
    result: Result<(), TestError<Vec<Action>>>,
    seen: BTreeMap<String, u64>,
}

fn check_counting(variant: Variant, cases: u32) -> Checked {
    // A fixed generator: the same cases and the same shrunk counterexample every run.
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let seen = RefCell::new(BTreeMap::new());
    let result = runner.run(&prop::collection::vec(action(), 0..24), |actions| {
        run(variant, &actions, &seen).map_err(TestCaseError::fail)
    });
    Checked {
        result,
        seen: seen.into_inner(),
    }
}

fn check(variant: Variant, cases: u32) -> Result<(), TestError<Vec<Action>>> {
    check_counting(variant, cases).result
}

#[test]
fn the_cas_fsm_keeps_fsm1_and_fsm2_under_ambiguous_replies() {
    let Checked { result, seen } = check_counting(Variant::Correct, 4_000);
    if let Err(e) = result {
        panic!("Correct broke an invariant: {e}");
    }
    // The protection was exercised: retries of applied transitions (`dup`), refusals of
    // stale ones (`no`), and the finalizer's timeouts.
    eprintln!("Correct's script replies over 4,000 cases: {seen:?}");
    for word in ["ok", "dup", "no", "timed_out"] {
        let n = seen.get(word).copied().unwrap_or(0);
        assert!(n >= 100, "only {n} `{word}` replies: {seen:?}");
    }
}

#[test]
fn the_planned_fsm_fails_and_shrinks_to_a_few_steps() {
    match check(Variant::DocFix, 4_000) {
        Err(TestError::Fail(why, actions)) => {
            let why = why.to_string();
            assert!(why.contains("FSM1") || why.contains("FSM2"), "{why}");
            assert!(actions.len() <= 4, "not shrunk: {why}: {actions:?}");
            eprintln!("DocFix's shrunk counterexample: {why}: {actions:?}");
        }
        other => panic!("DocFix was expected to fail: {other:?}"),
    }
}

#[test]
fn the_documents_code_fails_and_shrinks_to_a_few_steps() {
    match check(Variant::Buggy, 4_000) {
        Err(TestError::Fail(why, actions)) => {
            let why = why.to_string();
            assert!(why.contains("FSM1") || why.contains("FSM2"), "{why}");
            assert!(actions.len() <= 4, "not shrunk: {why}: {actions:?}");
            eprintln!("Buggy's shrunk counterexample: {why}: {actions:?}");
        }
        other => panic!("Buggy was expected to fail: {other:?}"),
    }
}
