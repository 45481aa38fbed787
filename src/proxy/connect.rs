//! CONNECT: tunnels to allowed hosts, the block page for banned ones.
//!
//! After answering `200` the proxy reads the client's first bytes before
//! touching the origin. A TLS ClientHello is decided on both the CONNECT
//! authority and its SNI; a banned name is intercepted with a leaf from the
//! local CA (and only then), anything else is replayed to the origin and
//! spliced byte for byte. Plain HTTP inside a tunnel is decided on its Host.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client_hello::{read_client_hello, ClientHelloRead};
use super::prefixed::Prefixed;
use super::request::{destination_denied, identify, remediation_for, targets_self, user_agent};
use super::respond::{self, Attempt};
use super::{ProxyBody, ProxyState};
use crate::config::HttpsMode;
use crate::identity::Identified;
use crate::policy::{normalise_host, parse_authority, Host, Match, Subject, Target, Verdict};

/// Answers a CONNECT request.
pub async fn handle(state: Arc<ProxyState>, peer: SocketAddr, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return respond::bad_request("CONNECT needs host:port");
    };
    let (host, port) = match parse_authority(authority.as_str(), None) {
        Ok(hp) => hp,
        Err(e) => return respond::bad_request(&format!("CONNECT {:?}: {e}", authority.as_str())),
    };
    let live = state.live();
    if !live.config.proxy.connect_ports.contains(&port) {
        return respond::error(
            StatusCode::FORBIDDEN,
            &format!("Verbindingen naar poort {port} zijn niet toegestaan."),
            &format!("Tunnels to port {port} are not allowed."),
        );
    }
    if let Host::Ip(ip) = host {
        if live.denied.is_denied(ip) {
            return destination_denied();
        }
    }
    if targets_self(&state, &host, port) {
        return respond::error(
            StatusCode::FORBIDDEN,
            "Een tunnel naar de proxy zelf is geweigerd.",
            "A tunnel to the proxy itself was refused.",
        );
    }
    let who = match identify(&state, peer, req.headers()).await {
        Ok(who) => who,
        Err(challenge) => return challenge,
    };
    let ua = user_agent(req.headers()).map(str::to_string);
    let host_key = host.as_key().into_owned();
    if remediation_for(&state, &who, &host, &host_key).is_some() {
        return remediate_tunnel(state, who, host_key, req).await;
    }
    let verdict = decide(&state, &who.subject, &host, ua.as_deref());
    if let Verdict::Block(matched) = &verdict {
        if live.config.proxy.https == HttpsMode::Reject || state.leaves.is_none() {
            let key = host.as_key();
            let attempt = Attempt {
                subject: &who.subject,
                session: &who.session,
                matched,
                host: &key,
                port,
                method: &Method::CONNECT,
                path: None,
                user_agent: ua.as_deref(),
            };
            return respond::block(&state, &attempt).await;
        }
    }
    let slot = req.extensions_mut().remove::<Arc<super::listener::Admitted>>();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let tunnel = Tunnel { state, who, host, port, user_agent: ua, first: verdict };
                tunnel.run(TokioIo::new(upgraded)).await;
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(respond::empty())
}

fn decide(state: &ProxyState, subject: &Subject, host: &Host, ua: Option<&str>) -> Verdict {
    let policy = state.policy.load();
    policy.decide(subject, &Target { host, user_agent: ua, date: policy.today() })
}

/// One CONNECT tunnel after the `200`.
struct Tunnel {
    state: Arc<ProxyState>,
    who: Identified,
    host: Host,
    port: u16,
    user_agent: Option<String>,
    /// The verdict on the CONNECT authority.
    first: Verdict,
}

