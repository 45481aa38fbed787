//! The client side of a CONNECT tunnel after the `200`. When hyper hands
//! the client's TCP connection back (the proxy listener serves plain TCP),
//! the tunnel's bytes can be copied in the kernel between two sockets
//! ([`super::idle::splice_tcp`]); any other connection (TLS, or whatever
//! else a listener may serve one day) stays hyper's upgraded stream and is
//! copied through user space.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::accept::Admitted;
use super::idle;
use super::prefixed::Prefixed;

/// A tunnel's client connection: readable and writable like any stream,
/// and spliced to the origin by [`TunnelIo::splice_to`].
pub enum TunnelIo {
    /// The raw connection, after the bytes hyper had already read past the
    /// CONNECT request.
    Tcp(Prefixed<TcpStream>),
    /// Anything hyper cannot hand back as a `TcpStream`.
    Upgraded(TokioIo<Upgraded>),
}

impl TunnelIo {
    /// The raw TCP connection under `upgraded` when there is one.
    pub fn new(upgraded: Upgraded) -> TunnelIo {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => TunnelIo::Tcp(Prefixed::new(parts.read_buf.to_vec(), parts.io.into_inner())),
            Err(upgraded) => TunnelIo::Upgraded(TokioIo::new(upgraded)),
        }
    }

    /// Sends `first` (what was read from the client to decide) to `origin`,
    /// then copies both ways until both sides are done, an error, or
    /// nothing moved for `idle` (then `Ok(None)`). With the client's
    /// admission `slot` the copy is in the kernel, its pipes taken within
    /// the slot's descriptor budget while bytes are in flight.
    pub async fn splice_to(
        self,
        origin: &mut TcpStream,
        first: Vec<u8>,
        idle: Duration,
        slot: Option<&Admitted>,
    ) -> io::Result<Option<(u64, u64)>> {
        origin.write_all(&first).await?;
        // Nothing of the set-up is kept for the tunnel's life.
        drop(first);
        match self {
            TunnelIo::Tcp(client) => {
                let (rest, mut client) = client.into_parts();
                origin.write_all(&rest).await?;
                drop(rest);
                match slot {
                    Some(slot) => idle::splice_tcp(&mut client, origin, idle, slot).await,
                    None => idle::splice(&mut client, origin, idle).await,
                }
            }
            TunnelIo::Upgraded(mut client) => idle::splice(&mut client, origin, idle).await,
        }
    }
}

impl AsyncRead for TunnelIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            TunnelIo::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelIo::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            TunnelIo::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelIo::Tcp(s) => Pin::new(s).poll_flush(cx),
            TunnelIo::Upgraded(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TunnelIo::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            TunnelIo::Upgraded(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TunnelIo::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            TunnelIo::Upgraded(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            TunnelIo::Tcp(s) => s.is_write_vectored(),
            TunnelIo::Upgraded(s) => s.is_write_vectored(),
        }
    }
}
