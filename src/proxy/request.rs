//! One request on the proxy listener: what kind it is (CONNECT, a request to
//! forward, or a request to the proxy itself), which host it really targets,
//! and what the policy says about it.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::respond::{self, Attempt};
use super::{connect, forward, headers, ProxyBody, ProxyState};
use crate::audit::{EventKind, Record, Via};
use crate::compliance::remediate::Remediation;
use crate::compliance::subject_key;
use crate::identity::{canonical_ip, AuthOutcome, Identified};
use crate::pages;
use crate::policy::{parse_authority, Host, Target, Verdict};

/// Entry point for every request the proxy listener parses.
pub async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let m = crate::metrics::metrics();
    m.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Checked at accept, and again per request: a reload that narrows
    // `allow_clients` also ends keep-alive connections it no longer allows.
    let ip = canonical_ip(peer.ip());
    if !state.live().config.proxy.allow_clients.iter().any(|net| net.contains(&ip)) {
        let mut resp = respond::error(
            StatusCode::FORBIDDEN,
            "Deze proxy bedient uw netwerk niet.",
            "This proxy does not serve your network.",
        );
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(resp);
    }
    let response = if req.method() == Method::CONNECT {
        m.connect_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        connect::handle(state, peer, req).await
    } else if req.uri().authority().is_some() {
        handle_absolute(state, peer, req).await
    } else {
        local(&state, &req)
    };
    Ok(response)
}

/// Identifies who sends a proxied request (answering 407 when credentials
/// are required and missing or wrong) and continues or starts its session.
pub async fn identify(
    state: &ProxyState,
    peer: SocketAddr,
    headers: &http::HeaderMap,
) -> Result<Identified, Response<ProxyBody>> {
    let client = canonical_ip(peer.ip());
    let ua = user_agent(headers);
    let user = match &state.identity.auth {
        None => None,
        Some(auth) => match auth.check(client, headers.get(header::PROXY_AUTHORIZATION)).await {
            AuthOutcome::Authenticated(u) => Some(u),
            AuthOutcome::Missing => return Err(respond::auth_required(&auth.realm)),
            AuthOutcome::Failed { user } => {
                crate::metrics::metrics().auth_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut r = Record::new(EventKind::AuthFailed);
                r.user = user.map(|u| u.chars().take(64).collect());
                r.client = Some(client);
                r.device = state.identity.devices.name_of(client).map(str::to_string);
                r.via = Some(Via::Proxy);
                r.user_agent = ua.map(|u| u.chars().take(512).collect());
                if let Err(e) = state.audit.record(r).await {
                    tracing::error!(error = %e, "could not write auth_failed record");
                }
                return Err(respond::auth_required(&auth.realm));
            }
        },
    };
    let subject = state.identity.subject(client, user.as_deref());
    let touched = state.identity.sessions.touch(client, subject.user.as_deref(), subject.device.as_deref(), ua);
    if let Some(ended) = touched.ended {
        if let Err(e) = state.audit.record(ended).await {
            tracing::error!(error = %e, "could not write session_end record");
        }
    }
    Ok(Identified { subject, session: touched.id, role: user.map(|u| u.role) })
}

/// The `User-Agent` as text, if it is text.
pub fn user_agent(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())
}

/// The remediation flow, when the host is a protected system and the
/// subject is flagged.
pub fn remediation_for<'a>(
    state: &'a ProxyState,
    who: &'a Identified,
    host: &Host,
    host_key: &'a str,
) -> Option<Remediation<'a>> {
    let compliance = state.compliance.as_deref()?;
    if !compliance.is_protected(host) {
        return None;
    }
    let key = subject_key(&who.subject);
    let flagged = compliance.flag_of(&key)?;
    Some(Remediation {
        compliance,
        audit: &state.audit,
        subject: &who.subject,
        session: Some(&who.session),
        keys: vec![key.clone()],
        flagged: (key, flagged),
        host: host_key,
        via: Via::Proxy,
    })
}

/// `403` for a destination the proxy never connects to for clients.
pub fn destination_denied() -> Response<ProxyBody> {
    respond::error(
        StatusCode::FORBIDDEN,
        "Dit adres is via de proxy niet bereikbaar.",
        "This address cannot be reached through the proxy.",
    )
}

/// Whether the target is this proxy itself, by address or by `localhost`.
pub fn targets_self(state: &ProxyState, host: &Host, port: u16) -> bool {
    match host {
        Host::Ip(ip) => state.is_self(*ip, port),
        Host::Name(n) if n == "localhost" || n.ends_with(".localhost") => {
            state.is_self(IpAddr::from([127, 0, 0, 1]), port)
        }
        Host::Name(_) => false,
    }
}

