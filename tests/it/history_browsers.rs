//! `weerwal history` against history written by real browsers.
//!
//! Debian's `chromium` and `firefox-esr` run headless with fresh profiles.
//! Every name they look up goes to a small HTTP server in this test (Chromium
//! through `--host-resolver-rules`, Firefox through its proxy settings), so
//! nothing leaves the machine. The server's pages navigate from one to the
//! next (allowed, banned, allowed, …), so each browser records real visits,
//! script navigations, site icons and all. Then `scan` must find exactly the
//! banned visits, `purge` must remove them and keep the rest, and the browser
//! must open the purged profile again, keep writing to it, and meanwhile
//! make a purge refuse.
//!
//! Chromium is driven over `--remote-debugging-pipe` (DevTools protocol on
//! fds 3 and 4) and closed with `Browser.close`: only a clean shutdown writes
//! its last history batch (a SIGTERM loses it). Firefox writes each visit to
//! its WAL at once, so SIGTERM is enough.
//!
//! Without the browser on this machine a test fails, naming the script that
//! installs it (`bash scripts/install-test-deps.sh`: Debian's `chromium` and
//! `firefox-esr`). On a machine that cannot have them, set
//! `WEERWAL_SKIP_BROWSER_TESTS=1` to skip these tests with a message instead.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use weerwal::history::report::by_host;
use weerwal::history::sqlite::open_exclusive;
use weerwal::history::{purge_profile, scan_profile, Browser, HistoryError, Profile, PurgeOptions};
use weerwal::policy::{load_embedded, Policy, Zone};

/// The pages of the first browsing session, in the order the pages send the
/// browser on. `example.org` is allowed; the others are banned.
const FIRST_RUN: &[&str] = &[
    "http://example.org/start",
    "http://aliexpress.com/item/1005006.html",
    "http://www.tiktok.com/@gemeente",
    "http://example.org/news",
    "http://m.aliexpress.com/p?id=7",
    "http://example.org/done",
];

const SECOND_RUN: &[&str] = &["http://example.org/again", "http://aliexpress.com/again", "http://example.org/done2"];

const BANNED_HOSTS: &[&str] = &["aliexpress.com", "m.aliexpress.com", "www.tiktok.com"];

fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|c| c.is_file())
}

/// A tiny HTTP server: every page names the next page of its chain, and every
/// request is recorded. Each connection serves one request.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(chains: &'static [&'static [&'static str]]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = Arc::clone(&record);
                thread::spawn(move || serve(stream, chains, &record));
            }
        });
        Server { port, seen }
    }

    fn wait_for(&self, url: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.seen.lock().unwrap().iter().any(|u| u == url) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("Chromium never requested {url}; requests seen: {:?}", self.seen.lock().unwrap());
    }
}

