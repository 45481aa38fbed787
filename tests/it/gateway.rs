//! The compliance gateway end to end: a device that tried a banned site is
//! refused webmail through the proxy and through the gateway until the
//! person attests; others are never affected.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::common::{test_config, Origin, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use weerwal::config::{ComplianceConfig, Config, GatewayConfig, GatewayRoute};

pub const WEBMAIL: &str = "webmail.gemeente.test";

pub fn configure(c: &mut Config, upstream: SocketAddr) {
    c.compliance = Some(ComplianceConfig {
        protected: vec![WEBMAIL.into(), "localhost".into()],
        quarantine: "until-attested".into(),
        state: None,
    });
    c.gateway = Some(GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: None,
        key: None,
        trusted_proxies: vec![],
        route: vec![GatewayRoute { host: WEBMAIL.into(), upstream: format!("http://{upstream}") }],
    });
}

/// A person on their own loopback address (127.0.0.N).
pub struct Person {
    pub ip: IpAddr,
    pub via_proxy: reqwest::Client,
    pub direct: reqwest::Client,
}

impl Person {
    pub fn new(n: u8, proxy: &TestProxy) -> Person {
        let ip: IpAddr = format!("127.0.0.{n}").parse().unwrap();
        let via_proxy = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
            .local_address(ip)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let direct = reqwest::Client::builder()
            .no_proxy()
            .local_address(ip)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Person { ip, via_proxy, direct }
    }

    pub async fn gateway_get(&self, gw: SocketAddr, path: &str) -> (u16, String) {
        let resp = self.direct.get(format!("http://{gw}{path}")).header("host", WEBMAIL).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

pub fn token_of(html: &str) -> String {
    let at = html.find("name=\"token\" value=\"").expect("attestation form") + 20;
    html[at..at + 32].to_string()
}

#[tokio::test]
async fn flagged_device_is_refused_until_it_attests_and_others_are_never_affected() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream.addr)).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let a = Person::new(2, &proxy);
    let b = Person::new(3, &proxy);
    let webmail_via_proxy = format!("http://localhost:{}/mail", upstream.addr.port());

    // A tries AliExpress and is flagged.
    assert_eq!(a.via_proxy.get("http://aliexpress.com/").send().await.unwrap().status(), 403);

    // Through the proxy: the remediation page, nothing reaches webmail.
    let resp = a.via_proxy.get(&webmail_via_proxy).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Geen toegang tot localhost") && html.contains("AliExpress"), "{html}");
    // Through the gateway: the same.
    let (status, html) = a.gateway_get(gw, "/inbox").await;
    assert_eq!(status, 403);
    assert!(html.contains("Geen toegang tot webmail.gemeente.test"));
    assert!(html.contains("Ik heb de app verwijderd"));
    assert!(upstream.requests().is_empty(), "the upstream saw nothing from A");
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| r.client == Some(a.ip)));
    // Both name A's proxy session, the one that was blocked.
    let blocked_session = proxy.events("blocked")[0].session.clone();
    assert!(blocked_session.is_some());
    assert!(denied.iter().all(|r| r.session == blocked_session), "{denied:?}");

    // B is never affected.
    assert_eq!(
        b.via_proxy.get(format!("http://localhost:{}/b", upstream.addr.port())).send().await.unwrap().status(),
        200
    );
    assert_eq!(b.gateway_get(gw, "/b-gw").await.0, 200);
    assert_eq!(upstream.requests().len(), 2);
    let seen = &upstream.requests()[1];
    assert_eq!(seen.headers.get("host").unwrap(), WEBMAIL, "the gateway keeps the Host");
    assert_eq!(seen.headers.get("x-forwarded-for").unwrap(), "127.0.0.3");

    // An attestation without the CSRF token is refused.
    let resp = a
        .direct
        .post(format!("http://{gw}/.weerwal/attest"))
        .header("host", WEBMAIL)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("confirm=yes&return=%2Finbox")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(a.gateway_get(gw, "/").await.0, 403, "still flagged");

    // With the token from the page: attested, redirected back, let through.
    let token = token_of(&html);
    let resp = a
        .direct
        .post(format!("http://{gw}/.weerwal/attest"))
        .header("host", WEBMAIL)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&return=%2Finbox&confirm=yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers().get("location").unwrap(), "/inbox");
    let attested = proxy.events("attested");
    assert_eq!(attested.len(), 1);
    assert_eq!(attested[0].client, Some(a.ip));
    assert_eq!(a.gateway_get(gw, "/inbox").await.0, 200);
    assert_eq!(a.via_proxy.get(&webmail_via_proxy).send().await.unwrap().status(), 200);
    let uris: Vec<String> = upstream.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/b", "/b-gw", "/inbox", "/mail"]);
    proxy.stop().await;
}

