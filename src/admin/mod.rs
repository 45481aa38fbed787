//! The security officers' review surface on its own listener (`[admin]
//! listen`, default `127.0.0.1:9090`, never the proxy's port): officer
//! login ([`auth`]), server-rendered pages ([`site`], [`pages`]), a JSON
//! API under `/api/` ([`api`]), and `GET /metrics` and `GET /healthz`
//! without login — so the listener belongs on loopback or a management
//! network, never where laptops can reach it.
//!
//! Everything the pages show is read with the functions of `weerwal logs`
//! ([`review`]): the dashboard and the command line cannot disagree.

pub mod api;
pub mod auth;
pub mod charts;
mod form;
pub mod nodes;
pub mod pages;
pub mod review;
mod site;
pub mod source;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, EventKind, Record, Via};
use crate::compliance::Compliance;
use crate::config::{AdminConfig, Config};
use crate::identity::{canonical_ip, Identity, Role, Users};
use crate::plumbing::accept::{self, Accepted, Admission};
use crate::plumbing::respond;
use crate::plumbing::ProxyBody;
use auth::{Officer, OfficerAuth, SessionState};

/// How long a chain verification result is reused.
pub const VERIFY_TTL: Duration = Duration::from_secs(30);
/// Largest request body (forms, JSON) the dashboard reads.
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;

/// Everything the dashboard's handlers need.
pub struct AdminState {
    pub config: Config,
    pub audit: AuditLog,
    pub identity: Arc<Identity>,
    pub compliance: Option<Arc<Compliance>>,
    /// `[cluster]`: the audit pages read every node's records from the
    /// database, and the nodes page shows each node's heartbeat and policy.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    pub auth: OfficerAuth,
    pub verify: review::VerifyCache,
    /// Whether cookies get `Secure` (only when served over TLS).
    pub secure_cookies: bool,
    /// `[admin] cert` and `key`: the dashboard speaks HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// One officer's clear at a time, so one flag gets one record.
    clear_lock: tokio::sync::Mutex<()>,
}

/// Where the dashboard listens, if at all: `[admin] listen` when the
/// section is there; without it the default loopback address, but only
/// when the users file names at least one officer (no officer, nobody to
/// log in: no listener).
pub fn listen_addr(config: &Config, users: &Users) -> Option<SocketAddr> {
    match &config.admin {
        Some(a) => Some(a.listen),
        None if users.iter().any(|u| u.role == Role::Officer) => Some(AdminConfig::default().listen),
        None => None,
    }
}

