//! The accept loop every listener shares (proxy, gateway, dashboard): who
//! may connect at all, how many connections in all and per client address,
//! and a bounded, polite refusal for the rest. Each admitted connection
//! holds its slot ([`Admitted`]) until it closes, also when it outlives its
//! HTTP connection as a tunnel or an upgraded WebSocket.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

use super::respond;
use crate::identity::canonical_ip;

/// Connection admission: a global cap and a per-client-address cap, so one
/// misbehaving machine cannot starve the municipality.
pub struct Admission {
    global: Arc<Semaphore>,
    per_client: DashMap<IpAddr, usize>,
    per_client_max: usize,
    /// The descriptors the process may use, in pairs: a connection holds
    /// one pair (client and origin), a tunnel copied in the kernel two more
    /// (its pipes). A connection is admitted, and a tunnel given pipes, only
    /// while pairs are left, so neither ever runs out of descriptors.
    fd_pairs: Arc<Semaphore>,
}

/// Held for the life of one connection (and of whatever it turns into).
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    _fds: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// Leave for one tunnel to hold its kernel-copy pipes, until dropped.
pub struct PipeLeave {
    _pairs: OwnedSemaphorePermit,
}

impl Admitted {
    /// Leave for this connection's tunnel to copy in the kernel (two pipes,
    /// four descriptors), or `None` when the descriptors are spoken for:
    /// the tunnel is then copied through user space.
    pub fn pipes(&self) -> Option<PipeLeave> {
        Arc::clone(&self.admission.fd_pairs).try_acquire_many_owned(2).ok().map(|p| PipeLeave { _pairs: p })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut e) = self.admission.per_client.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl Admission {
    pub fn new(max: usize, per_client_max: usize) -> Arc<Admission> {
        Self::with_fd_pairs(max, per_client_max, Semaphore::MAX_PERMITS)
    }

    /// Like [`Admission::new`], within `fd_pairs` pairs of descriptors for
    /// connections and the pipes of tunnels copied in the kernel.
    pub fn with_fd_pairs(max: usize, per_client_max: usize, fd_pairs: usize) -> Arc<Admission> {
        Arc::new(Admission {
            global: Arc::new(Semaphore::new(max)),
            per_client: DashMap::new(),
            per_client_max,
            fd_pairs: Arc::new(Semaphore::new(fd_pairs.min(Semaphore::MAX_PERMITS))),
        })
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let permit = Arc::clone(&self.global).try_acquire_owned().ok()?;
        let fds = Arc::clone(&self.fd_pairs).try_acquire_owned().ok()?;
        let mut count = self.per_client.entry(ip).or_insert(0);
        if *count >= self.per_client_max {
            return None;
        }
        *count += 1;
        drop(count);
        Some(Admitted { _permit: permit, _fds: fds, admission: Arc::clone(self), ip })
    }
}

/// The next connection, or `None` once `shutdown` is cancelled. Accept
/// errors (out of file descriptors and the like) are logged and retried
/// after a short pause rather than ending the listener.
pub async fn accept_next(listener: &TcpListener, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Drives one HTTP connection to its end. When `shutdown` is cancelled
/// first, `drain` asks it to finish the request in flight and close (hyper's
/// `graceful_shutdown`, which each connection type has as its own method),
/// and the connection is driven until it has. Errors are logged at debug:
/// clients hang up all the time.
///
/// A hand-written future rather than an `async fn`: an `async fn` keeps its
/// by-value argument and the pinned copy of it as two fields, so every idle
/// connection's task held hyper's connection state twice (~760 bytes).
pub fn serve_until_shutdown<'a, C, E, D>(
    conn: C,
    shutdown: &'a CancellationToken,
    drain: D,
    peer: SocketAddr,
    what: &'static str,
) -> ServeUntilShutdown<'a, C, D>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
    D: FnOnce(Pin<&mut C>),
{
    ServeUntilShutdown { conn, cancelled: shutdown.cancelled(), drain: Some(drain), peer, what }
}

pin_project_lite::pin_project! {
    /// The future of [`serve_until_shutdown`].
    pub struct ServeUntilShutdown<'a, C, D> {
        #[pin]
        conn: C,
        #[pin]
        cancelled: WaitForCancellationFuture<'a>,
        // `Some` until the shutdown has asked the connection to drain.
        drain: Option<D>,
        peer: SocketAddr,
        what: &'static str,
    }
}

