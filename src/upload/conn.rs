//! Frames over a socket, for both ends: read one frame under a timeout (header checked
//! before the payload is read), write one frame.
//!
//! The read buffer grows to the largest frame actually read, never to what a header merely
//! claims: the station reads a peer's first frames with [`FrameReader::read_limited`] and a
//! small bound, so a connection that has not authenticated holds a few hundred bytes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::SessionError;
use super::frame::{
    check_crc, encode_frame, parse_header, FrameError, FrameType, FRAME_BYTES_MAX, FRAME_CRC_BYTES,
    FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX,
};

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no frame within {0:?}")]
    Timeout(Duration),
    #[error("peer closed the connection")]
    Closed,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Reads frames into one buffer, grown to the largest frame read (at most
/// [`FRAME_BYTES_MAX`]) and then reused.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader whose buffer starts empty.
    pub fn new(inner: R) -> Self {
        Self::with_capacity(inner, 0)
    }

    /// A reader whose buffer starts at `bytes` (a frame that fits reads without allocating).
    pub fn with_capacity(inner: R, bytes: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(bytes.min(FRAME_BYTES_MAX)),
        }
    }

    /// Bytes the buffer holds allocated.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next frame's type and payload, within `timeout`.
    pub async fn read(&mut self, timeout: Duration) -> Result<(FrameType, &[u8]), WireError> {
        self.read_limited(timeout, FRAME_PAYLOAD_BYTES_MAX).await
    }

    /// As [`Self::read`], but a header announcing more than `payload_max` bytes is refused
    /// ([`FrameError::OverLimit`]) before any of its payload is read or any buffer grows.
    pub async fn read_limited(
        &mut self,
        timeout: Duration,
        payload_max: usize,
    ) -> Result<(FrameType, &[u8]), WireError> {
        match tokio::time::timeout(timeout, self.read_inner(payload_max)).await {
            Ok(Ok((ty, len))) => Ok((ty, &self.buf[..len])),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WireError::Timeout(timeout)),
        }
    }

    async fn read_inner(&mut self, payload_max: usize) -> Result<(FrameType, usize), WireError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        match self.inner.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(WireError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let (ty, len) = parse_header(&header)?;
        if len > payload_max {
            return Err(FrameError::OverLimit {
                len,
                max: payload_max,
            }
            .into());
        }
        self.buf.clear();
        self.buf.resize(len + FRAME_CRC_BYTES, 0);
        if let Err(e) = self.inner.read_exact(&mut self.buf).await {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Truncated {
                    needed: FRAME_HEADER_BYTES + len + FRAME_CRC_BYTES,
                }
                .into()
            } else {
                e.into()
            });
        }
        check_crc(&header, &self.buf)?;
        Ok((ty, len))
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    ty: FrameType,
    payload: &[u8],
) -> Result<(), WireError> {
    w.write_all(&encode_frame(ty, payload)).await?;
    Ok(())
}
