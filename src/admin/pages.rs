//! The dashboard's HTML: server-rendered, Dutch labels with English in a
//! second line, no scripts. Accessible: a skip link, `<label for>` on every
//! field, `<caption>` and `<th scope>` on every table, visible focus, and
//! plain links and buttons so everything works from the keyboard. The
//! pages are written with `maud`: every value from the log, the session
//! store or the request is escaped by construction.

use std::time::{Duration, SystemTime};

use super::auth::Officer;
use super::form::{encode, query_string};
use super::review::{event_name, Newest, VerifyStatus, ALL_EVENTS, FILTER_KEYS};
use super::source::Origin;
use crate::audit::report::{Group, GroupBy};
use crate::audit::verify::Outcome;
use crate::audit::{EventKind, Record};
use crate::calendar::Zone;
use crate::compliance::Flag;
use crate::identity::sessions::LiveSession;
use crate::pages::head;
use maud::{html, Markup, PreEscaped, DOCTYPE};

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;line-height:1.45;color:#1b1b1b;background:#fff;font-size:1rem}\
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;background:#fff;padding:.3rem .6rem;z-index:2}\
header{background:#154273;color:#fff;padding:.6rem 1.5rem;display:flex;flex-wrap:wrap;gap:1rem;align-items:center;justify-content:space-between}\
header a{color:#fff}header .brand{font-weight:700;font-size:1.15rem;text-decoration:none}\
header form{display:inline}header button{background:#fff;color:#154273;border:0}\
nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.3rem 1.2rem}\
nav a{color:#fff;padding:.2rem 0}nav a[aria-current=page]{font-weight:700;text-decoration-thickness:3px}\
main{padding:1rem 1.5rem 3rem;max-width:90rem}\
h1{font-size:1.5rem;margin:.6rem 0}h2{font-size:1.2rem;margin-top:2rem}\
.en{display:block;font-size:.85rem;color:#555;font-weight:400}\
table{border-collapse:collapse;width:100%;margin:.8rem 0;font-size:.92rem}\
caption{text-align:left;font-weight:600;padding:.3rem 0}\
th,td{border-bottom:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#f1f4f8}td.num,th.num{text-align:right}tbody tr:nth-child(even){background:#fafafa}\
code{font-size:.88em;word-break:break-all}\
fieldset{border:1px solid #bbb;padding:.6rem 1rem 1rem;margin:.5rem 0 1rem}\
.fields{display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:.6rem 1rem}\
label{display:block;font-weight:600;font-size:.92rem}label .en{display:inline;margin-left:.3rem}legend .en{display:inline}\
input,select{width:100%;padding:.35rem;font:inherit;border:1px solid #767676;border-radius:3px}\
button,.button{font:inherit;padding:.4rem .9rem;border-radius:3px;border:1px solid #154273;background:#154273;color:#fff;cursor:pointer;text-decoration:none;display:inline-block}\
.secondary{background:#fff;color:#154273}\
:focus-visible{outline:3px solid #ffb612;outline-offset:2px}\
.hint{font-size:.85rem;color:#555;line-height:1.3}\
.ok{border-left:6px solid #39870c;background:#eef7e9;padding:.6rem 1rem}\
.bad{border-left:6px solid #a4001d;background:#fbeaec;padding:.6rem 1rem}\
.note{border-left:6px solid #154273;background:#eef2f7;padding:.6rem 1rem}\
.actions{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin:.6rem 0}";

/// The pages of the navigation: path, Dutch, English.
const NAV: [(&str, &str, &str); 6] = [
    ("/attempts", "Pogingen", "Attempts"),
    ("/sessions", "Sessies", "Sessions"),
    ("/report", "Per gebruiker", "Per user"),
    ("/charts", "Grafieken", "Charts"),
    ("/flags", "Gemarkeerd", "Flagged"),
    ("/verify", "Logboekcontrole", "Log verification"),
];

/// A whole page. `current` is the navigation path it belongs to; `body`
/// is HTML built by the pages below (whose values went through [`escape`]).
pub fn layout(title_nl: &str, title_en: &str, officer: Option<&Officer>, current: &str, body: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="nl" {
            (head(&format!("{title_nl} · weerwal"), STYLE))
            body {
                a.skip href="#inhoud" { "Naar de inhoud" }
                header {
                    a.brand href="/attempts" { "weerwal · beoordeling" }
                    @if let Some(o) = officer {
                        nav aria-label="Hoofdmenu" {
                            ul {
                                @for (path, nl, en) in NAV {
                                    li { a href=(path) aria-current=[(path == current).then_some("page")] title=(en) { (nl) } }
                                }
                            }
                        }
                        div {
                            "Ingelogd als " strong { (o.name) } " "
                            form method="post" action="/logout" {
                                (csrf_input(&o.csrf))
                                button type="submit" { "Uitloggen " span lang="en" { "/ Log out" } }
                            }
                        }
                    }
                }
                main #inhoud {
                    h1 { (title_nl) span.en lang="en" { (title_en) } }
                    (PreEscaped(body))
                }
            }
        }
    }
    .into_string()
}

fn csrf_input(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// The login form. `token` is bound to the pre-session cookie.
pub fn login_page(token: &str, name: &str, error: Option<(&str, &str)>) -> String {
    let body = html! {
        @if let Some((nl, en)) = error {
            p.bad role="alert" { (nl) span.en lang="en" { (en) } }
        }
        p {
            "Alleen voor beveiligingsfunctionarissen (rol " code { "officer" } ")."
            span.en lang="en" { "Security officers only (role " code { "officer" } ")." }
        }
        form method="post" action="/login" style="max-width:24rem" {
            input type="hidden" name="token" value=(token);
            p {
                label for="name" { "Gebruikersnaam " span.en lang="en" { "User name" } }
                input #name name="name" autocomplete="username" required autofocus value=(name);
            }
            p {
                label for="password" { "Wachtwoord " span.en lang="en" { "Password" } }
                input #password name="password" type="password" autocomplete="current-password" required;
            }
            p { button type="submit" { "Inloggen " span lang="en" { "/ Log in" } } }
        }
    };
    layout("Inloggen", "Log in", None, "", &body.into_string())
}

/// A short page for refusals (403) and errors.
pub fn message_page(officer: Option<&Officer>, title_nl: &str, title_en: &str, nl: &str, en: &str) -> String {
    let body = html! {
        p.bad { (nl) span.en lang="en" { (en) } }
        p { a href="/attempts" { "Naar het overzicht" } " · " a href="/login" { "Inloggen" } }
    };
    layout(title_nl, title_en, officer, "", &body.into_string())
}

/// `2026-11-23T10:15:02.123Z` as `2026-11-23 11:15:02` (wall-clock time in
/// `policy.timezone`), in a `<time>` that carries the UTC time.
fn time(ts: &str, zone: &Zone) -> Markup {
    html! {
        @if ts.is_empty() { "–" } @else { time datetime=(ts) { (zone.wall_clock_of(ts)) } }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A value that may be missing: `–` for none.
fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("–")
}

/// An event in Dutch, and its name in the log.
pub fn event_label(e: EventKind) -> &'static str {
    match e {
        EventKind::Blocked => "geblokkeerd",
        EventKind::Exempted => "uitgezonderd",
        EventKind::AppDetected => "app herkend",
        EventKind::GatewayDenied => "toegang geweigerd",
        EventKind::SessionStart => "sessie begonnen",
        EventKind::SessionEnd => "sessie beëindigd",
        EventKind::Attested => "bevestigd door gebruiker",
        EventKind::FlagCleared => "markering opgeheven",
        EventKind::PolicyLoaded => "beleid geladen",
        EventKind::AuthFailed => "inloggen mislukt",
        EventKind::Retention => "bewaartermijn",
    }
}

fn value_of<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The current filters as a query string (for links: CSV, other pages).
pub fn filter_query(pairs: &[(String, String)], extra: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = FILTER_KEYS.iter().map(|k| (*k, value_of(pairs, k))).collect();
    all.extend_from_slice(extra);
    query_string(all)
}

/// The filter form of `logs query` (a GET form to `action`): the fields
/// named in `show`, then `extra` (more fields of the page, HTML).
pub(super) fn filter_form(action: &str, pairs: &[(String, String)], show: &[&str], extra: &str, zone: &Zone) -> String {
    let field = |key: &str, nl: &str, en: &str, hint: Option<&str>| {
        html! {
            @if show.contains(&key) {
                div {
                    label for={ "f-" (key) } { (nl) " " span.en lang="en" { (en) } }
                    input id={ "f-" (key) } name=(key) value=(value_of(pairs, key))
                        aria-describedby=[hint.map(|_| format!("hint-{key}"))];
                    @if let Some(h) = hint {
                        span.hint id={ "hint-" (key) } { (h) }
                    }
                }
            }
        }
    };
    let when = format!("RFC 3339, datum (2026-11-23) of leeftijd (7d, 12h); zonder tijdzone: {zone}");
    let chosen = value_of(pairs, "event");
    html! {
        form method="get" action=(action) {
            fieldset {
                legend { "Filters " span lang="en" { "/ Filters" } }
                div.fields {
                    (field("user", "Gebruiker", "User", None))
                    (field("session", "Sessie", "Session", Some("id of de eerste tekens")))
                    (field("app", "App", "App", Some("bijv. AliExpress")))
                    (field("host", "Host of domein", "Host or domain", Some("met subdomeinen")))
                    (field("client", "Adres", "Client address", Some("10.1.2.3 of 10.1.2.0/24")))
                    @if show.contains(&"event") {
                        div {
                            label for="f-event" { "Gebeurtenis " span.en lang="en" { "Event" } }
                            select #f-event name="event" {
                                option value="" selected[chosen.is_empty()] { "alle pogingen (attempts)" }
                                @for e in ALL_EVENTS {
                                    option value=(event_name(e)) selected[chosen == event_name(e)] {
                                        (event_label(e)) " (" (event_name(e)) ")"
                                    }
                                }
                            }
                        }
                    }
                    (field("since", "Vanaf", "Since", Some(&when)))
                    (field("until", "Tot en met", "Until", Some(&when)))
                    (PreEscaped(extra))
                }
                div.actions {
                    button type="submit" { "Filteren " span lang="en" { "/ Apply" } }
                    " "
                    a.button.secondary href=(action) { "Filters wissen " span lang="en" { "/ Clear" } }
                }
            }
        }
    }
    .into_string()
}

fn error_box(message: &str) -> Markup {
    html! {
        p.bad role="alert" { (message) span.en lang="en" { "The filters or the log could not be used." } }
    }
}

/// Which records a page shows: with `[cluster]`, every node's (from the
/// database), or only this node's when the database cannot be read now.
/// Nothing without `[cluster]`.
pub fn origin_note(origin: &Origin) -> Markup {
    html! {
        @match origin {
            Origin::Local => {}
            Origin::AllNodes => p.hint role="status" {
                "Records van alle knooppunten, uit de clusterdatabase."
                span.en lang="en" { "Records of every node, from the cluster database." }
            },
            Origin::Fallback(why) => p.bad role="alert" {
                strong { "De clusterdatabase is niet bereikbaar: alleen de records van dit knooppunt worden getoond." }
                " (" (why) ")"
                span.en lang="en" {
                    "The cluster database cannot be reached: only this node's records are shown (from its local log)."
                }
            },
        }
    }
}

fn session_cell(session: Option<&str>) -> Markup {
    html! {
        @if let Some(s) = session {
            a href={ "/attempts?session=" (encode(s)) } title=(s) { code { (s.chars().take(8).collect::<String>()) } }
        } @else {
            "–"
        }
    }
}

/// A table's caption, Dutch then English.
fn caption(nl: &str, en: &str) -> Markup {
    html! { caption { (nl) " " span lang="en" { "/ " (en) } } }
}

/// Column headers: (Dutch, numeric).
fn headers(columns: &[(&str, bool)]) -> Markup {
    html! {
        @for (name, num) in columns {
            @if *num { th.num scope="col" { (name) } } @else { th scope="col" { (name) } }
        }
    }
}

/// The row a table shows when it has none.
fn empty_row(columns: usize, nl: &str, en: &str) -> Markup {
    html! { tr { td colspan=(columns) { (nl) " " span lang="en" { (en) } } } }
}

/// Recent attempts (or records of the chosen event), newest first.
pub fn attempts_page(
    officer: &Officer,
    pairs: &[(String, String)],
    limit: usize,
    result: &Result<Newest, String>,
    origin: &Origin,
    drift: &str,
    zone: &Zone,
) -> String {
    let nodes = origin.shows_nodes();
    let limit_field = html! {
        div {
            label for="f-limit" { "Aantal rijen " span.en lang="en" { "Rows shown" } }
            input #f-limit name="limit" type="number" min="1" max="5000" value=(limit);
        }
    };
    let csv = format!("/attempts.csv?{}", filter_query(pairs, &[]));
    let time_header = format!("Tijd ({zone})");
    let body = html! {
        (PreEscaped(drift))
        p {
            "De nieuwste pogingen eerst: geblokkeerd, uitgezonderd, app herkend en toegang geweigerd. Gewoon browsen wordt niet vastgelegd."
            span.en lang="en" { "Newest first. Ordinary browsing is never recorded." }
        }
        (PreEscaped(filter_form("/attempts", pairs, &FILTER_KEYS, &limit_field.into_string(), zone)))
        (origin_note(origin))
        p.actions {
            a.button.secondary href=(csv) download { "CSV-export met deze filters " span lang="en" { "/ CSV export" } }
            " "
            span.hint { "alle treffers, kolommen als " code { "weerwal logs query --format csv" } }
        }
        @match result {
            Err(e) => (error_box(e)),
            Ok(n) => {
                p role="status" {
                    (n.records.len()) " van " (n.matched) " treffers getoond."
                    span.en lang="en" { (n.records.len()) " of " (n.matched) " matches shown." }
                }
                (skipped_note(n))
                table {
                    (caption("Pogingen, nieuwste eerst", "Attempts, newest first"))
                    thead { tr {
                        (headers(&[("Nr.", true), (&time_header, false), ("Gebeurtenis", false), ("Gebruiker", false),
                            ("Adres", false), ("Apparaat", false), ("App", false), ("Host", false), ("Methode", false),
                            ("Via", false), ("Sessie", false)]))
                        (node_header(nodes))
                    } }
                    tbody {
                        @for r in &n.records { (attempt_row(r, nodes, zone)) }
                        @if n.records.is_empty() {
                            (empty_row(if nodes { 12 } else { 11 }, "Geen pogingen gevonden.", "No attempts found."))
                        }
                    }
                }
            }
        }
    };
    layout("Pogingen", "Attempts", Some(officer), "/attempts", &body.into_string())
}

fn skipped_note(n: &Newest) -> Markup {
    html! {
        @if let Some(first) = &n.skipped.first {
            p.bad {
                (n.skipped.lines) " regel(s) zijn geen volledige records en zijn overgeslagen (de eerste: "
                code { (first) } "). Zie Logboekcontrole."
                span.en lang="en" { "Some lines are not complete records and were left out; see Log verification." }
            }
        }
    }
}

/// The node column's header, with `[cluster]`.
fn node_header(nodes: bool) -> Markup {
    html! { @if nodes { th scope="col" { "Knooppunt " span.en lang="en" { "Node" } } } }
}

/// The node column's cell, with `[cluster]`.
fn node_cell(r: &Record, nodes: bool) -> Markup {
    html! { @if nodes { td { (opt(&r.node)) } } }
}

fn attempt_row(r: &Record, nodes: bool, zone: &Zone) -> Markup {
    let via = r
        .via
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    html! {
        tr {
            td.num { (r.seq) }
            td { (time(&r.ts, zone)) }
            td { (event_label(r.event)) " " span.hint { (event_name(r.event)) (flag_note(r)) } }
            td { (opt(&r.user)) }
            td { @if let Some(c) = r.client { (c) } @else { "–" } }
            td { (opt(&r.device)) }
            td { (opt(&r.app)) }
            td { (opt(&r.host)) }
            td { (opt(&r.method)) }
            td { (via) }
            td { (session_cell(r.session.as_deref())) }
            (node_cell(r, nodes))
        }
    }
}

/// Whether a blocked attempt flagged its subject for the compliance gate,
/// as the record says (officers see why someone was, or was not, refused
/// webmail).
fn flag_note(r: &Record) -> &'static str {
    match (r.flagged, r.navigation) {
        (Some(true), _) => " · markeert apparaat / flags device",
        (Some(false), Some(false)) => " · ingesloten inhoud, markeert niet / embedded, does not flag",
        (Some(false), _) => " · markeert niet / does not flag",
        (None, _) => "",
    }
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{} u {} min", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

fn attempts_list(attempts: impl IntoIterator<Item = (String, u64)>) -> String {
    let parts: Vec<String> = attempts.into_iter().map(|(app, n)| format!("{app}: {n}")).collect();
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(", ")
    }
}

/// Live sessions (from the session store) and ended ones (`session_end`).
pub fn sessions_page(
    officer: &Officer,
    pairs: &[(String, String)],
    live: &[LiveSession],
    browsing_only: usize,
    ended: &Result<Newest, String>,
    origin: &Origin,
    zone: &Zone,
) -> String {
    let nodes = origin.shows_nodes();
    let started_header = format!("Begonnen ({zone})");
    let ended_header = format!("Beëindigd ({zone})");
    let ended_filters = filter_form("/sessions", pairs, &["user", "session", "client", "since", "until"], "", zone);
    let body = html! {
        h2 #live { "Actieve sessies met pogingen " span.en lang="en" { "Live sessions with attempts" } }
        p {
            (browsing_only) " andere actieve sessie(s) zonder pogingen worden niet getoond: gewoon browsen wordt niet bijgehouden."
            span.en lang="en" { (browsing_only) " other live session(s) without attempts are not shown." }
        }
        table aria-labelledby="live" {
            (caption("Actief", "Live"))
            thead { tr {
                (headers(&[("Sessie", false), ("Gebruiker", false), ("Adres", false), ("Apparaat", false),
                    (&started_header, false), ("Stil sinds", false), ("Pogingen per app", false), ("Hosts", true)]))
            } }
            tbody {
                @for s in live {
                    tr {
                        td { (session_cell(Some(&s.id))) }
                        td { (opt(&s.user)) }
                        td { (s.client) }
                        td { (opt(&s.device)) }
                        td { (time(&rfc3339(s.started), zone)) }
                        td { (duration(s.quiet_for)) }
                        td { (attempts_list(s.attempts.iter().map(|(a, n)| (a.clone(), *n)))) }
                        td.num { (s.distinct_hosts) }
                    }
                }
                @if live.is_empty() { (empty_row(8, "Geen actieve sessies met pogingen.", "None.")) }
            }
        }
        h2 #ended { "Beëindigde sessies " span.en lang="en" { "Ended sessions" } }
        (PreEscaped(ended_filters))
        (origin_note(origin))
        @match ended {
            Err(e) => (error_box(e)),
            Ok(n) => {
                p role="status" { (n.records.len()) " van " (n.matched) " getoond." }
                table aria-labelledby="ended" {
                    (caption("Beëindigd, nieuwste eerst", "Ended, newest first"))
                    thead { tr {
                        (headers(&[("Sessie", false), ("Gebruiker", false), ("Adres", false), ("Apparaat", false),
                            (&started_header, false), (&ended_header, false), ("Duur", false),
                            ("Pogingen per app", false), ("Hosts", true)]))
                        (node_header(nodes))
                    } }
                    tbody {
                        @for r in &n.records { (ended_row(r, nodes, zone)) }
                        @if n.records.is_empty() {
                            (empty_row(if nodes { 10 } else { 9 }, "Geen beëindigde sessies gevonden.", "None found."))
                        }
                    }
                }
            }
        }
    };
    layout("Sessies", "Sessions", Some(officer), "/sessions", &body.into_string())
}

/// One `session_end` record as a row of the ended sessions.
fn ended_row(r: &Record, nodes: bool, zone: &Zone) -> Markup {
    let d = r.detail.as_ref();
    let started = d.and_then(|d| d.get("started")).and_then(|v| v.as_str()).unwrap_or("");
    let secs = d.and_then(|d| d.get("duration_s")).and_then(|v| v.as_u64());
    let attempts = d
        .and_then(|d| d.get("attempts"))
        .and_then(|v| v.as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect::<Vec<_>>())
        .unwrap_or_default();
    let hosts = d.and_then(|d| d.get("distinct_hosts")).and_then(|v| v.as_u64());
    html! {
        tr {
            td { (session_cell(r.session.as_deref())) }
            td { (opt(&r.user)) }
            td { @if let Some(c) = r.client { (c) } @else { "–" } }
            td { (opt(&r.device)) }
            td { (time(started, zone)) }
            td { (time(&r.ts, zone)) }
            td { @if let Some(s) = secs { (duration(Duration::from_secs(s))) } @else { "–" } }
            td { (attempts_list(attempts)) }
            td.num { @if let Some(h) = hosts { (h) } @else { "–" } }
            (node_cell(r, nodes))
        }
    }
}

/// The name of a grouping, Dutch and as the API writes it.
pub fn group_by_name(by: GroupBy) -> (&'static str, &'static str) {
    match by {
        GroupBy::User => ("Gebruiker", "user"),
        GroupBy::Session => ("Sessie", "session"),
        GroupBy::App => ("App", "app"),
        GroupBy::Day => ("Dag", "day"),
        GroupBy::Device => ("Apparaat", "device"),
    }
}

/// `by=` of a query string.
pub fn parse_group_by(s: &str) -> Option<GroupBy> {
    [GroupBy::User, GroupBy::Session, GroupBy::App, GroupBy::Day, GroupBy::Device]
        .into_iter()
        .find(|b| group_by_name(*b).1 == s)
}

/// The report of `logs report`: attempts per user (or session, app, day, device).
pub fn report_page(
    officer: &Officer,
    pairs: &[(String, String)],
    by: GroupBy,
    result: &Result<Vec<Group>, String>,
    origin: &Origin,
    zone: &Zone,
) -> String {
    let by_field = html! {
        div {
            label for="f-by" { "Groeperen op " span.en lang="en" { "Group by" } }
            select #f-by name="by" {
                @for g in [GroupBy::User, GroupBy::Session, GroupBy::App, GroupBy::Day, GroupBy::Device] {
                    option value=(group_by_name(g).1) selected[g == by] { (group_by_name(g).0) " (" (group_by_name(g).1) ")" }
                }
            }
        }
    };
    let filters = filter_form(
        "/report",
        pairs,
        &["user", "session", "app", "host", "client", "since", "until"],
        &by_field.into_string(),
        zone,
    );
    let (heading, key) = group_by_name(by);
    let csv = format!("/report.csv?{}", filter_query(pairs, &[("by", key)]));
    let (first_header, last_header) = (format!("Eerst gezien ({zone})"), format!("Laatst gezien ({zone})"));
    let body = html! {
        p {
            "Pogingen (geblokkeerd, uitgezonderd, toegang geweigerd) per gebruiker, met eerste en laatste keer en het aantal verschillende hosts; dezelfde telling als "
            code { "weerwal logs report" } "."
            span.en lang="en" {
                "Attempts per user with first and last seen and distinct hosts, as " code { "weerwal logs report" } " counts them."
            }
        }
        (PreEscaped(filters))
        (origin_note(origin))
        p.actions { a.button.secondary href=(csv) download { "CSV-export van dit overzicht " span lang="en" { "/ CSV export" } } }
        @match result {
            Err(e) => (error_box(e)),
            Ok(groups) => {
                p role="status" { (groups.iter().map(|g| g.attempts).sum::<u64>()) " poging(en) in " (groups.len()) " groep(en)." }
                table {
                    (caption(&format!("Per {}", heading.to_lowercase()), &format!("By {key}")))
                    thead { tr {
                        (headers(&[(heading, false), ("Pogingen", true), ("Geblokkeerd", true), ("Uitgezonderd", true),
                            ("App herkend", true), ("Toegang geweigerd", true), (&first_header, false),
                            (&last_header, false), ("Hosts", true)]))
                    } }
                    tbody {
                        @for g in groups {
                            tr {
                                th scope="row" {
                                    @match by {
                                        GroupBy::User if g.key != "-" => a href={ "/attempts?user=" (encode(&g.key)) } { (g.key) },
                                        GroupBy::Session if g.key != "-" => (session_cell(Some(&g.key))),
                                        _ => (g.key),
                                    }
                                }
                                td.num { (g.attempts) }
                                td.num { (g.blocked) }
                                td.num { (g.exempted) }
                                td.num { (g.app_detected) }
                                td.num { (g.gateway_denied) }
                                td { (time(&g.first_seen, zone)) }
                                td { (time(&g.last_seen, zone)) }
                                td.num { (g.hosts.len()) }
                            }
                        }
                        @if groups.is_empty() { (empty_row(9, "Geen pogingen gevonden.", "No attempts found.")) }
                    }
                }
            }
        }
    };
    layout("Overzicht per gebruiker", "Summary per user", Some(officer), "/report", &body.into_string())
}

/// A subject key (`user:jdevries`, `client:10.1.2.3`) in words.
pub fn subject_words(key: &str) -> Markup {
    html! {
        @match key.split_once(':') {
            Some(("user", u)) => { "gebruiker " strong { (u) } },
            Some(("client", c)) => { "adres " strong { (c) } },
            _ => (key),
        }
    }
}

/// Flagged subjects with a button to clear each. `None`: compliance is off.
pub fn flags_page(officer: &Officer, flags: Option<&[(String, Flag)]>, notice: Option<&str>, zone: &Zone) -> String {
    let since_header = format!("Sinds ({zone})");
    let body = html! {
        p {
            "Wie een verboden site probeerde te bereiken, krijgt geen toegang tot webmail en iBabs tot die persoon bevestigt de app te hebben verwijderd en de geschiedenis te hebben gewist, of tot u de markering hier opheft. Opheffen wordt vastgelegd met uw naam."
            span.en lang="en" {
                "Flagged subjects are refused webmail and iBabs until they attest or an officer clears the flag here; clearing is recorded with your name."
            }
        }
        @if let Some(n) = notice { p.ok role="status" { (n) } }
        @if let Some(flags) = flags {
            table {
                (caption("Gemarkeerd, oudste eerst", "Flagged, oldest first"))
                thead { tr {
                    (headers(&[("Wie", false), ("App", false), ("Host", false), (&since_header, false),
                        ("Referentie", true), ("Actie", false)]))
                } }
                tbody {
                    @for (key, f) in flags {
                        tr {
                            th scope="row" { (subject_words(key)) " " code.hint { (key) } }
                            td { (f.app) }
                            td { (f.host) }
                            td { (time(&f.since, zone)) }
                            td.num { @if let Some(s) = f.seq { (s) } @else { "–" } }
                            td {
                                form method="post" action="/flags/clear" {
                                    (csrf_input(&officer.csrf))
                                    input type="hidden" name="subject" value=(key);
                                    button type="submit" aria-label={ "Markering van " (key) " opheffen" } {
                                        "Opheffen " span lang="en" { "/ Clear" }
                                    }
                                }
                            }
                        }
                    }
                    @if flags.is_empty() { (empty_row(6, "Niemand is gemarkeerd.", "Nobody is flagged.")) }
                }
            }
        } @else {
            p.note {
                "De compliancepoort staat uit: er is geen " code { "[compliance]" } " in de configuratie."
                span.en lang="en" { "The compliance gate is off (no [compliance] section)." }
            }
        }
    };
    layout("Gemarkeerd", "Flagged", Some(officer), "/flags", &body.into_string())
}

/// The hash chain's state, as `weerwal logs verify` reports it.
pub fn verify_page(officer: &Officer, status: &VerifyStatus, ttl: Duration, zone: &Zone) -> String {
    let body = html! {
        @match &status.result {
            Ok(Outcome::Intact(summary)) => div.ok role="status" {
                p { strong { "In orde:" } " de hashketen is onbeschadigd. " span.en lang="en" { "OK: the hash chain is intact." } }
                pre { (summary) }
            },
            Ok(Outcome::Broken(br)) => div.bad role="alert" {
                p {
                    strong { "Fout:" }
                    " de hashketen is verbroken; het logboek is na het schrijven veranderd of afgekapt. "
                    span.en lang="en" { "FAILED: the hash chain is broken." }
                }
                p { "Eerste verbroken plek " span lang="en" { "/ first broken place" } ": " code { (br.file.display()) } " regel " (br.line) }
                p { (br.message) }
                p { (br.verified) " record(s) daarvoor zijn in orde." }
            },
            Err(e) => div.bad role="alert" {
                p { strong { "Het logboek kon niet worden gelezen." } " " span.en lang="en" { "The log could not be read." } }
                p { (e) }
            },
        }
        p.hint {
            "Gecontroleerd om " (time(&rfc3339(status.checked), zone)) " (" (zone) ") in " (status.took.as_millis())
            " ms; de uitkomst wordt " (ttl.as_secs()) " s bewaard. Dezelfde controle als " code { "weerwal logs verify" } "."
        }
        form method="post" action="/verify" {
            (csrf_input(&officer.csrf))
            button type="submit" { "Nu opnieuw controleren " span lang="en" { "/ Check again now" } }
        }
    };
    layout("Logboekcontrole", "Log verification", Some(officer), "/verify", &body.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn officer() -> Officer {
        Officer { name: "fbakker".into(), csrf: "c0ffee".into() }
    }

    #[test]
    fn everything_from_the_log_is_escaped() {
        let mut r = Record::new(EventKind::Blocked);
        r.seq = 7;
        r.ts = "2026-11-23T10:15:02.123Z\"><script>x</script>".into();
        r.user = Some("<img src=x onerror=alert(1)>".into());
        r.app = Some("Ali\"Express".into());
        r.host = Some("a<b>.com".into());
        r.device = Some("'dev'".into());
        r.session = Some("\"><script>s</script>".into());
        r.method = Some("<GET>".into());
        let pairs = vec![("user".to_string(), "\"><script>f</script>".to_string())];
        let n = Newest { records: vec![r], matched: 1, ..Newest::default() };
        let html = attempts_page(&officer(), &pairs, 200, &Ok(n), &Origin::Local, "", &Zone::default());
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("Ali&quot;Express"));
        let flags = vec![(
            "user:<b>\"".to_string(),
            Flag { app: "<i>".into(), host: "h".into(), since: "2026".into(), since_unix: 0, seq: Some(3) },
        )];
        let html = flags_page(&officer(), Some(&flags), Some("<u>done</u>"), &Zone::default());
        assert!(!html.contains("<b>") && !html.contains("<i>") && !html.contains("<u>"), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"c0ffee\""));
        let html = login_page("t\"", "<n>", Some(("<x>", "<y>")));
        assert!(!html.contains("<n>") && !html.contains("<x>"));
    }

    #[test]
    fn forms_are_labelled_and_tables_have_headers() {
        let html = attempts_page(&officer(), &[], 200, &Ok(Newest::default()), &Origin::Local, "", &Zone::default());
        for key in FILTER_KEYS {
            assert!(html.contains(&format!("<label for=\"f-{key}\"")), "{key}");
            assert!(html.contains(&format!("id=\"f-{key}\"")), "{key}");
        }
        assert!(html.contains("<th scope=\"col\">Host</th>"));
        assert!(html.contains("<caption>"));
        assert!(html.contains("<html lang=\"nl\">"));
        assert!(html.contains("aria-current=\"page\""));
        assert!(html.contains("class=\"skip\" href=\"#inhoud\""));
        assert!(html.contains("action=\"/logout\"") && html.contains("name=\"csrf\""));
        assert_eq!(parse_group_by("day"), Some(GroupBy::Day));
        assert_eq!(parse_group_by("x"), None);
    }
}
