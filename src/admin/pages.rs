//! The dashboard's HTML: server-rendered, Dutch labels with English in a
//! second line, no scripts. Accessible: a skip link, `<label for>` on every
//! field, `<caption>` and `<th scope>` on every table, visible focus, and
//! plain links and buttons so everything works from the keyboard. The
//! frame (layout, login and message pages) is written with `maud`, escaped
//! by construction; the tables below still build HTML text, where every
//! value from the log, the session store or the request goes through
//! [`escape`] (maud's escaper). Kept so for now: the officers' charts
//! (issue 18) are being built on these functions at the same time.

use std::fmt::Write as _;
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
use crate::pages::{escape, head};
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

fn csrf_field(token: &str) -> String {
    csrf_input(token).into_string()
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
fn time(ts: &str, zone: &Zone) -> String {
    if ts.is_empty() {
        return "–".into();
    }
    html! { time datetime=(ts) { (zone.wall_clock_of(ts)) } }.into_string()
}
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map(escape).unwrap_or_else(|| "–".into())
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
/// named in `show`, then `extra` (more fields of the page).
pub(super) fn filter_form(action: &str, pairs: &[(String, String)], show: &[&str], extra: &str, zone: &Zone) -> String {
    let field = |b: &mut String, key: &str, nl: &str, en: &str, hint: Option<&str>| {
        if !show.contains(&key) {
            return;
        }
        let described = hint.map(|_| format!(" aria-describedby=\"hint-{key}\"")).unwrap_or_default();
        let _ = write!(
            b,
            "<div><label for=\"f-{key}\">{nl} <span class=\"en\" lang=\"en\">{en}</span></label><input id=\"f-{key}\" name=\"{key}\" value=\"{}\"{described}>",
            escape(value_of(pairs, key))
        );
        if let Some(h) = hint {
            let _ = write!(b, "<span class=\"hint\" id=\"hint-{key}\">{h}</span>");
        }
        b.push_str("</div>\n");
    };
    let mut b = format!(
        "<form method=\"get\" action=\"{action}\">\n<fieldset>\n<legend>Filters <span lang=\"en\">/ Filters</span></legend>\n<div class=\"fields\">\n"
    );
    field(&mut b, "user", "Gebruiker", "User", None);
    field(&mut b, "session", "Sessie", "Session", Some("id of de eerste tekens"));
    field(&mut b, "app", "App", "App", Some("bijv. AliExpress"));
    field(&mut b, "host", "Host of domein", "Host or domain", Some("met subdomeinen"));
    field(&mut b, "client", "Adres", "Client address", Some("10.1.2.3 of 10.1.2.0/24"));
    if show.contains(&"event") {
        let chosen = value_of(pairs, "event");
        b.push_str("<div><label for=\"f-event\">Gebeurtenis <span class=\"en\" lang=\"en\">Event</span></label><select id=\"f-event\" name=\"event\">");
        let sel = |yes: bool| if yes { " selected" } else { "" };
        let _ = write!(b, "<option value=\"\"{}>alle pogingen (attempts)</option>", sel(chosen.is_empty()));
        for e in ALL_EVENTS {
            let name = event_name(e);
            let _ = write!(b, "<option value=\"{name}\"{}>{} ({name})</option>", sel(chosen == name), event_label(e));
        }
        b.push_str("</select></div>\n");
    }
    let when = format!("RFC 3339, datum (2026-11-23) of leeftijd (7d, 12h); zonder tijdzone: {zone}");
    let when = when.as_str();
    field(&mut b, "since", "Vanaf", "Since", Some(when));
    field(&mut b, "until", "Tot en met", "Until", Some(when));
    b.push_str(extra);
    let _ = write!(
        b,
        "</div>\n<div class=\"actions\"><button type=\"submit\">Filteren <span lang=\"en\">/ Apply</span></button> <a class=\"button secondary\" href=\"{action}\">Filters wissen <span lang=\"en\">/ Clear</span></a></div>\n</fieldset>\n</form>\n"
    );
    b
}

fn error_box(b: &mut String, message: &str) {
    let _ = writeln!(
        b,
        "<p class=\"bad\" role=\"alert\">{}<span class=\"en\" lang=\"en\">The filters or the log could not be used.</span></p>",
        escape(message)
    );
}

/// Which records a page shows: with `[cluster]`, every node's (from the
/// database), or only this node's when the database cannot be read now.
/// Nothing without `[cluster]`.
pub fn origin_note(origin: &Origin) -> String {
    match origin {
        Origin::Local => String::new(),
        Origin::AllNodes => html! {
            p.hint role="status" {
                "Records van alle knooppunten, uit de clusterdatabase."
                span.en lang="en" { "Records of every node, from the cluster database." }
            }
        }
        .into_string(),
        Origin::Fallback(why) => html! {
            p.bad role="alert" {
                strong { "De clusterdatabase is niet bereikbaar: alleen de records van dit knooppunt worden getoond." }
                " (" (why) ")"
                span.en lang="en" {
                    "The cluster database cannot be reached: only this node's records are shown (from its local log)."
                }
            }
        }
        .into_string(),
    }
}

fn session_cell(session: &Option<String>) -> String {
    match session {
        Some(s) => {
            let short: String = s.chars().take(8).collect();
            format!(
                "<a href=\"/attempts?session={}\" title=\"{}\"><code>{}</code></a>",
                encode(s),
                escape(s),
                escape(&short)
            )
        }
        None => "–".into(),
    }
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
    let mut b = String::from(drift);
    b.push_str("<p>De nieuwste pogingen eerst: geblokkeerd, uitgezonderd, app herkend en toegang geweigerd. Gewoon browsen wordt niet vastgelegd.<span class=\"en\" lang=\"en\">Newest first. Ordinary browsing is never recorded.</span></p>\n");
    let limit_field = format!(
        "<div><label for=\"f-limit\">Aantal rijen <span class=\"en\" lang=\"en\">Rows shown</span></label><input id=\"f-limit\" name=\"limit\" type=\"number\" min=\"1\" max=\"5000\" value=\"{limit}\"></div>\n"
    );
    b.push_str(&filter_form("/attempts", pairs, &FILTER_KEYS, &limit_field, zone));
    b.push_str(&origin_note(origin));
    let csv = format!("/attempts.csv?{}", filter_query(pairs, &[]));
    let _ = writeln!(
        b,
        "<p class=\"actions\"><a class=\"button secondary\" href=\"{}\" download>CSV-export met deze filters <span lang=\"en\">/ CSV export</span></a> <span class=\"hint\">alle treffers, kolommen als <code>weerwal logs query --format csv</code></span></p>",
        escape(&csv)
    );
    match result {
        Err(e) => error_box(&mut b, e),
        Ok(n) => {
            let _ = writeln!(
                b,
                "<p role=\"status\">{} van {} treffers getoond.<span class=\"en\" lang=\"en\">{} of {} matches shown.</span></p>",
                n.records.len(),
                n.matched,
                n.records.len(),
                n.matched
            );
            skipped_note(&mut b, n);
            b.push_str(&format!("<table>\n<caption>Pogingen, nieuwste eerst <span lang=\"en\">/ Attempts, newest first</span></caption>\n<thead><tr><th scope=\"col\" class=\"num\">Nr.</th><th scope=\"col\">Tijd ({zone})</th><th scope=\"col\">Gebeurtenis</th><th scope=\"col\">Gebruiker</th><th scope=\"col\">Adres</th><th scope=\"col\">Apparaat</th><th scope=\"col\">App</th><th scope=\"col\">Host</th><th scope=\"col\">Methode</th><th scope=\"col\">Via</th><th scope=\"col\">Sessie</th>{}</tr></thead>\n<tbody>\n", node_header(nodes)));
            for r in &n.records {
                attempt_row(&mut b, r, nodes, zone);
            }
            if n.records.is_empty() {
                let _ = write!(b, "<tr><td colspan=\"{}\">", if nodes { 12 } else { 11 });
                b.push_str("Geen pogingen gevonden. <span lang=\"en\">No attempts found.</span></td></tr>\n");
            }
            b.push_str("</tbody>\n</table>\n");
        }
    }
    layout("Pogingen", "Attempts", Some(officer), "/attempts", &b)
}

fn skipped_note(b: &mut String, n: &Newest) {
    if let Some(first) = &n.skipped.first {
        let _ = writeln!(
            b,
            "<p class=\"bad\">{} regel(s) zijn geen volledige records en zijn overgeslagen (de eerste: <code>{}</code>). Zie Logboekcontrole.<span class=\"en\" lang=\"en\">Some lines are not complete records and were left out; see Log verification.</span></p>",
            n.skipped.lines,
            escape(first)
        );
    }
}

/// The node column's header, with `[cluster]`.
fn node_header(nodes: bool) -> &'static str {
    if nodes {
        "<th scope=\"col\">Knooppunt <span class=\"en\" lang=\"en\">Node</span></th>"
    } else {
        ""
    }
}

