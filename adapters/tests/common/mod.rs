//! Shared test support: server availability (skip loudly, or fail under
//! `RACELAB_REQUIRE_SERVICES=1`) and per-test isolation (a key prefix and a schema of its own).
//!
//! Every real-server test says whether it ran or was skipped in one marker line on stderr,
//! `racelab-real-server: ran <test>` or `racelab-real-server: skipped <test>: <why>`, also
//! appended to the file `RACELAB_REAL_SERVER_LOG` names, if set (`scripts/test.sh` counts them).

#![allow(dead_code, unreachable_pub)]

use racelab_adapters::{Config, require_services, services};

/// The servers to use, or `None` (after a loud banner) when one this test needs is down.
/// Under `RACELAB_REQUIRE_SERVICES=1` an unreachable server fails the test instead.
/// Marks the test as ran or skipped.
pub async fn servers_or_skip(test: &str, need_redis: bool, need_pg: bool) -> Option<Config> {
    let config = reachable_or_skip(test, need_redis, need_pg).await?;
    ran(test);
    Some(config)
}

/// As [`servers_or_skip`], but leaves the "ran" mark to the caller, for a test that may still
/// skip afterwards (its own `redis-server` cannot run).
pub async fn reachable_or_skip(test: &str, need_redis: bool, need_pg: bool) -> Option<Config> {
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
    skip_with(
        test,
        &format!("a server it needs is unreachable: {}", missing.join("; ")),
        "set RACELAB_REDIS_URL / RACELAB_PG_URL, or RACELAB_REQUIRE_SERVICES=1 to fail instead",
    );
    None
}

/// Marks a real-server test as run against its servers.
pub fn ran(test: &str) {
    mark(&format!("ran {test}"));
}

/// Skips a real-server test: fails it under `RACELAB_REQUIRE_SERVICES=1`, else prints a banner
/// and marks it as skipped.
pub fn skip(test: &str, why: &str) {
    skip_with(test, why, "set RACELAB_REQUIRE_SERVICES=1 to fail instead");
}

fn skip_with(test: &str, why: &str, hint: &str) {
    assert!(
        !require_services(),
        "{test}: RACELAB_REQUIRE_SERVICES=1 but {why}"
    );
    banner(&format!("SKIPPED: {test}\n{why}\n({hint})"));
    mark(&format!("skipped {test}: {why}"));
}

/// One marker line: to stderr past the harness' capture, and appended to
/// `RACELAB_REAL_SERVER_LOG` when set (one write per line: the tests run in parallel).
fn mark(text: &str) {
    use std::io::Write as _;
    let line = format!("racelab-real-server: {}\n", text.replace('\n', " "));
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os("RACELAB_REAL_SERVER_LOG").filter(|p| !p.is_empty()) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        if let Err(e) = file.and_then(|mut f| f.write_all(line.as_bytes())) {
            let _ = writeln!(
                std::io::stderr(),
                "cannot append to RACELAB_REAL_SERVER_LOG={}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
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
