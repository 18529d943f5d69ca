//! A small loopback TCP proxy that injects the network's faults between clients and a
//! server: latency on every chunk, stalls (a connection holds its bytes for a while, as a
//! paused process or a congested link would), and cut connections.
//!
//! Every accepted connection is forwarded to the target in both directions by one task. The
//! proxy never looks at the bytes: it works for Redis and PostgreSQL alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::AdapterError;

/// Faults injected so far by one proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyFaults {
    /// Connections accepted.
    pub connections: u64,
    /// Connections stalled.
    pub stalled: u64,
    /// Connections cut.
    pub cut: u64,
}

/// Controls of one proxied connection.
#[derive(Debug)]
struct Conn {
    stalled: watch::Sender<bool>,
    cut: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Shared {
    latency_ms: AtomicU64,
    next_id: AtomicU64,
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    faults: Mutex<ProxyFaults>,
}

/// The size of one forwarded chunk.
const CHUNK_BYTES: usize = 16 * 1024;

/// A running proxy from a loopback port to `target`. Dropping it stops accepting and cuts
/// every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Result<FaultProxy, AdapterError> {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| AdapterError::Process {
                    what: "starting the fault proxy".into(),
                    message: e.to_string(),
                })?;
        let addr = listener.local_addr().map_err(|e| AdapterError::Process {
            what: "starting the fault proxy".into(),
            message: e.to_string(),
        })?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let id = s.next_id.fetch_add(1, Ordering::Relaxed);
                let conn = Arc::new(Conn {
                    stalled: watch::Sender::new(false),
                    cut: watch::Sender::new(false),
                });
                if let Ok(mut conns) = s.conns.lock() {
                    conns.insert(id, conn.clone());
                }
                if let Ok(mut f) = s.faults.lock() {
                    f.connections += 1;
                }
                let s2 = s.clone();
                tokio::spawn(async move {
                    forward(client, target, &s2, &conn).await;
                    if let Ok(mut conns) = s2.conns.lock() {
                        conns.remove(&id);
                    }
                });
            }
        });
        Ok(FaultProxy {
            addr,
            target,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Delays every chunk in either direction by `latency` from now on.
    pub fn set_latency(&self, latency: std::time::Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.latency_ms.store(ms, Ordering::Relaxed);
    }

    fn pick(&self, every_nth: u64, offset: u64) -> Vec<Arc<Conn>> {
        let Ok(conns) = self.shared.conns.lock() else {
            return Vec::new();
        };
        conns
            .iter()
            .filter(|(id, _)| every_nth <= 1 || (**id + offset).is_multiple_of(every_nth))
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Holds the bytes of every `every_nth` open connection (all if 0 or 1; which ones
    /// depends on `offset`) for `duration`; returns how many were stalled.
    pub fn stall(&self, every_nth: u64, offset: u64, duration: std::time::Duration) -> u64 {
        let picked = self.pick(every_nth, offset);
        for c in &picked {
            c.stalled.send_replace(true);
        }
        let n = picked.len() as u64;
        if let Ok(mut f) = self.shared.faults.lock() {
            f.stalled += n;
        }
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            for c in &picked {
                c.stalled.send_replace(false);
            }
        });
        n
    }

    /// Cuts every `every_nth` open connection (all if 0 or 1); returns how many.
    pub fn cut(&self, every_nth: u64, offset: u64) -> u64 {
        let picked = self.pick(every_nth, offset);
        for c in &picked {
            c.cut.send_replace(true);
        }
        let n = picked.len() as u64;
        if let Ok(mut f) = self.shared.faults.lock() {
            f.cut += n;
        }
        n
    }

    /// Ends every fault: no latency, nothing stalled.
    pub fn heal(&self) {
        self.set_latency(std::time::Duration::ZERO);
        for c in self.pick(1, 0) {
            c.stalled.send_replace(false);
        }
    }

    /// The faults injected so far.
    pub fn faults(&self) -> ProxyFaults {
        self.shared.faults.lock().map(|f| *f).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.pick(1, 0) {
            c.cut.send_replace(true);
        }
    }
}

/// Forwards one connection until either side closes or the connection is cut.
async fn forward(client: TcpStream, target: SocketAddr, shared: &Shared, conn: &Conn) {
    let Ok(server) = TcpStream::connect(target).await else {
        // The server is down (a restart): the client sees its connection closed.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut cut = conn.cut.subscribe();
    let up = pump(&mut cr, &mut sw, shared, conn);
    let down = pump(&mut sr, &mut cw, shared, conn);
    tokio::select! {
        biased;
        _ = cut.wait_for(|c| *c) => {}
        () = up => {}
        () = down => {}
    }
}

/// Copies chunks from `from` to `to`, delaying and holding them as the faults say.
async fn pump<R, W>(from: &mut R, to: &mut W, shared: &Shared, conn: &Conn)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut stalled = conn.stalled.subscribe();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = shared.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
