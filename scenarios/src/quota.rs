//! Document 000's quota family. R-000-02 (`budget_used` only in the in-memory Context) and
//! R-000-05 (`quota_check` and `billing` both deduct `daily_used`) share one world: gateway
//! requests (one process each, fault-prone) against the usage counters in SQL, and, for the
//! correct protocol, the reservation sweeper. The upstream call is a timer; a "day" is
//! 86,400,000 ms of virtual time and R-000-05's requests run in the last seconds of day 0.
//! R-000-04 (the Redis mirror of the balance) has its own world: a warmer, the requests, an
//! observer sampling the mirror every 100 ms, and for the correct protocol the reconciler.

use std::collections::BTreeMap;

use racelab_core::quota::oracle::{
    ABANDONED_VOIDED, ADMISSION_REFUSED, ADMISSIONS_OVERLAPPED, BUCKET_STRADDLED, CACHE_WARMED,
    FAILOVER_LANDED, I_COUNT, I_LIMIT, I_Q1, I_Q2, I_Q3, I_RESERVE, MIRROR_REPAIRED, QuotaEnd,
    RESERVATION_REFUSED, RESERVATIONS_RESOLVE, RESOLUTION_REFUSED, STALE_MIRROR_REFUSED,
    STALE_WARM_REFUSED, W1, W2, W3, WARM_LOCK_CONTENDED, admitted_within_balance, cache_warmed,
    counted_once, coverage, mirror_converges, mirror_coverage, mirror_monotone, no_defaults,
    reservations_balance, single_load, warm_coverage, within_limits,
};
use racelab_core::quota::{
    Counter, DocFixReading, MirrorConfig, MirrorRequest, Observer, QUOTA_BALANCE, QUOTA_USAGE,
    QuotaTag, Reconciler, Request, RequestConfig, Sweeper, WarmConfig, WarmRequest, Warmer,
};
use racelab_core::{
    Duration, Machine, Property, RequestId, Row, Timestamp, Value, Variant, Verdict,
};
use racelab_sim::explore::{
    self, FaultProfile, NetConfig, OpEffect, ProcessSpec, Ratio, Run, Scheduler, SimRng, Step,
    Target, WorldSpec,
};

use crate::acceptance::DocTest;
use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

/// A day of virtual time.
const DAY: Duration = Duration::from_ms(86_400_000);
/// The API key every request uses.
const KEY: &str = "k1";
/// How long the correct world runs its sweeper after the last request starts.
const SWEEP_FOR: Duration = Duration::from_secs(60);
/// How often the sweeper looks for expired reservations.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The family's races.
pub(crate) fn races() -> Vec<Race> {
    vec![
        Race {
            id: "R-000-02",
            title: "budget_used accumulates only in the in-memory Context, so the API-key budget \
                    limit is never enforced",
            document: "000",
            invariant: "I-BUDGET = I-LIMIT (used_0 + Σ committed cost <= budget_limit) and \
                        I-COUNT (budget_used == used_0 + Σ committed cost)",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_02,
            profile: profile_02,
            seed_budget: 500,
            properties: PROPS,
            net: true,
            build: build_02,
            judge,
        },
        Race {
            id: "R-000-04",
            title: "QuotaRepository: Redis hash synchronised only after DB commit (stale window, \
                    lost sync, out-of-order sync)",
            document: "000",
            invariant: "I-Q1: Σ cost of admitted requests <= initial balance; I-Q2: the mirror \
                        shows each committed version within 1 s and equals the row after a \
                        quiet second; I-Q3: the mirrored version never decreases",
            docfix_verdict: "insufficient (hook) / partially (Lua)",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_04,
            profile: profile_04,
            seed_budget: 500,
            properties: PROPS_04,
            net: true,
            build: build_04,
            judge: judge_mirror,
        },
        Race {
            id: "R-000-09",
            title: "Quota-cache warm-up race",
            document: "000",
            invariant: "W1: one database load per cold period while the loader is alive and \
                        timely; W2: a warm-up never installs an older version; W3: no request \
                        admits on the defaults of a cold cache; the cache ends warm",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_09,
            profile: profile_09,
            seed_budget: 500,
            properties: PROPS_09,
            net: true,
            build: build_09,
            judge: judge_warm,
        },
        Race {
            id: "R-000-05",
            title: "quota_check and billing both deduct daily_used / monthly_used",
            document: "000",
            invariant: "I-COUNT: daily_used(k, d) == Σ units of the requests admitted on day d, \
                        each once; I-LIMIT: daily_used + reserved <= daily_limit",
            docfix_verdict: "partially",
            sweep: PerVariant::DOCFIX_INSUFFICIENT,
            scripts: scripts_05,
            profile: profile_05,
            seed_budget: 500,
            properties: PROPS_05,
            net: true,
            build: build_05,
            judge,
        },
    ]
}