/// The node column's cell, with `[cluster]`.
fn node_cell(r: &Record, nodes: bool) -> String {
    if nodes {
        format!("<td>{}</td>", opt(&r.node))
    } else {
        String::new()
    }
}

fn attempt_row(b: &mut String, r: &Record, nodes: bool, zone: &Zone) {
    let via = r
        .via
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(
        b,
        "<tr><td class=\"num\">{}</td><td>{}</td><td>{} <span class=\"hint\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
        r.seq,
        time(&r.ts, zone),
        event_label(r.event),
        escape(&format!("{}{}", event_name(r.event), flag_note(r))),
        opt(&r.user),
        r.client.map(|c| escape(&c.to_string())).unwrap_or_else(|| "–".into()),
        opt(&r.device),
        opt(&r.app),
        opt(&r.host),
        opt(&r.method),
        escape(&via),
        session_cell(&r.session),
        node_cell(r, nodes),
    );
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
    let parts: Vec<String> = attempts.into_iter().map(|(app, n)| format!("{}: {n}", escape(&app))).collect();
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
    let mut b = String::new();
    b.push_str("<h2 id=\"live\">Actieve sessies met pogingen <span class=\"en\" lang=\"en\">Live sessions with attempts</span></h2>\n");
    let _ = writeln!(
        b,
        "<p>{browsing_only} andere actieve sessie(s) zonder pogingen worden niet getoond: gewoon browsen wordt niet bijgehouden.<span class=\"en\" lang=\"en\">{browsing_only} other live session(s) without attempts are not shown.</span></p>"
    );
    b.push_str(&format!("<table aria-labelledby=\"live\">\n<caption>Actief <span lang=\"en\">/ Live</span></caption>\n<thead><tr><th scope=\"col\">Sessie</th><th scope=\"col\">Gebruiker</th><th scope=\"col\">Adres</th><th scope=\"col\">Apparaat</th><th scope=\"col\">Begonnen ({zone})</th><th scope=\"col\">Stil sinds</th><th scope=\"col\">Pogingen per app</th><th scope=\"col\" class=\"num\">Hosts</th></tr></thead>\n<tbody>\n"));
    for s in live {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            session_cell(&Some(s.id.clone())),
            opt(&s.user),
            escape(&s.client.to_string()),
            opt(&s.device),
            time(&rfc3339(s.started), zone),
            escape(&duration(s.quiet_for)),
            attempts_list(s.attempts.iter().map(|(a, n)| (a.clone(), *n))),
            s.distinct_hosts
        );
    }
    if live.is_empty() {
        b.push_str(
            "<tr><td colspan=\"8\">Geen actieve sessies met pogingen. <span lang=\"en\">None.</span></td></tr>\n",
        );
    }
    b.push_str("</tbody>\n</table>\n");
    b.push_str("<h2 id=\"ended\">Beëindigde sessies <span class=\"en\" lang=\"en\">Ended sessions</span></h2>\n");
    b.push_str(&filter_form("/sessions", pairs, &["user", "session", "client", "since", "until"], "", zone));
    b.push_str(&origin_note(origin));
    match ended {
        Err(e) => error_box(&mut b, e),
        Ok(n) => {
            let _ = writeln!(b, "<p role=\"status\">{} van {} getoond.</p>", n.records.len(), n.matched);
            b.push_str(&format!("<table aria-labelledby=\"ended\">\n<caption>Beëindigd, nieuwste eerst <span lang=\"en\">/ Ended, newest first</span></caption>\n<thead><tr><th scope=\"col\">Sessie</th><th scope=\"col\">Gebruiker</th><th scope=\"col\">Adres</th><th scope=\"col\">Apparaat</th><th scope=\"col\">Begonnen ({zone})</th><th scope=\"col\">Beëindigd ({zone})</th><th scope=\"col\">Duur</th><th scope=\"col\">Pogingen per app</th><th scope=\"col\" class=\"num\">Hosts</th>{}</tr></thead>\n<tbody>\n", node_header(nodes)));
            for r in &n.records {
                let d = r.detail.as_ref();
                let started = d.and_then(|d| d.get("started")).and_then(|v| v.as_str()).unwrap_or("");
                let secs = d.and_then(|d| d.get("duration_s")).and_then(|v| v.as_u64());
                let attempts = d
                    .and_then(|d| d.get("attempts"))
                    .and_then(|v| v.as_object())
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect::<Vec<_>>())
                    .unwrap_or_default();
                let hosts = d.and_then(|d| d.get("distinct_hosts")).and_then(|v| v.as_u64());
                let _ = writeln!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>{}</tr>",
                    session_cell(&r.session),
                    opt(&r.user),
                    r.client.map(|c| escape(&c.to_string())).unwrap_or_else(|| "–".into()),
                    opt(&r.device),
                    time(started, zone),
                    time(&r.ts, zone),
                    secs.map(|s| escape(&duration(Duration::from_secs(s)))).unwrap_or_else(|| "–".into()),
                    attempts_list(attempts),
                    hosts.map(|h| h.to_string()).unwrap_or_else(|| "–".into()),
                    node_cell(r, nodes),
                );
            }
            if n.records.is_empty() {
                let _ = write!(b, "<tr><td colspan=\"{}\">", if nodes { 10 } else { 9 });
                b.push_str("Geen beëindigde sessies gevonden. <span lang=\"en\">None found.</span></td></tr>\n");
            }
            b.push_str("</tbody>\n</table>\n");
        }
    }
    layout("Sessies", "Sessions", Some(officer), "/sessions", &b)
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
    let mut b = String::from("<p>Pogingen (geblokkeerd, uitgezonderd, toegang geweigerd) per gebruiker, met eerste en laatste keer en het aantal verschillende hosts; dezelfde telling als <code>weerwal logs report</code>.<span class=\"en\" lang=\"en\">Attempts per user with first and last seen and distinct hosts, as <code>weerwal logs report</code> counts them.</span></p>\n");
    let mut by_field = String::from("<div><label for=\"f-by\">Groeperen op <span class=\"en\" lang=\"en\">Group by</span></label><select id=\"f-by\" name=\"by\">");
    for g in [GroupBy::User, GroupBy::Session, GroupBy::App, GroupBy::Day, GroupBy::Device] {
        let (nl, key) = group_by_name(g);
        let sel = if g == by { " selected" } else { "" };
        let _ = write!(by_field, "<option value=\"{key}\"{sel}>{nl} ({key})</option>");
    }
    by_field.push_str("</select></div>\n");
    b.push_str(&filter_form(
        "/report",
        pairs,
        &["user", "session", "app", "host", "client", "since", "until"],
        &by_field,
        zone,
    ));
    b.push_str(&origin_note(origin));
    let (heading, key) = group_by_name(by);
    let csv = format!("/report.csv?{}", filter_query(pairs, &[("by", key)]));
    let _ = writeln!(
        b,
        "<p class=\"actions\"><a class=\"button secondary\" href=\"{}\" download>CSV-export van dit overzicht <span lang=\"en\">/ CSV export</span></a></p>",
        escape(&csv)
    );
    match result {
        Err(e) => error_box(&mut b, e),
        Ok(groups) => {
            let total: u64 = groups.iter().map(|g| g.attempts).sum();
            let _ = writeln!(b, "<p role=\"status\">{total} poging(en) in {} groep(en).</p>", groups.len());
            let _ = write!(
                b,
                "<table>\n<caption>Per {} <span lang=\"en\">/ By {key}</span></caption>\n<thead><tr><th scope=\"col\">{heading}</th><th scope=\"col\" class=\"num\">Pogingen</th><th scope=\"col\" class=\"num\">Geblokkeerd</th><th scope=\"col\" class=\"num\">Uitgezonderd</th><th scope=\"col\" class=\"num\">App herkend</th><th scope=\"col\" class=\"num\">Toegang geweigerd</th><th scope=\"col\">Eerst gezien ({zone})</th><th scope=\"col\">Laatst gezien ({zone})</th><th scope=\"col\" class=\"num\">Hosts</th></tr></thead>\n<tbody>\n",
                heading.to_lowercase()
            );
            for g in groups {
                let link_key = match by {
                    GroupBy::User if g.key != "-" => {
                        format!("<a href=\"/attempts?user={}\">{}</a>", encode(&g.key), escape(&g.key))
                    }
                    GroupBy::Session if g.key != "-" => session_cell(&Some(g.key.clone())),
                    _ => escape(&g.key),
                };
                let _ = writeln!(
                    b,
                    "<tr><th scope=\"row\">{link_key}</th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                    g.attempts,
                    g.blocked,
                    g.exempted,
                    g.app_detected,
                    g.gateway_denied,
                    time(&g.first_seen, zone),
                    time(&g.last_seen, zone),
                    g.hosts.len()
                );
            }
            if groups.is_empty() {
                b.push_str("<tr><td colspan=\"9\">Geen pogingen gevonden. <span lang=\"en\">No attempts found.</span></td></tr>\n");
            }
            b.push_str("</tbody>\n</table>\n");
        }
    }
    layout("Overzicht per gebruiker", "Summary per user", Some(officer), "/report", &b)
}

