//! Users, sessions and exemptions through the real proxy.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::common::{Origin, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weerwal::audit::{EventKind, Record};
use weerwal::config::{AuthMode, Config};
use weerwal::identity::{Role, Users};

fn users_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("users.toml");
    let mut users = Users::default();
    users.upsert("jan", "wachtwoord-jan", Role::User, vec![]).unwrap();
    users.upsert("inspecteur1", "wachtwoord-insp", Role::User, vec![]).unwrap();
    users.upsert("toezichthouder", "wachtwoord-toez", Role::User, vec!["toezicht".into()]).unwrap();
    users.save(&path).unwrap();
    path
}

fn client_as(proxy: &TestProxy, user: &str, password: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap().basic_auth(user, password))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test]
async fn basic_auth_challenges_refuses_and_names_the_user() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        c.identity.auth = AuthMode::Basic;
        c.identity.users_file = users_file(c.audit.path.parent().unwrap().parent().unwrap());
    })
    .await;
    // No credentials: 407 with a challenge, nothing forwarded, nothing logged.
    let resp = proxy.client().get(origin.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 407);
    let challenge = resp.headers().get("proxy-authenticate").unwrap().to_str().unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    // Wrong password: 407 and an auth_failed record without the password.
    let resp = client_as(&proxy, "jan", "fout-wachtwoord").get(origin.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 407);
    let failed = proxy.events("auth_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].user.as_deref(), Some("jan"));
    assert!(!std::fs::read_to_string(proxy.audit_path()).unwrap().contains("fout-wachtwoord"));
    assert!(origin.requests().is_empty());
    // Right password: forwarded; a blocked attempt carries the user.
    let jan = client_as(&proxy, "jan", "wachtwoord-jan");
    assert_eq!(jan.get(origin.url("/ok")).send().await.unwrap().status(), 200);
    assert_eq!(origin.requests().len(), 1);
    assert!(origin.requests()[0].headers.get("proxy-authorization").is_none(), "credentials never reach the origin");
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    let blocked = proxy.events("blocked");
    assert_eq!(blocked[0].user.as_deref(), Some("jan"));
    assert!(blocked[0].session.as_deref().is_some_and(|s| s.len() == 32));
    // CONNECT needs credentials too.
    let raw = crate::common::raw_response(
        proxy.addr,
        b"CONNECT www.tiktok.com:443 HTTP/1.1\r\nHost: www.tiktok.com:443\r\n\r\n",
        crate::common::PATIENCE,
    )
    .await;
    assert_eq!(crate::common::status_of(&raw), 407, "{raw}");
    proxy.stop().await;
}

#[tokio::test]
async fn two_users_from_one_address_are_two_sessions_and_idle_sessions_end_with_counts() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        c.identity.auth = AuthMode::Basic;
        c.identity.users_file = users_file(c.audit.path.parent().unwrap().parent().unwrap());
        c.identity.session_idle = Duration::from_millis(600);
    })
    .await;
    let jan = client_as(&proxy, "jan", "wachtwoord-jan");
    let insp = client_as(&proxy, "inspecteur1", "wachtwoord-insp");
    let toez = client_as(&proxy, "toezichthouder", "wachtwoord-toez");
    for url in ["http://aliexpress.com/", "http://m.aliexpress.com/", "http://vk.com/"] {
        assert_eq!(jan.get(url).send().await.unwrap().status(), 403);
    }
    assert_eq!(insp.get("http://www.tiktok.com/").send().await.unwrap().status(), 403);
    // Only allowed browsing: no trace at all.
    assert_eq!(toez.get(origin.url("/")).send().await.unwrap().status(), 200);

    let starts = proxy.events("session_start");
    assert_eq!(starts.len(), 2, "{starts:?}");
    let blocked = proxy.events("blocked");
    let jan_sessions: std::collections::HashSet<_> =
        blocked.iter().filter(|r| r.user.as_deref() == Some("jan")).map(|r| r.session.clone()).collect();
    let insp_sessions: std::collections::HashSet<_> =
        blocked.iter().filter(|r| r.user.as_deref() == Some("inspecteur1")).map(|r| r.session.clone()).collect();
    assert_eq!(jan_sessions.len(), 1);
    assert_eq!(insp_sessions.len(), 1);
    assert_ne!(jan_sessions, insp_sessions);

    // After the idle time the sweeper ends them with their counts.
    let mut ends = Vec::new();
    for _ in 0..100 {
        ends = proxy.events("session_end");
        if ends.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ends.len(), 2, "{ends:?}");
    let jan_end = ends.iter().find(|r| r.user.as_deref() == Some("jan")).unwrap();
    let detail = jan_end.detail.as_ref().unwrap();
    assert_eq!(detail["attempts"]["AliExpress"], 2);
    assert_eq!(detail["attempts"]["VKontakte"], 1);
    assert_eq!(detail["distinct_hosts"], 3);
    assert_eq!(jan_end.session, jan_sessions.into_iter().next().unwrap());
    assert!(proxy.records().iter().all(|r| r.user.as_deref() != Some("toezichthouder")));
    proxy.stop().await;
}

