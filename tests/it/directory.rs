//! Directory identity (`auth = "ldap"`) against a real OpenLDAP `slapd`,
//! started here in a temporary directory on free loopback ports with its own
//! `slapd.conf` (mdb backend, the memberOf overlay so `memberOf` works as in
//! Active Directory), loaded with an LDIF of users and groups over LDAP,
//! LDAPS and StartTLS with a test CA made here; stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use weerwal::config::{AuthMode, Config};

use crate::common::{Origin, TestProxy};
use crate::slapd::{test_pki, Slapd, SUFFIX, SVC_DN, SVC_PW};

/// A policy where the test origin's address is a banned "app", exempted for
/// the directory group `toezicht`.
fn policy(dir: &Path) -> PathBuf {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("test.toml"),
        r#"
[[ban]]
app = "Testapp"
domains = ["127.0.0.1"]
advice = "AIVD"
reference = "test"
since = "2023-01-01"

[[ban]]
app = "AliExpress"
domains = ["aliexpress.com"]
advice = "AIVD"
reference = "test"
since = "2023-07-20"

[[exemption]]
who = ["group:toezicht"]
apps = ["Testapp"]
reason = "inspectie en toezicht"
until = "2099-12-31"
"#,
    )
    .unwrap();
    policy
}

fn client_as(proxy: &TestProxy, user: &str, password: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap().basic_auth(user, password))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn proxy_for(slapd: &Slapd, adjust: impl FnOnce(&mut Config)) -> TestProxy {
    TestProxy::start_with(|c| {
        let dir = c.audit.path.parent().unwrap().parent().unwrap().to_path_buf();
        c.identity.auth = AuthMode::Ldap;
        c.identity.ldap = Some(slapd.config(&dir));
        c.policy.dir = policy(&dir);
        adjust(c);
    })
    .await
}

