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

// ---------------------------------------------------------------------------------------------
// R-000-07: the affinity record

mod affinity {
    use racelab_core::route::affinity::oracle::{
        A1, A2, A3, A4, FAILOVER_RETRY, FOREIGN_CLEAR_REFUSED, STALE_WRITE_REFUSED, affinity,
    };
    use racelab_core::route::affinity::{AffinityTag, RequestRef, affinity_key, bandit_key};
    use racelab_core::{
        CallKind, EndpointId, Fault, FaultRecord, History, KvOp, KvReply, OpId, OpRecord,
        ProcessId, Reply, ScriptName, StoreOp, Tag, Timestamp, UpstreamOp, UpstreamReply,
    };

    const E1: EndpointId = EndpointId(1);
    const E2: EndpointId = EndpointId(2);

    fn r(seq: u64) -> RequestRef {
        RequestRef {
            seq,
            incarnation: 0,
        }
    }

    fn history() -> History {
        History {
            process_names: vec![(ProcessId(1), "R1".into()), (ProcessId(2), "R2".into())],
            ..History::default()
        }
    }

    fn push(
        h: &mut History,
        seq: u64,
        tag: AffinityTag,
        op: StoreOp,
        reply: Reply,
        at: u64,
    ) -> usize {
        let at = Timestamp::from_ms(at);
        let n = h.ops.len();
        h.ops.push(OpRecord {
            process: ProcessId(seq as u16),
            id: OpId(n as u64 + 1),
            tag: Tag::new(tag),
            op,
            invoked_at: at,
            applied_at: Some(at),
            durable_at: Some(at),
            lost_at: None,
            result: Some(reply),
            completed_at: Some(at),
            timed_out: false,
        });
        n
    }

    fn attempt(h: &mut History, seq: u64, n: u32, e: EndpointId, status: u16, at: u64) {
        let tag = AffinityTag::Attempt {
            request: r(seq),
            n,
            endpoint: e,
        };
        let op = StoreOp::Upstream(UpstreamOp {
            endpoint: e,
            kind: CallKind::Request {
                stream: racelab_core::Duration::ZERO,
            },
        });
        push(
            h,
            seq,
            tag,
            op,
            Reply::Upstream(UpstreamReply { status }),
            at,
        );
    }

    /// A versioned write (`set_if_newer`) answering `wrote`.
    fn set(h: &mut History, seq: u64, e: EndpointId, wrote: bool, at: u64) -> usize {
        let tag = AffinityTag::Set {
            request: r(seq),
            endpoint: e,
        };
        let op = StoreOp::Kv(KvOp::Script {
            script: ScriptName::SetIfNewer,
            keys: vec![affinity_key("S")],
            args: vec![seq.to_string(), "upstream".into(), e.to_string()],
        });
        push(
            h,
            seq,
            tag,
            op,
            Reply::Kv(KvReply::Int(i64::from(wrote))),
            at,
        )
    }

    /// A plain `DEL` answering how many keys it removed.
    fn clear(h: &mut History, seq: u64, e: EndpointId, removed: bool, at: u64) -> usize {
        let tag = AffinityTag::Clear {
            request: r(seq),
            endpoint: e,
        };
        let op = StoreOp::Kv(KvOp::Del {
            key: affinity_key("S"),
        });
        push(
            h,
            seq,
            tag,
            op,
            Reply::Kv(KvReply::Int(i64::from(removed))),
            at,
        )
    }

    fn credit(h: &mut History, seq: u64, n: u32, e: EndpointId, at: u64) {
        let tag = AffinityTag::Credit {
            request: r(seq),
            n,
            endpoint: e,
        };
        let op = StoreOp::Kv(KvOp::HIncrBy {
            key: bandit_key(e),
            field: "ok".into(),
            delta: 1,
        });
        push(h, seq, tag, op, Reply::Kv(KvReply::Int(1)), at);
    }

    #[test]
    fn a1_flags_an_affinity_written_for_a_failed_attempt() {
        let mut h = history();
        attempt(&mut h, 1, 1, E1, 503, 10);
        attempt(&mut h, 1, 2, E2, 200, 20);
        set(&mut h, 1, E2, true, 30);
        let v = affinity(&h);
        assert!(v.holds(), "{}", v.explanation());
        assert_eq!(v.sometimes.get(FAILOVER_RETRY.name), Some(&1));
        // The late feedback of attempt 1 lands last.
        set(&mut h, 1, E1, true, 40);
        let v = affinity(&h);
        assert_eq!(v.broken(), [A1.name]);
        assert!(v.violations[0].explanation.contains("succeeded on E2"));
    }

    #[test]
    fn a2_flags_an_older_request_overwriting_a_newer_ones_record() {
        let mut h = history();
        attempt(&mut h, 2, 1, E2, 200, 10);
        set(&mut h, 2, E2, true, 20);
        attempt(&mut h, 1, 1, E1, 200, 30);
        // Refused: the protection, no violation.
        set(&mut h, 1, E1, false, 40);
        let v = affinity(&h);
        assert!(v.holds(), "{}", v.explanation());
        assert_eq!(v.sometimes.get(STALE_WRITE_REFUSED.name), Some(&1));
        set(&mut h, 1, E1, true, 50);
        assert_eq!(affinity(&h).broken(), [A2.name]);
    }