/// An absolute-form request (`GET http://host/path`): decided on the
/// request-target's authority, the one weerwal would connect to. The `Host`
/// header is ignored for the decision and replaced when forwarding (RFC 9112
/// section 3.2.2), so a mismatched `Host` can never pick the origin.
async fn handle_absolute(state: Arc<ProxyState>, peer: SocketAddr, req: Request<Incoming>) -> Response<ProxyBody> {
    let uri = req.uri();
    let scheme_is_http = uri.scheme() == Some(&http::uri::Scheme::HTTP);
    let default_port = if scheme_is_http { 80 } else { 443 };
    let Some(authority) = uri.authority() else {
        return respond::bad_request("no host in the request target");
    };
    let (host, port) = match parse_authority(authority.as_str(), Some(default_port)) {
        Ok(hp) => hp,
        Err(e) => return respond::bad_request(&format!("host {:?}: {e}", authority.as_str())),
    };
    if let Host::Ip(ip) = host {
        if state.live().denied.is_denied(ip) {
            return destination_denied();
        }
    }
    if targets_self(&state, &host, port) || headers::has_our_via(req.headers()) {
        return respond::error(
            StatusCode::FORBIDDEN,
            "Dit verzoek zou bij de proxy zelf uitkomen (een lus) en is geweigerd.",
            "This request would loop back to the proxy itself and was refused.",
        );
    }
    let who = match identify(&state, peer, req.headers()).await {
        Ok(who) => who,
        Err(challenge) => return challenge,
    };
    let subject = &who.subject;
    let host_key = host.as_key();
    if let Some(remediation) = remediation_for(&state, &who, &host, &host_key) {
        return remediation.respond(req).await;
    }
    let ua = user_agent(req.headers());
    let policy = state.policy.load();
    let verdict = policy.decide(subject, &Target { host: &host, user_agent: ua, date: policy.today() });
    drop(policy);
    let path = state.live().config.audit.log_paths.then(|| uri.path());
    let matched = match &verdict {
        Verdict::Block(m) | Verdict::Exempt { matched: m, .. } => Some(m),
        Verdict::Allow => None,
    };
    if let Some(matched) = matched {
        let attempt = Attempt {
            subject,
            session: &who.session,
            matched,
            host: &host_key,
            port,
            method: req.method(),
            path,
            user_agent: ua,
        };
        match &verdict {
            Verdict::Exempt { exemption, .. } => respond::exempted(&state, &attempt, &exemption.reason).await,
            _ => return respond::block(&state, &attempt).await,
        }
    }
    if !scheme_is_http {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "Alleen http:// kan zo worden opgevraagd; voor https:// gebruikt de browser CONNECT.",
            "Only http:// URLs can be requested this way; browsers use CONNECT for https://.",
        );
    }
    forward::forward(&state, req, &host, port).await
}

/// A request to the proxy itself (origin-form): the status page, and the PAC
/// file browsers are configured with. Never forwarded.
fn local(state: &ProxyState, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond::error(StatusCode::METHOD_NOT_ALLOWED, "Methode niet toegestaan.", "Method not allowed.");
    }
    match req.uri().path() {
        "/" => {
            let policy = state.policy.load();
            let apps: Vec<&str> = policy.apps().iter().map(|a| a.name.as_str()).collect();
            respond::html(StatusCode::OK, pages::status_page(env!("CARGO_PKG_VERSION"), &apps, policy.domain_count()))
        }
        "/proxy.pac" | "/wpad.dat" => {
            // Listening on a wildcard address says nothing laptops can use:
            // then name the proxy as the browser reached it.
            let live = state.live();
            let wildcard = live.config.proxy.listen.first().is_some_and(|a| a.ip().is_unspecified());
            let via_host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).filter(|h| {
                live.config.pac.proxy.is_none() && wildcard && parse_authority(h, Some(80)).is_ok() && h.contains(':')
            });
            let pac = match via_host {
                Some(h) => crate::pac::generate_with_proxy(&live.config, &state.policy.load(), h),
                None => crate::pac::generate(&live.config, &state.policy.load()),
            };
            let mut resp = Response::new(respond::full(pac.text));
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ns-proxy-autoconfig"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            if let Ok(etag) = HeaderValue::from_str(&pac.etag) {
                h.insert(header::ETAG, etag);
            }
            let not_modified = req
                .headers()
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == pac.etag));
            if not_modified {
                *resp.status_mut() = StatusCode::NOT_MODIFIED;
                *resp.body_mut() = respond::empty();
            }
            resp
        }
        _ => respond::error(StatusCode::NOT_FOUND, "Niet gevonden.", "Not found."),
    }
}
