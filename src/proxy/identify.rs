//! Who sends a request: credentials checked (a wrong attempt recorded as
//! `auth_failed`), the session continued or started, and the result as a
//! fact for the decision.

use std::net::SocketAddr;

use http::{header, Response};

use super::act::{refuse, unexpected};
use super::{Live, ProxyState};
use crate::audit::{EventKind, Record, Via};
use crate::decision::{Action, Facts, Who};
use crate::identity::{canonical_ip, AuthOutcome, Identified};
use crate::plumbing::{respond, ProxyBody};

/// Identifies who sends a proxied request, and continues or starts its
/// session. `None`: credentials are required and were missing or wrong (a
/// wrong attempt is recorded as `auth_failed`); the caller decides again
/// with that fact and answers the challenge.
pub async fn identify(state: &ProxyState, peer: SocketAddr, headers: &http::HeaderMap) -> Option<Identified> {
    let client = canonical_ip(peer.ip());
    let ua = user_agent(headers);
    let user = match &state.identity.auth {
        None => None,
        Some(auth) => match auth.check(client, headers.get(header::PROXY_AUTHORIZATION)).await {
            AuthOutcome::Authenticated(u) => Some(u),
            AuthOutcome::Missing => return None,
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
                return None;
            }
            // Not checked: the directory is down; `challenge` answers 503.
            AuthOutcome::Unavailable => return None,
        },
    };
    let subject = state.identity.subject(client, user.as_deref());
    let touched = state.identity.sessions.touch(client, subject.user.as_deref(), subject.device.as_deref(), ua);
    if let Some(ended) = touched.ended {
        if let Err(e) = state.audit.record(ended).await {
            tracing::error!(error = %e, "could not write session_end record");
        }
    }
    Some(Identified { subject, session: touched.id, role: user.map(|u| u.role) })
}

/// Who, as a fact for the decision.
pub fn who_of(identified: &Option<Identified>) -> Who<'_> {
    match identified {
        Some(w) => Who::Known(&w.subject),
        None => Who::Unauthenticated,
    }
}

/// `407` asking for proxy credentials, with this proxy's realm; `503`
/// saying so while the directory cannot be reached (asking again would
/// only loop: the credentials cannot be checked).
pub fn challenge(state: &ProxyState) -> Response<ProxyBody> {
    if state.identity.auth.as_ref().is_some_and(|a| a.directory_down()) {
        return respond::error(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "De gebruikersdirectory (Active Directory) is nu niet bereikbaar; uw aanmelding kan niet worden gecontroleerd. Probeer het over een paar minuten opnieuw.",
            "The user directory (Active Directory) cannot be reached right now, so your login cannot be checked. Please try again in a few minutes.",
        );
    }
    let realm = state.identity.auth.as_ref().map(|a| a.realm.as_str()).unwrap_or("weerwal");
    respond::auth_required(realm)
}

/// The `User-Agent` as text, if it is text.
pub fn user_agent(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())
}

/// Decides `facts` (with `Who::Unknown`), identifying the person only when
/// the decision gets that far: no password is checked for a request that
/// is refused anyway. `Err` is the answer already due (a refusal, or `407`
/// when credentials are missing or wrong); `Ok` the action for who asked.
pub async fn decide_identified(
    state: &ProxyState,
    live: &Live,
    facts: Facts<'_>,
    peer: SocketAddr,
    headers: &http::HeaderMap,
) -> Result<(Action, Identified), Response<ProxyBody>> {
    match state.decide(live, &facts) {
        Action::Identify => {}
        Action::Refuse(reason) => return Err(refuse(reason)),
        other => return Err(unexpected(&other)),
    }
    let identified = identify(state, peer, headers).await;
    let action = state.decide(live, &Facts { who: who_of(&identified), ..facts });
    match (action, identified) {
        (Action::Refuse(reason), _) => Err(refuse(reason)),
        (Action::Challenge, _) | (_, None) => Err(challenge(state)),
        (action, Some(who)) => Ok((action, who)),
    }
}
