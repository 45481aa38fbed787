//! The compliance gateway: a reverse proxy in front of webmail and iBabs
//! that refuses a device which recently tried to reach a banned site, and
//! lets it through again once the person has attested.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Via};
use crate::compliance::remediate::Remediation;
use crate::compliance::Compliance;
use crate::config::{GatewayConfig, ProxyConfig};
use crate::decision::{decide, Action, ComplianceView, Facts, Rules, Stage, Who};
use crate::identity::{canonical_ip, Identity};
use crate::plumbing::accept::{self, Accepted, Admission, Admitted};
use crate::plumbing::destinations::DeniedDestinations;
use crate::plumbing::relay::{relay, Upstream};
use crate::plumbing::{origin_client, respond, OriginClient, ProxyBody};
use crate::policy::{normalise_host, parse_authority};

/// The cookie that keeps a device recognised when its address changes.
const DEVICE_COOKIE: &str = "weerwal_device";

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway.route host {0:?} is not a host name")]
    BadHost(String),
    #[error("gateway.route upstream {0:?}: write it as http://host:port (the gateway speaks plain HTTP to upstreams)")]
    BadUpstream(String),
    #[error("{}: {message}", path.display())]
    Tls { path: std::path::PathBuf, message: String },
    #[error("[gateway] needs [compliance] (which hosts are protected, and for how long)")]
    NeedsCompliance,
    #[error("gateway.cert and gateway.key go together: give both, or neither for plain HTTP behind a TLS terminator")]
    HalfTls,
}

/// Everything the gateway's connections share.
pub struct GatewayState {
    routes: HashMap<String, Uri>,
    trusted_proxies: Vec<IpNet>,
    tls: bool,
    compliance: Arc<Compliance>,
    identity: Arc<Identity>,
    audit: AuditLog,
    client: OriginClient,
    limits: ProxyConfig,
    /// The policy in force (the gateway's decisions read only the
    /// compliance gate, but decide under the same rules as the proxy).
    policy: Arc<arc_swap::ArcSwap<crate::policy::Policy>>,
}

impl GatewayState {
    pub fn new(
        config: &GatewayConfig,
        limits: &ProxyConfig,
        compliance: Arc<Compliance>,
        identity: Arc<Identity>,
        audit: AuditLog,
        policy: Arc<arc_swap::ArcSwap<crate::policy::Policy>>,
    ) -> Result<GatewayState, GatewayError> {
        let mut routes = HashMap::new();
        for r in &config.route {
            let host = normalise_host(&r.host).map_err(|_| GatewayError::BadHost(r.host.clone()))?;
            let upstream: Uri = r.upstream.parse().map_err(|_| GatewayError::BadUpstream(r.upstream.clone()))?;
            if upstream.scheme_str() != Some("http") || upstream.authority().is_none() {
                return Err(GatewayError::BadUpstream(r.upstream.clone()));
            }
            routes.insert(host.as_key().into_owned(), upstream);
        }
        Ok(GatewayState {
            routes,
            trusted_proxies: config.trusted_proxies.clone(),
            tls: config.cert.is_some(),
            compliance,
            identity,
            audit,
            // Upstreams are the administrator's own choice: none denied.
            client: origin_client(limits.connect_timeout, DeniedDestinations::default()),
            limits: limits.clone(),
            policy,
        })
    }

    /// The client's address: the peer, or, when the peer is a trusted TLS
    /// terminator, the nearest untrusted address in `X-Forwarded-For`.
    /// Entries are read from the right (the ones trusted hops wrote); an
    /// entry that cannot be read stops the walk at the last trusted hop,
    /// because everything left of it may have been written by the client.
    fn client_ip(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        let mut nearest = canonical_ip(peer);
        if !trusted(&nearest) {
            return nearest;
        }
        let values: Vec<&str> = headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().unwrap_or("")).collect();
        // What the nearest trusted hop wrote: the answer when every entry is
        // trusted too, since entries further left may be the client's own.
        let mut written_by_nearest_hop = None;
        for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(ip) = forwarded_ip(entry.trim()) else { return written_by_nearest_hop.unwrap_or(nearest) };
            nearest = canonical_ip(ip);
            if !trusted(&nearest) {
                return nearest;
            }
            written_by_nearest_hop.get_or_insert(nearest);
        }
        written_by_nearest_hop.unwrap_or(nearest)
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`10.0.0.1:4711`, `[2001:db8::1]:4711`) as some load balancers write it.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let bare = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
    bare.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// Loads the gateway's TLS certificate and key (PEM files).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, GatewayError> {
    crate::tls::acceptor(cert, key).map_err(|e| GatewayError::Tls { path: e.path, message: e.message })
}

