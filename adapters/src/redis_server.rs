//! Our own `redis-server` process on a free loopback port, without persistence, so that a
//! test can restart it (losing every key and every queued job, as a real restart without
//! persistence does) without disturbing the shared server other tests use.

use std::time::Duration;

use tokio::process::{Child, Command};

use crate::AdapterError;

/// How long a started server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process. Dropping it kills the process.
#[derive(Debug)]
pub struct OwnRedis {
    binary: String,
    port: u16,
    child: Option<Child>,
    restarts: u32,
}

impl OwnRedis {
    /// Starts `binary` (for example `redis-server`) on a free loopback port with
    /// `--save "" --appendonly no`, and waits until it answers.
    pub async fn start(binary: &str) -> Result<OwnRedis, AdapterError> {
        let port = free_port()?;
        let mut redis = OwnRedis {
            binary: binary.to_string(),
            port,
            child: None,
            restarts: 0,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// How many times the server was restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Kills the server (`SIGKILL`: no shutdown, no save) and starts it again on the same
    /// port, empty.
    pub async fn restart(&mut self) -> Result<(), AdapterError> {
        self.restart_marking(|| {}).await
    }

    /// [`OwnRedis::restart`], calling `dead` once the old server has exited and before the
    /// new one starts: the one moment at which every key is certainly gone and nothing new
    /// is written yet (a run records its restart there).
    pub async fn restart_marking(&mut self, dead: impl FnOnce()) -> Result<(), AdapterError> {
        self.stop().await;
        dead();
        self.spawn().await?;
        self.restarts += 1;
        Ok(())
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    async fn spawn(&mut self) -> Result<(), AdapterError> {
        let fail = |message: String| AdapterError::Process {
            what: format!("starting {} on port {}", self.binary, self.port),
            message,
        };
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(format!("{e} (is redis-server installed?)")))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let client = redis::Client::open(self.url()).map_err(|e| fail(e.to_string()))?;
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok_and(|p| p == "PONG") {
                    return Ok(());
                }
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(fail(format!(
                    "it exited with {status} (is the port taken?)"
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(fail(format!("no PONG within {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A loopback port nobody listens on right now (the OS picks it).
fn free_port() -> Result<u16, AdapterError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| AdapterError::Process {
            what: "finding a free port".into(),
            message: e.to_string(),
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| AdapterError::Process {
            what: "finding a free port".into(),
            message: e.to_string(),
        })
}