/// Why the dashboard could not start (an explicit `[admin]` only).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("users: {0}")]
    Users(#[from] crate::identity::UsersError),
    #[error("{0}")]
    Bind(std::io::Error),
    /// `[admin] cert`/`key` cannot be used.
    #[error("admin.cert/admin.key: {0}")]
    Tls(#[from] crate::tls::PemError),
    /// A listener the configuration must not have (plain HTTP off loopback).
    #[error("{0}")]
    Refused(String),
}

/// Binds the dashboard's listener when it should run. An explicit `[admin]`
/// that cannot be bound, or whose users file cannot be read, stops
/// start-up; the implicit default only logs why it is not there.
pub async fn bind(
    config: &Config,
    audit: AuditLog,
    identity: Arc<Identity>,
    compliance: Option<Arc<Compliance>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) -> Result<Option<(TcpListener, Arc<AdminState>)>, AdminError> {
    let explicit = config.admin.is_some();
    let directory_officers = identity.directory.as_ref().is_some_and(|d| d.officer_group().is_some());
    let users = match Users::load(&config.identity.users_file) {
        Ok(u) => u,
        // Officers from the directory: a users file (for a break-glass
        // officer) is optional.
        Err(_) if directory_officers && !config.identity.users_file.exists() => Users::default(),
        Err(e) if explicit => return Err(AdminError::Users(e)),
        Err(e) => {
            tracing::warn!(error = %e, "officers' dashboard not started: the users file cannot be read");
            return Ok(None);
        }
    };
    let Some(addr) = listen_addr(config, &users).or_else(|| directory_officers.then(|| AdminConfig::default().listen))
    else {
        tracing::debug!("no [admin] section and no officer in the users file: no dashboard");
        return Ok(None);
    };
    let tls = match config.admin.as_ref().and_then(|a| a.cert.as_deref().zip(a.key.as_deref())) {
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
        None => None,
    };
    let allow_plaintext = config.admin.as_ref().is_some_and(|a| a.allow_plaintext);
    if tls.is_none() && !addr.ip().is_loopback() && !allow_plaintext {
        return Err(AdminError::Refused(format!(
            "admin.listen = {addr} is not a loopback address: officers' passwords and session cookies would cross \
             the network readable. Set admin.cert and admin.key (HTTPS), or admin.allow_plaintext = true"
        )));
    }
    if users.iter().all(|u| u.role != Role::Officer) && !directory_officers {
        tracing::warn!(users = %config.identity.users_file.display(), "the dashboard runs but no user has role officer: add one with `weerwal users add NAME --role officer`");
    }
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if explicit => {
            return Err(AdminError::Bind(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {addr} (admin.listen): {e}"),
            )))
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "officers' dashboard not started on its default address; set [admin] listen");
            return Ok(None);
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    if !bound.ip().is_loopback() {
        tracing::warn!(listen = %bound, "the dashboard's /metrics and /healthz need no login: keep admin.listen on loopback or a management network");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let officer_auth = OfficerAuth::new(&config.identity.users_file, users).with_directory(identity.directory.clone());
    let state = Arc::new(AdminState {
        config: config.clone(),
        audit,
        identity,
        compliance,
        cluster,
        auth: officer_auth,
        verify: review::VerifyCache::new(&config.audit.path, VERIFY_TTL),
        secure_cookies: tls.is_some(),
        tls,
        clear_lock: tokio::sync::Mutex::new(()),
    });
    tracing::info!(listen = %bound, "officers' dashboard running: {scheme}://{bound}/");
    Ok(Some((listener, state)))
}

/// How often the dashboard looks whether the users file changed.
const USERS_WATCH: Duration = Duration::from_secs(1);

/// Serves the dashboard until `shutdown`, then lets requests in flight
/// finish (up to `grace`).
pub async fn run(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken, grace: Duration) {
    // The users file is looked at once a second, off the runtime's threads.
    {
        let (state, shutdown) = (Arc::clone(&state), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(USERS_WATCH) => {}
                    _ = shutdown.cancelled() => return,
                }
                let s = Arc::clone(&state);
                let _ = tokio::task::spawn_blocking(move || s.auth.refresh()).await;
            }
        });
    }
    // The accept loop every listener shares: a cap in all and per address
    // (officers are few; a flood from one machine cannot exhaust the server).
    let admission = Admission::new(MAX_CONNECTIONS, MAX_CONNECTIONS / 4);
    accept::run(
        listener,
        admission,
        shutdown,
        grace,
        |_| true,
        move |conn| {
            let state = Arc::clone(&state);
            async move {
                let Accepted { stream, peer, slot, shutdown } = conn;
                match state.tls.clone() {
                    Some(tls) => {
                        let limit = Duration::from_secs(10);
                        if let Some(stream) = accept::tls_handshake(&tls, stream, limit, peer, "dashboard").await {
                            serve_connection(stream, state, peer, shutdown).await;
                        }
                    }
                    None => serve_connection(stream, state, peer, shutdown).await,
                }
                drop(slot);
            }
        },
    )
    .await
}

/// Serves one dashboard connection (plain or TLS) until it ends or `shutdown`.
async fn serve_connection<I>(io: I, state: Arc<AdminState>, peer: SocketAddr, shutdown: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(io),
            hyper::service::service_fn(move |req| handle(Arc::clone(&state), peer, req)),
        );
    accept::serve_until_shutdown(conn, &shutdown, |c| c.graceful_shutdown(), peer, "dashboard").await;
}

/// A request as the handlers see it: its parts, the peer, the body read.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub client: IpAddr,
    pub body: Bytes,
}

impl Req {
    /// The form fields of an urlencoded body.
    pub fn form(&self) -> Vec<(String, String)> {
        form::parse_urlencoded(&String::from_utf8_lossy(&self.body))
    }

    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn user_agent(&self) -> Option<String> {
        self.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(512).collect())
    }
}

async fn handle(
    state: Arc<AdminState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = if parts.method == Method::POST {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "text/plain; charset=utf-8", "request body too large\n"))
            }
        }
    } else {
        Bytes::new()
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(form::parse_urlencoded).unwrap_or_default(),
        headers: parts.headers,
        client: canonical_ip(peer.ip()),
        body,
    };
    Ok(route(&state, req).await)
}

