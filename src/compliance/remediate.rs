//! The remediation flow on a protected host, shared by the proxy (plain and
//! intercepted HTTPS) and the gateway: every request gets the remediation
//! page, and a valid attestation form clears the flag and sends the person
//! back where they were going.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use super::{Compliance, Flag};
use crate::audit::{AuditLog, EventKind, Record, Via};
use crate::pages::{self, RemediationInfo};
use crate::plumbing::respond;
use crate::plumbing::ProxyBody;
use crate::policy::Subject;

/// The path the attestation form posts to on a protected host. Under a
/// dot-folder no real application uses.
pub const ATTEST_PATH: &str = "/.weerwal/attest";

/// Everything the flow needs to know about the flagged person.
pub struct Remediation<'a> {
    pub compliance: &'a Compliance,
    pub audit: &'a AuditLog,
    pub subject: &'a Subject,
    pub session: Option<&'a str>,
    /// Every key that may name this person (address, user, device cookie links).
    pub keys: Vec<String>,
    /// The key that is flagged, and its flag.
    pub flagged: (String, Flag),
    /// The protected host being reached.
    pub host: &'a str,
    pub via: Via,
}

impl Remediation<'_> {
    fn record(&self, event: EventKind, user_agent: Option<&str>) -> Record {
        let mut r = Record::new(event);
        r.session = self.session.map(str::to_string);
        r.user.clone_from(&self.subject.user);
        r.client = Some(self.subject.client);
        r.device.clone_from(&self.subject.device);
        r.host = Some(self.host.to_string());
        r.app = Some(self.flagged.1.app.clone());
        r.via = Some(self.via);
        r.user_agent = user_agent.map(|u| u.chars().take(512).collect());
        r.detail = Some(serde_json::json!({ "flagged": self.flagged.0, "flag_seq": self.flagged.1.seq }));
        r
    }

    /// Records a tunnel to the protected host that was closed for the
    /// flagged person (TLS without a name to intercept under).
    pub async fn record_closed_tunnel(&self, user_agent: Option<&str>) {
        crate::metrics::metrics().gateway_denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut r = self.record(EventKind::GatewayDenied, user_agent);
        r.reason = Some("tunnel closed: a flagged device reaching a protected system".to_string());
        if let Err(e) = self.audit.record(r).await {
            tracing::error!(error = %e, "could not write gateway_denied record");
        }
    }

    /// Answers one request of the flagged person to the protected host.
    pub async fn respond<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let ua = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
        if req.method() == Method::POST && req.uri().path() == ATTEST_PATH {
            return self.attest(req, ua.as_deref()).await;
        }
        let return_to = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        crate::metrics::metrics().gateway_denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.audit.record(self.record(EventKind::GatewayDenied, ua.as_deref())).await {
            tracing::error!(error = %e, "could not write gateway_denied record");
        }
        self.page(&return_to)
    }

    fn page(&self, return_to: &str) -> Response<ProxyBody> {
        let flag = &self.flagged.1;
        let token = self.compliance.csrf_token(&self.flagged.0);
        respond::html(
            StatusCode::FORBIDDEN,
            pages::remediation_page(&RemediationInfo {
                system: self.host,
                app: &flag.app,
                banned_host: &flag.host,
                when: &flag.since,
                incident: flag.seq,
                action: ATTEST_PATH,
                token: &token,
                return_to: safe_return(return_to),
            }),
        )
    }

    async fn attest<B>(&self, req: Request<B>, ua: Option<&str>) -> Response<ProxyBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = match Limited::new(req.into_body(), 4096).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return respond::bad_request("the form is too large"),
        };
        let form = parse_form(&body);
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        if !field("token").is_some_and(|t| self.compliance.csrf_ok(&self.flagged.0, t)) {
            return respond::error(
                StatusCode::FORBIDDEN,
                "Het formulier is verlopen of ongeldig. Laad de pagina opnieuw en probeer het nog eens.",
                "The form has expired or is invalid. Reload the page and try again.",
            );
        }
        if field("confirm") != Some("yes") {
            return self.page(field("return").unwrap_or("/"));
        }
        let mut r = self.record(EventKind::Attested, ua);
        r.reason = Some("removed the app and cleared the history".to_string());
        if let Err(e) = self.audit.record(r).await {
            tracing::error!(error = %e, "could not write attested record; flag kept");
            return respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Uw bevestiging kon niet worden vastgelegd. Probeer het later opnieuw.",
                "Your confirmation could not be recorded. Please try again later.",
            );
        }
        self.compliance.clear(self.keys.iter().map(String::as_str));
        let mut resp = Response::new(respond::empty());
        *resp.status_mut() = StatusCode::SEE_OTHER;
        let location = safe_return(field("return").unwrap_or("/"));
        if let Ok(v) = HeaderValue::from_str(location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// Only a local path may be returned to (no open redirect).
pub fn safe_return(path: &str) -> &str {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() < 2048
        && !path.starts_with(ATTEST_PATH)
        && path.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        path
    } else {
        "/"
    }
}

/// `application/x-www-form-urlencoded` → pairs.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_return_paths() {
        let f = parse_form(b"token=ab12&return=%2Fmail%3Fx%3D1&confirm=yes&x=a+b&bad=%zz&end=%4");
        assert_eq!(f[0], ("token".into(), "ab12".into()));
        assert_eq!(f[1], ("return".into(), "/mail?x=1".into()));
        assert_eq!(f[3], ("x".into(), "a b".into()));
        assert_eq!(f[4], ("bad".into(), "%zz".into()));
        assert_eq!(f[5], ("end".into(), "%4".into()));
        assert_eq!(safe_return("/mail/inbox"), "/mail/inbox");
        assert_eq!(safe_return("//evil.example/"), "/");
        assert_eq!(safe_return("https://evil.example/"), "/");
        assert_eq!(safe_return("/\\evil"), "/");
    }
}
