//! Forwarding an allowed query to the municipality's resolver and bringing
//! its answer back unchanged: over UDP for UDP clients (a truncated answer
//! goes back truncated, and the client asks again over TCP), over TCP for
//! TCP clients. Resolvers are tried in order, each within the timeout. UDP
//! goes through a few long-lived sockets per resolver ([`super::pool`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::message::answers;
use super::pool::UdpPool;

/// One upstream resolver and its UDP sockets.
pub struct Upstream {
    pub addr: SocketAddr,
    udp: UdpPool,
}

impl Upstream {
    /// Opens the UDP sockets to `addr` (TCP connects per query).
    pub async fn connect(addr: SocketAddr, shutdown: &CancellationToken) -> std::io::Result<Upstream> {
        Ok(Upstream { addr, udp: UdpPool::connect(addr, shutdown).await? })
    }
}

/// Why no resolver answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver answered within {0:?}")]
    Timeout(Duration),
    #[error("upstream {addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
}

/// Which transport the client used, and therefore the upstream gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Asks the resolvers in order; the first answer wins. Returns the answer
/// bytes as the resolver sent them.
pub async fn forward(
    upstreams: &[Upstream],
    query: &[u8],
    transport: Transport,
    timeout: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    let metrics = &crate::metrics::metrics().dns;
    let mut last = UpstreamError::Timeout(timeout);
    for upstream in upstreams {
        let addr = upstream.addr;
        let started = Instant::now();
        let attempt = match transport {
            Transport::Udp => tokio::time::timeout(timeout, upstream.udp.exchange(query)).await,
            Transport::Tcp => tokio::time::timeout(timeout, tcp(addr, query)).await,
        };
        match attempt {
            Ok(Ok(answer)) => {
                metrics.upstream_latency.observe(started.elapsed());
                return Ok(answer);
            }
            Ok(Err(source)) => last = UpstreamError::Io { addr, source },
            Err(_) => last = UpstreamError::Timeout(timeout),
        }
        metrics.upstream_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Err(last)
}

/// One query over TCP (two-byte length prefix, RFC 1035 4.2.2).
async fn tcp(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    loop {
        let n = usize::from(stream.read_u16().await?);
        let mut buf = vec![0u8; n];
        stream.read_exact(&mut buf).await?;
        if answers(query, &buf) {
            return Ok(buf);
        }
    }
}
