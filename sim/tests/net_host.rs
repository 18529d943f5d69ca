//! The store hosts of `sim::net` under turmoil: requests travel as frames, SQL lock waits
//! behave as in `sim::explore`, a dropped connection rolls its transaction back, and a session
//! idle inside a transaction for `IDLE_IN_TRANSACTION` is ended (a client that vanished during a
//! partition, its FIN dropped, cannot hold row locks forever). The upstream host streams
//! completions as `sim::explore`'s endpoints do (the same scenarios as `tests/world.rs`), and
//! the push balancer delivers in order and closes connections with a crashed or cut-off end.
#![cfg(feature = "net")]

use racelab_core::workorder::WORK_ORDERS;
use std::cell::RefCell;
use std::rc::Rc;

use racelab_core::{
    Assign, CmpOp, Cond, Duration, ProcessId, Reply, Row, SqlOp, SqlReply, SqlStmt, StoreOp, Value,
};
use racelab_sim::net::host::{IDLE_IN_TRANSACTION, StoreKinds, Stores, serve};
use racelab_sim::net::wire::{Request, Response, read_frame, write_frame};
use tokio::sync::Notify;

const PORT: u16 = 5432;

async fn call(stream: &mut turmoil::net::TcpStream, op: u64, body: SqlOp) -> Reply {
    send(stream, op, StoreOp::Sql(body)).await
}

fn bump(guard_epoch: i64) -> SqlOp {
    SqlOp::exec(SqlStmt::Update {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        guard: Cond::cmp("lease_epoch", CmpOp::Eq, Value::Int(guard_epoch)),
        set: vec![Assign::Add {
            column: "lease_epoch".into(),
            delta: 1,
        }],
    })
}

#[test]
fn a_conditional_update_waits_for_the_lock_holder_and_rechecks_its_guard() {
    let mut sim = turmoil::Builder::new().rng_seed(7).build();
    let stores = Rc::new(RefCell::new(Stores::new(
        Duration::ZERO,
        Duration::from_secs(30),
    )));
    stores.borrow_mut().sql.seed(
        WORK_ORDERS,
        "wo-1",
        Row::from([
            ("lease_epoch".to_string(), Value::Int(1)),
            ("qty".to_string(), Value::Int(0)),
        ]),
    );
    let host_stores = stores.clone();
    sim.host("sql", move || {
        serve(
            PORT,
            host_stores.clone(),
            StoreKinds::Sql,
            Rc::new(Notify::new()),
        )
    });
    let order = Rc::new(RefCell::new(Vec::new()));
    let a_order = order.clone();
    sim.client("a", async move {
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        assert_eq!(
            call(&mut s, 1, SqlOp::Begin).await,
            Reply::Sql(SqlReply::Ok)
        );
        let Reply::Sql(SqlReply::Rows(rows)) = call(&mut s, 2, bump(1)).await else {
            panic!("rows")
        };
        assert_eq!(rows.len(), 1);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        a_order.borrow_mut().push("a commits");
        assert_eq!(
            call(&mut s, 3, SqlOp::Commit).await,
            Reply::Sql(SqlReply::Committed)
        );
        Ok(())
    });
    let b_order = order.clone();
    sim.client("b", async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        let reply = call(&mut s, 1, bump(1)).await;
        b_order.borrow_mut().push("b's update returns");
        assert_eq!(
            reply,
            Reply::Sql(SqlReply::Rows(vec![])),
            "re-checked after a's commit"
        );
        Ok(())
    });
    sim.run().expect("the simulation completes");
    assert_eq!(*order.borrow(), vec!["a commits", "b's update returns"]);
    let applied = &stores.borrow().applied;
    let commit = applied
        .iter()
        .find(|a| a.reply == Reply::Sql(SqlReply::Committed))
        .expect("a commit");
    assert_eq!(
        commit.committed,
        vec![2],
        "the update became durable at the commit"
    );
}

