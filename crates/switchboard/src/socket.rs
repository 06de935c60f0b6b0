//! What the WebSocket connection driver needs of a socket: readiness, non-blocking reads and
//! vectored writes, and a shutdown. A plain [`TcpStream`] is one as it is (the driver costs
//! nothing extra for it); [`crate::tls::TlsSocket`] is one over rustls. Either way the driver
//! polls readiness and reads into its own buffer only when bytes are there, so an idle
//! connection holds no read buffer of the driver's.

use std::future::Future;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

pub trait Socket: Send + 'static {
    /// Ready when a read may make progress (bytes, the end of the stream, or an error).
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Ready when a write may make progress.
    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Appends what can be read now to `buf`: `Ok(0)` at the end of the stream,
    /// `WouldBlock` when there is nothing (readiness is then cleared).
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Writes (or takes for writing) what it can of `bufs` now; `WouldBlock` when nothing.
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Whether the socket layer itself holds bytes it still has to send (TLS records that
    /// the kernel did not take yet): the driver then waits for writability and calls
    /// [`try_flush`](Socket::try_flush).
    fn has_pending_output(&self) -> bool {
        false
    }
    /// Sends what [`has_pending_output`](Socket::has_pending_output) holds; `WouldBlock`
    /// while some is left.
    fn try_flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Ends our direction of the stream (TLS: `close_notify`, then FIN).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Socket for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        // A short read took all the kernel had: the readiness is cleared with it, as a
        // `WouldBlock` would clear it, which saves the second read (and the turn of the
        // driver's loop) that would only say so. The readiness cleared is the one seen
        // before this read, so bytes that arrive meanwhile still wake the task.
        let spare = buf.capacity() - buf.len();
        let mut read = None;
        let result = self.try_io(Interest::READABLE, || {
            let n = TcpStream::try_read_buf(self, buf)?;
            read = Some(n);
            if n > 0 && n < spare {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match read {
            Some(n) => Ok(n),
            None => result.map(|()| 0),
        }
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteExt::shutdown(self).await
    }
}

/// Writes all of `bytes`, waiting for writability as needed (for the few frames written
/// outside the driver, such as a refusal's close frame).
pub async fn write_all<S: Socket>(s: &mut S, mut bytes: &[u8]) -> io::Result<()> {
    loop {
        while !bytes.is_empty() {
            match s.try_write_vectored(&[IoSlice::new(bytes)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if bytes.is_empty() {
            match s.try_flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        std::future::poll_fn(|cx| s.poll_write_ready(cx)).await?;
    }
}

/// Reads what arrives next into `buf` (`Ok(0)` at the end of the stream).
pub async fn read_some<S: Socket>(s: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        std::future::poll_fn(|cx| s.poll_read_ready(cx)).await?;
        match s.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}
