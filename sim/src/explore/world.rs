//! The discrete-event world: processes (core machines), store models, a network with latency,
//! partitions and lost replies, the driver's per-operation timeouts, and fault injection.
//!
//! One event at a time, in (virtual time, sequence) order. Nothing here reads a clock or the
//! OS: the seed (through [`SimRng`]) or the script decides everything, so a run is a pure
//! function of (spec, scheduler).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::hash::{Hash, Hasher};

use racelab_core::{
    CallKind, ClockSkew, Duration, EndpointId, Fault, FaultRecord, History, LocalMemory,
    LocalReply, Machine, NoMemory, NoteRecord, OpRecord, Outgoing, ProcessId, PubSubOp,
    PubSubReply, PushOp, PushReply, RandomStream, Reply, RequestId, Row, SqlOp, StoreId, StoreOp,
    Table, TagKind, Timestamp, Usage,
};

use super::faults::{FaultProfile, OpSite};
use super::push::PushHub;
use super::queue::QueueModel;
use super::redis::{LostWrites, RedisModel};
use super::rng::{Choices, Decision, DecisionKind, SimRng};
use super::schedule::{Action, OpEffect, PCT_CHANGE_SPAN, PCT_STEP, Scheduler, Step};
use super::sql::{SessionId, SqlModel, SqlOutcome};
use super::upstream::{StreamStep, Upstream, UpstreamModel};

/// Builds a process' machine for an incarnation (0 at first start, +1 per restart).
pub type Factory = Box<dyn Fn(u32) -> Box<dyn Machine>>;

/// One process of a world.
pub struct ProcessSpec {
    /// Its name in timelines (`W_A`, `T`, ...).
    pub name: String,
    /// When it starts.
    pub start_at: Timestamp,
    /// Whether the random scheduler may pause, crash or partition it (delays, lost replies
    /// and failovers strike any process: see [`FaultProfile`]'s fields).
    pub fault_prone: bool,
    /// Its machine.
    pub factory: Factory,
    /// The host it runs on: processes of one host share its local memory
    /// ([`StoreOp::Local`]); a crash of one process does not clear it.
    pub host: u32,
}

/// Network and driver parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetConfig {
    /// The one-way latency under the scripted scheduler.
    pub scripted_latency: Duration,
    /// The driver's timeout for Redis and queue operations.
    pub redis_timeout: Duration,
    /// The driver's timeout for SQL operations.
    pub sql_timeout: Duration,
    /// The push balancer's WebSocket session persistence: a process reconnects to the
    /// listener it last reached while that one is reachable (otherwise, and by default, the
    /// least-loaded listener).
    pub push_sticky: bool,
    /// The proxy's timeout for upstream calls (time to the first byte).
    pub upstream_timeout: Duration,
    /// The SQL server's `deadlock_timeout`: a statement waiting for a lock checks for a
    /// deadlock this long after its wait began (PostgreSQL's default, 1 s).
    pub sql_deadlock_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            scripted_latency: Duration::from_ms(1),
            redis_timeout: Duration::from_secs(5),
            sql_timeout: Duration::from_secs(30),
            push_sticky: false,
            upstream_timeout: Duration::from_secs(10),
            sql_deadlock_timeout: Duration::from_secs(1),
        }
    }
}

/// Everything a world is made of, apart from the scheduler.
pub struct WorldSpec {
    /// The processes.
    pub processes: Vec<ProcessSpec>,
    /// Rows committed before the run.
    pub sql_rows: Vec<(Table, String, Row)>,
    /// Network and driver parameters.
    pub net: NetConfig,
    /// How long Redis' replica trails the primary.
    pub replication_lag: Duration,
    /// The queue's job lock (Bull's `lockDuration`).
    pub queue_lock: Duration,
    /// The run stops here if it has not quiesced.
    pub time_limit: Timestamp,
    /// For workloads that never quiesce (heartbeats, sweepers, health monitors): at this
    /// instant the world stops firing timers, starting or restarting processes and
    /// injecting faults (a heal still applies), and drains: operations in flight complete,
    /// and the replies they bring may still send more. The run ends, settled, once nothing
    /// is in flight, parked or held by a paused process; oracles judge the end state there.
    /// A drain that has not finished by `time_limit` is stuck like any other run.
    pub horizon: Option<Timestamp>,
    /// Each host's local memory at the start (a family's [`racelab_core::FamilyMemory`]),
    /// copied per host; `None`: no process runs local blocks.
    pub local: Option<Box<dyn LocalMemory>>,
    /// The upstream endpoints.
    pub upstream: Upstream,
}

/// The most events one run may process; a run that needs more is stopped as not quiescent.
pub const RUN_EVENTS_MAX: u64 = 2_000_000;

/// Counts that describe how much work a run did (deterministic, for regression gates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Operations the stores executed.
    pub store_ops: u64,
    /// Random draws.
    pub decisions: u64,
    /// Faults injected.
    pub faults: u64,
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// Everything that happened.
    pub history: History,
    /// Every random draw (empty for scripted runs).
    pub decisions: Vec<Decision>,
    /// Whether the run settled before the time limit: the world went quiet (no job, nothing
    /// in flight), or it reached its horizon and drained ([`Run::horizon`]). A run that did
    /// not settle is stuck.
    pub quiescent: bool,
    /// When the run ended by draining after its [`WorldSpec::horizon`]: the horizon.
    /// `None` for a run that quiesced before it, or did not settle.
    pub horizon: Option<Timestamp>,
    /// When it did not: what was still unsettled at the end (the limit that stopped it,
    /// operations in flight, parked statements, unfinished jobs, busy processes).
    pub unsettled: Vec<String>,
    /// The virtual time at the end.
    pub ended_at: Timestamp,
    /// Work counts.
    pub stats: RunStats,
    /// The committed SQL rows at the end.
    pub sql_rows: Vec<(Table, String, Row)>,
    /// Each host's local memory at the end (read back with `<dyn LocalMemory>::get`).
    pub local: BTreeMap<u32, Box<dyn LocalMemory>>,
    /// What the world that ran it fed into the trace hash of its own, before the parts every
    /// run has ([`Run::trace_hash`]): a hash of the scheduler for the explore world.
    pub trace_seed: u64,
    /// Every fault the random scheduler injected, as steps that reproduce it under
    /// [`Scheduler::Pinned`] (empty for scripted and pinned runs).
    pub injected: Vec<Step>,
    /// The choices an exhaustive run took (`None` for other schedulers).
    pub choices: Option<Choices>,
    /// What the upstream provider bills in the end for each request that opened a stream
    /// (the sum over its attempts): every stream generates to its end, read or not, unless
    /// it failed or was cancelled. The truth a billing oracle compares the ledger with.
    pub upstream_usage: BTreeMap<(EndpointId, RequestId), Usage>,
}

impl Run {
    /// A hash of the run's whole trace: [`Run::trace_seed`], every decision, the whole
    /// history, the committed SQL rows and every host's local memory. Equal hashes mean
    /// byte-identical runs. It is computed when asked (it reads everything the run recorded,
    /// which a sweep that only judges the run does not need).
    pub fn trace_hash(&self) -> u64 {
        let mut hasher = StableHasher::default();
        self.trace_seed.hash(&mut hasher);
        self.decisions.hash(&mut hasher);
        self.history.hash(&mut hasher);
        self.sql_rows.hash(&mut hasher);
        for (host, memory) in &self.local {
            host.hash(&mut hasher);
            memory.hash_memory(&mut hasher);
        }
        hasher.finish()
    }

    /// The committed row `key` of `table` at the end of the run.
    pub fn row(&self, table: Table, key: &str) -> Option<&Row> {
        self.sql_rows
            .iter()
            .find(|(t, k, _)| *t == table && k == key)
            .map(|(_, _, r)| r)
    }
}

/// Runs `spec` under `scheduler` to quiescence or the time limit.
pub fn run(spec: WorldSpec, scheduler: &Scheduler) -> Run {
    World::new(spec, scheduler).run()
}