#[test]
fn a_dropped_connection_rolls_back_its_transaction() {
    let mut sim = turmoil::Builder::new().rng_seed(3).build();
    let stores = Rc::new(RefCell::new(Stores::new(
        Duration::ZERO,
        Duration::from_secs(30),
    )));
    stores.borrow_mut().sql.seed(
        WORK_ORDERS,
        "wo-1",
        Row::from([("lease_epoch".to_string(), Value::Int(1))]),
    );
    let host_stores = stores.clone();
    sim.host("sql", move || {
        serve(
            PORT,
            host_stores.clone(),
            StoreKinds::Sql,
            Rc::new(Notify::new()),
        )
    });
    sim.client("a", async move {
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        call(&mut s, 1, SqlOp::Begin).await;
        call(&mut s, 2, bump(1)).await;
        drop(s);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        let Reply::Sql(SqlReply::Rows(rows)) = call(&mut s, 3, bump(1)).await else {
            panic!("rows")
        };
        assert_eq!(
            rows.len(),
            1,
            "the first bump was rolled back with its connection"
        );
        Ok(())
    });
    sim.run().expect("the simulation completes");
}

/// `qty += 1` on wo-1 under the epoch-1 guard.
fn bump_qty() -> SqlOp {
    SqlOp::exec(SqlStmt::Update {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        guard: Cond::cmp("lease_epoch", CmpOp::Eq, Value::Int(1)),
        set: vec![Assign::Add {
            column: "qty".into(),
            delta: 1,
        }],
    })
}

#[test]
fn a_transaction_orphaned_by_a_partition_is_rolled_back_after_the_idle_timeout() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(11)
        .tick_duration(std::time::Duration::from_millis(10))
        .simulation_duration(std::time::Duration::from_secs(600))
        .build();
    let stores = Rc::new(RefCell::new(Stores::new(
        Duration::ZERO,
        Duration::from_secs(30),
    )));
    stores.borrow_mut().sql.seed(
        WORK_ORDERS,
        "wo-1",
        Row::from([
            ("lease_epoch".to_string(), Value::Int(1)),
            ("qty".to_string(), Value::Int(0)),
        ]),
    );
    let host_stores = stores.clone();
    sim.host("sql", move || {
        serve(
            PORT,
            host_stores.clone(),
            StoreKinds::Sql,
            Rc::new(Notify::new()),
        )
    });
    sim.client("lost", async move {
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        call(&mut s, 1, SqlOp::Begin).await;
        call(&mut s, 2, bump_qty()).await;
        // Cut off: the FIN of the dropped connection never arrives.
        turmoil::partition("lost", "sql");
        drop(s);
        Ok(())
    });
    let waited = Rc::new(RefCell::new(None));
    let w = waited.clone();
    sim.client("other", async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let start = tokio::time::Instant::now();
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        let reply = call(&mut s, 1, bump_qty()).await;
        *w.borrow_mut() = Some((start.elapsed(), reply));
        Ok(())
    });
    sim.run().expect("the simulation completes");
    let (waited, reply) = waited
        .borrow_mut()
        .take()
        .expect("the other client finished");
    assert!(
        waited >= IDLE_IN_TRANSACTION - std::time::Duration::from_secs(2),
        "the lock was held until the idle timeout, waited {waited:?}"
    );
    assert!(
        waited <= IDLE_IN_TRANSACTION + std::time::Duration::from_secs(2),
        "then released, waited {waited:?}"
    );
    let Reply::Sql(SqlReply::Rows(rows)) = reply else {
        panic!("rows, got {reply:?}")
    };
    assert_eq!(
        rows.len(),
        1,
        "the orphan's update was rolled back, so the guard holds"
    );
}

fn lock_row(key: &str) -> SqlOp {
    SqlOp::exec(SqlStmt::Select {
        table: WORK_ORDERS,
        key: key.into(),
        for_update: true,
    })
}

