//! Shared test fixtures: a real origin server on loopback, the real
//! `serve` code path on an ephemeral port, and clients that use it.
#![allow(dead_code)]

pub mod history_fixtures;
pub mod postgres;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use weerwal::audit::Record;
use weerwal::config::Config;
use weerwal::serve::Server;

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body_len: u64,
}

/// A plain HTTP origin on 127.0.0.1 that records every request it gets.
///
/// Paths: `/count` answers with the request body's length; `/bytes/N`
/// streams N bytes; `/slow` answers after 5 s; anything else answers
/// "hello from origin".
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&connections));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| origin_handle(Arc::clone(&s), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Origin { addr, seen, connections }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

async fn origin_handle(seen: Arc<Mutex<Vec<Seen>>>, req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers = req.headers().clone();
    let path = req.uri().path().to_string();
    // Count the body as it streams, without holding it.
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            body_len += d.len() as u64;
        }
    }
    seen.lock().unwrap().push(Seen { method, uri, headers, body_len });
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        return Ok(Response::new(stream_bytes(n)));
    }
    if path == "/count" {
        return Ok(Response::new(Full::new(Bytes::from(body_len.to_string())).map_err(|never| match never {}).boxed()));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if path == "/stall" {
        // Promises 1,000 bytes, sends 10, then nothing, ever.
        let first = futures_util::stream::once(async {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from_static(b"0123456789")))
        });
        let body = StreamBody::new(futures_util::StreamExt::chain(first, futures_util::stream::pending())).boxed();
        let mut resp = Response::new(body);
        resp.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("1000"));
        return Ok(resp);
    }
    let body = Full::new(Bytes::from_static(b"hello from origin")).map_err(|never| match never {}).boxed();
    Ok(Response::new(body))
}

/// A body of `n` bytes (a repeating pattern) produced in 64 KiB chunks.
pub fn stream_bytes(n: u64) -> TestBody {
    let chunk = Bytes::from(pattern(64 * 1024));
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(chunk.len() as u64) as usize;
            Some((
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.slice(..take))),
                left - take as u64,
            ))
        }
    });
    StreamBody::new(stream).boxed()
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The real `serve` code path on an ephemeral loopback port, with its own
/// temporary directory for the audit log and the CA.
pub struct TestProxy {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

pub fn repo_policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policy")
}

/// A configuration for tests: shipped policy, files in `dir`, port 0.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::embedded();
    c.source = Some(dir.join("weerwal.toml"));
    c.proxy.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.policy.dir = repo_policy_dir();
    c.audit.path = dir.join("logs/audit.jsonl");
    c.ca.dir = dir.join("certs");
    c.proxy.connect_timeout = Duration::from_secs(3);
    c.proxy.response_timeout = Duration::from_secs(10);
    c.proxy.client_hello_timeout = Duration::from_secs(2);
    // Tests count one record per attempt; coalescing has its own tests
    // (hardening2.rs), which turn it on.
    c.audit.coalesce_after = 0;
    c
}

impl TestProxy {
    pub async fn start() -> TestProxy {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        adjust(&mut config);
        Self::start_config(config, dir).await
    }

    pub async fn start_config(config: Config, dir: tempfile::TempDir) -> TestProxy {
        let server = Server::start(config.clone()).await.expect("server starts");
        let addr = server.proxy_addrs[0];
        TestProxy { server: Some(server), addr, dir, config }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn audit_path(&self) -> PathBuf {
        self.config.audit.path.clone()
    }

    /// Every record in the audit log, each line parsed as JSON (panics on a
    /// line that is not a complete record).
    pub fn records(&self) -> Vec<Record> {
        read_records(&self.audit_path())
    }

    /// Records of one event kind.
    pub fn events(&self, event: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| serde_json::to_value(r.event).unwrap() == serde_json::Value::String(event.into()))
            .collect()
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.config.ca.dir.join("ca.pem")).unwrap()
    }

    /// A reqwest client that uses the proxy for everything.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.url()).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// A reqwest client that uses the proxy and trusts the weerwal CA.
    pub fn client_trusting_ca(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.url()).unwrap())
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        self.dir
    }
}

pub fn read_records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {} is not a record: {e}: {l}", i + 1)))
        .collect()
}

/// Sends raw bytes to `addr` and reads until the server closes or `wait`
/// passes; returns what came back as text.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server that answers and closes before reading everything (or is
    // killed) may reset the connection: what it said still counts.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The most a test waits for an event that must come (a response, a
/// record): generous, because the machine may be busy (issue 15: waiting a
/// fixed short time for an argon2 check made tests flaky). Waiting ends as
/// soon as the event is there.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Sends raw bytes to `addr` and reads until one whole response is in (its
/// head, and its body by `Content-Length`) or the server closes, waiting at
/// most `bound`; returns what came back as text.
pub async fn raw_response(addr: SocketAddr, request: &[u8], bound: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(bound, async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    return;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until `done()` holds, looking every 20 ms, at most `bound`;
/// returns whether it came.
pub async fn eventually(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status code of the first response in raw text.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Turns the officers' dashboard on (an ephemeral loopback port) and writes
/// a users file with `users` (name, password, role) next to the audit log.
pub fn with_dashboard(c: &mut Config, users: &[(&str, &str, weerwal::identity::Role)]) {
    let dir = c.audit.path.parent().and_then(Path::parent).expect("audit log in dir/logs").to_path_buf();
    let path = dir.join("users.toml");
    let mut file = weerwal::identity::Users::default();
    for (name, password, role) in users {
        file.upsert(name, password, *role, Vec::new()).unwrap();
    }
    file.save(&path).unwrap();
    c.identity.users_file = path;
    c.admin = Some(weerwal::config::AdminConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() });
}