/// A stable 64-bit hash (unlike `DefaultHasher`, fixed across runs, releases and platforms),
/// fed a word at a time: every integer is widened to a `u64` (a `usize` or `isize` too, so
/// the result does not depend on the platform's pointer width), byte strings are read in
/// little-endian 8-byte words with the tail padded and its length in the top byte. Each word
/// is xored into the state, which is then multiplied by an odd constant and xor-shifted: both
/// steps are bijections, so two equally long inputs that differ in one word never collide.
/// `finish` adds a final avalanche (MurmurHash3's `fmix64`).
#[derive(Debug)]
pub struct StableHasher(u64);

impl StableHasher {
    /// The multiplier of a word step (the 64-bit golden ratio, odd).
    const WORD_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

    fn mix(&mut self, word: u64) {
        let h = (self.0 ^ word).wrapping_mul(StableHasher::WORD_MUL);
        self.0 = h ^ (h >> 29);
    }
}

impl Default for StableHasher {
    fn default() -> StableHasher {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            // At most 7 bytes: the top byte is free for the length, so that a tail is never
            // taken for a shorter one padded with zeros.
            let mut word = [0; 8];
            word[..tail.len()].copy_from_slice(tail);
            word[7] = tail.len() as u8;
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        // Invariant: no supported platform has a `usize` wider than 64 bits.
        self.mix(u64::try_from(i).expect("usize fits in 64 bits"));
    }

    fn write_i8(&mut self, i: i8) {
        self.write_u64(i64::from(i) as u64);
    }

    fn write_i16(&mut self, i: i16) {
        self.write_u64(i64::from(i) as u64);
    }

    fn write_i32(&mut self, i: i32) {
        self.write_u64(i64::from(i) as u64);
    }

    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }

    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }

    fn write_isize(&mut self, i: isize) {
        // Invariant: no supported platform has an `isize` wider than 64 bits.
        self.write_u64(i64::try_from(i).expect("isize fits in 64 bits") as u64);
    }
}

/// What a run reserves up front of each growing log (operations, pending events, draws),
/// instead of growing it from empty through a series of reallocations: about a small
/// race's run. A capacity never shows in a run's result.
const INITIAL_CAPACITY: usize = 256;

#[derive(Debug)]
enum Event {
    Start(usize),
    Arrive(usize),
    ReplyArrive(usize),
    OpTimeout(usize),
    Timer(usize, u32),
    /// A stream read waiting for its frame: the frame's production time has come.
    StreamWake(usize),
    Resume(usize, u32),
    Restart(usize),
    Act(Action),
    Horizon,
    /// A pub/sub or push receive's wait ends.
    ReceiveExpires(usize),
    /// A parked SQL statement's deadlock check, `deadlock_timeout` after its wait (begun at
    /// the timestamp) started.
    DeadlockCheck(usize, Timestamp),
}

/// A scheduled event's key, ordered by (time, sequence): the sequence numbers are unique, so
/// the queue's order is total and the same on every run (`slot` is never compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    at: Timestamp,
    seq: u64,
    /// Where the event waits in [`EventQueue::slots`].
    slot: u32,
}

/// The pending events in (time, sequence) order. The heap holds only the small keys (sifting
/// moves 24 bytes an entry, not a whole event); the events wait in slots, reused once
/// popped.
///
/// Operation timeouts, most of the pending events (one per operation sent, most of them
/// popped long after their operation completed), bypass the heap: they wait in one
/// first-in-first-out lane per timeout length. A timeout is due at the send time plus its
/// lane's length, and the clock never goes back, so each lane is already in (time,
/// sequence) order and its front is its earliest; `pop` takes the earliest of the heap's top
/// and the lanes' fronts, which is the order one heap of everything would give.
#[derive(Debug, Default)]
struct EventQueue {
    heap: BinaryHeap<Reverse<QueueKey>>,
    slots: Vec<Option<Event>>,
    /// Slots whose event was popped, to reuse.
    free: Vec<u32>,
    /// Operation timeouts by timeout length, in order.
    lanes: Vec<(Duration, VecDeque<LaneEntry>)>,
}

/// A queued operation timeout: (due, sequence, operation index).
type LaneEntry = (Timestamp, u64, usize);

impl EventQueue {
    fn push(&mut self, at: Timestamp, seq: u64, event: Event) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                let slot = u32::try_from(self.slots.len())
                    .expect("world invariant: fewer than 2^32 events pending at once");
                self.slots.push(Some(event));
                slot
            }
        };
        self.heap.push(Reverse(QueueKey { at, seq, slot }));
    }

    /// Queues operation `op`'s timeout, due at `at`, `length` after its send.
    fn push_timeout(&mut self, at: Timestamp, seq: u64, length: Duration, op: usize) {
        let lane = match self.lanes.iter().position(|(l, _)| *l == length) {
            Some(lane) => lane,
            None => {
                self.lanes.push((length, VecDeque::new()));
                self.lanes.len() - 1
            }
        };
        let queue = &mut self.lanes[lane].1;
        assert!(
            queue.back().is_none_or(|&(t, s, _)| (t, s) < (at, seq)),
            "world invariant: a timeout lane is in (time, sequence) order"
        );
        queue.push_back((at, seq, op));
    }

    /// Makes room for `additional` more pending events.
    fn reserve(&mut self, additional: usize) {
        self.heap.reserve(additional);
        self.slots.reserve(additional);
    }

    /// The earliest event and its time.
    fn pop(&mut self) -> Option<(Timestamp, Event)> {
        let mut earliest_lane: Option<(Timestamp, u64, usize)> = None;
        for (i, (_, queue)) in self.lanes.iter().enumerate() {
            if let Some(&(at, seq, _)) = queue.front()
                && earliest_lane.is_none_or(|(t, s, _)| (at, seq) < (t, s))
            {
                earliest_lane = Some((at, seq, i));
            }
        }
        if let Some((at, seq, lane)) = earliest_lane
            && self
                .heap
                .peek()
                .is_none_or(|Reverse(top)| (at, seq) < (top.at, top.seq))
        {
            let (at, _, op) = self.lanes[lane]
                .1
                .pop_front()
                .expect("world invariant: the lane's front was just read");
            return Some((at, Event::OpTimeout(op)));
        }
        let Reverse(key) = self.heap.pop()?;
        let event = self.slots[key.slot as usize]
            .take()
            .expect("world invariant: a queued key's slot holds its event");
        self.free.push(key.slot);
        Some((key.at, event))
    }
}

#[derive(Debug)]
enum Held {
    Send(usize, Duration),
    Reply(usize),
    Timeout(usize),
}

struct Proc {
    name: String,
    factory: Factory,
    fault_prone: bool,
    machine: Option<Box<dyn Machine>>,
    incarnation: u32,
    started: bool,
    restart_pending: bool,
    paused_until: Option<Timestamp>,
    held: Vec<Held>,
    timer_at: Option<Timestamp>,
    session: SessionId,
    /// Operations sent so far, per tag kind, in the order the kinds were first sent: a
    /// process sends a handful of kinds, which a short list finds faster than a map.
    sent: Vec<(TagKind, u32)>,
    host: u32,
    /// Its random stream ([`racelab_core::RandomOp`]), reseeded at every (re)start.
    random: RandomStream,
    /// Its host's clock error ([`Action::Clock`]), and the latest time it read (the clock
    /// never reads less; both survive restarts, like the host).
    clock: ClockSkew,
    last_local: Timestamp,
}

#[derive(Debug, Default)]
struct OpState {
    proc: usize,
    incarnation: u32,
    session: Option<SessionId>,
    store: Option<StoreId>,
    drop_reply: bool,
    crash_after: Option<Option<Duration>>,
    failover_after: bool,
    done: bool,
    /// Time the store takes to answer beyond the network (an upstream's stream or slowness).
    reply_extra: Duration,
}

enum Faults {
    Scripted {
        steps: Vec<Step>,
    },
    Random {
        rng: Box<SimRng>,
        profile: Box<FaultProfile>,
    },
}

