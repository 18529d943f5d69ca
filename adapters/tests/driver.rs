//! The driver's timeouts, retries and cancellation, and the clients' recovery, against real
//! servers behind the fault proxy.

mod common;

use racelab_core::workorder::APPLIED_SCANS;
use std::collections::VecDeque;
use std::time::Duration;

use racelab_adapters::{
    Clock, Completion, Control, DriveEnd, DriverConfig, FaultProxy, NoObserver, Observer, OwnRedis,
    PgSql, RedisKv, Stores, drive,
};
use racelab_core::{
    KvOp, KvReply, Machine, Note, OpId, Outgoing, Reply, Row, SetCondition, SqlOp, SqlReply,
    SqlStmt, StoreOp, Tag, Timestamp, Value,
};
use tokio::sync::watch;

/// A machine that performs a fixed list of operations one after the other and keeps the
/// replies.
struct Scripted {
    todo: VecDeque<StoreOp>,
    out: VecDeque<Outgoing>,
    waiting: bool,
    next: u64,
    replies: Vec<Reply>,
}

impl Scripted {
    fn new(ops: Vec<StoreOp>) -> Scripted {
        Scripted {
            todo: ops.into(),
            out: VecDeque::new(),
            waiting: false,
            next: 0,
            replies: Vec::new(),
        }
    }

    fn send_next(&mut self) {
        if let Some(op) = self.todo.pop_front() {
            self.next += 1;
            self.out.push_back(Outgoing {
                id: OpId(self.next),
                op,
                tag: Tag::plain(racelab_core::TagKind::new("read")),
            });
            self.waiting = true;
        }
    }
}

impl Machine for Scripted {
    fn handle_start(&mut self, _now: Timestamp) {
        self.send_next();
    }
    fn handle_reply(&mut self, _now: Timestamp, _op: OpId, reply: Reply) {
        self.replies.push(reply);
        self.waiting = false;
        self.send_next();
    }
    fn handle_timeout(&mut self, _now: Timestamp) {}
    fn poll_op(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }
    fn poll_note(&mut self) -> Option<Note> {
        None
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
    fn is_idle(&self) -> bool {
        !self.waiting && self.todo.is_empty()
    }
}

fn set(key: &str, value: &str) -> StoreOp {
    StoreOp::Kv(KvOp::Set {
        key: key.into(),
        value: value.into(),
        condition: SetCondition::Always,
        ttl: None,
    })
}

fn get(key: &str) -> StoreOp {
    StoreOp::Kv(KvOp::Get { key: key.into() })
}

fn quick(timeout_ms: u64) -> DriverConfig {
    DriverConfig {
        redis_timeout: Duration::from_millis(timeout_ms),
        sql_timeout: Duration::from_millis(timeout_ms),
        ..DriverConfig::default()
    }
}

async fn redis_addr(url: &str) -> std::net::SocketAddr {
    let hp = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("");
    tokio::net::lookup_host(hp)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .expect("the Redis URL names a reachable host:port")
}

/// Stalls every proxied connection right after the first completion.
struct StallAfterFirst<'a> {
    proxy: &'a FaultProxy,
    completions: Vec<Completion>,
}

impl Observer for StallAfterFirst<'_> {
    fn completed(&mut self, _at: Timestamp, _op: &Outgoing, completion: &Completion) -> Control {
        if self.completions.is_empty() {
            self.proxy.stall(1, 0, Duration::from_secs(2));
        }
        self.completions.push(completion.clone());
        Control::Continue
    }
}

#[tokio::test]
async fn a_stalled_operation_times_out_and_the_next_one_runs_on_a_fresh_connection() {
    let Some(config) = common::servers_or_skip("driver timeout", true, false).await else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr(&config.redis_url).await)
        .await
        .expect("the proxy starts");
    let prefix = common::prefix("drvtimeout");
    let url = format!("redis://{}", proxy.addr());
    let mut stores = Stores {
        kv: Some(RedisKv::lazy(&url, &prefix).expect("a valid URL")),
        ..Stores::default()
    };
    let mut m = Scripted::new(vec![set("k", "v"), get("k"), get("k")]);
    let (_tx, mut stop) = watch::channel(false);
    let mut observer = StallAfterFirst {
        proxy: &proxy,
        completions: Vec::new(),
    };
    let started = std::time::Instant::now();
    let end = drive(
        &mut m,
        &mut stores,
        &quick(300),
        Clock::start_now(),
        &mut stop,
        &mut observer,
    )
    .await;
    assert_eq!(end, DriveEnd::Idle);
    assert_eq!(
        m.replies,
        vec![
            Reply::Kv(KvReply::Ok),
            Reply::Timeout,
            Reply::Kv(KvReply::Bulk("v".into()))
        ],
        "the stalled GET is reported as unknown, the next GET reconnects and answers"
    );
    assert_eq!(observer.completions[1], Completion::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the stall did not hold up the third GET"
    );
    let mut kv = RedisKv::connect(&config.redis_url, &prefix)
        .await
        .expect("Redis answers");
    kv.clean().await.expect("cleaning the test's keys");
}

