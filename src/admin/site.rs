//! The HTML side of the dashboard: login and logout, the pages, the CSV
//! downloads and the forms that change something (clear a flag, check the
//! chain again).

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::auth::{self, Login, Officer, SessionState};
use super::review::{self, Newest};
use super::source::{self, Origin, Source};
use super::{clear_flag, html, pages, record_login_failure, see_other, set_cookie, AdminState, Cleared, Req};
use crate::audit::query::Filter;
use crate::audit::report::{report_lines, write_report, GroupBy};
use crate::audit::EventKind;
use crate::plumbing::{BoxError, ProxyBody};

/// Rows a page shows unless asked otherwise, and at most.
pub const DEFAULT_LIMIT: usize = 200;
pub const MAX_LIMIT: usize = 5000;

/// `GET /login`: the form, with a token bound to a pre-session cookie.
pub fn login_form(
    state: &AdminState,
    req: &Req,
    error: Option<(&str, &str)>,
    status: StatusCode,
) -> Response<ProxyBody> {
    if error.is_none() && matches!(state.auth.session(&req.headers), SessionState::Officer(_)) {
        return see_other("/attempts");
    }
    let existing = crate::cookies::get(&req.headers, auth::LOGIN_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let pre = existing.clone().unwrap_or_else(auth::OfficerAuth::new_pre_session);
    let name = if error.is_some() {
        req.form().into_iter().find(|(k, _)| k == "name").map(|(_, v)| v).unwrap_or_default()
    } else {
        String::new()
    };
    let mut resp = html(status, pages::login_page(&state.auth.login_token(&pre), &name, error));
    if existing.is_none() {
        set_cookie(
            &mut resp,
            auth::set_cookie(auth::LOGIN_COOKIE, &pre, Some(Duration::from_secs(3600)), state.secure_cookies),
        );
    }
    resp
}

/// `POST /login`.
pub async fn login(state: &AdminState, req: &Req) -> Response<ProxyBody> {
    let fields = req.form();
    let field = |k: &str| fields.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let pre = crate::cookies::get(&req.headers, auth::LOGIN_COOKIE).unwrap_or_default();
    if !state.auth.login_token_ok(&pre, field("token")) {
        tracing::warn!(client = %req.client, "dashboard login without a valid form token refused");
        return login_form(
            state,
            req,
            Some((
                "Het inlogformulier is verlopen of kwam niet van deze pagina (cookies nodig). Probeer het opnieuw.",
                "The login form expired or did not come from this page (cookies are needed). Please try again.",
            )),
            StatusCode::FORBIDDEN,
        );
    }
    let name = field("name").trim();
    match state.auth.login(req.client, name, field("password")).await {
        Login::Officer { token, officer } => {
            tracing::info!(officer = %officer.name, client = %req.client, "officer logged in to the dashboard");
            let mut resp = see_other("/attempts");
            let secure = state.secure_cookies;
            set_cookie(&mut resp, auth::set_cookie(auth::SESSION_COOKIE, &token, None, secure));
            set_cookie(&mut resp, auth::set_cookie(auth::LOGIN_COOKIE, "", Some(Duration::ZERO), secure));
            resp
        }
        Login::DirectoryDown => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message_page(
                None,
                "Directory onbereikbaar",
                "Directory unreachable",
                "De gebruikersdirectory (Active Directory) is nu niet bereikbaar; uw aanmelding kan niet worden gecontroleerd. Een officer uit het gebruikersbestand kan wel inloggen.",
                "The user directory (Active Directory) cannot be reached, so your login cannot be checked. An officer from the users file can still log in.",
            ),
        ),
        Login::Failed { user, reason } => {
            // A non-officer's right password gets exactly the page of a
            // wrong one; the record names only a user that exists.
            record_login_failure(state, req, user.as_deref().unwrap_or(""), reason).await;
            login_form(
                state,
                req,
                Some(("Onbekende gebruikersnaam of onjuist wachtwoord.", "Unknown user name or wrong password.")),
                StatusCode::FORBIDDEN,
            )
        }
    }
}

