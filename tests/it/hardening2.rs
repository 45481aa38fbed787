//! Issue 15 (hardening II), items 3, 4, 5, 6, 7, 8, 11 and 12: each over
//! real sockets, the real binary, a real terminal or a real browser.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{eventually, raw_response, status_of, with_dashboard, Origin, TestProxy, PATIENCE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use weerwal::audit::EventKind;
use weerwal::ca::{CertificateAuthority, LeafCache};
use weerwal::config::AuthMode;
use weerwal::identity::{Role, Users};

const WEERWAL: &str = env!("CARGO_BIN_EXE_weerwal");

// ---------------------------------------------------------------------------
// The real binary, started by the test in its own directory.

/// `weerwal serve` as a child process, its stderr collected line by line.
struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    exited: Option<Instant>,
}

/// Writes `weerwal.toml` in `dir` (proxy on a free port, the repository's
/// policy) with `extra` appended.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let policy = crate::common::repo_policy_dir();
    let path = dir.join("weerwal.toml");
    std::fs::write(
        &path,
        format!("[proxy]\nlisten = \"127.0.0.1:{port}\"\nhttps = \"reject\"\n[policy]\ndir = {policy:?}\n{extra}"),
    )
    .unwrap();
    path
}

impl Serve {
    /// Starts `serve` with `config`; does not wait.
    fn spawn(config: &Path) -> Serve {
        let mut cmd = Command::new(WEERWAL);
        cmd.arg("--config").arg(config).arg("serve");
        Serve::spawn_command(cmd)
    }

    /// Starts `cmd` (a `serve`, perhaps under a tracer); does not wait.
    fn spawn_command(mut cmd: Command) -> Serve {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Serve { child, lines, exited: None }
    }

    /// Starts `serve` and waits until it says it runs.
    fn start(config: &Path) -> Serve {
        let mut s = Serve::spawn(config);
        s.wait_log("weerwal proxy running");
        s
    }

