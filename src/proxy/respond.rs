//! Building our own responses (block page, error pages) and writing the
//! audit record that a block or exemption requires before answering.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::{ProxyBody, ProxyState};
use crate::audit::{EventKind, Record, Via};
use crate::compliance::subject_key;
use crate::pages::{self, BlockInfo};
use crate::policy::{Match, Subject};

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

/// What a blocked or exempted attempt was, for its audit record.
pub struct Attempt<'a> {
    pub subject: &'a Subject,
    pub session: &'a str,
    pub matched: &'a Match,
    pub host: &'a str,
    pub port: u16,
    pub method: &'a Method,
    pub path: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl Attempt<'_> {
    /// The audit record of this attempt.
    pub fn record(&self, event: EventKind) -> Record {
        let mut r = Record::new(event);
        r.session = Some(self.session.to_string());
        r.user.clone_from(&self.subject.user);
        r.client = Some(self.subject.client);
        r.device.clone_from(&self.subject.device);
        r.app = Some(self.matched.app.name.clone());
        r.rule = Some(self.matched.rule.as_str().to_string());
        r.host = Some(self.host.to_string());
        r.port = Some(self.port);
        r.method = Some(self.method.as_str().to_string());
        r.path = self.path.map(str::to_string);
        r.via = Some(Via::Proxy);
        r.user_agent = self.user_agent.map(|ua| ua.chars().take(512).collect());
        r
    }
}

/// Records a blocked attempt (and, when the request carries the app's own
/// signature, an `app_detected` record) and builds the block page. The page
/// is only returned once the record is written, so the reference number on
/// it is real.
pub async fn block(state: &ProxyState, attempt: &Attempt<'_>) -> Response<ProxyBody> {
    start_session_record(state, attempt).await;
    let metrics = crate::metrics::metrics();
    metrics.blocked(&attempt.matched.app.name);
    let written = state.audit.record(attempt.record(EventKind::Blocked)).await;
    let seq = match written {
        Ok(seq) => Some(seq),
        Err(e) => {
            tracing::error!(error = %e, host = attempt.host, "could not write audit record; blocking anyway");
            None
        }
    };
    if let Some(ua) = attempt.user_agent {
        if let Some(detected) = state.policy.load().detect_app(ua) {
            let mut r = attempt.record(EventKind::AppDetected);
            r.app = Some(detected.app.name.clone());
            r.rule = Some(detected.rule.as_str().to_string());
            if let Err(e) = state.audit.record(r).await {
                tracing::error!(error = %e, "could not write app_detected record");
            }
        }
    }
    let app = &attempt.matched.app;
    if let Some(compliance) = &state.compliance {
        // The municipal rule: a device used to reach a banned site may not
        // reach webmail and iBabs until the person has remediated.
        compliance.flag(&subject_key(attempt.subject), &app.name, attempt.host, seq);
    }
    let since = app.since.to_string();
    html(
        StatusCode::FORBIDDEN,
        pages::block_page(&BlockInfo {
            app: &app.name,
            host: attempt.host,
            advice: &app.advice,
            reference: &app.reference,
            since: &since,
            incident: seq,
        }),
    )
}

/// Records an exempted attempt before it is let through. False when the
/// record could not be written (a full audit volume): then the attempt is
/// refused ([`unrecorded`]), never let through unrecorded.
pub async fn exempted(state: &ProxyState, attempt: &Attempt<'_>, reason: &str) -> bool {
    start_session_record(state, attempt).await;
    crate::metrics::metrics().exempted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = attempt.record(EventKind::Exempted);
    r.reason = Some(reason.to_string());
    match state.audit.record(r).await {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, host = attempt.host, "could not write exempted record; the attempt is refused");
            false
        }
    }
}

/// `503` for an exempted attempt whose record could not be written.
pub fn unrecorded() -> Response<ProxyBody> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Deze poging kan nu niet worden vastgelegd (de opslag van het logboek is vol) en is daarom geweigerd. Meld dit bij de servicedesk.",
        "This attempt cannot be recorded right now (the audit log's storage is full), so it is refused. Please tell the service desk.",
    )
}

/// Counts the attempt in its session and, when it is the session's first,
/// writes `session_start` before the attempt's own record.
async fn start_session_record(state: &ProxyState, attempt: &Attempt<'_>) {
    let start = state.identity.sessions.note_attempt(
        attempt.subject.client,
        attempt.subject.user.as_deref(),
        &attempt.matched.app.name,
        attempt.host,
    );
    if let Some(start) = start {
        if let Err(e) = state.audit.record(start).await {
            tracing::error!(error = %e, "could not write session_start record");
        }
    }
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