impl<C, E, D> Future for ServeUntilShutdown<'_, C, D>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
    D: FnOnce(Pin<&mut C>),
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if this.drain.is_some() && this.cancelled.as_mut().poll(cx).is_ready() {
            if let Some(drain) = this.drain.take() {
                drain(this.conn.as_mut());
            }
        }
        let result = std::task::ready!(this.conn.poll(cx));
        if let Err(e) = result {
            tracing::debug!(client = %this.peer, error = %e, "{} connection ended with an error", this.what);
        }
        Poll::Ready(())
    }
}

/// The TLS handshake of an accepted connection (the gateway's, the
/// dashboard's), bounded by `limit`: a client that connects and says
/// nothing must not hold a descriptor forever. `None`, logged at debug,
/// when it fails or times out.
pub async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
    peer: SocketAddr,
    what: &'static str,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, error = %e, "{what} TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(client = %peer, "{what} TLS handshake timed out");
            None
        }
    }
}

/// One accepted, admitted connection, handed to the listener's own code.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: Arc<Admitted>,
    pub shutdown: CancellationToken,
}

/// Accepts connections until `shutdown` is cancelled: refuses clients that
/// `allowed` rejects (403) and connections beyond the caps (503), runs
/// `serve` for the rest, then waits for connections in flight (up to `grace`).
pub async fn run<F, Fut>(
    listener: TcpListener,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    grace: Duration,
    allowed: impl Fn(IpAddr) -> bool,
    serve: F,
) where
    F: Fn(Accepted) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    // Refusals are answered politely while few; a flood is just closed.
    let refusing = Arc::new(Semaphore::new(64));
    loop {
        let Some((stream, peer)) = accept_next(&listener, &shutdown).await else { break };
        let ip = canonical_ip(peer.ip());
        if !allowed(ip) {
            refuse_bounded(&refusing, stream, StatusCode::FORBIDDEN, ip, "refused a client outside allow_clients");
            continue;
        }
        let Some(slot) = admission.admit(ip).map(Arc::new) else {
            refuse_bounded(&refusing, stream, StatusCode::SERVICE_UNAVAILABLE, ip, "connection limit reached");
            continue;
        };
        tracker.spawn(serve(Accepted { stream, peer, slot, shutdown: shutdown.clone() }));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

/// Refuses a connection with a page while fewer than the semaphore's
/// permits are being refused; beyond that, closes it at once (and does not
/// log each one), so a flood costs neither tasks nor log lines.
fn refuse_bounded(refusing: &Arc<Semaphore>, stream: TcpStream, status: StatusCode, ip: IpAddr, why: &'static str) {
    let Ok(permit) = Arc::clone(refusing).try_acquire_owned() else {
        return;
    };
    tracing::warn!(client = %ip, "{why}");
    tokio::spawn(async move {
        refuse(stream, status).await;
        drop(permit);
    });
}

/// Answers every request on a connection we will not serve with `status`
/// and closes it; nothing is forwarded or tunnelled.
async fn refuse(stream: TcpStream, status: StatusCode) {
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
        let mut resp = if status == StatusCode::FORBIDDEN {
            respond::error(status, "Deze proxy bedient uw netwerk niet.", "This proxy does not serve your network.")
        } else {
            respond::error(
                status,
                "De proxy is op dit moment te druk. Probeer het zo opnieuw.",
                "The proxy is too busy right now. Please try again shortly.",
            )
        };
        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(Duration::from_secs(15), conn).await;
}

/// Binds every listen address, failing with the address that could not be bound.
pub async fn bind_all(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.push(l);
    }
    Ok(listeners)
}