#[tokio::test]
async fn directory_users_are_checked_named_in_records_and_exempted_by_group() {
    let slapd = Slapd::start();
    let origin = Origin::start().await;
    let proxy = proxy_for(&slapd, |_| {}).await;
    // No credentials: 407 with a challenge.
    assert_eq!(proxy.client().get(origin.url("/")).send().await.unwrap().status(), 407);
    // A directory user is blocked and named in the record (as the directory spells the account).
    let jan = client_as(&proxy, "JDevries", "wachtwoord-jan");
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    let blocked = proxy.events("blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].user.as_deref(), Some("jdevries"));
    // Wrong password: 407 and auth_failed naming the account, never the password.
    let resp = client_as(&proxy, "jdevries", "fout-wachtwoord").get(origin.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 407);
    let failed = proxy.events("auth_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].user.as_deref(), Some("jdevries"));
    // Injection names and an empty password never authenticate anyone.
    for (name, password) in [
        ("*)(uid=*))(|(uid=*", "wachtwoord-jan"),
        ("*", "wachtwoord-jan"),
        ("jdevries)(uid=*", "wachtwoord-jan"),
        ("jdevries", ""),
        ("*", ""),
    ] {
        let resp = client_as(&proxy, name, password).get(origin.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 407, "{name:?} / {password:?}");
    }
    let log = std::fs::read_to_string(proxy.audit_path()).unwrap();
    assert!(!log.contains("fout-wachtwoord") && !log.contains("wachtwoord-jan"), "{log}");
    assert!(origin.requests().is_empty());
    // group:toezicht exempts its member (the origin is reached, an exempted record) ...
    let toez = client_as(&proxy, "toezichthouder", "wachtwoord-toez");
    assert_eq!(toez.get(origin.url("/inspectie")).send().await.unwrap().status(), 200);
    assert_eq!(origin.requests().len(), 1);
    let exempted = proxy.events("exempted");
    assert_eq!(exempted.len(), 1);
    assert_eq!(exempted[0].user.as_deref(), Some("toezichthouder"));
    // ... and not someone outside the group.
    assert_eq!(jan.get(origin.url("/inspectie")).send().await.unwrap().status(), 403);
    assert_eq!(origin.requests().len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn directory_down_cached_users_keep_working_and_new_logins_get_a_503_page() {
    let mut slapd = Slapd::start();
    let origin = Origin::start().await;
    // StartTLS on ldap:// this time, verified against the test CA.
    let proxy = proxy_for(&slapd, |c| {
        let l = c.identity.ldap.as_mut().unwrap();
        l.url = slapd.ldap_url();
        l.starttls = true;
    })
    .await;
    let jan = client_as(&proxy, "jdevries", "wachtwoord-jan");
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    let errors_before = weerwal::metrics::metrics().directory_errors.load(std::sync::atomic::Ordering::Relaxed);
    slapd.stop();
    // The cached user keeps working (blocked as before, still named).
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    assert!(proxy.events("blocked").iter().all(|r| r.user.as_deref() == Some("jdevries")));
    // A changed password is not taken from the cache: it has to be checked.
    let resp = client_as(&proxy, "jdevries", "ander-wachtwoord").get(origin.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    // A new login gets the 503 page saying the directory cannot be reached, not a 407.
    let resp = client_as(&proxy, "ajansen", "wachtwoord-anna").get(origin.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("proxy-authenticate").is_none());
    let page = resp.text().await.unwrap();
    assert!(page.contains("directory (Active Directory) cannot be reached"), "{page}");
    assert!(proxy.events("auth_failed").is_empty(), "an outage is not a failed login");
    let errors_after = weerwal::metrics::metrics().directory_errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(errors_after >= errors_before + 2, "{errors_before} -> {errors_after}");
    assert!(origin.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn a_directory_whose_certificate_is_not_from_ca_file_is_not_trusted() {
    let slapd = Slapd::start();
    let origin = Origin::start().await;
    let other = tempfile::tempdir().unwrap();
    test_pki(other.path());
    let proxy =
        proxy_for(&slapd, |c| c.identity.ldap.as_mut().unwrap().ca_file = Some(other.path().join("ca.pem"))).await;
    let resp = client_as(&proxy, "jdevries", "wachtwoord-jan").get(origin.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 503, "an unverified directory is an unreachable one");
    proxy.stop().await;
}

#[test]
fn plain_ldap_needs_allow_plaintext() {
    let base = "[identity]\nauth = \"ldap\"\n[identity.ldap]\nbind_dn = \"cn=svc\"\nbase_dn = \"dc=x\"\n";
    let err = Config::parse(Path::new("w.toml"), &format!("{base}url = \"ldap://dc1\"\n")).unwrap_err().to_string();
    assert!(err.starts_with("w.toml:6: url:") && err.contains("allow_plaintext"), "{err}");
    Config::parse(Path::new("w.toml"), &format!("{base}url = \"ldap://dc1\"\nallow_plaintext = true\n")).unwrap();
    Config::parse(Path::new("w.toml"), &format!("{base}url = \"ldap://dc1\"\nstarttls = true\n")).unwrap();
    Config::parse(Path::new("w.toml"), &format!("{base}url = \"ldaps://dc1\"\n")).unwrap();
    let err = Config::parse(Path::new("w.toml"), "[identity]\nauth = \"ldap\"\n").unwrap_err().to_string();
    assert!(err.contains("[identity.ldap]"), "{err}");
    let err = Config::parse(Path::new("w.toml"), &format!("{base}url = \"ldaps://dc1\"\nuser_filter = \"(uid=x)\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("w.toml:7: user_filter:"), "{err}");
}

/// A dashboard client without a cookie store: cookies kept by hand.
struct Dash {
    base: String,
    client: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
    set_cookies: Vec<String>,
}

impl Dash {
    fn new(base: String, ca: Option<&Path>) -> Dash {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        if let Some(ca) = ca {
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap());
        }
        Dash { base, client: b.build().unwrap(), cookies: Default::default(), set_cookies: Vec::new() }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> (u16, String, String) {
        let c: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let resp = rb.header("cookie", c.join("; ")).send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap().to_string();
            let (pair, _) = c.split_once(';').unwrap_or((&c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_string(), v.to_string());
            self.set_cookies.push(c);
        }
        (status, location, resp.text().await.unwrap())
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        let rb = self.client.get(format!("{}{path}", self.base));
        self.send(rb).await
    }

    async fn login(&mut self, name: &str, password: &str) -> (u16, String, String) {
        let (status, _, page) = self.get("/login").await;
        assert_eq!(status, 200, "{page}");
        let marker = "name=\"token\" value=\"";
        let at = page.find(marker).unwrap() + marker.len();
        let token = page[at..].split('"').next().unwrap().to_string();
        let body = format!(
            "token={token}&name={}&password={}",
            name,
            password.replace('%', "%25").replace('&', "%26").replace('+', "%2B")
        );
        let rb = self
            .client
            .post(format!("{}/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(rb).await
    }
}

#[tokio::test]
async fn directory_officers_use_the_dashboard_over_https_see_the_charts_and_lose_it_when_removed() {
    let mut slapd = Slapd::start();
    let pki = slapd.dir.path().to_path_buf();
    let proxy = proxy_for(&slapd, |c| {
        // A break-glass officer in the users file, beside the directory's.
        crate::common::with_dashboard(c, &[("noodofficier", "nood-wachtwoord-1", weerwal::identity::Role::Officer)]);
        c.admin = Some(weerwal::config::AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: Some(pki.join("server.pem")),
            key: Some(pki.join("server.key")),
            allow_plaintext: false,
        });
    })
    .await;
    // Attempts to chart: two by jdevries on AliExpress, one exempted for toezichthouder.
    let jan = client_as(&proxy, "jdevries", "wachtwoord-jan");
    for _ in 0..2 {
        assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    }
    let admin = proxy.server.as_ref().unwrap().admin_addrs[0];
    let mut d = Dash::new(format!("https://localhost:{}", admin.port()), Some(&slapd.ca_file()));
    // A directory user outside the officer group: no dashboard.
    let (status, _, _) = d.login("ajansen", "wachtwoord-anna").await;
    assert_eq!(status, 403);
    let (status, _, _) = d.login("fbakker", "verkeerd").await;
    assert_eq!(status, 403);
    let (status, location, body) = d.login("fbakker", "wachtwoord-officier").await;
    assert_eq!((status, location.as_str()), (303, "/attempts"), "{body}");
    let session = d.set_cookies.iter().find(|c| c.starts_with("weerwal_admin=")).unwrap();
    assert!(session.contains("; Secure") && session.contains("HttpOnly"), "{session}");
    // The charts: SVG images, each followed by a table with logs report's numbers.
    let (status, _, page) = d.get("/charts").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches("<svg").count(), 2, "{page}");
    let files = vec![proxy.audit_path()];
    let (by_day, _) = weerwal::audit::report::report(
        &files,
        &weerwal::audit::query::Filter::default(),
        weerwal::audit::report::GroupBy::Day,
    )
    .unwrap();
    assert_eq!(by_day.len(), 1);
    let day_row =
        format!("<tr><th scope=\"row\">{}</th><td class=\"num\">2</td><td class=\"num\">2</td></tr>", by_day[0].key);
    assert!(page.contains(&day_row), "{day_row} not in {page}");
    assert!(page.contains("<tr><th scope=\"row\">jdevries</th><td class=\"num\">2</td></tr>"), "{page}");
    // Removed from the group: the next click is refused and the session is gone.
    slapd.remove_member("weerwal-officers", "fbakker");
    let (status, _, _) = d.get("/charts").await;
    assert_eq!(status, 403);
    let (status, location, _) = d.get("/attempts").await;
    assert_eq!((status, location.as_str()), (303, "/login"));
    let (status, _, _) = d.login("fbakker", "wachtwoord-officier").await;
    assert_eq!(status, 403);
    // The directory down: a directory officer's next click is refused (503,
    // said so), nobody from the directory can log in; the break-glass
    // officer from the users file can.
    let mut piet = Dash::new(format!("https://localhost:{}", admin.port()), Some(&slapd.ca_file()));
    let (status, _, _) = piet.login("pdekker", "wachtwoord-piet").await;
    assert_eq!(status, 303);
    assert_eq!(piet.get("/charts").await.0, 200);
    slapd.stop();
    let (status, _, page) = piet.get("/charts").await;
    assert_eq!(status, 503, "{page}");
    let mut d = Dash::new(format!("https://localhost:{}", admin.port()), Some(&slapd.ca_file()));
    let (status, _, page) = d.login("ajansen", "wachtwoord-anna").await;
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("cannot be reached"), "{page}");
    let (status, location, page) = d.login("noodofficier", "nood-wachtwoord-1").await;
    assert_eq!((status, location.as_str()), (303, "/attempts"), "{page}");
    let (status, _, _) = d.get("/charts").await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_plaintext_dashboard_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::common::test_config(dir.path());
    crate::common::with_dashboard(
        &mut config,
        &[("officier", "wachtwoord-officier", weerwal::identity::Role::Officer)],
    );
    config.admin.as_mut().unwrap().listen = "0.0.0.0:0".parse().unwrap();
    let err = weerwal::serve::Server::start(config.clone()).await.err().expect("refused").to_string();
    assert!(err.contains("admin.allow_plaintext"), "{err}");
    config.admin.as_mut().unwrap().allow_plaintext = true;
    let server = weerwal::serve::Server::start(config).await.expect("allowed when asked for");
    server.stop().await;
}

/// `weerwal users test NAME` with the password on stdin.
fn users_test(config: &Path, name: &str, password: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weerwal"))
        .args(["--config", &config.display().to_string(), "users", "test", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn users_test_says_whether_the_directory_accepts_and_which_groups_it_sees() {
    let slapd = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ldap.pw"), format!("{SVC_PW}\n")).unwrap();
    let config = dir.path().join("weerwal.toml");
    std::fs::write(
        &config,
        format!(
            "[identity]\nauth = \"ldap\"\n[identity.ldap]\nurl = \"{}\"\nstarttls = true\nca_file = \"{}\"\nbind_dn = \"{SVC_DN}\"\n\
             bind_password_file = \"ldap.pw\"\nbase_dn = \"{SUFFIX}\"\nuser_filter = \"(&(objectClass=inetOrgPerson)(uid={{user}}))\"\n\
             officer_group = \"weerwal-officers\"\n",
            slapd.ldap_url(),
            slapd.ca_file().display()
        ),
    )
    .unwrap();
    let (code, out) = users_test(&config, "toezichthouder", "wachtwoord-toez");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepted: toezichthouder") && out.contains("groups:   raad, toezicht"), "{out}");
    assert!(out.contains("officer:  no"), "{out}");
    let (code, out) = users_test(&config, "fbakker", "wachtwoord-officier");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("officer:  yes (member of weerwal-officers)"), "{out}");
    let (code, out) = users_test(&config, "fbakker", "fout");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("refused") && !out.contains("fout"), "{out}");
    let (code, out) = users_test(&config, "*", "wachtwoord-officier");
    assert_eq!(code, 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_directory_officer_sees_the_chart_and_is_locked_out_when_removed_from_the_group() {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    let chromium = "/usr/bin/chromium";
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let install = "run `bash scripts/install-test-deps.sh` (as root) first";
    assert!(Path::new(chromium).exists(), "Chromium is missing; {install}");
    assert!(driver.join("node_modules/playwright-core/package.json").exists(), "playwright-core is missing; {install}");
    let slapd = Slapd::start();
    let proxy = proxy_for(&slapd, |c| {
        c.admin = Some(weerwal::config::AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() });
    })
    .await;
    let jan = client_as(&proxy, "jdevries", "wachtwoord-jan");
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    let admin = proxy.server.as_ref().unwrap().admin_addrs[0];
    let profile = tempfile::tempdir().unwrap();
    let go = profile.path().join("go");
    let input = serde_json::json!({
        "base": format!("http://{admin}"),
        "user": "fbakker",
        "password": "wachtwoord-officier",
        "chromium": chromium,
        "profile": profile.path().join("profile"),
        "continue_file": go,
    });
    let mut child = Command::new("node")
        .arg("directory.mjs")
        .current_dir(&driver)
        .env("HOME", profile.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("node: {e}; {install}"));
    let pgid = child.id();
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let kill = move || {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
    };
    let next = |rx: &std::sync::mpsc::Receiver<String>| -> serde_json::Value {
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
            kill();
            panic!("the browser said nothing within 120 s")
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let first = tokio::task::block_in_place(|| next(&rx));
    if first["ok"] != true {
        kill();
        panic!("the browser run failed: {first:#}\n{}", stderr_t.join().unwrap_or_default());
    }
    let seen = &first["seen"];
    assert_eq!(seen["after_login_url"], "/attempts", "{seen:#}");
    assert_eq!(seen["chart_visible"], true, "{seen:#}");
    assert!(seen["chart_width"].as_u64().unwrap() > 200, "{seen:#}");
    assert_eq!(seen["bars"], 1, "one day, one app: {seen:#}");
    assert_eq!(seen["top_chart_visible"], true, "{seen:#}");
    let rows: Vec<&str> = seen["table_rows"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].contains("AliExpress") && rows[1].ends_with("1 1"), "{rows:?}");
    slapd.remove_member("weerwal-officers", "fbakker");
    std::fs::write(&go, "").unwrap();
    let second = tokio::task::block_in_place(|| next(&rx));
    kill();
    let _ = child.wait();
    assert_eq!(second["ok"], true, "{second:#}");
    assert_eq!(second["after"]["status"], 403, "{second:#}");
    assert_eq!(second["after"]["menu_links"], 0, "{second:#}");
    proxy.stop().await;
}
