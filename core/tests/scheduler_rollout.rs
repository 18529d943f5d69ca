//! R-004-08's pieces: the oracle C1 fed known-bad and known-good histories, the versioned
//! script's refusal, and the rollout node's rewrite of its calls by the serving instance.

use racelab_core::scheduler::rollout::{
    C1, Config, ROLLOUT_T_DEAD, Rollout, RolloutNode, STALE_CONFIG_REFUSED, TtlSource, Ttls,
    config_coverage, one_ttl_source, versioned,
};
use racelab_core::scheduler::{L2, NodeConfig, SchedTag, binding_liveness};
use racelab_core::{
    Duration, History, KvOp, KvReply, KvView, Machine, OpId, OpRecord, ProcessId, Reply,
    ScriptName, StoreOp, Tag, Timestamp, Verdict,
};

const N1: ProcessId = ProcessId(1);

fn history() -> History {
    History {
        process_names: vec![(ProcessId(0), "S".into()), (N1, "N1".into())],
        ..History::default()
    }
}

/// A kept script call applied at `at_s` seconds.
fn push(h: &mut History, tag: Tag, script: ScriptName, args: &[&str], reply: KvReply, at_s: u64) {
    let at = Timestamp::from_ms(at_s * 1000);
    let n = h.ops.len() as u64;
    h.ops.push(OpRecord {
        process: N1,
        id: OpId(n + 1),
        tag,
        op: StoreOp::Kv(KvOp::Script {
            script,
            keys: vec!["sched:".into()],
            args: args.iter().map(|a| a.to_string()).collect(),
        }),
        invoked_at: at,
        applied_at: Some(at),
        durable_at: Some(at),
        lost_at: None,
        result: Some(Reply::Kv(reply)),
        completed_at: Some(at),
        timed_out: false,
    });
}

fn heartbeat() -> Tag {
    Tag::new(SchedTag::Heartbeat { node: "N1".into() })
}

#[test]
fn c1_flags_a_heartbeat_with_the_old_images_literals() {
    let mut h = history();
    let target = ["N1", "60000", "70000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedHeartbeat,
        &target,
        KvReply::Int(1),
        0,
    );
    assert!(one_ttl_source(&h, Ttls::TARGET).holds());
    let old = ["N1", "3600000", "3600000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedHeartbeat,
        &old,
        KvReply::Int(1),
        30,
    );
    let v = one_ttl_source(&h, Ttls::TARGET);
    assert_eq!(v.broken(), [C1.name]);
    assert!(
        v.violations[0].explanation.contains("N1"),
        "{}",
        v.explanation()
    );
}

#[test]
fn c1_flags_the_missed_pool_ttl_of_line_89() {
    let mut h = history();
    let edited = ["N1", "60000", "3600000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedHeartbeat,
        &edited,
        KvReply::Int(1),
        0,
    );
    assert_eq!(one_ttl_source(&h, Ttls::TARGET).broken(), [C1.name]);
}

#[test]
fn c1_reads_the_versioned_calls_ttls_and_ignores_what_wrote_nothing() {
    let mut h = history();
    // Refused for its version, a lost lease, an error: none wrote a TTL.
    let stale = ["N1", "1", "heartbeat", "3600000", "3600000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedVersioned,
        &stale,
        KvReply::Int(-2),
        0,
    );
    let old = ["N1", "3600000", "3600000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedHeartbeat,
        &old,
        KvReply::Int(-1),
        1,
    );
    let error = KvReply::Error("ERR x".into());
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedHeartbeat,
        &old,
        error,
        2,
    );
    let fresh = ["N1", "2", "heartbeat", "60000", "70000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedVersioned,
        &fresh,
        KvReply::Int(1),
        3,
    );
    assert!(one_ttl_source(&h, Ttls::TARGET).holds());
    let mut v = Verdict::default();
    config_coverage(&h, &mut v);
    assert_eq!(v.sometimes.get(STALE_CONFIG_REFUSED.name), Some(&1));
    // A versioned call that wrote stale TTLs is flagged.
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedVersioned,
        &stale,
        KvReply::Int(1),
        4,
    );
    assert_eq!(one_ttl_source(&h, Ttls::TARGET).broken(), [C1.name]);
}

#[test]
fn l2_does_not_count_a_refused_heartbeat_as_a_beat() {
    let mut h = history();
    let ok = ["N1", "2", "register", "60000", "70000", "1"];
    let reg = Tag::new(SchedTag::Register { node: "N1".into() });
    push(
        &mut h,
        reg,
        ScriptName::SchedVersioned,
        &ok,
        KvReply::Int(1),
        0,
    );
    let stale = ["N1", "1", "heartbeat", "3600000", "3600000", "1", "1"];
    push(
        &mut h,
        heartbeat(),
        ScriptName::SchedVersioned,
        &stale,
        KvReply::Int(-2),
        60,
    );
    let bind = Tag::new(SchedTag::Reap { job: "J1".into() });
    let bound = KvReply::Bulk("bound N1 1 0".into());
    push(&mut h, bind, ScriptName::SchedReap, &["J1", "1"], bound, 75);
    assert_eq!(binding_liveness(&h, ROLLOUT_T_DEAD).broken(), [L2.name]);
}

/// A store that answers `HGET` from one field and records every command.
struct Fake {
    version: Option<String>,
    calls: Vec<KvOp>,
}

impl KvView for Fake {
    fn call(&mut self, op: &KvOp) -> KvReply {
        self.calls.push(op.clone());
        match op {
            KvOp::HGet { key, field } if key == "sched:config" && field == "version" => {
                self.version.clone().map_or(KvReply::Nil, KvReply::Bulk)
            }
            KvOp::HGet { .. } => KvReply::Nil,
            KvOp::IncrBy { .. } => KvReply::Int(1),
            _ => KvReply::Int(1),
        }
    }
}

