//! Where the servers are, and whether they are there.

/// Server addresses, from the environment with loopback defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `RACELAB_REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// `RACELAB_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
    pub pg_url: String,
}

/// The default Redis URL.
const REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:6379";
/// The default PostgreSQL URL (trust authentication on loopback).
const PG_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";

impl Config {
    /// Reads `RACELAB_REDIS_URL` and `RACELAB_PG_URL`; unset or empty means the default.
    pub fn from_env() -> Config {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Config {
            redis_url: var("RACELAB_REDIS_URL", REDIS_URL_DEFAULT),
            pg_url: var("RACELAB_PG_URL", PG_URL_DEFAULT),
        }
    }
}

/// Whether `RACELAB_REQUIRE_SERVICES=1`: an unreachable server is then a failure, not a skip.
pub fn require_services() -> bool {
    std::env::var_os("RACELAB_REQUIRE_SERVICES").is_some_and(|v| v == "1")
}

/// Which servers answered a probe, and why the others did not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    /// `Ok` if Redis answered `PING`, else what went wrong.
    pub redis: Result<(), String>,
    /// `Ok` if PostgreSQL answered `SELECT 1`, else what went wrong.
    pub pg: Result<(), String>,
}

/// How long a probe waits for a server.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Probes both servers of `config` (each within a few seconds).
pub async fn services(config: &Config) -> ServiceStatus {
    let redis = async {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    };
    let pg = async {
        let (client, connection) = tokio_postgres::connect(&config.pg_url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(connection);
        let r = client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| e.to_string());
        drop(client);
        let _ = task.await;
        r.map(|_| ())
    };
    let timed = |r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    let (redis, pg) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, redis),
        tokio::time::timeout(PROBE_TIMEOUT, pg)
    );
    ServiceStatus {
        redis: timed(redis).map_err(|e| format!("Redis at {}: {e}", config.redis_url)),
        pg: timed(pg).map_err(|e| format!("PostgreSQL at {}: {e}", config.pg_url)),
    }
}