const PROPS: &[Property] = &[
    I_LIMIT,
    I_COUNT,
    I_RESERVE,
    RESERVATIONS_RESOLVE,
    RESERVATION_REFUSED,
    ABANDONED_VOIDED,
    RESOLUTION_REFUSED,
    ADMISSIONS_OVERLAPPED,
];

const PROPS_05: &[Property] = &[
    I_LIMIT,
    I_COUNT,
    I_RESERVE,
    RESERVATIONS_RESOLVE,
    RESERVATION_REFUSED,
    ABANDONED_VOIDED,
    RESOLUTION_REFUSED,
    ADMISSIONS_OVERLAPPED,
    BUCKET_STRADDLED,
];

// ---------------------------------------------------------------------------------------------
// The world

/// What the judge needs: each bucket's `used` before the run, and the counter.
#[derive(Clone, Debug)]
pub(crate) struct QuotaCapture {
    initial_used: BTreeMap<String, i64>,
    counter: Counter,
}

/// One world: the requests (start, config) and the buckets (name, used, limit).
pub(crate) struct Plan {
    pub(crate) variant: Variant,
    pub(crate) counter: Counter,
    pub(crate) requests: Vec<(Timestamp, RequestConfig)>,
    pub(crate) buckets: Vec<(String, i64, i64)>,
}

impl Plan {
    fn new(variant: Variant, counter: Counter) -> Plan {
        Plan {
            variant,
            counter,
            requests: Vec::new(),
            buckets: Vec::new(),
        }
    }

    /// Adds a request of `units` starting at `at`, whose upstream call takes `work_ms`.
    fn request(&mut self, at: Timestamp, units: i64, work_ms: u64) -> &mut RequestConfig {
        let n = self.requests.len() as u64 + 1;
        let mut cfg = RequestConfig::new(self.variant, self.counter, KEY, n, units);
        cfg.work = Duration::from_ms(work_ms);
        self.requests.push((at, cfg));
        &mut self.requests.last_mut().expect("Invariant: just pushed").1
    }

    fn bucket(&mut self, name: String, used: i64, limit: i64) {
        self.buckets.push((name, used, limit));
    }
}

/// The world of a plan: one process per request (`R1`, `R2`, ...), and for the correct
/// protocol the sweeper `S` and a horizon `SWEEP_FOR` after the last request starts.
pub(crate) fn world(plan: Plan) -> (WorldSpec, Capture) {
    let mut processes = Vec::new();
    let last = plan
        .requests
        .iter()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(Timestamp::ZERO);
    let first = plan
        .requests
        .iter()
        .map(|(at, _)| *at)
        .min()
        .unwrap_or(Timestamp::ZERO);
    for (i, (at, cfg)) in plan.requests.into_iter().enumerate() {
        processes.push(ProcessSpec {
            host: 0,
            name: format!("R{}", i + 1),
            start_at: at,
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(Request::new(cfg.clone(), inc)) as Box<dyn Machine>
            }),
        });
    }
    let correct = plan.variant == Variant::Correct;
    if correct {
        processes.push(ProcessSpec {
            host: 0,
            name: "S".into(),
            start_at: first,
            fault_prone: false,
            factory: Box::new(|_| Box::new(Sweeper::new(SWEEP_EVERY)) as Box<dyn Machine>),
        });
    }
    let mut initial_used = BTreeMap::new();
    let sql_rows = plan
        .buckets
        .into_iter()
        .map(|(name, used, limit)| {
            initial_used.insert(name.clone(), used);
            let row = Row::from([
                ("used".to_string(), Value::Int(used)),
                ("reserved".to_string(), Value::Int(0)),
                ("limit_units".to_string(), Value::Int(limit)),
            ]);
            (QUOTA_USAGE, name, row)
        })
        .collect();
    let horizon = last + SWEEP_FOR;
    let spec = WorldSpec {
        processes,
        sql_rows,
        // A gateway's statement timeout: a client whose reply is lost gives up, and its
        // transaction's locks go, within seconds.
        net: NetConfig {
            sql_timeout: Duration::from_secs(5),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(10),
        queue_lock: Duration::from_secs(30),
        time_limit: horizon + SWEEP_FOR,
        horizon: correct.then_some(horizon),
        local: None,
        upstream: Default::default(),
    };
    let capture = QuotaCapture {
        initial_used,
        counter: plan.counter,
    };
    (spec, Capture::new(capture))
}

