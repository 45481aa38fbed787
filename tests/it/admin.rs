//! Issue 5 (dashboard) and issue 7 (officers clear flags): the officers'
//! dashboard on its own loopback listener, started by the real `serve`
//! code, driven over real sockets: login, redirects, 403 for non-officers,
//! CSRF, a real blocked request through the proxy seen on the pages and in
//! the API and CSV, clearing a flag, chain verification, and `/metrics`
//! parsed by the Prometheus client library's own text-format parser.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{with_dashboard, TestProxy};
use serde_json::Value;
use weerwal::audit::output::Format;
use weerwal::audit::query::{query, Filter};
use weerwal::config::{ComplianceConfig, Config};
use weerwal::identity::Role;

const OFFICER: (&str, &str) = ("fbakker", "officer-wachtwoord-1");
const USER: (&str, &str) = ("jdevries", "gebruiker-wachtwoord-1");
const INSTALL: &str = "run `bash scripts/install-test-deps.sh` first: it installs what the dashboard tests need";

fn dashboard(c: &mut Config) {
    with_dashboard(c, &[(OFFICER.0, OFFICER.1, Role::Officer), (USER.0, USER.1, Role::User)]);
}

fn with_compliance(c: &mut Config) {
    dashboard(c);
    c.compliance = Some(ComplianceConfig {
        protected: vec!["webmail.gemeente.test".into()],
        quarantine: "until-attested".into(),
        state: None,
    });
}

fn admin_addr(proxy: &TestProxy) -> SocketAddr {
    let addrs = &proxy.server.as_ref().unwrap().admin_addrs;
    assert_eq!(addrs.len(), 1, "the dashboard listens: {addrs:?}");
    assert_ne!(addrs[0], proxy.addr);
    addrs[0]
}

/// A browser without a cookie store: cookies are kept here by hand.
struct Dash {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    set_cookies: Vec<String>,
    body: String,
}

impl Got {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&")
}

/// The value of `name="NAME" value="…"` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in:\n{html}")) + marker.len();
    html[at..].split('"').next().unwrap().to_string()
}

impl Dash {
    fn new(addr: SocketAddr) -> Dash {
        Dash::from(addr, "127.0.0.1".parse().unwrap())
    }

    fn from(addr: SocketAddr, local: IpAddr) -> Dash {
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(local)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Dash { base: format!("http://{addr}"), client, cookies: BTreeMap::new() }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> Got {
        let rb = if self.cookies.is_empty() {
            rb
        } else {
            let c: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rb.header("cookie", c.join("; "))
        };
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> =
            headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
        for c in &set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k.trim());
            } else {
                self.cookies.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let body = resp.text().await.unwrap();
        Got { status, headers, set_cookies, body }
    }

    async fn get(&mut self, path: &str) -> Got {
        let rb = self.client.get(format!("{}{path}", self.base));
        self.send(rb).await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Got {
        let rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(fields));
        self.send(rb).await
    }

    async fn post_json(&mut self, path: &str, body: &Value, csrf: Option<&str>) -> Got {
        let mut rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = csrf {
            rb = rb.header("x-csrf-token", t);
        }
        self.send(rb).await
    }

    /// Opens the login page and posts the form with its token.
    async fn login(&mut self, name: &str, password: &str) -> Got {
        let page = self.get("/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let token = hidden(&page.body, "token");
        self.post_form("/login", &[("token", &token), ("name", name), ("password", password)]).await
    }

    /// Logs in as the officer; returns the session's CSRF token.
    async fn login_officer(&mut self) -> String {
        let r = self.login(OFFICER.0, OFFICER.1).await;
        assert_eq!(r.status, 303, "officer login: {}", r.body);
        assert_eq!(r.location(), "/attempts");
        let me = self.get("/api/me").await;
        assert_eq!(me.status, 200, "{}", me.body);
        assert_eq!(me.json()["officer"], OFFICER.0);
        me.json()["csrf"].as_str().unwrap().to_string()
    }
}

/// A client on its own loopback address, through the proxy.
fn proxy_client_from(proxy: &TestProxy, ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn without_login_pages_redirect_to_login_and_the_api_answers_401() {
    let proxy = TestProxy::start_with(dashboard).await;
    let mut d = Dash::new(admin_addr(&proxy));
    for path in ["/", "/attempts", "/sessions", "/report", "/flags", "/verify", "/attempts.csv", "/nope"] {
        let r = d.get(path).await;
        assert_eq!((r.status, r.location()), (303, "/login"), "GET {path}");
    }
    let r = d.post_form("/flags/clear", &[("subject", "client:127.0.0.1")]).await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    for path in ["/api/attempts", "/api/report", "/api/sessions", "/api/flags", "/api/verify", "/api/me"] {
        let r = d.get(path).await;
        assert_eq!(r.status, 401, "GET {path}");
        assert!(r.content_type().starts_with("application/json"), "{path}: {}", r.content_type());
        assert!(r.json()["error"].as_str().unwrap().contains("log in"));
    }
    let r = d.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));

