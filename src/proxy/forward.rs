//! Forwarding an allowed plain-HTTP request to its origin. Bodies stream in
//! both directions without being buffered; the origin client is pooled.

use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;

use super::ProxyState;
use crate::plumbing::relay::{relay, Upstream};
use crate::plumbing::{respond, ProxyBody};
use crate::policy::Host;

/// Sends the request to `host:port` and streams the answer back. An origin
/// that cannot be reached gives 502, one that does not answer in time 504.
pub async fn forward(state: &ProxyState, req: Request<Incoming>, host: &Host, port: u16) -> Response<ProxyBody> {
    let authority = if port == 80 { host.to_string() } else { format!("{host}:{port}") };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Ok(uri) = Uri::try_from(format!("http://{authority}{path}")) else {
        return respond::bad_request("the request target cannot be forwarded");
    };
    // RFC 9112 section 3.2.2: the Host sent on is the target's authority.
    let Ok(host_header) = HeaderValue::from_str(&authority) else {
        return respond::bad_request("the host cannot be written as a Host header");
    };
    let live = state.live();
    let upstream = Upstream {
        client: &live.client,
        response_timeout: live.config.proxy.response_timeout,
        tunnel_idle: live.config.proxy.tunnel_idle_timeout,
    };
    relay(&upstream, req, uri, host_header, |_| {}).await
}