/// A policy where the test origin's address is a banned "app", so an
/// exempted request can really reach it.
fn exemption_policy(dir: &Path, until: &str) -> std::path::PathBuf {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("test.toml"),
        format!(
            r#"
[[ban]]
app = "Testapp"
domains = ["127.0.0.1"]
advice = "AIVD"
reference = "test"
since = "2023-01-01"

[[ban]]
app = "TikTok"
domains = ["tiktok.com"]
advice = "AIVD"
reference = "test"
since = "2023-03-21"

[[exemption]]
who = ["user:inspecteur1", "group:toezicht"]
apps = ["Testapp"]
reason = "inspectie en toezicht"
until = "{until}"
"#
        ),
    )
    .unwrap();
    policy
}

#[tokio::test]
async fn exemption_applies_to_named_users_groups_and_apps_until_its_date() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        let dir = c.audit.path.parent().unwrap().parent().unwrap().to_path_buf();
        c.identity.auth = AuthMode::Basic;
        c.identity.users_file = users_file(&dir);
        c.policy.dir = exemption_policy(&dir, "2099-12-31");
    })
    .await;
    let insp = client_as(&proxy, "inspecteur1", "wachtwoord-insp");
    let toez = client_as(&proxy, "toezichthouder", "wachtwoord-toez");
    let jan = client_as(&proxy, "jan", "wachtwoord-jan");
    assert_eq!(insp.get(origin.url("/insp")).send().await.unwrap().status(), 200);
    assert_eq!(toez.get(origin.url("/toez")).send().await.unwrap().status(), 200);
    assert_eq!(jan.get(origin.url("/jan")).send().await.unwrap().status(), 403);
    // Exempted for Testapp only, not for TikTok.
    assert_eq!(insp.get("http://www.tiktok.com/").send().await.unwrap().status(), 403);
    let uris: Vec<String> = origin.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/insp", "/toez"]);
    let exempted = proxy.events("exempted");
    assert_eq!(exempted.len(), 2);
    assert_eq!(exempted[0].user.as_deref(), Some("inspecteur1"));
    assert_eq!(exempted[0].reason.as_deref(), Some("inspectie en toezicht"));
    proxy.stop().await;

    // An exemption past its date no longer applies.
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        let dir = c.audit.path.parent().unwrap().parent().unwrap().to_path_buf();
        c.identity.auth = AuthMode::Basic;
        c.identity.users_file = users_file(&dir);
        c.policy.dir = exemption_policy(&dir, "2020-01-01");
    })
    .await;
    let insp = client_as(&proxy, "inspecteur1", "wachtwoord-insp");
    assert_eq!(insp.get(origin.url("/insp")).send().await.unwrap().status(), 403);
    assert!(origin.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn app_signature_is_logged_as_app_detected_and_blocked() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let resp = proxy
        .client()
        .get(origin.url("/chat"))
        .header("user-agent", "Mozilla/5.0 (Linux; Android 13) MicroMessenger/8.0.40")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(origin.requests().is_empty());
    let detected = proxy.events("app_detected");
    assert_eq!(detected.len(), 1);
    assert_eq!(detected[0].app.as_deref(), Some("WeChat"));
    assert_eq!(proxy.events("blocked").len(), 1);
    proxy.stop().await;
}

