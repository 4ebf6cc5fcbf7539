//! The write deadline of a connection (`server.write_timeout_seconds`).
//!
//! [`WriteDeadline`] wraps the accepted socket: when a write (or flush)
//! cannot go on because the socket accepts no byte, a timer starts; any byte
//! written stops it, and the next stall starts it afresh. If it fires while
//! the write is still pending, the write fails with [`WriteTimedOut`]
//! (`io::ErrorKind::TimedOut`): hyper then ends the connection and drops the
//! answer's buffers. The timer runs only while a write is pending, so an idle
//! keep-alive connection is left to the header read timeout.
//!
//! A slow reader drains the kernel's send buffer (megabytes, autotuned) long
//! before the socket takes a write again (Linux wants a third of it free):
//! so while a write is pending, the bytes the kernel still holds for the
//! peer ([`SendQueue`], `SIOCOUTQ`) are looked at every quarter of the
//! timeout, and fewer than at the last look count as progress.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An IO whose writes fail once they have made no progress for `timeout`.
pub(super) struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Allocated at the first stall, then reset for each look.
    timer: Option<Pin<Box<Sleep>>>,
    /// While a write is pending: since when nothing has moved (`timer` runs).
    stalled_since: Option<Instant>,
    /// The kernel's send queue at the last look.
    queued: Option<usize>,
}

/// The error of a write that made no progress for the deadline: the
/// `get_ref` of its `io::Error` (kind `TimedOut`).
#[derive(Debug, thiserror::Error)]
#[error("the answer made no progress for {} s", .0.as_secs_f64())]
pub(super) struct WriteTimedOut(pub(super) Duration);

/// The bytes a socket's kernel side still holds for the peer (not sent, or
/// not acknowledged), where the platform tells.
pub(super) trait SendQueue {
    fn send_queue(&self) -> Option<usize>;
}

impl SendQueue for tokio::net::TcpStream {
    #[cfg(all(
        target_os = "linux",
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "riscv64"
        )
    ))]
    fn send_queue(&self) -> Option<usize> {
        use std::ffi::{c_int, c_ulong};
        use std::os::fd::AsRawFd;
        extern "C" {
            fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
        }
        /// `SIOCOUTQ` (`TIOCOUTQ` in asm-generic/ioctls.h, these arches').
        const SIOCOUTQ: c_ulong = 0x5411;
        let mut queued: c_int = 0;
        // SAFETY: the descriptor is the stream's own, open while `self`
        // lives; SIOCOUTQ writes one int through the pointer.
        let ok = unsafe { ioctl(self.as_raw_fd(), SIOCOUTQ, &mut queued as *mut c_int) } == 0;
        ok.then(|| usize::try_from(queued).ok()).flatten()
    }

    #[cfg(not(all(
        target_os = "linux",
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "riscv64"
        )
    )))]
    fn send_queue(&self) -> Option<usize> {
        None
    }
}

impl<T: SendQueue> WriteDeadline<T> {
    pub(super) fn new(inner: T, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            timer: None,
            stalled_since: None,
            queued: None,
        }
    }

    /// Stops the timer when the inner write completed (bytes went, or it
    /// failed), starts it at a new stall, looks at the kernel's send queue
    /// every quarter of the timeout, and fails the write once nothing moved
    /// for the whole timeout.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled_since = None;
            return poll;
        }
        let look = self.timeout / 4;
        let now = Instant::now();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(now + look)));
        let mut since = match self.stalled_since {
            Some(since) => since,
            None => {
                timer.as_mut().reset(now + look);
                self.queued = self.inner.send_queue();
                now
            }
        };
        self.stalled_since = Some(since);
        loop {
            ready!(timer.as_mut().poll(cx));
            let now = Instant::now();
            let queued = self.inner.send_queue();
            if matches!((queued, self.queued), (Some(q), Some(before)) if q < before) {
                since = now;
            }
            self.queued = queued;
            self.stalled_since = Some(since);
            let deadline = since + self.timeout;
            if now >= deadline {
                break;
            }
            timer.as_mut().reset(deadline.min(now + look));
        }
        self.stalled_since = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            WriteTimedOut(self.timeout),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + SendQueue + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
