//! Frames over a socket, for both ends: read one frame under a timeout (header checked
//! before the payload is read), write one frame.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::auth::SessionError;
use super::frame::{
    check_crc, encode_frame, parse_header, FrameError, FrameType, FRAME_BYTES_MAX, FRAME_CRC_BYTES,
    FRAME_HEADER_BYTES,
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

/// Reads frames into one buffer sized once for the largest frame.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::with_capacity(FRAME_BYTES_MAX),
        }
    }

    /// The next frame's type and payload, within `timeout`.
    pub async fn read(&mut self, timeout: Duration) -> Result<(FrameType, &[u8]), WireError> {
        match tokio::time::timeout(timeout, self.read_inner()).await {
            Ok(Ok((ty, len))) => Ok((ty, &self.buf[..len])),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WireError::Timeout(timeout)),
        }
    }

    async fn read_inner(&mut self) -> Result<(FrameType, usize), WireError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        match self.inner.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(WireError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let (ty, len) = parse_header(&header)?;
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
