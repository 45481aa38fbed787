//! Carrying out the actions requests and tunnels share: the page for a
//! refusal, the remediation flow, and failing closed on an action a stage
//! cannot produce.

use http::{header, HeaderValue, Response, StatusCode};

use super::ProxyState;
use crate::audit::Via;
use crate::compliance::remediate::Remediation;
use crate::compliance::{subject_key, Flag};
use crate::decision::{Action, Reason};
use crate::identity::Identified;
use crate::plumbing::{respond, ProxyBody};

/// The page for a refusal, from its reason. Refusals before a decision on
/// the policy end a keep-alive connection whose client is not served.
pub fn refuse(reason: Reason) -> Response<ProxyBody> {
    let (nl, en) = reason.texts();
    let mut resp = respond::error(reason.status(), &nl, &en);
    if reason == Reason::ClientNotAllowed {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The remediation flow for a flagged subject on a protected host, as
/// [`Action::Remediate`] named them.
pub fn remediation<'a>(
    state: &'a ProxyState,
    who: &'a Identified,
    host: &'a str,
    key: String,
    flag: Flag,
) -> Option<Remediation<'a>> {
    let compliance = state.compliance.as_deref()?;
    Some(Remediation {
        compliance,
        audit: &state.audit,
        subject: &who.subject,
        session: Some(&who.session),
        // Attesting lifts the flags of the person who attests: their user
        // and their device's address, never anyone else's.
        keys: [Some(key.clone()), Some(subject_key(&who.subject)), Some(format!("client:{}", who.subject.client))]
            .into_iter()
            .flatten()
            .collect(),
        flagged: (key, flag),
        host,
        via: Via::Proxy,
    })
}

/// An action a stage cannot produce: refused (fail closed) and logged.
pub fn unexpected(action: &Action) -> Response<ProxyBody> {
    tracing::error!(action = action.label(), "unexpected decision for this stage; refused");
    respond::error(StatusCode::FORBIDDEN, "Geen toegang.", "No access.")
}