/// Every page that needs a logged-in officer.
pub async fn route(state: &Arc<AdminState>, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/") => see_other("/attempts"),
        (&Method::GET, "/attempts") => attempts(state, officer, req).await,
        (&Method::GET, "/attempts.csv") => attempts_csv(state, req).await,
        (&Method::GET, "/sessions") => sessions(state, officer, req).await,
        (&Method::GET, "/report") => report_page(state, officer, req).await,
        (&Method::GET, "/report.csv") => report_csv(state, req).await,
        (&Method::GET, "/charts") => charts(state, officer, req).await,
        (&Method::GET, "/nodes") => super::nodes::page(state, officer).await,
        (&Method::GET, "/flags") => flags(state, officer, None),
        (&Method::POST, "/flags/clear") => clear(state, officer, req).await,
        (&Method::GET, "/verify") => verify(state, officer, false).await,
        (&Method::POST, "/verify") => verify(state, officer, true).await,
        (&Method::POST, "/logout") => logout(state, officer, req),
        _ => html(
            StatusCode::NOT_FOUND,
            pages::message_page(
                Some(officer),
                "Niet gevonden",
                "Not found",
                "Deze pagina bestaat niet.",
                "This page does not exist.",
            ),
        ),
    }
}

fn logout(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    state.auth.end(&req.headers);
    tracing::info!(officer = %officer.name, "officer logged out of the dashboard");
    let mut resp = see_other("/login");
    super::expire_session_cookie(&mut resp, state.secure_cookies);
    resp
}

/// The zone the dashboard shows times in and reads dates in.
fn zone(state: &AdminState) -> &crate::calendar::Zone {
    &state.config.policy.timezone
}

/// The filter of a request's query string; `Err` is for the person.
fn filter_of(state: &AdminState, req: &Req) -> Result<Filter, String> {
    review::filter_args(&req.query).to_filter(SystemTime::now(), zone(state)).map_err(|e| e.replace("--", ""))
}

fn limit_of(req: &Req) -> usize {
    req.query_value("limit").and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// Runs `f` off the async runtime over this node's log, or with
/// `[cluster]` over every node's records in the database; when the
/// database cannot be read, over the local log again, and the [`Origin`]
/// says so (the page shows it).
pub async fn with_source<T: Send + 'static>(
    state: &AdminState,
    f: impl Fn(&Source) -> Result<T, String> + Send + Sync + 'static,
) -> (Result<T, String>, Origin) {
    let f = Arc::new(f);
    let Some(cluster) = &state.cluster else { return (local(state, f).await, Origin::Local) };
    let why = match source::open_cluster(cluster).await {
        Ok(db) => {
            let g = Arc::clone(&f);
            let read = tokio::task::spawn_blocking(move || {
                let r = g(&db);
                (r, db.database_failure())
            })
            .await;
            match read {
                Ok((r, None)) => return (r, Origin::AllNodes),
                Ok((_, Some(why))) => why,
                Err(e) => return (Err(format!("reading the records stopped: {e}")), Origin::AllNodes),
            }
        }
        Err(why) => why,
    };
    tracing::debug!(reason = %why, "dashboard: the cluster database cannot be read; showing this node's log");
    (local(state, f).await, Origin::Fallback(why))
}

async fn local<T: Send + 'static>(
    state: &AdminState,
    f: Arc<impl Fn(&Source) -> Result<T, String> + Send + Sync + 'static>,
) -> Result<T, String> {
    let live = state.config.audit.path.clone();
    tokio::task::spawn_blocking(move || f(&Source::Local(review::log_files(&live)?)))
        .await
        .unwrap_or_else(|e| Err(format!("reading the log stopped: {e}")))
}

/// The newest matching records (attempts unless an event is chosen), and
/// where they came from.
pub async fn newest(
    state: &AdminState,
    filter: Result<Filter, String>,
    limit: usize,
) -> (Result<Newest, String>, Origin) {
    let filter = match filter {
        Ok(f) => f,
        Err(e) => return (Err(e), origin_of(state)),
    };
    with_source(state, move |src| review::newest(src, &filter, true, limit).map_err(|e| e.to_string())).await
}