fn serve(mut stream: TcpStream, chains: &[&[&str]], record: &Mutex<Vec<String>>) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut request_line = head.lines().next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("");
    let target = request_line.next().unwrap_or("/").to_string();
    if method == "CONNECT" {
        // Firefox's own background services try HTTPS through the proxy.
        let _ = stream.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    // Origin form (Chromium, resolved to us) or absolute form (Firefox, via proxy).
    let url = if target.starts_with("http://") {
        target.clone()
    } else {
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("Host: ").or_else(|| l.strip_prefix("host: ")))
            .unwrap_or("")
            .trim()
            .to_string();
        format!("http://{host}{target}")
    };
    let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_else(|| "/".into());
    record.lock().unwrap().push(url.clone());
    let next = chains.iter().find_map(|chain| {
        let i = chain.iter().position(|u| *u == url)?;
        Some(chain.get(i + 1).copied())
    });
    if path == "/favicon.ico" {
        let icon = favicon();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: image/x-icon\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            icon.len()
        );
        let _ = stream.write_all(&icon);
        return;
    }
    let (status, body) = match next {
        Some(next) => {
            let script = next
                .map(|n| format!("<script>setTimeout(function () {{ location.href = {n:?}; }}, 300);</script>"))
                .unwrap_or_default();
            (
                "200 OK",
                format!(
                    "<!doctype html><html><head><title>{path}</title></head><body><p>{url}</p>{script}</body></html>"
                ),
            )
        }
        None => ("404 Not Found", "not found".to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A 1×1 red icon in ICO format (one 32-bit BMP image), so Chromium stores a
/// site icon for each page in its `Favicons` database.
fn favicon() -> Vec<u8> {
    let mut ico = Vec::new();
    ico.extend_from_slice(&[0, 0, 1, 0, 1, 0]); // ICONDIR: reserved, type 1 (icon), 1 image
    ico.extend_from_slice(&[1, 1, 0, 0, 1, 0, 32, 0]); // 1×1, no palette, 1 plane, 32 bpp
    ico.extend_from_slice(&48u32.to_le_bytes()); // image size: header 40 + pixel 4 + mask 4
    ico.extend_from_slice(&22u32.to_le_bytes()); // image offset
    for v in [40u32, 1, 2] {
        ico.extend_from_slice(&v.to_le_bytes()); // BITMAPINFOHEADER size, width, height (×2 for the mask)
    }
    ico.extend_from_slice(&[1, 0, 32, 0]); // planes, bits per pixel
    ico.extend_from_slice(&[0; 24]); // no compression, sizes and palette left to the decoder
    ico.extend_from_slice(&[0, 0, 255, 255]); // one pixel, BGRA
    ico.extend_from_slice(&[0, 0, 0, 0]); // AND mask row, padded to 4 bytes
    ico
}

/// A private copy of a browser's database, opened with plain SQL (not
/// weerwal's code), so the test never changes what it checks.
fn read_copy(db: &Path) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let name = db.file_name().unwrap();
    std::fs::copy(db, dir.path().join(name)).unwrap();
    for suffix in ["-wal", "-journal"] {
        let mut companion = db.as_os_str().to_os_string();
        companion.push(suffix);
        let mut target = dir.path().join(name).into_os_string();
        target.push(suffix);
        if Path::new(&companion).is_file() {
            std::fs::copy(&companion, &target).unwrap();
        }
    }
    let conn = Connection::open(dir.path().join(name)).unwrap();
    (dir, conn)
}

/// `(text, count)` rows of `sql` over a copy of `db`.
fn counted(db: &Path, sql: &str) -> BTreeMap<String, i64> {
    let (_dir, c) = read_copy(db);
    let mut stmt = c.prepare(sql).unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    rows
}

/// Chromium's history: URL → number of visits.
fn chromium_visits(db: &Path) -> BTreeMap<String, i64> {
    counted(db, "SELECT url, (SELECT count(*) FROM visits WHERE visits.url = urls.id) FROM urls")
}

/// Firefox's history: URL → number of visits (bookmark-only places have 0).
fn firefox_visits(db: &Path) -> BTreeMap<String, i64> {
    counted(db, "SELECT url, (SELECT count(*) FROM moz_historyvisits WHERE place_id = moz_places.id) FROM moz_places")
}

/// Page URLs with a site icon (`sql` returns `(page_url, 1)`).
fn icon_pages(db: &Path, sql: &str) -> Vec<String> {
    if !db.is_file() {
        return Vec::new();
    }
    counted(db, sql).into_keys().collect()
}

const CHROMIUM_ICON_PAGES: &str = "SELECT DISTINCT page_url, 1 FROM icon_mapping";
const FIREFOX_ICON_PAGES: &str = "SELECT page_url, 1 FROM moz_pages_w_icons";

/// Banned host → visits, from a URL → visits map.
fn banned_visits(visits: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let mut banned = BTreeMap::new();
    for (url, n) in visits.iter().filter(|(u, _)| BANNED_HOSTS.contains(&host_of(u))) {
        *banned.entry(host_of(url).to_string()).or_default() += n;
    }
    banned
}

fn allowed_visits(visits: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    visits.iter().filter(|(u, _)| !BANNED_HOSTS.contains(&host_of(u))).map(|(u, n)| (u.clone(), *n)).collect()
}

fn corrupt_markers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().contains("corrupt"))
        .collect()
}

const INSTALL: &str =
    "run `bash scripts/install-test-deps.sh` (as root) first: it installs Debian's `chromium` and `firefox-esr`";

