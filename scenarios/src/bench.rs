//! Throughput figures for people and dashboards (`racelab bench`, `benches/explore.rs`):
//! seeds and store operations per second of the explore world on a fixed reference workload,
//! the core machines' cost per operation, and the simulated-time to wall-time ratio.
//!
//! These are wall-clock figures: they are reported, never gated (two identical runs on a
//! shared 2-core machine differ by 20%). The gate ([`crate::gate`]) uses the deterministic
//! counts that [`ReferenceWork`] also carries.
//!
//! The reference workload of a race and variant is seeds `0..seeds` under the random
//! scheduler, exactly as `racelab run` sweeps them; a race family is a source document.
//!
//! The machine cost comes from record and replay: a run's machines are wrapped in a recorder
//! that logs every call the world makes (start, replies, timeouts, polls); replaying that log
//! into fresh machines measures the sans-IO machines alone, without the world, its stores and
//! its schedulers. Machines are deterministic functions of their inputs, so the replay emits
//! exactly the operations of the recorded run ([`MachineRecording::replay_matches`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

use racelab_core::{Machine, Note, OpId, Outgoing, Reply, Timestamp};
use racelab_sim::explore::{self, ProcessSpec, Run, Scheduler, SimRng};
use serde::Serialize;

use crate::catalog::Workload;
use crate::gate::{self, Comparison, Figures};
use crate::{Race, Variant, run_seed, workload_seed};

/// The variants whose throughput is measured: the one that fails and the one that ships.
pub const BENCH_VARIANTS: [Variant; 2] = [Variant::Buggy, Variant::Correct];

/// The most seeds recorded per race and variant for the machine-cost figure.
pub const MACHINE_SEEDS_MAX: u64 = 50;

/// The deterministic work of a reference workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReferenceWork {
    /// Seeds run.
    pub seeds: u64,
    /// Operations the stores executed.
    pub store_ops: u64,
    /// Events the world processed.
    pub events: u64,
    /// Random decisions drawn.
    pub decisions: u64,
    /// Virtual time simulated, summed over the seeds, in milliseconds.
    pub simulated_ms: u64,
}

impl ReferenceWork {
    fn add(&mut self, run: &Run) {
        self.seeds += 1;
        self.store_ops += run.stats.store_ops;
        self.events += run.stats.events;
        self.decisions += run.stats.decisions;
        self.simulated_ms += run.ended_at.as_ms();
    }

    fn merge(&mut self, other: &ReferenceWork) {
        self.seeds += other.seeds;
        self.store_ops += other.store_ops;
        self.events += other.events;
        self.decisions += other.decisions;
        self.simulated_ms += other.simulated_ms;
    }
}

/// Runs the reference workload (seeds `0..seeds`) and counts its work.
pub fn reference_work(race: &Race, variant: Variant, seeds: u64) -> ReferenceWork {
    let mut work = ReferenceWork::default();
    for seed in 0..seeds {
        work.add(&run_seed(race, variant, seed).run);
    }
    work
}

/// Throughput over some wall time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Throughput {
    /// The deterministic work done.
    pub work: ReferenceWork,
    /// The fastest of the repetitions, in milliseconds of wall time.
    pub wall_ms: f64,
    /// Seeds per second of wall time.
    pub seeds_per_sec: f64,
    /// Store operations per second of wall time.
    pub store_ops_per_sec: f64,
    /// Events per second of wall time.
    pub events_per_sec: f64,
    /// Simulated seconds per wall-clock second.
    pub sim_wall_ratio: f64,
}

impl Throughput {
    /// The rates of `work` done in `wall_secs`.
    pub fn new(work: ReferenceWork, wall_secs: f64) -> Throughput {
        let wall = wall_secs.max(1e-9);
        let per_sec = |n: u64| round(n as f64 / wall);
        Throughput {
            work,
            wall_ms: round(wall * 1000.0),
            seeds_per_sec: per_sec(work.seeds),
            store_ops_per_sec: per_sec(work.store_ops),
            events_per_sec: per_sec(work.events),
            sim_wall_ratio: round(work.simulated_ms as f64 / 1000.0 / wall),
        }
    }
}

