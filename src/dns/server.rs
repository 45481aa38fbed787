//! The DNS sockets: UDP and TCP on the same address and port. Each query is
//! handled by [`super::handle`]; the sockets only move bytes, bounded in
//! how much they hold at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::upstream::Transport;
use super::DnsState;

/// UDP queries in flight at once; beyond it new ones are dropped (the
/// client retries), so a flood cannot grow memory without bound.
const MAX_UDP_IN_FLIGHT: usize = 4096;
/// TCP connections at once per listener.
const MAX_TCP_CONNECTIONS: usize = 512;
/// A TCP client quiet this long is disconnected (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// One `listen` address: its UDP socket and TCP listener, on one port.
pub struct DnsListener {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

impl DnsListener {
    /// The address both sockets listen on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Binds UDP and TCP on each address. With port 0 both get the same
/// free port (a few tries: another program may take the TCP port first).
pub async fn bind_all(addrs: &[SocketAddr]) -> std::io::Result<Vec<DnsListener>> {
    let mut out = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let mut tries = 0;
        let listener = loop {
            let udp = UdpSocket::bind(addr).await.map_err(|e| named(addr, "UDP", e))?;
            let port = udp.local_addr()?.port();
            match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                Ok(tcp) => break DnsListener { udp, tcp },
                Err(_) if addr.port() == 0 && tries < 16 => tries += 1,
                Err(e) => return Err(named(addr, "TCP", e)),
            }
        };
        out.push(listener);
    }
    Ok(out)
}

fn named(addr: SocketAddr, proto: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("dns.listen {addr} ({proto}): {e}"))
}

/// Serves one listener's UDP and TCP until shutdown.
pub async fn run(listener: DnsListener, state: Arc<DnsState>, shutdown: CancellationToken) {
    let DnsListener { udp, tcp } = listener;
    tokio::join!(run_udp(udp, Arc::clone(&state), shutdown.clone()), run_tcp(tcp, state, shutdown));
}

async fn run_udp(socket: UdpSocket, state: Arc<DnsState>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // An ICMP error from an earlier send, or a transient
                // shortage: the socket itself is fine.
                Err(_) => continue,
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            crate::metrics::metrics().dns.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let packet = buf[..n].to_vec();
        let (socket, state) = (Arc::clone(&socket), Arc::clone(&state));
        tokio::spawn(async move {
            if let Some(reply) = super::handle(&state, peer, &packet, Transport::Udp).await {
                let _ = socket.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

async fn run_tcp(listener: TcpListener, state: Arc<DnsState>, shutdown: CancellationToken) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(_) => {
                    // Out of file descriptors: give others a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            continue;
        };
        let (state, shutdown) = (Arc::clone(&state), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_tcp(stream, peer, &state) => {}
                _ = shutdown.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// Queries on one TCP connection, answered in order.
async fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, state: &DnsState) {
    let _ = stream.set_nodelay(true);
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else { return };
        let mut packet = vec![0u8; usize::from(len)];
        let Ok(Ok(_)) = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await else { return };
        let Some(reply) = super::handle(state, peer, &packet, Transport::Tcp).await else { return };
        let Ok(len) = u16::try_from(reply.len()) else { return };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
