//! The routing family's oracles (R-000-15) are fed known-bad histories and must flag them,
//! naming the property, and known-good ones that they must accept.

use racelab_core::health::Observation;
use racelab_core::route::oracle::{
    DOWN_SKIPPED, ENDPOINT_DOWN, P1, P2, PROBE_RECOVERED, STATS_OVERLAPPED, counters_exact,
    down_endpoints_avoided,
};
use racelab_core::route::pool::{PoolBlock, PoolResult, counter_key};
use racelab_core::route::{Attempt, AttemptId, Outcome, RouteTag};
use racelab_core::{
    EndpointId, Fault, FaultRecord, History, KvOp, KvReply, LocalBlock, LocalReply, LocalValue,
    OpId, OpRecord, ProcessId, Reply, SetCondition, StoreOp, Tag, Timestamp,
};

const G0: ProcessId = ProcessId(0);
const G1: ProcessId = ProcessId(1);
const P0: ProcessId = ProcessId(2);
const E1: EndpointId = EndpointId(1);
const E3: EndpointId = EndpointId(3);
const K: u32 = 2;

/// Builds a history of one or two gateway instances' blocks, one block per millisecond, each
/// stamped with the next sequence number.
struct Builder {
    h: History,
    seq: u64,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            h: History {
                process_names: vec![(G0, "G0R1".into()), (G1, "G1R1".into()), (P0, "G0P".into())],
                ..History::default()
            },
            seq: 0,
        }
    }

    fn push(&mut self, p: ProcessId, tag: RouteTag, op: StoreOp, result: Reply, at: u64) -> usize {
        let at = Timestamp::from_ms(at);
        let n = self.h.ops.len();
        self.h.ops.push(OpRecord {
            process: p,
            id: OpId(n as u64 + 1),
            tag: Tag::new(tag),
            op,
            invoked_at: at,
            applied_at: Some(at),
            durable_at: Some(at),
            lost_at: None,
            result: Some(result),
            completed_at: Some(at),
            timed_out: false,
        });
        n
    }

    fn block(
        &mut self,
        p: ProcessId,
        tag: RouteTag,
        block: PoolBlock,
        result: PoolResult,
    ) -> usize {
        self.seq += 1;
        let reply = Reply::Local(LocalReply {
            seq: self.seq,
            result: LocalValue::new(result),
        });
        let at = self.seq;
        self.push(p, tag, StoreOp::Local(LocalBlock::new(block)), reply, at)
    }

    /// Instance `i`'s process `p` picks `e` for a request (or polls a probe of it): attempt
    /// `id`.
    fn start(&mut self, p: ProcessId, i: u32, id: u64, e: EndpointId, probe: bool) {
        let now = Timestamp::from_ms(self.seq);
        let (tag, block) = if probe {
            (
                RouteTag::PollProbe { instance: i },
                PoolBlock::PollProbe { now },
            )
        } else {
            (
                RouteTag::Pick { instance: i },
                PoolBlock::Pick { now, seed: 7 },
            )
        };
        let attempt = Attempt {
            id: AttemptId(id),
            endpoint: e,
            probe,
        };
        self.block(p, tag, block, PoolResult::Attempt(attempt));
    }

    fn record(&mut self, p: ProcessId, i: u32, id: u64, e: EndpointId, obs: Observation) {
        let block = PoolBlock::Record {
            attempt: AttemptId(id),
            now: Timestamp::from_ms(self.seq),
            observation: obs,
        };
        let tag = RouteTag::Record {
            instance: i,
            endpoint: e,
        };
        self.block(p, tag, block, PoolResult::Recorded(e));
    }

    /// A complete attempt: start, then its outcome.
    fn attempt(&mut self, p: ProcessId, i: u32, id: u64, e: EndpointId, obs: Observation) {
        self.start(p, i, id, e, false);
        self.record(p, i, id, e, obs);
    }

    /// A counter write leaving `value`, applied at `at` ms.
    fn counter(&mut self, p: ProcessId, atomic: bool, value: i64, at: u64) -> usize {
        let key = counter_key(E1, Outcome::Ok);
        let tag = RouteTag::StatsWrite {
            endpoint: E1,
            outcome: Outcome::Ok,
        };
        if atomic {
            let op = StoreOp::Kv(KvOp::IncrBy { key, delta: 1 });
            self.push(p, tag, op, Reply::Kv(KvReply::Int(value)), at)
        } else {
            let op = StoreOp::Kv(KvOp::Set {
                key,
                value: value.to_string(),
                condition: SetCondition::Always,
                ttl: None,
            });
            self.push(p, tag, op, Reply::Kv(KvReply::Ok), at)
        }
    }
}

#[test]
fn p1_flags_a_request_routed_to_an_endpoint_with_k_consecutive_failures() {
    let mut b = Builder::new();
    b.attempt(G0, 0, 0, E3, Observation::ServerError);
    b.attempt(G0, 0, 1, E1, Observation::Success);
    b.attempt(G0, 0, 2, E3, Observation::Timeout);
    // E3 is DOWN at instance 0: a request to E1 is the gate's protection at work.
    b.attempt(G0, 0, 3, E1, Observation::Success);
    let v = down_endpoints_avoided(&b.h, K);
    assert!(v.holds(), "{}", v.explanation());
    assert_eq!(v.sometimes.get(ENDPOINT_DOWN.name), Some(&1));
    assert_eq!(v.sometimes.get(DOWN_SKIPPED.name), Some(&1));
    b.start(G0, 0, 4, E3, false);
    let v = down_endpoints_avoided(&b.h, K);
    assert_eq!(v.broken(), [P1.name]);
    assert!(
        v.violations[0].explanation.contains("E3"),
        "{}",
        v.explanation()
    );
    assert_eq!(v.violations[0].ops, [b.h.ops.len() - 1]);
}

