//! CONNECT: tunnels to allowed hosts, the block page for banned ones.
//!
//! After answering `200` the proxy reads the client's first bytes before
//! touching the origin. A TLS ClientHello is decided on both the CONNECT
//! authority and its SNI; a banned name is intercepted with a leaf from the
//! local CA (and only then), anything else is replayed to the origin and
//! spliced byte for byte. Plain HTTP inside a tunnel is decided request by
//! request, like any other request. Every decision is
//! [`crate::decision::decide`]'s; this module carries them out.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::act::{refuse, remediation, unexpected};
use super::client_hello::{read_client_hello, ClientHelloRead};
use super::identify::{decide_identified, user_agent};
use super::record::{self, Attempt};
use super::ProxyState;
use crate::decision::{Action, Exempted, Facts, Fetch, Stage, Who};
use crate::identity::{canonical_ip, Identified};
use crate::plumbing::accept::Admitted;
use crate::plumbing::prefixed::Prefixed;
use crate::plumbing::relay::{relay, Upstream};
use crate::plumbing::tunnel_io::TunnelIo;
use crate::plumbing::{http1_server, respond, ProxyBody};
use crate::policy::{normalise_host, parse_authority, Host, Match};

/// Answers a CONNECT request.
pub async fn handle(state: Arc<ProxyState>, peer: SocketAddr, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return respond::bad_request("CONNECT needs host:port");
    };
    let (host, port) = match parse_authority(authority.as_str(), None) {
        Ok(hp) => hp,
        Err(e) => return respond::bad_request(&format!("CONNECT {:?}: {e}", authority.as_str())),
    };
    // One settings snapshot for the whole CONNECT decision.
    let live = state.live();
    let ua = user_agent(req.headers()).map(str::to_string);
    let facts = Facts {
        stage: Stage::Connect,
        client: canonical_ip(peer.ip()),
        host: &host,
        port,
        user_agent: ua.as_deref(),
        who: Who::Unknown,
        today: state.today(),
    };
    let (action, who) = match decide_identified(&state, &live, facts, peer, req.headers()).await {
        Ok(decided) => decided,
        Err(answer) => return answer,
    };
    match action {
        Action::Remediate { host, .. } => remediate_tunnel(state, who, host.as_key().into_owned(), req).await,
        Action::Block { host, matched } => {
            let attempt = connect_attempt(&who, &host, port, &matched, ua.as_deref());
            record::block(&state, &attempt).await
        }
        Action::Intercept { .. } | Action::Tunnel { .. } => {
            let slot = req.extensions_mut().remove::<Arc<Admitted>>();
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        // The tunnel keeps the connection's admission slot until it closes.
                        let tunnel = Tunnel { state, who, host, port, user_agent: ua, slot };
                        tunnel.run(TunnelIo::new(upgraded)).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
                }
            });
            Response::new(respond::empty())
        }
        other => unexpected(&other),
    }
}

/// The attempt of a CONNECT itself (no request inside it yet).
fn connect_attempt<'a>(
    who: &'a Identified,
    host: &Host,
    port: u16,
    matched: &'a Match,
    user_agent: Option<&str>,
) -> Attempt<'a> {
    Attempt {
        subject: &who.subject,
        session: &who.session,
        matched,
        host: host.as_key().into_owned(),
        port,
        method: Method::CONNECT,
        path: None,
        user_agent: user_agent.map(str::to_string),
        fetch: Fetch::Unknown,
    }
}

/// One CONNECT tunnel after the `200`.
struct Tunnel {
    state: Arc<ProxyState>,
    who: Identified,
    /// The CONNECT authority.
    host: Host,
    port: u16,
    user_agent: Option<String>,
    /// The client connection's admission slot, held for the tunnel's life.
    slot: Option<Arc<Admitted>>,
}