/// Two significant decimals are plenty for a figure that swings by 20%.
fn round(x: f64) -> f64 {
    if x >= 100.0 {
        x.round()
    } else {
        (x * 100.0).round() / 100.0
    }
}

/// Times the reference workload, keeping the fastest of `repeats` repetitions (the least
/// disturbed by other load).
pub fn time_reference(race: &Race, variant: Variant, seeds: u64, repeats: u32) -> Throughput {
    let mut best = f64::INFINITY;
    let mut work = ReferenceWork::default();
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        work = reference_work(race, variant, seeds);
        best = best.min(started.elapsed().as_secs_f64());
    }
    Throughput::new(work, best)
}

/// One call the world made on a machine, with what the machine answered.
#[derive(Clone, Debug)]
enum Call {
    Start(Timestamp),
    Reply(Timestamp, OpId, Reply),
    Timeout(Timestamp),
    PollOp(Option<Outgoing>),
    PollNote(Option<Note>),
    PollTimeout(Option<Timestamp>),
    IsIdle(bool),
}

type Log = Rc<RefCell<Vec<Call>>>;
type SharedFactory = Rc<dyn Fn(u32) -> Box<dyn Machine>>;

/// A machine that passes every call through and logs it.
struct Recorder {
    inner: Box<dyn Machine>,
    log: Log,
}

impl Machine for Recorder {
    fn handle_start(&mut self, now: Timestamp) {
        self.log.borrow_mut().push(Call::Start(now));
        self.inner.handle_start(now);
    }

    fn handle_reply(&mut self, now: Timestamp, op: OpId, reply: Reply) {
        self.log
            .borrow_mut()
            .push(Call::Reply(now, op, reply.clone()));
        self.inner.handle_reply(now, op, reply);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.log.borrow_mut().push(Call::Timeout(now));
        self.inner.handle_timeout(now);
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        let out = self.inner.poll_op();
        self.log.borrow_mut().push(Call::PollOp(out.clone()));
        out
    }

    fn poll_note(&mut self) -> Option<Note> {
        let out = self.inner.poll_note();
        self.log.borrow_mut().push(Call::PollNote(out.clone()));
        out
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let out = self.inner.poll_timeout();
        self.log.borrow_mut().push(Call::PollTimeout(out));
        out
    }

    fn is_idle(&self) -> bool {
        let out = self.inner.is_idle();
        self.log.borrow_mut().push(Call::IsIdle(out));
        out
    }
}

/// One machine's life: which process, which incarnation, every call.
struct Life {
    process: usize,
    incarnation: u32,
    log: Log,
}

/// The recorded machine calls of one run.
pub struct MachineRecording {
    factories: Vec<SharedFactory>,
    lives: Rc<RefCell<Vec<Life>>>,
    /// The recorded run (identical to [`run_seed`]'s: recording changes nothing).
    pub run: Run,
}

