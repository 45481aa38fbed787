//! The forward proxy: accept loop ([`listener`]), request handling
//! ([`request`]), HTTP forwarding ([`forward`]), CONNECT tunnels and TLS
//! interception ([`connect`]). Decisions come from [`crate::policy`].

pub mod client_hello;
pub mod connect;
pub mod destinations;
pub mod forward;
pub mod headers;
pub mod idle;
pub mod idle_body;
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

/// Everything a connection needs, shared by all of them. The policy and
/// the reloadable settings sit behind an `ArcSwap` so a reload replaces
/// them whole while requests in flight finish with what they started with.
pub struct ProxyState {
    pub live: Arc<ArcSwap<Live>>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub audit: AuditLog,
    pub leaves: Option<Arc<LeafCache>>,
    pub identity: Arc<Identity>,
    /// Present when `[compliance]` is configured.
    pub compliance: Option<Arc<Compliance>>,
    /// The addresses the proxy listens on, to refuse requests to itself.
    pub local_addrs: Vec<SocketAddr>,
}

/// The settings a reload may change, with what is built from them: swapped
/// as one, so a request sees one consistent set. The configuration's
/// restart-only parts (listen addresses, connection caps, audit, CA, ...)
/// stay those the server started with; see [`crate::reload`].
pub struct Live {
    pub config: Config,
    /// Where the proxy must not connect for a client (depends on
    /// `allow_clients`: loopback is added once remote clients are served).
    pub denied: DeniedDestinations,
    /// A fresh pool whenever `denied` or the connect timeout change, so no
    /// pooled connection outlives the rules it was opened under.
    pub client: OriginClient,
    /// `/proxy.pac` as generated for this configuration, per policy.
    pub pac: crate::pac::PacCache,
}

impl Live {
    pub fn new(config: Config) -> Live {
        let denied = DeniedDestinations::from_config(&config.proxy);
        let client = origin_client(config.proxy.connect_timeout, denied.clone());
        Live { config, denied, client, pac: crate::pac::PacCache::default() }
    }
}

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
    /// The settings in force now; hold the `Arc` for the length of one decision.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Whether `host:port` is this proxy itself (a request that would loop).
    pub fn is_self(&self, ip: IpAddr, port: u16) -> bool {
        self.local_addrs.iter().any(|a| {
            a.port() == port
                && (a.ip() == ip || ((a.ip().is_unspecified() || a.ip().is_loopback()) && ip.is_loopback()))
        })
    }
}