#[tokio::test]
async fn flag_survives_a_restart() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream.addr)).await;
    let a = Person::new(4, &proxy);
    assert_eq!(a.via_proxy.get("http://www.tiktok.com/").send().await.unwrap().status(), 403);
    let dir = proxy.stop().await;

    let mut config = test_config(dir.path());
    configure(&mut config, upstream.addr);
    let proxy = TestProxy::start_config(config, dir).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let a = Person::new(4, &proxy);
    let (status, html) = a.gateway_get(gw, "/").await;
    assert_eq!(status, 403);
    assert!(html.contains("TikTok"));
    assert!(upstream.requests().is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn flagged_https_to_a_protected_host_gets_the_page_over_tls_unflagged_is_tunnelled() {
    let upstream = Origin::start().await;
    let port = upstream.addr.port();
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        c.proxy.connect_ports = vec![443, port];
    })
    .await;
    let ca = reqwest::Certificate::from_pem(proxy.ca_pem().as_bytes()).unwrap();
    let person = |n: u8| {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
            .local_address(format!("127.0.0.{n}").parse::<IpAddr>().unwrap())
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let a = person(5);
    assert_eq!(a.get("http://vk.com/").send().await.unwrap().status(), 403);
    let resp = a.get(format!("https://localhost:{port}/mail")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("Geen toegang tot localhost"));
    assert!(upstream.requests().is_empty());
    // An unflagged person's CONNECT is tunnelled untouched: plain HTTP inside
    // reaches the upstream (no TLS there, so use the raw tunnel).
    let s = TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.6:0".parse().unwrap()).unwrap();
    let mut t = s.connect(proxy.addr).await.unwrap();
    t.write_all(format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = t.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    t.write_all(b"GET /tunnelled HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), t.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert_eq!(upstream.requests().len(), 1);
    proxy.stop().await;
}

/// An upstream that accepts a WebSocket upgrade and echoes what follows.
async fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(text.contains("upgrade: websocket"), "{text}");
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => s.write_all(&buf[..n]).await.unwrap(),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrade_passes_through_the_gateway() {
    let upstream = echo_upstream().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream)).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {WEBMAIL}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A masked WebSocket text frame "hallo", echoed byte for byte.
    let frame = [0x81u8, 0x85, 1, 2, 3, 4, b'h' ^ 1, b'a' ^ 2, b'l' ^ 3, b'l' ^ 4, b'o' ^ 1];
    s.write_all(&frame).await.unwrap();
    let mut echo = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(echo, frame);
    proxy.stop().await;
}

#[tokio::test]
async fn gateway_serves_tls_with_the_configured_certificate() {
    let upstream = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec![WEBMAIL.to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("gateway.pem"), dir.path().join("gateway.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        let g = c.gateway.as_mut().unwrap();
        g.cert = Some(cert_path.clone());
        g.key = Some(key_path.clone());
    })
    .await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve(WEBMAIL, gw)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = client.get(format!("https://{WEBMAIL}:{}/inbox", gw.port())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("weerwal_device=") && cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert_eq!(resp.text().await.unwrap(), "hello from origin");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get("x-forwarded-proto").unwrap(), "https");
    proxy.stop().await;
}