impl Tunnel {
    async fn run(self, mut client: TokioIo<Upgraded>) {
        let timeout = self.state.live().config.proxy.client_hello_timeout;
        let (buffered, hello) = match read_client_hello(&mut client, timeout).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "reading the first bytes of a tunnel failed");
                return;
            }
        };
        match hello {
            ClientHelloRead::Sni(name) => {
                let sni = match normalise_host(&name) {
                    Ok(h) => h,
                    Err(e) => {
                        // A name we cannot normalise is never let through.
                        tracing::debug!(sni = %name, error = %e, "refusing tunnel with an invalid SNI");
                        return;
                    }
                };
                let sni_key = sni.as_key().into_owned();
                if remediation_for(&self.state, &self.who, &sni, &sni_key).is_some() {
                    // A flagged person naming a protected system only in the
                    // SNI (CONNECT to its address): never spliced through.
                    tracing::debug!(sni = %sni_key, "closing a flagged tunnel to a protected system");
                    return;
                }
                let sni_verdict = decide(&self.state, &self.who.subject, &sni, self.user_agent.as_deref());
                match (&sni_verdict, &self.first) {
                    (Verdict::Block(m), _) => self.intercept(client, buffered, sni, m.clone()).await,
                    (_, Verdict::Block(m)) => {
                        let m = m.clone();
                        let host = self.host.clone();
                        self.intercept(client, buffered, host, m).await
                    }
                    _ => {
                        self.log_exemptions(&[(&self.first, &self.host), (&sni_verdict, &sni)]).await;
                        self.splice(client, buffered).await
                    }
                }
            }
            // Part of a ClientHello and then a pause: waiting out the timer
            // must not skip the SNI check. Only a client that sent nothing
            // at all (a server-speaks-first protocol) is spliced on timeout.
            ClientHelloRead::TimedOut if !buffered.is_empty() => {
                if let Verdict::Block(m) = &self.first {
                    let (m, host) = (m.clone(), self.host.clone());
                    self.record_block(&host, &m).await;
                }
            }
            ClientHelloRead::NoSni | ClientHelloRead::TimedOut => match &self.first {
                Verdict::Block(m) => {
                    let (m, host) = (m.clone(), self.host.clone());
                    if hello == ClientHelloRead::TimedOut {
                        // Nothing to answer to; the CONNECT itself is the attempt.
                        self.record_block(&host, &m).await;
                    } else {
                        self.intercept(client, buffered, host, m).await
                    }
                }
                _ => {
                    self.log_exemptions(&[(&self.first, &self.host)]).await;
                    self.splice(client, buffered).await
                }
            },
            ClientHelloRead::NotTls => self.plain(client, buffered).await,
            ClientHelloRead::Malformed | ClientHelloRead::Closed => {
                if let Verdict::Block(m) = &self.first {
                    let (m, host) = (m.clone(), self.host.clone());
                    self.record_block(&host, &m).await;
                }
            }
        }
    }

    /// Records the first exemption among the verdicts, with the host it
    /// was decided on (the CONNECT authority or the SNI).
    async fn log_exemptions(&self, verdicts: &[(&Verdict, &Host)]) {
        for (v, host) in verdicts {
            if let Verdict::Exempt { matched, exemption } = v {
                let key = host.as_key();
                let attempt = self.attempt(&key, matched);
                respond::exempted(&self.state, &attempt, &exemption.reason).await;
                return;
            }
        }
    }

    /// The attempt of the CONNECT itself; requests inside the tunnel
    /// override method, path and User-Agent.
    fn attempt<'a>(&'a self, host: &'a str, matched: &'a Match) -> Attempt<'a> {
        Attempt {
            subject: &self.who.subject,
            session: &self.who.session,
            matched,
            host,
            port: self.port,
            method: &Method::CONNECT,
            path: None,
            user_agent: self.user_agent.as_deref(),
        }
    }

    /// Records a blocked CONNECT that never got as far as a request.
    async fn record_block(&self, host: &Host, matched: &Match) {
        let key = host.as_key();
        let _ = respond::block(&self.state, &self.attempt(&key, matched)).await;
    }

    /// Connects to the origin, replays what the client sent, and copies
    /// bytes both ways until either side closes or the tunnel idles out.
    async fn splice(self, client: TokioIo<Upgraded>, buffered: Vec<u8>) {
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
        if origin.write_all(&buffered).await.is_err() {
            return;
        }
        drop(buffered);
        let mut client = client;
        let idle = self.state.live().config.proxy.tunnel_idle_timeout;
        let _ = super::idle::splice(&mut client, &mut origin, idle).await;
    }

    /// Terminates TLS with a leaf for the banned `name` and answers every
    /// request on the connection with the block page.
    async fn intercept(self, client: TokioIo<Upgraded>, buffered: Vec<u8>, name: Host, matched: Match) {
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
        self.serve_block_pages(tls, key, matched).await;
    }

    /// Plain bytes in a tunnel: never tunnelled when the CONNECT host is
    /// banned; otherwise a plain HTTP request is decided on its `Host`.
    async fn plain(self, mut client: TokioIo<Upgraded>, mut buffered: Vec<u8>) {
        if let Verdict::Block(m) = &self.first {
            let (m, key) = (m.clone(), self.host.as_key().into_owned());
            return self.serve_block_pages(Prefixed::new(buffered, client), key, m).await;
        }
        let limit = self.state.live().config.proxy.max_header_bytes;
        let timeout = self.state.live().config.proxy.client_hello_timeout;
        match read_http_head(&mut client, &mut buffered, limit, timeout).await {
            HttpHead::Complete => {
                self.log_exemptions(&[(&self.first, &self.host)]).await;
                // Every request in the tunnel is decided, not just the first:
                // a second, pipelined request must not ride along unchecked.
                self.serve_plain_http(Prefixed::new(buffered, client)).await
            }
            HttpHead::NotHttp => {
                self.log_exemptions(&[(&self.first, &self.host)]).await;
                self.splice(client, buffered).await
            }
            // Looks like HTTP but never finishes its head (or has two Host
            // headers): refuse rather than let an undecided request through.
            HttpHead::Incomplete => {}
        }
    }

    /// Plain HTTP inside a tunnel to an allowed host: served like the
    /// forward proxy, each request decided on the host it names (its
    /// absolute target, else its `Host`) and sent on to the tunnel's target.
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
        let result = super::http1_server(header_timeout, max_header_bytes)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "plain HTTP tunnel ended");
        }
    }

    async fn plain_request(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let mut hosts = req.headers().get_all(http::header::HOST).iter();
        let (first_host, second_host) = (hosts.next(), hosts.next());
        if second_host.is_some() {
            return respond::bad_request("more than one Host header");
        }
        let named = match (req.uri().authority(), first_host) {
            (Some(a), _) => Some(a.as_str().to_string()),
            // Bytes, not `to_str`: a Unicode Host must be normalised (and
            // then blocked or refused), never mistaken for no Host at all.
            (None, Some(v)) => match std::str::from_utf8(v.as_bytes()) {
                Ok(text) => Some(text.trim().to_string()),
                Err(_) => return respond::bad_request("the Host header is not text"),
            },
            (None, None) => None,
        };
        let host = match named {
            Some(n) => match parse_authority(&n, Some(80)) {
                Ok((h, _)) => h,
                Err(e) => return respond::bad_request(&format!("host {n:?}: {e}")),
            },
            None => self.host.clone(),
        };
        let ua = user_agent(req.headers()).map(str::to_string);
        if let Verdict::Block(m) = decide(&self.state, &self.who.subject, &host, ua.as_deref()) {
            let key = host.as_key();
            let path = self.state.live().config.audit.log_paths.then(|| req.uri().path().to_string());
            let attempt = Attempt {
                method: req.method(),
                path: path.as_deref(),
                user_agent: ua.as_deref(),
                ..self.attempt(&key, &m)
            };
            return respond::block(&self.state, &attempt).await;
        }
        let target = format!("{}:{}", self.host, self.port);
        let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        let Ok(uri) = http::Uri::try_from(format!("http://{target}{path}")) else {
            return respond::bad_request("the request target cannot be forwarded");
        };
        let host_header = first_host.cloned().unwrap_or_else(|| {
            http::HeaderValue::from_str(&target).unwrap_or(http::HeaderValue::from_static("localhost"))
        });
        let live = self.state.live();
        let upstream = super::forward::Upstream {
            client: &live.client,
            response_timeout: live.config.proxy.response_timeout,
            tunnel_idle: live.config.proxy.tunnel_idle_timeout,
        };
        super::forward::relay(&upstream, req, uri, host_header, |_| {}).await
    }

    /// Serves HTTP/1.1 on a connection that must never reach its origin:
    /// every request gets the block page and its own audit record.
    async fn serve_block_pages<S>(self, stream: S, host: String, matched: Match)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (header_timeout, max_header_bytes) = {
            let live = self.state.live();
            (live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
        };
        let tunnel = Arc::new(self);
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let svc = hyper::service::service_fn({
            let (tunnel, answered, host, matched) =
                (Arc::clone(&tunnel), Arc::clone(&answered), host.clone(), matched.clone());
            move |req: Request<Incoming>| {
                let tunnel = Arc::clone(&tunnel);
                answered.store(true, std::sync::atomic::Ordering::Relaxed);
                // The record names the banned host the request itself names
                // (its Host) when there is one, else the name intercepted.
                let (host, matched) = banned_request_host(&tunnel.state, &tunnel.who.subject, &req)
                    .unwrap_or_else(|| (host.clone(), matched.clone()));
                async move {
                    let ua = user_agent(req.headers()).map(str::to_string).or_else(|| tunnel.user_agent.clone());
                    let path = tunnel.state.live().config.audit.log_paths.then(|| req.uri().path().to_string());
                    let attempt = Attempt {
                        method: req.method(),
                        path: path.as_deref(),
                        user_agent: ua.as_deref(),
                        ..tunnel.attempt(&host, &matched)
                    };
                    Ok::<_, std::convert::Infallible>(respond::block(&tunnel.state, &attempt).await)
                }
            }
        });
        let result =
            super::http1_server(header_timeout, max_header_bytes).serve_connection(TokioIo::new(stream), svc).await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "intercepted connection ended");
        }
        // No request came (bytes that are not HTTP, or nothing after the
        // handshake): the CONNECT itself was the attempt, and it is recorded.
        if !answered.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = respond::block(&tunnel.state, &tunnel.attempt(&host, &matched)).await;
        }
    }
}

