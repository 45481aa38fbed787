//! HTTPS through the proxy over real loopback sockets: the block page over
//! TLS for banned hosts only, SNI checked before tunnelling, allowed
//! tunnels untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{Origin, TestProxy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x509_parser::prelude::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Opens a CONNECT tunnel through the proxy and returns the stream after `200`.
async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "proxy closed during CONNECT");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn pem_to_der(pem: &str) -> CertificateDer<'static> {
    rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap()
}

/// TLS through a CONNECT tunnel, with `sni` as server name.
async fn tls_via_proxy(
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    roots: &[CertificateDer<'static>],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tunnel = connect_tunnel(proxy, authority).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(roots));
    connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tunnel).await
}

/// Sends a GET and reads the whole response (Connection: close).
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, host: &str, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn trusted_client_sees_block_page_over_tls_with_a_leaf_for_the_name() {
    let proxy = TestProxy::start().await;
    let ca = pem_to_der(&proxy.ca_pem());
    let mut tls =
        tls_via_proxy(proxy.addr, "aliexpress.com:443", "aliexpress.com", std::slice::from_ref(&ca)).await.unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]), "only http/1.1 is offered");
    let chain: Vec<CertificateDer<'static>> = conn.peer_certificates().unwrap().to_vec();
    assert_eq!(chain.len(), 2, "leaf and CA are sent");
    assert_eq!(chain[1], ca);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san.value.general_names.iter().map(|n| format!("{n}")).collect();
    assert_eq!(names, vec!["DNSName(aliexpress.com)".to_string()]);
    let response = get(&mut tls, "aliexpress.com", "/").await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("Geblokkeerd: AliExpress"));
    let blocked = proxy.events("blocked");
    // One for the request inside TLS (the CONNECT itself is answered 200).
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].host.as_deref(), Some("aliexpress.com"));
    assert_eq!(blocked[0].method.as_deref(), Some("GET"));
    proxy.stop().await;
}

#[tokio::test]
async fn reqwest_trusting_the_ca_gets_403_and_the_page() {
    let proxy = TestProxy::start().await;
    let resp = proxy.client_trusting_ca().get("https://aliexpress.com/").send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("Geblokkeerd: AliExpress"));
    proxy.stop().await;
}

#[tokio::test]
async fn untrusting_client_gets_a_certificate_error_and_the_attempt_is_logged() {
    let proxy = TestProxy::start().await;
    let other_ca = rcgen::generate_simple_self_signed(vec!["other".to_string()]).unwrap();
    let err = tls_via_proxy(proxy.addr, "www.tiktok.com:443", "www.tiktok.com", &[other_ca.cert.der().clone()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // The failed handshake is still recorded.
    let mut blocked = Vec::new();
    for _ in 0..50 {
        blocked = proxy.events("blocked");
        if !blocked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].host.as_deref(), Some("www.tiktok.com"));
    assert_eq!(blocked[0].method.as_deref(), Some("CONNECT"));
    proxy.stop().await;
}

/// A TLS origin with its own self-signed certificate for 127.0.0.1 that
/// answers `GET /bytes/N` with N bytes.
struct TlsOrigin {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
}

impl TlsOrigin {
    async fn start() -> TlsOrigin {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let der = cert.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else { return };
                    let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let n: u64 = req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse().ok()).unwrap_or(5);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(crate::common::stream_bytes(n)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsOrigin { addr, cert: der }
    }
}

#[tokio::test]
async fn allowed_https_is_tunnelled_untouched() {
    let origin = TlsOrigin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, port]).await;
    let mut tls = tls_via_proxy(proxy.addr, &origin.addr.to_string(), "localhost", std::slice::from_ref(&origin.cert))
        .await
        .unwrap();
    let seen = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(Sha256::digest(&seen), Sha256::digest(&origin.cert), "the client sees the origin's own certificate");
    const SIZE: usize = 64 * 1024 * 1024 + 123;
    tls.write_all(format!("GET /bytes/{SIZE} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::with_capacity(SIZE + 1024);
    tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut all)).await.unwrap().ok();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Chunked encoding from the origin: decode and compare the payload.
    let body = dechunk(&all[split..]);
    assert_eq!(body.len(), SIZE);
    let expected = crate::common::pattern(64 * 1024);
    assert!(body.chunks(64 * 1024).all(|c| c == &expected[..c.len()]), "payload intact");
    // Ordinary HTTPS leaves no trace.
    assert!(proxy.events("blocked").is_empty());
    proxy.stop().await;
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[tokio::test]
async fn connect_to_an_ip_with_banned_sni_is_caught_by_sni() {
    let origin = Origin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![port]).await;
    let ca = pem_to_der(&proxy.ca_pem());
    let mut tls = tls_via_proxy(proxy.addr, &format!("127.0.0.1:{port}"), "www.tiktok.com", &[ca]).await.unwrap();
    let response = get(&mut tls, "www.tiktok.com", "/").await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("Geblokkeerd: TikTok"));
    let blocked = proxy.events("blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].host.as_deref(), Some("www.tiktok.com"));
    assert_eq!(origin.connections.load(std::sync::atomic::Ordering::SeqCst), 0, "the origin was never contacted");
    proxy.stop().await;
}