impl Tunnel {
    /// Decides a stage of this tunnel for its subject.
    fn decide(&self, stage: Stage<'_>, user_agent: Option<&str>) -> Action {
        let live = self.state.live();
        let facts = Facts {
            stage,
            client: self.who.subject.client,
            host: &self.host,
            port: self.port,
            user_agent,
            who: Who::Known(&self.who.subject),
            today: self.state.today(),
        };
        self.state.decide(&live, &facts)
    }

    async fn run(self, mut client: TunnelIo) {
        let timeout = self.state.live().config.proxy.client_hello_timeout;
        let (buffered, hello) = match read_client_hello(&mut client, timeout).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "reading the first bytes of a tunnel failed");
                return;
            }
        };
        let sni = match &hello {
            ClientHelloRead::Sni(name) => match normalise_host(name) {
                Ok(h) => Some(h),
                Err(e) => {
                    // A name we cannot normalise is never let through.
                    tracing::debug!(sni = %name, error = %e, "refusing tunnel with an invalid SNI");
                    return;
                }
            },
            _ => None,
        };
        let action = self.decide(Stage::Hello { sni: sni.as_ref() }, self.user_agent.as_deref());
        match (hello, action) {
            // The rarer branches are boxed: a task's future is as large as its
            // largest branch, and a tunnel's task lives as long as the tunnel.
            (ClientHelloRead::NotTls, action) => {
                if let Some((tunnel, client, buffered)) = Box::pin(self.plain(client, buffered, action)).await {
                    tunnel.splice(client, buffered).await
                }
            }
            (ClientHelloRead::Sni(_) | ClientHelloRead::NoSni, Action::Intercept { host, matched }) => {
                Box::pin(self.intercept(client, buffered, host, matched)).await
            }
            // Part of a ClientHello and then a pause: waiting out the timer
            // must not skip the SNI check. Only a client that sent nothing
            // at all (a server-speaks-first protocol) is spliced on timeout.
            (ClientHelloRead::TimedOut, Action::Tunnel { exempted }) if buffered.is_empty() => {
                if self.record_exempted(exempted.as_ref(), &Method::CONNECT, None).await {
                    self.splice(client, buffered).await
                }
            }
            (ClientHelloRead::Sni(_) | ClientHelloRead::NoSni, Action::Tunnel { exempted }) => {
                if self.record_exempted(exempted.as_ref(), &Method::CONNECT, None).await {
                    self.splice(client, buffered).await
                }
            }
            // Nothing to answer to (no TLS to intercept, or no way to): the
            // CONNECT itself is the attempt, and it is recorded.
            (_, Action::Intercept { host, matched } | Action::Block { host, matched }) => {
                self.record_block(&host, &matched).await
            }
            (_, Action::Remediate { host, key, flag }) => {
                // A flagged person naming a protected system only in the
                // SNI, or tunnelling to an address without any name: never
                // spliced through, and recorded.
                let host = host.as_key().into_owned();
                if let Some(r) = remediation(&self.state, &self.who, &host, key, flag) {
                    r.record_closed_tunnel(self.user_agent.as_deref()).await;
                }
            }
            (_, _) => {}
        }
    }

    /// Records an exemption that let this tunnel (or a request in it)
    /// through. False when the record could not be written (a full audit
    /// volume): the tunnel is then closed, never spliced unrecorded.
    async fn record_exempted(&self, exempted: Option<&Exempted>, method: &Method, path: Option<String>) -> bool {
        let Some(e) = exempted else { return true };
        let attempt = Attempt {
            method: method.clone(),
            path,
            ..connect_attempt(&self.who, &e.host, self.port, &e.matched, self.user_agent.as_deref())
        };
        record::exempted(&self.state, &attempt, &e.exemption.reason).await
    }

    /// Records a blocked CONNECT that never got as far as a request.
    async fn record_block(&self, host: &Host, matched: &Match) {
        let attempt = connect_attempt(&self.who, host, self.port, matched, self.user_agent.as_deref());
        let _ = record::block(&self.state, &attempt).await;
    }

    /// Connects to the origin, replays what the client sent, and copies
    /// bytes both ways until either side closes or the tunnel idles out.
    async fn splice(self, client: TunnelIo, buffered: Vec<u8>) {
        let addr = format!("{}:{}", self.host, self.port);
        let host = self.host.as_key().into_owned();
        let denied = self.state.live().denied.clone();
        let port = self.port;
        // Resolve, drop denied addresses, then try the rest in order.
        let connect = tokio::time::timeout(self.state.live().config.proxy.connect_timeout, async move {
            let addrs = denied.resolve(&host, port).await?;
            TcpStream::connect(&addrs[..]).await
        });
        let mut origin = match connect.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "tunnel origin unreachable");
                return;
            }
            Err(_) => {
                tracing::debug!(%addr, "tunnel origin connect timed out");
                return;
            }
        };
        let _ = origin.set_nodelay(true);
        let idle = self.state.live().config.proxy.tunnel_idle_timeout;
        // Only the admission slot lives as long as the tunnel: the decision's
        // facts (subject, session, names) are dropped before the copy.
        let Tunnel { state, who, host, user_agent, slot, port: _ } = self;
        drop((state, who, host, user_agent, addr));
        // Copied in the kernel, pipes taken within the descriptor budget.
        let _ = client.splice_to(&mut origin, buffered, idle, slot.as_deref()).await;
    }

    /// Terminates TLS with a leaf for the banned `name` and answers every
    /// request on the connection with the block page.
    async fn intercept(self, client: TunnelIo, buffered: Vec<u8>, name: Host, matched: Match) {
        let Some(leaves) = self.state.leaves.clone() else {
            self.record_block(&name, &matched).await;
            return;
        };
        let key = name.as_key().into_owned();
        let config = match leaves.server_config(&key).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(host = %key, error = %e, "cannot mint a certificate; closing the blocked tunnel");
                self.record_block(&name, &matched).await;
                return;
            }
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = acceptor.accept(Prefixed::new(buffered, client));
        let handshake = tokio::time::timeout(self.state.live().config.proxy.header_timeout, handshake).await;
        let tls = match handshake.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())) {
            Ok(tls) => tls,
            Err(e) => {
                // Typically a client that does not trust the local CA: the
                // attempt still counts and is recorded.
                tracing::debug!(host = %key, error = %e, "TLS handshake with blocked client failed");
                self.record_block(&name, &matched).await;
                return;
            }
        };
        self.serve_block_pages(tls, name, matched).await;
    }

    /// Plain bytes in a tunnel: never tunnelled when the CONNECT host is
    /// banned; HTTP is decided request by request; anything that looks like
    /// HTTP but does not parse is refused; other protocols are to be
    /// spliced: returned to the caller, so the splice's (long-lived) task
    /// does not carry this function's HTTP serving state.
    async fn plain(
        self,
        mut client: TunnelIo,
        mut buffered: Vec<u8>,
        action: Action,
    ) -> Option<(Tunnel, TunnelIo, Vec<u8>)> {
        let (exempted, may_splice) = match action {
            Action::Intercept { host, matched } | Action::Block { host, matched } => {
                self.serve_block_pages(Prefixed::new(buffered, client), host, matched).await;
                return None;
            }
            Action::Tunnel { exempted } => (exempted, true),
            // A flagged person's tunnel to an address: each request in it
            // is decided, and gets the remediation page; nothing else passes.
            Action::Remediate { .. } => (None, false),
            _ => return None,
        };
        let limit = self.state.live().config.proxy.max_header_bytes;
        let timeout = self.state.live().config.proxy.client_hello_timeout;
        match read_http_head(&mut client, &mut buffered, limit, timeout).await {
            // Every request in the tunnel is decided, not just the first:
            // a second, pipelined request must not ride along unchecked.
            HttpHead::Complete => self.serve_plain_http(Prefixed::new(buffered, client)).await,
            HttpHead::NotHttp if !may_splice => {}
            HttpHead::NotHttp => {
                if self.record_exempted(exempted.as_ref(), &Method::CONNECT, None).await {
                    return Some((self, client, buffered));
                }
            }
            // Looks like HTTP but never finishes its head, does not parse, or
            // has two Host headers: refused rather than let an undecided
            // request through.
            HttpHead::Refused => {}
        }
        None
    }

    /// Plain HTTP inside a tunnel to an allowed host: served like the
    /// forward proxy, each request decided on the host it names (its
    /// absolute target, else its `Host`), which must be the tunnel's own.
    async fn serve_plain_http<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (header_timeout, max_header_bytes) = {
            let live = self.state.live();
            (live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
        };
        let tunnel = Arc::new(self);
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let tunnel = Arc::clone(&tunnel);
            async move { Ok::<_, std::convert::Infallible>(tunnel.plain_request(req).await) }
        });
        let result = http1_server(header_timeout, max_header_bytes)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "plain HTTP tunnel ended");
        }
    }

    async fn plain_request(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let named = match named_host(&req) {
            Ok(Some(h)) => h,
            Ok(None) => self.host.clone(),
            Err(resp) => return *resp,
        };
        let ua = user_agent(req.headers()).map(str::to_string);
        let path = self.state.live().config.audit.log_paths.then(|| req.uri().path().to_string());
        let attempt = |host: &Host, matched| Attempt {
            method: req.method().clone(),
            path: path.clone(),
            user_agent: ua.clone(),
            fetch: Fetch::from_headers(req.headers()),
            ..connect_attempt(&self.who, host, self.port, matched, None)
        };
        match self.decide(Stage::InTunnel { named: &named }, ua.as_deref()) {
            Action::Refuse(reason) => refuse(reason),
            Action::Block { host, matched } => record::block(&self.state, &attempt(&host, &matched)).await,
            Action::Remediate { host, key, flag } => {
                let host = host.as_key().into_owned();
                match remediation(&self.state, &self.who, &host, key, flag) {
                    Some(r) => r.respond(req).await,
                    None => refuse(crate::decision::Reason::FlaggedSubject),
                }
            }
            Action::Forward { exempted } => {
                if let Some(e) = &exempted {
                    if !record::exempted(&self.state, &attempt(&e.host, &e.matched), &e.exemption.reason).await {
                        return record::unrecorded();
                    }
                }
                self.forward_in_tunnel(req).await
            }
            other => unexpected(&other),
        }
    }

    /// Sends a request from inside the tunnel to the tunnel's target, with
    /// the `Host` it was decided on.
    async fn forward_in_tunnel(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let authority = if self.port == 80 { self.host.to_string() } else { format!("{}:{}", self.host, self.port) };
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let Ok(uri) = http::Uri::try_from(format!("http://{authority}{path}")) else {
            return respond::bad_request("the request target cannot be forwarded");
        };
        let Ok(host_header) = http::HeaderValue::from_str(&authority) else {
            return respond::bad_request("the host cannot be written as a Host header");
        };
        let live = self.state.live();
        let upstream = Upstream {
            client: &live.client,
            response_timeout: live.config.proxy.response_timeout,
            tunnel_idle: live.config.proxy.tunnel_idle_timeout,
        };
        relay(&upstream, req, uri, host_header, |_| {}).await
    }

    /// Serves HTTP/1.1 on a connection that must never reach its origin:
    /// every request gets the block page and its own audit record.
    async fn serve_block_pages<S>(self, stream: S, host: Host, matched: Match)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (header_timeout, max_header_bytes) = {
            let live = self.state.live();
            (live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
        };
        let tunnel = Arc::new((self, host, matched));
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let svc = hyper::service::service_fn({
            let (tunnel, answered) = (Arc::clone(&tunnel), Arc::clone(&answered));
            move |req: Request<Incoming>| {
                let tunnel = Arc::clone(&tunnel);
                answered.store(true, std::sync::atomic::Ordering::Relaxed);
                async move { Ok::<_, std::convert::Infallible>(tunnel.0.intercepted_request(req, &tunnel.2).await) }
            }
        });
        let result = http1_server(header_timeout, max_header_bytes).serve_connection(TokioIo::new(stream), svc).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "intercepted connection ended");
        }
        // No request came (bytes that are not HTTP, or nothing after the
        // handshake): the CONNECT itself was the attempt, and it is recorded.
        if !answered.load(std::sync::atomic::Ordering::Relaxed) {
            let (tunnel, host, matched) = &*tunnel;
            tunnel.record_block(host, matched).await;
        }
    }

    /// One request on an intercepted connection: the block page, recorded
    /// for the banned host the request names (else the intercepted one).
    async fn intercepted_request(&self, req: Request<Incoming>, intercepted: &Match) -> Response<ProxyBody> {
        let named = named_host(&req).ok().flatten();
        let ua = user_agent(req.headers()).map(str::to_string).or_else(|| self.user_agent.clone());
        let action = self.decide(Stage::Intercepted { named: named.as_ref(), intercepted }, ua.as_deref());
        let Action::Block { host, matched } = action else { return unexpected(&action) };
        let path = self.state.live().config.audit.log_paths.then(|| req.uri().path().to_string());
        let attempt = Attempt {
            method: req.method().clone(),
            path,
            user_agent: ua,
            fetch: Fetch::from_headers(req.headers()),
            ..connect_attempt(&self.who, &host, self.port, &matched, None)
        };
        record::block(&self.state, &attempt).await
    }
}