/// A subject key (`user:jdevries`, `client:10.1.2.3`) in words.
pub fn subject_words(key: &str) -> String {
    match key.split_once(':') {
        Some(("user", u)) => format!("gebruiker <strong>{}</strong>", escape(u)),
        Some(("client", c)) => format!("adres <strong>{}</strong>", escape(c)),
        _ => escape(key),
    }
}

/// Flagged subjects with a button to clear each. `None`: compliance is off.
pub fn flags_page(officer: &Officer, flags: Option<&[(String, Flag)]>, notice: Option<&str>, zone: &Zone) -> String {
    let mut b = String::from("<p>Wie een verboden site probeerde te bereiken, krijgt geen toegang tot webmail en iBabs tot die persoon bevestigt de app te hebben verwijderd en de geschiedenis te hebben gewist, of tot u de markering hier opheft. Opheffen wordt vastgelegd met uw naam.<span class=\"en\" lang=\"en\">Flagged subjects are refused webmail and iBabs until they attest or an officer clears the flag here; clearing is recorded with your name.</span></p>\n");
    if let Some(n) = notice {
        let _ = writeln!(b, "<p class=\"ok\" role=\"status\">{}</p>", escape(n));
    }
    let Some(flags) = flags else {
        b.push_str("<p class=\"note\">De compliancepoort staat uit: er is geen <code>[compliance]</code> in de configuratie.<span class=\"en\" lang=\"en\">The compliance gate is off (no [compliance] section).</span></p>\n");
        return layout("Gemarkeerd", "Flagged", Some(officer), "/flags", &b);
    };
    b.push_str(&format!("<table>\n<caption>Gemarkeerd, oudste eerst <span lang=\"en\">/ Flagged, oldest first</span></caption>\n<thead><tr><th scope=\"col\">Wie</th><th scope=\"col\">App</th><th scope=\"col\">Host</th><th scope=\"col\">Sinds ({zone})</th><th scope=\"col\" class=\"num\">Referentie</th><th scope=\"col\">Actie</th></tr></thead>\n<tbody>\n"));
    for (key, f) in flags {
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\">{} <code class=\"hint\">{}</code></th><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><form method=\"post\" action=\"/flags/clear\">{}<input type=\"hidden\" name=\"subject\" value=\"{}\"><button type=\"submit\" aria-label=\"Markering van {} opheffen\">Opheffen <span lang=\"en\">/ Clear</span></button></form></td></tr>",
            subject_words(key),
            escape(key),
            escape(&f.app),
            escape(&f.host),
            time(&f.since, zone),
            f.seq.map(|s| s.to_string()).unwrap_or_else(|| "–".into()),
            csrf_field(&officer.csrf),
            escape(key),
            escape(key),
        );
    }
    if flags.is_empty() {
        b.push_str(
            "<tr><td colspan=\"6\">Niemand is gemarkeerd. <span lang=\"en\">Nobody is flagged.</span></td></tr>\n",
        );
    }
    b.push_str("</tbody>\n</table>\n");
    layout("Gemarkeerd", "Flagged", Some(officer), "/flags", &b)
}