    // The login page: labelled fields, a token bound to a pre-session cookie.
    let r = d.get("/login").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<label for=\"name\">") && r.body.contains("id=\"name\""), "{}", r.body);
    assert!(r.body.contains("<label for=\"password\">") && r.body.contains("type=\"password\""));
    assert!(r.content_type().starts_with("text/html"));
    let csp = r.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // Not `no-referrer`: browsers would then send `Origin: null` on the
    // dashboard's own forms (tests/it/admin_browser.rs caught that).
    assert_eq!(r.headers.get("referrer-policy").unwrap(), "same-origin");
    let pre = r.set_cookies.iter().find(|c| c.starts_with("weerwal_admin_login=")).expect("pre-session cookie");
    assert!(pre.contains("HttpOnly") && pre.contains("SameSite=Strict") && pre.contains("Path=/"), "{pre}");
    assert!(!pre.contains("Secure"), "plain HTTP on loopback: no Secure attribute: {pre}");
    proxy.stop().await;
}

#[tokio::test]
async fn non_officers_get_403_wrong_passwords_are_recorded_and_login_needs_its_token() {
    let proxy = TestProxy::start_with(dashboard).await;
    let admin = admin_addr(&proxy);
    let mut d = Dash::new(admin);

    // A valid user who is not an officer: answered like a wrong password
    // (issue 15; the exact comparison is in hardening2.rs).
    let r = d.login(USER.0, USER.1).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("onjuist wachtwoord"), "{}", r.body);
    assert!(!d.cookies.contains_key("weerwal_admin"), "no session for a non-officer");
    assert_eq!(d.get("/attempts").await.location(), "/login");

    // A wrong password: refused and recorded, the password never.
    let r = d.login(OFFICER.0, "niet-het-wachtwoord").await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("onjuist wachtwoord"), "{}", r.body);
    assert!(!d.cookies.contains_key("weerwal_admin"));

    // Without the form's token, or with another browser's: refused.
    let mut other = Dash::new(admin);
    let token = hidden(&other.get("/login").await.body, "token");
    let r = d.post_form("/login", &[("name", OFFICER.0), ("password", OFFICER.1)]).await;
    assert_eq!(r.status, 403, "login without its token");
    let r = d.post_form("/login", &[("token", &token), ("name", OFFICER.0), ("password", OFFICER.1)]).await;
    assert_eq!(r.status, 403, "a token bound to another pre-session cookie");
    assert!(!d.cookies.contains_key("weerwal_admin"));

    // A login form posted from another origin is refused even with its token.
    let page = d.get("/login").await;
    let token = hidden(&page.body, "token");
    let rb = d
        .client
        .post(format!("{}/login", d.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://127.0.0.1:8000")
        .body(form_body(&[("token", &token), ("name", OFFICER.0), ("password", OFFICER.1)]));
    assert_eq!(d.send(rb).await.status, 403);

    let failed: Vec<_> = proxy.events("auth_failed");
    let via_admin: Vec<_> = failed.iter().filter(|r| serde_json::to_value(r.via).unwrap() == "admin").collect();
    assert_eq!(via_admin.len(), 2, "{failed:?}");
    assert_eq!(via_admin[0].user.as_deref(), Some(USER.0));
    assert!(via_admin[0].reason.as_deref().unwrap().contains("not an officer"));
    assert_eq!(via_admin[1].user.as_deref(), Some(OFFICER.0));
    assert!(via_admin[1].reason.as_deref().unwrap().contains("wrong"));
    let log = std::fs::read_to_string(proxy.audit_path()).unwrap();
    assert!(!log.contains("niet-het-wachtwoord") && !log.contains(USER.1), "passwords never reach the log");

    // The right password still works afterwards.
    let mut ok = Dash::new(admin);
    ok.login_officer().await;
    proxy.stop().await;
}

#[tokio::test]
async fn an_officer_sees_the_attempt_of_a_real_blocked_request_in_pages_api_and_csv() {
    let proxy = TestProxy::start_with(dashboard).await;
    let blocked = proxy.client().get("http://aliexpress.com/").send().await.unwrap();
    assert_eq!(blocked.status(), 403);
    let seq = proxy.events("blocked")[0].seq;

    let mut d = Dash::new(admin_addr(&proxy));
    let r = d.login(OFFICER.0, OFFICER.1).await;
    assert_eq!((r.status, r.location()), (303, "/attempts"), "{}", r.body);
    let session = r.set_cookies.iter().find(|c| c.starts_with("weerwal_admin=")).expect("session cookie");
    assert!(session.contains("; HttpOnly") && session.contains("; SameSite=Strict") && session.contains("; Path=/"));
    assert!(!session.contains("Secure"), "{session}");
    let token = session.split(';').next().unwrap().split_once('=').unwrap().1;
    assert!(token.len() >= 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "a random 256-bit token: {token}");
    assert!(!d.cookies.contains_key("weerwal_admin_login"), "the pre-session cookie is dropped at login");

    let page = d.get("/attempts").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("aliexpress.com"), "{}", page.body);
    assert!(page.body.contains("geblokkeerd") && page.body.contains("AliExpress"));
    assert!(page.body.contains(&format!("<td class=\"num\">{seq}</td>")), "the reference number is shown");
    assert!(page.body.contains("Ingelogd als <strong>fbakker</strong>"));
    // Filters of `logs query`.
    let page = d.get("/attempts?host=aliexpress.com&event=blocked&since=1d").await;
    assert!(page.body.contains("1 van 1 treffers"), "{}", page.body);
    let page = d.get("/attempts?host=tiktok.com").await;
    assert!(page.body.contains("0 van 0 treffers") && !page.body.contains("<td>aliexpress.com</td>"));
    let page = d.get("/attempts?since=gisteren").await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("gisteren"));

    // The API, with the same filters.
    let api = d.get("/api/attempts?app=aliexpress&client=127.0.0.0/8").await.json();
    assert_eq!(api["matched"], 1);
    assert_eq!(api["records"][0]["host"], "aliexpress.com");
    assert_eq!(api["records"][0]["seq"], seq);
    assert_eq!(d.get("/api/attempts?event=blokked").await.status, 400);

    // CSV: exactly what `weerwal logs query --format csv` writes.
    let csv = d.get("/attempts.csv?event=blocked").await;
    assert_eq!(csv.status, 200);
    assert!(csv.content_type().starts_with("text/csv"), "{}", csv.content_type());
    let disposition = csv.headers.get("content-disposition").unwrap().to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"weerwal-pogingen-"), "{disposition}");
    let filter = Filter { event: Some(weerwal::audit::EventKind::Blocked), ..Filter::default() };
    let mut expected = Vec::new();
    query(&[proxy.audit_path()], &filter, Format::Csv, &mut expected).unwrap();
    assert_eq!(csv.body, String::from_utf8(expected).unwrap());
    assert!(csv.body.starts_with("seq,ts,event,session,user,client,"));
    assert_eq!(csv.body.lines().count(), 2);

    // Sessions: the live session with its attempt.
    let page = d.get("/sessions").await;
    assert!(page.body.contains("AliExpress: 1"), "{}", page.body);
    let sessions = d.get("/api/sessions").await.json();
    assert_eq!(sessions["live"][0]["attempts"]["AliExpress"], 1);
    assert_eq!(sessions["live"][0]["client"], "127.0.0.1");

    // The per-user summary (no proxy login here: the user is "-"), and by app.
    let page = d.get("/report").await;
    assert!(page.body.contains("<th scope=\"row\">-</th><td class=\"num\">1</td>"), "{}", page.body);
    let by_app = d.get("/api/report?by=app").await.json();
    assert_eq!(by_app[0]["key"], "AliExpress");
    assert_eq!(by_app[0]["blocked"], 1);
    assert_eq!(by_app[0]["host_names"][0], "aliexpress.com");
    let report_csv = d.get("/report.csv?by=device").await;
    assert!(report_csv.body.starts_with("device,attempts,blocked,"), "{}", report_csv.body);
    assert!(report_csv.body.contains("127.0.0.1,1,1,"));
    assert_eq!(d.get("/api/report?by=planet").await.status, 400);

    // The chain verifies.
    let page = d.get("/verify").await;
    assert!(page.body.contains("In orde"), "{}", page.body);
    let v = d.get("/api/verify").await.json();
    assert_eq!(v["ok"], true);
    assert!(v["records"].as_u64().unwrap() >= 2);

    // Logout ends the session on the server.
    let me = d.get("/api/me").await.json();
    let saved = d.cookies.clone();
    let r = d.post_form("/logout", &[("csrf", me["csrf"].as_str().unwrap())]).await;
    assert_eq!((r.status, r.location()), (303, "/login"));
    assert!(!d.cookies.contains_key("weerwal_admin"));
    d.cookies = saved; // the old cookie, replayed
    assert_eq!(d.get("/attempts").await.location(), "/login");
    proxy.stop().await;
}