/// Paths that need no login.
async fn route(state: &Arc<AdminState>, req: Req) -> Response<ProxyBody> {
    let m = &req.method;
    match req.path.as_str() {
        "/healthz" if *m == Method::GET || *m == Method::HEAD => {
            let degraded = crate::metrics::metrics().cluster.load(std::sync::atomic::Ordering::Relaxed)
                == crate::metrics::CLUSTER_DEGRADED;
            let body = if degraded { "degraded: cluster database unreachable\n" } else { "ok\n" };
            return text(StatusCode::OK, "text/plain; charset=utf-8", body);
        }
        "/metrics" if *m == Method::GET => return metrics(state),
        "/login" if *m == Method::GET => return site::login_form(state, &req, None, StatusCode::OK),
        "/login" if *m == Method::POST => {
            if !same_origin(&req.headers) {
                return forbidden_cross_origin(&req);
            }
            return site::login(state, &req).await;
        }
        "/healthz" | "/metrics" | "/login" => return method_not_allowed(),
        _ => {}
    }
    let api = req.path.starts_with("/api/");
    let officer = match state.auth.session_checked(&req.headers).await {
        SessionState::Officer(o) => o,
        SessionState::None if api => {
            return api::error(
                StatusCode::UNAUTHORIZED,
                "log in first: POST /login with an officer's name and password",
            )
        }
        SessionState::None => return see_other("/login"),
        SessionState::NotOfficer(name) => {
            tracing::warn!(user = %name, "dashboard session ended: the user is no longer an officer");
            return forbidden_not_officer(api);
        }
        SessionState::Unverifiable(_) if api => {
            return api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the directory cannot be reached: officer group membership cannot be checked",
            )
        }
        SessionState::Unverifiable(_) => {
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::message_page(
                    None,
                    "Directory onbereikbaar",
                    "Directory unreachable",
                    "De gebruikersdirectory (Active Directory) is nu niet bereikbaar; uw lidmaatschap van de officer-groep kan niet worden gecontroleerd. Probeer het zo opnieuw, of log in als officer uit het gebruikersbestand.",
                    "The user directory (Active Directory) cannot be reached, so your officer group membership cannot be checked. Try again shortly, or log in as an officer from the users file.",
                ),
            )
        }
    };
    if *m == Method::POST {
        if !same_origin(&req.headers) {
            return forbidden_cross_origin(&req);
        }
        let header_token = req.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string);
        let token = header_token.or_else(|| {
            if api {
                None
            } else {
                req.form().into_iter().rev().find(|(k, _)| k == "csrf").map(|(_, v)| v)
            }
        });
        if !token.is_some_and(|t| crate::tokens::same(&t, &officer.csrf)) {
            tracing::warn!(officer = %officer.name, path = %req.path, "dashboard: POST without a valid CSRF token refused");
            return if api {
                api::error(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token: send the X-CSRF-Token header (GET /api/me gives it)",
                )
            } else {
                html(
                    StatusCode::FORBIDDEN,
                    pages::message_page(
                        Some(&officer),
                        "Geweigerd",
                        "Refused",
                        "Dit formulier mist een geldig beveiligingstoken (CSRF). Open de pagina opnieuw en probeer het nog eens.",
                        "This form lacks a valid security (CSRF) token. Reload the page and try again.",
                    ),
                )
            };
        }
    }
    if api {
        api::route(state, &officer, &req).await
    } else {
        site::route(state, &officer, &req).await
    }
}

/// A POST's `Origin` (when the browser sends one) must be this dashboard
/// itself, and a browser's `Sec-Fetch-Site` must not say `cross-site`.
fn same_origin(headers: &HeaderMap) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let Ok(origin) = origin.to_str() else { return false };
    origin.eq_ignore_ascii_case(&format!("http://{host}")) || origin.eq_ignore_ascii_case(&format!("https://{host}"))
}