    /// Waits (at most [`PATIENCE`]) for a log line containing `needle`.
    fn wait_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it wrote last may still be on its way from the pipe.
                let gone = *self.exited.get_or_insert_with(Instant::now);
                if gone.elapsed() > Duration::from_secs(5) {
                    panic!("serve exited ({status}) without logging {needle:?}:\n{}", self.log());
                }
            }
            assert!(Instant::now() < deadline, "no log line with {needle:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits (at most [`PATIENCE`]) for the process to end.
    fn exit(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit.
    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if self.exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn proxy_addr(config: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(config).unwrap();
    let at = text.find("127.0.0.1:").unwrap();
    text[at..].split('"').next().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------
// Item 3: dashboard login.

/// A browser of the dashboard login form: one pre-session cookie for all
/// its posts, so two answers can be compared byte for byte.
struct LoginForm {
    base: String,
    client: reqwest::Client,
    cookie: String,
    token: String,
}

impl LoginForm {
    async fn open(addr: SocketAddr) -> LoginForm {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PATIENCE)
            .build()
            .unwrap();
        let base = format!("http://{addr}");
        let page = client.get(format!("{base}/login")).send().await.unwrap();
        let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
        let body = page.text().await.unwrap();
        let marker = "name=\"token\" value=\"";
        let at = body.find(marker).unwrap() + marker.len();
        let token = body[at..].split('"').next().unwrap().to_string();
        LoginForm { base, client, cookie, token }
    }

    /// Posts the form; the status, the headers that matter and the body.
    async fn post(&self, name: &str, password: &str) -> (u16, Vec<String>, String) {
        let body = format!("token={}&name={}&password={}", self.token, urlencode(name), urlencode(password));
        let r = self
            .client
            .post(format!("{}/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &self.cookie)
            .body(body)
            .send()
            .await
            .unwrap();
        let mut headers: Vec<String> = r
            .headers()
            .iter()
            .filter(|(k, _)| *k != "date")
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        headers.sort();
        (r.status().as_u16(), headers, r.text().await.unwrap())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test]
async fn dashboard_login_answers_a_non_officers_right_password_exactly_like_a_wrong_one() {
    const OFFICER: (&str, &str) = ("fbakker", "officer-wachtwoord-1");
    const USER: (&str, &str) = ("jdevries", "gebruiker-wachtwoord-1");
    let proxy = TestProxy::start_with(|c| {
        with_dashboard(c, &[(OFFICER.0, OFFICER.1, Role::Officer), (USER.0, USER.1, Role::User)])
    })
    .await;
    let admin = proxy.server.as_ref().unwrap().admin_addrs[0];
    let form = LoginForm::open(admin).await;

    let right = form.post(USER.0, USER.1).await;
    let wrong = form.post(USER.0, "niet-het-wachtwoord").await;
    assert_eq!(right.0, 403, "{}", right.2);
    assert_eq!(right, wrong, "a proxy user's right password must not be told from a wrong one");

    // A password typed into the name field: refused, and never recorded.
    let typed = "Geheim-Wachtwoord-99";
    let (status, _, _) = form.post(typed, "x").await;
    assert_eq!(status, 403);

    let failed: Vec<_> =
        proxy.events("auth_failed").into_iter().filter(|r| serde_json::to_value(r.via).unwrap() == "admin").collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert_eq!(failed[0].user.as_deref(), Some(USER.0), "an existing user is named");
    assert_eq!(failed[1].user.as_deref(), Some(USER.0));
    assert_eq!(failed[2].user, None, "a name that is no user is not recorded");
    let log = std::fs::read_to_string(proxy.audit_path()).unwrap();
    assert!(!log.contains(typed), "what was typed as the name never reaches the log");
    assert!(!log.contains(USER.1) && !log.contains("niet-het-wachtwoord"));
    proxy.stop().await;
}

// ---------------------------------------------------------------------------
// Item 4: a CA with name constraints.

/// Serves `body` over TLS with the leaf `leaves` mint for `host`, on a
/// loopback port of its own; returns that port.
async fn tls_server(leaves: &LeafCache, host: &str, body: &'static str) -> SocketAddr {
    let config = leaves.server_config(host).await.unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut buf = [0u8; 4096];
                    let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

fn constrained_ca(dir: &Path) -> Arc<CertificateAuthority> {
    let names = weerwal::ca::constraint_names(["www.aliexpress.com", "aliexpress.com", "webmail.gemeente.test"]);
    assert_eq!(names, ["aliexpress.com", "webmail.gemeente.test"]);
    Arc::new(CertificateAuthority::init_constrained(dir, "Gemeente Test", false, Some(&names)).unwrap())
}

#[tokio::test]
async fn a_name_constrained_ca_signs_banned_hosts_and_rustls_refuses_its_leaf_for_any_other() {
    // The real proxy creates its CA from the policy and intercepts a banned
    // host with it: rustls accepts that leaf.
    let proxy = TestProxy::start_with(|c| {
        c.ca.name_constraints = true;
        c.compliance = Some(weerwal::config::ComplianceConfig {
            protected: vec!["webmail.gemeente.test".into()],
            quarantine: "until-attested".into(),
            ..Default::default()
        });
    })
    .await;
    let ca = proxy.server.as_ref().unwrap().ca.clone().unwrap();
    let permitted = ca.permitted_names().expect("the CA carries name constraints").to_vec();
    assert!(permitted.contains(&"aliexpress.com".to_string()), "{permitted:?}");
    assert!(permitted.contains(&"webmail.gemeente.test".to_string()), "protected hosts too: {permitted:?}");
    assert!(!permitted.iter().any(|n| n.ends_with("rabobank.nl")));
    let r = proxy.client_trusting_ca().get("https://www.aliexpress.com/").send().await.unwrap();
    assert_eq!(r.status(), 403, "the block page over HTTPS, its leaf accepted");

    // A leaf for any other host, signed with the same CA (as a stolen
    // ca.key would), is refused by rustls/webpki.
    let dir = tempfile::tempdir().unwrap();
    let ca = constrained_ca(dir.path());
    let leaves = LeafCache::new(Arc::clone(&ca));
    let trust = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap();
    for (host, accepted) in [
        ("aliexpress.com", true),
        ("m.aliexpress.com", true),
        ("webmail.gemeente.test", true),
        ("www.rabobank.nl", false),
        ("evil-aliexpress.com", false),
        ("aliexpress.com.evil.test", false),
    ] {
        let addr = tls_server(&leaves, host, "served").await;
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(trust.clone())
            .tls_built_in_root_certs(false)
            .resolve(host, addr)
            .timeout(PATIENCE)
            .build()
            .unwrap();
        let got = client.get(format!("https://{host}:{}/", addr.port())).send().await;
        match (accepted, got) {
            (true, Ok(r)) => assert_eq!(r.text().await.unwrap(), "served", "{host}"),
            (false, Err(e)) => {
                let chain = format!("{:?}", e);
                assert!(chain.contains("NameConstraint") || chain.contains("name constraint"), "{host}: {chain}");
            }
            (true, Err(e)) => panic!("{host} must be accepted: {e:?}"),
            (false, Ok(_)) => panic!("{host} must be refused: the CA may not sign it"),
        }
    }
    proxy.stop().await;
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs `cmd` in its own process group for at most `limit`; kills the
/// group afterwards so no browser process outlives the test. Stdout.
fn run_bounded(mut cmd: Command, limit: Duration) -> String {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
    let _ = child.wait();
    reader.join().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_accepts_the_constrained_cas_leaf_for_a_banned_host_and_refuses_one_for_another() {
    assert!(Path::new(CHROMIUM).exists(), "Chromium is missing; run scripts/install-test-deps.sh");
    let dir = tempfile::tempdir().unwrap();
    let ca = constrained_ca(&dir.path().join("certs"));
    let leaves = LeafCache::new(Arc::clone(&ca));
    let banned = tls_server(&leaves, "aliexpress.com", "<p>marker-banned-host-page</p>").await;
    let other = tls_server(&leaves, "www.rabobank.nl", "<p>marker-other-host-page</p>").await;

    // Chromium trusts the CA through its NSS database in $HOME.
    let home = dir.path().join("home");
    let nssdb = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    let certutil = |args: &[&str]| {
        let out = Command::new("certutil").args(args).output().expect("certutil (libnss3-tools) is installed");
        assert!(out.status.success(), "certutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    certutil(&["-N", "-d", &db, "--empty-password"]);
    certutil(&["-A", "-d", &db, "-n", "weerwal-test", "-t", "C,,", "-i", &ca.cert_path().display().to_string()]);

    let visit = |host: &str, port: u16, profile: &str| {
        let mut cmd = Command::new(CHROMIUM);
        cmd.env("HOME", &home)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
            .arg(format!("--user-data-dir={}", dir.path().join(profile).display()))
            .arg(format!("--host-resolver-rules=MAP {host}:443 127.0.0.1:{port}"))
            .arg("--virtual-time-budget=5000")
            .arg("--dump-dom")
            .arg(format!("https://{host}/"));
        run_bounded(cmd, Duration::from_secs(120))
    };
    let page = visit("aliexpress.com", banned.port(), "p1");
    assert!(page.contains("marker-banned-host-page"), "Chromium must accept the leaf for a banned host:\n{page}");
    let page = visit("www.rabobank.nl", other.port(), "p2");
    assert!(
        !page.contains("marker-other-host-page"),
        "Chromium must refuse a leaf for a host the CA may not sign:\n{page}"
    );
}

#[test]
fn ca_init_force_recreates_the_ca_with_the_policys_domains_and_serve_warns_about_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[ca]\ndir = \"certs\"\nname_constraints = true\n");
    // An unconstrained CA first (as before this setting).
    let out = Command::new(WEERWAL).arg("--config").arg(&config).args(["ca", "init"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca = CertificateAuthority::load(&dir.path().join("certs")).unwrap();
    assert!(ca.permitted_names().is_some(), "ca init with name_constraints = true makes a constrained CA");
    // The policy gains a domain: serve warns that the CA may not sign it.
    let policy = dir.path().join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    for entry in std::fs::read_dir(crate::common::repo_policy_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, policy.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        policy.join("nieuw.toml"),
        "[[ban]]\napp = \"Nieuweapp\"\ndomains = [\"nieuw.test\"]\nadvice = \"NCSC\"\nreference = \"test\"\nsince = \"2026-01-01\"\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace("https = \"reject\"", "https = \"intercept\"");
    let text = text.replace(&format!("dir = {:?}", crate::common::repo_policy_dir()), "dir = \"policy\"");
    std::fs::write(&config, text).unwrap();
    let mut serve = Serve::start(&config);
    let line = serve.wait_log("name constraints do not permit");
    assert!(line.contains("nieuw.test") && line.contains("ca init --force"), "{line}");
    serve.stop();
    // `ca init --force` re-creates it with the new domain.
    let out = Command::new(WEERWAL).arg("--config").arg(&config).args(["ca", "init", "--force"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ca = CertificateAuthority::load(&dir.path().join("certs")).unwrap();
    assert!(ca.may_sign("www.nieuw.test") && ca.may_sign("aliexpress.com") && !ca.may_sign("www.rabobank.nl"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("may sign:    only"));
}

// ---------------------------------------------------------------------------
// Item 5: `users add` on a terminal.

#[test]
fn users_add_on_a_terminal_reads_the_password_without_echo_and_a_pipe_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[identity]\nusers_file = \"users.toml\"\n");
    const SECRET: &str = "Zeer-Geheim-42";
    // `script` gives the command a real terminal (a pty) and copies what the
    // terminal shows to its stdout; its stdin is typed into the terminal.
    let cmd = format!("{WEERWAL} --config {} users add jan", config.display());
    let mut child = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (bsdutils) is installed");
    let mut stdout = child.stdout.take().unwrap();
    let shown = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&shown);
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait_shown = |needle: &str, from: usize| {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = shown.lock().unwrap().clone();
            if s[from.min(s.len())..].contains(needle) {
                return s.len();
            }
            assert!(Instant::now() < deadline, "the terminal never showed {needle:?}:\n{s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let at = wait_shown("Password", 0);
    stdin.write_all(format!("{SECRET}\r").as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_shown("again", at);
    stdin.write_all(format!("{SECRET}\r").as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_shown("saved user jan", at);
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "users add did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = shown.lock().unwrap().clone();
    assert!(!seen.contains(SECRET), "the typed password was shown on the terminal:\n{seen}");
    let users = Users::load(&dir.path().join("users.toml")).unwrap();
    assert!(users.verify("jan", SECRET).is_some(), "the typed password was saved");

    // Piped in, as scripts do: still one line from stdin.
    let mut child = Command::new(WEERWAL)
        .arg("--config")
        .arg(&config)
        .args(["users", "add", "piet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piet-wachtwoord\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let users = Users::load(&dir.path().join("users.toml")).unwrap();
    assert!(users.verify("piet", "piet-wachtwoord").is_some());
}

// ---------------------------------------------------------------------------
// Item 6: evidence that cannot fill the disk.

/// The reference number on a block page.
fn reference(page: &str) -> Option<u64> {
    let marker = "Referentienummer: <strong>";
    let at = page.find(marker)? + marker.len();
    page[at..].split('<').next()?.parse().ok()
}

#[tokio::test]
async fn a_looping_client_is_counted_not_written_and_the_count_is_written_when_the_window_closes() {
    let proxy = TestProxy::start_with(|c| {
        c.audit.coalesce_after = 3;
        c.audit.coalesce_window = Duration::from_secs(3);
    })
    .await;
    const N: usize = 40;
    let mut refs = Vec::new();
    for _ in 0..N {
        let page = raw_response(
            proxy.addr,
            b"GET http://aliexpress.com/ HTTP/1.1\r\nHost: aliexpress.com\r\nConnection: close\r\n\r\n",
            PATIENCE,
        )
        .await;
        assert_eq!(status_of(&page), 403);
        refs.push(reference(&page).expect("every block page carries a reference number"));
    }
    // Another host is its own series.
    let other = raw_response(
        proxy.addr,
        b"GET http://m.aliexpress.com/ HTTP/1.1\r\nHost: m.aliexpress.com\r\nConnection: close\r\n\r\n",
        PATIENCE,
    )
    .await;
    assert!(reference(&other).is_some());

    let blocked = proxy.events("blocked");
    let singles: Vec<_> = blocked.iter().filter(|r| r.host.as_deref() == Some("aliexpress.com")).collect();
    assert_eq!(singles.len(), 3, "the first three attempts are written one by one, the rest counted: {singles:?}");
    let first = singles[0].seq;
    assert_eq!(&refs[..3], &singles.iter().map(|r| r.seq).collect::<Vec<_>>()[..]);
    assert!(refs[3..].iter().all(|&r| r == first), "counted attempts carry the first record's number: {refs:?}");

    // When the window closes, one record carries the count.
    let counted = || {
        proxy.events("blocked").into_iter().find(|r| r.detail.as_ref().is_some_and(|d| d.get("coalesced").is_some()))
    };
    assert!(eventually(PATIENCE, || counted().is_some()).await, "no count record after the window");
    let count = counted().unwrap();
    let detail = count.detail.clone().unwrap();
    assert_eq!(detail["coalesced"], (N - 3) as u64, "no attempt goes uncounted");
    assert_eq!(detail["first_seq"], first);
    assert_eq!(count.host.as_deref(), Some("aliexpress.com"));
    assert_eq!(count.client, singles[0].client);
    // Reports count the attempts the record stands for.
    let (groups, _) = weerwal::audit::report::report(
        &[proxy.audit_path()],
        &weerwal::audit::query::Filter::default(),
        weerwal::audit::report::GroupBy::App,
    )
    .unwrap();
    let ali = groups.iter().find(|g| g.key == "AliExpress").unwrap();
    assert_eq!(ali.blocked, N as u64 + 1);
    proxy.stop().await;
}

#[tokio::test]
async fn long_paths_are_cut_at_8_kib_in_the_record_and_the_squid_line() {
    let proxy = TestProxy::start_with(|c| {
        c.audit.log_paths = true;
        c.audit.squid_log = Some(c.audit.path.with_file_name("access.log"));
        c.proxy.max_header_bytes = 128 * 1024;
    })
    .await;
    let path = format!("/{}", "a".repeat(60 * 1024));
    let req = format!("GET http://aliexpress.com{path} HTTP/1.1\r\nHost: aliexpress.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&raw_response(proxy.addr, req.as_bytes(), PATIENCE).await), 403);
    let blocked = proxy.events("blocked");
    let recorded = blocked[0].path.as_deref().unwrap();
    assert_eq!(recorded.len(), 8 * 1024, "the path is cut at 8 KiB");
    assert!(path.starts_with(recorded));
    let line_of = || std::fs::read_to_string(proxy.audit_path().with_file_name("access.log")).unwrap_or_default();
    assert!(eventually(PATIENCE, || !line_of().is_empty()).await);
    let squid = line_of();
    assert_eq!(squid.lines().count(), 1);
    assert!(squid.len() < 8 * 1024 + 200, "the Squid line carries the cut path: {} bytes", squid.len());
    let audit = std::fs::read_to_string(proxy.audit_path()).unwrap();
    assert!(audit.lines().all(|l| l.len() < 8 * 1024 + 1024), "no record carries the whole path");
    proxy.stop().await;
}

#[tokio::test]
async fn low_free_space_is_logged_loudly_and_a_full_volume_refuses_attempts_with_a_page() {
    let dir = tempfile::tempdir().unwrap();
    // Thresholds above any real disk's free space: the guard sees the real
    // volume (statvfs) and must act on what it sees.
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = write_config(
        dir.path(),
        &format!(
            "[audit]\npath = \"logs/audit.jsonl\"\nfree_space_warn_mb = 1000000000\nfree_space_refuse_mb = 0\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"
        ),
    );
    let mut serve = Serve::start(&config);
    let line = serve.wait_log("AUDIT VOLUME LOW ON SPACE");
    assert!(line.contains("free_mb"), "{line}");
    let metrics = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let free = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weerwal_audit_free_bytes "))
        .expect("weerwal_audit_free_bytes in /metrics")
        .trim()
        .parse::<u64>()
        .unwrap();
    assert!(free > 0, "{metrics}");
    // Still recorded and blocked with a reference while only low.
    let addr = proxy_addr(&config);
    let get = |host: &'static str| async move {
        let req = format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        raw_response(addr, req.as_bytes(), PATIENCE).await
    };
    assert!(reference(&get("aliexpress.com").await).is_some());
    serve.stop();

    // Full (below free_space_refuse_mb): attempts are refused, not recorded.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("free_space_refuse_mb = 0", "free_space_refuse_mb = 1000000000");
    std::fs::write(&config, text).unwrap();
    let mut serve = Serve::start(&config);
    serve.wait_log("AUDIT VOLUME FULL");
    let before = crate::common::read_records(&dir.path().join("logs/audit.jsonl")).len();
    let page = get("aliexpress.com").await;
    assert_eq!(status_of(&page), 403, "still blocked: {page}");
    assert_eq!(reference(&page), None, "no reference number for an attempt that could not be recorded");
    serve.stop();
    let records = crate::common::read_records(&dir.path().join("logs/audit.jsonl"));
    assert!(
        records[before..].iter().all(|r| r.event != EventKind::Blocked),
        "nothing recorded for the refused attempt"
    );
}

// ---------------------------------------------------------------------------
// Item 7: one writer per audit log.

#[test]
fn a_second_serve_on_the_same_audit_log_fails_with_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_config(dir.path(), "[audit]\npath = \"logs/audit.jsonl\"\n");
    let serve = Serve::start(&first);
    // A second configuration (its own port) naming the same audit log.
    let other = dir.path().join("second");
    std::fs::create_dir_all(&other).unwrap();
    let audit = dir.path().join("logs/audit.jsonl");
    let second = write_config(&other, &format!("[audit]\npath = {audit:?}\n"));
    let mut again = Serve::spawn(&second);
    let status = again.exit().expect("the second serve must refuse to start, not run");
    assert_eq!(status.code(), Some(2), "{}", again.log());
    let log = again.wait_log("another weerwal is already writing this audit log");
    assert!(log.contains("another weerwal is already writing this audit log"), "{log}");
    assert!(log.contains("audit.jsonl"), "{log}");
    serve.stop();
    // Once the first has stopped, the log is free again.
    let s = Serve::start(&second);
    s.stop();
    let records = crate::common::read_records(&audit);
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash, "one chain");
    }
}

// ---------------------------------------------------------------------------
// Item 8: `weerwal reload` signals only a weerwal serve of this configuration.

#[test]
fn reload_signals_only_a_weerwal_serve_of_this_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[audit]\npath = \"logs/audit.jsonl\"\n");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let pid_file = dir.path().join("logs/weerwal.pid");
    // A stale pid file naming some other process (SIGHUP would end it).
    let mut bystander = Command::new("sleep").arg("600").spawn().unwrap();
    let reload = || Command::new(WEERWAL).arg("--config").arg(&config).arg("reload").output().unwrap();
    std::fs::write(&pid_file, format!("{}\n", bystander.id())).unwrap();
    let out = reload();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no weerwal is running"), "{out:?}");
    // While a serve of this configuration runs, a pid file naming another
    // process is still not believed.
    let serve = Serve::start(&config);
    // serve writes its pid file once it runs: wait for that, then spoil it.
    let own = format!("{}\n", serve.child.id());
    let deadline = Instant::now() + PATIENCE;
    while std::fs::read_to_string(&pid_file).unwrap_or_default() != own {
        assert!(Instant::now() < deadline, "serve wrote no pid file");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&pid_file, format!("{}\n", bystander.id())).unwrap();
    let out = reload();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("no weerwal is running") && err.contains("not a `weerwal serve`"), "{err}");
    assert!(bystander.try_wait().unwrap().is_none(), "the process the stale pid file names was not signalled");
    // The real one is signalled.
    std::fs::write(&pid_file, format!("{}\n", serve.child.id())).unwrap();
    let out = reload();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut serve = serve;
    serve.wait_log("reloaded");
    serve.stop();
    let _ = bystander.kill();
    let _ = bystander.wait();
}

// ---------------------------------------------------------------------------
// Item 11: off the runtime's threads.

/// A policy folder with one app of `n` domains.
fn big_policy(dir: &Path, n: usize) -> PathBuf {
    let policy = dir.join("bigpolicy");
    std::fs::create_dir_all(&policy).unwrap();
    let mut t = String::from(
        "[[ban]]\napp = \"Groot\"\nadvice = \"NCSC\"\nreference = \"test\"\nsince = \"2026-01-01\"\ndomains = [\n",
    );
    for i in 0..n {
        t.push_str(&format!("\"d{i}.groot.test\",\n"));
    }
    t.push_str("]\n");
    std::fs::write(policy.join("groot.toml"), t).unwrap();
    policy
}

#[tokio::test]
async fn proxy_pac_is_generated_once_per_policy_not_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let policy = big_policy(dir.path(), 100_000);
    let proxy = TestProxy::start_with(|c| c.policy.dir = policy).await;
    let client = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap();
    let url = format!("{}/proxy.pac", proxy.url());
    let started = Instant::now();
    let first = client.get(&url).send().await.unwrap();
    let cold = started.elapsed();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let body = first.text().await.unwrap();
    assert!(body.contains("d99999.groot.test"));
    let mut times = Vec::new();
    for i in 0..9 {
        let started = Instant::now();
        let mut rb = client.get(&url);
        if i % 2 == 0 {
            rb = rb.header("if-none-match", &etag);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let again = r.text().await.unwrap();
        times.push(started.elapsed());
        if status == 200 {
            assert_eq!(again, body, "the same file");
        } else {
            assert_eq!(status, 304);
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!("/proxy.pac with 100k domains: first {cold:?}, then median {median:?}");
    assert!(median * 4 < cold, "later requests must not rebuild the file: first {cold:?}, median {median:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_builds_the_policy_off_the_runtime_so_requests_are_answered_meanwhile() {
    // One runtime thread (the default for #[tokio::test]): blocking it for
    // the build would stall every request.
    let dir = tempfile::tempdir().unwrap();
    let policy = big_policy(dir.path(), 150_000);
    let proxy = TestProxy::start_with(|c| c.policy.dir = policy.clone()).await;
    std::fs::write(
        policy.join("nieuw.toml"),
        "[[ban]]\napp = \"Nieuweapp\"\ndomains = [\"nieuw.test\"]\nadvice = \"NCSC\"\nreference = \"test\"\nsince = \"2026-01-01\"\n",
    )
    .unwrap();
    let reloader = proxy.server.as_ref().unwrap().reloader();
    let client = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap();
    let status_page = format!("{}/", proxy.url());
    let started = Instant::now();
    let reload = tokio::spawn(async move { reloader.reload().await.map(|r| r.policy_changed) });
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while !reload.is_finished() {
        let t = Instant::now();
        assert_eq!(client.get(&status_page).send().await.unwrap().status(), 200);
        slowest = slowest.max(t.elapsed());
        answered += 1;
    }
    let took = started.elapsed();
    assert!(reload.await.unwrap().unwrap(), "the policy changed");
    eprintln!("reload took {took:?}; {answered} requests answered meanwhile, the slowest in {slowest:?}");
    assert!(took > Duration::from_millis(300), "the build must take a while for this test to mean anything: {took:?}");
    assert!(slowest * 3 < took, "a request waited {slowest:?} of the {took:?} reload");
    let r = proxy.client().get("http://nieuw.test/").send().await.unwrap();
    assert_eq!(r.status(), 403);
    proxy.stop().await;
}

#[tokio::test]
async fn the_dashboard_does_not_read_the_users_file_per_request() {
    let dir = tempfile::tempdir().unwrap();
    const OFFICER: (&str, &str) = ("fbakker", "officer-wachtwoord-1");
    let mut users = Users::default();
    users.upsert(OFFICER.0, OFFICER.1, Role::Officer, vec![]).unwrap();
    users.save(&dir.path().join("users.toml")).unwrap();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = write_config(
        dir.path(),
        &format!("[identity]\nusers_file = \"users.toml\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"),
    );
    // strace records every system call of serve that names a file.
    let trace = dir.path().join("trace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=%file", "-o"])
        .arg(&trace)
        .arg(WEERWAL)
        .arg("--config")
        .arg(&config)
        .arg("serve");
    let mut serve = Serve::spawn_command(cmd);
    serve.wait_log("weerwal proxy running");
    let users_seen =
        || std::fs::read_to_string(&trace).unwrap_or_default().lines().filter(|l| l.contains("users.toml")).count();

    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let form = LoginForm::open(admin).await;
    let (status, headers, body) = form.post(OFFICER.0, OFFICER.1).await;
    assert_eq!(status, 303, "{body}");
    let session = headers
        .iter()
        .find_map(|h| h.strip_prefix("set-cookie: weerwal_admin="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let client = reqwest::Client::builder().no_proxy().timeout(PATIENCE).build().unwrap();
    let before = users_seen();
    let started = Instant::now();
    const N: usize = 100;
    for _ in 0..N {
        let r = client
            .get(format!("http://{admin}/attempts"))
            .header("cookie", format!("weerwal_admin={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let took = started.elapsed();
    let during = users_seen() - before;
    eprintln!("{N} dashboard pages in {took:?}: the users file was looked at {during} times");
    // Once a second at most (the watcher), never once per page.
    assert!(during as u64 <= took.as_secs() + 3, "{during} accesses of users.toml in {took:?} for {N} pages");
    assert!(during < N / 2, "{during}");

    // And a change is still picked up: the officer is demoted.
    let mut users = Users::load(&dir.path().join("users.toml")).unwrap();
    users.upsert(OFFICER.0, OFFICER.1, Role::User, vec![]).unwrap();
    users.save(&dir.path().join("users.toml")).unwrap();
    let gone = || async {
        let r = client
            .get(format!("http://{admin}/attempts"))
            .header("cookie", format!("weerwal_admin={session}"))
            .send()
            .await
            .unwrap();
        r.status() != 200
    };
    let deadline = Instant::now() + PATIENCE;
    while !gone().await {
        assert!(Instant::now() < deadline, "a demoted officer kept the dashboard");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = std::fs::read_to_string(dir.path().join("logs/weerwal.pid")).unwrap();
    let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    assert!(serve.exit().is_some(), "serve did not stop");
}

// ---------------------------------------------------------------------------
// Item 12: removed means removed at once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_check_that_started_before_a_reload_cannot_bring_a_removed_user_back() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users_path = dir.path().join("users.toml");
    // A hash slow enough that a reload fits inside one check: its cost is
    // taken from how long a check takes on this machine now.
    let salt = SaltString::encode_b64(b"weerwal-test-salt").unwrap();
    let hasher = |t: u32| {
        let params = argon2::Params::new(8 * 1024, t, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
    };
    let probe = Instant::now();
    hasher(1).hash_password(b"probe", &salt).unwrap();
    let per_pass = probe.elapsed().max(Duration::from_millis(1));
    let passes = (Duration::from_secs(4).as_millis() / per_pass.as_millis().max(1)).clamp(2, 2000) as u32;
    let slow_hash = hasher(passes).hash_password(b"jan-wachtwoord", &salt).unwrap().to_string();
    let mut users = Users::default();
    users.upsert("jan", "placeholder", Role::User, vec![]).unwrap();
    users.upsert("piet", "piet-wachtwoord", Role::User, vec![]).unwrap();
    users.save(&users_path).unwrap();
    let text = std::fs::read_to_string(&users_path).unwrap();
    let jan_hash = Users::load(&users_path).unwrap().get("jan").unwrap().hash.clone();
    std::fs::write(&users_path, text.replace(&jan_hash, &slow_hash)).unwrap();
    let timed = Instant::now();
    assert!(Users::load(&users_path).unwrap().verify("jan", "jan-wachtwoord").is_some());
    let check = timed.elapsed();

    let proxy = TestProxy::start_with(|c| {
        c.identity.auth = AuthMode::Basic;
        c.identity.users_file = users_path.clone();
    })
    .await;
    let jan = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap().basic_auth("jan", "jan-wachtwoord"))
        .timeout(PATIENCE * 2)
        .build()
        .unwrap();
    let url = origin.url("/jan");
    let started = Instant::now();
    let first = tokio::spawn({
        let (jan, url) = (jan.clone(), url.clone());
        async move { (jan.get(url).send().await.unwrap().status().as_u16(), Instant::now()) }
    });
    // Into the check (a quarter of its measured time), jan is removed.
    tokio::time::sleep(check / 4).await;
    let mut users = Users::load(&users_path).unwrap();
    users.remove("jan").unwrap();
    users.save(&users_path).unwrap();
    proxy.server.as_ref().unwrap().reloader().reload().await.unwrap();
    let reloaded = Instant::now();
    let (status, answered) = first.await.unwrap();
    assert!(answered > reloaded, "the reload must land inside the check for this test to mean anything");
    assert!(answered - started >= check / 2, "the check ran on the old users file ({:?})", answered - started);
    assert_eq!(status, 407, "a check that started before the removal does not let the removed user in");
    // And nothing was remembered for them.
    let again = jan.get(&url).send().await.unwrap().status().as_u16();
    assert_eq!(again, 407, "the removed user is not back from a cache");
    assert!(origin.requests().is_empty(), "nothing of jan's reached the origin");
    proxy.stop().await;
}
