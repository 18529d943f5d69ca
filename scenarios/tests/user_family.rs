//! A race family defined outside the catalog, with the public API alone: a lost-update counter.
//! Each client adds one to a counter row. `Buggy` reads the value and writes `value + 1`
//! (read-modify-write across two statements); `Correct` writes `qty = qty + 1` in one
//! statement. The family declares its tags, its oracle (conservation of the sum) and a
//! `sometimes` property, and runs through the same sweep, replay, shrink, timeline, report and
//! gate functions as the catalog's races. ARCHITECTURE.md's "Adding a race" walks through it.

use racelab_core::workorder::WORK_ORDERS;
use std::collections::VecDeque;

use racelab_core::oracle::conservation;
use racelab_core::{
    Assign, FamilyTag, Machine, OpId, Outgoing, Property, Reply, Row, SqlOp, SqlReply, SqlStmt,
    StoreOp, Tag, TagKind, Timestamp, Value, Variant, Verdict,
};
use racelab_scenarios::gate;
use racelab_scenarios::report::write_report;
use racelab_scenarios::{
    Capture, Expectation, PerVariant, Race, Script, Workload, render_timeline, replay_command,
    run_script, run_seed, shrink, sweep,
};
use racelab_sim::explore::{FaultProfile, OpEffect, ProcessSpec, Ratio, Run, Step, WorldSpec};

// ---------------------------------------------------------------------------------------------
// The family: tags, machine, oracle, properties.

/// What each operation of a counter client means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CounterTag {
    /// Read the counter.
    Read,
    /// Write it (an absolute value, or an increment).
    Write,
}

impl CounterTag {
    const READ: TagKind = TagKind::new("counter-read");
    const WRITE: TagKind = TagKind::new("counter-write");
}

impl FamilyTag for CounterTag {
    fn kind(&self) -> TagKind {
        match self {
            CounterTag::Read => CounterTag::READ,
            CounterTag::Write => CounterTag::WRITE,
        }
    }
}

const KEY: &str = "counter";

/// One client adding one to the counter.
#[derive(Debug)]
struct Adder {
    variant: Variant,
    out: VecDeque<Outgoing>,
    pending: Option<OpId>,
    next: u64,
    done: bool,
}

impl Adder {
    fn new(variant: Variant) -> Adder {
        Adder {
            variant,
            out: VecDeque::new(),
            pending: None,
            next: 0,
            done: false,
        }
    }

    fn send(&mut self, stmt: SqlStmt, tag: CounterTag) {
        self.next += 1;
        let id = OpId(self.next);
        self.pending = Some(id);
        self.out.push_back(Outgoing {
            id,
            op: StoreOp::Sql(SqlOp::exec(stmt)),
            tag: Tag::new(tag),
        });
    }

    fn update(&mut self, set: Assign) {
        let stmt = SqlStmt::Update {
            table: WORK_ORDERS,
            key: KEY.into(),
            guard: racelab_core::Cond::True,
            set: vec![set],
        };
        self.send(stmt, CounterTag::Write);
    }
}

impl Machine for Adder {
    fn handle_start(&mut self, _now: Timestamp) {
        match self.variant {
            Variant::Buggy | Variant::DocFix => {
                let stmt = SqlStmt::Select {
                    table: WORK_ORDERS,
                    key: KEY.into(),
                    for_update: false,
                };
                self.send(stmt, CounterTag::Read);
            }
            Variant::Correct => self.update(Assign::Add {
                column: "qty".into(),
                delta: 1,
            }),
        }
    }

    fn handle_reply(&mut self, _now: Timestamp, op: OpId, reply: Reply) {
        if self.pending != Some(op) {
            return;
        }
        self.pending = None;
        let read = match &reply {
            Reply::Sql(SqlReply::Rows(rows)) if !self.done => {
                rows.first().and_then(|r| match r.columns.get("qty") {
                    Some(Value::Int(v)) => Some(*v),
                    _ => None,
                })
            }
            _ => None,
        };
        match (self.variant, read) {
            (Variant::Buggy | Variant::DocFix, Some(v)) if self.next == 1 => {
                self.update(Assign::Set {
                    column: "qty".into(),
                    value: Value::Int(v.saturating_add(1)),
                });
            }
            _ => self.done = true,
        }
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

const NO_LOST_UPDATE: Property = Property::always(
    "no-lost-update",
    "the counter equals its start value plus the accepted increments",
);
const CONCURRENT_WRITES: Property = Property::sometimes(
    "concurrent-adders",
    "two clients' operations were in flight at the same time",
);

/// Clients whose first operation overlapped another client's: the race window.
fn concurrent(run: &Run) -> u64 {
    let spans: Vec<(u16, Timestamp, Timestamp)> = run
        .history
        .ops
        .iter()
        .filter(|op| op.tag.get::<CounterTag>().is_some())
        .filter_map(|op| Some((op.process.0, op.invoked_at, op.completed_at?)))
        .collect();
    spans
        .iter()
        .filter(|a| spans.iter().any(|b| b.0 != a.0 && b.1 < a.2 && a.1 < b.2))
        .count() as u64
}

fn judge(run: &Run, capture: &Capture) -> Verdict {
    let start = capture.get::<i64>().copied().unwrap_or_default();
    // Every write the store accepted was one client's increment.
    let writes: Vec<usize> = run
        .history
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.tag.kind() == CounterTag::WRITE && op.accepted())
        .map(|(i, _)| i)
        .collect();
    let actual = run
        .row(WORK_ORDERS, KEY)
        .and_then(|r| match r.get("qty") {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        })
        .unwrap_or_default();
    let mut verdict = conservation(
        NO_LOST_UPDATE.name,
        "the counter",
        start + writes.len() as i64,
        actual,
    );
    for v in &mut verdict.violations {
        v.ops.clone_from(&writes);
    }
    verdict.count(CONCURRENT_WRITES.name, concurrent(run));
    verdict
}

// ---------------------------------------------------------------------------------------------
// The race.

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let starts: Vec<u64> = match workload {
        Workload::Scripted(_) => vec![0, 0],
        Workload::Random(rng) => (0..2 + rng.below(3)).map(|_| rng.below(20)).collect(),
    };
    let processes = starts
        .iter()
        .enumerate()
        .map(|(i, start)| ProcessSpec {
            host: 0,
            name: format!("A{i}"),
            start_at: Timestamp::from_ms(*start),
            fault_prone: true,
            factory: Box::new(move |_| Box::new(Adder::new(variant)) as Box<dyn Machine>),
        })
        .collect();
    let row = Row::from([("qty".to_string(), Value::Int(0))]);
    let spec = WorldSpec {
        processes,
        sql_rows: vec![(WORK_ORDERS, KEY.into(), row)],
        net: Default::default(),
        replication_lag: racelab_core::Duration::from_ms(10),
        queue_lock: racelab_core::Duration::from_secs(30),
        time_limit: Timestamp::from_ms(60_000),
        horizon: None,
        local: None,
        upstream: Default::default(),
    };
    (spec, Capture::new(0i64))
}