/// A client of the gateway itself (no proxy) from a given loopback address.
fn gateway_client(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A GET to webmail through the gateway from `ip`, with extra headers.
async fn gateway_get_from(ip: &str, gw: SocketAddr, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = gateway_client(ip).get(format!("http://{gw}{path}")).header("host", WEBMAIL);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// A proxy client that authenticates as `user` from loopback address `ip`.
fn proxy_user_from(proxy: &TestProxy, ip: &str, user: &str, password: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap().basic_auth(user, password))
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Proxy users jan and piet, in a users file in the test directory.
fn with_basic_auth(c: &mut Config) {
    let path = c.audit.path.parent().and_then(std::path::Path::parent).unwrap().join("users.toml");
    let mut users = weerwal::identity::Users::default();
    users.upsert("jan", "wachtwoord-jan", weerwal::identity::Role::User, vec![]).unwrap();
    users.upsert("piet", "wachtwoord-piet", weerwal::identity::Role::User, vec![]).unwrap();
    users.save(&path).unwrap();
    c.identity.auth = weerwal::config::AuthMode::Basic;
    c.identity.users_file = path;
}

#[tokio::test]
async fn gateway_links_an_address_to_the_user_of_its_live_proxy_session_unless_two_users_share_it() {
    let upstream = Origin::start().await;
    let elsewhere = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        with_basic_auth(c);
    })
    .await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let compliance = proxy.server.as_ref().unwrap().compliance.clone().unwrap();
    let jan = proxy_user_from(&proxy, "127.0.0.7", "jan", "wachtwoord-jan");

    // jan tries AliExpress from 127.0.0.7: the user is flagged, and so is
    // the device's address (so the gateway refuses it also when no proxy
    // session names jan any more).
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    assert!(compliance.flag_of("user:jan").is_some());
    assert!(compliance.flag_of("client:127.0.0.7").is_some(), "an authenticated attempt flags the address too");

    // The gateway knows no users: only jan's live proxy session from
    // 127.0.0.7 links that address to the flag.
    let resp = gateway_get_from("127.0.0.7", gw, "/inbox", &[]).await;
    assert_eq!(resp.status(), 403);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Geen toegang tot webmail.gemeente.test") && html.contains("AliExpress"), "{html}");
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].user.as_deref(), Some("jan"));
    assert_eq!(denied[0].client, Some("127.0.0.7".parse().unwrap()));
    assert_eq!(denied[0].detail.as_ref().unwrap()["flagged"], "user:jan");
    let jans_session =
        proxy.events("blocked").iter().find(|r| r.user.as_deref() == Some("jan")).unwrap().session.clone();
    assert_eq!(denied[0].session, jans_session, "the gateway names jan's proxy session");
    assert!(upstream.requests().is_empty(), "nothing from jan's device reached webmail");

    // Another address has no session: it is nobody in particular.
    let resp = gateway_get_from("127.0.0.8", gw, "/from-8", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from origin");

    // piet also browses through the proxy from 127.0.0.7 (a shared terminal,
    // NAT): the address no longer names one person and the gateway must not
    // guess (src/identity/sessions.rs, `users_at`).
    let piet = proxy_user_from(&proxy, "127.0.0.7", "piet", "wachtwoord-piet");
    assert_eq!(piet.get(elsewhere.url("/piet")).send().await.unwrap().status(), 200);
    assert_eq!(proxy.server.as_ref().unwrap().identity.sessions.user_at("127.0.0.7".parse().unwrap()), None);
    // The address names nobody now, but the device jan was flagged from
    // stays refused until someone there attests.
    let resp = gateway_get_from("127.0.0.7", gw, "/shared", &[]).await;
    assert_eq!(resp.status(), 403, "the flagged address stays refused");
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.last().unwrap().user, None, "an ambiguous address names no user");
    assert_eq!(denied.last().unwrap().detail.as_ref().unwrap()["flagged"], "client:127.0.0.7");
    // It stays ambiguous while both are there, even when jan is the last
    // one seen.
    assert_eq!(jan.get(elsewhere.url("/jan")).send().await.unwrap().status(), 200);
    assert_eq!(proxy.server.as_ref().unwrap().identity.sessions.user_at("127.0.0.7".parse().unwrap()), None);

    // jan himself is still flagged: through the proxy he gets the page.
    let resp = jan.get(format!("http://localhost:{}/mail", upstream.addr.port())).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let uris: Vec<String> = upstream.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/from-8"]);
    proxy.stop().await;
}

/// Every `X-Forwarded-For` entry the upstream saw, in order.
fn forwarded_for(seen: &crate::common::Seen) -> Vec<String> {
    seen.headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_string())
        .collect()
}