#[tokio::test]
async fn plain_http_inside_a_tunnel_is_decided_too() {
    let origin = Origin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, port]).await;
    // Banned CONNECT host, plain HTTP inside: the block page, never tunnelled.
    let mut t = connect_tunnel(proxy.addr, "vk.com:443").await;
    let response = get(&mut t, "vk.com", "/").await;
    assert!(response.starts_with("HTTP/1.1 403") && response.contains("VKontakte"), "{response}");
    // Allowed CONNECT host, plain HTTP inside with a banned Host: blocked.
    let mut t = connect_tunnel(proxy.addr, &origin.addr.to_string()).await;
    let response = get(&mut t, "aliexpress.com", "/").await;
    assert!(response.starts_with("HTTP/1.1 403") && response.contains("AliExpress"), "{response}");
    // Allowed CONNECT host, plain HTTP to itself: tunnelled to the origin.
    let mut t = connect_tunnel(proxy.addr, &origin.addr.to_string()).await;
    let response = get(&mut t, &origin.addr.to_string(), "/inside").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(origin.requests().len(), 1);
    assert_eq!(origin.requests()[0].uri, "/inside");
    proxy.stop().await;
}

#[tokio::test]
async fn leaf_cache_gives_the_same_certificate_to_two_connections() {
    let proxy = TestProxy::start().await;
    let ca = pem_to_der(&proxy.ca_pem());
    let mut serials = Vec::new();
    for _ in 0..2 {
        let tls =
            tls_via_proxy(proxy.addr, "www.wechat.com:443", "www.wechat.com", std::slice::from_ref(&ca)).await.unwrap();
        let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, parsed) = X509Certificate::from_der(&leaf).unwrap();
        serials.push(parsed.raw_serial().to_vec());
    }
    assert_eq!(serials[0], serials[1]);
    // Another banned host gets its own certificate with another serial.
    let tls = tls_via_proxy(proxy.addr, "wechat.com:443", "wechat.com", std::slice::from_ref(&ca)).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = X509Certificate::from_der(&leaf).unwrap();
    assert_ne!(parsed.raw_serial(), &serials[0][..]);
    proxy.stop().await;
}

#[tokio::test]
async fn silent_client_after_connect_to_allowed_host_is_still_tunnelled() {
    // Server-speaks-first protocols: nothing from the client within the
    // ClientHello timeout means splice as is.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"220 hello\r\n").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let proxy = TestProxy::start_with(|c| {
        c.proxy.connect_ports = vec![addr.port()];
        c.proxy.client_hello_timeout = Duration::from_millis(300);
    })
    .await;
    let mut t = connect_tunnel(proxy.addr, &addr.to_string()).await;
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), t.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    t.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    t.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    proxy.stop().await;
}