fn forbidden_cross_origin(req: &Req) -> Response<ProxyBody> {
    tracing::warn!(client = %req.client, path = %req.path, "dashboard: cross-origin POST refused");
    if req.path.starts_with("/api/") {
        return api::error(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    html(
        StatusCode::FORBIDDEN,
        pages::message_page(
            None,
            "Geweigerd",
            "Refused",
            "Dit formulier kwam van een andere website en is geweigerd.",
            "This form came from another web site and was refused.",
        ),
    )
}

fn forbidden_not_officer(api: bool) -> Response<ProxyBody> {
    if api {
        return api::error(StatusCode::FORBIDDEN, "only users with role officer may use the dashboard");
    }
    let mut resp = html(
        StatusCode::FORBIDDEN,
        pages::message_page(
            None,
            "Geen toegang",
            "Forbidden",
            "Alleen beveiligingsfunctionarissen (rol officer) hebben toegang tot dit overzicht.",
            "Only security officers (role officer) may use this dashboard.",
        ),
    );
    expire_session_cookie(&mut resp, false);
    resp
}

/// Writes the `auth_failed` record of a failed dashboard login.
async fn record_login_failure(state: &AdminState, req: &Req, name: &str, why: &str) {
    let mut r = Record::new(EventKind::AuthFailed);
    r.user = (!name.is_empty()).then(|| name.chars().take(64).collect());
    r.client = Some(req.client);
    r.device = state.identity.devices.name_of(req.client).map(str::to_string);
    r.via = Some(Via::Admin);
    r.user_agent = req.user_agent();
    r.reason = Some(format!("dashboard login: {why}"));
    if let Err(e) = state.audit.record(r).await {
        tracing::error!(error = %e, "could not write auth_failed record");
    }
}

/// What clearing a flag came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleared {
    /// Cleared; the `flag_cleared` record has this `seq`.
    Done {
        seq: u64,
    },
    NotFlagged,
    /// No `[compliance]`: nothing is ever flagged.
    Off,
    /// The record could not be written, so the flag stays.
    NotRecorded(String),
}

/// Clears a subject's flag for an officer: first the `flag_cleared` record
/// (the subject as `user`/`client`, the officer named in `reason` and
/// `detail`), then the flag. Without the record, no clearing.
pub async fn clear_flag(state: &AdminState, officer: &Officer, officer_client: IpAddr, key: &str) -> Cleared {
    let Some(compliance) = &state.compliance else { return Cleared::Off };
    let _one_at_a_time = state.clear_lock.lock().await;
    let Some(flag) = compliance.flag_of(key) else { return Cleared::NotFlagged };
    let mut r = Record::new(EventKind::FlagCleared);
    match key.split_once(':') {
        Some(("user", u)) => r.user = Some(u.to_string()),
        Some(("client", c)) => {
            r.client = c.parse().ok();
            r.device = r.client.and_then(|ip| state.identity.devices.name_of(ip).map(str::to_string));
        }
        _ => {}
    }
    r.app = Some(flag.app.clone());
    r.host = Some(flag.host.clone());
    r.via = Some(Via::Admin);
    r.reason = Some(format!("flag cleared by officer {}", officer.name));
    r.detail = Some(serde_json::json!({
        "officer": officer.name,
        "officer_client": officer_client.to_string(),
        "subject": key,
        "flagged_since": flag.since,
        "flag_reference": flag.seq,
    }));
    match state.audit.record(r).await {
        Ok(seq) => {
            compliance.clear([key]);
            tracing::info!(officer = %officer.name, subject = key, seq, "flag cleared by an officer");
            Cleared::Done { seq }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write flag_cleared record; flag kept");
            Cleared::NotRecorded(e.to_string())
        }
    }
}

fn metrics(state: &AdminState) -> Response<ProxyBody> {
    let flagged = state.compliance.as_ref().map(|c| c.flagged().len()).unwrap_or(0);
    let body = crate::metrics::metrics().render(state.identity.sessions.len(), flagged);
    text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
}

/// An HTML page of the dashboard: never cached, never framed, no referrer
/// to other sites (`same-origin`: with `no-referrer` browsers send
/// `Origin: null` on the dashboard's own forms, which the origin check refuses).
pub fn html(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = respond::html(status, body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

/// A plain response with a content type, never cached.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(respond::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// `303 See Other` to a local path.
pub fn see_other(location: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(respond::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn method_not_allowed() -> Response<ProxyBody> {
    text(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "method not allowed\n")
}

fn set_cookie(resp: &mut Response<ProxyBody>, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn expire_session_cookie(resp: &mut Response<ProxyBody>, secure: bool) {
    set_cookie(resp, auth::set_cookie(auth::SESSION_COOKIE, "", Some(Duration::ZERO), secure));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_runs_by_default_only_when_an_officer_exists() {
        let mut config = Config::default();
        let mut users = Users::default();
        assert_eq!(listen_addr(&config, &users), None);
        users.upsert("jan", "user-password", Role::User, vec![]).unwrap();
        assert_eq!(listen_addr(&config, &users), None);
        users.upsert("fbakker", "officer-password", Role::Officer, vec![]).unwrap();
        assert_eq!(listen_addr(&config, &users), Some("127.0.0.1:9090".parse().unwrap()));
        config.admin = Some(AdminConfig { listen: "127.0.0.1:9191".parse().unwrap(), ..Default::default() });
        assert_eq!(listen_addr(&config, &Users::default()), Some("127.0.0.1:9191".parse().unwrap()));
    }

    #[test]
    fn origin_check() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("host", "127.0.0.1:9090")])));
        assert!(same_origin(&h(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:9090")])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:9090"), ("origin", "http://127.0.0.1:8000")])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:9090"), ("origin", "null")])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:9090"), ("sec-fetch-site", "cross-site")])));
    }
}