/// Where latencies come from: fixed for scripts, a seeded stream of its own otherwise (so
/// that pinning the faults of a random run keeps its latencies).
enum Latency {
    Fixed(Duration),
    /// Exhaustive search over arrival orders: each message's latency is a choice point of
    /// the fault stream (`fixed` by default, or `slow`).
    Choice {
        fixed: Duration,
        slow: Duration,
    },
    Random {
        rng: Box<SimRng>,
        bounds: (Duration, Duration),
    },
    /// PCT's priorities ([`Scheduler::Pct`]): a message of the process ranked `r` (0 is the
    /// highest priority) takes `lo + r * step`.
    Pct {
        lo: Duration,
        /// The extra latency per rank.
        step: Duration,
        /// Rank per process index.
        ranks: Vec<u64>,
        /// The send counts at which the sender drops to the bottom, ascending.
        changes: Vec<u64>,
        /// Operations sent so far.
        sent: u64,
        /// Processes dropped so far (the next drops below them).
        dropped: u64,
    },
}

/// The latency stream's seed, derived from the run's seed.
fn latency_seed(seed: u64) -> u64 {
    seed.rotate_left(17) ^ 0x5DEE_CE66_D1CE_4E5B
}

/// What a SQL operation does to its session's transaction, for [`World::track_transaction`].
#[derive(Clone, Copy)]
enum TxStep {
    Begin,
    Exec,
    Commit,
    Rollback,
}

impl TxStep {
    fn of(op: &SqlOp) -> TxStep {
        match op {
            SqlOp::Begin => TxStep::Begin,
            SqlOp::Exec(_) => TxStep::Exec,
            SqlOp::Commit => TxStep::Commit,
            SqlOp::Rollback => TxStep::Rollback,
        }
    }
}

struct World {
    now: Timestamp,
    seq: u64,
    events: EventQueue,
    procs: Vec<Proc>,
    redis: RedisModel,
    sql: SqlModel,
    queue: QueueModel,
    ops: Vec<OpState>,
    history: History,
    faults: Faults,
    latency: Latency,
    /// Every fault the random scheduler injected, as a step that pins it.
    injected: Vec<Step>,
    net: NetConfig,
    partitions: BTreeSet<(usize, StoreId)>,
    parked: Vec<usize>,
    /// When each parked statement's current wait began, and the session it waits for.
    waits: BTreeMap<usize, (Timestamp, SessionId)>,
    txn_ops: BTreeMap<SessionId, Vec<usize>>,
    next_session: u64,
    in_flight: u64,
    time_limit: Timestamp,
    horizon: Option<Timestamp>,
    past_horizon: bool,
    stats: RunStats,
    scheduler_hash: u64,
    local_template: Option<Box<dyn LocalMemory>>,
    locals: BTreeMap<u32, Box<dyn LocalMemory>>,
    local_seq: u64,
    upstream: UpstreamModel,
    /// Stream reads that reached the endpoint before their frame was produced, in arrival
    /// order; each is applied at the frame's time, or earlier if its stream is cancelled or
    /// its reader crashes.
    stream_waits: Vec<usize>,
    /// Redis operations whose writes the replica may not have yet: (the write count of
    /// their last write, op index). Settled as durable or lost at a failover, a restart
    /// and the end of the run.
    redis_pending: Vec<(u64, usize)>,
    /// The seed processes derive their random streams from (the scheduler's seed; 0 for
    /// scripted and exhaustive runs).
    run_seed: u64,
    /// Every process draw, in order, for [`Run::decisions`].
    draws: Vec<Decision>,
    /// Receives (pub/sub at Redis, push at the balancer) waiting for something to arrive,
    /// in arrival order.
    receive_waits: Vec<usize>,
    /// The push connections' balancer.
    push: PushHub,
}

impl World {
    fn new(spec: WorldSpec, scheduler: &Scheduler) -> World {
        let mut sql = SqlModel::new();
        sql.set_deadlock_timeout(spec.net.sql_deadlock_timeout);
        let push_sticky = spec.net.push_sticky;
        for (table, key, row) in spec.sql_rows {
            sql.seed(table, &key, row);
        }
        let mut hasher = StableHasher::default();
        scheduler.hash(&mut hasher);
        let (faults, latency) = match scheduler {
            Scheduler::Scripted { steps, .. } => (
                Faults::Scripted {
                    steps: steps.clone(),
                },
                Latency::Fixed(spec.net.scripted_latency),
            ),
            Scheduler::Random { seed, faults } => (
                Faults::Random {
                    rng: Box::new(SimRng::new(*seed)),
                    profile: Box::new(faults.clone()),
                },
                Latency::Random {
                    rng: Box::new(SimRng::new(latency_seed(*seed))),
                    bounds: faults.latency,
                },
            ),
            Scheduler::Exhaustive {
                prefix,
                faults,
                slow,
            } => (
                Faults::Random {
                    rng: Box::new(SimRng::enumerating(prefix.clone())),
                    profile: Box::new(faults.clone()),
                },
                match slow {
                    Some(slow) => Latency::Choice {
                        fixed: spec.net.scripted_latency,
                        slow: *slow,
                    },
                    None => Latency::Fixed(spec.net.scripted_latency),
                },
            ),
            Scheduler::Pct {
                seed,
                depth,
                faults,
            } => {
                // Priorities and change points come from a stream of their own; the faults
                // from the seed's fault stream, as under Random.
                let mut rng = SimRng::new(latency_seed(*seed));
                let n = spec.processes.len() as u64;
                let mut order: Vec<u64> = (0..n).collect();
                for i in (1..order.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
                let mut ranks = vec![0; order.len()];
                for (rank, &p) in order.iter().enumerate() {
                    ranks[p as usize] = rank as u64;
                }
                let mut changes: Vec<u64> = (1..*depth.max(&1))
                    .map(|_| rng.between(1, PCT_CHANGE_SPAN))
                    .collect();
                changes.sort_unstable();
                (
                    Faults::Random {
                        rng: Box::new(SimRng::new(*seed)),
                        profile: Box::new(faults.clone()),
                    },
                    Latency::Pct {
                        lo: faults.latency.0,
                        step: Duration::from_ms(
                            ((faults
                                .latency
                                .1
                                .as_ms()
                                .saturating_sub(faults.latency.0.as_ms()))
                                / n.max(1))
                            .max(PCT_STEP.as_ms()),
                        ),
                        ranks,
                        changes,
                        sent: 0,
                        dropped: 0,
                    },
                )
            }
            Scheduler::Pinned {
                seed,
                latency,
                steps,
            } => (
                Faults::Scripted {
                    steps: steps.clone(),
                },
                Latency::Random {
                    rng: Box::new(SimRng::new(latency_seed(*seed))),
                    bounds: *latency,
                },
            ),
        };
        let mut world = World {
            now: Timestamp::ZERO,
            seq: 0,
            events: EventQueue::default(),
            procs: Vec::new(),
            redis: RedisModel::new(spec.replication_lag),
            sql,
            queue: QueueModel::new(spec.queue_lock),
            ops: Vec::new(),
            history: History::default(),
            faults,
            latency,
            injected: Vec::new(),
            net: spec.net,
            partitions: BTreeSet::new(),
            parked: Vec::new(),
            waits: BTreeMap::new(),
            txn_ops: BTreeMap::new(),
            next_session: 0,
            in_flight: 0,
            time_limit: spec.time_limit,
            horizon: spec.horizon,
            past_horizon: false,
            stats: RunStats::default(),
            scheduler_hash: hasher.finish(),
            local_template: spec.local,
            locals: BTreeMap::new(),
            local_seq: 0,
            upstream: UpstreamModel::new(spec.upstream),
            stream_waits: Vec::new(),
            redis_pending: Vec::new(),
            run_seed: match scheduler {
                Scheduler::Random { seed, .. }
                | Scheduler::Pinned { seed, .. }
                | Scheduler::Pct { seed, .. } => *seed,
                Scheduler::Scripted { .. } | Scheduler::Exhaustive { .. } => 0,
            },
            draws: Vec::new(),
            receive_waits: Vec::new(),
            push: PushHub::new(push_sticky),
        };
        world.history.ops.reserve(INITIAL_CAPACITY);
        world.ops.reserve(INITIAL_CAPACITY);
        world.events.reserve(INITIAL_CAPACITY);
        if let Faults::Random { rng, .. } = &mut world.faults {
            rng.reserve(INITIAL_CAPACITY);
        }
        if let Latency::Random { rng, .. } = &mut world.latency {
            rng.reserve(INITIAL_CAPACITY);
        }
        for (i, p) in spec.processes.into_iter().enumerate() {
            world.history.process_names.push((pid(i), p.name.clone()));
            let session = world.new_session();
            world.procs.push(Proc {
                name: p.name,
                factory: p.factory,
                fault_prone: p.fault_prone,
                machine: None,
                incarnation: 0,
                started: false,
                restart_pending: false,
                paused_until: None,
                held: Vec::new(),
                timer_at: None,
                session,
                sent: Vec::new(),
                host: p.host,
                random: RandomStream::for_process(world.run_seed, pid(i).0, 0),
                clock: ClockSkew::NONE,
                last_local: Timestamp::ZERO,
            });
            world.schedule(p.start_at, Event::Start(i));
        }
        world.plan_faults();
        if let Some(h) = spec.horizon {
            world.schedule(h, Event::Horizon);
        }
        world
    }

    fn new_session(&mut self) -> SessionId {
        self.next_session += 1;
        SessionId(self.next_session)
    }

    fn schedule(&mut self, at: Timestamp, event: Event) {
        self.seq += 1;
        self.events.push(at.max(self.now), self.seq, event);
    }

    /// Schedules operation `index`'s timeout, `length` from now, in its timeout lane (the
    /// same sequence numbering as [`World::schedule`]).
    fn schedule_timeout(&mut self, length: Duration, index: usize) {
        self.seq += 1;
        self.events
            .push_timeout(self.now + length, self.seq, length, index);
    }

    fn proc_index(&self, name: &str) -> usize {
        // Invariant: scripted steps name processes of their own world (checked by the
        // catalog's tests, which run every script).
        self.procs
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("scripted step names unknown process {name:?}"))
    }

