//! The accept loop: who may connect at all (never an open proxy), how many
//! connections, and HTTP/1.1 with the header limits of the configuration.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dashmap::DashMap;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::respond;
use super::{request, ProxyState};
use crate::identity::canonical_ip;

type HandlerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<super::ProxyBody>, std::convert::Infallible>> + Send>,
>;

/// Connection admission: a global cap and a per-client-address cap, so one
/// misbehaving machine cannot starve the municipality.
pub struct Admission {
    global: Arc<Semaphore>,
    per_client: DashMap<IpAddr, usize>,
    per_client_max: usize,
}

/// Held for the life of one connection.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    admission: Arc<Admission>,
    ip: IpAddr,
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
        Arc::new(Admission { global: Arc::new(Semaphore::new(max)), per_client: DashMap::new(), per_client_max })
    }

    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let permit = Arc::clone(&self.global).try_acquire_owned().ok()?;
        let mut count = self.per_client.entry(ip).or_insert(0);
        if *count >= self.per_client_max {
            return None;
        }
        *count += 1;
        drop(count);
        Some(Admitted { _permit: permit, admission: Arc::clone(self), ip })
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Accepts connections until `shutdown` is cancelled, then waits for the
/// connections in flight to finish (up to `grace`).
pub async fn run(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) {
    let admission =
        Admission::new(state.live().config.proxy.max_connections, state.live().config.proxy.max_connections_per_client);
    let tracker = TaskTracker::new();
    // Refusals are answered politely while few; a flood is just closed.
    let refusing = Arc::new(Semaphore::new(64));
    loop {
        let Some((stream, peer)) = accept_next(&listener, &shutdown).await else { break };
        let ip = canonical_ip(peer.ip());
        if !state.live().config.proxy.allow_clients.iter().any(|net| net.contains(&ip)) {
            refuse_bounded(
                &refusing,
                stream,
                StatusCode::FORBIDDEN,
                ip,
                "refused a client outside proxy.allow_clients",
            );
            continue;
        }
        let Some(admitted) = admission.admit(ip).map(Arc::new) else {
            refuse_bounded(&refusing, stream, StatusCode::SERVICE_UNAVAILABLE, ip, "connection limit reached");
            continue;
        };
        let state = Arc::clone(&state);
        let conn = builder(&state).serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn({
                let state = Arc::clone(&state);
                let admitted = Arc::clone(&admitted);
                move |mut req: Request<Incoming>| {
                    // A CONNECT tunnel outlives this HTTP connection: it takes
                    // the connection's slot with it, so the caps still hold.
                    req.extensions_mut().insert(Arc::clone(&admitted));
                    // Boxed: hyper keeps room for one service future in every
                    // connection for its whole life, and `handle`'s is ~4 KiB.
                    // Boxing moves that into the request and frees it after,
                    // so an idle keep-alive connection holds 16 bytes of it.
                    let handling: HandlerFuture = Box::pin(request::handle(Arc::clone(&state), peer, req));
                    handling
                }
            }),
        );
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let conn = conn.with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            drop(admitted);
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

fn builder(state: &ProxyState) -> hyper::server::conn::http1::Builder {
    let live = state.live();
    super::http1_server(live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
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
        .header_read_timeout(std::time::Duration::from_secs(10))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), conn).await;
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