#[tokio::test]
async fn an_unreachable_server_is_retried_until_the_deadline_then_reported_unknown() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut stores = Stores {
        kv: Some(RedisKv::lazy(&format!("redis://127.0.0.1:{port}"), "x:").expect("a valid URL")),
        ..Stores::default()
    };
    let mut m = Scripted::new(vec![get("k")]);
    let (_tx, mut stop) = watch::channel(false);
    struct Keep(Vec<Completion>);
    impl Observer for Keep {
        fn completed(&mut self, _: Timestamp, _: &Outgoing, c: &Completion) -> Control {
            self.0.push(c.clone());
            Control::Continue
        }
    }
    let mut keep = Keep(Vec::new());
    let started = std::time::Instant::now();
    drive(
        &mut m,
        &mut stores,
        &quick(400),
        Clock::start_now(),
        &mut stop,
        &mut keep,
    )
    .await;
    let waited = started.elapsed();
    assert_eq!(
        m.replies,
        vec![Reply::Timeout],
        "the machine hears `unknown`, nothing panics"
    );
    assert!(
        matches!(&keep.0[0], Completion::Failed { sent: false, .. }),
        "the driver knows the operation was never sent: {:?}",
        keep.0
    );
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
        "retried with backoff until about the deadline, not forever: {waited:?}"
    );
}

#[tokio::test]
async fn a_server_that_comes_back_within_the_deadline_is_reached_by_the_retry() {
    let mut own = match OwnRedis::start("redis-server").await {
        Ok(own) => own,
        Err(e) => {
            common::skip(
                "driver retry",
                &format!("our own redis-server cannot run: {e}"),
            );
            return;
        }
    };
    common::ran("driver retry");
    let url = own.url();
    own.stop().await;
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        own.restart().await.map(|()| own)
    });
    let mut stores = Stores {
        kv: Some(RedisKv::lazy(&url, "t:").expect("a valid URL")),
        ..Stores::default()
    };
    let mut m = Scripted::new(vec![set("k", "v")]);
    let (_tx, mut stop) = watch::channel(false);
    let started = std::time::Instant::now();
    drive(
        &mut m,
        &mut stores,
        &quick(5_000),
        Clock::start_now(),
        &mut stop,
        &mut NoObserver,
    )
    .await;
    assert_eq!(
        m.replies,
        vec![Reply::Kv(KvReply::Ok)],
        "the retry reached the restarted server"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it really was down at first"
    );
    let mut own = restart
        .await
        .expect("the restart task")
        .expect("redis-server restarts");
    own.stop().await;
}