/// Where records come from when nothing was read (a bad filter).
fn origin_of(state: &AdminState) -> Origin {
    if state.cluster.is_some() {
        Origin::AllNodes
    } else {
        Origin::Local
    }
}

async fn attempts(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    let limit = limit_of(req);
    let filter = filter_of(state, req);
    let bad = filter.is_err();
    let (result, origin) = newest(state, filter, limit).await;
    let status = if bad { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let drift = super::nodes::drift_box(state).await;
    html(status, pages::attempts_page(officer, &req.query, limit, &result, &origin, &drift, zone(state)))
}

/// The ended sessions matching the request's filters (event forced to
/// `session_end`).
pub async fn ended_sessions(state: &AdminState, req: &Req) -> (Result<Newest, String>, Origin) {
    let mut filter = match filter_of(state, req) {
        Ok(f) => f,
        Err(e) => return (Err(e), origin_of(state)),
    };
    filter.event = Some(EventKind::SessionEnd);
    let limit = limit_of(req);
    with_source(state, move |src| review::newest(src, &filter, false, limit).map_err(|e| e.to_string())).await
}

async fn sessions(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    let (live, browsing_only) = state.identity.sessions.live();
    let (ended, origin) = ended_sessions(state, req).await;
    let status = if ended.is_err() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, pages::sessions_page(officer, &req.query, &live, browsing_only, &ended, &origin, zone(state)))
}

/// The `by=` of a request (default: user); `Err` names the choices.
pub fn group_by_of(req: &Req) -> Result<GroupBy, String> {
    match req.query_value("by").map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(GroupBy::User),
        Some(s) => pages::parse_group_by(s)
            .ok_or_else(|| format!("onbekende groepering {s:?}: kies user, session, app, day of device")),
    }
}

/// `logs report` over the configured log (with `[cluster]`: every node's
/// records) with the request's filters.
pub async fn report_groups(
    state: &AdminState,
    req: &Req,
    by: GroupBy,
) -> (Result<Vec<crate::audit::report::Group>, String>, Origin) {
    let filter = match filter_of(state, req) {
        Ok(f) => f,
        Err(e) => return (Err(e), origin_of(state)),
    };
    with_source(state, move |src| {
        report_lines(|visit| src.each(&filter.range, visit), &filter, by).map(|(g, _)| g).map_err(|e| e.to_string())
    })
    .await
}

async fn report_page(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    let by = group_by_of(req);
    let (result, origin) = match by {
        Ok(by) => report_groups(state, req, by).await,
        Err(ref e) => (Err(e.clone()), origin_of(state)),
    };
    let status = if result.is_err() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, pages::report_page(officer, &req.query, by.unwrap_or(GroupBy::User), &result, &origin, zone(state)))
}

/// `GET /charts`: the attempts as SVG charts, each followed by its table.
async fn charts(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    let (result, origin) = match filter_of(state, req) {
        Ok(filter) => with_source(state, move |src| super::charts::gather(src, &filter)).await,
        Err(e) => (Err(e), origin_of(state)),
    };
    let status = if result.is_err() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    html(status, super::charts::charts_page(officer, &req.query, &result, &origin, zone(state)))
}

fn csv_name(what: &str) -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = t.chars().filter(|c| c.is_ascii_digit()).take(14).collect();
    format!("weerwal-{what}-{}-{}.csv", &compact[..8.min(compact.len())], &compact[8.min(compact.len())..])
}

fn csv_response(name: &str, body: ProxyBody) -> Response<ProxyBody> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8; header=present"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