/// The host a request names: its absolute target, else its `Host`; `None`
/// when it names none. A request with two `Host` fields or a name that
/// cannot be normalised gets `400`.
fn named_host(req: &Request<Incoming>) -> Result<Option<Host>, Box<Response<ProxyBody>>> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let (first_host, second_host) = (hosts.next(), hosts.next());
    if second_host.is_some() {
        return Err(Box::new(respond::bad_request("more than one Host header")));
    }
    let named = match (req.uri().authority(), first_host) {
        (Some(a), _) => a.as_str().to_string(),
        // Bytes, not `to_str`: a Unicode Host must be normalised (and
        // then blocked or refused), never mistaken for no Host at all.
        (None, Some(v)) => match std::str::from_utf8(v.as_bytes()) {
            Ok(text) => text.trim().to_string(),
            Err(_) => return Err(Box::new(respond::bad_request("the Host header is not text"))),
        },
        (None, None) => return Ok(None),
    };
    match parse_authority(&named, Some(80)) {
        Ok((h, _)) => Ok(Some(h)),
        Err(e) => Err(Box::new(respond::bad_request(&format!("host {named:?}: {e}")))),
    }
}

/// What the first bytes of a non-TLS tunnel are.
enum HttpHead {
    /// A complete HTTP request head: served and decided request by request.
    Complete,
    /// Not HTTP (some other protocol): tunnelled as it is.
    NotHttp,
    /// Looks like HTTP but does not parse, does not complete within the
    /// size or time limit, or has two `Host` fields: refused.
    Refused,
}

