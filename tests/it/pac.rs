//! Issue 6: the PAC file, as browsers get it from the real proxy.
//!
//! - `/proxy.pac` and `/wpad.dat` over a loopback socket: headers, ETag, 304,
//!   and the same text `weerwal pac` prints;
//! - the served PAC evaluated in a real PAC engine (pac-resolver on QuickJS,
//!   `tests/pac_engine/`) over tables of hosts, with a check that no host
//!   makes the PAC do a DNS lookup, and after a policy reload;
//! - headless Chromium configured with `--proxy-pac-url` pointing at the
//!   proxy: a banned site shows the block page, an allowed loopback page
//!   comes through the proxy (addressed as 0.0.0.0: Chromium never consults a
//!   PAC file for 127.0.0.0/8; see the test).
//!
//! The engine and Chromium are installed by `scripts/install-test-deps.sh`;
//! when they are missing these tests fail and say so (they never skip).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{raw_exchange, test_config, Origin, TestProxy};
use serde::Deserialize;
use weerwal::config::{ComplianceConfig, Config, PacRoute};
use weerwal::policy::load_configured as load_policy;
use weerwal::serve::Server;

const INSTALL: &str = "run `bash scripts/install-test-deps.sh` (as root) first: it installs what the PAC tests need";
const PROXY_LINE: &str = "PROXY proxy.gemeente.test:3128";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// Fetching the PAC file from the running proxy.

struct Fetched {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// `GET path` on the proxy listener itself (origin-form), over loopback.
async fn fetch(proxy: &TestProxy, path: &str, extra: &str) -> Fetched {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n", proxy.addr);
    let raw = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(10)).await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete response: {raw:?}"));
    let mut lines = head.lines();
    let status = crate::common::status_of(lines.next().unwrap_or(""));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Fetched { status, headers, body: body.to_string() }
}

async fn served_pac(proxy: &TestProxy) -> String {
    let f = fetch(proxy, "/proxy.pac", "").await;
    assert_eq!(f.status, 200, "GET /proxy.pac: {}", f.body);
    f.body
}

// ---------------------------------------------------------------------------
// Processes: bounded in time, killed with their whole process group.

struct Ran {
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

/// Runs `cmd` in its own process group with `input` on stdin; kills the
/// group when it is not done within `limit` (and after it is done, so no
/// helper process of a browser outlives the test).
fn run_bounded(mut cmd: Command, input: &[u8], limit: Duration) -> Ran {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}; {INSTALL}", cmd.get_program()));
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                kill_group(pid);
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    kill_group(pid);
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    Ran { status, stdout, stderr, timed_out }
}

/// SIGKILL to the process group `pgid` (a group this test started).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------
// The real PAC engine.

fn engine_dir() -> PathBuf {
    repo().join("tests/pac_engine")
}

/// Fails (never skips) when the engine is not installed.
fn require_engine() {
    let node = Command::new("node").arg("--version").output();
    match node {
        Ok(o) if o.status.success() => {}
        _ => panic!("node (Node.js 20) is not installed; {INSTALL}"),
    }
    for pkg in ["pac-resolver", "quickjs-wasi"] {
        let p = engine_dir().join("node_modules").join(pkg).join("package.json");
        assert!(p.exists(), "the PAC engine is not installed ({} is missing); {INSTALL}", p.display());
    }
}

#[derive(Debug, Deserialize)]
struct Evaluated {
    host: String,
    result: String,
    lookups: Vec<String>,
}

#[derive(Deserialize)]
struct EngineOutput {
    results: Vec<Evaluated>,
}

/// A URL for `host` as a browser would build it (IPv6 in brackets).
fn url_for(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]/")
    } else {
        format!("http://{host}/")
    }
}

