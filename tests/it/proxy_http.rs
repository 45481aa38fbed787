//! The forward proxy over real loopback sockets: forwarding, blocking,
//! malformed input, never an open proxy, and the audit log.

use std::time::Duration;

use crate::common::{raw_exchange, status_of, Origin, TestProxy};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn allowed_get_post_head_reach_the_origin() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let client = proxy.client();

    let resp = client.get(origin.url("/hello?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("via").unwrap().to_str().unwrap().contains("weerwal"));
    assert_eq!(resp.text().await.unwrap(), "hello from origin");

    let resp = client.post(origin.url("/count")).body("twelve bytes").send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "12");

    let resp = client.head(origin.url("/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let seen = origin.requests();
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST", "HEAD"]);
    assert_eq!(seen[0].uri, "/hello?x=1", "origin gets origin-form");
    assert_eq!(seen[0].headers.get("host").unwrap(), &origin.addr.to_string());
    assert!(seen[0].headers.get("via").unwrap().to_str().unwrap().contains("weerwal"));
    // Ordinary browsing leaves no trace in the audit log.
    assert!(proxy.events("blocked").is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let client = proxy.client();
    const SIZE: u64 = 80 * 1024 * 1024;

    // Download: count as it arrives, never hold it whole.
    let resp = client.get(origin.url(&format!("/bytes/{SIZE}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, SIZE);

    // Upload: a streamed request body.
    let chunk = bytes::Bytes::from(crate::common::pattern(1024 * 1024));
    let chunks = futures_util::stream::iter((0..80).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = client.post(origin.url("/count")).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), SIZE.to_string());
    proxy.stop().await;
}

#[tokio::test]
async fn client_connection_is_kept_alive() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..3 {
        let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.url("/k"), origin.addr);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut text = String::new();
        while !text.contains("hello from origin") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "proxy closed a keep-alive connection");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(text.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(origin.requests().len(), 3);
    // The pooled client reused one origin connection too.
    assert_eq!(origin.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn banned_hosts_get_the_block_page_and_a_record() {
    let proxy = TestProxy::start().await;
    let client = proxy.client();
    for (url, host, app) in [
        ("http://aliexpress.com/", "aliexpress.com", "AliExpress"),
        ("http://M.AliExpress.COM./x", "m.aliexpress.com", "AliExpress"),
        ("http://vk.com:80/", "vk.com", "VKontakte"),
    ] {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{url}");
        assert_eq!(resp.headers().get("content-type").unwrap(), "text/html; charset=utf-8");
        let html = resp.text().await.unwrap();
        assert!(html.contains(&format!("Geblokkeerd: {app}")), "{url}");
        assert!(html.contains(&format!("Blocked: {app}")), "{url}");
        let records = proxy.events("blocked");
        let last = records.last().unwrap();
        assert_eq!(last.host.as_deref(), Some(host));
        assert_eq!(last.app.as_deref(), Some(app));
        assert!(html.contains(&format!("Referentienummer: <strong>{}</strong>", last.seq)), "reference on the page");
        assert!(is_rfc3339_utc_millis(&last.ts), "ts {:?} is not RFC 3339 UTC with milliseconds", last.ts);
        let when = humantime::parse_rfc3339(&last.ts).unwrap();
        let skew = match when.duration_since(std::time::SystemTime::now()) {
            Ok(ahead) => ahead,
            Err(behind) => behind.duration(),
        };
        assert!(skew < Duration::from_secs(300), "ts {:?} is not now", last.ts);
    }
    let ts: Vec<String> = proxy.events("blocked").into_iter().map(|r| r.ts).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "ts never goes back: {ts:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn connect_to_banned_host_is_refused_with_reject_mode() {
    let proxy = TestProxy::start_with(|c| c.proxy.https = weerwal::config::HttpsMode::Reject).await;
    let raw = raw_exchange(
        proxy.addr,
        b"CONNECT www.tiktok.com:443 HTTP/1.1\r\nHost: www.tiktok.com:443\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status_of(&raw), 403, "{raw}");
    assert!(raw.contains("Geblokkeerd: TikTok"));
    let rec = proxy.events("blocked");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].method.as_deref(), Some("CONNECT"));
    assert_eq!(rec[0].host.as_deref(), Some("www.tiktok.com"));
    assert_eq!(rec[0].port, Some(443));
    proxy.stop().await;
}

#[tokio::test]
async fn lookalike_hosts_are_not_blocked() {
    let proxy = TestProxy::start_with(|c| c.proxy.connect_timeout = Duration::from_secs(2)).await;
    let client = proxy.client();
    for url in ["http://notaliexpress.com/", "http://aliexpress.com.example.net/"] {
        // No internet here: a 502/504 is fine, the block page is not.
        let resp = client.get(url).send().await.unwrap();
        assert_ne!(resp.status(), 403, "{url}");
        assert!(!resp.text().await.unwrap().contains("Geblokkeerd"), "{url}");
    }
    assert!(proxy.events("blocked").is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_proxy_keeps_serving() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let wait = Duration::from_secs(3);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid host", b"GET http://exa_mple!.com/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("percent-encoded host", b"GET http://ali%65xpress.com/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("decimal IPv4", b"GET http://2130706433/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("hex IPv4", b"GET http://0x7f.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("two @", b"GET http://a@b@aliexpress.com/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("CONNECT without port", b"CONNECT www.tiktok.com HTTP/1.1\r\nHost: www.tiktok.com\r\n\r\n".to_vec()),
        ("CONNECT to a port not allowed", b"CONNECT example.org:25 HTTP/1.1\r\nHost: example.org:25\r\n\r\n".to_vec()),
        ("garbage", b"\x16\x03\x01 not http at all\r\n\r\n".to_vec()),
    ];
    for (what, req) in cases {
        let raw = raw_exchange(proxy.addr, &req, wait).await;
        let status = status_of(&raw);
        assert!((400..500).contains(&status), "{what}: got {status}: {raw}");
    }
    // More header fields than hyper parses (100): 431 too. The byte limit
    // itself is `header_block_over_max_header_bytes_gets_431` below.
    let mut many = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", origin.url("/"), origin.addr).into_bytes();
    for i in 0..200 {
        many.extend_from_slice(format!("X-Filler-{i}: a\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let raw = raw_exchange(proxy.addr, &many, wait).await;
    assert_eq!(status_of(&raw), 431, "{}", &raw[..raw.len().min(200)]);
    assert!(origin.requests().is_empty(), "nothing malformed reached the origin");
    // And the proxy still serves the next client.
    let resp = proxy.client().get(origin.url("/after")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn request_target_authority_decides_not_the_host_header() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    // Host says banned, target is the origin: forwarded, with the origin's own Host.
    let req = format!("GET {} HTTP/1.1\r\nHost: aliexpress.com\r\nConnection: close\r\n\r\n", origin.url("/t"));
    let raw = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&raw), 200, "{raw}");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get("host").unwrap(), &origin.addr.to_string());
    assert_eq!(seen[0].headers.get_all("host").iter().count(), 1);
    // Target is banned, Host is the origin: blocked, and the origin sees nothing.
    let req = format!("GET http://aliexpress.com/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", origin.addr);
    let raw = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&raw), 403, "{raw}");
    assert_eq!(origin.requests().len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn client_outside_allow_clients_is_refused_and_nothing_forwarded() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.allow_clients = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let resp = proxy.client().get(origin.url("/secret")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let raw = raw_exchange(
        proxy.addr,
        format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr).as_bytes(),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status_of(&raw), 403);
    assert!(origin.requests().is_empty());
    assert_eq!(origin.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn requests_to_the_proxy_itself_are_not_forwarded() {
    let proxy = TestProxy::start().await;
    // Origin-form: the status page.
    let raw =
        raw_exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", Duration::from_secs(2))
            .await;
    assert_eq!(status_of(&raw), 200);
    assert!(raw.contains("weerwal"));
    // Absolute-form to our own address: refused, no loop.
    let req = format!("GET http://{}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", proxy.addr);
    let raw = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(status_of(&raw), 403, "{raw}");
    let req = format!("GET http://localhost:{}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", proxy.addr.port());
    let raw = raw_exchange(proxy.addr, req.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(status_of(&raw), 403, "{raw}");
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_origin_gives_502_quickly() {
    // A port that was just free: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = TestProxy::start().await;
    let started = std::time::Instant::now();
    let resp = proxy.client().get(format!("http://127.0.0.1:{port}/")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.stop().await;
}

#[tokio::test]
async fn slow_origin_gives_504_within_the_response_timeout() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.response_timeout = Duration::from_millis(500)).await;
    let resp = proxy.client().get(origin.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    proxy.stop().await;
}

#[tokio::test]
async fn concurrent_blocked_attempts_give_exactly_one_record_each() {
    let proxy = TestProxy::start().await;
    const N: usize = 2000;
    let addr = proxy.addr;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let sem = std::sync::Arc::clone(&sem);
        tasks.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let req =
                format!("GET http://aliexpress.com/{i} HTTP/1.1\r\nHost: aliexpress.com\r\nConnection: close\r\n\r\n");
            let raw = raw_exchange(addr, req.as_bytes(), Duration::from_secs(20)).await;
            assert_eq!(status_of(&raw), 403);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let path = proxy.audit_path();
    let dir = proxy.stop().await;
    let records = crate::common::read_records(&path);
    let blocked: Vec<_> = records.iter().filter(|r| r.event == weerwal::audit::EventKind::Blocked).collect();
    assert_eq!(blocked.len(), N);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..=records.len() as u64).collect();
    assert_eq!(seqs, expected, "seq without gap or repeat");

    // After a restart, seq continues.
    let mut config = crate::common::test_config(dir.path());
    config.audit.path = path.clone();
    let proxy = TestProxy::start_config(config, dir).await;
    let resp = proxy.client().get("http://aliexpress.com/again").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let records = proxy.records();
    let last_before = expected.len() as u64;
    let after: Vec<u64> = records.iter().map(|r| r.seq).filter(|&s| s > last_before).collect();
    assert_eq!(after, vec![last_before + 1, last_before + 2, last_before + 3], "policy_loaded, session_start, blocked");
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash, "hash chain continues across the restart");
    }
    proxy.stop().await;
}

/// A request for `url` (absolute-form, through the proxy) carrying `count`
/// headers `X-Big-i` of `each` bytes of value each, and `Connection: close`.
fn request_with_big_headers(url: &str, host: &str, count: usize, each: usize) -> Vec<u8> {
    let mut req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").into_bytes();
    for i in 0..count {
        req.extend_from_slice(format!("X-Big-{i}: {}\r\n", "b".repeat(each)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Under `proxy.max_header_bytes` a few large headers reach the origin
/// whole; a configured limit replaces the 64 KiB default.
#[tokio::test]
async fn large_headers_under_max_header_bytes_pass_and_a_configured_limit_applies() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    assert_eq!(proxy.config.proxy.max_header_bytes, 64 * 1024, "the default this test is about");
    let wait = Duration::from_secs(5);
    let host = origin.addr.to_string();
    // 4 headers of 12 KiB: ~48 KiB, under the default 64 KiB, forwarded intact.
    let req = request_with_big_headers(&origin.url("/under"), &host, 4, 12 * 1024);
    assert!((48 * 1024..50 * 1024).contains(&req.len()), "{}", req.len());
    let raw = raw_exchange(proxy.addr, &req, wait).await;
    assert_eq!(status_of(&raw), 200, "{}", &raw[..raw.len().min(200)]);
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/under");
    for i in 0..4 {
        let v = seen[0].headers.get(format!("x-big-{i}")).unwrap_or_else(|| panic!("x-big-{i} forwarded"));
        assert_eq!(v.len(), 12 * 1024, "x-big-{i} forwarded whole");
    }
    proxy.stop().await;

    // A configured 16 KiB limit: one 20 KiB header (far under the default) gets 431...
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.max_header_bytes = 16 * 1024).await;
    let host = origin.addr.to_string();
    let req = request_with_big_headers(&origin.url("/over16"), &host, 1, 20 * 1024);
    let raw = raw_exchange(proxy.addr, &req, wait).await;
    assert_eq!(status_of(&raw), 431, "{}", &raw[..raw.len().min(200)]);
    assert!(origin.requests().is_empty(), "an oversized head never reaches the origin");
    // ...and an 8 KiB one still comes through.
    let req = request_with_big_headers(&origin.url("/under16"), &host, 1, 8 * 1024);
    let raw = raw_exchange(proxy.addr, &req, wait).await;
    assert_eq!(status_of(&raw), 200, "{}", &raw[..raw.len().min(200)]);
    assert_eq!(origin.requests().len(), 1);
    proxy.stop().await;
}

/// `proxy.max_header_bytes` is a limit on bytes, not on the number of header
/// fields: a few large headers over it get 431 and never reach the origin.
#[tokio::test]
async fn header_block_over_max_header_bytes_gets_431() {
    let wait = Duration::from_secs(5);
    // 6 headers of 12 KiB: ~72 KiB, over the default 64 KiB.
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let req = request_with_big_headers(&origin.url("/over"), &origin.addr.to_string(), 6, 12 * 1024);
    assert!((72 * 1024..74 * 1024).contains(&req.len()), "{}", req.len());
    let raw = raw_exchange(proxy.addr, &req, wait).await;
    assert_eq!(status_of(&raw), 431, "72 KiB head with the 64 KiB default: {}", &raw[..raw.len().min(200)]);
    assert!(origin.requests().is_empty(), "an oversized head never reaches the origin");
    proxy.stop().await;

    // A configured 32 KiB limit and a 40 KiB head (4 headers of 10 KiB).
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.max_header_bytes = 32 * 1024).await;
    let req = request_with_big_headers(&origin.url("/over32"), &origin.addr.to_string(), 4, 10 * 1024);
    let raw = raw_exchange(proxy.addr, &req, wait).await;
    assert_eq!(status_of(&raw), 431, "40 KiB head with a 32 KiB limit: {}", &raw[..raw.len().min(200)]);
    assert!(origin.requests().is_empty(), "an oversized head never reaches the origin");
    proxy.stop().await;
}

/// Reads from `s` until `needle` has arrived (or panics after `wait`).
async fn read_until(s: &mut TcpStream, needle: &str, wait: Duration) -> String {
    let mut text = String::new();
    let mut buf = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    while !text.contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within {wait:?}; got: {text}"))
            .unwrap();
        assert!(n > 0, "connection closed before {needle:?}; got: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1) describe the client's
/// connection to the proxy: none of them, nor any header `Connection` names,
/// reaches the origin; end-to-end headers do, and the proxy adds `Via`.
#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_origin() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let req = format!(
        "GET {} HTTP/1.1\r\n\
         Host: {}\r\n\
         Connection: X-Secret\r\n\
         X-Secret: 1\r\n\
         Connection: x-other\r\n\
         X-Other: 2\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
         Proxy-Connection: keep-alive\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         X-Keep: yes\r\n\
         \r\n",
        origin.url("/hop"),
        origin.addr
    );
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let resp = read_until(&mut s, "hello from origin", Duration::from_secs(5)).await;
    assert_eq!(status_of(&resp), 200, "{resp}");

    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    for name in
        ["connection", "x-secret", "x-other", "proxy-authorization", "proxy-connection", "keep-alive", "te", "trailer"]
    {
        assert!(h.get(name).is_none(), "{name} reached the origin: {h:?}");
    }
    assert_eq!(h.get("x-keep").map(|v| v.as_bytes()), Some(&b"yes"[..]), "end-to-end header forwarded: {h:?}");
    let via: Vec<&str> = h.get_all("via").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(via, ["1.1 weerwal"], "{h:?}");
    proxy.stop().await;
}

/// `2026-11-27T07:01:02.345Z`: RFC 3339 in UTC with exactly three digits
/// of milliseconds, as `humantime::format_rfc3339_millis` writes it.
fn is_rfc3339_utc_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    if b.len() != 24 {
        return false;
    }
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    if !b.iter().zip(shape).all(|(c, s)| if *s == b'd' { c.is_ascii_digit() } else { c == s }) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| ts[r].parse::<u32>().unwrap();
    (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 61
}

#[test]
fn the_timestamp_checker_rejects_near_misses() {
    assert!(is_rfc3339_utc_millis("2026-11-27T07:01:02.345Z"));
    for bad in [
        "2026-11-27T07:01:02Z",
        "2026-11-27T07:01:02.34Z",
        "2026-11-27T07:01:02.3456Z",
        "2026-11-27T07:01:02.345+00:00",
        "2026-11-27 07:01:02.345Z",
        "2026-11-27T07:01:02.345z",
        "2026-13-27T07:01:02.345Z",
        "2026-11-27T24:01:02.345Z",
        "2026-11-27T07:01:02,345Z",
        "",
    ] {
        assert!(!is_rfc3339_utc_millis(bad), "{bad}");
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let origin = Origin::start().await;
    let proxy = TestProxy::start_with(|c| c.proxy.header_timeout = Duration::from_millis(700)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let url = origin.url("/");
    s.write_all(format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr).as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("hello from origin") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // Kept alive at first...
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(format!("GET {url} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr).as_bytes()).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // ...then, idle, closed once the header timeout passes.
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", started.elapsed());
    proxy.stop().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[tokio::test]
async fn a_one_gib_download_streams_with_flat_memory() {
    const SIZE: u64 = 1024 * 1024 * 1024;
    let origin = Origin::start().await;
    let proxy = TestProxy::start().await;
    let resp = proxy.client().get(origin.url(&format!("/bytes/{SIZE}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let (mut got, mut next_sample) = (0u64, 64 * 1024 * 1024);
    let (mut baseline, mut peak) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
        if got >= next_sample {
            // Origin, proxy and client all live in this process: what any of
            // them buffered would show here.
            let rss = rss_kib();
            if baseline == 0 {
                baseline = rss;
            }
            peak = peak.max(rss);
            next_sample += 64 * 1024 * 1024;
        }
    }
    assert_eq!(got, SIZE);
    let grown_mib = (peak - baseline) / 1024;
    assert!(grown_mib < 64, "memory grew by {grown_mib} MiB while streaming 1 GiB");
    proxy.stop().await;
}