fn bad_request_text(message: &str) -> Response<ProxyBody> {
    super::text(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", format!("{message}\n"))
}

async fn attempts_csv(state: &AdminState, req: &Req) -> Response<ProxyBody> {
    let filter = match filter_of(state, req) {
        Ok(f) => f,
        Err(e) => return bad_request_text(&e),
    };
    // With `[cluster]` every node's records, unless the database cannot be
    // reached now (then this node's log; the page said so). A database
    // that fails half-way ends the download with an error.
    let db = match &state.cluster {
        Some(cluster) => source::open_cluster(cluster).await.ok(),
        None => None,
    };
    let source = match db {
        Some(db) => db,
        None => {
            let live = state.config.audit.path.clone();
            match tokio::task::spawn_blocking(move || review::log_files(&live)).await {
                Ok(Ok(f)) => Source::Local(f),
                Ok(Err(e)) => {
                    return super::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        format!("{e}\n"),
                    )
                }
                Err(e) => {
                    return super::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        format!("{e}\n"),
                    )
                }
            }
        }
    };
    let body = stream_blocking(move |out| {
        review::write_csv(&source, &filter, true, out).map(|_| ()).map_err(|e| e.to_string())
    });
    csv_response(&csv_name("pogingen"), body)
}

async fn report_csv(state: &AdminState, req: &Req) -> Response<ProxyBody> {
    let by = match group_by_of(req) {
        Ok(b) => b,
        Err(e) => return bad_request_text(&e),
    };
    match report_groups(state, req, by).await.0 {
        Ok(groups) => {
            let mut out = Vec::new();
            if let Err(e) = write_report(&groups, by, crate::audit::output::Format::Csv, zone(state), &mut out) {
                return super::text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", format!("{e}\n"));
            }
            csv_response(
                &csv_name(&format!("overzicht-per-{}", pages::group_by_name(by).1)),
                crate::plumbing::respond::full(out),
            )
        }
        Err(e) => bad_request_text(&e),
    }
}

fn flags(state: &AdminState, officer: &Officer, notice: Option<&str>) -> Response<ProxyBody> {
    let list = state.compliance.as_ref().map(|c| c.flagged());
    html(StatusCode::OK, pages::flags_page(officer, list.as_deref(), notice, zone(state)))
}

async fn clear(state: &AdminState, officer: &Officer, req: &Req) -> Response<ProxyBody> {
    let subject = req.form().into_iter().rev().find(|(k, _)| k == "subject").map(|(_, v)| v).unwrap_or_default();
    match clear_flag(state, officer, req.client, subject.trim()).await {
        Cleared::Done { seq } => {
            let notice = format!("Markering van {} opgeheven; vastgelegd als record {seq}.", subject.trim());
            flags(state, officer, Some(&notice))
        }
        Cleared::NotFlagged => {
            let notice = format!("{} is niet (meer) gemarkeerd.", subject.trim());
            flags(state, officer, Some(&notice))
        }
        Cleared::Off => flags(state, officer, None),
        Cleared::NotRecorded(e) => html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message_page(
                Some(officer),
                "Niet opgeheven",
                "Not cleared",
                &format!("Het auditrecord kon niet worden geschreven, dus de markering blijft staan: {e}"),
                "The audit record could not be written, so the flag stays.",
            ),
        ),
    }
}

async fn verify(state: &AdminState, officer: &Officer, force: bool) -> Response<ProxyBody> {
    let status = state.verify.get(force).await;
    html(StatusCode::OK, pages::verify_page(officer, &status, super::VERIFY_TTL, zone(state)))
}

// ---------------------------------------------------------------------------
// Streaming a body written by blocking code (the CSV export of a large log).

type Chunk = Result<Bytes, BoxError>;

struct ChannelBody {
    rx: mpsc::Receiver<Chunk>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|c| c.map(Frame::data)))
    }
}

struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 64 * 1024;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A body that `write` fills from a blocking thread, in 64 KiB chunks with
/// back-pressure: memory stays small whatever the size of the log. A
/// failure half-way ends the body with an error, so the download is seen
/// to have failed rather than looking complete.
fn stream_blocking(write: impl FnOnce(&mut dyn Write) -> Result<(), String> + Send + 'static) -> ProxyBody {
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(ChannelWriter::CHUNK) };
        let result = write(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = result {
            if !e.contains("the client went away") {
                tracing::error!(error = %e, "dashboard: CSV export stopped");
                let _ = tx.blocking_send(Err(e.into()));
            }
        }
    });
    ChannelBody { rx }.boxed()
}
