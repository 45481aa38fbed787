//! The compliance gate's rule (issue 16), end to end over real sockets: who
//! is flagged and why, what a flagged person can still reach, and what the
//! gate's state costs. Each test drives the real `serve` path: the proxy,
//! the gateway in front of a real upstream, and the audit log.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::common::{Origin, TestProxy};
use crate::gateway::{configure, token_of, Person, WEBMAIL};

/// Waits (up to 10 s) until `check` holds on the audit log.
async fn wait_for(proxy: &TestProxy, what: &str, check: impl Fn(&[weerwal::audit::Record]) -> bool) {
    for _ in 0..100 {
        if check(&proxy.records()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited 10 s for {what}; records: {:#?}", proxy.records());
}

/// Reads a response head (up to the blank line), byte by byte.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn embedded_content_is_blocked_and_recorded_but_only_a_navigation_flags() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream.addr)).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];

    // The TikTok Pixel on an ordinary page (no Sec-Fetch headers: the
    // policy marks analytics.tiktok.com as embedded).
    let reader = Person::new(21, &proxy);
    let r = reader.via_proxy.get("http://analytics.tiktok.com/i18n/pixel/events.js").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("uw toegang tot webmail en iBabs blijft zoals die was"));
    // An image in an HTML e-mail, which says it is an image.
    let r = reader
        .via_proxy
        .get("http://www.tiktok.com/x.gif")
        .header("sec-fetch-dest", "image")
        .header("sec-fetch-mode", "no-cors")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // AliExpress's image CDN, hotlinked by a web shop.
    let r = reader.via_proxy.get("http://ae01.aliexpress-media.com/kf/x.jpg").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let blocked = proxy.events("blocked");
    assert_eq!(blocked.len(), 3, "every attempt is recorded");
    assert!(blocked.iter().all(|r| r.flagged == Some(false)), "{blocked:#?}");
    assert_eq!(blocked[1].navigation, Some(false));
    // The reader still gets webmail.
    let (status, _) = reader.gateway_get(gw, "/inbox").await;
    assert_eq!(status, 200, "embedded content never locks anyone out");

    // A person who opens TikTok in the browser is flagged.
    let visitor = Person::new(22, &proxy);
    let r = visitor
        .via_proxy
        .get("http://www.tiktok.com/@someone")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Dit apparaat kan daarom niet bij webmail en iBabs"));
    let last = proxy.events("blocked").pop().unwrap();
    assert_eq!((last.navigation, last.flagged), (Some(true), Some(true)));
    let (status, body) = visitor.gateway_get(gw, "/inbox").await;
    assert_eq!(status, 403);
    assert!(body.contains("/.weerwal/attest"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_flagged_person_reaches_webmail_neither_by_address_nor_by_plain_http_in_a_tunnel() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        c.proxy.connect_ports.push(upstream.addr.port());
    })
    .await;
    let flagged = Person::new(31, &proxy);
    assert_eq!(flagged.via_proxy.get("http://aliexpress.com/").send().await.unwrap().status(), 403);

    let connect_from = |n: u8| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("127.0.0.{n}:0").parse().unwrap()).unwrap();
        socket.connect(proxy.addr).await.unwrap()
    };
    // CONNECT to webmail's address, a TLS ClientHello without SNI: closed,
    // nothing reaches the upstream, and the attempt is recorded.
    let hello = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clienthello-openssl-no-sni.bin"),
    )
    .unwrap();
    let mut s = connect_from(31).await;
    let target = upstream.addr;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(&hello).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert_eq!(upstream.connections.load(std::sync::atomic::Ordering::SeqCst), 0, "the upstream was never reached");
    wait_for(&proxy, "gateway_denied for the closed tunnel", |rs| {
        rs.iter().any(|r| r.client == Some(flagged.ip) && format!("{:?}", r.event) == "GatewayDenied")
    })
    .await;

    // Plain HTTP inside a CONNECT to the address, naming webmail: the
    // remediation page, never the upstream.
    let mut s = connect_from(31).await;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(format!("GET /inbox HTTP/1.1\r\nHost: {WEBMAIL}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 403") && out.contains("/.weerwal/attest"), "{out}");
    assert!(upstream.requests().is_empty());

    // Someone who is not flagged gets through the same way.
    let mut s = connect_from(32).await;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(format!("GET /inbox HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).contains("hello from origin"));
    proxy.stop().await;
}

#[tokio::test]
async fn cookies_weerwal_did_not_sign_never_grow_the_state() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream.addr)).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let flagged = Person::new(41, &proxy);
    assert_eq!(flagged.via_proxy.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
    for i in 0..300u32 {
        let cookie = format!("weerwal_device={:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15);
        let r = flagged
            .direct
            .get(format!("http://{gw}/inbox"))
            .header("host", WEBMAIL)
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    proxy.server.as_ref().unwrap().compliance.as_ref().unwrap().flush();
    let state = std::fs::read_to_string(proxy.config.compliance_state_path()).unwrap();
    assert!(state.len() < 4096, "{} bytes: {state}", state.len());
    let parsed: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(parsed["devices"].as_object().map(|d| d.len()), Some(0), "{state}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_flagged_users_device_stays_refused_after_the_proxy_session_ends() {
    let upstream = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let mut list = weerwal::identity::Users::default();
    list.upsert("jan", "wachtwoord-jan", weerwal::identity::Role::User, vec![]).unwrap();
    list.save(&users).unwrap();
    let mut config = crate::common::test_config(dir.path());
    configure(&mut config, upstream.addr);
    config.identity.auth = weerwal::config::AuthMode::Basic;
    config.identity.users_file = users;
    config.identity.session_idle = Duration::from_secs(1);
    let proxy = TestProxy::start_config(config, dir).await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let jan = Person::new(51, &proxy);
    let jan_via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.url()).unwrap().basic_auth("jan", "wachtwoord-jan"))
        .local_address(jan.ip)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = jan_via_proxy.get("http://www.tiktok.com/").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Quiet for longer than identity.session_idle: no proxy session names
    // jan at this address any more, but the device is still refused.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = jan.gateway_get(gw, "/inbox").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("/.weerwal/attest"));
    // Attesting at the gateway lifts the device's flags.
    let token = token_of(&body);
    let r = jan
        .direct
        .post(format!("http://{gw}/.weerwal/attest"))
        .header("host", WEBMAIL)
        .form(&[("token", token.as_str()), ("confirm", "yes"), ("return", "/inbox")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (status, _) = jan.gateway_get(gw, "/inbox").await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_flag_whose_quarantine_ended_is_removed_with_a_record() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        if let Some(comp) = c.compliance.as_mut() {
            comp.quarantine = "2s".into();
        }
    })
    .await;
    let p = Person::new(61, &proxy);
    assert_eq!(p.via_proxy.get("http://vk.com/").send().await.unwrap().status(), 403);
    let compliance = std::sync::Arc::clone(proxy.server.as_ref().unwrap().compliance.as_ref().unwrap());
    assert_eq!(compliance.flagged().len(), 1);
    wait_for(&proxy, "flag_cleared after the quarantine", |rs| {
        rs.iter().any(|r| {
            format!("{:?}", r.event) == "FlagCleared" && r.reason.as_deref().is_some_and(|x| x.contains("quarantine"))
        })
    })
    .await;
    compliance.flush();
    let state = std::fs::read_to_string(proxy.config.compliance_state_path()).unwrap();
    assert!(!state.contains(&p.ip.to_string()), "the address is no longer kept: {state}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_may_hold_two_thousand_connections_and_the_gateway_has_caps() {
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| configure(c, upstream.addr)).await;
    // An office behind NAT: 1,999 open connections from one address...
    let mut held = Vec::new();
    for _ in 0..1_999 {
        held.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    // ...and the 2,000th, a request, is still served.
    let r = proxy.client().get(upstream.url("/still")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(held);
    proxy.stop().await;

    // The gateway goes through admission too: a laptop holding the
    // per-address cap of idle connections gets 503, others are served.
    let upstream = Origin::start().await;
    let proxy = TestProxy::start_with(|c| {
        configure(c, upstream.addr);
        c.proxy.max_connections_per_client = 40;
    })
    .await;
    let gw = proxy.server.as_ref().unwrap().gateway_addrs[0];
    let hog = Person::new(71, &proxy);
    let mut held = Vec::new();
    for _ in 0..40 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::new(hog.ip, 0)).unwrap();
        held.push(socket.connect(gw).await.unwrap());
    }
    let (status, _) = hog.gateway_get(gw, "/one-too-many").await;
    assert_eq!(status, 503, "the 41st connection from one address is refused");
    let other = Person::new(72, &proxy);
    let (status, _) = other.gateway_get(gw, "/inbox").await;
    assert_eq!(status, 200, "another address is served");
    drop(held);
    proxy.stop().await;
}