/// Reads until `buffered` holds a complete HTTP request head, or shows it is
/// not HTTP, within `limit` bytes and `timeout`.
async fn read_http_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffered: &mut Vec<u8>,
    limit: usize,
    timeout: std::time::Duration,
) -> HttpHead {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buffered) {
            Ok(httparse::Status::Complete(_)) => {
                if req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).count() > 1 {
                    // RFC 9112 section 3.2: more than one Host is a bad
                    // request; which one counts would be a guess.
                    return HttpHead::Refused;
                }
                return HttpHead::Complete;
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => {
                return if buffered.is_empty() {
                    HttpHead::NotHttp
                } else if looks_like_http(buffered) {
                    HttpHead::Refused
                } else {
                    HttpHead::NotHttp
                }
            }
        }
        if buffered.len() >= limit {
            return HttpHead::Refused;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffered.extend_from_slice(&chunk[..n]),
            _ => return HttpHead::Refused,
        }
    }
}

/// Whether bytes that do not parse as HTTP still look like an attempt at
/// it: a method-like token (after any leading whitespace) followed by
/// whitespace, or `HTTP/` on the first line. Such bytes are refused, never
/// spliced: an oddly formatted request line (a leading space, tabs) must not
/// pass for "another protocol" and reach a banned host unchecked.
fn looks_like_http(buf: &[u8]) -> bool {
    let first_line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    if first_line.windows(5).any(|w| w.eq_ignore_ascii_case(b"HTTP/")) {
        return true;
    }
    let start = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let rest = &buf[start..];
    let token = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    token >= 3 && rest.get(token).is_some_and(|b| *b == b' ' || *b == b'\t')
}