/// The gateway behind a TLS terminator on 127.0.0.1: (upstream, proxy, gateway address).
async fn behind_a_trusted_terminator() -> (Origin, TestProxy, std::net::SocketAddr) {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        c.gateway.as_mut().unwrap().trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    (upstream, proxy, gw)
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let (upstream, proxy, gw) = behind_a_trusted_terminator().await;
    // The proxy only ever sees its peer's address, and 10.9.9.9 is not a
    // loopback address a test can bind: flag it the way a blocked attempt
    // from there would.
    let compliance = proxy.server.as_ref().unwrap().compliance.clone().unwrap();
    compliance.flag("client:10.9.9.9", "TikTok", "www.tiktok.com", Some(7));

    // From the trusted terminator: the client is the address it names.
    let resp = gateway_get_from("127.0.0.1", gw, "/", &[("x-forwarded-for", "10.9.9.9")]).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("TikTok"));
    // Trusted hops at the end of the chain are skipped.
    let resp = gateway_get_from("127.0.0.1", gw, "/", &[("x-forwarded-for", "10.9.9.9, 127.0.0.1")]).await;
    assert_eq!(resp.status(), 403);
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|r| r.client == Some("10.9.9.9".parse().unwrap())), "{denied:?}");
    assert!(upstream.requests().is_empty());

    // What the client itself put in front of the terminator's entry is not
    // believed: the nearest untrusted address (10.1.1.1) is the client.
    let resp = gateway_get_from("127.0.0.1", gw, "/chain", &[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    // From a trusted peer the chain is kept and the client the gateway
    // decided on comes last, the entry the upstream should believe.
    assert_eq!(forwarded_for(&seen[0]), ["10.9.9.9", "10.1.1.1", "10.1.1.1"]);

    // From an untrusted peer the header is a claim, not a fact: ignored for
    // the decision and not passed on; the upstream sees the peer only.
    let spoofed = [
        ("x-forwarded-for", "10.9.9.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "for=10.9.9.9;proto=https"),
    ];
    let resp = gateway_get_from("127.0.0.2", gw, "/spoofed", &spoofed).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from origin");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri, "/spoofed");
    assert_eq!(forwarded_for(&seen[1]), ["127.0.0.2"], "the spoofed address never reaches the upstream");
    assert_eq!(seen[1].headers.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"]);
    assert_eq!(seen[1].headers.get_all("x-forwarded-host").iter().collect::<Vec<_>>(), [WEBMAIL]);
    assert!(seen[1].headers.get("forwarded").is_none());
    assert_eq!(proxy.events("gateway_denied").len(), 2, "no denial for the spoofed request");
    assert!(compliance.flag_of("client:10.9.9.9").is_some(), "still flagged");
    proxy.stop().await;
}

/// The `weerwal_device` value a response sets, if it sets one.
fn device_cookie_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().strip_prefix("weerwal_device="))
        .map(str::to_string)
        .next()
}

#[tokio::test]
async fn device_cookie_recognises_a_flagged_device_after_an_address_change_until_it_attests() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream.addr)).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let before = Person::new(9, &proxy);
    assert_eq!(before.via_proxy.get("http://vk.com/").send().await.unwrap().status(), 403);

    // First visit to the gateway from the flagged address: the page, and a
    // device cookie.
    let resp = gateway_get_from("127.0.0.9", gw, "/inbox", &[]).await;
    assert_eq!(resp.status(), 403);
    let device = device_cookie_of(&resp).expect("a device cookie on the first visit");
    let (id, mac) = device.split_once('.').expect("a signed cookie: id.mac");
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{device}");
    assert!(mac.len() == 32 && mac.bytes().all(|b| b.is_ascii_hexdigit()), "{device}");
    let cookie = format!("weerwal_device={device}");

    // Without the cookie the new address is nobody in particular...
    let resp = gateway_get_from("127.0.0.10", gw, "/no-cookie", &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(device_cookie_of(&resp).is_some_and(|c| c != device), "a fresh device gets its own cookie");
    // ...and someone else's made-up cookie does not help either.
    let other = format!("weerwal_device={}", "ab".repeat(16));
    assert_eq!(gateway_get_from("127.0.0.10", gw, "/other-cookie", &[("cookie", &other)]).await.status(), 200);

    // With the device's cookie the new address is the flagged device.
    let resp = gateway_get_from("127.0.0.10", gw, "/inbox", &[("cookie", &format!("lang=nl; {cookie}"))]).await;
    assert_eq!(resp.status(), 403);
    assert!(device_cookie_of(&resp).is_none(), "a known device keeps its cookie");
    let html = resp.text().await.unwrap();
    assert!(html.contains("VKontakte") && html.contains("Ik heb de app verwijderd"), "{html}");
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[1].client, Some("127.0.0.10".parse().unwrap()));
    assert_eq!(denied[1].detail.as_ref().unwrap()["flagged"], "client:127.0.0.9");

    // The person attests from the new address, with the page's token.
    let token = token_of(&html);
    let resp = gateway_client("127.0.0.10")
        .post(format!("http://{gw}/.weerwal/attest"))
        .header("host", WEBMAIL)
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&return=%2Finbox&confirm=yes"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers().get("location").unwrap(), "/inbox");
    let attested = proxy.events("attested");
    assert_eq!(attested.len(), 1);
    assert_eq!(attested[0].client, Some("127.0.0.10".parse().unwrap()));
    assert_eq!(attested[0].detail.as_ref().unwrap()["flagged"], "client:127.0.0.9");

    // Let through from the new address, and the old one is cleared too.
    let resp = gateway_get_from("127.0.0.10", gw, "/after", &[("cookie", &cookie)]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from origin");
    assert_eq!(gateway_get_from("127.0.0.9", gw, "/old-address", &[]).await.status(), 200);
    assert!(proxy.server.as_ref().unwrap().compliance.as_ref().unwrap().flagged().is_empty());
    let uris: Vec<String> = upstream.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/no-cookie", "/other-cookie", "/after", "/old-address"]);
    proxy.stop().await;
}