fn call(version: Option<&str>, args: &[&str]) -> (KvReply, Vec<KvOp>) {
    let mut fake = Fake {
        version: version.map(str::to_string),
        calls: Vec::new(),
    };
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let r = versioned(&mut fake, &["sched:".to_string()], &args);
    (r, fake.calls)
}

#[test]
fn the_versioned_script_refuses_another_version_before_any_write() {
    let args = ["N1", "1", "register", "3600000", "3600000", "1"];
    for published in [Some("2"), Some("01"), None] {
        let (r, calls) = call(published, &args);
        assert_eq!(r, KvReply::Int(-2), "published {published:?}");
        assert_eq!(calls.len(), 1, "only the version was read: {calls:?}");
    }
    // Leading zeros in the argument are the same number.
    let (r, calls) = call(Some("1"), &["N1", "001", "register", "60000", "70000", "1"]);
    assert_eq!(r, KvReply::Int(1));
    assert!(calls.contains(&KvOp::PExpire {
        key: "sched:node:N1".into(),
        ttl: Duration::from_secs(60),
    }));
    assert!(calls.contains(&KvOp::PExpire {
        key: "sched:pool".into(),
        ttl: Duration::from_secs(70),
    }));
    // Bad arguments are errors before the read.
    for bad in [
        &["N1", "x", "register"][..],
        &["N1", "1", "beat"],
        &["N1", "1"],
        &[""],
    ] {
        let (r, calls) = call(Some("1"), bad);
        assert!(matches!(r, KvReply::Error(_)), "{bad:?}: {r:?}");
        assert!(calls.is_empty(), "{bad:?}: {calls:?}");
    }
}

fn script_args(out: &racelab_core::Outgoing) -> (ScriptName, Vec<String>) {
    match &out.op {
        StoreOp::Kv(KvOp::Script { script, args, .. }) => (*script, args.clone()),
        other => panic!("not a script: {other:?}"),
    }
}

fn node(rollout: Rollout, source: TtlSource, offset: u32) -> RolloutNode {
    let config = NodeConfig {
        heartbeat: Duration::from_secs(30),
        node_ttl: Duration::from_secs(60),
        pool_ttl: Duration::from_secs(70),
        fenced: true,
    };
    RolloutNode::new(
        "N1",
        config,
        Duration::from_secs(5),
        rollout,
        source,
        offset,
    )
}

#[test]
fn each_call_carries_the_serving_instances_literals() {
    // One new instance in ten: the node's calls go to instances 9, 0, 1, ...
    let source = TtlSource::Literals {
        old: Ttls::CODE,
        new: Ttls::HAND_EDITED,
    };
    let mut n = node(Rollout::fixed(1), source, 9);
    n.handle_start(Timestamp::ZERO);
    let reg = n.poll_op().expect("the registration");
    assert_eq!(
        script_args(&reg),
        (
            ScriptName::SchedRegister,
            vec!["N1".into(), "3600000".into(), "3600000".into(), "1".into()]
        )
    );
    n.handle_reply(Timestamp::ZERO, reg.id, Reply::Kv(KvReply::Int(1)));
    let _poll = n.poll_op().expect("the poll after registering");
    n.handle_timeout(Timestamp::from_ms(30_000));
    let beat = n.poll_op();
    // The poll is still in flight: the heartbeat waits behind it.
    assert!(beat.is_none());
    n.handle_reply(
        Timestamp::from_ms(30_000),
        _poll.id,
        Reply::Kv(KvReply::Array(Vec::new())),
    );
    let beat = n.poll_op().expect("the heartbeat");
    let (script, args) = script_args(&beat);
    assert_eq!(script, ScriptName::SchedHeartbeat);
    assert_eq!(args[1..3], ["60000".to_string(), "3600000".to_string()]);
}

#[test]
fn a_refused_call_reads_the_published_configuration_and_is_sent_again() {
    let source = TtlSource::Published {
        current: Config::TARGET,
        stale: Config::BEFORE,
    };
    // No new instance: instance 3 has run since before the publication.
    let mut n = node(Rollout::fixed(0), source, 3);
    n.handle_start(Timestamp::ZERO);
    let first = n.poll_op().expect("the registration");
    let (script, args) = script_args(&first);
    assert_eq!(script, ScriptName::SchedVersioned);
    assert_eq!(args[..5], ["N1", "1", "register", "3600000", "3600000"]);
    n.handle_reply(Timestamp::ZERO, first.id, Reply::Kv(KvReply::Int(-2)));
    let read = n.poll_op().expect("the configuration read");
    assert!(matches!(read.op, StoreOp::Kv(KvOp::HGetAll { .. })));
    let pairs = vec![
        ("node_ttl_ms".into(), "60000".into()),
        ("pool_ttl_ms".into(), "70000".into()),
        ("version".into(), "2".into()),
    ];
    n.handle_reply(Timestamp::ZERO, read.id, Reply::Kv(KvReply::Pairs(pairs)));
    let again = n.poll_op().expect("the registration again");
    assert_eq!(again.tag.kind(), SchedTag::REGISTER);
    let (_, args) = script_args(&again);
    assert_eq!(args[..5], ["N1", "2", "register", "60000", "70000"]);
    n.handle_reply(Timestamp::ZERO, again.id, Reply::Kv(KvReply::Int(1)));
    // The node registered: it polls for its jobs.
    let poll = n.poll_op().expect("the poll");
    assert_eq!(poll.tag.kind(), SchedTag::POLL);
}
