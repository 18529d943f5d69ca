//! Bad input: keys and values with quotes, Lua and SQL metacharacters, unicode and huge
//! sizes round-trip unchanged through Redis (commands, scripts, the queue) and PostgreSQL,
//! and prove by their effects that nothing was spliced into code; overflowing amounts and
//! out-of-range input are rejected with typed errors; an unreachable server is an error,
//! never a panic.

mod common;

use racelab_adapters::{AdapterError, PgSql, RedisKv, RedisQueue, lua, queue_lua};
use racelab_core::workorder::{UPDATE_LOG, WORK_ORDERS};
use racelab_core::{
    Assign, CmpOp, Cond, Duration, JobFields, KvOp, KvReply, QueueOp, QueueReply, Row, ScriptName,
    SetCondition, SqlOp, SqlReply, SqlStmt, Value,
};

/// Strings that would break anything that splices data into Lua or SQL text.
fn nasty() -> Vec<String> {
    vec![
        "it's".into(),
        "\"double\"".into(),
        "'; DROP TABLE work_orders; --".into(),
        "$1 $$ $tag$ E'\\x00'".into(),
        "]] redis.call('FLUSHALL') --[[".into(),
        "\" .. redis.call('DEL', KEYS[1]) .. \"".into(),
        "\\' OR '1'='1".into(),
        "ключ 键 🔑 \u{202e}".into(),
        "tab\tnewline\ncr\r".into(),
        "x".repeat(1 << 20),
    ]
}

#[tokio::test]
async fn nasty_keys_and_values_round_trip_through_redis_and_are_never_code() {
    let Some(config) = common::servers_or_skip("redis injection", true, false).await else {
        return;
    };
    let prefix = common::prefix("inj");
    let mut kv = RedisKv::connect(&config.redis_url, &prefix)
        .await
        .expect("Redis answers");
    let sentinel = "sentinel";
    let set = |key: &str, value: &str| KvOp::Set {
        key: key.into(),
        value: value.into(),
        condition: SetCondition::Always,
        ttl: None,
    };
    assert_eq!(
        kv.execute_kv(&set(sentinel, "alive")).await.expect("SET"),
        KvReply::Ok
    );
    for (i, s) in nasty().into_iter().enumerate() {
        let key = format!("k{i}:{}", s.chars().take(256).collect::<String>());
        assert_eq!(
            kv.execute_kv(&set(&key, &s)).await.expect("SET"),
            KvReply::Ok
        );
        assert_eq!(
            kv.execute_kv(&KvOp::Get { key: key.clone() })
                .await
                .expect("GET"),
            KvReply::Bulk(s.clone()),
            "value {i} comes back byte for byte"
        );
        // As an owner token of the scripts: it matches itself only.
        let script = |script, args: Vec<String>| KvOp::Script {
            script,
            keys: vec![key.clone()],
            args,
        };
        let extend = script(
            ScriptName::CompareAndExtend,
            vec![s.clone(), "60000".into()],
        );
        assert_eq!(
            kv.execute_kv(&extend).await.expect("script"),
            KvReply::Int(1)
        );
        let other = script(ScriptName::CompareAndDelete, vec![format!("{s}!")]);
        assert_eq!(
            kv.execute_kv(&other).await.expect("script"),
            KvReply::Int(0)
        );
        let mine = script(ScriptName::CompareAndDelete, vec![s.clone()]);
        assert_eq!(kv.execute_kv(&mine).await.expect("script"), KvReply::Int(1));
        assert_eq!(
            kv.execute_kv(&KvOp::Get { key }).await.expect("GET"),
            KvReply::Nil
        );
    }
    assert_eq!(
        kv.execute_kv(&KvOp::Get {
            key: sentinel.into()
        })
        .await
        .expect("GET"),
        KvReply::Bulk("alive".into()),
        "no FLUSHALL or DEL hidden in the data ever ran"
    );
    // The scripts are fixed text: none of the data can be in them.
    for s in nasty() {
        for name in ScriptName::ALL {
            assert!(
                !lua(name).contains(s.as_str()),
                "script text never holds data"
            );
        }
        for (name, text) in queue_lua() {
            assert!(
                !text.contains(s.as_str()),
                "queue script {name} never holds data"
            );
        }
    }
    // Overflow is the server's error reply; an out-of-range TTL is refused before sending.
    let big = KvOp::IncrBy {
        key: "n".into(),
        delta: i64::MAX,
    };
    assert_eq!(
        kv.execute_kv(&big).await.expect("INCRBY"),
        KvReply::Int(i64::MAX)
    );
    let one = KvOp::IncrBy {
        key: "n".into(),
        delta: 1,
    };
    assert_eq!(
        kv.execute_kv(&one).await.expect("INCRBY"),
        KvReply::Error("ERR increment or decrement would overflow".into())
    );
    let ttl = KvOp::PExpire {
        key: "n".into(),
        ttl: Duration::from_ms(u64::MAX),
    };
    assert!(matches!(
        kv.execute_kv(&ttl).await,
        Err(AdapterError::InvalidInput(_))
    ));
    kv.clean().await.expect("cleaning the test's keys");
}