impl std::fmt::Debug for MachineRecording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineRecording")
            .field("lives", &self.lives.borrow().len())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl MachineRecording {
    /// Runs `race`'s `variant` with `seed`, exactly as [`run_seed`] does, recording every
    /// machine call.
    pub fn record(race: &Race, variant: Variant, seed: u64) -> MachineRecording {
        let mut rng = SimRng::new(workload_seed(seed));
        let (mut spec, _) = (race.build)(variant, Workload::Random(&mut rng));
        let lives: Rc<RefCell<Vec<Life>>> = Rc::default();
        let mut factories = Vec::new();
        spec.processes = spec
            .processes
            .into_iter()
            .enumerate()
            .map(|(process, p)| {
                let original: SharedFactory = Rc::from(p.factory);
                factories.push(Rc::clone(&original));
                let lives = Rc::clone(&lives);
                ProcessSpec {
                    factory: Box::new(move |incarnation| {
                        let log: Log = Rc::default();
                        lives.borrow_mut().push(Life {
                            process,
                            incarnation,
                            log: Rc::clone(&log),
                        });
                        Box::new(Recorder {
                            inner: original(incarnation),
                            log,
                        })
                    }),
                    ..p
                }
            })
            .collect();
        let scheduler = Scheduler::Random {
            seed,
            faults: (race.profile)(),
        };
        let run = explore::run(spec, &scheduler);
        MachineRecording {
            factories,
            lives,
            run,
        }
    }

    /// Calls recorded, over every machine.
    pub fn calls(&self) -> u64 {
        self.lives
            .borrow()
            .iter()
            .map(|l| l.log.borrow().len() as u64)
            .sum()
    }

    /// Store operations the machines emitted.
    pub fn ops(&self) -> u64 {
        self.lives
            .borrow()
            .iter()
            .map(|l| {
                l.log
                    .borrow()
                    .iter()
                    .filter(|c| matches!(c, Call::PollOp(Some(_))))
                    .count() as u64
            })
            .sum()
    }

    /// Replays every recorded call into fresh machines, as fast as possible (answers are
    /// discarded through `black_box`). Returns the operations emitted.
    pub fn replay(&self) -> u64 {
        let mut ops = 0u64;
        for life in self.lives.borrow().iter() {
            let mut machine = (self.factories[life.process])(life.incarnation);
            for call in life.log.borrow().iter() {
                match call {
                    Call::Start(now) => machine.handle_start(*now),
                    Call::Reply(now, op, reply) => machine.handle_reply(*now, *op, reply.clone()),
                    Call::Timeout(now) => machine.handle_timeout(*now),
                    Call::PollOp(_) => ops += u64::from(black_box(machine.poll_op()).is_some()),
                    Call::PollNote(_) => {
                        black_box(machine.poll_note());
                    }
                    Call::PollTimeout(_) => {
                        black_box(machine.poll_timeout());
                    }
                    Call::IsIdle(_) => {
                        black_box(machine.is_idle());
                    }
                }
            }
        }
        ops
    }

    /// Replays every recorded call and checks that fresh machines answer exactly as the
    /// recorded ones did: the machines are deterministic functions of their inputs.
    pub fn replay_matches(&self) -> bool {
        self.lives.borrow().iter().all(|life| {
            let mut machine = (self.factories[life.process])(life.incarnation);
            life.log.borrow().iter().all(|call| match call {
                Call::Start(now) => {
                    machine.handle_start(*now);
                    true
                }
                Call::Reply(now, op, reply) => {
                    machine.handle_reply(*now, *op, reply.clone());
                    true
                }
                Call::Timeout(now) => {
                    machine.handle_timeout(*now);
                    true
                }
                Call::PollOp(out) => machine.poll_op() == *out,
                Call::PollNote(out) => machine.poll_note() == *out,
                Call::PollTimeout(out) => machine.poll_timeout() == *out,
                Call::IsIdle(out) => machine.is_idle() == *out,
            })
        })
    }
}

/// What the core machines cost per operation, measured by replaying recorded runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineCost {
    /// Seeds recorded.
    pub seeds: u64,
    /// Machine calls replayed.
    pub calls: u64,
    /// Store operations the machines emitted.
    pub ops: u64,
    /// The fastest replay, in milliseconds.
    pub wall_ms: f64,
    /// Nanoseconds of machine work per store operation.
    pub ns_per_op: f64,
    /// Nanoseconds per machine call.
    pub ns_per_call: f64,
}

/// Records seeds `0..seeds` and times their replay, keeping the fastest of `repeats`.
pub fn machine_cost(race: &Race, variant: Variant, seeds: u64, repeats: u32) -> MachineCost {
    let recordings: Vec<MachineRecording> = (0..seeds)
        .map(|seed| MachineRecording::record(race, variant, seed))
        .collect();
    let calls = recordings.iter().map(MachineRecording::calls).sum();
    let ops = recordings.iter().map(MachineRecording::ops).sum();
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        let replayed: u64 = recordings.iter().map(MachineRecording::replay).sum();
        best = best.min(started.elapsed().as_secs_f64());
        // Invariant: machines are deterministic, so a replay emits what the run emitted.
        assert_eq!(replayed, ops, "a replay of {} diverged", race.id);
    }
    let ns = best * 1e9;
    MachineCost {
        seeds,
        calls,
        ops,
        wall_ms: round(best * 1000.0),
        ns_per_op: round(ns / ops.max(1) as f64),
        ns_per_call: round(ns / calls.max(1) as f64),
    }
}