/// Accepts gateway connections until `shutdown`, through the admission the
/// proxy's listeners share (`proxy.max_connections` in all, per client
/// `proxy.max_connections_per_client`): one laptop cannot exhaust the
/// server's file descriptors through the gateway either.
pub async fn run(
    listener: TcpListener,
    state: Arc<GatewayState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) {
    // Anyone may reach the gateway: it stands in front of systems people use.
    accept::run(
        listener,
        admission,
        shutdown,
        grace,
        |_| true,
        move |conn| {
            let (state, tls) = (Arc::clone(&state), tls.clone());
            async move {
                let Accepted { stream, peer, slot, shutdown } = conn;
                match tls {
                    Some(acceptor) => {
                        let limit = state.limits.header_timeout;
                        if let Some(s) = accept::tls_handshake(&acceptor, stream, limit, peer, "gateway").await {
                            serve_connection(state, peer, s, Arc::clone(&slot), shutdown).await;
                        }
                    }
                    None => serve_connection(state, peer, stream, Arc::clone(&slot), shutdown).await,
                }
                drop(slot);
            }
        },
    )
    .await
}

async fn serve_connection<S>(
    state: Arc<GatewayState>,
    peer: SocketAddr,
    stream: S,
    slot: Arc<Admitted>,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.limits.header_timeout;
    let builder = crate::plumbing::http1_server(header_timeout, state.limits.max_header_bytes);
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let state = Arc::clone(&state);
        // An upgraded WebSocket takes the connection's slot with it.
        req.extensions_mut().insert(Arc::clone(&slot));
        async move { Ok::<_, std::convert::Infallible>(handle(&state, peer, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
    crate::plumbing::accept::serve_until_shutdown(conn, &shutdown, |c| c.graceful_shutdown(), peer, "gateway").await;
}

impl GatewayState {
    /// Decides a gateway request (see [`crate::decision`]): anyone may
    /// reach the gateway; only the compliance gate and the routes matter.
    fn decide(&self, facts: &Facts<'_>) -> Action {
        // 0.0.0.0/0 and ::/0.
        let everyone = [IpNet::V4(ipnet::Ipv4Net::default()), IpNet::V6(ipnet::Ipv6Net::default())];
        let policy = self.policy.load();
        let rules = Rules {
            policy: &policy,
            allow_clients: &everyone,
            connect_ports: &[],
            https: crate::config::HttpsMode::Reject,
            can_intercept: false,
            denied: &DeniedDestinations::default(),
            own_addrs: &[],
            compliance: Some(&*self.compliance as &dyn ComplianceView),
        };
        decide(&rules, facts)
    }
}

/// One request at the gateway: which system, who, flagged or not.
pub async fn handle(state: &GatewayState, peer: SocketAddr, req: Request<Incoming>) -> Response<ProxyBody> {
    let host_header = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(host_header) = host_header else {
        return respond::bad_request("no Host header");
    };
    let default_port = if state.tls { 443 } else { 80 };
    let Ok((host, _)) = parse_authority(&host_header, Some(default_port)) else {
        return respond::bad_request("the Host header is not a host name");
    };
    let host_key = host.as_key().into_owned();
    let upstream = state.routes.get(&host_key);

    let client = state.client_ip(peer.ip(), req.headers());
    let mut subject = state.identity.devices.subject(client);
    subject.user = state.identity.sessions.user_at(client);
    let session = state.identity.sessions.live_session(client, subject.user.as_deref());
    let mut keys = vec![format!("client:{client}")];
    if let Some(u) = &subject.user {
        keys.push(format!("user:{u}"));
    }
    // Only a cookie weerwal issued (signed) stands for a device.
    let (device, new_cookie) = match device_cookie(req.headers()).and_then(|v| state.compliance.verify_device(&v)) {
        Some(id) => (id, None),
        None => {
            let (id, value) = state.compliance.issue_device();
            (id, Some(value))
        }
    };
    let keys = state.compliance.link_device(&device, &keys, new_cookie.is_none());
    let action = state.decide(&Facts {
        stage: Stage::Gateway { routed: upstream.is_some(), keys: &keys },
        client,
        host: &host,
        port: default_port,
        user_agent: None,
        who: Who::Known(&subject),
        today: state.policy.load().today(),
    });
    let mut response = match (action, upstream) {
        (Action::Remediate { key, flag, .. }, _) => {
            if new_cookie.is_none() {
                // The device itself is flagged too: it stays refused after
                // its address or user link ages out.
                state.compliance.flag_device(&device, &flag);
            }
            let remediation = Remediation {
                compliance: &state.compliance,
                audit: &state.audit,
                subject: &subject,
                session: session.as_deref(),
                keys: keys.clone(),
                flagged: (key, flag),
                host: &host_key,
                via: Via::Gateway,
            };
            remediation.respond(req).await
        }
        (Action::Forward { .. }, Some(upstream)) => {
            let peer_trusted = state.trusted_proxies.iter().any(|n| n.contains(&canonical_ip(peer.ip())));
            forward(state, req, upstream, &host_header, client, peer_trusted).await
        }
        (action, _) => {
            let (nl, en) = action.reason().texts();
            return respond::error(action.reason().status(), &nl, &en);
        }
    };
    if let Some(cookie) = new_cookie {
        let value = cookie::Cookie::build((DEVICE_COOKIE, cookie.as_str()))
            .path("/")
            .max_age(cookie::time::Duration::days(365))
            .http_only(true)
            .same_site(cookie::SameSite::Lax)
            .secure(state.tls)
            .build();
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

async fn forward(
    state: &GatewayState,
    req: Request<Incoming>,
    upstream: &Uri,
    host_header: &str,
    client: IpAddr,
    peer_trusted: bool,
) -> Response<ProxyBody> {
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let base = upstream.to_string();
    let Ok(uri) = Uri::try_from(format!("{}{path}", base.trim_end_matches('/'))) else {
        return respond::bad_request("the request target cannot be forwarded");
    };
    let Ok(host_value) = HeaderValue::from_str(host_header) else {
        return respond::bad_request("the Host header cannot be forwarded");
    };
    let proto = if state.tls { "https" } else { "http" };
    let upstream = Upstream {
        client: &state.client,
        response_timeout: state.limits.response_timeout,
        tunnel_idle: state.limits.tunnel_idle_timeout,
    };
    let forwarded_host = host_value.clone();
    relay(&upstream, req, uri, host_value, move |h| {
        if !peer_trusted {
            // What an untrusted client claims about forwarding is not passed
            // on: upstreams must be able to believe these headers.
            for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"] {
                h.remove(name);
            }
        }
        if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
            h.append("x-forwarded-for", v);
        }
        h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        h.insert("x-forwarded-host", forwarded_host);
    })
    .await
}

/// The device cookie's value from the `Cookie` header (verified by the caller).
fn device_cookie(headers: &http::HeaderMap) -> Option<String> {
    crate::cookies::get(headers, DEVICE_COOKIE).filter(|v| v.len() <= 128)
}

#[cfg(test)]
mod tests {
    use super::forwarded_ip;

    #[test]
    fn forwarded_entries_are_read_with_and_without_ports() {
        let ip = |s: &str| forwarded_ip(s).map(|a| a.to_string());
        assert_eq!(ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("10.0.0.1:4711").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("[2001:db8::1]:4711").as_deref(), Some("2001:db8::1"));
        for unreadable in ["", "unknown", "10.0.0.1:x", "fe80::1%eth0", "[10.0.0.1", "example.org"] {
            assert_eq!(ip(unreadable), None, "{unreadable:?}");
        }
    }
}
