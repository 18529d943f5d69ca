//! Shared test support: server availability (skip loudly, or fail under
//! `RACELAB_REQUIRE_SERVICES=1`) and per-test isolation (a key prefix and a schema of its own).

#![allow(dead_code, unreachable_pub)]

use racelab_adapters::{Config, require_services, services};

/// The servers to use, or `None` (after a loud banner) when one this test needs is down.
/// Under `RACELAB_REQUIRE_SERVICES=1` an unreachable server fails the test instead.
pub async fn servers_or_skip(test: &str, need_redis: bool, need_pg: bool) -> Option<Config> {
    let config = Config::from_env();
    let status = services(&config).await;
    let mut missing = Vec::new();
    if need_redis && let Err(e) = &status.redis {
        missing.push(e.clone());
    }
    if need_pg && let Err(e) = &status.pg {
        missing.push(e.clone());
    }
    if missing.is_empty() {
        return Some(config);
    }
    let why = missing.join("; ");
    assert!(
        !require_services(),
        "{test}: RACELAB_REQUIRE_SERVICES=1 but a server is unreachable: {why}"
    );
    banner(&format!(
        "SKIPPED: {test}\n\
         a server it needs is unreachable: {why}\n\
         (set RACELAB_REDIS_URL / RACELAB_PG_URL, or RACELAB_REQUIRE_SERVICES=1 to fail instead)"
    ));
    None
}

/// Prints a banner straight to the process' stderr, past the test harness' output capture,
/// so that a skip is seen even when the test passes.
pub fn banner(text: &str) {
    use std::io::Write as _;
    let line = "=".repeat(72);
    let _ = writeln!(std::io::stderr(), "\n{line}\n{text}\n{line}\n");
}

/// A name unique to this test run: `[a-z0-9_]`, usable as a schema and in a key prefix.
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "rl_{test}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A key prefix unique to this test run.
pub fn prefix(test: &str) -> String {
    format!("racelab:test:{}:", unique(test))
}

/// A current-thread runtime for a synchronous (proptest) test body.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}
