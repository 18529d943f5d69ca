//! The probers of documents 001 and 003 on their own: they run the configured number of
//! rounds and then go idle, and the recovery loop removes an endpoint from the failure queue
//! only after a successful probe.

use racelab_core::health::tasks::{ProbeConfig, ProbeRole, ProbeTask};
use racelab_core::health::{EndpointId, Generation, LocalOp, LocalResult};
use racelab_core::{
    CallKind, Duration, LocalReply, LocalValue, Machine, Outgoing, Reply, StoreOp, Timestamp,
    UpstreamReply,
};

const E1: EndpointId = EndpointId(1);

fn recovery(rounds: u32) -> ProbeTask {
    ProbeTask::new(ProbeConfig {
        role: ProbeRole::Recovery,
        interval: Duration::from_secs(1),
        rounds,
    })
}

fn local(result: LocalResult) -> Reply {
    Reply::Local(LocalReply {
        seq: 1,
        result: LocalValue::new(result),
    })
}

fn block(out: &Outgoing) -> Option<LocalOp> {
    match &out.op {
        StoreOp::Local(b) => b.get::<LocalOp>().cloned(),
        _ => None,
    }
}

/// One round of the recovery loop over an empty queue, at `now`.
fn empty_round(p: &mut ProbeTask, now: Timestamp) {
    p.handle_timeout(now);
    let list = p.poll_op().expect("the round lists the queue");
    assert_eq!(block(&list), Some(LocalOp::FqFailed));
    p.handle_reply(now, list.id, local(LocalResult::Endpoints(Vec::new())));
    assert!(p.poll_op().is_none(), "nothing to probe");
}

#[test]
fn a_prober_runs_its_rounds_one_interval_apart_then_goes_idle() {
    let mut p = recovery(2);
    p.handle_start(Timestamp::ZERO);
    assert_eq!(p.poll_timeout(), Some(Timestamp::from_ms(1_000)));
    empty_round(&mut p, Timestamp::from_ms(1_000));
    assert_eq!(
        p.poll_timeout(),
        Some(Timestamp::from_ms(2_000)),
        "a second round"
    );
    assert!(!p.is_idle());
    empty_round(&mut p, Timestamp::from_ms(2_000));
    assert_eq!(p.poll_timeout(), None, "two rounds, then done");
    assert!(p.is_idle());
}

#[test]
fn a_prober_with_no_rounds_never_wakes() {
    let mut p = recovery(0);
    p.handle_start(Timestamp::ZERO);
    assert_eq!(p.poll_timeout(), None);
    assert!(p.is_idle());
}

#[test]
fn the_recovery_loop_keeps_an_endpoint_whose_probe_failed() {
    for (status, removes) in [(503, false), (401, false), (200, true)] {
        let mut p = recovery(1);
        p.handle_start(Timestamp::ZERO);
        let now = Timestamp::from_ms(1_000);
        p.handle_timeout(now);
        let list = p.poll_op().expect("the queue is listed");
        p.handle_reply(now, list.id, local(LocalResult::Endpoints(vec![E1])));
        let begin = p.poll_op().expect("the probe begins");
        assert_eq!(block(&begin), Some(LocalOp::BeginProbe { endpoint: E1 }));
        let begun = LocalResult::Begun {
            generation: Generation(0),
            epoch: 0,
        };
        p.handle_reply(now, begin.id, local(begun));
        let call = p.poll_op().expect("the probe call");
        assert!(matches!(
            &call.op,
            StoreOp::Upstream(u) if u.endpoint == E1 && u.kind == CallKind::Probe { auth: false }
        ));
        p.handle_reply(now, call.id, Reply::Upstream(UpstreamReply { status }));
        let next = p.poll_op();
        let removed = next
            .as_ref()
            .and_then(block)
            .is_some_and(|op| matches!(op, LocalOp::FqRemove { endpoint: E1, .. }));
        assert_eq!(removed, removes, "after HTTP {status}: {next:?}");
        if !removes {
            assert!(next.is_none(), "HTTP {status}: the round ends");
            assert!(p.is_idle());
        }
    }
}
