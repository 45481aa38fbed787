//! Issue 5: the officers' dashboard in a real browser. Debian's headless
//! Chromium (fresh `--user-data-dir`, `--no-sandbox`,
//! `--disable-background-networking`), driven by playwright-core from
//! `tests/browser/`, logs in from the keyboard, opens the attempts page and
//! finds there the host of a request the proxy really blocked.
//!
//! Chromium and the driver are installed by `scripts/install-test-deps.sh`;
//! when they are missing this test fails and says so (it never skips).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{with_dashboard, TestProxy};
use serde_json::Value;
use weerwal::identity::Role;

const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str =
    "run `bash scripts/install-test-deps.sh` (as root) first: it installs Chromium, Node.js and tests/browser/";
const OFFICER: (&str, &str) = ("fbakker", "officer-wachtwoord-1");

fn driver_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails (never skips) when something the test drives is missing.
fn require_browser() {
    assert!(Path::new(CHROMIUM).exists(), "Chromium is not installed ({CHROMIUM} is missing); {INSTALL}");
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!("node (Node.js 20) is not installed; {INSTALL}"),
    }
    let p = driver_dir().join("node_modules/playwright-core/package.json");
    assert!(p.exists(), "playwright-core is not installed ({} is missing); {INSTALL}", p.display());
}

/// SIGKILL to the process group `pgid` (a group this test started).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `cmd` in its own process group with `input` on stdin; kills the
/// whole group (node and every Chromium process) when it is not done in
/// `limit`, and again after it is done so nothing outlives the test.
fn run_bounded(
    mut cmd: Command,
    input: &[u8],
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String, String, bool) {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}; {INSTALL}", cmd.get_program()));
    let pid = child.id();
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
    (status, out_t.join().unwrap_or_default(), err_t.join().unwrap_or_default(), timed_out)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_and_finds_the_blocked_host_on_the_attempts_page() {
    require_browser();
    let proxy = TestProxy::start_with(|c| with_dashboard(c, &[(OFFICER.0, OFFICER.1, Role::Officer)])).await;
    let admin = proxy.server.as_ref().unwrap().admin_addrs[0];

    // A real blocked request through the proxy.
    let r = proxy.client().get("http://aliexpress.com/").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let seq = proxy.events("blocked")[0].seq;

    let profile = tempfile::tempdir().unwrap();
    let input = serde_json::json!({
        "base": format!("http://{admin}"),
        "user": OFFICER.0,
        "password": OFFICER.1,
        "host": "aliexpress.com",
        "chromium": CHROMIUM,
        "profile": profile.path().join("profile"),
    });
    let home = profile.path().to_path_buf();
    let (status, stdout, stderr, timed_out) = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg("dashboard.mjs").current_dir(driver_dir()).env("HOME", &home);
        run_bounded(cmd, input.to_string().as_bytes(), Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(!timed_out, "the browser did not finish within 120 s:\n{}\n{}", tail(&stdout, 5), tail(&stderr, 30));
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the driver's output is not JSON ({e}; status {status:?}):\n{stdout}\n--- stderr ---\n{}",
            tail(&stderr, 30)
        )
    });
    assert_eq!(result["ok"], true, "the browser run failed: {result:#}\n--- stderr ---\n{}", tail(&stderr, 30));
    let seen = &result["seen"];

    assert_eq!(seen["before_login_url"], "/login", "{seen:#}");
    assert_eq!(seen["after_login_url"], "/attempts", "{seen:#}");
    assert_eq!(seen["script_cookies"], "", "the session cookie must be HttpOnly: {seen:#}");
    assert_eq!(seen["session_cookie"]["httpOnly"], true, "{seen:#}");
    assert_eq!(seen["session_cookie"]["sameSite"], "Strict", "{seen:#}");
    assert_eq!(seen["session_cookie"]["secure"], false, "{seen:#}");
    assert_eq!(seen["rows_with_host"], 1, "the blocked host is in the attempts table: {seen:#}");
    let row = seen["row_text"].as_str().unwrap();
    assert!(row.contains("aliexpress.com") && row.contains("geblokkeerd") && row.contains("AliExpress"), "{row}");
    assert!(row.starts_with(&format!("{seq} ")), "the reference number leads the row: {row}");
    let headers: Vec<&str> = seen["column_headers"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(headers.contains(&"Host") && headers.contains(&"Tijd (Europe/Amsterdam)"), "{headers:?}");
    assert!(seen["h1"].as_str().unwrap().starts_with("Pogingen"), "{seen:#}");
    assert_eq!(seen["first_tab"], "Naar de inhoud", "the first Tab reaches the skip link: {seen:#}");
    assert_eq!(
        seen["filtered_url"],
        "/attempts?user=&session=&app=&host=aliexpress.com&client=&event=&since=&until=&limit=200"
    );
    assert!(seen["filtered_status"].as_str().unwrap().starts_with("1 van 1 treffers"), "{seen:#}");
    proxy.stop().await;
}
