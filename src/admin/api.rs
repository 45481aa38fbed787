//! The dashboard's JSON API under `/api/`, with the filters of `weerwal
//! logs query` as query parameters. It needs the same officer session as
//! the pages (the `weerwal_admin` cookie from `POST /login`); a POST also
//! needs the session's CSRF token in `X-CSRF-Token` (`GET /api/me`).
//!
//! - `GET /api/me` — the officer and the CSRF token
//! - `GET /api/attempts?user=&session=&app=&host=&client=&event=&since=&until=&limit=`
//! - `GET /api/report?by=user|session|app|day|device&…filters`
//! - `GET /api/sessions?…filters` — live sessions with attempts, and ended ones
//! - `GET /api/flags` — flagged subjects
//! - `POST /api/flags/clear` with `{"subject": "client:10.1.2.3"}`
//! - `GET /api/verify` — the hash chain's state (`?refresh=1` checks now)

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::auth::{Officer, SESSION_IDLE, SESSION_MAX};
use super::review::VerifyStatus;
use super::site::{ended_sessions, group_by_of, newest, report_groups};
use super::{clear_flag, text, AdminState, Cleared, Req};
use crate::audit::output::Format;
use crate::audit::report::write_report;
use crate::audit::verify::{Outcome, Start};
use crate::plumbing::ProxyBody;

/// A JSON response.
pub fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    text(status, "application/json", body)
}

/// `{"error": message}` with a status.
pub fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "error": message }))
}

pub async fn route(state: &Arc<AdminState>, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/api/me") => json_response(
            StatusCode::OK,
            &json!({
                "officer": officer.name,
                "csrf": officer.csrf,
                "session_idle_s": SESSION_IDLE.as_secs(),
                "session_max_s": SESSION_MAX.as_secs(),
            }),
        ),
        (&Method::GET, "/api/attempts") => attempts(state, req).await,
        (&Method::GET, "/api/report") => report(state, req).await,
        (&Method::GET, "/api/sessions") => sessions(state, req).await,
        (&Method::GET, "/api/flags") => flags(state),
        (&Method::POST, "/api/flags/clear") => clear(state, officer, req).await,
        (&Method::GET, "/api/verify") => {
            let force = matches!(req.query_value("refresh"), Some("1" | "true" | "yes"));
            json_response(StatusCode::OK, &verify_json(&*state.verify.get(force).await))
        }
        (
            _,
            "/api/me" | "/api/attempts" | "/api/report" | "/api/sessions" | "/api/flags" | "/api/flags/clear"
            | "/api/verify",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "no such API endpoint"),
    }
}

fn limit(req: &Req) -> usize {
    req.query_value("limit")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(super::site::DEFAULT_LIMIT)
        .clamp(1, super::site::MAX_LIMIT)
}

