//! Splicing with an idle timeout: a tunnel lives as long as bytes move in
//! either direction, and is closed once nothing has moved for the timeout.
//! (A timeout on the whole tunnel would cut long downloads; one per
//! direction would cut a download whose upload side is quiet.)
//!
//! Two TCP sockets (a CONNECT tunnel whose client connection hyper handed
//! back) are copied in the kernel with `splice(2)` through one pipe per
//! direction ([`splice_tcp`]): the bytes never enter user space, which
//! takes most of the proxy's CPU per byte away. Anything else (a TLS
//! client side, an upgraded WebSocket, no pipe to be had) is copied through
//! user space ([`splice`]), with the same idle timeout and shutdown
//! semantics: a side that ends its sending has the other side's writing
//! shut down, and the copy ends when both directions have ended.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{copy_bidirectional, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Records that bytes moved now (milliseconds since `start`).
fn touch(start: Instant, last: &AtomicU64) {
    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
}

pin_project_lite::pin_project! {
    /// A stream that stamps the time of its last read or write.
    struct Stamped<S> {
        #[pin]
        inner: S,
        start: Instant,
        last: Arc<AtomicU64>,
    }
}

impl<S: AsyncRead> AsyncRead for Stamped<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            touch(*this.start, this.last);
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for Stamped<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            touch(*this.start, this.last);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Copies both ways until both sides are done, an error occurs, or nothing
/// has moved for `idle`. Returns the bytes copied each way when it ended normally.
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<Option<(u64, u64)>>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Stamped { inner: a, start, last: Arc::clone(&last) };
    let mut b = Stamped { inner: b, start, last: Arc::clone(&last) };
    until_idle(copy_bidirectional(&mut a, &mut b), start, &last, idle).await
}

/// Like [`splice`] for two TCP sockets, copied in the kernel (`splice(2)`
/// through a pipe each way) when two pipes can be had; through user space
/// otherwise (out of descriptors, or not Linux).
pub async fn splice_tcp(a: &mut TcpStream, b: &mut TcpStream, idle: Duration) -> io::Result<Option<(u64, u64)>> {
    #[cfg(target_os = "linux")]
    match kernel::Pipes::new() {
        Ok(pipes) => {
            let start = Instant::now();
            let last = AtomicU64::new(0);
            return until_idle(pipes.copy(a, b, || touch(start, &last)), start, &last, idle).await;
        }
        Err(e) => tracing::debug!(error = %e, "no pipe for splice(2); copying the tunnel through user space"),
    }
    splice(a, b, idle).await
}

/// Runs `copy` until it ends, or until nothing has moved (`last`, in
/// milliseconds since `start`) for `idle`: then `None`.
async fn until_idle<F>(copy: F, start: Instant, last: &AtomicU64, idle: Duration) -> io::Result<Option<(u64, u64)>>
where
    F: std::future::Future<Output = io::Result<(u64, u64)>>,
{
    tokio::pin!(copy);
    let tick = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            r = &mut copy => return r.map(Some),
            _ = tokio::time::sleep(tick) => {
                let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    return Ok(None);
                }
            }
        }
    }
}

/// The kernel copy: one pipe per direction, `splice(2)` from the reading
/// socket into the pipe and from the pipe into the writing socket.
#[cfg(target_os = "linux")]
mod kernel {
    use std::future::poll_fn;
    use std::io;
    use std::pin::{pin, Pin};
    use std::task::Poll;

    use tokio::net::TcpStream;
    use tokio_splice2::{SpliceIo, SpliceIoCtx};

    /// The two pipes of one tunnel (four descriptors, closed on drop).
    pub(super) struct Pipes {
        a_to_b: SpliceIo<TcpStream, TcpStream>,
        b_to_a: SpliceIo<TcpStream, TcpStream>,
    }

    impl Pipes {
        pub(super) fn new() -> io::Result<Pipes> {
            Ok(Pipes { a_to_b: SpliceIoCtx::prepare()?.into_io(), b_to_a: SpliceIoCtx::prepare()?.into_io() })
        }

        /// Copies both ways like `tokio::io::copy_bidirectional`: when one
        /// side's reading ends, the other side's writing is shut down; done
        /// when both directions are done, or at the first error. `moved` is
        /// called whenever bytes moved. Returns the bytes copied a→b, b→a.
        pub(super) async fn copy(
            self,
            a: &mut TcpStream,
            b: &mut TcpStream,
            moved: impl Fn(),
        ) -> io::Result<(u64, u64)> {
            let mut a_to_b = pin!(self.a_to_b);
            let mut b_to_a = pin!(self.b_to_a);
            let (mut a_done, mut b_done) = (false, false);
            let mut seen = 0usize;
            poll_fn(|cx| {
                if !a_done {
                    match a_to_b.as_mut().poll_execute(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
                        Poll::Ready(Ok(())) => a_done = true,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                if !b_done {
                    match b_to_a.as_mut().poll_execute(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
                        Poll::Ready(Ok(())) => b_done = true,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                let now = a_to_b.has_read() + a_to_b.has_written() + b_to_a.has_read() + b_to_a.has_written();
                if now != seen {
                    seen = now;
                    moved();
                }
                if a_done && b_done {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            })
            .await?;
            Ok((a_to_b.has_written() as u64, b_to_a.has_written() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn quiet_tunnel_is_closed_busy_one_is_not() {
        let (mut a_client, mut a) = tokio::io::duplex(1024);
        let (mut b, mut b_origin) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move { splice(&mut a, &mut b, Duration::from_millis(300)).await });
        // Busy for longer than the idle timeout: stays open.
        for _ in 0..6 {
            a_client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_origin.read_exact(&mut one).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!task.is_finished());
        // Then quiet: closed by the idle timeout.
        let r = tokio::time::timeout(Duration::from_secs(3), task).await.unwrap().unwrap().unwrap();
        assert!(r.is_none());
    }
}