/// The banned host a request on an intercepted connection names in its
/// `Host` (or absolute target), with its match; `None` when it names none,
/// or one that is not banned (then the intercepted name stands).
fn banned_request_host(state: &ProxyState, subject: &Subject, req: &Request<Incoming>) -> Option<(String, Match)> {
    let named = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req.headers().get(http::header::HOST)?.to_str().ok()?.trim().to_string(),
    };
    let (host, _) = parse_authority(&named, Some(443)).ok()?;
    // Decided like any request, so a host this person is exempted for is
    // never recorded (or flagged) as blocked.
    match decide(state, subject, &host, None) {
        Verdict::Block(matched) => Some((host.as_key().into_owned(), matched)),
        _ => None,
    }
}

/// What the first bytes of a non-TLS tunnel are.
enum HttpHead {
    /// A complete HTTP request head: served and decided request by request.
    Complete,
    /// Not HTTP (some other protocol): tunnelled as it is.
    NotHttp,
    /// HTTP that did not complete within the size or time limit.
    Incomplete,
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
                    return HttpHead::Incomplete;
                }
                return HttpHead::Complete;
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => {
                return if buffered.is_empty() {
                    HttpHead::NotHttp
                } else if looks_like_http(buffered) {
                    HttpHead::Incomplete
                } else {
                    HttpHead::NotHttp
                }
            }
        }
        if buffered.len() >= limit {
            return HttpHead::Incomplete;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffered.extend_from_slice(&chunk[..n]),
            _ => return HttpHead::Incomplete,
        }
    }
}