    #[test]
    fn a2_does_not_count_a_write_a_failover_lost_or_a_restart_erased() {
        let mut h = history();
        attempt(&mut h, 2, 1, E2, 200, 10);
        let lost = set(&mut h, 2, E2, true, 20);
        h.ops[lost].lost_at = Some(Timestamp::from_ms(25));
        attempt(&mut h, 1, 1, E1, 200, 30);
        set(&mut h, 1, E1, true, 40);
        assert!(affinity(&h).holds());
        h.ops[lost].lost_at = None;
        assert_eq!(affinity(&h).broken(), [A2.name]);
        h.faults.push(FaultRecord {
            at: Timestamp::from_ms(25),
            fault: Fault::RedisRestart,
        });
        assert!(affinity(&h).holds());
    }

    #[test]
    fn a3_flags_a_failure_clearing_another_upstreams_affinity() {
        let mut h = history();
        attempt(&mut h, 2, 1, E2, 200, 10);
        set(&mut h, 2, E2, true, 20);
        attempt(&mut h, 1, 1, E1, 503, 30);
        clear(&mut h, 1, E1, false, 40);
        let v = affinity(&h);
        assert!(v.holds(), "{}", v.explanation());
        assert_eq!(v.sometimes.get(FOREIGN_CLEAR_REFUSED.name), Some(&1));
        clear(&mut h, 1, E1, true, 50);
        let v = affinity(&h);
        assert_eq!(v.broken(), [A3.name]);
        assert!(v.violations[0].explanation.contains("named E2"));
    }

    #[test]
    fn a4_flags_a_credit_to_the_wrong_upstream_or_twice() {
        let mut h = history();
        attempt(&mut h, 1, 1, E1, 503, 10);
        credit(&mut h, 1, 1, E1, 15);
        assert!(affinity(&h).holds());
        credit(&mut h, 1, 1, E1, 16);
        assert_eq!(affinity(&h).broken(), [A4.name]);
        let mut h = history();
        attempt(&mut h, 1, 1, E1, 503, 10);
        attempt(&mut h, 1, 2, E2, 200, 20);
        credit(&mut h, 1, 1, E2, 21);
        assert_eq!(affinity(&h).broken(), [A4.name]);
    }

    #[test]
    fn the_versioned_compare_and_delete_clears_only_its_own_upstream_and_no_newer_record() {
        use racelab_core::KvView;
        use std::collections::BTreeMap;
        #[derive(Default)]
        struct Hash(BTreeMap<String, String>);
        impl KvView for Hash {
            fn call(&mut self, op: &KvOp) -> KvReply {
                match op {
                    KvOp::HGet { field, .. } => self
                        .0
                        .get(field)
                        .cloned()
                        .map_or(KvReply::Nil, KvReply::Bulk),
                    KvOp::HSet { pairs, .. } => {
                        for (f, v) in pairs {
                            self.0.insert(f.clone(), v.clone());
                        }
                        KvReply::Int(0)
                    }
                    KvOp::Del { .. } => {
                        let had = !self.0.is_empty();
                        self.0.clear();
                        KvReply::Int(i64::from(had))
                    }
                    _ => KvReply::Error("ERR".into()),
                }
            }
        }
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let key = s(&["aff:S"]);
        let cdv = ScriptName::CompareAndDeleteVersioned;
        let mut kv = Hash::default();
        assert_eq!(
            cdv.run(&mut kv, &key, &s(&["upstream", "E1", "3"])),
            KvReply::Int(0)
        );
        ScriptName::SetIfNewer.run(&mut kv, &key, &s(&["2", "upstream", "E2"]));
        // Another upstream, or a newer record: kept.
        assert_eq!(
            cdv.run(&mut kv, &key, &s(&["upstream", "E1", "3"])),
            KvReply::Int(0)
        );
        assert_eq!(
            cdv.run(&mut kv, &key, &s(&["upstream", "E2", "1"])),
            KvReply::Int(0)
        );
        assert_eq!(kv.0.get("upstream").map(String::as_str), Some("E2"));
        // A bad version is an error before any write.
        assert!(matches!(
            cdv.run(&mut kv, &key, &s(&["upstream", "E2", "x"])),
            KvReply::Error(_)
        ));
        assert!(matches!(
            cdv.run(&mut kv, &key, &s(&["upstream", "E2"])),
            KvReply::Error(_)
        ));
        // Its own upstream with a version at most the caller's: deleted.
        assert_eq!(
            cdv.run(&mut kv, &key, &s(&["upstream", "E2", "2"])),
            KvReply::Int(1)
        );
        assert!(kv.0.is_empty());
    }
}