/// One race and variant's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RaceBench {
    /// `R-002-01`.
    pub race: String,
    /// The race family (its source document, `002`).
    pub family: String,
    /// `buggy` or `correct`.
    pub variant: String,
    /// The world's throughput on the reference workload.
    pub explore: Throughput,
    /// Deterministic work per seed: store operations.
    pub store_ops_per_seed: u64,
    /// Deterministic work per seed: events.
    pub events_per_seed: u64,
    /// Deterministic work per seed: random decisions.
    pub decisions_per_seed: u64,
    /// The core machines' cost on the first seeds of the same workload.
    pub machines: MachineCost,
}

/// One race family's figures: the sum of its races' reference workloads.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FamilyBench {
    /// The family (source document, `002`).
    pub family: String,
    /// Its races.
    pub races: Vec<String>,
    /// The world's throughput over every race and variant of the family.
    pub explore: Throughput,
}

/// Everything `racelab bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// What the figures are.
    pub about: String,
    /// Seeds per race and variant in the reference workload.
    pub seeds: u64,
    /// Repetitions per measurement (the fastest is kept).
    pub repeats: u32,
    /// Per race family.
    pub families: Vec<FamilyBench>,
    /// Per race and variant.
    pub races: Vec<RaceBench>,
    /// The explore world's store operations per second over the whole reference workload
    /// (all races and variants: their operations over their wall time).
    pub store_ops_per_sec: f64,
    /// A bare seeded step per second, measured in the same run: one draw from the world's
    /// random stream (logged as a decision), one ordered-map update and one log push, the
    /// least a simulated store operation can cost.
    pub bare_steps_per_sec: f64,
    /// `store_ops_per_sec / bare_steps_per_sec`: how close the world's inner loop comes to
    /// the bare step (the throughput target is 0.2).
    pub store_op_to_bare_step: f64,
    /// The world floor ([`floor_run`]): store operations per second of the explore world
    /// running machines that do next to nothing, so the world's own cost per operation.
    pub floor_store_ops_per_sec: f64,
    /// `floor_store_ops_per_sec / bare_steps_per_sec`: the ratio the catalog's workload could
    /// reach if its machines and judges cost nothing.
    pub floor_to_bare_step: f64,
    /// The regression gate's deterministic figures.
    pub gate: Figures,
    /// The gate's figures compared with the committed baseline.
    pub gate_check: GateCheck,
}

/// The gate's figures compared with the committed baseline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GateCheck {
    /// The baseline's path.
    pub baseline: String,
    /// Whether the gate passes (`None`: the baseline could not be read).
    pub passed: Option<bool>,
    /// The regressions, if any.
    pub regressions: Vec<String>,
    /// Why the baseline could not be read.
    pub error: Option<String>,
}

/// Compares `figures` with the committed baseline.
pub fn check_gate(figures: &Figures) -> GateCheck {
    let path = gate::baseline_path();
    let (passed, regressions, error) = match gate::read_baseline(&path) {
        Ok(baseline) => {
            let c: Comparison = gate::compare(&baseline, figures);
            (
                Some(c.passed()),
                c.regressions.iter().map(ToString::to_string).collect(),
                None,
            )
        }
        Err(e) => (None, Vec::new(), Some(e.to_string())),
    };
    GateCheck {
        baseline: path.display().to_string(),
        passed,
        regressions,
        error,
    }
}

/// Bare seeded steps per measurement of [`bare_steps_per_sec`].
pub const BARE_STEPS: u64 = 2_000_000;

/// The rate of a bare seeded step (fastest of `repeats` runs of [`BARE_STEPS`]): a draw from a
/// [`SimRng`] (ChaCha8, the draw logged as a decision, as every draw of the world is), an
/// update of an ordered map of 1,024 keys, and a push to a log; every 4,096 steps the log is
/// dropped and a fresh stream seeded, as a run of the world starts with its own (its decision
/// log would otherwise grow without bound). A store operation of the explore world does at
/// least this much, so the ratio of the two rates says how much the
/// world spends beyond it.
pub fn bare_steps_per_sec(repeats: u32) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let mut rng = SimRng::new(1);
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        let mut log: Vec<(u64, u64)> = Vec::new();
        for i in 0..BARE_STEPS {
            let key = rng.below(1024);
            *map.entry(key).or_default() += i;
            log.push((key, i));
            if log.len() >= 4096 {
                black_box(&log);
                log.clear();
                rng = black_box(SimRng::new(i));
            }
        }
        black_box((&map, &log));
        best = best.min(start.elapsed().as_secs_f64());
    }
    BARE_STEPS as f64 / best.max(1e-9)
}