#[tokio::test]
async fn stop_abandons_an_operation_in_flight() {
    let Some(config) = common::servers_or_skip("driver stop", true, false).await else {
        return;
    };
    let proxy = FaultProxy::start(redis_addr(&config.redis_url).await)
        .await
        .expect("the proxy starts");
    let mut stores = Stores {
        kv: Some(
            RedisKv::connect(
                &format!("redis://{}", proxy.addr()),
                &common::prefix("drvstop"),
            )
            .await
            .expect("Redis answers"),
        ),
        ..Stores::default()
    };
    proxy.stall(1, 0, Duration::from_secs(5));
    let mut m = Scripted::new(vec![get("k")]);
    let (tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send_replace(true);
    });
    let started = std::time::Instant::now();
    let end = drive(
        &mut m,
        &mut stores,
        &quick(10_000),
        Clock::start_now(),
        &mut stop,
        &mut NoObserver,
    )
    .await;
    assert_eq!(end, DriveEnd::Stopped);
    assert!(m.replies.is_empty(), "a stopped process hears nothing");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped promptly: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_transaction_whose_connection_is_cut_is_never_continued_on_a_new_connection() {
    let Some(config) = common::servers_or_skip("driver cut transaction", false, true).await else {
        return;
    };
    let schema = common::unique("cuttx");
    let mut admin = PgSql::connect(&config.pg_url, &schema)
        .await
        .expect("PostgreSQL answers");
    let pg_addr = {
        let rest = config.pg_url.split("://").nth(1).unwrap_or("");
        let hp = rest
            .rsplit('@')
            .next()
            .unwrap_or("")
            .split(['/', '?'])
            .next()
            .unwrap_or("");
        tokio::net::lookup_host(hp)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .expect("the PostgreSQL URL names host:port")
    };
    let proxy = FaultProxy::start(pg_addr).await.expect("the proxy starts");
    let url = config
        .pg_url
        .replace(&pg_addr.to_string(), &proxy.addr().to_string());
    let mut pg = PgSql::lazy(&url, &schema).expect("a valid schema");
    let insert = |key: &str| {
        SqlOp::exec(SqlStmt::Insert {
            table: APPLIED_SCANS,
            key: key.into(),
            row: Row::from([("qty".to_string(), Value::Int(1))]),
        })
    };
    assert_eq!(
        pg.execute_sql(&SqlOp::Begin).await.expect("BEGIN"),
        SqlReply::Ok
    );
    assert_eq!(
        pg.execute_sql(&insert("s-1")).await.expect("INSERT"),
        SqlReply::Affected(1)
    );
    assert!(proxy.cut(1, 0) >= 1, "the session's connection is cut");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let broken = pg.execute_sql(&insert("s-2")).await;
    assert!(
        matches!(&broken, Err(_) | Ok(SqlReply::Error(_))),
        "the statement on the cut connection fails: {broken:?}"
    );
    let after = pg
        .execute_sql(&insert("s-3"))
        .await
        .expect("answered locally");
    assert!(
        matches!(&after, SqlReply::Error(e) if e.starts_with("25P02")),
        "a statement of the lost transaction is refused, not run in autocommit: {after:?}"
    );
    assert_eq!(
        pg.execute_sql(&SqlOp::Commit).await.expect("COMMIT"),
        SqlReply::RolledBack
    );
    assert_eq!(
        pg.execute_sql(&insert("s-4"))
            .await
            .expect("a fresh session"),
        SqlReply::Affected(1)
    );
    let all = SqlOp::exec(SqlStmt::scan(APPLIED_SCANS, racelab_core::Cond::True));
    let SqlReply::Rows(rows) = admin.execute_sql(&all).await.expect("scan") else {
        panic!("a scan returns rows");
    };
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["s-4"],
        "nothing of the cut transaction was committed"
    );
    admin
        .drop_schema()
        .await
        .expect("dropping the test's schema");
}

/// The connection of an open transaction may close while a statement is on its way (here
/// while the adapter makes sure the statement's table exists, which waits for the schema
/// set-up lock on a connection of its own): the statement must fail, never run on a fresh
/// connection where it would commit on its own (a recorded scan without its increment).
#[tokio::test]
async fn a_transaction_whose_connection_dies_mid_statement_never_runs_it_in_autocommit() {
    let Some(config) = common::servers_or_skip("driver mid-statement loss", false, true).await
    else {
        return;
    };
    let schema = common::unique("midloss");
    let mut admin = PgSql::connect(&config.pg_url, &schema)
        .await
        .expect("PostgreSQL answers");
    let all = SqlOp::exec(SqlStmt::scan(APPLIED_SCANS, racelab_core::Cond::True));
    // The admin session creates the table; the worker session has not named it yet.
    admin.execute_sql(&all).await.expect("scan");
    let (raw, connection) = tokio_postgres::connect(&config.pg_url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    tokio::spawn(connection);
    // racelab's schema set-up lock (adapters/src/postgres.rs, DDL_LOCK), held so that the
    // worker's table check waits.
    raw.batch_execute("SELECT pg_advisory_lock(32195226876272994)")
        .await
        .expect("lock");
    let mut pg = PgSql::lazy(&config.pg_url, &schema).expect("a valid schema");
    let pid = pg.backend_pid().await.expect("connected");
    assert_eq!(
        pg.execute_sql(&SqlOp::Begin).await.expect("BEGIN"),
        SqlReply::Ok
    );
    let insert = SqlOp::exec(SqlStmt::Insert {
        table: APPLIED_SCANS,
        key: "s-1".into(),
        row: Row::from([("qty".to_string(), Value::Int(1))]),
    });
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.query("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
        // Let the worker's client notice, then let its table check finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw.batch_execute("SELECT pg_advisory_unlock(32195226876272994)")
            .await
            .expect("unlock");
    };
    let (answer, ()) = tokio::join!(pg.execute_sql(&insert), killer);
    assert!(
        matches!(&answer, Err(_) | Ok(SqlReply::Error(_))),
        "the statement of the dead transaction fails: {answer:?}"
    );
    let SqlReply::Rows(rows) = admin.execute_sql(&all).await.expect("scan") else {
        panic!("a scan returns rows");
    };
    assert!(
        rows.is_empty(),
        "nothing was committed on its own: {rows:?}"
    );
    assert_eq!(
        pg.execute_sql(&SqlOp::Commit).await.expect("COMMIT"),
        SqlReply::RolledBack
    );
    admin.drop_schema().await.expect("cleanup");
    common::ran("driver mid-statement loss");
}
