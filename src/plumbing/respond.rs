//! Our own responses: complete bodies, HTML pages that are never cached,
//! the bilingual error pages, and the proxy's credential challenge.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ProxyBody;
use crate::pages;

/// A complete body of our own.
pub fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

/// An empty body (e.g. `200` to CONNECT).
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// An HTML response that is never cached: a block is a decision of now.
pub fn html(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
    );
    resp
}

/// A short bilingual error page.
pub fn error(status: StatusCode, nl: &str, en: &str) -> Response<ProxyBody> {
    html(status, pages::error_page(status.as_u16(), nl, en))
}

/// `400` for a request whose target cannot be understood; never forwarded.
pub fn bad_request(why: &str) -> Response<ProxyBody> {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Dit verzoek kan niet worden verwerkt: {why}"),
        &format!("This request cannot be handled: {why}"),
    )
}

/// `407` asking the browser for proxy credentials.
pub fn auth_required(realm: &str) -> Response<ProxyBody> {
    let mut resp = error(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "Log in met uw gebruikersnaam en wachtwoord om deze proxy te gebruiken.",
        "Log in with your user name and password to use this proxy.",
    );
    let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", realm.replace(['"', '\\'], ""));
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::PROXY_AUTHENTICATE, v);
    }
    resp
}

/// `403` for a destination weerwal never connects to for clients.
pub fn destination_denied() -> Response<ProxyBody> {
    error(
        StatusCode::FORBIDDEN,
        "Dit adres is via de proxy niet bereikbaar.",
        "This address cannot be reached through the proxy.",
    )
}