/// The hash chain's state, as `weerwal logs verify` reports it.
pub fn verify_page(officer: &Officer, status: &VerifyStatus, ttl: Duration, zone: &Zone) -> String {
    let mut b = String::new();
    match &status.result {
        Ok(Outcome::Intact(summary)) => {
            let _ = writeln!(
                b,
                "<div class=\"ok\" role=\"status\"><p><strong>In orde:</strong> de hashketen is onbeschadigd. <span class=\"en\" lang=\"en\">OK: the hash chain is intact.</span></p><pre>{}</pre></div>",
                escape(&summary.to_string())
            );
        }
        Ok(Outcome::Broken(br)) => {
            let _ = writeln!(
                b,
                "<div class=\"bad\" role=\"alert\"><p><strong>Fout:</strong> de hashketen is verbroken; het logboek is na het schrijven veranderd of afgekapt. <span class=\"en\" lang=\"en\">FAILED: the hash chain is broken.</span></p><p>Eerste verbroken plek <span lang=\"en\">/ first broken place</span>: <code>{}</code> regel {}</p><p>{}</p><p>{} record(s) daarvoor zijn in orde.</p></div>",
                escape(&br.file.display().to_string()),
                br.line,
                escape(&br.message),
                br.verified
            );
        }
        Err(e) => {
            let _ = writeln!(
                b,
                "<div class=\"bad\" role=\"alert\"><p><strong>Het logboek kon niet worden gelezen.</strong> <span class=\"en\" lang=\"en\">The log could not be read.</span></p><p>{}</p></div>",
                escape(e)
            );
        }
    }
    let _ = write!(
        b,
        "<p class=\"hint\">Gecontroleerd om {} ({zone}) in {} ms; de uitkomst wordt {} s bewaard. Dezelfde controle als <code>weerwal logs verify</code>.</p>\n\
<form method=\"post\" action=\"/verify\">{}<button type=\"submit\">Nu opnieuw controleren <span lang=\"en\">/ Check again now</span></button></form>\n",
        time(&rfc3339(status.checked), zone),
        status.took.as_millis(),
        ttl.as_secs(),
        csrf_field(&officer.csrf)
    );
    layout("Logboekcontrole", "Log verification", Some(officer), "/verify", &b)
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
