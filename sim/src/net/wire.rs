//! The framed protocol between a store client and a store host: a big-endian `u32` length,
//! then a JSON document. One request at a time per connection, like a database connection.

use racelab_core::{ProcessId, Reply, StoreOp};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts; a larger length prefix is a protocol error.
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// A request: which client operation, and the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The client's id for the operation (echoed in the response).
    pub op: u64,
    /// The client's process name, for the store-side record.
    pub client: String,
    /// The client process (its index in the world) and its incarnation: the reader of the
    /// streams it opens and the end of the push connections it makes or accepts.
    pub process: ProcessId,
    /// The incarnation of `process` (a restarted process starts with no stream and no push
    /// connection).
    pub incarnation: u32,
    /// The operation.
    pub body: StoreOp,
}

/// A response to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's `op`.
    pub op: u64,
    /// The store's answer.
    pub reply: Reply,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a frame of this protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> Result<(), WireError> {
    let body = serde_json::to_vec(value).map_err(|e| WireError::Protocol(e.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= FRAME_BYTES_MAX)
        .ok_or_else(|| {
            WireError::Protocol(format!("frame of {} bytes is too large", body.len()))
        })?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` when the peer closed the connection cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<Option<T>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > FRAME_BYTES_MAX {
        return Err(WireError::Protocol(format!(
            "frame length {len} exceeds {FRAME_BYTES_MAX}"
        )));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| WireError::Protocol(e.to_string()))
}