#[test]
fn users_add_reads_the_password_from_stdin_only() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_weerwal");
    let mut child = Command::new(bin)
        .current_dir(dir.path())
        .args(["users", "add", "jdevries", "--role", "officer", "--group", "raad"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"een-lang-wachtwoord\n").unwrap();
    assert!(child.wait().unwrap().success());
    let users = Users::load(&dir.path().join("users.toml")).unwrap();
    let u = users.get("jdevries").unwrap();
    assert_eq!(u.role, Role::Officer);
    assert!(users.verify("jdevries", "een-lang-wachtwoord").is_some());
    // There is no way to pass it as an argument.
    let out =
        Command::new(bin).current_dir(dir.path()).args(["users", "add", "x", "--password", "p"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let list = Command::new(bin).current_dir(dir.path()).args(["users", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("jdevries\tofficer\traad"), "{text}");
    assert!(!text.contains("argon2"));
}

/// Sends `request` to the proxy from a client socket bound to `from` (any
/// 127.0.0.0/8 address is local on Linux) and reads the whole answer.
async fn exchange_from(from: &str, proxy: SocketAddr, request: &[u8]) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    let mut s = sock.connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn blocked_request(host: &str) -> Vec<u8> {
    format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

fn from_client<'a>(records: &'a [Record], event: EventKind, client: &str) -> Vec<&'a Record> {
    let ip: IpAddr = client.parse().unwrap();
    records.iter().filter(|r| r.event == event && r.client == Some(ip)).collect()
}

#[tokio::test]
async fn device_ranges_name_the_device_on_blocked_and_session_start_records() {
    let parsed = Config::parse(
        Path::new("weerwal.toml"),
        "[identity]\nauth = \"none\"\n\n[[identity.device]]\ncidr = \"127.0.0.8/29\"\nname = \"raadslaptops\"\n",
    )
    .unwrap();
    let proxy = TestProxy::start_with(|c| c.identity = parsed.identity.clone()).await;
    assert_eq!(proxy.config.identity.auth, AuthMode::None);
    // The default allow_clients (loopback, 127.0.0.0/8) serves all three addresses.
    for client in ["127.0.0.9", "127.0.0.2", "127.0.0.16"] {
        let ip: IpAddr = client.parse().unwrap();
        assert!(proxy.config.proxy.allow_clients.iter().any(|n| n.contains(&ip)), "{client} allowed");
    }
    // 127.0.0.9 is in 127.0.0.8/29 (.8 to .15); .2 and .16 are not.
    for (client, host) in [("127.0.0.9", "aliexpress.com"), ("127.0.0.2", "vk.com"), ("127.0.0.16", "www.tiktok.com")] {
        let raw = exchange_from(client, proxy.addr, &blocked_request(host)).await;
        assert_eq!(crate::common::status_of(&raw), 403, "{client}: {raw}");
    }
    let records = proxy.records();
    for (client, device) in [("127.0.0.9", Some("raadslaptops")), ("127.0.0.2", None), ("127.0.0.16", None)] {
        let blocked = from_client(&records, EventKind::Blocked, client);
        let starts = from_client(&records, EventKind::SessionStart, client);
        assert_eq!(blocked.len(), 1, "{client}: {records:?}");
        assert_eq!(starts.len(), 1, "{client}: {records:?}");
        assert_eq!(blocked[0].device.as_deref(), device, "{client} blocked");
        assert_eq!(starts[0].device.as_deref(), device, "{client} session_start");
        assert_eq!(starts[0].session, blocked[0].session, "{client}: one session");
        assert!(starts[0].seq < blocked[0].seq, "{client}: session_start comes first");
    }
    // On disk: the unnamed devices have no device name at all (absent or null).
    let text = std::fs::read_to_string(proxy.audit_path()).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let device = v.get("device").cloned().unwrap_or(serde_json::Value::Null);
        match v["client"].as_str() {
            Some("127.0.0.9") => assert_eq!(device, "raadslaptops", "{line}"),
            _ => assert!(device.is_null(), "{line}"),
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_writes_one_session_end_per_logged_session_with_its_counts() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    assert!(proxy.config.identity.session_idle >= Duration::from_secs(600), "no idle sweep during this test");
    // 127.0.0.1: three attempts on two apps, and allowed browsing (not counted).
    let client = proxy.client();
    for url in ["http://aliexpress.com/", "http://m.aliexpress.com/x", "http://vk.com/"] {
        assert_eq!(client.get(url).send().await.unwrap().status(), 403, "{url}");
    }
    assert_eq!(client.get(origin.url("/ok")).send().await.unwrap().status(), 200);
    // 127.0.0.2: a session of its own. 127.0.0.3: only allowed browsing, no trace.
    let raw = exchange_from("127.0.0.2", proxy.addr, &blocked_request("www.tiktok.com")).await;
    assert_eq!(crate::common::status_of(&raw), 403, "{raw}");
    let ok = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", origin.url("/ok3"), origin.addr);
    let raw = exchange_from("127.0.0.3", proxy.addr, ok.as_bytes()).await;
    assert_eq!(crate::common::status_of(&raw), 200, "{raw}");
    assert!(proxy.events("session_end").is_empty(), "no session has ended before shutdown");

    // Stop through the same code path as `serve` on SIGTERM.
    let path = proxy.audit_path();
    let _dir = proxy.stop().await; // keeps the log until the end of the test
    let records = crate::common::read_records(&path);
    let blocked = from_client(&records, EventKind::Blocked, "127.0.0.1");
    assert_eq!(blocked.len(), 3, "{records:?}");
    let session = blocked[0].session.clone();
    assert!(session.as_deref().is_some_and(|s| s.len() == 32), "{session:?}");
    assert!(blocked.iter().all(|r| r.session == session), "one session: {blocked:?}");

    let ends: Vec<&Record> = records.iter().filter(|r| r.event == EventKind::SessionEnd).collect();
    let mine: Vec<&&Record> = ends.iter().filter(|r| r.session == session).collect();
    assert_eq!(mine.len(), 1, "exactly one session_end for the session: {ends:?}");
    let end = mine[0];
    assert_eq!(end.client, Some("127.0.0.1".parse().unwrap()));
    assert!(end.seq > blocked[2].seq, "written after the attempts");
    let detail = end.detail.as_ref().unwrap();
    assert_eq!(detail["attempts"], serde_json::json!({"AliExpress": 2, "VKontakte": 1}), "{detail}");
    assert_eq!(detail["distinct_hosts"], 3, "{detail}");
    assert_eq!(detail["hosts"], serde_json::json!(["aliexpress.com", "m.aliexpress.com", "vk.com"]), "{detail}");

    let other = from_client(&records, EventKind::SessionEnd, "127.0.0.2");
    assert_eq!(other.len(), 1, "{ends:?}");
    assert_eq!(other[0].detail.as_ref().unwrap()["attempts"], serde_json::json!({"TikTok": 1}));
    assert!(from_client(&records, EventKind::SessionEnd, "127.0.0.3").is_empty(), "browsing only: no trace");
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert!(records.iter().all(|r| r.client != Some("127.0.0.3".parse().unwrap())), "127.0.0.3 left no record");
    // The chain still holds over the shutdown records.
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash, "seq {}", pair[1].seq);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
}

#[tokio::test]
async fn an_exempted_person_is_tunnelled_untouched_and_the_exemption_recorded() {
    let origin = Origin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| {
        let dir = c.audit.path.parent().unwrap().parent().unwrap().to_path_buf();
        c.identity.auth = AuthMode::Basic;
        c.identity.users_file = users_file(&dir);
        c.policy.dir = exemption_policy(&dir, "2099-12-31");
        c.proxy.connect_ports = vec![443, port];
    })
    .await;
    let connect = |creds: &str| {
        let auth = base64_basic(creds);
        format!(
            "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
        )
    };
    // inspecteur1 is exempted for Testapp (127.0.0.1): a real tunnel to the origin.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(connect("inspecteur1:wachtwoord-insp").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /through HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(crate::common::PATIENCE, s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).contains("hello from origin"), "{}", String::from_utf8_lossy(&out));
    assert_eq!(origin.requests().iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(), ["/through"]);
    let exempted = proxy.events("exempted");
    assert!(!exempted.is_empty());
    assert!(exempted.iter().all(|r| r.user.as_deref() == Some("inspecteur1")));
    assert_eq!(exempted[0].reason.as_deref(), Some("inspectie en toezicht"));
    // jan is not exempted: refused, nothing reaches the origin.
    // Issue 15: wait for what is needed (the proxy ends jan's tunnel once
    // the attempt is decided and recorded, after an argon2 check that a busy
    // machine makes slow), with a generous bound, never a fixed short time.
    let raw =
        crate::common::raw_exchange(proxy.addr, connect("jan:wachtwoord-jan").as_bytes(), crate::common::PATIENCE)
            .await;
    assert!(!raw.contains("hello from origin"));
    assert_eq!(origin.requests().len(), 1);
    let jan_blocked = || proxy.events("blocked").iter().any(|r| r.user.as_deref() == Some("jan"));
    assert!(crate::common::eventually(crate::common::PATIENCE, jan_blocked).await, "jan's attempt was not recorded");
    proxy.stop().await;
}

fn base64_basic(creds: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(creds)
}
