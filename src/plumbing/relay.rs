//! Relaying a request to an origin or upstream: both bodies streamed, never
//! buffered; hop-by-hop headers removed, `Via` added, an accepted protocol
//! upgrade (WebSocket) spliced. Used by the proxy's forwarding, plain HTTP
//! inside tunnels, and the gateway.

use std::error::Error as _;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{headers, respond, ProxyBody};

/// Where and how to send a request on: the pooled client and its limits.
pub struct Upstream<'a> {
    pub client: &'a super::OriginClient,
    pub response_timeout: Duration,
    pub tunnel_idle: Duration,
}

/// Relays a request to `uri` with `host_header`, streaming both bodies,
/// removing hop-by-hop headers, adding `Via`, and splicing an accepted
/// protocol upgrade (WebSocket). `extra` adds headers of the caller's own
/// (the gateway's `X-Forwarded-*`).
pub async fn relay(
    upstream: &Upstream<'_>,
    mut req: Request<Incoming>,
    uri: Uri,
    host_header: HeaderValue,
    extra: impl FnOnce(&mut http::HeaderMap),
) -> Response<ProxyBody> {
    let upgrading = headers::is_upgrade(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    // An upgraded connection (WebSocket) outlives its HTTP connection: it
    // keeps the connection's admission slot until it closes.
    let slot = req.extensions().get::<std::sync::Arc<super::accept::Admitted>>().cloned();
    let (mut parts, body) = req.into_parts();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    parts.uri = uri;
    headers::strip_hop_by_hop(&mut parts.headers, upgrading);
    parts.headers.insert(header::HOST, host_header);
    headers::add_via(&mut parts.headers, parts.version);
    extra(&mut parts.headers);
    parts.version = Version::HTTP_11;
    let outgoing = Request::from_parts(parts, body);

    let result = tokio::time::timeout(upstream.response_timeout, upstream.client.request(outgoing)).await;
    let mut resp = match result {
        Err(_elapsed) => {
            // Debug only: which sites people visit is not the operator's business.
            tracing::debug!(%authority, "origin did not answer in time");
            return gateway_timeout(&authority);
        }
        Ok(Err(e)) => return origin_failed(&authority, &e),
        Ok(Ok(resp)) => resp,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let origin_upgrade = hyper::upgrade::on(&mut resp);
            let idle = upstream.tunnel_idle;
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::try_join!(client_upgrade, origin_upgrade) {
                    Ok((client, origin)) => {
                        let mut client = hyper_util::rt::TokioIo::new(client);
                        let mut origin = hyper_util::rt::TokioIo::new(origin);
                        let _ = super::idle::splice(&mut client, &mut origin, idle).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let (mut parts, _) = resp.into_parts();
            headers::add_via(&mut parts.headers, Version::HTTP_11);
            return Response::from_parts(parts, respond::empty());
        }
    }

    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    headers::add_via(&mut parts.headers, parts.version);
    Response::from_parts(parts, super::idle_body::IdleBody::new(body, upstream.tunnel_idle).boxed())
}

fn gateway_timeout(authority: &str) -> Response<ProxyBody> {
    respond::error(
        StatusCode::GATEWAY_TIMEOUT,
        &format!("De website {authority} antwoordt niet op tijd."),
        &format!("The website {authority} did not answer in time."),
    )
}

/// 502, or 504 when the failure was a connect timeout.
fn origin_failed(authority: &str, e: &hyper_util::client::legacy::Error) -> Response<ProxyBody> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return gateway_timeout(authority);
            }
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                // The name resolved only to addresses clients may not reach.
                return respond::destination_denied();
            }
        }
        source = s.source();
    }
    tracing::debug!(%authority, error = %e, "origin unreachable");
    respond::error(
        StatusCode::BAD_GATEWAY,
        &format!("De website {authority} is niet bereikbaar."),
        &format!("The website {authority} cannot be reached."),
    )
}