#[tokio::test]
async fn posts_without_the_csrf_token_get_403_and_an_officer_clears_a_flag() {
    let proxy = TestProxy::start_with(with_compliance).await;
    let compliance = proxy.server.as_ref().unwrap().compliance.clone().unwrap();
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let r = proxy_client_from(&proxy, ip).get("http://aliexpress.com/").send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    assert!(compliance.flag_of("client:127.0.0.2").is_some());

    let mut d = Dash::new(admin_addr(&proxy));
    let csrf = d.login_officer().await;
    let page = d.get("/flags").await;
    assert!(page.body.contains("adres <strong>127.0.0.2</strong>") && page.body.contains("127.0.0.3"), "{}", page.body);
    assert!(page.body.contains("aria-label=\"Markering van client:127.0.0.2 opheffen\""));
    assert_eq!(hidden(&page.body, "csrf"), csrf);

    // Without the token, with a wrong one, or from another origin: 403.
    let r = d.post_form("/flags/clear", &[("subject", "client:127.0.0.2")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = d.post_form("/flags/clear", &[("subject", "client:127.0.0.2"), ("csrf", "0123")]).await;
    assert_eq!(r.status, 403);
    let r = d.post_json("/api/flags/clear", &serde_json::json!({"subject": "client:127.0.0.2"}), None).await;
    assert_eq!(r.status, 403);
    let rb = d
        .client
        .post(format!("{}/flags/clear", d.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://evil.example")
        .body(form_body(&[("subject", "client:127.0.0.2"), ("csrf", &csrf)]));
    assert_eq!(d.send(rb).await.status, 403);
    let r = d.post_form("/logout", &[]).await;
    assert_eq!(r.status, 403, "logout is a POST with the token too");
    assert!(compliance.flag_of("client:127.0.0.2").is_some(), "nothing was cleared");
    assert!(proxy.events("flag_cleared").is_empty());

    // The form, with the token.
    let r = d.post_form("/flags/clear", &[("subject", "client:127.0.0.2"), ("csrf", &csrf)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("opgeheven"), "{}", r.body);
    assert!(compliance.flag_of("client:127.0.0.2").is_none());
    let cleared = proxy.events("flag_cleared");
    assert_eq!(cleared.len(), 1);
    let rec = &cleared[0];
    assert_eq!(rec.client, Some("127.0.0.2".parse().unwrap()));
    assert_eq!(serde_json::to_value(rec.via).unwrap(), "admin");
    assert_eq!(rec.app.as_deref(), Some("AliExpress"));
    assert!(rec.reason.as_deref().unwrap().contains(OFFICER.0), "{rec:?}");
    let detail = rec.detail.as_ref().unwrap();
    assert_eq!(detail["officer"], OFFICER.0);
    assert_eq!(detail["subject"], "client:127.0.0.2");
    assert!(detail["flag_reference"].as_u64().is_some());
    assert!(!d.get("/flags").await.body.contains("127.0.0.2</strong>"));

    // The API, with the header.
    let flags = d.get("/api/flags").await.json();
    assert_eq!(flags["enabled"], true);
    assert_eq!(flags["flags"].as_array().unwrap().len(), 1);
    assert_eq!(flags["flags"][0]["subject"], "client:127.0.0.3");
    assert_eq!(flags["flags"][0]["app"], "AliExpress");
    let r = d.post_json("/api/flags/clear", &serde_json::json!({"subject": "client:127.0.0.3"}), Some(&csrf)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["cleared"], "client:127.0.0.3");
    let r = d.post_json("/api/flags/clear", &serde_json::json!({"subject": "client:127.0.0.3"}), Some(&csrf)).await;
    assert_eq!(r.status, 404, "already cleared");
    assert!(compliance.flagged().is_empty());
    assert_eq!(proxy.events("flag_cleared").len(), 2);
    assert_eq!(d.get("/api/flags").await.json()["flags"].as_array().unwrap().len(), 0);

    // The state file says so too (a restart keeps it cleared).
    compliance.flush();
    let state = std::fs::read_to_string(proxy.audit_path().parent().unwrap().join("compliance.json")).unwrap();
    assert!(!state.contains("127.0.0.2") && !state.contains("127.0.0.3"), "{state}");
    proxy.stop().await;
}

#[tokio::test]
async fn the_verify_page_names_the_line_of_a_tampered_log() {
    let proxy = TestProxy::start_with(dashboard).await;
    proxy.client().get("http://aliexpress.com/").send().await.unwrap();
    let mut d = Dash::new(admin_addr(&proxy));
    let csrf = d.login_officer().await;
    assert!(d.get("/verify").await.body.contains("In orde"));

    // Edit one field of the first record (the writer keeps appending).
    let path = proxy.audit_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    assert!(first.contains("\"policy_loaded\""));
    std::fs::write(&path, format!("{}\n{rest}", first.replacen("\"apps\":", "\"apps\": ", 1))).unwrap();

    // Cached until asked to check again (a POST, with the token).
    assert!(d.get("/verify").await.body.contains("In orde"));
    assert_eq!(d.post_form("/verify", &[]).await.status, 403);
    let page = d.post_form("/verify", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Fout") && page.body.contains("regel 1"), "{}", page.body);
    assert!(page.body.contains("hash mismatch"), "{}", page.body);
    let v = d.get("/api/verify").await.json();
    assert_eq!((v["ok"].as_bool(), v["line"].as_u64()), (Some(false), Some(1)), "{v}");
    proxy.stop().await;
}

// ---------------------------------------------------------------------------
// /metrics, parsed by prometheus_client's own parser.

/// Runs `cmd` with `input` on stdin, bounded in time; kills it when late.
fn run_bounded(mut cmd: Command, input: &[u8], limit: Duration) -> (Option<std::process::ExitStatus>, String, String) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}; {INSTALL}", cmd.get_program()));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let _ = writer.join();
    (status, out_t.join().unwrap_or_default(), err_t.join().unwrap_or_default())
}

const PARSE: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    print("prometheus_client is not installed: %s" % e, file=sys.stderr)
    sys.exit(3)
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({"name": f.name, "type": f.type, "help": f.documentation,
                     "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(families))
"#;

#[tokio::test]
async fn metrics_parse_as_prometheus_text_with_a_real_parser() {
    let proxy = TestProxy::start_with(with_compliance).await;
    proxy.client().get("http://aliexpress.com/").send().await.unwrap();
    let mut d = Dash::new(admin_addr(&proxy));
    let r = d.get("/metrics").await;
    assert_eq!(r.status, 200, "/metrics needs no login");
    assert_eq!(r.content_type(), "text/plain; version=0.0.4; charset=utf-8");

    let text = r.body.clone();
    let (status, out, err) = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PARSE]);
        run_bounded(cmd, text.as_bytes(), Duration::from_secs(60))
    })
    .await
    .unwrap();
    match status {
        Some(s) if s.success() => {}
        Some(s) if s.code() == Some(3) => panic!("{}; {INSTALL}", err.trim()),
        other => panic!("the Prometheus parser rejected /metrics ({other:?}):\n{err}\n--- metrics ---\n{}", r.body),
    }
    let families: Vec<Value> = serde_json::from_str(out.trim()).unwrap();
    let family = |name: &str| {
        families.iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no family {name} in {families:?}"))
    };
    assert_eq!(family("weerwal_requests")["type"], "counter");
    let blocked = family("weerwal_blocked");
    assert_eq!(blocked["type"], "counter");
    let ali = blocked["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == "weerwal_blocked_total" && s[1]["app"] == "AliExpress")
        .unwrap_or_else(|| panic!("no blocked sample for AliExpress: {blocked}"));
    assert!(ali[2].as_f64().unwrap() >= 1.0);
    assert_eq!(family("weerwal_live_sessions")["type"], "gauge");
    assert!(family("weerwal_live_sessions")["samples"][0][2].as_f64().unwrap() >= 1.0);
    assert!(family("weerwal_flagged_subjects")["samples"][0][2].as_f64().unwrap() >= 1.0);
    let hist = family("weerwal_audit_write_seconds");
    assert_eq!(hist["type"], "histogram");
    let samples = hist["samples"].as_array().unwrap();
    assert!(samples.iter().any(|s| s[0] == "weerwal_audit_write_seconds_bucket" && s[1]["le"] == "+Inf"));
    let count = samples.iter().find(|s| s[0] == "weerwal_audit_write_seconds_count").unwrap();
    assert!(count[2].as_f64().unwrap() >= 1.0);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------
// Where the dashboard runs.

#[tokio::test]
async fn the_dashboard_never_takes_the_proxy_port_and_runs_by_default_only_for_officers() {
    let err = Config::parse(
        Path::new("w.toml"),
        "[proxy]\nlisten = \"127.0.0.1:3128\"\n\n[admin]\nlisten = \"127.0.0.1:3128\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("w.toml:5: admin.listen:"), "{err}");
    assert!(err.contains("own port"), "{err}");
    let err = Config::parse(
        Path::new("w.toml"),
        "[proxy]\nlisten = \"0.0.0.0:3128\"\n[admin]\nlisten = \"127.0.0.1:3128\"\n",
    );
    assert!(err.is_err(), "a wildcard proxy address covers loopback too");
    let c = Config::parse(Path::new("w.toml"), "[admin]\nlisten = \"127.0.0.1:9191\"\n").unwrap();
    assert_eq!(c.admin.unwrap().listen, "127.0.0.1:9191".parse().unwrap());
    let c = Config::parse(Path::new("w.toml"), "[admin]\n").unwrap();
    assert_eq!(c.admin.unwrap().listen, "127.0.0.1:9090".parse().unwrap());

    // No [admin] and no officer: no dashboard listener at all.
    let proxy = TestProxy::start_with(|c| {
        with_dashboard(c, &[(USER.0, USER.1, Role::User)]);
        c.admin = None;
    })
    .await;
    assert!(proxy.server.as_ref().unwrap().admin_addrs.is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn the_attempts_page_says_whether_an_attempt_flagged_its_device() {
    let proxy = TestProxy::start_with(with_compliance).await;
    let client = proxy.client();
    let opened = client.get("http://www.tiktok.com/").header("sec-fetch-dest", "document").send().await.unwrap();
    assert_eq!(opened.status(), 403);
    let pixel =
        client.get("http://analytics.tiktok.com/pixel.js").header("sec-fetch-dest", "script").send().await.unwrap();
    assert_eq!(pixel.status(), 403);
    let mut d = Dash::new(admin_addr(&proxy));
    d.login_officer().await;
    let page = d.get("/attempts").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("markeert apparaat / flags device"), "{}", page.body);
    assert!(page.body.contains("ingesloten inhoud, markeert niet / embedded, does not flag"), "{}", page.body);
    proxy.stop().await;
}
