//! Splicing with an idle timeout: a tunnel lives as long as bytes move in
//! either direction, and is closed once nothing has moved for the timeout.
//! (A timeout on the whole tunnel would cut long downloads; one per
//! direction would cut a download whose upload side is quiet.)
//!
//! Two TCP sockets (a CONNECT tunnel whose client connection hyper handed
//! back) are copied in the kernel with `splice(2)` through one pipe per
//! direction ([`splice_tcp`], pipes pooled and held only while bytes are in
//! flight: [`pipes`]): the bytes never enter user space, which takes most
//! of the proxy's CPU per byte away. Anything else (a TLS client side, an
//! upgraded WebSocket) is copied through user space ([`splice`]), with the same idle timeout and shutdown
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
/// through pooled pipes, taken within `slot`'s descriptor budget only while
/// bytes are in flight: [`pipes`]); through user space elsewhere than Linux.
pub async fn splice_tcp(
    a: &mut TcpStream,
    b: &mut TcpStream,
    idle: Duration,
    slot: &super::accept::Admitted,
) -> io::Result<Option<(u64, u64)>> {
    #[cfg(target_os = "linux")]
    {
        let start = Instant::now();
        let last = AtomicU64::new(0);
        until_idle(pipes::copy(a, b, slot, || touch(start, &last)), start, &last, idle).await
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = slot;
        splice(a, b, idle).await
    }
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

#[cfg(target_os = "linux")]
pub mod pipes;

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