/// A flagged subject's CONNECT to a protected system: intercepted for this
/// subject only, and only while flagged, to show the remediation page over
/// HTTPS. Without a CA the page is the CONNECT's own 403 answer.
async fn remediate_tunnel(
    state: Arc<ProxyState>,
    who: Identified,
    host: String,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(leaves) = state.leaves.clone() else {
        let tunnel = Tunnel { state, who, host: protected_host(&host), port: 443, user_agent: None, slot: None };
        return tunnel.remediation_request(req).await;
    };
    let slot = req.extensions_mut().remove::<Arc<Admitted>>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let port = req.uri().port_u16().unwrap_or(443);
    tokio::spawn(async move {
        // The tunnel keeps the connection's admission slot until it closes.
        let _slot = slot;
        let Ok(upgraded) = on_upgrade.await else { return };
        let config = match leaves.server_config(&host).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(host = %host, error = %e, "cannot mint a certificate for the remediation page");
                return;
            }
        };
        let (header_timeout, max_header_bytes) = {
            let live = state.live();
            (live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
        };
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(TokioIo::new(upgraded));
        let Ok(Ok(tls)) = tokio::time::timeout(header_timeout, handshake).await else {
            return;
        };
        let tunnel = Arc::new(Tunnel { state, who, host: protected_host(&host), port, user_agent: None, slot: None });
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let tunnel = Arc::clone(&tunnel);
            async move { Ok::<_, std::convert::Infallible>(tunnel.remediation_request(req).await) }
        });
        let _ = http1_server(header_timeout, max_header_bytes).serve_connection(TokioIo::new(tls), svc).await;
    });
    Response::new(respond::empty())
}

