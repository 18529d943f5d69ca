//! The proxy of documents 001 and 003 as a simulated world: request coroutines, the health
//! monitor, the failure queue's recovery loop (and, for the threaded and persistence
//! entries, threads and a saving process) over one host's local memory, with scripted
//! upstream endpoints.
//!
//! Every coroutine is a process of `sim::explore`; each of its synchronous blocks is one
//! local operation (atomic, no latency) and each `await` on the network is an upstream call
//! with a seeded latency, so the world interleaves tasks exactly where asyncio can.

use crate::catalog::Capture;
use racelab_core::Variant;
use racelab_core::health::tasks::{
    AddThread, BlockTask, ProbeConfig, ProbeRole, ProbeTask, RequestConfig, RequestTask, SaveStyle,
    SaverTask, Selection,
};
use racelab_core::health::{EndpointId, HealthConfig, HealthTag, LocalOp, LocalState, Observation};
use racelab_core::{Duration, Machine, Timestamp};
use racelab_sim::explore::{
    EndpointScript, FaultProfile, NetConfig, ProcessSpec, Ratio, Run, SimRng, Upstream, WorldSpec,
};

/// A coroutine's fixed synchronous blocks.
pub(crate) type Blocks = Vec<(LocalOp, HealthTag)>;

/// A request coroutine of the plan.
pub(crate) struct Req {
    pub(crate) name: String,
    pub(crate) start_ms: u64,
    pub(crate) host: u32,
    pub(crate) cfg: RequestConfig,
}

/// Everything a proxy world is made of.
pub(crate) struct ProxyPlan {
    /// The table's and queue's semantics.
    pub(crate) variant: Variant,
    pub(crate) endpoints: Vec<EndpointId>,
    pub(crate) upstream: Upstream,
    pub(crate) requests: Vec<Req>,
    /// The health monitor: (first round and interval in ms, rounds).
    pub(crate) monitor: Option<(u64, u32)>,
    /// The failure queue's recovery loop: (first round and interval in ms, rounds).
    pub(crate) recovery: Option<(u64, u32)>,
    /// Fixed coroutines: (name, start in ms, blocks).
    pub(crate) blocks: Vec<(String, u64, Blocks)>,
    /// Threads of a threaded port adding an endpoint: (name, start in ms, endpoint, split).
    pub(crate) threads: Vec<(String, u64, EndpointId, bool)>,
    /// The saving process of R-003-04: (endpoints it adds, how it saves).
    pub(crate) saver: Option<(Vec<EndpointId>, SaveStyle)>,
}

impl ProxyPlan {
    pub(crate) fn new(variant: Variant, endpoints: u32) -> ProxyPlan {
        ProxyPlan {
            variant,
            endpoints: (1..=endpoints).map(EndpointId).collect(),
            upstream: Upstream::default(),
            requests: Vec::new(),
            monitor: None,
            recovery: None,
            blocks: Vec::new(),
            threads: Vec::new(),
            saver: None,
        }
    }

    /// The upstream script of endpoint `e`.
    pub(crate) fn script(&mut self, e: u32) -> &mut EndpointScript {
        self.upstream.endpoints.entry(EndpointId(e)).or_default()
    }

    /// Adds a request coroutine named `name` on host 0.
    pub(crate) fn request(&mut self, name: &str, start_ms: u64, cfg: RequestConfig) {
        self.requests.push(Req {
            name: name.into(),
            start_ms,
            host: 0,
            cfg,
        });
    }
}

/// The request configuration a variant's code has: the documents' handler computes its
/// candidate list once; `Correct` selects before every attempt.
pub(crate) fn request_cfg(
    variant: Variant,
    stream_ms: u64,
    report_failures: bool,
) -> RequestConfig {
    RequestConfig {
        selection: if variant == Variant::Correct {
            Selection::EveryAttempt
        } else {
            Selection::ListAtStart
        },
        attempts: 3,
        stream: Duration::from_ms(stream_ms),
        report_failures,
        missed_await: None,
    }
}