fn scripts() -> Vec<Script> {
    vec![Script {
        name: "both-read-first",
        summary: "A0 and A1 start together: both read 0 before either writes",
        steps: vec![Step::on(
            "A1",
            CounterTag::READ,
            1,
            OpEffect::Delay(racelab_core::Duration::from_ms(1)),
        )],
        expect: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
    }]
}

fn profile() -> FaultProfile {
    FaultProfile {
        window: racelab_core::Duration::from_secs(1),
        latency: (
            racelab_core::Duration::from_ms(1),
            racelab_core::Duration::from_ms(15),
        ),
        pause: Ratio::per_mille(200),
        pause_len: (
            racelab_core::Duration::from_ms(1),
            racelab_core::Duration::from_ms(30),
        ),
        ..FaultProfile::quiet()
    }
}

fn counter_race() -> Race {
    Race {
        id: "U-COUNTER-01",
        title: "Read-modify-write of a counter loses concurrent increments",
        document: "user",
        invariant: "no-lost-update: counter == start + accepted increments",
        docfix_verdict: "none",
        sweep: PerVariant([Expectation::Fails, Expectation::Fails, Expectation::Holds]),
        scripts,
        profile,
        seed_budget: 200,
        properties: &[NO_LOST_UPDATE, CONCURRENT_WRITES],
        net: false,
        build,
        judge,
    }
}

// ---------------------------------------------------------------------------------------------
// The family through the public machinery.

#[test]
fn the_scripted_timeline_fails_buggy_and_holds_correct() {
    let race = counter_race();
    let script = &(race.scripts)()[0];
    for variant in Variant::ALL {
        let outcome = run_script(&race, script, variant);
        assert_eq!(
            outcome.observed(),
            script.expect.get(variant),
            "{}\n{}",
            render_timeline(&outcome).join("\n"),
            outcome.verdict.explanation()
        );
    }
    let buggy = run_script(&race, script, Variant::Buggy);
    assert_eq!(buggy.verdict.broken(), ["no-lost-update"]);
    let timeline = render_timeline(&buggy).join("\n");
    assert!(timeline.contains("<== violation"), "{timeline}");
}

#[test]
fn a_sweep_finds_buggy_replays_it_and_shrinks_it() {
    let race = counter_race();
    let result = sweep(&race, Variant::Buggy, 0, race.seed_budget, |_| {});
    let seed = result
        .first_failing_seed
        .expect("the lost update is found within the budget");
    let a = run_seed(&race, Variant::Buggy, seed);
    let b = run_seed(&race, Variant::Buggy, seed);
    assert_eq!(a.run.trace_hash(), b.run.trace_hash());
    assert_eq!(a.verdict.broken(), ["no-lost-update"]);
    assert_eq!(
        replay_command(&race, Variant::Buggy, seed),
        format!("racelab replay U-COUNTER-01 --variant buggy --seed {seed}")
    );
    let shrunk = shrink(&race, Variant::Buggy, seed).expect("a failing seed shrinks");
    assert!(shrunk.outcome.violated());
    assert!(shrunk.steps.len() <= shrunk.original_faults);
}

#[test]
fn correct_holds_and_its_window_opened() {
    let race = counter_race();
    let result = sweep(&race, Variant::Correct, 0, 1_000, |_| {});
    assert_eq!(result.failures, 0, "{result:?}");
    assert_eq!(result.stuck, 0, "{result:?}");
    assert!(result.never_held(&race).is_empty(), "{result:?}");
    assert!(result.sometimes["concurrent-adders"] > 100, "{result:?}");
}

#[test]
fn the_report_and_the_gate_take_the_family_like_any_race() {
    let races = vec![counter_race()];
    let out = std::env::temp_dir().join(format!("racelab-user-family-{}", std::process::id()));
    let written = write_report(&races, &out, 50, |_, _| {}).expect("the report is written");
    assert_eq!(written.rows.len(), 3);
    assert!(
        written.rows.iter().all(|r| r.expected == r.observed),
        "{:?}",
        written.rows
    );
    assert!(
        written
            .files
            .iter()
            .any(|f| f.to_string_lossy().contains("U-COUNTER-01-buggy")),
        "{:?}",
        written.files
    );
    let _ = std::fs::remove_dir_all(&out);
    let figures = gate::measure(&races);
    let figures_of = &figures.races["U-COUNTER-01"];
    assert!(figures_of.detection.contains_key("buggy"));
    assert!(gate::compare(&figures, &figures).passed());
}