/// The protected host's key as a [`Host`] again (it came from one).
fn protected_host(key: &str) -> Host {
    normalise_host(key).unwrap_or_else(|_| Host::Name(key.to_string()))
}

impl Tunnel {
    /// One request on a remediation connection: decided again each time,
    /// so the page stops once the person has attested.
    async fn remediation_request(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let ua = user_agent(req.headers()).map(str::to_string);
        match self.decide(Stage::InTunnel { named: &self.host }, ua.as_deref()) {
            Action::Remediate { host, key, flag } => {
                let host = host.as_key().into_owned();
                match remediation(&self.state, &self.who, &host, key, flag) {
                    Some(r) => r.respond(req).await,
                    None => refuse(crate::decision::Reason::FlaggedSubject),
                }
            }
            // No longer flagged (attested on this connection): still never
            // forwarded from an intercepted connection; the browser
            // reconnects and is tunnelled.
            _ => {
                let mut resp = Response::new(respond::empty());
                *resp.status_mut() = StatusCode::SEE_OTHER;
                let location = crate::compliance::remediate::safe_return(
                    req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                )
                .to_string();
                if let Ok(v) = http::HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                resp
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_http;

    #[test]
    fn oddly_formatted_request_lines_still_look_like_http() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b" GET / HTTP/1.1\r\n",
            b"GET\t/\tHTTP/1.1\r\n",
            b"\r\nget / x",
            b"X / HTTP/1.0",
        ] {
            assert!(looks_like_http(http), "{:?}", String::from_utf8_lossy(http));
        }
        for other in [&b"\x00\x01binary"[..], b"SSH-2.0-OpenSSH_9.2\r\n", b"12345"] {
            assert!(!looks_like_http(other), "{:?}", String::from_utf8_lossy(other));
        }
    }
}