/// An upstream that answers every request with the length and SHA-256 of
/// its body (`"<len> <hex>"`), and signals when the first body bytes arrive.
async fn hashing_upstream() -> (SocketAddr, std::sync::Arc<tokio::sync::Notify>) {
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first_bytes = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = std::sync::Arc::clone(&first_bytes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let signal = std::sync::Arc::clone(&signal);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let signal = std::sync::Arc::clone(&signal);
                    async move {
                        let mut body = req.into_body();
                        let (mut len, mut hash) = (0u64, Sha256::new());
                        while let Some(frame) = body.frame().await {
                            let Ok(frame) = frame else { break };
                            if let Some(d) = frame.data_ref() {
                                if len == 0 && !d.is_empty() {
                                    signal.notify_one();
                                }
                                len += d.len() as u64;
                                hash.update(d);
                            }
                        }
                        let answer = format!("{len} {}", hex::encode(hash.finalize()));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(answer),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, first_bytes)
}

#[tokio::test]
async fn a_streamed_chunked_upload_of_20_mib_reaches_the_upstream_intact() {
    use http_body_util::BodyExt;
    use sha2::{Digest, Sha256};
    let (upstream, first_bytes) = hashing_upstream().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream)).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];

    // 20 MiB and a bit of pseudo-random bytes (a repeating pattern would hide
    // reordered or repeated chunks from the checksum).
    let size = 20 * 1024 * 1024 + 4321;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let expected = format!("{size} {}", hex::encode(Sha256::digest(&data)));
    let data = bytes::Bytes::from(data);

    // Chunks of uneven sizes; after the first MiB the client waits until the
    // upstream has bytes, so a gateway that buffered the whole body first
    // would be caught here rather than pass.
    let sizes = [1usize, 4096, 65_536, 100_003, 7, 1 << 20];
    let streamed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&streamed);
    let chunks = futures_util::stream::unfold((0usize, 0usize, false), move |(at, i, waited)| {
        let (data, first_bytes, flag) =
            (data.clone(), std::sync::Arc::clone(&first_bytes), std::sync::Arc::clone(&flag));
        async move {
            if at >= data.len() {
                return None;
            }
            let mut waited = waited;
            if !waited && at >= 1 << 20 {
                let arrived = tokio::time::timeout(Duration::from_secs(10), first_bytes.notified()).await.is_ok();
                flag.store(arrived, std::sync::atomic::Ordering::SeqCst);
                waited = true;
            }
            let end = (at + sizes[i % sizes.len()]).min(data.len());
            let frame = hyper::body::Frame::data(data.slice(at..end));
            Some((Ok::<_, std::convert::Infallible>(frame), (end, i + 1, waited)))
        }
    });
    let body = http_body_util::StreamBody::new(chunks);

    let stream = TcpStream::connect(gw).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/upload")
        .header("host", WEBMAIL)
        .header("transfer-encoding", "chunked")
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let answer = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&answer), expected, "length and SHA-256 at the upstream");
    assert!(
        streamed.load(std::sync::atomic::Ordering::SeqCst),
        "the upstream had no bytes after the client sent 1 MiB: the gateway buffers request bodies"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_address_names_its_user_again_once_the_other_users_session_has_ended() {
    let upstream = Origin::start().await;
    let elsewhere = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        with_basic_auth(c);
        c.identity.session_idle = Duration::from_secs(2);
    })
    .await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let sessions = &proxy.server.as_ref().unwrap().identity.sessions;
    let at: IpAddr = "127.0.0.7".parse().unwrap();
    // The first check of a password (argon2id, unoptimised here) takes
    // longer than the idle time: have both checks remembered, from another
    // address, and wait until those sessions are gone.
    for (user, password) in [("jan", "wachtwoord-jan"), ("piet", "wachtwoord-piet")] {
        let warm = proxy_user_from(&proxy, "127.0.0.11", user, password);
        assert_eq!(warm.get(elsewhere.url("/warm-up")).send().await.unwrap().status(), 200);
    }
    wait_until(|| sessions.is_empty()).await;

    let jan = proxy_user_from(&proxy, "127.0.0.7", "jan", "wachtwoord-jan");
    let piet = proxy_user_from(&proxy, "127.0.0.7", "piet", "wachtwoord-piet");
    assert_eq!(jan.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    assert_eq!(sessions.user_at(at).as_deref(), Some("jan"));
    assert_eq!(piet.get(elsewhere.url("/piet")).send().await.unwrap().status(), 200);
    assert_eq!(sessions.user_at(at), None, "two users: ambiguous");
    // The address jan was flagged from stays refused whoever uses it.
    assert_eq!(gateway_get_from("127.0.0.7", gw, "/shared", &[]).await.status(), 403);

    // piet leaves; jan keeps browsing until piet's session has been swept.
    let mut alone = false;
    for _ in 0..60 {
        assert_eq!(jan.get(elsewhere.url("/jan")).send().await.unwrap().status(), 200);
        if sessions.len() == 1 {
            alone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(alone, "piet's session ended");
    // jan is now the only user with a live session from 127.0.0.7: the
    // gateway should know the device as his again.
    assert_eq!(gateway_get_from("127.0.0.7", gw, "/jan-alone", &[]).await.status(), 403, "jan's flag applies again");
    assert_eq!(sessions.user_at(at).as_deref(), Some("jan"));
    let denied = proxy.events("gateway_denied");
    assert_eq!(denied.last().unwrap().user.as_deref(), Some("jan"), "the gateway names jan again");
    proxy.stop().await;
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 10 s");
}

#[tokio::test]
async fn an_unreadable_entry_from_the_trusted_proxy_does_not_let_the_client_choose_its_address() {
    let (upstream, proxy, gw) = behind_a_trusted_terminator().await;
    let compliance = proxy.server.as_ref().unwrap().compliance.clone().unwrap();
    compliance.flag("client:10.9.9.9", "TikTok", "www.tiktok.com", Some(7));
    // The flagged client sent "X-Forwarded-For: 10.1.1.1"; a terminator that
    // writes address and port (as some load balancers do) appended its view.
    let resp = gateway_get_from("127.0.0.1", gw, "/", &[("x-forwarded-for", "10.1.1.1, 10.9.9.9:4711")]).await;
    match resp.status().as_u16() {
        403 => {}
        200 => {
            let seen = upstream.requests();
            assert_ne!(
                forwarded_for(&seen[0]).last().map(String::as_str),
                Some("10.1.1.1"),
                "the gateway took the client's own claim for its address"
            );
        }
        other => panic!("unexpected status {other}"),
    }
    proxy.stop().await;
}
