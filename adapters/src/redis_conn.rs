//! One lazily (re)connected Redis connection with script loading by SHA.
//!
//! The connection is made on first use and dropped after any failure or interruption (a
//! request whose future was dropped mid-flight may still be answered later), so the next
//! operation starts on a clean connection. Server error replies are answers, not failures.

use redis::aio::MultiplexedConnection;

use crate::AdapterError;

/// What Redis answered: a value, or an error reply (`-ERR ...`), rendered `CODE detail`.
#[derive(Debug)]
pub(crate) enum Answer {
    Value(redis::Value),
    Error(String),
}

pub(crate) struct RedisConn {
    client: redis::Client,
    url: String,
    conn: Option<MultiplexedConnection>,
    /// An operation started and did not finish: its future was dropped (a timeout, a stop).
    interrupted: bool,
    connect_timeout: std::time::Duration,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("url", &self.url)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) const WHAT: &str = "Redis";

impl RedisConn {
    /// A connection to `url`, made on first use. Fails only if the URL does not parse.
    pub(crate) fn new(url: &str) -> Result<RedisConn, AdapterError> {
        let client = redis::Client::open(url)
            .map_err(|e| AdapterError::InvalidInput(format!("Redis URL {url:?}: {e}")))?;
        Ok(RedisConn {
            client,
            url: url.to_string(),
            conn: None,
            interrupted: false,
            connect_timeout: std::time::Duration::from_secs(2),
        })
    }

    /// Connects now (or checks the existing connection is usable), so that an unreachable
    /// server is reported at set-up rather than at the first operation.
    pub(crate) async fn connect(&mut self) -> Result<(), AdapterError> {
        self.conn().await.map(|_| ())
    }

    async fn conn(&mut self) -> Result<&mut MultiplexedConnection, AdapterError> {
        if self.interrupted {
            self.conn = None;
            self.interrupted = false;
        }
        if self.conn.is_none() {
            // The driver owns timeouts: no response timeout inside the client library.
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(None);
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| AdapterError::Unreachable {
                    what: WHAT,
                    url: self.url.clone(),
                    source: Box::new(e),
                })?;
            self.conn = Some(conn);
        }
        // Invariant: set just above when it was `None`.
        self.conn.as_mut().ok_or_else(|| AdapterError::Connection {
            what: WHAT,
            message: "no connection".into(),
        })
    }

    /// Sends one command.
    pub(crate) async fn query(&mut self, cmd: &redis::Cmd) -> Result<Answer, AdapterError> {
        // A multiplexed connection is a cheap handle; the clone shares the socket.
        let mut conn = self.conn().await?.clone();
        self.interrupted = true;
        let result: Result<redis::Value, redis::RedisError> = cmd.query_async(&mut conn).await;
        self.interrupted = false;
        self.answer(result)
    }

    /// `EVALSHA` of a script by its SHA, loading it once (`SCRIPT LOAD`) when the server does
    /// not know it (first use, or a restarted server) and calling it by SHA again.
    pub(crate) async fn eval(
        &mut self,
        script: &redis::Script,
        keys: &[Vec<u8>],
        args: &[Vec<u8>],
    ) -> Result<Answer, AdapterError> {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(args);
        match self.query(&evalsha).await? {
            Answer::Error(e) if e.starts_with("NOSCRIPT") => {
                let mut conn = self.conn().await?.clone();
                self.interrupted = true;
                let loaded: Result<String, redis::RedisError> = script.load_async(&mut conn).await;
                self.interrupted = false;
                match loaded {
                    Ok(sha) if sha == script.get_hash() => {}
                    Ok(sha) => {
                        return Err(AdapterError::Protocol {
                            what: WHAT,
                            message: format!(
                                "SCRIPT LOAD answered SHA {sha}, expected {}",
                                script.get_hash()
                            ),
                        });
                    }
                    Err(e) => return self.answer(Err(e)),
                }
                self.query(&evalsha).await
            }
            other => Ok(other),
        }
    }

    fn answer(
        &mut self,
        result: Result<redis::Value, redis::RedisError>,
    ) -> Result<Answer, AdapterError> {
        match result {
            Ok(redis::Value::ServerError(e)) => {
                Ok(Answer::Error(render_server_error(e.code(), e.details())))
            }
            Ok(v) => Ok(Answer::Value(v)),
            Err(e) if e.code().is_some() && !e.is_io_error() => Ok(Answer::Error(
                render_server_error(e.code().unwrap_or("ERR"), e.detail()),
            )),
            Err(e) => {
                // The connection is suspect after any client-side failure: start afresh.
                self.conn = None;
                Err(AdapterError::Connection {
                    what: WHAT,
                    message: e.to_string(),
                })
            }
        }
    }
}

/// `CODE detail`, the way `redis-cli` prints an error reply.
fn render_server_error(code: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) if !d.is_empty() => format!("{code} {d}"),
        _ => code.to_string(),
    }
}