fn judge(run: &Run, capture: &Capture) -> Verdict {
    let Some(capture) = capture.get::<QuotaCapture>() else {
        return Verdict::default();
    };
    let rows = run.sql_rows.iter().map(|(t, k, r)| (t, k.as_str(), r));
    let end = QuotaEnd::read(&capture.initial_used, rows, run.quiescent);
    let h = &run.history;
    within_limits(&end)
        .merge(counted_once(&end))
        .merge(reservations_balance(h, &end))
        .merge(coverage(h, &end, capture.counter))
}

fn at(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

/// The random faults of both races: pauses and crashes of the gateway requests, lost replies
/// and delays anywhere, within `window`.
fn profile(window: Duration) -> FaultProfile {
    FaultProfile {
        window,
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        pause: Ratio::per_mille(20),
        pause_len: (Duration::from_ms(500), Duration::from_secs(8)),
        delay: Ratio::per_mille(20),
        delay_len: (Duration::from_ms(10), Duration::from_secs(2)),
        drop_reply: Ratio::per_mille(20),
        crash: Ratio::per_mille(25),
        restart_after: (Duration::from_secs(1), Duration::from_secs(5)),
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-000-02

fn scripts_02() -> Vec<Script> {
    vec![
        Script {
            name: "three-requests",
            summary: "L = 10, every request costs 4; R1, R2 and R3 one second apart each start \
                      with a fresh Context (budget_used = 0) and pass: 12 > 10 after three",
            steps: vec![],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "overshoot",
            summary: "used = 8, L = 10, cost 2: R1.auth and R2.auth both read 8 and pass, then \
                      R1.bill (10) and R2.bill (12 > L)",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "crash-between-reserve-and-settle",
            summary: "R1 (cost 4, L = 10) crashes right after its admission commits, before \
                      billing; the correct protocol's sweeper voids the abandoned reservation",
            steps: vec![Step::on(
                "R1",
                QuotaTag::TX,
                2,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn build_02(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let mut plan = Plan::new(variant, Counter::Budget);
    match workload {
        Workload::Scripted("overshoot") => {
            plan.bucket(KEY.into(), 8, 10);
            plan.request(at(0), 2, 500);
            plan.request(at(0), 2, 500);
        }
        Workload::Scripted("crash-between-reserve-and-settle") => {
            plan.bucket(KEY.into(), 0, 10);
            plan.request(at(0), 4, 500);
        }
        Workload::Scripted(_) => {
            plan.bucket(KEY.into(), 0, 10);
            for i in 0..3 {
                plan.request(at(i * 1_000), 4, 500);
            }
        }
        Workload::Random(rng) => {
            let limit = i64::try_from(rng.between(6, 12)).unwrap_or(10);
            let used = i64::try_from(rng.below(6)).unwrap_or(0);
            plan.bucket(KEY.into(), used, limit);
            random_requests(&mut plan, rng, Timestamp::ZERO, 2_000, false);
        }
    }
    world(plan)
}

/// 2 to 5 requests starting within `spread_ms` of `from`, of 1 to 4 units (an actual cost
/// below the estimate when `partial`), each upstream call 100 ms to 1.5 s, one in six failing.
fn random_requests(
    plan: &mut Plan,
    rng: &mut SimRng,
    from: Timestamp,
    spread_ms: u64,
    partial: bool,
) {
    let n = rng.between(2, 5);
    for _ in 0..n {
        let start = from + Duration::from_ms(rng.below(spread_ms));
        let units = i64::try_from(rng.between(1, 4)).unwrap_or(1);
        let work = rng.between(100, 1_500);
        let fails = rng.below(6) == 0;
        let actual = if partial {
            i64::try_from(rng.between(1, units.unsigned_abs())).unwrap_or(units)
        } else {
            units
        };
        let cfg = plan.request(start, units, work);
        cfg.actual = actual;
        cfg.upstream_fails = fails;
    }
}

fn profile_02() -> FaultProfile {
    profile(Duration::from_secs(30))
}

// ---------------------------------------------------------------------------------------------
// R-000-05

/// The time of day at R-000-05's world origin: 30 s before midnight. The world models the
/// seconds around the day boundary, so that the fault window (and the swarm's pause, delay,
/// partition and clock-skew lengths, which scale with it) covers them and not a whole idle
/// day before them.
const DAY_FROM: Duration = Duration::from_ms(86_400_000 - 30_000);

/// R-000-05's daily counter.
const DAILY: Counter = Counter::Daily {
    day: DAY,
    from: DAY_FROM,
};

fn day_bucket(day: u64) -> String {
    format!("{KEY}:d{day}")
}

/// `ms` before the end of day 0.
fn before_midnight(ms: u64) -> Timestamp {
    Timestamp::from_ms(DAY.as_ms() - DAY_FROM.as_ms() - ms)
}

fn scripts_05() -> Vec<Script> {
    vec![
        Script {
            name: "one-request",
            summary: "a single request of 1 unit: quota_check adds 1 to daily_used and billing \
                      adds 1 again: daily_used = 2 for one unit",
            steps: vec![],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "T-1",
            summary: "limit 100, used 99: R1.check and R2.check both see 99 < 100 and pass; \
                      R1.bill makes 100 and R2.bill 101 > limit",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "T-2",
            summary: "R.check at 23:59:59.900 of day d (50 of 100 used) passes; its upstream \
                      call ends after midnight and R.bill counts it on d+1, which was full: \
                      admitted against d, counted against d+1, and d+1 over its limit",
            steps: vec![],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
    ]
}

fn build_05(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let mut plan = Plan::new(variant, DAILY);
    match workload {
        Workload::Scripted("T-1") => {
            plan.bucket(day_bucket(0), 99, 100);
            plan.bucket(day_bucket(1), 0, 100);
            plan.request(before_midnight(10_000), 1, 500);
            plan.request(before_midnight(10_000), 1, 500);
        }
        Workload::Scripted("T-2") => {
            plan.bucket(day_bucket(0), 50, 100);
            plan.bucket(day_bucket(1), 100, 100);
            plan.request(before_midnight(100), 1, 300);
        }
        Workload::Scripted(_) => {
            plan.bucket(day_bucket(0), 0, 100);
            plan.bucket(day_bucket(1), 0, 100);
            plan.request(before_midnight(10_000), 1, 500);
        }
        Workload::Random(rng) => {
            for day in 0..2 {
                let limit = i64::try_from(rng.between(4, 10)).unwrap_or(8);
                let used = i64::try_from(rng.below(limit.unsigned_abs())).unwrap_or(0);
                plan.bucket(day_bucket(day), used, limit);
            }
            random_requests(&mut plan, rng, before_midnight(3_000), 3_500, true);
        }
    }
    world(plan)
}

fn profile_05() -> FaultProfile {
    profile(Duration::from_secs(60))
}

// ---------------------------------------------------------------------------------------------
// The document's acceptance criteria (RACES.md 7.1)

/// Seeds (latencies only) each acceptance test runs under.
const AC_SEEDS: u64 = 5;

/// Document 000's acceptance tests of the quota counters.
pub(crate) fn doc_tests() -> Vec<DocTest> {
    vec![
        DocTest {
            id: "AC-000-3",
            name: "100 concurrent requests: the balance is calculated exactly",
            race: "R-000-02",
            setting: "100 concurrent requests of cost 3 against a budget of 100, once on the \
                  budget counter and once on a day's daily_used, each under 5 seeds of \
                  latencies: the balance (limit - used) equals the initial balance minus the \
                  committed charges and is never negative, exactly floor(100 / 3) = 33 \
                  requests are charged, and used + reserved never exceeds the limit",
            run: ac_000_3,
        },
        DocTest {
            id: "AC-000-1",
            name: "Redis and DB quota data reach eventual consistency within 1 s",
            race: "R-000-04",
            setting: "three requests (costs 10, 20, 5 against 100) on the mirror world with an \
                  observer sampling Redis every 100 ms, under a crash between commit and sync, \
                  a 2 s pause before the sync, a failover right after a sync, and 20 random \
                  seeds of R-000-04's faults; DocFix under both readings (after-commit hook, \
                  Lua deduct). Passes if every committed version shows in Redis within 1 s, \
                  the mirrored version never decreases, and after a quiet second Redis equals \
                  the row field by field",
            run: ac_000_1,
        },
    ]
}

/// AC-000-1 on one mirror world and scheduler: I-Q2 and I-Q3 hold.
fn mirror_consistent(variant: Variant, reading: DocFixReading, scheduler: &Scheduler) -> bool {
    let plan = MirrorPlan {
        variant,
        reading,
        balance: 100,
        requests: vec![(at(200), 10, 500), (at(250), 20, 500), (at(3_000), 5, 500)],
    };
    let (spec, _) = mirror_world(plan);
    let run = explore::run(spec, scheduler);
    let h = &run.history;
    run.quiescent && mirror_converges(h, (100, 0)).holds() && mirror_monotone(h, &I_Q3).holds()
}

fn ac_000_1(variant: Variant) -> bool {
    let crash = OpEffect::CrashAfterApply {
        restart_after: Some(Duration::from_secs(1)),
    };
    let cases = [
        (
            "crash-between-commit-and-sync",
            Step::on("R1", QuotaTag::DEDUCT, 1, crash),
        ),
        (
            "pause-before-sync",
            Step::on(
                "R1",
                QuotaTag::MIRROR,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(2)),
            ),
        ),
        (
            "failover-after-sync",
            Step::on("R1", QuotaTag::MIRROR, 1, OpEffect::FailoverAfterApply),
        ),
    ];
    let readings = match variant {
        Variant::DocFix => vec![DocFixReading::AfterCommitHook, DocFixReading::LuaDeduct],
        Variant::Buggy | Variant::Correct => vec![DocFixReading::AfterCommitHook],
    };
    readings.into_iter().all(|reading| {
        let scripted = cases.iter().all(|(name, step)| {
            let scheduler = Scheduler::Scripted {
                name: (*name).to_string(),
                steps: vec![step.clone()],
            };
            mirror_consistent(variant, reading, &scheduler)
        });
        scripted
            && (0..20).all(|seed| {
                let scheduler = Scheduler::Random {
                    seed,
                    faults: profile_04(),
                };
                mirror_consistent(variant, reading, &scheduler)
            })
    })
}

fn ac_000_3(variant: Variant) -> bool {
    const REQUESTS: u64 = 100;
    const COST: i64 = 3;
    const INITIAL: i64 = 100;
    let counters = [Counter::Budget, DAILY];
    counters.into_iter().all(|counter| {
        (0..AC_SEEDS).all(|seed| {
            let mut plan = Plan::new(variant, counter);
            let start = Timestamp::from_ms(DAY.as_ms() / 2);
            let bucket = counter.bucket(KEY, start);
            plan.bucket(bucket.clone(), 0, INITIAL);
            for _ in 0..REQUESTS {
                plan.request(start, COST, 500);
            }
            let (spec, capture) = world(plan);
            let scheduler = Scheduler::Random {
                seed,
                faults: FaultProfile::quiet(),
            };
            let run = explore::run(spec, &scheduler);
            let Some(capture) = capture.get::<QuotaCapture>() else {
                return false;
            };
            let rows = run.sql_rows.iter().map(|(t, k, r)| (t, k.as_str(), r));
            let end = QuotaEnd::read(&capture.initial_used, rows, run.quiescent);
            let Some(b) = end.buckets.get(&bucket) else {
                return false;
            };
            let balance = b.limit - b.used;
            run.quiescent
                && balance == INITIAL - end.charged(&bucket)
                && balance >= 0
                && end.charges() as i64 == INITIAL / COST
                && b.used + b.reserved <= b.limit
        })
    })
}

// ---------------------------------------------------------------------------------------------
// R-000-04: the Redis mirror of the balance

/// How long the mirror worlds run after the last request starts.
const MIRROR_FOR: Duration = Duration::from_secs(15);
/// How often the observer samples the mirror.
const OBSERVE_EVERY: Duration = Duration::from_ms(100);
/// How often the correct protocol's reconciler re-mirrors the row.
const RECONCILE_EVERY: Duration = Duration::from_ms(400);

/// What the R-000-04 judge needs: the initial row.
#[derive(Clone, Copy, Debug)]
struct MirrorCapture {
    balance: i64,
}

/// One mirror world: the initial balance and the requests (start, cost, upstream time).
struct MirrorPlan {
    variant: Variant,
    reading: DocFixReading,
    balance: i64,
    requests: Vec<(Timestamp, i64, u64)>,
}

/// The mirror world: the warmer `W` at 0, the requests `R1..`, the observer `O`, and for the
/// correct protocol the reconciler `C`; a horizon `MIRROR_FOR` after the last request.
fn mirror_world(plan: MirrorPlan) -> (WorldSpec, Capture) {
    let variant = plan.variant;
    let mut processes = vec![ProcessSpec {
        host: 0,
        name: "W".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: Box::new(move |_| Box::new(Warmer::new(variant, KEY)) as Box<dyn Machine>),
    }];
    let last = plan
        .requests
        .iter()
        .map(|(at, ..)| *at)
        .max()
        .unwrap_or(Timestamp::ZERO);
    for (i, (at, cost, work)) in plan.requests.iter().enumerate() {
        let cfg = MirrorConfig {
            variant,
            reading: plan.reading,
            account: KEY.into(),
            request: RequestId(i as u64 + 1),
            cost: *cost,
            work: Duration::from_ms(*work),
        };
        processes.push(ProcessSpec {
            host: 0,
            name: format!("R{}", i + 1),
            start_at: *at,
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(MirrorRequest::new(cfg.clone(), inc)) as Box<dyn Machine>
            }),
        });
    }
    processes.push(ProcessSpec {
        host: 0,
        name: "O".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: Box::new(|_| Box::new(Observer::new(KEY, OBSERVE_EVERY)) as Box<dyn Machine>),
    });
    if variant == Variant::Correct {
        processes.push(ProcessSpec {
            host: 0,
            name: "C".into(),
            start_at: Timestamp::ZERO,
            fault_prone: false,
            factory: Box::new(|_| {
                Box::new(Reconciler::new(KEY, RECONCILE_EVERY)) as Box<dyn Machine>
            }),
        });
    }
    let row = Row::from([
        ("balance".to_string(), Value::Int(plan.balance)),
        ("version".to_string(), Value::Int(0)),
    ]);
    let horizon = last + MIRROR_FOR;
    let spec = WorldSpec {
        processes,
        sql_rows: vec![(QUOTA_BALANCE, KEY.into(), row)],
        net: NetConfig {
            sql_timeout: Duration::from_secs(5),
            redis_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(30),
        time_limit: horizon + MIRROR_FOR,
        horizon: Some(horizon),
        local: None,
        upstream: Default::default(),
    };
    let capture = MirrorCapture {
        balance: plan.balance,
    };
    (spec, Capture::new(capture))
}

fn judge_mirror(run: &Run, capture: &Capture) -> Verdict {
    let Some(c) = capture.get::<MirrorCapture>() else {
        return Verdict::default();
    };
    let h = &run.history;
    admitted_within_balance(h, c.balance)
        .merge(mirror_converges(h, (c.balance, 0)))
        .merge(mirror_monotone(h, &I_Q3))
        .merge(mirror_coverage(h))
}

const PROPS_04: &[Property] = &[
    I_Q1,
    I_Q2,
    I_Q3,
    STALE_MIRROR_REFUSED,
    MIRROR_REPAIRED,
    ADMISSION_REFUSED,
    FAILOVER_LANDED,
];

fn scripts_04() -> Vec<Script> {
    let hook_fails = PerVariant::DOCFIX_INSUFFICIENT;
    let lua_only = PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]);
    vec![
        Script {
            name: "window",
            summary: "DB = Redis = 10, cost 10: R1 deducts in the DB (0) and commits; its HSET \
                      is delayed 1 s; R2 checks Redis, still sees 10, admits and calls the \
                      upstream: 20 admitted against 10",
            steps: vec![Step::on(
                "R1",
                QuotaTag::MIRROR,
                1,
                OpEffect::Delay(Duration::from_secs(1)),
            )],
            expect: hook_fails,
        },
        Script {
            name: "lost-sync",
            summary: "R1 commits its deduction and crashes before the HSET: Redis keeps 10 \
                      while the DB has 0, and R2 is admitted on it",
            steps: vec![Step::on(
                "R1",
                QuotaTag::DEDUCT,
                1,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: hook_fails,
        },
        Script {
            name: "reorder",
            summary: "R1 commits 90 (v1), R2 commits 80 (v2) and mirrors it; R1 pauses 2 s \
                      before its HSET, then writes 90 over 80: Redis 90 (v1) while the DB has \
                      80 (v2)",
            steps: vec![Step::on(
                "R1",
                QuotaTag::MIRROR,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(2)),
            )],
            expect: hook_fails,
        },
        Script {
            name: "L-1",
            summary: "Lua reading: R1's Lua deducts Redis 10 -> 0, and R1 crashes before the \
                      DB deduction or any compensation: Redis 0 while the DB keeps 10, for good",
            steps: vec![Step::on(
                "R1",
                QuotaTag::LUA_DEDUCT,
                1,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: lua_only,
        },
        Script {
            name: "L-2",
            summary: "Lua reading: R1's Lua deducts on the primary, which fails over before \
                      replicating it, and the DB commits 0: Redis is back to 10 and admits R2",
            steps: vec![Step::on(
                "R1",
                QuotaTag::LUA_DEDUCT,
                1,
                OpEffect::FailoverAfterApply,
            )],
            expect: lua_only,
        },
    ]
}

fn build_04(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let (reading, balance, requests) = match workload {
        Workload::Scripted("reorder") => (
            DocFixReading::AfterCommitHook,
            100,
            vec![(at(200), 10, 500), (at(250), 20, 500)],
        ),
        Workload::Scripted(name @ ("L-1" | "L-2")) => {
            let _ = name;
            (
                DocFixReading::LuaDeduct,
                10,
                vec![(at(200), 10, 500), (at(3_000), 10, 500)],
            )
        }
        Workload::Scripted(_) => (
            DocFixReading::AfterCommitHook,
            10,
            vec![(at(200), 10, 500), (at(900), 10, 500)],
        ),
        Workload::Random(rng) => {
            let reading = if rng.below(2) == 0 {
                DocFixReading::AfterCommitHook
            } else {
                DocFixReading::LuaDeduct
            };
            let balance = i64::try_from(rng.between(10, 30)).unwrap_or(20);
            let n = rng.between(2, 4);
            let requests = (0..n)
                .map(|_| {
                    let start = at(rng.between(200, 2_000));
                    let cost = i64::try_from(rng.between(3, 10)).unwrap_or(5);
                    (start, cost, rng.between(100, 800))
                })
                .collect();
            (reading, balance, requests)
        }
    };
    mirror_world(MirrorPlan {
        variant,
        reading,
        balance,
        requests,
    })
}

fn profile_04() -> FaultProfile {
    let requests = Target::processes(&["R1", "R2", "R3", "R4"]);
    FaultProfile {
        window: Duration::from_secs(10),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        pause: Ratio::per_mille(30),
        pause_len: (Duration::from_ms(500), Duration::from_secs(3)),
        delay: Ratio::per_mille(30),
        delay_len: (Duration::from_ms(10), Duration::from_ms(1_500)),
        drop_reply: Ratio::per_mille(15),
        crash: Ratio::per_mille(30),
        restart_after: (Duration::from_secs(1), Duration::from_secs(3)),
        failover: Ratio::per_mille(60),
        delay_on: requests.clone(),
        drop_reply_on: requests,
        failover_on: Target {
            kinds: vec![QuotaTag::MIRROR, QuotaTag::LUA_DEDUCT, QuotaTag::COMPENSATE],
            ..Target::ANY
        },
        ..FaultProfile::quiet()
    }
}

// ---------------------------------------------------------------------------------------------
// R-000-09: warming the mirror

/// How long the warm-up worlds run after the last process starts.
const WARM_FOR: Duration = Duration::from_secs(10);
/// How often the warm-up worlds' observer samples the cache.
const WARM_OBSERVE_EVERY: Duration = Duration::from_ms(200);
/// The balance of the warm-up worlds.
const WARM_BALANCE: i64 = 100;

/// One warm-up world: the requests (start, cost) that may warm the cold cache, and the
/// deductor's start (a request on R-000-04's path, which syncs the cache after its commit).
struct WarmPlan {
    variant: Variant,
    requests: Vec<(Timestamp, i64)>,
    deductor: Option<(Timestamp, i64)>,
}

/// The warm-up world: a cold cache, the requests `W1..`, the deductor `D`, the observer `O`,
/// and for the correct protocol the reconciler `C`; a horizon `WARM_FOR` after the last start.
fn warm_world(plan: WarmPlan) -> (WorldSpec, Capture) {
    let variant = plan.variant;
    let mut processes = Vec::new();
    let mut last = Timestamp::ZERO;
    for (i, (start, cost)) in plan.requests.iter().enumerate() {
        last = last.max(*start);
        let cfg = WarmConfig {
            variant,
            account: KEY.into(),
            request: RequestId(i as u64 + 1),
            cost: *cost,
            work: Duration::from_ms(200),
            lock_ttl: Duration::from_secs(2),
            poll_every: Duration::from_ms(100),
        };
        processes.push(ProcessSpec {
            host: 0,
            name: format!("W{}", i + 1),
            start_at: *start,
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(WarmRequest::new(cfg.clone(), inc)) as Box<dyn Machine>
            }),
        });
    }
    if let Some((start, cost)) = plan.deductor {
        last = last.max(start);
        let cfg = MirrorConfig {
            variant,
            reading: DocFixReading::AfterCommitHook,
            account: KEY.into(),
            request: RequestId(100),
            cost,
            work: Duration::from_ms(200),
        };
        processes.push(ProcessSpec {
            host: 0,
            name: "D".into(),
            start_at: start,
            fault_prone: true,
            factory: Box::new(move |inc| {
                Box::new(MirrorRequest::new(cfg.clone(), inc)) as Box<dyn Machine>
            }),
        });
    }
    processes.push(ProcessSpec {
        host: 0,
        name: "O".into(),
        start_at: Timestamp::ZERO,
        fault_prone: false,
        factory: Box::new(|_| Box::new(Observer::new(KEY, WARM_OBSERVE_EVERY)) as Box<dyn Machine>),
    });
    if variant == Variant::Correct {
        processes.push(ProcessSpec {
            host: 0,
            name: "C".into(),
            start_at: Timestamp::ZERO,
            fault_prone: false,
            factory: Box::new(|_| {
                Box::new(Reconciler::new(KEY, RECONCILE_EVERY)) as Box<dyn Machine>
            }),
        });
    }
    let row = Row::from([
        ("balance".to_string(), Value::Int(WARM_BALANCE)),
        ("version".to_string(), Value::Int(0)),
    ]);
    let horizon = last + WARM_FOR;
    let spec = WorldSpec {
        processes,
        sql_rows: vec![(QUOTA_BALANCE, KEY.into(), row)],
        net: NetConfig {
            sql_timeout: Duration::from_secs(5),
            redis_timeout: Duration::from_secs(1),
            ..NetConfig::default()
        },
        replication_lag: Duration::from_ms(50),
        queue_lock: Duration::from_secs(30),
        time_limit: horizon + WARM_FOR,
        horizon: Some(horizon),
        local: None,
        upstream: Default::default(),
    };
    (spec, Capture::none())
}

fn judge_warm(run: &Run, _capture: &Capture) -> Verdict {
    let h = &run.history;
    single_load(h)
        .merge(mirror_monotone(h, &W2))
        .merge(no_defaults(h))
        .merge(cache_warmed(h, (WARM_BALANCE, 0), run.quiescent))
        .merge(warm_coverage(h))
}

const PROPS_09: &[Property] = &[
    W1,
    W2,
    W3,
    CACHE_WARMED,
    WARM_LOCK_CONTENDED,
    STALE_WARM_REFUSED,
];

fn scripts_09() -> Vec<Script> {
    vec![
        Script {
            name: "stampede",
            summary: "four requests find the cache cold at once: each loads the row from the \
                      database",
            steps: vec![],
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "stale-resurrection",
            summary: "W1 loads balance 100 (v0) and pauses 2 s before writing it; D deducts 10 \
                      (90, v1), commits and syncs the cache; W1 then writes 100 over it",
            steps: vec![Step::on(
                "W1",
                QuotaTag::WARM_WRITE,
                1,
                OpEffect::PauseBeforeSend(Duration::from_secs(2)),
            )],
            expect: PerVariant::DOCFIX_INSUFFICIENT,
        },
        Script {
            name: "crash-holding-lock",
            summary: "W1 takes the warm-up lock and crashes; with SETNX and no TTL the lock \
                      stays for ever: W2 at 3 s loses, proceeds on the defaults, and nobody \
                      ever warms the cache",
            steps: vec![Step::on(
                "W1",
                QuotaTag::LOCK,
                1,
                OpEffect::CrashAfterApply {
                    restart_after: Some(Duration::from_secs(1)),
                },
            )],
            expect: PerVariant([Expectation::Holds, Expectation::Fails, Expectation::Holds]),
        },
    ]
}

fn build_09(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let plan = match workload {
        Workload::Scripted("stale-resurrection") => WarmPlan {
            variant,
            requests: vec![(at(0), 1)],
            deductor: Some((at(100), 10)),
        },
        Workload::Scripted("crash-holding-lock") => WarmPlan {
            variant,
            requests: vec![(at(0), 1), (at(3_000), 1)],
            deductor: None,
        },
        Workload::Scripted(_) => WarmPlan {
            variant,
            requests: (0..4).map(|_| (at(0), 1)).collect(),
            deductor: None,
        },
        Workload::Random(rng) => {
            let n = rng.between(2, 5);
            let requests = (0..n)
                .map(|_| {
                    (
                        at(rng.below(300)),
                        i64::try_from(rng.between(1, 5)).unwrap_or(1),
                    )
                })
                .collect();
            let deductor = Some((
                at(rng.below(400)),
                i64::try_from(rng.between(5, 20)).unwrap_or(10),
            ));
            WarmPlan {
                variant,
                requests,
                deductor,
            }
        }
    };
    warm_world(plan)
}

fn profile_09() -> FaultProfile {
    let requests = Target::processes(&["W1", "W2", "W3", "W4", "W5", "D"]);
    FaultProfile {
        window: Duration::from_secs(5),
        latency: (Duration::from_ms(1), Duration::from_ms(20)),
        pause: Ratio::per_mille(50),
        pause_len: (Duration::from_ms(200), Duration::from_secs(3)),
        delay: Ratio::per_mille(30),
        delay_len: (Duration::from_ms(10), Duration::from_secs(1)),
        crash: Ratio::per_mille(30),
        restart_after: (Duration::from_secs(1), Duration::from_secs(3)),
        delay_on: requests,
        ..FaultProfile::quiet()
    }
}
