//! Writing the audit record a blocked or exempted attempt requires, before
//! the answer is sent: the block page's reference number is the record's
//! sequence number, so the record must exist first.

use http::{Method, Response, StatusCode};

use super::ProxyState;
use crate::audit::{EventKind, Record, Via};
use crate::compliance::subject_key;
use crate::decision::{flags_subject, Fetch};
use crate::pages::{self, BlockInfo};
use crate::plumbing::respond::{error, html};
use crate::plumbing::ProxyBody;
use crate::policy::{Match, Subject};

/// What a blocked or exempted attempt was, for its audit record.
pub struct Attempt<'a> {
    pub subject: &'a Subject,
    pub session: &'a str,
    pub matched: &'a Match,
    pub host: String,
    pub port: u16,
    pub method: Method,
    pub path: Option<String>,
    pub user_agent: Option<String>,
    /// Navigation or embedded content, from the request's `Sec-Fetch-*`.
    pub fetch: Fetch,
}

impl<'a> Attempt<'a> {
    /// An attempt by `who`, matched by `matched`; the caller fills in where to.
    pub fn of(who: &'a crate::identity::Identified, matched: &'a Match) -> Attempt<'a> {
        Attempt {
            subject: &who.subject,
            session: &who.session,
            matched,
            host: String::new(),
            port: 0,
            method: Method::GET,
            path: None,
            user_agent: None,
            fetch: Fetch::Unknown,
        }
    }

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
        r.path.clone_from(&self.path);
        r.via = Some(Via::Proxy);
        r.user_agent = self.user_agent.as_deref().map(|ua| ua.chars().take(512).collect());
        r.navigation = self.fetch.navigation();
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
    // The rule decides whether this attempt flags; the record says so.
    let flags = state.compliance.is_some().then(|| flags_subject(attempt.matched, attempt.fetch));
    let mut record = attempt.record(EventKind::Blocked);
    record.flagged = flags;
    let written = state.audit.record(record).await;
    let seq = match written {
        Ok(seq) => Some(seq),
        Err(e) => {
            tracing::error!(error = %e, host = %attempt.host, "could not write audit record; blocking anyway");
            None
        }
    };
    if let Some(ua) = attempt.user_agent.as_deref() {
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
    if let (Some(compliance), Some(true)) = (&state.compliance, flags) {
        // The municipal rule: a device used to reach a banned site may not
        // reach webmail and iBabs until the person has remediated. The
        // user (when known) and the device's address are both flagged, so
        // the gateway refuses the device also when no proxy session names
        // its user any more.
        let subject = attempt.subject;
        compliance.flag(&subject_key(subject), &app.name, &attempt.host, seq);
        if subject.user.is_some() {
            compliance.flag(&format!("client:{}", subject.client), &app.name, &attempt.host, seq);
        }
    }
    let since = app.since.to_string();
    html(
        StatusCode::FORBIDDEN,
        pages::block_page(&BlockInfo {
            app: &app.name,
            host: &attempt.host,
            advice: &app.advice,
            reference: &app.reference,
            since: &since,
            incident: seq,
            flagged: flags,
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
            tracing::error!(error = %e, host = %attempt.host, "could not write exempted record; the attempt is refused");
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
        &attempt.host,
    );
    if let Some(start) = start {
        if let Err(e) = state.audit.record(start).await {
            tracing::error!(error = %e, "could not write session_start record");
        }
    }
}