/// A request line starts with a method token and a space.
fn looks_like_http(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method_len >= 3 && buf.get(method_len) == Some(&b' ')
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
        let host_ref = normalise_host(&host).ok();
        return match host_ref.as_ref().and_then(|h| remediation_for(&state, &who, h, &host)) {
            Some(r) => r.respond(req).await,
            None => respond::error(StatusCode::FORBIDDEN, "Geen toegang.", "No access."),
        };
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let config = match leaves.server_config(&host).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(host = %host, error = %e, "cannot mint a certificate for the remediation page");
                return;
            }
        };
        let handshake = tokio_rustls::TlsAcceptor::from(config).accept(TokioIo::new(upgraded));
        let Ok(Ok(tls)) = tokio::time::timeout(state.live().config.proxy.header_timeout, handshake).await else {
            return;
        };
        let (header_timeout, max_header_bytes) = {
            let live = state.live();
            (live.config.proxy.header_timeout, live.config.proxy.max_header_bytes)
        };
        let (who, host) = (Arc::new(who), Arc::new(host));
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (state, who, host) = (Arc::clone(&state), Arc::clone(&who), Arc::clone(&host));
            async move {
                let resp =
                    match normalise_host(&host).ok().as_ref().and_then(|h| remediation_for(&state, &who, h, &host)) {
                        Some(r) => r.respond(req).await,
                        // No longer flagged (attested on this connection): still
                        // never forwarded from an intercepted connection; the
                        // browser reconnects and is tunnelled.
                        None => {
                            let mut resp = Response::new(respond::empty());
                            *resp.status_mut() = StatusCode::SEE_OTHER;
                            let location = crate::compliance::remediate::safe_return(
                                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                            )
                            .to_string();
                            if let Ok(v) = http::HeaderValue::from_str(&location) {
                                resp.headers_mut().insert(http::header::LOCATION, v);
                            }
                            resp.headers_mut()
                                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                            resp
                        }
                    };
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let _ = super::http1_server(header_timeout, max_header_bytes).serve_connection(TokioIo::new(tls), svc).await;
    });
    Response::new(respond::empty())
}
