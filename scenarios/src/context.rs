//! Document 000's request context (R-000-13): `upstream_call`, `billing` and the plugins of
//! one request share a `WorkflowContext` (one host's local memory, `core::context`), the
//! plugins `gather`ed in parallel with the upstream call. A plugin may write a key another
//! step owns (`ctx["usage"]` for its own purpose); `billing` reads `usage` once
//! `upstream_call` has finished and charges it.

use racelab_core::context::{
    Action, ContextMemory, FOREIGN_WRITE_REFUSED, I_CTX_ONCE, I_CTX_OWNER, I_CTX_READ, KEYS,
    PLUGINS_MAX, StepId, StepTask, WRITE_IN_WINDOW, context_integrity, coverage,
};
use racelab_core::{Duration, Machine, Property, Timestamp, Variant, Verdict};
use racelab_sim::explore::{FaultProfile, NetConfig, ProcessSpec, Ratio, Run, WorldSpec};

use crate::catalog::{Capture, Expectation, PerVariant, Race, Script, Workload};

pub(crate) fn races() -> Vec<Race> {
    vec![Race {
        id: "R-000-13",
        title: "WorkflowContext namespace key collisions: a plugin overwrites upstream_call's \
                usage before billing reads it",
        document: "000",
        invariant: "I-CTX: only a field's declared owner writes it, at most once per request, \
                    and every read after the owner finished gets the owner's write",
        docfix_verdict: "sufficient",
        sweep: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        scripts,
        profile,
        seed_budget: 50,
        properties: PROPS,
        net: false,
        build,
        judge,
    }]
}

const PROPS: &[Property] = &[
    I_CTX_OWNER,
    I_CTX_ONCE,
    I_CTX_READ,
    FOREIGN_WRITE_REFUSED,
    WRITE_IN_WINDOW,
];

/// The usage `upstream_call` records (output tokens).
const USAGE: i64 = 800;

/// One request's pipeline: when `upstream_call` returns, billing's polling period, and per
/// plugin when it writes and which key.
#[derive(Clone, Debug)]
struct Pipeline {
    upstream_ms: u64,
    poll_ms: u64,
    plugins: Vec<(u64, &'static str)>,
}

fn pipeline(name: &str) -> Pipeline {
    match name {
        // T1: usage = 800 at 10 ms; T2: the moderation plugin sets ctx["usage"] at 12 ms;
        // T3: billing reads at 15 ms.
        "plugin-overwrites-usage" => Pipeline {
            upstream_ms: 10,
            poll_ms: 5,
            plugins: vec![(12, "usage"), (3, "cache_hit")],
        },
        // T4 (gather): the plugin writes first, upstream_call last: the last writer decides.
        "gather-last-writer" => Pipeline {
            upstream_ms: 10,
            poll_ms: 5,
            plugins: vec![(4, "usage")],
        },
        _ => Pipeline {
            upstream_ms: 10,
            poll_ms: 5,
            plugins: vec![(12, "moderation"), (3, "cache_hit"), (8, "trace")],
        },
    }
}

/// 1-3 plugins; each writes its own key, `usage` (one in three) or another plugin's key.
fn random_pipeline(rng: &mut racelab_sim::explore::SimRng) -> Pipeline {
    let upstream_ms = rng.between(1, 40);
    let poll_ms = rng.between(1, 10);
    let n = rng.between(1, u64::from(PLUGINS_MAX));
    let plugins = (0..n)
        .map(|i| {
            let at = rng.below(50);
            let key = match rng.below(6) {
                0 | 1 => "usage",
                2 => KEYS[1 + rng.below(3) as usize],
                _ => KEYS[1 + i as usize],
            };
            (at, key)
        })
        .collect();
    Pipeline {
        upstream_ms,
        poll_ms,
        plugins,
    }
}

fn step(name: String, id: StepId, plan: Vec<Action>) -> ProcessSpec {
    ProcessSpec {
        host: 0,
        name,
        start_at: Timestamp::ZERO,
        fault_prone: true,
        factory: Box::new(move |_| Box::new(StepTask::new(id, plan.clone())) as Box<dyn Machine>),
    }
}

fn build(variant: Variant, workload: Workload<'_>) -> (WorldSpec, Capture) {
    let p = match workload {
        Workload::Scripted(name) => pipeline(name),
        Workload::Random(rng) => random_pipeline(rng),
    };
    let mut processes = vec![
        step(
            "U".into(),
            StepId::Upstream,
            vec![
                Action::Wait(Duration::from_ms(p.upstream_ms)),
                Action::Write {
                    key: "usage",
                    value: USAGE,
                },
                Action::Finish,
            ],
        ),
        step(
            "B".into(),
            StepId::Billing,
            vec![Action::Read {
                key: "usage",
                after: StepId::Upstream,
                poll: Duration::from_ms(p.poll_ms),
            }],
        ),
    ];
    for (i, (at, key)) in p.plugins.iter().enumerate() {
        let i = i as u8;
        processes.push(step(
            format!("P{i}"),
            StepId::Plugin(i),
            vec![
                Action::Wait(Duration::from_ms(*at)),
                Action::Write {
                    key,
                    value: 100 + i64::from(i),
                },
                Action::Finish,
            ],
        ));
    }
    let spec = WorldSpec {
        processes,
        sql_rows: Vec::new(),
        net: NetConfig::default(),
        replication_lag: Duration::ZERO,
        queue_lock: Duration::from_secs(30),
        time_limit: Timestamp::from_ms(60_000),
        horizon: None,
        local: Some(Box::new(ContextMemory::new(variant))),
        upstream: Default::default(),
    };
    (spec, Capture::none())
}

fn judge(run: &Run, _: &Capture) -> Verdict {
    let mut verdict = context_integrity(&run.history);
    coverage(&run.history, &mut verdict);
    verdict
}

fn scripts() -> Vec<Script> {
    vec![
        Script {
            name: "plugin-overwrites-usage",
            summary: "upstream_call sets usage = 800 at 10 ms; a plugin sets ctx[\"usage\"] for \
                      its own purpose at 12 ms; billing reads usage at 15 ms and charges it",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "gather-last-writer",
            summary: "a gathered plugin sets ctx[\"usage\"] at 4 ms, upstream_call sets it at \
                      10 ms: billing gets 800 only because upstream_call wrote last",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Fails, Expectation::Holds, Expectation::Holds]),
        },
        Script {
            name: "own-keys-only",
            summary: "every plugin writes only the key it owns: no variant collides",
            steps: Vec::new(),
            expect: PerVariant([Expectation::Holds, Expectation::Holds, Expectation::Holds]),
        },
    ]
}

fn profile() -> FaultProfile {
    FaultProfile {
        window: Duration::from_ms(60),
        latency: (Duration::from_ms(1), Duration::from_ms(5)),
        // An event loop blocked in a step (a slow plugin, a GC pause) shifts the steps'
        // interleaving.
        pauses_at: 2,
        pause_len: (Duration::from_ms(1), Duration::from_ms(30)),
        pause: Ratio::per_mille(100),
        ..FaultProfile::quiet()
    }
}