#[test]
fn a_deadlock_is_answered_40p01_to_the_first_waiter_after_deadlock_timeout() {
    let mut sim = turmoil::Builder::new().rng_seed(5).build();
    let stores = Rc::new(RefCell::new(Stores::new(
        Duration::ZERO,
        Duration::from_secs(30),
    )));
    for key in ["wo-1", "wo-2"] {
        stores.borrow_mut().sql.seed(WORK_ORDERS, key, Row::new());
    }
    let host_stores = stores.clone();
    sim.host("sql", move || {
        serve(
            PORT,
            host_stores.clone(),
            StoreKinds::Sql,
            Rc::new(Notify::new()),
        )
    });
    let errors = Rc::new(RefCell::new(Vec::new()));
    let a_errors = errors.clone();
    sim.client("a", async move {
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        call(&mut s, 1, SqlOp::Begin).await;
        call(&mut s, 2, lock_row("wo-1")).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        // Waits for b from about 0.3 s; b closes the cycle at about 0.6 s.
        let sent = turmoil::sim_elapsed().unwrap_or_default();
        let reply = call(&mut s, 3, lock_row("wo-2")).await;
        let waited = turmoil::sim_elapsed().unwrap_or_default() - sent;
        a_errors.borrow_mut().push((waited, reply));
        assert_eq!(
            call(&mut s, 4, SqlOp::Commit).await,
            Reply::Sql(SqlReply::RolledBack)
        );
        Ok(())
    });
    sim.client("b", async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let mut s = turmoil::net::TcpStream::connect(("sql", PORT)).await?;
        call(&mut s, 1, SqlOp::Begin).await;
        call(&mut s, 2, lock_row("wo-2")).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let Reply::Sql(SqlReply::Rows(rows)) = call(&mut s, 3, lock_row("wo-1")).await else {
            panic!("b gets wo-1 once a's transaction failed")
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(
            call(&mut s, 4, SqlOp::Commit).await,
            Reply::Sql(SqlReply::Committed)
        );
        Ok(())
    });
    sim.run().expect("the simulation completes");
    let errors = errors.borrow();
    let (waited, reply) = &errors[0];
    assert_eq!(
        *reply,
        Reply::Sql(SqlReply::Error("40P01: deadlock detected".into()))
    );
    // 1 s of deadlock_timeout plus the request's and the reply's latencies.
    assert!(
        (std::time::Duration::from_secs(1)..std::time::Duration::from_millis(1_250))
            .contains(waited),
        "a's check ran 1 s after its wait began, it waited {waited:?}"
    );
}

async fn send(stream: &mut turmoil::net::TcpStream, op: u64, body: StoreOp) -> Reply {
    send_as(stream, ProcessId(0), op, body).await
}

/// Sends `body` as process `process` (incarnation 0) and returns the answer.
async fn send_as(
    stream: &mut turmoil::net::TcpStream,
    process: ProcessId,
    op: u64,
    body: StoreOp,
) -> Reply {
    let req = Request {
        op,
        client: format!("P{}", process.0),
        process,
        incarnation: 0,
        body,
    };
    write_frame(stream, &req).await.expect("sent");
    let resp: Response = read_frame(stream)
        .await
        .expect("a frame")
        .expect("not closed");
    assert_eq!(resp.op, op);
    resp.reply
}

/// Pub/sub over the Redis host: a receive waits for the next publish and gets it at once,
/// ends with no message after its wait, and a closed subscriber connection misses what is
/// published before it subscribes again.
#[test]
fn a_redis_host_delivers_pub_sub_messages_to_connected_subscribers_only() {
    use racelab_core::{KvOp, KvReply, PubSubOp, PubSubReply};
    let mut sim = turmoil::Builder::new().rng_seed(5).build();
    let stores = Rc::new(RefCell::new(Stores::new(
        Duration::ZERO,
        Duration::from_secs(30),
    )));
    let host_stores = stores.clone();
    sim.host("redis", move || {
        serve(
            PORT,
            host_stores.clone(),
            StoreKinds::Redis,
            Rc::new(Notify::new()),
        )
    });
    let subscribe = || {
        StoreOp::PubSub(PubSubOp::Subscribe {
            channels: vec!["ch".into()],
        })
    };
    let receive = |ms| {
        StoreOp::PubSub(PubSubOp::Receive {
            wait: Duration::from_ms(ms),
        })
    };
    let publish = |m: &str| {
        StoreOp::Kv(KvOp::Publish {
            channel: "ch".into(),
            message: m.into(),
        })
    };
    let message = |m: &str| {
        Reply::PubSub(PubSubReply::Message {
            channel: "ch".into(),
            payload: m.into(),
        })
    };
    sim.client("subscriber", async move {
        let mut s = turmoil::net::TcpStream::connect(("redis", PORT)).await?;
        assert_eq!(
            send(&mut s, 1, subscribe()).await,
            Reply::PubSub(PubSubReply::Subscribed { count: 1 })
        );
        // Waits; the publisher sends m1 at about 100 ms.
        assert_eq!(send(&mut s, 2, receive(5_000)).await, message("m1"));
        assert_eq!(
            send(&mut s, 3, receive(50)).await,
            Reply::PubSub(PubSubReply::NoMessage)
        );
        drop(s);
        // m2 is published while no connection is subscribed.
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let mut s = turmoil::net::TcpStream::connect(("redis", PORT)).await?;
        assert_eq!(
            send(&mut s, 4, receive(50)).await,
            Reply::PubSub(PubSubReply::Disconnected)
        );
        send(&mut s, 5, subscribe()).await;
        assert_eq!(send(&mut s, 6, receive(5_000)).await, message("m3"));
        Ok(())
    });
    sim.client("publisher", async move {
        let mut s = turmoil::net::TcpStream::connect(("redis", PORT)).await?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            send(&mut s, 1, publish("m1")).await,
            Reply::Kv(KvReply::Int(1))
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            send(&mut s, 2, publish("m2")).await,
            Reply::Kv(KvReply::Int(0))
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(
            send(&mut s, 3, publish("m3")).await,
            Reply::Kv(KvReply::Int(1))
        );
        Ok(())
    });
    sim.run().expect("the simulation completes");
}

