//! Lingering close: a connection the server closes while the client may
//! still be sending (a 413 or 401 answered before the body was read) is
//! drained for a moment before its socket is released, so the client reads
//! the answer instead of a reset.
//!
//! Closing a TCP socket whose receive queue holds unread bytes, or that
//! receives more after it is closed, makes the kernel send RST, and an RST that reaches the client before
//! it has read the answer throws the answer away ("connection reset by
//! peer"). nginx and Apache keep such a socket open after sending the
//! answer, discarding what arrives, until the client stops or a short time
//! passes; [`Linger`] does the same when its socket is dropped before the
//! client has closed its side (bytes hyper had already read into its own
//! buffer leave the kernel's queue empty, and the rest of the body is still
//! on its way, so an empty queue is no sign the client is done): the write
//! side is shut (FIN after the answer), and what the client still sends is
//! read and discarded for at most [`LINGER_TIME`] or [`LINGER_BYTES`], on a
//! task of its own. At most [`MAX_LINGERING`] sockets linger at once; past
//! that a socket is closed at once, as before.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::deadline::SendQueue;

/// Longest a closed connection is drained.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes discarded from one closed connection.
const LINGER_BYTES: usize = 4 << 20;
/// Most sockets lingering at once.
const MAX_LINGERING: usize = 256;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A TCP stream that lingers when dropped with unread input.
pub(super) struct Linger {
    inner: Option<TcpStream>,
}

impl Linger {
    pub(super) fn new(stream: TcpStream) -> Linger {
        Linger {
            inner: Some(stream),
        }
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        match &mut self.get_mut().inner {
            Some(stream) => Pin::new(stream),
            // `inner` is taken only in `drop`.
            None => unreachable!("a Linger is used after drop"),
        }
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else {
            return;
        };
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            // The client has closed its side: nothing more can come.
            Ok(0) => return,
            // Input waits unread, or may still come (the rest of a body
            // hyper stopped reading): either would be answered by a reset.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The socket is broken already.
            Err(_) => return,
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER_TIME, drain(stream)).await;
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Shuts the write side, then reads and discards until the client closes
/// or [`LINGER_BYTES`] have come.
async fn drain(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 8192];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

impl SendQueue for Linger {
    fn send_queue(&self) -> Option<usize> {
        self.inner.as_ref().and_then(SendQueue::send_queue)
    }
}

impl AsyncRead for Linger {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Linger {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
