//! A stream that first yields bytes already read from it. The proxy reads a
//! ClientHello (or a plain HTTP request) to decide, then must hand the same
//! bytes to whoever handles the connection next: the origin, or our own TLS
//! or HTTP server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project_lite::pin_project! {
    /// `inner`, with `prefix` read before it.
    pub struct Prefixed<S> {
        prefix: Vec<u8>,
        pos: usize,
        #[pin]
        inner: S,
    }
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }

    /// The prefix bytes not read yet, and the stream: for a caller that
    /// goes on with the stream itself (a kernel copy between sockets).
    pub fn into_parts(mut self) -> (Vec<u8>, S) {
        self.prefix.drain(..self.pos);
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.pos < this.prefix.len() {
            let rest = &this.prefix[*this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *this.pos += n;
            if *this.pos == this.prefix.len() {
                *this.prefix = Vec::new();
                *this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn prefix_then_inner() {
        let inner: &[u8] = b" world";
        let mut s = Prefixed::new(b"hello".to_vec(), inner);
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn into_parts_keeps_the_unread_prefix() {
        let inner: &[u8] = b"!";
        let mut s = Prefixed::new(b"hello".to_vec(), inner);
        let mut two = [0u8; 2];
        s.read_exact(&mut two).await.unwrap();
        let (rest, inner) = s.into_parts();
        assert_eq!((&rest[..], inner), (&b"llo"[..], &b"!"[..]));
    }
}