#[tokio::test]
async fn nasty_job_fields_and_dedup_ids_round_trip_through_the_queue() {
    let Some(config) = common::servers_or_skip("queue injection", true, false).await else {
        return;
    };
    let prefix = common::prefix("qinj");
    let mut q = RedisQueue::connect(&config.redis_url, &prefix, Duration::from_secs(30))
        .await
        .expect("Redis answers");
    for s in nasty() {
        let fields = JobFields::from([(s.chars().take(64).collect::<String>(), s.clone())]);
        let enqueue = QueueOp::Enqueue {
            dedup: Some(s.clone()),
            fields: fields.clone(),
        };
        assert!(matches!(
            q.execute_queue(&enqueue).await,
            Ok(QueueReply::Enqueued { .. })
        ));
        assert!(matches!(
            q.execute_queue(&enqueue).await,
            Ok(QueueReply::Duplicate { .. })
        ));
        let Ok(QueueReply::Delivered(Some(d))) = q.execute_queue(&QueueOp::Fetch).await else {
            panic!("the job is delivered");
        };
        assert_eq!(d.fields, fields, "fields come back byte for byte");
        let ack = QueueOp::Ack { delivery: d.id };
        assert_eq!(q.execute_queue(&ack).await.expect("ack"), QueueReply::Acked);
    }
    q.clean().await.expect("cleaning the test's keys");
}

#[tokio::test]
async fn nasty_keys_and_values_round_trip_through_postgresql_and_are_never_sql() {
    let Some(config) = common::servers_or_skip("sql injection", false, true).await else {
        return;
    };
    let schema = common::unique("sqlinj");
    let mut db = PgSql::connect(&config.pg_url, &schema)
        .await
        .expect("PostgreSQL answers");
    for (i, s) in nasty().into_iter().enumerate() {
        // Keys stay below PostgreSQL's btree entry limit (about 2.7 kB, SQLSTATE 54000; a
        // limit the model does not have). Huge data goes in a column.
        let key = format!("{i}:{}", s.chars().take(200).collect::<String>());
        let row = Row::from([
            ("request_id".to_string(), Value::Text(s.clone())),
            ("qty".to_string(), Value::Int(1)),
        ]);
        let insert = SqlOp::exec(SqlStmt::Insert {
            table: UPDATE_LOG,
            key: key.clone(),
            row,
        });
        assert_eq!(
            db.execute_sql(&insert).await.expect("insert"),
            SqlReply::Affected(1)
        );
        let find = SqlOp::exec(SqlStmt::scan(
            UPDATE_LOG,
            Cond::cmp("request_id", CmpOp::Eq, Value::Text(s.clone())),
        ));
        let SqlReply::Rows(rows) = db.execute_sql(&find).await.expect("scan") else {
            panic!("a scan returns rows");
        };
        assert_eq!(rows.len(), 1, "exactly the row with this text matches");
        assert_eq!(rows[0].key, key);
        assert_eq!(rows[0].columns.get("request_id"), Some(&Value::Text(s)));
    }
    let all = SqlOp::exec(SqlStmt::scan(WORK_ORDERS, Cond::True));
    assert!(
        matches!(db.execute_sql(&all).await, Ok(SqlReply::Rows(_))),
        "work_orders still exists: no DROP TABLE in the data ever ran"
    );
    // bigint overflow is the server's error reply (22003), and nothing changes.
    let seed = SqlOp::exec(SqlStmt::Insert {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        row: Row::from([("qty".to_string(), Value::Int(i64::MAX))]),
    });
    db.execute_sql(&seed).await.expect("seed");
    let overflow = SqlOp::exec(SqlStmt::Update {
        table: WORK_ORDERS,
        key: "wo-1".into(),
        guard: Cond::True,
        set: vec![Assign::Add {
            column: "qty".into(),
            delta: 1,
        }],
    });
    let reply = db.execute_sql(&overflow).await.expect("update");
    assert!(
        matches!(&reply, SqlReply::Error(e) if e.starts_with("22003")),
        "overflow is rejected: {reply:?}"
    );
    db.drop_schema().await.expect("dropping the test's schema");
}

#[tokio::test]
async fn bad_names_and_unreachable_servers_are_typed_errors() {
    let long = "x".repeat(64);
    for schema in ["", "Robert'); DROP TABLE x;--", "a-b", long.as_str()] {
        assert!(
            matches!(
                PgSql::lazy("postgres://127.0.0.1:1/x", schema),
                Err(AdapterError::InvalidInput(_))
            ),
            "schema {schema:?} is refused"
        );
    }
    assert!(matches!(
        RedisKv::lazy("not a url", "p:"),
        Err(AdapterError::InvalidInput(_))
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let redis = RedisKv::connect(&format!("redis://127.0.0.1:{port}"), "p:").await;
    assert!(
        matches!(redis, Err(AdapterError::Unreachable { .. })),
        "{redis:?}"
    );
    let pg = PgSql::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"), "x").await;
    let Err(e) = pg else {
        panic!("nothing listens on port {port}");
    };
    assert!(matches!(e, AdapterError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains("cannot reach PostgreSQL"),
        "the message says what happened: {e}"
    );
    let queue = RedisQueue::lazy("redis://127.0.0.1:1", "p:", Duration::ZERO);
    assert!(
        matches!(queue, Err(AdapterError::InvalidInput(_))),
        "a zero lock duration is refused"
    );
}
