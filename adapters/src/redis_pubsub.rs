//! `PubSubOp` over real Redis: one subscriber connection per client (the redis crate's
//! `aio::PubSub`), its channels under the client's prefix like every key, so tests and
//! tenants sharing a server never see each other's messages. Publishing is
//! [`racelab_core::KvOp::Publish`] on [`crate::RedisKv`] (same prefix).
//!
//! A subscriber connection that closes (a server restart, a `CLIENT KILL`, [`disconnect`])
//! loses its subscriptions and every message published meanwhile: the next receive answers
//! [`PubSubReply::Disconnected`] and a `Subscribe` connects anew, as the simulated Redis
//! does.
//!
//! [`disconnect`]: RedisPubSub::disconnect

use std::collections::BTreeSet;
use std::pin::Pin;

use futures_core::Stream;
use racelab_core::{PubSubOp, PubSubReply};

use crate::AdapterError;

const WHAT: &str = "Redis pub/sub";

/// A subscriber connection to Redis, made at the first `Subscribe`.
pub struct RedisPubSub {
    client: redis::Client,
    url: String,
    prefix: String,
    conn: Option<redis::aio::PubSub>,
    channels: BTreeSet<String>,
}

impl std::fmt::Debug for RedisPubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSub")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("connected", &self.conn.is_some())
            .field("channels", &self.channels)
            .finish()
    }
}

impl RedisPubSub {
    /// A subscriber for `url` whose channels get `prefix`. Fails only if the URL does not
    /// parse; nothing connects until the first `Subscribe`.
    pub fn new(url: &str, prefix: &str) -> Result<RedisPubSub, AdapterError> {
        let client = redis::Client::open(url)
            .map_err(|e| AdapterError::InvalidInput(format!("Redis URL {url:?}: {e}")))?;
        Ok(RedisPubSub {
            client,
            url: url.to_string(),
            prefix: prefix.to_string(),
            conn: None,
            channels: BTreeSet::new(),
        })
    }

    /// Closes the subscriber connection: its subscriptions, and what is published until the
    /// next `Subscribe`, are lost.
    pub fn disconnect(&mut self) {
        self.conn = None;
        self.channels.clear();
    }

    /// Executes one operation on the subscriber connection.
    pub async fn execute_pubsub(&mut self, op: &PubSubOp) -> Result<PubSubReply, AdapterError> {
        match op {
            PubSubOp::Subscribe { channels } => {
                if self.conn.is_none() {
                    let conn = self.client.get_async_pubsub().await.map_err(|e| {
                        AdapterError::Unreachable {
                            what: WHAT,
                            url: self.url.clone(),
                            source: Box::new(e),
                        }
                    })?;
                    self.conn = Some(conn);
                    self.channels.clear();
                }
                for channel in channels {
                    let name = format!("{}{channel}", self.prefix);
                    let subscribed = match self.conn.as_mut() {
                        Some(conn) => conn.subscribe(name).await,
                        None => break,
                    };
                    if let Err(e) = subscribed {
                        self.disconnect();
                        return Err(AdapterError::Connection {
                            what: WHAT,
                            message: e.to_string(),
                        });
                    }
                    self.channels.insert(channel.clone());
                }
                Ok(PubSubReply::Subscribed {
                    count: self.channels.len() as u64,
                })
            }
            PubSubOp::Receive { wait } => {
                let Some(conn) = self.conn.as_mut() else {
                    return Ok(PubSubReply::Disconnected);
                };
                let wait = std::time::Duration::from_millis(wait.as_ms());
                let received = {
                    let mut stream = conn.on_message();
                    let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx));
                    tokio::time::timeout(wait, next).await
                };
                match received {
                    Err(_) => Ok(PubSubReply::NoMessage),
                    Ok(None) => {
                        self.disconnect();
                        Ok(PubSubReply::Disconnected)
                    }
                    Ok(Some(msg)) => {
                        let channel = msg.get_channel_name();
                        let channel = channel
                            .strip_prefix(self.prefix.as_str())
                            .unwrap_or(channel)
                            .to_string();
                        let payload: String =
                            msg.get_payload().map_err(|e| AdapterError::Protocol {
                                what: WHAT,
                                message: format!("a message payload is not text: {e}"),
                            })?;
                        Ok(PubSubReply::Message { channel, payload })
                    }
                }
            }
        }
    }
}