async fn attempts(state: &AdminState, req: &Req) -> Response<ProxyBody> {
    let filter =
        super::review::filter_args(&req.query).to_filter(std::time::SystemTime::now(), &state.config.policy.timezone);
    let filter = match filter {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.replace("--", "")),
    };
    let (result, origin) = newest(state, Ok(filter), limit(req)).await;
    match result {
        Ok(n) => json_response(
            StatusCode::OK,
            &json!({
                "matched": n.matched,
                "shown": n.records.len(),
                "skipped_lines": n.skipped.lines,
                "source": source_json(&origin),
                "records": n.records,
            }),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn report(state: &AdminState, req: &Req) -> Response<ProxyBody> {
    let by = match group_by_of(req) {
        Ok(b) => b,
        Err(_) => return error(StatusCode::BAD_REQUEST, "by must be user, session, app, day or device"),
    };
    match report_groups(state, req, by).await.0 {
        Ok(groups) => {
            // Exactly `weerwal logs report --format json`.
            let mut out = Vec::new();
            match write_report(&groups, by, Format::Json, &state.config.policy.timezone, &mut out) {
                Ok(()) => text(StatusCode::OK, "application/json", out),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Err(e) => error(StatusCode::BAD_REQUEST, &e.replace("--", "")),
    }
}

async fn sessions(state: &AdminState, req: &Req) -> Response<ProxyBody> {
    let (live, browsing_only) = state.identity.sessions.live();
    let (ended, origin) = ended_sessions(state, req).await;
    let ended = match ended {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.replace("--", "")),
    };
    let live: Vec<Value> = live
        .iter()
        .map(|s| {
            json!({
                "session": s.id,
                "user": s.user,
                "client": s.client.to_string(),
                "device": s.device,
                "started": humantime::format_rfc3339_millis(s.started).to_string(),
                "quiet_s": s.quiet_for.as_secs(),
                "attempts": s.attempts,
                "distinct_hosts": s.distinct_hosts,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "live": live,
            // Live sessions that only browsed: counted, never described.
            "live_without_attempts": browsing_only,
            "ended_matched": ended.matched,
            "source": source_json(&origin),
            "ended": ended.records,
        }),
    )
}

fn flags(state: &AdminState) -> Response<ProxyBody> {
    let Some(c) = &state.compliance else {
        return json_response(StatusCode::OK, &json!({ "enabled": false, "flags": [] }));
    };
    let flags: Vec<Value> = c
        .flagged()
        .into_iter()
        .map(|(subject, f)| {
            json!({ "subject": subject, "app": f.app, "host": f.host, "since": f.since, "reference": f.seq })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "enabled": true, "flags": flags }))
}

async fn clear(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    let subject = match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) => match v.get("subject").and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return error(StatusCode::BAD_REQUEST, "send {\"subject\": \"user:NAME\" or \"client:ADDRESS\"}"),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("the body is not JSON: {e}")),
    };
    match clear_flag(state, officer, req.client, &subject).await {
        Cleared::Done { seq } => {
            json_response(StatusCode::OK, &json!({ "cleared": subject, "record": seq, "officer": officer.name }))
        }
        Cleared::NotFlagged => error(StatusCode::NOT_FOUND, &format!("{subject} is not flagged")),
        Cleared::Off => error(StatusCode::CONFLICT, "the compliance gate is off (no [compliance] section)"),
        Cleared::NotRecorded(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the flag_cleared record could not be written; flag kept: {e}"),
        ),
    }
}

/// Where records came from: `local` (no `[cluster]`), `all_nodes`, or
/// `local_fallback` with the reason the database could not be read.
fn source_json(origin: &super::source::Origin) -> Value {
    use super::source::Origin;
    match origin {
        Origin::Local => json!({ "records_of": "local" }),
        Origin::AllNodes => json!({ "records_of": "all_nodes" }),
        Origin::Fallback(why) => json!({ "records_of": "local_fallback", "reason": why }),
    }
}

/// The chain's state as JSON.
pub fn verify_json(status: &VerifyStatus) -> Value {
    let checked = humantime::format_rfc3339_millis(status.checked).to_string();
    match &status.result {
        Ok(Outcome::Intact(s)) => json!({
            "ok": true,
            "checked": checked,
            "records": s.records,
            "files": s.files,
            "first_seq": s.first_seq,
            "last_seq": s.last_seq,
            "first_ts": s.first_ts,
            "last_ts": s.last_ts,
            "start": match &s.start {
                Start::Empty => "empty",
                Start::Genesis => "genesis",
                Start::Checkpoint { .. } => "retention_checkpoint",
                Start::Unanchored { .. } => "unanchored",
            },
            "summary": s.to_string(),
        }),
        Ok(Outcome::Broken(b)) => json!({
            "ok": false,
            "checked": checked,
            "file": b.file.display().to_string(),
            "line": b.line,
            "message": b.message,
            "verified": b.verified,
        }),
        Err(e) => json!({ "ok": false, "checked": checked, "error": e }),
    }
}
