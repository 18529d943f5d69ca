//! The store hosts of `sim::net` under turmoil: requests travel as frames, SQL lock waits
//! behave as in `sim::explore`, a dropped connection rolls its transaction back, and a session
//! idle inside a transaction for `IDLE_IN_TRANSACTION` is ended (a client that vanished during a
//! partition, its FIN dropped, cannot hold row locks forever).
#![cfg(feature = "net")]

use racelab_core::workorder::WORK_ORDERS;
use std::cell::RefCell;
use std::rc::Rc;

use racelab_core::{
    Assign, CmpOp, Cond, Duration, Reply, Row, SqlOp, SqlReply, SqlStmt, StoreOp, Value,
};
use racelab_sim::net::host::{IDLE_IN_TRANSACTION, StoreKinds, Stores, serve};
use racelab_sim::net::wire::{Request, Response, read_frame, write_frame};
use tokio::sync::Notify;

const PORT: u16 = 5432;

async fn call(stream: &mut turmoil::net::TcpStream, op: u64, body: SqlOp) -> Reply {
    send(stream, op, StoreOp::Sql(body)).await
}

fn bump(guard_epoch: i64) -> SqlOp {
    SqlOp::Exec(SqlStmt::Update {
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
    SqlOp::Exec(SqlStmt::Update {
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
    SqlOp::Exec(SqlStmt::Select {
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
    let req = Request {
        op,
        client: "test".into(),
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