#[test]
fn p1_allows_probes_and_a_fresh_probe_success_brings_the_endpoint_back() {
    let mut b = Builder::new();
    b.attempt(G0, 0, 0, E3, Observation::ServerError);
    b.attempt(G0, 0, 1, E3, Observation::ServerError);
    b.start(P0, 0, 2, E3, true);
    b.record(P0, 0, 2, E3, Observation::Success);
    b.attempt(G0, 0, 3, E3, Observation::Success);
    let v = down_endpoints_avoided(&b.h, K);
    assert!(v.holds(), "{}", v.explanation());
    assert_eq!(v.sometimes.get(PROBE_RECOVERED.name), Some(&1));
}

#[test]
fn p1_a_success_that_started_before_the_last_failure_does_not_clear_it() {
    let mut b = Builder::new();
    // Attempt 0 starts, then two failures of E3 are recorded, then attempt 0's success.
    b.start(G0, 0, 0, E3, false);
    b.attempt(G1, 0, 1, E3, Observation::ServerError);
    b.attempt(G1, 0, 2, E3, Observation::ServerError);
    b.record(G0, 0, 0, E3, Observation::Success);
    b.start(G0, 0, 3, E3, false);
    assert_eq!(down_endpoints_avoided(&b.h, K).broken(), [P1.name]);
}

#[test]
fn p1_a_401_is_down_at_once_and_only_a_probe_clears_it() {
    let mut b = Builder::new();
    b.attempt(G0, 0, 0, E3, Observation::Unauthorized);
    b.start(G0, 0, 1, E3, false);
    assert_eq!(down_endpoints_avoided(&b.h, K).broken(), [P1.name]);
    let mut b = Builder::new();
    b.attempt(G0, 0, 0, E3, Observation::Unauthorized);
    b.start(P0, 0, 1, E3, true);
    b.record(P0, 0, 1, E3, Observation::Success);
    b.attempt(G0, 0, 2, E3, Observation::Success);
    assert!(down_endpoints_avoided(&b.h, K).holds());
}

#[test]
fn p1_is_judged_per_instance() {
    let mut b = Builder::new();
    b.attempt(G1, 1, 0, E3, Observation::ServerError);
    b.attempt(G1, 1, 1, E3, Observation::ServerError);
    // Instance 0 has seen nothing of E3.
    b.attempt(G0, 0, 0, E3, Observation::Success);
    assert!(down_endpoints_avoided(&b.h, K).holds());
    b.start(G1, 1, 2, E3, false);
    assert_eq!(down_endpoints_avoided(&b.h, K).broken(), [P1.name]);
}

#[test]
fn p2_flags_a_read_modify_write_that_lost_an_update() {
    let mut b = Builder::new();
    b.counter(G0, false, 1, 10);
    b.counter(G1, false, 2, 20);
    assert!(counters_exact(&b.h).holds());
    // Both read 2, both write 3.
    b.counter(G0, false, 3, 30);
    let bad = b.counter(G1, false, 3, 31);
    let v = counters_exact(&b.h);
    assert_eq!(v.broken(), [P2.name]);
    assert_eq!(v.violations[0].ops, [bad]);
    assert!(v.violations[0].explanation.contains("route:ok:E1"));
}

#[test]
fn p2_accepts_increments_and_what_a_failover_or_restart_took_away() {
    let mut b = Builder::new();
    b.counter(G0, true, 1, 10);
    let lost = b.counter(G1, true, 2, 20);
    b.h.ops[lost].lost_at = Some(Timestamp::from_ms(25));
    b.h.faults.push(FaultRecord {
        at: Timestamp::from_ms(25),
        fault: Fault::Failover,
    });
    b.counter(G0, true, 2, 30);
    b.h.faults.push(FaultRecord {
        at: Timestamp::from_ms(40),
        fault: Fault::RedisRestart,
    });
    b.counter(G1, true, 1, 50);
    b.counter(G0, true, 2, 60);
    let v = counters_exact(&b.h);
    assert!(v.holds(), "{}", v.explanation());
    // Without the restart, the count going back to 1 is a lost update.
    b.h.faults.pop();
    assert_eq!(counters_exact(&b.h).broken(), [P2.name]);
}

#[test]
fn overlapping_updates_by_two_processes_are_counted() {
    let mut b = Builder::new();
    let a = b.counter(G0, true, 1, 10);
    b.counter(G1, true, 2, 12);
    assert_eq!(
        counters_exact(&b.h).sometimes.get(STATS_OVERLAPPED.name),
        None
    );
    b.h.ops[a].completed_at = Some(Timestamp::from_ms(15));
    assert_eq!(
        counters_exact(&b.h).sometimes.get(STATS_OVERLAPPED.name),
        Some(&1)
    );
}
