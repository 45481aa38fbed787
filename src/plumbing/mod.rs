//! HTTP plumbing shared by every listener (the forward proxy, the
//! compliance gateway and the officers' dashboard): the body type, our own
//! responses, relaying to an upstream, the pooled origin client, and the
//! accept loop's admission caps. It knows nothing of policy, compliance or
//! identity: products build on it, it builds on no product.

pub mod accept;
pub mod destinations;
pub mod headers;
pub mod idle;
pub mod idle_body;
pub mod prefixed;
pub mod relay;
pub mod respond;
pub mod tunnel_io;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use destinations::{DeniedDestinations, GuardedResolver};

/// Errors a body stream can carry, from either side of a relay.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response weerwal sends: streamed from an origin
/// or upstream, or a page of our own.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// The HTTP/1.1 server settings every listener and intercepted connection
/// uses: the slowloris timeout and an exact limit on the request head.
/// (`max_buf_size` alone is checked only between reads, so one large read
/// could carry a head well past it; `max_header_size` counts the head.)
pub fn http1_server(
    header_timeout: std::time::Duration,
    max_header_bytes: usize,
) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(max_header_bytes.max(8192))
        .max_header_size(max_header_bytes)
        .keep_alive(true);
    b
}

/// The client type toward origins and upstreams.
pub type OriginClient = Client<HttpConnector<GuardedResolver>, hyper::body::Incoming>;

/// The pooled client toward origins (and gateway upstreams): HTTP/1.1,
/// bounded connect time, idle connections kept for reuse, and only the
/// destinations `denied` allows (checked after DNS).
pub fn origin_client(connect_timeout: std::time::Duration, denied: DeniedDestinations) -> OriginClient {
    let mut connector = HttpConnector::new_with_resolver(GuardedResolver::new(denied));
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .set_host(false)
        .build(connector)
}
