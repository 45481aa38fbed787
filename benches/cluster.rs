//! Cluster mode's numbers (issue 17), against a real PostgreSQL started here
//! (`tests/it/common/postgres.rs`) and real `weerwal serve` processes (the
//! binary this bench builds):
//!
//! 1. flag on node A to refusal at node B's gateway: p50 and p99 over 200
//!    flags (each a new client address; B's gateway polled every 2 ms);
//! 2. blocked requests per second with `[cluster]` on, as a ratio to the
//!    same node without `[cluster]`, in the same run;
//! 3. allowed GET throughput with `[cluster]` on vs off (an origin on loopback);
//! 4. start-up of a node with 100,000 flags and 1,000,000 shipped records
//!    in the database: time until the state is loaded, and peak RSS.
//!
//! `cargo bench --bench cluster` (no criterion; `SECONDS=` sets each
//! throughput run's length, default 5; `FLAGS=` the number of flags, 200).

#[path = "../tests/it/common/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::{Postgres, PASSWORD};

const WEBMAIL: &str = "webmail.gemeente.test";

struct Node {
    dir: tempfile::TempDir,
    proxy: u16,
    gateway: u16,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn new(name: &str, pg: Option<&Postgres>, upstream: SocketAddr) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let [proxy, gateway] = postgres::free_ports::<2>();
        std::fs::write(dir.path().join("db.pw"), format!("{PASSWORD}\n")).unwrap();
        let cluster = match pg {
            Some(pg) => {
                format!("[cluster]\ndatabase = \"{}\"\npassword_file = \"db.pw\"\nnode = \"{name}\"\n", pg.url())
            }
            None => String::new(),
        };
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
        let config = format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy}\"\nhttps = \"reject\"\nmax_connections_per_client = 10000\n\
             [policy]\ndir = \"{}\"\n{cluster}\
             [compliance]\nprotected = [\"{WEBMAIL}\"]\n\
             [gateway]\nlisten = \"127.0.0.1:{gateway}\"\n[[gateway.route]]\nhost = \"{WEBMAIL}\"\nupstream = \"http://{upstream}\"\n",
            policy.display()
        );
        std::fs::write(dir.path().join("weerwal.toml"), config).unwrap();
        Node { dir, proxy, gateway, child: None, log: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Starts serve; returns the time until `ready` appears in its log.
    fn start(&mut self, ready: &str) -> Duration {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_weerwal"))
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.dir.path().join("weerwal.toml"))
            .arg("serve")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        self.log = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(300);
        while !self.log.lock().unwrap().iter().any(|l| l.contains(ready)) {
            assert!(Instant::now() < deadline, "no {ready:?}: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
        started.elapsed()
    }

    fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn client(from: IpAddr, proxy: Option<u16>) -> reqwest::Client {
    let b = reqwest::Client::builder().local_address(from).timeout(Duration::from_secs(20));
    match proxy {
        Some(p) => b.proxy(reqwest::Proxy::all(format!("http://127.0.0.1:{p}")).unwrap()),
        None => b.no_proxy(),
    }
    .build()
    .unwrap()
}

/// A minimal origin: answers every request with 200 and a short body.
async fn origin() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"hello\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Requests per second of `url` through `proxy`, 32 at a time, for `secs`.
async fn throughput(proxy: u16, url: &str, expect: u16, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let (done, url) = (Arc::clone(&done), url.to_string());
        let c = client(format!("127.0.1.{}", i + 1).parse().unwrap(), Some(proxy));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status().as_u16(), expect);
                let _ = r.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let flags: usize = std::env::var("FLAGS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let upstream = origin().await;
    let pg = Postgres::start().await;
    let mut a = Node::new("proxy-a", Some(&pg), upstream);
    let mut b = Node::new("gateway-b", Some(&pg), upstream);
    a.start("weerwal proxy running");
    b.start("compliance state loaded");

    // 1. Flag on A to refusal at B.
    let mut latencies = Vec::with_capacity(flags);
    for i in 0..flags {
        let ip: IpAddr = format!("127.0.{}.{}", 10 + i / 250, 1 + i % 250).parse().unwrap();
        let c = client(ip, Some(a.proxy));
        let gw = client(ip, None);
        assert_eq!(c.get("http://aliexpress.com/").send().await.unwrap().status(), 403);
        let flagged = Instant::now();
        loop {
            let s = gw
                .get(format!("http://127.0.0.1:{}/", b.gateway))
                .header("host", WEBMAIL)
                .send()
                .await
                .unwrap()
                .status();
            if s == 403 {
                break;
            }
            assert!(flagged.elapsed() < Duration::from_secs(30), "flag {i} never reached B");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(flagged.elapsed());
    }
    latencies.sort();
    println!(
        "flag on A -> refused at B ({flags} flags): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    b.stop();

    // 2 and 3. Throughput with and without [cluster], one after the other.
    let mut off = Node::new("off", None, upstream);
    off.start("weerwal proxy running");
    let allowed = format!("http://localhost:{}/", upstream.port());
    let blocked_off = throughput(off.proxy, "http://aliexpress.com/", 403, secs).await;
    let blocked_on = throughput(a.proxy, "http://aliexpress.com/", 403, secs).await;
    let allowed_off = throughput(off.proxy, &allowed, 200, secs).await;
    let allowed_on = throughput(a.proxy, &allowed, 200, secs).await;
    println!("blocked req/s: cluster off {blocked_off:.0}, on {blocked_on:.0}, ratio {:.2}", blocked_on / blocked_off);
    println!(
        "allowed GET req/s: cluster off {allowed_off:.0}, on {allowed_on:.0}, ratio {:.2}",
        allowed_on / allowed_off
    );
    off.stop();
    a.stop();

    // 4. Start-up with 100,000 flags and 1,000,000 shipped records.
    pg.psql_weerwal(
        "INSERT INTO compliance_flags (key, data, node) SELECT 'client:10.' || (g / 65536) || '.' || (g / 256 % 256) || '.' || (g % 256), \
         '{\"app\":\"AliExpress\",\"host\":\"aliexpress.com\",\"since\":\"2026-12-01T10:00:00.000Z\",\"since_unix\":1796119200,\"seq\":' || g || '}', 'bulk' \
         FROM generate_series(1, 100000) g ON CONFLICT DO NOTHING",
    );
    pg.psql_weerwal(
        "INSERT INTO audit_records (node, seq, ts, event, hash, line) SELECT 'bulk', g, '2026-12-01T10:00:00.000Z', 'blocked', md5(g::text), \
         '{\"seq\":' || g || ',\"ts\":\"2026-12-01T10:00:00.000Z\",\"event\":\"blocked\",\"host\":\"aliexpress.com\"}' \
         FROM generate_series(1, 1000000) g",
    );
    let mut c = Node::new("startup", Some(&pg), upstream);
    let took = c.start("compliance state loaded");
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "start-up with 100,000 flags and 1,000,000 shipped records: state loaded after {:.2} s, peak RSS {:.1} MiB",
        took.as_secs_f64(),
        c.peak_rss_kib() as f64 / 1024.0
    );
    c.stop();
}