/// Evaluates `FindProxyForURL(url, host)` for every host, with the host
/// handed over exactly as written (as browsers do).
fn evaluate(pac: &str, hosts: &[&str]) -> Vec<Evaluated> {
    require_engine();
    let cases: Vec<serde_json::Value> =
        hosts.iter().map(|h| serde_json::json!({ "url": url_for(h), "host": h })).collect();
    let input = serde_json::to_vec(&serde_json::json!({ "pac": pac, "cases": cases })).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg("eval.js").current_dir(engine_dir());
    let ran = run_bounded(cmd, &input, Duration::from_secs(60));
    assert!(!ran.timed_out, "the PAC engine did not finish within 60 s: {}", tail(&ran.stderr, 20));
    assert!(
        ran.status.is_some_and(|s| s.success()),
        "the PAC engine failed ({:?}): {}\n{INSTALL} if a module is missing",
        ran.status,
        tail(&ran.stderr, 20)
    );
    let out: EngineOutput = serde_json::from_str(ran.stdout.trim())
        .unwrap_or_else(|e| panic!("engine output is not JSON: {e}: {}", ran.stdout));
    assert_eq!(out.results.len(), hosts.len());
    out.results
}

/// Evaluates a table of `(host, expected)` and reports every mismatch at
/// once; also fails when any host made the PAC look something up in DNS.
fn check_table(pac: &str, table: &[(&str, &str)]) {
    let hosts: Vec<&str> = table.iter().map(|(h, _)| *h).collect();
    let results = evaluate(pac, &hosts);
    let mut bad = Vec::new();
    for ((host, want), got) in table.iter().zip(&results) {
        assert_eq!(*host, got.host);
        if got.result != *want {
            bad.push(format!("  {host:<32} want {want:<40} got {}", got.result));
        }
        if !got.lookups.is_empty() {
            bad.push(format!("  {host:<32} made DNS lookups: {:?}", got.lookups));
        }
    }
    assert!(bad.is_empty(), "PAC engine disagrees on {} of {} hosts:\n{}", bad.len(), table.len(), bad.join("\n"));
}

const DIRECT: &str = "DIRECT";

fn base(c: &mut Config, route: PacRoute, direct: &[&str]) {
    c.pac.proxy = Some(vec!["proxy.gemeente.test:3128".into()]);
    c.pac.route = route;
    c.pac.direct = direct.iter().map(|s| s.to_string()).collect();
    c.compliance = Some(ComplianceConfig { protected: vec!["webmail.gemeente.nl".into()], ..Default::default() });
}

/// The `direct` list most tables use: names, patterns, CIDRs, a bare IP,
/// entries in odd spelling, and entries that would cover banned or protected
/// hosts (which must not work).
const DIRECT_LIST: &[&str] = &[
    "localhost",
    "Intranet.Gemeente.NL.",
    "*.gemeente.local",
    ".raad.local",
    "10.0.0.0/8",
    "192.168.1.0/24",
    "172.16.5.9",
    "fd00::/8",
    "2001:db8:1::/48",
    "::1",
    "*.tiktok.com",
    "aliexpress.com",
    "*.gemeente.nl",
    "wiki.gemeentë.nl",
];

// ---------------------------------------------------------------------------
// The endpoint.

#[tokio::test]
async fn pac_is_served_with_type_cache_etag_and_304() {
    let proxy = TestProxy::start_with(|c| base(c, PacRoute::All, &["localhost"])).await;
    let pac = fetch(&proxy, "/proxy.pac", "").await;
    assert_eq!(pac.status, 200);
    assert_eq!(pac.headers.get("content-type").map(String::as_str), Some("application/x-ns-proxy-autoconfig"));
    let cache = pac.headers.get("cache-control").cloned().unwrap_or_default();
    let max_age: u64 = cache
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in Cache-Control {cache:?}"));
    assert!((1..=3600).contains(&max_age), "max-age should be short, got {max_age}");
    let etag = pac.headers.get("etag").cloned().expect("ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "{etag}");
    assert!(pac.body.contains("function FindProxyForURL(url, host)"));
    assert!(pac.body.contains(PROXY_LINE));

    // WPAD serves the same file.
    let wpad = fetch(&proxy, "/wpad.dat", "").await;
    assert_eq!(wpad.status, 200);
    assert_eq!(wpad.body, pac.body);
    assert_eq!(wpad.headers.get("etag"), Some(&etag));
    assert_eq!(wpad.headers.get("content-type").map(String::as_str), Some("application/x-ns-proxy-autoconfig"));

    // Revalidation.
    let again = fetch(&proxy, "/proxy.pac", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty(), "304 with a body: {:?}", again.body);
    assert_eq!(again.headers.get("etag"), Some(&etag));
    let list = fetch(&proxy, "/proxy.pac", &format!("If-None-Match: \"other\", {etag}\r\n")).await;
    assert_eq!(list.status, 304);
    let stale = fetch(&proxy, "/proxy.pac", "If-None-Match: \"stale\"\r\n").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, pac.body);

    // The served text is what the library generates for this config and policy.
    let (policy, _) = load_policy(&proxy.config).unwrap();
    let generated = weerwal::pac::generate(&proxy.config, &policy);
    assert_eq!(generated.text, pac.body);
    assert_eq!(generated.etag, etag);
    proxy.stop().await;
}