/// A browser this test needs is missing: the test fails, unless
/// `WEERWAL_SKIP_BROWSER_TESTS=1` asks to skip it. The skip is said loudly,
/// on the stderr handle itself, which the test harness does not capture, so
/// it shows in every `cargo test` log, not only with `--nocapture`.
fn browser_missing(test: &str, what: &str) {
    if std::env::var_os("WEERWAL_SKIP_BROWSER_TESTS").is_some_and(|v| v == "1") {
        let line = "*".repeat(74);
        let _ = writeln!(
            std::io::stderr(),
            "\n{line}\nSKIPPED {test}: {what} not found on PATH (WEERWAL_SKIP_BROWSER_TESTS=1).\n{line}"
        );
        return;
    }
    panic!("{test}: {what} not found on PATH; {INSTALL} (or set WEERWAL_SKIP_BROWSER_TESTS=1 to skip this test)");
}

/// A running headless Chromium, driven over `--remote-debugging-pipe`.
struct Chromium {
    child: Child,
    to_browser: Option<File>,
    next_id: u32,
    _fifos: tempfile::TempDir,
}

impl Chromium {
    fn launch(bin: &Path, user_data: &Path, port: u16, log: &Path) -> Chromium {
        let fifos = tempfile::tempdir().unwrap();
        let (to, from) = (fifos.path().join("to-browser"), fifos.path().join("from-browser"));
        for f in [&to, &from] {
            let ok = Command::new("mkfifo").arg(f).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "mkfifo failed");
        }
        let flags = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-features=HttpsUpgrades".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--password-store=basic".into(),
            "--remote-debugging-pipe".into(),
            format!("--user-data-dir={}", user_data.display()),
            // Every name resolves to the test server: nothing leaves the machine.
            format!("--host-resolver-rules=MAP * 127.0.0.1:{port}"),
        ];
        // The DevTools pipe is fds 3 (commands in) and 4 (replies out).
        let child = Command::new("bash")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<"$WEERWAL_TO" 4>"$WEERWAL_FROM""#)
            .arg(bin)
            .args(&flags)
            .env("WEERWAL_TO", &to)
            .env("WEERWAL_FROM", &from)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("start chromium");
        // Opening a FIFO blocks until the other end opens it, in the order
        // bash opens them; a thread keeps a failed start from hanging the test.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let w = File::options().write(true).open(&to);
            let r = File::open(&from);
            let _ = tx.send((w, r));
        });
        let mut browser = Chromium { child, to_browser: None, next_id: 1, _fifos: fifos };
        let (w, r) = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((Ok(w), Ok(r))) => (w, r),
            _ => panic!("Chromium did not open its DevTools pipe; see {}", log.display()),
        };
        // Drain the replies so the browser never blocks on a full pipe.
        thread::spawn(move || {
            let mut r = r;
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        browser.to_browser = Some(w);
        browser
    }

    fn send(&mut self, method: &str, params: serde_json::Value) {
        let msg = serde_json::json!({ "id": self.next_id, "method": method, "params": params });
        self.next_id += 1;
        let w = self.to_browser.as_mut().expect("pipe open");
        w.write_all(msg.to_string().as_bytes()).unwrap();
        w.write_all(b"\0").unwrap();
        w.flush().unwrap();
    }

    fn open(&mut self, url: &str) {
        self.send("Target.createTarget", serde_json::json!({ "url": url }));
    }

    /// Closes the browser the way a person does, so it writes its history.
    fn close(mut self) {
        self.send("Browser.close", serde_json::json!({}));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.child.try_wait() {
                self.to_browser = None;
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("Chromium did not exit after Browser.close");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn host_of(url: &str) -> &str {
    url.split("://").nth(1).and_then(|r| r.split(['/', '?', ':']).next()).unwrap_or("")
}

fn policy() -> Policy {
    load_embedded(&Zone::default()).unwrap().0
}

#[test]
fn real_chromium_history_is_scanned_and_purged() {
    let Some(bin) = find_binary("WEERWAL_CHROMIUM", &["chromium", "chromium-browser"]) else {
        return browser_missing("real_chromium_history_is_scanned_and_purged", "chromium");
    };
    static CHAINS: &[&[&str]] = &[FIRST_RUN, SECOND_RUN];
    let server = Server::start(CHAINS);
    let work = tempfile::tempdir().unwrap();
    let user_data = work.path().join("profile");
    let log = work.path().join("chromium.log");
    let policy = policy();

    // 1. Browse: allowed and banned pages, then close Chromium normally.
    let mut browser = Chromium::launch(&bin, &user_data, server.port, &log);
    browser.open(FIRST_RUN[0]);
    server.wait_for(FIRST_RUN[FIRST_RUN.len() - 1], Duration::from_secs(60));
    thread::sleep(Duration::from_millis(700));
    browser.close();

    let db = user_data.join("Default").join("History");
    assert!(db.is_file(), "Chromium wrote no History; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let before = chromium_visits(&db);
    for url in FIRST_RUN {
        assert!(before.get(*url).copied().unwrap_or(0) >= 1, "Chromium did not record {url}: {before:?}");
    }
    let banned_before = banned_visits(&before);
    assert_eq!(banned_before.keys().collect::<Vec<_>>(), ["aliexpress.com", "m.aliexpress.com", "www.tiktok.com"]);

    // 2. Scan finds exactly the banned visits Chromium recorded.
    let profile = discovered_profile(&user_data);
    let scan = scan_profile(&profile, &policy).unwrap();
    let found: BTreeMap<String, i64> = by_host(&scan.findings).into_iter().map(|h| (h.host, h.visits as i64)).collect();
    assert_eq!(found, banned_before);
    for line in by_host(&scan.findings) {
        // Times decoded from Chromium's 1601 epoch land today, not in 1601 or 2401.
        let last = line.last_visit.expect("a visit time");
        assert!(last.starts_with(&Zone::utc().today().to_string()), "{last}");
    }

    // 3. Purge removes them and keeps every allowed entry as it was, in the
    //    history and in the site icons.
    let favicons = db.with_file_name("Favicons");
    let icons_before = icon_pages(&favicons, CHROMIUM_ICON_PAGES);
    eprintln!("pages with a site icon before the purge: {icons_before:?}");
    let out = purge_profile(&profile, &policy, PurgeOptions::default()).unwrap();
    let icons_after = icon_pages(&favicons, CHROMIUM_ICON_PAGES);
    let allowed_icons: Vec<String> =
        icons_before.iter().filter(|u| !BANNED_HOSTS.contains(&host_of(u))).cloned().collect();
    assert_eq!(icons_after, allowed_icons);
    assert_eq!(out.removed.icon_links as usize, icons_before.len() - allowed_icons.len());
    if out.removed.icon_links == 0 {
        eprintln!("note: Chromium stored no site icon for a banned page this time; icon purge not exercised");
    }
    assert_eq!(out.removed.visits as i64, banned_before.values().sum::<i64>());
    let after = chromium_visits(&db);
    let allowed = allowed_visits(&before);
    assert_eq!(after, allowed);
    assert!(!out.backups.is_empty() && out.backups.iter().all(|b| b.is_file()));
    integrity_ok(&db);

    // 4. Chromium opens the purged profile and keeps using it. While it runs,
    //    it holds the database: a purge would be refused.
    let mut browser = Chromium::launch(&bin, &user_data, server.port, &log);
    browser.open(SECOND_RUN[0]);
    server.wait_for(SECOND_RUN[SECOND_RUN.len() - 1], Duration::from_secs(60));
    thread::sleep(Duration::from_millis(700));
    match open_exclusive(&profile, favicons.is_file().then_some(favicons.as_path())) {
        Err(HistoryError::Locked { browser: Browser::Chromium, .. }) => {}
        other => panic!("expected Locked while Chromium runs, got {:?}", other.map(|_| ())),
    }
    // Scanning works while it runs (from a copy, never touching its file).
    let running = scan_profile(&profile, &policy).unwrap();
    assert!(running.copied);
    browser.close();

    let reopened = chromium_visits(&db);
    for (url, n) in &allowed {
        assert_eq!(reopened.get(url), Some(n), "{url} lost after reopening: {reopened:?}");
    }
    for url in SECOND_RUN {
        assert!(reopened.contains_key(*url), "Chromium did not record {url} in the purged profile: {reopened:?}");
    }
    let leftovers = corrupt_markers(db.parent().unwrap());
    assert!(leftovers.is_empty(), "Chromium flagged the database: {leftovers:?}");
    integrity_ok(&db);
    if favicons.is_file() {
        integrity_ok(&favicons);
        assert!(icon_pages(&favicons, CHROMIUM_ICON_PAGES)
            .iter()
            .all(|u| !BANNED_HOSTS.contains(&host_of(u)) || u.contains("again")));
    }

    // 5. The new banned visit is found and purged as well.
    let scan = scan_profile(&profile, &policy).unwrap();
    assert_eq!(by_host(&scan.findings).iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), vec!["aliexpress.com"]);
    purge_profile(&profile, &policy, PurgeOptions { backup: false }).unwrap();
    assert!(scan_profile(&profile, &policy).unwrap().findings.is_empty());
    assert!(chromium_visits(&db).contains_key(SECOND_RUN[0]));
}

/// The profile as discovery finds it in a Chromium "User Data" folder.
fn discovered_profile(user_data: &Path) -> Profile {
    let found = weerwal::history::resolve_profile_path(user_data, Some(Browser::Chromium)).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].db, user_data.join("Default").join("History"));
    found[0].clone()
}

fn integrity_ok(db: &Path) {
    let (_dir, c) = read_copy(db);
    let r: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(r, "ok", "{}", db.display());
}

/// A running headless Firefox with its own profile, browsing through the test
/// server as its proxy.
struct Firefox {
    child: Child,
}

impl Firefox {
    fn launch(bin: &Path, profile: &Path, port: u16, url: &str, log: &Path) -> Firefox {
        std::fs::create_dir_all(profile).unwrap();
        // Everything, including Firefox's own background services, goes to
        // the test server; it refuses HTTPS (CONNECT), so nothing leaves.
        let prefs = [
            ("network.proxy.type", "1".to_string()),
            ("network.proxy.http", "\"127.0.0.1\"".into()),
            ("network.proxy.http_port", port.to_string()),
            ("network.proxy.ssl", "\"127.0.0.1\"".into()),
            ("network.proxy.ssl_port", port.to_string()),
            ("network.proxy.no_proxies_on", "\"\"".into()),
            ("network.proxy.allow_hijacking_localhost", "true".into()),
            ("dom.security.https_first", "false".into()),
            ("dom.security.https_only_mode", "false".into()),
            ("browser.shell.checkDefaultBrowser", "false".into()),
            ("app.update.enabled", "false".into()),
            ("network.captive-portal-service.enabled", "false".into()),
            ("network.connectivity-service.enabled", "false".into()),
            ("browser.safebrowsing.malware.enabled", "false".into()),
            ("browser.safebrowsing.phishing.enabled", "false".into()),
            ("datareporting.policy.dataSubmissionEnabled", "false".into()),
            ("toolkit.telemetry.reportingpolicy.firstRun", "false".into()),
            ("browser.aboutwelcome.enabled", "false".into()),
            ("browser.startup.homepage_override.mstone", "\"ignore\"".into()),
        ];
        let user_js: String = prefs.iter().map(|(k, v)| format!("user_pref(\"{k}\", {v});\n")).collect();
        std::fs::write(profile.join("user.js"), user_js).unwrap();
        let child = Command::new(bin)
            .args(["--headless", "--no-remote", "--profile"])
            .arg(profile)
            .arg(url)
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("start firefox");
        Firefox { child }
    }

    /// Quits like a desktop session ending (SIGTERM), then waits.
    fn close(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("Firefox did not exit after SIGTERM");
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until Firefox has written a visit to `url` (it writes visits to
/// its WAL as it goes, so a copy shows them while it runs).
fn wait_for_visit(places: &Path, url: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if places.is_file() && firefox_visits(places).get(url).copied().unwrap_or(0) > 0 {
            return;
        }
        thread::sleep(Duration::from_millis(250));
    }
    panic!("Firefox never recorded {url}");
}

#[test]
fn real_firefox_history_is_scanned_and_purged() {
    let Some(bin) = find_binary("WEERWAL_FIREFOX", &["firefox-esr", "firefox"]) else {
        return browser_missing("real_firefox_history_is_scanned_and_purged", "firefox-esr");
    };
    static CHAINS: &[&[&str]] = &[FIRST_RUN, SECOND_RUN];
    let server = Server::start(CHAINS);
    let work = tempfile::tempdir().unwrap();
    let profile_dir = work.path().join("abcd.default-esr");
    let log = work.path().join("firefox.log");
    let places = profile_dir.join("places.sqlite");
    let favicons = profile_dir.join("favicons.sqlite");
    let policy = policy();

    // 1. Browse, then quit.
    let browser = Firefox::launch(&bin, &profile_dir, server.port, FIRST_RUN[0], &log);
    server.wait_for(FIRST_RUN[FIRST_RUN.len() - 1], Duration::from_secs(90));
    wait_for_visit(&places, FIRST_RUN[FIRST_RUN.len() - 1]);
    thread::sleep(Duration::from_millis(700));
    browser.close();

    let before = firefox_visits(&places);
    for url in FIRST_RUN {
        assert!(before.get(*url).copied().unwrap_or(0) >= 1, "Firefox did not record {url}: {before:?}");
    }
    let banned_before = banned_visits(&before);
    assert_eq!(banned_before.keys().collect::<Vec<_>>(), ["aliexpress.com", "m.aliexpress.com", "www.tiktok.com"]);

    // 2. Scan (the profile found through profiles.ini-less discovery of its folder).
    let found = weerwal::history::resolve_profile_path(work.path(), None).unwrap();
    assert_eq!(
        found.iter().map(|p| (p.browser, p.db.clone())).collect::<Vec<_>>(),
        [(Browser::Firefox, places.clone())]
    );
    let profile = found[0].clone();
    let scan = scan_profile(&profile, &policy).unwrap();
    let visits: BTreeMap<String, i64> =
        by_host(&scan.findings).into_iter().map(|h| (h.host, h.visits as i64)).collect();
    assert_eq!(visits, banned_before);
    for line in by_host(&scan.findings) {
        // Firefox counts microseconds from 1970.
        let last = line.last_visit.expect("a visit time");
        assert!(last.starts_with(&Zone::utc().today().to_string()), "{last}");
    }

    // 3. Purge: history, origins and site icons of the banned pages go; the
    //    rest (including Firefox's default bookmarks) stays.
    let icons_before = icon_pages(&favicons, FIREFOX_ICON_PAGES);
    eprintln!("pages with a site icon before the purge: {icons_before:?}");
    let out = purge_profile(&profile, &policy, PurgeOptions::default()).unwrap();
    assert_eq!(out.removed.visits as i64, banned_before.values().sum::<i64>());
    let allowed = allowed_visits(&before);
    assert_eq!(firefox_visits(&places), allowed);
    let origins = counted(&places, "SELECT host, 1 FROM moz_origins");
    assert!(origins.keys().all(|h| !BANNED_HOSTS.contains(&h.as_str())), "{origins:?}");
    assert!(origins.contains_key("example.org"));
    let icons_after = icon_pages(&favicons, FIREFOX_ICON_PAGES);
    let allowed_icons: Vec<String> =
        icons_before.iter().filter(|u| !BANNED_HOSTS.contains(&host_of(u))).cloned().collect();
    assert_eq!(icons_after, allowed_icons);
    assert_eq!(out.backups.len(), if favicons.is_file() { 2 } else { 1 });
    integrity_ok(&places);

    // 4. Firefox opens the purged profile and keeps using it; while it runs
    //    a purge is refused.
    let browser = Firefox::launch(&bin, &profile_dir, server.port, SECOND_RUN[0], &log);
    server.wait_for(SECOND_RUN[SECOND_RUN.len() - 1], Duration::from_secs(90));
    wait_for_visit(&places, SECOND_RUN[SECOND_RUN.len() - 1]);
    match open_exclusive(&profile, favicons.is_file().then_some(favicons.as_path())) {
        Err(HistoryError::Locked { browser: Browser::Firefox, .. }) => {}
        other => panic!("expected Locked while Firefox runs, got {:?}", other.map(|_| ())),
    }
    browser.close();

    let reopened = firefox_visits(&places);
    for (url, n) in &allowed {
        assert_eq!(reopened.get(url), Some(n), "{url} lost after reopening: {reopened:?}");
    }
    for url in SECOND_RUN {
        assert!(reopened.get(*url).copied().unwrap_or(0) >= 1, "Firefox did not record {url}: {reopened:?}");
    }
    let leftovers = corrupt_markers(&profile_dir);
    assert!(leftovers.is_empty(), "Firefox flagged the database: {leftovers:?}");
    integrity_ok(&places);

    // 5. The new banned visit is found and purged as well.
    let scan = scan_profile(&profile, &policy).unwrap();
    assert_eq!(by_host(&scan.findings).iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), vec!["aliexpress.com"]);
    purge_profile(&profile, &policy, PurgeOptions { backup: false }).unwrap();
    assert!(scan_profile(&profile, &policy).unwrap().findings.is_empty());
}
