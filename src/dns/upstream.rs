//! Forwarding an allowed query to the municipality's resolver and bringing
//! its answer back unchanged: over UDP for UDP clients (a truncated answer
//! goes back truncated, and the client asks again over TCP), over TCP for
//! TCP clients. Resolvers are tried in order, each within the timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::message::answers;

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
    upstreams: &[SocketAddr],
    query: &[u8],
    transport: Transport,
    timeout: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    let metrics = &crate::metrics::metrics().dns;
    let mut last = UpstreamError::Timeout(timeout);
    for &addr in upstreams {
        let started = Instant::now();
        let attempt = match transport {
            Transport::Udp => tokio::time::timeout(timeout, udp(addr, query)).await,
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

/// One query over a fresh UDP socket connected to the resolver: a random
/// source port per query, and only the resolver's own datagrams accepted.
async fn udp(addr: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if answers(query, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
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