pub(crate) fn ms(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

fn process(
    name: &str,
    start_ms: u64,
    host: u32,
    prone: bool,
    f: impl Fn(u32) -> Box<dyn Machine> + 'static,
) -> ProcessSpec {
    ProcessSpec {
        name: name.into(),
        start_at: ms(start_ms),
        fault_prone: prone,
        factory: Box::new(f),
        host,
    }
}

/// Builds the world.
/// The proxy memory of `host` at the end of a run.
pub(crate) fn host_state(run: &Run, host: u32) -> Option<&LocalState> {
    run.local.get(&host).and_then(|m| m.get::<LocalState>())
}

pub(crate) fn world(plan: ProxyPlan) -> (WorldSpec, Capture) {
    let mut processes = Vec::new();
    for r in plan.requests {
        let cfg = r.cfg;
        processes.push(process(&r.name, r.start_ms, r.host, false, move |_| {
            Box::new(RequestTask::new(cfg.clone()))
        }));
    }
    if let Some((interval, rounds)) = plan.monitor {
        let cfg = ProbeConfig {
            role: ProbeRole::Monitor {
                endpoints: plan.endpoints.clone(),
            },
            interval: Duration::from_ms(interval),
            rounds,
        };
        processes.push(process("HM", 0, 0, false, move |_| {
            Box::new(ProbeTask::new(cfg.clone()))
        }));
    }
    if let Some((interval, rounds)) = plan.recovery {
        let cfg = ProbeConfig {
            role: ProbeRole::Recovery,
            interval: Duration::from_ms(interval),
            rounds,
        };
        processes.push(process("FQR", 0, 0, false, move |_| {
            Box::new(ProbeTask::new(cfg.clone()))
        }));
    }
    for (name, start, blocks) in plan.blocks {
        processes.push(process(&name, start, 0, false, move |_| {
            Box::new(BlockTask::new(blocks.clone()))
        }));
    }
    for (name, start, endpoint, split) in plan.threads {
        processes.push(process(&name, start, 0, false, move |_| {
            Box::new(AddThread::new(endpoint, split))
        }));
    }
    if let Some((adds, style)) = plan.saver {
        processes.push(process("P", 0, 0, true, move |inc| {
            Box::new(SaverTask::new(adds.clone(), style, inc))
        }));
    }
    let spec = WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: NetConfig::default(),
        replication_lag: Duration::ZERO,
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(10 * 60 * 1000),
        horizon: None,
        local: Some(Box::new(LocalState::new(
            plan.variant,
            HealthConfig::default(),
            &plan.endpoints,
        ))),
        upstream: plan.upstream,
    };
    (spec, Capture::none())
}

/// A random proxy workload: 2-3 endpoints, one key revoked in the first 4 s, random 503
/// outages, rate limits and slow windows; 3-5 requests in the first 6 s, some streaming for
/// up to 5 s.
pub(crate) fn random_plan(variant: Variant, rng: &mut SimRng, report_failures: bool) -> ProxyPlan {
    let n = rng.between(2, 3) as u32;
    let mut plan = ProxyPlan::new(variant, n);
    let revoked = 1 + rng.below(u64::from(n)) as u32;
    plan.script(revoked).revoked_at = Some(ms(rng.below(4_000)));
    for e in 1..=n {
        if rng.below(2) == 0 {
            let from = rng.below(6_000);
            let to = from + rng.between(200, 3_000);
            plan.script(e).down.push((ms(from), ms(to)));
        }
        if rng.below(3) == 0 {
            let from = rng.below(6_000);
            let to = from + rng.between(200, 2_000);
            plan.script(e).rate_limited.push((ms(from), ms(to)));
        }
        if rng.below(3) == 0 {
            let from = rng.below(6_000);
            let to = from + rng.between(100, 1_000);
            let extra = Duration::from_ms(rng.between(500, 4_000));
            plan.script(e).slow.push((ms(from), ms(to), extra));
        }
    }
    let requests = rng.between(3, 5);
    for i in 1..=requests {
        let stream = if rng.below(3) == 0 {
            rng.between(1_000, 5_000)
        } else {
            rng.between(10, 300)
        };
        let start = rng.below(6_000);
        plan.request(
            &format!("R{i}"),
            start,
            request_cfg(variant, stream, report_failures),
        );
    }
    plan
}

/// The sweeps' faults: upstream calls are sometimes delayed past the proxy's 10 s timeout
/// or lose their answer (a timeout too); latencies 5-300 ms.
pub(crate) fn profile_timeouts() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        latency: (Duration::from_ms(5), Duration::from_ms(300)),
        delay: Ratio::per_mille(60),
        delay_len: (Duration::from_secs(1), Duration::from_secs(15)),
        drop_reply: Ratio::per_mille(30),
        ..FaultProfile::quiet()
    }
}

/// Only latencies (5-300 ms) are random.
pub(crate) fn profile_latency() -> FaultProfile {
    FaultProfile {
        window: Duration::from_secs(60),
        latency: (Duration::from_ms(5), Duration::from_ms(300)),
        ..FaultProfile::quiet()
    }
}

/// Which observation's call site misses `await` in each variant of R-001-03.
pub(crate) fn missed_await(variant: Variant) -> Option<Observation> {
    match variant {
        // The conversion to `async def` missed a listed site: the 401 path.
        Variant::Buggy => Some(Observation::Unauthorized),
        // Every listed site awaits; a site the list does not name (rate-limit handling)
        // does not, and nothing enforces it.
        Variant::DocFix => Some(Observation::RateLimited),
        // The update stays synchronous: nothing to await.
        Variant::Correct => None,
    }
}