#[tokio::test]
async fn serve_refuses_a_ca_key_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::test_config(dir.path());
    weerwal::ca::CertificateAuthority::init(&config.ca.dir, "Gemeente Test", false).unwrap();
    let key = config.ca.dir.join("ca.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = match weerwal::serve::Server::start(config).await {
        Ok(_) => panic!("serve must refuse a world-readable CA key"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn every_request_in_a_plain_http_tunnel_is_decided() {
    let origin = Origin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![port]).await;
    let mut t = connect_tunnel(proxy.addr, &origin.addr.to_string()).await;
    // Two pipelined requests: the first to the origin, the second naming a banned host.
    t.write_all(
        format!(
            "GET /first HTTP/1.1\r\nHost: {}\r\n\r\nGET /second HTTP/1.1\r\nHost: aliexpress.com\r\nConnection: close\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), t.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("HTTP/1.1 403") && text.contains("Geblokkeerd: AliExpress"), "{text}");
    let uris: Vec<String> = origin.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/first"]);
    assert_eq!(proxy.events("blocked").len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_request_on_an_intercepted_connection_is_recorded_with_the_banned_host_it_names() {
    let proxy = TestProxy::start().await;
    let ca = pem_to_der(&proxy.ca_pem());
    let roots = std::slice::from_ref(&ca);
    // SNI www.tiktok.com, Host m.tiktok.com: the request's own host is recorded.
    let mut tls = tls_via_proxy(proxy.addr, "www.tiktok.com:443", "www.tiktok.com", roots).await.unwrap();
    assert!(get(&mut tls, "m.tiktok.com", "/").await.starts_with("HTTP/1.1 403"));
    // A Host that is not banned does not hide the banned name intercepted.
    let mut tls = tls_via_proxy(proxy.addr, "www.tiktok.com:443", "www.tiktok.com", roots).await.unwrap();
    assert!(get(&mut tls, "www.example.org", "/").await.starts_with("HTTP/1.1 403"));
    let hosts: Vec<_> = proxy.events("blocked").iter().map(|r| r.host.clone().unwrap_or_default()).collect();
    assert_eq!(hosts, ["m.tiktok.com", "www.tiktok.com"]);
    proxy.stop().await;
}

#[tokio::test]
async fn bytes_that_are_neither_tls_nor_http_to_a_banned_host_are_refused_and_recorded() {
    let proxy = TestProxy::start().await;
    let mut tunnel = connect_tunnel(proxy.addr, "aliexpress.com:443").await;
    tunnel.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tunnel.read_to_end(&mut out)).await;
    assert!(!String::from_utf8_lossy(&out).contains("SSH"), "nothing came from an origin");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while proxy.events("blocked").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the attempt was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let blocked = proxy.events("blocked");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].host.as_deref(), Some("aliexpress.com"));
    assert_eq!(blocked[0].method.as_deref(), Some("CONNECT"));
    proxy.stop().await;
}

/// TLS through a CONNECT tunnel without the SNI extension.
async fn tls_without_sni(
    proxy: SocketAddr,
    authority: &str,
    name: &str,
    roots: &[CertificateDer<'static>],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tunnel = connect_tunnel(proxy, authority).await;
    let mut config = (*client_config(roots)).clone();
    config.enable_sni = false;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from(name.to_string()).unwrap(), tunnel).await
}

#[tokio::test]
async fn a_client_hello_without_sni_is_decided_on_the_connect_host() {
    let origin = TlsOrigin::start().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start_with(|c| c.proxy.connect_ports = vec![443, port]).await;
    // Allowed CONNECT host, no SNI: tunnelled to the origin, its own certificate.
    let tls = tls_without_sni(proxy.addr, &origin.addr.to_string(), "localhost", std::slice::from_ref(&origin.cert))
        .await
        .unwrap();
    let seen = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(Sha256::digest(&seen), Sha256::digest(&origin.cert));
    drop(tls);
    // Banned CONNECT host, no SNI: intercepted with a leaf for that host.
    let ca = pem_to_der(&proxy.ca_pem());
    let mut tls = tls_without_sni(proxy.addr, "aliexpress.com:443", "aliexpress.com", &[ca]).await.unwrap();
    let response = get(&mut tls, "aliexpress.com", "/").await;
    assert!(response.starts_with("HTTP/1.1 403") && response.contains("AliExpress"), "{response}");
    assert_eq!(proxy.events("blocked").len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_apps_user_agent_inside_intercepted_https_is_recorded_as_app_detected() {
    let proxy = TestProxy::start().await;
    let ca = pem_to_der(&proxy.ca_pem());
    let mut tls = tls_via_proxy(proxy.addr, "aliexpress.com:443", "aliexpress.com", &[ca]).await.unwrap();
    tls.write_all(
        b"GET / HTTP/1.1\r\nHost: aliexpress.com\r\nUser-Agent: Mozilla/5.0 MicroMessenger/8.0.47\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 403"));
    let detected = proxy.events("app_detected");
    assert_eq!(detected.len(), 1, "{detected:?}");
    assert_eq!(detected[0].app.as_deref(), Some("WeChat"));
    proxy.stop().await;
}
