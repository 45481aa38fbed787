//! The forward proxy: accept loop ([`listener`]), request handling
//! ([`request`]), HTTP forwarding ([`forward`]), CONNECT tunnels and TLS
//! interception ([`connect`]). Decisions come from [`crate::policy`].

pub mod client_hello;
pub mod connect;
pub mod destinations;
pub mod forward;
pub mod headers;
pub mod idle;
pub mod listener;
pub mod prefixed;
pub mod request;
pub mod respond;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::audit::AuditLog;
use crate::ca::LeafCache;
use crate::compliance::Compliance;
use crate::config::Config;
use crate::identity::Identity;
use crate::policy::Policy;
use destinations::{DeniedDestinations, GuardedResolver};

/// Errors a body stream can carry, from either side of the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends: streamed from an
/// origin, or a page of our own.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Everything a connection needs, shared by all of them. The policy sits
/// behind an `ArcSwap` so a reload replaces it whole while requests in
/// flight finish with the policy they started with.
pub struct ProxyState {
    pub config: Config,
    pub policy: Arc<ArcSwap<Policy>>,
    pub audit: AuditLog,
    pub leaves: Option<Arc<LeafCache>>,
    pub identity: Arc<Identity>,
    /// Present when `[compliance]` is configured.
    pub compliance: Option<Arc<Compliance>>,
    pub client: OriginClient,
    /// Where the proxy must not connect for a client.
    pub denied: DeniedDestinations,
    /// The addresses the proxy listens on, to refuse requests to itself.
    pub local_addrs: Vec<SocketAddr>,
}

/// The client type toward origins and upstreams.
pub type OriginClient = Client<HttpConnector<GuardedResolver>, hyper::body::Incoming>;

/// The pooled client toward origins (and gateway upstreams): HTTP/1.1,
/// bounded connect time, idle connections kept for reuse.
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

impl ProxyState {
    /// Whether `host:port` is this proxy itself (a request that would loop).
    pub fn is_self(&self, ip: IpAddr, port: u16) -> bool {
        self.local_addrs.iter().any(|a| {
            a.port() == port
                && (a.ip() == ip || ((a.ip().is_unspecified() || a.ip().is_loopback()) && ip.is_loopback()))
        })
    }
}
