//! The forward proxy's listener: the shared accept loop (never an open
//! proxy: only `proxy.allow_clients`; connection caps), then HTTP/1.1 with
//! the header limits of the configuration, every request to
//! [`super::request::handle`].

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{request, ProxyState};
use crate::plumbing::accept::{self, serve_until_shutdown, Accepted, Admission};
use crate::plumbing::{http1_server, ProxyBody};

type HandlerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<ProxyBody>, std::convert::Infallible>> + Send>,
>;

/// Accepts connections until `shutdown` is cancelled, then waits for the
/// connections in flight to finish (up to `grace`).
pub async fn run(
    listener: TcpListener,
    state: Arc<ProxyState>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) {
    let allowed = {
        let state = Arc::clone(&state);
        move |ip| state.live().config.proxy.allow_clients.iter().any(|net| net.contains(&ip))
    };
    accept::run(listener, admission, shutdown, grace, allowed, move |conn| serve(Arc::clone(&state), conn)).await
}

async fn serve(state: Arc<ProxyState>, conn: Accepted) {
    let Accepted { stream, peer, slot, shutdown } = conn;
    let builder = {
        let live = state.live();
        http1_server(live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
    };
    let svc = hyper::service::service_fn({
        let slot = Arc::clone(&slot);
        move |mut req: Request<Incoming>| {
            // A CONNECT tunnel or an upgraded WebSocket outlives this HTTP
            // connection: it takes the connection's slot with it, so the
            // caps still hold.
            req.extensions_mut().insert(Arc::clone(&slot));
            // Boxed: hyper keeps room for one service future in every
            // connection for its whole life, and `handle`'s is ~4 KiB.
            // Boxing moves that into the request and frees it after,
            // so an idle keep-alive connection holds 16 bytes of it.
            // Keep that future well under 7 KiB (it was 7,200 bytes with the
            // directory's future inline): jemalloc then serves it from the
            // same 8 KiB size class as hyper's two per-connection buffers,
            // and the next connection's buffer reuses the freed, fully
            // written block, two resident pages instead of one: +4 KiB per
            // idle client (bench/RESULTS.md, issue 21, third round).
            let handling: HandlerFuture = Box::pin(request::handle(Arc::clone(&state), peer, req));
            handling
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
    serve_until_shutdown(conn, &shutdown, |c| c.graceful_shutdown(), peer, "proxy").await;
    drop(slot);
}