#[tokio::test]
async fn pac_command_prints_what_the_proxy_serves() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[policy]\ndir = {policy:?}\n[audit]\npath = \"logs/audit.jsonl\"\n\
         [ca]\ndir = \"certs\"\n[pac]\nproxy = \"proxy.gemeente.test:3128\"\nroute = \"policy\"\n\
         direct = [\"localhost\", \"*.gemeente.local\", \"10.0.0.0/8\"]\nfallback_direct = true\n",
        policy = crate::common::repo_policy_dir().display().to_string()
    );
    let path = dir.path().join("weerwal.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weerwal"))
        .args(["pac", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();

    let config = Config::load(&path).unwrap();
    let proxy = TestProxy::start_config(config, tempfile::tempdir().unwrap()).await;
    assert_eq!(served_pac(&proxy).await, printed);
    check_table(
        &printed,
        &[("tiktok.com", "PROXY proxy.gemeente.test:3128; DIRECT"), ("example.org", DIRECT), ("localhost", DIRECT)],
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------
// The PAC in a real engine.

#[tokio::test]
async fn route_all_sends_everything_but_direct_through_the_proxy() {
    let proxy = TestProxy::start_with(|c| base(c, PacRoute::All, DIRECT_LIST)).await;
    let pac = served_pac(&proxy).await;
    let p = PROXY_LINE;
    check_table(
        &pac,
        &[
            // Banned hosts and their subdomains, however they are spelled.
            ("tiktok.com", p),
            ("www.tiktok.com", p),
            ("m.tiktok.com", p),
            ("TikTok.COM.", p),
            ("WWW.TIKTOK.COM", p),
            ("tiktok.com..", p),
            ("aliexpress.com", p),
            ("nl.aliexpress.com", p),
            ("M.AliExpress.Com.", p),
            ("s.click.aliexpress.com", p),
            ("vk.com", p),
            ("api16-normal-c-useast1a.tiktokv.com", p),
            // A direct entry covering a banned domain does not make it direct.
            ("foo.tiktok.com", p),
            // Ordinary hosts: through the proxy (route = all), no DNS.
            ("example.org", p),
            ("notaliexpress.com", p),
            ("aliexpress.com.evil.net", p),
            ("10.example.org", p),
            ("intranet", p),
            // The direct list: exact names (normalised), patterns, CIDRs.
            ("localhost", DIRECT),
            ("LocalHost.", DIRECT),
            ("intranet.gemeente.nl", DIRECT),
            ("INTRANET.gemeente.nl.", DIRECT),
            ("www.intranet.gemeente.nl", DIRECT), // via "*.gemeente.nl"
            ("wiki.gemeente.local", DIRECT),
            ("a.b.gemeente.local", DIRECT),
            ("Wiki.Gemeente.Local.", DIRECT),
            ("gemeente.local", p), // "*.x" is subdomains only
            ("notgemeente.local", p),
            ("griffie.raad.local", DIRECT),      // ".raad.local" = "*.raad.local"
            ("wiki.xn--gemeent-xya.nl", DIRECT), // IDN entry, punycode host
            ("10.0.0.1", DIRECT),
            ("10.255.255.255", DIRECT),
            ("11.0.0.1", p),
            ("192.168.1.200", DIRECT),
            ("192.168.2.1", p),
            ("172.16.5.9", DIRECT),
            ("172.16.5.10", p),
            ("fd12:3456::1", DIRECT),
            ("[fd00::abcd]", DIRECT),
            ("FD00::ABCD", DIRECT),
            ("2001:db8:1:ffff::1", DIRECT),
            ("2001:db8:2::1", p),
            ("::1", DIRECT),
            ("[::1]", DIRECT),
            ("::2", p),
            ("fe80::1", p),
            ("127.0.0.1", p),
            // A protected system is never sent around the proxy, even when
            // a direct pattern ("*.gemeente.nl") covers it.
            ("webmail.gemeente.nl", p),
            ("WebMail.Gemeente.NL.", p),
        ],
    );
    proxy.stop().await;
}

#[tokio::test]
async fn route_policy_sends_only_banned_and_protected_hosts_through_the_proxy() {
    let proxy = TestProxy::start_with(|c| base(c, PacRoute::Policy, DIRECT_LIST)).await;
    let pac = served_pac(&proxy).await;
    let p = PROXY_LINE;
    check_table(
        &pac,
        &[
            ("tiktok.com", p),
            ("www.tiktok.com", p),
            ("TikTok.COM.", p),
            ("foo.tiktok.com", p),
            ("aliexpress.com", p),
            ("M.AliExpress.Com.", p),
            ("wechat.com", p),
            ("web.wechat.com", p),
            ("webmail.gemeente.nl", p),
            ("WEBMAIL.gemeente.nl.", p),
            // Everything else DIRECT: including look-alikes of banned names.
            ("example.org", DIRECT),
            ("EXAMPLE.ORG.", DIRECT),
            ("notaliexpress.com", DIRECT),
            ("aliexpress.com.evil.net", DIRECT),
            ("tiktok.co", DIRECT),
            ("com", DIRECT),
            ("intranet", DIRECT),
            ("localhost", DIRECT),
            ("10.0.0.1", DIRECT),
            ("8.8.8.8", DIRECT),
            ("::1", DIRECT),
            ("gemeente.nl", DIRECT),
        ],
    );
    proxy.stop().await;
}

/// Every domain of the shipped policy, its subdomains, and odd spellings of
/// both, go through the proxy in both routes — even with a `direct` list of
/// `*` that would otherwise send everything DIRECT.
#[tokio::test]
async fn every_banned_domain_goes_through_the_proxy_whatever_the_direct_list() {
    for route in [PacRoute::All, PacRoute::Policy] {
        let proxy = TestProxy::start_with(|c| base(c, route, &["*", "0.0.0.0/0", "::/0"])).await;
        let pac = served_pac(&proxy).await;
        let (policy, _) = load_policy(&proxy.config).unwrap();
        let domains: Vec<String> = policy.domains().map(|(d, _)| d.to_string()).collect();
        assert!(domains.len() >= 20, "the shipped policy lists more domains than {}", domains.len());
        let mut hosts: Vec<String> = Vec::new();
        for d in &domains {
            hosts.push(d.clone());
            hosts.push(format!("www.{d}"));
            hosts.push(format!("a.b.{}.", d.to_ascii_uppercase()));
        }
        let mut table: Vec<(&str, &str)> = hosts.iter().map(|h| (h.as_str(), PROXY_LINE)).collect();
        table.push(("example.org", DIRECT));
        table.push(("10.1.2.3", DIRECT));
        table.push(("2001:db8::1", DIRECT));
        check_table(&pac, &table);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn fallback_direct_adds_direct_after_the_proxy() {
    let proxy = TestProxy::start_with(|c| {
        base(c, PacRoute::All, &["localhost"]);
        c.pac.fallback_direct = true;
    })
    .await;
    let pac = served_pac(&proxy).await;
    let pd = "PROXY proxy.gemeente.test:3128; DIRECT";
    check_table(&pac, &[("tiktok.com", pd), ("TikTok.COM.", pd), ("example.org", pd), ("localhost", DIRECT)]);
    proxy.stop().await;

    // Default: fail closed, no DIRECT after the proxy.
    let proxy = TestProxy::start_with(|c| base(c, PacRoute::All, &[])).await;
    let pac = served_pac(&proxy).await;
    assert!(!pac.contains("; DIRECT"));
    check_table(&pac, &[("tiktok.com", PROXY_LINE), ("example.org", PROXY_LINE)]);
    proxy.stop().await;
}

/// The PAC file follows the policy in force: after a reload that adds a
/// banned domain, `/proxy.pac` lists it and carries a new ETag.
#[tokio::test]
async fn pac_follows_a_policy_reload() {
    let policy_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(crate::common::repo_policy_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, policy_dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let dir = policy_dir.path().to_path_buf();
    let proxy = TestProxy::start_with(|c| {
        base(c, PacRoute::Policy, &[]);
        c.policy.dir = dir.clone();
    })
    .await;
    let before = fetch(&proxy, "/proxy.pac", "").await;
    let old_etag = before.headers.get("etag").cloned().expect("ETag");
    check_table(&before.body, &[("new-banned.example", DIRECT), ("tiktok.com", PROXY_LINE)]);

    std::fs::write(
        dir.join("zz-testapp.toml"),
        "[[ban]]\napp = \"TestApp\"\ndomains = [\"new-banned.example\"]\nadvice = \"AIVD\"\n\
         reference = \"test\"\nsince = \"2023-07-14\"\n",
    )
    .unwrap();
    let report = proxy.server.as_ref().unwrap().reloader().reload().await.expect("reload");
    assert!(report.policy_changed, "{report:?}");

    let after = fetch(&proxy, "/proxy.pac", &format!("If-None-Match: {old_etag}\r\n")).await;
    assert_eq!(after.status, 200, "the old ETag must not match the new PAC");
    assert_ne!(after.headers.get("etag"), Some(&old_etag));
    check_table(
        &after.body,
        &[
            ("new-banned.example", PROXY_LINE),
            ("www.New-Banned.Example.", PROXY_LINE),
            ("tiktok.com", PROXY_LINE),
            ("example.org", DIRECT),
        ],
    );
    proxy.stop().await;
}

/// With no `[pac] proxy`, the PAC names the proxy's listen address.
#[tokio::test]
async fn pac_proxy_defaults_to_the_listen_address() {
    let proxy = start_on_known_port(|_| {}).await;
    let pac = served_pac(&proxy).await;
    check_table(
        &pac,
        &[("tiktok.com", &format!("PROXY {}", proxy.addr)), ("example.org", &format!("PROXY {}", proxy.addr))],
    );
    proxy.stop().await;
}

/// Several proxy nodes: browsers get them in order (and DIRECT last only
/// with `fallback_direct`), as the real PAC engine evaluates it.
#[tokio::test]
async fn a_list_of_proxies_is_served_in_failover_order() {
    let proxy = TestProxy::start_with(|c| {
        c.pac.proxy = Some(vec!["proxy-a.gemeente.test:3128".into(), "proxy-b.gemeente.test:3128".into()]);
    })
    .await;
    let pac = served_pac(&proxy).await;
    let both = "PROXY proxy-a.gemeente.test:3128; PROXY proxy-b.gemeente.test:3128";
    check_table(&pac, &[("tiktok.com", both), ("example.org", both)]);
    proxy.stop().await;
    let proxy = TestProxy::start_with(|c| {
        c.pac.proxy = Some(vec!["proxy-a.gemeente.test:3128".into(), "proxy-b.gemeente.test:3128".into()]);
        c.pac.fallback_direct = true;
    })
    .await;
    let pac = served_pac(&proxy).await;
    check_table(&pac, &[("example.org", &format!("{both}; DIRECT"))]);
    proxy.stop().await;
}

// ---------------------------------------------------------------------------
// Headless Chromium.

const CHROMIUM: &str = "/usr/bin/chromium";

/// Starts the real serve path on a port chosen beforehand, so the PAC (whose
/// default `PROXY` line is the listen address) names a port browsers reach.
async fn start_on_known_port(adjust: impl Fn(&mut Config)) -> TestProxy {
    let mut last = None;
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.proxy.listen = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        adjust(&mut config);
        match Server::start(config.clone()).await {
            Ok(server) => {
                let addr = server.proxy_addrs[0];
                return TestProxy { server: Some(server), addr, dir, config };
            }
            Err(e) => last = Some(e), // the port was taken meanwhile: try another
        }
    }
    panic!("proxy did not start: {last:?}");
}

/// `chromium --headless --dump-dom URL` with the PAC URL, bounded in time.
async fn chromium_dump_dom(pac_url: String, url: String) -> (String, String) {
    assert!(Path::new(CHROMIUM).exists(), "Chromium is not installed ({CHROMIUM} is missing); {INSTALL}");
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-pac-url={pac_url}"))
        .args(["--dump-dom", &url])
        .env("HOME", profile.path());
        let ran = run_bounded(cmd, b"", Duration::from_secs(90));
        assert!(!ran.timed_out, "Chromium did not finish within 90 s on {url}: {}", tail(&ran.stderr, 30));
        assert!(
            ran.status.is_some_and(|s| s.success()),
            "Chromium failed on {url} ({:?}): {}",
            ran.status,
            tail(&ran.stderr, 30)
        );
        (ran.stdout, ran.stderr)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_the_pac_url_shows_the_block_page_and_reaches_allowed_sites_through_the_proxy() {
    let proxy = start_on_known_port(|c| {
        c.pac.route = PacRoute::All;
        c.pac.direct = Vec::new();
        c.pac.proxy = None;
    })
    .await;
    let pac = served_pac(&proxy).await;
    assert!(pac.contains(&format!("\"PROXY {}\"", proxy.addr)), "the PAC must name the running proxy:\n{pac}");
    let pac_url = format!("{}/proxy.pac", proxy.url());

    // A banned site: the block page, decided by the proxy.
    let (dom, stderr) = chromium_dump_dom(pac_url.clone(), "http://aliexpress.com/".into()).await;
    assert!(
        dom.contains("Geblokkeerd") && dom.contains("AliExpress"),
        "Chromium did not show the block page for http://aliexpress.com/:\n{}\n--- stderr ---\n{}",
        dom,
        tail(&stderr, 30)
    );
    let blocked = proxy.events("blocked");
    assert!(
        blocked.iter().any(|r| r.host.as_deref() == Some("aliexpress.com")),
        "no blocked record for aliexpress.com: {blocked:?}"
    );

    // An allowed loopback page, fetched through the proxy (which adds Via).
    //
    // Chromium never hands localhost, 127.0.0.0/8, [::1] or link-local hosts
    // to a PAC script: with a PAC URL it applies its implicit bypass rules
    // unconditionally ("to prevent PAC scripts from being able to proxy
    // localhost"), and `--proxy-bypass-list=<-loopback>` only works with
    // `--proxy-server`. So the page is addressed as 0.0.0.0:PORT: not a
    // localhost name to Chromium, so the PAC decides (PROXY); the proxy then
    // connects to 0.0.0.0, which Linux delivers to the origin's 127.0.0.1
    // listener. No traffic leaves the machine.
    let origin = Origin::start().await;
    let page = format!("http://0.0.0.0:{}/through-the-pac", origin.addr.port());
    let (dom, stderr) = chromium_dump_dom(pac_url, page).await;
    assert!(
        dom.contains("hello from origin"),
        "Chromium did not show the allowed page:\n{dom}\n--- stderr ---\n{}",
        tail(&stderr, 30)
    );
    let seen = origin.requests();
    let page = seen.iter().find(|s| s.uri == "/through-the-pac").expect("the origin saw the page request");
    let via: Vec<&str> = page.headers.get_all("via").iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(
        via.iter().any(|v| v.split_whitespace().nth(1) == Some("weerwal")),
        "the page did not come through weerwal (Via: {via:?})"
    );
    proxy.stop().await;
}