    fn plan_faults(&mut self) {
        match &mut self.faults {
            Faults::Scripted { steps } => {
                let timed: Vec<(Timestamp, Action)> = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::At { at, action } => Some((*at, action.clone())),
                        Step::On { .. } => None,
                    })
                    .collect();
                for (at, action) in timed {
                    self.plan(at, action);
                }
            }
            Faults::Random { rng, profile } => {
                let prone: Vec<usize> = self
                    .procs
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.fault_prone)
                    .map(|(i, _)| i)
                    .collect();
                let mut planned = Vec::new();
                let window = profile.window.as_ms();
                rng.at(Timestamp::ZERO, DecisionKind::PlannedFault);
                for _ in 0..profile.partitions {
                    if prone.is_empty() {
                        break;
                    }
                    let at = Timestamp::from_ms(rng.below(window.max(1)));
                    let who = prone[usize::try_from(rng.below(prone.len() as u64)).unwrap_or(0)];
                    let store = if rng.below(2) == 0 {
                        StoreId::Redis
                    } else {
                        StoreId::Sql
                    };
                    let len = rng.duration(profile.partition_len.0, profile.partition_len.1);
                    let process = self.procs[who].name.clone();
                    planned.push((
                        at,
                        Action::Partition {
                            process: process.clone(),
                            store,
                        },
                    ));
                    planned.push((at + len, Action::Heal { process, store }));
                }
                for _ in 0..profile.redis_restarts {
                    let at = Timestamp::from_ms(rng.below(window.max(1)));
                    planned.push((at, Action::RedisRestart));
                }
                let procs: Vec<(&str, bool)> = self
                    .procs
                    .iter()
                    .map(|p| (p.name.as_str(), p.fault_prone))
                    .collect();
                for (p, skew) in profile.plan_clocks(rng, &procs) {
                    let process = self.procs[p].name.clone();
                    planned.push((Timestamp::ZERO, Action::Clock { process, skew }));
                }
                for pause in profile.plan_pauses(rng, &procs) {
                    let action = Action::Pause {
                        process: self.procs[pause.process].name.clone(),
                        duration: pause.duration,
                    };
                    planned.push((pause.at, action));
                }
                for (at, action) in planned {
                    self.injected.push(Step::At {
                        at,
                        action: action.clone(),
                    });
                    self.plan(at, action);
                }
            }
        }
    }

    /// Schedules a planned action; a clock set at time zero applies at once, so that
    /// processes starting at zero read it from their start.
    fn plan(&mut self, at: Timestamp, action: Action) {
        if at == Timestamp::ZERO && matches!(action, Action::Clock { .. }) {
            self.act(action);
        } else {
            self.schedule(at, Event::Act(action));
        }
    }

    fn run(mut self) -> Run {
        let mut quiescent = false;
        let mut stopped_by = None;
        while let Some((at, event)) = self.events.pop() {
            if at > self.time_limit {
                stopped_by = Some(format!("the time limit {} was reached", self.time_limit));
                break;
            }
            assert!(
                at >= self.now,
                "world invariant: an event at {at} after the clock reached {}",
                self.now
            );
            if self.stats.events >= RUN_EVENTS_MAX {
                stopped_by = Some(format!(
                    "the event limit RUN_EVENTS_MAX ({RUN_EVENTS_MAX}) was reached at {at}"
                ));
                break;
            }
            self.now = at;
            self.stats.events += 1;
            self.handle(event);
            if self.is_quiescent() || self.is_drained() {
                quiescent = true;
                break;
            }
        }
        self.settle_redis(None);
        if let Err(e) = self.history.check_well_formed() {
            panic!("world invariant: the history is not well formed: {e}");
        }
        let unsettled = if quiescent {
            Vec::new()
        } else {
            self.unsettled(stopped_by)
        };
        let choices = match &self.faults {
            Faults::Random { rng, .. } => rng.choices().cloned(),
            Faults::Scripted { .. } => None,
        };
        let mut decisions = match &mut self.faults {
            Faults::Random { rng, .. } => rng.take_decisions(),
            Faults::Scripted { .. } => Vec::new(),
        };
        if let Latency::Random { rng, .. } = &mut self.latency {
            decisions.reserve(rng.draws() + self.draws.len());
            decisions.extend(rng.take_decisions());
        }
        decisions.append(&mut self.draws);
        self.stats.decisions = decisions.len() as u64;
        let sql_rows: Vec<(Table, String, Row)> = self
            .sql
            .all_committed_rows()
            .map(|(table, key, row)| (table, key.to_string(), row.clone()))
            .collect();
        Run {
            horizon: if quiescent && self.past_horizon {
                self.horizon
            } else {
                None
            },
            trace_seed: self.scheduler_hash,
            injected: self.injected,
            choices,
            upstream_usage: self.upstream.final_usage(),
            history: self.history,
            decisions,
            quiescent,
            unsettled,
            ended_at: self.now,
            stats: self.stats,
            sql_rows,
            local: self.locals,
        }
    }

    /// What keeps the world from quiescence, for a stuck verdict.
    fn unsettled(&self, stopped_by: Option<String>) -> Vec<String> {
        let mut out =
            vec![stopped_by.unwrap_or_else(|| {
                format!("nothing was left to happen at {} (a deadlock)", self.now)
            })];
        if let Some(h) = self.horizon.filter(|_| self.past_horizon) {
            out.push(format!("draining after the horizon {h}"));
        }
        if self.in_flight > 0 {
            out.push(format!("{} operations in flight", self.in_flight));
        }
        if !self.parked.is_empty() {
            out.push(format!(
                "{} SQL statements waiting for a lock",
                self.parked.len()
            ));
        }
        let jobs = self.queue.unfinished();
        if jobs > 0 {
            out.push(format!("{jobs} queue jobs not completed"));
        }
        for p in &self.procs {
            let state = if !p.started {
                "not started"
            } else if p.restart_pending {
                "crashed, restart pending"
            } else if p.paused_until.is_some() {
                "paused"
            } else if p.machine.as_ref().is_some_and(|m| !m.is_idle()) {
                "busy"
            } else {
                continue;
            };
            out.push(format!("{} {state}", p.name));
        }
        out
    }

    /// After the horizon: nothing in flight, parked, or held by a paused process.
    fn is_drained(&self) -> bool {
        self.past_horizon
            && self.in_flight == 0
            && self.parked.is_empty()
            && self.procs.iter().all(|p| p.held.is_empty())
    }

    fn is_quiescent(&self) -> bool {
        self.in_flight == 0
            && self.parked.is_empty()
            && self.queue.is_drained()
            && self.procs.iter().all(|p| {
                p.started
                    && !p.restart_pending
                    && p.paused_until.is_none()
                    && p.machine.as_ref().is_none_or(|m| m.is_idle())
            })
    }

    fn handle(&mut self, event: Event) {
        if self.past_horizon {
            // Draining: no new work from timers, starts or restarts, and no new fault.
            match &event {
                Event::Start(_) | Event::Restart(_) | Event::Timer(..) => return,
                Event::Act(action) if !matches!(action, Action::Heal { .. }) => return,
                _ => {}
            }
        }
        match event {
            Event::Horizon => self.past_horizon = true,
            Event::ReceiveExpires(index) => {
                if let Some(at) = self.receive_waits.iter().position(|i| *i == index) {
                    self.receive_waits.remove(at);
                    let nothing = match self.history.ops[index].op {
                        StoreOp::Push(_) => Reply::Push(PushReply::NoMessage),
                        _ => Reply::PubSub(PubSubReply::NoMessage),
                    };
                    self.finish_apply(index, nothing, true);
                }
            }
            Event::Start(p) => {
                self.procs[p].started = true;
                self.boot(p);
            }
            Event::Restart(p) => {
                self.procs[p].restart_pending = false;
                self.procs[p].incarnation += 1;
                self.record_fault(Fault::Restart { process: pid(p) });
                self.boot(p);
            }
            Event::Arrive(op) => self.arrive(op),
            Event::ReplyArrive(op) => self.reply_arrives(op),
            Event::OpTimeout(op) => self.op_timeout(op),
            Event::Timer(p, incarnation) => {
                let proc = &self.procs[p];
                if proc.incarnation != incarnation
                    || proc.machine.is_none()
                    || proc.paused_until.is_some()
                {
                    return;
                }
                if proc.timer_at.is_some_and(|t| t <= self.now) {
                    self.fire_timer(p);
                }
            }
            Event::StreamWake(op) => {
                if self.stream_waits.contains(&op) {
                    self.stream_waits.retain(|i| *i != op);
                    self.apply(op);
                }
            }
            Event::Resume(p, incarnation) => self.resume(p, incarnation),
            Event::Act(action) => self.act(action),
            Event::DeadlockCheck(op, since) => self.deadlock_check(op, since),
        }
    }

    /// PostgreSQL's deadlock check for a parked statement whose wait began at `since`: if it
    /// still waits (the same wait) and its wait closes a cycle, it is answered 40P01 and its
    /// transaction fails, releasing its locks.
    fn deadlock_check(&mut self, index: usize, since: Timestamp) {
        if !self.parked.contains(&index) || self.waits.get(&index).map(|w| w.0) != Some(since) {
            return;
        }
        let (Some(session), StoreOp::Sql(sql)) =
            (self.ops[index].session, &self.history.ops[index].op)
        else {
            return;
        };
        let step = TxStep::of(sql);
        let releases = self.sql.lock_releases();
        let Some(reply) = self.sql.check_deadlock(session) else {
            return;
        };
        self.parked.retain(|i| *i != index);
        self.waits.remove(&index);
        self.track_transaction(session, index, step, true, false);
        self.finish_apply(index, Reply::Sql(reply), false);
        if self.sql.lock_releases() != releases {
            self.retry_parked();
        }
    }

    /// What process `p`'s clock reads now (true time unless an [`Action::Clock`] skewed it).
    fn local_now(&mut self, p: usize) -> Timestamp {
        let proc = &mut self.procs[p];
        let local = proc.clock.read(self.now).max(proc.last_local);
        proc.last_local = local;
        local
    }

    fn fire_timer(&mut self, p: usize) {
        self.procs[p].timer_at = None;
        let local = self.local_now(p);
        if let Some(m) = self.procs[p].machine.as_mut() {
            m.handle_timeout(local);
        }
        self.drain(p);
    }

    fn boot(&mut self, p: usize) {
        let local = self.local_now(p);
        let proc = &mut self.procs[p];
        proc.random = RandomStream::for_process(self.run_seed, pid(p).0, proc.incarnation);
        let mut machine = (proc.factory)(proc.incarnation);
        machine.handle_start(local);
        proc.machine = Some(machine);
        proc.timer_at = None;
        self.drain(p);
    }

    fn drain(&mut self, p: usize) {
        while let Some(out) = self.procs[p].machine.as_mut().and_then(|m| m.poll_op()) {
            self.emit(p, out);
        }
        while let Some(note) = self.procs[p].machine.as_mut().and_then(|m| m.poll_note()) {
            self.history.notes.push(NoteRecord {
                at: self.now,
                process: pid(p),
                note,
            });
        }
        // The machine asks for a time on its own clock; the world waits until that clock
        // reads it.
        let clock = self.procs[p].clock;
        let next = self.procs[p]
            .machine
            .as_ref()
            .and_then(|m| m.poll_timeout())
            .map(|local| clock.true_time_of(local));
        if next != self.procs[p].timer_at {
            self.procs[p].timer_at = next;
            if let Some(at) = next {
                let incarnation = self.procs[p].incarnation;
                self.schedule(at, Event::Timer(p, incarnation));
            }
        }
    }

    fn emit(&mut self, p: usize, out: Outgoing) {
        let store = out.op.store();
        let kind = out.tag.kind();
        let nth = {
            let sent = &mut self.procs[p].sent;
            let at = match sent.iter().position(|(k, _)| *k == kind) {
                Some(at) => at,
                None => {
                    sent.push((kind, 0));
                    sent.len() - 1
                }
            };
            sent[at].1 += 1;
            sent[at].1
        };
        let index = self.history.ops.len();
        self.history.ops.push(OpRecord {
            process: pid(p),
            id: out.id,
            tag: out.tag,
            op: out.op,
            invoked_at: self.now,
            applied_at: None,
            durable_at: None,
            lost_at: None,
            result: None,
            completed_at: None,
            timed_out: false,
        });
        let session = (store == StoreId::Sql).then_some(self.procs[p].session);
        self.ops.push(OpState {
            proc: p,
            incarnation: self.procs[p].incarnation,
            session,
            store: Some(store),
            ..OpState::default()
        });
        let mut extra = Duration::ZERO;
        let mut pause = None;
        let mut effects = self.op_faults(p, kind, nth, store);
        if store == StoreId::Local {
            // A synchronous block runs without the network: only a crash right after it
            // applies.
            effects.retain(|e| matches!(e, OpEffect::CrashAfterApply { .. }));
        }
        if matches!(
            self.history.ops[index].op,
            StoreOp::Push(PushOp::Receive { .. })
        ) {
            // A push receive reads the process's end of its connections: a lost or late
            // answer would be a message lost or held on a connection that stays open, which
            // a WebSocket does not do (its failures close it: a crash or a cut).
            effects.retain(|e| !matches!(e, OpEffect::DropReply | OpEffect::Delay(_)));
        }
        if matches!(self.faults, Faults::Random { .. }) {
            for effect in &effects {
                let process = self.procs[p].name.clone();
                self.injected.push(Step::On {
                    process,
                    kind,
                    nth,
                    effect: *effect,
                });
            }
        }
        for effect in effects {
            match effect {
                OpEffect::PauseBeforeSend(d) => pause = Some(d),
                OpEffect::Delay(d) => {
                    extra = d;
                    let op = self.history.ops[index].id;
                    self.record_fault(Fault::Delay {
                        process: pid(p),
                        op,
                        by: d,
                    });
                }
                OpEffect::DropReply => self.ops[index].drop_reply = true,
                OpEffect::CrashAfterApply { restart_after } => {
                    self.ops[index].crash_after = Some(restart_after)
                }
                OpEffect::FailoverAfterApply => self.ops[index].failover_after = true,
            }
        }
        if let Some(d) = pause {
            self.pause(p, d);
        }
        if self.procs[p].paused_until.is_some() {
            self.procs[p].held.push(Held::Send(index, extra));
        } else {
            self.send(index, extra);
        }
    }

    /// The faults to inject at this operation.
    fn op_faults(&mut self, p: usize, kind: TagKind, nth: u32, store: StoreId) -> Vec<OpEffect> {
        if self.past_horizon {
            // Draining: no new fault.
            return Vec::new();
        }
        let now = self.now;
        let name = &self.procs[p].name;
        let prone = self.procs[p].fault_prone;
        match &mut self.faults {
            Faults::Scripted { steps } => steps
                .iter()
                .filter_map(|s| match s {
                    Step::On {
                        process,
                        kind: k,
                        nth: n,
                        effect,
                    } if process == name && *k == kind && *n == nth => Some(*effect),
                    _ => None,
                })
                .collect(),
            Faults::Random { rng, profile } => {
                let op = OpSite {
                    process: name,
                    fault_prone: prone,
                    kind,
                    store,
                };
                profile.op_faults(rng, now, &op)
            }
        }
    }

    /// The latency of a message of process `p` (sent by it or to it).
    fn latency(&mut self, p: usize) -> Duration {
        let now = self.now;
        match &mut self.latency {
            Latency::Pct {
                lo, step, ranks, ..
            } => *lo + Duration::from_ms(step.as_ms() * ranks.get(p).copied().unwrap_or(0)),
            Latency::Fixed(d) => *d,
            Latency::Choice { fixed, slow } => match &mut self.faults {
                Faults::Random { rng, .. } => {
                    match rng.at(now, DecisionKind::Latency).alternative(2) {
                        0 => *fixed,
                        _ => *slow,
                    }
                }
                Faults::Scripted { .. } => *fixed,
            },
            Latency::Random { rng, bounds } => rng
                .at(now, DecisionKind::Latency)
                .duration(bounds.0, bounds.1),
        }
    }

    /// Under PCT, counts an operation of process `p` sent and, at a change point, drops `p`
    /// below every other process.
    fn pct_sent(&mut self, p: usize) {
        if let Latency::Pct {
            ranks,
            changes,
            sent,
            dropped,
            ..
        } = &mut self.latency
        {
            *sent += 1;
            let n = ranks.len() as u64;
            while changes.first() == Some(sent) {
                changes.remove(0);
                if let Some(rank) = ranks.get_mut(p) {
                    *rank = n + *dropped;
                }
                *dropped += 1;
            }
        }
    }

    fn send(&mut self, index: usize, extra: Duration) {
        self.in_flight += 1;
        if self.ops[index].store == Some(StoreId::Local) {
            // A synchronous block runs at once; under an exhaustive search over arrival
            // orders, it may instead run after a task switch (1 ms), so that blocks of
            // processes ready at the same instant run in either order.
            let now = self.now;
            let p = self.ops[index].proc;
            self.pct_sent(p);
            let switch = match (&self.latency, &mut self.faults) {
                (Latency::Choice { .. }, Faults::Random { rng, .. }) => {
                    let pick = rng.at(now, DecisionKind::Latency).alternative(2);
                    Duration::from_ms(u64::from(pick))
                }
                // A lower-priority process's block starts after a higher one's ready at the
                // same instant.
                (Latency::Pct { ranks, .. }, _) => {
                    Duration::from_ms(PCT_STEP.as_ms() * ranks.get(p).copied().unwrap_or(0))
                }
                _ => Duration::ZERO,
            };
            self.schedule(now + switch, Event::Arrive(index));
            return;
        }
        let p = self.ops[index].proc;
        self.pct_sent(p);
        let latency = self.latency(p);
        self.schedule(self.now + latency + extra, Event::Arrive(index));
        let timeout = match self.ops[index].store {
            Some(StoreId::Sql) => self.net.sql_timeout,
            Some(StoreId::Upstream) => self.net.upstream_timeout,
            _ => self.net.redis_timeout,
        };
        self.schedule_timeout(timeout, index);
    }

    fn arrive(&mut self, index: usize) {
        let state = &self.ops[index];
        let (p, store) = (state.proc, state.store.unwrap_or(StoreId::Redis));
        let connection_open = match state.session {
            Some(s) => s == self.procs[p].session && state.incarnation == self.procs[p].incarnation,
            None => true,
        };
        if self.partitions.contains(&(p, store)) || !connection_open {
            self.landed();
            return;
        }
        self.apply(index);
    }

    /// Executes an arrived operation at its store (or parks it behind a SQL lock).
    fn apply(&mut self, index: usize) {
        let now = self.now;
        // The common operations borrow theirs from the history (the stores are other fields
        // of the world); the rest need the world whole while they use it, so take a copy.
        let reply = match &self.history.ops[index].op {
            StoreOp::Kv(kv) => {
                let before = self.redis.writes();
                let reply = Reply::Kv(self.redis.execute(now, kv));
                self.deliver_received();
                let wrote = self.redis.writes();
                if wrote > before {
                    // Durable once the replica has it: settled later (settle_redis).
                    self.redis_pending.push((wrote, index));
                    self.finish_apply(index, reply, false);
                    return;
                }
                reply
            }
            StoreOp::Queue(q) => Reply::Queue(self.queue.execute(now, q)),
            StoreOp::Local(local) => {
                let host = self.procs[self.ops[index].proc].host;
                let template = &self.local_template;
                let memory = self.locals.entry(host).or_insert_with(|| match template {
                    Some(t) => t.clone_memory(),
                    None => Box::new(NoMemory),
                });
                let result = memory.run(local);
                self.local_seq += 1;
                Reply::Local(LocalReply {
                    seq: self.local_seq,
                    result,
                })
            }
            StoreOp::Random(draw) => {
                let value = self.procs[self.ops[index].proc].random.answer(draw);
                self.draws.push(Decision {
                    at: now,
                    kind: DecisionKind::ProcessRandom,
                    value,
                });
                Reply::Random(value)
            }
            StoreOp::Sql(sql) => {
                let Some(session) = self.ops[index].session else {
                    return;
                };
                let in_tx = self.sql.in_transaction(session);
                let releases = self.sql.lock_releases();
                match self.sql.execute(session, sql) {
                    SqlOutcome::Blocked { holder } => {
                        if !self.parked.contains(&index) {
                            self.parked.push(index);
                        }
                        // A new wait (not a retry that waits for the same holder) arms a
                        // deadlock check.
                        if self.waits.get(&index).map(|w| w.1) != Some(holder) {
                            self.waits.insert(index, (now, holder));
                            let at = now + self.sql.deadlock_timeout();
                            self.schedule(at, Event::DeadlockCheck(index, now));
                        }
                        return;
                    }
                    SqlOutcome::Done { reply, durable } => {
                        let step = TxStep::of(sql);
                        self.parked.retain(|i| *i != index);
                        self.waits.remove(&index);
                        self.track_transaction(session, index, step, in_tx, durable);
                        self.finish_apply(index, Reply::Sql(reply), durable && !in_tx);
                        // Locks go at a transaction's end and at its first error.
                        if self.sql.lock_releases() != releases {
                            self.retry_parked();
                        }
                        return;
                    }
                }
            }
            _ => return self.apply_other(index),
        };
        self.finish_apply(index, reply, true);
    }

    /// [`World::apply`] for the operations that need the world whole while they run.
    fn apply_other(&mut self, index: usize) {
        let now = self.now;
        let op = self.history.ops[index].op.clone();
        let reply = match &op {
            StoreOp::Kv(_)
            | StoreOp::Queue(_)
            | StoreOp::Local(_)
            | StoreOp::Random(_)
            | StoreOp::Sql(_) => {
                unreachable!("world invariant: World::apply runs these without the world whole")
            }
            StoreOp::Push(op) => {
                let ep = (self.ops[index].proc, self.ops[index].incarnation);
                // A request that outlived its process (delayed past a crash) reaches an
                // endpoint that no longer exists: it listens for nothing and connects nowhere.
                let gone =
                    self.procs[ep.0].machine.is_none() || self.procs[ep.0].incarnation != ep.1;
                let reply = match op {
                    PushOp::Listen { .. } | PushOp::Connect { .. } if gone => PushReply::Refused,
                    PushOp::Listen { service } => self.push.listen(ep, service),
                    PushOp::Connect { service } => self.push.connect(ep, service, pid),
                    PushOp::Send { conn, message } => self.push.send(ep, *conn, message),
                    PushOp::Close { conn } => self.push.close(ep, *conn),
                    PushOp::Receive { wait } => return self.receive(index, *wait),
                };
                self.finish_apply(index, Reply::Push(reply), true);
                self.deliver_received();
                return;
            }
            StoreOp::PubSub(op) => match op {
                PubSubOp::Subscribe { channels } => {
                    let sub = subscriber(self.ops[index].proc, self.ops[index].incarnation);
                    Reply::PubSub(PubSubReply::Subscribed {
                        count: self.redis.subscribe(sub, channels),
                    })
                }
                PubSubOp::Receive { wait } => return self.receive(index, *wait),
            },
            StoreOp::Upstream(call) if call.kind.is_stream() => {
                let reader = (self.ops[index].proc, self.ops[index].incarnation);
                match self.upstream.stream_call(now, reader, call) {
                    StreamStep::Reply(reply, extra) => {
                        self.ops[index].reply_extra = extra;
                        self.finish_apply(index, Reply::Stream(reply), true);
                        if let CallKind::Cancel { stream } = call.kind {
                            // A read waiting on the cancelled stream fails now.
                            let endpoint = call.endpoint;
                            self.wake_stream_reads(|_, op| {
                                matches!(op, StoreOp::Upstream(c)
                                    if c.endpoint == endpoint
                                        && c.kind == CallKind::Next { stream })
                            });
                        }
                    }
                    StreamStep::Wait(at) => {
                        self.stream_waits.push(index);
                        self.schedule(at, Event::StreamWake(index));
                    }
                }
                return;
            }
            StoreOp::Upstream(call) => {
                let (reply, extra) = self.upstream.call(now, call);
                self.ops[index].reply_extra = extra;
                Reply::Upstream(reply)
            }
        };
        self.finish_apply(index, reply, true);
    }

    /// Applies now the waiting stream reads that `which` selects (by their process and
    /// operation).
    fn wake_stream_reads(&mut self, which: impl Fn(usize, &StoreOp) -> bool) {
        let woken: Vec<usize> = self
            .stream_waits
            .iter()
            .copied()
            .filter(|i| which(self.ops[*i].proc, &self.history.ops[*i].op))
            .collect();
        for index in woken {
            // An earlier one's crash may have woken it already.
            if self.stream_waits.contains(&index) {
                self.stream_waits.retain(|i| *i != index);
                self.apply(index);
            }
        }
    }

    /// Keeps the list of statements in each open transaction, and stamps them durable when
    /// their transaction commits.
    fn track_transaction(
        &mut self,
        session: SessionId,
        index: usize,
        step: TxStep,
        in_tx: bool,
        durable: bool,
    ) {
        match step {
            TxStep::Begin => {
                self.txn_ops.entry(session).or_default();
            }
            TxStep::Exec if in_tx => {
                self.txn_ops.entry(session).or_default().push(index);
            }
            TxStep::Exec => {}
            TxStep::Commit => {
                let ops = self.txn_ops.remove(&session).unwrap_or_default();
                if durable {
                    for i in ops {
                        self.history.ops[i].durable_at = Some(self.now);
                    }
                }
            }
            TxStep::Rollback => {
                self.txn_ops.remove(&session);
            }
        }
    }

    /// An operation in flight arrived nowhere, was dropped, or its reply arrived.
    fn landed(&mut self) {
        self.in_flight = self
            .in_flight
            .checked_sub(1)
            .expect("world invariant: an operation landed while none was in flight");
    }

    fn finish_apply(&mut self, index: usize, reply: Reply, durable_now: bool) {
        self.stats.store_ops += 1;
        let now = self.now;
        let record = &mut self.history.ops[index];
        assert!(
            record.applied_at.is_none() && record.invoked_at <= now,
            "world invariant: operation {index} applied twice, or before its invocation"
        );
        record.applied_at = Some(now);
        if durable_now && reply.is_success_of(&record.op) {
            record.durable_at = Some(now);
        }
        record.result = Some(reply);
        let state = &self.ops[index];
        let (p, drop_reply, crash_after, failover_after) = (
            state.proc,
            state.drop_reply,
            state.crash_after,
            state.failover_after,
        );
        if failover_after {
            let lost = self.redis.failover(now);
            self.settle_redis(lost);
            self.record_fault(Fault::Failover);
            self.deliver_received();
        }
        if drop_reply {
            let op = self.history.ops[index].id;
            self.record_fault(Fault::DropReply {
                process: pid(p),
                op,
            });
            self.landed();
        } else {
            let latency = match self.ops[index].store {
                Some(StoreId::Local) => Duration::ZERO,
                _ => self.latency(self.ops[index].proc) + self.ops[index].reply_extra,
            };
            self.schedule(now + latency, Event::ReplyArrive(index));
        }
        if let Some(restart_after) = crash_after
            && self.ops[index].incarnation == self.procs[p].incarnation
        {
            self.crash(p, restart_after);
        }
    }

    fn retry_parked(&mut self) {
        loop {
            let parked = std::mem::take(&mut self.parked);
            let before = parked.len();
            for index in parked {
                self.apply(index);
            }
            if self.parked.len() >= before {
                break;
            }
        }
    }

    fn reply_arrives(&mut self, index: usize) {
        self.landed();
        let state = &self.ops[index];
        let (p, store) = (state.proc, state.store.unwrap_or(StoreId::Redis));
        if state.done
            || state.incarnation != self.procs[p].incarnation
            || self.procs[p].machine.is_none()
            || self.partitions.contains(&(p, store))
        {
            return;
        }
        if self.procs[p].paused_until.is_some() {
            self.procs[p].held.push(Held::Reply(index));
            return;
        }
        let reply = self.history.ops[index]
            .result
            .clone()
            .unwrap_or(Reply::Timeout);
        self.complete(index, reply);
    }

    fn complete(&mut self, index: usize, reply: Reply) {
        if self.ops[index].done {
            return;
        }
        self.ops[index].done = true;
        let p = self.ops[index].proc;
        let record = &mut self.history.ops[index];
        assert!(
            record.completed_at.is_none(),
            "world invariant: operation {index} completed twice"
        );
        record.completed_at = Some(self.now);
        record.timed_out = matches!(reply, Reply::Timeout);
        let id = record.id;
        let local = self.local_now(p);
        if let Some(m) = self.procs[p].machine.as_mut() {
            m.handle_reply(local, id, reply);
        }
        self.drain(p);
    }

    fn op_timeout(&mut self, index: usize) {
        let state = &self.ops[index];
        let p = state.proc;
        if state.done
            || state.incarnation != self.procs[p].incarnation
            || self.procs[p].machine.is_none()
        {
            return;
        }
        if self.procs[p].paused_until.is_some() {
            self.procs[p].held.push(Held::Timeout(index));
            return;
        }
        if matches!(self.history.ops[index].op, StoreOp::Push(_)) {
            // A push receive still waiting is withdrawn: it must not take a message after
            // its caller gave up on it.
            self.receive_waits.retain(|i| *i != index);
        }
        let state = &self.ops[index];
        if let Some(session) = state.session {
            // The driver discards a connection whose statement timed out: PostgreSQL rolls
            // back its transaction; a statement still waiting for a lock is cancelled.
            if session == self.procs[p].session {
                self.reset_session(p);
            }
        }
        self.complete(index, Reply::Timeout);
    }

    fn reset_session(&mut self, p: usize) {
        let old = self.procs[p].session;
        let parked_here: Vec<usize> = self
            .parked
            .iter()
            .copied()
            .filter(|i| self.ops[*i].session == Some(old))
            .collect();
        for i in parked_here {
            self.parked.retain(|x| *x != i);
            self.waits.remove(&i);
            self.landed();
        }
        self.txn_ops.remove(&old);
        let releases = self.sql.lock_releases();
        self.sql.disconnect(old);
        self.procs[p].session = self.new_session();
        if self.sql.lock_releases() != releases {
            self.retry_parked();
        }
    }

    fn pause(&mut self, p: usize, duration: Duration) {
        let until = self.now + duration;
        let proc = &mut self.procs[p];
        if proc.machine.is_none() {
            return;
        }
        proc.paused_until = Some(proc.paused_until.map_or(until, |u| u.max(until)));
        let incarnation = proc.incarnation;
        self.record_fault(Fault::Pause {
            process: pid(p),
            duration,
        });
        self.schedule(until, Event::Resume(p, incarnation));
    }

    fn resume(&mut self, p: usize, incarnation: u32) {
        let proc = &mut self.procs[p];
        if proc.incarnation != incarnation || proc.paused_until.is_none_or(|u| u > self.now) {
            return;
        }
        proc.paused_until = None;
        let held = std::mem::take(&mut proc.held);
        for h in held {
            if self.procs[p].paused_until.is_some() {
                self.procs[p].held.push(h);
                continue;
            }
            match h {
                Held::Send(index, extra) => self.send(index, extra),
                Held::Reply(index) => {
                    let reply = self.history.ops[index]
                        .result
                        .clone()
                        .unwrap_or(Reply::Timeout);
                    self.complete(index, reply);
                }
                Held::Timeout(index) => self.op_timeout(index),
            }
        }
        if self.procs[p].paused_until.is_none()
            && !self.past_horizon
            && self.procs[p].timer_at.is_some_and(|t| t <= self.now)
        {
            self.fire_timer(p);
        } else {
            self.drain(p);
        }
    }

    fn crash(&mut self, p: usize, restart_after: Option<Duration>) {
        if self.procs[p].machine.is_none() {
            return;
        }
        self.record_fault(Fault::Crash { process: pid(p) });
        let proc = &mut self.procs[p];
        proc.machine = None;
        proc.paused_until = None;
        proc.timer_at = None;
        // Requests the process never sent, and replies it never read, die with it.
        proc.held.clear();
        // So do its subscriber connection, its push connections and its listeners.
        let sub = subscriber(p, proc.incarnation);
        self.redis.disconnect(sub);
        self.push.crashed(p);
        self.deliver_received();
        self.reset_session(p);
        // Its upstream connections close: its streams keep generating unread, and its reads
        // waiting for a frame fail now.
        self.upstream.reader_gone(p);
        self.wake_stream_reads(|proc, _| proc == p);
        if let Some(d) = restart_after {
            self.procs[p].restart_pending = true;
            self.schedule(self.now + d, Event::Restart(p));
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Partition { process, store } => {
                let p = self.proc_index(&process);
                self.partitions.insert((p, store));
                if store == StoreId::Redis {
                    let sub = subscriber(p, self.procs[p].incarnation);
                    self.redis.set_reachable(sub, false);
                }
                if store == StoreId::Push {
                    self.push.set_cut(p, true);
                    self.deliver_received();
                }
                self.record_fault(Fault::Partition {
                    process: pid(p),
                    store,
                });
            }
            Action::Heal { process, store } => {
                let p = self.proc_index(&process);
                self.partitions.remove(&(p, store));
                if store == StoreId::Redis {
                    let sub = subscriber(p, self.procs[p].incarnation);
                    self.redis.set_reachable(sub, true);
                }
                if store == StoreId::Push {
                    self.push.set_cut(p, false);
                }
                self.record_fault(Fault::Heal {
                    process: pid(p),
                    store,
                });
            }
            Action::Pause { process, duration } => {
                let p = self.proc_index(&process);
                self.pause(p, duration);
            }
            Action::Crash {
                process,
                restart_after,
            } => {
                let p = self.proc_index(&process);
                self.crash(p, restart_after);
            }
            Action::Failover => {
                let lost = self.redis.failover(self.now);
                self.settle_redis(lost);
                self.record_fault(Fault::Failover);
                self.deliver_received();
            }
            Action::Clock { process, skew } => {
                let p = self.proc_index(&process);
                self.procs[p].clock = skew;
                self.record_fault(Fault::Clock {
                    process: pid(p),
                    skew,
                });
                // A timer already asked for now falls due at another true time.
                if self.procs[p].machine.is_some() && self.procs[p].paused_until.is_none() {
                    self.drain(p);
                }
            }
            Action::RedisRestart => {
                let lost = self.redis.restart(self.now);
                self.settle_redis(lost);
                self.record_fault(Fault::RedisRestart);
                self.deliver_received();
            }
        }
    }

    /// What a receive (pub/sub or push) gets now, or `None` while nothing has arrived: the
    /// next message or event, or for pub/sub the news that the subscription is gone.
    fn received(&mut self, index: usize) -> Option<Reply> {
        let (p, incarnation) = (self.ops[index].proc, self.ops[index].incarnation);
        match self.history.ops[index].op {
            StoreOp::Push(_) => self.push.next_event((p, incarnation)).map(Reply::Push),
            _ => match self.redis.next_message(subscriber(p, incarnation)) {
                None => Some(Reply::PubSub(PubSubReply::Disconnected)),
                Some(Some((channel, payload))) => {
                    Some(Reply::PubSub(PubSubReply::Message { channel, payload }))
                }
                Some(None) => None,
            },
        }
    }

    /// A receive arrived: answered at once, or it waits up to `wait` for something.
    fn receive(&mut self, index: usize, wait: Duration) {
        match self.received(index) {
            Some(reply) => self.finish_apply(index, reply, true),
            None => {
                self.receive_waits.push(index);
                self.schedule(self.now + wait, Event::ReceiveExpires(index));
            }
        }
    }

    /// Answers every waiting receive that has something now (after a publish, a push send,
    /// a crash, a cut or a Redis failover or restart).
    fn deliver_received(&mut self) {
        if self.receive_waits.is_empty() {
            return;
        }
        for index in std::mem::take(&mut self.receive_waits) {
            match self.received(index) {
                Some(reply) => self.finish_apply(index, reply, true),
                None => self.receive_waits.push(index),
            }
        }
    }

    /// Stamps every pending Redis write durable at the instant the replica received it, or
    /// lost now if a failover or restart just lost it (`lost`: the writes not replicated).
    fn settle_redis(&mut self, lost: Option<LostWrites>) {
        for (last_write, index) in std::mem::take(&mut self.redis_pending) {
            let record = &mut self.history.ops[index];
            let Some(applied) = record.applied_at else {
                continue;
            };
            if lost.is_some_and(|l| last_write >= l.first) {
                record.lost_at = Some(self.now);
            } else if record.succeeded() {
                record.durable_at = Some(self.redis.replicated_at(applied));
            }
        }
    }

    fn record_fault(&mut self, fault: Fault) {
        self.stats.faults += 1;
        self.history.faults.push(FaultRecord {
            at: self.now,
            fault,
        });
    }
}