// ---------------------------------------------------------------------------------------------
// The upstream host: streamed completions (the scenarios of `tests/world.rs`, over turmoil)

use racelab_core::{
    CallKind, ConnId, EndpointId, PushOp, PushReply, RequestId, StreamId, StreamReply, Timestamp,
    UpstreamOp, Usage,
};
use racelab_sim::explore::{EndpointScript, StreamScript, Upstream, UpstreamModel};
use racelab_sim::net::host::SharedStores;

const E1: EndpointId = EndpointId(1);
const R1: RequestId = RequestId(1);
const S1: StreamId = StreamId(1);

fn upstream(kind: CallKind) -> StoreOp {
    StoreOp::Upstream(UpstreamOp { endpoint: E1, kind })
}

fn open() -> StoreOp {
    upstream(CallKind::Open {
        request: R1,
        prompt_tokens: 10,
    })
}

fn read() -> StoreOp {
    upstream(CallKind::Next { stream: S1 })
}

fn cancel() -> StoreOp {
    upstream(CallKind::Cancel { stream: S1 })
}

fn usage_of_r1() -> StoreOp {
    upstream(CallKind::Usage { request: R1 })
}

fn usage(prompt_tokens: u32, completion_tokens: u32) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
    }
}

fn chunk(index: u32) -> StreamReply {
    StreamReply::Chunk { index, tokens: 7 }
}

/// E1 streams three chunks of 7 tokens, 100 ms apart, the first 100 ms after the open.
fn three_chunks() -> EndpointScript {
    EndpointScript {
        stream: StreamScript::uniform(3, 7, Duration::from_ms(100)),
        ..EndpointScript::default()
    }
}

/// A simulation with a host `name` serving `kinds` from fresh stores (E1 scripted by
/// `script`), 1 ms ticks and latencies so that times are read to the millisecond.
fn store_host(
    name: &str,
    kinds: StoreKinds,
    script: EndpointScript,
    seed: u64,
) -> (turmoil::Sim<'static>, SharedStores, Rc<Notify>) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(std::time::Duration::from_millis(1))
        .min_message_latency(std::time::Duration::from_millis(1))
        .max_message_latency(std::time::Duration::from_millis(1))
        .simulation_duration(std::time::Duration::from_secs(60))
        .build();
    let stores = Rc::new(RefCell::new(Stores::new(
        Duration::ZERO,
        Duration::from_secs(30),
    )));
    stores.borrow_mut().upstream = UpstreamModel::new(Upstream {
        endpoints: [(E1, script)].into(),
    });
    let wake = Rc::new(Notify::new());
    let (host_stores, host_wake) = (stores.clone(), wake.clone());
    sim.host(name, move || {
        serve(PORT, host_stores.clone(), kinds, host_wake.clone())
    });
    (sim, stores, wake)
}

/// The stream replies a client got, with the simulated time of each (in ms).
type Got = Rc<RefCell<Vec<(u64, Reply)>>>;

