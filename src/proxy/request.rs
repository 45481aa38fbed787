//! One request on the proxy listener: what kind it is (CONNECT, a request to
//! forward, or a request to the proxy itself), the facts it carries, and
//! carrying out what [`crate::decision::decide`] says about it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::act::{refuse, remediation, unexpected};
use super::identify::{decide_identified, user_agent};
use super::record::{self, Attempt};
use super::{connect, forward, ProxyState};
use crate::decision::{Action, Facts, Fetch, Reason, Stage, Who};
use crate::identity::canonical_ip;
use crate::pages;
use crate::plumbing::headers::has_our_via;
use crate::plumbing::{respond, ProxyBody};
use crate::policy::{parse_authority, Host};

/// Entry point for every request the proxy listener parses.
pub async fn handle(
    state: Arc<ProxyState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let m = crate::metrics::metrics();
    m.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let response = if req.method() == Method::CONNECT {
        m.connect_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        connect::handle(state, peer, req).await
    } else if req.uri().authority().is_some() {
        handle_absolute(state, peer, req).await
    } else {
        // Checked at accept, and again per request: a reload that narrows
        // `allow_clients` also ends keep-alive connections it no longer allows.
        let ip = canonical_ip(peer.ip());
        if state.live().config.proxy.allow_clients.iter().any(|net| net.contains(&ip)) {
            local(&state, &req)
        } else {
            refuse(Reason::ClientNotAllowed)
        }
    };
    Ok(response)
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
    let live = state.live();
    let ua = user_agent(req.headers());
    let facts = Facts {
        stage: Stage::Request { https: !scheme_is_http, looped: has_our_via(req.headers()) },
        client: canonical_ip(peer.ip()),
        host: &host,
        port,
        user_agent: ua,
        who: Who::Unknown,
        today: state.today(),
    };
    let (action, who) = match decide_identified(&state, &live, facts, peer, req.headers()).await {
        Ok(decided) => decided,
        Err(answer) => return answer,
    };
    let path = live.config.audit.log_paths.then(|| uri.path());
    let attempt = |who, host: &Host, matched| Attempt {
        host: host.as_key().into_owned(),
        port,
        method: req.method().clone(),
        path: path.map(str::to_string),
        user_agent: ua.map(str::to_string),
        fetch: Fetch::from_headers(req.headers()),
        ..Attempt::of(who, matched)
    };
    match action {
        Action::Block { host, matched } => record::block(&state, &attempt(&who, &host, &matched)).await,
        Action::Remediate { host, key, flag } => {
            let host = host.as_key().into_owned();
            match remediation(&state, &who, &host, key, flag) {
                Some(r) => r.respond(req).await,
                None => refuse(Reason::FlaggedSubject),
            }
        }
        // RFC 9112 section 3.2: a request with more than one Host is a bad
        // request; never forwarded (a banned target above is still blocked
        // and recorded).
        Action::Forward { .. } if req.headers().get_all(header::HOST).iter().nth(1).is_some() => {
            respond::bad_request("more than one Host header")
        }
        Action::Forward { exempted } => {
            if let Some(e) = &exempted {
                // Never let an exempted attempt through unrecorded.
                if !record::exempted(&state, &attempt(&who, &e.host, &e.matched), &e.exemption.reason).await {
                    return record::unrecorded();
                }
            }
            forward::forward(&state, req, &host, port).await
        }
        other => unexpected(&other),
    }
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
            let pac = live.pac.get(&live.config, &state.policy.load(), via_host);
            let mut resp = Response::new(respond::full(pac.body));
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