/// Processes of the world floor's workload.
pub const FLOOR_PROCESSES: u32 = 4;
/// `INCRBY`s each process of the world floor's workload sends, one after another.
pub const FLOOR_OPS_PER_PROCESS: u64 = 250;
/// Seeds of the world floor's workload per measurement.
pub const FLOOR_SEEDS: u64 = 200;

/// The floor's machine: sends `INCRBY key 1` as soon as the last one was answered, until it
/// has sent [`FLOOR_OPS_PER_PROCESS`]. It does as little as a machine can, so that the world
/// floor's rate is the explore world's own (scheduler, store model, history, trace hash).
struct FloorMachine {
    key: String,
    tag: racelab_core::Tag,
    sent: u64,
    pending: bool,
}

impl Machine for FloorMachine {
    fn handle_start(&mut self, _now: Timestamp) {
        self.sent = 0;
        self.pending = true;
    }

    fn handle_reply(&mut self, _now: Timestamp, _op: OpId, _reply: Reply) {
        self.pending = self.sent < FLOOR_OPS_PER_PROCESS;
    }

    fn poll_op(&mut self) -> Option<Outgoing> {
        if !self.pending {
            return None;
        }
        self.pending = false;
        self.sent += 1;
        Some(Outgoing {
            id: OpId(self.sent),
            op: racelab_core::StoreOp::Kv(racelab_core::KvOp::IncrBy {
                key: self.key.clone(),
                delta: 1,
            }),
            tag: self.tag.clone(),
        })
    }

    fn is_idle(&self) -> bool {
        !self.pending
    }
}

/// The world floor's workload for `seed`: [`FLOOR_PROCESSES`] processes of [`FloorMachine`]
/// on one Redis, under the random scheduler with latencies and no faults.
pub fn floor_run(seed: u64) -> Run {
    let tag = racelab_core::Tag::plain(racelab_core::TagKind::new("floor"));
    let processes = (0..FLOOR_PROCESSES)
        .map(|p| {
            let tag = tag.clone();
            ProcessSpec {
                name: format!("P{p}"),
                start_at: Timestamp::ZERO,
                fault_prone: false,
                factory: Box::new(move |_| {
                    Box::new(FloorMachine {
                        key: format!("floor:{p}"),
                        tag: tag.clone(),
                        sent: 0,
                        pending: false,
                    })
                }),
                host: p,
            }
        })
        .collect();
    let spec = explore::WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: explore::NetConfig::default(),
        replication_lag: racelab_core::Duration::from_ms(10),
        queue_lock: racelab_core::Duration::from_secs(30),
        time_limit: Timestamp::from_ms(3_600_000),
        horizon: None,
        local: None,
        upstream: Default::default(),
    };
    explore::run(
        spec,
        &Scheduler::Random {
            seed,
            faults: explore::FaultProfile::quiet(),
        },
    )
}

/// The world floor: store operations per second of [`floor_run`] over [`FLOOR_SEEDS`]
/// seeds (fastest of `repeats`), with the operations counted.
pub fn floor_ops_per_sec(repeats: u32) -> (f64, u64) {
    let mut best = f64::MAX;
    let mut ops = 0;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        ops = (0..FLOOR_SEEDS)
            .map(|seed| black_box(floor_run(seed)).stats.store_ops)
            .sum();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (ops as f64 / best.max(1e-9), ops)
}