/// The id of process `p`'s subscriber connection in one incarnation.
fn subscriber(p: usize, incarnation: u32) -> u64 {
    ((p as u64) << 32) | u64::from(incarnation)
}

fn pid(index: usize) -> ProcessId {
    ProcessId(u16::try_from(index).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(feed: impl Fn(&mut StableHasher)) -> u64 {
        let mut hasher = StableHasher::default();
        feed(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn the_stable_hasher_is_independent_of_the_platform_and_tells_inputs_apart() {
        // A `usize` or `isize` hashes as its 64-bit value, whatever the platform's width.
        assert_eq!(hash(|h| h.write_usize(7)), hash(|h| h.write_u64(7)));
        assert_eq!(hash(|h| h.write_isize(-7)), hash(|h| h.write_i64(-7)));
        // Bytes are read as little-endian words.
        assert_eq!(
            hash(|h| h.write(&0x0102_0304_0506_0708_u64.to_le_bytes())),
            hash(|h| h.write_u64(0x0102_0304_0506_0708))
        );
        // A tail is never taken for a shorter one padded with zeros.
        assert_ne!(hash(|h| h.write(&[1])), hash(|h| h.write(&[1, 0])));
        assert_ne!(hash(|h| h.write(&[])), hash(|h| h.write(&[0])));
        // Order matters, and so does every word.
        assert_ne!(
            hash(|h| {
                h.write_u64(1);
                h.write_u64(2);
            }),
            hash(|h| {
                h.write_u64(2);
                h.write_u64(1);
            })
        );
        let values: BTreeSet<u64> = (0..1000_u64).map(|i| hash(|h| h.write_u64(i))).collect();
        assert_eq!(values.len(), 1000);
    }
}