fn now_ms() -> u64 {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// A client that connects to the upstream host as process 0 and sends `ops` one after
/// another, keeping each answer with its arrival time.
fn client(sim: &mut turmoil::Sim<'static>, name: &str, start_ms: u64, ops: Vec<StoreOp>) -> Got {
    let got: Got = Rc::default();
    let g = got.clone();
    sim.client(name, async move {
        tokio::time::sleep(std::time::Duration::from_millis(start_ms)).await;
        let mut s = turmoil::net::TcpStream::connect(("upstream", PORT)).await?;
        for (i, op) in ops.into_iter().enumerate() {
            let reply = send(&mut s, i as u64, op).await;
            g.borrow_mut().push((now_ms(), reply));
        }
        Ok(())
    });
    got
}

fn stream_replies(got: &Got) -> Vec<StreamReply> {
    got.borrow()
        .iter()
        .map(|(_, r)| match r {
            Reply::Stream(s) => *s,
            other => panic!("not a stream reply: {other}"),
        })
        .collect()
}

/// When the host applied each operation of client `P0` (ms), by operation id.
fn applied_ms(stores: &SharedStores) -> Vec<(u64, u64)> {
    stores
        .borrow()
        .applied
        .iter()
        .map(|a| (a.op, a.at.as_ms()))
        .collect()
}

#[test]
fn an_upstream_host_streams_chunks_at_their_production_times_and_reports_the_usage() {
    let (mut sim, stores, _) = store_host("upstream", StoreKinds::Upstream, three_chunks(), 1);
    let ops = vec![
        open(),
        read(),
        read(),
        read(),
        read(),
        read(),
        usage_of_r1(),
    ];
    let got = client(&mut sim, "c", 0, ops);
    sim.run().expect("the simulation completes");
    let full = usage(10, 21);
    assert_eq!(
        stream_replies(&got),
        vec![
            StreamReply::Opened { stream: S1 },
            chunk(0),
            chunk(1),
            chunk(2),
            StreamReply::End { usage: Some(full) },
            StreamReply::Closed,
            StreamReply::Usage {
                usage: full,
                complete: true
            },
        ]
    );
    // Each read is applied when its chunk is produced: 100 ms after the open, then 100 ms
    // apart; the end comes with the last chunk.
    let applied = applied_ms(&stores);
    let opened_at = applied[0].1;
    let reads: Vec<u64> = applied[1..5].iter().map(|(_, at)| at - opened_at).collect();
    assert_eq!(reads[..3], [100, 200, 300], "{applied:?}");
    assert!(reads[3] >= 300, "{applied:?}");
    // The answer left the host at the chunk's time.
    let times: Vec<u64> = got.borrow().iter().map(|(at, _)| *at).collect();
    assert!(
        times[1] >= opened_at + 100 && times[1] <= opened_at + 110,
        "{times:?}"
    );
    assert_eq!(
        stores.borrow().upstream.final_usage(),
        [((E1, R1), full)].into()
    );
}

#[test]
fn a_stream_that_fails_mid_stream_ends_with_the_failure_and_bills_what_it_generated() {
    let mut script = three_chunks();
    script.stream.fail_after = Some(1);
    let (mut sim, stores, _) = store_host("upstream", StoreKinds::Upstream, script, 2);
    let got = client(&mut sim, "c", 0, vec![open(), read(), read(), read()]);
    sim.run().expect("the simulation completes");
    assert_eq!(
        stream_replies(&got)[1..],
        [
            chunk(0),
            StreamReply::Failed { after_chunks: 1 },
            StreamReply::Closed
        ]
    );
    let applied = applied_ms(&stores);
    assert_eq!(
        applied[2].1 - applied[0].1,
        200,
        "failed when chunk 1 was due"
    );
    assert!(!Reply::Stream(StreamReply::Failed { after_chunks: 1 }).is_success());
    assert_eq!(
        stores.borrow().upstream.final_usage()[&(E1, R1)],
        usage(10, 7)
    );
}

#[test]
fn a_cancel_before_the_first_chunk_delivers_no_chunk_and_bills_the_prompt_only() {
    let (mut sim, stores, _) = store_host("upstream", StoreKinds::Upstream, three_chunks(), 3);
    let got = client(
        &mut sim,
        "c",
        0,
        vec![open(), cancel(), read(), usage_of_r1()],
    );
    sim.run().expect("the simulation completes");
    assert_eq!(
        stream_replies(&got)[1..],
        [
            StreamReply::Cancelled,
            StreamReply::Cancelled,
            StreamReply::Usage {
                usage: usage(10, 0),
                complete: true
            }
        ]
    );
    assert_eq!(
        stores.borrow().upstream.final_usage()[&(E1, R1)],
        usage(10, 0)
    );
}

/// A read waiting at the host for chunk 0 is answered `Cancelled` as soon as a cancel of its
/// stream arrives (here on a second connection of the same process, as an HTTP/2 client
/// would send it), long before the chunk's time.
#[test]
fn a_cancel_answers_the_read_waiting_for_a_chunk_at_once() {
    let (mut sim, stores, _) = store_host("upstream", StoreKinds::Upstream, three_chunks(), 4);
    let got = client(&mut sim, "reader", 0, vec![open(), read()]);
    let canceller = client(&mut sim, "canceller", 50, vec![cancel()]);
    sim.run().expect("the simulation completes");
    assert_eq!(
        stream_replies(&got),
        [StreamReply::Opened { stream: S1 }, StreamReply::Cancelled]
    );
    assert_eq!(stream_replies(&canceller), [StreamReply::Cancelled]);
    let read_at = got.borrow()[1].0;
    let opened_at = applied_ms(&stores)[0].1;
    assert!(
        read_at < opened_at + 100,
        "answered at the cancel ({read_at} ms), not at chunk 0's time ({} ms)",
        opened_at + 100
    );
    assert_eq!(
        stores.borrow().upstream.final_usage()[&(E1, R1)],
        usage(10, 0)
    );
}

/// The reader's host crashes while its read waits for chunk 1: the read is applied `Closed`
/// at the crash (never answered), the stream keeps generating to its end, and the provider's
/// usage API reports all of it.
#[test]
fn a_reader_host_crash_mid_stream_leaves_the_stream_generating_to_its_end() {
    let (mut sim, stores, _) = store_host("upstream", StoreKinds::Upstream, three_chunks(), 5);
    let reader_got: Got = Rc::default();
    let g = reader_got.clone();
    sim.host("reader", move || {
        let g = g.clone();
        async move {
            let mut s = turmoil::net::TcpStream::connect(("upstream", PORT)).await?;
            for (i, op) in [open(), read(), read(), read()].into_iter().enumerate() {
                let reply = send(&mut s, i as u64, op).await;
                g.borrow_mut().push((now_ms(), reply));
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let auditor = client(&mut sim, "auditor", 1_000, vec![usage_of_r1()]);
    let mut crashed_at = None;
    while !sim.step().expect("a step") {
        if crashed_at.is_none() && sim.elapsed() >= std::time::Duration::from_millis(150) {
            sim.crash("reader");
            crashed_at = Some(now_of(&sim));
        }
    }
    let crashed_at = crashed_at.expect("crashed");
    assert_eq!(
        stream_replies(&reader_got),
        [StreamReply::Opened { stream: S1 }, chunk(0)],
        "the reader got chunk 0 before the crash"
    );
    let waiting = stores
        .borrow()
        .applied
        .iter()
        .find(|a| a.op == 2)
        .map(|a| (a.at.as_ms(), a.reply.clone()))
        .expect("the waiting read was applied");
    assert_eq!(waiting.1, Reply::Stream(StreamReply::Closed));
    assert!(
        waiting.0 >= crashed_at && waiting.0 <= crashed_at + 5,
        "applied at the crash ({crashed_at} ms), got {} ms",
        waiting.0
    );
    assert_eq!(
        stream_replies(&auditor),
        [StreamReply::Usage {
            usage: usage(10, 21),
            complete: true
        }],
        "the usage API reports the whole generation"
    );
    assert_eq!(
        stores.borrow().upstream.final_usage()[&(E1, R1)],
        usage(10, 21)
    );
}

fn now_of(sim: &turmoil::Sim<'_>) -> u64 {
    u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An open in a 429, 401 or 503 window is refused with its status (a 429 with the time to
/// the window's end as Retry-After): nothing opens, nothing is billed.
#[test]
fn a_refused_open_carries_its_status_and_a_429_its_retry_after() {
    let window_end = Timestamp::from_ms(5_000);
    let cases: [(EndpointScript, u16); 3] = [
        (
            EndpointScript {
                rate_limited: vec![(Timestamp::ZERO, window_end)],
                ..three_chunks()
            },
            429,
        ),
        (
            EndpointScript {
                revoked_at: Some(Timestamp::ZERO),
                ..three_chunks()
            },
            401,
        ),
        (
            EndpointScript {
                down: vec![(Timestamp::ZERO, window_end)],
                ..three_chunks()
            },
            503,
        ),
    ];
    for (script, status) in cases {
        let (mut sim, stores, _) = store_host("upstream", StoreKinds::Upstream, script, 6);
        let got = client(&mut sim, "c", 0, vec![open(), read(), usage_of_r1()]);
        sim.run().expect("the simulation completes");
        let opened_at = Timestamp::from_ms(applied_ms(&stores)[0].1);
        let retry_after = (status == 429).then(|| window_end.saturating_since(opened_at));
        assert_eq!(
            stream_replies(&got),
            vec![
                StreamReply::Refused {
                    status,
                    retry_after
                },
                StreamReply::Closed,
                StreamReply::UnknownRequest
            ]
        );
        assert!(
            stores.borrow().upstream.final_usage().is_empty(),
            "{status}: nothing generated, nothing billed"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The push balancer host

fn push(op: PushOp) -> StoreOp {
    StoreOp::Push(op)
}

fn listen() -> StoreOp {
    push(PushOp::Listen {
        service: "sched".into(),
    })
}

fn connect() -> StoreOp {
    push(PushOp::Connect {
        service: "sched".into(),
    })
}

/// A receive that waits less than the push clients' 1 s patience.
fn receive() -> StoreOp {
    push(PushOp::Receive {
        wait: Duration::from_ms(800),
    })
}

fn send_on_1(message: &str) -> StoreOp {
    push(PushOp::Send {
        conn: ConnId(1),
        message: message.into(),
    })
}

/// A push client: process `process` sends `ops` (each `(start no earlier than ms, op)`) over
/// one connection to the balancer, reconnecting after an operation that got no answer
/// within 1 s (it is lost: `None`).
fn push_client(
    sim: &mut turmoil::Sim<'static>,
    name: &str,
    process: u16,
    ops: Vec<(u64, StoreOp)>,
) -> Rc<RefCell<Vec<Option<Reply>>>> {
    let got: Rc<RefCell<Vec<Option<Reply>>>> = Rc::default();
    let g = got.clone();
    sim.host(name, move || {
        let (g, ops) = (g.clone(), ops.clone());
        async move {
            let mut s = None;
            for (i, (at, op)) in ops.into_iter().enumerate() {
                let wait = at.saturating_sub(now_ms());
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                if s.is_none() {
                    s = Some(turmoil::net::TcpStream::connect(("push", PORT)).await?);
                }
                let Some(conn) = s.as_mut() else { break };
                let call = send_as(conn, ProcessId(process), i as u64, op);
                match tokio::time::timeout(std::time::Duration::from_secs(1), call).await {
                    Ok(reply) => g.borrow_mut().push(Some(reply)),
                    Err(_) => {
                        g.borrow_mut().push(None);
                        s = None;
                    }
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    got
}

fn message(payload: &str) -> Option<Reply> {
    Some(Reply::Push(PushReply::Message {
        conn: ConnId(1),
        payload: payload.into(),
    }))
}

fn closed() -> Option<Reply> {
    Some(Reply::Push(PushReply::Closed { conn: ConnId(1) }))
}

/// A fault the test's world carries out: on the network, and as the balancer learns it.
type Fault = Box<dyn FnOnce(&mut turmoil::Sim<'static>, &mut Stores)>;

/// Steps `sim` until `until_ms`, carrying out each of `faults` at its time (on the network and
/// in the balancer's view, as the net world does) and waking what waits at the host.
fn run_with(
    mut sim: turmoil::Sim<'static>,
    stores: &SharedStores,
    wake: &Notify,
    until_ms: u64,
    mut faults: Vec<(u64, Fault)>,
) {
    while now_of(&sim) < until_ms {
        sim.step().expect("a step");
        while faults.first().is_some_and(|(at, _)| *at <= now_of(&sim)) {
            let (_, fault) = faults.remove(0);
            fault(&mut sim, &mut stores.borrow_mut());
            wake.notify_waiters();
        }
    }
}

/// Messages on a connection arrive in the order they were sent; one sent before the
/// partition of its sender from the balancer arrives, one sent across the partition is lost,
/// and both ends see the connection closed (the cut end once it is reachable again).
#[test]
fn a_push_partition_closes_the_connection_for_both_ends_and_loses_what_crosses_it() {
    let (mut sim, stores, wake) = store_host("push", StoreKinds::Push, three_chunks(), 7);
    let at_s = push_client(
        &mut sim,
        "s",
        0,
        vec![
            (0, listen()),
            (0, receive()),
            (0, receive()),
            (0, receive()),
            (0, receive()),
            (0, receive()),
        ],
    );
    let at_n = push_client(
        &mut sim,
        "n",
        1,
        vec![
            (10, connect()),
            (20, send_on_1("r1")),
            (30, send_on_1("r2")),
            (600, send_on_1("across the partition")),
            (3_000, send_on_1("after the heal")),
            (3_000, receive()),
        ],
    );
    let faults: Vec<(u64, Fault)> = vec![
        (
            500,
            Box::new(|sim, stores| {
                sim.partition("n", "push");
                stores.push_cut(1, true);
            }),
        ),
        (
            2_000,
            Box::new(|sim, stores| {
                sim.repair("n", "push");
                stores.push_cut(1, false);
            }),
        ),
    ];
    run_with(sim, &stores, &wake, 6_000, faults);
    let connected = Some(Reply::Push(PushReply::Connected {
        conn: ConnId(1),
        peer: ProcessId(0),
    }));
    let sent = Some(Reply::Push(PushReply::Sent));
    assert_eq!(
        *at_n.borrow(),
        vec![connected, sent.clone(), sent, None, closed(), closed()],
        "the send across the partition got no answer; after the heal the connection is closed"
    );
    let accepted = Some(Reply::Push(PushReply::Accepted {
        conn: ConnId(1),
        peer: ProcessId(1),
    }));
    let listening = Some(Reply::Push(PushReply::Listening));
    let nothing = Some(Reply::Push(PushReply::NoMessage));
    assert_eq!(
        at_s.borrow()[..5],
        [listening, accepted, message("r1"), message("r2"), closed()],
        "in order, then closed by the cut"
    );
    assert_eq!(at_s.borrow().get(5), Some(&nothing), "nothing crossed");
    let closed_at = stores
        .borrow()
        .applied
        .iter()
        .find(|a| a.client == "P0" && a.reply == Reply::Push(PushReply::Closed { conn: ConnId(1) }))
        .map(|a| a.at.as_ms());
    assert!(
        closed_at.is_some_and(|t| (500..510).contains(&t)),
        "the listener learned it at the cut: {closed_at:?}"
    );
}

/// A crash of one end closes the connection for the other at once.
#[test]
fn a_crash_of_one_push_end_closes_the_connection_for_the_other() {
    let (mut sim, stores, wake) = store_host("push", StoreKinds::Push, three_chunks(), 8);
    let at_s = push_client(
        &mut sim,
        "s",
        0,
        vec![
            (0, listen()),
            (0, receive()),
            (0, receive()),
            (0, receive()),
            (0, receive()),
        ],
    );
    let at_n = push_client(
        &mut sim,
        "n",
        1,
        vec![
            (10, connect()),
            (20, send_on_1("r1")),
            (30, send_on_1("r2")),
        ],
    );
    let faults: Vec<(u64, Fault)> = vec![(
        200,
        Box::new(|sim, stores| {
            sim.crash("n");
            stores.crashed(1);
        }),
    )];
    run_with(sim, &stores, &wake, 3_000, faults);
    assert_eq!(at_n.borrow().len(), 3);
    let at_s = at_s.borrow();
    assert_eq!(
        at_s[2..],
        [message("r1"), message("r2"), closed()],
        "in order, then closed by N's crash"
    );
    let closed_at = stores
        .borrow()
        .applied
        .iter()
        .find(|a| a.client == "P0" && a.reply == Reply::Push(PushReply::Closed { conn: ConnId(1) }))
        .map(|a| a.at.as_ms());
    assert!(
        closed_at.is_some_and(|t| (200..210).contains(&t)),
        "at the crash: {closed_at:?}"
    );
}