/// Measures `races` on `seeds` seeds per race and variant, `repeats` times each.
pub fn run(
    races: &[Race],
    seeds: u64,
    repeats: u32,
    mut progress: impl FnMut(&str),
) -> BenchReport {
    let seeds = seeds.max(1);
    let mut rows = Vec::new();
    let mut families: BTreeMap<String, (Vec<String>, ReferenceWork, f64)> = BTreeMap::new();
    for race in races {
        for variant in BENCH_VARIANTS {
            progress(&format!("{} {}", race.id, variant.as_str()));
            let explore = time_reference(race, variant, seeds, repeats);
            let machines = machine_cost(race, variant, seeds.min(MACHINE_SEEDS_MAX), repeats);
            let family = families.entry(race.document.to_string()).or_default();
            if !family.0.iter().any(|r| r == race.id) {
                family.0.push(race.id.to_string());
            }
            family.1.merge(&explore.work);
            family.2 += explore.wall_ms / 1000.0;
            rows.push(RaceBench {
                race: race.id.to_string(),
                family: race.document.to_string(),
                variant: variant.as_str().to_string(),
                store_ops_per_seed: explore.work.store_ops / seeds,
                events_per_seed: explore.work.events / seeds,
                decisions_per_seed: explore.work.decisions / seeds,
                explore,
                machines,
            });
        }
    }
    progress("a bare seeded step");
    let bare_steps_per_sec = bare_steps_per_sec(repeats);
    let (ops, wall): (u64, f64) = rows.iter().fold((0, 0.0), |(o, w), r| {
        (o + r.explore.work.store_ops, w + r.explore.wall_ms / 1000.0)
    });
    let store_ops_per_sec = ops as f64 / wall.max(1e-9);
    progress("the world floor");
    let (floor_store_ops_per_sec, _) = floor_ops_per_sec(repeats);
    progress("gate figures");
    let gate = gate::measure(races);
    let gate_check = check_gate(&gate);
    BenchReport {
        about: "racelab bench: wall-clock throughput of the explore world (reported, never \
                gated) on the reference workload of each race (seeds 0..seeds of its buggy \
                and correct variants under the random scheduler), the core machines' cost per \
                operation (record and replay), and the regression gate's deterministic counts"
            .to_string(),
        seeds,
        repeats,
        families: families
            .into_iter()
            .map(|(family, (races, work, wall))| FamilyBench {
                family,
                races,
                explore: Throughput::new(work, wall),
            })
            .collect(),
        races: rows,
        store_ops_per_sec: store_ops_per_sec.round(),
        bare_steps_per_sec: bare_steps_per_sec.round(),
        store_op_to_bare_step: (store_ops_per_sec / bare_steps_per_sec.max(1.0) * 1000.0).round()
            / 1000.0,
        floor_store_ops_per_sec: floor_store_ops_per_sec.round(),
        floor_to_bare_step: (floor_store_ops_per_sec / bare_steps_per_sec.max(1.0) * 1000.0)
            .round()
            / 1000.0,
        gate,
        gate_check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn recording_changes_nothing_and_the_replay_is_exact() {
        for race in catalog() {
            for variant in BENCH_VARIANTS {
                let recording = MachineRecording::record(&race, variant, 3);
                let plain = run_seed(&race, variant, 3).run;
                assert_eq!(
                    recording.run.trace_hash(),
                    plain.trace_hash(),
                    "{}",
                    race.id
                );
                assert!(recording.replay_matches(), "{} {variant:?}", race.id);
                assert_eq!(recording.replay(), recording.ops());
                assert!(recording.ops() > 0 && recording.calls() > recording.ops());
            }
        }
    }

    #[test]
    fn the_floor_runs_every_operation_and_replays() {
        let a = floor_run(7);
        assert!(a.quiescent);
        assert_eq!(
            a.stats.store_ops,
            u64::from(FLOOR_PROCESSES) * FLOOR_OPS_PER_PROCESS
        );
        assert_eq!(a.history.ops.len() as u64, a.stats.store_ops);
        assert_eq!(floor_run(7).trace_hash(), a.trace_hash());
        assert_ne!(floor_run(8).trace_hash(), a.trace_hash());
    }

    #[test]
    fn throughput_is_work_over_time() {
        let work = ReferenceWork {
            seeds: 10,
            store_ops: 2_000,
            events: 5_000,
            decisions: 7,
            simulated_ms: 600_000,
        };
        let t = Throughput::new(work, 0.5);
        assert_eq!(t.seeds_per_sec, 20.0);
        assert_eq!(t.store_ops_per_sec, 4_000.0);
        assert_eq!(t.sim_wall_ratio, 1_200.0);
        assert_eq!(t.wall_ms, 500.0);
    }
}
